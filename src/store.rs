//! Storage behind a trait: what the chain persists.
//!
//! The chain writes every accepted block (by hash) and the main chain's height index; on start it
//! reads them back and re-validates every block, so a store never needs to be trusted for
//! validity, only for durability. A store may also keep a state checkpoint
//! ([`StoredCheckpoint`]): the chain then starts from it, verified against its block's header,
//! and re-validates only the blocks after it. A chain opened from a state snapshot has no
//! bodies for the blocks below it: the store keeps their headers ([`Store::put_headers`]) so
//! that the chain reopens from it. [`MemoryStore`] is the embedded default;
//! [`FileStore`](crate::file_store::FileStore) is crash-safe on disk, and embedders can plug in their own
//! database by implementing [`Store`].

use std::collections::HashMap;

use crate::hash::BlockHash;

/// An error from a storage backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error from the backend.
    #[error("store i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The stored data is damaged.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// Any other backend error (for embedders' own stores).
    #[error("store backend error: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

/// The state at a main-chain block, kept by a store so that the chain reopens without replaying
/// the blocks up to it: the encoded [`SnapshotChunk`](crate::state::snapshot::SnapshotChunk)s of
/// the state after block `block` at `height`. The chain verifies it against that block's
/// header on open, so a store need not be trusted for it either.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredCheckpoint {
    /// The block's height.
    pub height: u64,
    /// The block.
    pub block: BlockHash,
    /// The encoded chunks, in import order.
    pub chunks: Vec<Vec<u8>>,
}

/// What the chain needs persisted.
///
/// Writes need not be atomic across calls: the chain puts a block before moving the main chain
/// onto it, and on restart rebuilds fork choice from the blocks themselves.
pub trait Store: Send {
    /// Stores an encoded block under its hash (idempotent).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails; the block must then count as not stored.
    fn put_block(&mut self, hash: &BlockHash, encoded: &[u8]) -> Result<(), StoreError>;

    /// The encoded block with this hash, if stored.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails.
    fn get_block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every stored block hash, in the order first stored (parents before children).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails.
    fn block_hashes(&self) -> Result<Vec<BlockHash>, StoreError>;

    /// Replaces the main chain from `from_height` upwards with `hashes` (heights `from_height`,
    /// `from_height + 1`, …); the last one becomes the tip.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails.
    fn set_main_chain(&mut self, from_height: u64, hashes: &[BlockHash]) -> Result<(), StoreError>;

    /// The main-chain block at `height`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails.
    fn main_hash(&self, height: u64) -> Result<Option<BlockHash>, StoreError>;

    /// The main chain's tip height, if any block is stored.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails.
    fn tip_height(&self) -> Result<Option<u64>, StoreError>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Replaces the kept checkpoint with `checkpoint`, whole or not at all. The default keeps
    /// none: the chain then replays every block on open.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails; the previous checkpoint must then still be kept.
    fn put_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        let _ = checkpoint;
        Ok(())
    }

    /// The checkpoint last put, if the store keeps one.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails.
    fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(None)
    }

    /// Replaces the kept headers with `headers`, whole or not at all: the encoded headers of
    /// the main chain from height 1 upwards whose blocks the store does not hold (a chain opened
    /// from a state snapshot puts the headers up to the snapshot's height). The chain checks
    /// them against the main chain's hashes and its engine when it reopens, so a store need not
    /// be trusted for them. The default keeps none: a chain opened from a snapshot on such a
    /// store then cannot reopen from it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails; the previous headers must then still be kept.
    fn put_headers(&mut self, headers: &[Vec<u8>]) -> Result<(), StoreError> {
        let _ = headers;
        Ok(())
    }

    /// The headers last put (heights 1, 2, …), empty if the store keeps none.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the backend fails.
    fn headers(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(Vec::new())
    }
}

/// The in-memory default store.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    blocks: HashMap<BlockHash, Vec<u8>>,
    order: Vec<BlockHash>,
    main: Vec<BlockHash>,
    checkpoint: Option<StoredCheckpoint>,
    headers: Vec<Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn put_block(&mut self, hash: &BlockHash, encoded: &[u8]) -> Result<(), StoreError> {
        if !self.blocks.contains_key(hash) {
            self.blocks.insert(*hash, encoded.to_vec());
            self.order.push(*hash);
        }
        Ok(())
    }

    fn get_block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blocks.get(hash).cloned())
    }

    fn put_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        self.checkpoint = Some(checkpoint.clone());
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoint.clone())
    }

    fn put_headers(&mut self, headers: &[Vec<u8>]) -> Result<(), StoreError> {
        self.headers = headers.to_vec();
        Ok(())
    }

    fn headers(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.headers.clone())
    }

    fn block_hashes(&self) -> Result<Vec<BlockHash>, StoreError> {
        Ok(self.order.clone())
    }

    fn set_main_chain(&mut self, from_height: u64, hashes: &[BlockHash]) -> Result<(), StoreError> {
        let from = usize::try_from(from_height)
            .ok()
            .filter(|&f| f <= self.main.len())
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "main chain update at height {from_height} leaves a gap above height {}",
                    self.main.len()
                ))
            })?;
        self.main.truncate(from);
        self.main.extend_from_slice(hashes);
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_keeps_order_and_main_chain() {
        let mut s = MemoryStore::new();
        let (a, b, c) = (
            BlockHash::from_bytes([1; 32]),
            BlockHash::from_bytes([2; 32]),
            BlockHash::from_bytes([3; 32]),
        );
        s.put_block(&a, b"a").unwrap();
        s.put_block(&b, b"b").unwrap();
        s.put_block(&a, b"a").unwrap();
        assert_eq!(s.block_hashes().unwrap(), vec![a, b]);
        assert_eq!(s.get_block(&b).unwrap().as_deref(), Some(&b"b"[..]));
        s.set_main_chain(0, &[a, b]).unwrap();
        assert_eq!(s.tip_height().unwrap(), Some(1));
        s.set_main_chain(1, &[c]).unwrap();
        assert_eq!(s.main_hash(1).unwrap(), Some(c));
        assert!(s.set_main_chain(5, &[c]).is_err());
        assert_eq!(s.tip_height().unwrap(), Some(1));
    }
}
