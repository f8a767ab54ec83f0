//! A proof-of-work node as a [`Protocol`] engine: mining, block relay and block sync (see
//! [`PowNode`]).

use core::convert::Infallible;
use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{check_proof_of_work, median_time_past, Miner, PowSeal, ProofOfWork, Target};
use crate::app::Application;
use crate::block::{Block, Header, MAX_BLOCK_LEN, MAX_BLOCK_TXS};
use crate::chain::{BlockTemplate, Chain};
use crate::codec::{self, BoundedVec, Canonical};
use crate::consensus::protocol::{
    Input, Output, Outputs, Protocol, ProtocolInput, Recipients, Time,
};
use crate::hash::{AccountId, BlockHash, TxId};
use crate::tx::{self, PublicKey, Transaction};

/// The most blocks one [`PowMessage::Blocks`] answer holds.
pub const MAX_SYNC_BLOCKS: usize = 64;
/// The most bytes of blocks one [`PowMessage::Blocks`] answer holds (its first block always
/// fits, since no block is larger).
pub const MAX_SYNC_BYTES: usize = MAX_BLOCK_LEN;
/// The most hashes in a block locator (Bitcoin's `MAX_LOCATOR_SZ`).
pub const MAX_LOCATOR: usize = 101;
/// The largest encoded message accepted, in bytes: an answer of [`MAX_SYNC_BYTES`] of blocks
/// and its framing.
pub const MAX_MESSAGE_LEN: usize = MAX_SYNC_BYTES + 1024;
/// The most blocks of a reverted branch whose transactions go back to the pool.
const MAX_REVERTED_BLOCKS: usize = 64;
/// The most pending sync requests remembered (one per peer).
const MAX_REQUESTS: usize = 1024;
/// Microseconds per second of block time.
const SECOND: Time = 1_000_000;

type P<A> = <A as Application>::Payload;
type PowBlock<A> = Block<PowSeal, P<A>>;
type NodeOutputs<A> = Outputs<PowNode<A>>;

/// What proof-of-work nodes send each other. Decode untrusted bytes with
/// [`codec::decode`](crate::codec::decode) (or
/// [`Protocol::decode_message`](crate::consensus::Protocol::decode_message)): bounded by
/// [`MAX_MESSAGE_LEN`], every list bounded before it is allocated, canonical, never panics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "P: tx::AppPayload", deserialize = "P: tx::AppPayload"))]
pub enum PowMessage<P> {
    /// A block, announced by the node that found it.
    Block(Block<PowSeal, P>),
    /// A request for the main-chain blocks after the first of these hashes that is on the
    /// receiver's main chain (after genesis if none is).
    GetBlocks {
        /// Block hashes of the requester's main chain, from its tip back to genesis, dense at
        /// the tip and exponentially sparser below (Bitcoin's block locator).
        locator: BoundedVec<BlockHash, MAX_LOCATOR>,
    },
    /// The answer to [`GetBlocks`](Self::GetBlocks): consecutive main-chain blocks in height
    /// order.
    Blocks {
        /// The blocks.
        blocks: BoundedVec<Block<PowSeal, P>, MAX_SYNC_BLOCKS>,
        /// Whether the sender's main chain goes on after the last of them.
        more: bool,
    },
}

impl<P: tx::AppPayload> Canonical for PowMessage<P> {
    const NAME: &'static str = "proof-of-work message";
    const MAX_ENCODED_LEN: usize = MAX_MESSAGE_LEN;
}

/// The engine's timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PowTimer {
    /// Try the next batch of nonces.
    Mine,
}

/// Why a [`PowNode`] refused an input. The engine is then unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PowNodeError {
    /// A received block's header does not carry the proof of work it claims, or claims a
    /// target easier than the chain's limit.
    #[error("block {block}: {reason}")]
    BadProofOfWork {
        /// The block.
        block: BlockHash,
        /// What is wrong with its proof of work.
        reason: super::Error,
    },
    /// A received block is larger than any block the chain accepts.
    #[error("block {block} is {len} bytes, more than the limit of {max}")]
    BlockTooLarge {
        /// The block.
        block: BlockHash,
        /// Its encoded length.
        len: usize,
        /// [`MAX_BLOCK_LEN`].
        max: usize,
    },
    /// A block of a [`PowMessage::Blocks`] answer extends neither a known block nor the block
    /// before it in the answer.
    #[error("block {block} of the answer extends {parent}, which is unknown")]
    Disconnected {
        /// The block.
        block: BlockHash,
        /// Its parent.
        parent: BlockHash,
    },
    /// Offered transactions do not fit in the pool.
    #[error("{offered} new transactions do not fit in a pool of {max} holding {held}")]
    PoolFull {
        /// New transactions offered.
        offered: usize,
        /// Transactions held.
        held: usize,
        /// The pool's capacity.
        max: usize,
    },
    /// A peer asked for blocks again sooner than [`PowNodeConfig::serve_interval`] after the
    /// last answer it got.
    #[error("{peer} asked for blocks {since} µs after the last answer (at most one per {min} µs)")]
    TooFrequent {
        /// The peer.
        peer: PublicKey,
        /// Time since its last answer.
        since: Time,
        /// The interval between answers.
        min: Time,
    },
    /// An offered transaction is invalid on its own (signature, chain id).
    #[error("transaction refused: {0}")]
    Transaction(#[from] tx::TxError),
}

/// A [`PowNode`]'s settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowNodeConfig {
    /// The node's identity: peers know it by this key, and its extra nonces derive from it.
    pub key: PublicKey,
    /// Nonces tried per [`PowTimer::Mine`] tick (real SHA-256d hashes).
    pub hashes_per_tick: u64,
    /// Time between ticks, microseconds.
    pub tick: Time,
    /// The most transactions in a block the node mines.
    pub max_block_txs: usize,
    /// The most bytes of transactions in a block the node mines.
    pub max_block_bytes: usize,
    /// The most offered transactions kept.
    pub max_pool_txs: usize,
    /// How long a sync request to a peer stays pending (no second request to that peer
    /// meanwhile), microseconds.
    pub request_timeout: Time,
    /// The least time between two answers to one peer's [`PowMessage::GetBlocks`], so that a
    /// peer cannot make the node read and send blocks without end (microseconds).
    pub serve_interval: Time,
    /// Mixed into the extra nonces, so that runs with different seeds mine different blocks.
    pub seed: u64,
}

impl PowNodeConfig {
    /// Settings for the node known by `key`: 1000 hashes every 100 ms, blocks of at most 4096
    /// transactions, a pool of 65536, sync requests pending for 5 s, at most one answer per
    /// peer every 20 ms.
    pub fn new(key: PublicKey) -> Self {
        Self {
            key,
            hashes_per_tick: 1_000,
            tick: 100_000,
            max_block_txs: 4096,
            max_block_bytes: MAX_BLOCK_LEN - 64 * 1024,
            max_pool_txs: 1 << 16,
            request_timeout: 5 * SECOND,
            serve_interval: 20_000,
            seed: 0,
        }
    }
}

/// A block being mined.
struct Work<A: Application> {
    template: BlockTemplate<P<A>, A::Error>,
    header: Header<PowSeal>,
    search: Miner,
    /// The next nonce to try (up to 2^32).
    next_nonce: u64,
}

/// A proof-of-work node: Nakamoto consensus as a deterministic, sans-I/O state machine that
/// mines, relays and syncs blocks of a [`Chain`] run by [`ProofOfWork`]. It never touches a
/// socket, a clock or a thread: the driver (a node on a real network, the `sim` simulator, a
/// test) hands it inputs and carries out its outputs, as the
/// [protocol module](crate::consensus::protocol) describes.
///
/// * **Mining.** Every [`PowTimer::Mine`] tick tries [`PowNodeConfig::hashes_per_tick`] nonces
///   of a block built on the ledger's tip: real Bitcoin-exact proof of work (SHA-256d of the
///   80-byte preimage, midstate included), at whatever target the chain's
///   [`RetargetParams`](super::RetargetParams) require. The hash rate is the number of ticks per
///   second times the hashes per tick, so a simulated network mines at the rate it models while
///   the machine does a small, fixed amount of real hashing. Each template gets its own extra
///   nonce, derived from the node's key and [`PowNodeConfig::seed`], so that no two nodes ever
///   search the same preimages.
/// * **Transactions.** Offered transactions ([`Input::Transactions`]) are checked (signatures,
///   chain id) and kept in a bounded pool ordered by account and nonce; a block takes, account
///   by account, the run of nonces that follows the account's next nonce on the tip. Those the
///   chain has executed are dropped; those of blocks a reorganisation reverted come back.
/// * **Blocks.** A found block is output as [`Output::Append`] and announced to every peer. A
///   received block is checked cheaply, its header's proof of work before anything else (so a
///   forged block costs its sender real work and the receiver one hash), and output to append:
///   the chain validates it in full and does fork choice by total work, reorganising if the
///   block's branch is heavier.
/// * **Sync.** A block whose parent is unknown (the node missed blocks, was partitioned or was
///   restarted) makes the node ask its sender for the blocks it lacks, with a Bitcoin-style
///   locator of its main chain ([`PowMessage::GetBlocks`]); the answer ([`PowMessage::Blocks`])
///   holds at most [`MAX_SYNC_BLOCKS`] blocks and [`MAX_SYNC_BYTES`] bytes, and says whether more
///   follow, in which case the node asks again from the last block received. At
///   [`Input::Start`] the node asks every peer, so that a restarted node catches up at once.
/// * **Tips.** After [`Input::Appended`] the node drops its current template; the next tick
///   mines on the new tip.
///
/// Proof of work has no equivocation to prove, so [`Protocol::Evidence`] is
/// [`Infallible`]; a block is final only probabilistically, once enough blocks are built on it
/// (the simulator's `Replicas::finality_depth`, feature `lab`).
pub struct PowNode<A: Application> {
    config: PowNodeConfig,
    /// The first extra nonce; each template takes the next.
    extra_nonce_base: u64,
    templates: u64,
    started: bool,
    pool: BTreeMap<(AccountId, u64), Transaction<P<A>>>,
    pool_ids: HashSet<TxId>,
    work: Option<Work<A>>,
    /// New transactions arrived since the template was built.
    stale: bool,
    /// The tip the last template was built on (to find what a reorganisation reverted).
    known_tip: Option<BlockHash>,
    /// Pending sync requests: peer → when the request expires.
    requests: BTreeMap<PublicKey, Time>,
    /// When each peer's last request for blocks was answered.
    served: BTreeMap<PublicKey, Time>,
    hashes: u64,
    found: u64,
}

impl<A: Application> core::fmt::Debug for PowNode<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PowNode")
            .field("key", &self.config.key)
            .field("pool", &self.pool.len())
            .field("hashes", &self.hashes)
            .field("found", &self.found)
            .finish_non_exhaustive()
    }
}

impl<A: Application> PowNode<A> {
    /// A node with `config`.
    pub fn new(config: PowNodeConfig) -> Self {
        let mut h = blake3::Hasher::new_derive_key("medledger 2026 pow node extra nonce v1");
        h.update(config.key.as_bytes());
        h.update(&config.seed.to_le_bytes());
        let digest = h.finalize();
        let mut base = [0u8; 8];
        base.copy_from_slice(&digest.as_bytes()[..8]);
        Self {
            config,
            extra_nonce_base: u64::from_le_bytes(base),
            templates: 0,
            started: false,
            pool: BTreeMap::new(),
            pool_ids: HashSet::new(),
            work: None,
            stale: false,
            known_tip: None,
            requests: BTreeMap::new(),
            served: BTreeMap::new(),
            hashes: 0,
            found: 0,
        }
    }

    /// The node's settings.
    pub fn config(&self) -> &PowNodeConfig {
        &self.config
    }
    /// How many offered transactions wait for a block.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }
    /// Header hashes tried so far.
    pub fn hashes_tried(&self) -> u64 {
        self.hashes
    }
    /// Blocks this node found.
    pub fn blocks_found(&self) -> u64 {
        self.found
    }

    // ----- mining -----

    fn on_tick(&mut self, ledger: &mut Chain<ProofOfWork, A>, now: Time, out: &mut NodeOutputs<A>) {
        out.push(Output::SetTimer {
            timer: PowTimer::Mine,
            at: now.saturating_add(self.config.tick.max(1)),
        });
        let tip = ledger.tip();
        if self.stale || self.work.as_ref().is_none_or(|w| w.template.parent != tip) {
            self.work = self.new_work(ledger, now);
            self.stale = false;
        }
        let Some(work) = self.work.as_mut() else {
            return;
        };
        let mut budget = self.config.hashes_per_tick;
        let never = std::sync::atomic::AtomicBool::new(false);
        let nonce = loop {
            if budget == 0 {
                break None;
            }
            if work.next_nonce >= 1 << 32 {
                // This preimage's nonce space is spent: move to a fresh extra nonce.
                work.header.seal.extra_nonce = self.extra_nonce_base.wrapping_add(self.templates);
                self.templates += 1;
                work.search =
                    Miner::new(&ProofOfWork::preimage(&work.header), work.search.target());
                work.next_nonce = 0;
            }
            let start = work.next_nonce;
            let end = (start + budget).min(1 << 32);
            budget -= end - start;
            self.hashes += end - start;
            work.next_nonce = end;
            // `start < end <= 2^32`.
            let found = if end == 1 << 32 {
                work.search.search(start as u32.., &never)
            } else {
                work.search.search(start as u32..end as u32, &never)
            };
            if found.is_some() {
                break found;
            }
        };
        let Some(nonce) = nonce else {
            return;
        };
        let Some(work) = self.work.take() else {
            return;
        };
        let seal = PowSeal {
            nonce,
            ..work.header.seal
        };
        if let Ok(block) = work.template.seal(seal) {
            self.found += 1;
            out.push(Output::Append(block.clone()));
            out.push(Output::Send {
                to: Recipients::All,
                message: PowMessage::Block(block),
            });
        }
    }

    /// A template on the tip, from the pool; `None` only if the chain's target is unusable.
    fn new_work(&mut self, ledger: &mut Chain<ProofOfWork, A>, now: Time) -> Option<Work<A>> {
        let tip = ledger.tip();
        if let Some(old) = self.known_tip.replace(tip) {
            if old != tip {
                self.readd_reverted(ledger, old);
            }
        }
        self.prune_pool(ledger);
        let height = ledger.height();
        let times: Vec<u64> = (height.saturating_sub(10)..=height)
            .filter_map(|h| ledger.time_at(h))
            .collect();
        let timestamp = (now / SECOND)
            .max(median_time_past(&times).saturating_add(1))
            .max(ledger.tip_header().timestamp);
        let txs = self.select(ledger);
        let template = match ledger.build_template(txs, timestamp) {
            Ok(t) => t,
            Err(_) => ledger.build_template(Vec::new(), timestamp).ok()?,
        };
        for (tx, _) in &template.rejected {
            self.forget(ledger, tx);
        }
        let bits = ledger.engine().required_bits(&ledger.tip_ancestors());
        let target = Target::from_compact(bits).ok()?;
        let header = template.header(PowSeal {
            bits,
            nonce: 0,
            extra_nonce: self.extra_nonce_base.wrapping_add(self.templates),
        });
        self.templates += 1;
        let search = Miner::new(&ProofOfWork::preimage(&header), target);
        Some(Work {
            template,
            header,
            search,
            next_nonce: 0,
        })
    }

    /// The pool's transactions that apply next: per account, the run of nonces from its next
    /// nonce on, within the block limits.
    fn select(&self, ledger: &Chain<ProofOfWork, A>) -> Vec<Transaction<P<A>>> {
        let state = ledger.state();
        let max_txs = self.config.max_block_txs.min(MAX_BLOCK_TXS);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut current: Option<(AccountId, u64)> = None;
        for ((account, nonce), tx) in &self.pool {
            let expected = match current {
                Some((a, next)) if a == *account => next,
                _ => state.next_nonce(account),
            };
            if *nonce != expected {
                current = Some((*account, u64::MAX));
                continue;
            }
            let len = codec::body_len(tx);
            if out.len() == max_txs || bytes + len > self.config.max_block_bytes {
                break;
            }
            bytes += len;
            out.push(tx.clone());
            current = Some((*account, expected.saturating_add(1)));
        }
        out
    }

    // ----- transactions -----

    fn offer(
        &mut self,
        ledger: &Chain<ProofOfWork, A>,
        txs: Vec<Transaction<P<A>>>,
    ) -> Result<(), PowNodeError> {
        let state = ledger.state();
        let mut seen = HashSet::new();
        let new: Vec<Transaction<P<A>>> = txs
            .into_iter()
            .filter(|t| {
                let key = (state.account_of_key(&t.body.signer), t.body.nonce);
                let id = t.id();
                // Already held, executed, or a second transaction for a held nonce: skipped.
                !self.pool_ids.contains(&id)
                    && !self.pool.contains_key(&key)
                    && t.body.nonce >= state.next_nonce(&key.0)
                    && seen.insert(id)
            })
            .collect();
        if self.pool.len() + new.len() > self.config.max_pool_txs {
            return Err(PowNodeError::PoolFull {
                offered: new.len(),
                held: self.pool.len(),
                max: self.config.max_pool_txs,
            });
        }
        let verified = tx::verify_batch(ledger.chain_id(), new)?;
        for tx in verified {
            let tx = tx.into_transaction();
            let key = (state.account_of_key(&tx.body.signer), tx.body.nonce);
            if self.pool.contains_key(&key) {
                continue;
            }
            self.pool_ids.insert(tx.id());
            self.pool.insert(key, tx);
            self.stale = true;
        }
        Ok(())
    }

    fn forget(&mut self, ledger: &Chain<ProofOfWork, A>, tx: &Transaction<P<A>>) {
        let key = (
            ledger.state().account_of_key(&tx.body.signer),
            tx.body.nonce,
        );
        if let Some(t) = self.pool.remove(&key) {
            self.pool_ids.remove(&t.id());
        }
    }

    /// Drops pooled transactions whose nonce the chain has used.
    fn prune_pool(&mut self, ledger: &Chain<ProofOfWork, A>) {
        let state = ledger.state();
        let ids = &mut self.pool_ids;
        self.pool.retain(|(account, nonce), tx| {
            let keep = *nonce >= state.next_nonce(account);
            if !keep {
                ids.remove(&tx.id());
            }
            keep
        });
    }

    /// Puts back in the pool the transactions of the blocks between `old` (a former tip) and
    /// the main chain, which a reorganisation reverted (those the new branch executed are then
    /// pruned by nonce).
    fn readd_reverted(&mut self, ledger: &Chain<ProofOfWork, A>, old: BlockHash) {
        let mut hash = old;
        for _ in 0..MAX_REVERTED_BLOCKS {
            let Some(header) = ledger.header(&hash) else {
                return;
            };
            if ledger.hash_at(header.height) == Some(hash) {
                return;
            }
            let parent = header.parent;
            if let Ok(Some(block)) = ledger.block(&hash) {
                for tx in block.txs.into_inner() {
                    if self.pool.len() >= self.config.max_pool_txs {
                        return;
                    }
                    let key = (
                        ledger.state().account_of_key(&tx.body.signer),
                        tx.body.nonce,
                    );
                    if !self.pool.contains_key(&key) {
                        self.pool_ids.insert(tx.id());
                        self.pool.insert(key, tx);
                    }
                }
            }
            hash = parent;
        }
    }

    // ----- blocks and sync -----

    /// The cheap checks of a received block: its header's proof of work first, then its size.
    fn check_block(
        ledger: &Chain<ProofOfWork, A>,
        block: &PowBlock<A>,
    ) -> Result<(), PowNodeError> {
        let limit = ledger.engine().params().pow_limit_target();
        let pow = ProofOfWork::pow_hash(&block.header);
        check_proof_of_work(&pow, block.header.seal.bits, limit).map_err(|reason| {
            PowNodeError::BadProofOfWork {
                block: block.hash(),
                reason,
            }
        })?;
        let len = 1 + codec::body_len(block);
        if len > MAX_BLOCK_LEN {
            return Err(PowNodeError::BlockTooLarge {
                block: block.hash(),
                len,
                max: MAX_BLOCK_LEN,
            });
        }
        Ok(())
    }

    fn on_block(
        &mut self,
        ledger: &Chain<ProofOfWork, A>,
        now: Time,
        from: PublicKey,
        block: PowBlock<A>,
        out: &mut NodeOutputs<A>,
    ) -> Result<(), PowNodeError> {
        Self::check_block(ledger, &block)?;
        if ledger.header(&block.hash()).is_some() {
            return Ok(());
        }
        if ledger.header(&block.header.parent).is_none() {
            self.request(ledger, now, from, None, out);
            return Ok(());
        }
        out.push(Output::Append(block));
        Ok(())
    }

    fn on_blocks(
        &mut self,
        ledger: &Chain<ProofOfWork, A>,
        now: Time,
        from: PublicKey,
        blocks: Vec<PowBlock<A>>,
        more: bool,
        out: &mut NodeOutputs<A>,
    ) -> Result<(), PowNodeError> {
        for block in &blocks {
            Self::check_block(ledger, block)?;
        }
        let mut batch = HashSet::new();
        let mut new = Vec::new();
        let mut batch_last = None;
        for block in blocks {
            let hash = block.hash();
            batch_last = Some(hash);
            if ledger.header(&hash).is_none() {
                let parent = block.header.parent;
                if ledger.header(&parent).is_none() && !batch.contains(&parent) {
                    return Err(PowNodeError::Disconnected {
                        block: hash,
                        parent,
                    });
                }
                new.push(block);
            }
            batch.insert(hash);
        }
        self.requests.remove(&from);
        let last = batch_last;
        out.extend(new.into_iter().map(Output::Append));
        if let (true, Some(last)) = (more, last) {
            self.request(ledger, now, from, Some(last), out);
        }
        Ok(())
    }

    /// Asks `peer` for the blocks after the ledger's main chain (or after `after`, a block just
    /// received), unless a request to it is pending.
    fn request(
        &mut self,
        ledger: &Chain<ProofOfWork, A>,
        now: Time,
        peer: PublicKey,
        after: Option<BlockHash>,
        out: &mut NodeOutputs<A>,
    ) {
        if self.requests.get(&peer).is_some_and(|until| *until > now) {
            return;
        }
        if self.requests.len() >= MAX_REQUESTS {
            self.requests.retain(|_, until| *until > now);
            if self.requests.len() >= MAX_REQUESTS {
                return;
            }
        }
        self.requests
            .insert(peer, now.saturating_add(self.config.request_timeout));
        out.push(Output::Send {
            to: Recipients::One(peer),
            message: PowMessage::GetBlocks {
                locator: locator(ledger, after),
            },
        });
    }

    fn on_get_blocks(
        &mut self,
        ledger: &Chain<ProofOfWork, A>,
        now: Time,
        from: PublicKey,
        locator: &[BlockHash],
        out: &mut NodeOutputs<A>,
    ) -> Result<(), PowNodeError> {
        let min = self.config.serve_interval;
        if let Some(last) = self.served.get(&from) {
            let since = now.saturating_sub(*last);
            if since < min {
                return Err(PowNodeError::TooFrequent {
                    peer: from,
                    since,
                    min,
                });
            }
        }
        if self.served.len() >= MAX_REQUESTS {
            self.served
                .retain(|_, last| now.saturating_sub(*last) < min);
        }
        self.served.insert(from, now);
        let fork = locator
            .iter()
            .find_map(|hash| {
                let height = ledger.header(hash)?.height;
                (ledger.hash_at(height) == Some(*hash)).then_some(height)
            })
            .unwrap_or(0);
        let mut blocks = BoundedVec::new();
        let mut bytes = 0;
        let mut height = fork + 1;
        while height <= ledger.height() && blocks.len() < MAX_SYNC_BLOCKS {
            let Some(Ok(Some(block))) = ledger.hash_at(height).map(|h| ledger.block(&h)) else {
                break;
            };
            let len = codec::body_len(&block);
            if !blocks.is_empty() && bytes + len > MAX_SYNC_BYTES {
                break;
            }
            bytes += len;
            if blocks.push(block).is_err() {
                break;
            }
            height += 1;
        }
        out.push(Output::Send {
            to: Recipients::One(from),
            message: PowMessage::Blocks {
                blocks,
                more: height <= ledger.height(),
            },
        });
        Ok(())
    }
}

/// Bitcoin's block locator of `ledger`'s main chain, preceded by `after` if given: the ten
/// latest hashes, then exponentially sparser ones, then genesis.
fn locator<A: Application>(
    ledger: &Chain<ProofOfWork, A>,
    after: Option<BlockHash>,
) -> BoundedVec<BlockHash, MAX_LOCATOR> {
    let mut hashes: Vec<BlockHash> = after.into_iter().collect();
    let mut height = ledger.height();
    let mut step = 1u64;
    while height > 0 && hashes.len() < MAX_LOCATOR - 1 {
        if let Some(h) = ledger.hash_at(height) {
            hashes.push(h);
        }
        if hashes.len() >= 10 {
            step = step.saturating_mul(2);
        }
        height = height.saturating_sub(step);
    }
    hashes.push(ledger.genesis_hash());
    hashes.truncate(MAX_LOCATOR);
    BoundedVec::try_from(hashes).unwrap_or_default()
}

impl<A: Application> Protocol for PowNode<A> {
    type Message = PowMessage<P<A>>;
    type Timer = PowTimer;
    type Tx = Transaction<P<A>>;
    type Block = PowBlock<A>;
    type Evidence = Infallible;
    type Error = PowNodeError;
    type Ledger = Chain<ProofOfWork, A>;

    fn handle(
        &mut self,
        ledger: &mut Chain<ProofOfWork, A>,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<NodeOutputs<A>, PowNodeError> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if !self.started {
                    self.started = true;
                    out.push(Output::SetTimer {
                        timer: PowTimer::Mine,
                        at: now,
                    });
                    out.push(Output::Send {
                        to: Recipients::All,
                        message: PowMessage::GetBlocks {
                            locator: locator(ledger, None),
                        },
                    });
                }
            }
            Input::Appended => {
                if self
                    .work
                    .as_ref()
                    .is_some_and(|w| w.template.parent != ledger.tip())
                {
                    self.work = None;
                }
            }
            Input::Timer(PowTimer::Mine) => {
                if self.started {
                    self.on_tick(ledger, now, &mut out);
                }
            }
            Input::Transactions(txs) => self.offer(ledger, txs)?,
            Input::Message { from, message } => match message {
                PowMessage::Block(block) => self.on_block(ledger, now, from, block, &mut out)?,
                PowMessage::GetBlocks { locator } => {
                    self.on_get_blocks(ledger, now, from, &locator, &mut out)?
                }
                PowMessage::Blocks { blocks, more } => {
                    self.on_blocks(ledger, now, from, blocks.into_inner(), more, &mut out)?
                }
            },
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chain::{ChainBuilder, ManualClock};
    use crate::hash::Digest;
    use crate::pow::{CompactTarget, RetargetParams};
    use crate::tx::Keypair;
    use crate::{MedRec, Payload};

    const T0: u64 = 1_800_000_000;

    /// A chain on which about one hash in 256 meets the target.
    fn chain() -> Chain<ProofOfWork, MedRec> {
        let params = RetargetParams::builder()
            .pow_limit(CompactTarget::from_consensus(0x2000_ffff))
            .no_retargeting(true)
            .build()
            .unwrap();
        ChainBuilder::<ProofOfWork, MedRec>::new("pow-node-test", ProofOfWork::new(params))
            .genesis_time(T0)
            .clock(Arc::new(ManualClock::new(T0)))
            .build()
            .unwrap()
    }

    fn node(i: u8) -> PowNode<MedRec> {
        let mut config = PowNodeConfig::new(Keypair::from_seed(&[i; 32]).public());
        config.hashes_per_tick = 64;
        config.max_pool_txs = 8;
        PowNode::new(config)
    }

    fn peer() -> PublicKey {
        Keypair::from_seed(&[99; 32]).public()
    }

    fn tx(chain: &Chain<ProofOfWork, MedRec>, who: u8, nonce: u64) -> Transaction<Payload> {
        Transaction::sign(
            &Keypair::from_seed(&[who; 32]),
            chain.chain_id(),
            nonce,
            Payload::Data {
                record: Digest::from_bytes([nonce as u8; 32]),
            },
        )
    }

    /// Ticks until the node finds a block; returns it.
    fn mine(n: &mut PowNode<MedRec>, c: &mut Chain<ProofOfWork, MedRec>) -> PowBlock<MedRec> {
        let now = T0 * SECOND;
        n.handle(c, now, Input::Start).unwrap();
        for i in 0..1000 {
            let out = n.handle(c, now + i, Input::Timer(PowTimer::Mine)).unwrap();
            for o in out {
                if let Output::Append(block) = o {
                    return block;
                }
            }
        }
        panic!("no block in 64000 hashes at one in 256");
    }

    #[test]
    fn mines_announces_and_follows_the_tip() {
        let (mut c, mut n) = (chain(), node(1));
        let now = T0 * SECOND;
        let out = n.handle(&mut c, now, Input::Start).unwrap();
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Send {
                to: Recipients::All,
                message: PowMessage::GetBlocks { .. }
            }
        )));
        let txs = vec![tx(&c, 7, 1), tx(&c, 7, 0), tx(&c, 8, 0), tx(&c, 8, 2)];
        n.handle(&mut c, now, Input::Transactions(txs.clone()))
            .unwrap();
        // Offered again: nothing new.
        n.handle(&mut c, now, Input::Transactions(txs)).unwrap();
        assert_eq!(n.pool_len(), 4);
        let block = mine(&mut n, &mut c);
        // Nonces 0 and 1 of account 7, nonce 0 of account 8; nonce 2 of 8 waits for 1.
        assert_eq!(block.txs.len(), 3);
        c.append(block).unwrap();
        n.handle(&mut c, now, Input::Appended).unwrap();
        let next = mine(&mut n, &mut c);
        assert_eq!(next.header.parent, c.tip());
        assert!(next.txs.is_empty());
        assert_eq!(n.pool_len(), 1);
        assert!(n.hashes_tried() > 0 && n.blocks_found() == 2);
    }

    #[test]
    fn different_nodes_mine_different_blocks() {
        let (mut c1, mut c2) = (chain(), chain());
        let a = mine(&mut node(1), &mut c1);
        let b = mine(&mut node(2), &mut c2);
        assert_ne!(a.hash(), b.hash());
        assert_ne!(a.header.seal.extra_nonce, b.header.seal.extra_nonce);
    }

    #[test]
    fn received_blocks_are_checked_and_orphans_fetched() {
        let (mut miner_chain, mut miner) = (chain(), node(1));
        let (mut c, mut n) = (chain(), node(2));
        let now = T0 * SECOND;
        let b1 = mine(&mut miner, &mut miner_chain);
        miner_chain.append(b1.clone()).unwrap();
        miner
            .handle(&mut miner_chain, now, Input::Appended)
            .unwrap();
        let b2 = mine(&mut miner, &mut miner_chain);
        miner_chain.append(b2.clone()).unwrap();

        // A forged seal: a target above the limit, or a nonce that misses the target.
        let mut forged = b2.clone();
        forged.header.seal.bits = CompactTarget::BITCOIN_REGTEST_LIMIT;
        let err = n.handle(
            &mut c,
            now,
            Input::Message {
                from: peer(),
                message: PowMessage::Block(forged),
            },
        );
        assert!(
            matches!(err, Err(PowNodeError::BadProofOfWork { .. })),
            "{err:?}"
        );
        let mut forged = b2.clone();
        let target = Target::from_compact(forged.header.seal.bits).unwrap();
        while target.is_met_by(&ProofOfWork::pow_hash(&forged.header)) {
            forged.header.seal.nonce = forged.header.seal.nonce.wrapping_add(1);
        }
        let err = n
            .handle(
                &mut c,
                now,
                Input::Message {
                    from: peer(),
                    message: PowMessage::Block(forged),
                },
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("does not meet the target"),
            "{err}"
        );

        // b2's parent is unknown: ask its sender, once while the request is pending.
        let out = n
            .handle(
                &mut c,
                now,
                Input::Message {
                    from: peer(),
                    message: PowMessage::Block(b2.clone()),
                },
            )
            .unwrap();
        let locator = match out.as_slice() {
            [Output::Send {
                to: Recipients::One(p),
                message: PowMessage::GetBlocks { locator },
            }] => {
                assert_eq!(*p, peer());
                locator.clone()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(&locator[..], &[c.genesis_hash()]);
        let again = n
            .handle(
                &mut c,
                now,
                Input::Message {
                    from: peer(),
                    message: PowMessage::Block(b2.clone()),
                },
            )
            .unwrap();
        assert!(again.is_empty());

        // The miner answers with both blocks.
        let answer = miner
            .handle(
                &mut miner_chain,
                now,
                Input::Message {
                    from: peer(),
                    message: PowMessage::GetBlocks { locator },
                },
            )
            .unwrap();
        // Asked again at once: refused, saying why.
        let err = miner
            .handle(
                &mut miner_chain,
                now + 1,
                Input::Message {
                    from: peer(),
                    message: PowMessage::GetBlocks {
                        locator: super::locator(&c, None),
                    },
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, PowNodeError::TooFrequent { since: 1, .. }),
            "{err}"
        );
        let message = match answer.into_iter().next() {
            Some(Output::Send { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        let PowMessage::Blocks { blocks, more } = &message else {
            panic!("{message:?}")
        };
        assert_eq!(blocks.len(), 2);
        assert!(!more);
        // Out of order, the answer is refused as a whole.
        let reversed = PowMessage::Blocks {
            blocks: vec![b2.clone(), b1.clone()].try_into().unwrap(),
            more: false,
        };
        let err = n
            .handle(
                &mut c,
                now,
                Input::Message {
                    from: peer(),
                    message: reversed,
                },
            )
            .unwrap_err();
        assert!(matches!(err, PowNodeError::Disconnected { .. }), "{err}");
        let out = n
            .handle(
                &mut c,
                now,
                Input::Message {
                    from: peer(),
                    message,
                },
            )
            .unwrap();
        assert_eq!(out.len(), 2);
        for o in out {
            let Output::Append(b) = o else {
                panic!("{o:?}")
            };
            c.append(b).unwrap();
        }
        assert_eq!(c.tip(), miner_chain.tip());
        // Known blocks are not appended again.
        let out = n
            .handle(
                &mut c,
                now,
                Input::Message {
                    from: peer(),
                    message: PowMessage::Block(b2),
                },
            )
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn offered_transactions_are_checked_and_bounded() {
        let (mut c, mut n) = (chain(), node(1));
        let mut bad = tx(&c, 7, 0);
        bad.body.nonce = 5;
        let err = n
            .handle(&mut c, 0, Input::Transactions(vec![bad]))
            .unwrap_err();
        assert!(matches!(err, PowNodeError::Transaction(_)), "{err}");
        let many: Vec<_> = (0..9).map(|i| tx(&c, 7, i)).collect();
        let err = n.handle(&mut c, 0, Input::Transactions(many)).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        assert_eq!(n.pool_len(), 0);
    }

    #[test]
    fn locators_are_dense_then_sparse() {
        let (mut c, mut n) = (chain(), node(1));
        for _ in 0..40 {
            let b = mine(&mut n, &mut c);
            c.append(b).unwrap();
            n.handle(&mut c, 0, Input::Appended).unwrap();
        }
        let l = locator(&c, None);
        let heights: Vec<u64> = l.iter().map(|h| c.header(h).unwrap().height).collect();
        assert_eq!(heights[..10], [40, 39, 38, 37, 36, 35, 34, 33, 32, 31]);
        assert_eq!(heights.last(), Some(&0));
        assert!(heights.len() < 20);
        assert!(heights.windows(2).all(|w| w[0] > w[1]));
    }
}
