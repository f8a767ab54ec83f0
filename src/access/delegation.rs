//! Delegation: a patient lets a guardian manage consent on its behalf, within bounds.
//!
//! A [`DelegationTerms`] bounds what the delegate may grant: one relationship or all, a scope,
//! actions, purposes and a period. A delegate's grant ([`AccessOp::Grant`] with `under`) must be
//! *narrower* on every axis — a wider one is refused with [`AccessError::Widens`] naming the
//! axis. The delegate may revoke the grants it made. Revoking the delegation (by the patient, or
//! by the delegate giving it up) revokes every grant made under it, each with its own recorded
//! revocation whose cause names the delegation.
//!
//! A delegate's grants never count against the patient's limits: delegates have smaller quotas
//! of their own ([`MAX_GRANTS_PER_DELEGATION`], and the live quotas
//! [`MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP`] and [`MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER`]
//! shared by all delegates), so no delegate can use up what the patient may grant.
//!
//! [`MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP`]: super::MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP
//! [`MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER`]: super::MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER
//!
//! [`AccessOp::Grant`]: super::AccessOp::Grant

use serde::{Deserialize, Serialize};

use super::{
    AccessError, AccessEvent, AccessState, ActionSet, DelegationId, Exec, Period, PurposeSet,
    Reason, RelationshipId, Revocation, RevocationCause, Role, Scope, Stamp,
};
use crate::hash::AccountId;

/// The most grants a delegate makes under one delegation, ever: a quota of the delegate's own,
/// never taken from the patient's (see [`MAX_LIVE_GRANTS_PER_RELATIONSHIP`]). The patient gives
/// a new delegation when it is used up.
///
/// [`MAX_LIVE_GRANTS_PER_RELATIONSHIP`]: super::MAX_LIVE_GRANTS_PER_RELATIONSHIP
pub const MAX_GRANTS_PER_DELEGATION: u32 = 256;

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
        self.check_actions_purposes_period(&terms.actions, &terms.purposes, &terms.period)?;
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
            return Err(AccessError::NotADelegationParty {
                account: by,
                delegation: id,
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{reason, record, Cast, DAY};
    use crate::access::{AccessOp, Action, Category, CategorySet, GrantTerms, PointerId, Viewer};
    use crate::purpose::PurposeOfUse::{Research, Treatment};

    fn setup() -> (Cast, RelationshipId, PointerId, PointerId, DelegationId) {
        let mut c = Cast::new();
        let (rel, lab, mh) = c.with_records();
        let terms = DelegationTerms {
            relationship: Some(rel),
            scope: Scope::categories(CategorySet::of(&[Category::Laboratory])),
            actions: ActionSet::of(&[Action::Read]),
            purposes: PurposeSet::of(&[Treatment]),
            period: Period::lasting(c.h.time, 60 * DAY),
        };
        let op = AccessOp::Delegate {
            delegate: c.guardian.account(),
            terms,
        };
        let d = DelegationId::of_tx(c.h.next_tx_id(&c.patient, &op));
        c.h.ok(&c.patient, op);
        (c, rel, lab, mh, d)
    }

    fn narrow(c: &Cast, rel: RelationshipId, lab: PointerId) -> GrantTerms {
        GrantTerms {
            scope: Scope::pointers(&[lab]),
            ..c.treat_terms(rel, 30)
        }
    }

    #[test]
    fn a_delegate_may_only_narrow() {
        let (mut c, rel, lab, mh, d) = setup();
        let ok = narrow(&c, rel, lab);
        let wider: [(&str, GrantTerms); 5] = [
            (
                "scope",
                GrantTerms {
                    scope: Scope::All,
                    ..ok.clone()
                },
            ),
            (
                "scope",
                GrantTerms {
                    scope: Scope::pointers(&[mh]),
                    ..ok.clone()
                },
            ),
            (
                "actions",
                GrantTerms {
                    actions: ActionSet::all(),
                    ..ok.clone()
                },
            ),
            (
                "purposes",
                GrantTerms {
                    purposes: PurposeSet::of(&[Treatment, Research]),
                    ..ok.clone()
                },
            ),
            (
                "period",
                GrantTerms {
                    period: Period::lasting(c.h.time, 90 * DAY),
                    ..ok.clone()
                },
            ),
        ];
        for (what, terms) in wider {
            assert_eq!(
                c.h.refused(
                    &c.guardian,
                    AccessOp::Grant {
                        terms,
                        under: Some(d)
                    }
                ),
                AccessError::Widens {
                    delegation: d,
                    what
                },
                "{what}"
            );
        }
        // Not the delegate, or no delegation named.
        assert_eq!(
            c.h.refused(
                &c.specialist,
                AccessOp::Grant {
                    terms: ok.clone(),
                    under: Some(d)
                }
            ),
            AccessError::NotTheDelegate(c.specialist.account())
        );
        assert_eq!(
            c.h.refused(
                &c.guardian,
                AccessOp::Grant {
                    terms: ok.clone(),
                    under: None
                }
            ),
            AccessError::NotThePatient(c.guardian.account())
        );
        let g = c.h.grant(&c.guardian, ok, Some(d));
        let grant = c.h.access().grant(&g).unwrap();
        assert_eq!(
            (grant.granted_by, grant.under),
            (c.guardian.account(), Some(d))
        );
        assert!(c
            .h
            .decide(&c.specialist, &c.patient, lab, Action::Read, Treatment)
            .is_permit());
        // Within the category, a later record is fine too.
        let lab2 =
            c.h.pointer(&c.hospital, rel, record(30, Category::Laboratory), None);
        c.h.grant(&c.guardian, narrow(&c, rel, lab2), Some(d));
    }

    #[test]
    fn revoking_a_delegation_cascades_and_is_recorded() {
        let (mut c, rel, lab, _, d) = setup();
        let g1 = c.h.grant(&c.guardian, narrow(&c, rel, lab), Some(d));
        let g2 = c.h.grant(
            &c.guardian,
            GrantTerms {
                viewer: Viewer::Account(c.researcher.account()),
                ..narrow(&c, rel, lab)
            },
            Some(d),
        );
        // The delegate revokes one of its own grants.
        c.h.ok(
            &c.guardian,
            AccessOp::RevokeGrant {
                grant: g2,
                reason: reason("no longer needed"),
            },
        );
        let impact = c.h.access().delegation_revocation_impact(&d, c.h.time);
        assert!(impact.iter().all(|l| l.viewer == c.specialist.account()));
        assert!(!impact.is_empty());
        let events = c.h.ok(
            &c.patient,
            AccessOp::RevokeDelegation {
                delegation: d,
                reason: reason("guardian moved"),
            },
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, AccessEvent::DelegationRevoked { cascaded: 1, .. })));
        let r1 = c.h.access().revocation(&g1).unwrap();
        assert_eq!(r1.cause, RevocationCause::DelegationRevoked(d));
        assert_eq!(r1.by, c.patient.account());
        assert_eq!(
            c.h.access().revocation(&g2).unwrap().cause,
            RevocationCause::Explicit
        );
        assert!(!c
            .h
            .decide(&c.specialist, &c.patient, lab, Action::Read, Treatment)
            .is_permit());
        assert_eq!(c.h.access().grants_under(&d), vec![g1, g2]);
        // The delegate can no longer grant.
        assert_eq!(
            c.h.refused(
                &c.guardian,
                AccessOp::Grant {
                    terms: narrow(&c, rel, lab),
                    under: Some(d)
                }
            ),
            AccessError::DelegationInactive(d)
        );
        assert_eq!(
            c.h.refused(
                &c.patient,
                AccessOp::RevokeDelegation {
                    delegation: d,
                    reason: reason("x")
                }
            ),
            AccessError::DelegationAlreadyRevoked(d)
        );
    }

    #[test]
    fn delegation_refusals() {
        let mut c = Cast::new();
        let (rel, _, _) = c.with_records();
        let terms = DelegationTerms {
            relationship: Some(rel),
            scope: Scope::All,
            actions: ActionSet::all(),
            purposes: PurposeSet::all(),
            period: Period::lasting(c.h.time, DAY),
        };
        assert!(matches!(
            c.h.refused(
                &c.hospital,
                AccessOp::Delegate {
                    delegate: c.guardian.account(),
                    terms: terms.clone()
                }
            ),
            AccessError::WrongRole { .. }
        ));
        // The guardian cannot delegate the patient's relationship.
        assert_eq!(
            c.h.refused(
                &c.guardian,
                AccessOp::Delegate {
                    delegate: c.specialist.account(),
                    terms: terms.clone()
                }
            ),
            AccessError::NotThePatient(c.guardian.account())
        );
        assert_eq!(
            c.h.refused(
                &c.patient,
                AccessOp::Delegate {
                    delegate: c.patient.account(),
                    terms
                }
            ),
            AccessError::NotTheDelegate(c.patient.account())
        );
    }
}
