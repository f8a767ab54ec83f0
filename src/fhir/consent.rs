//! Grants as FHIR R5 Consents, and Consents imported as grants.

use fhir_model::r5::codes::{ConsentDataMeaning, ConsentProvisionType, ConsentState};
use fhir_model::r5::resources::{Consent, ConsentProvision};
use fhir_model::r5::types::ExtensionValue;
use fhir_model::r5::types::{CodeableConcept, Coding, Extension, Period as FhirPeriod, Reference};
use serde_json::{json, Map, Value};

use super::time::{date, end_second, instant, start_second};
use super::{
    ConsentImportError, ACCOUNT_SYSTEM, CATEGORY_SYSTEM, CONSENT_ACTION_SYSTEM, GRANT_SYSTEM,
    GROUP_SYSTEM, MAX_CONSENT_JSON_LEN, PARTICIPATION_SYSTEM, POINTER_SYSTEM, PROVISION_KIND_URL,
};
use crate::access::{
    AccessOp, AccessState, Action, ActionSet, Category, CategorySet, Grant, GrantTerms, GroupId,
    Period, PointerId, Provision, ProvisionKind, PurposeSet, RelationshipId, Revocation, Scope,
    Side, Viewer, MAX_PROVISIONS, MAX_PROVISION_DEPTH, MAX_PROVISION_POINTERS, MAX_SCOPE_POINTERS,
};
use crate::codec::BoundedVec;
use crate::hash::AccountId;
use crate::purpose::PurposeOfUse;

/// The code of `category` in [`CATEGORY_SYSTEM`] (`laboratory`, `mental-health`, …).
pub const fn category_code(category: Category) -> &'static str {
    match category {
        Category::General => "general",
        Category::Laboratory => "laboratory",
        Category::Imaging => "imaging",
        Category::Medication => "medication",
        Category::Diagnosis => "diagnosis",
        Category::Procedure => "procedure",
        Category::Immunization => "immunization",
        Category::ClinicalNote => "clinical-note",
        Category::MentalHealth => "mental-health",
        Category::SexualHealth => "sexual-health",
        Category::Genomic => "genomic",
        Category::SubstanceUse => "substance-use",
    }
}

fn action_code(action: Action) -> &'static str {
    match action {
        Action::Read => "access",
        Action::Disclose => "disclose",
    }
}

fn kind_code(kind: ProvisionKind) -> &'static str {
    match kind {
        ProvisionKind::Permit => "permit",
        ProvisionKind::Deny => "deny",
    }
}

/// The kind R5 gives a provision at `depth` below the grant's own (depth 0, a permit under
/// the base deny): each level reverses the one above.
fn natural_kind(depth: usize) -> ProvisionKind {
    if depth % 2 == 1 {
        ProvisionKind::Deny
    } else {
        ProvisionKind::Permit
    }
}

pub(super) fn coding(system: &str, code: &str) -> Value {
    json!({ "system": system, "code": code })
}

pub(super) fn concept(system: &str, code: &str) -> Value {
    json!({ "coding": [coding(system, code)] })
}

pub(super) fn identified(system: &str, value: impl ToString, ty: Option<&str>) -> Value {
    let mut r = Map::new();
    if let Some(ty) = ty {
        r.insert("type".into(), ty.into());
    }
    r.insert(
        "identifier".into(),
        json!({ "system": system, "value": value.to_string() }),
    );
    Value::Object(r)
}

pub(super) fn account_ref(account: AccountId, ty: Option<&str>) -> Value {
    identified(ACCOUNT_SYSTEM, account, ty)
}

fn viewer_ref(viewer: &Viewer) -> Value {
    match viewer {
        Viewer::Account(a) => account_ref(*a, None),
        Viewer::Group(g) => identified(GROUP_SYSTEM, g, Some("Group")),
    }
}

fn fhir_period(p: &Period) -> Value {
    json!({ "start": instant(p.start), "end": instant(p.end.saturating_sub(1)) })
}

/// Adds the criteria both the grant's own provision and nested ones have.
fn criteria(
    out: &mut Map<String, Value>,
    actions: ActionSet,
    purposes: PurposeSet,
    pointers: &[PointerId],
    categories: CategorySet,
) {
    if !actions.is_empty() {
        let a: Vec<Value> = actions
            .iter()
            .map(|a| concept(CONSENT_ACTION_SYSTEM, action_code(a)))
            .collect();
        out.insert("action".into(), a.into());
    }
    if !purposes.is_empty() {
        let p: Vec<Value> = purposes
            .iter()
            .map(|p| coding(PurposeOfUse::CODE_SYSTEM, p.code()))
            .collect();
        out.insert("purpose".into(), p.into());
    }
    if !categories.is_empty() {
        let c: Vec<Value> = categories
            .iter()
            .map(|c| concept(CATEGORY_SYSTEM, category_code(c)))
            .collect();
        out.insert("code".into(), c.into());
    }
    if !pointers.is_empty() {
        let d: Vec<Value> = pointers
            .iter()
            .map(|p| json!({ "meaning": "instance", "reference": identified(POINTER_SYSTEM, p, None) }))
            .collect();
        out.insert("data".into(), d.into());
    }
}

/// The provisions nested in `parent` (`None`: in the grant), at `depth`.
fn nested(provisions: &[Provision], parent: Option<u16>, depth: usize) -> Vec<Value> {
    if depth > MAX_PROVISION_DEPTH {
        return Vec::new();
    }
    provisions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.parent == parent)
        .map(|(i, p)| {
            let mut out = Map::new();
            if p.kind != natural_kind(depth) {
                out.insert(
                    "modifierExtension".into(),
                    json!([{ "url": PROVISION_KIND_URL, "valueCode": kind_code(p.kind) }]),
                );
            }
            if let Some(period) = &p.period {
                out.insert("period".into(), fhir_period(period));
            }
            criteria(&mut out, p.actions, p.purposes, &p.pointers, p.categories);
            if let Some(period) = &p.data_period {
                out.insert("dataPeriod".into(), fhir_period(period));
            }
            let index = u16::try_from(i).ok();
            let children = nested(provisions, index, depth + 1);
            if index.is_some() && !children.is_empty() {
                out.insert("provision".into(), children.into());
            }
            Value::Object(out)
        })
        .collect()
}

/// `terms`, granted by `patient` on its relationship with `provider`, as an active R5
/// Consent (without the `id`, `date` and `identifier` of a recorded grant: the template a
/// client shows before the patient signs).
pub fn consent_json(patient: AccountId, provider: AccountId, terms: &GrantTerms) -> Value {
    let custodian = account_ref(provider, Some("Organization"));
    let mut root = Map::new();
    root.insert(
        "actor".into(),
        json!([
            { "role": concept(PARTICIPATION_SYSTEM, "PRCP"), "reference": viewer_ref(&terms.viewer) },
            { "role": concept(PARTICIPATION_SYSTEM, "CST"), "reference": custodian },
        ]),
    );
    let (pointers, categories) = match &terms.scope {
        Scope::All => (&[][..], CategorySet::new()),
        Scope::Only {
            pointers,
            categories,
        } => (&pointers[..], *categories),
    };
    criteria(
        &mut root,
        terms.actions,
        terms.purposes,
        pointers,
        categories,
    );
    let children = nested(&terms.provisions, None, 1);
    if !children.is_empty() {
        root.insert("provision".into(), children.into());
    }
    json!({
        "resourceType": "Consent",
        "status": "active",
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent" }] }],
        "subject": account_ref(patient, Some("Patient")),
        "period": fhir_period(&terms.period),
        "grantor": [account_ref(patient, Some("Patient"))],
        "grantee": [viewer_ref(&terms.viewer)],
        "controller": [account_ref(provider, Some("Organization"))],
        "decision": "deny",
        "provision": [Value::Object(root)],
    })
}

/// `grant`, on the relationship with `provider`, as an R5 Consent: `inactive` if `revocation`
/// is given, else `active`.
pub fn consent_of(grant: &Grant, provider: AccountId, revocation: Option<&Revocation>) -> Value {
    let mut consent = consent_json(grant.patient, provider, &grant.terms);
    if let Value::Object(c) = &mut consent {
        c.insert("id".into(), grant.id.to_string().into());
        c.insert(
            "identifier".into(),
            json!([{ "system": GRANT_SYSTEM, "value": grant.id.to_string() }]),
        );
        c.insert("date".into(), date(grant.created.time).into());
        if revocation.is_some() {
            c.insert("status".into(), "inactive".into());
        }
        if grant.granted_by != grant.patient {
            c.insert(
                "manager".into(),
                json!([account_ref(grant.granted_by, None)]),
            );
        }
    }
    consent
}

/// Every grant `patient` made (or its delegates made), on each of its relationships in the
/// order they were opened and in creation order within one, as R5 Consents; revoked grants
/// are `inactive`.
pub fn consents_for_patient(state: &AccessState, patient: &AccountId) -> Vec<Value> {
    state
        .summary(patient)
        .into_iter()
        .filter(|s| s.side == Side::Patient)
        .flat_map(|s| {
            state
                .grants_of(&s.relationship)
                .into_iter()
                .map(move |g| consent_of(g, s.counterparty, state.revocation(&g.id)))
        })
        .collect()
}

/// A FHIR Consent imported as a grant: [`op`](Self::op) is the operation for the patient to
/// sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedGrant {
    /// The patient (the Consent's subject), who must sign the grant.
    pub patient: AccountId,
    /// What it grants.
    pub terms: GrantTerms,
}

impl ImportedGrant {
    /// The grant as an operation made by the patient itself (not under a delegation).
    pub fn op(&self) -> AccessOp {
        AccessOp::Grant {
            terms: self.terms.clone(),
            under: None,
        }
    }
}

/// Imports an R5 Consent (JSON) as a grant, identifying actors by ledger identifiers only.
///
/// # Errors
///
/// [`ConsentImportError`]: the input is too large or malformed, or states something the
/// ledger cannot enforce (the [module documentation](super) lists what).
pub fn import_consent(json: &[u8]) -> Result<ImportedGrant, ConsentImportError> {
    import_consent_with(json, |_| None)
}

/// Imports an R5 Consent (JSON) as a grant; an actor referred to by a literal reference
/// (`Patient/123`) rather than a ledger identifier is looked up with `directory`.
///
/// # Errors
///
/// As [`import_consent`]; an actor neither identified nor found in the directory is
/// [`ConsentImportError::UnidentifiedActor`].
pub fn import_consent_with(
    json: &[u8],
    directory: impl Fn(&str) -> Option<AccountId>,
) -> Result<ImportedGrant, ConsentImportError> {
    if json.len() > MAX_CONSENT_JSON_LEN {
        return Err(ConsentImportError::TooLarge {
            len: json.len(),
            max: MAX_CONSENT_JSON_LEN,
        });
    }
    let value: Value = serde_json::from_slice(json).map_err(malformed)?;
    let kind = value.get("resourceType").and_then(Value::as_str);
    if kind != Some("Consent") {
        return Err(ConsentImportError::NotAConsent(clip(
            kind.unwrap_or("untyped"),
        )));
    }
    for element in [
        "patient",
        "scope",
        "policyRule",
        "dateTime",
        "performer",
        "organization",
        "policy",
    ] {
        if value.get(element).is_some() {
            return Err(ConsentImportError::NotR5 { element });
        }
    }
    if value.get("provision").is_some_and(Value::is_object) {
        return Err(ConsentImportError::NotR5 {
            element: "provision",
        });
    }
    let consent: Consent = serde_json::from_value(value).map_err(malformed)?;
    Importer {
        directory: &directory,
    }
    .consent(&consent)
}

fn malformed(e: serde_json::Error) -> ConsentImportError {
    ConsentImportError::Malformed(clip(&e.to_string()))
}

/// At most 80 characters of `s`, for error messages.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Who a reference names, as far as the ledger knows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Party {
    Account(AccountId),
    Group(GroupId),
}

struct Importer<'a> {
    directory: &'a dyn Fn(&str) -> Option<AccountId>,
}

fn present<T>(items: &[Option<T>]) -> impl Iterator<Item = &T> {
    items.iter().flatten()
}

fn describe(r: &Reference) -> String {
    if let Some(lit) = &r.reference {
        return clip(lit);
    }
    if let Some(id) = &r.identifier {
        return clip(&format!(
            "{}|{}",
            id.system.as_deref().unwrap_or(""),
            id.value.as_deref().unwrap_or("")
        ));
    }
    clip(r.display.as_deref().unwrap_or("(empty reference)"))
}

fn check_modifiers(extensions: &[Extension]) -> Result<(), ConsentImportError> {
    match extensions.first() {
        Some(e) => Err(ConsentImportError::UnknownModifierExtension { url: clip(&e.url) }),
        None => Ok(()),
    }
}

impl Importer<'_> {
    fn party(&self, r: &Reference) -> Option<Party> {
        let identified = r.identifier.as_ref().and_then(|id| {
            let value = id.value.as_deref()?;
            match id.system.as_deref()? {
                ACCOUNT_SYSTEM => value.parse().ok().map(Party::Account),
                GROUP_SYSTEM => value.parse().ok().map(Party::Group),
                _ => None,
            }
        });
        identified.or_else(|| {
            r.reference
                .as_deref()
                .and_then(self.directory)
                .map(Party::Account)
        })
    }

    fn account(
        &self,
        r: &Reference,
        element: &'static str,
    ) -> Result<AccountId, ConsentImportError> {
        match self.party(r) {
            Some(Party::Account(a)) => Ok(a),
            _ => Err(ConsentImportError::UnidentifiedActor {
                element,
                reference: describe(r),
            }),
        }
    }

    fn consent(&self, c: &Consent) -> Result<ImportedGrant, ConsentImportError> {
        check_modifiers(&c.modifier_extension)?;
        if c.status != ConsentState::Active {
            return Err(ConsentImportError::NotActive(c.status.as_ref().to_owned()));
        }
        match c.decision {
            None => return Err(ConsentImportError::NoDecision),
            Some(ConsentProvisionType::Permit) => return Err(ConsentImportError::PermitByDefault),
            Some(ConsentProvisionType::Deny) => {}
        }
        let provisions: Vec<&ConsentProvision> = present(&c.provision).collect();
        let root = match provisions[..] {
            [] => return Err(ConsentImportError::PolicyOnly),
            [root] => root,
            _ => return Err(ConsentImportError::SeveralProvisions(provisions.len())),
        };
        let subject = c.subject.as_ref().ok_or(ConsentImportError::NoSubject)?;
        // `Patient/123`, or an absolute URL ending in `…/Patient/123`.
        let literal_kind = subject
            .reference
            .as_deref()
            .filter(|r| r.contains('/'))
            .and_then(|r| r.rsplit('/').nth(1));
        if let Some(kind) = subject.r#type.as_deref().or(literal_kind) {
            if kind != "Patient" {
                return Err(ConsentImportError::SubjectNotPatient(clip(kind)));
            }
        }
        let patient = self.account(subject, "subject")?;
        for g in present(&c.grantor) {
            if self.account(g, "grantor")? != patient {
                return Err(ConsentImportError::GrantorNotSubject);
            }
        }
        check_modifiers(&root.modifier_extension)?;
        let mut recipients = Vec::new();
        let mut custodians = Vec::new();
        for r in present(&c.grantee) {
            let party = self
                .party(r)
                .ok_or_else(|| ConsentImportError::UnidentifiedActor {
                    element: "grantee",
                    reference: describe(r),
                })?;
            push_new(&mut recipients, party);
        }
        for r in present(&c.controller) {
            push_new(&mut custodians, self.account(r, "controller")?);
        }
        for actor in present(&root.actor) {
            check_modifiers(&actor.modifier_extension)?;
            let role = actor_role(actor.role.as_ref())?;
            let r =
                actor
                    .reference
                    .as_ref()
                    .ok_or_else(|| ConsentImportError::UnidentifiedActor {
                        element: "provision.actor",
                        reference: "(no reference)".into(),
                    })?;
            match role {
                ActorRole::Recipient => {
                    let party =
                        self.party(r)
                            .ok_or_else(|| ConsentImportError::UnidentifiedActor {
                                element: "provision.actor",
                                reference: describe(r),
                            })?;
                    push_new(&mut recipients, party);
                }
                ActorRole::Custodian => {
                    push_new(&mut custodians, self.account(r, "provision.actor")?);
                }
            }
        }
        let viewer = match recipients[..] {
            [] => return Err(ConsentImportError::NoRecipient),
            [Party::Account(a)] => Viewer::Account(a),
            [Party::Group(g)] => Viewer::Group(g),
            _ => return Err(ConsentImportError::SeveralRecipients),
        };
        let provider = match custodians[..] {
            [] => return Err(ConsentImportError::NoCustodian),
            [p] => p,
            _ => return Err(ConsentImportError::SeveralCustodians),
        };
        unsupported(root, 0)?;
        if root.data_period.is_some() {
            return Err(ConsentImportError::UnsupportedElement {
                element: "dataPeriod",
                depth: 0,
            });
        }
        let actions = match actions(&root.action)? {
            a if a.is_empty() => ActionSet::all(),
            a => a,
        };
        let purposes = purposes(&root.purpose)?;
        if purposes.is_empty() {
            return Err(ConsentImportError::NoPurpose);
        }
        let categories = categories(&root.code)?;
        let pointers = pointers(&root.data)?;
        let scope = if pointers.is_empty() && categories.is_empty() {
            Scope::All
        } else {
            Scope::Only {
                pointers: BoundedVec::try_from(pointers).map_err(|_| {
                    ConsentImportError::TooMany {
                        what: "records in the scope",
                        max: MAX_SCOPE_POINTERS,
                    }
                })?,
                categories,
            }
        };
        let period = grant_period(c.period.as_ref(), root.period.as_ref())?;
        let mut flat = Vec::new();
        let parties = [Some(viewer_party(&viewer)), Some(Party::Account(provider))];
        for child in present(&root.provision) {
            self.flatten(child, None, 1, &parties, &mut flat)?;
        }
        let provisions = BoundedVec::try_from(flat).map_err(|_| ConsentImportError::TooMany {
            what: "provisions",
            max: MAX_PROVISIONS,
        })?;
        Ok(ImportedGrant {
            patient,
            terms: GrantTerms {
                relationship: RelationshipId::of(patient, provider),
                viewer,
                scope,
                actions,
                purposes,
                period,
                provisions,
            },
        })
    }

    /// Appends `p` (nested in `parent`, at `depth`) and its subtree, depth first.
    fn flatten(
        &self,
        p: &ConsentProvision,
        parent: Option<u16>,
        depth: usize,
        parties: &[Option<Party>],
        out: &mut Vec<Provision>,
    ) -> Result<(), ConsentImportError> {
        if depth > MAX_PROVISION_DEPTH {
            return Err(ConsentImportError::TooMany {
                what: "levels of nested provisions",
                max: MAX_PROVISION_DEPTH,
            });
        }
        if out.len() >= MAX_PROVISIONS {
            return Err(ConsentImportError::TooMany {
                what: "provisions",
                max: MAX_PROVISIONS,
            });
        }
        let mut kind = natural_kind(depth);
        for e in &p.modifier_extension {
            match (e.url.as_str(), &e.value) {
                (PROVISION_KIND_URL, Some(ExtensionValue::Code(code))) if code == "permit" => {
                    kind = ProvisionKind::Permit;
                }
                (PROVISION_KIND_URL, Some(ExtensionValue::Code(code))) if code == "deny" => {
                    kind = ProvisionKind::Deny;
                }
                _ => {
                    return Err(ConsentImportError::UnknownModifierExtension { url: clip(&e.url) })
                }
            }
        }
        unsupported(p, depth)?;
        // A nested provision applies to the grant's own viewer: naming it (or the custodian)
        // again changes nothing; naming anyone else would need a criterion the ledger lacks.
        for actor in present(&p.actor) {
            check_modifiers(&actor.modifier_extension)?;
            let named = actor.reference.as_ref().and_then(|r| self.party(r));
            if named.is_none() || !parties.contains(&named) {
                return Err(ConsentImportError::UnsupportedElement {
                    element: "actor naming another party",
                    depth,
                });
            }
        }
        let pointers = pointers(&p.data)?;
        let provision = Provision {
            kind,
            parent,
            pointers: BoundedVec::try_from(pointers).map_err(|_| ConsentImportError::TooMany {
                what: "records in a provision",
                max: MAX_PROVISION_POINTERS,
            })?,
            categories: categories(&p.code)?,
            actions: actions(&p.action)?,
            purposes: purposes(&p.purpose)?,
            period: p.period.as_ref().map(open_period).transpose()?,
            data_period: p.data_period.as_ref().map(open_period).transpose()?,
        };
        let index = u16::try_from(out.len()).map_err(|_| ConsentImportError::TooMany {
            what: "provisions",
            max: MAX_PROVISIONS,
        })?;
        out.push(provision);
        for child in present(&p.provision) {
            self.flatten(child, Some(index), depth + 1, parties, out)?;
        }
        Ok(())
    }
}

fn viewer_party(v: &Viewer) -> Party {
    match v {
        Viewer::Account(a) => Party::Account(*a),
        Viewer::Group(g) => Party::Group(*g),
    }
}

fn push_new<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

enum ActorRole {
    Recipient,
    Custodian,
}

fn actor_role(role: Option<&CodeableConcept>) -> Result<ActorRole, ConsentImportError> {
    let Some(role) = role else {
        return Err(ConsentImportError::UnsupportedActorRole("(none)".into()));
    };
    let mut first = None;
    for c in present(&role.coding) {
        let code = c.code.as_deref().unwrap_or("");
        if c.system.as_deref() == Some(PARTICIPATION_SYSTEM) {
            match code {
                "PRCP" => return Ok(ActorRole::Recipient),
                "CST" => return Ok(ActorRole::Custodian),
                _ => {}
            }
        }
        first.get_or_insert(code);
    }
    Err(ConsentImportError::UnsupportedActorRole(clip(
        first.or(role.text.as_deref()).unwrap_or("(none)"),
    )))
}

/// The elements no ledger criterion can express.
fn unsupported(p: &ConsentProvision, depth: usize) -> Result<(), ConsentImportError> {
    let element = if !p.security_label.is_empty() {
        "securityLabel"
    } else if !p.document_type.is_empty() {
        "documentType"
    } else if !p.resource_type.is_empty() {
        "resourceType"
    } else if p.expression.is_some() {
        "expression"
    } else {
        return Ok(());
    };
    Err(ConsentImportError::UnsupportedElement { element, depth })
}

/// The codes of `system` in a concept: every coding of another system is refused through
/// `refuse(system, code)` unless the concept has one of `system`.
fn codes_of<'c>(
    concept: &'c CodeableConcept,
    system: &str,
    refuse: impl Fn(&str, &str) -> ConsentImportError,
) -> Result<Vec<&'c str>, ConsentImportError> {
    let ours: Vec<&str> = present(&concept.coding)
        .filter(|c| c.system.as_deref() == Some(system))
        .filter_map(|c| c.code.as_deref())
        .collect();
    if ours.is_empty() {
        let other = present(&concept.coding).next();
        return Err(refuse(
            other.and_then(|c| c.system.as_deref()).unwrap_or(""),
            other
                .and_then(|c| c.code.as_deref())
                .or(concept.text.as_deref())
                .unwrap_or(""),
        ));
    }
    Ok(ours)
}

fn actions(concepts: &[Option<CodeableConcept>]) -> Result<ActionSet, ConsentImportError> {
    let mut set = ActionSet::new();
    for concept in present(concepts) {
        for code in codes_of(concept, CONSENT_ACTION_SYSTEM, |_, code| {
            ConsentImportError::UnsupportedAction(clip(code))
        })? {
            set = set.with(match code {
                "access" => Action::Read,
                "disclose" => Action::Disclose,
                other => return Err(ConsentImportError::UnsupportedAction(clip(other))),
            });
        }
    }
    Ok(set)
}

fn purposes(codings: &[Option<Coding>]) -> Result<PurposeSet, ConsentImportError> {
    let mut set = PurposeSet::new();
    for c in present(codings) {
        let system = c.system.as_deref().unwrap_or("");
        let code = c.code.as_deref().unwrap_or("");
        let purpose = (system == PurposeOfUse::CODE_SYSTEM)
            .then(|| code.parse::<PurposeOfUse>().ok())
            .flatten()
            .ok_or_else(|| ConsentImportError::UnknownPurpose {
                system: clip(system),
                code: clip(code),
            })?;
        set = set.with(purpose);
    }
    Ok(set)
}

fn categories(concepts: &[Option<CodeableConcept>]) -> Result<CategorySet, ConsentImportError> {
    let unknown = |system: &str, code: &str| ConsentImportError::UnknownCategory {
        system: clip(system),
        code: clip(code),
    };
    let mut set = CategorySet::new();
    for concept in present(concepts) {
        for code in codes_of(concept, CATEGORY_SYSTEM, unknown)? {
            let category = Category::ALL
                .into_iter()
                .find(|c| category_code(*c) == code)
                .ok_or_else(|| unknown(CATEGORY_SYSTEM, code))?;
            set = set.with(category);
        }
    }
    Ok(set)
}

fn pointers(
    data: &[Option<fhir_model::r5::resources::ConsentProvisionData>],
) -> Result<Vec<PointerId>, ConsentImportError> {
    let mut out = Vec::new();
    for d in present(data) {
        check_modifiers(&d.modifier_extension)?;
        if d.meaning != ConsentDataMeaning::Instance {
            return Err(ConsentImportError::UnsupportedDataMeaning(
                d.meaning.as_ref().to_owned(),
            ));
        }
        let id = d
            .reference
            .identifier
            .as_ref()
            .filter(|i| i.system.as_deref() == Some(POINTER_SYSTEM))
            .and_then(|i| i.value.as_deref())
            .and_then(|v| v.parse::<PointerId>().ok())
            .ok_or_else(|| ConsentImportError::UnidentifiedData(describe(&d.reference)))?;
        if out.len() >= MAX_SCOPE_POINTERS {
            return Err(ConsentImportError::TooMany {
                what: "records in the scope",
                max: MAX_SCOPE_POINTERS,
            });
        }
        push_new(&mut out, id);
    }
    Ok(out)
}

/// The grant's period: the overlap of the Consent's and the top-level provision's; both
/// bounds required.
fn grant_period(
    consent: Option<&FhirPeriod>,
    provision: Option<&FhirPeriod>,
) -> Result<Period, ConsentImportError> {
    let mut start = None::<u64>;
    let mut end = None::<u64>;
    for p in [consent, provision].into_iter().flatten() {
        if let Some(s) = &p.start {
            let s = start_second(s)?;
            start = Some(start.map_or(s, |x| x.max(s)));
        }
        if let Some(e) = &p.end {
            let e = end_second(e)?;
            end = Some(end.map_or(e, |x| x.min(e)));
        }
    }
    let start = start.ok_or(ConsentImportError::OpenPeriod("start"))?;
    let end = end.ok_or(ConsentImportError::OpenPeriod("end"))?;
    Period::new(start, end).map_err(|_| ConsentImportError::EmptyPeriod)
}

/// A nested provision's period: a missing bound is open.
fn open_period(p: &FhirPeriod) -> Result<Period, ConsentImportError> {
    let start = p.start.as_ref().map(start_second).transpose()?.unwrap_or(0);
    let end = p
        .end
        .as_ref()
        .map(end_second)
        .transpose()?
        .unwrap_or(u64::MAX);
    Period::new(start, end).map_err(|_| ConsentImportError::EmptyPeriod)
}
