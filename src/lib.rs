//! medledger: an embeddable ledger for medical records, after the MedRec design.
//!
//! Patients control who may read the records that providers keep in their own databases.
//! Records stay off-chain; the chain holds identities, record pointers and content hashes,
//! permissions, and an audit trail. The crate is a library: networking and storage stay with the
//! embedding application, behind small traits ([`consensus::Consensus`], [`store::Store`]).
//!
//! ```
//! use medledger::ChainBuilder;
//! use medledger::hash::Digest;
//! use medledger::pow::ProofOfWork;
//! use medledger::tx::Keypair;
//! use medledger::{Payload, Transaction};
//!
//! // A chain with Proof-of-Work at a trivial target, on the in-memory store.
//! let mut chain = ChainBuilder::new("my-hospital-network", ProofOfWork::regtest())
//!     .genesis_time(1_700_000_000)
//!     .build()?;
//! // A provider anchors the hash of a record it keeps in its own database.
//! let provider = Keypair::generate();
//! let record = Digest::from_bytes(*blake3::hash(b"lab result #1").as_bytes());
//! let tx = Transaction::sign(&provider, chain.chain_id(), 0, Payload::Data { record });
//! let block = chain.mine(vec![tx], 1_700_000_600)?;
//! chain.append(block)?;
//! assert_eq!(chain.height(), 1);
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
