//! Summaries (MedRec's Summary Contract): each account's relationships with their status, for
//! the notification step ("what is pending for me?"), and the patient's break-glass review
//! queue.

use serde::{Deserialize, Serialize};

use super::{AccessState, BreakGlass, RelationshipId, RelationshipStatus, Stamp};
use crate::hash::AccountId;

/// Which side of a relationship an account is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// The account is the relationship's patient.
    Patient,
    /// The account is the relationship's provider.
    Provider,
}

/// One line of an account's summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryItem {
    /// The relationship.
    pub relationship: RelationshipId,
    /// The account's side.
    pub side: Side,
    /// The other party.
    pub counterparty: AccountId,
    /// The relationship's status.
    pub status: RelationshipStatus,
    /// When the status last changed.
    pub since: Stamp,
    /// How many record pointers it holds.
    pub pointers: u32,
}

impl AccessState {
    /// Every relationship of `account`, in the order they were opened, with its status.
    pub fn summary(&self, account: &AccountId) -> Vec<SummaryItem> {
        let n = self.counters(account).relationships;
        (0..n)
            .filter_map(|i| self.summaries.get(&(*account, i)))
            .filter_map(|id| self.relationships.get(id))
            .map(|r| {
                let (side, counterparty) = if r.patient == *account {
                    (Side::Patient, r.provider)
                } else {
                    (Side::Provider, r.patient)
                };
                SummaryItem {
                    relationship: r.id,
                    side,
                    counterparty,
                    status: r.status(),
                    since: r.last_change(),
                    pointers: r.pointers,
                }
            })
            .collect()
    }

    /// The relationships of `account` still pending: for a patient, those awaiting its answer;
    /// for a provider, those awaiting the patient's.
    pub fn pending_for(&self, account: &AccountId) -> Vec<SummaryItem> {
        self.summary(account)
            .into_iter()
            .filter(|s| s.status == RelationshipStatus::Pending)
            .collect()
    }

    /// The break-glass sessions on `patient`'s records the patient has not reviewed yet,
    /// oldest first.
    pub fn review_queue(&self, patient: &AccountId) -> Vec<&BreakGlass> {
        self.break_glass_sessions(patient)
            .into_iter()
            .filter(|s| s.review.is_none())
            .collect()
    }

    /// Every break-glass session on `patient`'s records, oldest first.
    pub fn break_glass_sessions(&self, patient: &AccountId) -> Vec<&BreakGlass> {
        let n = self.counters(patient).break_glass;
        (0..n)
            .filter_map(|i| self.patient_break_glass.get(&(*patient, i)))
            .filter_map(|id| self.break_glass.get(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::access::tests::Cast;
    use crate::access::{AccessOp, RelationshipStatus, Side};

    #[test]
    fn summary_lists_both_sides_with_status() {
        let mut c = Cast::new();
        c.with_records();
        c.h.ok(
            &c.clinic,
            AccessOp::CreateRelationship {
                patient: c.patient.account(),
            },
        );
        let s = c.h.access().summary(&c.patient.account());
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].status, RelationshipStatus::Accepted);
        assert_eq!(s[0].pointers, 2);
        assert_eq!(s[1].status, RelationshipStatus::Pending);
        assert_eq!(s[1].counterparty, c.clinic.account());
        let p = c.h.access().summary(&c.hospital.account());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].side, Side::Provider);
        assert_eq!(c.h.access().pending_for(&c.patient.account()).len(), 1);
        assert!(c.h.access().review_queue(&c.patient.account()).is_empty());
    }
}
