//! Groups of viewers a patient defines ("my care team"), to grant access to all members at
//! once. Membership keeps its history, so "as of" queries see who was a member at a height.

use serde::{Deserialize, Serialize};

use super::{AccessError, AccessEvent, AccessState, Exec, GroupId, Label, Role, Stamp, Viewer};
use crate::hash::AccountId;

/// The most groups a patient creates.
pub const MAX_GROUPS_PER_PATIENT: u32 = 32;
/// The most distinct accounts ever added to one group.
pub const MAX_GROUP_MEMBERS: u32 = 256;
/// The most times one account joins the same group.
pub const MAX_MEMBERSHIP_SPELLS: usize = 16;

/// A patient's group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Its id.
    pub id: GroupId,
    /// The patient.
    pub patient: AccountId,
    /// Its label.
    pub label: Label,
    /// When it was created.
    pub created: Stamp,
    /// How many distinct accounts were ever added.
    pub members: u32,
}

/// One account's membership of one group: the spells `[joined, left)` in block heights.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Heights at which the account joined and (if it did) left, oldest first.
    pub spells: Vec<(u64, Option<u64>)>,
}

impl Membership {
    /// Whether the account is a member now.
    #[inline]
    pub fn is_member(&self) -> bool {
        self.spells.last().is_some_and(|s| s.1.is_none())
    }

    /// Whether the account was a member in the state after block `height`.
    pub fn is_member_at(&self, height: u64) -> bool {
        self.spells
            .iter()
            .any(|&(from, to)| from <= height && to.is_none_or(|to| to > height))
    }
}

impl Exec<'_> {
    pub(super) fn group(&self, id: GroupId) -> Result<Group, AccessError> {
        self.s
            .groups
            .get(&id)
            .cloned()
            .ok_or(AccessError::UnknownGroup(id))
    }

    fn owned_group(&self, id: GroupId) -> Result<Group, AccessError> {
        let group = self.group(id)?;
        let actor = self.actor();
        if group.patient != actor {
            return Err(AccessError::NotThePatient(actor));
        }
        Ok(group)
    }

    pub(super) fn create_group(&mut self, label: &Label) -> Result<(), AccessError> {
        let patient = self.actor();
        self.require_role(patient, Role::Patient)?;
        let mut c = self.s.counters(&patient);
        if c.groups >= MAX_GROUPS_PER_PATIENT {
            return Err(AccessError::LimitReached {
                what: "groups per patient",
                max: MAX_GROUPS_PER_PATIENT.into(),
            });
        }
        c.groups += 1;
        self.s.counters.insert(patient, c);
        let id = GroupId::of_tx(self.cx.tx_id);
        self.s.groups.insert(
            id,
            Group {
                id,
                patient,
                label: label.clone(),
                created: self.stamp(),
                members: 0,
            },
        );
        self.emit(
            Some(patient),
            AccessEvent::GroupCreated { patient, group: id },
        );
        Ok(())
    }

    pub(super) fn add_member(&mut self, id: GroupId, member: AccountId) -> Result<(), AccessError> {
        let mut group = self.owned_group(id)?;
        self.registered(member)?;
        let mut m = self
            .s
            .memberships
            .get(&(id, member))
            .cloned()
            .unwrap_or_default();
        if m.is_member() {
            return Err(AccessError::AlreadyMember(member));
        }
        if m.spells.len() >= MAX_MEMBERSHIP_SPELLS {
            return Err(AccessError::LimitReached {
                what: "times an account joins a group",
                max: MAX_MEMBERSHIP_SPELLS as u64,
            });
        }
        if m.spells.is_empty() {
            if group.members >= MAX_GROUP_MEMBERS {
                return Err(AccessError::LimitReached {
                    what: "members per group",
                    max: MAX_GROUP_MEMBERS.into(),
                });
            }
            self.s.group_members.insert((id, group.members), member);
            group.members += 1;
            let patient = group.patient;
            self.s.groups.insert(id, group.clone());
            self.s
                .viewer_index
                .update((patient, Viewer::Account(member)), Default::default, |i| {
                    i.groups.push(id)
                });
        }
        m.spells.push((self.cx.height, None));
        self.s.memberships.insert((id, member), m);
        self.emit(
            Some(group.patient),
            AccessEvent::GroupMemberAdded {
                patient: group.patient,
                group: id,
                member,
            },
        );
        Ok(())
    }

    pub(super) fn remove_member(
        &mut self,
        id: GroupId,
        member: AccountId,
    ) -> Result<(), AccessError> {
        let group = self.owned_group(id)?;
        let mut m = match self.s.memberships.get(&(id, member)) {
            Some(m) if m.is_member() => m.clone(),
            _ => return Err(AccessError::NotMember(member)),
        };
        if let Some(last) = m.spells.last_mut() {
            last.1 = Some(self.cx.height);
        }
        self.s.memberships.insert((id, member), m);
        self.emit(
            Some(group.patient),
            AccessEvent::GroupMemberRemoved {
                patient: group.patient,
                group: id,
                member,
            },
        );
        Ok(())
    }
}

impl AccessState {
    /// A group.
    pub fn group(&self, id: &GroupId) -> Option<&Group> {
        self.groups.get(id)
    }

    /// The members of a group in the state after block `height` (`u64::MAX`: now).
    pub fn members_of(&self, id: &GroupId, height: u64) -> Vec<AccountId> {
        let n = self.groups.get(id).map_or(0, |g| g.members);
        (0..n)
            .filter_map(|i| self.group_members.get(&(*id, i)))
            .filter(|m| {
                self.memberships
                    .get(&(*id, **m))
                    .is_some_and(|s| s.is_member_at(height))
            })
            .copied()
            .collect()
    }

    /// Whether `account` is a member of `group` in the state after block `height`.
    pub(crate) fn is_member_at(&self, group: &GroupId, account: &AccountId, height: u64) -> bool {
        self.memberships
            .get(&(*group, *account))
            .is_some_and(|m| m.is_member_at(height))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::Cast;
    use crate::access::{AccessOp, Action, Basis, Decision, GrantTerms, PointerId};
    use crate::purpose::PurposeOfUse::Treatment;

    #[test]
    fn group_grants_follow_membership_with_history() {
        let mut c = Cast::new();
        let (rel, lab, _) = c.with_records();
        let op = AccessOp::CreateGroup {
            label: "care team".try_into().unwrap(),
        };
        let group = GroupId::of_tx(c.h.next_tx_id(&c.patient, &op));
        assert!(matches!(
            c.h.refused(&c.hospital, op.clone()),
            AccessError::WrongRole { .. }
        ));
        c.h.ok(&c.patient, op);
        let add = AccessOp::AddGroupMember {
            group,
            member: c.specialist.account(),
        };
        assert_eq!(
            c.h.refused(&c.specialist, add.clone()),
            AccessError::NotThePatient(c.specialist.account())
        );
        c.h.ok(&c.patient, add.clone());
        let joined = c.h.height;
        assert_eq!(
            c.h.refused(&c.patient, add),
            AccessError::AlreadyMember(c.specialist.account())
        );
        let terms = GrantTerms {
            viewer: Viewer::Group(group),
            ..c.treat_terms(rel, 30)
        };
        let g = c.h.grant(&c.patient, terms, None);
        let read = |c: &Cast, p: PointerId| {
            c.h.decide(&c.specialist, &c.patient, p, Action::Read, Treatment)
        };
        assert_eq!(read(&c, lab), Decision::Permit(Basis::Grant(g)));
        c.h.ok(
            &c.patient,
            AccessOp::RemoveGroupMember {
                group,
                member: c.specialist.account(),
            },
        );
        let left = c.h.height;
        assert!(!read(&c, lab).is_permit());
        assert_eq!(
            c.h.access().members_of(&group, joined),
            vec![c.specialist.account()]
        );
        assert!(c.h.access().members_of(&group, left).is_empty());
        assert_eq!(
            c.h.refused(
                &c.patient,
                AccessOp::RemoveGroupMember {
                    group,
                    member: c.specialist.account()
                }
            ),
            AccessError::NotMember(c.specialist.account())
        );
        // Another patient's group cannot be granted to.
        c.h.ok(
            &c.guardian,
            AccessOp::CreateGroup {
                label: "mine".try_into().unwrap(),
            },
        );
        let tx =
            c.h.access()
                .audit_trail(&c.guardian.account())
                .last()
                .unwrap()
                .tx;
        let other = GroupId::of_tx(tx);
        let terms = GrantTerms {
            viewer: Viewer::Group(other),
            ..c.treat_terms(rel, 30)
        };
        assert_eq!(
            c.h.refused(&c.patient, AccessOp::Grant { terms, under: None }),
            AccessError::NotGroupOwner(other)
        );
    }
}
