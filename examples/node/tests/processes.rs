//! Four node processes on 127.0.0.1: they finalise the same blocks, survive the loss of one,
//! and the restarted node catches up.

mod node_processes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use medledger_node::config::Genesis;
use medledger_node::node::RpcRequest;
use node_processes::{Nodes, ALL};

/// What nodes agreeing on a block have the same: its hash and state root.
const SAME_BLOCK: &[&str] = &["hash", "state_root"];

/// `n` distinct free ports on 127.0.0.1: the kernel picks each (bind to port 0); all are held
/// until every one is chosen, so none repeats.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Moves the consortium in `configs` to fresh free ports (p2p, RPC and web API), in every
/// node's file.
fn use_free_ports(configs: &[PathBuf]) {
    let ports = free_ports(3 * configs.len());
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port)).to_string();
    let files: Vec<serde_json::Value> = configs
        .iter()
        .map(|c| serde_json::from_slice(&std::fs::read(c).unwrap()).unwrap())
        .collect();
    // Each node's old p2p address -> its new one.
    let moved: Vec<(String, String)> = files
        .iter()
        .zip(&ports)
        .map(|(f, p)| (f["listen"].as_str().unwrap().to_string(), addr(*p)))
        .collect();
    for (i, (path, mut file)) in configs.iter().zip(files).enumerate() {
        file["listen"] = moved[i].1.clone().into();
        file["rpc"] = addr(ports[configs.len() + i]).into();
        file["http"] = addr(ports[2 * configs.len() + i]).into();
        for peer in file["peers"].as_array_mut().unwrap() {
            let old = peer["address"].as_str().unwrap().to_string();
            let (_, new) = moved.iter().find(|(o, _)| *o == old).unwrap();
            peer["address"] = new.clone().into();
        }
        std::fs::write(path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    }
}

fn patients(genesis: &Genesis, n: usize) -> Vec<medledger::Transaction> {
    let chain_id = genesis.chain(None).unwrap().chain_id();
    (0..n)
        .map(|i| {
            let k = medledger::tx::Keypair::generate();
            let op = medledger::access::AccessOp::register_patient(
                k.account(),
                &format!("P-{i}"),
                &[1; 32],
            );
            medledger::tx::Transaction::sign(&k, chain_id, 0, op.into())
        })
        .collect()
}

#[test]
fn four_processes_agree_survive_a_kill_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = Nodes::init(tmp.path());
    use_free_ports(&nodes.configs);
    let genesis = nodes.genesis();
    let authority = nodes.authority();
    nodes.start_all();
    nodes.wait_until("4 nodes at height 2", Duration::from_secs(60), |n| {
        n.heights(&ALL).iter().all(|h| *h >= 2)
    });

    // The MedRec workflow through node 0, independent registrations through every node.
    let workflow = medledger_node::demo::workflow(&genesis, &authority).unwrap();
    for (what, tx) in &workflow {
        let answer = nodes.submit(0, tx);
        assert_eq!(answer["ok"], true, "{what}: {answer}");
    }
    let batch = patients(&genesis, 12);
    for (i, tx) in batch.iter().enumerate() {
        assert_eq!(nodes.submit(i % 4, tx)["ok"], true);
    }
    // A duplicate is dropped, garbage refused.
    assert_eq!(nodes.submit(0, &workflow[0].1)["ok"], false);
    let garbage = nodes
        .ask(1, &RpcRequest::Submit { tx: "0102".into() })
        .unwrap();
    assert_eq!(garbage["ok"], false);

    nodes.wait_until(
        "all transactions finalised",
        Duration::from_secs(60),
        Nodes::pools_empty,
    );
    let h = nodes.heights(&ALL).into_iter().max().unwrap();
    nodes.wait_until("2 more blocks", Duration::from_secs(30), |n| {
        n.heights(&ALL).iter().all(|x| *x >= h + 2)
    });
    nodes.assert_agree(&ALL, SAME_BLOCK);

    // SIGKILL node 3 mid-stream: the others keep finalising.
    let more = patients(&genesis, 8);
    for tx in &more[..4] {
        nodes.submit(0, tx);
    }
    nodes.kill(3);
    for tx in &more[4..] {
        nodes.submit(1, tx);
    }
    let at_kill = nodes.height(0);
    nodes.wait_until("3 nodes finalise 5 blocks", Duration::from_secs(60), |n| {
        n.heights(&[0, 1, 2]).iter().all(|h| *h >= at_kill + 5)
    });
    nodes.assert_agree(&[0, 1, 2], SAME_BLOCK);

    // Restart it: it resumes from its FileStore and catches up.
    nodes.start(3);
    let target = nodes.height(0);
    nodes.wait_until("node 3 catches up", Duration::from_secs(60), |n| {
        n.height(3) >= target
    });
    nodes.wait_until(
        "mempools empty",
        Duration::from_secs(60),
        Nodes::pools_empty,
    );
    let common = nodes.assert_agree(&ALL, SAME_BLOCK);
    // Every submitted transaction is included exactly once: resubmitting each is a duplicate.
    for tx in workflow.iter().map(|(_, t)| t).chain(&batch).chain(&more) {
        assert_eq!(nodes.submit(3, tx)["ok"], false);
    }
    assert!(common > at_kill);
}
