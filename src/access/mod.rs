//! Access control after MedRec: registrar, relationships, summaries, grants, break-glass,
//! decisions and audit, as native state machines driven by signed transactions.
//!
//! A patient controls who may read the records that providers keep in their own databases.
//! Records stay off-chain; the chain holds identities, record pointers and their content hashes,
//! permissions and an audit trail of every read. Every operation is an [`AccessOp`] carried by a
//! signed transaction ([`Payload::Access`](crate::tx::Payload::Access)), authorised by its
//! signer's role and relationship; a refused operation fails with an [`AccessError`] and changes
//! nothing. Every state change emits an [`AccessEvent`] and, when it concerns a patient, appends
//! it to that patient's append-only [audit trail](audit).
//!
//! | MedRec (2016) | here |
//! | --- | --- |
//! | Registrar Contract | [`registrar`]: roles, salted identity commitments, key rotation with history, provider certification by genesis authorities |
//! | Patient–Provider Relationship | [`relationship`]: one per pair, pending until the patient answers, record pointers with versions, recorded termination |
//! | Summary Contract | [`summary`]: each account's relationships with their status, the patient's break-glass review queue |
//! | viewer permissions | [`grant`], [`group`], [`delegation`]: FHIR-Consent-style grants with nested provisions, groups, narrowing delegation |
//! | database gatekeeper | [`decision`]: explainable decisions, and access receipts the chain re-checks |
//! | (third-party reads, never logged) | [`research`]: research data releases under research-window pseudonyms, accountable to an auditor yet unlinkable on chain |
//!
//! ```
//! use medledger::access::*;
//! use medledger::chain::ChainBuilder;
//! use medledger::pow::ProofOfWork;
//! use medledger::purpose::PurposeOfUse;
//! use medledger::tx::{Keypair, Payload, Transaction};
//!
//! let (authority, hospital, patient, doctor) =
//!     (Keypair::generate(), Keypair::generate(), Keypair::generate(), Keypair::generate());
//! let t0 = 1_700_000_000;
//! let mut chain = ChainBuilder::new("docs", ProofOfWork::regtest())
//!     .genesis_time(t0)
//!     .authority("Health Authority", authority.public())
//!     .build()?;
//! let id = chain.chain_id();
//! let tx = |k: &Keypair, nonce, op| Transaction::sign(k, id, nonce, Payload::Access(op));
//! let org = |s: &str| Identity::Organisation(s.try_into().unwrap());
//! let rel = RelationshipId::of(patient.account(), hospital.account());
//! let record = RecordPointer {
//!     query: "SELECT * FROM labs WHERE id = 1".try_into()?,
//!     content_hash: medledger::hash::content_hash(b"the lab result"),
//!     category: Category::Laboratory,
//!     data_period: Period::new(t0 - 86_400, t0)?,
//! };
//! let add = tx(&hospital, 2, AccessOp::AddPointer { relationship: rel, record, replaces: None });
//! let pointer = PointerId::of_tx(add.id());
//! let terms = GrantTerms::new(
//!     rel,
//!     Viewer::Account(doctor.account()),
//!     Scope::All,
//!     ActionSet::of(&[Action::Read]),
//!     PurposeSet::of(&[PurposeOfUse::Treatment]),
//!     Period::lasting(t0, 30 * 86_400),
//! );
//! let txs = vec![
//!     tx(&authority, 0, AccessOp::CertifyProvider { provider: hospital.account(), emergency: false }),
//!     tx(&hospital, 0, AccessOp::Register { role: Role::Provider, identity: org("St Mary's") }),
//!     tx(&doctor, 0, AccessOp::Register { role: Role::Provider, identity: org("Dr Lee") }),
//!     tx(&patient, 0, AccessOp::Register {
//!         role: Role::Patient,
//!         identity: Identity::Commitment(IdentityCommitment::new("NHS-943-476-5919", &[7; 32])),
//!     }),
//!     tx(&hospital, 1, AccessOp::CreateRelationship { patient: patient.account() }),
//!     add,
//!     tx(&patient, 1, AccessOp::AcceptRelationship { relationship: rel }),
//!     tx(&patient, 2, AccessOp::Grant { terms, under: None }),
//! ];
//! let block = chain.mine(txs, t0 + 600)?;
//! chain.append(block)?;
//! let read = |purpose| {
//!     chain.decide(doctor.account(), patient.account(), pointer, Action::Read, purpose, t0 + 700)
//! };
//! assert!(read(PurposeOfUse::Treatment).is_permit());
//! assert!(matches!(
//!     read(PurposeOfUse::Research),
//!     Decision::Deny(DenyReason::PurposeNotAllowed { .. })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How a request is decided
//!
//! [`AccessState::decide`] answers *may `viewer` perform `action` on `pointer` of `patient` for
//! `purpose` at time `at`?* ([`decision`] has the details):
//!
//! 1. the pointer must exist and belong to `patient`;
//! 2. the patient and the provider keeping the record (its custodian) are always permitted;
//! 3. otherwise the pointer's relationship must be *accepted*, and the viewer's grants on that
//!    relationship (its own, and those of the patient's groups it belongs to) are tried in the
//!    order they were made; the first that permits is named in the decision;
//! 4. failing that, an open break-glass session of the viewer permits reading for emergency
//!    purposes (`ETREAT`, `BTG`);
//! 5. otherwise the decision is a denial with the most specific reason found.
//!
//! A grant permits a request when it applies (the pointer is in its scope, the action and the
//! purpose are among its own, it is not revoked and `at` lies in its validity period) and its
//! provisions do not deny it. Provisions follow HL7 FHIR Consent's nesting, with this
//! evaluation:
//!
//! * the grant itself is the root provision, of type *permit*;
//! * a nested provision is an **exception to its parent**: it only counts when its parent
//!   applies, and when its own criteria match the request;
//! * among the matching children of a provision, **deny overrides permit**: if any evaluates to
//!   deny, the provision evaluates to deny; else if any evaluates to permit, to permit; else to
//!   its own type;
//! * a denial names the deny provision that produced it
//!   ([`DenyReason::DeniedByProvision`]).
//!
//! Since the root must apply first, provisions can only narrow a grant, never widen it.
//!
//! # Time
//!
//! Every time check uses the block's timestamp; validity periods are half-open `[start, end)`
//! in Unix seconds. Records keep the height and time they were created, answered, revoked or
//! terminated at, so queries can be asked "as of" a past height
//! ([`AccessState::decide_as_of`]).

pub mod audit;
pub mod breakglass;
pub mod decision;
pub mod delegation;
pub mod display;
pub mod grant;
pub mod group;
mod ledger;
pub mod proof;
pub mod query;
pub mod registrar;
pub mod relationship;
pub mod research;
pub mod summary;

use core::fmt;
use core::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::codec::{self, BoundedString, BoundedVec};
use crate::hash::{domain, hash_newtype, AccountId, Digest, TxId};
use crate::pseudonym::Epoch;
use crate::purpose::PurposeOfUse;
use crate::state::{AccountState, KeyState, Table, TableOps, TxContext};
use crate::tx::{PublicKey, Signature};

pub use audit::AuditEntry;
pub use breakglass::{BreakGlass, Review, ReviewOutcome, MAX_BREAK_GLASS_SECS};
pub use decision::{AccessRequest, Basis, Decision, DenyReason};
pub use delegation::{Delegation, DelegationTerms, MAX_GRANTS_PER_DELEGATION};
pub use grant::{
    Grant, GrantTerms, Provision, ProvisionKind, Revocation, RevocationCause, Scope, Viewer,
    MAX_GRANTS_PER_RELATIONSHIP, MAX_LIVE_GRANTS_PER_VIEWER, MAX_PROVISIONS, MAX_PROVISION_DEPTH,
    MAX_PROVISION_POINTERS, MAX_SCOPE_POINTERS,
};
pub use group::{Group, Membership, MAX_GROUPS_PER_PATIENT, MAX_GROUP_MEMBERS};
pub use ledger::Created;
pub use proof::{GrantProof, GrantProofError, GrantStatus};
pub use query::{Loss, Reader};
pub use registrar::{AccountRecord, Certification, Identity, IdentityCommitment, Role};
pub use relationship::{
    Pointer, RecordPointer, Relationship, RelationshipStatus, Termination, MAX_QUERY_LEN,
};
pub use research::{
    prepare_release, prepare_release_with, research_context, ConsentCommitment, ConsentOpening,
    PreparedRelease, Release, ReleaseAuditError, ReleaseBuildError, ReleasedSubject,
    SubjectOpening, MAX_RELEASE_SUBJECTS,
};
pub use summary::{Side, SummaryItem};

/// The longest organisation name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The longest reason (for a rejection, revocation, termination or break-glass), in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// The longest group label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// A public organisation name (providers, researchers, auditors, authorities).
pub type Name = BoundedString<MAX_NAME_LEN>;
/// A free-text reason, recorded with the operation that states it.
pub type Reason = BoundedString<MAX_REASON_LEN>;
/// A group's label, chosen by the patient.
pub type Label = BoundedString<MAX_LABEL_LEN>;

// ---------------------------------------------------------------------------------------------
// Identifiers

hash_newtype! {
    /// A patient–provider relationship: derived from the pair, so there is one per pair
    /// ([`RelationshipId::of`]).
    RelationshipId
}
hash_newtype! {
    /// A record pointer, derived from the transaction that added it ([`PointerId::of_tx`]).
    PointerId
}
hash_newtype! {
    /// A grant, derived from the transaction that made it ([`GrantId::of_tx`]).
    GrantId
}
hash_newtype! {
    /// A patient's group of viewers, derived from the transaction that created it
    /// ([`GroupId::of_tx`]).
    GroupId
}
hash_newtype! {
    /// A delegation of consent management, derived from the transaction that made it
    /// ([`DelegationId::of_tx`]).
    DelegationId
}
hash_newtype! {
    /// A break-glass session, derived from the transaction that opened it
    /// ([`BreakGlassId::of_tx`]).
    BreakGlassId
}
hash_newtype! {
    /// A research data release, derived from the transaction that recorded it
    /// ([`ReleaseId::of_tx`]).
    ReleaseId
}

/// Kinds of derived identifiers (the first byte hashed), so no two kinds can collide.
mod id_kind {
    pub(super) const RELATIONSHIP: u8 = 1;
    pub(super) const POINTER: u8 = 2;
    pub(super) const GRANT: u8 = 3;
    pub(super) const GROUP: u8 = 4;
    pub(super) const DELEGATION: u8 = 5;
    pub(super) const BREAK_GLASS: u8 = 6;
    pub(super) const RELEASE: u8 = 7;
}

fn derive_id<T: Serialize + ?Sized>(kind: u8, parts: &T) -> [u8; 32] {
    let mut buf = Vec::with_capacity(80);
    buf.push(kind);
    codec::encode_body_into(parts, &mut buf);
    domain::ACCESS_ID.hash(&buf)
}

impl RelationshipId {
    /// The relationship between `patient` and `provider`.
    pub fn of(patient: AccountId, provider: AccountId) -> Self {
        Self(derive_id(id_kind::RELATIONSHIP, &(patient, provider)))
    }
}

macro_rules! id_of_tx {
    ($name:ident, $kind:expr, $what:literal) => {
        impl $name {
            #[doc = concat!("The id of the ", $what, " made by the transaction `tx`.")]
            pub fn of_tx(tx: TxId) -> Self {
                Self(derive_id($kind, &tx))
            }
        }
    };
}
id_of_tx!(PointerId, id_kind::POINTER, "record pointer");
id_of_tx!(GrantId, id_kind::GRANT, "grant");
id_of_tx!(GroupId, id_kind::GROUP, "group");
id_of_tx!(DelegationId, id_kind::DELEGATION, "delegation");
id_of_tx!(BreakGlassId, id_kind::BREAK_GLASS, "break-glass session");
id_of_tx!(ReleaseId, id_kind::RELEASE, "research data release");

// ---------------------------------------------------------------------------------------------
// Time

/// When something happened: the block height and the block's timestamp (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Block height.
    pub height: u64,
    /// Block timestamp.
    pub time: u64,
}

/// A half-open time interval `[start, end)` in Unix seconds, with `start < end`.
///
/// Validity periods of grants, delegations and provisions, and the period a record's data
/// covers, are periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    /// First second inside the period.
    pub start: u64,
    /// First second after the period.
    pub end: u64,
}

impl Period {
    /// The period `[start, end)`.
    ///
    /// # Errors
    ///
    /// [`AccessError::InvalidPeriod`] unless `start < end`.
    pub fn new(start: u64, end: u64) -> Result<Self, AccessError> {
        let p = Self { start, end };
        p.check()?;
        Ok(p)
    }

    /// The period starting at `start` and lasting `secs` seconds (saturating).
    pub fn lasting(start: u64, secs: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(secs).max(start.saturating_add(1)),
        }
    }

    /// Whether `t` lies inside.
    pub const fn contains(&self, t: u64) -> bool {
        self.start <= t && t < self.end
    }

    /// Whether `other` lies entirely inside `self`.
    pub const fn covers(&self, other: &Period) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two periods share at least one second.
    pub const fn overlaps(&self, other: &Period) -> bool {
        self.start < other.end && other.start < self.end
    }

    fn check(&self) -> Result<(), AccessError> {
        if self.start < self.end {
            Ok(())
        } else {
            Err(AccessError::InvalidPeriod {
                start: self.start,
                end: self.end,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small sets of enum values

/// An enum whose values can be members of an [`EnumSet`].
pub trait SetMember: Copy + fmt::Debug + 'static {
    /// Every value, in encoding order (at most 32).
    const ALL: &'static [Self];
    /// The value's position in [`ALL`](Self::ALL).
    fn index(self) -> u32;
}

/// A set of values of a small enum (actions, purposes, categories), as a bit set.
///
/// Encoded as a `u32` bit mask; a mask with a bit for no known value fails to decode.
pub struct EnumSet<T> {
    bits: u32,
    _member: PhantomData<fn() -> T>,
}

impl<T: SetMember> EnumSet<T> {
    const MASK: u32 = if T::ALL.len() >= 32 {
        u32::MAX
    } else {
        (1u32 << T::ALL.len()) - 1
    };

    /// The empty set.
    pub const fn new() -> Self {
        Self {
            bits: 0,
            _member: PhantomData,
        }
    }

    /// The set of every value.
    pub const fn all() -> Self {
        Self {
            bits: Self::MASK,
            _member: PhantomData,
        }
    }

    /// The set of `items`.
    pub fn of(items: &[T]) -> Self {
        items.iter().fold(Self::new(), |s, &t| s.with(t))
    }

    /// The set with `item` added.
    #[must_use]
    pub fn with(mut self, item: T) -> Self {
        self.bits |= 1 << item.index();
        self
    }

    /// Whether `item` is a member.
    #[inline]
    pub fn contains(&self, item: T) -> bool {
        self.bits & (1 << item.index()) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// The number of members.
    pub const fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether every member of `self` is a member of `other`.
    pub const fn is_subset(&self, other: &Self) -> bool {
        self.bits & !other.bits == 0
    }

    /// The members, in encoding order.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        T::ALL.iter().copied().filter(|t| self.contains(*t))
    }
}

impl<T: SetMember> FromIterator<T> for EnumSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        iter.into_iter().fold(Self::new(), |s, t| s.with(t))
    }
}

impl<T> Clone for EnumSet<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for EnumSet<T> {}
impl<T> PartialEq for EnumSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}
impl<T> Eq for EnumSet<T> {}
impl<T> core::hash::Hash for EnumSet<T> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.bits.hash(state);
    }
}
impl<T: SetMember> Default for EnumSet<T> {
    fn default() -> Self {
        Self::new()
    }
}
impl<T: SetMember> fmt::Debug for EnumSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<T> Serialize for EnumSet<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.bits)
    }
}

impl<'de, T: SetMember> Deserialize<'de> for EnumSet<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bits = u32::deserialize(d)?;
        if bits & !Self::MASK != 0 {
            return Err(serde::de::Error::custom(
                "set has a member this build does not know",
            ));
        }
        Ok(Self {
            bits,
            _member: PhantomData,
        })
    }
}

/// What a viewer does with a record (FHIR Consent's `provision.action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Action {
    /// Read the record (FHIR `access`).
    Read,
    /// Pass the record on to someone else (FHIR `disclose`).
    Disclose,
}

impl Action {
    /// Every action, in encoding order.
    pub const ALL: [Action; 2] = [Action::Read, Action::Disclose];
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Disclose => "disclose",
        })
    }
}

impl SetMember for Action {
    const ALL: &'static [Self] = &Action::ALL;
    fn index(self) -> u32 {
        self as u32
    }
}

impl SetMember for PurposeOfUse {
    const ALL: &'static [Self] = &PurposeOfUse::ALL;
    fn index(self) -> u32 {
        self as u32
    }
}

/// The kind of data a record holds (FHIR Consent's `provision.class`).
///
/// The variant order is part of the encoding; new categories are only ever appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Category {
    /// Anything not covered by another category.
    General,
    /// Laboratory results.
    Laboratory,
    /// Imaging studies and reports.
    Imaging,
    /// Medications and prescriptions.
    Medication,
    /// Diagnoses and problem lists.
    Diagnosis,
    /// Procedures and surgery.
    Procedure,
    /// Immunisations.
    Immunization,
    /// Clinical notes and letters.
    ClinicalNote,
    /// Mental health (often given extra protection).
    MentalHealth,
    /// Sexual and reproductive health.
    SexualHealth,
    /// Genomic data.
    Genomic,
    /// Substance use treatment.
    SubstanceUse,
}

impl Category {
    /// Every category, in encoding order.
    pub const ALL: [Category; 12] = [
        Category::General,
        Category::Laboratory,
        Category::Imaging,
        Category::Medication,
        Category::Diagnosis,
        Category::Procedure,
        Category::Immunization,
        Category::ClinicalNote,
        Category::MentalHealth,
        Category::SexualHealth,
        Category::Genomic,
        Category::SubstanceUse,
    ];
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::General => "general",
            Category::Laboratory => "laboratory",
            Category::Imaging => "imaging",
            Category::Medication => "medication",
            Category::Diagnosis => "diagnosis",
            Category::Procedure => "procedure",
            Category::Immunization => "immunization",
            Category::ClinicalNote => "clinical note",
            Category::MentalHealth => "mental health",
            Category::SexualHealth => "sexual health",
            Category::Genomic => "genomic",
            Category::SubstanceUse => "substance use",
        })
    }
}

impl SetMember for Category {
    const ALL: &'static [Self] = &Category::ALL;
    fn index(self) -> u32 {
        self as u32
    }
}

/// A set of [`Action`]s.
pub type ActionSet = EnumSet<Action>;
/// A set of [`PurposeOfUse`]s.
pub type PurposeSet = EnumSet<PurposeOfUse>;
/// A set of [`Category`]s.
pub type CategorySet = EnumSet<Category>;

// ---------------------------------------------------------------------------------------------
// Operations

/// An access-control operation: the payload of a transaction
/// ([`Payload::Access`](crate::tx::Payload::Access)). Its signer is the actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AccessOp {
    /// Registers the signer's account with a role and an identity. Patients register a salted
    /// [`IdentityCommitment`], every other role a public organisation name. The
    /// [`Role::Authority`] role is only given in the genesis configuration.
    Register {
        /// The role.
        role: Role,
        /// The identity.
        identity: Identity,
    },
    /// Replaces the signer's key (the old key signs); the new key proves possession by signing
    /// [`registrar::possession_message`]. See [`AccessOp::rotate_key`].
    RotateKey {
        /// The key that signs for the account from now on.
        new_key: PublicKey,
        /// The new key's signature over [`registrar::possession_message`].
        possession: Signature,
    },
    /// An authority certifies a provider (registered or not yet), for emergencies or not.
    CertifyProvider {
        /// The provider's account.
        provider: AccountId,
        /// Whether the provider may break glass.
        emergency: bool,
    },
    /// An authority withdraws a provider's certification (recorded).
    DecertifyProvider {
        /// The provider's account.
        provider: AccountId,
        /// Why.
        reason: Reason,
    },
    /// A certified provider opens a relationship with a patient; it is *pending* until the
    /// patient answers.
    CreateRelationship {
        /// The patient's account.
        patient: AccountId,
    },
    /// The patient accepts a pending relationship.
    AcceptRelationship {
        /// The relationship.
        relationship: RelationshipId,
    },
    /// The patient rejects a pending relationship.
    RejectRelationship {
        /// The relationship.
        relationship: RelationshipId,
        /// Why.
        reason: Reason,
    },
    /// Either party ends a pending or accepted relationship; its grants are revoked (recorded).
    TerminateRelationship {
        /// The relationship.
        relationship: RelationshipId,
        /// Why.
        reason: Reason,
    },
    /// The provider adds a pointer to a record in its database, or a new version of one.
    AddPointer {
        /// The relationship.
        relationship: RelationshipId,
        /// The pointer.
        record: RecordPointer,
        /// The pointer this one is a new version of.
        replaces: Option<PointerId>,
    },
    /// A patient creates a group of viewers, to grant access to all its members at once.
    CreateGroup {
        /// The group's label.
        label: Label,
    },
    /// The group's patient adds a member.
    AddGroupMember {
        /// The group.
        group: GroupId,
        /// The new member.
        member: AccountId,
    },
    /// The group's patient removes a member (recorded: "as of" queries still see it).
    RemoveGroupMember {
        /// The group.
        group: GroupId,
        /// The member.
        member: AccountId,
    },
    /// The patient (or a delegate, `under` its delegation) grants a viewer access.
    Grant {
        /// What is granted.
        terms: GrantTerms,
        /// The delegation a delegate acts under; `None` when the patient signs.
        under: Option<DelegationId>,
    },
    /// The patient (or the delegate that made it) revokes a grant (recorded).
    RevokeGrant {
        /// The grant.
        grant: GrantId,
        /// Why.
        reason: Reason,
    },
    /// The patient delegates managing consent, within bounds, to a guardian.
    Delegate {
        /// The guardian's account.
        delegate: AccountId,
        /// The bounds.
        terms: DelegationTerms,
    },
    /// The patient (or the delegate) ends a delegation; grants made under it are revoked.
    RevokeDelegation {
        /// The delegation.
        delegation: DelegationId,
        /// Why.
        reason: Reason,
    },
    /// An emergency-certified provider opens time-boxed read access to a patient's records.
    OpenBreakGlass {
        /// The patient.
        patient: AccountId,
        /// Why (recorded, for the patient's review).
        reason: Reason,
        /// How long, at most [`MAX_BREAK_GLASS_SECS`].
        duration_secs: u64,
    },
    /// The provider that opened a break-glass session closes it early.
    CloseBreakGlass {
        /// The session.
        session: BreakGlassId,
    },
    /// The patient reviews a break-glass session, taking it off the review queue.
    ReviewBreakGlass {
        /// The session.
        session: BreakGlassId,
        /// The patient's verdict.
        outcome: ReviewOutcome,
        /// A note.
        note: Option<Reason>,
    },
    /// A viewer's read (or disclosure) of a record, bound to what permits it: the chain
    /// re-checks the permission at the block's time and refuses the receipt if it does not
    /// hold, then appends it to the patient's audit trail.
    RecordAccess {
        /// The patient.
        patient: AccountId,
        /// The record.
        pointer: PointerId,
        /// What the viewer does.
        action: Action,
        /// Why.
        purpose: PurposeOfUse,
        /// What permits it.
        basis: Basis,
    },
    /// A certified provider (the custodian) records that it released a data set to a
    /// registered [`Role::Researcher`] under research-window pseudonyms: one
    /// [`ReleasedSubject`] per patient, in strictly ascending pseudonym order, each with a
    /// hiding commitment to the consent (grant) it relies on. Nothing in it names a patient;
    /// see [`research`] for what the chain checks and how an auditor opens a subject. Build it
    /// with [`prepare_release`].
    ReleaseResearchData {
        /// The researcher receiving the data.
        recipient: AccountId,
        /// The research window whose pseudonyms the subjects carry.
        epoch: Epoch,
        /// The content hash of the released data set.
        dataset: Digest,
        /// The released subjects, in strictly ascending pseudonym order (not empty).
        subjects: BoundedVec<ReleasedSubject, MAX_RELEASE_SUBJECTS>,
    },
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why an access-control operation was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The account has not registered.
    #[error("account {0} is not registered")]
    NotRegistered(AccountId),
    /// The account has registered before.
    #[error("account {0} is already registered")]
    AlreadyRegistered(AccountId),
    /// Another account registered this identity.
    #[error("the identity is already registered to account {0}")]
    IdentityTaken(AccountId),
    /// The role can only be given in the genesis configuration.
    #[error("the {0} role cannot be self-registered")]
    RoleNotSelfAssignable(Role),
    /// The identity is of the wrong kind for the role.
    #[error("a {role} registers with {expected}")]
    IdentityKindMismatch {
        /// The role.
        role: Role,
        /// What it registers with.
        expected: &'static str,
    },
    /// The account has another role than the operation needs.
    #[error("account {account} is a {found}, the operation needs a {expected}")]
    WrongRole {
        /// The account.
        account: AccountId,
        /// The role needed.
        expected: Role,
        /// Its role.
        found: Role,
    },
    /// The provider has no valid certification.
    #[error("provider {0} is not certified")]
    NotCertified(AccountId),
    /// The provider is not certified for emergencies.
    #[error("provider {0} is not certified for emergency access")]
    NotEmergencyCertified(AccountId),
    /// The new key is not a valid, strong Ed25519 key.
    #[error("key {0} is weak or invalid")]
    BadKey(PublicKey),
    /// The new key already signs, signed, or opened an account.
    #[error("key {0} is already in use")]
    KeyInUse(PublicKey),
    /// The new key's proof of possession does not verify.
    #[error("the new key's proof of possession does not verify")]
    BadPossession,
    /// No such relationship.
    #[error("unknown relationship {0}")]
    UnknownRelationship(RelationshipId),
    /// The pair already has its relationship.
    #[error("relationship {0} already exists")]
    RelationshipExists(RelationshipId),
    /// The account is not the patient the operation concerns.
    #[error("account {0} is not the patient")]
    NotThePatient(AccountId),
    /// The account is not the relationship's provider.
    #[error("account {0} is not the relationship's provider")]
    NotTheProvider(AccountId),
    /// The account is neither party of the relationship.
    #[error("account {0} is not a party of the relationship")]
    NotAParty(AccountId),
    /// The relationship's status does not allow the operation.
    #[error("relationship {relationship} is {status}, the operation needs it {expected}")]
    WrongStatus {
        /// The relationship.
        relationship: RelationshipId,
        /// Its status.
        status: RelationshipStatus,
        /// What the operation needs.
        expected: &'static str,
    },
    /// No such pointer.
    #[error("unknown pointer {0}")]
    UnknownPointer(PointerId),
    /// The pointer belongs to another relationship.
    #[error("pointer {pointer} is not in relationship {relationship}")]
    PointerNotInRelationship {
        /// The pointer.
        pointer: PointerId,
        /// The relationship.
        relationship: RelationshipId,
    },
    /// The pointer already has a newer version.
    #[error("pointer {0} was already replaced")]
    PointerSuperseded(PointerId),
    /// A new version must keep its record's category.
    #[error("a new version keeps the category {expected}, not {found}")]
    CategoryChanged {
        /// The category of the versions so far.
        expected: Category,
        /// The category given.
        found: Category,
    },
    /// No such grant.
    #[error("unknown grant {0}")]
    UnknownGrant(GrantId),
    /// The grant is already revoked.
    #[error("grant {0} is already revoked")]
    GrantAlreadyRevoked(GrantId),
    /// The account may not manage the grant.
    #[error("account {account} may not manage grant {grant}")]
    NotGrantManager {
        /// The account.
        account: AccountId,
        /// The grant.
        grant: GrantId,
    },
    /// No such group.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The account is already a member.
    #[error("account {0} is already a member")]
    AlreadyMember(AccountId),
    /// The account is not a member.
    #[error("account {0} is not a member")]
    NotMember(AccountId),
    /// No such delegation.
    #[error("unknown delegation {0}")]
    UnknownDelegation(DelegationId),
    /// The account is not the delegation's delegate.
    #[error("account {0} is not the delegate")]
    NotTheDelegate(AccountId),
    /// The delegation is revoked, or the time is outside its period.
    #[error("delegation {0} is not active")]
    DelegationInactive(DelegationId),
    /// The delegation is already revoked.
    #[error("delegation {0} is already revoked")]
    DelegationAlreadyRevoked(DelegationId),
    /// A delegate tried to grant more than its delegation allows.
    #[error("the grant's {what} is wider than delegation {delegation} allows")]
    Widens {
        /// The delegation.
        delegation: DelegationId,
        /// What is wider (scope, actions, purposes, period, relationship).
        what: &'static str,
    },
    /// A period does not have `start < end`.
    #[error("invalid period [{start}, {end})")]
    InvalidPeriod {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// The period is already over at the block's time.
    #[error("the period ended at {end}, before the block's time {now}")]
    PeriodOver {
        /// The period's end.
        end: u64,
        /// The block's time.
        now: u64,
    },
    /// A set that must not be empty is.
    #[error("the {0} must not be empty")]
    Empty(&'static str),
    /// A list holds the same entry twice.
    #[error("the {0} list holds an entry twice")]
    Duplicate(&'static str),
    /// A list that must be in ascending order is not.
    #[error("the {0} list is not in ascending order")]
    NotInOrder(&'static str),
    /// A provision is malformed.
    #[error("provision {index}: {why}")]
    InvalidProvision {
        /// Its position.
        index: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// The group does not belong to the patient.
    #[error("group {0} belongs to another patient")]
    NotGroupOwner(GroupId),
    /// No such break-glass session.
    #[error("unknown break-glass session {0}")]
    UnknownSession(BreakGlassId),
    /// Break-glass duration out of bounds.
    #[error("break-glass duration {secs} s is not in 1..={max}")]
    BreakGlassDuration {
        /// The duration asked.
        secs: u64,
        /// [`MAX_BREAK_GLASS_SECS`].
        max: u64,
    },
    /// The provider already has an open session for the patient.
    #[error("break-glass session {0} is still open")]
    BreakGlassAlreadyOpen(BreakGlassId),
    /// The session is already closed.
    #[error("break-glass session {0} is already closed")]
    SessionClosed(BreakGlassId),
    /// The session is already reviewed.
    #[error("break-glass session {0} is already reviewed")]
    AlreadyReviewed(BreakGlassId),
    /// The account did not open the session.
    #[error("account {0} did not open the session")]
    NotTheOpener(AccountId),
    /// An access receipt was refused: the permission it claims does not hold.
    #[error("the permission does not hold: {0}")]
    Denied(DenyReason),
    /// A bounded list in the state is full.
    #[error("limit reached: at most {max} {what}")]
    LimitReached {
        /// What is full.
        what: &'static str,
        /// The limit.
        max: u64,
    },
}

// ---------------------------------------------------------------------------------------------
// Events

/// A change of the access-control state, for embedders to notify users; the ones concerning a
/// patient are also appended to that patient's [audit trail](AuditEntry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AccessEvent {
    /// An account registered.
    Registered {
        /// The account.
        account: AccountId,
        /// Its role.
        role: Role,
    },
    /// An account's key was rotated.
    KeyRotated {
        /// The account.
        account: AccountId,
        /// The retired key.
        old: PublicKey,
        /// The new key.
        new: PublicKey,
    },
    /// A provider was certified (or its certification changed).
    ProviderCertified {
        /// The provider.
        provider: AccountId,
        /// The authority.
        by: AccountId,
        /// Whether it may break glass.
        emergency: bool,
    },
    /// A provider's certification was withdrawn.
    ProviderDecertified {
        /// The provider.
        provider: AccountId,
        /// The authority.
        by: AccountId,
        /// Why.
        reason: Reason,
    },
    /// A provider opened a relationship: pending for the patient.
    RelationshipProposed {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
        /// The provider.
        provider: AccountId,
    },
    /// The patient accepted.
    RelationshipAccepted {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
    },
    /// The patient rejected.
    RelationshipRejected {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
        /// Why.
        reason: Reason,
    },
    /// A party ended the relationship.
    RelationshipTerminated {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
        /// The party that ended it.
        by: AccountId,
        /// Why.
        reason: Reason,
    },
    /// The provider added a record pointer.
    PointerAdded {
        /// The relationship.
        relationship: RelationshipId,
        /// The patient.
        patient: AccountId,
        /// The pointer.
        pointer: PointerId,
        /// The pointer it is a new version of.
        replaces: Option<PointerId>,
    },
    /// The patient created a group.
    GroupCreated {
        /// The patient.
        patient: AccountId,
        /// The group.
        group: GroupId,
    },
    /// A member joined a group.
    GroupMemberAdded {
        /// The patient.
        patient: AccountId,
        /// The group.
        group: GroupId,
        /// The member.
        member: AccountId,
    },
    /// A member left a group.
    GroupMemberRemoved {
        /// The patient.
        patient: AccountId,
        /// The group.
        group: GroupId,
        /// The member.
        member: AccountId,
    },
    /// A grant was made.
    GrantCreated {
        /// The patient.
        patient: AccountId,
        /// The grant.
        grant: GrantId,
        /// Its viewer.
        viewer: Viewer,
        /// Who made it: the patient or a delegate.
        by: AccountId,
        /// The delegation it was made under.
        under: Option<DelegationId>,
    },
    /// A grant was revoked.
    GrantRevoked {
        /// The patient.
        patient: AccountId,
        /// The grant.
        grant: GrantId,
        /// Who revoked it (for a cascade, who caused it).
        by: AccountId,
        /// Why it was revoked.
        cause: RevocationCause,
    },
    /// The patient delegated consent management.
    DelegationCreated {
        /// The patient.
        patient: AccountId,
        /// The delegation.
        delegation: DelegationId,
        /// The delegate.
        delegate: AccountId,
    },
    /// A delegation was revoked, and the grants made under it with it.
    DelegationRevoked {
        /// The patient.
        patient: AccountId,
        /// The delegation.
        delegation: DelegationId,
        /// Who revoked it.
        by: AccountId,
        /// How many grants were revoked with it.
        cascaded: u32,
    },
    /// A provider broke the glass.
    BreakGlassOpened {
        /// The patient.
        patient: AccountId,
        /// The session.
        session: BreakGlassId,
        /// The provider.
        provider: AccountId,
        /// When the session expires by itself.
        expires_at: u64,
    },
    /// A break-glass session was closed early.
    BreakGlassClosed {
        /// The patient.
        patient: AccountId,
        /// The session.
        session: BreakGlassId,
    },
    /// The patient reviewed a break-glass session.
    BreakGlassReviewed {
        /// The patient.
        patient: AccountId,
        /// The session.
        session: BreakGlassId,
        /// The verdict.
        outcome: ReviewOutcome,
    },
    /// A viewer accessed a record (an access receipt).
    Accessed {
        /// The patient.
        patient: AccountId,
        /// The viewer.
        viewer: AccountId,
        /// The record.
        pointer: PointerId,
        /// What the viewer did.
        action: Action,
        /// Why.
        purpose: PurposeOfUse,
        /// What permitted it.
        basis: Basis,
    },
    /// A custodian released research data under pseudonyms (no patient is named: the event
    /// goes to no patient's audit trail).
    ResearchDataReleased {
        /// The release.
        release: ReleaseId,
        /// The provider that released the data.
        custodian: AccountId,
        /// The researcher that received it.
        recipient: AccountId,
        /// The research window of the pseudonyms.
        epoch: Epoch,
        /// The content hash of the data set.
        dataset: Digest,
        /// How many subjects it holds.
        subjects: u32,
    },
}

// ---------------------------------------------------------------------------------------------
// State

/// Tag of the registrar's account table.
pub const ACCOUNTS_TABLE: &str = "access.accounts";
/// Tag of the identity → account table.
pub const IDENTITIES_TABLE: &str = "access.identities";
/// Tag of the key-history table.
pub const KEY_HISTORY_TABLE: &str = "access.key-history";
/// Tag of the certification table.
pub const CERTIFICATIONS_TABLE: &str = "access.certifications";
/// Tag of the relationship table.
pub const RELATIONSHIPS_TABLE: &str = "access.relationships";
/// Tag of the pointer table.
pub const POINTERS_TABLE: &str = "access.pointers";
/// Tag of the grant table: a grant's record never changes once made (see [`GrantProof`]).
pub const GRANTS_TABLE: &str = "access.grants";
/// Tag of the revocation table (keyed by grant id; written once).
pub const REVOCATIONS_TABLE: &str = "access.revocations";
/// Tag of the group table.
pub const GROUPS_TABLE: &str = "access.groups";
/// Tag of the delegation table.
pub const DELEGATIONS_TABLE: &str = "access.delegations";
/// Tag of the break-glass session table.
pub const BREAK_GLASS_TABLE: &str = "access.break-glass";
/// Tag of the audit table (keyed by patient and sequence number).
pub const AUDIT_TABLE: &str = "access.audit";
/// Tag of the research release table (keyed by [`ReleaseId`]; written once).
pub const RELEASES_TABLE: &str = "access.releases";

/// Per-account counters of the append-only lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) relationships: u32,
    pub(crate) groups: u32,
    pub(crate) break_glass: u32,
    pub(crate) audit: u64,
}

/// A grant as seen from the viewer index: a copy of its terms, so that `decide` reads the
/// index entry and the pointer and nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexedGrant {
    pub(crate) grant: GrantId,
    /// Position in the relationship's grant list (creation order).
    pub(crate) seq: u32,
    /// Height of its revocation.
    pub(crate) revoked: Option<u64>,
    /// The grant's (normalised) terms, as in its record.
    pub(crate) terms: GrantTerms,
}

/// A viewer's grants from one patient, in creation order: the first inline (most viewers
/// hold one, and `decide` then reads no further memory), the others on the heap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GrantList {
    first: Option<IndexedGrant>,
    rest: Vec<IndexedGrant>,
}

impl GrantList {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &IndexedGrant> {
        self.first.iter().chain(&self.rest)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut IndexedGrant> {
        self.first.iter_mut().chain(&mut self.rest)
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub(crate) fn push(&mut self, grant: IndexedGrant) {
        match self.first {
            None => self.first = Some(grant),
            Some(_) => self.rest.push(grant),
        }
    }

    /// Keeps the grants for which `keep` holds, in order.
    pub(crate) fn retain(&mut self, keep: impl Fn(&IndexedGrant) -> bool) {
        let rest = core::mem::take(&mut self.rest);
        let mut kept = self
            .first
            .take()
            .into_iter()
            .chain(rest)
            .filter(|g| keep(g))
            .collect::<Vec<_>>()
            .into_iter();
        self.first = kept.next();
        self.rest = kept.collect();
    }
}

/// What the decision needs about a (patient, viewer) pair, in one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ViewerIndex {
    /// Grants to this viewer, in creation order (revoked and expired ones are pruned when the
    /// list is full).
    pub(crate) grants: GrantList,
    /// Groups of the patient the viewer (an account) was ever a member of.
    pub(crate) groups: Vec<GroupId>,
    /// The viewer's latest break-glass session for the patient.
    pub(crate) break_glass: Option<BreakGlassId>,
}

/// The access-control part of the ledger state: every table is committed in the state root.
pub struct AccessState {
    pub(crate) accounts: Table<AccountId, AccountRecord>,
    pub(crate) identities: Table<Identity, AccountId>,
    pub(crate) key_history: Table<(AccountId, u32), PublicKey>,
    pub(crate) certifications: Table<AccountId, Certification>,
    pub(crate) relationships: Table<RelationshipId, Relationship>,
    pub(crate) pointers: Table<PointerId, Pointer>,
    pub(crate) relationship_pointers: Table<(RelationshipId, u32), PointerId>,
    pub(crate) relationship_grants: Table<(RelationshipId, u32), GrantId>,
    pub(crate) summaries: Table<(AccountId, u32), RelationshipId>,
    pub(crate) counters: Table<AccountId, Counters>,
    pub(crate) grants: Table<GrantId, Grant>,
    pub(crate) revocations: Table<GrantId, Revocation>,
    pub(crate) viewer_index: Table<(AccountId, Viewer), ViewerIndex>,
    pub(crate) groups: Table<GroupId, Group>,
    pub(crate) memberships: Table<(GroupId, AccountId), Membership>,
    pub(crate) group_members: Table<(GroupId, u32), AccountId>,
    pub(crate) delegations: Table<DelegationId, Delegation>,
    pub(crate) delegation_grants: Table<(DelegationId, u32), GrantId>,
    pub(crate) break_glass: Table<BreakGlassId, BreakGlass>,
    pub(crate) patient_break_glass: Table<(AccountId, u32), BreakGlassId>,
    pub(crate) audit: Table<(AccountId, u64), AuditEntry>,
    pub(crate) releases: Table<ReleaseId, Release>,
    pub(crate) recipient_releases: Table<(AccountId, u32), ReleaseId>,
    pub(crate) release_counts: Table<AccountId, u32>,
}

impl fmt::Debug for AccessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessState").finish_non_exhaustive()
    }
}

impl Default for AccessState {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessState {
    /// The empty access state.
    pub fn new() -> Self {
        Self {
            accounts: Table::new(ACCOUNTS_TABLE),
            identities: Table::new(IDENTITIES_TABLE),
            key_history: Table::new(KEY_HISTORY_TABLE),
            certifications: Table::new(CERTIFICATIONS_TABLE),
            relationships: Table::new(RELATIONSHIPS_TABLE),
            pointers: Table::new(POINTERS_TABLE),
            relationship_pointers: Table::new("access.relationship-pointers"),
            relationship_grants: Table::new("access.relationship-grants"),
            summaries: Table::new("access.summaries"),
            counters: Table::new("access.counters"),
            grants: Table::new(GRANTS_TABLE),
            revocations: Table::new(REVOCATIONS_TABLE),
            viewer_index: Table::new("access.viewer-index"),
            groups: Table::new(GROUPS_TABLE),
            memberships: Table::new("access.memberships"),
            group_members: Table::new("access.group-members"),
            delegations: Table::new(DELEGATIONS_TABLE),
            delegation_grants: Table::new("access.delegation-grants"),
            break_glass: Table::new(BREAK_GLASS_TABLE),
            patient_break_glass: Table::new("access.patient-break-glass"),
            audit: Table::new(AUDIT_TABLE),
            releases: Table::new(RELEASES_TABLE),
            recipient_releases: Table::new("access.recipient-releases"),
            release_counts: Table::new("access.release-counts"),
        }
    }

    /// Adds every table to `out` (for block application).
    pub(crate) fn tables_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn TableOps>) {
        out.extend([
            &mut self.accounts as &mut dyn TableOps,
            &mut self.identities,
            &mut self.key_history,
            &mut self.certifications,
            &mut self.relationships,
            &mut self.pointers,
            &mut self.relationship_pointers,
            &mut self.relationship_grants,
            &mut self.summaries,
            &mut self.counters,
            &mut self.grants,
            &mut self.revocations,
            &mut self.viewer_index,
            &mut self.groups,
            &mut self.memberships,
            &mut self.group_members,
            &mut self.delegations,
            &mut self.delegation_grants,
            &mut self.break_glass,
            &mut self.patient_break_glass,
            &mut self.audit,
            &mut self.releases,
            &mut self.recipient_releases,
            &mut self.release_counts,
        ]);
    }

    /// Adds every table to `out` (for computing a block's leaf updates).
    pub(crate) fn tables<'a>(&'a self, out: &mut Vec<&'a dyn TableOps>) {
        out.extend([
            &self.accounts as &dyn TableOps,
            &self.identities,
            &self.key_history,
            &self.certifications,
            &self.relationships,
            &self.pointers,
            &self.relationship_pointers,
            &self.relationship_grants,
            &self.summaries,
            &self.counters,
            &self.grants,
            &self.revocations,
            &self.viewer_index,
            &self.groups,
            &self.memberships,
            &self.group_members,
            &self.delegations,
            &self.delegation_grants,
            &self.break_glass,
            &self.patient_break_glass,
            &self.audit,
            &self.releases,
            &self.recipient_releases,
            &self.release_counts,
        ]);
    }

    pub(crate) fn counters(&self, account: &AccountId) -> Counters {
        self.counters.get(account).copied().unwrap_or_default()
    }

    /// Applies `op`, signed by `cx.account`, at `cx`'s height and time. The caller rolls the
    /// tables back if it fails.
    pub(crate) fn apply(
        &mut self,
        op: &AccessOp,
        cx: &TxContext,
        keys: &mut Table<PublicKey, KeyState>,
        accounts: &mut Table<AccountId, AccountState>,
    ) -> Result<Vec<AccessEvent>, AccessError> {
        let mut x = Exec {
            s: self,
            cx,
            events: Vec::new(),
        };
        match op {
            AccessOp::Register { role, identity } => x.register(*role, identity, keys)?,
            AccessOp::RotateKey {
                new_key,
                possession,
            } => x.rotate_key(*new_key, possession, keys, accounts)?,
            AccessOp::CertifyProvider {
                provider,
                emergency,
            } => x.certify(*provider, *emergency)?,
            AccessOp::DecertifyProvider { provider, reason } => x.decertify(*provider, reason)?,
            AccessOp::CreateRelationship { patient } => x.create_relationship(*patient)?,
            AccessOp::AcceptRelationship { relationship } => {
                x.answer_relationship(*relationship, None)?
            }
            AccessOp::RejectRelationship {
                relationship,
                reason,
            } => x.answer_relationship(*relationship, Some(reason))?,
            AccessOp::TerminateRelationship {
                relationship,
                reason,
            } => x.terminate_relationship(*relationship, reason)?,
            AccessOp::AddPointer {
                relationship,
                record,
                replaces,
            } => x.add_pointer(*relationship, record, *replaces)?,
            AccessOp::CreateGroup { label } => x.create_group(label)?,
            AccessOp::AddGroupMember { group, member } => x.add_member(*group, *member)?,
            AccessOp::RemoveGroupMember { group, member } => x.remove_member(*group, *member)?,
            AccessOp::Grant { terms, under } => x.grant(terms, *under)?,
            AccessOp::RevokeGrant { grant, reason } => x.revoke_grant(*grant, reason)?,
            AccessOp::Delegate { delegate, terms } => x.delegate(*delegate, terms)?,
            AccessOp::RevokeDelegation { delegation, reason } => {
                x.revoke_delegation(*delegation, reason)?
            }
            AccessOp::OpenBreakGlass {
                patient,
                reason,
                duration_secs,
            } => x.open_break_glass(*patient, reason, *duration_secs)?,
            AccessOp::CloseBreakGlass { session } => x.close_break_glass(*session)?,
            AccessOp::ReviewBreakGlass {
                session,
                outcome,
                note,
            } => x.review_break_glass(*session, *outcome, note.as_ref())?,
            AccessOp::RecordAccess {
                patient,
                pointer,
                action,
                purpose,
                basis,
            } => x.record_access(*patient, *pointer, *action, *purpose, *basis)?,
            AccessOp::ReleaseResearchData {
                recipient,
                epoch,
                dataset,
                subjects,
            } => x.release_research_data(*recipient, *epoch, *dataset, subjects)?,
        }
        Ok(x.events)
    }
}

/// One operation being applied: the state, the transaction's context, the events so far.
struct Exec<'a> {
    s: &'a mut AccessState,
    cx: &'a TxContext,
    events: Vec<AccessEvent>,
}

impl Exec<'_> {
    fn stamp(&self) -> Stamp {
        Stamp {
            height: self.cx.height,
            time: self.cx.time,
        }
    }

    fn actor(&self) -> AccountId {
        self.cx.account
    }

    /// Records `event`, and appends it to `patient`'s audit trail.
    fn emit(&mut self, patient: Option<AccountId>, event: AccessEvent) {
        if let Some(patient) = patient {
            let mut c = self.s.counters(&patient);
            let seq = c.audit;
            c.audit += 1;
            self.s.counters.insert(patient, c);
            self.s.audit.insert(
                (patient, seq),
                AuditEntry {
                    seq,
                    at: self.stamp(),
                    tx: self.cx.tx_id,
                    actor: self.cx.account,
                    event: event.clone(),
                },
            );
        }
        self.events.push(event);
    }

    /// The registered record of `account`.
    fn registered(&self, account: AccountId) -> Result<&AccountRecord, AccessError> {
        self.s
            .accounts
            .get(&account)
            .ok_or(AccessError::NotRegistered(account))
    }

    /// Checks `account` is registered with `role`.
    fn require_role(&self, account: AccountId, role: Role) -> Result<(), AccessError> {
        let found = self.registered(account)?.role;
        if found != role {
            return Err(AccessError::WrongRole {
                account,
                expected: role,
                found,
            });
        }
        Ok(())
    }
}

/// Writes the genesis authorities (registered, with their keys) into a fresh state.
pub(crate) fn genesis(
    access: &mut AccessState,
    keys: &mut Table<PublicKey, KeyState>,
    accounts: &mut Table<AccountId, AccountState>,
    authorities: &[(Name, PublicKey)],
    time: u64,
) {
    let at = Stamp { height: 0, time };
    for (name, key) in authorities {
        let account = key.account();
        let identity = Identity::Organisation(name.clone());
        access.accounts.insert(
            account,
            AccountRecord {
                role: Role::Authority,
                identity: identity.clone(),
                registered: at,
                keys: 1,
            },
        );
        access.identities.insert(identity, account);
        access.key_history.insert((account, 0), *key);
        keys.insert(
            *key,
            KeyState {
                account,
                since: 0,
                retired_at: None,
            },
        );
        accounts.insert(
            account,
            AccountState {
                next_nonce: 0,
                key: *key,
            },
        );
    }
}

#[cfg(test)]
mod tests;
