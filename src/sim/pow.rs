//! Proof-of-work miners on the simulated network.

use std::sync::Arc;

use super::network::{Time, GENESIS_TIME, SECOND};
use super::replicas::{medrec_load, Replicas};
use super::{CpuModel, SimError};
use crate::chain::{Chain, ChainBuilder, ManualClock};
use crate::consensus::protocol::Input;
use crate::pow::{
    CompactTarget, PowMessage, PowNode, PowNodeConfig, ProofOfWork, RetargetParams, Target,
};
use crate::tx::Keypair;
use crate::MedRec;

/// Proof-of-work miners, each on its own chain.
pub type PowReplicas = Replicas<PowNode<MedRec>, Chain<ProofOfWork, MedRec>>;

/// The name of simulated proof-of-work chains.
const CHAIN: &str = "medledger-sim-pow";

/// A proof-of-work deployment. The difficulty is set from the rest: the chain's target (fixed,
/// no retargeting) makes the network's whole simulated hash rate, `miners × hashes_per_tick`
/// per `tick`, find a block every `block_interval` on average.
///
/// ```
/// use medledger::sim::network::SECOND;
/// use medledger::sim::{NetConfig, Network, PowSetup};
///
/// let setup = PowSetup { block_size: 8, confirmations: 2, ..PowSetup::default() };
/// let config = NetConfig { blocks: 3, max_time: 60 * SECOND, ..NetConfig::default() };
/// let report = Network::new(setup.build()?, config).run();
/// assert_eq!(report.blocks, 3);
/// assert_eq!(report.agreement_violations, 0);
/// # Ok::<(), medledger::sim::SimError>(())
/// ```
#[derive(Clone, Debug)]
pub struct PowSetup {
    /// Miners (equal hash rate).
    pub miners: usize,
    /// The intended time between blocks, microseconds.
    pub block_interval: Time,
    /// Real header hashes each miner tries per tick.
    pub hashes_per_tick: u64,
    /// Time between a miner's ticks, microseconds.
    pub tick: Time,
    /// Transactions per mined block, and per batch of client load.
    pub block_size: usize,
    /// Confirmations after which a block counts as final: blocks built on it.
    pub confirmations: u64,
    /// How many blocks a node's chain may roll back when it reorganises.
    pub max_reorg_depth: u64,
    /// Mixed into the miners' extra nonces: different seeds mine different blocks.
    pub seed: u64,
    /// CPU costs.
    pub cpu: CpuModel,
}

impl Default for PowSetup {
    /// Four miners, a block every two seconds from 100 hashes per 100 ms tick each, blocks of
    /// 256 transactions, final after 6 confirmations.
    fn default() -> Self {
        Self {
            miners: 4,
            block_interval: 2 * SECOND,
            hashes_per_tick: 100,
            tick: 100_000,
            block_size: 256,
            confirmations: 6,
            max_reorg_depth: 100,
            seed: 0,
            cpu: CpuModel::default(),
        }
    }
}

/// The key of simulated miner `i`.
pub fn miner_key(i: usize) -> Keypair {
    let mut seed = [0x90u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Keypair::from_seed(&seed)
}

/// The target that one hash in `hashes` meets on average: `⌊(2^256 − 1) / hashes⌋`, in compact
/// form (which rounds it down to three significant bytes).
fn target_for(hashes: u64) -> CompactTarget {
    let divisor = u128::from(hashes.max(1));
    let mut quotient = [0u8; 32];
    let mut rem: u128 = 0;
    for q in quotient.iter_mut() {
        let cur = (rem << 8) | 0xff;
        *q = (cur / divisor) as u8;
        rem = cur % divisor;
    }
    Target::from_be_bytes(quotient).to_compact()
}

impl PowSetup {
    /// The expected header hashes per block over the whole network.
    pub fn hashes_per_block(&self) -> u64 {
        let ticks = (self.block_interval / self.tick.max(1)).max(1);
        (self.miners as u64)
            .saturating_mul(self.hashes_per_tick)
            .saturating_mul(ticks)
    }

    /// The chain's retarget parameters: the target of [`hashes_per_block`](Self::hashes_per_block)
    /// as the limit, never retargeted.
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] if that target is not a valid one.
    pub fn params(&self) -> Result<RetargetParams, SimError> {
        RetargetParams::builder()
            .pow_limit(target_for(self.hashes_per_block()))
            .no_retargeting(true)
            .build()
            .map_err(|e| SimError::Config(e.to_string()))
    }

    /// Builds the deployment: one chain and one miner per node, MedRec client load, CPU costs,
    /// and blocks final after [`confirmations`](Self::confirmations).
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] for no miners, no hashes, a zero tick or block size.
    pub fn build(self) -> Result<PowReplicas, SimError> {
        let bad = |s: &str| Err(SimError::Config(s.to_string()));
        if self.miners == 0 {
            return bad("there must be at least one miner");
        }
        if self.hashes_per_tick == 0 || self.tick == 0 {
            return bad("miners must hash: hashes per tick and tick must be positive");
        }
        if self.block_size == 0 {
            return bad("block size must be at least 1");
        }
        let engine = ProofOfWork::new(self.params()?);
        let mut nodes = Vec::with_capacity(self.miners);
        for i in 0..self.miners {
            let clock = Arc::new(ManualClock::new(GENESIS_TIME));
            let chain = ChainBuilder::<ProofOfWork, MedRec>::new(CHAIN, engine.clone())
                .genesis_time(GENESIS_TIME)
                .clock(clock.clone())
                .max_reorg_depth(self.max_reorg_depth)
                .build()
                .map_err(|e| SimError::Config(e.to_string()))?;
            nodes.push((miner_key(i).public(), chain, clock));
        }
        let chain_id = nodes[0].1.chain_id();
        let setup = self.clone();
        let make = Box::new(move |i: usize| {
            let mut config = PowNodeConfig::new(miner_key(i).public());
            config.hashes_per_tick = setup.hashes_per_tick;
            config.tick = setup.tick;
            config.max_block_txs = setup.block_size;
            config.seed = setup.seed;
            PowNode::new(config)
        });
        Ok(Replicas::new(
            "pow",
            nodes,
            make,
            medrec_load::<PowNode<MedRec>>(chain_id, 64, self.block_size),
        )
        .finality_depth(self.confirmations)
        .cost(
            self.cpu,
            Box::new(|cpu, input| {
                cpu.message_ns
                    + match input {
                        // The header's proof of work, then its identity.
                        Input::Message { message, .. } => match message {
                            PowMessage::Block(_) => 2 * cpu.hash_ns,
                            PowMessage::Blocks { blocks, .. } => {
                                2 * cpu.hash_ns * blocks.len() as u64
                            }
                            PowMessage::GetBlocks { locator } => cpu.hash_ns * locator.len() as u64,
                        },
                        Input::Transactions(txs) => txs.len() as u64 * cpu.tx_verify_ns,
                        // Hashing is the mining hardware's, not the node's CPU.
                        _ => 0,
                    }
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_for_expected_hashes() {
        // One hash in one: the largest 256-bit value, rounded to a compact target.
        let all = Target::from_compact(target_for(1)).unwrap();
        assert_eq!(all.to_be_bytes()[..3], [0xff, 0xff, 0]);
        // One in 2^16: the top two bytes clear.
        let t = Target::from_compact(target_for(1 << 16)).unwrap();
        assert_eq!(t.to_be_bytes()[..5], [0, 0, 0xff, 0xff, 0]);
        assert!(PowSetup::default().params().is_ok());
        assert_eq!(PowSetup::default().hashes_per_block(), 4 * 100 * 20);
    }

    #[test]
    fn setup_validates() {
        for bad in [
            PowSetup {
                miners: 0,
                ..PowSetup::default()
            },
            PowSetup {
                hashes_per_tick: 0,
                ..PowSetup::default()
            },
            PowSetup {
                block_size: 0,
                ..PowSetup::default()
            },
        ] {
            assert!(bad.build().is_err());
        }
    }
}
