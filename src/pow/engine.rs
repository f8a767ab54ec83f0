//! The Proof-of-Work consensus engine: Bitcoin's rules over medledger headers.

use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::{
    header_hash, median_time_past, next_target, CompactTarget, Miner, RetargetParams, Target, Work,
    HEADER_LEN, MAX_FUTURE_BLOCK_TIME, MEDIAN_TIME_SPAN,
};
use crate::app::Application;
use crate::block::{Block, Header};
use crate::chain::{BlockTemplate, Chain, ChainError, ChainResult};
use crate::codec;
use crate::consensus::{Ancestors, Consensus, ConsensusError};
use crate::hash::domain;
use crate::tx::Transaction;

/// The seal of a Proof-of-Work block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PowSeal {
    /// The target the block claims to meet (must be the one the retarget rules require).
    pub bits: CompactTarget,
    /// The 32-bit nonce of the 80-byte PoW preimage.
    pub nonce: u32,
    /// More nonce space, committed inside the preimage's header commitment.
    pub extra_nonce: u64,
}

/// Proof of work commits to its whole seal: the nonce is what was mined.
impl crate::block::Seal for PowSeal {}

/// Proof-of-Work consensus with Bitcoin's target, work, retarget and timestamp rules.
///
/// A block's proof is Bitcoin's: the double SHA-256 of an 80-byte preimage, read as a
/// little-endian number, must not exceed the target. The preimage has Bitcoin's layout —
/// version, parent hash, a 32-byte commitment (BLAKE3 of every other header field and the extra
/// nonce) in the Merkle-root slot, time, bits, nonce — so Bitcoin's midstate trick applies.
#[derive(Clone, Debug)]
pub struct ProofOfWork {
    params: RetargetParams,
    max_future_drift: u64,
}

impl ProofOfWork {
    /// An engine with the given retarget parameters and Bitcoin's two-hour future drift.
    pub fn new(params: RetargetParams) -> Self {
        Self {
            params,
            max_future_drift: MAX_FUTURE_BLOCK_TIME,
        }
    }

    /// Bitcoin mainnet's parameters (difficulty 1 is about 2^32 hashes a block).
    pub fn bitcoin() -> Self {
        Self::new(RetargetParams::bitcoin())
    }

    /// A very low target and no retargeting: blocks take a couple of hashes (tests, examples).
    pub fn regtest() -> Self {
        Self::new(RetargetParams::regtest())
    }

    /// Sets how far ahead of the local clock a block's time may be.
    pub fn with_max_future_drift(mut self, seconds: u64) -> Self {
        self.max_future_drift = seconds;
        self
    }

    /// The retarget parameters.
    pub fn params(&self) -> &RetargetParams {
        &self.params
    }

    /// The 80-byte preimage whose double SHA-256 must meet the target.
    pub fn preimage(header: &Header<PowSeal>) -> [u8; HEADER_LEN] {
        let commitment = {
            let mut buf = Vec::with_capacity(160);
            codec::encode_body_into(
                &(
                    header.height,
                    header.tx_root,
                    header.tx_count,
                    header.state_root,
                    header.timestamp,
                    header.seal.extra_nonce,
                ),
                &mut buf,
            );
            domain::POW_COMMIT.hash(&buf)
        };
        let mut p = [0u8; HEADER_LEN];
        p[0..4].copy_from_slice(&header.version.to_le_bytes());
        p[4..36].copy_from_slice(header.parent.as_bytes());
        p[36..68].copy_from_slice(&commitment);
        // The full 64-bit time is in the commitment; this slot keeps Bitcoin's layout.
        p[68..72].copy_from_slice(&(header.timestamp as u32).to_le_bytes());
        p[72..76].copy_from_slice(&header.seal.bits.to_consensus().to_le_bytes());
        p[76..80].copy_from_slice(&header.seal.nonce.to_le_bytes());
        p
    }

    /// The PoW hash of a header (double SHA-256 of its [preimage](Self::preimage)).
    pub fn pow_hash(header: &Header<PowSeal>) -> [u8; 32] {
        header_hash(&Self::preimage(header))
    }

    /// The target the block after `ancestors.parent()` must meet (Bitcoin's
    /// `GetNextWorkRequired` without the testnet special case).
    pub fn required_bits(&self, ancestors: &dyn Ancestors<PowSeal>) -> CompactTarget {
        let parent = ancestors.parent();
        let height = parent.height.saturating_add(1);
        if self.params.no_retargeting() || !self.params.is_retarget_height(height) {
            return parent.seal.bits;
        }
        let first_height = height.saturating_sub(self.params.interval());
        let first_time = ancestors
            .at_height(first_height)
            .map_or(parent.timestamp, |h| h.timestamp);
        next_target(parent.seal.bits, first_time, parent.timestamp, &self.params)
    }

    fn median_time_past(ancestors: &dyn Ancestors<PowSeal>) -> u64 {
        let parent = ancestors.parent();
        let lowest = parent
            .height
            .saturating_add(1)
            .saturating_sub(MEDIAN_TIME_SPAN as u64);
        let times: Vec<u64> = (lowest..=parent.height)
            .filter_map(|h| ancestors.at_height(h).map(|h| h.timestamp))
            .collect();
        median_time_past(&times)
    }

    /// Searches for a seal for `header` (whose `seal.bits` must already be set), trying extra
    /// nonces until one gives a solution. Returns `None` if `cancel` is set first.
    pub fn solve(&self, mut header: Header<PowSeal>, cancel: &AtomicBool) -> Option<PowSeal> {
        let target = Target::from_compact(header.seal.bits).ok()?;
        loop {
            let miner = Miner::new(&Self::preimage(&header), target);
            if let Some(nonce) = miner.search_parallel(cancel) {
                header.seal.nonce = nonce;
                return Some(header.seal);
            }
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            header.seal.extra_nonce = header.seal.extra_nonce.wrapping_add(1);
        }
    }
}

impl Consensus for ProofOfWork {
    type Seal = PowSeal;

    fn name(&self) -> &'static str {
        "pow"
    }

    fn genesis_seal(&self) -> PowSeal {
        PowSeal {
            bits: self.params.pow_limit(),
            nonce: 0,
            extra_nonce: 0,
        }
    }

    fn verify_header(
        &self,
        header: &Header<PowSeal>,
        ancestors: &dyn Ancestors<PowSeal>,
        now: u64,
    ) -> Result<Work, ConsensusError> {
        let expected = self.required_bits(ancestors);
        if header.seal.bits != expected {
            return Err(ConsensusError::WrongTarget {
                expected: expected.to_consensus(),
                found: header.seal.bits.to_consensus(),
            });
        }
        let target = Target::from_compact(header.seal.bits)
            .map_err(|e| ConsensusError::BadSeal(e.to_string()))?;
        if !target.is_met_by(&Self::pow_hash(header)) {
            return Err(ConsensusError::InsufficientWork {
                target: header.seal.bits.to_consensus(),
            });
        }
        let median = Self::median_time_past(ancestors);
        if header.timestamp <= median {
            return Err(ConsensusError::TimestampTooOld {
                median,
                found: header.timestamp,
            });
        }
        if header.timestamp > now.saturating_add(self.max_future_drift) {
            return Err(ConsensusError::TimestampTooNew {
                found: header.timestamp,
                now,
                max_drift: self.max_future_drift,
            });
        }
        Ok(target.to_work())
    }
}

impl<A: Application> Chain<ProofOfWork, A> {
    /// Builds the next block from `txs` (see [`Chain::build_template`]) and mines it on all
    /// cores. Every transaction goes into the block, or none does: `mine` never leaves one out.
    /// To build a block from whatever applies, and learn what does not, use
    /// [`Chain::build_template`] (or the [`Ledger`](crate::ledger::Ledger), which also keeps
    /// a mempool).
    ///
    /// # Errors
    ///
    /// [`ChainError::TooManyTxs`] for more than [`MAX_BLOCK_TXS`](crate::block::MAX_BLOCK_TXS)
    /// transactions, [`ChainError::TimestampBeforeParent`] if `timestamp` is earlier than the
    /// tip's, [`ChainError::Transaction`] if a signature fails, [`ChainError::Refused`] naming
    /// every transaction that fails against the state (a stale nonce, an access-control
    /// refusal…), [`ChainError::Consensus`] if the required target is not a valid one.
    pub fn mine(
        &mut self,
        txs: Vec<Transaction<A::Payload>>,
        timestamp: u64,
    ) -> ChainResult<Block<PowSeal, A::Payload>, A> {
        let never = AtomicBool::new(false);
        self.mine_cancellable(txs, timestamp, &never)?
            .ok_or_else(|| {
                ChainError::Consensus(ConsensusError::BadSeal(
                    "the miner stopped without a solution".into(),
                ))
            })
    }

    /// As [`mine`](Self::mine), returning `Ok(None)` if `cancel` is set before a solution is found.
    ///
    /// # Errors
    ///
    /// As [`mine`](Self::mine).
    pub fn mine_cancellable(
        &mut self,
        txs: Vec<Transaction<A::Payload>>,
        timestamp: u64,
        cancel: &AtomicBool,
    ) -> ChainResult<Option<Block<PowSeal, A::Payload>>, A> {
        let (template, failures) = self.template_with_failures(txs, timestamp)?;
        if !failures.is_empty() {
            return Err(ChainError::Refused(failures));
        }
        self.seal_pow(template, cancel)
    }

    /// Mines `template` (built on the tip): finds a seal meeting the target the tip requires.
    /// Returns `Ok(None)` if `cancel` is set first.
    ///
    /// # Errors
    ///
    /// [`ChainError::Consensus`] if the required target is not a valid one,
    /// [`ChainError::TooManyTxs`] if the template holds too many transactions.
    pub fn seal_pow(
        &self,
        template: BlockTemplate<A::Payload, A::Error>,
        cancel: &AtomicBool,
    ) -> ChainResult<Option<Block<PowSeal, A::Payload>>, A> {
        let bits = self.engine().required_bits(&self.tip_ancestors());
        Target::from_compact(bits).map_err(|e| ConsensusError::BadSeal(e.to_string()))?;
        let header = template.header(PowSeal {
            bits,
            nonce: 0,
            extra_nonce: 0,
        });
        match self.engine().solve(header, cancel) {
            Some(seal) => template.seal(seal).map(Some),
            None => Ok(None),
        }
    }
}
