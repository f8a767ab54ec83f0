//! Model-based test of the access control: random sequences of operations by random actors,
//! applied through real signed transactions in mined blocks, checked against a reference model
//! made of plain structs and linear scans.
//!
//! After every operation the test checks that the ledger accepted it exactly when the model
//! says it is allowed, then compares `decide` with the model over a grid of viewer × pointer ×
//! action × purpose × time: the ledger never permits what the model denies, never denies what
//! it permits, and names the same grant or session. It also checks, at the end, that every
//! past height answers "as of" queries as it did then, and that replaying the chain from
//! genesis gives the same state root.

mod common;

use std::collections::BTreeSet;

use common::*;
use medledger::access::{
    AccessOp, AccessRequest, Action, ActionSet, Basis, BreakGlassId, Category, CategorySet,
    Decision, DelegationId, DelegationTerms, GrantId, GrantTerms, GroupId, Period, PointerId,
    Provision, ProvisionKind, PurposeSet, RelationshipId, ReviewOutcome, Role, Scope, Viewer,
    MAX_BREAK_GLASS_SECS,
};
use medledger::purpose::PurposeOfUse::{self, EmergencyTreatment, Research, Treatment};
use medledger::tx::Keypair;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The cast

/// 0 authority, 1 emergency-certified provider, 2 certified provider, 3 uncertified provider,
/// 4 researcher, 5 guardian (a patient), 6 and 7 patients, 8 an unregistered stranger.
const ACTORS: usize = 9;
const ROLES: [Option<Role>; ACTORS] = [
    Some(Role::Authority),
    Some(Role::Provider),
    Some(Role::Provider),
    Some(Role::Provider),
    Some(Role::Researcher),
    Some(Role::Patient),
    Some(Role::Patient),
    Some(Role::Patient),
    None,
];
const PURPOSES: [PurposeOfUse; 3] = [Treatment, Research, EmergencyTreatment];
const CATEGORIES: [Category; 3] = [
    Category::Laboratory,
    Category::Imaging,
    Category::MentalHealth,
];

fn keys() -> Vec<Keypair> {
    (0..ACTORS as u8)
        .map(|i| Keypair::from_seed(&[i + 1; 32]))
        .collect()
}

fn purposes(bits: u8) -> PurposeSet {
    PURPOSES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, p)| *p)
        .collect()
}

fn categories(bits: u8) -> CategorySet {
    CATEGORIES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, c)| *c)
        .collect()
}

fn actions(bits: u8) -> ActionSet {
    Action::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, a)| *a)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The reference model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Pending,
    Accepted,
    Rejected,
    Terminated,
}

struct MRel {
    id: RelationshipId,
    patient: usize,
    provider: usize,
    status: St,
}

struct MPtr {
    id: PointerId,
    rel: usize,
    category: Category,
    origin: PointerId,
    superseded: bool,
}

#[derive(Clone, Debug)]
enum MScope {
    All,
    Only(BTreeSet<PointerId>, CategorySet),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MViewer {
    Account(usize),
    Group(usize),
}

#[derive(Clone, Debug)]
struct MDeny {
    categories: CategorySet,
    purposes: PurposeSet,
    /// A nested permit exception for these purposes.
    except: Option<PurposeSet>,
}

struct MGrant {
    id: GrantId,
    rel: usize,
    viewer: MViewer,
    scope: MScope,
    actions: ActionSet,
    purposes: PurposeSet,
    period: Period,
    deny: Option<MDeny>,
    under: Option<usize>,
    revoked: bool,
}

struct MGroup {
    id: GroupId,
    patient: usize,
    members: BTreeSet<usize>,
}

struct MDel {
    id: DelegationId,
    patient: usize,
    delegate: usize,
    rel: Option<usize>,
    scope: MScope,
    actions: ActionSet,
    purposes: PurposeSet,
    period: Period,
    revoked: bool,
}

struct MSession {
    id: BreakGlassId,
    patient: usize,
    provider: usize,
    opened: u64,
    expires: u64,
    closed: bool,
}

#[derive(Default)]
struct Model {
    rels: Vec<MRel>,
    ptrs: Vec<MPtr>,
    grants: Vec<MGrant>,
    groups: Vec<MGroup>,
    dels: Vec<MDel>,
    sessions: Vec<MSession>,
}

impl MScope {
    fn covers(&self, p: &MPtr) -> bool {
        match self {
            MScope::All => true,
            MScope::Only(ps, cs) => ps.contains(&p.origin) || cs.contains(p.category),
        }
    }
}

impl Model {
    fn ptr(&self, id: &PointerId) -> Option<&MPtr> {
        self.ptrs.iter().find(|p| p.id == *id)
    }

    fn is_viewer(&self, v: MViewer, who: usize) -> bool {
        match v {
            MViewer::Account(a) => a == who,
            MViewer::Group(g) => self.groups[g].members.contains(&who),
        }
    }

    fn grant_permits(
        &self,
        g: &MGrant,
        p: &MPtr,
        action: Action,
        purpose: PurposeOfUse,
        t: u64,
    ) -> bool {
        if g.revoked
            || !g.scope.covers(p)
            || !g.actions.contains(action)
            || !g.purposes.contains(purpose)
            || !g.period.contains(t)
        {
            return false;
        }
        match &g.deny {
            Some(d)
                if (d.categories.is_empty() || d.categories.contains(p.category))
                    && (d.purposes.is_empty() || d.purposes.contains(purpose)) =>
            {
                d.except.is_some_and(|e| e.contains(purpose))
            }
            _ => true,
        }
    }

    fn session_open(s: &MSession, t: u64) -> bool {
        !s.closed && s.opened <= t && t < s.expires
    }

    fn decide(
        &self,
        viewer: usize,
        patient: usize,
        ptr: &PointerId,
        action: Action,
        purpose: PurposeOfUse,
        t: u64,
    ) -> Option<Basis> {
        let p = self.ptr(ptr)?;
        let rel = &self.rels[p.rel];
        if rel.patient != patient {
            return None;
        }
        if viewer == patient {
            return Some(Basis::Patient);
        }
        if viewer == rel.provider {
            return Some(Basis::Custodian);
        }
        if rel.status == St::Accepted {
            for g in &self.grants {
                if g.rel == p.rel
                    && self.is_viewer(g.viewer, viewer)
                    && self.grant_permits(g, p, action, purpose, t)
                {
                    return Some(Basis::Grant(g.id));
                }
            }
        }
        if action == Action::Read && purpose.is_emergency() && rel.status != St::Rejected {
            let latest = self
                .sessions
                .iter()
                .rev()
                .find(|s| s.patient == patient && s.provider == viewer)?;
            if Self::session_open(latest, t) {
                return Some(Basis::BreakGlass(latest.id));
            }
        }
        None
    }

    /// Whether a receipt naming `basis` would be accepted at block time `t`.
    fn receipt_ok(
        &self,
        viewer: usize,
        patient: usize,
        ptr: &PointerId,
        (action, purpose): (Action, PurposeOfUse),
        basis: Basis,
        t: u64,
    ) -> bool {
        if ROLES[viewer].is_none() {
            return false;
        }
        let Some(p) = self.ptr(ptr) else { return false };
        let rel = &self.rels[p.rel];
        if rel.patient != patient {
            return false;
        }
        match basis {
            Basis::Patient => viewer == patient,
            Basis::Custodian => viewer == rel.provider,
            Basis::Grant(id) => {
                let Some(g) = self.grants.iter().find(|g| g.id == id) else {
                    return false;
                };
                self.rels[g.rel].patient == patient
                    && self.is_viewer(g.viewer, viewer)
                    && g.rel == p.rel
                    && rel.status == St::Accepted
                    && self.grant_permits(g, p, action, purpose, t)
            }
            Basis::BreakGlass(id) => {
                let Some(s) = self.sessions.iter().find(|s| s.id == id) else {
                    return false;
                };
                s.provider == viewer
                    && s.patient == patient
                    && action == Action::Read
                    && purpose.is_emergency()
                    && rel.status != St::Rejected
                    && Self::session_open(s, t)
            }
        }
    }

    /// The pointers `picks` selects: among all, or among those of `patient` (and `rel`).
    fn pick_pointers(
        &self,
        picks: &[u8],
        foreign: bool,
        patient: usize,
        rel: Option<usize>,
    ) -> Vec<PointerId> {
        let pool: Vec<PointerId> = self
            .ptrs
            .iter()
            .filter(|p| {
                foreign || (self.rels[p.rel].patient == patient && rel.is_none_or(|r| r == p.rel))
            })
            .map(|p| p.id)
            .collect();
        if pool.is_empty() {
            return Vec::new();
        }
        picks
            .iter()
            .map(|i| pool[*i as usize % pool.len()])
            .collect()
    }

    /// Normalises a scope for `patient` (and `rel`), or `None` if the ledger refuses it.
    fn scope(&self, sel: &ScopeSel, patient: usize, rel: Option<usize>) -> Option<(MScope, Scope)> {
        match sel {
            ScopeSel::All => Some((MScope::All, Scope::All)),
            ScopeSel::Only(ptrs, cats, foreign) => {
                let ids = self.pick_pointers(ptrs, *foreign, patient, rel);
                let cs = categories(*cats);
                let scope = Scope::Only {
                    pointers: ids.clone().try_into().unwrap(),
                    categories: cs,
                };
                if ids.is_empty() && cs.is_empty() {
                    return None;
                }
                let mut origins = BTreeSet::new();
                for id in &ids {
                    let p = self.ptr(id)?;
                    if self.rels[p.rel].patient != patient || rel.is_some_and(|r| r != p.rel) {
                        return None;
                    }
                    if !origins.insert(p.origin) {
                        return None;
                    }
                }
                Some((MScope::Only(origins, cs), scope))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operations, as raw choices resolved against the model when applied

#[derive(Clone, Debug)]
enum ScopeSel {
    All,
    /// Pointers (by index among the relationship's, or among all pointers if `foreign`) and
    /// category bits.
    Only(Vec<u8>, u8, bool),
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    CreateRel {
        provider: u8,
        patient: u8,
    },
    Answer {
        rel: u8,
        accept: bool,
        signer: Option<u8>,
    },
    Terminate {
        rel: u8,
        by_provider: bool,
        signer: Option<u8>,
    },
    AddPointer {
        rel: u8,
        category: u8,
        replaces: Option<u8>,
        signer: Option<u8>,
    },
    Grant {
        rel: u8,
        delegation: Option<u8>,
        signer: Option<u8>,
        viewer: u8,
        to_group: bool,
        scope: ScopeSel,
        actions: u8,
        purposes: u8,
        start: u8,
        days: u8,
        deny: Option<(u8, u8, Option<u8>)>,
    },
    Revoke {
        grant: u8,
        signer: Option<u8>,
    },
    CreateGroup {
        patient: u8,
    },
    Member {
        group: u8,
        member: u8,
        add: bool,
        signer: Option<u8>,
    },
    Delegate {
        patient: u8,
        delegate: u8,
        rel: Option<u8>,
        scope: ScopeSel,
        actions: u8,
        purposes: u8,
        days: u8,
    },
    RevokeDelegation {
        delegation: u8,
        by_delegate: bool,
        signer: Option<u8>,
    },
    OpenBreakGlass {
        provider: u8,
        patient: u8,
        secs: u8,
    },
    CloseBreakGlass {
        session: u8,
        signer: Option<u8>,
    },
    Receipt {
        viewer: u8,
        ptr: u8,
        wrong_patient: bool,
        action: u8,
        purpose: u8,
        basis: u8,
    },
}

/// `provider` opens a relationship with `patient`.
fn create_rel(provider: u8, patient: u8) -> Op {
    Op::CreateRel { provider, patient }
}

/// The patient of relationship `rel` answers it, signing as themself.
fn answer(rel: u8, accept: bool) -> Op {
    Op::Answer {
        rel,
        accept,
        signer: None,
    }
}

/// The provider of relationship `rel` adds a new record of `category`, signing as themself.
fn add_pointer(rel: u8, category: u8) -> Op {
    Op::AddPointer {
        rel,
        category,
        replaces: None,
        signer: None,
    }
}

fn signer() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![4 => Just(None), 1 => (0..ACTORS as u8).prop_map(Some)]
}

fn scope_sel() -> impl Strategy<Value = ScopeSel> {
    prop_oneof![
        1 => Just(ScopeSel::All),
        2 => (proptest::collection::vec(any::<u8>(), 0..3), 0u8..8, prop::bool::weighted(0.15))
            .prop_map(|(p, c, f)| ScopeSel::Only(p, c, f)),
    ]
}

fn action_bits() -> impl Strategy<Value = u8> {
    prop_oneof![9 => 1u8..4, 1 => Just(0u8)]
}

fn purpose_bits() -> impl Strategy<Value = u8> {
    prop_oneof![9 => 1u8..8, 1 => Just(0u8)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop_oneof![Just(60u64), Just(3600), Just(2 * DAY), Just(20 * DAY)].prop_map(Op::Advance),
        3 => (1u8..4, 4u8..8).prop_map(|(provider, patient)| Op::CreateRel { provider, patient }),
        3 => (any::<u8>(), prop::bool::weighted(0.8), signer()).prop_map(|(rel, accept, signer)| Op::Answer { rel, accept, signer }),
        1 => (any::<u8>(), any::<bool>(), signer()).prop_map(|(rel, by_provider, signer)| Op::Terminate { rel, by_provider, signer }),
        4 => (any::<u8>(), 0u8..3, prop::option::weighted(0.2, any::<u8>()), signer())
            .prop_map(|(rel, category, replaces, signer)| Op::AddPointer { rel, category, replaces, signer }),
        8 => (
            (any::<u8>(), prop::option::weighted(0.4, any::<u8>()), signer(), 1u8..9, prop::bool::weighted(0.25)),
            (scope_sel(), action_bits(), purpose_bits(), 0u8..3, 0u8..3),
            prop::option::weighted(0.3, (0u8..8, 0u8..8, prop::option::of(1u8..8))),
        )
            .prop_map(|((rel, delegation, signer, viewer, to_group), (scope, actions, purposes, start, days), deny)| Op::Grant {
                rel, delegation, signer, viewer, to_group, scope, actions, purposes, start, days, deny,
            }),
        2 => (any::<u8>(), signer()).prop_map(|(grant, signer)| Op::Revoke { grant, signer }),
        1 => (5u8..8).prop_map(|patient| Op::CreateGroup { patient }),
        2 => (any::<u8>(), 1u8..9, prop::bool::weighted(0.7), signer())
            .prop_map(|(group, member, add, signer)| Op::Member { group, member, add, signer }),
        3 => (5u8..8, 1u8..9, prop::option::of(any::<u8>()), scope_sel(), action_bits(), purpose_bits(), 0u8..3)
            .prop_map(|(patient, delegate, rel, scope, actions, purposes, days)| Op::Delegate {
                patient, delegate, rel, scope, actions, purposes, days,
            }),
        1 => (any::<u8>(), any::<bool>(), signer())
            .prop_map(|(delegation, by_delegate, signer)| Op::RevokeDelegation { delegation, by_delegate, signer }),
        2 => (1u8..4, 4u8..8, 0u8..4).prop_map(|(provider, patient, secs)| Op::OpenBreakGlass { provider, patient, secs }),
        1 => (any::<u8>(), signer()).prop_map(|(session, signer)| Op::CloseBreakGlass { session, signer }),
        4 => (1u8..9, any::<u8>(), prop::bool::weighted(0.1), 0u8..2, 0u8..3, any::<u8>())
            .prop_map(|(viewer, ptr, wrong_patient, action, purpose, basis)| Op::Receipt {
                viewer, ptr, wrong_patient, action, purpose, basis,
            }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The runner

/// A decision recorded at a block: viewer, pointer, action, purpose, and the decision.
type Recorded = (usize, PointerId, Action, PurposeOfUse, Decision);

struct Run {
    net: Net,
    keys: Vec<Keypair>,
    model: Model,
    /// Decisions recorded at each height, to check "as of" queries at the end.
    history: Vec<(u64, u64, Vec<Recorded>)>,
}

impl Run {
    fn new() -> Self {
        let keys = keys();
        let mut net = Net::new(&[("Authority", &keys[0])]);
        let mut ops = vec![
            (
                &keys[0],
                AccessOp::CertifyProvider {
                    provider: keys[1].account(),
                    emergency: true,
                },
            ),
            (
                &keys[0],
                AccessOp::CertifyProvider {
                    provider: keys[2].account(),
                    emergency: false,
                },
            ),
        ];
        for (i, role) in ROLES.iter().enumerate().skip(1) {
            if let Some(role) = role {
                ops.push((
                    &keys[i],
                    register_op(&keys[i], *role, &format!("actor {i}")),
                ));
            }
        }
        net.run(ops);
        Self {
            net,
            keys,
            model: Model::default(),
            history: Vec::new(),
        }
    }

    /// A run that starts with relationships (two accepted, one pending), records in each, and a
    /// group, so that random operations mostly act on something.
    fn with_world() -> Self {
        let mut run = Self::new();
        let prefix = [
            create_rel(1, 6),
            create_rel(2, 6),
            create_rel(1, 7),
            add_pointer(0, 0),
            add_pointer(0, 2),
            add_pointer(1, 1),
            add_pointer(2, 0),
            add_pointer(2, 1),
            answer(0, true),
            answer(2, true),
            Op::CreateGroup { patient: 6 },
            Op::Member {
                group: 0,
                member: 4,
                add: true,
                signer: None,
            },
        ];
        for op in &prefix {
            run.apply(op);
        }
        run
    }

    fn idx(n: u8, len: usize) -> Option<usize> {
        (len > 0).then(|| n as usize % len)
    }

    /// Submits one operation by actor `who` in its own block; checks the ledger accepts it iff
    /// `allowed`. Returns the transaction id if it was applied.
    fn submit(
        &mut self,
        who: usize,
        op: AccessOp,
        allowed: bool,
        advance: u64,
    ) -> Option<medledger::hash::TxId> {
        let tx = self.net.sign(&self.keys[who], op.clone());
        let id = tx.id();
        let time = self.net.now + advance;
        self.net.clock.set(time);
        let template = self
            .net
            .chain
            .build_template(vec![tx.clone()], time)
            .unwrap();
        let accepted = template.rejected.is_empty();
        assert_eq!(
            accepted,
            allowed,
            "ledger {} {op:?} by actor {who}; the model says {}: {:?}",
            if accepted { "accepted" } else { "refused" },
            if allowed { "allowed" } else { "refused" },
            template.rejected
        );
        if accepted {
            self.net.mine(advance, vec![tx]);
            Some(id)
        } else {
            None
        }
    }

    fn who(&self, natural: usize, signer: Option<u8>) -> usize {
        signer.map_or(natural, |s| s as usize % ACTORS)
    }

    fn apply(&mut self, op: &Op) {
        const STEP: u64 = 60;
        let t = self.net.now + STEP;
        let m = &self.model;
        match *op {
            Op::Advance(secs) => {
                self.net.run_after(secs, vec![]);
            }
            Op::CreateRel { provider, patient } => {
                let (pr, pa) = (provider as usize, patient as usize);
                let id = RelationshipId::of(self.keys[pa].account(), self.keys[pr].account());
                let allowed = matches!(pr, 1 | 2)
                    && ROLES[pa] == Some(Role::Patient)
                    && !m.rels.iter().any(|r| r.id == id);
                let op = AccessOp::CreateRelationship {
                    patient: self.keys[pa].account(),
                };
                if self.submit(pr, op, allowed, STEP).is_some() {
                    self.model.rels.push(MRel {
                        id,
                        patient: pa,
                        provider: pr,
                        status: St::Pending,
                    });
                }
            }
            Op::Answer {
                rel,
                accept,
                signer,
            } => {
                let Some(r) = Self::idx(rel, m.rels.len()) else {
                    return;
                };
                let who = self.who(m.rels[r].patient, signer);
                let allowed = who == m.rels[r].patient && m.rels[r].status == St::Pending;
                let id = m.rels[r].id;
                let op = if accept {
                    AccessOp::AcceptRelationship { relationship: id }
                } else {
                    AccessOp::RejectRelationship {
                        relationship: id,
                        reason: "no".try_into().unwrap(),
                    }
                };
                if self.submit(who, op, allowed, STEP).is_some() {
                    self.model.rels[r].status = if accept { St::Accepted } else { St::Rejected };
                }
            }
            Op::Terminate {
                rel,
                by_provider,
                signer,
            } => {
                let Some(r) = Self::idx(rel, m.rels.len()) else {
                    return;
                };
                let natural = if by_provider {
                    m.rels[r].provider
                } else {
                    m.rels[r].patient
                };
                let who = self.who(natural, signer);
                let allowed = (who == m.rels[r].patient || who == m.rels[r].provider)
                    && matches!(m.rels[r].status, St::Pending | St::Accepted);
                let op = AccessOp::TerminateRelationship {
                    relationship: m.rels[r].id,
                    reason: "end".try_into().unwrap(),
                };
                if self.submit(who, op, allowed, STEP).is_some() {
                    self.model.rels[r].status = St::Terminated;
                    // Ending a relationship revokes its live grants; expired ones stay as they
                    // were (the relationship's status denies them anyway).
                    let now = self.net.now;
                    for g in self.model.grants.iter_mut().filter(|g| g.rel == r) {
                        if g.period.end > now {
                            g.revoked = true;
                        }
                    }
                }
            }
            Op::AddPointer {
                rel,
                category,
                replaces,
                signer,
            } => {
                let Some(r) = Self::idx(rel, m.rels.len()) else {
                    return;
                };
                let who = self.who(m.rels[r].provider, signer);
                let category = CATEGORIES[category as usize];
                let replaced = replaces.and_then(|i| Self::idx(i, m.ptrs.len()));
                let allowed = who == m.rels[r].provider
                    && matches!(m.rels[r].status, St::Pending | St::Accepted)
                    && replaced.is_none_or(|o| {
                        let old = &m.ptrs[o];
                        old.rel == r && !old.superseded && old.category == category
                    });
                let op = AccessOp::AddPointer {
                    relationship: m.rels[r].id,
                    record: record(m.ptrs.len() as u8, category),
                    replaces: replaced.map(|o| m.ptrs[o].id),
                };
                if let Some(tx) = self.submit(who, op, allowed, STEP) {
                    let id = PointerId::of_tx(tx);
                    let origin = match replaced {
                        Some(o) => {
                            self.model.ptrs[o].superseded = true;
                            self.model.ptrs[o].origin
                        }
                        None => id,
                    };
                    self.model.ptrs.push(MPtr {
                        id,
                        rel: r,
                        category,
                        origin,
                        superseded: false,
                    });
                }
            }
            Op::Grant {
                rel,
                delegation,
                signer,
                viewer,
                to_group,
                ref scope,
                actions: a,
                purposes: p,
                start,
                days,
                ref deny,
            } => {
                let Some(r) = Self::idx(rel, m.rels.len()) else {
                    return;
                };
                let patient = m.rels[r].patient;
                let del = delegation.and_then(|d| Self::idx(d, m.dels.len()));
                let natural = del.map_or(patient, |d| m.dels[d].delegate);
                let who = self.who(natural, signer);
                let mviewer = if to_group {
                    match Self::idx(viewer, m.groups.len()) {
                        Some(g) => MViewer::Group(g),
                        None => return,
                    }
                } else {
                    MViewer::Account(viewer as usize % ACTORS)
                };
                let start = [t - DAY, t, t + 2 * DAY][start as usize];
                let period = Period::lasting(start, [DAY, 10 * DAY, 40 * DAY][days as usize]);
                let (acts, purps) = (actions(a), purposes(p));
                let scoped = m.scope(scope, patient, Some(r));
                let mut allowed = match del {
                    None => who == patient,
                    Some(d) => {
                        let d = &m.dels[d];
                        d.delegate == who
                            && d.patient == patient
                            && !d.revoked
                            && d.period.contains(t)
                    }
                };
                allowed &= m.rels[r].status == St::Accepted;
                allowed &= match mviewer {
                    MViewer::Account(v) => ROLES[v].is_some(),
                    MViewer::Group(g) => m.groups[g].patient == patient,
                };
                allowed &=
                    !acts.is_empty() && !purps.is_empty() && period.end > t && scoped.is_some();
                if let (Some(d), Some((ms, _))) = (del, &scoped) {
                    let d = &m.dels[d];
                    allowed &= d.rel.is_none_or(|dr| dr == r)
                        && acts.is_subset(&d.actions)
                        && purps.is_subset(&d.purposes)
                        && d.period.covers(&period)
                        && match (&d.scope, ms) {
                            (MScope::All, _) => true,
                            (MScope::Only(..), MScope::All) => false,
                            (MScope::Only(dp, dc), MScope::Only(gp, gc)) => {
                                gc.is_subset(dc)
                                    && gp.iter().all(|o| {
                                        dp.contains(o) || dc.contains(m.ptr(o).unwrap().category)
                                    })
                            }
                        };
                }
                let mdeny = deny.map(|(c, p, e)| MDeny {
                    categories: categories(c),
                    purposes: purposes(p),
                    except: e.map(purposes),
                });
                let viewer_id = match mviewer {
                    MViewer::Account(v) => Viewer::Account(self.keys[v].account()),
                    MViewer::Group(g) => Viewer::Group(m.groups[g].id),
                };
                let mut terms = GrantTerms::new(
                    m.rels[r].id,
                    viewer_id,
                    scoped.as_ref().map_or(Scope::All, |s| s.1.clone()),
                    acts,
                    purps,
                    period,
                );
                if let (ScopeSel::Only(ptrs, cats, foreign), None) = (scope, &scoped) {
                    // Submit the refused scope as generated.
                    terms.scope = Scope::Only {
                        pointers: m
                            .pick_pointers(ptrs, *foreign, patient, Some(r))
                            .try_into()
                            .unwrap(),
                        categories: categories(*cats),
                    };
                }
                if let Some(d) = &mdeny {
                    terms = terms.with_provision(
                        Provision::new(ProvisionKind::Deny)
                            .with_categories(d.categories)
                            .with_purposes(d.purposes),
                    );
                    if let Some(e) = d.except {
                        terms = terms.with_provision(
                            Provision::new(ProvisionKind::Permit)
                                .under(0)
                                .with_purposes(e),
                        );
                    }
                }
                let under = del.map(|d| m.dels[d].id);
                let scope_model = scoped.map(|s| s.0);
                if let Some(tx) = self.submit(who, AccessOp::Grant { terms, under }, allowed, STEP)
                {
                    self.model.grants.push(MGrant {
                        id: GrantId::of_tx(tx),
                        rel: r,
                        viewer: mviewer,
                        scope: scope_model.unwrap(),
                        actions: acts,
                        purposes: purps,
                        period,
                        deny: mdeny,
                        under: del,
                        revoked: false,
                    });
                }
            }
            Op::Revoke { grant, signer } => {
                let Some(g) = Self::idx(grant, m.grants.len()) else {
                    return;
                };
                let gr = &m.grants[g];
                let patient = m.rels[gr.rel].patient;
                let natural = gr.under.map_or(patient, |d| m.dels[d].delegate);
                let who = self.who(natural, signer);
                let allowed = !gr.revoked
                    && (who == patient || gr.under.is_some_and(|d| m.dels[d].delegate == who));
                let op = AccessOp::RevokeGrant {
                    grant: gr.id,
                    reason: "r".try_into().unwrap(),
                };
                if self.submit(who, op, allowed, STEP).is_some() {
                    self.model.grants[g].revoked = true;
                }
            }
            Op::CreateGroup { patient } => {
                let who = patient as usize;
                let op = AccessOp::CreateGroup {
                    label: "g".try_into().unwrap(),
                };
                if let Some(tx) = self.submit(who, op, true, STEP) {
                    self.model.groups.push(MGroup {
                        id: GroupId::of_tx(tx),
                        patient: who,
                        members: BTreeSet::new(),
                    });
                }
            }
            Op::Member {
                group,
                member,
                add,
                signer,
            } => {
                let Some(g) = Self::idx(group, m.groups.len()) else {
                    return;
                };
                let who = self.who(m.groups[g].patient, signer);
                let member = member as usize % ACTORS;
                let is = m.groups[g].members.contains(&member);
                let allowed = who == m.groups[g].patient
                    && if add {
                        ROLES[member].is_some() && !is
                    } else {
                        is
                    };
                let (group_id, account) = (m.groups[g].id, self.keys[member].account());
                let op = if add {
                    AccessOp::AddGroupMember {
                        group: group_id,
                        member: account,
                    }
                } else {
                    AccessOp::RemoveGroupMember {
                        group: group_id,
                        member: account,
                    }
                };
                if self.submit(who, op, allowed, STEP).is_some() {
                    if add {
                        self.model.groups[g].members.insert(member);
                    } else {
                        self.model.groups[g].members.remove(&member);
                    }
                }
            }
            Op::Delegate {
                patient,
                delegate,
                rel,
                ref scope,
                actions: a,
                purposes: p,
                days,
            } => {
                let who = patient as usize;
                let delegate = delegate as usize % ACTORS;
                let r = rel.and_then(|r| Self::idx(r, m.rels.len()));
                let period = Period::lasting(t - DAY, [2 * DAY, 15 * DAY, 60 * DAY][days as usize]);
                let (acts, purps) = (actions(a), purposes(p));
                let scoped = m.scope(scope, who, r);
                let allowed = ROLES[delegate].is_some()
                    && delegate != who
                    && r.is_none_or(|r| m.rels[r].patient == who)
                    && !acts.is_empty()
                    && !purps.is_empty()
                    && scoped.is_some();
                let wire_scope = match (&scoped, scope) {
                    (Some(s), _) => s.1.clone(),
                    (None, ScopeSel::Only(ptrs, cats, foreign)) => Scope::Only {
                        pointers: m.pick_pointers(ptrs, *foreign, who, r).try_into().unwrap(),
                        categories: categories(*cats),
                    },
                    (None, ScopeSel::All) => Scope::All,
                };
                let terms = DelegationTerms {
                    relationship: r.map(|r| m.rels[r].id),
                    scope: wire_scope,
                    actions: acts,
                    purposes: purps,
                    period,
                };
                let op = AccessOp::Delegate {
                    delegate: self.keys[delegate].account(),
                    terms,
                };
                if let Some(tx) = self.submit(who, op, allowed, STEP) {
                    self.model.dels.push(MDel {
                        id: DelegationId::of_tx(tx),
                        patient: who,
                        delegate,
                        rel: r,
                        scope: scoped.unwrap().0,
                        actions: acts,
                        purposes: purps,
                        period,
                        revoked: false,
                    });
                }
            }
            Op::RevokeDelegation {
                delegation,
                by_delegate,
                signer,
            } => {
                let Some(d) = Self::idx(delegation, m.dels.len()) else {
                    return;
                };
                let dl = &m.dels[d];
                let who = self.who(if by_delegate { dl.delegate } else { dl.patient }, signer);
                let allowed = !dl.revoked && (who == dl.patient || who == dl.delegate);
                let op = AccessOp::RevokeDelegation {
                    delegation: dl.id,
                    reason: "r".try_into().unwrap(),
                };
                if self.submit(who, op, allowed, STEP).is_some() {
                    self.model.dels[d].revoked = true;
                    for g in self.model.grants.iter_mut().filter(|g| g.under == Some(d)) {
                        g.revoked = true;
                    }
                }
            }
            Op::OpenBreakGlass {
                provider,
                patient,
                secs,
            } => {
                let (who, pa) = (provider as usize, patient as usize);
                let secs = [
                    3600,
                    4 * 3600,
                    MAX_BREAK_GLASS_SECS,
                    MAX_BREAK_GLASS_SECS + 1,
                ][secs as usize];
                let open = m
                    .sessions
                    .iter()
                    .rev()
                    .find(|s| s.patient == pa && s.provider == who)
                    .is_some_and(|s| Model::session_open(s, t));
                let allowed = who == 1
                    && ROLES[pa] == Some(Role::Patient)
                    && secs <= MAX_BREAK_GLASS_SECS
                    && !open;
                let op = AccessOp::OpenBreakGlass {
                    patient: self.keys[pa].account(),
                    reason: "emergency".try_into().unwrap(),
                    duration_secs: secs,
                };
                if let Some(tx) = self.submit(who, op, allowed, STEP) {
                    self.model.sessions.push(MSession {
                        id: BreakGlassId::of_tx(tx),
                        patient: pa,
                        provider: who,
                        opened: t,
                        expires: t + secs,
                        closed: false,
                    });
                }
            }
            Op::CloseBreakGlass { session, signer } => {
                let Some(s) = Self::idx(session, m.sessions.len()) else {
                    return;
                };
                let who = self.who(m.sessions[s].provider, signer);
                let allowed = who == m.sessions[s].provider && !m.sessions[s].closed;
                let op = AccessOp::CloseBreakGlass {
                    session: m.sessions[s].id,
                };
                if self.submit(who, op, allowed, STEP).is_some() {
                    self.model.sessions[s].closed = true;
                }
                // The patient reviews it (never refused by the model's rules here).
                let patient = self.model.sessions[s].patient;
                let reviewed = self
                    .net
                    .chain
                    .access()
                    .break_glass_session(&self.model.sessions[s].id)
                    .unwrap()
                    .review
                    .is_some();
                let op = AccessOp::ReviewBreakGlass {
                    session: self.model.sessions[s].id,
                    outcome: ReviewOutcome::Acknowledged,
                    note: None,
                };
                self.submit(patient, op, !reviewed, STEP);
            }
            Op::Receipt {
                viewer,
                ptr,
                wrong_patient,
                action,
                purpose,
                basis,
            } => {
                let Some(pi) = Self::idx(ptr, m.ptrs.len()) else {
                    return;
                };
                let viewer = viewer as usize % ACTORS;
                let p = &m.ptrs[pi];
                let owner = m.rels[p.rel].patient;
                let patient = if wrong_patient {
                    if owner == 6 {
                        7
                    } else {
                        6
                    }
                } else {
                    owner
                };
                let (action, purpose) = (Action::ALL[action as usize], PURPOSES[purpose as usize]);
                // The basis: what the model would name, or another one.
                let mut bases = vec![Basis::Patient, Basis::Custodian];
                bases.extend(m.grants.iter().map(|g| Basis::Grant(g.id)));
                bases.extend(m.sessions.iter().map(|s| Basis::BreakGlass(s.id)));
                let basis = match m.decide(viewer, patient, &p.id, action, purpose, t) {
                    Some(b) if basis % 2 == 0 => b,
                    _ => bases[basis as usize % bases.len()],
                };
                let allowed = m.receipt_ok(viewer, patient, &p.id, (action, purpose), basis, t);
                let op = AccessOp::RecordAccess {
                    patient: self.keys[patient].account(),
                    pointer: p.id,
                    action,
                    purpose,
                    basis,
                };
                self.submit(viewer, op, allowed, STEP);
            }
        }
    }

    /// Compares one decision of the ledger with the model's.
    fn check(
        &self,
        viewer: usize,
        p: &MPtr,
        action: Action,
        purpose: PurposeOfUse,
        t: u64,
    ) -> Decision {
        let access = self.net.chain.access();
        let owner = self.model.rels[p.rel].patient;
        let req = AccessRequest {
            viewer: self.keys[viewer].account(),
            patient: self.keys[owner].account(),
            pointer: p.id,
            action,
            purpose,
            time: t,
        };
        let d = access.decide(&req);
        let expected = self.model.decide(viewer, owner, &p.id, action, purpose, t);
        assert_eq!(
            d.basis(),
            expected,
            "viewer {viewer} pointer {} {action} {purpose} at {t} (now {}): ledger {d:?}",
            p.id,
            self.net.now
        );
        if let Some(b) = d.basis() {
            assert_eq!(access.check_basis(&req, b, u64::MAX), Ok(()));
        }
        d
    }

    /// Compares the ledger's decisions with the model's over the grid (every viewer, pointer,
    /// action, purpose, at a few times from now on), and at the boundaries of every grant's and
    /// session's period for the viewers and records they concern; records the decisions at
    /// the block's own time for the "as of" check.
    fn compare(&mut self) {
        let tip = self.net.chain.tip_header();
        let (height, tip_time) = (tip.height, tip.timestamp);
        let now = self.net.now;
        let mut at_tip = Vec::new();
        for p in &self.model.ptrs {
            for viewer in 1..ACTORS {
                for action in Action::ALL {
                    for purpose in PURPOSES {
                        for t in [
                            tip_time,
                            now + 1,
                            now + 3 * DAY,
                            now + 15 * DAY,
                            now + 45 * DAY,
                        ] {
                            let d = self.check(viewer, p, action, purpose, t);
                            if t == tip_time {
                                let access = self.net.chain.access();
                                let req = AccessRequest {
                                    viewer: self.keys[viewer].account(),
                                    patient: self.keys[self.model.rels[p.rel].patient].account(),
                                    pointer: p.id,
                                    action,
                                    purpose,
                                    time: t,
                                };
                                assert_eq!(access.decide_as_of(&req, height), d, "as of the tip");
                                at_tip.push((viewer, p.id, action, purpose, d));
                            }
                        }
                    }
                }
            }
        }
        // Period boundaries, where off-by-one errors live.
        let mut targeted: Vec<(usize, usize, Vec<u64>)> = Vec::new();
        for g in &self.model.grants {
            let viewers: Vec<usize> = match g.viewer {
                MViewer::Account(a) => vec![a],
                MViewer::Group(gr) => self.model.groups[gr].members.iter().copied().collect(),
            };
            let (s, e) = (g.period.start, g.period.end);
            for v in viewers {
                targeted.push((v, g.rel, vec![s.saturating_sub(1), s, e - 1, e]));
            }
        }
        for s in &self.model.sessions {
            for (r, rel) in self.model.rels.iter().enumerate() {
                if rel.patient == s.patient {
                    targeted.push((
                        s.provider,
                        r,
                        vec![s.opened - 1, s.opened, s.expires - 1, s.expires],
                    ));
                }
            }
        }
        for (viewer, rel, times) in targeted {
            for p in self.model.ptrs.iter().filter(|p| p.rel == rel) {
                for action in Action::ALL {
                    for purpose in PURPOSES {
                        for &t in &times {
                            self.check(viewer, p, action, purpose, t);
                        }
                    }
                }
            }
        }
        self.history.push((height, tip_time, at_tip));
    }

    fn check_history(&self) {
        let access = self.net.chain.access();
        for (height, time, decisions) in &self.history {
            for (viewer, pointer, action, purpose, d) in decisions {
                let owner = access.pointer(pointer).unwrap().patient;
                let req = AccessRequest {
                    viewer: self.keys[*viewer].account(),
                    patient: owner,
                    pointer: *pointer,
                    action: *action,
                    purpose: *purpose,
                    time: *time,
                };
                assert_eq!(
                    access.decide_as_of(&req, *height),
                    *d,
                    "as of height {height}"
                );
            }
        }
        assert_eq!(
            self.net.chain.replay_state().unwrap().root(),
            self.net.chain.state().root()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut run = Run::with_world();
        for op in &ops {
            run.apply(op);
            run.compare();
        }
        run.check_history();
        // `MODEL_STATS=1 cargo test --test access_model -- --nocapture` shows what the cases reach.
        if std::env::var("MODEL_STATS").is_ok() {
            let permits: usize = run.history.iter().map(|h| h.2.iter().filter(|d| matches!(d.4, Decision::Permit(Basis::Grant(_)) | Decision::Permit(Basis::BreakGlass(_)))).count()).sum();
            eprintln!("ops {} height {} rels {} ptrs {} grants {} groups {} dels {} sessions {} third-party permits {}",
                ops.len(), run.net.chain.height(), run.model.rels.len(), run.model.ptrs.len(), run.model.grants.len(), run.model.groups.len(), run.model.dels.len(), run.model.sessions.len(), permits);
        }
    }
}

/// A fixed sequence that exercises every kind of operation, so the model check never depends
/// on the random generator reaching them.
#[test]
fn a_fixed_sequence_agrees_with_the_model() {
    let ops = vec![
        create_rel(1, 6),
        create_rel(2, 6),
        add_pointer(0, 0),
        add_pointer(0, 2),
        add_pointer(1, 1),
        answer(0, true),
        Op::Answer {
            rel: 1,
            accept: true,
            signer: Some(4),
        },
        answer(1, true),
        Op::CreateGroup { patient: 6 },
        Op::Member {
            group: 0,
            member: 4,
            add: true,
            signer: None,
        },
        Op::Grant {
            rel: 0,
            delegation: None,
            signer: None,
            viewer: 0,
            to_group: true,
            scope: ScopeSel::All,
            actions: 1,
            purposes: 0b11,
            start: 1,
            days: 1,
            deny: Some((0b100, 0, Some(0b1))),
        },
        Op::Delegate {
            patient: 6,
            delegate: 5,
            rel: Some(0),
            scope: ScopeSel::Only(vec![], 0b1, false),
            actions: 1,
            purposes: 1,
            days: 1,
        },
        Op::Grant {
            rel: 0,
            delegation: Some(0),
            signer: None,
            viewer: 2,
            to_group: false,
            scope: ScopeSel::Only(vec![0], 0, false),
            actions: 1,
            purposes: 1,
            start: 1,
            days: 1,
            deny: None,
        },
        Op::Grant {
            rel: 0,
            delegation: Some(0),
            signer: None,
            viewer: 2,
            to_group: false,
            scope: ScopeSel::All,
            actions: 1,
            purposes: 1,
            start: 1,
            days: 1,
            deny: None,
        },
        Op::Grant {
            rel: 0,
            delegation: Some(0),
            signer: None,
            viewer: 2,
            to_group: false,
            scope: ScopeSel::Only(vec![0], 0, false),
            actions: 1,
            purposes: 0b11,
            start: 1,
            days: 1,
            deny: None,
        },
        Op::Grant {
            rel: 0,
            delegation: Some(0),
            signer: None,
            viewer: 2,
            to_group: false,
            scope: ScopeSel::Only(vec![0], 0, false),
            actions: 3,
            purposes: 1,
            start: 1,
            days: 1,
            deny: None,
        },
        Op::Grant {
            rel: 0,
            delegation: Some(0),
            signer: None,
            viewer: 2,
            to_group: false,
            scope: ScopeSel::Only(vec![0], 0, false),
            actions: 1,
            purposes: 1,
            start: 1,
            days: 2,
            deny: None,
        },
        Op::Receipt {
            viewer: 4,
            ptr: 0,
            wrong_patient: false,
            action: 0,
            purpose: 0,
            basis: 0,
        },
        Op::Receipt {
            viewer: 4,
            ptr: 1,
            wrong_patient: false,
            action: 0,
            purpose: 1,
            basis: 0,
        },
        Op::OpenBreakGlass {
            provider: 1,
            patient: 6,
            secs: 0,
        },
        Op::OpenBreakGlass {
            provider: 2,
            patient: 6,
            secs: 0,
        },
        Op::Receipt {
            viewer: 1,
            ptr: 2,
            wrong_patient: false,
            action: 0,
            purpose: 2,
            basis: 0,
        },
        Op::Member {
            group: 0,
            member: 4,
            add: false,
            signer: None,
        },
        Op::RevokeDelegation {
            delegation: 0,
            by_delegate: false,
            signer: None,
        },
        Op::Advance(2 * DAY),
        Op::CloseBreakGlass {
            session: 0,
            signer: None,
        },
        Op::AddPointer {
            rel: 0,
            category: 0,
            replaces: Some(0),
            signer: None,
        },
        Op::Revoke {
            grant: 0,
            signer: None,
        },
        Op::Terminate {
            rel: 1,
            by_provider: true,
            signer: None,
        },
        Op::Advance(20 * DAY),
    ];
    let mut run = Run::new();
    for op in &ops {
        run.apply(op);
        run.compare();
    }
    run.check_history();
    assert_eq!(run.model.grants.len(), 2);
    assert!(run.model.grants.iter().all(|g| g.revoked));
}
