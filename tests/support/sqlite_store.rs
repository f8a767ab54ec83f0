//! A [`Store`] in SQLite: how an embedder puts the ledger into a database it already runs.
//!
//! Shared by `examples/sqlite_store.rs` and `tests/sqlite_store.rs` (included with `#[path]`).
//! The ledger's two tables are prefixed `medledger_`, so they sit beside the application's own
//! tables in the same database file. Writes go into one SQLite transaction that
//! [`Store::sync`] commits: the commit is the acknowledgement point, as a group commit.
#![allow(dead_code)] // Each including crate uses a different part.

use std::path::Path;

use medledger::hash::BlockHash;
use medledger::store::{Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// The ledger's tables, created if missing.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS medledger_blocks (
        seq   INTEGER PRIMARY KEY,      -- storage order: parents before children
        hash  BLOB NOT NULL UNIQUE,
        bytes BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS medledger_main_chain (
        height INTEGER PRIMARY KEY,
        hash   BLOB NOT NULL
    );
";

/// A ledger store in a SQLite database.
pub struct SqliteStore {
    conn: Connection,
    /// Whether a write transaction is open (committed by `sync`).
    in_tx: bool,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn height_param(height: u64) -> Result<i64, StoreError> {
    i64::try_from(height).map_err(|_| StoreError::Corrupt(format!("height {height} too large")))
}

fn hash_from_blob(blob: Vec<u8>) -> Result<BlockHash, StoreError> {
    let bytes: [u8; 32] = blob
        .try_into()
        .map_err(|b: Vec<u8>| StoreError::Corrupt(format!("stored hash of {} bytes", b.len())))?;
    Ok(BlockHash::from_bytes(bytes))
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path`, in WAL mode with full syncs.
    ///
    /// # Errors
    ///
    /// The SQLite error.
    pub fn open(path: impl AsRef<Path>) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::from_connection(conn)
    }

    /// A store in a private in-memory database.
    ///
    /// # Errors
    ///
    /// The SQLite error.
    pub fn open_in_memory() -> rusqlite::Result<Self> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    /// Uses the application's own connection (its other tables are left alone).
    ///
    /// # Errors
    ///
    /// The SQLite error.
    pub fn from_connection(conn: Connection) -> rusqlite::Result<Self> {
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn, in_tx: false })
    }

    /// The connection, for the application's own queries. Ledger writes not yet synced are in
    /// an open transaction on it.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        if !self.in_tx {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(backend)?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn main_len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM medledger_main_chain", [], |r| {
                r.get(0)
            })
            .map_err(backend)?;
        Ok(n as u64)
    }
}

impl Store for SqliteStore {
    fn put_block(&mut self, hash: &BlockHash, encoded: &[u8]) -> Result<(), StoreError> {
        self.begin()?;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO medledger_blocks (hash, bytes) VALUES (?1, ?2)",
                params![hash.as_bytes(), encoded],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn get_block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT bytes FROM medledger_blocks WHERE hash = ?1",
                [hash.as_bytes()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
    }

    fn block_hashes(&self) -> Result<Vec<BlockHash>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash FROM medledger_blocks ORDER BY seq")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(backend)?;
        rows.map(|r| hash_from_blob(r.map_err(backend)?)).collect()
    }

    fn set_main_chain(&mut self, from_height: u64, hashes: &[BlockHash]) -> Result<(), StoreError> {
        // Rows are dense from height 0, so the count is the next free height.
        let next = self.main_len()?;
        if from_height > next {
            return Err(StoreError::Corrupt(format!(
                "main chain update at height {from_height} leaves a gap above height {next}"
            )));
        }
        self.begin()?;
        self.conn
            .execute(
                "DELETE FROM medledger_main_chain WHERE height >= ?1",
                [height_param(from_height)?],
            )
            .map_err(backend)?;
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO medledger_main_chain (height, hash) VALUES (?1, ?2)")
            .map_err(backend)?;
        for (i, hash) in hashes.iter().enumerate() {
            insert
                .execute(params![
                    height_param(from_height + i as u64)?,
                    hash.as_bytes()
                ])
                .map_err(backend)?;
        }
        Ok(())
    }

    fn main_hash(&self, height: u64) -> Result<Option<BlockHash>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT hash FROM medledger_main_chain WHERE height = ?1",
                [height_param(height)?],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        blob.map(hash_from_blob).transpose()
    }

    fn tip_height(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.main_len()?.checked_sub(1))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(backend)?;
            self.in_tx = false;
        }
        Ok(())
    }
}
