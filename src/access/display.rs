//! How access-control values read to a person: `Display` for events, audit entries, stamps,
//! viewers, revocation causes, review outcomes and grant statuses (and for the ledger's
//! [`Event`]).
//!
//! Identifiers are written in full (64 hex digits) by default. The alternate form (`{:#}`)
//! shortens every identifier to its first 8 hex digits, for screens and logs read by people:
//!
//! ```
//! use medledger::access::{AccessEvent, Role};
//! use medledger::hash::AccountId;
//!
//! let e = AccessEvent::Registered { account: AccountId::from_bytes([0xab; 32]), role: Role::Patient };
//! assert_eq!(format!("{e:#}"), "account abababab registered as a patient");
//! assert_eq!(e.to_string().len(), "account  registered as a patient".len() + 64);
//! ```
//!
//! Times are written as UTC dates and times in ISO 8601 (`2026-01-02T10:00:00Z`), here and in
//! the messages of [`DenyReason`](super::DenyReason).

use core::fmt;

use super::Event;
use super::{
    AccessEvent, AuditEntry, Basis, Decision, GrantStatus, ReviewOutcome, RevocationCause, Stamp,
    Viewer,
};

/// Writes an identifier: in full, or its first 8 hex digits if `short` (the alternate form of
/// the value being written: `write!` gives each argument a formatter of its own).
struct Id<'a, T: AsRef<[u8]>>(&'a T, bool);

impl<T: AsRef<[u8]>> fmt::Display for Id<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0.as_ref();
        let shown = if self.1 {
            &bytes[..bytes.len().min(4)]
        } else {
            bytes
        };
        crate::hash::write_hex(f, shown)
    }
}

/// Passes text through, shortening every run of exactly 64 hex digits (a full identifier) to
/// its first 8: the alternate form of values whose messages come from elsewhere (errors).
struct ShortIds<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    run: [u8; 64],
    len: usize,
    /// The current run of hex digits is longer than 64: not an identifier.
    long: bool,
}

impl<'a, 'b> ShortIds<'a, 'b> {
    fn new(out: &'a mut fmt::Formatter<'b>) -> Self {
        Self {
            out,
            run: [0; 64],
            len: 0,
            long: false,
        }
    }

    /// Ends the current run of hex digits.
    fn flush(&mut self) -> fmt::Result {
        let keep = if self.len == 64 && !self.long {
            8
        } else {
            self.len
        };
        let digits = core::str::from_utf8(&self.run[..keep]).map_err(|_| fmt::Error)?;
        self.out.write_str(digits)?;
        self.len = 0;
        self.long = false;
        Ok(())
    }
}

impl fmt::Write for ShortIds<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_ascii_hexdigit() {
                if self.len == 64 {
                    // Longer than an identifier: pass it through whole.
                    self.long = true;
                    let digits = core::str::from_utf8(&self.run).map_err(|_| fmt::Error)?;
                    self.out.write_str(digits)?;
                    self.len = 0;
                }
                if self.long {
                    self.out.write_char(c)?;
                } else {
                    self.run[self.len] = c as u8;
                    self.len += 1;
                }
            } else {
                self.flush()?;
                self.out.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Writes `value` in full, or with identifiers shortened in the alternate form.
fn maybe_short(f: &mut fmt::Formatter<'_>, value: &dyn fmt::Display) -> fmt::Result {
    if f.alternate() {
        let mut short = ShortIds::new(f);
        fmt::write(&mut short, format_args!("{value}"))?;
        short.flush()
    } else {
        value.fmt(f)
    }
}

/// Writes Unix seconds as an ISO 8601 UTC date and time.
pub(crate) struct UtcTime(pub(crate) u64);

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0 / 86_400;
        let secs = self.0 % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// The proleptic Gregorian date `days` days after 1970-01-01, as (year, month, day).
///
/// Counts in 400-year eras of 146,097 days that start on 1 March, so the leap day ends a year.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 = March … 11 = February.
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes a basis with the identifier form of `f`.
fn basis(f: &mut fmt::Formatter<'_>, b: &Basis) -> fmt::Result {
    let short = f.alternate();
    match b {
        Basis::Patient | Basis::Custodian => fmt::Display::fmt(b, f),
        Basis::Grant(g) => write!(f, "grant {}", Id(g, short)),
        Basis::BreakGlass(s) => write!(f, "break-glass session {}", Id(s, short)),
    }
}

impl fmt::Display for Decision {
    /// `permit (basis)` or `deny (reason)`; identifiers shortened in the alternate form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Permit(b) => maybe_short(f, &format_args!("permit ({b})")),
            Decision::Deny(r) => maybe_short(f, &format_args!("deny ({r})")),
        }
    }
}

impl fmt::Display for Viewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = f.alternate();
        match self {
            Viewer::Account(a) => write!(f, "account {}", Id(a, short)),
            Viewer::Group(g) => write!(f, "the members of group {}", Id(g, short)),
        }
    }
}

impl fmt::Display for RevocationCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = f.alternate();
        match self {
            RevocationCause::Explicit => f.write_str("revoked explicitly"),
            RevocationCause::DelegationRevoked(d) => {
                write!(f, "delegation {} was revoked", Id(d, short))
            }
            RevocationCause::RelationshipTerminated => f.write_str("the relationship ended"),
        }
    }
}

impl fmt::Display for Stamp {
    /// `height h (time)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "height {} ({})", self.height, UtcTime(self.time))
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantStatus::Active => f.write_str("active"),
            GrantStatus::NotYetValid => f.write_str("not yet valid"),
            GrantStatus::Expired => f.write_str("expired"),
            GrantStatus::Revoked(at) => write!(f, "revoked at {at}"),
        }
    }
}

impl fmt::Display for ReviewOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReviewOutcome::Acknowledged => "acknowledged",
            ReviewOutcome::Disputed => "disputed",
        })
    }
}

impl fmt::Display for AccessEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = f.alternate();
        match self {
            AccessEvent::Registered { account, role } => {
                write!(f, "account {} registered as a {role}", Id(account, short))
            }
            AccessEvent::KeyRotated { account, old, new } => write!(
                f,
                "account {} replaced key {} by key {}",
                Id(account, short),
                Id(old, short),
                Id(new, short)
            ),
            AccessEvent::ProviderCertified {
                provider,
                by,
                emergency,
            } => {
                write!(f, "provider {} certified by {}", Id(provider, short), Id(by, short))?;
                if *emergency {
                    f.write_str(", for emergencies too")?;
                }
                Ok(())
            }
            AccessEvent::ProviderDecertified {
                provider,
                by,
                reason,
            } => write!(
                f,
                "provider {} decertified by {}: \"{reason}\"",
                Id(provider, short),
                Id(by, short)
            ),
            AccessEvent::RelationshipProposed {
                relationship,
                patient,
                provider,
            } => write!(
                f,
                "provider {} proposed relationship {} to patient {}",
                Id(provider, short),
                Id(relationship, short),
                Id(patient, short)
            ),
            AccessEvent::RelationshipAccepted {
                relationship,
                patient,
            } => write!(
                f,
                "patient {} accepted relationship {}",
                Id(patient, short),
                Id(relationship, short)
            ),
            AccessEvent::RelationshipRejected {
                relationship,
                patient,
                reason,
            } => write!(
                f,
                "patient {} rejected relationship {}: \"{reason}\"",
                Id(patient, short),
                Id(relationship, short)
            ),
            AccessEvent::RelationshipTerminated {
                relationship,
                patient,
                by,
                reason,
            } => write!(
                f,
                "account {} ended relationship {} of patient {}: \"{reason}\"",
                Id(by, short),
                Id(relationship, short),
                Id(patient, short)
            ),
            AccessEvent::PointerAdded {
                relationship,
                patient,
                pointer,
                replaces,
            } => {
                write!(
                    f,
                    "record {} of patient {} added under relationship {}",
                    Id(pointer, short),
                    Id(patient, short),
                    Id(relationship, short)
                )?;
                if let Some(old) = replaces {
                    write!(f, ", a new version of record {}", Id(old, short))?;
                }
                Ok(())
            }
            AccessEvent::GroupCreated { patient, group } => {
                write!(f, "patient {} created group {}", Id(patient, short), Id(group, short))
            }
            AccessEvent::GroupMemberAdded {
                patient,
                group,
                member,
            } => write!(
                f,
                "account {} joined group {} of patient {}",
                Id(member, short),
                Id(group, short),
                Id(patient, short)
            ),
            AccessEvent::GroupMemberRemoved {
                patient,
                group,
                member,
            } => write!(
                f,
                "account {} left group {} of patient {}",
                Id(member, short),
                Id(group, short),
                Id(patient, short)
            ),
            AccessEvent::GrantCreated {
                patient,
                grant,
                viewer,
                by,
                under,
            } => {
                write!(f, "grant {} to ", Id(grant, short))?;
                fmt::Display::fmt(viewer, f)?;
                write!(
                    f,
                    " on records of patient {}, made by account {}",
                    Id(patient, short),
                    Id(by, short)
                )?;
                if let Some(d) = under {
                    write!(f, " under delegation {}", Id(d, short))?;
                }
                Ok(())
            }
            AccessEvent::GrantRevoked {
                patient,
                grant,
                by,
                cause,
            } => {
                write!(
                    f,
                    "grant {} on records of patient {} revoked by account {} (",
                    Id(grant, short),
                    Id(patient, short),
                    Id(by, short)
                )?;
                fmt::Display::fmt(cause, f)?;
                f.write_str(")")
            }
            AccessEvent::DelegationCreated {
                patient,
                delegation,
                delegate,
            } => write!(
                f,
                "patient {} delegated consent management to account {} (delegation {})",
                Id(patient, short),
                Id(delegate, short),
                Id(delegation, short)
            ),
            AccessEvent::DelegationRevoked {
                patient,
                delegation,
                by,
                cascaded,
            } => write!(
                f,
                "delegation {} of patient {} revoked by account {}, with {cascaded} grant(s) made under it",
                Id(delegation, short),
                Id(patient, short),
                Id(by, short)
            ),
            AccessEvent::BreakGlassOpened {
                patient,
                session,
                provider,
                expires_at,
            } => write!(
                f,
                "BREAK-GLASS: provider {} opened session {} on the records of patient {} until {}",
                Id(provider, short),
                Id(session, short),
                Id(patient, short),
                UtcTime(*expires_at)
            ),
            AccessEvent::BreakGlassClosed { patient, session } => write!(
                f,
                "break-glass session {} on the records of patient {} closed",
                Id(session, short),
                Id(patient, short)
            ),
            AccessEvent::BreakGlassRevoked {
                patient,
                session,
                provider,
                by,
            } => write!(
                f,
                "break-glass session {} of provider {} on the records of patient {} closed: \
                 authority {} withdrew the provider's emergency certification",
                Id(session, short),
                Id(provider, short),
                Id(patient, short),
                Id(by, short)
            ),
            AccessEvent::BreakGlassReviewed {
                patient,
                session,
                outcome,
            } => write!(
                f,
                "patient {} reviewed break-glass session {}: {outcome}",
                Id(patient, short),
                Id(session, short)
            ),
            AccessEvent::Accessed {
                patient,
                viewer,
                pointer,
                action,
                purpose,
                basis: b,
            } => {
                write!(
                    f,
                    "{action} of record {} of patient {} by account {} for {purpose}, permitted by ",
                    Id(pointer, short),
                    Id(patient, short),
                    Id(viewer, short)
                )?;
                basis(f, b)
            }
            AccessEvent::ResearchDataReleased {
                release,
                custodian,
                recipient,
                epoch,
                dataset,
                subjects,
            } => write!(
                f,
                "provider {} released data set {} ({subjects} pseudonymous subject(s), {epoch}) to researcher {} (release {})",
                Id(custodian, short),
                Id(dataset, short),
                Id(recipient, short),
                Id(release, short)
            ),
            AccessEvent::ValidatorSet { key, power: 0, by } => write!(
                f,
                "authority {} removed validator {}",
                Id(by, short),
                Id(key, short)
            ),
            AccessEvent::ValidatorSet { key, power, by } => write!(
                f,
                "authority {} set validator {}'s voting power to {power}",
                Id(by, short),
                Id(key, short)
            ),
            AccessEvent::EvidenceRecorded {
                offender,
                offence,
                by,
            } => write!(
                f,
                "account {} recorded evidence of offence {} by validator {}",
                Id(by, short),
                Id(offence, short),
                Id(offender, short)
            ),
            AccessEvent::StudyApproved {
                study,
                researcher,
                authority,
                budget,
                min_class_size,
            } => write!(
                f,
                "authority {} approved study {} of researcher {} with budget {budget}, classes of at least {min_class_size}",
                Id(authority, short),
                Id(study, short),
                Id(researcher, short)
            ),
            AccessEvent::QueryAnnounced {
                query,
                study,
                epsilon,
                remaining,
            } => write!(
                f,
                "query {} announced under study {}, spending {epsilon} ({remaining} left)",
                Id(query, short),
                Id(study, short)
            ),
            AccessEvent::ReportsCommitted {
                query,
                hospital,
                batch,
                reports,
            } => write!(
                f,
                "provider {} committed {reports} report(s) to query {} (batch {})",
                Id(hospital, short),
                Id(query, short),
                Id(batch, short)
            ),
            AccessEvent::AggregateShareCommitted {
                query,
                aggregator,
                share,
                reports,
            } => write!(
                f,
                "aggregator {} committed share {} of {reports} report(s) to query {}",
                Id(aggregator, short),
                Id(share, short),
                Id(query, short)
            ),
            AccessEvent::StudyDataReleased {
                release,
                study,
                min_class_size,
            } => write!(
                f,
                "release {} under study {} states classes of at least {min_class_size}",
                Id(release, short),
                Id(study, short)
            ),
            AccessEvent::QueryResultPublished { query, result } => write!(
                f,
                "result {} of query {} published",
                Id(result, short),
                Id(query, short)
            ),
        }
    }
}

impl fmt::Display for AuditEntry {
    /// `#seq at height h (time) by actor: event`, the transaction in full only in the normal
    /// form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = f.alternate();
        write!(
            f,
            "#{} at {} by account {}",
            self.seq,
            self.at,
            Id(&self.actor, short)
        )?;
        if !f.alternate() {
            write!(f, " in transaction {}", self.tx)?;
        }
        f.write_str(": ")?;
        fmt::Display::fmt(&self.event, f)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = f.alternate();
        match self {
            Event::Anchored { account, record } => {
                write!(
                    f,
                    "account {} anchored record {}",
                    Id(account, short),
                    Id(record, short)
                )
            }
            Event::Access(e) => fmt::Display::fmt(e, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Action, DenyReason, GrantId, PointerId, Stamp};
    use crate::hash::{AccountId, TxId};
    use crate::purpose::PurposeOfUse;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        // 2000 is a leap year (divisible by 400), 2100 is not.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(20_818), (2026, 12, 31));
        assert_eq!(
            UtcTime(1_767_225_600 + 3_723).to_string(),
            "2026-01-01T01:02:03Z"
        );
    }

    #[test]
    fn civil_dates_advance_one_day_at_a_time() {
        let (mut y, mut m, mut d) = civil_from_days(0);
        for days in 1..200_000 {
            let next = civil_from_days(days);
            let month_len = match m {
                2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if d < month_len {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(next, expected, "day {days}");
            (y, m, d) = next;
        }
    }

    #[test]
    fn events_read_in_full_or_short() {
        let patient = AccountId::from_bytes([0x11; 32]);
        let viewer = AccountId::from_bytes([0x22; 32]);
        let e = AccessEvent::Accessed {
            patient,
            viewer,
            pointer: PointerId::from_bytes([0x33; 32]),
            action: Action::Read,
            purpose: PurposeOfUse::Treatment,
            basis: Basis::Grant(GrantId::from_bytes([0x44; 32])),
        };
        assert_eq!(
            format!("{e:#}"),
            "read of record 33333333 of patient 11111111 by account 22222222 for TREAT, \
             permitted by grant 44444444"
        );
        assert!(e.to_string().contains(&"44".repeat(32)));
        let entry = AuditEntry {
            seq: 3,
            at: Stamp {
                height: 7,
                time: 1_767_225_600,
            },
            tx: TxId::from_bytes([0x55; 32]),
            actor: viewer,
            event: e.clone(),
        };
        assert_eq!(
            format!("{entry:#}"),
            format!("#3 at height 7 (2026-01-01T00:00:00Z) by account 22222222: {e:#}")
        );
        assert!(entry.to_string().contains(&"55".repeat(32)));
        assert_eq!(format!("{:#}", Event::Access(e.clone())), format!("{e:#}"));
    }

    #[test]
    fn decisions_shorten_ids_only_in_the_alternate_form() {
        let grant = GrantId::from_bytes([0xab; 32]);
        let d = Decision::Deny(DenyReason::Revoked { grant, height: 7 });
        assert_eq!(
            format!("{d:#}"),
            "deny (grant abababab was revoked at height 7)"
        );
        assert_eq!(
            d.to_string(),
            format!("deny (grant {grant} was revoked at height 7)")
        );
        let d = Decision::Permit(Basis::Grant(grant));
        assert_eq!(format!("{d:#}"), "permit (grant abababab)");
        assert_eq!(
            format!("{:#}", Decision::Permit(Basis::Patient)),
            "permit (the patient)"
        );
    }

    #[test]
    fn short_form_keeps_other_hex_runs() {
        struct Text(&'static str);
        impl fmt::Display for Text {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                maybe_short(f, &self.0)
            }
        }
        let id = "cd".repeat(32);
        let longer = "e".repeat(70);
        let text: &'static str = Box::leak(format!("a {id}, 1234 {longer} {id}").into_boxed_str());
        assert_eq!(
            format!("{:#}", Text(text)),
            format!("a cdcdcdcd, 1234 {longer} cdcdcdcd")
        );
        assert_eq!(Text(text).to_string(), text);
    }
}
