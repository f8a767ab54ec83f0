//! Research studies and the statistical queries asked under them, governed on chain.
//!
//! A researcher does not need a patient's rows to learn how many patients have a condition:
//! the hospitals can secret-share one report per patient between two aggregators, which verify
//! and sum the shares and add differential-privacy noise (see the `research` module, feature
//! `research-queries`). The chain governs and audits each step:
//!
//! 1. an [authority](Role::Authority) approves a **study** ([`AccessOp::ApproveStudy`]): its
//!    researcher, the hash of its protocol and ethics approval, its total privacy budget ε and
//!    the smallest equivalence class its data releases may hold. The authority's signature on
//!    the transaction is the ethics approval the chain keeps.
//! 2. the researcher **announces a query** ([`AccessOp::AnnounceQuery`]): the VDAF and its
//!    parameters ([`QueryKind`]), the hash of the cohort definition, the query's ε, the smallest
//!    batch the aggregators may release, the two aggregators (accounts and HPKE keys) and a
//!    deadline. The chain refuses it when the study is unknown or another researcher's, when an
//!    aggregator is the researcher or both are the same account, and **when the study's
//!    remaining budget is smaller than ε**; otherwise it charges ε to the study at once.
//! 3. each hospital **commits to the reports it sent** ([`AccessOp::CommitReports`]), in
//!    batches: a digest of the reports and their nonces. A nonce is derived from the patient's
//!    research-window pseudonym and the query, so it is unlinkable across queries, and the chain
//!    refuses a nonce it has seen for the query: a replayed report cannot be committed twice.
//!    A patient who recomputes their nonce finds "contributed to query Q" with
//!    [`AccessState::contribution`]; nothing on chain holds a value.
//! 4. each aggregator **commits to its aggregate share** ([`AccessOp::CommitAggregateShare`])
//!    with the number of reports it aggregated, at least the query's minimum batch;
//! 5. the researcher **publishes the result's hash** ([`AccessOp::PublishResult`]) once both
//!    shares are committed.
//!
//! Every step lands in the study's own audit trail ([`AccessState::study_trail`]). The ε of
//! queries and budgets is an [`Epsilon`], an integer count of millionths: consensus state holds
//! no floats.

use core::fmt;

use serde::{Deserialize, Serialize};

use rand_core::CryptoRngCore;

use super::{
    prepare_release_with, AccessError, AccessEvent, AccessOp, AccessState, AuditEntry, Exec,
    GrantId, PreparedRelease, QueryId, ReleaseBuildError, ReleaseId, ReleasedSubject, Role, Stamp,
    StudyId, MAX_RELEASE_SUBJECTS,
};
use crate::codec::BoundedVec;
use crate::hash::{domain, hash_newtype, AccountId, Digest};
use crate::pseudonym::generalize::{classes_below_k, QuasiIdentifiers};
use crate::pseudonym::{Epoch, Pseudonym, PseudonymBackend};

/// The largest number of report nonces one [`AccessOp::CommitReports`] carries.
///
/// [`AccessOp::CommitReports`]: super::AccessOp::CommitReports
pub const MAX_REPORTS_PER_COMMIT: usize = 512;
/// The largest histogram a query asks for, in buckets.
pub const MAX_HISTOGRAM_BUCKETS: u32 = 1024;
/// The largest vector a vector-sum query sums, in entries.
pub const MAX_VECTOR_LEN: u32 = 1024;
/// The largest bound of a sum or vector-sum query's measurements (2^40).
pub const MAX_SUM_BOUND: u64 = 1 << 40;
/// The class size research data releases enforce unless the study's ethics approval states
/// another.
pub const DEFAULT_MIN_CLASS_SIZE: u32 = 10;

/// A privacy parameter ε, as an integer count of millionths (`Epsilon::from_micros(500_000)` is
/// ε = 0.5). Budgets add and subtract exactly.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epsilon(u64);

impl Epsilon {
    /// No privacy loss.
    pub const ZERO: Epsilon = Epsilon(0);
    /// Millionths per unit.
    pub const MICROS_PER_UNIT: u64 = 1_000_000;

    /// ε = `micros` / 1,000,000.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// ε in millionths.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// ε as a float, for display and for noise calibration off chain.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::MICROS_PER_UNIT as f64
    }

    /// `self - other`, or `None` if `other` is larger.
    pub const fn checked_sub(self, other: Epsilon) -> Option<Epsilon> {
        match self.0.checked_sub(other.0) {
            Some(v) => Some(Epsilon(v)),
            None => None,
        }
    }

    /// `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: Epsilon) -> Option<Epsilon> {
        match self.0.checked_add(other.0) {
            Some(v) => Some(Epsilon(v)),
            None => None,
        }
    }
}

impl fmt::Display for Epsilon {
    /// `ε=0.5`, exact (up to six decimals).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (units, frac) = (
            self.0 / Self::MICROS_PER_UNIT,
            self.0 % Self::MICROS_PER_UNIT,
        );
        if frac == 0 {
            return write!(f, "ε={units}");
        }
        let digits = format!("{frac:06}");
        write!(f, "ε={units}.{}", digits.trim_end_matches('0'))
    }
}

/// What a query computes, and so which Prio3 VDAF answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum QueryKind {
    /// How many patients of the cohort: each report is 0 or 1.
    Count,
    /// The sum of a value in `0..=max` over the cohort.
    Sum {
        /// The largest value one patient contributes.
        max: u64,
    },
    /// How many patients fall in each of `buckets` buckets: each report names one bucket.
    Histogram {
        /// The number of buckets, 2 to [`MAX_HISTOGRAM_BUCKETS`].
        buckets: u32,
    },
    /// The entry-wise sum of vectors of `len` values in `0..=max`.
    SumVec {
        /// The largest value of one entry.
        max: u64,
        /// The vector's length, 1 to [`MAX_VECTOR_LEN`].
        len: u32,
    },
}

impl QueryKind {
    /// Checks the parameters are within the bounds above.
    ///
    /// # Errors
    ///
    /// [`AccessError::InvalidQuery`] naming what is out of bounds.
    pub fn check(&self) -> Result<(), AccessError> {
        let bad = |why| Err(AccessError::InvalidQuery(why));
        match *self {
            QueryKind::Count => Ok(()),
            QueryKind::Sum { max } if max == 0 || max > MAX_SUM_BOUND => {
                bad("a sum's bound must be in 1..=2^40")
            }
            QueryKind::Histogram { buckets } if !(2..=MAX_HISTOGRAM_BUCKETS).contains(&buckets) => {
                bad("a histogram has 2 to 1024 buckets")
            }
            QueryKind::SumVec { max, .. } if max == 0 || max > MAX_SUM_BOUND => {
                bad("a vector sum's bound must be in 1..=2^40")
            }
            QueryKind::SumVec { len, .. } if !(1..=MAX_VECTOR_LEN).contains(&len) => {
                bad("a vector sum has 1 to 1024 entries")
            }
            _ => Ok(()),
        }
    }

    /// How many values the answer holds (1 for a count or a sum).
    pub fn output_len(&self) -> usize {
        match *self {
            QueryKind::Count | QueryKind::Sum { .. } => 1,
            QueryKind::Histogram { buckets } => buckets as usize,
            QueryKind::SumVec { len, .. } => len as usize,
        }
    }
}

hash_newtype! {
    /// An aggregator's HPKE public key (X25519), to which hospitals encrypt its input shares.
    HpkePublicKey
}

/// One of a query's two aggregators: its account and the key its input shares are encrypted
/// to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AggregatorRef {
    /// The account that commits its aggregate share.
    pub account: AccountId,
    /// Its HPKE public key.
    pub key: HpkePublicKey,
}

/// The nonce of one report: 16 bytes derived from the patient's research-window pseudonym and
/// the query ([`ReportNonce::derive`]), so one patient has one nonce per query and nonces of
/// different queries are unrelated.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct ReportNonce([u8; 16]);

impl ReportNonce {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The nonce of the patient with research-window `pseudonym` in `query`.
    pub fn derive(pseudonym: &Pseudonym, query: &QueryId) -> Self {
        let h = domain::RESEARCH_REPORT_NONCE.hash_parts(&[pseudonym.as_bytes(), query.as_bytes()]);
        let mut n = [0; 16];
        n.copy_from_slice(&h[..16]);
        Self(n)
    }
}

impl fmt::Display for ReportNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::hash::write_hex(f, &self.0)
    }
}

impl fmt::Debug for ReportNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportNonce({self})")
    }
}

/// A study, as recorded on chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Study {
    /// Its id.
    pub id: StudyId,
    /// The researcher who asks its queries.
    pub researcher: AccountId,
    /// The authority that approved it.
    pub authority: AccountId,
    /// The hash of its protocol and ethics approval document.
    pub protocol: Digest,
    /// Its total privacy budget.
    pub budget: Epsilon,
    /// What its queries have spent.
    pub spent: Epsilon,
    /// The smallest equivalence class its data releases may hold.
    pub min_class_size: u32,
    /// When it was approved.
    pub at: Stamp,
    /// Queries announced.
    pub queries: u32,
    /// Entries in its audit trail.
    pub trail: u32,
}

impl Study {
    /// What is left of the budget.
    pub fn remaining(&self) -> Epsilon {
        self.budget.checked_sub(self.spent).unwrap_or(Epsilon::ZERO)
    }
}

/// A query, as recorded on chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Its id.
    pub id: QueryId,
    /// The study it is asked under.
    pub study: StudyId,
    /// What it computes.
    pub kind: QueryKind,
    /// The hash of the cohort definition.
    pub cohort: Digest,
    /// Its privacy parameter, charged to the study.
    pub epsilon: Epsilon,
    /// The fewest reports an aggregator may release an aggregate share of.
    pub min_batch: u32,
    /// The two aggregators, the leader first.
    pub aggregators: [AggregatorRef; 2],
    /// Reports are committed strictly before this block time.
    pub deadline: u64,
    /// When it was announced: consent is judged as of this height.
    pub at: Stamp,
    /// Reports committed by hospitals.
    pub reports: u64,
    /// Each aggregator's share commitment and report count.
    pub shares: [Option<(Digest, u64)>; 2],
    /// The published result's hash.
    pub result: Option<Digest>,
}

/// A report commitment entry: which hospital committed the nonce, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// The hospital.
    pub hospital: AccountId,
    /// The digest of the batch it was committed in.
    pub batch: Digest,
    /// When.
    pub at: Stamp,
}

impl Exec<'_> {
    /// Appends `event` to the study's trail and emits it.
    fn emit_study(&mut self, study: &mut Study, event: AccessEvent) {
        let seq = study.trail;
        study.trail += 1;
        self.s.study_trail.insert(
            (study.id, seq),
            AuditEntry {
                seq: u64::from(seq),
                at: self.stamp(),
                tx: self.cx.tx_id,
                actor: self.cx.account,
                event: event.clone(),
            },
        );
        self.emit(None, event);
    }

    fn study_trail_room(study: &Study) -> Result<(), AccessError> {
        if study.trail == u32::MAX {
            return Err(AccessError::LimitReached {
                what: "audit entries per study",
                max: u32::MAX.into(),
            });
        }
        Ok(())
    }

    pub(super) fn approve_study(
        &mut self,
        researcher: AccountId,
        protocol: Digest,
        budget: Epsilon,
        min_class_size: u32,
    ) -> Result<(), AccessError> {
        let authority = self.actor();
        self.require_role(authority, Role::Authority)?;
        self.require_role(researcher, Role::Researcher)?;
        if budget == Epsilon::ZERO {
            return Err(AccessError::InvalidQuery(
                "a study's budget must be positive",
            ));
        }
        if min_class_size == 0 {
            return Err(AccessError::InvalidQuery(
                "a study's minimum class size must be positive",
            ));
        }
        let id = StudyId::of_tx(self.cx.tx_id);
        let mut study = Study {
            id,
            researcher,
            authority,
            protocol,
            budget,
            spent: Epsilon::ZERO,
            min_class_size,
            at: self.stamp(),
            queries: 0,
            trail: 0,
        };
        self.emit_study(
            &mut study,
            AccessEvent::StudyApproved {
                study: id,
                researcher,
                authority,
                budget,
                min_class_size,
            },
        );
        self.s.studies.insert(id, study);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn announce_query(
        &mut self,
        study: StudyId,
        kind: QueryKind,
        cohort: Digest,
        epsilon: Epsilon,
        min_batch: u32,
        aggregators: [AggregatorRef; 2],
        deadline: u64,
    ) -> Result<(), AccessError> {
        let researcher = self.actor();
        let mut s = self
            .s
            .studies
            .get(&study)
            .cloned()
            .ok_or(AccessError::UnknownStudy(study))?;
        if s.researcher != researcher {
            return Err(AccessError::NotTheResearcher {
                study,
                account: researcher,
            });
        }
        kind.check()?;
        if epsilon == Epsilon::ZERO {
            return Err(AccessError::InvalidQuery("a query's ε must be positive"));
        }
        if min_batch == 0 {
            return Err(AccessError::InvalidQuery(
                "a query's minimum batch must be positive",
            ));
        }
        for a in &aggregators {
            if a.account == researcher {
                return Err(AccessError::AggregatorIsResearcher(researcher));
            }
        }
        if aggregators[0].account == aggregators[1].account
            || aggregators[0].key == aggregators[1].key
        {
            return Err(AccessError::Duplicate("aggregators"));
        }
        if deadline <= self.cx.time {
            return Err(AccessError::PeriodOver {
                end: deadline,
                now: self.cx.time,
            });
        }
        let remaining = s.remaining();
        let left = remaining
            .checked_sub(epsilon)
            .ok_or(AccessError::BudgetExceeded {
                study,
                remaining,
                asked: epsilon,
            })?;
        Self::study_trail_room(&s)?;
        s.queries = s.queries.checked_add(1).ok_or(AccessError::LimitReached {
            what: "queries per study",
            max: u32::MAX.into(),
        })?;
        s.spent = s.spent.checked_add(epsilon).expect("spent + ε ≤ budget");
        let id = QueryId::of_tx(self.cx.tx_id);
        self.s.queries.insert(
            id,
            Query {
                id,
                study,
                kind,
                cohort,
                epsilon,
                min_batch,
                aggregators,
                deadline,
                at: self.stamp(),
                reports: 0,
                shares: [None, None],
                result: None,
            },
        );
        self.emit_study(
            &mut s,
            AccessEvent::QueryAnnounced {
                query: id,
                study,
                epsilon,
                remaining: left,
            },
        );
        self.s.studies.insert(study, s);
        Ok(())
    }

    fn open_query(&self, query: QueryId) -> Result<(Query, Study), AccessError> {
        let q = self
            .s
            .queries
            .get(&query)
            .cloned()
            .ok_or(AccessError::UnknownQuery(query))?;
        let s = self
            .s
            .studies
            .get(&q.study)
            .cloned()
            .expect("a query's study exists");
        Self::study_trail_room(&s)?;
        Ok((q, s))
    }

    pub(super) fn commit_reports(
        &mut self,
        query: QueryId,
        batch: Digest,
        nonces: &BoundedVec<ReportNonce, MAX_REPORTS_PER_COMMIT>,
    ) -> Result<(), AccessError> {
        let hospital = self.actor();
        self.certified_provider(hospital)?;
        let (mut q, mut s) = self.open_query(query)?;
        if self.cx.time >= q.deadline {
            return Err(AccessError::PeriodOver {
                end: q.deadline,
                now: self.cx.time,
            });
        }
        if nonces.is_empty() {
            return Err(AccessError::Empty("report nonces"));
        }
        for pair in nonces.windows(2) {
            match pair[0].cmp(&pair[1]) {
                core::cmp::Ordering::Less => {}
                core::cmp::Ordering::Equal => return Err(AccessError::Duplicate("report nonces")),
                core::cmp::Ordering::Greater => {
                    return Err(AccessError::NotInOrder("report nonces"))
                }
            }
        }
        if let Some(n) = nonces
            .iter()
            .find(|n| self.s.contributions.get(&(query, **n)).is_some())
        {
            return Err(AccessError::ReportReplayed { query, nonce: *n });
        }
        let entry = Contribution {
            hospital,
            batch,
            at: self.stamp(),
        };
        for n in nonces {
            self.s.contributions.insert((query, *n), entry);
        }
        let reports = u32::try_from(nonces.len()).expect("at most MAX_REPORTS_PER_COMMIT");
        q.reports += u64::from(reports);
        self.s.queries.insert(query, q);
        self.emit_study(
            &mut s,
            AccessEvent::ReportsCommitted {
                query,
                hospital,
                batch,
                reports,
            },
        );
        self.s.studies.insert(s.id, s);
        Ok(())
    }

    pub(super) fn commit_aggregate_share(
        &mut self,
        query: QueryId,
        share: Digest,
        reports: u64,
    ) -> Result<(), AccessError> {
        let aggregator = self.actor();
        let (mut q, mut s) = self.open_query(query)?;
        let index = q
            .aggregators
            .iter()
            .position(|a| a.account == aggregator)
            .ok_or(AccessError::NotAnAggregator {
                query,
                account: aggregator,
            })?;
        if q.shares[index].is_some() {
            return Err(AccessError::AlreadyCommitted {
                query,
                by: aggregator,
            });
        }
        if reports < u64::from(q.min_batch) || reports > q.reports {
            return Err(AccessError::BatchSize {
                reports,
                min: q.min_batch,
                committed: q.reports,
            });
        }
        q.shares[index] = Some((share, reports));
        self.s.queries.insert(query, q);
        self.emit_study(
            &mut s,
            AccessEvent::AggregateShareCommitted {
                query,
                aggregator,
                share,
                reports,
            },
        );
        self.s.studies.insert(s.id, s);
        Ok(())
    }

    pub(super) fn publish_result(
        &mut self,
        query: QueryId,
        result: Digest,
    ) -> Result<(), AccessError> {
        let researcher = self.actor();
        let (mut q, mut s) = self.open_query(query)?;
        if s.researcher != researcher {
            return Err(AccessError::NotTheResearcher {
                study: s.id,
                account: researcher,
            });
        }
        if q.result.is_some() {
            return Err(AccessError::AlreadyCommitted {
                query,
                by: researcher,
            });
        }
        if q.shares.iter().any(Option::is_none) {
            return Err(AccessError::SharesMissing(query));
        }
        q.result = Some(result);
        self.s.queries.insert(query, q);
        self.emit_study(&mut s, AccessEvent::QueryResultPublished { query, result });
        self.s.studies.insert(s.id, s);
        Ok(())
    }
}

impl AccessState {
    /// The study `id`.
    pub fn study(&self, id: &StudyId) -> Option<&Study> {
        self.studies.get(id)
    }

    /// The query `id`.
    pub fn query(&self, id: &QueryId) -> Option<&Query> {
        self.queries.get(id)
    }

    /// The audit trail of study `id`, oldest first: its approval, and every announcement,
    /// report commitment, aggregate share commitment and published result of its queries.
    pub fn study_trail(&self, id: &StudyId) -> Vec<&AuditEntry> {
        let n = self.studies.get(id).map_or(0, |s| s.trail);
        (0..n)
            .filter_map(|i| self.study_trail.get(&(*id, i)))
            .collect()
    }

    /// Whether a report with `nonce` was committed for `query` ("contributed to query Q"),
    /// and by which hospital. A patient recomputes their nonce from their research-window
    /// pseudonym ([`ReportNonce::derive`]); nobody else can tell whose nonce it is.
    pub fn contribution(&self, query: &QueryId, nonce: &ReportNonce) -> Option<&Contribution> {
        self.contributions.get(&(*query, *nonce))
    }
}

/// What a study release states on chain, beside its [`Release`](super::Release).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyRelease {
    /// The study.
    pub study: StudyId,
    /// The smallest equivalence class of the data set, as the custodian stated it.
    pub min_class_size: u32,
}

/// An equivalence class of a data set's quasi-identifiers smaller than the class size required.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmallClass {
    /// The quasi-identifiers the class shares.
    pub class: QuasiIdentifiers,
    /// How many subjects it holds.
    pub size: usize,
}

/// `born 1961, ZIP 021, female (2 rows); …`
pub(crate) fn list_classes(classes: &[SmallClass]) -> String {
    classes
        .iter()
        .map(|c| format!("{} ({} row(s))", c.class, c.size))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Builds the release of `dataset` to `study`'s researcher, as [`prepare_release_with`] does,
/// stating `min_class_size` on chain ([`AccessOp::ReleaseStudyData`]).
/// `quasi` holds each subject's generalised quasi-identifiers, in the order of `subjects`.
///
/// Refuses a class size below the study's approval (10, [`DEFAULT_MIN_CLASS_SIZE`], unless the
/// ethics approval said otherwise), and a data set in which fewer than `min_class_size`
/// subjects share some combination of quasi-identifiers, naming every such class: those
/// subjects could be linked across releases whatever their pseudonyms (the mosaic effect).
/// Suppress or generalise them further before releasing.
///
/// # Errors
///
/// [`ReleaseBuildError::ClassSizeBelowApproval`], [`ReleaseBuildError::QuasiIdentifiersMismatch`],
/// [`ReleaseBuildError::ClassesTooSmall`], or [`prepare_release_with`]'s errors.
#[allow(clippy::too_many_arguments)]
pub fn prepare_study_release<R: CryptoRngCore + ?Sized>(
    vault: &mut dyn PseudonymBackend,
    study: &Study,
    min_class_size: u32,
    epoch: Epoch,
    dataset: Digest,
    subjects: &[(AccountId, GrantId)],
    quasi: &[QuasiIdentifiers],
    rng: &mut R,
) -> Result<PreparedRelease, ReleaseBuildError> {
    if min_class_size < study.min_class_size {
        return Err(ReleaseBuildError::ClassSizeBelowApproval {
            asked: min_class_size,
            approved: study.min_class_size,
        });
    }
    if quasi.len() != subjects.len() {
        return Err(ReleaseBuildError::QuasiIdentifiersMismatch {
            quasi: quasi.len(),
            subjects: subjects.len(),
        });
    }
    let small = classes_below_k(quasi, min_class_size as usize);
    if !small.is_empty() {
        return Err(ReleaseBuildError::ClassesTooSmall {
            k: min_class_size,
            classes: small
                .into_iter()
                .map(|(class, size)| SmallClass { class, size })
                .collect(),
        });
    }
    let mut prepared =
        prepare_release_with(vault, study.researcher, epoch, dataset, subjects, rng)?;
    if let AccessOp::ReleaseResearchData {
        epoch,
        dataset,
        subjects,
        ..
    } = prepared.op
    {
        prepared.op = AccessOp::ReleaseStudyData {
            study: study.id,
            min_class_size,
            epoch,
            dataset,
            subjects,
        };
    }
    Ok(prepared)
}

impl Exec<'_> {
    pub(super) fn release_study_data(
        &mut self,
        study: StudyId,
        min_class_size: u32,
        epoch: Epoch,
        dataset: Digest,
        subjects: &BoundedVec<ReleasedSubject, MAX_RELEASE_SUBJECTS>,
    ) -> Result<(), AccessError> {
        let mut s = self
            .s
            .studies
            .get(&study)
            .cloned()
            .ok_or(AccessError::UnknownStudy(study))?;
        if min_class_size < s.min_class_size {
            return Err(AccessError::ClassSizeBelowApproval {
                study,
                stated: min_class_size,
                approved: s.min_class_size,
            });
        }
        Self::study_trail_room(&s)?;
        self.release_research_data(s.researcher, epoch, dataset, subjects)?;
        let release = ReleaseId::of_tx(self.cx.tx_id);
        self.s.study_releases.insert(
            release,
            StudyRelease {
                study,
                min_class_size,
            },
        );
        self.emit_study(
            &mut s,
            AccessEvent::StudyDataReleased {
                release,
                study,
                min_class_size,
            },
        );
        self.s.studies.insert(study, s);
        Ok(())
    }
}

impl AccessState {
    /// The study a release was made under and the class size it states, if it was made with
    /// [`AccessOp::ReleaseStudyData`].
    pub fn study_release(&self, release: &ReleaseId) -> Option<&StudyRelease> {
        self.study_releases.get(release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{key, Cast, DAY};
    use crate::access::{AccessOp, STUDIES_TABLE};
    use crate::codec::Canonical;
    use crate::hash::ChainId;
    use crate::tx::Keypair;
    use crate::{Payload, Transaction};
    use proptest::prelude::*;

    fn eps(micros: u64) -> Epsilon {
        Epsilon::from_micros(micros)
    }

    fn agg(n: u8) -> AggregatorRef {
        AggregatorRef {
            account: key(n).account(),
            key: HpkePublicKey::from_bytes([n; 32]),
        }
    }

    /// A cast with a study of budget 1.0 for the researcher; its id.
    fn setup() -> (Cast, StudyId) {
        let mut c = Cast::new();
        let op = AccessOp::ApproveStudy {
            researcher: c.researcher.account(),
            protocol: Digest::from_bytes([7; 32]),
            budget: eps(1_000_000),
            min_class_size: DEFAULT_MIN_CLASS_SIZE,
        };
        let id = StudyId::of_tx(c.h.next_tx_id(&c.authority, &op));
        c.h.ok(&c.authority, op);
        (c, id)
    }

    fn announce(c: &Cast, study: StudyId, epsilon: u64) -> AccessOp {
        AccessOp::AnnounceQuery {
            study,
            kind: QueryKind::Count,
            cohort: Digest::from_bytes([3; 32]),
            epsilon: eps(epsilon),
            min_batch: 2,
            aggregators: [agg(20), agg(21)],
            deadline: c.h.time + DAY,
        }
    }

    fn query(c: &mut Cast, study: StudyId, epsilon: u64) -> QueryId {
        let op = announce(c, study, epsilon);
        let id = QueryId::of_tx(c.h.next_tx_id(&c.researcher, &op));
        c.h.ok(&c.researcher, op);
        id
    }

    fn nonces(ns: &[u8]) -> BoundedVec<ReportNonce, MAX_REPORTS_PER_COMMIT> {
        BoundedVec::try_from(
            ns.iter()
                .map(|n| ReportNonce::from_bytes([*n; 16]))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn commit(query: QueryId, ns: &[u8]) -> AccessOp {
        AccessOp::CommitReports {
            query,
            batch: Digest::from_bytes([ns.len() as u8; 32]),
            nonces: nonces(ns),
        }
    }

    #[test]
    fn only_an_authority_approves_a_study_for_a_researcher() {
        let (mut c, id) = setup();
        let s = c.h.access().study(&id).unwrap().clone();
        assert_eq!(s.researcher, c.researcher.account());
        assert_eq!(s.authority, c.authority.account());
        assert_eq!((s.budget, s.spent), (eps(1_000_000), Epsilon::ZERO));
        let proof = c.h.state.prove(STUDIES_TABLE, &id);
        assert!(proof
            .verify(
                &c.h.root(),
                &crate::state::entry_key(STUDIES_TABLE, &id),
                Some(&crate::state::value_digest(&s))
            )
            .is_ok());
        let approve = |researcher: AccountId, budget, k| AccessOp::ApproveStudy {
            researcher,
            protocol: Digest::default(),
            budget: eps(budget),
            min_class_size: k,
        };
        let researcher = c.researcher.account();
        assert!(matches!(
            c.h.refused(&c.hospital, approve(researcher, 1, 10)),
            AccessError::WrongRole {
                expected: Role::Authority,
                ..
            }
        ));
        assert!(matches!(
            c.h.refused(&c.authority, approve(c.hospital.account(), 1, 10)),
            AccessError::WrongRole {
                expected: Role::Researcher,
                ..
            }
        ));
        assert!(matches!(
            c.h.refused(&c.authority, approve(researcher, 0, 10)),
            AccessError::InvalidQuery(_)
        ));
        assert!(matches!(
            c.h.refused(&c.authority, approve(researcher, 1, 0)),
            AccessError::InvalidQuery(_)
        ));
    }

    #[test]
    fn a_query_is_charged_to_the_budget_and_refused_over_it() {
        let (mut c, study) = setup();
        query(&mut c, study, 600_000);
        assert_eq!(
            c.h.access().study(&study).unwrap().remaining(),
            eps(400_000)
        );
        assert_eq!(
            c.h.refused(&c.researcher, announce(&c, study, 400_001)),
            AccessError::BudgetExceeded {
                study,
                remaining: eps(400_000),
                asked: eps(400_001)
            }
        );
        query(&mut c, study, 400_000);
        assert_eq!(
            c.h.access().study(&study).unwrap().remaining(),
            Epsilon::ZERO
        );
        assert!(matches!(
            c.h.refused(&c.researcher, announce(&c, study, 1)),
            AccessError::BudgetExceeded { .. }
        ));
        assert_eq!(c.h.access().study(&study).unwrap().queries, 2);
    }

    #[test]
    fn a_query_is_refused_without_the_study_or_with_the_researcher_aggregating() {
        let (mut c, study) = setup();
        let unknown = StudyId::from_bytes([9; 32]);
        assert_eq!(
            c.h.refused(&c.researcher, announce(&c, unknown, 1)),
            AccessError::UnknownStudy(unknown)
        );
        assert_eq!(
            c.h.refused(&c.specialist, announce(&c, study, 1)),
            AccessError::NotTheResearcher {
                study,
                account: c.specialist.account()
            }
        );
        let with = |c: &Cast, aggregators, kind, deadline| match announce(c, study, 1) {
            AccessOp::AnnounceQuery {
                study,
                cohort,
                epsilon,
                min_batch,
                ..
            } => AccessOp::AnnounceQuery {
                study,
                kind,
                cohort,
                epsilon,
                min_batch,
                aggregators,
                deadline,
            },
            _ => unreachable!(),
        };
        let me = AggregatorRef {
            account: c.researcher.account(),
            key: HpkePublicKey::from_bytes([1; 32]),
        };
        let later = c.h.time + DAY;
        assert_eq!(
            c.h.refused(
                &c.researcher,
                with(&c, [agg(20), me], QueryKind::Count, later)
            ),
            AccessError::AggregatorIsResearcher(c.researcher.account())
        );
        assert_eq!(
            c.h.refused(
                &c.researcher,
                with(&c, [agg(20), agg(20)], QueryKind::Count, later)
            ),
            AccessError::Duplicate("aggregators")
        );
        assert!(matches!(
            c.h.refused(
                &c.researcher,
                with(
                    &c,
                    [agg(20), agg(21)],
                    QueryKind::Histogram { buckets: 1 },
                    later
                )
            ),
            AccessError::InvalidQuery(_)
        ));
        assert!(matches!(
            c.h.refused(
                &c.researcher,
                with(&c, [agg(20), agg(21)], QueryKind::Count, c.h.time)
            ),
            AccessError::PeriodOver { .. }
        ));
        assert_eq!(c.h.access().study(&study).unwrap().spent, Epsilon::ZERO);
    }

    #[test]
    fn replayed_report_commitments_are_refused() {
        let (mut c, study) = setup();
        let q = query(&mut c, study, 100_000);
        c.h.ok(&c.hospital, commit(q, &[1, 2, 3]));
        assert_eq!(c.h.access().query(&q).unwrap().reports, 3);
        // The same batch again, or a batch repeating one nonce, from any hospital.
        assert_eq!(
            c.h.refused(&c.hospital, commit(q, &[1, 2, 3])),
            AccessError::ReportReplayed {
                query: q,
                nonce: ReportNonce::from_bytes([1; 16])
            }
        );
        assert!(matches!(
            c.h.refused(&c.clinic, commit(q, &[3, 4])),
            AccessError::ReportReplayed { .. }
        ));
        assert_eq!(
            c.h.refused(&c.hospital, commit(q, &[5, 5])),
            AccessError::Duplicate("report nonces")
        );
        assert_eq!(
            c.h.refused(&c.hospital, commit(q, &[6, 5])),
            AccessError::NotInOrder("report nonces")
        );
        assert_eq!(
            c.h.refused(&c.specialist, commit(q, &[7])),
            AccessError::NotCertified(c.specialist.account())
        );
        c.h.ok(&c.clinic, commit(q, &[4]));
        let n = ReportNonce::from_bytes([4; 16]);
        assert_eq!(
            c.h.access().contribution(&q, &n).unwrap().hospital,
            c.clinic.account()
        );
        assert_eq!(
            c.h.access()
                .contribution(&q, &ReportNonce::from_bytes([9; 16])),
            None
        );
        // After the deadline, nothing more.
        c.h.apply_after(DAY, &c.hospital, commit(q, &[8]))
            .unwrap_err();
    }

    #[test]
    fn shares_then_the_result_are_committed_once_each_and_audited() {
        let (mut c, study) = setup();
        let q = query(&mut c, study, 100_000);
        c.h.ok(&c.hospital, commit(q, &[1, 2, 3]));
        let (a, b) = (key(20), key(21));
        for k in [&a, &b] {
            c.h.register(k, Role::Provider, &format!("aggregator {}", k.account()));
        }
        let share = |reports| AccessOp::CommitAggregateShare {
            query: q,
            share: Digest::from_bytes([5; 32]),
            reports,
        };
        let publish = AccessOp::PublishResult {
            query: q,
            result: Digest::from_bytes([6; 32]),
        };
        assert_eq!(
            c.h.refused(&c.hospital, share(3)),
            AccessError::NotAnAggregator {
                query: q,
                account: c.hospital.account()
            }
        );
        assert_eq!(
            c.h.refused(&a, share(1)),
            AccessError::BatchSize {
                reports: 1,
                min: 2,
                committed: 3
            }
        );
        assert!(matches!(
            c.h.refused(&a, share(4)),
            AccessError::BatchSize { .. }
        ));
        c.h.ok(&a, share(3));
        assert!(matches!(
            c.h.refused(&a, share(3)),
            AccessError::AlreadyCommitted { .. }
        ));
        assert_eq!(
            c.h.refused(&c.researcher, publish.clone()),
            AccessError::SharesMissing(q)
        );
        c.h.ok(&b, share(3));
        assert!(matches!(
            c.h.refused(&c.specialist, publish.clone()),
            AccessError::NotTheResearcher { .. }
        ));
        c.h.ok(&c.researcher, publish.clone());
        assert!(matches!(
            c.h.refused(&c.researcher, publish),
            AccessError::AlreadyCommitted { .. }
        ));
        let query = c.h.access().query(&q).unwrap();
        assert_eq!(query.result, Some(Digest::from_bytes([6; 32])));
        let trail: Vec<_> =
            c.h.access()
                .study_trail(&study)
                .into_iter()
                .map(|e| e.event.clone())
                .collect();
        assert!(matches!(trail[0], AccessEvent::StudyApproved { .. }));
        assert!(matches!(trail[1], AccessEvent::QueryAnnounced { .. }));
        assert!(matches!(
            trail[2],
            AccessEvent::ReportsCommitted { reports: 3, .. }
        ));
        assert!(matches!(
            trail[3],
            AccessEvent::AggregateShareCommitted { .. }
        ));
        assert!(matches!(trail[5], AccessEvent::QueryResultPublished { .. }));
        assert_eq!(trail.len(), 6);
        // Nothing about the study names a patient: no patient trail grew.
        assert_eq!(c.h.access().audit_len(&c.patient.account()), 1);
    }

    fn qi(year: u16, zip: &str) -> QuasiIdentifiers {
        use crate::pseudonym::generalize::{AdministrativeGender, BirthYear};
        QuasiIdentifiers {
            birth: BirthYear::Year(year),
            zip3: zip.parse().unwrap(),
            gender: AdministrativeGender::Female,
        }
    }

    /// `n` enrolled subjects (accounts of keys 30…) with a made-up grant each.
    fn subjects(n: u8) -> (crate::pseudonym::DerivedBackend, Vec<(AccountId, GrantId)>) {
        let mut vault = crate::pseudonym::DerivedBackend::new(crate::pseudonym::Scheme::KeyedHash);
        let list: Vec<_> = (0..n)
            .map(|i| {
                let a = key(30 + i).account();
                vault.enroll(a.into()).unwrap();
                (a, GrantId::from_bytes([i; 32]))
            })
            .collect();
        (vault, list)
    }

    #[test]
    fn a_study_release_states_its_class_size_on_chain() {
        let (mut c, study) = setup();
        let (mut vault, list) = subjects(10);
        let s = c.h.access().study(&study).unwrap().clone();
        let quasi = vec![qi(1961, "021"); 10];
        let p = prepare_study_release(
            &mut vault,
            &s,
            10,
            Epoch::new(1),
            Digest::from_bytes([4; 32]),
            &list,
            &quasi,
            &mut rand_core::OsRng,
        )
        .unwrap();
        let id = ReleaseId::of_tx(c.h.next_tx_id(&c.hospital, &p.op));
        c.h.ok(&c.hospital, p.op.clone());
        assert_eq!(
            c.h.access().study_release(&id),
            Some(&StudyRelease {
                study,
                min_class_size: 10
            })
        );
        assert_eq!(
            c.h.access().release(&id).unwrap().recipient,
            c.researcher.account()
        );
        let trail = c.h.access().study_trail(&study);
        assert!(matches!(
            trail.last().unwrap().event,
            AccessEvent::StudyDataReleased {
                min_class_size: 10,
                ..
            }
        ));
        // Stating less than the approval, or naming no study, is refused.
        let with = |study, k| match p.op.clone() {
            AccessOp::ReleaseStudyData {
                epoch,
                dataset,
                subjects,
                ..
            } => AccessOp::ReleaseStudyData {
                study,
                min_class_size: k,
                epoch,
                dataset,
                subjects,
            },
            _ => unreachable!(),
        };
        assert_eq!(
            c.h.refused(&c.hospital, with(study, 9)),
            AccessError::ClassSizeBelowApproval {
                study,
                stated: 9,
                approved: 10
            }
        );
        let unknown = StudyId::from_bytes([1; 32]);
        assert_eq!(
            c.h.refused(&c.hospital, with(unknown, 10)),
            AccessError::UnknownStudy(unknown)
        );
        assert_eq!(
            c.h.refused(&c.specialist, with(study, 10)),
            AccessError::NotCertified(c.specialist.account())
        );
    }

    #[test]
    fn the_release_api_refuses_classes_under_k_and_names_them() {
        let (c, study) = setup();
        let s = c.h.access().study(&study).unwrap().clone();
        let (mut vault, list) = subjects(13);
        let mut quasi = vec![qi(1961, "021"); 10];
        quasi.extend([qi(1980, "100"), qi(1980, "100"), qi(1933, "945")]);
        let err = prepare_study_release(
            &mut vault,
            &s,
            DEFAULT_MIN_CLASS_SIZE,
            Epoch::new(1),
            Digest::default(),
            &list,
            &quasi,
            &mut rand_core::OsRng,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ReleaseBuildError::ClassesTooSmall {
                k: 10,
                classes: vec![
                    SmallClass {
                        class: qi(1933, "945"),
                        size: 1
                    },
                    SmallClass {
                        class: qi(1980, "100"),
                        size: 2
                    },
                ]
            }
        );
        assert_eq!(
            err.to_string(),
            "2 equivalence class(es) under k = 10: born 1933, ZIP 945, female (1 row(s)); \
             born 1980, ZIP 100, female (2 row(s))"
        );
        let prep = |vault: &mut crate::pseudonym::DerivedBackend, s: &Study, k, quasi: &[_]| {
            prepare_study_release(
                vault,
                s,
                k,
                Epoch::new(1),
                Digest::default(),
                &list[..quasi.len()],
                quasi,
                &mut rand_core::OsRng,
            )
        };
        // A smaller k needs the ethics approval to say so.
        assert_eq!(
            prep(&mut vault, &s, 2, &quasi[10..12]).unwrap_err(),
            ReleaseBuildError::ClassSizeBelowApproval {
                asked: 2,
                approved: 10
            }
        );
        let lenient = Study {
            min_class_size: 2,
            ..s.clone()
        };
        assert!(prep(&mut vault, &lenient, 2, &quasi[10..12]).is_ok());
        assert_eq!(
            prepare_study_release(
                &mut vault,
                &s,
                10,
                Epoch::new(1),
                Digest::default(),
                &list,
                &quasi[..3],
                &mut rand_core::OsRng,
            )
            .unwrap_err(),
            ReleaseBuildError::QuasiIdentifiersMismatch {
                quasi: 3,
                subjects: 13
            }
        );
    }

    #[test]
    fn a_study_approved_for_smaller_classes_may_release_them() {
        let mut c = Cast::new();
        let op = AccessOp::ApproveStudy {
            researcher: c.researcher.account(),
            protocol: Digest::from_bytes([7; 32]),
            budget: eps(1),
            min_class_size: 3,
        };
        let study = StudyId::of_tx(c.h.next_tx_id(&c.authority, &op));
        c.h.ok(&c.authority, op);
        let s = c.h.access().study(&study).unwrap().clone();
        let (mut vault, list) = subjects(3);
        let p = prepare_study_release(
            &mut vault,
            &s,
            3,
            Epoch::new(1),
            Digest::default(),
            &list,
            &[qi(1970, "021"); 3],
            &mut rand_core::OsRng,
        )
        .unwrap();
        c.h.ok(&c.hospital, p.op);
    }

    #[test]
    fn nonces_are_per_pseudonym_and_query() {
        use crate::pseudonym::Pseudonym;
        let (p1, p2) = (
            Pseudonym::from_bytes([1; 32]),
            Pseudonym::from_bytes([2; 32]),
        );
        let (q1, q2) = (QueryId::from_bytes([1; 32]), QueryId::from_bytes([2; 32]));
        assert_eq!(ReportNonce::derive(&p1, &q1), ReportNonce::derive(&p1, &q1));
        assert_ne!(ReportNonce::derive(&p1, &q1), ReportNonce::derive(&p1, &q2));
        assert_ne!(ReportNonce::derive(&p1, &q1), ReportNonce::derive(&p2, &q1));
    }

    #[test]
    fn epsilon_displays_exactly() {
        assert_eq!(eps(500_000).to_string(), "ε=0.5");
        assert_eq!(eps(2_000_000).to_string(), "ε=2");
        assert_eq!(eps(1_250_001).to_string(), "ε=1.250001");
    }

    #[test]
    fn the_largest_report_commitment_and_study_release_fit_in_a_transaction() {
        let ns: Vec<_> = (0..MAX_REPORTS_PER_COMMIT)
            .map(|i| ReportNonce::from_bytes([0xff; 16].map(|b: u8| b ^ (i as u8))))
            .collect();
        let op = AccessOp::CommitReports {
            query: QueryId::from_bytes([0xff; 32]),
            batch: Digest::from_bytes([0xff; 32]),
            nonces: BoundedVec::try_from(ns).unwrap(),
        };
        let tx = Transaction::sign(&key(1), ChainId::default(), u64::MAX, Payload::Access(op));
        let bytes = tx.encode();
        assert!(
            bytes.len() <= Transaction::MAX_ENCODED_LEN,
            "{}",
            bytes.len()
        );
        let subjects: Vec<_> = (0..MAX_RELEASE_SUBJECTS)
            .map(|i| ReleasedSubject {
                pseudonym: Pseudonym::from_bytes([i as u8; 32]),
                consent: crate::access::ConsentCommitment::from_bytes([0xff; 32]),
            })
            .collect();
        let op = AccessOp::ReleaseStudyData {
            study: StudyId::from_bytes([0xff; 32]),
            min_class_size: u32::MAX,
            epoch: Epoch::MAX,
            dataset: Digest::from_bytes([0xff; 32]),
            subjects: BoundedVec::try_from(subjects).unwrap(),
        };
        let tx = Transaction::sign(&key(1), ChainId::default(), u64::MAX, Payload::Access(op));
        let bytes = tx.encode();
        assert!(
            bytes.len() <= Transaction::MAX_ENCODED_LEN,
            "{}",
            bytes.len()
        );
        assert_eq!(Transaction::decode(&bytes).unwrap(), tx);
    }

    fn kind_strategy() -> impl Strategy<Value = QueryKind> {
        prop_oneof![
            Just(QueryKind::Count),
            any::<u64>().prop_map(|max| QueryKind::Sum { max }),
            any::<u32>().prop_map(|buckets| QueryKind::Histogram { buckets }),
            (any::<u64>(), any::<u32>()).prop_map(|(max, len)| QueryKind::SumVec { max, len }),
        ]
    }

    proptest! {
        /// Every study and query operation encodes canonically and decodes back.
        #[test]
        fn study_ops_round_trip(
            kind in kind_strategy(),
            a in any::<[u8; 32]>(),
            e in any::<u64>(),
            m in any::<u32>(),
            n in proptest::collection::vec(any::<[u8; 16]>(), 0..64),
        ) {
            let signer = Keypair::from_seed(&[3; 32]);
            let ops = [
                AccessOp::ApproveStudy {
                    researcher: AccountId::from_bytes(a),
                    protocol: Digest::from_bytes(a),
                    budget: eps(e),
                    min_class_size: m,
                },
                AccessOp::AnnounceQuery {
                    study: StudyId::from_bytes(a),
                    kind,
                    cohort: Digest::from_bytes(a),
                    epsilon: eps(e),
                    min_batch: m,
                    aggregators: [agg(1), agg(2)],
                    deadline: e,
                },
                AccessOp::CommitReports {
                    query: QueryId::from_bytes(a),
                    batch: Digest::from_bytes(a),
                    nonces: BoundedVec::try_from(
                        n.iter().map(|b| ReportNonce::from_bytes(*b)).collect::<Vec<_>>(),
                    ).unwrap(),
                },
                AccessOp::CommitAggregateShare {
                    query: QueryId::from_bytes(a),
                    share: Digest::from_bytes(a),
                    reports: e,
                },
                AccessOp::PublishResult {
                    query: QueryId::from_bytes(a),
                    result: Digest::from_bytes(a),
                },
                AccessOp::ReleaseStudyData {
                    study: StudyId::from_bytes(a),
                    min_class_size: m,
                    epoch: Epoch::new(e),
                    dataset: Digest::from_bytes(a),
                    subjects: BoundedVec::default(),
                },
            ];
            for op in ops {
                let tx = Transaction::sign(&signer, ChainId::default(), e, Payload::Access(op));
                let bytes = tx.encode();
                let decoded = Transaction::decode(&bytes).unwrap();
                prop_assert_eq!(decoded.encode(), bytes);
                prop_assert_eq!(decoded, tx);
            }
        }
    }
}
