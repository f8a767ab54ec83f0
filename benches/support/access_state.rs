//! A synthetic access-control state of `n` patients, built through the state API (operations
//! applied without signatures or blocks), shared by the access bench and the performance report.

use medledger::access::{
    AccessOp, Action, ActionSet, Category, GrantTerms, Identity, Name, Period, PointerId,
    PurposeSet, RecordPointer, RelationshipId, Role, Scope, Viewer,
};
use medledger::hash::{AccountId, Digest, TxId};
use medledger::purpose::PurposeOfUse;
use medledger::tx::PublicKey;
use medledger::State;

pub const T0: u64 = 1_767_225_600;
pub const DAY: u64 = 86_400;
pub const PROVIDERS: u64 = 100;
const VIEWERS: u64 = 1_000;

/// A synthetic key: signatures are not checked when building states directly.
pub fn pk(kind: u8, i: u64) -> PublicKey {
    let mut b = [0u8; 32];
    b[0] = kind;
    b[1..9].copy_from_slice(&i.to_le_bytes());
    PublicKey::from_bytes(b)
}

pub fn name(s: String) -> Name {
    Name::try_from(s).expect("short name")
}

/// The provider adds patient `i`'s laboratory record to relationship `rel`.
pub fn lab_record_op(rel: RelationshipId, i: u64) -> AccessOp {
    AccessOp::AddPointer {
        relationship: rel,
        record: RecordPointer {
            query: format!("SELECT * FROM labs WHERE id = {i}")
                .try_into()
                .unwrap(),
            content_hash: Digest::from_bytes([7; 32]),
            category: Category::Laboratory,
            data_period: Period::new(T0 - DAY, T0).unwrap(),
        },
        replaces: None,
    }
}

/// A state with `n` patients, each with an accepted relationship to one of the providers, one
/// record, and a grant to one of the viewers; returns it with the (viewer, patient, pointer)
/// triples.
pub fn build_state(n: u64) -> (State, Vec<(AccountId, AccountId, PointerId)>) {
    build_state_with(n, |_| {})
}

/// [`build_state`], with `setup` run on the genesis state first (to move it to disk, say).
#[allow(dead_code)]
pub fn build_state_with(
    n: u64,
    setup: impl FnOnce(&mut State),
) -> (State, Vec<(AccountId, AccountId, PointerId)>) {
    let authority = pk(0, 0);
    let mut state = medledger::access::bench_genesis(&[("Authority".into(), authority)], T0)
        .expect("a valid authority");
    setup(&mut state);
    let mut tx_counter = 0u64;
    let mut next_tx = || {
        tx_counter += 1;
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&tx_counter.to_le_bytes());
        TxId::from_bytes(b)
    };
    let (h, t) = (1, T0 + 60);
    let apply = |state: &mut State, signer: PublicKey, op: AccessOp, tx: TxId| {
        state
            .bench_apply_access(signer, &op, h, t, tx)
            .expect("setup operation applies");
    };
    for p in 0..PROVIDERS {
        let provider = pk(1, p);
        let op = AccessOp::CertifyProvider {
            provider: provider.account(),
            emergency: false,
        };
        apply(&mut state, authority, op, next_tx());
        let op = AccessOp::Register {
            role: Role::Provider,
            identity: Identity::Organisation(name(format!("provider {p}"))),
            blinded: None,
        };
        apply(&mut state, provider, op, next_tx());
    }
    for v in 0..VIEWERS {
        let op = AccessOp::Register {
            role: Role::Researcher,
            identity: Identity::Organisation(name(format!("viewer {v}"))),
            blinded: None,
        };
        apply(&mut state, pk(2, v), op, next_tx());
    }
    state.bench_commit_untracked();
    let mut triples = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (patient, provider, viewer) = (pk(3, i), pk(1, i % PROVIDERS), pk(2, i % VIEWERS));
        let rel = RelationshipId::of(patient.account(), provider.account());
        let register =
            AccessOp::register_patient(patient.account(), &format!("patient {i}"), &[1; 32]);
        apply(&mut state, patient, register, next_tx());
        let create = AccessOp::CreateRelationship {
            patient: patient.account(),
        };
        apply(&mut state, provider, create, next_tx());
        let tx = next_tx();
        let add = lab_record_op(rel, i);
        apply(&mut state, provider, add, tx);
        let pointer = PointerId::of_tx(tx);
        apply(
            &mut state,
            patient,
            AccessOp::AcceptRelationship { relationship: rel },
            next_tx(),
        );
        let grant = AccessOp::Grant {
            terms: GrantTerms::new(
                rel,
                Viewer::Account(viewer.account()),
                Scope::All,
                ActionSet::of(&[Action::Read]),
                PurposeSet::of(&[PurposeOfUse::Treatment]),
                Period::lasting(T0, 365 * DAY),
            ),
            under: None,
        };
        apply(&mut state, patient, grant, next_tx());
        triples.push((viewer.account(), patient.account(), pointer));
        if i % 10_000 == 9_999 {
            state.bench_commit_untracked();
        }
    }
    state.bench_commit_untracked();
    (state, triples)
}

/// A deterministic shuffle of `0..n`, so lookups do not walk memory in insertion order.
pub fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}
