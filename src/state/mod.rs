//! The ledger state: what applying every block from genesis produces.
//!
//! The state is a set of typed tables: the core's (accounts and their nonces, signing keys) and
//! the application's ([`AppState`]), all committed to one [`StateTree`] whose root every block
//! header carries. The state knows no application: it executes a block's transactions by
//! checking each signer's key and nonce and handing the payload to a function the chain supplies.
//! Applying a block is transactional at two levels: a transaction that fails leaves no trace
//! (per-transaction savepoints), and a block is either committed whole — after its state root is
//! checked against the header — or discarded. Committed blocks keep undo data so the chain can
//! roll back to a fork point when it reorganises.
//!
//! Committed entries live in memory by default, or on disk with the `redb` feature
//! ([`StateBackend`], the `disk` module); reads, roots and proofs are the same on both.

#[cfg(feature = "redb")]
pub mod disk;
pub mod snapshot;
mod table;

use core::any::Any;

use serde::{Deserialize, Serialize};

use crate::hash::{AccountId, ChainId, StateRoot, TxId};
use crate::smt::{StateProof, StateTree};
use crate::store::StoreError;
use crate::tx::{AppPayload, PublicKey, VerifiedTx};

pub use table::{entry_key, value_digest, Leaves, Table, TableOps};

/// Tag of the accounts table (see [`entry_key`]).
pub const ACCOUNTS_TABLE: &str = "accounts";
/// Tag of the signing-keys table (see [`entry_key`]).
pub const KEYS_TABLE: &str = "keys";

/// An account's entry in the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The nonce the account's next transaction must carry.
    pub next_nonce: u64,
    /// The key that currently signs for the account.
    pub key: PublicKey,
}

/// A signing key's entry in the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// The account the key signs for.
    pub account: AccountId,
    /// Height from which the key signs for the account.
    pub since: u64,
    /// Height at which the key was replaced by rotation, if it was.
    pub retired_at: Option<u64>,
}

/// Where and when a transaction is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxContext {
    /// The chain.
    pub chain_id: ChainId,
    /// Height of the block being applied.
    pub height: u64,
    /// Timestamp of the block being applied (Unix seconds): the "now" of every time check.
    pub time: u64,
    /// The transaction's id.
    pub tx_id: TxId,
    /// The transaction's position in the block.
    pub index: u32,
    /// The account the transaction acts for (after key rotation is resolved).
    pub account: AccountId,
    /// The key that signed it.
    pub signer: PublicKey,
}

/// Why a transaction cannot be applied to the current state. Nothing was changed.
///
/// `E` is the application's refusal (for MedRec, [`AccessError`](crate::access::AccessError)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError<E> {
    /// The nonce is not the account's next one (a replay, or out of order).
    #[error("nonce {found} for account {account}, expected {expected}")]
    BadNonce {
        /// The account.
        account: AccountId,
        /// Next nonce of the account.
        expected: u64,
        /// Nonce in the transaction.
        found: u64,
    },
    /// The signing key was rotated away.
    #[error("key {key} was retired at height {retired_at}")]
    KeyRetired {
        /// The retired key.
        key: PublicKey,
        /// When it was retired.
        retired_at: u64,
    },
    /// The application refused the payload.
    #[error(transparent)]
    App(E),
}

/// The core's own tables: accounts (nonce, current key) and signing keys. An application may
/// read and write them (a registrar that rotates keys, say) through [`State`]'s execution.
#[derive(Debug)]
pub struct CoreTables {
    /// Accounts by id.
    pub accounts: Table<AccountId, AccountState>,
    /// Signing keys.
    pub keys: Table<PublicKey, KeyState>,
}

impl Default for CoreTables {
    fn default() -> Self {
        Self {
            accounts: Table::new(ACCOUNTS_TABLE),
            keys: Table::new(KEYS_TABLE),
        }
    }
}

/// An application's part of the state: its tables, listed in a fixed order. Savepoints, block
/// commit, undo and the state root cover every table listed.
pub trait AppState: Default + Send + Sync + 'static {
    /// Appends every table to `out`, in a fixed order.
    fn tables<'a>(&'a self, out: &mut Vec<&'a dyn TableOps>);
    /// Appends every table to `out`, mutably, in the same order.
    fn tables_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn TableOps>);
}

/// An application without state of its own.
impl AppState for () {
    fn tables<'a>(&'a self, _: &mut Vec<&'a dyn TableOps>) {}
    fn tables_mut<'a>(&'a mut self, _: &mut Vec<&'a mut dyn TableOps>) {}
}

/// Where the state's committed entries live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateBackend {
    /// In memory (the default): for tests and small deployments; the state is rebuilt at
    /// every start.
    #[default]
    Memory,
    /// In a redb database, with a bounded cache of decoded values (see [`disk`]).
    #[cfg(feature = "redb")]
    Disk(disk::DiskConfig),
}

/// The depth from which `config`'s state tree is held by hash only.
#[cfg(feature = "redb")]
fn config_tree_depth(config: &disk::DiskConfig) -> usize {
    config.tree_memory_depth_bound()
}

/// The state of the ledger: the core's tables and the application's `T`.
pub struct State<T> {
    tree: StateTree,
    pub(crate) core: CoreTables,
    pub(crate) app: T,
    /// The database, once the committed entries moved to disk.
    #[cfg(feature = "redb")]
    disk: Option<disk::DiskState>,
}

impl<T> core::fmt::Debug for State<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("root", &self.tree.root())
            .field("entries", &self.tree.len())
            .finish_non_exhaustive()
    }
}

impl<T: AppState> Default for State<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The outcome of executing a block's transactions: pending writes in the tables, plus the tree
/// they would produce. Commit it with [`State::commit`] or drop it with [`State::discard`].
pub(crate) struct Executed<Ev> {
    pub(crate) tree: StateTree,
    pub(crate) events: Vec<(TxId, Vec<Ev>)>,
    /// The hashes of the committed tree's nodes that `tree` replaced (listed on disk only).
    replaced: Vec<[u8; 32]>,
}

/// An executed block's writes set aside uncommitted ([`State::set_aside`]), to be committed
/// later without executing the block again ([`State::take_back`]).
pub(crate) struct SetAside<Ev> {
    /// The state's root when the block was executed: its writes hold only on that state.
    base: StateRoot,
    executed: Executed<Ev>,
    tables: Vec<Box<dyn Any + Send + Sync>>,
}

impl<Ev> SetAside<Ev> {
    /// The state root the block's writes give.
    pub(crate) fn root(&self) -> StateRoot {
        self.executed.tree.root()
    }
}

/// The core's accounts table's place in the state's table order.
const ACCOUNTS_SLOT: usize = 0;
/// The core's keys table's place in the state's table order.
const KEYS_SLOT: usize = 1;

/// Pending writes taken out of a state's tables ([`State::take_pending`]) and put back later
/// ([`State::restore_pending`]) while the committed entries stay as they were: how a mempool
/// keeps its transactions applied on the chain's own state without the chain's blocks and
/// queries seeing them. One entry per table, in the state's table order (the core's first).
pub(crate) struct Pending {
    /// The state's root when they were taken: they hold only on that state.
    base: StateRoot,
    tables: Vec<Box<dyn Any + Send + Sync>>,
}

impl Pending {
    /// The writes of table `i`.
    fn table(&self, i: usize) -> Option<&(dyn Any + Send + Sync)> {
        self.tables.get(i).map(AsRef::as_ref)
    }
}

/// What undoes one committed block.
pub(crate) struct BlockUndo {
    tree: StateTree,
    tables: Vec<Box<dyn Any + Send + Sync>>,
}

/// A transaction that failed while executing a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction {index} ({tx_id}): {error}")]
pub struct TxFailure<E> {
    /// Position in the block.
    pub index: usize,
    /// Its id.
    pub tx_id: TxId,
    /// Why it failed.
    #[source]
    pub error: StateError<E>,
}

/// A failed execution that skips nothing: the failure. With skipping: the executed block and
/// the skipped transactions by position.
pub(crate) type Execution<Ev, E> =
    Result<(Executed<Ev>, Vec<(usize, StateError<E>)>), TxFailure<E>>;

impl<T: AppState> State<T> {
    /// The empty state.
    pub fn new() -> Self {
        Self {
            tree: StateTree::new(),
            core: CoreTables::default(),
            app: T::default(),
            #[cfg(feature = "redb")]
            disk: None,
        }
    }

    /// The state after `init` wrote the genesis entries (at height 0), committed.
    pub(crate) fn genesis(init: impl FnOnce(&mut T, &mut CoreTables)) -> Self {
        let mut state = Self::new();
        init(&mut state.app, &mut state.core);
        state.savepoint(true);
        let (tree, _) = state.pending_tree();
        state.commit_tables(tree);
        state
    }

    /// Moves the committed entries into the database of `config` (replacing what it held),
    /// as the state at `height`, keeping undo records for `undo_blocks` blocks; from then on
    /// every block commits to it. No block may be pending.
    ///
    /// # Errors
    ///
    /// [`disk::DiskError`] if the database cannot be opened or written; the state is then
    /// unchanged, still in memory.
    #[cfg(feature = "redb")]
    pub(crate) fn move_to_disk(
        &mut self,
        config: &disk::DiskConfig,
        height: u64,
        undo_blocks: u64,
    ) -> Result<(), disk::DiskError> {
        let tables: Vec<_> = self
            .tables()
            .into_iter()
            .map(|t| {
                let mut entries = Vec::new();
                t.committed_entries(&mut entries);
                (t.tag(), entries)
            })
            .collect();
        let mut tree = self.tree.clone();
        let (persisted, nodes) = tree.persist(config_tree_depth(config));
        let write = disk::TreeWrite {
            new: &nodes,
            replaced: &[],
            root: tree.root(),
            entries: tree.len() as u64,
        };
        let state = disk::DiskState::create(config, &tables, height, write, undo_blocks)?;
        drop(tables);
        drop(nodes);
        let db = state.db().clone();
        for t in self.tables_mut() {
            t.move_to_disk(&db);
        }
        tree = persisted;
        tree.attach(db.node_source());
        self.tree = tree;
        self.disk = Some(state);
        Ok(())
    }

    /// Empties the database of `config` and moves this empty state's tables and tree there,
    /// for a snapshot import at `height` (see [`snapshot::SnapshotImport::on_disk`]).
    #[cfg(feature = "redb")]
    pub(crate) fn begin_disk_import(
        &mut self,
        config: &disk::DiskConfig,
        height: u64,
    ) -> Result<(), disk::DiskError> {
        let tags: Vec<&'static str> = self.tables().iter().map(|t| t.tag()).collect();
        let state = disk::DiskState::begin_import(config, &tags, height, 1)?;
        let db = state.db().clone();
        for t in self.tables_mut() {
            t.move_to_disk(&db);
        }
        self.tree.attach(db.node_source());
        self.disk = Some(state);
        Ok(())
    }

    /// Writes a verified snapshot chunk to the database: the tables' pending writes (the
    /// chunk's entries) and `tree` with the chunk's `leaves` applied, whose records below the
    /// configured depth are then held by hash only. On failure the pending writes are dropped
    /// and `tree` is unchanged.
    #[cfg(feature = "redb")]
    pub(crate) fn import_chunk(
        &mut self,
        tree: &mut StateTree,
        leaves: &[crate::smt::StateUpdate],
    ) -> Result<(), disk::DiskError> {
        let Some(mut disk) = self.disk.take() else {
            return Err(disk::DiskError::Corrupt(
                "a disk import without a database".into(),
            ));
        };
        let mut next = tree.clone();
        let replaced = next
            .apply_tracked(leaves)
            .map_err(|e| disk::DiskError::Corrupt(format!("snapshot leaves: {e}")))
            .and_then(|replaced| {
                // A record of an earlier chunk that could not be read left its subtree out of
                // the update: the chunk is not taken.
                match disk.db().take_read_failure() {
                    Some(failure) => Err(failure),
                    None => Ok(replaced),
                }
            });
        let written = replaced.and_then(|replaced| {
            let (tags, writes) = self.pending_disk_writes();
            let (persisted, nodes) = next.persist(disk.tree_memory_depth());
            let write = disk::TreeWrite {
                new: &nodes,
                replaced: &replaced,
                root: next.root(),
                entries: next.len() as u64,
            };
            disk.import_chunk(&tags, &writes, write).map(|()| persisted)
        });
        self.disk = Some(disk);
        match written {
            Ok(persisted) => {
                for t in self.tables_mut() {
                    drop(t.commit_block());
                }
                *tree = persisted;
                Ok(())
            }
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Ends a snapshot import on disk: records `tree` (every chunk applied) as the state's,
    /// at the import's height, and syncs.
    #[cfg(feature = "redb")]
    pub(crate) fn finish_disk_import(
        &mut self,
        tree: StateTree,
        root: crate::hash::StateRoot,
    ) -> Result<(), disk::DiskError> {
        if tree.root() != root {
            return Err(disk::DiskError::Corrupt(format!(
                "the tree written has root {}, the snapshot's is {root}",
                tree.root()
            )));
        }
        if let Some(disk) = &mut self.disk {
            disk.finish_import(tree.root(), tree.len() as u64)?;
        }
        self.tree = tree;
        Ok(())
    }

    /// Whether this state's database is the one of `config` (`false` in memory).
    #[cfg(feature = "redb")]
    pub(crate) fn is_in(&self, config: &disk::DiskConfig) -> bool {
        self.disk.as_ref().is_some_and(|d| d.is_in(config))
    }

    /// The height of the state on disk (`None` in memory).
    #[cfg(feature = "redb")]
    pub(crate) fn disk_height(&self) -> Option<u64> {
        self.disk.as_ref().map(disk::DiskState::height)
    }

    /// Keeps undo records for `undo_blocks` blocks from now on (on disk; nothing in memory).
    #[cfg(feature = "redb")]
    pub(crate) fn set_undo_blocks(&mut self, undo_blocks: u64) {
        if let Some(disk) = &mut self.disk {
            disk.set_undo_blocks(undo_blocks);
        }
    }

    /// The state a state directory holds (see [`disk`]), as `(state, height)`: the tables
    /// read from it, and the state tree's root node, checked to hash to the root the database
    /// recorded (the tree's other nodes are read when reached, and checked then); later blocks
    /// commit to it, keeping undo records for `undo_blocks` blocks. `None` if the directory
    /// holds no state of this format. Chains open their directory by themselves
    /// ([`ChainBuilder::state_backend`](crate::chain::ChainBuilder::state_backend)), and check
    /// the root against the header at the height; this is for inspecting one, or checking it
    /// against a replay. Reopening reads neither the entries nor the tree below its root:
    /// [`verify_entries`](Self::verify_entries) checks the entries against the root.
    ///
    /// # Errors
    ///
    /// [`disk::DiskError`] if the database cannot be read, or its root node is missing or
    /// does not hash to the root it recorded ([`disk::DiskError::Corrupt`]).
    #[cfg(feature = "redb")]
    pub fn open_disk(
        config: &disk::DiskConfig,
        undo_blocks: u64,
    ) -> Result<Option<(Self, u64)>, disk::DiskError> {
        let Some(disk) = disk::DiskState::open(config, undo_blocks)? else {
            return Ok(None);
        };
        let (height, _) = disk.committed_tip()?;
        let mut state = Self::new();
        let db = disk.db().clone();
        for t in state.tables_mut() {
            t.move_to_disk(&db);
        }
        state.tree = disk.committed_tree()?;
        if let Some(failure) = db.take_read_failure() {
            return Err(failure);
        }
        state.disk = Some(disk);
        Ok(Some((state, height)))
    }

    /// Rebuilds the state tree from every committed entry of the tables and checks that it
    /// has the state's root: what a state on disk is trusted for when it reopens without
    /// reading its entries (see [`open_disk`](Self::open_disk)). It reads and hashes every
    /// entry, so it takes about as long as building the tree did.
    ///
    /// # Errors
    ///
    /// [`disk::DiskError::Corrupt`] if the entries hash to another root, [`disk::DiskError`]
    /// if a table cannot be read.
    #[cfg(feature = "redb")]
    pub fn verify_entries(&self) -> Result<(), disk::DiskError> {
        let tree = self.entries_tree()?;
        if tree.root() != self.root() {
            return Err(disk::DiskError::Corrupt(format!(
                "the entries hash to {}, the state tree's root is {}",
                tree.root(),
                self.root()
            )));
        }
        Ok(())
    }

    /// The state tree of every committed entry of the tables, built in memory.
    #[cfg(feature = "redb")]
    fn entries_tree(&self) -> Result<StateTree, disk::DiskError> {
        let mut leaves: Leaves = Vec::new();
        let mut entries = Vec::new();
        for t in self.tables() {
            entries.clear();
            t.committed_entries(&mut entries);
            leaves.extend(entries.iter().map(|(k, v)| {
                (
                    table::entry_key_of_body(t.tag(), k),
                    Some(table::value_digest_of_body(v)),
                )
            }));
        }
        drop(entries);
        if let Some(failure) = self.disk.as_ref().and_then(|d| d.db().take_read_failure()) {
            return Err(failure);
        }
        leaves.sort_unstable_by_key(|leaf| leaf.0);
        let mut tree = StateTree::new();
        tree.apply(&leaves)
            .map_err(|e| disk::DiskError::Corrupt(format!("state entries: {e}")))?;
        Ok(tree)
    }

    /// Builds the state tree of a benchmark's state on disk (built with
    /// [`bench_commit_untracked`](Self::bench_commit_untracked)) from its entries, and commits
    /// it with its nodes as the next height.
    ///
    /// # Errors
    ///
    /// [`disk::DiskError`] if the entries cannot be read or the nodes written.
    #[cfg(feature = "redb")]
    #[doc(hidden)]
    pub fn bench_persist_tree(&mut self) -> Result<(), disk::DiskError> {
        let mut tree = self.entries_tree()?;
        if let Some(disk) = &self.disk {
            tree.attach(disk.db().node_source());
        }
        self.commit(tree, Vec::new())
            .map(drop)
            .map_err(|e| disk::DiskError::Storage {
                action: "commit the tree",
                reason: e.to_string(),
            })
    }

    /// [`open_disk`](Self::open_disk) as it was before the tree's nodes were stored, for a
    /// benchmark to compare: the state tree rebuilt in memory from every entry, and checked
    /// against the recorded root.
    ///
    /// # Errors
    ///
    /// As [`open_disk`](Self::open_disk) and [`verify_entries`](Self::verify_entries).
    #[cfg(feature = "redb")]
    #[doc(hidden)]
    pub fn bench_open_disk_rebuilding(
        config: &disk::DiskConfig,
        undo_blocks: u64,
    ) -> Result<Option<(Self, u64)>, disk::DiskError> {
        let Some((mut state, height)) = Self::open_disk(config, undo_blocks)? else {
            return Ok(None);
        };
        let tree = state.entries_tree()?;
        if tree.root() != state.root() {
            return Err(disk::DiskError::Corrupt(format!(
                "the entries hash to {}, the database recorded {}",
                tree.root(),
                state.root()
            )));
        }
        state.tree = tree;
        Ok(Some((state, height)))
    }

    /// The height and state root the state database last committed (`None` for the memory
    /// backend).
    ///
    /// # Errors
    ///
    /// [`disk::DiskError`] if the database cannot be read.
    #[cfg(feature = "redb")]
    pub fn disk_tip(&self) -> Result<Option<(u64, StateRoot)>, disk::DiskError> {
        self.disk.as_ref().map(|d| d.committed_tip()).transpose()
    }

    /// Moves a state built for a benchmark to disk, as the state at height 0 (benchmarks only:
    /// chains move their state with [`ChainBuilder::state_backend`](crate::chain::ChainBuilder::state_backend)).
    ///
    /// # Errors
    ///
    /// As [`ChainBuilder::build`](crate::chain::ChainBuilder::build) with a disk backend.
    #[cfg(feature = "redb")]
    #[doc(hidden)]
    pub fn bench_move_to_disk(&mut self, config: &disk::DiskConfig) -> Result<(), disk::DiskError> {
        self.move_to_disk(config, 0, 1)
    }

    /// A reader of the table tagged `tag` in the state database, for a benchmark's bare
    /// lookups beside the state's own (`None` for the memory backend).
    ///
    /// # Errors
    ///
    /// [`disk::DiskError`] if the database cannot be read or has no such table.
    #[cfg(feature = "redb")]
    #[doc(hidden)]
    pub fn bench_disk_table(&self, tag: &str) -> Result<Option<disk::RawTable>, disk::DiskError> {
        self.disk.as_ref().map(|d| d.reader(tag)).transpose()
    }

    /// What the state database takes on disk (`None` for the memory backend).
    ///
    /// # Errors
    ///
    /// [`disk::DiskError`] if the file's size or redb's statistics cannot be read.
    #[cfg(feature = "redb")]
    pub fn disk_usage(&self) -> Result<Option<disk::DiskUsage>, disk::DiskError> {
        self.disk.as_ref().map(|d| d.usage()).transpose()
    }

    /// The first read of the state database that failed since the last call, and forgets it
    /// (`None` on the memory backend). A table read cannot return an error: on disk a failed
    /// one answers "absent" and is recorded here, and a block whose execution recorded one is
    /// refused (see [`disk`]).
    pub(crate) fn take_read_failure(&self) -> Option<StoreError> {
        #[cfg(feature = "redb")]
        if let Some(disk) = &self.disk {
            return disk
                .db()
                .take_read_failure()
                .map(|e| StoreError::Backend(Box::new(e)));
        }
        None
    }

    /// The directory of the state database, if the committed entries are on disk.
    #[cfg(feature = "redb")]
    pub(crate) fn disk_dir(&self) -> Option<&std::path::Path> {
        self.disk.as_ref().map(|d| d.dir())
    }

    /// Whether the committed entries are on disk (see [`StateBackend`]).
    pub fn is_on_disk(&self) -> bool {
        #[cfg(feature = "redb")]
        if self.disk.is_some() {
            return true;
        }
        false
    }

    /// The application's state.
    pub fn app(&self) -> &T {
        &self.app
    }

    /// The committed state root.
    pub fn root(&self) -> StateRoot {
        self.tree.root()
    }

    /// The committed state tree (cheap to clone: it shares structure).
    pub fn tree(&self) -> &StateTree {
        &self.tree
    }

    /// The account's committed entry.
    pub fn account(&self, account: &AccountId) -> Option<&AccountState> {
        self.core.accounts.get_committed(account)
    }

    /// The signing key's committed entry (keys seen only as signers have none).
    pub fn key(&self, key: &PublicKey) -> Option<&KeyState> {
        self.core.keys.get_committed(key)
    }

    /// The nonce the account's next transaction must carry.
    pub fn next_nonce(&self, account: &AccountId) -> u64 {
        self.core.accounts.get(account).map_or(0, |a| a.next_nonce)
    }

    /// The account a key signs for (its own account if the key was never registered or rotated).
    pub fn account_of_key(&self, key: &PublicKey) -> AccountId {
        self.core.keys.get(key).map_or(key.account(), |k| k.account)
    }

    /// A proof of the committed entry `key` of table `tag` against [`root`](Self::root).
    pub fn prove<K: Serialize + ?Sized>(&self, tag: &str, key: &K) -> StateProof {
        self.tree.prove(&entry_key(tag, key))
    }

    /// Every table, the core's accounts ([`ACCOUNTS_SLOT`]) and keys ([`KEYS_SLOT`]) first.
    fn tables_mut(&mut self) -> Vec<&mut dyn TableOps> {
        let mut out: Vec<&mut dyn TableOps> = vec![&mut self.core.accounts, &mut self.core.keys];
        self.app.tables_mut(&mut out);
        out
    }

    fn tables(&self) -> Vec<&dyn TableOps> {
        let mut out: Vec<&dyn TableOps> = vec![&self.core.accounts, &self.core.keys];
        self.app.tables(&mut out);
        out
    }

    /// Resolves the signer's account, checks its key and nonce, runs `apply`, and advances the
    /// nonce; on error nothing is changed (the caller rolls the savepoint back).
    fn apply_tx<P: AppPayload, Ev, E>(
        &mut self,
        tx: &VerifiedTx<P>,
        cx: &mut TxContext,
        apply: &mut impl FnMut(&mut T, &mut CoreTables, &P, &TxContext) -> Result<Vec<Ev>, E>,
    ) -> Result<Vec<Ev>, StateError<E>> {
        let signer = tx.signer();
        let account = match self.core.keys.get(&signer) {
            Some(KeyState {
                retired_at: Some(h),
                ..
            }) => {
                return Err(StateError::KeyRetired {
                    key: signer,
                    retired_at: *h,
                })
            }
            Some(k) => k.account,
            None => signer.account(),
        };
        let expected = self.next_nonce(&account);
        if tx.body().nonce != expected {
            return Err(StateError::BadNonce {
                account,
                expected,
                found: tx.body().nonce,
            });
        }
        cx.account = account;
        cx.signer = signer;
        let events = apply(&mut self.app, &mut self.core, &tx.body().payload, cx)
            .map_err(StateError::App)?;
        self.core.accounts.update(
            account,
            || AccountState {
                next_nonce: 0,
                key: signer,
            },
            |a| a.next_nonce = expected + 1,
        );
        Ok(events)
    }

    fn savepoint(&mut self, ok: bool) {
        for t in self.tables_mut() {
            if ok {
                t.commit_tx();
            } else {
                t.rollback_tx();
            }
        }
    }

    /// Executes `txs` in order as block `height` at `time`, handing each payload to `apply`.
    /// With `skip_failed`, a failing transaction is rolled back and left out (block building);
    /// otherwise the first failure discards the whole block and is returned.
    pub(crate) fn execute<P: AppPayload, Ev, E>(
        &mut self,
        chain_id: ChainId,
        height: u64,
        time: u64,
        txs: &[VerifiedTx<P>],
        skip_failed: bool,
        mut apply: impl FnMut(&mut T, &mut CoreTables, &P, &TxContext) -> Result<Vec<Ev>, E>,
    ) -> Execution<Ev, E> {
        // Only reads made for this block decide whether it may commit: a failure recorded
        // by a query before it changed no state.
        drop(self.take_read_failure());
        let mut events = Vec::with_capacity(txs.len());
        let mut skipped = Vec::new();
        for (index, tx) in txs.iter().enumerate() {
            let mut cx = TxContext {
                chain_id,
                height,
                time,
                tx_id: tx.id(),
                index: index as u32,
                account: tx.signer().account(),
                signer: tx.signer(),
            };
            match self.apply_tx(tx, &mut cx, &mut apply) {
                Ok(ev) => {
                    self.savepoint(true);
                    events.push((tx.id(), ev));
                }
                Err(error) => {
                    self.savepoint(false);
                    if skip_failed {
                        skipped.push((index, error));
                        continue;
                    }
                    self.discard();
                    return Err(TxFailure {
                        index,
                        tx_id: tx.id(),
                        error,
                    });
                }
            }
        }
        let (tree, replaced) = self.pending_tree();
        Ok((
            Executed {
                tree,
                events,
                replaced,
            },
            skipped,
        ))
    }

    /// Applies `tx` on top of the pending writes as transaction `index` of the block at
    /// `height` and `time`, without computing the state tree; its writes stay pending if `keep`
    /// and it applies, and are rolled back otherwise. For a mempool that keeps its pool applied
    /// as pending writes (see [`take_pending`](Self::take_pending)).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply_pending<P: AppPayload, Ev, E>(
        &mut self,
        chain_id: ChainId,
        height: u64,
        time: u64,
        index: u32,
        tx: &VerifiedTx<P>,
        keep: bool,
        mut apply: impl FnMut(&mut T, &mut CoreTables, &P, &TxContext) -> Result<Vec<Ev>, E>,
    ) -> Result<Vec<Ev>, StateError<E>> {
        let mut cx = TxContext {
            chain_id,
            height,
            time,
            tx_id: tx.id(),
            index,
            account: tx.signer().account(),
            signer: tx.signer(),
        };
        let result = self.apply_tx(tx, &mut cx, &mut apply);
        self.savepoint(keep && result.is_ok());
        result
    }

    /// Commits the pending writes to the tables, leaving the state tree (and so the
    /// [`root`](Self::root)) as it was; returns what undoes them (the disk backend's tests).
    #[cfg(all(test, feature = "redb"))]
    pub(crate) fn commit_untracked(&mut self) -> Result<BlockUndo, StoreError> {
        self.commit(self.tree.clone(), Vec::new())
    }

    /// The committed tree with the pending writes applied, and (on disk) the hashes of the
    /// nodes it replaced.
    fn pending_tree(&self) -> (StateTree, Vec<[u8; 32]>) {
        let mut leaves: Leaves = Vec::new();
        for t in self.tables() {
            t.pending_leaves(&mut leaves);
        }
        leaves.sort_unstable_by_key(|leaf| leaf.0);
        let mut tree = self.tree.clone();
        let replaced = if self.is_on_disk() {
            tree.apply_tracked(&leaves)
        } else {
            tree.apply(&leaves).map(|()| Vec::new())
        }
        .expect("leaf updates are sorted and unique: every table entry has its own key");
        (tree, replaced)
    }

    /// Runs `apply` as if `signer` had signed a transaction in block `height` at `time`, with
    /// `tx_id` for the ids it derives, skipping signatures and nonces; keeps its writes pending
    /// (or rolls them back on error).
    ///
    /// For benchmarks that build large states without mining; with
    /// [`bench_commit_untracked`](Self::bench_commit_untracked), the state root goes stale.
    ///
    /// # Errors
    ///
    /// What `apply` returns.
    #[doc(hidden)]
    pub fn bench_apply<R, E>(
        &mut self,
        signer: PublicKey,
        height: u64,
        time: u64,
        tx_id: TxId,
        apply: impl FnOnce(&mut T, &mut CoreTables, &TxContext) -> Result<R, E>,
    ) -> Result<R, E> {
        let cx = TxContext {
            chain_id: ChainId::default(),
            height,
            time,
            tx_id,
            index: 0,
            account: self.account_of_key(&signer),
            signer,
        };
        let result = apply(&mut self.app, &mut self.core, &cx);
        self.savepoint(result.is_ok());
        result
    }

    /// Commits pending writes to the tables without updating the state tree (benchmarks
    /// only: the state root no longer matches the tables).
    #[doc(hidden)]
    pub fn bench_commit_untracked(&mut self) {
        if let Err(e) = self.commit(self.tree.clone(), Vec::new()) {
            panic!("benchmark state: {e}");
        }
    }

    /// Commits pending writes with the state tree: the batch applied to it, and on disk its
    /// new nodes written with the block (benchmarks only: a chain commits executed blocks).
    #[doc(hidden)]
    pub fn bench_commit_tracked(&mut self) {
        let (tree, replaced) = self.pending_tree();
        if let Err(e) = self.commit(tree, replaced) {
            panic!("benchmark state: {e}");
        }
    }

    /// Takes the pending writes of `executed` out of the tables (which are then as after
    /// [`discard`](Self::discard)) to commit later; `None` if a table cannot set its writes
    /// aside or a read failed (the writes are then discarded).
    pub(crate) fn set_aside<Ev>(&mut self, executed: Executed<Ev>) -> Option<SetAside<Ev>> {
        if self.take_read_failure().is_some() {
            self.discard();
            return None;
        }
        let Pending { base, tables } = self.take_pending()?;
        Some(SetAside {
            base,
            executed,
            tables,
        })
    }

    /// Puts writes set aside back as pending, if they were made on this very state (same
    /// root, no pending writes), and returns the execution they came from, ready for
    /// [`commit_block`](Self::commit_block); otherwise `None` and nothing changed.
    pub(crate) fn take_back<Ev>(&mut self, set_aside: SetAside<Ev>) -> Option<Executed<Ev>> {
        self.restore_pending(Pending {
            base: set_aside.base,
            tables: set_aside.tables,
        })
        .then_some(set_aside.executed)
    }

    /// Takes every table's pending writes out, leaving none (as [`discard`](Self::discard)
    /// does); `None` if a table cannot set its writes aside (they are then all discarded).
    pub(crate) fn take_pending(&mut self) -> Option<Pending> {
        let taken: Vec<_> = self
            .tables_mut()
            .into_iter()
            .map(|t| t.take_block())
            .collect();
        let tables = taken.into_iter().collect::<Option<Vec<_>>>()?;
        Some(Pending {
            base: self.root(),
            tables,
        })
    }

    /// Puts back as pending writes what [`take_pending`](Self::take_pending) took from this
    /// state, which has no pending writes since; `false` if the state committed a block
    /// meanwhile (another root) or a table refuses its part (nothing is pending then).
    pub(crate) fn restore_pending(&mut self, pending: Pending) -> bool {
        if pending.base != self.root() {
            return false;
        }
        let count = pending.tables.len();
        let mut restored = 0;
        for (table, writes) in self.tables_mut().into_iter().zip(pending.tables) {
            if !table.restore_block(writes) {
                break;
            }
            restored += 1;
        }
        if restored != count || restored != self.tables().len() {
            self.discard();
            return false;
        }
        true
    }

    /// [`next_nonce`](Self::next_nonce) with `pending` (taken from this state) applied.
    pub(crate) fn next_nonce_with(&self, pending: Option<&Pending>, account: &AccountId) -> u64 {
        self.core
            .accounts
            .get_with(pending.and_then(|p| p.table(ACCOUNTS_SLOT)), account)
            .map_or(0, |a| a.next_nonce)
    }

    /// [`account_of_key`](Self::account_of_key) with `pending` (taken from this state) applied.
    pub(crate) fn account_of_key_with(
        &self,
        pending: Option<&Pending>,
        key: &PublicKey,
    ) -> AccountId {
        self.core
            .keys
            .get_with(pending.and_then(|p| p.table(KEYS_SLOT)), key)
            .map_or(key.account(), |k| k.account)
    }

    /// Drops the pending writes of an executed block.
    pub(crate) fn discard(&mut self) {
        for t in self.tables_mut() {
            t.discard_block();
        }
    }

    /// Commits an executed block, returning what undoes it.
    ///
    /// # Errors
    ///
    /// On the disk backend, [`StoreError::Backend`] with the [`disk::DiskError`] if the block
    /// cannot be written; its pending writes are discarded and the state is as before.
    pub(crate) fn commit_block<Ev>(
        &mut self,
        executed: Executed<Ev>,
    ) -> Result<BlockUndo, StoreError> {
        self.commit(executed.tree, executed.replaced)
    }

    /// Commits the pending writes with `tree` as the new state tree (the committed one for an
    /// untracked commit), which replaced the committed tree's nodes `replaced`; on disk, in one
    /// database transaction first, with the tree's new nodes.
    #[cfg_attr(not(feature = "redb"), allow(unused_mut, unused_variables))]
    fn commit(
        &mut self,
        mut tree: StateTree,
        replaced: Vec<[u8; 32]>,
    ) -> Result<BlockUndo, StoreError> {
        #[cfg(feature = "redb")]
        if let Some(failure) = self.take_read_failure() {
            // A read made for these writes failed, so they may rest on a wrong answer.
            self.discard();
            return Err(failure);
        }
        #[cfg(feature = "redb")]
        if let Some(mut disk) = self.disk.take() {
            let (tags, writes) = self.pending_disk_writes();
            let (persisted, nodes) = tree.persist(disk.tree_memory_depth());
            let write = disk::TreeWrite {
                new: &nodes,
                replaced: &replaced,
                root: tree.root(),
                entries: tree.len() as u64,
            };
            let written = disk.commit_block(&tags, &writes, write);
            self.disk = Some(disk);
            if let Err(e) = written {
                self.discard();
                return Err(StoreError::Backend(Box::new(e)));
            }
            tree = persisted;
        }
        Ok(self.commit_tables(tree))
    }

    /// Every table's tag and pending writes as canonical bodies, in the state's table order
    /// (what the disk backend writes).
    #[cfg(feature = "redb")]
    fn pending_disk_writes(&self) -> (Vec<&'static str>, Vec<Vec<disk::EncodedWrite>>) {
        self.tables()
            .iter()
            .map(|t| {
                let mut out = Vec::new();
                t.pending_writes(&mut out);
                (t.tag(), out)
            })
            .unzip()
    }

    /// Commits the pending writes in the tables (after the database, if on disk).
    fn commit_tables(&mut self, tree: StateTree) -> BlockUndo {
        let tables = self
            .tables_mut()
            .into_iter()
            .map(|t| t.commit_block())
            .collect();
        let tree = core::mem::replace(&mut self.tree, tree);
        BlockUndo { tree, tables }
    }

    /// Undoes the last committed block.
    ///
    /// # Panics
    ///
    /// On the disk backend, if the database cannot be written: the block's undo records are
    /// then still there, but the state in memory and on disk can no longer be trusted to
    /// agree (see [`disk`]).
    pub(crate) fn undo(&mut self, undo: BlockUndo) {
        #[cfg(feature = "redb")]
        if let Some(mut disk) = self.disk.take() {
            let tags: Vec<&'static str> = self.tables().iter().map(|t| t.tag()).collect();
            let (root, entries) = (undo.tree.root(), undo.tree.len() as u64);
            if let Err(e) = disk.undo_block(&tags, root, entries) {
                panic!("state database: cannot undo a block: {e}");
            }
            self.disk = Some(disk);
        }
        for (t, u) in self.tables_mut().into_iter().zip(undo.tables) {
            t.undo_block(u);
        }
        self.tree = undo.tree;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes account `n` (nonce `nonce`) as the pending block of `state` and returns the
    /// execution a block making that write would give.
    fn pending_write(state: &mut State<()>, n: u8, nonce: u64) -> Executed<()> {
        let key = crate::tx::Keypair::from_seed(&[n; 32]).public();
        let state_entry = AccountState {
            next_nonce: nonce,
            key,
        };
        state.core.accounts.insert(key.account(), state_entry);
        state.savepoint(true);
        let (tree, replaced) = state.pending_tree();
        Executed {
            tree,
            events: Vec::new(),
            replaced,
        }
    }

    #[test]
    fn writes_set_aside_come_back_on_the_same_state_and_commit_as_executed() {
        let mut state: State<()> = State::new();
        let executed = pending_write(&mut state, 1, 7);
        let root = executed.tree.root();
        let aside = state.set_aside(executed).unwrap();
        assert_eq!(aside.root(), root);
        // Set aside, the writes are not visible.
        let account = crate::tx::Keypair::from_seed(&[1; 32]).public().account();
        assert_eq!(state.next_nonce(&account), 0);
        let executed = state.take_back(aside).unwrap();
        state.commit_block(executed).unwrap();
        assert_eq!(state.root(), root);
        assert_eq!(state.next_nonce(&account), 7);
    }

    #[test]
    fn writes_set_aside_are_refused_once_the_state_has_changed() {
        let mut state: State<()> = State::new();
        let first = pending_write(&mut state, 1, 7);
        let aside = state.set_aside(first).unwrap();
        // Another block commits meanwhile: the writes were made on a state that is gone.
        let other = pending_write(&mut state, 2, 3);
        state.commit_block(other).unwrap();
        let root = state.root();
        assert!(state.take_back(aside).is_none());
        assert_eq!(state.root(), root, "a refused set-aside changes nothing");
        let account = crate::tx::Keypair::from_seed(&[1; 32]).public().account();
        assert_eq!(state.next_nonce(&account), 0);
    }
}
