//! Identifiers: each derived from what it names, in a domain of its own.

use serde::Serialize;

use crate::codec;
use crate::hash::{domain, hash_newtype, AccountId, TxId};

hash_newtype! {
    /// A patient–provider relationship: derived from the pair, so there is one per pair
    /// ([`RelationshipId::of`]).
    RelationshipId
}
hash_newtype! {
    /// A record pointer, derived from the transaction that added it ([`PointerId::of_tx`]).
    PointerId
}
hash_newtype! {
    /// A grant, derived from the transaction that made it ([`GrantId::of_tx`]).
    GrantId
}
hash_newtype! {
    /// A patient's group of viewers, derived from the transaction that created it
    /// ([`GroupId::of_tx`]).
    GroupId
}
hash_newtype! {
    /// A delegation of consent management, derived from the transaction that made it
    /// ([`DelegationId::of_tx`]).
    DelegationId
}
hash_newtype! {
    /// A break-glass session, derived from the transaction that opened it
    /// ([`BreakGlassId::of_tx`]).
    BreakGlassId
}
hash_newtype! {
    /// A research data release, derived from the transaction that recorded it
    /// ([`ReleaseId::of_tx`]).
    ReleaseId
}

/// Kinds of derived identifiers (the first byte hashed), so no two kinds can collide.
mod id_kind {
    pub(super) const RELATIONSHIP: u8 = 1;
    pub(super) const POINTER: u8 = 2;
    pub(super) const GRANT: u8 = 3;
    pub(super) const GROUP: u8 = 4;
    pub(super) const DELEGATION: u8 = 5;
    pub(super) const BREAK_GLASS: u8 = 6;
    pub(super) const RELEASE: u8 = 7;
    pub(super) const STUDY: u8 = 8;
    pub(super) const QUERY: u8 = 9;
}
hash_newtype! {
    /// A research study approved by an authority, derived from the approving transaction
    /// ([`StudyId::of_tx`]).
    StudyId
}
hash_newtype! {
    /// A research query announced under a study, derived from the announcing transaction
    /// ([`QueryId::of_tx`]).
    QueryId
}

fn derive_id<T: Serialize + ?Sized>(kind: u8, parts: &T) -> [u8; 32] {
    let mut buf = Vec::with_capacity(80);
    buf.push(kind);
    codec::encode_body_into(parts, &mut buf);
    domain::ACCESS_ID.hash(&buf)
}

impl RelationshipId {
    /// The relationship between `patient` and `provider`.
    pub fn of(patient: AccountId, provider: AccountId) -> Self {
        Self(derive_id(id_kind::RELATIONSHIP, &(patient, provider)))
    }
}

macro_rules! id_of_tx {
    ($name:ident, $kind:expr, $what:literal) => {
        impl $name {
            #[doc = concat!("The id of the ", $what, " made by the transaction `tx`.")]
            pub fn of_tx(tx: TxId) -> Self {
                Self(derive_id($kind, &tx))
            }
        }
    };
}
id_of_tx!(PointerId, id_kind::POINTER, "record pointer");
id_of_tx!(GrantId, id_kind::GRANT, "grant");
id_of_tx!(GroupId, id_kind::GROUP, "group");
id_of_tx!(DelegationId, id_kind::DELEGATION, "delegation");
id_of_tx!(BreakGlassId, id_kind::BREAK_GLASS, "break-glass session");
id_of_tx!(ReleaseId, id_kind::RELEASE, "research data release");
id_of_tx!(StudyId, id_kind::STUDY, "research study");
id_of_tx!(QueryId, id_kind::QUERY, "research query");
