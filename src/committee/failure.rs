//! How likely a randomly drawn committee is to hold too many Byzantine members.
//!
//! A committee of `c` identities drawn without replacement from `n`, of which `f` are Byzantine,
//! holds a hypergeometric number of Byzantine members. Everything here is computed in log space
//! from exact log-factorials (a table for small arguments, Stirling's series beyond), so tails
//! far below `1e-40` keep their relative accuracy.
//!
//! # What the model assumes
//!
//! The committees are taken to be a uniform draw: `f / n` is the adversary's share of the
//! identities the directory seats. The protocol earns that assumption only as far as these
//! hold:
//!
//! - **Seats follow hash power, not extra mining.** The directory's leader seats the first
//!   `c` identities of each committee that reach it in its identity window, in arrival order
//!   (Elastico's first-c rule), one per key, and none after the window closes. A smaller hash
//!   buys nothing, so an adversary that keeps mining gains only the identities it finds while
//!   honest nodes find theirs: its share of seats is about its share of hash power over the
//!   window, plus whatever reaches the leader faster (network position). The old
//!   smallest-hashes rule gave an adversary that mined `k` times longer every seat it had
//!   identities for; the model did not hold then.
//! - **Honest directory leaders.** Which valid identities a leader seats is its own choice
//!   (others may not have received them all), so a Byzantine leader can seat the adversary's
//!   identities over honest ones in the rounds it leads; `f / n` then understates the
//!   adversary's share by that bias. The model gives the chance for honest leaders.
//! - **Independent epochs and restarts.** Each epoch (and each restart of an epoch, which
//!   draws fresh committees) is one draw; `epoch_failure_union_bound` and
//!   `expected_epochs_to_failure` count restarts as epochs.

/// Arguments up to this value use a table of `ln k!` built by summation.
const TABLE_LEN: usize = 1024;

fn ln_factorial_table() -> &'static [f64; TABLE_LEN] {
    static TABLE: std::sync::OnceLock<Box<[f64; TABLE_LEN]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0.0f64; TABLE_LEN]);
        for k in 2..TABLE_LEN {
            t[k] = t[k - 1] + (k as f64).ln();
        }
        t
    })
}

/// `ln(k!)`: exact summation below 1024, Stirling's series (error below 1e-25) above.
pub fn ln_factorial(k: u64) -> f64 {
    if (k as usize) < TABLE_LEN && k < TABLE_LEN as u64 {
        return ln_factorial_table()[k as usize];
    }
    let x = k as f64;
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    // ln k! = k ln k - k + ln(2 pi k)/2 + 1/(12k) - 1/(360k^3) + 1/(1260k^5) - 1/(1680k^7)
    let series = inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)));
    x * x.ln() - x + 0.5 * (2.0 * core::f64::consts::PI * x).ln() + series
}

/// `ln C(a, b)`; `-inf` when `b > a`.
pub fn ln_binomial(a: u64, b: u64) -> f64 {
    if b > a {
        return f64::NEG_INFINITY;
    }
    ln_factorial(a) - ln_factorial(b) - ln_factorial(a - b)
}

/// `ln P[X = k]` for the hypergeometric `X` (committee of `c` from `n`, `f` Byzantine).
fn ln_pmf(n: u64, f: u64, c: u64, k: u64) -> f64 {
    if k > f || k > c || c - k > n - f {
        return f64::NEG_INFINITY;
    }
    ln_binomial(f, k) + ln_binomial(n - f, c - k) - ln_binomial(n, c)
}

/// `ln` of [`failure_probability`]; `-inf` when the probability is exactly zero, `NaN` for
/// inconsistent arguments (`f > n` or `c > n`).
pub fn ln_failure_probability(n: u64, f: u64, c: u64, t: u64) -> f64 {
    if f > n || c > n {
        return f64::NAN;
    }
    if t == 0 {
        return 0.0;
    }
    // Support of X: max(0, c - (n - f)) ..= min(f, c).
    let lo = t.max(c.saturating_sub(n - f));
    let hi = f.min(c);
    if lo > hi {
        return f64::NEG_INFINITY;
    }
    let terms: Vec<f64> = (lo..=hi).map(|k| ln_pmf(n, f, c, k)).collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    let sum: f64 = terms.iter().map(|l| (l - max).exp()).sum();
    (max + sum.ln()).min(0.0)
}

/// The exact hypergeometric probability that a committee of `c` members drawn without
/// replacement from `n` nodes, `f` of them Byzantine, holds at least `t` Byzantine members.
///
/// Computed in log space, so values such as `1e-40` keep about twelve significant digits.
/// Returns `NaN` for inconsistent arguments (`f > n` or `c > n`).
///
/// ```
/// use medledger::committee::failure_probability;
/// // 1,000 nodes, a quarter Byzantine, committees of 100: a third or more is rare.
/// let p = failure_probability(1_000, 250, 100, 34);
/// assert!(p > 1e-3 && p < 1e-1);
/// assert_eq!(failure_probability(10, 0, 5, 1), 0.0);
/// ```
pub fn failure_probability(n: u64, f: u64, c: u64, t: u64) -> f64 {
    ln_failure_probability(n, f, c, t).exp()
}

/// The smallest number of Byzantine members that breaks a committee of `c`: a third or more
/// (`ceil(c / 3)`), where more than two thirds must sign.
pub fn failure_threshold(c: u64) -> u64 {
    c.div_ceil(3)
}

/// A union bound on the probability that at least one of `k` committees of `c` fails
/// (`min(1, k · p)`).
pub fn epoch_failure_union_bound(n: u64, f: u64, c: u64, t: u64, k: u64) -> f64 {
    (k as f64 * failure_probability(n, f, c, t)).min(1.0)
}

/// The probability that at least one of `k` disjoint committees of `c` fails, when the `k · c`
/// members are drawn without replacement from `n` nodes of which `f` are Byzantine.
///
/// Exact up to floating-point rounding: a dynamic programme over the committees tracks the
/// distribution of Byzantine members used by the committees that have not failed, and adds the
/// probability that the next committee is the first to fail. No subtraction from one is involved,
/// so tiny probabilities stay accurate. Returns `NaN` when `k · c > n` or `f > n`.
pub fn epoch_failure_probability(n: u64, f: u64, c: u64, t: u64, k: u64) -> f64 {
    let Some(total) = k.checked_mul(c) else {
        return f64::NAN;
    };
    if total > n || f > n {
        return f64::NAN;
    }
    if t == 0 {
        return if k == 0 { 0.0 } else { 1.0 };
    }
    // surviving[b]: probability that the committees so far all hold fewer than t Byzantine
    // members, and b Byzantine members were used in total.
    let max_b = f.min(total) as usize;
    let mut surviving = vec![0.0f64; max_b + 1];
    surviving[0] = 1.0;
    let mut failed = 0.0f64;
    for i in 0..k {
        let remaining = n - i * c;
        let mut next = vec![0.0f64; max_b + 1];
        for (b, &p) in surviving.iter().enumerate() {
            if p == 0.0 {
                continue;
            }
            let f_rem = f - b as u64;
            failed += p * failure_probability(remaining, f_rem, c, t);
            for j in 0..t.min(f_rem + 1).min(c + 1) {
                let q = ln_pmf(remaining, f_rem, c, j).exp();
                if q > 0.0 && b + (j as usize) <= max_b {
                    next[b + j as usize] += p * q;
                }
            }
        }
        surviving = next;
    }
    failed.min(1.0)
}

/// Expected number of epochs until the first failure when each epoch fails independently with
/// probability `p_epoch` (the mean of a geometric distribution, `1 / p`; infinite for `p = 0`).
pub fn expected_epochs_to_failure(p_epoch: f64) -> f64 {
    if p_epoch <= 0.0 {
        f64::INFINITY
    } else {
        1.0 / p_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny unsigned big integer (little-endian base 2^32 limbs), enough for exact binomials.
    #[derive(Clone, Debug, PartialEq)]
    struct Big(Vec<u32>);

    impl Big {
        fn from_u64(v: u64) -> Self {
            let mut b = Big(vec![v as u32, (v >> 32) as u32]);
            b.trim();
            b
        }
        fn trim(&mut self) {
            while self.0.last() == Some(&0) {
                self.0.pop();
            }
        }
        fn mul_small(&self, m: u32) -> Self {
            let mut out = Vec::with_capacity(self.0.len() + 1);
            let mut carry = 0u64;
            for &l in &self.0 {
                let v = u64::from(l) * u64::from(m) + carry;
                out.push(v as u32);
                carry = v >> 32;
            }
            out.push(carry as u32);
            let mut b = Big(out);
            b.trim();
            b
        }
        /// Exact division by a small divisor (the caller knows it divides).
        fn div_small(&self, d: u32) -> Self {
            let mut out = vec![0u32; self.0.len()];
            let mut rem = 0u64;
            for i in (0..self.0.len()).rev() {
                let v = (rem << 32) | u64::from(self.0[i]);
                out[i] = (v / u64::from(d)) as u32;
                rem = v % u64::from(d);
            }
            assert_eq!(rem, 0);
            let mut b = Big(out);
            b.trim();
            b
        }
        fn add(&self, o: &Big) -> Self {
            let n = self.0.len().max(o.0.len());
            let mut out = Vec::with_capacity(n + 1);
            let mut carry = 0u64;
            for i in 0..n {
                let v = u64::from(*self.0.get(i).unwrap_or(&0))
                    + u64::from(*o.0.get(i).unwrap_or(&0))
                    + carry;
                out.push(v as u32);
                carry = v >> 32;
            }
            out.push(carry as u32);
            let mut b = Big(out);
            b.trim();
            b
        }
        fn mul(&self, o: &Big) -> Self {
            let mut out = vec![0u64; self.0.len() + o.0.len() + 1];
            for (i, &a) in self.0.iter().enumerate() {
                let mut carry = 0u64;
                for (j, &b) in o.0.iter().enumerate() {
                    let v = out[i + j] + u64::from(a) * u64::from(b) + carry;
                    out[i + j] = v & 0xffff_ffff;
                    carry = v >> 32;
                }
                let mut k = i + o.0.len();
                while carry > 0 {
                    let v = out[k] + carry;
                    out[k] = v & 0xffff_ffff;
                    carry = v >> 32;
                    k += 1;
                }
            }
            let mut b = Big(out.into_iter().map(|v| v as u32).collect());
            b.trim();
            b
        }
        /// (mantissa in [0.5, 1) as f64, binary exponent).
        fn to_frexp(&self) -> (f64, i64) {
            if self.0.is_empty() {
                return (0.0, 0);
            }
            // value = top * 2^(32 * (len - take)); top holds the `take` most significant limbs.
            let take = self.0.len().min(3);
            let mut top = 0u128;
            for l in self.0.iter().rev().take(take) {
                top = (top << 32) | u128::from(*l);
            }
            let top_sig = 128 - i64::from(top.leading_zeros());
            let mant = top as f64 / 2f64.powi(top_sig as i32);
            (mant, top_sig + 32 * (self.0.len() as i64 - take as i64))
        }
    }

    fn binom(a: u64, b: u64) -> Big {
        if b > a {
            return Big(vec![]);
        }
        let mut r = Big::from_u64(1);
        for i in 0..b {
            r = r.mul_small((a - i) as u32).div_small((i + 1) as u32);
        }
        r
    }

    /// The tail probability by exact big-integer arithmetic, converted to f64 at the end.
    fn exact_tail(n: u64, f: u64, c: u64, t: u64) -> f64 {
        let mut num = Big(vec![]);
        for k in t..=f.min(c) {
            if c - k <= n - f {
                num = num.add(&binom(f, k).mul(&binom(n - f, c - k)));
            }
        }
        let den = binom(n, c);
        let (mn, en) = num.to_frexp();
        let (md, ed) = den.to_frexp();
        if mn == 0.0 {
            return 0.0;
        }
        (mn / md) * 2f64.powi((en - ed) as i32)
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        if a == b {
            return true;
        }
        ((a - b) / b).abs() < rel
    }

    #[test]
    fn small_cases_match_u128_exactly() {
        // n up to 40: every binomial fits in u128.
        fn c128(a: u64, b: u64) -> u128 {
            if b > a {
                return 0;
            }
            let mut r = 1u128;
            for i in 0..b {
                r = r * u128::from(a - i) / u128::from(i + 1);
            }
            r
        }
        for n in [5u64, 12, 27, 40] {
            for f in [0, 1, n / 4, n / 3, n / 2, n] {
                for c in [1, 3, n / 2, n] {
                    for t in 0..=c {
                        let mut num = 0u128;
                        for k in t..=f.min(c) {
                            if c - k <= n - f {
                                num += c128(f, k) * c128(n - f, c - k);
                            }
                        }
                        let want = num as f64 / c128(n, c) as f64;
                        let got = failure_probability(n, f, c, t);
                        assert!(
                            close(got, want, 1e-11),
                            "n={n} f={f} c={c} t={t}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn deep_tails_match_big_integer_arithmetic() {
        for (n, f, c, t) in [
            (2_000u64, 500u64, 200u64, 67u64),
            (4_000, 1_000, 250, 84),
            (1_600, 400, 100, 34),
            (10_000, 2_000, 400, 134),
            (5_000, 100, 300, 100),
        ] {
            let want = exact_tail(n, f, c, t);
            let got = failure_probability(n, f, c, t);
            assert!(
                close(got, want, 1e-9),
                "n={n} f={f} c={c} t={t}: {got:e} vs {want:e}"
            );
        }
        // The deepest of these is far into the tail.
        assert!(failure_probability(5_000, 100, 300, 100) < 1e-40);
    }

    #[test]
    fn epoch_probability_is_between_single_and_union() {
        let (n, f, c, t) = (2_000u64, 500, 100, 34);
        let p = failure_probability(n, f, c, t);
        for k in [1u64, 2, 8, 16] {
            let e = epoch_failure_probability(n, f, c, t, k);
            let u = epoch_failure_union_bound(n, f, c, t, k);
            assert!(e >= p * (1.0 - 1e-12), "k={k}");
            assert!(e <= u * (1.0 + 1e-12), "k={k}: {e} > {u}");
        }
        assert!(close(epoch_failure_probability(n, f, c, t, 1), p, 1e-12));
        // Two committees of 2 from 4 nodes, 1 Byzantine, failing at 1: one of them always fails.
        assert!(close(epoch_failure_probability(4, 1, 2, 1, 2), 1.0, 1e-12));
        assert_eq!(expected_epochs_to_failure(0.0), f64::INFINITY);
        assert_eq!(expected_epochs_to_failure(0.25), 4.0);
    }

    #[test]
    fn ln_factorial_is_smooth_across_the_table_boundary() {
        for k in [1020u64, 1023, 1024, 1025, 5000] {
            let direct: f64 = (2..=k).map(|i| (i as f64).ln()).sum();
            assert!(close(ln_factorial(k), direct, 1e-12), "k={k}");
        }
        assert!(failure_probability(10, 11, 3, 1).is_nan());
    }
}
