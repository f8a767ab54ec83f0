//! The patient side, read-only: relationships (pending first of all), records, grants,
//! delegations, the audit trail, break-glass sessions to review, who can read a record, and
//! what a revocation would take away (a dry run). Every change a patient makes is a
//! transaction it signs itself ([`tx`](super::tx)).
//!
//! These routes answer from the chain's finalised state, which every consortium node holds;
//! they hold no record content and no identity (commitments only). Serve them where patients
//! reach them only through the hospital's own access control if its policy requires it.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use medledger::access::{
    AccessEvent, AccessState, DelegationId, GrantId, Identity, PointerId, RelationshipId,
    RelationshipStatus,
};
use medledger::hash::AccountId;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::tx::parse_id;
use super::{
    ApiError, AppState, AuditView, BreakGlassView, DelegationView, GrantView, LossView, Params,
    PointerView, ReaderView, RelationshipView,
};

/// The patient routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/patients/{account}/relationships", get(relationships))
        .route("/patients/{account}/records", get(records))
        .route("/patients/{account}/grants", get(grants))
        .route("/patients/{account}/delegations", get(delegations))
        .route("/patients/{account}/audit", get(audit))
        .route("/patients/{account}/break-glass", get(break_glass))
        .route("/records/{pointer}/readers", get(readers))
        .route(
            "/grants/{grant}/revocation-impact",
            get(grant_revocation_impact),
        )
        .route(
            "/delegations/{delegation}/revocation-impact",
            get(delegation_revocation_impact),
        )
}

/// Filter on relationships.
#[derive(Clone, Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelationshipFilter {
    /// Only those with this status (`pending`, `accepted`, `rejected`, `terminated`).
    pub status: Option<String>,
}

fn account(s: &str) -> Result<AccountId, ApiError> {
    parse_id("account", s)
}

/// What `each` lists for every relationship of patient `acct`, in the order they were opened.
async fn per_relationship<T, F>(
    state: &AppState,
    acct: &str,
    each: F,
) -> Result<Json<Vec<T>>, ApiError>
where
    T: Send + 'static,
    F: Fn(&AccessState, AccountId, &RelationshipId) -> Vec<T> + Send + 'static,
{
    let patient = account(acct)?;
    let views = state
        .node
        .read(move |access, _| {
            access
                .summary(&patient)
                .iter()
                .flat_map(|item| each(access, patient, &item.relationship))
                .collect()
        })
        .await?;
    Ok(Json(views))
}

/// The patient's relationships with their providers, in the order they were opened;
/// `?status=pending` lists those awaiting the patient's answer.
#[utoipa::path(get, path = "/patients/{account}/relationships",
    params(("account" = String, Path, description = "the patient's account"), RelationshipFilter),
    responses((status = 200, body = Vec<RelationshipView>), (status = 400, body = super::ErrorBody)))]
pub async fn relationships(
    State(state): State<AppState>,
    Path(acct): Path<String>,
    Params(filter): Params<RelationshipFilter>,
) -> Result<Json<Vec<RelationshipView>>, ApiError> {
    let patient = account(&acct)?;
    let wanted = match filter.status.as_deref() {
        None => None,
        Some(s) => Some(
            [
                RelationshipStatus::Pending,
                RelationshipStatus::Accepted,
                RelationshipStatus::Rejected,
                RelationshipStatus::Terminated,
            ]
            .into_iter()
            .find(|st| st.to_string() == s)
            .ok_or_else(|| ApiError::bad_request(format!("unknown status {s:?}")))?,
        ),
    };
    let views = state
        .node
        .read(move |access, _| {
            access
                .summary(&patient)
                .iter()
                .filter(|item| wanted.is_none_or(|w| item.status == w))
                .map(|item| {
                    let name = match access.identity_of(&item.counterparty) {
                        Some(Identity::Organisation(n)) => Some(n.as_str().to_string()),
                        _ => None,
                    };
                    RelationshipView::of(item, name)
                })
                .collect()
        })
        .await?;
    Ok(Json(views))
}

/// The record pointers on the patient's relationships (latest versions and earlier ones).
#[utoipa::path(get, path = "/patients/{account}/records",
    params(("account" = String, Path, description = "the patient's account")),
    responses((status = 200, body = Vec<PointerView>), (status = 400, body = super::ErrorBody)))]
pub async fn records(
    State(state): State<AppState>,
    Path(acct): Path<String>,
) -> Result<Json<Vec<PointerView>>, ApiError> {
    per_relationship(&state, &acct, |access, patient, relationship| {
        access
            .pointers_of(relationship)
            .into_iter()
            .filter(|p| p.patient == patient)
            .map(PointerView::from)
            .collect()
    })
    .await
}

/// Every grant on the patient's relationships, oldest first, with its revocation.
#[utoipa::path(get, path = "/patients/{account}/grants",
    params(("account" = String, Path, description = "the patient's account")),
    responses((status = 200, body = Vec<GrantView>), (status = 400, body = super::ErrorBody)))]
pub async fn grants(
    State(state): State<AppState>,
    Path(acct): Path<String>,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    per_relationship(&state, &acct, |access, patient, relationship| {
        access
            .grants_of(relationship)
            .into_iter()
            .filter(|g| g.patient == patient)
            .map(|g| GrantView::of(g, access.revocation(&g.id)))
            .collect()
    })
    .await
}

/// The patient's delegations, oldest first (from its audit trail).
#[utoipa::path(get, path = "/patients/{account}/delegations",
    params(("account" = String, Path, description = "the patient's account")),
    responses((status = 200, body = Vec<DelegationView>), (status = 400, body = super::ErrorBody)))]
pub async fn delegations(
    State(state): State<AppState>,
    Path(acct): Path<String>,
) -> Result<Json<Vec<DelegationView>>, ApiError> {
    let patient = account(&acct)?;
    let views = state
        .node
        .read(move |access, _| {
            access
                .audit_trail(&patient)
                .iter()
                .filter_map(|e| match e.event {
                    AccessEvent::DelegationCreated { delegation, .. } => {
                        access.delegation(&delegation)
                    }
                    _ => None,
                })
                .filter(|d| d.patient == patient)
                .map(DelegationView::from)
                .collect()
        })
        .await?;
    Ok(Json(views))
}

/// Where to start reading the audit trail.
#[derive(Clone, Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditFrom {
    /// The first position (default 0).
    pub from: Option<u64>,
}

/// The most audit entries one answer holds; ask again `?from=` the next position.
pub const MAX_AUDIT_PAGE: u64 = 1000;

/// The patient's audit trail from `?from=` (at most [`MAX_AUDIT_PAGE`] entries), oldest first:
/// every change that concerns the patient and every recorded read.
#[utoipa::path(get, path = "/patients/{account}/audit",
    params(("account" = String, Path, description = "the patient's account"), AuditFrom),
    responses((status = 200, body = Vec<AuditView>), (status = 400, body = super::ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    Path(acct): Path<String>,
    Params(from): Params<AuditFrom>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let patient = account(&acct)?;
    let first = from.from.unwrap_or(0);
    let views = state
        .node
        .read(move |access, _| {
            let end = access
                .audit_len(&patient)
                .min(first.saturating_add(MAX_AUDIT_PAGE));
            access
                .audit_trail_from(&patient, first)
                .into_iter()
                .take(end.saturating_sub(first) as usize)
                .map(AuditView::from)
                .collect()
        })
        .await?;
    Ok(Json(views))
}

/// Every break-glass session on the patient's records, oldest first, with whether it awaits
/// the patient's review.
#[utoipa::path(get, path = "/patients/{account}/break-glass",
    params(("account" = String, Path, description = "the patient's account")),
    responses((status = 200, body = Vec<BreakGlassView>), (status = 400, body = super::ErrorBody)))]
pub async fn break_glass(
    State(state): State<AppState>,
    Path(acct): Path<String>,
) -> Result<Json<Vec<BreakGlassView>>, ApiError> {
    let patient = account(&acct)?;
    let views = state
        .node
        .read(move |access, _| {
            access
                .break_glass_sessions(&patient)
                .into_iter()
                .map(BreakGlassView::from)
                .collect()
        })
        .await?;
    Ok(Json(views))
}

/// Who can read record `pointer` now, and on what basis.
#[utoipa::path(get, path = "/records/{pointer}/readers",
    params(("pointer" = String, Path, description = "the record pointer")),
    responses((status = 200, body = Vec<ReaderView>), (status = "4XX", body = super::ErrorBody)))]
pub async fn readers(
    State(state): State<AppState>,
    Path(pointer): Path<String>,
) -> Result<Json<Vec<ReaderView>>, ApiError> {
    let pointer: PointerId = parse_id("pointer", &pointer)?;
    let views = state
        .node
        .ask(move |node| {
            let now = node.now_secs();
            let chain = node.ledger().chain();
            chain.access().pointer(&pointer)?;
            Some(
                chain
                    .who_can_read(&pointer, now)
                    .iter()
                    .map(ReaderView::from)
                    .collect::<Vec<_>>(),
            )
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown pointer {pointer}")))?;
    Ok(Json(views))
}

fn losses(list: Vec<medledger::access::Loss>) -> Vec<LossView> {
    list.into_iter()
        .map(|l| LossView {
            viewer: l.viewer.to_string(),
            pointer: l.pointer.to_string(),
            action: l.action.to_string(),
            purpose: l.purpose.code().to_string(),
        })
        .collect()
}

/// What revoking grant `grant` now would take away (a dry run: nothing changes).
#[utoipa::path(get, path = "/grants/{grant}/revocation-impact",
    params(("grant" = String, Path, description = "the grant")),
    responses((status = 200, body = Vec<LossView>), (status = "4XX", body = super::ErrorBody)))]
pub async fn grant_revocation_impact(
    State(state): State<AppState>,
    Path(grant): Path<String>,
) -> Result<Json<Vec<LossView>>, ApiError> {
    let grant: GrantId = parse_id("grant", &grant)?;
    let list = state
        .node
        .read(move |access, now| {
            access.grant(&grant)?;
            Some(access.revocation_impact(&grant, now))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown grant {grant}")))?;
    Ok(Json(losses(list)))
}

/// What revoking delegation `delegation` now would take away, with its grants (a dry run).
#[utoipa::path(get, path = "/delegations/{delegation}/revocation-impact",
    params(("delegation" = String, Path, description = "the delegation")),
    responses((status = 200, body = Vec<LossView>), (status = "4XX", body = super::ErrorBody)))]
pub async fn delegation_revocation_impact(
    State(state): State<AppState>,
    Path(delegation): Path<String>,
) -> Result<Json<Vec<LossView>>, ApiError> {
    let delegation: DelegationId = parse_id("delegation", &delegation)?;
    let list = state
        .node
        .read(move |access, now| {
            access.delegation(&delegation)?;
            Some(access.delegation_revocation_impact(&delegation, now))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown delegation {delegation}")))?;
    Ok(Json(losses(list)))
}
