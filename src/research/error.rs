//! Why a research query role refused something.

use crate::access::{QueryId, QueryKind, ReleaseAuditError, ReportNonce};
use crate::pseudonym::PseudonymError;

/// Why a hospital, an aggregator or the collector refused an input. Nothing was changed,
/// except that a refused report's nonce stays spent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The query kind's parameters are out of bounds.
    #[error("query parameters out of bounds: {0:?}")]
    BadParameters(QueryKind),
    /// The measurement is not of the query's kind, or out of its range.
    #[error("the measurement does not fit a {kind:?} query")]
    MeasurementMismatch {
        /// The query's kind.
        kind: QueryKind,
    },
    /// An aggregator's announced key is not an X25519 public key.
    #[error("aggregator {index}'s key is not an x25519 public key")]
    BadKey {
        /// The aggregator's index.
        index: usize,
    },
    /// HPKE encryption failed.
    #[error("encrypting an input share failed")]
    Encryption,
    /// prio failed.
    #[error("vdaf: {0}")]
    Vdaf(String),
    /// A message is longer than its limit.
    #[error("the {what} is longer than {max} bytes")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A report does not decode.
    #[error("report does not decode: {0}")]
    Decode(String),
    /// The report, share or message is for another query.
    #[error("the input is for query {0}, not this one")]
    WrongQuery(QueryId),
    /// A report with this nonce was seen before.
    #[error("report {0} was already received")]
    Replayed(ReportNonce),
    /// The aggregator's input share does not decrypt.
    #[error("report {0}: the input share does not decrypt")]
    Decryption(ReportNonce),
    /// A share or verifier message does not decode or does not fit the query.
    #[error("report {0}: a share or verifier message is malformed")]
    Malformed(ReportNonce),
    /// The report's validity proof failed: it is excluded from the answer.
    #[error("report {0} failed the validity proof and is excluded")]
    Rejected(ReportNonce),
    /// A verifier message names a report this aggregator has not prepared (or already
    /// finished).
    #[error("report {0} is not awaiting verification here")]
    UnknownReport(ReportNonce),
    /// The aggregator index or key is not this query's, or a message came from the wrong
    /// aggregator.
    #[error("aggregator {index} is not this query's other aggregator, or its key differs")]
    NotThisAggregator {
        /// The index given.
        index: usize,
    },
    /// Too few reports to release an aggregate share.
    #[error("only {reports} reports were accepted, the query's minimum batch is {min}")]
    BatchTooSmall {
        /// Reports accepted.
        reports: u64,
        /// The minimum batch.
        min: u32,
    },
    /// The two aggregate shares do not fit together (not the leader's and the helper's,
    /// different report counts or lengths).
    #[error("the aggregate shares do not fit together")]
    AggregatorsDisagree,
    /// The query is not on chain.
    #[error("unknown query {0}")]
    UnknownQuery(QueryId),
    /// The patient's consent does not hold for the query.
    #[error("the patient does not count: {0}")]
    NoConsent(ReleaseAuditError),
    /// The pseudonym vault failed.
    #[error("pseudonym: {0}")]
    Pseudonym(PseudonymError),
}
