//! The Tendermint engine: Malachite's driver behind the crate's [`Protocol`] interface.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use malachitebft_core_driver::{Driver, Input as DInput, Output as DOutput, ThresholdParams};
use malachitebft_core_types::{
    LinearTimeouts, PolkaCertificate as MPolka, PolkaSignature, Round, Timeout, TimeoutKind,
    Validity,
};

use super::context::{
    from_mproposal, from_mvote, to_mproposal, to_mvote, Ctx, MHeight, MProposal, Sig,
};
use super::messages::Message;
use super::seal::{
    check_evidence, next_validators, CommitSignature, Evidence, PolkaCertificate,
    TendermintConsensus, TendermintSeal, MAX_FUTURE_DRIFT,
};
use super::types::{
    BlockId, Proposal, ProposedBlock, SignedProposal, SignedVote, ValidatorSet, VoteKind,
};
use super::TendermintError;
use crate::app::Application;
use crate::block::{Block, Header, HEADER_VERSION, MAX_BLOCK_LEN};
use crate::codec;
use crate::consensus::protocol::Time;
use crate::consensus::protocol::{Input, Output, Outputs, Protocol, ProtocolInput, Recipients};
use crate::ledger::{Ledger, Refusal};
use crate::tx::{self, AppPayload as _, Keypair, PublicKey, Transaction};

/// The highest round a message may name (rounds beyond it would overflow the round counter).
pub const MAX_ROUND: u32 = u32::MAX / 2;
/// How many rounds ahead of the engine's round a message may be; further ones are refused, so
/// a peer cannot make the vote keeper track rounds without end.
pub const MAX_ROUNDS_AHEAD: u32 = 64;
/// The most messages for the next height kept until the engine gets there.
pub const MAX_BUFFERED_MESSAGES: usize = 4096;
/// The most bytes of such messages kept.
pub const MAX_BUFFERED_BYTES: usize = 64 << 20;
/// The most distinct proposed blocks checked per height; further ones (only a Byzantine
/// proposer sends more than one per round) count as invalid without being executed.
pub const MAX_CHECKED_PROPOSALS: usize = 256;
/// Room left in a proposed block for the header and the largest commit certificate.
const SEAL_ROOM: usize = 128 * 1024;

/// How long the engine waits at each step, in microseconds. Each round waits `delta` longer
/// than the one before, up to `max`, so that after the network settles rounds become long
/// enough to decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the round's proposal before prevoting nil.
    pub propose: u64,
    /// Waiting for more prevotes once more than two thirds arrived but for different blocks.
    pub prevote: u64,
    /// Waiting for more precommits once more than two thirds arrived but for different blocks.
    pub precommit: u64,
    /// Added to each of the above per round.
    pub delta: u64,
    /// Between rebroadcasts of the engine's last votes, and of its own proposal to the
    /// validators whose votes do not show they hold it (resynchronises rounds after loss).
    /// Unlike the others it does not grow with the round: a round whose messages were lost
    /// waits for it.
    pub rebroadcast: u64,
    /// The longest any timeout grows.
    pub max: u64,
}

impl Default for Timeouts {
    /// Three seconds to propose, one to collect prevotes and precommits, half a second more
    /// each round, rebroadcast every second, at most a minute.
    fn default() -> Self {
        Self {
            propose: 3_000_000,
            prevote: 1_000_000,
            precommit: 1_000_000,
            delta: 500_000,
            rebroadcast: 1_000_000,
            max: 60_000_000,
        }
    }
}

impl Timeouts {
    fn linear(&self) -> LinearTimeouts {
        let d = Duration::from_micros;
        LinearTimeouts {
            propose: d(self.propose),
            propose_delta: d(self.delta),
            prevote: d(self.prevote),
            prevote_delta: d(self.delta),
            precommit: d(self.precommit),
            precommit_delta: d(self.delta),
            rebroadcast: d(self.rebroadcast),
            max_timeout: d(self.max),
        }
    }
}

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The propose step's timeout.
    Propose,
    /// The prevote step's timeout.
    Prevote,
    /// The precommit step's timeout.
    Precommit,
    /// Time to rebroadcast the last votes.
    Rebroadcast,
}

/// A timer of the engine: a step of a round of a height.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    /// The height.
    pub height: u64,
    /// The round.
    pub round: u32,
    /// What it is for.
    pub kind: TimerKind,
}

/// A validator's (or an observer's) configuration.
#[derive(Debug)]
pub struct TendermintConfig {
    /// The node's key: it signs proposals and votes if it is in the validator set.
    pub keypair: Keypair,
    /// Step timeouts.
    pub timeouts: Timeouts,
    /// The most transactions the node puts in a block it proposes (and never more than its
    /// ledger's [`max_block_txs`](crate::ledger::Ledger::max_block_txs), nor more bytes than
    /// its [`max_block_bytes`](crate::ledger::Ledger::max_block_bytes)). The same limits bound
    /// the proposals it votes for: a larger one gets its nil prevote, so the validators of one
    /// network should share them.
    pub max_block_txs: usize,
}

impl TendermintConfig {
    /// A configuration for the node with `keypair`, with default timeouts and limits.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            timeouts: Timeouts::default(),
            max_block_txs: 4096,
        }
    }
}

type P<A> = <A as Application>::Payload;
type TmOutputs<A> = Outputs<Tendermint<A>>;
type SealedBlock<A> = Block<TendermintSeal, P<A>>;

/// A Tendermint validator (or, with a key outside the validator set, an observer that follows
/// the votes and appends decided blocks without signing anything).
///
/// It implements [`Protocol`] over a [`Ledger`] (a chain run by [`TendermintConsensus`] and its
/// transaction pool); see the
/// [protocol module](crate::consensus::protocol) for how to drive it. Malachite's driver decides;
/// the engine feeds it checked inputs and carries out its outputs:
///
/// * proposals and votes are accepted only with a valid signature by a validator (proposals
///   only from the round's proposer), for the height being agreed and at most
///   [`MAX_ROUNDS_AHEAD`] rounds ahead; messages for the next height wait in a bounded buffer;
/// * a proposed block is valid when it extends the chain's tip, its time is not before its
///   parent's nor too far ahead, it holds no more transactions, nor bytes of them, than the
///   validator would propose itself ([`TendermintConfig::max_block_txs`], the ledger's
///   [`max_block_txs`](Ledger::max_block_txs) and [`max_block_bytes`](Ledger::max_block_bytes)),
///   and executing its transactions on the tip's state gives its roots with none refused;
/// * the validator set of each height is read from the ledger's tip (the set the tip's seal
///   names for the next height), so validators join and leave through the chain;
/// * when proposing, it builds the block from the evidence it gathered (see the
///   [module](super) on evidence) and the transactions offered to it, leaving out what would
///   break the body rules (a validator change leaving no valid set, invalid evidence);
/// * on a decision it seals the block with the precommits it holds and outputs it to append.
///
/// **Seals differ, decisions do not.** Each validator seals a decided block with the precommits
/// it received, so two validators may hold the same block (same [`BlockId`], same transactions
/// and state) under different seals, hence different block hashes. The next height settles it:
/// the proposer builds on its own copy and sends that copy's seal with the proposal; a
/// validator holding another copy appends the proposer's copy beside its own (valid, equally
/// certified), and when the next block is decided on it, its chain swaps the tip's seal for
/// the proposer's ([`Consensus::same_block`](crate::consensus::Consensus::same_block)): no
/// transaction and no state changes, nothing is reverted, and it is no reorganisation. A
/// decided block is thus final by its id, and the chain may be built with
/// [`max_reorg_depth(0)`](crate::chain::ChainBuilder::max_reorg_depth). Chains agree on every
/// block below the tip, seals included.
pub struct Tendermint<A: Application> {
    engine: TendermintConsensus,
    keypair: Keypair,
    me: PublicKey,
    is_validator: bool,
    validators: ValidatorSet,
    timeouts: LinearTimeouts,
    rebroadcast: u64,
    max_block_txs: usize,
    driver: Option<Driver<Ctx<P<A>>>>,
    height: u64,
    decided: bool,
    validity: HashMap<BlockId, Validity>,
    last_prevote: Option<SignedVote>,
    last_precommit: Option<SignedVote>,
    own_proposal: Option<(SignedProposal<P<A>>, TendermintSeal)>,
    /// The validators whose vote in this round shows they hold our own proposal's block
    /// (they voted for it): its rebroadcast skips them.
    proposal_holders: HashSet<PublicKey>,
    future: Vec<(PublicKey, Message<P<A>>)>,
    future_bytes: usize,
    timers: BTreeSet<Timer>,
    served: HashMap<PublicKey, (u64, Time)>,
    evidence_seen: HashSet<Evidence>,
}

impl<A: Application> core::fmt::Debug for Tendermint<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tendermint")
            .field("key", &self.me)
            .field("validator", &self.is_validator)
            .field("height", &self.height)
            .field("round", &self.round())
            .field("decided", &self.decided)
            .finish_non_exhaustive()
    }
}

impl<A: Application> Tendermint<A> {
    /// An engine for `config.keypair`'s node on the chain that `engine` checks.
    pub fn new(engine: TendermintConsensus, config: TendermintConfig) -> Self {
        let me = config.keypair.public();
        Self {
            is_validator: engine.validators().get(&me).is_some(),
            validators: engine.validators().clone(),
            engine,
            keypair: config.keypair,
            me,
            timeouts: config.timeouts.linear(),
            rebroadcast: config.timeouts.rebroadcast,
            max_block_txs: config.max_block_txs,
            driver: None,
            height: 0,
            decided: false,
            validity: HashMap::new(),
            last_prevote: None,
            last_precommit: None,
            own_proposal: None,
            proposal_holders: HashSet::new(),
            future: Vec::new(),
            future_bytes: 0,
            timers: BTreeSet::new(),
            served: HashMap::new(),
            evidence_seen: HashSet::new(),
        }
    }

    /// The node's key.
    pub fn key(&self) -> PublicKey {
        self.me
    }
    /// Whether the node is in the validator set (and so signs proposals and votes).
    pub fn is_validator(&self) -> bool {
        self.is_validator
    }
    /// The height being agreed (0 before [`Input::Start`]).
    pub fn height(&self) -> u64 {
        self.height
    }
    /// The current round.
    pub fn round(&self) -> u32 {
        self.driver
            .as_ref()
            .and_then(|d| d.round().as_u32())
            .unwrap_or(0)
    }
    /// Whether the current height is decided (its block output, waiting for
    /// [`Input::Appended`]).
    pub fn is_decided(&self) -> bool {
        self.decided
    }
    /// The validator set of the height being agreed (read from the ledger's tip).
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }
    /// The engine's [`TendermintConsensus`].
    pub fn consensus(&self) -> &TendermintConsensus {
        &self.engine
    }

    fn driver(&mut self) -> Result<&mut Driver<Ctx<P<A>>>, TendermintError> {
        self.driver.as_mut().ok_or(TendermintError::NotStarted)
    }

    // ----- heights and rounds -----

    fn sync_to_ledger(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
        out: &mut TmOutputs<A>,
    ) -> Result<(), TendermintError> {
        if ledger.chain_id() != self.engine.chain_id() {
            return Err(TendermintError::WrongChain {
                ledger: ledger.chain_id(),
                engine: self.engine.chain_id(),
            });
        }
        let next = ledger.chain().height() + 1;
        if self.driver.is_some() && next <= self.height {
            return Ok(());
        }
        self.height = next;
        self.decided = false;
        self.validity.clear();
        self.evidence_seen.clear();
        let validators = ledger
            .chain()
            .tip_header()
            .seal
            .next_set()
            .map_err(|e| TendermintError::Ledger(format!("the tip's seal: {e}")))?;
        self.is_validator = validators.get(&self.me).is_some();
        self.validators = validators.clone();
        match &mut self.driver {
            Some(d) => d.move_to_height(MHeight(next), validators),
            None => {
                self.driver = Some(Driver::new(
                    Ctx::new(),
                    MHeight(next),
                    validators,
                    self.me,
                    ThresholdParams::default(),
                ))
            }
        }
        let proposer = self.validators.proposer(next, 0).key();
        self.enter_round(now, next, 0, out);
        self.apply(
            ledger,
            now,
            DInput::NewRound(MHeight(next), Round::new(0), proposer),
            out,
        )?;
        // Messages that arrived early for this height.
        let buffered = core::mem::take(&mut self.future);
        self.future_bytes = 0;
        for (from, message) in buffered {
            if message.height() == self.height {
                // A buffered message that no longer applies is dropped, as it would be now.
                let _ = self.on_message(ledger, now, from, message, out);
            }
        }
        Ok(())
    }

    fn cancel_timers(&mut self, out: &mut TmOutputs<A>) {
        for t in core::mem::take(&mut self.timers) {
            out.push(Output::CancelTimer(t));
        }
    }

    fn enter_round(&mut self, now: Time, height: u64, round: u32, out: &mut TmOutputs<A>) {
        self.cancel_timers(out);
        self.last_prevote = None;
        self.last_precommit = None;
        self.own_proposal = None;
        self.proposal_holders.clear();
        out.push(Output::Progress { height, round });
        self.set_timer(now, Timeout::rebroadcast(Round::new(round)), out);
    }

    fn set_timer(&mut self, now: Time, timeout: Timeout, out: &mut TmOutputs<A>) {
        let kind = match timeout.kind {
            TimeoutKind::Propose => TimerKind::Propose,
            TimeoutKind::Prevote => TimerKind::Prevote,
            TimeoutKind::Precommit => TimerKind::Precommit,
            TimeoutKind::Rebroadcast => TimerKind::Rebroadcast,
            // Only Malachite's host layer (not used here) schedules this one.
            TimeoutKind::FinalizeHeight(_) => return,
        };
        let Some(round) = timeout.round.as_u32() else {
            return;
        };
        let after = match kind {
            TimerKind::Rebroadcast => self.rebroadcast,
            _ => u64::try_from(self.timeouts.duration_for(timeout).as_micros()).unwrap_or(u64::MAX),
        };
        let at = now.saturating_add(after);
        let timer = Timer {
            height: self.height,
            round,
            kind,
        };
        self.timers.insert(timer);
        out.push(Output::SetTimer { timer, at });
    }

    // ----- the driver -----

    fn apply(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
        input: DInput<Ctx<P<A>>>,
        out: &mut TmOutputs<A>,
    ) -> Result<(), TendermintError> {
        // Inputs are checked before they reach the driver, so it refuses none; were it to, the
        // input is dropped like any other refused one (its state is unchanged), and the outputs
        // gathered so far still go out: outputs are never lost once the engine has changed.
        let Ok(outputs) = self.driver()?.process(input) else {
            return Ok(());
        };
        self.collect_evidence(ledger, out);
        for o in outputs {
            if self.decided {
                break;
            }
            self.on_driver_output(ledger, now, o, out)?;
        }
        Ok(())
    }

    fn on_driver_output(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
        output: DOutput<Ctx<P<A>>>,
        out: &mut TmOutputs<A>,
    ) -> Result<(), TendermintError> {
        let chain = self.engine.chain_id();
        match output {
            DOutput::NewRound(height, round) => {
                let r = round.as_u32().unwrap_or(0);
                let proposer = self.validators.proposer(height.0, r).key();
                self.enter_round(now, height.0, r, out);
                self.apply(ledger, now, DInput::NewRound(height, round, proposer), out)
            }
            DOutput::Propose(proposal) => {
                if !self.is_validator {
                    return Ok(());
                }
                let signed = proposal.proposal.sign(&self.keypair, chain);
                let parent_seal = ledger.chain().tip_header().seal.clone();
                self.validity
                    .insert(signed.proposal.block.id(), Validity::Valid);
                self.own_proposal = Some((signed.clone(), parent_seal.clone()));
                if let Some(pol) = signed.proposal.pol_round {
                    // A re-proposal: show everyone the prevote quorum that justifies it.
                    if let Some(polka) = self.polka_of(Round::new(pol), signed.proposal.block.id())
                    {
                        out.push(Output::Send {
                            to: Recipients::All,
                            message: Message::Polka(polka),
                        });
                    }
                }
                out.push(Output::Send {
                    to: Recipients::All,
                    message: Message::Proposal {
                        proposal: signed.clone(),
                        parent_seal,
                    },
                });
                let input = DInput::Proposal(to_mproposal(&signed), Validity::Valid);
                self.apply(ledger, now, input, out)
            }
            DOutput::Vote(vote) => {
                if !self.is_validator {
                    return Ok(());
                }
                let signed = vote.vote.sign(&self.keypair, chain);
                match signed.vote.kind {
                    VoteKind::Prevote => self.last_prevote = Some(signed),
                    VoteKind::Precommit => self.last_precommit = Some(signed),
                }
                out.push(Output::Send {
                    to: Recipients::All,
                    message: Message::Vote(signed),
                });
                self.apply(ledger, now, DInput::Vote(to_mvote(&signed)), out)
            }
            DOutput::Decide(_, proposal) => {
                self.decide(proposal, out);
                Ok(())
            }
            DOutput::ScheduleTimeout(timeout) => {
                self.set_timer(now, timeout, out);
                Ok(())
            }
            DOutput::GetValue(_, round, _) => {
                if !self.is_validator {
                    return Ok(());
                }
                // If the ledger cannot build a block, the round's propose timeout runs out and
                // validators move on.
                match self.build_proposal(ledger, now) {
                    Ok(value) => self.apply(ledger, now, DInput::ProposeValue(round, value), out),
                    Err(_) => Ok(()),
                }
            }
        }
    }

    fn decide(&mut self, proposal: MProposal<P<A>>, out: &mut TmOutputs<A>) {
        // The driver reports the round it is in; the precommits are of the proposal's round.
        let round = proposal.proposal.round;
        let block = proposal.proposal.block;
        let id = block.id();
        debug_assert_eq!(block.block().header.height, self.height);
        let Some(driver) = self.driver.as_ref() else {
            return;
        };
        let precommits: Vec<SignedVote> = driver
            .restore_precommits(Round::new(round), &id)
            .iter()
            .map(from_mvote)
            .collect();
        // The driver decides only on a quorum of precommits, which it holds; should that ever
        // not hold, the height is left to a peer's decided block.
        let Ok(seal) =
            self.engine
                .seal_from_precommits(&self.validators, round, &block, &precommits)
        else {
            return;
        };
        self.decided = true;
        self.cancel_timers(out);
        out.push(Output::Append(block.seal(seal)));
    }

    /// The prevote quorum for `block` in `round` that the driver holds, if any.
    fn polka_of(&self, round: Round, block: BlockId) -> Option<PolkaCertificate> {
        let driver = self.driver.as_ref()?;
        let cert = driver.polka_certificate(round, &block)?;
        let validators = &self.validators;
        let mut signatures: Vec<CommitSignature> = cert
            .polka_signatures
            .iter()
            .filter_map(|s| {
                let index = validators.index_of(&s.address)?;
                Some(CommitSignature {
                    validator: u16::try_from(index).ok()?,
                    signature: s.signature.0,
                })
            })
            .collect();
        signatures.sort_by_key(|s| s.validator);
        signatures.dedup_by_key(|s| s.validator);
        Some(PolkaCertificate {
            height: self.height,
            round: round.as_u32()?,
            block,
            signatures: signatures.try_into().ok()?,
        })
    }

    fn collect_evidence(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        out: &mut TmOutputs<A>,
    ) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let mut found = Vec::new();
        for (_, pairs) in driver.take_vote_evidence() {
            for (a, b) in pairs {
                found.push(Evidence::DoubleVote {
                    first: from_mvote(&a),
                    second: from_mvote(&b),
                });
            }
        }
        for (_, pairs) in driver.take_proposal_evidence() {
            for (a, b) in pairs {
                found.push(Evidence::DoubleProposal {
                    first: from_mproposal(&a).signed_summary(),
                    second: from_mproposal(&b).signed_summary(),
                });
            }
        }
        for e in found {
            if self.evidence_seen.insert(e) {
                self.submit_evidence(ledger, &e);
                out.push(Output::Evidence(e));
            }
        }
    }

    // ----- blocks -----

    fn build_proposal(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
    ) -> Result<ProposedBlock<P<A>>, TendermintError> {
        let timestamp = (now / 1_000_000).max(ledger.chain().tip_header().timestamp);
        let chain = self.engine.chain_id();
        let mut txs: Vec<Transaction<P<A>>> = Vec::new();
        let mut bytes = 0;
        let mut changes = Vec::new();
        // Within the engine's limits and the ledger's (a node bounds blocks by what its
        // transport carries: a larger proposal could not be sent, and no round would decide).
        // The ledger counts each transaction's encoding (its version byte too), the engine
        // their bodies (`SEAL_ROOM` holds the header and the certificate); `check_block`
        // counts alike.
        let (max_txs, max_encoded) = self.block_limits(ledger);
        let mut encoded = 0;
        // The ledger's pool, in its order; what would make the block break the engine's body
        // rules is left out.
        for tx in ledger.pending_txs() {
            let len = codec::body_len(tx);
            if txs.len() == max_txs
                || bytes + len > MAX_BLOCK_LEN - SEAL_ROOM
                || encoded + 1 + len > max_encoded
            {
                break;
            }
            if let Some(change) = tx.body.payload.validator_change() {
                changes.push(change);
                if self.validators.apply(changes.iter().copied()).is_err() {
                    changes.pop();
                    continue;
                }
            }
            if let Some(claim) = tx.body.payload.evidence() {
                if check_evidence(&self.validators, chain, self.height, &claim).is_err() {
                    continue;
                }
            }
            bytes += len;
            encoded += 1 + len;
            txs.push(tx.clone());
        }
        let template = ledger
            .build_template(txs, timestamp)
            .map_err(|e| TendermintError::Ledger(e.to_string()))?;
        // A peer's relayed transaction that fails here (never applied to this pool) would be
        // left out of every later proposal too; the pool's own are checked after the block.
        ledger.drop_rejected(&template.rejected);
        let block = template
            .seal(())
            .map_err(|e| TendermintError::Ledger(e.to_string()))?;
        Ok(ProposedBlock::new(block))
    }

    /// Puts `evidence` in the ledger's pool, in a transaction this node signs (if the
    /// application records evidence). A refusal (the offence is already recorded or pending,
    /// the pool is full) leaves it to the other nodes that saw it.
    fn submit_evidence(&self, ledger: &mut Ledger<TendermintConsensus, A>, evidence: &Evidence) {
        let encoded = codec::encode(evidence);
        let claim = evidence.claim(&encoded);
        let Some(payload) = P::<A>::record_evidence(claim) else {
            return;
        };
        if check_evidence(
            &self.validators,
            self.engine.chain_id(),
            self.height,
            &claim,
        )
        .is_err()
        {
            return;
        }
        let tx = ledger.sign(&self.keypair, payload);
        let _ = ledger.submit(tx);
    }

    /// The most transactions, and bytes of their encodings, in a block this node proposes or
    /// votes for: its own limit and its ledger's.
    fn block_limits(&self, ledger: &Ledger<TendermintConsensus, A>) -> (usize, usize) {
        (
            self.max_block_txs.min(ledger.max_block_txs()),
            ledger.max_block_bytes(),
        )
    }

    /// Whether `block` may be the next block of `ledger` at time `now`.
    fn check_block(
        &self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
        block: &Block<(), P<A>>,
        parent: BlockIdCheck,
    ) -> Result<(), String> {
        let h = &block.header;
        let tip = ledger.chain().tip_header().clone();
        if h.version != HEADER_VERSION || h.height != ledger.chain().height() + 1 {
            return Err(format!("version {} height {}", h.version, h.height));
        }
        if let BlockIdCheck::Mismatch = parent {
            return Err("extends no copy of the tip".into());
        }
        if h.timestamp < tip.timestamp || h.timestamp > (now / 1_000_000) + MAX_FUTURE_DRIFT {
            return Err(format!("timestamp {}", h.timestamp));
        }
        // Counted as the proposer counts them (`build_proposal`): the transactions' bodies
        // within the engine's bound (`SEAL_ROOM` holds the header and the certificate), their
        // encodings (a version byte more each) and their number within the limits this node's
        // own proposals keep to: a proposer may not make every validator check and execute
        // more than any of them would propose (the validators of one network share their
        // limits; a block decided elsewhere still syncs through `append`).
        let body: usize = block.txs.iter().map(codec::body_len).sum();
        if h.tx_count as usize != block.txs.len() || body > MAX_BLOCK_LEN - SEAL_ROOM {
            return Err(format!(
                "size: {} transactions (the header counts {}) of {body} bytes, at most {}",
                block.txs.len(),
                h.tx_count,
                MAX_BLOCK_LEN - SEAL_ROOM
            ));
        }
        let (max_txs, max_encoded) = self.block_limits(ledger);
        let encoded = body + block.txs.len();
        if block.txs.len() > max_txs || encoded > max_encoded {
            return Err(format!(
                "{} transactions of {encoded} bytes, over this node's block limits \
                 ({max_txs} transactions, {max_encoded} bytes)",
                block.txs.len()
            ));
        }
        next_validators(
            &self.validators,
            self.engine.chain_id(),
            h.height,
            block.txs.iter().map(|t| &t.body.payload),
        )
        .map_err(|e| e.to_string())?;
        let template = ledger
            .build_template(block.txs.to_vec(), h.timestamp)
            .map_err(|e| e.to_string())?;
        if !template.rejected.is_empty()
            || template.txs.len() != block.txs.len()
            || template.tx_root != h.tx_root
            || template.state_root != h.state_root
        {
            return Err("transactions do not give the header's roots".into());
        }
        Ok(())
    }

    /// Whether `parent_hash` is the ledger's tip or the tip under `parent_seal` (another
    /// validator's copy of the same decided block); in the second case also that copy, to
    /// append beside the ledger's own.
    fn parent_copy(
        &self,
        ledger: &Ledger<TendermintConsensus, A>,
        parent_hash: &crate::hash::BlockHash,
        parent_seal: &TendermintSeal,
    ) -> (BlockIdCheck, Option<SealedBlock<A>>) {
        if *parent_hash == ledger.chain().tip() {
            return (BlockIdCheck::Tip, None);
        }
        let tip = ledger.chain().tip_header();
        let copy = Header {
            seal: parent_seal.clone(),
            ..tip.clone()
        };
        let same_sets = parent_seal.validators == tip.seal.validators
            && parent_seal.next_validators == tip.seal.next_validators;
        let certified = same_sets
            && tip
                .seal
                .signing_set()
                .is_ok_and(|set| self.engine.verify_commit_with(&copy, &set).is_ok());
        if copy.hash() != *parent_hash || !certified {
            return (BlockIdCheck::Mismatch, None);
        }
        if ledger.chain().header(parent_hash).is_some() {
            return (BlockIdCheck::Copy, None);
        }
        match ledger.chain().block(&ledger.chain().tip()) {
            Ok(Some(own)) => (
                BlockIdCheck::Copy,
                Some(Block {
                    header: copy,
                    txs: own.txs,
                }),
            ),
            _ => (BlockIdCheck::Mismatch, None),
        }
    }

    // ----- messages -----

    fn check_round(&self, round: u32, at_next_height: bool) -> Result<(), TendermintError> {
        let current = if at_next_height { 0 } else { self.round() };
        let max = current.saturating_add(MAX_ROUNDS_AHEAD).min(MAX_ROUND);
        if round > max {
            return Err(TendermintError::RoundTooFar {
                round,
                current,
                max: MAX_ROUNDS_AHEAD,
            });
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
        from: PublicKey,
        message: Message<P<A>>,
        out: &mut TmOutputs<A>,
    ) -> Result<(), TendermintError> {
        if self.driver.is_none() {
            return Err(TendermintError::NotStarted);
        }
        let chain = self.engine.chain_id();
        let height = message.height();
        // Checks that need no state first: signatures, proposer, round bounds.
        match &message {
            Message::Vote(v) => {
                v.verify(&self.validators, chain)?;
                self.check_round(v.vote.round, height > self.height)?;
            }
            Message::Proposal { proposal, .. } => {
                let p = &proposal.proposal;
                if let Some(pol) = p.pol_round.filter(|pol| *pol >= p.round) {
                    return Err(TendermintError::BadPolRound {
                        round: p.round,
                        pol_round: pol,
                    });
                }
                proposal.signed_summary().verify(&self.validators, chain)?;
                let expected = self.validators.proposer(height, p.round).key();
                if expected != p.proposer {
                    return Err(TendermintError::WrongProposer {
                        height,
                        round: p.round,
                        expected,
                        found: p.proposer,
                    });
                }
                self.check_round(p.round, height > self.height)?;
            }
            Message::Polka(polka) => {
                self.engine.verify_polka(polka, &self.validators)?;
                self.check_round(polka.round, height > self.height)?;
            }
            Message::Decided { block, .. } => {
                if height == self.height && !self.decided {
                    self.engine
                        .verify_commit_with(&block.header, &self.validators)?;
                }
            }
        }
        if height > self.height.saturating_add(1) {
            return Err(TendermintError::HeightTooFar {
                found: height,
                current: self.height,
            });
        }
        if height > self.height {
            if !matches!(message, Message::Decided { .. }) {
                self.buffer(from, message);
            }
            return Ok(());
        }
        if height < self.height {
            if !matches!(message, Message::Decided { .. }) {
                self.serve(ledger, now, from, height, out);
            }
            return Ok(());
        }
        if self.decided {
            return Ok(());
        }
        match message {
            Message::Vote(v) => {
                if let Some((own, _)) = &self.own_proposal {
                    let p = &own.proposal;
                    if v.vote.round == p.round && v.vote.block == Some(p.block.id()) {
                        self.proposal_holders.insert(v.vote.validator);
                    }
                }
                self.apply(ledger, now, DInput::Vote(to_mvote(&v)), out)
            }
            Message::Polka(polka) => {
                let validators = &self.validators;
                let certificate = MPolka {
                    height: MHeight(polka.height),
                    round: Round::new(polka.round),
                    value_id: polka.block,
                    polka_signatures: polka
                        .signatures
                        .iter()
                        .map(|s| {
                            let key = validators.validators()[usize::from(s.validator)].key();
                            PolkaSignature::new(key, Sig(s.signature))
                        })
                        .collect(),
                };
                self.apply(ledger, now, DInput::PolkaCertificate(certificate), out)
            }
            Message::Proposal {
                proposal,
                parent_seal,
            } => {
                let validity = self.validity_of(ledger, now, &proposal.proposal, &parent_seal, out);
                let input = DInput::Proposal(to_mproposal(&proposal), validity);
                self.apply(ledger, now, input, out)
            }
            Message::Decided { block, parent_seal } => {
                let (check, copy) = self.parent_copy(ledger, &block.header.parent, &parent_seal);
                if check != BlockIdCheck::Mismatch {
                    out.extend(copy.map(Output::Append));
                    out.push(Output::Append(block));
                }
                Ok(())
            }
        }
    }

    fn validity_of(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
        proposal: &Proposal<P<A>>,
        parent_seal: &TendermintSeal,
        out: &mut TmOutputs<A>,
    ) -> Validity {
        let id = proposal.block.id();
        if let Some(v) = self.validity.get(&id) {
            return *v;
        }
        if self.validity.len() >= MAX_CHECKED_PROPOSALS {
            return Validity::Invalid;
        }
        let block = proposal.block.block();
        let (check, copy) = self.parent_copy(ledger, &block.header.parent, parent_seal);
        let valid = self.check_block(ledger, now, block, check).is_ok();
        if valid {
            // The decided block may extend the proposer's copy of the tip: keep it at hand.
            out.extend(copy.map(Output::Append));
        }
        let validity = Validity::from_bool(valid);
        self.validity.insert(id, validity);
        validity
    }

    fn buffer(&mut self, from: PublicKey, message: Message<P<A>>) {
        let len = codec::body_len(&message);
        if self.future.len() < MAX_BUFFERED_MESSAGES
            && self.future_bytes + len <= MAX_BUFFERED_BYTES
        {
            self.future_bytes += len;
            self.future.push((from, message));
        }
    }

    /// Sends `peer`, still voting at `height`, the block decided there (at most once per
    /// rebroadcast interval).
    fn serve(
        &mut self,
        ledger: &Ledger<TendermintConsensus, A>,
        now: Time,
        peer: PublicKey,
        height: u64,
        out: &mut TmOutputs<A>,
    ) {
        if let Some((h, at)) = self.served.get(&peer) {
            if *h == height && now < at.saturating_add(self.rebroadcast) {
                return;
            }
        }
        let (Some(hash), Some(parent)) = (
            ledger.chain().hash_at(height),
            height
                .checked_sub(1)
                .and_then(|h| ledger.chain().header_at(h)),
        ) else {
            return;
        };
        let parent_seal = parent.seal.clone();
        let Ok(Some(block)) = ledger.chain().block(&hash) else {
            return;
        };
        if self.served.len() >= MAX_BUFFERED_MESSAGES {
            self.served.clear();
        }
        self.served.insert(peer, (height, now));
        out.push(Output::Send {
            to: Recipients::One(peer),
            message: Message::Decided { block, parent_seal },
        });
    }

    fn on_timer(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
        timer: Timer,
        out: &mut TmOutputs<A>,
    ) -> Result<(), TendermintError> {
        if !self.timers.remove(&timer)
            || timer.height != self.height
            || timer.round != self.round()
            || self.decided
        {
            return Ok(());
        }
        let round = Round::new(timer.round);
        let timeout = match timer.kind {
            TimerKind::Propose => Timeout::propose(round),
            TimerKind::Prevote => Timeout::prevote(round),
            TimerKind::Precommit => Timeout::precommit(round),
            TimerKind::Rebroadcast => {
                if let Some((proposal, parent_seal)) = &self.own_proposal {
                    // Only to the validators not known to hold the block: a proposal is a
                    // whole block, votes are a few bytes.
                    let missing: Vec<PublicKey> = self
                        .validators
                        .validators()
                        .iter()
                        .map(|v| v.key())
                        .filter(|k| *k != self.me && !self.proposal_holders.contains(k))
                        .collect();
                    if !missing.is_empty() {
                        out.push(Output::Send {
                            to: Recipients::Some(missing),
                            message: Message::Proposal {
                                proposal: proposal.clone(),
                                parent_seal: parent_seal.clone(),
                            },
                        });
                    }
                }
                for vote in [self.last_prevote, self.last_precommit]
                    .into_iter()
                    .flatten()
                {
                    out.push(Output::Send {
                        to: Recipients::All,
                        message: Message::Vote(vote),
                    });
                }
                self.set_timer(now, Timeout::rebroadcast(round), out);
                return Ok(());
            }
        };
        self.apply(ledger, now, DInput::TimeoutElapsed(timeout), out)
    }

    // ----- transactions -----

    /// Submits offered transactions to the ledger's pool, in order. Signatures are checked
    /// first, all together: one bad signature refuses the whole batch. Then each is submitted
    /// ([`Ledger::submit`]: nonce order, duplicates, the pool's bounds, the application's
    /// rules), after the engine's own rules (a validator change must leave a valid set,
    /// evidence must verify); the first refusal is returned, the others submitted still.
    fn offer(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        txs: Vec<Transaction<P<A>>>,
    ) -> Result<(), TendermintError> {
        // Through the chain's cache: the submissions below find these signatures checked.
        tx::verify_batch_cached(ledger.chain_id(), txs.clone(), ledger.chain().keys())?;
        let mut first: Option<TendermintError> = None;
        for (index, tx) in txs.into_iter().enumerate() {
            let refusal = match self.engine_rule(&tx) {
                Some(reason) => Some(reason),
                None => ledger.submit(tx).err().map(|r| r.to_string()),
            };
            if let (Some(reason), None) = (refusal, &first) {
                first = Some(TendermintError::Refused { index, reason });
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Why the engine's own rules refuse `tx` (a validator change must leave a valid set,
    /// evidence must verify), if they do.
    fn engine_rule(&self, tx: &Transaction<P<A>>) -> Option<String> {
        let payload = &tx.body.payload;
        let change = payload
            .validator_change()
            .and_then(|change| self.validators.apply([change]).err());
        let evidence = payload.evidence().and_then(|claim| {
            check_evidence(
                &self.validators,
                self.engine.chain_id(),
                self.height,
                &claim,
            )
            .err()
        });
        change.or(evidence).map(|e| e.to_string())
    }

    /// Submits offered transactions to the ledger's pool as one batch and answers each, in
    /// order: the engine's own rules first (as for [`Input::Transactions`]), then
    /// [`Ledger::submit_all`] (all signatures checked at once, on all cores with the `parallel`
    /// feature; then each transaction as [`Ledger::submit`] would, in order). Unlike
    /// [`Input::Transactions`], a bad signature refuses only its own transaction: for a node
    /// that admits what its clients and peers sent since it last looked, each with its own
    /// answer. The engine's state is unchanged (offers produce no outputs).
    pub fn offer_all(
        &self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        txs: Vec<Transaction<P<A>>>,
    ) -> Vec<Result<(), TendermintError>> {
        self.offer_with(ledger, txs, Ledger::submit_all)
    }

    /// [`offer_all`](Self::offer_all) for transactions a peer relayed after admitting them
    /// itself: taken with [`Ledger::submit_relayed`] (checked but for the state, not applied
    /// to the pool's state).
    pub fn offer_relayed(
        &self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        txs: Vec<Transaction<P<A>>>,
    ) -> Vec<Result<(), TendermintError>> {
        self.offer_with(ledger, txs, Ledger::submit_relayed)
    }

    /// The engine's rules on each of `txs`, then `submit` on those that pass; one answer per
    /// transaction, in order.
    fn offer_with<T>(
        &self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        txs: Vec<Transaction<P<A>>>,
        submit: impl FnOnce(
            &mut Ledger<TendermintConsensus, A>,
            Vec<Transaction<P<A>>>,
        ) -> Vec<Result<T, Refusal<A>>>,
    ) -> Vec<Result<(), TendermintError>> {
        let mut answers: Vec<Result<(), TendermintError>> = Vec::with_capacity(txs.len());
        let mut passed = Vec::with_capacity(txs.len());
        for (index, tx) in txs.into_iter().enumerate() {
            match self.engine_rule(&tx) {
                Some(reason) => answers.push(Err(TendermintError::Refused { index, reason })),
                None => {
                    answers.push(Ok(()));
                    passed.push((index, tx));
                }
            }
        }
        let (indices, passed): (Vec<usize>, Vec<_>) = passed.into_iter().unzip();
        for (index, result) in indices.into_iter().zip(submit(ledger, passed)) {
            if let Err(refusal) = result {
                answers[index] = Err(TendermintError::Refused {
                    index,
                    reason: refusal.to_string(),
                });
            }
        }
        answers
    }
}

/// How a proposed block's parent relates to the ledger's tip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockIdCheck {
    /// It is the tip.
    Tip,
    /// It is the tip's block under another valid seal.
    Copy,
    /// Neither.
    Mismatch,
}

impl<A: Application> Protocol for Tendermint<A> {
    type Message = Message<P<A>>;
    type Timer = Timer;
    type Tx = Transaction<P<A>>;
    type Block = SealedBlock<A>;
    type Evidence = Evidence;
    type Error = TendermintError;
    type Ledger = Ledger<TendermintConsensus, A>;

    fn handle(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus, A>,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<TmOutputs<A>, TendermintError> {
        let mut out = Vec::new();
        match input {
            Input::Start | Input::Appended => self.sync_to_ledger(ledger, now, &mut out)?,
            Input::Timer(timer) => self.on_timer(ledger, now, timer, &mut out)?,
            Input::Transactions(txs) => self.offer(ledger, txs)?,
            Input::Message { from, message } => {
                self.on_message(ledger, now, from, message, &mut out)?
            }
        }
        Ok(out)
    }
}
