//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/*`) through the same checks the fuzz
//! targets run, on the stable toolchain and without a fuzzer, with the heap each decoder check
//! keeps live held to its budget.
//!
//! The seed inputs are written by [`write_seed_corpus`] (ignored; run it with
//! `cargo test --test fuzz_corpus -- --ignored` after changing a format or a scenario). Inputs
//! that a fuzzing run found and that are worth keeping (crashes, once fixed) are committed beside
//! them and replayed the same way.

#[path = "support/alloc_meter.rs"]
mod alloc_meter;
#[path = "support/fuzz_checks/mod.rs"]
mod fuzz_checks;

use std::path::{Path, PathBuf};

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use sha2::{Digest as _, Sha512};

use fuzz_checks::chain_model::{self, Op};
use medledger::block::{Header, HEADER_VERSION, MAX_BLOCK_TXS};
use medledger::codec::{self, FORMAT_VERSION};
use medledger::hash::{BlockHash, ChainId, Digest, MerkleRoot, StateKey, StateRoot, TxId};
use medledger::merkle::{merkle_root, MerkleProof};
use medledger::pow::{CompactTarget, PowSeal, ProofOfWork};
use medledger::pseudonym::{Context, Epoch, LinkStatement, PatientSecret, Recipient};
use medledger::purpose::PurposeOfUse;
use medledger::smt::{StateTree, MAX_PROOF_DEPTH};
use medledger::tx::{Keypair, PublicKey, Signature};
use medledger::Block;
use medledger::ChainBuilder;
use medledger::{Payload, Transaction};

#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let t = fuzz_checks::target(target);
    let files = corpus_files(target);
    assert!(!files.is_empty(), "no seed corpus for {target}");
    for file in files {
        let data = std::fs::read(&file).expect("readable corpus file");
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let result = std::panic::catch_unwind(|| alloc_meter::peak_during(|| (t.check)(&data)));
        match result {
            Ok(((), peak)) if t.metered => {
                fuzz_checks::assert_within_budget(&format!("{target}/{name}"), data.len(), peak)
            }
            Ok(_) => {}
            Err(e) => std::panic::resume_unwind(Box::new(format!(
                "{target}/{name}: {}",
                e.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("panic")
            ))),
        }
    }
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        /// Every target has a replay test here, a fuzz target and a line in the fuzz manifest.
        #[test]
        fn every_target_is_replayed_and_fuzzed() {
            let replayed: Vec<&str> = [$(stringify!($name)),*]
                .into_iter()
                .chain(RESEARCH_TARGETS.iter().copied())
                .collect();
            let targets: Vec<&str> = fuzz_checks::TARGETS.iter().map(|t| t.name).collect();
            assert_eq!(targets, replayed);
            let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
            for t in targets {
                assert!(fuzz_dir().join("fuzz_targets").join(format!("{t}.rs")).is_file(), "{t}");
                assert!(manifest.contains(&format!("name = \"{t}\"")), "{t} not in fuzz/Cargo.toml");
            }
        }
    };
}

replay_tests!(
    transaction,
    block_header,
    block,
    merkle_proof,
    state_proof,
    snapshot_chunk,
    pseudonym_context,
    link_statement,
    committee_message,
    committee_block,
    file_store,
    access_op,
    grant_proof,
    chain_model,
);

/// The research targets, replayed with the `research-queries` feature.
#[cfg(feature = "research-queries")]
const RESEARCH_TARGETS: &[&str] = &["research_report", "aggregate_share"];
#[cfg(not(feature = "research-queries"))]
const RESEARCH_TARGETS: &[&str] = &[];

#[cfg(feature = "research-queries")]
#[test]
fn research_report() {
    replay("research_report");
}

#[cfg(feature = "research-queries")]
#[test]
fn aggregate_share() {
    replay("aggregate_share");
}

// ---------------------------------------------------------------------------------------------
// The seed generator

/// Writes the seed corpus of every target to `fuzz/corpus/<target>/<name>`, and
/// `fuzz/max_len.txt`.
#[test]
#[ignore = "writes the committed seed corpus; run by hand after a format change"]
fn write_seed_corpus() {
    let mut count = 0;
    for (target, name, bytes) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
        count += 1;
    }
    std::fs::write(fuzz_dir().join("max_len.txt"), max_len_table()).unwrap();
    println!("wrote {count} seed inputs");
}

/// `fuzz/max_len.txt`, which `fuzz/run.sh` reads: each target's `-max_len`, one byte past its
/// decoder's size limit.
fn max_len_table() -> String {
    let mut out = String::from(
        "# target, and -max_len for fuzz/run.sh: one byte past the decoder's size limit.\n\
         # Written by write_seed_corpus in tests/fuzz_corpus.rs, which checks it is current.\n",
    );
    for t in fuzz_checks::TARGETS {
        out += &format!("{} {}\n", t.name, t.max_len + 1);
    }
    out
}

/// The committed table, less the lines of targets this build leaves out (their features are
/// off): it must be what this build would write.
#[test]
fn the_fuzzing_length_limits_are_the_decoders_limits() {
    let committed = std::fs::read_to_string(fuzz_dir().join("max_len.txt")).unwrap();
    let built: String = committed
        .lines()
        .filter(|l| !fuzz_checks::GATED.contains(&l.split(' ').next().unwrap_or("")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        built,
        max_len_table(),
        "fuzz/max_len.txt is stale: run write_seed_corpus with every feature"
    );
    for gated in fuzz_checks::GATED {
        assert!(committed.contains(&format!("\n{gated} ")), "{gated}");
    }
}

/// libFuzzer grows inputs slowly from the largest seed: each target has a seed within its
/// limit and at least half as long, so that large inputs are fuzzed from the start.
#[test]
fn every_target_has_a_seed_near_its_limit() {
    for t in fuzz_checks::TARGETS {
        let largest = corpus_files(t.name)
            .iter()
            .map(|f| f.metadata().unwrap().len() as usize)
            .max()
            .unwrap_or(0);
        assert!(
            largest <= t.max_len && largest >= t.max_len / 2,
            "{}: largest seed {largest} bytes, limit {}",
            t.name,
            t.max_len
        );
    }
}

type Seed = (&'static str, String, Vec<u8>);

fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    transaction_seeds(&mut out);
    block_seeds(&mut out);
    merkle_seeds(&mut out);
    state_proof_seeds(&mut out);
    snapshot_seeds(&mut out);
    pseudonym_seeds(&mut out);
    committee_seeds(&mut out);
    file_store_seeds(&mut out);
    access_seeds(&mut out);
    chain_model_seeds(&mut out);
    limit_seeds(&mut out);
    research_seeds(&mut out);
    out
}

#[cfg(not(feature = "research-queries"))]
fn research_seeds(_: &mut Vec<Seed>) {
    panic!("write the seeds with every feature: the research seeds need `research-queries`");
}

/// Reports sharded to the fuzz checks' aggregators (a count, valid and out of range, and a
/// histogram), one at the limit, and aggregate shares (a count's, a histogram's, the longest).
#[cfg(feature = "research-queries")]
fn research_seeds(out: &mut Vec<Seed>) {
    use fuzz_checks::research::{params, QUERY, REPORT_MAX_LEN, SHARE_MAX_LEN};
    use medledger::access::{QueryKind, ReportNonce};
    use medledger::research::{
        shard, AggregateShare, Measurement, Report, SealedShare, MAX_OUTPUT_LEN,
        MAX_PUBLIC_SHARE_LEN, MAX_SHARE_LEN,
    };

    let count = params(QUERY, QueryKind::Count);
    for (name, has, nonce) in [("count-yes", true, 1u8), ("count-no", false, 2)] {
        let r = shard(
            &count,
            &Measurement::Count(has),
            ReportNonce::from_bytes([nonce; 16]),
        )
        .unwrap();
        out.push(("research_report", name.into(), r.encode()));
    }
    let histogram = params(QUERY, QueryKind::Histogram { buckets: 8 });
    let r = shard(
        &histogram,
        &Measurement::Bucket(5),
        ReportNonce::from_bytes([3; 16]),
    )
    .unwrap();
    out.push(("research_report", "histogram".into(), r.encode()));
    let longest = Report {
        query: QUERY,
        nonce: ReportNonce::from_bytes([4; 16]),
        public_share: vec![5; MAX_PUBLIC_SHARE_LEN].try_into().unwrap(),
        shares: [6u8, 7].map(|b| SealedShare {
            encapped: [b; 32],
            ciphertext: vec![b; MAX_SHARE_LEN].try_into().unwrap(),
        }),
    };
    let bytes = longest.encode();
    assert!(bytes.len() <= REPORT_MAX_LEN);
    out.push(("research_report", "longest".into(), bytes));

    let share = |index: u8, values: Vec<u128>| AggregateShare {
        query: QUERY,
        index,
        reports: 1_000,
        values: values.try_into().unwrap(),
    };
    out.push((
        "aggregate_share",
        "count".into(),
        share(0, vec![42]).encode(),
    ));
    out.push((
        "aggregate_share",
        "histogram".into(),
        share(1, (0..8).map(|i| i * 1_000).collect()).encode(),
    ));
    let bytes = share(0, vec![u128::MAX; MAX_OUTPUT_LEN]).encode();
    assert!(bytes.len() <= SHARE_MAX_LEN);
    out.push(("aggregate_share", "longest".into(), bytes));
}

fn chain_id() -> ChainId {
    ChainId::from_bytes([0x42; 32])
}

fn signed(seed: u8, nonce: u64) -> Transaction {
    Transaction::sign(
        &Keypair::from_seed(&[seed; 32]),
        chain_id(),
        nonce,
        Payload::Data {
            record: Digest::from_bytes([seed; 32]),
        },
    )
}

/// `tx` re-signed by the key of `Keypair::from_seed(seed)` with `R` the identity point and
/// `S = H(R ‖ A ‖ M)·a` (valid under the cofactorless equation, refused by strict checks).
fn identity_r(seed: [u8; 32], mut tx: Transaction) -> Transaction {
    let h = Sha512::digest(seed);
    let mut a = [0u8; 32];
    a.copy_from_slice(&h[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    let r = EdwardsPoint::identity().compress().to_bytes();
    let mut k = Sha512::new();
    k.update(r);
    k.update(tx.body.signer.to_bytes());
    k.update(tx.body.signing_message());
    let s = Scalar::from_hash(k) * Scalar::from_bytes_mod_order(a);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(s.as_bytes());
    tx.signature = Signature::from_bytes(sig);
    tx
}

fn transaction_seeds(out: &mut Vec<Seed>) {
    let t = "transaction";
    let valid = signed(1, 0);
    let bytes = valid.encode();
    out.push((t, "valid".into(), bytes.clone()));
    out.push((t, "valid-max-nonce".into(), signed(2, u64::MAX).encode()));
    out.push((t, "empty".into(), vec![]));
    out.push((t, "version-only".into(), vec![FORMAT_VERSION]));
    let mut v = bytes.clone();
    v[0] = 2;
    out.push((t, "bad-version".into(), v));
    out.push((t, "truncated".into(), bytes[..bytes.len() - 1].to_vec()));
    let mut v = bytes.clone();
    v.push(0);
    out.push((t, "trailing-byte".into(), v));
    // Nonce 0 (one byte after chain id and signer) written as the over-long varint 0x80 0x00.
    let mut v = bytes.clone();
    v.splice(65..66, [0x80, 0x00]);
    out.push((t, "overlong-varint".into(), v));
    // An unknown payload tag.
    let mut v = bytes.clone();
    v[66] = 0x7f;
    out.push((t, "unknown-payload".into(), v));
    // S + L: the same scalar, non-canonically encoded.
    let mut nc = valid.clone();
    let mut sig = nc.signature.to_bytes();
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (s, l) in sig[32..].iter_mut().zip(L) {
        let v = u16::from(*s) + u16::from(l) + carry;
        *s = v as u8;
        carry = v >> 8;
    }
    nc.signature = Signature::from_bytes(sig);
    out.push((t, "non-canonical-s".into(), nc.encode()));
    // The identity as signer, R the identity and S = 0: "valid" for any message if unchecked.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut weak = valid.clone();
    weak.body.signer = PublicKey::from_bytes(identity);
    let mut sig = [0u8; 64];
    sig[0] = 1;
    weak.signature = Signature::from_bytes(sig);
    out.push((t, "weak-key".into(), weak.encode()));
    out.push((
        t,
        "small-order-r".into(),
        identity_r([1; 32], valid).encode(),
    ));
}

fn header(height: u64, parent: BlockHash, txs: &[Transaction]) -> Header<PowSeal> {
    let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
    Header {
        version: HEADER_VERSION,
        height,
        parent,
        tx_root: merkle_root(&ids),
        tx_count: txs.len() as u32,
        state_root: StateRoot::from_bytes([3; 32]),
        timestamp: 1_750_000_600,
        seal: PowSeal {
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 7,
            extra_nonce: 1,
        },
    }
}

fn block_of(txs: Vec<Transaction>) -> Block<PowSeal> {
    Block {
        header: header(1, BlockHash::from_bytes([1; 32]), &txs),
        txs: txs.try_into().unwrap(),
    }
}

fn block_seeds(out: &mut Vec<Seed>) {
    let (h, b) = ("block_header", "block");
    // A real genesis and a real mined block.
    let mut chain = ChainBuilder::new("seed", ProofOfWork::regtest())
        .genesis_time(1_750_000_000)
        .build()
        .unwrap();
    let genesis = chain.block(&chain.genesis_hash()).unwrap().unwrap();
    out.push((h, "genesis".into(), codec::encode(&genesis.header)));
    out.push((b, "genesis".into(), genesis.encode()));
    let k = Keypair::from_seed(&[9; 32]);
    let txs = (0..3)
        .map(|n| {
            Transaction::sign(
                &k,
                chain.chain_id(),
                n,
                Payload::Data {
                    record: Digest::from_bytes([n as u8; 32]),
                },
            )
        })
        .collect();
    let mined = chain.mine(txs, 1_750_000_600).unwrap();
    out.push((h, "mined".into(), codec::encode(&mined.header)));
    out.push((b, "mined-3-txs".into(), mined.encode()));
    let mut max = mined.header.clone();
    max.height = u64::MAX;
    max.timestamp = u64::MAX;
    max.tx_count = u32::MAX;
    max.seal = PowSeal {
        bits: CompactTarget::from_consensus(u32::MAX),
        nonce: u32::MAX,
        extra_nonce: u64::MAX,
    };
    out.push((h, "max-fields".into(), codec::encode(&max)));
    let mut v = codec::encode(&mined.header);
    v.truncate(v.len() - 1);
    out.push((h, "truncated".into(), v));
    // Blocks that decode but fail their checks.
    let valid = signed(1, 0);
    out.push((b, "one-tx".into(), block_of(vec![valid.clone()]).encode()));
    out.push((
        b,
        "duplicate-tx".into(),
        block_of(vec![valid.clone(), valid.clone()]).encode(),
    ));
    out.push((
        b,
        "small-order-r-tx".into(),
        block_of(vec![signed(2, 0), identity_r([1; 32], valid.clone())]).encode(),
    ));
    let mut wrong_count = block_of(vec![valid.clone()]);
    wrong_count.header.tx_count = 2;
    out.push((b, "wrong-count".into(), wrong_count.encode()));
    // Transaction counts at and over the limit, claimed by a few bytes: refused as truncated
    // and as over the limit, without allocating for the claim.
    for (name, count, padding) in [
        ("count-at-limit", MAX_BLOCK_TXS, 0),
        ("count-over-limit", MAX_BLOCK_TXS + 1, 0),
        // More transactions claimed than the input holds, but no more than its length: a decoder
        // that reserves room for the claim up front allocates 40 times the input.
        ("count-4000-in-4k", 4000, 4000),
    ] {
        let mut v = codec::encode(&header(1, BlockHash::from_bytes([1; 32]), &[]));
        let mut n = count;
        while n >= 0x80 {
            v.push((n as u8) | 0x80);
            n >>= 7;
        }
        v.push(n as u8);
        v.extend(valid.encode().into_iter().skip(1));
        v.resize(v.len() + padding, 0);
        out.push((b, name.into(), v));
    }
}

fn ids(n: usize) -> Vec<TxId> {
    (0..n)
        .map(|i| TxId::from_bytes(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes()))
        .collect()
}

fn merkle_seeds(out: &mut Vec<Seed>) {
    let t = "merkle_proof";
    for (n, i) in [
        (1, 0),
        (32, 31),
        (33, 32),
        (100, 57),
        (1025, 1024),
        (3000, 0),
    ] {
        let p = MerkleProof::new(&ids(n), i).unwrap();
        out.push((t, format!("n{n}-i{i}"), codec::encode(&p)));
    }
    // Seventeen siblings: one over the limit.
    let mut v = vec![FORMAT_VERSION, 0, 1, 0];
    v.push(17);
    v.extend([0u8; 17 * 32]);
    out.push((t, "siblings-over-limit".into(), v));
    // Index past the count.
    let mut p = MerkleProof::new(&ids(5), 2).unwrap();
    p.index = 9;
    out.push((t, "index-past-count".into(), codec::encode(&p)));
    let _ = MerkleRoot::default();
}

fn snapshot_seeds(out: &mut Vec<Seed>) {
    use medledger::codec::Canonical;
    use medledger::state::snapshot::{SnapshotChunk, MAX_CHUNK_BYTES, MAX_ENTRY_VALUE_BYTES};
    let t = "snapshot_chunk";
    let (chain, _, _) = fuzz_checks::access::setup();
    for (max, name) in [(4096, "whole"), (4, "small")] {
        for (i, chunk) in chain.snapshot(max).unwrap().iter().take(4).enumerate() {
            out.push((t, format!("setup-{name}-{i}"), chunk.encode()));
        }
    }
    // Near the size limit: large values (the proof fails, the decoder is what is fuzzed).
    fn varint(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut big = vec![FORMAT_VERSION];
    big.extend_from_slice(chain.tip_header().state_root.as_bytes());
    varint(chain.height() as usize, &mut big);
    big.extend_from_slice(&[0; 32]);
    big.push(0);
    let entries = MAX_CHUNK_BYTES / MAX_ENTRY_VALUE_BYTES - 1;
    varint(entries, &mut big);
    for i in 0..entries {
        let tag = b"access.pointers";
        varint(tag.len(), &mut big);
        big.extend_from_slice(tag);
        varint(32, &mut big);
        big.extend_from_slice(&[i as u8; 32]);
        varint(MAX_ENTRY_VALUE_BYTES, &mut big);
        big.extend(std::iter::repeat_n(i as u8, MAX_ENTRY_VALUE_BYTES));
    }
    assert!(big.len() <= SnapshotChunk::MAX_ENCODED_LEN && big.len() >= MAX_CHUNK_BYTES / 2);
    SnapshotChunk::decode(&big).expect("the large seed is a chunk");
    out.push((t, "large-values".into(), big));
}

fn state_proof_seeds(out: &mut Vec<Seed>) {
    let t = "state_proof";
    let key = |i: u8| StateKey::from_bytes(*blake3::hash(&[i]).as_bytes());
    let tree: StateTree = (0..50u8)
        .map(|i| (key(i), Digest::from_bytes([i; 32])))
        .collect();
    out.push((t, "inclusion".into(), codec::encode(&tree.prove(&key(7)))));
    out.push((
        t,
        "non-inclusion".into(),
        codec::encode(&tree.prove(&key(200))),
    ));
    out.push((
        t,
        "empty-tree".into(),
        codec::encode(&StateTree::new().prove(&key(1))),
    ));
    // Two keys that differ only in their last bit: a proof as deep as a path goes.
    let (mut a, mut b) = ([0x55u8; 32], [0x55u8; 32]);
    a[31] = 0x54;
    b[31] = 0x55;
    let deep: StateTree = [
        (StateKey::from_bytes(a), Digest::from_bytes([1; 32])),
        (StateKey::from_bytes(b), Digest::from_bytes([2; 32])),
    ]
    .into_iter()
    .collect();
    let p = deep.prove(&StateKey::from_bytes(a));
    assert_eq!(p.siblings().len(), MAX_PROOF_DEPTH);
    out.push((t, "deepest".into(), codec::encode(&p)));
    // The longest encoding: a leaf and 256 siblings (exactly the limit).
    let mut v = vec![FORMAT_VERSION, 1];
    v.extend([0x11; 64]);
    v.extend([0x80, 0x02]);
    v.extend(vec![0x22; MAX_PROOF_DEPTH * 32]);
    out.push((t, "max-length".into(), v));
}

fn pseudonym_seeds(out: &mut Vec<Seed>) {
    let t = "pseudonym_context";
    for (e, p) in [(0, 0usize), (1, 5), (24, 15), (u64::MAX, 3)] {
        let c = Context::new(
            Epoch::new(e),
            PurposeOfUse::ALL[p],
            Recipient::group("study"),
        );
        out.push((t, format!("epoch{e}-purpose{p}"), c.encode()));
    }
    // Purpose index 16: one past the last purpose.
    let mut v = Context::new(
        Epoch::new(1),
        PurposeOfUse::Treatment,
        Recipient::group("x"),
    )
    .encode();
    v[2] = 16;
    out.push((t, "purpose-out-of-range".into(), v));

    let t = "link_statement";
    let tree = PatientSecret::from_bytes([5; 32]).key_tree();
    let ctx = |e: u64, label: &str| {
        Context::new(
            Epoch::new(e),
            PurposeOfUse::Research,
            Recipient::group(label),
        )
    };
    let (ca, cb) = (ctx(1, "a"), ctx(2, "b"));
    let ka = tree.epoch_key(ca.epoch).unwrap().signing_key(&ca).unwrap();
    let kb = tree.epoch_key(cb.epoch).unwrap().signing_key(&cb).unwrap();
    let st = LinkStatement::sign(&ka, &kb, ctx(2, "verifier")).unwrap();
    let bytes = codec::encode(&st);
    out.push((t, "valid".into(), bytes.clone()));
    let mut v = bytes.clone();
    let last = v.len() - 1;
    v[last] ^= 1;
    out.push((t, "bad-signature".into(), v));
    // b := a (a self-link).
    let mut v = bytes;
    let a: Vec<u8> = v[1..33].to_vec();
    v[33..65].copy_from_slice(&a);
    out.push((t, "self-link".into(), v));
}

fn chain_model_seeds(out: &mut Vec<Seed>) {
    const TIP: u8 = 0;
    let on = |i: u8| 128 + i;
    let ext = |pick: u8, dt: u8, txs: &[(u8, u8)]| Op::Extend {
        pick,
        dt,
        txs: txs.to_vec(),
    };
    let t = "chain_model";
    let mut add = |name: &str, reorg_byte: u8, ops: Vec<Op>| {
        let bytes = chain_model::encode(reorg_byte, &ops);
        assert_eq!(chain_model::decode(&bytes).1, ops, "{name} round-trips");
        out.push((t, name.to_string(), bytes));
    };
    add(
        "grow",
        3,
        vec![
            ext(TIP, 60, &[(0, 1), (1, 1)]),
            ext(TIP, 60, &[(0, 1), (0, 1), (2, 1)]),
            ext(TIP, 60, &[(0, 0), (1, 2), (3, 1)]),
            Op::Template {
                txs: vec![(0, 1), (0, 1), (1, 0), (2, 3)],
            },
            ext(TIP, 60, &[]),
            Op::Replay,
        ],
    );
    // Index: g a1 a2 a3 | b2(on a1) b3 b4 → reorg | a4(on a3) a5 → reorg back.
    add(
        "fork-and-reorg",
        5,
        vec![
            ext(TIP, 60, &[(0, 1)]),
            ext(TIP, 60, &[(0, 1)]),
            ext(TIP, 60, &[(0, 1)]),
            ext(on(1), 7, &[(1, 1)]),
            ext(on(4), 60, &[(1, 1), (0, 1)]),
            ext(on(5), 60, &[(1, 1)]),
            ext(on(3), 61, &[(2, 1)]),
            ext(on(7), 61, &[(2, 1)]),
            Op::Replay,
            Op::Reopen,
            Op::Replay,
            Op::Reappend { pick: 3 },
            Op::Template {
                txs: vec![(1, 1), (2, 1)],
            },
        ],
    );
    // An invalid block on a side branch, two sub-branches on it; the heavier one fails on it,
    // and the other sub-branch must be forgotten with it. Then the same after a reopen.
    add(
        "invalid-branch",
        5,
        vec![
            ext(TIP, 60, &[(0, 1)]),
            ext(TIP, 60, &[(0, 1)]),
            ext(TIP, 60, &[(0, 1)]),
            Op::Tamper {
                pick: on(0),
                kind: 0,
                dt: 1,
            },
            ext(on(4), 2, &[]),
            ext(on(4), 3, &[]),
            ext(on(5), 4, &[]),
            ext(on(7), 5, &[]),
            Op::Reappend { pick: 5 },
            Op::Reopen,
            ext(on(6), 6, &[]),
            ext(on(8), 7, &[]),
            Op::Replay,
        ],
    );
    // Limit 1: a rival branch from genesis is refused when it would roll back three blocks;
    // a one-block reorganisation is fine.
    add(
        "reorg-too-deep",
        0,
        vec![
            ext(TIP, 60, &[(0, 1)]),
            ext(TIP, 60, &[(0, 1)]),
            ext(TIP, 60, &[(0, 1)]),
            ext(on(0), 9, &[(1, 1)]),
            ext(on(4), 9, &[(1, 1)]),
            ext(on(5), 9, &[(1, 1)]),
            ext(on(6), 9, &[(1, 1)]),
            ext(on(2), 8, &[(2, 1)]),
            ext(on(7), 8, &[(2, 1)]),
            Op::Reopen,
            Op::Replay,
        ],
    );
    let mut sweep = vec![ext(TIP, 60, &[(0, 1)])];
    for kind in 0..chain_model::TAMPER_KINDS {
        sweep.push(Op::Tamper {
            pick: TIP,
            kind,
            dt: kind,
        });
    }
    for kind in 0..chain_model::TAMPER_KINDS {
        sweep.push(Op::Tamper {
            pick: on(0),
            kind,
            dt: kind,
        });
    }
    sweep.extend([
        ext(TIP, 60, &[(1, 1)]),
        Op::Reappend { pick: 0 },
        Op::Reappend { pick: 1 },
        Op::Reappend { pick: 13 },
        Op::Reopen,
        Op::Replay,
    ]);
    add("tamper-sweep", 2, sweep);
    add(
        "garbage",
        1,
        vec![
            Op::Bytes(vec![]),
            Op::Bytes(vec![FORMAT_VERSION]),
            Op::Bytes(vec![FORMAT_VERSION, 1, 0, 0]),
            Op::Bytes(vec![0xff; 200]),
            ext(TIP, 1, &[(3, 1)]),
        ],
    );
}

#[cfg(not(feature = "lab"))]
fn committee_seeds(_: &mut Vec<Seed>) {
    panic!("the committee seeds are produced by the simulator: run with the `lab` feature");
}

#[cfg(feature = "lab")]
fn committee_seeds(out: &mut Vec<Seed>) {
    use fuzz_checks::committee::SIM_SEED;
    use medledger::committee::{
        CommitteeAssignment, FinalValue, Message, NextEpoch, Phase, Pol, Precommits, Proposal,
        RoundChange, ShardBatch, ShardCertified, ShardRequest, ShardResult, ShardValue, Stage,
        Value, Vote, MAX_COMMITTEE_SIZE,
    };
    use medledger::sim::{SimConfig, Simulation};

    let sim = Simulation::new(
        SimConfig::builder()
            .committees(2)
            .committee_size(4)
            .nodes(14)
            .block_size(6)
            .blocks(3)
            .seed(SIM_SEED)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        sim.params(),
        &fuzz_checks::committee::params(),
        "the check's parameters are the sim's"
    );
    let (report, chain) = sim.run_to_chain();
    assert_eq!(report.blocks, 3);
    let fresh = fuzz_checks::committee::fresh_chain();
    assert_eq!(
        fresh.genesis_hash(),
        chain.genesis_hash(),
        "the check's chain is the sim's"
    );
    let blocks: Vec<_> = (1..=chain.height())
        .map(|h| chain.block(&chain.hash_at(h).unwrap()).unwrap().unwrap())
        .collect();

    let mut fresh = fresh;
    fresh
        .append(blocks[0].clone())
        .expect("block 1 seed is valid on the check's chain");
    let t = "committee_block";
    for (i, b) in blocks.iter().enumerate() {
        out.push((t, format!("block{}", i + 1), b.encode()));
    }
    let b1 = &blocks[0];
    out.push((t, "header1".into(), codec::encode(&b1.header)));
    out.push((t, "seal1".into(), codec::encode(&b1.header.seal)));
    let genesis = chain.block(&chain.genesis_hash()).unwrap().unwrap();
    out.push((t, "genesis".into(), genesis.encode()));

    let t = "committee_message";
    let seal = &b1.header.seal;
    let (height, parent) = (b1.header.height, b1.header.parent);
    let final_value = FinalValue::of_header(&b1.header);
    let sigs = seal.cert.signatures.clone();
    let pol = Pol {
        round: 0,
        signatures: sigs.clone(),
    };
    let shard_txs = seal
        .shards
        .first()
        .map_or(0, |s| s.summary.tx_count as usize);
    let msgs = vec![
        (
            "identity",
            Message::Identity {
                height,
                proof: seal.cert.members[0],
            },
        ),
        (
            "membership",
            Message::Assignment(CommitteeAssignment {
                height,
                parent,
                cert: seal.directory.clone(),
                committee: Some(0),
                members: seal.cert.members.clone(),
                final_members: seal.cert.members.clone(),
                reveal: seal.reveals.first().copied(),
            }),
        ),
        (
            "proposal-final",
            Message::Proposal(Proposal {
                height,
                parent,
                stage: Stage::Final,
                round: 1,
                value: Value::Final(Box::new(final_value.clone())),
                pol: Some(pol.clone()),
                signature: sigs[0].signature,
            }),
        ),
        (
            "proposal-shard",
            Message::Proposal(Proposal {
                height,
                parent,
                stage: Stage::Shard(0),
                round: 0,
                value: Value::Shard(ShardValue {
                    txs: b1.txs[..shard_txs].to_vec().try_into().unwrap(),
                }),
                pol: None,
                signature: sigs[1].signature,
            }),
        ),
        (
            "vote",
            Message::Vote(Vote {
                height,
                parent,
                stage: Stage::Final,
                round: 0,
                phase: Phase::Precommit,
                value: final_value.digest(),
                member: sigs[0].member,
                signature: sigs[0].signature,
                proposal: None,
            }),
        ),
        (
            "round-change",
            Message::RoundChange(RoundChange {
                height,
                parent,
                stage: Stage::Shard(1),
                round: 2,
                pol: Some((final_value.digest(), pol.clone())),
                value: None,
            }),
        ),
        (
            "precommits",
            Message::Precommits(Precommits {
                height,
                parent,
                stage: Stage::Final,
                round: 0,
                value: final_value.digest(),
                signatures: sigs.clone(),
            }),
        ),
        (
            "shard-result",
            Message::ShardResult(ShardResult {
                height,
                parent,
                cert: seal.shards[0].clone(),
                txs: b1.txs[..shard_txs].to_vec().try_into().unwrap(),
            }),
        ),
        (
            "shard-batch",
            Message::ShardBatch(ShardBatch {
                height,
                parent,
                shard: seal.shards[0].summary.shard,
                txs: b1.txs[..shard_txs].to_vec().try_into().unwrap(),
            }),
        ),
        (
            "shard-certified",
            Message::ShardCertified(ShardCertified {
                height,
                parent,
                cert: seal.shards[0].clone(),
            }),
        ),
        (
            "shard-request",
            Message::ShardRequest(ShardRequest {
                height,
                parent,
                shards: vec![seal.shards[0].summary.shard].try_into().unwrap(),
            }),
        ),
        (
            "commitment",
            Message::Commitment {
                height,
                value: seal.commitments[0].value,
            },
        ),
        (
            "next",
            Message::Next(NextEpoch {
                header: b1.header.clone(),
            }),
        ),
    ];
    for (name, m) in msgs {
        out.push((t, name.into(), codec::encode(&m)));
    }
    // A member list one over the committee limit, with the bytes to hold it.
    let mut v = vec![FORMAT_VERSION, 1]; // Message::Assignment
    v.push(1); // height
    v.extend([0u8; 32]); // randomness
    v.push(0); // committee: None
    let mut n = MAX_COMMITTEE_SIZE + 1;
    while n >= 0x80 {
        v.push((n as u8) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
    v.resize(v.len() + (MAX_COMMITTEE_SIZE + 1) * 33, 0);
    out.push((t, "members-over-limit".into(), v));
}

fn file_store_seeds(out: &mut Vec<Seed>) {
    use fuzz_checks::file_store::{engine, MemDisk, CHAIN_NAME, GENESIS_TIME};
    use medledger::file_store::FileStore;

    let t = "file_store";
    let disk = MemDisk::default();
    let mut chain = ChainBuilder::new(CHAIN_NAME, engine())
        .genesis_time(GENESIS_TIME)
        .store(FileStore::builder().create_disk(disk.clone()).unwrap())
        .build()
        .unwrap();
    out.push((t, "genesis-only".into(), disk.bytes()));
    let k = Keypair::from_seed(&[3; 32]);
    let mut side = None;
    for i in 0..3u64 {
        let tx = Transaction::sign(
            &k,
            chain.chain_id(),
            i,
            Payload::Data {
                record: Digest::from_bytes([i as u8; 32]),
            },
        );
        let b = chain.mine(vec![tx], GENESIS_TIME + 600 * (i + 1)).unwrap();
        if i == 1 {
            // A rival of block 2 on block 1 (same height): a side branch.
            let mut rival = b.clone();
            rival.header.timestamp += 1;
            let never = std::sync::atomic::AtomicBool::new(false);
            rival.header.seal = chain.engine().solve(rival.header.clone(), &never).unwrap();
            side = Some(rival);
        }
        chain.append(b).unwrap();
    }
    chain.append(side.unwrap()).unwrap();
    drop(chain);
    let full = disk.bytes();
    out.push((t, "three-blocks-and-a-fork".into(), full.clone()));
    // A torn tail: a record cut short after the acknowledged length.
    let mut v = full.clone();
    v.extend_from_slice(b"\xa5rec\x40\x00\x00\x00\x00");
    out.push((t, "torn-tail".into(), v));
    // A damaged byte in the middle of durable data.
    let mut v = full.clone();
    let mid = v.len() / 2;
    v[mid] ^= 0x40;
    out.push((t, "damaged-middle".into(), v));
    out.push((t, "empty".into(), vec![]));
    out.push((t, "header-only".into(), full[..32].to_vec()));
    out.push((t, "partial-header".into(), full[..11].to_vec()));
    // Cut short of what its anchors acknowledged.
    out.push((t, "cut-short".into(), full[..full.len() - 7].to_vec()));
    // A new store: its header and first anchor.
    let fresh = MemDisk::default();
    drop(FileStore::builder().create_disk(fresh.clone()).unwrap());
    out.push((t, "new-store".into(), fresh.bytes()));
    for version in [1, 3] {
        let mut v = full.clone();
        v[8] = version;
        out.push((t, format!("version-{version}"), v));
    }
    out.push((t, "not-a-store".into(), b"just some text\n".to_vec()));
}

fn access_seeds(out: &mut Vec<Seed>) {
    use fuzz_checks::access::{genesis, keys, setup, setup_txs};
    use medledger::access::{AccessOp, GrantProof, RelationshipId};

    let (chain, _, grant) = setup();
    let [authority, hospital, doctor, patient] = keys();
    // Each setup operation (its actor picked by the nonce: 0 authority, 1 hospital, 2 doctor,
    // 3 patient), and operations that act on the setup's state.
    let (txs, _, _) = setup_txs(&genesis());
    let actor = [0u64, 1, 2, 3, 1, 1, 3, 3];
    let as_op = |nonce: u64, op: AccessOp| {
        Transaction::sign(&authority, chain.chain_id(), nonce, Payload::Access(op)).encode()
    };
    let t = "access_op";
    for (i, tx) in txs.iter().enumerate() {
        let Payload::Access(op) = tx.body.payload.clone() else {
            unreachable!()
        };
        out.push((t, format!("setup-{i}"), as_op(actor[i], op)));
    }
    let rel = RelationshipId::of(patient.account(), hospital.account());
    let reason = || "no longer needed".try_into().unwrap();
    let more = vec![
        (
            "revoke-grant",
            3,
            AccessOp::RevokeGrant {
                grant,
                reason: reason(),
            },
        ),
        (
            "terminate-relationship",
            3,
            AccessOp::TerminateRelationship {
                relationship: rel,
                reason: reason(),
            },
        ),
        (
            "decertify",
            0,
            AccessOp::DecertifyProvider {
                provider: hospital.account(),
                reason: reason(),
            },
        ),
        (
            "create-group",
            3,
            AccessOp::CreateGroup {
                label: "care team".try_into().unwrap(),
            },
        ),
        (
            "open-break-glass",
            1,
            AccessOp::OpenBreakGlass {
                patient: patient.account(),
                reason: reason(),
                duration_secs: 3_600,
            },
        ),
        (
            "relationship-with-doctor",
            2,
            AccessOp::CreateRelationship {
                patient: patient.account(),
            },
        ),
    ];
    for (name, nonce, op) in more {
        out.push((t, name.into(), as_op(nonce, op)));
    }
    let _ = doctor;

    let t = "grant_proof";
    let proof: GrantProof = chain.prove_grant(&grant, chain.height()).unwrap();
    let root = chain.state().root();
    assert!(proof
        .verify(&root, &grant, fuzz_checks::access::OP_TIME)
        .unwrap()
        .is_active());
    out.push((t, "active".into(), proof.encode()));
    let before = chain.prove_grant(&grant, 0);
    if let Some(p) = before {
        out.push((t, "before-the-grant".into(), p.encode()));
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds at the limits: the longest inputs each decoder reads, so that fuzzing mutates large
// inputs from the start. Transactions in the largest bodies carry zero signatures: a large
// body is then refused quickly (at its root, or at the first transaction of each batch chunk),
// however the fuzzer mutates it.

/// `n` transactions of one signer with zero signatures.
fn unsigned_txs(n: usize) -> Vec<Transaction> {
    let signer = Keypair::from_seed(&[4; 32]).public();
    (0..n as u64)
        .map(|nonce| Transaction {
            body: medledger::tx::TxBody {
                chain_id: chain_id(),
                signer,
                nonce,
                payload: Payload::Data {
                    record: Digest::from_bytes([4; 32]),
                },
            },
            signature: Signature::from_bytes([0; 64]),
        })
        .collect()
}

/// `bytes` padded with zeros to `len`: parsed, then refused for its trailing bytes.
fn padded(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(bytes.len() <= len);
    bytes.resize(len, 0);
    bytes
}

fn limit_seeds(out: &mut Vec<Seed>) {
    use medledger::access::{
        AccessOp, ConsentCommitment, GrantProof, ReleasedSubject, MAX_RELEASE_SUBJECTS,
    };
    use medledger::block::MAX_HEADER_LEN;
    use medledger::codec::Canonical;
    use medledger::committee::{Message, ShardResult, MAX_SHARD_TXS};
    use medledger::pseudonym::Pseudonym;
    use medledger::tx::MAX_TX_LEN;

    // The largest access operation: a research release of the most subjects.
    let subjects: Vec<ReleasedSubject> = (0..MAX_RELEASE_SUBJECTS as u8)
        .map(|i| ReleasedSubject {
            pseudonym: Pseudonym::from_bytes([i; 32]),
            consent: ConsentCommitment::from_bytes([!i; 32]),
        })
        .collect();
    let release = Transaction::sign(
        &Keypair::from_seed(&[5; 32]),
        chain_id(),
        1,
        Payload::Access(AccessOp::ReleaseResearchData {
            recipient: Keypair::from_seed(&[6; 32]).account(),
            epoch: Epoch::new(3),
            dataset: Digest::from_bytes([7; 32]),
            subjects: subjects.try_into().unwrap(),
        }),
    )
    .encode();
    assert!(release.len() <= MAX_TX_LEN);
    out.push(("transaction", "largest-access-op".into(), release.clone()));
    out.push(("access_op", "largest-access-op".into(), release));
    out.push((
        "transaction",
        "at-limit".into(),
        padded(signed(1, 0).encode(), MAX_TX_LEN),
    ));

    // Headers and blocks.
    let mut chain = ChainBuilder::new("seed", ProofOfWork::regtest())
        .genesis_time(1_750_000_000)
        .build()
        .unwrap();
    let mined = chain.mine(vec![], 1_750_000_600).unwrap();
    out.push((
        "block_header",
        "at-limit".into(),
        padded(codec::encode(&mined.header), MAX_HEADER_LEN),
    ));
    let txs = unsigned_txs(MAX_BLOCK_TXS);
    let block = block_of(txs.clone());
    let bytes = block.encode();
    assert!(bytes.len() <= medledger::block::MAX_BLOCK_LEN);
    out.push(("block", "most-txs".into(), bytes));

    // Proofs and pseudonym types at their longest.
    let mut v = vec![FORMAT_VERSION];
    for n in [
        u32::MAX as usize,
        u32::MAX as usize,
        medledger::merkle::IDS_PER_CHUNK,
    ] {
        varint(n, &mut v);
    }
    v.extend(vec![7u8; medledger::merkle::IDS_PER_CHUNK * 32]);
    varint(medledger::merkle::MAX_PROOF_DEPTH, &mut v);
    v.extend(vec![9u8; medledger::merkle::MAX_PROOF_DEPTH * 32]);
    assert_eq!(v.len(), MerkleProof::MAX_ENCODED_LEN);
    out.push(("merkle_proof", "longest".into(), v));
    let longest = |label: &str| {
        Context::new(
            Epoch::MAX,
            *PurposeOfUse::ALL.last().unwrap(),
            Recipient::group(label),
        )
    };
    out.push((
        "pseudonym_context",
        "longest".into(),
        longest("any").encode(),
    ));
    let tree = PatientSecret::from_bytes([2; 32]).key_tree();
    let (ca, cb) = (longest("a"), longest("b"));
    let ka = tree.epoch_key(ca.epoch).unwrap().signing_key(&ca).unwrap();
    let kb = tree.epoch_key(cb.epoch).unwrap().signing_key(&cb).unwrap();
    let st = LinkStatement::sign(&ka, &kb, longest("verifier")).unwrap();
    out.push(("link_statement", "longest".into(), codec::encode(&st)));

    // Committee messages and blocks: a shard of the most transactions, and block 1 of the seeds'
    // network carrying the most transactions a block holds (its seal then fails).
    let fresh = fuzz_checks::committee::fresh_chain();
    let block1 = out
        .iter()
        .find(|(t, name, _)| *t == "committee_block" && name == "block1")
        .map(|(_, _, bytes)| bytes.clone())
        .expect("the committee seeds are made first");
    let b1 = Block::<medledger::committee::CommitteeSeal>::decode(&block1)
        .expect("the committee seeds decode");
    assert_eq!(b1.header.parent, fresh.genesis_hash());
    let shard = Message::ShardResult(ShardResult {
        height: b1.header.height,
        parent: b1.header.parent,
        cert: b1.header.seal.shards[0].clone(),
        txs: txs[..MAX_SHARD_TXS].to_vec().try_into().unwrap(),
    });
    out.push((
        "committee_message",
        "shard-of-most-txs".into(),
        codec::encode(&shard),
    ));
    let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
    let mut big = b1;
    big.header.tx_root = merkle_root(&ids);
    big.header.tx_count = txs.len() as u32;
    big.txs = txs.try_into().unwrap();
    out.push(("committee_block", "most-txs".into(), big.encode()));

    // A store holding the seeds' genesis and a record of nearly the largest length.
    {
        use fuzz_checks::file_store::{engine, MemDisk, CHAIN_NAME, GENESIS_TIME};
        use medledger::file_store::FileStore;
        let disk = MemDisk::default();
        let chain = ChainBuilder::new(CHAIN_NAME, engine())
            .genesis_time(GENESIS_TIME)
            .store(FileStore::builder().create_disk(disk.clone()).unwrap())
            .build()
            .unwrap();
        let mut store = chain.into_store();
        let len = medledger::block::MAX_BLOCK_LEN - 4096;
        let hash = BlockHash::from_bytes([0x5a; 32]);
        store.put_block(&hash, &vec![0x5a; len]).unwrap();
        drop(store);
        let bytes = disk.bytes();
        assert!(bytes.len() <= fuzz_checks::file_store::MAX_FILE_LEN);
        out.push(("file_store", "largest-record".into(), bytes));
    }

    // Grant proofs, padded to their limit.
    let (chain, _, grant) = fuzz_checks::access::setup();
    let proof: GrantProof = chain.prove_grant(&grant, chain.height()).unwrap();
    out.push((
        "grant_proof",
        "at-limit".into(),
        padded(proof.encode(), GrantProof::MAX_ENCODED_LEN),
    ));

    // The longest scenario: every operation garbage bytes of the longest length (the start of
    // a real block, cut short).
    let start = mined.encode();
    let ops: Vec<Op> = (0..chain_model::MAX_OPS)
        .map(|i| {
            let mut b = start.clone();
            b.resize(255, i as u8);
            Op::Bytes(b)
        })
        .collect();
    let bytes = chain_model::encode(1, &ops);
    assert_eq!(bytes.len(), chain_model::MAX_SCENARIO_LEN);
    out.push(("chain_model", "longest".into(), bytes));
}

/// A canonical varint.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
