//! HL7 FHIR R5: grants as `Consent` resources, access receipts as `AuditEvent`s, and a FHIR
//! `Consent` imported as a grant where the ledger can enforce it (feature `fhir`).
//!
//! Hospitals exchange consent and audit data as FHIR; the ledger speaks its own types. This
//! module translates between them, without I/O: JSON in, JSON out, checked with the
//! [`fhir-model`](https://crates.io/crates/fhir-model) R5 types.
//!
//! * [`consent_of`] writes a [`Grant`] as a Consent; [`consents_for_patient`] every grant of a
//!   patient, revoked ones included (status `inactive`).
//! * [`audit_event_of`] writes an access receipt ([`AccessEvent::Accessed`] in the audit trail)
//!   as an AuditEvent; [`audit_events_for_patient`] every receipt of a patient.
//!
//!   Both take the [`AccessState`](crate::access::AccessState) (a chain's is
//!   [`Chain::access`](crate::chain::Chain::access)): a `GET /fhir/Consent?patient=…` handler
//!   parses the account and returns the list.
//! * [`import_consent`] reads a Consent (JSON, at most [`MAX_CONSENT_JSON_LEN`] bytes) as
//!   [`ImportedGrant`]: the patient and the [`GrantTerms`] of an [`AccessOp::Grant`] for the
//!   patient to sign. What the ledger cannot enforce is refused with a [`ConsentImportError`]
//!   naming it.
//!
//! ```
//! use medledger::access::{Action, ActionSet, GrantTerms, Period, PurposeSet, RelationshipId, Scope, Viewer};
//! use medledger::fhir::{consent_json, import_consent};
//! use medledger::hash::AccountId;
//! use medledger::purpose::PurposeOfUse;
//!
//! let (patient, hospital, doctor) =
//!     (AccountId::from_bytes([1; 32]), AccountId::from_bytes([2; 32]), AccountId::from_bytes([3; 32]));
//! let terms = GrantTerms::new(
//!     RelationshipId::of(patient, hospital),
//!     Viewer::Account(doctor),
//!     Scope::All,
//!     ActionSet::of(&[Action::Read]),
//!     PurposeSet::of(&[PurposeOfUse::Treatment]),
//!     Period::new(1_700_000_000, 1_702_592_000)?,
//! );
//! let json = consent_json(patient, hospital, &terms);
//! let imported = import_consent(json.to_string().as_bytes())?;
//! assert_eq!((imported.patient, imported.terms), (patient, terms));
//! // A consent about records the ledger has no identifier for is refused, saying so.
//! let foreign = br#"{"resourceType": "Consent", "status": "active", "decision": "deny",
//!     "subject": {"reference": "Patient/example"}, "provision": [{}]}"#;
//! assert!(import_consent(foreign).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Identifiers
//!
//! Ledger objects are named by FHIR `Identifier`s (in a `Reference.identifier`) whose `value`
//! is the object's lower-case hex id, in systems this crate defines:
//!
//! | system | names | as |
//! | --- | --- | --- |
//! | [`ACCOUNT_SYSTEM`] `urn:medledger:account` | an account ([`AccountId`]): patient, provider, viewer | `subject`, `grantor`, `grantee`, `controller`, `provision.actor`, `AuditEvent.agent.who`, `AuditEvent.patient` |
//! | [`GROUP_SYSTEM`] `urn:medledger:group` | a patient's group ([`GroupId`](crate::access::GroupId)) | `grantee`, `provision.actor` (type `Group`) |
//! | [`POINTER_SYSTEM`] `urn:medledger:pointer` | a record pointer ([`PointerId`](crate::access::PointerId)), every version of the record | `provision.data.reference` (meaning `instance`), `AuditEvent.entity.what` |
//! | [`GRANT_SYSTEM`] `urn:medledger:grant` | a grant ([`GrantId`](crate::access::GrantId)) | `Consent.identifier`, `AuditEvent.basedOn` |
//! | [`TX_SYSTEM`] `urn:medledger:tx` | a transaction ([`TxId`](crate::hash::TxId)) | `AuditEvent.entity.what` (the receipt) |
//!
//! A `Resource.id` is the hex id of the grant (Consent) or of the receipt's transaction
//! (AuditEvent). On import, an actor is identified by an `urn:medledger:account` (or
//! `urn:medledger:group`) identifier, or, with [`import_consent_with`], by a literal reference
//! (`Patient/123`) that the caller's directory maps to an account: a FHIR server's ids mean
//! nothing to the ledger otherwise.
//!
//! # Consent
//!
//! A grant is a permit for one viewer on one relationship's records; everything else is denied.
//! R5 states that as a Consent whose base `decision` is `deny`, with one top-level `provision`
//! (an exception: permit) holding the grant's own criteria; each nested provision is an
//! exception to the one above it.
//!
//! | ledger | FHIR R5 Consent |
//! | --- | --- |
//! | the grant's id | `id`, `identifier` (`urn:medledger:grant`) |
//! | revoked or not | `status`: `inactive` once revoked, else `active` |
//! | the patient | `subject` (type `Patient`) and `grantor` |
//! | the provider keeping the records (the relationship's other side) | `controller`, and `provision.actor` with role `CST` (custodian) |
//! | [`Viewer`] | `grantee`, and `provision.actor` with role `PRCP` (primary information recipient) |
//! | the delegate who made it, if not the patient | `manager` |
//! | when it was made | `date` (the block's date) |
//! | [`GrantTerms::period`] | `period` (see *Time* below) |
//! | the default: deny | `decision`: `deny` |
//! | the grant's criteria | `provision[0]`: a permit |
//! | [`Scope`]: pointers | `provision.data`: meaning `instance`, reference by `urn:medledger:pointer` |
//! | [`Scope`]: categories | `provision.code`, system [`CATEGORY_SYSTEM`] (table below) |
//! | [`Scope::All`] | neither `data` nor `code` |
//! | [`Action`] `Read`, `Disclose` | `provision.action`: `access`, `disclose` (system [`CONSENT_ACTION_SYSTEM`]) |
//! | purposes | `provision.purpose`: HL7 PurposeOfUse codes (table below) |
//! | [`Provision`] (nested) | `provision.provision`, nested as the ledger nests them |
//! | [`Provision::period`], [`Provision::data_period`] | `period`, `dataPeriod` |
//!
//! R5 gives a nested provision no type of its own: it reverses the one above it, so the
//! provisions at depth 1 (directly under the grant) deny, those at depth 2 permit, and so on.
//! A ledger provision whose kind is not the one its depth implies (a permit directly under the
//! grant, say) carries a `modifierExtension` [`PROVISION_KIND_URL`] with `valueCode` `permit`
//! or `deny`: a modifier extension must not be ignored, so a reader that does not know it
//! refuses the Consent rather than misread it. The import reads it back.
//!
//! Exported provisions are written depth first, children in the ledger's order; importing
//! numbers them the same way, so a grant whose provisions are listed depth first (every
//! provision after its parent's earlier children's subtrees) imports back to equal terms.
//!
//! ## Purposes
//!
//! Every [`PurposeOfUse`] is one HL7 v3 `ActReason` code
//! (system `http://terminology.hl7.org/CodeSystem/v3-ActReason`), both ways:
//!
//! | [`PurposeOfUse`] | code | | [`PurposeOfUse`] | code |
//! | --- | --- | --- | --- | --- |
//! | `Treatment` | `TREAT` | | `PublicHealth` | `PUBHLTH` |
//! | `EmergencyTreatment` | `ETREAT` | | `QualityImprovement` | `HQUALIMP` |
//! | `BreakTheGlass` | `BTG` | | `Coverage` | `COVERAGE` |
//! | `Payment` | `HPAYMT` | | `PatientRequest` | `PATRQT` |
//! | `Operations` | `HOPERAT` | | `FamilyRequest` | `FAMRQT` |
//! | `Research` | `HRESCH` | | `PowerOfAttorney` | `PWATRNY` |
//! | `ClinicalTrialResearch` | `CLINTRCH` | | `Legal` | `HLEGAL` |
//! | `Marketing` | `HMARKT` | | `Training` | `TRAIN` |
//!
//! Any other code, or another system, is refused ([`ConsentImportError::UnknownPurpose`]):
//! a broader or narrower purpose is never guessed.
//!
//! ## Categories
//!
//! [`Category`] has no standard FHIR code system; its codes, in [`CATEGORY_SYSTEM`]
//! (`urn:medledger:category`), are `general`, `laboratory`, `imaging`, `medication`,
//! `diagnosis`, `procedure`, `immunization`, `clinical-note`, `mental-health`,
//! `sexual-health`, `genomic` and `substance-use` ([`category_code`]).
//!
//! ## Time
//!
//! Ledger periods are half-open `[start, end)` in Unix seconds; a FHIR `Period.end` includes
//! every instant matching it. A period is written as UTC instants, `start` and `end - 1`
//! second. On import, `start` is its first second (rounded up), and `end` is exclusive after
//! its precision: `2019` ends at 2020-01-01, `2019-10-10` at 2019-10-11T00:00:00Z,
//! `…T17:32:33+10:00` one second later (an instant with a fraction of a second ends at its
//! whole second). Dates without a zone are UTC. A Consent's `period` and its top-level
//! provision's `period` both apply: the grant takes their overlap. Times after
//! 9999-12-31T23:59:59Z (FHIR years have four digits) are written as that instant.
//!
//! ## What import refuses
//!
//! Import accepts exactly what the table above produces, with ledger identifiers or directory
//! lookups for every actor and record, and refuses, with the reason, anything else that could
//! change what is permitted: a `status` other than `active`; a base `decision` of `permit`
//! (the ledger denies by default: a consent permitting all it does not name has no grant to
//! make); no provision (policy only) or several top-level provisions (one grant per Consent);
//! an actor or a record it cannot identify; actor roles other than `PRCP` and `CST`; actions
//! other than `access` and `disclose` (`correct`, `collect`, `use` …); unknown purposes and
//! categories; `securityLabel`, `documentType`, `resourceType` and `expression` criteria; a
//! `dataPeriod` on the top-level provision; an open-ended period; modifier extensions it does
//! not know; limits of [`GrantTerms`] exceeded. Elements that only describe the consent
//! (`category`, `regulatoryBasis`, `policyBasis`, `sourceAttachment`, `verification`, `text`,
//! `meta`) are not enforced and do not stop the import; an R4 or R4B Consent (with `patient`,
//! `scope` or a single `provision` object) is refused as such ([`ConsentImportError::NotR5`]).
//!
//! # AuditEvent
//!
//! | ledger ([`AccessEvent::Accessed`] in an [`AuditEntry`]) | FHIR R5 AuditEvent |
//! | --- | --- |
//! | the receipt's transaction | `id`, and an `entity` (`urn:medledger:tx`, role `4` domain resource) |
//! | a use of a patient record | `category`: DICOM `110110` (Patient Record) |
//! | the action | `code`: `access` or `disclose` ([`CONSENT_ACTION_SYSTEM`]); `action`: `R` |
//! | the block's time | `recorded`, `occurredDateTime` |
//! | the purpose | `authorization` (v3-ActReason) |
//! | the viewer | `agent` (`requestor: true`, type `IRCP` information recipient) and `source.observer` (it signed the receipt) |
//! | the record | `entity` (`urn:medledger:pointer`, role `4`) |
//! | the patient | `patient`, and an `entity` (role `1` patient) |
//! | the [`Basis`] that permitted it | `outcome` `0` (success) with the basis as `detail` (system [`BASIS_SYSTEM`]: `patient`, `custodian`, `grant`, `break-glass`); a grant also as `basedOn` (its Consent) |
//!
//! The chain records a receipt only for a permitted access (it re-checks the basis), so every
//! receipt's outcome is a success; a denial leaves no receipt to export.
//!
//! [`Grant`]: crate::access::Grant
//! [`AccessEvent::Accessed`]: crate::access::AccessEvent::Accessed
//! [`AccessOp::Grant`]: crate::access::AccessOp::Grant
//! [`AuditEntry`]: crate::access::AuditEntry
//! [`Basis`]: crate::access::Basis
//! [`GrantTerms`]: crate::access::GrantTerms
//! [`GrantTerms::period`]: crate::access::GrantTerms::period
//! [`Viewer`]: crate::access::Viewer
//! [`Scope`]: crate::access::Scope
//! [`Scope::All`]: crate::access::Scope::All
//! [`Action`]: crate::access::Action
//! [`Category`]: crate::access::Category
//! [`Provision`]: crate::access::Provision
//! [`Provision::period`]: crate::access::Provision::period
//! [`Provision::data_period`]: crate::access::Provision::data_period
//! [`PurposeOfUse`]: crate::purpose::PurposeOfUse
//! [`AccountId`]: crate::hash::AccountId

mod audit;
mod consent;
mod error;
mod time;

pub use audit::{audit_event_of, audit_events_for_patient};
pub use consent::{
    category_code, consent_json, consent_of, consents_for_patient, import_consent,
    import_consent_with, ImportedGrant,
};
pub use error::ConsentImportError;

/// The most bytes of JSON [`import_consent`] reads; a longer input is refused before parsing.
pub const MAX_CONSENT_JSON_LEN: usize = 128 * 1024;

/// The identifier system of accounts (the value is the [`AccountId`](crate::hash::AccountId)
/// in hex).
pub const ACCOUNT_SYSTEM: &str = "urn:medledger:account";
/// The identifier system of a patient's groups of viewers.
pub const GROUP_SYSTEM: &str = "urn:medledger:group";
/// The identifier system of record pointers.
pub const POINTER_SYSTEM: &str = "urn:medledger:pointer";
/// The identifier system of grants.
pub const GRANT_SYSTEM: &str = "urn:medledger:grant";
/// The identifier system of transactions.
pub const TX_SYSTEM: &str = "urn:medledger:tx";
/// The code system of record categories ([`category_code`]).
pub const CATEGORY_SYSTEM: &str = "urn:medledger:category";
/// The code system of the bases an access is permitted on (`patient`, `custodian`, `grant`,
/// `break-glass`).
pub const BASIS_SYSTEM: &str = "urn:medledger:basis";
/// The URL of the modifier extension stating a provision's kind (`permit` or `deny`) where
/// it is not the one R5's nesting implies.
pub const PROVISION_KIND_URL: &str = "urn:medledger:fhir:provision-kind";
/// HL7's code system of consent actions (`access`, `disclose`, …).
pub const CONSENT_ACTION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
/// HL7's code system of participation types (the roles `PRCP` and `CST` of consent actors).
pub const PARTICIPATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";

#[cfg(test)]
mod tests;
