//! Tests against Bitcoin mainnet data and Bitcoin Core's unit-test vectors.

use proptest::prelude::*;

use super::*;
use crate::hash::from_hex;

fn header(hex: &str) -> [u8; HEADER_LEN] {
    from_hex::<HEADER_LEN>(hex).unwrap()
}

/// A hash as displayed by Bitcoin tools (byte-reversed) to the computed byte order.
fn displayed(hex: &str) -> [u8; 32] {
    let mut h = from_hex::<32>(hex).unwrap();
    h.reverse();
    h
}

fn bits(v: u32) -> CompactTarget {
    CompactTarget::from_consensus(v)
}

fn nbits_of(h: &[u8; HEADER_LEN]) -> CompactTarget {
    bits(u32::from_le_bytes([h[72], h[73], h[74], h[75]]))
}

/// Real Bitcoin mainnet headers: (height, header, displayed hash).
const MAINNET: [(u32, &str, &str); 4] = [
    (
        0,
        "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b2\
         7ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c",
        "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
    ),
    (
        1,
        "010000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000982051fd1e4ba744\
         bbbe680e1fee14677ba1a3c3540bf7b1cdb606e857233e0e61bc6649ffff001d01e36299",
        "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048",
    ),
    (
        100_000,
        "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5c0\
         b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710",
        "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506",
    ),
    (
        500_000,
        "000000201929eb850a74427d0440cf6b518308837566cd6d0662790000000000000000001f6231ed3de07345\
         b607ec2a39b2d01bec2fe10dfb7f516ba4958a42691c95316d0a385a459600185599fc5c",
        "00000000000000000024fb37364cbf81fd49cc2d51c09c75c35433c3a1945d04",
    ),
];

#[test]
fn genesis_constant_is_the_real_header() {
    assert_eq!(BITCOIN_GENESIS_HEADER, header(MAINNET[0].1));
    let hash = header_hash(&BITCOIN_GENESIS_HEADER);
    assert_eq!(hash, displayed(MAINNET[0].2));
    assert_eq!(nbits_of(&BITCOIN_GENESIS_HEADER), bits(0x1d00ffff));
    assert!(Target::MAX.is_met_by(&hash));
    check_proof_of_work(&hash, bits(0x1d00ffff), Target::MAX).unwrap();
}

#[test]
fn mainnet_headers_hash_and_meet_their_targets() {
    for (height, hex, hash_hex) in MAINNET {
        let h = header(hex);
        let hash = header_hash(&h);
        assert_eq!(hash, displayed(hash_hex), "block {height}");
        let nbits = nbits_of(&h);
        let target = Target::from_compact(nbits).unwrap();
        assert!(target.is_met_by(&hash), "block {height}");
        check_proof_of_work(&hash, nbits, Target::MAX).unwrap();
        // Each block's previous-hash field is its parent's hash.
        if height == 1 {
            assert_eq!(h[4..36], displayed(MAINNET[0].2));
        }
    }
}

#[test]
fn flipped_bits_fail() {
    for (height, hex, _) in MAINNET {
        let h = header(hex);
        let target = Target::from_compact(nbits_of(&h)).unwrap();
        // Flip one bit in the version, the merkle root, the time and the nonce.
        for (byte, bit) in [(0, 0), (40, 3), (68, 7), (79, 1)] {
            let mut bad = h;
            bad[byte] ^= 1 << bit;
            let hash = header_hash(&bad);
            assert!(!target.is_met_by(&hash), "block {height}, byte {byte}");
            assert_eq!(
                check_proof_of_work(&hash, nbits_of(&bad), Target::MAX),
                Err(Error::HashAboveTarget { bits: nbits_of(&h) })
            );
        }
    }
}

#[test]
fn is_met_by_reads_the_hash_little_endian() {
    let target = Target::from_compact(bits(0x1d00ffff)).unwrap();
    // The target itself, as a hash, meets it; one more does not.
    let mut hash = target.to_le_bytes();
    assert!(target.is_met_by(&hash));
    hash[0] = 1; // the target's low bytes are zero
    assert!(!target.is_met_by(&hash));
    // A big-endian reading of the genesis hash would be enormous; it must still pass.
    assert!(target.is_met_by(&header_hash(&BITCOIN_GENESIS_HEADER)));
}

/// Bitcoin Core's `bignum_SetCompact` vectors: (nBits, value as hex, GetCompact, negative,
/// overflow). `None` for the value means Core does not check it.
#[allow(clippy::type_complexity)]
const SET_COMPACT: [(u32, Option<&str>, u32, bool, bool); 29] = [
    (0x0000_0000, Some("0"), 0, false, false),
    (0x0012_3456, Some("0"), 0, false, false),
    (0x0100_3456, Some("0"), 0, false, false),
    (0x0200_0056, Some("0"), 0, false, false),
    (0x0300_0000, Some("0"), 0, false, false),
    (0x0400_0000, Some("0"), 0, false, false),
    (0x0092_3456, Some("0"), 0, false, false),
    (0x0180_3456, Some("0"), 0, false, false),
    (0x0280_0056, Some("0"), 0, false, false),
    (0x0380_0000, Some("0"), 0, false, false),
    (0x0480_0000, Some("0"), 0, false, false),
    (0x0112_3456, Some("12"), 0x0112_0000, false, false),
    (0x01fe_dcba, Some("7e"), 0x017e_0000, true, false),
    (0x0212_3456, Some("1234"), 0x0212_3400, false, false),
    (0x0312_3456, Some("123456"), 0x0312_3456, false, false),
    (0x0412_3456, Some("12345600"), 0x0412_3456, false, false),
    (0x0492_3456, Some("12345600"), 0x0412_3456, true, false),
    (0x0500_9234, Some("92340000"), 0x0500_9234, false, false),
    (
        0x2012_3456,
        Some("1234560000000000000000000000000000000000000000000000000000000000"),
        0x2012_3456,
        false,
        false,
    ),
    (0xff12_3456, None, 0, false, true),
    // The overflow boundary (not in Core's table; Core's flag is value >= 2^256).
    (0x2201_0000, None, 0, false, true),
    (0x2200_ffff, None, 0, false, true),
    (0x2200_0100, None, 0, false, true),
    (
        0x2200_00ff,
        Some("ff00000000000000000000000000000000000000000000000000000000000000"),
        0x2100_ff00,
        false,
        false,
    ),
    (
        0x2100_ffff,
        Some("ffff000000000000000000000000000000000000000000000000000000000000"),
        0x2100_ffff,
        false,
        false,
    ),
    (0x2101_0000, None, 0, false, true),
    (0x2300_0001, None, 0, false, true),
    (0x2280_00ff, None, 0, true, false),
    // Core's CheckProofOfWork overflow case: ~0x00800000.
    (0xff7f_ffff, None, 0, false, true),
];

fn target_hex(hex: &str) -> Target {
    format!("{hex:0>64}").parse().unwrap()
}

#[test]
fn core_set_compact_vectors() {
    for (n, value, compact, negative, overflow) in SET_COMPACT {
        let d = target::decode_compact(bits(n));
        assert_eq!((d.negative, d.overflow), (negative, overflow), "{n:#010x}");
        if let Some(v) = value {
            assert_eq!(Target::from_u256(d.value), target_hex(v), "{n:#010x}");
            // GetCompact (without the negative flag) of the decoded value.
            assert_eq!(
                Target::from_u256(d.value).to_compact(),
                bits(compact),
                "{n:#010x}"
            );
        }
        let decoded = Target::from_compact(bits(n));
        match (negative, overflow) {
            (false, false) => assert_eq!(decoded.unwrap(), Target::from_u256(d.value)),
            (true, _) => assert_eq!(decoded, Err(Error::NegativeCompactTarget(bits(n)))),
            (false, true) => assert_eq!(decoded, Err(Error::CompactTargetOverflow(bits(n)))),
        }
    }
}

#[test]
fn core_get_compact_vectors() {
    // "Make sure that we don't generate compacts with the 0x00800000 bit set."
    assert_eq!(target_hex("80").to_compact(), bits(0x0200_8000));
    // Bitcoin Core's mainnet limit, 2^224 - 1, encodes as 0x1d00ffff.
    let core_limit = target_hex(&"ff".repeat(28));
    assert_eq!(core_limit.to_compact(), bits(0x1d00ffff));
    assert_eq!(Target::MAX.to_compact(), bits(0x1d00ffff));
    assert_eq!(Target::REGTEST_LIMIT.to_compact(), bits(0x207fffff));
    assert_eq!(
        Target::MAX,
        target_hex("00000000ffff0000000000000000000000000000000000000000000000000000")
    );
    // The largest values round down to three significant bytes.
    assert_eq!(target_hex(&"ff".repeat(32)).to_compact(), bits(0x2100ffff));
    assert_eq!(Target::ZERO.to_compact(), bits(0));
}

#[test]
fn core_check_proof_of_work_cases() {
    let one = {
        let mut h = [0u8; 32];
        h[0] = 1;
        h
    };
    // Negative target: the limit compact-encoded with the sign bit.
    assert_eq!(
        check_proof_of_work(&one, bits(0x1d80ffff), Target::MAX),
        Err(Error::NegativeCompactTarget(bits(0x1d80ffff)))
    );
    // Overflowing target.
    assert_eq!(
        check_proof_of_work(&one, bits(!0x0080_0000), Target::MAX),
        Err(Error::CompactTargetOverflow(bits(!0x0080_0000)))
    );
    // Too easy: twice Core's limit (2^224 - 1) compact-encoded.
    let twice = target_hex(&format!("1{}e", "ff".repeat(27) + "f"));
    assert_eq!(twice.to_compact(), bits(0x1d01ffff));
    assert!(matches!(
        check_proof_of_work(&one, twice.to_compact(), Target::MAX),
        Err(Error::TargetAboveLimit { .. })
    ));
    // Hash bigger than the target.
    let big_hash = twice.to_le_bytes();
    assert_eq!(
        check_proof_of_work(&big_hash, bits(0x1d00ffff), Target::MAX),
        Err(Error::HashAboveTarget {
            bits: bits(0x1d00ffff)
        })
    );
    // Zero target.
    assert_eq!(
        check_proof_of_work(&one, bits(0), Target::MAX),
        Err(Error::ZeroTarget(bits(0)))
    );
    // The limit itself is fine.
    check_proof_of_work(&one, bits(0x1d00ffff), Target::MAX).unwrap();
}

/// Bitcoin Core's `pow_tests`: (last nBits, first block time, last block time, expected).
const CORE_RETARGETS: [(&str, u32, u64, u64, u32); 4] = [
    // Blocks 30240 and 32255; no clamp applies.
    (
        "get_next_work",
        0x1d00ffff,
        1_261_130_161,
        1_262_152_739,
        0x1d00d86a,
    ),
    // Blocks 0 and 2015; the result is capped at the limit.
    (
        "get_next_work_pow_limit",
        0x1d00ffff,
        1_231_006_505,
        1_233_061_996,
        0x1d00ffff,
    ),
    // Blocks 66528 and 68543; the timespan is clamped from below.
    (
        "get_next_work_lower_limit_actual",
        0x1c05a3f4,
        1_279_008_237,
        1_279_297_671,
        0x1c0168fd,
    ),
    // Block 46367 and a made-up first time; the timespan is clamped from above.
    (
        "get_next_work_upper_limit_actual",
        0x1c387f6f,
        1_263_163_443,
        1_269_211_443,
        0x1d00e1fd,
    ),
];

#[test]
fn core_retarget_vectors() {
    let params = RetargetParams::bitcoin();
    for (name, last, first_time, last_time, expected) in CORE_RETARGETS {
        assert_eq!(
            next_target(bits(last), first_time, last_time, &params),
            bits(expected),
            "{name}"
        );
    }
    // Heights: block 32256 is a retarget (its window is blocks 30240..=32255), 32255 is not.
    assert!(params.is_retarget_height(32_256));
    assert!(params.is_retarget_height(2016));
    assert!(!params.is_retarget_height(32_255));
    assert!(!params.is_retarget_height(0));
}

#[test]
fn retarget_edges() {
    let params = RetargetParams::bitcoin();
    let span = params.target_timespan();
    let last = bits(0x1c05a3f4);
    let old = Target::from_compact(last).unwrap();
    // On time: unchanged (up to compact rounding, which is exact here).
    assert_eq!(next_target(last, 1000, 1000 + span, &params), last);
    // Time going backwards clamps to the shortest timespan, as a negative timespan does in
    // Core.
    assert_eq!(
        next_target(last, 5000, 1000, &params),
        next_target(last, 1000, 1000 + span / 4, &params)
    );
    let quarter = Target::from_compact(next_target(last, 0, 1, &params)).unwrap();
    assert!(quarter < old);
    // Any timespan beyond four times is clamped.
    assert_eq!(
        next_target(last, 0, u64::MAX, &params),
        next_target(last, 0, 4 * span, &params)
    );
    // Regtest never retargets.
    let regtest = RetargetParams::regtest();
    assert_eq!(
        next_target(bits(0x207fffff), 0, 1, &regtest),
        bits(0x207fffff)
    );
    // Inputs a valid chain never has still give a target no easier than the limit.
    for weird in [0xff12_3456, 0x1d80ffff, 0x2100ffff, 0] {
        let t = next_target(bits(weird), 0, u64::MAX, &params);
        assert!(
            Target::from_compact(t).unwrap() <= Target::MAX,
            "{weird:#x}"
        );
    }
}

#[test]
fn retarget_params_validation() {
    let b = RetargetParams::builder;
    assert_eq!(b().build().unwrap(), RetargetParams::bitcoin());
    assert_eq!(b().interval(0).build(), Err(Error::ZeroInterval));
    assert_eq!(b().target_timespan(0).build(), Err(Error::ZeroTimespan));
    assert_eq!(b().clamp_factor(0).build(), Err(Error::ZeroClampFactor));
    assert_eq!(
        b().target_timespan(3).build(),
        Err(Error::TimespanBelowClampFactor {
            timespan: 3,
            factor: 4
        })
    );
    assert_eq!(
        b().pow_limit(bits(0x1d80ffff)).build(),
        Err(Error::InvalidPowLimit(Box::new(
            Error::NegativeCompactTarget(bits(0x1d80ffff))
        )))
    );
    assert!(matches!(
        b().pow_limit(bits(0)).build(),
        Err(Error::InvalidPowLimit(_))
    ));
    // Regtest's limit times 4 * 14 days overflows 256 bits: Core only allows it without
    // retargeting.
    assert!(matches!(
        b().pow_limit(bits(0x207fffff)).build(),
        Err(Error::RetargetOverflow { .. })
    ));
    let regtest = b().pow_limit(bits(0x207fffff)).no_retargeting(true).build();
    assert_eq!(regtest.unwrap(), RetargetParams::regtest());
    assert!(matches!(
        b().target_timespan(u64::MAX).clamp_factor(2).build(),
        Err(Error::RetargetOverflow { .. })
    ));
    let p = b()
        .interval(10)
        .target_timespan(100)
        .clamp_factor(2)
        .build()
        .unwrap();
    assert_eq!(
        (p.interval(), p.target_spacing(), p.clamp_factor()),
        (10, 10, 2)
    );
    assert!(p.is_retarget_height(10) && !p.is_retarget_height(15));
}

#[test]
fn median_time_past_matches_core() {
    assert_eq!(median_time_past(&[]), 0);
    assert_eq!(median_time_past(&[7]), 7);
    assert_eq!(median_time_past(&[3, 1]), 3);
    // Only the last 11 count: the leading huge values are ignored.
    let mut times = vec![u64::MAX; 5];
    times.extend([10, 1, 9, 2, 8, 3, 7, 4, 6, 5, 11]);
    assert_eq!(median_time_past(&times), 6);
    assert_eq!(MEDIAN_TIME_SPAN, 11);
}

#[test]
fn block_time_rules() {
    assert_eq!(MAX_FUTURE_BLOCK_TIME, 7200);
    check_block_time(101, 100, 0).unwrap();
    assert!(matches!(
        check_block_time(100, 100, 1000),
        Err(Error::TimeTooOld { .. })
    ));
    check_block_time(1000 + 7200, 0, 1000).unwrap();
    assert!(matches!(
        check_block_time(1000 + 7201, 0, 1000),
        Err(Error::TimeTooNew { .. })
    ));
    check_block_time(u64::MAX, 0, u64::MAX - 1).unwrap();
}

#[test]
fn work_values() {
    // Core's work for difficulty 1.
    assert_eq!(Target::MAX.to_work(), Work::from_u64(0x1_0001_0001));
    assert_eq!(
        Target::MAX.to_work().to_string(),
        format!("{:064x}", 0x1_0001_0001u64)
    );
    // Regtest blocks weigh 2.
    assert_eq!(Target::REGTEST_LIMIT.to_work(), Work::from_u64(2));
    // Block 100000 (0x1b04864c): floor(2^256 / (0x04864c * 256^24 + 1)).
    let t = Target::from_compact(bits(0x1b04864c)).unwrap();
    assert_eq!(t.to_work(), Work::from_u64(0x3894_6224_e37e));
    // Edge cases.
    assert_eq!(Target::ZERO.to_work(), Work::ZERO);
    assert_eq!(
        Target::from_be_bytes([0xff; 32]).to_work(),
        Work::from_u64(1)
    );
    let mut one = [0u8; 32];
    one[31] = 1;
    let mut half = [0u8; 32];
    half[0] = 0x80;
    assert_eq!(
        Target::from_be_bytes(one).to_work(),
        Work::from_be_bytes(half)
    );
}

#[test]
fn work_arithmetic_and_encoding() {
    let w = Work::from_u64(5);
    assert_eq!(w + w, Work::from_u64(10));
    assert_eq!(Work::MAX + w, Work::MAX);
    assert_eq!(Work::MAX.checked_add(w), None);
    assert_eq!(Work::MAX.checked_add(Work::ZERO), Some(Work::MAX));
    assert_eq!(w.checked_sub(Work::from_u64(6)), None);
    assert_eq!(w.saturating_sub(Work::from_u64(6)), Work::ZERO);
    assert_eq!(w.checked_sub(Work::from_u64(2)), Some(Work::from_u64(3)));
    let mut acc = Work::ZERO;
    acc += w;
    acc += w;
    assert_eq!(acc, Work::from_u64(10));
    assert_eq!([w, w, w].iter().sum::<Work>(), Work::from_u64(15));
    assert_eq!([Work::MAX, w].into_iter().sum::<Work>(), Work::MAX);
    assert!(Work::from_u64(1) > Work::ZERO && Work::ZERO.is_zero());
    // Carries across limbs order correctly.
    let big = Work::from_be_bytes({
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    });
    assert!(big > Work::from_u64(u64::MAX));
    assert_eq!(Work::from_u64(u64::MAX) + Work::from_u64(1), {
        let mut b = [0u8; 32];
        b[23] = 1;
        Work::from_be_bytes(b)
    });
    // Text and serde forms.
    let s = big.to_string();
    assert_eq!(s.len(), 64);
    assert_eq!(s.parse::<Work>().unwrap(), big);
    assert_eq!(format!("{big:?}"), format!("Work({s})"));
    let bytes = postcard::to_allocvec(&big).unwrap();
    assert_eq!(bytes, big.to_be_bytes());
    assert_eq!(postcard::from_bytes::<Work>(&bytes).unwrap(), big);
    let t = Target::MAX;
    let bytes = postcard::to_allocvec(&t).unwrap();
    assert_eq!(postcard::from_bytes::<Target>(&bytes).unwrap(), t);
    assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
}

#[test]
fn compact_target_formats() {
    let c = bits(0x1d00ffff);
    assert_eq!(c.to_string(), "1d00ffff");
    assert_eq!(format!("{c:?}"), "CompactTarget(0x1d00ffff)");
    assert_eq!(format!("{c:#x}"), "0x1d00ffff");
    assert_eq!("1d00ffff".parse::<CompactTarget>().unwrap(), c);
    assert_eq!(bits(5).to_string(), "00000005");
    assert!("1d00fff".parse::<CompactTarget>().is_err());
    assert_eq!(c.to_consensus(), 0x1d00ffff);
    // serde as the plain u32 (postcard varint).
    let bytes = postcard::to_allocvec(&c).unwrap();
    assert_eq!(bytes, postcard::to_allocvec(&0x1d00ffffu32).unwrap());
    assert_eq!(postcard::from_bytes::<CompactTarget>(&bytes).unwrap(), c);
    assert_eq!(
        Error::NegativeCompactTarget(bits(0x1d80ffff)).to_string(),
        "compact target 0x1d80ffff is negative"
    );
}

#[test]
fn errors_are_send_sync_static() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<Error>();
}

/// Core's GetCompact, written byte by byte (independently of the 256-bit integer): the three
/// most significant bytes of the value, shifted right by a byte if the top one has its high
/// bit set.
fn reference_get_compact(value_be: [u8; 32]) -> u32 {
    let Some(first) = value_be.iter().position(|&b| b != 0) else {
        return 0;
    };
    let mut size = (32 - first) as u32;
    let byte = |i: usize| value_be.get(i).copied().unwrap_or(0);
    let mut mantissa = u32::from_be_bytes([0, byte(first), byte(first + 1), byte(first + 2)]);
    if mantissa & 0x0080_0000 != 0 {
        mantissa >>= 8;
        size += 1;
    }
    (size << 24) | mantissa
}

/// Core's SetCompact, byte by byte: the value's big-endian bytes (sign bit ignored) and
/// whether a non-zero mantissa byte lands beyond the 32nd byte (Core's overflow flag).
fn reference_set_compact(n: u32) -> ([u8; 32], bool) {
    let size = (n >> 24) as usize;
    let m = (n & 0x007f_ffff).to_be_bytes(); // m[1..4] are the mantissa bytes
    let mut out = [0u8; 32];
    let mut overflow = false;
    for (k, &b) in m[1..4].iter().enumerate() {
        // Mantissa byte k is worth 256^(size - 1 - k).
        if let Some(power) = size.checked_sub(1 + k) {
            if power < 32 {
                out[31 - power] = b;
            } else {
                overflow |= b != 0;
            }
        }
    }
    (out, overflow)
}

/// Compact encodings, biased towards the interesting exponents and small mantissas.
fn any_compact() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        (0u32..=4, any::<u32>()).prop_map(|(s, m)| (s << 24) | (m & 0x00ff_ffff)),
        (30u32..=36, any::<u32>(), 0u32..4).prop_map(|(s, m, width)| {
            // A mantissa of 1, 2 or 3 significant bytes, sign bit clear or set.
            let m = m & [0x80_00ff, 0x80_ffff, 0xff_ffff, 0x80_0000][width as usize];
            (s << 24) | m
        }),
    ]
}

fn any_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(Target::from_be_bytes),
        // Mostly leading zeros, like real targets.
        (any::<u64>(), 0u32..256)
            .prop_map(|(v, s)| { Target::from_u256(crate::u256::U256::from_u64(v).shl(s)) }),
    ]
}

proptest! {
    #[test]
    fn compact_round_trip_is_core_normalisation(n in any_compact()) {
        let d = target::decode_compact(bits(n));
        let (reference_value, reference_overflow) = reference_set_compact(n);
        prop_assert_eq!(d.value.to_be_bytes(), reference_value);
        prop_assert_eq!(d.overflow, reference_overflow);
        match Target::from_compact(bits(n)) {
            Ok(t) => {
                let normalised = t.to_compact();
                prop_assert_eq!(normalised.to_consensus(), reference_get_compact(t.to_be_bytes()));
                // The normal form decodes to the same value and is its own normal form.
                prop_assert_eq!(Target::from_compact(normalised), Ok(t));
                prop_assert_eq!(Target::from_compact(normalised).unwrap().to_compact(), normalised);
                prop_assert!(!d.negative && !d.overflow);
            }
            Err(Error::NegativeCompactTarget(_)) => prop_assert!(d.negative),
            Err(Error::CompactTargetOverflow(_)) => prop_assert!(d.overflow && !d.negative),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }

    #[test]
    fn mainnet_limit_matches_cores_declared_limit(n in any::<u32>()) {
        // Core declares 2^224 - 1; no compact target lies between it and Target::MAX.
        let core_limit = target_hex(&"ff".repeat(28));
        if let Ok(t) = Target::from_compact(bits(n)) {
            prop_assert_eq!(t <= Target::MAX, t <= core_limit);
        }
    }

    #[test]
    fn to_compact_truncates(t in any_target()) {
        let c = t.to_compact();
        prop_assert_eq!(c.to_consensus(), reference_get_compact(t.to_be_bytes()));
        prop_assert_eq!(c.to_consensus() & 0x0080_0000, 0);
        let back = Target::from_compact(c).unwrap();
        prop_assert!(back <= t);
        prop_assert_eq!(back.to_compact(), c);
    }

    #[test]
    fn work_is_floor_of_two_to_256_over_target_plus_one(t in any_target()) {
        let w = t.to_work();
        if t == Target::ZERO {
            prop_assert_eq!(w, Work::ZERO);
        } else {
            // With d = t + 1 (no wrap unless t is all ones): w * d <= 2^256 < (w + 1) * d,
            // i.e. w * d ≡ -r (mod 2^256) with 0 <= r < d.
            let d = t.as_u256().wrapping_add(crate::u256::U256::ONE);
            let wv = crate::u256::U256::from_be_bytes(w.to_be_bytes());
            if !d.is_zero() {
                let mut prod = crate::u256::U256::ZERO;
                for (i, limb) in d.to_le_bytes().chunks_exact(8).enumerate() {
                    let limb = u64::from_le_bytes(limb.try_into().unwrap());
                    prod = prod.wrapping_add(wv.overflowing_mul_u64(limb).0.shl(64 * i as u32));
                }
                let r = crate::u256::U256::ZERO.overflowing_sub(prod).0;
                prop_assert!(r < d);
                prop_assert!(!wv.is_zero());
            }
        }
    }

    #[test]
    fn work_decreases_as_target_grows(a in any_target(), b in any_target()) {
        prop_assume!(a != Target::ZERO && b != Target::ZERO);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(lo.to_work() >= hi.to_work());
    }

    #[test]
    fn is_met_by_agrees_with_numeric_order(t in any_target(), h in any::<[u8; 32]>()) {
        prop_assert_eq!(t.is_met_by(&h), Target::from_le_bytes(h) <= t);
    }

    #[test]
    fn retarget_stays_within_clamp(
        exp in 0x17u32..=0x1d, mantissa in 0x8000u32..0x7f_ffff, dt in any::<u32>(),
    ) {
        let params = RetargetParams::bitcoin();
        let last = bits((exp << 24) | mantissa);
        let old = Target::from_compact(last).unwrap().min(Target::MAX);
        let new = Target::from_compact(next_target(last, 0, u64::from(dt), &params)).unwrap();
        prop_assert!(new <= Target::MAX);
        // Never more than 4x easier, never more than 4x harder up to the compact encoding's
        // truncation (a relative error below 2^-15 here).
        let (old, new) = (old.as_u256(), new.as_u256());
        prop_assert!(new <= old.overflowing_mul_u64(4).0);
        let slack = old.shr(14).wrapping_add(crate::u256::U256::from_u64(4));
        prop_assert!(new.overflowing_mul_u64(4).0.wrapping_add(slack) >= old);
    }

    #[test]
    fn median_time_past_is_the_sorted_middle(times in proptest::collection::vec(any::<u64>(), 1..30)) {
        let mut last: Vec<u64> = times[times.len().saturating_sub(11)..].to_vec();
        last.sort_unstable();
        prop_assert_eq!(median_time_past(&times), last[last.len() / 2]);
    }
}
