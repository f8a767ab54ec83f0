//! The state on disk (feature `redb`): a chain whose state lives in a redb database, with a
//! cache far smaller than the state, follows the same blocks as a chain whose state is in
//! memory, to the same roots, the same entries and the same access decisions; it commits the
//! height and root with every block, reorganises to the same state, and a refused block leaves
//! its database as it was. Reopened, it reads the state tree's root node instead of every
//! entry, and gives the same roots, proofs and answers; a damaged node is detected, not
//! trusted.

mod common;
#[path = "support/medrec_world.rs"]
mod medrec_world;

use std::sync::Arc;

use common::*;
use medledger::access::{AccessOp, Role};
use medledger::chain::ManualClock;
use medledger::pow::ProofOfWork;
use medledger::state::disk::DiskConfig;
use medledger::state::{entry_key, value_digest, StateBackend, ACCOUNTS_TABLE};
use medledger::store::Store;
use medledger::tx::Keypair;
use medledger::{Chain, ChainBuilder, ChainError};
use medrec_world::{block_at, world, World};

impl World {
    /// A builder on a clock a day past the world's time.
    fn builder_a_day_on(&self) -> ChainBuilder<ProofOfWork> {
        self.builder(Arc::new(ManualClock::new(self.net.now + DAY)))
    }

    /// A chain on disk in `dir`, caching `cache` values per table, at genesis.
    fn disk_chain(&self, dir: &std::path::Path, cache: usize) -> Chain<ProofOfWork> {
        self.builder_a_day_on()
            .state_backend(StateBackend::Disk(
                DiskConfig::new(dir).cache_entries(cache),
            ))
            .build()
            .unwrap()
    }
}

/// Every entry of the state, as exported snapshot chunks (sorted by state key).
fn entries(chain: &Chain<ProofOfWork>) -> Vec<Vec<u8>> {
    chain
        .snapshot(64)
        .unwrap()
        .iter()
        .map(|c| c.encode())
        .collect()
}

fn disk_tip(chain: &Chain<ProofOfWork>) -> (u64, medledger::hash::StateRoot) {
    chain
        .state()
        .disk_tip()
        .unwrap()
        .expect("the state is on disk")
}

#[test]
fn a_disk_state_with_a_small_cache_follows_blocks_like_the_memory_state() {
    let w = world(12);
    let dir = tempfile::tempdir().unwrap();
    let mut disk = w
        .builder_a_day_on()
        .max_reorg_depth(3)
        .state_backend(StateBackend::Disk(
            // Only the root and its children decoded: every other node is read from disk.
            DiskConfig::new(dir.path())
                .cache_entries(4)
                .tree_memory_depth(2),
        ))
        .build()
        .unwrap();
    assert!(disk.state().is_on_disk());
    assert!(!w.net.chain.state().is_on_disk());
    assert_eq!(disk_tip(&disk), (0, disk.state().root()));
    for h in 1..=w.net.chain.height() {
        disk.append(block_at(&w.net.chain, h)).unwrap();
        assert_eq!(
            disk.state().root(),
            w.net.chain.state_tree_at(h).unwrap().root()
        );
        assert_eq!(disk_tip(&disk), (h, disk.state().root()), "height {h}");
    }
    assert_eq!(disk.tip(), w.net.chain.tip());
    assert_eq!(entries(&disk), entries(&w.net.chain));
    // Trees as of a height are kept for the undo window (their nodes are on disk), with the
    // memory chain's proofs.
    let top = disk.height();
    let window = disk.max_reorg_depth() + 1;
    for h in 0..=top {
        let tree = disk.state_tree_at(h);
        assert_eq!(tree.is_some(), h + window > top, "height {h}");
        if let Some(tree) = tree {
            let memory = w.net.chain.state_tree_at(h).unwrap();
            assert_eq!(tree.root(), memory.root());
            for p in &w.patients {
                let key = entry_key(ACCOUNTS_TABLE, &p.account());
                assert_eq!(tree.prove(&key), memory.prove(&key));
            }
        }
    }
    for i in 0..w.patients.len() {
        let decision = w.read(&disk, i);
        assert!(decision.is_permit(), "patient {i}: {decision:?}");
        assert_eq!(decision, w.read(&w.net.chain, i));
    }
    // Replay from genesis (in memory) agrees with the state read back from disk.
    assert_eq!(disk.replay_state().unwrap().root(), disk.state().root());
}

/// A chain on disk in `dir` with the store `store`.
fn reopen(w: &World, dir: &std::path::Path, store: Box<dyn Store>) -> Chain<ProofOfWork> {
    w.builder_a_day_on()
        .boxed_store(store)
        .state_backend(StateBackend::Disk(DiskConfig::new(dir).cache_entries(16)))
        .build()
        .unwrap()
}

/// A disk chain in `dir` with `w`'s blocks up to `height`.
fn disk_chain_to(w: &World, dir: &std::path::Path, height: u64) -> Chain<ProofOfWork> {
    let mut chain = w.disk_chain(dir, 16);
    w.append_blocks(&mut chain, 1..=height);
    chain
}

/// A world of three blocks, its tip's height, and a new folder holding its chain on disk up to
/// `below` blocks under the tip, closed: the store to reopen it with.
fn closed_disk_chain(below: u64) -> (World, u64, tempfile::TempDir, Box<dyn Store>) {
    let w = world(3);
    let top = w.net.chain.height();
    let dir = tempfile::tempdir().unwrap();
    let store = disk_chain_to(&w, dir.path(), top - below).into_store();
    (w, top, dir, store)
}

/// Asserts that `chain` rebuilt its state by replaying its store, to `w`'s tip: the same root
/// in memory and on disk, and every entry.
fn assert_replayed_to_tip(w: &World, chain: &Chain<ProofOfWork>) {
    let top = w.net.chain.height();
    assert_eq!(chain.height(), top);
    assert!(chain.undo_depth() > 0, "the store's blocks were replayed");
    assert_eq!(chain.state().root(), w.net.chain.state().root());
    assert_eq!(disk_tip(chain), (top, w.net.chain.state().root()));
    assert_eq!(entries(chain), entries(&w.net.chain));
}

#[test]
fn a_reopened_chain_reads_its_state_from_disk_without_replay() {
    let w = world(5);
    let top = w.net.chain.height();
    let dir = tempfile::tempdir().unwrap();
    let first = disk_chain_to(&w, dir.path(), top - 2);
    let store = first.into_store();
    let mut again = reopen(&w, dir.path(), store);
    assert_eq!(again.height(), top - 2);
    // Nothing was replayed: no undo data, no state tree below the height it opened at.
    assert_eq!(again.undo_depth(), 0);
    assert!(again.state_tree_at(top - 3).is_none());
    let expected = w.net.chain.state_tree_at(top - 2).unwrap().root();
    assert_eq!(again.state().root(), expected);
    assert_eq!(disk_tip(&again), (top - 2, expected));
    // The same proofs as of its height, read from the nodes on disk.
    let memory_tree = w.net.chain.state_tree_at(top - 2).unwrap();
    for p in &w.patients {
        let proof = again
            .prove_at(top - 2, ACCOUNTS_TABLE, &p.account())
            .unwrap();
        assert_eq!(
            proof,
            memory_tree.prove(&entry_key(ACCOUNTS_TABLE, &p.account()))
        );
        let value = again.state().account(&p.account()).map(value_digest);
        assert!(value.is_some());
        proof
            .verify(
                &expected,
                &entry_key(ACCOUNTS_TABLE, &p.account()),
                value.as_ref(),
            )
            .unwrap();
    }
    again.state().verify_entries().unwrap();
    // It follows the next blocks to the same state as the chain that replayed them.
    w.append_blocks(&mut again, top - 1..=top);
    assert_eq!(entries(&again), entries(&w.net.chain));
    for i in 0..w.patients.len() {
        assert_eq!(w.read(&again, i), w.read(&w.net.chain, i));
    }
}

/// Changes the state directory in `dir` behind the chain's back: `change` gets the redb table
/// named `table`.
fn tamper(
    dir: &std::path::Path,
    table: &str,
    change: impl FnOnce(&mut redb::Table<&'static [u8], &'static [u8]>),
) {
    let db = redb::Database::open(dir.join("state.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn
            .open_table(redb::TableDefinition::<&[u8], &[u8]>::new(table))
            .unwrap();
        change(&mut t);
    }
    txn.commit().unwrap();
}

#[test]
fn a_damaged_root_node_makes_the_chain_rebuild_its_state_by_replaying_the_store() {
    let (w, _, dir, store) = closed_disk_chain(0);
    let root = w.net.chain.state().root().to_bytes();
    tamper(dir.path(), "nodes", |nodes| {
        use redb::ReadableTable;
        let mut node = nodes
            .get(root.as_slice())
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        node[40] ^= 1;
        nodes.insert(root.as_slice(), node.as_slice()).unwrap();
    });
    let again = reopen(&w, dir.path(), store);
    assert_replayed_to_tip(&w, &again);
}

#[test]
fn damaged_nodes_below_the_root_are_detected_when_reached_and_not_trusted() {
    let (w, top, dir, store) = closed_disk_chain(1);
    // Every node but the root changed: reopening reads only the root, so it starts.
    let root = w
        .net
        .chain
        .state_tree_at(top - 1)
        .unwrap()
        .root()
        .to_bytes();
    tamper(dir.path(), "nodes", |nodes| {
        use redb::ReadableTable;
        let all: Vec<(Vec<u8>, Vec<u8>)> = nodes
            .iter()
            .unwrap()
            .map(|item| {
                let (k, v) = item.unwrap();
                (k.value().to_vec(), v.value().to_vec())
            })
            .collect();
        for (k, mut v) in all {
            if k != root {
                let last = v.len() - 1;
                v[last] ^= 1;
                nodes.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
    });
    let mut again = reopen(&w, dir.path(), store);
    assert_eq!(again.undo_depth(), 0, "started from the state on disk");
    assert_eq!(again.state().root().to_bytes(), root);
    // A proof through a damaged node does not verify.
    let account = w.patients[0].account();
    let proof = again.prove_at(top - 1, ACCOUNTS_TABLE, &account).unwrap();
    let value = again.state().account(&account).map(value_digest);
    let state_root = again.state().root();
    assert!(proof
        .verify(
            &state_root,
            &entry_key(ACCOUNTS_TABLE, &account),
            value.as_ref()
        )
        .is_err());
    // The next block reaches damaged nodes: refused, and nothing of it is written.
    let err = again.append(block_at(&w.net.chain, top)).unwrap_err();
    assert!(
        err.to_string().contains("cannot read state table nodes"),
        "{err}"
    );
    assert_eq!(disk_tip(&again), (top - 1, state_root));
}

#[test]
fn a_state_dir_of_an_earlier_format_is_rebuilt_once_by_replaying_the_store() {
    let (w, _, dir, store) = closed_disk_chain(0);
    // The directory as the previous format (the state tree node by node) labelled it.
    {
        let db = redb::Database::open(dir.path().join("state.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
            .unwrap()
            .insert("format", [2u8].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let again = reopen(&w, dir.path(), store);
    assert_replayed_to_tip(&w, &again);
    // Rebuilt in this format: the next opening reads it without replay.
    let store = again.into_store();
    let third = reopen(&w, dir.path(), store);
    assert_eq!(third.undo_depth(), 0, "started from the state on disk");
    assert_eq!(third.state().root(), w.net.chain.state().root());
    assert_eq!(entries(&third), entries(&w.net.chain));
}

#[test]
fn a_damaged_entry_is_found_by_checking_the_entries_against_the_state_root() {
    let (w, _, dir, store) = closed_disk_chain(0);
    // Reopening reads the tree's root node, not the entries: a damaged entry is found by the
    // check that rebuilds the tree from every entry.
    tamper(dir.path(), "state:accounts", |t| {
        use redb::ReadableTable;
        let (k, mut v) = {
            let (k, v) = t.first().unwrap().unwrap();
            (k.value().to_vec(), v.value().to_vec())
        };
        v[0] ^= 1;
        t.insert(k.as_slice(), v.as_slice()).unwrap();
    });
    let again = reopen(&w, dir.path(), store);
    assert_eq!(again.state().root(), w.net.chain.state().root());
    let err = again.state().verify_entries().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("state database corrupt: the entries hash to "),
        "{err}"
    );
}

#[test]
fn building_on_a_state_dir_with_an_empty_store_starts_it_afresh() {
    let w = world(3);
    let dir = tempfile::tempdir().unwrap();
    drop(disk_chain_to(&w, dir.path(), w.net.chain.height()));
    let again = w.disk_chain(dir.path(), 16);
    assert_eq!(again.height(), 0);
    let genesis = w.net.chain.state_tree_at(0).unwrap().root();
    assert_eq!(again.state().root(), genesis);
    assert_eq!(disk_tip(&again), (0, genesis));
}

/// The operations of one block.
type Ops<'a> = Vec<(&'a Keypair, AccessOp)>;

/// A memory-backed chain with `w`'s blocks, then one block of each of `blocks`.
fn branch(w: &World, blocks: Vec<Ops<'_>>) -> Net {
    let mut net = Net::new(&[("Regional Health Authority", &w.authority)]);
    net.clock.set(w.net.now);
    w.append_blocks(&mut net.chain, 1..=w.net.chain.height());
    net.now = w.net.now;
    for ops in blocks {
        net.run(ops);
    }
    net
}

#[test]
fn a_reorganisation_on_disk_reaches_the_state_of_the_other_branch() {
    let w = world(4);
    let fork = w.net.chain.height();
    let dir = tempfile::tempdir().unwrap();
    let mut disk = w.disk_chain(dir.path(), 2);
    w.append_blocks(&mut disk, 1..=fork);
    // Branch A (one block) adds a record for patient 0; branch B (two blocks, heavier) one
    // each for patients 1 and 2.
    let a = branch(
        &w,
        vec![vec![(
            &w.hospital,
            AccessOp::AddPointer {
                relationship: relationship(&w.patients[0], &w.hospital),
                record: record(100, medledger::access::Category::Imaging),
                replaces: None,
            },
        )]],
    );
    let b = branch(
        &w,
        (1..3)
            .map(|i| {
                vec![(
                    &w.hospital,
                    AccessOp::AddPointer {
                        relationship: relationship(&w.patients[i], &w.hospital),
                        record: record(200 + i as u8, medledger::access::Category::Imaging),
                        replaces: None,
                    },
                )]
            })
            .collect(),
    );
    disk.append(block_at(&a.chain, fork + 1)).unwrap();
    assert_eq!(entries(&disk), entries(&a.chain));
    assert!(disk
        .append(block_at(&b.chain, fork + 1))
        .unwrap()
        .is_side_branch());
    let out = disk.append(block_at(&b.chain, fork + 2)).unwrap();
    assert_eq!(out.reverted, vec![a.chain.tip()]);
    assert_eq!(disk.tip(), b.chain.tip());
    assert_eq!(disk.state().root(), b.chain.state().root());
    assert_eq!(disk_tip(&disk), (fork + 2, b.chain.state().root()));
    assert_eq!(entries(&disk), entries(&b.chain));
    // The record branch A added is gone, branch B's are there.
    let rel0 = relationship(&w.patients[0], &w.hospital);
    assert_eq!(disk.access().pointers_of(&rel0).len(), 1);
    let rel1 = relationship(&w.patients[1], &w.hospital);
    assert_eq!(disk.access().pointers_of(&rel1).len(), 2);
}

#[test]
fn a_refused_block_leaves_the_disk_state_unchanged() {
    let mut w = world(2);
    let dir = tempfile::tempdir().unwrap();
    let mut disk = w.disk_chain(dir.path(), 8);
    w.append_blocks(&mut disk, 1..=w.net.chain.height());
    let before = (disk_tip(&disk), entries(&disk));
    // The first patient accepts again: refused by the state, so the forced block is refused.
    let p = Keypair::from_seed(&[10; 32]);
    let rel = relationship(&p, &w.hospital);
    let tx = w
        .net
        .sign(&p, AccessOp::AcceptRelationship { relationship: rel });
    w.net.now += 60;
    let block = w.net.forced_block(60, vec![tx]);
    let err = disk.append(block).unwrap_err();
    assert!(matches!(err, ChainError::Tx { .. }), "{err}");
    assert_eq!((disk_tip(&disk), entries(&disk)), before);
}

// ---------------------------------------------------------------------------------------------
// Killing a process that commits blocks to its state directory.

const CHILD_ENV: &str = "MEDLEDGER_DISK_CHILD";

/// The chain the killed writer and the checker both build: every block registers
/// [`PATIENTS_PER_BLOCK`] new patients, so each commit writes several tables.
fn crash_builder() -> ChainBuilder<ProofOfWork> {
    ChainBuilder::new("disk-crash", engine())
        .genesis_time(T0)
        .clock(Arc::new(ManualClock::new(T0 + 100_000_000)))
}

const PATIENTS_PER_BLOCK: u64 = 4;

/// Mines the block after `chain`'s tip: the same block for the same height, in every process.
fn mine_next(chain: &mut Chain<ProofOfWork>) -> medledger::Block<medledger::pow::PowSeal> {
    let height = chain.height() + 1;
    let txs = (0..PATIENTS_PER_BLOCK)
        .map(|j| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&height.to_le_bytes());
            seed[8..16].copy_from_slice(&j.to_le_bytes());
            let key = Keypair::from_seed(&seed);
            let op = register_op(&key, Role::Patient, &format!("P-{height}-{j}"));
            medledger::Transaction::sign(&key, chain.chain_id(), 0, medledger::Payload::Access(op))
        })
        .collect();
    chain.mine(txs, T0 + 60 * height).unwrap()
}

/// Child mode (does nothing in a normal run): in the directory the environment names, a chain
/// with a file store and its state on disk appends blocks until killed.
#[test]
fn disk_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let store = medledger::file_store::FileStore::open(dir.join("chain.mlg")).unwrap();
    let mut chain = crash_builder()
        .store(store)
        .state_backend(StateBackend::Disk(
            DiskConfig::new(dir.join("state")).cache_entries(8),
        ))
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(30) {
        let block = mine_next(&mut chain);
        chain.append(block).unwrap();
    }
}

/// A xorshift generator: kill times from a seed printed on failure.
struct Rng(u64);

impl Rng {
    fn upto(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

#[test]
fn a_killed_writer_leaves_the_state_of_one_committed_block_exactly() {
    let rounds: u32 = std::env::var("MEDLEDGER_DISK_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    // The roots of the same blocks, built in memory: `roots[h]` after block `h`.
    let mut reference = crash_builder().build().unwrap();
    let mut roots = vec![reference.state().root()];
    let (mut opened, mut top) = (0, 0);
    for round in 0..rounds {
        let mut child = std::process::Command::new(&exe)
            .args(["disk_child_writer", "--exact", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed at a random moment: during start-up, reopening, replay or commits.
        std::thread::sleep(std::time::Duration::from_millis(50 + rng.upto(500)));
        child.kill().unwrap();
        child.wait().unwrap();
        let config = DiskConfig::new(dir.path().join("state"));
        let found = medledger::state::State::<medledger::AccessState>::open_disk(&config, 1)
            .unwrap_or_else(|e| panic!("round {round}, seed {seed}: {e}"));
        let Some((state, height)) = found else {
            // Killed before the first state was written.
            continue;
        };
        while reference.height() < height {
            let block = mine_next(&mut reference);
            reference.append(block).unwrap();
            roots.push(reference.state().root());
        }
        assert_eq!(
            state.root(),
            roots[height as usize],
            "round {round}, seed {seed}: the state at height {height} is not block {height}'s"
        );
        // Every record of the tree is there to read: none was collected while still in use.
        assert_eq!(
            state.tree().iter().count(),
            state.tree().len(),
            "round {round}, seed {seed}: records of the tree at height {height} are missing"
        );
        opened += 1;
        top = top.max(height);
    }
    println!("{rounds} kills (seed {seed}): {opened} states reopened, each a block's exactly; top height {top}");
    assert!(opened > 0, "seed {seed}: no kill left a state to check");
    assert!(top > 1, "seed {seed}: the writer committed no block");
}
