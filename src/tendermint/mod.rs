//! Tendermint for hospital consortia: Byzantine fault tolerance among known validators, with
//! final blocks and no wasted work (feature `tendermint`).
//!
//! The voting rules are not ours: they are Malachite's sans-I/O core (the
//! `arc-malachitebft-core-driver` crate, which runs its round state machine and vote keeper).
//! This module gives that core the crate's types and does what its driver leaves to the host:
//!
//! * [`Tendermint`] is the engine, a [`Protocol`](crate::consensus::Protocol): it signs and
//!   checks proposals and votes (Ed25519), builds proposals from the transactions it was offered,
//!   checks a proposed block by executing it against the chain, keeps the round's timers,
//!   rebroadcasts its last votes (and, as the round's proposer, its proposal to the validators
//!   whose votes do not show they hold it) every [`Timeouts::rebroadcast`] while a round lasts,
//!   so rounds resynchronise after message loss, answers a peer still
//!   voting on a finished height with the decided block, and reports double signing as
//!   [`Evidence`].
//! * [`TendermintConsensus`] is the stateless [`Consensus`](crate::consensus::Consensus) check of
//!   what the engine produced: a block's [`TendermintSeal`] is its commit certificate, the
//!   precommits of more than two thirds of the voting power for that block, round, height and
//!   chain, with the validator sets around it. A light client verifies a header with the
//!   validator set of its height alone.
//!
//! # Assumptions
//!
//! * `n ≥ 3f + 1`: validators that deviate from the protocol hold less than a third of the
//!   voting power. Then no two blocks of one height are ever both certified (safety), whatever
//!   the network does.
//! * Partial synchrony: after some unknown time, messages between honest validators arrive
//!   within some unknown bound. Then blocks keep being decided (liveness); before it, or in a
//!   partition where no side holds more than two thirds of the power, nothing is decided and
//!   nothing unsafe happens. Timeouts grow with each round, so the protocol finds the bound.
//!
//! # Validators
//!
//! The validator set of height 1 (each hospital's Ed25519 key and voting power) is the
//! genesis configuration given to [`TendermintConsensus`]. After that the set comes from the
//! chain:
//!
//! * **Joining and leaving.** A consortium authority signs
//!   [`AccessOp::SetValidator`](crate::access::AccessOp::SetValidator)` { key, power }`; power 0
//!   removes the key. MedRec refuses it from anyone but an authority. The engine does not read
//!   the application's state to learn of it: the payload says what it does
//!   ([`AppPayload::validator_change`](crate::tx::AppPayload::validator_change)), so the
//!   consensus sees each block's changes in the block itself.
//! * **From the next height on.** The changes in block `h` (applied in transaction order,
//!   [`ValidatorSet::apply`]) give the set of `h + 1`. Block `h`'s [`TendermintSeal`] carries the
//!   set that signed it and, if the block changes it, the next set. The chain checks, with the
//!   header, that the signing set is the one the parent's seal names for this height (the
//!   genesis seal names the genesis set) and, with the body, that the next set is the signing
//!   set with the block's changes applied. So a seal signed by an old set after a change is
//!   refused, and a light client follows the set from seal to seal, checking each commit with
//!   [`TendermintConsensus::verify_commit_with`]. (The sets in a seal are not under the
//!   precommits' signatures; they are determined by the chain, and a client that skips bodies
//!   must take the next set from the seal on the strength of the commit of the block that
//!   carries it.)
//! * **Bounds.** A set holds 1 to [`MAX_VALIDATORS`] validators with a total voting power of
//!   at most [`MAX_TOTAL_POWER`]; a block whose changes would break this is invalid, and a
//!   proposer leaves such a transaction out of its block.
//! * **The engine.** [`Tendermint`] reads the set of the height it agrees on from the ledger's
//!   tip at each height: a validator added at `h` proposes and votes from `h + 1`, a removed one
//!   no longer counts (and its node follows the chain as an observer).
//!
//! # Evidence
//!
//! The engine reports double signing as [`Evidence`] ([`Output::Evidence`]) and also puts it
//! on chain itself: unless the application does not record evidence
//! ([`AppPayload::record_evidence`]), it submits a transaction recording it, signed by the
//! node's key, to the ledger's pool ([`Ledger::sign`](crate::ledger::Ledger::sign),
//! [`Ledger::submit`](crate::ledger::Ledger::submit)); for MedRec that is
//! [`AccessOp::RecordEvidence`](crate::access::AccessOp::RecordEvidence). Every honest node
//! that saw the offence does so; the first of them to propose includes it, and the others'
//! transactions then leave their pools, refused as already recorded. The chain checks the
//! evidence in a block against the block's signing set ([`TendermintConsensus`]'s body rule):
//! it must decode, be of no later height, convict a current validator with its own signatures,
//! and name that offender and its [`Evidence::offence`]. MedRec keeps one record per offence
//! ([`AccessState::evidence_against`](crate::access::AccessState::evidence_against)). Anyone
//! may submit evidence the same way.
//!
//! # Transactions
//!
//! The engine runs over a [`Ledger`](crate::ledger::Ledger): transactions offered with
//! [`Input::Transactions`](crate::consensus::protocol::Input::Transactions) are submitted to its
//! pool (nonce order, duplicates, bounds and the application's rules are the ledger's; a
//! refusal comes back as [`TendermintError::Refused`] with the ledger's reason), a proposal
//! carries the pool's transactions in order (up to the block's limits, leaving out those that
//! break the engine's body rules), and the driver appends decided blocks with
//! [`Ledger::append`](crate::ledger::Ledger::append), which prunes the pool.
//!
//! [`Output::Evidence`]: crate::consensus::protocol::Output::Evidence
//! [`AppPayload::record_evidence`]: crate::tx::AppPayload::record_evidence

//! # Finality
//!
//! The engine declares [`Finality::Instant`](crate::consensus::Finality::Instant): a block,
//! once appended, is never reverted, and a block competing with the main chain at a final
//! height is refused
//! ([`ChainError::ConflictsWithFinal`](crate::chain::ChainError::ConflictsWithFinal)), whatever
//! the reorganisation limit; build the chain with
//! [`max_reorg_depth(0)`](crate::chain::ChainBuilder::max_reorg_depth) to keep no undo data at
//! all. A decided block is final by its [`BlockId`]: two nodes
//! may hold it under different seals (different sets of precommits), and a node whose tip is
//! the other copy swaps the seal when the next block builds on that copy, without reverting
//! anything ([`Consensus::same_block`](crate::consensus::Consensus::same_block)), so the
//! engine needs no reorganisation either.
//!
//! ```
//! use medledger::tendermint::{TendermintConsensus, ValidatorSet};
//! use medledger::tx::Keypair;
//! use medledger::ChainBuilder;
//!
//! let hospitals: Vec<Keypair> = (1..=4).map(|i| Keypair::from_seed(&[i; 32])).collect();
//! let validators = ValidatorSet::equal(hospitals.iter().map(|k| k.public()))?;
//! let chain = ChainBuilder::new("consortium", TendermintConsensus::new("consortium", validators))
//!     .max_reorg_depth(0)
//!     .build()?;
//! assert_eq!(chain.engine().validators().len(), 4);
//! // The genesis seal names the set of height 1.
//! assert_eq!(chain.tip_header().seal.next_set()?.len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod context;
mod engine;
mod messages;
mod seal;
mod types;

pub use engine::{
    Tendermint, TendermintConfig, Timeouts, Timer, TimerKind, MAX_BUFFERED_BYTES,
    MAX_BUFFERED_MESSAGES, MAX_CHECKED_PROPOSALS, MAX_ROUND, MAX_ROUNDS_AHEAD,
};
pub use messages::{Message, MAX_MESSAGE_LEN};
pub use seal::{
    next_validators, CommitSignature, Evidence, PolkaCertificate, TendermintConsensus,
    TendermintSeal, MAX_FUTURE_DRIFT,
};
pub use types::{
    block_id, BlockId, Proposal, ProposalSummary, ProposedBlock, SignedProposal, SignedSummary,
    SignedVote, Validator, ValidatorList, ValidatorSet, Vote, VoteKind, MAX_TOTAL_POWER,
    MAX_VALIDATORS,
};

use crate::tx::PublicKey;

/// Why the Tendermint engine refused a seal, a message or an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TendermintError {
    /// The validator set is unusable.
    #[error("invalid validator set: {0}")]
    ValidatorSet(String),
    /// A signature names a validator index outside the set.
    #[error("no validator has index {index}")]
    UnknownValidator {
        /// The index.
        index: usize,
    },
    /// A message is signed by a key outside the validator set.
    #[error("{0} is not a validator")]
    NotAValidator(PublicKey),
    /// A signature does not verify.
    #[error("signature by validator {validator} does not verify")]
    BadSignature {
        /// The validator it claims to be from.
        validator: PublicKey,
    },
    /// A certificate's signatures are not by strictly increasing validator index.
    #[error("commit signature {position} is out of order or repeated")]
    SignatureOrder {
        /// Its position in the certificate.
        position: usize,
    },
    /// The signers hold two thirds of the voting power or less.
    #[error("signers hold {signed} of {total} voting power, not more than two thirds")]
    InsufficientPower {
        /// Power of the valid signatures.
        signed: u64,
        /// Total power of the set.
        total: u64,
    },
    /// A proposal is signed by a validator that is not the round's proposer.
    #[error("{found} proposed at height {height} round {round}, whose proposer is {expected}")]
    WrongProposer {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
        /// The round's proposer.
        expected: PublicKey,
        /// The signer.
        found: PublicKey,
    },
    /// A message's round is beyond what the engine tracks.
    #[error("round {round} is too far ahead of round {current} (at most {max} ahead)")]
    RoundTooFar {
        /// The message's round.
        round: u32,
        /// The engine's round.
        current: u32,
        /// How far ahead a message may be.
        max: u32,
    },
    /// A re-proposal's justifying round is not before the proposal's round.
    #[error("proposal for round {round} claims a prevote quorum in round {pol_round}")]
    BadPolRound {
        /// The proposal's round.
        round: u32,
        /// The claimed round.
        pol_round: u32,
    },
    /// A message is for a height more than one beyond the one being agreed.
    #[error("message for height {found} while agreeing on height {current}")]
    HeightTooFar {
        /// The message's height.
        found: u64,
        /// The height being agreed.
        current: u64,
    },
    /// A seal names another signing set than its parent's seal gives its height.
    #[error("the seal at height {height} names another validator set than its parent gives it")]
    WrongValidators {
        /// The block's height.
        height: u64,
    },
    /// A seal's next validator set is not its signing set with the block's changes applied.
    #[error("the seal at height {height} names the wrong validator set for the next height")]
    WrongNextValidators {
        /// The block's height.
        height: u64,
    },
    /// Evidence a block records does not prove what its transaction claims.
    #[error("invalid evidence: {0}")]
    BadEvidence(String),
    /// Two messages offered as evidence do not conflict.
    #[error("the two messages do not conflict")]
    NotEvidence,
    /// The ledger is another chain than the engine's validators sign for.
    #[error("the ledger is chain {ledger}, the engine signs for {engine}")]
    WrongChain {
        /// The ledger's chain id.
        ledger: crate::hash::ChainId,
        /// The engine's.
        engine: crate::hash::ChainId,
    },
    /// The ledger refused an offered transaction (the `index`-th of the batch).
    #[error("transaction {index} of the batch refused: {reason}")]
    Refused {
        /// Its position in the batch.
        index: usize,
        /// The ledger's (or the engine's) reason.
        reason: String,
    },
    /// An offered transaction is invalid.
    #[error("transaction refused: {0}")]
    Transaction(#[from] crate::tx::TxError),
    /// The engine was given an input before [`Input::Start`](crate::consensus::protocol::Input).
    #[error("the engine has not been started")]
    NotStarted,
    /// The ledger failed (reading a block, building a proposal).
    #[error("ledger: {0}")]
    Ledger(String),
}
