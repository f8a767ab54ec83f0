//! The embedder's `Ledger`: the mempool refuses each invalid transaction with its reason and
//! keeps nonce order; block production packs what fits, stamps valid times, loses nothing and
//! reports the ids it created; statuses, subscriptions, reorganisations, and engines other than
//! Proof-of-Work.

mod common;

use std::sync::Arc;

use common::{engine, record, register_op, DAY, T0};
use medledger::access::{
    AccessError, AccessEvent, AccessOp, Action, ActionSet, Basis, Category, Created, GrantTerms,
    Period, PurposeSet, RelationshipId, Role, Scope, Viewer,
};
use medledger::block::{Header, MAX_BLOCK_TXS};
use medledger::chain::ManualClock;
use medledger::consensus::{Ancestors, Consensus, ConsensusError, Work};
use medledger::hash::{content_hash, ChainId};
use medledger::pow::ProofOfWork;
use medledger::purpose::PurposeOfUse;
use medledger::tx::{Keypair, TxError, MAX_TX_LEN};
use medledger::StateError;
use medledger::{BlockTemplate, Chain, ChainBuilder, ChainError};
use medledger::{Ledger, LedgerError, LedgerEvent, Refusal, TxStatus};
use medledger::{Payload, Transaction};

#[test]
fn ledgers_move_between_threads_and_errors_are_plain_data() {
    fn send<T: Send>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send::<Ledger<ProofOfWork>>();
    send::<LedgerEvent>();
    error::<Refusal>();
    error::<LedgerError>();
}

fn chain_on(clock: &Arc<ManualClock>, authorities: &[&Keypair]) -> Chain<ProofOfWork> {
    let mut b = ChainBuilder::new("ledger-tests", engine())
        .genesis_time(T0)
        .clock(clock.clone());
    for (i, k) in authorities.iter().enumerate() {
        b = b.authority(format!("Authority {i}"), k.public());
    }
    b.build().unwrap()
}

fn ledger() -> (Ledger<ProofOfWork>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0 + 60));
    (Ledger::new(chain_on(&clock, &[])).unwrap(), clock)
}

fn data(n: u64) -> Payload {
    Payload::Data {
        record: content_hash(&n.to_le_bytes()),
    }
}

fn key(i: u64) -> Keypair {
    let mut seed = [9u8; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    Keypair::from_seed(&seed)
}

/// The ledger refused `tx` with `reason`, left the pool as it was, and remembers the refusal.
fn assert_refused(ledger: &mut Ledger<ProofOfWork>, tx: Transaction, reason: Refusal) {
    let pending = ledger.pending();
    let bytes = ledger.pending_bytes();
    let id = tx.id();
    if !matches!(reason, Refusal::PoolFull { .. }) {
        // A dry run answers the same (it does not count the pool's room).
        assert_eq!(ledger.dry_run(&tx).unwrap_err(), reason, "dry run");
    }
    assert_eq!(ledger.submit(tx).unwrap_err(), reason);
    assert_eq!((ledger.pending(), ledger.pending_bytes()), (pending, bytes));
    if !matches!(reason, Refusal::Duplicate(_)) {
        assert_eq!(ledger.status(&id), Some(TxStatus::Refused(reason)));
    }
}

#[test]
fn a_bad_signature_is_refused() {
    let (mut l, _) = ledger();
    let k = key(1);
    let mut tx = l.sign(&k, data(1));
    tx.signature = k.sign(b"something else");
    assert_refused(&mut l, tx, Refusal::Tx(TxError::BadSignature(k.public())));
}

#[test]
fn a_batch_refuses_only_its_bad_signatures_and_wrong_chains() {
    let (mut l, _) = ledger();
    let chain_id = l.chain_id();
    let mut txs: Vec<Transaction> = (0..40)
        .map(|i| Transaction::sign(&key(i), chain_id, 0, data(i)))
        .collect();
    // A forged signature in the middle of the batch, another chain's transaction near its end.
    txs[17].signature = key(17).sign(b"something else");
    let other = ChainId::from_bytes([1; 32]);
    txs[33] = Transaction::sign(&key(33), other, 0, data(33));
    let answers = l.submit_all(txs.clone());
    for (i, answer) in answers.iter().enumerate() {
        match i {
            17 => assert_eq!(
                answer.as_ref().unwrap_err(),
                &Refusal::Tx(TxError::BadSignature(key(17).public()))
            ),
            33 => assert!(matches!(
                answer,
                Err(Refusal::Tx(TxError::WrongChain { .. }))
            )),
            _ => assert!(answer.is_ok(), "transaction {i}: {answer:?}"),
        }
    }
    assert_eq!(l.pending(), 38);
    // The forged one stays refused when offered again alone.
    assert_refused(
        &mut l,
        txs[17].clone(),
        Refusal::Tx(TxError::BadSignature(key(17).public())),
    );
}

#[test]
fn another_chains_transaction_is_refused() {
    let (mut l, _) = ledger();
    let k = key(1);
    let other = ChainId::from_bytes([1; 32]);
    let tx = Transaction::sign(&k, other, 0, data(1));
    let expected = Refusal::Tx(TxError::WrongChain {
        expected: l.chain_id(),
        found: other,
    });
    assert_refused(&mut l, tx, expected);
}

#[test]
fn stale_and_gapped_nonces_are_refused_with_the_nonce_expected() {
    let (mut l, _) = ledger();
    let k = key(1);
    let account = k.account();
    l.sign_and_submit(&k, data(0)).unwrap();
    l.produce_block().unwrap();
    assert_eq!(l.next_nonce(&account), 1);
    // Stale: nonce 0 again, with other content.
    let stale = Transaction::sign(&k, l.chain_id(), 0, data(99));
    let bad = |expected, found| {
        Refusal::State(StateError::BadNonce {
            account,
            expected,
            found,
        })
    };
    assert_refused(&mut l, stale, bad(1, 0));
    // A gap: nonce 3 while 1 is next. Refused, not queued.
    let ahead = Transaction::sign(&k, l.chain_id(), 3, data(3));
    assert_refused(&mut l, ahead, bad(1, 3));
    // Pending transactions count: with 1 pending, a second nonce 1 is refused, 2 is next.
    l.sign_and_submit(&k, data(1)).unwrap();
    assert_eq!(l.next_nonce(&account), 2);
    let conflicting = Transaction::sign(&k, l.chain_id(), 1, data(100));
    assert_refused(&mut l, conflicting, bad(2, 1));
    // The same refusal as the chain gives for the committed state.
    let from_chain = {
        let mut chain = chain_on(&Arc::new(ManualClock::new(T0 + 60)), &[]);
        let first = Transaction::sign(&k, chain.chain_id(), 0, data(0));
        let stale = Transaction::sign(&k, chain.chain_id(), 5, data(5));
        let t = chain.build_template(vec![first, stale], T0 + 60).unwrap();
        t.rejected[0].1.clone()
    };
    assert_eq!(
        from_chain,
        StateError::BadNonce {
            account,
            expected: 1,
            found: 5
        }
    );
}

#[test]
fn a_duplicate_is_refused_while_pending_and_once_included() {
    let (mut l, _) = ledger();
    let k = key(1);
    let tx = l.sign(&k, data(1));
    let id = l.submit(tx.clone()).unwrap().id;
    assert_eq!(id, tx.id());
    assert_refused(&mut l, tx.clone(), Refusal::Duplicate(id));
    assert_eq!(l.status(&id), Some(TxStatus::Pending));
    l.produce_block().unwrap();
    assert_refused(&mut l, tx, Refusal::Duplicate(id));
    assert!(matches!(
        l.status(&id),
        Some(TxStatus::Included {
            height: 1,
            index: 0,
            ..
        })
    ));
}

#[test]
fn a_full_pool_refuses_by_count_and_by_bytes() {
    let clock = Arc::new(ManualClock::new(T0 + 60));
    let mut l = Ledger::builder(chain_on(&clock, &[]))
        .max_pool_txs(3)
        .build()
        .unwrap();
    for i in 0..3 {
        l.sign_and_submit(&key(i), data(i)).unwrap();
    }
    let full = Refusal::PoolFull {
        what: "transactions",
        max: 3,
    };
    let tx = l.sign(&key(3), data(3));
    assert_eq!(l.submit(tx.clone()).unwrap_err(), full);
    assert_eq!(l.status(&tx.id()), Some(TxStatus::Refused(full)));
    // Room again after a block: the same transaction is now accepted.
    l.produce_block().unwrap();
    l.submit(tx.clone()).unwrap();
    assert_eq!(l.status(&tx.id()), Some(TxStatus::Pending));

    let mut l = Ledger::builder(chain_on(&clock, &[]))
        .max_pool_bytes(MAX_TX_LEN)
        .build()
        .unwrap();
    let len = l.sign(&key(0), data(0)).encode().len();
    let fit = MAX_TX_LEN / len;
    for i in 0..fit as u64 {
        l.sign_and_submit(&key(i), data(i)).unwrap();
    }
    assert_eq!(l.pending_bytes(), fit * len);
    let tx = l.sign(&key(fit as u64), data(0));
    assert_refused(
        &mut l,
        tx.clone(),
        Refusal::PoolFull {
            what: "bytes",
            max: MAX_TX_LEN,
        },
    );
    // The dry run does not count the pool: the transaction itself is fine.
    assert!(l.dry_run(&tx).is_ok());
}

#[test]
fn bad_limits_are_refused_by_the_builder() {
    let clock = Arc::new(ManualClock::new(T0 + 60));
    for build in [
        Ledger::builder(chain_on(&clock, &[]))
            .max_pool_txs(0)
            .build(),
        Ledger::builder(chain_on(&clock, &[]))
            .max_block_txs(MAX_BLOCK_TXS + 1)
            .build(),
        Ledger::builder(chain_on(&clock, &[]))
            .max_block_bytes(100)
            .build(),
        Ledger::builder(chain_on(&clock, &[]))
            .max_pool_bytes(MAX_TX_LEN - 1)
            .build(),
    ] {
        assert!(matches!(build, Err(LedgerError::Config(_))));
    }
}

/// A hospital certified by the authority, a patient, a specialist: registered and related.
struct Cast {
    authority: Keypair,
    hospital: Keypair,
    patient: Keypair,
    specialist: Keypair,
    rel: RelationshipId,
}

fn cast_ledger() -> (Ledger<ProofOfWork>, Arc<ManualClock>, Cast) {
    let c = Cast {
        authority: key(100),
        hospital: key(101),
        patient: key(102),
        specialist: key(103),
        rel: RelationshipId::of(key(102).account(), key(101).account()),
    };
    let clock = Arc::new(ManualClock::new(T0 + 60));
    let l = Ledger::new(chain_on(&clock, &[&c.authority])).unwrap();
    (l, clock, c)
}

/// Submits the authority's certification of the hospital and the hospital's registration.
fn certify_and_register_hospital(l: &mut Ledger<ProofOfWork>, c: &Cast) {
    l.sign_and_submit(
        &c.authority,
        AccessOp::CertifyProvider {
            provider: c.hospital.account(),
            emergency: false,
        },
    )
    .unwrap();
    l.sign_and_submit(
        &c.hospital,
        register_op(&c.hospital, Role::Provider, "St Mary's"),
    )
    .unwrap();
}

#[test]
fn access_rules_are_checked_against_the_pending_transactions() {
    let (mut l, _, c) = cast_ledger();
    // Not yet certified, not registered: the chain's own access error.
    let early = l.sign(
        &c.hospital,
        AccessOp::CreateRelationship {
            patient: c.patient.account(),
        },
    );
    assert_refused(
        &mut l,
        early,
        Refusal::State(StateError::App(AccessError::NotRegistered(
            c.hospital.account(),
        ))),
    );
    // Pending certification and registrations make it valid before any block.
    certify_and_register_hospital(&mut l, &c);
    l.sign_and_submit(&c.patient, register_op(&c.patient, Role::Patient, "NHS-1"))
        .unwrap();
    let created = l
        .sign_and_submit(
            &c.hospital,
            AccessOp::CreateRelationship {
                patient: c.patient.account(),
            },
        )
        .unwrap()
        .created;
    assert_eq!(created, vec![Created::Relationship(c.rel)]);
    // The specialist may not accept the patient's relationship.
    let not_patient = l.sign(
        &c.specialist,
        AccessOp::AcceptRelationship {
            relationship: c.rel,
        },
    );
    let reason = l.dry_run(&not_patient).unwrap_err();
    assert!(
        matches!(reason, Refusal::State(StateError::App(_))),
        "{reason}"
    );
    assert_refused(&mut l, not_patient, reason);
    // Nothing reached the chain yet; the pool's answers came from pending transactions.
    assert_eq!(l.chain().height(), 0);
    let produced = l.produce_block().unwrap();
    assert_eq!(produced.report.txs.len(), 4);
    assert!(produced.report.left_out.is_empty());
    assert!(l.chain().access().relationship(&c.rel).is_some());
}

#[test]
fn pending_transactions_stay_out_of_the_chains_state_and_survive_a_proposal_check() {
    let (mut l, clock, c) = cast_ledger();
    let root = l.chain().state().root();
    for (who, op) in [
        (
            &c.authority,
            AccessOp::CertifyProvider {
                provider: c.hospital.account(),
                emergency: false,
            },
        ),
        (
            &c.hospital,
            register_op(&c.hospital, Role::Provider, "St Mary's"),
        ),
        (&c.patient, register_op(&c.patient, Role::Patient, "NHS-2")),
    ] {
        l.sign_and_submit(who, op).unwrap();
    }
    // The chain's state and queries show no pending write; the pool counts them all.
    assert_eq!(l.chain().state().root(), root);
    assert_eq!(l.chain().state().next_nonce(&c.patient.account()), 0);
    assert_eq!(l.next_nonce(&c.patient.account()), 1);
    assert!(l.chain().access().account(&c.patient.account()).is_none());
    // A peer's proposal of two of them, checked on the chain's state, leaves the pool's
    // writes as they were: a transaction resting on all three is still accepted.
    let proposed: Vec<Transaction> = l.pending_txs().take(2).cloned().collect();
    let template = l.build_template(proposed, T0 + 61).unwrap();
    assert_eq!(template.txs.len(), 2);
    assert!(template.rejected.is_empty());
    let relationship = AccessOp::CreateRelationship {
        patient: c.patient.account(),
    };
    l.sign_and_submit(&c.hospital, relationship).unwrap();
    assert_eq!(l.chain().state().root(), root);
    // A ledger built again over the chain starts with an empty pool and the chain's nonces.
    clock.set(T0 + 61);
    let produced = l.produce_block().unwrap();
    assert_eq!(produced.report.txs.len(), 4);
    let l = Ledger::new(l.into_chain()).unwrap();
    assert_eq!(l.pending(), 0);
    assert_eq!(l.next_nonce(&c.hospital.account()), 2);
    assert!(l.chain().access().relationship(&c.rel).is_some());
}

#[test]
fn relayed_transactions_wait_unapplied_and_a_block_drops_those_that_fail() {
    let (mut l, clock, c) = cast_ledger();
    let chain_id = l.chain_id();
    // Another node's clients signed these, and that node relays them here.
    let certify = Transaction::sign(
        &c.authority,
        chain_id,
        0,
        AccessOp::CertifyProvider {
            provider: c.hospital.account(),
            emergency: false,
        }
        .into(),
    );
    let register = Transaction::sign(
        &c.hospital,
        chain_id,
        0,
        register_op(&c.hospital, Role::Provider, "St Mary's").into(),
    );
    let stale = Transaction::sign(&c.patient, chain_id, 5, data(1));
    let mut forged = Transaction::sign(&c.patient, chain_id, 0, data(2));
    forged.signature = c.patient.sign(b"something else");
    let answers = l.submit_relayed(vec![
        certify.clone(),
        register.clone(),
        stale.clone(),
        forged,
        certify.clone(),
    ]);
    assert_eq!(
        answers[..3],
        [Ok(certify.id()), Ok(register.id()), Ok(stale.id())]
    );
    assert_eq!(
        answers[3],
        Err(Refusal::Tx(TxError::BadSignature(c.patient.public())))
    );
    assert_eq!(answers[4], Err(Refusal::Duplicate(certify.id())));
    assert_eq!(l.pending(), 3);
    // Pending but not applied: the pool's answers do not count them.
    assert_eq!(l.next_nonce(&c.hospital.account()), 0);
    let early = l.sign(
        &c.hospital,
        AccessOp::CreateRelationship {
            patient: c.patient.account(),
        },
    );
    assert!(matches!(
        l.submit(early).unwrap_err(),
        Refusal::State(StateError::App(AccessError::NotRegistered(_)))
    ));
    // The block applies them; the one that fails is left out and leaves the pool.
    clock.set(T0 + 61);
    let produced = l.produce_block().unwrap();
    let included: Vec<_> = produced.report.txs.iter().map(|t| t.id).collect();
    assert_eq!(included, [certify.id(), register.id()]);
    let left_out: Vec<_> = produced.report.left_out.iter().map(|l| l.id).collect();
    assert_eq!(left_out, [stale.id()]);
    assert_eq!(l.pending(), 0);
    assert!(matches!(
        l.status(&stale.id()),
        Some(TxStatus::Refused(Refusal::State(
            StateError::BadNonce { .. }
        )))
    ));
    assert_eq!(l.next_nonce(&c.hospital.account()), 1);
}

#[test]
fn a_template_drops_relayed_transactions_that_fail_and_keeps_the_pools_own() {
    let (mut l, clock, c) = cast_ledger();
    let chain_id = l.chain_id();
    certify_and_register_hospital(&mut l, &c);
    // Relayed: a gap in the patient's nonces, valid alone, failing in any block for now.
    let gap = Transaction::sign(&c.patient, chain_id, 3, data(9));
    assert_eq!(l.submit_relayed(vec![gap.clone()]), [Ok(gap.id())]);
    assert_eq!(l.pending(), 3);
    let pending: Vec<Transaction> = l.pending_txs().cloned().collect();
    let template = l.build_template(pending.clone(), T0 + 61).unwrap();
    assert_eq!(template.txs.len(), 2);
    let mut rejected = template.rejected;
    assert_eq!(rejected.len(), 1);
    // The hospital's registration listed as rejected too (another block's context, say):
    // the pool's own transactions stay, to be checked again after the next block.
    let reason = StateError::App(AccessError::NotRegistered(c.hospital.account()));
    rejected.push((pending[1].clone(), reason));
    l.drop_rejected(&rejected);
    assert_eq!(l.pending(), 2);
    assert_eq!(l.status(&pending[1].id()), Some(TxStatus::Pending));
    assert!(matches!(
        l.status(&gap.id()),
        Some(TxStatus::Refused(Refusal::State(
            StateError::BadNonce { .. }
        )))
    ));
    // Once a block passed a nonce, a relayed transaction carrying it is refused at once.
    clock.set(T0 + 61);
    assert_eq!(l.produce_block().unwrap().report.txs.len(), 2);
    let replayed = Transaction::sign(&c.authority, chain_id, 0, data(10));
    assert!(matches!(
        l.submit_relayed(vec![replayed]).pop(),
        Some(Err(Refusal::State(StateError::BadNonce {
            expected: 1,
            found: 0,
            ..
        })))
    ));
    assert_eq!(l.pending(), 0);
}

#[test]
fn a_dry_run_answers_without_adding_anything() {
    let (mut l, _, c) = cast_ledger();
    let op = register_op(&c.hospital, Role::Provider, "St Mary's");
    let before = l.chain().state().root();
    let answer = l.dry_run_op(&c.hospital.public(), op.clone()).unwrap();
    assert_eq!(answer.created, vec![Created::Account(c.hospital.account())]);
    assert_eq!(l.pending(), 0);
    assert_eq!(l.next_nonce(&c.hospital.account()), 0);
    // Twice the same answer: nothing was kept.
    assert_eq!(l.dry_run_op(&c.hospital.public(), op).unwrap(), answer);
    assert_eq!(l.chain().state().root(), before);
    // And a refusal names the rule.
    let refused = l
        .dry_run_op(
            &c.hospital.public(),
            AccessOp::CreateRelationship {
                patient: c.patient.account(),
            },
        )
        .unwrap_err();
    assert_eq!(
        refused,
        Refusal::State(StateError::App(AccessError::NotRegistered(
            c.hospital.account()
        )))
    );
}

#[test]
fn nonce_order_holds_across_blocks() {
    let clock = Arc::new(ManualClock::new(T0 + 60));
    let mut l = Ledger::builder(chain_on(&clock, &[]))
        .max_block_txs(3)
        .build()
        .unwrap();
    let (a, b) = (key(1), key(2));
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push((0, n, l.sign_and_submit(&a, data(n)).unwrap().id));
        ids.push((1, n, l.sign_and_submit(&b, data(100 + n)).unwrap().id));
    }
    let mut blocks = 0;
    while l.pending() > 0 {
        let p = l.produce_block().unwrap();
        assert!(p.block.txs.len() <= 3);
        blocks += 1;
    }
    assert_eq!(blocks, 7);
    assert_eq!(l.next_nonce(&a.account()), 10);
    assert_eq!(l.chain().state().next_nonce(&b.account()), 10);
    // Every transaction is in, once, in the order accepted (so in nonce order per account).
    let mut last = (0, 0);
    for (_, _, id) in &ids {
        match l.status(id) {
            Some(TxStatus::Included { height, index, .. }) => {
                assert!((height, index) > last, "{id} out of order");
                last = (height, index);
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    for h in 1..=l.chain().height() {
        let block = l
            .chain()
            .block(&l.chain().hash_at(h).unwrap())
            .unwrap()
            .unwrap();
        let nonces: Vec<(u64, u64)> = block
            .txs
            .iter()
            .map(|t| (u64::from(t.body.signer != a.public()), t.body.nonce))
            .collect();
        let mut sorted = nonces.clone();
        sorted.sort_by_key(|(who, n)| (*n, *who));
        assert_eq!(nonces, sorted, "block {h}");
    }
}

#[test]
fn a_burst_of_70000_fills_blocks_and_loses_nothing() {
    const N: u64 = 70_000;
    const SIGNERS: u64 = 500;
    let (mut l, _) = ledger();
    let keys: Vec<Keypair> = (0..SIGNERS).map(key).collect();
    let chain_id = l.chain_id();
    // Every signer's transactions in nonce order, the signers taking turns.
    let txs: Vec<Transaction> = (0..N)
        .map(|i| {
            Transaction::sign(
                &keys[(i % SIGNERS) as usize],
                chain_id,
                i / SIGNERS,
                data(i),
            )
        })
        .collect();
    let ids: Vec<_> = txs.iter().map(Transaction::id).collect();
    // Most arrive as one burst, the rest one by one.
    let (burst, singles) = txs.split_at(60_000);
    let answers = l.submit_all(burst.to_vec());
    assert!(answers.iter().all(Result::is_ok));
    for tx in singles {
        l.submit(tx.clone()).unwrap();
    }
    assert_eq!(l.pending(), N as usize);
    let first = l.produce_block().unwrap();
    assert_eq!(
        first.block.txs.len(),
        MAX_BLOCK_TXS,
        "the first block is full"
    );
    assert!(first.report.left_out.is_empty());
    assert_eq!(l.pending(), N as usize - MAX_BLOCK_TXS);
    let second = l.produce_block().unwrap();
    assert_eq!(second.block.txs.len(), N as usize - MAX_BLOCK_TXS);
    assert_eq!(l.pending(), 0);
    // Nothing lost, nothing twice: each id included at its place.
    for (i, id) in ids.iter().enumerate() {
        let (height, index) = if i < MAX_BLOCK_TXS {
            (1, i)
        } else {
            (2, i - MAX_BLOCK_TXS)
        };
        assert_eq!(
            l.status(id),
            Some(TxStatus::Included {
                block: l.chain().hash_at(height).unwrap(),
                height,
                index: index as u32,
            })
        );
    }
    for k in &keys {
        assert_eq!(l.chain().state().next_nonce(&k.account()), N / SIGNERS);
    }
}

#[test]
fn blocks_are_filled_up_to_the_byte_limit() {
    let clock = Arc::new(ManualClock::new(T0 + 60));
    let mut l = Ledger::builder(chain_on(&clock, &[]))
        .max_block_bytes(MAX_TX_LEN)
        .build()
        .unwrap();
    let len = l.sign(&key(0), data(0)).encode().len();
    let per_block = MAX_TX_LEN / len;
    let n = 3 * per_block + 5;
    for i in 0..n as u64 {
        l.sign_and_submit(&key(i % 7), data(i)).unwrap();
    }
    let mut sizes = Vec::new();
    while l.pending() > 0 {
        sizes.push(l.produce_block().unwrap().block.txs.len());
    }
    assert_eq!(sizes, vec![per_block, per_block, per_block, 5]);
}

#[test]
fn mine_and_seal_refuse_what_they_cannot_take() {
    let clock = Arc::new(ManualClock::new(T0 + 60));
    let mut chain = chain_on(&clock, &[]);
    let k = key(1);
    let id = chain.chain_id();
    // More than a block holds: an error, not a panic, before any signature is checked.
    let many: Vec<Transaction> = (0..=MAX_BLOCK_TXS as u64)
        .map(|n| Transaction::sign(&k, id, n, data(0)))
        .collect();
    match chain.mine(many.clone(), T0 + 60) {
        Err(ChainError::TooManyTxs { count, max }) => {
            assert_eq!((count, max), (MAX_BLOCK_TXS + 1, MAX_BLOCK_TXS));
        }
        other => panic!("{other:?}"),
    }
    let template = BlockTemplate {
        txs: many,
        ..chain.build_template(Vec::new(), T0 + 60).unwrap()
    };
    assert!(matches!(
        template.seal(engine().genesis_seal()),
        Err(ChainError::TooManyTxs { .. })
    ));
    // A stale nonce is not silently dropped: the whole block is refused, naming it.
    let first = Transaction::sign(&k, id, 0, data(0));
    let stale = Transaction::sign(&k, id, 0, data(1));
    match chain.mine(vec![first, stale.clone()], T0 + 60) {
        Err(ChainError::Refused(failures)) => {
            assert_eq!(failures.len(), 1);
            assert_eq!((failures[0].index, failures[0].tx_id), (1, stale.id()));
            assert!(matches!(
                failures[0].error,
                StateError::BadNonce {
                    expected: 1,
                    found: 0,
                    ..
                }
            ));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(chain.height(), 0);
}

#[test]
fn two_blocks_in_the_same_second_are_both_valid() {
    let (mut l, clock) = ledger();
    // The clock stands still; blocks keep coming.
    let mut times = Vec::new();
    for i in 0..15 {
        l.sign_and_submit(&key(1), data(i)).unwrap();
        times.push(l.produce_block().unwrap().block.header.timestamp);
    }
    assert_eq!(l.chain().height(), 15);
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(times[0], clock.now_for_tests());
    // The median rule moved the time on, but only a little.
    assert!(*times.last().unwrap() <= T0 + 60 + 15);
    // A clock that goes backwards never stamps a block before its parent.
    clock.set(T0);
    let p = l.produce_block().unwrap();
    assert!(p.block.header.timestamp >= *times.last().unwrap());
}

/// Reads the manual clock (it is also the `Clock` trait's `now`).
trait Now {
    fn now_for_tests(&self) -> u64;
}
impl Now for ManualClock {
    fn now_for_tests(&self) -> u64 {
        medledger::chain::Clock::now(self)
    }
}

#[test]
fn ids_reported_match_the_state() {
    let (mut l, clock, c) = cast_ledger();
    let certify = AccessOp::CertifyProvider {
        provider: c.hospital.account(),
        emergency: false,
    };
    l.sign_and_submit(&c.authority, certify).unwrap();
    for (k, role, name) in [
        (&c.hospital, Role::Provider, "St Mary's"),
        (&c.specialist, Role::Provider, "Dr Lee"),
        (&c.patient, Role::Patient, "NHS-2"),
    ] {
        l.sign_and_submit(k, register_op(k, role, name)).unwrap();
    }
    l.sign_and_submit(
        &c.hospital,
        AccessOp::CreateRelationship {
            patient: c.patient.account(),
        },
    )
    .unwrap();
    let add = AccessOp::AddPointer {
        relationship: c.rel,
        record: record(1, Category::Laboratory),
        replaces: None,
    };
    let promised = l.sign_and_submit(&c.hospital, add).unwrap().created;
    l.sign_and_submit(
        &c.patient,
        AccessOp::AcceptRelationship {
            relationship: c.rel,
        },
    )
    .unwrap();
    let terms = GrantTerms::new(
        c.rel,
        Viewer::Account(c.specialist.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[PurposeOfUse::Treatment]),
        Period::lasting(T0, 30 * DAY),
    );
    let grant_tx = l.sign(&c.patient, AccessOp::Grant { terms, under: None });
    let grant_promised = l.submit(grant_tx.clone()).unwrap().created;
    let p = l.produce_block().unwrap();
    let created: Vec<Created> = p
        .report
        .txs
        .iter()
        .flat_map(|t| t.created.clone())
        .collect();
    let pointer = created.iter().find_map(Created::pointer).unwrap();
    let grant = created.iter().find_map(Created::grant).unwrap();
    assert_eq!(promised, vec![Created::Pointer(pointer)]);
    assert_eq!(grant_promised, vec![Created::Grant(grant)]);
    assert!(created.contains(&Created::Relationship(c.rel)));
    // The ids are the state's.
    let access = l.chain().access();
    assert_eq!(access.pointer(&pointer).unwrap().id, pointer);
    assert_eq!(access.grant(&grant).unwrap().terms.relationship, c.rel);
    assert_eq!(access.relationship(&c.rel).unwrap().id, c.rel);
    // The outcome of the grant's transaction sits at its place.
    let index = p
        .report
        .txs
        .iter()
        .position(|t| t.id == grant_tx.id())
        .unwrap();
    assert!(matches!(
        l.status(&grant_tx.id()),
        Some(TxStatus::Included { height: 1, index: i, .. }) if i as usize == index
    ));
    // A read with a receipt, then the grant expires before the next receipt gets in: that one
    // is left out with the chain's reason, and its status says so.
    let receipt = AccessOp::RecordAccess {
        patient: c.patient.account(),
        pointer,
        action: Action::Read,
        purpose: PurposeOfUse::Treatment,
        basis: Basis::Grant(grant),
    };
    l.sign_and_submit(&c.specialist, receipt.clone()).unwrap();
    let p = l.produce_block().unwrap();
    assert!(matches!(
        p.report.txs[0].events[..],
        [medledger::Event::Access(AccessEvent::Accessed { .. })]
    ));
    let late = l.sign_and_submit(&c.specialist, receipt).unwrap().id;
    clock.set(T0 + 31 * DAY);
    let p = l.produce_block().unwrap();
    assert!(p.report.txs.is_empty());
    assert_eq!(p.report.left_out.len(), 1);
    assert_eq!(p.report.left_out[0].id, late);
    let Refusal::State(StateError::App(AccessError::Denied(why))) = &p.report.left_out[0].reason
    else {
        panic!("{:?}", p.report.left_out[0].reason)
    };
    assert!(why.to_string().contains("expired"), "{why}");
    assert_eq!(
        l.status(&late),
        Some(TxStatus::Refused(p.report.left_out[0].reason.clone()))
    );
    assert_eq!(l.pending(), 0);
}

#[test]
fn subscribers_hear_blocks_and_reorganisations() {
    let (mut l, clock) = ledger();
    let events = l.subscribe();
    let tx = l.sign(&key(1), data(1));
    l.submit(tx.clone()).unwrap();
    let p = l.produce_block().unwrap();
    match events.try_recv().unwrap() {
        LedgerEvent::Applied(report) => assert_eq!(report, p.report),
        other => panic!("{other:?}"),
    }
    assert!(events.try_recv().is_err());

    // A heavier branch from another node without that transaction: two empty blocks on genesis.
    let mut other = chain_on(&clock, &[]);
    let t = l.next_block_time();
    let b1 = other.mine(Vec::new(), t).unwrap();
    other.append(b1.clone()).unwrap();
    let b2 = other.mine(Vec::new(), t + 1).unwrap();
    other.append(b2.clone()).unwrap();
    clock.set(t + 1);
    assert!(l.append(b1).unwrap().applied.is_empty(), "a side branch");
    let update = l.append(b2).unwrap();
    assert_eq!(update.reverted, vec![p.report.hash]);
    assert_eq!(update.applied.len(), 2);
    match events.try_recv().unwrap() {
        LedgerEvent::Reverted { hash, height } => assert_eq!((hash, height), (p.report.hash, 1)),
        other => panic!("{other:?}"),
    }
    for h in 1..=2 {
        match events.try_recv().unwrap() {
            LedgerEvent::Applied(r) => assert_eq!(r.height, h),
            other => panic!("{other:?}"),
        }
    }
    // The rolled-back transaction is pending again, and goes into the next block.
    assert_eq!(l.status(&tx.id()), Some(TxStatus::Pending));
    assert_eq!(l.next_nonce(&key(1).account()), 1);
    let p = l.produce_block().unwrap();
    assert_eq!(p.report.txs[0].id, tx.id());
    assert_eq!(l.chain().height(), 3);
    drop(events);
    l.sign_and_submit(&key(1), data(2)).unwrap();
    l.produce_block().unwrap();
}

/// A toy engine: the seal is the height, every block weighs 1, times may not go backwards.
struct Counter;

impl Consensus for Counter {
    type Seal = u64;
    fn name(&self) -> &'static str {
        "counter"
    }
    fn genesis_seal(&self) -> u64 {
        0
    }
    fn verify_header(
        &self,
        header: &Header<u64>,
        ancestors: &dyn Ancestors<u64>,
        _now: u64,
    ) -> Result<Work, ConsensusError> {
        if header.seal != header.height || header.timestamp < ancestors.parent().timestamp {
            return Err(ConsensusError::BadSeal("wrong seal or time".into()));
        }
        Ok(Work::from_u64(1))
    }
}

#[test]
fn any_engine_produces_through_a_sealer_or_a_proposal() {
    let chain = ChainBuilder::new("counter", Counter)
        .genesis_time(T0)
        .clock(Arc::new(ManualClock::new(T0)))
        .build()
        .unwrap();
    let mut l = Ledger::new(chain).unwrap();
    let k = key(1);
    l.sign_and_submit(&k, data(1)).unwrap();
    let mut sealer = |_: &Chain<Counter>, t: BlockTemplate| {
        let height = t.height;
        t.seal(height)
    };
    let p = l.produce_block_with(&mut sealer).unwrap();
    assert_eq!((p.block.header.seal, p.report.txs.len()), (1, 1));
    // Sealed elsewhere: propose, seal, append.
    l.sign_and_submit(&k, data(2)).unwrap();
    let proposal = l.propose().unwrap();
    assert_eq!(l.pending(), 1, "proposing changes nothing");
    let block = proposal.template.seal(2).unwrap();
    let update = l.append(block).unwrap();
    assert_eq!(update.applied[0].txs.len(), 1);
    assert_eq!(l.pending(), 0);
    assert_eq!(l.chain().state().next_nonce(&k.account()), 2);
    // A sealer that breaks the engine's rules: the chain refuses, the pool keeps its own.
    l.sign_and_submit(&k, data(3)).unwrap();
    let mut wrong = |_: &Chain<Counter>, t: BlockTemplate| t.seal(99);
    assert!(matches!(
        l.produce_block_with(&mut wrong),
        Err(LedgerError::Chain(ChainError::Consensus(_)))
    ));
    assert_eq!(l.pending(), 1);
    assert_eq!(l.chain().height(), 2);
}

#[test]
fn signing_counts_pending_transactions_and_key_rotation() {
    let (mut l, _, c) = cast_ledger();
    l.sign_and_submit(&c.patient, register_op(&c.patient, Role::Patient, "NHS-3"))
        .unwrap();
    let new_key = key(200);
    let rotate = AccessOp::rotate_key(l.chain_id(), c.patient.account(), &new_key);
    l.sign_and_submit(&c.patient, rotate).unwrap();
    // The new key signs for the patient's account with the next nonce, before any block.
    assert_eq!(l.account_of_key(&new_key.public()), c.patient.account());
    let tx = l.sign(&new_key, data(7));
    assert_eq!(tx.body.nonce, 2);
    l.submit(tx).unwrap();
    // The old key is retired for the pool.
    let old = l.sign(&c.patient, data(8));
    assert!(matches!(
        l.submit(old).unwrap_err(),
        Refusal::State(StateError::KeyRetired { .. })
    ));
    let p = l.produce_block().unwrap();
    assert_eq!(p.report.txs.len(), 3);
    assert_eq!(
        l.chain().state().next_nonce(&c.patient.account()),
        3,
        "all three applied"
    );
}
