//! medledger: an embeddable ledger for medical records.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
pub mod hash;
pub mod pseudonym;
pub mod purpose;
