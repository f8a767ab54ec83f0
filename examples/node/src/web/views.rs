//! What the web API answers: JSON views of the ledger's objects. Identifiers are 64 lower-case
//! hex digits, times Unix seconds, purposes HL7 `PurposeOfUse` codes (`TREAT`), actions
//! `read` / `disclose`.

use medledger::access::{
    ActionSet, AuditEntry, BreakGlass, Delegation, Grant, Pointer, PurposeSet, Reader, Revocation,
    Scope, SummaryItem,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every refusal's body.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: ErrorDetail,
}

/// A refusal: a stable code and a message.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable (`bad_signature`, `stale_request`, `replayed_request`, `body_too_large`…).
    pub code: String,
    /// For people.
    pub message: String,
}

/// The node's chain.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    /// The chain id (covered by every signature).
    pub chain_id: String,
    /// Height of the tip.
    pub height: u64,
    /// Hash of the tip.
    pub tip: String,
    /// Timestamp of the tip.
    pub time: u64,
    /// The hospital's provider account (the node's key).
    pub provider: String,
    /// Transactions waiting for a block.
    pub pending: usize,
    /// The node's clock, Unix seconds (access requests are fresh against it).
    pub now: u64,
}

/// The actions of a set, by name.
pub fn action_names(set: &ActionSet) -> Vec<String> {
    set.iter().map(|a| a.to_string()).collect()
}

/// The purposes of a set, by HL7 code.
pub fn purpose_codes(set: &PurposeSet) -> Vec<String> {
    set.iter().map(|p| p.code().to_string()).collect()
}

/// A scope, readably.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ScopeView {
    /// Every record of the relationship, present and future.
    pub all: bool,
    /// Records (first versions).
    pub pointers: Vec<String>,
    /// Categories of records.
    pub categories: Vec<String>,
}

impl From<&Scope> for ScopeView {
    fn from(scope: &Scope) -> Self {
        match scope {
            Scope::All => Self {
                all: true,
                pointers: Vec::new(),
                categories: Vec::new(),
            },
            Scope::Only {
                pointers,
                categories,
            } => Self {
                all: false,
                pointers: pointers.iter().map(|p| p.to_string()).collect(),
                categories: categories.iter().map(|c| c.to_string()).collect(),
            },
        }
    }
}

/// One relationship of a patient.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RelationshipView {
    /// Its id.
    pub relationship: String,
    /// The other party (the provider, for a patient).
    pub counterparty: String,
    /// The other party's registered name, if an organisation.
    pub counterparty_name: Option<String>,
    /// `pending`, `accepted`, `rejected` or `terminated`.
    pub status: String,
    /// Height of the last change.
    pub since_height: u64,
    /// Time of the last change.
    pub since_time: u64,
    /// Record pointers it holds.
    pub pointers: u32,
}

impl RelationshipView {
    /// The view of a summary line; `name` is the counterparty's organisation name.
    pub fn of(item: &SummaryItem, name: Option<String>) -> Self {
        Self {
            relationship: item.relationship.to_string(),
            counterparty: item.counterparty.to_string(),
            counterparty_name: name,
            status: item.status.to_string(),
            since_height: item.since.height,
            since_time: item.since.time,
            pointers: item.pointers,
        }
    }
}

/// A record pointer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PointerView {
    /// Its id.
    pub pointer: String,
    /// The relationship.
    pub relationship: String,
    /// The provider keeping the record.
    pub provider: String,
    /// Where the provider's database finds it.
    pub query: String,
    /// The record's content hash.
    pub content_hash: String,
    /// Its category.
    pub category: String,
    /// The first version's id (the record's name in scopes).
    pub origin: String,
    /// Height it was added at.
    pub height: u64,
}

impl From<&Pointer> for PointerView {
    fn from(p: &Pointer) -> Self {
        Self {
            pointer: p.id.to_string(),
            relationship: p.relationship.to_string(),
            provider: p.provider.to_string(),
            query: p.record.query.as_str().to_string(),
            content_hash: p.record.content_hash.to_string(),
            category: p.record.category.to_string(),
            origin: p.origin.to_string(),
            height: p.added.height,
        }
    }
}

/// A revocation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RevocationView {
    /// Who revoked.
    pub by: String,
    /// Height.
    pub height: u64,
    /// Time.
    pub time: u64,
    /// Why.
    pub reason: String,
    /// What caused it (a revocation, a delegation's end, a termination).
    pub cause: String,
}

impl From<&Revocation> for RevocationView {
    fn from(r: &Revocation) -> Self {
        Self {
            by: r.by.to_string(),
            height: r.at.height,
            time: r.at.time,
            reason: r.reason.as_str().to_string(),
            cause: r.cause.to_string(),
        }
    }
}

/// A grant, with its revocation if it was revoked.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    /// Its id.
    pub grant: String,
    /// The relationship.
    pub relationship: String,
    /// The viewer: an account or a group (`Display` form: `account …` / `group …`).
    pub viewer: String,
    /// Which records.
    pub scope: ScopeView,
    /// Actions.
    pub actions: Vec<String>,
    /// Purposes (HL7 codes).
    pub purposes: Vec<String>,
    /// First second of validity.
    pub start: u64,
    /// First second after validity.
    pub end: u64,
    /// How many nested provisions.
    pub provisions: usize,
    /// Who made it (the patient or a delegate).
    pub granted_by: String,
    /// The delegation it was made under.
    pub under: Option<String>,
    /// Height it was made at.
    pub height: u64,
    /// Its revocation.
    pub revoked: Option<RevocationView>,
}

impl GrantView {
    /// The view of `grant` and its revocation.
    pub fn of(grant: &Grant, revoked: Option<&Revocation>) -> Self {
        let t = &grant.terms;
        Self {
            grant: grant.id.to_string(),
            relationship: t.relationship.to_string(),
            viewer: t.viewer.to_string(),
            scope: (&t.scope).into(),
            actions: action_names(&t.actions),
            purposes: purpose_codes(&t.purposes),
            start: t.period.start,
            end: t.period.end,
            provisions: t.provisions.len(),
            granted_by: grant.granted_by.to_string(),
            under: grant.under.map(|d| d.to_string()),
            height: grant.created.height,
            revoked: revoked.map(Into::into),
        }
    }
}

/// A delegation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DelegationView {
    /// Its id.
    pub delegation: String,
    /// The guardian.
    pub delegate: String,
    /// The one relationship it covers, or all.
    pub relationship: Option<String>,
    /// Which records.
    pub scope: ScopeView,
    /// Actions it may grant.
    pub actions: Vec<String>,
    /// Purposes it may grant.
    pub purposes: Vec<String>,
    /// First second of validity.
    pub start: u64,
    /// First second after validity.
    pub end: u64,
    /// Grants made under it.
    pub grants: u32,
    /// Its revocation.
    pub revoked: Option<RevocationView>,
}

impl From<&Delegation> for DelegationView {
    fn from(d: &Delegation) -> Self {
        let t = &d.terms;
        Self {
            delegation: d.id.to_string(),
            delegate: d.delegate.to_string(),
            relationship: t.relationship.map(|r| r.to_string()),
            scope: (&t.scope).into(),
            actions: action_names(&t.actions),
            purposes: purpose_codes(&t.purposes),
            start: t.period.start,
            end: t.period.end,
            grants: d.grants,
            revoked: d.revoked.as_ref().map(Into::into),
        }
    }
}

/// One entry of a patient's audit trail.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Position in the trail.
    pub seq: u64,
    /// Height.
    pub height: u64,
    /// Time.
    pub time: u64,
    /// The transaction.
    pub tx: String,
    /// Who signed it.
    pub actor: String,
    /// `true` for an access receipt (a read or disclosure).
    pub access: bool,
    /// What happened, for people.
    pub text: String,
    /// What happened, as the library's JSON form of the event.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

impl From<&AuditEntry> for AuditView {
    fn from(e: &AuditEntry) -> Self {
        Self {
            seq: e.seq,
            height: e.at.height,
            time: e.at.time,
            tx: e.tx.to_string(),
            actor: e.actor.to_string(),
            access: matches!(e.event, medledger::access::AccessEvent::Accessed { .. }),
            text: format!("{:#}", e.event),
            event: serde_json::to_value(&e.event).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A break-glass session on a patient's records.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassView {
    /// Its id.
    pub session: String,
    /// The provider that opened it.
    pub provider: String,
    /// Why.
    pub reason: String,
    /// Height it was opened at.
    pub opened_height: u64,
    /// Time it was opened at.
    pub opened_time: u64,
    /// When it ends (or ended) at the latest.
    pub expires_at: u64,
    /// Whether the provider closed it early.
    pub closed: bool,
    /// Whether the patient still has to review it.
    pub awaiting_review: bool,
    /// The patient's verdict, if reviewed.
    pub review: Option<String>,
}

impl From<&BreakGlass> for BreakGlassView {
    fn from(s: &BreakGlass) -> Self {
        Self {
            session: s.id.to_string(),
            provider: s.provider.to_string(),
            reason: s.reason.as_str().to_string(),
            opened_height: s.opened.height,
            opened_time: s.opened.time,
            expires_at: s.expires_at,
            closed: s.closed.is_some(),
            awaiting_review: s.review.is_none(),
            review: s.review.as_ref().map(|r| r.outcome.to_string()),
        }
    }
}

/// Someone who may use a record.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReaderView {
    /// The viewer.
    pub viewer: String,
    /// What permits it.
    pub basis: String,
    /// Actions.
    pub actions: Vec<String>,
    /// Purposes.
    pub purposes: Vec<String>,
}

impl From<&Reader> for ReaderView {
    fn from(r: &Reader) -> Self {
        Self {
            viewer: r.viewer.to_string(),
            basis: r.basis.to_string(),
            actions: action_names(&r.actions),
            purposes: purpose_codes(&r.purposes),
        }
    }
}

/// A permission a revocation would take away.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LossView {
    /// The viewer.
    pub viewer: String,
    /// The record.
    pub pointer: String,
    /// The action.
    pub action: String,
    /// The purpose.
    pub purpose: String,
}
