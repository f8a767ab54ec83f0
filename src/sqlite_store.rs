//! A [`Store`] in SQLite: the ledger in a database the application already runs (feature
//! `sqlite`).
//!
//! The ledger keeps four tables, all prefixed `medledger_`, so they sit beside the
//! application's own tables in the same database file:
//!
//! ```sql
//! medledger_meta       (name TEXT PRIMARY KEY, value INTEGER NOT NULL)  -- 'schema_version' = 1
//! medledger_blocks     (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, bytes BLOB NOT NULL)
//! medledger_main_chain (height INTEGER PRIMARY KEY, hash BLOB NOT NULL)
//! medledger_headers    (height INTEGER PRIMARY KEY, bytes BLOB NOT NULL)  -- Store::put_headers
//! ```
//!
//! Opening a database creates the tables if they are missing, in one transaction, and checks
//! that those already there are the ledger's: a table of the same name with other columns, or a
//! newer schema version, is refused and the database is left as it was. (`medledger_headers`
//! came later within schema version 1: a database without it gains it on open.)
//!
//! **Durability.** Writes go into one SQLite transaction (`BEGIN IMMEDIATE`) that
//! [`Store::sync`] commits: the commit is the acknowledgement point, as a group commit. The
//! [`Chain`](crate::chain::Chain) syncs after every block it accepts. A store dropped with
//! unsynced writes rolls them back. [`SqliteStore::open`] puts the database in WAL mode with
//! `synchronous = FULL`, so a commit survives a power cut.
//!
//! **Errors.** Every failure is a [`StoreError`]: damaged data (a file that is not a database,
//! SQLite's corruption reports, a stored value of the wrong type or length, a foreign table
//! under the ledger's names) is [`StoreError::Corrupt`] with a message saying what was found;
//! anything else is [`StoreError::Backend`] holding a [`SqliteError`] that names the operation.
//! The store never panics on what it reads back, and the chain re-validates every block it
//! loads, so the database is trusted for durability only.
//!
//! SQLite is compiled into the crate (`rusqlite`'s `bundled` feature): no system library or
//! server is needed, but building it needs a C compiler.
//!
//! ```
//! use medledger::ChainBuilder;
//! use medledger::pow::ProofOfWork;
//! use medledger::sqlite_store::SqliteStore;
//!
//! let store = SqliteStore::open_in_memory()?;
//! // The application's own table, in the same database.
//! store.connection().execute_batch("CREATE TABLE visits (id INTEGER PRIMARY KEY, note TEXT);")?;
//! let mut chain = ChainBuilder::new("emr", ProofOfWork::regtest())
//!     .genesis_time(1_700_000_000)
//!     .store(store)
//!     .build()?;
//! let block = chain.mine(vec![], 1_700_000_600)?;
//! chain.append(block)?;
//! assert_eq!(chain.height(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::hash::BlockHash;
use crate::store::{Store, StoreError};

/// The `rusqlite` this store is built on, for the application's own queries on
/// [`SqliteStore::connection`] and for [`SqliteStore::from_connection`].
pub use rusqlite;

/// The version of the ledger's tables this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The ledger's tables, created if missing.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS medledger_meta (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS medledger_blocks (
        seq   INTEGER PRIMARY KEY,      -- storage order: parents before children
        hash  BLOB NOT NULL UNIQUE,
        bytes BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS medledger_main_chain (
        height INTEGER PRIMARY KEY,
        hash   BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS medledger_headers (
        height INTEGER PRIMARY KEY,     -- from 1: headers kept without their blocks
        bytes  BLOB NOT NULL
    );
";

/// Each table's columns as `(name, declared type)`, in order.
const TABLES: [(&str, &[(&str, &str)]); 4] = [
    ("medledger_meta", &[("name", "TEXT"), ("value", "INTEGER")]),
    (
        "medledger_blocks",
        &[("seq", "INTEGER"), ("hash", "BLOB"), ("bytes", "BLOB")],
    ),
    (
        "medledger_main_chain",
        &[("height", "INTEGER"), ("hash", "BLOB")],
    ),
    (
        "medledger_headers",
        &[("height", "INTEGER"), ("bytes", "BLOB")],
    ),
];

/// A failure of SQLite itself (not of the data), held in [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// SQLite refused an operation (locked, busy, read-only, disk full, I/O…).
    #[error("sqlite could not {action}: {source}")]
    Sqlite {
        /// What the store was doing.
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database holds the ledger's tables at a version this build does not read.
    #[error("the database holds ledger tables of schema version {found}; this build reads version {SCHEMA_VERSION}")]
    UnsupportedVersion {
        /// The version found in `medledger_meta`.
        found: i64,
    },
}

/// Maps a SQLite error during `action` to the store's error: damaged data to
/// [`StoreError::Corrupt`], everything else to [`StoreError::Backend`].
fn sqlite(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        let damaged = match &e {
            rusqlite::Error::SqliteFailure(f, _) => {
                matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
            }
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => true,
            _ => false,
        };
        if damaged {
            StoreError::Corrupt(format!("sqlite could not {action}: {e}"))
        } else {
            StoreError::Backend(Box::new(SqliteError::Sqlite { action, source: e }))
        }
    }
}

fn height_param(height: u64) -> Result<i64, StoreError> {
    i64::try_from(height).map_err(|_| {
        StoreError::Corrupt(format!("height {height} is beyond what sqlite can store"))
    })
}

fn hash_from_blob(table: &str, blob: Vec<u8>) -> Result<BlockHash, StoreError> {
    let bytes: [u8; 32] = blob.try_into().map_err(|b: Vec<u8>| {
        StoreError::Corrupt(format!(
            "{table} holds a block hash of {} bytes, expected 32",
            b.len()
        ))
    })?;
    Ok(BlockHash::from_bytes(bytes))
}

/// Creates the ledger's tables if missing and checks those present, on an open transaction.
fn prepare_schema(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)
        .map_err(sqlite("create the ledger's tables"))?;
    for (table, expected) in TABLES {
        let mut stmt = conn
            .prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
            .map_err(sqlite("read the ledger's table definitions"))?;
        let found = stmt
            .query_map([table], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sqlite("read the ledger's table definitions"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite("read the ledger's table definitions"))?;
        let matches = found.len() == expected.len()
            && found
                .iter()
                .zip(expected)
                .all(|((n, t), (en, et))| n == en && t.eq_ignore_ascii_case(et));
        if !matches {
            let list = |cols: Vec<String>| cols.join(", ");
            return Err(StoreError::Corrupt(format!(
                "table {table} is not the ledger's: it has columns ({}), expected ({})",
                list(found.into_iter().map(|(n, t)| format!("{n} {t}")).collect()),
                list(expected.iter().map(|(n, t)| format!("{n} {t}")).collect()),
            )));
        }
    }
    conn.execute(
        "INSERT OR IGNORE INTO medledger_meta (name, value) VALUES ('schema_version', ?1)",
        [SCHEMA_VERSION],
    )
    .map_err(sqlite("record the schema version"))?;
    let version: i64 = conn
        .query_row(
            "SELECT value FROM medledger_meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite("read the schema version"))?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::Backend(Box::new(
            SqliteError::UnsupportedVersion { found: version },
        )));
    }
    Ok(())
}

/// A ledger [`Store`] in a SQLite database. See the [module docs](self).
pub struct SqliteStore {
    conn: Connection,
    /// Whether a write transaction is open (committed by `sync`).
    in_tx: bool,
}

impl core::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn.path())
            .field("unsynced_writes", &self.in_tx)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path`, in WAL mode with full syncs, and
    /// prepares the ledger's tables.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the file is not a SQLite database or holds tables under the
    /// ledger's names that are not the ledger's; [`StoreError::Backend`] with a
    /// [`SqliteError`] if SQLite cannot open or write it or the schema version is newer.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(sqlite("open the database"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite("switch the database to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite("set synchronous = FULL"))?;
        Self::from_connection(conn)
    }

    /// A store in a private in-memory database (for tests and throwaway chains).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if SQLite cannot create the database.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::from_connection(
            Connection::open_in_memory().map_err(sqlite("open an in-memory database"))?,
        )
    }

    /// Uses the application's own connection; its other tables are left alone. The
    /// connection's journal and sync settings are the application's.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); on error nothing was created in the database.
    pub fn from_connection(mut conn: Connection) -> Result<Self, StoreError> {
        let tx = conn
            .transaction()
            .map_err(sqlite("begin creating the ledger's tables"))?;
        prepare_schema(&tx)?;
        tx.commit().map_err(sqlite("commit the ledger's tables"))?;
        Ok(Self { conn, in_tx: false })
    }

    /// The connection, for the application's own queries. Ledger writes not yet synced are in
    /// an open transaction on it, which [`Store::sync`] commits.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        if !self.in_tx {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(sqlite("begin a write transaction"))?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Rows in the main-chain index: dense from height 0, so also the next free height.
    fn main_len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM medledger_main_chain", [], |r| {
                r.get(0)
            })
            .map_err(sqlite("count the main chain"))?;
        u64::try_from(n)
            .map_err(|_| StoreError::Corrupt(format!("main chain row count {n} is negative")))
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
            .map_err(sqlite("store a block"))?;
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
            .map_err(sqlite("read a block"))
    }

    fn block_hashes(&self) -> Result<Vec<BlockHash>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash FROM medledger_blocks ORDER BY seq")
            .map_err(sqlite("list the stored blocks"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(sqlite("list the stored blocks"))?;
        rows.map(|r| {
            hash_from_blob(
                "medledger_blocks",
                r.map_err(sqlite("list the stored blocks"))?,
            )
        })
        .collect()
    }

    fn set_main_chain(&mut self, from_height: u64, hashes: &[BlockHash]) -> Result<(), StoreError> {
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
            .map_err(sqlite("update the main chain"))?;
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO medledger_main_chain (height, hash) VALUES (?1, ?2)")
            .map_err(sqlite("update the main chain"))?;
        for (height, hash) in (from_height..).zip(hashes) {
            insert
                .execute(params![height_param(height)?, hash.as_bytes()])
                .map_err(sqlite("update the main chain"))?;
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
            .map_err(sqlite("read the main chain"))?;
        blob.map(|b| hash_from_blob("medledger_main_chain", b))
            .transpose()
    }

    fn tip_height(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.main_len()?.checked_sub(1))
    }

    fn put_headers(&mut self, headers: &[Vec<u8>]) -> Result<(), StoreError> {
        // Within the open write transaction (a crash before `sync` commits keeps the previous
        // headers), under a savepoint: a failure half-way rolls the replacement back alone.
        self.begin()?;
        self.conn
            .execute_batch("SAVEPOINT medledger_headers")
            .map_err(sqlite("replace the kept headers"))?;
        let replaced = (|| {
            self.conn
                .execute("DELETE FROM medledger_headers", [])
                .map_err(sqlite("replace the kept headers"))?;
            let mut insert = self
                .conn
                .prepare_cached("INSERT INTO medledger_headers (height, bytes) VALUES (?1, ?2)")
                .map_err(sqlite("replace the kept headers"))?;
            for (height, header) in (1..).zip(headers) {
                insert
                    .execute(params![height_param(height)?, header])
                    .map_err(sqlite("replace the kept headers"))?;
            }
            Ok(())
        })();
        let end = match replaced {
            Ok(()) => "RELEASE medledger_headers",
            Err(_) => "ROLLBACK TO medledger_headers; RELEASE medledger_headers",
        };
        self.conn
            .execute_batch(end)
            .map_err(sqlite("replace the kept headers"))?;
        replaced
    }

    fn headers(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT height, bytes FROM medledger_headers ORDER BY height")
            .map_err(sqlite("read the kept headers"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(sqlite("read the kept headers"))?;
        let mut headers = Vec::new();
        for row in rows {
            let (height, bytes) = row.map_err(sqlite("read the kept headers"))?;
            let expected = headers.len() as i64 + 1;
            if height != expected {
                return Err(StoreError::Corrupt(format!(
                    "medledger_headers skips from height {} to {height}",
                    expected - 1
                )));
            }
            headers.push(bytes);
        }
        Ok(headers)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.in_tx {
            self.conn
                .execute_batch("COMMIT")
                .map_err(sqlite("commit the ledger's writes"))?;
            self.in_tx = false;
        }
        Ok(())
    }
}
