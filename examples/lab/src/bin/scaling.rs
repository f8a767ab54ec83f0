//! How throughput grows with the number of committees, and how the engines compare.
//!
//! Sweeps 1, 2, 4, 8 and 16 committees through the deterministic simulator (the real protocol
//! state machines over a modelled network and CPU), prints a table, and writes a CSV file and an
//! SVG plot of throughput and latency against committees. Then runs every engine on the same
//! simulated network, honest and with one faulty node, and writes `engines.csv` and
//! `engines.svg` (finalised tx/s, time to finality, bytes per node, agreement violations).
//! Last, throughput against the number of Byzantine members per committee (4 committees of
//! 24, each Byzantine node equivocating), written to `byzantine.csv`.
//!
//! Two more sweeps run by default after the first: a fixed network of 192 nodes split into 1 to
//! 16 committees (`fixed.csv`, `fixed.svg`), and the growing network again with 7 equivocating
//! members per committee on average, the most a committee of 24 tolerates
//! (`growing-byzantine.csv`, `growing-byzantine.svg`). Elastico's scale, committees of 100 and
//! up to 2,400 nodes, runs only when asked for: it takes minutes per point.
//!
//! ```sh
//! cargo run --release -p medledger-lab --bin scaling            # outputs under target/scaling/
//! cargo run --release -p medledger-lab --bin scaling -- out/    # outputs under out/
//! cargo run --release -p medledger-lab --bin scaling -- out/ byzantine   # that sweep only
//! cargo run --release -p medledger-lab --bin scaling -- out/ fixed       # fixed network only
//! cargo run --release -p medledger-lab --bin scaling -- out/ growing-byzantine [F] [--exact] [--seeds N]
//! cargo run --release -p medledger-lab --bin scaling -- out/ elastico [COMMITTEES [NODES]]
//! cargo run --release -p medledger-lab --bin scaling -- out/ cross-shard # 0 to 100 % cross-shard
//! cargo run --release -p medledger-lab --bin scaling -- out/ breakdown [F [COMMITTEES]] [--all] [--exact]
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use medledger::committee::Stage;
use medledger::committee::{failure_probability, failure_threshold};
use medledger::sim::{AgreementTrace, Report, SimConfig, SimConfigBuilder, Simulation, Strategy};
use medledger_lab::engines;
use plotters::prelude::*;

const COMMITTEES: [usize; 5] = [1, 2, 4, 8, 16];
const COMMITTEE_SIZE: u16 = 24;
const BLOCK_SIZE: usize = 512;
const BLOCKS: u64 = 6;
const SEED: u64 = 2026;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/scaling"));
    std::fs::create_dir_all(&out_dir)?;
    match std::env::args().nth(2).as_deref() {
        None => {}
        Some("byzantine") => return byzantine_sweep(&out_dir),
        Some("fixed") => return fixed_sweep(&out_dir),
        Some("growing-byzantine") => return growing_byzantine_sweep(&out_dir),
        Some("elastico") => return elastico(&out_dir),
        Some("cross-shard") => return cross_shard_sweep(&out_dir),
        Some("breakdown") => return breakdown(&out_dir),
        Some(other) => {
            return Err(format!(
                "unknown sweep {other:?}: expected byzantine, fixed, growing-byzantine, elastico, cross-shard or breakdown"
            )
            .into())
        }
    }

    let bar = ProgressBar::new(COMMITTEES.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} committees={msg}",
    )?);
    let mut rows: Vec<(usize, Report)> = Vec::new();
    for k in COMMITTEES {
        bar.set_message(k.to_string());
        let config = SimConfig::builder()
            .committees(k)
            .committee_size(COMMITTEE_SIZE)
            .block_size(BLOCK_SIZE)
            .blocks(BLOCKS)
            .seed(SEED)
            .build()?;
        rows.push((k, Simulation::new(config)?.run()));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let base = rows[0].1.tx_per_sec;
    // Proof of work for contrast: Bitcoin's parameters (a 10-minute block interval) with blocks
    // as large as the 16-committee blocks; confirmation after 6 blocks.
    let pow_block = (BLOCK_SIZE * 16) as f64;
    let pow_tps = pow_block / 600.0;

    let mut table = String::new();
    writeln!(
        table,
        "{:>10} {:>7} {:>11} {:>12} {:>10} {:>10} {:>9} {:>12} {:>7}",
        "committees",
        "nodes",
        "tx/s",
        "ratio to k×1",
        "p50 (s)",
        "p99 (s)",
        "msgs/node",
        "bytes/node",
        "views"
    )?;
    let mut csv = String::from(
        "engine,committees,nodes,tx_per_sec,ratio_to_k_times_one,latency_p50_s,latency_p99_s,messages_per_node,bytes_per_node,view_changes,safety_violations,chain_rejections\n",
    );
    for (k, r) in &rows {
        let ratio = r.tx_per_sec / (*k as f64 * base);
        let nodes = *k * usize::from(COMMITTEE_SIZE) * 3 / 2;
        writeln!(
            table,
            "{:>10} {:>7} {:>11.1} {:>12.3} {:>10.2} {:>10.2} {:>9.0} {:>12.0} {:>7}",
            k,
            nodes,
            r.tx_per_sec,
            ratio,
            r.latency_p50_us as f64 / 1e6,
            r.latency_p99_us as f64 / 1e6,
            r.messages_per_node,
            r.bytes_per_node,
            r.view_changes
        )?;
        writeln!(
            csv,
            "committee,{k},{nodes},{:.3},{ratio:.4},{:.3},{:.3},{:.1},{:.0},{},{},{}",
            r.tx_per_sec,
            r.latency_p50_us as f64 / 1e6,
            r.latency_p99_us as f64 / 1e6,
            r.messages_per_node,
            r.bytes_per_node,
            r.view_changes,
            r.safety_violations,
            r.chain_rejections
        )?;
    }
    writeln!(
        table,
        "{:>10} {:>7} {:>11.1} {:>12} {:>10.0} {:>10.0}",
        "pow", "-", pow_tps, "-", 3600.0, 3600.0
    )?;
    writeln!(csv, "pow,0,0,{pow_tps:.3},,3600,3600,,,,,")?;
    print!("{table}");
    let k16 = rows.last().map(|(_, r)| r.tx_per_sec).unwrap_or(0.0);
    println!(
        "\nthroughput(16) / (16 × throughput(1)) = {:.3} (goal ≥ 0.85)",
        k16 / (16.0 * base)
    );
    if rows
        .iter()
        .any(|(_, r)| r.safety_violations + r.chain_rejections + r.engine.agreement_violations > 0)
    {
        return Err("a run reported a safety violation or a rejected block".into());
    }

    std::fs::write(out_dir.join("scaling.csv"), &csv)?;
    let svg = out_dir.join("scaling.svg");
    plot(&svg, &rows)?;
    println!(
        "wrote {} and {}",
        out_dir.join("scaling.csv").display(),
        svg.display()
    );
    fixed_sweep(&out_dir)?;
    growing_byzantine_sweep(&out_dir)?;
    compare_engines(&out_dir)?;
    byzantine_sweep(&out_dir)
}

/// One point of a sweep: committees, committee size, nodes and what the run measured.
struct Point {
    committees: usize,
    committee_size: u16,
    nodes: usize,
    report: Report,
}

/// Who equivocates in a run.
#[derive(Clone, Copy)]
enum Adversary {
    /// A fraction of the nodes, so committees drawn at random hold that fraction on average.
    Fraction(f64),
    /// Exactly this many members of every committee (`--exact`).
    PerCommittee(u16),
}

impl Adversary {
    /// `f` equivocating members per committee: on average, or exactly with `--exact` among
    /// the arguments.
    fn from_args(f: u16) -> Self {
        match std::env::args().any(|a| a == "--exact") {
            true => Adversary::PerCommittee(f),
            false => Adversary::Fraction(f64::from(f) / f64::from(COMMITTEE_SIZE)),
        }
    }

    fn apply(self, builder: SimConfigBuilder) -> SimConfigBuilder {
        match self {
            Adversary::Fraction(x) => builder.byzantine(x, Strategy::Equivocating),
            Adversary::PerCommittee(f) => {
                builder.byzantine_per_committee(f, Strategy::Equivocating)
            }
        }
    }

    /// "on average" or "in every committee", after a number of members.
    fn how(self) -> &'static str {
        match self {
            Adversary::Fraction(_) => "on average",
            Adversary::PerCommittee(_) => "in every committee",
        }
    }
}

/// Runs one simulation per entry of `points` (committees, committee size, nodes), with the
/// `adversary` equivocating, printing each row as it completes with the wall-clock time it
/// took (the runs at Elastico's scale are slow).
fn sweep(
    points: &[(usize, u16, usize)],
    adversary: Adversary,
    blocks: u64,
) -> Result<Vec<Point>, Box<dyn std::error::Error>> {
    sweep_seeded(points, adversary, blocks, SEED)
}

/// [`sweep`] with `seed`.
fn sweep_seeded(
    points: &[(usize, u16, usize)],
    adversary: Adversary,
    blocks: u64,
    seed: u64,
) -> Result<Vec<Point>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for &(k, c, nodes) in points {
        let started = std::time::Instant::now();
        let builder = SimConfig::builder()
            .committees(k)
            .committee_size(c)
            .nodes(nodes)
            .block_size(BLOCK_SIZE)
            .blocks(blocks)
            .seed(seed);
        let config = adversary.apply(builder).build()?;
        let report = Simulation::new(config)?.run();
        eprintln!(
            "  {k:>2} committees of {c:>3}, {nodes:>5} nodes: {} blocks, {:.1} tx/s, p50 {:.2} s, {}; {:.1} s of wall-clock time",
            report.blocks,
            report.tx_per_sec,
            report.latency_p50_us as f64 / 1e6,
            violations(&report),
            started.elapsed().as_secs_f64()
        );
        out.push(Point {
            committees: k,
            committee_size: c,
            nodes,
            report,
        });
    }
    Ok(out)
}

/// The table and CSV of a sweep. `ratio` is each point's throughput over `committees ×` the
/// first point's when the first point is one committee (otherwise `-`); the last column is the
/// probability that one committee of that size drawn from the sweep's nodes holds a third or
/// more Byzantine members when a quarter of all nodes are Byzantine
/// (`committee::failure_probability`).
fn sweep_table(sweep: &str, points: &[Point]) -> Result<(String, String), std::fmt::Error> {
    // The ratio needs one committee's throughput: only when the sweep starts at one committee.
    let base = points
        .first()
        .filter(|p| p.committees == 1)
        .map(|p| p.report.tx_per_sec);
    let mut table = String::new();
    writeln!(
        table,
        "{:>10} {:>5} {:>6} {:>10} {:>12} {:>8} {:>8} {:>9} {:>11} {:>6} {:>6} {:>10} {:>7} {:>12}",
        "committees",
        "size",
        "nodes",
        "tx/s",
        "ratio to k×1",
        "p50 (s)",
        "p99 (s)",
        "msgs/node",
        "bytes/node",
        "views",
        "failed",
        "violations",
        "beyond",
        "P(fail) 25%"
    )?;
    let mut csv = String::from(
        "sweep,committees,committee_size,nodes,blocks,tx_per_sec,ratio_to_k_times_one,latency_p50_s,latency_p99_s,messages_per_node,bytes_per_node,view_changes,committee_failures,safety_violations,violations_beyond_bound,chain_rejections,committee_failure_probability_quarter_byzantine\n",
    );
    for p in points {
        let r = &p.report;
        let ratio = base.map(|b| r.tx_per_sec / (p.committees as f64 * b));
        let (ratio_cell, ratio_csv) = match ratio {
            Some(x) => (format!("{x:.3}"), format!("{x:.4}")),
            None => ("-".to_string(), String::new()),
        };
        let n = p.nodes as u64;
        let c = u64::from(p.committee_size);
        let fail = failure_probability(n, n / 4, c, failure_threshold(c));
        writeln!(
            table,
            "{:>10} {:>5} {:>6} {:>10.1} {:>12} {:>8.2} {:>8.2} {:>9.0} {:>11.0} {:>6} {:>6} {:>10} {:>7} {:>12.2e}",
            p.committees,
            p.committee_size,
            p.nodes,
            r.tx_per_sec,
            ratio_cell,
            r.latency_p50_us as f64 / 1e6,
            r.latency_p99_us as f64 / 1e6,
            r.messages_per_node,
            r.bytes_per_node,
            r.view_changes,
            r.committee_failures,
            r.safety_violations,
            r.violations_beyond_bound,
            fail
        )?;
        writeln!(
            csv,
            "{sweep},{},{},{},{},{:.3},{ratio_csv},{:.3},{:.3},{:.1},{:.0},{},{},{},{},{},{fail:.3e}",
            p.committees,
            p.committee_size,
            p.nodes,
            r.blocks,
            r.tx_per_sec,
            r.latency_p50_us as f64 / 1e6,
            r.latency_p99_us as f64 / 1e6,
            r.messages_per_node,
            r.bytes_per_node,
            r.view_changes,
            r.committee_failures,
            r.safety_violations,
            r.violations_beyond_bound,
            r.chain_rejections
        )?;
    }
    Ok((table, csv))
}

/// Prints a sweep's table and `throughput(16) / (16 × throughput(1))`, writes `NAME.csv` and
/// `NAME.svg`; an error if any run decided two values or produced a block the chain refused.
fn finish_sweep(
    out_dir: &std::path::Path,
    name: &str,
    points: &[Point],
) -> Result<(), Box<dyn std::error::Error>> {
    let (table, csv) = sweep_table(name, points)?;
    print!("{table}");
    if let (Some(first @ Point { committees: 1, .. }), Some(last), true) =
        (points.first(), points.last(), points.len() > 1)
    {
        println!(
            "throughput({k}) / ({k} × throughput(1)) = {:.3}",
            last.report.tx_per_sec / (last.committees as f64 * first.report.tx_per_sec),
            k = last.committees
        );
    }
    std::fs::write(out_dir.join(format!("{name}.csv")), &csv)?;
    let svg = out_dir.join(format!("{name}.svg"));
    let rows: Vec<(usize, Report)> = points
        .iter()
        .map(|p| (p.committees, p.report.clone()))
        .collect();
    plot(&svg, &rows)?;
    println!(
        "wrote {} and {}",
        out_dir.join(format!("{name}.csv")).display(),
        svg.display()
    );
    if points.iter().any(|p| !within_bound_safe(&p.report)) {
        return Err(format!(
            "a run of the {name} sweep reported a safety violation within the bound, two blocks at one height or a refused block"
        )
        .into());
    }
    Ok(())
}

/// Whether a run kept what the protocol promises: no agreement decided twice by a committee
/// within its bound, one block per height, every block accepted by the chain. (A committee
/// holding more Byzantine members than it tolerates may decide two values; the simulator
/// counts that apart.)
fn within_bound_safe(r: &Report) -> bool {
    r.safety_violations == r.violations_beyond_bound
        && r.chain_rejections + r.engine.agreement_violations == 0
}

/// "N violations", with how many of them were in committees beyond their bound.
fn violations(r: &Report) -> String {
    match r.violations_beyond_bound {
        0 => format!("{} violations", r.safety_violations),
        b => format!(
            "{} violations ({b} in committees beyond their bound)",
            r.safety_violations
        ),
    }
}

/// Nodes of the fixed-network sweep: 1 committee of 128 up to 16 committees of 8, always
/// 1.5 nodes per seat.
const FIXED_NODES: usize = 192;

/// A fixed network of [`FIXED_NODES`] split into 1, 2, 4, 8 and 16 committees: each
/// committee holds `2 × nodes / (3 × committees)` members, so more committees means smaller
/// ones (cheaper agreements, and a higher chance that one is corrupted). `fixed.csv`,
/// `fixed.svg`.
fn fixed_sweep(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    println!("\nfixed network of {FIXED_NODES} nodes split into more committees:");
    let points: Vec<(usize, u16, usize)> = COMMITTEES
        .iter()
        .map(|&k| {
            let c = u16::try_from(FIXED_NODES * 2 / (3 * k)).unwrap_or(u16::MAX);
            (k, c, FIXED_NODES)
        })
        .collect();
    let points = sweep(&points, Adversary::Fraction(0.0), BLOCKS)?;
    finish_sweep(out_dir, "fixed", &points)
}

/// Byzantine members per committee in the growing-network sweep with Byzantine members: the
/// most a committee of 24 tolerates.
const GROWING_BYZANTINE: u16 = 7;

/// The growing-network sweep (committees of 24, 1.5 nodes per seat) with a fraction
/// [`GROWING_BYZANTINE`]` / 24` of the nodes equivocating, so committees hold that many on
/// average (`growing-byzantine.csv`, `growing-byzantine.svg`); with `--exact` after `F`,
/// exactly `F` in every committee of every epoch (`growing-exact.csv`, `.svg`).
fn growing_byzantine_sweep(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let f = std::env::args()
        .nth(3)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse::<u16>())
        .transpose()?
        .unwrap_or(GROWING_BYZANTINE);
    if f >= COMMITTEE_SIZE {
        return Err(format!("f must be below the committee size {COMMITTEE_SIZE}").into());
    }
    let adversary = Adversary::from_args(f);
    if let Some(seeds) = seeds_arg()? {
        return growing_over_seeds(out_dir, f, adversary, seeds);
    }
    println!(
        "\ngrowing network, committees of {COMMITTEE_SIZE} with {f} equivocating members {}:",
        adversary.how()
    );
    let points = sweep(&growing_points(COMMITTEE_SIZE), adversary, BLOCKS)?;
    let name = match adversary {
        Adversary::Fraction(_) => "growing-byzantine",
        Adversary::PerCommittee(_) => "growing-exact",
    };
    finish_sweep(out_dir, name, &points)
}

/// The number after `--seeds`, if given.
fn seeds_arg() -> Result<Option<u64>, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--seeds") else {
        return Ok(None);
    };
    let n: u64 = args
        .get(i + 1)
        .ok_or("--seeds needs a number of seeds")?
        .parse()?;
    // Each seed is a full pair of runs (minutes each): a thousand is already days.
    if !(1..=1000).contains(&n) {
        return Err("--seeds takes 1 to 1000 seeds".into());
    }
    Ok(Some(n))
}

/// The growing sweep's goal figure over `seeds` seeds (2026 onwards): one committee and the
/// largest point per seed, each seed's ratio, and the ratio of the mean throughputs. One
/// seed's single committee may draw no Byzantine leader in its few blocks, or several; the
/// spread says how far one run's figure is to be trusted. `growing-seeds.csv` (with `--exact`,
/// `growing-exact-seeds.csv`): the sweep CSV's columns, one sweep per seed named by it.
fn growing_over_seeds(
    out_dir: &std::path::Path,
    f: u16,
    adversary: Adversary,
    seeds: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let points = growing_points(COMMITTEE_SIZE);
    let ends = [points[0], points[points.len() - 1]];
    let k = ends[1].0;
    println!(
        "\ngrowing network, committees of {COMMITTEE_SIZE} with {f} equivocating members {}, \
         1 and {k} committees, seeds {SEED} to {}:",
        adversary.how(),
        SEED + seeds - 1
    );
    let name = match adversary {
        Adversary::Fraction(_) => "growing-seeds",
        Adversary::PerCommittee(_) => "growing-exact-seeds",
    };
    let mut csv = String::new();
    let mut table = format!(
        "{:>6} {:>12} {:>12} {:>8} {:>7} {:>11}\n",
        "seed",
        "tx/s (1)",
        format!("tx/s ({k})"),
        "ratio",
        "views",
        "violations"
    );
    let (mut one, mut many, mut ratios) = (0.0, 0.0, Vec::new());
    for seed in SEED..SEED + seeds {
        let run = sweep_seeded(&ends, adversary, BLOCKS, seed)?;
        // The sweep's own CSV rows, named by seed (one header for all).
        let (_, rows) = sweep_table(&format!("{name}-{seed}"), &run)?;
        let skip = if csv.is_empty() { 0 } else { 1 };
        for line in rows.lines().skip(skip) {
            writeln!(csv, "{line}")?;
        }
        if let Some(p) = run.iter().find(|p| !within_bound_safe(&p.report)) {
            return Err(format!(
                "seed {seed}, {} committees: a safety violation within the bound",
                p.committees
            )
            .into());
        }
        let (a, b) = (&run[0].report, &run[1].report);
        let ratio = b.tx_per_sec / (k as f64 * a.tx_per_sec);
        writeln!(
            table,
            "{seed:>6} {:>12.1} {:>12.1} {ratio:>8.3} {:>7} {:>11}",
            a.tx_per_sec,
            b.tx_per_sec,
            a.view_changes + b.view_changes,
            a.safety_violations + b.safety_violations
        )?;
        one += a.tx_per_sec;
        many += b.tx_per_sec;
        ratios.push(ratio);
    }
    print!("{table}");
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    println!(
        "mean throughput({k}) / ({k} × mean throughput(1)) = {:.3} over {seeds} seeds \
         (each seed's ratio {lo:.3} to {hi:.3})",
        many / (k as f64 * one)
    );
    std::fs::write(out_dir.join(format!("{name}.csv")), &csv)?;
    println!("wrote {}", out_dir.join(format!("{name}.csv")).display());
    Ok(())
}

/// Elastico's committee size.
const ELASTICO_COMMITTEE: u16 = 100;
/// Blocks per run at Elastico's scale.
const ELASTICO_BLOCKS: u64 = 3;

/// The growing-network sweep at Elastico's scale: committees of 100, 1 to 16 of them, 150 to
/// 2,400 nodes (1.5 per seat, so the 1,600 seats of 16 committees fill). `elastico.csv`,
/// `elastico.svg`. With `COMMITTEES [NODES]` after `elastico`, that one point only (for
/// example `16 1600`, Elastico's largest network), written to `elastico-K-N.csv`.
fn elastico(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize| -> Result<Option<usize>, std::num::ParseIntError> {
        std::env::args().nth(i).map(|a| a.parse()).transpose()
    };
    let points = match arg(3)? {
        None => growing_points(ELASTICO_COMMITTEE),
        Some(k) => {
            let nodes = arg(4)?.unwrap_or(k * usize::from(ELASTICO_COMMITTEE) * 3 / 2);
            vec![(k, ELASTICO_COMMITTEE, nodes)]
        }
    };
    println!(
        "\nElastico's scale: committees of {ELASTICO_COMMITTEE}, {ELASTICO_BLOCKS} blocks per run:"
    );
    let started = std::time::Instant::now();
    let name = match points.as_slice() {
        [(k, _, n)] => format!("elastico-{k}-{n}"),
        _ => "elastico".to_string(),
    };
    let points = sweep(&points, Adversary::Fraction(0.0), ELASTICO_BLOCKS)?;
    println!(
        "(the sweep took {:.0} s of wall-clock time)",
        started.elapsed().as_secs_f64()
    );
    finish_sweep(out_dir, &name, &points)
}

/// The growing network: 1 to 16 committees of `c`, 1.5 nodes per seat.
fn growing_points(c: u16) -> Vec<(usize, u16, usize)> {
    COMMITTEES
        .iter()
        .map(|&k| (k, c, k * usize::from(c) * 3 / 2))
        .collect()
}

/// Fractions of cross-shard transactions in the cross-shard sweep, in percent.
const CROSS_SHARD_PERCENT: [u32; 5] = [0, 10, 25, 50, 100];

/// Throughput, latency and traffic against the fraction of transactions that touch a second
/// shard (4 committees of 24): each such transaction waits for the block that decides the other
/// shard's part, and shard results also go to the other shard's committee. `cross-shard.csv`.
fn cross_shard_sweep(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut table = String::new();
    writeln!(
        table,
        "{:>12} {:>10} {:>13} {:>8} {:>8} {:>10} {:>11} {:>11}",
        "cross-shard",
        "tx/s",
        "ratio to 0 %",
        "p50 (s)",
        "p99 (s)",
        "msgs/node",
        "bytes/node",
        "violations"
    )?;
    let mut csv = String::from(
        "cross_shard_percent,committees,committee_size,tx_per_sec,ratio_to_local,latency_p50_s,latency_p99_s,messages_per_node,bytes_per_node,safety_violations,chain_rejections\n",
    );
    let mut local = None;
    for pct in CROSS_SHARD_PERCENT {
        let config = SimConfig::builder()
            .committees(BYZANTINE_COMMITTEES)
            .committee_size(COMMITTEE_SIZE)
            .block_size(BLOCK_SIZE)
            .blocks(BLOCKS)
            .seed(SEED)
            .cross_shard(f64::from(pct) / 100.0)
            .build()?;
        let r = Simulation::new(config)?.run();
        let base = *local.get_or_insert(r.tx_per_sec);
        let ratio = r.tx_per_sec / base;
        writeln!(
            table,
            "{:>11}% {:>10.1} {:>13.3} {:>8.2} {:>8.2} {:>10.0} {:>11.0} {:>11}",
            pct,
            r.tx_per_sec,
            ratio,
            r.latency_p50_us as f64 / 1e6,
            r.latency_p99_us as f64 / 1e6,
            r.messages_per_node,
            r.bytes_per_node,
            r.safety_violations
        )?;
        writeln!(
            csv,
            "{pct},{BYZANTINE_COMMITTEES},{COMMITTEE_SIZE},{:.3},{ratio:.4},{:.3},{:.3},{:.1},{:.0},{},{}",
            r.tx_per_sec,
            r.latency_p50_us as f64 / 1e6,
            r.latency_p99_us as f64 / 1e6,
            r.messages_per_node,
            r.bytes_per_node,
            r.safety_violations,
            r.chain_rejections
        )?;
        if r.safety_violations + r.chain_rejections > 0 {
            print!("{table}");
            return Err("a cross-shard run reported a safety violation or a refused block".into());
        }
    }
    print!("{table}");
    std::fs::write(out_dir.join("cross-shard.csv"), &csv)?;
    println!("wrote {}", out_dir.join("cross-shard.csv").display());
    Ok(())
}

/// Byzantine members per committee in the sweep (a committee of 24 tolerates 7).
const BYZANTINE_PER_COMMITTEE: [u16; 5] = [0, 2, 4, 6, 7];
/// Committees in the Byzantine sweep.
const BYZANTINE_COMMITTEES: usize = 4;

/// Throughput with `f` Byzantine members per committee, `f` from 0 to the tolerated number:
/// each run makes a fraction `f / c` of the nodes Byzantine (so committees, drawn at random,
/// hold `f` on average; `failed` counts those that drew more than they tolerate). A table and
/// `byzantine.csv`.
fn byzantine_sweep(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut table = String::new();
    writeln!(
        table,
        "{:>12} {:>11} {:>13} {:>10} {:>7} {:>7} {:>11} {:>7}",
        "f/committee", "tx/s", "ratio to f=0", "p50 (s)", "views", "failed", "violations", "beyond"
    )?;
    let mut csv = String::from(
        "byzantine_per_committee,committees,committee_size,tx_per_sec,ratio_to_honest,latency_p50_s,view_changes,committee_failures,safety_violations,violations_beyond_bound\n",
    );
    let mut unsafe_runs = 0;
    let mut honest = None;
    for f in BYZANTINE_PER_COMMITTEE {
        let config = SimConfig::builder()
            .committees(BYZANTINE_COMMITTEES)
            .committee_size(COMMITTEE_SIZE)
            .block_size(BLOCK_SIZE)
            .blocks(BLOCKS)
            .seed(SEED)
            .byzantine(
                f64::from(f) / f64::from(COMMITTEE_SIZE),
                Strategy::Equivocating,
            )
            .build()?;
        let r = Simulation::new(config)?.run();
        let base = *honest.get_or_insert(r.tx_per_sec);
        let ratio = r.tx_per_sec / base;
        writeln!(
            table,
            "{:>12} {:>11.1} {:>13.3} {:>10.2} {:>7} {:>7} {:>11} {:>7}",
            f,
            r.tx_per_sec,
            ratio,
            r.latency_p50_us as f64 / 1e6,
            r.view_changes,
            r.committee_failures,
            r.safety_violations,
            r.violations_beyond_bound
        )?;
        writeln!(
            csv,
            "{f},{BYZANTINE_COMMITTEES},{COMMITTEE_SIZE},{:.3},{ratio:.4},{:.3},{},{},{},{}",
            r.tx_per_sec,
            r.latency_p50_us as f64 / 1e6,
            r.view_changes,
            r.committee_failures,
            r.safety_violations,
            r.violations_beyond_bound
        )?;
        if !within_bound_safe(&r) {
            unsafe_runs += 1;
        }
    }
    print!("{table}");
    std::fs::write(out_dir.join("byzantine.csv"), &csv)?;
    println!("wrote {}", out_dir.join("byzantine.csv").display());
    if unsafe_runs > 0 {
        return Err("a run of the byzantine sweep reported a safety violation within the bound, two blocks at one height or a refused block".into());
    }
    Ok(())
}

/// Every engine on the same network: a table, `engines.csv` and `engines.svg`.
fn compare_engines(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let bar = ProgressBar::new(engines::RUNS as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")?);
    let rows = engines::compare(|what| {
        bar.set_message(what.to_string());
        bar.inc(1);
    });
    bar.finish_and_clear();
    println!(
        "\nengines on one network ({} blocks each, seed {}):",
        engines::BLOCKS,
        engines::SEED
    );
    print!("{}", engines::table(&rows));
    if rows
        .iter()
        .any(|r| r.report.agreement_violations + r.report.refused_appends > 0)
    {
        return Err("an engine violated agreement or produced a refused block".into());
    }
    std::fs::write(out_dir.join("engines.csv"), engines::csv(&rows))?;
    let svg = out_dir.join("engines.svg");
    plot_engines(&svg, &rows)?;
    println!(
        "wrote {} and {}",
        out_dir.join("engines.csv").display(),
        svg.display()
    );
    Ok(())
}

fn plot_engines(
    path: &std::path::Path,
    rows: &[engines::Row],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(450);
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} / {}", r.report.engine, r.scenario.label()))
        .collect();
    let n = rows.len() as f64;
    let bars = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                caption: &str,
                unit: &str,
                value: &dyn Fn(&engines::Row) -> f64|
     -> Result<(), Box<dyn std::error::Error>> {
        let max = rows.iter().map(value).fold(1e-9, f64::max) * 1.15;
        let mut c = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(20)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..max)?;
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(unit)
            .draw()?;
        for (i, r) in rows.iter().enumerate() {
            let colour = Palette99::pick(i).filled();
            c.draw_series(std::iter::once(Rectangle::new(
                [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, value(r))],
                colour,
            )))?
            .label(labels[i].clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour));
        }
        c.configure_series_labels().border_style(BLACK).draw()?;
        Ok(())
    };
    bars(&left, "finalised throughput", "tx/s", &|r| {
        r.report.tx_per_sec
    })?;
    bars(&right, "time to finality, p99", "seconds", &|r| {
        r.report.finality_p99_us as f64 / 1e6
    })?;
    root.present()?;
    Ok(())
}

fn plot(
    path: &std::path::Path,
    rows: &[(usize, Report)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(450);
    let max_tps = rows.iter().map(|(_, r)| r.tx_per_sec).fold(1.0, f64::max) * 1.1;
    let ideal = rows[0].1.tx_per_sec;
    let mut c = ChartBuilder::on(&left)
        .caption("throughput", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..17.0, 0.0..max_tps)?;
    c.configure_mesh()
        .x_desc("committees")
        .y_desc("tx/s")
        .draw()?;
    c.draw_series(LineSeries::new(
        rows.iter().map(|(k, r)| (*k as f64, r.tx_per_sec)),
        &BLUE,
    ))?
    .label("simulated")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
    c.draw_series(
        rows.iter()
            .map(|(k, r)| Circle::new((*k as f64, r.tx_per_sec), 3, BLUE.filled())),
    )?;
    c.draw_series(LineSeries::new(
        rows.iter().map(|(k, _)| (*k as f64, ideal * *k as f64)),
        &BLACK.mix(0.4),
    ))?
    .label("linear")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK.mix(0.4)));
    c.configure_series_labels().border_style(BLACK).draw()?;

    let max_lat = rows
        .iter()
        .map(|(_, r)| r.latency_p99_us as f64 / 1e6)
        .fold(1.0, f64::max)
        * 1.2;
    let mut c = ChartBuilder::on(&right)
        .caption("latency", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.5f64..17.0, 0.0..max_lat)?;
    c.configure_mesh()
        .x_desc("committees")
        .y_desc("seconds")
        .draw()?;
    c.draw_series(LineSeries::new(
        rows.iter()
            .map(|(k, r)| (*k as f64, r.latency_p50_us as f64 / 1e6)),
        &GREEN,
    ))?
    .label("p50")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], GREEN));
    c.draw_series(LineSeries::new(
        rows.iter()
            .map(|(k, r)| (*k as f64, r.latency_p99_us as f64 / 1e6)),
        &RED,
    ))?
    .label("p99")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED));
    c.configure_series_labels().border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// What each block of one growing-network run waited for: `breakdown [F [COMMITTEES]]` runs
/// `COMMITTEES` (16) committees of 24 with `F` (2) equivocating members on average and prints,
/// per block, when the directory decided, when the shards decided (the median and the last, from
/// the time the first shard began), which shard was last, the rounds it needed and who led
/// them, and when the final committee decided and the block was final; with `--all` after
/// the other arguments, also when each shard and the final committee began, proposed and
/// decided (round 0). Writes
/// `breakdown.csv`.
fn breakdown(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: usize| -> Result<usize, std::num::ParseIntError> {
        let given = std::env::args().nth(i).filter(|a| !a.starts_with("--"));
        given.map_or(Ok(default), |a| a.parse())
    };
    let f = arg(3, 2)?;
    let k = arg(4, 16)?;
    if f >= usize::from(COMMITTEE_SIZE) || !k.is_power_of_two() {
        return Err("f must be below 24 and the committees a power of two".into());
    }
    let adversary = Adversary::from_args(f as u16);
    let builder = SimConfig::builder()
        .committees(k)
        .committee_size(COMMITTEE_SIZE)
        .nodes(k * usize::from(COMMITTEE_SIZE) * 3 / 2)
        .block_size(BLOCK_SIZE)
        .blocks(BLOCKS)
        .seed(SEED);
    let config = adversary.apply(builder).build()?;
    let (report, trace) = Simulation::new(config)?.run_traced();
    println!(
        "\n{k} committees of {COMMITTEE_SIZE}, {f} equivocating members {}: {:.1} tx/s, {} round changes, {}",
        adversary.how(),
        report.tx_per_sec,
        report.view_changes,
        violations(&report)
    );
    let ms = |us: u64| us as f64 / 1e3;
    println!(
        "{:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7} {:>5} {:>9} {:>9} {:>9}",
        "height",
        "interval",
        "dir",
        "shard 0",
        "median",
        "last",
        "shard",
        "rounds",
        "byz",
        "round 0",
        "final",
        "block"
    );
    let mut csv = String::from(
        "height,interval_ms,directory_decided_ms,shards_started_ms,median_shard_decided_ms,last_shard_decided_ms,last_shard,last_shard_rounds,last_shard_byzantine_led_rounds,last_shard_round0_ms,final_rounds,final_byzantine_led_rounds,final_decided_ms,block_final_ms\n",
    );
    let mut previous: Option<u64> = None;
    for (&height, &start) in &trace.epoch_started_us {
        let Some(&done) = trace.final_us.get(&height) else {
            continue;
        };
        let of = |stage: Stage| -> Option<&AgreementTrace> {
            trace
                .agreements
                .range((height, 0, Stage::Shard(0))..=(height, u32::MAX, Stage::Directory))
                .rfind(|((_, _, s), _)| *s == stage)
                .map(|(_, t)| t)
        };
        let rel = |t: u64| ms(t.saturating_sub(start));
        if std::env::args().any(|a| a == "--all") {
            for (j, t) in &shards_all(&trace, height, k) {
                println!(
                    "         shard {j:>2} (round 0): began {}, proposed {}, decided {}",
                    t.started_us.map_or(0.0, rel),
                    t.proposed_us.get(&0).map_or(0.0, |x| rel(*x)),
                    t.decided.map_or(0.0, |(x, _)| rel(x))
                );
            }
        }
        if std::env::args().any(|a| a == "--all") {
            if let Some(t) = of(Stage::Final) {
                println!(
                    "         final    (round 0): began {}, proposed {}, decided {}",
                    t.started_us.map_or(0.0, rel),
                    t.proposed_us.get(&0).map_or(0.0, |x| rel(*x)),
                    t.decided.map_or(0.0, |(x, _)| rel(x))
                );
            }
        }
        let dir = of(Stage::Directory).and_then(|t| t.decided).map(|(t, _)| t);
        let mut shards: Vec<(u16, &AgreementTrace)> = (0..k as u16)
            .filter_map(|j| of(Stage::Shard(j)).map(|t| (j, t)))
            .filter(|(_, t)| t.decided.is_some())
            .collect();
        shards.sort_by_key(|(_, t)| t.decided.map(|(at, _)| at));
        let first_start = shards.iter().filter_map(|(_, t)| t.started_us).min();
        let median = shards.get(shards.len() / 2).and_then(|(_, t)| t.decided);
        let last = shards.last();
        let byz = |t: &AgreementTrace| t.byzantine_leaders.iter().filter(|b| **b).count();
        let fin = of(Stage::Final);
        let interval = previous.map(|p| ms(done - p));
        previous = Some(done);
        let (lj, lrounds, lbyz, lround0) = match last {
            Some((j, t)) => (
                j.to_string(),
                t.decided.map_or(0, |(_, r)| r),
                byz(t),
                t.rounds_us
                    .first()
                    .zip(t.started_us)
                    .map(|(r1, s0)| ms(r1 - s0)),
            ),
            None => ("-".into(), 0, 0, None),
        };
        let cell = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.0}"));
        println!(
            "{:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7} {:>5} {:>9} {:>9} {:>9}",
            height,
            cell(interval),
            cell(dir.map(rel)),
            cell(first_start.map(rel)),
            cell(median.map(|(t, _)| rel(t))),
            cell(last.and_then(|(_, t)| t.decided).map(|(t, _)| rel(t))),
            lj,
            lrounds,
            lbyz,
            cell(lround0),
            cell(fin.and_then(|t| t.decided).map(|(t, _)| rel(t))),
            rel(done)
        );
        writeln!(
            csv,
            "{height},{},{},{},{},{},{lj},{lrounds},{lbyz},{},{},{},{},{:.0}",
            cell(interval),
            cell(dir.map(rel)),
            cell(first_start.map(rel)),
            cell(median.map(|(t, _)| rel(t))),
            cell(last.and_then(|(_, t)| t.decided).map(|(t, _)| rel(t))),
            cell(lround0),
            fin.and_then(|t| t.decided).map_or(0, |(_, r)| r),
            fin.map_or(0, byz),
            cell(fin.and_then(|t| t.decided).map(|(t, _)| rel(t))),
            rel(done)
        )?;
        for (j, t) in &shards {
            let Some((at, round)) = t.decided else {
                continue;
            };
            if round == 0 {
                continue;
            }
            let entered: Vec<String> = t
                .rounds_us
                .iter()
                .map(|r| format!("{:.0}", rel(*r)))
                .collect();
            println!(
                "         shard {j:>2}: began {}, rounds entered at [{}], honest proposals at [{}], decided in round {round} at {:.0}; leaders Byzantine: {:?}",
                cell(t.started_us.map(rel)),
                entered.join(", "),
                t.proposed_us
                    .iter()
                    .map(|(r, at)| format!("{r}: {:.0}", rel(*at)))
                    .collect::<Vec<_>>()
                    .join(", "),
                rel(at),
                t.byzantine_leaders
            );
        }
        if let Some(t) = fin.filter(|t| t.decided.is_some_and(|(_, r)| r > 0)) {
            println!(
                "         final: rounds entered at {:?}, leaders Byzantine: {:?}",
                t.rounds_us
                    .iter()
                    .map(|r| rel(*r) as u64)
                    .collect::<Vec<_>>(),
                t.byzantine_leaders
            );
        }
    }
    std::fs::write(out_dir.join("breakdown.csv"), &csv)?;
    println!(
        "(times in ms from the epoch's start; wrote {})",
        out_dir.join("breakdown.csv").display()
    );
    Ok(())
}

/// Each shard's agreement of `height` (its last attempt).
fn shards_all(trace: &medledger::sim::Trace, height: u64, k: usize) -> Vec<(u16, AgreementTrace)> {
    (0..k as u16)
        .filter_map(|j| {
            trace
                .agreements
                .iter()
                .rfind(|((h, _, s), _)| *h == height && *s == Stage::Shard(j))
                .map(|(_, t)| (j, t.clone()))
        })
        .collect()
}
