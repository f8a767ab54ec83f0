//! Every consensus engine on the same simulated network, under the same faults.
//!
//! Each engine runs in [`medledger::sim::Network`] with the same network model (20–80 ms pair
//! latency, 5 ms jitter, 200 Mbit/s per node), the same CPU model and the same MedRec client
//! load, and is measured the same way: finalised transactions per simulated second, time from
//! submission to finality, bytes sent per node, and agreement violations among honest nodes.

use std::fmt::Write as _;

use medledger::sim::network::SECOND;
use medledger::sim::{
    Behaviour, CommitteeDeployment, EngineReport, NetConfig, Network, NetworkModel, PowSetup,
    SimConfig, Strategy, TendermintSetup,
};

/// The seed of every comparison run.
pub const SEED: u64 = 2026;
/// Heights each run finalises.
pub const BLOCKS: u64 = 12;
/// Transactions per block (per shard for committees).
pub const BLOCK_SIZE: usize = 512;

/// How many runs [`compare`] makes.
pub const RUNS: usize = 3 + 3 + 2;

/// What goes wrong during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every node follows the protocol.
    Honest,
    /// One node is down from the start.
    OneCrashed,
    /// One node signs conflicting messages.
    OneEquivocating,
}

impl Scenario {
    /// All scenarios, in table order.
    pub const ALL: [Scenario; 3] = [
        Scenario::Honest,
        Scenario::OneCrashed,
        Scenario::OneEquivocating,
    ];

    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::Honest => "honest",
            Scenario::OneCrashed => "1 crashed",
            Scenario::OneEquivocating => "1 equivocating",
        }
    }

    fn behaviours(self, node: usize) -> Vec<Behaviour> {
        let faulty = match self {
            Scenario::Honest => return Vec::new(),
            Scenario::OneCrashed => Behaviour::Silent,
            Scenario::OneEquivocating => Behaviour::Equivocating,
        };
        let mut b = vec![Behaviour::Honest; node + 1];
        b[node] = faulty;
        b
    }
}

/// The network every engine runs on.
pub fn network() -> NetworkModel {
    NetworkModel::default()
}

fn config(scenario: Scenario, faulty_node: usize) -> NetConfig {
    NetConfig {
        network: network(),
        behaviours: scenario.behaviours(faulty_node),
        seed: SEED,
        blocks: BLOCKS,
        max_time: 600 * SECOND,
        ..NetConfig::default()
    }
}

/// Tendermint with `validators` equal validators.
pub fn tendermint(validators: usize, scenario: Scenario) -> EngineReport {
    let setup = TendermintSetup {
        validators,
        block_size: BLOCK_SIZE,
        ..TendermintSetup::default()
    };
    let deployment = setup.build().expect("valid Tendermint setup");
    // The last validator is the faulty one: it proposes every `validators`-th height.
    Network::new(deployment, config(scenario, validators - 1)).run()
}

/// Proof of work among `miners` equal miners: a block every 10 s on average, final after 6
/// confirmations.
pub fn pow(miners: usize, scenario: Scenario) -> EngineReport {
    let setup = PowSetup {
        miners,
        block_interval: 10 * SECOND,
        hashes_per_tick: 20,
        block_size: BLOCK_SIZE,
        confirmations: 6,
        seed: SEED,
        ..PowSetup::default()
    };
    let deployment = setup.build().expect("valid proof-of-work setup");
    Network::new(deployment, config(scenario, miners - 1)).run()
}

/// Partitioned committees: 2 committees of 8 members drawn from 24 nodes, each shard's block
/// half of [`BLOCK_SIZE`] (so a block holds as many transactions as the other engines'). A
/// Byzantine member equivocates as the committee protocol's own adversary does.
pub fn committee(scenario: Scenario) -> EngineReport {
    let mut builder = SimConfig::builder()
        .committees(2)
        .committee_size(8)
        .nodes(24)
        .block_size(BLOCK_SIZE / 2)
        .blocks(BLOCKS)
        .network(network())
        .seed(SEED);
    if scenario == Scenario::OneEquivocating {
        // One node of 24 (the fraction is floored to a node count).
        builder = builder.byzantine(1.5 / 24.0, Strategy::Equivocating);
    }
    let sim = builder.build().expect("valid committee setup");
    let deployment = CommitteeDeployment::new(&sim).expect("valid committee setup");
    // The deployment plays the Byzantine member; the network crashes one node.
    let scenario = match scenario {
        Scenario::OneEquivocating => Scenario::Honest,
        other => other,
    };
    Network::new(deployment, config(scenario, 23)).run()
}

/// One comparison row.
#[derive(Clone, Debug)]
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// How many faulty nodes the engine tolerates with these settings.
    pub tolerates: String,
    /// What the run measured.
    pub report: EngineReport,
}

/// Runs every engine under every scenario.
pub fn compare(mut progress: impl FnMut(&str)) -> Vec<Row> {
    let mut rows = Vec::new();
    for scenario in Scenario::ALL {
        progress(&format!("tendermint, {}", scenario.label()));
        rows.push(Row {
            scenario,
            tolerates: "f < n/3".into(),
            report: tendermint(4, scenario),
        });
    }
    for scenario in Scenario::ALL {
        progress(&format!("committees, {}", scenario.label()));
        rows.push(Row {
            scenario,
            tolerates: "f < c/3 per committee".into(),
            report: committee(scenario),
        });
    }
    // A miner has nothing to sign twice: equivocation does not apply to proof of work.
    for scenario in [Scenario::Honest, Scenario::OneCrashed] {
        progress(&format!("proof of work, {}", scenario.label()));
        rows.push(Row {
            scenario,
            tolerates: "< 1/2 hash power; final after 6 blocks".into(),
            report: pow(4, scenario),
        });
    }
    rows
}

/// The comparison as a table.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<12} {:>5} {:<15} {:>9} {:>9} {:>9} {:>12} {:>10} {:<9}",
        "engine",
        "nodes",
        "scenario",
        "tx/s",
        "p50 (s)",
        "p99 (s)",
        "bytes/node",
        "violations",
        "tolerates"
    );
    for r in rows {
        let p = &r.report;
        let _ = writeln!(
            t,
            "{:<12} {:>5} {:<15} {:>9.1} {:>9.2} {:>9.2} {:>12.0} {:>10} {:<9}",
            p.engine,
            p.nodes,
            r.scenario.label(),
            p.tx_per_sec,
            p.finality_p50_us as f64 / 1e6,
            p.finality_p99_us as f64 / 1e6,
            p.bytes_per_node,
            p.agreement_violations,
            r.tolerates
        );
    }
    t
}

/// The comparison as CSV.
pub fn csv(rows: &[Row]) -> String {
    let mut c = String::from(
        "engine,nodes,scenario,blocks,txs,tx_per_sec,finality_p50_s,finality_p99_s,messages_per_node,bytes_per_node,extra_rounds,evidence,agreement_violations,refused_appends\n",
    );
    for r in rows {
        let p = &r.report;
        let _ = writeln!(
            c,
            "{},{},{},{},{},{:.3},{:.3},{:.3},{:.1},{:.0},{},{},{},{}",
            p.engine,
            p.nodes,
            r.scenario.label(),
            p.blocks,
            p.txs,
            p.tx_per_sec,
            p.finality_p50_us as f64 / 1e6,
            p.finality_p99_us as f64 / 1e6,
            p.messages_per_node,
            p.bytes_per_node,
            p.extra_rounds,
            p.evidence,
            p.agreement_violations,
            p.refused_appends
        );
    }
    c
}
