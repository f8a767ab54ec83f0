//! Adversarial inputs: what a hostile peer or signer can send, each refused with a precise error
//! and without changing the chain (tip, height and state root are compared before and after).
//!
//! Attacks already covered elsewhere are not repeated here: a transaction signed for another
//! chain, a stale nonce, a timestamp two hours ahead and a reorganisation past the limit are in
//! `tests/chain.rs`; non-canonical `S` and weak keys at the transaction level are unit tests of
//! `tx`; the duplicated-last-leaf root is a unit test of `merkle`.

#[path = "support/pow.rs"]
mod pow_setup;
use pow_setup::{remine, snapshot};

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use sha2::{Digest as _, Sha512};

use medledger::block::StructureError;
use medledger::hash::{BlockHash, Digest, StateRoot};
use medledger::merkle::merkle_root;
use medledger::pow::{PowSeal, ProofOfWork};
use medledger::tx::{self, Keypair, PublicKey, Signature, TxError};
use medledger::Block;
use medledger::{Chain, ChainBuilder, ChainError};
use medledger::{Payload, Transaction};

const T0: u64 = 1_750_000_000;

fn new_chain() -> Chain<ProofOfWork> {
    pow_setup::builder("adversarial", T0, T0 + 1_000_000)
        .build()
        .unwrap()
}

fn record(n: u8) -> Payload {
    Payload::Data {
        record: Digest::from_bytes([n; 32]),
    }
}

/// Replaces the body of `block` by `txs`, fixing the count and Merkle root, and re-mines it.
fn with_txs(
    chain: &Chain<ProofOfWork>,
    mut block: Block<PowSeal>,
    txs: Vec<Transaction>,
) -> Block<PowSeal> {
    let ids: Vec<_> = txs.iter().map(Transaction::id).collect();
    block.header.tx_root = merkle_root(&ids);
    block.header.tx_count = txs.len() as u32;
    block.txs = txs.try_into().unwrap();
    remine(chain, block)
}

/// Appends `block`, expecting a refusal that leaves the chain exactly as it was.
fn refused(chain: &mut Chain<ProofOfWork>, block: Block<PowSeal>) -> ChainError {
    let before = snapshot(chain);
    let err = chain.append(block).expect_err("the block must be refused");
    assert_eq!(
        snapshot(chain),
        before,
        "a refused block changed the chain: {err}"
    );
    err
}

/// The Ed25519 secret scalar of `Keypair::from_seed(seed)` (RFC 8032: clamped SHA-512 prefix).
fn secret_scalar(seed: &[u8; 32]) -> Scalar {
    let h = Sha512::digest(seed);
    let mut a = [0u8; 32];
    a.copy_from_slice(&h[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

/// The Ed25519 challenge `H(R ‖ A ‖ M) mod L`.
fn challenge(r: &[u8; 32], a: &[u8; 32], m: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(m);
    Scalar::from_hash(h)
}

/// A second signature over `tx`'s body by the same key, with `R` the identity point (small
/// order) and `S = H(R ‖ A ‖ M)·a`: it satisfies the cofactorless verification equation
/// `[S]B = R + [k]A`, so only a check on `R` itself refuses it. It gives the signer a second
/// transaction id for the same signed content (malleability).
fn identity_r_signature(seed: &[u8; 32], tx: &Transaction) -> Signature {
    let r = EdwardsPoint::identity().compress().to_bytes();
    let a = tx.body.signer.to_bytes();
    let k = challenge(&r, &a, &tx.body.signing_message());
    let s = k * secret_scalar(seed);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(s.as_bytes());
    Signature::from_bytes(sig)
}

#[test]
fn secret_scalar_matches_the_keypair() {
    let seed = [7; 32];
    let a = secret_scalar(&seed);
    assert_eq!(
        (a * ED25519_BASEPOINT_POINT).compress().to_bytes(),
        Keypair::from_seed(&seed).public().to_bytes()
    );
}

#[test]
fn small_order_r_signature_is_refused_everywhere() {
    let mut chain = new_chain();
    let seed = [3; 32];
    let alice = Keypair::from_seed(&seed);
    let honest = Transaction::sign(&alice, chain.chain_id(), 0, record(1));
    let mut forged = honest.clone();
    forged.signature = identity_r_signature(&seed, &honest);
    assert_ne!(forged.id(), honest.id(), "a malleated copy has its own id");
    // Alone: strict verification refuses it.
    assert_eq!(
        forged.clone().verify(),
        Err(TxError::BadSignature(alice.public()))
    );
    // In a batch (the path blocks take), it must be refused too, with its index.
    let err = tx::verify_batch(chain.chain_id(), vec![honest.clone(), forged.clone()]).unwrap_err();
    assert!(
        matches!(&err, TxError::InBatch { index: 1, source } if **source == TxError::BadSignature(alice.public())),
        "{err:?}"
    );
    // In a block: refused, nothing changes.
    let good = chain.mine(vec![honest], T0 + 600).unwrap();
    let bad = with_txs(&chain, good.clone(), vec![forged.clone()]);
    assert!(matches!(
        refused(&mut chain, bad),
        ChainError::Structure(StructureError::Tx(TxError::InBatch { index: 0, .. }))
    ));
    // And a block template refuses it as well.
    assert!(matches!(
        chain.build_template(vec![forged], T0 + 600),
        Err(ChainError::Transaction(TxError::InBatch { index: 0, .. }))
    ));
    chain.append(good).unwrap();
}

#[test]
fn small_order_key_forgery_is_refused_in_a_block() {
    let mut chain = new_chain();
    let good = chain.mine(vec![], T0 + 600).unwrap();
    // Every small-order key: with R the identity and S = 0, the cofactorless equation holds for
    // any message, so a lax verifier would accept this "signature" by nobody.
    for (i, point) in EIGHT_TORSION.iter().enumerate() {
        let key = PublicKey::from_bytes(point.compress().to_bytes());
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&EdwardsPoint::identity().compress().to_bytes());
        let tx = Transaction {
            body: tx::TxBody {
                chain_id: chain.chain_id(),
                signer: key,
                nonce: 0,
                payload: record(i as u8),
            },
            signature: Signature::from_bytes(sig),
        };
        assert_eq!(tx.clone().verify(), Err(TxError::WeakKey(key)));
        let bad = with_txs(&chain, good.clone(), vec![tx]);
        match refused(&mut chain, bad) {
            ChainError::Structure(StructureError::Tx(TxError::InBatch { index: 0, source })) => {
                assert_eq!(*source, TxError::WeakKey(key))
            }
            other => panic!("unexpected {other}"),
        }
    }
    chain.append(good).unwrap();
}

/// Mines `n` blocks on `chain` (appending them) and returns them.
fn grow(
    chain: &mut Chain<ProofOfWork>,
    key: &Keypair,
    nonce: u64,
    n: usize,
    t: u64,
) -> Vec<Block<PowSeal>> {
    (0..n)
        .map(|i| {
            let tx = Transaction::sign(key, chain.chain_id(), nonce + i as u64, record(i as u8));
            let b = chain.mine(vec![tx], t + 600 * i as u64).unwrap();
            chain.append(b.clone()).unwrap();
            b
        })
        .collect()
}

#[test]
fn blocks_built_on_an_invalidated_branch_are_refused_without_panicking() {
    // Main chain: three blocks by alice.
    let mut chain = new_chain();
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    grow(&mut chain, &alice, 0, 3, T0 + 600);
    let before = snapshot(&chain);

    // A rival node builds on a block `x` whose state root is wrong, then two sub-branches on it.
    let mut rival = new_chain();
    let x = {
        let tx = Transaction::sign(&bob, rival.chain_id(), 0, record(50));
        let mut b = rival.mine(vec![tx], T0 + 600).unwrap();
        b.header.state_root = StateRoot::from_bytes([9; 32]);
        remine(&rival, b)
    };
    // The rival's children of `x` need `x` applied, so build them on a chain that accepted an
    // honest twin of `x` with the same body, then re-point them at `x`.
    let relink = |rival: &Chain<ProofOfWork>, mut b: Block<PowSeal>, parent: BlockHash| {
        b.header.parent = parent;
        remine(rival, b)
    };
    let honest_x = rival
        .mine(
            vec![Transaction::sign(&bob, rival.chain_id(), 0, record(50))],
            T0 + 600,
        )
        .unwrap();
    rival.append(honest_x.clone()).unwrap();
    let c1 = rival.mine(vec![], T0 + 1200).unwrap();
    let c2 = rival.mine(vec![], T0 + 1201).unwrap();
    let c1 = relink(&rival, c1, x.hash());
    let c2 = relink(&rival, c2, x.hash());
    let mut c1b = rival.mine(vec![], T0 + 1800).unwrap();
    c1b.header.height = 3;
    let c1b = relink(&rival, c1b, c1.hash());
    let mut c1c = c1b.clone();
    c1c.header.height = 4;
    c1c.header.timestamp = T0 + 2400;
    let c1c = relink(&rival, c1c, c1b.hash());

    // `x`, `c1`, `c2` and `c1b` are not heavier: stored as side branches (not yet executed).
    for b in [&x, &c1, &c2, &c1b] {
        assert!(chain.append(b.clone()).unwrap().is_side_branch());
    }
    // `c1c` makes the branch heavier: the reorganisation executes `x`, which fails.
    let err = chain.append(c1c).unwrap_err();
    assert!(matches!(err, ChainError::StateRoot { .. }), "{err}");
    assert_eq!(snapshot(&chain), before);

    // `c2` descends from the invalid `x` too. A block on it, then a heavier one, must be refused
    // as known-invalid (not walk into the forgotten `x` and panic).
    let mut d = c1b.clone();
    d.header.timestamp = T0 + 1801;
    let d = relink(&rival, d, c2.hash());
    let mut e = d.clone();
    e.header.height = 4;
    e.header.timestamp = T0 + 2401;
    let e = relink(&rival, e, d.hash());
    let before = snapshot(&chain);
    let err = chain.append(d).unwrap_err();
    assert!(matches!(err, ChainError::KnownInvalid(_)), "{err}");
    // `d` was refused, so `e`'s parent is unknown.
    let err = chain.append(e).unwrap_err();
    assert!(matches!(err, ChainError::UnknownParent(_)), "{err}");
    assert_eq!(snapshot(&chain), before);
    assert_eq!(chain.replay_state().unwrap().root(), chain.state().root());
}

#[test]
fn non_canonical_s_is_refused_in_a_block() {
    let mut chain = new_chain();
    let alice = Keypair::from_seed(&[4; 32]);
    let honest = Transaction::sign(&alice, chain.chain_id(), 0, record(1));
    // S + L: the same scalar modulo the group order, so the same equation holds.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut sig = honest.signature.to_bytes();
    let mut carry = 0u16;
    for (s, l) in sig[32..].iter_mut().zip(L) {
        let v = u16::from(*s) + u16::from(l) + carry;
        *s = v as u8;
        carry = v >> 8;
    }
    let mut malleated = honest.clone();
    malleated.signature = Signature::from_bytes(sig);
    assert_ne!(malleated.id(), honest.id());
    let good = chain.mine(vec![honest], T0 + 600).unwrap();
    let bad = with_txs(&chain, good.clone(), vec![malleated]);
    match refused(&mut chain, bad) {
        ChainError::Structure(StructureError::Tx(TxError::InBatch { index: 0, source })) => {
            assert_eq!(*source, TxError::BadSignature(alice.public()))
        }
        other => panic!("unexpected {other}"),
    }
    chain.append(good).unwrap();
}

#[test]
fn an_included_transaction_cannot_be_replayed() {
    let mut chain = new_chain();
    let alice = Keypair::from_seed(&[5; 32]);
    let tx = Transaction::sign(&alice, chain.chain_id(), 0, record(1));
    let b1 = chain.mine(vec![tx.clone()], T0 + 600).unwrap();
    chain.append(b1).unwrap();
    // The very same transaction (same id) in the next block.
    let b2 = chain.mine(vec![], T0 + 1200).unwrap();
    let replay = with_txs(&chain, b2.clone(), vec![tx.clone()]);
    match refused(&mut chain, replay) {
        ChainError::Tx { failure, .. } => {
            assert_eq!(failure.index, 0);
            assert_eq!(failure.tx_id, tx.id());
            assert!(matches!(
                failure.error,
                medledger::state::StateError::BadNonce {
                    expected: 1,
                    found: 0,
                    ..
                }
            ));
        }
        other => panic!("unexpected {other}"),
    }
    // Twice in one block.
    let tx1 = Transaction::sign(&alice, chain.chain_id(), 1, record(2));
    let twice = with_txs(&chain, b2.clone(), vec![tx1.clone(), tx1.clone()]);
    assert!(matches!(
        refused(&mut chain, twice),
        ChainError::Structure(StructureError::DuplicateTx(id)) if id == tx1.id()
    ));
    // A template leaves the replay out.
    let t = chain
        .build_template(vec![tx, tx1.clone()], T0 + 1200)
        .unwrap();
    assert_eq!(t.txs, vec![tx1]);
    assert_eq!(t.rejected.len(), 1);
    chain.append(b2).unwrap();
}

#[test]
fn duplicating_the_last_leaf_is_refused() {
    // CVE-2012-2459: in Bitcoin's tree, [a, b, c] and [a, b, c, c] share a root, so a valid
    // block's header also commits to a body with the last transaction repeated.
    let mut chain = new_chain();
    let alice = Keypair::from_seed(&[6; 32]);
    let txs: Vec<Transaction> = (0..3)
        .map(|n| Transaction::sign(&alice, chain.chain_id(), n, record(n as u8)))
        .collect();
    let good = chain.mine(txs.clone(), T0 + 600).unwrap();
    let mut doubled = txs.clone();
    doubled.push(txs[2].clone());
    let ids: Vec<_> = doubled.iter().map(Transaction::id).collect();
    assert_ne!(merkle_root(&ids), good.header.tx_root);

    // The header of the good block over the doubled body: the count gives it away first...
    let mut b = good.clone();
    b.txs = doubled.clone().try_into().unwrap();
    assert!(matches!(
        refused(&mut chain, b.clone()),
        ChainError::Structure(StructureError::TxCount { header: 3, body: 4 })
    ));
    // ...and with the count raised, the root differs.
    b.header.tx_count = 4;
    let b = remine(&chain, b);
    assert!(matches!(
        refused(&mut chain, b),
        ChainError::Structure(StructureError::MerkleRoot { .. })
    ));
    // With its own root, the repeated transaction is refused.
    let b = with_txs(&chain, good.clone(), doubled);
    assert!(matches!(
        refused(&mut chain, b),
        ChainError::Structure(StructureError::DuplicateTx(id)) if id == txs[2].id()
    ));
    chain.append(good).unwrap();
}

/// A block whose seal fails is refused on the seal, before a single signature of its body is
/// checked: otherwise each refusal of a large bogus block would cost the attacker nothing and
/// the node thousands of signature checks. Then the Merkle root comes before the signatures.
#[test]
fn a_bad_seal_is_refused_before_any_signature_is_checked() {
    use medledger::consensus::{Consensus, ConsensusError};
    const N: u64 = 4096;
    let mut chain = new_chain();
    let alice = Keypair::from_seed(&[8; 32]);
    let mut txs: Vec<Transaction> = (0..N)
        .map(|n| Transaction::sign(&alice, chain.chain_id(), n, record(n as u8)))
        .collect();
    // The last transaction's signature is forged as well.
    let mut sig = txs[N as usize - 1].signature.to_bytes();
    sig[40] ^= 1;
    txs[N as usize - 1].signature = Signature::from_bytes(sig);
    let good = chain.mine(vec![], T0 + 600).unwrap();
    let mut bad = with_txs(&chain, good.clone(), txs);
    // A nonce whose hash misses the target.
    let now = T0 + 1_000_000;
    while !matches!(
        chain
            .engine()
            .verify_header(&bad.header, &chain.tip_ancestors(), now),
        Err(ConsensusError::InsufficientWork { .. })
    ) {
        bad.header.seal.nonce = bad.header.seal.nonce.wrapping_add(1);
    }
    let seal_first = |e: &ChainError| {
        matches!(
            e,
            ChainError::Consensus(ConsensusError::InsufficientWork { .. })
        )
    };
    let err = chain.check_block(&bad).unwrap_err();
    assert!(seal_first(&err), "{err}");
    let err = refused(&mut chain, bad.clone());
    assert!(seal_first(&err), "{err}");
    // With a valid seal, a bogus Merkle root is found before the forged signature...
    let mut bogus_root = bad.clone();
    bogus_root.header.tx_root = good.header.tx_root;
    let bogus_root = remine(&chain, bogus_root);
    assert!(matches!(
        refused(&mut chain, bogus_root),
        ChainError::Structure(StructureError::MerkleRoot { .. })
    ));
    // ...and with its root right, the forged signature is found, by its index.
    let bad = remine(&chain, bad);
    assert!(matches!(
        chain.check_block(&bad),
        Err(ChainError::Structure(StructureError::Tx(TxError::InBatch { index, .. }))) if index == N as usize - 1
    ));
    assert!(matches!(
        refused(&mut chain, bad),
        ChainError::Structure(StructureError::Tx(TxError::InBatch { index, .. })) if index == N as usize - 1
    ));
    // A good block passes the check without being added, then appends.
    chain.check_block(&good).unwrap();
    assert_eq!(chain.height(), 0);
    chain.append(good).unwrap();
}

#[test]
fn the_latest_possible_timestamp_is_refused() {
    let mut chain = new_chain();
    let mut b = chain.mine(vec![], T0 + 600).unwrap();
    b.header.timestamp = u64::MAX;
    let b = remine(&chain, b);
    assert!(matches!(
        refused(&mut chain, b),
        ChainError::Consensus(medledger::consensus::ConsensusError::TimestampTooNew {
            found: u64::MAX,
            ..
        })
    ));
}

#[test]
fn oversize_input_is_refused_at_every_layer() {
    use medledger::block::{Header, MAX_BLOCK_LEN, MAX_BLOCK_TXS, MAX_HEADER_LEN};
    use medledger::codec::{self, DecodeError};

    let mut chain = new_chain();
    let before = snapshot(&chain);
    let good = chain.mine(vec![], T0 + 600).unwrap();

    // Block bytes over the limit: refused before parsing.
    let mut bytes = good.encode();
    bytes.resize(MAX_BLOCK_LEN + 1, 0);
    assert!(matches!(
        chain.append_bytes(&bytes),
        Err(ChainError::Decode(DecodeError::InputTooLarge { len, max, .. }))
            if len == MAX_BLOCK_LEN + 1 && max == MAX_BLOCK_LEN
    ));
    // A transaction count over the limit: refused on the count, before any transaction.
    let mut bytes = codec::encode(&good.header);
    let mut n = MAX_BLOCK_TXS + 1;
    while n >= 0x80 {
        bytes.push((n as u8) | 0x80);
        n >>= 7;
    }
    bytes.push(n as u8);
    bytes.resize(bytes.len() + MAX_BLOCK_TXS + 1, 0);
    assert!(matches!(
        chain.append_bytes(&bytes),
        Err(ChainError::Decode(DecodeError::CountTooLarge { len, .. })) if len == MAX_BLOCK_TXS + 1
    ));
    // A header, a transaction and proofs over their limits.
    let mut h = codec::encode(&good.header);
    h.resize(MAX_HEADER_LEN + 1, 0);
    assert!(matches!(
        codec::decode::<Header<PowSeal>>(&h),
        Err(DecodeError::InputTooLarge { .. })
    ));
    let alice = Keypair::from_seed(&[8; 32]);
    let mut t = Transaction::sign(&alice, chain.chain_id(), 0, record(1)).encode();
    t.resize(tx::MAX_TX_LEN + 1, 0);
    assert!(matches!(
        Transaction::decode(&t),
        Err(DecodeError::InputTooLarge { .. })
    ));
    fn too_large<T: medledger::codec::Canonical + std::fmt::Debug>() {
        let bytes = vec![1u8; T::MAX_ENCODED_LEN + 1];
        assert!(
            matches!(
                codec::decode::<T>(&bytes),
                Err(DecodeError::InputTooLarge { .. })
            ),
            "{}",
            T::NAME
        );
    }
    too_large::<medledger::merkle::MerkleProof>();
    too_large::<medledger::smt::StateProof>();
    too_large::<medledger::pseudonym::Context>();
    too_large::<medledger::pseudonym::LinkStatement>();
    assert_eq!(snapshot(&chain), before);
    chain.append(good).unwrap();
}

/// A consensus engine whose seal is a byte string of any length up to twice the header limit,
/// and which accepts every header: only the chain's own size check stands in the way.
struct BigSeal;

type Bytes = medledger::codec::BoundedBytes<{ 2 * medledger::block::MAX_HEADER_LEN }>;

impl medledger::consensus::Consensus for BigSeal {
    type Seal = Bytes;
    fn name(&self) -> &'static str {
        "big seal"
    }
    fn genesis_seal(&self) -> Bytes {
        Bytes::default()
    }
    fn verify_header(
        &self,
        _: &medledger::block::Header<Bytes>,
        _: &dyn medledger::consensus::Ancestors<Bytes>,
        _: u64,
    ) -> Result<medledger::consensus::Work, medledger::consensus::ConsensusError> {
        Ok(medledger::consensus::Work::from_u64(1))
    }
}

#[test]
fn an_oversize_block_built_in_memory_is_refused() {
    use medledger::block::{Header, HEADER_VERSION, MAX_HEADER_LEN};
    let mut chain = ChainBuilder::new("big seal", BigSeal).build().unwrap();
    let before = (chain.tip(), chain.height(), chain.state().root());
    let block = Block {
        header: Header {
            version: HEADER_VERSION,
            height: 1,
            parent: chain.tip(),
            tx_root: merkle_root(&[]),
            tx_count: 0,
            state_root: chain.state().root(),
            timestamp: 1,
            seal: Bytes::try_from(vec![7; MAX_HEADER_LEN]).unwrap(),
        },
        txs: Default::default(),
    };
    // It could never be read back from the store: refused, nothing changes.
    match chain.append(block.clone()) {
        Err(ChainError::Structure(StructureError::TooLarge { what, max, .. })) => {
            assert_eq!((what, max), ("block header", MAX_HEADER_LEN))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!((chain.tip(), chain.height(), chain.state().root()), before);
    // A seal that fits goes in.
    let mut small = block;
    small.header.seal = Bytes::try_from(vec![7; 1024]).unwrap();
    chain.append(small).unwrap();
    assert_eq!(chain.height(), 1);
}

/// A seal in two parts, like a certificate: the decided `value` the block hash commits to, and a
/// `witness` it leaves out (as a quorum of signatures would be). The engine accepts a witness
/// only if it is `value`'s byte repeated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Certified {
    value: u8,
    witness: [u8; 4],
}

impl medledger::block::Seal for Certified {
    fn encode_committed(&self, out: &mut Vec<u8>) {
        medledger::codec::encode_into(&self.value, out);
    }
}

struct Certifying;

impl medledger::consensus::Consensus for Certifying {
    type Seal = Certified;
    fn name(&self) -> &'static str {
        "certifying"
    }
    fn genesis_seal(&self) -> Certified {
        Certified {
            value: 0,
            witness: [0; 4],
        }
    }
    fn verify_header(
        &self,
        header: &medledger::block::Header<Certified>,
        _: &dyn medledger::consensus::Ancestors<Certified>,
        _: u64,
    ) -> Result<medledger::consensus::Work, medledger::consensus::ConsensusError> {
        let seal = &header.seal;
        if seal.witness[0] != seal.value {
            return Err(medledger::consensus::ConsensusError::BadSeal(
                "witness does not certify the value".into(),
            ));
        }
        Ok(medledger::consensus::Work::from_u64(1))
    }
}

#[test]
fn a_block_whose_certificate_fails_leaves_its_hash_free_for_the_genuine_copy() {
    use medledger::block::{Header, HEADER_VERSION};
    let mut chain = ChainBuilder::new("certifying", Certifying).build().unwrap();
    let block = |witness: [u8; 4]| Block {
        header: Header {
            version: HEADER_VERSION,
            height: 1,
            parent: chain.tip(),
            tx_root: merkle_root(&[]),
            tx_count: 0,
            state_root: chain.state().root(),
            timestamp: 1,
            seal: Certified { value: 9, witness },
        },
        txs: Default::default(),
    };
    let (forged, genuine, other_copy) = (block([1; 4]), block([9; 4]), block([9, 0, 0, 0]));
    // The witness is outside the hash: all three are one block by id.
    assert_eq!(forged.hash(), genuine.hash());
    let mut changed = genuine.clone();
    changed.header.seal.value = 8;
    assert_ne!(changed.hash(), genuine.hash(), "the value is committed");
    // A copy whose certificate fails arrives first: refused, and the hash is not condemned.
    assert!(matches!(
        chain.append(forged),
        Err(ChainError::Consensus(_))
    ));
    assert_eq!(chain.height(), 0);
    chain.append(genuine.clone()).unwrap();
    assert_eq!(chain.tip(), genuine.hash());
    // Another certificate of the same block is the same block.
    assert!(matches!(
        chain.append(other_copy),
        Err(ChainError::AlreadyKnown(h)) if h == genuine.hash()
    ));
}
