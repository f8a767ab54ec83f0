//! Research data releases under dynamic pseudonyms: accountable to an auditor, unlinkable on
//! the chain.
//!
//! MedRec logged nothing when a third party used a patient's records. Here a custodian that
//! hands a data set to a researcher records the release on chain
//! ([`AccessOp::ReleaseResearchData`]), but a transparent chain that named the patients would
//! tell every reader who takes part in which study, and a stable identifier would let anyone
//! join the releases of different windows (the mosaic effect). So a release names its subjects
//! only by their **research-window pseudonyms**, the [`Pseudonym`]s for
//! `Context { epoch, purpose: Research, recipient }` (see [`pseudonym`](crate::pseudonym)):
//! stable within a window for one researcher, unrelated across windows and researchers.
//!
//! # What a release holds
//!
//! For each subject, its pseudonym and a [`ConsentCommitment`]:
//!
//! ```text
//! consent = BLAKE3_RESEARCH_CONSENT(grant id ‖ pseudonym ‖ opening)
//! ```
//!
//! where `opening` is 32 fresh random bytes ([`ConsentOpening`]). Grant ids are public (the
//! chain shows who granted what), so without the opening anyone could try every research
//! grant to the recipient against each commitment and relink the pseudonyms; with it the
//! commitment hides the grant. The custodian keeps the openings with its
//! [`LinkIndex`](crate::pseudonym::LinkIndex): together they are the "additional information
//! kept separately" of GDPR Art. 4(5), and the re-identification code of HIPAA 164.514(c) is
//! the pseudonym, derived from random patient secrets, never from anything about the patient.
//!
//! Subjects are listed in strictly ascending pseudonym order, which the chain enforces: a
//! custodian listing its patients in the same order in every window would otherwise let the
//! position of a subject link its pseudonyms across windows.
//!
//! # What the chain checks
//!
//! Only what it can check without learning who the subjects are: the signer is a certified
//! provider, the recipient a registered [`Role::Researcher`], the subject list is not empty, in
//! order and without a duplicate pseudonym, and within [`MAX_RELEASE_SUBJECTS`] (a longer list
//! does not even decode). It then stores a [`Release`] (committed in the state root under
//! [`RELEASES_TABLE`](super::RELEASES_TABLE)), indexes it under the recipient and emits
//! [`AccessEvent::ResearchDataReleased`]. The event goes to no patient's audit trail, since
//! that trail is keyed by the patient's account.
//!
//! The chain has no clock of epochs, so it records the epoch as given; an auditor holding the
//! deployment's [`EpochSchedule`] checks that the window had started at the release's block
//! time with [`Release::check_epoch`].
//!
//! # Auditing a subject
//!
//! Given a subject's [`SubjectOpening`] (the patient, the grant and the opening) from the
//! custodian, [`AccessState::verify_released_subject`] checks, **as of the release's height and
//! time** (grants made later, and revocations made later, do not count):
//!
//! 1. the commitment opens to the grant and the subject's pseudonym;
//! 2. the grant exists, was made no later than the release and is the patient's;
//! 3. it is on the patient's relationship with the releasing custodian;
//! 4. its viewer is the recipient, or a group of the patient the recipient was a member of;
//! 5. it allows reading for research, was not revoked, and its period covers the release time.
//!
//! Each failure is a precise [`ReleaseAuditError`]. That the pseudonym is indeed the patient's
//! is shown by the custodian's vault ([`PseudonymBackend::relink`]), or by the patient, who
//! can recompute it from their secret and find their own entries with
//! [`AccessState::find_released_subject`]. A grant's scope and provisions select records; which
//! records went into the data set is checked against the data set itself (its content hash is
//! in the release), not on chain.
//!
//! # Why not pseudonymous access receipts
//!
//! An access receipt ([`AccessOp::RecordAccess`]) names a record
//! pointer, and every pointer is bound on chain to its patient: a receipt under a pseudonym
//! would still name the patient through its pointer. A release names a data set by its content
//! hash instead, so the research path is the release receipt: the researcher receives the data
//! from the custodian, and the custodian's release is what is logged.
//!
//! ```
//! use medledger::access::{prepare_release_with, ConsentCommitment, AccessOp, GrantId};
//! use medledger::hash::{AccountId, Digest};
//! use medledger::pseudonym::{DerivedBackend, Epoch, PatientHandle, PseudonymBackend, Scheme};
//!
//! let mut vault = DerivedBackend::new(Scheme::KeyedHash);
//! let (alice, bob) = (AccountId::from_bytes([1; 32]), AccountId::from_bytes([2; 32]));
//! vault.enroll(PatientHandle::from(alice))?;
//! vault.enroll(PatientHandle::from(bob))?;
//! let researcher = AccountId::from_bytes([9; 32]);
//! let subjects = [(alice, GrantId::from_bytes([3; 32])), (bob, GrantId::from_bytes([4; 32]))];
//! let release = prepare_release_with(
//!     &mut vault,
//!     researcher,
//!     Epoch::new(7),
//!     Digest::from_bytes([5; 32]),
//!     &subjects,
//!     &mut rand_core::OsRng,
//! )?;
//! let AccessOp::ReleaseResearchData { subjects: released, .. } = &release.op else {
//!     unreachable!()
//! };
//! // The op carries pseudonyms and commitments; the openings stay with the custodian.
//! for (subject, opening) in released.iter().zip(&release.openings) {
//!     assert_eq!(
//!         ConsentCommitment::new(&opening.grant, &subject.pseudonym, &opening.opening),
//!         subject.consent
//!     );
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

use rand_core::{CryptoRngCore, OsRng};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::decision::DenyReason;
use super::{
    AccessError, AccessEvent, AccessOp, AccessState, Action, Exec, GrantId, RelationshipId,
    ReleaseId, Role, Stamp,
};
use crate::codec::BoundedVec;
use crate::hash::{domain, hash_newtype, AccountId, Digest};
use crate::pseudonym::{
    Context, Epoch, EpochSchedule, PatientHandle, Pseudonym, PseudonymBackend, PseudonymError,
    Recipient,
};
use crate::purpose::PurposeOfUse;

/// The most subjects one release lists (a release of the most subjects fits in a transaction).
pub const MAX_RELEASE_SUBJECTS: usize = 128;

hash_newtype! {
    /// A hiding commitment to the consent a released subject relies on:
    /// BLAKE3 in the [`RESEARCH_CONSENT`](domain::RESEARCH_CONSENT) domain over the grant id,
    /// the subject's pseudonym and the custodian's private [`ConsentOpening`].
    ConsentCommitment
}

impl ConsentCommitment {
    /// The commitment to `grant` for the subject `pseudonym`, with `opening`.
    pub fn new(grant: &GrantId, pseudonym: &Pseudonym, opening: &ConsentOpening) -> Self {
        Self::from_bytes(domain::RESEARCH_CONSENT.hash_parts(&[
            grant.as_bytes(),
            pseudonym.as_bytes(),
            &opening.0,
        ]))
    }
}

/// The random salt that makes a [`ConsentCommitment`] hiding; kept by the custodian, shown only
/// to an auditor.
///
/// Erased from memory on drop, compared in constant time, never printed:
///
/// ```
/// let o = medledger::access::ConsentOpening::generate()?;
/// assert_eq!(format!("{o:?}"), "ConsentOpening(<redacted>)");
/// # Ok::<(), medledger::pseudonym::PseudonymError>(())
/// ```
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ConsentOpening([u8; 32]);

impl ConsentOpening {
    /// A fresh opening from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::Randomness`] if the generator fails.
    pub fn generate() -> Result<Self, PseudonymError> {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh opening from `rng`, which must be a cryptographically secure generator.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::Randomness`] if the generator fails.
    pub fn generate_with<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Result<Self, PseudonymError> {
        let mut o = Self([0; 32]);
        rng.try_fill_bytes(&mut o.0)
            .map_err(|_| PseudonymError::Randomness)?;
        Ok(o)
    }

    /// An opening from stored bytes (the custodian's separately kept table).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes, to store them.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl ConstantTimeEq for ConsentOpening {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for ConsentOpening {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for ConsentOpening {}

impl fmt::Debug for ConsentOpening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsentOpening(<redacted>)")
    }
}

/// One subject of a release, as the chain sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReleasedSubject {
    /// The subject's research-window pseudonym for the release's context.
    pub pseudonym: Pseudonym,
    /// The commitment to the consent the release relies on.
    pub consent: ConsentCommitment,
}

/// What the custodian keeps to open one released subject: the "additional information kept
/// separately". Shown to an auditor, never published.
#[derive(Debug, PartialEq, Eq)]
pub struct SubjectOpening {
    /// The patient.
    pub patient: AccountId,
    /// The patient's research grant the release relies on.
    pub grant: GrantId,
    /// The commitment's salt.
    pub opening: ConsentOpening,
}

/// A research data release in the state. It never changes once recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Its id ([`ReleaseId::of_tx`] of the transaction that recorded it).
    pub id: ReleaseId,
    /// The provider that released the data.
    pub custodian: AccountId,
    /// The researcher that received it.
    pub recipient: AccountId,
    /// The research window of the pseudonyms.
    pub epoch: Epoch,
    /// The content hash of the data set.
    pub dataset: Digest,
    /// The subjects, in ascending pseudonym order.
    pub subjects: BoundedVec<ReleasedSubject, MAX_RELEASE_SUBJECTS>,
    /// When it was recorded.
    pub at: Stamp,
}

impl Release {
    /// The pseudonym context of its subjects: its epoch, research, its recipient.
    pub fn context(&self) -> Context {
        research_context(self.recipient, self.epoch)
    }

    /// Checks, under the deployment's `schedule`, that the release's window had started at the
    /// release's block time (a release cannot use the pseudonyms of a future window).
    ///
    /// # Errors
    ///
    /// [`ReleaseAuditError::EpochNotStarted`] if it had not.
    pub fn check_epoch(&self, schedule: &EpochSchedule) -> Result<(), ReleaseAuditError> {
        match schedule.start_of(self.epoch) {
            Some(start) if start <= self.at.time => Ok(()),
            _ => Err(ReleaseAuditError::EpochNotStarted {
                epoch: self.epoch,
                time: self.at.time,
            }),
        }
    }

    /// The position of `pseudonym` among the subjects.
    pub fn position_of(&self, pseudonym: &Pseudonym) -> Option<usize> {
        self.subjects
            .binary_search_by(|s| s.pseudonym.cmp(pseudonym))
            .ok()
    }
}

/// The pseudonym context of research releases to `recipient` in `epoch`.
pub fn research_context(recipient: AccountId, epoch: Epoch) -> Context {
    Context::new(epoch, PurposeOfUse::Research, Recipient::account(recipient))
}

/// A release ready to sign, with what the custodian keeps.
#[derive(Debug)]
pub struct PreparedRelease {
    /// The operation to sign with the custodian's key.
    pub op: AccessOp,
    /// The openings, aligned with the op's subjects (which are in pseudonym order, not the
    /// order given). Keep them with the link index; never publish them.
    pub openings: Vec<SubjectOpening>,
}

/// Why a release could not be prepared (caller misuse or the vault's key state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseBuildError {
    /// No subject was given.
    #[error("a release needs at least one subject")]
    Empty,
    /// More than [`MAX_RELEASE_SUBJECTS`] subjects were given.
    #[error("{len} subjects exceed the limit of {max}")]
    TooMany {
        /// Subjects given.
        len: usize,
        /// [`MAX_RELEASE_SUBJECTS`].
        max: usize,
    },
    /// The same patient was given twice (one patient has one pseudonym per window).
    #[error("subject {index} repeats an earlier patient")]
    DuplicatePatient {
        /// Position of the repetition in the list given.
        index: usize,
    },
    /// The vault could not issue a pseudonym or an opening.
    #[error("pseudonym: {0}")]
    Pseudonym(#[from] PseudonymError),
    /// The quasi-identifiers given are not one per subject.
    #[error("{quasi} rows of quasi-identifiers for {subjects} subjects")]
    QuasiIdentifiersMismatch {
        /// Rows of quasi-identifiers.
        quasi: usize,
        /// Subjects.
        subjects: usize,
    },
    /// The class size asked for is below the study's approval.
    #[error("classes of {asked} asked, the study was approved for at least {approved}")]
    ClassSizeBelowApproval {
        /// The class size asked for.
        asked: u32,
        /// The study's minimum class size.
        approved: u32,
    },
    /// The data set has equivalence classes smaller than the class size: the mosaic effect
    /// would let them be linked across releases.
    #[error("{} equivalence class(es) under k = {k}: {}", classes.len(), super::study::list_classes(classes))]
    ClassesTooSmall {
        /// The class size required.
        k: u32,
        /// The offending classes with their sizes.
        classes: Vec<super::SmallClass>,
    },
}

/// [`prepare_release_with`] with the operating system's CSPRNG.
///
/// # Errors
///
/// As [`prepare_release_with`].
pub fn prepare_release(
    vault: &mut dyn PseudonymBackend,
    recipient: AccountId,
    epoch: Epoch,
    dataset: Digest,
    subjects: &[(AccountId, GrantId)],
) -> Result<PreparedRelease, ReleaseBuildError> {
    prepare_release_with(vault, recipient, epoch, dataset, subjects, &mut OsRng)
}

/// Builds the release of `dataset` to `recipient` in `epoch` for `subjects`, each a patient
/// and the research grant the release relies on.
///
/// Each patient's pseudonym is issued by `vault` for the [research
/// context](research_context) (patients are enrolled under the handle
/// `PatientHandle::from(account)`, so relinking returns the account's bytes); each consent
/// commitment gets a fresh opening from `rng`. Subjects are sorted by pseudonym.
///
/// # Errors
///
/// [`ReleaseBuildError`] if the list is empty, too long or repeats a patient, or the vault
/// fails (unknown patient, shredded epoch, randomness).
pub fn prepare_release_with<R: CryptoRngCore + ?Sized>(
    vault: &mut dyn PseudonymBackend,
    recipient: AccountId,
    epoch: Epoch,
    dataset: Digest,
    subjects: &[(AccountId, GrantId)],
    rng: &mut R,
) -> Result<PreparedRelease, ReleaseBuildError> {
    if subjects.is_empty() {
        return Err(ReleaseBuildError::Empty);
    }
    if subjects.len() > MAX_RELEASE_SUBJECTS {
        return Err(ReleaseBuildError::TooMany {
            len: subjects.len(),
            max: MAX_RELEASE_SUBJECTS,
        });
    }
    let context = research_context(recipient, epoch);
    let mut entries = Vec::with_capacity(subjects.len());
    for (index, (patient, grant)) in subjects.iter().enumerate() {
        if subjects[..index].iter().any(|(p, _)| p == patient) {
            return Err(ReleaseBuildError::DuplicatePatient { index });
        }
        let pseudonym = vault.pseudonym(&PatientHandle::from(*patient), &context)?;
        let opening = ConsentOpening::generate_with(rng)?;
        let subject = ReleasedSubject {
            pseudonym,
            consent: ConsentCommitment::new(grant, &pseudonym, &opening),
        };
        entries.push((
            subject,
            SubjectOpening {
                patient: *patient,
                grant: *grant,
                opening,
            },
        ));
    }
    entries.sort_unstable_by_key(|(s, _)| s.pseudonym);
    let (released, openings): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
    let subjects = BoundedVec::try_from(released).map_err(|e| ReleaseBuildError::TooMany {
        len: e.len,
        max: e.max,
    })?;
    Ok(PreparedRelease {
        op: AccessOp::ReleaseResearchData {
            recipient,
            epoch,
            dataset,
            subjects,
        },
        openings,
    })
}

/// Why a released subject does not pass an audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseAuditError {
    /// No such release.
    #[error("unknown release {0}")]
    UnknownRelease(ReleaseId),
    /// The release has fewer subjects.
    #[error("release {release} has no subject {index}")]
    NoSuchSubject {
        /// The release.
        release: ReleaseId,
        /// The position asked for.
        index: usize,
    },
    /// The opening does not open the subject's consent commitment (another grant, another
    /// pseudonym or another salt).
    #[error("the opening does not open the consent commitment of subject {index}")]
    CommitmentMismatch {
        /// The subject's position.
        index: usize,
    },
    /// The grant does not exist.
    #[error("unknown grant {0}")]
    UnknownGrant(GrantId),
    /// The grant was made after the release.
    #[error("grant {grant} was made at height {made}, after the release at height {release}")]
    GrantAfterRelease {
        /// The grant.
        grant: GrantId,
        /// Its height.
        made: u64,
        /// The release's height.
        release: u64,
    },
    /// The grant is another patient's.
    #[error("grant {grant} is not a grant of patient {patient}")]
    AnotherPatient {
        /// The grant.
        grant: GrantId,
        /// The patient the opening names.
        patient: AccountId,
    },
    /// The grant is on a relationship with another provider than the releasing custodian.
    #[error("grant {grant} is not on the patient's relationship with the custodian")]
    NotTheCustodian {
        /// The grant.
        grant: GrantId,
    },
    /// The grant's viewer was not the recipient (nor a group it was a member of) at the
    /// release's height.
    #[error("grant {grant} was not to the release's recipient")]
    NotTheRecipient {
        /// The grant.
        grant: GrantId,
    },
    /// The grant did not permit reading for research at the release's height and time: the
    /// reason is one of action, purpose, revocation, not yet valid or expired.
    #[error("the consent did not hold at the release: {0}")]
    ConsentDoesNotHold(DenyReason),
    /// The release's window had not started at its block time.
    #[error("{epoch} had not started at the release's time {time}")]
    EpochNotStarted {
        /// The release's epoch.
        epoch: Epoch,
        /// The release's block time.
        time: u64,
    },
}

impl Exec<'_> {
    pub(super) fn release_research_data(
        &mut self,
        recipient: AccountId,
        epoch: Epoch,
        dataset: Digest,
        subjects: &BoundedVec<ReleasedSubject, MAX_RELEASE_SUBJECTS>,
    ) -> Result<(), AccessError> {
        let custodian = self.actor();
        self.certified_provider(custodian)?;
        self.require_role(recipient, Role::Researcher)?;
        if subjects.is_empty() {
            return Err(AccessError::Empty("released subjects"));
        }
        for pair in subjects.windows(2) {
            match pair[0].pseudonym.cmp(&pair[1].pseudonym) {
                core::cmp::Ordering::Less => {}
                core::cmp::Ordering::Equal => {
                    return Err(AccessError::Duplicate("released subjects"))
                }
                core::cmp::Ordering::Greater => {
                    return Err(AccessError::NotInOrder("released subjects"))
                }
            }
        }
        let seq = self.s.release_counts.get(&recipient).copied().unwrap_or(0);
        let next = seq.checked_add(1).ok_or(AccessError::LimitReached {
            what: "releases per recipient",
            max: u32::MAX.into(),
        })?;
        let id = ReleaseId::of_tx(self.cx.tx_id);
        let release = Release {
            id,
            custodian,
            recipient,
            epoch,
            dataset,
            subjects: subjects.clone(),
            at: self.stamp(),
        };
        self.s.releases.insert(id, release);
        self.s.recipient_releases.insert((recipient, seq), id);
        self.s.release_counts.insert(recipient, next);
        self.emit(
            None,
            AccessEvent::ResearchDataReleased {
                release: id,
                custodian,
                recipient,
                epoch,
                dataset,
                subjects: u32::try_from(subjects.len()).expect("at most MAX_RELEASE_SUBJECTS"),
            },
        );
        Ok(())
    }
}

impl AccessState {
    /// The release `id`.
    pub fn release(&self, id: &ReleaseId) -> Option<&Release> {
        self.releases.get(id)
    }

    /// Every release to `recipient`, oldest first.
    pub fn releases_to(&self, recipient: &AccountId) -> Vec<&Release> {
        let n = self.release_counts.get(recipient).copied().unwrap_or(0);
        (0..n)
            .filter_map(|i| self.recipient_releases.get(&(*recipient, i)))
            .filter_map(|id| self.releases.get(id))
            .collect()
    }

    /// Where `pseudonym` appears among the releases to `recipient` in `epoch`: each release
    /// and the subject's position. A patient holding their secret recomputes their pseudonym
    /// for a researcher they granted and finds their own entries this way; nobody else can.
    pub fn find_released_subject(
        &self,
        recipient: &AccountId,
        epoch: Epoch,
        pseudonym: &Pseudonym,
    ) -> Vec<(ReleaseId, usize)> {
        self.releases_to(recipient)
            .into_iter()
            .filter(|r| r.epoch == epoch)
            .filter_map(|r| r.position_of(pseudonym).map(|i| (r.id, i)))
            .collect()
    }

    /// Audits subject `index` of release `release` with the custodian's `opening`, as of the
    /// release's height and time (see the [module documentation](self)).
    ///
    /// # Errors
    ///
    /// The first [`ReleaseAuditError`] found, in the order of the module documentation.
    pub fn verify_released_subject(
        &self,
        release: &ReleaseId,
        index: usize,
        opening: &SubjectOpening,
    ) -> Result<(), ReleaseAuditError> {
        let r = self
            .releases
            .get(release)
            .ok_or(ReleaseAuditError::UnknownRelease(*release))?;
        let subject = r
            .subjects
            .get(index)
            .ok_or(ReleaseAuditError::NoSuchSubject {
                release: *release,
                index,
            })?;
        if ConsentCommitment::new(&opening.grant, &subject.pseudonym, &opening.opening)
            != subject.consent
        {
            return Err(ReleaseAuditError::CommitmentMismatch { index });
        }
        self.check_research_grant(
            opening.grant,
            opening.patient,
            r.custodian,
            r.recipient,
            r.at,
        )
    }

    /// Checks that grant `id` is `patient`'s consent, on its relationship with `custodian`, to
    /// `recipient` reading for research, as of `at` (steps 2 to 5 of the [module
    /// documentation](self)).
    pub(crate) fn check_research_grant(
        &self,
        id: GrantId,
        patient: AccountId,
        custodian: AccountId,
        recipient: AccountId,
        at: Stamp,
    ) -> Result<(), ReleaseAuditError> {
        let (height, time) = (at.height, at.time);
        let grant = self
            .grants
            .get(&id)
            .ok_or(ReleaseAuditError::UnknownGrant(id))?;
        if grant.created.height > height {
            return Err(ReleaseAuditError::GrantAfterRelease {
                grant: id,
                made: grant.created.height,
                release: height,
            });
        }
        if grant.patient != patient {
            return Err(ReleaseAuditError::AnotherPatient { grant: id, patient });
        }
        if grant.terms.relationship != RelationshipId::of(patient, custodian) {
            return Err(ReleaseAuditError::NotTheCustodian { grant: id });
        }
        if !self.is_viewer_at(grant, &recipient, height) {
            return Err(ReleaseAuditError::NotTheRecipient { grant: id });
        }
        let terms = &grant.terms;
        let deny = if !terms.actions.contains(Action::Read) {
            Some(DenyReason::ActionNotAllowed {
                grant: id,
                action: Action::Read,
            })
        } else if !terms.purposes.contains(PurposeOfUse::Research) {
            Some(DenyReason::PurposeNotAllowed {
                grant: id,
                purpose: PurposeOfUse::Research,
            })
        } else if let Some(h) = self
            .revocations
            .get(&id)
            .map(|rv| rv.at.height)
            .filter(|h| *h <= height)
        {
            Some(DenyReason::Revoked {
                grant: id,
                height: h,
            })
        } else if time < terms.period.start {
            Some(DenyReason::NotYetValid {
                grant: id,
                start: terms.period.start,
            })
        } else if time >= terms.period.end {
            Some(DenyReason::Expired {
                grant: id,
                end: terms.period.end,
            })
        } else {
            None
        };
        deny.map_or(Ok(()), |d| Err(ReleaseAuditError::ConsentDoesNotHold(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{key, reason, Cast, DAY};
    use crate::access::{ActionSet, GrantTerms, Period, PurposeSet, Scope, Viewer, RELEASES_TABLE};
    use crate::codec::Canonical;
    use crate::hash::ChainId;
    use crate::pseudonym::{DerivedBackend, Scheme};
    use crate::{Payload, Transaction};
    use proptest::prelude::*;

    fn research_terms(c: &Cast, rel: RelationshipId, purpose: PurposeOfUse) -> GrantTerms {
        GrantTerms::new(
            rel,
            Viewer::Account(c.researcher.account()),
            Scope::All,
            ActionSet::of(&[Action::Read]),
            PurposeSet::of(&[purpose]),
            Period::lasting(c.h.time, 30 * DAY),
        )
    }

    /// A cast whose patient granted the researcher research reads; a vault enrolling the
    /// patient and the guardian (who granted nothing).
    fn setup() -> (Cast, GrantId, DerivedBackend) {
        let mut c = Cast::new();
        let rel = c.h.relationship(&c.hospital, &c.patient);
        let g = c.h.grant(
            &c.patient,
            research_terms(&c, rel, PurposeOfUse::Research),
            None,
        );
        let mut vault = DerivedBackend::new(Scheme::KeyedHash);
        vault.enroll(c.patient.account().into()).unwrap();
        vault.enroll(c.guardian.account().into()).unwrap();
        (c, g, vault)
    }

    fn release(
        c: &Cast,
        vault: &mut DerivedBackend,
        subjects: &[(AccountId, GrantId)],
    ) -> PreparedRelease {
        prepare_release(
            vault,
            c.researcher.account(),
            Epoch::new(3),
            Digest::from_bytes([9; 32]),
            subjects,
        )
        .unwrap()
    }

    /// Applies a prepared release signed by the hospital; returns its id.
    fn record(c: &mut Cast, op: AccessOp) -> ReleaseId {
        let id = ReleaseId::of_tx(c.h.next_tx_id(&c.hospital, &op));
        let events = c.h.ok(&c.hospital, op);
        assert!(matches!(
            events[..],
            [AccessEvent::ResearchDataReleased { release, subjects: 1, .. }] if release == id
        ));
        id
    }

    fn with_subjects(op: &AccessOp, f: impl FnOnce(&mut Vec<ReleasedSubject>)) -> AccessOp {
        let AccessOp::ReleaseResearchData {
            recipient,
            epoch,
            dataset,
            subjects,
        } = op
        else {
            unreachable!()
        };
        let mut v = subjects.clone().into_inner();
        f(&mut v);
        AccessOp::ReleaseResearchData {
            recipient: *recipient,
            epoch: *epoch,
            dataset: *dataset,
            subjects: BoundedVec::try_from(v).unwrap(),
        }
    }

    #[test]
    fn a_release_is_recorded_without_naming_the_patient_and_audits() {
        let (mut c, g, mut vault) = setup();
        let n = c.h.access().audit_len(&c.patient.account());
        let p = release(&c, &mut vault, &[(c.patient.account(), g)]);
        let id = record(&mut c, p.op.clone());
        let r = c.h.access().release(&id).unwrap().clone();
        assert_eq!(r.custodian, c.hospital.account());
        assert_eq!(r.at.height, c.h.height);
        let mut bytes = Vec::new();
        crate::codec::encode_body_into(&r, &mut bytes);
        let patient = c.patient.account().to_bytes();
        assert!(!bytes.windows(32).any(|w| w == patient));
        // No entry in the patient's trail; the patient's pseudonym finds the release.
        assert_eq!(c.h.access().audit_len(&c.patient.account()), n);
        let pseudonym = vault
            .pseudonym(&c.patient.account().into(), &r.context())
            .unwrap();
        assert_eq!(
            c.h.access()
                .find_released_subject(&c.researcher.account(), Epoch::new(3), &pseudonym),
            vec![(id, 0)]
        );
        assert_eq!(c.h.access().releases_to(&c.researcher.account()), vec![&r]);
        assert_eq!(
            c.h.access().verify_released_subject(&id, 0, &p.openings[0]),
            Ok(())
        );
        // Committed in the state root.
        let proof = c.h.state.prove(RELEASES_TABLE, &id);
        assert!(proof
            .verify(
                &c.h.root(),
                &crate::state::entry_key(RELEASES_TABLE, &id),
                Some(&crate::state::value_digest(&r))
            )
            .is_ok());
        // Revoking later does not change what held at the release.
        c.h.ok(
            &c.patient,
            AccessOp::RevokeGrant {
                grant: g,
                reason: reason("study over"),
            },
        );
        assert_eq!(
            c.h.access().verify_released_subject(&id, 0, &p.openings[0]),
            Ok(())
        );
    }

    #[test]
    fn the_chain_refuses_what_it_can_check() {
        let (mut c, g, mut vault) = setup();
        let p = release(&c, &mut vault, &[(c.patient.account(), g)]);
        // An uncertified provider, and a researcher, cannot release.
        assert_eq!(
            c.h.refused(&c.specialist, p.op.clone()),
            AccessError::NotCertified(c.specialist.account())
        );
        assert!(matches!(
            c.h.refused(&c.researcher, p.op.clone()),
            AccessError::WrongRole {
                expected: Role::Provider,
                ..
            }
        ));
        // The recipient must be a registered researcher.
        let to = |recipient: AccountId| match p.op.clone() {
            AccessOp::ReleaseResearchData {
                epoch,
                dataset,
                subjects,
                ..
            } => AccessOp::ReleaseResearchData {
                recipient,
                epoch,
                dataset,
                subjects,
            },
            _ => unreachable!(),
        };
        assert_eq!(
            c.h.refused(&c.hospital, to(c.specialist.account())),
            AccessError::WrongRole {
                account: c.specialist.account(),
                expected: Role::Researcher,
                found: Role::Provider
            }
        );
        assert_eq!(
            c.h.refused(&c.hospital, to(key(99).account())),
            AccessError::NotRegistered(key(99).account())
        );
        // Empty, duplicated and unordered lists.
        assert_eq!(
            c.h.refused(&c.hospital, with_subjects(&p.op, Vec::clear)),
            AccessError::Empty("released subjects")
        );
        let dup = with_subjects(&p.op, |v| v.push(v[0]));
        assert_eq!(
            c.h.refused(&c.hospital, dup),
            AccessError::Duplicate("released subjects")
        );
        let unordered = with_subjects(&p.op, |v| {
            let mut s = v[0];
            s.pseudonym = Pseudonym::from_bytes([0; 32]);
            v.push(s);
        });
        assert_eq!(
            c.h.refused(&c.hospital, unordered),
            AccessError::NotInOrder("released subjects")
        );
        // A decertified custodian can no longer release.
        c.h.ok(
            &c.authority,
            AccessOp::DecertifyProvider {
                provider: c.hospital.account(),
                reason: reason("audit"),
            },
        );
        assert_eq!(
            c.h.refused(&c.hospital, p.op),
            AccessError::NotCertified(c.hospital.account())
        );
    }

    #[test]
    fn audits_fail_precisely() {
        let (mut c, g, mut vault) = setup();
        let rel = RelationshipId::of(c.patient.account(), c.hospital.account());
        let treat = c.h.grant(
            &c.patient,
            research_terms(&c, rel, PurposeOfUse::Treatment),
            None,
        );
        let to_specialist = c.h.grant(
            &c.patient,
            GrantTerms {
                viewer: Viewer::Account(c.specialist.account()),
                ..research_terms(&c, rel, PurposeOfUse::Research)
            },
            None,
        );
        let audit = |c: &mut Cast, vault: &mut DerivedBackend, grant, patient: AccountId| {
            let p = release(c, vault, &[(patient, grant)]);
            let id = record(c, p.op);
            c.h.access().verify_released_subject(&id, 0, &p.openings[0])
        };
        let patient = c.patient.account();
        assert_eq!(audit(&mut c, &mut vault, g, patient), Ok(()));
        assert_eq!(
            audit(&mut c, &mut vault, treat, patient),
            Err(ReleaseAuditError::ConsentDoesNotHold(
                DenyReason::PurposeNotAllowed {
                    grant: treat,
                    purpose: PurposeOfUse::Research
                }
            ))
        );
        assert_eq!(
            audit(&mut c, &mut vault, to_specialist, patient),
            Err(ReleaseAuditError::NotTheRecipient {
                grant: to_specialist
            })
        );
        // The guardian granted nothing: naming the patient's grant is caught.
        let guardian = c.guardian.account();
        assert_eq!(
            audit(&mut c, &mut vault, g, guardian),
            Err(ReleaseAuditError::AnotherPatient {
                grant: g,
                patient: guardian
            })
        );
        assert_eq!(
            audit(&mut c, &mut vault, GrantId::default(), patient),
            Err(ReleaseAuditError::UnknownGrant(GrantId::default()))
        );
        // Another custodian (the clinic) cannot rely on the hospital's grant.
        let p = release(&c, &mut vault, &[(patient, g)]);
        let id = ReleaseId::of_tx(c.h.next_tx_id(&c.clinic, &p.op));
        c.h.ok(&c.clinic, p.op);
        assert_eq!(
            c.h.access().verify_released_subject(&id, 0, &p.openings[0]),
            Err(ReleaseAuditError::NotTheCustodian { grant: g })
        );
        // A wrong opening, a missing subject, an unknown release.
        let p = release(&c, &mut vault, &[(patient, g)]);
        let id = record(&mut c, p.op);
        let wrong = SubjectOpening {
            opening: ConsentOpening::from_bytes([1; 32]),
            ..p.openings[0]
        };
        assert_eq!(
            c.h.access().verify_released_subject(&id, 0, &wrong),
            Err(ReleaseAuditError::CommitmentMismatch { index: 0 })
        );
        assert_eq!(
            c.h.access().verify_released_subject(&id, 1, &p.openings[0]),
            Err(ReleaseAuditError::NoSuchSubject {
                release: id,
                index: 1
            })
        );
        assert_eq!(
            c.h.access()
                .verify_released_subject(&ReleaseId::default(), 0, &p.openings[0]),
            Err(ReleaseAuditError::UnknownRelease(ReleaseId::default()))
        );
        // Revoked before the release; a grant made after it.
        c.h.ok(
            &c.patient,
            AccessOp::RevokeGrant {
                grant: g,
                reason: reason("withdrawn"),
            },
        );
        let revoked_at = c.h.height;
        assert_eq!(
            audit(&mut c, &mut vault, g, patient),
            Err(ReleaseAuditError::ConsentDoesNotHold(DenyReason::Revoked {
                grant: g,
                height: revoked_at
            }))
        );
    }

    #[test]
    fn grants_made_after_the_release_do_not_count() {
        let (mut c, _, mut vault) = setup();
        let rel = RelationshipId::of(c.patient.account(), c.hospital.account());
        let patient = c.patient.account();
        // The custodian commits to the grant the patient is about to make (its id follows
        // from the transaction); the release lands first.
        let terms = research_terms(&c, rel, PurposeOfUse::Research);
        let op = AccessOp::Grant {
            terms: terms.clone(),
            under: None,
        };
        let later = GrantId::of_tx(c.h.next_tx_id(&c.patient, &op));
        let p = release(&c, &mut vault, &[(patient, later)]);
        let id = record(&mut c, p.op);
        let release_height = c.h.height;
        assert_eq!(c.h.grant(&c.patient, terms, None), later);
        assert_eq!(
            c.h.access().verify_released_subject(&id, 0, &p.openings[0]),
            Err(ReleaseAuditError::GrantAfterRelease {
                grant: later,
                made: release_height + 1,
                release: release_height
            })
        );
    }

    #[test]
    fn epochs_are_checked_against_a_schedule() {
        let (mut c, g, mut vault) = setup();
        let p = release(&c, &mut vault, &[(c.patient.account(), g)]);
        let id = record(&mut c, p.op);
        let r = c.h.access().release(&id).unwrap();
        let window = 7 * DAY;
        let now = EpochSchedule::builder()
            .origin(r.at.time - 3 * window)
            .window_secs(window)
            .build()
            .unwrap();
        assert_eq!(r.check_epoch(&now), Ok(()));
        let later = EpochSchedule::builder()
            .origin(r.at.time - 2 * window)
            .window_secs(window)
            .build()
            .unwrap();
        assert_eq!(
            r.check_epoch(&later),
            Err(ReleaseAuditError::EpochNotStarted {
                epoch: Epoch::new(3),
                time: r.at.time
            })
        );
    }

    #[test]
    fn preparing_refuses_misuse_and_sorts() {
        let (c, g, mut vault) = setup();
        let (patient, guardian) = (c.patient.account(), c.guardian.account());
        let prep = |vault: &mut DerivedBackend, s: &[(AccountId, GrantId)]| {
            prepare_release(
                vault,
                c.researcher.account(),
                Epoch::new(1),
                Digest::default(),
                s,
            )
        };
        assert_eq!(prep(&mut vault, &[]).unwrap_err(), ReleaseBuildError::Empty);
        assert_eq!(
            prep(&mut vault, &[(patient, g), (patient, g)]).unwrap_err(),
            ReleaseBuildError::DuplicatePatient { index: 1 }
        );
        assert_eq!(
            prep(&mut vault, &[(key(50).account(), g)]).unwrap_err(),
            ReleaseBuildError::Pseudonym(PseudonymError::UnknownPatient)
        );
        let many = vec![(patient, g); MAX_RELEASE_SUBJECTS + 1];
        assert!(matches!(
            prep(&mut vault, &many).unwrap_err(),
            ReleaseBuildError::TooMany { .. }
        ));
        let p = prep(&mut vault, &[(patient, g), (guardian, g)]).unwrap();
        let AccessOp::ReleaseResearchData { subjects, .. } = &p.op else {
            unreachable!()
        };
        assert!(subjects[0].pseudonym < subjects[1].pseudonym);
        let ctx = research_context(c.researcher.account(), Epoch::new(1));
        for (s, o) in subjects.iter().zip(&p.openings) {
            assert_eq!(vault.relink(&s.pseudonym, &ctx), Some(o.patient.into()));
        }
        assert_eq!(
            format!("{:?}", p.openings[0].opening),
            "ConsentOpening(<redacted>)"
        );
    }

    fn subject_strategy() -> impl Strategy<Value = ReleasedSubject> {
        (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(p, c)| ReleasedSubject {
            pseudonym: Pseudonym::from_bytes(p),
            consent: ConsentCommitment::from_bytes(c),
        })
    }

    #[test]
    fn the_largest_release_fits_in_a_transaction() {
        let subjects = (0..MAX_RELEASE_SUBJECTS)
            .map(|i| ReleasedSubject {
                pseudonym: Pseudonym::from_bytes([i as u8; 32]),
                consent: ConsentCommitment::from_bytes([0xff; 32]),
            })
            .collect::<Vec<_>>();
        let op = AccessOp::ReleaseResearchData {
            recipient: key(1).account(),
            epoch: Epoch::MAX,
            dataset: Digest::from_bytes([0xff; 32]),
            subjects: BoundedVec::try_from(subjects).unwrap(),
        };
        let tx = Transaction::sign(&key(1), ChainId::default(), u64::MAX, Payload::Access(op));
        let bytes = tx.encode();
        assert!(
            bytes.len() <= Transaction::MAX_ENCODED_LEN,
            "{}",
            bytes.len()
        );
        assert_eq!(Transaction::decode(&bytes).unwrap(), tx);
    }

    #[test]
    fn errors_are_send_sync_and_lower_case() {
        fn check<E: std::error::Error + Send + Sync + 'static>() {}
        check::<ReleaseAuditError>();
        check::<ReleaseBuildError>();
        let msgs = [
            ReleaseAuditError::UnknownRelease(ReleaseId::default()).to_string(),
            ReleaseAuditError::CommitmentMismatch { index: 0 }.to_string(),
            ReleaseBuildError::Empty.to_string(),
            AccessError::NotInOrder("released subjects").to_string(),
        ];
        for m in msgs {
            assert!(m.chars().next().unwrap().is_lowercase(), "{m}");
        }
    }

    proptest! {
        /// Any release operation encodes canonically in a transaction and decodes back.
        #[test]
        fn release_ops_round_trip(
            recipient in any::<[u8; 32]>(),
            epoch in any::<u64>(),
            dataset in any::<[u8; 32]>(),
            subjects in proptest::collection::vec(subject_strategy(), 0..=MAX_RELEASE_SUBJECTS),
            nonce in any::<u64>(),
        ) {
            let op = AccessOp::ReleaseResearchData {
                recipient: AccountId::from_bytes(recipient),
                epoch: Epoch::new(epoch),
                dataset: Digest::from_bytes(dataset),
                subjects: BoundedVec::try_from(subjects).unwrap(),
            };
            let tx = Transaction::sign(&key(1), ChainId::default(), nonce, Payload::Access(op));
            let bytes = tx.encode();
            let decoded = Transaction::decode(&bytes).unwrap();
            prop_assert_eq!(decoded.encode(), bytes);
            prop_assert_eq!(decoded, tx);
        }
    }
}
