//! The names an embedder of the MedRec ledger uses most, in one import:
//! `use medledger::prelude::*;`.
//!
//! It brings the ledger and chain of the MedRec application, keys, the embedded engine and file
//! store, the access-control operations and their vocabulary, the access request and its
//! decision, and the one content hash. Everything else stays under its module.

pub use crate::access::{
    AccessOp, AccessRequest, Action, ActionSet, Category, CategorySet, Decision, GrantId,
    GrantTerms, Identity, Period, PointerId, PurposeSet, RecordPointer, RefusalKind,
    RelationshipId, Role, Scope, Viewer,
};
pub use crate::file_store::FileStore;
pub use crate::hash::content_hash;
pub use crate::pow::ProofOfWork;
pub use crate::purpose::PurposeOfUse;
pub use crate::tx::Keypair;
pub use crate::{AccessError, Chain, ChainBuilder, Ledger, Payload, Refusal, Transaction};
