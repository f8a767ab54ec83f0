//! The state on disk (feature `redb`): every table's committed entries and the state tree's
//! nodes in a redb database, with a bounded cache of decoded values and the tree's upper levels
//! in front, so that memory no longer grows with the number of entries.
//!
//! Select it with [`StateBackend::Disk`](crate::state::StateBackend::Disk) when building a
//! chain ([`ChainBuilder::state_backend`](crate::chain::ChainBuilder::state_backend)); the
//! memory backend stays the default, for tests and small deployments. Both give the same
//! answers, the same state roots and the same proofs: the backend changes where committed
//! entries live, nothing else.
//!
//! # Layout
//!
//! One redb file, `state.redb`, in the configured directory:
//!
//! * a table `state:TAG` per state table, mapping a key's canonical body to its value's
//!   canonical body (the encodings [`entry_key`](crate::state::entry_key) and
//!   [`value_digest`](crate::state::value_digest) hash);
//! * `undo`: for each of the last blocks (the chain's reorganisation limit plus one), keyed by
//!   `(height, sequence)`, what a write of that block replaced: the table's position in the
//!   state's fixed table order, the key body and the previous value body (none if the key was
//!   absent);
//! * `nodes`: the state tree ([`StateTree`]) in records of four levels: each interior node at
//!   a depth that is a multiple of four (and the root, whatever it is) is the key of one
//!   record, which holds that node and every node of the next four levels below it (at most
//!   fifteen interior nodes as a tag each, the leaves among them and under them as their key
//!   and value digest) and the interior nodes at its bottom as their hash, each the key of the
//!   next record down (at most 1,055 bytes). A record read back is decoded within that bound,
//!   must hash to its key, and is not used otherwise; the hash covers every node in it;
//! * `stale`: for each block of the undo window, keyed by `(height, hash)`, the records it
//!   replaced: deleted from `nodes` when the height leaves the window;
//! * `fresh`: for each block of the undo window, the records it wrote, for undoing it;
//! * `meta`: the format version ([`FORMAT_VERSION`]), the height of the committed state, its
//!   state root and its number of entries.
//!
//! # Commit and undo
//!
//! A block's writes stay in memory (the tables' pending writes and savepoint journals, as with
//! the memory backend) until the block commits. Then one redb write transaction writes every
//! table's pending entries, their undo records and the new height and root, and commits: a
//! crash leaves the state of either the previous block or this one, never a mixture. The same
//! transaction writes the tree's new records (one for each record whose nodes the block's
//! batch changed) and lists the records it replaced; a record that a block of the window
//! replaced and a later one creates again (values set back) is taken off the list. Once it
//! committed, a second transaction (not synced) deletes the records on the list of the block
//! that left the undo window, with the lists: apart, each transaction's pages fit redb's
//! write share more often (the README's row D9). A collection lost in a crash, or that
//! failed, is done before the next block. Undoing a block (a reorganisation) replays its undo records in reverse, deletes the records it wrote
//! and puts back on their lists the records it took off, in one write transaction: the
//! previous tree's records are all still there. A
//! write transaction that fails leaves the database as it was, and the chain refuses the block.
//! With [`DiskConfig::sync_every`] above 1, only every so many blocks' commits are synced:
//! the others are atomic but may be lost in a crash, which then leaves the last synced
//! block's state (the chain replays the stored blocks after it when it reopens).
//!
//! # Cache
//!
//! A table hands out `&V` from `&self` ([`Table::get`](crate::state::Table::get)), so that
//! reading code is the same for both backends and costs no copy. Decoded values are kept in an
//! append-only map (entries are never removed while `&self` borrows are alive), each stamped
//! with the last block (epoch) it was used in; eviction happens only through `&mut self`, at
//! every block commit, discard and undo, which drops the least recently used entries down to
//! three quarters of [`DiskConfig::cache_entries`]. Between two blocks the cache may grow
//! beyond the bound by the entries read in between. Absent keys are cached too, so a refused
//! lookup is not a disk read the second time.
//!
//! After each commit the state tree keeps its nodes above [`DiskConfig::tree_memory_depth`]
//! (rounded down to a multiple of four) decoded (every path passes there) and holds each
//! record at that depth by its hash only; a lookup, a proof or the next block's batch that
//! reaches one reads it from `nodes` (through redb's page cache), four levels at once,
//! without keeping it. The chain keeps the trees of the undo
//! window only, for proofs as of a recent height
//! ([`Chain::state_tree_at`](crate::chain::Chain::state_tree_at)); they share the upper levels.
//!
//! # Reopening
//!
//! A chain built on a directory that holds a state, over a store whose main chain reaches that
//! state's height, starts from it without replay: the tables read from the database, the
//! headers up to the height are taken from the store and checked by the engine (as for a
//! checkpoint), and the state tree's root record is read from `nodes`: it must hash to the
//! root `meta` recorded, which must be the header's. Nothing else is read: the rest of the tree
//! is read when reached, each record checked against its hash then (a damaged one is reported as a
//! failed read, so a block that reaches it is refused, and a proof through it does not
//! verify). The entries themselves are trusted as the transaction that wrote them with the
//! nodes left them; [`State::verify_entries`](crate::state::State::verify_entries) rebuilds
//! the tree from every entry and checks its root (what reopening did before the nodes were
//! stored). Otherwise (no state, another format, a damaged root node, a foreign state, a store
//! that lost the blocks) the directory is written afresh from genesis or the store's
//! checkpoint and the later blocks replay. As after a checkpoint, the reopened chain keeps no
//! undo data below the height it opened at.
//!
//! Measured (bench `disk_state`, `disk_reopen`; the README's rows D6 and D7): reopening a state
//! of 100,000 patients by its root node takes about a thousandth of the time that rebuilding
//! the tree from every entry takes, and a few MiB of memory instead of about a GiB.
//!
//! # Snapshot imports and compaction
//!
//! A new node can import a state snapshot straight into the database
//! ([`SnapshotImport::on_disk`](crate::state::snapshot::SnapshotImport::on_disk)): each
//! verified chunk's entries and the tree's new records are written in a transaction of their
//! own (not synced), the upper records the chunk rewrote are deleted at once (nothing undoes
//! an import), and the tree keeps in memory only its levels above
//! [`DiskConfig::tree_memory_depth`]; `meta` gets its format version only when the import
//! finishes (synced), so a directory whose import stopped half-way holds no state. The
//! import's memory is bounded by a chunk and the caches, not by the state (the README's row
//! D10).
//!
//! redb reuses the pages it frees but seldom shrinks its file, which keeps the size of the
//! largest transaction it held; [`compact`] (offline: the database closed) moves the pages
//! to the front and gives the rest back (the README's row D3).
//!
//! # Not yet done, and how it fits
//!
//! * Storing the tree still makes blocks slower (the README's rows D8 and D9: blocks of 1,000
//!   operations with the tree run at about a sixth of the rate without it at 1k patients, an
//!   eighth at 100,000, where redb writes fifty times the bytes of the records). A block
//!   writes its records under random keys (their hashes) and deletes as many when it leaves
//!   the undo window, so redb copies a page for nearly each. Keys that keep a path's records
//!   together (a record's position in the tree and the height that wrote it, as Jellyfish
//!   Merkle trees key their nodes) and the deletions done in the background would cut it
//!   further.
//! * Records read on demand are not cached beyond redb's page cache: a block reads the lower
//!   levels of every path it touches again. A bounded cache of decoded records (as the tables
//!   have for values) would spare those reads for hot paths.
//! * Block application on disk is slow at scale (the README's "State on disk" rows): redb
//!   copies a whole 4 KiB B-tree page for every entry a block changes, and a patient's entries
//!   have unrelated keys, so a block of 1,000 operations (about 3,000 entry writes and as many
//!   undo records) writes thousands of pages, each with its own system call. Measured with
//!   `perf` at 100,000 patients: the time goes to the kernel copying those pages into the file
//!   and to redb copying, caching and allocating them; syncing is the smaller part (every 16th
//!   commit synced: rate ratio 0.48 instead of 0.21-0.27, with the 64 MiB page cache of
//!   before), and neither a page cache whose write share holds a block's pages (the default
//!   now: 0.40 to 0.47, the README's row D5) nor writing each table's entries in key order
//!   (done; no gain at 100,000) closes the gap. Keeping the last few blocks' writes in memory and
//!   flushing them together would help the small state most (its blocks touch the same few
//!   pages again), so it alone does not reach 0.7 either; what scales is fewer pages per operation: a key layout that keeps
//!   an operation's entries on one page (keys prefixed by the patient), or appending blocks'
//!   writes to a log that is merged into the tables in the background.
//! * Crash safety is tested by killing a writing process (`tests/disk_state.rs`); a
//!   fault-injecting redb `StorageBackend` (torn and lost writes, as `tests/crash.rs` does for
//!   the file store) would test power loss as well.
//!
//! # Failures
//!
//! Writes return [`DiskError`]. Reads cannot: a table read returns `Option<&V>`. A read that
//! fails (an I/O error, or an entry that no longer decodes: the directory was damaged from
//! outside) answers `None`, is not cached, and is recorded with the table and the reason
//! ([`DiskError::Read`]). A block whose execution recorded one is refused with it
//! (`ChainError::Store`), and nothing of it is written: its outcome may rest on the wrong
//! answer. A query outside a block (a `decide`, say) gets the wrong answer "absent" (for
//! access control, a denial); the next block then shows whether the database still fails.
//! A damaged directory must be rebuilt (it is a cache of the blocks, which replay rebuilds it
//! from).

use core::fmt;
use core::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use elsa::sync::FrozenMap;
use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::hash::StateRoot;
use crate::smt::{NewNodes, NodeSource, StateTree};

/// The default bound on decoded values cached per table.
pub const DEFAULT_CACHE_ENTRIES: usize = 1 << 16;

/// The default size of redb's own page cache, in bytes (shared by all tables): 1 GiB, of which
/// redb keeps a tenth for the pages a block's write transaction changes (see
/// [`DiskConfig::page_cache_bytes`]). A bound, not an allocation: pages are cached as they are
/// read and written.
pub const DEFAULT_PAGE_CACHE_BYTES: usize = 1 << 30;

/// The on-disk format version written in `meta`: 3 since the state tree is stored as records
/// of four levels each (2 stored it node by node, 1 not at all; a directory of an earlier
/// version is rebuilt from the blocks).
pub const FORMAT_VERSION: u8 = 3;

/// The default depth from which the state tree's nodes are held by hash only after a commit
/// (see [`DiskConfig::tree_memory_depth`]): at most 2^16 nodes on the deepest level kept.
pub const DEFAULT_TREE_MEMORY_DEPTH: usize = 16;

/// The file inside the state directory.
const FILE_NAME: &str = "state.redb";

/// Undo records: `(height, sequence)` to `(table position, key body, previous value body)`.
const UNDO: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("undo");
/// Format version, height, state root and entry count of the committed state.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The state tree's nodes: a node's hash to its encoding (two child hashes, or a leaf's key and
/// value digest).
const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nodes");
/// The nodes each block of the undo window replaced, by `(height, hash)`: deleted from
/// [`NODES`] once the height leaves the window.
const STALE: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("stale");
/// The nodes each block of the undo window wrote, by `(height, hash)`, for undoing it: 0 for a
/// new node (deleted by the undo), `h + 1` for a node that was listed as replaced at height `h`
/// and became part of the tree again (listed there again by the undo).
const FRESH: TableDefinition<(u64, &[u8]), u64> = TableDefinition::new("fresh");

/// The redb table of the state table tagged `tag`.
fn table_name(tag: &str) -> String {
    format!("state:{tag}")
}

/// Where and how the state is kept on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    dir: PathBuf,
    cache_entries: usize,
    page_cache_bytes: usize,
    sync_every: u64,
    tree_memory_depth: usize,
}

impl DiskConfig {
    /// The state in directory `dir` (created if missing), with the default cache sizes.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache_entries: DEFAULT_CACHE_ENTRIES,
            page_cache_bytes: DEFAULT_PAGE_CACHE_BYTES,
            sync_every: 1,
            tree_memory_depth: DEFAULT_TREE_MEMORY_DEPTH,
        }
    }

    /// Keeps the state tree's interior nodes above `depth` (rounded down to a multiple of four,
    /// the levels one stored record covers) decoded in memory after each commit, and holds the
    /// subtrees there by their hash only, read from the database when a lookup, a proof or a
    /// block reaches them (default [`DEFAULT_TREE_MEMORY_DEPTH`]); leaves above it stay
    /// decoded too. The tree's memory is then bounded by about 2^`depth` nodes, whatever the
    /// number of entries; 0 (to 3) keeps only the root's hash, 256 every node.
    pub fn tree_memory_depth(mut self, depth: usize) -> Self {
        self.tree_memory_depth = depth;
        self
    }

    /// Makes every `blocks`-th block's commit durable (synced to disk), and the others only
    /// atomic (default 1: every block). After a crash the directory holds the last synced
    /// block's state, and the chain replays the stored blocks after it; fewer syncs let redb
    /// write a page that several blocks change once. 0 counts as 1.
    pub fn sync_every(mut self, blocks: u64) -> Self {
        self.sync_every = blocks.max(1);
        self
    }

    /// The most decoded values each table keeps after a block (default
    /// [`DEFAULT_CACHE_ENTRIES`]); 0 keeps none beyond the current block.
    pub fn cache_entries(mut self, entries: usize) -> Self {
        self.cache_entries = entries;
        self
    }

    /// The size of redb's page cache in bytes (default [`DEFAULT_PAGE_CACHE_BYTES`]). redb
    /// keeps nine tenths of it for pages read and one tenth for the pages a write transaction
    /// changes; a block that changes more pages than that tenth holds writes some of them to
    /// the file before it commits, and one it changes again is read back and written again
    /// (the README's "State on disk" measures blocks with both this default and 64 MiB).
    pub fn page_cache_bytes(mut self, bytes: usize) -> Self {
        self.page_cache_bytes = bytes;
        self
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bound on decoded values cached per table.
    pub fn cache_entry_bound(&self) -> usize {
        self.cache_entries
    }

    /// The depth from which the state tree's nodes are held by hash only.
    pub fn tree_memory_depth_bound(&self) -> usize {
        self.tree_memory_depth
    }
}

/// Why the state database could not be opened, written or read. A failed write changed
/// nothing on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// The directory or the database file could not be opened or created.
    #[error("cannot open the state database in {dir}: {reason}")]
    Open {
        /// The state directory.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
    /// redb failed (an I/O error, or a full disk); the transaction was not committed.
    #[error("state database {action}: {reason}")]
    Storage {
        /// What was being done.
        action: &'static str,
        /// What failed.
        reason: String,
    },
    /// The block to undo is older than the undo records kept.
    #[error("no undo records for height {height}: they are kept from height {floor} on")]
    NoUndo {
        /// The block's height.
        height: u64,
        /// The lowest height with undo records.
        floor: u64,
    },
    /// What the database holds is not what the state wrote.
    #[error("state database corrupt: {0}")]
    Corrupt(String),
    /// A table could not be read (an I/O error), or holds an entry that does not decode.
    #[error("cannot read state table {table}: {reason}")]
    Read {
        /// The redb table.
        table: String,
        /// What failed.
        reason: String,
    },
}

/// `map_err` helper: a redb error while doing `action`.
fn storage<E: fmt::Display>(action: &'static str) -> impl Fn(E) -> DiskError {
    move |e| DiskError::Storage {
        action,
        reason: e.to_string(),
    }
}

/// What a state database takes on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskUsage {
    /// The file's size (redb grows it in large steps, so small states look large).
    pub file_bytes: u64,
    /// The keys and values stored.
    pub stored_bytes: u64,
    /// redb's own structures (B-tree branches, page headers).
    pub metadata_bytes: u64,
    /// Allocated and unused, within the file.
    pub fragmented_bytes: u64,
}

/// What [`compact`] did to a state database's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compaction {
    /// The file's size before.
    pub file_bytes_before: u64,
    /// The file's size after.
    pub file_bytes_after: u64,
}

/// Compacts the state database in `config`'s directory: moves its pages towards the start of
/// the file and gives the free space after them back to the file system. redb reuses free
/// pages but seldom shrinks its file, so a file keeps the size of its largest transaction: a
/// bulk load, a state moved to disk or imported from a snapshot, or a block far larger than
/// the rest can leave it many times the size of what it holds (the README's row D3).
///
/// Offline: a chain or state using the directory holds its database open, and must be
/// dropped (the node stopped) first. The entries, the tree's records, the undo records and
/// the committed height and root are unchanged; each step is a redb transaction, so a crash
/// in the middle leaves the database as one of them committed it, whole.
///
/// # Errors
///
/// [`DiskError::Open`] if the directory holds no state database file, or the database is open
/// (in this process or another) or cannot be opened; [`DiskError::Storage`] if redb fails
/// while compacting (the database stays as its last completed step left it, which holds the
/// same state).
pub fn compact(config: &DiskConfig) -> Result<Compaction, DiskError> {
    let path = config.dir.join(FILE_NAME);
    let open = |reason: String| DiskError::Open {
        dir: config.dir.clone(),
        reason,
    };
    if !path.is_file() {
        return Err(open(format!("no state database ({FILE_NAME})")));
    }
    let size = || {
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(storage("read the file size"))
    };
    let file_bytes_before = size()?;
    let mut db = Database::builder()
        .set_cache_size(config.page_cache_bytes)
        .open(&path)
        .map_err(|e| open(e.to_string()))?;
    db.compact().map_err(storage("compact"))?;
    drop(db);
    Ok(Compaction {
        file_bytes_before,
        file_bytes_after: size()?,
    })
}

/// A table of the database as redb sees it: key bodies to value bodies.
pub type RawTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The first table read that failed since the state last looked, shared by the tables.
type ReadFailure = Arc<Mutex<Option<DiskError>>>;

/// An open state database, shared by the state's tables.
#[derive(Clone)]
pub struct StateDb {
    db: Arc<Database>,
    cache_entries: usize,
    failure: ReadFailure,
    nodes: Arc<NodeReader>,
}

/// The state tree's node table as of the last commit, for trees to read their stored
/// subtrees from.
struct NodeReader {
    db: Arc<Database>,
    /// Renewed at every commit and undo; `None` if it could not be opened (the failure is
    /// recorded, and the next renewal tries again).
    reader: RwLock<Option<Arc<RawTable>>>,
    failure: ReadFailure,
}

impl NodeReader {
    fn renew(&self) {
        let reader = match open_reader(&self.db, "nodes") {
            Ok(reader) => Some(Arc::new(reader)),
            Err(reason) => {
                self.failed(reason);
                None
            }
        };
        *self
            .reader
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reader;
    }
}

impl NodeSource for NodeReader {
    fn load(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        let reader = self
            .reader
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(reader) = reader else {
            self.failed("the table could not be opened".into());
            return None;
        };
        match reader.get(hash.as_slice()) {
            Ok(found) => found.map(|guard| guard.value().to_vec()),
            Err(e) => {
                self.failed(e.to_string());
                None
            }
        }
    }

    fn failed(&self, reason: String) {
        record(&self.failure, "nodes", reason);
    }
}

/// Records a failed read of `table` (the first since the state last looked is kept).
fn record(failure: &ReadFailure, table: &str, reason: String) {
    let mut failure = failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if failure.is_none() {
        *failure = Some(DiskError::Read {
            table: table.to_owned(),
            reason,
        });
    }
}

impl StateDb {
    fn new(db: Database, cache_entries: usize) -> Self {
        let db = Arc::new(db);
        let failure = ReadFailure::default();
        let nodes = Arc::new(NodeReader {
            db: db.clone(),
            reader: RwLock::new(None),
            failure: failure.clone(),
        });
        nodes.renew();
        Self {
            db,
            cache_entries,
            failure,
            nodes,
        }
    }

    /// Where a state tree reads its stored nodes from.
    pub(crate) fn node_source(&self) -> Arc<dyn NodeSource> {
        self.nodes.clone()
    }

    /// The first table read that failed since the last call (reads cannot return errors: a
    /// failed one answers "absent", and records why here), and forgets it.
    pub(crate) fn take_read_failure(&self) -> Option<DiskError> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
impl StateDb {
    /// Deletes every record of the state tree behind the state's back (tests of reads that
    /// fail).
    pub(crate) fn delete_tree_records(&self) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(NODES).unwrap().retain(|_, _| false).unwrap();
        txn.commit().unwrap();
        self.nodes.renew();
    }
}

impl fmt::Debug for StateDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateDb")
            .field("cache_entries", &self.cache_entries)
            .finish_non_exhaustive()
    }
}

/// A committed entry as canonical bodies: `(key, value)`.
pub(crate) type EncodedEntry = (Vec<u8>, Vec<u8>);

/// One table's write of a block, as canonical bodies: `(key, Some(value))` or `(key, None)`
/// to delete.
pub(crate) type EncodedWrite = (Vec<u8>, Option<Vec<u8>>);

/// The state's side of the database: the handle, the committed height and how many blocks of
/// undo records to keep.
#[derive(Debug)]
pub(crate) struct DiskState {
    db: StateDb,
    path: PathBuf,
    height: u64,
    /// The lowest height whose undo records are kept.
    undo_floor: u64,
    undo_blocks: u64,
    sync_every: u64,
    tree_memory_depth: usize,
    /// Whether records that blocks gone from the undo window replaced may still be in the
    /// database (a collection failed, or the state was reopened): collected before the next
    /// block, so that no block sees a list below the window.
    garbage: bool,
}

/// What a block changes in the state tree's nodes.
#[derive(Clone, Copy)]
pub(crate) struct TreeWrite<'a> {
    /// The nodes to write (from [`StateTree::persist`]).
    pub(crate) new: &'a NewNodes,
    /// The hashes of the nodes the block replaced (from [`StateTree::apply_tracked`]).
    pub(crate) replaced: &'a [[u8; 32]],
    /// The new tree's root.
    pub(crate) root: StateRoot,
    /// The new tree's number of entries.
    pub(crate) entries: u64,
}

#[cfg(test)]
impl TreeWrite<'static> {
    /// A tree change that writes no node: `root` over no entries (tests of the tables alone).
    pub(crate) fn root_only(root: StateRoot) -> Self {
        static NONE: NewNodes = Vec::new();
        Self {
            new: &NONE,
            replaced: &[],
            root,
            entries: 0,
        }
    }
}

impl DiskState {
    /// Opens (or creates) the database of `config` and replaces whatever it holds by
    /// `tables`' committed entries (as `(tag, entries)`, in the state's table order) at
    /// `height` with `root`, keeping undo records for `undo_blocks` blocks.
    pub(crate) fn create(
        config: &DiskConfig,
        tables: &[(&'static str, Vec<EncodedEntry>)],
        height: u64,
        tree: TreeWrite<'_>,
        undo_blocks: u64,
    ) -> Result<Self, DiskError> {
        Self::create_with(config, tables, height, tree, undo_blocks, true)
    }

    /// Opens (or creates) the database of `config`, empties it, creates the tables tagged
    /// `tags`, and readies it for a snapshot import at `height`
    /// ([`import_chunk`](Self::import_chunk), then [`finish_import`](Self::finish_import)).
    /// Until it is finished, `meta` records no format version, so the directory opens as
    /// holding no state ([`open`](Self::open) gives `None`): an import stopped half-way is
    /// never taken for a state.
    pub(crate) fn begin_import(
        config: &DiskConfig,
        tags: &[&'static str],
        height: u64,
        undo_blocks: u64,
    ) -> Result<Self, DiskError> {
        let empty = TreeWrite {
            new: &Vec::new(),
            replaced: &[],
            root: crate::smt::EMPTY_ROOT,
            entries: 0,
        };
        let tables: Vec<_> = tags.iter().map(|tag| (*tag, Vec::new())).collect();
        Self::create_with(config, &tables, height, empty, undo_blocks, false)
    }

    /// Writes one verified snapshot chunk: `writes[i]` are the new entries of the `i`-th
    /// table (tagged `tags[i]`), `tree` the import's tree after the chunk (its new records;
    /// `replaced`, the records of earlier chunks it no longer uses, are deleted at once, as
    /// nothing undoes an import). One transaction, not synced:
    /// [`finish_import`](Self::finish_import) syncs them all, and a crash before it leaves no
    /// state anyway.
    pub(crate) fn import_chunk(
        &mut self,
        tags: &[&'static str],
        writes: &[Vec<EncodedWrite>],
        tree: TreeWrite<'_>,
    ) -> Result<(), DiskError> {
        let mut txn = self.db.db.begin_write().map_err(storage("begin a chunk"))?;
        txn.set_durability(redb::Durability::None)
            .map_err(storage("set the durability"))?;
        for (tag, writes) in tags.iter().zip(writes) {
            if writes.is_empty() {
                continue;
            }
            let mut table = open_write_table(&txn, tag)?;
            for (key, value) in sorted_by_key(writes) {
                let Some(value) = value else {
                    return Err(DiskError::Corrupt(format!(
                        "a snapshot chunk deletes an entry of {tag}"
                    )));
                };
                table
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(storage("write an entry"))?;
            }
        }
        {
            let mut nodes = txn.open_table(NODES).map_err(storage("open nodes"))?;
            for hash in tree.replaced {
                nodes
                    .remove(hash.as_slice())
                    .map_err(storage("delete a node"))?;
            }
            for (hash, node) in tree.new {
                nodes
                    .insert(hash.as_slice(), node.as_slice())
                    .map_err(storage("write a node"))?;
            }
        }
        txn.commit().map_err(storage("commit a chunk"))?;
        self.db.nodes.renew();
        Ok(())
    }

    /// Records the imported state's `root` and number of `entries` at the import's height,
    /// with the format version that makes the directory a state, and syncs.
    pub(crate) fn finish_import(&mut self, root: StateRoot, entries: u64) -> Result<(), DiskError> {
        let txn = self
            .db
            .db
            .begin_write()
            .map_err(storage("begin the import's end"))?;
        write_meta(&txn, self.height, root, entries)?;
        txn.commit().map_err(storage("commit the import's end"))?;
        self.db.nodes.renew();
        Ok(())
    }

    /// Whether this is the database of `config` (the same file, however the paths spell it).
    pub(crate) fn is_in(&self, config: &DiskConfig) -> bool {
        let other = config.dir.join(FILE_NAME);
        match (
            std::fs::canonicalize(&self.path),
            std::fs::canonicalize(&other),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.path == other,
        }
    }

    /// The height of the committed state.
    pub(crate) fn height(&self) -> u64 {
        self.height
    }

    /// Sets the number of blocks whose undo records are kept (the chain's reorganisation
    /// limit plus one) for the blocks committed from now on.
    pub(crate) fn set_undo_blocks(&mut self, undo_blocks: u64) {
        self.undo_blocks = undo_blocks;
        self.undo_floor = self
            .undo_floor
            .max(self.height.saturating_sub(undo_blocks) + 1);
    }

    fn create_with(
        config: &DiskConfig,
        tables: &[(&'static str, Vec<EncodedEntry>)],
        height: u64,
        tree: TreeWrite<'_>,
        undo_blocks: u64,
        format: bool,
    ) -> Result<Self, DiskError> {
        let open = |reason: String| DiskError::Open {
            dir: config.dir.clone(),
            reason,
        };
        let undo_floor = height
            .checked_add(1)
            .ok_or_else(|| open(format!("a state at height {height} can take no block")))?;
        std::fs::create_dir_all(&config.dir).map_err(|e| open(e.to_string()))?;
        let db = Database::builder()
            .set_cache_size(config.page_cache_bytes)
            .create(config.dir.join(FILE_NAME))
            .map_err(|e| open(e.to_string()))?;
        let txn = db.begin_write().map_err(storage("begin the reset"))?;
        let existing: Vec<_> = txn.list_tables().map_err(storage("list tables"))?.collect();
        for table in existing {
            txn.delete_table(table)
                .map_err(storage("delete an old table"))?;
        }
        for (tag, entries) in tables {
            let mut t = open_write_table(&txn, tag)?;
            for (k, v) in entries {
                t.insert(k.as_slice(), v.as_slice())
                    .map_err(storage("write an entry"))?;
            }
        }
        txn.open_table(UNDO)
            .map_err(storage("create the undo table"))?;
        {
            let mut nodes = txn.open_table(NODES).map_err(storage("create nodes"))?;
            for (hash, node) in tree.new {
                nodes
                    .insert(hash.as_slice(), node.as_slice())
                    .map_err(storage("write a node"))?;
            }
        }
        txn.open_table(STALE).map_err(storage("create stale"))?;
        txn.open_table(FRESH).map_err(storage("create fresh"))?;
        if format {
            write_meta(&txn, height, tree.root, tree.entries)?;
        } else {
            txn.open_table(META).map_err(storage("create meta"))?;
        }
        txn.commit().map_err(storage("commit the reset"))?;
        Ok(Self {
            db: StateDb::new(db, config.cache_entries),
            path: config.dir.join(FILE_NAME),
            height,
            undo_floor,
            undo_blocks,
            sync_every: config.sync_every,
            tree_memory_depth: config.tree_memory_depth,
            garbage: false,
        })
    }

    /// The depth from which the state tree's nodes are held by hash only after a commit.
    pub(crate) fn tree_memory_depth(&self) -> usize {
        self.tree_memory_depth
    }

    /// Opens the database of `config` as it is, if it holds a state of this format: `None` if
    /// there is no database file or its format is another.
    pub(crate) fn open(config: &DiskConfig, undo_blocks: u64) -> Result<Option<Self>, DiskError> {
        let path = config.dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let db = Database::builder()
            .set_cache_size(config.page_cache_bytes)
            .open(&path)
            .map_err(|e| DiskError::Open {
                dir: config.dir.clone(),
                reason: e.to_string(),
            })?;
        let format = {
            let txn = db.begin_read().map_err(storage("begin a read"))?;
            match txn.open_table(META) {
                Ok(meta) => meta
                    .get("format")
                    .map_err(storage("read meta"))?
                    .map(|v| v.value().to_vec()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(storage("open meta")(e)),
            }
        };
        if format.as_deref() != Some([FORMAT_VERSION].as_slice()) {
            return Ok(None);
        }
        let mut state = Self {
            db: StateDb::new(db, config.cache_entries),
            path,
            height: 0,
            undo_floor: 0,
            undo_blocks,
            sync_every: config.sync_every,
            tree_memory_depth: config.tree_memory_depth,
            garbage: true,
        };
        let (height, _) = state.committed_tip()?;
        state.height = height;
        let floor = {
            let txn = state.db.db.begin_read().map_err(storage("begin a read"))?;
            let undo = txn.open_table(UNDO).map_err(storage("open undo"))?;
            let first = undo.first().map_err(storage("read undo"))?;
            first.map_or(height + 1, |(k, _)| k.value().0)
        };
        // Heights with no writes have no records: only what lies above the first record is
        // known to be kept; and a window made smaller since keeps no more than it allows (the
        // collection before the next block deletes the tree's records below it).
        state.undo_floor = floor
            .max(height.saturating_sub(undo_blocks) + 1)
            .min(height + 1);
        Ok(Some(state))
    }

    /// The state directory (the database file's folder).
    pub(crate) fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The shared handle the tables read through.
    pub(crate) fn db(&self) -> &StateDb {
        &self.db
    }

    /// Writes one block: `writes[i]` are the pending writes of the `i`-th table (tagged
    /// `tags[i]`); records their undo, prunes undo records older than the kept blocks, and sets
    /// the height to the next one and the root to `root`; all in one transaction. Then deletes, in
    /// a transaction of its own, the tree's records that the block leaving the undo window
    /// replaced ([`collect_garbage`](Self::collect_garbage)).
    pub(crate) fn commit_block(
        &mut self,
        tags: &[&'static str],
        writes: &[Vec<EncodedWrite>],
        tree: TreeWrite<'_>,
    ) -> Result<(), DiskError> {
        let height = self.height + 1;
        if self.garbage {
            if let Some(gone) = self.height.checked_sub(self.undo_blocks) {
                self.collect_garbage(gone)?;
            }
            self.garbage = false;
        }
        let mut txn = self.db.db.begin_write().map_err(storage("begin a block"))?;
        self.set_durability(&mut txn, height)?;
        {
            let mut undo = txn.open_table(UNDO).map_err(storage("open undo"))?;
            let mut seq: u32 = 0;
            let mut record = Vec::new();
            for (position, (tag, writes)) in tags.iter().zip(writes).enumerate() {
                if writes.is_empty() {
                    continue;
                }
                let mut table = open_write_table(&txn, tag)?;
                for (key, value) in sorted_by_key(writes) {
                    let old = match value {
                        Some(v) => table.insert(key.as_slice(), v.as_slice()),
                        None => table.remove(key.as_slice()),
                    }
                    .map_err(storage("write an entry"))?
                    .map(|guard| guard.value().to_vec());
                    if value.is_none() && old.is_none() {
                        continue;
                    }
                    record.clear();
                    codec::encode_body_into(&(position as u32, key, old), &mut record);
                    undo.insert((height, seq), record.as_slice())
                        .map_err(storage("write undo"))?;
                    seq = seq.checked_add(1).ok_or_else(|| DiskError::Storage {
                        action: "write undo",
                        reason: "more than 2^32 writes in one block".into(),
                    })?;
                }
            }
            if let Some(stale) = height.checked_sub(self.undo_blocks) {
                undo.retain_in(..(stale + 1, 0), |_, _| false)
                    .map_err(storage("prune undo"))?;
            }
        }
        self.write_nodes(&txn, height, &tree)?;
        let floor = self
            .undo_floor
            .max(height.saturating_sub(self.undo_blocks) + 1);
        write_meta(&txn, height, tree.root, tree.entries)?;
        txn.commit().map_err(storage("commit a block"))?;
        self.height = height;
        self.undo_floor = floor;
        self.db.nodes.renew();
        // The block is committed whatever happens to the collection: one that fails is done
        // again before the next block.
        if let Some(gone) = height.checked_sub(self.undo_blocks) {
            self.garbage = self.collect_garbage(gone).is_err();
        }
        Ok(())
    }

    /// Deletes the records that the blocks at or below `gone` replaced (no block there can
    /// be undone any more), with those blocks' lists, in a transaction of its own: a block's
    /// pages and the deletions' then each fit redb's write share more often than both
    /// together. Not synced: a collection lost in a crash is done again once the state is
    /// reopened (see [`garbage`](Self::garbage)); until then the records only take room.
    fn collect_garbage(&self, gone: u64) -> Result<(), DiskError> {
        let mut txn = self
            .db
            .db
            .begin_write()
            .map_err(storage("begin a collection"))?;
        txn.set_durability(redb::Durability::None)
            .map_err(storage("set the durability"))?;
        {
            let mut nodes = txn.open_table(NODES).map_err(storage("open nodes"))?;
            let mut stale = txn.open_table(STALE).map_err(storage("open stale"))?;
            let mut fresh = txn.open_table(FRESH).map_err(storage("open fresh"))?;
            let upto = ..=(gone, [0xff; 32].as_slice());
            let mut dead = Vec::new();
            for item in stale.range(upto).map_err(storage("read stale"))? {
                let (k, _) = item.map_err(storage("read stale"))?;
                dead.push(k.value().1.to_vec());
            }
            for hash in &dead {
                nodes
                    .remove(hash.as_slice())
                    .map_err(storage("delete a node"))?;
            }
            stale
                .retain_in(upto, |_, _| false)
                .map_err(storage("prune stale"))?;
            fresh
                .retain_in(upto, |_, _| false)
                .map_err(storage("prune fresh"))?;
        }
        txn.commit().map_err(storage("commit a collection"))?;
        self.db.nodes.renew();
        Ok(())
    }

    /// Writes the state tree's new nodes of the block at `height`, lists the nodes it replaced,
    /// (deleted once the block leaves the undo window: [`collect_garbage`](Self::collect_garbage)).
    fn write_nodes(
        &self,
        txn: &redb::WriteTransaction,
        height: u64,
        tree: &TreeWrite<'_>,
    ) -> Result<(), DiskError> {
        let mut nodes = txn.open_table(NODES).map_err(storage("open nodes"))?;
        let mut stale = txn.open_table(STALE).map_err(storage("open stale"))?;
        let mut fresh = txn.open_table(FRESH).map_err(storage("open fresh"))?;
        for (hash, node) in tree.new {
            let existed = nodes
                .insert(hash.as_slice(), node.as_slice())
                .map_err(storage("write a node"))?
                .is_some();
            let mark = if existed {
                // A node a block of the window replaced is part of the tree again: it must
                // not be deleted when that block leaves the window. Every list still held is
                // looked at (the collection before this block left none below the window),
                // not only those of the blocks that can be undone: a reopened state undoes
                // no block below the height it opened at, but the lists there remain.
                let mut from = None;
                for h in height.saturating_sub(self.undo_blocks)..height {
                    if stale
                        .remove((h, hash.as_slice()))
                        .map_err(storage("write stale"))?
                        .is_some()
                    {
                        from = Some(h);
                        break;
                    }
                }
                match from {
                    Some(h) => h + 1,
                    // Stored and in use already: nothing to undo.
                    None => continue,
                }
            } else {
                0
            };
            fresh
                .insert((height, hash.as_slice()), mark)
                .map_err(storage("write fresh"))?;
        }
        for hash in tree.replaced {
            stale
                .insert((height, hash.as_slice()), ())
                .map_err(storage("write stale"))?;
        }
        Ok(())
    }

    /// Syncs the commit that leaves the state at `height` only every `sync_every` heights.
    fn set_durability(
        &self,
        txn: &mut redb::WriteTransaction,
        height: u64,
    ) -> Result<(), DiskError> {
        if height.is_multiple_of(self.sync_every) {
            return Ok(());
        }
        txn.set_durability(redb::Durability::None)
            .map_err(storage("set the durability"))
    }

    /// Undoes the committed block: restores what its writes replaced (in reverse order),
    /// deletes its undo records and sets the height to the previous one with `root`; all in
    /// one transaction. `tags` as in [`commit_block`](Self::commit_block).
    ///
    /// # Errors
    ///
    /// [`DiskError::NoUndo`] if the block's undo records were pruned (or the state started
    /// at it); [`DiskError::Storage`] and [`DiskError::Corrupt`] as their names say. The
    /// database is unchanged then.
    pub(crate) fn undo_block(
        &mut self,
        tags: &[&'static str],
        root: StateRoot,
        entries: u64,
    ) -> Result<(), DiskError> {
        let height = self.height;
        if height < self.undo_floor {
            return Err(DiskError::NoUndo {
                height,
                floor: self.undo_floor,
            });
        }
        let previous = height - 1;
        let mut txn = self.db.db.begin_write().map_err(storage("begin an undo"))?;
        self.set_durability(&mut txn, previous)?;
        {
            let mut undo = txn.open_table(UNDO).map_err(storage("open undo"))?;
            let mut records = Vec::new();
            for item in undo
                .range((height, 0)..=(height, u32::MAX))
                .map_err(storage("read undo"))?
            {
                let (_, v) = item.map_err(storage("read undo"))?;
                let record: (u32, Vec<u8>, Option<Vec<u8>>) =
                    codec::decode_body("undo record", v.value())
                        .map_err(|e| DiskError::Corrupt(e.to_string()))?;
                records.push(record);
            }
            for (position, key, old) in records.into_iter().rev() {
                let tag = tags.get(position as usize).ok_or_else(|| {
                    DiskError::Corrupt(format!("undo record for table {position}"))
                })?;
                let mut table = open_write_table(&txn, tag)?;
                match old {
                    Some(v) => table.insert(key.as_slice(), v.as_slice()).map(drop),
                    None => table.remove(key.as_slice()).map(drop),
                }
                .map_err(storage("restore an entry"))?;
            }
            undo.retain_in((height, 0)..=(height, u32::MAX), |_, _| false)
                .map_err(storage("delete undo"))?;
        }
        {
            // The block's new nodes go, the nodes it replaced stay (they are the previous
            // tree's), and a node it took back from an earlier block's list goes back there
            // (or goes, if that block left the window since).
            let mut nodes = txn.open_table(NODES).map_err(storage("open nodes"))?;
            let mut stale = txn.open_table(STALE).map_err(storage("open stale"))?;
            let mut fresh = txn.open_table(FRESH).map_err(storage("open fresh"))?;
            let range = (height, [].as_slice())..=(height, [0xff; 32].as_slice());
            let mut written = Vec::new();
            for item in fresh.range(range.clone()).map_err(storage("read fresh"))? {
                let (k, v) = item.map_err(storage("read fresh"))?;
                written.push((k.value().1.to_vec(), v.value()));
            }
            for (hash, mark) in written {
                // A node taken back from a list already pruned goes now.
                if mark == 0 || mark - 1 < self.undo_floor {
                    nodes
                        .remove(hash.as_slice())
                        .map_err(storage("delete a node"))?;
                } else {
                    stale
                        .insert((mark - 1, hash.as_slice()), ())
                        .map_err(storage("write stale"))?;
                }
            }
            fresh
                .retain_in(range.clone(), |_, _| false)
                .map_err(storage("delete fresh"))?;
            stale
                .retain_in(range, |_, _| false)
                .map_err(storage("delete stale"))?;
        }
        write_meta(&txn, previous, root, entries)?;
        txn.commit().map_err(storage("commit an undo"))?;
        self.height = previous;
        self.db.nodes.renew();
        Ok(())
    }

    /// A reader of the table tagged `tag` as of the last commit.
    pub(crate) fn reader(&self, tag: &str) -> Result<RawTable, DiskError> {
        let txn = self.db.db.begin_read().map_err(storage("begin a read"))?;
        txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&table_name(tag)))
            .map_err(storage("open a table"))
    }

    /// What the database takes on disk.
    pub(crate) fn usage(&self) -> Result<DiskUsage, DiskError> {
        let file_bytes = std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(storage("read the file size"))?;
        let txn = self.db.db.begin_write().map_err(storage("begin a read"))?;
        let stats = txn.stats().map_err(storage("read the statistics"))?;
        txn.abort().map_err(storage("end a read"))?;
        Ok(DiskUsage {
            file_bytes,
            stored_bytes: stats.stored_bytes(),
            metadata_bytes: stats.metadata_bytes(),
            fragmented_bytes: stats.fragmented_bytes(),
        })
    }

    /// The height and root `meta` records (what the last commit wrote).
    pub(crate) fn committed_tip(&self) -> Result<(u64, StateRoot), DiskError> {
        let txn = self.db.db.begin_read().map_err(storage("begin a read"))?;
        let meta = txn.open_table(META).map_err(storage("open meta"))?;
        let read = |key: &str| -> Result<Vec<u8>, DiskError> {
            meta.get(key)
                .map_err(storage("read meta"))?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| DiskError::Corrupt(format!("meta has no {key}")))
        };
        let height = <[u8; 8]>::try_from(read("height")?.as_slice())
            .map_err(|_| DiskError::Corrupt("meta height is not 8 bytes".into()))?;
        let root = <[u8; 32]>::try_from(read("root")?.as_slice())
            .map_err(|_| DiskError::Corrupt("meta root is not 32 bytes".into()))?;
        Ok((u64::from_be_bytes(height), StateRoot::from_bytes(root)))
    }

    /// The state tree `meta` records: its root node read from the database (and checked to
    /// hash to the recorded root), the rest read when reached.
    ///
    /// # Errors
    ///
    /// [`DiskError::Corrupt`] if the root node is missing or does not check, or `meta` has
    /// no entry count; [`DiskError::Storage`] if the database cannot be read.
    pub(crate) fn committed_tree(&self) -> Result<StateTree, DiskError> {
        let (_, root) = self.committed_tip()?;
        let entries = {
            let txn = self.db.db.begin_read().map_err(storage("begin a read"))?;
            let meta = txn.open_table(META).map_err(storage("open meta"))?;
            let bytes = meta
                .get("entries")
                .map_err(storage("read meta"))?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| DiskError::Corrupt("meta has no entries".into()))?;
            let count = <[u8; 8]>::try_from(bytes.as_slice())
                .map_err(|_| DiskError::Corrupt("meta entries is not 8 bytes".into()))?;
            u64::from_be_bytes(count)
        };
        let entries = usize::try_from(entries)
            .map_err(|_| DiskError::Corrupt(format!("{entries} entries do not fit in memory")))?;
        StateTree::stored(root, entries, self.db.node_source()).map_err(DiskError::Corrupt)
    }
}

/// The redb table of the state table tagged `tag`, for writing in `txn`.
fn open_write_table<'t>(
    txn: &'t redb::WriteTransaction,
    tag: &str,
) -> Result<redb::Table<'t, &'static [u8], &'static [u8]>, DiskError> {
    txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&table_name(tag)))
        .map_err(storage("open a table"))
}

/// `writes` in key order, so that consecutive writes walk neighbouring B-tree pages (already
/// copied for the transaction) instead of jumping across the tree.
fn sorted_by_key(writes: &[EncodedWrite]) -> Vec<&EncodedWrite> {
    let mut sorted: Vec<&EncodedWrite> = writes.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    sorted
}

fn write_meta(
    txn: &redb::WriteTransaction,
    height: u64,
    root: StateRoot,
    entries: u64,
) -> Result<(), DiskError> {
    let mut meta = txn.open_table(META).map_err(storage("open meta"))?;
    meta.insert("format", [FORMAT_VERSION].as_slice())
        .map_err(storage("write meta"))?;
    meta.insert("height", height.to_be_bytes().as_slice())
        .map_err(storage("write meta"))?;
    meta.insert("root", root.to_bytes().as_slice())
        .map_err(storage("write meta"))?;
    meta.insert("entries", entries.to_be_bytes().as_slice())
        .map_err(storage("write meta"))?;
    Ok(())
}

/// A cached decoded value (or the absence of one) and its last use.
struct Cached<V> {
    used: AtomicU64,
    value: Option<V>,
}

/// A table's committed entries in the database, with the cache of decoded values.
pub(crate) struct DiskTable<K, V> {
    db: Arc<Database>,
    name: String,
    /// A read transaction's view of the table as of the last commit (renewed by every
    /// `&mut self` operation that changes the table); `None` if it could not be opened (the
    /// failure is recorded, and the next renewal tries again).
    reader: Option<RawTable>,
    failure: ReadFailure,
    cache: FrozenMap<K, Box<Cached<V>>>,
    capacity: usize,
    /// The number of `&mut self` changes so far: a value's last use is the epoch it was last
    /// read in (so a read writes its stamp at most once per block).
    epoch: u64,
}

impl<K, V> fmt::Debug for DiskTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskTable")
            .field("name", &self.name)
            .field("cached", &self.cache.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn open_reader(db: &Database, name: &str) -> Result<RawTable, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    txn.open_table(TableDefinition::<&[u8], &[u8]>::new(name))
        .map_err(|e| e.to_string())
}

impl<K, V> DiskTable<K, V>
where
    K: Eq + Hash + Clone + Serialize,
    V: Serialize + DeserializeOwned,
{
    /// The table tagged `tag` in `db` (written by [`DiskState::create`]).
    pub(crate) fn open(db: &StateDb, tag: &str) -> Self {
        let mut table = Self {
            reader: None,
            db: db.db.clone(),
            name: table_name(tag),
            failure: db.failure.clone(),
            cache: FrozenMap::new(),
            capacity: db.cache_entries,
            epoch: 0,
        };
        table.renew_reader();
        table
    }

    /// Records a failed read (the first since the state last looked is kept).
    fn fail(&self, reason: String) {
        record(&self.failure, &self.name, reason);
    }

    fn renew_reader(&mut self) {
        self.reader = match open_reader(&self.db, &self.name) {
            Ok(reader) => Some(reader),
            Err(reason) => {
                self.fail(reason);
                None
            }
        };
    }

    /// The committed value of `key`, from the cache or read and decoded into it. A read that
    /// fails (an I/O error, an entry that does not decode) answers `None`, is not cached, and
    /// is recorded for [`StateDb::take_read_failure`].
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let now = self.epoch;
        if let Some(c) = self.cache.get(key) {
            if c.used.load(Ordering::Relaxed) != now {
                c.used.store(now, Ordering::Relaxed);
            }
            return c.value.as_ref();
        }
        let Some(reader) = &self.reader else {
            self.fail("the table could not be opened".into());
            return None;
        };
        let mut body = Vec::with_capacity(64);
        codec::encode_body_into(key, &mut body);
        let value = match reader.get(body.as_slice()) {
            Ok(Some(guard)) => match codec::decode_body::<V>("state entry value", guard.value()) {
                Ok(value) => Some(value),
                Err(e) => {
                    self.fail(e.to_string());
                    return None;
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.fail(e.to_string());
                return None;
            }
        };
        let cached = Box::new(Cached {
            used: AtomicU64::new(now),
            value,
        });
        self.cache.insert(key.clone(), cached).value.as_ref()
    }

    /// Hands every committed entry to `visit` as `(key body, value body)`, in key order; a
    /// failed read ends the visit early and is recorded as in [`get`](Self::get).
    pub(crate) fn visit(&self, visit: &mut dyn FnMut(&[u8], &[u8])) {
        let Some(reader) = &self.reader else {
            self.fail("the table could not be opened".into());
            return;
        };
        let range = match reader.range::<&[u8]>(..) {
            Ok(range) => range,
            Err(e) => return self.fail(e.to_string()),
        };
        for item in range {
            match item {
                Ok((k, v)) => visit(k.value(), v.value()),
                Err(e) => return self.fail(e.to_string()),
            }
        }
    }

    /// After the block's writes were committed to the database: caches the new values, renews
    /// the reader and trims the cache.
    pub(crate) fn committed(&mut self, writes: impl IntoIterator<Item = (K, Option<V>)>) {
        let now = self.epoch;
        let map = self.cache.as_mut();
        for (k, value) in writes {
            map.insert(
                k,
                Box::new(Cached {
                    used: AtomicU64::new(now),
                    value,
                }),
            );
        }
        self.refresh();
    }

    /// After the database changed `keys` by other means (an undo): forgets them, renews the
    /// reader and trims the cache.
    pub(crate) fn changed<'a>(&mut self, keys: impl IntoIterator<Item = &'a K>)
    where
        K: 'a,
    {
        let map = self.cache.as_mut();
        for k in keys {
            map.remove(k);
        }
        self.refresh();
    }

    /// Renews the reader and trims the cache.
    fn refresh(&mut self) {
        self.renew_reader();
        self.trim();
    }

    /// Starts a new epoch of use stamps, and trims the cache.
    pub(crate) fn trim(&mut self) {
        self.evict();
        self.epoch += 1;
    }

    /// Drops the least recently used values (by epoch, ties broken arbitrarily) down to three
    /// quarters of the capacity, if the cache holds more than the capacity.
    fn evict(&mut self) {
        let capacity = self.capacity;
        let map = self.cache.as_mut();
        if map.len() <= capacity {
            return;
        }
        let keep = capacity - capacity / 4;
        if keep == 0 {
            map.clear();
            return;
        }
        let mut uses: Vec<u64> = map.values_mut().map(|c| *c.used.get_mut()).collect();
        let cut = uses.len() - keep;
        let (_, threshold, _) = uses.select_nth_unstable(cut);
        let threshold = *threshold;
        // Of the values last used in the threshold's epoch, keep only as many as fit.
        let mut ties = keep - uses[cut..].iter().filter(|&&u| u > threshold).count();
        map.retain(|_, c| {
            let used = *c.used.get_mut();
            if used > threshold {
                return true;
            }
            if used == threshold && ties > 0 {
                ties -= 1;
                return true;
            }
            false
        });
    }

    /// How many values are cached.
    pub(crate) fn cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_send_sync_static_and_lower_case() {
        fn assert_bounds<E: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<DiskError>();
        let messages = [
            DiskError::Open {
                dir: PathBuf::from("state"),
                reason: "denied".into(),
            }
            .to_string(),
            storage("commit a block")("disk full").to_string(),
            DiskError::NoUndo {
                height: 1,
                floor: 2,
            }
            .to_string(),
            DiskError::Corrupt("meta has no height".into()).to_string(),
        ];
        for m in messages {
            assert!(m.starts_with(|c: char| c.is_ascii_lowercase()), "{m}");
        }
    }

    fn body<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        codec::encode_body_into(value, &mut out);
        out
    }

    /// Writes `value` under `key` in the table tagged `tag`, behind the state's back.
    fn overwrite(db: &StateDb, tag: &str, key: &[u8], value: &[u8]) {
        let txn = db.db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&table_name(tag)))
            .unwrap()
            .insert(key, value)
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_read_that_fails_answers_absent_is_recorded_once_and_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            (body(&1u32), body("one")),
            // A string announcing 127 bytes and holding none: it does not decode.
            (body(&2u32), vec![0x7f]),
        ];
        let mut disk = DiskState::create(
            &DiskConfig::new(dir.path()),
            &[("t", entries)],
            0,
            TreeWrite::root_only(crate::smt::EMPTY_ROOT),
            1,
        )
        .unwrap();
        let mut table: DiskTable<u32, String> = DiskTable::open(disk.db(), "t");
        assert_eq!(table.get(&1).map(String::as_str), Some("one"));
        assert!(disk.db().take_read_failure().is_none());

        assert_eq!(table.get(&2), None);
        let failure = disk
            .db()
            .take_read_failure()
            .expect("the failed read is recorded");
        assert!(matches!(&failure, DiskError::Read { table, .. } if table == "state:t"));
        assert!(
            failure
                .to_string()
                .starts_with("cannot read state table state:t: "),
            "{failure}"
        );
        assert!(disk.db().take_read_failure().is_none(), "taken once");
        let mut listed = Vec::new();
        table.visit(&mut |k, v| listed.push((k.to_vec(), v.to_vec())));
        assert_eq!(
            listed.len(),
            2,
            "listing copies bodies without decoding them"
        );

        // Not cached as absent: once the entry is repaired, the next read finds it.
        assert_eq!(table.get(&2), None);
        assert!(disk.db().take_read_failure().is_some());
        let repaired = vec![(body(&2u32), Some(body("two")))];
        disk.commit_block(
            &["t"],
            &[repaired],
            TreeWrite::root_only(crate::smt::EMPTY_ROOT),
        )
        .unwrap();
        table.changed(&[2]);
        assert_eq!(table.get(&2).map(String::as_str), Some("two"));
        assert!(disk.db().take_read_failure().is_none());
    }

    #[test]
    fn writes_resting_on_a_failed_read_are_refused_and_change_nothing() {
        use crate::hash::AccountId;
        use crate::state::{AccountState, State, ACCOUNTS_TABLE};
        let dir = tempfile::tempdir().unwrap();
        let key = crate::tx::Keypair::from_seed(&[5; 32]).public();
        let (damaged, other) = (
            AccountId::from_bytes([1; 32]),
            AccountId::from_bytes([2; 32]),
        );
        let account = |next_nonce| AccountState { next_nonce, key };
        let mut state = State::<()>::genesis(|_, core| core.accounts.insert(damaged, account(3)));
        state
            .move_to_disk(&DiskConfig::new(dir.path()), 0, 2)
            .unwrap();
        let db = state.disk.as_ref().unwrap().db().clone();
        overwrite(&db, ACCOUNTS_TABLE, &body(&damaged), &[0xff]);
        // An empty block renews the tables' readers: from now on they see the damage.
        state.commit_untracked().unwrap();
        let tip = state.disk_tip().unwrap();

        // A transaction reads the damaged account (absent, as far as it can tell) and writes
        // another: the commit is refused with the read's failure.
        let seen = state.bench_apply(
            key,
            2,
            0,
            crate::hash::TxId::from_bytes([0; 32]),
            |_, core, _| {
                let seen = core.accounts.get(&damaged).cloned();
                core.accounts.insert(other, account(1));
                Ok::<_, ()>(seen)
            },
        );
        assert_eq!(seen, Ok(None));
        let Err(refused) = state.commit_untracked() else {
            panic!("a commit resting on a failed read went through");
        };
        assert!(
            refused
                .to_string()
                .contains("cannot read state table state:accounts"),
            "{refused}"
        );
        assert_eq!(state.disk_tip().unwrap(), tip, "nothing was written");
        assert!(
            state.account(&other).is_none(),
            "the pending writes were dropped"
        );

        // Repaired, the same writes commit.
        overwrite(&db, ACCOUNTS_TABLE, &body(&damaged), &body(&account(3)));
        state.commit_untracked().unwrap();
        assert_eq!(state.account(&damaged), Some(&account(3)));
    }

    // -----------------------------------------------------------------------------------------
    // The state tree's nodes on disk, against the tree in memory.

    use std::collections::{BTreeSet, HashSet};

    use proptest::prelude::*;

    use crate::hash::{Digest, StateKey};
    use crate::smt::{StateUpdate, EMPTY_ROOT, MAX_RECORD_LEN, RECORD_LEVELS};

    /// A pool of keys: some uniform, some sharing long prefixes (deep paths, collapses).
    fn pool_key(i: u8) -> StateKey {
        let mut b = [0u8; 32];
        if i.is_multiple_of(3) {
            b = crate::hash::domain::STATE_KEY.hash(&[i]);
        } else {
            b[0] = 0x5a;
            b[31] = i;
        }
        StateKey::from_bytes(b)
    }

    fn pool() -> Vec<StateKey> {
        (0..24).map(pool_key).collect()
    }

    /// A batch over the pool: values from four digests, so that a leaf (and with it whole
    /// subtrees) comes back to a value it had, and nodes a block replaced come back.
    fn batch_strategy() -> impl Strategy<Value = Vec<StateUpdate>> {
        proptest::collection::btree_map(
            0u8..24,
            proptest::option::weighted(0.7, (0u8..4).prop_map(|v| Digest::from_bytes([v; 32]))),
            0..10,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(k, v)| (pool_key(k), v))
                .collect::<Vec<_>>()
        })
        .prop_map(|mut b| {
            b.sort_by_key(|(k, _)| *k);
            b
        })
    }

    /// A block to apply, or the last one undone.
    #[derive(Clone, Debug)]
    enum Step {
        Apply(Vec<StateUpdate>),
        Undo,
    }

    fn steps_strategy() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![3 => batch_strategy().prop_map(Step::Apply), 1 => Just(Step::Undo)],
            1..16,
        )
    }

    /// The node hashes the database holds.
    fn stored_nodes(disk: &DiskState) -> BTreeSet<Vec<u8>> {
        let txn = disk.db.db.begin_read().unwrap();
        let nodes = txn.open_table(NODES).unwrap();
        nodes
            .iter()
            .unwrap()
            .map(|item| item.unwrap().0.value().to_vec())
            .collect()
    }

    /// Everything the tree on disk must agree on with the tree in memory.
    fn assert_same_tree(disk: &StateTree, memory: &StateTree) -> Result<(), TestCaseError> {
        prop_assert_eq!(disk.root(), memory.root());
        prop_assert_eq!(disk.len(), memory.len());
        for key in pool() {
            prop_assert_eq!(disk.get(&key), memory.get(&key));
            let proof = disk.prove(&key);
            prop_assert_eq!(&proof, &memory.prove(&key));
            prop_assert!(proof
                .verify(&memory.root(), &key, memory.get(&key).as_ref())
                .is_ok());
        }
        prop_assert!(disk.iter().eq(memory.iter()));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Random blocks and undos, committed to the database: the tree read back from it (and
        /// the one kept after each commit, with its lower levels held by hash) has the memory
        /// tree's root, entries and proofs at every step; so does every tree of the undo
        /// window; and the database holds exactly the nodes of the window's trees.
        #[test]
        fn the_tree_on_disk_gives_the_memory_trees_roots_and_proofs(
            initial in batch_strategy(),
            steps in steps_strategy(),
            keep_depth in 0usize..10,
        ) {
            const UNDO_BLOCKS: u64 = 3;
            let dir = tempfile::tempdir().unwrap();
            // Commits are atomic, not synced: a crash is not what this tests.
            let config = DiskConfig::new(dir.path())
                .tree_memory_depth(keep_depth)
                .sync_every(u64::MAX);
            let mut memory = StateTree::new();
            memory.apply(&initial).unwrap();
            let (stored, nodes) = memory.persist(keep_depth);
            let write = TreeWrite {
                new: &nodes,
                replaced: &[],
                root: memory.root(),
                entries: memory.len() as u64,
            };
            let mut disk = DiskState::create(&config, &[], 0, write, UNDO_BLOCKS).unwrap();
            let mut tree = stored;
            tree.attach(disk.db().node_source());
            // The trees by height, in memory and as kept after each commit.
            let mut history = vec![(memory.clone(), tree.clone())];
            let mut top = 0u64;
            for step in steps {
                let height = history.len() as u64 - 1;
                match step {
                    Step::Apply(batch) => {
                        memory.apply(&batch).unwrap();
                        let persisted = commit_batch(&mut disk, &tree, &batch, keep_depth);
                        prop_assert!(persisted.deepest_in_memory().is_none_or(|d| d < keep_depth));
                        tree = persisted;
                        history.push((memory.clone(), tree.clone()));
                        top = top.max(height + 1);
                    }
                    Step::Undo => {
                        let allowed = height > 0 && height + UNDO_BLOCKS > top;
                        let (prev_memory, prev_tree) = match history.len() {
                            n if n >= 2 => history[n - 2].clone(),
                            _ => history[0].clone(),
                        };
                        let undone = disk.undo_block(&[], prev_tree.root(), prev_tree.len() as u64);
                        prop_assert_eq!(undone.is_ok(), allowed, "undo at {}: {:?}", height, undone.err());
                        if allowed {
                            history.pop();
                            memory = prev_memory;
                            tree = prev_tree;
                        }
                    }
                }
                prop_assert!(disk.db().take_read_failure().is_none());
                assert_same_tree(&tree, &memory)?;
                let reopened = disk.committed_tree().unwrap();
                assert_same_tree(&reopened, &memory)?;
                let height = history.len() as u64 - 1;
                prop_assert_eq!(disk.committed_tip().unwrap(), (height, memory.root()));
                // Every tree of the window still proves; the database holds their nodes and no
                // others.
                let low = top.saturating_sub(UNDO_BLOCKS).min(height) as usize;
                let mut expected: HashSet<Vec<u8>> = HashSet::new();
                for (m, t) in &history[low..] {
                    assert_same_tree(t, m)?;
                    expected.extend(m.record_hashes().into_iter().map(|h| h.to_vec()));
                }
                let held = stored_nodes(&disk);
                prop_assert_eq!(held.len(), expected.len());
                prop_assert!(held.iter().all(|h| expected.contains(h)));
                prop_assert!(disk.db().take_read_failure().is_none());
            }
        }
    }

    /// Commits `batch` to `disk` on top of `tree` (as the chain does) and returns the new tree,
    /// its nodes from `keep_depth` down held by hash.
    fn commit_batch(
        disk: &mut DiskState,
        tree: &StateTree,
        batch: &[StateUpdate],
        keep_depth: usize,
    ) -> StateTree {
        let mut next = tree.clone();
        let replaced = next.apply_tracked(batch).unwrap();
        let (persisted, nodes) = next.persist(keep_depth);
        let write = TreeWrite {
            new: &nodes,
            replaced: &replaced,
            root: next.root(),
            entries: next.len() as u64,
        };
        disk.commit_block(&[], &[], write).unwrap();
        persisted
    }

    /// A batch giving every key of the pool the value `v` (a block that replaces the whole
    /// tree).
    fn every_key(v: u8) -> Vec<StateUpdate> {
        let mut batch: Vec<StateUpdate> = pool()
            .into_iter()
            .map(|k| (k, Some(Digest::from_bytes([v; 32]))))
            .collect();
        batch.sort_unstable_by_key(|(k, _)| *k);
        batch
    }

    /// A state on disk in `config`'s directory whose tree holds every key of the pool at value
    /// 1, with an undo window of `window` blocks: the state, its tree (reading from it) and
    /// the same tree in memory.
    fn created_with_every_key_at_one(
        config: &DiskConfig,
        window: u64,
    ) -> (DiskState, StateTree, StateTree) {
        let mut memory = StateTree::new();
        memory.apply(&every_key(1)).unwrap();
        let (mut stored, nodes) = memory.persist(4);
        let write = TreeWrite {
            new: &nodes,
            replaced: &[],
            root: memory.root(),
            entries: memory.len() as u64,
        };
        let disk = DiskState::create(config, &[], 0, write, window).unwrap();
        stored.attach(disk.db().node_source());
        (disk, stored, memory)
    }

    #[test]
    fn records_of_blocks_gone_from_the_undo_window_are_collected_before_the_next_block() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path()).sync_every(u64::MAX);
        // A long undo window: every block's replaced records stay listed.
        let (mut disk, mut tree, mut memory) = created_with_every_key_at_one(&config, 100);
        let mut trees = vec![memory.clone()];
        for v in 2..5 {
            tree = commit_batch(&mut disk, &tree, &every_key(v), 4);
            memory.apply(&every_key(v)).unwrap();
            trees.push(memory.clone());
        }
        let all: HashSet<Vec<u8>> = trees
            .iter()
            .flat_map(|t| t.record_hashes())
            .map(|h| h.to_vec())
            .collect();
        assert_eq!(
            stored_nodes(&disk).len(),
            all.len(),
            "every block's records are kept"
        );
        drop(tree);
        drop(disk);

        // Reopened with a window of one block: the lists of heights 1 and 2 are now below it,
        // and height 4 sets every value back to height 0's, whose records are on the list of
        // block 1: collected before the block, they are written again as new.
        let mut disk = DiskState::open(&config, 1).unwrap().unwrap();
        let mut tree = disk.committed_tree().unwrap();
        tree = commit_batch(&mut disk, &tree, &every_key(1), 4);
        memory.apply(&every_key(1)).unwrap();
        assert_same_tree(&tree, &memory).unwrap();
        assert_same_tree(&disk.committed_tree().unwrap(), &memory).unwrap();
        // Only the trees the window can still reach (heights 3 and 4) have records left.
        let window: HashSet<Vec<u8>> = [trees[3].clone(), memory.clone()]
            .iter()
            .flat_map(|t| t.record_hashes())
            .map(|h| h.to_vec())
            .collect();
        let held = stored_nodes(&disk);
        assert_eq!(held.len(), window.len());
        assert!(held.iter().all(|h| window.contains(h)));
        assert!(disk.db().take_read_failure().is_none());
    }

    #[test]
    fn a_record_set_back_after_a_reopen_is_taken_off_the_list_of_the_block_that_replaced_it() {
        const WINDOW: u64 = 3;
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path()).sync_every(u64::MAX);
        let (mut disk, mut tree, _) = created_with_every_key_at_one(&config, WINDOW);
        for v in 2..5 {
            tree = commit_batch(&mut disk, &tree, &every_key(v), 4);
        }
        drop(tree);
        drop(disk);

        // Reopened at height 3 with the same window: the blocks wrote no table entries, so
        // no undo records, and the state cannot undo below the height it opened at; the lists
        // of heights 1 to 3 are still there.
        let mut disk = DiskState::open(&config, WINDOW).unwrap().unwrap();
        let mut tree = disk.committed_tree().unwrap();
        // Height 4 sets every value back to height 1's: its records come back from the list
        // of block 2, which replaced them.
        tree = commit_batch(&mut disk, &tree, &every_key(2), 4);
        let mut memory = StateTree::new();
        memory.apply(&every_key(2)).unwrap();
        // Heights 5 and 6 change one key each: most of those records stay in the tree while
        // block 2 leaves the window (at height 5) and its list is collected.
        for (i, v) in [(0u8, 7u8), (3, 8)] {
            let batch = vec![(pool_key(i), Some(Digest::from_bytes([v; 32])))];
            tree = commit_batch(&mut disk, &tree, &batch, 4);
            memory.apply(&batch).unwrap();
            assert_same_tree(&tree, &memory).unwrap();
            assert_same_tree(&disk.committed_tree().unwrap(), &memory).unwrap();
            assert!(disk.db().take_read_failure().is_none());
        }
    }

    #[test]
    fn compaction_gives_back_the_space_of_deleted_entries_and_keeps_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path()).sync_every(u64::MAX);
        // A state holding 16 MB of entries (a bulk load), and the tree of the pool's keys.
        let bulk: Vec<EncodedEntry> = (0u32..4_000)
            .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; 4_096]))
            .collect();
        let mut memory = StateTree::new();
        memory.apply(&every_key(1)).unwrap();
        let (_, nodes) = memory.persist(4);
        let write = TreeWrite {
            new: &nodes,
            replaced: &[],
            root: memory.root(),
            entries: memory.len() as u64,
        };
        let mut disk = DiskState::create(&config, &[("t", bulk.clone())], 0, write, 1).unwrap();
        // A block deletes every entry; the next one drops its undo records (a window of one).
        let delete: Vec<EncodedWrite> = bulk.iter().map(|(k, _)| (k.clone(), None)).collect();
        let root = TreeWrite::root_only(memory.root());
        let root = TreeWrite {
            entries: memory.len() as u64,
            ..root
        };
        disk.commit_block(&["t"], &[delete], root).unwrap();
        disk.commit_block(&["t"], &[Vec::new()], root).unwrap();
        let used = disk.usage().unwrap();
        assert!(used.stored_bytes < 1_000_000, "{used:?}");

        // Refused while the state holds the database open, and the state goes on.
        let refused = compact(&config);
        assert!(
            matches!(refused, Err(DiskError::Open { .. })),
            "{refused:?}"
        );
        disk.commit_block(&["t"], &[vec![(vec![9], Some(vec![9]))]], root)
            .unwrap();
        drop(disk);

        let file = || std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        let before = file();
        let done = compact(&config).unwrap();
        assert_eq!(done.file_bytes_before, before);
        assert!(
            done.file_bytes_after * 4 < done.file_bytes_before,
            "{done:?}"
        );
        assert_eq!(file(), done.file_bytes_after);
        // The same state, which takes the next block.
        let mut disk = DiskState::open(&config, 1).unwrap().unwrap();
        assert_eq!(disk.committed_tip().unwrap(), (3, memory.root()));
        assert_same_tree(&disk.committed_tree().unwrap(), &memory).unwrap();
        let table: DiskTable<u32, Vec<u8>> = DiskTable::open(disk.db(), "t");
        assert_eq!(table.get(&0), None);
        disk.commit_block(&["t"], &[vec![(vec![10], Some(vec![10]))]], root)
            .unwrap();
        assert_eq!(disk.committed_tip().unwrap().0, 4);
    }

    #[test]
    fn an_import_in_chunks_leaves_exactly_the_records_of_the_whole_tree() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path());
        let mut leaves: Vec<StateUpdate> = (0u16..600)
            .map(|i| {
                let key =
                    StateKey::from_bytes(crate::hash::domain::STATE_KEY.hash(&i.to_be_bytes()));
                (key, Some(Digest::from_bytes([i as u8; 32])))
            })
            .collect();
        leaves.sort_by_key(|(k, _)| *k);
        let mut memory = StateTree::new();
        memory.apply(&leaves).unwrap();

        // Chunks of ascending, disjoint key ranges, as a snapshot's: each rewrites the upper
        // records the previous ones wrote, which are deleted at once.
        let mut disk = DiskState::begin_import(&config, &["t"], 7, 1).unwrap();
        let mut tree = StateTree::new();
        tree.attach(disk.db().node_source());
        for chunk in leaves.chunks(50) {
            let mut next = tree.clone();
            let replaced = next.apply_tracked(chunk).unwrap();
            let (persisted, nodes) = next.persist(4);
            let write = TreeWrite {
                new: &nodes,
                replaced: &replaced,
                root: next.root(),
                entries: next.len() as u64,
            };
            disk.import_chunk(&["t"], &[Vec::new()], write).unwrap();
            tree = persisted;
        }
        disk.finish_import(tree.root(), tree.len() as u64).unwrap();
        assert_same_tree(&tree, &memory).unwrap();
        let expected: BTreeSet<Vec<u8>> = memory
            .record_hashes()
            .into_iter()
            .map(|h| h.to_vec())
            .collect();
        assert_eq!(stored_nodes(&disk), expected);
        drop((disk, tree));

        let disk = DiskState::open(&config, 1).unwrap().unwrap();
        assert_eq!(disk.committed_tip().unwrap(), (7, memory.root()));
        assert_same_tree(&disk.committed_tree().unwrap(), &memory).unwrap();
    }

    #[test]
    fn compacting_a_directory_without_a_state_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let refused = compact(&DiskConfig::new(dir.path()));
        assert!(
            matches!(&refused, Err(DiskError::Open { reason, .. }) if reason.contains("no state database")),
            "{refused:?}"
        );
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn a_state_reopened_with_a_smaller_undo_window_undoes_no_block_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path()).sync_every(u64::MAX);
        let root = TreeWrite::root_only(EMPTY_ROOT);
        let mut disk = DiskState::create(&config, &[("t", Vec::new())], 0, root, 100).unwrap();
        // Three blocks, each writing an entry: each leaves undo records.
        for h in 1u8..4 {
            disk.commit_block(&["t"], &[vec![(vec![h], Some(vec![h]))]], root)
                .unwrap();
        }
        drop(disk);
        // Reopened with a window of one block: only the last block can be undone, whatever
        // undo records the larger window left (the tree's lists below it are collected before
        // the next block, so an undo there would find its records gone).
        let mut disk = DiskState::open(&config, 1).unwrap().unwrap();
        disk.undo_block(&["t"], EMPTY_ROOT, 0).unwrap();
        let refused = disk.undo_block(&["t"], EMPTY_ROOT, 0);
        assert!(
            matches!(
                refused,
                Err(DiskError::NoUndo {
                    height: 2,
                    floor: 3
                })
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_damaged_or_missing_node_is_reported_and_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<StateKey> = (0..40).map(pool_key).collect();
        let mut memory = StateTree::new();
        let batch: Vec<StateUpdate> = {
            let mut b: Vec<_> = keys
                .iter()
                .map(|k| (*k, Some(Digest::from_bytes([1; 32]))))
                .collect();
            b.sort_by_key(|(k, _)| *k);
            b
        };
        memory.apply(&batch).unwrap();
        let (_, nodes) = memory.persist(0);
        let write = TreeWrite {
            new: &nodes,
            replaced: &[],
            root: memory.root(),
            entries: memory.len() as u64,
        };
        let disk = DiskState::create(&DiskConfig::new(dir.path()), &[], 0, write, 1).unwrap();
        // The record holding a leaf, rewritten with another value behind the state's back.
        let leaf: Vec<u8> = [0u8]
            .into_iter()
            .chain(keys[7].to_bytes())
            .chain([1; 32])
            .collect();
        let (victim, record) = nodes
            .iter()
            .find_map(|(hash, r)| {
                let at = r.windows(leaf.len()).position(|w| w == leaf.as_slice())?;
                Some((*hash, r.clone(), at))
            })
            .map(|(hash, r, at)| (hash, (r, at)))
            .unwrap();
        let (mut damaged, at) = record;
        damaged[at + 64] ^= 1;
        {
            let txn = disk.db.db.begin_write().unwrap();
            txn.open_table(NODES)
                .unwrap()
                .insert(victim.as_slice(), damaged.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        disk.db.nodes.renew();
        let tree = disk.committed_tree().unwrap();
        assert_eq!(tree.get(&keys[0]), memory.get(&keys[0]));
        assert!(disk.db().take_read_failure().is_none());
        // The damaged leaf is not taken for the key's value, and its proof does not verify.
        assert_eq!(tree.get(&keys[7]), None);
        let failure = disk
            .db()
            .take_read_failure()
            .expect("the damage is recorded");
        assert!(
            failure
                .to_string()
                .starts_with("cannot read state table nodes: state tree record "),
            "{failure}"
        );
        assert!(failure.to_string().contains("hashes to"), "{failure}");
        let proof = tree.prove(&keys[7]);
        assert!(proof
            .verify(&tree.root(), &keys[7], Some(&Digest::from_bytes([1; 32])))
            .is_err());
        assert!(proof.verify(&tree.root(), &keys[7], None).is_err());
        // A batch that reaches it leaves the subtree as it was, and the failure is recorded.
        let mut next = tree.clone();
        next.apply_tracked(&[(keys[7], Some(Digest::from_bytes([2; 32])))])
            .unwrap();
        assert!(disk.db().take_read_failure().is_some());

        // The root node missing: the tree does not open.
        {
            let txn = disk.db.db.begin_write().unwrap();
            txn.open_table(NODES)
                .unwrap()
                .remove(memory.root().to_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        disk.db.nodes.renew();
        let Err(DiskError::Corrupt(why)) = disk.committed_tree() else {
            panic!("a tree without its root node opened");
        };
        assert!(why.contains("is missing"), "{why}");
    }

    #[test]
    fn nodes_read_back_are_checked_against_their_hash_length_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let write = TreeWrite::root_only(EMPTY_ROOT);
        let disk = DiskState::create(&DiskConfig::new(dir.path()), &[], 0, write, 1).unwrap();
        let root = StateRoot::from_bytes([9; 32]);
        let leaf = |k: u8| [0u8].into_iter().chain([k; 64]);
        let interior = |a: Vec<u8>, b: Vec<u8>| [1u8].into_iter().chain(a).chain(b).collect();
        // Four interior levels over leaves: a record's full depth.
        let full = (0..RECORD_LEVELS).fold(leaf(1).collect::<Vec<u8>>(), |below, _| {
            interior(below.clone(), below)
        });
        // Five interior levels, each over an empty side.
        let too_deep = (0..=RECORD_LEVELS).fold(leaf(1).collect::<Vec<u8>>(), |below, _| {
            interior(below, vec![2])
        });
        let stub = |h: u8| [3u8].into_iter().chain([h; 32]);
        let high_stub: Vec<u8> = interior(stub(4).collect(), leaf(2).collect());
        for (bytes, expect) in [
            (vec![0u8; 64], "it ends 1 bytes early"),
            (vec![0u8; 66], "1 bytes left over"),
            (
                vec![0u8; MAX_RECORD_LEN + 1],
                "1056 bytes, a record has at most 1055",
            ),
            (vec![7u8; 65], "unknown tag 7 at level 0"),
            (vec![2u8], "tag 2 at level 0"),
            (interior(vec![2], vec![2]), "an interior node over nothing"),
            (
                too_deep,
                "an interior node at level 4, below the record's 4",
            ),
            (high_stub, "tag 3 at level 1"),
            (full, "hashes to"),
            (leaf(0).collect(), "hashes to"),
        ] {
            let txn = disk.db.db.begin_write().unwrap();
            txn.open_table(NODES)
                .unwrap()
                .insert(root.to_bytes().as_slice(), bytes.as_slice())
                .unwrap();
            txn.commit().unwrap();
            disk.db.nodes.renew();
            let why = StateTree::stored(root, 1, disk.db().node_source())
                .err()
                .unwrap();
            assert!(why.contains(expect), "{why}");
        }
    }

    #[test]
    fn a_directory_without_a_state_opens_as_none_and_a_created_one_reports_its_tip() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path().join("state"));
        assert!(DiskState::open(&config, 1).unwrap().is_none());
        let root = StateRoot::from_bytes([3; 32]);
        let created = DiskState::create(
            &config,
            &[("t", Vec::new())],
            7,
            TreeWrite::root_only(root),
            1,
        )
        .unwrap();
        assert_eq!(created.committed_tip().unwrap(), (7, root));
        drop(created);
        let opened = DiskState::open(&config, 1).unwrap().unwrap();
        assert_eq!(opened.committed_tip().unwrap(), (7, root));
        let usage = opened.usage().unwrap();
        assert!(usage.file_bytes > 0);
    }
}
