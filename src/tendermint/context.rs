//! Malachite's `Context` for the crate's types: what its driver, round state machine and vote
//! keeper run on. Internal: the engine converts to and from these at its edges.

use core::fmt;
use core::marker::PhantomData;
use std::sync::Arc;

use malachitebft_core_types as mc;
use malachitebft_core_types::{NilOrVal, Round};

use super::types::{
    BlockId, Proposal, ProposedBlock, SignedProposal, SignedVote, Validator, ValidatorSet, Vote,
    VoteKind,
};
use crate::tx::{AppPayload, Keypair, PublicKey, Signature};

/// The Malachite context of a chain whose transactions carry `P`.
pub(crate) struct Ctx<P>(PhantomData<fn() -> P>);

impl<P> Ctx<P> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<P> Clone for Ctx<P> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<P> fmt::Debug for Ctx<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ctx")
    }
}

/// A block height as Malachite counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct MHeight(pub(crate) u64);

impl fmt::Display for MHeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl mc::Height for MHeight {
    const ZERO: Self = Self(0);
    const INITIAL: Self = Self(1);

    fn increment_by(&self, n: u64) -> Self {
        Self(self.0.saturating_add(n))
    }
    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Self)
    }
    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A signature, ordered by its bytes (Malachite keeps signatures in ordered collections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sig(pub(crate) Signature);

impl PartialOrd for Sig {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sig {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.0.to_bytes().cmp(&other.0.to_bytes())
    }
}

/// Ed25519, as the crate signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ed25519;

impl mc::SigningScheme for Ed25519 {
    type DecodingError = String;
    type Signature = Sig;
    type PublicKey = PublicKey;
    type PrivateKey = Arc<Keypair>;

    fn decode_signature(bytes: &[u8]) -> Result<Sig, String> {
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|_| format!("a signature has 64 bytes, not {}", bytes.len()))?;
        Ok(Sig(Signature::from_bytes(bytes)))
    }
    fn encode_signature(signature: &Sig) -> Vec<u8> {
        signature.0.to_bytes().to_vec()
    }
    fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, String> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("a public key has 32 bytes, not {}", bytes.len()))?;
        Ok(PublicKey::from_bytes(bytes))
    }
    fn encode_public_key(key: &PublicKey) -> Vec<u8> {
        key.to_bytes().to_vec()
    }
}

/// Proposals are sent whole; there are no parts (the type has no values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NoParts {}

impl<P: AppPayload> mc::ProposalPart<Ctx<P>> for NoParts {
    fn is_first(&self) -> bool {
        match *self {}
    }
    fn is_last(&self) -> bool {
        match *self {}
    }
}

impl mc::Address for PublicKey {}

impl<P: AppPayload> mc::Value for ProposedBlock<P> {
    type Id = BlockId;
    fn id(&self) -> BlockId {
        ProposedBlock::id(self)
    }
}

/// A vote as Malachite reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MVote {
    pub(crate) vote: Vote,
    value: NilOrVal<BlockId>,
}

impl From<Vote> for MVote {
    fn from(vote: Vote) -> Self {
        let value = match vote.block {
            Some(id) => NilOrVal::Val(id),
            None => NilOrVal::Nil,
        };
        Self { vote, value }
    }
}

fn round_of(r: Round) -> u32 {
    // The driver builds votes and proposals only in a started round (never `Round::Nil`).
    r.as_u32().unwrap_or(0)
}

impl<P: AppPayload> mc::Vote<Ctx<P>> for MVote {
    fn height(&self) -> MHeight {
        MHeight(self.vote.height)
    }
    fn round(&self) -> Round {
        Round::new(self.vote.round)
    }
    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }
    fn vote_type(&self) -> mc::VoteType {
        match self.vote.kind {
            VoteKind::Prevote => mc::VoteType::Prevote,
            VoteKind::Precommit => mc::VoteType::Precommit,
        }
    }
    fn validator_address(&self) -> &PublicKey {
        &self.vote.validator
    }
    fn extension(&self) -> Option<&mc::SignedExtension<Ctx<P>>> {
        None
    }
    fn take_extension(&mut self) -> Option<mc::SignedExtension<Ctx<P>>> {
        None
    }
    fn extend(self, _: mc::SignedExtension<Ctx<P>>) -> Self {
        // Vote extensions are disabled: the driver never asks for one.
        self
    }
}

/// A proposal as Malachite reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MProposal<P> {
    pub(crate) proposal: Proposal<P>,
    height: MHeight,
}

impl<P: AppPayload> From<Proposal<P>> for MProposal<P> {
    fn from(proposal: Proposal<P>) -> Self {
        Self {
            height: MHeight(proposal.height()),
            proposal,
        }
    }
}

impl<P: AppPayload> mc::Proposal<Ctx<P>> for MProposal<P> {
    fn height(&self) -> MHeight {
        self.height
    }
    fn round(&self) -> Round {
        Round::new(self.proposal.round)
    }
    fn value(&self) -> &ProposedBlock<P> {
        &self.proposal.block
    }
    fn take_value(self) -> ProposedBlock<P> {
        self.proposal.block
    }
    fn pol_round(&self) -> Round {
        self.proposal.pol_round.map_or(Round::Nil, Round::new)
    }
    fn validator_address(&self) -> &PublicKey {
        &self.proposal.proposer
    }
}

impl<P: AppPayload> mc::Validator<Ctx<P>> for Validator {
    fn address(&self) -> &PublicKey {
        self.key_ref()
    }
    fn public_key(&self) -> &PublicKey {
        self.key_ref()
    }
    fn voting_power(&self) -> mc::VotingPower {
        self.power()
    }
}

impl<P: AppPayload> mc::ValidatorSet<Ctx<P>> for ValidatorSet {
    fn count(&self) -> usize {
        self.len()
    }
    fn total_voting_power(&self) -> mc::VotingPower {
        self.total_power()
    }
    fn get_by_address(&self, address: &PublicKey) -> Option<&Validator> {
        self.get(address)
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.by_index(index)
    }
}

impl<P: AppPayload> mc::Context for Ctx<P> {
    type Address = PublicKey;
    type Height = MHeight;
    type ProposalPart = NoParts;
    type Proposal = MProposal<P>;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = mc::LinearTimeouts;
    type Value = ProposedBlock<P>;
    type Vote = MVote;
    type Extension = ();
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: MHeight,
        round: Round,
    ) -> &'a Validator {
        validator_set.proposer(height.0, round_of(round))
    }

    fn new_proposal(
        &self,
        _height: MHeight,
        round: Round,
        value: ProposedBlock<P>,
        pol_round: Round,
        address: PublicKey,
    ) -> MProposal<P> {
        MProposal::from(Proposal {
            round: round_of(round),
            pol_round: pol_round.as_u32(),
            proposer: address,
            block: value,
        })
    }

    fn new_prevote(
        &self,
        height: MHeight,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: PublicKey,
    ) -> MVote {
        new_vote(VoteKind::Prevote, height, round, value_id, address)
    }

    fn new_precommit(
        &self,
        height: MHeight,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: PublicKey,
    ) -> MVote {
        new_vote(VoteKind::Precommit, height, round, value_id, address)
    }
}

fn new_vote(
    kind: VoteKind,
    height: MHeight,
    round: Round,
    value: NilOrVal<BlockId>,
    validator: PublicKey,
) -> MVote {
    MVote::from(Vote {
        kind,
        height: height.0,
        round: round_of(round),
        block: match value {
            NilOrVal::Val(id) => Some(id),
            NilOrVal::Nil => None,
        },
        validator,
    })
}

/// A signed vote as Malachite keeps it.
pub(crate) type MSignedVote<P> = mc::SignedVote<Ctx<P>>;
/// A signed proposal as Malachite keeps it.
pub(crate) type MSignedProposal<P> = mc::SignedProposal<Ctx<P>>;

pub(crate) fn to_mvote<P: AppPayload>(v: &SignedVote) -> MSignedVote<P> {
    mc::SignedMessage::new(MVote::from(v.vote), Sig(v.signature))
}

pub(crate) fn from_mvote<P: AppPayload>(v: &MSignedVote<P>) -> SignedVote {
    SignedVote {
        vote: v.message.vote,
        signature: v.signature.0,
    }
}

pub(crate) fn to_mproposal<P: AppPayload>(p: &SignedProposal<P>) -> MSignedProposal<P> {
    mc::SignedMessage::new(MProposal::from(p.proposal.clone()), Sig(p.signature))
}

pub(crate) fn from_mproposal<P: AppPayload>(p: &MSignedProposal<P>) -> SignedProposal<P> {
    SignedProposal {
        proposal: p.message.proposal.clone(),
        signature: p.signature.0,
    }
}
