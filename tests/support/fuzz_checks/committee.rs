//! Committee consensus: every protocol message decoder (a node handles whatever decodes), and
//! committee blocks, headers and seals (a fresh chain validates whatever decodes).

use std::sync::Arc;

use medledger::block::Header;
use medledger::chain::ManualClock;
use medledger::codec::{self, Canonical};
use medledger::committee::{
    CommitteeAssignment, CommitteeConsensus, CommitteeParams, CommitteeSeal, Host, Message,
    NextEpoch, Node, NodeConfig, Pol, Precommits, Proposal, RoundChange, ShardBatch,
    ShardCertified, ShardRequest, ShardResult, Tick, Timing, TipInfo, Value, Vote,
};
use medledger::consensus::protocol::{Input, Protocol};
use medledger::hash::{AccountId, BlockHash, StateRoot};
use medledger::tx::{Keypair, PublicKey, Signature};
use medledger::Block;
use medledger::Transaction;
use medledger::{Chain, ChainBuilder};

use super::decoders::round_trip;

/// The simulator's seed the committee seeds were produced with.
pub const SIM_SEED: u64 = 11;
/// The simulator's genesis time.
pub const SIM_GENESIS_TIME: u64 = 1_800_000_000;

/// The parameters of the simulated network the seeds come from (two committees of four).
pub fn params() -> CommitteeParams {
    CommitteeParams::builder()
        .shard_bits(1)
        .committee_size(4)
        .identity_difficulty(4)
        .genesis_seed(SIM_SEED.to_le_bytes())
        .bootstrap(SIM_BOOTSTRAP.iter().map(|k| key_from_hex(k)))
        .build()
        .expect("valid parameters")
}

/// The simulated network's bootstrap directory (its first four nodes' keys; the corpus test
/// checks them against the simulator's).
const SIM_BOOTSTRAP: [&str; 4] = [
    "afc327c67cde29f7350b565de9630b3dd6ce594f4d09af1125b858cec392248b",
    "75e26bcbaa943c0d64432e48050aba2018e392b2422d08d8b0c438ab7aa83e6a",
    "39f6dfa3ef6e8d770c2ae5563bee64f59b8a414f6fec3d3fa28715d9ac421e45",
    "f0d1131ac5b5edc74db8651a0c89c9d78bba12ee0cd06afda49bfb28bd4a67c8",
];

fn key_from_hex(hex: &str) -> PublicKey {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    PublicKey::from_bytes(bytes)
}

/// A fresh chain of that network, at genesis, with a clock that refuses no past block.
pub fn fresh_chain() -> Chain<CommitteeConsensus> {
    ChainBuilder::new("medledger-sim", CommitteeConsensus::new(params()))
        .genesis_time(SIM_GENESIS_TIME)
        .clock(Arc::new(ManualClock::new(SIM_GENESIS_TIME + 1_000_000)))
        .build()
        .expect("the chain opens")
}

/// Re-encoding `value` and decoding it as a `T` on its own gives it back.
fn standalone<T: Canonical + PartialEq + core::fmt::Debug>(value: &T) {
    let bytes = codec::encode(value);
    assert_eq!(
        codec::decode::<T>(&bytes).as_ref(),
        Ok(value),
        "{}",
        T::NAME
    );
}

/// Every committee message decoder on the input; a decoded [`Message`] is handed to a node.
pub fn committee_message(data: &[u8]) {
    if let Some(m) = round_trip::<Message>(data) {
        let _ = (m.height(), m.kind());
        match &m {
            Message::Proposal(p) => {
                standalone(p);
                standalone(&p.value);
                if let Some(pol) = &p.pol {
                    standalone(pol);
                }
            }
            Message::Vote(v) => standalone(v),
            Message::RoundChange(r) => standalone(r),
            Message::Precommits(p) => standalone(p),
            Message::Assignment(x) => standalone(x),
            Message::ShardResult(r) => standalone(r),
            Message::ShardBatch(b) => standalone(b),
            Message::ShardCertified(c) => standalone(c),
            Message::ShardRequest(r) => standalone(r),
            Message::Next(n) => standalone(n),
            _ => {}
        }
        handle(m);
    }
    let _ = round_trip::<Proposal>(data);
    let _ = round_trip::<Vote>(data);
    let _ = round_trip::<RoundChange>(data);
    let _ = round_trip::<Precommits>(data);
    let _ = round_trip::<CommitteeAssignment>(data);
    let _ = round_trip::<ShardResult>(data);
    let _ = round_trip::<ShardBatch>(data);
    let _ = round_trip::<ShardCertified>(data);
    let _ = round_trip::<ShardRequest>(data);
    let _ = round_trip::<NextEpoch>(data);
    let _ = round_trip::<Value>(data);
    let _ = round_trip::<Pol>(data);
}

/// A host that accepts every signature and transaction, so that a fuzzed message reaches the
/// protocol logic behind the signature checks.
struct Permissive;

impl Host for Permissive {
    fn verify_signatures(&mut self, _: &[(PublicKey, [u8; 32], Signature)]) -> Result<(), usize> {
        Ok(())
    }
    fn verify_txs(&mut self, _: &[Transaction]) -> bool {
        true
    }
    fn next_nonce(&mut self, _: &BlockHash, _: &AccountId) -> Option<u64> {
        Some(0)
    }
    fn state_root(
        &mut self,
        _: &BlockHash,
        _: u64,
        _: u64,
        _: &[Transaction],
    ) -> Option<StateRoot> {
        Some(StateRoot::default())
    }
    fn take_txs(&mut self, _: &BlockHash, _: u16, _: usize) -> Vec<Transaction> {
        Vec::new()
    }
}

/// A node at genesis of a two-node network (itself and the sender, both in the directory)
/// handles `m` from the other node, then lets time pass.
fn handle(m: Message) {
    let me = Keypair::from_seed(&[1; 32]);
    let peer = Keypair::from_seed(&[2; 32]).public();
    let chain = fresh_chain();
    let bootstrap = vec![me.public(), peer];
    let tip = TipInfo::of_header(chain.tip_header(), &bootstrap);
    let mut node = Node::new(NodeConfig {
        params: params(),
        keypair: me,
        peers: bootstrap,
        tip,
        timing: Timing::default(),
        max_shard_txs: 16,
    });
    let mut host = Permissive;
    let _ = node.handle(&mut host, 0, Input::Start);
    let _ = node.handle(
        &mut host,
        1,
        Input::Message {
            from: peer,
            message: m,
        },
    );
    let _ = node.handle(&mut host, 60_000_000, Input::Timer(Tick(60_000_000)));
    let _ = node.status();
}

/// Committee seals, headers and blocks: round trips; a decoded block is offered to a fresh chain
/// of the seeds' network (so a block 1 of that network is checked in full).
pub fn committee_block(data: &[u8]) {
    if let Some(seal) = round_trip::<CommitteeSeal>(data) {
        let _ = seal.next_randomness();
    }
    if let Some(h) = round_trip::<Header<CommitteeSeal>>(data) {
        let _ = h.hash();
    }
    if let Some(b) = round_trip::<Block<CommitteeSeal>>(data) {
        let mut chain = fresh_chain();
        let before = (chain.tip(), chain.height(), chain.state().root());
        match chain.append(b) {
            Ok(_) => assert_eq!(chain.height(), 1),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                assert_eq!((chain.tip(), chain.height(), chain.state().root()), before);
            }
        }
    }
}
