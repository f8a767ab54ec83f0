//! Proof of work with Bitcoin-exact arithmetic.
//!
//! Everything consensus-relevant here reproduces Bitcoin Core bit for bit:
//!
//! * [`CompactTarget`] is the header's `nBits`; [`Target::from_compact`] and
//!   [`Target::to_compact`] are Core's `SetCompact` / `GetCompact`, including the negative and
//!   overflow cases;
//! * [`Target::is_met_by`] and [`check_proof_of_work`] are Core's `CheckProofOfWork`, with the
//!   hash from [`header_hash`] (SHA-256d over the 80-byte header) read as a little-endian number;
//! * [`Target::to_work`] is Core's `GetBlockProof`, and [`Work`] is the chain's fork-choice
//!   weight;
//! * [`next_target`] is Core's `CalculateNextWorkRequired`, driven by [`RetargetParams`];
//! * [`median_time_past`] and [`check_block_time`] are Core's timestamp rules.
//!
//! The 256-bit arithmetic is a small private fixed-width integer. No function here panics on
//! any input, and hashing, target checks and retargeting never allocate.
//!
//! [`Miner`] searches the nonce space of an 80-byte header. It hashes the first 64 bytes once
//! (the SHA-256 midstate) and then spends exactly two SHA-256 compressions per nonce. With the
//! `parallel` feature (on by default) [`Miner::search_parallel`] spreads the work over rayon's
//! thread pool; without it the same call runs serially and returns the same nonce.
//!
//! [`PowNode`] is a whole proof-of-work node as a sans-I/O [`Protocol`](crate::consensus::Protocol)
//! engine: it mines on its chain's tip with the transactions offered to it, announces what it
//! finds, checks and relays to its chain what it receives, and fetches blocks it missed.
//!
//! ```
//! use medledger::pow::{self, CompactTarget, Target, BITCOIN_GENESIS_HEADER};
//!
//! // The Bitcoin genesis block meets its own target.
//! let hash = pow::header_hash(&BITCOIN_GENESIS_HEADER);
//! let bits = CompactTarget::from_consensus(0x1d00ffff);
//! let target = Target::from_compact(bits)?;
//! assert!(target.is_met_by(&hash));
//! pow::check_proof_of_work(&hash, bits, Target::MAX)?;
//! assert_eq!(target.to_work().to_string(), format!("{:064x}", 0x1_0001_0001u64));
//! # Ok::<(), pow::Error>(())
//! ```

mod engine;
mod miner;
mod node;
mod retarget;
mod target;

pub use crate::consensus::Work;
pub use engine::{PowSeal, ProofOfWork};
pub use miner::Miner;
pub use node::{
    PowMessage, PowNode, PowNodeConfig, PowNodeError, PowTimer, MAX_LOCATOR, MAX_MESSAGE_LEN,
    MAX_SYNC_BLOCKS, MAX_SYNC_BYTES,
};
pub use retarget::{
    check_block_time, median_time_past, next_target, RetargetParams, RetargetParamsBuilder,
    MAX_FUTURE_BLOCK_TIME, MEDIAN_TIME_SPAN,
};
pub use target::{CompactTarget, Target};

/// The length of a Bitcoin-layout block header.
pub const HEADER_LEN: usize = 80;

/// Where the nonce sits in an 80-byte header: its last four bytes, little-endian.
pub const NONCE_OFFSET: usize = 76;

/// The Bitcoin mainnet genesis block header (block 0), as serialised on the wire.
///
/// Its [`header_hash`], byte-reversed for display, is
/// `000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f`.
pub const BITCOIN_GENESIS_HEADER: [u8; HEADER_LEN] = [
    // version 1
    0x01, 0x00, 0x00, 0x00, //
    // previous block hash: none
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // merkle root
    0x3b, 0xa3, 0xed, 0xfd, 0x7a, 0x7b, 0x12, 0xb2, 0x7a, 0xc7, 0x2c, 0x3e, 0x67, 0x76, 0x8f, 0x61,
    0x7f, 0xc8, 0x1b, 0xc3, 0x88, 0x8a, 0x51, 0x32, 0x3a, 0x9f, 0xb8, 0xaa, 0x4b, 0x1e, 0x5e, 0x4a,
    // time 1231006505
    0x29, 0xab, 0x5f, 0x49, //
    // bits 0x1d00ffff
    0xff, 0xff, 0x00, 0x1d, //
    // nonce 2083236893
    0x1d, 0xac, 0x2b, 0x7c,
];

/// Errors of the proof-of-work module.
///
/// Malformed compact targets, consensus rejections (hash above target, bad timestamps) and
/// invalid parameters are distinct variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The compact target has its sign bit set and a non-zero mantissa.
    #[error("compact target {0:#010x} is negative")]
    NegativeCompactTarget(CompactTarget),
    /// The compact target's value does not fit in 256 bits.
    #[error("compact target {0:#010x} overflows 256 bits")]
    CompactTargetOverflow(CompactTarget),
    /// The target is zero.
    #[error("compact target {0:#010x} is zero")]
    ZeroTarget(CompactTarget),
    /// The target is easier than the proof-of-work limit allows.
    #[error("target {bits:#010x} is above the proof-of-work limit {limit}")]
    TargetAboveLimit {
        /// The header's compact target.
        bits: CompactTarget,
        /// The limit.
        limit: Target,
    },
    /// The header hash does not meet the header's target.
    #[error("hash does not meet the target {bits:#010x}")]
    HashAboveTarget {
        /// The header's compact target.
        bits: CompactTarget,
    },
    /// The block time is not after the median time past.
    #[error("block time {time} is not after the median time past {median_time_past}")]
    TimeTooOld {
        /// The block time.
        time: u64,
        /// The median of the previous blocks' times.
        median_time_past: u64,
    },
    /// The block time is too far in the future.
    #[error("block time {time} is more than {max_drift} s ahead of the current time {now}")]
    TimeTooNew {
        /// The block time.
        time: u64,
        /// The current time.
        now: u64,
        /// The allowed drift in seconds.
        max_drift: u64,
    },
    /// Retarget parameters: the interval is zero.
    #[error("retarget interval must be at least one block")]
    ZeroInterval,
    /// Retarget parameters: the target timespan is zero.
    #[error("target timespan must be at least one second")]
    ZeroTimespan,
    /// Retarget parameters: the clamp factor is zero.
    #[error("retarget clamp factor must be at least one")]
    ZeroClampFactor,
    /// Retarget parameters: the target timespan divided by the clamp factor is zero, so a
    /// retarget could produce a zero target.
    #[error("target timespan {timespan} s is shorter than the clamp factor {factor}")]
    TimespanBelowClampFactor {
        /// The target timespan.
        timespan: u64,
        /// The clamp factor.
        factor: u64,
    },
    /// Retarget parameters: the proof-of-work limit is not a valid non-zero target.
    #[error("proof-of-work limit is invalid: {0}")]
    InvalidPowLimit(Box<Error>),
    /// Retarget parameters: a retarget from the limit could exceed 256 bits.
    #[error("retargeting the limit {limit:#010x} by up to {max_timespan} s overflows 256 bits")]
    RetargetOverflow {
        /// The proof-of-work limit.
        limit: CompactTarget,
        /// The longest timespan a retarget multiplies by.
        max_timespan: u64,
    },
}

/// Bitcoin's header hash: SHA-256d over the 80 header bytes, in the byte order computed
/// (Bitcoin tools display it reversed).
pub fn header_hash(header: &[u8; HEADER_LEN]) -> [u8; 32] {
    crate::hash::sha256d(header)
}

/// Bitcoin Core's `CheckProofOfWork`: the compact target must decode, be non-zero and not
/// exceed `pow_limit`, and `hash` (as from [`header_hash`]) must meet it.
///
/// # Errors
///
/// [`Error::NegativeCompactTarget`], [`Error::CompactTargetOverflow`], [`Error::ZeroTarget`] or
/// [`Error::TargetAboveLimit`] for a target the chain cannot carry, and
/// [`Error::HashAboveTarget`] when the hash does not meet it.
pub fn check_proof_of_work(
    hash: &[u8; 32],
    bits: CompactTarget,
    pow_limit: Target,
) -> Result<(), Error> {
    let target = Target::from_compact(bits)?;
    if target == Target::ZERO {
        return Err(Error::ZeroTarget(bits));
    }
    if target > pow_limit {
        return Err(Error::TargetAboveLimit {
            bits,
            limit: pow_limit,
        });
    }
    if !target.is_met_by(hash) {
        return Err(Error::HashAboveTarget { bits });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
