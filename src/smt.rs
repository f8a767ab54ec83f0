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
//! too, in records of four levels each (an interior node at a depth that is a multiple of four,
//! with the nodes of its next four levels; the hashing is unchanged): a subtree may then be
//! held as its hash alone and read from the database when a lookup, a proof or a batch reaches
//! it, so that only the upper levels stay in memory (see `state::disk`). The tree, its root and
//! its proofs are the same either way.
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
        match decode_record(&stub.hash, &bytes) {
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

/// The levels of the tree one stored record covers: a record holds an interior node at a depth
/// that is a multiple of this, with every node below it down to this many levels, and the
/// interior nodes there by their hash (each the top of its own record).
pub(crate) const RECORD_LEVELS: usize = 4;

/// The length of a stored leaf's encoding: a tag byte, its key and its value digest.
pub(crate) const NODE_LEN: usize = 65;

/// The length of the longest record: the tags of the interior nodes of its first
/// [`RECORD_LEVELS`] levels, and a leaf in each of the slots below them.
pub(crate) const MAX_RECORD_LEN: usize = (1 << RECORD_LEVELS) - 1 + (1 << RECORD_LEVELS) * NODE_LEN;

/// The tag of a leaf (followed by its key and value digest).
const NODE_TAG_LEAF: u8 = 0;
/// The tag of an interior node (followed by its left and right subtrees' encodings).
const NODE_TAG_INTERNAL: u8 = 1;
/// The tag of an empty subtree.
const NODE_TAG_EMPTY: u8 = 2;
/// The tag of an interior node at a record's bottom (followed by its hash: the key of its own
/// record).
const NODE_TAG_STORED: u8 = 3;

/// Where a tree whose nodes were persisted reads the records of the subtrees it holds by hash
/// only.
///
/// Reads cannot fail loudly (a lookup answers `Option`): a record that is missing, cannot be
/// read or does not check is reported through [`failed`](Self::failed), and the tree answers
/// as if the subtree were empty. The state refuses a block whose execution saw a failure, and
/// a proof built over one does not verify.
pub(crate) trait NodeSource: Send + Sync {
    /// The record stored under `hash`, if any (a read that fails is recorded by the source and
    /// answers `None`).
    fn load(&self, hash: &[u8; 32]) -> Option<Vec<u8>>;
    /// Records a record that could not be used, and why.
    fn failed(&self, reason: String);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a node at `depth` that is an interior node is the top of a record of its own.
fn record_depth(depth: usize) -> bool {
    depth.is_multiple_of(RECORD_LEVELS)
}

/// Appends the encoding of `node`, `level` levels below the top of the record being encoded:
/// a leaf as its tag, key and value; an interior node above the record's bottom as its tag and
/// its two subtrees; one at the bottom as its tag and hash. A subtree held by hash above the
/// bottom (there is none: the tree holds by hash only the tops of records) is read from
/// `source`; if it cannot be, its hash is written, which the record's reader refuses.
fn encode_record(node: &Subtree, level: usize, source: Option<&dyn NodeSource>, out: &mut Vec<u8>) {
    match node {
        Subtree::Empty => out.push(NODE_TAG_EMPTY),
        Subtree::Leaf(leaf) => {
            out.push(NODE_TAG_LEAF);
            out.extend_from_slice(leaf.key.as_bytes());
            out.extend_from_slice(leaf.value.as_bytes());
        }
        Subtree::Node(inner) if level < RECORD_LEVELS => {
            out.push(NODE_TAG_INTERNAL);
            encode_record(&inner.left, level + 1, source, out);
            encode_record(&inner.right, level + 1, source, out);
        }
        Subtree::Stored(_) if level < RECORD_LEVELS && level > 0 => match node.resolve(source) {
            Some(loaded @ (Subtree::Leaf(_) | Subtree::Node(_))) => {
                encode_record(&loaded, level, source, out)
            }
            _ => {
                out.push(NODE_TAG_STORED);
                out.extend_from_slice(node.hash());
            }
        },
        Subtree::Node(_) | Subtree::Stored(_) => {
            out.push(NODE_TAG_STORED);
            out.extend_from_slice(node.hash());
        }
    }
}

/// The record of the subtree `node`: its encoding from its top down (see [`encode_record`]).
fn record_of(node: &Subtree, source: Option<&dyn NodeSource>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_record(node, 0, source, &mut out);
    out
}

/// Takes `N` bytes off the front of `rest`.
fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], String> {
    let Some((head, tail)) = rest.split_first_chunk::<N>() else {
        return Err(format!("it ends {} bytes early", N - rest.len()));
    };
    *rest = tail;
    Ok(*head)
}

/// Decodes the subtree at the front of `rest`, `level` levels below its record's top, with its
/// hashes computed (nodes marked stored, interior nodes at the record's bottom as stubs).
fn decode_part(rest: &mut &[u8], level: usize) -> Result<Subtree, String> {
    let [tag] = take::<1>(rest)?;
    match tag {
        NODE_TAG_LEAF => {
            let key = StateKey::from_bytes(take(rest)?);
            let value = Digest::from_bytes(take(rest)?);
            Ok(Subtree::Leaf(Arc::new(Leaf {
                key,
                value,
                hash: leaf_hash(&key, &value),
                stored: true,
            })))
        }
        NODE_TAG_INTERNAL if level < RECORD_LEVELS => {
            let left = decode_part(rest, level + 1)?;
            let right = decode_part(rest, level + 1)?;
            if matches!((&left, &right), (Subtree::Empty, Subtree::Empty)) {
                return Err(format!("an interior node over nothing at level {level}"));
            }
            let hash = node_hash(left.hash(), right.hash());
            Ok(Subtree::Node(Arc::new(Internal {
                left,
                right,
                hash,
                stored: true,
            })))
        }
        NODE_TAG_INTERNAL => Err(format!(
            "an interior node at level {level}, below the record's {RECORD_LEVELS}"
        )),
        NODE_TAG_EMPTY if level > 0 => Ok(Subtree::Empty),
        NODE_TAG_STORED if level == RECORD_LEVELS => {
            let hash = take::<32>(rest)?;
            if hash == EMPTY_HASH {
                return Err(format!(
                    "a stored subtree at level {level} with the empty hash"
                ));
            }
            Ok(Subtree::stub(hash))
        }
        NODE_TAG_EMPTY | NODE_TAG_STORED => Err(format!("tag {tag} at level {level}")),
        tag => Err(format!("unknown tag {tag} at level {level}")),
    }
}

/// Decodes the record stored under `hash`, and checks that the subtree it holds hashes to
/// `hash` (which checks every node in it). The interior nodes at its bottom are stubs. The
/// error says what is wrong with it.
fn decode_record(hash: &[u8; 32], bytes: &[u8]) -> Result<Subtree, String> {
    let what = || format!("state tree record {}", hex(hash));
    if bytes.len() > MAX_RECORD_LEN {
        return Err(format!(
            "{}: {} bytes, a record has at most {MAX_RECORD_LEN}",
            what(),
            bytes.len()
        ));
    }
    let mut rest = bytes;
    let node = decode_part(&mut rest, 0).map_err(|why| format!("{}: {why}", what()))?;
    if !rest.is_empty() {
        return Err(format!("{}: {} bytes left over", what(), rest.len()));
    }
    if node.hash() != hash {
        return Err(format!(
            "{}: its content hashes to {}",
            what(),
            hex(node.hash())
        ));
    }
    Ok(node)
}

/// What [`StateTree::persist`] found to write: the new records as `(hash, record)`.
pub(crate) type NewNodes = Vec<([u8; 32], Vec<u8>)>;

/// The subtree `node` at `depth` with its nodes marked stored, and the tops of records at
/// `keep_depth` or below (a multiple of [`RECORD_LEVELS`]) held by hash; appends the records
/// not yet stored to `out`: one for each new interior node at a depth that is a multiple of
/// [`RECORD_LEVELS`], and one for a new root leaf.
fn persist(
    node: &Subtree,
    depth: usize,
    keep_depth: usize,
    source: Option<&dyn NodeSource>,
    out: &mut NewNodes,
) -> Subtree {
    let top = record_depth(depth);
    match node {
        Subtree::Empty | Subtree::Stored(_) => node.clone(),
        Subtree::Leaf(leaf) => {
            // A leaf is written in its parent's record; only a root leaf has its own, written
            // again with every block that persists the tree (it may have been a parent's
            // until now, and a record already stored is not written twice).
            if depth == 0 {
                out.push((leaf.hash, record_of(node, source)));
            }
            if depth == 0 && depth >= keep_depth {
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
            if top && depth >= keep_depth {
                Subtree::stub(inner.hash)
            } else {
                node.clone()
            }
        }
        Subtree::Node(inner) => {
            if top {
                out.push((inner.hash, record_of(node, source)));
            }
            let left = persist(&inner.left, depth + 1, keep_depth, source, out);
            let right = persist(&inner.right, depth + 1, keep_depth, source, out);
            if top && depth >= keep_depth {
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
            // The root is listed by `apply_inner`, whatever it is.
            if cx.track && depth > 0 && record_depth(depth) {
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
    // A leaf has no record of its own below the root (the root is listed by `apply_inner`).
    let keep = || existing.map_or(Subtree::Empty, |leaf| Subtree::Leaf(Arc::clone(leaf)));
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
                Some(value) => (Subtree::Leaf(Leaf::new(*key, *value)), 0, Vec::new()),
                None => (Subtree::Empty, -1, Vec::new()),
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
            decode_record(&hash, &bytes)?
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

    /// Lists the records not yet in the node store (as `(hash, record)`, parents before
    /// children) for the caller to write, and returns the tree as it is once they are written:
    /// every node marked stored, and the records' tops at depth `keep_depth` (rounded down to
    /// a multiple of [`RECORD_LEVELS`]) and below held by their hash only (read again when
    /// reached). The root, entries and proofs are unchanged.
    ///
    /// A record holds an interior node at a depth that is a multiple of [`RECORD_LEVELS`]
    /// with the nodes of its next [`RECORD_LEVELS`] levels: the leaves among them, and the
    /// interior nodes at its bottom by hash (the tops of their own records). A tree of one
    /// entry has its root leaf as a record. So a batch writes one record where it changed
    /// up to fifteen interior nodes and sixteen leaves.
    pub(crate) fn persist(&self, keep_depth: usize) -> (Self, NewNodes) {
        let mut out = Vec::new();
        let keep_depth = keep_depth - keep_depth % RECORD_LEVELS;
        let root = persist(&self.root, 0, keep_depth, self.source(), &mut out);
        let tree = Self {
            root,
            len: self.len,
            source: self.source.clone(),
        };
        (tree, out)
    }

    /// [`apply`](Self::apply), also returning the hashes of the records the batch replaced (the
    /// tops of records of this tree that are not in the new one, see
    /// [`persist`](Self::persist)), for a node store to delete later.
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
        let (root, delta, mut replaced) = update(&self.root, 0, updates, cx);
        // The root has a record whatever it is (an interior node, or the leaf of a tree of
        // one entry).
        if track && root.hash() != self.root.hash() && *self.root.hash() != EMPTY_HASH {
            replaced.push(*self.root.hash());
        }
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
    /// The keys of the tree's records (see [`persist`](Self::persist)): the root, and every
    /// interior node at a depth that is a multiple of [`RECORD_LEVELS`]; stored subtrees read
    /// from the source.
    pub(crate) fn record_hashes(&self) -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        if !self.is_empty() {
            out.push(*self.root.hash());
        }
        let mut stack = vec![(self.root.clone(), 0)];
        while let Some((node, depth)) = stack.pop() {
            match node.resolve(self.source()).expect("every record reads") {
                Subtree::Empty | Subtree::Leaf(_) => {}
                Subtree::Node(inner) => {
                    if depth > 0 && record_depth(depth) {
                        out.push(inner.hash);
                    }
                    stack.push((inner.left.clone(), depth + 1));
                    stack.push((inner.right.clone(), depth + 1));
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

    /// The deepest level holding a decoded interior node (0 for the root alone; `None` if
    /// none is). Leaves have no record of their own, so they stay decoded below their parent.
    pub(crate) fn deepest_in_memory(&self) -> Option<usize> {
        let mut deepest = None;
        let mut stack = vec![(&self.root, 0)];
        while let Some((node, depth)) = stack.pop() {
            match node {
                Subtree::Empty | Subtree::Stored(_) | Subtree::Leaf(_) => {}
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
