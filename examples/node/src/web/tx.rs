//! Transactions signed by their authors: unsigned templates to sign, signed transactions to
//! submit, and where a transaction stands.
//!
//! `POST /tx/template` takes the signer's public key and an operation ([`OpForm`]) and answers
//! the unsigned transaction with the signer's next nonce (`unsigned_tx`: its canonical bytes
//! with a zero signature), the exact bytes to sign (`signing_message`), and what it would do if
//! signed now (a dry run: a template that would be refused is refused, with the chain's
//! reason). The client signs `signing_message` with Ed25519 and posts `{unsigned_tx,
//! signature}` to `POST /tx`; library clients post a signed canonical transaction (`{tx}`).
//! Nothing but the signature ever leaves the client: no key reaches the server.
//!
//! The EMR and research routes submit transactions the node signs with its own key
//! ([`submit_as_node`], [`submit_all_as_node`]); every route that submits answers 202 with what
//! it submitted ([`accepted`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use medledger::access::{
    AccessOp, Action, ActionSet, BlindedIdentity, Category, CategorySet, DelegationId,
    DelegationTerms, GrantId, GrantTerms, GroupId, Identity, IdentityCommitment, Period, PointerId,
    Provision, ProvisionKind, PurposeSet, Reason, RelationshipId, ReviewOutcome, Role, Scope,
    Viewer,
};
use medledger::codec::BoundedVec;
use medledger::hash::{AccountId, TxId};
use medledger::ledger::{Refusal, TxStatus};
use medledger::purpose::PurposeOfUse;
use medledger::tx::{Keypair, PublicKey, Signature, TxBody};
use medledger::{MedRec, Payload, Transaction};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, Body};
use crate::config::{hex_decode, hex_encode};
use crate::node::NodeAccess;

/// The transaction routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tx/template", post(template))
        .route("/tx", post(submit))
        .route("/tx/{id}", get(status_of))
}

/// A request for an unsigned transaction.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    /// The signer's Ed25519 public key, 64 hex digits.
    #[schema(value_type = String)]
    pub signer: PublicKey,
    /// What the transaction does.
    pub op: OpForm,
}

/// A nested provision of a grant, FHIR Consent style: an exception to its parent (the grant,
/// or an earlier provision by position), each empty criterion matching everything.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionForm {
    /// `permit` or `deny`.
    pub kind: String,
    /// The provision it is nested in (position in the list), or the grant itself.
    #[serde(default)]
    pub parent: Option<u16>,
    /// Records (any version).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub pointers: Vec<PointerId>,
    /// Categories (`laboratory`, `mental health`…).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Actions (`read`, `disclose`).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Purposes (HL7 codes).
    #[serde(default)]
    pub purposes: Vec<String>,
    /// When it applies.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub period: Option<Period>,
    /// The period the records' data must lie in.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data_period: Option<Period>,
}

/// Which records: all (no pointers, no categories) or the listed ones.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeForm {
    /// Records (any version).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub pointers: Vec<PointerId>,
    /// Categories.
    #[serde(default)]
    pub categories: Vec<String>,
}

/// A period: `start` (default: the node's clock) and `end`, or `days` from the start.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodForm {
    /// First second (default: now).
    #[serde(default)]
    pub start: Option<u64>,
    /// First second after.
    #[serde(default)]
    pub end: Option<u64>,
    /// Or: how many days from the start.
    #[serde(default)]
    pub days: Option<u64>,
}

/// An operation to sign, in readable form (or any library operation in its own JSON form).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpForm {
    /// Registers the signer as a patient: the commitment binding `blinded_identity` (computed
    /// by the patient's device from its identity and a salt it keeps) to the signer's account.
    RegisterPatient {
        /// `BlindedIdentity`, 64 hex digits.
        #[schema(value_type = String)]
        blinded_identity: BlindedIdentity,
    },
    /// The patient accepts a pending relationship.
    AcceptRelationship {
        /// The relationship.
        #[schema(value_type = String)]
        relationship: RelationshipId,
    },
    /// The patient refuses a pending relationship.
    RejectRelationship {
        /// The relationship.
        #[schema(value_type = String)]
        relationship: RelationshipId,
        /// Why.
        #[schema(value_type = String)]
        reason: Reason,
    },
    /// The patient (or a delegate, `under` its delegation) grants a viewer access.
    Grant {
        /// The relationship whose records are granted.
        #[schema(value_type = String)]
        relationship: RelationshipId,
        /// The viewer's account (or `group`).
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        viewer: Option<AccountId>,
        /// Or one of the patient's groups.
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        group: Option<GroupId>,
        /// Which records (default: all).
        #[serde(default)]
        scope: Option<ScopeForm>,
        /// Actions (`read`, `disclose`).
        actions: Vec<String>,
        /// Purposes (HL7 codes: `TREAT`…).
        purposes: Vec<String>,
        /// Validity.
        period: PeriodForm,
        /// Nested provisions (exceptions), FHIR Consent style.
        #[serde(default)]
        provisions: Vec<ProvisionForm>,
        /// The delegation a delegate grants under.
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        under: Option<DelegationId>,
    },
    /// Revokes a grant.
    RevokeGrant {
        /// The grant.
        #[schema(value_type = String)]
        grant: GrantId,
        /// Why.
        #[schema(value_type = String)]
        reason: Reason,
    },
    /// The patient delegates managing consent, within bounds, to a guardian.
    Delegate {
        /// The guardian.
        #[schema(value_type = String)]
        delegate: AccountId,
        /// The one relationship it manages (default: all).
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        relationship: Option<RelationshipId>,
        /// Which records it may grant (default: all).
        #[serde(default)]
        scope: Option<ScopeForm>,
        /// Actions it may grant.
        actions: Vec<String>,
        /// Purposes it may grant.
        purposes: Vec<String>,
        /// Validity.
        period: PeriodForm,
    },
    /// Ends a delegation (its grants are revoked).
    RevokeDelegation {
        /// The delegation.
        #[schema(value_type = String)]
        delegation: DelegationId,
        /// Why.
        #[schema(value_type = String)]
        reason: Reason,
    },
    /// The patient reviews a break-glass session.
    ReviewBreakGlass {
        /// The session.
        #[schema(value_type = String)]
        session: medledger::access::BreakGlassId,
        /// `acknowledged` or `disputed`.
        outcome: String,
        /// A note.
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        note: Option<Reason>,
    },
    /// Any operation, in the library's JSON form of `AccessOp` (sets as bit masks).
    Access {
        /// The operation.
        #[schema(value_type = Object)]
        access: AccessOp,
    },
}

fn parse_action(s: &str) -> Result<Action, ApiError> {
    Action::ALL
        .into_iter()
        .find(|a| a.to_string() == s)
        .ok_or_else(|| ApiError::bad_request(format!("unknown action {s:?}: read or disclose")))
}

fn parse_purpose(s: &str) -> Result<PurposeOfUse, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("unknown purpose of use {s:?} (HL7 code)")))
}

fn parse_category(s: &str) -> Result<Category, ApiError> {
    Category::ALL
        .into_iter()
        .find(|c| c.to_string() == s)
        .ok_or_else(|| ApiError::bad_request(format!("unknown category {s:?}")))
}

/// Actions by name.
///
/// # Errors
///
/// 400 naming an unknown action.
pub fn actions(names: &[String]) -> Result<ActionSet, ApiError> {
    names.iter().map(|s| parse_action(s)).collect()
}

/// Purposes by HL7 code.
///
/// # Errors
///
/// 400 naming an unknown code.
pub fn purposes(codes: &[String]) -> Result<PurposeSet, ApiError> {
    codes.iter().map(|s| parse_purpose(s)).collect()
}

fn categories(names: &[String]) -> Result<CategorySet, ApiError> {
    names.iter().map(|s| parse_category(s)).collect()
}

fn scope(form: Option<ScopeForm>) -> Result<Scope, ApiError> {
    match form {
        None => Ok(Scope::All),
        Some(f) if f.pointers.is_empty() && f.categories.is_empty() => Ok(Scope::All),
        Some(f) => Ok(Scope::Only {
            categories: categories(&f.categories)?,
            pointers: BoundedVec::try_from(f.pointers)
                .map_err(|_| ApiError::bad_request("too many pointers in the scope"))?,
        }),
    }
}

fn period(form: &PeriodForm, now: u64) -> Result<Period, ApiError> {
    let start = form.start.unwrap_or(now);
    let end = match (form.end, form.days) {
        (Some(end), None) => end,
        (None, Some(days)) => start.saturating_add(days.saturating_mul(86_400)),
        _ => return Err(ApiError::bad_request("a period has either `end` or `days`")),
    };
    Period::new(start, end).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn provision(form: ProvisionForm) -> Result<Provision, ApiError> {
    let kind = match form.kind.as_str() {
        "permit" => ProvisionKind::Permit,
        "deny" => ProvisionKind::Deny,
        k => {
            return Err(ApiError::bad_request(format!(
                "unknown provision kind {k:?}: permit or deny"
            )))
        }
    };
    let mut p = Provision::new(kind)
        .with_categories(categories(&form.categories)?)
        .with_actions(actions(&form.actions)?)
        .with_purposes(purposes(&form.purposes)?);
    p.pointers = BoundedVec::try_from(form.pointers)
        .map_err(|_| ApiError::bad_request("too many pointers in a provision"))?;
    if let Some(parent) = form.parent {
        p = p.under(parent);
    }
    if let Some(period) = form.period {
        p = p.with_period(period);
    }
    if let Some(period) = form.data_period {
        p = p.with_data_period(period);
    }
    Ok(p)
}

impl OpForm {
    /// The library operation, with default times taken from `now`.
    ///
    /// # Errors
    ///
    /// 400 naming what is malformed.
    pub fn into_op(self, signer: &PublicKey, now: u64) -> Result<AccessOp, ApiError> {
        Ok(match self {
            OpForm::RegisterPatient { blinded_identity } => AccessOp::Register {
                role: Role::Patient,
                identity: Identity::Commitment(IdentityCommitment::bind(
                    blinded_identity,
                    signer.account(),
                )),
                blinded: Some(blinded_identity),
            },
            OpForm::AcceptRelationship { relationship } => {
                AccessOp::AcceptRelationship { relationship }
            }
            OpForm::RejectRelationship {
                relationship,
                reason,
            } => AccessOp::RejectRelationship {
                relationship,
                reason,
            },
            OpForm::Grant {
                relationship,
                viewer,
                group,
                scope: s,
                actions: a,
                purposes: p,
                period: when,
                provisions,
                under,
            } => {
                let viewer = match (viewer, group) {
                    (Some(a), None) => Viewer::Account(a),
                    (None, Some(g)) => Viewer::Group(g),
                    _ => return Err(ApiError::bad_request("a grant names a viewer or a group")),
                };
                let mut terms = GrantTerms::new(
                    relationship,
                    viewer,
                    scope(s)?,
                    actions(&a)?,
                    purposes(&p)?,
                    period(&when, now)?,
                );
                if provisions.len() > medledger::access::MAX_PROVISIONS {
                    return Err(ApiError::bad_request(format!(
                        "at most {} provisions",
                        medledger::access::MAX_PROVISIONS
                    )));
                }
                for form in provisions {
                    terms = terms.with_provision(provision(form)?);
                }
                AccessOp::Grant { terms, under }
            }
            OpForm::RevokeGrant { grant, reason } => AccessOp::RevokeGrant { grant, reason },
            OpForm::Delegate {
                delegate,
                relationship,
                scope: s,
                actions: a,
                purposes: p,
                period: when,
            } => AccessOp::Delegate {
                delegate,
                terms: DelegationTerms {
                    relationship,
                    scope: scope(s)?,
                    actions: actions(&a)?,
                    purposes: purposes(&p)?,
                    period: period(&when, now)?,
                },
            },
            OpForm::RevokeDelegation { delegation, reason } => {
                AccessOp::RevokeDelegation { delegation, reason }
            }
            OpForm::ReviewBreakGlass {
                session,
                outcome,
                note,
            } => AccessOp::ReviewBreakGlass {
                session,
                outcome: match outcome.as_str() {
                    "acknowledged" => ReviewOutcome::Acknowledged,
                    "disputed" => ReviewOutcome::Disputed,
                    o => {
                        return Err(ApiError::bad_request(format!(
                            "unknown review outcome {o:?}: acknowledged or disputed"
                        )))
                    }
                },
                note,
            },
            OpForm::Access { access } => access,
        })
    }
}

/// An unsigned transaction and the bytes to sign.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    /// The signer's account (the key's, counting rotations).
    pub account: String,
    /// The nonce the transaction carries: the account's next, counting pending transactions.
    pub nonce: u64,
    /// The canonical transaction with a zero signature, hex: post it back with the signature.
    pub unsigned_tx: String,
    /// The exact bytes the Ed25519 signature covers, hex.
    pub signing_message: String,
    /// The transaction, in the library's JSON form (to show the signer what it signs).
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    /// What it would do if signed now (events, for people).
    pub would: Vec<String>,
}

/// Builds the template of `op` for `signer` on the node.
///
/// # Errors
///
/// The refusal a dry run gives (nothing is added).
pub fn build_template(
    node: &mut dyn NodeAccess,
    signer: PublicKey,
    op: AccessOp,
) -> Result<TemplateView, ApiError> {
    let ledger = node.ledger();
    let payload = Payload::Access(op);
    let accepted = ledger
        .dry_run_op(&signer, payload.clone())
        .map_err(|r| ApiError::from_refusal(&r))?;
    let account = ledger.account_of_key(&signer);
    let body = TxBody {
        chain_id: ledger.chain_id(),
        signer,
        nonce: ledger.next_nonce(&account),
        payload,
    };
    let signing_message = hex_encode(&body.signing_message());
    let json = serde_json::to_value(&body).unwrap_or(serde_json::Value::Null);
    let nonce = body.nonce;
    let unsigned = Transaction {
        body,
        signature: Signature::from_bytes([0; 64]),
    };
    Ok(TemplateView {
        account: account.to_string(),
        nonce,
        unsigned_tx: hex_encode(&unsigned.encode()),
        signing_message,
        body: json,
        would: accepted.events.iter().map(|e| format!("{e:#}")).collect(),
    })
}

/// An unsigned transaction for a client to sign: the signer's next nonce, the bytes to sign,
/// and what it would do. Refused (with the chain's reason) if it would be refused now.
#[utoipa::path(post, path = "/tx/template", request_body = TemplateRequest,
    responses((status = 200, body = TemplateView), (status = "4XX", body = super::ErrorBody)))]
pub async fn template(
    State(state): State<AppState>,
    Body(req): Body<TemplateRequest>,
) -> Result<Json<TemplateView>, ApiError> {
    req.signer
        .verifying_key()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let view = state
        .node
        .ask(move |node| {
            let op = req.op.into_op(&req.signer, node.now_secs())?;
            build_template(node, req.signer, op)
        })
        .await??;
    Ok(Json(view))
}

/// A signed transaction: either `tx` (the canonical transaction, hex) or `unsigned_tx` from a
/// template with the author's `signature`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// A signed canonical transaction, hex.
    #[serde(default)]
    pub tx: Option<String>,
    /// A template's `unsigned_tx`.
    #[serde(default)]
    pub unsigned_tx: Option<String>,
    /// The Ed25519 signature over the template's `signing_message`, 128 hex digits.
    #[serde(default)]
    pub signature: Option<String>,
}

impl SubmitRequest {
    /// The signed transaction it carries.
    ///
    /// # Errors
    ///
    /// 400 if it carries none, or it does not decode.
    pub fn transaction(&self) -> Result<Transaction, ApiError> {
        let decode = |hex: &str| -> Result<Transaction, ApiError> {
            let bytes =
                hex_decode(hex).map_err(|e| ApiError::bad_request(format!("transaction: {e}")))?;
            if bytes.len() > medledger::tx::MAX_TX_LEN {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "transaction_too_large",
                    format!(
                        "a transaction is at most {} bytes",
                        medledger::tx::MAX_TX_LEN
                    ),
                ));
            }
            Transaction::decode(&bytes)
                .map_err(|e| ApiError::bad_request(format!("transaction: {e}")))
        };
        match (&self.tx, &self.unsigned_tx, &self.signature) {
            (Some(tx), None, None) => decode(tx),
            (None, Some(unsigned), Some(sig)) => {
                let mut tx = decode(unsigned)?;
                tx.signature = sig
                    .trim()
                    .parse::<Signature>()
                    .map_err(|e| ApiError::bad_request(format!("signature: {e}")))?;
                Ok(tx)
            }
            _ => Err(ApiError::bad_request(
                "send either `tx`, or `unsigned_tx` and `signature`",
            )),
        }
    }
}

/// A transaction the node took.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmittedView {
    /// Its id.
    pub id: String,
    /// `pending` (in the pool, relayed to the other nodes).
    pub status: String,
    /// The objects it creates (final once included), as `kind id` (`grant 1f…`).
    pub created: Vec<String>,
    /// What it does, for people.
    pub events: Vec<String>,
}

/// Submits `tx` on the node: the ledger's dry run gives the typed refusal; then the engine
/// takes it (and relays it).
///
/// # Errors
///
/// The refusal; nothing is added.
pub fn submit_on(node: &mut dyn NodeAccess, tx: Transaction) -> Result<SubmittedView, ApiError> {
    let accepted = node
        .ledger()
        .dry_run(&tx)
        .map_err(|r: Refusal<MedRec>| ApiError::from_refusal(&r))?;
    let id = node
        .submit(tx)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string()))?;
    Ok(SubmittedView {
        id,
        status: "pending".into(),
        created: accepted.created.iter().map(|c| c.to_string()).collect(),
        events: accepted.events.iter().map(|e| format!("{e:#}")).collect(),
    })
}

/// The answer to a request that submitted transactions: 202 Accepted (they are pending) with
/// `view`, what they are.
pub fn accepted<T>(view: T) -> (StatusCode, Json<T>) {
    (StatusCode::ACCEPTED, Json(view))
}

/// Submits `tx`, signed by its author, as [`submit_on`] does.
///
/// # Errors
///
/// The chain's refusal (nothing is added), or 503 if the node has stopped.
pub async fn submit_signed(state: &AppState, tx: Transaction) -> Result<SubmittedView, ApiError> {
    state.node.ask(move |node| submit_on(node, tx)).await?
}

/// Signs `op` with the node's own key (the hospital's provider account) and its next nonce,
/// and submits it as [`submit_on`] does.
///
/// # Errors
///
/// The chain's refusal (nothing is added), or 503 if the node has stopped.
pub async fn submit_as_node(state: &AppState, op: AccessOp) -> Result<SubmittedView, ApiError> {
    let key = state.provider.clone();
    state
        .node
        .ask(move |node| sign_and_submit_on(node, &key, op))
        .await?
}

/// Signs each of `ops` with the node's own key, with consecutive nonces, and submits them in
/// order. Each is dry-run first, and a refusal there submits none of them.
///
/// # Errors
///
/// The first refusal, naming the chain's reason, or 503 if the node has stopped.
pub async fn submit_all_as_node(
    state: &AppState,
    ops: Vec<AccessOp>,
) -> Result<Vec<SubmittedView>, ApiError> {
    let key = state.provider.clone();
    state
        .node
        .ask(move |node| {
            for op in &ops {
                node.ledger()
                    .dry_run_op(&key.public(), Payload::Access(op.clone()))
                    .map_err(|r| ApiError::from_refusal(&r))?;
            }
            ops.into_iter()
                .map(|op| sign_and_submit_on(node, &key, op))
                .collect()
        })
        .await?
}

fn sign_and_submit_on(
    node: &mut dyn NodeAccess,
    key: &Keypair,
    op: AccessOp,
) -> Result<SubmittedView, ApiError> {
    let tx = node.ledger().sign(key, Payload::Access(op));
    submit_on(node, tx)
}

/// Submits a transaction signed by its author. Accepted transactions are pending (and relayed
/// to the other nodes); refused ones change nothing and say why.
#[utoipa::path(post, path = "/tx", request_body = SubmitRequest,
    responses((status = 202, body = SubmittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    Body(req): Body<SubmitRequest>,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    submit_signed(&state, req.transaction()?)
        .await
        .map(accepted)
}

/// Where a transaction stands.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TxStatusView {
    /// Its id.
    pub id: String,
    /// `pending`, `included`, `refused` or `unknown`.
    pub status: String,
    /// The block's height, if included.
    pub height: Option<u64>,
    /// Why, if refused.
    pub reason: Option<String>,
}

/// Parses a path identifier.
///
/// # Errors
///
/// 400 naming the parameter.
pub fn parse_id<T: core::str::FromStr>(what: &str, s: &str) -> Result<T, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{what}: expected 64 hex digits, got {s:?}")))
}

/// Where transaction `id` stands: pending, included at a height, refused (why), or unknown.
#[utoipa::path(get, path = "/tx/{id}", params(("id" = String, Path, description = "transaction id")),
    responses((status = 200, body = TxStatusView), (status = 400, body = super::ErrorBody)))]
pub async fn status_of(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TxStatusView>, ApiError> {
    let tx: TxId = parse_id("transaction id", &id)?;
    let status = state
        .node
        .ask(move |node| node.ledger().status(&tx))
        .await?;
    let (status, height, reason) = match status {
        Some(TxStatus::Pending) => ("pending", None, None),
        Some(TxStatus::Included { height, .. }) => ("included", Some(height), None),
        Some(TxStatus::Refused(r)) => ("refused", None, Some(r.to_string())),
        None => ("unknown", None, None),
    };
    Ok(Json(TxStatusView {
        id: tx.to_string(),
        status: status.into(),
        height,
        reason,
    }))
}
