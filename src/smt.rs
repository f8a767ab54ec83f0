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
//! With the state on disk (feature `redb`), the tree's nodes are kept in the state database
//! too: a subtree may then be held as its hash alone and read from the database when a lookup,
//! a proof or a batch reaches it, so that only the upper levels stay in memory (see
//! `state::disk`). The tree, its root and its proofs are the same either way.
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

// Persisting nodes (`StateTree::persist`, the node encoding) serves the state on disk only.
#![cfg_attr(not(feature = "redb"), allow(dead_code))]

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
    /// Whether the leaf is in a node store already (see [`StateTree::persist`]).
    stored: bool,
}

impl Leaf {
    fn new(key: StateKey, value: Digest) -> Arc<Self> {
        Arc::new(Self {
            key,
            value,
            hash: leaf_hash(&key, &value),
            stored: false,
        })
    }
}

/// An interior node: a subtree of two or more entries, split on the bit at its depth.
struct Internal {
    left: Subtree,
    right: Subtree,
    hash: [u8; 32],
    /// Whether the node is in a node store already, with every node below it.
    stored: bool,
}

/// A subtree held by its hash alone: its nodes are in the tree's node store.
struct Stub {
    hash: [u8; 32],
}

/// A subtree in canonical form: empty, a single leaf, or an interior node over two or more
/// entries; or, in a tree with a node store, a leaf or interior node kept there and known here
/// by its hash.
#[derive(Clone)]
enum Subtree {
    Empty,
    Leaf(Arc<Leaf>),
    Node(Arc<Internal>),
    Stored(Arc<Stub>),
}

impl Subtree {
    fn hash(&self) -> &[u8; 32] {
        match self {
            Subtree::Empty => &EMPTY_HASH,
            Subtree::Leaf(leaf) => &leaf.hash,
            Subtree::Node(node) => &node.hash,
            Subtree::Stored(stub) => &stub.hash,
        }
    }

    /// Whether `self` and `other` are the very same subtree (not merely equal).
    fn same(&self, other: &Subtree) -> bool {
        match (self, other) {
            (Subtree::Empty, Subtree::Empty) => true,
            (Subtree::Leaf(a), Subtree::Leaf(b)) => Arc::ptr_eq(a, b),
            (Subtree::Node(a), Subtree::Node(b)) => Arc::ptr_eq(a, b),
            (Subtree::Stored(a), Subtree::Stored(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    fn stub(hash: [u8; 32]) -> Subtree {
        Subtree::Stored(Arc::new(Stub { hash }))
    }

    /// The subtree itself, or for a stored one its top node read from `source` (`None`, with
    /// the failure recorded in the source, if it cannot be read or does not check).
    fn resolve(&self, source: Option<&dyn NodeSource>) -> Option<Subtree> {
        let Subtree::Stored(stub) = self else {
            return Some(self.clone());
        };
        let source = source?;
        let Some(bytes) = source.load(&stub.hash) else {
            source.failed(format!("state tree node {} is missing", hex(&stub.hash)));
            return None;
        };
        match decode_node(&stub.hash, &bytes) {
            Ok(node) => Some(node),
            Err(why) => {
                source.failed(why);
                None
            }
        }
    }

    /// The canonical subtree with children `left` and `right`: hashes a new interior node only if
    /// both sides are non-empty or one side is an interior node; otherwise collapses to the
    /// single leaf or to empty. A stored side beside an empty one is read from `source` to
    /// tell which it is (if it cannot be, the failure is recorded and it counts as a node).
    fn join(left: Subtree, right: Subtree, source: Option<&dyn NodeSource>) -> Subtree {
        match (left, right) {
            (Subtree::Empty, Subtree::Empty) => Subtree::Empty,
            (Subtree::Empty, Subtree::Leaf(leaf)) | (Subtree::Leaf(leaf), Subtree::Empty) => {
                Subtree::Leaf(leaf)
            }
            (Subtree::Empty, stored @ Subtree::Stored(_))
            | (stored @ Subtree::Stored(_), Subtree::Empty)
                if matches!(stored.resolve(source), Some(Subtree::Leaf(_))) =>
            {
                stored
            }
            (left, right) => {
                let hash = node_hash(left.hash(), right.hash());
                Subtree::Node(Arc::new(Internal {
                    left,
                    right,
                    hash,
                    stored: false,
                }))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes in a store

/// The length of a stored node's encoding: a tag byte and two 32-byte fields.
pub(crate) const NODE_LEN: usize = 65;

/// The tag of a stored leaf (followed by its key and value digest).
const NODE_TAG_LEAF: u8 = 0;
/// The tag of a stored interior node (followed by its left and right child hashes).
const NODE_TAG_INTERNAL: u8 = 1;

/// Where a tree whose nodes were persisted reads the nodes it holds by hash only.
///
/// Reads cannot fail loudly (a lookup answers `Option`): a node that is missing, cannot be read
/// or does not check is reported through [`failed`](Self::failed), and the tree answers as if
/// the subtree were empty. The state refuses a block whose execution saw a failure, and a proof
/// built over one does not verify.
pub(crate) trait NodeSource: Send + Sync {
    /// The encoding stored under `hash`, if any (a read that fails is recorded by the source
    /// and answers `None`).
    fn load(&self, hash: &[u8; 32]) -> Option<Vec<u8>>;
    /// Records a node that could not be used, and why.
    fn failed(&self, reason: String);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical encoding of a leaf: tag, key, value.
fn encode_leaf(key: &StateKey, value: &Digest) -> [u8; NODE_LEN] {
    let mut out = [0; NODE_LEN];
    out[0] = NODE_TAG_LEAF;
    out[1..33].copy_from_slice(key.as_bytes());
    out[33..].copy_from_slice(value.as_bytes());
    out
}

/// The canonical encoding of an interior node: tag, left child hash, right child hash.
fn encode_internal(left: &[u8; 32], right: &[u8; 32]) -> [u8; NODE_LEN] {
    let mut out = [0; NODE_LEN];
    out[0] = NODE_TAG_INTERNAL;
    out[1..33].copy_from_slice(left);
    out[33..].copy_from_slice(right);
    out
}

/// Decodes the node stored under `hash`, and checks that it hashes to `hash`. Its children
/// (for an interior node) are stubs, or empty. The error says what is wrong with it.
fn decode_node(hash: &[u8; 32], bytes: &[u8]) -> Result<Subtree, String> {
    let what = || format!("state tree node {}", hex(hash));
    if bytes.len() != NODE_LEN {
        return Err(format!(
            "{}: {} bytes, a node has {NODE_LEN}",
            what(),
            bytes.len()
        ));
    }
    let a: [u8; 32] = bytes[1..33].try_into().expect("32 bytes");
    let b: [u8; 32] = bytes[33..].try_into().expect("32 bytes");
    let (node, computed) = match bytes[0] {
        NODE_TAG_LEAF => {
            let (key, value) = (StateKey::from_bytes(a), Digest::from_bytes(b));
            let computed = leaf_hash(&key, &value);
            let leaf = Leaf {
                key,
                value,
                hash: computed,
                stored: true,
            };
            (Subtree::Leaf(Arc::new(leaf)), computed)
        }
        NODE_TAG_INTERNAL => {
            if a == EMPTY_HASH && b == EMPTY_HASH {
                return Err(format!("{}: an interior node over nothing", what()));
            }
            let child = |h: [u8; 32]| {
                if h == EMPTY_HASH {
                    Subtree::Empty
                } else {
                    Subtree::stub(h)
                }
            };
            let computed = node_hash(&a, &b);
            let inner = Internal {
                left: child(a),
                right: child(b),
                hash: computed,
                stored: true,
            };
            (Subtree::Node(Arc::new(inner)), computed)
        }
        tag => return Err(format!("{}: unknown tag {tag}", what())),
    };
    if computed != *hash {
        return Err(format!(
            "{}: its content hashes to {}",
            what(),
            hex(&computed)
        ));
    }
    Ok(node)
}

/// What [`StateTree::persist`] found to write: the new nodes as `(hash, encoding)`.
pub(crate) type NewNodes = Vec<([u8; 32], [u8; NODE_LEN])>;

/// The subtree `node` at `depth` with its nodes marked stored and those at `keep_depth` or
/// below held by hash; appends the nodes not yet stored to `out`.
fn persist(node: &Subtree, depth: usize, keep_depth: usize, out: &mut NewNodes) -> Subtree {
    match node {
        Subtree::Empty | Subtree::Stored(_) => node.clone(),
        Subtree::Leaf(leaf) => {
            if !leaf.stored {
                out.push((leaf.hash, encode_leaf(&leaf.key, &leaf.value)));
            }
            if depth >= keep_depth {
                Subtree::stub(leaf.hash)
            } else if leaf.stored {
                node.clone()
            } else {
                Subtree::Leaf(Arc::new(Leaf {
                    key: leaf.key,
                    value: leaf.value,
                    hash: leaf.hash,
                    stored: true,
                }))
            }
        }
        Subtree::Node(inner) if inner.stored => {
            if depth >= keep_depth {
                Subtree::stub(inner.hash)
            } else {
                node.clone()
            }
        }
        Subtree::Node(inner) => {
            out.push((
                inner.hash,
                encode_internal(inner.left.hash(), inner.right.hash()),
            ));
            let left = persist(&inner.left, depth + 1, keep_depth, out);
            let right = persist(&inner.right, depth + 1, keep_depth, out);
            if depth >= keep_depth {
                return Subtree::stub(inner.hash);
            }
            Subtree::Node(Arc::new(Internal {
                left,
                right,
                hash: inner.hash,
                stored: true,
            }))
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

/// How a batch is applied: where stored subtrees are read from, whether the rayon split is on,
/// and whether the nodes the batch replaces are listed.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    source: Option<&'a dyn NodeSource>,
    parallel: bool,
    track: bool,
}

/// What applying part of a batch produced: the new subtree, the change in entry count, and
/// (when tracking) the hashes of the nodes it replaced.
type Updated = (Subtree, isize, Vec<[u8; 32]>);

fn merge(mut a: Vec<[u8; 32]>, mut b: Vec<[u8; 32]>) -> Vec<[u8; 32]> {
    if a.is_empty() {
        return b;
    }
    a.append(&mut b);
    a
}

/// Applies `updates` (sorted, distinct, all sharing the first `depth` bits of `node`'s position)
/// to `node`, which sits at `depth`. Returns the new subtree and the change in entry count.
///
/// Untouched subtrees are returned as they are (same `Arc`), so a node is re-hashed only when one
/// of its children really changed, and then exactly once. A stored subtree the batch reaches
/// is read; one that cannot be read is left as it is (the source recorded why).
fn update(node: &Subtree, depth: usize, updates: &[StateUpdate], cx: Ctx<'_>) -> Updated {
    if updates.is_empty() {
        return (node.clone(), 0, Vec::new());
    }
    match node {
        Subtree::Empty => build(None, depth, updates, cx),
        Subtree::Leaf(leaf) => build(Some(leaf), depth, updates, cx),
        Subtree::Stored(_) => {
            let Some(loaded) = node.resolve(cx.source) else {
                return (node.clone(), 0, Vec::new());
            };
            let (new, delta, replaced) = update(&loaded, depth, updates, cx);
            if new.same(&loaded) {
                return (node.clone(), 0, Vec::new());
            }
            (new, delta, replaced)
        }
        Subtree::Node(inner) => {
            // An interior node holds two entries that differ below `depth`, so `depth < 256`.
            let mid = split_point(updates, depth);
            let (lo, hi) = updates.split_at(mid);
            let cx = Ctx {
                parallel: cx.parallel && updates.len() >= PARALLEL_MIN_UPDATES,
                ..cx
            };
            let ((left, dl, sl), (right, dr, sr)) = join(
                cx.parallel,
                || update(&inner.left, depth + 1, lo, cx),
                || update(&inner.right, depth + 1, hi, cx),
            );
            if left.same(&inner.left) && right.same(&inner.right) {
                return (node.clone(), 0, Vec::new());
            }
            let mut replaced = merge(sl, sr);
            if cx.track {
                replaced.push(inner.hash);
            }
            (Subtree::join(left, right, cx.source), dl + dr, replaced)
        }
    }
}

/// Applies `updates` to a subtree at `depth` that holds at most one entry, `existing`.
fn build(
    existing: Option<&Arc<Leaf>>,
    depth: usize,
    updates: &[StateUpdate],
    cx: Ctx<'_>,
) -> Updated {
    let keep = || existing.map_or(Subtree::Empty, |leaf| Subtree::Leaf(Arc::clone(leaf)));
    let replaced = |leaf: &Leaf| {
        if cx.track {
            vec![leaf.hash]
        } else {
            Vec::new()
        }
    };
    match (updates, existing) {
        ([], _) => return (keep(), 0, Vec::new()),
        ([(key, value)], None) => {
            return match value {
                Some(value) => (Subtree::Leaf(Leaf::new(*key, *value)), 1, Vec::new()),
                None => (Subtree::Empty, 0, Vec::new()),
            };
        }
        ([(key, value)], Some(leaf)) if *key == leaf.key => {
            return match value {
                Some(value) if *value == leaf.value => (keep(), 0, Vec::new()),
                Some(value) => (Subtree::Leaf(Leaf::new(*key, *value)), 0, replaced(leaf)),
                None => (Subtree::Empty, -1, replaced(leaf)),
            };
        }
        ([(_, None)], Some(_)) => return (keep(), 0, Vec::new()),
        _ => {}
    }
    // Two or more distinct keys share this subtree's first `depth` bits, so `depth < 256`.
    let mid = split_point(updates, depth);
    let (lo, hi) = updates.split_at(mid);
    let (existing_lo, existing_hi) = match existing {
        Some(leaf) if bit(&leaf.key, depth) => (None, Some(leaf)),
        other => (other, None),
    };
    let cx = Ctx {
        parallel: cx.parallel && updates.len() >= PARALLEL_MIN_UPDATES,
        ..cx
    };
    let ((left, dl, sl), (right, dr, sr)) = join(
        cx.parallel,
        || build(existing_lo, depth + 1, lo, cx),
        || build(existing_hi, depth + 1, hi, cx),
    );
    (
        Subtree::join(left, right, cx.source),
        dl + dr,
        merge(sl, sr),
    )
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
    /// Where stored subtrees are read from (`None`: every node is in memory).
    source: Option<Arc<dyn NodeSource>>,
}

impl StateTree {
    /// An empty tree, whose root is [`EMPTY_ROOT`].
    pub const fn new() -> Self {
        Self {
            root: Subtree::Empty,
            len: 0,
            source: None,
        }
    }

    /// The tree of `len` entries whose root node is stored in `source` under `root` (the empty
    /// tree if `root` is [`EMPTY_ROOT`]); its nodes are read when reached.
    ///
    /// # Errors
    ///
    /// Why the root node cannot be used: missing, not a node, or not hashing to `root`.
    pub(crate) fn stored(
        root: StateRoot,
        len: usize,
        source: Arc<dyn NodeSource>,
    ) -> Result<Self, String> {
        let hash = root.to_bytes();
        let node = if hash == EMPTY_HASH {
            Subtree::Empty
        } else {
            let bytes = source
                .load(&hash)
                .ok_or_else(|| format!("the root node {} is missing", hex(&hash)))?;
            decode_node(&hash, &bytes)?
        };
        if matches!(node, Subtree::Empty) != (len == 0) {
            return Err(format!("a root {} over {len} entries", hex(&hash)));
        }
        Ok(Self {
            root: node,
            len,
            source: Some(source),
        })
    }

    /// The tree with its nodes kept in `source` from now on: [`persist`](Self::persist) lists
    /// the nodes to write there, and stored subtrees are read from it.
    pub(crate) fn attach(&mut self, source: Arc<dyn NodeSource>) {
        self.source = Some(source);
    }

    fn source(&self) -> Option<&dyn NodeSource> {
        self.source.as_deref()
    }

    /// Lists the nodes not yet in the node store (as `(hash, encoding)`, parents before
    /// children) for the caller to write, and returns the tree as it is once they are written:
    /// every node marked stored, and the subtrees at depth `keep_depth` and below held by their
    /// hash only (read again when reached). The root, entries and proofs are unchanged.
    pub(crate) fn persist(&self, keep_depth: usize) -> (Self, NewNodes) {
        let mut out = Vec::new();
        let root = persist(&self.root, 0, keep_depth, &mut out);
        let tree = Self {
            root,
            len: self.len,
            source: self.source.clone(),
        };
        (tree, out)
    }

    /// [`apply`](Self::apply), also returning the hashes of the nodes the batch replaced (nodes
    /// of this tree that are not in the new one), for a node store to delete later.
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply).
    pub(crate) fn apply_tracked(
        &mut self,
        updates: &[StateUpdate],
    ) -> Result<Vec<[u8; 32]>, SmtError> {
        self.apply_inner(updates, cfg!(feature = "parallel"), true)
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
        let mut node = self.root.clone();
        let mut depth = 0;
        loop {
            match node {
                Subtree::Empty => return None,
                Subtree::Leaf(leaf) => return (leaf.key == *key).then_some(leaf.value),
                Subtree::Node(inner) => {
                    node = if bit(key, depth) {
                        inner.right.clone()
                    } else {
                        inner.left.clone()
                    };
                    depth += 1;
                }
                Subtree::Stored(_) => node = node.resolve(self.source())?,
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
        self.apply_inner(updates, parallel, false).map(drop)
    }

    fn apply_inner(
        &mut self,
        updates: &[StateUpdate],
        parallel: bool,
        track: bool,
    ) -> Result<Vec<[u8; 32]>, SmtError> {
        if let Some(i) = updates.windows(2).position(|w| w[0].0 >= w[1].0) {
            return Err(SmtError::UnsortedBatch { index: i + 1 });
        }
        let cx = Ctx {
            source: self.source(),
            parallel,
            track,
        };
        let (root, delta, replaced) = update(&self.root, 0, updates, cx);
        self.root = root;
        // A count that cannot be (a stored subtree that did not read, with the failure
        // recorded) saturates instead of wrapping.
        self.len = self.len.saturating_add_signed(delta);
        Ok(replaced)
    }

    /// A proof of what `key` maps to: inclusion with its value if present, non-inclusion
    /// otherwise. Check it with [`StateProof::verify`] against [`root`](Self::root).
    pub fn prove(&self, key: &StateKey) -> StateProof {
        let mut siblings = Vec::new();
        let mut node = self.root.clone();
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
                    node = next.clone();
                }
                // A stored node that does not read ends the path: the proof then does not
                // verify (the failure is recorded).
                Subtree::Stored(_) => match node.resolve(self.source()) {
                    Some(loaded) => node = loaded,
                    None => break None,
                },
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
        stack.push(self.root.clone());
        Iter {
            stack,
            remaining: self.len,
            source: self.source(),
        }
    }
}

#[cfg(test)]
impl StateTree {
    /// The hashes of every node (leaves and interior nodes), stored ones read from the source.
    pub(crate) fn node_hashes(&self) -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(node) = stack.pop() {
            match node.resolve(self.source()).expect("every node reads") {
                Subtree::Empty => {}
                Subtree::Leaf(leaf) => out.push(leaf.hash),
                Subtree::Node(inner) => {
                    out.push(inner.hash);
                    stack.push(inner.left.clone());
                    stack.push(inner.right.clone());
                }
                Subtree::Stored(_) => unreachable!("resolved"),
            }
        }
        out
    }

    /// How many nodes are decoded in memory (stored subtrees not counted).
    #[allow(dead_code)]
    pub(crate) fn nodes_in_memory(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            match node {
                Subtree::Empty | Subtree::Stored(_) => {}
                Subtree::Leaf(_) => count += 1,
                Subtree::Node(inner) => {
                    count += 1;
                    stack.push(&inner.left);
                    stack.push(&inner.right);
                }
            }
        }
        count
    }

    /// The deepest level holding a decoded node (0 for the root alone; `None` if none is).
    pub(crate) fn deepest_in_memory(&self) -> Option<usize> {
        let mut deepest = None;
        let mut stack = vec![(&self.root, 0)];
        while let Some((node, depth)) = stack.pop() {
            match node {
                Subtree::Empty | Subtree::Stored(_) => {}
                Subtree::Leaf(_) => deepest = deepest.max(Some(depth)),
                Subtree::Node(inner) => {
                    deepest = deepest.max(Some(depth));
                    stack.push((&inner.left, depth + 1));
                    stack.push((&inner.right, depth + 1));
                }
            }
        }
        deepest
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
///
/// Over a tree whose nodes are on disk, a stored subtree that cannot be read is skipped (the
/// failure is recorded by the node store).
#[derive(Clone)]
pub struct Iter<'a> {
    /// Subtrees still to visit, the next one on top.
    stack: Vec<Subtree>,
    remaining: usize,
    source: Option<&'a dyn NodeSource>,
}

impl Iterator for Iter<'_> {
    type Item = (StateKey, Digest);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(node) = self.stack.pop() {
            match node {
                Subtree::Empty => {}
                Subtree::Leaf(leaf) => {
                    self.remaining = self.remaining.saturating_sub(1);
                    return Some((leaf.key, leaf.value));
                }
                Subtree::Node(inner) => {
                    self.stack.push(inner.right.clone());
                    self.stack.push(inner.left.clone());
                }
                Subtree::Stored(_) => {
                    if let Some(loaded) = node.resolve(self.source) {
                        self.stack.push(loaded);
                    }
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
    let cx = Ctx {
        source: None,
        parallel: false,
        track: false,
    };
    *build(None, depth, leaves, cx).0.hash()
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
        let mut node = self.root.clone();
        while siblings.len() < depth {
            let Subtree::Node(inner) = node.resolve(self.source())? else {
                return None;
            };
            let (next, sibling) = if bit(key, siblings.len()) {
                (&inner.right, &inner.left)
            } else {
                (&inner.left, &inner.right)
            };
            siblings.push(Digest::from_bytes(*sibling.hash()));
            node = next.clone();
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
