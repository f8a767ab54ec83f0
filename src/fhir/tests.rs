use fhir_model::r5::resources::{AuditEvent, Consent};
use serde_json::{json, Value};

use super::*;
use crate::access::tests::{reason, Cast, DAY};
use crate::access::{
    AccessOp, AccessRequest, Action, ActionSet, Basis, Category, CategorySet, GrantTerms, Period,
    PointerId, Provision, ProvisionKind, PurposeSet, RelationshipId, Scope, Viewer,
};
use crate::hash::AccountId;
use crate::purpose::PurposeOfUse::{self, *};

const T: u64 = 1_750_000_000;

fn parties() -> (AccountId, AccountId, AccountId) {
    (
        AccountId::from_bytes([4; 32]),
        AccountId::from_bytes([2; 32]),
        AccountId::from_bytes([5; 32]),
    )
}

/// Terms using every criterion, provisions listed depth first, one of them (1) of the kind
/// its depth does not imply.
fn rich_terms() -> GrantTerms {
    let (patient, hospital, doctor) = parties();
    GrantTerms {
        scope: Scope::Only {
            pointers: vec![
                PointerId::from_bytes([9; 32]),
                PointerId::from_bytes([8; 32]),
            ]
            .try_into()
            .unwrap(),
            categories: CategorySet::of(&[Category::Laboratory, Category::MentalHealth]),
        },
        ..GrantTerms::new(
            RelationshipId::of(patient, hospital),
            Viewer::Account(doctor),
            Scope::All,
            ActionSet::all(),
            PurposeSet::of(&[Treatment, Research, EmergencyTreatment]),
            Period::new(T, T + 30 * DAY).unwrap(),
        )
    }
    .with_provision(
        Provision::new(ProvisionKind::Deny)
            .with_categories(CategorySet::of(&[Category::MentalHealth])),
    )
    .with_provision(
        Provision::new(ProvisionKind::Deny)
            .under(0)
            .with_purposes(PurposeSet::of(&[Research]))
            .with_period(Period::new(T + DAY, T + 2 * DAY).unwrap()),
    )
    .with_provision(
        Provision::new(ProvisionKind::Permit)
            .under(0)
            .with_purposes(PurposeSet::of(&[Treatment]))
            .with_actions(ActionSet::of(&[Action::Read])),
    )
    .with_provision(
        Provision::new(ProvisionKind::Deny).with_data_period(Period::new(0, 946_684_800).unwrap()),
    )
}

fn export(terms: &GrantTerms) -> Value {
    let (patient, hospital, _) = parties();
    consent_json(patient, hospital, terms)
}

fn import(v: &Value) -> Result<ImportedGrant, ConsentImportError> {
    import_consent(v.to_string().as_bytes())
}

/// The exported Consent with `f` applied to it.
fn edited(f: impl FnOnce(&mut Value)) -> Value {
    let mut v = export(&rich_terms());
    f(&mut v);
    v
}

#[test]
fn exported_consents_parse_with_the_r5_model_and_import_back_to_equal_terms() {
    let terms = rich_terms();
    let v = export(&terms);
    let parsed: Consent = serde_json::from_value(v.clone()).expect("a valid R5 Consent");
    assert_eq!(parsed.provision.len(), 1);
    let imported = import(&v).unwrap();
    assert_eq!(imported.patient, parties().0);
    assert_eq!(imported.terms, terms);
    // The permit directly under a deny level carries its kind; the others follow R5's nesting.
    let root = &v["provision"][0];
    assert_eq!(v["decision"], "deny");
    assert!(root["provision"][0].get("modifierExtension").is_none());
    assert_eq!(
        root["provision"][0]["provision"][1].get("modifierExtension"),
        None,
        "a permit at depth 2 is what R5 implies"
    );
    let simple = GrantTerms {
        provisions: Default::default(),
        scope: Scope::All,
        ..terms
    }
    .with_provision(
        Provision::new(ProvisionKind::Permit).with_purposes(PurposeSet::of(&[Research])),
    );
    let v = export(&simple);
    assert_eq!(
        v["provision"][0]["provision"][0]["modifierExtension"],
        json!([{ "url": PROVISION_KIND_URL, "valueCode": "permit" }])
    );
    assert_eq!(import(&v).unwrap().terms, simple);
}

#[test]
fn every_purpose_maps_to_its_act_reason_code_both_ways() {
    for p in PurposeOfUse::ALL {
        let terms = GrantTerms {
            purposes: PurposeSet::of(&[p]),
            ..rich_terms()
        };
        let v = export(&terms);
        assert_eq!(
            v["provision"][0]["purpose"],
            json!([{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": p.code() }])
        );
        assert_eq!(import(&v).unwrap().terms.purposes, PurposeSet::of(&[p]));
    }
}

#[test]
fn every_category_has_a_code_that_imports_back() {
    for c in Category::ALL {
        let terms = GrantTerms {
            scope: Scope::categories(CategorySet::of(&[c])),
            ..rich_terms()
        };
        let v = export(&terms);
        assert_eq!(
            v["provision"][0]["code"][0]["coding"][0]["code"],
            category_code(c)
        );
        assert_eq!(import(&v).unwrap().terms.scope, terms.scope);
    }
}

#[test]
fn groups_are_viewers_by_their_identifier() {
    let terms = GrantTerms {
        viewer: Viewer::Group(crate::access::GroupId::from_bytes([7; 32])),
        ..rich_terms()
    };
    let v = export(&terms);
    assert_eq!(v["grantee"][0]["type"], "Group");
    assert_eq!(import(&v).unwrap().terms, terms);
}

#[test]
fn consents_of_a_patient_on_chain_are_active_until_revoked_and_enforce_alike_once_imported() {
    let mut c = Cast::new();
    let (rel, lab, mh) = c.with_records();
    let terms = GrantTerms {
        purposes: PurposeSet::of(&[Treatment, Research]),
        ..c.treat_terms(rel, 30)
    }
    .with_provision(
        Provision::new(ProvisionKind::Deny)
            .with_categories(CategorySet::of(&[Category::MentalHealth])),
    );
    let g = c.h.grant(&c.patient, terms.clone(), None);
    let patient = c.patient.account();
    let consents = consents_for_patient(c.h.access(), &patient);
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0]["id"], g.to_string());
    assert_eq!(consents[0]["status"], "active");
    let imported = import(&consents[0]).unwrap();
    assert_eq!(imported.patient, patient);
    // Revoke the original; the imported twin, signed by the patient, decides the same way.
    c.h.ok(
        &c.patient,
        AccessOp::RevokeGrant {
            grant: g,
            reason: reason("replaced by its FHIR twin"),
        },
    );
    let twin = c.h.grant(&c.patient, imported.terms.clone(), None);
    for (pointer, purpose, permit) in [
        (lab, Treatment, true),
        (lab, Research, true),
        (mh, Treatment, false),
        (lab, Payment, false),
    ] {
        let d =
            c.h.decide(&c.specialist, &c.patient, pointer, Action::Read, purpose);
        assert_eq!(d.is_permit(), permit, "{pointer:.8} {purpose}");
        if permit {
            assert_eq!(d.basis(), Some(Basis::Grant(twin)));
        }
    }
    let consents = consents_for_patient(c.h.access(), &patient);
    assert_eq!(consents.len(), 2);
    assert_eq!(consents[0]["status"], "inactive");
    assert_eq!(consents[1]["status"], "active");
    assert_eq!(
        import(&consents[0]),
        Err(ConsentImportError::NotActive("inactive".into()))
    );
    for v in consents {
        serde_json::from_value::<Consent>(v).expect("a valid R5 Consent");
    }
}

#[test]
fn access_receipts_export_as_audit_events_that_parse() {
    let mut c = Cast::new();
    let (rel, lab, _) = c.with_records();
    let g = c.h.grant(&c.patient, c.treat_terms(rel, 30), None);
    let req = AccessRequest::new(
        c.specialist.account(),
        c.patient.account(),
        lab,
        Action::Read,
        Treatment,
        c.h.time,
    );
    c.h.ok(
        &c.specialist,
        AccessOp::record_access(&req, Basis::Grant(g)),
    );
    let events = audit_events_for_patient(c.h.access(), &c.patient.account());
    assert_eq!(
        events.len(),
        1,
        "only receipts, not the other trail entries"
    );
    let e = &events[0];
    let parsed: AuditEvent = serde_json::from_value(e.clone()).expect("a valid R5 AuditEvent");
    assert_eq!(parsed.agent.len(), 1);
    assert_eq!(
        e["patient"]["identifier"]["value"],
        c.patient.account().to_string()
    );
    assert_eq!(
        e["agent"][0]["who"]["identifier"]["value"],
        c.specialist.account().to_string()
    );
    assert_eq!(
        e["entity"][0]["what"]["identifier"]["value"],
        lab.to_string()
    );
    assert_eq!(e["authorization"][0]["coding"][0]["code"], "TREAT");
    assert_eq!(e["outcome"]["code"]["code"], "0");
    assert_eq!(e["outcome"]["detail"][0]["coding"][0]["code"], "grant");
    assert_eq!(e["basedOn"][0]["identifier"]["value"], g.to_string());
    let recorded = c.h.access().access_receipts(&c.patient.account())[0]
        .at
        .time;
    assert_eq!(e["recorded"], super::time::instant(recorded));
}

#[test]
fn literal_references_need_the_directory() {
    let (patient, _, _) = parties();
    let v = edited(|v| v["subject"] = json!({ "reference": "Patient/example" }));
    assert_eq!(
        import(&v),
        Err(ConsentImportError::UnidentifiedActor {
            element: "subject",
            reference: "Patient/example".into()
        })
    );
    let directory = |r: &str| (r == "Patient/example").then_some(patient);
    let found = import_consent_with(v.to_string().as_bytes(), directory).unwrap();
    assert_eq!(found.terms, rich_terms());
    // An identifier of another system does not hide the literal reference beside it.
    let v = edited(|v| {
        v["subject"] = json!({
            "reference": "Patient/example",
            "identifier": { "system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "999999990" }
        })
    });
    let found = import_consent_with(v.to_string().as_bytes(), directory).unwrap();
    assert_eq!(found.patient, patient);
}

#[test]
fn an_oversized_input_is_refused_before_parsing() {
    let big = vec![b' '; MAX_CONSENT_JSON_LEN + 1];
    assert_eq!(
        import_consent(&big),
        Err(ConsentImportError::TooLarge {
            len: MAX_CONSENT_JSON_LEN + 1,
            max: MAX_CONSENT_JSON_LEN
        })
    );
    // At the limit it is parsed (and, being blank, is malformed).
    assert!(matches!(
        import_consent(&big[1..]),
        Err(ConsentImportError::Malformed(_))
    ));
}

#[test]
fn what_the_ledger_cannot_enforce_is_refused_with_its_reason() {
    use ConsentImportError as E;
    let other = json!({ "identifier": { "system": ACCOUNT_SYSTEM, "value": AccountId::from_bytes([66; 32]).to_string() } });
    let cases: Vec<(&str, Value, E)> = vec![
        (
            "not a consent",
            edited(|v| v["resourceType"] = "Patient".into()),
            E::NotAConsent("Patient".into()),
        ),
        (
            "R4 consent",
            edited(|v| v["patient"] = json!({ "reference": "Patient/1" })),
            E::NotR5 { element: "patient" },
        ),
        (
            "R4 provision object",
            edited(|v| v["provision"] = json!({ "type": "permit" })),
            E::NotR5 {
                element: "provision",
            },
        ),
        (
            "draft",
            edited(|v| v["status"] = "draft".into()),
            E::NotActive("draft".into()),
        ),
        (
            "permit by default",
            edited(|v| v["decision"] = "permit".into()),
            E::PermitByDefault,
        ),
        (
            "no decision",
            edited(|v| {
                v.as_object_mut().unwrap().remove("decision");
            }),
            E::NoDecision,
        ),
        (
            "policy only",
            edited(|v| {
                v.as_object_mut().unwrap().remove("provision");
            }),
            E::PolicyOnly,
        ),
        (
            "two grants",
            edited(|v| {
                let p = v["provision"][0].clone();
                v["provision"].as_array_mut().unwrap().push(p);
            }),
            E::SeveralProvisions(2),
        ),
        (
            "no subject",
            edited(|v| {
                v.as_object_mut().unwrap().remove("subject");
            }),
            E::NoSubject,
        ),
        (
            "subject not a patient",
            edited(|v| v["subject"] = json!({ "reference": "Practitioner/1" })),
            E::SubjectNotPatient("Practitioner".into()),
        ),
        (
            "another grantor",
            edited(|v| v["grantor"] = json!([other])),
            E::GrantorNotSubject,
        ),
        (
            "two recipients",
            edited(|v| v["grantee"] = json!([other])),
            E::SeveralRecipients,
        ),
        (
            "two custodians",
            edited(|v| v["controller"] = json!([other])),
            E::SeveralCustodians,
        ),
        (
            "no recipient",
            edited(|v| {
                v.as_object_mut().unwrap().remove("grantee");
                v["provision"][0]["actor"].as_array_mut().unwrap().remove(0);
            }),
            E::NoRecipient,
        ),
        (
            "no custodian",
            edited(|v| {
                v.as_object_mut().unwrap().remove("controller");
                v["provision"][0]["actor"].as_array_mut().unwrap().remove(1);
            }),
            E::NoCustodian,
        ),
        (
            "author role",
            edited(|v| v["provision"][0]["actor"][0]["role"]["coding"][0]["code"] = "AUT".into()),
            E::UnsupportedActorRole("AUT".into()),
        ),
        (
            "correct",
            edited(|v| v["provision"][0]["action"][0]["coding"][0]["code"] = "correct".into()),
            E::UnsupportedAction("correct".into()),
        ),
        (
            "unknown purpose",
            edited(|v| v["provision"][0]["purpose"][0]["code"] = "HDIRECT".into()),
            E::UnknownPurpose {
                system: PurposeOfUse::CODE_SYSTEM.into(),
                code: "HDIRECT".into(),
            },
        ),
        (
            "purpose of another system",
            edited(|v| v["provision"][0]["purpose"][0]["system"] = "urn:x".into()),
            E::UnknownPurpose {
                system: "urn:x".into(),
                code: "TREAT".into(),
            },
        ),
        (
            "no purpose",
            edited(|v| {
                v["provision"][0].as_object_mut().unwrap().remove("purpose");
            }),
            E::NoPurpose,
        ),
        (
            "unknown category",
            edited(|v| {
                v["provision"][0]["code"][0] =
                    json!({ "coding": [{ "system": "http://loinc.org", "code": "34133-9" }] })
            }),
            E::UnknownCategory {
                system: "http://loinc.org".into(),
                code: "34133-9".into(),
            },
        ),
        (
            "security label",
            edited(
                |v| v["provision"][0]["securityLabel"] = json!([{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY" }]),
            ),
            E::UnsupportedElement {
                element: "securityLabel",
                depth: 0,
            },
        ),
        (
            "nested resource type",
            edited(|v| {
                v["provision"][0]["provision"][0]["resourceType"] =
                    json!([{ "code": "MedicationRequest" }])
            }),
            E::UnsupportedElement {
                element: "resourceType",
                depth: 1,
            },
        ),
        (
            "root data period",
            edited(|v| v["provision"][0]["dataPeriod"] = json!({ "start": "2001-01-01" })),
            E::UnsupportedElement {
                element: "dataPeriod",
                depth: 0,
            },
        ),
        (
            "nested actor",
            edited(|v| {
                v["provision"][0]["provision"][0]["actor"] = json!([{ "reference": other }])
            }),
            E::UnsupportedElement {
                element: "actor naming another party",
                depth: 1,
            },
        ),
        (
            "related data",
            edited(|v| v["provision"][0]["data"][0]["meaning"] = "related".into()),
            E::UnsupportedDataMeaning("related".into()),
        ),
        (
            "foreign record",
            edited(|v| {
                v["provision"][0]["data"][0]["reference"] =
                    json!({ "reference": "MedicationRequest/medrx0305" })
            }),
            E::UnidentifiedData("MedicationRequest/medrx0305".into()),
        ),
        (
            "open end",
            edited(|v| {
                v["period"].as_object_mut().unwrap().remove("end");
            }),
            E::OpenPeriod("end"),
        ),
        (
            "disjoint periods",
            edited(|v| {
                v["provision"][0]["period"] = json!({ "start": "2001-01-01", "end": "2001-12-31" })
            }),
            E::EmptyPeriod,
        ),
        (
            "absolute subject URL of a practitioner",
            edited(|v| {
                v["subject"] = json!({ "reference": "https://fhir.example.org/r5/Practitioner/1" })
            }),
            E::SubjectNotPatient("Practitioner".into()),
        ),
        (
            "unknown modifier on a record",
            edited(|v| {
                v["provision"][0]["data"][0]["modifierExtension"] =
                    json!([{ "url": "urn:x:unless", "valueBoolean": true }])
            }),
            E::UnknownModifierExtension {
                url: "urn:x:unless".into(),
            },
        ),
        (
            "unknown modifier",
            edited(|v| {
                v["modifierExtension"] =
                    json!([{ "url": "urn:x:only-on-sundays", "valueBoolean": true }])
            }),
            E::UnknownModifierExtension {
                url: "urn:x:only-on-sundays".into(),
            },
        ),
    ];
    for (what, v, expected) in cases {
        assert_eq!(import(&v), Err(expected), "{what}");
    }
    let early = edited(|v| v["period"]["start"] = "1964-01-01".into());
    assert!(matches!(import(&early), Err(E::TimeOutOfRange(_))));
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    for input in [
        &b"not json"[..],
        br#"{"resourceType": "Consent"}"#,
        br#"{"resourceType": "Consent", "status": "approved"}"#,
        br#"[1, 2, 3]"#,
        br#"{"resourceType": "Consent", "status": "active", "provision": [{"period": {"start": "yesterday"}}]}"#,
    ] {
        let e = import_consent(input).unwrap_err();
        assert!(
            matches!(e, ConsentImportError::Malformed(_) | ConsentImportError::NotAConsent(_)),
            "{e}"
        );
    }
    // Deep nesting is bounded by the JSON parser, then by the ledger's depth.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(import_consent(deep.as_bytes()).is_err());
}

#[test]
fn limits_of_a_grant_are_refused_as_too_many() {
    let mut v = export(&rich_terms());
    let mut chain = json!({});
    for _ in 0..crate::access::MAX_PROVISION_DEPTH {
        chain = json!({ "provision": [chain] });
    }
    v["provision"][0]["provision"] = json!([chain]);
    assert!(matches!(
        import(&v),
        Err(ConsentImportError::TooMany {
            what: "levels of nested provisions",
            ..
        })
    ));
    let mut v = export(&rich_terms());
    let many: Vec<Value> = (0..=crate::access::MAX_PROVISIONS)
        .map(|_| json!({}))
        .collect();
    v["provision"][0]["provision"] = many.into();
    assert!(matches!(
        import(&v),
        Err(ConsentImportError::TooMany {
            what: "provisions",
            ..
        })
    ));
}

#[test]
fn errors_are_send_sync_static() {
    fn check<T: Send + Sync + 'static + std::error::Error>() {}
    check::<ConsentImportError>();
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::access::{EnumSet, SetMember, MAX_PROVISION_DEPTH};

    fn set<T: SetMember>(non_empty: bool) -> impl Strategy<Value = EnumSet<T>> {
        let n = T::ALL.len();
        proptest::collection::vec(0..n, usize::from(non_empty)..=n)
            .prop_map(|ix| ix.into_iter().map(|i| T::ALL[i]).collect())
    }

    fn period() -> impl Strategy<Value = Period> {
        (0u64..4_000_000_000, 1u64..400 * DAY).prop_map(|(s, d)| Period::new(s, s + d).unwrap())
    }

    fn pointers(max: usize) -> impl Strategy<Value = Vec<PointerId>> {
        proptest::collection::btree_set(any::<[u8; 32]>(), 0..=max)
            .prop_map(|s| s.into_iter().map(PointerId::from_bytes).collect())
    }

    /// Provisions listed depth first: each at most one level below the one before it.
    fn provisions() -> impl Strategy<Value = Vec<Provision>> {
        let one = (
            any::<bool>(),
            1usize..=MAX_PROVISION_DEPTH,
            pointers(3),
            set(false),
            set(false),
            set(false),
            proptest::option::of(period()),
            proptest::option::of(period()),
        );
        proptest::collection::vec(one, 0..=6).prop_map(|raw| {
            let mut out: Vec<Provision> = Vec::new();
            let mut path: Vec<u16> = Vec::new();
            for (deny, depth, ptrs, categories, actions, purposes, p, dp) in raw {
                let depth = depth.min(path.len() + 1);
                path.truncate(depth - 1);
                let kind = if deny {
                    ProvisionKind::Deny
                } else {
                    ProvisionKind::Permit
                };
                out.push(Provision {
                    kind,
                    parent: path.last().copied(),
                    pointers: ptrs.try_into().unwrap(),
                    categories,
                    actions,
                    purposes,
                    period: p,
                    data_period: dp,
                });
                path.push(u16::try_from(out.len() - 1).unwrap());
            }
            out
        })
    }

    fn terms() -> impl Strategy<Value = GrantTerms> {
        (
            any::<bool>(),
            pointers(5),
            set(false),
            set(true),
            set(true),
            period(),
            provisions(),
        )
            .prop_map(
                |(all, ptrs, categories, actions, purposes, period, provisions)| {
                    let (patient, hospital, doctor) = parties();
                    GrantTerms {
                        relationship: RelationshipId::of(patient, hospital),
                        viewer: Viewer::Account(doctor),
                        scope: if all || (ptrs.is_empty() && categories.is_empty()) {
                            Scope::All
                        } else {
                            Scope::Only {
                                pointers: ptrs.try_into().unwrap(),
                                categories,
                            }
                        },
                        actions,
                        purposes,
                        period,
                        provisions: provisions.try_into().unwrap(),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn any_grant_exports_to_a_consent_that_imports_back_to_it(terms in terms()) {
            let v = export(&terms);
            prop_assert!(serde_json::from_value::<Consent>(v.clone()).is_ok());
            prop_assert_eq!(import(&v).map(|g| g.terms), Ok(terms));
        }

        #[test]
        fn damaged_consents_are_refused_or_imported_never_a_panic(
            cut in 0usize..4000,
            flips in proptest::collection::vec((0usize..4000, any::<u8>()), 0..4),
        ) {
            let mut bytes = export(&rich_terms()).to_string().into_bytes();
            for (at, b) in flips {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            bytes.truncate(cut.max(1));
            let _ = import_consent(&bytes);
        }
    }
}
