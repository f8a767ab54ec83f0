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
//! **Recovery.** Opening the file scans it. A damaged record in the tail that was never synced
//! (a write torn by a crash or power cut) is truncated away, with [`Recovery`] saying how many
//! bytes went. Damage to data that had been synced is refused with
//! [`FileStoreError::CorruptRecord`] naming its offset, and the file is left untouched for the
//! operator. Each record says how much of the file was synced when it was written, which is how
//! the two are told apart; a clean close, and an open after a crash, append a small checkpoint
//! record vouching for the last writes. (So only damage that strikes the last synced writes
//! between a crash and the next open could pass for a torn write.) A file written by a newer
//! format version is refused with [`FileStoreError::UnsupportedVersion`].
//!
//! **Locking.** The file is locked exclusively while open, so a second writer, in this process
//! or another, gets [`FileStoreError::Locked`].
//!
//! **Fault injection.** The store reaches its file only through the small [`Disk`] trait;
//! [`FileStoreBuilder::open_disk`] puts it on any implementation, such as a test disk that loses
//! unsynced bytes or tears writes.
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
use crate::store::{Store, StoreError};

pub use disk::{Disk, FileDisk};
pub use format::MAX_RECORD_LEN;

use format::{
    check_file_header, encode_record, file_header, main_body, HeaderCheck, Record, Scanner,
    BLOCK_KIND, BLOCK_PREFIX_LEN, CHECKPOINT_BODY, FILE_HEADER_LEN, FORMAT_VERSION,
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
    /// The file was written by a format version this build does not read.
    #[error(
        "file store format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The version this build reads ([`FILE_FORMAT_VERSION`]).
        supported: u32,
    },
    /// The file header is damaged.
    #[error("file store header is corrupt: {0}")]
    CorruptHeader(&'static str),
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
    /// atomically (a crash leaves no file, or a complete header).
    ///
    /// # Errors
    ///
    /// As [`open_disk`](Self::open_disk), plus [`FileStoreError::Locked`].
    pub fn open(self, path: impl AsRef<Path>) -> Result<FileStore, FileStoreError> {
        self.validate()?;
        let path = path.as_ref();
        let (disk, created) = match FileDisk::open_existing(path)? {
            Some(disk) => (disk, false),
            // A new file is created with its header in place, atomically.
            None => (FileDisk::create_with(path, &file_header())?, true),
        };
        let mut store = self.open_disk(disk)?;
        store.recovery.created |= created;
        Ok(store)
    }

    /// Opens the store on `disk`: recovers it (see the [module docs](self)) or, if it is empty,
    /// writes a new header.
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Config`] for an invalid configuration, [`FileStoreError::NotAStore`],
    /// [`FileStoreError::UnsupportedVersion`], [`FileStoreError::CorruptHeader`] or
    /// [`FileStoreError::CorruptRecord`] for a file it will not open, and
    /// [`FileStoreError::Io`].
    pub fn open_disk(self, disk: impl Disk + 'static) -> Result<FileStore, FileStoreError> {
        self.validate()?;
        FileStore::recover(Box::new(disk), self.sync)
    }
}

/// What opening a [`FileStore`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Whether the store was new: its file was created by this open, or the disk was empty
    /// (or held only part of a header, from a crash while it was being created).
    pub created: bool,
    /// Valid records read.
    pub records: u64,
    /// Distinct blocks found.
    pub blocks: u64,
    /// Bytes of a torn, never-synced tail that were truncated.
    pub truncated_bytes: u64,
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
    /// Bytes proven durable to recovery: the largest `synced` written in any record.
    evidenced: u64,
    /// End of the last block or main-chain record.
    data_end: u64,
    pending: u32,
    pending_since: Option<Instant>,
    poisoned: bool,
    /// Whether recovery finished (a store that failed to open must not write on drop).
    opened: bool,
    blocks: HashMap<BlockHash, Location>,
    order: Vec<BlockHash>,
    main: Vec<BlockHash>,
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

    fn recover(mut disk: Box<dyn Disk>, policy: SyncPolicy) -> Result<Self, FileStoreError> {
        let mut recovery = Recovery::default();
        let file_len = disk.len()?;
        if Self::needs_header(&*disk, file_len)? {
            disk.truncate(0)?;
            disk.append(&file_header())?;
            disk.sync()?;
            recovery.created = true;
        }
        let file_len = disk.len()?;
        let mut store = Self {
            disk,
            policy,
            len: FILE_HEADER_LEN,
            synced: FILE_HEADER_LEN,
            evidenced: FILE_HEADER_LEN,
            data_end: FILE_HEADER_LEN,
            pending: 0,
            pending_since: None,
            poisoned: false,
            opened: false,
            blocks: HashMap::new(),
            order: Vec::new(),
            main: Vec::new(),
            recovery,
            buf: Vec::new(),
        };
        let mut pos = FILE_HEADER_LEN;
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
                    if record != Record::Checkpoint {
                        store.data_end = frame.end;
                    }
                    store.evidenced = store.evidenced.max(frame.synced);
                    Self::apply(
                        &mut store.blocks,
                        &mut store.order,
                        &mut store.main,
                        pos,
                        record,
                    )?;
                    store.recovery.records += 1;
                    pos = frame.end;
                }
                Err(damage) => {
                    if scanner.durable_after(pos)?.is_some() {
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
        // commit); make it durable before new records claim it is.
        store.disk.sync()?;
        store.len = pos;
        store.synced = pos;
        store.recovery.blocks = store.order.len() as u64;
        // Vouch for the last records now, so that later damage to them is not taken for a
        // torn write.
        store.checkpoint()?;
        store.opened = true;
        Ok(store)
    }

    /// Whether the disk holds no store yet: empty, or only a prefix of a header (or zeros) left
    /// by a crash while the store was being created.
    fn needs_header(disk: &dyn Disk, file_len: u64) -> Result<bool, FileStoreError> {
        let expected = file_header();
        let n = file_len.min(FILE_HEADER_LEN) as usize;
        let mut head = [0u8; FILE_HEADER_LEN as usize];
        disk.read_at(0, &mut head[..n])?;
        let head = &head[..n];
        let partial = head == &expected[..n] || head.iter().all(|&b| b == 0);
        if file_len <= FILE_HEADER_LEN && partial && head != expected {
            return Ok(true);
        }
        if file_len < FILE_HEADER_LEN {
            return Err(if head[..n.min(8)] != expected[..n.min(8)] {
                FileStoreError::NotAStore
            } else {
                FileStoreError::CorruptHeader("truncated header")
            });
        }
        let mut full = [0u8; FILE_HEADER_LEN as usize];
        full.copy_from_slice(head);
        match check_file_header(&full) {
            HeaderCheck::Valid => Ok(false),
            HeaderCheck::NotAStore => Err(FileStoreError::NotAStore),
            HeaderCheck::Version(found) if found > FORMAT_VERSION => {
                Err(FileStoreError::UnsupportedVersion {
                    found,
                    supported: FORMAT_VERSION,
                })
            }
            HeaderCheck::Version(_) => Err(FileStoreError::CorruptHeader("unknown format version")),
            HeaderCheck::Corrupt(reason) => Err(FileStoreError::CorruptHeader(reason)),
        }
    }

    fn apply(
        blocks: &mut HashMap<BlockHash, Location>,
        order: &mut Vec<BlockHash>,
        main: &mut Vec<BlockHash>,
        at: u64,
        record: Record,
    ) -> Result<(), FileStoreError> {
        match record {
            Record::Block { hash, len, .. } => {
                if let std::collections::hash_map::Entry::Vacant(e) = blocks.entry(hash) {
                    e.insert(Location { record_at: at, len });
                    order.push(hash);
                }
            }
            Record::Checkpoint => {}
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
        self.evidenced = self.evidenced.max(self.synced);
        self.len += n;
        if body != [&CHECKPOINT_BODY[..]] {
            self.data_end = self.len;
        }
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
        Ok(())
    }

    /// Syncs, then, if the last block or main-chain records have no later record proving they
    /// were synced, appends and syncs a checkpoint that does.
    fn checkpoint(&mut self) -> Result<(), FileStoreError> {
        self.sync_now()?;
        if self.data_end > self.evidenced {
            self.append_record(&[&CHECKPOINT_BODY])?;
            self.sync_now()?;
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
}

impl Drop for FileStore {
    fn drop(&mut self) {
        // A clean close acknowledges pending group-commit records and vouches for the last
        // ones; errors cannot be reported here, and recovery handles whatever did not reach
        // the disk.
        if self.opened && !self.poisoned {
            let _ = self.checkpoint();
        }
    }
}
