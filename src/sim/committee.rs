//! The committee protocol as a [`Deployment`] of the engine-agnostic [`Network`](super::Network).
//!
//! [`CommitteeDeployment`] puts one [`committee::Node`](crate::committee::Node) per simulated node
//! on the network and holds what is specific to the committee protocol; the network, its timers,
//! CPU queues, faults and measures are [`network`](super::network)'s, exactly as for every other
//! engine.
//!
//! [`CommitteeDeployment`]'s documentation says what it models and how.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::network::{Deployment, EngineReport, Finalised, Handled, Time, GENESIS_TIME, SECOND};
use super::{CpuModel, Report, SimConfig, SimError, Strategy};
use crate::chain::ManualClock;
use crate::codec;
use crate::committee::{
    CommitteeAssignment, CommitteeConsensus, CommitteeParams, DigestProposal, Host, Message, Node,
    NodeConfig, Phase, Proposal, ShardBatch, ShardResult, ShardValue, Stage, TipInfo, Value, Vote,
    VoteBody,
};
use crate::consensus::protocol::{Input, Output, Outputs, Protocol, ProtocolInput, Recipients};
use crate::hash::{AccountId, BlockHash, Digest, StateRoot, TxId};
use crate::tx::{Keypair, PublicKey, Signature};
use crate::{Chain, ChainBuilder, Payload, Transaction};

/// Accounts per shard sending transactions.
const ACCOUNTS_PER_SHARD: usize = 16;
/// The name of simulated committee chains.
const CHAIN: &str = "medledger-sim";

struct Account {
    key: Keypair,
    next_nonce: u64,
}

/// The shared ledger every simulated node reads: the one real chain, the memo tables, each
/// shard's pending pool and the client accounts. It is every node's [`Host`], charging each call
/// the simulated CPU cost of the node that made it.
pub struct SimHost {
    chain: Chain<CommitteeConsensus>,
    clock: Arc<ManualClock>,
    sig_cache: HashMap<[u8; 32], bool>,
    tx_cache: HashMap<TxId, bool>,
    root_cache: HashMap<[u8; 32], Option<StateRoot>>,
    pools: Vec<VecDeque<Transaction>>,
    accounts: Vec<Vec<Account>>,
    record: u64,
    cpu: CpuModel,
    /// Simulated nanoseconds per identity hash tried, when identity proof of work is modelled
    /// as time ([`SimConfigBuilder::identity_pow_us`](super::SimConfigBuilder::identity_pow_us)).
    pow_ns_per_try: Option<u64>,
    cpu_ns: u64,
    /// Cross-shard transactions in a million ([`SimConfigBuilder::cross_shard`]
    /// (super::SimConfigBuilder::cross_shard)); 0 with one committee.
    cross_ppm: u32,
    /// Per shard, cross-shard transactions waiting for the block that decides the other
    /// shard's part, with the chain height at which they become available.
    held: Vec<VecDeque<(u64, Transaction)>>,
    /// The other shard each cross-shard transaction touches.
    partner: HashMap<TxId, u16>,
}

impl core::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimHost")
            .field("height", &self.chain.height())
            .field(
                "pending",
                &self.pools.iter().map(VecDeque::len).sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

impl SimHost {
    /// Signs `count` new transactions from `shard`'s accounts, and returns them: local ones go
    /// into its pool, cross-shard ones wait for the next block to be final. With cross-shard
    /// transactions, the two kinds come from separate halves of the shard's accounts, so that
    /// holding one back never leaves a gap in another's nonces.
    fn refill(&mut self, shard: usize, count: usize) -> Vec<Transaction> {
        let chain_id = self.chain.chain_id();
        let release = self.chain.height() + 1;
        let mut new = Vec::with_capacity(count);
        for i in 0..count {
            self.record += 1;
            let partner = self.cross_partner(shard);
            let accs = &mut self.accounts[shard];
            let n = accs.len();
            let half = n / 2;
            let a = match (self.cross_ppm, partner) {
                (0, _) => &mut accs[i % n],
                (_, None) => &mut accs[i % half],
                (_, Some(_)) => &mut accs[half + i % half],
            };
            let mut rec = [0u8; 32];
            rec[..8].copy_from_slice(&self.record.to_le_bytes());
            let tx = Transaction::sign(
                &a.key,
                chain_id,
                a.next_nonce,
                Payload::Data {
                    record: Digest::from_bytes(rec),
                },
            );
            a.next_nonce += 1;
            match partner {
                Some(p) => {
                    self.partner.insert(tx.id(), p);
                    self.held[shard].push_back((release, tx.clone()));
                }
                None => self.pools[shard].push_back(tx.clone()),
            }
            new.push(tx);
        }
        new
    }

    /// Whether the transaction numbered `self.record` touches a second shard, and which.
    fn cross_partner(&self, shard: usize) -> Option<u16> {
        let k = self.pools.len() as u64;
        if self.cross_ppm == 0 || k < 2 {
            return None;
        }
        let h = blake3::hash(&[b"cross-shard".as_slice(), &self.record.to_le_bytes()].concat());
        let mut word = [0u8; 8];
        word.copy_from_slice(&h.as_bytes()[..8]);
        let x = u64::from_le_bytes(word);
        let other = (shard as u64 + 1 + (x >> 32) % (k - 1)) % k;
        ((x & 0xffff_ffff) % 1_000_000 < u64::from(self.cross_ppm)).then_some(other as u16)
    }

    /// Moves the cross-shard transactions whose other part is decided in a final block into
    /// their shard's pool.
    fn release(&mut self) {
        let height = self.chain.height();
        for (held, pool) in self.held.iter_mut().zip(&mut self.pools) {
            while held.front().is_some_and(|(at, _)| *at <= height) {
                if let Some((_, tx)) = held.pop_front() {
                    pool.push_back(tx);
                }
            }
        }
    }

    /// Drops committed transactions from the pools.
    fn prune(&mut self) {
        let state = self.chain.state();
        for pool in &mut self.pools {
            pool.retain(|tx| state.next_nonce(&tx.signer().account()) <= tx.body.nonce);
        }
    }
}

impl Host for SimHost {
    fn verify_signatures(
        &mut self,
        items: &[(PublicKey, [u8; 32], Signature)],
    ) -> Result<(), usize> {
        self.cpu_ns += self.cpu.sig_verify_ns * items.len() as u64;
        for (i, (k, m, s)) in items.iter().enumerate() {
            let id = blake3::hash(&[k.as_bytes().as_slice(), m, &s.to_bytes()].concat());
            let ok = *self.sig_cache.entry(*id.as_bytes()).or_insert_with(|| {
                k.verifying_key().is_ok_and(|vk| {
                    vk.verify_strict(m, &ed25519_dalek::Signature::from_bytes(&s.to_bytes()))
                        .is_ok()
                })
            });
            if !ok {
                return Err(i);
            }
        }
        Ok(())
    }

    fn verify_txs(&mut self, txs: &[Transaction]) -> bool {
        self.cpu_ns += self.cpu.tx_verify_ns * txs.len() as u64;
        let chain_id = self.chain.chain_id();
        let missing: Vec<Transaction> = txs
            .iter()
            .filter(|t| !self.tx_cache.contains_key(&t.id()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let ok = crate::tx::verify_batch(chain_id, missing.clone()).is_ok();
            for t in missing {
                let good = ok || (t.body.chain_id == chain_id && t.clone().verify().is_ok());
                self.tx_cache.insert(t.id(), good);
            }
        }
        txs.iter()
            .all(|t| self.tx_cache.get(&t.id()) == Some(&true))
    }

    fn next_nonce(&mut self, parent: &BlockHash, account: &AccountId) -> Option<u64> {
        (self.chain.tip() == *parent).then(|| self.chain.state().next_nonce(account))
    }

    fn state_root(
        &mut self,
        parent: &BlockHash,
        height: u64,
        timestamp: u64,
        txs: &[Transaction],
    ) -> Option<StateRoot> {
        self.cpu_ns += self.cpu.tx_execute_ns * txs.len() as u64;
        let mut h = blake3::Hasher::new();
        h.update(parent.as_bytes());
        h.update(&height.to_le_bytes());
        h.update(&timestamp.to_le_bytes());
        for t in txs {
            h.update(t.id().as_bytes());
        }
        let key = *h.finalize().as_bytes();
        if let Some(r) = self.root_cache.get(&key) {
            return *r;
        }
        let chain = &mut self.chain;
        let r = if chain.tip() == *parent && chain.height() + 1 == height {
            match chain.build_template(txs.to_vec(), timestamp) {
                Ok(t) if t.rejected.is_empty() => Some(t.state_root),
                _ => None,
            }
        } else {
            None
        };
        self.root_cache.insert(key, r);
        r
    }

    fn take_txs(&mut self, parent: &BlockHash, shard: u16, max: usize) -> Vec<Transaction> {
        if self.chain.tip() != *parent {
            return Vec::new();
        }
        self.pools
            .get(usize::from(shard))
            .map(|pool| pool.iter().take(max).cloned().collect())
            .unwrap_or_default()
    }

    fn hashed(&mut self, count: u64) {
        let per_try = self.pow_ns_per_try.unwrap_or(self.cpu.hash_ns);
        self.cpu_ns = self.cpu_ns.saturating_add(per_try.saturating_mul(count));
    }
}

/// Agreement `(height, attempt, stage)` → the values honest nodes decided in it (an epoch
/// that restarted holds new agreements in its next attempt).
pub type Decisions = BTreeMap<(u64, u32, Stage), BTreeSet<Digest>>;

/// When the steps of one agreement happened in a run, as the honest members saw them
/// ([`CommitteeDeployment::trace`]). Times are simulated microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgreementTrace {
    /// When the first honest member began the agreement (its round 0); `None` for the
    /// directory's, which nodes do not report.
    pub started_us: Option<u64>,
    /// When the first honest member entered each round after the first (index 0 is round 1).
    pub rounds_us: Vec<u64>,
    /// When an honest leader sent its proposal, by round.
    pub proposed_us: BTreeMap<u32, u64>,
    /// When the first honest member decided, and the round it decided in.
    pub decided: Option<(u64, u32)>,
    /// Whether the leader of each round up to the deciding one (index 0 is round 0) was a
    /// Byzantine node; empty when the members are not known (the directory's agreement).
    pub byzantine_leaders: Vec<bool>,
}

/// What happened in each epoch of a run, for finding what a block waited for
/// ([`CommitteeDeployment::trace`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Each agreement `(height, attempt, stage)` that an honest member took part in.
    pub agreements: BTreeMap<(u64, u32, Stage), AgreementTrace>,
    /// When the first honest node began working on each height.
    pub epoch_started_us: BTreeMap<u64, u64>,
    /// When each height's block was first final.
    pub final_us: BTreeMap<u64, u64>,
}

/// Committee nodes on the simulated network.
///
/// * **One shared, memoising host.** Every node's [`Host`] is the same [`SimHost`]: signature
///   and transaction checks and state roots are memoised by content, so each node is charged
///   the simulated [`CpuModel`] cost while the machine pays the real cost once. It holds the one
///   real [`Chain`] every produced block is appended to (through
///   [`CommitteeConsensus`](crate::committee::CommitteeConsensus), so what the protocol
///   certifies is checked by the chain), and each shard's pending pool, which the workload refills
///   when a block is finalised (closed-loop load) and committee leaders take from
///   ([`Host::take_txs`]). Nodes draw transactions from that pool rather than from offers, so the
///   network does not offer transactions to each node
///   ([`Deployment::offers_transactions`]).
/// * **Finality.** A committee block is final once certified: an honest final member's
///   [`Append`](crate::consensus::protocol::Output::Append) is finalised at once. The chain
///   appends the first block of each height; the same block sealed by other final members
///   (one hash: the block hash leaves out who signed the final certificate, see
///   [`Seal`](crate::block::Seal)) is not appended again. The [`Finalised::id`] is the block
///   hash, so the network's agreement check compares blocks.
/// * **Byzantine nodes** follow a [`Strategy`] the deployment applies to what their engines
///   output (silent after registering an identity, equivocating leaders and voters, withholding);
///   their blocks, decisions and progress are never counted. The network sees every node as
///   honest ([`Behaviour::Honest`](super::Behaviour)); [`Deployment::equivocate`] also gives the
///   network's generic [`Behaviour::Equivocating`](super::Behaviour) a conflicting, signed
///   proposal or vote.
/// * **Committee measures** besides the network's: agreements (each shard's and the final one)
///   in which honest nodes decided different values, committees with more Byzantine members than
///   they tolerate or fewer members than a quorum, and rounds beyond the first.
pub struct CommitteeDeployment {
    cfg: SimConfig,
    params: CommitteeParams,
    nodes: Vec<Node>,
    seeds: Vec<[u8; 32]>,
    keys: Vec<PublicKey>,
    index: HashMap<PublicKey, usize>,
    byzantine: Vec<bool>,
    /// With [`SimConfigBuilder::byzantine_per_committee`](super::SimConfigBuilder): how many
    /// members of each committee are corrupted, and who is, by height.
    per_committee: Option<u16>,
    byzantine_at: BTreeMap<(u64, u32), BTreeSet<usize>>,
    bootstrap: Vec<PublicKey>,
    host: SimHost,
    decided: Decisions,
    decide_round: BTreeMap<(u64, u32, Stage), u32>,
    committees_seen: BTreeSet<(u64, Option<u16>)>,
    /// The members of each committee `(height, shard)`, as last assigned.
    members: HashMap<(u64, u16), Vec<PublicKey>>,
    /// The final committee of each height, as last assigned.
    final_members: HashMap<u64, Vec<PublicKey>>,
    trace: Trace,
    /// The two values Byzantine leaders proposed for one round of one agreement, so that
    /// Byzantine voters vote for both (one towards each half of the committee).
    twins: HashMap<(u64, Stage, u32), [Digest; 2]>,
    /// The last shard batch each node sent ahead to its final members, to complete the
    /// certificate that follows into the result forwarded across shards.
    sent_ahead: HashMap<usize, ShardBatch>,
    committee_failures: u64,
    undersized: u64,
}

impl core::fmt::Debug for CommitteeDeployment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CommitteeDeployment")
            .field("nodes", &self.nodes.len())
            .field("committees", &self.cfg.committees())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl CommitteeDeployment {
    /// The committee parameters of the simulated chain.
    pub fn params(&self) -> &CommitteeParams {
        &self.params
    }

    /// Sets up nodes, keys, Byzantine nodes, client accounts and the chain of `cfg`.
    ///
    /// # Errors
    ///
    /// [`SimError`] if the committee parameters are invalid.
    pub fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        let cfg = cfg.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let seeds: Vec<[u8; 32]> = (0..cfg.nodes)
            .map(|_| {
                let mut s = [0u8; 32];
                rng.fill_bytes(&mut s);
                s
            })
            .collect();
        let keys: Vec<PublicKey> = seeds
            .iter()
            .map(|s| Keypair::from_seed(s).public())
            .collect();
        let index = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let per_committee = cfg.byzantine_per_committee;
        let n_byz = (cfg.byzantine_fraction * cfg.nodes as f64).floor() as usize;
        let mut order: Vec<usize> = (0..cfg.nodes).collect();
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut byzantine = vec![false; cfg.nodes];
        for &i in order.iter().take(n_byz) {
            byzantine[i] = true;
        }
        let bootstrap: Vec<PublicKey> = keys
            .iter()
            .take(usize::from(cfg.committee_size))
            .copied()
            .collect();
        let params = CommitteeParams::builder()
            .shard_bits(cfg.shard_bits)
            .committee_size(cfg.committee_size)
            .identity_difficulty(cfg.identity_difficulty)
            .genesis_seed(cfg.seed.to_le_bytes())
            .bootstrap(bootstrap.iter().copied())
            .build()?;
        let clock = Arc::new(ManualClock::new(GENESIS_TIME));
        let chain = ChainBuilder::new(CHAIN, CommitteeConsensus::new(params.clone()))
            .genesis_time(GENESIS_TIME)
            .clock(clock.clone())
            .build()
            .map_err(|e| SimError::Config(e.to_string()))?;
        // Sending accounts, grouped by shard.
        let k = cfg.committees();
        let mut accounts: Vec<Vec<Account>> = (0..k).map(|_| Vec::new()).collect();
        let mut counter = 0u64;
        while accounts.iter().any(|a| a.len() < ACCOUNTS_PER_SHARD) {
            counter += 1;
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&counter.to_le_bytes());
            seed[8..16].copy_from_slice(&cfg.seed.to_le_bytes());
            seed[16] = 0xac;
            let key = Keypair::from_seed(&seed);
            let s = usize::from(params.shard_of_key(&key.public()));
            if accounts[s].len() < ACCOUNTS_PER_SHARD {
                accounts[s].push(Account { key, next_nonce: 0 });
            }
        }
        let host = SimHost {
            chain,
            clock,
            sig_cache: HashMap::new(),
            tx_cache: HashMap::new(),
            root_cache: HashMap::new(),
            pools: (0..k).map(|_| VecDeque::new()).collect(),
            accounts,
            record: 0,
            cpu: cfg.cpu,
            pow_ns_per_try: (cfg.identity_pow_us > 0).then(|| {
                let expected_tries = 1u64 << cfg.identity_difficulty.min(63);
                (cfg.identity_pow_us.saturating_mul(1_000) / expected_tries).max(1)
            }),
            cpu_ns: 0,
            cross_ppm: if k > 1 {
                (cfg.cross_shard * 1e6).round() as u32
            } else {
                0
            },
            held: (0..k).map(|_| VecDeque::new()).collect(),
            partner: HashMap::new(),
        };
        let mut deployment = Self {
            cfg,
            params,
            nodes: Vec::new(),
            seeds,
            keys,
            index,
            byzantine,
            per_committee,
            byzantine_at: BTreeMap::new(),
            bootstrap,
            host,
            decided: BTreeMap::new(),
            decide_round: BTreeMap::new(),
            committees_seen: BTreeSet::new(),
            members: HashMap::new(),
            final_members: HashMap::new(),
            trace: Trace::default(),
            twins: HashMap::new(),
            sent_ahead: HashMap::new(),
            committee_failures: 0,
            undersized: 0,
        };
        deployment.nodes = (0..deployment.keys.len())
            .map(|i| deployment.node_at_tip(i))
            .collect();
        Ok(deployment)
    }

    /// A fresh node `i` at the chain's tip.
    fn node_at_tip(&self, i: usize) -> Node {
        let tip = TipInfo::of_header(self.host.chain.tip_header(), &self.bootstrap);
        Node::new(NodeConfig {
            params: self.params.clone(),
            keypair: Keypair::from_seed(&self.seeds[i]),
            peers: self.keys.clone(),
            tip,
            timing: self.cfg.timing,
            max_shard_txs: self.cfg.block_size,
        })
    }

    /// Which nodes are Byzantine (by index); all `false` when the adversary corrupts members
    /// per committee (see [`byzantine_at`](Self::byzantine_at)).
    pub fn byzantine(&self) -> &[bool] {
        &self.byzantine
    }

    /// Whether node `node` is Byzantine in attempt `attempt` at `height`: always, for a
    /// Byzantine fraction of the nodes; with members corrupted per committee, once that
    /// attempt's committees are published, if it is one of them, and before, if it was in
    /// the last attempt of the height before (a final member serving as the directory).
    pub fn byzantine_at(&self, node: usize, height: u64, attempt: u32) -> bool {
        if self.per_committee.is_none() {
            return self.byzantine[node];
        }
        let set = match self.byzantine_at.get(&(height, attempt)) {
            Some(set) => Some(set),
            None => self
                .byzantine_at
                .range(..(height, 0))
                .next_back()
                .filter(|((h, _), _)| *h + 1 == height)
                .map(|(_, set)| set),
        };
        set.is_some_and(|s| s.contains(&node))
    }

    /// The nodes (by index) of the committee of `stage` at `height`, as last assigned; `None`
    /// for the directory's or a committee no honest node was seen assigned to.
    pub fn committee(&self, height: u64, stage: Stage) -> Option<Vec<usize>> {
        let members = match stage {
            Stage::Shard(j) => self.members.get(&(height, j)),
            Stage::Final => self.final_members.get(&height),
            Stage::Directory => None,
        }?;
        Some(
            members
                .iter()
                .filter_map(|k| self.index.get(k).copied())
                .collect(),
        )
    }

    /// Corrupts `f` members of a committee of `height`'s attempt `attempt` just published, or
    /// as many as it tolerates if fewer (the same ones whichever member's assignment shows it
    /// first).
    fn corrupt(&mut self, height: u64, attempt: u32, members: &[PublicKey]) {
        let Some(f) = self.per_committee else {
            return;
        };
        let seed = self.cfg.seed.to_le_bytes();
        let mut ranked: Vec<(blake3::Hash, usize)> = members
            .iter()
            .filter_map(|k| {
                let i = *self.index.get(k)?;
                let rank = blake3::hash(&[&seed[..], &height.to_le_bytes(), k.as_bytes()].concat());
                Some((rank, i))
            })
            .collect();
        ranked.sort_by_key(|(rank, _)| *rank.as_bytes());
        let set = self.byzantine_at.entry((height, attempt)).or_default();
        // A member list seen again (every member's assignment shows it; the final committee is
        // also committee 0) already holds its `f`.
        // Within the bound: a committee that did not fill tolerates fewer.
        let limit = usize::from(f).min(members.len().saturating_sub(self.params.quorum()));
        let mut corrupted = ranked.iter().filter(|(_, i)| set.contains(i)).count();
        for (_, i) in &ranked {
            if corrupted >= limit {
                break;
            }
            if set.insert(*i) {
                corrupted += 1;
            }
        }
    }

    /// The chain the produced blocks are appended to.
    pub fn chain(&self) -> &Chain<CommitteeConsensus> {
        &self.host.chain
    }

    /// The chain the produced blocks were appended to.
    pub fn into_chain(self) -> Chain<CommitteeConsensus> {
        self.host.chain
    }

    /// For every agreement `(height, stage)`, the values honest nodes decided (one each when the
    /// protocol is safe).
    pub fn decisions(&self) -> &Decisions {
        &self.decided
    }

    /// Takes the decisions out (see [`decisions`](Self::decisions)).
    pub fn take_decisions(&mut self) -> Decisions {
        core::mem::take(&mut self.decided)
    }

    /// Agreements in which honest nodes decided different values, and heights whose final
    /// agreements decided different values in different attempts (two blocks at one height).
    pub fn safety_violations(&self) -> u64 {
        let within = self.decided.values().filter(|s| s.len() > 1).count() as u64;
        let mut finals: BTreeMap<u64, (usize, BTreeSet<Digest>)> = BTreeMap::new();
        for ((height, _, stage), set) in &self.decided {
            if *stage == Stage::Final {
                let f = finals.entry(*height).or_default();
                f.0 += 1;
                f.1.extend(set);
            }
        }
        let across = finals
            .values()
            .filter(|(attempts, values)| *attempts > 1 && values.len() > 1)
            .count() as u64;
        within + across
    }

    /// Of the [`safety_violations`](Self::safety_violations) within agreements, those whose
    /// committee held more Byzantine members than it tolerates.
    pub fn violations_beyond_bound(&self) -> u64 {
        self.decided
            .iter()
            .filter(|((height, attempt, stage), set)| {
                let members = match stage {
                    Stage::Shard(j) => self.members.get(&(*height, *j)),
                    Stage::Final => self.final_members.get(height),
                    Stage::Directory => None,
                };
                set.len() > 1 && members.is_some_and(|m| self.beyond_bound(*height, *attempt, m))
            })
            .count() as u64
    }

    /// Whether a committee of `members` in attempt `attempt` at `height` holds more Byzantine
    /// nodes than it tolerates.
    fn beyond_bound(&self, height: u64, attempt: u32, members: &[PublicKey]) -> bool {
        let byzantine = members
            .iter()
            .filter(|k| {
                self.index
                    .get(*k)
                    .is_some_and(|i| self.byzantine_at(*i, height, attempt))
            })
            .count();
        byzantine > members.len().saturating_sub(self.params.quorum())
    }

    /// Rounds beyond the first that decisions needed, summed over agreements (each agreement
    /// counted at the earliest round an honest node decided it in).
    pub fn view_changes(&self) -> u64 {
        self.decide_round.values().map(|r| u64::from(*r)).sum()
    }

    /// Committees whose Byzantine members exceeded what they tolerate.
    pub fn committee_failures(&self) -> u64 {
        self.committee_failures
    }

    /// Committees published with fewer members than a quorum.
    pub fn undersized_committees(&self) -> u64 {
        self.undersized
    }

    /// The committee report of a run on the network that measured `engine`.
    pub fn report(&self, engine: EngineReport) -> Report {
        let mut h = blake3::Hasher::new();
        h.update(&engine.fingerprint);
        for ((height, attempt, stage), set) in &self.decided {
            h.update(&height.to_le_bytes());
            h.update(&attempt.to_le_bytes());
            h.update(format!("{stage}").as_bytes());
            for d in set {
                h.update(d.as_bytes());
            }
        }
        Report {
            blocks: engine.blocks,
            txs: engine.txs,
            sim_time_us: engine.sim_time_us,
            tx_per_sec: engine.tx_per_sec,
            latency_p50_us: engine.finality_p50_us,
            latency_p99_us: engine.finality_p99_us,
            messages_per_node: engine.messages_per_node,
            bytes_per_node: engine.bytes_per_node,
            view_changes: self.view_changes(),
            committee_failures: self.committee_failures,
            undersized_committees: self.undersized,
            safety_violations: self.safety_violations(),
            violations_beyond_bound: self.violations_beyond_bound(),
            chain_rejections: engine.refused_appends,
            fingerprint: *h.finalize().as_bytes(),
            engine,
        }
    }

    /// Records what an honest node's step shows of the protocol: committees it published and
    /// values it decided.
    fn observe(&mut self, node: usize, now: Time, outputs: &Outputs<Node>) {
        self.trace_rounds(node, now);
        for d in self.nodes[node].take_decisions() {
            let t = self
                .trace
                .agreements
                .entry((d.height, d.attempt, d.stage))
                .or_default();
            if t.decided.is_none_or(|(at, _)| now < at) {
                t.decided = Some((now, d.round));
            }
            self.decided
                .entry((d.height, d.attempt, d.stage))
                .or_default()
                .insert(d.value);
            let r = self
                .decide_round
                .entry((d.height, d.attempt, d.stage))
                .or_insert(d.round);
            *r = (*r).min(d.round);
        }
        let attempt = self.nodes[node].status().attempt;
        for o in outputs {
            match o {
                Output::Send {
                    message: Message::Assignment(m),
                    ..
                } => self.record_membership(m, attempt),
                Output::Send {
                    message:
                        Message::Proposal(Proposal {
                            height,
                            stage,
                            round,
                            ..
                        }),
                    ..
                }
                | Output::Send {
                    message:
                        Message::DigestProposal(DigestProposal {
                            height,
                            stage,
                            round,
                            ..
                        }),
                    ..
                } => {
                    self.trace
                        .agreements
                        .entry((*height, attempt, *stage))
                        .or_default()
                        .proposed_us
                        .entry(*round)
                        .or_insert(now);
                }
                _ => {}
            }
        }
    }

    /// An honest member's certified shard result also goes to two members of the committee of
    /// every other shard its cross-shard transactions touch.
    fn forward_cross_shard(&mut self, node: usize, mut outputs: Outputs<Node>) -> Outputs<Node> {
        if self.host.partner.is_empty() {
            return outputs;
        }
        let mut results = Vec::new();
        for o in &outputs {
            let Output::Send { message, .. } = o else {
                continue;
            };
            match message {
                Message::ShardResult(r) => results.push(r.clone()),
                Message::ShardBatch(b) => {
                    self.sent_ahead.insert(node, b.clone());
                }
                Message::ShardCertified(c) => {
                    let Some(b) = self.sent_ahead.get(&node) else {
                        continue;
                    };
                    if b.height == c.height
                        && ShardValue::summary_of(&b.txs, b.shard) == c.cert.summary
                    {
                        results.push(ShardResult {
                            height: c.height,
                            parent: c.parent,
                            cert: c.cert.clone(),
                            txs: b.txs.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        let mut extra = Vec::new();
        for r in &results {
            let partners: BTreeSet<u16> = r
                .txs
                .iter()
                .filter_map(|t| self.host.partner.get(&t.id()).copied())
                .collect();
            // Like the results sent to the final committee: each member to two members of the
            // other committee, picked by its own place in its committee.
            let me = self
                .members
                .get(&(r.height, r.cert.summary.shard))
                .and_then(|m| m.iter().position(|k| *k == self.keys[node]))
                .unwrap_or(0);
            for p in partners {
                let Some(members) = self.members.get(&(r.height, p)) else {
                    continue;
                };
                if members.is_empty() {
                    continue;
                }
                let mut to: Vec<PublicKey> = [me % members.len(), (me + 1) % members.len()]
                    .iter()
                    .map(|i| members[*i])
                    .filter(|k| *k != self.keys[node])
                    .collect();
                to.dedup();
                if !to.is_empty() {
                    extra.push(Output::Send {
                        to: Recipients::Some(to),
                        message: Message::ShardResult(r.clone()),
                    });
                }
            }
        }
        outputs.extend(extra);
        outputs
    }

    /// Notes when an honest node began its epoch and entered a round of its agreements.
    fn trace_rounds(&mut self, node: usize, now: Time) {
        let s = self.nodes[node].status();
        self.trace.epoch_started_us.entry(s.height).or_insert(now);
        let shard = s
            .committee
            .zip(s.shard_round)
            .map(|(j, r)| (Stage::Shard(j), r));
        let fin = s.final_round.map(|r| (Stage::Final, r));
        for (stage, round) in shard.into_iter().chain(fin) {
            let t = self
                .trace
                .agreements
                .entry((s.height, s.attempt, stage))
                .or_default();
            t.started_us.get_or_insert(now);
            let r = round as usize;
            while t.rounds_us.len() < r {
                t.rounds_us.push(now);
            }
        }
    }

    /// What happened in each epoch so far: when agreements began, changed rounds and decided,
    /// who led their rounds, and when blocks were final.
    pub fn trace(&self) -> Trace {
        let mut trace = self.trace.clone();
        for ((height, attempt, stage), t) in &mut trace.agreements {
            let members = match stage {
                Stage::Shard(j) => self.members.get(&(*height, *j)),
                Stage::Final => self.final_members.get(height),
                Stage::Directory => None,
            };
            let (Some(members), Some((_, round))) = (members, t.decided) else {
                continue;
            };
            if members.is_empty() {
                continue;
            }
            t.byzantine_leaders = (0..=u64::from(round))
                .map(|r| {
                    let leader = members[((*height + r) % members.len() as u64) as usize];
                    self.index
                        .get(&leader)
                        .is_some_and(|i| self.byzantine_at(*i, *height, *attempt))
                })
                .collect();
        }
        trace
    }

    fn record_membership(&mut self, m: &CommitteeAssignment, attempt: u32) {
        let finals: Vec<PublicKey> = m.final_members.iter().map(|p| p.key).collect();
        self.corrupt(m.height, attempt, &finals);
        self.final_members.insert(m.height, finals);
        if let Some(j) = m.committee {
            let members: Vec<PublicKey> = m.members.iter().map(|p| p.key).collect();
            self.corrupt(m.height, attempt, &members);
            self.members.insert((m.height, j), members);
        }
        if !self.committees_seen.insert((m.height, m.committee)) || m.committee.is_none() {
            return;
        }
        let members: Vec<PublicKey> = m.members.iter().map(|p| p.key).collect();
        if members.len() < self.params.quorum() {
            self.undersized += 1;
        } else if self.beyond_bound(m.height, attempt, &members) {
            self.committee_failures += 1;
        }
    }

    /// The equivocating twin of a Byzantine node's message: for a proposal, a second valid
    /// proposal of the same round (both values are remembered); for a vote, the same vote for
    /// the other value a Byzantine leader proposed in that round, if there is one (a vote for a
    /// value nobody proposed would only be noise).
    fn twin(&mut self, node: usize, m: &Message) -> Option<Message> {
        match m {
            Message::Proposal(p) => {
                let other = conflicting(&self.seeds[node], self.nodes[node].status().attempt, m)?;
                if let Message::Proposal(q) = &other {
                    self.twins.insert(
                        (p.height, p.stage, p.round),
                        [p.value.digest(p.stage), q.value.digest(q.stage)],
                    );
                }
                Some(other)
            }
            Message::DigestProposal(p) => {
                // A re-proposal by digest: its twin is the same proposal of the other value
                // an earlier round of this agreement was equivocated on, which the other half
                // of the committee holds.
                let other = (0..p.round).rev().find_map(|r| {
                    let pair = self.twins.get(&(p.height, p.stage, r))?;
                    pair.iter().copied().find(|d| *d != p.value)
                })?;
                let attempt = self.nodes[node].status().attempt;
                let body = VoteBody {
                    height: p.height,
                    parent: p.parent,
                    stage: p.stage,
                    attempt,
                    round: p.round,
                    phase: Phase::Propose,
                    value: other,
                };
                let q = DigestProposal {
                    value: other,
                    pol: None,
                    signature: Keypair::from_seed(&self.seeds[node]).sign(&body.digest()),
                    ..p.clone()
                };
                self.twins
                    .insert((p.height, p.stage, p.round), [p.value, other]);
                Some(Message::DigestProposal(q))
            }
            Message::Vote(v) => {
                let [a, b] = *self.twins.get(&(v.height, v.stage, v.round))?;
                let value = if v.value == a { b } else { a };
                Some(vote_for(
                    &self.seeds[node],
                    self.nodes[node].status().attempt,
                    v,
                    value,
                ))
            }
            _ => None,
        }
    }

    /// The prevotes and precommits of every Byzantine member of the committee of proposal `p`
    /// (in full or by digest) for its value in its round, signed by each (none for another
    /// message): an equivocating leader sends them with its
    /// proposal, so that the honest members shown `value` see the Byzantine members' votes
    /// before any honest member's prevote could show them that the leader equivocated. Beyond
    /// what a committee tolerates, that makes honest members decide at once; within it, the
    /// votes make no quorum. Empty for the directory's agreement (its members are not
    /// recorded).
    fn votes_ahead(&self, node: usize, p: &Message) -> Vec<Message> {
        let (p, value) = match p {
            Message::Proposal(p) => (
                (p.height, p.parent, p.stage, p.round),
                p.value.digest(p.stage),
            ),
            Message::DigestProposal(p) => ((p.height, p.parent, p.stage, p.round), p.value),
            _ => return Vec::new(),
        };
        let (height, parent, stage, round) = p;
        let members = match stage {
            Stage::Shard(j) => self.members.get(&(height, j)),
            Stage::Final => self.final_members.get(&height),
            Stage::Directory => None,
        };
        let attempt = self.nodes[node].status().attempt;
        let mut out = Vec::new();
        for (i, key) in members.into_iter().flatten().enumerate() {
            let Some(&voter) = self
                .index
                .get(key)
                .filter(|v| self.byzantine_at(**v, height, attempt))
            else {
                continue;
            };
            let keypair = Keypair::from_seed(&self.seeds[voter]);
            for phase in [Phase::Prevote, Phase::Precommit] {
                let body = VoteBody {
                    height,
                    parent,
                    stage,
                    attempt,
                    round,
                    phase,
                    value,
                };
                out.push(Message::Vote(Vote {
                    height,
                    parent,
                    stage,
                    round,
                    phase,
                    value,
                    member: i as u16,
                    signature: keypair.sign(&body.digest()),
                    proposal: None,
                }));
            }
        }
        out
    }

    /// What Byzantine `node` does with its engine's outputs, by the configured [`Strategy`].
    /// Its blocks and progress are dropped: nothing a Byzantine node decides is counted.
    fn misbehave(&mut self, node: usize, outputs: Outputs<Node>) -> Outputs<Node> {
        self.nodes[node].take_decisions();
        let mut out = Vec::with_capacity(outputs.len());
        for o in outputs {
            let (mut targets, message) = match o {
                Output::Send {
                    to: Recipients::Some(targets),
                    message,
                } => (targets, message),
                Output::Send { .. } | Output::SetTimer { .. } | Output::CancelTimer(_) => {
                    out.push(o);
                    continue;
                }
                Output::Append(_) | Output::Progress { .. } | Output::Evidence(_) => continue,
            };
            // An equivocator's prevotes never carry its leader's signature of the proposal:
            // that would hand honest members the proof that a Byzantine leader equivocated.
            let message = match self.cfg.strategy {
                Strategy::Equivocating => strip(message),
                _ => message,
            };
            match self.cfg.strategy {
                // Registers an identity (so it is drawn into committees), then says nothing.
                Strategy::Silent => {
                    if matches!(message, Message::Identity { .. }) {
                        out.push(send(targets, message));
                    }
                }
                Strategy::Withholding => {
                    let keep = match &message {
                        Message::Proposal(_) | Message::DigestProposal(_) => {
                            targets.len().div_ceil(3)
                        }
                        Message::Vote(v) if v.phase == Phase::Precommit => 0,
                        Message::ShardResult(_)
                        | Message::ShardBatch(_)
                        | Message::ShardCertified(_)
                        | Message::Next(_)
                        | Message::Assignment(_) => 0,
                        _ => targets.len(),
                    };
                    targets.truncate(keep);
                    if !targets.is_empty() {
                        out.push(send(targets, message));
                    }
                }
                Strategy::Equivocating => match self.twin(node, &message) {
                    // One half of the recipients gets the message, the other half its twin;
                    // every Byzantine node splits the committee the same way (by key), so
                    // each half sees one value proposed and voted for.
                    Some(other) => {
                        let (targets, second): (Vec<_>, Vec<_>) =
                            targets.into_iter().partition(|k| k.as_bytes()[0] % 2 == 0);
                        // A leader's two proposals go with the Byzantine members' votes for
                        // each.
                        let ahead = |m: &Message| self.votes_ahead(node, m);
                        let (first_votes, second_votes) = (ahead(&message), ahead(&other));
                        if !targets.is_empty() {
                            out.push(send(targets.clone(), message));
                            for v in first_votes {
                                out.push(send(targets.clone(), v));
                            }
                        }
                        if !second.is_empty() {
                            out.push(send(second.clone(), other));
                            for v in second_votes {
                                out.push(send(second.clone(), v));
                            }
                        }
                    }
                    None => out.push(send(targets, message)),
                },
            }
        }
        out
    }
}

/// One output of a committee node.
type NodeOutput = Output<
    Message,
    <Node as Protocol>::Timer,
    <Node as Protocol>::Block,
    <Node as Protocol>::Evidence,
>;

fn send(to: Vec<PublicKey>, message: Message) -> NodeOutput {
    Output::Send {
        to: Recipients::Some(to),
        message,
    }
}

/// `message` without the leader's signature of the proposal a prevote may carry.
fn strip(message: Message) -> Message {
    match message {
        Message::Vote(mut v) => {
            v.proposal = None;
            Message::Vote(v)
        }
        other => other,
    }
}

/// `v` for `value` instead, signed with the key of `seed` in attempt `attempt`.
fn vote_for(seed: &[u8; 32], attempt: u32, v: &Vote, value: Digest) -> Message {
    let mut w = v.clone();
    w.value = value;
    let body = VoteBody {
        height: w.height,
        parent: w.parent,
        stage: w.stage,
        attempt,
        round: w.round,
        phase: w.phase,
        value,
    };
    w.signature = Keypair::from_seed(seed).sign(&body.digest());
    Message::Vote(w)
}

/// A second, conflicting and valid version of a proposal, signed with the key of `seed` in
/// attempt `attempt`.
fn conflicting(seed: &[u8; 32], attempt: u32, m: &Message) -> Option<Message> {
    let key = Keypair::from_seed(seed);
    match m {
        Message::Proposal(p) => {
            let mut q: Proposal = p.clone();
            match &mut q.value {
                Value::Shard(v) => {
                    let mut txs = v.txs.to_vec();
                    txs.pop()?;
                    v.txs = codec::BoundedVec::try_from(txs).ok()?;
                }
                Value::Final(v) => v.timestamp += 1,
                Value::Roster(r) => {
                    // The same roster but for one member: still a valid proposal.
                    let mut lists = r.committees.to_vec();
                    let longest = lists.iter_mut().max_by_key(|l| l.len())?;
                    let mut members = longest.to_vec();
                    members.pop()?;
                    *longest = codec::BoundedVec::try_from(members).ok()?;
                    r.committees = codec::BoundedVec::try_from(lists).ok()?;
                }
            }
            q.pol = None;
            let body = VoteBody {
                height: q.height,
                parent: q.parent,
                stage: q.stage,
                attempt,
                round: q.round,
                phase: Phase::Propose,
                value: q.value.digest(q.stage),
            };
            q.signature = key.sign(&body.digest());
            Some(Message::Proposal(q))
        }
        _ => None,
    }
}

impl Deployment for CommitteeDeployment {
    type Engine = Node;

    fn name(&self) -> String {
        "committee".to_string()
    }

    fn nodes(&self) -> usize {
        self.nodes.len()
    }

    fn key(&self, node: usize) -> PublicKey {
        self.keys[node]
    }

    fn handle(&mut self, node: usize, now: Time, input: ProtocolInput<Node>) -> Handled<Node> {
        // Offers and appends are the host's (the shared pool and chain): they cost the node
        // nothing; every other input costs the fixed cost of a message plus what the host
        // charges.
        self.host.cpu_ns = match input {
            Input::Transactions(_) | Input::Appended => 0,
            Input::Start | Input::Message { .. } | Input::Timer(_) => self.cfg.cpu.message_ns,
        };
        let outputs = match self.nodes[node].handle(&mut self.host, now, input) {
            Ok(outputs) => outputs,
            Err(never) => match never {},
        };
        let cpu_ns = self.host.cpu_ns;
        let status = self.nodes[node].status();
        let outputs = if self.byzantine_at(node, status.height, status.attempt) {
            self.misbehave(node, outputs)
        } else {
            self.observe(node, now, &outputs);
            self.forward_cross_shard(node, outputs)
        };
        Handled { outputs, cpu_ns }
    }

    fn append(
        &mut self,
        _node: usize,
        now: Time,
        block: <Node as Protocol>::Block,
    ) -> Result<(Vec<Finalised>, u64), String> {
        let height = block.header.height;
        self.trace.final_us.entry(height).or_insert(now);
        let id = Digest::from_bytes(*block.hash().as_bytes());
        let txs: Vec<TxId> = block.txs.iter().map(Transaction::id).collect();
        // The first final member's block of a height is appended; the others' copies of it are
        // not (the agreement check compares their hashes).
        if self.cfg.append_to_chain && height > self.host.chain.height() {
            self.host.clock.set(now / SECOND + 1);
            self.host.chain.append(block).map_err(|e| e.to_string())?;
        }
        Ok((vec![Finalised { height, id, txs }], 0))
    }

    fn workload(&mut self, _now: Time) -> Vec<(TxId, Transaction)> {
        self.host.prune();
        self.host.release();
        let mut offered = Vec::new();
        for shard in 0..self.cfg.committees() {
            let have = self.host.pools[shard].len() + self.host.held[shard].len();
            if have < self.cfg.block_size {
                let new = self.host.refill(shard, self.cfg.block_size - have);
                offered.extend(new.into_iter().map(|tx| (tx.id(), tx)));
            }
        }
        offered
    }

    fn offers_transactions(&self) -> bool {
        false
    }

    fn restart(&mut self, node: usize) {
        self.nodes[node] = self.node_at_tip(node);
    }

    fn equivocate(&mut self, node: usize, message: &Message) -> Option<Message> {
        conflicting(
            &self.seeds[node],
            self.nodes[node].status().attempt,
            message,
        )
    }
}
