//! Generalising quasi-identifiers before publishing data under pseudonyms.
//!
//! A pseudonym hides *who*; the other columns can still say it. These helpers follow the HIPAA
//! Safe Harbor method (45 CFR 164.514(b)(2)) for the quasi-identifiers medical data sets usually
//! carry:
//!
//! * dates directly related to a person keep only their year ([`generalize_date`]);
//! * ages over 89 become one group, "90+", and so do birth years that would reveal such an age
//!   ([`generalize_age`], [`generalize_birth`]);
//! * ZIP codes keep their first three digits, and the three-digit areas of 20,000 people or
//!   fewer become `000` ([`ZipGeneralizer`]);
//!
//! and [`k_anonymity`] tells how many records share the rarest combination of what remains.
//!
//! ```
//! use medledger::pseudonym::generalize::{
//!     generalize_birth, generalize_zip, k_anonymity, BirthYear, CivilDate,
//! };
//!
//! let today = CivilDate::new(2027, 3, 1)?;
//! assert_eq!(generalize_birth(CivilDate::new(1961, 7, 14)?, today)?, BirthYear::Year(1961));
//! assert_eq!(generalize_birth(CivilDate::new(1931, 2, 1)?, today)?, BirthYear::NinetyOrOlder);
//! assert_eq!(generalize_zip("02139-4307")?.to_string(), "021");
//! assert_eq!(generalize_zip("03601")?.to_string(), "000"); // 036: a restricted area
//!
//! let rows = [("021", 1961), ("021", 1961), ("100", 1980)];
//! assert_eq!(k_anonymity(&rows), Some(1)); // the 1980 row is unique
//! # Ok::<(), medledger::pseudonym::generalize::GeneralizeError>(())
//! ```
//!
//! Errors never echo their input, which may itself be identifying.
//!
//! Safe Harbor also requires that the publisher have no actual knowledge that what remains
//! could identify a person; these helpers cannot decide that. The
//! `linkage` experiment (feature `lab`) shows how much a release's quasi-identifiers alone
//! let an adversary link records across pseudonym windows.

use core::fmt;
use core::str::FromStr;
use std::collections::{BTreeMap, BTreeSet};

/// Why a value could not be generalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeneralizeError {
    /// Not a valid calendar date (or a year outside 0..=9999).
    #[error("invalid calendar date")]
    InvalidDate,
    /// A birth date after the reference date.
    #[error("birth date is after the reference date")]
    BirthAfterReference,
    /// Not a US ZIP code: 5 digits, optionally followed by 4 more (with or without a dash).
    #[error("not a zip code (expected 5 digits, optionally followed by 4)")]
    InvalidZip,
}

/// A proleptic Gregorian calendar date, years 0 to 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    year: u16,
    month: u8,
    day: u8,
}

fn is_leap(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl CivilDate {
    /// A date.
    ///
    /// # Errors
    ///
    /// [`GeneralizeError::InvalidDate`] if it does not exist.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, GeneralizeError> {
        if year > 9999 || day == 0 || day > days_in_month(year, month) {
            return Err(GeneralizeError::InvalidDate);
        }
        Ok(Self { year, month, day })
    }

    /// A date known to be valid (for constants).
    #[cfg(feature = "lab")]
    pub(crate) const fn from_parts_unchecked(year: u16, month: u8, day: u8) -> Self {
        Self { year, month, day }
    }

    /// The UTC date of a unix time (seconds; negative before 1970).
    ///
    /// # Errors
    ///
    /// [`GeneralizeError::InvalidDate`] outside years 0..=9999.
    pub fn from_unix_secs(secs: i64) -> Result<Self, GeneralizeError> {
        // Days since 1970-01-01, then the civil-from-days algorithm on 400-year eras.
        let days = secs.div_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let year = u16::try_from(year).map_err(|_| GeneralizeError::InvalidDate)?;
        // month in 1..=12 and day in 1..=31 by construction.
        Self::new(
            year,
            u8::try_from(month).map_err(|_| GeneralizeError::InvalidDate)?,
            u8::try_from(day).map_err(|_| GeneralizeError::InvalidDate)?,
        )
    }

    /// The year.
    pub const fn year(&self) -> u16 {
        self.year
    }

    /// The month, 1 to 12.
    pub const fn month(&self) -> u8 {
        self.month
    }

    /// The day of the month, 1 to 31.
    pub const fn day(&self) -> u8 {
        self.day
    }

    /// Whole years from `self` to `on` (the age on `on` of someone born on `self`).
    ///
    /// # Errors
    ///
    /// [`GeneralizeError::BirthAfterReference`] if `self` is after `on`.
    pub fn years_until(&self, on: CivilDate) -> Result<u16, GeneralizeError> {
        if *self > on {
            return Err(GeneralizeError::BirthAfterReference);
        }
        let before_birthday = (on.month, on.day) < (self.month, self.day);
        Ok(on.year - self.year - u16::from(before_birthday))
    }
}

impl fmt::Display for CivilDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Safe Harbor's date rule for dates other than birth (admission, discharge, death, …): only
/// the year remains.
///
/// For a person aged 90 or over the year of such a date can still reveal the age; publish
/// such dates only for people under 90, or drop them.
pub const fn generalize_date(date: CivilDate) -> u16 {
    date.year
}

/// The first age Safe Harbor groups: ages 90 and over are all published as "90+".
pub const AGE_GROUPED_FROM: u16 = 90;

/// An age as Safe Harbor allows it to be published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GeneralizedAge {
    /// An age under 90, in years.
    Years(u8),
    /// 90 or older.
    NinetyOrOlder,
}

impl fmt::Display for GeneralizedAge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeneralizedAge::Years(y) => write!(f, "{y}"),
            GeneralizedAge::NinetyOrOlder => f.write_str("90+"),
        }
    }
}

/// Groups ages of 90 and over.
pub fn generalize_age(years: u16) -> GeneralizedAge {
    match u8::try_from(years) {
        Ok(y) if years < AGE_GROUPED_FROM => GeneralizedAge::Years(y),
        _ => GeneralizedAge::NinetyOrOlder,
    }
}

/// A birth date as Safe Harbor allows it to be published: the year, unless that would reveal an
/// age of 90 or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BirthYear {
    /// The year of birth of someone under 90.
    Year(u16),
    /// Someone aged 90 or more: no year.
    NinetyOrOlder,
}

impl fmt::Display for BirthYear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BirthYear::Year(y) => write!(f, "{y}"),
            BirthYear::NinetyOrOlder => f.write_str("90+"),
        }
    }
}

/// Generalises a birth date for a release made on `on`: the year, or
/// [`BirthYear::NinetyOrOlder`] if the person is 90 or older on that date.
///
/// # Errors
///
/// [`GeneralizeError::BirthAfterReference`] if the birth is after `on`.
pub fn generalize_birth(birth: CivilDate, on: CivilDate) -> Result<BirthYear, GeneralizeError> {
    Ok(match generalize_age(birth.years_until(on)?) {
        GeneralizedAge::Years(_) => BirthYear::Year(birth.year),
        GeneralizedAge::NinetyOrOlder => BirthYear::NinetyOrOlder,
    })
}

/// The first three digits of a ZIP code, as published (`000` for restricted areas).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zip3([u8; 3]);

impl Zip3 {
    /// `000`: what restricted areas are published as.
    pub const RESTRICTED: Zip3 = Zip3(*b"000");

    /// The three ASCII digits.
    pub const fn as_bytes(&self) -> &[u8; 3] {
        &self.0
    }
}

impl fmt::Display for Zip3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always three ASCII digits.
        f.write_str(core::str::from_utf8(&self.0).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Zip3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zip3({self})")
    }
}

impl FromStr for Zip3 {
    type Err = GeneralizeError;
    /// Exactly three digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b: [u8; 3] = s
            .as_bytes()
            .try_into()
            .map_err(|_| GeneralizeError::InvalidZip)?;
        if !b.iter().all(u8::is_ascii_digit) {
            return Err(GeneralizeError::InvalidZip);
        }
        Ok(Zip3(b))
    }
}

/// The three-digit ZIP areas that had 20,000 people or fewer in the 2000 Census, which HHS lists
/// in its Safe Harbor guidance. HHS asks covered entities to use current Census data when it is
/// published: build a [`ZipGeneralizer`] from an up-to-date list when you have one.
pub const SAFE_HARBOR_RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

/// Truncates ZIP codes to three digits, mapping restricted areas to `000`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipGeneralizer {
    restricted: BTreeSet<Zip3>,
}

impl Default for ZipGeneralizer {
    /// With [`SAFE_HARBOR_RESTRICTED_ZIP3`].
    fn default() -> Self {
        Self {
            restricted: SAFE_HARBOR_RESTRICTED_ZIP3
                .iter()
                .filter_map(|z| z.parse().ok())
                .collect(),
        }
    }
}

impl ZipGeneralizer {
    /// With the given restricted three-digit areas (e.g. from current Census data).
    pub fn with_restricted(restricted: impl IntoIterator<Item = Zip3>) -> Self {
        Self {
            restricted: restricted.into_iter().collect(),
        }
    }

    /// Whether `zip3` is restricted.
    pub fn is_restricted(&self, zip3: &Zip3) -> bool {
        self.restricted.contains(zip3)
    }

    /// Generalises a ZIP code: `12345`, `12345-6789` or `123456789`.
    ///
    /// # Errors
    ///
    /// [`GeneralizeError::InvalidZip`] for anything else.
    pub fn generalize(&self, zip: &str) -> Result<Zip3, GeneralizeError> {
        let b = zip.as_bytes();
        let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        let ok = match b.len() {
            5 | 9 => digits(b),
            10 => b[5] == b'-' && digits(&b[..5]) && digits(&b[6..]),
            _ => false,
        };
        if !ok {
            return Err(GeneralizeError::InvalidZip);
        }
        let z = Zip3([b[0], b[1], b[2]]);
        Ok(if self.is_restricted(&z) {
            Zip3::RESTRICTED
        } else {
            z
        })
    }
}

/// [`ZipGeneralizer::generalize`] with the default (2000 Census) restricted list.
///
/// # Errors
///
/// [`GeneralizeError::InvalidZip`] if `zip` is not a ZIP code.
pub fn generalize_zip(zip: &str) -> Result<Zip3, GeneralizeError> {
    ZipGeneralizer::default().generalize(zip)
}

/// Administrative gender, as in FHIR (`male | female | other | unknown`); Safe Harbor lets it be
/// published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdministrativeGender {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Other.
    Other,
    /// Unknown.
    Unknown,
}

/// The usual quasi-identifiers of a published medical record, generalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuasiIdentifiers {
    /// Year of birth, or 90+.
    pub birth: BirthYear,
    /// Three-digit ZIP area.
    pub zip3: Zip3,
    /// Administrative gender.
    pub gender: AdministrativeGender,
}

impl fmt::Display for AdministrativeGender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdministrativeGender::Female => "female",
            AdministrativeGender::Male => "male",
            AdministrativeGender::Other => "other",
            AdministrativeGender::Unknown => "unknown",
        })
    }
}

impl fmt::Display for QuasiIdentifiers {
    /// `born 1961, ZIP 021, female`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "born {}, ZIP {}, {}", self.birth, self.zip3, self.gender)
    }
}

/// The equivalence classes smaller than `k`, each with its size, in the classes' order.
pub fn classes_below_k<K: Ord + Clone>(records: &[K], k: usize) -> Vec<(K, usize)> {
    equivalence_classes(records)
        .into_iter()
        .filter(|(_, n)| *n < k)
        .map(|(c, n)| (c.clone(), n))
        .collect()
}

/// How many records share each combination of quasi-identifiers (the equivalence classes).
pub fn equivalence_classes<K: Ord>(records: &[K]) -> BTreeMap<&K, usize> {
    let mut classes = BTreeMap::new();
    for r in records {
        *classes.entry(r).or_insert(0) += 1;
    }
    classes
}

/// The size of the smallest equivalence class: the table is k-anonymous for every `k` up to
/// this. `None` for an empty table.
pub fn k_anonymity<K: Ord>(records: &[K]) -> Option<usize> {
    equivalence_classes(records).into_values().min()
}

/// Whether every combination of quasi-identifiers is shared by at least `k` records (an empty
/// table is).
pub fn is_k_anonymous<K: Ord>(records: &[K], k: usize) -> bool {
    k_anonymity(records).is_none_or(|m| m >= k)
}

/// The indices of the records in equivalence classes smaller than `k`: the ones to suppress (or
/// generalise further) for the table to be k-anonymous.
pub fn below_k<K: Ord>(records: &[K], k: usize) -> Vec<usize> {
    let classes = equivalence_classes(records);
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| classes.get(r).is_some_and(|&n| n < k))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dates() {
        assert!(CivilDate::new(2024, 2, 29).is_ok());
        assert!(CivilDate::new(2023, 2, 29).is_err());
        assert!(CivilDate::new(1900, 2, 29).is_err());
        assert!(CivilDate::new(2000, 2, 29).is_ok());
        assert!(CivilDate::new(2000, 13, 1).is_err());
        assert!(CivilDate::new(2000, 4, 31).is_err());
        assert!(CivilDate::new(10_000, 1, 1).is_err());
        let d = CivilDate::new(2027, 3, 1).unwrap();
        assert_eq!(d.to_string(), "2027-03-01");
        assert_eq!(generalize_date(d), 2027);
        assert_eq!(
            CivilDate::from_unix_secs(0).unwrap(),
            CivilDate::new(1970, 1, 1).unwrap()
        );
        assert_eq!(
            CivilDate::from_unix_secs(1_799_020_800).unwrap(),
            CivilDate::new(2027, 1, 4).unwrap()
        );
        assert_eq!(
            CivilDate::from_unix_secs(-1).unwrap(),
            CivilDate::new(1969, 12, 31).unwrap()
        );
        assert_eq!(
            CivilDate::from_unix_secs(951_782_400).unwrap(),
            CivilDate::new(2000, 2, 29).unwrap()
        );
        assert!(CivilDate::from_unix_secs(i64::MAX).is_err());
        assert!(CivilDate::from_unix_secs(i64::MIN).is_err());
    }

    #[test]
    fn ages_and_birth_years() {
        let on = CivilDate::new(2027, 6, 15).unwrap();
        let b = |y, m, d| CivilDate::new(y, m, d).unwrap();
        assert_eq!(b(1937, 6, 15).years_until(on), Ok(90));
        assert_eq!(b(1937, 6, 16).years_until(on), Ok(89));
        assert_eq!(
            b(2028, 1, 1).years_until(on),
            Err(GeneralizeError::BirthAfterReference)
        );
        assert_eq!(generalize_age(89), GeneralizedAge::Years(89));
        assert_eq!(generalize_age(90).to_string(), "90+");
        assert_eq!(generalize_age(u16::MAX), GeneralizedAge::NinetyOrOlder);
        assert_eq!(
            generalize_birth(b(1937, 6, 16), on),
            Ok(BirthYear::Year(1937))
        );
        assert_eq!(
            generalize_birth(b(1937, 6, 15), on),
            Ok(BirthYear::NinetyOrOlder)
        );
        assert_eq!(BirthYear::NinetyOrOlder.to_string(), "90+");
    }

    #[test]
    fn zips() {
        let g = ZipGeneralizer::default();
        assert_eq!(g.generalize("02139").unwrap().to_string(), "021");
        assert_eq!(g.generalize("021394307").unwrap().to_string(), "021");
        assert_eq!(g.generalize("02139-4307").unwrap().to_string(), "021");
        for r in SAFE_HARBOR_RESTRICTED_ZIP3 {
            assert_eq!(g.generalize(&format!("{r}12")).unwrap(), Zip3::RESTRICTED);
        }
        for bad in [
            "",
            "0213",
            "02139-",
            "0213a",
            "02139 4307",
            "02139-43071",
            "٠٢١٣٩",
        ] {
            assert_eq!(g.generalize(bad), Err(GeneralizeError::InvalidZip), "{bad}");
        }
        let custom = ZipGeneralizer::with_restricted(["021".parse().unwrap()]);
        assert_eq!(custom.generalize("02139").unwrap(), Zip3::RESTRICTED);
        assert_eq!(custom.generalize("03601").unwrap().to_string(), "036");
        assert!("12".parse::<Zip3>().is_err());
        assert!("1a2".parse::<Zip3>().is_err());
        assert_eq!(format!("{:?}", Zip3::RESTRICTED), "Zip3(000)");
    }

    #[test]
    fn k_anonymity_helpers() {
        let empty: [u8; 0] = [];
        assert_eq!(k_anonymity(&empty), None);
        assert!(is_k_anonymous(&empty, 5));
        let rows = [1, 1, 2, 2, 2, 3];
        assert_eq!(k_anonymity(&rows), Some(1));
        assert!(is_k_anonymous(&rows, 1) && !is_k_anonymous(&rows, 2));
        assert_eq!(below_k(&rows, 2), vec![5]);
        assert_eq!(below_k(&rows, 3), vec![0, 1, 5]);
        assert_eq!(equivalence_classes(&rows).len(), 3);
    }

    proptest! {
        #[test]
        fn generalizers_never_panic(s in "\\PC{0,12}", secs in any::<i64>(),
                                    y in any::<u16>(), m in any::<u8>(), d in any::<u8>()) {
            let _ = generalize_zip(&s);
            let _ = s.parse::<Zip3>();
            if let Ok(date) = CivilDate::from_unix_secs(secs) {
                prop_assert_eq!(CivilDate::new(date.year(), date.month(), date.day()), Ok(date));
            }
            if let Ok(date) = CivilDate::new(y, m, d) {
                let on = CivilDate::new(9999, 12, 31).unwrap();
                prop_assert!(date.years_until(on).is_ok());
                let _ = generalize_birth(date, on);
            }
        }
    }
}
