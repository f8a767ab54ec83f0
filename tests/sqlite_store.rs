//! The chain's integration suite on a SQLite store (`tests/support/sqlite_store.rs`), and the
//! SQLite store's own durability: a reopened database resumes the chain, beside the
//! application's own tables.

#[path = "support/sqlite_store.rs"]
mod sqlite_store;

#[path = "chain.rs"]
mod chain_suite;

// The included chain suite brings the shared Proof-of-Work setup.
use chain_suite::pow_setup::engine;

use medledger::hash::Digest;
use medledger::store::Store;
use medledger::tx::Keypair;
use medledger::ChainBuilder;
use medledger::{Payload, Transaction};
use sqlite_store::SqliteStore;

/// The store the included chain suite runs on.
fn store_under_test() -> Box<dyn Store> {
    Box::new(SqliteStore::open_in_memory().expect("in-memory database"))
}

const T0: u64 = 1_750_000_000;

#[test]
fn reopened_database_resumes_beside_the_applications_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emr.sqlite");
    // The vendor's own schema and data, already there.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO patients (name) VALUES ('A. Patient');",
        )
        .unwrap();
    }
    let alice = Keypair::from_seed(&[1; 32]);
    let build = |store: SqliteStore| {
        ChainBuilder::new("emr", engine())
            .genesis_time(T0)
            .store(store)
            .build()
            .unwrap()
    };
    let mut chain = build(SqliteStore::open(&path).unwrap());
    for i in 0..4u8 {
        let tx = Transaction::sign(
            &alice,
            chain.chain_id(),
            u64::from(i),
            Payload::Data {
                record: Digest::from_bytes([i; 32]),
            },
        );
        let block = chain.mine(vec![tx], T0 + 600 * (u64::from(i) + 1)).unwrap();
        chain.append(block).unwrap();
    }
    let (tip, root) = (chain.tip(), chain.state().root());
    drop(chain);

    let store = SqliteStore::open(&path).unwrap();
    let patients: i64 = store
        .connection()
        .query_row("SELECT COUNT(*) FROM patients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(patients, 1);
    let chain = build(store);
    assert_eq!(chain.height(), 4);
    assert_eq!((chain.tip(), chain.state().root()), (tip, root));
    assert_eq!(chain.replay_state().unwrap().root(), root);
}

#[test]
fn unsynced_writes_are_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let h = |n| medledger::hash::BlockHash::from_bytes([n; 32]);
    let mut s = SqliteStore::open(&path).unwrap();
    s.put_block(&h(1), b"one").unwrap();
    s.set_main_chain(0, &[h(1)]).unwrap();
    s.sync().unwrap();
    s.put_block(&h(2), b"two").unwrap();
    assert!(s.get_block(&h(2)).unwrap().is_some());
    // Closed without a sync: the open transaction rolls back.
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.block_hashes().unwrap(), vec![h(1)]);
    assert_eq!(s.tip_height().unwrap(), Some(0));
    assert!(SqliteStore::open_in_memory()
        .unwrap()
        .set_main_chain(1, &[h(1)])
        .is_err());
}
