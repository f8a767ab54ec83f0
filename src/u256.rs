//! A small unsigned 256-bit integer: only the operations the PoW arithmetic needs.
//!
//! Four `u64` limbs, least significant first. Every operation is total: overflow is reported
//! (`overflowing_*`, `checked_*`) or defined (`wrapping_*`, shifts of 256 bits or more give
//! zero), and division by zero returns `None`, so nothing here can panic.

use core::cmp::Ordering;

/// An unsigned 256-bit integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct U256([u64; 4]);

/// The 8 bytes of `b` from offset `o`.
const fn eight_at(b: &[u8; 32], o: usize) -> [u8; 8] {
    [
        b[o],
        b[o + 1],
        b[o + 2],
        b[o + 3],
        b[o + 4],
        b[o + 5],
        b[o + 6],
        b[o + 7],
    ]
}

/// Writes `bytes` into `out` from offset `o`.
const fn put_eight_at(out: &mut [u8; 32], o: usize, bytes: [u8; 8]) {
    let mut j = 0;
    while j < 8 {
        out[o + j] = bytes[j];
        j += 1;
    }
}

impl U256 {
    /// Zero.
    pub(crate) const ZERO: Self = Self([0; 4]);
    /// One.
    pub(crate) const ONE: Self = Self([1, 0, 0, 0]);
    /// 2^256 − 1.
    pub(crate) const MAX: Self = Self([u64::MAX; 4]);

    /// From limbs, least significant first.
    #[cfg(test)]
    pub(crate) const fn from_limbs(limbs: [u64; 4]) -> Self {
        Self(limbs)
    }

    /// A value that fits in 64 bits.
    pub(crate) const fn from_u64(v: u64) -> Self {
        Self([v, 0, 0, 0])
    }

    /// A value that fits in 128 bits.
    #[cfg(test)]
    pub(crate) const fn from_u128(v: u128) -> Self {
        Self([v as u64, (v >> 64) as u64, 0, 0])
    }

    /// The low 128 bits.
    #[cfg(test)]
    pub(crate) const fn low_u128(&self) -> u128 {
        ((self.0[1] as u128) << 64) | self.0[0] as u128
    }

    /// The low 64 bits.
    pub(crate) const fn low_u64(&self) -> u64 {
        self.0[0]
    }

    /// From 32 big-endian bytes.
    pub(crate) const fn from_be_bytes(b: [u8; 32]) -> Self {
        let mut limbs = [0u64; 4];
        let mut i = 0;
        while i < 4 {
            // Limb i holds bytes 24 - 8i .. 32 - 8i.
            let o = 24 - 8 * i;
            limbs[i] = u64::from_be_bytes(eight_at(&b, o));
            i += 1;
        }
        Self(limbs)
    }

    /// From 32 little-endian bytes.
    pub(crate) const fn from_le_bytes(b: [u8; 32]) -> Self {
        let mut limbs = [0u64; 4];
        let mut i = 0;
        while i < 4 {
            let o = 8 * i;
            limbs[i] = u64::from_le_bytes(eight_at(&b, o));
            i += 1;
        }
        Self(limbs)
    }

    /// To 32 big-endian bytes.
    pub(crate) const fn to_be_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 4 {
            put_eight_at(&mut out, 24 - 8 * i, self.0[i].to_be_bytes());
            i += 1;
        }
        out
    }

    /// To 32 little-endian bytes.
    pub(crate) const fn to_le_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 4 {
            put_eight_at(&mut out, 8 * i, self.0[i].to_le_bytes());
            i += 1;
        }
        out
    }

    /// Whether the value is zero.
    pub(crate) const fn is_zero(&self) -> bool {
        self.0[0] == 0 && self.0[1] == 0 && self.0[2] == 0 && self.0[3] == 0
    }

    /// The number of significant bits (0 for zero).
    pub(crate) const fn bits(&self) -> u32 {
        let mut i = 4;
        while i > 0 {
            i -= 1;
            if self.0[i] != 0 {
                return 64 * i as u32 + (64 - self.0[i].leading_zeros());
            }
        }
        0
    }

    /// Bitwise complement.
    pub(crate) const fn not(self) -> Self {
        Self([!self.0[0], !self.0[1], !self.0[2], !self.0[3]])
    }

    /// Sum and whether it wrapped.
    pub(crate) const fn overflowing_add(self, rhs: Self) -> (Self, bool) {
        let mut out = [0u64; 4];
        let mut carry = false;
        let mut i = 0;
        while i < 4 {
            let (s1, c1) = self.0[i].overflowing_add(rhs.0[i]);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            out[i] = s2;
            carry = c1 | c2;
            i += 1;
        }
        (Self(out), carry)
    }

    /// Difference and whether it wrapped (`rhs > self`).
    pub(crate) const fn overflowing_sub(self, rhs: Self) -> (Self, bool) {
        let mut out = [0u64; 4];
        let mut borrow = false;
        let mut i = 0;
        while i < 4 {
            let (d1, b1) = self.0[i].overflowing_sub(rhs.0[i]);
            let (d2, b2) = d1.overflowing_sub(borrow as u64);
            out[i] = d2;
            borrow = b1 | b2;
            i += 1;
        }
        (Self(out), borrow)
    }

    /// Sum modulo 2^256.
    pub(crate) const fn wrapping_add(self, rhs: Self) -> Self {
        self.overflowing_add(rhs).0
    }

    /// Product with a 64-bit factor and whether it overflowed 256 bits.
    pub(crate) const fn overflowing_mul_u64(self, rhs: u64) -> (Self, bool) {
        let mut out = [0u64; 4];
        let mut carry: u64 = 0;
        let mut i = 0;
        while i < 4 {
            let wide = self.0[i] as u128 * rhs as u128 + carry as u128;
            out[i] = wide as u64;
            carry = (wide >> 64) as u64;
            i += 1;
        }
        (Self(out), carry != 0)
    }

    /// Left shift; bits shifted past 256 are lost, and a shift of 256 or more gives zero.
    pub(crate) const fn shl(self, shift: u32) -> Self {
        if shift >= 256 {
            return Self::ZERO;
        }
        let limbs = (shift / 64) as usize;
        let bits = shift % 64;
        let mut out = [0u64; 4];
        let mut i = 3;
        loop {
            if i >= limbs {
                let src = i - limbs;
                let mut v = self.0[src] << bits;
                if bits > 0 && src > 0 {
                    v |= self.0[src - 1] >> (64 - bits);
                }
                out[i] = v;
            }
            if i == 0 {
                break;
            }
            i -= 1;
        }
        Self(out)
    }

    /// Right shift; a shift of 256 or more gives zero.
    pub(crate) const fn shr(self, shift: u32) -> Self {
        if shift >= 256 {
            return Self::ZERO;
        }
        let limbs = (shift / 64) as usize;
        let bits = shift % 64;
        let mut out = [0u64; 4];
        let mut i = 0;
        while i + limbs < 4 {
            let src = i + limbs;
            let mut v = self.0[src] >> bits;
            if bits > 0 && src < 3 {
                v |= self.0[src + 1] << (64 - bits);
            }
            out[i] = v;
            i += 1;
        }
        Self(out)
    }

    /// Sets bit `n` (`n < 256`).
    const fn with_bit(mut self, n: u32) -> Self {
        self.0[(n / 64) as usize] |= 1 << (n % 64);
        self
    }

    /// Quotient and remainder, or `None` when dividing by zero.
    ///
    /// Schoolbook binary long division; fine for the few divisions made per block.
    pub(crate) fn div_rem(self, divisor: Self) -> Option<(Self, Self)> {
        if divisor.is_zero() {
            return None;
        }
        let num_bits = self.bits();
        let div_bits = divisor.bits();
        if div_bits > num_bits {
            return Some((Self::ZERO, self));
        }
        let mut shift = num_bits - div_bits;
        // `div_bits + shift == num_bits <= 256`, so nothing is shifted out.
        let mut d = divisor.shl(shift);
        let mut rem = self;
        let mut quot = Self::ZERO;
        loop {
            if rem >= d {
                rem = rem.overflowing_sub(d).0;
                quot = quot.with_bit(shift);
            }
            if shift == 0 {
                break;
            }
            d = d.shr(1);
            shift -= 1;
        }
        Some((quot, rem))
    }
}

impl Ord for U256 {
    fn cmp(&self, other: &Self) -> Ordering {
        // Most significant limb first.
        self.0.iter().rev().cmp(other.0.iter().rev())
    }
}

impl PartialOrd for U256 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl core::fmt::Debug for U256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("0x")?;
        crate::hash::write_hex(f, &self.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> U256 {
        // Left-pads a big-endian hex string to 64 digits.
        let padded = format!("{s:0>64}");
        U256::from_be_bytes(crate::hash::from_hex::<32>(&padded).unwrap())
    }

    // Operands and results from Bitcoin Core's arith_uint256 unit tests.
    const R1: &str = "7d1de5eaf9b156d53208f033b5aa8122d2d2355d5e12292b121156cfdb4a529c";
    const R2: &str = "d781cab4f072134971da2d19a3473013bfb69ca6c30a7e26406ba5477c1d3270";

    #[test]
    fn core_vectors() {
        let r1 = hex(R1);
        let r2 = hex(R2);
        assert_eq!(
            r1.wrapping_add(r2),
            hex("549fb09fea236a1ea3e31d4d58f1b1369288d204211ca751527cfc175767850c")
        );
        assert_eq!(
            r1.overflowing_mul_u64(3).0,
            hex("7759b1c0ed14047f961ad09b20ff83687876a0181a367b813634046f91def7d4")
        );
        assert_eq!(
            r2.overflowing_mul_u64(0x8765_4321).0,
            hex("23f7816e30c4ae2017257b7a0fa64d60402f5234d46e746b61c960d09a26d070")
        );
        let d1 = hex("ad7133ac1977fa2b7");
        let d2 = hex("ecd751716");
        let div = |a: U256, b: U256| a.div_rem(b).unwrap().0;
        assert_eq!(
            div(r1, d1),
            hex("00000000000000000b8ac01106981635d9ed112290f8895545a7654dde28fb3a")
        );
        assert_eq!(
            div(r1, d2),
            hex("000000000873ce8efec5b67150bad3aa8c5fcb70e947586153bf2cec7c37c57a")
        );
        assert_eq!(
            div(r2, d1),
            hex("000000000000000013e1665895a1cc981de6d93670105a6b3ec3b73141b3a3c5")
        );
        assert_eq!(
            div(r2, d2),
            hex("000000000e8f0abe753bb0afe2e9437ee85d280be60882cf0bd1aaf7fa3cc2c4")
        );
        assert_eq!(div(r1, U256::ONE), r1);
        assert_eq!(div(r1, U256::MAX), U256::ZERO);
        assert_eq!(div(U256::MAX, r1), U256::from_u64(2));
        assert_eq!(div(U256::MAX, r2), U256::ONE);
        assert_eq!(r1.div_rem(U256::ZERO), None);
        assert_eq!(U256::ONE.wrapping_add(U256::MAX), U256::ZERO);
    }

    /// Bit-by-bit shift over the little-endian byte form (positive: left).
    fn reference_shift(v: U256, by: i32) -> U256 {
        let bytes = v.to_le_bytes();
        let mut out = [0u8; 32];
        for bit in 0..256i32 {
            let src = bit - by;
            if (0..256).contains(&src) && bytes[(src / 8) as usize] >> (src % 8) & 1 == 1 {
                out[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        U256::from_le_bytes(out)
    }

    #[test]
    fn shifts_match_core() {
        let half = U256::ONE.shl(255);
        let r1 = hex(R1);
        for i in 0..256 {
            let one_i = U256::ONE.shl(i);
            assert_eq!(half.shr(255 - i), one_i);
            assert_eq!(one_i.bits(), i + 1);
            for v in [r1, U256::MAX, U256::ONE] {
                assert_eq!(v.shl(i), reference_shift(v, i as i32));
                assert_eq!(v.shr(i), reference_shift(v, -(i as i32)));
            }
        }
        assert_eq!(U256::ONE.shl(256), U256::ZERO);
        assert_eq!(U256::MAX.shr(256), U256::ZERO);
        let c1 = U256::from_u64(0x0123_4567_89ab_cdef);
        let c2 = c1.shl(128);
        for i in 0..128 {
            assert_eq!(c1.shl(i), c2.shr(128 - i));
        }
        for i in 128..256 {
            assert_eq!(c1.shl(i), c2.shl(i - 128));
        }
    }

    #[test]
    fn bytes_round_trip() {
        let r1 = hex(R1);
        assert_eq!(U256::from_be_bytes(r1.to_be_bytes()), r1);
        assert_eq!(U256::from_le_bytes(r1.to_le_bytes()), r1);
        let mut le = r1.to_be_bytes();
        le.reverse();
        assert_eq!(le, r1.to_le_bytes());
        assert_eq!(r1.low_u64(), 0x1211_56cf_db4a_529c);
    }

    fn u256() -> impl Strategy<Value = U256> {
        any::<[u64; 4]>().prop_map(U256::from_limbs)
    }

    proptest! {
        #[test]
        fn small_values_match_u128(a in any::<u64>(), b in any::<u64>(), c in any::<u64>(),
                                   s in 0u32..64) {
            let (wa, wb) = (U256::from_u64(a), U256::from_u64(b));
            let sum = u128::from(a) + u128::from(b);
            prop_assert_eq!(wa.overflowing_add(wb), (U256::from_u128(sum), false));
            let prod = u128::from(a) * u128::from(b);
            prop_assert_eq!(wa.overflowing_mul_u64(b), (U256::from_u128(prod), false));
            prop_assert_eq!(wa.shl(s).low_u128(), u128::from(a) << s);
            let p = U256::from_u128(prod);
            prop_assert_eq!(p.shr(s).low_u128(), prod >> s);
            prop_assert_eq!(p.cmp(&U256::from_u128(u128::from(c))), prod.cmp(&u128::from(c)));
            if c != 0 {
                let (q, r) = p.div_rem(U256::from_u64(c)).unwrap();
                prop_assert_eq!(q.low_u128(), prod / u128::from(c));
                prop_assert_eq!(r.low_u128(), prod % u128::from(c));
            }
            prop_assert_eq!(wa.bits(), 64 - a.leading_zeros());
            if a >= b {
                prop_assert_eq!(wa.overflowing_sub(wb), (U256::from_u64(a - b), false));
            } else {
                prop_assert!(wa.overflowing_sub(wb).1);
            }
        }

        #[test]
        fn division_identity(a in u256(), b in u256()) {
            if let Some((q, r)) = a.div_rem(b) {
                prop_assert!(r < b);
                // q * b + r == a, computed modulo 2^256 limb by limb (exact, as the true
                // value is a < 2^256).
                let mut acc = r;
                for (i, limb) in b.0.iter().enumerate() {
                    let part = q.overflowing_mul_u64(*limb).0;
                    acc = acc.wrapping_add(part.shl(64 * i as u32));
                }
                prop_assert_eq!(acc, a);
            }
        }

        #[test]
        fn add_sub_inverse(a in u256(), b in u256()) {
            let (s, _) = a.overflowing_add(b);
            prop_assert_eq!(s.overflowing_sub(b).0, a);
            prop_assert_eq!(a.not().not(), a);
            prop_assert_eq!(a.wrapping_add(a.not()), U256::MAX);
        }
    }
}
