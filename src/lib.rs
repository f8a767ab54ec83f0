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
//! # Modules
//!
//! * Foundation: [`hash`] (ids, domains), [`codec`] (canonical bounded encoding), [`tx`]
//!   (signed transactions), [`merkle`] (transaction root, proofs), [`block`], [`smt`] (the
//!   authenticated state tree), [`state`], [`chain`] (validation, fork choice, replay),
//!   [`store`] (persistence trait, in-memory store), [`file_store`] (crash-safe append-only
//!   file store).
//! * For embedders: [`ledger`] — one object per process with the chain, a mempool that checks
//!   each transaction against the state and the pending ones, block production with valid
//!   times, per-transaction outcomes and created ids, statuses and event subscription.
//! * Consensus: the [`consensus::Consensus`] trait (stateless seal checks), the
//!   [`consensus::protocol`] interface engines that exchange messages implement, [`pow`]
//!   (Bitcoin-exact Proof-of-Work), [`committee`], and `tendermint` (feature).
//! * Access control: [`access`] (MedRec's registrar, relationships and summaries; consent
//!   grants, delegation, break-glass, explainable decisions, access receipts, the audit trail
//!   and light-client grant proofs), with purposes of use from [`purpose`].
//!
//! # Features
//!
//! * `parallel` (default): rayon for batch signature verification, Merkle and state-tree
//!   hashing and mining. Without it every computation runs serially, with identical results.
//! * `tendermint`: the `tendermint` module, BFT consensus for consortia of known validators on
//!   Malachite's sans-I/O core.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod app;
pub mod block;
pub mod chain;
pub mod codec;
pub mod committee;
pub mod consensus;
pub mod file_store;
pub mod hash;
pub mod ledger;
pub mod merkle;
pub mod pow;
pub mod pseudonym;
pub mod purpose;
pub mod sim;
pub mod smt;
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
