//! The engine-agnostic simulator: any [`Protocol`] engine on one modelled network.
//!
//! A [`Network`] runs one engine instance per simulated node and carries out what the engines
//! ask for, exactly as a node on a real network would ([`protocol`](crate::consensus::protocol)
//! describes the contract): it encodes every [`Output::Send`] with the engine's canonical
//! encoding, delays it by the [`NetworkModel`] (pair latency, jitter, bandwidth, loss), decodes
//! it at the receiver with [`Protocol::decode_message`], keeps each node's timers, appends every
//! [`Output::Append`] block through the [`Deployment`] and reports [`Input::Appended`] back. It
//! never looks inside a message or a block, so proof of work, the committee protocol,
//! Tendermint and an engine written by a researcher run on the same network model and are
//! measured the same way.
//!
//! What is engine-specific lives in the [`Deployment`]: how nodes, keys and ledgers are set up,
//! what CPU time an input costs, when a block is final, and how a Byzantine node equivocates.
//! Faults that are not engine-specific are the network's: silent nodes, crashes and restarts,
//! partitions ([`Fault`]).
//!
//! # What is measured
//!
//! * **Finality**: a block counts as finalised the first time an honest node's deployment says
//!   it is final (for BFT engines, once appended; for proof of work, once buried under the
//!   configured confirmations). Time to finality runs from a transaction's submission to the
//!   first finalisation of its block; throughput counts finalised transactions from the first
//!   finalisation to the last.
//! * **Agreement**: every honest node's finalised blocks are compared by height with the first
//!   one finalised there; each mismatch is an agreement violation (0 for a safe engine within its
//!   fault bound).
//! * **Cost**: messages and bytes each node sends.
//!
//! A run is a pure function of the deployment and the [`NetConfig`]: the same seed gives the same
//! run, bit for bit ([`EngineReport::fingerprint`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::rc::{Rc, Weak};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::NetworkModel;
use crate::consensus::protocol::{Input, Output, Outputs, Protocol, ProtocolInput, Recipients};
use crate::hash::{Digest, TxId};
use crate::tx::PublicKey;

pub use crate::consensus::protocol::Time;

/// One second of simulated time.
pub const SECOND: Time = 1_000_000;
/// The Unix time (seconds) at which simulated chains begin.
pub const GENESIS_TIME: u64 = 1_800_000_000;

/// A block a node holds final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finalised {
    /// Its height.
    pub height: u64,
    /// What identifies the decided block (for engines whose seal may differ between nodes,
    /// an identity that leaves the seal out).
    pub id: Digest,
    /// The transactions it holds.
    pub txs: Vec<TxId>,
}

/// The result of handing one input to a node's engine.
pub struct Handled<P: Protocol> {
    /// What the engine asked for (empty when it refused the input).
    pub outputs: Outputs<P>,
    /// Simulated CPU time the input cost the node, nanoseconds.
    pub cpu_ns: u64,
}

/// An engine deployed on simulated nodes: everything the [`Network`] needs that depends on the
/// engine. The crate provides [`Replicas`](super::Replicas) for engines in which every node
/// keeps its own chain; an engine with other needs implements this directly.
pub trait Deployment {
    /// The engine each node runs.
    type Engine: Protocol;

    /// A short name for reports ("tendermint", "pow", …).
    fn name(&self) -> String;
    /// How many nodes there are.
    fn nodes(&self) -> usize;
    /// The key peers know node `node` by.
    fn key(&self, node: usize) -> PublicKey;
    /// Hands `input` to `node`'s engine at `now` and returns what it asked for with the CPU time
    /// it cost. An input the engine refuses gives no outputs.
    fn handle(
        &mut self,
        node: usize,
        now: Time,
        input: ProtocolInput<Self::Engine>,
    ) -> Handled<Self::Engine>;
    /// Appends a block `node`'s engine decided (or received) to `node`'s ledger, and returns the
    /// blocks that became final at `node` because of it, with the CPU time appending cost.
    ///
    /// # Errors
    ///
    /// Why the ledger refused the block (counted, never expected from an honest engine).
    fn append(
        &mut self,
        node: usize,
        now: Time,
        block: <Self::Engine as Protocol>::Block,
    ) -> Result<(Vec<Finalised>, u64), String>;
    /// Transactions clients submit at `now`, and their ids. Called once at the start and then
    /// whenever a new height is finalised (closed-loop load); the network offers them to every
    /// node ([`Input::Transactions`]) off the critical path, as a mempool relay would.
    fn workload(&mut self, now: Time) -> Vec<(TxId, <Self::Engine as Protocol>::Tx)>;
    /// Whether the network offers the workload's transactions to each node's engine
    /// ([`Input::Transactions`]; the default). A deployment whose nodes draw transactions from
    /// a pool the deployment keeps itself (filled in [`workload`](Self::workload)) returns
    /// false: the network then only records when each was submitted, to measure finality.
    fn offers_transactions(&self) -> bool {
        true
    }
    /// Replaces `node`'s engine by a fresh one that knows only what its ledger holds, as after a
    /// process restart (the network then sends [`Input::Start`]).
    fn restart(&mut self, node: usize);
    /// For an equivocating node: a second message, conflicting with `message` and signed by
    /// `node`, that the network shows to some recipients instead or as well. `None` sends `message`
    /// unchanged (the default: the engine has nothing to equivocate about).
    fn equivocate(
        &mut self,
        node: usize,
        message: &<Self::Engine as Protocol>::Message,
    ) -> Option<<Self::Engine as Protocol>::Message> {
        let _ = (node, message);
        None
    }
}

/// How a node behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Never sends anything (a crashed or silent member, from the start).
    Silent,
    /// Follows the protocol but signs conflicting messages: each recipient of a message gets
    /// it, a conflicting twin from [`Deployment::equivocate`], or both (chosen at random).
    Equivocating,
}

/// A fault the network applies at a given time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The node stops: its pending timers and messages to it are lost.
    Crash(usize),
    /// The node's process starts again from its ledger ([`Deployment::restart`]).
    Restart(usize),
    /// Messages between nodes of different sides are lost; `sides[i]` is node `i`'s side.
    Partition(Vec<u8>),
    /// Every link works again.
    Heal,
    /// From now on this many messages in a million are lost ([`NetworkModel::drop_ppm`]): a
    /// period of heavy loss, and its end.
    Loss(u32),
    /// An outsider, a key that is no node of the network, sends node `to` a message (the
    /// engine's encoding, as [`Protocol::decode_message`] reads it); bytes that do not decode
    /// are dropped, as any node's would be.
    Outsider {
        /// The outsider's key (the transport authenticates it as the sender).
        from: PublicKey,
        /// The receiving node.
        to: usize,
        /// The encoded message.
        message: Vec<u8>,
    },
}

/// A simulation's setting besides the deployment.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The network.
    pub network: NetworkModel,
    /// The clock's reading when the run starts, microseconds (engines see this clock; block
    /// timestamps come from it). Fault times, [`Network::now`] and reports count from here.
    pub start: Time,
    /// Each node's behaviour (missing entries are honest).
    pub behaviours: Vec<Behaviour>,
    /// Faults, each applied at its time.
    pub faults: Vec<(Time, Fault)>,
    /// The seed of every random choice.
    pub seed: u64,
    /// Stop once this many heights are finalised.
    pub blocks: u64,
    /// Stop at this simulated time even if fewer blocks are finalised.
    pub max_time: Time,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            network: NetworkModel::default(),
            start: GENESIS_TIME * SECOND,
            behaviours: Vec::new(),
            faults: Vec::new(),
            seed: 0,
            blocks: 10,
            max_time: 600 * SECOND,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineReport {
    /// The deployment's name.
    pub engine: String,
    /// Nodes in the network.
    pub nodes: usize,
    /// Heights finalised.
    pub blocks: u64,
    /// Transactions in finalised blocks.
    pub txs: u64,
    /// Simulated time at the last finalisation, microseconds since the start.
    pub sim_time_us: u64,
    /// Finalised transactions per simulated second, from the first finalisation to the last.
    pub tx_per_sec: f64,
    /// Median time from a transaction's submission to the finalisation of its block, µs.
    pub finality_p50_us: u64,
    /// 99th percentile of the same, µs.
    pub finality_p99_us: u64,
    /// Messages sent per node.
    pub messages_per_node: f64,
    /// Bytes sent per node.
    pub bytes_per_node: f64,
    /// Rounds beyond the first, summed over heights (failed proposers, view changes).
    pub extra_rounds: u64,
    /// Distinct pieces of evidence honest nodes produced.
    pub evidence: u64,
    /// Heights at which an honest node finalised a block other than the first one finalised
    /// there (must be 0 within the engine's fault bound).
    pub agreement_violations: u64,
    /// Blocks a ledger refused (must be 0 for honest engines).
    pub refused_appends: u64,
    /// Digest of what was finalised and when, for determinism checks.
    pub fingerprint: [u8; 32],
}

enum Event<P: Protocol> {
    Start(usize),
    Deliver {
        to: usize,
        from: usize,
        bytes: Rc<Vec<u8>>,
    },
    Timer {
        node: usize,
        timer: P::Timer,
    },
    Fault(Fault),
}

struct Peer<P: Protocol> {
    behaviour: Behaviour,
    down: bool,
    busy_until: Time,
    up_free: Time,
    down_free: Time,
    timers: BTreeMap<P::Timer, Time>,
    /// Heights this node finalised (to report each once).
    finalised_to: BTreeSet<u64>,
}

/// A deployment running on the simulated network (see the [module](self) documentation).
pub struct Network<D: Deployment> {
    deployment: D,
    config: NetConfig,
    peers: Vec<Peer<D::Engine>>,
    index: HashMap<PublicKey, usize>,
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    events: HashMap<u64, Event<D::Engine>>,
    seq: u64,
    now: Time,
    rng: ChaCha8Rng,
    pair_latency: HashMap<(usize, usize), Time>,
    partition: Option<Vec<u8>>,
    submitted: HashMap<TxId, Time>,
    /// First finalisation of each height: the block's id, when, and how many transactions.
    finalised: BTreeMap<u64, (Digest, Time, u64)>,
    latencies: Vec<Time>,
    violations: BTreeSet<u64>,
    refused: u64,
    rounds: BTreeMap<u64, u32>,
    evidence: BTreeSet<Vec<u8>>,
    sent_messages: u64,
    sent_bytes: u64,
    started: bool,
    /// Messages in flight by content, so that identical bytes sent by many nodes (a block
    /// announcement every final member sends, or answers to peers that fell behind) are held
    /// once however many deliveries wait for them ([`Network::intern`]).
    interned: HashMap<[u8; 32], Weak<Vec<u8>>>,
    /// The size of `interned` at which entries no delivery holds any more are dropped.
    interned_sweep_at: usize,
}

/// Encoded messages at least this long are shared by content while in flight; shorter ones
/// (votes, identities) are not worth hashing.
const INTERN_MIN_LEN: usize = 1 << 10;

impl<D: Deployment> core::fmt::Debug for Network<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Network")
            .field("engine", &self.deployment.name())
            .field("nodes", &self.peers.len())
            .field("now", &self.now)
            .field("finalised", &self.finalised.len())
            .finish_non_exhaustive()
    }
}

impl<D: Deployment> Network<D>
where
    <D::Engine as Protocol>::Tx: Clone,
    <D::Engine as Protocol>::Evidence: core::fmt::Debug,
{
    /// Puts `deployment` on a network set up by `config`.
    pub fn new(deployment: D, config: NetConfig) -> Self {
        let n = deployment.nodes();
        let peers = (0..n)
            .map(|i| Peer {
                behaviour: config
                    .behaviours
                    .get(i)
                    .copied()
                    .unwrap_or(Behaviour::Honest),
                down: false,
                busy_until: 0,
                up_free: 0,
                down_free: 0,
                timers: BTreeMap::new(),
                finalised_to: BTreeSet::new(),
            })
            .collect();
        let index = (0..n).map(|i| (deployment.key(i), i)).collect();
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let start = config.start;
        let mut net = Self {
            deployment,
            config,
            peers,
            index,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now: start,
            rng,
            pair_latency: HashMap::new(),
            partition: None,
            submitted: HashMap::new(),
            finalised: BTreeMap::new(),
            latencies: Vec::new(),
            violations: BTreeSet::new(),
            refused: 0,
            rounds: BTreeMap::new(),
            evidence: BTreeSet::new(),
            sent_messages: 0,
            sent_bytes: 0,
            started: false,
            interned: HashMap::new(),
            interned_sweep_at: 1 << 10,
        };
        for (at, fault) in net.config.faults.clone() {
            net.schedule(start + at, Event::Fault(fault));
        }
        net
    }

    /// The deployment (its nodes' ledgers and engines).
    pub fn deployment(&self) -> &D {
        &self.deployment
    }

    /// The deployment, taken off the network (for example to keep its ledgers after a run).
    pub fn into_deployment(self) -> D {
        self.deployment
    }

    /// The simulated time, microseconds since the start.
    pub fn now(&self) -> Time {
        self.now - self.config.start
    }

    /// Heights finalised so far.
    pub fn finalised(&self) -> u64 {
        self.finalised.len() as u64
    }

    /// Whether `node` is running (not crashed, not silent).
    pub fn is_up(&self, node: usize) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| !p.down && p.behaviour != Behaviour::Silent)
    }

    /// Applies `fault` now.
    pub fn apply(&mut self, fault: Fault) {
        match fault {
            Fault::Crash(i) if i < self.peers.len() => {
                let peer = &mut self.peers[i];
                peer.down = true;
                peer.timers.clear();
            }
            Fault::Restart(i) if i < self.peers.len() && self.peers[i].down => {
                self.peers[i].down = false;
                self.peers[i].busy_until = self.now;
                self.deployment.restart(i);
                self.input(i, self.now, Input::Start);
            }
            Fault::Partition(sides) => self.partition = Some(sides),
            Fault::Heal => self.partition = None,
            Fault::Loss(ppm) => self.config.network.drop_ppm = ppm.min(1_000_000),
            Fault::Outsider { from, to, message } => {
                if self.is_up(to) {
                    if let Ok(message) = D::Engine::decode_message(&message) {
                        self.input(to, self.now, Input::Message { from, message });
                    }
                }
            }
            Fault::Crash(_) | Fault::Restart(_) => {}
        }
    }

    /// Runs until `blocks` heights are finalised or the time limit of the configuration.
    pub fn run(&mut self) -> EngineReport {
        let (blocks, limit) = (self.config.blocks, self.config.start + self.config.max_time);
        self.run_while(|net| net.finalised() < blocks && net.now < limit);
        self.report()
    }

    /// Runs until `until` microseconds after the start (or until nothing is left to happen).
    pub fn run_until(&mut self, until: Time) {
        let until = self.config.start + until;
        self.run_while(|net| net.now < until);
        self.now = self.now.max(until);
    }

    fn run_while(&mut self, mut go_on: impl FnMut(&Self) -> bool) {
        if !self.started {
            self.started = true;
            let now = self.now;
            let offered = self.deployment.workload(now);
            self.offer(now, offered);
            for i in 0..self.peers.len() {
                self.schedule(now, Event::Start(i));
            }
        }
        while go_on(self) {
            let Some(Reverse((at, seq))) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            self.dispatch(at, event);
        }
    }

    fn schedule(&mut self, at: Time, event: Event<D::Engine>) {
        self.seq += 1;
        self.events.insert(self.seq, event);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn dispatch(&mut self, at: Time, event: Event<D::Engine>) {
        match event {
            Event::Start(i) => {
                if self.is_up(i) {
                    self.input(i, at, Input::Start);
                }
            }
            Event::Deliver { to, from, bytes } => {
                if !self.is_up(to) || self.cut(from, to) {
                    return;
                }
                // The receiver's decoder sees exactly the bytes that were sent.
                let Ok(message) = D::Engine::decode_message(&bytes) else {
                    return;
                };
                let from = self.deployment.key(from);
                self.input(to, at, Input::Message { from, message });
            }
            Event::Timer { node, timer } => {
                if self.is_up(node) && self.peers[node].timers.get(&timer) == Some(&at) {
                    self.peers[node].timers.remove(&timer);
                    self.input(node, at, Input::Timer(timer));
                }
            }
            Event::Fault(fault) => self.apply(fault),
        }
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|s| s.get(a).copied().unwrap_or(0) != s.get(b).copied().unwrap_or(0))
    }

    /// Hands `input` to `node` when its CPU is free (at or after `at`), then carries out what it
    /// asked for at the time the CPU is done.
    fn input(&mut self, node: usize, at: Time, input: ProtocolInput<D::Engine>) {
        let start = at.max(self.peers[node].busy_until);
        let handled = self.deployment.handle(node, start, input);
        let done = start + handled.cpu_ns / 1_000;
        self.peers[node].busy_until = done;
        self.carry_out(node, done, handled.outputs);
    }

    fn carry_out(&mut self, node: usize, at: Time, outputs: Outputs<D::Engine>) {
        for output in outputs {
            if !self.is_up(node) {
                return;
            }
            match output {
                Output::Send { to, message } => self.send(node, at, &to, message),
                Output::SetTimer { timer, at: due } => {
                    let due = due.max(at);
                    self.peers[node].timers.insert(timer.clone(), due);
                    self.schedule(due, Event::Timer { node, timer });
                }
                Output::CancelTimer(timer) => {
                    self.peers[node].timers.remove(&timer);
                }
                Output::Append(block) => self.append(node, at, block),
                Output::Evidence(e) => {
                    if self.peers[node].behaviour == Behaviour::Honest {
                        self.evidence.insert(format!("{e:?}").into_bytes());
                    }
                }
                Output::Progress { height, round } => {
                    if self.peers[node].behaviour == Behaviour::Honest {
                        let r = self.rounds.entry(height).or_insert(0);
                        *r = (*r).max(round);
                    }
                }
            }
        }
    }

    fn append(&mut self, node: usize, at: Time, block: <D::Engine as Protocol>::Block) {
        match self.deployment.append(node, at, block) {
            Ok((finalised, cpu_ns)) => {
                let done = at.max(self.peers[node].busy_until) + cpu_ns / 1_000;
                self.peers[node].busy_until = done;
                let honest = self.peers[node].behaviour == Behaviour::Honest;
                let mut new_height = false;
                for f in finalised {
                    if !honest || !self.peers[node].finalised_to.insert(f.height) {
                        continue;
                    }
                    new_height |= self.record(done, f);
                }
                self.input(node, done, Input::Appended);
                if new_height {
                    let offered = self.deployment.workload(done);
                    self.offer(done, offered);
                }
            }
            Err(_) => self.refused += 1,
        }
    }

    /// Records an honest node's finalised block; true if it is the first at its height.
    fn record(&mut self, at: Time, f: Finalised) -> bool {
        match self.finalised.get(&f.height) {
            Some((id, _, _)) => {
                if *id != f.id {
                    self.violations.insert(f.height);
                }
                false
            }
            None => {
                for tx in &f.txs {
                    if let Some(t) = self.submitted.remove(tx) {
                        self.latencies.push(at.saturating_sub(t));
                    }
                }
                self.finalised
                    .insert(f.height, (f.id, at, f.txs.len() as u64));
                true
            }
        }
    }

    fn offer(&mut self, at: Time, offered: Vec<(TxId, <D::Engine as Protocol>::Tx)>) {
        if offered.is_empty() {
            return;
        }
        let mut txs = Vec::with_capacity(offered.len());
        for (id, tx) in offered {
            self.submitted.insert(id, at);
            txs.push(tx);
        }
        if !self.deployment.offers_transactions() {
            return;
        }
        for i in 0..self.peers.len() {
            if self.is_up(i) {
                self.input(i, at, Input::Transactions(txs.clone()));
            }
        }
    }

    fn send(
        &mut self,
        from: usize,
        at: Time,
        to: &Recipients,
        message: <D::Engine as Protocol>::Message,
    ) {
        let targets: Vec<usize> = match to {
            Recipients::All => (0..self.peers.len()).filter(|j| *j != from).collect(),
            Recipients::One(k) => self.index.get(k).copied().into_iter().collect(),
            Recipients::Some(ks) => ks
                .iter()
                .filter_map(|k| self.index.get(k).copied())
                .collect(),
        };
        let twin = match self.peers[from].behaviour {
            Behaviour::Equivocating => self.deployment.equivocate(from, &message),
            _ => None,
        };
        let first = self.intern(D::Engine::encode_message(&message));
        let second = twin.map(|m| self.intern(D::Engine::encode_message(&m)));
        for to in targets {
            if to == from {
                continue;
            }
            // An equivocator shows each recipient the message, its twin, or both.
            let (original, conflicting) = match &second {
                None => (true, None),
                Some(b) => match self.rng.next_u64() % 3 {
                    0 => (true, None),
                    1 => (false, Some(b.clone())),
                    _ => (true, Some(b.clone())),
                },
            };
            if original {
                self.transmit(from, to, at, first.clone());
            }
            if let Some(b) = conflicting {
                self.transmit(from, to, at, b);
            }
        }
    }

    /// The shared copy of `bytes`: the one already in flight if a delivery still holds the
    /// same content, else `bytes` itself. Which copy a delivery holds changes nothing a node
    /// sees (it decodes the same bytes); it keeps the memory of a run proportional to the
    /// distinct messages in flight, not to their deliveries.
    fn intern(&mut self, bytes: Vec<u8>) -> Rc<Vec<u8>> {
        if bytes.len() < INTERN_MIN_LEN {
            return Rc::new(bytes);
        }
        let key = *blake3::hash(&bytes).as_bytes();
        if let Some(shared) = self.interned.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        let shared = Rc::new(bytes);
        self.interned.insert(key, Rc::downgrade(&shared));
        if self.interned.len() >= self.interned_sweep_at {
            self.interned.retain(|_, w| w.strong_count() > 0);
            self.interned_sweep_at = (self.interned.len() * 2).max(1 << 10);
        }
        shared
    }

    fn latency(&mut self, a: usize, b: usize) -> Time {
        let net = self.config.network;
        let key = (a.min(b), a.max(b));
        if let Some(l) = self.pair_latency.get(&key) {
            return *l;
        }
        let span = net.max_latency_us - net.min_latency_us + 1;
        let l = net.min_latency_us + self.rng.next_u64() % span;
        self.pair_latency.insert(key, l);
        l
    }

    fn transmit(&mut self, from: usize, to: usize, at: Time, bytes: Rc<Vec<u8>>) {
        let net = self.config.network;
        self.sent_messages += 1;
        self.sent_bytes += bytes.len() as u64;
        let wire_us = (bytes.len() as u64 * 8 * SECOND).div_ceil(net.bandwidth_bps.max(1));
        let depart = at.max(self.peers[from].up_free);
        self.peers[from].up_free = depart + wire_us;
        if net.drop_ppm > 0 && self.rng.next_u64() % 1_000_000 < u64::from(net.drop_ppm) {
            return;
        }
        let jitter = match net.jitter_us {
            0 => 0,
            j => self.rng.next_u64() % (j + 1),
        };
        let arrive = depart + wire_us + self.latency(from, to) + jitter;
        let received = arrive.max(self.peers[to].down_free) + wire_us;
        self.peers[to].down_free = received;
        self.schedule(received, Event::Deliver { to, from, bytes });
    }

    /// What the run measured so far.
    pub fn report(&self) -> EngineReport {
        let origin = self.config.start;
        let times: Vec<(Time, u64)> = {
            let mut t: Vec<(Time, u64)> = self.finalised.values().map(|v| (v.1, v.2)).collect();
            t.sort_unstable();
            t
        };
        let txs: u64 = times.iter().map(|t| t.1).sum();
        let tx_per_sec = match (times.first(), times.last()) {
            (Some(first), Some(last)) if last.0 > first.0 => {
                (txs - first.1) as f64 * SECOND as f64 / (last.0 - first.0) as f64
            }
            (Some(only), _) if only.0 > origin => {
                txs as f64 * SECOND as f64 / (only.0 - origin) as f64
            }
            _ => 0.0,
        };
        let mut lat = self.latencies.clone();
        lat.sort_unstable();
        let pct = |p: f64| match lat.len() {
            0 => 0,
            n => lat[((n - 1) as f64 * p).round() as usize],
        };
        let n = self.peers.len().max(1) as f64;
        let mut h = blake3::Hasher::new();
        for (height, (id, at, count)) in &self.finalised {
            h.update(&height.to_le_bytes());
            h.update(id.as_bytes());
            h.update(&at.to_le_bytes());
            h.update(&count.to_le_bytes());
        }
        EngineReport {
            engine: self.deployment.name(),
            nodes: self.peers.len(),
            blocks: self.finalised.len() as u64,
            txs,
            sim_time_us: times.last().map_or(0, |t| t.0 - origin),
            tx_per_sec,
            finality_p50_us: pct(0.5),
            finality_p99_us: pct(0.99),
            messages_per_node: self.sent_messages as f64 / n,
            bytes_per_node: self.sent_bytes as f64 / n,
            extra_rounds: self.rounds.values().map(|r| u64::from(*r)).sum(),
            evidence: self.evidence.len() as u64,
            agreement_violations: self.violations.len() as u64,
            refused_appends: self.refused,
            fingerprint: *h.finalize().as_bytes(),
        }
    }
}
