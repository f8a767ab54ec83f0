//! Access control after MedRec: registrar, relationships, summaries, grants, break-glass,
//! decisions and audit, as native state machines driven by signed transactions.
//!
//! A patient controls who may read the records that providers keep in their own databases.
//! Records stay off-chain; the chain holds identities, record pointers and their content hashes,
//! permissions and an audit trail of every read. Every operation is an [`AccessOp`] carried by a
//! signed transaction ([`Payload::Access`]), authorised by its
//! signer's role and relationship; a refused operation fails with an [`AccessError`] and changes
//! nothing. Every state change emits an [`AccessEvent`] and, when it concerns a patient, appends
//! it to that patient's append-only [audit trail](audit).
//!
//! | MedRec (2016) | here |
//! | --- | --- |
//! | Registrar Contract | [`registrar`]: roles, salted identity commitments bound to their account, key rotation with history, provider certification by genesis authorities |
//! | Patient–Provider Relationship | [`relationship`]: one per pair, pending until the patient answers, record pointers with versions, recorded termination |
//! | Summary Contract | [`summary`]: each account's relationships with their status, the patient's break-glass review queue |
//! | viewer permissions | [`grant`], [`group`], [`delegation`]: FHIR-Consent-style grants with nested provisions, groups, narrowing delegation |
//! | database gatekeeper | [`decision`]: explainable decisions, and access receipts the chain re-checks |
//! | (third-party reads, never logged) | [`research`]: research data releases under research-window pseudonyms, accountable to an auditor yet unlinkable on chain |
//!
//! ```
//! use medledger::access::*;
//! use medledger::ChainBuilder;
//! use medledger::pow::ProofOfWork;
//! use medledger::purpose::PurposeOfUse;
//! use medledger::tx::Keypair;
//! use medledger::{Payload, Transaction};
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
//! let provider = |s: &str| AccessOp::Register {
//!     role: Role::Provider,
//!     identity: Identity::Organisation(s.try_into().unwrap()),
//!     blinded: None,
//! };
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
//!     tx(&hospital, 0, provider("St Mary's")),
//!     tx(&doctor, 0, provider("Dr Lee")),
//!     tx(&patient, 0, AccessOp::register_patient(patient.account(), "NHS-943-476-5919", &[7; 32])),
//!     tx(&hospital, 1, AccessOp::CreateRelationship { patient: patient.account() }),
//!     add,
//!     tx(&patient, 1, AccessOp::AcceptRelationship { relationship: rel }),
//!     tx(&patient, 2, AccessOp::Grant { terms, under: None }),
//! ];
//! let block = chain.mine(txs, t0 + 600)?;
//! chain.append(block)?;
//! let read = |purpose| {
//!     chain.decide(&AccessRequest::new(doctor.account(), patient.account(), pointer, Action::Read, purpose, t0 + 700))
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
//! in Unix seconds. The chain refuses a block stamped earlier than its parent
//! ([`ChainError::TimestampBeforeParent`]), whatever its consensus engine allows, so time never
//! goes backwards on a branch: a grant that has expired or a break-glass session past its end
//! cannot be used again by back-dating a block, and the times in an audit trail never decrease.
//! Records keep the height and time they were created, answered, revoked or terminated at, so
//! queries can be asked "as of" a past height ([`AccessState::decide_as_of`]).
//!
//! # Limits a patient can meet
//!
//! What an operation has to read is bounded, and no one else's operations can use up what the
//! patient may do: grants made by delegates count against quotas of their own.
//! A *live* grant is one not revoked whose period has not ended at the block's time (one not
//! started yet is live); revoking a grant, or its expiry, makes room again.
//!
//! | limit | what it bounds |
//! | --- | --- |
//! | [`MAX_LIVE_GRANTS_PER_RELATIONSHIP`] | live grants the patient itself made on one relationship |
//! | [`MAX_LIVE_GRANTS_PER_VIEWER`] | live grants the patient itself made to one viewer (account or group) |
//! | [`MAX_GROUPS_PER_PATIENT`] | groups the patient creates, ever |
//! | [`MAX_GROUP_MEMBERS`] | distinct accounts ever added to one group |
//! | [`group::MAX_MEMBERSHIP_SPELLS`] | times one account joins the same group |
//!
//! Delegates, all together, hold at most [`MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP`] live
//! grants on a relationship and [`MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER`] to a viewer, and one
//! delegation makes at most [`MAX_GRANTS_PER_DELEGATION`] grants in all (a new delegation
//! starts afresh). However many grants were ever made on a relationship, by anyone, the
//! patient can grant as long as fewer than [`MAX_LIVE_GRANTS_PER_RELATIONSHIP`] of its own are
//! live; revoking a delegation revokes its grants, so it also frees the delegates' quotas.
//! Everything else a patient accumulates (relationships, break-glass sessions, the audit
//! trail, a relationship's grant history kept for "as of" queries) is an append-only history,
//! one entry per transaction, bounded only by its counter's width.
//!
//! [`ChainError::TimestampBeforeParent`]: crate::chain::ChainError::TimestampBeforeParent

mod app;
pub mod audit;
pub mod breakglass;
pub mod decision;
pub mod delegation;
pub mod display;
mod error;
mod event;
mod exec;
pub mod grant;
pub mod group;
mod ledger;
mod model;
mod op;
pub mod proof;
pub mod query;
pub mod registrar;
pub mod relationship;
pub mod research;
mod state;
pub mod study;
pub mod summary;

pub use error::{AccessError, RefusalKind};
pub use event::AccessEvent;
pub use model::*;
pub use op::{AccessOp, MAX_EVIDENCE_LEN, MAX_VALIDATOR_POWER};
pub use state::*;

pub use app::{bench_genesis, Event, Genesis, MedRec, Payload};
pub use audit::AuditEntry;
pub use breakglass::{
    BreakGlass, Review, ReviewOutcome, MAX_BREAK_GLASS_SECS, MAX_OPEN_SESSIONS_PER_PROVIDER,
};
pub use decision::{Basis, Decision, DenyReason};
pub use delegation::{Delegation, DelegationTerms, MAX_GRANTS_PER_DELEGATION};
pub(crate) use exec::{genesis, Exec};
pub use grant::{
    Grant, GrantTerms, Provision, ProvisionKind, Revocation, RevocationCause, Scope, Viewer,
    MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP, MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER,
    MAX_LIVE_GRANTS_PER_RELATIONSHIP, MAX_LIVE_GRANTS_PER_VIEWER, MAX_PROVISIONS,
    MAX_PROVISION_DEPTH, MAX_PROVISION_POINTERS, MAX_SCOPE_POINTERS,
};
pub use group::{Group, Membership, MAX_GROUPS_PER_PATIENT, MAX_GROUP_MEMBERS};
pub use ledger::Created;
pub use proof::{GrantProof, GrantProofError, GrantStatus};
pub use query::{Loss, Reader};
pub use registrar::{
    AccountRecord, BlindedIdentity, Certification, Identity, IdentityCommitment, Role,
};
pub use relationship::{
    Pointer, RecordPointer, Relationship, RelationshipStatus, Termination, MAX_QUERY_LEN,
};
pub use research::{
    prepare_release, prepare_release_with, research_context, ConsentCommitment, ConsentOpening,
    PreparedRelease, Release, ReleaseAuditError, ReleaseBuildError, ReleasedSubject,
    SubjectOpening, MAX_RELEASE_SUBJECTS,
};
pub use study::{
    prepare_study_release, AggregatorRef, Contribution, Epsilon, HpkePublicKey, Query, QueryKind,
    ReportNonce, SmallClass, Study, StudyRelease, DEFAULT_MIN_CLASS_SIZE, MAX_HISTOGRAM_BUCKETS,
    MAX_REPORTS_PER_COMMIT, MAX_SUM_BOUND, MAX_VECTOR_LEN,
};
pub use summary::{Side, SummaryItem};

#[cfg(test)]
pub(crate) mod tests;
