//! The Merkle commitment to a block's transactions, and inclusion proofs.
//!
//! The tree is BLAKE3's own: the transaction root is BLAKE3 (in the [`domain::TX_MERKLE`]
//! key-derivation domain) of the concatenated 32-byte transaction ids. BLAKE3 is a Merkle tree over
//! 1 KiB chunks, so the root costs what hashing the ids costs — SIMD and multi-core included — and
//! an inclusion proof is the 1 KiB chunk holding the id (up to 32 ids) plus one chaining value per
//! tree level.
//!
//! BLAKE3's tree commits to the input length and separates chunks from parent nodes and root from
//! non-root by flags, so there is no second preimage by duplicating the last leaf (the ambiguity
//! of Bitcoin's tree behind CVE-2012-2459): `[a, b, c]` and `[a, b, c, c]` have different roots.
//!
//! ```
//! use medledger::hash::TxId;
//! use medledger::merkle::{merkle_root, MerkleProof};
//! let ids: Vec<TxId> = (0..100u8).map(|i| TxId::from_bytes([i; 32])).collect();
//! let root = merkle_root(&ids);
//! let proof = MerkleProof::new(&ids, 57).unwrap();
//! assert!(proof.verify(&root, 100, &ids[57]).is_ok());
//! assert!(proof.verify(&root, 100, &ids[58]).is_err());
//! ```

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::CHUNK_LEN;
use serde::{Deserialize, Serialize};

use crate::codec::{BoundedVec, Canonical};
use crate::hash::{domain, Digest, MerkleRoot, TxId};

/// Ids per BLAKE3 chunk (1024 / 32).
pub const IDS_PER_CHUNK: usize = CHUNK_LEN / 32;
/// The most transactions a Merkle proof can address (and a block can hold): 2^20.
pub const MAX_PROOF_LEAVES: usize = 1 << 20;
/// The most sibling chaining values in a proof: one per level above the chunks.
pub const MAX_PROOF_DEPTH: usize = 16;
/// Ids hashed by one task before splitting work across threads.
const PARALLEL_SUBTREE_BYTES: usize = 64 * CHUNK_LEN;
/// Ids copied into the stack buffer per hasher update (16 chunks lets BLAKE3 use wide SIMD).
const BUFFER_IDS: usize = 16 * IDS_PER_CHUNK;

fn mode() -> Mode<'static> {
    Mode::DeriveKeyMaterial(domain::TX_MERKLE.context_key())
}

/// Feeds ids to a hasher through a stack buffer, so that BLAKE3 sees large updates.
fn update_ids(hasher: &mut blake3::Hasher, ids: &[TxId]) {
    let mut buf = [0u8; BUFFER_IDS * 32];
    for group in ids.chunks(BUFFER_IDS) {
        for (slot, id) in buf.chunks_exact_mut(32).zip(group) {
            slot.copy_from_slice(id.as_bytes());
        }
        hasher.update(&buf[..group.len() * 32]);
    }
}

/// The Merkle root of `ids` (the root of an empty list is the hash of empty input).
pub fn merkle_root(ids: &[TxId]) -> MerkleRoot {
    let len = ids.len() * 32;
    if cfg!(feature = "parallel") && len > PARALLEL_SUBTREE_BYTES {
        let split = left_subtree_len(len as u64) as usize / 32;
        let (l, r) = join(
            || subtree_cv(&ids[..split], 0),
            || subtree_cv(&ids[split..], split as u64 * 32),
        );
        return MerkleRoot::from_bytes(merge_subtrees_root(&l, &r, mode()).into());
    }
    let mut h = domain::TX_MERKLE.hasher();
    update_ids(&mut h, ids);
    MerkleRoot::from_bytes(*h.finalize().as_bytes())
}

/// The chaining value of the subtree holding `ids`, which start at byte `offset` of the input.
fn subtree_cv(ids: &[TxId], offset: u64) -> ChainingValue {
    let len = ids.len() * 32;
    if len > PARALLEL_SUBTREE_BYTES {
        let split = left_subtree_len(len as u64) as usize / 32;
        let (l, r) = join(
            || subtree_cv(&ids[..split], offset),
            || subtree_cv(&ids[split..], offset + split as u64 * 32),
        );
        return merge_subtrees_non_root(&l, &r, mode());
    }
    let mut h = domain::TX_MERKLE.hasher();
    h.set_input_offset(offset);
    update_ids(&mut h, ids);
    h.finalize_non_root()
}

#[cfg(feature = "parallel")]
fn join<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    rayon::join(a, b)
}

#[cfg(not(feature = "parallel"))]
fn join<A, B>(a: impl FnOnce() -> A, b: impl FnOnce() -> B) -> (A, B) {
    (a(), b())
}

/// Why a Merkle proof does not verify or cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The requested index is past the end of the list.
    #[error("index {index} is out of range for {count} transactions")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Number of transactions.
        count: u64,
    },
    /// The list is longer than a proof can address.
    #[error("{count} transactions exceed the proof limit of {max}")]
    TooManyLeaves {
        /// Number of transactions.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// The proof's chunk is not the one its index and count call for.
    #[error("proof chunk holds {found} ids where {expected} are expected")]
    BadChunk {
        /// Ids the chunk should hold.
        expected: usize,
        /// Ids it holds.
        found: usize,
    },
    /// The id is not at the proven position.
    #[error("the proof is for another transaction id")]
    WrongLeaf,
    /// The proof has the wrong number of sibling hashes for the tree's shape.
    #[error("proof has {found} sibling hashes where the tree has {expected} levels")]
    BadDepth {
        /// Levels expected.
        expected: usize,
        /// Siblings found.
        found: usize,
    },
    /// The proof is for a block with another number of transactions.
    #[error("proof is for {found} transactions, the header commits to {expected}")]
    CountMismatch {
        /// Count in the header.
        expected: u32,
        /// Count in the proof.
        found: u32,
    },
    /// The recomputed root differs.
    #[error("proof does not lead to the committed root")]
    RootMismatch,
}

/// A proof that a transaction id is at a position of a block's transaction list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// Position of the transaction in the block.
    pub index: u32,
    /// Number of transactions in the block (fixes the tree's shape).
    pub count: u32,
    /// The ids of the BLAKE3 chunk holding the transaction.
    pub chunk: BoundedVec<TxId, IDS_PER_CHUNK>,
    /// Chaining values of the siblings on the path, from the chunk up to the root.
    pub siblings: BoundedVec<Digest, MAX_PROOF_DEPTH>,
}

impl Canonical for MerkleProof {
    const NAME: &'static str = "merkle proof";
    const MAX_ENCODED_LEN: usize = 1 + 10 + 1 + IDS_PER_CHUNK * 32 + 1 + MAX_PROOF_DEPTH * 32;
}

impl MerkleProof {
    /// Builds the proof for `ids[index]`.
    ///
    /// # Errors
    ///
    /// [`MerkleError::IndexOutOfRange`] or [`MerkleError::TooManyLeaves`].
    pub fn new(ids: &[TxId], index: usize) -> Result<Self, MerkleError> {
        if ids.len() > MAX_PROOF_LEAVES {
            return Err(MerkleError::TooManyLeaves {
                count: ids.len() as u64,
                max: MAX_PROOF_LEAVES,
            });
        }
        if index >= ids.len() {
            return Err(MerkleError::IndexOutOfRange {
                index: index as u64,
                count: ids.len() as u64,
            });
        }
        let target = (index / IDS_PER_CHUNK) * IDS_PER_CHUNK;
        let mut siblings = Vec::new();
        let (mut start, mut end) = (0usize, ids.len());
        while (end - start) * 32 > CHUNK_LEN {
            let split = start + left_subtree_len(((end - start) * 32) as u64) as usize / 32;
            if target < split {
                siblings.push(Digest::from_bytes(subtree_cv(
                    &ids[split..end],
                    split as u64 * 32,
                )));
                end = split;
            } else {
                siblings.push(Digest::from_bytes(subtree_cv(
                    &ids[start..split],
                    start as u64 * 32,
                )));
                start = split;
            }
        }
        siblings.reverse();
        Ok(Self {
            index: index as u32,
            count: ids.len() as u32,
            chunk: ids[start..end]
                .to_vec()
                .try_into()
                .map_err(|_| MerkleError::BadChunk {
                    expected: IDS_PER_CHUNK,
                    found: end - start,
                })?,
            siblings: siblings.try_into().map_err(|_| MerkleError::BadDepth {
                expected: MAX_PROOF_DEPTH,
                found: MAX_PROOF_DEPTH + 1,
            })?,
        })
    }

    /// Checks that `id` is transaction number [`index`](Self::index) of the `tx_count`
    /// transactions committed to by `root` (both from a trusted block header; the root alone does
    /// not fix the count for every path, so the proof's own `count` must match it).
    ///
    /// # Errors
    ///
    /// [`MerkleError`] saying which check failed.
    pub fn verify(&self, root: &MerkleRoot, tx_count: u32, id: &TxId) -> Result<(), MerkleError> {
        if self.count != tx_count {
            return Err(MerkleError::CountMismatch {
                expected: tx_count,
                found: self.count,
            });
        }
        let (index, count) = (self.index as usize, self.count as usize);
        if count > MAX_PROOF_LEAVES {
            return Err(MerkleError::TooManyLeaves {
                count: u64::from(self.count),
                max: MAX_PROOF_LEAVES,
            });
        }
        if index >= count {
            return Err(MerkleError::IndexOutOfRange {
                index: index as u64,
                count: count as u64,
            });
        }
        // Walk down the tree's shape to find the chunk's extent and the path's directions.
        let target = (index / IDS_PER_CHUNK) * IDS_PER_CHUNK;
        let mut went_left = Vec::with_capacity(MAX_PROOF_DEPTH);
        let (mut start, mut end) = (0usize, count);
        while (end - start) * 32 > CHUNK_LEN {
            if went_left.len() == MAX_PROOF_DEPTH {
                return Err(MerkleError::BadDepth {
                    expected: MAX_PROOF_DEPTH + 1,
                    found: self.siblings.len(),
                });
            }
            let split = start + left_subtree_len(((end - start) * 32) as u64) as usize / 32;
            if target < split {
                went_left.push(true);
                end = split;
            } else {
                went_left.push(false);
                start = split;
            }
        }
        if self.chunk.len() != end - start {
            return Err(MerkleError::BadChunk {
                expected: end - start,
                found: self.chunk.len(),
            });
        }
        if went_left.len() != self.siblings.len() {
            return Err(MerkleError::BadDepth {
                expected: went_left.len(),
                found: self.siblings.len(),
            });
        }
        if self.chunk[index - start] != *id {
            return Err(MerkleError::WrongLeaf);
        }
        let computed = if went_left.is_empty() {
            merkle_root(&self.chunk)
        } else {
            let mut h = domain::TX_MERKLE.hasher();
            h.set_input_offset(start as u64 * 32);
            update_ids(&mut h, &self.chunk);
            let mut cv = h.finalize_non_root();
            let levels = went_left.len();
            for (level, (left, sib)) in went_left.iter().rev().zip(self.siblings.iter()).enumerate()
            {
                let (l, r) = if *left {
                    (&cv, sib.as_bytes())
                } else {
                    (sib.as_bytes(), &cv)
                };
                cv = if level + 1 == levels {
                    merge_subtrees_root(l, r, mode()).into()
                } else {
                    merge_subtrees_non_root(l, r, mode())
                };
            }
            MerkleRoot::from_bytes(cv)
        };
        if computed == *root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<TxId> {
        (0..n)
            .map(|i| TxId::from_bytes(blake3::hash(&(i as u64).to_le_bytes()).into()))
            .collect()
    }

    fn concat(ids: &[TxId]) -> Vec<u8> {
        ids.iter().flat_map(|i| i.to_bytes()).collect()
    }

    #[test]
    fn root_is_blake3_of_concatenation() {
        for n in [0, 1, 31, 32, 33, 64, 65, 1000, 2048, 2049, 5000, 70_000] {
            let v = ids(n);
            assert_eq!(
                merkle_root(&v).to_bytes(),
                domain::TX_MERKLE.hash(&concat(&v)),
                "n = {n}"
            );
        }
    }

    #[test]
    fn duplicated_last_leaf_changes_root() {
        let mut v = ids(3);
        let r3 = merkle_root(&v);
        v.push(v[2]);
        assert_ne!(r3, merkle_root(&v));
        let mut v = ids(64);
        let r = merkle_root(&v);
        v.extend_from_slice(&v.clone()[32..]);
        assert_ne!(r, merkle_root(&v));
    }

    #[test]
    fn every_proof_verifies_for_many_sizes() {
        for n in [1, 2, 32, 33, 64, 65, 100, 1025, 3000] {
            let v = ids(n);
            let root = merkle_root(&v);
            for i in (0..n).step_by(7).chain([n - 1]) {
                let p = MerkleProof::new(&v, i).unwrap();
                p.verify(&root, n as u32, &v[i]).unwrap();
                let bytes = codec::encode(&p);
                assert_eq!(codec::decode::<MerkleProof>(&bytes).unwrap(), p);
            }
        }
    }

    #[test]
    fn tampered_proofs_fail() {
        let v = ids(300);
        let root = merkle_root(&v);
        let p = MerkleProof::new(&v, 100).unwrap();
        assert_eq!(p.verify(&root, 300, &v[101]), Err(MerkleError::WrongLeaf));
        let mut q = p.clone();
        q.index = 101;
        assert_eq!(q.verify(&root, 300, &v[100]), Err(MerkleError::WrongLeaf));
        let mut q = p.clone();
        q.count = 301;
        assert!(matches!(
            q.verify(&root, 300, &v[100]),
            Err(MerkleError::CountMismatch { .. })
        ));
        assert!(p.verify(&root, 301, &v[100]).is_err());
        let mut q = p.clone();
        let mut s = q.siblings.to_vec();
        s[0] = Digest::from_bytes([0; 32]);
        q.siblings = s.try_into().unwrap();
        assert_eq!(
            q.verify(&root, 300, &v[100]),
            Err(MerkleError::RootMismatch)
        );
        let mut q = p.clone();
        let mut s = q.siblings.to_vec();
        s.pop();
        q.siblings = s.try_into().unwrap();
        assert!(matches!(
            q.verify(&root, 300, &v[100]),
            Err(MerkleError::BadDepth { .. })
        ));
        assert_eq!(
            p.verify(&MerkleRoot::from_bytes([1; 32]), 300, &v[100]),
            Err(MerkleError::RootMismatch)
        );
        assert!(MerkleProof::new(&v, 300).is_err());
    }

    proptest! {
        #[test]
        fn proofs_verify(n in 1usize..2500, pick in any::<prop::sample::Index>()) {
            let v = ids(n);
            let i = pick.index(n);
            let p = MerkleProof::new(&v, i).unwrap();
            prop_assert!(p.verify(&merkle_root(&v), n as u32, &v[i]).is_ok());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = codec::decode::<MerkleProof>(&bytes) {
                let _ = p.verify(&MerkleRoot::default(), p.count, &TxId::default());
                prop_assert_eq!(codec::encode(&p), bytes);
            }
        }
    }
}
