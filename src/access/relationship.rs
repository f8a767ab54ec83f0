//! Patient–provider relationships (MedRec's PPR) and the record pointers they hold.
//!
//! A certified provider opens the relationship ([`AccessOp::CreateRelationship`]); it enters the
//! patient's [summary](super::summary) as *pending* until the patient accepts or rejects it. The
//! provider adds [`RecordPointer`]s: a query string into its own database, the content hash of
//! the record it selects (to detect changes at the source), a category and the period the data
//! covers. A new version of a pointer names the one it replaces, which keeps its place and
//! records its successor. Only a provider whose certification holds adds pointers: once an
//! authority withdraws it, the provider's relationships stay (either side may still end them)
//! but take no new records or versions from it. Either side may terminate the relationship;
//! the termination is recorded (who, when, why), never erased, and revokes the relationship's
//! live grants (those not revoked yet and not expired).
//!
//! [`AccessOp::CreateRelationship`]: super::AccessOp::CreateRelationship

use core::fmt;

use serde::{Deserialize, Serialize};

use super::{
    AccessError, AccessEvent, AccessState, Category, Exec, Period, PointerId, Reason,
    RelationshipId, RevocationCause, Role, Stamp,
};
use crate::codec::BoundedString;
use crate::hash::{AccountId, Digest};

/// The longest query string of a record pointer, in bytes.
pub const MAX_QUERY_LEN: usize = 1024;

/// The status of a relationship.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RelationshipStatus {
    /// Opened by the provider, not yet answered by the patient.
    Pending,
    /// Accepted by the patient: grants on it take effect.
    Accepted,
    /// Rejected by the patient.
    Rejected,
    /// Ended by either party.
    Terminated,
}

impl fmt::Display for RelationshipStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelationshipStatus::Pending => "pending",
            RelationshipStatus::Accepted => "accepted",
            RelationshipStatus::Rejected => "rejected",
            RelationshipStatus::Terminated => "terminated",
        })
    }
}

/// Who ended a relationship, when and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// The party that ended it.
    pub by: AccountId,
    /// When.
    pub at: Stamp,
    /// Why.
    pub reason: Reason,
}

/// A patient–provider relationship.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    /// Its id ([`RelationshipId::of`] the pair).
    pub id: RelationshipId,
    /// The patient.
    pub patient: AccountId,
    /// The provider.
    pub provider: AccountId,
    /// When the provider opened it.
    pub created: Stamp,
    /// When the patient accepted it.
    pub accepted: Option<Stamp>,
    /// When and why the patient rejected it.
    pub rejected: Option<(Stamp, Reason)>,
    /// Its termination.
    pub termination: Option<Termination>,
    /// How many pointers it holds (every version counts).
    pub pointers: u32,
    /// How many grants were made on it.
    pub grants: u32,
}

impl Relationship {
    /// Its current status.
    pub fn status(&self) -> RelationshipStatus {
        self.status_at(u64::MAX)
            .expect("a relationship exists in the current state")
    }

    /// Its status in the state after block `height` (`None` if it did not exist yet).
    pub fn status_at(&self, height: u64) -> Option<RelationshipStatus> {
        if self.created.height > height {
            return None;
        }
        Some(match (&self.termination, &self.rejected, &self.accepted) {
            (Some(t), _, _) if t.at.height <= height => RelationshipStatus::Terminated,
            (_, Some((at, _)), _) if at.height <= height => RelationshipStatus::Rejected,
            (_, _, Some(at)) if at.height <= height => RelationshipStatus::Accepted,
            _ => RelationshipStatus::Pending,
        })
    }

    /// When its status last changed.
    pub fn last_change(&self) -> Stamp {
        self.termination
            .as_ref()
            .map(|t| t.at)
            .or(self.rejected.as_ref().map(|r| r.0))
            .or(self.accepted)
            .unwrap_or(self.created)
    }
}

/// What a provider publishes about a record it keeps: where to find it and what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPointer {
    /// The query that selects the record in the provider's database.
    pub query: BoundedString<MAX_QUERY_LEN>,
    /// The record's content hash ([`content_hash`](crate::hash::content_hash) of its bytes).
    pub content_hash: Digest,
    /// The kind of data.
    pub category: Category,
    /// The period the data covers.
    pub data_period: Period,
}

/// A record pointer in the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// Its id.
    pub id: PointerId,
    /// Its relationship.
    pub relationship: RelationshipId,
    /// The patient.
    pub patient: AccountId,
    /// The provider keeping the record (its custodian).
    pub provider: AccountId,
    /// What the provider published.
    pub record: RecordPointer,
    /// The first version of this record (itself if it is the first); grants name records by
    /// their first version, so they cover every version.
    pub origin: PointerId,
    /// The version it replaces.
    pub replaces: Option<PointerId>,
    /// The version that replaced it.
    pub superseded_by: Option<PointerId>,
    /// When it was added.
    pub added: Stamp,
}

/// Refuses relationship `id` unless it is pending or accepted (not rejected, not terminated).
fn ensure_open(id: RelationshipId, rel: &Relationship) -> Result<(), AccessError> {
    let status = rel.status();
    if !matches!(
        status,
        RelationshipStatus::Pending | RelationshipStatus::Accepted
    ) {
        return Err(AccessError::WrongStatus {
            relationship: id,
            status,
            expected: "pending or accepted",
        });
    }
    Ok(())
}

impl Exec<'_> {
    pub(super) fn create_relationship(&mut self, patient: AccountId) -> Result<(), AccessError> {
        let provider = self.actor();
        self.certified_provider(provider)?;
        self.require_role(patient, Role::Patient)?;
        let id = RelationshipId::of(patient, provider);
        if self.s.relationships.get(&id).is_some() {
            return Err(AccessError::RelationshipExists(id));
        }
        let created = self.stamp();
        self.s.relationships.insert(
            id,
            Relationship {
                id,
                patient,
                provider,
                created,
                accepted: None,
                rejected: None,
                termination: None,
                pointers: 0,
                grants: 0,
            },
        );
        for account in [patient, provider] {
            let mut c = self.s.counters(&account);
            self.s.summaries.insert((account, c.relationships), id);
            c.relationships = c
                .relationships
                .checked_add(1)
                .ok_or(AccessError::LimitReached {
                    what: "relationships per account",
                    max: u32::MAX.into(),
                })?;
            self.s.counters.insert(account, c);
        }
        self.emit(
            Some(patient),
            AccessEvent::RelationshipProposed {
                relationship: id,
                patient,
                provider,
            },
        );
        Ok(())
    }

    pub(super) fn relationship(&self, id: RelationshipId) -> Result<Relationship, AccessError> {
        self.s
            .relationships
            .get(&id)
            .cloned()
            .ok_or(AccessError::UnknownRelationship(id))
    }

    /// Accepts (`reject` is `None`) or rejects a pending relationship.
    pub(super) fn answer_relationship(
        &mut self,
        id: RelationshipId,
        reject: Option<&Reason>,
    ) -> Result<(), AccessError> {
        let mut rel = self.relationship(id)?;
        let actor = self.actor();
        if rel.patient != actor {
            return Err(AccessError::NotThePatient(actor));
        }
        let status = rel.status();
        if status != RelationshipStatus::Pending {
            return Err(AccessError::WrongStatus {
                relationship: id,
                status,
                expected: "pending",
            });
        }
        let at = self.stamp();
        let event = match reject {
            None => {
                rel.accepted = Some(at);
                AccessEvent::RelationshipAccepted {
                    relationship: id,
                    patient: rel.patient,
                }
            }
            Some(reason) => {
                rel.rejected = Some((at, reason.clone()));
                AccessEvent::RelationshipRejected {
                    relationship: id,
                    patient: rel.patient,
                    reason: reason.clone(),
                }
            }
        };
        let patient = rel.patient;
        self.s.relationships.insert(id, rel);
        self.emit(Some(patient), event);
        Ok(())
    }

    pub(super) fn terminate_relationship(
        &mut self,
        id: RelationshipId,
        reason: &Reason,
    ) -> Result<(), AccessError> {
        let mut rel = self.relationship(id)?;
        let by = self.actor();
        if by != rel.patient && by != rel.provider {
            return Err(AccessError::NotAParty(by));
        }
        ensure_open(id, &rel)?;
        rel.termination = Some(Termination {
            by,
            at: self.stamp(),
            reason: reason.clone(),
        });
        let patient = rel.patient;
        self.s.relationships.insert(id, rel);
        self.emit(
            Some(patient),
            AccessEvent::RelationshipTerminated {
                relationship: id,
                patient,
                by,
                reason: reason.clone(),
            },
        );
        // Its live grants are revoked; expired ones stay as they are (time never goes back).
        let live = self.s.live_grants.get(&id).cloned().unwrap_or_default();
        self.s.live_grants.remove(id);
        for g in live.0 {
            if g.end > self.cx.time && self.s.revocations.get(&g.grant).is_none() {
                self.revoke_one(g.grant, reason, RevocationCause::RelationshipTerminated)?;
            }
        }
        Ok(())
    }

    pub(super) fn add_pointer(
        &mut self,
        id: RelationshipId,
        record: &RecordPointer,
        replaces: Option<PointerId>,
    ) -> Result<(), AccessError> {
        let mut rel = self.relationship(id)?;
        let actor = self.actor();
        if rel.provider != actor {
            return Err(AccessError::NotTheProvider(actor));
        }
        // Records come only from providers an authority vouches for: a decertified provider
        // keeps its relationships (and may end them) but publishes nothing more.
        self.certified_provider(actor)?;
        ensure_open(id, &rel)?;
        record.data_period.check()?;
        let pointer = PointerId::of_tx(self.cx.tx_id);
        let origin = match replaces {
            None => pointer,
            Some(old_id) => {
                let mut old = self.pointer(old_id)?;
                if old.relationship != id {
                    return Err(AccessError::PointerNotInRelationship {
                        pointer: old_id,
                        relationship: id,
                    });
                }
                if old.superseded_by.is_some() {
                    return Err(AccessError::PointerSuperseded(old_id));
                }
                if old.record.category != record.category {
                    return Err(AccessError::CategoryChanged {
                        expected: old.record.category,
                        found: record.category,
                    });
                }
                old.superseded_by = Some(pointer);
                let origin = old.origin;
                self.s.pointers.insert(old_id, old);
                origin
            }
        };
        let seq = rel.pointers;
        rel.pointers = seq.checked_add(1).ok_or(AccessError::LimitReached {
            what: "pointers per relationship",
            max: u32::MAX.into(),
        })?;
        self.s.relationship_pointers.insert((id, seq), pointer);
        self.s.pointers.insert(
            pointer,
            Pointer {
                id: pointer,
                relationship: id,
                patient: rel.patient,
                provider: rel.provider,
                record: record.clone(),
                origin,
                replaces,
                superseded_by: None,
                added: self.stamp(),
            },
        );
        let patient = rel.patient;
        self.s.relationships.insert(id, rel);
        self.emit(
            Some(patient),
            AccessEvent::PointerAdded {
                relationship: id,
                patient,
                pointer,
                replaces,
            },
        );
        Ok(())
    }

    pub(super) fn pointer(&self, id: PointerId) -> Result<Pointer, AccessError> {
        self.s
            .pointers
            .get(&id)
            .cloned()
            .ok_or(AccessError::UnknownPointer(id))
    }
}

impl AccessState {
    /// A relationship.
    pub fn relationship(&self, id: &RelationshipId) -> Option<&Relationship> {
        self.relationships.get(id)
    }

    /// The relationship between `patient` and `provider`, if there is one.
    pub fn relationship_between(
        &self,
        patient: AccountId,
        provider: AccountId,
    ) -> Option<&Relationship> {
        self.relationships
            .get(&RelationshipId::of(patient, provider))
    }

    /// A record pointer.
    pub fn pointer(&self, id: &PointerId) -> Option<&Pointer> {
        self.pointers.get(id)
    }

    /// Every pointer of a relationship (every version), in the order they were added.
    pub fn pointers_of(&self, relationship: &RelationshipId) -> Vec<&Pointer> {
        let n = self
            .relationships
            .get(relationship)
            .map_or(0, |r| r.pointers);
        (0..n)
            .filter_map(|i| self.relationship_pointers.get(&(*relationship, i)))
            .filter_map(|id| self.pointers.get(id))
            .collect()
    }

    /// The latest version of the record `pointer` is a version of.
    pub fn latest_version(&self, pointer: &PointerId) -> Option<&Pointer> {
        let mut p = self.pointers.get(pointer)?;
        while let Some(next) = p.superseded_by {
            p = self.pointers.get(&next)?;
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{reason, record, Cast};
    use crate::access::{AccessOp, Side};

    #[test]
    fn pending_until_the_patient_answers() {
        let mut c = Cast::new();
        c.h.ok(
            &c.hospital,
            AccessOp::CreateRelationship {
                patient: c.patient.account(),
            },
        );
        let id = RelationshipId::of(c.patient.account(), c.hospital.account());
        let pending = c.h.access().pending_for(&c.patient.account());
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].relationship, id);
        assert_eq!(pending[0].side, Side::Patient);
        assert_eq!(pending[0].counterparty, c.hospital.account());
        assert_eq!(c.h.access().pending_for(&c.hospital.account()).len(), 1);
        // Only the patient answers; the provider cannot accept for it.
        let accept = AccessOp::AcceptRelationship { relationship: id };
        assert_eq!(
            c.h.refused(&c.hospital, accept.clone()),
            AccessError::NotThePatient(c.hospital.account())
        );
        assert_eq!(
            c.h.refused(&c.specialist, accept.clone()),
            AccessError::NotThePatient(c.specialist.account())
        );
        let created = c.h.height;
        c.h.ok(&c.patient, accept.clone());
        let rel = c.h.access().relationship(&id).unwrap();
        assert_eq!(rel.status(), RelationshipStatus::Accepted);
        assert_eq!(rel.status_at(created), Some(RelationshipStatus::Pending));
        assert_eq!(rel.status_at(created - 1), None);
        assert!(c.h.access().pending_for(&c.patient.account()).is_empty());
        assert!(matches!(
            c.h.refused(&c.patient, accept),
            AccessError::WrongStatus { .. }
        ));
        // One relationship per pair.
        assert_eq!(
            c.h.refused(
                &c.hospital,
                AccessOp::CreateRelationship {
                    patient: c.patient.account()
                }
            ),
            AccessError::RelationshipExists(id)
        );
    }

    #[test]
    fn only_certified_providers_open_relationships_with_patients() {
        let mut c = Cast::new();
        let to_patient = AccessOp::CreateRelationship {
            patient: c.patient.account(),
        };
        // Registered as a provider, never certified.
        assert_eq!(
            c.h.refused(&c.specialist, to_patient.clone()),
            AccessError::NotCertified(c.specialist.account())
        );
        assert!(matches!(
            c.h.refused(&c.researcher, to_patient),
            AccessError::WrongRole { .. }
        ));
        // A provider cannot make itself (or another provider) the patient.
        assert!(matches!(
            c.h.refused(
                &c.hospital,
                AccessOp::CreateRelationship {
                    patient: c.hospital.account()
                }
            ),
            AccessError::WrongRole {
                expected: Role::Patient,
                ..
            }
        ));
    }

    #[test]
    fn rejection_and_termination_are_recorded() {
        let mut c = Cast::new();
        c.h.ok(
            &c.clinic,
            AccessOp::CreateRelationship {
                patient: c.patient.account(),
            },
        );
        let clinic_rel = RelationshipId::of(c.patient.account(), c.clinic.account());
        c.h.ok(
            &c.patient,
            AccessOp::RejectRelationship {
                relationship: clinic_rel,
                reason: reason("not my clinic"),
            },
        );
        let r = c.h.access().relationship(&clinic_rel).unwrap();
        assert_eq!(r.status(), RelationshipStatus::Rejected);
        assert_eq!(r.rejected.as_ref().unwrap().1.as_str(), "not my clinic");

        let (rel, _, _) = c.with_records();
        let terms = c.treat_terms(rel, 30);
        let g = c.h.grant(&c.patient, terms, None);
        let terms = c.treat_terms(rel, 1);
        let expired = c.h.grant(&c.patient, terms, None);
        c.h.time += 2 * crate::access::tests::DAY;
        assert_eq!(
            c.h.refused(
                &c.specialist,
                AccessOp::TerminateRelationship {
                    relationship: rel,
                    reason: reason("x")
                }
            ),
            AccessError::NotAParty(c.specialist.account())
        );
        c.h.ok(
            &c.hospital,
            AccessOp::TerminateRelationship {
                relationship: rel,
                reason: reason("patient moved away"),
            },
        );
        let r = c.h.access().relationship(&rel).unwrap();
        let t = r.termination.as_ref().unwrap();
        assert_eq!(
            (t.by, t.at.height, t.reason.as_str()),
            (c.hospital.account(), c.h.height, "patient moved away")
        );
        // The live grant is revoked in cascade, with the cause recorded; the grant stays. The
        // expired one stays expired.
        let rev = c.h.access().revocation(&g).unwrap();
        assert_eq!(rev.cause, RevocationCause::RelationshipTerminated);
        assert!(c.h.access().grant(&g).is_some());
        assert!(c.h.access().revocation(&expired).is_none());
        // No more pointers on a terminated relationship.
        let op = AccessOp::AddPointer {
            relationship: rel,
            record: record(9, Category::General),
            replaces: None,
        };
        assert!(matches!(
            c.h.refused(&c.hospital, op),
            AccessError::WrongStatus { .. }
        ));
    }

    #[test]
    fn new_versions_record_what_they_replace() {
        let mut c = Cast::new();
        let (rel, lab, mh) = c.with_records();
        let op = AccessOp::AddPointer {
            relationship: rel,
            record: record(1, Category::Laboratory),
            replaces: None,
        };
        assert_eq!(
            c.h.refused(&c.specialist, op),
            AccessError::NotTheProvider(c.specialist.account())
        );
        let v2 = c.h.pointer(
            &c.hospital,
            rel,
            record(11, Category::Laboratory),
            Some(lab),
        );
        let a = c.h.access();
        let p2 = a.pointer(&v2).unwrap();
        assert_eq!((p2.replaces, p2.origin), (Some(lab), lab));
        assert_eq!(a.pointer(&lab).unwrap().superseded_by, Some(v2));
        assert_eq!(a.latest_version(&lab).unwrap().id, v2);
        assert_eq!(a.pointers_of(&rel).len(), 3);
        // Replacing an old version again, or changing the category, is refused.
        let again = AccessOp::AddPointer {
            relationship: rel,
            record: record(12, Category::Laboratory),
            replaces: Some(lab),
        };
        assert_eq!(
            c.h.refused(&c.hospital, again),
            AccessError::PointerSuperseded(lab)
        );
        let recat = AccessOp::AddPointer {
            relationship: rel,
            record: record(13, Category::Imaging),
            replaces: Some(mh),
        };
        assert!(matches!(
            c.h.refused(&c.hospital, recat),
            AccessError::CategoryChanged { .. }
        ));
    }
}
