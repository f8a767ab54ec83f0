use super::*;

fn small(seed: u64) -> SimConfigBuilder {
    SimConfig::builder()
        .committees(2)
        .committee_size(4)
        .nodes(12)
        .block_size(8)
        .blocks(3)
        .seed(seed)
}

#[test]
fn honest_run_commits_blocks_the_chain_accepts() {
    let sim = Simulation::new(small(1).build().unwrap()).unwrap();
    let r = sim.run();
    eprintln!("{r:?}");
    assert_eq!(r.blocks, 3);
    assert_eq!(r.chain_rejections, 0);
    assert_eq!(r.safety_violations, 0);
    assert!(r.txs > 0);
}

#[test]
fn builder_validates() {
    assert!(SimConfig::builder().committees(3).build().is_err());
    assert!(SimConfig::builder().committee_size(0).build().is_err());
    assert!(SimConfig::builder().nodes(2).build().is_err());
    assert!(SimConfig::builder().block_size(0).build().is_err());
    assert!(SimConfig::builder()
        .byzantine(1.0, Strategy::Silent)
        .build()
        .is_err());
    let net = NetworkModel {
        min_latency_us: 10,
        max_latency_us: 5,
        ..NetworkModel::default()
    };
    assert!(SimConfig::builder().network(net).build().is_err());
    let c = SimConfig::builder()
        .committees(4)
        .committee_size(8)
        .build()
        .unwrap();
    assert_eq!(c.committees(), 4);
    assert_eq!(c.nodes(), 48);
}

#[test]
fn calibration_measures_positive_costs() {
    let m = calibrate();
    assert!(m.sig_verify_ns > 0 && m.tx_verify_ns > 0 && m.tx_execute_ns > 0 && m.hash_ns > 0);
}
