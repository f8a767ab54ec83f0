//! Refusals of the web API: an HTTP status, a stable code and a message saying what was wrong.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use medledger::access::{AccessError, RefusalKind};
use medledger::ledger::Refusal;
use medledger::state::StateError;
use medledger::tx::TxError;
use medledger::MedRec;

use super::{ErrorBody, ErrorDetail};

/// A refused request: nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`bad_signature`, `stale_request`…).
    pub code: &'static str,
    /// What was wrong, for people.
    pub message: String,
}

impl ApiError {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    /// 404: no such object or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503: the node's loop is gone.
    pub fn node_stopped() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_stopped",
            "the node has stopped",
        )
    }

    /// The refusal of a body axum's JSON extractor rejected: too large (413), not JSON (415),
    /// or malformed (400).
    pub fn from_json(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let text = rejection.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "body_too_large",
                format!("the body is larger than {} bytes", super::MAX_BODY),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "not_json",
                "the body must be JSON (content-type: application/json)",
            ),
            _ => Self::bad_request(format!("malformed body: {text}")),
        }
    }

    /// The refusal of a transaction the ledger (or the engine) would not take.
    pub fn from_refusal(refusal: &Refusal<MedRec>) -> Self {
        let message = refusal.to_string();
        let (status, code) = match refusal {
            Refusal::Tx(TxError::BadSignature(_)) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            Refusal::Tx(_) => (StatusCode::BAD_REQUEST, "invalid_transaction"),
            Refusal::State(StateError::BadNonce { .. }) => (StatusCode::CONFLICT, "bad_nonce"),
            Refusal::State(StateError::KeyRetired { .. }) => (StatusCode::FORBIDDEN, "key_retired"),
            Refusal::State(StateError::App(e)) => access_status(e),
            Refusal::Duplicate(_) => (StatusCode::CONFLICT, "duplicate"),
            Refusal::PoolFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "pool_full"),
            Refusal::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "transaction_too_large"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
        };
        Self::new(status, code, message)
    }
}

/// The status and code of an access-control refusal, by its kind.
fn access_status(e: &AccessError) -> (StatusCode, &'static str) {
    match e.kind() {
        RefusalKind::Malformed => (StatusCode::UNPROCESSABLE_ENTITY, "malformed_operation"),
        RefusalKind::Unauthorised => (StatusCode::FORBIDDEN, "not_authorised"),
        RefusalKind::Unknown => (StatusCode::NOT_FOUND, "unknown_object"),
        RefusalKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        RefusalKind::Limit => (StatusCode::UNPROCESSABLE_ENTITY, "limit_reached"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl core::fmt::Display for ApiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}
