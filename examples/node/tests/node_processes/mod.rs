//! Node processes for the tests that run the binary: a four-node consortium written by `init`
//! in a temporary directory, each node started as `medledger-node run` (on this host, or inside
//! a network namespace of its own), asked over its RPC, waited for, and killed however the test
//! ends.
//!
//! Where its nodes listen is the test's: it rewrites [`Nodes::configs`] before starting them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medledger::tx::Keypair;
use medledger::Transaction;
use medledger_node::config::{hex_encode, read_json, read_key, Genesis, NodeConfig};
use medledger_node::node::RpcRequest;
use medledger_node::rpc;

/// The node binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_medledger-node");

/// The consortium's nodes.
pub const NODES: usize = 4;

/// Every node, by index.
pub const ALL: [usize; NODES] = [0, 1, 2, 3];

/// A consortium's node processes; every one still running is killed on drop.
pub struct Nodes {
    /// Each node's configuration file.
    pub configs: Vec<PathBuf>,
    /// What `init` wrote: the genesis, the authority's key, a folder per node.
    consortium: PathBuf,
    /// Where node `i`'s output goes: `node{i}.log`.
    logs: PathBuf,
    children: Vec<Option<Child>>,
    /// Each node's network namespace, if the nodes run in namespaces.
    namespaces: Option<Vec<String>>,
    /// How often [`wait_until`](Self::wait_until) asks again.
    poll: Duration,
}

impl Nodes {
    /// Runs `init` for [`NODES`] nodes (blocks every 200 ms) in `dir/consortium`; node logs
    /// go to `dir`. No node runs yet.
    pub fn init(dir: &Path) -> Self {
        let consortium = dir.join("consortium");
        let out = Command::new(BIN)
            .args(["init", "--nodes", "4", "--block-interval-ms", "200"])
            .arg("--dir")
            .arg(&consortium)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Nodes {
            configs: (0..NODES)
                .map(|i| consortium.join(format!("hospital-{i}/config.json")))
                .collect(),
            consortium,
            logs: dir.to_path_buf(),
            children: (0..NODES).map(|_| None).collect(),
            namespaces: None,
            poll: Duration::from_millis(100),
        }
    }

    /// Runs node `i` (and its RPC calls) inside network namespace `namespaces[i]`, through
    /// `ip netns exec`. Waiting polls less often: every poll starts a process per node.
    pub fn in_namespaces(mut self, namespaces: Vec<String>) -> Self {
        assert_eq!(namespaces.len(), NODES);
        self.namespaces = Some(namespaces);
        self.poll = Duration::from_millis(200);
        self
    }

    /// The consortium's genesis.
    pub fn genesis(&self) -> Genesis {
        read_json(&self.consortium.join("genesis.json")).unwrap()
    }

    /// The consortium's authority key.
    pub fn authority(&self) -> Keypair {
        read_key(&self.consortium.join("authority.key")).unwrap()
    }

    /// `medledger-node ARGS` for node `i`: the binary, inside the node's namespace if it has one.
    fn command(&self, i: usize, args: &[&str]) -> Command {
        let mut command = match &self.namespaces {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns[i], BIN]);
                c
            }
            None => Command::new(BIN),
        };
        command.args(args).arg("--config").arg(&self.configs[i]);
        command
    }

    /// Starts node `i`'s process, its log in `node{i}.log`.
    pub fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.logs.join(format!("node{i}.log"))).unwrap();
        let child = self
            .command(i, &["run"])
            .env("MEDLEDGER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a node");
        self.children[i] = Some(child);
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for i in 0..NODES {
            self.start(i);
        }
    }

    /// Panics with its log if a node process has exited (e.g. its port was taken).
    pub fn check_alive(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.logs.join(format!("node{i}.log")));
                panic!("node {i} exited ({status}):\n{}", log.unwrap_or_default());
            }
        }
    }

    /// Kills node `i`'s process (SIGKILL; `ip netns exec` has exec'd the node).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills every node's process.
    pub fn kill_all(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
    }

    /// Node `i`'s answer to `request`, or `None` if it gives none. A node on this host is
    /// called at its configuration's RPC address; a node in a namespace through the CLI run
    /// there (`status`, `block`, `submit`), since its RPC listens on the namespace's loopback.
    pub fn ask(&self, i: usize, request: &RpcRequest) -> Option<serde_json::Value> {
        if self.namespaces.is_none() {
            let addr = NodeConfig::load(&self.configs[i]).unwrap().rpc;
            return rpc::call(addr, request).ok();
        }
        let height;
        let (args, stdin): (Vec<&str>, Option<String>) = match request {
            RpcRequest::Status => (vec!["status"], None),
            RpcRequest::Block { height: h } => {
                height = h.to_string();
                (vec!["block", "--height", &height], None)
            }
            RpcRequest::Submit { tx } => (vec!["submit"], Some(format!("{tx}\n"))),
            RpcRequest::SubmitBatch { txs } => (
                vec!["submit", "--batch"],
                Some(txs.iter().map(|tx| format!("{tx}\n")).collect()),
            ),
        };
        let mut child = self
            .command(i, &args)
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

    /// Node `i`'s status, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        self.ask(i, &RpcRequest::Status)
    }

    /// Node `i`'s height (0 if it does not answer).
    pub fn height(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    /// The heights of `nodes`.
    pub fn heights(&self, nodes: &[usize]) -> Vec<u64> {
        nodes.iter().map(|i| self.height(*i)).collect()
    }

    /// Whether every node answers with an empty pool.
    pub fn pools_empty(&self) -> bool {
        (0..NODES).all(|i| self.status(i).is_some_and(|s| s["mempool"] == 0))
    }

    /// Node `i`'s answer to submitting `tx`.
    pub fn submit(&self, i: usize, tx: &Transaction) -> serde_json::Value {
        self.ask(
            i,
            &RpcRequest::Submit {
                tx: hex_encode(&tx.encode()),
            },
        )
        .expect("an answer to a submission")
    }

    /// Node `i`'s answer for its block at `height`.
    pub fn block(&self, i: usize, height: u64) -> serde_json::Value {
        self.ask(i, &RpcRequest::Block { height })
            .unwrap_or_else(|| panic!("node {i} does not answer for its block at {height}"))
    }

    /// Waits until `f` holds, checking every node is still alive; panics after `limit`.
    pub fn wait_until(&mut self, what: &str, limit: Duration, mut f: impl FnMut(&Self) -> bool) {
        let (start, deadline) = (Instant::now(), Instant::now() + limit);
        while !f(self) {
            self.check_alive();
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(self.poll);
        }
        eprintln!("[{:>5.1}s] {what}", start.elapsed().as_secs_f64());
    }

    /// `nodes` have the same block at the lowest tip's parent height, which is returned: the
    /// same value in each of `fields` of their answers (tips may still differ in their seal).
    pub fn assert_agree(&self, nodes: &[usize], fields: &[&str]) -> u64 {
        let common = self.heights(nodes).into_iter().min().unwrap() - 1;
        let blocks: Vec<Vec<String>> = nodes
            .iter()
            .map(|i| {
                let b = self.block(*i, common);
                fields.iter().map(|f| b[f].to_string()).collect()
            })
            .collect();
        assert!(
            blocks.windows(2).all(|w| w[0] == w[1]),
            "disagreement at height {common} in {fields:?}: {blocks:?}"
        );
        common
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.kill_all();
    }
}
