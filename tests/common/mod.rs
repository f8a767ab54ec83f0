//! Helpers shared by the access-control integration tests: a chain with a fast Proof-of-Work,
//! a manual clock, signing with the right nonces, mining, and refusals checked both ways (left
//! out of a block template, and a block forced to include them refused by `append`).
#![allow(dead_code)]

#[path = "../support/pow.rs"]
mod pow_setup;
pub use pow_setup::engine;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use medledger::access::{
    AccessError, AccessEvent, AccessOp, Identity, PointerId, RecordPointer, RelationshipId, Role,
};
use medledger::chain::ManualClock;
use medledger::hash::{AccountId, BlockHash, StateRoot};
use medledger::merkle::merkle_root;
use medledger::pow::{PowSeal, ProofOfWork};
use medledger::tx::Keypair;
use medledger::Block;
use medledger::{Chain, ChainBuilder, ChainError};
use medledger::{Event, StateError};
use medledger::{Payload, Transaction};

pub const T0: u64 = 1_767_225_600;
pub const DAY: u64 = 86_400;

pub struct Net {
    pub chain: Chain<ProofOfWork>,
    pub clock: Arc<ManualClock>,
    pub now: u64,
}

pub type Snapshot = (BlockHash, u64, StateRoot);

impl Net {
    pub fn new(authorities: &[(&str, &Keypair)]) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let mut b = ChainBuilder::new("access-tests", engine())
            .genesis_time(T0)
            .clock(clock.clone());
        for (name, key) in authorities {
            b = b.authority(*name, key.public());
        }
        Self {
            chain: b.build().unwrap(),
            clock,
            now: T0,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        (
            self.chain.tip(),
            self.chain.height(),
            self.chain.state().root(),
        )
    }

    /// Signs the operations in order, each with its actor's next nonce.
    pub fn sign_all(&self, ops: Vec<(&Keypair, AccessOp)>) -> Vec<Transaction> {
        let mut nonces: HashMap<AccountId, u64> = HashMap::new();
        let state = self.chain.state();
        ops.into_iter()
            .map(|(key, op)| {
                let account = state.account_of_key(&key.public());
                let n = nonces
                    .entry(account)
                    .or_insert_with(|| state.next_nonce(&account));
                let tx = Transaction::sign(key, self.chain.chain_id(), *n, Payload::Access(op));
                *n += 1;
                tx
            })
            .collect()
    }

    pub fn sign(&self, key: &Keypair, op: AccessOp) -> Transaction {
        self.sign_all(vec![(key, op)]).remove(0)
    }

    /// Mines `txs` into a block `advance` seconds after the last; every one must apply.
    pub fn mine(&mut self, advance: u64, txs: Vec<Transaction>) -> Vec<AccessEvent> {
        self.now += advance;
        self.clock.set(self.now);
        let n = txs.len();
        let template = self.chain.build_template(txs, self.now).unwrap();
        assert!(
            template.rejected.is_empty(),
            "refused: {:?}",
            template.rejected
        );
        assert_eq!(template.txs.len(), n);
        let block = self.chain.mine(template.txs, self.now).unwrap();
        let out = self.chain.append(block).unwrap();
        out.applied[0]
            .events
            .iter()
            .flat_map(|(_, e)| e.iter())
            .filter_map(|e| match e {
                Event::Access(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    /// Signs and mines the operations in one block, 60 seconds later.
    pub fn run(&mut self, ops: Vec<(&Keypair, AccessOp)>) -> Vec<AccessEvent> {
        let txs = self.sign_all(ops);
        self.mine(60, txs)
    }

    pub fn run_after(&mut self, advance: u64, ops: Vec<(&Keypair, AccessOp)>) -> Vec<AccessEvent> {
        let txs = self.sign_all(ops);
        self.mine(advance, txs)
    }

    /// A block holding exactly `txs` on the tip, `advance` seconds later, whatever the state
    /// says of them (its state root is the tip's: only their failure can be checked).
    pub fn forced_block(&self, advance: u64, txs: Vec<Transaction>) -> Block<PowSeal> {
        let time = self.now + advance;
        let ids: Vec<_> = txs.iter().map(Transaction::id).collect();
        let template = medledger::BlockTemplate {
            height: self.chain.height() + 1,
            parent: self.chain.tip(),
            tx_root: merkle_root(&[]),
            state_root: self.chain.state().root(),
            timestamp: time,
            txs: Vec::new(),
            rejected: Vec::new(),
        };
        let mut header = template.header(PowSeal {
            bits: self
                .chain
                .engine()
                .required_bits(&self.chain.tip_ancestors()),
            nonce: 0,
            extra_nonce: 0,
        });
        header.tx_root = merkle_root(&ids);
        header.tx_count = txs.len() as u32;
        let never = AtomicBool::new(false);
        header.seal = self.chain.engine().solve(header.clone(), &never).unwrap();
        Block {
            header,
            txs: txs.try_into().unwrap(),
        }
    }

    /// Checks that `tx` is refused with a state error, both when building a block (it is left
    /// out) and in a block received from elsewhere (the block is refused), and that nothing
    /// changed. Returns the error.
    pub fn refuse_tx(&mut self, tx: Transaction) -> StateError {
        let before = self.snapshot();
        self.clock.set(self.now + 60);
        let template = self
            .chain
            .build_template(vec![tx.clone()], self.now + 60)
            .unwrap();
        assert!(template.txs.is_empty(), "the template included it");
        let err = template.rejected[0].1.clone();
        assert_eq!(self.snapshot(), before);
        let block = self.forced_block(60, vec![tx]);
        match self.chain.append(block) {
            Err(ChainError::Tx { failure, .. }) => assert_eq!(failure.error, err),
            other => panic!("the forced block was not refused: {other:?}"),
        }
        assert_eq!(self.snapshot(), before);
        assert_eq!(
            self.chain.replay_state().unwrap().root(),
            before.2,
            "replay agrees"
        );
        err
    }

    /// [`refuse_tx`](Self::refuse_tx) for one operation, expecting an access error.
    pub fn refuse(&mut self, key: &Keypair, op: AccessOp) -> AccessError {
        match self.refuse_tx(self.sign(key, op)) {
            StateError::App(e) => e,
            other => panic!("expected an access error, got {other}"),
        }
    }
}

/// The registration of `key`'s account with `role`: a patient's identity commitment to `label`
/// (salted, bound to the account), any other role's organisation name `label`.
pub fn register_op(key: &Keypair, role: Role, label: &str) -> AccessOp {
    match role {
        Role::Patient => AccessOp::register_patient(key.account(), label, &[7; 32]),
        _ => AccessOp::Register {
            role,
            identity: Identity::Organisation(label.try_into().unwrap()),
            blinded: None,
        },
    }
}

pub fn relationship(patient: &Keypair, provider: &Keypair) -> RelationshipId {
    RelationshipId::of(patient.account(), provider.account())
}

/// The pointer id the `i`-th transaction of `txs` creates.
pub fn pointer_of(txs: &[Transaction], i: usize) -> PointerId {
    PointerId::of_tx(txs[i].id())
}

pub fn record(n: u8, category: medledger::access::Category) -> RecordPointer {
    RecordPointer {
        query: format!("SELECT * FROM records WHERE id = {n}")
            .try_into()
            .unwrap(),
        content_hash: medledger::hash::content_hash(&[n]),
        category,
        data_period: medledger::access::Period::new(T0 - 100 * DAY, T0).unwrap(),
    }
}
