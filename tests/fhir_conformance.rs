//! Conformance against HL7's published FHIR example resources (R4B and R5 Consent and
//! AuditEvent examples).
//!
//! The examples are not part of this repository: set `MEDLEDGER_FHIR_EXAMPLES` to a folder
//! holding them in `r4b/` and `r5/` (files `consent-*.json` and `auditevent-*.json`). Unset,
//! these tests say so and pass; set to a folder that is missing, they fail.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fhir_model::r5::resources::{AuditEvent, Consent};
use medledger::access::{
    AccessEvent, Action, ActionSet, AuditEntry, Basis, GrantId, PointerId, PurposeSet,
    RelationshipId, Scope, Stamp, Viewer,
};
use medledger::fhir::{
    audit_event_of, consent_json, import_consent, import_consent_with, ConsentImportError,
    ImportedGrant,
};
use medledger::hash::{content_hash, AccountId, TxId};
use medledger::purpose::PurposeOfUse;
use serde_json::{json, Value};

const VAR: &str = "MEDLEDGER_FHIR_EXAMPLES";

/// The examples folder, or `None` (after saying so) when the variable is unset.
fn examples() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os(VAR) else {
        eprintln!("skipped: {VAR} is not set (it names the folder of HL7's FHIR examples)");
        return None;
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.is_dir(),
        "{VAR}={} is not a folder: the FHIR examples are missing",
        dir.display()
    );
    Some(dir)
}

/// The files `release/prefix*.json`, by name.
fn files(dir: &std::path::Path, release: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let folder = dir.join(release);
    let entries = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", folder.display()));
    let out: BTreeMap<_, _> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".json")
        })
        .map(|p| {
            let name = format!("{release}/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    assert!(!out.is_empty(), "no {prefix}*.json in {}", folder.display());
    out
}

/// A directory a FHIR server might keep: every literal reference (`Patient/f001`) is some
/// ledger account, the same one each time.
fn directory(reference: &str) -> Option<AccountId> {
    Some(AccountId::from_bytes(
        *content_hash(reference.as_bytes()).as_bytes(),
    ))
}

fn import_resolved(json: &[u8]) -> Result<ImportedGrant, ConsentImportError> {
    import_consent_with(json, directory)
}

#[test]
fn every_example_consent_imports_or_is_refused_with_a_reason() {
    let Some(dir) = examples() else { return };
    use ConsentImportError as E;
    let mut outcomes = BTreeMap::new();
    for release in ["r5", "r4b"] {
        for (name, json) in files(&dir, release, "consent-") {
            let outcome = import_resolved(&json);
            match &outcome {
                Ok(g) => eprintln!("{name}: imported, a grant to {:?}", g.terms.viewer),
                Err(e) => eprintln!("{name}: refused: {e}"),
            }
            outcomes.insert(name, outcome);
        }
    }
    // Checked by hand against each example's narrative and R5's nesting rule.
    let expected = [
        // Opt-out directives: permit everything but some exceptions.
        ("r5/consent-example-CDA.json", E::PermitByDefault),
        ("r5/consent-example-Out.json", E::PermitByDefault),
        ("r5/consent-example-notAuthor.json", E::PermitByDefault),
        ("r5/consent-example-notThem.json", E::PermitByDefault),
        ("r5/consent-example-notThis.json", E::PermitByDefault),
        ("r5/consent-example-smartonfhir.json", E::PermitByDefault),
        // Deny by default, with an exception for whoever works at a custodian: no one viewer.
        ("r5/consent-example-Emergency.json", E::NoRecipient),
        ("r5/consent-example.json", E::NoRecipient),
        // Granted by someone other than the subject.
        ("r5/consent-example-grantor.json", E::GrantorNotSubject),
        // Data chosen by confidentiality labels, which records on the ledger do not carry.
        (
            "r5/consent-example-pkb.json",
            E::UnsupportedElement {
                element: "securityLabel",
                depth: 0,
            },
        ),
    ];
    for (name, error) in expected {
        assert_eq!(outcomes.get(name), Some(&Err(error)), "{name}");
    }
    for (name, outcome) in &outcomes {
        if name.starts_with("r4b/") {
            assert_eq!(
                outcome,
                &Err(E::NotR5 { element: "patient" }),
                "{name}: an R4B Consent is refused as such"
            );
        }
    }
    // Without a directory, FHIR server ids identify no one on the ledger.
    let strict = import_consent(
        &files(&dir, "r5", "consent-example-grantor")
            .into_values()
            .next()
            .unwrap(),
    );
    assert!(
        matches!(
            strict,
            Err(E::UnidentifiedActor {
                element: "subject",
                ..
            })
        ),
        "{strict:?}"
    );
}

/// The R5 grantor example as its narrative describes it: Roel himself gives Dr. Simone Heps
/// read-only access to the data at Blijdorp Medisch Centrum, for patient-requested use (the
/// example names another patient as grantor, and leaves the purpose and the period out).
fn grantor_example_as_narrated(dir: &std::path::Path) -> Value {
    let json = files(dir, "r5", "consent-example-grantor.json")
        .into_values()
        .next()
        .unwrap();
    let mut v: Value = serde_json::from_slice(&json).unwrap();
    v["grantor"] = json!([v["subject"].clone()]);
    v["provision"][0]["purpose"] = json!([{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "code": "PATRQT"
    }]);
    v["period"] = json!({ "start": "2018-12-24", "end": "2019-12-23" });
    v
}

/// What the ledger enforces of a Consent, read from the JSON itself: decision, actions,
/// purposes (as code sets).
fn codes(v: &Value, element: &str) -> Vec<String> {
    let mut out: Vec<String> = v["provision"][0][element]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let c = c.get("coding").map_or(c, |cs| &cs[0]);
            format!(
                "{}|{}",
                c["system"].as_str().unwrap(),
                c["code"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn an_imported_example_exports_back_to_an_equivalent_consent() {
    let Some(dir) = examples() else { return };
    let example = grantor_example_as_narrated(&dir);
    let imported = import_resolved(example.to_string().as_bytes()).expect("it imports");
    let patient = directory("Patient/f201").unwrap();
    let provider = directory("Organization/f203").unwrap();
    assert_eq!(imported.patient, patient);
    assert_eq!(
        imported.terms.relationship,
        RelationshipId::of(patient, provider)
    );
    assert_eq!(
        imported.terms.viewer,
        Viewer::Account(directory("Practitioner/f007").unwrap())
    );
    assert_eq!(imported.terms.scope, Scope::All);
    assert_eq!(imported.terms.actions, ActionSet::of(&[Action::Read]));
    assert_eq!(
        imported.terms.purposes,
        PurposeSet::of(&[PurposeOfUse::PatientRequest])
    );
    // 2018-12-24T00:00:00Z up to the end of 2019-12-23.
    assert_eq!(
        (imported.terms.period.start, imported.terms.period.end),
        (1_545_609_600, 1_577_145_600)
    );
    let exported = consent_json(imported.patient, provider, &imported.terms);
    serde_json::from_value::<Consent>(exported.clone()).expect("a valid R5 Consent");
    assert_eq!(exported["decision"], example["decision"]);
    assert_eq!(exported["status"], example["status"]);
    for element in ["action", "purpose"] {
        assert_eq!(
            codes(&exported, element),
            codes(&example, element),
            "{element}"
        );
    }
    assert_eq!(
        exported["provision"].as_array().unwrap().len(),
        example["provision"].as_array().unwrap().len()
    );
    // Everything enforceable survives: importing the export gives the same grant.
    assert_eq!(
        import_consent(exported.to_string().as_bytes()).unwrap(),
        imported
    );
}

/// Parses `v` with the model and writes it back: the same JSON means the model knew every
/// element (it ignores unknown ones) in the shape it was written. Instants compare by the
/// time they name (the model writes `09:49:00Z` as `09:49:00.000Z`).
fn assert_model_round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
    what: &str,
) {
    let parsed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{what} does not parse with the R5 model: {e}"));
    let back = serde_json::to_value(parsed).unwrap();
    assert!(same(v, &back), "{what}: the model reads\n{v}\nas\n{back}");
}

fn same(a: &Value, b: &Value) -> bool {
    use fhir_model::time::{format_description::well_known::Rfc3339, OffsetDateTime};
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            x == y
                || matches!(
                    (OffsetDateTime::parse(x, &Rfc3339), OffsetDateTime::parse(y, &Rfc3339)),
                    (Ok(p), Ok(q)) if p == q
                )
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same(p, q)))
        }
        _ => a == b,
    }
}

fn sample_receipt(basis: Basis) -> AuditEntry {
    AuditEntry {
        seq: 7,
        at: Stamp {
            height: 12,
            time: 1_750_000_600,
        },
        tx: TxId::from_bytes([3; 32]),
        actor: AccountId::from_bytes([5; 32]),
        event: AccessEvent::Accessed {
            patient: AccountId::from_bytes([4; 32]),
            viewer: AccountId::from_bytes([5; 32]),
            pointer: PointerId::from_bytes([9; 32]),
            action: Action::Disclose,
            purpose: PurposeOfUse::EmergencyTreatment,
            basis,
        },
    }
}

#[test]
fn our_consents_and_audit_events_parse_as_the_examples_do() {
    let Some(dir) = examples() else { return };
    for (name, json) in files(&dir, "r5", "consent-") {
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_model_round_trip::<Consent>(&v, &name);
    }
    for (name, json) in files(&dir, "r5", "auditevent-") {
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_model_round_trip::<AuditEvent>(&v, &name);
    }
    let example = grantor_example_as_narrated(&dir);
    let terms = import_resolved(example.to_string().as_bytes())
        .unwrap()
        .terms;
    let ours = consent_json(
        AccountId::from_bytes([4; 32]),
        AccountId::from_bytes([2; 32]),
        &terms,
    );
    assert_model_round_trip::<Consent>(&ours, "our Consent");
    for basis in [
        Basis::Patient,
        Basis::Custodian,
        Basis::Grant(GrantId::from_bytes([1; 32])),
        Basis::BreakGlass(medledger::access::BreakGlassId::from_bytes([2; 32])),
    ] {
        let event = audit_event_of(&sample_receipt(basis)).unwrap();
        assert_model_round_trip::<AuditEvent>(&event, &format!("our AuditEvent ({basis})"));
    }
}

#[test]
fn every_example_audit_event_is_read_by_its_release() {
    let Some(dir) = examples() else { return };
    for (name, json) in files(&dir, "r5", "auditevent-") {
        let parsed: Result<AuditEvent, _> = serde_json::from_slice(&json);
        eprintln!("{name}: parsed as R5");
        parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, json) in files(&dir, "r4b", "auditevent-") {
        // R4B's AuditEvent has no `code` (R5 requires one): the R5 model must not take it.
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert!(v.get("type").is_some() && v.get("code").is_none(), "{name}");
        let r5: Result<AuditEvent, _> = serde_json::from_value(v);
        assert!(r5.is_err(), "{name}: an R4B AuditEvent read as R5");
        eprintln!("{name}: R4B, refused by the R5 model");
    }
}
