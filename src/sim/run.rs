//! The event loop, the simulated network and CPUs, and the memoising host.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::{Report, SimConfig, SimError, Strategy};
use crate::block::Header;
use crate::chain::ManualClock;
use crate::codec;
use crate::committee::{
    CommitteeConsensus, CommitteeParams, CommitteeSeal, Host, Message, Node, NodeConfig, Output,
    Phase, Proposal, Stage, TipInfo, Value, Vote, VoteBody,
};
use crate::hash::{AccountId, BlockHash, Digest, StateRoot, TxId};
use crate::tx::{Keypair, PublicKey, Signature};
use crate::{Chain, ChainBuilder, Payload, Transaction};

/// Genesis time of simulated chains (Unix seconds).
const GENESIS_TIME: u64 = 1_800_000_000;
/// Accounts per shard sending transactions.
const ACCOUNTS_PER_SHARD: usize = 16;

struct Account {
    key: Keypair,
    next_nonce: u64,
}

/// The shared ledger: the real chain, memo tables and the pending pools.
struct Ledger {
    chain: Chain<CommitteeConsensus>,
    clock: Arc<ManualClock>,
    sig_cache: HashMap<[u8; 32], bool>,
    tx_cache: HashMap<TxId, bool>,
    root_cache: HashMap<[u8; 32], Option<StateRoot>>,
    pools: Vec<VecDeque<(Transaction, u64)>>,
    submitted: HashMap<TxId, u64>,
    accounts: Vec<Vec<Account>>,
    record: u64,
}

impl Ledger {
    fn refill(&mut self, shard: usize, count: usize, now: u64) {
        let chain_id = self.chain.chain_id();
        for i in 0..count {
            let accs = &mut self.accounts[shard];
            let n = accs.len();
            let a = &mut accs[i % n];
            self.record += 1;
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
            self.submitted.insert(tx.id(), now);
            self.pools[shard].push_back((tx, now));
        }
    }

    /// Drops committed transactions from the pools' fronts.
    fn prune(&mut self) {
        let state = self.chain.state();
        for pool in &mut self.pools {
            pool.retain(|(tx, _)| state.next_nonce(&tx.signer().account()) <= tx.body.nonce);
        }
    }
}

struct SimHost<'a> {
    ledger: &'a mut Ledger,
    cpu_ns: u64,
    cpu: &'a super::CpuModel,
}

impl Host for SimHost<'_> {
    fn verify_signatures(
        &mut self,
        items: &[(PublicKey, [u8; 32], Signature)],
    ) -> Result<(), usize> {
        self.cpu_ns += self.cpu.sig_verify_ns * items.len() as u64;
        for (i, (k, m, s)) in items.iter().enumerate() {
            let id = blake3::hash(&[k.as_bytes().as_slice(), m, &s.to_bytes()].concat());
            let ok = *self
                .ledger
                .sig_cache
                .entry(*id.as_bytes())
                .or_insert_with(|| {
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
        let chain_id = self.ledger.chain.chain_id();
        let missing: Vec<Transaction> = txs
            .iter()
            .filter(|t| !self.ledger.tx_cache.contains_key(&t.id()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let ok = crate::tx::verify_batch(chain_id, missing.clone()).is_ok();
            for t in missing {
                let good = ok || (t.body.chain_id == chain_id && t.clone().verify().is_ok());
                self.ledger.tx_cache.insert(t.id(), good);
            }
        }
        txs.iter()
            .all(|t| self.ledger.tx_cache.get(&t.id()) == Some(&true))
    }

    fn next_nonce(&mut self, parent: &BlockHash, account: &AccountId) -> Option<u64> {
        (self.ledger.chain.tip() == *parent).then(|| self.ledger.chain.state().next_nonce(account))
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
        if let Some(r) = self.ledger.root_cache.get(&key) {
            return *r;
        }
        let chain = &mut self.ledger.chain;
        let r = if chain.tip() == *parent && chain.height() + 1 == height {
            match chain.build_template(txs.to_vec(), timestamp) {
                Ok(t) if t.rejected.is_empty() => Some(t.state_root),
                _ => None,
            }
        } else {
            None
        };
        self.ledger.root_cache.insert(key, r);
        r
    }

    fn take_txs(&mut self, parent: &BlockHash, shard: u16, max: usize) -> Vec<Transaction> {
        if self.ledger.chain.tip() != *parent {
            return Vec::new();
        }
        self.ledger.pools[usize::from(shard)]
            .iter()
            .take(max)
            .map(|(t, _)| t.clone())
            .collect()
    }

    fn hashed(&mut self, count: u64) {
        self.cpu_ns += self.cpu.hash_ns * count;
    }
}

enum EvKind {
    Start(usize),
    Tick(usize),
    Deliver {
        to: usize,
        from: usize,
        msg: Rc<Message>,
    },
}

struct Ev {
    time: u64,
    seq: u64,
    kind: EvKind,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

/// A configured simulation; [`run`](Self::run) consumes it.
pub struct Simulation {
    cfg: SimConfig,
    params: CommitteeParams,
    nodes: Vec<Node>,
    seeds: Vec<[u8; 32]>,
    keys: Vec<PublicKey>,
    index: HashMap<PublicKey, usize>,
    byzantine: Vec<bool>,
    ledger: Ledger,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<Ev>>,
    seq: u64,
    busy_until: Vec<u64>,
    up_free: Vec<u64>,
    down_free: Vec<u64>,
    pair_latency: HashMap<(usize, usize), u64>,
    sent_msgs: u64,
    sent_bytes: u64,
    decided: BTreeMap<(u64, Stage), BTreeSet<Digest>>,
    decide_round: BTreeMap<(u64, Stage), u32>,
    committees_seen: BTreeSet<(u64, Option<u16>)>,
    committee_failures: u64,
    undersized: u64,
    commit_times: Vec<u64>,
    block_txs: Vec<u64>,
    latencies: Vec<u64>,
    chain_rejections: u64,
    blocks_seen: BTreeSet<u64>,
}

impl core::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Simulation")
            .field("nodes", &self.nodes.len())
            .field("committees", &self.cfg.committees())
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// Sets up nodes, keys, accounts and the chain.
    ///
    /// # Errors
    ///
    /// [`SimError`] if the committee parameters are invalid.
    pub fn new(cfg: SimConfig) -> Result<Self, SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let params = CommitteeParams::builder()
            .shard_bits(cfg.shard_bits)
            .committee_size(cfg.committee_size)
            .identity_difficulty(cfg.identity_difficulty)
            .genesis_seed(cfg.seed.to_le_bytes())
            .build()?;
        let clock = Arc::new(ManualClock::new(GENESIS_TIME));
        let chain = ChainBuilder::new("medledger-sim", CommitteeConsensus::new(params.clone()))
            .genesis_time(GENESIS_TIME)
            .clock(clock.clone())
            .build()
            .map_err(|e| SimError::Config(e.to_string()))?;
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
        let genesis: Header<CommitteeSeal> = chain.header_at(0).expect("genesis").clone();
        let bootstrap: Vec<PublicKey> = keys
            .iter()
            .take(usize::from(cfg.committee_size))
            .copied()
            .collect();
        let tip = TipInfo::of_header(&genesis, &bootstrap);
        let nodes: Vec<Node> = seeds
            .iter()
            .map(|s| {
                Node::new(NodeConfig {
                    params: params.clone(),
                    keypair: Keypair::from_seed(s),
                    peers: keys.clone(),
                    tip: tip.clone(),
                    timing: cfg.timing,
                    max_shard_txs: cfg.block_size,
                })
            })
            .collect();
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
        let mut ledger = Ledger {
            chain,
            clock,
            sig_cache: HashMap::new(),
            tx_cache: HashMap::new(),
            root_cache: HashMap::new(),
            pools: (0..k).map(|_| VecDeque::new()).collect(),
            submitted: HashMap::new(),
            accounts,
            record: 0,
        };
        for s in 0..k {
            ledger.refill(s, cfg.block_size, 0);
        }
        let n = cfg.nodes;
        Ok(Self {
            cfg,
            params,
            nodes,
            seeds,
            keys,
            index,
            byzantine,
            ledger,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            busy_until: vec![0; n],
            up_free: vec![0; n],
            down_free: vec![0; n],
            pair_latency: HashMap::new(),
            sent_msgs: 0,
            sent_bytes: 0,
            decided: BTreeMap::new(),
            decide_round: BTreeMap::new(),
            committees_seen: BTreeSet::new(),
            committee_failures: 0,
            undersized: 0,
            commit_times: Vec::new(),
            block_txs: Vec::new(),
            latencies: Vec::new(),
            chain_rejections: 0,
            blocks_seen: BTreeSet::new(),
        })
    }

    /// Which nodes are Byzantine (by index).
    pub fn byzantine(&self) -> &[bool] {
        &self.byzantine
    }

    /// The chain the produced blocks were appended to.
    pub fn chain(&self) -> &Chain<CommitteeConsensus> {
        &self.ledger.chain
    }

    fn push(&mut self, time: u64, kind: EvKind) {
        self.seq += 1;
        self.queue.push(Reverse(Ev {
            time,
            seq: self.seq,
            kind,
        }));
    }

    /// Runs until the configured number of blocks is committed (or the time limit), and
    /// reports.
    pub fn run(self) -> Report {
        self.run_with_decisions().0
    }

    /// Runs, and also returns, for every agreement `(height, stage)`, the set of values honest
    /// nodes decided (one each when the protocol is safe).
    pub fn run_with_decisions(mut self) -> (Report, BTreeMap<(u64, Stage), BTreeSet<Digest>>) {
        self.start_all();
        self.drain();
        let report = self.report();
        (report, core::mem::take(&mut self.decided))
    }

    /// Runs, and hands back the chain every produced block was appended to.
    pub fn run_to_chain(mut self) -> (Report, Chain<CommitteeConsensus>) {
        self.start_all();
        self.drain();
        (self.report(), self.ledger.chain)
    }

    fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.push(0, EvKind::Start(i));
        }
    }

    fn latency(&mut self, a: usize, b: usize) -> u64 {
        let net = self.cfg.network;
        let key = (a.min(b), a.max(b));
        if let Some(l) = self.pair_latency.get(&key) {
            return *l;
        }
        let span = net.max_latency_us - net.min_latency_us + 1;
        let l = net.min_latency_us + self.rng.next_u64() % span;
        self.pair_latency.insert(key, l);
        l
    }

    fn transmit(&mut self, from: usize, to: usize, at: u64, msg: Rc<Message>, size: usize) {
        let net = self.cfg.network;
        self.sent_msgs += 1;
        self.sent_bytes += size as u64;
        let bits = size as u64 * 8;
        let tx_us = (bits * 1_000_000).div_ceil(net.bandwidth_bps);
        let depart = at.max(self.up_free[from]);
        self.up_free[from] = depart + tx_us;
        if net.drop_ppm > 0 && (self.rng.next_u64() % 1_000_000) < u64::from(net.drop_ppm) {
            return;
        }
        let jitter = if net.jitter_us > 0 {
            self.rng.next_u64() % (net.jitter_us + 1)
        } else {
            0
        };
        let arrive = depart + tx_us + self.latency(from, to) + jitter;
        let recv = arrive.max(self.down_free[to]) + tx_us;
        self.down_free[to] = recv;
        self.push(recv, EvKind::Deliver { to, from, msg });
    }

    fn apply_outputs(&mut self, node: usize, done: u64, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Send { to, message } => self.send(node, done, to, message),
                Output::Timer(at) => {
                    let t = at.saturating_sub(GENESIS_TIME * 1_000_000).max(done);
                    self.push(t, EvKind::Tick(node));
                }
                Output::Decided {
                    height,
                    stage,
                    round,
                    value,
                } if !self.byzantine[node] => {
                    self.decided
                        .entry((height, stage))
                        .or_default()
                        .insert(value);
                    let r = self.decide_round.entry((height, stage)).or_insert(round);
                    *r = (*r).min(round);
                }
                Output::Block { header, txs } if !self.byzantine[node] => {
                    self.on_block(*header, txs, done);
                }
                _ => {}
            }
        }
    }

    fn on_block(&mut self, header: Header<CommitteeSeal>, txs: Vec<Transaction>, now: u64) {
        if !self.blocks_seen.insert(header.height) {
            return;
        }
        let n = txs.len() as u64;
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        if self.cfg.append_to_chain {
            self.ledger.clock.set(GENESIS_TIME + now / 1_000_000 + 1);
            let block = crate::block::Block {
                header,
                txs: codec::BoundedVec::try_from(txs).expect("within block limits"),
            };
            if self.ledger.chain.append(block).is_err() {
                self.chain_rejections += 1;
                return;
            }
        }
        for id in &ids {
            if let Some(t) = self.ledger.submitted.remove(id) {
                self.latencies.push(now.saturating_sub(t));
            }
        }
        self.commit_times.push(now);
        self.block_txs.push(n);
        self.ledger.prune();
        let k = self.cfg.committees();
        for s in 0..k {
            let have = self.ledger.pools[s].len();
            if have < self.cfg.block_size {
                self.ledger.refill(s, self.cfg.block_size - have, now);
            }
        }
    }

    fn record_membership(&mut self, m: &crate::committee::CommitteeAssignment) {
        if !self.committees_seen.insert((m.height, m.committee)) || m.committee.is_none() {
            return;
        }
        let members = m.members.len();
        let byz = m
            .members
            .iter()
            .filter(|p| self.index.get(&p.key).is_some_and(|i| self.byzantine[*i]))
            .count();
        let q = self.params.quorum();
        if members < q {
            self.undersized += 1;
        } else if byz > members - q {
            self.committee_failures += 1;
        }
    }

    fn send(&mut self, node: usize, at: u64, to: Vec<PublicKey>, message: Message) {
        if let Message::Assignment(m) = &message {
            if !self.byzantine[node] {
                self.record_membership(m);
            }
        }
        let targets: Vec<usize> = to
            .iter()
            .filter_map(|k| self.index.get(k).copied())
            .collect();
        if self.byzantine[node] {
            match self.cfg.strategy {
                Strategy::Silent => {
                    // Registers an identity (so it is drawn into committees), then says nothing.
                    if !matches!(message, Message::Identity { .. }) {
                        return;
                    }
                }
                Strategy::Withholding => {
                    let keep = match &message {
                        Message::Proposal(_) => targets.len().div_ceil(3),
                        Message::Vote(v) if v.phase == Phase::Precommit => 0,
                        Message::ShardResult(_) | Message::Next(_) | Message::Assignment(_) => 0,
                        _ => targets.len(),
                    };
                    let msg = Rc::new(message);
                    let size = codec::encode(&*msg).len();
                    for &t in targets.iter().take(keep) {
                        self.transmit(node, t, at, msg.clone(), size);
                    }
                    return;
                }
                Strategy::Equivocating => {
                    if let Some(other) = self.conflicting(node, &message) {
                        let half = targets.len() / 2;
                        let (a, b) = (Rc::new(message), Rc::new(other));
                        let (sa, sb) = (codec::encode(&*a).len(), codec::encode(&*b).len());
                        for (i, &t) in targets.iter().enumerate() {
                            if i < half {
                                self.transmit(node, t, at, a.clone(), sa);
                            } else {
                                self.transmit(node, t, at, b.clone(), sb);
                            }
                        }
                        return;
                    }
                }
            }
        }
        let msg = Rc::new(message);
        let size = codec::encode(&*msg).len();
        for t in targets {
            self.transmit(node, t, at, msg.clone(), size);
        }
    }

    /// A second, conflicting version of a proposal or vote, signed by `node`.
    fn conflicting(&self, node: usize, m: &Message) -> Option<Message> {
        let key = Keypair::from_seed(&self.seeds[node]);
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
                }
                q.pol = None;
                let body = VoteBody {
                    height: q.height,
                    parent: q.parent,
                    stage: q.stage,
                    round: q.round,
                    phase: Phase::Propose,
                    value: q.value.digest(q.stage),
                };
                q.signature = key.sign(&body.digest());
                Some(Message::Proposal(q))
            }
            Message::Vote(v) => {
                let mut w: Vote = v.clone();
                let mut b = *w.value.as_bytes();
                b[0] ^= 1;
                w.value = Digest::from_bytes(b);
                let body = VoteBody {
                    height: w.height,
                    parent: w.parent,
                    stage: w.stage,
                    round: w.round,
                    phase: w.phase,
                    value: w.value,
                };
                w.signature = key.sign(&body.digest());
                Some(Message::Vote(w))
            }
            _ => None,
        }
    }

    fn report(&self) -> Report {
        let blocks = self.commit_times.len() as u64;
        let txs: u64 = self.block_txs.iter().sum();
        let tx_per_sec = if blocks >= 2 {
            let span = self.commit_times[blocks as usize - 1] - self.commit_times[0];
            let counted: u64 = self.block_txs[1..].iter().sum();
            if span == 0 {
                0.0
            } else {
                counted as f64 * 1e6 / span as f64
            }
        } else if blocks == 1 && self.commit_times[0] > 0 {
            txs as f64 * 1e6 / self.commit_times[0] as f64
        } else {
            0.0
        };
        let mut lat = self.latencies.clone();
        lat.sort_unstable();
        let pct = |p: f64| -> u64 {
            if lat.is_empty() {
                0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize]
            }
        };
        let n = self.nodes.len() as f64;
        let safety_violations = self.decided.values().filter(|s| s.len() > 1).count() as u64;
        let view_changes = self.decide_round.values().map(|r| u64::from(*r)).sum();
        let mut h = blake3::Hasher::new();
        for ((height, stage), set) in &self.decided {
            h.update(&height.to_le_bytes());
            h.update(format!("{stage}").as_bytes());
            for d in set {
                h.update(d.as_bytes());
            }
        }
        for t in &self.commit_times {
            h.update(&t.to_le_bytes());
        }
        Report {
            blocks,
            txs,
            sim_time_us: self.commit_times.last().copied().unwrap_or(0),
            tx_per_sec,
            latency_p50_us: pct(0.5),
            latency_p99_us: pct(0.99),
            messages_per_node: self.sent_msgs as f64 / n,
            bytes_per_node: self.sent_bytes as f64 / n,
            view_changes,
            committee_failures: self.committee_failures,
            undersized_committees: self.undersized,
            safety_violations,
            chain_rejections: self.chain_rejections,
            fingerprint: *h.finalize().as_bytes(),
        }
    }
}

impl Simulation {
    fn drain(&mut self) {
        while let Some(Reverse(ev)) = self.queue.pop() {
            if ev.time > self.cfg.max_sim_time_us
                || self.commit_times.len() as u64 >= self.cfg.blocks
            {
                break;
            }
            let node = match &ev.kind {
                EvKind::Start(i) | EvKind::Tick(i) => *i,
                EvKind::Deliver { to, .. } => *to,
            };
            let start = ev.time.max(self.busy_until[node]);
            let now = GENESIS_TIME * 1_000_000 + start;
            let mut host = SimHost {
                ledger: &mut self.ledger,
                cpu_ns: self.cfg.cpu.message_ns,
                cpu: &self.cfg.cpu,
            };
            let outs = match ev.kind {
                EvKind::Start(i) => self.nodes[i].start(now, &mut host),
                EvKind::Tick(i) => self.nodes[i].tick(now, &mut host),
                EvKind::Deliver { to, from, msg } => {
                    let m = Rc::try_unwrap(msg).unwrap_or_else(|rc| (*rc).clone());
                    self.nodes[to].handle(self.keys[from], m, now, &mut host)
                }
            };
            let done = start + host.cpu_ns / 1_000;
            self.busy_until[node] = done;
            self.apply_outputs(node, done, outs);
        }
    }
}
