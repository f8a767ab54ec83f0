//! State tree benchmarks: a 1,000-update batch into a tree of 1M entries, and lookups and proofs
//! at 1M entries; and 10,000 new entries (about 1,400 registrations' worth) into trees of 100k
//! and 1M, whose cost per entry shows how a batch's price grows with the state
//! (`state_tree_growth`: compare the two throughputs).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use medledger::hash::{domain, Digest, StateKey};
use medledger::smt::{StateTree, StateUpdate};

const ENTRIES: u64 = 1_000_000;
const BATCH: u64 = 1_000;

fn key(n: u64) -> StateKey {
    StateKey::from_bytes(domain::STATE_KEY.hash(&n.to_le_bytes()))
}

fn value(n: u64) -> Digest {
    Digest::from_bytes(domain::STATE_VALUE.hash(&n.to_le_bytes()))
}

/// A tree of `entries` entries, built in one batch.
fn tree_of(entries: u64) -> StateTree {
    let mut updates: Vec<StateUpdate> = (0..entries).map(|i| (key(i), Some(value(i)))).collect();
    updates.sort_unstable_by_key(|(k, _)| *k);
    let mut tree = StateTree::new();
    tree.apply(&updates).expect("sorted distinct keys");
    tree
}

/// The same 10,000 new entries into trees of 100k and 1M entries, in elements per second: each
/// new entry rehashes its path (about log2(size / batch) + 2 nodes), and the cost per entry
/// grows faster than the path (the larger tree's nodes are spread over more memory). Only
/// `apply` is timed; the tree outlives the iterations, so part of it stays in cache.
fn growth(c: &mut Criterion) {
    const NEW: u64 = 10_000;
    let mut group = c.benchmark_group("state_tree_growth");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(NEW));
    // Eight batches in turn, so that an iteration does not find the paths the last one
    // warmed (a block's keys are new each time).
    let batches: Vec<Vec<StateUpdate>> = (0..8)
        .map(|b| {
            let mut batch: Vec<StateUpdate> = (0..NEW)
                .map(|i| (key(2 * ENTRIES + b * NEW + i), Some(value(i))))
                .collect();
            batch.sort_unstable_by_key(|(k, _)| *k);
            batch
        })
        .collect();
    for size in [100_000, ENTRIES] {
        let tree = tree_of(size);
        let mut turn = 0;
        group.bench_function(format!("apply_10000_into_{size}"), |b| {
            b.iter_batched(
                || {
                    turn = (turn + 1) % batches.len();
                    (tree.clone(), &batches[turn])
                },
                |(mut t, batch)| {
                    t.apply(black_box(batch)).expect("sorted batch");
                    t
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let tree = tree_of(ENTRIES);
    assert_eq!(tree.len(), ENTRIES as usize);

    // Half overwrites of existing entries, half inserts of new keys.
    let mut batch: Vec<StateUpdate> = (0..BATCH / 2)
        .map(|i| (key(i * 1999), Some(value(ENTRIES + i))))
        .chain((0..BATCH / 2).map(|i| (key(ENTRIES + i), Some(value(i)))))
        .collect();
    batch.sort_unstable_by_key(|(k, _)| *k);

    let mut group = c.benchmark_group("state_tree_1m");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.bench_function("apply_1000", |b| {
        b.iter_batched(
            || tree.clone(),
            |mut t| {
                t.apply(black_box(&batch)).expect("sorted batch");
                t
            },
            BatchSize::SmallInput,
        );
    });

    let present: Vec<StateKey> = (0..4096).map(|i| key(i * 241)).collect();
    let absent: Vec<StateKey> = (0..4096).map(|i| key(ENTRIES * 2 + i)).collect();
    for (name, keys) in [("get_present", &present), ("get_absent", &absent)] {
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                tree.get(black_box(&keys[i]))
            });
        });
    }

    let root = tree.root();
    let present_values: Vec<(StateKey, Digest)> =
        (0..4096).map(|i| (key(i * 241), value(i * 241))).collect();
    let mut i = 0;
    group.bench_function("prove_and_verify", |b| {
        b.iter(|| {
            i = (i + 1) % present_values.len();
            let (k, v) = &present_values[i];
            let proof = tree.prove(black_box(k));
            proof.verify(&root, k, Some(v)).expect("valid proof");
        });
    });
    group.finish();
}

criterion_group!(state_tree, benches, growth);
criterion_main!(state_tree);
