//! Typed state tables with per-transaction savepoints, per-block commit and undo.

use core::any::Any;
use core::hash::Hash;
use std::collections::HashMap;

use serde::Serialize;

use serde::de::DeserializeOwned;

use crate::codec::{self, DecodeError};
use crate::hash::{domain, Digest, StateKey};
#[cfg(feature = "redb")]
use crate::state::disk::{DiskTable, EncodedWrite, StateDb};

/// The state-tree key of entry `key` in the table tagged `tag`.
///
/// Light clients use this (with [`value_digest`]) to check a
/// [`StateProof`](crate::smt::StateProof) for an entry against a header's state root.
pub fn entry_key<K: Serialize + ?Sized>(tag: &str, key: &K) -> StateKey {
    let mut buf = Vec::with_capacity(64);
    codec::encode_body_into(key, &mut buf);
    entry_key_of_body(tag, &buf)
}

/// [`entry_key`] of a key given as its encoded body. `tag` is at most 255 bytes.
pub(crate) fn entry_key_of_body(tag: &str, body: &[u8]) -> StateKey {
    let mut hasher = domain::STATE_KEY.hasher();
    // The tag's length first, so that no (tag, key) pair can read as another.
    hasher.update(&[u8::try_from(tag.len()).expect("table tags are short")]);
    hasher.update(tag.as_bytes());
    hasher.update(body);
    StateKey::from_bytes(*hasher.finalize().as_bytes())
}

/// The state-tree value committed for `value`.
pub fn value_digest<V: Serialize + ?Sized>(value: &V) -> Digest {
    let mut buf = Vec::with_capacity(128);
    codec::encode_body_into(value, &mut buf);
    value_digest_of_body(&buf)
}

/// [`value_digest`] of a value given as its encoded body.
pub(crate) fn value_digest_of_body(body: &[u8]) -> Digest {
    Digest::from_bytes(domain::STATE_VALUE.hash(body))
}

/// The leaf updates a block produces: `(key, Some(value digest))` or `(key, None)` to delete.
pub type Leaves = Vec<(StateKey, Option<Digest>)>;

/// What a table needs to take part in block application, without its types: the state drives
/// every table of the core and of the application through this (an application lists its
/// tables in [`AppState`](crate::state::AppState)). Implemented by [`Table`].
pub trait TableOps: Send + Sync {
    /// Keeps the current transaction's writes.
    fn commit_tx(&mut self);
    /// Drops the current transaction's writes.
    fn rollback_tx(&mut self);
    /// The leaf updates the block's pending writes would make.
    fn pending_leaves(&self, out: &mut Leaves);
    /// Makes the block's pending writes committed; returns what undoes them.
    fn commit_block(&mut self) -> Box<dyn Any + Send + Sync>;
    /// Drops the block's pending writes.
    fn discard_block(&mut self);
    /// Takes the block's pending writes out, leaving none (as [`discard_block`] does), to be
    /// put back by [`restore_block`] while the committed entries are unchanged. `None` if the
    /// table cannot (the default: the writes are discarded); the state then executes a block
    /// again instead of reusing its writes.
    ///
    /// [`discard_block`]: Self::discard_block
    /// [`restore_block`]: Self::restore_block
    fn take_block(&mut self) -> Option<Box<dyn Any + Send + Sync>> {
        self.discard_block();
        None
    }
    /// Puts back as pending writes what [`take_block`](Self::take_block) took, into a table
    /// without pending writes; `false` (and nothing changed) if `writes` are not this
    /// table's.
    fn restore_block(&mut self, writes: Box<dyn Any + Send + Sync>) -> bool {
        let _ = writes;
        false
    }
    /// Restores the committed values a `commit_block` replaced.
    fn undo_block(&mut self, undo: Box<dyn Any + Send + Sync>);
    /// The table's tag (see [`entry_key`]).
    fn tag(&self) -> &'static str;
    /// Hands every committed entry to `visit` as `(key body, value body)`: the encodings
    /// [`entry_key`] and [`value_digest`] hash (for state snapshots). On disk, an entry that
    /// cannot be read ends the visit and is recorded as a read failure.
    fn visit_committed(&self, visit: &mut dyn FnMut(&[u8], &[u8]));
    /// Appends every committed entry as `(key body, value body)` (see
    /// [`visit_committed`](Self::visit_committed)).
    fn committed_entries(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        self.visit_committed(&mut |key, value| out.push((key.to_vec(), value.to_vec())));
    }
    /// Decodes an entry given as `(key body, value body)` and writes it as a pending write of
    /// the current transaction (for state snapshots).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if either body is not the canonical encoding of the table's key or value
    /// type; nothing is written then.
    fn insert_encoded(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError>;
    /// Appends the block's pending writes as `(key body, Some(value body))`, or `(key body,
    /// None)` for a deletion (for the disk backend, which writes them in one transaction).
    #[cfg(feature = "redb")]
    fn pending_writes(&self, out: &mut Vec<EncodedWrite>);
    /// Drops the committed entries held in memory and reads them from `db` from now on; the
    /// state wrote them there first (see [`crate::state::disk`]). No pending writes may exist.
    #[cfg(feature = "redb")]
    fn move_to_disk(&mut self, db: &StateDb);
}

/// Where a table's committed entries live.
#[derive(Debug)]
enum Committed<K, V> {
    /// All of them in memory.
    Memory(HashMap<K, V>),
    /// In the state database, with a bounded cache of decoded values.
    #[cfg(feature = "redb")]
    Disk(Box<DiskTable<K, V>>),
}

/// What undoes a table's block: the replaced values (memory), or the keys written, whose
/// replaced values the database keeps (disk).
enum TableUndo<K, V> {
    Memory(Vec<(K, Option<V>)>),
    #[cfg(feature = "redb")]
    Disk(Vec<K>),
}

/// A state table: committed entries, the current block's pending writes, and the current
/// transaction's savepoint journal.
///
/// Reads see the current transaction's and block's writes; writes are journalled so that a
/// failing transaction leaves no trace, and a block's writes are committed, discarded or undone
/// as one. Every entry is committed to the state tree under [`entry_key`]`(tag, key)`.
#[derive(Debug)]
pub struct Table<K, V> {
    tag: &'static str,
    committed: Committed<K, V>,
    pending: HashMap<K, Option<V>>,
    /// For each write of the current transaction: the key and its previous pending slot.
    journal: Vec<(K, Option<Option<V>>)>,
}

impl<K, V> Table<K, V>
where
    K: Eq + Hash + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// An empty table whose entries are committed under `tag` (unique per state).
    pub fn new(tag: &'static str) -> Self {
        Self {
            tag,
            committed: Committed::Memory(HashMap::new()),
            pending: HashMap::new(),
            journal: Vec::new(),
        }
    }

    /// The current value (pending writes first).
    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        if !self.pending.is_empty() {
            if let Some(slot) = self.pending.get(key) {
                return slot.as_ref();
            }
        }
        self.get_committed(key)
    }

    /// The committed value, ignoring pending writes.
    ///
    /// On the disk backend (feature `redb`), a read of the state database that fails answers
    /// `None`; the failure is recorded, and the block being executed is refused with it (see
    /// `state::disk`).
    #[inline]
    pub fn get_committed(&self, key: &K) -> Option<&V> {
        match &self.committed {
            Committed::Memory(map) => map.get(key),
            #[cfg(feature = "redb")]
            Committed::Disk(disk) => disk.get(key),
        }
    }

    /// The value of `key` with `writes` (a table of this type's pending writes, as
    /// [`TableOps::take_block`] took them out) over the committed entries: a read of a state
    /// whose pending writes are set aside. Writes of another type are ignored.
    pub(crate) fn get_with<'a>(
        &'a self,
        writes: Option<&'a (dyn Any + Send + Sync)>,
        key: &K,
    ) -> Option<&'a V> {
        let writes = writes.and_then(|w| w.downcast_ref::<HashMap<K, Option<V>>>());
        if let Some(slot) = writes.and_then(|w| w.get(key)) {
            return slot.as_ref();
        }
        self.get(key)
    }

    /// Whether the entries are on disk (feature `redb`, see `state::disk`).
    pub fn is_on_disk(&self) -> bool {
        !matches!(self.committed, Committed::Memory(_))
    }

    /// How many decoded values the disk backend caches now (0 for the memory backend).
    pub fn cached_entries(&self) -> usize {
        match &self.committed {
            Committed::Memory(_) => 0,
            #[cfg(feature = "redb")]
            Committed::Disk(disk) => disk.cached(),
        }
    }

    fn write(&mut self, key: K, value: Option<V>) {
        let previous = self.pending.insert(key.clone(), value);
        self.journal.push((key, previous));
    }

    /// Writes an entry (pending until the block commits).
    pub fn insert(&mut self, key: K, value: V) {
        self.write(key, Some(value));
    }

    /// Deletes an entry (nothing happens if there is none).
    pub(crate) fn remove(&mut self, key: K) {
        self.write(key, None);
    }

    /// Reads, changes and writes back an entry (inserting `default` first if absent).
    pub fn update(&mut self, key: K, default: impl FnOnce() -> V, f: impl FnOnce(&mut V)) {
        let mut v = self.get(&key).cloned().unwrap_or_else(default);
        f(&mut v);
        self.insert(key, v);
    }
}

impl<K, V> TableOps for Table<K, V>
where
    K: Eq + Hash + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn tag(&self) -> &'static str {
        self.tag
    }

    fn visit_committed(&self, visit: &mut dyn FnMut(&[u8], &[u8])) {
        match &self.committed {
            Committed::Memory(map) => {
                let (mut key, mut value) = (Vec::new(), Vec::new());
                for (k, v) in map {
                    key.clear();
                    value.clear();
                    codec::encode_body_into(k, &mut key);
                    codec::encode_body_into(v, &mut value);
                    visit(&key, &value);
                }
            }
            #[cfg(feature = "redb")]
            Committed::Disk(disk) => disk.visit(visit),
        }
    }

    #[cfg(feature = "redb")]
    fn pending_writes(&self, out: &mut Vec<EncodedWrite>) {
        out.reserve(self.pending.len());
        for (k, v) in &self.pending {
            let mut key = Vec::new();
            codec::encode_body_into(k, &mut key);
            let value = v.as_ref().map(|v| {
                let mut value = Vec::new();
                codec::encode_body_into(v, &mut value);
                value
            });
            out.push((key, value));
        }
    }

    #[cfg(feature = "redb")]
    fn move_to_disk(&mut self, db: &StateDb) {
        debug_assert!(self.pending.is_empty(), "move_to_disk with pending writes");
        self.committed = Committed::Disk(Box::new(DiskTable::open(db, self.tag)));
    }

    fn insert_encoded(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
        let key: K = codec::decode_body("state entry key", key)?;
        let value: V = codec::decode_body("state entry value", value)?;
        self.insert(key, value);
        Ok(())
    }

    fn commit_tx(&mut self) {
        self.journal.clear();
    }

    fn rollback_tx(&mut self) {
        while let Some((key, previous)) = self.journal.pop() {
            match previous {
                Some(slot) => {
                    self.pending.insert(key, slot);
                }
                None => {
                    self.pending.remove(&key);
                }
            }
        }
    }

    fn pending_leaves(&self, out: &mut Leaves) {
        out.reserve(self.pending.len());
        for (k, v) in &self.pending {
            let key = entry_key(self.tag, k);
            match v {
                Some(v) => out.push((key, Some(value_digest(v)))),
                None if self.get_committed(k).is_some() => out.push((key, None)),
                None => {}
            }
        }
    }

    fn commit_block(&mut self) -> Box<dyn Any + Send + Sync> {
        debug_assert!(self.journal.is_empty(), "commit_block inside a transaction");
        match &mut self.committed {
            Committed::Memory(map) => {
                let mut undo: Vec<(K, Option<V>)> = Vec::with_capacity(self.pending.len());
                for (k, v) in self.pending.drain() {
                    let old = match v {
                        Some(v) => map.insert(k.clone(), v),
                        None => map.remove(&k),
                    };
                    undo.push((k, old));
                }
                Box::new(TableUndo::Memory(undo))
            }
            #[cfg(feature = "redb")]
            Committed::Disk(disk) => {
                let keys = self.pending.keys().cloned().collect();
                disk.committed(self.pending.drain());
                Box::new(TableUndo::<K, V>::Disk(keys))
            }
        }
    }

    fn discard_block(&mut self) {
        self.journal.clear();
        self.pending.clear();
        #[cfg(feature = "redb")]
        if let Committed::Disk(disk) = &mut self.committed {
            disk.trim();
        }
    }

    fn take_block(&mut self) -> Option<Box<dyn Any + Send + Sync>> {
        let writes = core::mem::take(&mut self.pending);
        self.discard_block();
        Some(Box::new(writes))
    }

    fn restore_block(&mut self, writes: Box<dyn Any + Send + Sync>) -> bool {
        debug_assert!(self.pending.is_empty() && self.journal.is_empty());
        match writes.downcast::<HashMap<K, Option<V>>>() {
            Ok(writes) => {
                self.pending = *writes;
                true
            }
            Err(_) => false,
        }
    }

    fn undo_block(&mut self, undo: Box<dyn Any + Send + Sync>) {
        let undo = undo
            .downcast::<TableUndo<K, V>>()
            .expect("undo data comes from this table's commit_block");
        match (&mut self.committed, *undo) {
            (Committed::Memory(map), TableUndo::Memory(undo)) => {
                for (k, old) in undo {
                    match old {
                        Some(v) => {
                            map.insert(k, v);
                        }
                        None => {
                            map.remove(&k);
                        }
                    }
                }
            }
            #[cfg(feature = "redb")]
            (Committed::Disk(disk), TableUndo::Disk(keys)) => disk.changed(&keys),
            #[cfg(feature = "redb")]
            _ => unreachable!("a table never changes backend between a block and its undo"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoints_commit_and_undo() {
        let mut t: Table<u32, String> = Table::new("t");
        t.insert(1, "a".into());
        t.commit_tx();
        t.insert(1, "b".into());
        t.insert(2, "c".into());
        assert_eq!(t.get(&1).unwrap(), "b");
        t.rollback_tx();
        assert_eq!(t.get(&1).unwrap(), "a");
        assert!(t.get(&2).is_none());
        let mut leaves = Vec::new();
        t.pending_leaves(&mut leaves);
        assert_eq!(
            leaves,
            vec![(entry_key("t", &1u32), Some(value_digest("a")))]
        );
        let undo = t.commit_block();
        assert_eq!(t.get_committed(&1).unwrap(), "a");
        t.write(1, None);
        t.commit_tx();
        let mut leaves = Vec::new();
        t.pending_leaves(&mut leaves);
        assert_eq!(leaves, vec![(entry_key("t", &1u32), None)]);
        t.discard_block();
        assert_eq!(t.get(&1).unwrap(), "a");
        t.undo_block(undo);
        assert!(t.get(&1).is_none());
        assert!(t.get_committed(&1).is_none());
    }

    #[test]
    fn a_blocks_writes_taken_out_come_back_only_to_a_table_of_their_type() {
        let mut t: Table<u32, String> = Table::new("t");
        t.insert(1, "a".into());
        t.commit_tx();
        let writes = t.take_block().unwrap();
        assert!(t.get(&1).is_none(), "taken out, as discarded");
        let mut other: Table<u64, String> = Table::new("o");
        assert!(!other.restore_block(writes));
        let writes = {
            t.insert(2, "b".into());
            t.commit_tx();
            t.take_block().unwrap()
        };
        assert!(t.restore_block(writes));
        assert_eq!(t.get(&2).unwrap(), "b");
        t.commit_block();
        assert_eq!(t.get_committed(&2).unwrap(), "b");
    }

    /// Commits table `t`'s pending block to `disk` and to the table, as the state does.
    #[cfg(feature = "redb")]
    fn commit_on_disk(
        t: &mut Table<u32, String>,
        disk: &mut crate::state::disk::DiskState,
    ) -> Box<dyn Any + Send + Sync> {
        let mut writes = Vec::new();
        t.pending_writes(&mut writes);
        disk.commit_block(
            &["t"],
            &[writes],
            crate::state::disk::TreeWrite::root_only(crate::smt::EMPTY_ROOT),
        )
        .unwrap();
        t.commit_block()
    }

    #[cfg(feature = "redb")]
    #[test]
    fn a_disk_table_reads_back_every_entry_and_trims_its_cache_to_the_bound_at_each_block() {
        use crate::state::disk::{DiskConfig, DiskError, DiskState};
        let dir = tempfile::tempdir().unwrap();
        let config = DiskConfig::new(dir.path()).cache_entries(4);
        let root = crate::smt::EMPTY_ROOT;
        let mut disk = DiskState::create(
            &config,
            &[("t", Vec::new())],
            0,
            crate::state::disk::TreeWrite::root_only(root),
            2,
        )
        .unwrap();
        let mut t: Table<u32, String> = Table::new("t");
        t.move_to_disk(disk.db());
        assert!(t.is_on_disk());
        for i in 0..20 {
            t.insert(i, format!("v{i}"));
        }
        t.commit_tx();
        let first = commit_on_disk(&mut t, &mut disk);
        assert!(t.cached_entries() <= 4, "{} cached", t.cached_entries());
        // Every entry reads back, from disk for the evicted ones; absent keys read as absent.
        for i in 0..20 {
            assert_eq!(t.get(&i).unwrap(), &format!("v{i}"));
        }
        assert!(t.get(&99).is_none());
        assert_eq!(t.cached_entries(), 21, "reads between blocks stay cached");
        t.discard_block();
        assert!(t.cached_entries() <= 4);

        // A second block changes one entry and deletes another; undoing it restores both.
        t.insert(3, "changed".into());
        t.remove(4);
        t.commit_tx();
        let mut leaves = Vec::new();
        t.pending_leaves(&mut leaves);
        assert_eq!(
            leaves.len(),
            2,
            "the deletion of a committed entry is a leaf"
        );
        let second = commit_on_disk(&mut t, &mut disk);
        assert_eq!(t.get(&3).unwrap(), "changed");
        assert!(t.get(&4).is_none());
        disk.undo_block(&["t"], root, 0).unwrap();
        t.undo_block(second);
        assert_eq!(t.get(&3).unwrap(), "v3");
        assert_eq!(t.get(&4).unwrap(), "v4");
        disk.undo_block(&["t"], root, 0).unwrap();
        t.undo_block(first);
        assert!((0..20).all(|i| t.get(&i).is_none()));
        let mut entries = Vec::new();
        t.committed_entries(&mut entries);
        assert!(entries.is_empty());
        // Below the height the state started at there is nothing to undo.
        assert!(matches!(
            disk.undo_block(&["t"], root, 0),
            Err(DiskError::NoUndo { height: 0, .. })
        ));
    }

    #[cfg(feature = "redb")]
    #[test]
    fn undo_records_older_than_the_kept_blocks_are_pruned_and_refused() {
        use crate::state::disk::{DiskConfig, DiskError, DiskState};
        let dir = tempfile::tempdir().unwrap();
        let root = crate::smt::EMPTY_ROOT;
        let mut disk = DiskState::create(
            &DiskConfig::new(dir.path()),
            &[("t", Vec::new())],
            0,
            crate::state::disk::TreeWrite::root_only(root),
            2,
        )
        .unwrap();
        let mut t: Table<u32, String> = Table::new("t");
        t.move_to_disk(disk.db());
        let mut undos = Vec::new();
        for block in 0..4u32 {
            t.insert(block, "x".into());
            t.commit_tx();
            undos.push(commit_on_disk(&mut t, &mut disk));
        }
        for _ in 0..2 {
            disk.undo_block(&["t"], root, 0).unwrap();
            t.undo_block(undos.pop().unwrap());
        }
        assert!(matches!(
            disk.undo_block(&["t"], root, 0),
            Err(DiskError::NoUndo {
                height: 2,
                floor: 3
            })
        ));
        assert_eq!(disk.committed_tip().unwrap().0, 2);
        assert!(t.get(&1).is_some() && t.get(&2).is_none());
    }

    #[test]
    fn entry_keys_separate_tables() {
        assert_ne!(entry_key("ab", &1u8), entry_key("a", &1u8));
        assert_ne!(entry_key("a", &1u8), entry_key("a", &2u8));
    }
}
