//! Four node processes, each in a network namespace of its own, joined by a bridge in a fifth
//! namespace; the test splits the consortium by moving nodes' ports to a second bridge, and
//! heals it by moving them back. A 2|2 split has no quorum: nothing is finalised until it heals,
//! then all four resume and agree. A 3|1 split: the three keep finalising, and the one catches
//! up after healing.
//!
//! Creating namespaces needs root (CAP_NET_ADMIN). The tests run only with
//! `MEDLEDGER_NETNS_TESTS=1`, and then fail, rather than skip, if a namespace cannot be made.
//! Addresses are 10.77.0.0/24, inside the namespaces only; namespaces and processes are removed
//! however a test ends.

mod node_processes;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use medledger_node::config::{Genesis, NodeConfig};
use node_processes::{Nodes, ALL, NODES};

const ENABLE: &str = "MEDLEDGER_NETNS_TESTS";
/// The node processes of one test at a time: two consortia at once would share the cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// What nodes agreeing on a block have the same: its id and state root (a block's seal may
/// differ between nodes).
const SAME_BLOCK: &[&str] = &["id", "state_root"];

/// Whether the tests were asked for; says so when they were not.
fn enabled() -> bool {
    if std::env::var(ENABLE).as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "NOT RUN: partitions between node processes need network namespaces (root); \
         set {ENABLE}=1 to run them"
    );
    false
}

/// Runs `ip ARGS`, failing with its error output.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, bridges and node processes of one test; all removed on drop.
struct Consortium {
    /// The hub namespace (both bridges).
    hub: String,
    /// Each node's namespace.
    ns: Vec<String>,
    /// The node processes, each in its namespace.
    nodes: Option<Nodes>,
}

impl Deref for Consortium {
    type Target = Nodes;
    fn deref(&self) -> &Nodes {
        self.nodes.as_ref().expect("the nodes are set up")
    }
}

impl DerefMut for Consortium {
    fn deref_mut(&mut self) -> &mut Nodes {
        self.nodes.as_mut().expect("the nodes are set up")
    }
}

impl Consortium {
    /// Creates the namespaces and the bridge, and writes a consortium whose nodes listen on
    /// 10.77.0.1–4.
    fn new(tag: &str, dir: &Path) -> Self {
        let id = format!("ml{}{tag}", std::process::id() % 100_000);
        let mut c = Consortium {
            hub: format!("{id}h"),
            ns: (0..NODES).map(|i| format!("{id}n{i}")).collect(),
            nodes: None,
        };
        // The first namespace decides whether this machine lets us make them at all.
        if let Err(e) = ip(&["netns", "add", &c.hub]) {
            panic!(
                "{ENABLE}=1 but no network namespace can be created (root or CAP_NET_ADMIN is \
                 needed): {e}"
            );
        }
        c.build_network().unwrap_or_else(|e| panic!("{e}"));
        let nodes = Nodes::init(dir).in_namespaces(c.ns.clone());
        place(&nodes);
        c.nodes = Some(nodes);
        c
    }

    fn build_network(&mut self) -> Result<(), String> {
        let hub = self.hub.clone();
        for bridge in ["side0", "side1"] {
            ip(&["-n", &hub, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", &hub, "link", "set", bridge, "up"])?;
        }
        for (i, ns) in self.ns.clone().iter().enumerate() {
            ip(&["netns", "add", ns])?;
            let port = format!("p{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "side0", "up"])?;
            let addr = format!("10.77.0.{}/24", i + 1);
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Moves the nodes in `apart` to the second bridge: they reach each other but no one else.
    fn partition(&self, apart: &[usize]) {
        for i in apart {
            ip(&[
                "-n",
                &self.hub,
                "link",
                "set",
                &format!("p{i}"),
                "master",
                "side1",
            ])
            .unwrap();
        }
    }

    fn heal(&self) {
        for i in 0..NODES {
            ip(&[
                "-n",
                &self.hub,
                "link",
                "set",
                &format!("p{i}"),
                "master",
                "side0",
            ])
            .unwrap();
        }
    }
}

/// Every node on its namespace's address; RPC on its namespace's loopback.
fn place(nodes: &Nodes) {
    let addr = |i: usize| format!("10.77.0.{}:7400", i + 1).parse().unwrap();
    let old: Vec<_> = nodes
        .configs
        .iter()
        .map(|path| NodeConfig::load(path).unwrap().listen)
        .collect();
    for (i, path) in nodes.configs.iter().enumerate() {
        let mut config = NodeConfig::load(path).unwrap();
        config.listen = addr(i);
        config.rpc = "127.0.0.1:7500".parse().unwrap();
        config.http = None;
        for peer in &mut config.peers {
            let j = old.iter().position(|a| *a == peer.address).unwrap();
            peer.address = addr(j);
        }
        std::fs::write(path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }
}

impl Drop for Consortium {
    fn drop(&mut self) {
        // The processes first (`ip netns exec` has exec'd each node), then their namespaces.
        drop(self.nodes.take());
        for ns in self.ns.iter().chain([&self.hub]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A patient registration from a new account.
fn registration(genesis: &Genesis, name: &str) -> medledger::Transaction {
    let chain_id = genesis.chain(None).unwrap().chain_id();
    let key = medledger::tx::Keypair::generate();
    let op = medledger::access::AccessOp::register_patient(key.account(), name, &[3; 32]);
    medledger::Transaction::sign(&key, chain_id, 0, op.into())
}

fn started(tag: &str, dir: &Path) -> Consortium {
    let mut c = Consortium::new(tag, dir);
    c.start_all();
    c.wait_until("4 nodes at height 3", Duration::from_secs(60), |n| {
        n.heights(&ALL).iter().all(|h| *h >= 3)
    });
    c
}

#[test]
fn a_two_two_partition_finalises_nothing_and_all_four_resume_after_healing() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let mut c = started("a", tmp.path());

    c.partition(&[2, 3]);
    // A block whose votes were already on their way may still be decided; then nothing more.
    std::thread::sleep(Duration::from_secs(3));
    let before = c.heights(&ALL);
    let tx = registration(&c.genesis(), "P-split");
    assert_eq!(c.submit(0, &tx)["ok"], true);
    std::thread::sleep(Duration::from_secs(8));
    c.check_alive();
    // A node may still fetch, from its side, a block decided before the split; no node may
    // go past the highest block decided then.
    let after = c.heights(&ALL);
    let decided = *before.iter().max().unwrap();
    assert!(
        after.iter().all(|h| *h <= decided),
        "a side without a quorum finalised a block: heights {before:?} at the split, {after:?} 8 s later"
    );
    assert_eq!(c.status(0).unwrap()["mempool"], 1, "the transaction waits");

    c.heal();
    c.wait_until(
        "all four finalise 3 blocks after healing",
        Duration::from_secs(90),
        |n| n.heights(&ALL).iter().all(|h| *h >= decided + 3),
    );
    c.wait_until(
        "mempools empty",
        Duration::from_secs(30),
        Nodes::pools_empty,
    );
    let common = c.assert_agree(&ALL, SAME_BLOCK);
    assert!(common > decided);
    // The transaction submitted during the split is included: every node calls it a duplicate.
    for i in 0..4 {
        let answer = c.submit(i, &tx);
        assert_eq!(answer["ok"], false, "node {i}: {answer}");
        assert!(
            answer["error"].to_string().contains("duplicate"),
            "{answer}"
        );
    }
}

#[test]
fn a_three_one_partition_keeps_the_three_finalising_and_the_one_catches_up() {
    if !enabled() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let mut c = started("b", tmp.path());

    c.partition(&[3]);
    std::thread::sleep(Duration::from_secs(3));
    let alone = c.height(3);
    let at_split = c.height(0);
    let tx = registration(&c.genesis(), "P-majority");
    assert_eq!(c.submit(1, &tx)["ok"], true);
    c.wait_until(
        "the three finalise 5 blocks",
        Duration::from_secs(60),
        |n| n.heights(&[0, 1, 2]).iter().all(|h| *h >= at_split + 5),
    );
    assert_eq!(c.height(3), alone, "the node alone finalised a block");

    c.heal();
    let target = c.height(0);
    c.wait_until("node 3 catches up", Duration::from_secs(60), |n| {
        n.height(3) >= target
    });
    c.wait_until(
        "mempools empty",
        Duration::from_secs(30),
        Nodes::pools_empty,
    );
    let common = c.assert_agree(&ALL, SAME_BLOCK);
    assert!(common >= target - 1);
    let answer = c.submit(3, &tx);
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"].to_string().contains("duplicate"),
        "{answer}"
    );
}
