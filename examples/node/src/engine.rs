//! The engines a node can run, as the genesis names them: Tendermint (a consortium's default),
//! the committee engine and proof of work.
//!
//! The node's loop ([`node::run`](crate::node::run)) is written once, against the library's
//! protocol interface. What differs between engines is small and lives here, in
//! [`NodeEngine`]: what each engine reads (the ledger itself, its chain, or a [`Host`] over
//! the ledger), what it does with offered transactions, and what a node does when blocks reach
//! its ledger by block sync. [`LedgerView`] is the ledger as the web API reads it, the same
//! for every engine.

use std::collections::HashMap;

use medledger::access::{AccessRequest, Decision, PointerId, Reader};
use medledger::block::Header;
use medledger::chain::ChainBlock;
use medledger::committee::{self, CommitteeConsensus, CommitteeParams, Host, Tick, TipInfo};
use medledger::consensus::protocol::{Input, Outputs, Protocol, ProtocolInput, Time};
use medledger::consensus::Consensus;
use medledger::hash::{AccountId, BlockHash, ChainId, StateRoot, TxId};
use medledger::pow::{PowNode, ProofOfWork};
use medledger::tendermint::{block_id, Message, Tendermint, TendermintConsensus, TendermintError};
use medledger::tx::{Keypair, PublicKey, Signature};
use medledger::{Accepted, AccessState, Ledger, MedRec, Payload, Refusal, Transaction, TxStatus};

use crate::config::{hex_encode, Error};

/// A consensus engine as the node drives it: the protocol interface, plus how to hand the
/// engine the node's ledger.
pub trait NodeEngine:
    Protocol<Tx = Transaction, Block = ChainBlock<Self::Consensus, MedRec>> + Send + 'static
{
    /// The chain's consensus rules (what the chain checks every block against).
    type Consensus: Consensus + Send + Sync + 'static;

    /// The engine's name, as in the genesis.
    const NAME: &'static str;

    /// Hands `input` to the engine with the node's ledger. Offered transactions
    /// ([`Input::Transactions`]) become pending in the ledger's pool, or are refused with the
    /// ledger's reason.
    ///
    /// # Errors
    ///
    /// Why the engine or the ledger refused the input; nothing changed.
    fn step(
        &mut self,
        ledger: &mut Ledger<Self::Consensus>,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<Outputs<Self>, Error>;

    /// Offers `txs` (what clients and peers sent since the node last looked) and answers each,
    /// in order: taken into the ledger's pool, or the reason it was refused. By default one
    /// [`Input::Transactions`] per transaction; Tendermint checks the whole batch's signatures
    /// at once ([`Tendermint::offer_all`]).
    fn offer(
        &mut self,
        ledger: &mut Ledger<Self::Consensus>,
        now: Time,
        txs: Vec<Transaction>,
    ) -> (Outputs<Self>, Vec<Result<(), Error>>) {
        let mut outputs = Vec::new();
        let answers = txs
            .into_iter()
            .map(|tx| {
                let out = self.step(ledger, now, Input::Transactions(vec![tx]))?;
                outputs.extend(out);
                Ok(())
            })
            .collect();
        (outputs, answers)
    }

    /// [`offer`](Self::offer) for transactions a peer relayed, having taken them from its own
    /// client: by default the same; Tendermint takes them into the pool without applying them
    /// to the pool's state ([`Tendermint::offer_relayed`]), the block that includes them does.
    fn offer_relayed(
        &mut self,
        ledger: &mut Ledger<Self::Consensus>,
        now: Time,
        txs: Vec<Transaction>,
    ) -> (Outputs<Self>, Vec<Result<(), Error>>) {
        self.offer(ledger, now, txs)
    }

    /// Blocks reached the ledger by block sync: tells the engine (by default
    /// [`Input::Appended`]).
    ///
    /// # Errors
    ///
    /// As [`step`](Self::step).
    fn synced(
        &mut self,
        ledger: &mut Ledger<Self::Consensus>,
        now: Time,
    ) -> Result<Outputs<Self>, Error> {
        self.step(ledger, now, Input::Appended)
    }

    /// A block's id, hex: equal on every node for a decided block. By default the block
    /// hash; Tendermint's leaves out the seal (whose commit signatures differ between nodes).
    fn block_id(header: &Header<<Self::Consensus as Consensus>::Seal>) -> String {
        header.hash().to_string()
    }

    /// The height a consensus message is about, if the engine's messages name one: a node
    /// waiting to start the next height ([`Pacing::idle`](crate::config::Pacing::idle)) starts
    /// it when a peer's message shows the peer did. By default none (such a node starts on a
    /// transaction or when its idle interval ends).
    fn message_height(message: &Self::Message) -> Option<u64> {
        let _ = message;
        None
    }

    /// The engine's current round, for `status` (none for engines without rounds).
    fn round(&self) -> Option<u32> {
        None
    }

    /// Evidence of misbehaviour, for the log.
    fn describe(evidence: &Self::Evidence) -> String;
}

/// Submits `txs` to the ledger's pool, all or none: the first refusal is returned and the
/// transactions before it stay pending (each was valid on its own).
fn submit_all(ledger: &mut Ledger<impl Consensus>, txs: &[Transaction]) -> Result<(), Error> {
    for tx in txs {
        ledger.submit(tx.clone()).map_err(|r| r.to_string())?;
    }
    Ok(())
}

/// The engine's answers to an offer, each refusal with the ledger's or the engine's reason.
fn answers(results: Vec<Result<(), TendermintError>>) -> Vec<Result<(), Error>> {
    results
        .into_iter()
        .map(|r| {
            r.map_err(|e| match e {
                TendermintError::Refused { reason, .. } => Error::from(reason),
                e => Error::from(e),
            })
        })
        .collect()
}

impl NodeEngine for Tendermint<MedRec> {
    type Consensus = TendermintConsensus;
    const NAME: &'static str = "tendermint";

    fn step(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus>,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<Outputs<Self>, Error> {
        // The engine reads the ledger itself and submits offered transactions to its pool.
        Ok(self.handle(ledger, now, input)?)
    }

    fn offer(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus>,
        _now: Time,
        txs: Vec<Transaction>,
    ) -> (Outputs<Self>, Vec<Result<(), Error>>) {
        // Each answer is one transaction's: its position in the node's batch (which mixes
        // clients' and peers' transactions) would mean nothing to the client.
        (Vec::new(), answers(self.offer_all(ledger, txs)))
    }

    fn offer_relayed(
        &mut self,
        ledger: &mut Ledger<TendermintConsensus>,
        _now: Time,
        txs: Vec<Transaction>,
    ) -> (Outputs<Self>, Vec<Result<(), Error>>) {
        (
            Vec::new(),
            answers(Tendermint::offer_relayed(self, ledger, txs)),
        )
    }

    fn block_id(header: &Header<<TendermintConsensus as Consensus>::Seal>) -> String {
        hex_encode(block_id(header).as_bytes())
    }

    fn message_height(message: &Self::Message) -> Option<u64> {
        Some(match message {
            Message::Proposal { proposal, .. } => proposal.proposal.height(),
            Message::Vote(vote) => vote.vote.height,
            Message::Polka(polka) => polka.height,
            Message::Decided { block, .. } => block.header.height,
        })
    }

    fn round(&self) -> Option<u32> {
        Some(Tendermint::round(self))
    }

    fn describe(evidence: &Self::Evidence) -> String {
        format!(
            "{} signed two votes at height {}",
            evidence.offender(),
            evidence.height()
        )
    }
}

impl NodeEngine for PowNode<MedRec> {
    type Consensus = ProofOfWork;
    const NAME: &'static str = "pow";

    fn step(
        &mut self,
        ledger: &mut Ledger<ProofOfWork>,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<Outputs<Self>, Error> {
        // The miner keeps its own pool for block templates; the ledger's pool is what clients
        // see (pending, status, dry runs), so an offer goes to both.
        if let Input::Transactions(txs) = &input {
            submit_all(ledger, txs)?;
        }
        let appended = matches!(input, Input::Appended);
        let mut outputs = ledger.drive(self, now, input)?;
        if appended {
            // The miner orders its pool by account, not by arrival, and forgets a transaction
            // its template refused (one that depends on another account's, not yet mined). The
            // ledger's pool is the node's mempool: what is still pending there is offered again
            // on every new tip (the miner skips what it holds).
            let pending: Vec<Transaction> = ledger.pending_txs().cloned().collect();
            if !pending.is_empty() {
                // A full miner pool refuses the offer; the tip's outputs stand regardless.
                if let Ok(more) = ledger.drive(self, now, Input::Transactions(pending)) {
                    outputs.extend(more);
                }
            }
        }
        Ok(outputs)
    }

    fn describe(evidence: &Self::Evidence) -> String {
        match *evidence {}
    }
}

/// The committee engine on a node: the library's [`committee::Node`], its [`Host`] over the
/// node's ledger, and what it takes to restart it at the ledger's tip after block sync.
pub struct CommitteeEngine {
    node: committee::Node,
    params: CommitteeParams,
    key: Keypair,
    peers: Vec<PublicKey>,
    timing: committee::Timing,
    max_shard_txs: usize,
    /// Signatures already checked, by what was signed (votes arrive from every member).
    checked: HashMap<Checked, bool>,
}

impl core::fmt::Debug for CommitteeEngine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CommitteeEngine")
            .field("key", &self.key.public())
            .field("status", &self.node.status())
            .finish_non_exhaustive()
    }
}

impl CommitteeEngine {
    /// The engine of the node with `key`, among `peers` (every other node), at the tip of
    /// `ledger`.
    pub fn new(
        ledger: &Ledger<CommitteeConsensus>,
        key: Keypair,
        peers: Vec<PublicKey>,
        timing: committee::Timing,
        max_shard_txs: usize,
    ) -> Self {
        let params = ledger.chain().engine().params().clone();
        let node = Self::node_at(ledger, &params, &key, &peers, timing, max_shard_txs);
        Self {
            node,
            params,
            key,
            peers,
            timing,
            max_shard_txs,
            checked: HashMap::new(),
        }
    }

    fn node_at(
        ledger: &Ledger<CommitteeConsensus>,
        params: &CommitteeParams,
        key: &Keypair,
        peers: &[PublicKey],
        timing: committee::Timing,
        max_shard_txs: usize,
    ) -> committee::Node {
        let tip = TipInfo::of_header(ledger.chain().tip_header(), params.bootstrap());
        committee::Node::new(committee::NodeConfig {
            params: params.clone(),
            keypair: Keypair::from_secret_bytes(key.to_secret_bytes().as_bytes()),
            peers: peers.to_vec(),
            tip,
            timing,
            max_shard_txs,
        })
    }
}

/// The committee node's [`Host`]: the node's ledger (its state and pool) and a cache of
/// checked signatures.
struct LedgerHost<'a> {
    ledger: &'a mut Ledger<CommitteeConsensus>,
    checked: &'a mut HashMap<Checked, bool>,
    shard_bits: u8,
}

/// A signature check: key, signed digest, signature.
type Checked = (PublicKey, [u8; 32], [u8; 64]);

/// The most signature checks remembered; the cache starts over when full.
const MAX_CHECKED: usize = 1 << 16;

impl Host for LedgerHost<'_> {
    fn verify_signatures(
        &mut self,
        items: &[(PublicKey, [u8; 32], Signature)],
    ) -> Result<(), usize> {
        if self.checked.len() > MAX_CHECKED {
            self.checked.clear();
        }
        for (i, (key, digest, signature)) in items.iter().enumerate() {
            let id = (*key, *digest, signature.to_bytes());
            let ok = *self.checked.entry(id).or_insert_with(|| {
                key.verifying_key().is_ok_and(|vk| {
                    vk.verify_strict(
                        digest,
                        &ed25519_dalek::Signature::from_bytes(&signature.to_bytes()),
                    )
                    .is_ok()
                })
            });
            if !ok {
                return Err(i);
            }
        }
        Ok(())
    }

    fn verify_txs(&mut self, txs: &[Transaction]) -> bool {
        medledger::tx::verify_batch(self.ledger.chain_id(), txs.to_vec()).is_ok()
    }

    fn next_nonce(&mut self, parent: &BlockHash, account: &AccountId) -> Option<u64> {
        let chain = self.ledger.chain();
        (chain.tip() == *parent).then(|| chain.state().next_nonce(account))
    }

    fn state_root(
        &mut self,
        parent: &BlockHash,
        height: u64,
        timestamp: u64,
        txs: &[Transaction],
    ) -> Option<StateRoot> {
        let chain = self.ledger.chain();
        if chain.tip() != *parent || chain.height() + 1 != height {
            return None;
        }
        match self.ledger.build_template(txs.to_vec(), timestamp) {
            Ok(t) if t.rejected.is_empty() => Some(t.state_root),
            _ => None,
        }
    }

    fn take_txs(&mut self, parent: &BlockHash, shard: u16, max: usize) -> Vec<Transaction> {
        if self.ledger.chain().tip() != *parent {
            return Vec::new();
        }
        // The pool holds transactions valid in order on the tip; a shard's are those of its
        // accounts, each account's still in nonce order.
        self.ledger
            .pending_txs()
            .filter(|tx| committee::shard_of(&tx.signer().account(), self.shard_bits) == shard)
            .take(max)
            .cloned()
            .collect()
    }
}

impl Protocol for CommitteeEngine {
    type Message = committee::Message;
    type Timer = Tick;
    type Tx = Transaction;
    type Block = ChainBlock<CommitteeConsensus, MedRec>;
    type Evidence = core::convert::Infallible;
    type Error = core::convert::Infallible;
    type Ledger = Ledger<CommitteeConsensus>;

    fn handle(
        &mut self,
        ledger: &mut Ledger<CommitteeConsensus>,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<Outputs<Self>, Self::Error> {
        let mut host = LedgerHost {
            ledger,
            checked: &mut self.checked,
            shard_bits: self.params.shard_bits(),
        };
        Ok(self.node.handle_with(&mut host, now, input))
    }
}

impl NodeEngine for CommitteeEngine {
    type Consensus = CommitteeConsensus;
    const NAME: &'static str = "committee";

    fn step(
        &mut self,
        ledger: &mut Ledger<CommitteeConsensus>,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<Outputs<Self>, Error> {
        // Leaders take their shard's transactions from the ledger's pool.
        if let Input::Transactions(txs) = &input {
            submit_all(ledger, txs)?;
        }
        Ok(self.handle(ledger, now, input)?)
    }

    /// A committee node follows the chain by block announcements, not by the ledger; one whose
    /// epoch the ledger has passed (it was restarted, or missed the announcement) starts again
    /// at the ledger's tip.
    fn synced(
        &mut self,
        ledger: &mut Ledger<CommitteeConsensus>,
        now: Time,
    ) -> Result<Outputs<Self>, Error> {
        if self.node.status().height > ledger.chain().height() {
            return Ok(Vec::new());
        }
        self.node = Self::node_at(
            ledger,
            &self.params,
            &self.key,
            &self.peers,
            self.timing,
            self.max_shard_txs,
        );
        self.step(ledger, now, Input::Start)
    }

    fn describe(evidence: &Self::Evidence) -> String {
        match *evidence {}
    }
}

/// The node's ledger as the web API reads it and writes to it, whatever the engine.
pub trait LedgerView {
    /// The chain: state, tip, access decisions.
    fn chain(&self) -> &dyn ChainView;
    /// The chain id.
    fn chain_id(&self) -> ChainId;
    /// Pending transactions.
    fn pending(&self) -> usize;
    /// The next nonce of `account`, pending transactions counted.
    fn next_nonce(&self, account: &AccountId) -> u64;
    /// The account a key signs for.
    fn account_of_key(&self, key: &PublicKey) -> AccountId;
    /// `payload` signed by `keypair` with its next nonce.
    fn sign(&self, keypair: &Keypair, payload: Payload) -> Transaction;
    /// Where a transaction stands.
    fn status(&self, id: &TxId) -> Option<TxStatus>;
    /// What submitting `tx` would do (nothing is added).
    ///
    /// # Errors
    ///
    /// The refusal submitting it would meet.
    fn dry_run(&mut self, tx: &Transaction) -> Result<Accepted, Refusal>;
    /// What `payload` signed by `signer` with its next nonce would do (nothing is added).
    ///
    /// # Errors
    ///
    /// The refusal submitting it would meet.
    fn dry_run_op(&mut self, signer: &PublicKey, payload: Payload) -> Result<Accepted, Refusal>;
}

/// The chain as the web API reads it, whatever the engine.
pub trait ChainView {
    /// The main chain's height.
    fn height(&self) -> u64;
    /// The tip's hash.
    fn tip(&self) -> BlockHash;
    /// The tip's time, Unix seconds.
    fn tip_time(&self) -> u64;
    /// The state root after the tip.
    fn tip_state_root(&self) -> StateRoot;
    /// The state after the tip.
    fn state(&self) -> &medledger::State;
    /// The MedRec access state after the tip.
    fn access(&self) -> &AccessState;
    /// Decides an access request at the tip.
    fn decide(&self, request: &AccessRequest) -> Decision;
    /// Who may read `pointer` at time `at` (Unix seconds), by the state after the tip.
    fn who_can_read(&self, pointer: &PointerId, at: u64) -> Vec<Reader>;
}

impl<C: Consensus> ChainView for medledger::Chain<C> {
    fn height(&self) -> u64 {
        medledger::Chain::height(self)
    }
    fn tip(&self) -> BlockHash {
        medledger::Chain::tip(self)
    }
    fn tip_time(&self) -> u64 {
        self.tip_header().timestamp
    }
    fn tip_state_root(&self) -> StateRoot {
        self.tip_header().state_root
    }
    fn state(&self) -> &medledger::State {
        medledger::Chain::state(self)
    }
    fn access(&self) -> &AccessState {
        medledger::Chain::access(self)
    }
    fn decide(&self, request: &AccessRequest) -> Decision {
        medledger::Chain::decide(self, request)
    }
    fn who_can_read(&self, pointer: &PointerId, at: u64) -> Vec<Reader> {
        medledger::Chain::who_can_read(self, pointer, at)
    }
}

impl<C: Consensus> LedgerView for Ledger<C> {
    fn chain(&self) -> &dyn ChainView {
        Ledger::chain(self)
    }
    fn chain_id(&self) -> ChainId {
        Ledger::chain_id(self)
    }
    fn pending(&self) -> usize {
        Ledger::pending(self)
    }
    fn next_nonce(&self, account: &AccountId) -> u64 {
        Ledger::next_nonce(self, account)
    }
    fn account_of_key(&self, key: &PublicKey) -> AccountId {
        Ledger::account_of_key(self, key)
    }
    fn sign(&self, keypair: &Keypair, payload: Payload) -> Transaction {
        Ledger::sign(self, keypair, payload)
    }
    fn status(&self, id: &TxId) -> Option<TxStatus> {
        Ledger::status(self, id)
    }
    fn dry_run(&mut self, tx: &Transaction) -> Result<Accepted, Refusal> {
        Ledger::dry_run(self, tx)
    }
    fn dry_run_op(&mut self, signer: &PublicKey, payload: Payload) -> Result<Accepted, Refusal> {
        Ledger::dry_run_op(self, signer, payload)
    }
}
