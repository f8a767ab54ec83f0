//! The protocol's messages. Each has a canonical, bounded encoding.

use serde::{Deserialize, Serialize};

use super::identity::IdentityProof;
use super::seal::{
    committee_digest, roster_digest, CommitteeSeal, DirectoryCert, FinalValue, MemberSignature,
    Phase, Reveal, ShardCertificate, ShardSummary, Stage,
};
use super::Transaction;
use super::{MAX_COMMITTEE_SIZE, MAX_SHARDS};
use crate::block::{Header, MAX_HEADER_LEN};
use crate::codec::{BoundedVec, Canonical};
use crate::hash::{BlockHash, Digest, TxId};
use crate::merkle::merkle_root;
use crate::tx::Signature;

/// The most transactions one shard contributes to a block.
pub const MAX_SHARD_TXS: usize = 1 << 14;
/// The largest encoded protocol message accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = MAX_HEADER_LEN;

/// A shard committee's value: its shard's transactions, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardValue {
    /// The transactions.
    pub txs: BoundedVec<Transaction, MAX_SHARD_TXS>,
}

impl ShardValue {
    /// The summary certified for `shard`.
    pub fn summary(&self, shard: u16) -> ShardSummary {
        Self::summary_of(&self.txs, shard)
    }

    /// The summary of `txs` as `shard`'s value.
    pub(crate) fn summary_of(txs: &[Transaction], shard: u16) -> ShardSummary {
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        ShardSummary {
            shard,
            tx_root: merkle_root(&ids),
            tx_count: txs.len() as u32,
        }
    }
}

/// A value under agreement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A shard's transactions.
    Shard(ShardValue),
    /// The final block's content.
    Final(Box<FinalValue>),
    /// The epoch's committees, agreed by the directory.
    Roster(Roster),
}

impl Value {
    /// The digest votes carry: the shard summary's digest (for `shard`) or the final value's.
    pub fn digest(&self, stage: Stage) -> Digest {
        match (self, stage) {
            (Value::Shard(v), Stage::Shard(s)) => v.summary(s).digest(),
            (Value::Shard(v), _) => v.summary(u16::MAX).digest(),
            (Value::Final(v), _) => v.digest(),
            (Value::Roster(r), _) => r.digest(),
        }
    }
}

/// Prevotes of one round for one value: proof that the value may be re-proposed over a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pol {
    /// The round of the prevotes.
    pub round: u32,
    /// More than two thirds of the committee's prevotes.
    pub signatures: BoundedVec<MemberSignature, MAX_COMMITTEE_SIZE>,
}

/// A leader's proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// Which agreement.
    pub stage: Stage,
    /// The round.
    pub round: u32,
    /// The proposed value.
    pub value: Value,
    /// Prevotes for this value in an earlier round, when re-proposing a locked value.
    pub pol: Option<Pol>,
    /// The leader's signature over the [`VoteBody`](super::VoteBody) of phase `Propose`.
    pub signature: Signature,
}

/// A leader's proposal of a value the recipient already holds, by the value's digest: a
/// leader re-proposing a locked value sends it this way to the members whose prevote for the
/// value it has seen (they hold it), and the value itself, as a [`Proposal`], to the others.
/// The signature is the one a [`Proposal`] of that value carries, so the two forms are one
/// proposal to a member that holds the value, and a leader that signs two values for one
/// round is caught whichever form it uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestProposal {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// Which agreement.
    pub stage: Stage,
    /// The round.
    pub round: u32,
    /// The proposed value's digest.
    pub value: Digest,
    /// Prevotes for this value in an earlier round, when re-proposing a locked value.
    pub pol: Option<Pol>,
    /// The leader's signature over the [`VoteBody`](super::VoteBody) of phase `Propose`.
    pub signature: Signature,
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// Which agreement.
    pub stage: Stage,
    /// The round.
    pub round: u32,
    /// Prevote or precommit.
    pub phase: Phase,
    /// The value's digest.
    pub value: Digest,
    /// The voter's index in its committee.
    pub member: u16,
    /// Signature over the [`VoteBody`](super::VoteBody).
    pub signature: Signature,
    /// In a prevote, the leader's signature of the proposal of `value` (over the
    /// [`VoteBody`](super::VoteBody) of phase `Propose`): a member that holds the leader's
    /// signature of another value for the round then holds proof that the leader equivocated.
    pub proposal: Option<Signature>,
}

/// Precommits of one round for one value, relayed together (final members relay the deciding
/// round's precommits so that all of them seal the same certificate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precommits {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// Which agreement.
    pub stage: Stage,
    /// The round.
    pub round: u32,
    /// The value's digest.
    pub value: Digest,
    /// The precommit signatures, by strictly increasing member index.
    pub signatures: BoundedVec<MemberSignature, MAX_COMMITTEE_SIZE>,
}

/// A member moving to a new round, with the highest prevote quorum it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundChange {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// Which agreement.
    pub stage: Stage,
    /// The round being entered.
    pub round: u32,
    /// The value digest and prevotes of the highest prevote quorum known.
    pub pol: Option<(Digest, Pol)>,
    /// The value of that quorum, sent to the new round's leader by a member that holds it, so
    /// that a leader which saw only the value's digest can re-propose it. A recipient uses it
    /// only if it hashes to the quorum's digest.
    pub value: Option<Value>,
}

/// The epoch's committees as a directory member proposes them: committee `j`'s members,
/// sorted by key, at index `j` (committee 0 is the final committee).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The member lists, one per committee.
    pub committees: BoundedVec<BoundedVec<IdentityProof, MAX_COMMITTEE_SIZE>, MAX_SHARDS>,
}

impl Roster {
    /// Each committee's [`committee_digest`], by committee.
    pub fn digests(&self) -> Vec<Digest> {
        self.committees
            .iter()
            .enumerate()
            .map(|(j, m)| committee_digest(j as u16, m))
            .collect()
    }

    /// The value the directory votes on ([`roster_digest`] of [`digests`](Self::digests)).
    pub fn digest(&self) -> Digest {
        roster_digest(&self.digests())
    }
}

/// The directory's decision as one node needs it, sent by every directory member once the
/// directory agreed: the recipient's committee and the final committee, with the directory's
/// certificate that they are the lists it decided (so one honest sender is enough, and no
/// number of other senders can make up a committee).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeAssignment {
    /// The epoch (block height).
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// The recipient's committee, or `None` if it was not selected this epoch.
    pub committee: Option<u16>,
    /// That committee's members, sorted by key.
    pub members: BoundedVec<IdentityProof, MAX_COMMITTEE_SIZE>,
    /// The final committee's members, sorted by key.
    pub final_members: BoundedVec<IdentityProof, MAX_COMMITTEE_SIZE>,
    /// The directory's certificate of every committee's list.
    pub cert: DirectoryCert,
    /// The sender's reveal of the share it committed in the parent block (to final members).
    pub reveal: Option<Reveal>,
}

/// A certified shard result, sent to the final committee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardResult {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// The shard's summary and certificate.
    pub cert: ShardCertificate,
    /// The shard's transactions.
    pub txs: BoundedVec<Transaction, MAX_SHARD_TXS>,
}

/// A shard's transactions sent ahead of its certificate: a shard member that precommits a
/// value sends it to the final members it will send the shard's result to, while the
/// agreement finishes, and once the value is decided sends only its certificate
/// ([`ShardCertified`]). The batch proves nothing alone; a final member keeps it (bounded) until
/// a certificate of its summary arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBatch {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// The shard.
    pub shard: u16,
    /// The transactions of the value the sender precommitted.
    pub txs: BoundedVec<Transaction, MAX_SHARD_TXS>,
}

/// A shard's decision without its transactions, for a final member the sender gave the
/// decided value to ahead ([`ShardBatch`]): with that batch, a [`ShardResult`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCertified {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// The shard's summary and certificate.
    pub cert: ShardCertificate,
}

/// A final member's request for the certified results of shards it lacks: sent to the
/// leader whose proposal includes them (without them the member cannot check the proposal),
/// and by a leader still missing results, while the shards it holds have long decided, to
/// two other final members. Answered, by a final member that holds any, with each certified
/// result it holds of those shards (two for a shard split beyond its bound) as a
/// [`ShardResult`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRequest {
    /// Height of the block.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// The shards whose results are wanted.
    pub shards: BoundedVec<u16, MAX_SHARDS>,
}

/// A final member's announcement that a block is final: the sealed header itself, whose final
/// certificate proves that the final committee certified it. A node moves to the next epoch only
/// on an announcement whose seal checks against what it knows of the parent and the epoch's
/// committee (as [`CommitteeConsensus`](super::CommitteeConsensus) checks a block's seal), so
/// made-up announcements change nothing however many peers send them. Everything the next
/// epoch needs (randomness, directory, commitments) is read from the seal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextEpoch {
    /// The final block's header, with its committee seal.
    pub header: Header<CommitteeSeal>,
}

impl NextEpoch {
    /// Height of the final block.
    pub fn height(&self) -> u64 {
        self.header.height
    }
}

/// Every protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A node's identity for an epoch, sent to the directory.
    Identity {
        /// The epoch.
        height: u64,
        /// The proof.
        proof: IdentityProof,
    },
    /// The directory's decision, for one recipient.
    Assignment(CommitteeAssignment),
    /// A leader's proposal.
    Proposal(Proposal),
    /// A prevote or precommit.
    Vote(Vote),
    /// A round change.
    RoundChange(RoundChange),
    /// Relayed precommits.
    Precommits(Precommits),
    /// A certified shard result.
    ShardResult(ShardResult),
    /// A final member's randomness commitment, sent to the other final members.
    Commitment {
        /// The epoch.
        height: u64,
        /// The commitment.
        value: Digest,
    },
    /// A block is final.
    Next(NextEpoch),
    /// A leader's proposal by digest, to members that hold the value.
    DigestProposal(DigestProposal),
    /// A shard's transactions, sent to final members ahead of its certificate.
    ShardBatch(ShardBatch),
    /// A shard's certificate, for final members that received its transactions ahead.
    ShardCertified(ShardCertified),
    /// A final member's request for shard results it lacks.
    ShardRequest(ShardRequest),
}

impl Message {
    /// The epoch (block height) the message belongs to.
    pub fn height(&self) -> u64 {
        match self {
            Message::Identity { height, .. } | Message::Commitment { height, .. } => *height,
            Message::Assignment(m) => m.height,
            Message::Proposal(p) => p.height,
            Message::DigestProposal(p) => p.height,
            Message::Vote(v) => v.height,
            Message::RoundChange(r) => r.height,
            Message::Precommits(p) => p.height,
            Message::ShardResult(r) => r.height,
            Message::ShardBatch(b) => b.height,
            Message::ShardCertified(c) => c.height,
            Message::ShardRequest(r) => r.height,
            Message::Next(n) => n.height(),
        }
    }

    /// A short name of the message kind (for statistics).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Identity { .. } => "identity",
            Message::Assignment(_) => "assignment",
            Message::Proposal(_) => "proposal",
            Message::DigestProposal(_) => "digest-proposal",
            Message::Vote(_) => "vote",
            Message::RoundChange(_) => "round-change",
            Message::Precommits(_) => "precommits",
            Message::ShardResult(_) => "shard-result",
            Message::ShardBatch(_) => "shard-batch",
            Message::ShardCertified(_) => "shard-certified",
            Message::ShardRequest(_) => "shard-request",
            Message::Commitment { .. } => "commitment",
            Message::Next(_) => "next",
        }
    }
}

macro_rules! canonical {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl Canonical for $t {
            const NAME: &'static str = $name;
            const MAX_ENCODED_LEN: usize = MAX_MESSAGE_LEN;
        }
    )*};
}

canonical! {
    Message => "committee message",
    Proposal => "committee proposal",
    DigestProposal => "committee proposal by digest",
    Vote => "committee vote",
    RoundChange => "committee round change",
    Precommits => "committee precommits",
    CommitteeAssignment => "committee assignment",
    Roster => "committee roster",
    ShardResult => "committee shard result",
    ShardBatch => "committee shard batch",
    ShardCertified => "committee shard certificate",
    ShardRequest => "committee shard request",
    NextEpoch => "committee next epoch",
    Value => "committee value",
    Pol => "committee prevote quorum",
}
