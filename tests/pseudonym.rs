//! User stories for dynamic pseudonyms.

use medledger::codec;
use medledger::hash::AccountId;
use medledger::pseudonym::generalize::{
    generalize_birth, generalize_zip, k_anonymity, AdministrativeGender, CivilDate,
    QuasiIdentifiers,
};
#[cfg(feature = "lab")]
use medledger::pseudonym::linkage::{LinkageBackend, LinkageExperiment, QuasiRelease};
use medledger::pseudonym::{
    Context, DerivedBackend, EpochSchedule, LinkStatement, PatientHandle, PatientSecret,
    PseudonymBackend, PseudonymError, Recipient, Scheme,
};
use medledger::purpose::PurposeOfUse;

const DAY: u64 = 24 * 3600;

/// A hospital (the custodian) publishes monthly research extracts under pseudonyms; the
/// patient's own app computes the same pseudonyms from the secret it holds; an auditor later
/// shreds the oldest month.
#[test]
fn monthly_research_extracts() -> Result<(), PseudonymError> {
    let schedule = EpochSchedule::builder()
        .origin(1_798_761_600) // 2027-01-01
        .window_secs(30 * DAY)
        .build()
        .expect("valid schedule");
    let study = Recipient::account(AccountId::from_bytes([0x51; 32]));

    // Enrolment: the patient's app makes the secret and hands the hospital's vault the key
    // tree derived from it; the vault never sees the secret itself.
    let alice_secret = PatientSecret::generate()?;
    let alice = PatientHandle::from_bytes([0xa1; 32]);
    let mut vault = DerivedBackend::new(Scheme::KeyedHash);
    vault.enroll_tree(alice, alice_secret.key_tree())?;
    for i in 0..50u8 {
        vault.enroll(PatientHandle::from_bytes([i; 32]))?;
    }

    let january = schedule
        .epoch_at(1_798_761_600 + 3 * DAY)
        .expect("after origin");
    let february = schedule
        .epoch_at(1_798_761_600 + 40 * DAY)
        .expect("after origin");
    let jan = Context::new(january, PurposeOfUse::Research, study);
    let feb = Context::new(february, PurposeOfUse::Research, study);

    let p_jan = vault.pseudonym(&alice, &jan)?;
    let p_feb = vault.pseudonym(&alice, &feb)?;
    assert_ne!(p_jan, p_feb);

    // The app computes them on its own.
    let tree = alice_secret.key_tree();
    assert_eq!(tree.epoch_key(january)?.pseudonym(&jan)?, p_jan);
    assert_eq!(tree.epoch_key(february)?.pseudonym(&feb)?, p_feb);

    // The extract is generalised before release.
    let on = CivilDate::new(2027, 2, 1).expect("date");
    let row = QuasiIdentifiers {
        birth: generalize_birth(CivilDate::new(1958, 11, 3).expect("date"), on)
            .expect("born before"),
        zip3: generalize_zip("02139").expect("zip"),
        gender: AdministrativeGender::Female,
    };
    assert_eq!(row.birth.to_string(), "1958");
    assert_eq!(row.zip3.to_string(), "021");
    assert_eq!(k_anonymity(&[row, row]), Some(2));

    // Relinking for the hospital's own follow-up (a 100% hit rate on what it issued).
    assert_eq!(vault.relink(&p_jan, &jan), Some(alice));
    let mut issued = Vec::new();
    for i in 0..50u8 {
        let h = PatientHandle::from_bytes([i; 32]);
        issued.push((h, vault.pseudonym(&h, &feb)?));
    }
    assert!(issued
        .iter()
        .all(|(h, p)| vault.relink(p, &feb) == Some(*h)));

    // Retention: January is shredded; it cannot be relinked nor re-issued, February can.
    let removed = vault.shred_epoch(january);
    assert_eq!(removed, 1);
    assert_eq!(vault.relink(&p_jan, &jan), None);
    assert_eq!(
        vault.pseudonym(&alice, &jan),
        Err(PseudonymError::EpochShredded { epoch: january })
    );
    assert_eq!(vault.relink(&p_feb, &feb), Some(alice));
    Ok(())
}

/// A patient proves to a meta-analysis that their records in two studies are theirs, without
/// saying who they are and without linking any other pseudonym.
#[test]
fn selective_linking_across_studies() -> Result<(), PseudonymError> {
    let mut vault = DerivedBackend::new(Scheme::Ed25519);
    let bob = PatientHandle::from_bytes([0xb0; 32]);
    vault.enroll(bob)?;
    let e = EpochSchedule::builder()
        .window_secs(7 * DAY)
        .build()
        .expect("valid")
        .epoch_at(1_800_000_000)
        .expect("after origin");
    let a = Context::new(e, PurposeOfUse::Research, Recipient::group("study a"));
    let b = Context::new(
        e,
        PurposeOfUse::ClinicalTrialResearch,
        Recipient::group("trial b"),
    );
    let meta = Recipient::group("meta-analysis");
    let statement =
        vault.link_statement(&bob, &a, &b, Context::new(e, PurposeOfUse::Research, meta))?;

    // Sent as bytes; the verifier knows only the two pseudonyms it holds.
    let bytes = codec::encode(&statement);
    let received: LinkStatement = codec::decode(&bytes).expect("canonical");
    let (pa, pb) = (vault.pseudonym(&bob, &a)?, vault.pseudonym(&bob, &b)?);
    assert!(received.links(&pa, &pb));
    assert_eq!(received.verify_for(&meta), Ok(()));
    assert!(received
        .verify_for(&Recipient::group("someone else"))
        .is_err());
    Ok(())
}

/// The auditor's linkage experiment at a small n (the example runs it at full size).
#[cfg(feature = "lab")]
#[test]
fn linkage_experiment_small_n() {
    for backend in [
        LinkageBackend::KeyedHash,
        LinkageBackend::Ed25519,
        LinkageBackend::RandomToken,
    ] {
        let report = LinkageExperiment::new(200, 25)
            .backend(backend)
            .release(QuasiRelease::SafeHarbor)
            .seed(11)
            .run()
            .expect("os randomness");
        let only = report.pseudonyms_only;
        assert_eq!(only.guesses, 200 * 25);
        assert!((only.baseline() - 1.0 / 200.0).abs() < 1e-12);
        // At chance: these fail with probability about 1e-6 under the null hypothesis.
        assert!(only.p_value() > 1e-6, "{report}");
        assert!(report.with_quasi_identifiers.p_value() > 1e-6, "{report}");
        // The Wilson interval is sane and contains the accuracy.
        let (lo, hi) = only.ci95();
        assert!(lo <= only.accuracy() && only.accuracy() <= hi);
    }
}
