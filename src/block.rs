//! Blocks: a header committing to its parent, its transactions and the resulting state, sealed by
//! a consensus engine; and the body of transactions.
//!
//! A [`Block`] is what arrives from the network or a store: decoded, not yet trusted. The chain
//! turns it into a [`CheckedBlock`] (structure, Merkle root, signatures and seal verified) before
//! applying it to the state; only checked blocks are ever applied.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, BoundedVec, Canonical, DecodeError};
use crate::hash::{domain, BlockHash, ChainId, MerkleRoot, StateRoot, TxId};
use crate::merkle::{merkle_root, MerkleError, MerkleProof};
use crate::tx::{self, AppPayload, KeyCache, Transaction, TxError, VerifiedTx};

/// The header format this build writes and accepts.
pub const HEADER_VERSION: u32 = 1;
/// The most transactions a block may hold.
pub const MAX_BLOCK_TXS: usize = 1 << 16;
/// The largest encoded block accepted, in bytes.
pub const MAX_BLOCK_LEN: usize = 16 * 1024 * 1024;
/// The largest encoded header (seal included) accepted, in bytes.
pub const MAX_HEADER_LEN: usize = 4 * 1024 * 1024;

/// A block header, generic over the consensus engine's seal `S`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header<S> {
    /// Header format version ([`HEADER_VERSION`]).
    pub version: u32,
    /// Height: 0 for genesis, parent's height + 1 otherwise.
    pub height: u64,
    /// Hash of the parent header (for genesis: the chain id).
    pub parent: BlockHash,
    /// Merkle root of the transaction ids (see [`merkle`](crate::merkle)).
    pub tx_root: MerkleRoot,
    /// Number of transactions in the body (fixes the Merkle tree's shape for proofs).
    pub tx_count: u32,
    /// Root of the state tree after applying this block.
    pub state_root: StateRoot,
    /// Block time, Unix seconds.
    pub timestamp: u64,
    /// The consensus engine's proof that this block may extend its parent.
    pub seal: S,
}

/// A consensus engine's seal, as the block hash sees it.
///
/// The block hash covers the header's fields and what [`Seal::encode_committed`] writes of the
/// seal: by default its whole canonical encoding. A seal that carries a certificate (a quorum
/// of signatures over a decided value) may leave the signatures out, as Bitcoin leaves witnesses
/// out of a transaction's id: honest nodes that decided one value but collected different
/// quorums then seal one block, with one hash, and a certificate altered in transit can no
/// longer pass for another block. The chain verifies the whole seal, signatures included,
/// before it accepts a block, and never marks a hash invalid for a seal that fails.
pub trait Seal: Serialize {
    /// Appends the part of the seal the block hash commits to. The default writes the whole
    /// canonical encoding. An override must write everything that decides the block's content
    /// and the next block's rules (randomness, membership, validator sets): only what several
    /// honest certificates of one decision may differ in can be left out (an override may
    /// write its parts with [`codec::encode_into`]).
    fn encode_committed(&self, out: &mut Vec<u8>) {
        codec::encode_body_into(self, out);
    }
}

/// Seals of engines without a certificate, and of tests.
macro_rules! whole_seal {
    ($($t:ty),*) => { $(impl Seal for $t {})* };
}
whole_seal!((), u8, u16, u32, u64, i32, [u8; 32]);
impl<const N: usize> Seal for codec::BoundedBytes<N> {}

impl<S: Seal> Header<S> {
    /// The block hash: BLAKE3 in the [`domain::BLOCK`] domain over the canonical encoding of
    /// the header's fields and the committed part of its seal ([`Seal::encode_committed`]; for
    /// most seals, the whole header's canonical encoding).
    pub fn hash(&self) -> BlockHash {
        let Header {
            version,
            height,
            parent,
            tx_root,
            tx_count,
            state_root,
            timestamp,
            seal,
        } = self;
        let mut buf = Vec::with_capacity(256);
        // Fields in declaration order, as the header's own encoding lays them out.
        codec::encode_into(
            &(
                version, height, parent, tx_root, tx_count, state_root, timestamp,
            ),
            &mut buf,
        );
        seal.encode_committed(&mut buf);
        BlockHash::from_bytes(domain::BLOCK.hash(&buf))
    }
}

impl<S> Header<S> {
    /// Checks a Merkle proof that `id` is one of this block's transactions.
    ///
    /// # Errors
    ///
    /// [`MerkleError`] if the proof does not hold against this header.
    pub fn verify_tx_proof(&self, proof: &MerkleProof, id: &TxId) -> Result<(), MerkleError> {
        proof.verify(&self.tx_root, self.tx_count, id)
    }
}

impl<S: Serialize + DeserializeOwned> Canonical for Header<S> {
    const NAME: &'static str = "block header";
    const MAX_ENCODED_LEN: usize = MAX_HEADER_LEN;
}

/// A block as decoded: nothing about it is trusted yet. `S` is the consensus engine's seal, `P`
/// the application's transaction payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, P: AppPayload",
    deserialize = "S: DeserializeOwned, P: AppPayload"
))]
pub struct Block<S, P> {
    /// The header.
    pub header: Header<S>,
    /// The transactions, in order.
    pub txs: BoundedVec<Transaction<P>, MAX_BLOCK_TXS>,
}

impl<S: Serialize + DeserializeOwned, P: AppPayload> Canonical for Block<S, P> {
    const NAME: &'static str = "block";
    const MAX_ENCODED_LEN: usize = MAX_BLOCK_LEN;
}

/// Why a block's structure (independent of chain state) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StructureError {
    /// Unknown header version.
    #[error("unsupported header version {found} (expected {expected})")]
    Version {
        /// Expected version.
        expected: u32,
        /// Version found.
        found: u32,
    },
    /// The header's transaction count differs from the body.
    #[error("header commits to {header} transactions, body has {body}")]
    TxCount {
        /// Count in the header.
        header: u32,
        /// Count in the body.
        body: usize,
    },
    /// The Merkle root does not match the body.
    #[error("transaction merkle root {found} does not match the body's {computed}")]
    MerkleRoot {
        /// Root in the header.
        found: MerkleRoot,
        /// Root of the body.
        computed: MerkleRoot,
    },
    /// The header or the block encodes to more bytes than a peer may send (a block built in
    /// memory with an oversize seal, say): it could never be decoded back from the store.
    #[error("{what} encodes to {len} bytes, over the limit of {max}")]
    TooLarge {
        /// "block header" or "block".
        what: &'static str,
        /// Encoded length, version byte included.
        len: usize,
        /// The limit ([`MAX_HEADER_LEN`] or [`MAX_BLOCK_LEN`]).
        max: usize,
    },
    /// The same transaction appears twice.
    #[error("transaction {0} appears twice in the block")]
    DuplicateTx(TxId),
    /// A transaction is invalid on its own.
    #[error(transparent)]
    Tx(#[from] TxError),
}

impl<S: Seal + DeserializeOwned, P: AppPayload> Block<S, P> {
    /// Decodes a block from its canonical encoding.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the bytes are not a canonical block within [`MAX_BLOCK_LEN`] bytes
    /// and [`MAX_BLOCK_TXS`] transactions.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The block hash (the header's).
    pub fn hash(&self) -> BlockHash {
        self.header.hash()
    }

    /// Checks everything that needs no chain state: encoded size, header version, transaction
    /// count and Merkle root, no duplicate transaction, every signature (batch-verified) and
    /// chain id.
    /// The seal, parent and state transition are the chain's to check.
    ///
    /// The checks run cheapest first: the header's own fields, then the Merkle root over the
    /// transaction ids (hashing only), and the signatures last, so a block whose header does not
    /// commit to its body costs no signature check.
    ///
    /// # Errors
    ///
    /// [`StructureError`] naming the first problem.
    pub fn check_structure(self, chain_id: ChainId) -> Result<CheckedBlock<S, P>, StructureError> {
        self.check_structure_cached(chain_id, &KeyCache::new(0))
    }

    /// As [`check_structure`](Self::check_structure), with decompressed signer keys taken from
    /// (and added to) `keys`.
    ///
    /// # Errors
    ///
    /// [`StructureError`] naming the first problem.
    pub fn check_structure_cached(
        self,
        chain_id: ChainId,
        keys: &KeyCache,
    ) -> Result<CheckedBlock<S, P>, StructureError> {
        self.check_header_shape()?;
        self.check_commitments()?.verify_signatures(chain_id, keys)
    }

    /// The checks on the header alone, each costing no more than encoding the header: its
    /// encoded size, version, and transaction count against the body's length.
    pub(crate) fn check_header_shape(&self) -> Result<(), StructureError> {
        // A decoded block is within these limits already; one built in memory may not be.
        let header_len = 1 + codec::body_len(&self.header);
        if header_len > MAX_HEADER_LEN {
            return Err(StructureError::TooLarge {
                what: "block header",
                len: header_len,
                max: MAX_HEADER_LEN,
            });
        }
        if self.header.version != HEADER_VERSION {
            return Err(StructureError::Version {
                expected: HEADER_VERSION,
                found: self.header.version,
            });
        }
        if self.header.tx_count as usize != self.txs.len() {
            return Err(StructureError::TxCount {
                header: self.header.tx_count,
                body: self.txs.len(),
            });
        }
        Ok(())
    }

    /// The checks that the header commits to this body, by hashing alone (no signature is
    /// checked): the block's encoded size, the Merkle root over the transaction ids, and no
    /// transaction twice. The caller has checked [`check_header_shape`](Self::check_header_shape).
    pub(crate) fn check_commitments(self) -> Result<CommittedBlock<S, P>, StructureError> {
        let block_len = 1 + codec::body_len(&self);
        if block_len > MAX_BLOCK_LEN {
            return Err(StructureError::TooLarge {
                what: "block",
                len: block_len,
                max: MAX_BLOCK_LEN,
            });
        }
        let Block { header, txs } = self;
        let txs = txs.into_inner();
        let ids = tx_ids(&txs);
        let computed = merkle_root(&ids);
        if computed != header.tx_root {
            return Err(StructureError::MerkleRoot {
                found: header.tx_root,
                computed,
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        for id in &ids {
            if !seen.insert(*id) {
                return Err(StructureError::DuplicateTx(*id));
            }
        }
        Ok(CommittedBlock { header, txs, ids })
    }
}

/// The ids of `txs`, hashed in parallel with the `parallel` feature.
fn tx_ids<P: AppPayload>(txs: &[Transaction<P>]) -> Vec<TxId> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        txs.par_iter().map(Transaction::id).collect()
    }
    #[cfg(not(feature = "parallel"))]
    txs.iter().map(Transaction::id).collect()
}

/// A block whose header shape and commitment to its body hold, with its transaction ids
/// computed; its signatures are not checked yet.
pub(crate) struct CommittedBlock<S, P> {
    header: Header<S>,
    txs: Vec<Transaction<P>>,
    ids: Vec<TxId>,
}

impl<S: Seal, P: AppPayload> CommittedBlock<S, P> {
    /// Verifies every transaction's signature and chain id (batch-verified, keys from `keys`).
    pub(crate) fn verify_signatures(
        self,
        chain_id: ChainId,
        keys: &KeyCache,
    ) -> Result<CheckedBlock<S, P>, StructureError> {
        let CommittedBlock { header, txs, ids } = self;
        let txs = tx::verify_batch_identified(chain_id, txs, ids, keys)?;
        let hash = header.hash();
        Ok(CheckedBlock { header, txs, hash })
    }
}

/// A block whose structure and signatures have been verified ([`Block::check_structure`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedBlock<S, P> {
    header: Header<S>,
    txs: Vec<VerifiedTx<P>>,
    hash: BlockHash,
}

impl<S: Serialize + Clone, P: AppPayload> CheckedBlock<S, P> {
    /// The header.
    pub fn header(&self) -> &Header<S> {
        &self.header
    }
    /// The verified transactions, in order.
    pub fn txs(&self) -> &[VerifiedTx<P>] {
        &self.txs
    }
    /// The block hash.
    pub fn hash(&self) -> BlockHash {
        self.hash
    }
    /// Back to the plain (encodable) block.
    pub fn to_block(&self) -> Block<S, P> {
        Block {
            header: self.header.clone(),
            txs: BoundedVec::try_from(
                self.txs
                    .iter()
                    .map(|t| t.transaction().clone())
                    .collect::<Vec<_>>(),
            )
            .expect("a checked block holds at most MAX_BLOCK_TXS transactions"),
        }
    }
    /// A Merkle proof for the transaction at `index`.
    ///
    /// # Errors
    ///
    /// [`MerkleError::IndexOutOfRange`] if there is no such transaction.
    pub fn tx_proof(&self, index: usize) -> Result<MerkleProof, MerkleError> {
        let ids: Vec<TxId> = self.txs.iter().map(VerifiedTx::id).collect();
        MerkleProof::new(&ids, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Digest;
    use crate::tx::testing::{Payload, Transaction};
    use crate::tx::Keypair;
    use proptest::prelude::*;

    fn chain() -> ChainId {
        ChainId::from_bytes([3; 32])
    }

    fn block(n: usize) -> Block<u64, Payload> {
        let k = Keypair::from_seed(&[5; 32]);
        let txs: Vec<Transaction> = (0..n)
            .map(|i| {
                Transaction::sign(
                    &k,
                    chain(),
                    i as u64,
                    Payload::Data {
                        record: Digest::from_bytes([i as u8; 32]),
                    },
                )
            })
            .collect();
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        Block {
            header: Header {
                version: HEADER_VERSION,
                height: 1,
                parent: BlockHash::from_bytes([1; 32]),
                tx_root: merkle_root(&ids),
                tx_count: n as u32,
                state_root: StateRoot::default(),
                timestamp: 1_700_000_000,
                seal: 42,
            },
            txs: txs.try_into().unwrap(),
        }
    }

    #[test]
    fn valid_block_checks_and_proves() {
        let b = block(40);
        let hash = b.hash();
        let checked = b.clone().check_structure(chain()).unwrap();
        assert_eq!(checked.hash(), hash);
        assert_eq!(checked.to_block(), b);
        let proof = checked.tx_proof(33).unwrap();
        assert!(checked
            .header()
            .verify_tx_proof(&proof, &checked.txs()[33].id())
            .is_ok());
    }

    #[test]
    fn structural_errors_are_precise() {
        let mut b = block(3);
        b.header.version = 9;
        assert!(matches!(
            b.check_structure(chain()),
            Err(StructureError::Version { found: 9, .. })
        ));
        let mut b = block(3);
        b.header.tx_count = 2;
        assert!(matches!(
            b.check_structure(chain()),
            Err(StructureError::TxCount { header: 2, body: 3 })
        ));
        let mut b = block(3);
        b.header.tx_root = MerkleRoot::default();
        assert!(matches!(
            b.check_structure(chain()),
            Err(StructureError::MerkleRoot { .. })
        ));
        let mut b = block(3);
        let mut txs = b.txs.to_vec();
        txs.push(txs[0].clone());
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        b.header.tx_root = merkle_root(&ids);
        b.header.tx_count = 4;
        b.txs = txs.try_into().unwrap();
        assert!(matches!(
            b.check_structure(chain()),
            Err(StructureError::DuplicateTx(_))
        ));
        assert!(matches!(
            block(2).check_structure(ChainId::default()),
            Err(StructureError::Tx(TxError::InBatch { index: 0, .. }))
        ));
        // The Merkle root (hashing only) is checked before any signature.
        let mut b = block(3);
        b.header.tx_root = MerkleRoot::default();
        assert!(matches!(
            b.check_structure(ChainId::default()),
            Err(StructureError::MerkleRoot { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(n in 0usize..8, h in any::<u64>(), t in any::<u64>()) {
            let mut b = block(n);
            b.header.height = h;
            b.header.timestamp = t;
            let bytes = b.encode();
            prop_assert_eq!(Block::<u64, Payload>::decode(&bytes).unwrap(), b.clone());
            let hb = codec::encode(&b.header);
            prop_assert_eq!(codec::decode::<Header<u64>>(&hb).unwrap(), b.header);
        }

        #[test]
        fn any_single_byte_corruption_is_rejected(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let b = block(3);
            let original_hash = b.hash();
            let mut bytes = b.encode();
            let i = pos.index(bytes.len());
            bytes[i] ^= flip;
            // Either it does not decode, or it decodes to a block that fails its checks or is a
            // different block (different hash) — never the same block with altered content.
            if let Ok(d) = Block::<u64, Payload>::decode(&bytes) {
                let same_hash = d.hash() == original_hash;
                let checked = d.check_structure(chain());
                prop_assert!(checked.is_err() || !same_hash);
            }
        }
    }
}
