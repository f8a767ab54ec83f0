//! Purposes of use, after HL7 v3 `PurposeOfUse` (the value set FHIR Consent and access
//! decisions use).
//!
//! A purpose says *why* data is used: pseudonyms differ per purpose (see
//! [`pseudonym`](crate::pseudonym)), and access decisions are made for a purpose.
//!
//! ```
//! use medledger::purpose::PurposeOfUse;
//!
//! let p: PurposeOfUse = "HRESCH".parse().unwrap();
//! assert_eq!(p, PurposeOfUse::Research);
//! assert_eq!(p.code(), "HRESCH");
//! assert_eq!(PurposeOfUse::EmergencyTreatment.to_string(), "ETREAT");
//! assert!("NOPE".parse::<PurposeOfUse>().is_err());
//! ```
//!
//! # Encoding
//!
//! The canonical encoding of a purpose is its variant index, so the order of the variants is
//! part of the format: new purposes are only ever appended.

use core::fmt;
use core::str::FromStr;

/// Why data is used: a subset of the HL7 v3 `PurposeOfUse` codes (code system
/// [`PurposeOfUse::CODE_SYSTEM`]).
///
/// The variant order is part of the canonical encoding; new variants are appended.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum PurposeOfUse {
    /// `TREAT`: treatment of the patient.
    Treatment,
    /// `ETREAT`: emergency treatment.
    EmergencyTreatment,
    /// `BTG`: break the glass, an emergency override of the patient's normal policy.
    BreakTheGlass,
    /// `HPAYMT`: payment for the patient's care.
    Payment,
    /// `HOPERAT`: healthcare operations.
    Operations,
    /// `HRESCH`: healthcare research.
    Research,
    /// `CLINTRCH`: clinical trial research.
    ClinicalTrialResearch,
    /// `PUBHLTH`: public health.
    PublicHealth,
    /// `HQUALIMP`: quality improvement.
    QualityImprovement,
    /// `COVERAGE`: coverage under a policy or program.
    Coverage,
    /// `PATRQT`: a request from the patient.
    PatientRequest,
    /// `FAMRQT`: a request from the patient's family.
    FamilyRequest,
    /// `PWATRNY`: a request from the patient's power of attorney.
    PowerOfAttorney,
    /// `HLEGAL`: legal proceedings.
    Legal,
    /// `HMARKT`: marketing.
    Marketing,
    /// `TRAIN`: training of staff.
    Training,
}

impl PurposeOfUse {
    /// The HL7 code system the codes come from.
    pub const CODE_SYSTEM: &'static str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

    /// Every purpose, in encoding order.
    pub const ALL: [PurposeOfUse; 16] = [
        Self::Treatment,
        Self::EmergencyTreatment,
        Self::BreakTheGlass,
        Self::Payment,
        Self::Operations,
        Self::Research,
        Self::ClinicalTrialResearch,
        Self::PublicHealth,
        Self::QualityImprovement,
        Self::Coverage,
        Self::PatientRequest,
        Self::FamilyRequest,
        Self::PowerOfAttorney,
        Self::Legal,
        Self::Marketing,
        Self::Training,
    ];

    /// The HL7 code (`TREAT`, `HRESCH`, …).
    pub const fn code(self) -> &'static str {
        match self {
            Self::Treatment => "TREAT",
            Self::EmergencyTreatment => "ETREAT",
            Self::BreakTheGlass => "BTG",
            Self::Payment => "HPAYMT",
            Self::Operations => "HOPERAT",
            Self::Research => "HRESCH",
            Self::ClinicalTrialResearch => "CLINTRCH",
            Self::PublicHealth => "PUBHLTH",
            Self::QualityImprovement => "HQUALIMP",
            Self::Coverage => "COVERAGE",
            Self::PatientRequest => "PATRQT",
            Self::FamilyRequest => "FAMRQT",
            Self::PowerOfAttorney => "PWATRNY",
            Self::Legal => "HLEGAL",
            Self::Marketing => "HMARKT",
            Self::Training => "TRAIN",
        }
    }

    /// What the code means, in a few words (`TREAT` → "treatment"), for people reading it.
    pub const fn description(self) -> &'static str {
        match self {
            Self::Treatment => "treatment",
            Self::EmergencyTreatment => "emergency treatment",
            Self::BreakTheGlass => "break the glass",
            Self::Payment => "payment for care",
            Self::Operations => "healthcare operations",
            Self::Research => "healthcare research",
            Self::ClinicalTrialResearch => "clinical trial research",
            Self::PublicHealth => "public health",
            Self::QualityImprovement => "quality improvement",
            Self::Coverage => "coverage",
            Self::PatientRequest => "the patient's request",
            Self::FamilyRequest => "the family's request",
            Self::PowerOfAttorney => "the power of attorney's request",
            Self::Legal => "legal proceedings",
            Self::Marketing => "marketing",
            Self::Training => "staff training",
        }
    }

    /// Whether this purpose is an emergency override (`ETREAT` or `BTG`), which access control
    /// grants only time-boxed and under review.
    pub const fn is_emergency(self) -> bool {
        matches!(self, Self::EmergencyTreatment | Self::BreakTheGlass)
    }
}

impl fmt::Display for PurposeOfUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Returned when a string is not a known purpose-of-use code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown purpose-of-use code {code:?}")]
pub struct UnknownPurpose {
    /// The code that was not recognised (at most 16 characters of it).
    pub code: String,
}

impl FromStr for PurposeOfUse {
    type Err = UnknownPurpose;

    /// Parses an HL7 code, exactly as [`code`](Self::code) writes it (codes are case-sensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.code() == s)
            .ok_or_else(|| UnknownPurpose {
                code: s.chars().take(16).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for p in PurposeOfUse::ALL {
            assert!(seen.insert(p.code()));
            assert_eq!(p.code().parse::<PurposeOfUse>().unwrap(), p);
        }
        assert!("treat".parse::<PurposeOfUse>().is_err());
        let long = "X".repeat(1000);
        assert_eq!(long.parse::<PurposeOfUse>().unwrap_err().code.len(), 16);
    }

    #[test]
    fn encoding_is_the_variant_index() {
        // The encoding is part of the pseudonym format: pin it.
        for (i, p) in PurposeOfUse::ALL.into_iter().enumerate() {
            let body = postcard::to_allocvec(&p).unwrap();
            assert_eq!(body, vec![u8::try_from(i).unwrap()]);
        }
    }

    #[test]
    fn all_is_in_ord_order() {
        assert!(PurposeOfUse::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn emergency() {
        assert!(PurposeOfUse::BreakTheGlass.is_emergency());
        assert!(!PurposeOfUse::Research.is_emergency());
    }
}
