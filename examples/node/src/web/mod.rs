//! The node's web API (axum) and the patient portal it serves.
//!
//! Three kinds of client use it:
//!
//! * an **EMR** of the hospital running the node ([`emr`]): authenticated with the bearer token
//!   of the node's configuration; the node signs its operations with its own provider key;
//! * a **viewer's gatekeeper** ([`gate`]): a signed, fresh, never-replayed access request is
//!   answered with the decision and its reason, and a permitted read gets its receipt recorded;
//! * a **patient** ([`patient`], [`portal`]): reads what concerns it, and changes things only by
//!   transactions it signs itself ([`tx`]: unsigned templates, signed submissions) — its key
//!   never reaches the server;
//! * the **research roles** ([`research`]): a hospital commits its reports for a research
//!   query, an aggregator's node takes them, verifies and aggregates them with the other
//!   aggregator and serves its noised share to the study's researcher.
//!
//! Every route is a module's `routes()`, merged by [`router`]; a new family of routes (FHIR
//! resources, [`fhir`]) is one more module with its own `routes()` and its handlers listed in
//! [`ApiDoc`]. Every body is JSON, at most [`MAX_BODY`] bytes; every refusal is an
//! [`ApiError`]: an HTTP status and `{"error": {"code", "message"}}`, and nothing changed.
//!
//! The API runs on a thread of its own ([`serve`]) with its own tokio runtime, and reaches the
//! node's ledger through [`NodeHandle`]: each request's work runs on the node's loop, between
//! consensus events, as a [`crate::node::NodeJob`].

pub mod emr;
mod error;
pub mod fhir;
pub mod gate;
pub mod local;
pub mod patient;
pub mod portal;
pub mod research;
pub mod tx;
mod views;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::routing::get;
use axum::{Json, Router};
use commonware_utils::channel::{mpsc, oneshot};
use medledger::access::AccessState;
use medledger::hash::ChainId;
use medledger::tx::Keypair;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

pub use error::ApiError;
pub use views::*;

use crate::config::Result;
use crate::node::{NodeAccess, NodeJob};

/// The largest request body, bytes: a signed transaction in hex (at most
/// 2 × [`MAX_TX_LEN`](medledger::tx::MAX_TX_LEN)) with room for its JSON.
pub const MAX_BODY: usize = 64 * 1024;

/// How far an access request's `issued_at` may lie from the node's clock, by default, seconds.
pub const DEFAULT_GATE_WINDOW_SECS: u64 = 60;

/// The way into the node's loop.
#[derive(Clone)]
pub struct NodeHandle {
    jobs: mpsc::UnboundedSender<NodeJob>,
}

impl NodeHandle {
    /// A handle sending jobs on `jobs` (the node runs them: see
    /// [`run_with_jobs`](crate::node::run_with_jobs)).
    pub fn new(jobs: mpsc::UnboundedSender<NodeJob>) -> Self {
        Self { jobs }
    }

    /// Runs `work` on the node's loop and returns what it returned.
    ///
    /// # Errors
    ///
    /// [`ApiError`] 503 if the node has stopped.
    pub async fn ask<T, F>(&self, work: F) -> std::result::Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn NodeAccess) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: NodeJob = Box::new(move |node| {
            let _ = tx.send(work(node));
        });
        self.jobs.send(job).map_err(|_| ApiError::node_stopped())?;
        rx.await.map_err(|_| ApiError::node_stopped())
    }

    /// Reads the node's finalised access state on its loop: `view` gets the state and the
    /// node's clock (Unix seconds) and returns the answer.
    ///
    /// # Errors
    ///
    /// [`ApiError`] 503 if the node has stopped.
    pub async fn read<T, F>(&self, view: F) -> std::result::Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&AccessState, u64) -> T + Send + 'static,
    {
        self.ask(move |node| {
            let now = node.now_secs();
            view(node.ledger().chain().access(), now)
        })
        .await
    }

    /// [`ask`](Self::ask) from a thread that is not running async code.
    ///
    /// # Errors
    ///
    /// A message if the node has stopped.
    pub fn ask_blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn NodeAccess) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: NodeJob = Box::new(move |node| {
            let _ = tx.send(work(node));
        });
        self.jobs.send(job).map_err(|_| "the node has stopped")?;
        Ok(rx.blocking_recv().map_err(|_| "the node has stopped")?)
    }
}

/// What the web API needs besides the node.
pub struct WebConfig {
    /// The node's key: it signs the EMR side's operations as the hospital's provider account.
    pub provider: Keypair,
    /// The chain id (covered by access-request signatures).
    pub chain_id: ChainId,
    /// The bearer token EMRs present; `None` turns the EMR routes off.
    pub emr_token: Option<String>,
    /// How far an access request's `issued_at` may lie from the node's clock, seconds.
    pub gate_window_secs: u64,
    /// The node's research aggregator keys; `None` turns the aggregator routes off.
    pub research: Option<research::ResearchKeys>,
}

/// The state every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The node.
    pub node: NodeHandle,
    /// The node's key, signing for the hospital.
    pub provider: Arc<Keypair>,
    /// The chain id.
    pub chain_id: ChainId,
    emr_token: Option<Arc<zeroize::Zeroizing<String>>>,
    gate: Arc<Mutex<gate::Gate>>,
    research: Option<Arc<Mutex<research::Desk>>>,
}

impl AppState {
    /// The shared state of a web API in front of `node`.
    pub fn new(node: NodeHandle, config: WebConfig) -> Self {
        Self {
            node,
            provider: Arc::new(config.provider),
            chain_id: config.chain_id,
            emr_token: config
                .emr_token
                .map(|t| Arc::new(zeroize::Zeroizing::new(t))),
            gate: Arc::new(Mutex::new(gate::Gate::new(config.gate_window_secs))),
            research: config.research.map(|keys| {
                Arc::new(Mutex::new(research::Desk::new(
                    keys,
                    config.gate_window_secs,
                )))
            }),
        }
    }
}

/// The OpenAPI document of every route, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "medledger node web API",
        description = "EMR push API, signed-request gatekeeper and patient API of a medledger consortium node."
    ),
    paths(
        status,
        tx::template,
        tx::submit,
        tx::status_of,
        emr::register_hospital,
        emr::register_patient,
        emr::open_relationship,
        emr::anchor_record,
        emr::new_version,
        emr::terminate,
        gate::access,
        gate::receipt,
        patient::relationships,
        patient::records,
        patient::grants,
        patient::delegations,
        patient::audit,
        patient::break_glass,
        patient::readers,
        patient::grant_revocation_impact,
        patient::delegation_revocation_impact,
        fhir::consents,
        fhir::audit_events,
        research::commit,
        research::key,
        research::reports,
        research::desk_status,
        research::aggregate,
        research::verify,
        research::finalize,
        research::share,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "emr_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole API: every module's routes, `/status`, `/openapi.json`, a JSON 404, and the body
/// limit.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/openapi.json", get(openapi))
        .merge(tx::routes())
        .merge(emr::routes())
        .merge(gate::routes())
        .merge(patient::routes())
        .merge(fhir::routes())
        .merge(research::routes())
        .merge(portal::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The node's chain: height, tip, chain id, its provider account, pending transactions.
#[utoipa::path(get, path = "/status", responses((status = 200, body = StatusView)))]
pub async fn status(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> std::result::Result<Json<StatusView>, ApiError> {
    let provider = state.provider.account();
    let chain_id = state.chain_id;
    let view = state
        .node
        .ask(move |node| {
            let ledger = node.ledger();
            let chain = ledger.chain();
            StatusView {
                chain_id: chain_id.to_string(),
                height: chain.height(),
                tip: chain.tip().to_string(),
                time: chain.tip_time(),
                provider: provider.to_string(),
                pending: ledger.pending(),
                now: node.now_secs(),
            }
        })
        .await?;
    Ok(Json(view))
}

/// Serves `router(state)` at `addr` on a thread of its own (with its own tokio runtime) and
/// returns the bound address (`addr` with port 0 picks a free port).
///
/// # Errors
///
/// If the address cannot be bound.
pub fn serve(addr: SocketAddr, state: AppState) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("http {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("medledger-web")
        .build()?;
    std::thread::Builder::new()
        .name("medledger-web".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("web api: {e}"),
                };
                if let Err(e) = axum::serve(listener, router(state)).await {
                    tracing::error!("web api: {e}");
                }
            })
        })?;
    Ok(bound)
}

/// A JSON body: like axum's `Json`, with every refusal (malformed, oversized, not JSON) an
/// [`ApiError`].
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> std::result::Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(ApiError::from_json(rejection)),
        }
    }
}

/// Query parameters: like axum's `Query`, with a malformed query string an [`ApiError`] (400).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> std::result::Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "malformed query: {}",
                rejection.body_text()
            ))),
        }
    }
}
