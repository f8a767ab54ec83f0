//! Deterministic discrete-event simulation of consensus engines, and of the committee protocol
//! in particular.
//!
//! [`Network`] is the simulator: it drives any [`Protocol`](crate::consensus::protocol::Protocol)
//! engine, one instance per simulated node, over a modelled network (per-pair latency, jitter,
//! per-node upload and download bandwidth, message drops, partitions, crashes and restarts) and
//! modelled CPUs, through the protocol interface alone, and measures every engine the same way
//! ([`EngineReport`]). What is specific to an engine is its [`Deployment`]: [`Replicas`] for
//! engines in which every node keeps its own chain (Tendermint, feature `tendermint`), and
//! [`CommitteeDeployment`] for the committee protocol.
//!
//! [`Simulation`] is the committee protocol's front end: a [`CommitteeDeployment`] on a
//! [`Network`], both set up from one [`SimConfig`]. It runs the real
//! [`committee::Node`](crate::committee::Node) state machines, which implement `Protocol`. Real
//! cryptography is done once: signature and transaction checks and state execution are memoised
//! by content, so every node is charged the simulated cost while the machine pays the real one
//! once. Every block the protocol produces is appended to a real [`Chain`](crate::chain::Chain)
//! through [`CommitteeConsensus`](crate::committee::CommitteeConsensus), so a run also checks
//! that what the protocol certifies is what the chain accepts. Its [`Report`] adds the committee
//! measures (committee failures, undersized committees, per-agreement safety violations, view
//! changes) to the network's, which it carries as [`Report::engine`] for comparison with other
//! engines.
//!
//! A run is a pure function of its [`SimConfig`]: the same seed gives the same run, bit for bit.
//!
//! ```
//! use medledger::sim::{SimConfig, Simulation};
//! let config = SimConfig::builder()
//!     .committees(2)
//!     .committee_size(4)
//!     .nodes(12)
//!     .block_size(8)
//!     .blocks(2)
//!     .seed(7)
//!     .build()?;
//! let report = Simulation::new(config)?.run();
//! assert_eq!(report.blocks, 2);
//! assert_eq!(report.safety_violations, 0);
//! assert!(report.tx_per_sec > 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modelling choices
//!
//! * Clients' transactions reach their shard's committee off the critical path; each shard's
//!   pending pool is refilled, when a block commits, with as many new transactions as the block
//!   took (closed-loop load), and latency runs from a transaction's submission to the commit of
//!   its block.
//! * Block bodies are not broadcast to every node: final members announce the sealed header
//!   ([`NextEpoch`](crate::committee::NextEpoch)) to all, and committee members already hold
//!   their shard's transactions; full nodes fetch bodies off the critical path.
//! * Throughput is measured over the steady state: from the first block's commit to the last's.
//! * A committee block is final when the first honest final member seals it; the network checks
//!   agreement on the decided final value's digest, which all honest final members share when
//!   the protocol is safe even if their certificates differ ([`CommitteeDeployment`]).

mod committee;
pub mod network;
mod pow;
mod replicas;
mod run;
#[cfg(feature = "tendermint")]
mod tendermint;

pub use committee::{AgreementTrace, CommitteeDeployment, Decisions, SimHost, Trace};
pub use network::{Behaviour, Deployment, EngineReport, Fault, Finalised, NetConfig, Network};
pub use pow::{miner_key, PowReplicas, PowSetup};
pub use replicas::{
    medrec_chain, medrec_load, medrec_nodes, BlockIdFn, CostFn, EngineFn, EquivocateFn, NodeSetup,
    Replica, Replicas, WorkloadFn,
};
pub use run::Simulation;
#[cfg(feature = "tendermint")]
pub use tendermint::{validator_key, TendermintReplicas, TendermintSetup};

use crate::committee::{ParamsError, Timing};

/// What Byzantine nodes do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Register an identity (and so be drawn into committees), then send nothing.
    Silent,
    /// Follow the protocol, but as leaders send two conflicting, individually valid proposals to
    /// the two halves of the committee, and as voters in such a round vote for both values,
    /// each towards the half that was proposed it (all Byzantine nodes split a committee the
    /// same way, by key). A Byzantine leader sends every Byzantine member's prevote and
    /// precommit for each value with the proposal of it, before any honest prevote can show
    /// that it equivocated; Byzantine prevotes never carry the leader's signature of the
    /// proposal. The worst a Byzantine member can do to safety.
    Equivocating,
    /// Follow the protocol, but send proposals to only a third of the committee and withhold
    /// precommits, shard results, block announcements and directory answers.
    Withholding,
}

/// The simulated CPU cost of each operation, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuModel {
    /// One Ed25519 signature check (votes, proposals, certificates).
    pub sig_verify_ns: u64,
    /// Checking one transaction's signature within a batch.
    pub tx_verify_ns: u64,
    /// Executing one transaction against the state.
    pub tx_execute_ns: u64,
    /// One identity hash.
    pub hash_ns: u64,
    /// Fixed cost of handling any message.
    pub message_ns: u64,
}

impl Default for CpuModel {
    /// Costs of a typical 2020s server core.
    fn default() -> Self {
        Self {
            sig_verify_ns: 50_000,
            tx_verify_ns: 25_000,
            tx_execute_ns: 5_000,
            hash_ns: 300,
            message_ns: 2_000,
        }
    }
}

/// Measures this machine's costs: times real Ed25519 verifications (single and batched),
/// transaction execution and identity hashes. Takes about a second.
pub fn calibrate() -> CpuModel {
    use crate::hash::{ChainId, Digest};
    use crate::tx::{verify_batch, Keypair};
    use crate::{Payload, Transaction};
    use std::time::Instant;
    let chain = ChainId::from_bytes([1; 32]);
    let txs: Vec<Transaction> = (0..256u64)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            let k = Keypair::from_seed(&seed);
            Transaction::sign(
                &k,
                chain,
                0,
                Payload::Data {
                    record: Digest::from_bytes([i as u8; 32]),
                },
            )
        })
        .collect();
    // Each cost is the fastest of five repetitions: other load only ever adds time.
    let best = |f: &mut dyn FnMut() -> u64| (0..5).map(|_| f()).min().unwrap_or(1).max(1);
    let single = best(&mut || {
        let t = Instant::now();
        for tx in txs.iter().take(64) {
            let _ = tx.clone().verify();
        }
        t.elapsed().as_nanos() as u64 / 64
    });
    let batch = best(&mut || {
        let t = Instant::now();
        let _ = verify_batch(chain, txs[..64].to_vec());
        t.elapsed().as_nanos() as u64 / 64
    });
    let key = Keypair::from_seed(&[9; 32]).public();
    let r = crate::committee::Randomness::from_bytes([3; 32]);
    let hash = best(&mut || {
        let t = Instant::now();
        let mut acc = 0u32;
        for nonce in 0..4_096u64 {
            acc ^= crate::committee::IdentityProof { key, nonce }
                .hash(&r)
                .leading_zeros();
        }
        std::hint::black_box(acc);
        t.elapsed().as_nanos() as u64 / 4_096
    });
    let verified = verify_batch(chain, txs.clone()).expect("freshly signed transactions verify");
    let exec = best(&mut || {
        use crate::app::Application;
        let mut state = crate::State::new();
        let t = Instant::now();
        let _ = state.execute(chain, 1, 1, &verified, true, crate::MedRec::apply);
        t.elapsed().as_nanos() as u64 / verified.len() as u64
    });
    CpuModel {
        sig_verify_ns: single,
        tx_verify_ns: batch,
        tx_execute_ns: exec,
        hash_ns: hash,
        message_ns: 2_000,
    }
}

/// Network model: one-way latency per pair of nodes, drawn once per pair uniformly from
/// `[min, max]`, plus per-message jitter; and per-node bandwidth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkModel {
    /// Smallest pair latency, microseconds.
    pub min_latency_us: u64,
    /// Largest pair latency, microseconds.
    pub max_latency_us: u64,
    /// Uniform extra delay per message, up to this many microseconds.
    pub jitter_us: u64,
    /// Each node's upload and download bandwidth, bits per second.
    pub bandwidth_bps: u64,
    /// Probability that a message is lost, in millionths.
    pub drop_ppm: u32,
}

impl Default for NetworkModel {
    fn default() -> Self {
        Self {
            min_latency_us: 20_000,
            max_latency_us: 80_000,
            jitter_us: 5_000,
            bandwidth_bps: 200_000_000,
            drop_ppm: 0,
        }
    }
}

/// A simulation's configuration (see [`SimConfig::builder`]).
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub(crate) nodes: usize,
    pub(crate) shard_bits: u8,
    pub(crate) committee_size: u16,
    pub(crate) block_size: usize,
    pub(crate) blocks: u64,
    pub(crate) network: NetworkModel,
    pub(crate) cpu: CpuModel,
    pub(crate) byzantine_fraction: f64,
    pub(crate) byzantine_per_committee: Option<u16>,
    pub(crate) strategy: Strategy,
    pub(crate) seed: u64,
    pub(crate) identity_difficulty: u8,
    pub(crate) identity_pow_us: u64,
    pub(crate) cross_shard: f64,
    pub(crate) timing: Timing,
    pub(crate) max_sim_time_us: u64,
    pub(crate) append_to_chain: bool,
}

impl SimConfig {
    /// A builder with small defaults: 4 committees of 8 from 48 nodes, 64 transactions per
    /// shard, 4 blocks, honest nodes, seed 0.
    pub fn builder() -> SimConfigBuilder {
        SimConfigBuilder {
            nodes: None,
            committees: 4,
            committee_size: 8,
            block_size: 64,
            blocks: 4,
            network: NetworkModel::default(),
            cpu: CpuModel::default(),
            byzantine_fraction: 0.0,
            byzantine_per_committee: None,
            strategy: Strategy::Silent,
            seed: 0,
            identity_difficulty: 4,
            identity_pow_us: 0,
            cross_shard: 0.0,
            timing: Timing::default(),
            max_sim_time_us: 600_000_000,
            append_to_chain: true,
        }
    }
    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }
    /// Number of committees.
    pub fn committees(&self) -> usize {
        1 << self.shard_bits
    }
    /// Committee size.
    pub fn committee_size(&self) -> u16 {
        self.committee_size
    }
    /// The network setting of this configuration: its network model, seed, blocks and time
    /// limit, every node honest as far as the network is concerned (the committee deployment
    /// applies the Byzantine [`Strategy`] itself) and no faults (add some to the result).
    pub fn net_config(&self) -> NetConfig {
        NetConfig {
            network: self.network,
            seed: self.seed,
            blocks: self.blocks,
            max_time: self.max_sim_time_us,
            ..NetConfig::default()
        }
    }
}

/// Builds a [`SimConfig`], validating it in [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct SimConfigBuilder {
    nodes: Option<usize>,
    committees: usize,
    committee_size: u16,
    block_size: usize,
    blocks: u64,
    network: NetworkModel,
    cpu: CpuModel,
    byzantine_fraction: f64,
    byzantine_per_committee: Option<u16>,
    strategy: Strategy,
    seed: u64,
    identity_difficulty: u8,
    identity_pow_us: u64,
    cross_shard: f64,
    timing: Timing,
    max_sim_time_us: u64,
    append_to_chain: bool,
}

impl SimConfigBuilder {
    /// Number of nodes (default: 1.5 × committees × committee size, so committees fill).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = Some(n);
        self
    }
    /// Number of committees (a power of two, 1 to 256).
    pub fn committees(mut self, k: usize) -> Self {
        self.committees = k;
        self
    }
    /// Committee size `c`.
    pub fn committee_size(mut self, c: u16) -> Self {
        self.committee_size = c;
        self
    }
    /// Transactions per shard per block.
    pub fn block_size(mut self, b: usize) -> Self {
        self.block_size = b;
        self
    }
    /// Blocks to commit before stopping.
    pub fn blocks(mut self, n: u64) -> Self {
        self.blocks = n;
        self
    }
    /// The network model.
    pub fn network(mut self, n: NetworkModel) -> Self {
        self.network = n;
        self
    }
    /// The CPU model (for example from [`calibrate`]).
    pub fn cpu(mut self, c: CpuModel) -> Self {
        self.cpu = c;
        self
    }
    /// Fraction of Byzantine nodes, in `[0, 1)`, drawn at random: committees, drawn at
    /// random too, hold that fraction on average, some more than they tolerate.
    pub fn byzantine(mut self, fraction: f64, strategy: Strategy) -> Self {
        self.byzantine_fraction = fraction;
        self.byzantine_per_committee = None;
        self.strategy = strategy;
        self
    }
    /// `f` Byzantine members in every committee of every epoch, instead of a fraction of the
    /// nodes: once a height's committees are published, the adversary corrupts `f` members of
    /// each (chosen by the seed; fewer in a committee that did not fill and tolerates fewer),
    /// and the final committee's stay corrupted when they serve as the next height's
    /// directory. A mobile adversary at the bound when `f` is what a full committee tolerates
    /// (`c - quorum`): every committee holds the most Byzantine members it can survive, none
    /// more.
    pub fn byzantine_per_committee(mut self, f: u16, strategy: Strategy) -> Self {
        self.byzantine_fraction = 0.0;
        self.byzantine_per_committee = Some(f);
        self.strategy = strategy;
        self
    }
    /// The seed of every random choice.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Identity difficulty in leading zero bits.
    pub fn identity_difficulty(mut self, bits: u8) -> Self {
        self.identity_difficulty = bits;
        self
    }
    /// The mean simulated time an identity's proof of work takes, in microseconds (Elastico's
    /// takes minutes; 0, the default, charges the real hashes at the CPU model's hash cost).
    /// The simulator hashes for real only at the configured difficulty, and charges each node
    /// this mean scaled by its real number of tries over the expected number, so mining times
    /// vary from node to node as mining does. The directory's identity window is lengthened by
    /// three times the mean (about 95 % of identities arrive within it); a node's own mining
    /// delays everything it does next, including a restarted epoch's new identity.
    pub fn identity_pow_us(mut self, us: u64) -> Self {
        self.identity_pow_us = us;
        self
    }
    /// The fraction of transactions, in `[0, 1]`, that touch a second shard (default 0). Such
    /// a transaction waits for the block in which the other shard decides its part: it becomes
    /// available to its home shard's committee only once the next block is final (about one
    /// block of extra latency). When the home shard certifies it, every honest member sends the
    /// certified shard result to two members of the other shard's committee as well as to the
    /// final committee (extra messages and bytes, and certificate checks at the receivers).
    /// Ignored with one committee.
    pub fn cross_shard(mut self, fraction: f64) -> Self {
        self.cross_shard = fraction;
        self
    }
    /// Protocol timing.
    pub fn timing(mut self, t: Timing) -> Self {
        self.timing = t;
        self
    }
    /// Stop after this much simulated time even if fewer blocks were committed.
    pub fn max_sim_time_us(mut self, t: u64) -> Self {
        self.max_sim_time_us = t;
        self
    }
    /// Whether to append every produced block to a real chain (default true).
    pub fn append_to_chain(mut self, yes: bool) -> Self {
        self.append_to_chain = yes;
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] naming the invalid setting.
    pub fn build(self) -> Result<SimConfig, SimError> {
        let bad = |s: &str| Err(SimError::Config(s.to_string()));
        if !self.committees.is_power_of_two() || self.committees > crate::committee::MAX_SHARDS {
            return bad("committees must be a power of two between 1 and 256");
        }
        let shard_bits = self.committees.trailing_zeros() as u8;
        if self.committee_size == 0
            || usize::from(self.committee_size) > crate::committee::MAX_COMMITTEE_SIZE
        {
            return bad("committee size must be between 1 and 512");
        }
        let nodes = self
            .nodes
            .unwrap_or(self.committees * usize::from(self.committee_size) * 3 / 2);
        if nodes < usize::from(self.committee_size) {
            return bad("there must be at least as many nodes as a committee holds");
        }
        if self.block_size == 0 || self.block_size > crate::committee::MAX_SHARD_TXS {
            return bad("block size must be between 1 and 16384 transactions per shard");
        }
        if self.block_size * self.committees > crate::block::MAX_BLOCK_TXS {
            return bad("blocks would exceed the chain's transaction limit");
        }
        if self.blocks == 0 {
            return bad("blocks must be at least 1");
        }
        if !(0.0..1.0).contains(&self.byzantine_fraction) {
            return bad("the Byzantine fraction must be in [0, 1)");
        }
        if self
            .byzantine_per_committee
            .is_some_and(|f| f >= self.committee_size)
        {
            return bad("the Byzantine members per committee must be fewer than its size");
        }
        if !(0.0..=1.0).contains(&self.cross_shard) {
            return bad("the cross-shard fraction must be in [0, 1]");
        }
        if self.network.min_latency_us > self.network.max_latency_us {
            return bad("minimum latency exceeds maximum latency");
        }
        if self.network.bandwidth_bps == 0 {
            return bad("bandwidth must be positive");
        }
        if self.network.drop_ppm >= 1_000_000 {
            return bad("drop probability must be below one");
        }
        Ok(SimConfig {
            nodes,
            shard_bits,
            committee_size: self.committee_size,
            block_size: self.block_size,
            blocks: self.blocks,
            network: self.network,
            cpu: self.cpu,
            byzantine_fraction: self.byzantine_fraction,
            byzantine_per_committee: self.byzantine_per_committee,
            strategy: self.strategy,
            seed: self.seed,
            identity_difficulty: self.identity_difficulty,
            identity_pow_us: self.identity_pow_us,
            cross_shard: self.cross_shard,
            timing: Timing {
                identity_window: self
                    .timing
                    .identity_window
                    .saturating_add(self.identity_pow_us.saturating_mul(3)),
                ..self.timing
            },
            max_sim_time_us: self.max_sim_time_us,
            append_to_chain: self.append_to_chain,
        })
    }
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Blocks committed.
    pub blocks: u64,
    /// Transactions committed.
    pub txs: u64,
    /// Simulated time at the last commit, microseconds.
    pub sim_time_us: u64,
    /// Committed transactions per simulated second, in the steady state.
    pub tx_per_sec: f64,
    /// Median latency from submission to commit, microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub latency_p99_us: u64,
    /// Messages sent per node.
    pub messages_per_node: f64,
    /// Bytes sent per node.
    pub bytes_per_node: f64,
    /// Rounds beyond the first needed by decisions (summed over agreements).
    pub view_changes: u64,
    /// Committees whose Byzantine members exceeded what they tolerate.
    pub committee_failures: u64,
    /// Committees published with fewer members than a quorum.
    pub undersized_committees: u64,
    /// Agreements in which honest nodes decided different values (must be 0 within the
    /// bound: see `violations_beyond_bound`).
    pub safety_violations: u64,
    /// Of `safety_violations`, those in agreements whose committee held more Byzantine
    /// members than it tolerates (counted in `committee_failures`): the protocol promises
    /// nothing there, and the simulator shows what such a committee can do.
    pub violations_beyond_bound: u64,
    /// Blocks the chain refused (must be 0).
    pub chain_rejections: u64,
    /// Digest of everything decided and finalised, for determinism checks.
    pub fingerprint: [u8; 32],
    /// The measures every engine on the [`Network`] reports, for comparison with other engines
    /// (the fields above that it shares come from it).
    pub engine: EngineReport,
}

/// Why a simulation cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration is invalid.
    #[error("invalid simulation configuration: {0}")]
    Config(String),
    /// The committee parameters are invalid.
    #[error(transparent)]
    Params(#[from] ParamsError),
}

#[cfg(test)]
mod tests;
