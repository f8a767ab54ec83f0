//! User stories of the foundation: build a chain, mine, append, reject each kind of invalid
//! block without changing anything, reorganise, reload from a store, replay from genesis.
//!
//! Other test crates run this whole suite on their own store by including this file as a module
//! and defining `store_under_test` at their root (`tests/file_store.rs`, `tests/sqlite_store.rs`).

#[path = "support/pow.rs"]
pub(crate) mod pow_setup;
use pow_setup::{engine, remine, snapshot};

use std::sync::Arc;

use medledger::chain::ManualClock;
use medledger::consensus::{Consensus, ConsensusError, Finality};
use medledger::hash::{BlockHash, ChainId, Digest, StateRoot};
use medledger::pow::{CompactTarget, PowSeal, ProofOfWork};
use medledger::store::{MemoryStore, Store};
use medledger::tx::Keypair;
use medledger::Block;
use medledger::StateError;
use medledger::{Chain, ChainBuilder, ChainError};
use medledger::{Payload, Transaction};
use proptest::prelude::*;

const T0: u64 = 1_750_000_000;

/// The store every chain of the suite runs on: the memory store here; a crate that includes
/// this file as a module supplies its own at its root.
#[allow(dead_code)]
fn store_under_test() -> Box<dyn Store> {
    Box::new(MemoryStore::new())
}

fn new_chain() -> (Chain<ProofOfWork>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0 + 1_000_000));
    let chain = ChainBuilder::new("test-chain", engine())
        .boxed_store(crate::store_under_test())
        .genesis_time(T0)
        .clock(clock.clone())
        .build()
        .unwrap();
    (chain, clock)
}

fn data_tx(chain: &Chain<ProofOfWork>, key: &Keypair, nonce: u64, n: u8) -> Transaction {
    Transaction::sign(
        key,
        chain.chain_id(),
        nonce,
        Payload::Data {
            record: Digest::from_bytes([n; 32]),
        },
    )
}

#[test]
fn mine_append_and_query() {
    let (mut chain, _) = new_chain();
    let alice = Keypair::from_seed(&[1; 32]);
    let txs = vec![data_tx(&chain, &alice, 0, 1), data_tx(&chain, &alice, 1, 2)];
    let block = chain.mine(txs, T0 + 600).unwrap();
    let out = chain.append(block.clone()).unwrap();
    assert_eq!(chain.height(), 1);
    assert_eq!(chain.tip(), block.hash());
    assert_eq!(out.applied.len(), 1);
    assert_eq!(out.applied[0].events.len(), 2);
    assert_eq!(chain.state().next_nonce(&alice.account()), 2);
    assert_eq!(chain.tip_header().state_root, chain.state().root());
    // A transaction's inclusion proof verifies against the header alone.
    let proof = medledger::merkle::MerkleProof::new(
        &block.txs.iter().map(Transaction::id).collect::<Vec<_>>(),
        1,
    )
    .unwrap();
    assert!(chain
        .tip_header()
        .verify_tx_proof(&proof, &block.txs[1].id())
        .is_ok());
    assert!(matches!(
        chain.append(block),
        Err(ChainError::AlreadyKnown(_))
    ));
    // The miner never builds a block the chain would refuse for going back in time.
    assert!(matches!(
        chain.mine(vec![], T0 + 599),
        Err(ChainError::TimestampBeforeParent { parent, found })
            if (parent, found) == (T0 + 600, T0 + 599)
    ));
    assert!(
        chain.mine(vec![], T0 + 600).is_ok(),
        "the parent's time is allowed"
    );
}

#[test]
fn a_block_appended_as_it_was_built_ends_where_executing_it_does() {
    // The builder keeps what it executed for its templates and commits that on append; a
    // replica executes the same blocks: both must end in the same state, with the same events.
    let (mut builder, _) = new_chain();
    let (mut replica, _) = new_chain();
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    let mut time = T0;
    for round in 0..4u8 {
        time += 600;
        let nonce = u64::from(round);
        let txs = vec![
            data_tx(&builder, &alice, nonce, round),
            data_tx(&builder, &bob, nonce, round),
        ];
        // Other templates on the same tip first (a proposer's earlier rounds, a checked
        // proposal that lost): only the block appended may be committed.
        builder.build_template(txs[..1].to_vec(), time).unwrap();
        builder.build_template(txs[1..].to_vec(), time).unwrap();
        let block = if round == 2 {
            // Built by the other chain, a second later: nothing the builder set aside
            // matches it, so this once the builder executes and the replica commits its own.
            replica.mine(txs, time + 1).unwrap()
        } else {
            builder.mine(txs, time).unwrap()
        };
        let built = builder.append(block.clone()).unwrap();
        let executed = replica.append(block).unwrap();
        assert_eq!(built.applied[0].events, executed.applied[0].events);
        assert_eq!(builder.state().root(), replica.state().root());
        assert_eq!(builder.state().root(), builder.tip_header().state_root);
    }
    assert_eq!(builder.state().next_nonce(&alice.account()), 4);
    assert_eq!(replica.state().next_nonce(&bob.account()), 4);
    // A template built on a tip that another block then replaced is never committed: the next
    // block at the same height is executed on the state it extends.
    time += 600;
    let forked = builder
        .build_template(vec![data_tx(&builder, &alice, 4, 9)], time)
        .unwrap();
    let block = replica
        .mine(vec![data_tx(&replica, &bob, 4, 8)], time)
        .unwrap();
    builder.append(block.clone()).unwrap();
    replica.append(block).unwrap();
    assert_eq!(builder.state().root(), replica.state().root());
    assert_ne!(builder.state().root(), forked.state_root);
    assert_eq!(builder.state().next_nonce(&alice.account()), 4);
}

#[test]
fn template_leaves_out_failing_transactions() {
    let (mut chain, _) = new_chain();
    let alice = Keypair::from_seed(&[1; 32]);
    let txs = vec![
        data_tx(&chain, &alice, 0, 1),
        data_tx(&chain, &alice, 0, 2), // replays nonce 0
        data_tx(&chain, &alice, 5, 3), // gap
        data_tx(&chain, &alice, 1, 4),
    ];
    let t = chain.build_template(txs, T0 + 600).unwrap();
    assert_eq!(t.txs.len(), 2);
    assert_eq!(t.rejected.len(), 2);
    assert!(matches!(
        t.rejected[0].1,
        StateError::BadNonce {
            expected: 1,
            found: 0,
            ..
        }
    ));
    // Building a template changes nothing.
    assert_eq!(chain.state().next_nonce(&alice.account()), 0);
}

#[test]
fn every_invalid_block_is_rejected_without_change() {
    let (mut chain, clock) = new_chain();
    let alice = Keypair::from_seed(&[1; 32]);
    let b1 = chain
        .mine(vec![data_tx(&chain, &alice, 0, 1)], T0 + 600)
        .unwrap();
    chain.append(b1).unwrap();
    let good = chain
        .mine(vec![data_tx(&chain, &alice, 1, 2)], T0 + 1200)
        .unwrap();
    let before = snapshot(&chain);

    let check = |chain: &mut Chain<ProofOfWork>, block: Block<PowSeal>, what: &str| {
        let err = chain.append(block).expect_err(what);
        assert_eq!(snapshot(chain), before, "{what} changed the chain: {err}");
        err
    };

    // Unknown parent.
    let mut b = good.clone();
    b.header.parent = BlockHash::from_bytes([9; 32]);
    assert!(matches!(
        check(&mut chain, b, "orphan"),
        ChainError::UnknownParent(_)
    ));
    // Wrong height.
    let mut b = good.clone();
    b.header.height = 5;
    assert!(matches!(
        check(&mut chain, b, "height"),
        ChainError::BadHeight {
            expected: 2,
            found: 5
        }
    ));
    // Proof of work not met.
    let mut b = good.clone();
    while ProofOfWork::pow_hash(&b.header)[31] == 0 || {
        let t = medledger::pow::Target::from_compact(b.header.seal.bits).unwrap();
        t.is_met_by(&ProofOfWork::pow_hash(&b.header))
    } {
        b.header.seal.nonce = b.header.seal.nonce.wrapping_add(1);
    }
    assert!(matches!(
        check(&mut chain, b, "pow"),
        ChainError::Consensus(ConsensusError::InsufficientWork { .. })
    ));
    // Wrong difficulty claimed (an easier target, re-mined).
    let mut b = good.clone();
    b.header.seal.bits = CompactTarget::from_consensus(0x207f_ffff);
    let b = remine(&chain, b);
    assert!(matches!(
        check(&mut chain, b, "bits"),
        ChainError::Consensus(ConsensusError::WrongTarget { .. })
    ));
    // Timestamp earlier than the parent's (T0 + 600), yet after the median time past (T0):
    // the chain refuses it whatever the engine allows.
    let mut b = good.clone();
    b.header.timestamp = T0 + 599;
    let b = remine(&chain, b);
    assert!(matches!(
        check(&mut chain, b, "back-dated"),
        ChainError::TimestampBeforeParent { parent, found }
            if (parent, found) == (T0 + 600, T0 + 599)
    ));
    // Timestamp equal to the parent's, not after the median time past (the parent's time).
    let mut b = good.clone();
    b.header.timestamp = T0 + 600;
    let b = remine(&chain, b);
    assert!(matches!(
        check(&mut chain, b, "old time"),
        ChainError::Consensus(ConsensusError::TimestampTooOld { .. })
    ));
    // Timestamp too far in the future.
    clock.set(T0 + 1200);
    let mut b = good.clone();
    b.header.timestamp = T0 + 1200 + 2 * 3600 + 1;
    let b = remine(&chain, b);
    assert!(matches!(
        check(&mut chain, b, "future time"),
        ChainError::Consensus(ConsensusError::TimestampTooNew { .. })
    ));
    clock.set(T0 + 1_000_000);
    // Merkle root that does not match the body.
    let mut b = good.clone();
    b.header.tx_root = medledger::hash::MerkleRoot::from_bytes([1; 32]);
    let b = remine(&chain, b);
    assert!(matches!(
        check(&mut chain, b, "merkle"),
        ChainError::Structure(_)
    ));
    // A forged signature.
    let mut b = good.clone();
    let mut txs = b.txs.to_vec();
    txs[0].body.payload = Payload::Data {
        record: Digest::from_bytes([0xee; 32]),
    };
    b.txs = txs.try_into().unwrap();
    assert!(matches!(
        check(&mut chain, b, "signature"),
        ChainError::Structure(_)
    ));
    // A transaction signed for another chain.
    let other = Transaction::sign(
        &alice,
        ChainId::from_bytes([1; 32]),
        1,
        Payload::Data {
            record: Digest::from_bytes([3; 32]),
        },
    );
    let mut b = good.clone();
    b.txs = vec![other].try_into().unwrap();
    b.header.tx_root = medledger::merkle::merkle_root(&[b.txs[0].id()]);
    let b = remine(&chain, b);
    assert!(matches!(
        check(&mut chain, b, "chain id"),
        ChainError::Structure(_)
    ));
    // A replayed nonce (valid signature, stale nonce).
    let mut b = good.clone();
    let replay = data_tx(&chain, &alice, 0, 7);
    b.header.tx_root = medledger::merkle::merkle_root(&[replay.id()]);
    b.txs = vec![replay].try_into().unwrap();
    let b = remine(&chain, b);
    match check(&mut chain, b, "replay") {
        ChainError::Tx { failure, .. } => assert!(matches!(
            failure.error,
            StateError::BadNonce {
                expected: 1,
                found: 0,
                ..
            }
        )),
        other => panic!("unexpected {other}"),
    }
    // A state root that is not what the transactions produce.
    let mut b = good.clone();
    b.header.state_root = StateRoot::from_bytes([4; 32]);
    let b = remine(&chain, b);
    assert!(matches!(
        check(&mut chain, b, "state root"),
        ChainError::StateRoot { .. }
    ));

    // The untouched block still goes in.
    chain.append(good).unwrap();
    assert_eq!(chain.height(), 2);
}

/// Mines `n` blocks on top of `parent` (a side branch if it is not the tip) without appending.
fn mine_branch(
    chain: &mut Chain<ProofOfWork>,
    key: &Keypair,
    first_nonce: u64,
    n: usize,
    time: u64,
    tag: u8,
) -> Vec<Block<PowSeal>> {
    let mut out = Vec::new();
    for i in 0..n {
        let b = chain
            .mine(
                vec![data_tx(chain, key, first_nonce + i as u64, tag + i as u8)],
                time + 600 * i as u64,
            )
            .unwrap();
        chain.append(b.clone()).unwrap();
        out.push(b);
    }
    out
}

#[test]
fn heavier_branch_reorganises_and_replays() {
    let (mut chain, _) = new_chain();
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    mine_branch(&mut chain, &alice, 0, 1, T0 + 600, 0);
    let fork_point = chain.tip();
    let fork_root = chain.state().root();

    // A second node follows another branch from the fork point: three blocks by bob.
    let (mut other, _) = new_chain();
    other
        .append(chain.block(&fork_point).unwrap().unwrap())
        .unwrap();
    let branch_b = mine_branch(&mut other, &bob, 0, 3, T0 + 1200, 50);

    // Our main chain grows two blocks by alice.
    let main_a = mine_branch(&mut chain, &alice, 1, 2, T0 + 1200, 100);
    assert_eq!(chain.height(), 3);

    // Bob's first two blocks are a side branch of equal or less work.
    assert!(chain.append(branch_b[0].clone()).unwrap().is_side_branch());
    assert!(chain.append(branch_b[1].clone()).unwrap().is_side_branch());
    assert_eq!(chain.tip(), main_a[1].hash());
    // The third makes it heavier: reorganise.
    let out = chain.append(branch_b[2].clone()).unwrap();
    assert_eq!(out.reverted, vec![main_a[1].hash(), main_a[0].hash()]);
    assert_eq!(out.applied.len(), 3);
    assert_eq!(chain.tip(), branch_b[2].hash());
    assert_eq!(chain.state().root(), other.state().root());
    assert_eq!(chain.state().next_nonce(&alice.account()), 1);
    assert_eq!(chain.state().next_nonce(&bob.account()), 3);
    assert_ne!(chain.state().root(), fork_root);
    // Replay from genesis rebuilds the same state.
    assert_eq!(chain.replay_state().unwrap().root(), chain.state().root());
}

#[test]
fn invalid_block_on_heavier_branch_restores_old_chain() {
    let (mut chain, _) = new_chain();
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    mine_branch(&mut chain, &alice, 0, 2, T0 + 600, 0);
    let before = snapshot(&chain);
    // Bob's branch from genesis: its second block carries a wrong state root.
    let (mut other, _) = new_chain();
    let b = mine_branch(&mut other, &bob, 0, 1, T0 + 600, 50);
    let mut bad = other
        .mine(vec![data_tx(&other, &bob, 1, 51)], T0 + 1200)
        .unwrap();
    bad.header.state_root = StateRoot::from_bytes([1; 32]);
    let bad = remine(&other, bad);
    let mut child = bad.clone();
    child.header.parent = bad.hash();
    child.header.height = 3;
    child.header.timestamp = T0 + 1800;
    child.header.tx_root = medledger::merkle::merkle_root(&[]);
    child.header.tx_count = 0;
    child.txs = Default::default();
    let child = remine(&other, child);

    assert!(chain.append(b[0].clone()).unwrap().is_side_branch());
    assert!(chain.append(bad.clone()).unwrap().is_side_branch());
    let err = chain.append(child.clone()).unwrap_err();
    assert!(matches!(err, ChainError::StateRoot { .. }), "{err}");
    assert_eq!(snapshot(&chain), before);
    assert_eq!(chain.replay_state().unwrap().root(), chain.state().root());
    assert!(matches!(
        chain.append(child),
        Err(ChainError::KnownInvalid(_))
    ));
}

#[test]
fn reorg_deeper_than_the_limit_is_refused() {
    let clock = Arc::new(ManualClock::new(T0 + 1_000_000));
    let mut chain = ChainBuilder::new("test-chain", engine())
        .boxed_store(crate::store_under_test())
        .genesis_time(T0)
        .clock(clock.clone())
        .max_reorg_depth(2)
        .build()
        .unwrap();
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    mine_branch(&mut chain, &alice, 0, 3, T0 + 600, 0);
    let before = snapshot(&chain);
    let (mut other, _) = new_chain();
    let branch = mine_branch(&mut other, &bob, 0, 4, T0 + 600, 50);
    for b in &branch[..3] {
        chain.append(b.clone()).unwrap();
    }
    match chain.append(branch[3].clone()) {
        Err(ChainError::ReorgTooDeep { depth: 3, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(snapshot(&chain), before);
}

#[test]
fn reopening_a_store_resumes_at_the_tip() {
    let (mut chain, clock) = new_chain();
    let alice = Keypair::from_seed(&[1; 32]);
    mine_branch(&mut chain, &alice, 0, 4, T0 + 600, 0);
    let before = snapshot(&chain);
    let store = chain.into_store();
    let reopened = ChainBuilder::new("test-chain", engine())
        .genesis_time(T0)
        .clock(clock)
        .boxed_store(store)
        .build()
        .unwrap();
    assert_eq!(snapshot(&reopened), before);
    // Another chain's configuration refuses the store.
    let store = reopened.into_store();
    assert!(matches!(
        ChainBuilder::new("other-chain", engine())
            .genesis_time(T0)
            .boxed_store(store)
            .build(),
        Err(ChainError::GenesisMismatch { .. })
    ));
}

#[test]
fn store_is_memory_by_default() {
    let (chain, _) = new_chain();
    let _ = MemoryStore::new();
    assert_eq!(chain.height(), 0);
    assert_eq!(
        chain.state().root(),
        medledger::smt::StateTree::new().root()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn single_byte_corruption_never_changes_the_chain(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (mut chain, _) = new_chain();
        let alice = Keypair::from_seed(&[1; 32]);
        let block = chain.mine(vec![data_tx(&chain, &alice, 0, 1), data_tx(&chain, &alice, 1, 2)], T0 + 600).unwrap();
        let mut bytes = block.encode();
        let i = pos.index(bytes.len());
        bytes[i] ^= flip;
        let before = snapshot(&chain);
        prop_assert!(chain.append_bytes(&bytes).is_err());
        prop_assert_eq!(snapshot(&chain), before);
        // The original still applies.
        prop_assert!(chain.append(block).is_ok());
    }

    #[test]
    fn replay_is_deterministic(plan in proptest::collection::vec((0u8..3, 0u8..4), 1..12)) {
        let keys: Vec<Keypair> = (0..3u8).map(|i| Keypair::from_seed(&[i + 1; 32])).collect();
        let run = || {
            let (mut chain, _) = new_chain();
            let mut nonces = [0u64; 3];
            for (i, (who, n)) in plan.iter().enumerate() {
                let who = *who as usize;
                let txs: Vec<Transaction> = (0..*n).map(|j| {
                    let tx = data_tx(&chain, &keys[who], nonces[who], j);
                    nonces[who] += 1;
                    tx
                }).collect();
                let b = chain.mine(txs, T0 + 600 * (i as u64 + 1)).unwrap();
                chain.append(b).unwrap();
            }
            chain
        };
        let (a, b) = (run(), run());
        prop_assert_eq!(a.state().root(), b.state().root());
        prop_assert_eq!(a.replay_state().unwrap().root(), a.state().root());
    }
}

/// A toy engine for fork-choice tests: the seal is the work the block claims (at least 1), so a
/// test picks each block's weight, and the engine's finality is the test's choice. Two headers
/// that differ only in their seals are the same block.
struct Weighted(Finality);

impl medledger::consensus::Consensus for Weighted {
    type Seal = u64;
    fn name(&self) -> &'static str {
        "weighted"
    }
    fn genesis_seal(&self) -> u64 {
        0
    }
    fn verify_header(
        &self,
        header: &medledger::block::Header<u64>,
        _: &dyn medledger::consensus::Ancestors<u64>,
        _now: u64,
    ) -> Result<medledger::consensus::Work, ConsensusError> {
        if header.seal == 0 {
            return Err(ConsensusError::BadSeal("no work".into()));
        }
        Ok(medledger::consensus::Work::from_u64(header.seal))
    }
    fn finality(&self) -> Finality {
        self.0
    }
    fn same_block(
        &self,
        a: &medledger::block::Header<u64>,
        b: &medledger::block::Header<u64>,
    ) -> bool {
        let unsealed = |h: &medledger::block::Header<u64>| medledger::block::Header {
            seal: 0,
            ..h.clone()
        };
        unsealed(a) == unsealed(b)
    }
}

fn weighted_chain(max_reorg_depth: u64) -> Chain<Weighted> {
    chain_with(Finality::Probabilistic, max_reorg_depth)
}

fn chain_with(finality: Finality, max_reorg_depth: u64) -> Chain<Weighted> {
    ChainBuilder::new("weighted", Weighted(finality))
        .boxed_store(crate::store_under_test())
        .genesis_time(T0)
        .clock(Arc::new(ManualClock::new(T0 + 1_000_000)))
        .max_reorg_depth(max_reorg_depth)
        .build()
        .unwrap()
}

/// Appends to `chain` one block per weight, each with one transaction of `key` (tagged `tag`).
fn weighted_branch(
    chain: &mut Chain<Weighted>,
    key: &Keypair,
    weights: &[u64],
    tag: u8,
) -> Vec<Block<u64>> {
    let mut out = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let nonce = chain.state().next_nonce(&key.account());
        let tx = Transaction::sign(
            key,
            chain.chain_id(),
            nonce,
            Payload::Data {
                record: Digest::from_bytes([tag.wrapping_add(i as u8); 32]),
            },
        );
        let t = chain
            .build_template(vec![tx], chain.tip_header().timestamp + 600)
            .unwrap();
        let b = t.seal(*w).unwrap();
        chain.append(b.clone()).unwrap();
        out.push(b);
    }
    out
}

/// The block after `parent` with no transactions, weight `w` and any state root: valid as a
/// side block (the state is checked only when the branch is applied).
fn weighted_child(parent: &Block<u64>, w: u64) -> Block<u64> {
    let mut b = parent.clone();
    b.header.parent = parent.hash();
    b.header.height += 1;
    b.header.timestamp += 600;
    b.header.tx_root = medledger::merkle::merkle_root(&[]);
    b.header.tx_count = 0;
    b.header.seal = w;
    b.txs = Default::default();
    b
}

/// Issue 13, item 7: a reorganisation that fails after applying more blocks than it rolled back
/// used to trim the undo history as it went, so the restored chain kept less undo data than the
/// limit and refused a later legitimate reorganisation; with a longer failing branch it could
/// even run out of undo data while restoring. A failed reorganisation now leaves the chain, its
/// state and its undo history exactly as before.
#[test]
fn failed_reorganisation_keeps_the_undo_history() {
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    let carol = Keypair::from_seed(&[3; 32]);
    for light in [2usize, 5] {
        let mut chain = weighted_chain(3);
        let main = weighted_branch(&mut chain, &alice, &[10; 5], 0);
        assert_eq!(chain.undo_depth(), 3);
        let before = (chain.tip(), chain.height(), chain.state().root());

        // Bob's branch forks at height 4 (one block deep): `light` valid light blocks, then a
        // light block with a wrong state root, then a heavy block that makes the branch win.
        let mut other = weighted_chain(100);
        for b in &main[..4] {
            other.append(b.clone()).unwrap();
        }
        let weights = vec![1; light];
        let mut branch = weighted_branch(&mut other, &bob, &weights, 50);
        let mut bad = weighted_child(branch.last().unwrap(), 1);
        bad.header.state_root = StateRoot::from_bytes([9; 32]);
        let heavy = weighted_child(&bad, 100);
        branch.push(bad);
        for b in &branch {
            assert!(chain.append(b.clone()).unwrap().is_side_branch());
        }
        let err = chain.append(heavy).unwrap_err();
        assert!(matches!(err, ChainError::StateRoot { .. }), "{err}");
        assert_eq!((chain.tip(), chain.height(), chain.state().root()), before);
        assert_eq!(
            chain.undo_depth(),
            3,
            "a failed reorganisation shrank the undo history"
        );
        assert_eq!(chain.replay_state().unwrap().root(), chain.state().root());

        // A legitimate reorganisation of the full depth (3 blocks) succeeds at once.
        let mut other = weighted_chain(100);
        for b in &main[..2] {
            other.append(b.clone()).unwrap();
        }
        let legit = weighted_branch(&mut other, &carol, &[10, 10, 10, 10], 80);
        for b in &legit[..3] {
            assert!(chain.append(b.clone()).unwrap().is_side_branch());
        }
        let out = chain.append(legit[3].clone()).unwrap();
        assert_eq!(out.reverted.len(), 3);
        assert_eq!(out.applied.len(), 4);
        assert_eq!(chain.tip(), legit[3].hash());
        assert_eq!(chain.undo_depth(), 3);
        assert_eq!(chain.replay_state().unwrap().root(), chain.state().root());
    }
}

/// Issue 13: under instant finality (committee, Tendermint) the chain never reverts a final
/// block, whatever weight another branch shows; a block forking below the tip is refused before
/// its seal is checked. The same block under another seal is kept on the side, and a block on
/// such a copy of the tip swaps the tip's seal, whatever the weights.
#[test]
fn instant_finality_never_reverts_a_final_block() {
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    let mut chain = chain_with(Finality::Instant, 100);
    let main = weighted_branch(&mut chain, &alice, &[1, 1, 10], 0);
    assert_eq!(chain.final_height(), 3);
    let before = (chain.tip(), chain.height(), chain.state().root());
    let conflict = |chain: &mut Chain<Weighted>, block: Block<u64>, height: u64| {
        let hash = block.hash();
        match chain.append(block) {
            Err(ChainError::ConflictsWithFinal {
                height: h,
                finalised,
                block,
            }) => {
                assert_eq!(h, height);
                assert_eq!(finalised, chain.hash_at(height).unwrap());
                assert_eq!(block, hash);
            }
            other => panic!("expected ConflictsWithFinal at {height}, got {other:?}"),
        }
        assert!(
            chain.header(&hash).is_none(),
            "a conflicting block was kept"
        );
    };

    // A much heavier branch from genesis: its first block is refused, so it never grows.
    let mut other = chain_with(Finality::Instant, 100);
    let heavy = weighted_branch(&mut other, &bob, &[1000; 4], 50);
    conflict(&mut chain, heavy[0].clone(), 1);
    for b in &heavy[1..] {
        assert!(matches!(
            chain.append(b.clone()),
            Err(ChainError::UnknownParent(_))
        ));
    }
    // Refused before costly checks: a broken seal and a wrong Merkle root are not looked at.
    let mut broken = heavy[0].clone();
    broken.header.seal = 0;
    broken.header.tx_root = medledger::merkle::merkle_root(&[]);
    conflict(&mut chain, broken, 1);
    // A heavy sibling of the tip.
    let mut other = chain_with(Finality::Instant, 100);
    for b in &main[..2] {
        other.append(b.clone()).unwrap();
    }
    let sibling = weighted_branch(&mut other, &bob, &[1000], 60);
    conflict(&mut chain, sibling[0].clone(), 3);
    assert_eq!((chain.tip(), chain.height(), chain.state().root()), before);

    // The same block under another seal, below the tip: kept on the side; a block on it
    // conflicts with the final block above.
    let mut copy2 = main[1].clone();
    copy2.header.seal = 500;
    assert!(chain.append(copy2.clone()).unwrap().is_side_branch());
    conflict(&mut chain, weighted_child(&copy2, 1000), 3);

    // A copy of the tip, then a block on it: the tip's seal is swapped, nothing reverted, even
    // though the copy's branch is lighter than the tip's.
    let mut copy3 = main[2].clone();
    copy3.header.seal = 2;
    assert!(chain.append(copy3.clone()).unwrap().is_side_branch());
    assert_eq!(chain.tip(), main[2].hash());
    let tx = Transaction::sign(
        &alice,
        chain.chain_id(),
        3,
        Payload::Data {
            record: Digest::from_bytes([99; 32]),
        },
    );
    let t = chain
        .build_template(vec![tx], main[2].header.timestamp + 600)
        .unwrap();
    let mut next = t.seal(1).unwrap();
    next.header.parent = copy3.hash();
    let out = chain.append(next.clone()).unwrap();
    assert!(out.reverted.is_empty());
    assert_eq!(out.applied.len(), 1);
    assert_eq!(chain.hash_at(3), Some(copy3.hash()));
    assert_eq!(chain.tip(), next.hash());
    assert_eq!(chain.final_height(), 4);
    assert_eq!(chain.replay_state().unwrap().root(), chain.state().root());
    // The replaced copy of height 3 is now a side block: a block on it is refused.
    conflict(&mut chain, weighted_child(&main[2], 1000), 4);
}

/// Under probabilistic finality (proof of work) the most work still wins: a heavier branch from
/// genesis replaces the main chain, within the reorganisation limit.
#[test]
fn probabilistic_finality_follows_the_most_work() {
    assert_eq!(pow_setup::engine().finality(), Finality::Probabilistic);
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    let mut chain = chain_with(Finality::Probabilistic, 100);
    let main = weighted_branch(&mut chain, &alice, &[1, 1, 10], 0);
    assert_eq!(chain.final_height(), 0);
    let mut other = chain_with(Finality::Probabilistic, 100);
    let heavy = weighted_branch(&mut other, &bob, &[5, 8], 50);
    assert!(chain.append(heavy[0].clone()).unwrap().is_side_branch());
    let out = chain.append(heavy[1].clone()).unwrap();
    assert_eq!(
        out.reverted,
        main.iter().rev().map(Block::hash).collect::<Vec<_>>()
    );
    assert_eq!(chain.tip(), heavy[1].hash());
    assert_eq!(chain.final_height(), 0);
    assert_eq!(chain.replay_state().unwrap().root(), chain.state().root());
}
