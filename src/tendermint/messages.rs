//! What validators send each other.

use serde::{Deserialize, Serialize};

use super::seal::{PolkaCertificate, TendermintSeal};
use super::types::{BlockId, ProposedBlock, SignedProposal, SignedVote};
use crate::block::{Block, MAX_BLOCK_LEN};
use crate::codec::Canonical;
use crate::hash::ChainId;
use crate::tx::{AppPayload, Keypair};

/// The largest encoded message accepted, in bytes: a proposal carries a whole block, and a
/// decided block its commit certificate besides.
pub const MAX_MESSAGE_LEN: usize = MAX_BLOCK_LEN + 128 * 1024;

/// A Tendermint message. Decode untrusted bytes with [`codec::decode`](crate::codec::decode)
/// (or [`Protocol::decode_message`](crate::consensus::Protocol::decode_message)): bounded by
/// [`MAX_MESSAGE_LEN`], canonical, never panics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "P: AppPayload", deserialize = "P: AppPayload"))]
#[allow(clippy::large_enum_variant)] // moved once from decoder to engine; boxing only allocates
pub enum Message<P> {
    /// The round's proposer offers a block.
    Proposal {
        /// The signed proposal.
        proposal: SignedProposal<P>,
        /// The seal of the proposed block's parent as the proposer holds it (see
        /// [`Tendermint`](super::Tendermint) on why validators may hold different seals of the
        /// same block).
        parent_seal: TendermintSeal,
    },
    /// A prevote or a precommit.
    Vote(SignedVote),
    /// The prevote quorum behind a re-proposed or locked block, for validators that missed
    /// some of those prevotes.
    Polka(PolkaCertificate),
    /// A block already decided, with its commit certificate: the answer to a peer still voting
    /// at a height this node has finished.
    Decided {
        /// The block.
        block: Block<TendermintSeal, P>,
        /// The seal of its parent as the sender holds it.
        parent_seal: TendermintSeal,
    },
}

impl<P: AppPayload> Canonical for Message<P> {
    const NAME: &'static str = "tendermint message";
    const MAX_ENCODED_LEN: usize = MAX_MESSAGE_LEN;
}

impl<P: AppPayload> Message<P> {
    /// The height the message is about.
    pub fn height(&self) -> u64 {
        match self {
            Message::Proposal { proposal, .. } => proposal.proposal.height(),
            Message::Vote(v) => v.vote.height,
            Message::Polka(p) => p.height,
            Message::Decided { block, .. } => block.header.height,
        }
    }

    /// What an equivocating validator sends beside this message, signed with `key` for
    /// `chain`: a vote for another block (or nil), or a second proposal of the same transactions
    /// one second later; `None` for a message with nothing to equivocate about. For simulations
    /// and tests of Byzantine validators.
    pub fn conflicting(&self, key: &Keypair, chain: ChainId) -> Option<Self> {
        match self {
            Message::Vote(v) => {
                let mut vote = v.vote;
                vote.block = match vote.block {
                    Some(_) => None,
                    None => Some(BlockId::from_bytes([7; 32])),
                };
                Some(Message::Vote(vote.sign(key, chain)))
            }
            Message::Proposal {
                proposal,
                parent_seal,
            } => {
                let mut p = proposal.proposal.clone();
                let mut block = p.block.block().clone();
                block.header.timestamp += 1;
                p.block = ProposedBlock::new(block);
                Some(Message::Proposal {
                    proposal: p.sign(key, chain),
                    parent_seal: parent_seal.clone(),
                })
            }
            Message::Decided { .. } | Message::Polka(_) => None,
        }
    }
}
