//! Model-based fuzzing of the chain: an arbitrary sequence of operations (extend any known
//! block, append tampered blocks, garbage bytes and known blocks again, reopen the store, replay)
//! is run against a [`Chain`] and against a reference model, and after every operation the two
//! must agree on the outcome, the main chain, which blocks are known, every account's nonce and
//! the state root.
//!
//! The model is deliberately naive: it keeps every block it ever built with its parent, its
//! height and the account state after it, recomputes the state root from scratch with a fresh
//! [`StateTree`], and decides fork choice by height (every block carries the same work).
//!
//! The input is a byte string read by [`decode`]: one byte for the reorganisation limit, then
//! operations, each a tag byte and its fields. [`encode`] writes it back, so seed scenarios can
//! be committed as readable code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use medledger::block::{Header, HEADER_VERSION};
use medledger::chain::ManualClock;
use medledger::consensus::Consensus;
use medledger::hash::{AccountId, BlockHash, ChainId, Digest, StateRoot};
use medledger::merkle::merkle_root;
use medledger::pow::MAX_FUTURE_BLOCK_TIME;
use medledger::pow::{CompactTarget, PowSeal, ProofOfWork, RetargetParams, Target};
use medledger::smt::StateTree;
use medledger::state::{entry_key, value_digest, AccountState, ACCOUNTS_TABLE};
use medledger::store::{MemoryStore, Store};
use medledger::tx::Keypair;
use medledger::Block;
use medledger::{Appended, Chain, ChainBuilder, ChainError};
use medledger::{Payload, Transaction};

/// Genesis time.
const T0: u64 = 1_750_000_000;
/// The clock of the chain under test.
const NOW: u64 = T0 + 1_000_000_000;
/// Signers.
const KEYS: usize = 4;
/// Operations read from one input, at most.
pub const MAX_OPS: usize = 48;
/// The longest scenario [`decode`] reads: the limit's byte and [`MAX_OPS`] of the longest
/// operation (garbage bytes: a tag, a length byte and up to 255 bytes).
pub const MAX_SCENARIO_LEN: usize = 1 + MAX_OPS * (2 + 255);
/// Tamper kinds (see [`Model::tamper`]).
pub const TAMPER_KINDS: u8 = 12;

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Build an honest block on a known block (`pick` < 128: the tip) with transactions
    /// `(signer, nonce choice)` — a choice of 1 is the signer's next nonce, 0 one less, 2 and 3
    /// gaps; the model leaves out those that fail — `dt` tens of seconds after its parent.
    Extend {
        /// Which known block to build on.
        pick: u8,
        /// Time after the parent, in tens of seconds (plus one second).
        dt: u8,
        /// `(signer, nonce choice)` per offered transaction.
        txs: Vec<(u8, u8)>,
    },
    /// Build a block on a known block and break one rule (`kind` modulo [`TAMPER_KINDS`]).
    Tamper {
        /// Which known block to build on.
        pick: u8,
        /// Which rule to break.
        kind: u8,
        /// A parameter of the kind (signer, time offset).
        dt: u8,
    },
    /// Append these bytes as a block.
    Bytes(Vec<u8>),
    /// Append again a block built earlier (any block, accepted or not).
    Reappend {
        /// Which one.
        pick: u8,
    },
    /// Close the chain and reopen its store.
    Reopen,
    /// Rebuild the state from genesis and compare.
    Replay,
    /// Build a block template on the tip from these transactions and compare with the model.
    Template {
        /// `(signer, nonce choice)` per offered transaction.
        txs: Vec<(u8, u8)>,
    },
}

const TAG_EXTEND: u8 = 0;
const TAG_TAMPER: u8 = 1;
const TAG_BYTES: u8 = 2;
const TAG_REAPPEND: u8 = 3;
const TAG_REOPEN: u8 = 4;
const TAG_REPLAY: u8 = 5;
const TAG_TEMPLATE: u8 = 6;
const TAGS: u8 = 7;

/// Writes a scenario: the reorganisation limit's byte, then the operations.
pub fn encode(reorg_byte: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![reorg_byte];
    let txs = |out: &mut Vec<u8>, txs: &[(u8, u8)]| {
        out.push(txs.len() as u8);
        for (s, c) in txs {
            out.extend([*s, *c]);
        }
    };
    for op in ops {
        match op {
            Op::Extend { pick, dt, txs: t } => {
                out.extend([TAG_EXTEND, *pick, *dt]);
                txs(&mut out, t);
            }
            Op::Tamper { pick, kind, dt } => out.extend([TAG_TAMPER, *pick, *kind, *dt]),
            Op::Bytes(b) => {
                out.extend([TAG_BYTES, b.len() as u8]);
                out.extend_from_slice(b);
            }
            Op::Reappend { pick } => out.extend([TAG_REAPPEND, *pick]),
            Op::Reopen => out.push(TAG_REOPEN),
            Op::Replay => out.push(TAG_REPLAY),
            Op::Template { txs: t } => {
                out.push(TAG_TEMPLATE);
                txs(&mut out, t);
            }
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn txs(&mut self) -> Option<Vec<(u8, u8)>> {
        let n = self.byte()? % 5;
        (0..n).map(|_| Some((self.byte()?, self.byte()?))).collect()
    }
}

/// Reads a scenario: the reorganisation limit (1 to 6) and at most [`MAX_OPS`] operations; an
/// operation cut short by the end of the input is dropped.
pub fn decode(data: &[u8]) -> (u64, Vec<Op>) {
    let mut r = Reader(data);
    let depth = 1 + u64::from(r.byte().unwrap_or(0) % 6);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        let Some(tag) = r.byte() else { break };
        let op = match tag % TAGS {
            TAG_EXTEND => (|| {
                Some(Op::Extend {
                    pick: r.byte()?,
                    dt: r.byte()?,
                    txs: r.txs()?,
                })
            })(),
            TAG_TAMPER => (|| {
                Some(Op::Tamper {
                    pick: r.byte()?,
                    kind: r.byte()?,
                    dt: r.byte()?,
                })
            })(),
            TAG_BYTES => (|| {
                let n = usize::from(r.byte()?);
                let n = n.min(r.0.len());
                let (b, rest) = r.0.split_at(n);
                r.0 = rest;
                Some(Op::Bytes(b.to_vec()))
            })(),
            TAG_REAPPEND => r.byte().map(|pick| Op::Reappend { pick }),
            TAG_REOPEN => Some(Op::Reopen),
            TAG_REPLAY => Some(Op::Replay),
            _ => r.txs().map(|txs| Op::Template { txs }),
        };
        match op {
            Some(op) => ops.push(op),
            None => break,
        }
    }
    (depth, ops)
}

/// The fuzz target: runs the scenario in `data` against a chain and the model.
pub fn run(data: &[u8]) {
    let (depth, ops) = decode(data);
    Harness::new(depth).run(&ops);
}

/// The engine: regtest's target (about one hash in two meets it), so mining costs next to
/// nothing; a tampered seal is made to fail on purpose.
fn engine() -> ProofOfWork {
    ProofOfWork::new(
        RetargetParams::builder()
            .pow_limit(CompactTarget::from_consensus(0x207f_ffff))
            .no_retargeting(true)
            .build()
            .expect("valid parameters"),
    )
}

fn open(store: Box<dyn Store>, depth: u64) -> Chain<ProofOfWork> {
    ChainBuilder::new("chain model", engine())
        .genesis_time(T0)
        .clock(Arc::new(ManualClock::new(NOW)))
        .max_reorg_depth(depth)
        .boxed_store(store)
        .build()
        .expect("the chain opens")
}

type Accounts = BTreeMap<AccountId, AccountState>;

fn state_root(accounts: &Accounts) -> StateRoot {
    accounts
        .iter()
        .map(|(a, s)| (entry_key(ACCOUNTS_TABLE, a), value_digest(s)))
        .collect::<StateTree>()
        .root()
}

/// What appending a block does, as far as the model tells outcomes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Extended the main chain.
    Extended,
    /// Stored on a side branch.
    Side,
    /// Reorganised onto the block's branch.
    Reorg,
    /// Refused: already known.
    AlreadyKnown,
    /// Refused: it or its parent is known to be invalid.
    KnownInvalid,
    /// Refused: unknown parent.
    UnknownParent,
    /// Refused by a check that needs no state (height, structure, signatures, seal, time).
    Immediate,
    /// Refused when executed: a transaction or the state root fails.
    Invalid,
    /// Refused: the reorganisation would be deeper than the limit.
    TooDeep,
}

fn outcome(r: &Result<Appended, ChainError>) -> Outcome {
    match r {
        Ok(a) if a.is_side_branch() => Outcome::Side,
        Ok(a) if a.reverted.is_empty() => Outcome::Extended,
        Ok(_) => Outcome::Reorg,
        Err(ChainError::AlreadyKnown(_)) => Outcome::AlreadyKnown,
        Err(ChainError::KnownInvalid(_)) => Outcome::KnownInvalid,
        Err(ChainError::UnknownParent(_)) => Outcome::UnknownParent,
        Err(
            ChainError::BadHeight { .. }
            | ChainError::TimestampBeforeParent { .. }
            | ChainError::Structure(_)
            | ChainError::Consensus(_)
            | ChainError::Decode(_),
        ) => Outcome::Immediate,
        Err(ChainError::Tx { .. } | ChainError::StateRoot { .. }) => Outcome::Invalid,
        Err(ChainError::ReorgTooDeep { .. }) => Outcome::TooDeep,
        Err(e) => panic!("unexpected chain error: {e}"),
    }
}

/// A block the model built.
struct MBlock {
    block: Block<PowSeal>,
    /// Refused whatever its branch, by a check that needs no state.
    immediate: bool,
    /// Executes correctly on its parent's state.
    valid: bool,
    /// The accounts after it, if it and every ancestor execute correctly.
    state: Option<Accounts>,
}

impl MBlock {
    fn height(&self) -> u64 {
        self.block.header.height
    }
    fn parent(&self) -> BlockHash {
        self.block.header.parent
    }
}

/// The reference model: every block built, and what the chain should know of them.
struct Model {
    blocks: HashMap<BlockHash, MBlock>,
    /// Blocks in the order built (for [`Op::Reappend`]).
    built: Vec<BlockHash>,
    /// Blocks the chain should hold, in the order they were accepted (for picking a parent).
    index: Vec<BlockHash>,
    invalid: HashSet<BlockHash>,
    main: Vec<BlockHash>,
    /// Blocks written to the store, in order.
    stored: Vec<BlockHash>,
    max_reorg: u64,
}

impl Model {
    fn tip(&self) -> &MBlock {
        &self.blocks[self.main.last().expect("genesis")]
    }

    fn known(&self, h: &BlockHash) -> bool {
        self.index.contains(h)
    }

    fn accept(&mut self, h: BlockHash, replaying: bool) {
        self.index.push(h);
        if !replaying && !self.stored.contains(&h) {
            self.stored.push(h);
        }
    }

    /// What appending block `h` must do; applies it to the model.
    fn append(&mut self, h: BlockHash, replaying: bool) -> Outcome {
        let b = &self.blocks[&h];
        let parent = b.parent();
        if self.known(&h) {
            return Outcome::AlreadyKnown;
        }
        if self.invalid.contains(&h) || self.invalid.contains(&parent) {
            return Outcome::KnownInvalid;
        }
        if !self.known(&parent) {
            return Outcome::UnknownParent;
        }
        if b.immediate {
            return Outcome::Immediate;
        }
        let tip_height = self.tip().height();
        if Some(&parent) == self.main.last() {
            if !b.valid {
                return Outcome::Invalid;
            }
            self.main.push(h);
            self.accept(h, replaying);
            return Outcome::Extended;
        }
        if b.height() <= tip_height {
            self.accept(h, replaying);
            return Outcome::Side;
        }
        // Heavier: walk back to the main chain.
        let mut branch = vec![h];
        let mut cursor = parent;
        while self.main.get(self.blocks[&cursor].height() as usize) != Some(&cursor) {
            branch.push(cursor);
            cursor = self.blocks[&cursor].parent();
        }
        let fork_height = self.blocks[&cursor].height();
        if tip_height - fork_height > self.max_reorg {
            return Outcome::TooDeep;
        }
        branch.reverse();
        if let Some(bad) = branch.iter().find(|x| !self.blocks[*x].valid).copied() {
            // The invalid block and everything on it is forgotten for good.
            self.invalid.insert(h);
            let mut doomed = vec![bad];
            while let Some(d) = doomed.pop() {
                self.invalid.insert(d);
                self.index.retain(|x| *x != d);
                doomed.extend(
                    self.index
                        .iter()
                        .filter(|x| self.blocks[*x].parent() == d)
                        .copied(),
                );
            }
            return Outcome::Invalid;
        }
        self.main.truncate(fork_height as usize + 1);
        self.main.extend(branch);
        self.accept(h, replaying);
        Outcome::Reorg
    }

    /// The model after the store is reopened: the stored blocks re-appended in stored order.
    fn reopened(&mut self) {
        let genesis = self.main[0];
        self.index = vec![genesis];
        self.invalid.clear();
        self.main = vec![genesis];
        for h in self.stored.clone().into_iter().skip(1) {
            self.append(h, true);
        }
    }
}

/// The chain under test, the model, and what builds blocks for both.
struct Harness {
    chain: Chain<ProofOfWork>,
    model: Model,
    keys: Vec<Keypair>,
    chain_id: ChainId,
    depth: u64,
    /// Makes every transaction's record distinct.
    counter: u64,
    step: usize,
}

impl Harness {
    fn new(depth: u64) -> Self {
        let chain = open(Box::new(MemoryStore::new()), depth);
        let genesis = chain.genesis_hash();
        let block = chain
            .block(&genesis)
            .expect("store readable")
            .expect("genesis stored");
        let mut blocks = HashMap::new();
        blocks.insert(
            genesis,
            MBlock {
                block,
                immediate: false,
                valid: true,
                state: Some(Accounts::new()),
            },
        );
        Self {
            chain_id: chain.chain_id(),
            chain,
            model: Model {
                blocks,
                built: Vec::new(),
                index: vec![genesis],
                invalid: HashSet::new(),
                main: vec![genesis],
                stored: vec![genesis],
                max_reorg: depth,
            },
            keys: (1..=KEYS as u8)
                .map(|i| Keypair::from_seed(&[i; 32]))
                .collect(),
            depth,
            counter: 0,
            step: 0,
        }
    }

    fn run(&mut self, ops: &[Op]) {
        self.check();
        for (step, op) in ops.iter().enumerate() {
            self.step = step;
            match op {
                Op::Extend { pick, dt, txs } => {
                    let parent = self.pick_parent(*pick);
                    let (block, valid, state) = self.build(parent, txs, *dt);
                    self.submit(block, false, valid, state);
                }
                Op::Tamper { pick, kind, dt } => {
                    let parent = self.pick_parent(*pick);
                    let (block, immediate, valid) = self.tamper(parent, *kind % TAMPER_KINDS, *dt);
                    self.submit(block, immediate, valid, None);
                }
                Op::Bytes(bytes) => {
                    let before = self.snapshot();
                    let r = self.chain.append_bytes(bytes);
                    assert!(r.is_err(), "step {step}: garbage accepted as a block");
                    assert_eq!(
                        self.snapshot(),
                        before,
                        "step {step}: garbage changed the chain"
                    );
                }
                Op::Reappend { pick } => {
                    if !self.model.built.is_empty() {
                        let h = self.model.built[usize::from(*pick) % self.model.built.len()];
                        let block = self.model.blocks[&h].block.clone();
                        let got = outcome(&self.chain.append(block));
                        let want = self.model.append(h, false);
                        assert_eq!(got, want, "step {step}: re-appending {h}");
                    }
                }
                Op::Reopen => {
                    let chain = core::mem::replace(
                        &mut self.chain,
                        open(Box::new(MemoryStore::new()), self.depth),
                    );
                    self.chain = open(chain.into_store(), self.depth);
                    self.model.reopened();
                }
                Op::Replay => {
                    let replayed = self.chain.replay_state().expect("the main chain replays");
                    assert_eq!(replayed.root(), self.chain.state().root(), "step {step}");
                }
                Op::Template { txs } => self.template(txs),
            }
            self.check();
        }
    }

    fn pick_parent(&self, pick: u8) -> BlockHash {
        if pick < 128 {
            *self.model.main.last().expect("genesis")
        } else {
            self.model.index[usize::from(pick - 128) % self.model.index.len()]
        }
    }

    /// Signs the offered transactions against `accounts`, returning them with whether each
    /// should be included (its nonce is the next one), and the accounts after the included ones.
    fn sign(
        &mut self,
        accounts: &Accounts,
        offered: &[(u8, u8)],
    ) -> (Vec<(Transaction, bool)>, Accounts) {
        let mut acc = accounts.clone();
        let mut out = Vec::with_capacity(offered.len());
        for (s, c) in offered {
            let key = &self.keys[usize::from(*s) % KEYS];
            let account = key.account();
            let expected = acc.get(&account).map_or(0, |a| a.next_nonce);
            let nonce = expected.wrapping_add(u64::from(*c % 4)).wrapping_sub(1);
            self.counter += 1;
            let mut record = [0u8; 32];
            record[..8].copy_from_slice(&self.counter.to_le_bytes());
            let tx = Transaction::sign(
                key,
                self.chain_id,
                nonce,
                Payload::Data {
                    record: Digest::from_bytes(record),
                },
            );
            let ok = nonce == expected;
            if ok {
                acc.entry(account)
                    .or_insert(AccountState {
                        next_nonce: 0,
                        key: key.public(),
                    })
                    .next_nonce = expected + 1;
            }
            out.push((tx, ok));
        }
        (out, acc)
    }

    fn bits(&self) -> CompactTarget {
        self.chain.engine().genesis_seal().bits
    }

    /// A sealed block on `parent` holding `txs` with state root `state_root`.
    fn seal(
        &self,
        parent: BlockHash,
        height: u64,
        time: u64,
        txs: Vec<Transaction>,
        state_root: StateRoot,
    ) -> Block<PowSeal> {
        let ids: Vec<_> = txs.iter().map(Transaction::id).collect();
        let header = Header {
            version: HEADER_VERSION,
            height,
            parent,
            tx_root: merkle_root(&ids),
            tx_count: txs.len() as u32,
            state_root,
            timestamp: time,
            seal: PowSeal {
                bits: self.bits(),
                nonce: 0,
                extra_nonce: 0,
            },
        };
        self.remine(Block {
            header,
            txs: txs.try_into().expect("few transactions"),
        })
    }

    fn remine(&self, mut block: Block<PowSeal>) -> Block<PowSeal> {
        let never = AtomicBool::new(false);
        block.header.seal = self
            .chain
            .engine()
            .solve(block.header.clone(), &never)
            .expect("solvable target");
        block
    }

    /// An honest block on `parent` (if its state is known; otherwise a block that cannot be
    /// valid, since an ancestor is not), with whether it is valid and the state after it.
    fn build(
        &mut self,
        parent: BlockHash,
        offered: &[(u8, u8)],
        dt: u8,
    ) -> (Block<PowSeal>, bool, Option<Accounts>) {
        let p = &self.model.blocks[&parent];
        let (height, time) = (
            p.height() + 1,
            p.block.header.timestamp + 1 + 10 * u64::from(dt),
        );
        let parent_root = p.block.header.state_root;
        match p.state.clone() {
            Some(accounts) => {
                let (signed, after) = self.sign(&accounts, offered);
                let txs = signed
                    .into_iter()
                    .filter(|(_, ok)| *ok)
                    .map(|(t, _)| t)
                    .collect();
                let block = self.seal(parent, height, time, txs, state_root(&after));
                (block, true, Some(after))
            }
            None => {
                let (signed, _) = self.sign(&Accounts::new(), offered);
                let txs = signed.into_iter().map(|(t, _)| t).collect();
                (
                    self.seal(parent, height, time, txs, parent_root),
                    false,
                    None,
                )
            }
        }
    }

    /// A block on `parent` breaking one rule; returns it with whether a check that needs no
    /// state refuses it, and whether it executes correctly.
    fn tamper(&mut self, parent: BlockHash, kind: u8, dt: u8) -> (Block<PowSeal>, bool, bool) {
        let signer = dt % KEYS as u8;
        // Ancestors' validity carries over: a block on an invalid branch is never valid.
        let (block, valid, _) = self.build(parent, &[(signer, 1)], dt);
        let tx = block.txs.first().cloned();
        let mut b = block.clone();
        let with_txs = |h: &Self, mut b: Block<PowSeal>, txs: Vec<Transaction>| {
            let ids: Vec<_> = txs.iter().map(Transaction::id).collect();
            b.header.tx_root = merkle_root(&ids);
            b.header.tx_count = txs.len() as u32;
            b.txs = txs.try_into().expect("few transactions");
            h.remine(b)
        };
        match kind {
            // A state root the transactions do not produce: found only on execution.
            0 => {
                b.header.state_root = StateRoot::from_bytes([0xaa; 32]);
                (self.remine(b), false, false)
            }
            // A transaction whose nonce is not the signer's next: found only on execution.
            1 => {
                let key = &self.keys[usize::from(signer)];
                let account = key.account();
                // The signer's next nonce before this block: one less (a replay) or a gap.
                let next = self.model.blocks[&parent]
                    .state
                    .as_ref()
                    .and_then(|s| s.get(&account))
                    .map_or(0, |a| a.next_nonce);
                let stale = next.wrapping_sub(1).wrapping_add(u64::from(dt % 2) * 3);
                let t = Transaction::sign(
                    key,
                    self.chain_id,
                    stale,
                    Payload::Data {
                        record: Digest::from_bytes([0xbb; 32]),
                    },
                );
                (with_txs(self, b, vec![t]), false, false)
            }
            // A transaction root that does not match the body.
            2 => {
                b.header.tx_root = medledger::hash::MerkleRoot::from_bytes([dt; 32]);
                (self.remine(b), true, valid)
            }
            // A time too far ahead of the clock.
            3 => {
                b.header.timestamp = NOW + MAX_FUTURE_BLOCK_TIME + 1 + u64::from(dt);
                (self.remine(b), true, valid)
            }
            // A time not after the median time past (and, above genesis, before the parent's).
            4 => {
                b.header.timestamp = T0;
                (self.remine(b), true, valid)
            }
            // A height that is not the parent's plus one.
            5 => {
                b.header.height += 1 + u64::from(dt);
                (self.remine(b), true, valid)
            }
            // An unknown parent.
            6 => {
                b.header.parent = BlockHash::from_bytes([dt ^ 0x5a; 32]);
                (self.remine(b), false, valid)
            }
            // A transaction signed for another chain.
            7 => {
                let key = &self.keys[usize::from(signer)];
                let t = Transaction::sign(
                    key,
                    ChainId::from_bytes([dt; 32]),
                    0,
                    Payload::Data {
                        record: Digest::from_bytes([0xcc; 32]),
                    },
                );
                (with_txs(self, b, vec![t]), true, valid)
            }
            // A seal that does not meet its target.
            8 => {
                let target = Target::from_compact(b.header.seal.bits).expect("valid bits");
                while target.is_met_by(&ProofOfWork::pow_hash(&b.header)) {
                    b.header.seal.nonce = b.header.seal.nonce.wrapping_add(1);
                }
                (b, true, valid)
            }
            // A transaction altered after signing.
            9 => {
                let mut t = tx.expect("one transaction");
                t.body.payload = Payload::Data {
                    record: Digest::from_bytes([0xdd; 32]),
                };
                (with_txs(self, b, vec![t]), true, valid)
            }
            // A seal claiming another target than the rules require (met, but not the one due).
            10 => {
                b.header.seal.bits = CompactTarget::from_consensus(0x2000_ffff);
                (self.remine(b), true, valid)
            }
            // The same transaction twice.
            _ => {
                let t = tx.expect("one transaction");
                (with_txs(self, b, vec![t.clone(), t]), true, valid)
            }
        }
    }

    /// Appends `block` to the chain and the model and compares the outcomes.
    fn submit(
        &mut self,
        block: Block<PowSeal>,
        immediate: bool,
        valid: bool,
        state: Option<Accounts>,
    ) {
        let h = block.hash();
        if !self.model.blocks.contains_key(&h) {
            let parent_state = self
                .model
                .blocks
                .get(&block.header.parent)
                .and_then(|p| p.state.as_ref());
            let state = if valid && parent_state.is_some() {
                state
            } else {
                None
            };
            self.model.blocks.insert(
                h,
                MBlock {
                    block: block.clone(),
                    immediate,
                    valid,
                    state,
                },
            );
            self.model.built.push(h);
        }
        let before = self.snapshot();
        let r = self.chain.append(block);
        let got = outcome(&r);
        let want = self.model.append(h, false);
        assert_eq!(got, want, "step {}: appending {h}: {r:?}", self.step);
        if r.is_err() {
            assert_eq!(
                self.snapshot(),
                before,
                "step {}: a refused block changed the chain",
                self.step
            );
        }
    }

    fn template(&mut self, offered: &[(u8, u8)]) {
        let tip = self.model.tip();
        let (height, time) = (tip.height() + 1, tip.block.header.timestamp + 1);
        let accounts = tip.state.clone().expect("the tip's state is known");
        let (signed, after) = self.sign(&accounts, offered);
        let before = self.snapshot();
        let txs: Vec<Transaction> = signed.iter().map(|(t, _)| t.clone()).collect();
        let t = self
            .chain
            .build_template(txs, time)
            .expect("well-signed transactions");
        let included: Vec<Transaction> = signed
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(t, _)| t.clone())
            .collect();
        assert_eq!(t.txs, included, "step {}: template inclusion", self.step);
        assert_eq!(t.rejected.len(), signed.len() - included.len());
        assert_eq!(
            t.state_root,
            state_root(&after),
            "step {}: template state root",
            self.step
        );
        assert_eq!(t.height, height);
        assert_eq!(t.parent, *self.model.main.last().expect("genesis"));
        assert_eq!(
            self.snapshot(),
            before,
            "step {}: a template changed the chain",
            self.step
        );
    }

    fn snapshot(&self) -> (BlockHash, u64, StateRoot) {
        (
            self.chain.tip(),
            self.chain.height(),
            self.chain.state().root(),
        )
    }

    /// The chain and the model agree on everything observable.
    fn check(&self) {
        let step = self.step;
        let m = &self.model;
        assert_eq!(
            self.chain.height(),
            m.main.len() as u64 - 1,
            "step {step}: height"
        );
        for (i, h) in m.main.iter().enumerate() {
            assert_eq!(
                self.chain.hash_at(i as u64),
                Some(*h),
                "step {step}: main chain at {i}"
            );
        }
        let accounts = m.tip().state.as_ref().expect("the main chain is valid");
        let root = state_root(accounts);
        assert_eq!(self.chain.state().root(), root, "step {step}: state root");
        assert_eq!(
            self.chain.tip_header().state_root,
            root,
            "step {step}: tip header root"
        );
        for k in &self.keys {
            let want = accounts.get(&k.account()).map_or(0, |a| a.next_nonce);
            assert_eq!(
                self.chain.state().next_nonce(&k.account()),
                want,
                "step {step}: nonce"
            );
        }
        for h in m.blocks.keys() {
            assert_eq!(
                self.chain.header(h).is_some(),
                m.known(h),
                "step {step}: whether block {h} is known"
            );
        }
    }
}
