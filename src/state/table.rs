//! Typed state tables with per-transaction savepoints, per-block commit and undo.

use core::any::Any;
use core::hash::Hash;
use std::collections::HashMap;

use serde::Serialize;

use serde::de::DeserializeOwned;

use crate::codec::{self, DecodeError};
use crate::hash::{domain, Digest, StateKey};

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
    let mut buf = Vec::with_capacity(1 + tag.len() + body.len());
    // The tag's length first, so that no (tag, key) pair can read as another.
    buf.push(u8::try_from(tag.len()).expect("table tags are short"));
    buf.extend_from_slice(tag.as_bytes());
    buf.extend_from_slice(body);
    StateKey::from_bytes(domain::STATE_KEY.hash(&buf))
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
    /// Restores the committed values a `commit_block` replaced.
    fn undo_block(&mut self, undo: Box<dyn Any + Send + Sync>);
    /// The table's tag (see [`entry_key`]).
    fn tag(&self) -> &'static str;
    /// Appends every committed entry as `(key body, value body)`: the encodings [`entry_key`]
    /// and [`value_digest`] hash (for state snapshots).
    fn committed_entries(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>);
    /// Decodes an entry given as `(key body, value body)` and writes it as a pending write of
    /// the current transaction (for state snapshots).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if either body is not the canonical encoding of the table's key or value
    /// type; nothing is written then.
    fn insert_encoded(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError>;
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
    committed: HashMap<K, V>,
    pending: HashMap<K, Option<V>>,
    /// For each write of the current transaction: the key and its previous pending slot.
    journal: Vec<(K, Option<Option<V>>)>,
}

impl<K, V> Table<K, V>
where
    K: Eq + Hash + Clone + Serialize + Send + Sync + 'static,
    V: Clone + Serialize + Send + Sync + 'static,
{
    /// An empty table whose entries are committed under `tag` (unique per state).
    pub fn new(tag: &'static str) -> Self {
        Self {
            tag,
            committed: HashMap::new(),
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
        self.committed.get(key)
    }

    /// The committed value, ignoring pending writes.
    #[inline]
    pub fn get_committed(&self, key: &K) -> Option<&V> {
        self.committed.get(key)
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

    fn committed_entries(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        out.reserve(self.committed.len());
        for (k, v) in &self.committed {
            let (mut key, mut value) = (Vec::new(), Vec::new());
            codec::encode_body_into(k, &mut key);
            codec::encode_body_into(v, &mut value);
            out.push((key, value));
        }
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
        for (k, v) in &self.pending {
            let key = entry_key(self.tag, k);
            match v {
                Some(v) => out.push((key, Some(value_digest(v)))),
                None if self.committed.contains_key(k) => out.push((key, None)),
                None => {}
            }
        }
    }

    fn commit_block(&mut self) -> Box<dyn Any + Send + Sync> {
        debug_assert!(self.journal.is_empty(), "commit_block inside a transaction");
        let mut undo: Vec<(K, Option<V>)> = Vec::with_capacity(self.pending.len());
        for (k, v) in self.pending.drain() {
            let old = match v {
                Some(v) => self.committed.insert(k.clone(), v),
                None => self.committed.remove(&k),
            };
            undo.push((k, old));
        }
        Box::new(undo)
    }

    fn discard_block(&mut self) {
        self.journal.clear();
        self.pending.clear();
    }

    fn undo_block(&mut self, undo: Box<dyn Any + Send + Sync>) {
        let undo = undo
            .downcast::<Vec<(K, Option<V>)>>()
            .expect("undo data comes from this table's commit_block");
        for (k, old) in undo.into_iter() {
            match old {
                Some(v) => {
                    self.committed.insert(k, v);
                }
                None => {
                    self.committed.remove(&k);
                }
            }
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
    fn entry_keys_separate_tables() {
        assert_ne!(entry_key("ab", &1u8), entry_key("a", &1u8));
        assert_ne!(entry_key("a", &1u8), entry_key("a", &2u8));
    }
}
