//! Difficulty retargeting and timestamp rules.

use super::target::decode_compact;
use super::{CompactTarget, Error, Target};
use crate::u256::U256;

/// How far ahead of the current time a block time may be, in seconds (Bitcoin: two hours).
pub const MAX_FUTURE_BLOCK_TIME: u64 = 2 * 60 * 60;

/// How many of the latest block times [`median_time_past`] takes the median of (Bitcoin: 11).
pub const MEDIAN_TIME_SPAN: usize = 11;

/// Difficulty retargeting parameters, validated on construction.
///
/// Every `interval` blocks the target is scaled by how long the last `interval` blocks took
/// compared with `target_timespan`, the measured time being clamped to
/// `[target_timespan / clamp_factor, target_timespan * clamp_factor]`, and capped at
/// `pow_limit`. With `no_retargeting` (Bitcoin's regtest) the target never changes.
///
/// ```
/// use medledger::pow::{CompactTarget, RetargetParams};
/// let bitcoin = RetargetParams::bitcoin();
/// assert_eq!(bitcoin.interval(), 2016);
/// assert_eq!(bitcoin.target_spacing(), 600);
///
/// let fast = RetargetParams::builder()
///     .interval(10)
///     .target_timespan(10 * 60)
///     .pow_limit(CompactTarget::from_consensus(0x1f00ffff))
///     .build()?;
/// assert!(fast.is_retarget_height(20));
///
/// assert!(RetargetParams::builder().interval(0).build().is_err());
/// # Ok::<(), medledger::pow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetargetParams {
    interval: u64,
    target_timespan: u64,
    clamp_factor: u64,
    pow_limit: CompactTarget,
    pow_limit_target: Target,
    no_retargeting: bool,
}

impl RetargetParams {
    /// Bitcoin mainnet: 2016 blocks, 14 days, a factor-4 clamp, limit `0x1d00ffff`.
    pub const fn bitcoin() -> Self {
        Self {
            interval: 2016,
            target_timespan: 14 * 24 * 60 * 60,
            clamp_factor: 4,
            pow_limit: CompactTarget::BITCOIN_MAINNET_LIMIT,
            pow_limit_target: Target::MAX,
            no_retargeting: false,
        }
    }

    /// Bitcoin regtest: as [`bitcoin`](Self::bitcoin) but with limit `0x207fffff` and no
    /// retargeting.
    pub const fn regtest() -> Self {
        Self {
            pow_limit: CompactTarget::BITCOIN_REGTEST_LIMIT,
            pow_limit_target: Target::REGTEST_LIMIT,
            no_retargeting: true,
            ..Self::bitcoin()
        }
    }

    /// A builder starting from [`bitcoin`](Self::bitcoin)'s values.
    pub const fn builder() -> RetargetParamsBuilder {
        RetargetParamsBuilder {
            interval: 2016,
            target_timespan: 14 * 24 * 60 * 60,
            clamp_factor: 4,
            pow_limit: CompactTarget::BITCOIN_MAINNET_LIMIT,
            no_retargeting: false,
        }
    }

    /// Blocks between retargets.
    pub const fn interval(&self) -> u64 {
        self.interval
    }

    /// The time an interval should take, in seconds.
    pub const fn target_timespan(&self) -> u64 {
        self.target_timespan
    }

    /// The intended time between blocks, `target_timespan / interval` (rounded down).
    pub const fn target_spacing(&self) -> u64 {
        self.target_timespan / self.interval
    }

    /// The most a single retarget can change the target by, either way.
    pub const fn clamp_factor(&self) -> u64 {
        self.clamp_factor
    }

    /// The easiest target allowed, compact.
    pub const fn pow_limit(&self) -> CompactTarget {
        self.pow_limit
    }

    /// The easiest target allowed, decoded.
    pub const fn pow_limit_target(&self) -> Target {
        self.pow_limit_target
    }

    /// Whether the target never changes.
    pub const fn no_retargeting(&self) -> bool {
        self.no_retargeting
    }

    /// Whether the block at `height` gets a new target: a non-zero multiple of the interval.
    ///
    /// For such a block, [`next_target`] takes the time of block `height - interval` as
    /// `first_block_time` and the time of block `height - 1` as `last_block_time` (Bitcoin's
    /// window, which spans `interval - 1` block gaps). Other blocks keep their parent's target.
    pub const fn is_retarget_height(&self, height: u64) -> bool {
        height != 0 && height.is_multiple_of(self.interval)
    }
}

impl Default for RetargetParams {
    fn default() -> Self {
        Self::bitcoin()
    }
}

/// Builds validated [`RetargetParams`]; see [`RetargetParams::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RetargetParamsBuilder {
    interval: u64,
    target_timespan: u64,
    clamp_factor: u64,
    pow_limit: CompactTarget,
    no_retargeting: bool,
}

impl RetargetParamsBuilder {
    /// Blocks between retargets (at least 1).
    pub const fn interval(mut self, blocks: u64) -> Self {
        self.interval = blocks;
        self
    }

    /// The time an interval should take, in seconds (at least 1, and at least the clamp
    /// factor).
    pub const fn target_timespan(mut self, seconds: u64) -> Self {
        self.target_timespan = seconds;
        self
    }

    /// The most a single retarget can change the target by (at least 1; Bitcoin: 4).
    pub const fn clamp_factor(mut self, factor: u64) -> Self {
        self.clamp_factor = factor;
        self
    }

    /// The easiest target allowed.
    pub const fn pow_limit(mut self, limit: CompactTarget) -> Self {
        self.pow_limit = limit;
        self
    }

    /// Whether the target never changes.
    pub const fn no_retargeting(mut self, yes: bool) -> Self {
        self.no_retargeting = yes;
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// * [`Error::ZeroInterval`], [`Error::ZeroTimespan`], [`Error::ZeroClampFactor`];
    /// * [`Error::TimespanBelowClampFactor`] if the shortest clamped timespan would be zero;
    /// * [`Error::InvalidPowLimit`] if the limit does not decode or is zero;
    /// * [`Error::RetargetOverflow`] if, with retargeting on, the limit times the longest
    ///   clamped timespan does not fit in 256 bits (Bitcoin Core's chain-parameter sanity
    ///   check), so that retargeting any valid target never wraps.
    pub fn build(self) -> Result<RetargetParams, Error> {
        if self.interval == 0 {
            return Err(Error::ZeroInterval);
        }
        if self.target_timespan == 0 {
            return Err(Error::ZeroTimespan);
        }
        if self.clamp_factor == 0 {
            return Err(Error::ZeroClampFactor);
        }
        if self.target_timespan < self.clamp_factor {
            return Err(Error::TimespanBelowClampFactor {
                timespan: self.target_timespan,
                factor: self.clamp_factor,
            });
        }
        let limit = Target::from_compact(self.pow_limit)
            .map_err(|e| Error::InvalidPowLimit(Box::new(e)))?;
        if limit == Target::ZERO {
            return Err(Error::InvalidPowLimit(Box::new(Error::ZeroTarget(
                self.pow_limit,
            ))));
        }
        if !self.no_retargeting {
            let overflow = Error::RetargetOverflow {
                limit: self.pow_limit,
                max_timespan: self.target_timespan.saturating_mul(self.clamp_factor),
            };
            let max_timespan = self
                .target_timespan
                .checked_mul(self.clamp_factor)
                .ok_or_else(|| overflow.clone())?;
            if limit.as_u256().overflowing_mul_u64(max_timespan).1 {
                return Err(overflow);
            }
        }
        Ok(RetargetParams {
            interval: self.interval,
            target_timespan: self.target_timespan,
            clamp_factor: self.clamp_factor,
            pow_limit: self.pow_limit,
            pow_limit_target: limit,
            no_retargeting: self.no_retargeting,
        })
    }
}

/// The target for the block after a retarget window, exactly as Bitcoin Core's
/// `CalculateNextWorkRequired`.
///
/// `last` is the target of the window's last block, `first_block_time` and `last_block_time`
/// the times of its first and last blocks (see [`RetargetParams::is_retarget_height`]). The
/// measured timespan (zero if the last time is earlier) is clamped to the parameters' range,
/// the target multiplied by it and divided by the target timespan in 256-bit arithmetic,
/// capped at the limit and compact-encoded (which truncates to three significant bytes).
///
/// With [`RetargetParams::no_retargeting`], `last` is returned unchanged. Inputs that a valid
/// chain never produces (a `last` above the limit, negative or overflowing) are still computed
/// exactly as Core would, wrapping included; the result is never easier than the limit.
///
/// ```
/// use medledger::pow::{next_target, CompactTarget, RetargetParams};
/// // Bitcoin's retarget at block 32256 (from Bitcoin Core's tests).
/// let next = next_target(
///     CompactTarget::from_consensus(0x1d00ffff),
///     1261130161, // block 30240
///     1262152739, // block 32255
///     &RetargetParams::bitcoin(),
/// );
/// assert_eq!(next, CompactTarget::from_consensus(0x1d00d86a));
/// ```
pub fn next_target(
    last: CompactTarget,
    first_block_time: u64,
    last_block_time: u64,
    params: &RetargetParams,
) -> CompactTarget {
    if params.no_retargeting {
        return last;
    }
    let timespan = params.target_timespan;
    // Validated: timespan >= clamp_factor >= 1 and timespan * clamp_factor fits in a u64.
    let min = timespan / params.clamp_factor;
    let max = timespan.saturating_mul(params.clamp_factor);
    let actual = last_block_time
        .saturating_sub(first_block_time)
        .clamp(min, max);
    // Core multiplies the raw `SetCompact` value, ignoring its flags, modulo 2^256.
    let old = decode_compact(last).value;
    let scaled = old.overflowing_mul_u64(actual).0;
    let new = match scaled.div_rem(U256::from_u64(timespan)) {
        Some((q, _)) => Target::from_u256(q),
        // Unreachable: the timespan is validated non-zero.
        None => params.pow_limit_target,
    };
    new.min(params.pow_limit_target).to_compact()
}

/// The median of the last [`MEDIAN_TIME_SPAN`] (11) block times, as Bitcoin Core's
/// `GetMedianTimePast`.
///
/// `times` is in chain order (oldest first); only its last 11 entries count. With an even
/// count the upper of the two middle values is taken, as Core does near genesis. An empty
/// slice gives 0.
///
/// ```
/// use medledger::pow::median_time_past;
/// assert_eq!(median_time_past(&[5, 1, 3]), 3);
/// assert_eq!(median_time_past(&[1, 2, 3, 4]), 3);
/// assert_eq!(median_time_past(&[]), 0);
/// ```
pub fn median_time_past(times: &[u64]) -> u64 {
    let recent = &times[times.len().saturating_sub(MEDIAN_TIME_SPAN)..];
    let mut buf = [0u64; MEDIAN_TIME_SPAN];
    let buf = &mut buf[..recent.len()];
    buf.copy_from_slice(recent);
    buf.sort_unstable();
    buf.get(buf.len() / 2).copied().unwrap_or(0)
}

/// Bitcoin Core's block-time rules: `time` must be after the median time past of the previous
/// blocks and at most [`MAX_FUTURE_BLOCK_TIME`] ahead of `now`.
///
/// # Errors
///
/// [`Error::TimeTooOld`] or [`Error::TimeTooNew`].
pub fn check_block_time(time: u64, median_time_past: u64, now: u64) -> Result<(), Error> {
    if time <= median_time_past {
        return Err(Error::TimeTooOld {
            time,
            median_time_past,
        });
    }
    if time > now.saturating_add(MAX_FUTURE_BLOCK_TIME) {
        return Err(Error::TimeTooNew {
            time,
            now,
            max_drift: MAX_FUTURE_BLOCK_TIME,
        });
    }
    Ok(())
}
