//! State snapshots for new nodes: a MedRec chain's state exported in chunks, verified and
//! imported against the header's state root, and a chain opened from it that then follows the
//! same blocks as the chain that replayed them, to the same state roots. Tampered, missing,
//! reordered, repeated and foreign chunks are refused with the reason, and change nothing.

mod common;
#[path = "support/medrec_world.rs"]
mod medrec_world;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use medledger::access::{AccessOp, Action, Basis, Decision, Role};
use medledger::chain::ManualClock;
use medledger::file_store::FileStore;
use medledger::hash::BlockHash;
use medledger::pow::{PowSeal, ProofOfWork};
use medledger::purpose::PurposeOfUse::Treatment;
use medledger::state::snapshot::{SnapshotChunk, SnapshotError, SnapshotImport};
use medledger::state::State;
use medledger::store::{MemoryStore, Store, StoreError, StoredCheckpoint};
use medledger::tx::Keypair;
use medledger::{AccessState, Chain, ChainError};
use medrec_world::{block_at, world, World};

/// Patients in the workflow: enough entries for several chunks of [`CHUNK`] entries.
const PATIENTS: u8 = 6;
/// Entries per chunk in these tests (small, so that the state spans many chunks).
const CHUNK: usize = 8;

impl World {
    fn headers(&self) -> Vec<medledger::block::Header<PowSeal>> {
        (1..=self.net.chain.height())
            .map(|h| self.net.chain.header_at(h).unwrap().clone())
            .collect()
    }

    fn import(&self, chunks: &[SnapshotChunk]) -> State<AccessState> {
        let tip = self.net.chain.tip_header();
        let mut import = SnapshotImport::<AccessState>::new(tip.height, tip.state_root);
        for chunk in chunks {
            import.add_bytes(&chunk.encode()).unwrap();
        }
        import.finish().unwrap()
    }

    /// A chain opened from a snapshot of the tip.
    fn open_from_snapshot(&self) -> Chain<ProofOfWork> {
        let chunks = self.net.chain.snapshot(CHUNK).unwrap();
        assert!(chunks.len() > 4, "the state spans several chunks");
        let state = self.import(&chunks);
        self.builder(Arc::new(ManualClock::new(self.net.now)))
            .build_from_snapshot(&self.headers(), state)
            .unwrap()
    }
}

#[test]
fn a_chain_opened_from_a_snapshot_follows_blocks_like_the_replayed_one() {
    let mut w = world(PATIENTS);
    let mut fresh = w.open_from_snapshot();
    assert_eq!(fresh.height(), w.net.chain.height());
    assert_eq!(fresh.tip(), w.net.chain.tip());
    assert_eq!(fresh.state().root(), w.net.chain.state().root());
    for i in 0..w.patients.len() {
        assert_eq!(w.read(&fresh, i), w.read(&w.net.chain, i));
    }

    // The original chain goes on: more patients, a revocation, read receipts.
    let from = w.net.chain.height();
    let late = Keypair::from_seed(&[99; 32]);
    w.net
        .run(vec![(&late, register_op(&late, Role::Patient, "NHS-late"))]);
    w.patients.push(late);
    w.net.run(vec![(
        &w.hospital,
        AccessOp::CreateRelationship {
            patient: w.patients[PATIENTS as usize].account(),
        },
    )]);
    let grant = w.accept_and_grant(PATIENTS as usize);
    w.net.run(vec![(
        &w.patients[PATIENTS as usize],
        AccessOp::RevokeGrant {
            grant,
            reason: "moved away".try_into().unwrap(),
        },
    )]);
    let pointer = w
        .net
        .chain
        .access()
        .pointers_of(&relationship(&w.patients[0], &w.hospital))[0]
        .id;
    let grant0 = match w.read(&w.net.chain, 0) {
        Decision::Permit(basis) => basis,
        other => panic!("the specialist may read: {other:?}"),
    };
    w.net.run(vec![(
        &w.specialist,
        AccessOp::RecordAccess {
            patient: w.patients[0].account(),
            pointer,
            action: Action::Read,
            purpose: Treatment,
            basis: grant0,
        },
    )]);

    // The chain opened from the snapshot accepts the same blocks, to the same state roots.
    for h in from + 1..=w.net.chain.height() {
        let appended = fresh.append(block_at(&w.net.chain, h)).unwrap();
        assert_eq!(appended.applied.len(), 1);
        assert_eq!(
            fresh.state().root(),
            w.net.chain.state_tree_at(h).unwrap().root(),
            "state root at height {h}"
        );
    }
    assert_eq!(fresh.tip(), w.net.chain.tip());
    for i in 0..PATIENTS as usize {
        assert_eq!(w.read(&fresh, i), w.read(&w.net.chain, i));
    }
    assert!(matches!(
        w.read(&fresh, 0),
        Decision::Permit(Basis::Grant(_))
    ));
    // No state tree below the snapshot: it was never held.
    assert!(fresh.state_tree_at(from - 1).is_none());
    assert!(fresh.state_tree_at(from).is_some());
}

/// Adds every chunk, expecting the refusal `check` at position `bad` and acceptance elsewhere;
/// the import then finishes with the tip's root once the right chunk is given instead.
fn refused_then_recovered(
    w: &World,
    chunks: &[SnapshotChunk],
    bad: usize,
    wrong: &[u8],
    check: impl Fn(&SnapshotError) -> bool,
) {
    let tip = w.net.chain.tip_header();
    let mut import = SnapshotImport::<AccessState>::new(tip.height, tip.state_root);
    for (i, chunk) in chunks.iter().enumerate() {
        if i == bad {
            let err = import.add_bytes(wrong).unwrap_err();
            assert!(check(&err), "unexpected refusal: {err}");
            assert_eq!(import.chunks(), i as u32, "a refused chunk changes nothing");
        }
        import.add(chunk).unwrap();
    }
    assert_eq!(import.finish().unwrap().root(), tip.state_root);
}

/// `bytes` with the last byte of the first occurrence of `needle` flipped.
fn flip_in(bytes: &[u8], needle: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the needle is in the encoding");
    let mut out = bytes.to_vec();
    out[at + needle.len() - 1] ^= 1;
    out
}

#[test]
fn tampered_chunks_are_refused_and_change_nothing() {
    let w = world(PATIENTS);
    let chunks = w.net.chain.snapshot(CHUNK).unwrap();
    let (bad, chunk) = chunks
        .iter()
        .enumerate()
        .find(|(_, c)| c.entries().len() > 1 && c.depth() > 0)
        .unwrap();
    let bytes = chunk.encode();
    let proof_mismatch = |e: &SnapshotError| matches!(e, SnapshotError::ProofMismatch { chunk, .. } if *chunk == bad as u32);

    // A value changed.
    let value = chunk.entries()[1].value();
    refused_then_recovered(&w, &chunks, bad, &flip_in(&bytes, value), proof_mismatch);
    // A sibling changed.
    let sibling = chunk.siblings()[0];
    refused_then_recovered(
        &w,
        &chunks,
        bad,
        &flip_in(&bytes, sibling.as_bytes()),
        proof_mismatch,
    );
    // An entry left out (the entry count and the last entry dropped, re-encoded).
    let body_len = |e: &medledger::state::snapshot::SnapshotEntry| {
        let mut out = Vec::new();
        medledger::codec::encode_into(e, &mut out);
        out.len() - 1
    };
    let fewer = {
        let entries = chunk.entries();
        assert!(entries.len() < 128, "the entry count is one byte");
        let all: usize = entries.iter().map(body_len).sum();
        let last = body_len(&entries[entries.len() - 1]);
        let mut out = bytes[..bytes.len() - last].to_vec();
        let count_at = bytes.len() - all - 1;
        assert_eq!(usize::from(out[count_at]), entries.len());
        out[count_at] -= 1;
        out
    };
    refused_then_recovered(&w, &chunks, bad, &fewer, proof_mismatch);
    // Bytes that are not a chunk.
    refused_then_recovered(&w, &chunks, bad, &bytes[..bytes.len() - 1], |e| {
        matches!(e, SnapshotError::Decode(_))
    });
}

#[test]
fn missing_reordered_repeated_and_foreign_chunks_are_refused() {
    let w = world(PATIENTS);
    let chunks = w.net.chain.snapshot(CHUNK).unwrap();
    let out_of_order = |at: usize| move |e: &SnapshotError| matches!(e, SnapshotError::OutOfOrder { chunk, .. } if *chunk == at as u32);
    // Chunk 3 given in place of chunk 2 (2 missing, or the two swapped).
    refused_then_recovered(&w, &chunks, 2, &chunks[3].encode(), out_of_order(2));
    // Chunk 1 given again.
    refused_then_recovered(&w, &chunks, 2, &chunks[1].encode(), out_of_order(2));

    // A chunk of another chain's state.
    let other = {
        let mut n = Net::new(&[("Another Authority", &w.hospital)]);
        n.run(vec![(
            &w.specialist,
            register_op(&w.specialist, Role::Researcher, "Elsewhere"),
        )]);
        n.chain.snapshot(CHUNK).unwrap()
    };
    refused_then_recovered(&w, &chunks, 1, &other[0].encode(), |e| {
        matches!(e, SnapshotError::WrongRoot { chunk: 1, .. })
    });
    // The same chunk relabelled with this root: its entries do not prove against it.
    let root = w.net.chain.tip_header().state_root;
    let mut relabelled = other[0].encode();
    relabelled[1..33].copy_from_slice(root.as_bytes());
    let height = w.net.chain.height();
    assert!(
        height < 128 && relabelled[33] < 128,
        "heights are one-byte varints"
    );
    relabelled[33] = height as u8;
    refused_then_recovered(&w, &chunks, 0, &relabelled, |e| {
        matches!(e, SnapshotError::ProofMismatch { chunk: 0, .. })
    });

    // A chunk for another height of this chain.
    let tip = w.net.chain.tip_header();
    let mut import = SnapshotImport::<AccessState>::new(tip.height - 1, tip.state_root);
    assert!(matches!(
        import.add(&chunks[0]),
        Err(SnapshotError::WrongHeight { chunk: 0, .. })
    ));

    // An import missing its last chunk does not finish; one past the end is refused.
    let mut import = SnapshotImport::<AccessState>::new(tip.height, tip.state_root);
    for chunk in &chunks[..chunks.len() - 1] {
        import.add(chunk).unwrap();
    }
    assert!(!import.is_complete());
    let mut complete = SnapshotImport::<AccessState>::new(tip.height, tip.state_root);
    for chunk in &chunks {
        complete.add(chunk).unwrap();
    }
    assert!(matches!(
        complete.add(&chunks[0]),
        Err(SnapshotError::AlreadyComplete { .. })
    ));
    assert!(matches!(
        import.finish(),
        Err(SnapshotError::Incomplete { .. })
    ));
}

#[test]
fn a_chain_opens_from_a_snapshot_only_at_its_headers_state_root() {
    let mut w = world(PATIENTS);
    let old_chunks = w.net.chain.snapshot(CHUNK).unwrap();
    let old = w.import(&old_chunks);
    let late = Keypair::from_seed(&[99; 32]);
    w.net
        .run(vec![(&late, register_op(&late, Role::Patient, "NHS-late"))]);
    // Headers up to the new tip, with the state of the height before.
    let clock = Arc::new(ManualClock::new(w.net.now));
    match w
        .builder(clock.clone())
        .build_from_snapshot(&w.headers(), old)
    {
        Err(ChainError::SnapshotRoot { height, .. }) => assert_eq!(height, w.net.chain.height()),
        other => panic!("a state of another height was accepted: {other:?}"),
    }
    // Headers that skip one are refused.
    let mut headers = w.headers();
    headers.remove(1);
    let state = w.import(&w.net.chain.snapshot(CHUNK).unwrap());
    assert!(matches!(
        w.builder(clock).build_from_snapshot(&headers, state),
        Err(ChainError::UnknownParent(_))
    ));
}

#[test]
fn a_chain_opened_from_a_snapshot_cannot_reorganise_below_it() {
    let w = world(PATIENTS);
    let mut fresh = w.open_from_snapshot();
    assert_eq!(fresh.undo_depth(), 0);
    // A heavier branch forking below the snapshot height: two blocks on the parent of the tip.
    let parent = w.net.chain.height() - 1;
    let mut side = Net::new(&[("Regional Health Authority", &w.authority)]);
    side.clock.set(w.net.now + 10 * DAY);
    w.append_blocks(&mut side.chain, 1..=parent);
    side.now = w.net.chain.time_at(parent).unwrap();
    side.run(vec![]);
    side.run(vec![]);
    let mut refused = false;
    for h in parent + 1..=side.chain.height() {
        match fresh.append(block_at(&side.chain, h)) {
            Ok(_) => {}
            Err(ChainError::ReorgTooDeep { depth: 1, max: 0 }) => refused = true,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert!(refused, "the heavier branch below the snapshot was refused");
    assert_eq!(fresh.tip(), w.net.chain.tip());
}

/// The world's blocks on a chain that keeps a checkpoint every `every` blocks, and that chain.
fn with_checkpoints(w: &World, every: u64) -> Chain<ProofOfWork> {
    let mut chain = w
        .builder(Arc::new(ManualClock::new(w.net.now)))
        .checkpoint_every(every)
        .build()
        .unwrap();
    w.append_blocks(&mut chain, 1..=w.net.chain.height());
    chain
}

fn reopen(w: &World, store: Box<dyn Store>) -> Chain<ProofOfWork> {
    w.builder(Arc::new(ManualClock::new(w.net.now)))
        .boxed_store(store)
        .build()
        .unwrap()
}

#[test]
fn a_reopened_store_resumes_from_its_checkpoint_and_replays_only_what_follows() {
    let w = world(PATIENTS);
    let height = w.net.chain.height();
    assert!(height >= 6);
    let chain = with_checkpoints(&w, 4);
    let checkpoint = chain.into_store().checkpoint().unwrap().unwrap();
    assert_eq!(checkpoint.height, 4 * (height / 4));
    let cp = checkpoint.height;

    let store = with_checkpoints(&w, 4).into_store();
    let reopened = reopen(&w, store);
    assert_eq!(reopened.tip(), w.net.chain.tip());
    assert_eq!(reopened.state().root(), w.net.chain.state().root());
    // Only the blocks after the checkpoint were executed: their undo data, and state trees
    // from the checkpoint up.
    assert_eq!(reopened.undo_depth(), height - cp);
    assert!(reopened.state_tree_at(cp - 1).is_none());
    assert_eq!(
        reopened.state_tree_at(cp).unwrap().root(),
        w.net.chain.header_at(cp).unwrap().state_root
    );
    // Replaying from genesis still checks it.
    assert_eq!(
        reopened.replay_state().unwrap().root(),
        reopened.state().root()
    );
    for i in 0..PATIENTS as usize {
        assert_eq!(w.read(&reopened, i), w.read(&w.net.chain, i));
    }
}

#[test]
fn a_damaged_or_stale_checkpoint_is_ignored_and_the_chain_replays() {
    let w = world(PATIENTS);
    let height = w.net.chain.height();
    // A chunk changed: the checkpoint fails against the header, the chain replays everything.
    let mut store = with_checkpoints(&w, 4).into_store();
    let mut checkpoint = store.checkpoint().unwrap().unwrap();
    let last = checkpoint.chunks[0].len() - 1;
    checkpoint.chunks[0][last] ^= 1;
    store.put_checkpoint(&checkpoint).unwrap();
    let reopened = reopen(&w, store);
    assert_eq!(reopened.tip(), w.net.chain.tip());
    assert_eq!(reopened.state().root(), w.net.chain.state().root());
    assert!(reopened.state_tree_at(1).is_some(), "replayed from genesis");
    assert_eq!(
        reopened.undo_depth(),
        height.min(reopened.max_reorg_depth())
    );
    // A checkpoint of a block no longer on the main chain: ignored as well.
    let mut store = with_checkpoints(&w, 4).into_store();
    let mut checkpoint = store.checkpoint().unwrap().unwrap();
    checkpoint.block = w.net.chain.hash_at(checkpoint.height - 1).unwrap();
    store.put_checkpoint(&checkpoint).unwrap();
    let reopened = reopen(&w, store);
    assert_eq!(reopened.state().root(), w.net.chain.state().root());
    assert!(reopened.state_tree_at(1).is_some(), "replayed from genesis");
}

/// Runs a few more blocks on the world's chain (a late patient's registration, relationship,
/// acceptance and grant) and returns the height before them.
fn more_blocks(w: &mut World, seed: u8, id: &str) -> u64 {
    let from = w.net.chain.height();
    let late = Keypair::from_seed(&[seed; 32]);
    w.net
        .run(vec![(&late, register_op(&late, Role::Patient, id))]);
    w.net.run(vec![(
        &w.hospital,
        AccessOp::CreateRelationship {
            patient: late.account(),
        },
    )]);
    w.patients.push(late);
    w.accept_and_grant(w.patients.len() - 1);
    from
}

/// A clock at the world's time.
fn clock(w: &World) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(w.net.now))
}

/// A memory store the test keeps a handle on, that keeps checkpoints and headers (`extras`)
/// or not (the trait's defaults).
#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<MemoryStore>>,
    extras: bool,
    /// Set: the next main-chain write panics, as a process dying in it would stop.
    crash_on_main: Arc<AtomicBool>,
}

impl Shared {
    fn new(extras: bool) -> Self {
        Self {
            inner: Arc::default(),
            extras,
            crash_on_main: Arc::default(),
        }
    }

    /// The stored blocks and the main chain up to `height`.
    fn contents(&self, height: u64) -> (Vec<BlockHash>, Vec<Option<BlockHash>>) {
        let s = self.inner.lock().unwrap();
        let main = (0..=height + 1).map(|h| s.main_hash(h).unwrap()).collect();
        (s.block_hashes().unwrap(), main)
    }
}

impl Store for Shared {
    fn put_block(&mut self, hash: &BlockHash, encoded: &[u8]) -> Result<(), StoreError> {
        self.inner.lock().unwrap().put_block(hash, encoded)
    }
    fn get_block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.lock().unwrap().get_block(hash)
    }
    fn block_hashes(&self) -> Result<Vec<BlockHash>, StoreError> {
        self.inner.lock().unwrap().block_hashes()
    }
    fn set_main_chain(&mut self, from_height: u64, hashes: &[BlockHash]) -> Result<(), StoreError> {
        if self.crash_on_main.swap(false, Ordering::SeqCst) {
            panic!("the process dies while writing the main chain");
        }
        self.inner
            .lock()
            .unwrap()
            .set_main_chain(from_height, hashes)
    }
    fn main_hash(&self, height: u64) -> Result<Option<BlockHash>, StoreError> {
        self.inner.lock().unwrap().main_hash(height)
    }
    fn tip_height(&self) -> Result<Option<u64>, StoreError> {
        self.inner.lock().unwrap().tip_height()
    }
    fn put_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        match self.extras {
            true => self.inner.lock().unwrap().put_checkpoint(checkpoint),
            false => Ok(()),
        }
    }
    fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        match self.extras {
            true => self.inner.lock().unwrap().checkpoint(),
            false => Ok(None),
        }
    }
    fn put_headers(&mut self, headers: &[Vec<u8>]) -> Result<(), StoreError> {
        match self.extras {
            true => self.inner.lock().unwrap().put_headers(headers),
            false => Ok(()),
        }
    }
    fn headers(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        match self.extras {
            true => self.inner.lock().unwrap().headers(),
            false => Ok(Vec::new()),
        }
    }
}

#[test]
fn a_chain_opened_from_a_snapshot_reopens_from_its_file_and_follows_blocks() {
    let mut w = world(PATIENTS);
    let at = w.net.chain.height();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.log");
    let state = w.import(&w.net.chain.snapshot(CHUNK).unwrap());
    let mut fresh = w
        .builder(clock(&w))
        .store(FileStore::open(&path).unwrap())
        .build_from_snapshot(&w.headers(), state)
        .unwrap();
    let from = more_blocks(&mut w, 97, "NHS-late-file");
    assert_eq!(from, at);
    w.append_blocks(&mut fresh, from + 1..=w.net.chain.height());
    drop(fresh);

    // Reopened from the file: the headers up to the snapshot, its state (the checkpoint
    // written with it), then the blocks after it, executed again.
    let tip = w.net.chain.height();
    let mut reopened = w
        .builder(clock(&w))
        .store(FileStore::open(&path).unwrap())
        .build()
        .unwrap();
    assert_eq!(reopened.tip(), w.net.chain.tip());
    assert_eq!(reopened.state().root(), w.net.chain.state().root());
    assert_eq!(reopened.undo_depth(), tip - at);
    assert!(reopened.state_tree_at(at - 1).is_none());
    assert_eq!(reopened.header_at(1), w.net.chain.header_at(1));
    for i in 0..PATIENTS as usize {
        assert_eq!(w.read(&reopened, i), w.read(&w.net.chain, i));
    }
    // It follows the next blocks, and reopens again.
    let from = more_blocks(&mut w, 96, "NHS-later-file");
    w.append_blocks(&mut reopened, from + 1..=w.net.chain.height());
    assert_eq!(reopened.state().root(), w.net.chain.state().root());
    drop(reopened);
    let again = w
        .builder(clock(&w))
        .store(FileStore::open(&path).unwrap())
        .build()
        .unwrap();
    assert_eq!(again.tip(), w.net.chain.tip());
    assert_eq!(again.state().root(), w.net.chain.state().root());
    // The blocks below the snapshot were never stored: replay from genesis cannot check it.
    assert!(again.replay_state().is_err());
}

#[test]
fn a_snapshot_chain_is_refused_without_its_state_or_with_damaged_headers_and_left_alone() {
    let mut w = world(PATIENTS);
    let at = w.net.chain.height();
    let chunks = w.net.chain.snapshot(CHUNK).unwrap();
    let (first, second) = (w.import(&chunks), w.import(&chunks));
    let headers_at = w.headers();
    let open =
        |w: &World, store: &Shared| w.builder(clock(w)).store(store.clone()).build().map(|_| ());

    // Headers kept, and a checkpoint: it reopens.
    let kept = Shared::new(true);
    let mut fresh = w
        .builder(clock(&w))
        .store(kept.clone())
        .build_from_snapshot(&headers_at, first)
        .unwrap();
    let from = more_blocks(&mut w, 95, "NHS-late-shared");
    w.append_blocks(&mut fresh, from + 1..=w.net.chain.height());
    drop(fresh);
    let tip = w.net.chain.height();
    open(&w, &kept).unwrap();

    // One kept header damaged: the headers no longer hash to the main chain's hashes, so the
    // checkpoint cannot be checked against them. Refused, and the store keeps its blocks and
    // main chain (nothing was replayed onto genesis over them).
    let before = kept.contents(tip);
    let mut headers = kept.headers().unwrap();
    assert_eq!(headers.len() as u64, at);
    let last = headers[1].len() - 1;
    headers[1][last] ^= 1;
    kept.clone().put_headers(&headers).unwrap();
    let err = open(&w, &kept).unwrap_err();
    assert!(
        matches!(&err, ChainError::SnapshotStateMissing { height, reason }
            if *height == at && reason.contains("does not hash to the main chain's")),
        "{err}"
    );
    assert_eq!(kept.contents(tip), before);

    // A store that keeps neither headers nor a checkpoint (the trait's defaults): refused as
    // well, and left as it was.
    let plain = Shared::new(false);
    let mut fresh = w
        .builder(clock(&w))
        .store(plain.clone())
        .build_from_snapshot(&headers_at, second)
        .unwrap();
    w.append_blocks(&mut fresh, at + 1..=tip);
    drop(fresh);
    let before = plain.contents(tip);
    let err = open(&w, &plain).unwrap_err();
    assert!(
        matches!(&err, ChainError::SnapshotStateMissing { height, reason }
            if *height == at && reason.contains("keeps no checkpoint")),
        "{err}"
    );
    assert_eq!(plain.contents(tip), before);
}

/// A snapshot imported straight into a state database (feature `redb`): a chain opens on it
/// and follows the same blocks, and the directory holds a state only once the import is
/// finished.
#[cfg(feature = "redb")]
mod on_disk {
    use super::*;
    use medledger::state::disk::DiskConfig;
    use medledger::state::{entry_key, StateBackend, ACCOUNTS_TABLE};

    /// Imports `chunks` of the tip's state into `config`'s directory.
    fn import_on_disk(
        w: &World,
        chunks: &[SnapshotChunk],
        config: &DiskConfig,
    ) -> State<AccessState> {
        let tip = w.net.chain.tip_header();
        let mut import =
            SnapshotImport::<AccessState>::on_disk(tip.height, tip.state_root, config).unwrap();
        for chunk in chunks {
            import.add_bytes(&chunk.encode()).unwrap();
        }
        import.finish().unwrap()
    }

    #[test]
    fn a_chain_opened_on_a_snapshot_imported_to_disk_follows_blocks_and_its_directory_reopens() {
        let mut w = world(PATIENTS);
        let dir = tempfile::tempdir().unwrap();
        // A small tree depth in memory, so that the import holds most records by hash only.
        let config = DiskConfig::new(dir.path()).tree_memory_depth(4);
        let chunks = w.net.chain.snapshot(CHUNK).unwrap();
        assert!(chunks.len() > 4, "the state spans several chunks");
        let state = import_on_disk(&w, &chunks, &config);
        assert!(state.is_on_disk());
        assert_eq!(state.root(), w.net.chain.state().root());
        state.verify_entries().unwrap();
        let mut fresh = w
            .builder(Arc::new(ManualClock::new(w.net.now)))
            .state_backend(StateBackend::Disk(config.clone()))
            .build_from_snapshot(&w.headers(), state)
            .unwrap();
        for i in 0..w.patients.len() {
            assert_eq!(w.read(&fresh, i), w.read(&w.net.chain, i));
        }

        // The original chain goes on; the chain on the imported state takes the same blocks.
        let from = w.net.chain.height();
        let late = Keypair::from_seed(&[98; 32]);
        w.net.run(vec![(
            &late,
            register_op(&late, Role::Patient, "NHS-late-disk"),
        )]);
        w.net.run(vec![(
            &w.hospital,
            AccessOp::CreateRelationship {
                patient: late.account(),
            },
        )]);
        w.patients.push(late);
        w.accept_and_grant(PATIENTS as usize);
        for h in from + 1..=w.net.chain.height() {
            fresh.append(block_at(&w.net.chain, h)).unwrap();
            assert_eq!(
                fresh.state().root(),
                w.net.chain.state_tree_at(h).unwrap().root(),
                "state root at height {h}"
            );
        }
        let tip = w.net.chain.height();
        assert!(
            tip >= from + 3,
            "blocks enough to leave a short undo window"
        );
        // The chain's undo window, not the import's, holds: every tree since the snapshot
        // still proves what the replaying chain's does (their records are kept on disk).
        for h in from..=tip {
            let tree = fresh.state_tree_at(h).expect("a tree of the undo window");
            let memory = w.net.chain.state_tree_at(h).unwrap();
            for p in &w.patients {
                let key = entry_key(ACCOUNTS_TABLE, &p.account());
                assert_eq!(tree.prove(&key), memory.prove(&key), "height {h}");
            }
        }
        let store = fresh.into_store();

        // The directory holds the state at the tip: it opens without a block replayed.
        let (reopened, height) = State::<AccessState>::open_disk(&config, 1)
            .unwrap()
            .unwrap();
        assert_eq!(height, tip);
        assert_eq!(reopened.root(), w.net.chain.state().root());
        reopened.verify_entries().unwrap();
        drop(reopened);

        // And the chain reopens on its store and directory: the headers the store keeps below
        // the snapshot, the blocks after it, the state from the directory (nothing executed).
        let mut chain = w
            .builder(Arc::new(ManualClock::new(w.net.now)))
            .state_backend(StateBackend::Disk(config.clone()))
            .boxed_store(store)
            .build()
            .unwrap();
        assert_eq!(chain.tip(), w.net.chain.tip());
        assert_eq!(chain.state().root(), w.net.chain.state().root());
        assert_eq!(
            chain.undo_depth(),
            0,
            "resumed from the directory, not replayed"
        );
        let from = more_blocks(&mut w, 94, "NHS-later-disk");
        w.append_blocks(&mut chain, from + 1..=w.net.chain.height());
        assert_eq!(chain.state().root(), w.net.chain.state().root());
        for i in 0..PATIENTS as usize {
            assert_eq!(w.read(&chain, i), w.read(&w.net.chain, i));
        }
    }

    #[test]
    fn a_snapshot_chain_on_disk_that_dies_while_appending_reopens_and_replays_the_block() {
        let mut w = world(PATIENTS);
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path());
        let state = import_on_disk(&w, &w.net.chain.snapshot(CHUNK).unwrap(), &config);
        let store = Shared::new(true);
        let mut chain = w
            .builder(clock(&w))
            .state_backend(StateBackend::Disk(config.clone()))
            .store(store.clone())
            .build_from_snapshot(&w.headers(), state)
            .unwrap();
        let from = more_blocks(&mut w, 93, "NHS-crash-disk");
        let tip = w.net.chain.height();
        w.append_blocks(&mut chain, from + 1..=tip - 1);
        // The last block's append dies in the store's main-chain write (the chain, and its
        // database, are dropped as the panic unwinds).
        store.crash_on_main.store(true, Ordering::SeqCst);
        let block = block_at(&w.net.chain, tip);
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _ = chain.append(block);
        }));
        assert!(died.is_err());
        // The state had not committed the block: the directory is a block behind the store,
        // which holds the block, and reopening replays it. (Committed first, the state would
        // be ahead of every stored header, and the chain could not reopen.)
        let reopened = w
            .builder(clock(&w))
            .state_backend(StateBackend::Disk(config.clone()))
            .store(store.clone())
            .build()
            .unwrap();
        assert_eq!(reopened.tip(), w.net.chain.tip());
        assert_eq!(reopened.state().root(), w.net.chain.state().root());
        assert_eq!(reopened.undo_depth(), 1, "the block replayed");
    }

    #[test]
    fn a_tampered_chunk_is_refused_on_disk_and_a_stopped_import_leaves_no_state() {
        let w = world(PATIENTS);
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path()).tree_memory_depth(4);
        let chunks = w.net.chain.snapshot(CHUNK).unwrap();
        let tip = w.net.chain.tip_header();
        let bad = chunks
            .iter()
            .position(|c| c.entries().len() > 1 && c.depth() > 0)
            .unwrap();
        let tampered = flip_in(&chunks[bad].encode(), chunks[bad].entries()[1].value());

        let mut import =
            SnapshotImport::<AccessState>::on_disk(tip.height, tip.state_root, &config).unwrap();
        for chunk in &chunks[..=bad] {
            if std::ptr::eq(chunk, &chunks[bad]) {
                let err = import.add_bytes(&tampered).unwrap_err();
                assert!(
                    matches!(err, SnapshotError::ProofMismatch { chunk, .. } if chunk == bad as u32),
                    "{err}"
                );
                assert_eq!(
                    import.chunks(),
                    bad as u32,
                    "a refused chunk changes nothing"
                );
            }
            import.add(chunk).unwrap();
        }
        // Stopped half-way: the directory holds no state.
        drop(import);
        assert!(State::<AccessState>::open_disk(&config, 1)
            .unwrap()
            .is_none());

        // A new import starts over in the same directory, and its state is exactly the tip's:
        // nothing of the refused chunk, nor of the stopped import, is left in it.
        let state = import_on_disk(&w, &chunks, &config);
        assert_eq!(state.root(), tip.state_root);
        state.verify_entries().unwrap();
        drop(state);
        let (reopened, height) = State::<AccessState>::open_disk(&config, 1)
            .unwrap()
            .unwrap();
        assert_eq!((reopened.root(), height), (tip.state_root, tip.height));
    }

    #[test]
    fn a_chain_refuses_a_state_imported_on_disk_at_another_height_than_its_headers() {
        let w = world(PATIENTS);
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path());
        // The tip's state, exported as if it were the state one block lower.
        let tip = w.net.chain.tip_header();
        let chunks = w
            .net
            .chain
            .state()
            .export_snapshot(tip.height - 1, CHUNK)
            .unwrap();
        let mut import =
            SnapshotImport::<AccessState>::on_disk(tip.height - 1, tip.state_root, &config)
                .unwrap();
        for chunk in &chunks {
            import.add(chunk).unwrap();
        }
        let state = import.finish().unwrap();
        let refused = w
            .builder(Arc::new(ManualClock::new(w.net.now)))
            .state_backend(StateBackend::Disk(config))
            .build_from_snapshot(&w.headers(), state);
        assert!(
            matches!(&refused, Err(ChainError::Config(m)) if m.contains("at height")),
            "{:?}",
            refused.err()
        );
    }

    #[test]
    fn a_chain_refuses_a_state_imported_to_another_directory_than_its_backend() {
        let w = world(PATIENTS);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let chunks = w.net.chain.snapshot(CHUNK).unwrap();
        for backend in [
            StateBackend::Memory,
            StateBackend::Disk(DiskConfig::new(b.path())),
        ] {
            let state = import_on_disk(&w, &chunks, &DiskConfig::new(a.path()));
            let refused = w
                .builder(Arc::new(ManualClock::new(w.net.now)))
                .state_backend(backend)
                .build_from_snapshot(&w.headers(), state);
            assert!(
                matches!(&refused, Err(ChainError::Config(m)) if m.contains("another state database")),
                "{:?}",
                refused.err()
            );
        }
    }
}
