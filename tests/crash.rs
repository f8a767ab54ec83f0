//! Crash testing of `FileStore`.
//!
//! 1. **Simulated crashes.** A fault-injecting in-memory [`Disk`] keeps what a real disk keeps:
//!    bytes synced before the crash, plus any part of what was appended since (nothing, all of
//!    it, a prefix, a prefix ending in garbage, or 512-byte sectors independently kept, zeroed
//!    or garbled), and, for each range overwritten in place since (the store's anchors), its old
//!    bytes, its new ones, a mix or garbage. A workload runs until the disk "crashes" at one
//!    chosen write boundary (before or after an append, an overwrite, a sync or a truncation) or
//!    in the middle of an append or overwrite (torn at chosen byte offsets); then every
//!    resulting disk image is reopened and checked: every
//!    acknowledged block is there, nothing unacknowledged is garbage, the chain's state root
//!    equals a replay from genesis, and the chain goes on from there.
//! 2. **Killed processes.** This test binary is spawned in a child mode that writes blocks to a
//!    real file and prints each acknowledged block; the parent kills it (SIGKILL on Unix) at
//!    random times, reopens the file and checks every acknowledged block.

#[path = "support/pow.rs"]
mod pow_setup;

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use medledger::file_store::{Disk, FileStore, FileStoreError, SyncPolicy};
use medledger::hash::{BlockHash, Digest, StateRoot};
use medledger::pow::{PowSeal, ProofOfWork};
use medledger::store::Store;
use medledger::tx::Keypair;
use medledger::Block;
use medledger::{Chain, ChainBuilder};
use medledger::{Payload, Transaction};

const T0: u64 = 1_750_000_000;
const SECTOR: usize = 512;

// ---------------------------------------------------------------------------------------------
// Randomness (deterministic, so a failure names a reproducible seed).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..=max`.
    fn upto(&mut self, max: usize) -> usize {
        (self.next() % (max as u64 + 1)) as usize
    }
    fn garbage(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next() as u8;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fault-injecting disk.

/// Where, within the operation it hits, a crash happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tear {
    /// The operation has no effect.
    Before,
    /// The operation takes full effect, but the process dies before it returns.
    After,
    /// An append writes only this many bytes.
    Partial(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Append(usize),
    WriteAt(usize),
    Sync,
    Truncate,
}

#[derive(Default)]
struct DiskState {
    /// What a crash cannot take away.
    durable: Vec<u8>,
    /// What the process sees (the page cache).
    cache: Vec<u8>,
    /// Ranges of `cache` overwritten in place since the last sync.
    overwritten: Vec<(usize, usize)>,
    ops: u64,
    crash: Option<(u64, Tear)>,
    crashed: bool,
    trace: Vec<OpKind>,
}

#[derive(Clone, Default)]
struct FaultDisk(Arc<Mutex<DiskState>>);

fn crash_error() -> io::Error {
    io::Error::other("simulated crash")
}

impl FaultDisk {
    /// A disk that crashes at operation `at` (1-based), torn as `tear`.
    fn crashing(crash: Option<(u64, Tear)>) -> Self {
        let d = Self::default();
        d.0.lock().unwrap().crash = crash;
        d
    }

    /// A disk holding `image`, all durable.
    fn with_image(image: Vec<u8>) -> Self {
        let d = Self::default();
        {
            let mut s = d.0.lock().unwrap();
            s.durable = image.clone();
            s.cache = image;
        }
        d
    }

    /// Counts an operation; `Some(tear)` if the crash happens in it.
    fn step(s: &mut DiskState, kind: OpKind) -> io::Result<Option<Tear>> {
        if s.crashed {
            return Err(crash_error());
        }
        s.ops += 1;
        s.trace.push(kind);
        match s.crash {
            Some((at, tear)) if at == s.ops => {
                s.crashed = true;
                Ok(Some(tear))
            }
            _ => Ok(None),
        }
    }

    /// The disk images a crash can leave, each kind of survival once (deduplicated).
    fn crash_images(&self, rng: &mut Rng, sectors: usize) -> Vec<Vec<u8>> {
        let s = self.0.lock().unwrap();
        // The appended bytes as the process saw them, with the ranges overwritten in place
        // since the last sync as they were then: those are chosen per image below.
        let mut log = s.cache.clone();
        let ranges: Vec<(usize, usize)> = s
            .overwritten
            .iter()
            .copied()
            .filter(|&(_, hi)| hi <= s.durable.len() && hi <= log.len())
            .collect();
        for &(lo, hi) in &ranges {
            log[lo..hi].copy_from_slice(&s.durable[lo..hi]);
        }
        let common = s
            .durable
            .iter()
            .zip(&log)
            .take_while(|(a, b)| a == b)
            .count();
        let unsynced = log.len() - common;
        let mut images = vec![s.durable.clone(), s.cache.clone()];
        // What was synced, with the overwrites but none of the appends since.
        let mut with_overwrites = s.durable.clone();
        for &(lo, hi) in &ranges {
            with_overwrites[lo..hi].copy_from_slice(&s.cache[lo..hi]);
        }
        images.push(with_overwrites);
        let mut logs = Vec::new();
        // A prefix of what was written.
        logs.push(log[..common + rng.upto(unsynced)].to_vec());
        // A prefix whose last bytes (a torn sector) are garbage.
        let mut torn = log[..common + rng.upto(unsynced)].to_vec();
        let bad = rng.upto((torn.len() - common).min(SECTOR));
        let n = torn.len();
        rng.garbage(&mut torn[n - bad..]);
        logs.push(torn);
        // Sectors written back out of order: each kept, lost (zeros) or garbled.
        for _ in 0..sectors {
            let mut img = log[..common + rng.upto(unsynced)].to_vec();
            let mut start = common / SECTOR * SECTOR;
            while start < img.len() {
                let lo = start.max(common);
                let hi = (start + SECTOR).min(img.len());
                match rng.upto(2) {
                    0 => {}
                    1 => img[lo..hi].fill(0),
                    _ => rng.garbage(&mut img[lo..hi]),
                }
                start += SECTOR;
            }
            logs.push(img);
        }
        // Each range overwritten in place: its old bytes, its new ones, new up to a point and
        // old after it, or garbage (never bytes outside the range).
        for mut img in logs {
            for &(lo, hi) in &ranges {
                match rng.upto(3) {
                    0 => {}
                    1 => img[lo..hi].copy_from_slice(&s.cache[lo..hi]),
                    2 => {
                        let k = lo + rng.upto(hi - lo);
                        img[lo..k].copy_from_slice(&s.cache[lo..k]);
                    }
                    _ => rng.garbage(&mut img[lo..hi]),
                }
            }
            images.push(img);
        }
        let mut seen = HashSet::new();
        images.retain(|i| seen.insert(i.clone()));
        images
    }

    /// Whether nothing was ever synced.
    fn never_synced(&self) -> bool {
        self.0.lock().unwrap().durable.is_empty()
    }

    fn trace(&self) -> Vec<OpKind> {
        self.0.lock().unwrap().trace.clone()
    }
}

impl Disk for FaultDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().cache.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = self.0.lock().unwrap();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| s.cache.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        match Self::step(&mut s, OpKind::Append(data.len()))? {
            None => {
                s.cache.extend_from_slice(data);
                Ok(())
            }
            Some(tear) => {
                let n = match tear {
                    Tear::Before => 0,
                    Tear::After => data.len(),
                    Tear::Partial(n) => n.min(data.len()),
                };
                s.cache.extend_from_slice(&data[..n]);
                Err(crash_error())
            }
        }
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        let lo = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let hi = lo
            .checked_add(data.len())
            .filter(|&hi| hi <= s.cache.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        let n = match Self::step(&mut s, OpKind::WriteAt(data.len()))? {
            None => data.len(),
            Some(Tear::Before) => return Err(crash_error()),
            Some(Tear::After) => data.len(),
            Some(Tear::Partial(n)) => n.min(data.len()),
        };
        s.cache[lo..lo + n].copy_from_slice(&data[..n]);
        s.overwritten.push((lo, hi));
        if s.crashed {
            return Err(crash_error());
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        match Self::step(&mut s, OpKind::Sync)? {
            None => {
                s.durable = s.cache.clone();
                s.overwritten.clear();
                Ok(())
            }
            Some(tear) => {
                if tear == Tear::After {
                    s.durable = s.cache.clone();
                    s.overwritten.clear();
                }
                Err(crash_error())
            }
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        let tear = Self::step(&mut s, OpKind::Truncate)?;
        if tear != Some(Tear::Before) {
            s.cache.truncate(len as usize);
        }
        match tear {
            None => Ok(()),
            Some(_) => Err(crash_error()),
        }
    }
}

/// Every crash to try at each operation of a trace: both boundaries, and appends torn at a few
/// byte offsets (inside the frame header, at its end, inside the body, one byte short).
fn crash_points(trace: &[OpKind]) -> Vec<(u64, Tear)> {
    let mut out = Vec::new();
    for (i, kind) in trace.iter().enumerate() {
        let at = i as u64 + 1;
        out.push((at, Tear::Before));
        out.push((at, Tear::After));
        if let OpKind::Append(len) | OpKind::WriteAt(len) = *kind {
            let mut cuts = vec![1, 4, 8, 16, 31, 32, 33, len / 2, len - 1];
            cuts.retain(|&c| c > 0 && c < len);
            cuts.sort_unstable();
            cuts.dedup();
            out.extend(cuts.into_iter().map(|c| (at, Tear::Partial(c))));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The chain workload: blocks mined once, appended in a fixed order with a reorganisation.

fn builder() -> ChainBuilder<ProofOfWork> {
    pow_setup::builder("crash-chain", T0, T0 + 10_000_000)
}

struct Workload {
    /// Blocks in append order.
    blocks: Vec<Block<PowSeal>>,
    /// `after[i]`: tip and state root once `blocks[..i]` are appended.
    after: Vec<(BlockHash, StateRoot)>,
    /// Encodings of every block (genesis included) by hash.
    encoded: HashMap<BlockHash, Vec<u8>>,
}

fn mine_on(
    chain: &mut Chain<ProofOfWork>,
    key: &Keypair,
    n: usize,
    txs: usize,
) -> Vec<Block<PowSeal>> {
    (0..n)
        .map(|_| {
            let nonce = chain.state().next_nonce(&key.account());
            let txs = (0..txs as u64)
                .map(|j| {
                    Transaction::sign(
                        key,
                        chain.chain_id(),
                        nonce + j,
                        Payload::Data {
                            record: Digest::from_bytes([(nonce + j) as u8; 32]),
                        },
                    )
                })
                .collect();
            let time = chain.tip_header().timestamp + 600;
            let block = chain.mine(txs, time).unwrap();
            chain.append(block.clone()).unwrap();
            block
        })
        .collect()
}

/// Main chain A1..A8; a branch B5..B10 from A4 (side branch up to B8, B9 reorganises onto it);
/// then C11..C14 on top.
fn workload() -> &'static Workload {
    static W: OnceLock<Workload> = OnceLock::new();
    W.get_or_init(|| {
        let alice = Keypair::from_seed(&[1; 32]);
        let bob = Keypair::from_seed(&[2; 32]);
        let mut main = builder().build().unwrap();
        let mut encoded = HashMap::new();
        let genesis = main.genesis_hash();
        encoded.insert(genesis, main.block(&genesis).unwrap().unwrap().encode());
        let a = mine_on(&mut main, &alice, 8, 2);
        let mut other = builder().build().unwrap();
        for b in &a[..4] {
            other.append(b.clone()).unwrap();
        }
        let b = mine_on(&mut other, &bob, 6, 1);

        let mut reference = builder().build().unwrap();
        let mut blocks = Vec::new();
        let mut after = vec![(reference.tip(), reference.state().root())];
        for block in a.iter().chain(&b) {
            reference.append(block.clone()).unwrap();
            blocks.push(block.clone());
            after.push((reference.tip(), reference.state().root()));
        }
        assert_eq!(reference.tip(), b[5].hash(), "the reorganisation happened");
        let mut scratch = builder().build().unwrap();
        for block in &blocks {
            scratch.append(block.clone()).unwrap();
        }
        for block in mine_on(&mut scratch, &alice, 4, 3) {
            reference.append(block.clone()).unwrap();
            blocks.push(block);
            after.push((reference.tip(), reference.state().root()));
        }
        for block in &blocks {
            encoded.insert(block.hash(), block.encode());
        }
        Workload {
            blocks,
            after,
            encoded,
        }
    })
}

/// Runs the workload on `disk` until it fails, with a state checkpoint every `every` blocks (0:
/// none); returns how many blocks were acknowledged.
fn run_chain(disk: FaultDisk, policy: SyncPolicy, every: u64) -> usize {
    let w = workload();
    let Ok(store) = FileStore::builder().sync_policy(policy).create_disk(disk) else {
        return 0;
    };
    let Ok(mut chain) = builder().checkpoint_every(every).store(store).build() else {
        return 0;
    };
    for (i, block) in w.blocks.iter().enumerate() {
        if chain.append(block.clone()).is_err() {
            return i;
        }
    }
    w.blocks.len()
}

#[derive(Default, Debug)]
struct Tally {
    crash_points: u64,
    images: u64,
    /// Images of a disk on which nothing was ever synced, holding a part of a new store's first
    /// bytes, or nothing: refused (nothing was acknowledged, and a store is never made anew from
    /// an empty or damaged file). Real files are created atomically, first bytes included.
    creation_refused: u64,
    torn_tails: u64,
    /// Images whose chain resumed from a state checkpoint instead of replaying from genesis.
    resumed: u64,
    /// Resumed chains that then refused the workload's reorganisation below their checkpoint.
    reorg_refused: u64,
    lost: u64,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, msg: String) {
        if self.failures.len() < 20 {
            self.failures.push(msg);
        }
    }
    fn report(&self, what: &str) {
        println!(
            "{what}: {} crash points, {} disk images reopened, {} torn tails truncated, {} resumed from a checkpoint ({} then refused a reorganisation below it), {} torn creations refused, {} acknowledged blocks lost, {} failures",
            self.crash_points,
            self.images,
            self.torn_tails,
            self.resumed,
            self.reorg_refused,
            self.creation_refused,
            self.lost,
            self.failures.len()
        );
        assert!(
            self.failures.is_empty() && self.lost == 0,
            "{what}: {:#?}",
            self.failures
        );
    }
}

/// Reopens a crash image; `None` (counted) if it fails.
fn reopen(
    image: Vec<u8>,
    policy: SyncPolicy,
    never_synced: bool,
    tally: &mut Tally,
    ctx: &str,
) -> Option<FileStore> {
    tally.images += 1;
    // Shorter than a new store's header and first anchor.
    let short = image.len() <= 96;
    match FileStore::builder()
        .sync_policy(policy)
        .open_disk(FaultDisk::with_image(image))
    {
        Ok(s) => Some(s),
        Err(FileStoreError::NotAStore | FileStoreError::CorruptHeader(_))
            if never_synced && short =>
        {
            tally.creation_refused += 1;
            None
        }
        Err(e) => {
            tally.fail(format!("{ctx}: reopen failed: {e}"));
            None
        }
    }
}

/// Reopens one crash image and checks it; `resume` also appends the rest of the workload.
fn check_chain_image(
    image: Vec<u8>,
    policy: SyncPolicy,
    (acked, never_synced): (usize, bool),
    resume: bool,
    every: u64,
    tally: &mut Tally,
    ctx: &str,
) {
    let w = workload();
    let Some(store) = reopen(image, policy, never_synced, tally, ctx) else {
        return;
    };
    if store.recovery().truncated_bytes > 0 {
        tally.torn_tails += 1;
    }
    // No garbage: every stored block is one of the workload's, byte for byte.
    for hash in store.block_hashes().unwrap() {
        let bytes = store.get_block(&hash).unwrap();
        if bytes.as_ref() != w.encoded.get(&hash) {
            return tally.fail(format!(
                "{ctx}: stored block {hash} is not one that was written"
            ));
        }
    }
    let mut chain = match builder().checkpoint_every(every).store(store).build() {
        Ok(c) => c,
        Err(e) => return tally.fail(format!("{ctx}: chain reopen failed: {e}")),
    };
    let resumed = chain.state_tree_at(0).is_none();
    if resumed {
        tally.resumed += 1;
    }
    let now = (chain.tip(), chain.state().root());
    // Acknowledged blocks all there; at most the one in flight beyond them.
    let at = if now == w.after[acked] {
        acked
    } else if acked < w.blocks.len() && now == w.after[acked + 1] {
        acked + 1
    } else {
        match w.after.iter().position(|s| *s == now) {
            Some(j) if j < acked => tally.lost += (acked - j) as u64,
            _ => {}
        }
        return tally.fail(format!(
            "{ctx}: reopened at height {} (acknowledged {acked}): not a state of the workload",
            chain.height()
        ));
    };
    match chain.replay_state() {
        Ok(s) if s.root() == chain.state().root() && s.root() == chain.tip_header().state_root => {}
        Ok(_) => return tally.fail(format!("{ctx}: replayed state root differs")),
        Err(e) => return tally.fail(format!("{ctx}: replay failed: {e}")),
    }
    if resume {
        for block in &w.blocks[at..] {
            // A side-branch block in flight may be stored without changing the tip.
            if chain.header(&block.hash()).is_some() {
                continue;
            }
            match chain.append(block.clone()) {
                Ok(_) => {}
                // A chain resumed from a checkpoint keeps no undo data below it: the workload's
                // reorganisation back to height 4 is refused (documented), nothing else.
                Err(medledger::ChainError::ReorgTooDeep { .. }) if resumed => {
                    tally.reorg_refused += 1;
                    return;
                }
                Err(e) => return tally.fail(format!("{ctx}: resuming failed: {e}")),
            }
        }
        if (chain.tip(), chain.state().root()) != *w.after.last().unwrap() {
            tally.fail(format!("{ctx}: resumed to a different tip"));
        }
    }
}

fn chain_crashes(policy: SyncPolicy, seed: u64, every: u64) -> Tally {
    let w = workload();
    let reference = FaultDisk::crashing(None);
    assert_eq!(run_chain(reference.clone(), policy, every), w.blocks.len());
    let points = crash_points(&reference.trace());
    let mut tally = Tally::default();
    for (n, &(at, tear)) in points.iter().enumerate() {
        let disk = FaultDisk::crashing(Some((at, tear)));
        let acked = run_chain(disk.clone(), policy, every);
        tally.crash_points += 1;
        let mut rng = Rng(seed ^ (n as u64).wrapping_mul(0x1000_0000_01b3));
        for (i, image) in disk.crash_images(&mut rng, 1).into_iter().enumerate() {
            let ctx = format!("{policy:?} crash at op {at} {tear:?}, image {i}, seed {seed}");
            let state = (acked, disk.never_synced());
            let resume = (n + i) % 9 == 0;
            check_chain_image(image, policy, state, resume, every, &mut tally, &ctx);
        }
    }
    tally
}

#[test]
fn chain_survives_a_crash_at_every_write_boundary_every_append_synced() {
    chain_crashes(SyncPolicy::EveryAppend, 1, 0).report("chain, every append synced");
}

/// With a state checkpoint every third block: every image reopens at a state of the workload
/// (from a checkpoint when one survived whole, by replay otherwise), equal to a replay from
/// genesis.
#[test]
fn chain_with_checkpoints_survives_a_crash_at_every_write_boundary() {
    let tally = chain_crashes(SyncPolicy::EveryAppend, 3, 3);
    tally.report("chain with checkpoints, every append synced");
    assert!(tally.resumed > 0, "some images resumed from a checkpoint");
}

#[test]
fn chain_with_checkpoints_survives_a_crash_at_every_write_boundary_group_commit() {
    let policy = SyncPolicy::Group {
        max_records: 3,
        max_delay: Duration::from_secs(3600),
    };
    let tally = chain_crashes(policy, 4, 3);
    tally.report("chain with checkpoints, group commit");
    assert!(tally.resumed > 0, "some images resumed from a checkpoint");
}

#[test]
fn chain_survives_a_crash_at_every_write_boundary_group_commit() {
    let policy = SyncPolicy::Group {
        max_records: 3,
        max_delay: Duration::from_secs(3600),
    };
    chain_crashes(policy, 2, 0).report("chain, group commit");
}

// ---------------------------------------------------------------------------------------------
// The store alone under group commit: many records pending between syncs.

#[derive(Clone, Debug)]
enum StoreOp {
    Put(u8),
    Main(u64, Vec<u8>),
    Sync,
}

fn block_id(i: u8) -> BlockHash {
    BlockHash::from_bytes(medledger::hash::domain::RECORD.hash(&[i]))
}

fn block_bytes(i: u8) -> Vec<u8> {
    vec![i; 40 + 37 * usize::from(i)]
}

fn store_ops() -> Vec<StoreOp> {
    let mut ops = Vec::new();
    let mut main_len = 0u64;
    for i in 0..40u8 {
        ops.push(StoreOp::Put(i));
        if i % 3 == 2 {
            // Extend the main chain, sometimes rewriting its last two entries.
            let from = if i % 2 == 0 {
                main_len.saturating_sub(2)
            } else {
                main_len
            };
            let ids: Vec<u8> = (from as u8..=i).collect();
            main_len = from + ids.len() as u64;
            ops.push(StoreOp::Main(from, ids));
        }
        if i % 7 == 6 {
            ops.push(StoreOp::Sync);
        }
    }
    ops.push(StoreOp::Sync);
    ops
}

/// The store's contents after each prefix of `ops`: (blocks stored, main chain).
fn store_models(ops: &[StoreOp]) -> Vec<(usize, Vec<BlockHash>)> {
    let mut out = vec![(0, Vec::new())];
    let (mut blocks, mut main) = (0usize, Vec::new());
    for op in ops {
        match op {
            StoreOp::Put(_) => blocks += 1,
            StoreOp::Main(from, ids) => {
                main.truncate(*from as usize);
                main.extend(ids.iter().map(|&i| block_id(i)));
            }
            StoreOp::Sync => {}
        }
        out.push((blocks, main.clone()));
    }
    out
}

/// Runs the store ops until one fails; returns how many ops were acknowledged by a sync.
fn run_store(disk: FaultDisk, policy: SyncPolicy, ops: &[StoreOp]) -> usize {
    let Ok(mut store) = FileStore::builder().sync_policy(policy).create_disk(disk) else {
        return 0;
    };
    let mut acked = 0;
    for (i, op) in ops.iter().enumerate() {
        let hashes: Vec<BlockHash>;
        let r = match op {
            StoreOp::Put(b) => store.put_block(&block_id(*b), &block_bytes(*b)),
            StoreOp::Main(from, ids) => {
                hashes = ids.iter().map(|&b| block_id(b)).collect();
                store.set_main_chain(*from, &hashes)
            }
            StoreOp::Sync => store.sync(),
        };
        match (r, op) {
            (Err(_), _) => break,
            (Ok(()), StoreOp::Sync) => acked = i + 1,
            _ => {}
        }
    }
    // Dropped without a clean close: the disk has crashed, or the run is the reference.
    acked
}

#[test]
fn group_commit_store_survives_a_crash_at_every_write_boundary() {
    let policy = SyncPolicy::Group {
        max_records: 5,
        max_delay: Duration::from_secs(3600),
    };
    let ops = store_ops();
    let models = store_models(&ops);
    let reference = FaultDisk::crashing(None);
    assert_eq!(run_store(reference.clone(), policy, &ops), ops.len());
    let mut tally = Tally::default();
    for (n, &(at, tear)) in crash_points(&reference.trace()).iter().enumerate() {
        let disk = FaultDisk::crashing(Some((at, tear)));
        let acked = run_store(disk.clone(), policy, &ops);
        tally.crash_points += 1;
        let mut rng = Rng(3 ^ (n as u64).wrapping_mul(0x1000_0000_01b3));
        for (i, image) in disk.crash_images(&mut rng, 3).into_iter().enumerate() {
            let ctx = format!("crash at op {at} {tear:?}, image {i}");
            let Some(store) = reopen(image, policy, disk.never_synced(), &mut tally, &ctx) else {
                continue;
            };
            if store.recovery().truncated_bytes > 0 {
                tally.torn_tails += 1;
            }
            let hashes = store.block_hashes().unwrap();
            let mut main = Vec::new();
            let mut h = 0;
            while let Some(x) = store.main_hash(h).unwrap() {
                main.push(x);
                h += 1;
            }
            // The reopened store is exactly the state after some prefix of the ops that
            // includes every acknowledged one.
            let state = (hashes.len(), main);
            let Some(j) = models.iter().rposition(|m| *m == state) else {
                tally.fail(format!(
                    "{ctx}: reopened to a state no prefix of the ops produces"
                ));
                continue;
            };
            if j < acked {
                tally.lost += (models[acked].0 - state.0) as u64;
                tally.fail(format!("{ctx}: lost acknowledged ops ({j} < {acked})"));
            }
            let puts: Vec<u8> = ops
                .iter()
                .filter_map(|o| match o {
                    StoreOp::Put(b) => Some(*b),
                    _ => None,
                })
                .collect();
            for (k, hash) in hashes.iter().enumerate() {
                let b = puts[k];
                if *hash != block_id(b)
                    || store.get_block(hash).unwrap().as_deref() != Some(&block_bytes(b)[..])
                {
                    tally.fail(format!("{ctx}: block {k} is not what was written"));
                }
            }
        }
    }
    tally.report("store, group commit");
}

// ---------------------------------------------------------------------------------------------
// Killing a real process.

const CHILD_ENV: &str = "MEDLEDGER_CRASH_CHILD";

/// What a child writer prints for each block it has acknowledged: `acked <height> <hash>`.
const ACK: &str = "acked ";

/// The acknowledgement in `line`, if it holds one: `Some(Err(line))` if it holds the marker but
/// not a height and a hash after it. The marker is looked for anywhere in the line, since the
/// test harness prints `test child_writer ... ` before the child's first line, on the same line.
fn parse_ack(line: &str) -> Option<Result<(u64, BlockHash), String>> {
    let at = line.find(ACK)?;
    let mut it = line[at + ACK.len()..].split_whitespace();
    let parsed = it
        .next()
        .and_then(|h| h.parse().ok())
        .zip(it.next().and_then(|h| h.parse().ok()));
    Some(parsed.ok_or_else(|| line.to_string()))
}

#[test]
fn acknowledgements_are_found_after_the_harness_output() {
    let hash = BlockHash::from_bytes([7; 32]);
    for line in [
        format!("acked 1 {hash}"),
        format!("test child_writer ... acked 1 {hash}"),
    ] {
        assert_eq!(parse_ack(&line), Some(Ok((1, hash))), "{line}");
    }
    assert_eq!(parse_ack("running 1 test"), None);
    assert_eq!(
        parse_ack("test child_writer ... acked 1"),
        Some(Err("test child_writer ... acked 1".into()))
    );
}

/// Child mode (does nothing in a normal run): writes blocks to the file named by the
/// environment until killed, printing `acked <height> <hash>` once each block is acknowledged.
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let group = std::env::var("MEDLEDGER_CRASH_GROUP").is_ok();
    let policy = if group {
        SyncPolicy::Group {
            max_records: 8,
            max_delay: Duration::from_millis(5),
        }
    } else {
        SyncPolicy::EveryAppend
    };
    let store = FileStore::builder()
        .sync_policy(policy)
        .open(&path)
        .expect("child opens the store");
    let mut chain = builder()
        .store(store)
        .build()
        .expect("child reopens the chain");
    let key = Keypair::from_seed(&[9; 32]);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        mine_on(&mut chain, &key, 1, 1);
        println!("{ACK}{} {}", chain.height(), chain.tip());
    }
}

#[test]
fn killed_writer_loses_no_acknowledged_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.mlg");
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed);
    let mut acked: HashMap<u64, BlockHash> = HashMap::new();
    let (mut kills, mut lost, mut acknowledged) = (0, 0u64, 0usize);
    // The height each child starts from: the chain as the previous round left it.
    let mut start = 0u64;
    for round in 0..8 {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if round % 2 == 1 {
            cmd.env("MEDLEDGER_CRASH_GROUP", "1");
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| parse_ack(&l))
                .collect::<Vec<_>>()
        });
        // Killed at a random moment: during start-up, replay or writing.
        std::thread::sleep(Duration::from_millis(20 + rng.upto(400) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // Each line is one write to a pipe, whole or absent: every acknowledgement parses.
        let round_acks: Vec<(u64, BlockHash)> = reader
            .join()
            .unwrap()
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|line| panic!("unreadable acknowledgement {line:?}, seed {seed}"));
        // None was skipped: the child acknowledged every height from where it started.
        let heights: Vec<u64> = round_acks.iter().map(|&(h, _)| h).collect();
        let expected: Vec<u64> = (start + 1..=start + heights.len() as u64).collect();
        assert_eq!(heights, expected, "round {round}, seed {seed}");
        acknowledged += round_acks.len();
        acked.extend(round_acks);
        let store = FileStore::open(&path).expect("the killed writer's file reopens");
        let chain = builder().store(store).build().expect("and its chain");
        let mut checked = 0;
        for (&h, &hash) in &acked {
            checked += 1;
            if chain.hash_at(h) != Some(hash) {
                lost += 1;
            }
        }
        // Every block acknowledged so far, in any round, was checked.
        assert_eq!(checked, acknowledged, "seed {seed}");
        assert_eq!(
            chain.replay_state().unwrap().root(),
            chain.state().root(),
            "seed {seed}"
        );
        start = chain.height();
    }
    let top = acked.keys().max().copied().unwrap_or(0);
    println!(
        "killed writer: {kills} kills (seed {seed}), {acknowledged} blocks acknowledged and checked, top height {top}, {lost} lost"
    );
    assert_eq!(lost, 0, "seed {seed}");
}
