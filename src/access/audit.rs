//! The audit trail: an append-only log per patient of everything that concerns the patient —
//! relationships, pointers, grants and their revocations, delegations, groups, break-glass
//! sessions, and every access receipt.
//!
//! Entries are never changed or removed; each names the transaction, the actor, and the block
//! height and time, and is committed in the state root like everything else.

use serde::{Deserialize, Serialize};

use super::{
    AccessError, AccessEvent, AccessOp, AccessRequest, AccessState, Action, Basis, Exec, PointerId,
    Stamp,
};
use crate::hash::{AccountId, TxId};
use crate::purpose::PurposeOfUse;

/// One entry of a patient's audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its position in the patient's trail.
    pub seq: u64,
    /// When.
    pub at: Stamp,
    /// The transaction.
    pub tx: TxId,
    /// The account that signed it.
    pub actor: AccountId,
    /// What happened.
    pub event: AccessEvent,
}

impl AccessOp {
    /// The receipt of the access `req` on `basis` (as a permit's [`Decision::basis`] gives it),
    /// to be signed by the viewer. Its time is the block's, not `req.time`.
    ///
    /// [`Decision::basis`]: super::Decision::basis
    pub fn record_access(req: &AccessRequest, basis: Basis) -> Self {
        AccessOp::RecordAccess {
            patient: req.patient,
            pointer: req.pointer,
            action: req.action,
            purpose: req.purpose,
            basis,
        }
    }
}

impl Exec<'_> {
    pub(super) fn record_access(
        &mut self,
        patient: AccountId,
        pointer: PointerId,
        action: Action,
        purpose: PurposeOfUse,
        basis: Basis,
    ) -> Result<(), AccessError> {
        let viewer = self.actor();
        self.registered(viewer)?;
        let req = AccessRequest {
            viewer,
            patient,
            pointer,
            action,
            purpose,
            time: self.cx.time,
        };
        self.s
            .check_basis(&req, basis, self.cx.height)
            .map_err(AccessError::Denied)?;
        self.emit(
            Some(patient),
            AccessEvent::Accessed {
                patient,
                viewer,
                pointer,
                action,
                purpose,
                basis,
            },
        );
        Ok(())
    }
}

impl AccessState {
    /// The number of entries in `patient`'s audit trail.
    pub fn audit_len(&self, patient: &AccountId) -> u64 {
        self.counters(patient).audit
    }

    /// The entries of `patient`'s audit trail from position `from` on, oldest first.
    pub fn audit_trail_from(&self, patient: &AccountId, from: u64) -> Vec<&AuditEntry> {
        (from..self.audit_len(patient))
            .filter_map(|i| self.audit.get(&(*patient, i)))
            .collect()
    }

    /// `patient`'s whole audit trail, oldest first.
    pub fn audit_trail(&self, patient: &AccountId) -> Vec<&AuditEntry> {
        self.audit_trail_from(patient, 0)
    }

    /// The access receipts in `patient`'s audit trail, oldest first.
    pub fn access_receipts(&self, patient: &AccountId) -> Vec<&AuditEntry> {
        self.audit_trail(patient)
            .into_iter()
            .filter(|e| matches!(e.event, AccessEvent::Accessed { .. }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::access::tests::{reason, Cast};
    use crate::access::{AccessEvent, AccessOp};

    #[test]
    fn the_trail_is_append_only_and_ordered() {
        let mut c = Cast::new();
        let (rel, _, _) = c.with_records();
        let before: Vec<_> =
            c.h.access()
                .audit_trail(&c.patient.account())
                .into_iter()
                .cloned()
                .collect();
        let g = c.h.grant(&c.patient, c.treat_terms(rel, 30), None);
        c.h.ok(
            &c.patient,
            AccessOp::RevokeGrant {
                grant: g,
                reason: reason("changed my mind"),
            },
        );
        let after = c.h.access().audit_trail(&c.patient.account());
        assert_eq!(after.len(), before.len() + 2);
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(old, *new, "earlier entries never change");
        }
        for (i, e) in after.iter().enumerate() {
            assert_eq!(e.seq, i as u64);
        }
        assert!(after.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(matches!(
            after.last().unwrap().event,
            AccessEvent::GrantRevoked { .. }
        ));
        assert_eq!(
            c.h.access()
                .audit_trail_from(&c.patient.account(), after.len() as u64 - 1)
                .len(),
            1
        );
        // Registration, proposal, acceptance, two pointers, grant, revocation.
        let kinds: Vec<_> = after
            .iter()
            .map(|e| core::mem::discriminant(&e.event))
            .collect();
        assert_eq!(kinds.len(), 7);
    }
}
