//! Delegation: a patient lets a guardian manage consent on its behalf, within bounds.
//!
//! A [`DelegationTerms`] bounds what the delegate may grant: one relationship or all, a scope,
//! actions, purposes and a period. A delegate's grant ([`AccessOp::Grant`] with `under`) must be
//! *narrower* on every axis — a wider one is refused with [`AccessError::Widens`] naming the
//! axis. The delegate may revoke the grants it made. Revoking the delegation (by the patient, or
//! by the delegate giving it up) revokes every grant made under it, each with its own recorded
//! revocation whose cause names the delegation.
//!
//! [`AccessOp::Grant`]: super::AccessOp::Grant

use serde::{Deserialize, Serialize};

use super::{
    AccessError, AccessEvent, AccessState, ActionSet, DelegationId, Exec, Period, PurposeSet,
    Reason, RelationshipId, Revocation, RevocationCause, Role, Scope, Stamp,
};
use crate::hash::AccountId;

/// The most grants a delegate makes under one delegation.
pub const MAX_GRANTS_PER_DELEGATION: u32 = 1024;

/// The bounds of a delegation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationTerms {
    /// The one relationship the delegate manages, or `None` for all of the patient's.
    pub relationship: Option<RelationshipId>,
    /// The records it may grant.
    pub scope: Scope,
    /// The actions it may grant (not empty).
    pub actions: ActionSet,
    /// The purposes it may grant (not empty).
    pub purposes: PurposeSet,
    /// When the delegation is valid; the delegate's grants must lie inside it.
    pub period: Period,
}

/// A delegation in the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// Its id.
    pub id: DelegationId,
    /// The patient.
    pub patient: AccountId,
    /// The guardian.
    pub delegate: AccountId,
    /// Its bounds, with every pointer named by its record's first version.
    pub terms: DelegationTerms,
    /// When it was made.
    pub created: Stamp,
    /// Its revocation.
    pub revoked: Option<Revocation>,
    /// How many grants were made under it.
    pub grants: u32,
}

impl Delegation {
    /// Whether the delegate may act under it at time `t`.
    pub fn is_active(&self, t: u64) -> bool {
        self.revoked.is_none() && self.terms.period.contains(t)
    }
}

impl Exec<'_> {
    pub(super) fn delegation(&self, id: DelegationId) -> Result<Delegation, AccessError> {
        self.s
            .delegations
            .get(&id)
            .cloned()
            .ok_or(AccessError::UnknownDelegation(id))
    }

    pub(super) fn delegate(
        &mut self,
        delegate: AccountId,
        terms: &DelegationTerms,
    ) -> Result<(), AccessError> {
        let patient = self.actor();
        self.require_role(patient, Role::Patient)?;
        self.registered(delegate)?;
        if delegate == patient {
            return Err(AccessError::NotTheDelegate(delegate));
        }
        if let Some(r) = terms.relationship {
            let rel = self.relationship(r)?;
            if rel.patient != patient {
                return Err(AccessError::NotThePatient(patient));
            }
        }
        if terms.actions.is_empty() {
            return Err(AccessError::Empty("actions"));
        }
        if terms.purposes.is_empty() {
            return Err(AccessError::Empty("purposes"));
        }
        terms.period.check()?;
        if terms.period.end <= self.cx.time {
            return Err(AccessError::PeriodOver {
                end: terms.period.end,
                now: self.cx.time,
            });
        }
        let scope = self.normalise_scope(&terms.scope, patient, terms.relationship)?;
        let id = DelegationId::of_tx(self.cx.tx_id);
        self.s.delegations.insert(
            id,
            Delegation {
                id,
                patient,
                delegate,
                terms: DelegationTerms {
                    scope,
                    ..terms.clone()
                },
                created: self.stamp(),
                revoked: None,
                grants: 0,
            },
        );
        self.emit(
            Some(patient),
            AccessEvent::DelegationCreated {
                patient,
                delegation: id,
                delegate,
            },
        );
        Ok(())
    }

    pub(super) fn revoke_delegation(
        &mut self,
        id: DelegationId,
        reason: &Reason,
    ) -> Result<(), AccessError> {
        let mut d = self.delegation(id)?;
        let by = self.actor();
        if by != d.patient && by != d.delegate {
            return Err(AccessError::NotThePatient(by));
        }
        if d.revoked.is_some() {
            return Err(AccessError::DelegationAlreadyRevoked(id));
        }
        d.revoked = Some(Revocation {
            by,
            at: self.stamp(),
            reason: reason.clone(),
            cause: RevocationCause::Explicit,
        });
        let (patient, n) = (d.patient, d.grants);
        self.s.delegations.insert(id, d);
        let mut cascaded = 0;
        for i in 0..n {
            let grant = *self
                .s
                .delegation_grants
                .get(&(id, i))
                .expect("a delegation's grant list is contiguous");
            if self.s.revocations.get(&grant).is_none() {
                self.revoke_one(grant, reason, RevocationCause::DelegationRevoked(id))?;
                cascaded += 1;
            }
        }
        self.emit(
            Some(patient),
            AccessEvent::DelegationRevoked {
                patient,
                delegation: id,
                by,
                cascaded,
            },
        );
        Ok(())
    }
}

impl AccessState {
    /// A delegation.
    pub fn delegation(&self, id: &DelegationId) -> Option<&Delegation> {
        self.delegations.get(id)
    }

    /// The grants made under a delegation, in creation order.
    pub fn grants_under(&self, id: &DelegationId) -> Vec<super::GrantId> {
        let n = self.delegations.get(id).map_or(0, |d| d.grants);
        (0..n)
            .filter_map(|i| self.delegation_grants.get(&(*id, i)).copied())
            .collect()
    }
}
