//! Access decisions: explainable permit or deny, and the check behind access receipts.
//!
//! [`AccessState::decide`] runs in a few table lookups, never a scan of all grants: the
//! (patient, viewer) index entry, which carries the terms of the viewer's grants from that
//! patient, and the pointer — two independent lookups — then, only if no grant permits, the
//! pointer's relationship (for the reason, and for break-glass). Candidates are the viewer's
//! own grants on the pointer's relationship and those of the patient's groups it is a member
//! of (one more lookup per group), tried in the order they were made. "As of" decisions use
//! the relationship's grant list instead, which keeps every grant ever made.
//!
//! A denial gives the most specific reason found: the one from the candidate grant that got
//! furthest through the checks, in this order (later is more specific): in scope, action
//! allowed, purpose allowed, not revoked, not before its period, not after its period, not
//! denied by a provision ([`DenyReason::rank`]). With no candidate grant the reason is that the
//! relationship is not active, an expired break-glass session, or that there is no grant.
//!
//! An access receipt ([`AccessOp::RecordAccess`](super::AccessOp::RecordAccess)) names the
//! [`Basis`] it relies on; the chain checks exactly that basis at the block's time
//! ([`AccessState::check_basis`]) and refuses the receipt if it does not permit.

use core::fmt;

use serde::{Deserialize, Serialize};

use super::grant::evaluate_provisions;
use super::{
    AccessRequest, AccessState, Action, BreakGlassId, Grant, GrantId, GrantTerms, IndexedGrant,
    Pointer, PointerId, Relationship, RelationshipId, RelationshipStatus, Viewer,
};
use crate::hash::AccountId;
use crate::purpose::PurposeOfUse;

/// What permits an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Basis {
    /// The viewer is the patient.
    Patient,
    /// The viewer is the provider keeping the record.
    Custodian,
    /// A grant.
    Grant(GrantId),
    /// A break-glass session.
    BreakGlass(BreakGlassId),
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Basis::Patient => f.write_str("the patient"),
            Basis::Custodian => f.write_str("the record's custodian"),
            Basis::Grant(g) => write!(f, "grant {g}"),
            Basis::BreakGlass(s) => write!(f, "break-glass session {s}"),
        }
    }
}

/// Why a request is denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum DenyReason {
    /// No such pointer (or not yet, as of the height asked).
    #[error("unknown pointer {0}")]
    UnknownPointer(PointerId),
    /// The pointer is another patient's.
    #[error("pointer {pointer} is not a record of patient {patient}")]
    NotThePatientsPointer {
        /// The pointer.
        pointer: PointerId,
        /// The patient asked about.
        patient: AccountId,
    },
    /// The pointer's relationship is not accepted (pending, rejected or terminated).
    #[error("relationship {relationship} is {status}")]
    RelationshipNotActive {
        /// The relationship.
        relationship: RelationshipId,
        /// Its status.
        status: RelationshipStatus,
    },
    /// No grant of the viewer covers the relationship.
    #[error("no grant")]
    NoGrant,
    /// The grant does not cover the record.
    #[error("the record is not in the scope of grant {grant}")]
    NotInScope {
        /// The grant.
        grant: GrantId,
    },
    /// The grant does not allow the action.
    #[error("grant {grant} does not allow {action}")]
    ActionNotAllowed {
        /// The grant.
        grant: GrantId,
        /// The action.
        action: Action,
    },
    /// The grant does not allow the purpose.
    #[error("grant {grant} does not allow purpose {purpose}")]
    PurposeNotAllowed {
        /// The grant.
        grant: GrantId,
        /// The purpose.
        purpose: PurposeOfUse,
    },
    /// The grant was revoked.
    #[error("grant {grant} was revoked at height {height}")]
    Revoked {
        /// The grant.
        grant: GrantId,
        /// The height of the revocation.
        height: u64,
    },
    /// The grant's period has not started.
    #[error("grant {grant} is valid from {}", super::display::UtcTime(*.start))]
    NotYetValid {
        /// The grant.
        grant: GrantId,
        /// Its start.
        start: u64,
    },
    /// The grant's period is over.
    #[error("grant {grant} expired at {}", super::display::UtcTime(*.end))]
    Expired {
        /// The grant.
        grant: GrantId,
        /// Its end.
        end: u64,
    },
    /// A deny provision of the grant matches.
    #[error("denied by provision {provision} of grant {grant}")]
    DeniedByProvision {
        /// The grant.
        grant: GrantId,
        /// The provision's position in the grant's list.
        provision: u16,
    },
    /// The viewer's break-glass session has expired or was closed.
    #[error("break-glass session {session} is not open")]
    BreakGlassNotOpen {
        /// The session.
        session: BreakGlassId,
    },
    /// Break-glass covers only reading, for emergency purposes, records of relationships the
    /// patient has not rejected.
    #[error("break-glass session {session} does not cover this request")]
    BreakGlassScope {
        /// The session.
        session: BreakGlassId,
    },
    /// The basis a receipt names does not concern this viewer and record.
    #[error("{0} does not apply to this viewer and record")]
    BasisNotApplicable(Basis),
}

impl DenyReason {
    /// How specific the reason is: when several candidate grants deny, the decision reports
    /// the highest-ranked reason (the earliest grant on ties).
    pub fn rank(&self) -> u8 {
        match self {
            DenyReason::NoGrant | DenyReason::BasisNotApplicable(_) => 0,
            DenyReason::BreakGlassNotOpen { .. } | DenyReason::BreakGlassScope { .. } => 1,
            DenyReason::RelationshipNotActive { .. } => 2,
            DenyReason::NotInScope { .. } => 3,
            DenyReason::ActionNotAllowed { .. } => 4,
            DenyReason::PurposeNotAllowed { .. } => 5,
            DenyReason::Revoked { .. } => 6,
            DenyReason::NotYetValid { .. } => 7,
            DenyReason::Expired { .. } => 8,
            DenyReason::DeniedByProvision { .. } => 9,
            DenyReason::UnknownPointer(_) | DenyReason::NotThePatientsPointer { .. } => 10,
        }
    }
}

/// The answer to an [`AccessRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    /// Permitted, by this basis.
    Permit(Basis),
    /// Denied, for this reason.
    Deny(DenyReason),
}

impl Decision {
    /// Whether the request is permitted.
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit(_))
    }

    /// What permits it, if it is permitted.
    pub fn basis(&self) -> Option<Basis> {
        match self {
            Decision::Permit(b) => Some(*b),
            Decision::Deny(_) => None,
        }
    }
}

/// Keeps the more specific of two reasons (the first on ties).
fn keep_best(best: &mut DenyReason, candidate: DenyReason) {
    if candidate.rank() > best.rank() {
        *best = candidate;
    }
}

/// The height that stands for "the current state" in "as of" checks.
pub(crate) const NOW: u64 = u64::MAX;

impl AccessState {
    /// Decides `req` against the current state: permit with the basis, or deny with the reason.
    pub fn decide(&self, req: &AccessRequest) -> Decision {
        self.evaluate(req, NOW, &[])
    }

    /// Decides `req` as the state after block `height` would have: only records made by then
    /// count, and revocations, terminations, rejections, group changes and closed sessions only
    /// from the height they happened at. The time is `req.time` (give the header's timestamp;
    /// [`Chain::decide_as_of`](crate::chain::Chain::decide_as_of) does).
    pub fn decide_as_of(&self, req: &AccessRequest, height: u64) -> Decision {
        self.evaluate(req, height, &[])
    }

    /// The decision, with the grants in `excluded` treated as revoked (for dry runs).
    pub(crate) fn evaluate(
        &self,
        req: &AccessRequest,
        height: u64,
        excluded: &[GrantId],
    ) -> Decision {
        // The index entry does not depend on the pointer: look both up before using either,
        // so that their memory loads overlap.
        let index = self
            .viewer_index
            .get(&(req.patient, Viewer::Account(req.viewer)));
        let pointer = match self.pointer_for(req, height) {
            Ok(p) => p,
            Err(r) => return Decision::Deny(r),
        };
        if req.viewer == pointer.patient {
            return Decision::Permit(Basis::Patient);
        }
        if req.viewer == pointer.provider {
            return Decision::Permit(Basis::Custodian);
        }
        // Grants need no look at the relationship's status: they are only made on accepted
        // relationships, and a relationship only leaves that status by termination, which
        // revokes them all at the same height. A grant that is not revoked therefore implies
        // an accepted relationship, now and at every past height.
        let mut best = DenyReason::NoGrant;
        let mut try_grant = |id: GrantId, terms: &GrantTerms, revoked: Option<u64>| -> bool {
            if excluded.contains(&id) {
                return false;
            }
            match check_grant(id, terms, revoked, req, pointer, height) {
                Ok(()) => true,
                Err(r) => {
                    keep_best(&mut best, r);
                    false
                }
            }
        };
        let permitted = if height == NOW {
            self.live_candidates(index, req, pointer.relationship, &mut try_grant)
        } else {
            self.relationships
                .get(&pointer.relationship)
                .and_then(|rel| self.past_candidates(rel, req, height, &mut try_grant))
        };
        let Some(rel) = self.relationships.get(&pointer.relationship) else {
            return Decision::Deny(DenyReason::UnknownPointer(req.pointer));
        };
        let status = rel.status_at(height).unwrap_or(RelationshipStatus::Pending);
        if let Some(id) = permitted {
            // Ending a relationship revokes its live grants, but not those expired by then: a
            // request dated before such a grant's end must still find the relationship over.
            if status == RelationshipStatus::Accepted {
                return Decision::Permit(Basis::Grant(id));
            }
        }
        if status != RelationshipStatus::Accepted {
            // Its grants (if any) are revoked: the relationship is the reason.
            best = DenyReason::RelationshipNotActive {
                relationship: rel.id,
                status,
            };
        }
        if req.action == Action::Read
            && req.purpose.is_emergency()
            && status != RelationshipStatus::Rejected
        {
            if let Some(session) = self.session_at(index.and_then(|i| i.break_glass), height) {
                if session.is_open_at(req.time, height) {
                    return Decision::Permit(Basis::BreakGlass(session.id));
                }
                keep_best(
                    &mut best,
                    DenyReason::BreakGlassNotOpen {
                        session: session.id,
                    },
                );
            }
        }
        Decision::Deny(best)
    }

    /// The pointer of a request, if it exists at `height` and is the patient's.
    fn pointer_for(&self, req: &AccessRequest, height: u64) -> Result<&Pointer, DenyReason> {
        match self.pointers.get(&req.pointer) {
            Some(p) if p.added.height <= height => {
                if p.patient == req.patient {
                    Ok(p)
                } else {
                    Err(DenyReason::NotThePatientsPointer {
                        pointer: req.pointer,
                        patient: req.patient,
                    })
                }
            }
            _ => Err(DenyReason::UnknownPointer(req.pointer)),
        }
    }

    /// Tries the viewer's current grants on `relationship` in creation order, through the
    /// (patient, viewer) index; returns the first that permits.
    #[inline]
    fn live_candidates(
        &self,
        index: Option<&super::ViewerIndex>,
        req: &AccessRequest,
        relationship: RelationshipId,
        try_grant: &mut impl FnMut(GrantId, &GrantTerms, Option<u64>) -> bool,
    ) -> Option<GrantId> {
        let index = index?;
        if index.groups.is_empty() {
            // One list, already in creation order.
            return index
                .grants
                .iter()
                .filter(|g| g.terms.relationship == relationship)
                .find(|g| try_grant(g.grant, &g.terms, g.revoked))
                .map(|g| g.grant);
        }
        let mut candidates: Vec<&IndexedGrant> = index
            .grants
            .iter()
            .filter(|g| g.terms.relationship == relationship)
            .collect();
        for group in &index.groups {
            if !self.is_member_at(group, &req.viewer, NOW) {
                continue;
            }
            if let Some(gi) = self.viewer_index.get(&(req.patient, Viewer::Group(*group))) {
                candidates.extend(
                    gi.grants
                        .iter()
                        .filter(|g| g.terms.relationship == relationship),
                );
            }
        }
        candidates.sort_unstable_by_key(|g| g.seq);
        candidates
            .into_iter()
            .find(|g| try_grant(g.grant, &g.terms, g.revoked))
            .map(|g| g.grant)
    }

    /// Tries the grants on the relationship that concerned the viewer at `height`, in creation
    /// order; returns the first that permits.
    fn past_candidates(
        &self,
        rel: &Relationship,
        req: &AccessRequest,
        height: u64,
        try_grant: &mut impl FnMut(GrantId, &GrantTerms, Option<u64>) -> bool,
    ) -> Option<GrantId> {
        for seq in 0..rel.grants {
            let Some(id) = self.relationship_grants.get(&(rel.id, seq)) else {
                continue;
            };
            let Some(grant) = self.grants.get(id) else {
                continue;
            };
            if grant.created.height > height || !self.is_viewer_at(grant, &req.viewer, height) {
                continue;
            }
            let revoked = self.revocations.get(id).map(|r| r.at.height);
            if try_grant(*id, &grant.terms, revoked) {
                return Some(*id);
            }
        }
        None
    }

    /// Whether `account` is the grant's viewer (or a member of its group) at `height`.
    pub(super) fn is_viewer_at(&self, grant: &Grant, account: &AccountId, height: u64) -> bool {
        match grant.terms.viewer {
            Viewer::Account(a) => a == *account,
            Viewer::Group(g) => self.is_member_at(&g, account, height),
        }
    }

    /// The session in effect at `height` among `latest` and its predecessors.
    fn session_at(&self, latest: Option<BreakGlassId>, height: u64) -> Option<&super::BreakGlass> {
        let mut session = self.break_glass.get(&latest?)?;
        while session.opened.height > height {
            session = self.break_glass.get(&session.previous?)?;
        }
        Some(session)
    }

    /// Checks that `basis` permits `req` in the state after block `height` (`u64::MAX`:
    /// now): the check the chain runs on every access receipt.
    ///
    /// # Errors
    ///
    /// The [`DenyReason`] if it does not.
    pub fn check_basis(
        &self,
        req: &AccessRequest,
        basis: Basis,
        height: u64,
    ) -> Result<(), DenyReason> {
        let pointer = self.pointer_for(req, height)?;
        let not_applicable = Err(DenyReason::BasisNotApplicable(basis));
        let status = || {
            self.relationships
                .get(&pointer.relationship)
                .and_then(|r| r.status_at(height))
                .unwrap_or(RelationshipStatus::Pending)
        };
        match basis {
            Basis::Patient if req.viewer == pointer.patient => Ok(()),
            Basis::Custodian if req.viewer == pointer.provider => Ok(()),
            Basis::Patient | Basis::Custodian => not_applicable,
            Basis::Grant(id) => {
                let grant = match self.grants.get(&id) {
                    Some(g)
                        if g.created.height <= height
                            && g.patient == req.patient
                            && self.is_viewer_at(g, &req.viewer, height) =>
                    {
                        g
                    }
                    _ => return not_applicable,
                };
                if grant.terms.relationship != pointer.relationship {
                    return Err(DenyReason::NotInScope { grant: id });
                }
                let status = status();
                if status != RelationshipStatus::Accepted {
                    return Err(DenyReason::RelationshipNotActive {
                        relationship: pointer.relationship,
                        status,
                    });
                }
                let revoked = self.revocations.get(&id).map(|r| r.at.height);
                check_grant(id, &grant.terms, revoked, req, pointer, height)
            }
            Basis::BreakGlass(id) => {
                let session = match self.break_glass.get(&id) {
                    Some(s)
                        if s.provider == req.viewer
                            && s.patient == req.patient
                            && s.opened.height <= height =>
                    {
                        s
                    }
                    _ => return not_applicable,
                };
                if req.action != Action::Read
                    || !req.purpose.is_emergency()
                    || status() == RelationshipStatus::Rejected
                {
                    return Err(DenyReason::BreakGlassScope { session: id });
                }
                if !session.is_open_at(req.time, height) {
                    return Err(DenyReason::BreakGlassNotOpen { session: id });
                }
                Ok(())
            }
        }
    }
}

/// Checks one grant (already known to concern the viewer and the pointer's relationship).
#[inline]
fn check_grant(
    id: GrantId,
    t: &GrantTerms,
    revoked: Option<u64>,
    req: &AccessRequest,
    pointer: &Pointer,
    height: u64,
) -> Result<(), DenyReason> {
    if !t.scope.covers(pointer) {
        return Err(DenyReason::NotInScope { grant: id });
    }
    if !t.actions.contains(req.action) {
        return Err(DenyReason::ActionNotAllowed {
            grant: id,
            action: req.action,
        });
    }
    if !t.purposes.contains(req.purpose) {
        return Err(DenyReason::PurposeNotAllowed {
            grant: id,
            purpose: req.purpose,
        });
    }
    if let Some(h) = revoked.filter(|h| *h <= height) {
        return Err(DenyReason::Revoked {
            grant: id,
            height: h,
        });
    }
    if req.time < t.period.start {
        return Err(DenyReason::NotYetValid {
            grant: id,
            start: t.period.start,
        });
    }
    if req.time >= t.period.end {
        return Err(DenyReason::Expired {
            grant: id,
            end: t.period.end,
        });
    }
    evaluate_provisions(&t.provisions, req, pointer).map_err(|provision| {
        DenyReason::DeniedByProvision {
            grant: id,
            provision,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{key, reason, record, Cast, DAY};
    use crate::access::{AccessError, AccessOp, Category, GrantTerms, Period, PurposeSet, Scope};
    use crate::purpose::PurposeOfUse::{Payment, Research, Treatment};

    #[test]
    fn every_deny_reason_is_explained() {
        let mut c = Cast::new();
        let (rel, lab, _) = c.with_records();
        let read = |c: &Cast, p, purpose| {
            c.h.decide(&c.specialist, &c.patient, p, Action::Read, purpose)
        };
        assert_eq!(
            read(&c, lab, Treatment),
            Decision::Deny(DenyReason::NoGrant)
        );
        assert_eq!(
            read(&c, PointerId::default(), Treatment),
            Decision::Deny(DenyReason::UnknownPointer(PointerId::default()))
        );
        // A pointer asked about under another patient.
        assert!(matches!(
            c.h.decide(&c.specialist, &c.guardian, lab, Action::Read, Treatment),
            Decision::Deny(DenyReason::NotThePatientsPointer { .. })
        ));
        let start = c.h.time + DAY;
        let terms = GrantTerms {
            period: Period::new(start, start + DAY).unwrap(),
            ..c.treat_terms(rel, 30)
        };
        let g = c.h.grant(&c.patient, terms, None);
        assert_eq!(
            read(&c, lab, Treatment),
            Decision::Deny(DenyReason::NotYetValid { grant: g, start })
        );
        assert_eq!(
            read(&c, lab, Research),
            Decision::Deny(DenyReason::PurposeNotAllowed {
                grant: g,
                purpose: Research
            })
        );
        assert_eq!(
            c.h.decide(&c.specialist, &c.patient, lab, Action::Disclose, Treatment),
            Decision::Deny(DenyReason::ActionNotAllowed {
                grant: g,
                action: Action::Disclose
            })
        );
        let at = |c: &Cast, t| {
            c.h.access().decide(&AccessRequest::new(
                c.specialist.account(),
                c.patient.account(),
                lab,
                Action::Read,
                Treatment,
                t,
            ))
        };
        assert_eq!(at(&c, start), Decision::Permit(Basis::Grant(g)));
        assert_eq!(
            at(&c, start + DAY),
            Decision::Deny(DenyReason::Expired {
                grant: g,
                end: start + DAY
            })
        );
        // Patient and custodian.
        assert_eq!(
            c.h.decide(&c.patient, &c.patient, lab, Action::Disclose, Payment),
            Decision::Permit(Basis::Patient)
        );
        assert_eq!(
            c.h.decide(&c.hospital, &c.patient, lab, Action::Read, Research),
            Decision::Permit(Basis::Custodian)
        );
        // A terminated relationship.
        c.h.ok(
            &c.patient,
            AccessOp::TerminateRelationship {
                relationship: rel,
                reason: reason("moving"),
            },
        );
        assert!(matches!(
            at(&c, start),
            Decision::Deny(DenyReason::RelationshipNotActive {
                status: RelationshipStatus::Terminated,
                ..
            })
        ));
    }

    #[test]
    fn a_grant_expired_before_its_relationship_ended_permits_nothing_at_earlier_times() {
        let mut c = Cast::new();
        let (rel, lab, _) = c.with_records();
        let start = c.h.time;
        let terms = c.treat_terms(rel, 1);
        let g = c.h.grant(&c.patient, terms, None);
        // The grant expires; then the patient ends the relationship, which revokes only live
        // grants, so this one keeps no revocation record.
        c.h.apply_after(
            2 * DAY,
            &c.patient,
            AccessOp::TerminateRelationship {
                relationship: rel,
                reason: reason("moving"),
            },
        )
        .unwrap();
        assert!(c.h.access().revocation(&g).is_none());
        // A request dated inside the grant's period finds the relationship over.
        let req = AccessRequest::new(
            c.specialist.account(),
            c.patient.account(),
            lab,
            Action::Read,
            Treatment,
            start + 10,
        );
        assert!(matches!(
            c.h.access().decide(&req),
            Decision::Deny(DenyReason::RelationshipNotActive {
                status: RelationshipStatus::Terminated,
                ..
            })
        ));
    }

    #[test]
    fn the_most_specific_reason_wins_and_the_earliest_permit_is_named() {
        let mut c = Cast::new();
        let (rel, lab, mh) = c.with_records();
        let narrow = GrantTerms {
            scope: Scope::pointers(&[mh]),
            ..c.treat_terms(rel, 30)
        };
        let g1 = c.h.grant(&c.patient, narrow, None);
        let research = GrantTerms {
            purposes: PurposeSet::of(&[Research]),
            ..c.treat_terms(rel, 30)
        };
        let g2 = c.h.grant(&c.patient, research, None);
        // g1 is out of scope (rank 3), g2 has the wrong purpose (rank 5).
        assert_eq!(
            c.h.decide(&c.specialist, &c.patient, lab, Action::Read, Treatment),
            Decision::Deny(DenyReason::PurposeNotAllowed {
                grant: g2,
                purpose: Treatment
            })
        );
        let g3 = c.h.grant(&c.patient, c.treat_terms(rel, 30), None);
        let g4 = c.h.grant(&c.patient, c.treat_terms(rel, 30), None);
        assert_eq!(
            c.h.decide(&c.specialist, &c.patient, lab, Action::Read, Treatment),
            Decision::Permit(Basis::Grant(g3))
        );
        assert_eq!(
            c.h.decide(&c.specialist, &c.patient, mh, Action::Read, Treatment),
            Decision::Permit(Basis::Grant(g1))
        );
        let _ = g4;
    }

    #[test]
    fn as_of_queries_see_the_past() {
        let mut c = Cast::new();
        let (rel, lab, _) = c.with_records();
        let before_grant = c.h.height;
        let g = c.h.grant(&c.patient, c.treat_terms(rel, 30), None);
        let granted = (c.h.height, c.h.time);
        c.h.ok(
            &c.patient,
            AccessOp::RevokeGrant {
                grant: g,
                reason: reason("done"),
            },
        );
        let revoked = (c.h.height, c.h.time);
        let req = |time| AccessRequest {
            viewer: c.specialist.account(),
            patient: c.patient.account(),
            pointer: lab,
            action: Action::Read,
            purpose: Treatment,
            time,
        };
        let a = c.h.access();
        assert_eq!(
            a.decide_as_of(&req(granted.1), before_grant),
            Decision::Deny(DenyReason::NoGrant)
        );
        assert_eq!(
            a.decide_as_of(&req(granted.1), granted.0),
            Decision::Permit(Basis::Grant(g))
        );
        assert_eq!(
            a.decide_as_of(&req(revoked.1), revoked.0),
            Decision::Deny(DenyReason::Revoked {
                grant: g,
                height: revoked.0
            })
        );
        assert_eq!(
            a.decide(&req(revoked.1)),
            a.decide_as_of(&req(revoked.1), revoked.0)
        );
        // Before the pointer existed.
        assert_eq!(
            a.decide_as_of(&req(granted.1), 1),
            Decision::Deny(DenyReason::UnknownPointer(lab))
        );
    }

    #[test]
    fn receipts_are_checked_against_the_basis_they_name() {
        let mut c = Cast::new();
        let (rel, lab, mh) = c.with_records();
        let g = c.h.grant(
            &c.patient,
            GrantTerms {
                scope: Scope::pointers(&[lab]),
                ..c.treat_terms(rel, 30)
            },
            None,
        );
        let receipt = |pointer, purpose, basis| AccessOp::RecordAccess {
            patient: c.patient.account(),
            pointer,
            action: Action::Read,
            purpose,
            basis,
        };
        c.h.ok(&c.specialist, receipt(lab, Treatment, Basis::Grant(g)));
        // Someone else's grant, the wrong purpose, out of scope, a basis that is not theirs.
        assert_eq!(
            c.h.refused(&c.researcher, receipt(lab, Treatment, Basis::Grant(g))),
            AccessError::Denied(DenyReason::BasisNotApplicable(Basis::Grant(g)))
        );
        assert_eq!(
            c.h.refused(&c.specialist, receipt(lab, Research, Basis::Grant(g))),
            AccessError::Denied(DenyReason::PurposeNotAllowed {
                grant: g,
                purpose: Research
            })
        );
        assert_eq!(
            c.h.refused(&c.specialist, receipt(mh, Treatment, Basis::Grant(g))),
            AccessError::Denied(DenyReason::NotInScope { grant: g })
        );
        for basis in [Basis::Patient, Basis::Custodian] {
            assert_eq!(
                c.h.refused(&c.specialist, receipt(lab, Treatment, basis)),
                AccessError::Denied(DenyReason::BasisNotApplicable(basis))
            );
        }
        assert!(matches!(
            c.h.refused(&key(99), receipt(lab, Treatment, Basis::Grant(g))),
            AccessError::NotRegistered(_)
        ));
        // The patient's own read is logged too.
        c.h.ok(&c.patient, receipt(mh, Payment, Basis::Patient));
        let lab2 =
            c.h.pointer(&c.hospital, rel, record(40, Category::Laboratory), None);
        assert!(matches!(
            c.h.refused(&c.specialist, receipt(lab2, Treatment, Basis::Grant(g))),
            AccessError::Denied(DenyReason::NotInScope { .. })
        ));
        assert_eq!(c.h.access().access_receipts(&c.patient.account()).len(), 2);
    }
}
