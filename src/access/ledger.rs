//! The access-control side of the [`Ledger`](crate::ledger::Ledger): an [`AccessOp`] as a
//! transaction payload, and the identifiers of the objects an applied operation created, read
//! from its events (so that nobody derives them by hand).

use core::fmt;

use serde::{Deserialize, Serialize};

use super::Payload;
use super::{
    AccessEvent, AccessOp, BreakGlassId, DelegationId, GrantId, GroupId, PointerId, QueryId,
    RelationshipId, ReleaseId, StudyId,
};
use crate::hash::AccountId;

impl From<AccessOp> for Payload {
    fn from(op: AccessOp) -> Self {
        Payload::Access(op)
    }
}

/// An object an applied transaction created, by its identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Created {
    /// A registered account ([`AccessOp::Register`]).
    Account(AccountId),
    /// A relationship ([`AccessOp::CreateRelationship`]).
    Relationship(RelationshipId),
    /// A record pointer ([`AccessOp::AddPointer`]).
    Pointer(PointerId),
    /// A group ([`AccessOp::CreateGroup`]).
    Group(GroupId),
    /// A grant ([`AccessOp::Grant`]).
    Grant(GrantId),
    /// A delegation ([`AccessOp::Delegate`]).
    Delegation(DelegationId),
    /// A break-glass session ([`AccessOp::OpenBreakGlass`]).
    BreakGlass(BreakGlassId),
    /// A research data release ([`AccessOp::ReleaseResearchData`]).
    Release(ReleaseId),
    /// A research study ([`AccessOp::ApproveStudy`]).
    Study(StudyId),
    /// A research query ([`AccessOp::AnnounceQuery`]).
    Query(QueryId),
}

impl Created {
    /// The grant, if this is one.
    pub fn grant(&self) -> Option<GrantId> {
        match self {
            Created::Grant(g) => Some(*g),
            _ => None,
        }
    }
    /// The record pointer, if this is one.
    pub fn pointer(&self) -> Option<PointerId> {
        match self {
            Created::Pointer(p) => Some(*p),
            _ => None,
        }
    }
    /// The relationship, if this is one.
    pub fn relationship(&self) -> Option<RelationshipId> {
        match self {
            Created::Relationship(r) => Some(*r),
            _ => None,
        }
    }
    /// The delegation, if this is one.
    pub fn delegation(&self) -> Option<DelegationId> {
        match self {
            Created::Delegation(d) => Some(*d),
            _ => None,
        }
    }
    /// The group, if this is one.
    pub fn group(&self) -> Option<GroupId> {
        match self {
            Created::Group(g) => Some(*g),
            _ => None,
        }
    }
    /// The break-glass session, if this is one.
    pub fn break_glass(&self) -> Option<BreakGlassId> {
        match self {
            Created::BreakGlass(s) => Some(*s),
            _ => None,
        }
    }
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Created::Account(a) => write!(f, "account {a}"),
            Created::Relationship(r) => write!(f, "relationship {r}"),
            Created::Pointer(p) => write!(f, "record pointer {p}"),
            Created::Group(g) => write!(f, "group {g}"),
            Created::Grant(g) => write!(f, "grant {g}"),
            Created::Delegation(d) => write!(f, "delegation {d}"),
            Created::BreakGlass(s) => write!(f, "break-glass session {s}"),
            Created::Release(r) => write!(f, "research release {r}"),
            Created::Study(s) => write!(f, "research study {s}"),
            Created::Query(q) => write!(f, "research query {q}"),
        }
    }
}

impl AccessEvent {
    /// The object this event reports the creation of, if any.
    pub fn created(&self) -> Option<Created> {
        Some(match self {
            AccessEvent::Registered { account, .. } => Created::Account(*account),
            AccessEvent::RelationshipProposed { relationship, .. } => {
                Created::Relationship(*relationship)
            }
            AccessEvent::PointerAdded { pointer, .. } => Created::Pointer(*pointer),
            AccessEvent::GroupCreated { group, .. } => Created::Group(*group),
            AccessEvent::GrantCreated { grant, .. } => Created::Grant(*grant),
            AccessEvent::DelegationCreated { delegation, .. } => Created::Delegation(*delegation),
            AccessEvent::BreakGlassOpened { session, .. } => Created::BreakGlass(*session),
            AccessEvent::ResearchDataReleased { release, .. } => Created::Release(*release),
            AccessEvent::StudyApproved { study, .. } => Created::Study(*study),
            AccessEvent::QueryAnnounced { query, .. } => Created::Query(*query),
            AccessEvent::KeyRotated { .. }
            | AccessEvent::ProviderCertified { .. }
            | AccessEvent::ProviderDecertified { .. }
            | AccessEvent::RelationshipAccepted { .. }
            | AccessEvent::RelationshipRejected { .. }
            | AccessEvent::RelationshipTerminated { .. }
            | AccessEvent::GroupMemberAdded { .. }
            | AccessEvent::GroupMemberRemoved { .. }
            | AccessEvent::GrantRevoked { .. }
            | AccessEvent::DelegationRevoked { .. }
            | AccessEvent::BreakGlassClosed { .. }
            | AccessEvent::BreakGlassRevoked { .. }
            | AccessEvent::BreakGlassReviewed { .. }
            | AccessEvent::Accessed { .. }
            | AccessEvent::ValidatorSet { .. }
            | AccessEvent::EvidenceRecorded { .. }
            | AccessEvent::ReportsCommitted { .. }
            | AccessEvent::AggregateShareCommitted { .. }
            | AccessEvent::QueryResultPublished { .. }
            | AccessEvent::StudyDataReleased { .. } => return None,
        })
    }
}
