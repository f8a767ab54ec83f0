//! Access control: operations (carried by transactions) executed on a chain where a provider, a
//! doctor and a patient are set up with a relationship, a record pointer and a grant; and grant
//! proofs checked against that chain's state root.

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use medledger::access::AccessRequest;
use medledger::access::{
    AccessOp, Action, ActionSet, Category, GrantId, GrantProof, GrantTerms, Identity, Period,
    PointerId, PurposeSet, RecordPointer, RelationshipId, Role, Scope, Viewer,
};
use medledger::hash::StateRoot;
use medledger::pow::{PowSeal, ProofOfWork};
use medledger::purpose::PurposeOfUse;
use medledger::tx::Keypair;
use medledger::Block;
use medledger::{Chain, ChainBuilder};
use medledger::{Payload, Transaction};

use super::decoders::round_trip;

/// Genesis time of the access chain.
pub const T0: u64 = 1_767_225_600;
/// Time of the setup block.
pub const SETUP_TIME: u64 = T0 + 600;
/// Time of the block holding the fuzzed operation.
pub const OP_TIME: u64 = T0 + 1_200;

/// The cast: authority, hospital, doctor, patient.
pub fn keys() -> [Keypair; 4] {
    [1u8, 2, 3, 4].map(|i| Keypair::from_seed(&[0x40 + i; 32]))
}

/// The setup's operations, signed: certification, registrations, a relationship, a pointer and
/// a grant to the doctor.
pub fn setup_txs(chain: &Chain<ProofOfWork>) -> (Vec<Transaction>, PointerId, GrantId) {
    let [authority, hospital, doctor, patient] = keys();
    let id = chain.chain_id();
    let tx = |k: &Keypair, nonce, op| Transaction::sign(k, id, nonce, Payload::Access(op));
    let org = |s: &str| Identity::Organisation(s.try_into().expect("short name"));
    let rel = RelationshipId::of(patient.account(), hospital.account());
    let record = RecordPointer {
        query: "SELECT * FROM labs WHERE id = 1"
            .try_into()
            .expect("short query"),
        content_hash: medledger::hash::content_hash(b"the lab result"),
        category: Category::Laboratory,
        data_period: Period::new(T0 - 86_400, T0).expect("valid period"),
    };
    let add = tx(
        &hospital,
        2,
        AccessOp::AddPointer {
            relationship: rel,
            record,
            replaces: None,
        },
    );
    let pointer = PointerId::of_tx(add.id());
    let terms = GrantTerms::new(
        rel,
        Viewer::Account(doctor.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[PurposeOfUse::Treatment]),
        Period::lasting(T0, 30 * 86_400),
    );
    let grant = tx(&patient, 2, AccessOp::Grant { terms, under: None });
    let grant_id = GrantId::of_tx(grant.id());
    let txs = vec![
        tx(
            &authority,
            0,
            AccessOp::CertifyProvider {
                provider: hospital.account(),
                emergency: true,
            },
        ),
        tx(
            &hospital,
            0,
            AccessOp::Register {
                role: Role::Provider,
                identity: org("St Mary's"),
                blinded: None,
            },
        ),
        tx(
            &doctor,
            0,
            AccessOp::Register {
                role: Role::Provider,
                identity: org("Dr Lee"),
                blinded: None,
            },
        ),
        tx(
            &patient,
            0,
            AccessOp::register_patient(patient.account(), "NHS-1", &[7; 32]),
        ),
        tx(
            &hospital,
            1,
            AccessOp::CreateRelationship {
                patient: patient.account(),
            },
        ),
        add,
        tx(
            &patient,
            1,
            AccessOp::AcceptRelationship { relationship: rel },
        ),
        grant,
    ];
    (txs, pointer, grant_id)
}

/// A chain at genesis with the authority configured.
pub fn genesis() -> Chain<ProofOfWork> {
    ChainBuilder::new("access fuzz", ProofOfWork::regtest())
        .genesis_time(T0)
        .authority("Health Authority", keys()[0].public())
        .build()
        .expect("the chain opens")
}

/// The setup chain: genesis and the setup block.
pub fn setup() -> (Chain<ProofOfWork>, PointerId, GrantId) {
    let mut chain = genesis();
    let (txs, pointer, grant) = setup_txs(&chain);
    let block = chain.mine(txs, SETUP_TIME).expect("setup mines");
    assert_eq!(block.txs.len(), 8, "every setup operation applies");
    chain.append(block).expect("setup appends");
    (chain, pointer, grant)
}

/// A transaction's access operation, re-signed by one of the cast (picked by its nonce) with
/// that actor's next nonce, is executed on the setup chain: building a block either includes it
/// (and the mined block is accepted, and replaying gives the same state) or leaves it out (and
/// a block forcing it in is refused); either way the chain stays consistent.
pub fn access_op(data: &[u8]) {
    let Some(tx) = round_trip::<Transaction>(data) else {
        return;
    };
    let Payload::Access(op) = tx.body.payload else {
        return;
    };
    let (mut chain, pointer, _) = setup();
    let cast = keys();
    let key = &cast[(tx.body.nonce % 4) as usize];
    let nonce = chain
        .state()
        .next_nonce(&chain.state().account_of_key(&key.public()));
    let signed = Transaction::sign(key, chain.chain_id(), nonce, Payload::Access(op));
    let before = (chain.tip(), chain.height(), chain.state().root());
    let template = chain
        .build_template(vec![signed.clone()], OP_TIME)
        .expect("a well-signed transaction");
    assert_eq!(
        (chain.tip(), chain.height(), chain.state().root()),
        before,
        "a template changed the chain"
    );
    if template.txs.is_empty() {
        assert_eq!(template.rejected.len(), 1);
        // A block that forces it in is refused, and changes nothing.
        let mut forced = chain.mine(vec![], OP_TIME).expect("an empty block mines");
        forced.header.tx_root = medledger::merkle::merkle_root(&[signed.id()]);
        forced.header.tx_count = 1;
        forced.txs = vec![signed].try_into().expect("one transaction");
        let never = AtomicBool::new(false);
        forced.header.seal = chain
            .engine()
            .solve(forced.header.clone(), &never)
            .expect("solvable");
        assert!(
            chain.append(forced).is_err(),
            "a refused operation was accepted in a block"
        );
        assert_eq!((chain.tip(), chain.height(), chain.state().root()), before);
    } else {
        let block: Block<PowSeal> = chain.mine(template.txs, OP_TIME).expect("mines");
        chain
            .append(block)
            .expect("a block built from a template is accepted");
        assert_eq!(
            chain.replay_state().expect("replays").root(),
            chain.state().root(),
            "replay disagrees after the operation"
        );
    }
    let [_, hospital, doctor, patient] = keys();
    for viewer in [&doctor, &hospital] {
        let _ = chain.decide(&AccessRequest::new(
            viewer.account(),
            patient.account(),
            pointer,
            Action::Read,
            PurposeOfUse::Treatment,
            OP_TIME + 1,
        ));
    }
}

/// The setup chain's state root and the grant it holds, computed once.
fn setup_root() -> &'static (StateRoot, GrantId) {
    static ROOT: OnceLock<(StateRoot, GrantId)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let (chain, _, grant) = setup();
        (chain.state().root(), grant)
    })
}

/// Grant proofs: round trip; verification against the setup chain's root never panics (so a
/// proof from that chain is checked in full), nor against any other root or grant.
pub fn grant_proof(data: &[u8]) {
    let Some(p) = round_trip::<GrantProof>(data) else {
        return;
    };
    assert_eq!(GrantProof::decode(data).as_ref(), Ok(&p));
    let (root, grant) = setup_root();
    for at in [T0, OP_TIME, u64::MAX] {
        let _ = p.verify(root, grant, at);
        let _ = p.verify(root, &p.grant.id, at);
        let _ = p.verify(&StateRoot::default(), &p.grant.id, at);
    }
}
