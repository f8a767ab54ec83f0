//! The gatekeeper: signed access requests, decided against the chain, and their receipts.
//!
//! A viewer (a specialist's EMR, say) asks the provider's database for a record with a
//! **signed access request**: who (its key), whose record, which record, to do what, for which
//! purpose, when (`issued_at`), and a 16-byte random `nonce`, signed with Ed25519 over
//! [`request_message`]. The node refuses it if the signature does not verify (401
//! `bad_signature`), if `issued_at` lies more than the window away from its clock (401
//! `stale_request`), or if the same viewer used the nonce before within the window (409
//! `replayed_request`); otherwise it decides at the chain's tip and answers the decision and
//! its reason. A denial is an answer, not an error (200).
//!
//! A permit comes with the **receipt** to record: the viewer's unsigned
//! [`medledger::access::AccessOp::RecordAccess`] for exactly that read
//! and its basis (a [`TemplateView`]). The viewer signs it and posts it to `/gate/receipt` with
//! the request's nonce; the node checks it is the receipt of that permitted request, submits it
//! (the chain checks the basis again at the block's time and appends it to the patient's audit
//! trail) and answers its id: the provider's database releases the record then.
//!
//! The message a viewer signs is fixed-layout bytes, easy to build in any language:
//!
//! | bytes | field |
//! | --- | --- |
//! | 33 | [`REQUEST_CONTEXT`] `medledger/gate/access-request/v1:` |
//! | 32 | chain id |
//! | 32 | viewer's public key |
//! | 32 | patient's account |
//! | 32 | record pointer |
//! | 1 | action (`0` read, `1` disclose) |
//! | 1 | purpose (position in `PurposeOfUse::ALL`: `0` TREAT, `1` ETREAT…) |
//! | 8 | `issued_at`, Unix seconds, big-endian |
//! | 16 | nonce |

use std::collections::{HashMap, VecDeque};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use medledger::access::{AccessOp, AccessRequest, Action, Basis, Decision, PointerId};
use medledger::hash::{AccountId, ChainId};
use medledger::purpose::PurposeOfUse;
use medledger::tx::{Keypair, PublicKey, Signature};
use medledger::Payload;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::tx::{accepted, build_template, submit_on, SubmitRequest, SubmittedView, TemplateView};
use super::{ApiError, AppState, Body};
use crate::config::{hex_decode, hex_encode};

/// The prefix of every access-request signing message.
pub const REQUEST_CONTEXT: &[u8] = b"medledger/gate/access-request/v1:";

/// The most nonces remembered at once (one window's worth): beyond it requests are refused
/// (503) until older ones age out.
pub const MAX_REMEMBERED_NONCES: usize = 1 << 20;

/// The gate's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/gate/access", post(access))
        .route("/gate/receipt", post(receipt))
}

/// What a viewer asks, before signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestFields {
    /// The viewer's public key.
    pub viewer: PublicKey,
    /// The patient.
    pub patient: AccountId,
    /// The record.
    pub pointer: PointerId,
    /// What to do.
    pub action: Action,
    /// Why.
    pub purpose: PurposeOfUse,
    /// When it was issued, Unix seconds.
    pub issued_at: u64,
    /// 16 random bytes, never used twice by the viewer within the window.
    pub nonce: [u8; 16],
}

fn position<T: PartialEq>(all: &[T], item: &T) -> u8 {
    all.iter().position(|x| x == item).unwrap_or(0) as u8
}

/// The bytes a viewer signs for `fields` on chain `chain_id` (layout in the module docs).
pub fn request_message(chain_id: &ChainId, fields: &RequestFields) -> Vec<u8> {
    let mut m = Vec::with_capacity(REQUEST_CONTEXT.len() + 32 * 4 + 2 + 8 + 16);
    m.extend_from_slice(REQUEST_CONTEXT);
    m.extend_from_slice(chain_id.as_bytes());
    m.extend_from_slice(fields.viewer.as_bytes());
    m.extend_from_slice(fields.patient.as_bytes());
    m.extend_from_slice(fields.pointer.as_bytes());
    m.push(position(&Action::ALL, &fields.action));
    m.push(position(&PurposeOfUse::ALL, &fields.purpose));
    m.extend_from_slice(&fields.issued_at.to_be_bytes());
    m.extend_from_slice(&fields.nonce);
    m
}

/// A signed access request, as posted to `/gate/access`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest {
    /// The viewer's Ed25519 public key, 64 hex digits.
    pub viewer: String,
    /// The patient's account.
    pub patient: String,
    /// The record pointer.
    pub pointer: String,
    /// `read` or `disclose`.
    pub action: String,
    /// HL7 purpose of use code (`TREAT`…).
    pub purpose: String,
    /// When it was issued, Unix seconds.
    pub issued_at: u64,
    /// 16 random bytes, 32 hex digits.
    pub nonce: String,
    /// Ed25519 signature over the request message, 128 hex digits.
    pub signature: String,
}

impl SignedRequest {
    /// Signs `fields` as `viewer` on `chain_id` (for clients written in Rust).
    pub fn sign(viewer: &Keypair, chain_id: &ChainId, fields: &RequestFields) -> Self {
        let signature = viewer.sign(&request_message(chain_id, fields));
        Self {
            viewer: fields.viewer.to_string(),
            patient: fields.patient.to_string(),
            pointer: fields.pointer.to_string(),
            action: fields.action.to_string(),
            purpose: fields.purpose.code().to_string(),
            issued_at: fields.issued_at,
            nonce: hex_encode(&fields.nonce),
            signature: signature.to_string(),
        }
    }

    /// The fields and the signature.
    ///
    /// # Errors
    ///
    /// 400 naming the malformed field.
    pub fn parse(&self) -> Result<(RequestFields, Signature), ApiError> {
        use super::tx::parse_id;
        let action = super::tx::actions(std::slice::from_ref(&self.action))?
            .iter()
            .next()
            .ok_or_else(|| ApiError::bad_request("no action"))?;
        let purpose = super::tx::purposes(std::slice::from_ref(&self.purpose))?
            .iter()
            .next()
            .ok_or_else(|| ApiError::bad_request("no purpose"))?;
        let nonce: [u8; 16] = hex_decode(&self.nonce)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ApiError::bad_request("nonce: expected 32 hex digits (16 bytes)"))?;
        let signature = self
            .signature
            .trim()
            .parse::<Signature>()
            .map_err(|e| ApiError::bad_request(format!("signature: {e}")))?;
        Ok((
            RequestFields {
                viewer: parse_id("viewer", &self.viewer)?,
                patient: parse_id("patient", &self.patient)?,
                pointer: parse_id("pointer", &self.pointer)?,
                action,
                purpose,
                issued_at: self.issued_at,
                nonce,
            },
            signature,
        ))
    }
}

/// A permitted request waiting for its receipt.
#[derive(Clone, Copy, Debug)]
struct Ticket {
    request: AccessRequest,
    basis: Basis,
    expires: u64,
}

/// The gate's memory: nonces seen within the window, and permits awaiting their receipt.
pub(crate) struct Gate {
    window: u64,
    seen: HashMap<(AccountId, [u8; 16]), u64>,
    order: VecDeque<(u64, AccountId, [u8; 16])>,
    tickets: HashMap<(AccountId, [u8; 16]), Ticket>,
}

impl Gate {
    pub(crate) fn new(window: u64) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
            tickets: HashMap::new(),
        }
    }

    /// Forgets what is older than the window (such requests are stale anyway).
    fn prune(&mut self, now: u64) {
        while let Some(&(expires, viewer, nonce)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&(viewer, nonce));
            self.tickets.remove(&(viewer, nonce));
        }
    }

    /// Checks freshness and records the nonce, or refuses.
    fn admit(&mut self, viewer: AccountId, f: &RequestFields, now: u64) -> Result<(), ApiError> {
        if f.issued_at.abs_diff(now) > self.window {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "stale_request",
                format!(
                    "issued at {} but the node's clock says {now}: more than {} s apart",
                    f.issued_at, self.window
                ),
            ));
        }
        self.prune(now);
        if self.seen.contains_key(&(viewer, f.nonce)) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replayed_request",
                format!(
                    "nonce {} was already used by this viewer",
                    hex_encode(&f.nonce)
                ),
            ));
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many requests within the freshness window; retry later",
            ));
        }
        // Remembered until the request could no longer be fresh.
        let expires = f.issued_at.max(now) + self.window + 1;
        self.seen.insert((viewer, f.nonce), expires);
        self.order.push_back((expires, viewer, f.nonce));
        Ok(())
    }
}

/// The gate's answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    /// `permit` or `deny`.
    pub decision: String,
    /// What permits it (`grant 1f…`, `the patient`…), for a permit.
    pub basis: Option<String>,
    /// The basis in the library's JSON form, for a permit.
    #[schema(value_type = Option<Object>)]
    pub basis_json: Option<serde_json::Value>,
    /// Why not, for a denial.
    pub reason: Option<String>,
    /// The chain height decided at.
    pub height: u64,
    /// The time decided at (the node's clock).
    pub time: u64,
    /// For a permit: the viewer's receipt to sign and post to `/gate/receipt`.
    pub receipt: Option<TemplateView>,
}

/// Decides a signed access request: 200 with the decision and its reason (a denial too); a
/// permit comes with the receipt to sign. Refused: bad signature, stale, replayed, malformed.
#[utoipa::path(post, path = "/gate/access", request_body = SignedRequest,
    responses((status = 200, body = DecisionView), (status = "4XX", body = super::ErrorBody)))]
pub async fn access(
    State(state): State<AppState>,
    Body(req): Body<SignedRequest>,
) -> Result<Json<DecisionView>, ApiError> {
    let (fields, signature) = req.parse()?;
    let key = fields
        .viewer
        .verifying_key()
        .map_err(|e| ApiError::bad_request(format!("viewer: {e}")))?;
    let sig = ed25519_signature(&signature);
    key.verify_strict(&request_message(&state.chain_id, &fields), &sig)
        .map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the request's signature does not verify for the viewer's key",
            )
        })?;
    let gate = state.gate.clone();
    let view = state
        .node
        .ask(move |node| -> Result<DecisionView, ApiError> {
            let now = node.now_secs();
            let ledger = node.ledger();
            let chain = ledger.chain();
            if let Some(retired) = chain.state().key(&fields.viewer).and_then(|k| k.retired_at) {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "key_retired",
                    format!("the viewer's key was retired at height {retired}"),
                ));
            }
            let viewer = chain.state().account_of_key(&fields.viewer);
            let request = AccessRequest::new(
                viewer,
                fields.patient,
                fields.pointer,
                fields.action,
                fields.purpose,
                now,
            );
            let mut gate = gate.lock().map_err(|_| ApiError::node_stopped())?;
            gate.admit(viewer, &fields, now)?;
            let decision = chain.decide(&request);
            let height = chain.height();
            Ok(match decision {
                Decision::Permit(basis) => {
                    let expires = now + gate.window;
                    gate.tickets.insert(
                        (viewer, fields.nonce),
                        Ticket {
                            request,
                            basis,
                            expires,
                        },
                    );
                    drop(gate);
                    let receipt = build_template(
                        node,
                        fields.viewer,
                        AccessOp::record_access(&request, basis),
                    )
                    .ok();
                    DecisionView {
                        decision: "permit".into(),
                        basis: Some(basis.to_string()),
                        basis_json: serde_json::to_value(basis).ok(),
                        reason: None,
                        height,
                        time: now,
                        receipt,
                    }
                }
                Decision::Deny(reason) => DecisionView {
                    decision: "deny".into(),
                    basis: None,
                    basis_json: None,
                    reason: Some(reason.to_string()),
                    height,
                    time: now,
                    receipt: None,
                },
            })
        })
        .await??;
    Ok(Json(view))
}

fn ed25519_signature(s: &Signature) -> ed25519_dalek::Signature {
    ed25519_dalek::Signature::from_bytes(&s.to_bytes())
}

/// The receipt of a permitted request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    /// The access request's nonce (32 hex digits).
    pub nonce: String,
    /// The signed receipt: `tx`, or the template's `unsigned_tx` and `signature`.
    #[serde(flatten)]
    pub transaction: SubmitRequest,
}

/// Records the receipt of a permitted request: it must be the viewer's `RecordAccess` of
/// exactly that read and basis, within the window. Answers the receipt's transaction.
#[utoipa::path(post, path = "/gate/receipt", request_body = ReceiptRequest,
    responses((status = 202, body = SubmittedView), (status = "4XX", body = super::ErrorBody)))]
pub async fn receipt(
    State(state): State<AppState>,
    Body(req): Body<ReceiptRequest>,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    let nonce: [u8; 16] = hex_decode(&req.nonce)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("nonce: expected 32 hex digits (16 bytes)"))?;
    let tx = req.transaction.transaction()?;
    let gate = state.gate.clone();
    let view = state
        .node
        .ask(move |node| -> Result<SubmittedView, ApiError> {
            let now = node.now_secs();
            let viewer = node.ledger().account_of_key(&tx.body.signer);
            let key = (viewer, nonce);
            let ticket = {
                let mut gate = gate.lock().map_err(|_| ApiError::node_stopped())?;
                gate.prune(now);
                match gate.tickets.get(&key) {
                    Some(t) if t.expires >= now => *t,
                    _ => return Err(ApiError::not_found(
                        "no permitted request of this viewer with this nonce is awaiting a receipt",
                    )),
                }
            };
            let expected = Payload::Access(AccessOp::record_access(&ticket.request, ticket.basis));
            if tx.body.payload != expected {
                return Err(ApiError::bad_request(
                    "the receipt does not record the permitted request and its basis",
                ));
            }
            let view = submit_on(node, tx)?;
            if let Ok(mut gate) = gate.lock() {
                gate.tickets.remove(&key);
            }
            Ok(view)
        })
        .await??;
    Ok(accepted(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(nonce: u8, issued_at: u64) -> RequestFields {
        RequestFields {
            viewer: Keypair::from_secret_bytes(&[1; 32]).public(),
            patient: AccountId::from_bytes([2; 32]),
            pointer: PointerId::from_bytes([3; 32]),
            action: Action::Disclose,
            purpose: PurposeOfUse::Research,
            issued_at,
            nonce: [nonce; 16],
        }
    }

    #[test]
    fn the_request_message_has_the_documented_layout() {
        let chain = ChainId::from_bytes([9; 32]);
        let f = fields(4, 0x0102_0304_0506_0708);
        let m = request_message(&chain, &f);
        assert_eq!(m.len(), REQUEST_CONTEXT.len() + 4 * 32 + 1 + 1 + 8 + 16);
        let mut at = REQUEST_CONTEXT.len();
        assert_eq!(&m[..at], b"medledger/gate/access-request/v1:");
        for part in [
            chain.as_bytes(),
            f.viewer.as_bytes(),
            f.patient.as_bytes(),
            f.pointer.as_bytes(),
        ] {
            assert_eq!(&m[at..at + 32], part);
            at += 32;
        }
        assert_eq!(m[at], 1, "disclose is action 1");
        assert_eq!(m[at + 1], 5, "HRESCH is purpose 5");
        assert_eq!(&m[at + 2..at + 10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&m[at + 10..], &[4; 16]);
    }

    #[test]
    fn a_signed_request_parses_back_to_its_fields() {
        let chain = ChainId::from_bytes([9; 32]);
        let viewer = Keypair::from_secret_bytes(&[1; 32]);
        let f = fields(7, 1_800_000_000);
        let signed = SignedRequest::sign(&viewer, &chain, &f);
        let (parsed, signature) = signed.parse().unwrap();
        assert_eq!(parsed, f);
        assert_eq!(signature, viewer.sign(&request_message(&chain, &f)));
        let mut bad = signed.clone();
        bad.nonce = "00".into();
        assert_eq!(bad.parse().unwrap_err().code, "malformed_request");
        bad = signed;
        bad.purpose = "SHOPPING".into();
        assert!(bad.parse().unwrap_err().message.contains("SHOPPING"));
    }

    #[test]
    fn the_gate_refuses_stale_and_replayed_requests_and_forgets_after_the_window() {
        let mut gate = Gate::new(60);
        let viewer = AccountId::from_bytes([5; 32]);
        let now = 1_000_000;
        assert_eq!(
            gate.admit(viewer, &fields(1, now - 61), now)
                .unwrap_err()
                .code,
            "stale_request"
        );
        assert_eq!(
            gate.admit(viewer, &fields(1, now + 61), now)
                .unwrap_err()
                .code,
            "stale_request"
        );
        gate.admit(viewer, &fields(1, now - 60), now).unwrap();
        assert_eq!(
            gate.admit(viewer, &fields(1, now), now).unwrap_err().code,
            "replayed_request"
        );
        // Another viewer may use the same nonce.
        gate.admit(AccountId::from_bytes([6; 32]), &fields(1, now), now)
            .unwrap();
        // Once a request with that nonce could no longer be fresh, the nonce is forgotten.
        let later = now + 61;
        gate.admit(viewer, &fields(1, later), later).unwrap();
        assert_eq!(gate.seen.len(), 1, "the older nonces were pruned");
    }
}
