//! Queries over the access state: who can read a record (now, or as of a past height), what a
//! revocation would take away (a dry run: nothing changes), and the [`Chain`] conveniences that
//! fill in heights and times from the headers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::decision::NOW;
use super::AccessRequest;
use super::MedRec;
use super::{
    AccessState, Action, ActionSet, Basis, DelegationId, GrantId, GrantProof, PointerId,
    PurposeSet, Viewer, GRANTS_TABLE, REVOCATIONS_TABLE,
};
use crate::chain::Chain;
use crate::consensus::Consensus;
use crate::hash::AccountId;
use crate::purpose::PurposeOfUse;
use crate::state::entry_key;

/// Someone who may use a record, and on what basis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reader {
    /// The viewer.
    pub viewer: AccountId,
    /// What permits it.
    pub basis: Basis,
    /// The actions it may perform (for at least one of `purposes`).
    pub actions: ActionSet,
    /// The purposes it may use the record for (for at least one of `actions`).
    pub purposes: PurposeSet,
}

/// A permission a revocation would take away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Loss {
    /// The viewer.
    pub viewer: AccountId,
    /// The record.
    pub pointer: PointerId,
    /// The action.
    pub action: Action,
    /// The purpose.
    pub purpose: PurposeOfUse,
}

impl AccessState {
    /// Who may use `pointer` at time `at` under the current state, and on what basis.
    pub fn who_can_read(&self, pointer: &PointerId, at: u64) -> Vec<Reader> {
        self.readers(pointer, NOW, at)
    }

    /// Who could use `pointer` in the state after block `height`, at time `time` (the header's
    /// timestamp).
    pub fn who_could_read(&self, pointer: &PointerId, height: u64, time: u64) -> Vec<Reader> {
        self.readers(pointer, height, time)
    }

    fn readers(&self, pointer: &PointerId, height: u64, time: u64) -> Vec<Reader> {
        let Some(p) = self
            .pointers
            .get(pointer)
            .filter(|p| p.added.height <= height)
        else {
            return Vec::new();
        };
        let mut candidates = BTreeSet::from([p.patient, p.provider]);
        for grant in self.grants_of(&p.relationship) {
            if grant.created.height > height {
                continue;
            }
            match grant.terms.viewer {
                Viewer::Account(a) => {
                    candidates.insert(a);
                }
                Viewer::Group(g) => candidates.extend(self.members_of(&g, height)),
            }
        }
        for session in self.break_glass_sessions(&p.patient) {
            if session.opened.height <= height {
                candidates.insert(session.provider);
            }
        }
        let mut out: BTreeMap<(AccountId, Basis), (ActionSet, PurposeSet)> = BTreeMap::new();
        for viewer in candidates {
            for action in Action::ALL {
                for purpose in PurposeOfUse::ALL {
                    let req = AccessRequest {
                        viewer,
                        patient: p.patient,
                        pointer: *pointer,
                        action,
                        purpose,
                        time,
                    };
                    if let Some(basis) = self.evaluate(&req, height, &[]).basis() {
                        let e = out.entry((viewer, basis)).or_default();
                        e.0 = e.0.with(action);
                        e.1 = e.1.with(purpose);
                    }
                }
            }
        }
        out.into_iter()
            .map(|((viewer, basis), (actions, purposes))| Reader {
                viewer,
                basis,
                actions,
                purposes,
            })
            .collect()
    }

    /// What revoking `grant` at time `at` would take away: every (viewer, record, action,
    /// purpose) permitted now and denied without the grant. Nothing changes.
    pub fn revocation_impact(&self, grant: &GrantId, at: u64) -> Vec<Loss> {
        if self.revocations.get(grant).is_some() {
            return Vec::new();
        }
        self.impact(&[*grant], at)
    }

    /// What revoking `delegation` at time `at` would take away, with the grants made under it.
    pub fn delegation_revocation_impact(&self, delegation: &DelegationId, at: u64) -> Vec<Loss> {
        let grants: Vec<GrantId> = self
            .grants_under(delegation)
            .into_iter()
            .filter(|g| self.revocations.get(g).is_none())
            .collect();
        self.impact(&grants, at)
    }

    fn impact(&self, excluded: &[GrantId], at: u64) -> Vec<Loss> {
        let mut losses = BTreeSet::new();
        for id in excluded {
            let Some(grant) = self.grants.get(id) else {
                continue;
            };
            let viewers = match grant.terms.viewer {
                Viewer::Account(a) => vec![a],
                Viewer::Group(g) => self.members_of(&g, NOW),
            };
            for pointer in self.pointers_of(&grant.terms.relationship) {
                for &viewer in &viewers {
                    for action in Action::ALL {
                        for purpose in PurposeOfUse::ALL {
                            let req = AccessRequest {
                                viewer,
                                patient: grant.patient,
                                pointer: pointer.id,
                                action,
                                purpose,
                                time: at,
                            };
                            if self.evaluate(&req, NOW, &[]).is_permit()
                                && !self.evaluate(&req, NOW, excluded).is_permit()
                            {
                                losses.insert(Loss {
                                    viewer,
                                    pointer: pointer.id,
                                    action,
                                    purpose,
                                });
                            }
                        }
                    }
                }
            }
        }
        losses.into_iter().collect()
    }
}

/// Access-control conveniences: the same queries as [`AccessState`], with "as of" heights
/// resolved to the main chain's headers.
impl<C: Consensus> Chain<C, MedRec> {
    /// The access-control state at the tip.
    pub fn access(&self) -> &AccessState {
        self.state().access()
    }

    /// [`AccessState::decide`] at the tip.
    pub fn decide(&self, req: &AccessRequest) -> super::Decision {
        self.access().decide(req)
    }

    /// [`AccessState::decide_as_of`] main-chain block `height` (`None` if there is no such
    /// block). The time is `req.time`; [`time_at`](crate::chain::Chain::time_at) gives the
    /// block's.
    pub fn decide_as_of(&self, req: &AccessRequest, height: u64) -> Option<super::Decision> {
        self.header_at(height)?;
        Some(self.access().decide_as_of(req, height))
    }

    /// [`AccessState::who_can_read`] at the tip.
    pub fn who_can_read(&self, pointer: &PointerId, at: u64) -> Vec<Reader> {
        self.access().who_can_read(pointer, at)
    }

    /// Who could use `pointer` as of main-chain block `height`, at that block's time.
    pub fn who_could_read_as_of(&self, pointer: &PointerId, height: u64) -> Option<Vec<Reader>> {
        let time = self.header_at(height)?.timestamp;
        Some(self.access().who_could_read(pointer, height, time))
    }

    /// A proof of `grant` and of its revocation status as of main-chain block `height`, to be
    /// checked against that header's state root (`None` if there is no such block or the grant
    /// did not exist then).
    pub fn prove_grant(&self, grant: &GrantId, height: u64) -> Option<GrantProof> {
        let record = self
            .access()
            .grant(grant)
            .filter(|g| g.created.height <= height)?;
        let tree = self.state_tree_at(height)?;
        let revocation = self
            .access()
            .revocation(grant)
            .filter(|r| r.at.height <= height)
            .cloned();
        Some(GrantProof {
            grant: record.clone(),
            grant_proof: tree.prove(&entry_key(GRANTS_TABLE, grant)),
            revocation,
            revocation_proof: tree.prove(&entry_key(REVOCATIONS_TABLE, grant)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{reason, Cast};
    use crate::access::{AccessOp, GrantTerms, GroupId, Scope};

    #[test]
    fn who_can_read_now_and_as_of() {
        let mut c = Cast::new();
        let (rel, lab, mh) = c.with_records();
        let h0 = c.h.height;
        let g = c.h.grant(
            &c.patient,
            GrantTerms {
                scope: Scope::pointers(&[lab]),
                ..c.treat_terms(rel, 30)
            },
            None,
        );
        let h1 = c.h.height;
        let readers = c.h.access().who_can_read(&lab, c.h.time);
        let viewers: Vec<_> = readers.iter().map(|r| (r.viewer, r.basis)).collect();
        assert!(viewers.contains(&(c.patient.account(), Basis::Patient)));
        assert!(viewers.contains(&(c.hospital.account(), Basis::Custodian)));
        assert!(viewers.contains(&(c.specialist.account(), Basis::Grant(g))));
        assert_eq!(readers.len(), 3);
        let s = readers
            .iter()
            .find(|r| r.viewer == c.specialist.account())
            .unwrap();
        assert_eq!(s.purposes, PurposeSet::of(&[PurposeOfUse::Treatment]));
        assert_eq!(s.actions, ActionSet::of(&[Action::Read]));
        assert_eq!(c.h.access().who_can_read(&mh, c.h.time).len(), 2);
        c.h.ok(
            &c.patient,
            AccessOp::RevokeGrant {
                grant: g,
                reason: reason("done"),
            },
        );
        let t1 = c.h.time - 10;
        assert_eq!(c.h.access().who_can_read(&lab, c.h.time).len(), 2);
        assert_eq!(c.h.access().who_could_read(&lab, h1, t1).len(), 3);
        assert_eq!(c.h.access().who_could_read(&lab, h0, t1).len(), 2);
    }

    #[test]
    fn revocation_dry_run_changes_nothing() {
        let mut c = Cast::new();
        let (rel, lab, mh) = c.with_records();
        let op = AccessOp::CreateGroup {
            label: "team".try_into().unwrap(),
        };
        let group = GroupId::of_tx(c.h.next_tx_id(&c.patient, &op));
        c.h.ok(&c.patient, op);
        c.h.ok(
            &c.patient,
            AccessOp::AddGroupMember {
                group,
                member: c.researcher.account(),
            },
        );
        let g = c.h.grant(
            &c.patient,
            GrantTerms {
                viewer: Viewer::Group(group),
                ..c.treat_terms(rel, 30)
            },
            None,
        );
        // The specialist also holds its own grant on the lab record: it loses nothing there.
        c.h.grant(
            &c.patient,
            GrantTerms {
                scope: Scope::pointers(&[lab]),
                ..c.treat_terms(rel, 30)
            },
            None,
        );
        c.h.ok(
            &c.patient,
            AccessOp::AddGroupMember {
                group,
                member: c.specialist.account(),
            },
        );
        let root = c.h.root();
        let losses = c.h.access().revocation_impact(&g, c.h.time);
        assert_eq!(c.h.root(), root);
        let expected = vec![
            (c.researcher.account(), lab),
            (c.researcher.account(), mh),
            (c.specialist.account(), mh),
        ];
        let mut got: Vec<_> = losses.iter().map(|l| (l.viewer, l.pointer)).collect();
        got.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected);
        assert!(losses
            .iter()
            .all(|l| l.action == Action::Read && l.purpose == PurposeOfUse::Treatment));
    }
}
