//! Access-control benchmarks.
//!
//! * `decide` at 1k and 1M patients (each with an accepted relationship, a record and a grant
//!   to a viewer), next to a bare `HashMap` lookup of a (viewer, pointer) key over as many
//!   entries, in the same run. The states are built through the state API (operations applied
//!   without signatures or blocks), not by mining.
//! * Building a block of 1,000 access transactions (signature checks, execution, state root):
//!   1,000 grants, and 1,000 access receipts.
//!
//! Set `ACCESS_BENCH_BIG` to change the large size (default 1,000,000).

#[path = "../tests/support/pow.rs"]
mod pow_setup;
use pow_setup::engine;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use medledger::access::AccessRequest;
use medledger::access::{
    AccessOp, Action, ActionSet, Basis, GrantId, GrantTerms, Identity, Period, PointerId,
    PurposeSet, RelationshipId, Role, Scope, Viewer,
};
use medledger::chain::ManualClock;
use medledger::hash::AccountId;
use medledger::pow::ProofOfWork;
use medledger::purpose::PurposeOfUse;
use medledger::tx::Keypair;
use medledger::{Chain, ChainBuilder};
use medledger::{Payload, Transaction};

#[path = "support/access_state.rs"]
mod access_state;

use access_state::{build_state, lab_record_op, name, shuffled, DAY, T0};

fn bench_decide(c: &mut Criterion, label: &str, n: u64) {
    let started = Instant::now();
    let (state, triples) = build_state(n);
    eprintln!("built a state of {n} patients in {:.1?}", started.elapsed());
    let access = state.access();
    let order = shuffled(triples.len());
    let at = T0 + DAY;
    let (v, p, ptr) = triples[0];
    assert!(access
        .decide(&AccessRequest::new(
            v,
            p,
            ptr,
            Action::Read,
            PurposeOfUse::Treatment,
            at
        ))
        .is_permit());

    // The baseline: a precomputed permission table over a comparable key.
    let table: HashMap<(AccountId, PointerId), u8> =
        triples.iter().map(|&(v, _, ptr)| ((v, ptr), 1)).collect();

    let mut g = c.benchmark_group(format!("decide/{label}"));
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    let mut i = 0;
    g.bench_function("decide", |b| {
        b.iter(|| {
            let (v, p, ptr) = triples[order[i % order.len()]];
            i += 1;
            black_box(access.decide(&AccessRequest::new(
                v,
                p,
                ptr,
                Action::Read,
                PurposeOfUse::Treatment,
                at,
            )))
        })
    });
    let mut i = 0;
    g.bench_function("hashmap_lookup", |b| {
        b.iter(|| {
            let (v, _, ptr) = triples[order[i % order.len()]];
            i += 1;
            black_box(table.get(&(v, ptr)))
        })
    });
    g.finish();
}

fn decide_small(c: &mut Criterion) {
    bench_decide(c, "1k_patients", 1_000);
}

fn decide_large(c: &mut Criterion) {
    let n = std::env::var("ACCESS_BENCH_BIG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    bench_decide(c, "1M_patients", n);
}

// ---------------------------------------------------------------------------------------------
// A block of 1,000 access transactions

const BLOCK: usize = 1_000;

struct Net {
    chain: Chain<ProofOfWork>,
    clock: Arc<ManualClock>,
    now: u64,
}

impl Net {
    fn sign(&self, key: &Keypair, nonce: u64, op: AccessOp) -> Transaction {
        Transaction::sign(key, self.chain.chain_id(), nonce, Payload::Access(op))
    }

    fn mine(&mut self, txs: Vec<Transaction>) {
        self.now += 600;
        self.clock.set(self.now);
        let n = txs.len();
        let block = self.chain.mine(txs, self.now).unwrap();
        assert_eq!(block.txs.len(), n);
        self.chain.append(block).unwrap();
    }
}

fn bench_block(c: &mut Criterion) {
    let authority = Keypair::from_seed(&[1; 32]);
    let provider = Keypair::from_seed(&[2; 32]);
    let viewer = Keypair::from_seed(&[3; 32]);
    let patients: Vec<Keypair> = (0..BLOCK as u64)
        .map(|i| {
            let mut seed = [9u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            Keypair::from_seed(&seed)
        })
        .collect();
    let clock = Arc::new(ManualClock::new(T0));
    let chain = ChainBuilder::new("access-bench", engine())
        .genesis_time(T0)
        .clock(clock.clone())
        .authority("Authority", authority.public())
        .build()
        .unwrap();
    let mut net = Net {
        chain,
        clock,
        now: T0,
    };
    let mut txs = vec![
        net.sign(
            &authority,
            0,
            AccessOp::CertifyProvider {
                provider: provider.account(),
                emergency: false,
            },
        ),
        net.sign(
            &provider,
            0,
            AccessOp::Register {
                role: Role::Provider,
                identity: Identity::Organisation(name("Hospital".into())),
                blinded: None,
            },
        ),
        net.sign(
            &viewer,
            0,
            AccessOp::Register {
                role: Role::Researcher,
                identity: Identity::Organisation(name("Viewer".into())),
                blinded: None,
            },
        ),
    ];
    for (i, p) in patients.iter().enumerate() {
        let register = AccessOp::register_patient(p.account(), &format!("patient {i}"), &[1; 32]);
        txs.push(net.sign(p, 0, register));
    }
    net.mine(txs);
    let mut txs = Vec::new();
    let mut pointers = Vec::new();
    for (i, p) in patients.iter().enumerate() {
        let rel = RelationshipId::of(p.account(), provider.account());
        txs.push(net.sign(
            &provider,
            1 + 2 * i as u64,
            AccessOp::CreateRelationship {
                patient: p.account(),
            },
        ));
        let add = net.sign(&provider, 2 + 2 * i as u64, lab_record_op(rel, i as u64));
        pointers.push(PointerId::of_tx(add.id()));
        txs.push(add);
    }
    net.mine(txs);
    let accept: Vec<Transaction> = patients
        .iter()
        .map(|p| {
            let rel = RelationshipId::of(p.account(), provider.account());
            net.sign(p, 1, AccessOp::AcceptRelationship { relationship: rel })
        })
        .collect();
    net.mine(accept);
    let grant = |net: &Net, p: &Keypair, nonce| {
        let rel = RelationshipId::of(p.account(), provider.account());
        net.sign(
            p,
            nonce,
            AccessOp::Grant {
                terms: GrantTerms::new(
                    rel,
                    Viewer::Account(viewer.account()),
                    Scope::All,
                    ActionSet::of(&[Action::Read]),
                    PurposeSet::of(&[PurposeOfUse::Treatment]),
                    Period::lasting(T0, 365 * DAY),
                ),
                under: None,
            },
        )
    };
    let grants: Vec<Transaction> = patients.iter().map(|p| grant(&net, p, 2)).collect();
    let grant_ids: Vec<GrantId> = grants.iter().map(|t| GrantId::of_tx(t.id())).collect();
    net.mine(grants);
    // Measured: a block of 1,000 new grants, and a block of 1,000 access receipts.
    let more_grants: Vec<Transaction> = patients.iter().map(|p| grant(&net, p, 3)).collect();
    let receipts: Vec<Transaction> = patients
        .iter()
        .zip(&pointers)
        .zip(&grant_ids)
        .enumerate()
        .map(|(i, ((p, ptr), g))| {
            net.sign(
                &viewer,
                1 + i as u64,
                AccessOp::RecordAccess {
                    patient: p.account(),
                    pointer: *ptr,
                    action: Action::Read,
                    purpose: PurposeOfUse::Treatment,
                    basis: Basis::Grant(*g),
                },
            )
        })
        .collect();
    let time = net.now + 600;
    net.clock.set(time);
    for txs in [&more_grants, &receipts] {
        let t = net.chain.build_template(txs.clone(), time).unwrap();
        assert!(t.rejected.is_empty(), "{:?}", t.rejected.first());
    }
    let mut g = c.benchmark_group("block_of_1000_access_txs");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("grants", |b| {
        b.iter(|| black_box(net.chain.build_template(more_grants.clone(), time).unwrap()))
    });
    g.bench_function("receipts", |b| {
        b.iter(|| black_box(net.chain.build_template(receipts.clone(), time).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, decide_small, decide_large, bench_block);
criterion_main!(benches);
