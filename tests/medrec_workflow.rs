//! The MedRec workflow (the seed's figure 3) as an integration test, through real signed
//! transactions in mined blocks: certification, registration, a pending relationship, the
//! patient's notification and acceptance, a grant, permitted and denied reads with receipts,
//! expiry, revocation, break-glass, review, the audit trail, "as of" queries, a light-client
//! proof, replay and reorganisation.

mod common;

use common::*;
use medledger::access::AccessRequest;
use medledger::access::{
    AccessEvent, AccessOp, Action, ActionSet, Basis, BreakGlassId, Category, CategorySet, Decision,
    DenyReason, GrantId, GrantProof, GrantStatus, GrantTerms, Identity, IdentityCommitment, Period,
    PointerId, Provision, ProvisionKind, PurposeSet, RelationshipStatus, ReviewOutcome, Role,
    Scope, Viewer,
};
use medledger::purpose::PurposeOfUse::{self, EmergencyTreatment, Research, Treatment};
use medledger::tx::Keypair;
use medledger::{ChainBuilder, ChainError};

struct Cast {
    authority: Keypair,
    hospital: Keypair,
    er: Keypair,
    patient: Keypair,
    specialist: Keypair,
    researcher: Keypair,
}

fn cast() -> Cast {
    Cast {
        authority: Keypair::from_seed(&[1; 32]),
        hospital: Keypair::from_seed(&[2; 32]),
        er: Keypair::from_seed(&[3; 32]),
        patient: Keypair::from_seed(&[4; 32]),
        specialist: Keypair::from_seed(&[5; 32]),
        researcher: Keypair::from_seed(&[6; 32]),
    }
}

/// Steps 1–4: certification, registration, a record and a pending relationship.
fn setup(c: &Cast) -> (Net, PointerId, PointerId) {
    let mut net = Net::new(&[("Regional Health Authority", &c.authority)]);
    let certify = |p: &Keypair, emergency| AccessOp::CertifyProvider {
        provider: p.account(),
        emergency,
    };
    net.run(vec![
        (&c.authority, certify(&c.hospital, false)),
        (&c.authority, certify(&c.er, true)),
        (
            &c.hospital,
            register_op(&c.hospital, Role::Provider, "St Mary's Hospital"),
        ),
        (&c.er, register_op(&c.er, Role::Provider, "City ER")),
        (
            &c.specialist,
            register_op(&c.specialist, Role::Provider, "Dr Okafor"),
        ),
        (
            &c.researcher,
            register_op(&c.researcher, Role::Researcher, "Heart Study"),
        ),
        (
            &c.patient,
            register_op(&c.patient, Role::Patient, "NHS-943-476-5919"),
        ),
    ]);
    let rel = relationship(&c.patient, &c.hospital);
    let ops = vec![
        (
            &c.hospital,
            AccessOp::CreateRelationship {
                patient: c.patient.account(),
            },
        ),
        (
            &c.hospital,
            AccessOp::AddPointer {
                relationship: rel,
                record: record(1, Category::Imaging),
                replaces: None,
            },
        ),
        (
            &c.hospital,
            AccessOp::AddPointer {
                relationship: rel,
                record: record(2, Category::MentalHealth),
                replaces: None,
            },
        ),
    ];
    let txs = net.sign_all(ops);
    let (ecg, notes) = (pointer_of(&txs, 1), pointer_of(&txs, 2));
    let events = net.mine(DAY, txs);
    assert!(matches!(
        events[0],
        AccessEvent::RelationshipProposed { patient, .. } if patient == c.patient.account()
    ));
    (net, ecg, notes)
}

fn read(
    net: &Net,
    viewer: &Keypair,
    patient: &Keypair,
    p: PointerId,
    purpose: PurposeOfUse,
) -> Decision {
    net.chain.decide(&AccessRequest::new(
        viewer.account(),
        patient.account(),
        p,
        Action::Read,
        purpose,
        net.now + 1,
    ))
}

fn receipt(patient: &Keypair, pointer: PointerId, purpose: PurposeOfUse, basis: Basis) -> AccessOp {
    AccessOp::RecordAccess {
        patient: patient.account(),
        pointer,
        action: Action::Read,
        purpose,
        basis,
    }
}

#[test]
fn the_whole_medrec_workflow() {
    let c = cast();
    let (mut net, ecg, notes) = setup(&c);
    let rel = relationship(&c.patient, &c.hospital);
    let genesis = net.chain.header_at(0).unwrap().clone();
    assert_ne!(
        genesis.state_root,
        medledger::smt::EMPTY_ROOT,
        "genesis commits to the authority"
    );

    // The identity commitment maps both ways; the clear identity is nowhere on chain.
    let commitment = IdentityCommitment::new("NHS-943-476-5919", &[7; 32], c.patient.account());
    let access = net.chain.access();
    assert_eq!(
        access.account_by_identity(&Identity::Commitment(commitment)),
        Some(c.patient.account())
    );

    // 5. The patient is notified.
    let pending = access.pending_for(&c.patient.account());
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].relationship, rel);
    assert_eq!(pending[0].status, RelationshipStatus::Pending);
    assert_eq!(pending[0].pointers, 2);
    // Not readable by anyone but the parties while pending.
    assert!(matches!(
        read(&net, &c.specialist, &c.patient, ecg, Treatment),
        Decision::Deny(DenyReason::RelationshipNotActive {
            status: RelationshipStatus::Pending,
            ..
        })
    ));

    // 6. The patient accepts and grants the specialist 30 days of treatment reads, except
    // mental health.
    let terms = GrantTerms::new(
        rel,
        Viewer::Account(c.specialist.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[Treatment]),
        Period::lasting(net.now, 30 * DAY),
    )
    .with_provision(
        Provision::new(ProvisionKind::Deny)
            .with_categories(CategorySet::of(&[Category::MentalHealth])),
    );
    let txs = net.sign_all(vec![
        (
            &c.patient,
            AccessOp::AcceptRelationship { relationship: rel },
        ),
        (&c.patient, AccessOp::Grant { terms, under: None }),
    ]);
    let grant = GrantId::of_tx(txs[1].id());
    net.mine(3600, txs);
    let granted_at = net.chain.height();
    assert!(net
        .chain
        .access()
        .pending_for(&c.patient.account())
        .is_empty());

    // 7. The specialist reads: permitted, and the receipt goes on chain.
    assert_eq!(
        read(&net, &c.specialist, &c.patient, ecg, Treatment),
        Decision::Permit(Basis::Grant(grant))
    );
    assert_eq!(
        read(&net, &c.specialist, &c.patient, notes, Treatment),
        Decision::Deny(DenyReason::DeniedByProvision {
            grant,
            provision: 0
        })
    );
    let events = net.run(vec![(
        &c.specialist,
        receipt(&c.patient, ecg, Treatment, Basis::Grant(grant)),
    )]);
    assert!(
        matches!(events[..], [AccessEvent::Accessed { viewer, .. }] if viewer == c.specialist.account())
    );
    let receipts = net.chain.access().access_receipts(&c.patient.account());
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].at.height, net.chain.height());

    // 8. A researcher is denied, and cannot leave a receipt.
    assert_eq!(
        read(&net, &c.researcher, &c.patient, ecg, Research),
        Decision::Deny(DenyReason::NoGrant)
    );
    net.refuse(
        &c.researcher,
        receipt(&c.patient, ecg, Research, Basis::Grant(grant)),
    );

    // 9. A research grant, revoked: the next read is denied, the revocation recorded.
    let research = GrantTerms::new(
        rel,
        Viewer::Account(c.researcher.account()),
        Scope::categories(CategorySet::of(&[Category::Imaging])),
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[Research]),
        Period::lasting(net.now, 90 * DAY),
    );
    let tx = net.sign(
        &c.patient,
        AccessOp::Grant {
            terms: research,
            under: None,
        },
    );
    let research_grant = GrantId::of_tx(tx.id());
    net.mine(DAY, vec![tx]);
    assert!(read(&net, &c.researcher, &c.patient, ecg, Research).is_permit());
    let root = net.chain.state().root();
    let losses = net
        .chain
        .access()
        .revocation_impact(&research_grant, net.now);
    assert_eq!(losses.len(), 1);
    assert_eq!(
        net.chain.state().root(),
        root,
        "the dry run changes nothing"
    );
    net.run(vec![(
        &c.patient,
        AccessOp::RevokeGrant {
            grant: research_grant,
            reason: "withdrawn from the study".try_into().unwrap(),
        },
    )]);
    let revoked_at = net.chain.height();
    assert!(matches!(
        read(&net, &c.researcher, &c.patient, ecg, Research),
        Decision::Deny(DenyReason::Revoked { height, .. }) if height == revoked_at
    ));
    let r = net.chain.access().revocation(&research_grant).unwrap();
    assert_eq!(r.by, c.patient.account());
    assert_eq!(r.reason.as_str(), "withdrawn from the study");

    // 10. The specialist's grant expires by itself (block time).
    net.run_after(30 * DAY, vec![]);
    assert!(matches!(
        read(&net, &c.specialist, &c.patient, ecg, Treatment),
        Decision::Deny(DenyReason::Expired { .. })
    ));
    net.refuse(
        &c.specialist,
        receipt(&c.patient, ecg, Treatment, Basis::Grant(grant)),
    );

    // 11. Break-glass by the emergency room: time-boxed, for emergency reads only.
    let tx = net.sign(
        &c.er,
        AccessOp::OpenBreakGlass {
            patient: c.patient.account(),
            reason: "unconscious on arrival".try_into().unwrap(),
            duration_secs: 4 * 3600,
        },
    );
    let session = BreakGlassId::of_tx(tx.id());
    net.mine(DAY, vec![tx]);
    assert_eq!(
        read(&net, &c.er, &c.patient, notes, EmergencyTreatment),
        Decision::Permit(Basis::BreakGlass(session))
    );
    assert!(!read(&net, &c.er, &c.patient, notes, Treatment).is_permit());
    net.run(vec![(
        &c.er,
        receipt(
            &c.patient,
            notes,
            EmergencyTreatment,
            Basis::BreakGlass(session),
        ),
    )]);
    net.run_after(5 * 3600, vec![]);
    assert_eq!(
        read(&net, &c.er, &c.patient, notes, EmergencyTreatment),
        Decision::Deny(DenyReason::BreakGlassNotOpen { session })
    );
    net.refuse(
        &c.er,
        receipt(
            &c.patient,
            notes,
            EmergencyTreatment,
            Basis::BreakGlass(session),
        ),
    );

    // 12. The patient reviews the session and the audit trail.
    let queue = net.chain.access().review_queue(&c.patient.account());
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].id, session);
    net.run(vec![(
        &c.patient,
        AccessOp::ReviewBreakGlass {
            session,
            outcome: ReviewOutcome::Acknowledged,
            note: None,
        },
    )]);
    assert!(net
        .chain
        .access()
        .review_queue(&c.patient.account())
        .is_empty());
    let trail = net.chain.access().audit_trail(&c.patient.account());
    let readers: Vec<_> = trail
        .iter()
        .filter_map(|e| match e.event {
            AccessEvent::Accessed { viewer, basis, .. } => Some((viewer, basis)),
            _ => None,
        })
        .collect();
    assert_eq!(
        readers,
        vec![
            (c.specialist.account(), Basis::Grant(grant)),
            (c.er.account(), Basis::BreakGlass(session))
        ]
    );
    assert!(trail
        .windows(2)
        .all(|w| w[0].seq + 1 == w[1].seq && w[0].at <= w[1].at));

    // 13. "As of" queries: the specialist could read at the grant's height, not now.
    assert_eq!(
        net.chain.decide_as_of(
            &AccessRequest::new(
                c.specialist.account(),
                c.patient.account(),
                ecg,
                Action::Read,
                Treatment,
                net.chain.time_at(granted_at).unwrap()
            ),
            granted_at
        ),
        Some(Decision::Permit(Basis::Grant(grant)))
    );
    assert_eq!(
        net.chain.decide_as_of(
            &AccessRequest::new(
                c.specialist.account(),
                c.patient.account(),
                ecg,
                Action::Read,
                Treatment,
                net.chain.time_at(granted_at - 1).unwrap()
            ),
            granted_at - 1
        ),
        Some(Decision::Deny(DenyReason::RelationshipNotActive {
            relationship: rel,
            status: RelationshipStatus::Pending
        }))
    );
    let then: Vec<_> = net
        .chain
        .who_could_read_as_of(&ecg, granted_at)
        .unwrap()
        .into_iter()
        .map(|r| r.viewer)
        .collect();
    assert!(then.contains(&c.specialist.account()));
    let now: Vec<_> = net
        .chain
        .who_can_read(&ecg, net.now)
        .into_iter()
        .map(|r| r.viewer)
        .collect();
    assert!(!now.contains(&c.specialist.account()));

    // 14. A light-client proof of the grant, checked against headers alone.
    let header = net.chain.header_at(granted_at).unwrap();
    let bytes = net.chain.prove_grant(&grant, granted_at).unwrap().encode();
    let proof = GrantProof::decode(&bytes).unwrap();
    assert_eq!(
        proof.verify(&header.state_root, &grant, header.timestamp),
        Ok(GrantStatus::Active)
    );
    let tip = net.chain.tip_header();
    let at_tip = net.chain.prove_grant(&grant, net.chain.height()).unwrap();
    assert_eq!(
        at_tip.verify(&tip.state_root, &grant, tip.timestamp),
        Ok(GrantStatus::Expired)
    );
    assert!(proof
        .verify(&tip.state_root, &grant, tip.timestamp)
        .is_err());
    let revoked = net
        .chain
        .prove_grant(&research_grant, net.chain.height())
        .unwrap();
    assert!(matches!(
        revoked.verify(&tip.state_root, &research_grant, tip.timestamp),
        Ok(GrantStatus::Revoked(at)) if at.height == revoked_at
    ));
    assert!(
        net.chain.prove_grant(&research_grant, granted_at).is_none(),
        "not made yet"
    );

    // 15. Replay from genesis gives the same state.
    assert_eq!(
        net.chain.replay_state().unwrap().root(),
        net.chain.state().root()
    );
}

#[test]
fn genesis_authorities_are_validated_and_committed() {
    let a = Keypair::from_seed(&[1; 32]);
    let b = Keypair::from_seed(&[2; 32]);
    let plain = ChainBuilder::new("g", engine())
        .genesis_time(T0)
        .build()
        .unwrap();
    let with = ChainBuilder::new("g", engine())
        .genesis_time(T0)
        .authority("A", a.public())
        .build()
        .unwrap();
    assert_ne!(plain.genesis_hash(), with.genesis_hash());
    assert_eq!(with.tip_header().state_root, with.state().root());
    assert_eq!(
        with.access().account(&a.account()).unwrap().role,
        Role::Authority
    );
    // Reopening the store with other authorities is another chain.
    let store = with.into_store();
    assert!(matches!(
        ChainBuilder::new("g", engine())
            .genesis_time(T0)
            .authority("A", b.public())
            .boxed_store(store)
            .build(),
        Err(ChainError::GenesisMismatch { .. })
    ));
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let bad = [
        ChainBuilder::new("g", engine())
            .authority("", a.public())
            .build(),
        ChainBuilder::new("g", engine())
            .authority("A", medledger::tx::PublicKey::from_bytes(weak))
            .build(),
        ChainBuilder::new("g", engine())
            .authority("A", a.public())
            .authority("A", b.public())
            .build(),
        ChainBuilder::new("g", engine())
            .authority("x".repeat(200), a.public())
            .build(),
    ];
    for r in bad {
        assert!(matches!(r, Err(ChainError::Config(_))));
    }
}

#[test]
fn reopening_a_store_replays_the_access_state() {
    let c = cast();
    let (net, ecg, _) = setup(&c);
    let before = net.snapshot();
    let store = net.chain.into_store();
    let reopened = ChainBuilder::new("access-tests", engine())
        .genesis_time(T0)
        .clock(net.clock.clone())
        .authority("Regional Health Authority", c.authority.public())
        .boxed_store(store)
        .build()
        .unwrap();
    assert_eq!(
        (reopened.tip(), reopened.height(), reopened.state().root()),
        before
    );
    assert!(reopened.access().pointer(&ecg).is_some());
}

#[test]
fn a_reorganisation_undoes_access_changes() {
    let c = cast();
    let (mut net, ecg, _) = setup(&c);
    let rel = relationship(&c.patient, &c.hospital);
    net.run(vec![(
        &c.patient,
        AccessOp::AcceptRelationship { relationship: rel },
    )]);
    let fork = net.snapshot();
    // Branch A (ours): the patient grants the specialist.
    let terms = GrantTerms::new(
        rel,
        Viewer::Account(c.specialist.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[Treatment]),
        Period::lasting(net.now, 30 * DAY),
    );
    // Branch B (elsewhere, heavier): two empty blocks from the fork point.
    let mut other = Net::new(&[("Regional Health Authority", &c.authority)]);
    other.clock.set(net.now);
    for h in 1..=net.chain.height() {
        let b = net
            .chain
            .block(&net.chain.hash_at(h).unwrap())
            .unwrap()
            .unwrap();
        other.chain.append(b).unwrap();
    }
    other.now = net.now;
    net.run(vec![(&c.patient, AccessOp::Grant { terms, under: None })]);
    assert!(read(&net, &c.specialist, &c.patient, ecg, Treatment).is_permit());
    let b1 = {
        other.run(vec![]);
        net.chain
            .append(other.chain.block(&other.chain.tip()).unwrap().unwrap())
            .unwrap()
    };
    assert!(b1.is_side_branch());
    other.run(vec![]);
    net.clock.set(other.now);
    let out = net
        .chain
        .append(other.chain.block(&other.chain.tip()).unwrap().unwrap())
        .unwrap();
    assert_eq!(out.reverted.len(), 1);
    assert_eq!(net.chain.state().root(), other.chain.state().root());
    assert_eq!(
        net.chain.state().root(),
        fork.2,
        "empty blocks: back to the fork point's state"
    );
    assert_eq!(
        read(&net, &c.specialist, &c.patient, ecg, Treatment),
        Decision::Deny(DenyReason::NoGrant)
    );
    assert!(net.chain.access().grants_of(&rel).is_empty());
    assert_eq!(
        net.chain.replay_state().unwrap().root(),
        net.chain.state().root()
    );
}
