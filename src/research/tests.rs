use super::*;
use crate::access::tests::{key, Harness, DAY};
use crate::access::{
    Action, ActionSet, AggregatorRef, GrantTerms, Period, PurposeSet, RelationshipId, Role, Scope,
    StudyId, Viewer,
};
use crate::pseudonym::{DerivedBackend, Scheme};
use crate::purpose::PurposeOfUse;
use crate::tx::Keypair;

fn params(kind: QueryKind, epsilon: u64, min_batch: u32) -> (QueryParams, [AggregatorKeypair; 2]) {
    let (a, b) = (
        AggregatorKeypair::from_seed(&[1; 32]),
        AggregatorKeypair::from_seed(&[2; 32]),
    );
    let p = QueryParams {
        query: QueryId::from_bytes([5; 32]),
        kind,
        epsilon: Epsilon::from_micros(epsilon),
        min_batch,
        keys: [a.public(), b.public()],
    };
    (p, [a, b])
}

fn aggregators(p: &QueryParams, keys: [AggregatorKeypair; 2]) -> [Aggregator; 2] {
    let vk = VerifyKey::from_bytes([9; 32]);
    let [a, b] = keys;
    [
        Aggregator::new(p, 0, a, vk.clone()).unwrap(),
        Aggregator::new(p, 1, b, vk).unwrap(),
    ]
}

/// Runs verification of `report` between both aggregators; the first error, if any.
fn verify(aggs: &mut [Aggregator; 2], report: &Report) -> Result<(), QueryError> {
    let [a, b] = aggs;
    let (ma, mb) = (a.prepare(report)?, b.prepare(report)?);
    let ra = a.finish(&mb);
    let rb = b.finish(&ma);
    ra.and(rb)
}

fn nonce(i: usize) -> ReportNonce {
    let mut n = [0; 16];
    n[..8].copy_from_slice(&(i as u64).to_le_bytes());
    ReportNonce::from_bytes(n)
}

/// Shards, verifies and unshards `ms`.
fn answer(p: &QueryParams, keys: [AggregatorKeypair; 2], ms: &[Measurement]) -> QueryResult {
    let mut aggs = aggregators(p, keys);
    for (i, m) in ms.iter().enumerate() {
        verify(&mut aggs, &shard(p, m, nonce(i)).unwrap()).unwrap();
    }
    let [a, b] = aggs;
    unshard(p, &a.finalize().unwrap(), &b.finalize().unwrap()).unwrap()
}

/// The variance of the discrete Laplace distribution of scale `t`.
fn discrete_laplace_variance(t: f64) -> f64 {
    let q = (-1.0 / t).exp();
    2.0 * q / (1.0 - q).powi(2)
}

#[test]
fn the_error_follows_the_noise_distribution_of_two_honest_aggregators() {
    // ε = 0.5 on a count (sensitivity 1): each aggregator adds discrete Laplace noise of scale
    // 2, so the error is the sum of two such draws: mean 0, variance 2·Var(DL(2)).
    let trials = 400;
    let truth = [true, false, true, true, false, true];
    let mut errors = Vec::with_capacity(trials);
    for _ in 0..trials {
        let (p, keys) = params(QueryKind::Count, 500_000, 1);
        let ms: Vec<_> = truth.iter().map(|b| Measurement::Count(*b)).collect();
        let r = answer(&p, keys, &ms);
        assert_eq!(r.reports, truth.len() as u64);
        errors.push((r.values[0] - 4) as f64);
    }
    let n = trials as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let expected = 2.0 * discrete_laplace_variance(2.0);
    // Standard errors: of the mean sqrt(var/n) ≈ 0.15; of the variance about 13 % here (the
    // excess kurtosis of a sum of two Laplace draws is 1.5). Bounds at about four of them.
    assert!(
        mean.abs() < 4.0 * (expected / n).sqrt(),
        "mean error {mean}"
    );
    assert!(
        (var / expected - 1.0).abs() < 0.45,
        "variance {var}, expected {expected}"
    );
    // The answer is not exact: noise was added.
    assert!(errors.iter().any(|e| *e != 0.0));
}

#[test]
fn noise_below_zero_maps_to_negative_answers() {
    let p = Field128::modulus();
    assert_eq!(signed(p - 3), -3);
    assert_eq!(signed(3), 3);
    assert_eq!(signed(0), 0);
    // An all-zero count with ε = 0.5: about half the answers fall below zero, and they come
    // back as small negative numbers, not as numbers near the modulus.
    let mut negative = 0;
    for _ in 0..60 {
        let (p, keys) = params(QueryKind::Count, 500_000, 1);
        let r = answer(
            &p,
            keys,
            &[Measurement::Count(false), Measurement::Count(false)],
        );
        assert!(r.values[0].abs() < 100, "{}", r.values[0]);
        negative += usize::from(r.values[0] < 0);
    }
    assert!(negative > 5, "{negative} negative answers in 60");
}

#[test]
fn with_a_large_epsilon_histograms_sums_and_vectors_are_exact() {
    // ε = 10⁹: the noise's scale is sensitivity/ε, at most 127/10⁹ here (a sum below 128), so
    // each aggregator's noise is non-zero with probability about 2·e^(-10⁹/127): never. (ε = 1000
    // left the sum's noise non-zero about once in 700 runs.)
    let eps = 1_000_000_000_000_000;
    let (p, keys) = params(QueryKind::Histogram { buckets: 4 }, eps, 1);
    let ms: Vec<_> = [0, 3, 3, 1, 3]
        .iter()
        .map(|b| Measurement::Bucket(*b))
        .collect();
    assert_eq!(answer(&p, keys, &ms).values, vec![1, 1, 0, 3]);
    let (p, keys) = params(QueryKind::Sum { max: 100 }, eps, 1);
    let ms: Vec<_> = [10, 0, 100]
        .iter()
        .map(|v| Measurement::Value(*v))
        .collect();
    assert_eq!(answer(&p, keys, &ms).values, vec![110]);
    let (p, keys) = params(QueryKind::SumVec { max: 3, len: 3 }, eps, 1);
    let ms = [
        Measurement::Vector(vec![1, 2, 3]),
        Measurement::Vector(vec![3, 0, 0]),
    ];
    assert_eq!(answer(&p, keys, &ms).values, vec![4, 2, 3]);
}

/// Counts of each of 16 bins of the first byte of each aggregator's decrypted share, over
/// reports of `ms`.
fn view_histograms(ms: &[Measurement]) -> [[f64; 16]; 2] {
    let (p, keys) = params(QueryKind::Count, 1_000_000, 1);
    let aggs = aggregators(&p, keys);
    let mut bins = [[0.0; 16]; 2];
    for (i, m) in ms.iter().enumerate() {
        let r = shard(&p, m, nonce(i)).unwrap();
        for (a, b) in aggs.iter().zip(&mut bins) {
            let view = a.view(&r).unwrap();
            b[usize::from(view[0] >> 4)] += 1.0;
        }
    }
    bins
}

/// Pearson's two-sample chi-square statistic of two histograms.
fn chi_square(a: &[f64; 16], b: &[f64; 16]) -> f64 {
    let (na, nb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let total = x + y;
            let (ea, eb) = (total * na / (na + nb), total * nb / (na + nb));
            (x - ea).powi(2) / ea + (y - eb).powi(2) / eb
        })
        .sum()
}

#[test]
fn one_aggregators_view_is_independent_of_the_data() {
    // All patients in the cohort, and none: each aggregator's decrypted shares are
    // distributed alike (and uniformly).
    let n = 1600;
    let ones = view_histograms(&vec![Measurement::Count(true); n]);
    let zeros = view_histograms(&vec![Measurement::Count(false); n]);
    let uniform = [n as f64 / 16.0; 16];
    // 15 degrees of freedom: P(χ² > 37.7) = 0.001.
    for agg in 0..2 {
        let between = chi_square(&ones[agg], &zeros[agg]);
        assert!(between < 37.7, "aggregator {agg}: χ² = {between}");
        for data in [&ones, &zeros] {
            // Against the uniform expectation (halved: chi_square pools both samples).
            let fit: f64 = data[agg]
                .iter()
                .zip(&uniform)
                .map(|(o, e)| (o - e).powi(2) / e)
                .sum();
            assert!(fit < 37.7, "aggregator {agg}: χ² to uniform = {fit}");
        }
    }
}

/// A report whose leader measurement share is shifted by `delta`: the measurement the shares
/// add up to is the honest one plus `delta`, with the honest proof.
fn cheating_report(p: &QueryParams, honest: bool, delta: u128, nonce: ReportNonce) -> Report {
    let Engine::SumVec(v) = Engine::new(p.kind).unwrap() else {
        unreachable!()
    };
    let (public, inputs) = v
        .shard(&p.ctx(), &vec![u128::from(honest)], &nonce.to_bytes())
        .unwrap();
    let mut inputs = inputs.into_iter();
    let (leader, helper) = (inputs.next().unwrap(), inputs.next().unwrap());
    let leader = match leader {
        Prio3InputShare::Leader {
            mut measurement_share,
            proofs_share,
            joint_rand_blind,
        } => {
            measurement_share[0] += Field128::from(delta);
            Prio3InputShare::Leader {
                measurement_share,
                proofs_share,
                joint_rand_blind,
            }
        }
        other => other,
    };
    seal_report(
        p,
        nonce,
        public.get_encoded().unwrap(),
        [leader.get_encoded().unwrap(), helper.get_encoded().unwrap()],
    )
    .unwrap()
}

#[test]
fn a_hospital_adding_1000_to_a_count_is_rejected_by_the_proof_and_excluded() {
    let (p, keys) = params(QueryKind::Count, 1_000_000_000, 1);
    let mut aggs = aggregators(&p, keys);
    for i in 0..10 {
        verify(
            &mut aggs,
            &shard(&p, &Measurement::Count(true), nonce(i)).unwrap(),
        )
        .unwrap();
    }
    for (i, delta) in [(100, 1000), (101, 1), (102, Field128::modulus() - 1)] {
        let r = cheating_report(&p, true, delta, nonce(i));
        assert_eq!(verify(&mut aggs, &r), Err(QueryError::Rejected(nonce(i))));
    }
    // The public API refuses to build one.
    assert_eq!(
        shard(&p, &Measurement::Value(1000), nonce(200)).unwrap_err(),
        QueryError::MeasurementMismatch {
            kind: QueryKind::Count
        }
    );
    let [a, b] = aggs;
    assert_eq!((a.accepted(), a.rejected()), (10, 3));
    assert_eq!((b.accepted(), b.rejected()), (10, 3));
    let r = unshard(&p, &a.finalize().unwrap(), &b.finalize().unwrap()).unwrap();
    assert_eq!((r.reports, r.values.clone()), (10, vec![10]));
}

#[test]
fn replayed_reports_are_refused_and_counted_once() {
    let (p, keys) = params(QueryKind::Count, 1_000_000_000, 1);
    let mut aggs = aggregators(&p, keys);
    let r = shard(&p, &Measurement::Count(true), nonce(1)).unwrap();
    verify(&mut aggs, &r).unwrap();
    assert_eq!(verify(&mut aggs, &r), Err(QueryError::Replayed(nonce(1))));
    // A fresh sharding under the same nonce is a replay too.
    let again = shard(&p, &Measurement::Count(true), nonce(1)).unwrap();
    assert_eq!(aggs[1].prepare(&again), Err(QueryError::Replayed(nonce(1))));
    // Committing them is refused as well.
    assert_eq!(
        commit_ops(&p.query, &[r.clone(), again]).unwrap_err(),
        QueryError::Replayed(nonce(1))
    );
    let [a, b] = aggs;
    let result = unshard(&p, &a.finalize().unwrap(), &b.finalize().unwrap()).unwrap();
    assert_eq!(result.values, vec![1]);
}

#[test]
fn tampered_misdirected_and_foreign_reports_are_refused() {
    let (p, keys) = params(QueryKind::Count, 1_000_000, 1);
    let mut aggs = aggregators(&p, keys);
    let mut r = shard(&p, &Measurement::Count(true), nonce(1)).unwrap();
    let mut ct = r.shares[0].ciphertext.as_slice().to_vec();
    ct[0] ^= 1;
    r.shares[0].ciphertext = BoundedBytes::try_from(ct).unwrap();
    assert_eq!(aggs[0].prepare(&r), Err(QueryError::Decryption(nonce(1))));
    // The helper's share swapped in for the leader's.
    let mut r = shard(&p, &Measurement::Count(true), nonce(2)).unwrap();
    r.shares.swap(0, 1);
    assert_eq!(aggs[0].prepare(&r), Err(QueryError::Decryption(nonce(2))));
    // Another query's report.
    let mut other = p.clone();
    other.query = QueryId::from_bytes([6; 32]);
    let r = shard(&other, &Measurement::Count(true), nonce(3)).unwrap();
    assert_eq!(
        aggs[0].prepare(&r),
        Err(QueryError::WrongQuery(other.query))
    );
    // A report re-labelled with this query: its shares were bound to the other one.
    let mut relabelled = r;
    relabelled.query = p.query;
    assert_eq!(
        aggs[0].prepare(&relabelled),
        Err(QueryError::Decryption(nonce(3)))
    );
    // Too few reports to release a share.
    let (p, keys) = params(QueryKind::Count, 1_000_000, 5);
    let [a, _] = aggregators(&p, keys);
    assert_eq!(
        a.finalize().unwrap_err(),
        QueryError::BatchTooSmall { reports: 0, min: 5 }
    );
}

#[test]
fn reports_round_trip_and_refuse_trailing_bytes() {
    let (p, _) = params(QueryKind::Histogram { buckets: 8 }, 1_000_000, 1);
    let r = shard(&p, &Measurement::Bucket(3), nonce(1)).unwrap();
    let bytes = r.encode();
    assert_eq!(Report::decode(&bytes).unwrap(), r);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Report::decode(&longer),
        Err(QueryError::Decode(_))
    ));
    assert!(matches!(
        Report::decode(&bytes[..bytes.len() - 1]),
        Err(QueryError::Decode(_))
    ));
    assert!(matches!(
        Report::decode(&vec![0; Report::MAX_ENCODED_LEN + 1]),
        Err(QueryError::Decode(_))
    ));
}

#[test]
fn the_collector_refuses_shares_that_do_not_fit() {
    let (p, keys) = params(QueryKind::Count, 1_000_000, 1);
    let mut aggs = aggregators(&p, keys);
    verify(
        &mut aggs,
        &shard(&p, &Measurement::Count(true), nonce(1)).unwrap(),
    )
    .unwrap();
    let [a, b] = aggs;
    let (a, b) = (a.finalize().unwrap(), b.finalize().unwrap());
    assert_eq!(unshard(&p, &b, &a), Err(QueryError::AggregatorsDisagree));
    let mut fewer = b.clone();
    fewer.reports = 0;
    assert_eq!(
        unshard(&p, &a, &fewer),
        Err(QueryError::AggregatorsDisagree)
    );
    let mut huge = b.clone();
    let mut v = huge.values.to_vec();
    v[0] = u128::MAX;
    huge.values = BoundedVec::try_from(v).unwrap();
    assert!(matches!(
        unshard(&p, &a, &huge),
        Err(QueryError::Malformed(_))
    ));
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn aggregators_refuse_another_key_or_index() {
    let (p, [a, b]) = params(QueryKind::Count, 1_000_000, 1);
    let vk = VerifyKey::generate();
    assert_eq!(
        Aggregator::new(&p, 0, b, vk.clone()).unwrap_err(),
        QueryError::NotThisAggregator { index: 0 }
    );
    assert_eq!(
        Aggregator::new(&p, 2, a, vk.clone()).unwrap_err(),
        QueryError::NotThisAggregator { index: 2 }
    );
    assert_eq!(format!("{vk:?}"), "VerifyKey(<redacted>)");
}

#[test]
fn errors_are_send_sync_and_lower_case() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<QueryError>();
    for e in [
        QueryError::Replayed(nonce(1)),
        QueryError::Rejected(nonce(1)),
        QueryError::AggregatorsDisagree,
        QueryError::Encryption,
    ] {
        let m = e.to_string();
        assert!(m.chars().next().unwrap().is_lowercase(), "{m}");
    }
}

/// The chain side: three patients with research consent at the hospital (one revoked before
/// the announcement), a study and a count query announced on chain.
struct Study {
    h: Harness,
    hospital: Keypair,
    researcher: Keypair,
    patients: Vec<(Keypair, GrantId)>,
    query: QueryId,
    keys: Option<[AggregatorKeypair; 2]>,
    vault: DerivedBackend,
}

fn study() -> Study {
    let authority = key(1);
    let mut h = Harness::new(&authority);
    let (hospital, researcher) = (key(2), key(3));
    h.provider(&authority, &hospital, "General Hospital", false);
    h.register(&researcher, Role::Researcher, "Research Lab");
    let mut vault = DerivedBackend::new(Scheme::KeyedHash);
    let mut patients = Vec::new();
    for i in 0..4u8 {
        let patient = key(10 + i);
        h.register(&patient, Role::Patient, &format!("patient-{i}"));
        let rel: RelationshipId = h.relationship(&hospital, &patient);
        let terms = GrantTerms::new(
            rel,
            Viewer::Account(researcher.account()),
            Scope::All,
            ActionSet::of(&[Action::Read]),
            PurposeSet::of(&[PurposeOfUse::Research]),
            Period::lasting(h.time, 365 * DAY),
        );
        let g = h.grant(&patient, terms, None);
        vault.enroll(patient.account().into()).unwrap();
        patients.push((patient, g));
    }
    // Patient 3 withdraws before the query is announced.
    let (p3, g3) = (&patients[3].0, patients[3].1);
    h.ok(
        p3,
        AccessOp::RevokeGrant {
            grant: g3,
            reason: crate::access::tests::reason("withdrawn"),
        },
    );
    let approve = AccessOp::ApproveStudy {
        researcher: researcher.account(),
        protocol: Digest::from_bytes([1; 32]),
        budget: Epsilon::from_micros(2_000_000_000),
        min_class_size: 10,
    };
    let study = StudyId::of_tx(h.next_tx_id(&authority, &approve));
    h.ok(&authority, approve);
    let keys = [
        AggregatorKeypair::from_seed(&[1; 32]),
        AggregatorKeypair::from_seed(&[2; 32]),
    ];
    let announce = AccessOp::AnnounceQuery {
        study,
        kind: QueryKind::Count,
        cohort: Digest::from_bytes([2; 32]),
        epsilon: Epsilon::from_micros(1_000_000_000),
        min_batch: 1,
        aggregators: [
            AggregatorRef {
                account: key(20).account(),
                key: keys[0].public(),
            },
            AggregatorRef {
                account: key(21).account(),
                key: keys[1].public(),
            },
        ],
        deadline: h.time + DAY,
    };
    let query = QueryId::of_tx(h.next_tx_id(&researcher, &announce));
    h.ok(&researcher, announce);
    Study {
        h,
        hospital,
        researcher,
        patients,
        query,
        keys: Some(keys),
        vault,
    }
}

impl Study {
    /// The hospital's reports, committed on chain, verified and unsharded: the count.
    fn run(&mut self, in_cohort: &[bool]) -> (QueryResult, usize) {
        let list: Vec<_> = self
            .patients
            .iter()
            .zip(in_cohort)
            .map(|((k, g), c)| (k.account(), *g, Measurement::Count(*c)))
            .collect();
        let cohort = shard_cohort(
            self.h.access(),
            &self.query,
            self.hospital.account(),
            &mut self.vault,
            Epoch::new(1),
            &list,
        )
        .unwrap();
        for op in commit_ops(&self.query, &cohort.reports).unwrap() {
            self.h.ok(&self.hospital, op);
        }
        let p = QueryParams::of(self.h.access().query(&self.query).unwrap());
        let mut aggs = aggregators(&p, self.keys.take().unwrap());
        for r in &cohort.reports {
            verify(&mut aggs, r).unwrap();
        }
        let [a, b] = aggs;
        let result = unshard(&p, &a.finalize().unwrap(), &b.finalize().unwrap()).unwrap();
        (result, cohort.excluded.len())
    }
}

#[test]
fn consent_revoked_before_the_announcement_changes_nothing() {
    // Patient 3 revoked before the announcement: whether in the cohort or not, the answer is
    // the same, and it is not reported.
    let mut s = study();
    let (with, excluded) = s.run(&[true, false, true, true]);
    assert_eq!(
        (with.values.clone(), with.reports, excluded),
        (vec![2], 3, 1)
    );
    let mut s = study();
    let (without, _) = s.run(&[true, false, true, false]);
    assert_eq!(without.values, with.values);
    // A revocation after the announcement does not change who counts.
    let mut s = study();
    let (p0, g0) = (key(10), s.patients[0].1);
    s.h.ok(
        &p0,
        AccessOp::RevokeGrant {
            grant: g0,
            reason: crate::access::tests::reason("later"),
        },
    );
    let (later, _) = s.run(&[true, false, true, true]);
    assert_eq!(later.values, vec![2]);
    assert!(matches!(
        s.h.access().check_query_consent(
            &s.query,
            s.hospital.account(),
            s.patients[3].0.account(),
            s.patients[3].1
        ),
        Err(QueryError::NoConsent(
            ReleaseAuditError::ConsentDoesNotHold(crate::access::DenyReason::Revoked { .. })
        ))
    ));
}

#[test]
fn a_contributing_patient_finds_its_contribution_by_its_pseudonym() {
    let mut s = study();
    s.run(&[true, false, true, true]);
    let ctx = research_context(s.researcher.account(), Epoch::new(1));
    let nonce_of = |s: &mut Study, i: usize| {
        let p = s
            .vault
            .pseudonym(&s.patients[i].0.account().into(), &ctx)
            .unwrap();
        ReportNonce::derive(&p, &s.query)
    };
    for i in 0..3 {
        let n = nonce_of(&mut s, i);
        let c = s.h.access().contribution(&s.query, &n).unwrap();
        assert_eq!(c.hospital, s.hospital.account());
    }
    let n = nonce_of(&mut s, 3);
    assert_eq!(s.h.access().contribution(&s.query, &n), None);
    // The hospital's batch cannot be committed twice.
    assert_eq!(s.h.access().query(&s.query).unwrap().reports, 3);
}

#[test]
fn aggregate_shares_round_trip_and_refuse_what_is_too_long() {
    let (p, keys) = params(QueryKind::Histogram { buckets: 5 }, 1_000_000, 1);
    let mut aggs = aggregators(&p, keys);
    verify(
        &mut aggs,
        &shard(&p, &Measurement::Bucket(2), nonce(1)).unwrap(),
    )
    .unwrap();
    let [a, _] = aggs;
    let share = a.finalize().unwrap();
    let bytes = share.encode();
    assert_eq!(AggregateShare::decode(&bytes).unwrap(), share);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(AggregateShare::decode(&longer).is_err());
    let full = AggregateShare {
        values: BoundedVec::try_from(vec![u128::MAX; MAX_OUTPUT_LEN]).unwrap(),
        reports: u64::MAX,
        ..share.clone()
    };
    let bytes = full.encode();
    assert!(bytes.len() <= AggregateShare::MAX_ENCODED_LEN);
    assert_eq!(AggregateShare::decode(&bytes).unwrap(), full);
    // One value more than the limit does not decode, nor does anything over the byte limit.
    #[derive(serde::Serialize)]
    struct Loose {
        query: QueryId,
        index: u8,
        reports: u64,
        values: Vec<u128>,
    }
    let mut over = Vec::new();
    crate::codec::encode_into(
        &Loose {
            query: share.query,
            index: 0,
            reports: 1,
            values: vec![1; MAX_OUTPUT_LEN + 1],
        },
        &mut over,
    );
    assert!(over.len() <= AggregateShare::MAX_ENCODED_LEN);
    assert!(matches!(
        AggregateShare::decode(&over),
        Err(QueryError::Decode(_))
    ));
    assert!(AggregateShare::decode(&vec![0xff; AggregateShare::MAX_ENCODED_LEN + 1]).is_err());
}

proptest::proptest! {
    /// Arbitrary bytes never make the decoders panic; what decodes encodes back to the input.
    #[test]
    fn report_and_share_decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        if let Ok(r) = Report::decode(&bytes) {
            proptest::prop_assert_eq!(r.encode(), bytes.clone());
        }
        if let Ok(s) = AggregateShare::decode(&bytes) {
            proptest::prop_assert_eq!(s.encode(), bytes);
        }
    }
}
