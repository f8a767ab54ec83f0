//! Throughput of a local four-hospital consortium: finalised signed transactions per second and
//! the time from submission to finality (p50, p99), beside the bare batch-verification rate of
//! all cores divided by four (every node verifies every transaction), in the same run.
//!
//! ```sh
//! cargo run --release -p medledger-node --example throughput -- [TXS] [CLIENTS] [BLOCK_INTERVAL_MS] [BATCH] [IDLE_MS]
//! ```
//!
//! Four node processes (this program started again with `--node CONFIG`, running exactly what
//! `medledger-node run` runs) on 127.0.0.1, each with its own runtime, store and transport, so
//! the figure includes what a consortium pays: encrypted p2p, relay, consensus, the store's
//! fsyncs. `TXS` patient registrations (default 20,000), each from its own new account so no
//! nonce orders them, are signed before the clock starts; `CLIENTS` threads (default 32) submit
//! them, spread over the four nodes' local RPC, as fast as the nodes accept them, `BATCH`
//! transactions per call (default 64; 1 submits each alone). The genesis paces idle blocks at
//! `IDLE_MS` (default 1,000; `none` for a block every interval, empty or not: each empty height
//! costs every node a proposal's and a quorum of votes' signature checks). A poller
//! notes when each node first reports each height; afterwards each transaction's block height
//! is read from its node (`GET /tx/{id}`), which gives its time to finality on the node it was
//! submitted to. The bare reference is the library's `verify_batch` (all cores) over the same
//! transactions, run before the nodes start. Loopback only, bounded in time. The nodes log
//! warnings; with `MEDLEDGER_LOG` set (`info`, `debug`), they log at that level and their logs
//! are kept, their folder printed at the end.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commonware_runtime::{tokio as cw_tokio, Runner as _};
use commonware_utils::channel::mpsc;
use medledger::access::AccessOp;
use medledger::tx::Keypair;
use medledger::Transaction;
use medledger_node::config::{self, hex_encode, read_json, Genesis, NodeConfig};
use medledger_node::node::{RpcRequest, MAX_RPC_BATCH};
use medledger_node::{net, rpc, web};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The longest the nodes get to finalise the whole load.
const FINALITY_LIMIT: Duration = Duration::from_secs(300);
/// How often the poller asks every node its height.
const POLL: Duration = Duration::from_millis(10);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--node") {
        let path = args.get(1).ok_or("--node CONFIG")?;
        return run_node(NodeConfig::load(Path::new(path))?);
    }
    let txs: usize = args.first().map_or(Ok(20_000), |s| s.parse())?;
    let clients: usize = args.get(1).map_or(Ok(32), |s| s.parse())?;
    let interval: u64 = args.get(2).map_or(Ok(0), |s| s.parse())?;
    let per_call: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let idle: Option<u64> = match args.get(4).map(String::as_str) {
        None => Some(1000),
        Some("none") => None,
        Some(ms) => Some(ms.parse()?),
    };
    if !(1..=1_000_000).contains(&txs)
        || !(1..=64).contains(&clients)
        || interval > 10_000
        || !(1..=MAX_RPC_BATCH).contains(&per_call)
        || idle.is_some_and(|ms| !(interval..=60_000).contains(&ms))
    {
        return Err(format!(
            "TXS in 1..=1000000, CLIENTS in 1..=64, BLOCK_INTERVAL_MS at most 10000, \
             BATCH in 1..={MAX_RPC_BATCH}, IDLE_MS `none` or from BLOCK_INTERVAL_MS to 60000"
        )
        .into());
    }
    bench(txs, clients, interval, per_call, idle)
}

/// One node, as `medledger-node run` runs it (local RPC, web API, p2p, consensus).
fn run_node(config: NodeConfig) -> Result<()> {
    let (rpc_tx, rpc_rx) = mpsc::unbounded_channel();
    rpc::serve(config.rpc, rpc_tx)?;
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let http = config.http.ok_or("the node needs its web API")?;
    web::local::serve_node(&config, http, jobs_tx)?;
    let runner = cw_tokio::Runner::new(cw_tokio::Config::default().with_worker_threads(2));
    runner.start(|ctx| async move {
        medledger_node::init_logs(&ctx, "warn");
        net::run(ctx, config, rpc_rx, Some(jobs_rx), None).await
    })
}

/// The node processes, killed however the run ends.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bench(
    n: usize,
    clients: usize,
    interval: u64,
    per_call: usize,
    idle: Option<u64>,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("consortium");
    let consortium = config::init_with_engine(
        &dir,
        4,
        7400,
        interval,
        idle,
        config::EngineKind::Tendermint,
    )?;
    let configs = move_to_free_ports(&consortium.configs)?;
    let genesis: Genesis = read_json(&consortium.genesis)?;
    let chain_id = web::local::chain_id(&genesis)?;

    println!("signing {n} patient registrations, each from a new account");
    let batch: Vec<Transaction> = (0..n)
        .map(|i| {
            let key = Keypair::generate();
            let op = AccessOp::register_patient(key.account(), &format!("P-{i}"), &[7; 32]);
            Transaction::sign(&key, chain_id, 0, op.into())
        })
        .collect();
    let bytes: usize = batch.iter().map(|t| t.encode().len()).sum();

    // The bare limit: batch verification of the same transactions on all cores, best of three.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let copy = batch.clone();
        let start = Instant::now();
        let verified = medledger::tx::verify_batch(chain_id, copy)?;
        best = best.min(start.elapsed());
        assert_eq!(verified.len(), n);
    }
    let bare = n as f64 / best.as_secs_f64();
    println!(
        "bare verify_batch on {cores} cores: {bare:.0} tx/s; each of 4 nodes verifying every \
         transaction: limit {:.0} tx/s",
        bare / 4.0
    );

    // The nodes log warnings, or what `MEDLEDGER_LOG` asks (then their logs are kept).
    let node_log = std::env::var("MEDLEDGER_LOG").unwrap_or_else(|_| "warn".into());
    let exe = std::env::current_exe()?;
    let mut nodes = Nodes(Vec::new());
    for (i, c) in configs.iter().enumerate() {
        let log = std::fs::File::create(tmp.path().join(format!("node{i}.log")))?;
        nodes.0.push(
            Command::new(&exe)
                .arg("--node")
                .arg(&c.path)
                .env("MEDLEDGER_LOG", &node_log)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        );
    }
    let rpcs: Vec<SocketAddr> = configs.iter().map(|c| c.config.rpc).collect();
    wait_for(&mut nodes, tmp.path(), "every node at height 2", || {
        rpcs.iter().all(|a| height(*a) >= 2)
    })?;

    // The poller: when each node first reports each height.
    let seen: Arc<Mutex<Vec<HashMap<u64, Instant>>>> =
        Arc::new(Mutex::new(vec![HashMap::new(); 4]));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, stop, rpcs) = (seen.clone(), stop.clone(), rpcs.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut conns = rpcs
                .iter()
                .map(|a| Rpc::connect(*a))
                .collect::<Result<Vec<_>>>()?;
            let mut last = [0u64; 4];
            while !stop.load(Ordering::Relaxed) {
                for (i, conn) in conns.iter_mut().enumerate() {
                    let h = conn.call(&RpcRequest::Status)?["height"]
                        .as_u64()
                        .unwrap_or(0);
                    if h > last[i] {
                        let now = Instant::now();
                        let mut seen = seen.lock().map_err(|_| "poller lock")?;
                        for k in last[i] + 1..=h {
                            seen[i].insert(k, now);
                        }
                        last[i] = h;
                    }
                }
                std::thread::sleep(POLL);
            }
            Ok(())
        })
    };
    let start_height: Vec<u64> = rpcs.iter().map(|a| height(*a)).collect();

    // The load: CLIENTS threads, client c on node c % 4, each submitting its share in turn,
    // BATCH transactions per call.
    println!(
        "submitting through {clients} clients over the 4 nodes' local RPC, {per_call} per call"
    );
    let batch = Arc::new(batch);
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (batch, addr) = (batch.clone(), rpcs[c % 4]);
            std::thread::spawn(move || -> Result<Vec<(usize, Instant, bool)>> {
                let mut conn = Rpc::connect(addr)?;
                let mine: Vec<usize> = (c..batch.len()).step_by(clients).collect();
                let mut sent = Vec::with_capacity(mine.len());
                for call in mine.chunks(per_call) {
                    let at = Instant::now();
                    let txs = call.iter().map(|&i| hex_encode(&batch[i].encode()));
                    if per_call == 1 {
                        let tx = txs.collect::<String>();
                        let answer = conn.call(&RpcRequest::Submit { tx })?;
                        sent.push((call[0], at, answer["ok"] == true));
                        continue;
                    }
                    let answer = conn.call(&RpcRequest::SubmitBatch { txs: txs.collect() })?;
                    let answers = answer["answers"]
                        .as_array()
                        .ok_or_else(|| format!("batch refused: {answer}"))?;
                    if answers.len() != call.len() {
                        return Err(format!(
                            "{} answers for {} transactions",
                            answers.len(),
                            call.len()
                        )
                        .into());
                    }
                    sent.extend(
                        call.iter()
                            .zip(answers)
                            .map(|(&i, a)| (i, at, a["ok"] == true)),
                    );
                }
                Ok(sent)
            })
        })
        .collect();
    let mut submitted = Vec::with_capacity(n); // (tx index, node, when, accepted)
    for (c, h) in handles.into_iter().enumerate() {
        let sent = h.join().map_err(|_| "a client panicked")??;
        submitted.extend(sent.into_iter().map(|(i, at, ok)| (i, c % 4, at, ok)));
    }
    let submit_time = start.elapsed();
    let accepted = submitted.iter().filter(|s| s.3).count();
    println!(
        "submitted in {:.2} s ({:.0} tx/s offered), {accepted} accepted, {} refused",
        submit_time.as_secs_f64(),
        n as f64 / submit_time.as_secs_f64(),
        n - accepted
    );
    wait_for(&mut nodes, tmp.path(), "every mempool empty", || {
        rpcs.iter()
            .all(|a| rpc::call(*a, &RpcRequest::Status).is_ok_and(|s| s["mempool"] == 0))
    })?;
    std::thread::sleep(POLL * 5);
    stop.store(true, Ordering::Relaxed);
    poller.join().map_err(|_| "the poller panicked")??;
    let seen = Arc::try_unwrap(seen)
        .map_err(|_| "poller still holds its record")?
        .into_inner()
        .map_err(|_| "poller lock")?;

    // Where each transaction went, asked of the node it was submitted to.
    let https: Vec<SocketAddr> = configs
        .iter()
        .map(|c| c.config.http.ok_or("no web API"))
        .collect::<std::result::Result<_, _>>()?;
    let http = reqwest::blocking::Client::new();
    let mut latencies = Vec::with_capacity(accepted);
    let mut last_final = start;
    for &(i, node, at, ok) in &submitted {
        if !ok {
            continue;
        }
        let url = format!("http://{}/tx/{}", https[node], batch[i].id());
        let status: serde_json::Value = http.get(&url).send()?.json()?;
        let h = status["height"]
            .as_u64()
            .ok_or_else(|| format!("transaction {i} not included: {status}"))?;
        let finalised = *seen[node]
            .get(&h)
            .ok_or_else(|| format!("height {h} of node {node} was not observed"))?;
        last_final = last_final.max(finalised);
        latencies.push(finalised.saturating_duration_since(at));
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let elapsed = last_final.duration_since(start).as_secs_f64();
    let rate = latencies.len() as f64 / elapsed;
    let blocks = height(rpcs[0]) - start_height[0];
    // Transactions per block on node 0, over the blocks that hold any.
    let mut sizes = Vec::new();
    let mut conn = Rpc::connect(rpcs[0])?;
    for h in start_height[0] + 1..=start_height[0] + blocks {
        let n = conn.call(&RpcRequest::Block { height: h })?["tx_count"]
            .as_u64()
            .unwrap_or(0);
        if n > 0 {
            sizes.push(n);
        }
    }
    sizes.sort_unstable();

    // Every node has the same blocks (block ids: the seal left out) below the lowest tip.
    let common = rpcs.iter().map(|a| height(*a)).min().unwrap_or(1) - 1;
    let ids: Vec<String> = rpcs
        .iter()
        .map(|a| {
            rpc::call(*a, &RpcRequest::Block { height: common })
                .map(|b| b["id"].to_string())
                .map_err(|e| e.to_string())
        })
        .collect::<std::result::Result<_, _>>()?;
    if ids.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("nodes disagree at height {common}: {ids:?}").into());
    }

    println!();
    println!(
        "finalised: {} tx in {elapsed:.2} s = {rate:.0} tx/s ({blocks} blocks, {} bytes per tx)",
        latencies.len(),
        bytes / n
    );
    if let (Some(median), Some(max)) = (sizes.get(sizes.len() / 2), sizes.last()) {
        println!(
            "blocks holding transactions: {}, transactions per block: median {median}, max {max}",
            sizes.len()
        );
    }
    println!(
        "time to finality: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        pct(0.50).as_secs_f64(),
        pct(0.99).as_secs_f64(),
        pct(1.0).as_secs_f64()
    );
    println!(
        "ratio: finalised tx/s / (bare batch verification on all cores / 4) = {rate:.0} / {:.0} = {:.2}",
        bare / 4.0,
        rate / (bare / 4.0)
    );
    println!("all 4 nodes agree up to height {common}");
    if std::env::var_os("MEDLEDGER_LOG").is_some() {
        drop(nodes);
        let kept = tmp.keep();
        println!("node logs kept: {}", kept.join("node*.log").display());
    }
    Ok(())
}

/// A node's configuration file and its contents.
struct Placed {
    path: PathBuf,
    config: NodeConfig,
}

/// Moves the consortium to free ports (p2p, RPC, web API), rewriting every configuration.
fn move_to_free_ports(paths: &[PathBuf]) -> Result<Vec<Placed>> {
    let held: Vec<std::net::TcpListener> = (0..3 * paths.len())
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let ports: Vec<SocketAddr> = held
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<_>>()?;
    drop(held);
    let mut configs: Vec<NodeConfig> = paths
        .iter()
        .map(|p| NodeConfig::load(p))
        .collect::<config::Result<_>>()?;
    let moved: Vec<(SocketAddr, SocketAddr)> = configs
        .iter()
        .zip(&ports)
        .map(|(c, p)| (c.listen, *p))
        .collect();
    let k = paths.len();
    for (i, c) in configs.iter_mut().enumerate() {
        c.listen = ports[i];
        c.rpc = ports[k + i];
        c.http = Some(ports[2 * k + i]);
        for peer in &mut c.peers {
            let (_, new) = moved
                .iter()
                .find(|(old, _)| *old == peer.address)
                .ok_or("a peer outside the consortium")?;
            peer.address = *new;
        }
    }
    paths
        .iter()
        .zip(configs)
        .map(|(path, config)| {
            std::fs::write(path, serde_json::to_vec_pretty(&config)?)?;
            Ok(Placed {
                path: path.clone(),
                config,
            })
        })
        .collect()
}

/// A kept-open connection to a node's local RPC (one JSON line each way per request).
struct Rpc {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Rpc {
    fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    fn call(&mut self, request: &RpcRequest) -> Result<serde_json::Value> {
        let line = format!("{}\n", serde_json::to_string(request)?);
        self.writer.write_all(line.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(serde_json::from_str(&line)?)
    }
}

fn height(addr: SocketAddr) -> u64 {
    rpc::call(addr, &RpcRequest::Status)
        .ok()
        .and_then(|s| s["height"].as_u64())
        .unwrap_or(0)
}

/// Waits until `done`, or fails (with the nodes' logs) when a node exits or time runs out.
fn wait_for(
    nodes: &mut Nodes,
    logs: &Path,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !done() {
        for (i, child) in nodes.0.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(logs.join(format!("node{i}.log")))?;
                return Err(format!("node {i} exited ({status}):\n{log}").into());
            }
        }
        if start.elapsed() > FINALITY_LIMIT {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("[{:>6.2} s] {what}", start.elapsed().as_secs_f64());
    Ok(())
}
