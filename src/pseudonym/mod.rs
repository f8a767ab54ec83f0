//! Dynamic pseudonyms: unlinkable per time window, purpose and recipient; relinkable only by the
//! key holder.
//!
//! A static pseudonym lets anyone who sees two data sets join them, and harmless fields joined
//! together identify a person (the *mosaic effect*). Here a patient's pseudonym depends on a
//! [`Context`]: the time window ([`Epoch`]), the [`PurposeOfUse`] and the [`Recipient`]. Two
//! contexts give pseudonyms that nobody without the keys can link; the key holder (the patient,
//! or a custodian's vault) relinks a pseudonym to the patient through a [`LinkIndex`], the
//! "additional information kept separately" of GDPR Art. 4(5).
//!
//! ```
//! use medledger::pseudonym::{
//!     Context, DerivedBackend, Epoch, PatientHandle, PseudonymBackend, Recipient, Scheme,
//! };
//! use medledger::purpose::PurposeOfUse;
//!
//! let mut vault = DerivedBackend::new(Scheme::KeyedHash);
//! let alice = PatientHandle::from_bytes([1; 32]); // the vault's own handle, not published
//! vault.enroll(alice)?; // a fresh random secret, never derived from who Alice is
//!
//! let study = Recipient::group("cardiology outcomes study");
//! let june = Context::new(Epoch::new(24), PurposeOfUse::Research, study);
//! let july = Context::new(Epoch::new(25), PurposeOfUse::Research, study);
//!
//! let p_june = vault.pseudonym(&alice, &june)?;
//! assert_eq!(vault.pseudonym(&alice, &june)?, p_june); // same context, same pseudonym
//! let p_july = vault.pseudonym(&alice, &july)?;
//! assert_ne!(p_june, p_july); // a new window, an unrelated pseudonym
//!
//! assert_eq!(vault.relink(&p_june, &june), Some(alice)); // only the vault can do this
//!
//! vault.shred_epoch(Epoch::new(24)); // crypto-shredding: June can never be relinked again
//! assert_eq!(vault.relink(&p_june, &june), None);
//! assert!(vault.pseudonym(&alice, &june).is_err());
//! assert_eq!(vault.relink(&p_july, &july), Some(alice));
//! # Ok::<(), medledger::pseudonym::PseudonymError>(())
//! ```
//!
//! # Key hierarchy
//!
//! ```text
//! PatientSecret        32 bytes from the operating system's CSPRNG (HIPAA 164.514(c): not
//!  │                   derived from anything about the person)
//!  └ root              BLAKE3, PSEUDONYM_EPOCH_KEY domain
//!     └ binary tree    64 levels, one per bit of the epoch number (EpochKeyTree)
//!        └ EpochKey(e) the leaf for epoch e
//!           ├ Pseudonym            BLAKE3, PSEUDONYM domain, over epoch key ‖ canonical context
//!           └ ContextSigningKey    BLAKE3, PSEUDONYM_SIGNING_KEY domain, same input
//!                                  → Ed25519 seed; its public key is the pseudonym
//! ```
//!
//! All derivations use BLAKE3's key-derivation mode with the versioned context strings of
//! [`hash::domain`](crate::hash::domain); the secret key material comes first, so every output
//! is a pseudorandom function of the secret. Without the epoch key, pseudonyms of different
//! contexts are independent uniformly random strings: the `linkage` experiment (feature `lab`)
//! measures this.
//!
//! # Crypto-shredding: why a tree
//!
//! Deleting an epoch's keys must make that epoch's pseudonyms unlinkable *for good*, including
//! for the vault that deleted them. A vault that kept the patient secret could simply derive the
//! keys again, so the vault never keeps it: on enrolment it keeps only the [`EpochKeyTree`], a
//! puncturable pseudorandom function (a GGM tree). Shredding an epoch removes every tree node
//! above that epoch's leaf and keeps instead the siblings along the path, so every other epoch
//! stays derivable while nothing left in the vault is an ancestor of the shredded leaf; hashes
//! only run downwards, so the shredded keys are gone.
//!
//! A hash ratchet (`key[e+1] = H(key[e])`) would also be forward-secure, but it can only shred a
//! prefix of time, needs `e` hashes to reach epoch `e`, and must keep every older key it wants
//! to retain. Random per-epoch keys would shred anything, but then nothing can be derived: the
//! patient could not compute a pseudonym away from the vault, and every key would need a
//! backup. The tree reaches any epoch in 64 hashes, shreds any epoch or range of epochs in any
//! order, and keeps O(64) nodes per shredded range.
//!
//! A patient who keeps the [`PatientSecret`] can still recompute everything: shredding is about
//! what the vault can do. A patient who wants shredding to bind them too keeps an
//! [`EpochKeyTree`] instead of the secret.
//!
//! # Backends
//!
//! [`PseudonymBackend`] is an object-safe trait with two implementations tested by one suite:
//!
//! * [`DerivedBackend`]: pseudonyms derived from each patient's epoch keys, either as keyed
//!   BLAKE3 outputs ([`Scheme::KeyedHash`]) or as per-context Ed25519 public keys
//!   ([`Scheme::Ed25519`]), which support [selective linking](LinkStatement);
//! * [`RandomTokenBackend`]: fresh random tokens recorded in the index, with no derivation at
//!   all, for deployments that want none.
//!
//! # Publishing data under pseudonyms
//!
//! Pseudonyms protect the identifier, not the other fields. [`generalize`] holds HIPAA Safe
//! Harbor style helpers (dates to years, ages over 89 grouped, ZIP codes to three digits with
//! the sparsely populated ones mapped to `000`) and a k-anonymity check.

use core::fmt;
use core::ops::RangeInclusive;

use crate::codec::Canonical;
use crate::hash::{domain, hash_newtype, AccountId};
use crate::purpose::PurposeOfUse;

mod backend;
pub mod generalize;
mod index;
mod keys;
mod link;
#[cfg(feature = "lab")]
pub mod linkage;
mod schedule;

pub use backend::{DerivedBackend, RandomTokenBackend, Scheme, MAX_CACHED_EPOCH_KEYS};
pub use index::LinkIndex;
pub use keys::{EpochKey, EpochKeyTree, PatientSecret};
pub use link::{ContextSigningKey, LinkError, LinkSide, LinkStatement};
pub use schedule::{EpochSchedule, EpochScheduleBuilder, ScheduleError};

hash_newtype! {
    /// A pseudonym: what a recipient sees instead of the patient.
    ///
    /// With [`Scheme::KeyedHash`] and [`RandomTokenBackend`] it is 32 pseudorandom bytes; with
    /// [`Scheme::Ed25519`] it is the compressed Ed25519 public key of the patient's
    /// [`ContextSigningKey`] for that context.
    Pseudonym
}

hash_newtype! {
    /// Who receives data under a pseudonym: an account, or a group named by a public label.
    Recipient
}

hash_newtype! {
    /// The key holder's own handle for a patient: what relinking returns.
    ///
    /// The handle is chosen by the caller when enrolling (an account id, a record number in the
    /// custodian's own systems, …). It lives only in the vault and is never an input to a
    /// pseudonym: pseudonyms derive from the patient's random secret alone.
    PatientHandle
}

impl Recipient {
    /// The recipient that is an account: its id, unchanged.
    pub const fn account(id: AccountId) -> Self {
        Self::from_bytes(id.to_bytes())
    }

    /// A recipient named by a public group label ("cardiology study 2027", "public release"),
    /// hashed in the [`PSEUDONYM_RECIPIENT_GROUP`](domain::PSEUDONYM_RECIPIENT_GROUP) domain.
    pub fn group(label: &str) -> Self {
        Self::from_bytes(domain::PSEUDONYM_RECIPIENT_GROUP.hash(label.as_bytes()))
    }
}

impl From<AccountId> for Recipient {
    fn from(id: AccountId) -> Self {
        Self::account(id)
    }
}

impl From<AccountId> for PatientHandle {
    fn from(id: AccountId) -> Self {
        Self::from_bytes(id.to_bytes())
    }
}

/// A time window, numbered from an [`EpochSchedule`]'s origin.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Epoch(u64);

impl Epoch {
    /// The first epoch.
    pub const ZERO: Epoch = Epoch(0);
    /// The last epoch.
    pub const MAX: Epoch = Epoch(u64::MAX);

    /// Epoch number `n`.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// The epoch number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next epoch, or `None` after [`Epoch::MAX`].
    pub const fn next(self) -> Option<Epoch> {
        match self.0.checked_add(1) {
            Some(n) => Some(Epoch(n)),
            None => None,
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// What a pseudonym is for: a time window, a purpose and a recipient.
///
/// The same patient in the same context always gets the same pseudonym; change any field and
/// the pseudonym is unrelated.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Context {
    /// The time window.
    pub epoch: Epoch,
    /// Why the data is used.
    pub purpose: PurposeOfUse,
    /// Who receives it.
    pub recipient: Recipient,
}

impl Context {
    /// A context.
    pub const fn new(epoch: Epoch, purpose: PurposeOfUse, recipient: Recipient) -> Self {
        Self {
            epoch,
            purpose,
            recipient,
        }
    }

    /// The canonical encoding, which pseudonym derivation hashes.
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(self)
    }
}

impl Canonical for Context {
    const NAME: &'static str = "pseudonym context";
    /// Version byte, a varint epoch (at most 10 bytes), a varint purpose index (at most 5) and
    /// the 32-byte recipient.
    const MAX_ENCODED_LEN: usize = 1 + 10 + 5 + 32;
}

/// Errors of pseudonym issuing and key handling (caller misuse and key state).
///
/// Messages never contain secrets, patient handles or pseudonyms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PseudonymError {
    /// The patient is not enrolled in this backend.
    #[error("unknown patient")]
    UnknownPatient,
    /// The patient is already enrolled.
    #[error("patient already enrolled")]
    AlreadyEnrolled,
    /// The epoch's keys were shredded: its pseudonyms can no longer be issued or relinked.
    #[error("{epoch} has been shredded")]
    EpochShredded {
        /// The shredded epoch.
        epoch: Epoch,
    },
    /// An epoch key was used for a context of another epoch.
    #[error("key for {key} used for a context in {context}")]
    EpochMismatch {
        /// The key's epoch.
        key: Epoch,
        /// The context's epoch.
        context: Epoch,
    },
    /// The operation needs [`Scheme::Ed25519`] pseudonyms.
    #[error("operation needs the ed25519 pseudonym scheme")]
    WrongScheme,
    /// A link statement must link two different pseudonyms.
    #[error("cannot link a pseudonym to itself")]
    SamePseudonym,
    /// A new pseudonym collides with one already issued in the same context (probability about
    /// 2^-256 per pair; the issue is refused rather than overwrite the index).
    #[error("pseudonym collides with one already issued in this context")]
    Collision,
    /// The operating system's random number generator failed.
    #[error("operating-system randomness unavailable")]
    Randomness,
}

/// A pseudonym issuer and key holder: issues pseudonyms, relinks them, shreds epochs.
///
/// Object-safe, so a deployment can choose its backend at run time
/// (`Box<dyn PseudonymBackend>`). Implementations own the patients' key material and the
/// [`LinkIndex`]; neither is ever printed.
///
/// ```
/// use medledger::pseudonym::{
///     Context, DerivedBackend, Epoch, PatientHandle, PseudonymBackend, RandomTokenBackend,
///     Recipient, Scheme,
/// };
/// use medledger::purpose::PurposeOfUse;
///
/// let backends: Vec<Box<dyn PseudonymBackend>> = vec![
///     Box::new(DerivedBackend::new(Scheme::KeyedHash)),
///     Box::new(RandomTokenBackend::new()),
/// ];
/// let ctx = Context::new(Epoch::new(3), PurposeOfUse::Payment, Recipient::group("insurer"));
/// for mut b in backends {
///     let bob = PatientHandle::from_bytes([2; 32]);
///     b.enroll(bob)?;
///     let p = b.pseudonym(&bob, &ctx)?;
///     assert_eq!(b.relink(&p, &ctx), Some(bob));
/// }
/// # Ok::<(), medledger::pseudonym::PseudonymError>(())
/// ```
pub trait PseudonymBackend: Send + Sync {
    /// Enrols a patient with fresh key material from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::AlreadyEnrolled`] if the handle is taken;
    /// [`PseudonymError::Randomness`] if the CSPRNG fails.
    fn enroll(&mut self, patient: PatientHandle) -> Result<(), PseudonymError>;

    /// The patient's pseudonym for `context`: the same on every call with the same arguments.
    /// The pseudonym is recorded in the [`LinkIndex`] so that it can be relinked.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::UnknownPatient`], [`PseudonymError::EpochShredded`], or
    /// [`PseudonymError::Randomness`] / [`PseudonymError::Collision`] for random tokens.
    fn pseudonym(
        &mut self,
        patient: &PatientHandle,
        context: &Context,
    ) -> Result<Pseudonym, PseudonymError>;

    /// The patient behind a pseudonym issued for `context`, if this backend issued it and its
    /// epoch was not shredded.
    fn relink(&self, pseudonym: &Pseudonym, context: &Context) -> Option<PatientHandle>;

    /// Crypto-shreds every epoch in `epochs`, for every patient, present and future: their keys
    /// and index entries are erased and no pseudonym of theirs can be issued or relinked again.
    /// Returns the number of index entries removed.
    fn shred_epochs(&mut self, epochs: RangeInclusive<Epoch>) -> usize;

    /// Crypto-shreds one epoch; see [`shred_epochs`](Self::shred_epochs).
    fn shred_epoch(&mut self, epoch: Epoch) -> usize {
        self.shred_epochs(epoch..=epoch)
    }

    /// Whether `epoch` has been shredded.
    fn is_shredded(&self, epoch: Epoch) -> bool;

    /// Erases a patient: their key material and every index entry. Their pseudonyms can never
    /// be relinked again. Returns whether the patient was enrolled.
    fn forget(&mut self, patient: &PatientHandle) -> bool;

    /// The relink index (read-only).
    fn link_index(&self) -> &LinkIndex;
}

#[cfg(test)]
mod tests;
