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

#[test]
fn committees_and_tendermint_are_measured_alike_on_one_network() {
    use medledger::sim::{CommitteeDeployment, SimConfig};
    let committees = SimConfig::builder()
        .committees(2)
        .committee_size(4)
        .nodes(12)
        .block_size(8)
        .blocks(3)
        .seed(4)
        .build()
        .unwrap();
    let mut net = committees.net_config();
    net.max_time = 120 * SECOND;
    let c = Network::new(CommitteeDeployment::new(&committees).unwrap(), net.clone()).run();
    let t = Network::new(tendermint().build().unwrap(), net).run();
    eprintln!("{c:?}\n{t:?}");
    for r in [&c, &t] {
        assert_eq!(r.blocks, 3, "{}", r.engine);
        assert_eq!(r.agreement_violations, 0, "{}", r.engine);
        assert_eq!(r.refused_appends, 0, "{}", r.engine);
        assert!(r.tx_per_sec > 0.0 && r.finality_p50_us > 0, "{}", r.engine);
    }
    assert_eq!(
        (c.engine.as_str(), t.engine.as_str()),
        ("committee", "tendermint")
    );
}
