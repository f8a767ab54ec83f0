//! Unix seconds to FHIR instants and back (see "Time" in the module documentation).

use fhir_model::time::{format_description::well_known::Rfc3339, Date as CalDate, Month};
use fhir_model::time::{OffsetDateTime, Time};
use fhir_model::{Date, DateTime};

use super::ConsentImportError;

/// 9999-12-31T23:59:59Z: the last second a FHIR dateTime (four-digit years) can write.
const LAST_FHIR_SECOND: u64 = 253_402_300_799;

/// `secs` as a UTC instant, `2023-11-14T22:13:20Z` (clamped to the year 9999).
pub(super) fn instant(secs: u64) -> String {
    let secs = secs.min(LAST_FHIR_SECOND);
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
}

/// `secs` as a date, `2023-11-14` (UTC, clamped to the year 9999).
pub(super) fn date(secs: u64) -> String {
    let mut s = instant(secs);
    s.truncate(10);
    s
}

/// The first whole second at or after `t` (a period's start).
pub(super) fn start_second(t: &DateTime) -> Result<u64, ConsentImportError> {
    let (secs, exact) = match t {
        DateTime::Date(d) => (date_start(d)?, true),
        DateTime::DateTime(i) => (i.0.unix_timestamp(), i.0.nanosecond() == 0),
    };
    let secs = if exact { secs } else { secs.saturating_add(1) };
    non_negative(secs, t)
}

/// The first second after the instants `t` matches (an inclusive end made exclusive); for an
/// instant with a fraction of a second, its whole second (never widening).
pub(super) fn end_second(t: &DateTime) -> Result<u64, ConsentImportError> {
    let secs = match t {
        DateTime::Date(d) => date_end(d)?,
        DateTime::DateTime(i) if i.0.nanosecond() == 0 => i.0.unix_timestamp().saturating_add(1),
        DateTime::DateTime(i) => i.0.unix_timestamp(),
    };
    non_negative(secs, t)
}

fn non_negative(secs: i64, t: &DateTime) -> Result<u64, ConsentImportError> {
    u64::try_from(secs).map_err(|_| out_of_range(t))
}

fn out_of_range(t: &DateTime) -> ConsentImportError {
    ConsentImportError::TimeOutOfRange(format!("{t:?}").chars().take(80).collect())
}

fn midnight(d: CalDate) -> i64 {
    d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp()
}

fn calendar(year: i32, month: Month, day: u8) -> Result<CalDate, ConsentImportError> {
    CalDate::from_calendar_date(year, month, day)
        .map_err(|_| ConsentImportError::TimeOutOfRange(format!("{year}-{month}-{day}")))
}

/// Midnight UTC starting the date.
fn date_start(d: &Date) -> Result<i64, ConsentImportError> {
    Ok(midnight(match d {
        Date::Year(y) => calendar(*y, Month::January, 1)?,
        Date::YearMonth(y, m) => calendar(*y, *m, 1)?,
        Date::Date(d) => *d,
    }))
}

/// Midnight UTC after the date's last day.
fn date_end(d: &Date) -> Result<i64, ConsentImportError> {
    let next = match d {
        Date::Year(y) => calendar(y.saturating_add(1), Month::January, 1)?,
        Date::YearMonth(y, m) => {
            let year = if *m == Month::December {
                y.saturating_add(1)
            } else {
                *y
            };
            calendar(year, m.next(), 1)?
        }
        Date::Date(d) => d
            .next_day()
            .ok_or_else(|| ConsentImportError::TimeOutOfRange(d.to_string()))?,
    };
    Ok(midnight(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DateTime {
        serde_json::from_value(serde_json::Value::String(s.into())).unwrap()
    }

    #[test]
    fn instants_are_utc_and_end_inclusive_ends_round_trip() {
        assert_eq!(instant(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(date(1_700_000_000), "2023-11-14");
        assert_eq!(instant(u64::MAX), "9999-12-31T23:59:59Z");
        let t = parse(&instant(1_700_000_000));
        assert_eq!(start_second(&t).unwrap(), 1_700_000_000);
        assert_eq!(end_second(&t).unwrap(), 1_700_000_001);
    }

    #[test]
    fn partial_dates_cover_their_whole_span() {
        let day = 86_400;
        let d = parse("2019-10-10");
        assert_eq!(start_second(&d).unwrap(), 1_570_665_600);
        assert_eq!(end_second(&d).unwrap(), 1_570_665_600 + day);
        let m = parse("2019-12");
        assert_eq!(start_second(&m).unwrap(), 1_575_158_400);
        assert_eq!(end_second(&m).unwrap(), 1_577_836_800, "2020-01-01");
        let y = parse("2019");
        assert_eq!(start_second(&y).unwrap(), 1_546_300_800);
        assert_eq!(end_second(&y).unwrap(), 1_577_836_800);
    }

    #[test]
    fn zones_and_fractions_never_widen() {
        let t = parse("2016-06-23T17:02:33+10:00");
        assert_eq!(start_second(&t).unwrap(), 1_466_665_353);
        let f = parse("2016-06-23T07:02:33.250Z");
        assert_eq!(start_second(&f).unwrap(), 1_466_665_354);
        assert_eq!(end_second(&f).unwrap(), 1_466_665_353);
    }

    #[test]
    fn times_before_1970_are_out_of_range() {
        assert!(matches!(
            start_second(&parse("1964-01-01")),
            Err(ConsentImportError::TimeOutOfRange(_))
        ));
    }
}
