//! User stories of the Tendermint engine (feature `tendermint`): four hospitals' validators,
//! each with its own chain, driven through the protocol interface by a seeded network with a
//! virtual clock. Honest validators finalise identical chains; one Byzantine validator (double
//! signing, equivocating proposals, or silent) never breaks agreement; a crashed validator does
//! not stop the others; a partition without a quorum finalises nothing and resumes once healed;
//! forged commit certificates are refused by the chain; untrusted bytes never panic the decoder.
#![cfg(feature = "tendermint")]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use medledger::access::{AccessError, AccessOp, MAX_VALIDATOR_POWER};
use medledger::chain::ChainError;
use medledger::consensus::protocol::{Input, Output, Recipients, Time};
use medledger::consensus::{Consensus, ConsensusError, Finality, Protocol};
use medledger::hash::Digest;
use medledger::ledger::LedgerError;
use medledger::state::StateError;
use medledger::tendermint::{
    block_id, BlockId, CommitSignature, Evidence, Message, ProposedBlock, SignedVote, Tendermint,
    TendermintConfig, TendermintConsensus, TendermintError, TendermintSeal, Timeouts, Timer,
    TimerKind, ValidatorSet, Vote, VoteKind,
};
use medledger::tx::{Keypair, PublicKey};
use medledger::{Block, Chain, ChainBuilder, MedRec, Payload, Transaction};
use proptest::prelude::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NAME: &str = "consortium";
const GENESIS: u64 = 1_700_000_000;
const SECOND: Time = 1_000_000;

type Engine = Tendermint<MedRec>;
type TmChain = Chain<TendermintConsensus>;
type TmLedger = medledger::ledger::Ledger<TendermintConsensus, MedRec>;
type TmBlock = Block<TendermintSeal>;

fn validator_keys() -> Vec<Keypair> {
    (1..=4u8).map(|i| Keypair::from_seed(&[i; 32])).collect()
}

fn validator_set() -> ValidatorSet {
    ValidatorSet::equal(validator_keys().iter().map(Keypair::public)).unwrap()
}

/// The consortium's health authority, which signs validator changes.
fn authority() -> Keypair {
    Keypair::from_seed(&[200; 32])
}

/// A validator's chain: no reorganisation at all, so that a decided block is final by its id
/// (another seal of the tip is swapped in, never reorganised to).
fn new_chain() -> TmChain {
    ChainBuilder::new(NAME, TendermintConsensus::new(NAME, validator_set()))
        .genesis_time(GENESIS)
        .max_reorg_depth(0)
        .authority("Health Authority", authority().public())
        .build()
        .unwrap()
}

fn new_ledger() -> TmLedger {
    TmLedger::new(new_chain()).unwrap()
}

fn fast_timeouts() -> Timeouts {
    Timeouts {
        propose: 200_000,
        prevote: 100_000,
        precommit: 100_000,
        delta: 50_000,
        rebroadcast: 300_000,
        max: 2_000_000,
    }
}

/// Signed record anchors from a few clients, nonces in order.
fn client_txs(count: u64) -> Vec<Transaction> {
    let clients: Vec<Keypair> = (0..4u8)
        .map(|i| Keypair::from_seed(&[100 + i; 32]))
        .collect();
    let chain = new_chain().chain_id();
    (0..count)
        .map(|i| {
            let c = &clients[(i % 4) as usize];
            let record = Digest::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes());
            Transaction::sign(c, chain, i / 4, Payload::Data { record })
        })
        .collect()
}

/// How a validator behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Never sends anything (crashed from the start, or silent).
    Silent,
    /// Runs the protocol, but signs a conflicting twin of every vote and proposal it sends and
    /// shows each peer one, the other, or both, at random.
    Equivocator,
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        timer: Timer,
    },
}

impl Node {
    fn chain(&self) -> &TmChain {
        self.ledger.chain()
    }
}

struct Node {
    engine: Engine,
    ledger: TmLedger,
    keypair: Keypair,
    behaviour: Behaviour,
    crashed: bool,
    timers: BTreeMap<Timer, Time>,
}

/// A seeded network of four validators with a virtual clock.
struct Net {
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Time, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    next_event: usize,
    seq: u64,
    now: Time,
    rng: ChaCha8Rng,
    max_latency: Time,
    /// Side of each node while partitioned; messages between sides are lost.
    partition: Option<Vec<u8>>,
    evidence: Vec<(usize, Evidence)>,
    refused_appends: Vec<String>,
}

impl Net {
    fn new(seed: u64, behaviours: [Behaviour; 4], max_latency: Time) -> Self {
        Self::with_nodes(seed, behaviours.to_vec(), max_latency)
    }

    /// Nodes with keys 1, 2, …: the first four are the genesis validators, any further ones
    /// start as observers.
    fn with_nodes(seed: u64, behaviours: Vec<Behaviour>, max_latency: Time) -> Self {
        Self::with_ledgers(seed, behaviours, max_latency, new_ledger)
    }

    /// As [`with_nodes`](Self::with_nodes), each node's ledger made by `ledger`.
    fn with_ledgers(
        seed: u64,
        behaviours: Vec<Behaviour>,
        max_latency: Time,
        ledger: impl Fn() -> TmLedger,
    ) -> Self {
        let n = behaviours.len();
        let nodes = (1..=n as u8)
            .map(|i| Keypair::from_seed(&[i; 32]))
            .zip(behaviours)
            .enumerate()
            .map(|(i, (keypair, behaviour))| {
                let mut config = TendermintConfig::new(Keypair::from_seed(&[i as u8 + 1; 32]));
                config.timeouts = fast_timeouts();
                Node {
                    engine: Engine::new(TendermintConsensus::new(NAME, validator_set()), config),
                    ledger: ledger(),
                    keypair,
                    behaviour,
                    crashed: behaviour == Behaviour::Silent,
                    timers: BTreeMap::new(),
                }
            })
            .collect();
        let mut net = Self {
            nodes,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            seq: 0,
            now: GENESIS * SECOND,
            rng: ChaCha8Rng::seed_from_u64(seed),
            max_latency,
            partition: None,
            evidence: Vec::new(),
            refused_appends: Vec::new(),
        };
        for i in 0..n {
            net.input(i, Input::Start);
        }
        net
    }

    fn schedule(&mut self, at: Time, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.seq += 1;
        self.events.insert(id, event);
        self.queue.push(Reverse((at, self.seq, id)));
    }

    fn offer(&mut self, txs: &[Transaction]) {
        for i in 0..self.nodes.len() {
            self.input(i, Input::Transactions(txs.to_vec()));
        }
    }

    fn input(&mut self, i: usize, input: Input<Message<Payload>, Timer, Transaction>) {
        if self.nodes[i].crashed {
            return;
        }
        let node = &mut self.nodes[i];
        let outputs = match node.engine.handle(&mut node.ledger, self.now, input) {
            Ok(o) => o,
            // A refused input changes nothing; the network carries on.
            Err(_) => return,
        };
        for output in outputs {
            match output {
                Output::Send { to, message } => self.send(i, &to, message),
                Output::SetTimer { timer, at } => {
                    self.nodes[i].timers.insert(timer, at);
                    self.schedule(at, Event::Timer { node: i, timer });
                }
                Output::CancelTimer(timer) => {
                    self.nodes[i].timers.remove(&timer);
                }
                Output::Append(block) => {
                    let node = &mut self.nodes[i];
                    match node.ledger.append(block) {
                        Ok(_) => self.input(i, Input::Appended),
                        Err(LedgerError::Chain(ChainError::AlreadyKnown(_))) => {}
                        Err(e) => self.refused_appends.push(format!("node {i}: {e}")),
                    }
                }
                Output::Evidence(e) => self.evidence.push((i, e)),
                Output::Progress { .. } => {}
            }
        }
    }

    fn send(&mut self, from: usize, to: &Recipients, message: Message<Payload>) {
        let targets: Vec<usize> = (0..self.nodes.len())
            .filter(|j| *j != from && to.includes(&self.nodes[*j].keypair.public()))
            .collect();
        let twin = match self.nodes[from].behaviour {
            Behaviour::Equivocator => message.conflicting(
                &self.nodes[from].keypair,
                self.nodes[from].chain().chain_id(),
            ),
            _ => None,
        };
        for j in targets {
            // An equivocator shows each peer the message, its twin, or both.
            let pick = if twin.is_some() {
                self.rng.next_u64() % 3
            } else {
                0
            };
            let copies = [
                (pick != 1).then_some(&message),
                twin.as_ref().filter(|_| pick != 0),
            ];
            for m in copies.into_iter().flatten() {
                let delay = 1 + self.rng.next_u64() % self.max_latency;
                let bytes = Engine::encode_message(m);
                self.schedule(self.now + delay, Event::Deliver { to: j, from, bytes });
            }
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((at, _, id))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        match self.events.remove(&id).expect("scheduled") {
            Event::Deliver { to, from, bytes } => {
                let cut = self
                    .partition
                    .as_ref()
                    .is_some_and(|side| side[to] != side[from]);
                if cut {
                    return true;
                }
                let message = Engine::decode_message(&bytes).expect("honest encodings decode");
                let from = self.nodes[from].keypair.public();
                self.input(to, Input::Message { from, message });
            }
            Event::Timer { node, timer } => {
                if self.nodes[node].timers.get(&timer) == Some(&at) {
                    self.nodes[node].timers.remove(&timer);
                    self.input(node, Input::Timer(timer));
                }
            }
        }
        true
    }

    /// Runs until virtual time `until` (or until every honest node reaches `height`).
    fn run(&mut self, until: Time, height: u64) {
        while self.now < until && self.honest().any(|n| n.chain().height() < height) {
            if !self.step() {
                break;
            }
        }
    }

    fn honest(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|n| n.behaviour == Behaviour::Honest && !n.crashed)
    }

    fn min_height(&self) -> u64 {
        self.honest().map(|n| n.chain().height()).min().unwrap()
    }

    /// Agreement violations among honest nodes: heights where two of them hold blocks with
    /// different ids, plus heights below both tips where their block hashes differ.
    fn violations(&self) -> Vec<String> {
        let honest: Vec<&Node> = self.honest().collect();
        let mut out = Vec::new();
        for (a, na) in honest.iter().enumerate() {
            for nb in &honest[a + 1..] {
                let top = na.chain().height().min(nb.chain().height());
                for h in 1..=top {
                    let (ha, hb) = (
                        na.chain().header_at(h).unwrap(),
                        nb.chain().header_at(h).unwrap(),
                    );
                    if block_id(ha) != block_id(hb) || (h < top && ha.hash() != hb.hash()) {
                        out.push(format!("height {h}: {} vs {}", ha.hash(), hb.hash()));
                    }
                }
            }
        }
        out
    }

    fn committed_txs(&self, node: usize) -> usize {
        let chain = &self.nodes[node].chain();
        (1..=chain.height())
            .map(|h| chain.header_at(h).unwrap().tx_count as usize)
            .sum()
    }
}

#[test]
fn four_honest_validators_finalise_identical_chains_with_every_offered_transaction() {
    let mut net = Net::new(1, [Behaviour::Honest; 4], 20_000);
    let txs = client_txs(40);
    net.offer(&txs);
    net.run(net.now + 30 * SECOND, 8);
    assert!(net.min_height() >= 8, "heights {:?}", heights(&net));
    assert_eq!(net.violations(), Vec::<String>::new());
    assert_eq!(net.refused_appends, Vec::<String>::new());
    assert!(net.evidence.is_empty());
    for i in 0..4 {
        assert_eq!(net.committed_txs(i), txs.len(), "node {i}");
        // Each block carries the certificate that the chain checked on append.
        let chain = &net.nodes[i].chain();
        let engine = chain.engine();
        for h in 1..=chain.height() {
            engine.verify_commit(chain.header_at(h).unwrap()).unwrap();
        }
    }
}

#[test]
fn relayed_transactions_are_finalised_and_one_that_never_applies_leaves_every_pool() {
    let mut net = Net::new(3, [Behaviour::Honest; 4], 20_000);
    let mut txs = client_txs(40);
    // Signed for a nonce its account will not reach: valid alone, never in a block.
    let record = Digest::from_bytes(*blake3::hash(b"stale").as_bytes());
    let stale = Transaction::sign(
        &Keypair::from_seed(&[99; 32]),
        new_chain().chain_id(),
        9,
        Payload::Data { record },
    );
    txs.push(stale.clone());
    // Each node takes them as relayed by a peer: checked, pending, not applied to its pool.
    for node in &mut net.nodes {
        let answers = node.engine.offer_relayed(&mut node.ledger, txs.clone());
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(node.ledger.pending(), txs.len());
    }
    net.run(net.now + 30 * SECOND, 8);
    assert!(net.min_height() >= 8, "heights {:?}", heights(&net));
    assert_eq!(net.violations(), Vec::<String>::new());
    assert_eq!(net.refused_appends, Vec::<String>::new());
    for (i, node) in net.nodes.iter().enumerate() {
        assert_eq!(net.committed_txs(i), txs.len() - 1, "node {i}");
        // Each node proposed once at least, and its template left the stale one out.
        assert_eq!(node.ledger.pending(), 0, "node {i}");
        assert!(
            matches!(
                node.ledger.status(&stale.id()),
                Some(medledger::TxStatus::Refused(_))
            ),
            "node {i}"
        );
    }
}

/// Runs four honest validators whose ledgers build blocks of at most `max_txs` transactions
/// and `max_bytes` bytes of them, offered `txs`; asserts every node commits all of them, and
/// returns the largest block on any node (transactions, bytes).
fn largest_block_under(txs: &[Transaction], max_txs: usize, max_bytes: usize) -> (usize, usize) {
    let limited = || {
        TmLedger::builder(new_chain())
            .max_block_txs(max_txs)
            .max_block_bytes(max_bytes)
            .build()
            .unwrap()
    };
    let mut net = Net::with_ledgers(5, vec![Behaviour::Honest; 4], 20_000, limited);
    net.offer(txs);
    let until = net.now + 60 * SECOND;
    while net.now < until && (0..4).any(|i| net.committed_txs(i) < txs.len()) {
        net.run(net.now + SECOND, u64::MAX);
    }
    assert_eq!(net.violations(), Vec::<String>::new());
    let mut largest = (0, 0);
    for i in 0..4 {
        assert_eq!(net.committed_txs(i), txs.len(), "node {i}");
        let chain = net.nodes[i].chain();
        for h in 1..=chain.height() {
            let hash = chain.header_at(h).unwrap().hash();
            let block = chain.block(&hash).unwrap().unwrap();
            let bytes: usize = block.txs.iter().map(|t| t.encode().len()).sum();
            largest = largest.max((block.txs.len(), bytes));
        }
    }
    largest
}

#[test]
fn a_proposer_keeps_to_its_ledgers_block_limits() {
    // A node bounds blocks by what its transport carries; the engine alone (4,096
    // transactions, 16 MiB) would put each batch below in one block.
    let txs = client_txs(240);
    let (count, _) = largest_block_under(&txs[..40], 5, 1 << 20);
    assert_eq!(count, 5, "blocks of at most 5 transactions");
    let min_bytes = medledger::tx::MAX_TX_LEN;
    let (_, bytes) = largest_block_under(&txs, 4096, min_bytes);
    assert!(
        bytes <= min_bytes && bytes + txs[0].encode().len() > min_bytes,
        "blocks filled up to {min_bytes} bytes of transactions, not beyond: {bytes}"
    );
}

fn heights(net: &Net) -> Vec<u64> {
    net.nodes.iter().map(|n| n.chain().height()).collect()
}

#[test]
fn runs_are_deterministic() {
    let run = || {
        let mut net = Net::new(9, [Behaviour::Honest; 4], 30_000);
        net.offer(&client_txs(8));
        net.run(net.now + 10 * SECOND, 4);
        (0..4)
            .map(|i| net.nodes[i].chain().tip())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_crashed_validator_does_not_stop_the_others() {
    let mut behaviours = [Behaviour::Honest; 4];
    behaviours[1] = Behaviour::Silent;
    let mut net = Net::new(3, behaviours, 20_000);
    let txs = client_txs(12);
    net.offer(&txs);
    net.run(net.now + 60 * SECOND, 6);
    assert!(net.min_height() >= 6, "heights {:?}", heights(&net));
    assert_eq!(net.violations(), Vec::<String>::new());
    assert_eq!(net.committed_txs(0), txs.len());
}

#[test]
fn a_validator_crashing_midway_does_not_stop_the_others() {
    let mut net = Net::new(4, [Behaviour::Honest; 4], 20_000);
    net.run(net.now + 20 * SECOND, 3);
    let before = net.min_height();
    net.nodes[2].crashed = true;
    net.run(net.now + 60 * SECOND, before + 5);
    assert!(
        net.min_height() >= before + 5,
        "heights {:?}",
        heights(&net)
    );
    assert_eq!(net.violations(), Vec::<String>::new());
}

#[test]
fn a_partition_without_quorum_finalises_nothing_and_resumes_after_healing() {
    let mut net = Net::new(5, [Behaviour::Honest; 4], 20_000);
    net.partition = Some(vec![0, 0, 1, 1]);
    net.offer(&client_txs(8));
    net.run(net.now + 20 * SECOND, u64::MAX);
    assert_eq!(
        heights(&net),
        vec![0; 4],
        "nothing is final without a quorum"
    );
    net.partition = None;
    net.run(net.now + 60 * SECOND, 3);
    assert!(net.min_height() >= 3, "heights {:?}", heights(&net));
    assert_eq!(net.violations(), Vec::<String>::new());
    assert_eq!(net.committed_txs(0), 8);
}

#[test]
fn a_partition_after_progress_stalls_then_the_lagging_side_catches_up() {
    let mut net = Net::new(6, [Behaviour::Honest; 4], 20_000);
    net.run(net.now + 10 * SECOND, 2);
    net.partition = Some(vec![0, 1, 1, 0]);
    net.run(net.now + 10 * SECOND, u64::MAX);
    let stalled = heights(&net);
    net.run(net.now + 10 * SECOND, u64::MAX);
    assert_eq!(heights(&net), stalled, "no side holds a quorum");
    net.partition = None;
    let target = stalled.iter().max().unwrap() + 3;
    net.run(net.now + 60 * SECOND, target);
    assert!(net.min_height() >= target, "heights {:?}", heights(&net));
    assert_eq!(net.violations(), Vec::<String>::new());
}

/// Four validators, the first equivocating, run until 24 heights are final; asserts the honest
/// ones kept finalising and agree.
fn equivocator_run() -> Net {
    let mut behaviours = [Behaviour::Honest; 4];
    behaviours[0] = Behaviour::Equivocator;
    let mut net = Net::new(7, behaviours, 20_000);
    net.run(net.now + 60 * SECOND, 24);
    assert!(net.min_height() >= 24, "heights {:?}", heights(&net));
    assert_eq!(net.violations(), Vec::<String>::new());
    net
}

#[test]
fn an_equivocating_validator_is_caught_by_verifiable_evidence() {
    let net = equivocator_run();
    let offender = net.nodes[0].keypair.public();
    let engine = TendermintConsensus::new(NAME, validator_set());
    assert!(net
        .evidence
        .iter()
        .any(|(_, e)| matches!(e, Evidence::DoubleVote { .. })));
    assert!(net
        .evidence
        .iter()
        .any(|(_, e)| matches!(e, Evidence::DoubleProposal { .. })));
    for (_, e) in &net.evidence {
        assert_eq!(e.verify(&engine), Ok(offender));
        assert_eq!(e.offender(), offender);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn one_byzantine_validator_never_breaks_agreement(
        seed in any::<u64>(),
        byzantine in 0usize..4,
        equivocates in any::<bool>(),
        max_latency in 1_000u64..150_000,
    ) {
        let mut behaviours = [Behaviour::Honest; 4];
        behaviours[byzantine] = if equivocates { Behaviour::Equivocator } else { Behaviour::Silent };
        let mut net = Net::new(seed, behaviours, max_latency);
        net.offer(&client_txs(8));
        net.run(net.now + 20 * SECOND, 3);
        prop_assert_eq!(net.violations(), Vec::<String>::new());
        prop_assert_eq!(net.refused_appends.clone(), Vec::<String>::new());
        prop_assert!(net.min_height() >= 3, "heights {:?}", heights(&net));
    }
}

// ----- forged commits -----

/// A chain, the validators' keys, and an unsealed next block.
fn next_block(chain: &mut TmChain, timestamp: u64) -> (Block<()>, BlockId) {
    let template = chain.build_template(client_txs(2), timestamp).unwrap();
    let block = template.seal(()).unwrap();
    let id = block_id(&block.header);
    (block, id)
}

fn precommit(key: &Keypair, height: u64, round: u32, id: BlockId) -> SignedVote {
    Vote {
        kind: VoteKind::Precommit,
        height,
        round,
        block: Some(id),
        validator: key.public(),
    }
    .sign(key, new_chain().chain_id())
}

fn seal_with(signers: &[(u16, SignedVote)], round: u32) -> TendermintSeal {
    TendermintSeal {
        round,
        signatures: signers
            .iter()
            .map(|(i, v)| CommitSignature {
                validator: *i,
                signature: v.signature,
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        validators: validator_set().to_list(),
        next_validators: None,
    }
}

fn sealed(block: &Block<()>, seal: TendermintSeal) -> TmBlock {
    ProposedBlock::new(block.clone()).seal(seal)
}

fn refusal(chain: &mut TmChain, block: TmBlock) -> TendermintError {
    let (height, tip) = (chain.height(), chain.tip());
    let err = chain.append(block).unwrap_err();
    assert_eq!(
        (chain.height(), chain.tip()),
        (height, tip),
        "a refused block changes nothing"
    );
    match err {
        ChainError::Consensus(ConsensusError::Engine(e)) => {
            assert_eq!(e.engine(), "tendermint");
            e.downcast_ref::<TendermintError>().unwrap().clone()
        }
        other => panic!("unexpected refusal {other}"),
    }
}

/// The validators' canonical indices (by key, all powers equal).
fn indexed() -> Vec<(u16, Keypair)> {
    let set = validator_set();
    validator_keys()
        .into_iter()
        .map(|k| (set.index_of(&k.public()).unwrap() as u16, k))
        .collect::<Vec<_>>()
}

fn sorted_votes(
    keys: &[(u16, Keypair)],
    height: u64,
    round: u32,
    id: BlockId,
) -> Vec<(u16, SignedVote)> {
    let mut v: Vec<(u16, SignedVote)> = keys
        .iter()
        .map(|(i, k)| (*i, precommit(k, height, round, id)))
        .collect();
    v.sort_by_key(|(i, _)| *i);
    v
}

#[test]
fn forged_commits_are_refused_by_the_chain() {
    let mut chain = new_chain();
    let keys = indexed();
    let (block, id) = next_block(&mut chain, GENESIS + 5);
    let all = sorted_votes(&keys, 1, 0, id);

    // Two of four validators: not more than two thirds.
    assert_eq!(
        refusal(&mut chain, sealed(&block, seal_with(&all[..2], 0))),
        TendermintError::InsufficientPower {
            signed: 2,
            total: 4
        }
    );
    // The same signature twice does not count twice.
    let twice = vec![all[0], all[0], all[1]];
    assert_eq!(
        refusal(&mut chain, sealed(&block, seal_with(&twice, 0))),
        TendermintError::SignatureOrder { position: 1 }
    );
    // A validator index outside the set.
    let mut outside = all[..3].to_vec();
    outside[2].0 = 4;
    assert_eq!(
        refusal(&mut chain, sealed(&block, seal_with(&outside, 0))),
        TendermintError::UnknownValidator { index: 4 }
    );
    // A non-validator's signature in a validator's slot.
    let stranger = Keypair::from_seed(&[99; 32]);
    let mut forged = all[..3].to_vec();
    forged[2].1 = precommit(&stranger, 1, 0, id);
    assert!(matches!(
        refusal(&mut chain, sealed(&block, seal_with(&forged, 0))),
        TendermintError::BadSignature { .. }
    ));
    // Precommits of round 0 replayed as a round-1 certificate.
    assert!(matches!(
        refusal(&mut chain, sealed(&block, seal_with(&all[..3], 1))),
        TendermintError::BadSignature { .. }
    ));
    // Precommits for another block of the same height.
    let (other, other_id) = next_block(&mut chain, GENESIS + 6);
    let for_other = sorted_votes(&keys, 1, 0, other_id);
    assert!(matches!(
        refusal(&mut chain, sealed(&block, seal_with(&for_other[..3], 0))),
        TendermintError::BadSignature { .. }
    ));

    // Three of four is a quorum: the block is appended.
    chain
        .append(sealed(&block, seal_with(&all[..3], 0)))
        .unwrap();
    assert_eq!(chain.height(), 1);
    drop(other);

    // Height 1's precommits replayed on a block at height 2.
    let (block2, _) = next_block(&mut chain, GENESIS + 10);
    assert!(matches!(
        refusal(&mut chain, sealed(&block2, seal_with(&all[..3], 0))),
        TendermintError::BadSignature { .. }
    ));
}

#[test]
fn a_certified_block_is_never_reverted_by_a_competing_certified_block() {
    // Only a third or more of the power can certify two blocks of one height; even then the
    // chain keeps the first: Tendermint blocks are final (`Finality::Instant`), so the second
    // is refused before its certificate is checked, whatever the reorganisation limit.
    let mut chain = ChainBuilder::new(NAME, TendermintConsensus::new(NAME, validator_set()))
        .genesis_time(GENESIS)
        .max_reorg_depth(100)
        .build()
        .unwrap();
    assert_eq!(chain.engine().finality(), Finality::Instant);
    let keys = indexed();
    let (a, a_id) = next_block(&mut chain, GENESIS + 5);
    let (b, b_id) = next_block(&mut chain, GENESIS + 6);
    let seal_a = seal_with(&sorted_votes(&keys, 1, 0, a_id)[..3], 0);
    let seal_b = seal_with(&sorted_votes(&keys, 1, 0, b_id)[1..], 0);
    let block_a = sealed(&a, seal_a);
    chain.append(block_a.clone()).unwrap();
    assert_eq!(chain.final_height(), 1);
    let block_b = sealed(&b, seal_b);
    match chain.append(block_b.clone()) {
        Err(ChainError::ConflictsWithFinal {
            height: 1,
            finalised,
            block,
        }) => assert_eq!((finalised, block), (block_a.hash(), block_b.hash())),
        other => panic!("expected ConflictsWithFinal, got {other:?}"),
    }
    assert_eq!(chain.tip(), block_a.hash());
    assert!(chain.header(&block_b.hash()).is_none());
    // Nor does a longer branch built on it ever win.
    let mut child = block_b.clone();
    child.header.parent = block_b.hash();
    child.header.height = 2;
    assert!(chain.append(child).is_err());
    assert_eq!(chain.tip(), block_a.hash());
}

// ----- messages from peers -----

#[test]
fn untrusted_message_bytes_decode_to_errors_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for _ in 0..20_000 {
        let len = (rng.next_u64() % 300) as usize;
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if let Some(b) = bytes.first_mut() {
            *b = 1; // the format version, so decoding goes past the first byte
        }
        if let Ok(m) = Engine::decode_message(&bytes) {
            assert_eq!(
                Engine::encode_message(&m),
                bytes,
                "accepted bytes are canonical"
            );
        }
    }
    // Mutations of real messages.
    let mut net = Net::new(2, [Behaviour::Honest; 4], 10_000);
    net.offer(&client_txs(4));
    net.run(net.now + 5 * SECOND, 2);
    let chain = &net.nodes[0].chain();
    let samples = vec![
        Engine::encode_message(&Message::Vote(precommit(
            &validator_keys()[0],
            1,
            0,
            block_id(chain.header_at(1).unwrap()),
        ))),
        Engine::encode_message(&Message::Decided {
            block: chain.block(&chain.hash_at(1).unwrap()).unwrap().unwrap(),
            parent_seal: TendermintSeal::default(),
        }),
    ];
    for sample in samples {
        assert!(Engine::decode_message(&sample).is_ok());
        for _ in 0..2_000 {
            let mut m = sample.clone();
            let i = (rng.next_u64() as usize) % m.len();
            m[i] ^= 1 << (rng.next_u64() % 8);
            if rng.next_u64() % 4 == 0 {
                m.truncate((rng.next_u64() as usize) % m.len());
            }
            if let Ok(msg) = Engine::decode_message(&m) {
                assert_eq!(Engine::encode_message(&msg), m);
            }
        }
        let mut long = sample.clone();
        long.push(0);
        assert!(
            Engine::decode_message(&long).is_err(),
            "trailing bytes are refused"
        );
    }
}

fn started() -> (Engine, TmLedger) {
    let mut config = TendermintConfig::new(Keypair::from_seed(&[2; 32]));
    config.timeouts = fast_timeouts();
    let mut engine = Engine::new(TendermintConsensus::new(NAME, validator_set()), config);
    let mut chain = new_ledger();
    engine
        .handle(&mut chain, GENESIS * SECOND, Input::Start)
        .unwrap();
    (engine, chain)
}

fn deliver(
    engine: &mut Engine,
    chain: &mut TmLedger,
    from: PublicKey,
    message: Message<Payload>,
) -> Result<(), TendermintError> {
    engine
        .handle(
            chain,
            GENESIS * SECOND + 1,
            Input::Message { from, message },
        )
        .map(drop)
}

#[test]
fn the_engine_refuses_unsigned_foreign_and_far_ahead_messages() {
    let (mut engine, mut chain) = started();
    let keys = validator_keys();
    let vote = |key: &Keypair, round: u32| {
        Message::Vote(
            Vote {
                kind: VoteKind::Prevote,
                height: 1,
                round,
                block: None,
                validator: key.public(),
            }
            .sign(key, chain_id()),
        )
    };
    let k0 = keys[0].public();
    // A bad signature.
    let Message::Vote(mut v) = vote(&keys[0], 0) else {
        unreachable!()
    };
    v.signature = vote(&keys[1], 0).clone().into_vote().signature;
    assert_eq!(
        deliver(&mut engine, &mut chain, k0, Message::Vote(v)),
        Err(TendermintError::BadSignature { validator: k0 })
    );
    // A key outside the validator set.
    let stranger = Keypair::from_seed(&[77; 32]);
    assert_eq!(
        deliver(
            &mut engine,
            &mut chain,
            stranger.public(),
            vote(&stranger, 0)
        ),
        Err(TendermintError::NotAValidator(stranger.public()))
    );
    // Too many rounds ahead.
    assert!(matches!(
        deliver(&mut engine, &mut chain, k0, vote(&keys[0], 1_000)),
        Err(TendermintError::RoundTooFar { round: 1_000, .. })
    ));
    // Too many heights ahead.
    let mut far = vote(&keys[0], 0).into_vote().vote;
    far.height = 5;
    assert!(matches!(
        deliver(
            &mut engine,
            &mut chain,
            k0,
            Message::Vote(far.sign(&keys[0], chain_id()))
        ),
        Err(TendermintError::HeightTooFar {
            found: 5,
            current: 1
        })
    ));
    // None of it moved the engine.
    assert_eq!((engine.height(), engine.round()), (1, 0));
    // A valid vote is taken.
    assert_eq!(
        deliver(&mut engine, &mut chain, k0, vote(&keys[0], 0)),
        Ok(())
    );
}

#[test]
fn a_proposal_from_anyone_but_the_rounds_proposer_is_refused() {
    let (mut engine, mut chain) = started();
    let set = validator_set();
    let proposer = set.proposer(1, 0).key();
    let impostor = validator_keys()
        .into_iter()
        .find(|k| k.public() != proposer)
        .unwrap();
    let block = chain
        .build_template(client_txs(2), GENESIS + 1)
        .unwrap()
        .seal(())
        .unwrap();
    let proposal = medledger::tendermint::Proposal {
        round: 0,
        pol_round: None,
        proposer: impostor.public(),
        block: ProposedBlock::new(block),
    }
    .sign(&impostor, chain_id());
    let err = deliver(
        &mut engine,
        &mut chain,
        impostor.public(),
        Message::Proposal {
            proposal,
            parent_seal: TendermintSeal::default(),
        },
    );
    assert_eq!(
        err,
        Err(TendermintError::WrongProposer {
            height: 1,
            round: 0,
            expected: proposer,
            found: impostor.public()
        })
    );
}

/// The prevote a validator that is not the proposer of height 1, round 0 casts on that
/// proposer's proposal of a block of `txs`, the validator's own blocks bounded to `max_txs`
/// transactions (its engine's limit) and `max_bytes` bytes of them (its ledger's); and the
/// block's id.
fn prevote_on(txs: &[Transaction], max_txs: usize, max_bytes: usize) -> (Option<BlockId>, BlockId) {
    let first = validator_set().proposer(1, 0).key();
    let (proposer, voter): (Vec<Keypair>, Vec<Keypair>) = validator_keys()
        .into_iter()
        .partition(|k| k.public() == first);
    let (proposer, voter) = (&proposer[0], voter.into_iter().next().unwrap());
    let voter_key = voter.public();
    let mut config = TendermintConfig::new(voter);
    config.timeouts = fast_timeouts();
    config.max_block_txs = max_txs;
    let mut engine = Engine::new(TendermintConsensus::new(NAME, validator_set()), config);
    let mut ledger = TmLedger::builder(new_chain())
        .max_block_bytes(max_bytes)
        .build()
        .unwrap();
    engine
        .handle(&mut ledger, GENESIS * SECOND, Input::Start)
        .unwrap();
    let block = ledger
        .build_template(txs.to_vec(), GENESIS + 1)
        .unwrap()
        .seal(())
        .unwrap();
    let proposed = ProposedBlock::new(block);
    let id = proposed.id();
    let proposal = medledger::tendermint::Proposal {
        round: 0,
        pol_round: None,
        proposer: proposer.public(),
        block: proposed,
    }
    .sign(proposer, chain_id());
    let out = engine
        .handle(
            &mut ledger,
            GENESIS * SECOND + 1,
            Input::Message {
                from: proposer.public(),
                message: Message::Proposal {
                    proposal,
                    parent_seal: TendermintSeal::default(),
                },
            },
        )
        .unwrap();
    let prevote = out
        .into_iter()
        .find_map(|o| match o {
            Output::Send {
                message: Message::Vote(v),
                ..
            } if v.vote.kind == VoteKind::Prevote && v.vote.validator == voter_key => {
                Some(v.vote.block)
            }
            _ => None,
        })
        .expect("the validator prevotes on the round's proposal");
    (prevote, id)
}

#[test]
fn a_proposer_rebroadcasts_its_proposal_only_to_validators_whose_votes_do_not_show_they_hold_it() {
    let first = validator_set().proposer(1, 0).key();
    let keys = validator_keys();
    let (proposer, others): (Vec<Keypair>, Vec<Keypair>) =
        keys.into_iter().partition(|k| k.public() == first);
    let mut config = TendermintConfig::new(proposer.into_iter().next().unwrap());
    config.timeouts = fast_timeouts();
    let mut engine = Engine::new(TendermintConsensus::new(NAME, validator_set()), config);
    let mut ledger = new_ledger();
    let out = engine
        .handle(&mut ledger, GENESIS * SECOND, Input::Start)
        .unwrap();
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::Send {
                to: Recipients::All,
                message: Message::Proposal { proposal, .. },
            } => Some(proposal.proposal.block.id()),
            _ => None,
        })
        .expect("the round's proposer proposes at once");
    let rebroadcast = out
        .iter()
        .find_map(|o| match o {
            Output::SetTimer { timer, at } if timer.kind == TimerKind::Rebroadcast => {
                Some((*timer, *at))
            }
            _ => None,
        })
        .expect("a rebroadcast timer for the round");
    // One validator prevotes the block: it holds it.
    let holder = &others[0];
    let prevote = Vote {
        kind: VoteKind::Prevote,
        height: 1,
        round: 0,
        block: Some(id),
        validator: holder.public(),
    }
    .sign(holder, chain_id());
    engine
        .handle(
            &mut ledger,
            GENESIS * SECOND + 1,
            Input::Message {
                from: holder.public(),
                message: Message::Vote(prevote),
            },
        )
        .unwrap();
    let out = engine
        .handle(&mut ledger, rebroadcast.1, Input::Timer(rebroadcast.0))
        .unwrap();
    let resent: Vec<&Recipients> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                message: Message::Proposal { .. },
            } => Some(to),
            _ => None,
        })
        .collect();
    let mut expected: Vec<PublicKey> = others[1..].iter().map(|k| k.public()).collect();
    expected.sort();
    match resent.as_slice() {
        [Recipients::Some(to)] => {
            let mut to = to.clone();
            to.sort();
            assert_eq!(
                to, expected,
                "the proposal goes to those not known to hold it"
            );
        }
        other => panic!("one proposal rebroadcast to some validators, got {other:?}"),
    }
    // The proposer's own prevote is rebroadcast to everyone, and the timer set again, a
    // rebroadcast interval later (it does not grow with the round).
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Send {
            to: Recipients::All,
            message: Message::Vote(v)
        } if v.vote.validator == first && v.vote.kind == VoteKind::Prevote
    )));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SetTimer { timer, at }
            if timer.kind == TimerKind::Rebroadcast && *at == rebroadcast.1 + fast_timeouts().rebroadcast
    )));
}

#[test]
fn a_proposal_over_the_validators_block_limits_gets_a_nil_prevote() {
    // A proposer cannot make the others check and execute blocks larger than they would
    // propose themselves, however valid each transaction is.
    // A ledger's byte limit is at least one largest transaction: enough of them to pass it.
    let txs = client_txs(200);
    let bytes: usize = txs.iter().map(|t| t.encode().len()).sum();
    assert!(bytes > medledger::tx::MAX_TX_LEN);
    let roomy = 1 << 20;
    // The same block: a prevote for it at the limits, nil one transaction or one byte below.
    let (vote, id) = prevote_on(&txs, 200, roomy);
    assert_eq!(vote, Some(id));
    assert_eq!(prevote_on(&txs, 199, roomy).0, None, "one transaction over");
    assert_eq!(
        prevote_on(&txs, 200, bytes).0,
        Some(id),
        "exactly the byte limit"
    );
    assert_eq!(prevote_on(&txs, 200, bytes - 1).0, None, "one byte over");
}

#[test]
fn offered_transactions_with_bad_signatures_are_refused_whole() {
    let (mut engine, mut chain) = started();
    let mut txs = client_txs(3);
    txs[1].signature = txs[0].signature;
    let err = engine
        .handle(
            &mut chain,
            GENESIS * SECOND,
            Input::Transactions(txs.clone()),
        )
        .unwrap_err();
    assert!(matches!(err, TendermintError::Transaction(_)), "{err}");
    assert_eq!(chain.pending(), 0);
    engine
        .handle(
            &mut chain,
            GENESIS * SECOND,
            Input::Transactions(client_txs(3)),
        )
        .unwrap();
    assert_eq!(chain.pending(), 3);
}

fn chain_id() -> medledger::hash::ChainId {
    new_chain().chain_id()
}

trait IntoVote {
    fn into_vote(self) -> SignedVote;
}

impl IntoVote for Message<Payload> {
    fn into_vote(self) -> SignedVote {
        match self {
            Message::Vote(v) => v,
            _ => panic!("not a vote"),
        }
    }
}

// ----- validators from the chain -----

fn set_validator(nonce: u64, key: PublicKey, power: u64) -> Transaction {
    Transaction::sign(
        &authority(),
        chain_id(),
        nonce,
        Payload::Access(AccessOp::SetValidator { key, power }),
    )
}

/// Whether `key` signed the seal of `header` (as a member of the set the seal names).
fn signed_by(header: &medledger::block::Header<TendermintSeal>, key: &PublicKey) -> bool {
    let set = header.seal.signing_set().unwrap();
    let Some(index) = set.index_of(key) else {
        return false;
    };
    header
        .seal
        .signatures
        .iter()
        .any(|s| usize::from(s.validator) == index)
}

fn height_of_change(chain: &TmChain) -> Option<u64> {
    (1..=chain.height()).find(|h| chain.header_at(*h).unwrap().seal.next_validators.is_some())
}

#[test]
fn validators_join_and_leave_through_authority_operations() {
    let mut net = Net::with_nodes(11, vec![Behaviour::Honest; 5], 20_000);
    let newcomer = Keypair::from_seed(&[5; 32]).public();
    let leaver = Keypair::from_seed(&[1; 32]).public();
    net.run(net.now + 10 * SECOND, 2);
    assert!(!net.nodes[4].engine.is_validator());

    // The authority adds a fifth validator.
    net.offer(&[set_validator(0, newcomer, 1)]);
    net.run(net.now + 10 * SECOND, net.min_height() + 3);
    let chain = &net.nodes[0].chain();
    let added = height_of_change(chain).unwrap_or_else(|| {
        panic!(
            "the change is in a block: heights {:?}, pools {:?}, refused {:?}",
            heights(&net),
            net.nodes
                .iter()
                .map(|n| n.ledger.pending())
                .collect::<Vec<_>>(),
            net.refused_appends
        )
    });
    assert_eq!(
        chain
            .header_at(added)
            .unwrap()
            .seal
            .next_set()
            .unwrap()
            .len(),
        5
    );
    net.run(net.now + 30 * SECOND, added + 6);
    assert!(net.min_height() >= added + 6, "heights {:?}", heights(&net));
    assert!(net.nodes[4].engine.is_validator());
    assert_eq!(
        net.nodes[4]
            .chain()
            .state()
            .access()
            .validator_power(&newcomer),
        Some(1)
    );
    // From the next height on, the set has five validators and the newcomer's precommits
    // appear in seals; never before.
    let chain = &net.nodes[0].chain();
    for h in 1..=chain.height() {
        let header = chain.header_at(h).unwrap();
        let expected = if h > added { 5 } else { 4 };
        assert_eq!(header.seal.validators.len(), expected, "height {h}");
        if h <= added {
            assert!(!signed_by(header, &newcomer));
        }
    }
    assert!(
        (added + 1..=chain.height()).any(|h| signed_by(chain.header_at(h).unwrap(), &newcomer)),
        "the new validator signs"
    );

    // The authority removes the first validator; the chain goes on with four.
    net.offer(&[set_validator(1, leaver, 0)]);
    let before = net.min_height();
    net.run(net.now + 10 * SECOND, before + 3);
    net.run(net.now + 30 * SECOND, net.min_height() + 6);
    let chain = &net.nodes[1].chain();
    let removed = (added + 1..=chain.height())
        .find(|h| chain.header_at(*h).unwrap().seal.next_validators.is_some())
        .expect("the removal is in a block");
    assert!(chain.height() >= removed + 5, "heights {:?}", heights(&net));
    for h in removed + 1..=chain.height() {
        let header = chain.header_at(h).unwrap();
        assert_eq!(header.seal.validators.len(), 4, "height {h}");
        assert!(header.seal.signing_set().unwrap().get(&leaver).is_none());
        assert!(!signed_by(header, &leaver));
    }
    assert!(
        !net.nodes[0].engine.is_validator(),
        "the leaver only follows"
    );
    assert_eq!(net.violations(), Vec::<String>::new());
    assert_eq!(net.refused_appends, Vec::<String>::new());
}

#[test]
fn only_an_authority_may_change_the_validator_set() {
    let mut chain = new_chain();
    let stranger = Keypair::from_seed(&[66; 32]);
    let newcomer = Keypair::from_seed(&[5; 32]).public();
    let op = AccessOp::SetValidator {
        key: newcomer,
        power: 1,
    };
    let tx = Transaction::sign(&stranger, chain.chain_id(), 0, Payload::Access(op));
    let template = chain.build_template(vec![tx], GENESIS + 1).unwrap();
    assert_eq!(template.txs.len(), 0);
    let (_, why) = &template.rejected[0];
    assert!(
        matches!(why, StateError::App(AccessError::NotRegistered(a)) if *a == stranger.account()),
        "{why}"
    );
    // An authority may, but not with a weak key.
    let weak = PublicKey::from_bytes([0; 32]);
    let template = chain
        .build_template(vec![set_validator(0, weak, 1)], GENESIS + 1)
        .unwrap();
    assert!(matches!(
        template.rejected[0].1,
        StateError::App(AccessError::BadKey(_))
    ));
    // Nor with more power than any set could total.
    let template = chain
        .build_template(
            vec![set_validator(0, newcomer, MAX_VALIDATOR_POWER + 1)],
            GENESIS + 1,
        )
        .unwrap();
    assert!(matches!(
        template.rejected[0].1,
        StateError::App(AccessError::PowerTooLarge { .. })
    ));
}

/// Block 1 adds a fifth validator, sealed by the genesis set.
fn chain_with_five_validators() -> (TmChain, Keypair) {
    let mut chain = new_chain();
    let fifth = Keypair::from_seed(&[5; 32]);
    let template = chain
        .build_template(vec![set_validator(0, fifth.public(), 1)], GENESIS + 5)
        .unwrap();
    let block = template.seal(()).unwrap();
    let id = block_id(&block.header);
    let mut seal = seal_with(&sorted_votes(&indexed(), 1, 0, id)[..3], 0);
    let five = validator_set().apply([(fifth.public(), 1)]).unwrap();

    // A seal that ignores the change is refused.
    assert_eq!(
        refusal(&mut chain, sealed(&block, seal.clone())),
        TendermintError::WrongNextValidators { height: 1 }
    );
    seal.next_validators = Some(five.to_list());
    chain.append(sealed(&block, seal)).unwrap();
    (chain, fifth)
}

#[test]
fn after_a_change_only_the_new_set_can_seal() {
    let (mut chain, fifth) = chain_with_five_validators();
    let five = chain.tip_header().seal.next_set().unwrap();
    assert_eq!(five.len(), 5);
    let (block, id) = next_block(&mut chain, GENESIS + 10);

    // The old set, even all four of it, under its own name: refused.
    let old = seal_with(&sorted_votes(&indexed(), 2, 0, id), 0);
    assert_eq!(
        refusal(&mut chain, sealed(&block, old)),
        TendermintError::WrongValidators { height: 2 }
    );
    // Three of the five: not a quorum of the new set.
    let mut keys: Vec<(u16, Keypair)> = validator_keys()
        .into_iter()
        .chain([fifth])
        .map(|k| (five.index_of(&k.public()).unwrap() as u16, k))
        .collect();
    keys.sort_by_key(|(i, _)| *i);
    let votes = sorted_votes(&keys, 2, 0, id);
    let mut seal = seal_with(&votes[..3], 0);
    seal.validators = five.to_list();
    assert_eq!(
        refusal(&mut chain, sealed(&block, seal)),
        TendermintError::InsufficientPower {
            signed: 3,
            total: 5
        }
    );
    // Four of the five, including the newcomer: appended.
    let mut seal = seal_with(&votes[1..], 0);
    seal.validators = five.to_list();
    chain.append(sealed(&block, seal)).unwrap();
    assert_eq!(chain.height(), 2);
}

#[test]
fn a_block_recording_invalid_evidence_is_refused() {
    let mut chain = new_chain();
    let submitter = Keypair::from_seed(&[70; 32]);
    let offender = validator_keys()[0].public();
    let op = AccessOp::RecordEvidence {
        offender,
        offence: Digest::from_bytes([1; 32]),
        evidence: vec![1, 2, 3].try_into().unwrap(),
    };
    let tx = Transaction::sign(&submitter, chain.chain_id(), 0, Payload::Access(op));
    let template = chain.build_template(vec![tx], GENESIS + 5).unwrap();
    assert!(template.rejected.is_empty(), "the application keeps it");
    let block = template.seal(()).unwrap();
    let id = block_id(&block.header);
    let seal = seal_with(&sorted_votes(&indexed(), 1, 0, id)[..3], 0);
    assert!(matches!(
        refusal(&mut chain, sealed(&block, seal)),
        TendermintError::BadEvidence(_)
    ));
}

#[test]
fn evidence_of_double_signing_is_recorded_on_chain_once_per_offence() {
    let net = equivocator_run();
    assert_eq!(net.refused_appends, Vec::<String>::new());
    let offender = net.nodes[0].keypair.public();
    let engine = TendermintConsensus::new(NAME, validator_set());
    for node in net.honest() {
        let chain = &node.chain();
        let records = chain.state().access().evidence_against(&offender);
        assert!(!records.is_empty(), "evidence reached the chain");
        // Exactly once per offence: as many recording transactions on chain as records.
        let on_chain = (1..=chain.height())
            .flat_map(|h| {
                chain
                    .block(&chain.hash_at(h).unwrap())
                    .unwrap()
                    .unwrap()
                    .txs
                    .to_vec()
            })
            .filter(|t| {
                matches!(
                    t.body.payload,
                    Payload::Access(AccessOp::RecordEvidence { .. })
                )
            })
            .count();
        assert_eq!(on_chain, records.len());
        let mut offences = std::collections::BTreeSet::new();
        for r in records {
            let e: Evidence = medledger::codec::decode(&r.evidence).unwrap();
            assert_eq!(e.verify(&engine), Ok(offender));
            assert_eq!(e.offence(), r.offence);
            assert!(offences.insert(r.offence), "one record per offence");
        }
    }
}

// ----- one block, two seals -----

#[test]
fn a_second_seal_of_the_tip_is_swapped_in_without_reorganising() {
    let mut ledger = TmLedger::new(new_chain()).unwrap();
    assert_eq!(ledger.chain().max_reorg_depth(), 0);
    let keys = indexed();
    let block = ledger
        .build_template(client_txs(2), GENESIS + 5)
        .unwrap()
        .seal(())
        .unwrap();
    let id = block_id(&block.header);
    let votes = sorted_votes(&keys, 1, 0, id);
    let own = sealed(&block, seal_with(&votes[..3], 0));
    let theirs = sealed(&block, seal_with(&votes[1..], 0));
    assert_ne!(own.hash(), theirs.hash());
    ledger.append(own.clone()).unwrap();
    let state_root = ledger.chain().tip_header().state_root;
    // The other copy is kept beside the tip (same work, no switch).
    let update = ledger.append(theirs.clone()).unwrap();
    assert!(update.applied.is_empty());
    assert_eq!(ledger.chain().tip(), own.hash());

    // A block on the other copy, sealed by a quorum at height 2.
    let on_theirs = |ledger: &mut TmLedger, state_root: Option<medledger::hash::StateRoot>| {
        let mut b = ledger
            .build_template(client_txs(0), GENESIS + 10)
            .unwrap()
            .seal(())
            .unwrap();
        b.header.parent = theirs.hash();
        if let Some(root) = state_root {
            b.header.state_root = root;
        }
        let votes = sorted_votes(&keys, 2, 0, block_id(&b.header));
        sealed(&b, seal_with(&votes[..3], 0))
    };
    // An invalid one is refused, and the tip stays as it was.
    let bad = on_theirs(
        &mut ledger,
        Some(medledger::hash::StateRoot::from_bytes([9; 32])),
    );
    assert!(ledger.append(bad).is_err());
    assert_eq!(ledger.chain().tip(), own.hash());
    assert_eq!(ledger.chain().height(), 1);
    // A valid one is appended: the tip's seal is swapped, nothing is reverted.
    let next = on_theirs(&mut ledger, None);
    let update = ledger.append(next.clone()).unwrap();
    assert!(update.reverted.is_empty());
    assert_eq!(update.applied.len(), 1);
    let chain = ledger.chain();
    assert_eq!(chain.tip(), next.hash());
    assert_eq!(chain.hash_at(1), Some(theirs.hash()));
    assert_eq!(chain.header_at(1).unwrap().state_root, state_root);
}

#[test]
fn offered_transactions_the_ledger_refuses_come_back_with_its_reason() {
    let (mut engine, mut ledger) = started();
    let stranger = Keypair::from_seed(&[66; 32]);
    let op = AccessOp::SetValidator {
        key: stranger.public(),
        power: 1,
    };
    let refused = Transaction::sign(&stranger, chain_id(), 0, Payload::Access(op));
    let txs = vec![client_txs(1)[0].clone(), refused];
    let err = engine
        .handle(&mut ledger, GENESIS * SECOND, Input::Transactions(txs))
        .unwrap_err();
    match err {
        TendermintError::Refused { index, reason } => {
            assert_eq!(index, 1);
            assert!(reason.contains("not registered"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    // The valid one is pending; a replay of it is refused as a duplicate.
    assert_eq!(ledger.pending(), 1);
    let again = engine.handle(
        &mut ledger,
        GENESIS * SECOND,
        Input::Transactions(vec![client_txs(1)[0].clone()]),
    );
    assert!(
        matches!(again, Err(TendermintError::Refused { index: 0, .. })),
        "{again:?}"
    );
}

#[test]
fn offer_all_answers_each_transaction_and_a_bad_signature_refuses_only_its_own() {
    let (engine, mut ledger) = started();
    let mut txs = client_txs(3);
    txs[1].signature = txs[0].signature;
    let stranger = Keypair::from_seed(&[67; 32]);
    let op = AccessOp::SetValidator {
        key: stranger.public(),
        power: 1,
    };
    txs.push(Transaction::sign(
        &stranger,
        chain_id(),
        0,
        Payload::Access(op),
    ));
    let answers = engine.offer_all(&mut ledger, txs.clone());
    assert_eq!(answers.len(), 4);
    assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
    match &answers[1] {
        Err(TendermintError::Refused { index: 1, reason }) => {
            assert!(reason.contains("does not verify"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
    match &answers[3] {
        Err(TendermintError::Refused { index: 3, reason }) => {
            assert!(reason.contains("not registered"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let pending: Vec<_> = ledger.pending_txs().cloned().collect();
    assert_eq!(pending, vec![txs[0].clone(), txs[2].clone()]);
    // Offered again, the taken ones are duplicates; the same answers as submitting alone.
    let again = engine.offer_all(&mut ledger, vec![txs[0].clone()]);
    assert!(
        matches!(&again[0], Err(TendermintError::Refused { reason, .. }) if reason.contains("already pending")),
        "{again:?}"
    );
    assert_eq!(ledger.pending(), 2);
}
