//! Break-glass: time-boxed emergency access, reviewed by the patient afterwards.
//!
//! A provider certified for emergencies opens a session on a patient's records with a stated
//! reason, for at most [`MAX_BREAK_GLASS_SECS`]. While it is open, the provider may *read* the
//! patient's records (those of every relationship the patient has not rejected) for emergency
//! purposes (`ETREAT`, `BTG`), whatever the patient's grants say. The session expires by itself
//! at the block time it was opened plus its duration; the provider may close it earlier. Every
//! session enters the patient's review queue ([`AccessState::review_queue`]) and audit trail
//! until the patient reviews it.
//!
//! A session lasts only as long as the provider's emergency certification: when an authority
//! withdraws it ([`AccessOp::DecertifyProvider`], or [`AccessOp::CertifyProvider`] without
//! `emergency`), every session the provider still has open is closed in the same transaction,
//! each closure recorded on the session (its `closed` stamp, seen in the review queue) and as
//! an [`AccessEvent::BreakGlassRevoked`] naming the authority in the patient's audit trail.
//!
//! [`AccessOp::DecertifyProvider`]: super::AccessOp::DecertifyProvider
//! [`AccessOp::CertifyProvider`]: super::AccessOp::CertifyProvider

use serde::{Deserialize, Serialize};

use super::{
    AccessError, AccessEvent, AccessState, BreakGlassId, Exec, Reason, Role, Stamp, Viewer,
};
use crate::hash::AccountId;

/// The longest a break-glass session lasts: 24 hours.
pub const MAX_BREAK_GLASS_SECS: u64 = 24 * 3600;
/// The most break-glass sessions one provider has open at a time (on as many patients).
pub const MAX_OPEN_SESSIONS_PER_PROVIDER: usize = 1024;

/// The patient's verdict on a break-glass session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReviewOutcome {
    /// The access was justified.
    Acknowledged,
    /// The patient disputes the access (for the authority to follow up).
    Disputed,
}

/// The patient's review of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// When.
    pub at: Stamp,
    /// The verdict.
    pub outcome: ReviewOutcome,
    /// A note.
    pub note: Option<Reason>,
}

/// A break-glass session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// Its id.
    pub id: BreakGlassId,
    /// The patient.
    pub patient: AccountId,
    /// The provider that opened it.
    pub provider: AccountId,
    /// Why.
    pub reason: Reason,
    /// When it was opened.
    pub opened: Stamp,
    /// The block time at which it expires by itself.
    pub expires_at: u64,
    /// When it was closed early.
    pub closed: Option<Stamp>,
    /// The patient's review.
    pub review: Option<Review>,
    /// The same provider's previous session for the patient.
    pub previous: Option<BreakGlassId>,
}

impl BreakGlass {
    /// Whether it is open at time `time` in the state after block `height` (`u64::MAX`: now).
    pub fn is_open_at(&self, time: u64, height: u64) -> bool {
        self.opened.height <= height
            && self.opened.time <= time
            && time < self.expires_at
            && self.closed.is_none_or(|c| c.height > height)
    }
}

impl Exec<'_> {
    fn session(&self, id: BreakGlassId) -> Result<BreakGlass, AccessError> {
        self.s
            .break_glass
            .get(&id)
            .cloned()
            .ok_or(AccessError::UnknownSession(id))
    }

    pub(super) fn open_break_glass(
        &mut self,
        patient: AccountId,
        reason: &Reason,
        duration_secs: u64,
    ) -> Result<(), AccessError> {
        let provider = self.actor();
        let cert = self.certified_provider(provider)?;
        if !cert.emergency {
            return Err(AccessError::NotEmergencyCertified(provider));
        }
        self.require_role(patient, Role::Patient)?;
        if duration_secs == 0 || duration_secs > MAX_BREAK_GLASS_SECS {
            return Err(AccessError::BreakGlassDuration {
                secs: duration_secs,
                max: MAX_BREAK_GLASS_SECS,
            });
        }
        let key = (patient, Viewer::Account(provider));
        let mut index = self.s.viewer_index.get(&key).cloned().unwrap_or_default();
        if let Some(previous) = index.break_glass {
            let s = self.session(previous)?;
            if s.is_open_at(self.cx.time, u64::MAX) {
                return Err(AccessError::BreakGlassAlreadyOpen(previous));
            }
        }
        let id = BreakGlassId::of_tx(self.cx.tx_id);
        let expires_at = self.cx.time.saturating_add(duration_secs);
        let now = self.cx.time;
        let mut open = self
            .s
            .open_sessions
            .get(&provider)
            .cloned()
            .unwrap_or_default();
        open.retain(|(_, expires)| *expires > now);
        if open.len() >= MAX_OPEN_SESSIONS_PER_PROVIDER {
            return Err(AccessError::LimitReached {
                what: "open break-glass sessions per provider",
                max: MAX_OPEN_SESSIONS_PER_PROVIDER as u64,
            });
        }
        open.push((id, expires_at));
        self.s.open_sessions.insert(provider, open);
        self.s.break_glass.insert(
            id,
            BreakGlass {
                id,
                patient,
                provider,
                reason: reason.clone(),
                opened: self.stamp(),
                expires_at,
                closed: None,
                review: None,
                previous: index.break_glass,
            },
        );
        index.break_glass = Some(id);
        self.s.viewer_index.insert(key, index);
        let mut c = self.s.counters(&patient);
        self.s
            .patient_break_glass
            .insert((patient, c.break_glass), id);
        c.break_glass = c
            .break_glass
            .checked_add(1)
            .ok_or(AccessError::LimitReached {
                what: "break-glass sessions per patient",
                max: u32::MAX.into(),
            })?;
        self.s.counters.insert(patient, c);
        self.emit(
            Some(patient),
            AccessEvent::BreakGlassOpened {
                patient,
                session: id,
                provider,
                expires_at,
            },
        );
        Ok(())
    }

    pub(super) fn close_break_glass(&mut self, id: BreakGlassId) -> Result<(), AccessError> {
        let mut s = self.session(id)?;
        let actor = self.actor();
        if s.provider != actor {
            return Err(AccessError::NotTheOpener(actor));
        }
        if s.closed.is_some() {
            return Err(AccessError::SessionClosed(id));
        }
        s.closed = Some(self.stamp());
        let patient = s.patient;
        self.s.break_glass.insert(id, s);
        if let Some(open) = self.s.open_sessions.get(&actor) {
            let mut open = open.clone();
            open.retain(|(session, _)| *session != id);
            if open.is_empty() {
                self.s.open_sessions.remove(actor);
            } else {
                self.s.open_sessions.insert(actor, open);
            }
        }
        self.emit(
            Some(patient),
            AccessEvent::BreakGlassClosed {
                patient,
                session: id,
            },
        );
        Ok(())
    }

    /// Closes every session `provider` still has open, its emergency certification being
    /// withdrawn by the signer: each closure is stamped on the session and goes to its
    /// patient's audit trail.
    pub(super) fn close_sessions_of(&mut self, provider: AccountId) -> Result<(), AccessError> {
        let Some(open) = self.s.open_sessions.get(&provider).cloned() else {
            return Ok(());
        };
        self.s.open_sessions.remove(provider);
        let by = self.actor();
        for (id, _) in open {
            let mut s = self.session(id)?;
            if !s.is_open_at(self.cx.time, u64::MAX) {
                continue;
            }
            s.closed = Some(self.stamp());
            let patient = s.patient;
            self.s.break_glass.insert(id, s);
            self.emit(
                Some(patient),
                AccessEvent::BreakGlassRevoked {
                    patient,
                    session: id,
                    provider,
                    by,
                },
            );
        }
        Ok(())
    }

    pub(super) fn review_break_glass(
        &mut self,
        id: BreakGlassId,
        outcome: ReviewOutcome,
        note: Option<&Reason>,
    ) -> Result<(), AccessError> {
        let mut s = self.session(id)?;
        let actor = self.actor();
        if s.patient != actor {
            return Err(AccessError::NotThePatient(actor));
        }
        if s.review.is_some() {
            return Err(AccessError::AlreadyReviewed(id));
        }
        s.review = Some(Review {
            at: self.stamp(),
            outcome,
            note: note.cloned(),
        });
        let patient = s.patient;
        self.s.break_glass.insert(id, s);
        self.emit(
            Some(patient),
            AccessEvent::BreakGlassReviewed {
                patient,
                session: id,
                outcome,
            },
        );
        Ok(())
    }
}

impl AccessState {
    /// A break-glass session.
    pub fn break_glass_session(&self, id: &BreakGlassId) -> Option<&BreakGlass> {
        self.break_glass.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{reason, Cast};
    use crate::access::AccessRequest;
    use crate::access::{AccessOp, Action, Basis, Decision, DenyReason};
    use crate::purpose::PurposeOfUse::{EmergencyTreatment, Research, Treatment};

    fn open(c: &mut Cast, secs: u64) -> BreakGlassId {
        let op = AccessOp::OpenBreakGlass {
            patient: c.patient.account(),
            reason: reason("unconscious on arrival"),
            duration_secs: secs,
        };
        let id = BreakGlassId::of_tx(c.h.next_tx_id(&c.hospital, &op));
        c.h.ok(&c.hospital, op);
        id
    }

    #[test]
    fn break_glass_is_time_boxed_scoped_and_reviewed() {
        let mut c = Cast::new();
        let (_, lab, _) = c.with_records();
        // The record's custodian is permitted anyway: use a second emergency provider.
        let er = crate::access::tests::key(8);
        c.h.provider(&c.authority, &er, "Emergency Room", true);
        let op = AccessOp::OpenBreakGlass {
            patient: c.patient.account(),
            reason: reason("cardiac arrest"),
            duration_secs: 3600,
        };
        let s = BreakGlassId::of_tx(c.h.next_tx_id(&er, &op));
        c.h.ok(&er, op.clone());
        let opened = c.h.time;
        let read = |c: &Cast, purpose, t| {
            c.h.access().decide(&AccessRequest::new(
                er.account(),
                c.patient.account(),
                lab,
                Action::Read,
                purpose,
                t,
            ))
        };
        assert_eq!(
            read(&c, EmergencyTreatment, opened + 10),
            Decision::Permit(Basis::BreakGlass(s))
        );
        // Only emergency purposes, only reading.
        assert!(!read(&c, Treatment, opened + 10).is_permit());
        assert!(!read(&c, Research, opened + 10).is_permit());
        assert!(!c
            .h
            .access()
            .decide(&AccessRequest::new(
                er.account(),
                c.patient.account(),
                lab,
                Action::Disclose,
                EmergencyTreatment,
                opened + 10
            ))
            .is_permit());
        // It expires by itself.
        assert_eq!(
            read(&c, EmergencyTreatment, opened + 3600),
            Decision::Deny(DenyReason::BreakGlassNotOpen { session: s })
        );
        assert_eq!(c.h.refused(&er, op), AccessError::BreakGlassAlreadyOpen(s));
        // The patient sees it in the review queue and the audit trail.
        let queue = c.h.access().review_queue(&c.patient.account());
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].reason.as_str(), "cardiac arrest");
        assert!(c.h.access().audit_trail(&c.patient.account()).iter().any(
            |e| matches!(e.event, AccessEvent::BreakGlassOpened { session, .. } if session == s)
        ));
        let review = AccessOp::ReviewBreakGlass {
            session: s,
            outcome: ReviewOutcome::Acknowledged,
            note: None,
        };
        assert_eq!(
            c.h.refused(&er, review.clone()),
            AccessError::NotThePatient(er.account())
        );
        c.h.ok(&c.patient, review.clone());
        assert!(c.h.access().review_queue(&c.patient.account()).is_empty());
        assert_eq!(
            c.h.refused(&c.patient, review),
            AccessError::AlreadyReviewed(s)
        );
        // Closing early.
        assert_eq!(
            c.h.refused(&c.hospital, AccessOp::CloseBreakGlass { session: s }),
            AccessError::NotTheOpener(c.hospital.account())
        );
        c.h.ok(&er, AccessOp::CloseBreakGlass { session: s });
        assert!(!read(&c, EmergencyTreatment, opened + 20).is_permit());
        assert_eq!(
            c.h.refused(&er, AccessOp::CloseBreakGlass { session: s }),
            AccessError::SessionClosed(s)
        );
        // A new session after the old one closed; the old stays on record.
        let s2 = open(&mut c, 60);
        assert_eq!(
            c.h.access().break_glass_session(&s2).unwrap().previous,
            None
        );
        assert_eq!(
            c.h.access()
                .break_glass_sessions(&c.patient.account())
                .len(),
            2
        );
    }

    #[test]
    fn only_emergency_certified_providers_break_glass_within_bounds() {
        let mut c = Cast::new();
        c.with_records();
        let op = |secs| AccessOp::OpenBreakGlass {
            patient: c.patient.account(),
            reason: reason("emergency"),
            duration_secs: secs,
        };
        assert_eq!(
            c.h.refused(&c.clinic, op(60)),
            AccessError::NotEmergencyCertified(c.clinic.account())
        );
        assert_eq!(
            c.h.refused(&c.specialist, op(60)),
            AccessError::NotCertified(c.specialist.account())
        );
        assert!(matches!(
            c.h.refused(&c.researcher, op(60)),
            AccessError::WrongRole { .. }
        ));
        assert!(matches!(
            c.h.refused(&c.hospital, op(MAX_BREAK_GLASS_SECS + 1)),
            AccessError::BreakGlassDuration { .. }
        ));
        assert!(matches!(
            c.h.refused(&c.hospital, op(0)),
            AccessError::BreakGlassDuration { .. }
        ));
        open(&mut c, MAX_BREAK_GLASS_SECS);
    }
}
