//! Patient secrets, the puncturable epoch-key tree, and epoch keys.

use core::fmt;
use core::ops::RangeInclusive;
use std::collections::BTreeMap;

use rand_core::{CryptoRngCore, OsRng};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{Context, ContextSigningKey, Epoch, Pseudonym, PseudonymError};
use crate::hash::domain;

/// 32 bytes of key material, erased on drop. Kept boxed inside collections so that a map
/// rebalancing moves the pointer, not the key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Key32([u8; 32]);

impl Key32 {
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Tags of the epoch-key tree's derivations (fixed-length key material: key ‖ tag ‖ depth).
const TAG_ROOT: u8 = 0;
const TAG_LEFT: u8 = 1;
const TAG_RIGHT: u8 = 2;

fn derive_root(secret: &[u8; 32]) -> Key32 {
    Key32(domain::PSEUDONYM_EPOCH_KEY.hash_parts(&[secret, &[TAG_ROOT, 0]]))
}

/// The child of a node: `depth` is the child's depth (1..=64), `bit` the branch taken.
fn derive_child(parent: &Key32, depth: u8, bit: bool) -> Key32 {
    let tag = if bit { TAG_RIGHT } else { TAG_LEFT };
    Key32(domain::PSEUDONYM_EPOCH_KEY.hash_parts(&[&parent.0, &[tag, depth]]))
}

/// A patient's root secret: 32 bytes from a cryptographically secure random generator.
///
/// HIPAA 45 CFR 164.514(c) requires that a re-identification code not be derived from
/// information about the individual, so the secret is never computed from a name, record number
/// or anything else about the patient: make it with [`generate`](Self::generate).
///
/// The secret is erased from memory on drop, compares in constant time and never prints:
///
/// ```
/// let s = medledger::pseudonym::PatientSecret::generate()?;
/// assert_eq!(format!("{s:?}"), "PatientSecret(<redacted>)");
/// # Ok::<(), medledger::pseudonym::PseudonymError>(())
/// ```
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PatientSecret([u8; 32]);

impl PatientSecret {
    /// A new secret from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::Randomness`] if the operating system's generator fails.
    pub fn generate() -> Result<Self, PseudonymError> {
        Self::generate_with(&mut OsRng)
    }

    /// A new secret from `rng`, which must be a cryptographically secure generator.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::Randomness`] if the generator fails.
    pub fn generate_with<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Result<Self, PseudonymError> {
        let mut s = Self([0; 32]);
        rng.try_fill_bytes(&mut s.0)
            .map_err(|_| PseudonymError::Randomness)?;
        Ok(s)
    }

    /// Restores a secret from its bytes (a backup made with
    /// [`expose_bytes`](Self::expose_bytes)). The bytes must have come from
    /// [`generate`](Self::generate): never pass bytes derived from the patient's identity.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret's bytes, for backing it up under the key holder's safeguards.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The patient's full epoch-key tree (every epoch derivable).
    pub fn key_tree(&self) -> EpochKeyTree {
        EpochKeyTree::from_secret(self)
    }
}

impl ConstantTimeEq for PatientSecret {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for PatientSecret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for PatientSecret {}

impl fmt::Debug for PatientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PatientSecret(<redacted>)")
    }
}

/// One patient's key for one epoch: the leaf of their [`EpochKeyTree`].
///
/// Pseudonyms and signing keys for every context in the epoch derive from it. Erased on drop,
/// compared in constant time, never printed.
pub struct EpochKey {
    epoch: Epoch,
    key: Box<Key32>,
}

impl EpochKey {
    /// The epoch this key is for.
    pub const fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn check(&self, context: &Context) -> Result<Vec<u8>, PseudonymError> {
        if context.epoch != self.epoch {
            return Err(PseudonymError::EpochMismatch {
                key: self.epoch,
                context: context.epoch,
            });
        }
        Ok(context.encode())
    }

    /// The keyed-hash pseudonym ([`Scheme::KeyedHash`](super::Scheme::KeyedHash)) for
    /// `context`: BLAKE3 in the [`PSEUDONYM`](domain::PSEUDONYM) domain over this key followed
    /// by the context's canonical encoding.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::EpochMismatch`] if `context` is in another epoch.
    pub fn pseudonym(&self, context: &Context) -> Result<Pseudonym, PseudonymError> {
        let ctx = self.check(context)?;
        Ok(Pseudonym::from_bytes(
            domain::PSEUDONYM.hash_parts(&[self.key.bytes(), &ctx]),
        ))
    }

    /// The per-context Ed25519 signing key
    /// ([`Scheme::Ed25519`](super::Scheme::Ed25519)): its seed is BLAKE3 in the
    /// [`PSEUDONYM_SIGNING_KEY`](domain::PSEUDONYM_SIGNING_KEY) domain over this key followed by
    /// the context's canonical encoding.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::EpochMismatch`] if `context` is in another epoch.
    pub fn signing_key(&self, context: &Context) -> Result<ContextSigningKey, PseudonymError> {
        let ctx = self.check(context)?;
        let seed = Key32(domain::PSEUDONYM_SIGNING_KEY.hash_parts(&[self.key.bytes(), &ctx]));
        Ok(ContextSigningKey::from_seed(seed.bytes(), *context))
    }

    #[cfg(test)]
    pub(crate) fn raw(&self) -> [u8; 32] {
        *self.key.bytes()
    }
}

impl ConstantTimeEq for EpochKey {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.epoch.0.ct_eq(&other.epoch.0) & self.key.0.ct_eq(&other.key.0)
    }
}

impl PartialEq for EpochKey {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for EpochKey {}

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochKey")
            .field("epoch", &self.epoch.0)
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

/// A node of the tree: the subtree of epochs whose top `depth` bits are those of `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    depth: u8,
    start: u64,
}

impl Node {
    const ROOT: Node = Node { depth: 0, start: 0 };

    /// The last epoch under this node.
    fn end(self) -> u64 {
        let span = if self.depth == 0 {
            u64::MAX
        } else {
            (1u64 << (64 - u32::from(self.depth))) - 1
        };
        self.start | span
    }

    fn children(self) -> [Node; 2] {
        let depth = self.depth + 1;
        let right = self.start | (1u64 << (64 - u32::from(depth)));
        [
            Node {
                depth,
                start: self.start,
            },
            Node {
                depth,
                start: right,
            },
        ]
    }
}

/// A patient's epoch keys as a puncturable pseudorandom function: a binary tree of depth 64
/// whose leaves are the [`EpochKey`]s of epochs `0..=u64::MAX`.
///
/// Each node's key derives its two children's (BLAKE3, [`PSEUDONYM_EPOCH_KEY`] domain), so
/// holding a node means holding every epoch key below it, and holding none of a leaf's
/// ancestors means that leaf can never be computed again. The tree stores a set of disjoint
/// subtrees (initially just the root); [`shred`](Self::shred) replaces the subtrees that
/// overlap the shredded epochs by their children outside them, at most about 128 new nodes per
/// shredded range.
///
/// ```
/// use medledger::pseudonym::{Epoch, PatientSecret};
///
/// let secret = PatientSecret::generate()?;
/// let mut tree = secret.key_tree();
/// let key_7 = tree.epoch_key(Epoch::new(7))?;
/// tree.shred(Epoch::new(5)..=Epoch::new(6));
/// assert!(tree.epoch_key(Epoch::new(5)).is_err());
/// assert_eq!(tree.epoch_key(Epoch::new(7))?, key_7);
/// assert_eq!(secret.key_tree().epoch_key(Epoch::new(5))?.epoch(), Epoch::new(5)); // the secret still can
/// # Ok::<(), medledger::pseudonym::PseudonymError>(())
/// ```
///
/// [`PSEUDONYM_EPOCH_KEY`]: domain::PSEUDONYM_EPOCH_KEY
pub struct EpochKeyTree {
    /// Disjoint subtrees, by first epoch: start → (depth, key).
    nodes: BTreeMap<u64, (u8, Box<Key32>)>,
}

impl EpochKeyTree {
    /// The whole tree of a patient secret.
    pub fn from_secret(secret: &PatientSecret) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            Node::ROOT.start,
            (Node::ROOT.depth, Box::new(derive_root(&secret.0))),
        );
        Self { nodes }
    }

    /// The stored subtree holding `epoch`, if any.
    fn holder(&self, epoch: u64) -> Option<(Node, &Key32)> {
        let (&start, (depth, key)) = self.nodes.range(..=epoch).next_back()?;
        let node = Node {
            depth: *depth,
            start,
        };
        (node.end() >= epoch).then_some((node, key))
    }

    /// Whether `epoch`'s key can still be derived.
    pub fn covers(&self, epoch: Epoch) -> bool {
        self.holder(epoch.0).is_some()
    }

    /// The key of `epoch` (at most 64 hashes).
    ///
    /// # Errors
    ///
    /// [`PseudonymError::EpochShredded`] if the epoch was shredded from this tree.
    pub fn epoch_key(&self, epoch: Epoch) -> Result<EpochKey, PseudonymError> {
        let (node, key) = self
            .holder(epoch.0)
            .ok_or(PseudonymError::EpochShredded { epoch })?;
        // Walk down on the stack (each intermediate key is erased when replaced), box the leaf.
        let mut current = Key32(key.0);
        for depth in node.depth..64 {
            let bit = (epoch.0 >> (63 - u32::from(depth))) & 1 == 1;
            current = derive_child(&current, depth + 1, bit);
        }
        let key = Box::new(current);
        Ok(EpochKey { epoch, key })
    }

    /// Erases every epoch in `epochs` for good: afterwards no key they derive from is left in
    /// this tree. Other epochs are unaffected. An empty range does nothing.
    pub fn shred(&mut self, epochs: RangeInclusive<Epoch>) {
        let (lo, hi) = (epochs.start().0, epochs.end().0);
        if lo > hi {
            return;
        }
        // The subtrees overlapping [lo, hi]: the one holding `lo` (if any) and those starting
        // inside the range.
        let mut overlapping: Vec<u64> = self.nodes.range(lo..=hi).map(|(&s, _)| s).collect();
        if let Some((node, _)) = self.holder(lo) {
            if node.start < lo {
                overlapping.push(node.start);
            }
        }
        for start in overlapping {
            if let Some((depth, key)) = self.nodes.remove(&start) {
                self.split_out(Node { depth, start }, key, lo, hi);
            }
        }
    }

    /// Re-inserts the parts of `node` outside `[lo, hi]`; `key` is dropped (and erased) here.
    fn split_out(&mut self, node: Node, key: Box<Key32>, lo: u64, hi: u64) {
        let end = node.end();
        if end < lo || node.start > hi {
            self.nodes.insert(node.start, (node.depth, key));
        } else if lo <= node.start && end <= hi {
            // Entirely shredded: `key` is erased on drop.
        } else {
            // Partial overlap, so the node is not a leaf (a leaf's range is one epoch).
            for (bit, child) in node.children().into_iter().enumerate() {
                let child_key = Box::new(derive_child(&key, child.depth, bit == 1));
                self.split_out(child, child_key, lo, hi);
            }
        }
    }

    /// How many subtrees the tree stores (1 before any shredding).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every key held, with its subtree (for tests that nothing left can reach a shredded
    /// epoch).
    #[cfg(test)]
    pub(crate) fn held(&self) -> Vec<(u8, u64, [u8; 32])> {
        self.nodes.iter().map(|(&s, (d, k))| (*d, s, k.0)).collect()
    }

    /// Every node key on the path from the root to `epoch`'s leaf, root first, derived from
    /// `secret` (for tests).
    #[cfg(test)]
    pub(crate) fn path_keys(secret: &PatientSecret, epoch: Epoch) -> Vec<[u8; 32]> {
        let mut key = derive_root(&secret.0);
        let mut out = vec![key.0];
        for depth in 0..64u8 {
            let bit = (epoch.0 >> (63 - u32::from(depth))) & 1 == 1;
            key = derive_child(&key, depth + 1, bit);
            out.push(key.0);
        }
        out
    }
}

impl fmt::Debug for EpochKeyTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochKeyTree")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> PatientSecret {
        PatientSecret::from_bytes([7; 32])
    }

    #[test]
    fn node_ranges() {
        assert_eq!(Node::ROOT.end(), u64::MAX);
        let [l, r] = Node::ROOT.children();
        assert_eq!((l.start, l.end()), (0, u64::MAX >> 1));
        assert_eq!((r.start, r.end()), (1 << 63, u64::MAX));
        let leaf = Node {
            depth: 64,
            start: 42,
        };
        assert_eq!(leaf.end(), 42);
    }

    #[test]
    fn tree_matches_path_derivation() {
        let tree = secret().key_tree();
        for e in [0u64, 1, 2, 1000, u64::MAX - 1, u64::MAX] {
            let k = tree.epoch_key(Epoch(e)).unwrap();
            let path = EpochKeyTree::path_keys(&secret(), Epoch(e));
            assert_eq!(k.raw(), path[64]);
        }
    }

    #[test]
    fn shredding_keeps_others_identical_and_erases_ancestors() {
        let s = secret();
        let full = s.key_tree();
        let mut tree = s.key_tree();
        let shredded = [3u64, 4, 5, 900, u64::MAX];
        tree.shred(Epoch(3)..=Epoch(5));
        tree.shred(Epoch(900)..=Epoch(900));
        tree.shred(Epoch(u64::MAX)..=Epoch(u64::MAX));
        for e in [0u64, 1, 2, 6, 7, 899, 901, 1 << 40, u64::MAX - 1] {
            assert_eq!(
                tree.epoch_key(Epoch(e)).unwrap(),
                full.epoch_key(Epoch(e)).unwrap()
            );
        }
        let held = tree.held();
        for e in shredded {
            assert!(!tree.covers(Epoch(e)));
            assert_eq!(
                tree.epoch_key(Epoch(e)),
                Err(PseudonymError::EpochShredded { epoch: Epoch(e) })
            );
            // No held subtree contains the epoch, and no held key is on its path.
            let path = EpochKeyTree::path_keys(&s, Epoch(e));
            for (d, start, key) in &held {
                let n = Node {
                    depth: *d,
                    start: *start,
                };
                assert!(n.end() < e || n.start > e);
                assert!(!path.contains(key));
            }
        }
        // Subtrees stay disjoint and logarithmic in number.
        assert!(tree.node_count() <= 3 * 2 * 64);
        let mut last_end: Option<u64> = None;
        for (d, start, _) in held {
            if let Some(prev) = last_end {
                assert!(start > prev);
            }
            last_end = Some(Node { depth: d, start }.end());
        }
    }

    #[test]
    fn shred_everything_and_empty_ranges() {
        let mut tree = secret().key_tree();
        #[allow(clippy::reversed_empty_ranges)]
        tree.shred(Epoch(5)..=Epoch(4));
        assert_eq!(tree.node_count(), 1);
        tree.shred(Epoch::ZERO..=Epoch::MAX);
        assert_eq!(tree.node_count(), 0);
        assert!(!tree.covers(Epoch(17)));
        tree.shred(Epoch(1)..=Epoch(2)); // nothing left: no-op
    }

    #[test]
    fn sequential_shredding_stays_small() {
        let mut tree = secret().key_tree();
        for e in 0..1000 {
            tree.shred(Epoch(e)..=Epoch(e));
        }
        assert!(tree.node_count() <= 64, "{}", tree.node_count());
        assert!(tree.covers(Epoch(1000)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Shredding against a model: a set of shredded epochs.
        #[test]
        fn shredding_matches_a_model(
            ranges in proptest::collection::vec((0u64..200, 0u64..20), 0..12),
            probes in proptest::collection::vec(0u64..240, 16),
        ) {
            let s = secret();
            let full = s.key_tree();
            let mut tree = s.key_tree();
            let mut model = std::collections::BTreeSet::new();
            for (start, len) in ranges {
                tree.shred(Epoch(start)..=Epoch(start + len));
                model.extend(start..=start + len);
            }
            for e in probes.into_iter().chain([u64::MAX, 1 << 50]) {
                let shredded = model.contains(&e);
                proptest::prop_assert_eq!(tree.covers(Epoch(e)), !shredded);
                match tree.epoch_key(Epoch(e)) {
                    Ok(k) => proptest::prop_assert_eq!(k, full.epoch_key(Epoch(e)).unwrap()),
                    Err(err) => {
                        proptest::prop_assert!(shredded);
                        proptest::prop_assert_eq!(err, PseudonymError::EpochShredded { epoch: Epoch(e) });
                    }
                }
            }
        }
    }

    #[test]
    fn secrets_never_print_and_compare() {
        let a = PatientSecret::from_bytes([1; 32]);
        let b = PatientSecret::from_bytes([1; 32]);
        let c = PatientSecret::generate().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(format!("{a:?}"), "PatientSecret(<redacted>)");
        let k = a.key_tree().epoch_key(Epoch(1)).unwrap();
        let dbg = format!("{k:?} {:?}", a.key_tree());
        assert!(!dbg.contains("0101"), "{dbg}");
        assert!(!dbg.contains(&crate::hash::to_hex(&k.raw())[..8]), "{dbg}");
    }
}
