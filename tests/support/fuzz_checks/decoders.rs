//! One check per decoder: no panic, exact round trip, and no panic in what follows decoding.

use medledger::block::Header;
use medledger::codec::{self, Canonical, DecodeError};
use medledger::consensus::{Ancestors, Consensus};
use medledger::hash::{ChainId, MerkleRoot, StateKey};
use medledger::merkle::{merkle_root, MerkleProof};
use medledger::pow::{PowSeal, ProofOfWork};
use medledger::pseudonym::{Context, LinkStatement, PatientSecret};
use medledger::smt::{StateProof, StateTree, EMPTY_ROOT};
use medledger::state::snapshot::{SnapshotChunk, SnapshotImport};
use medledger::tx::{self};
use medledger::AccessState;
use medledger::Block;
use medledger::Transaction;

/// Decodes `data` as a `T`. If it decodes, re-encoding must give `data` back exactly; if it does
/// not, the error must say why (and an input over the type's limit must be refused as such).
pub fn round_trip<T: Canonical>(data: &[u8]) -> Option<T> {
    match codec::decode::<T>(data) {
        Ok(value) => {
            assert!(
                codec::encode(&value) == data,
                "{}: decode→encode does not reproduce the input",
                T::NAME
            );
            Some(value)
        }
        Err(e) => {
            if data.len() > T::MAX_ENCODED_LEN {
                assert!(
                    matches!(e, DecodeError::InputTooLarge { .. }),
                    "{}: oversize input refused as {e:?}",
                    T::NAME
                );
            }
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// Transactions: round trip; strict verification and the batch path (what blocks use) agree.
pub fn transaction(data: &[u8]) {
    let Some(t) = round_trip::<Transaction>(data) else {
        return;
    };
    assert_eq!(Transaction::decode(data).as_ref(), Ok(&t));
    let _ = t.id();
    let strict = t.clone().verify();
    let batch = tx::verify_batch(t.body.chain_id, vec![t.clone()]);
    assert_eq!(
        strict.is_ok(),
        batch.is_ok(),
        "strict verification says {strict:?}, the batch path {batch:?}"
    );
    if let (Ok(one), Ok(many)) = (strict, batch) {
        assert_eq!(many, vec![one]);
    }
}

/// The branch a fuzzed header claims to extend: just its parent.
struct OneParent(Header<PowSeal>);

impl Ancestors<PowSeal> for OneParent {
    fn parent(&self) -> &Header<PowSeal> {
        &self.0
    }
    fn at_height(&self, height: u64) -> Option<&Header<PowSeal>> {
        (height == self.0.height).then_some(&self.0)
    }
}

/// Block headers: round trip, hashing, and both engines' header checks never panic.
pub fn block_header(data: &[u8]) {
    let Some(h) = round_trip::<Header<PowSeal>>(data) else {
        return;
    };
    let _ = h.hash();
    let _ = ProofOfWork::pow_hash(&h);
    let parent = OneParent(Header {
        height: h.height.wrapping_sub(1),
        timestamp: h.timestamp.wrapping_sub(600),
        ..h.clone()
    });
    for engine in [ProofOfWork::regtest(), ProofOfWork::bitcoin()] {
        for now in [0, h.timestamp, u64::MAX] {
            if let Err(e) = engine.verify_header(&h, &parent, now) {
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

/// Blocks: round trip; structure checks never panic, and a block that passes them gives itself
/// back, proves its transactions, and holds only transactions that verify strictly.
pub fn block(data: &[u8]) {
    let Some(b) = round_trip::<Block<PowSeal>>(data) else {
        return;
    };
    assert_eq!(b.hash(), b.header.hash());
    let chain_id = b
        .txs
        .first()
        .map_or(ChainId::default(), |t| t.body.chain_id);
    let checked = match b.clone().check_structure(chain_id) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(checked.to_block(), b);
    assert_eq!(checked.hash(), b.hash());
    let n = b.txs.len();
    for i in [0, n / 2, n.saturating_sub(1)] {
        if i < n {
            let proof = checked
                .tx_proof(i)
                .expect("a checked block proves its transactions");
            checked
                .header()
                .verify_tx_proof(&proof, &b.txs[i].id())
                .expect("the proof of a checked block verifies");
        }
    }
    for t in b.txs.iter() {
        t.clone()
            .verify()
            .expect("a transaction of a checked block verifies strictly");
    }
}

/// Merkle proofs: round trip; verification never panics; a single-chunk proof is complete and
/// verifies against the root of its chunk.
pub fn merkle_proof(data: &[u8]) {
    let Some(p) = round_trip::<MerkleProof>(data) else {
        return;
    };
    let id = p.chunk.first().copied().unwrap_or_default();
    let _ = p.verify(&MerkleRoot::default(), p.count, &id);
    let _ = p.verify(&MerkleRoot::default(), p.count.wrapping_add(1), &id);
    let index = p.index as usize;
    if p.siblings.is_empty() && p.chunk.len() == p.count as usize && index < p.chunk.len() {
        p.verify(&merkle_root(&p.chunk), p.count, &p.chunk[index])
            .expect("a single-chunk proof verifies against its chunk's root");
    }
}

/// State proofs: round trip; verification never panics; a proof without siblings is a whole tree
/// and verifies against that tree's root.
pub fn state_proof(data: &[u8]) {
    let Some(p) = round_trip::<StateProof>(data) else {
        return;
    };
    let key = p.leaf().map_or(StateKey::default(), |(k, _)| k);
    let value = p.leaf().map(|(_, v)| v);
    for root in [EMPTY_ROOT, Default::default()] {
        let _ = p.verify(&root, &key, value.as_ref());
        let _ = p.verify(&root, &key, None);
        let _ = p.verify(&root, &StateKey::from_bytes([0xff; 32]), None);
    }
    if p.siblings().is_empty() {
        let tree: StateTree = p.leaf().into_iter().collect();
        p.verify(&tree.root(), &key, value.as_ref())
            .expect("a proof without siblings verifies against its own one-leaf tree");
    }
}

/// Snapshot chunks: round trip; adding one to an import of its own root and height never
/// panics (so the proof is checked in full), and a chunk accepted as a whole snapshot gives a
/// state with exactly that root.
pub fn snapshot_chunk(data: &[u8]) {
    let Some(c) = round_trip::<SnapshotChunk>(data) else {
        return;
    };
    let mut import = SnapshotImport::<AccessState>::new(c.height(), c.root());
    match import.add(&c) {
        Ok(()) if import.is_complete() => {
            let state = import.finish().expect("a complete import finishes");
            assert_eq!(state.root(), c.root());
        }
        Ok(()) => assert_eq!(import.chunks(), 1),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(import.chunks(), 0, "a refused chunk changes nothing");
        }
    }
}

/// Pseudonym contexts: round trip; deriving a pseudonym for any decoded context never panics.
pub fn pseudonym_context(data: &[u8]) {
    let Some(c) = round_trip::<Context>(data) else {
        return;
    };
    assert_eq!(c.encode(), data);
    let tree = PatientSecret::from_bytes([7; 32]).key_tree();
    let key = tree
        .epoch_key(c.epoch)
        .expect("a fresh tree derives every epoch");
    let p = key
        .pseudonym(&c)
        .expect("a key derives its epoch's contexts");
    assert_eq!(key.pseudonym(&c).ok(), Some(p));
    let signing = key
        .signing_key(&c)
        .expect("a key derives its epoch's contexts");
    assert_eq!(signing.context(), &c);
    let _ = signing.pseudonym();
}

/// Link statements: round trip; verification never panics and never accepts a self-link.
pub fn link_statement(data: &[u8]) {
    let Some(s) = round_trip::<LinkStatement>(data) else {
        return;
    };
    assert!(s.links(s.a(), s.b()));
    let verdict = s.verify();
    if verdict.is_ok() {
        assert_ne!(s.a(), s.b());
    }
    assert_eq!(
        s.verify_for(&s.context().recipient).is_ok(),
        verdict.is_ok()
    );
}
