//! What an applied access-control operation reports.

use serde::{Deserialize, Serialize};

use super::{
    Action, Basis, BreakGlassId, DelegationId, GrantId, GroupId, PointerId, Reason, RelationshipId,
    ReleaseId, ReviewOutcome, RevocationCause, Role, Viewer,
};
use super::{Epsilon, QueryId, StudyId};
use crate::hash::{AccountId, Digest};
use crate::pseudonym::Epoch;
use crate::purpose::PurposeOfUse;
use crate::tx::PublicKey;

/// A change of the access-control state, for embedders to notify users; the ones concerning a
/// patient are also appended to that patient's [audit trail](super::AuditEntry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AccessEvent {
    /// An account registered.
    Registered {
        /// The account.
        account: AccountId,
        /// Its role.
        role: Role,
    },
    /// An account's key was rotated.
    KeyRotated {
        /// The account.
        account: AccountId,
        /// The retired key.
        old: PublicKey,
        /// The new key.
        new: PublicKey,
    },
    /// A provider was certified (or its certification changed).
    ProviderCertified {
        /// The provider.
        provider: AccountId,
        /// The authority.
        by: AccountId,
        /// Whether it may break glass.
        emergency: bool,
    },
    /// A provider's certification was withdrawn.
    ProviderDecertified {
        /// The provider.
        provider: AccountId,
        /// The authority.
        by: AccountId,
        /// Why.
        reason: Reason,
    },
    /// A provider opened a relationship: pending for the patient.
    RelationshipProposed {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
        /// The provider.
        provider: AccountId,
    },
    /// The patient accepted.
    RelationshipAccepted {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
    },
    /// The patient rejected.
    RelationshipRejected {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
        /// Why.
        reason: Reason,
    },
    /// A party ended the relationship.
    RelationshipTerminated {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
        /// The party that ended it.
        by: AccountId,
        /// Why.
        reason: Reason,
    },
    /// The provider added a record pointer.
    PointerAdded {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
        /// The pointer.
        pointer: PointerId,
        /// The pointer it is a new version of.
        replaces: Option<PointerId>,
    },
    /// The patient created a group.
    GroupCreated {
        /// The patient.
        patient: AccountId,
        /// The group.
        group: GroupId,
    },
    /// A member joined a group.
    GroupMemberAdded {
        /// The patient.
        patient: AccountId,
        /// The group.
        group: GroupId,
        /// The member.
        member: AccountId,
    },
    /// A member left a group.
    GroupMemberRemoved {
        /// The patient.
        patient: AccountId,
        /// The group.
        group: GroupId,
        /// The member.
        member: AccountId,
    },
    /// A grant was made.
    GrantCreated {
        /// The patient.
        patient: AccountId,
        /// The grant.
        grant: GrantId,
        /// Its viewer.
        viewer: Viewer,
        /// Who made it: the patient or a delegate.
        by: AccountId,
        /// The delegation it was made under.
        under: Option<DelegationId>,
    },
    /// A grant was revoked.
    GrantRevoked {
        /// The patient.
        patient: AccountId,
        /// The grant.
        grant: GrantId,
        /// Who revoked it (for a cascade, who caused it).
        by: AccountId,
        /// Why it was revoked.
        cause: RevocationCause,
    },
    /// The patient delegated consent management.
    DelegationCreated {
        /// The patient.
        patient: AccountId,
        /// The delegation.
        delegation: DelegationId,
        /// The delegate.
        delegate: AccountId,
    },
    /// A delegation was revoked, and the grants made under it with it.
    DelegationRevoked {
        /// The patient.
        patient: AccountId,
        /// The delegation.
        delegation: DelegationId,
        /// Who revoked it.
        by: AccountId,
        /// How many grants were revoked with it.
        cascaded: u32,
    },
    /// A provider broke the glass.
    BreakGlassOpened {
        /// The patient.
        patient: AccountId,
        /// The session.
        session: BreakGlassId,
        /// The provider.
        provider: AccountId,
        /// When the session expires by itself.
        expires_at: u64,
    },
    /// A break-glass session was closed early.
    BreakGlassClosed {
        /// The patient.
        patient: AccountId,
        /// The session.
        session: BreakGlassId,
    },
    /// The patient reviewed a break-glass session.
    BreakGlassReviewed {
        /// The patient.
        patient: AccountId,
        /// The session.
        session: BreakGlassId,
        /// The verdict.
        outcome: ReviewOutcome,
    },
    /// A viewer accessed a record (an access receipt).
    Accessed {
        /// The patient.
        patient: AccountId,
        /// The viewer.
        viewer: AccountId,
        /// The record.
        pointer: PointerId,
        /// What the viewer did.
        action: Action,
        /// Why.
        purpose: PurposeOfUse,
        /// What permitted it.
        basis: Basis,
    },
    /// A custodian released research data under pseudonyms (no patient is named: the event
    /// goes to no patient's audit trail).
    ResearchDataReleased {
        /// The release.
        release: ReleaseId,
        /// The provider that released the data.
        custodian: AccountId,
        /// The researcher that received it.
        recipient: AccountId,
        /// The research window of the pseudonyms.
        epoch: Epoch,
        /// The content hash of the data set.
        dataset: Digest,
        /// How many subjects it holds.
        subjects: u32,
    },
    /// An authority withdrew a provider's emergency certification (decertified it, or
    /// certified it again without emergency access), which closed the provider's open
    /// break-glass session.
    BreakGlassRevoked {
        /// The patient.
        patient: AccountId,
        /// The session.
        session: BreakGlassId,
        /// The provider that opened it.
        provider: AccountId,
        /// The authority.
        by: AccountId,
    },
    /// An authority set a consensus validator's voting power (0: removed).
    ValidatorSet {
        /// The validator's key.
        key: PublicKey,
        /// Its power from the next height on.
        power: u64,
        /// The authority.
        by: AccountId,
    },
    /// Evidence of a validator's misbehaviour was recorded.
    EvidenceRecorded {
        /// The offender.
        offender: PublicKey,
        /// The offence.
        offence: Digest,
        /// Who submitted it.
        by: AccountId,
    },
    /// An authority approved a research study.
    StudyApproved {
        /// The study.
        study: StudyId,
        /// Its researcher.
        researcher: AccountId,
        /// The authority.
        authority: AccountId,
        /// Its total privacy budget.
        budget: Epsilon,
        /// The smallest class its data releases may hold.
        min_class_size: u32,
    },
    /// A researcher announced a query; its ε was charged to the study.
    QueryAnnounced {
        /// The query.
        query: QueryId,
        /// The study.
        study: StudyId,
        /// The query's ε.
        epsilon: Epsilon,
        /// The study's budget left after it.
        remaining: Epsilon,
    },
    /// A hospital committed to a batch of reports.
    ReportsCommitted {
        /// The query.
        query: QueryId,
        /// The hospital.
        hospital: AccountId,
        /// The batch's digest.
        batch: Digest,
        /// How many reports.
        reports: u32,
    },
    /// An aggregator committed to its aggregate share.
    AggregateShareCommitted {
        /// The query.
        query: QueryId,
        /// The aggregator.
        aggregator: AccountId,
        /// The share's digest.
        share: Digest,
        /// How many reports it aggregated.
        reports: u64,
    },
    /// A custodian released a data set under a study, stating its smallest class.
    StudyDataReleased {
        /// The release.
        release: ReleaseId,
        /// The study.
        study: StudyId,
        /// The smallest equivalence class of the data set, as stated.
        min_class_size: u32,
    },
    /// The researcher published the hash of a query's result.
    QueryResultPublished {
        /// The query.
        query: QueryId,
        /// The result's digest.
        result: Digest,
    },
}
