//! Research query roles against `prio`'s own calls on the same VDAF, side by side, one core.
//!
//! For a count and a six-bucket histogram:
//!
//! * `shard`: `research::shard` (measurement check, Prio3 sharding, both input shares sealed
//!   with HPKE) next to the bare calls doing the same work: `Prio3::shard`, encoding, and two
//!   `hpke::single_shot_seal`;
//! * `verify+aggregate`: both aggregators' `prepare` and `finish` on one report (HPKE open,
//!   replay check, decoding, Prio3 verification, the verifier shares encoded for the other
//!   aggregator, aggregation) next to the bare calls: two `single_shot_open`, decoding, two
//!   `verify_init`, one `verifier_shares_to_message`, two `verify_next` and two
//!   `accumulate`, all in memory.
//!
//! `cargo bench --features research-queries --bench research_query`; the ratio of the
//! medians is the roles' throughput relative to the bare calls.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use medledger::access::{Epsilon, QueryId, QueryKind, ReportNonce};
use medledger::research::{
    shard, Aggregator, AggregatorKeypair, Measurement, QueryParams, Report, VerifyKey,
};
use prio::codec::{Encode, ParameterizedDecode};
use prio::field::Field128;
use prio::vdaf::prio3::{Prio3, Prio3Histogram, Prio3InputShare, Prio3PublicShare, Prio3SumVec};
use prio::vdaf::{Aggregatable, Aggregator as _, Client as _, VerifyTransition};

type Kem = X25519HkdfSha256;

fn nonce(i: u64) -> ReportNonce {
    let mut n = [0; 16];
    n[..8].copy_from_slice(&i.to_le_bytes());
    ReportNonce::from_bytes(n)
}

/// The bare side: a Prio3 instance, two HPKE key pairs and a verify key.
struct Bare<T: prio::flp::Type<Field = Field128>> {
    vdaf: Prio3<T, prio::vdaf::xof::XofTurboShake128, 32>,
    keys: [(
        <Kem as hpke::Kem>::PrivateKey,
        <Kem as hpke::Kem>::PublicKey,
    ); 2],
    verify_key: [u8; 32],
}

const CTX: &[u8] = b"bench ctx";
const INFO: &[u8] = b"bench info";

/// One bare report: public share, two sealed input shares.
type BareReport = ([u8; 16], Vec<u8>, [(Vec<u8>, Vec<u8>); 2]);

impl<T: prio::flp::Type<Field = Field128>> Bare<T> {
    fn shard(&self, m: &T::Measurement, n: [u8; 16]) -> BareReport {
        let (public, inputs) = self.vdaf.shard(CTX, m, &n).unwrap();
        let public = public.get_encoded().unwrap();
        let mut aad = n.to_vec();
        aad.extend_from_slice(&public);
        let sealed = [0, 1].map(|i| {
            let input = inputs[i].get_encoded().unwrap();
            let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &OpModeS::Base,
                &self.keys[i].1,
                INFO,
                &input,
                &aad,
            )
            .unwrap();
            (enc.to_bytes().to_vec(), ct)
        });
        (n, public, sealed)
    }

    fn verify(&self, r: &BareReport, sums: &mut [prio::vdaf::AggregateShare<Field128>; 2]) {
        let (n, public, sealed) = r;
        let mut aad = n.to_vec();
        aad.extend_from_slice(public);
        let public = Prio3PublicShare::get_decoded_with_param(&self.vdaf, public).unwrap();
        let mut states = Vec::with_capacity(2);
        let mut shares = Vec::with_capacity(2);
        for (i, (encapped, ciphertext)) in sealed.iter().enumerate() {
            let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(encapped).unwrap();
            let input = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &OpModeR::Base,
                &self.keys[i].0,
                &enc,
                INFO,
                ciphertext,
                &aad,
            )
            .unwrap();
            let input = Prio3InputShare::get_decoded_with_param(&(&self.vdaf, i), &input).unwrap();
            let (state, share) = self
                .vdaf
                .verify_init(&self.verify_key, CTX, i, &(), n, &public, &input)
                .unwrap();
            states.push(state);
            shares.push(share);
        }
        let msg = self
            .vdaf
            .verifier_shares_to_message(CTX, &(), shares)
            .unwrap();
        for (state, sum) in states.into_iter().zip(sums.iter_mut()) {
            match self.vdaf.verify_next(CTX, state, msg.clone()).unwrap() {
                VerifyTransition::Finish(out) => sum.accumulate(&out).unwrap(),
                VerifyTransition::Continue(..) => unreachable!("Prio3 has one round"),
            }
        }
    }
}

fn ours(kind: QueryKind) -> (QueryParams, [Aggregator; 2]) {
    let keys = [AggregatorKeypair::generate(), AggregatorKeypair::generate()];
    let params = QueryParams {
        query: QueryId::from_bytes([1; 32]),
        kind,
        epsilon: Epsilon::from_micros(1_000_000),
        min_batch: 1,
        keys: [keys[0].public(), keys[1].public()],
    };
    let vk = VerifyKey::generate();
    let [a, b] = keys;
    let aggs = [
        Aggregator::new(&params, 0, a, vk.clone()).unwrap(),
        Aggregator::new(&params, 1, b, vk).unwrap(),
    ];
    (params, aggs)
}

fn bench_kind<T: prio::flp::Type<Field = Field128>>(
    c: &mut Criterion,
    label: &str,
    kind: QueryKind,
    m: Measurement,
    vdaf: Prio3<T, prio::vdaf::xof::XofTurboShake128, 32>,
    bare_m: T::Measurement,
) {
    let bare = Bare {
        vdaf,
        keys: [Kem::gen_keypair(), Kem::gen_keypair()],
        verify_key: [7; 32],
    };
    let (params, mut aggs) = ours(kind);
    let mut g = c.benchmark_group(format!("research_query/{label}"));
    let mut i = 0u64;
    g.bench_function("shard/medledger", |b| {
        b.iter(|| {
            i += 1;
            black_box(shard(&params, &m, nonce(i)).unwrap())
        })
    });
    g.bench_function("shard/prio+hpke", |b| {
        b.iter(|| {
            i += 1;
            black_box(bare.shard(&bare_m, nonce(i).to_bytes()))
        })
    });
    g.bench_function("verify+aggregate/medledger", |b| {
        b.iter_batched(
            || {
                i += 1;
                shard(&params, &m, nonce(i)).unwrap()
            },
            |r: Report| {
                let [a, b] = &mut aggs;
                let (ma, mb) = (a.prepare(&r).unwrap(), b.prepare(&r).unwrap());
                a.finish(&mb).unwrap();
                b.finish(&ma).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    let mut sums = [bare.vdaf.aggregate_init(&()), bare.vdaf.aggregate_init(&())];
    g.bench_function("verify+aggregate/prio+hpke", |b| {
        b.iter_batched(
            || {
                i += 1;
                bare.shard(&bare_m, nonce(i).to_bytes())
            },
            |r| bare.verify(&r, &mut sums),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_kind(
        c,
        "count",
        QueryKind::Count,
        Measurement::Count(true),
        Prio3SumVec::new_sum_vec(2, 1, 1, 1).unwrap(),
        vec![1u128],
    );
    bench_kind(
        c,
        "histogram6",
        QueryKind::Histogram { buckets: 6 },
        Measurement::Bucket(4),
        Prio3Histogram::new_histogram(2, 6, 3).unwrap(),
        4usize,
    );
}

criterion_group!(research_query, benches);
criterion_main!(research_query);
