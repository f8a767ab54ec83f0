//! Full block validation (decode, signatures, Merkle root, state transition, state root) in
//! signed transactions per second, against bare `ed25519_dalek::verify_batch` of the same
//! signatures on the same cores and with the same chunking.
//!
//! The figure that matters is the ratio of the two throughputs (goal ≥ 0.8).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::VerifyingKey;
use medledger::chain::{ChainBuilder, ManualClock};
use medledger::hash::Digest;
use medledger::pow::ProofOfWork;
use medledger::tx::{Keypair, Payload, Transaction, BATCH_CHUNK};

const TXS: usize = 2048;
const T0: u64 = 1_750_000_000;

fn bench_validate(c: &mut Criterion) {
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let new_chain = || {
        ChainBuilder::new("bench", ProofOfWork::regtest())
            .genesis_time(T0)
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let mut chain = new_chain();
    let keys: Vec<Keypair> = (0..TXS)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Keypair::from_seed(&seed)
        })
        .collect();
    let txs: Vec<Transaction> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Transaction::sign(
                k,
                chain.chain_id(),
                0,
                Payload::Data {
                    record: Digest::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                },
            )
        })
        .collect();
    let block = chain.mine(txs.clone(), T0 + 600).unwrap();
    let bytes = block.encode();

    // The reference: the same signatures, keys already decompressed, same chunks, same cores.
    let messages: Vec<Vec<u8>> = txs.iter().map(|t| t.body.signing_message()).collect();
    let sigs: Vec<ed25519_dalek::Signature> = txs
        .iter()
        .map(|t| ed25519_dalek::Signature::from_bytes(&t.signature.to_bytes()))
        .collect();
    let vkeys: Vec<VerifyingKey> = txs
        .iter()
        .map(|t| t.body.signer.verifying_key().unwrap())
        .collect();

    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(TXS as u64));
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(4));

    group.bench_function("block_append_2048_signed_tx", |b| {
        b.iter_batched(
            new_chain,
            |mut chain| {
                chain.append_bytes(&bytes).unwrap();
                chain
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("bare_verify_batch_2048", |b| {
        b.iter(|| {
            let chunk = |i: usize| {
                let lo = i * BATCH_CHUNK;
                let hi = (lo + BATCH_CHUNK).min(TXS);
                let m: Vec<&[u8]> = messages[lo..hi].iter().map(Vec::as_slice).collect();
                ed25519_dalek::verify_batch(&m, &sigs[lo..hi], &vkeys[lo..hi]).unwrap();
            };
            let chunks = TXS.div_ceil(BATCH_CHUNK);
            #[cfg(feature = "parallel")]
            {
                use rayon::prelude::*;
                (0..chunks).into_par_iter().for_each(chunk);
            }
            #[cfg(not(feature = "parallel"))]
            (0..chunks).for_each(chunk);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
