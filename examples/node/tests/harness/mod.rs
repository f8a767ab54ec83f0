//! The deterministic-runtime harness shared by the simulated-network tests: a consortium's
//! nodes on commonware's deterministic runtime over `commonware_p2p::simulated` links, each
//! node's store in a temporary directory, and what the tests do to the network: ask a node,
//! wait for heights, submit transactions, cut and restore links, crash a node.
//!
//! Which loop and engine a node runs is the test's: it takes the node's transport, clock and
//! store from the [`Cluster`], spawns the loop, and hands its handle back with
//! [`Cluster::started`].
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use commonware_cryptography::Signer as _;
use commonware_p2p::simulated::{self, Link, Network};
use commonware_p2p::Manager as _;
use commonware_runtime::{deterministic, Clock as _, Handle, Quota, Supervisor as _};
use commonware_utils::channel::{mpsc, oneshot};
use commonware_utils::ordered::Set;
use commonware_utils::NZUsize;
use medledger::file_store::FileStore;
use medledger::Transaction;
use medledger_node::config::hex_encode;
use medledger_node::net::transport_key;
use medledger_node::node::{Finalised, Pk, RpcCall, RpcRequest, RuntimeClock, Transport};
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

/// Asks a node's RPC; `{"ok": false}` if the node is gone.
pub async fn ask(node: &mpsc::UnboundedSender<RpcCall>, request: RpcRequest) -> serde_json::Value {
    let (tx, rx) = oneshot::channel();
    if node.send((request, tx)).is_err() {
        return serde_json::json!({"ok": false});
    }
    rx.await
        .unwrap_or_else(|_| serde_json::json!({"ok": false}))
}

/// [`NODES`] nodes' network: the peers, their links, their stores, RPCs, tasks and
/// finalisation events.
pub struct Cluster {
    pub ctx: Ctx,
    pub oracle: Oracle,
    /// The transport keys of the known peers: the nodes first, then any peer that runs no node.
    pub pks: Vec<Pk>,
    /// The link every connection gets.
    link: Link,
    stores: tempfile::TempDir,
    pub rpcs: Vec<mpsc::UnboundedSender<RpcCall>>,
    pub handles: Vec<Option<Handle<()>>>,
    events_tx: mpsc::UnboundedSender<Finalised>,
    pub events: mpsc::UnboundedReceiver<Finalised>,
}

impl Cluster {
    /// A network of `peers` known peers (at least [`NODES`]), the nodes linked each to each
    /// over `link`; no node runs yet.
    pub async fn start(ctx: Ctx, peers: usize, link: Link) -> Self {
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
        let cluster = Cluster {
            ctx,
            oracle,
            pks,
            link,
            stores: tempfile::tempdir().unwrap(),
            rpcs: vec![placeholder; NODES],
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

    /// Records node `i`'s running loop: its RPC and its task.
    pub fn started(&mut self, i: usize, rpc: mpsc::UnboundedSender<RpcCall>, handle: Handle<()>) {
        self.rpcs[i] = rpc;
        self.handles[i] = Some(handle);
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

    /// Restores crashed node `i`'s links (the test then starts its loop again).
    pub async fn reconnect(&self, i: usize) {
        for j in (0..NODES).filter(|j| *j != i) {
            self.connect(i, j).await;
        }
    }
}
