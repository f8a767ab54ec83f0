//! The common deployment: every node keeps its own copy of the chain.

use std::sync::Arc;

use super::network::{Deployment, Finalised, Handled, Time, SECOND};
use super::CpuModel;
use crate::app::Application;
use crate::chain::{Chain, ChainBlock, ChainError, ManualClock};
use crate::consensus::protocol::{Protocol, ProtocolInput};
use crate::consensus::Consensus;
use crate::hash::{ChainId, Digest, TxId};
use crate::tx::{Keypair, PublicKey, Transaction};
use crate::{ledger, MedRec, Payload};

/// What a node's engine reads and the simulator appends to: a [`Chain`] or a
/// [`Ledger`](ledger::Ledger) (which also keeps a mempool).
pub trait Replica {
    /// The chain's consensus engine.
    type Consensus: Consensus;
    /// The chain's application.
    type App: Application;
    /// The chain.
    fn chain(&self) -> &Chain<Self::Consensus, Self::App>;
    /// Appends a block; a block already held is not an error.
    ///
    /// # Errors
    ///
    /// Why the block was refused.
    fn append_block(&mut self, block: ChainBlock<Self::Consensus, Self::App>)
        -> Result<(), String>;
}

impl<C: Consensus, A: Application> Replica for Chain<C, A> {
    type Consensus = C;
    type App = A;
    fn chain(&self) -> &Chain<C, A> {
        self
    }
    fn append_block(&mut self, block: ChainBlock<C, A>) -> Result<(), String> {
        match self.append(block) {
            Ok(_) | Err(ChainError::AlreadyKnown(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl<C: Consensus, A: Application> Replica for ledger::Ledger<C, A> {
    type Consensus = C;
    type App = A;
    fn chain(&self) -> &Chain<C, A> {
        ledger::Ledger::chain(self)
    }
    fn append_block(&mut self, block: ChainBlock<C, A>) -> Result<(), String> {
        match self.append(block) {
            Ok(_) | Err(ledger::LedgerError::Chain(ChainError::AlreadyKnown(_))) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The CPU time an input costs an engine, nanoseconds (appending a block is charged
/// separately: each of its transactions' check and execution).
pub type CostFn<P> = Box<dyn Fn(&CpuModel, &ProtocolInput<P>) -> u64>;
/// Makes node `i`'s engine (at the start and after a restart).
pub type EngineFn<P> = Box<dyn Fn(usize) -> P>;
/// Signs a message conflicting with the one given, as node `i` (see
/// [`Deployment::equivocate`]).
pub type EquivocateFn<P> =
    Box<dyn FnMut(usize, &<P as Protocol>::Message) -> Option<<P as Protocol>::Message>>;
/// Client transactions submitted at a time (see [`Deployment::workload`]).
pub type WorkloadFn<P> = Box<dyn FnMut(Time) -> Vec<(TxId, <P as Protocol>::Tx)>>;
/// A node of [`Replicas::new`]: the key peers know it by, its ledger, and the clock its chain
/// reads.
pub type NodeSetup<L> = (PublicKey, L, Arc<ManualClock>);
/// What identifies a finalised block, from its header.
pub type BlockIdFn<S> = fn(&crate::block::Header<S>) -> Digest;

/// One engine per node, each on its own ledger; `L` is the ledger type ([`Replica`]).
pub struct Replicas<P: Protocol<Ledger = L>, L: Replica> {
    name: String,
    keys: Vec<PublicKey>,
    engines: Vec<P>,
    ledgers: Vec<L>,
    clocks: Vec<Arc<ManualClock>>,
    finalised: Vec<u64>,
    make: EngineFn<P>,
    cost: CostFn<P>,
    cpu: CpuModel,
    depth: u64,
    block_id: BlockIdFn<<L::Consensus as Consensus>::Seal>,
    equivocate: Option<EquivocateFn<P>>,
    workload: WorkloadFn<P>,
}

impl<P: Protocol<Ledger = L>, L: Replica> core::fmt::Debug for Replicas<P, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Replicas")
            .field("engine", &self.name)
            .field("nodes", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl<P, L> Replicas<P, L>
where
    P: Protocol<Ledger = L, Block = ChainBlock<L::Consensus, L::App>>,
    L: Replica,
{
    /// A deployment named `name` of one node per `(key, ledger, clock)`: `make(i)` builds node
    /// `i`'s engine, `workload` makes client transactions. The ledgers' chains must read their
    /// `clock`, which the simulator keeps at the simulated time. By default a block is final
    /// once appended, identified by its hash, and an input costs the CPU model's
    /// per-message time.
    pub fn new(
        name: impl Into<String>,
        nodes: Vec<NodeSetup<L>>,
        make: EngineFn<P>,
        workload: WorkloadFn<P>,
    ) -> Self {
        let engines = (0..nodes.len()).map(&make).collect();
        let mut keys = Vec::with_capacity(nodes.len());
        let mut ledgers = Vec::with_capacity(nodes.len());
        let mut clocks = Vec::with_capacity(nodes.len());
        for (key, ledger, clock) in nodes {
            keys.push(key);
            ledgers.push(ledger);
            clocks.push(clock);
        }
        let finalised = ledgers.iter().map(|l| l.chain().height()).collect();
        Self {
            name: name.into(),
            keys,
            engines,
            ledgers,
            clocks,
            finalised,
            make,
            cost: Box::new(|cpu, _| cpu.message_ns),
            cpu: CpuModel::default(),
            depth: 0,
            block_id: |h| Digest::from_bytes(*h.hash().as_bytes()),
            equivocate: None,
            workload,
        }
    }

    /// Blocks become final once this many blocks are built on them (proof of work's
    /// confirmations; 0, the default, for engines with final blocks).
    pub fn finality_depth(mut self, depth: u64) -> Self {
        self.depth = depth;
        self
    }

    /// How blocks are identified when nodes' blocks are compared (default: the block hash).
    pub fn block_id(mut self, id: BlockIdFn<<L::Consensus as Consensus>::Seal>) -> Self {
        self.block_id = id;
        self
    }

    /// The CPU model and the cost of each input under it.
    pub fn cost(mut self, cpu: CpuModel, cost: CostFn<P>) -> Self {
        self.cpu = cpu;
        self.cost = cost;
        self
    }

    /// How an equivocating node signs a conflicting twin of a message.
    pub fn equivocate(mut self, f: EquivocateFn<P>) -> Self {
        self.equivocate = Some(f);
        self
    }

    /// Node `i`'s ledger.
    pub fn ledger(&self, node: usize) -> Option<&L> {
        self.ledgers.get(node)
    }

    /// Node `i`'s engine.
    pub fn engine(&self, node: usize) -> Option<&P> {
        self.engines.get(node)
    }

    fn set_clock(&self, node: usize, now: Time) {
        self.clocks[node].set(now / SECOND);
    }
}

impl<P, L> Deployment for Replicas<P, L>
where
    P: Protocol<Ledger = L, Block = ChainBlock<L::Consensus, L::App>>,
    L: Replica,
{
    type Engine = P;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn nodes(&self) -> usize {
        self.keys.len()
    }

    fn key(&self, node: usize) -> PublicKey {
        self.keys[node]
    }

    fn handle(&mut self, node: usize, now: Time, input: ProtocolInput<P>) -> Handled<P> {
        self.set_clock(node, now);
        let cpu_ns = (self.cost)(&self.cpu, &input);
        let outputs = self.engines[node]
            .handle(&mut self.ledgers[node], now, input)
            .unwrap_or_default();
        Handled { outputs, cpu_ns }
    }

    fn append(
        &mut self,
        node: usize,
        now: Time,
        block: P::Block,
    ) -> Result<(Vec<Finalised>, u64), String> {
        self.set_clock(node, now);
        let cpu_ns = block.txs.len() as u64 * (self.cpu.tx_verify_ns + self.cpu.tx_execute_ns);
        self.ledgers[node].append_block(block)?;
        let chain = self.ledgers[node].chain();
        let final_height = chain.height().saturating_sub(self.depth);
        let mut out = Vec::new();
        while self.finalised[node] < final_height {
            let height = self.finalised[node] + 1;
            let (Some(hash), Some(header)) = (chain.hash_at(height), chain.header_at(height))
            else {
                break;
            };
            let txs = match chain.block(&hash) {
                Ok(Some(b)) => b.txs.iter().map(Transaction::id).collect(),
                _ => Vec::new(),
            };
            out.push(Finalised {
                height,
                id: (self.block_id)(header),
                txs,
            });
            self.finalised[node] = height;
        }
        Ok((out, cpu_ns))
    }

    fn workload(&mut self, now: Time) -> Vec<(TxId, P::Tx)> {
        (self.workload)(now)
    }

    fn restart(&mut self, node: usize) {
        self.engines[node] = (self.make)(node);
    }

    fn equivocate(&mut self, node: usize, message: &P::Message) -> Option<P::Message> {
        self.equivocate.as_mut().and_then(|f| f(node, message))
    }
}

/// A closed-loop MedRec load for an engine that orders MedRec transactions: `accounts` clients
/// each anchoring records in turn, `batch` transactions per call (one call at the start and one
/// per finalised height).
pub fn medrec_load<P: Protocol<Tx = Transaction<Payload>>>(
    chain: ChainId,
    accounts: usize,
    batch: usize,
) -> WorkloadFn<P> {
    let mut clients: Vec<(Keypair, u64)> = (0..accounts.max(1) as u64)
        .map(|i| {
            let mut seed = [0xc1u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            (Keypair::from_seed(&seed), 0)
        })
        .collect();
    let mut record = 0u64;
    Box::new(move |_now| {
        let mut out = Vec::with_capacity(batch);
        for _ in 0..batch {
            let n = clients.len();
            let (key, nonce) = &mut clients[(record % n as u64) as usize];
            record += 1;
            let mut r = [0u8; 32];
            r[..8].copy_from_slice(&record.to_le_bytes());
            let tx = Transaction::sign(
                key,
                chain,
                *nonce,
                Payload::Data {
                    record: Digest::from_bytes(r),
                },
            );
            *nonce += 1;
            out.push((tx.id(), tx));
        }
        out
    })
}

/// The nodes of [`Replicas::new`] for an engine on MedRec chains: for each key, a MedRec chain
/// checked by `engine` (see [`medrec_chain`]) and its clock.
///
/// # Errors
///
/// [`ChainError`](crate::ChainError) if a chain cannot be built.
pub fn medrec_nodes<C: Consensus + Clone>(
    name: &str,
    engine: &C,
    keys: impl IntoIterator<Item = PublicKey>,
) -> Result<Vec<NodeSetup<Chain<C, MedRec>>>, crate::ChainError> {
    keys.into_iter()
        .map(|key| {
            let (chain, clock) = medrec_chain(name, engine.clone())?;
            Ok((key, chain, clock))
        })
        .collect()
}

/// A MedRec chain for a simulated node, with an empty registrar, and the clock it reads (which
/// [`Replicas`] keeps at the simulated time).
///
/// # Errors
///
/// [`ChainError`](crate::ChainError) if the chain cannot be built.
pub fn medrec_chain<C: Consensus>(
    name: &str,
    engine: C,
) -> Result<(Chain<C, MedRec>, Arc<ManualClock>), crate::ChainError> {
    let clock = Arc::new(ManualClock::new(super::network::GENESIS_TIME));
    let chain = crate::chain::ChainBuilder::<C, MedRec>::new(name, engine)
        .genesis_time(super::network::GENESIS_TIME)
        .clock(clock.clone())
        .build()?;
    Ok((chain, clock))
}
