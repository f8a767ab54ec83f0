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
//! ```sh
//! cargo run --release -p medledger-lab --bin scaling            # outputs under target/scaling/
//! cargo run --release -p medledger-lab --bin scaling -- out/    # outputs under out/
//! cargo run --release -p medledger-lab --bin scaling -- out/ byzantine   # that sweep only
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use medledger::sim::{Report, SimConfig, Simulation, Strategy};
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
    if std::env::args().nth(2).as_deref() == Some("byzantine") {
        return byzantine_sweep(&out_dir);
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
    compare_engines(&out_dir)?;
    byzantine_sweep(&out_dir)
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
        "{:>12} {:>11} {:>13} {:>10} {:>7} {:>7} {:>11}",
        "f/committee", "tx/s", "ratio to f=0", "p50 (s)", "views", "failed", "violations"
    )?;
    let mut csv = String::from(
        "byzantine_per_committee,committees,committee_size,tx_per_sec,ratio_to_honest,latency_p50_s,view_changes,committee_failures,safety_violations\n",
    );
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
            "{:>12} {:>11.1} {:>13.3} {:>10.2} {:>7} {:>7} {:>11}",
            f,
            r.tx_per_sec,
            ratio,
            r.latency_p50_us as f64 / 1e6,
            r.view_changes,
            r.committee_failures,
            r.safety_violations
        )?;
        writeln!(
            csv,
            "{f},{BYZANTINE_COMMITTEES},{COMMITTEE_SIZE},{:.3},{ratio:.4},{:.3},{},{},{}",
            r.tx_per_sec,
            r.latency_p50_us as f64 / 1e6,
            r.view_changes,
            r.committee_failures,
            r.safety_violations
        )?;
    }
    print!("{table}");
    std::fs::write(out_dir.join("byzantine.csv"), &csv)?;
    println!("wrote {}", out_dir.join("byzantine.csv").display());
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
