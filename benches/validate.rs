//! Full block validation (decode, signatures, Merkle root, state transition, state root) in
//! signed transactions per second, against bare `ed25519_dalek::verify_batch` of the same
//! signatures on the same cores, with the same chunking and keys already decompressed.
//!
//! Two blocks of 2,048 transactions: one with a distinct signer per transaction (every key must
//! be decompressed: the worst case) and one where 64 accounts sign 32 transactions each (a
//! provider-heavy block, where the chain's key cache decompresses each key once).
//! The figure that matters is the ratio of the two throughputs (goal ≥ 0.8).
//!
//! And the cost of refusing a bogus block: a known parent, the right height, a bogus Merkle
//! root and a seal that fails its proof of work, carrying one transaction or the most a block
//! may hold (65,536 validly signed ones, 11 MB). Validation runs cheapest first, so both are
//! refused on the seal before any transaction is hashed or verified; the goal is the large
//! block's refusal within 2× of the small one's. `check_block` measures the verdict (the block
//! is lent); `append` takes the block by value, so its figure also holds freeing the block,
//! which `drop` measures alone: a cost of having received the block, paid with or without
//! validation.

use std::sync::Arc;

#[path = "support/data_txs.rs"]
mod data_txs;

use data_txs::signed_data_txs;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use ed25519_dalek::VerifyingKey;
use medledger::block::MAX_BLOCK_TXS;
use medledger::chain::ManualClock;
use medledger::consensus::{Consensus, ConsensusError};
use medledger::hash::MerkleRoot;
use medledger::pow::{PowSeal, ProofOfWork};
use medledger::tx::BATCH_CHUNK;
use medledger::{Block, Chain, ChainBuilder, ChainError};

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

/// A block on the tip of `chain` holding `txs`, with a bogus Merkle root and a nonce whose hash
/// misses the target.
fn bogus_block(chain: &mut Chain<ProofOfWork>, txs: Vec<medledger::Transaction>) -> Block<PowSeal> {
    let mut block = chain.mine(Vec::new(), T0 + 600).unwrap();
    block.header.tx_root = MerkleRoot::from_bytes([0xee; 32]);
    block.header.tx_count = txs.len() as u32;
    block.txs = txs.try_into().unwrap();
    let now = T0 + 3600;
    while !matches!(
        chain
            .engine()
            .verify_header(&block.header, &chain.tip_ancestors(), now),
        Err(ConsensusError::InsufficientWork { .. })
    ) {
        block.header.seal.nonce = block.header.seal.nonce.wrapping_add(1);
    }
    block
}

fn bench_reject(c: &mut Criterion) {
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let mut chain = ChainBuilder::new("bench", ProofOfWork::regtest())
        .genesis_time(T0)
        .clock(clock)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("reject_bogus_block");
    // `append` refuses a fresh copy of the block each iteration; copying 11 MB is not timed,
    // but bounds how many iterations fit in a run.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group.warm_up_time(std::time::Duration::from_millis(500));
    group.measurement_time(std::time::Duration::from_secs(2));
    for n in [1, MAX_BLOCK_TXS] {
        let txs = signed_data_txs(chain.chain_id(), n, 64);
        let block = bogus_block(&mut chain, txs);
        let refused = |r: Result<(), ChainError>| {
            matches!(
                r,
                Err(ChainError::Consensus(
                    ConsensusError::InsufficientWork { .. }
                ))
            )
        };
        assert!(refused(chain.check_block(&block)));
        assert!(refused(chain.append(block.clone()).map(drop)));
        group.bench_function(format!("check_block/{n}_txs"), |b| {
            b.iter(|| chain.check_block(&block).unwrap_err())
        });
        group.bench_function(format!("append/{n}_txs"), |b| {
            b.iter_batched(
                || block.clone(),
                |block| chain.append(block).unwrap_err(),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("drop/{n}_txs"), |b| {
            b.iter_batched(|| block.clone(), drop, BatchSize::PerIteration)
        });
    }
    group.finish();
}

fn bench_validate(c: &mut Criterion) {
    bench_reject(c);
    bench_block(c, TXS);
    bench_block(c, 64);
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
