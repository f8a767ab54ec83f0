//! Why an access-control operation is refused.

use super::{
    BreakGlassId, Category, DelegationId, DenyReason, Epsilon, GrantId, GroupId, PointerId,
    QueryId, RelationshipId, RelationshipStatus, ReportNonce, Role, StudyId,
};
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::AccountId;
use crate::tx::PublicKey;

/// Why an access-control operation was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The account has not registered.
    #[error("account {0} is not registered")]
    NotRegistered(AccountId),
    /// The account has registered before.
    #[error("account {0} is already registered")]
    AlreadyRegistered(AccountId),
    /// Another account registered this identity.
    #[error("the identity is already registered to account {0}")]
    IdentityTaken(AccountId),
    /// The identity commitment is not the blinded identity bound to the registering account
    /// (a registration copied from another account's).
    #[error("the identity commitment is not bound to the registering account {0}")]
    CommitmentNotBound(AccountId),
    /// The role can only be given in the genesis configuration.
    #[error("the {0} role cannot be self-registered")]
    RoleNotSelfAssignable(Role),
    /// The identity is of the wrong kind for the role.
    #[error("a {role} registers with {expected}")]
    IdentityKindMismatch {
        /// The role.
        role: Role,
        /// What it registers with.
        expected: &'static str,
    },
    /// The account has another role than the operation needs.
    #[error("account {account} is a {found}, the operation needs a {expected}")]
    WrongRole {
        /// The account.
        account: AccountId,
        /// The role needed.
        expected: Role,
        /// Its role.
        found: Role,
    },
    /// The provider has no valid certification.
    #[error("provider {0} is not certified")]
    NotCertified(AccountId),
    /// The provider is not certified for emergencies.
    #[error("provider {0} is not certified for emergency access")]
    NotEmergencyCertified(AccountId),
    /// The new key is not a valid, strong Ed25519 key.
    #[error("key {0} is weak or invalid")]
    BadKey(PublicKey),
    /// The new key already signs, signed, or opened an account.
    #[error("key {0} is already in use")]
    KeyInUse(PublicKey),
    /// The new key's proof of possession does not verify.
    #[error("the new key's proof of possession does not verify")]
    BadPossession,
    /// No such relationship.
    #[error("unknown relationship {0}")]
    UnknownRelationship(RelationshipId),
    /// The pair already has its relationship.
    #[error("relationship {0} already exists")]
    RelationshipExists(RelationshipId),
    /// The account is not the patient the operation concerns.
    #[error("account {0} is not the patient")]
    NotThePatient(AccountId),
    /// The account is not the relationship's provider.
    #[error("account {0} is not the relationship's provider")]
    NotTheProvider(AccountId),
    /// The account is neither party of the relationship.
    #[error("account {0} is not a party of the relationship")]
    NotAParty(AccountId),
    /// The relationship's status does not allow the operation.
    #[error("relationship {relationship} is {status}, the operation needs it {expected}")]
    WrongStatus {
        /// The relationship.
        relationship: RelationshipId,
        /// Its status.
        status: RelationshipStatus,
        /// What the operation needs.
        expected: &'static str,
    },
    /// No such pointer.
    #[error("unknown pointer {0}")]
    UnknownPointer(PointerId),
    /// The pointer belongs to another relationship.
    #[error("pointer {pointer} is not in relationship {relationship}")]
    PointerNotInRelationship {
        /// The pointer.
        pointer: PointerId,
        /// The relationship.
        relationship: RelationshipId,
    },
    /// The pointer already has a newer version.
    #[error("pointer {0} was already replaced")]
    PointerSuperseded(PointerId),
    /// A new version must keep its record's category.
    #[error("a new version keeps the category {expected}, not {found}")]
    CategoryChanged {
        /// The category of the versions so far.
        expected: Category,
        /// The category given.
        found: Category,
    },
    /// No such grant.
    #[error("unknown grant {0}")]
    UnknownGrant(GrantId),
    /// The grant is already revoked.
    #[error("grant {0} is already revoked")]
    GrantAlreadyRevoked(GrantId),
    /// The account may not manage the grant.
    #[error("account {account} may not manage grant {grant}")]
    NotGrantManager {
        /// The account.
        account: AccountId,
        /// The grant.
        grant: GrantId,
    },
    /// No such group.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The account is already a member.
    #[error("account {0} is already a member")]
    AlreadyMember(AccountId),
    /// The account is not a member.
    #[error("account {0} is not a member")]
    NotMember(AccountId),
    /// No such delegation.
    #[error("unknown delegation {0}")]
    UnknownDelegation(DelegationId),
    /// The account is not the delegation's delegate.
    #[error("account {0} is not the delegate")]
    NotTheDelegate(AccountId),
    /// The account is neither the delegation's patient nor its delegate.
    #[error(
        "account {account} is neither the patient nor the delegate of delegation {delegation}"
    )]
    NotADelegationParty {
        /// The account.
        account: AccountId,
        /// The delegation.
        delegation: DelegationId,
    },
    /// The delegation is revoked, or the time is outside its period.
    #[error("delegation {0} is not active")]
    DelegationInactive(DelegationId),
    /// The delegation is already revoked.
    #[error("delegation {0} is already revoked")]
    DelegationAlreadyRevoked(DelegationId),
    /// A delegate tried to grant more than its delegation allows.
    #[error("the grant's {what} is wider than delegation {delegation} allows")]
    Widens {
        /// The delegation.
        delegation: DelegationId,
        /// What is wider (scope, actions, purposes, period, relationship).
        what: &'static str,
    },
    /// A period does not have `start < end`.
    #[error("invalid period [{start}, {end})")]
    InvalidPeriod {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// The period is already over at the block's time.
    #[error("the period ended at {end}, before the block's time {now}")]
    PeriodOver {
        /// The period's end.
        end: u64,
        /// The block's time.
        now: u64,
    },
    /// A set that must not be empty is.
    #[error("the {0} must not be empty")]
    Empty(&'static str),
    /// A list holds the same entry twice.
    #[error("the {0} list holds an entry twice")]
    Duplicate(&'static str),
    /// A list that must be in ascending order is not.
    #[error("the {0} list is not in ascending order")]
    NotInOrder(&'static str),
    /// A provision is malformed.
    #[error("provision {index}: {why}")]
    InvalidProvision {
        /// Its position.
        index: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// The group does not belong to the patient.
    #[error("group {0} belongs to another patient")]
    NotGroupOwner(GroupId),
    /// No such break-glass session.
    #[error("unknown break-glass session {0}")]
    UnknownSession(BreakGlassId),
    /// Break-glass duration out of bounds.
    #[error("break-glass duration {secs} s is not in 1..={max}")]
    BreakGlassDuration {
        /// The duration asked.
        secs: u64,
        /// [`MAX_BREAK_GLASS_SECS`](super::MAX_BREAK_GLASS_SECS).
        max: u64,
    },
    /// The provider already has an open session for the patient.
    #[error("break-glass session {0} is still open")]
    BreakGlassAlreadyOpen(BreakGlassId),
    /// The session is already closed.
    #[error("break-glass session {0} is already closed")]
    SessionClosed(BreakGlassId),
    /// The session is already reviewed.
    #[error("break-glass session {0} is already reviewed")]
    AlreadyReviewed(BreakGlassId),
    /// The account did not open the session.
    #[error("account {0} did not open the session")]
    NotTheOpener(AccountId),
    /// An access receipt was refused: the permission it claims does not hold.
    #[error("the permission does not hold: {0}")]
    Denied(DenyReason),
    /// A bounded list in the state is full.
    #[error("limit reached: at most {max} {what}")]
    LimitReached {
        /// What is full.
        what: &'static str,
        /// The limit.
        max: u64,
    },
    /// A validator's voting power is above [`MAX_VALIDATOR_POWER`](super::MAX_VALIDATOR_POWER).
    #[error("voting power {power} exceeds the maximum of {max}")]
    PowerTooLarge {
        /// The power asked for.
        power: u64,
        /// The maximum.
        max: u64,
    },
    /// No such study.
    #[error("unknown study {0}")]
    UnknownStudy(StudyId),
    /// The account is not the study's researcher.
    #[error("account {account} is not the researcher of study {study}")]
    NotTheResearcher {
        /// The study.
        study: StudyId,
        /// The account.
        account: AccountId,
    },
    /// The study's remaining privacy budget is smaller than the query's ε.
    #[error("study {study} has {remaining} left, the query asks for {asked}")]
    BudgetExceeded {
        /// The study.
        study: StudyId,
        /// What is left of its budget.
        remaining: Epsilon,
        /// The query's ε.
        asked: Epsilon,
    },
    /// An aggregator of the query is its researcher.
    #[error("the researcher {0} cannot aggregate its own query")]
    AggregatorIsResearcher(AccountId),
    /// A study or query parameter is out of bounds.
    #[error("invalid research query: {0}")]
    InvalidQuery(&'static str),
    /// No such query.
    #[error("unknown query {0}")]
    UnknownQuery(QueryId),
    /// The account is not one of the query's aggregators.
    #[error("account {account} is not an aggregator of query {query}")]
    NotAnAggregator {
        /// The query.
        query: QueryId,
        /// The account.
        account: AccountId,
    },
    /// The account already committed its share or result for the query.
    #[error("account {by} already committed for query {query}")]
    AlreadyCommitted {
        /// The query.
        query: QueryId,
        /// The account.
        by: AccountId,
    },
    /// A report with this nonce was already committed for the query.
    #[error("report {nonce} of query {query} was already committed")]
    ReportReplayed {
        /// The query.
        query: QueryId,
        /// The nonce.
        nonce: ReportNonce,
    },
    /// An aggregate share's report count is below the query's minimum batch, or above the
    /// reports committed.
    #[error("an aggregate share of {reports} reports: the query needs at least {min}, and {committed} were committed")]
    BatchSize {
        /// The share's report count.
        reports: u64,
        /// The query's minimum batch.
        min: u32,
        /// The reports hospitals committed.
        committed: u64,
    },
    /// A release states a smaller class size than its study's approval allows.
    #[error("the release states classes of {stated}, study {study} was approved for at least {approved}")]
    ClassSizeBelowApproval {
        /// The study.
        study: StudyId,
        /// The class size the release states.
        stated: u32,
        /// The study's minimum class size.
        approved: u32,
    },
    /// The result is published before both aggregate shares are committed.
    #[error("query {0} does not have both aggregate shares committed")]
    SharesMissing(QueryId),
    /// The evidence of this offence is already recorded.
    #[error("evidence of offence {offence} by {offender} is already recorded")]
    EvidenceAlreadyRecorded {
        /// The offender.
        offender: PublicKey,
        /// The offence.
        offence: crate::hash::Digest,
    },
}

/// Which kind of refusal an [`AccessError`] is, for callers that react by kind (an HTTP status,
/// a retry policy, a message to the user) rather than by variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RefusalKind {
    /// The operation is malformed whatever the state: a bad key, period, provision or list.
    Malformed,
    /// The actor may not do this: wrong role, not a party, not certified, or access denied.
    Unauthorised,
    /// The operation names an account or object the ledger does not know.
    Unknown,
    /// The object is not in a state that allows it (already done, closed, superseded, taken).
    Conflict,
    /// A bound on what an account may accumulate is reached.
    Limit,
}

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed",
            Self::Unauthorised => "unauthorised",
            Self::Unknown => "unknown object",
            Self::Conflict => "conflict",
            Self::Limit => "limit reached",
        })
    }
}

impl AccessError {
    /// Which kind of refusal this is.
    pub fn kind(&self) -> RefusalKind {
        use AccessError::*;
        match self {
            IdentityKindMismatch { .. }
            | BadKey(_)
            | BadPossession
            | Widens { .. }
            | InvalidPeriod { .. }
            | Empty(_)
            | Duplicate(_)
            | NotInOrder(_)
            | InvalidProvision { .. }
            | BreakGlassDuration { .. }
            | PowerTooLarge { .. }
            | AggregatorIsResearcher(_)
            | ClassSizeBelowApproval { .. }
            | InvalidQuery(_) => RefusalKind::Malformed,
            CommitmentNotBound(_)
            | RoleNotSelfAssignable(_)
            | WrongRole { .. }
            | NotCertified(_)
            | NotEmergencyCertified(_)
            | NotThePatient(_)
            | NotTheProvider(_)
            | NotAParty(_)
            | NotGrantManager { .. }
            | NotTheDelegate(_)
            | NotADelegationParty { .. }
            | NotGroupOwner(_)
            | NotTheOpener(_)
            | NotTheResearcher { .. }
            | NotAnAggregator { .. }
            | Denied(_) => RefusalKind::Unauthorised,
            NotRegistered(_)
            | UnknownRelationship(_)
            | UnknownPointer(_)
            | PointerNotInRelationship { .. }
            | UnknownGrant(_)
            | UnknownGroup(_)
            | NotMember(_)
            | UnknownDelegation(_)
            | UnknownSession(_)
            | UnknownStudy(_)
            | UnknownQuery(_) => RefusalKind::Unknown,
            AlreadyRegistered(_)
            | IdentityTaken(_)
            | KeyInUse(_)
            | RelationshipExists(_)
            | WrongStatus { .. }
            | PointerSuperseded(_)
            | CategoryChanged { .. }
            | GrantAlreadyRevoked(_)
            | AlreadyMember(_)
            | DelegationInactive(_)
            | DelegationAlreadyRevoked(_)
            | PeriodOver { .. }
            | BreakGlassAlreadyOpen(_)
            | SessionClosed(_)
            | AlreadyReviewed(_)
            | EvidenceAlreadyRecorded { .. }
            | AlreadyCommitted { .. }
            | ReportReplayed { .. }
            | BatchSize { .. }
            | SharesMissing(_) => RefusalKind::Conflict,
            LimitReached { .. } | BudgetExceeded { .. } => RefusalKind::Limit,
        }
    }
}
