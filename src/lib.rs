//! medledger: an embeddable ledger for medical records, after the MedRec design.
//!
//! Patients control who may read the records that providers keep in their own databases.
//! Records stay off-chain; the chain holds identities, record pointers and content hashes,
//! permissions, and an audit trail. The crate is a library: networking and storage stay with the
//! embedding application, behind small traits ([`consensus::Consensus`], [`store::Store`]).
//!
//! ```
//! use medledger::hash::content_hash;
//! use medledger::pow::ProofOfWork;
//! use medledger::tx::Keypair;
//! use medledger::{ChainBuilder, Ledger, Payload};
//!
//! // A chain with Proof-of-Work at a trivial target, on the in-memory store, and the ledger
//! // that keeps its mempool and produces its blocks.
//! let chain = ChainBuilder::new("my-hospital-network", ProofOfWork::regtest())
//!     .genesis_time(1_700_000_000)
//!     .build()?;
//! let mut ledger = Ledger::new(chain)?;
//! // A provider anchors the content hash of a record it keeps in its own database.
//! let provider = Keypair::generate();
//! let record = content_hash(b"lab result #1");
//! ledger.sign_and_submit(&provider, Payload::Data { record })?;
//! let produced = ledger.produce_block()?;
//! assert_eq!(ledger.chain().height(), 1);
//! assert_eq!(produced.report.txs.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Start here
//!
//! An EMR vendor's first decision, from keys to a permit with its receipt on chain. Everything
//! below comes from [`prelude`]; the `emr` example does the same on a file store across
//! restarts, with keys kept in files.
//!
//! ```
//! use medledger::prelude::*;
//!
//! // 1. Keys: one per actor. Keep them across restarts with `Keypair::to_secret_bytes` in a
//! //    file only their owner can read, and `Keypair::from_secret_bytes`.
//! let authority = Keypair::generate(); // certifies providers; named in the genesis
//! let (hospital, patient, specialist) = (Keypair::generate(), Keypair::generate(), Keypair::generate());
//!
//! // 2. The ledger: a chain (here Proof-of-Work at a trivial target, in memory) and its mempool.
//! let chain = ChainBuilder::new("my-hospital-network", ProofOfWork::regtest())
//!     .authority("Regional Health Authority", authority.public())
//!     .build()?;
//! let mut ledger = Ledger::new(chain)?;
//!
//! // 3. Everyone registers; the authority certifies the hospital; the hospital opens a
//! //    relationship with the patient, who accepts it. Each operation is checked as it is
//! //    submitted and refused with the chain's own reason if it would fail.
//! let salt = [7; 32]; // the patient's secret; the chain sees only a salted commitment
//! let rel = RelationshipId::of(patient.account(), hospital.account());
//! for (key, op) in [
//!     (&authority, AccessOp::CertifyProvider { provider: hospital.account(), emergency: false }),
//!     (&hospital, AccessOp::register_organisation(Role::Provider, "St Mary's")?),
//!     (&specialist, AccessOp::register_organisation(Role::Provider, "Dr Okafor")?),
//!     (&patient, AccessOp::register_patient(patient.account(), "NHS-485-777", &salt)),
//!     (&hospital, AccessOp::CreateRelationship { patient: patient.account() }),
//!     (&patient, AccessOp::AcceptRelationship { relationship: rel }),
//! ] {
//!     ledger.sign_and_submit(key, op)?;
//! }
//! ledger.produce_block()?;
//!
//! // 4. The hospital anchors a record it keeps in its own database: a query and its hash.
//! let now = ledger.next_block_time();
//! let record = RecordPointer {
//!     query: "SELECT * FROM lab WHERE id = 1".try_into()?,
//!     content_hash: content_hash(b"potassium 4.1 mmol/L"),
//!     category: Category::Laboratory,
//!     data_period: Period::lasting(now - 86_400, 86_400),
//! };
//! let added = ledger.sign_and_submit(&hospital, AccessOp::AddPointer { relationship: rel, record, replaces: None })?;
//! let pointer = added.created[0].pointer().expect("a record pointer");
//!
//! // 5. The patient grants the specialist 30 days of reading it for treatment.
//! let terms = GrantTerms::new(
//!     rel,
//!     Viewer::Account(specialist.account()),
//!     Scope::All,
//!     ActionSet::of(&[Action::Read]),
//!     PurposeSet::of(&[PurposeOfUse::Treatment]),
//!     Period::lasting(now, 30 * 86_400),
//! );
//! ledger.sign_and_submit(&patient, AccessOp::Grant { terms, under: None })?;
//! ledger.produce_block()?;
//!
//! // 6. The specialist asks; the hospital's gatekeeper decides and the read leaves a receipt.
//! let ask = AccessRequest::new(
//!     specialist.account(),
//!     patient.account(),
//!     pointer,
//!     Action::Read,
//!     PurposeOfUse::Treatment,
//!     ledger.next_block_time(),
//! );
//! let decision = ledger.chain().decide(&ask);
//! let basis = decision.basis().expect("the grant permits the read");
//! ledger.sign_and_submit(&specialist, AccessOp::record_access(&ask, basis))?;
//! ledger.produce_block()?;
//! assert_eq!(ledger.chain().access().audit_trail(&patient.account()).len(), 6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//!
//! * Foundation: [`hash`] (ids, domains), [`codec`] (canonical bounded encoding), [`tx`]
//!   (signed transactions), [`merkle`] (transaction root, proofs), [`block`], [`smt`] (the
//!   authenticated state tree), [`state`], [`chain`] (validation, fork choice, replay),
//!   [`store`] (persistence trait, in-memory store), [`file_store`] (crash-safe append-only
//!   file store), `sqlite_store` (the ledger in a SQLite database; feature `sqlite`).
//! * For embedders: [`ledger`] — one object per process with the chain, a mempool that checks
//!   each transaction against the state and the pending ones, block production with valid
//!   times, per-transaction outcomes and created ids, statuses and event subscription.
//! * Consensus: the [`consensus::Consensus`] trait (stateless seal checks), the
//!   [`consensus::protocol`] interface engines that exchange messages implement, [`pow`]
//!   (Bitcoin-exact Proof-of-Work), [`committee`], and `tendermint` (feature).
//! * Access control: [`access`] (MedRec's registrar, relationships and summaries; consent
//!   grants, delegation, break-glass, explainable decisions, access receipts, the audit trail
//!   and light-client grant proofs), with purposes of use from [`purpose`]; research studies,
//!   their privacy budgets and queries governed on chain ([`access::study`]), answered by the
//!   `research` module (feature `research-queries`); `fhir` (feature) writes grants as HL7 FHIR
//!   R5 Consents and receipts as AuditEvents, and imports Consents.
//!
//! # Features
//!
//! * `parallel` (default): rayon for batch signature verification, Merkle and state-tree
//!   hashing and mining. Without it every computation runs serially, with identical results.
//! * `tendermint`: the `tendermint` module, BFT consensus for consortia of known validators on
//!   Malachite's sans-I/O core.
//! * `lab` (default): research tools an EMR build can leave out: the committee simulator
//!   (`sim`), the pseudonym linkage experiment (`pseudonym::linkage`) and committee failure
//!   probabilities (`committee::failure_probability` and its helpers).
//! * `sqlite`: `sqlite_store::SqliteStore`, a [`store::Store`] in a SQLite database beside the
//!   application's own tables. SQLite is compiled in (no system library), which needs a C
//!   compiler.
//! * `research-queries`: the `research` module, statistical research queries answered by Prio3
//!   secret-shared aggregation with differential privacy (`prio`), input shares encrypted to
//!   the aggregators with HPKE (`hpke`).
//! * `fhir`: the `fhir` module, grants as HL7 FHIR R5 `Consent` resources and access receipts
//!   as `AuditEvent`s (JSON), and FHIR Consents imported as grants or refused with the reason,
//!   on the `fhir-model` crate's R5 types.
//! * `redb`: `state::disk`, the state's tables in a redb database with a bounded cache of
//!   decoded values in front, committed atomically with each block (select it with
//!   [`chain::ChainBuilder::state_backend`]); the memory backend stays the default.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod app;
pub mod block;
pub mod chain;
pub mod codec;
pub mod committee;
pub mod consensus;
#[cfg(feature = "fhir")]
pub mod fhir;
pub mod file_store;
pub mod hash;
pub mod ledger;
pub mod merkle;
pub mod pow;
pub mod prelude;
pub mod pseudonym;
pub mod purpose;
#[cfg(feature = "research-queries")]
pub mod research;
#[cfg(feature = "lab")]
pub mod sim;
pub mod smt;
#[cfg(feature = "sqlite")]
pub mod sqlite_store;
pub mod state;
pub mod store;
#[cfg(feature = "tendermint")]
pub mod tendermint;
pub mod tx;
mod u256;

pub use access::{AccessError, AccessState, Event, MedRec, Payload};

/// A MedRec transaction: [`tx::Transaction`] carrying a [`Payload`].
pub type Transaction = tx::Transaction<Payload>;
/// A MedRec transaction whose signature was checked.
pub type VerifiedTx = tx::VerifiedTx<Payload>;
/// A block of MedRec transactions sealed by an engine's `S`.
pub type Block<S> = block::Block<S, Payload>;
/// A MedRec block whose structure and signatures were checked.
pub type CheckedBlock<S> = block::CheckedBlock<S, Payload>;
/// A chain running MedRec under the consensus engine `C`.
pub type Chain<C> = chain::Chain<C, MedRec>;
/// Builds a [`Chain`]; add health authorities with
/// [`authority`](chain::ChainBuilder::authority).
pub type ChainBuilder<C> = chain::ChainBuilder<C, MedRec>;
/// Why a MedRec chain refused a block or an operation.
pub type ChainError = chain::ChainError<AccessError>;
/// Why a MedRec transaction cannot be applied to the current state.
pub type StateError = state::StateError<AccessError>;
/// A MedRec transaction that failed while executing a block.
pub type TxFailure = state::TxFailure<AccessError>;
/// The MedRec ledger state: the core's tables and the access-control tables.
pub type State = state::State<AccessState>;
/// What a MedRec chain's append did to the main chain.
pub type Appended = chain::Appended<Event>;
/// One block applied to a MedRec main chain, with its events.
pub type AppliedBlock = chain::AppliedBlock<Event>;
/// A MedRec block ready to be sealed.
pub type BlockTemplate = chain::BlockTemplate<Payload, AccessError>;
/// The embedder's ledger over a MedRec chain run by the engine `C`.
pub type Ledger<C> = ledger::Ledger<C, MedRec>;
/// Builds a [`Ledger`].
pub type LedgerBuilder<C> = ledger::LedgerBuilder<C, MedRec>;
/// Why a MedRec ledger could not build, produce or append a block.
pub type LedgerError = ledger::LedgerError<MedRec>;
/// Why a MedRec ledger refused a transaction.
pub type Refusal = ledger::Refusal<MedRec>;
/// Where a transaction submitted to a MedRec ledger stands.
pub type TxStatus = ledger::TxStatus<MedRec>;
/// What a MedRec ledger tells its subscribers.
pub type LedgerEvent = ledger::LedgerEvent<MedRec>;
/// A transaction a MedRec ledger accepted, with its events and the objects it creates.
pub type Accepted = ledger::Accepted<MedRec>;
/// What a main-chain block did, per transaction.
pub type BlockReport = ledger::BlockReport<MedRec>;
/// A block a MedRec ledger produced and appended, with its report.
pub type Produced<S> = ledger::Produced<S, MedRec>;
