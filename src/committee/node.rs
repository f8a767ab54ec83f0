//! A committee node as a sans-I/O [`Protocol`] engine.
//!
//! A [`Node`] never touches a socket or a clock. Whoever drives it (a node on a real network,
//! the engine-agnostic simulator `sim::Network`, a test) hands it one [`Input`] at a time through
//! [`Protocol::handle`] and carries out the [`Output`]s it returns, as for any engine (see
//! [`protocol`](crate::consensus::protocol)). Everything the node needs from the world that is
//! not a message goes through its [`Host`], the engine's [`Ledger`](Protocol::Ledger): signature
//! checks, the mempool, and the ledger state (nonces and state roots). Those are deterministic
//! functions of their arguments, so a simulator can memoise them and charge each node the
//! simulated CPU cost while spending the real cost once.
//!
//! [`Node`]'s documentation says how the committee protocol maps onto the interface.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::bft::{Bft, BftCtx, BftOut, Validity};
use super::engine::{verify_seal, ParentView};
use super::identity::{IdentityProof, Randomness};
use super::messages::{
    CommitteeAssignment, Message, NextEpoch, Roster, ShardBatch, ShardCertified, ShardRequest,
    ShardResult, ShardValue, Value,
};
use super::seal::{
    check_roster_member_list, commitment_of, verify_certificate, verify_directory, verify_members,
    Certificate, Commitment, CommitteeSeal, DirectoryCert, FinalValue, Phase, Reveal,
    ShardCertificate, ShardSummary, SigItem, Stage, VoteBody,
};
use super::{quorum_of, CommitteeParams};
use super::{Transaction, MAX_SHARD_TXS};
use crate::block::{Header, HEADER_VERSION};
use crate::codec::{self, BoundedVec};
use crate::consensus::protocol::{
    Input, Output, Outputs, Protocol, ProtocolInput, Recipients, Time,
};
use crate::hash::{domain, AccountId, BlockHash, Digest, MerkleRoot, StateRoot, TxId};
use crate::merkle::merkle_root;
use crate::tx::{Keypair, PublicKey, Signature};

/// What a node needs from its environment besides messages. Every method must be a
/// deterministic function of its arguments (and of the committed ledger).
pub trait Host {
    /// Checks signatures over 32-byte digests; on failure returns the index of a bad one.
    fn verify_signatures(
        &mut self,
        items: &[(PublicKey, [u8; 32], Signature)],
    ) -> Result<(), usize>;
    /// Whether every transaction's signature verifies and is for this chain.
    fn verify_txs(&mut self, txs: &[Transaction]) -> bool;
    /// The next nonce of `account` in the state after block `parent`, if that state is known.
    fn next_nonce(&mut self, parent: &BlockHash, account: &AccountId) -> Option<u64>;
    /// The state root after applying `txs` (all of which must apply) on top of `parent`, as
    /// block `height` at `timestamp`; `None` if a transaction fails or the state is unknown.
    fn state_root(
        &mut self,
        parent: &BlockHash,
        height: u64,
        timestamp: u64,
        txs: &[Transaction],
    ) -> Option<StateRoot>;
    /// Up to `max` pending transactions of `shard`, valid in order on top of `parent`.
    fn take_txs(&mut self, parent: &BlockHash, shard: u16, max: usize) -> Vec<Transaction>;
    /// Told how many identity hashes the node computed (for CPU accounting).
    fn hashed(&mut self, count: u64) {
        let _ = count;
    }
}

/// What one call into the node's state machine produced; [`Protocol::handle`] turns these into
/// the interface's [`Output`]s.
// Steps are moved out once; boxing the common `Send` variant would only add allocations.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Send `message` to each of `to`.
    Send {
        to: Vec<PublicKey>,
        message: Message,
    },
    /// Call `tick` at this time (microseconds) or later.
    Timer(u64),
    /// This node saw a value decided.
    Decided(Decision),
    /// This final member assembled the certified block.
    Block {
        header: Box<Header<CommitteeSeal>>,
        txs: Vec<Transaction>,
    },
    /// The node began working on the block at `height`.
    EpochStarted { height: u64 },
}

/// An agreement a node saw decided ([`Node::take_decisions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The block height.
    pub height: u64,
    /// The epoch's attempt at that height (0 unless it restarted).
    pub attempt: u32,
    /// Which agreement: a shard's or the final one.
    pub stage: Stage,
    /// The deciding round (rounds above 0 followed round changes).
    pub round: u32,
    /// The decided value's digest.
    pub value: Digest,
}

/// The most decisions a node keeps for [`Node::take_decisions`]; older ones are dropped first.
pub const MAX_KEPT_DECISIONS: usize = 4_096;

/// The committee node's timer: call back at or after this time (microseconds). Each deadline the
/// node asks for is its own timer, so a driver that keeps one deadline per timer value keeps
/// every one the node asked for; a tick that finds nothing due does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(pub Time);

/// Protocol timing, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long the directory collects identities.
    pub identity_window: u64,
    /// The first round's timeout (doubling each round, up to 64 times).
    pub round_timeout: u64,
    /// The longest the final committee's leader waits for missing shards (sooner once more
    /// than half the shards' results are in: the rest get as long again as those took).
    pub final_wait: u64,
    /// How long a final member collects late precommits before sealing the block (members
    /// that saw the same precommits seal identical blocks).
    pub settle: u64,
    /// How often a node still in an epoch asks again for what it may have missed: it sends
    /// its identity to the directory again (a directory member that published the epoch's
    /// committees answers with the node's assignment; one already in a later epoch answers
    /// with the block that ended this one), and a final member re-sends its randomness
    /// commitment. Lost messages, or a partition that healed, then stall nobody for good.
    pub resend: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            identity_window: 1_000_000,
            round_timeout: 2_000_000,
            final_wait: 3_000_000,
            settle: 300_000,
            resend: 4_000_000,
        }
    }
}

/// What a node must know about the last final block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TipInfo {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: BlockHash,
    /// Its time.
    pub timestamp: u64,
    /// The randomness of the epoch after it.
    pub next_randomness: Randomness,
    /// The directory of the next epoch: the block's final committee in certificate order.
    pub directory: Vec<PublicKey>,
    /// The block's randomness commitments.
    pub commitments: Vec<Commitment>,
}

impl TipInfo {
    /// The tip info of a header; `bootstrap` is the directory when the header has no final
    /// committee (genesis).
    pub fn of_header(header: &Header<CommitteeSeal>, bootstrap: &[PublicKey]) -> Self {
        let directory = if header.seal.cert.members.is_empty() {
            bootstrap.to_vec()
        } else {
            header.seal.cert.members.iter().map(|m| m.key).collect()
        };
        Self {
            height: header.height,
            hash: header.hash(),
            timestamp: header.timestamp,
            next_randomness: header.seal.next_randomness(),
            directory,
            commitments: header.seal.commitments.to_vec(),
        }
    }
}

/// A node's configuration.
#[derive(Debug)]
pub struct NodeConfig {
    /// The chain's committee parameters.
    pub params: CommitteeParams,
    /// The node's key (its identity and its address).
    pub keypair: Keypair,
    /// Every node of the network (block announcements go to all of them).
    pub peers: Vec<PublicKey>,
    /// The last final block.
    pub tip: TipInfo,
    /// Protocol timing.
    pub timing: Timing,
    /// The most transactions a shard leader proposes.
    pub max_shard_txs: usize,
}

/// A node's view, for monitoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The height being agreed.
    pub height: u64,
    /// The node's committee this epoch, if any.
    pub committee: Option<u16>,
    /// Whether it is in the final committee.
    pub is_final: bool,
    /// Its shard agreement's round.
    pub shard_round: Option<u32>,
    /// Its final agreement's round.
    pub final_round: Option<u32>,
    /// The epoch's attempt at this height (0 unless the epoch restarted; see
    /// [`attempt_randomness`](super::attempt_randomness)).
    pub attempt: u32,
}

/// How many requests of one peer a node answers in one epoch (a re-sent identity answered
/// with an assignment or a block announcement): enough for a few losses, too few to make the
/// node a traffic amplifier.
pub(crate) const MAX_ANSWERS: u8 = 4;

/// How many precommitted shard values a member sends ahead to its final members in one epoch
/// (a value precommitted in a later round is sent too, up to this bound).
const MAX_SENT_AHEAD: usize = 2;

/// How many distinct batches of one shard (and certificates still waiting for theirs) a final
/// member keeps: the honest members of a shard send the same batch, so more is noise.
const MAX_BATCHES_PER_SHARD: usize = 4;

/// The most block announcements a node keeps to help peers that fell behind catch up.
const KEPT_ANNOUNCEMENTS: usize = 8;

/// The most messages a node keeps for later (for a later epoch, or for an agreement it has not
/// been assigned to yet), in each of its two buffers.
pub const MAX_BUFFERED_MESSAGES: usize = 1 << 14;
/// The most bytes of encoded messages a node keeps in each of those buffers: without it, peers
/// could park [`MAX_BUFFERED_MESSAGES`] messages of up to
/// [`MAX_MESSAGE_LEN`](super::MAX_MESSAGE_LEN) each (64 GiB) in every node.
pub const MAX_BUFFERED_BYTES: usize = 64 << 20;

/// Messages kept for later, bounded in number and bytes; what does not fit is dropped.
#[derive(Default)]
struct Buffer {
    items: Vec<(PublicKey, Message)>,
    bytes: usize,
}

impl core::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Buffer")
            .field("messages", &self.items.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Buffer {
    fn push(&mut self, from: PublicKey, message: Message) {
        let len = codec::body_len(&message);
        if self.items.len() < MAX_BUFFERED_MESSAGES && self.bytes + len <= MAX_BUFFERED_BYTES {
            self.bytes += len;
            self.items.push((from, message));
        }
    }

    fn take(&mut self) -> Vec<(PublicKey, Message)> {
        self.bytes = 0;
        core::mem::take(&mut self.items)
    }
}

struct Epoch {
    height: u64,
    parent: BlockHash,
    parent_ts: u64,
    /// The randomness of the height's first attempt (the parent's next randomness).
    base_randomness: Randomness,
    /// The attempt at this height: 0 until the epoch restarts.
    attempt: u32,
    /// This attempt's randomness.
    randomness: Randomness,
    /// This node's identity for the attempt.
    my_proof: Option<IdentityProof>,
    /// Identities that arrived for the next attempt before this node restarted (at most one
    /// per key, bounded).
    next_ids: BTreeMap<PublicKey, IdentityProof>,
    /// The assignments this directory member published, by recipient list.
    published: Vec<(Vec<PublicKey>, CommitteeAssignment)>,
    /// How many times this node answered each peer's request this epoch (bounded).
    answered: BTreeMap<PublicKey, u8>,
    /// When the node next asks again for what it may have missed.
    resend_at: u64,
    directory: Vec<PublicKey>,
    parent_commitments: Vec<Commitment>,
    dir_ids: BTreeMap<PublicKey, IdentityProof>,
    /// The identities of `dir_ids` in the order they arrived: seats go to the first
    /// [`CommitteeParams::committee_size`] of each committee (Elastico's first-c rule).
    dir_order: Vec<IdentityProof>,
    /// When this node, a directory member, stops collecting identities and joins the
    /// directory's agreement on the roster.
    dir_publish_at: Option<u64>,
    /// The directory's agreement on the roster (directory members, once their window closed).
    dir: Option<Bft>,
    /// Directory votes that arrived before this node's window closed.
    dir_early: Buffer,
    /// The directory's certificate of the adopted roster.
    dir_cert: Option<DirectoryCert>,
    assigned: bool,
    committee: Option<u16>,
    members: Vec<IdentityProof>,
    final_members: Vec<IdentityProof>,
    reveals: BTreeMap<u16, Digest>,
    shard: Option<Bft>,
    fin: Option<Bft>,
    shard_results: BTreeMap<u16, ShardResult>,
    /// A second certified result of a shard, for another value: a shard beyond its bound
    /// that an equivocating leader split can certify both, and final members then hold one
    /// or the other. Holding both, a member can check whichever the leader proposes.
    other_results: BTreeMap<u16, ShardResult>,
    /// The shard values this member sent ahead to its final members, by digest (at most
    /// [`MAX_SENT_AHEAD`]).
    sent_ahead: Vec<Digest>,
    /// Shard batches received ahead of their certificates, by shard and summary digest (at
    /// most [`MAX_BATCHES_PER_SHARD`] per shard, one per sender).
    batches: BTreeMap<(u16, Digest), BoundedVec<Transaction, MAX_SHARD_TXS>>,
    batch_senders: BTreeSet<PublicKey>,
    /// The shard results this final member asked a leader for, by summary digest (each once).
    requested: BTreeSet<Digest>,
    /// Shard certificates that arrived before their batch (at most
    /// [`MAX_BATCHES_PER_SHARD`] per shard).
    certified: BTreeMap<u16, Vec<ShardCertificate>>,
    commitments: BTreeMap<PublicKey, Digest>,
    my_commitment: Option<Digest>,
    fin_open_at: u64,
    /// When the final committee began to wait for shards (its member's assignment).
    fin_began_at: u64,
    /// When more than half the shards' results were in, if they are: stragglers get as long
    /// again.
    half_in_at: Option<u64>,
    /// Whether this final member, as a round's leader, asked others for missing results.
    pulled: bool,
    settle_until: Option<u64>,
    block_done: bool,
    early: Buffer,
    /// Senders whose block announcement for this epoch was checked (and refused): each sender
    /// costs the node at most one seal check per epoch.
    next_tried: BTreeSet<PublicKey>,
}

impl Epoch {
    fn new(tip: &TipInfo) -> Self {
        Self::first_attempt(
            tip.height + 1,
            tip.hash,
            tip.timestamp,
            tip.next_randomness,
            tip.directory.clone(),
            tip.commitments.clone(),
        )
    }

    /// The first attempt at `height` on the parent `parent` (made at `parent_ts`), whose next
    /// randomness is `base_randomness`, with the parent's directory and commitments: nothing
    /// collected yet.
    fn first_attempt(
        height: u64,
        parent: BlockHash,
        parent_ts: u64,
        base_randomness: Randomness,
        directory: Vec<PublicKey>,
        parent_commitments: Vec<Commitment>,
    ) -> Self {
        Self {
            height,
            parent,
            parent_ts,
            base_randomness,
            attempt: 0,
            randomness: base_randomness,
            my_proof: None,
            next_ids: BTreeMap::new(),
            published: Vec::new(),
            answered: BTreeMap::new(),
            resend_at: u64::MAX,
            directory,
            parent_commitments,
            dir_ids: BTreeMap::new(),
            dir_order: Vec::new(),
            dir_publish_at: None,
            dir: None,
            dir_early: Buffer::default(),
            dir_cert: None,
            assigned: false,
            committee: None,
            members: Vec::new(),
            final_members: Vec::new(),
            reveals: BTreeMap::new(),
            shard: None,
            fin: None,
            shard_results: BTreeMap::new(),
            other_results: BTreeMap::new(),
            sent_ahead: Vec::new(),
            batches: BTreeMap::new(),
            batch_senders: BTreeSet::new(),
            certified: BTreeMap::new(),
            requested: BTreeSet::new(),
            commitments: BTreeMap::new(),
            my_commitment: None,
            fin_open_at: 0,
            fin_began_at: 0,
            half_in_at: None,
            pulled: false,
            settle_until: None,
            block_done: false,
            early: Buffer::default(),
            next_tried: BTreeSet::new(),
        }
    }

    /// The next attempt at this height: fresh randomness, nothing of this attempt kept but
    /// the parent and the identities that arrived for the next attempt.
    fn restarted(&mut self) -> Self {
        let mut next = Self::first_attempt(
            self.height,
            self.parent,
            self.parent_ts,
            self.base_randomness,
            core::mem::take(&mut self.directory),
            core::mem::take(&mut self.parent_commitments),
        );
        next.attempt = self.attempt + 1;
        next.randomness = super::attempt_randomness(&self.base_randomness, next.attempt);
        next.next_ids = core::mem::take(&mut self.next_ids);
        next.next_tried = core::mem::take(&mut self.next_tried);
        next
    }

    /// Counts an answer to `peer`'s request; false once it had [`MAX_ANSWERS`] this epoch.
    /// The certified result this node holds for `summary`, if any.
    fn result_for(&self, summary: &ShardSummary) -> Option<&ShardResult> {
        [&self.shard_results, &self.other_results]
            .into_iter()
            .filter_map(|m| m.get(&summary.shard))
            .find(|r| r.cert.summary == *summary)
    }

    /// Whether this node holds as many results of `shard` as it keeps.
    fn results_full(&self, shard: u16) -> bool {
        self.other_results.contains_key(&shard)
    }

    /// When the final leader proposes without the shards still missing: once more than half
    /// the shards' results are in, the rest get as long again as those took (a shard held up
    /// by a run of Byzantine leaders, or whose result this member never received, is left to
    /// the next block instead of holding up this one), and never longer than
    /// [`Timing::final_wait`].
    fn final_open_at(&self) -> u64 {
        let stragglers = self.half_in_at.map_or(u64::MAX, |half| {
            half.saturating_add(half.saturating_sub(self.fin_began_at))
        });
        self.fin_open_at.min(stragglers)
    }

    /// When a final leader still missing shard results asks other final members for them:
    /// halfway to [`Epoch::final_open_at`]'s leaving them out.
    fn pull_at(&self) -> Option<u64> {
        self.half_in_at
            .map(|half| half.saturating_add(half.saturating_sub(self.fin_began_at) / 2))
    }

    fn may_answer(&mut self, peer: PublicKey) -> bool {
        let n = self.answered.entry(peer).or_insert(0);
        *n += 1;
        *n <= MAX_ANSWERS
    }

    fn required_reveals(&self) -> usize {
        if self.parent_commitments.is_empty() {
            0
        } else {
            self.parent_commitments.len() / 2 + 1
        }
    }

    fn reveal_valid(&self, r: &Reveal) -> bool {
        let key = self.directory.get(usize::from(r.member));
        let c = self
            .parent_commitments
            .iter()
            .find(|c| c.member == r.member);
        matches!((key, c), (Some(k), Some(c)) if commitment_of(k, &r.value) == c.value)
    }
}

/// A committee protocol node, as a sans-I/O state machine driven through [`Protocol`].
///
/// It never touches a socket or a clock: the driver hands it inputs with
/// [`handle`](Protocol::handle) and carries out the [`Output`]s returned: messages to send, when
/// to call back, progress and finished blocks. What it needs besides messages goes through the
/// [`Host`].
///
/// # The protocol interface
///
/// | interface | committee node |
/// |---|---|
/// | [`Input::Start`] | mine an identity for the epoch after the configured tip and send it to the directory |
/// | [`Input::Message`] | a protocol message (identities, assignments, proposals, votes, shard results, block announcements) |
/// | [`Input::Timer`] | let time pass: the directory's window, round timeouts, the final committee's wait, sealing |
/// | [`Input::Transactions`], [`Input::Appended`] | nothing: see below |
/// | [`Output::Send`] | to [`Recipients::Some`] peers (committee members, the directory, or every peer) |
/// | [`Output::SetTimer`] | "tick at or after `at`": the timer is the deadline itself ([`Tick`]) |
/// | [`Output::Append`] | a final member sealed the certified block |
/// | [`Output::Progress`] | an epoch began (round 0), or an agreement decided in some round |
///
/// * **Timers.** The state machine asks to be called back "at or after" its next deadline, and
///   asks again whenever that deadline changes. The interface keeps one deadline per timer
///   value and a new deadline for the same timer replaces the old, so each deadline is its own
///   timer, [`Tick`]`(at)`: no deadline the node asked for is lost when it asks for another, and
///   a tick that finds nothing due (a deadline that no longer applies) changes nothing.
/// * **Transactions** are the host's: committee leaders take their shard's pending
///   transactions from [`Host::take_txs`], the shard's mempool. Offered transactions are for the
///   driver to pool there; the node ignores them.
/// * **New blocks.** A node moves to the next epoch on a block announcement ([`NextEpoch`])
///   whose sealed header proves the final committee certified the block: on the node's parent,
///   at its height, with a seal that checks as the chain checks it (against the parent's time,
///   randomness and commitments the node knows) and, once the node knows the epoch's final
///   committee, signed by that committee. The seal carries what the epoch needs beyond the
///   ledger's tip (the next randomness and directory), so the node needs no
///   [`Input::Appended`]. Any other announcement changes nothing, however many peers send it;
///   one for a later height is kept (bounded) and checked when the node reaches that height,
///   and each sender gets one check per epoch. A restarted node is a new [`Node`] at the
///   ledger's tip ([`TipInfo::of_header`]).
/// * **Decisions** of every agreement (each shard's and the final one) are reported as
///   [`Output::Progress`] with their round, and kept for [`Node::take_decisions`], with the
///   decided value's digest, for drivers that check agreement by agreement.
/// * **Blocks.** Each final member seals the block it saw certified and outputs it as
///   [`Output::Append`]. Members may collect different sets of precommits, so their seals may
///   differ; what they all agree on when the protocol is safe is the decided final value, whose
///   digest ([`FinalValue::of_header`]`(..).digest()`) identifies the block across members.
#[derive(Debug)]
pub struct Node {
    params: CommitteeParams,
    keypair: Keypair,
    key: PublicKey,
    peers: Vec<PublicKey>,
    timing: Timing,
    max_shard_txs: usize,
    epoch: Epoch,
    shares: BTreeMap<u64, Digest>,
    future: Buffer,
    inbox: Vec<Message>,
    last_timer: Option<u64>,
    started: bool,
    /// Messages kept for later are to be replayed (an epoch began).
    replay: bool,
    decisions: VecDeque<Decision>,
    /// The last block announcements this node accepted, oldest first, each with the
    /// randomness of its height's first attempt, for peers that missed them.
    announcements: VecDeque<(NextEpoch, Randomness)>,
    /// The last blocks this node executed (see [`Executed`]).
    executed: Executed,
}

/// The state roots of the last few blocks a final member executed, keyed by what determines
/// them. A final member that holds every shard's result executes the block it expects as soon
/// as the last result arrives, while the leader builds its proposal and the proposal travels;
/// checking the proposal then finds the state root here instead of executing the block on the
/// critical path. Bounded: one epoch needs one or two entries.
#[derive(Debug, Default)]
struct Executed(VecDeque<(ExecutedKey, Option<StateRoot>)>);

/// What a block's state root is a function of: its parent, height, time and transactions
/// (through the Merkle root of their ids).
type ExecutedKey = (BlockHash, u64, u64, MerkleRoot);

impl Executed {
    const KEPT: usize = 4;

    fn state_root(
        &mut self,
        host: &mut dyn Host,
        key: ExecutedKey,
        txs: &[Transaction],
    ) -> Option<StateRoot> {
        if let Some((_, root)) = self.0.iter().find(|(k, _)| *k == key) {
            return *root;
        }
        let (parent, height, timestamp, _) = key;
        let root = host.state_root(&parent, height, timestamp, txs);
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back((key, root));
        root
    }
}

impl core::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Epoch")
            .field("height", &self.height)
            .field("committee", &self.committee)
            .finish_non_exhaustive()
    }
}

struct Ctx<'a> {
    keypair: &'a Keypair,
    key: PublicKey,
    host: &'a mut dyn Host,
    params: &'a CommitteeParams,
    epoch: &'a Epoch,
    executed: &'a mut Executed,
    max_shard_txs: usize,
    stage: Stage,
    /// The shard results the last final value checked needed and this node lacks.
    wanted: Vec<ShardSummary>,
}

impl BftCtx for Ctx<'_> {
    fn sign(&mut self, body: &VoteBody) -> Signature {
        self.keypair.sign(&body.digest())
    }

    fn check(&mut self, items: &[SigItem]) -> Result<(), usize> {
        self.host.verify_signatures(items)
    }

    fn validate(&mut self, value: &Value, now: u64) -> Validity {
        let valid = match (value, self.stage) {
            (Value::Shard(v), Stage::Shard(s)) => self.validate_shard(v, s),
            (Value::Final(v), Stage::Final) => return self.validate_final(v, now),
            (Value::Roster(r), Stage::Directory) => self.validate_roster(r),
            _ => false,
        };
        match valid {
            true => Validity::Valid,
            false => Validity::Invalid,
        }
    }

    fn propose(&mut self, now: u64) -> Option<Value> {
        match self.stage {
            Stage::Shard(s) => {
                let txs = self
                    .host
                    .take_txs(&self.epoch.parent, s, self.max_shard_txs);
                Some(Value::Shard(ShardValue {
                    txs: BoundedVec::try_from(txs).ok()?,
                }))
            }
            Stage::Final => self.propose_final(now).map(|v| Value::Final(Box::new(v))),
            Stage::Directory => Some(Value::Roster(self.propose_roster())),
        }
    }
}

impl Ctx<'_> {
    fn validate_shard(&mut self, v: &ShardValue, shard: u16) -> bool {
        if v.txs.len() > self.max_shard_txs {
            return false;
        }
        let mut ids = BTreeSet::new();
        let mut nonces: BTreeMap<AccountId, u64> = BTreeMap::new();
        for tx in &v.txs {
            if self.params.shard_of_key(&tx.signer()) != shard || !ids.insert(tx.id()) {
                return false;
            }
        }
        if !self.host.verify_txs(&v.txs) {
            return false;
        }
        for tx in &v.txs {
            let account = tx.signer().account();
            let next = match nonces.get(&account) {
                Some(n) => *n,
                None => match self.host.next_nonce(&self.epoch.parent, &account) {
                    Some(n) => n,
                    None => return false,
                },
            };
            if tx.body.nonce != next {
                return false;
            }
            nonces.insert(account, next + 1);
        }
        true
    }

    /// The roster of the identities this directory member received: in each committee the
    /// first [`CommitteeParams::committee_size`] identities that arrived (Elastico's first-c
    /// rule), sorted by key. Arrival order, not the size of the hash, decides a seat: an
    /// identity mined longer for a smaller hash is worth no more than one that just meets the
    /// difficulty, and identities found after the window closed are not taken at all.
    fn propose_roster(&self) -> Roster {
        let e = self.epoch;
        let c = usize::from(self.params.committee_size());
        let mut lists: Vec<Vec<IdentityProof>> = vec![Vec::new(); self.params.committees()];
        for p in &e.dir_order {
            let list =
                &mut lists[usize::from(p.hash(&e.randomness).committee(self.params.shard_bits()))];
            if list.len() < c {
                list.push(*p);
            }
        }
        let committees = lists
            .into_iter()
            .map(|mut chosen| {
                chosen.sort_by_key(|p| p.key);
                BoundedVec::try_from(chosen).expect("at most c members")
            })
            .collect::<Vec<_>>();
        Roster {
            committees: BoundedVec::try_from(committees).expect("at most MAX_SHARDS committees"),
        }
    }

    /// A roster the directory may agree on: one list per committee, each a valid committee
    /// (identity proofs against the epoch's randomness, committee bits, order, size), and no
    /// key on two lists. Which valid identities a leader chose is its own: others may not
    /// have received them all. But a final committee too small to certify a block (which
    /// restarts the epoch) is accepted only from a leader that may not have had more: not if
    /// this member itself received enough identities for a full one, so a Byzantine leader
    /// cannot restart epochs at will (and pick among the attempts' randomness).
    fn validate_roster(&self, r: &Roster) -> bool {
        if r.committees.len() != self.params.committees() {
            return false;
        }
        let quorum = self.params.quorum();
        if r.committees[0].len() < quorum {
            let e = self.epoch;
            let received = e
                .dir_order
                .iter()
                .filter(|p| p.hash(&e.randomness).committee(self.params.shard_bits()) == 0)
                .count();
            if received >= quorum {
                return false;
            }
        }
        let mut keys = BTreeSet::new();
        r.committees.iter().enumerate().all(|(j, members)| {
            verify_members(
                self.params,
                &self.epoch.randomness,
                Stage::Shard(j as u16),
                members,
            )
            .is_ok()
                && members.iter().all(|m| keys.insert(m.key))
        })
    }

    fn final_commitments(&self) -> Vec<Commitment> {
        let e = self.epoch;
        e.final_members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                e.commitments.get(&m.key).map(|v| Commitment {
                    member: i as u16,
                    value: *v,
                })
            })
            .collect()
    }

    fn shard_txs(&self, shards: &[ShardCertificate]) -> Option<Vec<Transaction>> {
        let mut txs = Vec::new();
        for sc in shards {
            let r = self.epoch.result_for(&sc.summary)?;
            txs.extend(r.txs.iter().cloned());
        }
        Some(txs)
    }

    fn propose_final(&mut self, now: u64) -> Option<FinalValue> {
        let e = self.epoch;
        let all = e.shard_results.len() == self.params.committees();
        if !all && now < e.final_open_at() {
            return None;
        }
        let commitments = self.final_commitments();
        if commitments.len() < self.params.quorum() {
            return None;
        }
        let reveals: Vec<Reveal> = e
            .reveals
            .iter()
            .map(|(m, v)| Reveal {
                member: *m,
                value: *v,
            })
            .collect();
        if reveals.len() < e.required_reveals() {
            return None;
        }
        let shards: Vec<ShardCertificate> =
            e.shard_results.values().map(|r| r.cert.clone()).collect();
        let txs = self.shard_txs(&shards)?;
        let timestamp = e.parent_ts.max(now / 1_000_000);
        let tx_root = merkle_root(&txs.iter().map(Transaction::id).collect::<Vec<TxId>>());
        let key = (e.parent, e.height, timestamp, tx_root);
        let state_root = self.executed.state_root(&mut *self.host, key, &txs)?;
        Some(FinalValue {
            timestamp,
            tx_root,
            tx_count: txs.len() as u32,
            state_root,
            randomness: e.randomness,
            shards: BoundedVec::try_from(shards).ok()?,
            commitments: BoundedVec::try_from(commitments).ok()?,
            reveals: BoundedVec::try_from(reveals).ok()?,
            directory: e.dir_cert.clone()?,
        })
    }

    /// A final value's validity; [`Validity::Unknown`] while this node lacks a result of a
    /// shard the value includes (the summaries are left in `wanted`).
    fn validate_final(&mut self, v: &FinalValue, now: u64) -> Validity {
        let e = self.epoch;
        for (i, sc) in v.shards.iter().enumerate() {
            if usize::from(sc.summary.shard) >= self.params.committees()
                || (i > 0 && v.shards[i - 1].summary.shard >= sc.summary.shard)
            {
                return Validity::Invalid;
            }
        }
        self.wanted = v
            .shards
            .iter()
            .filter(|sc| e.result_for(&sc.summary).is_none())
            .map(|sc| sc.summary)
            .collect();
        if !self.wanted.is_empty() {
            return Validity::Unknown;
        }
        match self.validate_final_held(v, now) {
            true => Validity::Valid,
            false => Validity::Invalid,
        }
    }

    /// A final value's validity, every shard result it includes at hand.
    fn validate_final_held(&mut self, v: &FinalValue, now: u64) -> bool {
        let e = self.epoch;
        let p = self.params;
        // The directory's certificate of the roster this node adopted (the same lists; the
        // signatures may be another quorum's).
        let Some(ours) = e.dir_cert.as_ref() else {
            return false;
        };
        if v.directory.committees != ours.committees
            || (v.directory != *ours && {
                let host = &mut *self.host;
                let mut check = |items: &[SigItem]| host.verify_signatures(items);
                verify_directory(
                    p,
                    e.height,
                    e.parent,
                    e.attempt,
                    &e.directory,
                    &v.directory,
                    &mut check,
                )
                .is_err()
            })
        {
            return false;
        }
        if v.randomness != e.randomness
            || v.timestamp < e.parent_ts
            || v.timestamp > (now / 1_000_000).saturating_add(p.max_future_drift())
        {
            return false;
        }
        let Some(txs) = self.shard_txs(&v.shards) else {
            return false;
        };
        for sc in &v.shards {
            // Certificates identical to those verified on arrival need no second check.
            if e.result_for(&sc.summary).is_some_and(|r| r.cert == *sc) {
                continue;
            }
            let host = &mut *self.host;
            let mut check = |items: &[SigItem]| host.verify_signatures(items);
            if verify_certificate(
                p,
                &e.randomness,
                e.attempt,
                ours,
                e.height,
                e.parent,
                Stage::Shard(sc.summary.shard),
                sc.summary.digest(),
                &sc.cert,
                &mut check,
            )
            .is_err()
            {
                return false;
            }
        }
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        if v.tx_count as usize != txs.len() || v.tx_root != merkle_root(&ids) {
            return false;
        }
        if v.commitments.len() < p.quorum() {
            return false;
        }
        for (i, c) in v.commitments.iter().enumerate() {
            let Some(m) = e.final_members.get(usize::from(c.member)) else {
                return false;
            };
            if i > 0 && v.commitments[i - 1].member >= c.member {
                return false;
            }
            if m.key == self.key && Some(c.value) != e.my_commitment {
                return false;
            }
        }
        for (i, r) in v.reveals.iter().enumerate() {
            if (i > 0 && v.reveals[i - 1].member >= r.member) || !e.reveal_valid(r) {
                return false;
            }
        }
        if v.reveals.len() < e.required_reveals() {
            return false;
        }
        let key = (e.parent, e.height, v.timestamp, v.tx_root);
        self.executed.state_root(&mut *self.host, key, &txs) == Some(v.state_root)
    }
}

impl Node {
    /// A node at `config.tip`; hand it [`Input::Start`] to begin the next epoch.
    pub fn new(config: NodeConfig) -> Self {
        let key = config.keypair.public();
        let epoch = Epoch::new(&config.tip);
        Self {
            params: config.params,
            keypair: config.keypair,
            key,
            peers: config.peers,
            timing: config.timing,
            max_shard_txs: config.max_shard_txs,
            epoch,
            shares: BTreeMap::new(),
            future: Buffer::default(),
            inbox: Vec::new(),
            last_timer: None,
            started: false,
            replay: false,
            decisions: VecDeque::new(),
            announcements: VecDeque::new(),
            executed: Executed::default(),
        }
    }

    /// Bytes buffered for later, and senders whose block announcement for the current epoch
    /// was checked and refused (for tests of the limits).
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        (
            self.future.bytes + self.epoch.early.bytes,
            self.epoch.next_tried.len(),
        )
    }

    /// The shards whose certified results this node holds for its epoch (for tests).
    #[cfg(test)]
    pub(crate) fn shard_results_held(&self) -> Vec<u16> {
        self.epoch.shard_results.keys().copied().collect()
    }

    /// The summaries of every certified shard result this node holds, a split shard's second
    /// included (for tests).
    #[cfg(test)]
    pub(crate) fn shard_summaries_held(&self) -> Vec<ShardSummary> {
        let e = &self.epoch;
        e.shard_results
            .values()
            .chain(e.other_results.values())
            .map(|r| r.cert.summary)
            .collect()
    }

    /// The node's key.
    pub fn key(&self) -> PublicKey {
        self.key
    }

    /// The decisions this node saw since the last call, oldest first (at most
    /// [`MAX_KEPT_DECISIONS`]). Each is also reported as [`Output::Progress`]; this accessor is
    /// for drivers that check agreement per agreement (the simulator compares the values honest
    /// nodes decided for each shard and the final agreement).
    pub fn take_decisions(&mut self) -> Vec<Decision> {
        self.decisions.drain(..).collect()
    }

    /// The node's view.
    pub fn status(&self) -> NodeStatus {
        let e = &self.epoch;
        NodeStatus {
            height: e.height,
            committee: e.committee,
            is_final: e.fin.is_some(),
            shard_round: e.shard.as_ref().map(|b| b.round),
            final_round: e.fin.as_ref().map(|b| b.round),
            attempt: e.attempt,
        }
    }

    /// Begins the epoch after the configured tip: mines an identity and sends it to the
    /// directory.
    fn start(&mut self, now: u64, host: &mut dyn Host) -> Vec<Step> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.begin_epoch(now, host, &mut out);
        }
        self.finish(now, host, &mut out);
        out
    }

    /// Handles a message from `from` (authenticated by the transport).
    fn on_message(
        &mut self,
        from: PublicKey,
        message: Message,
        now: u64,
        host: &mut dyn Host,
    ) -> Vec<Step> {
        let mut out = Vec::new();
        self.dispatch(from, message, now, host, &mut out);
        self.finish(now, host, &mut out);
        out
    }

    /// Lets time pass: directory deadlines, round timeouts, sealing.
    fn tick(&mut self, now: u64, host: &mut dyn Host) -> Vec<Step> {
        let mut out = Vec::new();
        self.on_time(now, host, &mut out);
        self.finish(now, host, &mut out);
        out
    }

    fn finish(&mut self, now: u64, host: &mut dyn Host, out: &mut Vec<Step>) {
        // Messages kept for a new epoch, messages to ourselves, then timers that are already
        // due.
        let mut guard = 0;
        loop {
            self.replay_future(now, host, out);
            if self.inbox.is_empty() || guard >= 64 {
                break;
            }
            guard += 1;
            for m in core::mem::take(&mut self.inbox) {
                self.dispatch(self.key, m, now, host, out);
            }
            self.on_time(now, host, out);
        }
        let e = &self.epoch;
        let mut next: Option<u64> = None;
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                if t > now {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        };
        consider(e.dir_publish_at);
        consider(e.dir.as_ref().and_then(Bft::deadline));
        consider(e.shard.as_ref().and_then(Bft::deadline));
        consider(e.fin.as_ref().and_then(Bft::deadline));
        if e.fin.is_some() {
            consider(Some(e.final_open_at()));
            let missing = e.shard_results.len() < self.params.committees();
            consider(e.pull_at().filter(|_| missing && !e.pulled));
        }
        if !e.block_done {
            consider(e.settle_until);
        }
        consider(Some(e.resend_at).filter(|t| *t != u64::MAX));
        if let Some(t) = next {
            if self.last_timer != Some(t) {
                self.last_timer = Some(t);
                out.push(Step::Timer(t));
            }
        }
    }

    fn send(&mut self, to: Vec<PublicKey>, message: Message, out: &mut Vec<Step>) {
        let mut to = to;
        if let Some(i) = to.iter().position(|k| *k == self.key) {
            to.swap_remove(i);
            self.inbox.push(message.clone());
        }
        if !to.is_empty() {
            out.push(Step::Send { to, message });
        }
    }

    fn share(&self, height: u64, randomness: &Randomness) -> Digest {
        let mut buf = Vec::new();
        codec::encode_body_into(&(b"share", height, randomness), &mut buf);
        let sig = self.keypair.sign(&domain::COMMITTEE_RANDOMNESS.hash(&buf));
        Digest::from_bytes(domain::COMMITTEE_RANDOMNESS.hash(&sig.to_bytes()))
    }

    fn begin_epoch(&mut self, now: u64, host: &mut dyn Host, out: &mut Vec<Step>) {
        let e = &mut self.epoch;
        let (proof, tries) = IdentityProof::mine(
            self.key,
            &e.randomness,
            self.params.identity_difficulty(),
            0,
        );
        host.hashed(tries);
        e.my_proof = Some(proof);
        e.resend_at = now.saturating_add(self.timing.resend);
        if e.directory.contains(&self.key) {
            e.dir_publish_at = Some(now.saturating_add(self.timing.identity_window));
        }
        let height = e.height;
        let dir = e.directory.clone();
        out.push(Step::EpochStarted { height });
        self.send(dir, Message::Identity { height, proof }, out);
        // Identities for this attempt that arrived while this node was still in the last one.
        for (from, proof) in core::mem::take(&mut self.epoch.next_ids) {
            self.on_identity(from, proof, out);
        }
        self.replay = true;
    }

    /// The directory certified a final committee with fewer members than a certificate needs:
    /// no block can come of this attempt, and the certificate (which every node checked on
    /// adopting it) proves it. The epoch restarts with the next attempt's randomness, fresh
    /// identities and committees; at most [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS) attempts.
    fn restart_epoch(&mut self, now: u64, host: &mut dyn Host, out: &mut Vec<Step>) {
        if self.epoch.attempt + 1 >= super::MAX_ATTEMPTS {
            return;
        }
        self.epoch = self.epoch.restarted();
        self.begin_epoch(now, host, out);
    }

    /// Asks again for what this node may have missed in its epoch (see [`Timing::resend`]).
    fn resend(&mut self, now: u64, out: &mut Vec<Step>) {
        let e = &mut self.epoch;
        e.resend_at = now.saturating_add(self.timing.resend);
        let height = e.height;
        let dir = e.directory.clone();
        let commitment = e.my_commitment;
        let final_keys: Vec<PublicKey> = e.final_members.iter().map(|p| p.key).collect();
        if let Some(proof) = e.my_proof {
            self.send(dir, Message::Identity { height, proof }, out);
        }
        if let Some(value) = commitment {
            self.send(final_keys, Message::Commitment { height, value }, out);
        }
    }

    /// A peer at an earlier height re-sent its identity: it missed the block announcement
    /// that ended its epoch. Answers with that announcement, if this node kept it and the
    /// identity is a proof of work for that height (one of its attempts up to the block's), so
    /// that asking costs what taking part costs.
    fn help_behind(
        &mut self,
        from: PublicKey,
        height: u64,
        proof: IdentityProof,
        out: &mut Vec<Step>,
    ) {
        let Some((n, base)) = self
            .announcements
            .iter()
            .find(|(n, _)| n.header.height == height)
            .cloned()
        else {
            return;
        };
        // A peer is at most at the attempt that made the block (no honest node restarts past
        // an attempt whose final committee could certify).
        let last = super::attempt_of(&base, &n.header.seal.randomness).unwrap_or(0);
        let difficulty = self.params.identity_difficulty();
        let mined = (0..=last).any(|a| {
            proof
                .hash(&super::attempt_randomness(&base, a))
                .meets(difficulty)
        });
        if from != self.key && proof.key == from && mined && self.epoch.may_answer(from) {
            self.send(vec![from], Message::Next(n), out);
        }
    }

    /// Replays the messages kept for later that belong to the current epoch, keeping those for
    /// later epochs. A replayed block announcement may begin the next epoch: the rest is then
    /// kept and replayed for that epoch in turn (a loop, not a recursion, however many epochs
    /// the kept announcements cover).
    fn replay_future(&mut self, now: u64, host: &mut dyn Host, out: &mut Vec<Step>) {
        while core::mem::take(&mut self.replay) {
            let height = self.epoch.height;
            for (from, m) in self.future.take() {
                let h = m.height();
                if self.epoch.height != height || h > height {
                    self.future.push(from, m);
                } else if h == height {
                    self.dispatch(from, m, now, host, out);
                }
            }
        }
    }

    fn dispatch(
        &mut self,
        from: PublicKey,
        message: Message,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        let h = message.height();
        if h > self.epoch.height {
            self.future.push(from, message);
            return;
        }
        if h < self.epoch.height {
            // A peer still in an earlier epoch asking again: it missed the announcement.
            if let Message::Identity { proof, .. } = message {
                self.help_behind(from, h, proof, out);
            }
            return;
        }
        match message {
            Message::Identity { proof, .. } => self.on_identity(from, proof, out),
            Message::Assignment(m) => self.on_membership(from, m, now, host, out),
            Message::Commitment { value, .. } => {
                self.epoch.commitments.entry(from).or_insert(value);
                self.run_final(now, host, out);
            }
            // Shard results are checked against the roster: kept until it is adopted.
            m @ (Message::ShardResult(_) | Message::ShardBatch(_) | Message::ShardCertified(_))
                if !self.epoch.assigned =>
            {
                self.epoch.early.push(from, m)
            }
            Message::ShardResult(r) => {
                self.on_shard_result(r, now, host, out);
            }
            Message::ShardBatch(b) => self.on_shard_batch(from, b, now, host, out),
            Message::ShardCertified(c) => self.on_shard_certified(c, now, host, out),
            Message::ShardRequest(r) => self.on_shard_request(from, r, out),
            Message::Proposal(_)
            | Message::DigestProposal(_)
            | Message::Vote(_)
            | Message::RoundChange(_)
            | Message::Precommits(_) => self.on_bft(from, message, now, host, out),
            Message::Next(n) => self.on_next(from, n, now, host, out),
        }
    }

    /// An identity sent to this directory member. Taken while its window is open (once per
    /// key); kept for the next attempt if it was mined for it (this node has not restarted
    /// yet); after the directory published the committees, a request for the sender's
    /// assignment, which it may have missed.
    fn on_identity(&mut self, from: PublicKey, proof: IdentityProof, out: &mut Vec<Step>) {
        let difficulty = self.params.identity_difficulty();
        let e = &mut self.epoch;
        if proof.key != from || !e.directory.contains(&self.key) {
            return;
        }
        if !proof.hash(&e.randomness).meets(difficulty) {
            let next = super::attempt_randomness(&e.base_randomness, e.attempt + 1);
            if proof.hash(&next).meets(difficulty)
                && e.next_ids.len() < MAX_BUFFERED_MESSAGES
                && from.verifying_key().is_ok()
            {
                e.next_ids.entry(from).or_insert(proof);
            }
            return;
        }
        if e.dir_publish_at.is_some() {
            if !e.dir_ids.contains_key(&from) && from.verifying_key().is_ok() {
                e.dir_ids.insert(from, proof);
                e.dir_order.push(proof);
            }
            return;
        }
        if e.published.is_empty() || from == self.key || !e.may_answer(from) {
            return;
        }
        let assignment = e
            .published
            .iter()
            .find(|(to, _)| to.contains(&from))
            .or_else(|| e.published.iter().find(|(_, a)| a.committee.is_none()))
            .map(|(_, a)| a.clone());
        if let Some(a) = assignment {
            self.send(vec![from], Message::Assignment(a), out);
        }
    }

    /// This directory member's identity window closed: it joins the directory's agreement on
    /// the roster and hands it the directory votes that arrived before.
    fn start_directory(&mut self, now: u64, host: &mut dyn Host, out: &mut Vec<Step>) {
        let e = &mut self.epoch;
        e.dir_publish_at = None;
        let Some(me) = e.directory.iter().position(|k| *k == self.key) else {
            return;
        };
        let quorum = quorum_of(u16::try_from(e.directory.len()).unwrap_or(u16::MAX));
        let mut bft = Bft::new(
            e.height,
            e.parent,
            Stage::Directory,
            e.directory.clone(),
            me,
            quorum,
            self.timing.round_timeout,
            now,
        );
        bft.attempt = e.attempt;
        e.dir = Some(bft);
        self.run_dir(None, now, host, out);
        for (from, msg) in self.epoch.dir_early.take() {
            self.run_dir(Some((from, msg)), now, host, out);
        }
    }

    fn run_dir(
        &mut self,
        input: Option<(PublicKey, Message)>,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        let Some(mut bft) = self.epoch.dir.take() else {
            return;
        };
        if self.step_bft(&mut bft, Stage::Directory, input, now, host, out) {
            self.publish_assignments(&bft, out);
        }
        self.epoch.dir = Some(bft);
    }

    /// The directory decided the roster: every node learns its committee and the final
    /// committee, with the directory's certificate; final members also get this member's
    /// reveal.
    fn publish_assignments(&mut self, bft: &Bft, out: &mut Vec<Step>) {
        let (Some((round, signatures)), Some((_, digest))) = (bft.certificate(), bft.decided)
        else {
            return;
        };
        let Some(Value::Roster(roster)) = bft.values.get(&digest) else {
            return;
        };
        let e = &self.epoch;
        let cert = DirectoryCert {
            round,
            committees: BoundedVec::try_from(roster.digests()).expect("one digest per committee"),
            signatures: BoundedVec::try_from(signatures).expect("at most c signatures"),
        };
        let final_members = roster.committees.first().cloned().unwrap_or_default();
        let my_index = e.directory.iter().position(|k| *k == self.key);
        let reveal = match (my_index, self.shares.get(&(e.height - 1))) {
            (Some(i), Some(v)) => Some(Reveal {
                member: i as u16,
                value: *v,
            }),
            _ => None,
        };
        let (height, parent) = (e.height, e.parent);
        let assignment = |committee, members| CommitteeAssignment {
            height,
            parent,
            committee,
            members,
            final_members: final_members.clone(),
            cert: cert.clone(),
            reveal: if committee == Some(0) { reveal } else { None },
        };
        let mut selected = BTreeSet::new();
        let mut sends = Vec::new();
        for (j, members) in roster.committees.iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            selected.extend(members.iter().map(|m| m.key));
            let to = members.iter().map(|m| m.key).collect::<Vec<_>>();
            sends.push((to, assignment(Some(j as u16), members.clone())));
        }
        let rest: BTreeSet<PublicKey> = self
            .peers
            .iter()
            .chain(e.dir_ids.keys())
            .chain([&self.key])
            .filter(|k| !selected.contains(*k))
            .copied()
            .collect();
        if !rest.is_empty() {
            sends.push((
                rest.into_iter().collect(),
                assignment(None, BoundedVec::new()),
            ));
        }
        self.epoch.published = sends.clone();
        for (to, msg) in sends {
            self.send(to, Message::Assignment(msg), out);
        }
    }

    /// A directory member's assignment: adopted, once, if the directory's certificate holds
    /// and the lists are the ones it certifies (one honest sender is enough; no number of
    /// others can make up a committee). Reveals are taken from every directory member.
    fn on_membership(
        &mut self,
        from: PublicKey,
        m: CommitteeAssignment,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        let e = &mut self.epoch;
        if !e.directory.contains(&from) || m.parent != e.parent {
            return;
        }
        if let Some(r) = m.reveal {
            if e.reveal_valid(&r) {
                e.reveals.entry(r.member).or_insert(r.value);
            }
        }
        if e.assigned {
            self.run_final(now, host, out);
            return;
        }
        let p = &self.params;
        let lists_ok = match m.committee {
            Some(j) => {
                usize::from(j) < p.committees()
                    && check_roster_member_list(&m.cert, Stage::Shard(j), &m.members).is_ok()
                    && verify_members(p, &e.randomness, Stage::Shard(j), &m.members).is_ok()
                    && m.members.iter().any(|p| p.key == self.key)
            }
            None => m.members.is_empty(),
        } && check_roster_member_list(&m.cert, Stage::Final, &m.final_members)
            .is_ok()
            && verify_members(p, &e.randomness, Stage::Final, &m.final_members).is_ok();
        if !lists_ok {
            return;
        }
        let mut check = |items: &[SigItem]| host.verify_signatures(items);
        if verify_directory(
            p,
            e.height,
            e.parent,
            e.attempt,
            &e.directory,
            &m.cert,
            &mut check,
        )
        .is_err()
        {
            return;
        }
        let quorum = self.params.quorum();
        if m.final_members.len() < quorum {
            // The directory certified a final committee that can never certify a block.
            self.restart_epoch(now, host, out);
            return;
        }
        e.dir_cert = Some(m.cert);
        e.assigned = true;
        e.committee = m.committee;
        e.members = m.members.to_vec();
        e.final_members = m.final_members.to_vec();
        let (height, parent) = (e.height, e.parent);
        if let Some(j) = m.committee {
            let keys: Vec<PublicKey> = e.members.iter().map(|p| p.key).collect();
            let me = keys
                .iter()
                .position(|k| *k == self.key)
                .expect("checked above");
            let mut bft = Bft::new(
                height,
                parent,
                Stage::Shard(j),
                keys,
                me,
                quorum,
                self.timing.round_timeout,
                now,
            );
            bft.attempt = e.attempt;
            e.shard = Some(bft);
        }
        let final_keys: Vec<PublicKey> = e.final_members.iter().map(|p| p.key).collect();
        if let Some(me) = final_keys.iter().position(|k| *k == self.key) {
            let randomness = e.randomness;
            let share = self.share(height, &randomness);
            self.shares.insert(height, share);
            while self.shares.len() > 4 {
                self.shares.pop_first();
            }
            let commitment = commitment_of(&self.key, &share);
            let e = &mut self.epoch;
            e.my_commitment = Some(commitment);
            e.commitments.insert(self.key, commitment);
            e.fin_open_at = now.saturating_add(self.timing.final_wait);
            e.fin_began_at = now;
            let mut bft = Bft::new(
                height,
                parent,
                Stage::Final,
                final_keys.clone(),
                me,
                quorum,
                self.timing.round_timeout,
                now,
            );
            bft.set_deadline(e.fin_open_at.saturating_add(self.timing.round_timeout));
            bft.attempt = e.attempt;
            bft.echo = true;
            e.fin = Some(bft);
            self.send(
                final_keys,
                Message::Commitment {
                    height,
                    value: commitment,
                },
                out,
            );
        }
        // Start the shard agreement, then replay what arrived early.
        self.run_shard(None, now, host, out);
        for (from, msg) in self.epoch.early.take() {
            self.dispatch(from, msg, now, host, out);
        }
        self.run_final(now, host, out);
    }

    /// Takes a shard's result if it is new and certified by the shard's committee as the
    /// directory published it; returns whether it was taken.
    fn on_shard_result(
        &mut self,
        r: ShardResult,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) -> bool {
        if !self.shard_result_valid(&r, host) {
            return false;
        }
        let shard = r.cert.summary.shard;
        match self.epoch.shard_results.contains_key(&shard) {
            true => self.epoch.other_results.insert(shard, r),
            false => self.epoch.shard_results.insert(shard, r),
        };
        let e = &mut self.epoch;
        if e.half_in_at.is_none() && 2 * e.shard_results.len() > self.params.committees() {
            e.half_in_at = Some(now);
        }
        self.run_final(now, host, out);
        self.execute_ahead(now, host);
        true
    }

    fn shard_result_valid(&self, r: &ShardResult, host: &mut dyn Host) -> bool {
        let e = &self.epoch;
        let shard = r.cert.summary.shard;
        if r.parent != e.parent
            || usize::from(shard) >= self.params.committees()
            || e.results_full(shard)
            || e.result_for(&r.cert.summary).is_some()
            || ShardValue::summary_of(&r.txs, shard) != r.cert.summary
        {
            return false;
        }
        let Some(directory) = e.dir_cert.as_ref() else {
            return false;
        };
        let mut check = |items: &[SigItem]| host.verify_signatures(items);
        verify_certificate(
            &self.params,
            &e.randomness,
            e.attempt,
            directory,
            e.height,
            e.parent,
            Stage::Shard(shard),
            r.cert.summary.digest(),
            &r.cert.cert,
            &mut check,
        )
        .is_ok()
    }

    /// A shard's transactions sent ahead of its certificate: kept until a certificate of their
    /// summary arrives, or completed at once by one that came first. Only final members keep
    /// batches, one per sender and a few per shard.
    fn on_shard_batch(
        &mut self,
        from: PublicKey,
        b: ShardBatch,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        let e = &mut self.epoch;
        if b.parent != e.parent
            || e.fin.is_none()
            || usize::from(b.shard) >= self.params.committees()
            || e.results_full(b.shard)
            || !e.batch_senders.insert(from)
        {
            return;
        }
        let summary = ShardValue::summary_of(&b.txs, b.shard);
        let waiting: Vec<ShardCertificate> = e
            .certified
            .get_mut(&b.shard)
            .map(|certs| certs.extract_if(.., |c| c.summary == summary).collect())
            .unwrap_or_default();
        let mut r = ShardResult {
            height: b.height,
            parent: b.parent,
            cert: ShardCertificate {
                summary,
                cert: Certificate::empty(),
            },
            txs: b.txs,
        };
        // A certificate that does not check (a Byzantine sender's) leaves the batch kept.
        for cert in waiting {
            r.cert = cert;
            if self.shard_result_valid(&r, host) {
                self.on_shard_result(r, now, host, out);
                return;
            }
        }
        let e = &mut self.epoch;
        let first = (b.shard, Digest::from_bytes([0; 32]));
        let last = (b.shard, Digest::from_bytes([0xff; 32]));
        if e.batches.range(first..=last).count() < MAX_BATCHES_PER_SHARD {
            e.batches
                .entry((b.shard, summary.digest()))
                .or_insert(r.txs);
        }
    }

    /// A shard's certificate for a batch sent ahead: with the batch, the shard's result (checked
    /// as any); without it, kept until it arrives.
    fn on_shard_certified(
        &mut self,
        c: ShardCertified,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        let e = &mut self.epoch;
        let shard = c.cert.summary.shard;
        if c.parent != e.parent
            || e.fin.is_none()
            || usize::from(shard) >= self.params.committees()
            || e.results_full(shard)
            || e.result_for(&c.cert.summary).is_some()
        {
            return;
        }
        let key = (shard, c.cert.summary.digest());
        match e.batches.remove(&key) {
            Some(txs) => {
                let r = ShardResult {
                    height: c.height,
                    parent: c.parent,
                    cert: c.cert,
                    txs,
                };
                if !self.shard_result_valid(&r, host) {
                    // A Byzantine sender's certificate: the batch waits for a valid one.
                    self.epoch.batches.insert(key, r.txs);
                    return;
                }
                self.on_shard_result(r, now, host, out);
            }
            None => {
                let waiting = e.certified.entry(shard).or_default();
                if waiting.len() < MAX_BATCHES_PER_SHARD && !waiting.contains(&c.cert) {
                    waiting.push(c.cert);
                }
            }
        }
    }

    /// A final member that now holds every shard's result executes the block it expects the
    /// leader to propose (every shard, this second's time), so that checking the proposal
    /// finds its state root ready ([`Executed`]). A leader that proposed just now finds it
    /// done already.
    fn execute_ahead(&mut self, now: u64, host: &mut dyn Host) {
        let e = &self.epoch;
        if e.fin.as_ref().is_none_or(|f| f.decided.is_some())
            || e.shard_results.len() != self.params.committees()
        {
            return;
        }
        let txs: Vec<Transaction> = e
            .shard_results
            .values()
            .flat_map(|r| r.txs.iter().cloned())
            .collect();
        let tx_root = merkle_root(&txs.iter().map(Transaction::id).collect::<Vec<TxId>>());
        let timestamp = e.parent_ts.max(now / 1_000_000);
        let key = (e.parent, e.height, timestamp, tx_root);
        self.executed.state_root(host, key, &txs);
    }

    fn on_bft(
        &mut self,
        from: PublicKey,
        message: Message,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        let e = &mut self.epoch;
        let (stage, parent) = match &message {
            Message::Proposal(p) => (p.stage, p.parent),
            Message::DigestProposal(p) => (p.stage, p.parent),
            Message::Vote(v) => (v.stage, v.parent),
            Message::RoundChange(r) => (r.stage, r.parent),
            Message::Precommits(p) => (p.stage, p.parent),
            _ => return,
        };
        if parent != e.parent {
            return;
        }
        if stage == Stage::Directory {
            if e.dir.is_some() {
                self.run_dir(Some((from, message)), now, host, out);
            } else if e.dir_publish_at.is_some() {
                e.dir_early.push(from, message);
            }
            return;
        }
        if !e.assigned {
            e.early.push(from, message);
            return;
        }
        match stage {
            Stage::Shard(j) if e.committee == Some(j) => {
                self.run_shard(Some((from, message)), now, host, out)
            }
            Stage::Final if e.fin.is_some() => {
                self.run_bft_final(Some((from, message)), now, host, out)
            }
            _ => {}
        }
    }

    fn drive(
        bft: &mut Bft,
        input: Option<(PublicKey, Message)>,
        now: u64,
        ctx: &mut Ctx<'_>,
    ) -> Vec<BftOut> {
        match input {
            None => bft.tick(now, ctx),
            Some((from, msg)) => {
                let Some(idx) = bft.members.iter().position(|k| *k == from) else {
                    return Vec::new();
                };
                match msg {
                    Message::Proposal(p) => bft.on_proposal(p, idx, now, ctx),
                    Message::DigestProposal(p) => bft.on_digest_proposal(p, idx, now, ctx),
                    Message::Vote(v) => bft.on_vote(v, now, ctx),
                    Message::RoundChange(r) => bft.on_round_change(r, idx, now, ctx),
                    Message::Precommits(p) => bft.on_precommits(p, now, ctx),
                    _ => Vec::new(),
                }
            }
        }
    }

    fn run_shard(
        &mut self,
        input: Option<(PublicKey, Message)>,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        let Some(mut bft) = self.epoch.shard.take() else {
            return;
        };
        let stage = bft.stage;
        if self.step_bft(&mut bft, stage, input, now, host, out) {
            self.send_shard_result(&bft, out);
        }
        self.epoch.shard = Some(bft);
    }

    /// Drives `bft` (of `stage`) with `input` at `now`: broadcasts what it sends to its
    /// members and reports what it decides. Returns whether it decided just now.
    fn step_bft(
        &mut self,
        bft: &mut Bft,
        stage: Stage,
        input: Option<(PublicKey, Message)>,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) -> bool {
        let was_decided = bft.decided.is_some();
        let (outs, wanted) = {
            let mut ctx = Ctx {
                keypair: &self.keypair,
                key: self.key,
                host,
                params: &self.params,
                epoch: &self.epoch,
                executed: &mut self.executed,
                max_shard_txs: self.max_shard_txs,
                stage,
                wanted: Vec::new(),
            };
            let outs = Self::drive(bft, input, now, &mut ctx);
            (outs, ctx.wanted)
        };
        if let Some((round, _)) = bft.unchecked().filter(|_| !wanted.is_empty()) {
            self.request_shards(bft, round, wanted, out);
        }
        let members = bft.members.clone();
        let mut shipped = false;
        let mut precommitted = None;
        for o in outs {
            if let BftOut::Broadcast(m) | BftOut::Send(_, m) = &o {
                if let Message::Vote(v) = &**m {
                    if v.phase == Phase::Precommit && matches!(stage, Stage::Shard(_)) {
                        precommitted = Some(v.value);
                    }
                }
                let proposed = match &**m {
                    Message::Proposal(p) => Some((p.round, p.value.digest(stage))),
                    Message::DigestProposal(p) => Some((p.round, p.value)),
                    _ => None,
                };
                // Not after a round whose leader was proven to equivocate: that round ended
                // at once, before most prevotes could show who holds what.
                let shipping = |r: u32| r > 0 && !bft.proven_equivocated(r - 1);
                if let Some((_, digest)) = proposed.filter(|(r, _)| shipping(*r)) {
                    if stage == Stage::Final && !shipped {
                        shipped = true;
                        self.send_missing_shards(bft, digest, out);
                    }
                }
            }
            match o {
                BftOut::Broadcast(m) => self.send(members.clone(), *m, out),
                BftOut::Send(to, m) => {
                    let to = to.iter().filter_map(|i| members.get(*i).copied()).collect();
                    self.send(to, *m, out)
                }
                BftOut::Decided { round, value } => out.push(Step::Decided(Decision {
                    height: bft.height,
                    attempt: bft.attempt,
                    stage,
                    round,
                    value,
                })),
            }
        }
        if let Some(digest) = precommitted {
            self.send_batch_ahead(bft, digest, out);
        }
        !was_decided && bft.decided.is_some()
    }

    /// A final member that cannot check `round`'s proposal for lack of these shard results
    /// asks the round's leader for them (each once per epoch): the leader built the value, so
    /// it holds them. When they arrive, the proposal is checked again
    /// ([`Bft::tick`]) and prevoted in the same round if it is valid, instead of the round
    /// timing out.
    fn request_shards(
        &mut self,
        bft: &Bft,
        round: u32,
        wanted: Vec<ShardSummary>,
        out: &mut Vec<Step>,
    ) {
        let leader = bft.members[bft.leader(round)];
        let e = &mut self.epoch;
        let shards: Vec<u16> = wanted
            .into_iter()
            .filter(|s| e.requested.insert(s.digest()))
            .map(|s| s.shard)
            .collect();
        if leader != self.key {
            self.ask_for_shards(vec![leader], shards, out);
        }
    }

    /// Sends `to` a request for the results of `shards`, if there are any (at most one of
    /// each).
    fn ask_for_shards(&mut self, to: Vec<PublicKey>, mut shards: Vec<u16>, out: &mut Vec<Step>) {
        shards.sort_unstable();
        shards.dedup();
        let Ok(shards) = BoundedVec::try_from(shards) else {
            return;
        };
        if shards.is_empty() {
            return;
        }
        let e = &self.epoch;
        let request = ShardRequest {
            height: e.height,
            parent: e.parent,
            shards,
        };
        self.send(to, Message::ShardRequest(request), out);
    }

    /// A final leader still missing shard results once the shards it holds have long decided
    /// (halfway from more than half of them in to [`Epoch::final_open_at`]) asks two other
    /// final members for them, once per epoch: those across the committee from it, whose
    /// results came from other shard members than its own (both of its own may have been
    /// Byzantine, or silent). What they hold arrives before the leader proposes; a shard
    /// that has not decided yet is left to its own members' messages.
    fn pull_missing_shards(&mut self, bft: &Bft, now: u64, out: &mut Vec<Step>) {
        let e = &self.epoch;
        let due = e.pull_at().is_some_and(|t| now >= t);
        if !due || e.pulled || bft.decided.is_some() || bft.leader(bft.round) != bft.me {
            return;
        }
        let missing: Vec<u16> = (0..self.params.committees() as u16)
            .filter(|j| !e.shard_results.contains_key(j))
            .collect();
        let n = bft.members.len();
        let across = [bft.me + n / 2, bft.me + n / 2 + 1];
        let mut to: Vec<PublicKey> = across.iter().map(|i| bft.members[i % n]).collect();
        to.retain(|k| *k != self.key);
        to.dedup();
        self.epoch.pulled = true;
        self.ask_for_shards(to, missing, out);
    }

    /// A final member's request for shard results: each this node holds of those shards is
    /// sent as a result, to final members only and within [`MAX_ANSWERS`] answers per peer
    /// and epoch.
    fn on_shard_request(&mut self, from: PublicKey, r: ShardRequest, out: &mut Vec<Step>) {
        let e = &self.epoch;
        if r.parent != e.parent
            || from == self.key
            || e.fin.is_none()
            || !e.final_members.iter().any(|m| m.key == from)
        {
            return;
        }
        let wanted: BTreeSet<u16> = r.shards.iter().copied().collect();
        let results: Vec<ShardResult> = wanted
            .iter()
            .flat_map(|j| [e.shard_results.get(j), e.other_results.get(j)])
            .flatten()
            .cloned()
            .collect();
        if results.is_empty() || !self.epoch.may_answer(from) {
            return;
        }
        for result in results {
            self.send(vec![from], Message::ShardResult(result), out);
        }
    }

    /// The final members a shard member sends its shard's result to ([`result_recipients`]).
    fn result_recipients(&self, me: usize, size: usize) -> Vec<PublicKey> {
        let finals = &self.epoch.final_members;
        result_recipients(me, size, finals.len())
            .map(|j| finals[j].key)
            .collect()
    }

    /// A shard member that precommits `digest` sends the value to its final members at once,
    /// while the agreement finishes: once decided, only the certificate follows
    /// ([`ShardCertified`]), so the bulk of what final members download moves off the path
    /// between the shards' decisions and the final proposal.
    fn send_batch_ahead(&mut self, bft: &Bft, digest: Digest, out: &mut Vec<Step>) {
        let (Stage::Shard(shard), Some(Value::Shard(v))) = (bft.stage, bft.values.get(&digest))
        else {
            return;
        };
        let e = &self.epoch;
        if e.sent_ahead.contains(&digest) || e.sent_ahead.len() >= MAX_SENT_AHEAD {
            return;
        }
        let to = self.result_recipients(bft.me, bft.members.len());
        if to.is_empty() {
            return;
        }
        let batch = ShardBatch {
            height: e.height,
            parent: e.parent,
            shard,
            txs: v.txs.clone(),
        };
        self.epoch.sent_ahead.push(digest);
        self.send(to, Message::ShardBatch(batch), out);
    }

    fn send_shard_result(&mut self, bft: &Bft, out: &mut Vec<Step>) {
        let Stage::Shard(shard) = bft.stage else {
            return;
        };
        let Some((round, signatures)) = bft.certificate() else {
            return;
        };
        let Some((_, digest)) = bft.decided else {
            return;
        };
        let Some(Value::Shard(v)) = bft.values.get(&digest) else {
            return;
        };
        let e = &self.epoch;
        let to = self.result_recipients(bft.me, bft.members.len());
        if to.is_empty() {
            return;
        }
        let cert = ShardCertificate {
            summary: v.summary(shard),
            cert: Certificate {
                round,
                members: BoundedVec::try_from(e.members.clone()).expect("at most c members"),
                signatures: BoundedVec::try_from(signatures).expect("at most c signatures"),
            },
        };
        let message = if e.sent_ahead.contains(&digest) {
            Message::ShardCertified(ShardCertified {
                height: e.height,
                parent: e.parent,
                cert,
            })
        } else {
            Message::ShardResult(ShardResult {
                height: e.height,
                parent: e.parent,
                cert,
                txs: v.txs.clone(),
            })
        };
        self.send(to, message, out);
    }

    /// A final leader proposing `digest` in a round after the first sends, ahead of the
    /// proposal, each shard result the value includes to the final members not known to hold
    /// it: those whose prevote for a value including that shard it has not seen. A shard's
    /// members send its result to two final members each, and only those that decided send
    /// it, so a shard whose agreement some honest members never finished (one beyond its
    /// bound, whose equivocating leader split it) or whose Byzantine members withheld the
    /// result reaches only some final members; the others cannot check a value that
    /// includes it, and without them the final committee may lack a quorum in every round
    /// whose leader holds the shard. Not in the first round, where no prevote shows who
    /// holds what and every honest member has usually received every result, nor after a
    /// round left at once on proof that its leader equivocated.
    fn send_missing_shards(&mut self, bft: &Bft, digest: Digest, out: &mut Vec<Step>) {
        let Some(Value::Final(v)) = bft.values.get(&digest) else {
            return;
        };
        let prevoted: Vec<(usize, &FinalValue)> = bft
            .prevoters()
            .filter_map(|(m, d)| match bft.values.get(&d) {
                Some(Value::Final(w)) => Some((m, &**w)),
                _ => None,
            })
            .collect();
        let mut sends = Vec::new();
        for sc in &v.shards {
            let Some(r) = self.epoch.result_for(&sc.summary) else {
                continue;
            };
            let holders: BTreeSet<usize> = prevoted
                .iter()
                .filter(|(_, w)| w.shards.iter().any(|c| c.summary == sc.summary))
                .map(|(m, _)| *m)
                .collect();
            let to: Vec<PublicKey> = bft
                .members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != bft.me && !holders.contains(i))
                .map(|(_, k)| *k)
                .collect();
            if !to.is_empty() {
                sends.push((to, Message::ShardResult(r.clone())));
            }
        }
        for (to, m) in sends {
            self.send(to, m, out);
        }
    }

    fn run_final(&mut self, now: u64, host: &mut dyn Host, out: &mut Vec<Step>) {
        self.run_bft_final(None, now, host, out);
    }

    fn run_bft_final(
        &mut self,
        input: Option<(PublicKey, Message)>,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        let Some(mut bft) = self.epoch.fin.take() else {
            return;
        };
        self.pull_missing_shards(&bft, now, out);
        if self.step_bft(&mut bft, Stage::Final, input, now, host, out) {
            self.epoch.settle_until = Some(now.saturating_add(self.timing.settle));
        }
        self.epoch.fin = Some(bft);
    }

    fn on_time(&mut self, now: u64, host: &mut dyn Host, out: &mut Vec<Step>) {
        if self.epoch.dir_publish_at.is_some_and(|t| now >= t) {
            self.start_directory(now, host, out);
        }
        if self
            .epoch
            .dir
            .as_ref()
            .and_then(Bft::deadline)
            .is_some_and(|t| now >= t)
        {
            self.run_dir(None, now, host, out);
        }
        if self
            .epoch
            .shard
            .as_ref()
            .and_then(Bft::deadline)
            .is_some_and(|t| now >= t)
        {
            self.run_shard(None, now, host, out);
        }
        if self.epoch.fin.is_some() {
            self.run_final(now, host, out);
        }
        if !self.epoch.block_done && self.epoch.settle_until.is_some_and(|t| now >= t) {
            self.seal_block(out);
        }
        if now >= self.epoch.resend_at {
            self.resend(now, out);
        }
    }

    fn seal_block(&mut self, out: &mut Vec<Step>) {
        let e = &mut self.epoch;
        e.block_done = true;
        let Some(bft) = e.fin.as_ref() else {
            return;
        };
        let (Some((round, signatures)), Some((_, digest))) = (bft.certificate(), bft.decided)
        else {
            return;
        };
        let Some(Value::Final(v)) = bft.values.get(&digest).cloned() else {
            return;
        };
        let mut txs = Vec::with_capacity(v.tx_count as usize);
        for sc in &v.shards {
            match e.result_for(&sc.summary) {
                Some(r) => txs.extend(r.txs.iter().cloned()),
                None => return,
            }
        }
        let cert = Certificate {
            round,
            members: BoundedVec::try_from(e.final_members.clone()).expect("at most c members"),
            signatures: BoundedVec::try_from(signatures).expect("at most c signatures"),
        };
        let header = Header {
            version: HEADER_VERSION,
            height: e.height,
            parent: e.parent,
            tx_root: v.tx_root,
            tx_count: v.tx_count,
            state_root: v.state_root,
            timestamp: v.timestamp,
            seal: (*v).into_seal(cert),
        };
        let next = NextEpoch {
            header: header.clone(),
        };
        out.push(Step::Block {
            header: Box::new(header),
            txs,
        });
        let peers = self.peers.clone();
        self.send(peers, Message::Next(next), out);
    }

    /// A block announcement for the current epoch: moves to the next epoch if its seal proves
    /// that the epoch's final committee certified the block on the node's parent.
    fn on_next(
        &mut self,
        from: PublicKey,
        n: NextEpoch,
        now: u64,
        host: &mut dyn Host,
        out: &mut Vec<Step>,
    ) {
        // One check per sender and epoch (its own announcement is not checked twice either).
        if !self.epoch.next_tried.insert(from) {
            return;
        }
        if !self.next_valid(&n.header, now, host) {
            return;
        }
        let tip = TipInfo::of_header(&n.header, &[]);
        if self.announcements.len() >= KEPT_ANNOUNCEMENTS {
            self.announcements.pop_front();
        }
        self.announcements
            .push_back((n, self.epoch.base_randomness));
        self.epoch = Epoch::new(&tip);
        self.begin_epoch(now, host, out);
    }

    /// Whether `header` is a block of the current epoch certified by its final committee: on
    /// the node's parent, at its height, with a seal that checks against what the node knows of
    /// the parent ([`verify_seal`], as the chain checks it) and, once the node knows the epoch's
    /// final committee, certified by exactly that committee.
    fn next_valid(&self, header: &Header<CommitteeSeal>, now: u64, host: &mut dyn Host) -> bool {
        let e = &self.epoch;
        if header.version != HEADER_VERSION
            || header.height != e.height
            || header.parent != e.parent
            || (e.assigned
                && header.seal.randomness == e.randomness
                && header.seal.cert.members[..] != e.final_members[..])
        {
            return false;
        }
        let parent = ParentView {
            timestamp: e.parent_ts,
            // Any attempt's block at this height ends the epoch.
            next_randomness: e.base_randomness,
            final_keys: &e.directory,
            directory: &e.directory,
            commitments: &e.parent_commitments,
        };
        let mut check = |items: &[SigItem]| host.verify_signatures(items);
        verify_seal(&self.params, header, &parent, now / 1_000_000, &mut check).is_ok()
    }
}

impl Node {
    /// Turns the state machine's steps into the protocol interface's outputs.
    fn outputs(&mut self, steps: Vec<Step>) -> Outputs<Self> {
        let mut out = Vec::with_capacity(steps.len());
        for step in steps {
            match step {
                Step::Send { to, message } => out.push(Output::Send {
                    to: Recipients::Some(to),
                    message,
                }),
                Step::Timer(at) => out.push(Output::SetTimer {
                    timer: Tick(at),
                    at,
                }),
                Step::Decided(d) => {
                    if self.decisions.len() >= MAX_KEPT_DECISIONS {
                        self.decisions.pop_front();
                    }
                    self.decisions.push_back(d);
                    out.push(Output::Progress {
                        height: d.height,
                        round: d.round,
                    });
                }
                Step::Block { header, txs } => {
                    // The final value bounds its transaction count to what a block holds; a
                    // block beyond it could never be appended, so it is not offered.
                    if let Ok(txs) = BoundedVec::try_from(txs) {
                        out.push(Output::Append(crate::block::Block {
                            header: *header,
                            txs,
                        }));
                    }
                }
                Step::EpochStarted { height } => out.push(Output::Progress { height, round: 0 }),
            }
        }
        out
    }
}

/// The committee node as a [`Protocol`] engine (see [`Node`] for how its steps map onto the
/// interface).
impl Protocol for Node {
    type Message = Message;
    type Timer = Tick;
    type Tx = Transaction;
    type Block = crate::block::Block<CommitteeSeal, crate::access::Payload>;
    /// The committee protocol produces no evidence: an equivocating member's conflicting votes
    /// are tolerated by the quorums, not reported.
    type Evidence = core::convert::Infallible;
    /// The node refuses no input: a message that is invalid, stale or not for it is dropped and
    /// changes nothing.
    type Error = core::convert::Infallible;
    type Ledger = dyn Host;

    fn handle(
        &mut self,
        host: &mut Self::Ledger,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<Outputs<Self>, Self::Error> {
        Ok(self.handle_with(host, now, input))
    }
}

impl Node {
    /// [`Protocol::handle`] with a host that borrows what it reads (the interface's
    /// [`Ledger`](Protocol::Ledger), `dyn Host`, must own it): a node's driver can hand the
    /// node a host over its own ledger for one input.
    pub fn handle_with(
        &mut self,
        host: &mut dyn Host,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Outputs<Self> {
        let steps = match input {
            Input::Start => self.start(now, host),
            Input::Message { from, message } => self.on_message(from, message, now, host),
            Input::Timer(_) => self.tick(now, host),
            // Transactions come from the host's pool (`Host::take_txs`), and the node moves on
            // to the next epoch on its final committee's announcements, which carry what the
            // epoch needs (randomness, directory) beyond the ledger's tip.
            Input::Transactions(_) | Input::Appended => Vec::new(),
        };
        self.outputs(steps)
    }
}

/// The places in a final committee of `n` that the shard member at `me` of a shard of `size`
/// sends its result to: every final member hears from two members of each shard (from more
/// when the shard is larger than the final committee), so a member of a shard at least as
/// large as the final committee sends to two, and one of a smaller shard to as many more as
/// it takes to leave no final member out. Final member `j` hears from the shard members at
/// `j` and `j - 1`, modulo the smaller size; members of a larger shard beyond `n` wrap around.
pub(crate) fn result_recipients(me: usize, size: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).filter(move |j| match size >= n {
        true => *j == me % n || *j == (me + 1) % n,
        false => size > 0 && (j % size == me || j % size == (me + 1) % size),
    })
}
