//! Access receipts as FHIR R5 AuditEvents.

use serde_json::{json, Value};

use super::consent::{account_ref, coding, concept, identified};
use super::time::instant;
use super::{
    BASIS_SYSTEM, CONSENT_ACTION_SYSTEM, GRANT_SYSTEM, PARTICIPATION_SYSTEM, POINTER_SYSTEM,
    TX_SYSTEM,
};
use crate::access::{AccessEvent, AccessState, Action, AuditEntry, Basis};
use crate::hash::AccountId;
use crate::purpose::PurposeOfUse;

const OBJECT_ROLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const OUTCOME_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/audit-event-outcome";

fn basis_detail(basis: &Basis) -> Value {
    let code = match basis {
        Basis::Patient => "patient",
        Basis::Custodian => "custodian",
        Basis::Grant(_) => "grant",
        Basis::BreakGlass(_) => "break-glass",
    };
    json!({
        "coding": [coding(BASIS_SYSTEM, code)],
        "text": format!("permitted: {basis}"),
    })
}

/// The access receipt in `entry` as an R5 AuditEvent; `None` if the entry is not a receipt
/// ([`AccessEvent::Accessed`]).
pub fn audit_event_of(entry: &AuditEntry) -> Option<Value> {
    let AccessEvent::Accessed {
        patient,
        viewer,
        pointer,
        action,
        purpose,
        basis,
    } = &entry.event
    else {
        return None;
    };
    let action_code = match action {
        Action::Read => "access",
        Action::Disclose => "disclose",
    };
    let when = instant(entry.at.time);
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": entry.tx.to_string(),
        "category": [concept("http://dicom.nema.org/resources/ontology/DCM", "110110")],
        "code": concept(CONSENT_ACTION_SYSTEM, action_code),
        "action": "R",
        "occurredDateTime": when,
        "recorded": when,
        "outcome": {
            "code": coding(OUTCOME_SYSTEM, "0"),
            "detail": [basis_detail(basis)],
        },
        "authorization": [concept(PurposeOfUse::CODE_SYSTEM, purpose.code())],
        "patient": account_ref(*patient, Some("Patient")),
        "agent": [{
            "type": concept(PARTICIPATION_SYSTEM, "IRCP"),
            "who": account_ref(*viewer, None),
            "requestor": true,
            "authorization": [concept(PurposeOfUse::CODE_SYSTEM, purpose.code())],
        }],
        "source": { "observer": account_ref(entry.actor, None) },
        "entity": [
            { "what": identified(POINTER_SYSTEM, pointer, None), "role": concept(OBJECT_ROLE_SYSTEM, "4") },
            { "what": account_ref(*patient, Some("Patient")), "role": concept(OBJECT_ROLE_SYSTEM, "1") },
            { "what": identified(TX_SYSTEM, entry.tx, None), "role": concept(OBJECT_ROLE_SYSTEM, "4") },
        ],
    });
    if let (Basis::Grant(g), Value::Object(e)) = (basis, &mut event) {
        e.insert(
            "basedOn".into(),
            json!([identified(GRANT_SYSTEM, g, Some("Consent"))]),
        );
    }
    Some(event)
}

/// Every access receipt in `patient`'s audit trail, oldest first, as R5 AuditEvents.
pub fn audit_events_for_patient(state: &AccessState, patient: &AccountId) -> Vec<Value> {
    state
        .access_receipts(patient)
        .into_iter()
        .filter_map(audit_event_of)
        .collect()
}
