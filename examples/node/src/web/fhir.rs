//! FHIR R5 search on the ledger's consents and receipts: `GET /fhir/Consent?patient=…` gives
//! every grant the patient made as a Consent, `GET /fhir/AuditEvent?patient=…` every recorded
//! read of its records as an AuditEvent, each as a `searchset` Bundle (the mappings are the
//! library's, `medledger::fhir`). `patient` is the patient's ledger account (hex), as the
//! library's identifiers name it (`urn:medledger:account`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use medledger::access::AccessState;
use medledger::hash::AccountId;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use super::tx::parse_id;
use super::{ApiError, AppState, Params};

/// The FHIR routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/fhir/Consent", get(consents))
        .route("/fhir/AuditEvent", get(audit_events))
}

/// The one search parameter these routes take.
#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PatientSearch {
    /// The patient's ledger account (hex).
    pub patient: String,
}

/// Every grant the patient (or its delegates) made, as R5 Consents in a `searchset` Bundle;
/// revoked grants are `inactive`.
#[utoipa::path(get, path = "/fhir/Consent", params(PatientSearch),
    responses((status = 200, description = "a FHIR R5 Bundle of Consents", content_type = "application/fhir+json"),
              (status = 400, body = super::ErrorBody)))]
pub async fn consents(
    State(state): State<AppState>,
    Params(search): Params<PatientSearch>,
) -> Result<Response, ApiError> {
    search_bundle(&state, &search, medledger::fhir::consents_for_patient).await
}

/// Every recorded read of the patient's records, oldest first, as R5 AuditEvents in a
/// `searchset` Bundle.
#[utoipa::path(get, path = "/fhir/AuditEvent", params(PatientSearch),
    responses((status = 200, description = "a FHIR R5 Bundle of AuditEvents", content_type = "application/fhir+json"),
              (status = 400, body = super::ErrorBody)))]
pub async fn audit_events(
    State(state): State<AppState>,
    Params(search): Params<PatientSearch>,
) -> Result<Response, ApiError> {
    search_bundle(&state, &search, medledger::fhir::audit_events_for_patient).await
}

/// The resources `find` gives for the searched patient, as a Bundle.
async fn search_bundle(
    state: &AppState,
    search: &PatientSearch,
    find: fn(&AccessState, &AccountId) -> Vec<Value>,
) -> Result<Response, ApiError> {
    let patient: AccountId = parse_id("patient", &search.patient)?;
    let resources = state
        .node
        .read(move |access, _| find(access, &patient))
        .await?;
    Ok(bundle(resources))
}

/// A `searchset` Bundle of `resources`, served as `application/fhir+json`.
fn bundle(resources: Vec<Value>) -> Response {
    let body = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": resources.len(),
        "entry": resources
            .into_iter()
            .map(|r| json!({ "resource": r, "search": { "mode": "match" } }))
            .collect::<Vec<_>>(),
    });
    (
        [(header::CONTENT_TYPE, "application/fhir+json")],
        Json(body),
    )
        .into_response()
}
