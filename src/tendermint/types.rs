//! The engine's vocabulary: validators, block ids, proposals and votes, and what they sign.

use core::fmt;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::TendermintError;
use crate::block::{Block, Header};
use crate::codec;
use crate::hash::{domain, hash_newtype, ChainId};
use crate::tx::{AppPayload, Keypair, PublicKey, Signature};

/// The most validators a set may hold (signatures name them by a 16-bit index).
pub const MAX_VALIDATORS: usize = 1024;
/// The largest total voting power of a set: quorum arithmetic on `u64` stays exact below it.
pub const MAX_TOTAL_POWER: u64 = 1 << 60;

hash_newtype! {
    /// What validators agree on at a height: BLAKE3 in the [`domain::TENDERMINT`] domain over
    /// the header without its seal ([`block_id`]). Votes and commit certificates name it; the
    /// header commits to the body through its transaction root.
    BlockId
}

/// Tags inside the [`domain::TENDERMINT`] domain, so no two kinds of signed or hashed data share
/// a preimage.
const TAG_VOTE: u8 = 0;
const TAG_PROPOSAL: u8 = 1;
const TAG_BLOCK_ID: u8 = 2;

fn tagged_hash<T: Serialize + ?Sized>(tag: u8, value: &T) -> [u8; 32] {
    let mut buf = Vec::with_capacity(160);
    codec::encode_body_into(&(tag, value), &mut buf);
    domain::TENDERMINT.hash(&buf)
}

/// The id of the block `header` seals, whatever its seal: the hash of every header field but
/// the seal.
pub fn block_id<S>(header: &Header<S>) -> BlockId {
    let unsealed = Header {
        version: header.version,
        height: header.height,
        parent: header.parent,
        tx_root: header.tx_root,
        tx_count: header.tx_count,
        state_root: header.state_root,
        timestamp: header.timestamp,
        seal: (),
    };
    BlockId::from_bytes(tagged_hash(TAG_BLOCK_ID, &unsealed))
}

/// A validator set as a seal carries it: `(key, voting power)` pairs in canonical order.
pub type ValidatorList = crate::codec::BoundedVec<(PublicKey, u64), MAX_VALIDATORS>;

/// A validator: its Ed25519 key and its voting power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Validator {
    key: PublicKey,
    power: u64,
}

impl Validator {
    /// Its key (which also names it in votes).
    pub fn key(&self) -> PublicKey {
        self.key
    }
    /// Its voting power.
    pub fn power(&self) -> u64 {
        self.power
    }
    pub(crate) fn key_ref(&self) -> &PublicKey {
        &self.key
    }
}

/// The validators of a height, in their canonical order: by voting power, highest first, then
/// by key. Commit certificates name validators by their index in this order.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    keys: Vec<VerifyingKey>,
    total: u64,
}

impl fmt::Debug for ValidatorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorSet")
            .field("validators", &self.validators)
            .field("total_power", &self.total)
            .finish()
    }
}

impl ValidatorSet {
    /// A set from `(key, voting power)` pairs, in any order.
    ///
    /// # Errors
    ///
    /// [`TendermintError::ValidatorSet`] if the set is empty or larger than [`MAX_VALIDATORS`],
    /// a key is invalid, weak or repeated, a power is zero, or the total exceeds
    /// [`MAX_TOTAL_POWER`].
    pub fn new(
        validators: impl IntoIterator<Item = (PublicKey, u64)>,
    ) -> Result<Self, TendermintError> {
        let bad = |why: String| TendermintError::ValidatorSet(why);
        let mut list: Vec<Validator> = Vec::new();
        let mut total: u64 = 0;
        for (key, power) in validators {
            if list.len() == MAX_VALIDATORS {
                return Err(bad(format!("more than {MAX_VALIDATORS} validators")));
            }
            key.verifying_key()
                .map_err(|e| bad(format!("validator {key}: {e}")))?;
            if power == 0 {
                return Err(bad(format!("validator {key} has no voting power")));
            }
            total = total
                .checked_add(power)
                .filter(|t| *t <= MAX_TOTAL_POWER)
                .ok_or_else(|| bad(format!("total voting power exceeds {MAX_TOTAL_POWER}")))?;
            list.push(Validator { key, power });
        }
        if list.is_empty() {
            return Err(bad("no validators".into()));
        }
        list.sort_by(|a, b| b.power.cmp(&a.power).then(a.key.cmp(&b.key)));
        if let Some(w) = list.windows(2).find(|w| w[0].key == w[1].key) {
            return Err(bad(format!("validator {} appears twice", w[0].key)));
        }
        let keys = list
            .iter()
            .map(|v| v.key.verifying_key().expect("checked above"))
            .collect();
        Ok(Self {
            validators: list,
            keys,
            total,
        })
    }

    /// Equal voting power for each of `keys`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn equal(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, TendermintError> {
        Self::new(keys.into_iter().map(|k| (k, 1)))
    }

    /// The set as a seal carries it: `(key, power)` pairs in canonical order.
    pub fn to_list(&self) -> ValidatorList {
        let list: Vec<(PublicKey, u64)> =
            self.validators.iter().map(|v| (v.key, v.power)).collect();
        ValidatorList::try_from(list).expect("a set holds at most MAX_VALIDATORS validators")
    }

    /// The set a seal's list describes, which must be a valid set in canonical order.
    ///
    /// # Errors
    ///
    /// [`TendermintError::ValidatorSet`] if it is not.
    pub fn from_list(list: &[(PublicKey, u64)]) -> Result<Self, TendermintError> {
        let set = Self::new(list.iter().copied())?;
        if set
            .validators
            .iter()
            .map(|v| (v.key, v.power))
            .ne(list.iter().copied())
        {
            return Err(TendermintError::ValidatorSet(
                "validators are not in canonical order".into(),
            ));
        }
        Ok(set)
    }

    /// The set after `changes`, applied in order: each sets a key's voting power, 0 removing
    /// it (removing a key outside the set changes nothing).
    ///
    /// # Errors
    ///
    /// [`TendermintError::ValidatorSet`] if the result is not a valid set (empty, more than
    /// [`MAX_VALIDATORS`], a total above [`MAX_TOTAL_POWER`], an invalid key).
    pub fn apply(
        &self,
        changes: impl IntoIterator<Item = (PublicKey, u64)>,
    ) -> Result<Self, TendermintError> {
        let mut powers: std::collections::BTreeMap<PublicKey, u64> =
            self.validators.iter().map(|v| (v.key, v.power)).collect();
        let mut changed = false;
        for (key, power) in changes {
            changed = true;
            if power == 0 {
                powers.remove(&key);
            } else {
                powers.insert(key, power);
                if powers.len() > MAX_VALIDATORS {
                    return Err(TendermintError::ValidatorSet(format!(
                        "more than {MAX_VALIDATORS} validators"
                    )));
                }
            }
        }
        if !changed {
            return Ok(self.clone());
        }
        Self::new(powers)
    }

    /// The validators in canonical order.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }
    /// How many validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }
    /// Whether the set is empty (never, for a built set).
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }
    /// The total voting power.
    pub fn total_power(&self) -> u64 {
        self.total
    }
    /// The index of `key` in canonical order.
    pub fn index_of(&self, key: &PublicKey) -> Option<usize> {
        self.validators.iter().position(|v| v.key == *key)
    }
    /// The validator with `key`.
    pub fn get(&self, key: &PublicKey) -> Option<&Validator> {
        self.validators.iter().find(|v| v.key == *key)
    }
    /// The validator at canonical `index`.
    pub fn by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
    /// Whether `power` is more than two thirds of the total (a quorum).
    pub fn is_quorum(&self, power: u64) -> bool {
        u128::from(power) * 3 > u128::from(self.total) * 2
    }
    /// The proposer of `round` at `height`: validators take turns in canonical order.
    pub fn proposer(&self, height: u64, round: u32) -> &Validator {
        let n = self.validators.len() as u64;
        let i = (height % n + u64::from(round) % n) % n;
        &self.validators[i as usize]
    }

    /// Checks that `signer` is a validator and signed `digest`; returns its canonical index.
    pub(crate) fn verify_signer(
        &self,
        signer: &PublicKey,
        digest: &[u8; 32],
        signature: &Signature,
    ) -> Result<usize, TendermintError> {
        let index = self
            .index_of(signer)
            .ok_or(TendermintError::NotAValidator(*signer))?;
        self.verify(index, digest, signature)?;
        Ok(index)
    }

    pub(crate) fn verify(
        &self,
        index: usize,
        digest: &[u8; 32],
        signature: &Signature,
    ) -> Result<(), TendermintError> {
        let key = self
            .keys
            .get(index)
            .ok_or(TendermintError::UnknownValidator { index })?;
        key.verify_strict(
            digest,
            &ed25519_dalek::Signature::from_bytes(&signature.to_bytes()),
        )
        .map_err(|_| TendermintError::BadSignature {
            validator: self.validators[index].key,
        })
    }
}

/// A proposed block: the block without a seal, shared (consensus copies values often), with
/// its id computed once. Two proposed blocks are equal when their ids are.
#[derive(Clone)]
pub struct ProposedBlock<P> {
    id: BlockId,
    block: Arc<Block<(), P>>,
}

impl<P: AppPayload> ProposedBlock<P> {
    /// Wraps an unsealed block.
    pub fn new(block: Block<(), P>) -> Self {
        Self {
            id: block_id(&block.header),
            block: Arc::new(block),
        }
    }
    /// The block id.
    pub fn id(&self) -> BlockId {
        self.id
    }
    /// The block.
    pub fn block(&self) -> &Block<(), P> {
        &self.block
    }
    /// The block sealed with `seal`.
    pub fn seal<S>(&self, seal: S) -> Block<S, P> {
        let h = &self.block.header;
        Block {
            header: Header {
                version: h.version,
                height: h.height,
                parent: h.parent,
                tx_root: h.tx_root,
                tx_count: h.tx_count,
                state_root: h.state_root,
                timestamp: h.timestamp,
                seal,
            },
            txs: self.block.txs.clone(),
        }
    }
}

impl<P> fmt::Debug for ProposedBlock<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ProposedBlock({} at height {} with {} txs)",
            self.id,
            self.block.header.height,
            self.block.txs.len()
        )
    }
}

impl<P> PartialEq for ProposedBlock<P> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl<P> Eq for ProposedBlock<P> {}
impl<P> PartialOrd for ProposedBlock<P> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for ProposedBlock<P> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl<P: AppPayload> Serialize for ProposedBlock<P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.block.serialize(s)
    }
}

impl<'de, P: AppPayload> Deserialize<'de> for ProposedBlock<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Block::<(), P>::deserialize(d).map(Self::new)
    }
}

/// The two votes of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    /// The first vote: the block looks valid (or nil).
    Prevote,
    /// The second vote, after a quorum of prevotes: commit the block (or nil).
    Precommit,
}

/// A validator's vote for a block, or for none (nil), in a round of a height.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Vote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The height.
    pub height: u64,
    /// The round.
    pub round: u32,
    /// The block voted for; `None` is a vote for nil.
    pub block: Option<BlockId>,
    /// The voter.
    pub validator: PublicKey,
}

impl Vote {
    /// The 32 bytes the voter signs: the vote without the voter's key, bound to `chain`.
    pub fn digest(&self, chain: ChainId) -> [u8; 32] {
        tagged_hash(
            TAG_VOTE,
            &(chain, self.kind, self.height, self.round, self.block),
        )
    }

    /// Signs the vote with `keypair` (whose public key must be [`validator`](Self::validator)).
    pub fn sign(self, keypair: &Keypair, chain: ChainId) -> SignedVote {
        SignedVote {
            signature: keypair.sign(&self.digest(chain)),
            vote: self,
        }
    }
}

/// A vote with its voter's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// The voter's signature over [`Vote::digest`].
    pub signature: Signature,
}

impl SignedVote {
    /// Checks that the voter is in `validators` and signed the vote for `chain`; returns the
    /// voter's index.
    ///
    /// # Errors
    ///
    /// [`TendermintError::NotAValidator`] or [`TendermintError::BadSignature`].
    pub fn verify(
        &self,
        validators: &ValidatorSet,
        chain: ChainId,
    ) -> Result<usize, TendermintError> {
        validators.verify_signer(
            &self.vote.validator,
            &self.vote.digest(chain),
            &self.signature,
        )
    }
}

/// What a proposer signs: a block id for a round, and the round of the prevote quorum that
/// justifies re-proposing it (`pol_round`, if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProposalSummary {
    /// The height.
    pub height: u64,
    /// The round.
    pub round: u32,
    /// The earlier round in which a quorum prevoted this block, if it is re-proposed.
    pub pol_round: Option<u32>,
    /// The proposed block.
    pub block: BlockId,
    /// The proposer.
    pub proposer: PublicKey,
}

impl ProposalSummary {
    /// The 32 bytes the proposer signs, bound to `chain`.
    pub fn digest(&self, chain: ChainId) -> [u8; 32] {
        tagged_hash(
            TAG_PROPOSAL,
            &(chain, self.height, self.round, self.pol_round, self.block),
        )
    }
}

/// A proposal summary with its proposer's signature: what evidence of a double proposal keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedSummary {
    /// The summary.
    pub summary: ProposalSummary,
    /// The proposer's signature over [`ProposalSummary::digest`].
    pub signature: Signature,
}

impl SignedSummary {
    /// Checks that the proposer is in `validators` and signed the summary for `chain`.
    ///
    /// # Errors
    ///
    /// [`TendermintError::NotAValidator`] or [`TendermintError::BadSignature`].
    pub fn verify(
        &self,
        validators: &ValidatorSet,
        chain: ChainId,
    ) -> Result<usize, TendermintError> {
        validators.verify_signer(
            &self.summary.proposer,
            &self.summary.digest(chain),
            &self.signature,
        )
    }
}

/// A proposal: the proposer's block for a round, in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "P: AppPayload", deserialize = "P: AppPayload"))]
pub struct Proposal<P> {
    /// The round.
    pub round: u32,
    /// The earlier round in which a quorum prevoted this block, if it is re-proposed.
    pub pol_round: Option<u32>,
    /// The proposer.
    pub proposer: PublicKey,
    /// The block (its header names the height).
    pub block: ProposedBlock<P>,
}

impl<P: AppPayload> Proposal<P> {
    /// The height (the block's).
    pub fn height(&self) -> u64 {
        self.block.block().header.height
    }

    /// What the proposer signs.
    pub fn summary(&self) -> ProposalSummary {
        ProposalSummary {
            height: self.height(),
            round: self.round,
            pol_round: self.pol_round,
            block: self.block.id(),
            proposer: self.proposer,
        }
    }

    /// Signs the proposal with `keypair` (whose key must be [`proposer`](Self::proposer)).
    pub fn sign(self, keypair: &Keypair, chain: ChainId) -> SignedProposal<P> {
        SignedProposal {
            signature: keypair.sign(&self.summary().digest(chain)),
            proposal: self,
        }
    }
}

/// A proposal with its proposer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "P: AppPayload", deserialize = "P: AppPayload"))]
pub struct SignedProposal<P> {
    /// The proposal.
    pub proposal: Proposal<P>,
    /// The proposer's signature over the [`ProposalSummary`] digest.
    pub signature: Signature,
}

impl<P: AppPayload> SignedProposal<P> {
    /// The signed summary (for evidence).
    pub fn signed_summary(&self) -> SignedSummary {
        SignedSummary {
            summary: self.proposal.summary(),
            signature: self.signature,
        }
    }
}
