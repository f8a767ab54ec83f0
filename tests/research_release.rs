//! Research data releases under research-window pseudonyms, end to end on a Proof-of-Work
//! chain: patients grant a study research access; the hospital (the custodian) releases data
//! in two windows; nothing on chain names a patient, yet the custodian relinks every subject
//! and an auditor verifies every subject's consent as of its release.

mod common;

use common::*;
use medledger::access::{
    prepare_release, AccessError, AccessEvent, AccessOp, Action, ActionSet, DenyReason, GrantId,
    GrantTerms, Period, PurposeSet, Release, ReleaseAuditError, ReleaseId, ReleasedSubject, Role,
    Scope, SubjectOpening, Viewer, MAX_RELEASE_SUBJECTS,
};
use medledger::hash::{AccountId, Digest};
use medledger::pseudonym::{
    DerivedBackend, Epoch, PatientHandle, Pseudonym, PseudonymBackend, Scheme,
};
use medledger::purpose::PurposeOfUse::{self, Research, Treatment};
use medledger::tx::Keypair;
use medledger::ChainError;

const PATIENTS: usize = 6;

struct Cast {
    authority: Keypair,
    hospital: Keypair,
    /// Registered as a provider, never certified.
    clinic: Keypair,
    researcher: Keypair,
    patients: Vec<Keypair>,
}

fn cast() -> Cast {
    Cast {
        authority: Keypair::from_seed(&[1; 32]),
        hospital: Keypair::from_seed(&[2; 32]),
        clinic: Keypair::from_seed(&[3; 32]),
        researcher: Keypair::from_seed(&[4; 32]),
        patients: (0..PATIENTS)
            .map(|i| Keypair::from_seed(&[100 + i as u8; 32]))
            .collect(),
    }
}

fn terms(c: &Cast, patient: &Keypair, purpose: PurposeOfUse, now: u64) -> GrantTerms {
    GrantTerms::new(
        relationship(patient, &c.hospital),
        Viewer::Account(c.researcher.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[purpose]),
        Period::lasting(now, 365 * DAY),
    )
}

/// Registration, relationships, and grants: every patient but the last grants the study
/// research reads; the last grants it treatment reads only. Returns the grants.
fn setup(c: &Cast) -> (Net, Vec<GrantId>) {
    let mut net = Net::new(&[("Regional Health Authority", &c.authority)]);
    let mut ops = vec![
        (
            &c.authority,
            AccessOp::CertifyProvider {
                provider: c.hospital.account(),
                emergency: false,
            },
        ),
        (
            &c.hospital,
            register_op(&c.hospital, Role::Provider, "St Mary's Hospital"),
        ),
        (
            &c.clinic,
            register_op(&c.clinic, Role::Provider, "Corner Clinic"),
        ),
        (
            &c.researcher,
            register_op(&c.researcher, Role::Researcher, "Cardiology Outcomes Study"),
        ),
    ];
    for (i, p) in c.patients.iter().enumerate() {
        ops.push((p, register_op(p, Role::Patient, &format!("NHS-{i}"))));
    }
    net.run(ops);
    let ops = c
        .patients
        .iter()
        .map(|p| {
            (
                &c.hospital,
                AccessOp::CreateRelationship {
                    patient: p.account(),
                },
            )
        })
        .collect();
    net.run(ops);
    let mut ops = Vec::new();
    for (i, p) in c.patients.iter().enumerate() {
        let purpose = if i + 1 == PATIENTS {
            Treatment
        } else {
            Research
        };
        ops.push((
            p,
            AccessOp::AcceptRelationship {
                relationship: relationship(p, &c.hospital),
            },
        ));
        ops.push((
            p,
            AccessOp::Grant {
                terms: terms(c, p, purpose, net.now),
                under: None,
            },
        ));
    }
    let txs = net.sign_all(ops);
    let grants = (0..PATIENTS)
        .map(|i| GrantId::of_tx(txs[2 * i + 1].id()))
        .collect();
    net.mine(3600, txs);
    (net, grants)
}

fn subjects_of(op: &AccessOp) -> Vec<ReleasedSubject> {
    match op {
        AccessOp::ReleaseResearchData { subjects, .. } => subjects.to_vec(),
        other => panic!("not a release: {other:?}"),
    }
}

/// Signs the release with the custodian and mines it alone in a block; returns its id.
fn publish(net: &mut Net, c: &Cast, op: AccessOp) -> ReleaseId {
    let tx = net.sign(&c.hospital, op);
    let id = ReleaseId::of_tx(tx.id());
    let events = net.mine(DAY, vec![tx]);
    assert!(matches!(
        events[..],
        [AccessEvent::ResearchDataReleased { release, custodian, .. }]
            if release == id && custodian == c.hospital.account()
    ));
    id
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn releases_are_unlinkable_on_chain_and_accountable_to_an_auditor() {
    let c = cast();
    let (mut net, grants) = setup(&c);
    let mut vault = DerivedBackend::new(Scheme::KeyedHash);
    for p in &c.patients {
        vault.enroll(PatientHandle::from(p.account())).unwrap();
    }
    let everyone: Vec<(AccountId, GrantId)> = c
        .patients
        .iter()
        .zip(&grants)
        .map(|(p, g)| (p.account(), *g))
        .collect();
    let (w1, w2) = (Epoch::new(10), Epoch::new(11));
    let researcher = c.researcher.account();

    // Window 1: everyone, the last patient relying on a treatment-only grant.
    let first = prepare_release(
        &mut vault,
        researcher,
        w1,
        Digest::from_bytes([0xd1; 32]),
        &everyone,
    )
    .unwrap();
    let r1 = publish(&mut net, &c, first.op.clone());

    // Window 1 again, a second data set for two patients: the same pseudonyms.
    let again = prepare_release(
        &mut vault,
        researcher,
        w1,
        Digest::from_bytes([0xd2; 32]),
        &everyone[..2],
    )
    .unwrap();
    let r1b = publish(&mut net, &c, again.op.clone());

    // Patient 3 withdraws from the study; window 2 releases the research patients.
    net.run_after(
        7 * DAY,
        vec![(
            &c.patients[3],
            AccessOp::RevokeGrant {
                grant: grants[3],
                reason: "withdrawn from the study".try_into().unwrap(),
            },
        )],
    );
    let revoked_at = net.chain.height();
    let second = prepare_release(
        &mut vault,
        researcher,
        w2,
        Digest::from_bytes([0xd3; 32]),
        &everyone[..PATIENTS - 1],
    )
    .unwrap();
    let r2 = publish(&mut net, &c, second.op.clone());

    let access = net.chain.access();
    let releases: Vec<(&Release, &[SubjectOpening])> = [
        (r1, &first.openings[..]),
        (r1b, &again.openings[..]),
        (r2, &second.openings[..]),
    ]
    .into_iter()
    .map(|(id, o)| (access.release(&id).unwrap(), o))
    .collect();
    assert_eq!(access.releases_to(&researcher).len(), 3);

    // Nothing on chain names a patient: neither the release records nor the blocks' bytes.
    for (r, _) in &releases {
        let hash = net.chain.hash_at(r.at.height).unwrap();
        let block = net.chain.block(&hash).unwrap().unwrap().encode();
        for p in &c.patients {
            assert!(!contains(&block, p.account().as_bytes()));
        }
    }
    for (r, _) in &releases {
        let bytes = format!("{r:?}");
        let mut encoded = Vec::new();
        medledger::codec::encode_into(r, &mut encoded);
        for p in &c.patients {
            assert!(!contains(&encoded, p.account().as_bytes()));
            assert!(!bytes.contains(&p.account().to_string()));
        }
    }

    // Pseudonyms: stable within a window, different across windows.
    let pseudonym_of = |r: &Release, openings: &[SubjectOpening], patient: AccountId| {
        openings
            .iter()
            .position(|o| o.patient == patient)
            .map(|i| r.subjects[i].pseudonym)
    };
    for p in &c.patients[..2] {
        let a = pseudonym_of(releases[0].0, releases[0].1, p.account()).unwrap();
        let b = pseudonym_of(releases[1].0, releases[1].1, p.account()).unwrap();
        let d = pseudonym_of(releases[2].0, releases[2].1, p.account()).unwrap();
        assert_eq!(a, b, "stable within a window");
        assert_ne!(a, d, "unrelated across windows");
    }
    let w1_set: Vec<Pseudonym> = releases[0].0.subjects.iter().map(|s| s.pseudonym).collect();
    assert!(releases[2]
        .0
        .subjects
        .iter()
        .all(|s| !w1_set.contains(&s.pseudonym)));

    // The custodian relinks every subject through its vault.
    let mut relinked = 0;
    let mut total = 0;
    for (r, openings) in &releases {
        for (s, o) in r.subjects.iter().zip(openings.iter()) {
            total += 1;
            if vault.relink(&s.pseudonym, &r.context()) == Some(PatientHandle::from(o.patient)) {
                relinked += 1;
            }
        }
    }
    assert_eq!(total, PATIENTS + 2 + PATIENTS - 1);
    assert_eq!(relinked, total, "the custodian relinks every subject");

    // The auditor verifies every subject's consent as of its release.
    let last = c.patients[PATIENTS - 1].account();
    let withdrawn = c.patients[3].account();
    for (r, openings) in &releases {
        for (i, o) in openings.iter().enumerate() {
            let verdict = access.verify_released_subject(&r.id, i, o);
            let expected = if o.patient == last {
                Err(ReleaseAuditError::ConsentDoesNotHold(
                    DenyReason::PurposeNotAllowed {
                        grant: o.grant,
                        purpose: Research,
                    },
                ))
            } else if o.patient == withdrawn && r.id == r2 {
                Err(ReleaseAuditError::ConsentDoesNotHold(DenyReason::Revoked {
                    grant: o.grant,
                    height: revoked_at,
                }))
            } else {
                Ok(())
            };
            assert_eq!(verdict, expected, "release {} subject {i}", r.id);
        }
    }
    // The withdrawn patient's window-1 consent still held when it was used.
    let i = releases[0]
        .1
        .iter()
        .position(|o| o.patient == withdrawn)
        .unwrap();
    assert_eq!(
        access.verify_released_subject(&r1, i, &releases[0].1[i]),
        Ok(())
    );

    // A patient recomputes their pseudonym and finds their own entries; nobody else can.
    let p0 = PatientHandle::from(c.patients[0].account());
    let mine = vault.pseudonym(&p0, &releases[0].0.context()).unwrap();
    let found = access.find_released_subject(&researcher, w1, &mine);
    assert_eq!(
        found.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [r1, r1b]
    );
    assert!(access
        .find_released_subject(&researcher, w2, &mine)
        .is_empty());

    // Replay from genesis agrees with the tip.
    assert_eq!(
        net.chain.replay_state().unwrap().root(),
        net.chain.tip_header().state_root
    );
}

#[test]
fn refused_releases_change_nothing() {
    let c = cast();
    let (mut net, grants) = setup(&c);
    let mut vault = DerivedBackend::new(Scheme::KeyedHash);
    for p in &c.patients {
        vault.enroll(PatientHandle::from(p.account())).unwrap();
    }
    let subjects = [
        (c.patients[0].account(), grants[0]),
        (c.patients[1].account(), grants[1]),
    ];
    let make = |vault: &mut DerivedBackend, recipient| {
        prepare_release(
            vault,
            recipient,
            Epoch::new(1),
            Digest::from_bytes([0xd5; 32]),
            &subjects,
        )
        .unwrap()
        .op
    };
    let op = make(&mut vault, c.researcher.account());

    // An uncertified signer.
    assert_eq!(
        net.refuse(&c.clinic, op.clone()),
        AccessError::NotCertified(c.clinic.account())
    );
    // A recipient that is not a researcher.
    let to_clinic = make(&mut vault, c.clinic.account());
    assert!(matches!(
        net.refuse(&c.hospital, to_clinic),
        AccessError::WrongRole {
            expected: Role::Researcher,
            found: Role::Provider,
            ..
        }
    ));
    // A duplicate pseudonym.
    let mut dup = subjects_of(&op);
    dup[1] = dup[0];
    let dup = AccessOp::ReleaseResearchData {
        recipient: c.researcher.account(),
        epoch: Epoch::new(1),
        dataset: Digest::from_bytes([0xd5; 32]),
        subjects: dup.try_into().unwrap(),
    };
    assert_eq!(
        net.refuse(&c.hospital, dup),
        AccessError::Duplicate("released subjects")
    );

    // An oversize list cannot be built, and a block carrying one does not decode.
    let full: Vec<ReleasedSubject> = (0..MAX_RELEASE_SUBJECTS)
        .map(|i| ReleasedSubject {
            pseudonym: Pseudonym::from_bytes([i as u8; 32]),
            ..subjects_of(&op)[0]
        })
        .collect();
    let mut over = full.clone();
    over.push(over[0]);
    assert!(
        medledger::codec::BoundedVec::<ReleasedSubject, MAX_RELEASE_SUBJECTS>::try_from(over)
            .is_err()
    );
    let full_op = AccessOp::ReleaseResearchData {
        recipient: c.researcher.account(),
        epoch: Epoch::new(1),
        dataset: Digest::from_bytes([0xd5; 32]),
        subjects: full.try_into().unwrap(),
    };
    let before = net.snapshot();
    let block = net.forced_block(60, vec![net.sign(&c.hospital, full_op)]);
    let mut bytes = block.encode();
    // The list's length (a varint, 128 = 0x80 0x01) follows the data set's digest; make it
    // 129 and append one more subject after the last.
    let marker = [0xd5; 32];
    let at = bytes
        .windows(32)
        .position(|w| w == marker)
        .expect("the data set digest is in the block")
        + 32;
    assert_eq!(&bytes[at..at + 2], &[0x80, 0x01]);
    bytes[at] = 0x81;
    let end = at + 2 + MAX_RELEASE_SUBJECTS * 64;
    let extra = bytes[at + 2..at + 2 + 64].to_vec();
    bytes.splice(end..end, extra);
    assert!(matches!(
        net.chain.append_bytes(&bytes),
        Err(ChainError::Decode(_))
    ));
    assert_eq!(net.snapshot(), before);

    // The well-formed release still goes through afterwards.
    publish(&mut net, &c, op);
    assert_eq!(
        net.chain.replay_state().unwrap().root(),
        net.chain.tip_header().state_root
    );
}
