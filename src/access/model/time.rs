//! Time: block stamps and half-open validity periods.

use serde::{Deserialize, Serialize};

use crate::access::AccessError;

/// When something happened: the block height and the block's timestamp (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Block height.
    pub height: u64,
    /// Block timestamp.
    pub time: u64,
}

/// A half-open time interval `[start, end)` in Unix seconds, with `start < end`.
///
/// Validity periods of grants, delegations and provisions, and the period a record's data
/// covers, are periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    /// First second inside the period.
    pub start: u64,
    /// First second after the period.
    pub end: u64,
}

impl Period {
    /// The period `[start, end)`.
    ///
    /// # Errors
    ///
    /// [`AccessError::InvalidPeriod`] unless `start < end`.
    pub fn new(start: u64, end: u64) -> Result<Self, AccessError> {
        let p = Self { start, end };
        p.check()?;
        Ok(p)
    }

    /// The period starting at `start` and lasting `secs` seconds (saturating).
    pub fn lasting(start: u64, secs: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(secs).max(start.saturating_add(1)),
        }
    }

    /// Whether `t` lies inside.
    pub const fn contains(&self, t: u64) -> bool {
        self.start <= t && t < self.end
    }

    /// Whether `other` lies entirely inside `self`.
    pub const fn covers(&self, other: &Period) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two periods share at least one second.
    pub const fn overlaps(&self, other: &Period) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub(crate) fn check(&self) -> Result<(), AccessError> {
        if self.start < self.end {
            Ok(())
        } else {
            Err(AccessError::InvalidPeriod {
                start: self.start,
                end: self.end,
            })
        }
    }
}
