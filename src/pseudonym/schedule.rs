//! Mapping wall-clock time to epochs.

use super::Epoch;

/// The longest window allowed: about 100 years.
const MAX_WINDOW_SECS: u64 = 100 * 366 * 24 * 3600;

/// Why an [`EpochSchedule`] could not be built or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// No window length was given.
    #[error("epoch window length not set")]
    MissingWindow,
    /// The window length is zero.
    #[error("epoch window length must be at least one second")]
    ZeroWindow,
    /// The window length is over the limit.
    #[error("epoch window of {secs} s exceeds the limit of {max} s")]
    WindowTooLong {
        /// The length asked for.
        secs: u64,
        /// The limit.
        max: u64,
    },
    /// The time is before the schedule's origin.
    #[error("time {time} is before the schedule origin {origin}")]
    BeforeOrigin {
        /// The time asked about (unix seconds).
        time: u64,
        /// The origin (unix seconds).
        origin: u64,
    },
}

/// Splits time into fixed windows: epoch `n` is `[origin + n·window, origin + (n+1)·window)`,
/// in unix seconds.
///
/// ```
/// use medledger::pseudonym::{Epoch, EpochSchedule};
///
/// // Weekly windows from 2027-01-04 00:00 UTC (a Monday).
/// let weekly = EpochSchedule::builder()
///     .origin(1_799_020_800)
///     .window_secs(7 * 24 * 3600)
///     .build()?;
/// assert_eq!(weekly.epoch_at(1_799_020_800 + 8 * 24 * 3600)?, Epoch::new(1));
/// assert_eq!(weekly.start_of(Epoch::new(1)), Some(1_799_020_800 + 7 * 24 * 3600));
/// assert!(weekly.epoch_at(0).is_err());
/// # Ok::<(), medledger::pseudonym::ScheduleError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochSchedule {
    origin: u64,
    window: u64,
}

/// Builds an [`EpochSchedule`]; [`build`](Self::build) validates.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpochScheduleBuilder {
    origin: u64,
    window: Option<u64>,
}

impl EpochScheduleBuilder {
    /// The start of epoch 0, in unix seconds (default 0).
    pub fn origin(mut self, unix_secs: u64) -> Self {
        self.origin = unix_secs;
        self
    }

    /// The window length in seconds (required).
    pub fn window_secs(mut self, secs: u64) -> Self {
        self.window = Some(secs);
        self
    }

    /// The schedule.
    ///
    /// # Errors
    ///
    /// [`ScheduleError`] if the window is missing, zero or longer than about 100 years.
    pub fn build(self) -> Result<EpochSchedule, ScheduleError> {
        let window = self.window.ok_or(ScheduleError::MissingWindow)?;
        if window == 0 {
            return Err(ScheduleError::ZeroWindow);
        }
        if window > MAX_WINDOW_SECS {
            return Err(ScheduleError::WindowTooLong {
                secs: window,
                max: MAX_WINDOW_SECS,
            });
        }
        Ok(EpochSchedule {
            origin: self.origin,
            window,
        })
    }
}

impl EpochSchedule {
    /// A builder.
    pub fn builder() -> EpochScheduleBuilder {
        EpochScheduleBuilder::default()
    }

    /// The start of epoch 0, in unix seconds.
    pub const fn origin(&self) -> u64 {
        self.origin
    }

    /// The window length in seconds.
    pub const fn window_secs(&self) -> u64 {
        self.window
    }

    /// The epoch containing `unix_secs`.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::BeforeOrigin`] if the time is before the origin.
    pub fn epoch_at(&self, unix_secs: u64) -> Result<Epoch, ScheduleError> {
        let since = unix_secs
            .checked_sub(self.origin)
            .ok_or(ScheduleError::BeforeOrigin {
                time: unix_secs,
                origin: self.origin,
            })?;
        // `window` is non-zero (checked by the builder).
        Ok(Epoch::new(since / self.window))
    }

    /// The first second of `epoch`, or `None` if it is past the end of time in `u64`.
    pub fn start_of(&self, epoch: Epoch) -> Option<u64> {
        epoch
            .get()
            .checked_mul(self.window)?
            .checked_add(self.origin)
    }

    /// The first second after `epoch`, or `None` if it is past the end of time in `u64`.
    pub fn end_of(&self, epoch: Epoch) -> Option<u64> {
        self.start_of(epoch.next()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validates() {
        assert_eq!(
            EpochSchedule::builder().build(),
            Err(ScheduleError::MissingWindow)
        );
        assert_eq!(
            EpochSchedule::builder().window_secs(0).build(),
            Err(ScheduleError::ZeroWindow)
        );
        assert!(matches!(
            EpochSchedule::builder().window_secs(u64::MAX).build(),
            Err(ScheduleError::WindowTooLong { .. })
        ));
    }

    #[test]
    fn epochs_and_bounds() {
        let s = EpochSchedule::builder()
            .origin(1000)
            .window_secs(10)
            .build()
            .unwrap();
        assert_eq!(s.epoch_at(1000).unwrap(), Epoch::new(0));
        assert_eq!(s.epoch_at(1009).unwrap(), Epoch::new(0));
        assert_eq!(s.epoch_at(1010).unwrap(), Epoch::new(1));
        assert_eq!(
            s.epoch_at(999),
            Err(ScheduleError::BeforeOrigin {
                time: 999,
                origin: 1000
            })
        );
        let last = s.epoch_at(u64::MAX).unwrap();
        assert!(s.start_of(last).is_some());
        assert_eq!(s.end_of(last), None);
        assert_eq!(s.start_of(Epoch::MAX), None);
        assert_eq!(s.end_of(Epoch::new(2)), Some(1030));
        for t in [1000u64, 1234, 99_999] {
            let e = s.epoch_at(t).unwrap();
            assert!(s.start_of(e).unwrap() <= t && t < s.end_of(e).unwrap());
        }
    }
}
