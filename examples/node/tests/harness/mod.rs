//! The deterministic-runtime harness shared by the simulated-network tests: a consortium's
//! nodes on commonware's deterministic runtime over `commonware_p2p::simulated` links, each
//! node's store in a temporary directory, and what the tests do to the network: ask a node,
//! wait for heights, submit transactions, cut and restore links, crash a node.
//!
//! Each node runs the node's loop with the engine the consortium's genesis names (Tendermint,
//! proof of work or the committee engine), as the binary does, with a job channel for what the
//! web API asks ([`Cluster::job`]).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use commonware_cryptography::Signer as _;
use commonware_p2p::simulated::{self, Link, Network};
use commonware_p2p::Manager as _;
use commonware_runtime::{deterministic, Clock as _, Handle, Quota, Spawner as _, Supervisor as _};
use commonware_utils::channel::{mpsc, oneshot};
use commonware_utils::ordered::Set;
use commonware_utils::{NZUsize, Probability};
use medledger::file_store::FileStore;
use medledger::tx::Keypair;
use medledger::Transaction;
use medledger_node::config::{hex_encode, EngineKind, Genesis, NamedKey, Pacing};
use medledger_node::net::{
    committee_engine, node_ledger, pow_engine, tendermint_engine, transport_key,
};
use medledger_node::node::{
    self, Finalised, NodeAccess, NodeEngine, NodeJob, NodeLedger, Pk, RpcCall, RpcRequest,
    RuntimeClock, Transport,
};
use medledger_node::wire::*;

pub type Ctx = deterministic::Context;
pub type Oracle = simulated::Oracle<Pk, Ctx>;
/// A node's transport on the simulated network.
pub type SimTransport =
    Transport<simulated::Sender<Pk, Ctx>, simulated::Receiver<Pk>, simulated::Control<Pk, Ctx>>;

/// The consortium's nodes.
pub const NODES: usize = 4;
/// Virtual start time (Unix seconds) of every run.
pub const START: u64 = 1_800_000_000;

/// Node `i`'s key seed (also its transport key's).
pub fn node_seed(i: usize) -> [u8; 32] {
    [i as u8 + 1; 32]
}

/// The deterministic runtime for `seed`, starting at [`START`], giving up after 20 virtual
/// minutes.
pub fn runner(seed: u64) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::default()
            .with_seed(seed)
            .with_start_time(UNIX_EPOCH + Duration::from_secs(START))
            .with_timeout(Some(Duration::from_secs(1_200))),
    )
}

/// A Tendermint genesis for chain `chain`: the [`NODES`] nodes (keys from [`node_seed`]) as
/// validators of equal power, `authority` as the authority, a block every 200 ms, starting a
/// minute before [`START`].
pub fn genesis(chain: &str, authority: &Keypair) -> Genesis {
    Genesis {
        chain: chain.into(),
        genesis_time: START - 60,
        validators: (0..NODES)
            .map(|i| NamedKey {
                name: format!("hospital-{i}"),
                key: Keypair::from_secret_bytes(&node_seed(i))
                    .public()
                    .to_string(),
                power: Some(1),
            })
            .collect(),
        authorities: vec![NamedKey {
            name: "Regional Health Authority".into(),
            key: authority.public().to_string(),
            power: None,
        }],
        block_interval_ms: 200,
        idle_block_interval_ms: None,
        engine: EngineKind::Tendermint,
        pow: None,
        committee: None,
    }
}

/// 40 ms ± 10 ms, 5 % of messages lost.
pub fn lossy_link() -> Link {
    Link {
        latency: Duration::from_millis(40),
        jitter: Duration::from_millis(10),
        success_rate: Probability::from_f64(0.95).unwrap(),
    }
}

/// Asks a node's RPC; `{"ok": false}` if the node is gone.
pub async fn ask(node: &mpsc::UnboundedSender<RpcCall>, request: RpcRequest) -> serde_json::Value {
    let (tx, rx) = oneshot::channel();
    if node.send((request, tx)).is_err() {
        return serde_json::json!({"ok": false});
    }
    rx.await
        .unwrap_or_else(|_| serde_json::json!({"ok": false}))
}

/// [`NODES`] nodes' network: the peers, their links, their stores, RPCs, job channels, tasks
/// and finalisation events.
pub struct Cluster {
    pub ctx: Ctx,
    pub oracle: Oracle,
    /// The transport keys of the known peers: the nodes first, then any peer that runs no node.
    pub pks: Vec<Pk>,
    /// The consortium's genesis: the engine its nodes run.
    pub genesis: Genesis,
    /// The link every connection gets.
    link: Link,
    stores: tempfile::TempDir,
    pub rpcs: Vec<mpsc::UnboundedSender<RpcCall>>,
    /// Each node's job channel: the web API's way into its loop.
    pub jobs: Vec<mpsc::UnboundedSender<NodeJob>>,
    pub handles: Vec<Option<Handle<()>>>,
    events_tx: mpsc::UnboundedSender<Finalised>,
    pub events: mpsc::UnboundedReceiver<Finalised>,
}

impl Cluster {
    /// A network of `peers` known peers (at least [`NODES`]), the nodes of `genesis` linked
    /// each to each over `link`; no node runs yet ([`spawn_all`](Self::spawn_all)).
    pub async fn start(ctx: Ctx, genesis: Genesis, peers: usize, link: Link) -> Self {
        let (network, oracle) = Network::new(
            ctx.child("network"),
            simulated::Config {
                max_size: MAX_P2P_MESSAGE,
                max_peers_per_set: NZUsize!(peers),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(1),
            },
        );
        network.start();
        let pks: Vec<Pk> = (0..peers)
            .map(|i| transport_key(&node_seed(i)).unwrap().public_key())
            .collect();
        assert!(oracle
            .manager()
            .track(0, Set::try_from(pks.clone()).unwrap())
            .accepted());
        let (events_tx, events) = mpsc::unbounded_channel();
        let (placeholder, _) = mpsc::unbounded_channel();
        let (no_jobs, _) = mpsc::unbounded_channel();
        let cluster = Cluster {
            ctx,
            oracle,
            pks,
            genesis,
            link,
            stores: tempfile::tempdir().unwrap(),
            rpcs: vec![placeholder; NODES],
            jobs: vec![no_jobs; NODES],
            handles: (0..NODES).map(|_| None).collect(),
            events_tx,
            events,
        };
        for a in 0..NODES {
            for b in a + 1..NODES {
                cluster.connect(a, b).await;
            }
        }
        cluster
    }

    /// Links peers `a` and `b` both ways.
    pub async fn connect(&self, a: usize, b: usize) {
        let (a, b) = (&self.pks[a], &self.pks[b]);
        for (x, y) in [(a, b), (b, a)] {
            self.oracle
                .add_link(x.clone(), y.clone(), self.link.clone())
                .await
                .unwrap();
        }
    }

    /// Removes the links between peers `a` and `b`.
    pub async fn cut(&self, a: usize, b: usize) {
        let (a, b) = (&self.pks[a], &self.pks[b]);
        for (x, y) in [(a, b), (b, a)] {
            self.oracle.remove_link(x.clone(), y.clone()).await.unwrap();
        }
    }

    /// Node `i`'s transport: its consensus, transaction and sync channels, registered at the
    /// node's rates.
    pub async fn transport(&self, i: usize) -> SimTransport {
        let control = self.oracle.control(self.pks[i].clone());
        let mut channels = Vec::new();
        for (channel, rate) in [
            (CH_CONSENSUS, RATE_CONSENSUS),
            (CH_TXS, RATE_TXS),
            (CH_SYNC, RATE_SYNC),
        ] {
            let quota = Quota::per_second(std::num::NonZeroU32::new(rate).unwrap());
            channels.push(control.register(channel, quota).await.unwrap());
        }
        let sync = channels.pop().unwrap();
        let txs = channels.pop().unwrap();
        let consensus = channels.pop().unwrap();
        Transport {
            consensus,
            txs,
            sync,
            blocker: control,
            peers: NODES - 1,
        }
    }

    /// A clock on simulated time: blocks from the future are refused by it, not the host's.
    pub fn clock(&self) -> Arc<RuntimeClock<Ctx>> {
        Arc::new(RuntimeClock(self.ctx.child("clock")))
    }

    /// Node `i`'s store (empty the first time, what it had written after a crash).
    pub fn store(&self, i: usize) -> FileStore {
        FileStore::open(self.stores.path().join(format!("node-{i}.ledger"))).unwrap()
    }

    /// Where node loops send their finalisation events.
    pub fn events_sender(&self) -> mpsc::UnboundedSender<Finalised> {
        self.events_tx.clone()
    }

    /// Starts node `i`'s loop on the chain in its store (empty the first time), with the engine
    /// the genesis names.
    pub async fn spawn(&mut self, i: usize) {
        let transport = self.transport(i).await;
        let clock = self.clock();
        let store = self.store(i);
        let key = Keypair::from_secret_bytes(&node_seed(i));
        let (rpc_tx, rpc) = mpsc::unbounded_channel();
        let (jobs_tx, jobs) = mpsc::unbounded_channel();
        let parts = Parts {
            ctx: self.ctx.child("node"),
            name: format!("hospital-{i}"),
            pacing: self.genesis.pacing(),
            transport,
            rpc,
            jobs,
            events: self.events_sender(),
        };
        let genesis = &self.genesis;
        let handle = match genesis.engine {
            EngineKind::Tendermint => {
                let chain = genesis.chain_with_clock(Some(store), Some(clock)).unwrap();
                let ledger = node_ledger(chain).unwrap();
                let engine = tendermint_engine(&ledger, key);
                parts.run(ledger, engine)
            }
            EngineKind::Pow => {
                let chain = genesis.pow_chain(Some(store), Some(clock)).unwrap();
                let ledger = node_ledger(chain).unwrap();
                let engine = pow_engine(&key, &genesis.pow_params());
                parts.run(ledger, engine)
            }
            EngineKind::Committee => {
                let chain = genesis.committee_chain(Some(store), Some(clock)).unwrap();
                let ledger = node_ledger(chain).unwrap();
                let peers = (0..NODES)
                    .filter(|j| *j != i)
                    .map(|j| Keypair::from_secret_bytes(&node_seed(j)).public())
                    .collect();
                let engine = committee_engine(&ledger, genesis, key, peers);
                parts.run(ledger, engine)
            }
        };
        self.rpcs[i] = rpc_tx;
        self.jobs[i] = jobs_tx;
        self.handles[i] = Some(handle);
    }

    /// Starts every node's loop.
    pub async fn spawn_all(&mut self) {
        for i in 0..NODES {
            self.spawn(i).await;
        }
    }

    /// Runs `work` on node `i`'s loop, as the web API does, and returns what it returned.
    pub async fn job<T: Send + 'static>(
        &self,
        i: usize,
        work: impl FnOnce(&mut dyn NodeAccess) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        let job: NodeJob = Box::new(move |node| {
            let _ = tx.send(work(node));
        });
        self.jobs[i].send(job).expect("the node runs");
        rx.await.expect("the node answers")
    }

    /// The nodes not crashed.
    pub fn alive(&self) -> Vec<usize> {
        (0..NODES).filter(|i| self.handles[*i].is_some()).collect()
    }

    /// Each live node's height.
    pub async fn heights(&self) -> BTreeMap<usize, u64> {
        let mut out = BTreeMap::new();
        for i in self.alive() {
            let status = ask(&self.rpcs[i], RpcRequest::Status).await;
            out.insert(i, status["height"].as_u64().expect("a live node answers"));
        }
        out
    }

    /// Waits (virtual time) until every live node is at `height` or above.
    pub async fn wait_height(&self, height: u64, within: Duration) {
        let deadline = self.ctx.current() + within;
        loop {
            let heights = self.heights().await;
            if heights.values().all(|h| *h >= height) {
                return;
            }
            assert!(
                self.ctx.current() < deadline,
                "height {height} not reached within {within:?}: {heights:?}"
            );
            self.ctx.sleep(Duration::from_millis(200)).await;
        }
    }

    /// Submits `txs` through node 0 and waits until its pool is empty (every transaction in a
    /// block of its main chain).
    pub async fn submit(&self, txs: &[Transaction], within: Duration) {
        for tx in txs {
            let answer = ask(
                &self.rpcs[0],
                RpcRequest::Submit {
                    tx: hex_encode(&tx.encode()),
                },
            )
            .await;
            assert_eq!(answer["ok"], true, "submit: {answer}");
        }
        let deadline = self.ctx.current() + within;
        while ask(&self.rpcs[0], RpcRequest::Status).await["mempool"].as_u64() != Some(0) {
            assert!(
                self.ctx.current() < deadline,
                "transactions not included: {}",
                ask(&self.rpcs[0], RpcRequest::Status).await
            );
            self.ctx.sleep(Duration::from_millis(200)).await;
        }
    }

    /// Adds the finalisation events so far to `seen`, by node and height (a later event at a
    /// height replaces the earlier one).
    pub fn drain_events(&mut self, seen: &mut BTreeMap<String, BTreeMap<u64, Finalised>>) {
        while let Ok(e) = self.events.try_recv() {
            seen.entry(e.node.clone()).or_default().insert(e.height, e);
        }
    }

    /// Crashes node `i`: its links go, its task is aborted.
    pub async fn crash(&mut self, i: usize) {
        for j in (0..NODES).filter(|j| *j != i) {
            self.cut(i, j).await;
        }
        if let Some(handle) = self.handles[i].take() {
            handle.abort();
        }
    }

    /// Restores crashed node `i`'s links.
    pub async fn reconnect(&self, i: usize) {
        for j in (0..NODES).filter(|j| *j != i) {
            self.connect(i, j).await;
        }
    }

    /// Restarts crashed node `i` on what its store holds, and restores its links.
    pub async fn restart(&mut self, i: usize) {
        self.reconnect(i).await;
        self.spawn(i).await;
    }
}

/// What a node's loop runs with besides its ledger and engine.
struct Parts {
    ctx: Ctx,
    name: String,
    pacing: Pacing,
    transport: SimTransport,
    rpc: mpsc::UnboundedReceiver<RpcCall>,
    jobs: mpsc::UnboundedReceiver<NodeJob>,
    events: mpsc::UnboundedSender<Finalised>,
}

impl Parts {
    /// Spawns the node's loop over `ledger` and `engine`.
    fn run<G>(self, ledger: NodeLedger<G::Consensus>, engine: G) -> Handle<()>
    where
        G: NodeEngine,
        G::Timer: Send,
    {
        let Parts {
            ctx,
            name,
            pacing,
            transport,
            rpc,
            jobs,
            events,
        } = self;
        ctx.spawn(move |ctx| {
            node::run_with_jobs(
                ctx,
                name,
                ledger,
                engine,
                pacing,
                transport,
                rpc,
                jobs,
                Some(events),
            )
        })
    }
}
