//! The authenticated state tree: a binary sparse Merkle tree over the 256 bits of a
//! [`StateKey`], committing the whole ledger state to one [`StateRoot`].
//!
//! # Shape
//!
//! Keys are read most significant bit first; bit `i` of a key picks the left (`0`) or right (`1`)
//! child at depth `i`. Single-leaf subtrees are compressed, so the tree over a set of entries is
//! unique:
//!
//! * a subtree holding no entry is *empty*; its hash is the placeholder [`EMPTY_ROOT`] (32 zero
//!   bytes, which no leaf or node hashes to);
//! * a subtree holding exactly one entry is that entry's *leaf*, whatever its depth; its hash is
//!   BLAKE3 in the [`domain::STATE_LEAF`] domain over `key ‖ value`;
//! * a subtree holding two or more entries is an *interior node*; its hash is BLAKE3 in the
//!   [`domain::STATE_NODE`] domain over `left hash ‖ right hash`.
//!
//! The root therefore depends only on the set of `(key, value)` pairs, never on the order or the
//! batches in which they were written. With uniformly distributed keys (they are hashes), a tree
//! of `n` entries is about `log2 n` levels deep.
//!
//! # Persistence
//!
//! Nodes are immutable and shared through [`Arc`]: [`StateTree::clone`] is O(1), and
//! [`StateTree::apply`] copies only the paths it touches, so a snapshot taken before a batch keeps
//! its root, its entries and its proofs while sharing every untouched subtree with the new tree.
//!
//! # Proofs
//!
//! A [`StateProof`] for a key holds what the key's path ends at (nothing, the key's own leaf, or
//! the one other leaf whose subtree the key would fall into) and the hashes of the siblings
//! along the path. [`StateProof::verify`] recomputes the root from them, so one proof type shows
//! both inclusion and non-inclusion.
//!
//! ```
//! use medledger::hash::{Digest, StateKey};
//! use medledger::smt::{StateTree, EMPTY_ROOT};
//!
//! let mut tree = StateTree::new();
//! assert_eq!(tree.root(), EMPTY_ROOT);
//!
//! let (alice, bob) = (StateKey::from_bytes([0x11; 32]), StateKey::from_bytes([0x22; 32]));
//! let v = Digest::from_bytes([7; 32]);
//! // A batch is sorted strictly ascending by key; `None` deletes.
//! tree.apply(&[(alice, Some(v)), (bob, Some(v))])?;
//! let snapshot = tree.clone(); // O(1)
//! tree.apply(&[(bob, None)])?;
//!
//! assert_eq!(tree.get(&alice), Some(v));
//! assert_eq!(tree.get(&bob), None);
//! // Bob is absent now, and was present in the snapshot.
//! tree.prove(&bob).verify(&tree.root(), &bob, None)?;
//! snapshot.prove(&bob).verify(&snapshot.root(), &bob, Some(&v))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Parallelism
//!
//! With the `parallel` feature (on by default), [`StateTree::apply`] hashes the two halves of a
//! large batch on separate rayon tasks near the top of the tree. The serial build computes the
//! same tree, node for node.

use core::fmt;
use core::iter::FusedIterator;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec::{BoundedVec, Canonical};
use crate::hash::{domain, Digest, StateKey, StateRoot};

/// The root of the empty tree, and the hash of every empty subtree: 32 zero bytes.
///
/// No leaf or interior node hashes to it (that would take a BLAKE3 preimage), so an empty subtree
/// can never be mistaken for a non-empty one.
pub const EMPTY_ROOT: StateRoot = StateRoot::from_bytes([0; 32]);

/// The most siblings a [`StateProof`] can hold: one per key bit.
///
/// Two distinct keys share at most 255 leading bits, so no path is longer than 256.
pub const MAX_PROOF_DEPTH: usize = 256;

/// The number of bits in a key.
const KEY_BITS: usize = 256;

/// Batches (or parts of a batch under one node) at least this large have their two halves
/// hashed on separate rayon tasks.
const PARALLEL_MIN_UPDATES: usize = 128;

/// One entry of a batch for [`StateTree::apply`]: a key and its new value, `None` to delete it.
pub type StateUpdate = (StateKey, Option<Digest>);

/// Why a batch was refused by [`StateTree::apply`]. The tree is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmtError {
    /// The batch is not sorted strictly ascending by key (unsorted, or a key repeats).
    #[error("batch not sorted strictly ascending by key at entry {index}")]
    UnsortedBatch {
        /// The index of the first entry whose key is not greater than its predecessor's.
        index: usize,
    },
}

/// Why a [`StateProof`] does not show what it was checked against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A value was expected, but the proof shows the key absent.
    #[error("proof shows the key absent, but a value was expected")]
    KeyAbsent,
    /// Absence was expected, but the proof shows the key present.
    #[error("proof shows the key present, but absence was expected")]
    KeyPresent,
    /// The proof shows the key with a different value.
    #[error("proof shows the key with a different value")]
    ValueMismatch,
    /// The proof's leaf cannot lie on the key's path: it does not share the path's leading bits.
    #[error("proof leaf does not share the first {depth} bits of the key")]
    LeafOffPath {
        /// The depth of the proof (its number of siblings).
        depth: usize,
    },
    /// The proof, recomputed, leads to a root other than the expected one.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

// ---------------------------------------------------------------------------------------------
// Hashing

/// The hash of an empty subtree.
const EMPTY_HASH: [u8; 32] = EMPTY_ROOT.to_bytes();

fn leaf_hash(key: &StateKey, value: &Digest) -> [u8; 32] {
    domain::STATE_LEAF.hash_parts(&[key.as_bytes(), value.as_bytes()])
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    #[cfg(test)]
    tests::count_node_hash();
    domain::STATE_NODE.hash_parts(&[left, right])
}

/// Bit `i` of `key`, most significant bit of the first byte first. `i < 256`.
pub(crate) fn bit(key: &StateKey, i: usize) -> bool {
    (key.as_bytes()[i / 8] >> (7 - i % 8)) & 1 == 1
}

/// The number of leading bits `a` and `b` share (256 if equal).
fn common_prefix_bits(a: &StateKey, b: &StateKey) -> usize {
    for (i, (x, y)) in a.as_bytes().iter().zip(b.as_bytes()).enumerate() {
        let diff = x ^ y;
        if diff != 0 {
            return i * 8 + diff.leading_zeros() as usize;
        }
    }
    KEY_BITS
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// A leaf: one entry and its cached hash.
struct Leaf {
    key: StateKey,
    value: Digest,
    hash: [u8; 32],
}

impl Leaf {
    fn new(key: StateKey, value: Digest) -> Arc<Self> {
        Arc::new(Self {
            key,
            value,
            hash: leaf_hash(&key, &value),
        })
    }
}

/// An interior node: a subtree of two or more entries, split on the bit at its depth.
struct Internal {
    left: Subtree,
    right: Subtree,
    hash: [u8; 32],
}

/// A subtree in canonical form: empty, a single leaf, or an interior node over two or more
/// entries.
#[derive(Clone)]
enum Subtree {
    Empty,
    Leaf(Arc<Leaf>),
    Node(Arc<Internal>),
}

impl Subtree {
    fn hash(&self) -> &[u8; 32] {
        match self {
            Subtree::Empty => &EMPTY_HASH,
            Subtree::Leaf(leaf) => &leaf.hash,
            Subtree::Node(node) => &node.hash,
        }
    }

    /// Whether `self` and `other` are the very same subtree (not merely equal).
    fn same(&self, other: &Subtree) -> bool {
        match (self, other) {
            (Subtree::Empty, Subtree::Empty) => true,
            (Subtree::Leaf(a), Subtree::Leaf(b)) => Arc::ptr_eq(a, b),
            (Subtree::Node(a), Subtree::Node(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The canonical subtree with children `left` and `right`: hashes a new interior node only if
    /// both sides are non-empty or one side is an interior node; otherwise collapses to the
    /// single leaf or to empty.
    fn join(left: Subtree, right: Subtree) -> Subtree {
        match (left, right) {
            (Subtree::Empty, Subtree::Empty) => Subtree::Empty,
            (Subtree::Empty, Subtree::Leaf(leaf)) | (Subtree::Leaf(leaf), Subtree::Empty) => {
                Subtree::Leaf(leaf)
            }
            (left, right) => {
                let hash = node_hash(left.hash(), right.hash());
                Subtree::Node(Arc::new(Internal { left, right, hash }))
            }
        }
    }
}

/// Runs `a` and `b`, on separate rayon tasks when `parallel` is set and the feature is on.
fn join<A, B, RA, RB>(parallel: bool, a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    #[cfg(feature = "parallel")]
    if parallel {
        return rayon::join(a, b);
    }
    let _ = parallel;
    (a(), b())
}

/// The index of the first update in `updates` whose key has bit `depth` set. The keys are sorted
/// and share their first `depth` bits, so those with the bit clear come first.
fn split_point(updates: &[StateUpdate], depth: usize) -> usize {
    updates.partition_point(|(key, _)| !bit(key, depth))
}

/// Applies `updates` (sorted, distinct, all sharing the first `depth` bits of `node`'s position)
/// to `node`, which sits at `depth`. Returns the new subtree and the change in entry count.
///
/// Untouched subtrees are returned as they are (same `Arc`), so a node is re-hashed only when one
/// of its children really changed, and then exactly once.
fn update(
    node: &Subtree,
    depth: usize,
    updates: &[StateUpdate],
    parallel: bool,
) -> (Subtree, isize) {
    if updates.is_empty() {
        return (node.clone(), 0);
    }
    match node {
        Subtree::Empty => build(None, depth, updates, parallel),
        Subtree::Leaf(leaf) => build(Some(leaf), depth, updates, parallel),
        Subtree::Node(inner) => {
            // An interior node holds two entries that differ below `depth`, so `depth < 256`.
            let mid = split_point(updates, depth);
            let (lo, hi) = updates.split_at(mid);
            let parallel = parallel && updates.len() >= PARALLEL_MIN_UPDATES;
            let ((left, dl), (right, dr)) = join(
                parallel,
                || update(&inner.left, depth + 1, lo, parallel),
                || update(&inner.right, depth + 1, hi, parallel),
            );
            if left.same(&inner.left) && right.same(&inner.right) {
                return (node.clone(), 0);
            }
            (Subtree::join(left, right), dl + dr)
        }
    }
}

/// Applies `updates` to a subtree at `depth` that holds at most one entry, `existing`.
fn build(
    existing: Option<&Arc<Leaf>>,
    depth: usize,
    updates: &[StateUpdate],
    parallel: bool,
) -> (Subtree, isize) {
    let keep = || existing.map_or(Subtree::Empty, |leaf| Subtree::Leaf(Arc::clone(leaf)));
    match (updates, existing) {
        ([], _) => return (keep(), 0),
        ([(key, value)], None) => {
            return match value {
                Some(value) => (Subtree::Leaf(Leaf::new(*key, *value)), 1),
                None => (Subtree::Empty, 0),
            };
        }
        ([(key, value)], Some(leaf)) if *key == leaf.key => {
            return match value {
                Some(value) if *value == leaf.value => (keep(), 0),
                Some(value) => (Subtree::Leaf(Leaf::new(*key, *value)), 0),
                None => (Subtree::Empty, -1),
            };
        }
        ([(_, None)], Some(_)) => return (keep(), 0),
        _ => {}
    }
    // Two or more distinct keys share this subtree's first `depth` bits, so `depth < 256`.
    let mid = split_point(updates, depth);
    let (lo, hi) = updates.split_at(mid);
    let (existing_lo, existing_hi) = match existing {
        Some(leaf) if bit(&leaf.key, depth) => (None, Some(leaf)),
        other => (other, None),
    };
    let parallel = parallel && updates.len() >= PARALLEL_MIN_UPDATES;
    let ((left, dl), (right, dr)) = join(
        parallel,
        || build(existing_lo, depth + 1, lo, parallel),
        || build(existing_hi, depth + 1, hi, parallel),
    );
    (Subtree::join(left, right), dl + dr)
}

// ---------------------------------------------------------------------------------------------
// The tree

/// The authenticated state tree: a persistent sparse Merkle tree from [`StateKey`] to
/// [`Digest`].
///
/// Cloning is O(1); clones share structure and are unaffected by later batches applied to
/// each other. Two trees compare equal when they hold the same entries (compared through their
/// roots). See the [module documentation](self) for the hashing rules.
#[derive(Clone)]
pub struct StateTree {
    root: Subtree,
    len: usize,
}

impl StateTree {
    /// An empty tree, whose root is [`EMPTY_ROOT`].
    pub const fn new() -> Self {
        Self {
            root: Subtree::Empty,
            len: 0,
        }
    }

    /// The root hash, committing to every entry.
    pub fn root(&self) -> StateRoot {
        StateRoot::from_bytes(*self.root.hash())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value stored under `key`, if any. Walks one path: about `log2(len)` nodes.
    pub fn get(&self, key: &StateKey) -> Option<Digest> {
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Subtree::Empty => return None,
                Subtree::Leaf(leaf) => return (leaf.key == *key).then_some(leaf.value),
                Subtree::Node(inner) => {
                    node = if bit(key, depth) {
                        &inner.right
                    } else {
                        &inner.left
                    };
                    depth += 1;
                }
            }
        }
    }

    /// Applies a batch of updates: each key is set to its value, or deleted when the value is
    /// `None`. Deleting an absent key, or setting a key to the value it has, changes nothing.
    ///
    /// The batch must be sorted strictly ascending by key. Every interior node on the union of
    /// the touched paths is re-hashed exactly once, so a batch of `k` updates costs
    /// O(k × log n) hashes. Other clones of the tree are unaffected.
    ///
    /// # Errors
    ///
    /// [`SmtError::UnsortedBatch`] if the keys are not strictly ascending; the tree is then left
    /// unchanged.
    pub fn apply(&mut self, updates: &[StateUpdate]) -> Result<(), SmtError> {
        self.apply_with(updates, cfg!(feature = "parallel"))
    }

    /// [`apply`](Self::apply), with the rayon split enabled or not.
    fn apply_with(&mut self, updates: &[StateUpdate], parallel: bool) -> Result<(), SmtError> {
        if let Some(i) = updates.windows(2).position(|w| w[0].0 >= w[1].0) {
            return Err(SmtError::UnsortedBatch { index: i + 1 });
        }
        let (root, delta) = update(&self.root, 0, updates, parallel);
        self.root = root;
        self.len = self
            .len
            .checked_add_signed(delta)
            .expect("entry count stays within usize");
        Ok(())
    }

    /// A proof of what `key` maps to: inclusion with its value if present, non-inclusion
    /// otherwise. Check it with [`StateProof::verify`] against [`root`](Self::root).
    pub fn prove(&self, key: &StateKey) -> StateProof {
        let mut siblings = Vec::new();
        let mut node = &self.root;
        let leaf = loop {
            match node {
                Subtree::Empty => break None,
                Subtree::Leaf(leaf) => break Some((leaf.key, leaf.value)),
                Subtree::Node(inner) => {
                    let (next, sibling) = if bit(key, siblings.len()) {
                        (&inner.right, &inner.left)
                    } else {
                        (&inner.left, &inner.right)
                    };
                    siblings.push(Digest::from_bytes(*sibling.hash()));
                    node = next;
                }
            }
        };
        StateProof {
            leaf,
            // Interior nodes exist only above depth 256 (see MAX_PROOF_DEPTH).
            siblings: BoundedVec::try_from(siblings).expect("a path has at most 256 siblings"),
        }
    }

    /// The entries in ascending key order.
    pub fn iter(&self) -> Iter<'_> {
        let mut stack = Vec::with_capacity(64);
        stack.push(&self.root);
        Iter {
            stack,
            remaining: self.len,
        }
    }
}

impl Default for StateTree {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for StateTree {
    fn eq(&self, other: &Self) -> bool {
        self.root.hash() == other.root.hash()
    }
}

impl Eq for StateTree {}

impl fmt::Debug for StateTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateTree")
            .field("root", &self.root())
            .field("len", &self.len)
            .finish()
    }
}

impl FromIterator<(StateKey, Digest)> for StateTree {
    /// Builds a tree from entries in any order; of repeated keys, the last value wins.
    fn from_iter<I: IntoIterator<Item = (StateKey, Digest)>>(iter: I) -> Self {
        let mut updates: Vec<StateUpdate> = iter.into_iter().map(|(k, v)| (k, Some(v))).collect();
        // A stable sort keeps repeated keys in input order; keep the last of each run.
        updates.sort_by_key(|(k, _)| *k);
        let mut deduped: Vec<StateUpdate> = Vec::with_capacity(updates.len());
        for u in updates {
            match deduped.last_mut() {
                Some(last) if last.0 == u.0 => *last = u,
                _ => deduped.push(u),
            }
        }
        let mut tree = Self::new();
        tree.apply(&deduped)
            .expect("deduplicated sorted keys are strictly ascending");
        tree
    }
}

impl<'a> IntoIterator for &'a StateTree {
    type Item = (StateKey, Digest);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The entries of a [`StateTree`] in ascending key order, from [`StateTree::iter`].
#[derive(Clone)]
pub struct Iter<'a> {
    /// Subtrees still to visit, the next one on top.
    stack: Vec<&'a Subtree>,
    remaining: usize,
}

impl Iterator for Iter<'_> {
    type Item = (StateKey, Digest);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(node) = self.stack.pop() {
            match node {
                Subtree::Empty => {}
                Subtree::Leaf(leaf) => {
                    self.remaining -= 1;
                    return Some((leaf.key, leaf.value));
                }
                Subtree::Node(inner) => {
                    self.stack.push(&inner.right);
                    self.stack.push(&inner.left);
                }
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl FusedIterator for Iter<'_> {}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("remaining", &self.remaining)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Subtrees, for state snapshots

/// The hash of the canonical subtree at `depth` holding exactly `leaves` (sorted strictly
/// ascending, all sharing the first `depth` bits of their position): what [`StateTree`] holds
/// there when these are its only entries under that position.
pub(crate) fn subtree_hash(depth: usize, leaves: &[StateUpdate]) -> [u8; 32] {
    *build(None, depth, leaves, false).0.hash()
}

/// The root reached from the subtree hash `hash` at depth `siblings.len()` on `key`'s path,
/// folding in the sibling hashes from the deepest up (every node on the path an interior node).
pub(crate) fn fold_path(mut hash: [u8; 32], key: &StateKey, siblings: &[Digest]) -> [u8; 32] {
    for (i, sibling) in siblings.iter().enumerate().rev() {
        hash = if bit(key, i) {
            node_hash(sibling.as_bytes(), &hash)
        } else {
            node_hash(&hash, sibling.as_bytes())
        };
    }
    hash
}

impl StateTree {
    /// The sibling hashes along `key`'s path down to `depth`, from the root down, if every node
    /// above `depth` on the path is an interior node (`None` if the path ends earlier).
    pub(crate) fn path_siblings(&self, key: &StateKey, depth: usize) -> Option<Vec<Digest>> {
        let mut siblings = Vec::with_capacity(depth);
        let mut node = &self.root;
        while siblings.len() < depth {
            let Subtree::Node(inner) = node else {
                return None;
            };
            let (next, sibling) = if bit(key, siblings.len()) {
                (&inner.right, &inner.left)
            } else {
                (&inner.left, &inner.right)
            };
            siblings.push(Digest::from_bytes(*sibling.hash()));
            node = next;
        }
        Some(siblings)
    }
}

// ---------------------------------------------------------------------------------------------
// Proofs

/// A proof of inclusion or non-inclusion of one key under a [`StateRoot`], from
/// [`StateTree::prove`].
///
/// It holds what the key's path ends at (nothing, the key's own leaf, or another key's leaf whose
/// single-entry subtree the key would fall into) and the sibling hashes along the path, from the
/// root down. A decoded proof is unchecked: only [`verify`](Self::verify) says what it shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProof {
    leaf: Option<(StateKey, Digest)>,
    siblings: BoundedVec<Digest, MAX_PROOF_DEPTH>,
}

impl StateProof {
    /// The leaf the key's path ends at, if it ends at one: the key's own entry (inclusion) or
    /// another key's (non-inclusion).
    pub fn leaf(&self) -> Option<(StateKey, Digest)> {
        self.leaf
    }

    /// The sibling hashes along the path, from the root down; their number is the depth at which
    /// the path ends.
    pub fn siblings(&self) -> &[Digest] {
        &self.siblings
    }

    /// Checks that this proof shows `key` mapping to `value` (`Some`) or being absent (`None`)
    /// in the tree whose root is `root`.
    ///
    /// # Errors
    ///
    /// [`ProofError`] saying why not: the proof shows the key absent ([`KeyAbsent`]), present
    /// ([`KeyPresent`]) or with another value ([`ValueMismatch`]); its leaf cannot be on the
    /// key's path ([`LeafOffPath`]); or it leads to another root ([`RootMismatch`]).
    ///
    /// [`KeyAbsent`]: ProofError::KeyAbsent
    /// [`KeyPresent`]: ProofError::KeyPresent
    /// [`ValueMismatch`]: ProofError::ValueMismatch
    /// [`LeafOffPath`]: ProofError::LeafOffPath
    /// [`RootMismatch`]: ProofError::RootMismatch
    pub fn verify(
        &self,
        root: &StateRoot,
        key: &StateKey,
        value: Option<&Digest>,
    ) -> Result<(), ProofError> {
        let depth = self.siblings.len();
        let hash = match (&self.leaf, value) {
            (Some((leaf_key, leaf_value)), Some(value)) if leaf_key == key => {
                if leaf_value != value {
                    return Err(ProofError::ValueMismatch);
                }
                leaf_hash(key, value)
            }
            (Some((leaf_key, _)), None) if leaf_key == key => return Err(ProofError::KeyPresent),
            (_, Some(_)) => return Err(ProofError::KeyAbsent),
            (Some((leaf_key, leaf_value)), None) => {
                // The other leaf is the only entry of the subtree at `depth` on `key`'s path.
                if common_prefix_bits(leaf_key, key) < depth {
                    return Err(ProofError::LeafOffPath { depth });
                }
                leaf_hash(leaf_key, leaf_value)
            }
            (None, None) => EMPTY_HASH,
        };
        let hash = fold_path(hash, key, &self.siblings);
        if hash != *root.as_bytes() {
            return Err(ProofError::RootMismatch);
        }
        Ok(())
    }
}

impl Canonical for StateProof {
    const NAME: &'static str = "state proof";
    /// Version byte, option tag, leaf key and value, a two-byte sibling count and the siblings.
    const MAX_ENCODED_LEN: usize = 1 + 1 + 32 + 32 + 2 + MAX_PROOF_DEPTH * 32;
}

#[cfg(test)]
mod tests;
