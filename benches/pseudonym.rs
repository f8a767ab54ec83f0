//! Pseudonyms derived per second per core.
//!
//! Each benchmark derives one pseudonym per iteration on one thread, so criterion's
//! elements-per-second figure is pseudonyms per second per core.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medledger::pseudonym::{
    Context, DerivedBackend, Epoch, PatientHandle, PatientSecret, PseudonymBackend,
    RandomTokenBackend, Recipient, Scheme,
};
use medledger::purpose::PurposeOfUse;

fn contexts(epoch: Epoch, n: usize) -> Vec<Context> {
    (0..n)
        .map(|i| {
            Context::new(
                epoch,
                PurposeOfUse::Research,
                Recipient::group(&format!("recipient {i}")),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let secret = PatientSecret::generate().expect("os randomness");
    let tree = secret.key_tree();
    let epoch = Epoch::new(1_000);
    let key = tree.epoch_key(epoch).expect("fresh tree");
    let ctxs = contexts(epoch, 1024);

    let mut g = c.benchmark_group("pseudonym");
    g.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    g.bench_function("keyed-hash, cached epoch key", |b| {
        b.iter(|| {
            i = (i + 1) % ctxs.len();
            black_box(key.pseudonym(&ctxs[i]).expect("same epoch"))
        })
    });
    g.bench_function("ed25519 public key, cached epoch key", |b| {
        b.iter(|| {
            i = (i + 1) % ctxs.len();
            black_box(key.signing_key(&ctxs[i]).expect("same epoch").pseudonym())
        })
    });
    let mut e = 0u64;
    g.bench_function("epoch key from the tree (64 levels)", |b| {
        b.iter(|| {
            e = e.wrapping_add(0x9e37_79b9_7f4a_7c15);
            black_box(tree.epoch_key(Epoch::new(e)).expect("fresh tree"))
        })
    });

    // Through a backend, a new context each time: derivation (epoch key cached) plus index
    // insertion. Timed in chunks of CHUNK issues into a fresh vault, so the index stays at a
    // realistic size instead of growing with the iteration count.
    const CHUNK: u64 = 10_000;
    let patient = PatientHandle::from_bytes([1; 32]);
    type MakeBackend = fn() -> Box<dyn PseudonymBackend>;
    let fresh: [(&str, MakeBackend); 3] = [
        ("DerivedBackend keyed-hash, new context", || {
            Box::new(DerivedBackend::new(Scheme::KeyedHash))
        }),
        ("DerivedBackend ed25519, new context", || {
            Box::new(DerivedBackend::new(Scheme::Ed25519))
        }),
        ("RandomTokenBackend, new context", || {
            Box::new(RandomTokenBackend::new())
        }),
    ];
    let recipients: Vec<Recipient> = (0..CHUNK)
        .map(|n| Recipient::from_bytes(blake3::hash(&n.to_le_bytes()).into()))
        .collect();
    for (name, make) in fresh {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(CHUNK);
                    let mut vault = make();
                    vault.enroll(patient).expect("enrol");
                    let start = std::time::Instant::now();
                    for r in &recipients[..chunk as usize] {
                        let ctx = Context::new(epoch, PurposeOfUse::Research, *r);
                        black_box(vault.pseudonym(&patient, &ctx).expect("enrolled"));
                    }
                    total += start.elapsed();
                    left -= chunk;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
