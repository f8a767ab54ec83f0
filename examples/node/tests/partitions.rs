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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use medledger_node::config::{hex_encode, read_json, Genesis, NodeConfig};

const BIN: &str = env!("CARGO_BIN_EXE_medledger-node");
const ENABLE: &str = "MEDLEDGER_NETNS_TESTS";
/// The node processes of one test at a time: two consortia at once would share the cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

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
    /// The hub namespace (both bridges) and each node's namespace.
    hub: String,
    ns: Vec<String>,
    children: Vec<Option<Child>>,
    configs: Vec<PathBuf>,
    dir: PathBuf,
}

impl Consortium {
    /// Creates the namespaces and the bridge, and writes a consortium whose nodes listen on
    /// 10.77.0.1–4.
    fn new(tag: &str, dir: &Path) -> Self {
        let id = format!("ml{}{tag}", std::process::id() % 100_000);
        let mut c = Consortium {
            hub: format!("{id}h"),
            ns: (0..4).map(|i| format!("{id}n{i}")).collect(),
            children: (0..4).map(|_| None).collect(),
            configs: Vec::new(),
            dir: dir.to_path_buf(),
        };
        // The first namespace decides whether this machine lets us make them at all.
        if let Err(e) = ip(&["netns", "add", &c.hub]) {
            panic!(
                "{ENABLE}=1 but no network namespace can be created (root or CAP_NET_ADMIN is \
                 needed): {e}"
            );
        }
        c.build_network().unwrap_or_else(|e| panic!("{e}"));
        c.write_configs();
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

    /// `init`, then every node on its namespace's address; RPC on its namespace's loopback.
    fn write_configs(&mut self) {
        let dir = self.dir.join("consortium");
        let out = Command::new(BIN)
            .args(["init", "--nodes", "4", "--block-interval-ms", "200"])
            .arg("--dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = |i: usize| format!("10.77.0.{}:7400", i + 1).parse().unwrap();
        let old: Vec<_> = (0..4)
            .map(|i| NodeConfig::load(&dir.join(format!("hospital-{i}/config.json"))).unwrap())
            .map(|c| c.listen)
            .collect();
        for i in 0..4 {
            let path = dir.join(format!("hospital-{i}/config.json"));
            let mut config = NodeConfig::load(&path).unwrap();
            config.listen = addr(i);
            config.rpc = "127.0.0.1:7500".parse().unwrap();
            config.http = None;
            for peer in &mut config.peers {
                let j = old.iter().position(|a| *a == peer.address).unwrap();
                peer.address = addr(j);
            }
            std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
            self.configs.push(path);
        }
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("node{i}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[i], BIN, "run", "--config"])
            .arg(&self.configs[i])
            .env("MEDLEDGER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a node");
        self.children[i] = Some(child);
    }

    /// Panics with its log if a node process has exited.
    fn check_alive(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.dir.join(format!("node{i}.log")));
                panic!("node {i} exited ({status}):\n{}", log.unwrap_or_default());
            }
        }
    }

    /// Runs `medledger-node ARGS --config` of node `i` inside its namespace; its JSON answer.
    fn cli(&self, i: usize, args: &[&str], stdin: Option<&str>) -> Option<serde_json::Value> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns[i], BIN])
            .args(args)
            .arg("--config")
            .arg(&self.configs[i])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take()?.write_all(input.as_bytes()).ok()?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn status(&self, i: usize) -> Option<serde_json::Value> {
        self.cli(i, &["status"], None)
    }

    fn height(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    fn heights(&self, nodes: &[usize]) -> Vec<u64> {
        nodes.iter().map(|i| self.height(*i)).collect()
    }

    /// Node `i`'s answer to submitting `tx`.
    fn submit(&self, i: usize, tx: &medledger::Transaction) -> serde_json::Value {
        let line = format!("{}\n", hex_encode(&tx.encode()));
        self.cli(i, &["submit"], Some(&line))
            .expect("an answer to a submission")
    }

    /// (block id, state root) of node `i`'s block at `height`.
    fn block(&self, i: usize, height: u64) -> (String, String) {
        let h = height.to_string();
        let b = self
            .cli(i, &["block", "--height", &h], None)
            .unwrap_or_else(|| panic!("node {i} has no block at {height}"));
        (b["id"].to_string(), b["state_root"].to_string())
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
        for i in 0..4 {
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

    fn wait_until(&mut self, what: &str, limit: Duration, mut f: impl FnMut(&Self) -> bool) {
        let (start, deadline) = (Instant::now(), Instant::now() + limit);
        while !f(self) {
            self.check_alive();
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("[{:>5.1}s] {what}", start.elapsed().as_secs_f64());
    }

    /// All four have the same block (id and state root) at the lowest tip's parent height,
    /// which is returned. (Tips may differ in their seal.)
    fn assert_agree(&self) -> u64 {
        let common = self.heights(&[0, 1, 2, 3]).into_iter().min().unwrap() - 1;
        let blocks: Vec<_> = (0..4).map(|i| self.block(i, common)).collect();
        assert!(
            blocks.windows(2).all(|w| w[0] == w[1]),
            "disagreement at height {common}: {blocks:?}"
        );
        common
    }

    fn genesis(&self) -> Genesis {
        read_json(&self.dir.join("consortium/genesis.json")).unwrap()
    }
}

impl Drop for Consortium {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill(); // SIGKILL; `ip netns exec` has exec'd the node
            let _ = child.wait();
        }
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
    for i in 0..4 {
        c.start(i);
    }
    c.wait_until("4 nodes at height 3", Duration::from_secs(60), |c| {
        c.heights(&[0, 1, 2, 3]).iter().all(|h| *h >= 3)
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
    let before = c.heights(&[0, 1, 2, 3]);
    let tx = registration(&c.genesis(), "P-split");
    assert_eq!(c.submit(0, &tx)["ok"], true);
    std::thread::sleep(Duration::from_secs(8));
    c.check_alive();
    // A node may still fetch, from its side, a block decided before the split; no node may
    // go past the highest block decided then.
    let after = c.heights(&[0, 1, 2, 3]);
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
        |c| c.heights(&[0, 1, 2, 3]).iter().all(|h| *h >= decided + 3),
    );
    c.wait_until("mempools empty", Duration::from_secs(30), |c| {
        (0..4).all(|i| c.status(i).is_some_and(|s| s["mempool"] == 0))
    });
    let common = c.assert_agree();
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
        |c| c.heights(&[0, 1, 2]).iter().all(|h| *h >= at_split + 5),
    );
    assert_eq!(c.height(3), alone, "the node alone finalised a block");

    c.heal();
    let target = c.height(0);
    c.wait_until("node 3 catches up", Duration::from_secs(60), |c| {
        c.height(3) >= target
    });
    c.wait_until("mempools empty", Duration::from_secs(30), |c| {
        (0..4).all(|i| c.status(i).is_some_and(|s| s["mempool"] == 0))
    });
    let common = c.assert_agree();
    assert!(common >= target - 1);
    let answer = c.submit(3, &tx);
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"].to_string().contains("duplicate"),
        "{answer}"
    );
}
