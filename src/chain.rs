//! The chain: genesis, validation and append, fork choice, reorganisation and replay.
//!
//! The chain is generic over its consensus engine `C` and its [`Application`] `A`; the crate
//! root names the MedRec instantiation ([`medledger::ChainBuilder`](crate::ChainBuilder)).
//!
//! ```
//! use medledger::{ChainBuilder, Payload, Transaction};
//! use medledger::pow::ProofOfWork;
//! use medledger::tx::Keypair;
//! use medledger::hash::Digest;
//!
//! let mut chain = ChainBuilder::new("example", ProofOfWork::regtest()).genesis_time(1_700_000_000).build()?;
//! let alice = Keypair::from_seed(&[1; 32]);
//! let tx = Transaction::sign(&alice, chain.chain_id(), 0, Payload::Data { record: Digest::from_bytes([7; 32]) });
//! let block = chain.mine(vec![tx], 1_700_000_600)?;
//! let appended = chain.append(block)?;
//! assert_eq!(chain.height(), 1);
//! assert_eq!(appended.applied.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::app::Application;
use crate::block::{Block, CheckedBlock, Header, StructureError, HEADER_VERSION, MAX_BLOCK_TXS};
use crate::codec::{BoundedVec, DecodeError};
use crate::consensus::{Ancestors, Consensus, ConsensusError, Finality, Work};
use crate::hash::{domain, BlockHash, ChainId, MerkleRoot, StateRoot, TxId};
use crate::merkle::merkle_root;
use crate::smt::{StateProof, StateTree};
use crate::state::snapshot::{SnapshotChunk, SnapshotError, SnapshotImport, MAX_CHUNK_ENTRIES};
use crate::state::{BlockUndo, Executed, SetAside, State, StateBackend, StateError, TxFailure};
use crate::store::{MemoryStore, Store, StoreError, StoredCheckpoint};
use crate::tx::{self, KeyCache, Transaction, TxError, VerifiedTx};

/// The block type of a chain whose engine is `C` and whose application is `A`.
pub type ChainBlock<C, A> = Block<<C as Consensus>::Seal, <A as Application>::Payload>;

/// A checked block of a chain whose engine is `C` and whose application is `A`.
type CheckedChainBlock<C, A> = CheckedBlock<<C as Consensus>::Seal, <A as Application>::Payload>;

/// A block template and the transactions left out of it, with their positions and reasons.
pub(crate) type TemplateWithFailures<A> = (
    BlockTemplate<<A as Application>::Payload, <A as Application>::Error>,
    Vec<TxFailure<<A as Application>::Error>>,
);

/// The result of a chain operation: what the chain of application `A` refused, or `T`.
pub type ChainResult<T, A> = Result<T, ChainError<<A as Application>::Error>>;

/// The default limit on how many blocks a reorganisation may roll back.
pub const DEFAULT_MAX_REORG_DEPTH: u64 = 100;

/// A source of the current time (Unix seconds), used only to refuse blocks from the future.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that reads what it was last set to (for tests and simulations).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    /// A clock reading `now`.
    pub fn new(now: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(now))
    }
    /// Sets the time.
    pub fn set(&self, now: u64) {
        self.0.store(now, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Why the chain refused a block or an operation. The chain and state are unchanged.
///
/// `E` is the application's refusal ([`Application::Error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError<E: std::error::Error + 'static> {
    /// The bytes are not a block.
    #[error("undecodable block: {0}")]
    Decode(#[from] DecodeError),
    /// The block is malformed or a transaction's signature fails.
    #[error("invalid block structure: {0}")]
    Structure(#[from] StructureError),
    /// The consensus engine refused the header.
    #[error("consensus: {0}")]
    Consensus(#[from] ConsensusError),
    /// The block is already known.
    #[error("block {0} is already known")]
    AlreadyKnown(BlockHash),
    /// The block was found invalid before (it or an ancestor).
    #[error("block {0} is known to be invalid")]
    KnownInvalid(BlockHash),
    /// The parent is unknown.
    #[error("parent {0} is unknown")]
    UnknownParent(BlockHash),
    /// The height is not the parent's plus one.
    #[error("height {found}, expected {expected}")]
    BadHeight {
        /// Parent height + 1.
        expected: u64,
        /// Height in the header.
        found: u64,
    },
    /// The timestamp is earlier than the parent's: block times never go backwards, so that no
    /// time check (a grant's period, a break-glass window) can be re-run at an earlier time.
    #[error("timestamp {found} is earlier than the parent's {parent}")]
    TimestampBeforeParent {
        /// The parent's timestamp.
        parent: u64,
        /// Timestamp in the header.
        found: u64,
    },
    /// A transaction fails against the state.
    #[error("block {block}: {failure}")]
    Tx {
        /// The block.
        block: BlockHash,
        /// Which transaction and why.
        #[source]
        failure: Box<TxFailure<E>>,
    },
    /// The header's state root differs from the state the transactions produce.
    #[error("block {block}: header state root {header} differs from computed {computed}")]
    StateRoot {
        /// The block.
        block: BlockHash,
        /// Root in the header.
        header: StateRoot,
        /// Root computed by applying the transactions.
        computed: StateRoot,
    },
    /// Following the heavier branch would roll back more blocks than allowed.
    #[error("reorganisation of depth {depth} exceeds the limit of {max}")]
    ReorgTooDeep {
        /// Blocks that would be rolled back.
        depth: u64,
        /// The configured limit.
        max: u64,
    },
    /// The block's branch leaves the main chain below its last final block
    /// ([`Chain::final_height`]): following it would revert a final block, whatever its weight
    /// (engines with [`Finality::Instant`]). Refused before
    /// the engine checks the seal; the block is not marked invalid.
    #[error("block {block} conflicts with final block {finalised} at height {height}")]
    ConflictsWithFinal {
        /// The height of the first final block the branch would replace.
        height: u64,
        /// That final block.
        finalised: BlockHash,
        /// The refused block.
        block: BlockHash,
    },
    /// A transaction is invalid on its own (block building).
    #[error("transaction: {0}")]
    Transaction(#[from] TxError),
    /// Transactions given to [`mine`](Chain::mine) fail against the state: no block was built.
    /// Each failure names the transaction's position in the list given, its id and why.
    #[error("{} transaction(s) fail against the state, the first: {}", .0.len(), FirstFailure(.0))]
    Refused(Vec<TxFailure<E>>),
    /// More transactions than a block may hold were given to build one block.
    #[error("{count} transactions do not fit in one block (at most {max})")]
    TooManyTxs {
        /// Transactions given.
        count: usize,
        /// [`MAX_BLOCK_TXS`].
        max: usize,
    },
    /// The storage backend failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The store holds another chain.
    #[error("the store holds chain with genesis {found}, not {expected}")]
    GenesisMismatch {
        /// This configuration's genesis.
        expected: BlockHash,
        /// Genesis in the store.
        found: BlockHash,
    },
    /// The configuration is invalid.
    #[error("invalid chain configuration: {0}")]
    Config(String),
    /// A snapshot could not be exported, or its state does not match the header it is opened
    /// at.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The store holds a chain that was opened from a snapshot at `height` (its main chain has
    /// no blocks up to there), and neither the state directory nor a checkpoint of the store
    /// holds a state that reopens it with the headers it keeps: the blocks to replay are not
    /// there. Open it from a snapshot again, on a new store.
    #[error(
        "the store's chain was opened from a snapshot at height {height}, whose blocks it does \
         not hold to replay, and no state reopens it: {reason}"
    )]
    SnapshotStateMissing {
        /// The snapshot's height (below it, the store's main chain has no blocks).
        height: u64,
        /// Why neither the state directory nor the store's checkpoint reopened it.
        reason: String,
    },
    /// The header at a snapshot's height carries another state root than the snapshot's.
    #[error("header at height {height} carries state root {header}, the snapshot {snapshot}")]
    SnapshotRoot {
        /// The snapshot's height.
        height: u64,
        /// The root in the header.
        header: StateRoot,
        /// The snapshot state's root.
        snapshot: StateRoot,
    },
}

/// Shows the first failure of a list (for [`ChainError::Refused`]'s message).
struct FirstFailure<'a, E>(&'a [TxFailure<E>]);

impl<E: core::fmt::Display> core::fmt::Display for FirstFailure<'_, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0.first() {
            Some(failure) => core::fmt::Display::fmt(failure, f),
            None => f.write_str("none"),
        }
    }
}

/// What happened to the main chain, for embedders to notify their users. `Ev` is the
/// application's event ([`Application::Event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedBlock<Ev> {
    /// The block.
    pub hash: BlockHash,
    /// Its height.
    pub height: u64,
    /// Events of each transaction, in block order.
    pub events: Vec<(TxId, Vec<Ev>)>,
}

/// The result of a successful [`Chain::append`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended<Ev> {
    /// Main-chain blocks rolled back (tip first), if the chain reorganised.
    pub reverted: Vec<BlockHash>,
    /// Blocks newly applied to the main chain, in height order.
    pub applied: Vec<AppliedBlock<Ev>>,
}

impl<Ev> Default for Appended<Ev> {
    fn default() -> Self {
        Self {
            reverted: Vec::new(),
            applied: Vec::new(),
        }
    }
}

impl<Ev> Appended<Ev> {
    /// Whether the block went to a side branch (valid structure, not heavier).
    pub fn is_side_branch(&self) -> bool {
        self.applied.is_empty()
    }
}

/// A block ready to be sealed: everything but the seal. `P` is the application's payload, `E`
/// its refusal.
#[derive(Clone, Debug)]
pub struct BlockTemplate<P, E> {
    /// Height.
    pub height: u64,
    /// Parent hash.
    pub parent: BlockHash,
    /// Merkle root of the included transactions.
    pub tx_root: MerkleRoot,
    /// State root after the included transactions.
    pub state_root: StateRoot,
    /// Timestamp.
    pub timestamp: u64,
    /// Included transactions.
    pub txs: Vec<Transaction<P>>,
    /// Transactions left out because they fail against the state, with the reason.
    pub rejected: Vec<(Transaction<P>, StateError<E>)>,
}

/// The transaction limit of one block, checked before any work is done.
fn check_tx_count<E: std::error::Error>(count: usize) -> Result<(), ChainError<E>> {
    if count > MAX_BLOCK_TXS {
        return Err(ChainError::TooManyTxs {
            count,
            max: MAX_BLOCK_TXS,
        });
    }
    Ok(())
}

impl<P: crate::tx::AppPayload, E: std::error::Error> BlockTemplate<P, E> {
    /// The header with `seal`.
    pub fn header<S>(&self, seal: S) -> Header<S> {
        Header {
            version: HEADER_VERSION,
            height: self.height,
            parent: self.parent,
            tx_root: self.tx_root,
            tx_count: self.txs.len() as u32,
            state_root: self.state_root,
            timestamp: self.timestamp,
            seal,
        }
    }

    /// The block with `seal`.
    ///
    /// # Errors
    ///
    /// [`ChainError::TooManyTxs`] if the template holds more than [`MAX_BLOCK_TXS`]
    /// transactions (templates from [`Chain::build_template`] never do).
    pub fn seal<S>(self, seal: S) -> Result<Block<S, P>, ChainError<E>> {
        let header = self.header(seal);
        let count = self.txs.len();
        let txs = BoundedVec::try_from(self.txs).map_err(|_| ChainError::TooManyTxs {
            count,
            max: MAX_BLOCK_TXS,
        })?;
        Ok(Block { header, txs })
    }
}

struct Entry<S> {
    header: Header<S>,
    total_work: Work,
}

/// Refuses a block `timestamp` earlier than its parent's: whatever the consensus engine allows
/// (Proof-of-Work only asks for more than the median of the last eleven blocks), time on a
/// branch never goes backwards, so every time check of the state runs at the latest time seen.
fn check_not_before_parent<E: std::error::Error>(
    parent: u64,
    timestamp: u64,
) -> Result<(), ChainError<E>> {
    if timestamp < parent {
        return Err(ChainError::TimestampBeforeParent {
            parent,
            found: timestamp,
        });
    }
    Ok(())
}

/// What the header stage of validation found.
struct HeaderVerdict {
    hash: BlockHash,
    parent_work: Work,
    /// The work the block adds to its branch.
    work: Work,
}

/// Configures and builds a [`Chain`].
pub struct ChainBuilder<C: Consensus, A: Application> {
    name: String,
    engine: C,
    genesis_time: u64,
    store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    max_reorg_depth: u64,
    checkpoint_every: u64,
    state_backend: StateBackend,
    genesis: A::Genesis,
}

impl<C: Consensus, A: Application> ChainBuilder<C, A>
where
    A::Genesis: Default,
{
    /// A chain called `name` (its id is derived from the name) run by `engine`, with the
    /// application's default genesis configuration.
    pub fn new(name: impl Into<String>, engine: C) -> Self {
        Self::with_app(name, engine, A::Genesis::default())
    }
}

impl<C: Consensus, A: Application> ChainBuilder<C, A> {
    /// A chain called `name` (its id is derived from the name) run by `engine`, whose genesis
    /// state the application builds from `genesis`.
    pub fn with_app(name: impl Into<String>, engine: C, genesis: A::Genesis) -> Self {
        Self {
            name: name.into(),
            engine,
            genesis_time: 0,
            store: Box::new(MemoryStore::new()),
            clock: Arc::new(SystemClock),
            max_reorg_depth: DEFAULT_MAX_REORG_DEPTH,
            checkpoint_every: 0,
            state_backend: StateBackend::Memory,
            genesis,
        }
    }
    /// The application's genesis configuration, to change before building.
    pub fn genesis_config_mut(&mut self) -> &mut A::Genesis {
        &mut self.genesis
    }
    /// The genesis block's timestamp.
    pub fn genesis_time(mut self, t: u64) -> Self {
        self.genesis_time = t;
        self
    }
    /// The storage backend (default: [`MemoryStore`]). If it already holds blocks of this chain,
    /// they are re-validated and the chain resumes at their best tip.
    pub fn store(mut self, store: impl Store + 'static) -> Self {
        self.store = Box::new(store);
        self
    }
    /// The storage backend, boxed (for example one taken back with [`Chain::into_store`]).
    pub fn boxed_store(mut self, store: Box<dyn Store>) -> Self {
        self.store = store;
        self
    }
    /// The clock used to refuse blocks from the future (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// How many blocks a reorganisation may roll back (default [`DEFAULT_MAX_REORG_DEPTH`]).
    pub fn max_reorg_depth(mut self, depth: u64) -> Self {
        self.max_reorg_depth = depth;
        self
    }
    /// Keeps a state checkpoint in the store every `blocks` main-chain blocks (0, the default:
    /// never), so that reopening the store replays only the blocks after the last one (see
    /// [`Chain::write_checkpoint`]).
    pub fn checkpoint_every(mut self, blocks: u64) -> Self {
        self.checkpoint_every = blocks;
        self
    }
    /// Where the state's committed entries live (default [`StateBackend::Memory`]). With
    /// `StateBackend::Disk` (feature `redb`), [`build`](Self::build) starts from the state the
    /// directory holds if it matches the stored main chain (no replay), and otherwise writes the
    /// state it starts from (genesis, or the store's checkpoint) into the directory, replacing
    /// what it held; every later block commits there (see `state::disk`).
    pub fn state_backend(mut self, backend: StateBackend) -> Self {
        self.state_backend = backend;
        self
    }
    /// Builds the chain: creates genesis, or reopens the store. If the store keeps a
    /// checkpoint ([`Store::checkpoint`]) of a block still on its main chain, the chain takes
    /// the headers up to that block from the store (checked by the engine, bodies not executed),
    /// verifies the checkpoint against that header's state root and starts from it; then (or
    /// without a usable checkpoint, from genesis) it re-validates every later stored block. A
    /// chain resumed from a checkpoint refuses reorganisations below it, as one opened from a
    /// snapshot; [`Chain::replay_state`] still replays from genesis to check it. The store of
    /// a chain opened from a snapshot ([`build_from_snapshot`](Self::build_from_snapshot))
    /// holds no blocks below it to replay: it reopens from the state directory or the
    /// checkpoint only.
    ///
    /// # Errors
    ///
    /// [`ChainError::Config`] for an empty name or a genesis configuration the application
    /// refuses, [`ChainError::GenesisMismatch`] if the store holds another chain,
    /// [`ChainError::Store`] if it or the state database fails,
    /// [`ChainError::SnapshotStateMissing`] (and nothing written) for the store of a chain
    /// opened from a snapshot that no stored state reopens.
    pub fn build(self) -> ChainResult<Chain<C, A>, A> {
        let backend = self.state_backend.clone();
        let (mut chain, genesis) = self.genesis_chain()?;
        let genesis_hash = genesis.hash();
        let stored = chain.store.block_hashes()?;
        match stored.first() {
            None => {
                chain.store.put_block(&genesis_hash, &genesis.encode())?;
                chain.store.set_main_chain(0, &[genesis_hash])?;
                chain.store.sync()?;
                chain.use_backend(&backend)?;
            }
            Some(first) if *first != genesis_hash => {
                return Err(ChainError::GenesisMismatch {
                    expected: genesis_hash,
                    found: *first,
                })
            }
            Some(_) => {
                if let Err(disk) = chain.resume_from_disk(&backend)? {
                    if let Err(checkpoint) = chain.resume_from_checkpoint()? {
                        // Replaying from genesis is all that is left: refused, before anything
                        // is written, for a chain opened from a snapshot.
                        if let Some(height) = chain.bodiless_base()? {
                            return Err(ChainError::SnapshotStateMissing {
                                height,
                                reason: format!("{disk}; {checkpoint}"),
                            });
                        }
                    }
                    chain.use_backend(&backend)?;
                }
                chain.reload(&stored[1..])?;
            }
        }
        Ok(chain)
    }

    /// Builds the chain from a verified state snapshot (see [`crate::state::snapshot`]) instead
    /// of replaying blocks: `headers` are the main chain's headers from height 1 to the
    /// snapshot's height `h` (each checked by the consensus engine against its ancestors, as
    /// [`Chain::append`] checks a header; their bodies are neither needed nor checked), and
    /// `state` is the state at `h`, whose root must be the one the header at `h` carries. The
    /// chain then follows blocks from `h + 1` exactly as one that replayed every block.
    ///
    /// A chain opened this way keeps no undo data below `h`, so it refuses reorganisations
    /// past `h`; it has no state trees for heights below `h` ([`Chain::state_tree_at`]); and
    /// its store holds genesis, the headers up to `h` ([`Store::put_headers`]) and the blocks
    /// after `h`, so [`Chain::replay_state`] fails on it. [`build`](Self::build) reopens that
    /// store from a state at `h` or later: the state directory's (with `StateBackend::Disk`,
    /// feature `redb`), or else a checkpoint of the store's, which this writes at `h` with the
    /// memory backend ([`Store::put_checkpoint`]; a store that keeps none, such as the SQLite
    /// store, then cannot reopen the chain: [`ChainError::SnapshotStateMissing`]).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build); [`ChainError::Config`] if the store is not empty;
    /// the header checks of [`Chain::append`] for a header that does not extend the previous
    /// one or that the engine refuses; [`ChainError::SnapshotRoot`] if the last header's state
    /// root is not the state's.
    pub fn build_from_snapshot(
        self,
        headers: &[Header<C::Seal>],
        state: State<A::State>,
    ) -> ChainResult<Chain<C, A>, A> {
        let backend = self.state_backend.clone();
        let (mut chain, genesis) = self.genesis_chain()?;
        if !chain.store.block_hashes()?.is_empty() {
            return Err(ChainError::Config(
                "a chain opens from a snapshot only on an empty store".into(),
            ));
        }
        for header in headers {
            chain.accept_header(header)?;
        }
        let height = chain.height();
        let header_root = chain.tip_header().state_root;
        if header_root != state.root() {
            return Err(ChainError::SnapshotRoot {
                height,
                header: header_root,
                snapshot: state.root(),
            });
        }
        chain.start_from(state, height);
        chain.use_backend(&backend)?;
        // The genesis block last: a store holding no block is empty (a crash before leaves one
        // that opens from a snapshot again), one holding it must reopen with the rest.
        chain.store.put_headers(&encode_headers(headers))?;
        if matches!(backend, StateBackend::Memory) {
            chain.write_checkpoint()?;
        }
        chain.store.set_main_chain(0, &chain.main)?;
        chain.store.put_block(&genesis.hash(), &genesis.encode())?;
        chain.store.sync()?;
        Ok(chain)
    }

    /// The chain at genesis, with its genesis block, before the store is read.
    #[allow(clippy::type_complexity)]
    fn genesis_chain(self) -> ChainResult<(Chain<C, A>, ChainBlock<C, A>), A> {
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(ChainError::Config(
                "chain name must be 1 to 256 bytes".into(),
            ));
        }
        let state = genesis_state::<A>(&self.genesis, self.genesis_time)?;
        let chain_id = ChainId::from_bytes(domain::CHAIN_ID.hash(self.name.as_bytes()));
        let genesis: ChainBlock<C, A> = Block {
            header: Header {
                version: HEADER_VERSION,
                height: 0,
                // Genesis has no parent; this slot commits it to the chain id instead, so two
                // chains never share a genesis block.
                parent: BlockHash::from_bytes(chain_id.to_bytes()),
                tx_root: merkle_root(&[]),
                tx_count: 0,
                state_root: state.root(),
                timestamp: self.genesis_time,
                seal: self.engine.genesis_seal(),
            },
            txs: BoundedVec::new(),
        };
        let genesis_hash = genesis.hash();
        let mut index = HashMap::new();
        index.insert(
            genesis_hash,
            Entry {
                header: genesis.header.clone(),
                total_work: Work::ZERO,
            },
        );
        let chain = Chain {
            engine: self.engine,
            chain_id,
            name: self.name,
            store: self.store,
            clock: self.clock,
            max_reorg_depth: self.max_reorg_depth,
            checkpoint_every: self.checkpoint_every,
            index,
            invalid: HashSet::new(),
            main: vec![genesis_hash],
            trees: vec![state.tree().clone()],
            tree_base: 0,
            undo: VecDeque::new(),
            state,
            replaying: false,
            genesis: self.genesis,
            keys: KeyCache::default(),
            executed: VecDeque::new(),
        };
        Ok((chain, genesis))
    }
}

/// Whether a chain resumed from a stored state, or why not.
type Resumed = Result<(), String>;

/// The canonical encodings of `headers`, as a store keeps them ([`Store::put_headers`]).
fn encode_headers<S>(headers: &[Header<S>]) -> Vec<Vec<u8>>
where
    Header<S>: crate::codec::Canonical,
{
    headers.iter().map(crate::codec::encode).collect()
}

/// The genesis state of application `A` from `config` at `time`.
fn genesis_state<A: Application>(
    config: &A::Genesis,
    time: u64,
) -> ChainResult<State<A::State>, A> {
    let mut refused = None;
    let state = State::genesis(|app, core| {
        refused = A::genesis(config, app, core, time).err();
    });
    match refused {
        Some(why) => Err(ChainError::Config(why)),
        None => Ok(state),
    }
}

/// Executes a checked block's transactions on `state` and checks the state root its header
/// claims; on any failure the pending writes are discarded.
fn execute_block<C: Consensus, A: Application>(
    state: &mut State<A::State>,
    chain_id: ChainId,
    block: &CheckedChainBlock<C, A>,
) -> ChainResult<Executed<A::Event>, A> {
    let h = block.header();
    let executed = state.execute(
        chain_id,
        h.height,
        h.timestamp,
        block.txs(),
        false,
        A::apply,
    );
    // A state read that failed (on disk) answered "absent": the outcome is not the block's.
    if let Some(failure) = state.take_read_failure() {
        state.discard();
        return Err(ChainError::Store(failure));
    }
    let (executed, _) = executed.map_err(|failure| ChainError::Tx {
        block: block.hash(),
        failure: Box::new(failure),
    })?;
    let computed = executed.tree.root();
    if computed != h.state_root {
        state.discard();
        return Err(ChainError::StateRoot {
            block: block.hash(),
            header: h.state_root,
            computed,
        });
    }
    Ok(executed)
}

/// A chain of blocks validated by the consensus engine `C`, running the application `A`, with
/// its state.
pub struct Chain<C: Consensus, A: Application> {
    engine: C,
    chain_id: ChainId,
    name: String,
    store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    max_reorg_depth: u64,
    /// Blocks between state checkpoints (0: none).
    checkpoint_every: u64,
    index: HashMap<BlockHash, Entry<C::Seal>>,
    invalid: HashSet<BlockHash>,
    /// Main chain hashes by height.
    main: Vec<BlockHash>,
    /// State tree after each main-chain block from `tree_base` up, by height (shared
    /// structure, cheap).
    trees: Vec<StateTree>,
    /// The height of `trees[0]`: 0, or the height of the snapshot the chain was opened from.
    tree_base: u64,
    /// Undo data of the last `max_reorg_depth` main-chain blocks (oldest first).
    undo: VecDeque<BlockUndo>,
    state: State<A::State>,
    replaying: bool,
    /// The application's genesis configuration (to rebuild the genesis state on replay).
    genesis: A::Genesis,
    keys: KeyCache,
    /// The last blocks executed on the tip but not committed (templates built, proposals
    /// checked), newest last: appending one of them commits its writes instead of executing
    /// it again.
    executed: VecDeque<ExecutedBlock<A>>,
}

/// The most executed-but-uncommitted blocks a chain keeps (see [`ExecutedBlock`]).
const MAX_EXECUTED: usize = 4;

/// A block executed on the tip but not committed: what identifies it in a header, and its
/// writes set aside.
struct ExecutedBlock<A: Application> {
    height: u64,
    timestamp: u64,
    tx_root: MerkleRoot,
    writes: SetAside<A::Event>,
}

impl<A: Application> ExecutedBlock<A> {
    /// Whether `header` is of this very block: same height, time and transactions, and the
    /// state root the writes give (executing on the same state is then certain to give the
    /// same writes; the state checks that it is the same, see [`State::take_back`]).
    fn is_of<S>(&self, header: &Header<S>) -> bool {
        self.height == header.height
            && self.timestamp == header.timestamp
            && self.tx_root == header.tx_root
            && self.writes.root() == header.state_root
    }
}

impl<C: Consensus, A: Application> core::fmt::Debug for Chain<C, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Chain")
            .field("name", &self.name)
            .field("engine", &self.engine.name())
            .field("app", &A::NAME)
            .field("height", &self.height())
            .field("tip", &self.tip())
            .finish_non_exhaustive()
    }
}

/// The branch ending at a given block, as seen by the consensus engine.
struct Branch<'a, S> {
    index: &'a HashMap<BlockHash, Entry<S>>,
    main: &'a [BlockHash],
    parent: &'a Header<S>,
    parent_hash: BlockHash,
}

impl<S: serde::Serialize> Ancestors<S> for Branch<'_, S> {
    fn parent(&self) -> &Header<S> {
        self.parent
    }

    fn at_height(&self, height: u64) -> Option<&Header<S>> {
        if height > self.parent.height {
            return None;
        }
        let (mut hash, mut header) = (self.parent_hash, self.parent);
        loop {
            // Once on the main chain, jump straight to the height.
            if self.main.get(header.height as usize) == Some(&hash) {
                let h = self.main.get(height as usize)?;
                return self.index.get(h).map(|e| &e.header);
            }
            if header.height == height {
                return Some(header);
            }
            hash = header.parent;
            header = &self.index.get(&hash)?.header;
        }
    }
}

impl<C: Consensus, A: Application> Chain<C, A> {
    /// The chain id (covered by every transaction signature).
    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }
    /// The chain's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The clock the chain refuses blocks from the future by (see [`ChainBuilder::clock`]).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    /// How many blocks a reorganisation may roll back (see [`ChainBuilder::max_reorg_depth`]).
    pub fn max_reorg_depth(&self) -> u64 {
        self.max_reorg_depth
    }
    /// The height of the last final main-chain block, which the chain never reverts: the tip's
    /// for engines with [`Finality::Instant`], genesis (0) for
    /// [`Finality::Probabilistic`] ones, whose reorganisations only
    /// [`max_reorg_depth`](Self::max_reorg_depth) bounds.
    pub fn final_height(&self) -> u64 {
        match self.engine.finality() {
            Finality::Instant => self.height(),
            Finality::Probabilistic => 0,
        }
    }
    /// How many blocks a reorganisation could roll back now: the blocks whose undo data the
    /// chain keeps, `min(height, max_reorg_depth)` (a refused or failed reorganisation leaves
    /// it unchanged).
    pub fn undo_depth(&self) -> u64 {
        self.undo.len() as u64
    }
    /// Closes the chain and hands back its store (to reopen it, or inspect it).
    pub fn into_store(self) -> Box<dyn Store> {
        self.store
    }
    /// The consensus engine.
    pub fn engine(&self) -> &C {
        &self.engine
    }
    /// Height of the tip.
    pub fn height(&self) -> u64 {
        (self.main.len() - 1) as u64
    }
    /// Hash of the tip.
    pub fn tip(&self) -> BlockHash {
        *self
            .main
            .last()
            .expect("the main chain holds at least genesis")
    }
    /// Header of the tip.
    pub fn tip_header(&self) -> &Header<C::Seal> {
        &self.index[&self.tip()].header
    }
    /// Total work of the main chain.
    pub fn total_work(&self) -> Work {
        self.index[&self.tip()].total_work
    }
    /// Hash of the genesis block.
    pub fn genesis_hash(&self) -> BlockHash {
        self.main[0]
    }
    /// The main-chain block hash at `height`.
    pub fn hash_at(&self, height: u64) -> Option<BlockHash> {
        self.main.get(usize::try_from(height).ok()?).copied()
    }
    /// Any known header (main chain or side branch).
    pub fn header(&self, hash: &BlockHash) -> Option<&Header<C::Seal>> {
        self.index.get(hash).map(|e| &e.header)
    }
    /// The main-chain header at `height`.
    pub fn header_at(&self, height: u64) -> Option<&Header<C::Seal>> {
        self.header(&self.hash_at(height)?)
    }
    /// The timestamp of the main-chain block at `height`.
    pub fn time_at(&self, height: u64) -> Option<u64> {
        self.header_at(height).map(|h| h.timestamp)
    }
    /// The current state.
    pub fn state(&self) -> &State<A::State> {
        &self.state
    }
    /// The current state, for the ledger's pool, which applies its transactions there as
    /// pending writes and takes them out again ([`State::take_pending`]) before it hands the
    /// chain back: between calls of the chain the state has no pending writes.
    pub(crate) fn state_mut(&mut self) -> &mut State<A::State> {
        &mut self.state
    }
    /// The state tree after the main-chain block at `height` (for proofs "as of" that height).
    /// With the state on disk (feature `redb`), the trees of the last
    /// [`max_reorg_depth`](Self::max_reorg_depth) + 1 heights only: the database keeps the
    /// nodes the later blocks replaced for as long as they can be undone.
    pub fn state_tree_at(&self, height: u64) -> Option<&StateTree> {
        self.trees
            .get(usize::try_from(height.checked_sub(self.tree_base)?).ok()?)
    }
    /// A proof of entry `key` of table `tag` as of main-chain `height`, verifiable against that
    /// header's state root.
    pub fn prove_at<K: serde::Serialize + ?Sized>(
        &self,
        height: u64,
        tag: &str,
        key: &K,
    ) -> Option<StateProof> {
        Some(
            self.state_tree_at(height)?
                .prove(&crate::state::entry_key(tag, key)),
        )
    }
    /// Reads a stored block.
    ///
    /// # Errors
    ///
    /// [`ChainError::Store`] or [`ChainError::Decode`].
    pub fn block(&self, hash: &BlockHash) -> ChainResult<Option<ChainBlock<C, A>>, A> {
        match self.store.get_block(hash)? {
            Some(bytes) => Ok(Some(Block::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn branch(&self, parent_hash: BlockHash) -> Option<Branch<'_, C::Seal>> {
        let parent = &self.index.get(&parent_hash)?.header;
        Some(Branch {
            index: &self.index,
            main: &self.main,
            parent,
            parent_hash,
        })
    }

    /// The tip's branch, as consensus engines see it (for sealing the next block).
    pub fn tip_ancestors(&self) -> impl Ancestors<C::Seal> + '_ {
        self.branch(self.tip())
            .expect("the tip is always in the index")
    }

    /// Builds the next block on the tip from `txs`: verifies signatures, applies them to a
    /// scratch copy of the state (transactions that fail are left out and reported in
    /// [`BlockTemplate::rejected`]), and computes the roots. Seal the result with the engine.
    ///
    /// # Errors
    ///
    /// [`ChainError::TooManyTxs`] for more than [`MAX_BLOCK_TXS`] transactions (checked
    /// first), [`ChainError::TimestampBeforeParent`] if `timestamp` is earlier than the tip's
    /// (the block would be refused), [`ChainError::Transaction`] if a signature fails.
    pub fn build_template(
        &mut self,
        txs: Vec<Transaction<A::Payload>>,
        timestamp: u64,
    ) -> ChainResult<BlockTemplate<A::Payload, A::Error>, A> {
        Ok(self.template_with_failures(txs, timestamp)?.0)
    }

    /// [`build_template`](Self::build_template), also returning each left-out transaction's
    /// position in `txs`.
    pub(crate) fn template_with_failures(
        &mut self,
        txs: Vec<Transaction<A::Payload>>,
        timestamp: u64,
    ) -> ChainResult<TemplateWithFailures<A>, A> {
        check_tx_count(txs.len())?;
        check_not_before_parent(self.tip_header().timestamp, timestamp)?;
        let verified = tx::verify_batch_cached(self.chain_id, txs, &self.keys)?;
        self.template_verified(verified, timestamp)
    }

    /// Builds a template from transactions whose signatures (and chain id) were already
    /// checked; see [`build_template`](Self::build_template).
    pub(crate) fn template_verified(
        &mut self,
        verified: Vec<VerifiedTx<A::Payload>>,
        timestamp: u64,
    ) -> ChainResult<TemplateWithFailures<A>, A> {
        check_tx_count(verified.len())?;
        let height = self.height() + 1;
        let (executed, skipped) = self
            .state
            .execute(self.chain_id, height, timestamp, &verified, true, A::apply)
            // Execution that skips failures reports none; should it ever, refuse the lot.
            .map_err(|failure| ChainError::Refused(vec![failure]))?;
        let state_root = executed.tree.root();
        if let Some(failure) = self.state.take_read_failure() {
            self.state.discard();
            return Err(ChainError::Store(failure));
        }
        let writes = self.state.set_aside(executed);
        let mut skipped = skipped.into_iter().peekable();
        let mut included: Vec<VerifiedTx<A::Payload>> = Vec::with_capacity(verified.len());
        let mut rejected = Vec::new();
        let mut failures = Vec::new();
        for (i, tx) in verified.into_iter().enumerate() {
            match skipped.next_if(|(j, _)| *j == i) {
                Some((index, error)) => {
                    failures.push(TxFailure {
                        index,
                        tx_id: tx.id(),
                        error: error.clone(),
                    });
                    rejected.push((tx.into_transaction(), error));
                }
                None => included.push(tx),
            }
        }
        let ids: Vec<TxId> = included.iter().map(VerifiedTx::id).collect();
        let tx_root = merkle_root(&ids);
        if let Some(writes) = writes {
            if self.executed.len() == MAX_EXECUTED {
                self.executed.pop_front();
            }
            self.executed.push_back(ExecutedBlock {
                height,
                timestamp,
                tx_root,
                writes,
            });
        }
        let template = BlockTemplate {
            height,
            parent: self.tip(),
            tx_root,
            state_root,
            timestamp,
            txs: included
                .into_iter()
                .map(VerifiedTx::into_transaction)
                .collect(),
            rejected,
        };
        Ok((template, failures))
    }

    /// The cache of decompressed keys and verified transaction ids that every signature check
    /// of this chain goes through (the ledger's submissions too).
    pub(crate) fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// Decodes and appends a block received as bytes.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append), plus [`ChainError::Decode`].
    pub fn append_bytes(&mut self, bytes: &[u8]) -> ChainResult<Appended<A::Event>, A> {
        self.append(Block::decode(bytes)?)
    }

    /// Checks `block` as [`append`](Self::append) would, in the same order, up to but not
    /// including the state transition: the header, its parent and height, the engine's header
    /// rules, the Merkle root, the signatures and the engine's body rules. The chain is
    /// unchanged; a relay can check a block this way before passing it on.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append), but for the errors of the state transition
    /// ([`ChainError::Tx`], [`ChainError::StateRoot`], [`ChainError::ReorgTooDeep`]) and of the
    /// store.
    pub fn check_block(&self, block: &ChainBlock<C, A>) -> ChainResult<(), A> {
        self.check_header_stage(block)?;
        // The body is copied only once the header has passed.
        let checked = block
            .clone()
            .check_commitments()?
            .verify_signatures(self.chain_id, &self.keys)?;
        self.engine.verify_body(checked.header(), checked.txs())?;
        Ok(())
    }

    /// The checks that read only the header and the body's length, cheapest first: not already
    /// known or known invalid, the header's size and version, the transaction count, the parent
    /// and height, and the engine's header rules.
    fn check_header_stage(&self, block: &ChainBlock<C, A>) -> ChainResult<HeaderVerdict, A> {
        let hash = block.hash();
        if self.index.contains_key(&hash) {
            return Err(ChainError::AlreadyKnown(hash));
        }
        if self.invalid.contains(&hash) || self.invalid.contains(&block.header.parent) {
            return Err(ChainError::KnownInvalid(hash));
        }
        block.check_header_shape()?;
        let parent_hash = block.header.parent;
        let parent = self
            .index
            .get(&parent_hash)
            .ok_or(ChainError::UnknownParent(parent_hash))?;
        let expected = parent.header.height + 1;
        if block.header.height != expected {
            return Err(ChainError::BadHeight {
                expected,
                found: block.header.height,
            });
        }
        check_not_before_parent(parent.header.timestamp, block.header.timestamp)?;
        self.check_final(&block.header, hash)?;
        let branch = self.branch(parent_hash).expect("parent is indexed");
        let work = self
            .engine
            .verify_header(&block.header, &branch, self.clock.now())?;
        Ok(HeaderVerdict {
            hash,
            parent_work: parent.total_work,
            work,
        })
    }

    /// Refuses a header whose branch replaces a final block ([`Chain::final_height`]): every
    /// block of its branch at a final height must be the main chain's block there or the same
    /// block under another seal ([`Consensus::same_block`]). Walks the header's side branch
    /// only (nothing under [`Finality::Probabilistic`], where only genesis is final).
    fn check_final(&self, header: &Header<C::Seal>, hash: BlockHash) -> ChainResult<(), A> {
        let last_final = self.final_height();
        if last_final == 0 {
            return Ok(());
        }
        let (mut header, mut hash) = (header, hash);
        loop {
            if header.height <= last_final {
                let finalised = self.main[header.height as usize];
                if finalised == hash {
                    return Ok(());
                }
                let main_header = &self.index[&finalised].header;
                if !self.engine.same_block(header, main_header) {
                    return Err(ChainError::ConflictsWithFinal {
                        height: header.height,
                        finalised,
                        block: hash,
                    });
                }
            }
            if header.height == 0
                || self.main.get(header.height as usize - 1) == Some(&header.parent)
            {
                return Ok(());
            }
            // An unknown parent is refused by the caller.
            let Some(parent) = self.index.get(&header.parent) else {
                return Ok(());
            };
            hash = header.parent;
            header = &parent.header;
        }
    }

    /// Validates `block` in full and adds it: to the main chain if it extends the tip, to a side
    /// branch if its branch is not heavier, or by reorganising onto its branch if heavier.
    /// Under [`Finality::Instant`] no main-chain block is ever reverted, whatever the weights: a
    /// block whose branch leaves the main chain below the tip is refused
    /// ([`ChainError::ConflictsWithFinal`]), but for the same block under another seal
    /// ([`Consensus::same_block`]), kept on the side, and a block on such a copy of the tip,
    /// which swaps the tip's seal and extends the chain.
    ///
    /// Validation runs cheapest first, so that refusing a block costs no more than the first
    /// rule it breaks: the header's own fields (size, version, transaction count), its parent
    /// and height, whether it conflicts with a final block, the engine's header rules (timestamps and the seal: proof of work, or a
    /// committee's certificate), then the Merkle root over the transaction ids (hashing only),
    /// and only then the transactions' signatures, the engine's body rules and the state
    /// transition. A header that breaks a rule costs no signature check.
    ///
    /// # Errors
    ///
    /// [`ChainError`] naming what is wrong; the chain and state are then exactly as before.
    pub fn append(&mut self, block: ChainBlock<C, A>) -> ChainResult<Appended<A::Event>, A> {
        let HeaderVerdict {
            hash,
            parent_work,
            work,
        } = self.check_header_stage(&block)?;
        let checked = block
            .check_commitments()?
            .verify_signatures(self.chain_id, &self.keys)?;
        self.engine.verify_body(checked.header(), checked.txs())?;
        let total_work = parent_work.saturating_add(work);
        if checked.header().parent == self.tip() {
            let executed = self.execute_checked(&checked)?;
            // The block and the main chain reach the store before the state commits: after a
            // crash in between, a state on disk is a block behind the store's main chain, and
            // reopening replays that block; a state ahead of it could not be checked against
            // any stored header (and a chain opened from a snapshot could not reopen at all).
            let height = checked.header().height;
            if let Err(e) = self.store_block(&checked, total_work).and_then(|()| {
                self.main.push(hash);
                self.persist_main(height)
            }) {
                self.forget_tip_block(hash, height);
                self.state.discard();
                return Err(e);
            }
            let applied = match self.commit_checked(&checked, executed) {
                Ok(applied) => applied,
                Err(e) => {
                    self.forget_tip_block(hash, height);
                    return Err(e);
                }
            };
            self.trim_undo();
            self.scheduled_checkpoint();
            return Ok(Appended {
                reverted: Vec::new(),
                applied: vec![applied],
            });
        }
        // Under instant finality the header stage let through only a copy of a main-chain block
        // (kept on the side) or a block extending the tip through a copy of it (the seal swap),
        // whatever their weight; under probabilistic finality, the most work wins.
        let side = match self.engine.finality() {
            Finality::Instant => checked.header().height <= self.height(),
            Finality::Probabilistic => total_work <= self.total_work(),
        };
        if side {
            self.store_block(&checked, total_work)?;
            if !self.replaying {
                self.store.sync()?;
            }
            return Ok(Appended::default());
        }
        self.reorganise(checked, total_work)
    }

    /// Takes back an append of `hash` at `height` on the tip that failed after the block was
    /// indexed or put on the main chain: the block is unknown again (an append may try it
    /// again), and the store's main chain ends below it (best effort: if that fails too, the
    /// stored block is valid, and reopening replays it).
    fn forget_tip_block(&mut self, hash: BlockHash, height: u64) {
        if self.main.last() == Some(&hash) {
            self.main.pop();
        }
        self.index.remove(&hash);
        if !self.replaying && self.store.main_hash(height).ok().flatten() == Some(hash) {
            let _ = self
                .store
                .set_main_chain(height, &[])
                .and_then(|()| self.store.sync());
        }
    }

    /// Writes the main chain from `from_height` up to the tip to the store, and syncs.
    fn persist_main(&mut self, from_height: u64) -> ChainResult<(), A> {
        if !self.replaying {
            self.store
                .set_main_chain(from_height, &self.main[from_height as usize..])?;
            self.store.sync()?;
        }
        Ok(())
    }

    fn store_block(
        &mut self,
        block: &CheckedChainBlock<C, A>,
        total_work: Work,
    ) -> ChainResult<(), A> {
        if !self.replaying {
            self.store
                .put_block(&block.hash(), &block.to_block().encode())?;
        }
        self.index.insert(
            block.hash(),
            Entry {
                header: block.header().clone(),
                total_work,
            },
        );
        Ok(())
    }

    /// Moves the state (at the tip, no block pending) to `backend`.
    fn use_backend(&mut self, backend: &StateBackend) -> ChainResult<(), A> {
        // A snapshot imported on disk is there already: in the backend's directory only (its
        // settings stay those it was imported with), at the chain's height.
        #[cfg(feature = "redb")]
        if self.state.is_on_disk() {
            return match backend {
                StateBackend::Disk(config) if self.state.is_in(config) => {
                    let height = self.height();
                    if self.state.disk_height() != Some(height) {
                        return Err(ChainError::Config(format!(
                            "the state on disk is at height {:?}, the chain at {height}",
                            self.state.disk_height()
                        )));
                    }
                    self.state
                        .set_undo_blocks(self.max_reorg_depth.saturating_add(1));
                    Ok(())
                }
                _ => Err(ChainError::Config(
                    "the state is in another state database than the chain's backend names \
                     (build the chain with the directory the snapshot was imported to)"
                        .into(),
                )),
            };
        }
        match backend {
            StateBackend::Memory => Ok(()),
            #[cfg(feature = "redb")]
            StateBackend::Disk(config) => self
                .state
                .move_to_disk(
                    config,
                    self.height(),
                    self.max_reorg_depth.saturating_add(1),
                )
                .map_err(|e| ChainError::Store(StoreError::Backend(Box::new(e)))),
        }
    }

    /// Executes a checked block on the tip's state, checks its state root, and commits it.
    fn apply_checked(
        &mut self,
        block: &CheckedChainBlock<C, A>,
    ) -> ChainResult<AppliedBlock<A::Event>, A> {
        let executed = self.execute_checked(block)?;
        self.commit_checked(block, executed)
    }

    /// Executes `block` on the tip's state, its writes left pending: a block built or checked
    /// on this state already is taken as it was executed.
    fn execute_checked(
        &mut self,
        block: &CheckedChainBlock<C, A>,
    ) -> ChainResult<Executed<A::Event>, A> {
        let h = block.header();
        let set_aside = self
            .executed
            .iter()
            .position(|e| e.is_of(h))
            .and_then(|i| self.executed.remove(i))
            .and_then(|e| self.state.take_back(e.writes));
        self.executed.clear();
        match set_aside {
            Some(executed) => Ok(executed),
            None => execute_block::<C, A>(&mut self.state, self.chain_id, block),
        }
    }

    /// Commits `block`'s execution to the state, keeping its undo data and state tree.
    fn commit_checked(
        &mut self,
        block: &CheckedChainBlock<C, A>,
        executed: Executed<A::Event>,
    ) -> ChainResult<AppliedBlock<A::Event>, A> {
        let h = block.header();
        let events = executed.events.clone();
        let undo = self.state.commit_block(executed)?;
        // On disk, the committed tree holds its lower levels by hash (read from the database
        // when reached), and the database keeps the nodes of the undo window's trees only.
        self.trees.push(self.state.tree().clone());
        if self.state.is_on_disk() {
            let keep =
                usize::try_from(self.max_reorg_depth.saturating_add(1)).unwrap_or(usize::MAX);
            if self.trees.len() > keep {
                let drop = self.trees.len() - keep;
                self.trees.drain(..drop);
                self.tree_base += drop as u64;
            }
        }
        // Trimmed to the limit only once the caller's operation succeeds (`trim_undo`): a
        // reorganisation that fails half-way must find every entry it started with.
        self.undo.push_back(undo);
        Ok(AppliedBlock {
            hash: block.hash(),
            height: h.height,
            events,
        })
    }

    /// Drops the oldest undo data beyond [`max_reorg_depth`](Self::max_reorg_depth) blocks;
    /// called once an append or a reorganisation has succeeded.
    fn trim_undo(&mut self) {
        while self.undo.len() as u64 > self.max_reorg_depth {
            self.undo.pop_front();
        }
    }

    /// Rolls back the main-chain tip (undo data must be available).
    fn revert_tip(&mut self) -> BlockHash {
        let undo = self.undo.pop_back().expect("caller checked the undo depth");
        self.state.undo(undo);
        self.trees.pop();
        self.main.pop().expect("never reverts genesis")
    }

    fn load_checked(&self, hash: &BlockHash) -> ChainResult<CheckedChainBlock<C, A>, A> {
        let block = self.block(hash)?.ok_or_else(|| {
            ChainError::Store(StoreError::Corrupt(format!(
                "block {hash} is indexed but not stored"
            )))
        })?;
        Ok(block.check_structure_cached(self.chain_id, &self.keys)?)
    }

    fn reorganise(
        &mut self,
        new_tip: CheckedChainBlock<C, A>,
        total_work: Work,
    ) -> ChainResult<Appended<A::Event>, A> {
        // Collect the new branch back to the main chain.
        // Every indexed block's ancestors are indexed (an invalid block is forgotten together
        // with all its descendants), so this walk ends on the main chain; a gap is refused, not
        // a panic.
        let mut branch = vec![new_tip.hash()];
        let mut cursor = new_tip.header().parent;
        let fork_height = loop {
            let e = self
                .index
                .get(&cursor)
                .ok_or(ChainError::UnknownParent(cursor))?;
            if self.main.get(e.header.height as usize) == Some(&cursor) {
                break e.header.height;
            }
            branch.push(cursor);
            cursor = e.header.parent;
        };
        let depth = self.height() - fork_height;
        // The new block extends another copy of the tip (one block under another seal): swap
        // the seal, no reorganisation.
        if depth == 1 && branch.len() == 2 {
            let copy = branch[1];
            let same = self
                .index
                .get(&copy)
                .is_some_and(|e| self.engine.same_block(&e.header, self.tip_header()));
            if same {
                return self.swap_tip_seal(copy, new_tip, total_work);
            }
        }
        // Never revert a final block (the header stage refuses such branches already; this
        // also covers an engine whose `same_block` admits copies of several blocks).
        let last_final = self.final_height();
        if fork_height < last_final {
            let height = fork_height + 1;
            return Err(ChainError::ConflictsWithFinal {
                height,
                finalised: self.main[height as usize],
                block: new_tip.hash(),
            });
        }
        if depth > self.max_reorg_depth || depth > self.undo.len() as u64 {
            return Err(ChainError::ReorgTooDeep {
                depth,
                max: self.max_reorg_depth.min(self.undo.len() as u64),
            });
        }
        branch.reverse();
        // Roll back, then apply the branch; on failure restore the old main chain.
        let old_main: Vec<BlockHash> = self.main[fork_height as usize + 1..].to_vec();
        let mut reverted = Vec::with_capacity(old_main.len());
        for _ in 0..depth {
            reverted.push(self.revert_tip());
        }
        let mut applied = Vec::with_capacity(branch.len());
        let mut failure = None;
        for hash in &branch {
            let block = if *hash == new_tip.hash() {
                Ok(new_tip.clone())
            } else {
                self.load_checked(hash)
            };
            match block.and_then(|b| self.apply_checked(&b).map(|a| (a, b))) {
                Ok((a, _)) => {
                    self.main.push(*hash);
                    applied.push(a);
                }
                Err(e) => {
                    failure = Some((*hash, e));
                    break;
                }
            }
        }
        if let Some((bad, err)) = failure {
            for _ in 0..applied.len() {
                self.revert_tip();
            }
            for hash in &old_main {
                let block = self.load_checked(hash)?;
                self.apply_checked(&block)?;
                self.main.push(*hash);
            }
            // Forget the invalid block and everything built on it: the rest of this branch and
            // any other side branch stored on top of it.
            self.invalid.insert(new_tip.hash());
            self.forget_descendants(bad);
            return Err(err);
        }
        self.trim_undo();
        self.store_block(&new_tip, total_work)?;
        self.persist_main(fork_height + 1)?;
        Ok(Appended { reverted, applied })
    }

    /// Replaces the tip by `copy`, the same block under another seal (the engine says so with
    /// [`Consensus::same_block`]: same transactions, same state), then applies `new_tip` on
    /// it. Nothing is reverted: the state stays, and the update reports only `new_tip`. If
    /// `new_tip` is invalid, the tip is restored and the error returned.
    fn swap_tip_seal(
        &mut self,
        copy: BlockHash,
        new_tip: CheckedChainBlock<C, A>,
        total_work: Work,
    ) -> ChainResult<Appended<A::Event>, A> {
        let height = self.height();
        let own = self.main.pop().expect("never swaps genesis");
        self.main.push(copy);
        match self.apply_checked(&new_tip) {
            Ok(applied) => {
                self.trim_undo();
                self.store_block(&new_tip, total_work)?;
                self.main.push(new_tip.hash());
                self.persist_main(height)?;
                Ok(Appended {
                    reverted: Vec::new(),
                    applied: vec![applied],
                })
            }
            Err(e) => {
                self.main.pop();
                self.main.push(own);
                self.invalid.insert(new_tip.hash());
                Err(e)
            }
        }
    }

    /// Marks `bad` and every indexed block descending from it invalid, and drops them from the
    /// index.
    fn forget_descendants(&mut self, bad: BlockHash) {
        let mut children: HashMap<BlockHash, Vec<BlockHash>> = HashMap::new();
        for (hash, e) in &self.index {
            children.entry(e.header.parent).or_default().push(*hash);
        }
        let mut stack = vec![bad];
        while let Some(h) = stack.pop() {
            self.index.remove(&h);
            self.invalid.insert(h);
            if let Some(kids) = children.remove(&h) {
                stack.extend(kids);
            }
        }
    }

    /// Re-validates blocks read back from the store (in stored order).
    fn reload(&mut self, hashes: &[BlockHash]) -> ChainResult<(), A> {
        self.replaying = true;
        for hash in hashes {
            if self.index.contains_key(hash) {
                continue;
            }
            let Some(block) = self.block(hash)? else {
                continue;
            };
            // A stored block that no longer validates (e.g. written before a crash that lost its
            // parent) is skipped, not fatal: validity never depends on the store.
            let _ = self.append(block);
        }
        self.replaying = false;
        // Rewrite the stored height index only from where it differs from the replayed one.
        let mut from = 0;
        while (from as usize) < self.main.len()
            && self.store.main_hash(from)? == Some(self.main[from as usize])
        {
            from += 1;
        }
        if from as usize != self.main.len() || self.store.tip_height()? != Some(self.height()) {
            self.persist_main(from.min(self.height()))?;
        }
        Ok(())
    }

    /// Exports the tip's state as snapshot chunks for a new node (see
    /// [`crate::state::snapshot`]), to import against [`tip_header`](Self::tip_header)'s state
    /// root at [`height`](Self::height), of at most `max_entries` entries each (see
    /// [`State::export_snapshot`]).
    ///
    /// # Errors
    ///
    /// [`ChainError::Snapshot`] if an entry exceeds the snapshot limits.
    pub fn snapshot(&self, max_entries: usize) -> ChainResult<Vec<SnapshotChunk>, A> {
        Ok(self.state.export_snapshot(self.height(), max_entries)?)
    }

    /// As [`snapshot`](Self::snapshot), handing each chunk to `emit` as soon as it is cut
    /// ([`State::export_snapshot_to`]): a state on disk is exported without holding it in
    /// memory. An error from `emit` stops the export.
    ///
    /// # Errors
    ///
    /// [`SnapshotError`] (converted) if an entry exceeds the snapshot limits or a state on
    /// disk cannot be read or spilled, or what `emit` returned.
    pub fn snapshot_to<E: From<SnapshotError>>(
        &self,
        max_entries: usize,
        emit: impl FnMut(SnapshotChunk) -> Result<(), E>,
    ) -> Result<(), E> {
        self.state
            .export_snapshot_to(self.height(), max_entries, emit)
    }

    /// Writes a state checkpoint of the tip to the store ([`Store::put_checkpoint`]), so that
    /// reopening the store starts from it instead of replaying every block. The chain writes
    /// one by itself every [`ChainBuilder::checkpoint_every`] blocks.
    ///
    /// # Errors
    ///
    /// [`ChainError::Snapshot`] if the state cannot be exported, [`ChainError::Store`] if the
    /// store fails; the store then keeps its previous checkpoint.
    pub fn write_checkpoint(&mut self) -> ChainResult<(), A> {
        let chunks = self
            .state
            .export_snapshot(self.height(), MAX_CHUNK_ENTRIES)?;
        self.store.put_checkpoint(&StoredCheckpoint {
            height: self.height(),
            block: self.tip(),
            chunks: chunks.iter().map(SnapshotChunk::encode).collect(),
        })?;
        self.store.sync()?;
        Ok(())
    }

    /// The checkpoint every `checkpoint_every` blocks, after the block is stored. Best effort:
    /// the block is in already, and a failed checkpoint leaves the previous one, which reopens
    /// the chain as well, only with more blocks to replay.
    fn scheduled_checkpoint(&mut self) {
        if !self.replaying
            && self.checkpoint_every > 0
            && self.height().is_multiple_of(self.checkpoint_every)
        {
            let _ = self.write_checkpoint();
        }
    }

    /// Starts from the store's checkpoint, if it keeps a usable one: the headers up to it from
    /// the stored main chain, checked by the engine, and the state verified against the last
    /// one. Returns `Err` with why it did not; the chain is then as it was (at genesis).
    fn resume_from_checkpoint(&mut self) -> ChainResult<Resumed, A> {
        let Some(checkpoint) = self.store.checkpoint()? else {
            return Ok(Err("the store keeps no checkpoint".into()));
        };
        let height = checkpoint.height;
        if height == 0 || self.store.main_hash(height)? != Some(checkpoint.block) {
            return Ok(Err(format!(
                "the store's checkpoint at height {height} is not of a main-chain block"
            )));
        }
        let Some(headers) = self.stored_headers(height)? else {
            return Ok(Err(format!(
                "the store lacks a block or kept header up to its checkpoint's height \
                 {height}, or one does not hash to the main chain's"
            )));
        };
        let resumed = (|| {
            for header in &headers {
                self.accept_header(header).ok()?;
            }
            let root = self.tip_header().state_root;
            let mut import = SnapshotImport::<A::State>::new(height, root);
            for chunk in &checkpoint.chunks {
                import.add_bytes(chunk).ok()?;
            }
            import.finish().ok()
        })();
        let Some(state) = resumed else {
            self.back_to_genesis();
            return Ok(Err(format!(
                "the store's checkpoint at height {height} does not check against its headers"
            )));
        };
        self.start_from(state, height);
        Ok(Ok(()))
    }

    /// The height below which the stored main chain has no block bodies, if it starts so
    /// (a chain opened from a snapshot at that height): its block at height 1 is not stored.
    fn bodiless_base(&self) -> ChainResult<Option<u64>, A> {
        let mut height = 0;
        while let Some(hash) = self.store.main_hash(height + 1)? {
            if self.store.get_block(&hash)?.is_some() {
                break;
            }
            height += 1;
        }
        Ok((height > 0).then_some(height))
    }

    /// Forgets the headers taken from the store past genesis (a resume that did not check).
    fn back_to_genesis(&mut self) {
        let genesis = self.main[0];
        self.main.truncate(1);
        self.index.retain(|hash, _| *hash == genesis);
    }

    /// Takes `state`, the state at `height` (the tip), as the chain's state.
    fn start_from(&mut self, state: State<A::State>, height: u64) {
        self.trees = vec![state.tree().clone()];
        self.tree_base = height;
        self.state = state;
    }

    /// The headers of the stored main chain from height 1 to `height`, if the store has them
    /// all: each from its stored block, or from the headers the store keeps without their
    /// blocks (a chain opened from a snapshot), each of which must hash to the main chain's
    /// hash at its height.
    fn stored_headers(&self, height: u64) -> ChainResult<Option<Vec<Header<C::Seal>>>, A> {
        let mut kept: Option<Vec<Vec<u8>>> = None;
        let mut headers = Vec::new();
        for h in 1..=height {
            let Some(hash) = self.store.main_hash(h)? else {
                return Ok(None);
            };
            if let Some(block) = self.block(&hash)? {
                if block.hash() != hash {
                    return Ok(None);
                }
                headers.push(block.header);
                continue;
            }
            if kept.is_none() {
                kept = Some(self.store.headers()?);
            }
            let header = kept
                .as_ref()
                .and_then(|k| k.get(usize::try_from(h - 1).ok()?))
                .and_then(|bytes| crate::codec::decode::<Header<C::Seal>>(bytes).ok())
                .filter(|header| header.hash() == hash);
            match header {
                Some(header) => headers.push(header),
                None => return Ok(None),
            }
        }
        Ok(Some(headers))
    }

    /// Starts from the state a disk backend's directory holds (without replay), if it holds
    /// one whose root is the state root of the stored main chain's header at its height: the
    /// headers up to it are taken from the store and checked by the engine (bodies not
    /// executed), as for a checkpoint. Returns whether it did; if not, the chain is as it was
    /// (at genesis) and the directory is left for [`use_backend`](Self::use_backend) to
    /// rewrite.
    fn resume_from_disk(&mut self, backend: &StateBackend) -> ChainResult<Resumed, A> {
        #[cfg(feature = "redb")]
        if let StateBackend::Disk(config) = backend {
            // A directory that cannot be read or does not check is rebuilt, as a damaged
            // checkpoint is: the blocks are the truth.
            let dir = config.dir().display();
            let (state, height) =
                match State::open_disk(config, self.max_reorg_depth.saturating_add(1)) {
                    Ok(Some(opened)) => opened,
                    Ok(None) => {
                        return Ok(Err(format!("the state directory {dir} holds no state")))
                    }
                    Err(e) => {
                        return Ok(Err(format!(
                            "the state directory {dir} could not be opened: {e}"
                        )))
                    }
                };
            let Some(headers) = self.stored_headers(height)? else {
                return Ok(Err(format!(
                    "the state directory {dir} holds the state at height {height}, and the \
                     store lacks a block or kept header up to it, or one does not hash to the \
                     main chain's"
                )));
            };
            let accepted = headers.iter().all(|h| self.accept_header(h).is_ok());
            if !accepted || self.tip_header().state_root != state.root() {
                self.back_to_genesis();
                return Ok(Err(format!(
                    "the state directory {dir} holds a state at height {height} that the \
                     stored headers up to it do not check"
                )));
            }
            self.start_from(state, height);
            return Ok(Ok(()));
        }
        let _ = backend;
        Ok(Err(
            "the state is in memory, not in a state directory".into()
        ))
    }

    /// Adds `header` to the main chain without its body (opening from a snapshot): the header
    /// checks of [`append`](Self::append) on a header extending the tip.
    fn accept_header(&mut self, header: &Header<C::Seal>) -> ChainResult<(), A> {
        let header_len = 1 + crate::codec::body_len(header);
        if header_len > crate::block::MAX_HEADER_LEN {
            return Err(StructureError::TooLarge {
                what: "block header",
                len: header_len,
                max: crate::block::MAX_HEADER_LEN,
            }
            .into());
        }
        if header.version != HEADER_VERSION {
            return Err(StructureError::Version {
                expected: HEADER_VERSION,
                found: header.version,
            }
            .into());
        }
        let parent_hash = self.tip();
        if header.parent != parent_hash {
            return Err(ChainError::UnknownParent(header.parent));
        }
        let parent = &self.index[&parent_hash];
        let expected = parent.header.height + 1;
        if header.height != expected {
            return Err(ChainError::BadHeight {
                expected,
                found: header.height,
            });
        }
        check_not_before_parent(parent.header.timestamp, header.timestamp)?;
        let parent_work = parent.total_work;
        let branch = self.branch(parent_hash).expect("the tip is indexed");
        let work = self
            .engine
            .verify_header(header, &branch, self.clock.now())?;
        let hash = header.hash();
        self.index.insert(
            hash,
            Entry {
                header: header.clone(),
                total_work: parent_work.saturating_add(work),
            },
        );
        self.main.push(hash);
        Ok(())
    }

    /// Rebuilds the state from genesis by re-executing every main-chain block from the store,
    /// and returns it. Its root equals the tip's state root on a healthy chain.
    ///
    /// # Errors
    ///
    /// [`ChainError`] if a stored block cannot be read or no longer applies.
    pub fn replay_state(&self) -> ChainResult<State<A::State>, A> {
        let mut state =
            genesis_state::<A>(&self.genesis, self.index[&self.main[0]].header.timestamp)?;
        for hash in &self.main[1..] {
            let block = self.load_checked(hash)?;
            let executed = execute_block::<C, A>(&mut state, self.chain_id, &block)?;
            state.commit_block(executed)?;
        }
        Ok(state)
    }
}
