//! Research query decoders (feature `research-queries`): a hospital's report and an
//! aggregator's share, the two messages a research node reads from other parties.

use medledger::access::{Epsilon, QueryId, QueryKind};
use medledger::codec::Canonical;
use medledger::research::{
    commit_ops, unshard, AggregateShare, Aggregator, AggregatorKeypair, QueryParams, Report,
    VerifyKey, MAX_OUTPUT_LEN,
};

use super::decoders::round_trip;

/// The query of the seed reports.
pub const QUERY: QueryId = QueryId::from_bytes([0x51; 32]);

/// The aggregators' key pairs of the seed reports.
pub fn keypairs() -> [AggregatorKeypair; 2] {
    [
        AggregatorKeypair::from_seed(&[0x61; 32]),
        AggregatorKeypair::from_seed(&[0x62; 32]),
    ]
}

/// The parameters of a count query on `query` with the seed aggregators.
pub fn params(query: QueryId, kind: QueryKind) -> QueryParams {
    let [a, b] = keypairs();
    QueryParams {
        query,
        kind,
        epsilon: Epsilon::from_micros(1_000_000),
        min_batch: 1,
        keys: [a.public(), b.public()],
    }
}

/// Reports: round trip, the digest and commitment of an accepted report, and both aggregators
/// of a count query refuse or start verifying it without panicking (the seeds are reports
/// sharded to these aggregators, so mutations reach decryption and prio's decoding).
pub fn research_report(data: &[u8]) {
    let Some(r) = round_trip::<Report>(data) else {
        assert!(Report::decode(data).is_err());
        return;
    };
    assert_eq!(Report::decode(data).as_ref(), Ok(&r));
    assert_eq!(r.digest(), r.clone().digest());
    let ops = commit_ops(&r.query, std::slice::from_ref(&r)).expect("one report commits");
    assert_eq!(ops.len(), 1);
    let params = params(r.query, QueryKind::Count);
    let [a, b] = keypairs();
    let verify_key = VerifyKey::from_bytes([0x71; 32]);
    let mut leader = Aggregator::new(&params, 0, a, verify_key.clone()).expect("the seed keys");
    let mut helper = Aggregator::new(&params, 1, b, verify_key).expect("the seed keys");
    let (ml, mh) = (leader.prepare(&r), helper.prepare(&r));
    if let (Ok(ml), Ok(mh)) = (ml, mh) {
        // Either both find the proof valid, or both exclude the report.
        let (fl, fh) = (leader.finish(&mh), helper.finish(&ml));
        assert_eq!(fl.is_ok(), fh.is_ok(), "{fl:?} {fh:?}");
    }
    // A report is taken once.
    assert!(leader.prepare(&r).is_err());
}

/// Aggregate shares: round trip, the digest and commitment, and unsharding a share with
/// itself (as leader and helper) for a query of its length either answers one value per entry
/// for its reports or refuses (a value outside the field); for a query of another length it
/// refuses.
pub fn aggregate_share(data: &[u8]) {
    let Some(s) = round_trip::<AggregateShare>(data) else {
        assert!(AggregateShare::decode(data).is_err());
        return;
    };
    assert_eq!(AggregateShare::decode(data).as_ref(), Ok(&s));
    assert_eq!(s.digest(), s.clone().digest());
    let _ = s.commit_op();
    let len = s.values.len();
    let kind = match len {
        1 => QueryKind::Count,
        n => QueryKind::Histogram {
            buckets: u32::try_from(n.clamp(2, MAX_OUTPUT_LEN)).expect("at most MAX_OUTPUT_LEN"),
        },
    };
    let params = params(s.query, kind);
    let (mut l, mut h) = (s.clone(), s.clone());
    l.index = 0;
    h.index = 1;
    match unshard(&params, &l, &h) {
        Ok(r) => {
            assert_eq!(kind.output_len(), len);
            assert_eq!(
                (r.reports, r.values.len(), r.query),
                (s.reports, len, s.query)
            );
            let _ = r.digest();
            // The same shares, in the wrong roles, are refused.
            assert!(unshard(&params, &h, &l).is_err());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if kind.output_len() != len {
        assert!(unshard(&params, &l, &h).is_err());
    }
    // Shares of another query are refused.
    assert!(unshard(&params_for_other(&params), &l, &h).is_err());
}

fn params_for_other(p: &QueryParams) -> QueryParams {
    let mut bytes = *p.query.as_bytes();
    bytes[0] ^= 1;
    QueryParams {
        query: QueryId::from_bytes(bytes),
        ..p.clone()
    }
}

/// The longest input each decoder reads.
pub const REPORT_MAX_LEN: usize = <Report as Canonical>::MAX_ENCODED_LEN;
/// The longest aggregate share.
pub const SHARE_MAX_LEN: usize = <AggregateShare as Canonical>::MAX_ENCODED_LEN;
