//! `medledger-node`: init a consortium, run a node, submit transactions, query status, or run
//! a local four-hospital demo. See the README.
#![deny(missing_docs)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use commonware_runtime::{tokio, Runner as _};
use commonware_utils::channel::mpsc;
use medledger_node::config::{NodeConfig, Result};
use medledger_node::node::{RpcRequest, MAX_RPC_BATCH};
use medledger_node::{config, net, rpc, web};

const USAGE: &str = "usage:
  medledger-node init --nodes N --dir DIR [--base-port P] [--block-interval-ms MS]
                      [--idle-block-interval-ms MS] [--engine tendermint|pow|committee]
                      (--idle-block-interval-ms: while no transaction waits, a block only
                      this often; without it, a block every interval, empty or not)
  medledger-node run --config FILE
  medledger-node submit --config FILE [--batch]
                      (hex of canonical transactions, one per line on stdin; --batch sends them
                      in batches of up to 1024 and prints each batch's answer)
  medledger-node status --config FILE
  medledger-node block --config FILE --height H
  medledger-node demo [--base-port P]
  medledger-node portal-demo [--http 127.0.0.1:7480]";

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn parse<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match flag(args, name) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name}: cannot parse {v:?}").into()),
        None => Ok(default),
    }
}

fn config_arg(args: &[String]) -> Result<NodeConfig> {
    let path = flag(args, "--config").ok_or("--config FILE is required")?;
    NodeConfig::load(&PathBuf::from(path))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

fn real_main(args: &[String]) -> Result<bool> {
    match args.first().map(String::as_str) {
        Some("init") => {
            let dir = PathBuf::from(flag(args, "--dir").ok_or("--dir DIR is required")?);
            let nodes = parse(args, "--nodes", 4usize)?;
            let port = parse(args, "--base-port", 7400u16)?;
            let interval = parse(args, "--block-interval-ms", 1000u64)?;
            let idle = flag(args, "--idle-block-interval-ms")
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("--idle-block-interval-ms: cannot parse {v:?}"))
                })
                .transpose()?;
            let engine = match flag(args, "--engine") {
                Some(name) => name.parse()?,
                None => config::EngineKind::Tendermint,
            };
            let c = config::init_with_engine(&dir, nodes, port, interval, idle, engine)?;
            println!("genesis: {} (engine {engine})", c.genesis.display());
            println!("authority key: {}", c.authority_key.display());
            for p in &c.configs {
                println!("node config: {}", p.display());
            }
            Ok(true)
        }
        Some("run") => {
            let config = config_arg(args)?;
            let (rpc_tx, rpc_rx) = mpsc::unbounded_channel();
            let bound = rpc::serve(config.rpc, rpc_tx)?;
            let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
            let http = match config.http {
                Some(addr) => Some(web::local::serve_node(&config, addr, jobs_tx)?),
                None => None,
            };
            let runner = tokio::Runner::new(tokio::Config::default().with_worker_threads(2));
            runner.start(|ctx| async move {
                medledger_node::init_logs(&ctx, "info");
                tracing::info!(rpc = %bound, "local rpc listening");
                if let Some(http) = http {
                    tracing::info!(%http, "web api and patient portal listening");
                }
                net::run(ctx, config, rpc_rx, Some(jobs_rx), None).await
            })?;
            Ok(true)
        }
        Some("submit") => {
            let config = config_arg(args)?;
            let lines = std::io::stdin().lock().lines().filter_map(|l| match l {
                Ok(l) if l.trim().is_empty() => None,
                l => Some(l.map(|l| l.trim().to_string())),
            });
            let mut all_ok = true;
            if args.iter().any(|a| a == "--batch") {
                let lines: Vec<String> = lines.collect::<std::io::Result<_>>()?;
                for txs in lines.chunks(MAX_RPC_BATCH) {
                    let request = RpcRequest::SubmitBatch { txs: txs.to_vec() };
                    let answer = rpc::call(config.rpc, &request)?;
                    all_ok &= answer["answers"]
                        .as_array()
                        .is_some_and(|a| a.iter().all(|a| a["ok"] == true));
                    println!("{answer}");
                }
                return Ok(all_ok);
            }
            // One at a time, each answered as it is read.
            for tx in lines {
                let answer = rpc::call(config.rpc, &RpcRequest::Submit { tx: tx? })?;
                all_ok &= answer["ok"].as_bool() == Some(true);
                println!("{answer}");
            }
            Ok(all_ok)
        }
        Some("status") => {
            let config = config_arg(args)?;
            println!("{}", rpc::call(config.rpc, &RpcRequest::Status)?);
            Ok(true)
        }
        Some("block") => {
            let config = config_arg(args)?;
            let height = flag(args, "--height").ok_or("--height H is required")?;
            let height = height
                .parse()
                .map_err(|_| format!("--height: cannot parse {height:?}"))?;
            let answer = rpc::call(config.rpc, &RpcRequest::Block { height })?;
            println!("{answer}");
            Ok(answer["ok"] == true)
        }
        Some("demo") => {
            let port = parse(args, "--base-port", 7400u16)?;
            let dir = std::env::temp_dir().join(format!("medledger-demo-{}", std::process::id()));
            let result = medledger_node::demo::run(&dir, port);
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
        Some("portal-demo") => {
            let http = parse(args, "--http", SocketAddr::from(([127, 0, 0, 1], 7480)))?;
            portal_demo(http)
        }
        _ => {
            eprintln!("{USAGE}");
            let _: Option<SocketAddr> = None;
            Ok(false)
        }
    }
}

/// A one-node consortium with the demo's cast, its web API and portal at `http`, until killed.
fn portal_demo(http: SocketAddr) -> Result<bool> {
    let dir = std::env::temp_dir().join(format!("medledger-portal-{}", std::process::id()));
    let node = web::local::LocalNode::start(&dir, http, 200)?;
    let cast = node.seed_demo()?;
    let url = format!("http://{}", node.http);
    println!("web API and patient portal: {url}/portal   (OpenAPI: {url}/openapi.json)");
    println!("consortium files: {}", dir.display());
    println!();
    println!(
        "patient key (paste into the portal): {}",
        config::hex_encode(cast.patient.to_secret_bytes().as_bytes())
    );
    println!("patient account:     {}", cast.patient.account());
    println!(
        "specialist account:  {}   (grant it read access in the portal)",
        cast.specialist.account()
    );
    println!(
        "specialist key:      {}",
        config::hex_encode(cast.specialist.to_secret_bytes().as_bytes())
    );
    println!("relationship:        {}", cast.relationship);
    println!("lab record pointer:  {}", cast.record);
    println!("EMR bearer token:    {}", node.token);
    println!();
    println!(
        "for the README's commands:\n  export URL={url} PATIENT={} REL={} RECORD={} TOKEN={}",
        cast.patient.account(),
        cast.relationship,
        cast.record,
        node.token
    );
    println!();
    println!("try: curl {url}/status");
    println!(
        "     curl {url}/patients/{}/relationships?status=pending",
        cast.patient.account()
    );
    println!("     curl {url}/records/{}/readers", cast.record);
    println!("press Ctrl-C to stop");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
