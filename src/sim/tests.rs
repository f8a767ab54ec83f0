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
