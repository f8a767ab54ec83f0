//! Four node processes on 127.0.0.1: they finalise the same blocks, survive the loss of one,
//! and the restarted node catches up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medledger_node::config::{read_json, read_key, Genesis, NodeConfig};
use medledger_node::node::RpcRequest;
use medledger_node::rpc;

const BIN: &str = env!("CARGO_BIN_EXE_medledger-node");

/// Node processes, killed when the test ends however it ends.
struct Nodes {
    children: Vec<Option<Child>>,
    configs: Vec<PathBuf>,
    dir: PathBuf,
}

impl Nodes {
    fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("node{i}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.configs[i])
            .env("MEDLEDGER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a node");
        self.children[i] = Some(child);
    }
    /// Panics with its log if a node process has exited (e.g. its port was taken).
    fn check_alive(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.dir.join(format!("node{i}.log")));
                panic!("node {i} exited ({status}):\n{}", log.unwrap_or_default());
            }
        }
    }
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

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

fn rpc_addr(config: &Path) -> SocketAddr {
    NodeConfig::load(config).unwrap().rpc
}

fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    rpc::call(addr, &RpcRequest::Status).ok()
}

fn height(addr: SocketAddr) -> u64 {
    status(addr).and_then(|s| s["height"].as_u64()).unwrap_or(0)
}

fn wait_until(nodes: &mut Nodes, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let (start, deadline) = (Instant::now(), Instant::now() + limit);
    while !f() {
        nodes.check_alive();
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("[{:>5.1}s] {what}", start.elapsed().as_secs_f64());
}

/// (hash, state root) of each node's block at `h`.
fn blocks_at(addrs: &[SocketAddr], h: u64) -> Vec<(String, String)> {
    addrs
        .iter()
        .map(|a| {
            let b = rpc::call(*a, &RpcRequest::Block { height: h }).unwrap();
            (b["hash"].to_string(), b["state_root"].to_string())
        })
        .collect()
}

fn assert_agree(addrs: &[SocketAddr]) -> u64 {
    let common = addrs.iter().map(|a| height(*a)).min().unwrap() - 1;
    let blocks = blocks_at(addrs, common);
    assert!(
        blocks.windows(2).all(|w| w[0] == w[1]),
        "disagreement at {common}: {blocks:?}"
    );
    common
}

fn submit(addr: SocketAddr, tx: &medledger::Transaction) -> serde_json::Value {
    let hex: String = tx.encode().iter().map(|b| format!("{b:02x}")).collect();
    rpc::call(addr, &RpcRequest::Submit { tx: hex }).unwrap()
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
    let dir = tmp.path().join("consortium");
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
    let configs: Vec<PathBuf> = (0..4)
        .map(|i| dir.join(format!("hospital-{i}/config.json")))
        .collect();
    use_free_ports(&configs);
    let addrs: Vec<SocketAddr> = configs.iter().map(|c| rpc_addr(c)).collect();
    let genesis: Genesis = read_json(&dir.join("genesis.json")).unwrap();
    let authority = read_key(&dir.join("authority.key")).unwrap();
    let mut nodes = Nodes {
        children: (0..4).map(|_| None).collect(),
        configs,
        dir: tmp.path().to_path_buf(),
    };
    for i in 0..4 {
        nodes.start(i);
    }
    wait_until(
        &mut nodes,
        "4 nodes at height 2",
        Duration::from_secs(60),
        || addrs.iter().all(|a| height(*a) >= 2),
    );

    // The MedRec workflow through node 0, independent registrations through every node.
    let workflow = medledger_node::demo::workflow(&genesis, &authority).unwrap();
    for (what, tx) in &workflow {
        let answer = submit(addrs[0], tx);
        assert_eq!(answer["ok"], true, "{what}: {answer}");
    }
    let batch = patients(&genesis, 12);
    for (i, tx) in batch.iter().enumerate() {
        assert_eq!(submit(addrs[i % 4], tx)["ok"], true);
    }
    // A duplicate is dropped, garbage refused.
    assert_eq!(submit(addrs[0], &workflow[0].1)["ok"], false);
    let garbage = rpc::call(addrs[1], &RpcRequest::Submit { tx: "0102".into() }).unwrap();
    assert_eq!(garbage["ok"], false);

    wait_until(
        &mut nodes,
        "all transactions finalised",
        Duration::from_secs(60),
        || {
            addrs
                .iter()
                .all(|a| status(*a).is_some_and(|s| s["mempool"] == 0))
        },
    );
    let h = addrs.iter().map(|a| height(*a)).max().unwrap();
    wait_until(&mut nodes, "2 more blocks", Duration::from_secs(30), || {
        addrs.iter().all(|a| height(*a) >= h + 2)
    });
    assert_agree(&addrs);

    // SIGKILL node 3 mid-stream: the others keep finalising.
    let more = patients(&genesis, 8);
    for tx in &more[..4] {
        submit(addrs[0], tx);
    }
    nodes.kill(3);
    for tx in &more[4..] {
        submit(addrs[1], tx);
    }
    let at_kill = height(addrs[0]);
    wait_until(
        &mut nodes,
        "3 nodes finalise 5 blocks",
        Duration::from_secs(60),
        || addrs[..3].iter().all(|a| height(*a) >= at_kill + 5),
    );
    assert_agree(&addrs[..3]);

    // Restart it: it resumes from its FileStore and catches up.
    nodes.start(3);
    let target = height(addrs[0]);
    wait_until(
        &mut nodes,
        "node 3 catches up",
        Duration::from_secs(60),
        || height(addrs[3]) >= target,
    );
    wait_until(
        &mut nodes,
        "mempools empty",
        Duration::from_secs(60),
        || {
            addrs
                .iter()
                .all(|a| status(*a).is_some_and(|s| s["mempool"] == 0))
        },
    );
    let common = assert_agree(&addrs);
    // Every submitted transaction is included exactly once: resubmitting each is a duplicate.
    for tx in workflow.iter().map(|(_, t)| t).chain(&batch).chain(&more) {
        assert_eq!(submit(addrs[3], tx)["ok"], false);
    }
    assert!(common > at_kill);
}
