//! The ledger of one process: a [`Chain`], a mempool and a clock, behind one object.
//!
//! It is generic over the chain's engine and application; [`medledger::Ledger`](crate::Ledger)
//! names the MedRec one, which the examples below use.
//!
//! An embedder (a hospital's EMR, a clinic's gateway) hands the [`Ledger`] signed transactions
//! and asks it to produce blocks; the ledger does the bookkeeping every embedder would otherwise
//! write:
//!
//! * [`submit`](Ledger::submit) checks a transaction against the current state *and* everything
//!   already pending — signature and chain id, nonce order, and the application's rules (for
//!   MedRec, access control), by applying it after the pending ones — and answers [`Accepted`]
//!   (with the events it would emit and the ids of the objects it would create) or a
//!   [`Refusal`] carrying the same typed reason the chain would give ([`TxError`],
//!   [`StateError`]). Nothing is added on refusal.
//! * [`next_nonce`](Ledger::next_nonce) counts pending transactions, and
//!   [`sign`](Ledger::sign) signs with it; [`dry_run`](Ledger::dry_run) and
//!   [`dry_run_op`](Ledger::dry_run_op) ask "would this be refused, and why?" without adding
//!   anything.
//! * [`produce_block`](Ledger::produce_block) (Proof-of-Work) or
//!   [`produce_block_with`](Ledger::produce_block_with) (any engine, given a [`Sealer`]) takes
//!   the pending transactions that fit in one block, stamps a valid time, appends the block and
//!   reports, per transaction, its events and created ids — or why it was left out. Engines that
//!   agree on blocks elsewhere (committees) use [`propose`](Ledger::propose) and hand the agreed
//!   block to [`append`](Ledger::append), which also takes blocks from peers.
//! * [`status`](Ledger::status) says pending, included at height *h* index *i*, or refused
//!   why; [`subscribe`](Ledger::subscribe) delivers every applied block and reorganisation.
//!
//! ```
//! use medledger::chain::ManualClock;
//! use medledger::hash::content_hash;
//! use medledger::pow::ProofOfWork;
//! use medledger::tx::Keypair;
//! use medledger::{ChainBuilder, Ledger, Payload, TxStatus};
//! use std::sync::Arc;
//!
//! let clock = Arc::new(ManualClock::new(1_700_000_000));
//! let chain = ChainBuilder::new("my-hospital-network", ProofOfWork::regtest())
//!     .genesis_time(1_700_000_000)
//!     .clock(clock.clone())
//!     .build()?;
//! let mut ledger = Ledger::new(chain)?;
//! let lab = Keypair::generate();
//! // Two anchors in a row: the ledger counts the pending one for the second's nonce.
//! for result in [&b"lab result #1"[..], b"lab result #2"] {
//!     let tx = ledger.sign(&lab, Payload::Data { record: content_hash(result) });
//!     ledger.submit(tx)?;
//! }
//! assert_eq!(ledger.next_nonce(&lab.account()), 2);
//! // A replay of the first nonce is refused, with the chain's own reason.
//! let stale = medledger::Transaction::sign(&lab, ledger.chain_id(), 0, Payload::Data {
//!     record: content_hash(b"lab result #3"),
//! });
//! assert!(ledger.submit(stale).is_err());
//! // Two blocks in the same second: the ledger stamps valid times.
//! let first = ledger.produce_block()?;
//! let second = ledger.produce_block()?;
//! assert_eq!(first.report.txs.len(), 2);
//! assert!(second.block.header.timestamp > first.block.header.timestamp);
//! let id = first.report.txs[1].id;
//! assert!(matches!(ledger.status(&id), Some(TxStatus::Included { height: 1, index: 1, .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The pool
//!
//! The pool keeps transactions in the order they were accepted, which is also each account's
//! nonce order: a transaction must carry exactly the account's next nonce counting pending ones
//! ([`next_nonce`](Ledger::next_nonce)). One whose nonce is ahead is **refused**, not queued,
//! with [`StateError::BadNonce`] naming the nonce expected — submit an account's transactions in
//! order. The pool is bounded by count and bytes ([`DEFAULT_MAX_POOL_TXS`],
//! [`DEFAULT_MAX_POOL_BYTES`], or [`LedgerBuilder`] options); when full it refuses new
//! transactions rather than dropping accepted ones.
//!
//! Accepted transactions were checked at [`next_block_time`](Ledger::next_block_time): when a
//! block is applied, the remaining ones are checked again against the new state, and those that
//! no longer apply (a grant revoked in the meantime, a period now over…) are dropped and reported
//! in the block's [`BlockReport::left_out`], with their reason. Transactions another node
//! relayed ([`submit_relayed`](Ledger::submit_relayed)) are not applied to the pool, so not
//! checked again either: a block built from the pool leaves out and drops one that fails.
//!
//! The pool's transactions are applied to the chain's own state as pending writes, which the
//! ledger takes out again before it returns: the chain's blocks and queries never see them, no
//! second copy of the state is kept, and building a ledger over a long chain replays nothing.
//!
//! # Block time
//!
//! A block is stamped `max(clock, parent's time, median time past + 1)`, where the median time
//! past is the median timestamp of the last 11 blocks: never before its parent, strictly after
//! the median, so two blocks produced in the same second are both valid for every engine of the
//! crate. The clock is the chain's ([`Chain::clock`]) unless [`LedgerBuilder::clock`] sets
//! another.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;

use crate::app::Application;
use crate::block::{MAX_BLOCK_LEN, MAX_BLOCK_TXS};
use crate::chain::{BlockTemplate, Chain, ChainBlock, ChainError, ChainResult, Clock};
use crate::consensus::protocol::{Outputs, Protocol, ProtocolInput, Time};
use crate::consensus::{Consensus, ConsensusError};
use crate::hash::{AccountId, BlockHash, ChainId, TxId};
use crate::pow::{PowSeal, ProofOfWork};
use crate::state::{Pending, StateError};
use crate::tx::{
    KeyCache, Keypair, PublicKey, Signature, Transaction, TxBody, TxError, VerifiedTx,
};

/// The default bound on the number of pending transactions: two full blocks.
pub const DEFAULT_MAX_POOL_TXS: usize = 2 * MAX_BLOCK_TXS;
/// The default bound on the encoded bytes of pending transactions: two full blocks.
pub const DEFAULT_MAX_POOL_BYTES: usize = 2 * MAX_BLOCK_LEN;
/// Bytes of a block left for its header and seal when the ledger packs transactions.
pub const SEAL_RESERVE: usize = 64 * 1024;
/// The default bound on the encoded bytes of transactions the ledger puts in one block.
pub const DEFAULT_MAX_BLOCK_BYTES: usize = MAX_BLOCK_LEN - SEAL_RESERVE;
/// The default number of statuses of transactions no longer pending (included or refused) that
/// [`Ledger::status`] remembers; the oldest are forgotten first.
pub const DEFAULT_MAX_STATUSES: usize = 1 << 17;
/// The number of past blocks whose timestamps give the median time past.
const MEDIAN_SPAN: u64 = 11;

/// Why the ledger refused a transaction. Nothing was added to the pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal<A: Application> {
    /// The transaction is invalid on its own: signature, signer key or chain id.
    #[error("invalid transaction: {0}")]
    Tx(#[from] TxError),
    /// The transaction fails against the state with the pending transactions applied: its
    /// nonce, a retired key, or an application's rule (for MedRec, access control) — the chain's
    /// own reason.
    #[error("refused by the state: {0}")]
    State(#[from] StateError<A::Error>),
    /// The transaction is already pending, or was recently included.
    #[error("transaction {0} is already pending or included")]
    Duplicate(TxId),
    /// The pool holds as many transactions, or bytes, as it may.
    #[error("the pool is full: at most {max} {what}")]
    PoolFull {
        /// "transactions" or "bytes".
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The transaction encodes to more bytes than a transaction, or a block, may hold.
    #[error("transaction encodes to {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why the ledger could not build, produce or append a block, or be built. The ledger (pool and
/// chain) is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError<A: Application> {
    /// The chain refused the block, or its store failed.
    #[error(transparent)]
    Chain(#[from] ChainError<A::Error>),
    /// A builder option is out of range.
    #[error("invalid ledger configuration: {0}")]
    Config(String),
    /// The sealer returned a block that does not extend the tip (it went to a side branch).
    #[error("the sealed block {0} does not extend the tip")]
    NotOnTip(BlockHash),
}

/// A transaction the ledger accepted (or, from a dry run, would accept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted<A: Application> {
    /// Its id.
    pub id: TxId,
    /// The events it emits when applied after the pending transactions.
    pub events: Vec<A::Event>,
    /// The objects it creates, by id. Ids derive from the transaction id, so those of a signed
    /// transaction are final once it is included.
    pub created: Vec<A::Created>,
}

/// Where a transaction stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxStatus<A: Application> {
    /// In the pool, waiting for a block.
    Pending,
    /// In a main-chain block.
    Included {
        /// The block.
        block: BlockHash,
        /// Its height.
        height: u64,
        /// The transaction's position in it.
        index: u32,
    },
    /// Refused when submitted, or dropped from the pool since.
    Refused(Refusal<A>),
}

/// What an applied transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxOutcome<A: Application> {
    /// The transaction.
    pub id: TxId,
    /// Its position in the block.
    pub index: u32,
    /// The events it emitted.
    pub events: Vec<A::Event>,
    /// The objects it created, by id.
    pub created: Vec<A::Created>,
}

/// A pending transaction dropped from the pool, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOut<A: Application> {
    /// The transaction.
    pub id: TxId,
    /// Why it was dropped.
    pub reason: Refusal<A>,
}

/// What a main-chain block did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockReport<A: Application> {
    /// The block.
    pub hash: BlockHash,
    /// Its height.
    pub height: u64,
    /// Its timestamp.
    pub timestamp: u64,
    /// Every transaction of the block, in block order, with what it did.
    pub txs: Vec<TxOutcome<A>>,
    /// Pending transactions dropped because they fail against the state this block (and any
    /// block before it in the same update) produced, or that failed while the block was built.
    pub left_out: Vec<LeftOut<A>>,
}

/// A block the ledger produced and appended.
#[derive(Clone, Debug)]
pub struct Produced<S, A: Application> {
    /// The block.
    pub block: crate::block::Block<S, A::Payload>,
    /// What it did.
    pub report: Arc<BlockReport<A>>,
}

/// How the main chain changed when the ledger appended a block.
#[derive(Clone, Debug, Default)]
pub struct ChainUpdate<A: Application> {
    /// Main-chain blocks rolled back (tip first), if the chain reorganised. Their transactions
    /// went back to the pool, or were dropped (see the last report's `left_out`).
    pub reverted: Vec<BlockHash>,
    /// Blocks newly applied to the main chain, in height order (none for a side branch).
    pub applied: Vec<Arc<BlockReport<A>>>,
}

/// The next block for engines that seal elsewhere: the template, and the pending transactions
/// that fail against the state and were left out of it.
#[derive(Clone, Debug)]
pub struct Proposal<A: Application> {
    /// The block to seal.
    pub template: BlockTemplate<A::Payload, A::Error>,
    /// Pending transactions that fail in this block, with the chain's reason; they are dropped
    /// from the pool when the next block is appended.
    pub left_out: Vec<LeftOut<A>>,
}

/// What the ledger tells its subscribers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LedgerEvent<A: Application> {
    /// A block was applied to the main chain.
    Applied(Arc<BlockReport<A>>),
    /// A main-chain block was rolled back by a reorganisation (sent tip first, before the new
    /// branch's `Applied` events).
    Reverted {
        /// The block.
        hash: BlockHash,
        /// Its height.
        height: u64,
    },
}

/// Seals block templates for an engine that can seal locally (Proof-of-Work, proof of
/// authority…). Closures `FnMut(&Chain<C, A>, BlockTemplate<A::Payload, A::Error>) -> ChainResult<ChainBlock<C, A>, A>`
/// are sealers.
pub trait Sealer<C: Consensus, A: Application> {
    /// Seals `template`, built on `chain`'s tip.
    ///
    /// # Errors
    ///
    /// [`ChainError<A::Error>`] saying why the block cannot be sealed.
    fn seal(
        &mut self,
        chain: &Chain<C, A>,
        template: BlockTemplate<A::Payload, A::Error>,
    ) -> ChainResult<ChainBlock<C, A>, A>;
}

impl<C, A, F> Sealer<C, A> for F
where
    C: Consensus,
    A: Application,
    F: FnMut(&Chain<C, A>, BlockTemplate<A::Payload, A::Error>) -> ChainResult<ChainBlock<C, A>, A>,
{
    fn seal(
        &mut self,
        chain: &Chain<C, A>,
        template: BlockTemplate<A::Payload, A::Error>,
    ) -> ChainResult<ChainBlock<C, A>, A> {
        self(chain, template)
    }
}

/// Configures and builds a [`Ledger`].
pub struct LedgerBuilder<C: Consensus, A: Application> {
    chain: Chain<C, A>,
    clock: Option<Arc<dyn Clock>>,
    max_pool_txs: usize,
    max_pool_bytes: usize,
    max_block_txs: usize,
    max_block_bytes: usize,
    max_statuses: usize,
}

impl<C: Consensus, A: Application> LedgerBuilder<C, A> {
    /// A ledger over `chain`, with the default limits.
    pub fn new(chain: Chain<C, A>) -> Self {
        Self {
            chain,
            clock: None,
            max_pool_txs: DEFAULT_MAX_POOL_TXS,
            max_pool_bytes: DEFAULT_MAX_POOL_BYTES,
            max_block_txs: MAX_BLOCK_TXS,
            max_block_bytes: DEFAULT_MAX_BLOCK_BYTES,
            max_statuses: DEFAULT_MAX_STATUSES,
        }
    }
    /// The clock that stamps blocks (default: the chain's, [`Chain::clock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// The most pending transactions (default [`DEFAULT_MAX_POOL_TXS`]; at least 1).
    pub fn max_pool_txs(mut self, n: usize) -> Self {
        self.max_pool_txs = n;
        self
    }
    /// The most encoded bytes of pending transactions (default [`DEFAULT_MAX_POOL_BYTES`]; at
    /// least [`MAX_TX_LEN`](crate::tx::MAX_TX_LEN)).
    pub fn max_pool_bytes(mut self, n: usize) -> Self {
        self.max_pool_bytes = n;
        self
    }
    /// The most transactions per produced block (default and at most [`MAX_BLOCK_TXS`]; at
    /// least 1).
    pub fn max_block_txs(mut self, n: usize) -> Self {
        self.max_block_txs = n;
        self
    }
    /// The most encoded transaction bytes per produced block (default
    /// [`DEFAULT_MAX_BLOCK_BYTES`]; from [`MAX_TX_LEN`](crate::tx::MAX_TX_LEN) to
    /// [`MAX_BLOCK_LEN`] − [`SEAL_RESERVE`]).
    pub fn max_block_bytes(mut self, n: usize) -> Self {
        self.max_block_bytes = n;
        self
    }
    /// How many statuses of transactions no longer pending to remember (default
    /// [`DEFAULT_MAX_STATUSES`]).
    pub fn max_statuses(mut self, n: usize) -> Self {
        self.max_statuses = n;
        self
    }

    /// Builds the ledger, with an empty pool.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Config`] for a limit out of range.
    pub fn build(self) -> Result<Ledger<C, A>, LedgerError<A>> {
        let tx_max = crate::tx::MAX_TX_LEN;
        let bad = |what: &str| Err(LedgerError::Config(what.to_string()));
        if self.max_pool_txs == 0 {
            return bad("the pool must hold at least 1 transaction");
        }
        if self.max_pool_bytes < tx_max {
            return bad(&format!("the pool must hold at least {tx_max} bytes"));
        }
        if !(1..=MAX_BLOCK_TXS).contains(&self.max_block_txs) {
            return bad(&format!(
                "a block holds 1 to {MAX_BLOCK_TXS} transactions, not {}",
                self.max_block_txs
            ));
        }
        if !(tx_max..=DEFAULT_MAX_BLOCK_BYTES).contains(&self.max_block_bytes) {
            return bad(&format!(
                "a block holds {tx_max} to {DEFAULT_MAX_BLOCK_BYTES} transaction bytes, not {}",
                self.max_block_bytes
            ));
        }
        let clock = self.clock.unwrap_or_else(|| Arc::clone(self.chain.clock()));
        Ok(Ledger {
            chain: self.chain,
            clock,
            limits: Limits {
                pool_txs: self.max_pool_txs,
                pool_bytes: self.max_pool_bytes,
                block_txs: self.max_block_txs,
                block_bytes: self.max_block_bytes,
            },
            pool: Vec::new(),
            pool_ids: HashSet::new(),
            pool_bytes: 0,
            pool_writes: None,
            statuses: StatusLog::new(self.max_statuses),
            subscribers: Vec::new(),
        })
    }
}

struct Limits {
    pool_txs: usize,
    pool_bytes: usize,
    block_txs: usize,
    block_bytes: usize,
}

/// A pending transaction.
struct PoolEntry<A: Application> {
    tx: VerifiedTx<A::Payload>,
    len: usize,
    /// Whether its writes are among the pool's (false for a peer's relayed transaction: see
    /// [`Ledger::submit_relayed`]).
    applied: bool,
}

/// Statuses of transactions no longer pending, the oldest forgotten first.
struct StatusLog<A: Application> {
    map: HashMap<TxId, (u64, TxStatus<A>)>,
    order: VecDeque<(TxId, u64)>,
    next: u64,
    cap: usize,
}

impl<A: Application> StatusLog<A> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            cap,
        }
    }

    fn get(&self, id: &TxId) -> Option<&TxStatus<A>> {
        self.map.get(id).map(|(_, s)| s)
    }

    fn set(&mut self, id: TxId, status: TxStatus<A>) {
        if self.cap == 0 {
            return;
        }
        let seq = self.next;
        self.next += 1;
        self.map.insert(id, (seq, status));
        self.order.push_back((id, seq));
        while self.map.len() > self.cap {
            let Some((old, s)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(cur, _)| *cur == s) {
                self.map.remove(&old);
            }
        }
        // Updated entries leave stale positions behind; drop them before they pile up.
        if self.order.len() > 2 * self.cap {
            let map = &self.map;
            self.order
                .retain(|(id, s)| map.get(id).is_some_and(|(cur, _)| cur == s));
        }
    }

    fn forget(&mut self, id: &TxId) {
        self.map.remove(id);
    }
}

/// The ledger of one process: a chain, a mempool and a clock (see the [module
/// documentation](self)).
pub struct Ledger<C: Consensus, A: Application> {
    chain: Chain<C, A>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// Pending transactions, in the order they were accepted.
    pool: Vec<PoolEntry<A>>,
    pool_ids: HashSet<TxId>,
    pool_bytes: usize,
    /// The writes of the pending transactions, applied on the tip's state and taken out of it
    /// ([`State::take_pending`]); `None` while the pool is empty, or if a table of the
    /// application could not set its writes aside (the pool is then applied again when next
    /// needed).
    pool_writes: Option<Pending>,
    statuses: StatusLog<A>,
    subscribers: Vec<mpsc::Sender<LedgerEvent<A>>>,
}

impl<C: Consensus, A: Application> core::fmt::Debug for Ledger<C, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ledger")
            .field("chain", &self.chain)
            .field("pending", &self.pool.len())
            .field("pending_bytes", &self.pool_bytes)
            .finish_non_exhaustive()
    }
}

/// A transaction a block built from the pool left out, with the reason (as
/// [`BlockTemplate::rejected`] lists them).
pub type Rejected<A> = (
    Transaction<<A as Application>::Payload>,
    StateError<<A as Application>::Error>,
);

/// A transaction that passed the stateless checks, with its encoded length, or why not.
type Checked<A> = Result<(VerifiedTx<<A as Application>::Payload>, usize), Refusal<A>>;

/// The checks of a submitted transaction that need neither the state nor the pool: size,
/// chain id and signature.
struct Stateless<'a> {
    chain_id: ChainId,
    max_len: usize,
    keys: &'a KeyCache,
}

impl Stateless<'_> {
    /// [`check`](Self::check) of each of `txs`, with its id: each encoded and hashed once (on
    /// all cores with the `parallel` feature), the signatures checked in batches, about twice
    /// as fast as one at a time; a bad signature refuses only its own transaction.
    fn check_all<A: Application>(
        &self,
        txs: Vec<Transaction<A::Payload>>,
    ) -> Vec<(TxId, Checked<A>)> {
        let measure = |tx: &Transaction<A::Payload>| {
            let bytes = tx.encode();
            (
                TxId::from_bytes(crate::hash::domain::TX.hash(&bytes)),
                bytes.len(),
            )
        };
        #[cfg(feature = "parallel")]
        let measured: Vec<(TxId, usize)> = {
            use rayon::prelude::*;
            txs.par_iter().map(measure).collect()
        };
        #[cfg(not(feature = "parallel"))]
        let measured: Vec<(TxId, usize)> = txs.iter().map(measure).collect();
        let mut to_verify = Vec::with_capacity(txs.len());
        for (tx, &(id, len)) in txs.into_iter().zip(&measured) {
            if len <= self.max_len {
                to_verify.push((tx, id));
            }
        }
        let mut verdicts =
            crate::tx::verify_each_identified(self.chain_id, to_verify, self.keys).into_iter();
        measured
            .into_iter()
            .map(|(id, len)| {
                if len > self.max_len {
                    let refusal = Refusal::TooLarge {
                        len,
                        max: self.max_len,
                    };
                    return (id, Err(refusal));
                }
                // One verdict per transaction handed to verification, in order.
                let verdict = verdicts
                    .next()
                    .expect("a verdict for each transaction verified");
                (id, verdict.map(|v| (v, len)).map_err(Refusal::Tx))
            })
            .collect()
    }

    /// The verified transaction and its encoded length.
    fn check<A: Application>(&self, tx: &Transaction<A::Payload>) -> Checked<A> {
        let bytes = tx.encode();
        let len = bytes.len();
        if len > self.max_len {
            return Err(Refusal::TooLarge {
                len,
                max: self.max_len,
            });
        }
        if tx.body.chain_id != self.chain_id {
            return Err(Refusal::Tx(TxError::WrongChain {
                expected: self.chain_id,
                found: tx.body.chain_id,
            }));
        }
        let id = TxId::from_bytes(crate::hash::domain::TX.hash(&bytes));
        Ok((tx.clone().verify_with_id(id, self.keys)?, len))
    }
}

/// The objects the events report created, as the application names them
/// ([`Application::created`]).
fn created_by<A: Application>(events: &[A::Event]) -> Vec<A::Created> {
    events.iter().filter_map(A::created).collect()
}

impl<C: Consensus, A: Application> Ledger<C, A> {
    /// A ledger over `chain` with the default limits (see [`LedgerBuilder`]).
    ///
    /// # Errors
    ///
    /// As [`LedgerBuilder::build`].
    pub fn new(chain: Chain<C, A>) -> Result<Self, LedgerError<A>> {
        LedgerBuilder::new(chain).build()
    }

    /// A builder, to set the clock and the limits.
    pub fn builder(chain: Chain<C, A>) -> LedgerBuilder<C, A> {
        LedgerBuilder::new(chain)
    }

    /// The chain (its state, headers, queries).
    pub fn chain(&self) -> &Chain<C, A> {
        &self.chain
    }

    /// Closes the ledger and hands back the chain; pending transactions are dropped.
    pub fn into_chain(self) -> Chain<C, A> {
        self.chain
    }

    /// The chain id (covered by every transaction signature).
    pub fn chain_id(&self) -> ChainId {
        self.chain.chain_id()
    }

    /// Hands `input` to a protocol engine that reads this ledger's chain (its
    /// [`Ledger`](Protocol::Ledger) is the [`Chain`], as for
    /// [`PowNode`](crate::pow::PowNode)), and returns what the engine asks for. The pool is not
    /// involved: submit offered transactions here first if they should be pending, and append
    /// the engine's [`Output::Append`](crate::consensus::protocol::Output::Append) blocks with
    /// [`append`](Self::append), which keeps the pool in step. An engine never appends to the
    /// chain it is handed (the protocol leaves that to the driver).
    ///
    /// # Errors
    ///
    /// The engine's refusal of `input`; the engine and the ledger are then unchanged.
    pub fn drive<P>(
        &mut self,
        engine: &mut P,
        now: Time,
        input: ProtocolInput<P>,
    ) -> Result<Outputs<P>, P::Error>
    where
        P: Protocol<Ledger = Chain<C, A>>,
    {
        engine.handle(&mut self.chain, now, input)
    }

    /// The clock that stamps blocks.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The most transactions a block built from the pool holds
    /// ([`LedgerBuilder::max_block_txs`]); engines that choose a block's transactions
    /// themselves keep to it too, and Tendermint's validators refuse a proposal above it.
    pub fn max_block_txs(&self) -> usize {
        self.limits.block_txs
    }

    /// The most bytes of encoded transactions a block built from the pool holds
    /// ([`LedgerBuilder::max_block_bytes`]); engines that choose a block's transactions
    /// themselves keep to it too, and Tendermint's validators refuse a proposal above it.
    pub fn max_block_bytes(&self) -> usize {
        self.limits.block_bytes
    }

    /// The number of pending transactions.
    pub fn pending(&self) -> usize {
        self.pool.len()
    }

    /// The encoded bytes of the pending transactions.
    pub fn pending_bytes(&self) -> usize {
        self.pool_bytes
    }

    /// The pending transactions, in the order they will be included.
    pub fn pending_txs(&self) -> impl Iterator<Item = &Transaction<A::Payload>> + '_ {
        self.pool.iter().map(|e| e.tx.transaction())
    }

    /// The nonce `account`'s next transaction must carry: the state's, plus its pending
    /// transactions (those [relayed](Self::submit_relayed) by another node are not counted).
    pub fn next_nonce(&self, account: &AccountId) -> u64 {
        self.chain
            .state()
            .next_nonce_with(self.pool_writes.as_ref(), account)
    }

    /// The account `key` signs for, counting pending key rotations.
    pub fn account_of_key(&self, key: &PublicKey) -> AccountId {
        self.chain
            .state()
            .account_of_key_with(self.pool_writes.as_ref(), key)
    }

    /// Signs `payload` as `keypair` with its account's next nonce (counting pending
    /// transactions); submit the result with [`submit`](Self::submit).
    pub fn sign(
        &self,
        keypair: &Keypair,
        payload: impl Into<A::Payload>,
    ) -> Transaction<A::Payload> {
        let account = self.account_of_key(&keypair.public());
        Transaction::sign(
            keypair,
            self.chain_id(),
            self.next_nonce(&account),
            payload.into(),
        )
    }

    /// [`sign`](Self::sign)s `payload` as `keypair` and [`submit`](Self::submit)s it.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    pub fn sign_and_submit(
        &mut self,
        keypair: &Keypair,
        payload: impl Into<A::Payload>,
    ) -> Result<Accepted<A>, Refusal<A>> {
        let tx = self.sign(keypair, payload);
        self.submit(tx)
    }

    /// The timestamp the next block gets: `max(clock, parent's time, median time past + 1)`.
    pub fn next_block_time(&self) -> u64 {
        let tip = self.chain.tip_header();
        let lowest = (tip.height + 1).saturating_sub(MEDIAN_SPAN);
        let mut times: Vec<u64> = (lowest..=tip.height)
            .filter_map(|h| self.chain.header_at(h).map(|h| h.timestamp))
            .collect();
        times.sort_unstable();
        let median = times.get(times.len() / 2).copied().unwrap_or(tip.timestamp);
        self.clock
            .now()
            .max(tip.timestamp)
            .max(median.saturating_add(1))
    }

    /// Where transaction `id` stands: pending, included (in a recent block), refused (recently)
    /// or `None` if the ledger does not know it (or has forgotten it: see
    /// [`LedgerBuilder::max_statuses`]).
    pub fn status(&self, id: &TxId) -> Option<TxStatus<A>> {
        if self.pool_ids.contains(id) {
            return Some(TxStatus::Pending);
        }
        self.statuses.get(id).cloned()
    }

    /// A channel that receives every later [`LedgerEvent<A>`]. It is unbounded: read it, or drop
    /// the receiver (the ledger then stops sending to it).
    pub fn subscribe(&mut self) -> mpsc::Receiver<LedgerEvent<A>> {
        let (tx, rx) = mpsc::channel();
        self.subscribers.push(tx);
        rx
    }

    fn notify(&mut self, event: &LedgerEvent<A>) {
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }

    /// The checks that need neither the state nor the pool.
    fn stateless(&self) -> Stateless<'_> {
        Stateless {
            chain_id: self.chain_id(),
            max_len: crate::tx::MAX_TX_LEN.min(self.limits.block_bytes),
            // The chain's cache: a transaction verified here is not verified again when it is
            // put in a block, nor when that block is checked and appended.
            keys: self.chain.keys(),
        }
    }

    /// Refuses a transaction already pending or recently included.
    fn check_new(&self, id: TxId) -> Result<(), Refusal<A>> {
        if self.pool_ids.contains(&id)
            || matches!(self.statuses.get(&id), Some(TxStatus::Included { .. }))
        {
            return Err(Refusal::Duplicate(id));
        }
        Ok(())
    }

    /// Every check of [`submit`](Self::submit) but the pool's room.
    fn check_alone(&self, tx: &Transaction<A::Payload>) -> Checked<A> {
        let (verified, len) = self.stateless().check(tx)?;
        self.check_new(verified.id())?;
        Ok((verified, len))
    }

    /// Puts the pool's writes back into the chain's state, as pending writes, for the pool's
    /// checks; [`set_pool_aside`](Self::set_pool_aside) takes them out again before the ledger
    /// returns to its caller. Writes lost (see [`Ledger::pool_writes`]) or taken on another
    /// state are made again: each applied pending transaction is applied again, and one that no
    /// longer applies is dropped.
    fn restore_pool(&mut self) {
        let restored = match self.pool_writes.take() {
            Some(writes) => self.chain.state_mut().restore_pending(writes),
            None => self.pool.is_empty(),
        };
        if !restored {
            let time = self.next_block_time();
            let old_pool = core::mem::take(&mut self.pool);
            self.pool_ids.clear();
            self.pool_bytes = 0;
            for entry in old_pool {
                if !entry.applied {
                    self.keep_in_pool(entry);
                    continue;
                }
                match self.apply_in_pool(&entry.tx, time, true) {
                    Ok(_) => self.keep_in_pool(entry),
                    Err(reason) => self.statuses.set(entry.tx.id(), TxStatus::Refused(reason)),
                }
            }
        }
    }

    /// Takes the pool's writes out of the chain's state (see
    /// [`restore_pool`](Self::restore_pool)).
    fn set_pool_aside(&mut self) {
        let state = self.chain.state_mut();
        // A read of the disk backend that failed during the pool's checks answered as if the
        // entry were absent (the block that includes the transaction reads again); it must
        // not refuse the chain's next block.
        drop(state.take_read_failure());
        let writes = state.take_pending();
        self.pool_writes = writes.filter(|_| !self.pool.is_empty());
    }

    /// Takes `entry` into the pool (an applied one's writes are among the pool's already).
    fn keep_in_pool(&mut self, entry: PoolEntry<A>) {
        let id = entry.tx.id();
        self.pool_ids.insert(id);
        self.pool_bytes += entry.len;
        self.pool.push(entry);
        self.statuses.forget(&id);
    }

    /// [`apply_in_pool`](Self::apply_in_pool) at the next block's time, the pool's writes put
    /// back for it and taken out again.
    fn apply_to_pool(
        &mut self,
        tx: &VerifiedTx<A::Payload>,
        keep: bool,
    ) -> Result<Accepted<A>, Refusal<A>> {
        self.restore_pool();
        let time = self.next_block_time();
        let result = self.apply_in_pool(tx, time, keep);
        self.set_pool_aside();
        result
    }

    /// Applies `tx` on the chain's state after the pending transactions (whose writes are
    /// back: see [`restore_pool`](Self::restore_pool)), as of the next block at `time`; keeps
    /// its writes if `keep`.
    fn apply_in_pool(
        &mut self,
        tx: &VerifiedTx<A::Payload>,
        time: u64,
        keep: bool,
    ) -> Result<Accepted<A>, Refusal<A>> {
        let height = self.chain.height() + 1;
        let index = u32::try_from(self.pool.len()).unwrap_or(u32::MAX);
        let chain_id = self.chain_id();
        let events = self.chain.state_mut().apply_pending(
            chain_id,
            height,
            time,
            index,
            tx,
            keep,
            A::apply,
        )?;
        Ok(Accepted {
            id: tx.id(),
            created: created_by::<A>(&events),
            events,
        })
    }

    /// Checks `tx` against the state with every pending transaction applied (but those
    /// [relayed](Self::submit_relayed) by another node), and adds it to the pool if it applies.
    ///
    /// # Errors
    ///
    /// [`Refusal<A>`] saying why; the pool is then unchanged. A refused transaction's status is
    /// [`TxStatus::Refused`] (unless it is a duplicate: the original's status stands).
    pub fn submit(&mut self, tx: Transaction<A::Payload>) -> Result<Accepted<A>, Refusal<A>> {
        let result = self.admit(&tx);
        if let Err(reason) = &result {
            self.record_refusal(tx.id(), reason);
        }
        result
    }

    fn admit(&mut self, tx: &Transaction<A::Payload>) -> Result<Accepted<A>, Refusal<A>> {
        let checked = self.check_alone(tx)?;
        self.restore_pool();
        let time = self.next_block_time();
        let result = self.add_checked(checked, time);
        self.set_pool_aside();
        result
    }

    /// Adds a transaction that passed the stateless and duplicate checks, if the pool has room
    /// and it applies at `time` (the pool's writes are back: see
    /// [`restore_pool`](Self::restore_pool)).
    fn add_checked(
        &mut self,
        (verified, len): (VerifiedTx<A::Payload>, usize),
        time: u64,
    ) -> Result<Accepted<A>, Refusal<A>> {
        self.check_room(len)?;
        let accepted = self.apply_in_pool(&verified, time, true)?;
        self.keep_in_pool(PoolEntry {
            tx: verified,
            len,
            applied: true,
        });
        Ok(accepted)
    }

    /// Refuses a relayed transaction whose nonce its account has passed (on the chain, or
    /// with the pool's writes if they are back): it can never apply. A replay of an included
    /// transaction is one.
    fn check_nonce_not_passed(&self, tx: &VerifiedTx<A::Payload>) -> Result<(), Refusal<A>> {
        let state = self.chain.state();
        let account = state.account_of_key(&tx.signer());
        let expected = state.next_nonce(&account);
        let found = tx.body().nonce;
        if found < expected {
            return Err(Refusal::State(StateError::BadNonce {
                account,
                expected,
                found,
            }));
        }
        Ok(())
    }

    /// Refuses a transaction of `len` encoded bytes if the pool has no room for it.
    fn check_room(&self, len: usize) -> Result<(), Refusal<A>> {
        if self.pool.len() >= self.limits.pool_txs {
            return Err(Refusal::PoolFull {
                what: "transactions",
                max: self.limits.pool_txs,
            });
        }
        if self.pool_bytes + len > self.limits.pool_bytes {
            return Err(Refusal::PoolFull {
                what: "bytes",
                max: self.limits.pool_bytes,
            });
        }
        Ok(())
    }

    /// Records why transaction `id` was refused (a duplicate keeps the original's status).
    fn record_refusal(&mut self, id: TxId, reason: &Refusal<A>) {
        if !matches!(reason, Refusal::Duplicate(_)) {
            self.statuses.set(id, TxStatus::Refused(reason.clone()));
        }
    }

    /// [`submit`](Self::submit)s each of `txs` in order, answering each; the signatures are
    /// checked first, all at once (on all cores with the `parallel` feature). For bursts: the
    /// answers are exactly those of submitting one at a time.
    pub fn submit_all(
        &mut self,
        txs: Vec<Transaction<A::Payload>>,
    ) -> Vec<Result<Accepted<A>, Refusal<A>>> {
        let checks = self.stateless().check_all(txs);
        self.restore_pool();
        let time = self.next_block_time();
        let answers = checks
            .into_iter()
            .map(|(id, check)| {
                let result = check.and_then(|checked| {
                    self.check_new(id)?;
                    self.add_checked(checked, time)
                });
                if let Err(reason) = &result {
                    self.record_refusal(id, reason);
                }
                result
            })
            .collect();
        self.set_pool_aside();
        answers
    }

    /// Takes transactions that another node of the network admitted and relayed to this one:
    /// each is checked as [`submit`](Self::submit) checks it but for the state (size, chain id
    /// and signature, all signatures at once; duplicates; the pool's room) and kept pending
    /// without being applied to the pool's state. The block that includes one applies it; a
    /// block built from the pool leaves out one that does not apply then, and the pool drops
    /// it ([`produce_block_with`](Self::produce_block_with) does; an engine that builds with
    /// [`propose`](Self::propose) or [`build_template`](Self::build_template) calls
    /// [`drop_rejected`](Self::drop_rejected)). One whose nonce its account has passed can never
    /// apply and is refused here, and dropped after a block that passes it.
    ///
    /// The pool's later answers do not count these transactions: one resting on a relayed
    /// transaction still pending (its account's next nonce, an operation on what it creates) is
    /// refused until a block includes it. For a network where each transaction is applied on
    /// the node its client submitted it to: applying it again on every other node is most of
    /// what a pool costs.
    pub fn submit_relayed(
        &mut self,
        txs: Vec<Transaction<A::Payload>>,
    ) -> Vec<Result<TxId, Refusal<A>>> {
        let checks = self.stateless().check_all(txs);
        checks
            .into_iter()
            .map(|(id, check)| {
                let result = check.and_then(|(verified, len)| {
                    self.check_new(id)?;
                    self.check_nonce_not_passed(&verified)?;
                    self.check_room(len)?;
                    self.keep_in_pool(PoolEntry {
                        tx: verified,
                        len,
                        applied: false,
                    });
                    Ok(id)
                });
                if let Err(reason) = &result {
                    self.record_refusal(id, reason);
                }
                result
            })
            .collect()
    }

    /// Drops the relayed transactions ([`submit_relayed`](Self::submit_relayed)) that a block
    /// built from the pool left out because they fail against the state (as
    /// [`BlockTemplate::rejected`] lists them), recording the reason as their status; for
    /// engines that build their blocks with [`build_template`](Self::build_template) or
    /// [`propose`](Self::propose). The pool's own transactions stay: they are checked again
    /// after the next block, and may have failed only in that block's context (after a
    /// transaction the engine skipped, say). Transactions not pending are ignored.
    pub fn drop_rejected(&mut self, rejected: &[Rejected<A>]) {
        let reasons: HashMap<TxId, &StateError<A::Error>> = rejected
            .iter()
            .map(|(tx, reason)| (tx.id(), reason))
            .filter(|(id, _)| self.pool_ids.contains(id))
            .collect();
        if reasons.is_empty() {
            return;
        }
        let mut dropped = Vec::new();
        self.pool.retain(|e| {
            let drop = !e.applied && reasons.contains_key(&e.tx.id());
            if drop {
                dropped.push((e.tx.id(), e.len));
            }
            !drop
        });
        for (id, len) in dropped {
            self.pool_bytes -= len;
            self.pool_ids.remove(&id);
            if let Some(reason) = reasons.get(&id) {
                let refusal = Refusal::State((*reason).clone());
                self.statuses.set(id, TxStatus::Refused(refusal));
            }
        }
    }

    /// Whether [`submit`](Self::submit) would accept `tx` now, and what it would do; nothing
    /// is added.
    ///
    /// # Errors
    ///
    /// The [`Refusal<A>`] `submit` would answer (but for a full pool).
    pub fn dry_run(&mut self, tx: &Transaction<A::Payload>) -> Result<Accepted<A>, Refusal<A>> {
        let (verified, _) = self.check_alone(tx)?;
        self.apply_to_pool(&verified, false)
    }

    /// Whether `signer` could do `payload` now, after the pending transactions, and what it
    /// would do — without a signature: for asking before signing (the signer's next nonce is
    /// used). Nothing is added.
    ///
    /// The ids in the answer derive from an unsigned transaction: the signed one creates the
    /// same kinds of objects under other ids (see [`dry_run`](Self::dry_run) for exact ids).
    ///
    /// # Errors
    ///
    /// [`Refusal::Tx`] for an invalid or weak key, [`Refusal::State`] with the chain's reason.
    pub fn dry_run_op(
        &mut self,
        signer: &PublicKey,
        payload: impl Into<A::Payload>,
    ) -> Result<Accepted<A>, Refusal<A>> {
        signer.verifying_key()?;
        let account = self.account_of_key(signer);
        let tx = Transaction {
            body: TxBody {
                chain_id: self.chain_id(),
                signer: *signer,
                nonce: self.next_nonce(&account),
                payload: payload.into(),
            },
            signature: Signature::from_bytes([0; 64]),
        };
        // Never leaves this function: applied after the pool and rolled back.
        let unsigned = VerifiedTx::new_unchecked(tx);
        self.apply_to_pool(&unsigned, false)
    }

    /// Builds a block of `txs` on the tip at `timestamp`, as
    /// [`Chain::build_template`] does, without touching the pool: for engines that choose the
    /// transactions themselves (from [`pending_txs`](Self::pending_txs)) or check a peer's
    /// proposed block.
    ///
    /// # Errors
    ///
    /// As [`Chain::build_template`].
    pub fn build_template(
        &mut self,
        txs: Vec<Transaction<A::Payload>>,
        timestamp: u64,
    ) -> ChainResult<BlockTemplate<A::Payload, A::Error>, A> {
        self.chain.build_template(txs, timestamp)
    }

    /// The next block, for engines that seal elsewhere: the longest run of pending
    /// transactions that fits in a block (by count and bytes), applied on the tip at
    /// [`next_block_time`](Self::next_block_time). Seal [`Proposal::template`] and hand the
    /// block to [`append`](Self::append). The pool is unchanged.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Chain`] if the template cannot be built.
    pub fn propose(&mut self) -> Result<Proposal<A>, LedgerError<A>> {
        let mut count = 0;
        let mut bytes = 0;
        for e in &self.pool {
            if count == self.limits.block_txs || bytes + e.len > self.limits.block_bytes {
                break;
            }
            count += 1;
            bytes += e.len;
        }
        let txs: Vec<VerifiedTx<A::Payload>> =
            self.pool[..count].iter().map(|e| e.tx.clone()).collect();
        let time = self.next_block_time();
        let (template, failures) = self.chain.template_verified(txs, time)?;
        let left_out = failures
            .into_iter()
            .map(|f| LeftOut {
                id: f.tx_id,
                reason: Refusal::State(f.error),
            })
            .collect();
        Ok(Proposal { template, left_out })
    }

    /// Produces the next block: [`propose`](Self::propose)s it, seals it with `sealer`,
    /// appends it, and reports what each transaction did. Pending transactions that do not fit
    /// stay pending for the next block; those that fail are dropped and reported in
    /// [`BlockReport::left_out`]. With an empty pool the block is empty (time still advances).
    ///
    /// # Errors
    ///
    /// [`LedgerError::Chain`] if the block cannot be built, sealed or appended; the pool and
    /// the chain are then unchanged.
    pub fn produce_block_with(
        &mut self,
        sealer: &mut impl Sealer<C, A>,
    ) -> Result<Produced<C::Seal, A>, LedgerError<A>> {
        let Proposal { template, left_out } = self.propose()?;
        let block = sealer.seal(&self.chain, template)?;
        let hash = block.hash();
        let update = self.append_inner(block.clone(), left_out)?;
        let report = update
            .applied
            .into_iter()
            .last()
            .ok_or(LedgerError::NotOnTip(hash))?;
        Ok(Produced { block, report })
    }

    /// Appends a block sealed elsewhere (agreed by a committee, or received from a peer):
    /// validates it in full, updates the pool (included transactions leave it; after a
    /// reorganisation the rolled-back ones come back; those that no longer apply are dropped)
    /// and notifies subscribers.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Chain`] naming what is wrong with the block; the ledger is unchanged.
    pub fn append(&mut self, block: ChainBlock<C, A>) -> Result<ChainUpdate<A>, LedgerError<A>> {
        self.append_inner(block, Vec::new())
    }

    fn append_inner(
        &mut self,
        block: ChainBlock<C, A>,
        mut left_out: Vec<LeftOut<A>>,
    ) -> Result<ChainUpdate<A>, LedgerError<A>> {
        let appended = self.chain.append(block)?;
        if appended.applied.is_empty() {
            return Ok(ChainUpdate::default());
        }
        // The pool's writes were made on the old tip: they go, and the pool is checked again
        // on the new one below.
        self.pool_writes = None;
        let mut reverted_txs: Vec<VerifiedTx<A::Payload>> = Vec::new();
        let crate::chain::Appended { reverted, applied } = appended;
        for reverted in &reverted {
            if let Ok(Some(b)) = self.chain.block(reverted) {
                // Blocks the chain validated: their signatures hold.
                let txs: Vec<VerifiedTx<A::Payload>> = b
                    .txs
                    .into_inner()
                    .into_iter()
                    .map(VerifiedTx::new_unchecked)
                    .collect();
                reverted_txs.splice(0..0, txs);
            }
        }
        let mut included: HashSet<TxId> = HashSet::new();
        let mut reports = Vec::with_capacity(applied.len());
        for applied in applied {
            let timestamp = self.chain.header(&applied.hash).map_or(0, |h| h.timestamp);
            let mut outcomes = Vec::with_capacity(applied.events.len());
            for (i, (id, events)) in applied.events.into_iter().enumerate() {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                included.insert(id);
                self.statuses.set(
                    id,
                    TxStatus::Included {
                        block: applied.hash,
                        height: applied.height,
                        index,
                    },
                );
                outcomes.push(TxOutcome {
                    id,
                    index,
                    created: created_by::<A>(&events),
                    events,
                });
            }
            reports.push(BlockReport {
                hash: applied.hash,
                height: applied.height,
                timestamp,
                txs: outcomes,
                left_out: Vec::new(),
            });
        }
        // Everything not included goes through the checks again, in order: rolled-back
        // transactions first (they were accepted earlier), then the pool.
        left_out.retain(|l| !included.contains(&l.id));
        let known_left_out: HashSet<TxId> = left_out.iter().map(|l| l.id).collect();
        let time = self.next_block_time();
        let old_pool = core::mem::take(&mut self.pool);
        // The pool's ids stay, but for those that leave it: included now, or dropped below.
        for id in &included {
            self.pool_ids.remove(id);
        }
        self.pool_bytes = 0;
        // Each candidate, and whether it was pending (its id and status are the pool's).
        let candidates = reverted_txs
            .into_iter()
            .filter(|tx| !included.contains(&tx.id()))
            .map(|tx| {
                let len = tx.transaction().encode().len();
                let entry = PoolEntry {
                    tx,
                    len,
                    applied: true,
                };
                (entry, false)
            })
            .chain(
                old_pool
                    .into_iter()
                    .filter(|e| !included.contains(&e.tx.id()))
                    .map(|e| (e, true)),
            );
        for (entry, was_pending) in candidates {
            let id = entry.tx.id();
            if !was_pending && self.pool_ids.contains(&id) {
                // Rolled back, and relayed again since: the pending copy stands.
                continue;
            }
            if known_left_out.contains(&id) {
                self.pool_ids.remove(&id);
                continue;
            }
            let max_len = self.stateless().max_len;
            let refusal = if entry.len > max_len {
                Some(Refusal::TooLarge {
                    len: entry.len,
                    max: max_len,
                })
            } else if self.pool.len() >= self.limits.pool_txs {
                Some(Refusal::PoolFull {
                    what: "transactions",
                    max: self.limits.pool_txs,
                })
            } else if self.pool_bytes + entry.len > self.limits.pool_bytes {
                Some(Refusal::PoolFull {
                    what: "bytes",
                    max: self.limits.pool_bytes,
                })
            } else if entry.applied {
                self.apply_in_pool(&entry.tx, time, true).err()
            } else {
                self.check_nonce_not_passed(&entry.tx).err()
            };
            match refusal {
                None if was_pending => {
                    self.pool_bytes += entry.len;
                    self.pool.push(entry);
                }
                None => self.keep_in_pool(entry),
                Some(reason) => {
                    self.pool_ids.remove(&id);
                    left_out.push(LeftOut { id, reason });
                }
            }
        }
        self.set_pool_aside();
        for l in &left_out {
            self.statuses.set(l.id, TxStatus::Refused(l.reason.clone()));
        }
        if let Some(last) = reports.last_mut() {
            last.left_out = left_out;
        }
        let update = ChainUpdate {
            reverted,
            applied: reports.into_iter().map(Arc::new).collect(),
        };
        if !self.subscribers.is_empty() {
            let tip_height = self.chain.height();
            let first_applied = update.applied.first().map_or(tip_height, |r| r.height);
            for (i, hash) in update.reverted.iter().enumerate() {
                // Reverted blocks were the old main chain above the fork, tip first.
                let height =
                    (first_applied + update.reverted.len() as u64).saturating_sub(1 + i as u64);
                self.notify(&LedgerEvent::Reverted {
                    hash: *hash,
                    height,
                });
            }
            for report in &update.applied {
                self.notify(&LedgerEvent::Applied(Arc::clone(report)));
            }
        }
        Ok(update)
    }
}

/// Proof-of-Work: the ledger mines its blocks itself.
impl<A: Application> Ledger<ProofOfWork, A> {
    /// Produces and mines the next block on all cores (see
    /// [`produce_block_with`](Self::produce_block_with)).
    ///
    /// # Errors
    ///
    /// As [`produce_block_with`](Self::produce_block_with).
    pub fn produce_block(&mut self) -> Result<Produced<PowSeal, A>, LedgerError<A>> {
        let never = AtomicBool::new(false);
        self.produce_block_with(&mut |chain: &Chain<ProofOfWork, A>, template| {
            chain.seal_pow(template, &never)?.ok_or_else(|| {
                ChainError::Consensus(ConsensusError::BadSeal(
                    "the miner stopped without a solution".into(),
                ))
            })
        })
    }
}
