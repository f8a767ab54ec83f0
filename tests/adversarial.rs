//! Adversarial inputs: what a hostile peer or signer can send, each refused with a precise error
//! and without changing the chain (tip, height and state root are compared before and after).
//!
//! Attacks already covered elsewhere are not repeated here: a transaction signed for another
//! chain, a stale nonce, a timestamp two hours ahead and a reorganisation past the limit are in
//! `tests/chain.rs`; non-canonical `S` and weak keys at the transaction level are unit tests of
//! `tx`; the duplicated-last-leaf root is a unit test of `merkle`.

use std::sync::Arc;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use sha2::{Digest as _, Sha512};

use medledger::block::{Block, StructureError};
use medledger::chain::{Chain, ChainBuilder, ChainError, ManualClock};
use medledger::hash::{BlockHash, ChainId, Digest, StateRoot};
use medledger::merkle::merkle_root;
use medledger::pow::{CompactTarget, PowSeal, ProofOfWork, RetargetParams};
use medledger::tx::{self, Keypair, Payload, PublicKey, Signature, Transaction, TxError};

const T0: u64 = 1_750_000_000;

fn engine() -> ProofOfWork {
    ProofOfWork::new(
        RetargetParams::builder()
            .pow_limit(CompactTarget::from_consensus(0x2000_ffff))
            .no_retargeting(true)
            .build()
            .unwrap(),
    )
}

fn new_chain() -> Chain<ProofOfWork> {
    ChainBuilder::new("adversarial", engine())
        .genesis_time(T0)
        .clock(Arc::new(ManualClock::new(T0 + 1_000_000)))
        .build()
        .unwrap()
}

fn record(n: u8) -> Payload {
    Payload::Data {
        record: Digest::from_bytes([n; 32]),
    }
}

fn snapshot(chain: &Chain<ProofOfWork>) -> (BlockHash, u64, StateRoot) {
    (chain.tip(), chain.height(), chain.state().root())
}

/// Re-mines `block` so that its seal is valid again after an edit.
fn remine(chain: &Chain<ProofOfWork>, mut block: Block<PowSeal>) -> Block<PowSeal> {
    let never = std::sync::atomic::AtomicBool::new(false);
    block.header.seal = chain.engine().solve(block.header.clone(), &never).unwrap();
    block
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
