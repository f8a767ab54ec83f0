//! State snapshots: the committed state at a height, as bounded chunks that each prove
//! themselves against that height's state root, so a new node can start from them instead of
//! replaying every block from genesis.
//!
//! # Chunks
//!
//! The state tree is cut into subtrees by key prefix: a subtree that holds more entries than a
//! chunk may (or more bytes) is split in two at its next key bit, until every piece fits. Each
//! [`SnapshotChunk`] carries one piece: the table entries under its prefix (table tag, key and
//! value, as the encodings the state tree hashes), sorted by state key, and the sibling hashes
//! along the path from the root down to the prefix. Its depth is the number of siblings.
//!
//! A chunk proves that its entries are *exactly* the entries under its prefix: the verifier
//! rebuilds the subtree from the entries ([`entry_key`](super::entry_key) and
//! [`value_digest`](super::value_digest) of the bytes), folds the siblings in and compares the
//! result with the expected root. Chunks must arrive in key order, each starting where the
//! previous one ended, so a snapshot that verifies chunk by chunk and ends at the last key holds
//! every entry of the state, and nothing else.
//!
//! # What a chain needs besides the state
//!
//! The state at height `h` is not a whole chain. To follow blocks from there, a node also needs
//! the headers from genesis to `h`: the consensus engine checks each one (Proof-of-Work
//! difficulty and timestamps read earlier headers, committee seals their certificates) and the
//! header at `h` names the state root the snapshot must match
//! ([`ChainBuilder::build_from_snapshot`](crate::chain::ChainBuilder::build_from_snapshot)).
//! A chain opened this way holds no undo data below `h`: it refuses reorganisations that would
//! roll back past `h` ([`ChainError::ReorgTooDeep`](crate::chain::ChainError::ReorgTooDeep)),
//! so a snapshot should be taken at a height no reorganisation will revert (a final height for
//! committee and Tendermint chains, deep enough under the tip for Proof-of-Work). Block bodies
//! below `h` are not needed; proofs "as of" a height below `h` are not available.
//!
//! ```
//! use medledger::state::snapshot::{SnapshotImport, MAX_CHUNK_ENTRIES};
//! use medledger::{AccessState, ChainBuilder, MedRec};
//! use medledger::pow::ProofOfWork;
//!
//! let chain = ChainBuilder::new("snapshot", ProofOfWork::regtest()).genesis_time(1_700_000_000).build()?;
//! let chunks = chain.snapshot(MAX_CHUNK_ENTRIES)?;
//! let mut import = SnapshotImport::<AccessState>::new(chain.height(), chain.tip_header().state_root);
//! for chunk in &chunks {
//!     import.add_bytes(&chunk.encode())?;
//! }
//! let state = import.finish()?;
//! assert_eq!(state.root(), chain.state().root());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use super::table::{entry_key_of_body, value_digest_of_body};
use super::{AppState, State};
use crate::codec::{self, BoundedBytes, BoundedString, BoundedVec, Canonical, DecodeError};
use crate::hash::{Digest, StateKey, StateRoot};
use crate::smt::{bit, fold_path, subtree_hash, StateTree, StateUpdate, MAX_PROOF_DEPTH};

/// The most entries one chunk holds.
pub const MAX_CHUNK_ENTRIES: usize = 4096;
/// The most bytes one encoded chunk takes (checked before decoding).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;
/// The longest table tag in a snapshot entry.
pub const MAX_TABLE_TAG_BYTES: usize = 64;
/// The longest encoded key in a snapshot entry.
pub const MAX_ENTRY_KEY_BYTES: usize = 1024;
/// The longest encoded value in a snapshot entry.
pub const MAX_ENTRY_VALUE_BYTES: usize = 64 << 10;

/// Bytes of a chunk besides its entries, at most: version, root, height, sibling count and
/// siblings, entry count.
const CHUNK_OVERHEAD: usize = 1 + 32 + 10 + 3 + MAX_PROOF_DEPTH * 32 + 3;

/// One table entry in a snapshot: its table's tag, and its key and value as the encodings the
/// state tree hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    table: BoundedString<MAX_TABLE_TAG_BYTES>,
    key: BoundedBytes<MAX_ENTRY_KEY_BYTES>,
    value: BoundedBytes<MAX_ENTRY_VALUE_BYTES>,
}

impl SnapshotEntry {
    /// The table's tag.
    pub fn table(&self) -> &str {
        &self.table
    }
    /// The encoded key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The encoded value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
    /// The entry's state-tree key and value digest.
    fn leaf(&self) -> (StateKey, Digest) {
        (
            entry_key_of_body(&self.table, &self.key),
            value_digest_of_body(&self.value),
        )
    }
    /// An upper bound on the entry's encoded size.
    fn encoded_len(&self) -> usize {
        self.table.len() + self.key.len() + self.value.len() + 3 * 3
    }
}

/// One piece of a snapshot: every entry under a key prefix, with the path from the state root
/// down to that prefix. Decoded chunks are unchecked: [`SnapshotImport::add`] verifies them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    root: StateRoot,
    height: u64,
    prefix: StateKey,
    siblings: BoundedVec<Digest, MAX_PROOF_DEPTH>,
    entries: BoundedVec<SnapshotEntry, MAX_CHUNK_ENTRIES>,
}

impl Canonical for SnapshotChunk {
    const NAME: &'static str = "snapshot chunk";
    const MAX_ENCODED_LEN: usize = MAX_CHUNK_BYTES;
}

impl SnapshotChunk {
    /// The state root the chunk proves against.
    pub fn root(&self) -> StateRoot {
        self.root
    }
    /// The height of the snapshot.
    pub fn height(&self) -> u64 {
        self.height
    }
    /// The number of key bits the chunk's prefix fixes (its number of siblings).
    pub fn depth(&self) -> usize {
        self.siblings.len()
    }
    /// The sibling hashes along the path from the root down to the prefix.
    pub fn siblings(&self) -> &[Digest] {
        &self.siblings
    }
    /// The chunk's prefix: its first [`depth`](Self::depth) bits, the rest zero.
    pub fn prefix(&self) -> StateKey {
        self.prefix
    }
    /// The entries, sorted by state key.
    pub fn entries(&self) -> &[SnapshotEntry] {
        &self.entries
    }
    /// The canonical encoding (at most [`MAX_CHUNK_BYTES`]).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
    /// Decodes a chunk strictly; the result is unchecked.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for bytes that are not a canonical chunk within the limits.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes)
    }
}

/// Why a snapshot could not be exported, or a chunk was refused. A refused chunk changes
/// nothing: the import goes on from where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The chunk's bytes are not a chunk.
    #[error("undecodable snapshot chunk: {0}")]
    Decode(#[from] DecodeError),
    /// The chunk is for another state root (another chain, or another height).
    #[error("chunk {chunk} is for state root {found}, not {expected}")]
    WrongRoot {
        /// Position of the chunk in the import.
        chunk: u32,
        /// The root being imported.
        expected: StateRoot,
        /// The chunk's root.
        found: StateRoot,
    },
    /// The chunk is for another height.
    #[error("chunk {chunk} is for height {found}, not {expected}")]
    WrongHeight {
        /// Position of the chunk in the import.
        chunk: u32,
        /// The height being imported.
        expected: u64,
        /// The chunk's height.
        found: u64,
    },
    /// The chunk's prefix has bits set beyond its depth.
    #[error("chunk {chunk}: prefix {prefix} has bits set beyond its depth {depth}")]
    PrefixNotCanonical {
        /// Position of the chunk in the import.
        chunk: u32,
        /// The prefix.
        prefix: StateKey,
        /// Its depth.
        depth: usize,
    },
    /// The chunk does not start where the previous one ended: a chunk is missing, repeated or
    /// out of order.
    #[error("chunk {chunk} starts at key {found}, expected the next chunk to start at {expected}")]
    OutOfOrder {
        /// Position of the chunk in the import.
        chunk: u32,
        /// Where the next chunk must start.
        expected: StateKey,
        /// Where this one starts.
        found: StateKey,
    },
    /// Every key is covered already; no chunk may follow.
    #[error("chunk {chunk} follows a complete snapshot")]
    AlreadyComplete {
        /// Position of the chunk in the import.
        chunk: u32,
    },
    /// An entry names a table the state does not have.
    #[error("chunk {chunk}, entry {index}: unknown table {table:?}")]
    UnknownTable {
        /// Position of the chunk in the import.
        chunk: u32,
        /// The entry's position in the chunk.
        index: usize,
        /// The tag.
        table: String,
    },
    /// An entry's state key lies outside the chunk's prefix.
    #[error("chunk {chunk}, entry {index}: key lies outside the chunk's prefix")]
    EntryOutsideChunk {
        /// Position of the chunk in the import.
        chunk: u32,
        /// The entry's position in the chunk.
        index: usize,
    },
    /// The entries are not sorted strictly ascending by state key (or one repeats).
    #[error("chunk {chunk}, entry {index}: entries not sorted strictly ascending by state key")]
    EntriesUnsorted {
        /// Position of the chunk in the import.
        chunk: u32,
        /// The first entry out of order.
        index: usize,
    },
    /// The entries and the siblings do not lead to the state root: an entry was changed,
    /// added or left out, or a sibling was changed.
    #[error("chunk {chunk}: entries and path do not lead to state root {root}")]
    ProofMismatch {
        /// Position of the chunk in the import.
        chunk: u32,
        /// The root being imported.
        root: StateRoot,
    },
    /// An entry proved by the root does not decode as its table's key and value types (a
    /// snapshot of another application or format version).
    #[error("chunk {chunk}, entry {index} of table {table}: {error}")]
    Entry {
        /// Position of the chunk in the import.
        chunk: u32,
        /// The entry's position in the chunk.
        index: usize,
        /// The tag.
        table: String,
        /// Why it does not decode.
        #[source]
        error: DecodeError,
    },
    /// The import was finished before the chunks covered every key.
    #[error("snapshot incomplete after {chunks} chunks: the next chunk would start at key {next}")]
    Incomplete {
        /// Chunks accepted.
        chunks: u32,
        /// Where the next chunk would start.
        next: StateKey,
    },
    /// An entry of the state is larger than a snapshot entry may be (export).
    #[error("table {table}: entry of {len} bytes exceeds the snapshot limit of {max}")]
    EntryTooLarge {
        /// The tag.
        table: String,
        /// The entry's key or value length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A streamed export on disk could not write or read its temporary files, or the state's
    /// entries (see [`State::export_snapshot_to`]).
    #[error("snapshot export: {0}")]
    Spill(String),
    /// The state's tables do not match its state tree (export; a bug, never input).
    #[error("the state's tables do not match its state tree")]
    Inconsistent,
    /// An import on disk (`SnapshotImport::on_disk`, feature `redb`) could not open or write
    /// the state database: the chunk was not taken (the import goes on from where it was), or,
    /// from [`SnapshotImport::finish`], the state was not recorded (import it again).
    #[error("chunk {chunk}: state database: {reason}")]
    Disk {
        /// Position of the chunk in the import (the number of chunks, from `finish`).
        chunk: u32,
        /// What failed.
        reason: String,
    },
}

/// `prefix` with every bit from `depth` on set: the last key under the prefix.
fn prefix_end(prefix: &StateKey, depth: usize) -> StateKey {
    let mut bytes = prefix.to_bytes();
    for i in depth..256 {
        bytes[i / 8] |= 1 << (7 - i % 8);
    }
    StateKey::from_bytes(bytes)
}

/// The key after `key`, `None` after the last one.
fn successor(key: &StateKey) -> Option<StateKey> {
    let mut bytes = key.to_bytes();
    for b in bytes.iter_mut().rev() {
        let (sum, carry) = b.overflowing_add(1);
        *b = sum;
        if !carry {
            return Some(StateKey::from_bytes(bytes));
        }
    }
    None
}

/// Whether `key` starts with the first `depth` bits of `prefix`.
fn has_prefix(key: &StateKey, prefix: &StateKey, depth: usize) -> bool {
    (0..depth).all(|i| bit(key, i) == bit(prefix, i))
}

/// Entries a streamed export of a state on disk (feature `redb`) holds in memory at once, at
/// most about ([`State::export_snapshot_to`]): above this many, the entries are first spilled
/// to temporary files by key prefix.
pub const EXPORT_BUCKET_ENTRIES: usize = 1 << 18;

impl<T: AppState> State<T> {
    /// Exports the committed state as snapshot chunks for `height` (the height whose header
    /// carries this state's [`root`](Self::root)), in import order, each of at most
    /// `max_entries` entries (taken as 1 if 0, and as [`MAX_CHUNK_ENTRIES`] if larger) and
    /// [`MAX_CHUNK_BYTES`]. Pending writes are ignored.
    ///
    /// The chunks are returned together; [`export_snapshot_to`](Self::export_snapshot_to)
    /// hands them over one by one instead.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::EntryTooLarge`] if an entry exceeds the snapshot limits.
    pub fn export_snapshot(
        &self,
        height: u64,
        max_entries: usize,
    ) -> Result<Vec<SnapshotChunk>, SnapshotError> {
        // Every chunk is kept anyway: no spill (it would write and read the state once more).
        let mut out = Vec::new();
        self.export_in_memory(height, max_entries, &mut |chunk| {
            out.push(chunk);
            Ok::<_, SnapshotError>(())
        })?;
        Ok(out)
    }

    /// As [`export_snapshot`](Self::export_snapshot) (the same chunks, in the same order),
    /// handing each chunk to `emit` as soon as it is cut; an error from `emit` stops the
    /// export.
    ///
    /// In memory, the export holds every entry once more, encoded, with its state key. On disk
    /// (feature `redb`), a state of more than [`EXPORT_BUCKET_ENTRIES`] entries is read once
    /// and spilled by key prefix to up to 256 temporary files in a folder
    /// `export-PID-N.tmp` of the state's directory (each entry written once and read back
    /// once), so that the export holds one file's entries at a time instead of the whole
    /// state: a bound for a state far larger than memory. The folder is removed when the
    /// export returns or panics; one left by a process that was killed is removed by the next
    /// spilled export of the directory (another process cannot have the state open).
    ///
    /// # Errors
    ///
    /// [`SnapshotError::EntryTooLarge`] if an entry exceeds the snapshot limits,
    /// [`SnapshotError::Spill`] if the temporary files fail, or what `emit` returned.
    pub fn export_snapshot_to<E: From<SnapshotError>>(
        &self,
        height: u64,
        max_entries: usize,
        mut emit: impl FnMut(SnapshotChunk) -> Result<(), E>,
    ) -> Result<(), E> {
        #[cfg(feature = "redb")]
        if let Some(dir) = self.disk_dir() {
            let bucket_entries = spill::bucket_entries();
            if self.tree.len() > bucket_entries {
                return self.export_spilled(dir, height, max_entries, bucket_entries, &mut emit);
            }
        }
        self.export_in_memory(height, max_entries, &mut emit)
    }

    /// The export of [`export_snapshot_to`](Self::export_snapshot_to) with every entry in
    /// memory.
    fn export_in_memory<E: From<SnapshotError>>(
        &self,
        height: u64,
        max_entries: usize,
        emit: &mut impl FnMut(SnapshotChunk) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut entries: Vec<(StateKey, SnapshotEntry)> = Vec::with_capacity(self.tree.len());
        self.for_each_entry(&mut |key, entry| {
            entries.push((key, entry));
            Ok(())
        })?;
        entries.sort_unstable_by_key(|(key, _)| *key);
        if entries.len() != self.tree.len() {
            return Err(SnapshotError::Inconsistent.into());
        }
        self.exporter(height, max_entries, emit)
            .split(entries, StateKey::from_bytes([0; 32]), 0)
    }

    fn exporter<'a, F>(
        &'a self,
        height: u64,
        max_entries: usize,
        emit: &'a mut F,
    ) -> Exporter<'a, F> {
        Exporter {
            tree: &self.tree,
            root: self.root(),
            height,
            max_entries: max_entries.clamp(1, MAX_CHUNK_ENTRIES),
            emit,
        }
    }

    /// Hands every committed entry, with its state key, to `visit`, table by table; stops at
    /// the first error.
    fn for_each_entry(
        &self,
        visit: &mut dyn FnMut(StateKey, SnapshotEntry) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let mut failed = None;
        for table in self.tables() {
            let tag = table.tag();
            let too_large = |len: usize, max: usize| SnapshotError::EntryTooLarge {
                table: tag.to_owned(),
                len,
                max,
            };
            let table_tag = BoundedString::try_from(tag).map_err(|e| too_large(e.len, e.max))?;
            table.visit_committed(&mut |key, value| {
                if failed.is_some() {
                    return;
                }
                let entry = BoundedBytes::try_from(key.to_vec())
                    .map_err(|e| too_large(e.len, e.max))
                    .and_then(|key| {
                        Ok(SnapshotEntry {
                            table: table_tag.clone(),
                            key,
                            value: BoundedBytes::try_from(value.to_vec())
                                .map_err(|e| too_large(e.len, e.max))?,
                        })
                    })
                    .and_then(|entry| visit(entry.leaf().0, entry));
                if let Err(e) = entry {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed.take() {
                return Err(e);
            }
        }
        if let Some(e) = self.take_read_failure() {
            return Err(SnapshotError::Spill(format!("reading the state: {e}")));
        }
        Ok(())
    }

    /// The export of [`export_snapshot_to`](Self::export_snapshot_to) through temporary files
    /// in `dir`, one per prefix of `bits` bits, where `bits` (at most 8) is what keeps a file
    /// to about `bucket_entries` entries.
    #[cfg(feature = "redb")]
    fn export_spilled<E: From<SnapshotError>>(
        &self,
        dir: &std::path::Path,
        height: u64,
        max_entries: usize,
        bucket_entries: usize,
        emit: &mut impl FnMut(SnapshotChunk) -> Result<(), E>,
    ) -> Result<(), E> {
        let len = self.tree.len();
        let bits = (0..=spill::MAX_BITS)
            .find(|&b| len.div_ceil(1 << b) <= bucket_entries.max(1))
            .unwrap_or(spill::MAX_BITS);
        let mut spill = spill::Spill::create(dir, bits)?;
        self.for_each_entry(&mut |key, entry| spill.write(&key, &entry))?;
        if spill.total() != len {
            return Err(SnapshotError::Inconsistent.into());
        }
        spill.finish_writing()?;
        self.exporter(height, max_entries, emit).split_spilled(
            &spill,
            StateKey::from_bytes([0; 32]),
            0,
        )
    }
}

/// Cuts sorted entries into chunks and hands them to `emit`.
struct Exporter<'a, F> {
    tree: &'a StateTree,
    root: StateRoot,
    height: u64,
    max_entries: usize,
    emit: &'a mut F,
}

impl<F, E> Exporter<'_, F>
where
    F: FnMut(SnapshotChunk) -> Result<(), E>,
    E: From<SnapshotError>,
{
    /// Whether `count` entries of `bytes` encoded bytes make one chunk (one entry always does).
    fn fits(&self, count: usize, bytes: usize) -> bool {
        count <= 1 || (count <= self.max_entries && bytes + CHUNK_OVERHEAD <= MAX_CHUNK_BYTES)
    }

    /// Emits the entries under `prefix` (at `depth`) as one chunk if they fit, or splits them.
    fn split(
        &mut self,
        entries: Vec<(StateKey, SnapshotEntry)>,
        prefix: StateKey,
        depth: usize,
    ) -> Result<(), E> {
        let bytes: usize = entries.iter().map(|(_, e)| e.encoded_len()).sum();
        if self.fits(entries.len(), bytes) {
            let siblings = self
                .tree
                .path_siblings(&prefix, depth)
                .ok_or(SnapshotError::Inconsistent)?;
            return (self.emit)(SnapshotChunk {
                root: self.root,
                height: self.height,
                prefix,
                siblings: BoundedVec::try_from(siblings)
                    .map_err(|_| SnapshotError::Inconsistent)?,
                entries: BoundedVec::try_from(
                    entries.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
                )
                .map_err(|_| SnapshotError::Inconsistent)?,
            });
        }
        // Two or more distinct keys share the first `depth` bits, so `depth < 256`.
        let mid = entries.partition_point(|(key, _)| !bit(key, depth));
        let mut entries = entries;
        let hi = entries.split_off(mid);
        self.split(entries, prefix, depth + 1)?;
        self.split(hi, right_half(&prefix, depth), depth + 1)
    }

    /// As [`split`](Self::split), the entries under `prefix` read from `spill`: a prefix
    /// whose files' entries make one chunk, or as deep as one file, is read and split in
    /// memory; a shorter one is split first by the files' counts. The chunks are those of
    /// [`split`](Self::split) on every entry.
    #[cfg(feature = "redb")]
    fn split_spilled(
        &mut self,
        spill: &spill::Spill,
        prefix: StateKey,
        depth: usize,
    ) -> Result<(), E> {
        let files = spill.files_under(&prefix, depth);
        let (count, bytes) = spill.stats(files.clone());
        if depth >= spill.bits() || self.fits(count, bytes) {
            let mut entries = Vec::with_capacity(count);
            for file in files {
                spill.read(file, &mut entries)?;
            }
            entries.sort_unstable_by_key(|(key, _)| *key);
            return self.split(entries, prefix, depth);
        }
        self.split_spilled(spill, prefix, depth + 1)?;
        self.split_spilled(spill, right_half(&prefix, depth), depth + 1)
    }
}

/// `prefix` (of `depth` bits) extended by a one bit.
fn right_half(prefix: &StateKey, depth: usize) -> StateKey {
    let mut right = prefix.to_bytes();
    right[depth / 8] |= 1 << (7 - depth % 8);
    StateKey::from_bytes(right)
}

/// The temporary files of a streamed export on disk.
#[cfg(feature = "redb")]
mod spill {
    use std::fs::{self, File};
    use std::io::{BufWriter, Read, Write};
    use std::ops::Range;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{SnapshotEntry, SnapshotError};
    use crate::codec;
    use crate::hash::StateKey;

    /// The most prefix bits: 256 files open at once.
    pub(super) const MAX_BITS: usize = 8;

    #[cfg(test)]
    thread_local! {
        /// A test's bound instead of [`super::EXPORT_BUCKET_ENTRIES`] (this thread only).
        pub(super) static BUCKET_ENTRIES: core::cell::Cell<Option<usize>> =
            const { core::cell::Cell::new(None) };
    }

    /// The entries above which an export on disk spills, and about how many a file holds.
    pub(super) fn bucket_entries() -> usize {
        #[cfg(test)]
        if let Some(n) = BUCKET_ENTRIES.with(core::cell::Cell::get) {
            return n;
        }
        super::EXPORT_BUCKET_ENTRIES
    }

    /// Removes the folders that exports of other processes left in `parent` (killed while
    /// exporting: a live one cannot have this state open).
    fn remove_stale(parent: &Path) {
        let Ok(listing) = fs::read_dir(parent) else {
            return;
        };
        let own = format!("export-{}-", std::process::id());
        for entry in listing.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("export-") && name.ends_with(".tmp") && !name.starts_with(&own) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Entries spilled to one file per key prefix of `bits` bits, each as its state key, its
    /// body's length (`u32`, little-endian) and its canonical body. The folder is removed when
    /// this is dropped.
    pub(super) struct Spill {
        dir: PathBuf,
        bits: usize,
        writers: Vec<BufWriter<File>>,
        counts: Vec<usize>,
        bytes: Vec<usize>,
        buf: Vec<u8>,
    }

    fn failed(what: &str, path: &Path, e: impl core::fmt::Display) -> SnapshotError {
        SnapshotError::Spill(format!("{what} {}: {e}", path.display()))
    }

    impl Spill {
        /// A new folder in `parent` with `2^bits` empty files.
        pub(super) fn create(parent: &Path, bits: usize) -> Result<Self, SnapshotError> {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            remove_stale(parent);
            let dir = parent.join(format!(
                "export-{}-{}.tmp",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&dir).map_err(|e| failed("create", &dir, e))?;
            let mut spill = Self {
                dir,
                bits,
                writers: Vec::new(),
                counts: vec![0; 1 << bits],
                bytes: vec![0; 1 << bits],
                buf: Vec::new(),
            };
            for i in 0..1usize << bits {
                let path = spill.file(i);
                let file = File::create(&path).map_err(|e| failed("create", &path, e))?;
                spill.writers.push(BufWriter::with_capacity(64 << 10, file));
            }
            Ok(spill)
        }

        fn file(&self, i: usize) -> PathBuf {
            self.dir.join(format!("{i:03}"))
        }

        pub(super) fn bits(&self) -> usize {
            self.bits
        }

        /// The file of `key`: its first `bits` bits.
        fn file_of(&self, key: &StateKey) -> usize {
            let b = key.to_bytes();
            (usize::from(u16::from_be_bytes([b[0], b[1]]))) >> (16 - self.bits)
        }

        /// Appends `entry` to its file.
        pub(super) fn write(
            &mut self,
            key: &StateKey,
            entry: &SnapshotEntry,
        ) -> Result<(), SnapshotError> {
            let i = self.file_of(key);
            self.buf.clear();
            codec::encode_body_into(entry, &mut self.buf);
            let len = u32::try_from(self.buf.len()).map_err(|_| SnapshotError::Inconsistent)?;
            let path = self.file(i);
            let w = &mut self.writers[i];
            w.write_all(key.as_bytes())
                .and_then(|()| w.write_all(&len.to_le_bytes()))
                .and_then(|()| w.write_all(&self.buf))
                .map_err(|e| failed("write", &path, e))?;
            self.counts[i] += 1;
            self.bytes[i] += entry.encoded_len();
            Ok(())
        }

        /// Entries written.
        pub(super) fn total(&self) -> usize {
            self.counts.iter().sum()
        }

        /// Flushes and closes every file.
        pub(super) fn finish_writing(&mut self) -> Result<(), SnapshotError> {
            for (i, mut w) in core::mem::take(&mut self.writers).into_iter().enumerate() {
                w.flush().map_err(|e| failed("write", &self.file(i), e))?;
            }
            Ok(())
        }

        /// The files whose keys start with the first `depth` bits of `prefix` (one, for a
        /// prefix as long as the files' or longer).
        pub(super) fn files_under(&self, prefix: &StateKey, depth: usize) -> Range<usize> {
            let first = self.file_of(prefix);
            let len = 1usize << self.bits.saturating_sub(depth);
            first..first + len
        }

        /// The entries of `files`, and their encoded bytes as [`SnapshotEntry::encoded_len`]
        /// counts them (what the exporter's fit check adds up).
        pub(super) fn stats(&self, files: Range<usize>) -> (usize, usize) {
            (
                self.counts[files.clone()].iter().sum(),
                self.bytes[files].iter().sum(),
            )
        }

        /// Appends the entries of file `i` to `out`.
        pub(super) fn read(
            &self,
            i: usize,
            out: &mut Vec<(StateKey, SnapshotEntry)>,
        ) -> Result<(), SnapshotError> {
            let path = self.file(i);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| failed("read", &path, e))?;
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let damaged = || failed("read", &path, "an entry is cut short or damaged");
                let (key, tail) = rest.split_first_chunk::<32>().ok_or_else(damaged)?;
                let (len, tail) = tail.split_first_chunk::<4>().ok_or_else(damaged)?;
                let len = u32::from_le_bytes(*len) as usize;
                let body = tail.get(..len).ok_or_else(damaged)?;
                let entry: SnapshotEntry =
                    codec::decode_body("snapshot entry", body).map_err(|_| damaged())?;
                out.push((StateKey::from_bytes(*key), entry));
                rest = &tail[len..];
            }
            Ok(())
        }
    }

    impl Drop for Spill {
        fn drop(&mut self) {
            self.writers.clear();
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A snapshot being imported: chunks are verified one by one against the expected root, in
/// order, and their entries written into a fresh [`State`], in memory ([`new`](Self::new)) or
/// in a state database (`on_disk`, feature `redb`, whose memory does not grow with the
/// state); [`finish`](Self::finish) hands it over once every key is covered.
pub struct SnapshotImport<T> {
    root: StateRoot,
    height: u64,
    /// Where the next chunk must start; `None` once every key is covered.
    next: Option<StateKey>,
    chunks: u32,
    state: State<T>,
    tree: StateTree,
}

impl<T> core::fmt::Debug for SnapshotImport<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SnapshotImport")
            .field("root", &self.root)
            .field("height", &self.height)
            .field("chunks", &self.chunks)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl<T: AppState> SnapshotImport<T> {
    /// Starts importing the snapshot at `height` whose state root is `root` (take both from a
    /// header the consensus engine accepted).
    pub fn new(height: u64, root: StateRoot) -> Self {
        Self {
            root,
            height,
            next: Some(StateKey::from_bytes([0; 32])),
            chunks: 0,
            state: State::new(),
            tree: StateTree::new(),
        }
    }

    /// Starts importing the snapshot at `height` whose state root is `root` straight into the
    /// state database of `config` (feature `redb`), emptying it first: each chunk is written
    /// to the database once verified, in a transaction of its own, and the state tree keeps
    /// in memory only its levels above [`DiskConfig::tree_memory_depth`], as a chain's state
    /// on disk does. So memory stays bounded by the chunk and the caches, not the state's
    /// size, and [`finish`](Self::finish) gives the state on disk at `height`, for
    /// [`ChainBuilder::build_from_snapshot`](crate::chain::ChainBuilder::build_from_snapshot)
    /// with the same [`StateBackend::Disk`](crate::state::StateBackend::Disk) directory (the
    /// state keeps the settings of `config`) and headers ending at `height`.
    ///
    /// Until `finish` returns, the directory holds no state: one whose import stopped half-way
    /// opens as empty ([`State::open_disk`] gives `None`), and a new import starts over. A
    /// chunk that needs records of earlier chunks the database cannot give back is refused
    /// ([`SnapshotError::Disk`]). The chain built on the state cannot be built again from its
    /// store (it lacks the blocks below `height`): doing so rewrites the directory from
    /// genesis.
    ///
    /// [`DiskConfig::tree_memory_depth`]: crate::state::disk::DiskConfig::tree_memory_depth
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Disk`] if the database cannot be opened or emptied.
    #[cfg(feature = "redb")]
    pub fn on_disk(
        height: u64,
        root: StateRoot,
        config: &crate::state::disk::DiskConfig,
    ) -> Result<Self, SnapshotError> {
        let mut import = Self::new(height, root);
        import
            .state
            .begin_disk_import(config, height)
            .map_err(|e| SnapshotError::Disk {
                chunk: 0,
                reason: e.to_string(),
            })?;
        import.tree = import.state.tree.clone();
        Ok(import)
    }

    /// Chunks accepted so far.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// Whether the chunks accepted cover every key.
    pub fn is_complete(&self) -> bool {
        self.next.is_none()
    }

    /// Decodes and adds the next chunk (see [`add`](Self::add)).
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Decode`] for bytes that are not a chunk, else as [`add`](Self::add).
    pub fn add_bytes(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.add(&SnapshotChunk::decode(bytes)?)
    }

    /// Verifies the next chunk against the snapshot's root and adds its entries.
    ///
    /// # Errors
    ///
    /// [`SnapshotError`] saying why the chunk is refused: for another root or height, not
    /// starting where the previous chunk ended ([`OutOfOrder`](SnapshotError::OutOfOrder):
    /// missing, repeated or reordered), after the last one, with a misplaced, unsorted or
    /// undecodable entry or an unknown table, or not proving its entries against the root
    /// ([`ProofMismatch`](SnapshotError::ProofMismatch): tampered). The import is then
    /// unchanged.
    pub fn add(&mut self, chunk: &SnapshotChunk) -> Result<(), SnapshotError> {
        let n = self.chunks;
        if chunk.root != self.root {
            return Err(SnapshotError::WrongRoot {
                chunk: n,
                expected: self.root,
                found: chunk.root,
            });
        }
        if chunk.height != self.height {
            return Err(SnapshotError::WrongHeight {
                chunk: n,
                expected: self.height,
                found: chunk.height,
            });
        }
        let depth = chunk.depth();
        let prefix = chunk.prefix;
        if (depth..256).any(|i| bit(&prefix, i)) {
            return Err(SnapshotError::PrefixNotCanonical {
                chunk: n,
                prefix,
                depth,
            });
        }
        let Some(expected) = self.next else {
            return Err(SnapshotError::AlreadyComplete { chunk: n });
        };
        if prefix != expected {
            return Err(SnapshotError::OutOfOrder {
                chunk: n,
                expected,
                found: prefix,
            });
        }
        let mut leaves: Vec<StateUpdate> = Vec::with_capacity(chunk.entries.len());
        for (index, entry) in chunk.entries.iter().enumerate() {
            let (key, value) = entry.leaf();
            if !has_prefix(&key, &prefix, depth) {
                return Err(SnapshotError::EntryOutsideChunk { chunk: n, index });
            }
            if leaves.last().is_some_and(|(last, _)| *last >= key) {
                return Err(SnapshotError::EntriesUnsorted { chunk: n, index });
            }
            leaves.push((key, Some(value)));
        }
        let computed = fold_path(subtree_hash(depth, &leaves), &prefix, &chunk.siblings);
        if computed != *self.root.as_bytes() {
            return Err(SnapshotError::ProofMismatch {
                chunk: n,
                root: self.root,
            });
        }
        self.write_entries(n, &chunk.entries)?;
        self.commit_chunk(n, &leaves)?;
        self.next = successor(&prefix_end(&prefix, depth));
        self.chunks += 1;
        Ok(())
    }

    /// Writes the entries into the state's tables, all or none.
    fn write_entries(
        &mut self,
        chunk: u32,
        entries: &[SnapshotEntry],
    ) -> Result<(), SnapshotError> {
        let mut tables = self.state.tables_mut();
        for (index, entry) in entries.iter().enumerate() {
            let Some(table) = tables.iter_mut().find(|t| t.tag() == entry.table()) else {
                let table = entry.table().to_owned();
                drop(tables);
                self.state.discard();
                return Err(SnapshotError::UnknownTable {
                    chunk,
                    index,
                    table,
                });
            };
            if let Err(error) = table.insert_encoded(entry.key(), entry.value()) {
                let table = entry.table().to_owned();
                drop(tables);
                self.state.discard();
                return Err(SnapshotError::Entry {
                    chunk,
                    index,
                    table,
                    error,
                });
            }
        }
        for t in tables {
            t.commit_tx();
        }
        Ok(())
    }

    /// Commits the chunk's entries, written as pending by
    /// [`write_entries`](Self::write_entries), and its leaves to the tree: in memory, or to
    /// the database in one transaction.
    fn commit_chunk(&mut self, chunk: u32, leaves: &[StateUpdate]) -> Result<(), SnapshotError> {
        #[cfg(feature = "redb")]
        if self.state.is_on_disk() {
            return self
                .state
                .import_chunk(&mut self.tree, leaves)
                .map_err(|e| SnapshotError::Disk {
                    chunk,
                    reason: e.to_string(),
                });
        }
        let _ = chunk;
        for t in self.state.tables_mut() {
            drop(t.commit_block());
        }
        self.tree
            .apply(leaves)
            .expect("chunks cover ascending, disjoint key ranges and their leaves are sorted");
        Ok(())
    }

    /// The imported state, once every key is covered.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Incomplete`] if chunks are missing at the end (check
    /// [`is_complete`](Self::is_complete) first: the import is consumed).
    pub fn finish(self) -> Result<State<T>, SnapshotError> {
        if let Some(next) = self.next {
            return Err(SnapshotError::Incomplete {
                chunks: self.chunks,
                next,
            });
        }
        debug_assert_eq!(self.tree.root(), self.root);
        let mut state = self.state;
        #[cfg(feature = "redb")]
        if state.is_on_disk() {
            state
                .finish_disk_import(self.tree, self.root)
                .map_err(|e| SnapshotError::Disk {
                    chunk: self.chunks,
                    reason: e.to_string(),
                })?;
            return Ok(state);
        }
        state.tree = self.tree;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::AccountId;
    use crate::state::AccountState;
    use crate::tx::Keypair;
    use proptest::prelude::*;

    #[test]
    fn prefix_ends_and_successors_walk_the_key_space() {
        let zero = StateKey::from_bytes([0; 32]);
        assert_eq!(prefix_end(&zero, 0), StateKey::from_bytes([0xff; 32]));
        assert_eq!(successor(&StateKey::from_bytes([0xff; 32])), None);
        let mut half = [0; 32];
        half[0] = 0x80;
        assert_eq!(
            successor(&prefix_end(&zero, 1)),
            Some(StateKey::from_bytes(half))
        );
    }

    /// A committed state whose accounts table holds `n` accounts.
    fn state_with(n: u32) -> State<()> {
        let key = Keypair::from_seed(&[9; 32]).public();
        State::genesis(|_, core| {
            for i in 0..n {
                let mut id = [0; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                core.accounts.insert(
                    AccountId::from_bytes(id),
                    AccountState {
                        next_nonce: u64::from(i),
                        key,
                    },
                );
            }
        })
    }

    fn import(chunks: &[SnapshotChunk], root: StateRoot) -> Result<State<()>, SnapshotError> {
        let mut import = SnapshotImport::<()>::new(7, root);
        for chunk in chunks {
            import.add(chunk)?;
        }
        import.finish()
    }

    #[test]
    fn the_empty_state_is_one_empty_chunk() {
        let state = state_with(0);
        let chunks = state.export_snapshot(7, 4).unwrap();
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].entries().is_empty());
        assert_eq!(import(&chunks, state.root()).unwrap().root(), state.root());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn any_state_round_trips_in_chunks_of_any_size(n in 0u32..200, max in 1usize..9) {
            let state = state_with(n);
            let chunks = state.export_snapshot(7, max).unwrap();
            prop_assert!(chunks.iter().all(|c| c.entries().len() <= max));
            let encoded: Vec<Vec<u8>> = chunks.iter().map(SnapshotChunk::encode).collect();
            let mut import = SnapshotImport::<()>::new(7, state.root());
            for bytes in &encoded {
                import.add_bytes(bytes).unwrap();
            }
            let back = import.finish().unwrap();
            prop_assert_eq!(back.root(), state.root());
            prop_assert_eq!(entries(&back), entries(&state));
            // Every chunk is needed.
            if chunks.len() > 1 {
                for skip in 0..chunks.len() {
                    let mut rest = chunks.clone();
                    rest.remove(skip);
                    prop_assert!(import_err(&rest, state.root()));
                }
            }
        }
    }

    /// A state of 300 accounts in chunks of 8 entries imported on disk, every record held by
    /// hash (so each chunk reads the records of the earlier ones).
    #[cfg(feature = "redb")]
    fn disk_import(dir: &std::path::Path) -> (State<()>, Vec<SnapshotChunk>, SnapshotImport<()>) {
        let state = state_with(300);
        let chunks = state.export_snapshot(7, 8).unwrap();
        let config = crate::state::disk::DiskConfig::new(dir).tree_memory_depth(0);
        let import = SnapshotImport::<()>::on_disk(7, state.root(), &config).unwrap();
        (state, chunks, import)
    }

    #[cfg(feature = "redb")]
    #[test]
    fn a_chunk_whose_tree_records_cannot_be_read_is_refused_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (_, chunks, mut import) = disk_import(dir.path());
        import.add(&chunks[0]).unwrap();
        import.add(&chunks[1]).unwrap();
        // The records the first chunks wrote are gone: the next chunk cannot reach the
        // subtrees it must join, and is refused instead of leaving them out of the tree.
        import
            .state
            .disk
            .as_ref()
            .unwrap()
            .db()
            .delete_tree_records();
        let refused = import.add(&chunks[2]);
        assert!(
            matches!(&refused, Err(SnapshotError::Disk { chunk: 2, reason }) if reason.contains("nodes")),
            "{refused:?}"
        );
        assert_eq!(import.chunks(), 2);
    }

    #[cfg(feature = "redb")]
    #[test]
    fn a_disk_import_round_trips_and_a_height_without_a_next_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (state, chunks, mut import) = disk_import(dir.path());
        for chunk in &chunks {
            import.add(chunk).unwrap();
        }
        let back = import.finish().unwrap();
        assert_eq!(back.root(), state.root());
        assert_eq!(entries(&back), entries(&state));
        back.verify_entries().unwrap();

        let config = crate::state::disk::DiskConfig::new(dir.path());
        let refused = SnapshotImport::<()>::on_disk(u64::MAX, state.root(), &config);
        assert!(
            matches!(&refused, Err(SnapshotError::Disk { chunk: 0, reason }) if reason.contains("can take no block")),
            "{refused:?}"
        );
    }

    /// The temporary folders of spilled exports left in `dir`.
    #[cfg(feature = "redb")]
    fn spill_folders(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
            .collect()
    }

    #[cfg(feature = "redb")]
    #[test]
    fn a_spilled_export_gives_the_chunks_of_the_export_in_memory_and_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let (state, chunks, mut import) = disk_import(dir.path());
        for chunk in &chunks {
            import.add(chunk).unwrap();
        }
        let on_disk = import.finish().unwrap();
        for max in [1, 3, 8, 64, MAX_CHUNK_ENTRIES] {
            let expected = state.export_snapshot(7, max).unwrap();
            // From 256 files of one or two entries to one file of every entry.
            for bucket in [1, 7, 40, 1000] {
                let mut got = Vec::new();
                on_disk
                    .export_spilled(dir.path(), 7, max, bucket, &mut |c| {
                        got.push(c);
                        Ok::<_, SnapshotError>(())
                    })
                    .unwrap();
                assert_eq!(got, expected, "max {max}, about {bucket} entries a file");
            }
        }
        assert_eq!(
            on_disk.export_snapshot(7, 8).unwrap(),
            state.export_snapshot(7, 8).unwrap()
        );
        assert!(spill_folders(dir.path()).is_empty());

        // The public route spills above its bound (lowered for this thread), to the same
        // chunks; a folder a killed exporter left behind is removed on the way.
        let stale = dir.path().join("export-0-7.tmp");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("000"), b"left over").unwrap();
        spill::BUCKET_ENTRIES.with(|b| b.set(Some(40)));
        let mut got = Vec::new();
        let mut spilled = false;
        on_disk
            .export_snapshot_to(7, 8, |c| {
                spilled |= !spill_folders(dir.path()).is_empty();
                got.push(c);
                Ok::<_, SnapshotError>(())
            })
            .unwrap();
        spill::BUCKET_ENTRIES.with(|b| b.set(None));
        assert!(spilled, "the export went through its temporary files");
        assert_eq!(got, state.export_snapshot(7, 8).unwrap());
        assert!(spill_folders(dir.path()).is_empty());

        // An error from the receiver stops the export, and the files go as well.
        let mut taken = 0;
        let stopped = on_disk.export_spilled(dir.path(), 7, 8, 7, &mut |_| {
            taken += 1;
            match taken {
                3 => Err(SnapshotError::Spill("receiver gone".into())),
                _ => Ok(()),
            }
        });
        assert!(
            matches!(&stopped, Err(SnapshotError::Spill(m)) if m == "receiver gone"),
            "{stopped:?}"
        );
        assert_eq!(taken, 3);
        assert!(spill_folders(dir.path()).is_empty());

        // A folder that cannot be written: refused, saying where.
        let missing = dir.path().join("no such folder");
        let refused =
            on_disk.export_spilled(&missing, 7, 8, 7, &mut |_| Ok::<_, SnapshotError>(()));
        assert!(
            matches!(&refused, Err(SnapshotError::Spill(m)) if m.contains("no such folder")),
            "{refused:?}"
        );
    }

    fn entries(state: &State<()>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for t in state.tables() {
            t.committed_entries(&mut out);
        }
        out.sort();
        out
    }

    fn import_err(chunks: &[SnapshotChunk], root: StateRoot) -> bool {
        import(chunks, root).is_err()
    }
}
