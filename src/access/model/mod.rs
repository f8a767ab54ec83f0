//! What access control talks about: identifiers, time, and the vocabulary of consent. These
//! types depend only on the crate's foundations, never on the state or the chain.

mod ids;
mod request;
mod time;
mod vocabulary;

pub use ids::{
    BreakGlassId, DelegationId, GrantId, GroupId, PointerId, QueryId, RelationshipId, ReleaseId,
    StudyId,
};
pub use request::AccessRequest;
pub use time::{Period, Stamp};
pub use vocabulary::{
    Action, ActionSet, Category, CategorySet, EnumSet, Label, Name, PurposeSet, Reason, SetMember,
    MAX_LABEL_LEN, MAX_NAME_LEN, MAX_REASON_LEN,
};
