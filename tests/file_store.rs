//! The chain's integration suite on `FileStore`, and the file store's user stories on real
//! files: a reopened chain resumes (same tip, same state root), a second writer is locked out,
//! damage and newer formats are refused with clear errors.

#[path = "chain.rs"]
mod chain_suite;

// The included chain suite brings the shared Proof-of-Work setup.
use chain_suite::pow_setup::engine;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use medledger::file_store::{FileStore, FileStoreError, SyncPolicy, MAX_RECORD_LEN};
use medledger::hash::Digest;
use medledger::pow::ProofOfWork;
use medledger::store::Store;
use medledger::tx::Keypair;
use medledger::{Chain, ChainBuilder};
use medledger::{Payload, Transaction};

/// The store the included chain suite runs on: a fresh file per chain, with group commit (the
/// chain syncs after every block).
fn store_under_test() -> Box<dyn Store> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("file_store_suite")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.mlg", NEXT.fetch_add(1, Ordering::Relaxed)));
    let store = FileStore::builder()
        .sync_policy(SyncPolicy::Group {
            max_records: 64,
            max_delay: Duration::from_millis(50),
        })
        .open(&path)
        .unwrap();
    // The open file keeps its data where unlinking open files is allowed (Unix); elsewhere the
    // file stays in the target directory.
    let _ = std::fs::remove_file(&path);
    Box::new(store)
}

const T0: u64 = 1_750_000_000;

fn build(store: FileStore) -> Chain<ProofOfWork> {
    ChainBuilder::new("file-chain", engine())
        .genesis_time(T0)
        .store(store)
        .build()
        .unwrap()
}

fn mine_blocks(chain: &mut Chain<ProofOfWork>, key: &Keypair, n: u64) {
    for _ in 0..n {
        let nonce = chain.state().next_nonce(&key.account());
        let tx = Transaction::sign(
            key,
            chain.chain_id(),
            nonce,
            Payload::Data {
                record: Digest::from_bytes([nonce as u8; 32]),
            },
        );
        let time = chain.tip_header().timestamp + 600;
        let block = chain.mine(vec![tx], time).unwrap();
        chain.append(block).unwrap();
    }
}

#[test]
fn reopened_chain_resumes_with_the_same_tip_and_state_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.mlg");
    let alice = Keypair::from_seed(&[1; 32]);
    for (policy, run) in [
        (SyncPolicy::EveryAppend, 0),
        (
            SyncPolicy::Group {
                max_records: 16,
                max_delay: Duration::from_secs(1),
            },
            1,
        ),
        (SyncPolicy::EveryAppend, 2),
    ] {
        let store = FileStore::builder()
            .sync_policy(policy)
            .open(&path)
            .unwrap();
        assert_eq!(store.recovery().created, run == 0);
        assert_eq!(store.recovery().truncated_bytes, 0);
        let mut chain = build(store);
        assert_eq!(chain.height(), 3 * run);
        mine_blocks(&mut chain, &alice, 3);
        let (tip, root) = (chain.tip(), chain.state().root());
        drop(chain);

        let chain = build(FileStore::open(&path).unwrap());
        assert_eq!(chain.height(), 3 * (run + 1));
        assert_eq!(chain.tip(), tip);
        assert_eq!(chain.state().root(), root);
        assert_eq!(chain.replay_state().unwrap().root(), root);
    }
}

#[test]
fn a_new_file_is_created_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.mlg");
    let store = FileStore::open(&path).unwrap();
    assert!(store.recovery().created);
    drop(store);
    // Header and first anchor in place, no temporary file left behind.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 96);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let store = FileStore::open(&path).unwrap();
    assert!(!store.recovery().created);
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.mlg");
    let first = FileStore::open(&path).unwrap();
    let err = FileStore::open(&path).unwrap_err();
    assert!(matches!(err, FileStoreError::Locked), "{err}");
    assert_eq!(err.to_string(), "file store is locked by another writer");
    drop(first);
    FileStore::open(&path).unwrap();
}

#[test]
fn damage_and_newer_formats_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.mlg");
    let alice = Keypair::from_seed(&[1; 32]);
    let mut chain = build(FileStore::open(&path).unwrap());
    mine_blocks(&mut chain, &alice, 2);
    drop(chain);
    let good = std::fs::read(&path).unwrap();

    // A flipped bit in the genesis block's record (the first record, at offset 96, after the
    // header and the two anchors).
    let mut bytes = good.clone();
    bytes[96 + 32 + 40] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = FileStore::open(&path).unwrap_err();
    assert!(
        matches!(err, FileStoreError::CorruptRecord { offset: 96, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "file store record at offset 96 is corrupt: checksum mismatch"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "left for the operator"
    );

    // A file from a newer format version.
    let mut bytes = good.clone();
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = FileStore::open(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "file store format version 3 is not supported (this build reads version 2)"
    );

    // Not a store at all.
    std::fs::write(&path, b"PRAGMA: someone else's file").unwrap();
    assert!(matches!(
        FileStore::open(&path),
        Err(FileStoreError::NotAStore)
    ));

    // A file cut short after it was closed has lost acknowledged blocks: refused, naming both
    // lengths, and left as it is. Emptied, it is not taken for a new store either.
    let cut = &good[..good.len() - 7];
    std::fs::write(&path, cut).unwrap();
    let err = FileStore::open(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "file store is cut short: it holds {} bytes, but {} bytes were acknowledged as durable",
            cut.len(),
            good.len()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), cut, "left for the operator");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        FileStore::open(&path),
        Err(FileStoreError::CorruptHeader(_))
    ));

    // A torn tail past the acknowledged length (a record cut short by a crash) is truncated,
    // and the chain resumes at its last block.
    let mut torn = good.clone();
    torn.extend_from_slice(b"\xa5rec\x09\x00\x00");
    std::fs::write(&path, &torn).unwrap();
    let store = FileStore::open(&path).unwrap();
    assert_eq!(store.recovery().truncated_bytes, 7);
    let chain = build(store);
    assert_eq!(chain.height(), 2);
    assert_eq!(chain.replay_state().unwrap().root(), chain.state().root());
    const { assert!(MAX_RECORD_LEN > medledger::block::MAX_BLOCK_LEN) };
}
