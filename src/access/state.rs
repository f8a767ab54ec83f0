//! The access-control tables and the indexes beside them.

use core::fmt;

use serde::{Deserialize, Serialize};

use super::{
    AccessError, AccountRecord, AuditEntry, BreakGlass, BreakGlassId, Certification, Delegation,
    DelegationId, Grant, GrantId, GrantTerms, Group, GroupId, Identity, Membership, Pointer,
    PointerId, Relationship, RelationshipId, Release, ReleaseId, Revocation, Viewer,
};
use super::{Contribution, Query, QueryId, ReportNonce, Study, StudyId, StudyRelease};
use super::{Stamp, MAX_EVIDENCE_LEN};
use crate::codec::BoundedBytes;
use crate::hash::{AccountId, Digest};
use crate::state::{Table, TableOps};
use crate::tx::PublicKey;

/// Tag of the registrar's account table.
pub const ACCOUNTS_TABLE: &str = "access.accounts";
/// Tag of the identity → account table.
pub const IDENTITIES_TABLE: &str = "access.identities";
/// Tag of the key-history table.
pub const KEY_HISTORY_TABLE: &str = "access.key-history";
/// Tag of the certification table.
pub const CERTIFICATIONS_TABLE: &str = "access.certifications";
/// Tag of the relationship table.
pub const RELATIONSHIPS_TABLE: &str = "access.relationships";
/// Tag of the pointer table.
pub const POINTERS_TABLE: &str = "access.pointers";
/// Tag of the grant table: a grant's record never changes once made (see [`GrantProof`](super::GrantProof)).
pub const GRANTS_TABLE: &str = "access.grants";
/// Tag of the revocation table (keyed by grant id; written once).
pub const REVOCATIONS_TABLE: &str = "access.revocations";
/// Tag of the group table.
pub const GROUPS_TABLE: &str = "access.groups";
/// Tag of the delegation table.
pub const DELEGATIONS_TABLE: &str = "access.delegations";
/// Tag of the break-glass session table.
pub const BREAK_GLASS_TABLE: &str = "access.break-glass";
/// Tag of the audit table (keyed by patient and sequence number).
pub const AUDIT_TABLE: &str = "access.audit";
/// Tag of the research release table (keyed by [`ReleaseId`]; written once).
pub const RELEASES_TABLE: &str = "access.releases";
/// Tag of the consensus validator table (key → latest voting power set by an authority).
pub const VALIDATORS_TABLE: &str = "access.validators";
/// Tag of the evidence table (keyed by offender and offence; written once).
pub const EVIDENCE_TABLE: &str = "access.evidence";

/// Tag of the research study table.
pub const STUDIES_TABLE: &str = "access.studies";
/// Tag of the research query table.
pub const QUERIES_TABLE: &str = "access.queries";
/// Tag of the report commitment table (keyed by query and report nonce; written once).
pub const CONTRIBUTIONS_TABLE: &str = "access.contributions";
/// Tag of the study release table (keyed by [`ReleaseId`]; written once).
pub const STUDY_RELEASES_TABLE: &str = "access.study-releases";
/// Tag of the study audit table (keyed by study and sequence number).
pub const STUDY_TRAIL_TABLE: &str = "access.study-trail";

/// Evidence of a validator's misbehaviour, as recorded on chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// The offender.
    pub offender: PublicKey,
    /// The offence's id (the engine's).
    pub offence: Digest,
    /// The engine's encoding of the evidence.
    pub evidence: BoundedBytes<MAX_EVIDENCE_LEN>,
    /// Who recorded it.
    pub by: AccountId,
    /// When.
    pub at: Stamp,
}

/// Per-account counters of the append-only lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) relationships: u32,
    pub(crate) groups: u32,
    pub(crate) break_glass: u32,
    pub(crate) audit: u64,
}

/// A grant as seen from the viewer index: a copy of its terms, so that `decide` reads the
/// index entry and the pointer and nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexedGrant {
    pub(crate) grant: GrantId,
    /// Position in the relationship's grant list (creation order).
    pub(crate) seq: u32,
    /// Height of its revocation.
    pub(crate) revoked: Option<u64>,
    /// The grant's (normalised) terms, as in its record.
    pub(crate) terms: GrantTerms,
}

/// A viewer's grants from one patient, in creation order: the first inline (most viewers
/// hold one, and `decide` then reads no further memory), the others on the heap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GrantList {
    first: Option<IndexedGrant>,
    rest: Vec<IndexedGrant>,
}

impl GrantList {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &IndexedGrant> {
        self.first.iter().chain(&self.rest)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut IndexedGrant> {
        self.first.iter_mut().chain(&mut self.rest)
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub(crate) fn push(&mut self, grant: IndexedGrant) {
        match self.first {
            None => self.first = Some(grant),
            Some(_) => self.rest.push(grant),
        }
    }

    /// Keeps the grants for which `keep` holds, in order.
    pub(crate) fn retain(&mut self, keep: impl Fn(&IndexedGrant) -> bool) {
        let rest = core::mem::take(&mut self.rest);
        let mut kept = self
            .first
            .take()
            .into_iter()
            .chain(rest)
            .filter(|g| keep(g))
            .collect::<Vec<_>>()
            .into_iter();
        self.first = kept.next();
        self.rest = kept.collect();
    }
}

/// A grant of a relationship that may still be live, as its limits count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LiveGrant {
    pub(crate) grant: GrantId,
    /// The end of its period: from then on it is dead, and the entry is pruned when the list
    /// is full.
    pub(crate) end: u64,
    /// Whether a delegate made it (delegates have their own, smaller quota).
    pub(crate) delegated: bool,
}

/// The grants of a relationship that are not revoked and may not have expired, in creation
/// order: what the relationship's limits count and what its termination revokes. A revoked
/// grant leaves the list at once; an expired one when the list of its kind is full.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LiveGrants(pub(crate) Vec<LiveGrant>);

impl LiveGrants {
    /// Adds `entry`, unless `max` grants of its kind (the patient's own, or the delegates') are
    /// in the list: expired ones count only until the kind is full, when they are pruned.
    pub(crate) fn admit(
        &mut self,
        entry: LiveGrant,
        now: u64,
        max: usize,
        what: &'static str,
    ) -> Result<(), AccessError> {
        let of_kind = |l: &Self| {
            l.0.iter()
                .filter(|g| g.delegated == entry.delegated)
                .count()
        };
        if of_kind(self) >= max {
            self.0.retain(|g| g.end > now);
            if of_kind(self) >= max {
                return Err(AccessError::LimitReached {
                    what,
                    max: max as u64,
                });
            }
        }
        self.0.push(entry);
        Ok(())
    }
}

/// An emergency provider's break-glass sessions that may still be open, with the time each
/// expires at: what withdrawing its emergency certification closes. A closed session leaves
/// the list at once; an expired one at the provider's next opening.
pub(crate) type OpenSessions = Vec<(BreakGlassId, u64)>;

/// What the decision needs about a (patient, viewer) pair, in one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ViewerIndex {
    /// Grants to this viewer, in creation order (revoked and expired ones are pruned when the
    /// list is full).
    pub(crate) grants: GrantList,
    /// Groups of the patient the viewer (an account) was ever a member of.
    pub(crate) groups: Vec<GroupId>,
    /// The viewer's latest break-glass session for the patient.
    pub(crate) break_glass: Option<BreakGlassId>,
}

/// The access-control part of the ledger state: every table is committed in the state root.
pub struct AccessState {
    pub(crate) accounts: Table<AccountId, AccountRecord>,
    pub(crate) identities: Table<Identity, AccountId>,
    pub(crate) key_history: Table<(AccountId, u32), PublicKey>,
    pub(crate) certifications: Table<AccountId, Certification>,
    pub(crate) relationships: Table<RelationshipId, Relationship>,
    pub(crate) pointers: Table<PointerId, Pointer>,
    pub(crate) relationship_pointers: Table<(RelationshipId, u32), PointerId>,
    pub(crate) relationship_grants: Table<(RelationshipId, u32), GrantId>,
    pub(crate) live_grants: Table<RelationshipId, LiveGrants>,
    pub(crate) summaries: Table<(AccountId, u32), RelationshipId>,
    pub(crate) counters: Table<AccountId, Counters>,
    pub(crate) grants: Table<GrantId, Grant>,
    pub(crate) revocations: Table<GrantId, Revocation>,
    pub(crate) viewer_index: Table<(AccountId, Viewer), ViewerIndex>,
    pub(crate) groups: Table<GroupId, Group>,
    pub(crate) memberships: Table<(GroupId, AccountId), Membership>,
    pub(crate) group_members: Table<(GroupId, u32), AccountId>,
    pub(crate) delegations: Table<DelegationId, Delegation>,
    pub(crate) delegation_grants: Table<(DelegationId, u32), GrantId>,
    pub(crate) break_glass: Table<BreakGlassId, BreakGlass>,
    pub(crate) patient_break_glass: Table<(AccountId, u32), BreakGlassId>,
    pub(crate) open_sessions: Table<AccountId, OpenSessions>,
    pub(crate) audit: Table<(AccountId, u64), AuditEntry>,
    pub(crate) releases: Table<ReleaseId, Release>,
    pub(crate) recipient_releases: Table<(AccountId, u32), ReleaseId>,
    pub(crate) release_counts: Table<AccountId, u32>,
    pub(crate) validators: Table<PublicKey, u64>,
    pub(crate) evidence: Table<(PublicKey, Digest), EvidenceRecord>,
    pub(crate) offender_evidence: Table<(PublicKey, u32), Digest>,
    pub(crate) evidence_counts: Table<PublicKey, u32>,
    pub(crate) studies: Table<StudyId, Study>,
    pub(crate) queries: Table<QueryId, Query>,
    pub(crate) contributions: Table<(QueryId, ReportNonce), Contribution>,
    pub(crate) study_trail: Table<(StudyId, u32), AuditEntry>,
    pub(crate) study_releases: Table<ReleaseId, StudyRelease>,
}

impl fmt::Debug for AccessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessState").finish_non_exhaustive()
    }
}

impl Default for AccessState {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessState {
    /// The empty access state.
    pub fn new() -> Self {
        Self {
            accounts: Table::new(ACCOUNTS_TABLE),
            identities: Table::new(IDENTITIES_TABLE),
            key_history: Table::new(KEY_HISTORY_TABLE),
            certifications: Table::new(CERTIFICATIONS_TABLE),
            relationships: Table::new(RELATIONSHIPS_TABLE),
            pointers: Table::new(POINTERS_TABLE),
            relationship_pointers: Table::new("access.relationship-pointers"),
            relationship_grants: Table::new("access.relationship-grants"),
            live_grants: Table::new("access.live-grants"),
            summaries: Table::new("access.summaries"),
            counters: Table::new("access.counters"),
            grants: Table::new(GRANTS_TABLE),
            revocations: Table::new(REVOCATIONS_TABLE),
            viewer_index: Table::new("access.viewer-index"),
            groups: Table::new(GROUPS_TABLE),
            memberships: Table::new("access.memberships"),
            group_members: Table::new("access.group-members"),
            delegations: Table::new(DELEGATIONS_TABLE),
            delegation_grants: Table::new("access.delegation-grants"),
            break_glass: Table::new(BREAK_GLASS_TABLE),
            patient_break_glass: Table::new("access.patient-break-glass"),
            open_sessions: Table::new("access.open-break-glass"),
            audit: Table::new(AUDIT_TABLE),
            releases: Table::new(RELEASES_TABLE),
            recipient_releases: Table::new("access.recipient-releases"),
            release_counts: Table::new("access.release-counts"),
            validators: Table::new(VALIDATORS_TABLE),
            evidence: Table::new(EVIDENCE_TABLE),
            offender_evidence: Table::new("access.offender-evidence"),
            evidence_counts: Table::new("access.evidence-counts"),
            studies: Table::new(STUDIES_TABLE),
            queries: Table::new(QUERIES_TABLE),
            contributions: Table::new(CONTRIBUTIONS_TABLE),
            study_trail: Table::new(STUDY_TRAIL_TABLE),
            study_releases: Table::new(STUDY_RELEASES_TABLE),
        }
    }

    /// Adds every table to `out` (for block application).
    pub(crate) fn list_tables_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn TableOps>) {
        out.extend([
            &mut self.accounts as &mut dyn TableOps,
            &mut self.identities,
            &mut self.key_history,
            &mut self.certifications,
            &mut self.relationships,
            &mut self.pointers,
            &mut self.relationship_pointers,
            &mut self.relationship_grants,
            &mut self.live_grants,
            &mut self.summaries,
            &mut self.counters,
            &mut self.grants,
            &mut self.revocations,
            &mut self.viewer_index,
            &mut self.groups,
            &mut self.memberships,
            &mut self.group_members,
            &mut self.delegations,
            &mut self.delegation_grants,
            &mut self.break_glass,
            &mut self.patient_break_glass,
            &mut self.open_sessions,
            &mut self.audit,
            &mut self.releases,
            &mut self.recipient_releases,
            &mut self.release_counts,
            &mut self.validators,
            &mut self.evidence,
            &mut self.offender_evidence,
            &mut self.evidence_counts,
            &mut self.studies,
            &mut self.queries,
            &mut self.contributions,
            &mut self.study_trail,
            &mut self.study_releases,
        ]);
    }

    /// Adds every table to `out` (for computing a block's leaf updates).
    pub(crate) fn list_tables<'a>(&'a self, out: &mut Vec<&'a dyn TableOps>) {
        out.extend([
            &self.accounts as &dyn TableOps,
            &self.identities,
            &self.key_history,
            &self.certifications,
            &self.relationships,
            &self.pointers,
            &self.relationship_pointers,
            &self.relationship_grants,
            &self.live_grants,
            &self.summaries,
            &self.counters,
            &self.grants,
            &self.revocations,
            &self.viewer_index,
            &self.groups,
            &self.memberships,
            &self.group_members,
            &self.delegations,
            &self.delegation_grants,
            &self.break_glass,
            &self.patient_break_glass,
            &self.open_sessions,
            &self.audit,
            &self.releases,
            &self.recipient_releases,
            &self.release_counts,
            &self.validators,
            &self.evidence,
            &self.offender_evidence,
            &self.evidence_counts,
            &self.studies,
            &self.queries,
            &self.contributions,
            &self.study_trail,
            &self.study_releases,
        ]);
    }

    /// The voting power an authority last set for validator `key` (0 after a removal), or
    /// `None` if no authority ever set it. Genesis validators are the consensus engine's
    /// configuration, not recorded here.
    pub fn validator_power(&self, key: &PublicKey) -> Option<u64> {
        self.validators.get(key).copied()
    }

    /// The evidence recorded against `offender`, one record per offence, in the order it was
    /// recorded.
    pub fn evidence_against(&self, offender: &PublicKey) -> Vec<&EvidenceRecord> {
        let count = self.evidence_counts.get(offender).copied().unwrap_or(0);
        (0..count)
            .filter_map(|i| self.offender_evidence.get(&(*offender, i)))
            .filter_map(|offence| self.evidence.get(&(*offender, *offence)))
            .collect()
    }

    /// The evidence recorded of `offence` by `offender`, if any.
    pub fn evidence_of(&self, offender: &PublicKey, offence: &Digest) -> Option<&EvidenceRecord> {
        self.evidence.get(&(*offender, *offence))
    }

    pub(crate) fn counters(&self, account: &AccountId) -> Counters {
        self.counters.get(account).copied().unwrap_or_default()
    }
}
