//! medledger: an embeddable ledger for medical records, after the MedRec design.
//!
//! Patients control who may read the records that providers keep in their own databases.
//! Records stay off-chain; the chain holds identities, record pointers and content hashes,
//! permissions, and an audit trail. The crate is a library: networking and storage stay with the
//! embedding application, behind small traits ([`consensus::Consensus`], [`store::Store`]).
//!
//! ```
//! use medledger::chain::ChainBuilder;
//! use medledger::hash::Digest;
//! use medledger::pow::ProofOfWork;
//! use medledger::tx::{Keypair, Payload, Transaction};
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
//!   file store), `sqlite_store` (the ledger in a SQLite database; feature `sqlite`).
//! * Consensus: the [`consensus::Consensus`] trait and [`pow`] (Bitcoin-exact Proof-of-Work).
//! * Access control: [`access`] (MedRec's registrar, relationships and summaries; consent
//!   grants, delegation, break-glass, explainable decisions, access receipts, the audit trail
//!   and light-client grant proofs), with purposes of use from [`purpose`].
//!
//! # Features
//!
//! * `parallel` (default): rayon for batch signature verification, Merkle and state-tree
//!   hashing and mining. Without it every computation runs serially, with identical results.
//! * `lab` (default): research tools an EMR build can leave out: the committee simulator
//!   (`sim`), the pseudonym linkage experiment (`pseudonym::linkage`) and committee failure
//!   probabilities (`committee::failure_probability` and its helpers).
//! * `sqlite`: `sqlite_store::SqliteStore`, a [`store::Store`] in a SQLite database beside the
//!   application's own tables. SQLite is compiled in (no system library), which needs a C
//!   compiler.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
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
#[cfg(feature = "lab")]
pub mod sim;
pub mod smt;
#[cfg(feature = "sqlite")]
pub mod sqlite_store;
pub mod state;
pub mod store;
pub mod tx;
