//! The commit certificate that seals a block, the stateless check of it, and evidence of double
//! signing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::types::{
    block_id, BlockId, ProposedBlock, SignedSummary, SignedVote, ValidatorList, ValidatorSet, Vote,
    VoteKind, MAX_VALIDATORS,
};
use super::TendermintError;
use crate::block::Header;
use crate::codec::BoundedVec;
use crate::consensus::{Ancestors, Consensus, ConsensusError, EngineError, Finality, Work};
use crate::hash::{domain, ChainId, Digest};
use crate::tx::{AppPayload, EvidenceClaim, PublicKey, Signature, VerifiedTx};

/// How far ahead of the verifier's clock a block's timestamp may be, in seconds.
pub const MAX_FUTURE_DRIFT: u64 = 2 * 60 * 60;

/// One validator's precommit signature in a commit certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSignature {
    /// The validator's index in the canonical order of the [`ValidatorSet`].
    pub validator: u16,
    /// Its signature over the precommit for the sealed block ([`Vote::digest`]).
    pub signature: Signature,
}

/// A block's seal: its commit certificate, the precommits of more than two thirds of the voting
/// power for this block in one round, and the validator sets around it.
///
/// The precommits sign the chain id, the height, the round and the [`BlockId`], which is the hash
/// of the header without this seal; so a certificate for one height, round, block or chain
/// proves nothing about another.
///
/// The seal also carries the set that signed it ([`validators`](Self::validators)) and, when the
/// block's transactions change the set, the set for the next height
/// ([`next_validators`](Self::next_validators)). Neither is signed by the precommits, and
/// neither needs to be: both are determined by the chain. The signing set must be the set the
/// parent's seal names for this height (checked with the header), and the next set must be the
/// signing set with the block's validator changes applied (checked with the body). A verifier
/// therefore follows set changes from seal to seal without reading any application state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TendermintSeal {
    /// The round in which the block was decided.
    pub round: u32,
    /// Precommit signatures, by strictly increasing validator index.
    pub signatures: BoundedVec<CommitSignature, MAX_VALIDATORS>,
    /// The validator set that signs this block, in canonical order (for the genesis block: the
    /// set of height 1).
    pub validators: ValidatorList,
    /// The set for the next height when the block's validator changes alter it; `None` when it
    /// stays [`validators`](Self::validators).
    pub next_validators: Option<ValidatorList>,
}

/// The block hash covers the whole seal, commit signatures included: nodes that collected
/// different precommits hold different copies of one block, which
/// [`same_block`](Consensus::same_block) recognises.
impl crate::block::Seal for TendermintSeal {}

impl TendermintSeal {
    /// The set that signs the next block, as a list.
    pub fn next_list(&self) -> &ValidatorList {
        self.next_validators.as_ref().unwrap_or(&self.validators)
    }

    /// The set that signed this block.
    ///
    /// # Errors
    ///
    /// [`TendermintError::ValidatorSet`] if the list is not a valid set in canonical order.
    pub fn signing_set(&self) -> Result<ValidatorSet, TendermintError> {
        ValidatorSet::from_list(&self.validators)
    }

    /// The set that signs the next block.
    ///
    /// # Errors
    ///
    /// [`TendermintError::ValidatorSet`] if the list is not a valid set in canonical order.
    pub fn next_set(&self) -> Result<ValidatorSet, TendermintError> {
        ValidatorSet::from_list(self.next_list())
    }
}

/// The set for the height after a block signed by `set` whose transactions carry `payloads`:
/// `set` with the payloads' validator changes applied in order; `None` if unchanged. Checks
/// the evidence the payloads carry against `set` on the way.
///
/// # Errors
///
/// [`TendermintError::ValidatorSet`] if the changes leave no valid set,
/// [`TendermintError::BadEvidence`] if a piece of evidence is not valid.
pub fn next_validators<'a, P: AppPayload>(
    set: &ValidatorSet,
    chain: ChainId,
    height: u64,
    payloads: impl IntoIterator<Item = &'a P>,
) -> Result<Option<ValidatorList>, TendermintError> {
    let mut changes = Vec::new();
    for p in payloads {
        if let Some(change) = p.validator_change() {
            changes.push(change);
        }
        if let Some(claim) = p.evidence() {
            check_evidence(set, chain, height, &claim)?;
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let next = set.apply(changes)?;
    Ok((next != *set).then(|| next.to_list()))
}

/// Checks evidence carried by a block at `height` signed by `set`: it decodes, is of this
/// height (an earlier round) or an earlier one, convicts a validator of `set` with its signatures, and names the claimed offender
/// and offence.
pub(crate) fn check_evidence(
    set: &ValidatorSet,
    chain: ChainId,
    height: u64,
    claim: &EvidenceClaim<'_>,
) -> Result<(), TendermintError> {
    let bad = |why: String| TendermintError::BadEvidence(why);
    let evidence: Evidence =
        crate::codec::decode(claim.evidence).map_err(|e| bad(e.to_string()))?;
    if evidence.height() > height {
        return Err(bad(format!(
            "evidence of height {} in a block of height {height}",
            evidence.height()
        )));
    }
    let offender = evidence
        .verify_with(set, chain)
        .map_err(|e| bad(e.to_string()))?;
    if offender != claim.offender || evidence.offence() != claim.offence {
        return Err(bad(format!(
            "the evidence convicts {offender} of offence {}, not {} of {}",
            evidence.offence(),
            claim.offender,
            claim.offence
        )));
    }
    Ok(())
}

/// More than two thirds of the voting power prevoting one block in one round (a "polka"): what
/// lets a validator that missed some of those prevotes accept the block re-proposed in a later
/// round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolkaCertificate {
    /// The height.
    pub height: u64,
    /// The round of the prevotes.
    pub round: u32,
    /// The block prevoted.
    pub block: BlockId,
    /// Prevote signatures, by strictly increasing validator index.
    pub signatures: BoundedVec<CommitSignature, MAX_VALIDATORS>,
}

/// Tendermint consensus for a consortium of known validators: checks each block's commit
/// certificate against the validator set, with no other state.
///
/// Assumes `n ≥ 3f + 1` (Byzantine validators hold less than a third of the voting power) and
/// partial synchrony (messages arrive within some unknown bound after some unknown time).
/// Under that assumption no two blocks of one height ever both gather a certificate, so a
/// certified block is final: every block adds a [`Work`] of 1, a branch that competes with the
/// main chain at the same height is never heavier and never adopted, and a longer competing
/// branch would need conflicting certificates, which only a third or more of the voting power
/// can sign. Build the chain with
/// [`max_reorg_depth(0)`](crate::chain::ChainBuilder::max_reorg_depth) to refuse even that:
/// a certified block is then never reverted, whatever the validators sign later.
///
/// A light client verifies a header with this type and the validator set of its height
/// ([`verify_commit_with`](Self::verify_commit_with)): no ancestors, no state. The set of
/// height 1 is the genesis set ([`validators`](Self::validators)); each seal names the next
/// height's (see [`TendermintSeal`]).
#[derive(Clone, Debug)]
pub struct TendermintConsensus {
    chain: ChainId,
    validators: Arc<ValidatorSet>,
    genesis_list: ValidatorList,
}

impl TendermintConsensus {
    /// The engine for the chain called `chain_name` (the name given to the
    /// [`ChainBuilder`](crate::chain::ChainBuilder), from which the chain id comes), run by
    /// `validators`.
    pub fn new(chain_name: &str, validators: ValidatorSet) -> Self {
        Self::with_chain_id(
            ChainId::from_bytes(domain::CHAIN_ID.hash(chain_name.as_bytes())),
            validators,
        )
    }

    /// The engine for the chain with id `chain`, run by `validators`.
    pub fn with_chain_id(chain: ChainId, validators: ValidatorSet) -> Self {
        Self {
            chain,
            genesis_list: validators.to_list(),
            validators: Arc::new(validators),
        }
    }

    /// The chain id votes are bound to.
    pub fn chain_id(&self) -> ChainId {
        self.chain
    }

    /// The genesis validator set: the set of height 1, which the genesis block's seal names.
    /// Later heights' sets are in the seals of the chain (see [`TendermintSeal`]).
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// Checks `header`'s commit certificate against the genesis validator set (see
    /// [`verify_commit_with`](Self::verify_commit_with) for any other height's set).
    ///
    /// # Errors
    ///
    /// [`TendermintError`] naming the first problem.
    pub fn verify_commit(&self, header: &Header<TendermintSeal>) -> Result<(), TendermintError> {
        self.verify_commit_with(header, &self.validators)
    }

    /// Checks `header`'s commit certificate against `validators`, the set of its height (what a
    /// light client does, with the set it trusts): signatures by strictly increasing indices of
    /// `validators`, each a valid precommit for this header's block id, height, round and chain,
    /// together more than two thirds of the voting power; and the seal names `validators` as
    /// its signing set.
    ///
    /// # Errors
    ///
    /// [`TendermintError`] naming the first problem.
    pub fn verify_commit_with(
        &self,
        header: &Header<TendermintSeal>,
        validators: &ValidatorSet,
    ) -> Result<(), TendermintError> {
        if header.seal.validators.len() != validators.len()
            || header
                .seal
                .validators
                .iter()
                .zip(validators.validators())
                .any(|((k, p), v)| *k != v.key() || *p != v.power())
        {
            return Err(TendermintError::WrongValidators {
                height: header.height,
            });
        }
        self.verify_quorum(
            validators,
            VoteKind::Precommit,
            header.height,
            header.seal.round,
            block_id(header),
            &header.seal.signatures,
        )
    }

    /// Checks a prevote quorum certificate (a polka): prevotes for its block by more than two
    /// thirds of the voting power, as [`verify_commit`](Self::verify_commit) checks precommits.
    ///
    /// # Errors
    ///
    /// [`TendermintError`] naming the first problem.
    pub fn verify_polka(
        &self,
        polka: &PolkaCertificate,
        validators: &ValidatorSet,
    ) -> Result<(), TendermintError> {
        self.verify_quorum(
            validators,
            VoteKind::Prevote,
            polka.height,
            polka.round,
            polka.block,
            &polka.signatures,
        )
    }

    fn verify_quorum(
        &self,
        validators: &ValidatorSet,
        kind: VoteKind,
        height: u64,
        round: u32,
        block: BlockId,
        signatures: &[CommitSignature],
    ) -> Result<(), TendermintError> {
        let vote = Vote {
            kind,
            height,
            round,
            block: Some(block),
            validator: PublicKey::from_bytes([0; 32]),
        };
        let digest = vote.digest(self.chain);
        let mut signed: u64 = 0;
        let mut last: Option<u16> = None;
        for (position, s) in signatures.iter().enumerate() {
            if last.is_some_and(|l| l >= s.validator) {
                return Err(TendermintError::SignatureOrder { position });
            }
            last = Some(s.validator);
            let index = usize::from(s.validator);
            validators.verify(index, &digest, &s.signature)?;
            signed += validators.validators()[index].power();
        }
        if !validators.is_quorum(signed) {
            return Err(TendermintError::InsufficientPower {
                signed,
                total: validators.total_power(),
            });
        }
        Ok(())
    }

    /// Builds the seal of `block` decided in `round` at its height by `validators` from
    /// precommits; keeps only valid precommits for that block, round and height, and names the
    /// next height's set from the block's validator changes.
    ///
    /// # Errors
    ///
    /// [`TendermintError::InsufficientPower`] if those do not reach a quorum, or the errors of
    /// [`next_validators`] if the block's changes or evidence are invalid.
    pub fn seal_from_precommits<'a, P: AppPayload>(
        &self,
        validators: &ValidatorSet,
        round: u32,
        block: &ProposedBlock<P>,
        precommits: impl IntoIterator<Item = &'a SignedVote>,
    ) -> Result<TendermintSeal, TendermintError> {
        let height = block.block().header.height;
        let id = block.id();
        let mut sigs: Vec<CommitSignature> = Vec::new();
        for p in precommits {
            let v = &p.vote;
            if v.kind != VoteKind::Precommit
                || v.height != height
                || v.round != round
                || v.block != Some(id)
            {
                continue;
            }
            let Ok(index) = p.verify(validators, self.chain) else {
                continue;
            };
            let validator = u16::try_from(index).expect("at most MAX_VALIDATORS validators");
            if sigs.iter().all(|s| s.validator != validator) {
                sigs.push(CommitSignature {
                    validator,
                    signature: p.signature,
                });
            }
        }
        sigs.sort_by_key(|s| s.validator);
        let signed: u64 = sigs
            .iter()
            .map(|s| validators.validators()[usize::from(s.validator)].power())
            .sum();
        if !validators.is_quorum(signed) {
            return Err(TendermintError::InsufficientPower {
                signed,
                total: validators.total_power(),
            });
        }
        let next_validators = next_validators(
            validators,
            self.chain,
            height,
            block.block().txs.iter().map(|t| &t.body.payload),
        )?;
        Ok(TendermintSeal {
            round,
            signatures: BoundedVec::try_from(sigs).expect("at most MAX_VALIDATORS signatures"),
            validators: validators.to_list(),
            next_validators,
        })
    }
}

impl From<TendermintError> for ConsensusError {
    fn from(e: TendermintError) -> Self {
        ConsensusError::Engine(EngineError::new("tendermint", e))
    }
}

impl Consensus for TendermintConsensus {
    type Seal = TendermintSeal;

    fn name(&self) -> &'static str {
        "tendermint"
    }

    fn genesis_seal(&self) -> TendermintSeal {
        TendermintSeal {
            validators: self.genesis_list.clone(),
            ..TendermintSeal::default()
        }
    }

    fn verify_header(
        &self,
        header: &Header<TendermintSeal>,
        ancestors: &dyn Ancestors<TendermintSeal>,
        now: u64,
    ) -> Result<Work, ConsensusError> {
        let parent = ancestors.parent();
        if header.timestamp < parent.timestamp {
            return Err(ConsensusError::TimestampTooOld {
                median: parent.timestamp,
                found: header.timestamp,
            });
        }
        if header.timestamp > now.saturating_add(MAX_FUTURE_DRIFT) {
            return Err(ConsensusError::TimestampTooNew {
                found: header.timestamp,
                now,
                max_drift: MAX_FUTURE_DRIFT,
            });
        }
        // The signing set is the one the parent names for this height.
        if header.seal.validators != *parent.seal.next_list() {
            return Err(TendermintError::WrongValidators {
                height: header.height,
            }
            .into());
        }
        let validators = header.seal.signing_set()?;
        self.verify_commit_with(header, &validators)?;
        Ok(Work::from_u64(1))
    }

    /// A block with a commit certificate is decided, hence final.
    fn finality(&self) -> Finality {
        Finality::Instant
    }

    /// Two headers are one block when their [`BlockId`]s are equal (the header without its
    /// seal: height, parent, roots, time); their seals then name the same validator sets, set
    /// by the parent and the body.
    fn same_block(&self, a: &Header<TendermintSeal>, b: &Header<TendermintSeal>) -> bool {
        block_id(a) == block_id(b)
    }

    /// Checks the seal's next validator set: the signing set with the block's validator changes
    /// applied (`None` if they leave it as it is); and the evidence the block records: each
    /// piece decodes, is of this height or an earlier one, and convicts a validator of the signing set of
    /// the offence its transaction names.
    fn verify_body<P: AppPayload>(
        &self,
        header: &Header<TendermintSeal>,
        txs: &[VerifiedTx<P>],
    ) -> Result<(), ConsensusError> {
        let validators = header.seal.signing_set()?;
        let next = next_validators(
            &validators,
            self.chain,
            header.height,
            txs.iter().map(|t| &t.body().payload),
        )?;
        if next != header.seal.next_validators {
            return Err(TendermintError::WrongNextValidators {
                height: header.height,
            }
            .into());
        }
        Ok(())
    }
}

/// Verifiable proof that a validator signed two conflicting messages for one height and round.
///
/// Under the engine's assumption only a Byzantine validator does this; the evidence convicts it
/// with its own signatures, checked by [`verify`](Self::verify) against the validator set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Evidence {
    /// Two votes of one kind, height and round for different blocks (or a block and nil).
    DoubleVote {
        /// The vote seen first.
        first: SignedVote,
        /// The conflicting vote.
        second: SignedVote,
    },
    /// Two different proposals for one height and round.
    DoubleProposal {
        /// The proposal seen first.
        first: SignedSummary,
        /// The conflicting proposal.
        second: SignedSummary,
    },
}

impl Evidence {
    /// Checks both signatures and that the two messages conflict; returns the offender.
    ///
    /// # Errors
    ///
    /// [`TendermintError::NotEvidence`] if the messages do not conflict, or the signature
    /// errors of [`SignedVote::verify`].
    pub fn verify(&self, engine: &TendermintConsensus) -> Result<PublicKey, TendermintError> {
        self.verify_with(engine.validators(), engine.chain_id())
    }

    /// As [`verify`](Self::verify), against the validator set `vs` of chain `chain`.
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify).
    pub fn verify_with(
        &self,
        vs: &ValidatorSet,
        chain: ChainId,
    ) -> Result<PublicKey, TendermintError> {
        match self {
            Evidence::DoubleVote { first, second } => {
                let (a, b) = (&first.vote, &second.vote);
                if a.validator != b.validator
                    || a.kind != b.kind
                    || a.height != b.height
                    || a.round != b.round
                    || a.block == b.block
                {
                    return Err(TendermintError::NotEvidence);
                }
                first.verify(vs, chain)?;
                second.verify(vs, chain)?;
                Ok(a.validator)
            }
            Evidence::DoubleProposal { first, second } => {
                let (a, b) = (&first.summary, &second.summary);
                if a.proposer != b.proposer || a.height != b.height || a.round != b.round || a == b
                {
                    return Err(TendermintError::NotEvidence);
                }
                first.verify(vs, chain)?;
                second.verify(vs, chain)?;
                Ok(a.proposer)
            }
        }
    }

    /// The height of the offence.
    pub fn height(&self) -> u64 {
        match self {
            Evidence::DoubleVote { first, .. } => first.vote.height,
            Evidence::DoubleProposal { first, .. } => first.summary.height,
        }
    }

    /// The offence's id: the offender, height, round and what it signed twice (a prevote, a
    /// precommit or a proposal). Every piece of evidence of one offence has the same id, so the
    /// chain records an offence once.
    pub fn offence(&self) -> Digest {
        let (kind, round) = match self {
            Evidence::DoubleVote { first, .. } => (
                match first.vote.kind {
                    VoteKind::Prevote => 0u8,
                    VoteKind::Precommit => 1,
                },
                first.vote.round,
            ),
            Evidence::DoubleProposal { first, .. } => (2, first.summary.round),
        };
        let mut buf = Vec::with_capacity(64);
        crate::codec::encode_body_into(
            &(OFFENCE_TAG, self.offender(), self.height(), round, kind),
            &mut buf,
        );
        Digest::from_bytes(domain::TENDERMINT.hash(&buf))
    }

    /// The claim a transaction makes to record this evidence (its
    /// [`AppPayload::record_evidence`] payload).
    pub fn claim<'a>(&self, encoded: &'a [u8]) -> EvidenceClaim<'a> {
        EvidenceClaim {
            offender: self.offender(),
            offence: self.offence(),
            evidence: encoded,
        }
    }

    /// The validator the evidence names (check it with [`verify`](Self::verify)).
    pub fn offender(&self) -> PublicKey {
        match self {
            Evidence::DoubleVote { first, .. } => first.vote.validator,
            Evidence::DoubleProposal { first, .. } => first.summary.proposer,
        }
    }
}

/// Tag of offence ids inside the [`domain::TENDERMINT`] domain (votes, proposals and block ids
/// use 0 to 2).
const OFFENCE_TAG: u8 = 3;

impl crate::codec::Canonical for Evidence {
    const NAME: &'static str = "tendermint evidence";
    const MAX_ENCODED_LEN: usize = crate::access::MAX_EVIDENCE_LEN;
}
