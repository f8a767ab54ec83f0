//! A consensus engine written outside the crate and run on its simulator: round-robin proof of
//! authority for a hospital consortium, with view changes.
//!
//! [`ProofOfAuthority`] is the [`Consensus`] seal check: the block at `height` sealed in `view`
//! is signed by authority `(height + view) mod n`. [`Node`] is the [`Protocol`] engine, Paxos
//! per height with the authorities taking turns as leader: the leader of view 0 proposes; each
//! authority accepts the proposal of the highest view it has joined and tells all; a block a
//! majority accepted in one view is decided and appended. Without a decision within the timeout
//! an authority joins the next view and tells all, with what it last accepted; once a majority
//! joined, that view's leader re-proposes the block accepted in the highest view among them, or
//! else a fresh one. Authorities left behind are sent the decided block.
//!
//! Fault model: **crash faults only**. With `n >= 2f + 1` authorities, decided blocks never
//! conflict whatever the delays, and with at most `f` down the rest keep deciding once messages
//! arrive within the timeout. Not Byzantine-tolerant: messages are unsigned (the transport
//! authenticates senders), a seal shows whose turn it was but not that a majority accepted, and
//! a faulty authority can seal out of turn or lie when it joins a view (use `tendermint`).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use medledger::block::{Header, MAX_BLOCK_LEN};
use medledger::chain::Chain;
use medledger::codec::Canonical;
use medledger::consensus::protocol::{Input, Output, Outputs, ProtocolInput, Recipients, Time};
use medledger::consensus::{Ancestors, Consensus, ConsensusError, Protocol, Work};
use medledger::hash::BlockHash;
use medledger::sim::network::SECOND;
use medledger::sim::{medrec_load, medrec_nodes, Fault, NetConfig, Network, Replicas};
use medledger::tx::{Keypair, PublicKey, Signature};
use medledger::{MedRec, Transaction};
use serde::{Deserialize, Serialize};

/// The seal: the view the block was proposed in, and its leader's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Seal {
    view: u32,
    signature: Signature,
}

type PoaBlock = medledger::Block<Seal>;
type Ledger = Chain<ProofOfAuthority, MedRec>;
type Accepted = Option<(u32, PoaBlock)>; // a block and the view it was accepted in
const UNSIGNED: Signature = Signature::from_bytes([0; 64]);
const TIMEOUT: Time = SECOND / 2;
const BLOCK_SIZE: usize = 64;

/// What the leader signs: the block hash with the signature left zero (the view is signed).
fn digest(header: &Header<Seal>) -> [u8; 32] {
    let mut header = header.clone();
    header.seal.signature = UNSIGNED;
    *header.hash().as_bytes()
}

/// Round-robin proof of authority.
#[derive(Clone)]
struct ProofOfAuthority {
    authorities: Vec<PublicKey>,
}
impl ProofOfAuthority {
    fn leader(&self, height: u64, view: u32) -> PublicKey {
        let n = self.authorities.len() as u64;
        self.authorities[((height + u64::from(view)) % n) as usize]
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
    fn verify_header(
        &self,
        header: &Header<Seal>,
        _: &dyn Ancestors<Seal>,
        _: u64,
    ) -> Result<Work, ConsensusError> {
        let key = self.leader(header.height, header.seal.view).verifying_key();
        let sig = ed25519_dalek::Signature::from_bytes(&header.seal.signature.to_bytes());
        match key.map(|key| key.verify_strict(&digest(header), &sig)) {
            Ok(Ok(())) => Ok(Work::from_u64(1)), // only decided blocks are appended: no forks
            _ => Err(ConsensusError::BadSeal("not its leader's".into())),
        }
    }
}

/// What authorities tell each other: `(height, view, what)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Msg(u64, u32, Kind);
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Kind {
    /// The view's leader proposes this block (sealed in this view, or re-proposed).
    Propose(PoaBlock),
    /// The sender accepted the block with this hash in the view.
    Accept(BlockHash),
    /// The sender joined the view (accepts nothing older), with what it accepted last.
    Join(Accepted),
    /// The block decided at the height, for a peer still trying to decide it.
    Decided(PoaBlock),
}
impl Canonical for Msg {
    const NAME: &'static str = "proof-of-authority message";
    const MAX_ENCODED_LEN: usize = MAX_BLOCK_LEN + 256;
}
/// Where an authority is within one height.
#[derive(Default)]
struct Round {
    height: u64,
    view: u32,
    accepted: Accepted,
    decided: bool,
    accepts: BTreeMap<(u32, BlockHash), BTreeSet<PublicKey>>,
    joins: BTreeMap<u32, (BTreeSet<PublicKey>, Accepted)>,
    later: Vec<(PublicKey, Msg)>, // messages for heights ahead
}
/// One authority's engine.
struct Node {
    key: Keypair,
    pool: Vec<Transaction>,
    now: Time,
    out: Outputs<Self>,
    r: Round,
}

impl Node {
    fn enter_height(&mut self, chain: &mut Ledger) {
        let (state, later) = (chain.state(), std::mem::take(&mut self.r.later));
        let account = |t: &Transaction| state.account_of_key(&t.body.signer);
        self.pool
            .retain(|t| t.body.nonce >= state.next_nonce(&account(t)));
        self.r = Round::default();
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
        let (message, to) = (Msg(self.r.height, self.r.view, kind), Recipients::All);
        self.out.push(Output::Send {
            to,
            message: message.clone(),
        });
        self.on_message(chain, self.key.public(), message);
    }
    /// As the view's leader: proposes `prior`, or else a fresh block of pooled transactions.
    fn propose(&mut self, chain: &mut Ledger, prior: Option<PoaBlock>) {
        if chain.engine().leader(self.r.height, self.r.view) != self.key.public() {
            return;
        }
        let txs = self.pool.iter().take(BLOCK_SIZE).cloned().collect();
        let time = (self.now / SECOND).max(chain.header_at(chain.height()).unwrap().timestamp);
        let (view, signature) = (self.r.view, UNSIGNED);
        let Some(block) = prior.or_else(|| {
            let template = chain.build_template(txs, time).ok()?;
            let mut block = template.seal(Seal { view, signature }).ok()?;
            block.header.seal.signature = self.key.sign(&digest(&block.header));
            Some(block)
        }) else {
            return;
        };
        self.tell_all(chain, Kind::Propose(block));
    }
    fn on_message(&mut self, chain: &mut Ledger, from: PublicKey, m: Msg) {
        let (height, view, quorum) = (m.0, m.1, chain.engine().authorities.len() / 2 + 1);
        match m.2 {
            _ if height > self.r.height => self.r.later.push((from, m)),
            Kind::Join(_) if height < self.r.height => {
                let hash = chain.hash_at(height).unwrap_or_default();
                if let Ok(Some(block)) = chain.block(&hash) {
                    let message = Msg(height, view, Kind::Decided(block));
                    let to = Recipients::One(from);
                    self.out.push(Output::Send { to, message });
                }
            }
            _ if height < self.r.height => {}
            Kind::Propose(block) => {
                let header = &block.header;
                let valid = header.parent == chain.tip() && header.seal.view <= view;
                if from != chain.engine().leader(height, view) || !valid || view < self.r.view {
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
                    let (_, block) = self.r.accepted.clone().expect("accepted");
                    self.decide(block);
                }
            }
            Kind::Join(accepted) => {
                if view > self.r.view && !self.r.decided {
                    self.enter_view(chain, view);
                }
                let (joined, best) = self.r.joins.entry(view).or_default();
                if accepted.as_ref().map(|a| a.0) > best.as_ref().map(|b| b.0) {
                    *best = accepted;
                }
                // The leader proposes once: when the quorum-th authority joins.
                if joined.insert(from) && joined.len() == quorum && self.r.view == view {
                    let prior = best.clone().map(|(_, block)| block);
                    self.propose(chain, prior);
                }
            }
            Kind::Decided(block) => self.decide(block),
        }
    }
    fn decide(&mut self, block: PoaBlock) {
        if !std::mem::replace(&mut self.r.decided, true) {
            self.out.push(Output::Append(block));
        }
    }
}

impl Protocol for Node {
    type Message = Msg;
    type Timer = (u64, u32); // (height, view)
    type Tx = Transaction;
    type Block = PoaBlock;
    type Evidence = ();
    type Error = Infallible; // what it cannot use, it ignores
    type Ledger = Ledger;
    fn handle(
        &mut self,
        chain: &mut Ledger,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<Outputs<Self>, Infallible> {
        let (r, authorities) = (&self.r, &chain.engine().authorities);
        let (next, timer) = (chain.height() + 1 != r.height, (r.height, r.view));
        self.now = now;
        match input {
            Input::Start | Input::Appended if next => self.enter_height(chain),
            Input::Message { from, message } if authorities.contains(&from) => {
                self.on_message(chain, from, message)
            }
            Input::Timer(t) if t == timer && !r.decided => self.enter_view(chain, t.1 + 1),
            Input::Transactions(txs) => self.pool.extend(txs),
            _ => {}
        }
        Ok(std::mem::take(&mut self.out))
    }
}

/// Four hospitals, each with its own chain and engine, under a closed-loop MedRec load: all up,
/// then one crashed after a second.
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
        let (p50, p99, views) = (
            r.finality_p50_us / 1000,
            r.finality_p99_us / 1000,
            r.extra_rounds,
        );
        println!("{name:<20} {blocks:>6} {tps:>6.0} {p50:>7} {p99:>7} {views:>6} {bad:>11}");
        assert!(blocks == 40 && bad == 0 && r.refused_appends == 0, "{name}");
    }
}
