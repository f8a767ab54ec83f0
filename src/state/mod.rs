//! The ledger state: what applying every block from genesis produces.
//!
//! The state is a set of typed tables (accounts and their nonces, keys, and the access-control
//! contracts), all committed to one [`StateTree`] whose root every block header carries.
//! Applying a block is transactional at two levels: a transaction that fails leaves no trace
//! (per-transaction savepoints), and a block is either committed whole — after its state root is
//! checked against the header — or discarded. Committed blocks keep undo data so the chain can
//! roll back to a fork point when it reorganises.

mod table;

use core::any::Any;

use serde::{Deserialize, Serialize};

use crate::access::{self, AccessError, AccessEvent, AccessState, Name};
use crate::hash::{AccountId, ChainId, Digest, StateRoot, TxId};
use crate::smt::{StateProof, StateTree};
use crate::tx::{Payload, PublicKey, VerifiedTx};

pub use table::{entry_key, value_digest};
pub(crate) use table::{Leaves, Table, TableOps};

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

/// Something that happened when a transaction was applied, for embedders to notify users.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A record hash was anchored.
    Anchored {
        /// The account that anchored it.
        account: AccountId,
        /// The record's content hash.
        record: Digest,
    },
    /// An access-control state change.
    Access(AccessEvent),
}

/// Why a transaction cannot be applied to the current state. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
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
    /// The access-control operation was refused.
    #[error("access control: {0}")]
    Access(#[from] AccessError),
}

/// The state of the ledger.
pub struct State {
    tree: StateTree,
    pub(crate) accounts: Table<AccountId, AccountState>,
    pub(crate) keys: Table<PublicKey, KeyState>,
    pub(crate) access: AccessState,
}

impl core::fmt::Debug for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("root", &self.tree.root())
            .field("entries", &self.tree.len())
            .finish_non_exhaustive()
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// The outcome of executing a block's transactions: pending writes in the tables, plus the tree
/// they would produce. Commit it with [`State::commit`] or drop it with [`State::discard`].
pub(crate) struct Executed {
    pub(crate) tree: StateTree,
    pub(crate) events: Vec<(TxId, Vec<Event>)>,
}

/// What undoes one committed block.
pub(crate) struct BlockUndo {
    tree: StateTree,
    tables: Vec<Box<dyn Any + Send + Sync>>,
}

/// A transaction that failed while executing a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction {index} ({tx_id}): {error}")]
pub struct TxFailure {
    /// Position in the block.
    pub index: usize,
    /// Its id.
    pub tx_id: TxId,
    /// Why it failed.
    #[source]
    pub error: StateError,
}

impl State {
    /// The empty state.
    pub fn new() -> Self {
        Self {
            tree: StateTree::new(),
            accounts: Table::new(ACCOUNTS_TABLE),
            keys: Table::new(KEYS_TABLE),
            access: AccessState::new(),
        }
    }

    /// The genesis state: the health authorities registered at height 0 and `time`.
    pub(crate) fn genesis(authorities: &[(Name, PublicKey)], time: u64) -> Self {
        let mut state = Self::new();
        if authorities.is_empty() {
            return state;
        }
        access::genesis(
            &mut state.access,
            &mut state.keys,
            &mut state.accounts,
            authorities,
            time,
        );
        state.savepoint(true);
        let tree = state.pending_tree();
        state.commit(Executed {
            tree,
            events: Vec::new(),
        });
        state
    }

    /// The access-control state.
    pub fn access(&self) -> &AccessState {
        &self.access
    }

    /// The key that signed for `account` in the state after block `height`, for accounts
    /// registered with the access-control registrar (which keeps the key history).
    pub fn key_at(&self, account: &AccountId, height: u64) -> Option<PublicKey> {
        self.access.key_at(&self.keys, account, height)
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
        self.accounts.get_committed(account)
    }

    /// The nonce the account's next transaction must carry.
    pub fn next_nonce(&self, account: &AccountId) -> u64 {
        self.accounts.get(account).map_or(0, |a| a.next_nonce)
    }

    /// The account a key signs for (its own account if the key was never registered or rotated).
    pub fn account_of_key(&self, key: &PublicKey) -> AccountId {
        self.keys.get(key).map_or(key.account(), |k| k.account)
    }

    /// A proof of the committed entry `key` of table `tag` against [`root`](Self::root).
    pub fn prove<K: Serialize + ?Sized>(&self, tag: &str, key: &K) -> StateProof {
        self.tree.prove(&entry_key(tag, key))
    }

    fn tables_mut(&mut self) -> Vec<&mut dyn TableOps> {
        let mut out: Vec<&mut dyn TableOps> = vec![&mut self.accounts, &mut self.keys];
        self.access.tables_mut(&mut out);
        out
    }

    fn tables(&self) -> Vec<&dyn TableOps> {
        let mut out: Vec<&dyn TableOps> = vec![&self.accounts, &self.keys];
        self.access.tables(&mut out);
        out
    }

    /// Applies one transaction; on error nothing is changed.
    fn apply_tx(&mut self, tx: &VerifiedTx, cx: &mut TxContext) -> Result<Vec<Event>, StateError> {
        let signer = tx.signer();
        let account = match self.keys.get(&signer) {
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
        let events = match &tx.body().payload {
            Payload::Data { record } => vec![Event::Anchored {
                account,
                record: *record,
            }],
            Payload::Access(op) => self
                .access
                .apply(op, cx, &mut self.keys, &mut self.accounts)?
                .into_iter()
                .map(Event::Access)
                .collect(),
        };
        self.accounts.update(
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

    /// Executes `txs` in order as block `height` at `time`. With `skip_failed`, a failing
    /// transaction is rolled back and left out (block building); otherwise the first failure
    /// discards the whole block and is returned.
    pub(crate) fn execute(
        &mut self,
        chain_id: ChainId,
        height: u64,
        time: u64,
        txs: &[VerifiedTx],
        skip_failed: bool,
    ) -> Result<(Executed, Vec<(usize, StateError)>), TxFailure> {
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
            match self.apply_tx(tx, &mut cx) {
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
        let tree = self.pending_tree();
        Ok((Executed { tree, events }, skipped))
    }

    /// Applies `tx` on top of the pending writes as transaction `index` of the block at
    /// `height` and `time`, without computing the state tree; its writes stay pending if `keep`
    /// and it applies, and are rolled back otherwise. For a mempool that keeps its pool applied
    /// on its own copy of the state.
    pub(crate) fn apply_pending(
        &mut self,
        chain_id: ChainId,
        height: u64,
        time: u64,
        index: u32,
        tx: &VerifiedTx,
        keep: bool,
    ) -> Result<Vec<Event>, StateError> {
        let mut cx = TxContext {
            chain_id,
            height,
            time,
            tx_id: tx.id(),
            index,
            account: tx.signer().account(),
            signer: tx.signer(),
        };
        let result = self.apply_tx(tx, &mut cx);
        self.savepoint(keep && result.is_ok());
        result
    }

    /// Commits the pending writes to the tables, leaving the state tree (and so the
    /// [`root`](Self::root)) as it was; returns what undoes them. For a copy of the state that
    /// answers queries but is never proved from.
    pub(crate) fn commit_untracked(&mut self) -> BlockUndo {
        let tables = self
            .tables_mut()
            .into_iter()
            .map(|t| t.commit_block())
            .collect();
        BlockUndo {
            tree: self.tree.clone(),
            tables,
        }
    }

    /// The committed tree with the pending writes applied.
    fn pending_tree(&self) -> StateTree {
        let mut leaves: Leaves = Vec::new();
        for t in self.tables() {
            t.pending_leaves(&mut leaves);
        }
        leaves.sort_unstable_by_key(|leaf| leaf.0);
        let mut tree = self.tree.clone();
        tree.apply(&leaves)
            .expect("leaf updates are sorted and unique: every table entry has its own key");
        tree
    }

    /// Applies an access-control operation as if `signer` had signed it in block `height` at
    /// `time`, with `tx_id` for the ids it derives, skipping signatures and nonces; keeps it
    /// pending (or rolls it back on error).
    ///
    /// For benchmarks that build large states without mining; with
    /// [`bench_commit_untracked`](Self::bench_commit_untracked), the state root goes stale.
    ///
    /// # Errors
    ///
    /// The operation's [`AccessError`].
    #[doc(hidden)]
    pub fn bench_apply_access(
        &mut self,
        signer: PublicKey,
        op: &access::AccessOp,
        height: u64,
        time: u64,
        tx_id: TxId,
    ) -> Result<Vec<AccessEvent>, AccessError> {
        let cx = TxContext {
            chain_id: ChainId::default(),
            height,
            time,
            tx_id,
            index: 0,
            account: self.account_of_key(&signer),
            signer,
        };
        let result = self
            .access
            .apply(op, &cx, &mut self.keys, &mut self.accounts);
        self.savepoint(result.is_ok());
        result
    }

    /// The genesis state with `authorities` (benchmarks that build states without a chain).
    #[doc(hidden)]
    pub fn bench_genesis(authorities: &[(Name, PublicKey)], time: u64) -> Self {
        Self::genesis(authorities, time)
    }

    /// Commits pending writes to the tables without updating the state tree (benchmarks
    /// only: the state root no longer matches the tables).
    #[doc(hidden)]
    pub fn bench_commit_untracked(&mut self) {
        for t in self.tables_mut() {
            drop(t.commit_block());
        }
    }

    /// Drops the pending writes of an executed block.
    pub(crate) fn discard(&mut self) {
        for t in self.tables_mut() {
            t.discard_block();
        }
    }

    /// Commits an executed block, returning what undoes it.
    pub(crate) fn commit(&mut self, executed: Executed) -> BlockUndo {
        let tables = self
            .tables_mut()
            .into_iter()
            .map(|t| t.commit_block())
            .collect();
        let tree = core::mem::replace(&mut self.tree, executed.tree);
        BlockUndo { tree, tables }
    }

    /// Undoes the last committed block.
    pub(crate) fn undo(&mut self, undo: BlockUndo) {
        for (t, u) in self.tables_mut().into_iter().zip(undo.tables) {
            t.undo_block(u);
        }
        self.tree = undo.tree;
    }
}
