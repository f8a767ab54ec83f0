//! Four nodes' real event loops (`medledger_node::node::run`, the binary's loop) on commonware's
//! deterministic runtime over `commonware_p2p::simulated` links with latency, jitter and loss.
//! Each node keeps its chain in a `FileStore` in a temporary directory, so a crashed node restarts
//! on what it had written. Simulated time is virtual: minutes of consensus take
//! seconds of wall time, and a seed replays exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use commonware_cryptography::Signer as _;
use commonware_p2p::simulated::{self, Link, Network};
use commonware_p2p::{Manager as _, Recipients, Sender as _};
use commonware_runtime::{
    deterministic, Clock as _, Handle, Quota, Runner as _, Spawner as _, Supervisor as _,
};
use commonware_utils::channel::{mpsc, oneshot};
use commonware_utils::ordered::Set;
use commonware_utils::{NZUsize, Probability, NZU32};
use medledger::access::{
    AccessOp, Action, ActionSet, GrantTerms, Period, PurposeSet, RelationshipId, Role, Scope,
    Viewer,
};
use medledger::file_store::FileStore;
use medledger::purpose::PurposeOfUse::Treatment;
use medledger::tendermint::{Tendermint, TendermintConfig};
use medledger::tx::Keypair;
use medledger::Transaction;
use medledger_node::config::{hex_encode, EngineKind, Genesis, NamedKey};
use medledger_node::net::{node_ledger, transport_key};
use medledger_node::node::{self, Finalised, Pk, RpcCall, RpcRequest, RuntimeClock, Transport};
use medledger_node::wire::*;

type Ctx = deterministic::Context;
type Oracle = simulated::Oracle<Pk, Ctx>;

const NODES: usize = 4;
/// Virtual start time (Unix seconds) of every run.
const START: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn node_seed(i: usize) -> [u8; 32] {
    [i as u8 + 1; 32]
}

fn genesis(authority: &Keypair) -> Genesis {
    Genesis {
        chain: "medledger-sim".into(),
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
        engine: EngineKind::Tendermint,
        pow: None,
        committee: None,
    }
}

/// The demo's MedRec workflow with fixed keys and times (so a seed replays exactly).
fn workflow(genesis: &Genesis, authority: &Keypair) -> Vec<Transaction> {
    let mut client = medledger::Ledger::new(genesis.chain(None).unwrap()).unwrap();
    let hospital = Keypair::from_secret_bytes(&[50; 32]);
    let specialist = Keypair::from_secret_bytes(&[51; 32]);
    let patient = Keypair::from_secret_bytes(&[52; 32]);
    let owner = patient.account();
    let rel = RelationshipId::of(owner, hospital.account());
    let terms = GrantTerms::new(
        rel,
        Viewer::Account(specialist.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[Treatment]),
        Period::lasting(START, 30 * DAY),
    );
    let steps: Vec<(&Keypair, AccessOp)> = vec![
        (
            authority,
            AccessOp::CertifyProvider {
                provider: hospital.account(),
                emergency: false,
            },
        ),
        (
            &hospital,
            AccessOp::register_organisation(Role::Provider, "St Mary's").unwrap(),
        ),
        (
            &specialist,
            AccessOp::register_organisation(Role::Provider, "Dr Okafor").unwrap(),
        ),
        (
            &patient,
            AccessOp::register_patient(owner, "NHS-485-777", &[7; 32]),
        ),
        (&hospital, AccessOp::CreateRelationship { patient: owner }),
        (&patient, AccessOp::AcceptRelationship { relationship: rel }),
        (&patient, AccessOp::Grant { terms, under: None }),
    ];
    steps
        .into_iter()
        .map(|(key, op)| {
            let tx = client.sign(key, op);
            client.submit(tx.clone()).unwrap();
            tx
        })
        .collect()
}

/// 40 ms ± 10 ms, 5 % of messages lost.
fn lossy_link() -> Link {
    Link {
        latency: Duration::from_millis(40),
        jitter: Duration::from_millis(10),
        success_rate: Probability::from_f64(0.95).unwrap(),
    }
}

async fn connect(oracle: &Oracle, a: &Pk, b: &Pk) {
    oracle
        .add_link(a.clone(), b.clone(), lossy_link())
        .await
        .unwrap();
    oracle
        .add_link(b.clone(), a.clone(), lossy_link())
        .await
        .unwrap();
}

async fn cut(oracle: &Oracle, a: &Pk, b: &Pk) {
    oracle.remove_link(a.clone(), b.clone()).await.unwrap();
    oracle.remove_link(b.clone(), a.clone()).await.unwrap();
}

async fn ask(node: &mpsc::UnboundedSender<RpcCall>, request: RpcRequest) -> serde_json::Value {
    let (tx, rx) = oneshot::channel();
    if node.send((request, tx)).is_err() {
        return serde_json::json!({"ok": false});
    }
    rx.await
        .unwrap_or_else(|_| serde_json::json!({"ok": false}))
}

/// Four nodes on a simulated network, each running `node::run` on its own `FileStore`, and one
/// more known peer (the intruder, `pks[NODES]`) that runs no node: a test may speak through it.
struct Sim {
    ctx: Ctx,
    oracle: Oracle,
    pks: Vec<Pk>,
    genesis: Genesis,
    stores: tempfile::TempDir,
    rpcs: Vec<mpsc::UnboundedSender<RpcCall>>,
    handles: Vec<Option<Handle<()>>>,
    events_tx: mpsc::UnboundedSender<Finalised>,
    events: mpsc::UnboundedReceiver<Finalised>,
    txs: Vec<Transaction>,
}

impl Sim {
    async fn start(ctx: Ctx) -> Self {
        let authority = Keypair::from_secret_bytes(&[100; 32]);
        let genesis = genesis(&authority);
        let txs = workflow(&genesis, &authority);
        let (network, oracle) = Network::new(
            ctx.child("network"),
            simulated::Config {
                max_size: MAX_P2P_MESSAGE,
                max_peers_per_set: NZUsize!(NODES + 1),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(1),
            },
        );
        network.start();
        let pks: Vec<Pk> = (0..=NODES)
            .map(|i| transport_key(&node_seed(i)).unwrap().public_key())
            .collect();
        let mut manager = oracle.manager();
        assert!(manager
            .track(0, Set::try_from(pks.clone()).unwrap())
            .accepted());
        for a in 0..NODES {
            for b in a + 1..NODES {
                connect(&oracle, &pks[a], &pks[b]).await;
            }
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let (rpc_placeholder, _) = mpsc::unbounded_channel();
        let mut sim = Sim {
            ctx,
            oracle,
            pks,
            genesis,
            stores: tempfile::tempdir().unwrap(),
            rpcs: vec![rpc_placeholder; NODES],
            handles: (0..NODES).map(|_| None).collect(),
            events_tx,
            events,
            txs,
        };
        for i in 0..NODES {
            sim.spawn(i).await;
        }
        sim
    }

    /// Starts node `i`'s loop on the chain in its store (empty the first time).
    async fn spawn(&mut self, i: usize) {
        let control = self.oracle.control(self.pks[i].clone());
        let consensus = control
            .register(CH_CONSENSUS, Quota::per_second(NZU32!(RATE_CONSENSUS)))
            .await
            .unwrap();
        let txs = control
            .register(CH_TXS, Quota::per_second(NZU32!(RATE_TXS)))
            .await
            .unwrap();
        let sync = control
            .register(CH_SYNC, Quota::per_second(NZU32!(RATE_SYNC)))
            .await
            .unwrap();
        // Blocks from the future are refused by simulated time, not the host's.
        let clock = Arc::new(RuntimeClock(self.ctx.child("clock")));
        let store = FileStore::open(self.stores.path().join(format!("node-{i}.ledger"))).unwrap();
        let chain = self
            .genesis
            .chain_with_clock(Some(store), Some(clock))
            .unwrap();
        let ledger = node_ledger(chain).unwrap();
        let key = Keypair::from_secret_bytes(&node_seed(i));
        let engine = Tendermint::new(ledger.chain().engine().clone(), TendermintConfig::new(key));
        let (rpc_tx, rpc_rx) = mpsc::unbounded_channel();
        let events_tx = self.events_tx.clone();
        let interval = Duration::from_millis(self.genesis.block_interval_ms);
        let handle = self.ctx.child("node").spawn(move |ctx| {
            node::run(
                ctx,
                format!("hospital-{i}"),
                ledger,
                engine,
                interval,
                Transport {
                    consensus,
                    txs,
                    sync,
                    blocker: control,
                    peers: NODES - 1,
                },
                rpc_rx,
                Some(events_tx),
            )
        });
        self.rpcs[i] = rpc_tx;
        self.handles[i] = Some(handle);
    }

    fn alive(&self) -> Vec<usize> {
        (0..NODES).filter(|i| self.handles[*i].is_some()).collect()
    }

    async fn heights(&self) -> BTreeMap<usize, u64> {
        let mut out = BTreeMap::new();
        for i in self.alive() {
            let status = ask(&self.rpcs[i], RpcRequest::Status).await;
            out.insert(i, status["height"].as_u64().expect("a live node answers"));
        }
        out
    }

    /// Waits (virtual time) until every live node is at `height` or above.
    async fn wait_height(&self, height: u64, within: Duration) {
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

    /// Submits the workflow through node 0 and waits until it is finalised.
    async fn submit_workflow(&mut self, within: Duration) {
        for tx in &self.txs {
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
            assert!(self.ctx.current() < deadline, "workflow not finalised");
            self.ctx.sleep(Duration::from_millis(200)).await;
        }
    }

    /// The live nodes hold the same block at their common height below the tips (a tip's seal
    /// may still differ); returns that height and the block's hash.
    async fn agree(&self, at_least: u64) -> (u64, String) {
        let heights = self.heights().await;
        let common = heights.values().min().unwrap().saturating_sub(1);
        assert!(
            common >= at_least,
            "common height {common} < {at_least}: {heights:?}"
        );
        let mut blocks = Vec::new();
        for i in self.alive() {
            let b = ask(&self.rpcs[i], RpcRequest::Block { height: common }).await;
            assert_eq!(b["ok"], true, "node {i} has block {common}: {b}");
            blocks.push((b["hash"].clone(), b["id"].clone(), b["state_root"].clone()));
        }
        assert!(
            blocks.windows(2).all(|w| w[0] == w[1]),
            "disagreement at height {common}: {blocks:?}"
        );
        (common, blocks[0].0.as_str().unwrap().to_string())
    }

    /// Transactions finalised per node so far (from the finalisation events).
    fn drain_events(&mut self, seen: &mut BTreeMap<String, BTreeMap<u64, Finalised>>) {
        while let Ok(e) = self.events.try_recv() {
            seen.entry(e.node.clone()).or_default().insert(e.height, e);
        }
    }

    /// Crashes node `i`: its links go, its task and handles are dropped.
    async fn crash(&mut self, i: usize) {
        for j in 0..NODES {
            if j != i {
                cut(&self.oracle, &self.pks[i], &self.pks[j]).await;
            }
        }
        if let Some(handle) = self.handles[i].take() {
            handle.abort();
        }
    }

    /// Restarts crashed node `i` on what its store holds, and restores its links.
    async fn restart(&mut self, i: usize) {
        for j in 0..NODES {
            if j != i {
                connect(&self.oracle, &self.pks[i], &self.pks[j]).await;
            }
        }
        self.spawn(i).await;
    }
}

fn runner(seed: u64) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::default()
            .with_seed(seed)
            .with_start_time(UNIX_EPOCH + Duration::from_secs(START))
            .with_timeout(Some(Duration::from_secs(1_200))),
    )
}

/// Agreement scenario: returns what must replay identically under the same seed.
fn agreement(seed: u64) -> (Vec<String>, String) {
    runner(seed).start(|ctx| async move {
        let mut sim = Sim::start(ctx.child("sim")).await;
        sim.wait_height(1, Duration::from_secs(60)).await;
        sim.submit_workflow(Duration::from_secs(60)).await;
        sim.wait_height(6, Duration::from_secs(60)).await;
        let (common, hash) = sim.agree(5).await;
        let mut seen = BTreeMap::new();
        sim.drain_events(&mut seen);
        // Every node finalised all seven transactions, in blocks it agrees on.
        for (node, blocks) in &seen {
            let txs: usize = blocks.values().map(|f| f.txs).sum();
            assert_eq!(txs, sim.txs.len(), "{node} finalised {txs} transactions");
        }
        assert_eq!(seen.len(), NODES);
        let heights = sim.heights().await;
        let trace = vec![
            format!("common height {common} hash {hash}"),
            format!("heights {heights:?}"),
            format!(
                "virtual time {:?}",
                ctx.current().duration_since(UNIX_EPOCH).unwrap()
            ),
        ];
        (trace, ctx.auditor().state())
    })
}

#[test]
fn four_nodes_finalise_the_same_blocks_and_a_seed_replays() {
    let (first, audit) = agreement(7);
    println!("seed 7: {first:?}");
    let (again, audit_again) = agreement(7);
    assert_eq!(first, again, "same seed, same result");
    assert_eq!(audit, audit_again, "same seed, same execution");
    let (other, _) = agreement(8);
    println!("seed 8: {other:?}");
}

#[test]
fn a_crashed_node_does_not_stop_the_other_three() {
    runner(11).start(|ctx| async move {
        let mut sim = Sim::start(ctx.child("sim")).await;
        sim.wait_height(2, Duration::from_secs(60)).await;
        sim.crash(3).await;
        let before = *sim.heights().await.values().max().unwrap();
        sim.submit_workflow(Duration::from_secs(120)).await;
        sim.wait_height(before + 4, Duration::from_secs(120)).await;
        let (common, hash) = sim.agree(before + 3).await;
        println!("node 3 crashed at height {before}; nodes 0-2 agree at {common}: {hash}");
    });
}

#[test]
fn a_two_two_partition_finalises_nothing_and_heals() {
    runner(21).start(|ctx| async move {
        let mut sim = Sim::start(ctx.child("sim")).await;
        sim.wait_height(2, Duration::from_secs(60)).await;
        for a in [0, 1] {
            for b in [2, 3] {
                cut(&sim.oracle, &sim.pks[a], &sim.pks[b]).await;
            }
        }
        // Let what was in flight land, then nothing more may be finalised.
        ctx.sleep(Duration::from_secs(2)).await;
        let during = sim.heights().await;
        let mut seen = BTreeMap::new();
        sim.drain_events(&mut seen);
        ctx.sleep(Duration::from_secs(20)).await;
        assert_eq!(
            sim.heights().await,
            during,
            "finalised during a 2/2 partition"
        );
        let mut late = BTreeMap::new();
        sim.drain_events(&mut late);
        assert!(late.is_empty(), "finalised during the partition: {late:?}");
        for a in [0, 1] {
            for b in [2, 3] {
                connect(&sim.oracle, &sim.pks[a], &sim.pks[b]).await;
            }
        }
        let top = *during.values().max().unwrap();
        sim.submit_workflow(Duration::from_secs(300)).await;
        sim.wait_height(top + 4, Duration::from_secs(300)).await;
        let (common, hash) = sim.agree(top + 3).await;
        println!(
            "partitioned at {during:?} for 20 s; at {:?} s all agree at height {common}: {hash}",
            ctx.current().duration_since(UNIX_EPOCH).unwrap().as_secs() - START
        );
    });
}

#[test]
fn a_crashed_node_restarts_on_its_store_and_catches_up() {
    runner(13).start(|ctx| async move {
        let mut sim = Sim::start(ctx.child("sim")).await;
        sim.wait_height(2, Duration::from_secs(60)).await;
        let at_crash = sim.heights().await[&3];
        sim.crash(3).await;
        // The others go on without it, the workflow included.
        sim.submit_workflow(Duration::from_secs(120)).await;
        let top = *sim.heights().await.values().max().unwrap();
        sim.wait_height(top + 3, Duration::from_secs(120)).await;
        sim.restart(3).await;
        // It resumes from what it had written, not from genesis...
        let resumed = sim.heights().await[&3];
        assert!(
            resumed >= at_crash,
            "restarted at {resumed}, had {at_crash}"
        );
        // ...fetches what it missed, and takes part again: all four agree past the gap.
        let now = *sim.heights().await.values().max().unwrap();
        sim.wait_height(now + 2, Duration::from_secs(300)).await;
        let (common, hash) = sim.agree(now + 1).await;
        let mut seen = BTreeMap::new();
        sim.drain_events(&mut seen);
        let caught_up: usize = seen["hospital-3"].values().map(|f| f.txs).sum();
        assert_eq!(
            caught_up,
            sim.txs.len(),
            "the restarted node applied every transaction of the workflow once"
        );
        println!(
            "node 3 crashed at {at_crash}, resumed at {resumed}; all agree at {common}: {hash}"
        );
    });
}

#[test]
fn a_peer_sending_malformed_or_oversized_messages_is_blocked_and_nothing_else_changes() {
    runner(17).start(|ctx| async move {
        let mut sim = Sim::start(ctx.child("sim")).await;
        sim.wait_height(2, Duration::from_secs(60)).await;
        // A known peer (in the consortium's peer set) turns hostile.
        let intruder = sim.pks[NODES].clone();
        for target in 0..3 {
            connect(&sim.oracle, &intruder, &sim.pks[target]).await;
        }
        let control = sim.oracle.control(intruder.clone());
        let quota = Quota::per_second(NZU32!(1000));
        let (mut consensus, _) = control.register(CH_CONSENSUS, quota).await.unwrap();
        let (mut txs, _) = control.register(CH_TXS, quota).await.unwrap();
        let (mut sync, _) = control.register(CH_SYNC, quota).await.unwrap();
        ctx.sleep(Duration::from_secs(1)).await;
        let to = |i: usize| Recipients::One(sim.pks[i].clone());
        // Garbage to node 0, a transaction over the size limit to node 1, and a sync message
        // that is not one to node 2; a few times, as links lose 5 % of messages.
        for _ in 0..5 {
            consensus.send(to(0), vec![0xff; 64], false);
            txs.send(to(1), vec![1; LIMIT_TXS + 1], false);
            sync.send(to(2), vec![7, 7, 7], false);
            ctx.sleep(Duration::from_millis(300)).await;
        }
        ctx.sleep(Duration::from_secs(2)).await;
        let blocked = sim.oracle.blocked().await.unwrap();
        for target in 0..3 {
            assert!(
                blocked.contains(&(sim.pks[target].clone(), intruder.clone())),
                "node {target} did not block the intruder: {blocked:?}"
            );
        }
        assert!(
            blocked.iter().all(|(_, who)| *who == intruder),
            "an honest peer was blocked: {blocked:?}"
        );
        // Nothing else changed: the four finalise the workflow and agree.
        let top = *sim.heights().await.values().max().unwrap();
        sim.submit_workflow(Duration::from_secs(120)).await;
        sim.wait_height(top + 3, Duration::from_secs(120)).await;
        let (common, hash) = sim.agree(top + 2).await;
        println!("intruder blocked by {blocked:?}; all agree at {common}: {hash}");
    });
}
