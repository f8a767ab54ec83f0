//! Reopening a MedRec chain from its store: replaying every block from genesis, against starting
//! from a state checkpoint at the tip (verified against the tip header's state root), in the same
//! run on the same stored blocks. The chain holds 40 blocks of 100 patient registrations each.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use medledger::access::AccessOp;
use medledger::pow::ProofOfWork;
use medledger::store::{MemoryStore, Store};
use medledger::tx::Keypair;
use medledger::{Chain, ChainBuilder, Payload, Transaction};

const BLOCKS: u32 = 40;
const PER_BLOCK: u32 = 100;
const T0: u64 = 1_700_000_000;

fn builder() -> ChainBuilder<ProofOfWork> {
    ChainBuilder::new("reopen-bench", ProofOfWork::regtest()).genesis_time(T0)
}

/// A copy of `store`'s blocks and main chain, with its checkpoint if `checkpoint`.
fn copy(store: &dyn Store, checkpoint: bool) -> MemoryStore {
    let mut out = MemoryStore::new();
    for hash in store.block_hashes().unwrap() {
        out.put_block(&hash, &store.get_block(&hash).unwrap().unwrap())
            .unwrap();
    }
    let tip = store.tip_height().unwrap().unwrap();
    let main: Vec<_> = (0..=tip)
        .map(|h| store.main_hash(h).unwrap().unwrap())
        .collect();
    out.set_main_chain(0, &main).unwrap();
    if checkpoint {
        out.put_checkpoint(&store.checkpoint().unwrap().unwrap())
            .unwrap();
    }
    out
}

fn stores() -> (MemoryStore, MemoryStore) {
    let mut chain: Chain<ProofOfWork> = builder().build().unwrap();
    for b in 0..BLOCKS {
        let txs = (0..PER_BLOCK)
            .map(|i| {
                let n = b * PER_BLOCK + i;
                let mut seed = [0u8; 32];
                seed[..4].copy_from_slice(&n.to_le_bytes());
                let key = Keypair::from_seed(&seed);
                let op = AccessOp::register_patient(key.account(), &format!("P-{n}"), &[7; 32]);
                Transaction::sign(&key, chain.chain_id(), 0, Payload::Access(op))
            })
            .collect();
        let block = chain.mine(txs, T0 + 600 * u64::from(b + 1)).unwrap();
        chain.append(block).unwrap();
    }
    chain.write_checkpoint().unwrap();
    let store = chain.into_store();
    (copy(&*store, false), copy(&*store, true))
}

fn benches(c: &mut Criterion) {
    let (replay, checkpoint) = stores();
    let mut g = c.benchmark_group("reopen_40_blocks_of_100_registrations");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    for (name, store) in [("replay", &replay), ("checkpoint", &checkpoint)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || store.clone(),
                |s| black_box(builder().store(s).build().unwrap().state().root()),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(reopen, benches);
criterion_main!(reopen);
