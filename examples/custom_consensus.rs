//! Round-robin proof of authority with view changes, written outside the crate and run on its
//! simulator. Each height runs Paxos: the view's leader proposes; authorities accept proposals of
//! the highest view they joined and tell all; a block a majority accepted in one view is decided.
//! On timeout an authority joins the next view with what it last accepted; once a majority joined,
//! the new leader re-proposes the block accepted in the highest view among them, or a fresh one.
//!
//! Fault model: **crash faults only**: with `n >= 2f + 1` authorities, decided blocks never
//! conflict whatever the delays, and with at most `f` down the rest keep deciding. Not
//! Byzantine-tolerant: messages are unsigned and a faulty authority can seal out of turn or lie.

use medledger::consensus::protocol::{Input, Output, Outputs, ProtocolInput, Recipients, Time};
use medledger::consensus::{Ancestors, Consensus, ConsensusError, Protocol, Work};
use medledger::sim::{medrec_load, medrec_nodes, Fault, NetConfig, Network, Replicas};
use medledger::tx::{Keypair, PublicKey, Signature};
use medledger::{block::Header, hash::BlockHash, sim::network::SECOND, Block, Chain, Transaction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The seal: the view the block was proposed in, and its leader's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Seal {
    view: u32,
    signature: Signature,
}
impl medledger::block::Seal for Seal {} // the block hash covers the whole seal
type Ledger = Chain<ProofOfAuthority>;
type Verdict = Result<Work, ConsensusError>;
type Outcome = Result<Outputs<Node>, std::convert::Infallible>;
type Accepted = Option<(u32, Block<Seal>)>; // a block and the view it was accepted in
const UNSIGNED: Signature = Signature::from_bytes([0; 64]);
const TIMEOUT: Time = SECOND / 2;
const BLOCK_SIZE: usize = 64;

/// The [`Consensus`] rule (the seal check): the block at `height` sealed in `view` must be signed
/// by authority `(height + view) % n`, that view's leader.
#[derive(Clone)]
struct ProofOfAuthority {
    authorities: Vec<PublicKey>,
}
impl ProofOfAuthority {
    fn leader(&self, height: u64, view: u32) -> PublicKey {
        self.authorities[((height + u64::from(view)) % self.authorities.len() as u64) as usize]
    }
}
impl Consensus for ProofOfAuthority {
    type Seal = Seal;
    fn name(&self) -> &'static str {
        "proof-of-authority"
    }
    fn genesis_seal(&self) -> Seal {
        let signature = UNSIGNED;
        Seal { view: 0, signature }
    }
    fn verify_header(&self, header: &Header<Seal>, _: &dyn Ancestors<Seal>, _: u64) -> Verdict {
        let key = self.leader(header.height, header.seal.view).verifying_key();
        let sig = ed25519_dalek::Signature::from_bytes(&header.seal.signature.to_bytes());
        let mut unsigned = header.clone(); // the leader signs its hash with the signature zero
        unsigned.seal.signature = UNSIGNED;
        match key.map(|key| key.verify_strict(unsigned.hash().as_bytes(), &sig)) {
            Ok(Ok(())) => Ok(Work::from_u64(1)), // only decided blocks are appended: no forks
            _ => Err(ConsensusError::BadSeal("not its leader's".into())),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Msg(u64, u32, Kind); // what authorities tell each other: (height, view, what)
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Kind {
    Propose(Block<Seal>), // by the view's leader: sealed in this view, or re-proposed
    Accept(BlockHash),    // the sender accepted the block with this hash in the view
    Join(Accepted),       // the sender joined the view, with what it accepted last
    Decided(Block<Seal>), // the block decided at the height, for a peer still deciding it
}
impl medledger::codec::Canonical for Msg {
    const NAME: &'static str = "proof-of-authority message";
    const MAX_ENCODED_LEN: usize = medledger::block::MAX_BLOCK_LEN + 256;
}
/// Where an authority is within one height.
#[derive(Default)]
struct Round {
    height: u64,
    view: u32,
    accepted: Accepted,
    decided: bool,
    accepts: BTreeMap<(u32, BlockHash), BTreeSet<PublicKey>>,
    joins: BTreeMap<u32, BTreeMap<PublicKey, Accepted>>,
    later: Vec<(PublicKey, Msg)>, // messages for heights ahead
}
/// One authority's [`Protocol`] engine.
struct Node {
    key: Keypair,
    pool: Vec<Transaction>,
    now: Time,
    out: Outputs<Self>,
    r: Round,
}

impl Node {
    fn enter_height(&mut self, chain: &mut Ledger) {
        let (state, later) = (chain.state(), std::mem::take(&mut self.r).later);
        let next_nonce = |t: &Transaction| state.next_nonce(&state.account_of_key(&t.body.signer));
        self.pool.retain(|t| t.body.nonce >= next_nonce(t));
        self.r.height = chain.height() + 1;
        self.enter_view(chain, 0);
        for (from, message) in later {
            self.on_message(chain, from, message);
        }
    }
    fn enter_view(&mut self, chain: &mut Ledger, view: u32) {
        let (height, round, at) = (self.r.height, view, self.now + TIMEOUT);
        let timer = (height, view);
        self.r.view = view;
        self.out.push(Output::Progress { height, round });
        self.out.push(Output::SetTimer { timer, at });
        match view {
            0 => self.propose(chain, None),
            _ => self.tell_all(chain, Kind::Join(self.r.accepted.clone())),
        }
    }
    /// Sends to the others, and handles it as theirs.
    fn tell_all(&mut self, chain: &mut Ledger, kind: Kind) {
        let mine = Msg(self.r.height, self.r.view, kind);
        let (to, message) = (Recipients::All, mine.clone());
        self.out.push(Output::Send { to, message });
        self.on_message(chain, self.key.public(), mine);
    }
    /// As the view's leader: proposes `prior`, or else a fresh block of pooled transactions.
    fn propose(&mut self, chain: &mut Ledger, prior: Option<Block<Seal>>) {
        if chain.engine().leader(self.r.height, self.r.view) != self.key.public() {
            return;
        }
        let txs = self.pool.iter().take(BLOCK_SIZE).cloned().collect();
        let time = (self.now / SECOND).max(chain.tip_header().timestamp);
        let (view, signature) = (self.r.view, UNSIGNED);
        if let Some(block) = prior.or_else(|| {
            let template = chain.build_template(txs, time).ok()?;
            let mut block = template.seal(Seal { view, signature }).ok()?;
            block.header.seal.signature = self.key.sign(block.header.hash().as_bytes());
            Some(block)
        }) {
            self.tell_all(chain, Kind::Propose(block));
        }
    }
    fn on_message(&mut self, chain: &mut Ledger, from: PublicKey, m: Msg) {
        let (height, view, quorum) = (m.0, m.1, chain.engine().authorities.len() / 2 + 1);
        match m.2 {
            _ if !chain.engine().authorities.contains(&from) => {}
            _ if height > self.r.height => self.r.later.push((from, m)),
            Kind::Join(_) if height < self.r.height => {
                if let Some(Ok(Some(block))) = chain.hash_at(height).map(|h| chain.block(&h)) {
                    let message = Msg(height, view, Kind::Decided(block));
                    let to = Recipients::One(from);
                    self.out.push(Output::Send { to, message });
                }
            }
            _ if height < self.r.height => {}
            Kind::Propose(block) => {
                let on_tip = block.header.parent == chain.tip() && block.header.seal.view <= view;
                if from != chain.engine().leader(height, view) || !on_tip || view < self.r.view {
                    return; // not the view leader's proposal on our tip, or a view we left
                }
                if view > self.r.view {
                    self.enter_view(chain, view);
                }
                let hash = block.header.hash();
                self.r.accepted = Some((view, block));
                self.tell_all(chain, Kind::Accept(hash));
            }
            Kind::Accept(hash) => {
                let votes = self.r.accepts.entry((view, hash)).or_default();
                votes.insert(from);
                let ours = self.r.accepted.as_ref().map(|(v, b)| (*v, b.header.hash()));
                if votes.len() >= quorum && ours == Some((view, hash)) {
                    self.decide(self.r.accepted.clone().expect("accepted").1);
                }
            }
            Kind::Join(accepted) => {
                if view > self.r.view && !self.r.decided {
                    self.enter_view(chain, view);
                }
                let joined = self.r.joins.entry(view).or_default();
                let first = joined.insert(from, accepted).is_none(); // so the leader proposes once
                if first && joined.len() == quorum && self.r.view == view {
                    let best = joined.values().flatten().max_by_key(|a| a.0).cloned();
                    self.propose(chain, best.map(|(_, block)| block));
                }
            }
            Kind::Decided(block) => self.decide(block),
        }
    }
    fn decide(&mut self, block: Block<Seal>) {
        if !std::mem::replace(&mut self.r.decided, true) {
            self.out.push(Output::Append(block));
        }
    }
}

impl Protocol for Node {
    type Message = Msg;
    type Timer = (u64, u32); // (height, view)
    type Tx = Transaction;
    type Block = Block<Seal>;
    type Evidence = ();
    type Error = std::convert::Infallible; // what it cannot use, it ignores
    type Ledger = Ledger;
    fn handle(&mut self, chain: &mut Ledger, now: Time, input: ProtocolInput<Self>) -> Outcome {
        let r = &self.r;
        let (next, timer) = (chain.height() + 1 != r.height, (r.height, r.view));
        self.now = now;
        match input {
            Input::Start | Input::Appended if next => self.enter_height(chain),
            Input::Message { from, message } => self.on_message(chain, from, message),
            Input::Timer(t) if t == timer && !r.decided => self.enter_view(chain, t.1 + 1),
            Input::Transactions(txs) => self.pool.extend(txs),
            _ => {}
        }
        Ok(std::mem::take(&mut self.out))
    }
}

/// Four hospitals under a closed-loop MedRec load: all up, then one crashed after a second.
fn main() {
    let key = |i: usize| Keypair::from_seed(&[i as u8 + 1; 32]);
    let authorities = (0..4).map(|i| key(i).public()).collect();
    let poa = ProofOfAuthority { authorities };
    let make = move |i| Node {
        key: key(i),
        pool: Vec::new(),
        now: 0,
        out: Vec::new(),
        r: Round::default(),
    };
    println!("4 hospitals          blocks   tx/s  p50 ms  p99 ms  views  violations");
    let crash = vec![(SECOND, Fault::Crash(2))];
    for (name, faults) in [("all up", vec![]), ("one crashed at 1 s", crash)] {
        let nodes = medrec_nodes("hospitals", &poa, poa.authorities.clone()).expect("genesis");
        let load = medrec_load::<Node>(nodes[0].1.chain_id(), 64, BLOCK_SIZE);
        let mut config = NetConfig::default();
        (config.blocks, config.faults) = (40, faults);
        let r = Network::new(Replicas::new("poa", nodes, Box::new(make), load), config).run();
        let (blocks, tps, bad) = (r.blocks, r.tx_per_sec, r.agreement_violations);
        let (p50, p99) = (r.finality_p50_us / 1000, r.finality_p99_us / 1000);
        let views = r.extra_rounds;
        println!("{name:<20} {blocks:>6} {tps:>6.0} {p50:>7} {p99:>7} {views:>6} {bad:>11}");
        assert!(blocks == 40 && bad == 0 && r.refused_appends == 0, "{name}");
    }
}
