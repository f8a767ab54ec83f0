//! The node: drives its consensus engine (any [`NodeEngine`]: Tendermint, the committee
//! engine, proof of work) over any commonware p2p transport, per the protocol contract of
//! [`medledger::consensus::protocol`].

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use commonware_codec::{Copying, DecodeExt as _};
use commonware_cryptography::ed25519;
use commonware_p2p::{Blocker, Receiver, Recipients as CwRecipients, Sender};
use commonware_runtime::{Clock, IoBuf};
use commonware_utils::channel::{mpsc, oneshot};
use medledger::chain::{ChainBlock, ChainError};
use medledger::codec;
use medledger::consensus::protocol::{Input, Output, Outputs, ProtocolInput, Recipients, Time};
use medledger::ledger::{ChainUpdate, LedgerError, TxStatus};
use medledger::tendermint::TendermintConsensus;
use medledger::tx::PublicKey;
use medledger::{MedRec, Transaction};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::config::Pacing;
pub use crate::engine::{LedgerView, NodeEngine};
use crate::wire::*;

/// A node's ledger (chain and mempool), by default a Tendermint chain's.
pub type NodeLedger<C = TendermintConsensus> = medledger::Ledger<C>;
/// A peer's transport identity.
pub type Pk = ed25519::PublicKey;

/// How often a node tells its peers its height.
const STATUS_EVERY: Time = 1_000_000;
/// How long a sync request may go unanswered before another is sent.
const SYNC_RETRY: Time = 2_000_000;
/// Peers heard from within this long count as connected in `status`.
const PEER_FRESH: Time = 5_000_000;

/// The transport identity of a ledger key (the same Ed25519 key).
pub fn to_cw(key: &PublicKey) -> Option<Pk> {
    ed25519::PublicKey::decode(Copying(key.as_bytes())).ok()
}

/// The ledger key of a transport identity.
pub fn from_cw(pk: &Pk) -> PublicKey {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&pk.as_ref()[..32]);
    PublicKey::from_bytes(bytes)
}

/// `d` in microseconds.
fn micros(d: Duration) -> Time {
    Time::try_from(d.as_micros()).unwrap_or(Time::MAX)
}

/// The current time in microseconds since the Unix epoch, on the runtime's clock.
pub fn now_us(clock: &impl Clock) -> Time {
    clock
        .current()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Time)
}

/// The runtime's clock as the chain's clock (by which blocks from the future are refused): in
/// the deterministic runtime that is simulated time, not the host's.
pub struct RuntimeClock<E>(pub E);

impl<E: Clock + Send + Sync> medledger::chain::Clock for RuntimeClock<E> {
    fn now(&self) -> u64 {
        now_us(&self.0) / 1_000_000
    }
}

/// A block this node appended to its main chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finalised {
    /// The node's name.
    pub node: String,
    /// Height.
    pub height: u64,
    /// Block hash (seal included).
    pub hash: String,
    /// Block id (seal left out: equal on every node for a decided block).
    pub id: String,
    /// State root after it.
    pub state_root: String,
    /// Transactions in it.
    pub txs: usize,
}

/// A request on the node's local RPC.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcRequest {
    /// Submit a transaction (its canonical encoding, hex).
    Submit {
        /// Hex of the canonical bytes.
        tx: String,
    },
    /// Submit up to [`MAX_RPC_BATCH`] transactions at once, each as in [`Submit`](Self::Submit):
    /// admitted together, answered together, one answer per transaction in their order.
    SubmitBatch {
        /// Hex of each transaction's canonical bytes.
        txs: Vec<String>,
    },
    /// Height, peers, mempool size, last finalised time.
    Status,
    /// The main-chain block at `height` (hash, id, state root).
    Block {
        /// The height.
        height: u64,
    },
}

/// The most transactions in one [`RpcRequest::SubmitBatch`].
pub const MAX_RPC_BATCH: usize = 1024;

/// A request with where to send the answer.
pub type RpcCall = (RpcRequest, oneshot::Sender<serde_json::Value>);

/// What a [`NodeJob`] may do on the node's loop: read the ledger and the time, submit
/// transactions.
pub trait NodeAccess {
    /// The node's ledger (chain and pool). Ask it, dry-run on it; submit through
    /// [`submit`](Self::submit) so that the engine sees the transaction and peers get it.
    fn ledger(&mut self) -> &mut dyn LedgerView;
    /// Offers `tx` as a local client's: taken into the pool and relayed to every peer, or
    /// refused with the reason (and not relayed).
    ///
    /// # Errors
    ///
    /// The reason the engine or the ledger refused it.
    fn submit(&mut self, tx: Transaction) -> Result<String, String>;
    /// The node's clock, Unix seconds.
    fn now_secs(&self) -> u64;
}

/// Work the web API hands to the node's loop: it runs there, between consensus events, with
/// the node's ledger, and answers through a channel of its own.
pub type NodeJob = Box<dyn FnOnce(&mut dyn NodeAccess) + Send>;

/// The transport a node runs on: three channels and a way to block peers.
pub struct Transport<S, R, B> {
    /// Consensus messages.
    pub consensus: (S, R),
    /// Transactions.
    pub txs: (S, R),
    /// Block sync.
    pub sync: (S, R),
    /// Disconnects and refuses a misbehaving peer.
    pub blocker: B,
    /// How many peers the node has: it starts the engine once it hears from two thirds of
    /// them (or after [`START_WAIT`]), so its first votes are not lost while connections form.
    pub peers: usize,
}

/// The longest a node waits for its peers before starting the engine anyway.
pub const START_WAIT: Time = 10_000_000;

struct State<E, S, B, G: NodeEngine> {
    clock: E,
    name: String,
    ledger: NodeLedger<G::Consensus>,
    engine: G,
    timers: BTreeMap<G::Timer, Time>,
    consensus: S,
    txs: S,
    sync: S,
    blocker: B,
    /// The pause after each block, microseconds.
    interval: Time,
    /// While the pool is empty, the longest wait after a block (see [`Pacing::idle`]).
    idle: Option<Time>,
    /// When the block interval after the last decided block ends (the next height starts
    /// then, or later while idle).
    appended_at: Option<Time>,
    /// While idle, when the next height starts anyway.
    idle_until: Time,
    /// A peer sent a message of the next height while this node waited to start it.
    peer_started: bool,
    last_append: Time,
    // Ordered (not hashed): which peer a sync request goes to must not depend on a random
    // hash seed, so a seeded simulation replays exactly.
    peer_heights: BTreeMap<Pk, (u64, Time)>,
    sync_pending: Option<(u64, Time)>,
    events: Option<mpsc::UnboundedSender<Finalised>>,
    last_finalised: Option<u64>,
    /// Whether the engine has started.
    started: bool,
    /// Consensus messages that arrived before the engine started (handed to it at start;
    /// at most [`MAX_EARLY`]).
    early: Vec<(Pk, IoBuf)>,
    /// Transactions waiting to be admitted together (at most [`MAX_ADMIT`] are taken in at
    /// once), each with whom to answer.
    inbox: Vec<(Transaction, Origin)>,
    /// Encodings of local clients' transactions taken into the pool, to relay in one batch.
    outbox: Vec<Vec<u8>>,
    /// Batch submissions whose transactions wait in the inbox, answered at their admission.
    batches: Vec<BatchReply>,
}

/// A local client's batch submission: one answer per transaction, sent together once the
/// waiting ones are admitted.
struct BatchReply {
    reply: oneshot::Sender<serde_json::Value>,
    /// Decoding failures are filled in at once, the rest at admission.
    answers: Vec<serde_json::Value>,
}

/// Where a transaction waiting for admission came from.
enum Origin {
    /// A local client, waiting on the RPC for the answer.
    Rpc(oneshot::Sender<serde_json::Value>),
    /// Transaction `slot` of the local client's batch submission `batch` (an index into
    /// `State::batches`).
    Batch { batch: usize, slot: usize },
    /// A peer's relay: not answered, not relayed again.
    Peer,
}

/// The most transactions admitted together: what clients and peers sent while the node was
/// busy is drained up to this many, and offered to the engine in one call.
pub const MAX_ADMIT: usize = 4096;

/// The most consensus messages kept for an engine that has not started yet.
pub const MAX_EARLY: usize = 1024;
/// The most bytes of them.
pub const MAX_EARLY_BYTES: usize = 16 << 20;

/// Runs a node until the transport closes: `ledger` is its opened chain, `engine` its
/// consensus engine (the one the chain's genesis names), `pacing` when each height starts,
/// `rpc` local requests, `events` where to report each finalised block.
#[allow(clippy::too_many_arguments)] // the node's parts, each distinct
pub async fn run<E, S, R, B, G>(
    clock: E,
    name: String,
    ledger: NodeLedger<G::Consensus>,
    engine: G,
    pacing: Pacing,
    transport: Transport<S, R, B>,
    rpc: mpsc::UnboundedReceiver<RpcCall>,
    events: Option<mpsc::UnboundedSender<Finalised>>,
) where
    E: Clock,
    S: Sender<PublicKey = Pk>,
    R: Receiver<PublicKey = Pk>,
    B: Blocker<PublicKey = Pk>,
    G: NodeEngine,
{
    // No web API: a job channel that never delivers (its sender lives as long as the loop).
    let (_keep, jobs) = mpsc::unbounded_channel();
    run_with_jobs(
        clock, name, ledger, engine, pacing, transport, rpc, jobs, events,
    )
    .await
}

/// [`run`], also running the [`NodeJob`]s that arrive on `jobs` (the web API's).
#[allow(clippy::too_many_arguments)] // the node's parts, each distinct
pub async fn run_with_jobs<E, S, R, B, G>(
    clock: E,
    name: String,
    ledger: NodeLedger<G::Consensus>,
    engine: G,
    pacing: Pacing,
    transport: Transport<S, R, B>,
    mut rpc: mpsc::UnboundedReceiver<RpcCall>,
    mut jobs: mpsc::UnboundedReceiver<NodeJob>,
    events: Option<mpsc::UnboundedSender<Finalised>>,
) where
    E: Clock,
    S: Sender<PublicKey = Pk>,
    R: Receiver<PublicKey = Pk>,
    B: Blocker<PublicKey = Pk>,
    G: NodeEngine,
{
    let Transport {
        consensus: (consensus, mut consensus_rx),
        txs: (txs, mut txs_rx),
        sync: (sync, mut sync_rx),
        blocker,
        peers,
    } = transport;
    let mut node = State {
        clock,
        name,
        ledger,
        engine,
        timers: BTreeMap::new(),
        consensus,
        txs,
        sync,
        blocker,
        interval: micros(pacing.interval),
        idle: pacing.idle.map(micros),
        appended_at: None,
        idle_until: 0,
        peer_started: false,
        last_append: 0,
        peer_heights: BTreeMap::new(),
        sync_pending: None,
        events,
        last_finalised: None,
        started: false,
        early: Vec::new(),
        inbox: Vec::new(),
        outbox: Vec::new(),
        batches: Vec::new(),
    };
    info!(node = %node.name, engine = G::NAME, height = node.ledger.chain().height(), tip = %node.ledger.chain().tip(), "starting");
    let (booted, need) = (now_us(&node.clock), (2 * peers).div_ceil(3));
    let mut next_status = 0;
    loop {
        let now = now_us(&node.clock);
        if !node.started {
            let heard = node
                .peer_heights
                .values()
                .filter(|(_, at)| now < at + PEER_FRESH)
                .count();
            if heard >= need || now >= booted + START_WAIT {
                node.started = true;
                info!(node = %node.name, peers = heard, "starting consensus");
                node.input(Input::Start);
                // What peers that started earlier sent meanwhile (the committee engine's
                // identities, for one).
                for (from, bytes) in std::mem::take(&mut node.early) {
                    node.on_consensus(from, bytes);
                }
            }
        }
        if now >= next_status {
            next_status = now + STATUS_EVERY;
            let height = node.ledger.chain().height();
            node.send_sync(CwRecipients::All, &SyncMsg::Status { height });
            node.maybe_request(now);
        }
        if node.appended_at.is_some_and(|at| at <= now) && node.may_start_height(now) {
            node.appended_at = None;
            node.input(Input::Appended);
        }
        let due: Vec<G::Timer> = node
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for timer in due {
            node.timers.remove(&timer);
            node.input(Input::Timer(timer));
        }
        let next = node
            .timers
            .values()
            .copied()
            // While idle the height waits for a transaction, a peer or `idle_until`.
            .chain(
                node.appended_at
                    .map(|at| if at > now { at } else { node.idle_until }),
            )
            .chain([next_status])
            .min()
            .unwrap_or(next_status);
        let wait = Duration::from_micros(next.saturating_sub(now_us(&node.clock)).max(1));
        let sleep = node.clock.sleep(wait);
        commonware_macros::select! {
            m = consensus_rx.recv() => match m {
                Ok((from, bytes)) => node.on_consensus(from, bytes),
                Err(e) => { info!(node = %node.name, "transport closed: {e}"); return; }
            },
            m = txs_rx.recv() => match m {
                Ok((from, bytes)) => node.on_tx(from, bytes),
                Err(e) => { info!(node = %node.name, "transport closed: {e}"); return; }
            },
            m = sync_rx.recv() => match m {
                Ok((from, bytes)) => node.on_sync(from, bytes),
                Err(e) => { info!(node = %node.name, "transport closed: {e}"); return; }
            },
            call = rpc.recv() => if let Some(call) = call {
                node.on_rpc_call(call);
            },
            job = jobs.recv() => if let Some(job) = job {
                node.admit();
                job(&mut node);
            },
            _ = sleep => {},
        }
        // What else clients and peers sent meanwhile is admitted with it, in one batch.
        while node.inbox.len() < MAX_ADMIT {
            match rpc.try_recv() {
                Ok(call) => node.on_rpc_call(call),
                Err(_) => break,
            }
        }
        while node.inbox.len() < MAX_ADMIT {
            match ready(txs_rx.recv()) {
                Some(Ok((from, bytes))) => node.on_tx(from, bytes),
                Some(Err(e)) => {
                    info!(node = %node.name, "transport closed: {e}");
                    return;
                }
                None => break,
            }
        }
        node.admit();
        node.relay();
    }
}

/// The output of `future` if it is ready at once (polled once; a pending future is dropped,
/// which the transport's and the channels' receivers allow, as `select!` does).
fn ready<F: std::future::Future>(future: F) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

impl<E, S, B, G> State<E, S, B, G>
where
    E: Clock,
    S: Sender<PublicKey = Pk>,
    B: Blocker<PublicKey = Pk>,
    G: NodeEngine,
{
    fn now(&self) -> Time {
        now_us(&self.clock)
    }

    /// Whether the next height may start, the block interval being over: always, unless the
    /// node paces idle blocks and nothing is pending, no peer started the height, and its
    /// idle interval runs yet.
    fn may_start_height(&self, now: Time) -> bool {
        self.idle.is_none()
            || self.ledger.pending() > 0
            || self.peer_started
            || now >= self.idle_until
    }

    fn block_peer(&mut self, peer: &Pk, why: &str) {
        warn!(node = %self.name, peer = %from_cw(peer), "blocking peer: {why}");
        let _ = self.blocker.block(peer.clone());
    }

    /// Hands `input` to the engine and carries out what it asks for.
    fn input(&mut self, input: ProtocolInput<G>) {
        let now = self.now();
        match self.engine.step(&mut self.ledger, now, input) {
            Ok(outputs) => self.apply(outputs),
            Err(e) => debug!(node = %self.name, "engine refused an input: {e}"),
        }
    }

    /// Blocks reached the ledger by block sync: the engine moves on past the new tip.
    fn synced(&mut self) {
        let now = self.now();
        match self.engine.synced(&mut self.ledger, now) {
            Ok(outputs) => self.apply(outputs),
            Err(e) => debug!(node = %self.name, "engine refused to resume: {e}"),
        }
    }

    fn apply(&mut self, outputs: Outputs<G>) {
        let mut queue: std::collections::VecDeque<_> = outputs.into();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Send { to, message } => {
                    let bytes = G::encode_message(&message);
                    let to = match to {
                        Recipients::One(k) => to_cw(&k).map(CwRecipients::One),
                        Recipients::Some(ks) => {
                            Some(CwRecipients::Some(ks.iter().filter_map(to_cw).collect()))
                        }
                        Recipients::All => Some(CwRecipients::All),
                    };
                    if let Some(to) = to {
                        send_checked(&mut self.consensus, LIMIT_CONSENSUS, to, bytes, "consensus");
                    }
                }
                Output::SetTimer { timer, at } => {
                    self.timers.insert(timer, at);
                }
                Output::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Output::Append(block) => {
                    let height = block.header.height;
                    match self.ledger.append(block) {
                        Ok(update) => self.report(&update),
                        Err(e) => {
                            warn!(node = %self.name, height, "decided block not appended: {e}")
                        }
                    }
                    // Withhold `Appended` for the block interval: the next height starts then
                    // (or, while idle, later: see `may_start_height`).
                    let now = self.now();
                    self.appended_at = Some(now + self.interval);
                    self.idle_until = now + self.idle.unwrap_or(0).max(self.interval);
                    self.peer_started = false;
                }
                Output::Evidence(evidence) => {
                    warn!(node = %self.name, "evidence of misbehaviour: {}", G::describe(&evidence));
                }
                Output::Progress { height, round } => {
                    if round > 0 {
                        info!(node = %self.name, height, round, "new round");
                    } else {
                        debug!(node = %self.name, height, round, "new height");
                    }
                }
            }
        }
    }

    fn report(&mut self, update: &ChainUpdate<MedRec>) {
        for block in &update.applied {
            let chain = self.ledger.chain();
            let Some(header) = chain.header(&block.hash) else {
                continue;
            };
            let event = Finalised {
                node: self.name.clone(),
                height: block.height,
                hash: block.hash.to_string(),
                id: G::block_id(header),
                state_root: header.state_root.to_string(),
                txs: block.txs.len(),
            };
            info!(node = %self.name, height = event.height, hash = %event.hash, txs = event.txs, "finalised");
            self.last_finalised = Some(self.now() / 1_000_000);
            self.last_append = self.now();
            if let Some(events) = &self.events {
                let _ = events.send(event);
            }
        }
    }

    fn on_consensus(&mut self, from: Pk, buf: IoBuf) {
        if buf.as_ref().len() > LIMIT_CONSENSUS {
            return self.block_peer(&from, "oversized consensus message");
        }
        if !self.started {
            let held: usize = self.early.iter().map(|(_, b)| b.as_ref().len()).sum();
            if self.early.len() < MAX_EARLY && held + buf.as_ref().len() <= MAX_EARLY_BYTES {
                self.early.push((from, buf));
            }
            return;
        }
        let bytes = buf.as_ref();
        match G::decode_message(bytes) {
            Ok(message) => {
                if self.appended_at.is_some()
                    && G::message_height(&message).is_some_and(|h| h > self.ledger.chain().height())
                {
                    self.peer_started = true;
                }
                self.input(Input::Message {
                    from: from_cw(&from),
                    message,
                })
            }
            Err(e) => self.block_peer(&from, &format!("malformed consensus message: {e}")),
        }
    }

    /// A peer's relayed batch: queued for admission whole, or (malformed, oversized) refused
    /// whole and the peer blocked. Relayed transactions are not relayed again: the node that
    /// took a transaction from its client sends it to every peer itself.
    fn on_tx(&mut self, from: Pk, bytes: IoBuf) {
        let bytes = bytes.as_ref();
        if bytes.len() > LIMIT_TXS {
            return self.block_peer(&from, "oversized transaction batch");
        }
        match TxBatch::decode_txs(bytes) {
            Ok(txs) => self
                .inbox
                .extend(txs.into_iter().map(|tx| (tx, Origin::Peer))),
            Err(e) => self.block_peer(&from, &e.to_string()),
        }
    }

    /// Admits the waiting transactions in one offer to the engine; answers the clients and
    /// queues their accepted transactions for relay.
    fn admit(&mut self) {
        if self.inbox.is_empty() {
            return;
        }
        let (txs, origins): (Vec<Transaction>, Vec<Origin>) =
            std::mem::take(&mut self.inbox).into_iter().unzip();
        // The clients' transactions' bytes, for relay if taken (a peer's are not relayed).
        let encoded: Vec<Option<Vec<u8>>> = txs
            .iter()
            .zip(&origins)
            .map(|(tx, origin)| (!matches!(origin, Origin::Peer)).then(|| tx.encode()))
            .collect();
        let mut batches = std::mem::take(&mut self.batches);
        // The clients' transactions first, applied to the pool's state; then the peers', which
        // their own nodes applied (see `NodeEngine::offer_relayed`).
        // Each group: the transactions' places in the inbox, and the transactions.
        let (mut local, mut relayed) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for (at, (tx, origin)) in txs.into_iter().zip(&origins).enumerate() {
            let (places, group) = match origin {
                Origin::Peer => &mut relayed,
                _ => &mut local,
            };
            places.push(at);
            group.push(tx);
        }
        let mut answers: Vec<Result<String, String>> = vec![Ok(String::new()); origins.len()];
        for ((places, group), relayed) in [(local, false), (relayed, true)] {
            for (at, answer) in places.into_iter().zip(self.offer(group, relayed)) {
                answers[at] = answer;
            }
        }
        for ((answer, origin), bytes) in answers.into_iter().zip(origins).zip(encoded) {
            if answer.is_ok() {
                self.outbox.extend(bytes);
            }
            match origin {
                Origin::Rpc(reply) => {
                    let _ = reply.send(submission_answer(answer));
                }
                Origin::Batch { batch, slot } => {
                    if let Some(a) = batches.get_mut(batch).and_then(|b| b.answers.get_mut(slot)) {
                        *a = submission_answer(answer);
                    }
                }
                Origin::Peer => {
                    if let Err(e) = answer {
                        debug!(node = %self.name, "relayed transaction not taken: {e}");
                    }
                }
            }
        }
        for BatchReply { reply, answers } in batches {
            let _ = reply.send(serde_json::json!({"ok": true, "answers": answers}));
        }
    }

    /// Offers `txs` to the engine (which submits them to the ledger's pool), as a peer's relay
    /// if `relayed`, and answers each with its id, or the reason it was refused. Duplicates
    /// are dropped; refusals come back with the ledger's reason.
    fn offer(&mut self, txs: Vec<Transaction>, relayed: bool) -> Vec<Result<String, String>> {
        let mut answers: Vec<Result<String, String>> = Vec::with_capacity(txs.len());
        let mut fresh = Vec::with_capacity(txs.len());
        let mut slots = Vec::with_capacity(txs.len());
        for tx in txs {
            let id = tx.id();
            if matches!(
                self.ledger.status(&id),
                Some(TxStatus::Pending | TxStatus::Included { .. })
            ) {
                answers.push(Err(format!(
                    "duplicate: transaction {id} is already pending or included"
                )));
            } else {
                slots.push(answers.len());
                answers.push(Ok(id.to_string()));
                fresh.push(tx);
            }
        }
        if fresh.is_empty() {
            return answers;
        }
        let now = self.now();
        let (outputs, results) = if relayed {
            self.engine.offer_relayed(&mut self.ledger, now, fresh)
        } else {
            self.engine.offer(&mut self.ledger, now, fresh)
        };
        self.apply(outputs);
        for (slot, result) in slots.into_iter().zip(results) {
            if let Err(e) = result {
                answers[slot] = Err(e.to_string());
            }
        }
        answers
    }

    /// Offers `tx` as a local client's (a web API job's), at once: relayed with the next batch
    /// if taken.
    fn submit(&mut self, tx: Transaction) -> Result<String, String> {
        let bytes = tx.encode();
        let answer = self
            .offer(vec![tx], false)
            .pop()
            .unwrap_or_else(|| Err("no answer".into()));
        if answer.is_ok() {
            self.outbox.push(bytes);
        }
        answer
    }

    /// Sends the local clients' accepted transactions to every peer, in as few batches as fit
    /// the channel.
    fn relay(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        for batch in TxBatch::split(std::mem::take(&mut self.outbox)) {
            send_checked(
                &mut self.txs,
                LIMIT_TXS,
                CwRecipients::All,
                codec::encode(&batch),
                "transaction batch",
            );
        }
    }

    fn send_sync(&mut self, to: CwRecipients<Pk>, message: &SyncMsg) {
        send_checked(
            &mut self.sync,
            LIMIT_SYNC,
            to,
            codec::encode(message),
            "sync",
        );
    }

    fn on_sync(&mut self, from: Pk, bytes: IoBuf) {
        let bytes = bytes.as_ref();
        if bytes.len() > LIMIT_SYNC {
            return self.block_peer(&from, "oversized sync message");
        }
        let message: SyncMsg = match codec::decode(bytes) {
            Ok(m) => m,
            Err(e) => return self.block_peer(&from, &format!("malformed sync message: {e}")),
        };
        let now = self.now();
        match message {
            SyncMsg::Status { height } => {
                self.peer_heights.insert(from, (height, now));
                self.maybe_request(now);
            }
            SyncMsg::Request { from: first, count } => {
                let chain = self.ledger.chain();
                let last = first
                    .saturating_add(u64::from(count.min(MAX_SYNC_BATCH)))
                    .min(chain.height() + 1);
                let mut blocks = Vec::new();
                for height in first.max(1)..last {
                    let Some(hash) = chain.hash_at(height) else {
                        break;
                    };
                    match chain.block(&hash) {
                        Ok(Some(block)) => blocks.push(block.encode()),
                        _ => break,
                    }
                }
                debug!(node = %self.name, first, served = blocks.len(), "serving blocks");
                for bytes in blocks {
                    self.send_sync(CwRecipients::One(from.clone()), &SyncMsg::Block { bytes });
                }
            }
            SyncMsg::Block { bytes } => self.on_block(from, &bytes, now),
        }
    }

    fn on_block(&mut self, from: Pk, bytes: &[u8], now: Time) {
        let block = match ChainBlock::<G::Consensus, MedRec>::decode(bytes) {
            Ok(b) => b,
            Err(e) => return self.block_peer(&from, &format!("undecodable block: {e}")),
        };
        let (height, mine) = (block.header.height, self.ledger.chain().height());
        if height + 1 < mine || height > mine + 1 || block.hash() == self.ledger.chain().tip() {
            return;
        }
        match self.ledger.append(block) {
            Ok(update) => {
                if !update.applied.is_empty() {
                    self.report(&update);
                    self.appended_at = None;
                    self.synced();
                }
                let target = self.sync_pending.map_or(0, |(t, _)| t);
                if self.ledger.chain().height() >= target {
                    self.sync_pending = None;
                    self.maybe_request(now);
                }
            }
            Err(LedgerError::Chain(e)) if peer_fault(&e) => {
                self.block_peer(
                    &from,
                    &format!("served an invalid block at height {height}: {e}"),
                );
            }
            Err(e) => debug!(node = %self.name, height, "synced block not appended: {e}"),
        }
    }

    /// Asks the highest peer for missing blocks if this node is behind.
    fn maybe_request(&mut self, now: Time) {
        if self
            .sync_pending
            .is_some_and(|(_, at)| now < at + SYNC_RETRY)
        {
            return;
        }
        self.sync_pending = None;
        let mine = self.ledger.chain().height();
        let stalled = now > self.last_append + 3 * STATUS_EVERY;
        let best = self
            .peer_heights
            .iter()
            .filter(|(_, (h, at))| {
                now < at + PEER_FRESH && (*h > mine + 1 || (*h > mine && stalled))
            })
            .max_by_key(|(_, (h, _))| *h)
            .map(|(p, (h, _))| (p.clone(), *h));
        if let Some((peer, height)) = best {
            // From the tip's height: the peer's copy of the tip (another seal) may be the
            // parent of its next block.
            let first = mine.max(1);
            let count = (height + 1 - first).min(u64::from(MAX_SYNC_BATCH)) as u32;
            debug!(node = %self.name, mine, peer_height = height, "requesting blocks");
            self.sync_pending = Some((first + u64::from(count) - 1, now));
            self.send_sync(
                CwRecipients::One(peer),
                &SyncMsg::Request { from: first, count },
            );
        }
    }

    /// A local RPC request: a submission waits in the inbox for the next admission (answered
    /// then); anything else is answered at once, after the waiting transactions are admitted.
    fn on_rpc_call(&mut self, (request, reply): RpcCall) {
        match request {
            RpcRequest::Submit { tx } => match decode_submission(&tx) {
                Ok(tx) => self.inbox.push((tx, Origin::Rpc(reply))),
                Err(e) => {
                    let _ = reply.send(serde_json::json!({"ok": false, "error": e}));
                }
            },
            RpcRequest::SubmitBatch { txs } => self.queue_batch(txs, reply),
            query => {
                self.admit();
                let _ = reply.send(self.on_query(query));
            }
        }
    }

    /// A batch submission: its well-formed transactions wait in the inbox, to be admitted with
    /// what else is waiting; a batch of none, or of more than [`MAX_RPC_BATCH`], is refused whole.
    fn queue_batch(&mut self, txs: Vec<String>, reply: oneshot::Sender<serde_json::Value>) {
        if txs.is_empty() || txs.len() > MAX_RPC_BATCH {
            let error = format!(
                "a batch of {} transactions (1 to {MAX_RPC_BATCH} allowed)",
                txs.len()
            );
            let _ = reply.send(serde_json::json!({"ok": false, "error": error}));
            return;
        }
        let batch = self.batches.len();
        let mut answers = Vec::with_capacity(txs.len());
        let mut waiting = 0;
        for (slot, hex) in txs.iter().enumerate() {
            match decode_submission(hex) {
                Ok(tx) => {
                    self.inbox.push((tx, Origin::Batch { batch, slot }));
                    answers.push(serde_json::Value::Null);
                    waiting += 1;
                }
                Err(e) => answers.push(serde_json::json!({"ok": false, "error": e})),
            }
        }
        if waiting == 0 {
            let _ = reply.send(serde_json::json!({"ok": true, "answers": answers}));
        } else {
            self.batches.push(BatchReply { reply, answers });
        }
    }

    /// Answers a query (anything but a submission).
    fn on_query(&mut self, request: RpcRequest) -> serde_json::Value {
        match request {
            RpcRequest::Submit { .. } | RpcRequest::SubmitBatch { .. } => {
                serde_json::json!({"ok": false, "error": "a submission is not a query"})
            }
            RpcRequest::Status => {
                let now = self.now();
                let chain = self.ledger.chain();
                let peers = self
                    .peer_heights
                    .values()
                    .filter(|(_, at)| now < at + PEER_FRESH)
                    .count();
                serde_json::json!({
                    "ok": true,
                    "node": self.name,
                    "height": chain.height(),
                    "tip": chain.tip().to_string(),
                    "state_root": chain.tip_header().state_root.to_string(),
                    "peers": peers,
                    "mempool": self.ledger.pending(),
                    "last_finalised_unix": self.last_finalised,
                    "engine": G::NAME,
                    "round": self.engine.round(),
                })
            }
            RpcRequest::Block { height } => {
                let chain = self.ledger.chain();
                match chain.header_at(height) {
                    Some(h) => serde_json::json!({
                        "ok": true,
                        "height": height,
                        "hash": h.hash().to_string(),
                        "id": G::block_id(h),
                        "state_root": h.state_root.to_string(),
                        "tx_count": h.tx_count,
                    }),
                    None => serde_json::json!({"ok": false, "error": "no such height"}),
                }
            }
        }
    }
}

impl<E, S, B, G> NodeAccess for State<E, S, B, G>
where
    E: Clock,
    S: Sender<PublicKey = Pk>,
    B: Blocker<PublicKey = Pk>,
    G: NodeEngine,
{
    fn ledger(&mut self) -> &mut dyn LedgerView {
        &mut self.ledger
    }
    fn submit(&mut self, tx: Transaction) -> Result<String, String> {
        State::submit(self, tx)
    }
    fn now_secs(&self) -> u64 {
        self.now() / 1_000_000
    }
}

/// A client's answer for one submitted transaction: its id, or why it was refused.
fn submission_answer(answer: Result<String, String>) -> serde_json::Value {
    match answer {
        Ok(id) => serde_json::json!({"ok": true, "id": id}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    }
}

/// The transaction of a submission: hex of its canonical bytes, at most
/// [`MAX_TX_LEN`](medledger::tx::MAX_TX_LEN) of them.
fn decode_submission(hex: &str) -> Result<Transaction, String> {
    match crate::config::hex_decode(hex) {
        Ok(b) if b.len() <= medledger::tx::MAX_TX_LEN => {
            Transaction::decode(&b).map_err(|e| e.to_string())
        }
        Ok(_) => Err("transaction too large".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a chain refusal means the block itself is invalid (the peer that served it is at
/// fault), rather than out of place (unknown parent, already known) or a local failure.
fn peer_fault(e: &medledger::ChainError) -> bool {
    matches!(
        e,
        ChainError::Decode(_)
            | ChainError::Structure(_)
            | ChainError::Consensus(_)
            | ChainError::KnownInvalid(_)
            | ChainError::StateRoot { .. }
            | ChainError::Tx { .. }
            | ChainError::Transaction(_)
            | ChainError::Refused(_)
            | ChainError::TooManyTxs { .. }
    )
}

/// Sends `bytes` if they fit `limit` (the transport panics on oversized payloads).
fn send_checked<S: Sender<PublicKey = Pk>>(
    sender: &mut S,
    limit: usize,
    to: CwRecipients<Pk>,
    bytes: Vec<u8>,
    what: &str,
) {
    if bytes.len() > limit || bytes.len() > MAX_P2P_MESSAGE as usize {
        warn!(
            len = bytes.len(),
            limit, "not sending an oversized {what} message"
        );
        return;
    }
    let _ = sender.send(to, IoBuf::from(bytes), false);
}
