//! Work: the fork-choice weight every consensus engine adds per block.

use core::fmt;
use core::iter::Sum;
use core::ops::{Add, AddAssign};
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{from_hex, write_hex, HexError};
use crate::u256::U256;

/// An amount of work: the expected number of hashes behind a block or a chain, as a 256-bit
/// unsigned integer.
///
/// This is the fork-choice weight of every consensus engine in the crate: proof of work adds
/// [`Target::to_work`](crate::pow::Target::to_work) per block, other engines add what they define (for example
/// [`Work::from_u64`]`(1)` per block). Chains compare by `Ord`.
///
/// Addition through `+`, `+=` and [`Sum`] **saturates** at [`Work::MAX`] (2^256 − 1), so a sum of
/// work can never wrap around and make a heavier chain look lighter; use
/// [`Work::checked_add`] to detect the (practically unreachable) saturation.
///
/// `Display` is 64 hex digits, most significant first (as Bitcoin Core prints `chainwork`);
/// serde uses the 32 big-endian bytes.
///
/// ```
/// use medledger::pow::{Target, Work};
/// let one_block = Target::MAX.to_work();
/// assert_eq!(one_block, Work::from_u64(0x1_0001_0001));
/// let mut chain = Work::ZERO;
/// chain += one_block;
/// chain += one_block;
/// assert_eq!(chain, Work::from_u64(0x2_0002_0002));
/// assert_eq!(Work::MAX + one_block, Work::MAX); // saturates
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Work(U256);

impl Work {
    pub(crate) const fn from_u256(value: U256) -> Self {
        Self(value)
    }

    /// No work.
    pub const ZERO: Self = Self(U256::ZERO);
    /// The largest representable amount, 2^256 − 1.
    pub const MAX: Self = Self(U256::MAX);

    /// A small amount of work.
    pub const fn from_u64(work: u64) -> Self {
        Self(U256::from_u64(work))
    }

    /// From 32 big-endian bytes.
    pub const fn from_be_bytes(bytes: [u8; 32]) -> Self {
        Self(U256::from_be_bytes(bytes))
    }

    /// To 32 big-endian bytes.
    pub const fn to_be_bytes(&self) -> [u8; 32] {
        self.0.to_be_bytes()
    }

    /// Whether this is no work.
    pub const fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// The sum, or `None` if it exceeds [`Work::MAX`].
    pub const fn checked_add(self, rhs: Self) -> Option<Self> {
        match self.0.overflowing_add(rhs.0) {
            (sum, false) => Some(Self(sum)),
            (_, true) => None,
        }
    }

    /// The sum, capped at [`Work::MAX`].
    pub const fn saturating_add(self, rhs: Self) -> Self {
        match self.checked_add(rhs) {
            Some(sum) => sum,
            None => Self::MAX,
        }
    }

    /// The difference, or `None` if `rhs` is larger.
    pub const fn checked_sub(self, rhs: Self) -> Option<Self> {
        match self.0.overflowing_sub(rhs.0) {
            (diff, false) => Some(Self(diff)),
            (_, true) => None,
        }
    }

    /// The difference, floored at [`Work::ZERO`].
    pub const fn saturating_sub(self, rhs: Self) -> Self {
        match self.checked_sub(rhs) {
            Some(diff) => diff,
            None => Self::ZERO,
        }
    }
}

impl From<u64> for Work {
    fn from(work: u64) -> Self {
        Self::from_u64(work)
    }
}

impl Add for Work {
    type Output = Work;
    /// Saturating addition (see the type's documentation).
    fn add(self, rhs: Work) -> Work {
        self.saturating_add(rhs)
    }
}

impl AddAssign for Work {
    /// Saturating addition (see the type's documentation).
    fn add_assign(&mut self, rhs: Work) {
        *self = self.saturating_add(rhs);
    }
}

impl Sum for Work {
    fn sum<I: Iterator<Item = Work>>(iter: I) -> Work {
        iter.fold(Work::ZERO, Work::saturating_add)
    }
}

impl<'a> Sum<&'a Work> for Work {
    fn sum<I: Iterator<Item = &'a Work>>(iter: I) -> Work {
        iter.copied().sum()
    }
}

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0.to_be_bytes())
    }
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Work(")?;
        write_hex(f, &self.0.to_be_bytes())?;
        f.write_str(")")
    }
}

impl FromStr for Work {
    type Err = HexError;
    /// Parses exactly 64 hex digits, most significant first.
    fn from_str(s: &str) -> Result<Self, HexError> {
        from_hex::<32>(s).map(Self::from_be_bytes)
    }
}

impl Serialize for Work {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_be_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Work {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 32]>::deserialize(d).map(Self::from_be_bytes)
    }
}
