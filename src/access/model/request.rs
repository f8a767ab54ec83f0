//! The question access control answers.

use serde::{Deserialize, Serialize};

use super::{Action, PointerId};
use crate::hash::AccountId;
use crate::purpose::PurposeOfUse;

/// A question to the access control: may `viewer` perform `action` on `pointer` of `patient`
/// for `purpose` at `time`?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessRequest {
    /// Who asks.
    pub viewer: AccountId,
    /// Whose record.
    pub patient: AccountId,
    /// Which record.
    pub pointer: PointerId,
    /// To do what.
    pub action: Action,
    /// Why.
    pub purpose: PurposeOfUse,
    /// When (Unix seconds).
    pub time: u64,
}

impl AccessRequest {
    /// May `viewer` perform `action` on `pointer` of `patient` for `purpose` at `time`?
    pub const fn new(
        viewer: AccountId,
        patient: AccountId,
        pointer: PointerId,
        action: Action,
        purpose: PurposeOfUse,
        time: u64,
    ) -> Self {
        Self {
            viewer,
            patient,
            pointer,
            action,
            purpose,
            time,
        }
    }
}
