//! medledger: an embeddable ledger for medical records.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod block;
pub mod chain;
pub mod codec;
pub mod consensus;
pub mod file_store;
pub mod hash;
pub mod merkle;
pub mod pow;
pub mod smt;
pub mod state;
pub mod store;
pub mod tx;
