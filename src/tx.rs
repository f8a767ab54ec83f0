//! Signed transactions.
//!
//! A [`Transaction`] is an envelope `{chain id, signer key, nonce, payload}` ([`TxBody`]) plus an
//! Ed25519 signature over it. The signature covers the chain id, so a transaction signed for one
//! chain is invalid on every other; the per-account nonce, checked by the chain state, stops
//! replays within a chain. Weak (small-order) public keys and non-canonical signatures are refused.
//!
//! The payload is the application's: this module signs, encodes and verifies envelopes around
//! any [`AppPayload`] and never looks inside. The MedRec application's payload is
//! [`access::Payload`](crate::access::Payload).
//!
//! ```
//! use medledger::tx::{Keypair, Transaction};
//! use medledger::hash::{ChainId, Digest};
//! use medledger::Payload;
//!
//! let alice = Keypair::generate();
//! let chain = ChainId::from_bytes([7; 32]);
//! let tx = Transaction::sign(&alice, chain, 0, Payload::Data { record: Digest::from_bytes([1; 32]) });
//! let verified = tx.verify().unwrap();
//! assert_eq!(verified.signer(), alice.public());
//! ```

use core::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, Canonical, DecodeError};
use crate::hash::{domain, hash_newtype, AccountId, ChainId, TxId};

hash_newtype! {
    /// An Ed25519 public key, as its 32-byte compressed encoding.
    ///
    /// Whether the bytes are a valid, non-weak key is checked when a transaction is verified.
    PublicKey
}

impl PublicKey {
    /// The account this key opens: an account's id is the key it was first seen with.
    pub const fn account(self) -> AccountId {
        AccountId::from_bytes(self.0)
    }

    /// Decompresses the key, refusing invalid encodings and weak (small-order) keys.
    ///
    /// # Errors
    ///
    /// [`TxError::InvalidKey`] or [`TxError::WeakKey`].
    pub fn verifying_key(&self) -> Result<VerifyingKey, TxError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| TxError::InvalidKey(*self))?;
        if key.is_weak() {
            return Err(TxError::WeakKey(*self));
        }
        Ok(key)
    }
}

/// An Ed25519 signature (64 bytes: `R ‖ S`).
///
/// Serialised as 64 raw bytes in binary formats (the canonical encoding) and as 128 lower-case
/// hex digits in human-readable ones such as JSON; `Display` and `FromStr` use the same hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_newtype_struct("Signature", &Sig64(&self.0))
        }
    }
}

/// The 64 signature bytes as a tuple (what serde derives for an array).
struct Sig64<'a>(&'a [u8; 64]);

impl Serialize for Sig64<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hash::byte_array::serialize(self.0, s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hash::deserialize_hex_or_bytes::<D, 64>(d, "Signature").map(Self)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::hash::write_hex(f, &self.0)
    }
}

impl core::str::FromStr for Signature {
    type Err = crate::hash::HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::hash::from_hex::<64>(s).map(Self)
    }
}

impl Signature {
    /// Wraps raw bytes (validity is checked on verification).
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }
    /// The raw bytes.
    pub const fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(")?;
        crate::hash::write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// An Ed25519 signing key. Zeroized on drop; `Debug` never prints the secret.
///
/// # Keeping a key across restarts
///
/// [`to_secret_bytes`](Self::to_secret_bytes) exports the 32-byte secret (wiped from memory
/// when dropped) and [`from_secret_bytes`](Self::from_secret_bytes) imports it. The crate does
/// no I/O; a simple way to keep a key is a file only its owner can read (mode `0600` on Unix),
/// created exclusively so that an existing key is never overwritten:
///
/// ```no_run
/// # #[cfg(unix)]
/// # fn main() -> std::io::Result<()> {
/// use std::io::{Read, Write};
/// use std::os::unix::fs::OpenOptionsExt;
/// use medledger::tx::Keypair;
///
/// let path = "hospital.key";
/// let key = match std::fs::File::open(path) {
///     Ok(mut file) => {
///         let mut secret = zeroize::Zeroizing::new([0u8; 32]);
///         file.read_exact(&mut secret[..])?;
///         Keypair::from_secret_bytes(&secret)
///     }
///     Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
///         let key = Keypair::generate();
///         let mut file = std::fs::OpenOptions::new()
///             .write(true)
///             .create_new(true)
///             .mode(0o600)
///             .open(path)?;
///         file.write_all(key.to_secret_bytes().as_bytes())?;
///         file.sync_all()?;
///         key
///     }
///     Err(e) => return Err(e),
/// };
/// println!("signing as {}", key.account());
/// # Ok(())
/// # }
/// # #[cfg(not(unix))]
/// # fn main() {}
/// ```
///
/// A hardware security module or the operating system's key store are the stronger choices
/// where available: sign there and submit the [`Transaction`].
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand_core::OsRng))
    }
    /// The key with the given 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }
    /// The 32-byte secret (the Ed25519 seed), to keep the key across restarts; the copy is
    /// wiped from memory when dropped. Whoever reads it can sign as this key: store it where
    /// only its owner can read it (see the [type documentation](Self)).
    pub fn to_secret_bytes(&self) -> SecretBytes {
        SecretBytes(zeroize::Zeroizing::new(self.0.to_bytes()))
    }
    /// The key whose secret [`to_secret_bytes`](Self::to_secret_bytes) exported.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }
    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::from_bytes(self.0.verifying_key().to_bytes())
    }
    /// The account this key opens (see [`PublicKey::account`]).
    pub fn account(&self) -> AccountId {
        self.public().account()
    }
    /// Signs `message` (already domain-separated by the caller).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

/// A signing key's exported 32-byte secret ([`Keypair::to_secret_bytes`]): wiped from memory
/// when dropped, never printed by `Debug`.
pub struct SecretBytes(zeroize::Zeroizing<[u8; 32]>);

impl SecretBytes {
    /// The secret bytes, to write where only the key's owner can read them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({} <secret redacted>)", self.public())
    }
}

/// The largest encoded transaction accepted, in bytes.
pub const MAX_TX_LEN: usize = 16 * 1024;

/// What an application carries in its transactions: any value with a canonical serde encoding.
///
/// An application names its payload type in
/// [`Application::Payload`](crate::app::Application::Payload) and implements this trait for it
/// (an empty `impl AppPayload for MyPayload {}` is enough). The two provided methods are how a
/// consensus engine with a validator set (Tendermint) learns, from the block's transactions
/// alone and without reading the application's state, which transactions change its
/// validator set and which carry evidence of a validator's misbehaviour; payloads that do
/// neither keep the defaults.
pub trait AppPayload:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync + 'static
{
    /// The validator whose voting power this payload sets, and the power (0 removes it), if
    /// it is a validator change. The application must accept such a payload only from whoever
    /// may change the validator set (MedRec: its authorities); the engine then applies it from
    /// the next height on.
    fn validator_change(&self) -> Option<(PublicKey, u64)> {
        None
    }

    /// The evidence of misbehaviour this payload records, if any, as the engine checks it.
    fn evidence(&self) -> Option<EvidenceClaim<'_>> {
        None
    }

    /// A payload recording `claim`, if the application records evidence (the Tendermint engine
    /// uses it to put the evidence it gathers on chain).
    fn record_evidence(claim: EvidenceClaim<'_>) -> Option<Self> {
        let _ = claim;
        None
    }
}

/// Evidence of a validator's misbehaviour carried by a transaction: who misbehaved, which
/// offence (an engine-defined id, so that an offence is recorded once however many pieces of
/// evidence prove it) and the engine's encoding of the proof. The consensus engine checks that
/// the proof verifies and names this offender and offence; the application keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvidenceClaim<'a> {
    /// The validator the evidence convicts.
    pub offender: PublicKey,
    /// The offence's id.
    pub offence: crate::hash::Digest,
    /// The proof, in the engine's canonical encoding.
    pub evidence: &'a [u8],
}

impl AppPayload for crate::hash::Digest {}
impl AppPayload for Vec<u8> {}
impl AppPayload for u64 {}
impl AppPayload for String {}
impl AppPayload for () {}

/// The signed part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "P: AppPayload")]
pub struct TxBody<P> {
    /// The chain this transaction is for.
    pub chain_id: ChainId,
    /// The key that signs; it must be the current key of the account it acts for.
    pub signer: PublicKey,
    /// The signer account's next nonce: 0 for its first transaction, then one more each time.
    pub nonce: u64,
    /// What the transaction does.
    pub payload: P,
}

/// Prefix of every transaction signing message, so that no other signed object of the crate can
/// be mistaken for a transaction.
const SIGNING_CONTEXT: &[u8] = b"medledger/tx/v1:";

impl<P: AppPayload> TxBody<P> {
    /// The exact bytes the signature covers.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + 128);
        m.extend_from_slice(SIGNING_CONTEXT);
        codec::encode_body_into(self, &mut m);
        m
    }
}

/// A transaction as received: signature not yet checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "P: AppPayload")]
pub struct Transaction<P> {
    /// The signed content.
    pub body: TxBody<P>,
    /// The signer's signature over [`TxBody::signing_message`].
    pub signature: Signature,
}

impl<P: AppPayload> Canonical for Transaction<P> {
    const NAME: &'static str = "transaction";
    const MAX_ENCODED_LEN: usize = MAX_TX_LEN;
}

impl<P: AppPayload> Transaction<P> {
    /// Signs `payload` as `keypair`'s transaction number `nonce` on `chain_id`.
    pub fn sign(keypair: &Keypair, chain_id: ChainId, nonce: u64, payload: P) -> Self {
        let body = TxBody {
            chain_id,
            signer: keypair.public(),
            nonce,
            payload,
        };
        let signature = keypair.sign(&body.signing_message());
        Self { body, signature }
    }

    /// Decodes a transaction from its canonical encoding.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the bytes are not a canonical transaction of at most [`MAX_TX_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The transaction id: the hash of the canonical encoding, signature included.
    pub fn id(&self) -> TxId {
        TxId::from_bytes(domain::TX.hash(&self.encode()))
    }

    /// The account the transaction acts for, before any key rotation is taken into account
    /// (the chain state maps rotated keys back to their account).
    pub fn signer(&self) -> PublicKey {
        self.body.signer
    }

    /// Checks the signature strictly (canonical `S`, no weak key, no small-order `R`).
    ///
    /// # Errors
    ///
    /// [`TxError`] naming what is wrong.
    pub fn verify(self) -> Result<VerifiedTx<P>, TxError> {
        let id = self.id();
        self.verify_with_id(id, &KeyCache::new(0))
    }

    /// [`verify`](Self::verify) for a transaction whose `id` the caller computed already, with
    /// the signer's decompressed key from (and added to) `keys`.
    pub(crate) fn verify_with_id(
        self,
        id: TxId,
        keys: &KeyCache,
    ) -> Result<VerifiedTx<P>, TxError> {
        if keys.is_verified(&id) {
            return Ok(VerifiedTx { tx: self, id });
        }
        let key = keys.verifying_key(&self.body.signer)?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature.0);
        key.verify_strict(&self.body.signing_message(), &sig)
            .map_err(|_| TxError::BadSignature(self.body.signer))?;
        keys.remember([id]);
        Ok(VerifiedTx { tx: self, id })
    }
}

/// A transaction whose signature has been checked, with its id computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx<P> {
    tx: Transaction<P>,
    id: TxId,
}

impl<P: AppPayload> VerifiedTx<P> {
    /// Wraps a transaction whose signature was checked (or that never leaves the crate, such as
    /// an unsigned dry run).
    pub(crate) fn new_unchecked(tx: Transaction<P>) -> Self {
        let id = tx.id();
        Self { tx, id }
    }
    /// The transaction id.
    pub fn id(&self) -> TxId {
        self.id
    }
    /// The signing key.
    pub fn signer(&self) -> PublicKey {
        self.tx.body.signer
    }
    /// The signed content.
    pub fn body(&self) -> &TxBody<P> {
        &self.tx.body
    }
    /// The transaction.
    pub fn transaction(&self) -> &Transaction<P> {
        &self.tx
    }
    /// Unwraps the transaction.
    pub fn into_transaction(self) -> Transaction<P> {
        self.tx
    }
}

/// Why a transaction is invalid on its own (before any state is consulted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The signer bytes are not a valid Ed25519 point.
    #[error("signer {0} is not a valid ed25519 public key")]
    InvalidKey(PublicKey),
    /// The signer key has small order: anyone could forge its signatures.
    #[error("signer {0} is a weak (small-order) ed25519 key")]
    WeakKey(PublicKey),
    /// The signature does not verify (or is non-canonical).
    #[error("signature by {0} does not verify")]
    BadSignature(PublicKey),
    /// The transaction is for another chain.
    #[error("transaction is for chain {found}, not {expected}")]
    WrongChain {
        /// This chain's id.
        expected: ChainId,
        /// The id the transaction was signed for.
        found: ChainId,
    },
    /// One transaction of a batch is invalid.
    #[error("transaction {index} of the batch: {source}")]
    InBatch {
        /// Its position in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<TxError>,
    },
}

/// Decompressed public keys, so that an account that signs often is decompressed once, and
/// the ids of transactions whose signatures were checked, so that a transaction is verified
/// once per process: on admission to the pool, not again when it is put in a block, when a
/// proposed block is checked or when the decided block is appended.
///
/// Decompressing an Ed25519 key costs about a fifth of verifying a signature in a batch; a
/// chain keeps one cache for all the blocks it validates. Weak or invalid keys are never
/// cached, nor the ids of transactions that failed. A transaction id is the hash of the whole
/// canonical encoding, signature included, so a transaction whose id is remembered has exactly
/// the bytes that were verified: changing any byte (another signature, another body) changes
/// the id, and that transaction is checked in full. When full, each part is emptied (the cache
/// is bounded, never a source of truth).
#[derive(Debug)]
pub struct KeyCache {
    map: std::sync::RwLock<std::collections::HashMap<PublicKey, VerifyingKey>>,
    verified: std::sync::RwLock<std::collections::HashSet<TxId>>,
    capacity: usize,
}

impl KeyCache {
    /// A cache holding at most `capacity` keys and `capacity` ids of verified transactions
    /// (0: no cache at all).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: std::sync::RwLock::new(std::collections::HashMap::new()),
            verified: std::sync::RwLock::new(std::collections::HashSet::new()),
            capacity,
        }
    }

    /// Whether the transaction with `id` passed a signature check through this cache (and is
    /// still remembered).
    pub fn is_verified(&self, id: &TxId) -> bool {
        self.capacity > 0 && self.verified.read().is_ok_and(|v| v.contains(id))
    }

    /// Remembers that the transactions with `ids` passed their signature checks.
    fn remember(&self, ids: impl IntoIterator<Item = TxId>) {
        if self.capacity == 0 {
            return;
        }
        if let Ok(mut v) = self.verified.write() {
            for id in ids {
                if v.len() >= self.capacity {
                    v.clear();
                }
                v.insert(id);
            }
        }
    }

    /// The decompressed key (see [`PublicKey::verifying_key`]), from the cache if present.
    ///
    /// # Errors
    ///
    /// [`TxError::InvalidKey`] or [`TxError::WeakKey`].
    pub fn verifying_key(&self, key: &PublicKey) -> Result<VerifyingKey, TxError> {
        if self.capacity == 0 {
            return key.verifying_key();
        }
        if let Some(k) = self.map.read().ok().and_then(|m| m.get(key).copied()) {
            return Ok(k);
        }
        let k = key.verifying_key()?;
        if let Ok(mut m) = self.map.write() {
            if m.len() >= self.capacity {
                m.clear();
            }
            m.insert(*key, k);
        }
        Ok(k)
    }
}

impl Default for KeyCache {
    /// A cache of 65,536 keys.
    fn default() -> Self {
        Self::new(1 << 16)
    }
}

/// Signatures checked per `verify_batch` call: a fixed chunking keeps the batch equation, and
/// so every verdict, independent of the number of threads.
pub const BATCH_CHUNK: usize = 64;

/// Verifies many transactions at once with Ed25519 batch verification (in parallel with the
/// `parallel` feature), checking each is for `chain_id`.
///
/// A failing chunk is re-checked one transaction at a time with strict verification, so the
/// error names the first bad transaction.
///
/// # Errors
///
/// [`TxError::InBatch`] with the index of the first invalid transaction.
pub fn verify_batch<P: AppPayload>(
    chain_id: ChainId,
    txs: Vec<Transaction<P>>,
) -> Result<Vec<VerifiedTx<P>>, TxError> {
    verify_batch_cached(chain_id, txs, &KeyCache::new(0))
}

/// As [`verify_batch`], taking decompressed keys from (and adding them to) `cache`.
///
/// # Errors
///
/// [`TxError::InBatch`] with the index of the first invalid transaction.
pub fn verify_batch_cached<P: AppPayload>(
    chain_id: ChainId,
    txs: Vec<Transaction<P>>,
    cache: &KeyCache,
) -> Result<Vec<VerifiedTx<P>>, TxError> {
    verify_batch_inner(
        chain_id,
        txs.into_iter().map(|t| (t, None)).collect(),
        cache,
    )
}

/// As [`verify_batch_cached`], for transactions whose ids the caller has computed already
/// (`ids[i]` is `txs[i].id()`): a block's ids are hashed for its Merkle root before any
/// signature is checked.
pub(crate) fn verify_batch_identified<P: AppPayload>(
    chain_id: ChainId,
    txs: Vec<Transaction<P>>,
    ids: Vec<TxId>,
    cache: &KeyCache,
) -> Result<Vec<VerifiedTx<P>>, TxError> {
    debug_assert_eq!(txs.len(), ids.len());
    let items = txs.into_iter().zip(ids.into_iter().map(Some)).collect();
    verify_batch_inner(chain_id, items, cache)
}

/// As [`verify_batch_identified`], answering for each transaction: a bad one refuses only
/// itself (for a pool that admits a burst from many clients, each with its own answer).
pub(crate) fn verify_each_identified<P: AppPayload>(
    chain_id: ChainId,
    items: Vec<(Transaction<P>, TxId)>,
    cache: &KeyCache,
) -> Vec<Result<VerifiedTx<P>, TxError>> {
    let items = items.into_iter().map(|(tx, id)| (tx, Some(id))).collect();
    verify_each(chain_id, items, cache)
}

/// A transaction to verify, with its id if already known.
type Item<P> = (Transaction<P>, Option<TxId>);

fn verify_batch_inner<P: AppPayload>(
    chain_id: ChainId,
    items: Vec<Item<P>>,
    cache: &KeyCache,
) -> Result<Vec<VerifiedTx<P>>, TxError> {
    verify_each(chain_id, items, cache)
        .into_iter()
        .enumerate()
        .map(|(index, verdict)| {
            verdict.map_err(|e| TxError::InBatch {
                index,
                source: Box::new(e),
            })
        })
        .collect()
}

/// Each transaction's verdict, the signatures checked in chunks of [`BATCH_CHUNK`] (in
/// parallel with the `parallel` feature).
fn verify_each<P: AppPayload>(
    chain_id: ChainId,
    items: Vec<Item<P>>,
    cache: &KeyCache,
) -> Vec<Result<VerifiedTx<P>, TxError>> {
    let chunks: Vec<Vec<Item<P>>> = {
        let mut out = Vec::with_capacity(items.len().div_ceil(BATCH_CHUNK));
        let mut it = items.into_iter().peekable();
        while it.peek().is_some() {
            out.push(it.by_ref().take(BATCH_CHUNK).collect());
        }
        out
    };
    let check = |chunk: Vec<Item<P>>| verify_chunk(chain_id, chunk, cache);
    #[cfg(feature = "parallel")]
    let results: Vec<Vec<Result<VerifiedTx<P>, TxError>>> = {
        use rayon::prelude::*;
        chunks.into_par_iter().map(check).collect()
    };
    #[cfg(not(feature = "parallel"))]
    let results: Vec<Vec<Result<VerifiedTx<P>, TxError>>> = chunks.into_iter().map(check).collect();
    results.into_iter().flatten().collect()
}

/// The encodings of the y-coordinates of the eight small-order Ed25519 points, sign bit clear,
/// including the non-canonical ones (`y + p` for `y < 19`) that decompression accepts. With either
/// sign bit, these 14 encodings are exactly the byte strings that decompress to a point of small
/// order (a unit test checks this against the curve's 8-torsion).
const SMALL_ORDER_Y: [[u8; 32]; 7] = {
    const fn le(first: u8, middle: u8, last: u8) -> [u8; 32] {
        let mut b = [middle; 32];
        b[0] = first;
        b[31] = last;
        b
    }
    [
        // The identity (0, 1), and 1 + p.
        le(0x01, 0x00, 0x00),
        le(0xee, 0xff, 0x7f),
        // The point of order 2, (0, -1): y = p - 1.
        le(0xec, 0xff, 0x7f),
        // The points of order 4, (±sqrt(-1), 0): y = 0, and y = p.
        le(0x00, 0x00, 0x00),
        le(0xed, 0xff, 0x7f),
        // The points of order 8.
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ],
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef,
            0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88,
            0x6d, 0x53, 0xfc, 0x05,
        ],
    ]
};

/// Whether the signature's `R` is an encoding of a small-order point. Strict verification refuses
/// such signatures; batch verification does not, so every batch path checks this first.
pub(crate) fn has_small_order_r(sig: &Signature) -> bool {
    let mut y = [0u8; 32];
    y.copy_from_slice(&sig.0[..32]);
    y[31] &= 0x7f;
    SMALL_ORDER_Y.contains(&y)
}

/// Each transaction's verdict: for this chain, its key valid, its signature good. The
/// signatures this cache has not seen verified are checked with one batch equation; if it
/// fails, each is checked alone with strict verification, so only the bad ones are refused.
fn verify_chunk<P: AppPayload>(
    chain_id: ChainId,
    chunk: Vec<Item<P>>,
    cache: &KeyCache,
) -> Vec<Result<VerifiedTx<P>, TxError>> {
    let chunk: Vec<VerifiedTx<P>> = chunk
        .into_iter()
        .map(|(tx, id)| match id {
            Some(id) => VerifiedTx { tx, id },
            None => VerifiedTx::new_unchecked(tx),
        })
        .collect();
    let mut refused: Vec<Option<TxError>> = vec![None; chunk.len()];
    // Positions of the transactions whose signatures go into the batch equation.
    let mut unseen = Vec::with_capacity(chunk.len());
    let mut keys = Vec::with_capacity(chunk.len());
    let mut messages = Vec::with_capacity(chunk.len());
    let mut sigs = Vec::with_capacity(chunk.len());
    for (i, v) in chunk.iter().enumerate() {
        let tx = &v.tx;
        if tx.body.chain_id != chain_id {
            refused[i] = Some(TxError::WrongChain {
                expected: chain_id,
                found: tx.body.chain_id,
            });
            continue;
        }
        if cache.is_verified(&v.id) {
            continue;
        }
        let key = match cache.verifying_key(&tx.body.signer) {
            Ok(key) => key,
            Err(e) => {
                refused[i] = Some(e);
                continue;
            }
        };
        // Batch verification checks the cofactorless equation only, which a signature with a
        // small-order `R` can satisfy (`R` = identity, `S = H(R ‖ A ‖ M)·a`): the signer would
        // get a second, valid-looking signature and so a second transaction id for the same
        // content. Strict verification refuses such an `R`; so does this path.
        if has_small_order_r(&tx.signature) {
            refused[i] = Some(TxError::BadSignature(tx.body.signer));
            continue;
        }
        unseen.push(i);
        keys.push(key);
        messages.push(tx.body.signing_message());
        sigs.push(ed25519_dalek::Signature::from_bytes(&tx.signature.0));
    }
    if !unseen.is_empty() {
        let msg_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        if ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys).is_err() {
            for (k, &i) in unseen.iter().enumerate() {
                if keys[k].verify_strict(&messages[k], &sigs[k]).is_err() {
                    refused[i] = Some(TxError::BadSignature(chunk[i].tx.body.signer));
                }
            }
        }
        cache.remember(
            unseen
                .iter()
                .filter(|&&i| refused[i].is_none())
                .map(|&i| chunk[i].id),
        );
    }
    chunk
        .into_iter()
        .zip(refused)
        .map(|(v, refused)| match refused {
            None => Ok(v),
            Some(e) => Err(e),
        })
        .collect()
}

/// A signature over `message` by `Keypair::from_seed(seed)` with `R` the identity point and
/// `S = H(R ‖ A ‖ M)·a`: it satisfies the cofactorless equation `[S]B = R + [k]A`, so batch
/// verification accepts it, while strict verification refuses its small-order `R`.
#[cfg(test)]
pub(crate) fn identity_r_signature(seed: &[u8; 32], message: &[u8]) -> Signature {
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest as _, Sha512};
    let h = Sha512::digest(seed);
    let mut a = [0u8; 32];
    a.copy_from_slice(&h[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    let mut r = [0u8; 32];
    r[0] = 1;
    let mut k = Sha512::new();
    k.update(r);
    k.update(Keypair::from_seed(seed).public().as_bytes());
    k.update(message);
    let s = Scalar::from_hash(k) * Scalar::from_bytes_mod_order(a);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(s.as_bytes());
    Signature(sig)
}

/// A payload for the crate's unit tests, encoded as MedRec's `Payload::Data` is.
#[cfg(test)]
pub(crate) mod testing {
    use serde::{Deserialize, Serialize};

    use crate::hash::Digest;

    /// An application payload of the usual shape: an enum of operations.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub(crate) enum Payload {
        /// Anchors a record hash.
        Data {
            /// The hash.
            record: Digest,
        },
    }

    impl super::AppPayload for Payload {}

    /// A transaction carrying the test payload.
    pub(crate) type Transaction = super::Transaction<Payload>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use super::testing::{Payload, Transaction};
    use crate::hash::Digest;

    fn chain() -> ChainId {
        ChainId::from_bytes([9; 32])
    }

    fn data(n: u8) -> Payload {
        Payload::Data {
            record: Digest::from_bytes([n; 32]),
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = Keypair::from_seed(&[1; 32]);
        let tx = Transaction::sign(&k, chain(), 3, data(1));
        assert!(tx.clone().verify().is_ok());
        let mut t = tx.clone();
        t.body.nonce = 4;
        assert_eq!(t.verify(), Err(TxError::BadSignature(k.public())));
        let mut t = tx.clone();
        t.body.chain_id = ChainId::from_bytes([8; 32]);
        assert!(t.verify().is_err(), "signature covers the chain id");
        let mut t = tx;
        t.signature.0[5] ^= 1;
        assert!(t.verify().is_err());
    }

    #[test]
    fn a_cache_remembers_verified_transactions_and_still_checks_any_other_bytes() {
        let cache = KeyCache::default();
        let k = Keypair::from_seed(&[1; 32]);
        let txs: Vec<Transaction> = (0..3)
            .map(|n| Transaction::sign(&k, chain(), n, data(1)))
            .collect();
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        assert!(ids.iter().all(|id| !cache.is_verified(id)));
        verify_batch_cached(chain(), txs.clone(), &cache).unwrap();
        assert!(ids.iter().all(|id| cache.is_verified(id)));
        // The same body under a forged signature: other bytes, another id, checked and refused
        // in a batch and alone, though its twin is remembered.
        let mut forged = txs[1].clone();
        forged.signature.0[40] ^= 1;
        assert!(!cache.is_verified(&forged.id()));
        let err = verify_batch_cached(chain(), vec![txs[0].clone(), forged.clone()], &cache);
        assert!(
            matches!(&err, Err(TxError::InBatch { index: 1, source }) if **source == TxError::BadSignature(k.public())),
            "{err:?}"
        );
        let id = forged.id();
        assert_eq!(
            forged.clone().verify_with_id(id, &cache),
            Err(TxError::BadSignature(k.public()))
        );
        assert!(
            !cache.is_verified(&id),
            "a refused transaction is not remembered"
        );
        // A remembered transaction for another chain is still refused for this one.
        let other = ChainId::from_bytes([8; 32]);
        assert!(matches!(
            verify_batch_cached(other, vec![txs[0].clone()], &cache),
            Err(TxError::InBatch { index: 0, .. })
        ));
        // A cache of capacity 0 remembers nothing.
        let none = KeyCache::new(0);
        verify_batch_cached(chain(), txs.clone(), &none).unwrap();
        assert!(!none.is_verified(&ids[0]));
        // A full cache starts over rather than growing.
        let small = KeyCache::new(2);
        verify_batch_cached(chain(), txs, &small).unwrap();
        assert_eq!(ids.iter().filter(|id| small.is_verified(id)).count(), 1);
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (small order) as a public key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let pk = PublicKey::from_bytes(identity);
        assert_eq!(pk.verifying_key(), Err(TxError::WeakKey(pk)));
        // A y-coordinate that is not on the curve.
        let bad = PublicKey::from_bytes([
            2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0,
        ]);
        assert!(matches!(
            bad.verifying_key(),
            Err(TxError::InvalidKey(_) | TxError::WeakKey(_))
        ));
    }

    #[test]
    fn non_canonical_s_is_refused() {
        let k = Keypair::from_seed(&[2; 32]);
        let mut tx = Transaction::sign(&k, chain(), 0, data(2));
        // Add the group order L to S: same value mod L, non-canonical encoding.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (s, l) in tx.signature.0[32..].iter_mut().zip(L) {
            let v = u16::from(*s) + u16::from(l) + carry;
            *s = v as u8;
            carry = v >> 8;
        }
        assert!(tx.clone().verify().is_err());
        assert!(verify_batch(chain(), vec![tx]).is_err());
    }

    /// Every encoding the decompressor accepts for each of the eight small-order points.
    fn small_order_encodings() -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            let canonical = point.compress().to_bytes();
            let mut ys = vec![canonical];
            let mut y = canonical;
            y[31] &= 0x7f;
            if y[0] < 19 && y[1..].iter().all(|&b| b == 0) {
                // y + p, still below 2^255.
                let mut alt = [0xff; 32];
                alt[0] = 0xed + y[0];
                alt[31] = 0x7f | (canonical[31] & 0x80);
                ys.push(alt);
            }
            for enc in ys {
                for sign in [0, 0x80] {
                    let mut e = enc;
                    e[31] = (e[31] & 0x7f) | sign;
                    if let Ok(k) = VerifyingKey::from_bytes(&e) {
                        if k.is_weak() && !out.contains(&e) {
                            out.push(e);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn small_order_r_list_is_exactly_the_small_order_encodings() {
        let all = small_order_encodings();
        assert_eq!(all.len(), 14);
        let sig = |r: [u8; 32]| {
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&r);
            Signature(b)
        };
        for e in &all {
            assert!(has_small_order_r(&sig(*e)), "{}", crate::hash::to_hex(e));
        }
        for y in SMALL_ORDER_Y {
            for sign in [0, 0x80] {
                let mut e = y;
                e[31] |= sign;
                assert!(all.contains(&e), "{}", crate::hash::to_hex(&e));
                assert!(VerifyingKey::from_bytes(&e).unwrap().is_weak());
            }
        }
        // The crafted signature passes the batch equation and only this check stops it.
        let k = Keypair::from_seed(&[3; 32]);
        let mut tx = Transaction::sign(&k, chain(), 0, data(3));
        tx.signature = identity_r_signature(&[3; 32], &tx.body.signing_message());
        assert!(has_small_order_r(&tx.signature));
        let vk = k.public().verifying_key().unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&tx.signature.0);
        let msg = tx.body.signing_message();
        assert!(ed25519_dalek::verify_batch(&[&msg[..]], &[sig], &[vk]).is_ok());
        assert!(vk.verify_strict(&msg, &sig).is_err());
        assert_eq!(
            verify_batch(chain(), vec![tx]),
            Err(TxError::InBatch {
                index: 0,
                source: Box::new(TxError::BadSignature(k.public()))
            })
        );
        // Honest signatures are never caught.
        for i in 0..64u8 {
            let k = Keypair::from_seed(&[i; 32]);
            let tx = Transaction::sign(&k, chain(), u64::from(i), data(i));
            assert!(!has_small_order_r(&tx.signature));
        }
    }

    #[test]
    fn batch_names_the_bad_transaction() {
        let keys: Vec<Keypair> = (0..150u8).map(|i| Keypair::from_seed(&[i; 32])).collect();
        let mut txs: Vec<Transaction> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Transaction::sign(k, chain(), i as u64, data(i as u8)))
            .collect();
        let ok = verify_batch(chain(), txs.clone()).unwrap();
        assert_eq!(ok.len(), 150);
        assert_eq!(ok[7].id(), txs[7].id());
        txs[131].body.nonce += 1;
        match verify_batch(chain(), txs.clone()) {
            Err(TxError::InBatch { index: 131, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        txs[131].body.nonce -= 1;
        txs[70].body.chain_id = ChainId::from_bytes([0; 32]);
        match verify_batch(chain(), txs) {
            Err(TxError::InBatch { index: 70, source }) => {
                assert!(matches!(*source, TxError::WrongChain { .. }))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn keypair_debug_hides_secret() {
        let k = Keypair::from_seed(&[0x42; 32]);
        let s = format!("{k:?}");
        assert!(s.contains("redacted"));
        assert!(!s.contains(&crate::hash::to_hex(&[0x42; 32])));
    }

    #[test]
    fn secret_export_round_trips_and_stays_hidden() {
        let k = Keypair::from_seed(&[0x42; 32]);
        let secret = k.to_secret_bytes();
        assert_eq!(secret.as_bytes(), &[0x42; 32]);
        let back = Keypair::from_secret_bytes(secret.as_bytes());
        assert_eq!(back.public(), k.public());
        assert_eq!(back.sign(b"m"), k.sign(b"m"));
        let shown = format!("{secret:?}");
        assert!(!shown.contains("42"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn signature_hex_round_trips() {
        let sig = Keypair::from_seed(&[1; 32]).sign(b"m");
        let hex = sig.to_string();
        assert_eq!(hex.len(), 128);
        assert_eq!(hex.parse::<Signature>().unwrap(), sig);
        assert!(hex[..127].parse::<Signature>().is_err());
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(seed in any::<[u8; 32]>(), nonce in any::<u64>(), rec in any::<[u8; 32]>()) {
            let k = Keypair::from_seed(&seed);
            let tx = Transaction::sign(&k, chain(), nonce, Payload::Data { record: Digest::from_bytes(rec) });
            let bytes = tx.encode();
            prop_assert_eq!(Transaction::decode(&bytes).unwrap(), tx);
        }

        #[test]
        fn decode_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(tx) = Transaction::decode(&bytes) {
                prop_assert_eq!(tx.encode(), bytes);
            }
        }
    }
}
