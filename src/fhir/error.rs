//! Why a FHIR Consent is not imported.

/// Why a FHIR Consent was not imported as a grant: it is malformed, or it says something the
/// ledger cannot enforce. Each variant names what was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsentImportError {
    /// The input is longer than [`MAX_CONSENT_JSON_LEN`](super::MAX_CONSENT_JSON_LEN); it was
    /// not parsed.
    #[error("the consent is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The most accepted.
        max: usize,
    },
    /// Not JSON, or not a FHIR R5 Consent as the model reads it.
    #[error("not a FHIR R5 Consent: {0}")]
    Malformed(String),
    /// A resource of another type.
    #[error("a {0} resource, not a Consent")]
    NotAConsent(String),
    /// An R4 or R4B Consent: only R5 is imported.
    #[error("an R4/R4B Consent (it has `{element}`): only FHIR R5 Consents are imported")]
    NotR5 {
        /// The R4 element found.
        element: &'static str,
    },
    /// The consent is not in force.
    #[error("the consent's status is {0}, not active")]
    NotActive(String),
    /// A modifier extension this crate does not know changes the meaning of an element.
    #[error("unknown modifier extension {url}")]
    UnknownModifierExtension {
        /// Its URL.
        url: String,
    },
    /// The consent has no base decision.
    #[error("the consent states no base decision")]
    NoDecision,
    /// The base decision is permit: the ledger denies what no grant permits, and cannot
    /// permit everything but some exceptions.
    #[error("the consent permits by default; the ledger only grants what a provision names")]
    PermitByDefault,
    /// No provision: a consent that only points to a policy.
    #[error("the consent has no provision (policy only): nothing the ledger can enforce")]
    PolicyOnly,
    /// More than one top-level provision: a grant is one permit.
    #[error("the consent has {0} top-level provisions; one grant is one provision")]
    SeveralProvisions(usize),
    /// No subject (the patient).
    #[error("the consent names no subject")]
    NoSubject,
    /// The subject is not a patient.
    #[error("the subject is a {0}, not a Patient")]
    SubjectNotPatient(String),
    /// An actor, subject or grantor the ledger has no identifier for.
    #[error("{element} {reference} has no ledger identifier")]
    UnidentifiedActor {
        /// The element (`subject`, `grantee`, `provision.actor` …).
        element: &'static str,
        /// The reference as written (at most 80 characters of it).
        reference: String,
    },
    /// A grantor other than the patient: only the patient grants (a delegate acts under a
    /// delegation, on chain).
    #[error("a grantor other than the subject")]
    GrantorNotSubject,
    /// No recipient (`grantee` or an actor with role `PRCP`).
    #[error("the consent names no recipient")]
    NoRecipient,
    /// More than one recipient: a grant has one viewer.
    #[error("the consent names several recipients; a grant has one viewer")]
    SeveralRecipients,
    /// No custodian (`controller` or an actor with role `CST`): the records of which
    /// relationship are granted?
    #[error("the consent names no custodian of the records")]
    NoCustodian,
    /// More than one custodian: a grant covers one relationship.
    #[error("the consent names several custodians; a grant covers one relationship")]
    SeveralCustodians,
    /// An actor with a role other than recipient (`PRCP`) or custodian (`CST`).
    #[error("an actor with role {0}; only PRCP (recipient) and CST (custodian) are enforced")]
    UnsupportedActorRole(String),
    /// An action the ledger does not control.
    #[error("action {0}; only access and disclose are enforced")]
    UnsupportedAction(String),
    /// A purpose of use that is not one of the ledger's.
    #[error("purpose {code} of system {system} is not a purpose of use the ledger knows")]
    UnknownPurpose {
        /// The code system.
        system: String,
        /// The code.
        code: String,
    },
    /// The top-level provision names no purpose: a grant names the purposes it is for.
    #[error("the provision names no purpose of use")]
    NoPurpose,
    /// A data class that is not one of the ledger's categories.
    #[error("data code {code} of system {system} is not a record category the ledger knows")]
    UnknownCategory {
        /// The code system.
        system: String,
        /// The code.
        code: String,
    },
    /// A record the ledger has no pointer for.
    #[error("data {0} is not a ledger record pointer")]
    UnidentifiedData(String),
    /// A data reference meaning other than `instance`.
    #[error("data meaning {0}; only instance is enforced")]
    UnsupportedDataMeaning(String),
    /// An element the ledger cannot enforce.
    #[error("{element} at provision depth {depth} cannot be enforced")]
    UnsupportedElement {
        /// The element.
        element: &'static str,
        /// The provision's depth (0 for the top-level provision).
        depth: usize,
    },
    /// The grant's period has no start or no end.
    #[error("the period has no {0}; a grant's period is bounded")]
    OpenPeriod(&'static str),
    /// A time before 1970 or otherwise out of the ledger's range.
    #[error("time {0} is out of range")]
    TimeOutOfRange(String),
    /// A period that ends before it starts (or the overlap of two periods is empty).
    #[error("the period is empty")]
    EmptyPeriod,
    /// More of something than a grant holds.
    #[error("more {what} than the {max} a grant holds")]
    TooMany {
        /// What.
        what: &'static str,
        /// The most a grant holds.
        max: usize,
    },
}
