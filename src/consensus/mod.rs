//! The consensus trait: what an engine must decide for the chain.
//!
//! The [`Chain`](crate::chain::Chain) is generic over one [`Consensus`] engine. An engine owns the
//! seal type its blocks carry, checks a header's seal and its own rules against the branch the
//! header extends, and says how much [`Work`] the block adds to its branch; the chain follows the
//! branch with the most work, within what the engine says is final. Two engines ship in the crate — [`pow::ProofOfWork`] and
//! `committee::CommitteeConsensus` — and embedders can write their own:
//!
//! ```
//! use medledger::block::Header;
//! use medledger::consensus::{Ancestors, Consensus, ConsensusError};
//! use medledger::pow::Work;
//!
//! /// A toy engine: every block must carry the height as its seal, and weighs 1.
//! struct Counter;
//!
//! impl Consensus for Counter {
//!     type Seal = u64;
//!     fn name(&self) -> &'static str { "counter" }
//!     fn genesis_seal(&self) -> u64 { 0 }
//!     fn verify_header(&self, header: &Header<u64>, _: &dyn Ancestors<u64>, _now: u64)
//!         -> Result<Work, ConsensusError>
//!     {
//!         if header.seal != header.height {
//!             return Err(ConsensusError::BadSeal(format!("seal {} at height {}", header.seal, header.height)));
//!         }
//!         Ok(Work::from_u64(1))
//!     }
//! }
//!
//! let chain = medledger::ChainBuilder::new("toy", Counter).genesis_time(0).build().unwrap();
//! assert_eq!(chain.height(), 0);
//! ```
//!
//! # Finality
//!
//! An engine also says what is final ([`Consensus::finality`]). Under
//! [`Finality::Probabilistic`] (proof of work, the default) the chain follows the most work and
//! reorganises up to [`max_reorg_depth`](crate::chain::ChainBuilder::max_reorg_depth) blocks.
//! Under [`Finality::Instant`] (the committee and Tendermint engines) every block appended to the
//! main chain is final once its seal verifies: the chain never reverts it, whatever weight
//! another branch shows, and refuses a block whose branch leaves the main chain below its tip
//! with [`ChainError::ConflictsWithFinal`](crate::chain::ChainError::ConflictsWithFinal),
//! before the engine checks its seal. The one exception is the same block under another seal
//! ([`Consensus::same_block`]), which changes nothing.
//!
//! An engine whose nodes exchange messages to agree on blocks (the committee protocol,
//! Tendermint) is driven through the sans-I/O [`protocol::Protocol`] interface; this trait stays
//! the stateless check of what such an engine produced.
//!
//! [`pow::ProofOfWork`]: crate::pow::ProofOfWork

use core::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::block::Header;
pub mod protocol;
mod work;

use crate::tx::{AppPayload, VerifiedTx};
pub use protocol::Protocol;
pub use work::Work;

/// The headers of the branch a new header extends, as the engine may need them (timestamps for
/// the median-time-past rule, the last retarget block, previous seals).
pub trait Ancestors<S> {
    /// The parent of the header being checked.
    fn parent(&self) -> &Header<S>;
    /// The header at `height` on the branch ending at the parent; `None` above the parent.
    fn at_height(&self, height: u64) -> Option<&Header<S>>;
}

/// A consensus engine.
///
/// Implementations must be deterministic: the same header and ancestors always give the same
/// verdict (the `now` argument only bounds how far in the future a timestamp may be).
pub trait Consensus: Send + Sync + 'static {
    /// The engine's proof, carried in every block header.
    type Seal: Clone
        + fmt::Debug
        + PartialEq
        + Eq
        + crate::block::Seal
        + DeserializeOwned
        + Send
        + Sync;

    /// A short name for diagnostics ("pow", "committee", …).
    fn name(&self) -> &'static str;

    /// The seal of the genesis block (never verified).
    fn genesis_seal(&self) -> Self::Seal;

    /// Checks `header`'s seal and the engine's rules against the branch it extends, and returns
    /// the work the block adds to that branch (fork choice follows the most total work).
    ///
    /// The chain has already checked the header's size, version and transaction count, its
    /// parent link and its height; it checks the Merkle root and the transactions' signatures
    /// only after this call, so that a header breaking the engine's rules costs no signature
    /// check. The verdict must therefore depend on the header and its ancestors alone.
    ///
    /// # Errors
    ///
    /// [`ConsensusError`] saying which rule the header breaks.
    fn verify_header(
        &self,
        header: &Header<Self::Seal>,
        ancestors: &dyn Ancestors<Self::Seal>,
        now: u64,
    ) -> Result<Work, ConsensusError>;

    /// Whether `a` and `b` are one block under two seals: for engines that agree on a block
    /// but whose seals may differ from node to node (Tendermint's commit certificates hold
    /// whichever precommits a node collected). The chain then treats a block building on the
    /// other copy of its tip as extending the tip: it swaps the tip's seal for that copy's,
    /// which changes no transaction and no state, instead of reorganising (so it works with
    /// [`max_reorg_depth(0)`](crate::chain::ChainBuilder::max_reorg_depth)). The default: never.
    fn same_block(&self, a: &Header<Self::Seal>, b: &Header<Self::Seal>) -> bool {
        let _ = (a, b);
        false
    }

    /// What the engine's blocks being on the main chain means for fork choice (see the
    /// [module](self) docs). The default, [`Finality::Probabilistic`], is most-work fork choice
    /// with reorganisations up to the chain's limit; an engine whose seal certifies that the
    /// block is decided (a BFT commit certificate) returns [`Finality::Instant`], and the chain
    /// then never reverts a main-chain block.
    fn finality(&self) -> Finality {
        Finality::Probabilistic
    }

    /// Checks the block's transactions against what the seal certifies (for engines whose seal
    /// commits to how the body was agreed, such as per-shard certificates). The chain calls it
    /// after [`verify_header`](Self::verify_header), with signatures already verified. The
    /// default accepts every body.
    ///
    /// # Errors
    ///
    /// [`ConsensusError`] saying what does not match.
    fn verify_body<P: AppPayload>(
        &self,
        header: &Header<Self::Seal>,
        txs: &[VerifiedTx<P>],
    ) -> Result<(), ConsensusError> {
        let _ = (header, txs);
        Ok(())
    }
}

/// What an engine's blocks being on the main chain means: whether a heavier branch may replace
/// them ([`Consensus::finality`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Finality {
    /// Fork choice by most total [`Work`]: a heavier branch replaces the main chain's tip
    /// blocks, up to [`max_reorg_depth`](crate::chain::ChainBuilder::max_reorg_depth) of them
    /// (proof of work). Only genesis is final.
    Probabilistic,
    /// Every block appended to the main chain is final once its seal verifies: the chain never
    /// reverts it, whatever weight another branch shows, and refuses any block whose branch
    /// leaves the main chain below its tip
    /// ([`ChainError::ConflictsWithFinal`](crate::chain::ChainError::ConflictsWithFinal)), but
    /// for the same block under another seal ([`Consensus::same_block`]). For engines whose
    /// seal proves the block decided: the committee engine's final certificate, Tendermint's
    /// commit certificate.
    Instant,
}

/// Why a consensus engine rejects a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// The seal is malformed or does not prove what it must.
    #[error("invalid seal: {0}")]
    BadSeal(String),
    /// The block hash does not meet the target its seal claims.
    #[error("proof of work does not meet target {target:#010x}")]
    InsufficientWork {
        /// The claimed compact target.
        target: u32,
    },
    /// The seal claims a target other than the one the rules require.
    #[error("wrong difficulty: expected target {expected:#010x}, found {found:#010x}")]
    WrongTarget {
        /// Required compact target.
        expected: u32,
        /// Claimed compact target.
        found: u32,
    },
    /// The timestamp is not after the median of the previous blocks.
    #[error("timestamp {found} is not after the median time past {median}")]
    TimestampTooOld {
        /// Median time past.
        median: u64,
        /// Header timestamp.
        found: u64,
    },
    /// The timestamp is too far in the future.
    #[error("timestamp {found} is more than {max_drift} s ahead of now ({now})")]
    TimestampTooNew {
        /// Header timestamp.
        found: u64,
        /// Local clock.
        now: u64,
        /// Allowed drift.
        max_drift: u64,
    },
    /// The engine's own rules refuse the seal or body, with its typed reason.
    #[error(transparent)]
    Engine(EngineError),
}

/// An engine's own reason for refusing a header or a body, kept typed so that the caller can
/// look at it with [`downcast_ref`](Self::downcast_ref) without the chain knowing the engine.
#[derive(Clone)]
pub struct EngineError {
    engine: &'static str,
    error: Arc<dyn std::error::Error + Send + Sync + 'static>,
}

impl EngineError {
    /// `engine`'s refusal `error`.
    pub fn new(
        engine: &'static str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            engine,
            error: Arc::new(error),
        }
    }
    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        self.engine
    }
    /// The engine's error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref()
    }
}

impl fmt::Debug for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EngineError({}: {:?})", self.engine, self.error)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.engine, self.error)
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// Two engine errors are equal when the same engine gives the same reason.
impl PartialEq for EngineError {
    fn eq(&self, other: &Self) -> bool {
        self.engine == other.engine && self.error.to_string() == other.error.to_string()
    }
}

impl Eq for EngineError {}
