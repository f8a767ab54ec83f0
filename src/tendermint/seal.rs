//! The commit certificate that seals a block, the stateless check of it, and evidence of double
//! signing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::types::{
    block_id, BlockId, SignedSummary, SignedVote, ValidatorSet, Vote, VoteKind, MAX_VALIDATORS,
};
use super::TendermintError;
use crate::block::Header;
use crate::codec::BoundedVec;
use crate::consensus::{Ancestors, Consensus, ConsensusError, EngineError, Work};
use crate::hash::{domain, ChainId};
use crate::tx::{PublicKey, Signature};

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
/// power for this block in one round.
///
/// The precommits sign the chain id, the height, the round and the [`BlockId`], which is the hash
/// of the header without this seal; so a certificate for one height, round, block or chain
/// proves nothing about another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TendermintSeal {
    /// The round in which the block was decided.
    pub round: u32,
    /// Precommit signatures, by strictly increasing validator index.
    pub signatures: BoundedVec<CommitSignature, MAX_VALIDATORS>,
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
/// A light client verifies a header with this type alone
/// ([`verify_commit`](Self::verify_commit)): no ancestors, no state.
#[derive(Clone, Debug)]
pub struct TendermintConsensus {
    chain: ChainId,
    validators: Arc<ValidatorSet>,
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
            validators: Arc::new(validators),
        }
    }

    /// The chain id votes are bound to.
    pub fn chain_id(&self) -> ChainId {
        self.chain
    }

    /// The validator set.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// Checks `header`'s commit certificate: signatures by strictly increasing indices of known
    /// validators, each a valid precommit for this header's block id, height, round and chain,
    /// together more than two thirds of the voting power.
    ///
    /// # Errors
    ///
    /// [`TendermintError`] naming the first problem.
    pub fn verify_commit(&self, header: &Header<TendermintSeal>) -> Result<(), TendermintError> {
        self.verify_quorum(
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
    pub fn verify_polka(&self, polka: &PolkaCertificate) -> Result<(), TendermintError> {
        self.verify_quorum(
            VoteKind::Prevote,
            polka.height,
            polka.round,
            polka.block,
            &polka.signatures,
        )
    }

    fn verify_quorum(
        &self,
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
            self.validators.verify(index, &digest, &s.signature)?;
            signed += self.validators.validators()[index].power();
        }
        if !self.validators.is_quorum(signed) {
            return Err(TendermintError::InsufficientPower {
                signed,
                total: self.validators.total_power(),
            });
        }
        Ok(())
    }

    /// Builds the seal of `block` decided in `round` from precommits; keeps only valid
    /// precommits for that block, round and height.
    ///
    /// # Errors
    ///
    /// [`TendermintError::InsufficientPower`] if those do not reach a quorum.
    pub fn seal_from_precommits<'a>(
        &self,
        height: u64,
        round: u32,
        block: BlockId,
        precommits: impl IntoIterator<Item = &'a SignedVote>,
    ) -> Result<TendermintSeal, TendermintError> {
        let mut sigs: Vec<CommitSignature> = Vec::new();
        for p in precommits {
            let v = &p.vote;
            if v.kind != VoteKind::Precommit
                || v.height != height
                || v.round != round
                || v.block != Some(block)
            {
                continue;
            }
            let Ok(index) = p.verify(&self.validators, self.chain) else {
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
            .map(|s| self.validators.validators()[usize::from(s.validator)].power())
            .sum();
        if !self.validators.is_quorum(signed) {
            return Err(TendermintError::InsufficientPower {
                signed,
                total: self.validators.total_power(),
            });
        }
        Ok(TendermintSeal {
            round,
            signatures: BoundedVec::try_from(sigs).expect("at most MAX_VALIDATORS signatures"),
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
        TendermintSeal::default()
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
        self.verify_commit(header)?;
        Ok(Work::from_u64(1))
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
        let (vs, chain) = (engine.validators(), engine.chain_id());
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

    /// The validator the evidence names (check it with [`verify`](Self::verify)).
    pub fn offender(&self) -> PublicKey {
        match self {
            Evidence::DoubleVote { first, .. } => first.vote.validator,
            Evidence::DoubleProposal { first, .. } => first.summary.proposer,
        }
    }
}
