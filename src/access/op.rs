//! The access-control operations a transaction carries.

use serde::{Deserialize, Serialize};

use super::{
    Action, Basis, BlindedIdentity, BreakGlassId, DelegationId, DelegationTerms, GrantId,
    GrantTerms, GroupId, Identity, Label, PointerId, Reason, RecordPointer, RelationshipId,
    ReleasedSubject, ReviewOutcome, Role, MAX_RELEASE_SUBJECTS,
};
use super::{
    AggregatorRef, Epsilon, QueryId, QueryKind, ReportNonce, StudyId, MAX_REPORTS_PER_COMMIT,
};
use crate::codec::{BoundedBytes, BoundedVec};
use crate::hash::{AccountId, Digest};
use crate::pseudonym::Epoch;
use crate::purpose::PurposeOfUse;
use crate::tx::{PublicKey, Signature};

/// An access-control operation: the payload of a transaction
/// ([`Payload::Access`](super::Payload::Access)). Its signer is the actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AccessOp {
    /// Registers the signer's account with a role and an identity. Patients register an
    /// [`IdentityCommitment`](super::IdentityCommitment) bound to the signing account, with the [`BlindedIdentity`] it
    /// binds (see [`AccessOp::register_patient`]); every other role a public organisation
    /// name. The [`Role::Authority`] role is only given in the genesis configuration.
    Register {
        /// The role.
        role: Role,
        /// The identity.
        identity: Identity,
        /// For a patient, the blinded identity its commitment binds to the signing account
        /// (the chain checks [`IdentityCommitment::bind`](super::IdentityCommitment::bind)); `None` for every other role.
        blinded: Option<BlindedIdentity>,
    },
    /// Replaces the signer's key (the old key signs); the new key proves possession by signing
    /// [`registrar::possession_message`](super::registrar::possession_message). See [`AccessOp::rotate_key`].
    RotateKey {
        /// The key that signs for the account from now on.
        new_key: PublicKey,
        /// The new key's signature over [`registrar::possession_message`](super::registrar::possession_message).
        possession: Signature,
    },
    /// An authority certifies a provider (registered or not yet), for emergencies or not.
    /// Certifying it again without `emergency` closes its open break-glass sessions.
    CertifyProvider {
        /// The provider's account.
        provider: AccountId,
        /// Whether the provider may break glass.
        emergency: bool,
    },
    /// An authority withdraws a provider's certification (recorded). The provider's open
    /// break-glass sessions close with it, and it adds no more records.
    DecertifyProvider {
        /// The provider's account.
        provider: AccountId,
        /// Why.
        reason: Reason,
    },
    /// A certified provider opens a relationship with a patient; it is *pending* until the
    /// patient answers.
    CreateRelationship {
        /// The patient's account.
        patient: AccountId,
    },
    /// The patient accepts a pending relationship.
    AcceptRelationship {
        /// The relationship.
        relationship: RelationshipId,
    },
    /// The patient rejects a pending relationship.
    RejectRelationship {
        /// The relationship.
        relationship: RelationshipId,
        /// Why.
        reason: Reason,
    },
    /// Either party ends a pending or accepted relationship; its live grants are revoked
    /// (recorded).
    TerminateRelationship {
        /// The relationship.
        relationship: RelationshipId,
        /// Why.
        reason: Reason,
    },
    /// The provider adds a pointer to a record in its database, or a new version of one. Its
    /// certification must hold.
    AddPointer {
        /// The relationship.
        relationship: RelationshipId,
        /// The pointer.
        record: RecordPointer,
        /// The pointer this one is a new version of.
        replaces: Option<PointerId>,
    },
    /// A patient creates a group of viewers, to grant access to all its members at once.
    CreateGroup {
        /// The group's label.
        label: Label,
    },
    /// The group's patient adds a member.
    AddGroupMember {
        /// The group.
        group: GroupId,
        /// The new member.
        member: AccountId,
    },
    /// The group's patient removes a member (recorded: "as of" queries still see it).
    RemoveGroupMember {
        /// The group.
        group: GroupId,
        /// The member.
        member: AccountId,
    },
    /// The patient (or a delegate, `under` its delegation) grants a viewer access.
    Grant {
        /// What is granted.
        terms: GrantTerms,
        /// The delegation a delegate acts under; `None` when the patient signs.
        under: Option<DelegationId>,
    },
    /// The patient (or the delegate that made it) revokes a grant (recorded).
    RevokeGrant {
        /// The grant.
        grant: GrantId,
        /// Why.
        reason: Reason,
    },
    /// The patient delegates managing consent, within bounds, to a guardian.
    Delegate {
        /// The guardian's account.
        delegate: AccountId,
        /// The bounds.
        terms: DelegationTerms,
    },
    /// The patient (or the delegate) ends a delegation; grants made under it are revoked.
    RevokeDelegation {
        /// The delegation.
        delegation: DelegationId,
        /// Why.
        reason: Reason,
    },
    /// An emergency-certified provider opens time-boxed read access to a patient's records.
    OpenBreakGlass {
        /// The patient.
        patient: AccountId,
        /// Why (recorded, for the patient's review).
        reason: Reason,
        /// How long, at most [`MAX_BREAK_GLASS_SECS`](super::MAX_BREAK_GLASS_SECS).
        duration_secs: u64,
    },
    /// The provider that opened a break-glass session closes it early.
    CloseBreakGlass {
        /// The session.
        session: BreakGlassId,
    },
    /// The patient reviews a break-glass session, taking it off the review queue.
    ReviewBreakGlass {
        /// The session.
        session: BreakGlassId,
        /// The patient's verdict.
        outcome: ReviewOutcome,
        /// A note.
        note: Option<Reason>,
    },
    /// A viewer's read (or disclosure) of a record, bound to what permits it: the chain
    /// re-checks the permission at the block's time and refuses the receipt if it does not
    /// hold, then appends it to the patient's audit trail.
    RecordAccess {
        /// The patient.
        patient: AccountId,
        /// The record.
        pointer: PointerId,
        /// What the viewer does.
        action: Action,
        /// Why.
        purpose: PurposeOfUse,
        /// What permits it.
        basis: Basis,
    },
    /// A certified provider (the custodian) records that it released a data set to a
    /// registered [`Role::Researcher`] under research-window pseudonyms: one
    /// [`ReleasedSubject`] per patient, in strictly ascending pseudonym order, each with a
    /// hiding commitment to the consent (grant) it relies on. Nothing in it names a patient;
    /// see [`research`](super::research) for what the chain checks and how an auditor opens a subject. Build it
    /// with [`prepare_release`](super::prepare_release).
    ReleaseResearchData {
        /// The researcher receiving the data.
        recipient: AccountId,
        /// The research window whose pseudonyms the subjects carry.
        epoch: Epoch,
        /// The content hash of the released data set.
        dataset: Digest,
        /// The released subjects, in strictly ascending pseudonym order (not empty).
        subjects: BoundedVec<ReleasedSubject, MAX_RELEASE_SUBJECTS>,
    },
    /// An authority sets a consensus validator's voting power (0 removes it). The chain's
    /// consensus engine reads it from the block ([`AppPayload::validator_change`](crate::tx::AppPayload::validator_change))
    /// and applies it from the next height on; the access state records the latest power of
    /// each key ([`AccessState::validator_power`](super::AccessState::validator_power)).
    SetValidator {
        /// The validator's consensus key.
        key: PublicKey,
        /// Its voting power from the next height on; 0 removes it.
        power: u64,
    },
    /// Anyone records evidence that a validator misbehaved (signed two conflicting votes or
    /// proposals). The consensus engine checks the evidence when it checks the block
    /// ([`AppPayload::evidence`](crate::tx::AppPayload::evidence)); the access state keeps it,
    /// once per offence ([`AccessState::evidence_against`](super::AccessState::evidence_against)).
    RecordEvidence {
        /// The validator the evidence convicts.
        offender: PublicKey,
        /// The offence's id, as the engine defines it.
        offence: Digest,
        /// The engine's encoding of the evidence, at most [`MAX_EVIDENCE_LEN`] bytes.
        evidence: BoundedBytes<MAX_EVIDENCE_LEN>,
    },
    /// A certified provider releases a data set to a study's researcher under research-window
    /// pseudonyms, as [`AccessOp::ReleaseResearchData`], stating the smallest equivalence class
    /// of the data set's quasi-identifiers: at least the study's approved minimum class size
    /// ([`DEFAULT_MIN_CLASS_SIZE`](super::DEFAULT_MIN_CLASS_SIZE) unless its ethics approval
    /// allows less). Build it with [`prepare_study_release`](super::prepare_study_release),
    /// which refuses a data set with a smaller class.
    ReleaseStudyData {
        /// The study; its researcher receives the data.
        study: StudyId,
        /// The smallest equivalence class the data set holds, stated by the custodian.
        min_class_size: u32,
        /// The research window whose pseudonyms the subjects carry.
        epoch: Epoch,
        /// The content hash of the released data set.
        dataset: Digest,
        /// The released subjects, in strictly ascending pseudonym order (not empty).
        subjects: BoundedVec<ReleasedSubject, MAX_RELEASE_SUBJECTS>,
    },
    /// An authority approves a research study: the signed transaction is the ethics approval
    /// the chain keeps. See [`study`](super::study).
    ApproveStudy {
        /// The registered [`Role::Researcher`] who asks its queries.
        researcher: AccountId,
        /// The hash of the study's protocol and ethics approval document.
        protocol: Digest,
        /// Its total privacy budget (positive).
        budget: Epsilon,
        /// The smallest equivalence class its data releases may hold:
        /// [`DEFAULT_MIN_CLASS_SIZE`](super::DEFAULT_MIN_CLASS_SIZE) unless the approval says
        /// otherwise.
        min_class_size: u32,
    },
    /// The study's researcher announces a query; refused when the study's remaining budget is
    /// smaller than `epsilon`, which is charged at once.
    AnnounceQuery {
        /// The study.
        study: StudyId,
        /// What it computes.
        kind: QueryKind,
        /// The hash of the cohort definition.
        cohort: Digest,
        /// Its privacy parameter.
        epsilon: Epsilon,
        /// The fewest reports an aggregate share may be released of.
        min_batch: u32,
        /// The two aggregators (neither the researcher), the leader first.
        aggregators: [AggregatorRef; 2],
        /// Reports are committed strictly before this block time.
        deadline: u64,
    },
    /// A certified provider (a hospital) commits to a batch of reports it sent for a query:
    /// their nonces, in strictly ascending order, none committed before for the query.
    CommitReports {
        /// The query.
        query: QueryId,
        /// The digest of the batch's reports.
        batch: Digest,
        /// The reports' nonces.
        nonces: BoundedVec<ReportNonce, MAX_REPORTS_PER_COMMIT>,
    },
    /// One of a query's aggregators commits to its (noised) aggregate share, once.
    CommitAggregateShare {
        /// The query.
        query: QueryId,
        /// The digest of its aggregate share.
        share: Digest,
        /// How many reports it aggregated: at least the query's minimum batch.
        reports: u64,
    },
    /// The study's researcher publishes the hash of the query's result, once both aggregate
    /// shares are committed.
    PublishResult {
        /// The query.
        query: QueryId,
        /// The digest of the result.
        result: Digest,
    },
}

/// The largest voting power an [`AccessOp::SetValidator`] gives: 2^40, so that a set of the
/// most validators a consensus engine allows (1024 for Tendermint) never exceeds its total
/// (2^60).
pub const MAX_VALIDATOR_POWER: u64 = 1 << 40;

/// The largest evidence a [`AccessOp::RecordEvidence`] carries, in bytes.
pub const MAX_EVIDENCE_LEN: usize = 1024;
