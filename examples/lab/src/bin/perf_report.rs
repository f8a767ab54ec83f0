//! The performance report: every headline figure as a ratio against its physical limit or a peer,
//! measured side by side in one run, so the ratios hold on any machine.
//!
//! ```sh
//! cargo run --release -p medledger-lab --bin perf_report            # prints the table
//! cargo run --release -p medledger-lab --bin perf_report -- out.csv  # and writes it as CSV
//! ```
//!
//! Each row times ours and the reference alternately, several rounds each, and keeps the best
//! round of each (the least disturbed by other work on the machine).

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medledger::chain::ManualClock;
use medledger::hash::TxId;
use medledger::merkle::merkle_root;
use medledger::pow::{self, Miner, ProofOfWork, Target};
use medledger::tx::BATCH_CHUNK;
use medledger::{Chain, ChainBuilder};
use sha2::digest::generic_array::GenericArray;

#[path = "../../../../benches/support/access_state.rs"]
mod access_state;
#[path = "../../../../benches/support/data_txs.rs"]
mod data_txs;

use data_txs::signed_data_txs;

const ROUNDS: usize = 5;
const T0: u64 = 1_750_000_000;

/// One row of the report.
struct Row {
    id: &'static str,
    what: String,
    ours: f64,
    reference: f64,
    unit: &'static str,
    /// Our figure over the reference's (rates) — or the reference's over ours when lower is
    /// better (costs).
    ratio: f64,
    goal: &'static str,
    met: bool,
    note: String,
}

/// Runs `f` (which returns how many items it processed) repeatedly for about `budget` and
/// returns items per second.
fn rate(budget: Duration, mut f: impl FnMut() -> u64) -> f64 {
    let start = Instant::now();
    let mut items = 0u64;
    while start.elapsed() < budget {
        items += f();
    }
    items as f64 / start.elapsed().as_secs_f64()
}

/// Best-of-rounds rates of `ours` and `reference`, measured alternately.
fn side_by_side(
    budget: Duration,
    mut ours: impl FnMut() -> u64,
    mut reference: impl FnMut() -> u64,
) -> (f64, f64) {
    let (mut a, mut b) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        a = a.max(rate(budget, &mut ours));
        b = b.max(rate(budget, &mut reference));
    }
    (a, b)
}

fn compress_loop(n: u64) -> u64 {
    let mut state = [0u32; 8];
    let mut block = GenericArray::from([0u8; 64]);
    for i in 0..n {
        block[0..8].copy_from_slice(&i.to_le_bytes());
        sha2::compress256(&mut state, core::slice::from_ref(&block));
    }
    black_box(state);
    n
}

fn p1_pow(rows: &mut Vec<Row>) {
    let header = pow::BITCOIN_GENESIS_HEADER;
    // An unreachable target: the search runs through its whole range.
    let miner = Miner::new(&header, Target::ZERO);
    let never = AtomicBool::new(false);
    let chunk: u32 = 1 << 20;
    let (ours, compress) = side_by_side(
        Duration::from_millis(300),
        || {
            black_box(miner.search(0..chunk, &never));
            u64::from(chunk)
        },
        || compress_loop(u64::from(chunk)),
    );
    let ratio = ours / (compress / 2.0);
    rows.push(Row {
        id: "P1",
        what: "PoW nonces/s, one core, vs bare compress256/2".into(),
        ours,
        reference: compress / 2.0,
        unit: "nonce/s",
        ratio,
        goal: ">= 0.90",
        met: ratio >= 0.90,
        note: String::new(),
    });
    let cores = rayon::current_num_threads() as u32;
    let (ours_all, compress_all) = side_by_side(
        Duration::from_millis(300),
        || {
            black_box(miner.search_parallel_in(0..chunk * cores, &never));
            u64::from(chunk * cores)
        },
        || {
            use rayon::prelude::*;
            (0..cores)
                .into_par_iter()
                .map(|_| compress_loop(u64::from(chunk)))
                .sum()
        },
    );
    let ratio = ours_all / (compress_all / 2.0);
    rows.push(Row {
        id: "P1",
        what: format!("PoW nonces/s, all {cores} cores (rayon), vs compress256/2 on all cores"),
        ours: ours_all,
        reference: compress_all / 2.0,
        unit: "nonce/s",
        ratio,
        goal: ">= 0.90",
        met: ratio >= 0.90,
        note: String::new(),
    });
}

fn pow_chain(clock: &Arc<ManualClock>) -> Chain<ProofOfWork> {
    ChainBuilder::new("perf-report", ProofOfWork::regtest())
        .genesis_time(T0)
        .clock(clock.clone())
        .build()
        .expect("valid configuration")
}

fn p2_validation(rows: &mut Vec<Row>) {
    const TXS: usize = 2048;
    for signers in [TXS, 64] {
        let clock = Arc::new(ManualClock::new(T0 + 3600));
        let mut chain = pow_chain(&clock);
        let txs = signed_data_txs(chain.chain_id(), TXS, signers);
        let block = chain
            .mine(txs.clone(), T0 + 600)
            .expect("valid transactions");
        let bytes = block.encode();
        let messages: Vec<Vec<u8>> = txs.iter().map(|t| t.body.signing_message()).collect();
        let sigs: Vec<ed25519_dalek::Signature> = txs
            .iter()
            .map(|t| ed25519_dalek::Signature::from_bytes(&t.signature.to_bytes()))
            .collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> = txs
            .iter()
            .map(|t| t.body.signer.verifying_key().expect("valid key"))
            .collect();
        let (ours, reference) = side_by_side(
            Duration::from_millis(600),
            || {
                // A fresh chain each time (its creation is not what we measure, but it is
                // cheap next to 2,048 signatures).
                let mut chain = pow_chain(&clock);
                chain.append_bytes(&bytes).expect("valid block");
                TXS as u64
            },
            || {
                use rayon::prelude::*;
                (0..TXS.div_ceil(BATCH_CHUNK))
                    .into_par_iter()
                    .for_each(|i| {
                        let (lo, hi) = (i * BATCH_CHUNK, ((i + 1) * BATCH_CHUNK).min(TXS));
                        let m: Vec<&[u8]> = messages[lo..hi].iter().map(Vec::as_slice).collect();
                        ed25519_dalek::verify_batch(&m, &sigs[lo..hi], &keys[lo..hi])
                            .expect("valid signatures");
                    });
                TXS as u64
            },
        );
        let ratio = ours / reference;
        rows.push(Row {
            id: "P2",
            what: format!(
                "block validation, 2,048 signed tx, {signers} signers, vs bare verify_batch"
            ),
            ours,
            reference,
            unit: "tx/s",
            ratio,
            goal: ">= 0.80",
            met: ratio >= 0.80,
            note: if signers == TXS {
                "every signer key decompressed (worst case)".into()
            } else {
                "repeat signers: key cache".into()
            },
        });
    }
}

fn p3_merkle(rows: &mut Vec<Row>) {
    const N: usize = 1 << 20;
    let ids: Vec<TxId> = (0..N as u64)
        .map(|i| TxId::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_bytes()).collect();
    let (ours, reference) = side_by_side(
        Duration::from_millis(400),
        || {
            black_box(merkle_root(black_box(&ids)));
            N as u64
        },
        || {
            black_box(
                blake3::Hasher::new()
                    .update_rayon(black_box(&bytes))
                    .finalize(),
            );
            N as u64
        },
    );
    let ratio = ours / reference;
    rows.push(Row {
        id: "P3",
        what: "Merkle root of 1M tx ids vs bare BLAKE3 (rayon) over the same 32 MiB".into(),
        ours,
        reference,
        unit: "id/s",
        ratio,
        goal: ">= 0.80",
        met: ratio >= 0.80,
        note: String::new(),
    });
}

/// Real Bitcoin mainnet headers (blocks 0, 1, 100000 and 500000).
fn bitcoin_headers() -> Vec<[u8; 80]> {
    let hex = [
        "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c",
        "010000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000982051fd1e4ba744bbbe680e1fee14677ba1a3c3540bf7b1cdb606e857233e0e61bc6649ffff001d01e36299",
        "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710",
        "000000201929eb850a74427d0440cf6b518308837566cd6d0662790000000000000000001f6231ed3de07345b607ec2a39b2d01bec2fe10dfb7f516ba4958a42691c95316d0a385a459600185599fc5c",
    ];
    hex.iter()
        .filter_map(|h| medledger::hash::from_hex::<80>(h).ok())
        .filter(|h| {
            let bits = u32::from_le_bytes([h[72], h[73], h[74], h[75]]);
            Target::from_compact(pow::CompactTarget::from_consensus(bits))
                .is_ok_and(|t| t.is_met_by(&pow::header_hash(h)))
        })
        .collect()
}

/// Resident memory of this process in bytes (Linux), for the memory row.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Decisions per second over a state of `n` patients, and a bare `HashMap` lookup of a
/// (viewer, pointer) key over as many entries, side by side.
fn decide_rates(n: u64) -> (f64, f64, Option<u64>) {
    use medledger::access::{AccessRequest, Action};
    use medledger::purpose::PurposeOfUse;
    let before = resident_bytes();
    let (state, triples) = access_state::build_state(n);
    let grew = before
        .zip(resident_bytes())
        .map(|(b, a)| a.saturating_sub(b));
    let access = state.access();
    let order = access_state::shuffled(triples.len());
    let at = access_state::T0 + access_state::DAY;
    let table: std::collections::HashMap<_, u8> =
        triples.iter().map(|&(v, _, ptr)| ((v, ptr), 1)).collect();
    const BATCH: usize = 4096;
    let (mut i, mut j) = (0usize, 0usize);
    let (ours, reference) = side_by_side(
        Duration::from_millis(300),
        || {
            for _ in 0..BATCH {
                let (v, p, ptr) = triples[order[i % order.len()]];
                i += 1;
                let d = access.decide(&AccessRequest::new(
                    v,
                    p,
                    ptr,
                    Action::Read,
                    PurposeOfUse::Treatment,
                    at,
                ));
                assert!(d.is_permit());
            }
            BATCH as u64
        },
        || {
            for _ in 0..BATCH {
                let (v, _, ptr) = triples[order[j % order.len()]];
                j += 1;
                assert!(black_box(table.get(&(v, ptr))).is_some());
            }
            BATCH as u64
        },
    );
    (ours, reference, grew)
}

fn p4_decide(rows: &mut Vec<Row>) -> Option<u64> {
    let (small, small_map, _) = decide_rates(1_000);
    let (large, map, grew) = decide_rates(1_000_000);
    let ratio = map / large;
    rows.push(Row {
        id: "P4",
        what: "access decide at 1M patients vs bare HashMap lookup (cost ratio)".into(),
        ours: large,
        reference: map,
        unit: "decision/s",
        ratio,
        goal: "<= 3.0",
        met: ratio <= 3.0,
        note: "ratio = our cost / HashMap cost".into(),
    });
    let ratio = small / large;
    rows.push(Row {
        id: "P4",
        what: "access decide at 1M patients vs its own cost at 1k (cost ratio)".into(),
        ours: large,
        reference: small,
        unit: "decision/s",
        ratio,
        goal: "<= 2.0",
        met: ratio <= 2.0,
        note: format!(
            "ratio = cost at 1M / cost at 1k; the bare HashMap's own ratio: {:.2}",
            small_map / map
        ),
    });
    grew
}

fn p5_committees(rows: &mut Vec<Row>) {
    use medledger::sim::{SimConfig, Simulation};
    // The settings of the scaling sweep (`scaling.rs` beside this file): committees of 24, 512
    // transactions per shard.
    let run = |k: usize| {
        let config = SimConfig::builder()
            .committees(k)
            .committee_size(24)
            .block_size(512)
            .blocks(6)
            .seed(2026)
            .build()
            .expect("valid simulation");
        Simulation::new(config).expect("valid simulation").run()
    };
    let (one, sixteen) = (run(1), run(16));
    let ratio = sixteen.tx_per_sec / (16.0 * one.tx_per_sec);
    rows.push(Row {
        id: "P5",
        what: "committee consensus (simulated): tx/s at 16 committees vs 16 x (1 committee)".into(),
        ours: sixteen.tx_per_sec,
        reference: 16.0 * one.tx_per_sec,
        unit: "tx/s",
        ratio,
        goal: ">= 0.85",
        met: ratio >= 0.85,
        note: format!(
            "simulated time; p50 {:.2} s at 1, {:.2} s at 16",
            one.latency_p50_us as f64 / 1e6,
            sixteen.latency_p50_us as f64 / 1e6
        ),
    });
}

fn p8_consortium(rows: &mut Vec<Row>) {
    use medledger_lab::engines::{self, Scenario};
    // Both engines on the same simulated network, load and CPU model (`engines.rs`).
    let tendermint = engines::tendermint(4, Scenario::Honest);
    let committees = engines::committee(Scenario::Honest);
    let ratio = tendermint.tx_per_sec / committees.tx_per_sec;
    let safe = tendermint.agreement_violations + committees.agreement_violations == 0;
    rows.push(Row {
        id: "P8",
        what: "Tendermint, 4 validators (simulated): finalised tx/s vs the committee engine".into(),
        ours: tendermint.tx_per_sec,
        reference: committees.tx_per_sec,
        unit: "tx/s",
        ratio,
        goal: "0 viol.",
        met: safe,
        note: format!(
            "same network and load; finality p50 {:.2} s vs {:.2} s; {} vs {} nodes",
            tendermint.finality_p50_us as f64 / 1e6,
            committees.finality_p50_us as f64 / 1e6,
            tendermint.nodes,
            committees.nodes
        ),
    });
}

fn p6_bitcoin_peer(rows: &mut Vec<Row>) {
    use bitcoin::consensus::deserialize;
    let headers = bitcoin_headers();
    assert_eq!(headers.len(), 4, "real headers must validate");
    let theirs: Vec<bitcoin::block::Header> = headers
        .iter()
        .map(|h| deserialize(h).expect("bitcoin header"))
        .collect();
    const REPS: usize = 4096;
    let (ours, reference) = side_by_side(
        Duration::from_millis(300),
        || {
            for _ in 0..REPS / headers.len() {
                for h in &headers {
                    let bits = u32::from_le_bytes([h[72], h[73], h[74], h[75]]);
                    let target = Target::from_compact(pow::CompactTarget::from_consensus(bits))
                        .expect("valid bits");
                    assert!(target.is_met_by(&pow::header_hash(black_box(h))));
                }
            }
            (REPS / headers.len() * headers.len()) as u64
        },
        || {
            for _ in 0..REPS / headers.len() {
                for h in &theirs {
                    black_box(h).validate_pow(h.target()).expect("valid pow");
                }
            }
            (REPS / headers.len() * headers.len()) as u64
        },
    );
    let ratio = ours / reference;
    rows.push(Row {
        id: "P6",
        what: "check PoW of real Bitcoin headers vs bitcoin::Header::validate_pow".into(),
        ours,
        reference,
        unit: "header/s",
        ratio,
        goal: ">= 1.0",
        met: ratio >= 1.0,
        note: format!("{} mainnet headers", headers.len()),
    });
}

fn p7_replay(rows: &mut Vec<Row>, grant_state_bytes: Option<u64>) {
    const BLOCKS: usize = 50;
    const PER_BLOCK: usize = 400;
    let clock = Arc::new(ManualClock::new(T0 + 10_000_000));
    let mut chain = pow_chain(&clock);
    let all = signed_data_txs(chain.chain_id(), BLOCKS * PER_BLOCK, 256);
    for (i, txs) in all.chunks(PER_BLOCK).enumerate() {
        let b = chain
            .mine(txs.to_vec(), T0 + 600 * (i as u64 + 1))
            .expect("valid transactions");
        chain.append(b).expect("valid block");
    }
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let state = chain.replay_state().expect("replay");
        best = best.min(start.elapsed().as_secs_f64());
        assert_eq!(state.root(), chain.state().root());
    }
    rows.push(Row {
        id: "P7",
        what: format!("replay from genesis: {BLOCKS} blocks x {PER_BLOCK} signed tx (blocks/s; reference = tx/s)"),
        ours: BLOCKS as f64 / best,
        reference: (BLOCKS * PER_BLOCK) as f64 / best,
        unit: "block/s",
        ratio: f64::NAN,
        goal: "report",
        met: true,
        note: "full re-validation: signatures, Merkle, state, state root".into(),
    });
    if let Some(bytes) = grant_state_bytes {
        rows.push(Row {
            id: "P7",
            what:
                "memory per million grants (1M patients: registration, relationship, record, grant)"
                    .into(),
            ours: bytes as f64,
            reference: f64::NAN,
            unit: "B",
            ratio: f64::NAN,
            goal: "report",
            met: true,
            note: "resident memory growth while building the state, state tree included".into(),
        });
    }
}

fn sha_ni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sha")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn main() {
    let csv = std::env::args().nth(1);
    println!(
        "medledger performance report — {} cores, SHA-NI {}",
        rayon::current_num_threads(),
        if sha_ni() { "in use" } else { "not available" }
    );
    let mut rows = Vec::new();
    p1_pow(&mut rows);
    p2_validation(&mut rows);
    p3_merkle(&mut rows);
    let grant_bytes = p4_decide(&mut rows);
    p5_committees(&mut rows);
    p6_bitcoin_peer(&mut rows);
    p7_replay(&mut rows, grant_bytes);
    p8_consortium(&mut rows);

    println!(
        "\n{:<4} {:<78} {:>14} {:>14} {:>7} {:>8} {:>4}",
        "row", "what", "ours", "reference", "ratio", "goal", "met"
    );
    for r in &rows {
        println!(
            "{:<4} {:<78} {:>14} {:>14} {:>7} {:>8} {:>4}  {}",
            r.id,
            r.what,
            human(r.ours, r.unit),
            human(r.reference, r.unit),
            if r.ratio.is_nan() {
                "-".into()
            } else {
                format!("{:.2}", r.ratio)
            },
            r.goal,
            if r.met { "yes" } else { "NO" },
            r.note
        );
    }
    if let Some(path) = csv {
        let mut out = String::from("row,what,ours,reference,unit,ratio,goal,met,note\n");
        for r in &rows {
            out.push_str(&format!(
                "{},\"{}\",{:.1},{:.1},{},{:.4},{},{},\"{}\"\n",
                r.id, r.what, r.ours, r.reference, r.unit, r.ratio, r.goal, r.met, r.note
            ));
        }
        std::fs::write(&path, out).expect("write CSV");
        println!("\nwrote {path}");
    }
}

fn human(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "-".into();
    }
    let (v, p) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    format!("{v:.2} {p}{unit}")
}
