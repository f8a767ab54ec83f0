//! Research queries answered without anyone seeing the records: Prio3 secret-shared
//! aggregation with differential privacy (feature `research-queries`).
//!
//! The chain governs a query (see [`access::study`](crate::access::study)); this module holds
//! the roles that answer it, as plain functions and types without any network:
//!
//! * a **hospital** [`shard`]s one measurement per eligible patient into a [`Report`]: a public
//!   share and two input shares, each encrypted with HPKE (X25519, HKDF-SHA256,
//!   ChaCha20-Poly1305) to one aggregator's key. [`shard_cohort`] does it for a hospital's
//!   patients, counting only those whose consent holds as of the query's announcement, with
//!   nonces derived from each patient's research-window pseudonym;
//! * each **aggregator** ([`Aggregator`]) decrypts its input shares, runs Prio3's verification
//!   with the other aggregator ([`Aggregator::prepare`], [`Aggregator::finish`]), sums the
//!   output shares of the reports whose validity proof holds, and releases an
//!   [`AggregateShare`] with discrete Laplace noise calibrated to the query's ε
//!   ([`Aggregator::finalize`]), only for at least the query's minimum batch;
//! * the **collector** [`unshard`]s the two aggregate shares into a [`QueryResult`], mapping
//!   each field element back to a signed integer (the noise may take an answer below zero,
//!   which wraps around the field's modulus).
//!
//! # What it guarantees
//!
//! * **No single party sees a row.** A report's input shares are additive shares of the
//!   measurement over a 128-bit prime field: either share alone is uniformly distributed,
//!   whatever the measurement, and each is readable only by its aggregator. The researcher
//!   sees only the sum of the two noised aggregate shares.
//! * **ε-differential privacy if one aggregator is honest.** Each aggregator adds its own
//!   discrete Laplace noise, with scale sensitivity/ε, before releasing its share; an honest
//!   aggregator's noise alone makes the answer ε-DP (pure DP, substitution neighbours), so a
//!   colluding aggregator and researcher learn no more than ε allows about any patient.
//! * **Robustness.** A report outside the query's domain (a hospital adding 1,000 to a count)
//!   fails Prio3's validity proof and is excluded from the sum; a report is aggregated at most
//!   once (a replayed nonce is refused by the aggregators, and by the chain when committed).
//!
//! # What it does not
//!
//! * It does not protect against both aggregators colluding: together they hold the reports.
//! * It does not check a hospital's measurement is *true*, only that it is in range: a hospital
//!   can still lie within the domain (report 1 for a patient without the condition).
//! * It does not hide who takes part: a report's nonce is committed on chain, and the hospital
//!   knows its eligible patients. For a count or a sum a hospital reports every consenting
//!   patient (0 for those outside the cohort), so the number of reports does not reveal the
//!   cohort's size; for a histogram, define one bucket as "outside the cohort".
//! * Budgets compose by addition (basic composition): ε of the study is the sum of the ε of
//!   its queries, with no tighter accounting.
//!
//! # Status of the dependency
//!
//! `prio` 0.18 implements the IETF CFRG VDAF draft `draft-irtf-cfrg-vdaf-18`, which is not yet
//! an RFC. Its authors mark the 0.18 line *supported* and say the VDAF support "is still
//! evolving along with the DAP and VDAF specifications": a later draft can change the wire
//! format and a minor version can break the API. The Prio3 VDAFs and the differential-privacy
//! module used here are in its default, semver-stable API (not behind its `experimental`
//! feature). Its README claims no independent audit.
//!
//! ```
//! use medledger::access::{Epsilon, QueryId, QueryKind, ReportNonce};
//! use medledger::research::*;
//!
//! let (leader, helper) = (AggregatorKeypair::generate(), AggregatorKeypair::generate());
//! let params = QueryParams {
//!     query: QueryId::from_bytes([1; 32]),
//!     kind: QueryKind::Count,
//!     epsilon: Epsilon::from_micros(1_000_000),
//!     min_batch: 3,
//!     keys: [leader.public(), helper.public()],
//! };
//! let verify_key = VerifyKey::generate();
//! let mut aggs = [
//!     Aggregator::new(&params, 0, leader, verify_key.clone())?,
//!     Aggregator::new(&params, 1, helper, verify_key)?,
//! ];
//! for (i, has_condition) in [true, false, true, true].into_iter().enumerate() {
//!     let report = shard(&params, &Measurement::Count(has_condition), ReportNonce::from_bytes([i as u8; 16]))?;
//!     let [a, b] = &mut aggs;
//!     let (ma, mb) = (a.prepare(&report)?, b.prepare(&report)?);
//!     a.finish(&mb)?;
//!     b.finish(&ma)?;
//! }
//! let [a, b] = aggs;
//! let result = unshard(&params, &a.finalize()?, &b.finalize()?)?;
//! assert_eq!(result.reports, 4);
//! println!("about {} patients (true answer 3)", result.values[0]);
//! # Ok::<(), QueryError>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use prio::codec::{Encode, ParameterizedDecode};
use prio::dp::distributions::PureDpDiscreteLaplace;
use prio::dp::{DifferentialPrivacyStrategy, PureDpBudget, Rational};
use prio::field::{Field128, FieldElementWithInteger};
use prio::vdaf::prio3::{
    Prio3Histogram, Prio3InputShare, Prio3PublicShare, Prio3SumVec, Prio3VerifierShare,
    Prio3VerifyState,
};
use prio::vdaf::{
    Aggregatable, AggregateShare as PrioAggregateShare, Aggregator as _, AggregatorWithNoise,
    Client as _, OutputShare, VerifyTransition,
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::access::{
    research_context, AccessOp, AccessState, Epsilon, GrantId, HpkePublicKey, Query, QueryId,
    QueryKind, ReleaseAuditError, ReportNonce, MAX_REPORTS_PER_COMMIT,
};
use crate::codec::{BoundedBytes, BoundedVec, Canonical};
use crate::hash::{domain, AccountId, Digest};
use crate::pseudonym::{Epoch, PatientHandle, PseudonymBackend, PseudonymError};

mod error;
#[cfg(test)]
mod tests;

pub use error::QueryError;

/// The largest encrypted input share a report carries, in bytes (a 1,024-bucket histogram's
/// leader share is about 17 KiB).
pub const MAX_SHARE_LEN: usize = 64 * 1024;
/// The largest public share a report carries, in bytes.
pub const MAX_PUBLIC_SHARE_LEN: usize = 256;
/// The most values an aggregate share or a result holds: the largest histogram or vector.
pub const MAX_OUTPUT_LEN: usize = 1024;

/// The HPKE `info` prefix binding an input share to this use (followed by the query id and the
/// aggregator's index).
const HPKE_INFO: &[u8] = b"medledger 2026-12 research input share v1";
/// The Prio3 application context prefix (followed by the query id), so that a report made for
/// one query never verifies in another.
const VDAF_CTX: &[u8] = b"medledger 2026-12 research query v1";

type Kem = X25519HkdfSha256;

/// What the roles need to know about a query: what the chain's announcement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParams {
    /// The query.
    pub query: QueryId,
    /// What it computes.
    pub kind: QueryKind,
    /// Its privacy parameter: each aggregator's noise alone gives ε-DP.
    pub epsilon: Epsilon,
    /// The fewest reports an aggregator releases a share of.
    pub min_batch: u32,
    /// The aggregators' HPKE keys, the leader first.
    pub keys: [HpkePublicKey; 2],
}

impl QueryParams {
    /// The parameters of a query announced on chain.
    pub fn of(query: &Query) -> Self {
        Self {
            query: query.id,
            kind: query.kind,
            epsilon: query.epsilon,
            min_batch: query.min_batch,
            keys: [query.aggregators[0].key, query.aggregators[1].key],
        }
    }

    fn ctx(&self) -> Vec<u8> {
        [VDAF_CTX, self.query.as_bytes()].concat()
    }

    fn info(&self, index: usize) -> Vec<u8> {
        [HPKE_INFO, self.query.as_bytes(), &[index as u8]].concat()
    }
}

/// The Prio3 instance answering a query kind. Counts and sums are one-entry vector sums, so
/// that every kind takes prio's noise path over the same field.
#[derive(Clone, Debug)]
pub(crate) enum Engine {
    SumVec(Prio3SumVec),
    Histogram(Prio3Histogram),
}

/// Calls `$body` with `$v` bound to the Prio3 instance, whatever its type.
macro_rules! with_vdaf {
    ($engine:expr, $v:ident => $body:expr) => {
        match $engine {
            Engine::SumVec($v) => $body,
            Engine::Histogram($v) => $body,
        }
    };
}

/// A chunk length near the square root of the circuit's width, as prio recommends.
fn chunk_length(width: u64) -> usize {
    ((width as f64).sqrt().ceil() as usize).max(1)
}

impl Engine {
    pub(crate) fn new(kind: QueryKind) -> Result<Self, QueryError> {
        kind.check().map_err(|_| QueryError::BadParameters(kind))?;
        let bits = |max: u64| u64::from(64 - max.leading_zeros());
        let r = match kind {
            QueryKind::Count => Prio3SumVec::new_sum_vec(2, 1, 1, 1).map(Engine::SumVec),
            QueryKind::Sum { max } => {
                Prio3SumVec::new_sum_vec(2, u128::from(max), 1, chunk_length(bits(max)))
                    .map(Engine::SumVec)
            }
            QueryKind::SumVec { max, len } => Prio3SumVec::new_sum_vec(
                2,
                u128::from(max),
                len as usize,
                chunk_length(bits(max) * u64::from(len)),
            )
            .map(Engine::SumVec),
            QueryKind::Histogram { buckets } => {
                Prio3Histogram::new_histogram(2, buckets as usize, chunk_length(u64::from(buckets)))
                    .map(Engine::Histogram)
            }
        };
        r.map_err(|e| QueryError::Vdaf(e.to_string()))
    }

    /// The measurement in prio's form for this kind.
    fn encode(kind: QueryKind, m: &Measurement) -> Result<PrioMeasurement, QueryError> {
        let mismatch = || QueryError::MeasurementMismatch { kind };
        Ok(match (kind, m) {
            (QueryKind::Count, Measurement::Count(b)) => PrioMeasurement::Vec(vec![u128::from(*b)]),
            (QueryKind::Sum { max }, Measurement::Value(v)) if *v <= max => {
                PrioMeasurement::Vec(vec![u128::from(*v)])
            }
            (QueryKind::Histogram { buckets }, Measurement::Bucket(b)) if *b < buckets => {
                PrioMeasurement::Bucket(*b as usize)
            }
            (QueryKind::SumVec { max, len }, Measurement::Vector(v))
                if v.len() == len as usize && v.iter().all(|x| *x <= max) =>
            {
                PrioMeasurement::Vec(v.iter().map(|x| u128::from(*x)).collect())
            }
            _ => return Err(mismatch()),
        })
    }
}

enum PrioMeasurement {
    Vec(Vec<u128>),
    Bucket(usize),
}

/// One patient's measurement for a query.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Measurement {
    /// For a [`QueryKind::Count`]: whether the patient is in the cohort.
    Count(bool),
    /// For a [`QueryKind::Sum`]: a value in `0..=max` (0 outside the cohort).
    Value(u64),
    /// For a [`QueryKind::Histogram`]: the patient's bucket.
    Bucket(u32),
    /// For a [`QueryKind::SumVec`]: `len` values in `0..=max`.
    Vector(Vec<u64>),
}

impl Measurement {
    /// The neutral measurement of `kind`, which adds nothing to the answer: what a hospital
    /// reports for a consenting patient outside the cohort. A histogram has none (every report
    /// counts in a bucket).
    pub fn neutral(kind: QueryKind) -> Option<Self> {
        match kind {
            QueryKind::Count => Some(Measurement::Count(false)),
            QueryKind::Sum { .. } => Some(Measurement::Value(0)),
            QueryKind::SumVec { len, .. } => Some(Measurement::Vector(vec![0; len as usize])),
            _ => None,
        }
    }
}

/// An input share encrypted to one aggregator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShare {
    /// The HPKE encapsulated key.
    pub encapped: [u8; 32],
    /// The ciphertext of the encoded input share.
    pub ciphertext: BoundedBytes<MAX_SHARE_LEN>,
}

/// One patient's report: what a hospital sends to both aggregators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The query.
    pub query: QueryId,
    /// The report's nonce.
    pub nonce: ReportNonce,
    /// Prio3's public share.
    pub public_share: BoundedBytes<MAX_PUBLIC_SHARE_LEN>,
    /// The input shares, the leader's first.
    pub shares: [SealedShare; 2],
}

impl Canonical for Report {
    const NAME: &'static str = "research report";
    /// Version, query, nonce, the public share and two sealed shares with their lengths.
    const MAX_ENCODED_LEN: usize =
        1 + 32 + 16 + 3 + MAX_PUBLIC_SHARE_LEN + 2 * (32 + 3 + MAX_SHARE_LEN);
}

impl Report {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(self)
    }

    /// Decodes a report, refusing anything longer than [`Report::MAX_ENCODED_LEN`] before
    /// decoding and any trailing bytes.
    ///
    /// # Errors
    ///
    /// [`QueryError::Decode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, QueryError> {
        crate::codec::decode(bytes).map_err(|e| QueryError::Decode(e.to_string()))
    }

    /// The report's digest (of its canonical encoding).
    pub fn digest(&self) -> Digest {
        let mut buf = vec![0];
        buf.extend_from_slice(&self.encode());
        Digest::from_bytes(domain::RESEARCH_QUERY_COMMIT.hash(&buf))
    }
}

/// Shards `measurement` into a report for `params`' query, under `nonce`, with each input
/// share encrypted to its aggregator.
///
/// # Errors
///
/// [`QueryError::MeasurementMismatch`] if the measurement is not of the query's kind or out of
/// its range; [`QueryError::BadKey`] if an aggregator key is not an X25519 key;
/// [`QueryError::Vdaf`] / [`QueryError::Encryption`] if prio or HPKE fail.
pub fn shard(
    params: &QueryParams,
    measurement: &Measurement,
    nonce: ReportNonce,
) -> Result<Report, QueryError> {
    let engine = Engine::new(params.kind)?;
    let m = Engine::encode(params.kind, measurement)?;
    let ctx = params.ctx();
    let n = nonce.to_bytes();
    let (public, inputs) = match (&engine, m) {
        (Engine::SumVec(v), PrioMeasurement::Vec(m)) => v.shard(&ctx, &m, &n),
        (Engine::Histogram(v), PrioMeasurement::Bucket(b)) => v.shard(&ctx, &b, &n),
        _ => return Err(QueryError::MeasurementMismatch { kind: params.kind }),
    }
    .map_err(|e| QueryError::Vdaf(e.to_string()))?;
    let encoded = |x: &dyn EncodeDyn| x.bytes();
    let public = encoded(&public);
    let [a, b]: [Prio3InputShare<Field128, 32>; 2] = inputs
        .try_into()
        .map_err(|_| QueryError::Vdaf("prio returned other than two input shares".into()))?;
    seal_report(params, nonce, public, [encoded(&a), encoded(&b)])
}

/// Encodes prio messages (object-safe, for the closure above).
trait EncodeDyn {
    fn bytes(&self) -> Vec<u8>;
}

impl<T: Encode> EncodeDyn for T {
    fn bytes(&self) -> Vec<u8> {
        self.get_encoded().unwrap_or_default()
    }
}

/// Encrypts encoded input shares to the aggregators into a report.
pub(crate) fn seal_report(
    params: &QueryParams,
    nonce: ReportNonce,
    public: Vec<u8>,
    inputs: [Vec<u8>; 2],
) -> Result<Report, QueryError> {
    let public_share = BoundedBytes::try_from(public).map_err(|_| QueryError::TooLarge {
        what: "public share",
        max: MAX_PUBLIC_SHARE_LEN,
    })?;
    let aad = aad(&nonce, public_share.as_slice());
    let mut sealed = Vec::with_capacity(2);
    for (index, input) in inputs.iter().enumerate() {
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(params.keys[index].as_bytes())
            .map_err(|_| QueryError::BadKey { index })?;
        let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeS::Base,
            &pk,
            &params.info(index),
            input,
            &aad,
        )
        .map_err(|_| QueryError::Encryption)?;
        let mut e = [0; 32];
        e.copy_from_slice(&encapped.to_bytes());
        sealed.push(SealedShare {
            encapped: e,
            ciphertext: BoundedBytes::try_from(ciphertext).map_err(|_| QueryError::TooLarge {
                what: "input share",
                max: MAX_SHARE_LEN,
            })?,
        });
    }
    let [a, b]: [SealedShare; 2] = sealed.try_into().expect("two shares");
    Ok(Report {
        query: params.query,
        nonce,
        public_share,
        shares: [a, b],
    })
}

fn aad(nonce: &ReportNonce, public: &[u8]) -> Vec<u8> {
    [&nonce.to_bytes()[..], public].concat()
}

/// What a hospital's [`shard_cohort`] produced.
#[derive(Clone, Debug)]
pub struct CohortReports {
    /// One report per patient whose consent held, sorted by nonce.
    pub reports: Vec<Report>,
    /// The patients left out, each with why its consent did not hold.
    pub excluded: Vec<(AccountId, ReleaseAuditError)>,
}

/// A hospital's reports for a query announced on chain: for each `(patient, grant,
/// measurement)`, a report if the grant is the patient's consent to the study's researcher
/// reading for research, on its relationship with `hospital`, as of the query's announcement
/// (see [`AccessState::check_query_consent`]); otherwise the patient contributes nothing. Each
/// nonce derives from the patient's pseudonym for the [research context](research_context) of
/// the researcher in `epoch`, issued by `vault` (patients enrolled as
/// `PatientHandle::from(account)`).
///
/// # Errors
///
/// [`QueryError::UnknownQuery`], [`QueryError::Pseudonym`] if the vault fails,
/// [`QueryError::Replayed`] if a patient is listed twice, or [`shard`]'s errors.
pub fn shard_cohort(
    state: &AccessState,
    query: &QueryId,
    hospital: AccountId,
    vault: &mut dyn PseudonymBackend,
    epoch: Epoch,
    patients: &[(AccountId, GrantId, Measurement)],
) -> Result<CohortReports, QueryError> {
    let q = state.query(query).ok_or(QueryError::UnknownQuery(*query))?;
    let researcher = state
        .study(&q.study)
        .ok_or(QueryError::UnknownQuery(*query))?
        .researcher;
    let params = QueryParams::of(q);
    let context = research_context(researcher, epoch);
    let mut reports = Vec::new();
    let mut excluded = Vec::new();
    for (patient, grant, m) in patients {
        if let Err(why) = state.check_research_grant(*grant, *patient, hospital, researcher, q.at) {
            excluded.push((*patient, why));
            continue;
        }
        let pseudonym = vault.pseudonym(&PatientHandle::from(*patient), &context)?;
        reports.push(shard(&params, m, ReportNonce::derive(&pseudonym, query))?);
    }
    reports.sort_unstable_by_key(|r| r.nonce);
    if let Some(w) = reports.windows(2).find(|w| w[0].nonce == w[1].nonce) {
        return Err(QueryError::Replayed(w[0].nonce));
    }
    Ok(CohortReports { reports, excluded })
}

impl From<PseudonymError> for QueryError {
    fn from(e: PseudonymError) -> Self {
        QueryError::Pseudonym(e)
    }
}

/// The operations committing a hospital's `reports` on chain: one [`AccessOp::CommitReports`]
/// per [`MAX_REPORTS_PER_COMMIT`] reports, nonces in ascending order, each with the digest of
/// its batch.
///
/// # Errors
///
/// [`QueryError::WrongQuery`] if a report is for another query; [`QueryError::Replayed`] if two
/// share a nonce.
pub fn commit_ops(query: &QueryId, reports: &[Report]) -> Result<Vec<AccessOp>, QueryError> {
    let mut sorted: Vec<&Report> = reports.iter().collect();
    sorted.sort_unstable_by_key(|r| r.nonce);
    if let Some(r) = sorted.iter().find(|r| r.query != *query) {
        return Err(QueryError::WrongQuery(r.query));
    }
    if let Some(w) = sorted.windows(2).find(|w| w[0].nonce == w[1].nonce) {
        return Err(QueryError::Replayed(w[0].nonce));
    }
    Ok(sorted
        .chunks(MAX_REPORTS_PER_COMMIT)
        .map(|chunk| {
            let mut h = domain::RESEARCH_QUERY_COMMIT.hasher();
            h.update(&[1]);
            for r in chunk {
                h.update(r.digest().as_bytes());
            }
            AccessOp::CommitReports {
                query: *query,
                batch: Digest::from_bytes(*h.finalize().as_bytes()),
                nonces: BoundedVec::try_from(chunk.iter().map(|r| r.nonce).collect::<Vec<_>>())
                    .expect("a chunk fits"),
            }
        })
        .collect())
}

/// An aggregator's HPKE key pair. The private key never prints and is erased on drop.
pub struct AggregatorKeypair {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: HpkePublicKey,
}

impl AggregatorKeypair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair();
        Self::from_parts(secret, public)
    }

    /// The key pair derived from 32 bytes of secret input keying material (deterministic: for
    /// tests and key management that keeps seeds).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let (secret, public) = Kem::derive_keypair(seed);
        Self::from_parts(secret, public)
    }

    fn from_parts(
        secret: <Kem as hpke::Kem>::PrivateKey,
        public: <Kem as hpke::Kem>::PublicKey,
    ) -> Self {
        let mut pk = [0; 32];
        pk.copy_from_slice(&public.to_bytes());
        Self {
            secret,
            public: HpkePublicKey::from_bytes(pk),
        }
    }

    /// The public key, to announce on chain.
    pub fn public(&self) -> HpkePublicKey {
        self.public
    }
}

impl fmt::Debug for AggregatorKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatorKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The verification key the two aggregators of a query share, and nobody else knows (the
/// hospitals least of all: knowing it would let one forge a proof). Compared in constant time,
/// never printed, erased on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct VerifyKey([u8; 32]);

impl VerifyKey {
    /// A fresh key from the operating system's randomness.
    ///
    /// # Panics
    ///
    /// If the operating system has no randomness to give.
    pub fn generate() -> Self {
        let mut k = [0; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
        Self(k)
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl PartialEq for VerifyKey {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl Eq for VerifyKey {}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifyKey(<redacted>)")
    }
}

/// What one aggregator sends the other about a report during verification: its verifier
/// share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierMessage {
    /// The report.
    pub nonce: ReportNonce,
    /// The sending aggregator's index.
    pub from: u8,
    /// The encoded Prio3 verifier share.
    pub share: Vec<u8>,
}

/// An aggregator of one query: decrypts its input shares, verifies them with the other
/// aggregator, sums the valid ones and releases one noised aggregate share.
pub struct Aggregator {
    params: QueryParams,
    engine: Engine,
    index: usize,
    keypair: AggregatorKeypair,
    verify_key: VerifyKey,
    ctx: Vec<u8>,
    seen: HashSet<ReportNonce>,
    pending: HashMap<ReportNonce, Pending>,
    sum: PrioAggregateShare<Field128>,
    accepted: u64,
    rejected: u64,
}

struct Pending {
    state: Prio3VerifyState<Field128, 32>,
    own: Prio3VerifierShare<Field128, 32>,
}

impl fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregator")
            .field("query", &self.params.query)
            .field("index", &self.index)
            .field("accepted", &self.accepted)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl Aggregator {
    /// Aggregator `index` (0, the leader, or 1) of `params`' query, holding `keypair` (whose
    /// public key must be the one announced) and the shared `verify_key`.
    ///
    /// # Errors
    ///
    /// [`QueryError::NotThisAggregator`] if the index is not 0 or 1 or the key is not the
    /// announced one; [`QueryError::BadParameters`] for a query kind out of bounds.
    pub fn new(
        params: &QueryParams,
        index: usize,
        keypair: AggregatorKeypair,
        verify_key: VerifyKey,
    ) -> Result<Self, QueryError> {
        if index > 1 || params.keys[index] != keypair.public {
            return Err(QueryError::NotThisAggregator { index });
        }
        let engine = Engine::new(params.kind)?;
        let sum = with_vdaf!(&engine, v => v.aggregate_init(&()));
        Ok(Self {
            ctx: params.ctx(),
            params: params.clone(),
            engine,
            index,
            keypair,
            verify_key,
            seen: HashSet::new(),
            pending: HashMap::new(),
            sum,
            accepted: 0,
            rejected: 0,
        })
    }

    /// Reports whose validity proof held, aggregated so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Reports refused by the validity proof (or undecryptable, or malformed) so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Decrypts this aggregator's share of `report` and starts verifying it: returns the
    /// message for the other aggregator. A nonce is accepted once, whatever happens next.
    ///
    /// # Errors
    ///
    /// [`QueryError::WrongQuery`], [`QueryError::Replayed`] for a nonce seen before,
    /// [`QueryError::Decryption`] if the share does not open (not encrypted to this key, or
    /// tampered with), [`QueryError::Malformed`] if it does not decode. Each counts as
    /// rejected, except replays and reports of another query, which are not this query's.
    pub fn prepare(&mut self, report: &Report) -> Result<VerifierMessage, QueryError> {
        if report.query != self.params.query {
            return Err(QueryError::WrongQuery(report.query));
        }
        if !self.seen.insert(report.nonce) {
            return Err(QueryError::Replayed(report.nonce));
        }
        let r = self.start(report);
        if r.is_err() {
            self.rejected += 1;
        }
        r
    }

    /// The decrypted, decoded input share of `report` for this aggregator: its whole view of
    /// the report's measurement.
    fn open(&self, report: &Report) -> Result<Vec<u8>, QueryError> {
        let sealed = &report.shares[self.index];
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.encapped)
            .map_err(|_| QueryError::Decryption(report.nonce))?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.keypair.secret,
            &encapped,
            &self.params.info(self.index),
            sealed.ciphertext.as_slice(),
            &aad(&report.nonce, report.public_share.as_slice()),
        )
        .map_err(|_| QueryError::Decryption(report.nonce))
    }

    fn start(&mut self, report: &Report) -> Result<VerifierMessage, QueryError> {
        let input = self.open(report)?;
        let nonce = report.nonce;
        let malformed = |_| QueryError::Malformed(nonce);
        let n = nonce.to_bytes();
        let key = &self.verify_key.0;
        let (state, own) = with_vdaf!(&self.engine, v => {
            let public = Prio3PublicShare::get_decoded_with_param(v, report.public_share.as_slice())
                .map_err(malformed)?;
            let share = Prio3InputShare::get_decoded_with_param(&(v, self.index), &input)
                .map_err(malformed)?;
            v.verify_init(key, &self.ctx, self.index, &(), &n, &public, &share)
                .map_err(|_| QueryError::Malformed(nonce))?
        });
        let msg = VerifierMessage {
            nonce,
            from: self.index as u8,
            share: own
                .get_encoded()
                .map_err(|_| QueryError::Malformed(nonce))?,
        };
        self.pending.insert(nonce, Pending { state, own });
        Ok(msg)
    }

    /// Finishes verifying a report with the other aggregator's message: if the validity proof
    /// holds, the report's output share joins the sum.
    ///
    /// # Errors
    ///
    /// [`QueryError::UnknownReport`] if the report was not prepared here (or already
    /// finished), [`QueryError::NotThisAggregator`] if the message is this aggregator's own,
    /// [`QueryError::Rejected`] if the proof fails (the report is excluded, for good).
    pub fn finish(&mut self, peer: &VerifierMessage) -> Result<(), QueryError> {
        if usize::from(peer.from) != 1 - self.index {
            return Err(QueryError::NotThisAggregator {
                index: usize::from(peer.from),
            });
        }
        let p = self
            .pending
            .remove(&peer.nonce)
            .ok_or(QueryError::UnknownReport(peer.nonce))?;
        match self.complete(p, peer) {
            Ok(out) => {
                self.sum
                    .accumulate(&out)
                    .map_err(|e| QueryError::Vdaf(e.to_string()))?;
                self.accepted += 1;
                Ok(())
            }
            Err(e) => {
                self.rejected += 1;
                Err(e)
            }
        }
    }

    fn complete(
        &self,
        p: Pending,
        peer: &VerifierMessage,
    ) -> Result<OutputShare<Field128>, QueryError> {
        let rejected = QueryError::Rejected(peer.nonce);
        let theirs = Prio3VerifierShare::get_decoded_with_param(&p.state, &peer.share)
            .map_err(|_| QueryError::Malformed(peer.nonce))?;
        let shares = if self.index == 0 {
            [p.own, theirs]
        } else {
            [theirs, p.own]
        };
        with_vdaf!(&self.engine, v => {
            let msg = v
                .verifier_shares_to_message(&self.ctx, &(), shares)
                .map_err(|_| rejected.clone())?;
            match v.verify_next(&self.ctx, p.state, msg) {
                Ok(VerifyTransition::Finish(out)) => Ok(out),
                _ => Err(rejected),
            }
        })
    }

    /// Adds this aggregator's discrete Laplace noise (scale sensitivity/ε) to its sum and
    /// releases it. Consumes the aggregator: a second, differently noised share of the same
    /// reports would let the noise be averaged away.
    ///
    /// # Errors
    ///
    /// [`QueryError::BatchTooSmall`] if fewer than the query's minimum batch were accepted;
    /// [`QueryError::Vdaf`] if the noise cannot be drawn.
    pub fn finalize(mut self) -> Result<AggregateShare, QueryError> {
        if self.accepted < u64::from(self.params.min_batch) {
            return Err(QueryError::BatchTooSmall {
                reports: self.accepted,
                min: self.params.min_batch,
            });
        }
        let strategy = dp_strategy(self.params.epsilon)?;
        let n = usize::try_from(self.accepted).unwrap_or(usize::MAX);
        let sum = &mut self.sum;
        with_vdaf!(&self.engine, v => v.add_noise_to_agg_share(&strategy, &(), sum, n))
            .map_err(|e| QueryError::Vdaf(e.to_string()))?;
        Ok(AggregateShare {
            query: self.params.query,
            index: self.index as u8,
            reports: self.accepted,
            values: BoundedVec::try_from(
                self.sum
                    .as_ref()
                    .iter()
                    .map(|f| u128::from(*f))
                    .collect::<Vec<_>>(),
            )
            .map_err(|_| QueryError::TooLarge {
                what: "aggregate share",
                max: MAX_OUTPUT_LEN,
            })?,
        })
    }

    /// The input share this aggregator decrypts from `report`, encoded (its whole view of the
    /// measurement), for tests of what one aggregator can learn.
    #[cfg(test)]
    pub(crate) fn view(&self, report: &Report) -> Result<Vec<u8>, QueryError> {
        self.open(report)
    }
}

/// prio's pure-DP discrete Laplace strategy for `epsilon` (in millionths, exactly).
pub(crate) fn dp_strategy(epsilon: Epsilon) -> Result<PureDpDiscreteLaplace, QueryError> {
    let eps = Rational::from_unsigned(
        u128::from(epsilon.micros()),
        u128::from(Epsilon::MICROS_PER_UNIT),
    )
    .and_then(PureDpBudget::new)
    .map_err(|e| QueryError::Vdaf(e.to_string()))?;
    Ok(PureDpDiscreteLaplace::from_budget(eps))
}

/// One aggregator's noised aggregate share: what it sends the collector and commits on chain
/// ([`AggregateShare::digest`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateShare {
    /// The query.
    pub query: QueryId,
    /// The aggregator's index (0, the leader, or 1).
    pub index: u8,
    /// The reports aggregated.
    pub reports: u64,
    /// The share's field elements, as integers below the field's modulus.
    pub values: BoundedVec<u128, MAX_OUTPUT_LEN>,
}

impl Canonical for AggregateShare {
    const NAME: &'static str = "aggregate share";
    /// Version, query, index, a varint count of reports, the values (each a varint of at most
    /// 19 bytes) with their count.
    const MAX_ENCODED_LEN: usize = 1 + 32 + 1 + 10 + 3 + 19 * MAX_OUTPUT_LEN;
}

impl AggregateShare {
    /// The canonical encoding: what an aggregator sends the collector.
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(self)
    }

    /// Decodes a share, refusing anything longer than [`AggregateShare::MAX_ENCODED_LEN`]
    /// before decoding, more than [`MAX_OUTPUT_LEN`] values, and trailing bytes. Whether the
    /// values fit the query is [`unshard`]'s check.
    ///
    /// # Errors
    ///
    /// [`QueryError::Decode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, QueryError> {
        crate::codec::decode(bytes).map_err(|e| QueryError::Decode(e.to_string()))
    }
}

impl AggregateShare {
    /// The digest an aggregator commits on chain ([`AccessOp::CommitAggregateShare`]).
    pub fn digest(&self) -> Digest {
        let mut buf = vec![2];
        crate::codec::encode_into(self, &mut buf);
        Digest::from_bytes(domain::RESEARCH_QUERY_COMMIT.hash(&buf))
    }

    /// The commitment operation for this share.
    pub fn commit_op(&self) -> AccessOp {
        AccessOp::CommitAggregateShare {
            query: self.query,
            share: self.digest(),
            reports: self.reports,
        }
    }
}

/// A query's answer: one signed value per output entry (the noise may take it below zero).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResult {
    /// The query.
    pub query: QueryId,
    /// The reports aggregated.
    pub reports: u64,
    /// The noisy answer: the count, the sum, each bucket or each entry.
    pub values: Vec<i128>,
}

impl QueryResult {
    /// The digest the researcher publishes ([`AccessOp::PublishResult`]).
    pub fn digest(&self) -> Digest {
        let mut buf = vec![3];
        crate::codec::encode_into(self, &mut buf);
        Digest::from_bytes(domain::RESEARCH_QUERY_COMMIT.hash(&buf))
    }

    /// The publication operation for this result.
    pub fn publish_op(&self) -> AccessOp {
        AccessOp::PublishResult {
            query: self.query,
            result: self.digest(),
        }
    }
}

/// A field element as a signed integer: `v` when it is at most half the modulus, `v - p`
/// otherwise.
pub fn signed(v: u128) -> i128 {
    let p = Field128::modulus();
    if v > p / 2 {
        -((p - v) as i128)
    } else {
        v as i128
    }
}

/// The collector's step: adds the two aggregators' shares into the answer.
///
/// # Errors
///
/// [`QueryError::WrongQuery`] for a share of another query; [`QueryError::AggregatorsDisagree`]
/// if the shares are not the leader's and the helper's, count different reports or have
/// different lengths; [`QueryError::Malformed`] for a value not below the modulus.
pub fn unshard(
    params: &QueryParams,
    leader: &AggregateShare,
    helper: &AggregateShare,
) -> Result<QueryResult, QueryError> {
    for s in [leader, helper] {
        if s.query != params.query {
            return Err(QueryError::WrongQuery(s.query));
        }
    }
    let len = params.kind.output_len();
    if leader.index != 0
        || helper.index != 1
        || leader.reports != helper.reports
        || leader.values.len() != len
        || helper.values.len() != len
    {
        return Err(QueryError::AggregatorsDisagree);
    }
    let p = Field128::modulus();
    let field = |v: u128| {
        if v < p {
            Ok(Field128::from(v))
        } else {
            Err(QueryError::Malformed(ReportNonce::default()))
        }
    };
    let values = leader
        .values
        .iter()
        .zip(&helper.values)
        .map(|(a, b)| Ok(signed(u128::from(field(*a)? + field(*b)?))))
        .collect::<Result<Vec<_>, QueryError>>()?;
    Ok(QueryResult {
        query: params.query,
        reports: leader.reports,
        values,
    })
}

impl AccessState {
    /// Checks that `patient` counts in `query` at `hospital`: its `grant` is its consent, on
    /// its relationship with the hospital, to the study's researcher reading for research, as
    /// of the query's announcement (height and time). Grants made or revoked later do not
    /// change the answer.
    ///
    /// # Errors
    ///
    /// [`QueryError::UnknownQuery`], or [`QueryError::NoConsent`] with why the consent does not
    /// hold.
    pub fn check_query_consent(
        &self,
        query: &QueryId,
        hospital: AccountId,
        patient: AccountId,
        grant: GrantId,
    ) -> Result<(), QueryError> {
        let q = self.query(query).ok_or(QueryError::UnknownQuery(*query))?;
        let s = self
            .study(&q.study)
            .ok_or(QueryError::UnknownQuery(*query))?;
        self.check_research_grant(grant, patient, hospital, s.researcher, q.at)
            .map_err(QueryError::NoConsent)
    }
}
