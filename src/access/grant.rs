//! Grants: a patient's consent for a viewer to use some of a relationship's records, in HL7 FHIR
//! Consent's terms.
//!
//! A [`GrantTerms`] names the relationship, the [`Viewer`] (an account, or a [group] the patient
//! defined), the [`Scope`] (pointers or categories, or everything), the actions, the purposes of
//! use, a validity [`Period`] and nested [`Provision`]s. The [module documentation](super)
//! defines how provisions evaluate: deny overrides permit, and a nested provision is an
//! exception to its parent.
//!
//! A grant's record never changes once made. Revoking it writes a [`Revocation`] (who, when,
//! why) next to it, so the grant and its revocation can each be proven against a state root
//! ([`GrantProof`](super::GrantProof)). Grants are also revoked in cascade, with the cause
//! recorded, when the delegation they were made under is revoked or their relationship ends.
//!
//! How many grants are live (not revoked, not expired at the block's time) is bounded per
//! relationship and per viewer, with the patient's own grants and its delegates' counted apart
//! (the [limits](super#limits-a-patient-can-meet)); dead grants make room again.
//!
//! [group]: super::group

use serde::{Deserialize, Serialize};

use super::AccessRequest;
use super::{
    AccessError, AccessEvent, AccessState, ActionSet, CategorySet, Delegation, DelegationId, Exec,
    GrantId, GroupId, IndexedGrant, LiveGrant, Period, Pointer, PointerId, PurposeSet, Reason,
    Relationship, RelationshipId, RelationshipStatus, Stamp, ViewerIndex,
    MAX_GRANTS_PER_DELEGATION,
};
use crate::codec::BoundedVec;
use crate::hash::AccountId;

/// The most pointers a [`Scope`] lists.
pub const MAX_SCOPE_POINTERS: usize = 64;
/// The most provisions a grant holds.
pub const MAX_PROVISIONS: usize = 16;
/// The deepest nesting of provisions (a child of the grant itself is at depth 1).
pub const MAX_PROVISION_DEPTH: usize = 4;
/// The most pointers a provision lists.
pub const MAX_PROVISION_POINTERS: usize = 16;
/// The most live grants (not revoked, not expired at the block's time) a patient itself holds
/// open to one viewer. Grants made by delegates never count against it.
pub const MAX_LIVE_GRANTS_PER_VIEWER: usize = 64;
/// The most live grants delegates hold open to one viewer of a patient, all delegates
/// together: their own quota, apart from the patient's.
pub const MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER: usize = 16;
/// The most live grants (not revoked, not expired at the block's time) a patient itself holds
/// open on one relationship. Grants made by delegates never count against it, and revoked or
/// expired grants make room again: however many grants were ever made, the patient can grant
/// as long as fewer than this many of its own are live.
pub const MAX_LIVE_GRANTS_PER_RELATIONSHIP: usize = 256;
/// The most live grants delegates hold open on one relationship, all delegates together: their
/// own quota, apart from the patient's.
pub const MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP: usize = 64;

/// Who a grant is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Viewer {
    /// One account.
    Account(AccountId),
    /// Every member of one of the patient's groups, while a member.
    Group(GroupId),
}

/// Which records of a relationship a grant or a delegation covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Every record, present and future.
    All,
    /// The listed records (every version of each) and every record of the listed categories.
    Only {
        /// Records, named by any of their versions (stored as their first version).
        pointers: BoundedVec<PointerId, MAX_SCOPE_POINTERS>,
        /// Categories.
        categories: CategorySet,
    },
}

impl Scope {
    /// The scope of the listed records.
    ///
    /// # Panics
    ///
    /// If more than [`MAX_SCOPE_POINTERS`] are given.
    pub fn pointers(pointers: &[PointerId]) -> Self {
        Scope::Only {
            pointers: BoundedVec::try_from(pointers.to_vec())
                .expect("at most MAX_SCOPE_POINTERS pointers"),
            categories: CategorySet::new(),
        }
    }

    /// The scope of every record in `categories`.
    pub fn categories(categories: CategorySet) -> Self {
        Scope::Only {
            pointers: BoundedVec::new(),
            categories,
        }
    }

    /// Whether the scope covers `pointer`.
    #[inline]
    pub fn covers(&self, pointer: &Pointer) -> bool {
        match self {
            Scope::All => true,
            Scope::Only {
                pointers,
                categories,
            } => categories.contains(pointer.record.category) || pointers.contains(&pointer.origin),
        }
    }
}

/// Whether a provision permits or denies what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProvisionKind {
    /// Permit.
    Permit,
    /// Deny.
    Deny,
}

/// A nested provision of a grant: an exception to its parent (the grant itself, or another
/// provision). Each criterion left empty matches everything; the provision matches a request
/// when every criterion does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provision {
    /// Permit or deny.
    pub kind: ProvisionKind,
    /// The provision it is nested in, by position in the grant's list (earlier than itself);
    /// `None` for a provision nested directly in the grant.
    pub parent: Option<u16>,
    /// Records it matches (any version), together with `categories`.
    pub pointers: BoundedVec<PointerId, MAX_PROVISION_POINTERS>,
    /// Categories it matches, together with `pointers`.
    pub categories: CategorySet,
    /// Actions it matches.
    pub actions: ActionSet,
    /// Purposes it matches.
    pub purposes: PurposeSet,
    /// When it applies (the request's time).
    pub period: Option<Period>,
    /// The data it matches by when the data was recorded (overlap with the record's period).
    pub data_period: Option<Period>,
}

impl Provision {
    /// A provision of `kind` nested directly in the grant, matching everything (narrow it with
    /// the `with_*` methods).
    pub fn new(kind: ProvisionKind) -> Self {
        Self {
            kind,
            parent: None,
            pointers: BoundedVec::new(),
            categories: CategorySet::new(),
            actions: ActionSet::new(),
            purposes: PurposeSet::new(),
            period: None,
            data_period: None,
        }
    }
    /// Nests it in provision `parent`.
    #[must_use]
    pub fn under(mut self, parent: u16) -> Self {
        self.parent = Some(parent);
        self
    }
    /// Restricts it to `categories`.
    #[must_use]
    pub fn with_categories(mut self, categories: CategorySet) -> Self {
        self.categories = categories;
        self
    }
    /// Restricts it to `actions`.
    #[must_use]
    pub fn with_actions(mut self, actions: ActionSet) -> Self {
        self.actions = actions;
        self
    }
    /// Restricts it to `purposes`.
    #[must_use]
    pub fn with_purposes(mut self, purposes: PurposeSet) -> Self {
        self.purposes = purposes;
        self
    }
    /// Restricts it to requests made during `period`.
    #[must_use]
    pub fn with_period(mut self, period: Period) -> Self {
        self.period = Some(period);
        self
    }
    /// Restricts it to records whose data overlaps `period`.
    #[must_use]
    pub fn with_data_period(mut self, period: Period) -> Self {
        self.data_period = Some(period);
        self
    }

    /// Whether the provision's own criteria match the request.
    fn matches(&self, req: &AccessRequest, pointer: &Pointer) -> bool {
        let data = (self.pointers.is_empty() && self.categories.is_empty())
            || self.categories.contains(pointer.record.category)
            || self.pointers.contains(&pointer.origin);
        data && (self.actions.is_empty() || self.actions.contains(req.action))
            && (self.purposes.is_empty() || self.purposes.contains(req.purpose))
            && self.period.is_none_or(|p| p.contains(req.time))
            && self
                .data_period
                .is_none_or(|p| p.overlaps(&pointer.record.data_period))
    }
}

/// Evaluates the provision tree for a request the grant itself applies to: `Ok` to permit, or
/// the position of the deny provision that denies.
pub(crate) fn evaluate_provisions(
    provisions: &[Provision],
    req: &AccessRequest,
    pointer: &Pointer,
) -> Result<(), u16> {
    if provisions.is_empty() {
        return Ok(());
    }
    evaluate_node(provisions, None, ProvisionKind::Permit, req, pointer)
}

fn evaluate_node(
    provisions: &[Provision],
    node: Option<u16>,
    kind: ProvisionKind,
    req: &AccessRequest,
    pointer: &Pointer,
) -> Result<(), u16> {
    let mut permitted_by_child = false;
    for (i, child) in provisions.iter().enumerate() {
        if child.parent != node || !child.matches(req, pointer) {
            continue;
        }
        let i = u16::try_from(i).expect("at most MAX_PROVISIONS provisions");
        // Deny overrides permit: the first denying child decides.
        evaluate_node(provisions, Some(i), child.kind, req, pointer)?;
        permitted_by_child = true;
    }
    match (permitted_by_child, kind, node) {
        (true, _, _) | (false, ProvisionKind::Permit, _) => Ok(()),
        (false, ProvisionKind::Deny, Some(i)) => Err(i),
        (false, ProvisionKind::Deny, None) => unreachable!("the grant itself permits"),
    }
}

/// What a patient grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTerms {
    /// The relationship whose records are granted.
    pub relationship: RelationshipId,
    /// Who may use them.
    pub viewer: Viewer,
    /// Which records.
    pub scope: Scope,
    /// What the viewer may do (not empty).
    pub actions: ActionSet,
    /// For which purposes (not empty).
    pub purposes: PurposeSet,
    /// When the grant is valid.
    pub period: Period,
    /// Exceptions (see the [module documentation](super)).
    pub provisions: BoundedVec<Provision, MAX_PROVISIONS>,
}

impl GrantTerms {
    /// Terms without provisions.
    pub fn new(
        relationship: RelationshipId,
        viewer: Viewer,
        scope: Scope,
        actions: ActionSet,
        purposes: PurposeSet,
        period: Period,
    ) -> Self {
        Self {
            relationship,
            viewer,
            scope,
            actions,
            purposes,
            period,
            provisions: BoundedVec::new(),
        }
    }

    /// Adds a provision.
    ///
    /// # Panics
    ///
    /// If the terms already hold [`MAX_PROVISIONS`] provisions.
    #[must_use]
    pub fn with_provision(mut self, provision: Provision) -> Self {
        self.provisions
            .push(provision)
            .expect("at most MAX_PROVISIONS provisions");
        self
    }
}

/// A grant in the state. It never changes once made; see [`AccessState::revocation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Its id ([`GrantId::of_tx`] of the transaction that made it).
    pub id: GrantId,
    /// The patient.
    pub patient: AccountId,
    /// What was granted, with every pointer named by its record's first version.
    pub terms: GrantTerms,
    /// Who made it: the patient, or a delegate.
    pub granted_by: AccountId,
    /// The delegation it was made under.
    pub under: Option<DelegationId>,
    /// When it was made.
    pub created: Stamp,
    /// Its position among the relationship's grants (creation order).
    pub seq: u32,
}

/// Why a grant was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RevocationCause {
    /// Its patient or delegate revoked it.
    Explicit,
    /// The delegation it was made under was revoked.
    DelegationRevoked(DelegationId),
    /// Its relationship was terminated.
    RelationshipTerminated,
}

/// The record of a revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Who revoked it (for a cascade: who caused it).
    pub by: AccountId,
    /// When.
    pub at: Stamp,
    /// Why, in words.
    pub reason: Reason,
    /// Why, as a cause.
    pub cause: RevocationCause,
}

impl Exec<'_> {
    pub(super) fn grant(
        &mut self,
        terms: &GrantTerms,
        under: Option<DelegationId>,
    ) -> Result<(), AccessError> {
        let actor = self.actor();
        let mut rel = self.relationship(terms.relationship)?;
        let patient = rel.patient;
        let delegation = match under {
            None if actor == patient => None,
            None => return Err(AccessError::NotThePatient(actor)),
            Some(id) => {
                let d = self.delegation(id)?;
                if d.delegate != actor {
                    return Err(AccessError::NotTheDelegate(actor));
                }
                if d.patient != patient {
                    return Err(AccessError::Widens {
                        delegation: id,
                        what: "relationship",
                    });
                }
                if !d.is_active(self.cx.time) {
                    return Err(AccessError::DelegationInactive(id));
                }
                Some(d)
            }
        };
        let status = rel.status();
        if status != RelationshipStatus::Accepted {
            return Err(AccessError::WrongStatus {
                relationship: rel.id,
                status,
                expected: "accepted",
            });
        }
        match terms.viewer {
            Viewer::Account(a) => {
                self.registered(a)?;
            }
            Viewer::Group(g) => {
                let group = self.group(g)?;
                if group.patient != patient {
                    return Err(AccessError::NotGroupOwner(g));
                }
            }
        }
        let terms = self.normalise_terms(terms, &rel)?;
        if let Some(d) = &delegation {
            self.check_narrower(d, &terms)?;
        }
        let id = GrantId::of_tx(self.cx.tx_id);
        let seq = rel.grants;
        rel.grants = rel.grants.checked_add(1).ok_or(AccessError::LimitReached {
            what: "grants per relationship",
            max: u32::MAX.into(),
        })?;
        let delegated = delegation.is_some();
        if let Some(d) = &delegation {
            if d.grants >= MAX_GRANTS_PER_DELEGATION {
                return Err(AccessError::LimitReached {
                    what: "grants per delegation",
                    max: MAX_GRANTS_PER_DELEGATION.into(),
                });
            }
        }
        // The patient's grants and the delegates' are counted apart, so that no delegate can
        // use up what the patient may grant.
        let entry = LiveGrant {
            grant: id,
            end: terms.period.end,
            delegated,
        };
        let mut live = self.s.live_grants.get(&rel.id).cloned().unwrap_or_default();
        let key = (patient, terms.viewer);
        let mut index = self.s.viewer_index.get(&key).cloned().unwrap_or_default();
        if delegated {
            live.admit(
                entry,
                self.cx.time,
                MAX_LIVE_DELEGATED_GRANTS_PER_RELATIONSHIP,
                "live delegated grants per relationship",
            )?;
            self.make_room(
                &mut index,
                true,
                MAX_LIVE_DELEGATED_GRANTS_PER_VIEWER,
                "live delegated grants per viewer",
            )?;
        } else {
            live.admit(
                entry,
                self.cx.time,
                MAX_LIVE_GRANTS_PER_RELATIONSHIP,
                "live grants per relationship",
            )?;
            self.make_room(
                &mut index,
                false,
                MAX_LIVE_GRANTS_PER_VIEWER,
                "live grants per viewer",
            )?;
        }
        index.grants.push(IndexedGrant {
            grant: id,
            seq,
            revoked: None,
            terms: terms.clone(),
        });
        if let Some(mut d) = delegation {
            self.s.delegation_grants.insert((d.id, d.grants), id);
            d.grants += 1;
            self.s.delegations.insert(d.id, d);
        }
        self.s.live_grants.insert(rel.id, live);
        let viewer = terms.viewer;
        self.s.viewer_index.insert(key, index);
        self.s.relationship_grants.insert((rel.id, seq), id);
        self.s.relationships.insert(rel.id, rel);
        self.s.grants.insert(
            id,
            Grant {
                id,
                patient,
                terms,
                granted_by: actor,
                under,
                created: self.stamp(),
                seq,
            },
        );
        self.emit(
            Some(patient),
            AccessEvent::GrantCreated {
                patient,
                grant: id,
                viewer,
                by: actor,
                under,
            },
        );
        Ok(())
    }

    /// Makes room in a viewer's list for one more grant of a kind (a delegate's if `delegated`,
    /// else the patient's own): refuses if `max` grants of that kind are in it, counting the
    /// dead ones (revoked, or expired at the block's time) only until the kind is full, when
    /// they are pruned.
    fn make_room(
        &self,
        index: &mut ViewerIndex,
        delegated: bool,
        max: usize,
        what: &'static str,
    ) -> Result<(), AccessError> {
        if index.grants.len() < max {
            return Ok(());
        }
        let of_kind = |index: &ViewerIndex| {
            index
                .grants
                .iter()
                .filter_map(|g| self.s.grants.get(&g.grant))
                .filter(|g| g.under.is_some() == delegated)
                .count()
        };
        if of_kind(index) >= max {
            let now = self.cx.time;
            index
                .grants
                .retain(|g| g.revoked.is_none() && g.terms.period.end > now);
            if of_kind(index) >= max {
                return Err(AccessError::LimitReached {
                    what,
                    max: max as u64,
                });
            }
        }
        Ok(())
    }

    /// Maps `pointers` (of the patient, and of `relationship` if given) to their records' first
    /// versions, refusing unknown pointers and duplicates.
    pub(super) fn normalise_pointers<const N: usize>(
        &self,
        pointers: &BoundedVec<PointerId, N>,
        patient: AccountId,
        relationship: Option<RelationshipId>,
        what: &'static str,
    ) -> Result<BoundedVec<PointerId, N>, AccessError> {
        let mut out = Vec::with_capacity(pointers.len());
        for id in pointers {
            let p = self.pointer(*id)?;
            if p.patient != patient || relationship.is_some_and(|r| r != p.relationship) {
                return Err(AccessError::PointerNotInRelationship {
                    pointer: *id,
                    relationship: relationship.unwrap_or(p.relationship),
                });
            }
            if out.contains(&p.origin) {
                return Err(AccessError::Duplicate(what));
            }
            out.push(p.origin);
        }
        Ok(BoundedVec::try_from(out).expect("no more than the input"))
    }

    /// Checks a scope and maps its pointers to first versions.
    pub(super) fn normalise_scope(
        &self,
        scope: &Scope,
        patient: AccountId,
        relationship: Option<RelationshipId>,
    ) -> Result<Scope, AccessError> {
        match scope {
            Scope::All => Ok(Scope::All),
            Scope::Only {
                pointers,
                categories,
            } => {
                if pointers.is_empty() && categories.is_empty() {
                    return Err(AccessError::Empty("scope"));
                }
                Ok(Scope::Only {
                    pointers: self.normalise_pointers(pointers, patient, relationship, "scope")?,
                    categories: *categories,
                })
            }
        }
    }

    /// Refuses empty `actions` or `purposes`, and a `period` that is malformed or already over;
    /// the checks grants and delegations share, in this order.
    pub(super) fn check_actions_purposes_period(
        &self,
        actions: &ActionSet,
        purposes: &PurposeSet,
        period: &Period,
    ) -> Result<(), AccessError> {
        if actions.is_empty() {
            return Err(AccessError::Empty("actions"));
        }
        if purposes.is_empty() {
            return Err(AccessError::Empty("purposes"));
        }
        period.check()?;
        if period.end <= self.cx.time {
            return Err(AccessError::PeriodOver {
                end: period.end,
                now: self.cx.time,
            });
        }
        Ok(())
    }

    fn normalise_terms(
        &self,
        terms: &GrantTerms,
        rel: &Relationship,
    ) -> Result<GrantTerms, AccessError> {
        self.check_actions_purposes_period(&terms.actions, &terms.purposes, &terms.period)?;
        let scope = self.normalise_scope(&terms.scope, rel.patient, Some(rel.id))?;
        let mut provisions = Vec::with_capacity(terms.provisions.len());
        let mut depth: Vec<usize> = Vec::with_capacity(terms.provisions.len());
        for (i, p) in terms.provisions.iter().enumerate() {
            let index = u16::try_from(i).expect("at most MAX_PROVISIONS provisions");
            let invalid = |why| AccessError::InvalidProvision { index, why };
            let d = match p.parent {
                None => 1,
                Some(parent) if usize::from(parent) < i => depth[usize::from(parent)] + 1,
                Some(_) => return Err(invalid("its parent must come before it")),
            };
            if d > MAX_PROVISION_DEPTH {
                return Err(invalid("nested too deep"));
            }
            depth.push(d);
            for period in [p.period, p.data_period].into_iter().flatten() {
                period.check().map_err(|_| invalid("invalid period"))?;
            }
            let mut p = p.clone();
            p.pointers =
                self.normalise_pointers(&p.pointers, rel.patient, Some(rel.id), "provision")?;
            provisions.push(p);
        }
        Ok(GrantTerms {
            relationship: rel.id,
            viewer: terms.viewer,
            scope,
            actions: terms.actions,
            purposes: terms.purposes,
            period: terms.period,
            provisions: BoundedVec::try_from(provisions).expect("no more than the input"),
        })
    }

    /// Refuses terms wider than the delegation they are made under.
    fn check_narrower(&self, d: &Delegation, t: &GrantTerms) -> Result<(), AccessError> {
        let widens = |what| {
            Err(AccessError::Widens {
                delegation: d.id,
                what,
            })
        };
        if d.terms.relationship.is_some_and(|r| r != t.relationship) {
            return widens("relationship");
        }
        if !t.actions.is_subset(&d.terms.actions) {
            return widens("actions");
        }
        if !t.purposes.is_subset(&d.terms.purposes) {
            return widens("purposes");
        }
        if !d.terms.period.covers(&t.period) {
            return widens("period");
        }
        match (&d.terms.scope, &t.scope) {
            (Scope::All, _) => Ok(()),
            (Scope::Only { .. }, Scope::All) => widens("scope"),
            (
                Scope::Only {
                    pointers: dp,
                    categories: dc,
                },
                Scope::Only {
                    pointers: gp,
                    categories: gc,
                },
            ) => {
                if !gc.is_subset(dc) {
                    return widens("scope");
                }
                for p in gp {
                    // Versions keep their category, so the first version's is every version's.
                    if !dp.contains(p) && !dc.contains(self.pointer(*p)?.record.category) {
                        return widens("scope");
                    }
                }
                Ok(())
            }
        }
    }

    pub(super) fn revoke_grant(&mut self, id: GrantId, reason: &Reason) -> Result<(), AccessError> {
        let grant = self
            .s
            .grants
            .get(&id)
            .ok_or(AccessError::UnknownGrant(id))?;
        if self.s.revocations.get(&id).is_some() {
            return Err(AccessError::GrantAlreadyRevoked(id));
        }
        let actor = self.actor();
        let manages = actor == grant.patient
            || grant
                .under
                .and_then(|d| self.s.delegations.get(&d))
                .is_some_and(|d| d.delegate == actor);
        if !manages {
            return Err(AccessError::NotGrantManager {
                account: actor,
                grant: id,
            });
        }
        self.revoke_one(id, reason, RevocationCause::Explicit)
    }

    /// Records the revocation of a grant that is not revoked yet.
    pub(super) fn revoke_one(
        &mut self,
        id: GrantId,
        reason: &Reason,
        cause: RevocationCause,
    ) -> Result<(), AccessError> {
        let grant = self
            .s
            .grants
            .get(&id)
            .ok_or(AccessError::UnknownGrant(id))?;
        let (patient, viewer, relationship) =
            (grant.patient, grant.terms.viewer, grant.terms.relationship);
        let by = self.actor();
        let at = self.stamp();
        self.s.revocations.insert(
            id,
            Revocation {
                by,
                at,
                reason: reason.clone(),
                cause,
            },
        );
        let key = (patient, viewer);
        if let Some(index) = self.s.viewer_index.get(&key) {
            if index.grants.iter().any(|g| g.grant == id) {
                let mut index: ViewerIndex = index.clone();
                for g in index.grants.iter_mut().filter(|g| g.grant == id) {
                    g.revoked = Some(at.height);
                }
                self.s.viewer_index.insert(key, index);
            }
        }
        if let Some(live) = self.s.live_grants.get(&relationship) {
            if live.0.iter().any(|g| g.grant == id) {
                let mut live = live.clone();
                live.0.retain(|g| g.grant != id);
                if live.0.is_empty() {
                    self.s.live_grants.remove(relationship);
                } else {
                    self.s.live_grants.insert(relationship, live);
                }
            }
        }
        self.emit(
            Some(patient),
            AccessEvent::GrantRevoked {
                patient,
                grant: id,
                by,
                cause,
            },
        );
        Ok(())
    }
}

impl AccessState {
    /// A grant (revoked or not).
    pub fn grant(&self, id: &GrantId) -> Option<&Grant> {
        self.grants.get(id)
    }

    /// The revocation of a grant, if it was revoked.
    pub fn revocation(&self, id: &GrantId) -> Option<&Revocation> {
        self.revocations.get(id)
    }

    /// Every grant made on a relationship, in creation order.
    pub fn grants_of(&self, relationship: &RelationshipId) -> Vec<&Grant> {
        let n = self.relationships.get(relationship).map_or(0, |r| r.grants);
        (0..n)
            .filter_map(|i| self.relationship_grants.get(&(*relationship, i)))
            .filter_map(|id| self.grants.get(id))
            .collect()
    }

    /// The grants `patient` made to `viewer` that are not revoked, in creation order.
    pub fn grants_to(&self, patient: &AccountId, viewer: &Viewer) -> Vec<&Grant> {
        self.viewer_index
            .get(&(*patient, *viewer))
            .map(|i| {
                i.grants
                    .iter()
                    .filter(|g| g.revoked.is_none())
                    .filter_map(|g| self.grants.get(&g.grant))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{reason, Cast, DAY};
    use crate::access::{AccessOp, Action, Category, Decision, DenyReason};
    use crate::purpose::PurposeOfUse::{self, *};

    fn read(c: &Cast, p: PointerId, purpose: PurposeOfUse) -> Decision {
        c.h.decide(&c.specialist, &c.patient, p, Action::Read, purpose)
    }

    /// A grant of `terms` that no delegation stands behind.
    fn grant_op(terms: GrantTerms) -> AccessOp {
        AccessOp::Grant { terms, under: None }
    }

    #[test]
    fn deny_overrides_permit_and_nested_provisions_are_exceptions() {
        let mut c = Cast::new();
        let (rel, lab, mh) = c.with_records();
        // Grant: everything, for treatment and research.
        //   0: deny mental health
        //   1:   permit it for treatment (exception to 0)
        //   2:     deny disclosing it (exception to 1)
        //   3: deny research (a sibling of 0)
        //   4: permit laboratory (a sibling of 3: deny overrides it)
        let terms = GrantTerms::new(
            rel,
            Viewer::Account(c.specialist.account()),
            Scope::All,
            ActionSet::all(),
            PurposeSet::of(&[Treatment, Research]),
            Period::lasting(c.h.time, 30 * DAY),
        )
        .with_provision(
            Provision::new(ProvisionKind::Deny)
                .with_categories(CategorySet::of(&[Category::MentalHealth])),
        )
        .with_provision(
            Provision::new(ProvisionKind::Permit)
                .under(0)
                .with_purposes(PurposeSet::of(&[Treatment])),
        )
        .with_provision(
            Provision::new(ProvisionKind::Deny)
                .under(1)
                .with_actions(ActionSet::of(&[Action::Disclose])),
        )
        .with_provision(
            Provision::new(ProvisionKind::Deny).with_purposes(PurposeSet::of(&[Research])),
        )
        .with_provision(
            Provision::new(ProvisionKind::Permit)
                .with_categories(CategorySet::of(&[Category::Laboratory])),
        );
        let g = c.h.grant(&c.patient, terms, None);
        let decide = |p, action, purpose| c.h.decide(&c.specialist, &c.patient, p, action, purpose);
        let denied_by = |n| {
            Decision::Deny(DenyReason::DeniedByProvision {
                grant: g,
                provision: n,
            })
        };
        // Laboratory: permitted for treatment; research denied by 3 despite 4 permitting.
        assert_eq!(
            decide(lab, Action::Read, Treatment),
            Decision::Permit(crate::access::Basis::Grant(g))
        );
        assert_eq!(decide(lab, Action::Read, Research), denied_by(3));
        // Mental health: the exception (1) re-permits treatment reads...
        assert!(decide(mh, Action::Read, Treatment).is_permit());
        // ...but not disclosure (2, the exception to the exception)...
        assert_eq!(decide(mh, Action::Disclose, Treatment), denied_by(2));
        // ...and research falls back to the deny (0; 3 also denies, 0 comes first).
        assert_eq!(decide(mh, Action::Read, Research), denied_by(0));
        // Outside the root (a purpose never granted): the root does not apply.
        assert_eq!(
            decide(lab, Action::Read, Payment),
            Decision::Deny(DenyReason::PurposeNotAllowed {
                grant: g,
                purpose: Payment
            })
        );
    }

    #[test]
    fn provisions_by_time_and_data_period() {
        let mut c = Cast::new();
        let (rel, lab, _) = c.with_records();
        let now = c.h.time;
        let terms = c
            .treat_terms(rel, 30)
            // Not on days 10 to 12.
            .with_provision(
                Provision::new(ProvisionKind::Deny)
                    .with_period(Period::new(now + 10 * DAY, now + 12 * DAY).unwrap()),
            )
            // Nothing recorded before 2000.
            .with_provision(
                Provision::new(ProvisionKind::Deny)
                    .with_data_period(Period::new(0, 946_684_800).unwrap()),
            );
        let g = c.h.grant(&c.patient, terms, None);
        let at = |t| {
            c.h.access().decide(&AccessRequest::new(
                c.specialist.account(),
                c.patient.account(),
                lab,
                Action::Read,
                Treatment,
                t,
            ))
        };
        assert!(at(now + DAY).is_permit());
        assert_eq!(
            at(now + 11 * DAY),
            Decision::Deny(DenyReason::DeniedByProvision {
                grant: g,
                provision: 0
            })
        );
        assert!(at(now + 13 * DAY).is_permit());
    }

    #[test]
    fn malformed_provisions_are_refused() {
        let mut c = Cast::new();
        let (rel, _, _) = c.with_records();
        let forward = c
            .treat_terms(rel, 30)
            .with_provision(Provision::new(ProvisionKind::Deny).under(0));
        assert!(matches!(
            c.h.refused(&c.patient, grant_op(forward)),
            AccessError::InvalidProvision { index: 0, .. }
        ));
        let mut deep = c
            .treat_terms(rel, 30)
            .with_provision(Provision::new(ProvisionKind::Deny));
        for i in 0..MAX_PROVISION_DEPTH as u16 {
            deep = deep.with_provision(Provision::new(ProvisionKind::Permit).under(i));
        }
        assert!(matches!(
            c.h.refused(&c.patient, grant_op(deep)),
            AccessError::InvalidProvision {
                why: "nested too deep",
                ..
            }
        ));
    }

    #[test]
    fn grant_refusals() {
        let mut c = Cast::new();
        let (rel, lab, _) = c.with_records();
        let terms = c.treat_terms(rel, 30);
        // Nobody but the patient grants (no unauthenticated permission change).
        for who in [&c.hospital, &c.specialist, &c.guardian] {
            assert_eq!(
                c.h.refused(who, grant_op(terms.clone())),
                AccessError::NotThePatient(who.account())
            );
        }
        let mut t = terms.clone();
        t.actions = ActionSet::new();
        assert_eq!(
            c.h.refused(&c.patient, grant_op(t)),
            AccessError::Empty("actions")
        );
        let mut t = terms.clone();
        t.period = Period::new(0, c.h.time).unwrap();
        assert!(matches!(
            c.h.refused(&c.patient, grant_op(t)),
            AccessError::PeriodOver { .. }
        ));
        let mut t = terms.clone();
        t.scope = Scope::pointers(&[lab, lab]);
        assert_eq!(
            c.h.refused(&c.patient, grant_op(t)),
            AccessError::Duplicate("scope")
        );
        let mut t = terms.clone();
        t.scope = Scope::pointers(&[PointerId::default()]);
        assert_eq!(
            c.h.refused(&c.patient, grant_op(t)),
            AccessError::UnknownPointer(PointerId::default())
        );
        let mut t = terms.clone();
        t.viewer = Viewer::Account(crate::access::tests::key(99).account());
        assert!(matches!(
            c.h.refused(&c.patient, grant_op(t)),
            AccessError::NotRegistered(_)
        ));
        // A pending relationship takes no grants.
        c.h.ok(
            &c.clinic,
            AccessOp::CreateRelationship {
                patient: c.patient.account(),
            },
        );
        let clinic_rel = RelationshipId::of(c.patient.account(), c.clinic.account());
        let mut t = terms;
        t.relationship = clinic_rel;
        assert!(matches!(
            c.h.refused(&c.patient, grant_op(t)),
            AccessError::WrongStatus { .. }
        ));
    }

    #[test]
    fn revocation_is_recorded_not_erased() {
        let mut c = Cast::new();
        let (rel, lab, _) = c.with_records();
        let terms = c.treat_terms(rel, 30);
        let g = c.h.grant(&c.patient, terms, None);
        assert!(read(&c, lab, Treatment).is_permit());
        let op = AccessOp::RevokeGrant {
            grant: g,
            reason: reason("second opinion done"),
        };
        assert_eq!(
            c.h.refused(&c.specialist, op.clone()),
            AccessError::NotGrantManager {
                account: c.specialist.account(),
                grant: g
            }
        );
        c.h.ok(&c.patient, op.clone());
        let r = c.h.access().revocation(&g).unwrap();
        assert_eq!(
            (r.by, r.at.height, r.reason.as_str(), r.cause),
            (
                c.patient.account(),
                c.h.height,
                "second opinion done",
                RevocationCause::Explicit
            )
        );
        assert!(
            c.h.access().grant(&g).is_some(),
            "the grant stays on record"
        );
        assert_eq!(
            read(&c, lab, Treatment),
            Decision::Deny(DenyReason::Revoked {
                grant: g,
                height: c.h.height
            })
        );
        assert_eq!(
            c.h.refused(&c.patient, op),
            AccessError::GrantAlreadyRevoked(g)
        );
        assert!(c
            .h
            .access()
            .grants_to(
                &c.patient.account(),
                &Viewer::Account(c.specialist.account())
            )
            .is_empty());
        assert_eq!(c.h.access().grants_of(&rel).len(), 1);
    }

    #[test]
    fn scope_by_category_covers_later_records_and_versions_by_origin() {
        let mut c = Cast::new();
        let (rel, lab, mh) = c.with_records();
        let mut terms = c.treat_terms(rel, 30);
        terms.scope = Scope::pointers(&[lab]);
        c.h.grant(&c.patient, terms, None);
        let v2 = c.h.pointer(
            &c.hospital,
            rel,
            crate::access::tests::record(21, Category::Laboratory),
            Some(lab),
        );
        assert!(read(&c, lab, Treatment).is_permit());
        assert!(
            read(&c, v2, Treatment).is_permit(),
            "a new version stays granted"
        );
        assert!(matches!(
            read(&c, mh, Treatment),
            Decision::Deny(DenyReason::NotInScope { .. })
        ));
        let mut terms = c.treat_terms(rel, 30);
        terms.scope = Scope::categories(CategorySet::of(&[Category::MentalHealth]));
        c.h.grant(&c.patient, terms, None);
        assert!(read(&c, mh, Treatment).is_permit());
    }

    #[test]
    fn the_relationship_limit_counts_the_patients_live_grants_not_every_grant_made() {
        let mut c = Cast::new();
        let (rel, _, _) = c.with_records();
        let per_viewer = MAX_LIVE_GRANTS_PER_VIEWER;
        let viewers: Vec<_> = (0..MAX_LIVE_GRANTS_PER_RELATIONSHIP / per_viewer + 1)
            .map(|i| crate::access::tests::key(20 + i as u8))
            .collect();
        for (i, v) in viewers.iter().enumerate() {
            c.h.register(v, crate::access::Role::Researcher, &format!("lab {i}"));
        }
        let terms = |c: &Cast, v: usize, days| GrantTerms {
            viewer: Viewer::Account(viewers[v].account()),
            ..c.treat_terms(rel, days)
        };
        let mut made = Vec::new();
        for i in 0..MAX_LIVE_GRANTS_PER_RELATIONSHIP {
            made.push(c.h.grant(&c.patient, terms(&c, i / per_viewer, 30), None));
        }
        let last = viewers.len() - 1;
        let full = AccessError::LimitReached {
            what: "live grants per relationship",
            max: MAX_LIVE_GRANTS_PER_RELATIONSHIP as u64,
        };
        assert_eq!(c.h.refused(&c.patient, grant_op(terms(&c, last, 30))), full);
        // Revoking one makes room for one.
        c.h.ok(
            &c.patient,
            AccessOp::RevokeGrant {
                grant: made[0],
                reason: reason("no longer needed"),
            },
        );
        c.h.grant(&c.patient, terms(&c, last, 1), None);
        assert_eq!(c.h.refused(&c.patient, grant_op(terms(&c, last, 30))), full);
        // Once they have expired, there is room again: what counts is what is live.
        c.h.time += 31 * DAY;
        for i in 0..per_viewer {
            c.h.grant(&c.patient, terms(&c, i % viewers.len(), 30), None);
        }
        assert!(c.h.access().grants_of(&rel).len() > MAX_LIVE_GRANTS_PER_RELATIONSHIP + per_viewer);
    }

    #[test]
    fn full_viewer_lists_prune_dead_grants() {
        let mut c = Cast::new();
        let (rel, lab, _) = c.with_records();
        for _ in 0..MAX_LIVE_GRANTS_PER_VIEWER {
            let terms = c.treat_terms(rel, 1);
            c.h.grant(&c.patient, terms, None);
        }
        let terms = c.treat_terms(rel, 1);
        assert!(matches!(
            c.h.refused(&c.patient, grant_op(terms)),
            AccessError::LimitReached { .. }
        ));
        // Two days later they have all expired: room again.
        c.h.time += 2 * DAY;
        assert!(!read(&c, lab, Treatment).is_permit());
        let terms = c.treat_terms(rel, 1);
        let g = c.h.grant(&c.patient, terms, None);
        assert_eq!(
            read(&c, lab, Treatment),
            Decision::Permit(crate::access::Basis::Grant(g))
        );
    }
}
