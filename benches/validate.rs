//! Full block validation (decode, signatures, Merkle root, state transition, state root) in
//! signed transactions per second, against bare `ed25519_dalek::verify_batch` of the same
//! signatures on the same cores, with the same chunking and keys already decompressed.
//!
//! Two blocks of 2,048 transactions: one with a distinct signer per transaction (every key must
//! be decompressed: the worst case) and one where 64 accounts sign 32 transactions each (a
//! provider-heavy block, where the chain's key cache decompresses each key once).
//! The figure that matters is the ratio of the two throughputs (goal ≥ 0.8).

use std::sync::Arc;

#[path = "support/data_txs.rs"]
mod data_txs;

use data_txs::signed_data_txs;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::VerifyingKey;
use medledger::chain::ManualClock;
use medledger::pow::ProofOfWork;
use medledger::tx::BATCH_CHUNK;
use medledger::{Chain, ChainBuilder};

const TXS: usize = 2048;
const T0: u64 = 1_750_000_000;

fn bench_block(c: &mut Criterion, signers: usize) {
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let new_chain = || -> Chain<ProofOfWork> {
        ChainBuilder::new("bench", ProofOfWork::regtest())
            .genesis_time(T0)
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let mut chain = new_chain();
    let txs = signed_data_txs(chain.chain_id(), TXS, signers);
    let block = chain.mine(txs.clone(), T0 + 600).unwrap();
    assert_eq!(block.txs.len(), TXS);
    let bytes = block.encode();

    let messages: Vec<Vec<u8>> = txs.iter().map(|t| t.body.signing_message()).collect();
    let sigs: Vec<ed25519_dalek::Signature> = txs
        .iter()
        .map(|t| ed25519_dalek::Signature::from_bytes(&t.signature.to_bytes()))
        .collect();
    let vkeys: Vec<VerifyingKey> = txs
        .iter()
        .map(|t| t.body.signer.verifying_key().unwrap())
        .collect();

    let mut group = c.benchmark_group(format!("validate_{signers}_signers"));
    group.throughput(Throughput::Elements(TXS as u64));
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(4));
    group.bench_function("block_append", |b| {
        b.iter_batched(
            new_chain,
            |mut chain| {
                chain.append_bytes(&bytes).unwrap();
                chain
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("bare_verify_batch", |b| {
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

fn bench_validate(c: &mut Criterion) {
    bench_block(c, TXS);
    bench_block(c, 64);
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
