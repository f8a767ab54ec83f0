//! The EMR side: the hospital's EMR pushes its events, and the node signs them with its own
//! provider key.
//!
//! Every route needs `Authorization: Bearer <token>`, the token in the node's
//! `api_token_file` (written by `init`, mode 0600); without a token file the routes answer 503.
//! The node's account must be a certified provider (the authority certifies it; `POST
//! /emr/register` registers its name). A patient registers itself (its own key signs the
//! registration): `POST /emr/patients` relays a registration the patient signed, for an EMR
//! that enrols patients at the front desk.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use medledger::access::{
    AccessOp, Category, Identity, Period, PointerId, Reason, RecordPointer, RelationshipId, Role,
};
use medledger::hash::{AccountId, Digest};
use medledger::Payload;
use serde::Deserialize;
use utoipa::ToSchema;

use super::tx::{accepted, parse_id, submit_as_node, submit_signed, SubmitRequest, SubmittedView};
use super::{ApiError, AppState, Body};

/// The EMR routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/emr/register", post(register_hospital))
        .route("/emr/patients", post(register_patient))
        .route("/emr/relationships", post(open_relationship))
        .route("/emr/relationships/{id}/terminate", post(terminate))
        .route("/emr/records", post(anchor_record))
        .route("/emr/records/{id}/versions", post(new_version))
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the bearer token.
pub(crate) fn authorise(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.emr_token else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "emr_api_off",
            "the EMR API is off: the node's configuration has no api_token_file",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send the node's API token as `Authorization: Bearer <token>`",
            )
        })?;
    if !same(given.trim().as_bytes(), token.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "the API token is not this node's",
        ));
    }
    Ok(())
}

/// The hospital's name.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterHospital {
    /// Its public name.
    pub name: String,
}

/// Registers the node's account as a provider with its public name.
#[utoipa::path(post, path = "/emr/register", request_body = RegisterHospital,
    security(("emr_token" = [])),
    responses((status = 202, body = SubmittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn register_hospital(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<RegisterHospital>,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    authorise(&state, &headers)?;
    let op = AccessOp::register_organisation(Role::Provider, &req.name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    submit_as_node(&state, op).await.map(accepted)
}

/// Relays a patient's own registration (signed by the patient's key): it must register a
/// patient's identity commitment.
#[utoipa::path(post, path = "/emr/patients", request_body = SubmitRequest,
    security(("emr_token" = [])),
    responses((status = 202, body = SubmittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn register_patient(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<SubmitRequest>,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    authorise(&state, &headers)?;
    let tx = req.transaction()?;
    if !matches!(
        &tx.body.payload,
        Payload::Access(AccessOp::Register {
            role: Role::Patient,
            identity: Identity::Commitment(_),
            ..
        })
    ) {
        return Err(ApiError::bad_request(
            "not a patient's registration (an identity commitment signed by the patient)",
        ));
    }
    submit_signed(&state, tx).await.map(accepted)
}

/// A relationship to open.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenRelationship {
    /// The patient's account.
    pub patient: String,
}

/// Opens a relationship with a patient (pending until the patient answers).
#[utoipa::path(post, path = "/emr/relationships", request_body = OpenRelationship,
    security(("emr_token" = [])),
    responses((status = 202, body = SubmittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn open_relationship(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<OpenRelationship>,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    authorise(&state, &headers)?;
    let patient: AccountId = parse_id("patient", &req.patient)?;
    submit_as_node(&state, AccessOp::CreateRelationship { patient })
        .await
        .map(accepted)
}

/// A record in the hospital's database.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordForm {
    /// The relationship (for a new record; a new version keeps its record's).
    #[serde(default)]
    pub relationship: Option<String>,
    /// Where the database finds it (at most 512 bytes).
    pub query: String,
    /// The record's content hash (`medledger::hash::content_hash` of its bytes), 64 hex digits.
    pub content_hash: String,
    /// Its category (`laboratory`, `imaging`, `clinical note`…).
    pub category: String,
    /// First second of the period its data covers.
    pub data_start: u64,
    /// First second after it.
    pub data_end: u64,
}

impl RecordForm {
    fn record(&self) -> Result<RecordPointer, ApiError> {
        let category = Category::ALL
            .into_iter()
            .find(|c| c.to_string() == self.category)
            .ok_or_else(|| {
                ApiError::bad_request(format!("unknown category {:?}", self.category))
            })?;
        Ok(RecordPointer {
            query: self.query.as_str().try_into().map_err(|_| {
                ApiError::bad_request(format!(
                    "query: at most {} bytes",
                    medledger::access::MAX_QUERY_LEN
                ))
            })?,
            content_hash: parse_id::<Digest>("content_hash", &self.content_hash)?,
            category,
            data_period: Period::new(self.data_start, self.data_end)
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        })
    }
}

/// Anchors a pointer to a new record, with its content hash, on a relationship.
#[utoipa::path(post, path = "/emr/records", request_body = RecordForm,
    security(("emr_token" = [])),
    responses((status = 202, body = SubmittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn anchor_record(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<RecordForm>,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    authorise(&state, &headers)?;
    let relationship: RelationshipId = parse_id(
        "relationship",
        req.relationship
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("relationship is required"))?,
    )?;
    let record = req.record()?;
    submit_as_node(
        &state,
        AccessOp::AddPointer {
            relationship,
            record,
            replaces: None,
        },
    )
    .await
    .map(accepted)
}

/// Anchors a new version of record `id` (same relationship and category).
#[utoipa::path(post, path = "/emr/records/{id}/versions", request_body = RecordForm,
    params(("id" = String, Path, description = "the pointer replaced")),
    security(("emr_token" = [])),
    responses((status = 202, body = SubmittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn new_version(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(req): Body<RecordForm>,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    authorise(&state, &headers)?;
    let replaces: PointerId = parse_id("pointer", &id)?;
    let record = req.record()?;
    let given = match &req.relationship {
        Some(r) => Some(parse_id::<RelationshipId>("relationship", r)?),
        None => None,
    };
    let relationship = state
        .node
        .ask(move |node| {
            node.ledger()
                .chain()
                .access()
                .pointer(&replaces)
                .map(|p| p.relationship)
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown pointer {replaces}")))?;
    if given.is_some_and(|g| g != relationship) {
        return Err(ApiError::bad_request(
            "a new version stays on its record's relationship",
        ));
    }
    submit_as_node(
        &state,
        AccessOp::AddPointer {
            relationship,
            record,
            replaces: Some(replaces),
        },
    )
    .await
    .map(accepted)
}

/// Why a relationship ends.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateForm {
    /// Why (recorded).
    pub reason: String,
}

/// Ends relationship `id` (its live grants are revoked, recorded).
#[utoipa::path(post, path = "/emr/relationships/{id}/terminate", request_body = TerminateForm,
    params(("id" = String, Path, description = "the relationship")),
    security(("emr_token" = [])),
    responses((status = 202, body = SubmittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn terminate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(req): Body<TerminateForm>,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    authorise(&state, &headers)?;
    let relationship: RelationshipId = parse_id("relationship", &id)?;
    let reason = Reason::try_from(req.reason.as_str()).map_err(|_| {
        ApiError::bad_request(format!(
            "reason: at most {} bytes",
            medledger::access::MAX_REASON_LEN
        ))
    })?;
    submit_as_node(
        &state,
        AccessOp::TerminateRelationship {
            relationship,
            reason,
        },
    )
    .await
    .map(accepted)
}
