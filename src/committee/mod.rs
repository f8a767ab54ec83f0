//! Partitioned committee consensus after SCP and Elastico (Luu et al., ePrint 2015/1168;
//! CCS 2016).
//!
//! Each epoch produces one block:
//!
//! 1. **Identities.** Every node mines a nonce so that the [`IdentityHash`] of
//!    `epoch randomness ‖ public key ‖ nonce` has [`CommitteeParams::identity_difficulty`]
//!    leading zero bits. The randomness comes from the parent block's seal, so no identity can
//!    be precomputed.
//! 2. **Committees.** The last [`CommitteeParams::shard_bits`] bits of the identity hash pick one
//!    of `2^s` committees. Committee 0 is also the final committee.
//! 3. **Directory.** The directory (the previous block's final committee; for the first block
//!    the chain's bootstrap keys, [`CommitteeParams::bootstrap`]) collects identities for a
//!    window, then agrees on the epoch's **roster** with the same locking BFT as the committees
//!    (a leader proposes the committees of the identities it received, members accept any valid
//!    roster, round changes on timeouts): in each committee the first
//!    [`CommitteeParams::committee_size`] identities that reached the leader (Elastico's
//!    first-c rule, one per key, none after the window), sorted by key.
//!    More than two thirds of the directory sign it ([`DirectoryCert`]), and each directory
//!    member sends every node its committee with that certificate.
//! 4. **Shards.** Transactions are sharded by sender account ([`shard_of`]), so nonces never
//!    conflict across shards. Each committee agrees on its shard's transactions with a
//!    two-phase, locking BFT protocol (proposal, prevote, precommit; a round change when a leader
//!    is silent or equivocates) and certifies the result with more than two thirds of its
//!    members' Ed25519 signatures. A member sends the value it precommits to two final members
//!    (more if its shard is smaller than the final committee, so that every final member hears
//!    from two members of each shard) ([`ShardBatch`]) and, once decided, the certificate
//!    ([`ShardCertified`]; the whole [`ShardResult`] if it sent no batch).
//! 5. **Final block.** The final committee merges the certified shard results into one block,
//!    certifies it the same way, and its members commit to randomness shares that the next
//!    final committee includes as reveals; their XOR seeds the next epoch. The final leader
//!    does not wait for every shard: once more than half the shards' results are in, the rest
//!    get as long again as those took (at most [`Timing::final_wait`]), and a shard left out
//!    leaves its transactions to the next block. Halfway there, a leader still missing
//!    results asks two other final members for them ([`ShardRequest`]); a final member that
//!    lacks a result the leader's value includes asks the leader, and checks the value when
//!    it arrives.
//!
//! The block's [`CommitteeSeal`] lets a node that saw none of the messages verify all of this:
//! [`CommitteeConsensus`] implements [`Consensus`](crate::consensus::Consensus), checking the
//! randomness against the parent's seal, every member's identity proof and committee bits,
//! quorum sizes and signatures, and (in `verify_body`) that each transaction sits in its
//! shard's slice and that the slices match the certified shard roots. A certified block is final
//! ([`Finality::Instant`](crate::consensus::Finality)): the chain never reverts it, whatever
//! another branch weighs. The block hash leaves out who signed the final certificate and in
//! which round ([`Seal`](crate::block::Seal)), so every final member that decided a value seals
//! the same block, whichever quorum of precommits it collected.
//!
//! [`Node`] is the protocol as a sans-I/O state machine that implements the crate's
//! [`Protocol`](crate::consensus::protocol::Protocol) interface: it takes messages and timers and
//! returns messages to send and blocks to append, so any driver of that interface runs it; the
//! simulator (`medledger::sim`, feature `lab`) drives many of them on its modelled network.
//!
//! With the `lab` feature, `failure_probability` gives the exact hypergeometric probability that
//! a committee holds too many Byzantine members, with helpers for whole epochs.
//!
//! # Trust model
//!
//! The transport authenticates senders (as mutual TLS would); only what must convince third
//! parties is signed: proposals, prevotes and precommits. Sybil resistance is the identity proof
//! of work: certifying a shard needs more than two thirds of `committee_size` distinct identities
//! of that shard's committee, each a fresh proof against the epoch's randomness. As in Elastico,
//! the final committee chooses which of the revealed shares it includes (at least a majority of
//! the committed ones), which lets it bias the next randomness by that choice only.
//!
//! # Threat model
//!
//! - **An outsider** (any key, any amount of identity proof of work, no seat) cannot make a
//!   block: a seal counts only certificates by exactly the committees the directory certified,
//!   and the directory's certificate needs more than two thirds of the parent's final committee
//!   (the bootstrap keys for block 1), so trust runs unbroken from genesis. It cannot move nodes
//!   to another epoch either: a `NextEpoch` announcement is the sealed header, checked like a
//!   block. Identities it sends to some directory members only are included or not as the
//!   directory's leader decides; they no longer split the directory.
//! - **A Byzantine member** (fewer than a third of a committee's seats) cannot make its
//!   committee certify two values at one height (locking BFT), nor change a certified value;
//!   it can be silent, equivocate, or lead badly, which costs round changes. As the directory's
//!   leader it can leave honest identities out of the roster (they are not checked for
//!   completeness, since others may not have received them): a bias on who sits, bounded by
//!   the rounds it leads. It can propose a final committee too small to certify (which
//!   restarts the epoch) only if the members that accept it had no more identities
//!   themselves. As the final committee's leader it can leave certified shards out of the
//!   block (members cannot tell a straggler from a shard withheld): their transactions wait
//!   for the next block, a delay bounded by the rounds it leads.
//! - **A Byzantine final committee** (a third or more of the final seats) can stop the chain,
//!   and with two thirds or more it can certify any block and the next roster: the protocol's
//!   safety is the probability that no committee is that corrupted
//!   (`failure_probability` with the `lab` feature, whose documentation says what that model
//!   assumes). Seats go to the first identities that reach the directory, not the smallest
//!   hashes, so mining longer buys no seats.
//! - **Liveness.** An epoch whose certified final committee has fewer members than a
//!   certificate needs can never make a block; the directory's certificate proves it, and every
//!   node that adopts it **restarts** the epoch: the next attempt, with randomness
//!   [`attempt_randomness`] derived from the height's and the attempt number, fresh identities
//!   and committees (at most [`MAX_ATTEMPTS`]). Every vote signs its attempt, so no vote counts
//!   in another attempt, and the chain accepts a block of any attempt. A node still in an
//!   epoch re-sends its identity to the directory every [`Timing::resend`]: a directory member
//!   answers with the node's assignment, a peer already past the epoch with the block
//!   announcement that ended it; final members re-send their randomness commitments. Lost
//!   messages and healed partitions then stall nobody for good; while more than a third of a
//!   committee is cut off, it makes no progress (safety first).
//!
//! A certified block is final: the chain never reverts it, whatever another branch weighs.

mod bft;
mod engine;
#[cfg(feature = "lab")]
mod failure;
mod identity;
mod messages;
mod node;
mod seal;
#[cfg(test)]
mod tests;

pub use engine::CommitteeConsensus;
#[cfg(feature = "lab")]
pub use failure::{
    epoch_failure_probability, epoch_failure_union_bound, expected_epochs_to_failure,
    failure_probability, failure_threshold, ln_binomial, ln_factorial, ln_failure_probability,
};
pub use identity::{IdentityHash, IdentityProof, Randomness};
pub use messages::{
    CommitteeAssignment, DigestProposal, Message, NextEpoch, Pol, Precommits, Proposal, Roster,
    RoundChange, ShardBatch, ShardCertified, ShardRequest, ShardResult, ShardValue, Value, Vote,
    MAX_MESSAGE_LEN, MAX_SHARD_TXS,
};
pub use node::{
    Decision, Host, Node, NodeConfig, NodeStatus, Tick, Timing, TipInfo, MAX_BUFFERED_BYTES,
    MAX_BUFFERED_MESSAGES, MAX_KEPT_DECISIONS,
};
pub use seal::{
    attempt_of, attempt_randomness, commitment_of, committee_digest, genesis_randomness,
    next_randomness, roster_digest, Certificate, Commitment, CommitteeSeal, DirectoryCert,
    FinalValue, MemberSignature, Phase, Reveal, ShardCertificate, ShardSummary, Stage, VoteBody,
    MAX_SEAL_LEN,
};

use crate::hash::AccountId;
use crate::tx::PublicKey;

/// The transactions the committee protocol orders: MedRec's. The engine's seal checks
/// ([`CommitteeConsensus`]) work for any application; the message-driven [`Node`] carries this
/// one payload until the protocol interface makes it generic.
pub type Transaction = crate::tx::Transaction<crate::access::Payload>;

/// The most shard bits: at most 256 committees.
pub const MAX_SHARD_BITS: u8 = 8;
/// The most committees (shards) a block may certify.
pub const MAX_SHARDS: usize = 1 << MAX_SHARD_BITS;
/// The largest committee.
pub const MAX_COMMITTEE_SIZE: usize = 512;
/// The most attempts at one height: an epoch restarts at most `MAX_ATTEMPTS - 1` times
/// ([`attempt_randomness`]).
pub const MAX_ATTEMPTS: u32 = 16;
/// The highest identity difficulty (leading zero bits).
pub const MAX_IDENTITY_DIFFICULTY: u8 = 64;

/// The shard of an account: the low `shard_bits` bits of its first two bytes (account ids are
/// Ed25519 keys, uniformly spread).
pub fn shard_of(account: &AccountId, shard_bits: u8) -> u16 {
    let b = account.as_bytes();
    let v = u16::from_le_bytes([b[0], b[1]]);
    if shard_bits >= 16 {
        v
    } else {
        v & ((1u16 << shard_bits) - 1)
    }
}

/// The smallest number of signatures that certifies a committee of `size`: more than two thirds.
pub const fn quorum_of(size: u16) -> usize {
    (2 * size as usize) / 3 + 1
}

/// Parameters of the committee protocol, fixed for a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitteeParams {
    shard_bits: u8,
    committee_size: u16,
    identity_difficulty: u8,
    max_future_drift: u64,
    genesis_randomness: Randomness,
    bootstrap: Vec<PublicKey>,
}

impl CommitteeParams {
    /// A builder with defaults: 4 committees, committees of 16, difficulty 8, two hours' drift.
    pub fn builder() -> CommitteeParamsBuilder {
        CommitteeParamsBuilder {
            shard_bits: 2,
            committee_size: 16,
            identity_difficulty: 8,
            max_future_drift: 2 * 60 * 60,
            genesis_seed: b"medledger committee genesis".to_vec(),
            bootstrap: Vec::new(),
        }
    }
    /// The first block's directory: the keys that certify its committees (every later block's
    /// directory is its parent's final committee).
    pub fn bootstrap(&self) -> &[PublicKey] {
        &self.bootstrap
    }
    /// `s`: there are `2^s` committees.
    pub fn shard_bits(&self) -> u8 {
        self.shard_bits
    }
    /// The number of committees (shards), `2^s`.
    pub fn committees(&self) -> usize {
        1 << self.shard_bits
    }
    /// `c`: the most members a committee has (the directory publishes at most this many).
    pub fn committee_size(&self) -> u16 {
        self.committee_size
    }
    /// Signatures a certificate needs: more than two thirds of `c`.
    pub fn quorum(&self) -> usize {
        quorum_of(self.committee_size)
    }
    /// The most Byzantine members a full committee tolerates (fewer than a third).
    pub fn tolerated(&self) -> usize {
        usize::from(self.committee_size) - self.quorum()
    }
    /// Leading zero bits an identity hash needs.
    pub fn identity_difficulty(&self) -> u8 {
        self.identity_difficulty
    }
    /// How far ahead of the local clock a block's time may be, in seconds.
    pub fn max_future_drift(&self) -> u64 {
        self.max_future_drift
    }
    /// The first epoch's randomness.
    pub fn genesis_randomness(&self) -> Randomness {
        self.genesis_randomness
    }
    /// The shard of `key`'s account.
    pub fn shard_of_key(&self, key: &PublicKey) -> u16 {
        shard_of(&key.account(), self.shard_bits)
    }
}

/// Builds [`CommitteeParams`], validating them in [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct CommitteeParamsBuilder {
    shard_bits: u8,
    committee_size: u16,
    identity_difficulty: u8,
    max_future_drift: u64,
    genesis_seed: Vec<u8>,
    bootstrap: Vec<PublicKey>,
}

impl CommitteeParamsBuilder {
    /// The first block's directory (required): 1 to [`MAX_COMMITTEE_SIZE`] distinct keys,
    /// which must take part in the first epoch to certify its committees.
    pub fn bootstrap(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        self.bootstrap = keys.into_iter().collect();
        self
    }
    /// `2^bits` committees (at most [`MAX_SHARD_BITS`]).
    pub fn shard_bits(mut self, bits: u8) -> Self {
        self.shard_bits = bits;
        self
    }
    /// Committee size `c` (1 to [`MAX_COMMITTEE_SIZE`]).
    pub fn committee_size(mut self, c: u16) -> Self {
        self.committee_size = c;
        self
    }
    /// Identity difficulty in leading zero bits (at most [`MAX_IDENTITY_DIFFICULTY`]).
    pub fn identity_difficulty(mut self, bits: u8) -> Self {
        self.identity_difficulty = bits;
        self
    }
    /// Allowed clock drift for block times, in seconds.
    pub fn max_future_drift(mut self, seconds: u64) -> Self {
        self.max_future_drift = seconds;
        self
    }
    /// The seed of the first epoch's randomness (make it unpredictable before launch).
    pub fn genesis_seed(mut self, seed: impl AsRef<[u8]>) -> Self {
        self.genesis_seed = seed.as_ref().to_vec();
        self
    }
    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// [`ParamsError`] naming the parameter out of range.
    pub fn build(self) -> Result<CommitteeParams, ParamsError> {
        if self.shard_bits > MAX_SHARD_BITS {
            return Err(ParamsError::TooManyShards {
                bits: self.shard_bits,
                max: MAX_SHARD_BITS,
            });
        }
        if self.committee_size == 0 || usize::from(self.committee_size) > MAX_COMMITTEE_SIZE {
            return Err(ParamsError::CommitteeSize {
                size: self.committee_size,
                max: MAX_COMMITTEE_SIZE,
            });
        }
        if self.identity_difficulty > MAX_IDENTITY_DIFFICULTY {
            return Err(ParamsError::Difficulty {
                bits: self.identity_difficulty,
                max: MAX_IDENTITY_DIFFICULTY,
            });
        }
        if self.bootstrap.is_empty() || self.bootstrap.len() > MAX_COMMITTEE_SIZE {
            return Err(ParamsError::BootstrapSize {
                size: self.bootstrap.len(),
                max: MAX_COMMITTEE_SIZE,
            });
        }
        for (i, k) in self.bootstrap.iter().enumerate() {
            if k.verifying_key().is_err() || self.bootstrap[..i].contains(k) {
                return Err(ParamsError::BootstrapKey { index: i, key: *k });
            }
        }
        Ok(CommitteeParams {
            bootstrap: self.bootstrap,
            shard_bits: self.shard_bits,
            committee_size: self.committee_size,
            identity_difficulty: self.identity_difficulty,
            max_future_drift: self.max_future_drift,
            genesis_randomness: genesis_randomness(&self.genesis_seed),
        })
    }
}

/// Invalid committee parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// Too many shard bits.
    #[error("{bits} shard bits exceed the maximum of {max}")]
    TooManyShards {
        /// Requested bits.
        bits: u8,
        /// The limit.
        max: u8,
    },
    /// Committee size out of range.
    #[error("committee size {size} is not between 1 and {max}")]
    CommitteeSize {
        /// Requested size.
        size: u16,
        /// The limit.
        max: usize,
    },
    /// Identity difficulty out of range.
    #[error("identity difficulty {bits} exceeds {max} bits")]
    Difficulty {
        /// Requested bits.
        bits: u8,
        /// The limit.
        max: u8,
    },
    /// The bootstrap directory is empty or too large.
    #[error("the bootstrap directory has {size} keys, not between 1 and {max}")]
    BootstrapSize {
        /// Keys given.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A bootstrap key is not an Ed25519 public key, or appears twice.
    #[error("bootstrap key {index} ({key}) is invalid or repeated")]
    BootstrapKey {
        /// Its index.
        index: usize,
        /// The key.
        key: PublicKey,
    },
}

/// Why a committee seal or body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The seal's randomness is not the one the parent's seal gives.
    #[error("stale randomness: expected {expected}, found {found}")]
    StaleRandomness {
        /// Randomness derived from the parent.
        expected: Randomness,
        /// Randomness in the seal.
        found: Randomness,
    },
    /// A member's identity hash does not meet the difficulty.
    #[error("{stage}: member {member} ({key}) does not meet the identity proof of work")]
    IdentityPowNotMet {
        /// The committee.
        stage: Stage,
        /// Index of the member.
        member: usize,
        /// Its key.
        key: PublicKey,
    },
    /// A member's identity hash selects another committee.
    #[error("{stage}: member {member} belongs to committee {found}, not {expected}")]
    WrongCommittee {
        /// The committee.
        stage: Stage,
        /// Index of the member.
        member: usize,
        /// The certificate's committee.
        expected: u16,
        /// The committee the member's hash selects.
        found: u16,
    },
    /// A member key is not a valid, non-weak Ed25519 key.
    #[error("{stage}: member {member} has an invalid key")]
    InvalidMemberKey {
        /// The committee.
        stage: Stage,
        /// Index of the member.
        member: usize,
    },
    /// Members are not sorted by key, or a key repeats.
    #[error("{stage}: member {member} is out of order or repeated")]
    MembersNotSorted {
        /// The committee.
        stage: Stage,
        /// Index of the member.
        member: usize,
    },
    /// The committee is larger than the parameters allow.
    #[error("{stage}: {size} members exceed the committee size {max}")]
    CommitteeTooLarge {
        /// The committee.
        stage: Stage,
        /// Members listed.
        size: usize,
        /// Committee size.
        max: usize,
    },
    /// Too few signatures.
    #[error("{stage}: {signatures} signatures, a certificate needs {quorum}")]
    QuorumNotMet {
        /// The committee.
        stage: Stage,
        /// Signatures present.
        signatures: usize,
        /// Signatures required.
        quorum: usize,
    },
    /// A signature names no member, or member indices do not increase.
    #[error("{stage}: signature {index} names member {member} out of range or order")]
    SignatureIndex {
        /// The committee.
        stage: Stage,
        /// Position of the signature.
        index: usize,
        /// The member it names.
        member: u16,
    },
    /// A signature does not verify.
    #[error("{stage}: signature of member {member} does not verify")]
    BadSignature {
        /// The committee.
        stage: Stage,
        /// The member.
        member: u16,
    },
    /// A shard index is out of range or shards are not in increasing order.
    #[error("shard certificate {index} (shard {shard}) is out of range or order")]
    ShardOrder {
        /// Position in the seal.
        index: usize,
        /// The shard it claims.
        shard: u16,
    },
    /// One key serves in two shard committees.
    #[error("key {key} serves in two shard committees")]
    DuplicateIdentity {
        /// The key.
        key: PublicKey,
    },
    /// The directory's certificate does not hold one digest per committee.
    #[error("the directory certified {found} committees, the chain has {expected}")]
    RosterShape {
        /// Digests in the certificate.
        found: usize,
        /// Committees of the chain.
        expected: usize,
    },
    /// A certificate's members are not the list the directory certified for its committee:
    /// whoever they are, the directory did not put them there.
    #[error("{stage}: the members are not the committee the directory certified")]
    NotTheDirectorysCommittee {
        /// The committee.
        stage: Stage,
    },
    /// The header's transaction count is not the shards' total.
    #[error("header holds {header} transactions, the shard certificates {shards}")]
    TxCountMismatch {
        /// Count in the header.
        header: u32,
        /// Sum over the shard summaries.
        shards: u64,
    },
    /// Too few randomness commitments.
    #[error("{found} randomness commitments, at least {required} required")]
    CommitmentsTooFew {
        /// Commitments present.
        found: usize,
        /// Commitments required.
        required: usize,
    },
    /// A commitment names no final member, or members do not increase.
    #[error("commitment {index} names member {member} out of range or order")]
    CommitmentIndex {
        /// Position of the commitment.
        index: usize,
        /// The member it names.
        member: u16,
    },
    /// Too few reveals of the parent's commitments.
    #[error("{found} reveals of the parent's commitments, at least {required} required")]
    RevealsTooFew {
        /// Reveals present.
        found: usize,
        /// Reveals required.
        required: usize,
    },
    /// A reveal does not open the parent's commitment of that member.
    #[error("reveal {index} does not open the parent's commitment of member {member}")]
    BadReveal {
        /// Position of the reveal.
        index: usize,
        /// The member it names.
        member: u16,
    },
    /// A transaction sits in another shard's slice of the block.
    #[error("transaction {index} belongs to shard {found}, but sits in shard {expected}'s slice")]
    TxInWrongShard {
        /// Position in the block.
        index: usize,
        /// The slice's shard.
        expected: u16,
        /// The transaction's shard.
        found: u16,
    },
    /// A shard's slice does not have its certified root.
    #[error("shard {shard}'s transactions do not match its certified root")]
    ShardRootMismatch {
        /// The shard.
        shard: u16,
    },
}

impl From<SealError> for crate::consensus::ConsensusError {
    fn from(e: SealError) -> Self {
        Self::Engine(crate::consensus::EngineError::new("committee", e))
    }
}
