//! Shared pieces of the measuring tools: the engine comparison run by both the scaling sweep and
//! the performance report.
#![deny(missing_docs)]

pub mod engines;
