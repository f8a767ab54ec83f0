//! Research queries over the network: hospitals → aggregators → collector, each step governed
//! by the chain (library feature `research-queries`, module `medledger::research`).
//!
//! A query is announced on chain by the study's researcher, naming two aggregators: their
//! accounts (the keys of their nodes) and their HPKE keys (`GET /research/key` on each
//! aggregator's node). Then:
//!
//! 1. **A hospital** shards its consenting patients' reports with the library, and posts them
//!    to its own node, `POST /emr/research/commit` (EMR token): the node signs one
//!    `CommitReports` per batch with its provider key. Once they are in a block it posts the
//!    same reports to both aggregators, `POST /research/reports`. An aggregator takes a batch
//!    only if every report is of an announced query naming it, and the chain shows each nonce
//!    committed in a batch whose digest is that of exactly these reports: nobody but the
//!    committing hospital can post them, and a report is held once (a replayed batch is
//!    refused, 409 `report_replayed`).
//! 2. **The leader** (the query's first aggregator), asked by its operator after the deadline
//!    (`POST /research/queries/{id}/aggregate`, EMR token, with the helper's URL), decrypts
//!    and starts verifying every report it holds, and exchanges verifier messages with the
//!    helper in chunks of [`MAX_VERIFY_CHUNK`] (`POST /research/queries/{id}/verify`), each
//!    request signed by the leader's node key over the message below. It then asks the helper
//!    to release its share (`POST /research/queries/{id}/finalize`, signed too). Each aggregator
//!    adds its own noise, commits the digest of its aggregate share on chain
//!    (`CommitAggregateShare`, signed by its node key) and keeps the share.
//! 3. **The collector** (the researcher) fetches both shares
//!    (`POST /research/queries/{id}/share`, signed by its key and fresh within the node's
//!    window), checks each against its commitment on chain, unshards them with the library and
//!    publishes the result's hash (`PublishResult`, a transaction it signs).
//!
//! An aggregator releases one noised share per query, ever: a second, differently noised share
//! of the same reports would let the noise be averaged away. It serves the share only once its
//! commitment is on chain, only to the study's researcher. Every refusal is an [`ApiError`]
//! and changes nothing.
//!
//! The messages the leader and the collector sign are fixed-layout bytes:
//!
//! | bytes | field |
//! | --- | --- |
//! | 22 | [`RESEARCH_CONTEXT`] `medledger/research/v1:` |
//! | 1 | step: `0` verify, `1` finalize, `2` share request |
//! | 32 | chain id |
//! | 32 | query id |
//! | … | verify: session (16), chunk number (4, big-endian), digest of the messages (32); finalize: session (16); share request: `issued_at` (8, big-endian) |

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use medledger::access::{AccessOp, HpkePublicKey, Query, QueryId, ReportNonce};
use medledger::hash::{content_hash, AccountId, ChainId, Digest};
use medledger::research::{
    commit_ops, AggregateShare, Aggregator, AggregatorKeypair, QueryParams, Report,
    VerifierMessage, VerifyKey,
};
use medledger::tx::{Keypair, PublicKey, Signature};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::emr::authorise;
use super::tx::{accepted, parse_id, submit_all_as_node, submit_as_node};
use super::{ApiError, AppState, Body};
use crate::config::{hex_decode, hex_encode};
use crate::node::NodeAccess;

/// The prefix of every message a leader or a collector signs.
pub const RESEARCH_CONTEXT: &[u8] = b"medledger/research/v1:";

/// The largest body of a report batch or of a chunk of verifier messages, bytes.
pub const MAX_RESEARCH_BODY: usize = 16 * 1024 * 1024;

/// The most reports one request carries (a hospital posts its committed batches; a batch is at
/// most [`MAX_REPORTS_PER_COMMIT`](medledger::access::MAX_REPORTS_PER_COMMIT) reports).
pub const MAX_REPORTS_PER_REQUEST: usize = 4 * medledger::access::MAX_REPORTS_PER_COMMIT;

/// The most verifier messages the leader sends the helper in one request.
pub const MAX_VERIFY_CHUNK: usize = 512;

/// The most report bytes an aggregator's node holds, over all its queries: beyond it, batches
/// are refused (507 `desk_full`) until a query is aggregated.
pub const MAX_HELD_BYTES: usize = 512 * 1024 * 1024;

/// The routes of the research roles: a hospital's (`/emr/research/commit`), an aggregator's
/// and the collector's.
pub fn routes() -> Router<AppState> {
    let large = DefaultBodyLimit::max(MAX_RESEARCH_BODY);
    Router::new()
        .route("/emr/research/commit", post(commit).layer(large))
        .route("/research/key", get(key))
        .route("/research/reports", post(reports).layer(large))
        .route("/research/queries/{id}", get(desk_status))
        .route("/research/queries/{id}/aggregate", post(aggregate))
        .route("/research/queries/{id}/verify", post(verify).layer(large))
        .route("/research/queries/{id}/finalize", post(finalize))
        .route("/research/queries/{id}/share", post(share))
}

/// An aggregator node's research keys: the seed of its HPKE key pair, and the verification key
/// it shares with the other aggregator. Never printed, erased on drop.
pub struct ResearchKeys {
    seed: Zeroizing<[u8; 32]>,
    verify_key: VerifyKey,
    public: HpkePublicKey,
}

impl ResearchKeys {
    /// The keys from the HPKE key's 32-byte seed and the shared verification key.
    pub fn new(seed: Zeroizing<[u8; 32]>, verify_key: Zeroizing<[u8; 32]>) -> Self {
        let public = AggregatorKeypair::from_seed(&seed).public();
        Self {
            seed,
            verify_key: VerifyKey::from_bytes(*verify_key),
            public,
        }
    }

    /// The HPKE public key hospitals encrypt this aggregator's input shares to.
    pub fn public(&self) -> HpkePublicKey {
        self.public
    }

    fn keypair(&self) -> AggregatorKeypair {
        AggregatorKeypair::from_seed(&self.seed)
    }
}

impl core::fmt::Debug for ResearchKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ResearchKeys")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// What an aggregator's node holds: the reports of each query until it is aggregated, then
/// the one share it released.
pub struct Desk {
    keys: ResearchKeys,
    window: u64,
    queries: HashMap<QueryId, Held>,
    held_bytes: usize,
}

#[derive(Default)]
struct Held {
    reports: BTreeMap<ReportNonce, (Report, usize)>,
    busy: bool,
    session: Option<Session>,
    outcome: Option<Outcome>,
}

/// The helper's verification in progress, driven by the leader.
struct Session {
    id: [u8; 16],
    next: u32,
    aggregator: Aggregator,
}

struct Outcome {
    share: AggregateShare,
    session: Option<[u8; 16]>,
    tx: String,
    reports: usize,
}

impl Desk {
    /// A desk with `keys`, taking signed requests up to `window` seconds from the node's clock.
    pub fn new(keys: ResearchKeys, window: u64) -> Self {
        Self {
            keys,
            window,
            queries: HashMap::new(),
            held_bytes: 0,
        }
    }
}

fn desk(state: &AppState) -> Result<MutexGuard<'_, Desk>, ApiError> {
    lock(state.research.as_deref())
}

fn lock(research: Option<&Mutex<Desk>>) -> Result<MutexGuard<'_, Desk>, ApiError> {
    let d = research.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "research_off",
            "this node is no research aggregator: its configuration has no research_key_file \
             and research_verify_key_file",
        )
    })?;
    d.lock().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "research_failed",
            "the research desk failed earlier",
        )
    })
}

fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

/// The refusal of a step that comes too late: `query` was aggregated, so `consequence`.
fn already_aggregated(query: &QueryId, consequence: &str) -> ApiError {
    conflict(
        "already_aggregated",
        format!("query {query} was aggregated: {consequence}"),
    )
}

/// What a signed message covers after its chain id and query.
enum Step<'a> {
    Verify {
        session: [u8; 16],
        seq: u32,
        messages: &'a [MessageForm],
    },
    Finalize {
        session: [u8; 16],
    },
    Share {
        issued_at: u64,
    },
}

/// The bytes a leader or a collector signs (layout in the module docs).
fn signed_message(chain_id: &ChainId, query: &QueryId, step: &Step<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(RESEARCH_CONTEXT.len() + 1 + 32 + 32 + 52);
    m.extend_from_slice(RESEARCH_CONTEXT);
    m.push(match step {
        Step::Verify { .. } => 0,
        Step::Finalize { .. } => 1,
        Step::Share { .. } => 2,
    });
    m.extend_from_slice(chain_id.as_bytes());
    m.extend_from_slice(query.as_bytes());
    match step {
        Step::Verify {
            session,
            seq,
            messages,
        } => {
            m.extend_from_slice(session);
            m.extend_from_slice(&seq.to_be_bytes());
            m.extend_from_slice(messages_digest(messages).as_bytes());
        }
        Step::Finalize { session } => m.extend_from_slice(session),
        Step::Share { issued_at } => m.extend_from_slice(&issued_at.to_be_bytes()),
    }
    m
}

/// The digest of a chunk of verifier messages: each nonce and share, the share's length
/// first.
fn messages_digest(messages: &[MessageForm]) -> Digest {
    let mut bytes = Vec::new();
    for m in messages {
        bytes.extend_from_slice(m.nonce.as_bytes());
        bytes.extend_from_slice(&(m.share.len() as u64).to_be_bytes());
        bytes.extend_from_slice(m.share.as_bytes());
    }
    content_hash(&bytes)
}

fn check_signature(
    key: &PublicKey,
    signature: &str,
    message: &[u8],
    whose: &str,
) -> Result<(), ApiError> {
    let vk = key
        .verifying_key()
        .map_err(|e| ApiError::bad_request(format!("{whose}: {e}")))?;
    let sig: Signature = signature
        .trim()
        .parse()
        .map_err(|e| ApiError::bad_request(format!("signature: {e}")))?;
    vk.verify_strict(
        message,
        &ed25519_dalek::Signature::from_bytes(&sig.to_bytes()),
    )
    .map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("the signature does not verify for the {whose}'s key"),
        )
    })
}

fn parse_session(s: &str) -> Result<[u8; 16], ApiError> {
    hex_decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("session: expected 32 hex digits"))
}

/// A batch of reports for one query, each its canonical encoding in hex.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    /// The query.
    #[schema(value_type = String)]
    pub query: QueryId,
    /// The reports (`Report::encode`), hex.
    pub reports: Vec<String>,
}

impl ReportBatch {
    /// The batch of `reports` for `query`.
    pub fn new(query: QueryId, reports: &[Report]) -> Self {
        Self {
            query,
            reports: reports.iter().map(|r| hex_encode(&r.encode())).collect(),
        }
    }

    /// The decoded reports with their encoded sizes, checked: at least one, at most
    /// [`MAX_REPORTS_PER_REQUEST`], each of the batch's query, no nonce twice.
    ///
    /// # Errors
    ///
    /// 400 naming the report that is malformed, of another query or repeated.
    pub fn decode(&self) -> Result<Vec<(Report, usize)>, ApiError> {
        if self.reports.is_empty() {
            return Err(ApiError::bad_request("the batch holds no reports"));
        }
        if self.reports.len() > MAX_REPORTS_PER_REQUEST {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_reports",
                format!("a request carries at most {MAX_REPORTS_PER_REQUEST} reports"),
            ));
        }
        let malformed = |i: usize, why: String| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_report",
                format!("report {i}: {why}"),
            )
        };
        let mut out: Vec<(Report, usize)> = Vec::with_capacity(self.reports.len());
        for (i, hex) in self.reports.iter().enumerate() {
            let bytes = hex_decode(hex).map_err(|e| malformed(i, e.to_string()))?;
            let report = Report::decode(&bytes).map_err(|e| malformed(i, e.to_string()))?;
            if report.query != self.query {
                return Err(malformed(
                    i,
                    format!("it is for query {}, not {}", report.query, self.query),
                ));
            }
            out.push((report, bytes.len()));
        }
        let mut nonces: Vec<ReportNonce> = out.iter().map(|(r, _)| r.nonce).collect();
        nonces.sort_unstable();
        if let Some(w) = nonces.windows(2).find(|w| w[0] == w[1]) {
            return Err(ApiError::bad_request(format!(
                "report {} is in the batch twice",
                w[0]
            )));
        }
        Ok(out)
    }
}

/// The query on chain and this node's place in it: its index among the aggregators (if it is
/// one), and the study's researcher.
fn on_chain(node: &mut dyn NodeAccess, query: &QueryId) -> Result<(Query, AccountId), ApiError> {
    let access = node.ledger().chain().access();
    let q = access
        .query(query)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no query {query} on chain")))?;
    let researcher = access
        .study(&q.study)
        .map(|s| s.researcher)
        .ok_or_else(|| ApiError::not_found(format!("no study {} on chain", q.study)))?;
    Ok((q, researcher))
}

/// This node's index among `q`'s aggregators, checking its HPKE key is the announced one.
fn my_index(q: &Query, me: AccountId, key: HpkePublicKey) -> Result<usize, ApiError> {
    let index = q
        .aggregators
        .iter()
        .position(|a| a.account == me)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "not_an_aggregator",
                format!("this node ({me}) is not an aggregator of query {}", q.id),
            )
        })?;
    if q.aggregators[index].key != key {
        return Err(conflict(
            "key_mismatch",
            format!(
                "query {} announces HPKE key {} for this node, not its key {key}",
                q.id, q.aggregators[index].key
            ),
        ));
    }
    Ok(index)
}

/// The transactions a hospital's node submitted.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CommittedView {
    /// The query.
    pub query: String,
    /// Reports committed.
    pub reports: usize,
    /// The `CommitReports` transactions, pending.
    pub transactions: Vec<String>,
}

/// A hospital commits its reports on chain: the node signs one `CommitReports` per batch of
/// at most 512 reports with its provider key, once the chain would accept every one (a
/// replayed nonce, a closed query or a hospital not certified is refused with the chain's
/// reason, and nothing is submitted). Post the same reports to both aggregators once the
/// transactions are in a block.
#[utoipa::path(post, path = "/emr/research/commit", request_body = ReportBatch,
    security(("emr_token" = [])),
    responses((status = 202, body = CommittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn commit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(batch): Body<ReportBatch>,
) -> Result<(StatusCode, Json<CommittedView>), ApiError> {
    authorise(&state, &headers)?;
    let reports: Vec<Report> = batch.decode()?.into_iter().map(|(r, _)| r).collect();
    let ops =
        commit_ops(&batch.query, &reports).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Every batch must be accepted before any is submitted: a refusal changes nothing.
    let submitted = submit_all_as_node(&state, ops).await?;
    Ok(accepted(CommittedView {
        query: batch.query.to_string(),
        reports: reports.len(),
        transactions: submitted.into_iter().map(|v| v.id).collect(),
    }))
}

/// An aggregator node's research identity.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ResearchKeyView {
    /// Its account (the node's key): announce it as the aggregator's account.
    pub account: String,
    /// The HPKE public key to announce with it, 64 hex digits.
    pub hpke_key: String,
}

/// This node's aggregator account and HPKE key, for a researcher announcing a query.
#[utoipa::path(get, path = "/research/key",
    responses((status = 200, body = ResearchKeyView), (status = 503, body = super::ErrorBody)))]
pub async fn key(State(state): State<AppState>) -> Result<Json<ResearchKeyView>, ApiError> {
    let hpke_key = desk(&state)?.keys.public();
    Ok(Json(ResearchKeyView {
        account: state.provider.account().to_string(),
        hpke_key: hpke_key.to_string(),
    }))
}

/// A batch an aggregator took.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportsTakenView {
    /// The query.
    pub query: String,
    /// Reports taken from this batch.
    pub taken: usize,
    /// Reports now held for the query.
    pub held: usize,
}

/// A hospital's reports for an announced query naming this node as an aggregator. Taken only
/// if the chain shows every nonce committed in a batch whose digest is that of exactly these
/// reports; refused if any report was received before (409 `report_replayed`).
#[utoipa::path(post, path = "/research/reports", request_body = ReportBatch,
    responses((status = 202, body = ReportsTakenView), (status = "4XX", body = super::ErrorBody)))]
pub async fn reports(
    State(state): State<AppState>,
    Body(batch): Body<ReportBatch>,
) -> Result<(StatusCode, Json<ReportsTakenView>), ApiError> {
    let public = desk(&state)?.keys.public();
    let decoded = batch.decode()?;
    let query = batch.query;
    let me = state.provider.account();
    let reports: Vec<Report> = decoded.iter().map(|(r, _)| r.clone()).collect();
    let ops = commit_ops(&query, &reports).map_err(|e| ApiError::bad_request(e.to_string()))?;
    state
        .node
        .ask(move |node| {
            let (q, _) = on_chain(node, &query)?;
            my_index(&q, me, public)?;
            let access = node.ledger().chain().access();
            for op in &ops {
                let AccessOp::CommitReports { batch, nonces, .. } = op else {
                    continue;
                };
                for n in nonces {
                    match access.contribution(&query, n) {
                        Some(c) if c.batch == *batch => {}
                        Some(_) => {
                            return Err(ApiError::new(
                                StatusCode::FORBIDDEN,
                                "not_committed",
                                format!(
                                    "report {n} was committed on chain in another batch than \
                                     these reports"
                                ),
                            ))
                        }
                        None => {
                            return Err(ApiError::new(
                                StatusCode::FORBIDDEN,
                                "not_committed",
                                format!("report {n} is not committed on chain"),
                            ))
                        }
                    }
                }
            }
            Ok(())
        })
        .await??;
    let mut d = desk(&state)?;
    let bytes: usize = decoded.iter().map(|(_, len)| len).sum();
    let room = MAX_HELD_BYTES - d.held_bytes;
    let held = d.queries.entry(query).or_default();
    if held.outcome.is_some() {
        return Err(already_aggregated(&query, "no more reports"));
    }
    if let Some((r, _)) = decoded
        .iter()
        .find(|(r, _)| held.reports.contains_key(&r.nonce))
    {
        return Err(conflict(
            "report_replayed",
            format!("report {} was received before", r.nonce),
        ));
    }
    if bytes > room {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "desk_full",
            format!("this node holds at most {MAX_HELD_BYTES} bytes of reports"),
        ));
    }
    let taken = decoded.len();
    for (r, len) in decoded {
        held.reports.insert(r.nonce, (r, len));
    }
    let now_held = held.reports.len();
    d.held_bytes += bytes;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReportsTakenView {
            query: query.to_string(),
            taken,
            held: now_held,
        }),
    ))
}

/// Where an aggregator stands on a query.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeskView {
    /// The query.
    pub query: String,
    /// Reports held (before aggregation) or aggregated (after).
    pub reports: usize,
    /// Whether its share is released (once, ever).
    pub aggregated: bool,
    /// The digest of its aggregate share, once released.
    pub share: Option<String>,
    /// The transaction committing it.
    pub commit_tx: Option<String>,
}

/// What this aggregator holds for a query.
#[utoipa::path(get, path = "/research/queries/{id}", params(("id" = String, Path, description = "query id")),
    responses((status = 200, body = DeskView), (status = "4XX", body = super::ErrorBody)))]
pub async fn desk_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeskView>, ApiError> {
    let query: QueryId = parse_id("query id", &id)?;
    let d = desk(&state)?;
    let (reports, outcome) = match d.queries.get(&query) {
        Some(h) => (
            h.outcome.as_ref().map_or(h.reports.len(), |o| o.reports),
            h.outcome.as_ref(),
        ),
        None => (0, None),
    };
    Ok(Json(DeskView {
        query: query.to_string(),
        reports,
        aggregated: outcome.is_some(),
        share: outcome.map(|o| o.share.digest().to_string()),
        commit_tx: outcome.map(|o| o.tx.clone()),
    }))
}

/// The leader's operator asks it to aggregate.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateRequest {
    /// The helper's web API (`http://host:port`).
    pub helper: String,
}

/// The leader's aggregate: both shares committed on chain.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AggregateView {
    /// The query.
    pub query: String,
    /// Reports whose validity proof held, aggregated by both.
    pub reports: u64,
    /// Reports held but excluded (undecryptable, or failing the validity proof).
    pub excluded: u64,
    /// The digest of the leader's share.
    pub share: String,
    /// The transaction committing it.
    pub commit_tx: String,
    /// The digest of the helper's share.
    pub helper_share: String,
    /// The transaction committing the helper's.
    pub helper_commit_tx: String,
}

/// One verifier message, hex.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageForm {
    /// The report's nonce, 32 hex digits.
    pub nonce: String,
    /// The encoded verifier share, hex.
    pub share: String,
}

impl MessageForm {
    fn of(m: &VerifierMessage) -> Self {
        Self {
            nonce: m.nonce.to_string(),
            share: hex_encode(&m.share),
        }
    }

    fn parse(&self, from: u8) -> Result<VerifierMessage, ApiError> {
        let nonce: [u8; 16] = hex_decode(&self.nonce)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ApiError::bad_request("nonce: expected 32 hex digits"))?;
        Ok(VerifierMessage {
            nonce: ReportNonce::from_bytes(nonce),
            from,
            share: hex_decode(&self.share)
                .map_err(|e| ApiError::bad_request(format!("verifier share: {e}")))?,
        })
    }
}

/// A chunk of the leader's verifier messages, signed by the leader's node key.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The leader node's public key, 64 hex digits.
    #[schema(value_type = String)]
    pub leader: PublicKey,
    /// The aggregation attempt, 32 hex digits (chunk 0 starts one).
    pub session: String,
    /// The chunk's number, from 0.
    pub seq: u32,
    /// The leader's messages, at most [`MAX_VERIFY_CHUNK`].
    pub messages: Vec<MessageForm>,
    /// Ed25519 signature over the verify message, 128 hex digits.
    pub signature: String,
}

/// The helper's messages for the reports of a chunk it holds.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    /// One per report the helper holds and could decrypt.
    pub messages: Vec<MessageForm>,
}

/// The leader asks the helper to release its share, signed by the leader's node key.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinalizeRequest {
    /// The leader node's public key, 64 hex digits.
    #[schema(value_type = String)]
    pub leader: PublicKey,
    /// The aggregation attempt, 32 hex digits.
    pub session: String,
    /// Ed25519 signature over the finalize message, 128 hex digits.
    pub signature: String,
}

/// The helper's released share.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FinalizeView {
    /// Reports aggregated.
    pub reports: u64,
    /// The digest of its share.
    pub share: String,
    /// The transaction committing it.
    pub commit_tx: String,
}

/// Checks a leader's request: signed by the query's leader, to this node as its helper, after
/// the deadline. Returns the query.
async fn check_leader(
    state: &AppState,
    query: QueryId,
    leader: PublicKey,
    signature: &str,
    message: Vec<u8>,
) -> Result<Query, ApiError> {
    check_signature(&leader, signature, &message, "leader")?;
    let public = desk(state)?.keys.public();
    let me = state.provider.account();
    state
        .node
        .ask(move |node| {
            let (q, _) = on_chain(node, &query)?;
            if my_index(&q, me, public)? != 1 {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "not_the_helper",
                    format!("this node is query {query}'s leader, not its helper"),
                ));
            }
            if node.ledger().account_of_key(&leader) != q.aggregators[0].account {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "not_the_leader",
                    format!("the signer is not query {query}'s leader"),
                ));
            }
            past_deadline(&q, node.now_secs())?;
            Ok(q)
        })
        .await?
}

/// Whether query `q` is past its deadline at `now` (aggregating may start); if not, the
/// refusal saying until when it takes reports.
fn past_deadline(q: &Query, now: u64) -> Result<(), ApiError> {
    if now < q.deadline {
        return Err(conflict(
            "too_early",
            format!(
                "query {} takes reports until {}; it is {now}",
                q.id, q.deadline
            ),
        ));
    }
    Ok(())
}

/// The helper's side of one chunk: prepares each report it holds, finishes it with the
/// leader's message (a report failing the validity proof is excluded on both sides), and
/// answers its own messages.
#[utoipa::path(post, path = "/research/queries/{id}/verify", request_body = VerifyRequest,
    params(("id" = String, Path, description = "query id")),
    responses((status = 200, body = VerifyView), (status = "4XX", body = super::ErrorBody)))]
pub async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<VerifyRequest>,
) -> Result<Json<VerifyView>, ApiError> {
    let query: QueryId = parse_id("query id", &id)?;
    if req.messages.len() > MAX_VERIFY_CHUNK {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_messages",
            format!("a chunk holds at most {MAX_VERIFY_CHUNK} messages"),
        ));
    }
    let session = parse_session(&req.session)?;
    let leader_msgs = req
        .messages
        .iter()
        .map(|m| m.parse(0))
        .collect::<Result<Vec<_>, _>>()?;
    let message = signed_message(
        &state.chain_id,
        &query,
        &Step::Verify {
            session,
            seq: req.seq,
            messages: &req.messages,
        },
    );
    let q = check_leader(&state, query, req.leader, &req.signature, message).await?;
    let params = QueryParams::of(&q);
    let research = state.research.clone();
    tokio::task::spawn_blocking(move || {
        let mut d = lock(research.as_deref())?;
        let fresh = if req.seq == 0 {
            Some(
                Aggregator::new(&params, 1, d.keys.keypair(), d.keys.verify_key.clone())
                    .map_err(|e| conflict("key_mismatch", e.to_string()))?,
            )
        } else {
            None
        };
        let held = d.queries.entry(query).or_default();
        if held.outcome.is_some() {
            return Err(already_aggregated(&query, "its share is released"));
        }
        if let Some(aggregator) = fresh {
            held.session = Some(Session {
                id: session,
                next: 0,
                aggregator,
            });
        }
        let s = match &mut held.session {
            Some(s) if s.id == session && s.next == req.seq => s,
            _ => {
                return Err(conflict(
                    "out_of_sequence",
                    format!(
                        "chunk {} of session {} is not the one expected",
                        req.seq, req.session
                    ),
                ))
            }
        };
        let mut out = Vec::with_capacity(leader_msgs.len());
        for m in &leader_msgs {
            let Some((report, _)) = held.reports.get(&m.nonce) else {
                continue;
            };
            let Ok(own) = s.aggregator.prepare(report) else {
                continue;
            };
            // A report failing the proof is excluded here; the leader finds the same.
            let _ = s.aggregator.finish(m);
            out.push(MessageForm::of(&own));
        }
        s.next += 1;
        Ok(Json(VerifyView { messages: out }))
    })
    .await
    .map_err(|_| failed("verifying the chunk"))?
}

/// 500: a worker thread failed.
fn failed(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "research_failed",
        format!("{what} failed"),
    )
}

/// Commits `share` on chain, signed by the node's key.
async fn commit_share(state: &AppState, share: &AggregateShare) -> Result<String, ApiError> {
    Ok(submit_as_node(state, share.commit_op()).await?.id)
}

/// The helper adds its noise, commits its aggregate share on chain and keeps it for the
/// collector: once per query, ever (asked again for the same session, it answers the same).
#[utoipa::path(post, path = "/research/queries/{id}/finalize", request_body = FinalizeRequest,
    params(("id" = String, Path, description = "query id")),
    responses((status = 200, body = FinalizeView), (status = "4XX", body = super::ErrorBody)))]
pub async fn finalize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<FinalizeRequest>,
) -> Result<Json<FinalizeView>, ApiError> {
    let query: QueryId = parse_id("query id", &id)?;
    let session = parse_session(&req.session)?;
    let message = signed_message(&state.chain_id, &query, &Step::Finalize { session });
    check_leader(&state, query, req.leader, &req.signature, message).await?;
    let aggregator = {
        let mut d = desk(&state)?;
        let held = d.queries.entry(query).or_default();
        if let Some(o) = &held.outcome {
            if o.session == Some(session) {
                return Ok(Json(FinalizeView {
                    reports: o.share.reports,
                    share: o.share.digest().to_string(),
                    commit_tx: o.tx.clone(),
                }));
            }
            return Err(conflict(
                "already_aggregated",
                format!("query {query} was aggregated in another session"),
            ));
        }
        match held.session.take() {
            Some(s) if s.id == session => s.aggregator,
            other => {
                held.session = other;
                return Err(conflict(
                    "out_of_sequence",
                    format!("no verification in session {}", req.session),
                ));
            }
        }
    };
    let share = aggregator
        .finalize()
        .map_err(|e| conflict("batch_too_small", e.to_string()))?;
    let tx = commit_share(&state, &share).await?;
    let view = FinalizeView {
        reports: share.reports,
        share: share.digest().to_string(),
        commit_tx: tx.clone(),
    };
    store_outcome(&state, query, share, Some(session), tx)?;
    Ok(Json(view))
}

fn store_outcome(
    state: &AppState,
    query: QueryId,
    share: AggregateShare,
    session: Option<[u8; 16]>,
    tx: String,
) -> Result<(), ApiError> {
    let mut d = desk(state)?;
    let held = d.queries.entry(query).or_default();
    let freed: usize = held.reports.values().map(|(_, len)| len).sum();
    let reports = held.reports.len();
    held.reports.clear();
    held.busy = false;
    held.outcome = Some(Outcome {
        share,
        session,
        tx,
        reports,
    });
    d.held_bytes -= freed;
    Ok(())
}

/// An error answer of another node, as a 502 naming it.
async fn helper_error(response: reqwest::Response) -> ApiError {
    let status = response.status();
    let body: Option<super::ErrorBody> = response.json().await.ok();
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "helper_refused",
        match body {
            Some(b) => format!(
                "the helper answered {status}: {} ({})",
                b.error.message, b.error.code
            ),
            None => format!("the helper answered {status}"),
        },
    )
}

/// Posts `body` to the helper at `url` and reads its answer; a refusal, no answer or an
/// unreadable one is a 502.
async fn ask_helper<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: reqwest::Url,
    body: &impl Serialize,
) -> Result<T, ApiError> {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(helper_unreachable)?;
    if !response.status().is_success() {
        return Err(helper_error(response).await);
    }
    response.json().await.map_err(helper_unreachable)
}

fn helper_unreachable(e: reqwest::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "helper_unreachable",
        format!("the helper did not answer: {e}"),
    )
}

/// The leader aggregates a query after its deadline: verifies every report it holds with the
/// helper, adds its noise, commits its share on chain and keeps it for the collector; the
/// helper does the same. Once per query, ever.
#[utoipa::path(post, path = "/research/queries/{id}/aggregate", request_body = AggregateRequest,
    params(("id" = String, Path, description = "query id")),
    security(("emr_token" = [])),
    responses((status = 200, body = AggregateView), (status = "4XX", body = super::ErrorBody)))]
pub async fn aggregate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(req): Body<AggregateRequest>,
) -> Result<Json<AggregateView>, ApiError> {
    authorise(&state, &headers)?;
    let query: QueryId = parse_id("query id", &id)?;
    let helper = reqwest::Url::parse(&req.helper)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| ApiError::bad_request("helper: expected an http(s) URL"))?;
    let public = desk(&state)?.keys.public();
    let me = state.provider.account();
    let q = state
        .node
        .ask(move |node| {
            let (q, _) = on_chain(node, &query)?;
            if my_index(&q, me, public)? != 0 {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "not_the_leader",
                    format!("this node is query {query}'s helper: ask its leader"),
                ));
            }
            past_deadline(&q, node.now_secs())?;
            Ok(q)
        })
        .await??;
    let reports: Vec<Report> = {
        let mut d = desk(&state)?;
        let held = d.queries.entry(query).or_default();
        if held.outcome.is_some() {
            return Err(already_aggregated(&query, "its share is released"));
        }
        if held.busy {
            return Err(conflict(
                "busy",
                format!("query {query} is being aggregated"),
            ));
        }
        if held.reports.len() < q.min_batch as usize {
            return Err(conflict(
                "batch_too_small",
                format!(
                    "{} reports held, the query's minimum batch is {}",
                    held.reports.len(),
                    q.min_batch
                ),
            ));
        }
        held.busy = true;
        held.reports.values().map(|(r, _)| r.clone()).collect()
    };
    let r = lead(&state, &q, reports, helper).await;
    if r.is_err() {
        if let Ok(mut d) = desk(&state) {
            if let Some(h) = d.queries.get_mut(&query) {
                h.busy = false;
            }
        }
    }
    r.map(Json)
}

async fn lead(
    state: &AppState,
    q: &Query,
    reports: Vec<Report>,
    helper: reqwest::Url,
) -> Result<AggregateView, ApiError> {
    let query = q.id;
    let params = QueryParams::of(q);
    let (keypair, verify_key) = {
        let d = desk(state)?;
        (d.keys.keypair(), d.keys.verify_key.clone())
    };
    let held = reports.len() as u64;
    let (mut aggregator, messages) = tokio::task::spawn_blocking(move || {
        let mut a = Aggregator::new(&params, 0, keypair, verify_key)
            .map_err(|e| conflict("key_mismatch", e.to_string()))?;
        let msgs: Vec<MessageForm> = reports
            .iter()
            .filter_map(|r| a.prepare(r).ok())
            .map(|m| MessageForm::of(&m))
            .collect();
        Ok::<_, ApiError>((a, msgs))
    })
    .await
    .map_err(|_| failed("preparing the reports"))??;
    // A fresh session per attempt: unique, not secret.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut session = [0; 16];
    session.copy_from_slice(
        &content_hash(&[query.as_bytes().as_slice(), &nanos.to_be_bytes()].concat()).as_bytes()
            [..16],
    );
    let client = reqwest::Client::new();
    let url = |step: &str| {
        helper
            .join(&format!("research/queries/{query}/{step}"))
            .map_err(|e| ApiError::bad_request(format!("helper: {e}")))
    };
    let key: &Keypair = &state.provider;
    for (seq, chunk) in messages.chunks(MAX_VERIFY_CHUNK).enumerate() {
        let seq = seq as u32;
        let signature = key.sign(&signed_message(
            &state.chain_id,
            &query,
            &Step::Verify {
                session,
                seq,
                messages: chunk,
            },
        ));
        let body = VerifyRequest {
            leader: key.public(),
            session: hex_encode(&session),
            seq,
            messages: chunk.to_vec(),
            signature: signature.to_string(),
        };
        let answer: VerifyView = ask_helper(&client, url("verify")?, &body).await?;
        for m in &answer.messages {
            // A report failing the proof, or one the helper does not hold, is excluded.
            let _ = aggregator.finish(&m.parse(1)?);
        }
    }
    let signature = key.sign(&signed_message(
        &state.chain_id,
        &query,
        &Step::Finalize { session },
    ));
    let body = FinalizeRequest {
        leader: key.public(),
        session: hex_encode(&session),
        signature: signature.to_string(),
    };
    let theirs: FinalizeView = ask_helper(&client, url("finalize")?, &body).await?;
    let share = aggregator
        .finalize()
        .map_err(|e| conflict("batch_too_small", e.to_string()))?;
    if share.reports != theirs.reports {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "aggregators_disagree",
            format!(
                "the leader aggregated {} reports, the helper {}: the leader's share is withheld",
                share.reports, theirs.reports
            ),
        ));
    }
    let tx = commit_share(state, &share).await?;
    let view = AggregateView {
        query: query.to_string(),
        reports: share.reports,
        excluded: held - share.reports,
        share: share.digest().to_string(),
        commit_tx: tx.clone(),
        helper_share: theirs.share,
        helper_commit_tx: theirs.commit_tx,
    };
    store_outcome(state, query, share, None, tx)?;
    Ok(view)
}

/// The collector's request for an aggregator's share, signed by the study's researcher.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// The researcher's public key, 64 hex digits.
    #[schema(value_type = String)]
    pub researcher: PublicKey,
    /// When it was issued, Unix seconds (within the node's window of its clock).
    pub issued_at: u64,
    /// Ed25519 signature over the share request message, 128 hex digits.
    pub signature: String,
}

impl ShareRequest {
    /// The request for `query`'s share on chain `chain_id`, signed by `researcher`.
    pub fn sign(researcher: &Keypair, chain_id: &ChainId, query: &QueryId, issued_at: u64) -> Self {
        let signature =
            researcher.sign(&signed_message(chain_id, query, &Step::Share { issued_at }));
        Self {
            researcher: researcher.public(),
            issued_at,
            signature: signature.to_string(),
        }
    }
}

/// An aggregator's noised share, for the collector.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ShareView {
    /// The query.
    pub query: String,
    /// The aggregator's index (0, the leader, or 1).
    pub index: u8,
    /// Reports aggregated.
    pub reports: u64,
    /// The share (`AggregateShare::encode`), hex.
    pub share: String,
    /// Its digest, as committed on chain.
    pub digest: String,
}

/// This aggregator's share of a query, for the study's researcher, once its commitment is on
/// chain. Check it against the commitment, then unshard it with the other's.
#[utoipa::path(post, path = "/research/queries/{id}/share", request_body = ShareRequest,
    params(("id" = String, Path, description = "query id")),
    responses((status = 200, body = ShareView), (status = "4XX", body = super::ErrorBody)))]
pub async fn share(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<ShareRequest>,
) -> Result<Json<ShareView>, ApiError> {
    let query: QueryId = parse_id("query id", &id)?;
    let message = signed_message(
        &state.chain_id,
        &query,
        &Step::Share {
            issued_at: req.issued_at,
        },
    );
    check_signature(&req.researcher, &req.signature, &message, "researcher")?;
    let (share, window) = {
        let d = desk(&state)?;
        let share = d
            .queries
            .get(&query)
            .and_then(|h| h.outcome.as_ref())
            .map(|o| o.share.clone())
            .ok_or_else(|| {
                conflict(
                    "not_aggregated",
                    format!("query {query} is not aggregated here yet"),
                )
            })?;
        (share, d.window)
    };
    let digest = share.digest();
    let index = usize::from(share.index);
    let researcher = req.researcher;
    let issued_at = req.issued_at;
    state
        .node
        .ask(move |node| {
            let now = node.now_secs();
            if now.abs_diff(issued_at) > window {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "stale_request",
                    format!(
                        "issued at {issued_at}, more than {window} s from the node's clock {now}"
                    ),
                ));
            }
            let (q, study_researcher) = on_chain(node, &query)?;
            if node.ledger().account_of_key(&researcher) != study_researcher {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "not_the_researcher",
                    format!("the signer is not the researcher of query {query}'s study"),
                ));
            }
            match q.shares.get(index).copied().flatten() {
                Some((d, _)) if d == digest => Ok(()),
                _ => Err(conflict(
                    "not_committed",
                    format!("this aggregator's share of {query} is not committed on chain yet"),
                )),
            }
        })
        .await??;
    Ok(Json(ShareView {
        query: query.to_string(),
        index: share.index,
        reports: share.reports,
        share: hex_encode(&share.encode()),
        digest: digest.to_string(),
    }))
}
