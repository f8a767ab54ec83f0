//! The fast Proof-of-Work setup shared by the test and bench crates that mine real blocks:
//! an engine whose target about 1 in 256 hashes meets, a chain builder on a manual clock, and
//! re-mining a block after an edit.
#![allow(dead_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use medledger::chain::ManualClock;
use medledger::hash::{BlockHash, StateRoot};
use medledger::pow::{CompactTarget, PowSeal, ProofOfWork, RetargetParams};
use medledger::Block;
use medledger::{Chain, ChainBuilder};

/// About 1 in 256 hashes meets this target: mining is instant, a tampered nonce fails.
pub fn engine() -> ProofOfWork {
    ProofOfWork::new(
        RetargetParams::builder()
            .pow_limit(CompactTarget::from_consensus(0x2000_ffff))
            .no_retargeting(true)
            .build()
            .unwrap(),
    )
}

/// A builder for the chain `name` on [`engine`], with its genesis at `genesis_time` and a
/// manual clock reading `now`.
pub fn builder(name: &str, genesis_time: u64, now: u64) -> ChainBuilder<ProofOfWork> {
    ChainBuilder::new(name, engine())
        .genesis_time(genesis_time)
        .clock(Arc::new(ManualClock::new(now)))
}

/// Snapshot of everything a rejected block must leave untouched.
pub fn snapshot(chain: &Chain<ProofOfWork>) -> (BlockHash, u64, StateRoot) {
    (chain.tip(), chain.height(), chain.state().root())
}

/// Re-mines `block` so that its seal is valid again after an edit (isolates the edited rule).
pub fn remine(chain: &Chain<ProofOfWork>, mut block: Block<PowSeal>) -> Block<PowSeal> {
    let never = AtomicBool::new(false);
    block.header.seal = chain.engine().solve(block.header.clone(), &never).unwrap();
    block
}
