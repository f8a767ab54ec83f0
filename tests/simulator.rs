//! Every engine on the same simulated network: agreement, liveness under faults, determinism.
#![cfg(feature = "tendermint")]

use medledger::sim::network::SECOND;
use medledger::sim::{Behaviour, Fault, NetConfig, Network, TendermintSetup};

fn config(seed: u64, blocks: u64) -> NetConfig {
    NetConfig {
        seed,
        blocks,
        max_time: 120 * SECOND,
        ..NetConfig::default()
    }
}

fn tendermint() -> TendermintSetup {
    TendermintSetup {
        block_size: 32,
        ..TendermintSetup::default()
    }
}

#[test]
fn tendermint_finalises_with_agreement_on_the_shared_network() {
    let mut net = Network::new(tendermint().build().unwrap(), config(1, 10));
    let report = net.run();
    eprintln!("{report:?}");
    assert_eq!(report.blocks, 10);
    assert_eq!(report.agreement_violations, 0);
    assert_eq!(report.refused_appends, 0);
    assert!(report.txs > 0 && report.tx_per_sec > 0.0);
    assert!(report.finality_p50_us > 0 && report.finality_p50_us <= report.finality_p99_us);
}

#[test]
fn tendermint_with_an_equivocating_validator_stays_in_agreement_and_yields_evidence() {
    let mut cfg = config(2, 8);
    cfg.behaviours = vec![Behaviour::Equivocating];
    let mut net = Network::new(tendermint().build().unwrap(), cfg);
    let report = net.run();
    eprintln!("{report:?}");
    assert_eq!(report.blocks, 8);
    assert_eq!(report.agreement_violations, 0);
    assert!(report.evidence > 0);
}

#[test]
fn tendermint_survives_a_crash_and_a_partition_without_quorum() {
    let mut net = Network::new(tendermint().build().unwrap(), config(3, 1_000));
    net.run_until(5 * SECOND);
    let before = net.finalised();
    assert!(before > 0);
    net.apply(Fault::Crash(3));
    net.run_until(10 * SECOND);
    let with_crash = net.finalised();
    assert!(with_crash > before, "three of four keep finalising");
    net.apply(Fault::Restart(3));
    net.apply(Fault::Partition(vec![0, 0, 1, 1]));
    net.run_until(15 * SECOND);
    let split = net.finalised();
    net.run_until(20 * SECOND);
    assert_eq!(net.finalised(), split, "two against two finalise nothing");
    net.apply(Fault::Heal);
    net.run_until(30 * SECOND);
    assert!(net.finalised() > split, "finalising resumes after healing");
    assert_eq!(net.report().agreement_violations, 0);
}

#[test]
fn simulations_are_deterministic() {
    let run = |seed| Network::new(tendermint().build().unwrap(), config(seed, 5)).run();
    assert_eq!(run(9).fingerprint, run(9).fingerprint);
    assert_ne!(run(9).fingerprint, run(10).fingerprint);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 8, ..Default::default() })]

    /// Whatever the schedule (seed, latency, jitter, loss) and whichever validator is Byzantine,
    /// honest validators never finalise different blocks at one height.
    #[test]
    fn tendermint_agreement_holds_across_seeded_schedules(
        seed in 0u64..u64::MAX,
        byzantine in 0usize..4,
        equivocating in proptest::bool::ANY,
        max_latency_ms in 1u64..200,
        jitter_ms in 0u64..100,
        loss_percent in 0u32..10,
    ) {
        let mut cfg = config(seed, 4);
        cfg.max_time = 60 * SECOND;
        cfg.network.min_latency_us = 1_000;
        cfg.network.max_latency_us = max_latency_ms * 1_000;
        cfg.network.jitter_us = jitter_ms * 1_000;
        cfg.network.drop_ppm = loss_percent * 10_000;
        let mut behaviours = vec![Behaviour::Honest; 4];
        behaviours[byzantine] = if equivocating {
            Behaviour::Equivocating
        } else {
            Behaviour::Silent
        };
        cfg.behaviours = behaviours;
        let report = Network::new(tendermint().build().unwrap(), cfg).run();
        proptest::prop_assert_eq!(report.agreement_violations, 0);
        proptest::prop_assert_eq!(report.refused_appends, 0);
        proptest::prop_assert!(report.blocks >= 1, "three honest validators keep finalising");
    }
}
