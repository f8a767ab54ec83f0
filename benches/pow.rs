//! Nonce-search throughput against the bare SHA-256 compression function.
//!
//! Each nonce costs two compressions, so the ideal search rate is half the bare compression
//! rate; `nonce_search/serial` over `sha256_compress/bare` (both in elements per second) shows
//! how close the miner gets. `nonce_search/parallel` uses every thread in rayon's pool.

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medledger::pow::{Miner, Target, BITCOIN_GENESIS_HEADER};
use sha2::digest::generic_array::GenericArray;

/// Compressions per measured iteration of the bare loop.
const COMPRESSIONS: u64 = 1 << 16;
/// Nonces per measured iteration of the serial search.
const NONCES: u32 = 1 << 16;
/// Nonces per measured iteration of the parallel search.
const PARALLEL_NONCES: u32 = 1 << 20;

fn bare_compress(c: &mut Criterion) {
    let mut g = c.benchmark_group("sha256_compress");
    g.throughput(Throughput::Elements(COMPRESSIONS));
    g.bench_function("bare", |b| {
        let mut block = GenericArray::from([0x5au8; 64]);
        let mut state = [0u32; 8];
        b.iter(|| {
            for i in 0..COMPRESSIONS {
                // Vary the input so nothing is hoisted out of the loop.
                block[0] = i as u8;
                sha2::compress256(&mut state, core::slice::from_ref(&block));
            }
            black_box(state)
        });
    });
    g.finish();
}

fn nonce_search(c: &mut Criterion) {
    // The zero target is never met, so every nonce in the range is hashed.
    let miner = Miner::new(&BITCOIN_GENESIS_HEADER, Target::ZERO);
    let cancel = AtomicBool::new(false);
    let mut g = c.benchmark_group("nonce_search");
    g.throughput(Throughput::Elements(u64::from(NONCES)));
    g.bench_function("serial", |b| {
        b.iter(|| black_box(miner.search(black_box(0..NONCES), &cancel)));
    });
    g.throughput(Throughput::Elements(u64::from(PARALLEL_NONCES)));
    g.bench_function("parallel", |b| {
        b.iter(|| black_box(miner.search_parallel_in(black_box(0..PARALLEL_NONCES), &cancel)));
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bare_compress, nonce_search
}
criterion_main!(benches);
