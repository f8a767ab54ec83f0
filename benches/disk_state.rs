//! The state on disk (feature `redb`), side by side with the state in memory.
//!
//! For 1k patients and a large number (`DISK_BENCH_BIG`, default 100,000), each with an
//! accepted relationship, a record and a grant (built through the state API, as the access
//! bench's states, committed every 10,000 patients without the state tree), the same state is
//! built twice: on disk (a redb database, default cache bounds) and in memory. Once every entry
//! was read (the disk cache keeps what is read between two blocks: warm), measured in one run:
//!
//! * `memory_decide`: `decide` on the memory state;
//! * `disk_decide`: `decide` on the disk state, warm cache;
//! * `redb_get`: a bare redb point lookup, through a reader held open, of the same request's
//!   record pointer entry in the same database (the cost the issue compares `decide` with).
//!
//! Then blocks of 1,000 operations (a record added to a random patient's relationship each)
//! applied and committed to each state (`disk_block`): the issue compares the rate at the
//! large size with the rate at 1k.
//!
//! Then the same blocks on disk with the state tree (`disk_block_tree`, to compare with
//! `disk_block`'s `disk` in the same run): the tree built from the entries and committed with
//! its records, then blocks whose batches update it and write its new records (the first one,
//! which also drops the whole tree's commit from the undo window, is run and reported apart).
//! At the large size only with `DISK_BENCH_TREE_BLOCKS_BIG` set: at 100,000 patients the
//! database file holds 4 GiB after the build, and grows to 17 GiB during that first block (to
//! 12 GiB during the tree's commit with `DISK_BENCH_PAGE_CACHE_MIB=64`), so mind the free disk
//! space.
//!
//! Last, reopening the disk state (`disk_reopen`), its database closed: by reading the tree's
//! root node (`read_root`, what a chain does now) against rebuilding the tree from every entry
//! (`rebuild_from_entries`, what it did before the nodes were stored), side by side; and each
//! way once in a fresh process of this bench, which prints its resident memory before and
//! after (`DISK_BENCH_REOPEN_CHILD` set: that process does only this). Then a fresh process
//! exports the state as a snapshot to a file, all chunks at once (`export_snapshot`) and
//! streamed (`export_snapshot_to`), printing its time and peak resident memory (the two files
//! must hold the same bytes), and a fresh process imports it, once in memory
//! (`SnapshotImport::new`) and once into a state database (`SnapshotImport::on_disk`), each
//! printing its time and resident memory; last, the file is compacted
//! (`state::disk::compact`) and its size printed before and after.
//!
//! `DISK_BENCH_PAGE_CACHE_MIB` sets redb's page cache (default `DEFAULT_PAGE_CACHE_BYTES`).
//! `DISK_BENCH_SYNC_EVERY` syncs only every so many commits (default 1, every one; see
//! `DiskConfig::sync_every`).
//!
//! Printed beside: the database's bytes per patient, the growth of resident memory (`VmRSS`)
//! while building each state, and for the blocks on disk the bytes written per block (`wchar`
//! of `/proc/self/io`: what the process handed to the kernel) and the file's growth.

#[path = "support/access_state.rs"]
mod access_state;

use std::hint::black_box;
use std::time::{Duration, Instant};

use access_state::{
    build_state, build_state_with, lab_record_op, pk, shuffled, DAY, PROVIDERS, T0,
};
use criterion::{criterion_group, criterion_main, Criterion};
use medledger::access::{AccessRequest, Action, RelationshipId, POINTERS_TABLE};
use medledger::hash::StateRoot;
use medledger::hash::TxId;
use medledger::purpose::PurposeOfUse;
use medledger::state::disk::{self, DiskConfig};
use medledger::state::snapshot::{SnapshotError, SnapshotImport, MAX_CHUNK_ENTRIES};
use medledger::State;

/// The number after `field` on its line of the process file `/proc/self/{file}` (`None` where
/// there is none).
fn proc_self(file: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The bytes this process has handed to the kernel for writing so far (`wchar` in
/// `/proc/self/io`; 0 where there is none).
fn bytes_written() -> u64 {
    proc_self("io", "wchar:").unwrap_or(0)
}

/// What a group of blocks wrote: prints the bytes written and the file's growth per block.
fn report_writes(label: &str, what: &str, blocks: u64, written: u64, file: (u64, u64)) {
    let per = |bytes: u64| bytes / blocks.max(1);
    eprintln!(
        "{label}: {what}: {blocks} blocks, {} bytes written per block, file {} -> {} bytes \
         ({} per block)",
        per(written),
        file.0,
        file.1,
        per(file.1.saturating_sub(file.0)),
    );
}

/// Resident memory of this process in MiB, from `/proc/self/status` (0 where there is none).
fn rss_mib() -> u64 {
    proc_self("status", "VmRSS:").map_or(0, |kib| kib / 1024)
}

/// The process's peak resident memory so far, in MiB (0 where `/proc` is missing).
fn peak_rss_mib() -> u64 {
    proc_self("status", "VmHWM:").map_or(0, |kib| kib / 1024)
}

/// `DISK_BENCH_PAGE_CACHE_MIB`, if set.
fn page_cache_mib() -> Option<usize> {
    std::env::var("DISK_BENCH_PAGE_CACHE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
}

fn bench_disk(c: &mut Criterion, label: &str, n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let sync_every = std::env::var("DISK_BENCH_SYNC_EVERY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut config = DiskConfig::new(dir.path()).sync_every(sync_every);
    if let Some(mib) = page_cache_mib() {
        config = config.page_cache_bytes(mib << 20);
    }
    let rss_before = rss_mib();
    let started = Instant::now();
    let (mut disk, _) = build_state_with(n, |state| state.bench_move_to_disk(&config).unwrap());
    let usage = disk.disk_usage().unwrap().unwrap();
    let rss_disk = rss_mib();
    eprintln!(
        "{label}: {n} patients built on disk in {:.1?} (commit every 10,000 patients): \
         file {} bytes, {} bytes per patient stored ({} with redb's metadata); resident memory \
         +{} MiB (cache bound {} per table, synced every {sync_every} commits)",
        started.elapsed(),
        usage.file_bytes,
        usage.stored_bytes / n,
        (usage.stored_bytes + usage.metadata_bytes) / n,
        rss_disk.saturating_sub(rss_before),
        config.cache_entry_bound(),
    );
    let started = Instant::now();
    let (mut memory, triples) = build_state(n);
    eprintln!(
        "{label}: {n} patients built in memory in {:.1?}: resident memory +{} MiB",
        started.elapsed(),
        rss_mib().saturating_sub(rss_disk),
    );
    let pointers = disk.bench_disk_table(POINTERS_TABLE).unwrap().unwrap();
    let pointer_keys: Vec<Vec<u8>> = triples
        .iter()
        .map(|(_, _, ptr)| postcard::to_allocvec(ptr).unwrap())
        .collect();
    let order = shuffled(triples.len());
    let at = T0 + DAY;
    let request = |i: usize| {
        let (v, p, ptr) = triples[i];
        AccessRequest::new(v, p, ptr, Action::Read, PurposeOfUse::Treatment, at)
    };
    for (i, key) in pointer_keys.iter().enumerate() {
        // Warms the cache, and checks both backends decide alike.
        let (m, d) = (
            memory.access().decide(&request(i)),
            disk.access().decide(&request(i)),
        );
        assert!(m.is_permit());
        assert_eq!(m, d);
        assert!(pointers.get(key.as_slice()).unwrap().is_some());
    }
    eprintln!(
        "{label}: every entry read once (the disk cache grows between blocks): resident \
         memory {} MiB",
        rss_mib()
    );

    let mut g = c.benchmark_group(format!("disk_decide/{label}"));
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    let mut i = 0;
    g.bench_function("memory_decide", |b| {
        b.iter(|| {
            let r = request(order[i % order.len()]);
            i += 1;
            black_box(memory.access().decide(&r))
        })
    });
    let mut i = 0;
    g.bench_function("disk_decide", |b| {
        b.iter(|| {
            let r = request(order[i % order.len()]);
            i += 1;
            black_box(disk.access().decide(&r))
        })
    });
    let mut i = 0;
    g.bench_function("redb_get", |b| {
        b.iter(|| {
            let key = &pointer_keys[order[i % order.len()]];
            i += 1;
            black_box(
                pointers
                    .get(key.as_slice())
                    .unwrap()
                    .map(|v| v.value().len()),
            )
        })
    });
    g.finish();
    // The reader holds a read transaction: dropped, so that redb can reuse the pages the
    // blocks below free.
    drop(pointers);

    // Blocks of 1,000 operations (a record added to a random patient's relationship each),
    // applied and committed: on disk, one redb write transaction (synced) per block.
    let mut g = c.benchmark_group(format!("disk_block/{label}"));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(5));
    let mut blocks = Blocks {
        next: 1 << 40,
        rng: 0x2545_f491_4f6c_dd1d,
        n,
        count: 0,
    };
    for (name, state) in [("memory", &mut memory), ("disk", &mut disk)] {
        let (count, written) = (blocks.count, bytes_written());
        let file = state.disk_usage().unwrap().map_or(0, |u| u.file_bytes);
        g.bench_function(format!("{name}_1000_records"), |b| {
            b.iter_custom(|iters| blocks.run(state, iters, false))
        });
        if name == "disk" {
            let grown = state.disk_usage().unwrap().unwrap().file_bytes;
            let (count, written) = (blocks.count - count, bytes_written() - written);
            report_writes(
                label,
                "blocks without the tree",
                count,
                written,
                (file, grown),
            );
        }
    }
    g.finish();
    drop(memory);

    // The same blocks on disk with the state tree (built from the entries and committed with
    // its records first): each block's batch applied to the tree, its new records written with
    // the block.
    let started = Instant::now();
    disk.bench_persist_tree().unwrap();
    eprintln!(
        "{label}: state tree of {} entries built from the entries and committed with its nodes \
         in {:.1?}",
        disk.tree().len(),
        started.elapsed()
    );
    // At the large size the first of these blocks grows the database file to 17 GiB (at
    // 100,000 patients), so they run there only when asked for.
    if n <= 1_000 || std::env::var_os(TREE_BLOCKS_BIG_ENV).is_some() {
        // The first block after that commit also drops the commit's list of the records it
        // wrote (every record of the tree: its undo, which ends as the height leaves the undo
        // window), a one-off that would swamp the blocks' figures: it runs first, apart.
        let (file, written) = (
            disk.disk_usage().unwrap().unwrap().file_bytes,
            bytes_written(),
        );
        let started = Instant::now();
        blocks.run(&mut disk, 1, true);
        let grown = disk.disk_usage().unwrap().unwrap().file_bytes;
        eprintln!(
            "{label}: the first block with the tree (dropping the tree's commit from the undo \
             window) took {:.1?}, {} bytes written, file {file} -> {grown} bytes",
            started.elapsed(),
            bytes_written() - written
        );
        let mut g = c.benchmark_group(format!("disk_block_tree/{label}"));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(5));
        let (count, written) = (blocks.count, bytes_written());
        let file = disk.disk_usage().unwrap().unwrap().file_bytes;
        g.bench_function("disk_1000_records_with_tree", |b| {
            b.iter_custom(|iters| blocks.run(&mut disk, iters, true))
        });
        g.finish();
        let grown = disk.disk_usage().unwrap().unwrap().file_bytes;
        let (count, written) = (blocks.count - count, bytes_written() - written);
        report_writes(label, "blocks with the tree", count, written, (file, grown));
    }
    bench_reopen(c, label, n, &config, disk);
}

/// Reopening `disk` (a state of `n` patients in `config`'s directory) by reading the tree's
/// root node, against rebuilding the tree from every entry.
fn bench_reopen(c: &mut Criterion, label: &str, n: u64, config: &DiskConfig, disk: State) {
    let entries = disk.tree().len();
    drop(disk);
    for mode in ["read_root", "rebuild_from_entries"] {
        let spec = format!("{mode}:{}", config.dir().to_str().unwrap());
        eprintln!(
            "{label}: {n} patients, {entries} entries: {}",
            run_child(&spec)
        );
    }

    let mut g = c.benchmark_group(format!("disk_reopen/{label}"));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("read_root", |b| {
        b.iter(|| black_box(State::open_disk(config, 1).unwrap().unwrap().0.root()))
    });
    g.bench_function("rebuild_from_entries", |b| {
        b.iter(|| {
            black_box(
                State::bench_open_disk_rebuilding(config, 1)
                    .unwrap()
                    .unwrap()
                    .0
                    .root(),
            )
        })
    });
    g.finish();

    // The state exported as a snapshot by a fresh process, all chunks at once and streamed
    // (each once: the resident memory is the figure), to a file; then imported by a fresh
    // process, in memory and on disk, the chunks read one by one from that file.
    let (state, height) = State::open_disk(config, 1).unwrap().unwrap();
    let root = state.root();
    drop(state);
    let file = config.dir().join("snapshot.chunks");
    let streamed = config.dir().join("snapshot-streamed.chunks");
    for (mode, out) in [("export_collect", &file), ("export_stream", &streamed)] {
        let spec = format!(
            "{mode}:{}:{}",
            config.dir().to_str().unwrap(),
            out.to_str().unwrap()
        );
        eprintln!(
            "{label}: {n} patients, {entries} entries: {}",
            run_child(&spec)
        );
    }
    assert!(
        std::fs::read(&file).unwrap() == std::fs::read(&streamed).unwrap(),
        "the streamed export wrote other chunks"
    );
    std::fs::remove_file(&streamed).unwrap();
    for mode in ["import_memory", "import_disk"] {
        let target = tempfile::tempdir().unwrap();
        let spec = format!(
            "{mode}:{}:{}:{height}:{root}",
            file.to_str().unwrap(),
            target.path().to_str().unwrap()
        );
        eprintln!(
            "{label}: {n} patients, snapshot of {entries} entries: {}",
            run_child(&spec)
        );
    }
    std::fs::remove_file(&file).unwrap();

    // Last, the file compacted (offline, as an operator would after a bulk load): the space
    // redb keeps after its largest transactions given back, the same state reopened.
    let started = Instant::now();
    let done = disk::compact(config).unwrap();
    let took = started.elapsed();
    let reopened = State::open_disk(config, 1).unwrap().unwrap().0;
    assert_eq!(reopened.root(), root);
    eprintln!(
        "{label}: compacted in {took:.1?}: file {} -> {} bytes ({} per patient after)",
        done.file_bytes_before,
        done.file_bytes_after,
        done.file_bytes_after / n
    );
}

/// Runs this bench again as a child process doing only `spec` (see [`reopen_child`]), and
/// returns what it printed.
fn run_child(spec: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(CHILD_ENV, spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Operations per benchmarked block.
const BLOCK: u64 = 1_000;

/// Blocks of [`BLOCK`] operations, each a record added to a random patient's relationship.
struct Blocks {
    next: u64,
    rng: u64,
    n: u64,
    /// Blocks run so far.
    count: u64,
}

impl Blocks {
    /// Applies and commits `iters` blocks to `state` (with its state tree if `tracked`), and
    /// returns the time taken.
    fn run(&mut self, state: &mut State, iters: u64, tracked: bool) -> Duration {
        let started = Instant::now();
        for _ in 0..iters {
            for _ in 0..BLOCK {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let i = self.rng % self.n;
                let (patient, provider) = (pk(3, i), pk(1, i % PROVIDERS));
                let rel = RelationshipId::of(patient.account(), provider.account());
                self.next += 1;
                let mut tx = [0u8; 32];
                tx[..8].copy_from_slice(&self.next.to_le_bytes());
                state
                    .bench_apply_access(
                        provider,
                        &lab_record_op(rel, i),
                        2,
                        T0 + DAY,
                        TxId::from_bytes(tx),
                    )
                    .unwrap();
            }
            self.count += 1;
            if tracked {
                state.bench_commit_tracked();
            } else {
                state.bench_commit_untracked();
            }
        }
        started.elapsed()
    }
}

const CHILD_ENV: &str = "DISK_BENCH_REOPEN_CHILD";

/// Set to run the blocks with the state tree at the large size too.
const TREE_BLOCKS_BIG_ENV: &str = "DISK_BENCH_TREE_BLOCKS_BIG";

/// In a process started by [`bench_reopen`] (`DISK_BENCH_REOPEN_CHILD` set to `MODE:DIR`):
/// reopens the state in `DIR` one way, prints the time and resident memory, and exits.
fn reopen_child(_: &mut Criterion) {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, dir) = spec.split_once(':').unwrap();
    if mode.starts_with("import") {
        import_child(mode, dir);
    }
    if mode.starts_with("export") {
        export_child(mode, dir);
    }
    let config = DiskConfig::new(dir);
    let before = rss_mib();
    let started = Instant::now();
    let state = match mode {
        "read_root" => State::open_disk(&config, 1),
        _ => State::bench_open_disk_rebuilding(&config, 1),
    }
    .unwrap()
    .unwrap()
    .0;
    let took = started.elapsed();
    println!(
        "reopened ({mode}) in {took:.1?}: resident memory {before} MiB before, {} MiB after \
         (root {})",
        rss_mib(),
        state.root()
    );
    std::process::exit(0);
}

/// [`reopen_child`] for a snapshot export: `rest` is `DIR:FILE`; opens the state in `DIR`,
/// exports it in chunks of [`MAX_CHUNK_ENTRIES`] to the file `FILE` (each after its length,
/// four bytes big-endian), all chunks at once (`export_collect`) or each written as it is cut
/// (`export_stream`), prints the time and resident memory, and exits.
fn export_child(mode: &str, rest: &str) -> ! {
    use std::io::Write;
    let (dir, file) = rest.split_once(':').unwrap();
    let before = rss_mib();
    let started = Instant::now();
    let mut config = DiskConfig::new(dir);
    if let Some(mib) = page_cache_mib() {
        config = config.page_cache_bytes(mib << 20);
    }
    let (state, height): (State, u64) = State::open_disk(&config, 1).unwrap().unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
    let mut write = |chunk: &medledger::state::snapshot::SnapshotChunk| {
        let encoded = chunk.encode();
        out.write_all(&(encoded.len() as u32).to_be_bytes())?;
        out.write_all(&encoded)
    };
    let mut chunks = 0;
    if mode == "export_stream" {
        state
            .export_snapshot_to(height, MAX_CHUNK_ENTRIES, |chunk| {
                chunks += 1;
                write(&chunk).map_err(|e| SnapshotError::Spill(e.to_string()))
            })
            .unwrap();
    } else {
        for chunk in &state.export_snapshot(height, MAX_CHUNK_ENTRIES).unwrap() {
            chunks += 1;
            write(chunk).unwrap();
        }
    }
    out.flush().unwrap();
    let took = started.elapsed();
    println!(
        "exported ({mode}, {chunks} chunks) in {took:.1?}: resident memory {before} MiB \
         before, peak {} MiB",
        peak_rss_mib()
    );
    std::process::exit(0);
}

/// [`reopen_child`] for a snapshot import: `rest` is `CHUNKS:DIR:HEIGHT:ROOT`; imports the
/// chunks of the file `CHUNKS` (each after its length, four bytes big-endian) in memory
/// (`import_memory`) or into `DIR` (`import_disk`), prints the time and resident memory, and
/// exits.
fn import_child(mode: &str, rest: &str) -> ! {
    use std::io::Read;
    let mut parts = rest.split(':');
    let (file, dir) = (parts.next().unwrap(), parts.next().unwrap());
    let height: u64 = parts.next().unwrap().parse().unwrap();
    let root: StateRoot = parts.next().unwrap().parse().unwrap();
    let before = rss_mib();
    let started = Instant::now();
    let mut config = DiskConfig::new(dir);
    if let Some(mib) = page_cache_mib() {
        config = config.page_cache_bytes(mib << 20);
    }
    let mut import = match mode {
        "import_disk" => SnapshotImport::on_disk(height, root, &config).unwrap(),
        _ => SnapshotImport::new(height, root),
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    let mut len = [0u8; 4];
    let mut chunk = Vec::new();
    while reader.read_exact(&mut len).is_ok() {
        chunk.resize(u32::from_be_bytes(len) as usize, 0);
        reader.read_exact(&mut chunk).unwrap();
        import.add_bytes(&chunk).unwrap();
    }
    let chunks = import.chunks();
    let state: State = import.finish().unwrap();
    let took = started.elapsed();
    assert_eq!(state.root(), root);
    let file = state
        .disk_usage()
        .unwrap()
        .map_or(String::new(), |u| format!(", file {} bytes", u.file_bytes));
    println!(
        "imported ({mode}, {chunks} chunks) in {took:.1?}: resident memory {before} MiB \
         before, {} MiB after{file}",
        rss_mib()
    );
    std::process::exit(0);
}

fn disk_small(c: &mut Criterion) {
    bench_disk(c, "1k_patients", 1_000);
}

fn disk_large(c: &mut Criterion) {
    let n = std::env::var("DISK_BENCH_BIG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    bench_disk(c, "big", n);
}

criterion_group!(benches, reopen_child, disk_small, disk_large);
criterion_main!(benches);
