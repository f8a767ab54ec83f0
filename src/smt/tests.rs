use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::codec::{self, DecodeError};

thread_local! {
    /// Interior-node hashes computed on this thread.
    static NODE_HASHES: Cell<usize> = const { Cell::new(0) };
}

pub(super) fn count_node_hash() {
    NODE_HASHES.with(|c| c.set(c.get() + 1));
}

fn node_hashes() -> usize {
    NODE_HASHES.with(Cell::get)
}

type Model = BTreeMap<StateKey, Digest>;

fn key(n: u64) -> StateKey {
    StateKey::from_bytes(domain::STATE_KEY.hash(&n.to_le_bytes()))
}

fn value(n: u64) -> Digest {
    Digest::from_bytes(domain::STATE_VALUE.hash(&n.to_le_bytes()))
}

fn key_with_bit_flipped(base: &StateKey, i: usize) -> StateKey {
    let mut b = base.to_bytes();
    b[i / 8] ^= 0x80 >> (i % 8);
    StateKey::from_bytes(b)
}

/// The root by the definition, from scratch: a straightforward recursion over sorted entries.
fn reference_root(entries: &[(StateKey, Digest)], depth: usize) -> [u8; 32] {
    match entries {
        [] => [0; 32],
        [(k, v)] => domain::STATE_LEAF.hash_parts(&[k.as_bytes(), v.as_bytes()]),
        _ => {
            let mid = entries.partition_point(|(k, _)| !bit(k, depth));
            let left = reference_root(&entries[..mid], depth + 1);
            let right = reference_root(&entries[mid..], depth + 1);
            domain::STATE_NODE.hash_parts(&[&left, &right])
        }
    }
}

fn model_root(model: &Model) -> StateRoot {
    let entries: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
    StateRoot::from_bytes(reference_root(&entries, 0))
}

/// Sorts and deduplicates `ops` into a valid batch (the last op on a key wins).
fn batch(ops: &[StateUpdate]) -> Vec<StateUpdate> {
    let map: BTreeMap<_, _> = ops.iter().copied().collect();
    map.into_iter().collect()
}

fn apply_to_model(model: &mut Model, ops: &[StateUpdate]) {
    for (k, v) in ops {
        match v {
            Some(v) => model.insert(*k, *v),
            None => model.remove(k),
        };
    }
}

fn tree_of(model: &Model) -> StateTree {
    model.iter().map(|(k, v)| (*k, *v)).collect()
}

fn collect_nodes(node: &Subtree, out: &mut HashSet<*const Internal>) {
    if let Subtree::Node(inner) = node {
        out.insert(Arc::as_ptr(inner));
        collect_nodes(&inner.left, out);
        collect_nodes(&inner.right, out);
    }
}

/// Checks the canonical-form invariant: every interior node holds two or more entries, and
/// every entry lies on its own key's path. Returns the number of entries.
fn check_shape(node: &Subtree, depth: usize, prefix: &StateKey) -> usize {
    match node {
        Subtree::Empty => 0,
        Subtree::Leaf(leaf) => {
            assert!(common_prefix_bits(&leaf.key, prefix) >= depth);
            1
        }
        Subtree::Node(inner) => {
            assert!(depth < KEY_BITS);
            let left_prefix = {
                let mut b = prefix.to_bytes();
                b[depth / 8] &= !(0x80 >> (depth % 8));
                StateKey::from_bytes(b)
            };
            let right_prefix = {
                let mut b = prefix.to_bytes();
                b[depth / 8] |= 0x80 >> (depth % 8);
                StateKey::from_bytes(b)
            };
            let n = check_shape(&inner.left, depth + 1, &left_prefix)
                + check_shape(&inner.right, depth + 1, &right_prefix);
            assert!(n >= 2, "interior node over {n} entries at depth {depth}");
            assert_eq!(inner.hash, node_hash(inner.left.hash(), inner.right.hash()));
            n
        }
        Subtree::Stored(_) => panic!("a tree without a node store holds a stored subtree"),
    }
}

/// Everything a tree must agree on with its model.
fn assert_matches_model(tree: &StateTree, model: &Model) {
    assert_eq!(tree.root(), model_root(model));
    assert_eq!(tree.len(), model.len());
    assert_eq!(tree.is_empty(), model.is_empty());
    let entries: Vec<_> = tree.iter().collect();
    let expected: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(entries, expected);
    for (k, v) in model {
        assert_eq!(tree.get(k), Some(*v));
    }
    let first = model.keys().next().copied().unwrap_or_default();
    let n = check_shape(&tree.root, 0, &first);
    assert_eq!(n, model.len());
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Keys: uniform, and from pools that share long prefixes (deep paths, collapses, depth 256).
fn key_strategy() -> impl Strategy<Value = StateKey> {
    let base = StateKey::from_bytes([0x5a; 32]);
    prop_oneof![
        any::<[u8; 32]>().prop_map(StateKey::from_bytes),
        (0usize..4, any::<u8>()).prop_map(|(p, last)| {
            let mut b = [[0x00, 0x55, 0xaa, 0xff][p]; 32];
            b[31] = last;
            StateKey::from_bytes(b)
        }),
        (0usize..KEY_BITS).prop_map(move |i| key_with_bit_flipped(&base, i)),
        Just(base),
    ]
}

fn value_strategy() -> impl Strategy<Value = Digest> {
    (0u8..4).prop_map(|b| Digest::from_bytes([b; 32]))
}

fn ops_strategy(max: usize) -> impl Strategy<Value = Vec<StateUpdate>> {
    proptest::collection::vec(
        (
            key_strategy(),
            proptest::option::weighted(0.7, value_strategy()),
        ),
        0..max,
    )
}

fn entries_strategy(max: usize) -> impl Strategy<Value = Model> {
    proptest::collection::btree_map(key_strategy(), value_strategy(), 0..max)
}

// ---------------------------------------------------------------------------------------------
// Unit tests

#[test]
fn empty_tree() {
    let tree = StateTree::new();
    assert_eq!(tree.root(), EMPTY_ROOT);
    assert_eq!(StateTree::default(), tree);
    assert!(tree.is_empty());
    assert_eq!(tree.len(), 0);
    assert_eq!(tree.iter().next(), None);
    let k = key(1);
    assert_eq!(tree.get(&k), None);
    let proof = tree.prove(&k);
    assert_eq!(proof.leaf(), None);
    assert!(proof.siblings().is_empty());
    assert_eq!(proof.verify(&EMPTY_ROOT, &k, None), Ok(()));
    assert_eq!(
        proof.verify(&EMPTY_ROOT, &k, Some(&value(1))),
        Err(ProofError::KeyAbsent)
    );
    assert_eq!(
        format!("{tree:?}"),
        format!("StateTree {{ root: {EMPTY_ROOT:?}, len: 0 }}")
    );
}

#[test]
fn single_leaf_is_the_root() {
    let mut tree = StateTree::new();
    tree.apply(&[(key(1), Some(value(1)))]).unwrap();
    assert_eq!(
        tree.root().to_bytes(),
        domain::STATE_LEAF.hash_parts(&[key(1).as_bytes(), value(1).as_bytes()])
    );
    let proof = tree.prove(&key(1));
    assert_eq!(proof.leaf(), Some((key(1), value(1))));
    assert!(proof.siblings().is_empty());
    proof
        .verify(&tree.root(), &key(1), Some(&value(1)))
        .unwrap();
    // Non-inclusion of any other key is shown by the same single leaf.
    let other = tree.prove(&key(2));
    assert_eq!(other, proof);
    other.verify(&tree.root(), &key(2), None).unwrap();
}

#[test]
fn two_leaves_by_hand() {
    // The keys share their first 7 bits and differ in bit 7.
    let a = StateKey::from_bytes([0x00; 32]);
    let mut b_bytes = [0x00; 32];
    b_bytes[0] = 0x01;
    let b = StateKey::from_bytes(b_bytes);
    let (va, vb) = (value(1), value(2));
    let mut tree = StateTree::new();
    tree.apply(&[(a, Some(va)), (b, Some(vb))]).unwrap();

    let la = domain::STATE_LEAF.hash_parts(&[a.as_bytes(), va.as_bytes()]);
    let lb = domain::STATE_LEAF.hash_parts(&[b.as_bytes(), vb.as_bytes()]);
    let mut h = domain::STATE_NODE.hash_parts(&[&la, &lb]);
    for _ in 0..7 {
        // Bits 0..7 of both keys are 0: the path goes left, the right sibling is empty.
        h = domain::STATE_NODE.hash_parts(&[&h, &[0; 32]]);
    }
    assert_eq!(tree.root().to_bytes(), h);

    let proof = tree.prove(&a);
    assert_eq!(proof.siblings().len(), 8);
    assert!(proof.siblings()[..7]
        .iter()
        .all(|s| s.to_bytes() == [0; 32]));
    assert_eq!(proof.siblings()[7].to_bytes(), lb);
    proof.verify(&tree.root(), &a, Some(&va)).unwrap();

    // A key going right at the root ends at an empty subtree after one step.
    let c = StateKey::from_bytes([0x80; 32]);
    let proof = tree.prove(&c);
    assert_eq!(proof.leaf(), None);
    assert_eq!(proof.siblings().len(), 1);
    proof.verify(&tree.root(), &c, None).unwrap();
}

#[test]
fn golden_root() {
    // Pins the hashing rules: a change here is a change of the committed state format.
    let tree: StateTree = (0..16).map(|i| (key(i), value(i))).collect();
    let model: Model = (0..16).map(|i| (key(i), value(i))).collect();
    assert_eq!(tree.root(), model_root(&model));
    assert_eq!(
        tree.root().to_string(),
        "1825c2e52976f7e336c45200eee640e26042606ac1dbe8e6fe9f1408f9be9031"
    );
}

#[test]
fn unsorted_batches_are_refused_and_change_nothing() {
    let mut tree: StateTree = (0..10).map(|i| (key(i), value(i))).collect();
    let before = tree.clone();
    let mut ups: Vec<StateUpdate> = (10..20).map(|i| (key(i), Some(value(i)))).collect();
    ups.sort();
    let good = ups.clone();

    ups.swap(3, 4);
    assert_eq!(tree.apply(&ups), Err(SmtError::UnsortedBatch { index: 4 }));
    let mut dup = good.clone();
    dup[6].0 = dup[5].0;
    assert_eq!(tree.apply(&dup), Err(SmtError::UnsortedBatch { index: 6 }));
    let mut dup_delete = good.clone();
    dup_delete.insert(1, (good[0].0, None));
    assert_eq!(
        tree.apply(&dup_delete),
        Err(SmtError::UnsortedBatch { index: 1 })
    );
    assert_eq!(tree, before);
    assert_eq!(tree.len(), 10);

    tree.apply(&good).unwrap();
    assert_eq!(tree.len(), 20);
    assert_eq!(
        SmtError::UnsortedBatch { index: 4 }.to_string(),
        "batch not sorted strictly ascending by key at entry 4"
    );
}

#[test]
fn deepest_paths_have_256_siblings() {
    let a = StateKey::from_bytes([0xc3; 32]);
    let b = key_with_bit_flipped(&a, 255);
    let c = key_with_bit_flipped(&a, 254);
    let mut tree = StateTree::new();
    tree.apply(&batch(&[(a, Some(value(1))), (b, Some(value(2)))]))
        .unwrap();
    let proof = tree.prove(&a);
    assert_eq!(proof.siblings().len(), MAX_PROOF_DEPTH);
    proof.verify(&tree.root(), &a, Some(&value(1))).unwrap();
    let bytes = codec::encode(&proof);
    assert_eq!(bytes.len(), StateProof::MAX_ENCODED_LEN);
    assert_eq!(codec::decode::<StateProof>(&bytes).unwrap(), proof);
    // A key that leaves the shared path at bit 254 ends at an empty subtree.
    let absent = tree.prove(&c);
    assert_eq!(absent.siblings().len(), 255);
    absent.verify(&tree.root(), &c, None).unwrap();

    // With the third key present, all three paths stay consistent.
    tree.apply(&[(c, Some(value(3)))]).unwrap();
    let model: Model = [(a, value(1)), (b, value(2)), (c, value(3))].into();
    assert_matches_model(&tree, &model);
    tree.prove(&b)
        .verify(&tree.root(), &b, Some(&value(2)))
        .unwrap();
}

#[test]
fn deletions_collapse_back_to_a_single_leaf_and_to_empty() {
    let n = 500;
    let mut tree: StateTree = (0..n).map(|i| (key(i), value(i))).collect();
    let survivor = key(123);
    let deletes = batch(
        &(0..n)
            .filter(|&i| i != 123)
            .map(|i| (key(i), None))
            .collect::<Vec<_>>(),
    );
    tree.apply(&deletes).unwrap();
    assert_eq!(tree.len(), 1);
    assert!(matches!(tree.root, Subtree::Leaf(_)));
    assert_eq!(
        tree.root().to_bytes(),
        domain::STATE_LEAF.hash_parts(&[survivor.as_bytes(), value(123).as_bytes()])
    );
    tree.apply(&[(survivor, None)]).unwrap();
    assert!(matches!(tree.root, Subtree::Empty));
    assert_eq!(tree.root(), EMPTY_ROOT);
    assert!(tree.is_empty());
}

#[test]
fn each_touched_node_is_hashed_once_and_untouched_nodes_never() {
    let mut tree: StateTree = (0..2000).map(|i| (key(i), value(i))).collect();
    let old_nodes = {
        let mut s = HashSet::new();
        collect_nodes(&tree.root, &mut s);
        s
    };
    // Updates, inserts, deletes, deletes of absent keys and no-op writes.
    let ops: Vec<StateUpdate> = (0..40)
        .map(|i| (key(i * 7), Some(value(i + 10_000))))
        .chain((0..30).map(|i| (key(5000 + i), Some(value(i)))))
        .chain((0..20).map(|i| (key(i * 11 + 1), None)))
        .chain((0..10).map(|i| (key(9000 + i), None)))
        .chain((0..10).map(|i| (key(1000 + i), Some(value(1000 + i)))))
        .collect();
    let ops = batch(&ops);
    let before = node_hashes();
    tree.apply_with(&ops, false).unwrap();
    let hashed = node_hashes() - before;

    let mut new_nodes = HashSet::new();
    collect_nodes(&tree.root, &mut new_nodes);
    let created = new_nodes.difference(&old_nodes).count();
    assert_eq!(hashed, created, "every new node hashed once, nothing else");
    assert!(
        hashed <= ops.len() * 32,
        "{hashed} hashes for {} ops",
        ops.len()
    );

    // A batch that changes nothing hashes nothing and keeps the very same root node.
    let same_root = tree.root.clone();
    let noop: Vec<StateUpdate> = batch(
        &(0..50)
            .map(|i| (key(2000 + i), tree.get(&key(2000 + i))))
            .chain((0..50).map(|i| (key(1000 + i), tree.get(&key(1000 + i)))))
            .collect::<Vec<_>>(),
    );
    let before = node_hashes();
    tree.apply_with(&noop, false).unwrap();
    assert_eq!(node_hashes(), before);
    assert!(tree.root.same(&same_root));
}

#[test]
fn parallel_and_serial_build_identical_trees() {
    let initial: Vec<StateUpdate> = batch(
        &(0..6000)
            .map(|i| (key(i), Some(value(i))))
            .collect::<Vec<_>>(),
    );
    let mut par = StateTree::new();
    let mut ser = StateTree::new();
    par.apply_with(&initial, true).unwrap();
    ser.apply_with(&initial, false).unwrap();
    assert_eq!(par.root(), ser.root());

    let second: Vec<StateUpdate> = batch(
        &(0..3000)
            .map(|i| (key(i * 3), (i % 4 != 0).then(|| value(i + 1))))
            .chain((0..1000).map(|i| (key(100_000 + i), Some(value(i)))))
            .collect::<Vec<_>>(),
    );
    par.apply_with(&second, true).unwrap();
    ser.apply_with(&second, false).unwrap();
    assert_eq!(par.root(), ser.root());
    assert_eq!(par.len(), ser.len());
    assert!(par.iter().eq(ser.iter()));

    let mut model = Model::new();
    apply_to_model(&mut model, &initial);
    apply_to_model(&mut model, &second);
    assert_matches_model(&par, &model);
}

#[test]
fn from_iter_keeps_the_last_value_of_a_repeated_key() {
    let tree: StateTree = [(key(1), value(1)), (key(2), value(2)), (key(1), value(3))]
        .into_iter()
        .collect();
    assert_eq!(tree.len(), 2);
    assert_eq!(tree.get(&key(1)), Some(value(3)));
}

#[test]
fn iter_is_ordered_and_exact() {
    let tree: StateTree = (0..300).map(|i| (key(i), value(i))).collect();
    let mut it = tree.iter();
    assert_eq!(it.len(), 300);
    it.next();
    assert_eq!(it.len(), 299);
    let keys: Vec<_> = (&tree).into_iter().map(|(k, _)| k).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(keys.len(), 300);
}

#[test]
fn errors_are_send_sync_static_and_lower_case() {
    fn assert_bounds<E: std::error::Error + Send + Sync + 'static>() {}
    assert_bounds::<SmtError>();
    assert_bounds::<ProofError>();
    let messages = [
        SmtError::UnsortedBatch { index: 1 }.to_string(),
        ProofError::KeyAbsent.to_string(),
        ProofError::KeyPresent.to_string(),
        ProofError::ValueMismatch.to_string(),
        ProofError::LeafOffPath { depth: 3 }.to_string(),
        ProofError::RootMismatch.to_string(),
    ];
    for m in messages {
        assert!(m.starts_with(|c: char| c.is_ascii_lowercase()), "{m}");
    }
}

#[test]
fn leaf_off_path_is_refused() {
    // A non-inclusion proof whose leaf cannot lie on the key's path.
    let mut tree = StateTree::new();
    let a = StateKey::from_bytes([0x00; 32]);
    let b = StateKey::from_bytes([0xff; 32]);
    tree.apply(&[(a, Some(value(1))), (b, Some(value(2)))])
        .unwrap();
    let c = StateKey::from_bytes([0x01; 32]); // goes left at the root, like `a`
    let mut proof = tree.prove(&c);
    assert_eq!(proof.leaf(), Some((a, value(1))));
    proof.verify(&tree.root(), &c, None).unwrap();
    proof.leaf = Some((b, value(2)));
    assert_eq!(
        proof.verify(&tree.root(), &c, None),
        Err(ProofError::LeafOffPath { depth: 1 })
    );
}

#[test]
fn decode_rejects_oversized_sibling_lists() {
    // Option tag 0, then a sibling count of 257 (varint 0x81 0x02).
    let mut bytes = vec![codec::FORMAT_VERSION, 0, 0x81, 0x02];
    bytes.extend(std::iter::repeat_n(0, 257 * 32));
    assert!(bytes.len() <= StateProof::MAX_ENCODED_LEN);
    assert!(matches!(
        codec::decode::<StateProof>(&bytes),
        Err(DecodeError::CountTooLarge {
            len: 257,
            max: 256,
            ..
        })
    ));
    let too_long = vec![0u8; StateProof::MAX_ENCODED_LEN + 1];
    assert!(matches!(
        codec::decode::<StateProof>(&too_long),
        Err(DecodeError::InputTooLarge { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Properties

/// All the ways `proof` can be tampered with: each must fail for the true claim.
fn tampered(proof: &StateProof) -> Vec<StateProof> {
    let mut out = Vec::new();
    let siblings = proof.siblings.to_vec();
    let with = |siblings: Vec<Digest>| StateProof {
        leaf: proof.leaf,
        siblings: BoundedVec::try_from(siblings).unwrap(),
    };
    if !siblings.is_empty() {
        out.push(with(siblings[..siblings.len() - 1].to_vec()));
        out.push(with(siblings[1..].to_vec()));
        for i in [0, siblings.len() / 2, siblings.len() - 1] {
            let mut s = siblings.clone();
            let mut b = s[i].to_bytes();
            b[i % 32] ^= 1;
            s[i] = Digest::from_bytes(b);
            out.push(with(s));
        }
    }
    if siblings.len() < MAX_PROOF_DEPTH {
        for extra in [Digest::from_bytes([0; 32]), Digest::from_bytes([9; 32])] {
            let mut s = siblings.clone();
            s.push(extra);
            out.push(with(s));
            let mut s = siblings.clone();
            s.insert(0, extra);
            out.push(with(s));
        }
    }
    match proof.leaf {
        Some((k, v)) => {
            let mut b = v.to_bytes();
            b[0] ^= 1;
            out.push(StateProof {
                leaf: Some((k, Digest::from_bytes(b))),
                ..proof.clone()
            });
            out.push(StateProof {
                leaf: Some((key_with_bit_flipped(&k, 255), v)),
                ..proof.clone()
            });
            out.push(StateProof {
                leaf: None,
                ..proof.clone()
            });
        }
        None => out.push(StateProof {
            leaf: Some((StateKey::from_bytes([1; 32]), Digest::from_bytes([1; 32]))),
            ..proof.clone()
        }),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The root depends only on the final set of entries: one at a time, random batches and a
    /// rebuild from scratch agree with each other and with the reference definition.
    #[test]
    fn root_is_independent_of_order_and_batching(
        ops in ops_strategy(160),
        cuts in proptest::collection::vec(1usize..40, 1..20),
    ) {
        let mut model = Model::new();
        apply_to_model(&mut model, &ops);

        let mut one_by_one = StateTree::new();
        for op in &ops {
            one_by_one.apply(std::slice::from_ref(op)).unwrap();
        }

        let mut batched = StateTree::new();
        let mut serial = StateTree::new();
        let mut rest = &ops[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            let b = batch(&rest[..n]);
            batched.apply(&b).unwrap();
            serial.apply_with(&b, false).unwrap();
            rest = &rest[n..];
            i += 1;
        }

        let rebuilt = tree_of(&model);
        let mut reversed = StateTree::new();
        for (k, v) in model.iter().rev() {
            reversed.apply(&[(*k, Some(*v))]).unwrap();
        }

        for tree in [&one_by_one, &batched, &serial, &rebuilt, &reversed] {
            assert_matches_model(tree, &model);
        }
        for (k, _) in &ops {
            prop_assert_eq!(one_by_one.get(k), model.get(k).copied());
        }
    }

    /// Writing a batch and then undoing it gives back the identical root, including when the
    /// undo collapses subtrees back to single leaves.
    #[test]
    fn batch_then_undo_restores_the_root(
        base in entries_strategy(120),
        ops in ops_strategy(120),
    ) {
        let mut tree = tree_of(&base);
        let root = tree.root();
        let forward = batch(&ops);
        let undo: Vec<StateUpdate> =
            forward.iter().map(|(k, _)| (*k, base.get(k).copied())).collect();
        tree.apply(&forward).unwrap();
        let mut model = base.clone();
        apply_to_model(&mut model, &forward);
        assert_matches_model(&tree, &model);
        tree.apply(&undo).unwrap();
        prop_assert_eq!(tree.root(), root);
        assert_matches_model(&tree, &base);

        // Deleting everything, then re-inserting, also round-trips.
        let all_keys: Vec<StateUpdate> = base.keys().map(|k| (*k, None)).collect();
        tree.apply(&all_keys).unwrap();
        prop_assert_eq!(tree.root(), EMPTY_ROOT);
        tree.apply(&base.iter().map(|(k, v)| (*k, Some(*v))).collect::<Vec<_>>()).unwrap();
        prop_assert_eq!(tree.root(), root);
    }

    /// Proofs of present and absent keys verify for the truth, and nothing else verifies: no
    /// other value, no other key's state, no other root, no tampered proof.
    #[test]
    fn proofs_verify_the_truth_only(
        model in entries_strategy(100),
        extra in proptest::collection::vec(key_strategy(), 1..12),
        other_value in value_strategy(),
    ) {
        let tree = tree_of(&model);
        let root = tree.root();
        let queries: Vec<StateKey> = model.keys().take(12).copied().chain(extra).collect();
        for k in &queries {
            let truth = model.get(k);
            let proof = tree.prove(k);
            prop_assert_eq!(proof.verify(&root, k, truth), Ok(()));

            // Wrong value, or presence and absence swapped.
            match truth {
                Some(v) => {
                    prop_assert!(proof.verify(&root, k, None).is_err());
                    let mut b = v.to_bytes();
                    b[31] ^= 0x80;
                    prop_assert!(proof.verify(&root, k, Some(&Digest::from_bytes(b))).is_err());
                }
                None => prop_assert!(proof.verify(&root, k, Some(&other_value)).is_err()),
            }

            // Wrong root.
            let mut r = root.to_bytes();
            r[0] ^= 1;
            prop_assert!(proof.verify(&StateRoot::from_bytes(r), k, truth).is_err());
            if !model.is_empty() {
                prop_assert!(proof.verify(&EMPTY_ROOT, k, truth).is_err());
            }

            // Wrong key: a proof may only ever confirm the true state of the key asked about.
            for q in queries.iter().chain([&key_with_bit_flipped(k, 255), &key_with_bit_flipped(k, 0)]) {
                for claim in [model.get(q), Some(&other_value), None] {
                    if proof.verify(&root, q, claim).is_ok() {
                        prop_assert_eq!(claim, model.get(q));
                    }
                }
            }

            // Truncated, extended or altered proofs.
            for bad in tampered(&proof) {
                prop_assert!(bad.verify(&root, k, truth).is_err(), "tampered proof verified");
            }
        }
    }

    /// A clone taken before a batch keeps its root, entries and proofs.
    #[test]
    fn snapshots_are_unaffected_by_later_batches(
        base in entries_strategy(100),
        ops in ops_strategy(100),
    ) {
        let mut tree = tree_of(&base);
        let snapshot = tree.clone();
        let root = tree.root();
        let keys: Vec<StateKey> = base.keys().copied().chain(ops.iter().map(|(k, _)| *k)).collect();
        let proofs: Vec<StateProof> = keys.iter().map(|k| tree.prove(k)).collect();

        let b = batch(&ops);
        tree.apply(&b).unwrap();
        let mut model = base.clone();
        apply_to_model(&mut model, &b);
        assert_matches_model(&tree, &model);
        prop_assert_eq!(tree.root() == root, model == base);

        prop_assert_eq!(snapshot.root(), root);
        assert_matches_model(&snapshot, &base);
        for (k, proof) in keys.iter().zip(&proofs) {
            prop_assert_eq!(proof.verify(&root, k, base.get(k)), Ok(()));
            prop_assert_eq!(&snapshot.prove(k), proof);
            if base.get(k) != model.get(k) {
                prop_assert!(proof.verify(&tree.root(), k, base.get(k)).is_err());
            }
        }
    }

    /// Proofs survive the canonical encoding.
    #[test]
    fn proof_codec_round_trip(model in entries_strategy(60), k in key_strategy()) {
        let tree = tree_of(&model);
        let proof = tree.prove(&k);
        let bytes = codec::encode(&proof);
        prop_assert!(bytes.len() <= StateProof::MAX_ENCODED_LEN);
        let decoded = codec::decode::<StateProof>(&bytes).unwrap();
        prop_assert_eq!(&decoded, &proof);
        prop_assert_eq!(decoded.verify(&tree.root(), &k, model.get(&k)), Ok(()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Decoding arbitrary bytes never panics, and whatever decodes re-encodes to the input.
    #[test]
    fn proof_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(proof) = codec::decode::<StateProof>(&bytes) {
            prop_assert_eq!(codec::encode(&proof), bytes);
        }
    }

    /// Nor does decoding a real proof with a byte changed or cut off.
    #[test]
    fn proof_decode_of_mutated_encodings_never_panics(
        n in 2u64..40,
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let tree: StateTree = (0..n).map(|i| (key(i), value(i))).collect();
        let mut bytes = codec::encode(&tree.prove(&key(n / 2)));
        let i = pos.index(bytes.len());
        if cut {
            bytes.truncate(i);
        } else {
            bytes[i] = byte;
        }
        if let Ok(proof) = codec::decode::<StateProof>(&bytes) {
            prop_assert_eq!(codec::encode(&proof), bytes);
        }
    }
}
