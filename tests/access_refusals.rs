//! Every refusal of the access control, through real transactions: each is left out of a block
//! template and makes a block that includes it invalid, and afterwards the chain, the state
//! root and the relevant queries are exactly as before.
//!
//! The first tests try, one by one, what MedRec's public code got wrong: permission changes
//! that check no caller, a constructor that lets anyone become the patient, revocation that
//! deletes state with no record, time limits kept in a provider's private database, third-party
//! reads never enforced or logged.

mod common;

use common::*;
use std::sync::atomic::AtomicBool;

use medledger::access::AccessRequest;
use medledger::access::{
    AccessError, AccessEvent, AccessOp, Action, ActionSet, Basis, BreakGlassId, Category,
    CategorySet, DelegationId, DelegationTerms, DenyReason, GrantId, GrantTerms, GroupId, Identity,
    IdentityCommitment, Period, PointerId, Provision, ProvisionKind, PurposeSet, RelationshipId,
    Role, Scope, Viewer, MAX_BREAK_GLASS_SECS, MAX_GRANTS_PER_DELEGATION,
    MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP, MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER,
};
use medledger::hash::ChainId;
use medledger::pow::PowSeal;
use medledger::purpose::PurposeOfUse::{self, *};
use medledger::tx::{Keypair, PublicKey, TxError};
use medledger::ChainError;
use medledger::StateError;
use medledger::{Block, BlockTemplate};
use medledger::{Payload, Transaction};

struct World {
    net: Net,
    authority: Keypair,
    hospital: Keypair,
    er: Keypair,
    uncertified: Keypair,
    patient: Keypair,
    other_patient: Keypair,
    specialist: Keypair,
    researcher: Keypair,
    guardian: Keypair,
    stranger: Keypair,
    rel: RelationshipId,
    lab: PointerId,
    mh: PointerId,
    grant: GrantId,
    delegation: DelegationId,
    group: GroupId,
}

fn k(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

fn reason(s: &str) -> medledger::access::Reason {
    s.try_into().unwrap()
}

fn world() -> World {
    let (authority, hospital, er, uncertified) = (k(1), k(2), k(3), k(4));
    let (patient, other_patient, specialist, researcher, guardian) = (k(5), k(6), k(7), k(8), k(9));
    let mut net = Net::new(&[("Health Authority", &authority)]);
    net.run(vec![
        (
            &authority,
            AccessOp::CertifyProvider {
                provider: hospital.account(),
                emergency: false,
            },
        ),
        (
            &authority,
            AccessOp::CertifyProvider {
                provider: er.account(),
                emergency: true,
            },
        ),
        (
            &hospital,
            register_op(&hospital, Role::Provider, "Hospital"),
        ),
        (&er, register_op(&er, Role::Provider, "ER")),
        (
            &uncertified,
            register_op(&uncertified, Role::Provider, "Back-street Clinic"),
        ),
        (&patient, register_op(&patient, Role::Patient, "patient")),
        (
            &other_patient,
            register_op(&other_patient, Role::Patient, "other patient"),
        ),
        (
            &specialist,
            register_op(&specialist, Role::Provider, "Specialist"),
        ),
        (
            &researcher,
            register_op(&researcher, Role::Researcher, "Lab"),
        ),
        (&guardian, register_op(&guardian, Role::Patient, "guardian")),
    ]);
    let rel = relationship(&patient, &hospital);
    let txs = net.sign_all(vec![
        (
            &hospital,
            AccessOp::CreateRelationship {
                patient: patient.account(),
            },
        ),
        (
            &hospital,
            AccessOp::AddPointer {
                relationship: rel,
                record: record(1, Category::Laboratory),
                replaces: None,
            },
        ),
        (
            &hospital,
            AccessOp::AddPointer {
                relationship: rel,
                record: record(2, Category::MentalHealth),
                replaces: None,
            },
        ),
        (&patient, AccessOp::AcceptRelationship { relationship: rel }),
        (
            &patient,
            AccessOp::Grant {
                terms: GrantTerms::new(
                    rel,
                    Viewer::Account(specialist.account()),
                    Scope::All,
                    ActionSet::of(&[Action::Read]),
                    PurposeSet::of(&[Treatment]),
                    Period::lasting(T0, 30 * DAY),
                )
                .with_provision(
                    Provision::new(ProvisionKind::Deny)
                        .with_categories(CategorySet::of(&[Category::MentalHealth])),
                ),
                under: None,
            },
        ),
        (
            &patient,
            AccessOp::Delegate {
                delegate: guardian.account(),
                terms: DelegationTerms {
                    relationship: Some(rel),
                    scope: Scope::categories(CategorySet::of(&[Category::Laboratory])),
                    actions: ActionSet::of(&[Action::Read]),
                    purposes: PurposeSet::of(&[Treatment]),
                    period: Period::lasting(T0, 60 * DAY),
                },
            },
        ),
        (
            &patient,
            AccessOp::CreateGroup {
                label: "care team".try_into().unwrap(),
            },
        ),
    ]);
    let (lab, mh) = (pointer_of(&txs, 1), pointer_of(&txs, 2));
    let grant = GrantId::of_tx(txs[4].id());
    let delegation = DelegationId::of_tx(txs[5].id());
    let group = GroupId::of_tx(txs[6].id());
    net.mine(60, txs);
    World {
        net,
        authority,
        hospital,
        er,
        uncertified,
        patient,
        other_patient,
        specialist,
        researcher,
        guardian,
        stranger: k(10),
        rel,
        lab,
        mh,
        grant,
        delegation,
        group,
    }
}

impl World {
    /// Everything a refusal must leave as it was, as text.
    fn queries(&self) -> String {
        let a = self.net.chain.access();
        let p = self.patient.account();
        let mut out = String::new();
        for viewer in [
            &self.specialist,
            &self.researcher,
            &self.er,
            &self.guardian,
            &self.stranger,
        ] {
            for pointer in [self.lab, self.mh] {
                for (action, purpose) in [
                    (Action::Read, Treatment),
                    (Action::Disclose, Treatment),
                    (Action::Read, Research),
                    (Action::Read, EmergencyTreatment),
                ] {
                    let d = a.decide(&AccessRequest::new(
                        viewer.account(),
                        p,
                        pointer,
                        action,
                        purpose,
                        self.net.now + 1,
                    ));
                    out += &format!("{d:?}\n");
                }
            }
        }
        out += &format!("{:?}\n", a.summary(&p));
        out += &format!("{:?}\n", a.audit_trail(&p));
        out += &format!("{:?}\n", a.review_queue(&p));
        out += &format!("{:?}\n", a.grants_of(&self.rel));
        out += &format!("{:?}\n", a.grants_under(&self.delegation));
        out += &format!("{:?}\n", a.who_can_read(&self.lab, self.net.now + 1));
        out += &format!("{:?}\n", a.members_of(&self.group, u64::MAX));
        out
    }

    /// Refuses `op` by `key` with `expected`, checking the chain and queries are unchanged.
    fn refuse(&mut self, key: &Keypair, op: AccessOp, expected: AccessError) {
        let before = self.queries();
        let got = self.net.refuse(key, op);
        assert_eq!(got, expected);
        assert_eq!(self.queries(), before, "a refusal changed a query");
    }

    /// As `refuse`, matching the error with a predicate.
    fn refuse_like(&mut self, key: &Keypair, op: AccessOp, ok: impl Fn(&AccessError) -> bool) {
        let before = self.queries();
        let got = self.net.refuse(key, op);
        assert!(ok(&got), "unexpected refusal: {got}");
        assert_eq!(self.queries(), before, "a refusal changed a query");
    }

    fn receipt(
        &self,
        pointer: PointerId,
        action: Action,
        purpose: PurposeOfUse,
        basis: Basis,
    ) -> AccessOp {
        AccessOp::RecordAccess {
            patient: self.patient.account(),
            pointer,
            action,
            purpose,
            basis,
        }
    }

    fn terms(&self, viewer: &Keypair) -> GrantTerms {
        GrantTerms::new(
            self.rel,
            Viewer::Account(viewer.account()),
            Scope::All,
            ActionSet::all(),
            PurposeSet::all(),
            Period::lasting(self.net.now, 365 * DAY),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// What MedRec's public code got wrong

#[test]
fn permission_changes_check_their_caller() {
    let mut w = world();
    let (s, h, g, x) = (
        w.specialist.account(),
        w.hospital.account(),
        w.guardian.account(),
        w.stranger.account(),
    );
    // Granting on the patient's relationship: the provider, a viewer, a guardian without a
    // delegation, an unregistered stranger.
    for seed in [2, 7, 9, 10] {
        let key = k(seed);
        let who = key.account();
        let terms = w.terms(&key);
        w.refuse(
            &key,
            AccessOp::Grant { terms, under: None },
            AccessError::NotThePatient(who),
        );
    }
    // Revoking someone else's grant.
    for (seed, who) in [(2, h), (7, s), (9, g)] {
        let key = k(seed);
        let op = AccessOp::RevokeGrant {
            grant: w.grant,
            reason: reason("mine now"),
        };
        w.refuse(
            &key,
            op,
            AccessError::NotGrantManager {
                account: who,
                grant: w.grant,
            },
        );
    }
    // Changing the patient's group, delegating for the patient, revoking its delegation.
    let stranger = k(10);
    w.refuse(
        &stranger,
        AccessOp::AddGroupMember {
            group: w.group,
            member: x,
        },
        AccessError::NotThePatient(x),
    );
    let spec = k(7);
    w.refuse(
        &spec,
        AccessOp::RevokeDelegation {
            delegation: w.delegation,
            reason: reason("x"),
        },
        AccessError::NotADelegationParty {
            account: s,
            delegation: w.delegation,
        },
    );
    // The patient's relationship answered, ended or filled by others.
    let hospital = k(2);
    w.refuse(
        &stranger,
        AccessOp::TerminateRelationship {
            relationship: w.rel,
            reason: reason("x"),
        },
        AccessError::NotAParty(x),
    );
    w.refuse(
        &spec,
        AccessOp::AddPointer {
            relationship: w.rel,
            record: record(9, Category::General),
            replaces: None,
        },
        AccessError::NotTheProvider(s),
    );
    // Certification is the authority's alone.
    w.refuse_like(
        &hospital,
        AccessOp::CertifyProvider {
            provider: w.uncertified.account(),
            emergency: true,
        },
        |e| {
            matches!(
                e,
                AccessError::WrongRole {
                    expected: Role::Authority,
                    ..
                }
            )
        },
    );
    w.refuse_like(
        &k(5),
        AccessOp::DecertifyProvider {
            provider: h,
            reason: reason("x"),
        },
        |e| {
            matches!(
                e,
                AccessError::WrongRole {
                    expected: Role::Authority,
                    ..
                }
            )
        },
    );
}

#[test]
fn nobody_makes_themselves_the_patient() {
    let mut w = world();
    let stranger = k(10);
    // Registering with the patient's identity commitment (bound to the patient's account).
    let steal = AccessOp::register_patient(w.patient.account(), "patient", &[7; 32]);
    w.refuse(
        &stranger,
        steal,
        AccessError::CommitmentNotBound(stranger.account()),
    );
    // Registering again under another role, or as an authority.
    w.refuse(
        &k(5),
        register_op(&k(5), Role::Researcher, "Patient's Lab"),
        AccessError::AlreadyRegistered(w.patient.account()),
    );
    w.refuse(
        &stranger,
        register_op(&stranger, Role::Authority, "Self-made Authority"),
        AccessError::RoleNotSelfAssignable(Role::Authority),
    );
    // Accepting the patient's pending relationship in its place.
    let pending = AccessOp::CreateRelationship {
        patient: w.other_patient.account(),
    };
    let hospital = k(2);
    w.net.run(vec![(&hospital, pending)]);
    let rel2 = relationship(&w.other_patient, &w.hospital);
    for key in [k(2), k(5), k(10)] {
        let who = key.account();
        w.refuse(
            &key,
            AccessOp::AcceptRelationship { relationship: rel2 },
            AccessError::NotThePatient(who),
        );
    }
    // A provider naming itself, or a non-patient, as the patient.
    for target in [w.hospital.account(), w.researcher.account()] {
        w.refuse_like(
            &hospital,
            AccessOp::CreateRelationship { patient: target },
            |e| {
                matches!(
                    e,
                    AccessError::WrongRole {
                        expected: Role::Patient,
                        ..
                    }
                )
            },
        );
    }
    // A key rotation cannot take over another account's key.
    let op = AccessOp::rotate_key(w.net.chain.chain_id(), w.stranger.account(), &k(5));
    w.refuse_like(&k(8), op, |e| {
        matches!(e, AccessError::KeyInUse(_) | AccessError::BadPossession)
    });
}

#[test]
fn revocation_is_recorded_never_erased() {
    let mut w = world();
    let patient = k(5);
    w.net.run(vec![(
        &patient,
        AccessOp::RevokeGrant {
            grant: w.grant,
            reason: reason("second opinion done"),
        },
    )]);
    let height = w.net.chain.height();
    let a = w.net.chain.access();
    assert!(a.grant(&w.grant).is_some(), "the grant is still on record");
    let r = a.revocation(&w.grant).unwrap();
    assert_eq!(
        (r.by, r.at.height, r.reason.as_str()),
        (w.patient.account(), height, "second opinion done")
    );
    // Revoking again is refused, and so is reading.
    w.refuse(
        &patient,
        AccessOp::RevokeGrant {
            grant: w.grant,
            reason: reason("again"),
        },
        AccessError::GrantAlreadyRevoked(w.grant),
    );
    let op = w.receipt(w.lab, Action::Read, Treatment, Basis::Grant(w.grant));
    w.refuse(
        &k(7),
        op,
        AccessError::Denied(DenyReason::Revoked {
            grant: w.grant,
            height,
        }),
    );
    // Terminating the relationship is recorded too, and cannot be repeated or undone.
    w.net.run(vec![(
        &patient,
        AccessOp::TerminateRelationship {
            relationship: w.rel,
            reason: reason("moving abroad"),
        },
    )]);
    let rel = w.net.chain.access().relationship(&w.rel).unwrap().clone();
    assert_eq!(
        rel.termination.as_ref().unwrap().reason.as_str(),
        "moving abroad"
    );
    for op in [
        AccessOp::TerminateRelationship {
            relationship: w.rel,
            reason: reason("again"),
        },
        AccessOp::AcceptRelationship {
            relationship: w.rel,
        },
    ] {
        w.refuse_like(&patient, op, |e| {
            matches!(e, AccessError::WrongStatus { .. })
        });
    }
}

#[test]
fn time_limits_are_enforced_by_the_chain() {
    let mut w = world();
    let spec = k(7);
    let op = w.receipt(w.lab, Action::Read, Treatment, Basis::Grant(w.grant));
    // Inside the period the receipt is fine (checked by the template, not mined).
    let t = w.net.sign(&spec, op.clone());
    assert!(w
        .net
        .chain
        .build_template(vec![t], w.net.now + 60)
        .unwrap()
        .rejected
        .is_empty());
    // Thirty days after the start, at block time, it is not.
    w.net.run_after(30 * DAY, vec![]);
    let end = T0 + 30 * DAY;
    w.refuse(
        &spec,
        op,
        AccessError::Denied(DenyReason::Expired {
            grant: w.grant,
            end,
        }),
    );
    // A delegation past its period, and a grant whose period is over, are refused too.
    w.net.run_after(31 * DAY, vec![]);
    let guardian = k(9);
    let terms = GrantTerms {
        scope: Scope::pointers(&[w.lab]),
        actions: ActionSet::of(&[Action::Read]),
        purposes: PurposeSet::of(&[Treatment]),
        period: Period::lasting(w.net.now, DAY),
        ..w.terms(&spec)
    };
    w.refuse(
        &guardian,
        AccessOp::Grant {
            terms,
            under: Some(w.delegation),
        },
        AccessError::DelegationInactive(w.delegation),
    );
    let past = GrantTerms {
        period: Period::new(T0, w.net.now).unwrap(),
        ..w.terms(&spec)
    };
    w.refuse_like(
        &k(5),
        AccessOp::Grant {
            terms: past,
            under: None,
        },
        |e| matches!(e, AccessError::PeriodOver { .. }),
    );
}

#[test]
fn third_party_reads_are_enforced_and_logged() {
    let mut w = world();
    let (spec, researcher, stranger) = (k(7), k(8), k(10));
    // No grant, someone else's grant, a basis that is not the reader's, an unregistered reader.
    let op = w.receipt(w.lab, Action::Read, Research, Basis::Grant(w.grant));
    w.refuse(
        &researcher,
        op,
        AccessError::Denied(DenyReason::BasisNotApplicable(Basis::Grant(w.grant))),
    );
    for basis in [
        Basis::Patient,
        Basis::Custodian,
        Basis::Grant(GrantId::default()),
    ] {
        let op = w.receipt(w.lab, Action::Read, Treatment, basis);
        w.refuse(
            &spec,
            op,
            AccessError::Denied(DenyReason::BasisNotApplicable(basis)),
        );
    }
    let op = w.receipt(w.lab, Action::Read, Treatment, Basis::Grant(w.grant));
    w.refuse(
        &stranger,
        op.clone(),
        AccessError::NotRegistered(stranger.account()),
    );
    // A pointer of another patient.
    let other = AccessOp::RecordAccess {
        patient: w.other_patient.account(),
        pointer: w.lab,
        action: Action::Read,
        purpose: Treatment,
        basis: Basis::Grant(w.grant),
    };
    w.refuse_like(&spec, other, |e| {
        matches!(
            e,
            AccessError::Denied(DenyReason::NotThePatientsPointer { .. })
        )
    });
    // The permitted read goes on the patient's trail.
    let n = w.net.chain.access().audit_len(&w.patient.account());
    w.net.run(vec![(&spec, op)]);
    let trail = w
        .net
        .chain
        .access()
        .audit_trail_from(&w.patient.account(), n);
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].actor, spec.account());
}

// ---------------------------------------------------------------------------------------------
// Denials by the grant's terms

#[test]
fn denied_purpose_action_and_provision() {
    let mut w = world();
    let spec = k(7);
    let g = w.grant;
    let cases = [
        (
            w.lab,
            Action::Read,
            Research,
            DenyReason::PurposeNotAllowed {
                grant: g,
                purpose: Research,
            },
        ),
        (
            w.lab,
            Action::Disclose,
            Treatment,
            DenyReason::ActionNotAllowed {
                grant: g,
                action: Action::Disclose,
            },
        ),
        (
            w.mh,
            Action::Read,
            Treatment,
            DenyReason::DeniedByProvision {
                grant: g,
                provision: 0,
            },
        ),
    ];
    for (pointer, action, purpose, reason) in cases {
        let op = w.receipt(pointer, action, purpose, Basis::Grant(g));
        w.refuse(&spec, op, AccessError::Denied(reason));
    }
}

#[test]
fn a_delegate_cannot_widen() {
    let mut w = world();
    let guardian = k(9);
    let narrow = GrantTerms {
        scope: Scope::pointers(&[w.lab]),
        actions: ActionSet::of(&[Action::Read]),
        purposes: PurposeSet::of(&[Treatment]),
        period: Period::lasting(w.net.now, 10 * DAY),
        ..w.terms(&w.specialist)
    };
    let d = w.delegation;
    let wider = [
        (
            "scope",
            GrantTerms {
                scope: Scope::All,
                ..narrow.clone()
            },
        ),
        (
            "scope",
            GrantTerms {
                scope: Scope::pointers(&[w.mh]),
                ..narrow.clone()
            },
        ),
        (
            "scope",
            GrantTerms {
                scope: Scope::categories(CategorySet::of(&[
                    Category::Laboratory,
                    Category::Imaging,
                ])),
                ..narrow.clone()
            },
        ),
        (
            "actions",
            GrantTerms {
                actions: ActionSet::all(),
                ..narrow.clone()
            },
        ),
        (
            "purposes",
            GrantTerms {
                purposes: PurposeSet::of(&[Treatment, Research]),
                ..narrow.clone()
            },
        ),
        (
            "period",
            GrantTerms {
                period: Period::lasting(w.net.now, 90 * DAY),
                ..narrow.clone()
            },
        ),
        (
            "period",
            GrantTerms {
                period: Period::new(T0 - DAY, w.net.now + DAY).unwrap(),
                ..narrow.clone()
            },
        ),
    ];
    for (what, terms) in wider {
        w.refuse(
            &guardian,
            AccessOp::Grant {
                terms,
                under: Some(d),
            },
            AccessError::Widens {
                delegation: d,
                what,
            },
        );
    }
    // Another relationship of the same patient is outside a one-relationship delegation.
    let er = k(3);
    w.net.run(vec![(
        &er,
        AccessOp::CreateRelationship {
            patient: w.patient.account(),
        },
    )]);
    let rel2 = relationship(&w.patient, &w.er);
    w.net.run(vec![(
        &k(5),
        AccessOp::AcceptRelationship { relationship: rel2 },
    )]);
    let other = GrantTerms {
        relationship: rel2,
        scope: Scope::categories(CategorySet::of(&[Category::Laboratory])),
        ..narrow.clone()
    };
    w.refuse(
        &guardian,
        AccessOp::Grant {
            terms: other,
            under: Some(d),
        },
        AccessError::Widens {
            delegation: d,
            what: "relationship",
        },
    );
    // Someone else using the delegation.
    w.refuse(
        &k(7),
        AccessOp::Grant {
            terms: narrow.clone(),
            under: Some(d),
        },
        AccessError::NotTheDelegate(w.specialist.account()),
    );
    // The narrow grant goes through.
    w.net.run(vec![(
        &guardian,
        AccessOp::Grant {
            terms: narrow,
            under: Some(d),
        },
    )]);
}

// ---------------------------------------------------------------------------------------------
// Roles, certification, signatures, replay, keys

#[test]
fn wrong_roles_and_uncertified_providers() {
    let mut w = world();
    let (uncertified, researcher, hospital, patient) = (k(4), k(8), k(2), k(5));
    let to_patient = AccessOp::CreateRelationship {
        patient: w.patient.account(),
    };
    w.refuse(
        &uncertified,
        to_patient.clone(),
        AccessError::NotCertified(w.uncertified.account()),
    );
    w.refuse_like(&researcher, to_patient, |e| {
        matches!(
            e,
            AccessError::WrongRole {
                expected: Role::Provider,
                ..
            }
        )
    });
    w.refuse_like(
        &hospital,
        AccessOp::CreateGroup {
            label: "g".try_into().unwrap(),
        },
        |e| {
            matches!(
                e,
                AccessError::WrongRole {
                    expected: Role::Patient,
                    ..
                }
            )
        },
    );
    w.refuse_like(
        &patient,
        AccessOp::OpenBreakGlass {
            patient: w.patient.account(),
            reason: reason("x"),
            duration_secs: 60,
        },
        |e| {
            matches!(
                e,
                AccessError::WrongRole {
                    expected: Role::Provider,
                    ..
                }
            )
        },
    );
    // Certified, but not for emergencies.
    w.refuse(
        &hospital,
        AccessOp::OpenBreakGlass {
            patient: w.patient.account(),
            reason: reason("x"),
            duration_secs: 60,
        },
        AccessError::NotEmergencyCertified(w.hospital.account()),
    );
    // Decertified: no new relationships.
    w.net.run(vec![(
        &w.authority,
        AccessOp::DecertifyProvider {
            provider: w.hospital.account(),
            reason: reason("licence lapsed"),
        },
    )]);
    w.refuse(
        &hospital,
        AccessOp::CreateRelationship {
            patient: w.other_patient.account(),
        },
        AccessError::NotCertified(w.hospital.account()),
    );
}

#[test]
fn wrong_signer_and_foreign_chains_fail_before_the_state() {
    let mut w = world();
    let before = (w.net.snapshot(), w.queries());
    // A transaction claiming the patient as signer, signed by someone else.
    let mut forged = w.net.sign(
        &k(10),
        AccessOp::AcceptRelationship {
            relationship: w.rel,
        },
    );
    forged.body.signer = w.patient.public();
    assert!(matches!(
        w.net
            .chain
            .build_template(vec![forged.clone()], w.net.now + 60),
        Err(ChainError::Transaction(_))
    ));
    let block = w.net.forced_block(60, vec![forged]);
    assert!(matches!(
        w.net.chain.append(block),
        Err(ChainError::Structure(_))
    ));
    // A transaction signed for another chain.
    let foreign = Transaction::sign(
        &k(5),
        ChainId::from_bytes([9; 32]),
        0,
        Payload::Access(AccessOp::AcceptRelationship {
            relationship: w.rel,
        }),
    );
    match w.net.chain.build_template(vec![foreign], w.net.now + 60) {
        Err(ChainError::Transaction(TxError::InBatch { source, .. })) => {
            assert!(matches!(*source, TxError::WrongChain { .. }))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!((w.net.snapshot(), w.queries()), before);
}

#[test]
fn replayed_transactions_are_refused() {
    let mut w = world();
    let spec = k(7);
    let tx = w.net.sign(
        &spec,
        w.receipt(w.lab, Action::Read, Treatment, Basis::Grant(w.grant)),
    );
    w.net.mine(60, vec![tx.clone()]);
    let before = w.queries();
    match w.net.refuse_tx(tx) {
        StateError::BadNonce {
            expected, found, ..
        } => assert_eq!((expected, found), (2, 1)),
        other => panic!("unexpected {other}"),
    }
    assert_eq!(w.queries(), before, "the read was logged once");
}

#[test]
fn weak_and_retired_keys() {
    let mut w = world();
    // A weak key cannot even sign a valid transaction.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = PublicKey::from_bytes(identity);
    let mut tx = w
        .net
        .sign(&k(10), register_op(&k(10), Role::Patient, "weak"));
    tx.body.signer = weak;
    assert!(matches!(tx.clone().verify(), Err(TxError::WeakKey(_))));
    assert!(w
        .net
        .chain
        .build_template(vec![tx], w.net.now + 60)
        .is_err());
    // Nor be rotated to.
    w.refuse(
        &k(5),
        AccessOp::RotateKey {
            new_key: weak,
            possession: medledger::tx::Signature::from_bytes([0; 64]),
        },
        AccessError::BadKey(weak),
    );
    // After a rotation the old key is retired.
    let new = Keypair::from_seed(&[50; 32]);
    let op = AccessOp::rotate_key(w.net.chain.chain_id(), w.patient.account(), &new);
    w.net.run(vec![(&k(5), op)]);
    let rotated = w.net.chain.height();
    let tx = Transaction::sign(
        &k(5),
        w.net.chain.chain_id(),
        w.net.chain.state().next_nonce(&w.patient.account()),
        Payload::Access(AccessOp::RevokeGrant {
            grant: w.grant,
            reason: reason("old key"),
        }),
    );
    assert!(matches!(w.net.refuse_tx(tx), StateError::KeyRetired { .. }));
    assert_eq!(
        w.net
            .chain
            .state()
            .key_at(&w.patient.account(), rotated - 1),
        Some(w.patient.public())
    );
    assert_eq!(
        w.net.chain.state().key_at(&w.patient.account(), rotated),
        Some(new.public())
    );
    // The new key acts for the same patient.
    w.net.run(vec![(
        &new,
        AccessOp::RevokeGrant {
            grant: w.grant,
            reason: reason("new key"),
        },
    )]);
    assert_eq!(
        w.net.chain.access().revocation(&w.grant).unwrap().by,
        w.patient.account()
    );
}

// ---------------------------------------------------------------------------------------------
// Relationships, pointers, groups, break-glass

#[test]
fn relationship_and_pointer_refusals() {
    let mut w = world();
    let (hospital, patient) = (k(2), k(5));
    w.refuse(
        &hospital,
        AccessOp::CreateRelationship {
            patient: w.patient.account(),
        },
        AccessError::RelationshipExists(w.rel),
    );
    w.refuse(
        &patient,
        AccessOp::AcceptRelationship {
            relationship: RelationshipId::default(),
        },
        AccessError::UnknownRelationship(RelationshipId::default()),
    );
    w.refuse(
        &hospital,
        AccessOp::AddPointer {
            relationship: w.rel,
            record: record(3, Category::Imaging),
            replaces: Some(w.lab),
        },
        AccessError::CategoryChanged {
            expected: Category::Laboratory,
            found: Category::Imaging,
        },
    );
    let mut bad = record(3, Category::Laboratory);
    bad.data_period = Period { start: 10, end: 10 };
    w.refuse(
        &hospital,
        AccessOp::AddPointer {
            relationship: w.rel,
            record: bad,
            replaces: None,
        },
        AccessError::InvalidPeriod { start: 10, end: 10 },
    );
    // Grants on a pending relationship.
    let er = k(3);
    w.net.run(vec![(
        &er,
        AccessOp::CreateRelationship {
            patient: w.patient.account(),
        },
    )]);
    let rel2 = relationship(&w.patient, &w.er);
    let terms = GrantTerms {
        relationship: rel2,
        ..w.terms(&w.specialist)
    };
    w.refuse_like(&patient, AccessOp::Grant { terms, under: None }, |e| {
        matches!(e, AccessError::WrongStatus { .. })
    });
    // A scope naming a pointer of another relationship.
    let ops = vec![(
        &er,
        AccessOp::AddPointer {
            relationship: rel2,
            record: record(4, Category::Laboratory),
            replaces: None,
        },
    )];
    let txs = w.net.sign_all(ops);
    let foreign = pointer_of(&txs, 0);
    w.net.mine(60, txs);
    let terms = GrantTerms {
        scope: Scope::pointers(&[foreign]),
        ..w.terms(&w.specialist)
    };
    w.refuse_like(&patient, AccessOp::Grant { terms, under: None }, |e| {
        matches!(e, AccessError::PointerNotInRelationship { .. })
    });
}

#[test]
fn group_refusals() {
    let mut w = world();
    let patient = k(5);
    w.refuse(
        &patient,
        AccessOp::AddGroupMember {
            group: w.group,
            member: w.stranger.account(),
        },
        AccessError::NotRegistered(w.stranger.account()),
    );
    w.refuse(
        &patient,
        AccessOp::RemoveGroupMember {
            group: w.group,
            member: w.specialist.account(),
        },
        AccessError::NotMember(w.specialist.account()),
    );
    w.refuse(
        &patient,
        AccessOp::AddGroupMember {
            group: GroupId::default(),
            member: w.specialist.account(),
        },
        AccessError::UnknownGroup(GroupId::default()),
    );
}

#[test]
fn break_glass_refusals() {
    let mut w = world();
    let (er, patient) = (k(3), k(5));
    let patient_account = w.patient.account();
    let open = |secs| AccessOp::OpenBreakGlass {
        patient: patient_account,
        reason: reason("emergency"),
        duration_secs: secs,
    };
    w.refuse(
        &er,
        open(MAX_BREAK_GLASS_SECS + 1),
        AccessError::BreakGlassDuration {
            secs: MAX_BREAK_GLASS_SECS + 1,
            max: MAX_BREAK_GLASS_SECS,
        },
    );
    let tx = w.net.sign(&er, open(3600));
    let session = BreakGlassId::of_tx(tx.id());
    w.net.mine(60, vec![tx]);
    w.refuse(&er, open(3600), AccessError::BreakGlassAlreadyOpen(session));
    // Reading beyond its scope: disclosure, a non-emergency purpose.
    for (action, purpose) in [
        (Action::Disclose, EmergencyTreatment),
        (Action::Read, Treatment),
    ] {
        let op = w.receipt(w.lab, action, purpose, Basis::BreakGlass(session));
        w.refuse(
            &er,
            op,
            AccessError::Denied(DenyReason::BreakGlassScope { session }),
        );
    }
    // Someone else's session.
    let op = w.receipt(
        w.lab,
        Action::Read,
        EmergencyTreatment,
        Basis::BreakGlass(session),
    );
    w.refuse(
        &k(7),
        op.clone(),
        AccessError::Denied(DenyReason::BasisNotApplicable(Basis::BreakGlass(session))),
    );
    // Review by anyone but the patient; close by anyone but the opener.
    let review = AccessOp::ReviewBreakGlass {
        session,
        outcome: medledger::access::ReviewOutcome::Disputed,
        note: None,
    };
    w.refuse(
        &er,
        review.clone(),
        AccessError::NotThePatient(w.er.account()),
    );
    w.refuse(
        &patient,
        AccessOp::CloseBreakGlass { session },
        AccessError::NotTheOpener(w.patient.account()),
    );
    // After it expires by itself.
    w.net.run_after(3600, vec![]);
    w.refuse(
        &er,
        op,
        AccessError::Denied(DenyReason::BreakGlassNotOpen { session }),
    );
    w.net.run(vec![(&patient, review)]);
}

// ---------------------------------------------------------------------------------------------
// Consent capacity, time, certification and identity

impl World {
    /// Refuses `block` with an error `ok` accepts, checking the chain and queries are unchanged.
    fn refuse_block(&mut self, block: Block<PowSeal>, ok: impl Fn(&ChainError) -> bool) {
        let before = (self.net.snapshot(), self.queries());
        let err = self
            .net
            .chain
            .append(block)
            .expect_err("the block was accepted");
        assert!(ok(&err), "unexpected refusal: {err}");
        assert_eq!(
            (self.net.snapshot(), self.queries()),
            before,
            "a refused block changed the chain"
        );
    }

    /// A grant by the guardian under its delegation: the lab record, for treatment, from the
    /// next block's time on for `secs`.
    fn delegated(&self, viewer: &Keypair, secs: u64) -> AccessOp {
        AccessOp::Grant {
            terms: GrantTerms {
                scope: Scope::pointers(&[self.lab]),
                actions: ActionSet::of(&[Action::Read]),
                purposes: PurposeSet::of(&[Treatment]),
                period: Period::lasting(self.net.now + 60, secs),
                ..self.terms(viewer)
            },
            under: Some(self.delegation),
        }
    }
}

/// A block on the tip stamped `time`, earlier than the tip's, and otherwise valid: `txs` apply
/// at `time` and the state root is theirs. The tip must be an empty block, so that the state
/// `txs` apply to is also its parent's; the root is computed on a replica of the chain whose
/// copy of the tip is stamped `time`.
fn back_dated_block(w: &World, time: u64, txs: Vec<Transaction>) -> Block<PowSeal> {
    let chain = &w.net.chain;
    let tip = chain.block(&chain.tip()).unwrap().unwrap();
    assert!(tip.txs.is_empty() && time < tip.header.timestamp);
    let mut replica = Net::new(&[("Health Authority", &w.authority)]);
    replica.clock.set(w.net.now);
    for height in 1..chain.height() {
        let block = chain
            .block(&chain.hash_at(height).unwrap())
            .unwrap()
            .unwrap();
        replica.chain.append(block).unwrap();
    }
    let twin = replica.chain.mine(vec![], time).unwrap();
    replica.chain.append(twin).unwrap();
    let template = replica.chain.build_template(txs, time).unwrap();
    assert!(template.rejected.is_empty(), "{:?}", template.rejected);
    let template = BlockTemplate {
        parent: chain.tip(),
        ..template
    };
    let header = template.header(PowSeal {
        bits: chain.engine().required_bits(&chain.tip_ancestors()),
        nonce: 0,
        extra_nonce: 0,
    });
    let seal = chain
        .engine()
        .solve(header, &AtomicBool::new(false))
        .unwrap();
    template
        .seal(seal)
        .expect("a template of a few transactions fits a block")
}

#[test]
fn a_delegate_cannot_use_up_the_patients_capacity_to_grant() {
    let mut w = world();
    let (guardian, patient, spec) = (k(9), k(5), k(7));
    // The guardian, on the narrowest delegation, makes one-second grants block after block
    // until it is stopped.
    let batch = MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER;
    let mut made = 0;
    let stopped = loop {
        let ops = (0..batch)
            .map(|_| (&guardian, w.delegated(&spec, 1)))
            .collect();
        let txs = w.net.sign_all(ops);
        let time = w.net.now + 60;
        w.net.clock.set(time);
        let template = w.net.chain.build_template(txs, time).unwrap();
        if let Some((_, err)) = template.rejected.first() {
            break err.clone();
        }
        w.net.mine(60, template.txs);
        made += batch;
        assert!(made <= 4096, "the delegate is never stopped");
    };
    // It was stopped by its own quota, and the patient can still grant.
    assert_eq!(
        stopped,
        StateError::App(AccessError::LimitReached {
            what: "grants per delegation",
            max: MAX_GRANTS_PER_DELEGATION.into(),
        })
    );
    assert_eq!(made, MAX_GRANTS_PER_DELEGATION as usize);
    let terms = w.terms(&spec);
    w.net
        .run(vec![(&patient, AccessOp::Grant { terms, under: None })]);
    let op = w.delegated(&spec, 1);
    w.refuse(
        &guardian,
        op,
        AccessError::LimitReached {
            what: "grants per delegation",
            max: MAX_GRANTS_PER_DELEGATION.into(),
        },
    );
    // Once the delegation is revoked, the patient still grants, as often as it likes.
    w.net.run(vec![(
        &patient,
        AccessOp::RevokeDelegation {
            delegation: w.delegation,
            reason: reason("guardian no longer needed"),
        },
    )]);
    for _ in 0..3 {
        let terms = GrantTerms {
            period: Period::lasting(w.net.now + 60, 1),
            ..w.terms(&spec)
        };
        w.net
            .run(vec![(&patient, AccessOp::Grant { terms, under: None })]);
    }
}

#[test]
fn delegates_share_smaller_live_quotas_apart_from_the_patients() {
    let mut w = world();
    let (guardian, patient) = (k(9), k(5));
    let viewers = [k(7), k(8), k(3), k(6), k(2)];
    // Per viewer: the delegates' live grants to the specialist are capped...
    let ops = (0..MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER)
        .map(|_| (&guardian, w.delegated(&viewers[0], 10 * DAY)))
        .collect();
    w.net.run(ops);
    let op = w.delegated(&viewers[0], 10 * DAY);
    w.refuse(
        &guardian,
        op,
        AccessError::LimitReached {
            what: "live delegated grants per viewer",
            max: MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER as u64,
        },
    );
    // ...while the patient's own grants to it are not.
    let terms = w.terms(&viewers[0]);
    w.net
        .run(vec![(&patient, AccessOp::Grant { terms, under: None })]);
    // Per relationship: all delegates together hold a smaller quota than the patient.
    let per_viewer = MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER;
    let more = MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP - per_viewer;
    let ops = (0..more)
        .map(|i| {
            (
                &guardian,
                w.delegated(&viewers[1 + i / per_viewer], 10 * DAY),
            )
        })
        .collect();
    w.net.run(ops);
    let last = &viewers[1 + more / per_viewer];
    let op = w.delegated(last, 10 * DAY);
    w.refuse(
        &guardian,
        op,
        AccessError::LimitReached {
            what: "live delegated grants per relationship",
            max: MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP as u64,
        },
    );
    let terms = w.terms(last);
    w.net
        .run(vec![(&patient, AccessOp::Grant { terms, under: None })]);
    // The delegates' grants expire, and make room again.
    w.net.run_after(10 * DAY, vec![]);
    let op = w.delegated(last, DAY);
    w.net.run(vec![(&guardian, op)]);
}

#[test]
fn a_back_dated_block_cannot_reopen_an_expired_grant_or_break_glass_window() {
    let mut w = world();
    let (spec, er) = (k(7), k(3));
    let end = T0 + 30 * DAY;
    // The specialist's grant expired one block ago...
    w.net.run_after(30 * DAY, vec![]);
    assert!(w.net.now > end);
    // ...and a block stamped before its end, logging a read under it, is refused.
    let read = w.net.sign(
        &spec,
        w.receipt(w.lab, Action::Read, Treatment, Basis::Grant(w.grant)),
    );
    let block = back_dated_block(&w, end - 60, vec![read]);
    let parent = w.net.now;
    w.refuse_block(block, |e| {
        matches!(e, ChainError::TimestampBeforeParent { parent: p, found }
            if (*p, *found) == (parent, end - 60))
    });
    // An emergency session that expired by itself.
    let open = w.net.sign(
        &er,
        AccessOp::OpenBreakGlass {
            patient: w.patient.account(),
            reason: reason("unconscious on arrival"),
            duration_secs: 3600,
        },
    );
    let session = BreakGlassId::of_tx(open.id());
    w.net.mine(60, vec![open]);
    let opened = w.net.now;
    w.net.run_after(2 * 3600, vec![]);
    let read = w.net.sign(
        &er,
        w.receipt(
            w.lab,
            Action::Read,
            EmergencyTreatment,
            Basis::BreakGlass(session),
        ),
    );
    let block = back_dated_block(&w, opened + 1800, vec![read]);
    w.refuse_block(block, |e| {
        matches!(e, ChainError::TimestampBeforeParent { .. })
    });
    // At the time the chain has reached, both stay closed.
    let op = w.receipt(w.lab, Action::Read, Treatment, Basis::Grant(w.grant));
    w.refuse(
        &spec,
        op,
        AccessError::Denied(DenyReason::Expired {
            grant: w.grant,
            end,
        }),
    );
}

#[test]
fn withdrawing_emergency_certification_closes_open_break_glass_sessions() {
    let mut w = world();
    let (er, patient) = (k(3), k(5));
    let open = |w: &World| {
        w.net.sign(
            &er,
            AccessOp::OpenBreakGlass {
                patient: w.patient.account(),
                reason: reason("unconscious on arrival"),
                duration_secs: MAX_BREAK_GLASS_SECS,
            },
        )
    };
    let read = |w: &World, session| {
        w.receipt(
            w.lab,
            Action::Read,
            EmergencyTreatment,
            Basis::BreakGlass(session),
        )
    };
    let withdrawals = [
        AccessOp::CertifyProvider {
            provider: w.er.account(),
            emergency: false,
        },
        AccessOp::DecertifyProvider {
            provider: w.er.account(),
            reason: reason("licence suspended"),
        },
    ];
    for withdrawal in withdrawals {
        let tx = open(&w);
        let session = BreakGlassId::of_tx(tx.id());
        w.net.mine(60, vec![tx]);
        w.net.run(vec![(&er, read(&w, session))]);
        let authority = Keypair::from_seed(&[1; 32]);
        let events = w.net.run(vec![(&authority, withdrawal)]);
        // Closed at once, recorded for the patient: the session's closure and the audit entry
        // naming the authority.
        let closed_at = w.net.chain.height();
        assert!(events.iter().any(|e| matches!(
            e,
            AccessEvent::BreakGlassRevoked { session: s, by, .. }
                if *s == session && *by == w.authority.account()
        )));
        let a = w.net.chain.access();
        let queued = a.review_queue(&w.patient.account());
        let s = queued.iter().find(|s| s.id == session).unwrap();
        assert_eq!(s.closed.map(|c| c.height), Some(closed_at));
        let entry = a.audit_trail(&w.patient.account()).pop().unwrap();
        assert_eq!(entry.actor, w.authority.account());
        assert!(matches!(entry.event, AccessEvent::BreakGlassRevoked { .. }));
        let op = read(&w, session);
        w.refuse(
            &er,
            op,
            AccessError::Denied(DenyReason::BreakGlassNotOpen { session }),
        );
        // Certified for emergencies again, to try the other withdrawal.
        w.net.run(vec![(
            &authority,
            AccessOp::CertifyProvider {
                provider: w.er.account(),
                emergency: true,
            },
        )]);
    }
    // The patient reviews what happened.
    let sessions = w
        .net
        .chain
        .access()
        .break_glass_sessions(&w.patient.account())
        .iter()
        .map(|s| s.id)
        .collect::<Vec<_>>();
    assert_eq!(sessions.len(), 2);
    w.net.run(vec![(
        &patient,
        AccessOp::ReviewBreakGlass {
            session: sessions[0],
            outcome: medledger::access::ReviewOutcome::Disputed,
            note: None,
        },
    )]);
}

#[test]
fn a_decertified_provider_adds_no_records_to_its_relationships() {
    let mut w = world();
    let hospital = k(2);
    w.net.run(vec![(
        &w.authority,
        AccessOp::DecertifyProvider {
            provider: w.hospital.account(),
            reason: reason("licence lapsed"),
        },
    )]);
    for replaces in [None, Some(w.lab)] {
        let op = AccessOp::AddPointer {
            relationship: w.rel,
            record: record(3, Category::Laboratory),
            replaces,
        };
        w.refuse(
            &hospital,
            op,
            AccessError::NotCertified(w.hospital.account()),
        );
    }
    // It may still end the relationship.
    w.net.run(vec![(
        &hospital,
        AccessOp::TerminateRelationship {
            relationship: w.rel,
            reason: reason("closing down"),
        },
    )]);
}

#[test]
fn a_pending_registration_cannot_be_front_run() {
    let mut w = world();
    let (patient, attacker) = (k(11), k(12));
    let salt = [0x5a; 32];
    let honest = AccessOp::register_patient(patient.account(), "NHS-485-777-3456", &salt);
    let commitment = Identity::Commitment(IdentityCommitment::new(
        "NHS-485-777-3456",
        &salt,
        patient.account(),
    ));
    // The attacker copies the pending registration and signs it with its own key.
    w.refuse(
        &attacker,
        honest.clone(),
        AccessError::CommitmentNotBound(attacker.account()),
    );
    // Ahead of the honest one in the same block, the copy is left out; the honest one is not.
    let txs = vec![
        w.net.sign(&attacker, honest.clone()),
        w.net.sign(&patient, honest),
    ];
    let time = w.net.now + 60;
    w.net.clock.set(time);
    let template = w.net.chain.build_template(txs, time).unwrap();
    assert_eq!(template.rejected.len(), 1);
    assert_eq!(
        template.rejected[0].1,
        StateError::App(AccessError::CommitmentNotBound(attacker.account()))
    );
    w.net.mine(60, template.txs);
    let a = w.net.chain.access();
    assert_eq!(a.account_by_identity(&commitment), Some(patient.account()));
    assert!(a.account(&attacker.account()).is_none());
    // Binding the copied blinded identity to its own account gives the attacker a commitment of
    // its own: the patient's identity stays the patient's.
    let AccessOp::Register {
        blinded: Some(blinded),
        ..
    } = AccessOp::register_patient(patient.account(), "NHS-485-777-3456", &salt)
    else {
        unreachable!()
    };
    let own = Identity::Commitment(IdentityCommitment::bind(blinded, attacker.account()));
    w.net.run(vec![(
        &attacker,
        AccessOp::Register {
            role: Role::Patient,
            identity: own.clone(),
            blinded: Some(blinded),
        },
    )]);
    let a = w.net.chain.access();
    assert_ne!(own, commitment);
    assert_eq!(a.identity_of(&attacker.account()), Some(&own));
    assert_eq!(a.account_by_identity(&commitment), Some(patient.account()));
}
