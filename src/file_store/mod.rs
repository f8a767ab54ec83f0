//! A crash-safe [`Store`] in one append-only file.
//!
//! Every write appends a checksummed record (a block, or an update of the main chain) to a log
//! that opens with a versioned header; an index of the blocks and the main chain is rebuilt in
//! memory when the file is opened. Block bytes stay on disk and are read back, checksum
//! verified, on demand.
//!
//! **Durability.** A write is acknowledged only once it is synced: with
//! [`SyncPolicy::EveryAppend`] (the default) every [`put_block`](Store::put_block) and
//! [`set_main_chain`](Store::set_main_chain) syncs before returning; with
//! [`SyncPolicy::Group`], writes are synced in groups and [`Store::sync`] is the acknowledgement
//! point. The [`Chain`](crate::chain::Chain) calls `sync` after every block it accepts, so on a
//! chain both policies acknowledge every block, and `Group` does it with one sync per block
//! instead of two.
//!
//! **Recovery.** Opening the file scans it. Two small anchors after the header, the only bytes
//! ever rewritten, record how much of the file the store has acknowledged as durable; a new
//! anchor is written after every sync. A file shorter than that was cut short after the fact
//! (an incomplete copy, a truncation) and is refused with [`FileStoreError::Truncated`], naming
//! both lengths; damage to acknowledged data is refused with [`FileStoreError::CorruptRecord`]
//! naming its offset, and a damaged header or pair of anchors with
//! [`FileStoreError::CorruptHeader`]. The file is then left untouched for the operator. Past the
//! acknowledged length, a damaged record in a tail that was never synced (a write torn by a crash
//! or power cut) is truncated away, with [`Recovery`] saying how many bytes went. Each record
//! also says how much of the file was synced when it was written, so a valid record after damage
//! proves the damaged bytes were durable (refused, not truncated). The anchor acknowledging a
//! sync is written as the sync returns and reaches the disk with the next sync, a clean close or
//! the next open (so a sync costs no second flush). A killed process loses nothing of it, but a
//! power cut may; the records of that last sync then count as durable only if a later record
//! says so, and damage or a cut confined to them passes for a torn tail. A file written by
//! another format version is refused with [`FileStoreError::UnsupportedVersion`].
//!
//! **New stores.** [`FileStore::open`] creates a missing file atomically, its header and first
//! anchor in place; [`FileStoreBuilder::create_disk`] writes them to an empty [`Disk`]. Opening
//! never takes an empty or damaged file for a new store.
//!
//! **Locking.** The file is locked exclusively while open, so a second writer, in this process
//! or another, gets [`FileStoreError::Locked`].
//!
//! **Fault injection.** The store reaches its file only through the small [`Disk`] trait;
//! [`FileStoreBuilder::open_disk`] and [`FileStoreBuilder::create_disk`] put it on any
//! implementation, such as a test disk that loses unsynced bytes or tears writes.
//!
//! ```
//! use medledger::ChainBuilder;
//! use medledger::file_store::{FileStore, SyncPolicy};
//! use medledger::pow::ProofOfWork;
//! use std::time::Duration;
//!
//! let dir = std::env::temp_dir().join(format!("medledger-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("ledger.mlg");
//! # let _ = std::fs::remove_file(&path);
//! let store = FileStore::builder()
//!     .sync_policy(SyncPolicy::Group { max_records: 64, max_delay: Duration::from_millis(10) })
//!     .open(&path)?;
//! let mut chain = ChainBuilder::new("doc", ProofOfWork::regtest())
//!     .genesis_time(1_700_000_000)
//!     .store(store)
//!     .build()?;
//! let block = chain.mine(vec![], 1_700_000_600)?;
//! chain.append(block)?;
//! let (tip, root) = (chain.tip(), chain.state().root());
//! drop(chain);
//!
//! // Reopened, the chain resumes where it stopped.
//! let chain = ChainBuilder::new("doc", ProofOfWork::regtest())
//!     .genesis_time(1_700_000_000)
//!     .store(FileStore::open(&path)?)
//!     .build()?;
//! assert_eq!((chain.tip(), chain.state().root()), (tip, root));
//! # drop(chain);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod disk;
mod format;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::block::MAX_BLOCK_LEN;
use crate::hash::BlockHash;
use crate::store::{Store, StoreError, StoredCheckpoint};

pub use disk::{Disk, FileDisk};
pub use format::MAX_RECORD_LEN;

use format::{
    anchor_offset, check_file_header, decode_anchor, encode_anchor, encode_record, main_body,
    new_file_prefix, Anchor, HeaderCheck, PartOf, Record, Scanner, ANCHOR_LEN, BLOCK_KIND,
    BLOCK_PREFIX_LEN, CHECKPOINT_PREFIX_LEN, DATA_START, FILE_HEADER_LEN, FORMAT_VERSION,
    MAX_MAIN_HASHES_PER_RECORD, RECORD_HEADER_LEN,
};

/// The file format version this build writes, and the newest it reads.
pub const FILE_FORMAT_VERSION: u32 = FORMAT_VERSION;

/// Why a [`FileStore`] could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileStoreError {
    /// The disk failed.
    #[error("file store i/o error: {0}")]
    Io(#[from] io::Error),
    /// Another handle, in this process or another, has the file open for writing.
    #[error("file store is locked by another writer")]
    Locked,
    /// The file does not start with the file store's magic bytes.
    #[error("not a medledger file store (bad magic bytes)")]
    NotAStore,
    /// The file was written by a format version this build does not read (older or newer).
    #[error(
        "file store format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The version this build reads ([`FILE_FORMAT_VERSION`]).
        supported: u32,
    },
    /// The file header or its anchors are damaged, or the file is cut short inside them (an
    /// empty file included): never taken for a new store.
    #[error("file store header is corrupt: {0}")]
    CorruptHeader(&'static str),
    /// The file is shorter than the length the store had acknowledged as durable: it was cut
    /// short after it was written, and acknowledged blocks are missing. The file is left as it
    /// is.
    #[error(
        "file store is cut short: it holds {len} bytes, but {acknowledged} bytes were acknowledged as durable"
    )]
    Truncated {
        /// The file's length.
        len: u64,
        /// The length its anchor acknowledged.
        acknowledged: u64,
    },
    /// [`FileStoreBuilder::create_disk`] was given a disk that is not empty.
    #[error("a new file store needs an empty disk, this one holds {len} bytes")]
    NotEmpty {
        /// The disk's length.
        len: u64,
    },
    /// A record that had been synced is damaged (or a checksummed record is invalid). The file
    /// is left as it is.
    #[error("file store record at offset {offset} is corrupt: {reason}")]
    CorruptRecord {
        /// File offset of the record.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record would exceed [`MAX_RECORD_LEN`].
    #[error("record of {len} bytes exceeds the limit of {max}")]
    RecordTooLarge {
        /// The record body's length.
        len: usize,
        /// [`MAX_RECORD_LEN`].
        max: usize,
    },
    /// A main-chain update starts above the current tip + 1.
    #[error("main chain update at height {from_height} leaves a gap above height {next}")]
    MainChainGap {
        /// The first height of the update.
        from_height: u64,
        /// The next height the main chain can take.
        next: u64,
    },
    /// A checkpoint to write holds no chunk, or more than fit a count.
    #[error("a checkpoint holds 1 to 4294967295 chunks")]
    CheckpointShape,
    /// An earlier write or sync failed, so what is on disk is unknown: the store refuses further
    /// writes and must be reopened.
    #[error("an earlier write or sync failed; reopen the file store")]
    Poisoned,
    /// The configuration is invalid.
    #[error("invalid file store configuration: {0}")]
    Config(&'static str),
}

impl From<FileStoreError> for StoreError {
    fn from(e: FileStoreError) -> Self {
        match e {
            FileStoreError::Io(e) => StoreError::Io(e),
            e @ (FileStoreError::NotAStore
            | FileStoreError::CorruptHeader(_)
            | FileStoreError::Truncated { .. }
            | FileStoreError::CorruptRecord { .. }
            | FileStoreError::MainChainGap { .. }) => StoreError::Corrupt(e.to_string()),
            e => StoreError::Backend(Box::new(e)),
        }
    }
}

/// When appended records are synced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// Sync every record before the write returns.
    #[default]
    EveryAppend,
    /// Group commit: sync once `max_records` records are pending, or when a record is appended
    /// `max_delay` or more after the oldest pending one, or on [`Store::sync`], which is the
    /// acknowledgement point. There is no background thread: pending records wait for the next
    /// write or `sync`.
    Group {
        /// Pending records that trigger a sync (at least 1).
        max_records: u32,
        /// Age of the oldest pending record that triggers a sync on the next append.
        max_delay: Duration,
    },
}

/// Configures and opens a [`FileStore`].
#[derive(Clone, Debug, Default)]
pub struct FileStoreBuilder {
    sync: SyncPolicy,
}

impl FileStoreBuilder {
    /// When records are synced (default [`SyncPolicy::EveryAppend`]).
    pub fn sync_policy(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    fn validate(&self) -> Result<(), FileStoreError> {
        match self.sync {
            SyncPolicy::Group { max_records: 0, .. } => Err(FileStoreError::Config(
                "group commit needs max_records of at least 1",
            )),
            _ => Ok(()),
        }
    }

    /// Opens the store in the file at `path`, and locks it. A missing file is created
    /// atomically (a crash leaves no file, or its complete first bytes).
    ///
    /// # Errors
    ///
    /// As [`open_disk`](Self::open_disk) (an existing empty file is refused as
    /// [`FileStoreError::CorruptHeader`]), plus [`FileStoreError::Locked`].
    pub fn open(self, path: impl AsRef<Path>) -> Result<FileStore, FileStoreError> {
        self.validate()?;
        let path = path.as_ref();
        let (disk, created) = match FileDisk::open_existing(path)? {
            Some(disk) => (disk, false),
            // A new file is created with its first bytes in place, atomically.
            None => (FileDisk::create_with(path, &new_file_prefix())?, true),
        };
        let mut store = FileStore::recover(Box::new(disk), self.sync, created)?;
        store.recovery.created |= created;
        Ok(store)
    }

    /// Opens the store on `disk` and recovers it (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Config`] for an invalid configuration; [`FileStoreError::NotAStore`],
    /// [`FileStoreError::UnsupportedVersion`], [`FileStoreError::CorruptHeader`] (an empty disk
    /// included), [`FileStoreError::Truncated`] or [`FileStoreError::CorruptRecord`] for a disk
    /// it will not open, which it then leaves untouched; and [`FileStoreError::Io`].
    pub fn open_disk(self, disk: impl Disk + 'static) -> Result<FileStore, FileStoreError> {
        self.validate()?;
        FileStore::recover(Box::new(disk), self.sync, false)
    }

    /// Creates a new store on `disk`, which must be empty.
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Config`] for an invalid configuration, [`FileStoreError::NotEmpty`] if
    /// the disk holds anything (it is then left untouched), and [`FileStoreError::Io`].
    pub fn create_disk(self, disk: impl Disk + 'static) -> Result<FileStore, FileStoreError> {
        self.validate()?;
        let len = disk.len()?;
        if len != 0 {
            return Err(FileStoreError::NotEmpty { len });
        }
        FileStore::recover(Box::new(disk), self.sync, true)
    }
}

/// What opening a [`FileStore`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Whether the store was new: its file was created by this open, or by
    /// [`FileStoreBuilder::create_disk`].
    pub created: bool,
    /// Valid records read.
    pub records: u64,
    /// Distinct blocks found.
    pub blocks: u64,
    /// Bytes of a torn, never-synced tail that were truncated.
    pub truncated_bytes: u64,
    /// The length the file's anchor acknowledged as durable: the file held at least this much.
    pub acknowledged_len: u64,
}

/// The checkpoint the store keeps, and the one being written or read (its parts so far).
#[derive(Debug, Default)]
struct Checkpoints {
    current: Option<CheckpointAt>,
    partial: Option<CheckpointAt>,
}

/// A checkpoint's block, height, and where its parts' chunks lie.
#[derive(Clone, Debug)]
struct CheckpointAt {
    height: u64,
    block: BlockHash,
    count: u32,
    parts: Vec<Location>,
}

impl Checkpoints {
    /// Takes in part `index` of `count` of the checkpoint of `block` at `height`: a first part
    /// starts a new checkpoint, a next part continues it, anything else drops the partial one;
    /// the last part makes it current.
    fn part(&mut self, height: u64, block: BlockHash, index: u32, count: u32, at: Location) {
        if index == 0 {
            self.partial = Some(CheckpointAt {
                height,
                block,
                count,
                parts: Vec::new(),
            });
        }
        let continues = self.partial.as_ref().is_some_and(|p| {
            p.height == height
                && p.block == block
                && p.count == count
                && p.parts.len() == index as usize
        });
        if !continues {
            self.partial = None;
            return;
        }
        let partial = self.partial.as_mut().expect("checked above");
        partial.parts.push(at);
        if partial.parts.len() == count as usize {
            self.current = self.partial.take();
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Location {
    /// Offset of the block's record.
    record_at: u64,
    /// Length of the block's bytes.
    len: u32,
}

/// A [`Store`] in an append-only, checksummed, crash-safe file (see the [module docs](self)).
pub struct FileStore {
    disk: Box<dyn Disk>,
    policy: SyncPolicy,
    /// Bytes written.
    len: u64,
    /// Bytes known durable.
    synced: u64,
    /// The newest anchor written: what it acknowledges, and in which slot.
    anchor: Anchor,
    anchor_slot: usize,
    /// Whether that anchor has been synced (only then may the other slot be overwritten).
    anchor_durable: bool,
    pending: u32,
    pending_since: Option<Instant>,
    poisoned: bool,
    /// Whether recovery finished (a store that failed to open must not write on drop).
    opened: bool,
    blocks: HashMap<BlockHash, Location>,
    order: Vec<BlockHash>,
    main: Vec<BlockHash>,
    checkpoints: Checkpoints,
    /// The headers kept without their blocks ([`Store::put_headers`]), in parts as a
    /// checkpoint is.
    headers: Checkpoints,
    recovery: Recovery,
    buf: Vec<u8>,
}

impl core::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileStore")
            .field("policy", &self.policy)
            .field("len", &self.len)
            .field("synced", &self.synced)
            .field("blocks", &self.order.len())
            .field("main_len", &self.main.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// A builder, to choose the [`SyncPolicy`] or a custom [`Disk`].
    pub fn builder() -> FileStoreBuilder {
        FileStoreBuilder::default()
    }

    /// Opens the store in the file at `path` with the default configuration (every append
    /// synced), creating the file if missing.
    ///
    /// # Errors
    ///
    /// As [`FileStoreBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FileStoreError> {
        Self::builder().open(path)
    }

    /// What opening the file found (records read, torn bytes truncated).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The sync policy.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Bytes in the log, synced or not.
    pub fn log_len(&self) -> u64 {
        self.len
    }

    /// Bytes of the log known to be durable.
    pub fn durable_len(&self) -> u64 {
        self.synced
    }

    /// Opens the store on `disk`; `create`: the disk may be empty, and is then a new store.
    /// Nothing is written before the disk has passed every check.
    fn recover(
        mut disk: Box<dyn Disk>,
        policy: SyncPolicy,
        create: bool,
    ) -> Result<Self, FileStoreError> {
        let mut recovery = Recovery::default();
        if create && disk.is_empty()? {
            disk.append(&new_file_prefix())?;
            disk.sync()?;
            recovery.created = true;
        }
        let file_len = disk.len()?;
        let (anchor, anchor_slot) = Self::check_start(&*disk, file_len)?;
        if file_len < anchor.acked {
            return Err(FileStoreError::Truncated {
                len: file_len,
                acknowledged: anchor.acked,
            });
        }
        recovery.acknowledged_len = anchor.acked;
        let mut store = Self {
            disk,
            policy,
            len: DATA_START,
            synced: DATA_START,
            anchor,
            anchor_slot,
            anchor_durable: false,
            pending: 0,
            pending_since: None,
            poisoned: false,
            opened: false,
            blocks: HashMap::new(),
            order: Vec::new(),
            main: Vec::new(),
            checkpoints: Checkpoints::default(),
            headers: Checkpoints::default(),
            recovery,
            buf: Vec::new(),
        };
        let mut pos = DATA_START;
        let mut scanner = Scanner::new(&*store.disk, file_len);
        while pos < file_len {
            match scanner.frame_at(pos)? {
                Ok(frame) => {
                    let record = frame
                        .record
                        .map_err(|reason| FileStoreError::CorruptRecord {
                            offset: pos,
                            reason,
                        })?;
                    Self::apply(
                        &mut store.blocks,
                        &mut store.order,
                        &mut store.main,
                        [&mut store.checkpoints, &mut store.headers],
                        pos,
                        record,
                    )?;
                    store.recovery.records += 1;
                    pos = frame.end;
                }
                Err(damage) => {
                    // Damage to acknowledged bytes, or followed by a record written after the
                    // damaged bytes were synced, is damage to durable data; anything else is a
                    // tail torn by a crash.
                    if pos < anchor.acked || scanner.durable_after(pos)?.is_some() {
                        return Err(FileStoreError::CorruptRecord {
                            offset: pos,
                            reason: damage,
                        });
                    }
                    break;
                }
            }
        }
        drop(scanner);
        if pos < file_len {
            store.disk.truncate(pos)?;
            store.recovery.truncated_bytes = file_len - pos;
        }
        // What was read may still be only in the OS cache (a writer killed before its group
        // commit); make it durable, anchors included, before new records claim it is.
        store.disk.sync()?;
        store.anchor_durable = true;
        store.len = pos;
        store.synced = pos;
        store.recovery.blocks = store.order.len() as u64;
        // Acknowledge what was recovered, so that later damage to it is not taken for a torn
        // write, and a file cut short below it is refused.
        store.seal()?;
        store.opened = true;
        Ok(store)
    }

    /// Checks the header and the anchors; returns the anchor that counts, and its slot.
    fn check_start(disk: &dyn Disk, file_len: u64) -> Result<(Anchor, usize), FileStoreError> {
        if file_len == 0 {
            return Err(FileStoreError::CorruptHeader(
                "the file is empty (a store holds its header from the start)",
            ));
        }
        let expected = new_file_prefix();
        let n = file_len.min(FILE_HEADER_LEN) as usize;
        let mut head = [0u8; FILE_HEADER_LEN as usize];
        disk.read_at(0, &mut head[..n])?;
        if file_len < FILE_HEADER_LEN {
            return Err(if head[..n.min(8)] != expected[..n.min(8)] {
                FileStoreError::NotAStore
            } else {
                FileStoreError::CorruptHeader("the file is cut short inside its header")
            });
        }
        match check_file_header(&head) {
            HeaderCheck::Valid => {}
            HeaderCheck::NotAStore => return Err(FileStoreError::NotAStore),
            HeaderCheck::Version(0) => {
                return Err(FileStoreError::CorruptHeader("format version 0"));
            }
            HeaderCheck::Version(found) => {
                return Err(FileStoreError::UnsupportedVersion {
                    found,
                    supported: FORMAT_VERSION,
                })
            }
            HeaderCheck::Corrupt(reason) => return Err(FileStoreError::CorruptHeader(reason)),
        }
        if file_len < DATA_START {
            return Err(FileStoreError::CorruptHeader(
                "the file is cut short inside its anchors",
            ));
        }
        let mut best: Option<(Anchor, usize)> = None;
        for slot in 0..2 {
            let mut a = [0u8; ANCHOR_LEN as usize];
            disk.read_at(anchor_offset(slot), &mut a)?;
            if let Some(anchor) = decode_anchor(slot, &a) {
                if best.is_none_or(|(b, _)| anchor.seq > b.seq) {
                    best = Some((anchor, slot));
                }
            }
        }
        // A crash can tear at most the anchor being written: the other one was synced first.
        best.ok_or(FileStoreError::CorruptHeader("both anchors are damaged"))
    }

    fn apply(
        blocks: &mut HashMap<BlockHash, Location>,
        order: &mut Vec<BlockHash>,
        main: &mut Vec<BlockHash>,
        [checkpoints, headers]: [&mut Checkpoints; 2],
        at: u64,
        record: Record,
    ) -> Result<(), FileStoreError> {
        match record {
            Record::Part {
                of,
                height,
                block,
                index,
                count,
                len,
            } => {
                let parts = match of {
                    PartOf::Checkpoint => checkpoints,
                    PartOf::Headers => headers,
                };
                parts.part(height, block, index, count, Location { record_at: at, len });
            }
            Record::Block { hash, len, .. } => {
                if let std::collections::hash_map::Entry::Vacant(e) = blocks.entry(hash) {
                    e.insert(Location { record_at: at, len });
                    order.push(hash);
                }
            }
            Record::Main {
                from_height,
                hashes,
            } => {
                let from = usize::try_from(from_height)
                    .ok()
                    .filter(|&f| f <= main.len())
                    .ok_or(FileStoreError::CorruptRecord {
                        offset: at,
                        reason: "main-chain update leaves a gap",
                    })?;
                main.truncate(from);
                main.extend_from_slice(&hashes);
            }
        }
        Ok(())
    }

    /// Appends one record and syncs as the policy says.
    fn append_record(&mut self, body: &[&[u8]]) -> Result<(), FileStoreError> {
        if self.poisoned {
            return Err(FileStoreError::Poisoned);
        }
        let len: usize = body.iter().map(|p| p.len()).sum();
        if len > MAX_RECORD_LEN {
            return Err(FileStoreError::RecordTooLarge {
                len,
                max: MAX_RECORD_LEN,
            });
        }
        let mut buf = core::mem::take(&mut self.buf);
        buf.clear();
        encode_record(&mut buf, self.len, self.synced, body);
        let written = self.disk.append(&buf);
        let n = buf.len() as u64;
        // Keep a small buffer for the next record; let a large one go.
        if buf.capacity() <= 1 << 20 {
            self.buf = buf;
        }
        if let Err(e) = written {
            // Cut off whatever part was written, so the next record follows a valid one.
            if self.disk.truncate(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(e.into());
        }
        self.len += n;
        self.pending += 1;
        let since = *self.pending_since.get_or_insert_with(Instant::now);
        let due = match self.policy {
            SyncPolicy::EveryAppend => true,
            SyncPolicy::Group {
                max_records,
                max_delay,
            } => self.pending >= max_records || since.elapsed() >= max_delay,
        };
        if due {
            self.sync_now()?;
        }
        Ok(())
    }

    /// Syncs what was appended, then writes (without syncing) an anchor acknowledging it.
    fn sync_now(&mut self) -> Result<(), FileStoreError> {
        if self.poisoned {
            return Err(FileStoreError::Poisoned);
        }
        if self.synced == self.len {
            return Ok(());
        }
        if let Err(e) = self.disk.sync() {
            // After a failed sync the kernel may have dropped the dirty pages: nothing written
            // since the last good sync can be trusted, and retrying would not tell.
            self.poisoned = true;
            return Err(e.into());
        }
        self.synced = self.len;
        self.pending = 0;
        self.pending_since = None;
        // The sync made the last anchor durable too: the other slot may now be overwritten.
        self.anchor_durable = true;
        self.write_anchor()
    }

    /// Writes an anchor acknowledging everything synced so far into the slot of the older
    /// anchor, if the newest one acknowledges less. The newest must be durable: a crash while
    /// this one is written, which may tear it, then leaves that one valid.
    fn write_anchor(&mut self) -> Result<(), FileStoreError> {
        if self.anchor.acked >= self.synced {
            return Ok(());
        }
        debug_assert!(self.anchor_durable, "the newest anchor is synced first");
        let anchor = Anchor {
            seq: self.anchor.seq + 1,
            acked: self.synced,
        };
        let slot = 1 - self.anchor_slot;
        if let Err(e) = self
            .disk
            .write_at(anchor_offset(slot), &encode_anchor(slot, anchor))
        {
            // The other anchor is intact, but what reached this slot is unknown.
            self.poisoned = true;
            return Err(e.into());
        }
        self.anchor = anchor;
        self.anchor_slot = slot;
        self.anchor_durable = false;
        Ok(())
    }

    /// Syncs everything, and the anchor acknowledging it: after this, a file shorter than
    /// the log is refused.
    fn seal(&mut self) -> Result<(), FileStoreError> {
        self.sync_now()?;
        self.write_anchor()?;
        if !self.anchor_durable {
            if let Err(e) = self.disk.sync() {
                self.poisoned = true;
                return Err(e.into());
            }
            self.anchor_durable = true;
        }
        Ok(())
    }

    fn read_block(&self, loc: Location) -> Result<Vec<u8>, FileStoreError> {
        let body_len = BLOCK_PREFIX_LEN + loc.len as usize;
        let total = RECORD_HEADER_LEN as usize + body_len;
        let mut buf = vec![0u8; total];
        self.disk.read_at(loc.record_at, &mut buf)?;
        if !format::verify_record(loc.record_at, &buf) {
            return Err(FileStoreError::CorruptRecord {
                offset: loc.record_at,
                reason: "block record changed on disk since it was read",
            });
        }
        buf.drain(..RECORD_HEADER_LEN as usize + BLOCK_PREFIX_LEN);
        Ok(buf)
    }

    fn put(&mut self, hash: &BlockHash, encoded: &[u8]) -> Result<(), FileStoreError> {
        if self.blocks.contains_key(hash) {
            return Ok(());
        }
        if encoded.len() > MAX_BLOCK_LEN {
            return Err(FileStoreError::RecordTooLarge {
                len: BLOCK_PREFIX_LEN + encoded.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let at = self.len;
        self.append_record(&[&BLOCK_KIND, hash.as_bytes(), encoded])?;
        self.blocks.insert(
            *hash,
            Location {
                record_at: at,
                len: encoded.len() as u32,
            },
        );
        self.order.push(*hash);
        Ok(())
    }

    /// Appends a checkpoint's parts; it replaces the kept one once the last is written.
    fn put_checkpoint_parts(
        &mut self,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), FileStoreError> {
        self.put_parts(
            PartOf::Checkpoint,
            checkpoint.height,
            checkpoint.block,
            &checkpoint.chunks,
        )
    }

    /// Appends `parts` as records of a set `of` (at most one record each); the set replaces
    /// the kept one once the last is written.
    fn put_parts(
        &mut self,
        of: PartOf,
        height: u64,
        block: BlockHash,
        parts: &[Vec<u8>],
    ) -> Result<(), FileStoreError> {
        let count = u32::try_from(parts.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or(FileStoreError::CheckpointShape)?;
        if let Some(part) = parts
            .iter()
            .find(|c| c.len() > MAX_RECORD_LEN - CHECKPOINT_PREFIX_LEN)
        {
            return Err(FileStoreError::RecordTooLarge {
                len: CHECKPOINT_PREFIX_LEN + part.len(),
                max: MAX_RECORD_LEN,
            });
        }
        for (index, part) in parts.iter().enumerate() {
            let at = self.len;
            let prefix = format::checkpoint_prefix(of, height, &block, index as u32, count);
            self.append_record(&[&prefix, part])?;
            let set = match of {
                PartOf::Checkpoint => &mut self.checkpoints,
                PartOf::Headers => &mut self.headers,
            };
            set.part(
                height,
                block,
                index as u32,
                count,
                Location {
                    record_at: at,
                    len: part.len() as u32,
                },
            );
        }
        Ok(())
    }

    /// Reads the parts of the kept set of `set`, each checked against its record's checksum.
    fn read_parts(&self, set: &CheckpointAt) -> Result<Vec<Vec<u8>>, FileStoreError> {
        let mut parts = Vec::with_capacity(set.parts.len());
        for loc in &set.parts {
            let total = RECORD_HEADER_LEN as usize + CHECKPOINT_PREFIX_LEN + loc.len as usize;
            let mut buf = vec![0u8; total];
            self.disk.read_at(loc.record_at, &mut buf)?;
            if !format::verify_record(loc.record_at, &buf) {
                return Err(FileStoreError::CorruptRecord {
                    offset: loc.record_at,
                    reason: "part record changed on disk since it was read",
                });
            }
            buf.drain(..RECORD_HEADER_LEN as usize + CHECKPOINT_PREFIX_LEN);
            parts.push(buf);
        }
        Ok(parts)
    }

    /// Reads the chunks of the kept checkpoint.
    fn read_checkpoint(&self) -> Result<Option<StoredCheckpoint>, FileStoreError> {
        let Some(current) = &self.checkpoints.current else {
            return Ok(None);
        };
        Ok(Some(StoredCheckpoint {
            height: current.height,
            block: current.block,
            chunks: self.read_parts(current)?,
        }))
    }

    /// Writes `headers` in parts of as many as fit a record, each after its length.
    fn put_header_parts(&mut self, headers: &[Vec<u8>]) -> Result<(), FileStoreError> {
        const ROOM: usize = MAX_RECORD_LEN - CHECKPOINT_PREFIX_LEN;
        let mut parts = vec![Vec::new()];
        for header in headers {
            let len = u32::try_from(header.len())
                .ok()
                .filter(|_| 4 + header.len() <= ROOM)
                .ok_or(FileStoreError::RecordTooLarge {
                    len: CHECKPOINT_PREFIX_LEN + 4 + header.len(),
                    max: MAX_RECORD_LEN,
                })?;
            let last = parts.last_mut().expect("never empty");
            if last.len() + 4 + header.len() > ROOM {
                parts.push(Vec::new());
            }
            let last = parts.last_mut().expect("never empty");
            last.extend_from_slice(&len.to_le_bytes());
            last.extend_from_slice(header);
        }
        let count = headers.len() as u64;
        self.put_parts(
            PartOf::Headers,
            count,
            BlockHash::from_bytes([0; 32]),
            &parts,
        )
    }

    /// Reads the kept headers (none if none were put).
    fn read_headers(&self) -> Result<Vec<Vec<u8>>, FileStoreError> {
        let Some(current) = &self.headers.current else {
            return Ok(Vec::new());
        };
        let mut headers = Vec::new();
        for (part, loc) in self.read_parts(current)?.iter().zip(&current.parts) {
            let damaged = || FileStoreError::CorruptRecord {
                offset: loc.record_at,
                reason: "headers part does not split into its headers",
            };
            let mut rest = part.as_slice();
            while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                let len = u32::from_le_bytes(*len) as usize;
                let header = tail.get(..len).ok_or_else(damaged)?;
                headers.push(header.to_vec());
                rest = &tail[len..];
            }
            if !rest.is_empty() {
                return Err(damaged());
            }
        }
        if headers.len() as u64 != current.height {
            return Err(FileStoreError::CorruptRecord {
                offset: current.parts[0].record_at,
                reason: "headers parts hold another number of headers than they name",
            });
        }
        Ok(headers)
    }

    fn set_main(&mut self, from_height: u64, hashes: &[BlockHash]) -> Result<(), FileStoreError> {
        let next = self.main.len() as u64;
        if from_height > next {
            return Err(FileStoreError::MainChainGap { from_height, next });
        }
        let mut from = from_height;
        let mut chunks = hashes.chunks(MAX_MAIN_HASHES_PER_RECORD).peekable();
        if chunks.peek().is_none() {
            self.append_record(&[&main_body(from, &[])])?;
            self.main.truncate(from as usize);
            return Ok(());
        }
        // Each chunk is a complete update on its own: a crash between chunks leaves a shorter
        // but consistent main chain, which the chain rebuilds from the blocks on open.
        for chunk in chunks {
            self.append_record(&[&main_body(from, chunk)])?;
            self.main.truncate(from as usize);
            self.main.extend_from_slice(chunk);
            from += chunk.len() as u64;
        }
        Ok(())
    }
}

impl Store for FileStore {
    fn put_block(&mut self, hash: &BlockHash, encoded: &[u8]) -> Result<(), StoreError> {
        Ok(self.put(hash, encoded)?)
    }

    fn get_block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, StoreError> {
        match self.blocks.get(hash) {
            Some(&loc) => Ok(Some(self.read_block(loc)?)),
            None => Ok(None),
        }
    }

    fn block_hashes(&self) -> Result<Vec<BlockHash>, StoreError> {
        Ok(self.order.clone())
    }

    fn set_main_chain(&mut self, from_height: u64, hashes: &[BlockHash]) -> Result<(), StoreError> {
        Ok(self.set_main(from_height, hashes)?)
    }

    fn main_hash(&self, height: u64) -> Result<Option<BlockHash>, StoreError> {
        Ok(usize::try_from(height)
            .ok()
            .and_then(|h| self.main.get(h))
            .copied())
    }

    fn tip_height(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.main.len().checked_sub(1).map(|h| h as u64))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(self.sync_now()?)
    }

    fn put_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        Ok(self.put_checkpoint_parts(checkpoint)?)
    }

    fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.read_checkpoint()?)
    }

    fn put_headers(&mut self, headers: &[Vec<u8>]) -> Result<(), StoreError> {
        Ok(self.put_header_parts(headers)?)
    }

    fn headers(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.read_headers()?)
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        // A clean close acknowledges pending group-commit records and syncs the anchor that
        // says so; errors cannot be reported here, and recovery handles whatever did not reach
        // the disk.
        if self.opened && !self.poisoned {
            let _ = self.seal();
        }
    }
}
