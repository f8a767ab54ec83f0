//! Applying an operation: the dispatcher, the per-operation context, and the genesis state.

use super::{
    AccessError, AccessEvent, AccessOp, AccessState, AccountRecord, AuditEntry, Identity, Name,
    Role, Stamp,
};
use super::{EvidenceRecord, MAX_EVIDENCE_LEN, MAX_VALIDATOR_POWER};
use crate::codec::BoundedBytes;
use crate::hash::{AccountId, Digest};
use crate::state::{AccountState, CoreTables, KeyState, TxContext};
use crate::tx::PublicKey;
impl AccessState {
    /// Applies `op`, signed by `cx.account`, at `cx`'s height and time. The caller rolls the
    /// tables back if it fails.
    pub(crate) fn apply(
        &mut self,
        op: &AccessOp,
        cx: &TxContext,
        core: &mut CoreTables,
    ) -> Result<Vec<AccessEvent>, AccessError> {
        let CoreTables { accounts, keys } = core;
        let mut x = Exec {
            s: self,
            cx,
            events: Vec::new(),
        };
        match op {
            AccessOp::Register {
                role,
                identity,
                blinded,
            } => x.register(*role, identity, *blinded, keys)?,
            AccessOp::RotateKey {
                new_key,
                possession,
            } => x.rotate_key(*new_key, possession, keys, accounts)?,
            AccessOp::CertifyProvider {
                provider,
                emergency,
            } => x.certify(*provider, *emergency)?,
            AccessOp::DecertifyProvider { provider, reason } => x.decertify(*provider, reason)?,
            AccessOp::CreateRelationship { patient } => x.create_relationship(*patient)?,
            AccessOp::AcceptRelationship { relationship } => {
                x.answer_relationship(*relationship, None)?
            }
            AccessOp::RejectRelationship {
                relationship,
                reason,
            } => x.answer_relationship(*relationship, Some(reason))?,
            AccessOp::TerminateRelationship {
                relationship,
                reason,
            } => x.terminate_relationship(*relationship, reason)?,
            AccessOp::AddPointer {
                relationship,
                record,
                replaces,
            } => x.add_pointer(*relationship, record, *replaces)?,
            AccessOp::CreateGroup { label } => x.create_group(label)?,
            AccessOp::AddGroupMember { group, member } => x.add_member(*group, *member)?,
            AccessOp::RemoveGroupMember { group, member } => x.remove_member(*group, *member)?,
            AccessOp::Grant { terms, under } => x.grant(terms, *under)?,
            AccessOp::RevokeGrant { grant, reason } => x.revoke_grant(*grant, reason)?,
            AccessOp::Delegate { delegate, terms } => x.delegate(*delegate, terms)?,
            AccessOp::RevokeDelegation { delegation, reason } => {
                x.revoke_delegation(*delegation, reason)?
            }
            AccessOp::OpenBreakGlass {
                patient,
                reason,
                duration_secs,
            } => x.open_break_glass(*patient, reason, *duration_secs)?,
            AccessOp::CloseBreakGlass { session } => x.close_break_glass(*session)?,
            AccessOp::ReviewBreakGlass {
                session,
                outcome,
                note,
            } => x.review_break_glass(*session, *outcome, note.as_ref())?,
            AccessOp::RecordAccess {
                patient,
                pointer,
                action,
                purpose,
                basis,
            } => x.record_access(*patient, *pointer, *action, *purpose, *basis)?,
            AccessOp::ReleaseResearchData {
                recipient,
                epoch,
                dataset,
                subjects,
            } => x.release_research_data(*recipient, *epoch, *dataset, subjects)?,
            AccessOp::SetValidator { key, power } => x.set_validator(*key, *power)?,
            AccessOp::RecordEvidence {
                offender,
                offence,
                evidence,
            } => x.record_evidence(*offender, *offence, evidence)?,
            AccessOp::ApproveStudy {
                researcher,
                protocol,
                budget,
                min_class_size,
            } => x.approve_study(*researcher, *protocol, *budget, *min_class_size)?,
            AccessOp::AnnounceQuery {
                study,
                kind,
                cohort,
                epsilon,
                min_batch,
                aggregators,
                deadline,
            } => x.announce_query(
                *study,
                *kind,
                *cohort,
                *epsilon,
                *min_batch,
                *aggregators,
                *deadline,
            )?,
            AccessOp::CommitReports {
                query,
                batch,
                nonces,
            } => x.commit_reports(*query, *batch, nonces)?,
            AccessOp::CommitAggregateShare {
                query,
                share,
                reports,
            } => x.commit_aggregate_share(*query, *share, *reports)?,
            AccessOp::PublishResult { query, result } => x.publish_result(*query, *result)?,
            AccessOp::ReleaseStudyData {
                study,
                min_class_size,
                epoch,
                dataset,
                subjects,
            } => x.release_study_data(*study, *min_class_size, *epoch, *dataset, subjects)?,
        }
        Ok(x.events)
    }
}

/// One operation being applied: the state, the transaction's context, the events so far.
pub(crate) struct Exec<'a> {
    pub(super) s: &'a mut AccessState,
    pub(super) cx: &'a TxContext,
    pub(super) events: Vec<AccessEvent>,
}

impl Exec<'_> {
    pub(super) fn stamp(&self) -> Stamp {
        Stamp {
            height: self.cx.height,
            time: self.cx.time,
        }
    }

    pub(super) fn actor(&self) -> AccountId {
        self.cx.account
    }

    /// Records `event`, and appends it to `patient`'s audit trail.
    pub(super) fn emit(&mut self, patient: Option<AccountId>, event: AccessEvent) {
        if let Some(patient) = patient {
            let mut c = self.s.counters(&patient);
            let seq = c.audit;
            c.audit += 1;
            self.s.counters.insert(patient, c);
            self.s.audit.insert(
                (patient, seq),
                AuditEntry {
                    seq,
                    at: self.stamp(),
                    tx: self.cx.tx_id,
                    actor: self.cx.account,
                    event: event.clone(),
                },
            );
        }
        self.events.push(event);
    }

    /// The registered record of `account`.
    pub(super) fn registered(&self, account: AccountId) -> Result<&AccountRecord, AccessError> {
        self.s
            .accounts
            .get(&account)
            .ok_or(AccessError::NotRegistered(account))
    }

    /// Checks `account` is registered with `role`.
    pub(super) fn require_role(&self, account: AccountId, role: Role) -> Result<(), AccessError> {
        let found = self.registered(account)?.role;
        if found != role {
            return Err(AccessError::WrongRole {
                account,
                expected: role,
                found,
            });
        }
        Ok(())
    }
}

impl Exec<'_> {
    /// An authority sets a validator's voting power; the key must be a valid, strong key.
    fn set_validator(&mut self, key: PublicKey, power: u64) -> Result<(), AccessError> {
        let by = self.actor();
        self.require_role(by, Role::Authority)?;
        key.verifying_key().map_err(|_| AccessError::BadKey(key))?;
        if power > MAX_VALIDATOR_POWER {
            return Err(AccessError::PowerTooLarge {
                power,
                max: MAX_VALIDATOR_POWER,
            });
        }
        self.s.validators.insert(key, power);
        self.emit(None, AccessEvent::ValidatorSet { key, power, by });
        Ok(())
    }

    /// Records evidence, once per offence. Whether it proves the offence is the consensus
    /// engine's check, made on the block that carries it.
    fn record_evidence(
        &mut self,
        offender: PublicKey,
        offence: Digest,
        evidence: &BoundedBytes<MAX_EVIDENCE_LEN>,
    ) -> Result<(), AccessError> {
        if self.s.evidence.get(&(offender, offence)).is_some() {
            return Err(AccessError::EvidenceAlreadyRecorded { offender, offence });
        }
        let by = self.actor();
        let seq = self.s.evidence_counts.get(&offender).copied().unwrap_or(0);
        let next = seq.checked_add(1).ok_or(AccessError::LimitReached {
            what: "evidence records per offender",
            max: u64::from(u32::MAX),
        })?;
        self.s.evidence.insert(
            (offender, offence),
            EvidenceRecord {
                offender,
                offence,
                evidence: evidence.clone(),
                by,
                at: self.stamp(),
            },
        );
        self.s.offender_evidence.insert((offender, seq), offence);
        self.s.evidence_counts.insert(offender, next);
        self.emit(
            None,
            AccessEvent::EvidenceRecorded {
                offender,
                offence,
                by,
            },
        );
        Ok(())
    }
}

/// Writes the genesis authorities (registered, with their keys) into a fresh state.
pub(crate) fn genesis(
    access: &mut AccessState,
    core: &mut CoreTables,
    authorities: &[(Name, PublicKey)],
    time: u64,
) {
    let at = Stamp { height: 0, time };
    for (name, key) in authorities {
        let account = key.account();
        let identity = Identity::Organisation(name.clone());
        access.accounts.insert(
            account,
            AccountRecord {
                role: Role::Authority,
                identity: identity.clone(),
                registered: at,
                keys: 1,
            },
        );
        access.identities.insert(identity, account);
        access.key_history.insert((account, 0), *key);
        core.keys.insert(
            *key,
            KeyState {
                account,
                since: 0,
                retired_at: None,
            },
        );
        core.accounts.insert(
            account,
            AccountState {
                next_nonce: 0,
                key: *key,
            },
        );
    }
}
