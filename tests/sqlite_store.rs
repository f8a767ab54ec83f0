//! The chain's integration suite on a `SqliteStore` (feature `sqlite`), and the SQLite store's
//! own promises: a reopened database resumes the chain beside the application's own tables,
//! unsynced writes are not acknowledged, and damaged or foreign data is refused with an error.

#[path = "chain.rs"]
mod chain_suite;

// The included chain suite brings the shared Proof-of-Work setup.
use chain_suite::pow_setup::engine;

use medledger::hash::Digest;
use medledger::sqlite_store::rusqlite;
use medledger::sqlite_store::{SqliteError, SqliteStore};
use medledger::store::{Store, StoreError};
use medledger::tx::Keypair;
use medledger::{ChainBuilder, Payload, Transaction};

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

/// A database holding a chain of `blocks` mined blocks, closed.
fn database_with_chain(path: &std::path::Path, blocks: u8) {
    let mut chain = ChainBuilder::new("emr", engine())
        .genesis_time(T0)
        .store(SqliteStore::open(path).unwrap())
        .build()
        .unwrap();
    for i in 0..blocks {
        let block = chain.mine(vec![], T0 + 600 * (u64::from(i) + 1)).unwrap();
        chain.append(block).unwrap();
    }
}

fn corrupt_message(e: &StoreError) -> &str {
    match e {
        StoreError::Corrupt(msg) => msg,
        other => panic!("expected a corrupt-store error, got {other}"),
    }
}

#[test]
fn a_garbage_row_is_refused_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    database_with_chain(&path, 2);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO medledger_blocks (hash, bytes) VALUES (x'0102030405', x'00')",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let e = store.block_hashes().unwrap_err();
    let msg = corrupt_message(&e);
    assert!(
        msg.contains("medledger_blocks") && msg.contains("5 bytes"),
        "{msg}"
    );
    // The chain refuses to start on it rather than guessing.
    let built = ChainBuilder::new("emr", engine())
        .genesis_time(T0)
        .store(store)
        .build();
    assert!(matches!(
        built,
        Err(medledger::chain::ChainError::Store(StoreError::Corrupt(_)))
    ));
}

#[test]
fn a_value_of_the_wrong_type_is_a_corrupt_store_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    database_with_chain(&path, 1);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE medledger_main_chain SET hash = 'not a hash' WHERE height = 1",
            [],
        )
        .unwrap();
        conn.execute("UPDATE medledger_blocks SET bytes = 42 WHERE seq = 2", [])
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let msg = corrupt_message(&store.main_hash(1).unwrap_err()).to_owned();
    assert!(msg.contains("read the main chain"), "{msg}");
    let block = store.block_hashes().unwrap()[1];
    let msg = corrupt_message(&store.get_block(&block).unwrap_err()).to_owned();
    assert!(msg.contains("read a block"), "{msg}");
}

#[test]
fn damaged_block_bytes_are_refused_by_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    database_with_chain(&path, 2);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE medledger_blocks SET bytes = x'deadbeef' WHERE seq = 2",
            [],
        )
        .unwrap();
    }
    let built = ChainBuilder::new("emr", engine())
        .genesis_time(T0)
        .store(SqliteStore::open(&path).unwrap())
        .build();
    assert!(matches!(
        built,
        Err(medledger::chain::ChainError::Decode(_))
    ));
}

#[test]
fn a_foreign_table_under_the_ledgers_name_is_refused_and_left_alone() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE medledger_blocks (id INTEGER PRIMARY KEY, payload TEXT);
         INSERT INTO medledger_blocks (payload) VALUES ('the vendor''s data');",
    )
    .unwrap();
    let e = SqliteStore::from_connection(conn).unwrap_err();
    let msg = corrupt_message(&e);
    assert!(
        msg.contains("medledger_blocks") && msg.contains("id INTEGER, payload TEXT"),
        "{msg}"
    );

    // Nothing was created or changed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendor.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE medledger_main_chain (height TEXT, note TEXT);")
        .unwrap();
    drop(conn);
    assert!(SqliteStore::open(&path).is_err());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["medledger_main_chain"]);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.sqlite");
    let garbage = vec![0xA5u8; 8192];
    std::fs::write(&path, &garbage).unwrap();
    let e = SqliteStore::open(&path).unwrap_err();
    assert!(corrupt_message(&e).contains("not a database"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn a_newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    database_with_chain(&path, 0);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE medledger_meta SET value = 2 WHERE name = 'schema_version'",
            [],
        )
        .unwrap();
    }
    let e = SqliteStore::open(&path).unwrap_err();
    match &e {
        StoreError::Backend(inner) => assert!(
            matches!(
                inner.downcast_ref::<SqliteError>(),
                Some(SqliteError::UnsupportedVersion { found: 2 })
            ),
            "{e}"
        ),
        other => panic!("expected a backend error, got {other}"),
    }
    assert!(e.to_string().contains("schema version 2"), "{e}");
}

#[test]
fn kept_headers_are_replaced_whole_committed_with_the_writes_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headers.sqlite");
    let first: Vec<Vec<u8>> = (1..=4u8).map(|i| vec![i; 50]).collect();
    {
        let mut store = SqliteStore::open(&path).unwrap();
        assert!(store.headers().unwrap().is_empty());
        store.put_headers(&first).unwrap();
        assert_eq!(store.headers().unwrap(), first);
        store.sync().unwrap();
        // Replaced, but not committed: dropped with the transaction.
        store.put_headers(&[vec![9; 3]]).unwrap();
        assert_eq!(store.headers().unwrap(), vec![vec![9; 3]]);
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.headers().unwrap(), first);
    drop(store);
    // A gap in the heights is damage, named.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM medledger_headers WHERE height = 2", [])
        .unwrap();
    let err = SqliteStore::open(&path).unwrap().headers().unwrap_err();
    assert!(
        corrupt_message(&err).contains("skips from height 1 to 3"),
        "{err}"
    );
}

#[test]
fn a_database_of_before_the_headers_table_gains_it_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    database_with_chain(&path, 2);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("DROP TABLE medledger_headers", [])
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.headers().unwrap().is_empty());
    assert_eq!(store.tip_height().unwrap(), Some(2));
}
