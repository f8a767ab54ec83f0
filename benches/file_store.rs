//! Append throughput of `FileStore` (every append synced, and group commit of 64) against a bare
//! `write` + `fsync` loop of the same bytes (every write synced, and one sync per 64 writes), in
//! the same run on the same file system. Each append is a 1 KiB block: 1,089 bytes on disk with
//! the record's frame, kind and hash, which is what the bare loops write.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medledger::file_store::{FileStore, SyncPolicy};
use medledger::hash::BlockHash;
use medledger::store::Store;

const BLOCK_LEN: usize = 1024;
/// Frame header (32) + kind (1) + hash (32) + block.
const RECORD_LEN: usize = 32 + 1 + 32 + BLOCK_LEN;
const GROUP: u32 = 64;

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn hash(n: u64) -> BlockHash {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_le_bytes());
    BlockHash::from_bytes(b)
}

fn benches(c: &mut Criterion) {
    // The target directory: a real disk, unlike a temp directory that may be in memory.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("file_store_bench");
    std::fs::create_dir_all(&dir).unwrap();
    let block = vec![0x5a; BLOCK_LEN];
    let record = vec![0x5a; RECORD_LEN];

    let mut g = c.benchmark_group("append_1KiB_block");
    g.throughput(Throughput::Bytes(RECORD_LEN as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    for (name, policy) in [
        ("file_store_every_append", SyncPolicy::EveryAppend),
        (
            "file_store_group_64",
            SyncPolicy::Group {
                max_records: GROUP,
                max_delay: Duration::from_secs(1),
            },
        ),
    ] {
        let path = fresh(&dir, &format!("{name}.mlg"));
        let mut store = FileStore::builder()
            .sync_policy(policy)
            .open(&path)
            .unwrap();
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                store.put_block(&hash(n), black_box(&block)).unwrap();
            })
        });
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    for (name, every) in [
        ("write_fsync", 1u64),
        ("write_fsync_every_64", u64::from(GROUP)),
    ] {
        let path = fresh(&dir, &format!("{name}.raw"));
        let mut file = File::create(&path).unwrap();
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                file.write_all(black_box(&record)).unwrap();
                n += 1;
                if n.is_multiple_of(every) {
                    file.sync_data().unwrap();
                }
            })
        });
        drop(file);
        let _ = std::fs::remove_file(&path);
    }
    g.finish();
}

criterion_group!(file_store, benches);
criterion_main!(file_store);
