//! Compact targets (`nBits`), full 256-bit targets and chain work.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Error;
use crate::consensus::Work;
use crate::hash::{from_hex, write_hex, HexError};
use crate::u256::U256;

/// The compact ("`nBits`") encoding of a target, exactly as carried in a Bitcoin block header.
///
/// The top byte is a base-256 exponent (the length of the number in bytes), bit 23 is a sign
/// bit and the low 23 bits are the mantissa. Many `u32` values encode the same target (and
/// some encode no valid target at all); [`Target::from_compact`] decodes and
/// [`Target::to_compact`] produces the one normalised form Bitcoin Core produces.
///
/// `Display` and `FromStr` use eight hex digits (`1d00ffff`), as Bitcoin Core prints `bits`;
/// serde uses the plain `u32`.
///
/// ```
/// use medledger::pow::{CompactTarget, Target};
/// let bits = CompactTarget::from_consensus(0x1d00ffff);
/// assert_eq!(bits.to_string(), "1d00ffff");
/// assert_eq!(Target::from_compact(bits).unwrap(), Target::MAX);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CompactTarget(u32);

impl CompactTarget {
    /// Bitcoin mainnet's proof-of-work limit, `0x1d00ffff` (difficulty 1).
    pub const BITCOIN_MAINNET_LIMIT: Self = Self(0x1d00_ffff);
    /// Bitcoin regtest's proof-of-work limit, `0x207fffff`.
    pub const BITCOIN_REGTEST_LIMIT: Self = Self(0x207f_ffff);

    /// Wraps a header's `nBits` field.
    pub const fn from_consensus(bits: u32) -> Self {
        Self(bits)
    }

    /// The header's `nBits` field.
    pub const fn to_consensus(self) -> u32 {
        self.0
    }
}

impl fmt::Display for CompactTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for CompactTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompactTarget({:#010x})", self.0)
    }
}

impl fmt::LowerHex for CompactTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl fmt::UpperHex for CompactTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::UpperHex::fmt(&self.0, f)
    }
}

impl FromStr for CompactTarget {
    type Err = HexError;
    /// Parses exactly eight hex digits, most significant first.
    fn from_str(s: &str) -> Result<Self, HexError> {
        from_hex::<4>(s).map(|b| Self(u32::from_be_bytes(b)))
    }
}

/// What Bitcoin Core's `arith_uint256::SetCompact` computes: the value and its two flags.
///
/// The value is what Core would hold even when a flag is set (the sign bit is dropped, bits
/// shifted past 256 are lost), so that [`next_target`](super::next_target) can reproduce Core on
/// every input.
pub(crate) struct Decoded {
    pub(crate) value: U256,
    pub(crate) negative: bool,
    pub(crate) overflow: bool,
}

pub(crate) const fn decode_compact(bits: CompactTarget) -> Decoded {
    let bits = bits.0;
    let size = bits >> 24;
    let mut mantissa = bits & 0x007f_ffff;
    let value = if size <= 3 {
        mantissa >>= 8 * (3 - size);
        U256::from_u64(mantissa as u64)
    } else {
        // `size` is at most 255, so the shift is at most 2016; `shl` gives zero past 255.
        U256::from_u64(mantissa as u64).shl(8 * (size - 3))
    };
    let negative = mantissa != 0 && bits & 0x0080_0000 != 0;
    let overflow = mantissa != 0
        && (size > 34 || (mantissa > 0xff && size > 33) || (mantissa > 0xffff && size > 32));
    Decoded {
        value,
        negative,
        overflow,
    }
}

/// A 256-bit proof-of-work target: a header is valid when its hash, read as a little-endian
/// number, is at most the target.
///
/// Ordered numerically: a smaller target is harder to meet. `Display` is 64 hex digits, most
/// significant first (the way Bitcoin tools print targets and hashes); serde uses the 32
/// big-endian bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Target(U256);

impl Target {
    /// The zero target, which no hash other than zero meets.
    pub const ZERO: Self = Self(U256::ZERO);

    /// Bitcoin mainnet's proof-of-work limit as a target: the value of
    /// [`CompactTarget::BITCOIN_MAINNET_LIMIT`], `0xffff << 208` (difficulty 1).
    ///
    /// Bitcoin Core declares the limit as 2^224 − 1, but no compact target lies strictly
    /// between the two values, so every check against either limit gives the same answer.
    pub const MAX: Self = Self(U256::from_u64(0xffff).shl(208));

    /// Bitcoin regtest's proof-of-work limit as a target: the value of
    /// [`CompactTarget::BITCOIN_REGTEST_LIMIT`], `0x7fffff << 232`.
    pub const REGTEST_LIMIT: Self = Self(U256::from_u64(0x7f_ffff).shl(232));

    /// Decodes a compact target, with exactly Bitcoin Core's `SetCompact` semantics.
    ///
    /// Encodings that Core flags are refused; the zero target is not an error here (it is a
    /// value, which [`check_proof_of_work`](super::check_proof_of_work) refuses).
    ///
    /// # Errors
    ///
    /// * [`Error::NegativeCompactTarget`] when the sign bit is set and the mantissa is not zero;
    /// * [`Error::CompactTargetOverflow`] when the value does not fit in 256 bits.
    pub const fn from_compact(bits: CompactTarget) -> Result<Self, Error> {
        let d = decode_compact(bits);
        if d.negative {
            return Err(Error::NegativeCompactTarget(bits));
        }
        if d.overflow {
            return Err(Error::CompactTargetOverflow(bits));
        }
        Ok(Self(d.value))
    }

    /// Encodes the target in compact form, exactly as Bitcoin Core's `GetCompact`: the three
    /// most significant bytes (truncating the rest), shifted so that the sign bit stays clear.
    ///
    /// The encoding is lossy: `Target::from_compact(t.to_compact())` is `t` rounded down to
    /// three significant bytes.
    pub const fn to_compact(&self) -> CompactTarget {
        let mut size = self.0.bits().div_ceil(8);
        let mut mantissa = if size <= 3 {
            (self.0.low_u64() << (8 * (3 - size))) as u32
        } else {
            self.0.shr(8 * (size - 3)).low_u64() as u32
        };
        if mantissa & 0x0080_0000 != 0 {
            mantissa >>= 8;
            size += 1;
        }
        CompactTarget(mantissa | (size << 24))
    }

    /// From 32 big-endian bytes.
    pub const fn from_be_bytes(bytes: [u8; 32]) -> Self {
        Self(U256::from_be_bytes(bytes))
    }

    /// To 32 big-endian bytes.
    pub const fn to_be_bytes(&self) -> [u8; 32] {
        self.0.to_be_bytes()
    }

    /// From 32 little-endian bytes (the byte order of a hash as computed).
    pub const fn from_le_bytes(bytes: [u8; 32]) -> Self {
        Self(U256::from_le_bytes(bytes))
    }

    /// To 32 little-endian bytes.
    pub const fn to_le_bytes(&self) -> [u8; 32] {
        self.0.to_le_bytes()
    }

    /// Whether `hash` meets the target: the hash, read as a little-endian 256-bit number (the
    /// byte order [`header_hash`](super::header_hash) returns), is at most the target.
    ///
    /// This is the comparison of Bitcoin Core's `CheckProofOfWork`; the checks on the target
    /// itself (not zero, not above the limit) are in
    /// [`check_proof_of_work`](super::check_proof_of_work).
    pub fn is_met_by(&self, hash: &[u8; 32]) -> bool {
        U256::from_le_bytes(*hash) <= self.0
    }

    /// The expected number of hashes needed to meet this target, `2^256 / (target + 1)`,
    /// computed as Bitcoin Core's `GetBlockProof` does: `(!target / (target + 1)) + 1`.
    ///
    /// The zero target gives [`Work::ZERO`] (Core gives no work to an invalid target; the
    /// formula wraps to zero as well). The all-ones target gives one.
    pub fn to_work(&self) -> Work {
        let denominator = self.0.wrapping_add(U256::ONE);
        // Only the all-ones target makes the denominator wrap to zero; 2^256 / 2^256 = 1.
        match self.0.not().div_rem(denominator) {
            Some((q, _)) => Work::from_u256(q.wrapping_add(U256::ONE)),
            None => Work::from_u256(U256::ONE),
        }
    }

    pub(crate) const fn from_u256(v: U256) -> Self {
        Self(v)
    }

    pub(crate) const fn as_u256(&self) -> U256 {
        self.0
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0.to_be_bytes())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Target(")?;
        write_hex(f, &self.0.to_be_bytes())?;
        f.write_str(")")
    }
}

impl FromStr for Target {
    type Err = HexError;
    /// Parses exactly 64 hex digits, most significant first.
    fn from_str(s: &str) -> Result<Self, HexError> {
        from_hex::<32>(s).map(Self::from_be_bytes)
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_be_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 32]>::deserialize(d).map(Self::from_be_bytes)
    }
}
