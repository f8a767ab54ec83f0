//! The node's loop (`medledger_node::node::run`) driving the other engines a genesis can name,
//! proof of work and the committee engine, on commonware's deterministic runtime over
//! `commonware_p2p::simulated` links with latency, jitter and loss: the same transport,
//! mempool, relay and block sync as Tendermint's nodes (see `simulated.rs`). Each node keeps its
//! chain in a `FileStore`, so a crashed node restarts on what it had written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use commonware_cryptography::Signer as _;
use commonware_p2p::simulated::{self, Link, Network};
use commonware_p2p::Manager as _;
use commonware_runtime::{
    deterministic, Clock as _, Handle, Quota, Runner as _, Spawner as _, Supervisor as _,
};
use commonware_utils::channel::{mpsc, oneshot};
use commonware_utils::ordered::Set;
use commonware_utils::{NZUsize, Probability};
use medledger::access::{AccessOp, RelationshipId, Role};
use medledger::file_store::FileStore;
use medledger::tx::Keypair;
use medledger::Transaction;
use medledger_node::config::{
    hex_encode, CommitteeGenesis, EngineKind, Genesis, NamedKey, PowGenesis,
};
use medledger_node::net::{committee_engine, node_ledger, pow_engine, transport_key};
use medledger_node::node::{
    self, Finalised, NodeAccess, NodeJob, Pk, RpcCall, RpcRequest, RuntimeClock, Transport,
};
use medledger_node::wire::*;

type Ctx = deterministic::Context;
type Oracle = simulated::Oracle<Pk, Ctx>;

const NODES: usize = 4;
/// Virtual start time (Unix seconds) of every run.
const START: u64 = 1_800_000_000;

fn node_seed(i: usize) -> [u8; 32] {
    [i as u8 + 1; 32]
}

fn genesis(engine: EngineKind, authority: &Keypair) -> Genesis {
    Genesis {
        chain: format!("medledger-sim-{engine}"),
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
        engine,
        // 2^13 hashes a block; each node 64 hashes every 20 ms: a block about every 0.6 s.
        pow: (engine == EngineKind::Pow).then_some(PowGenesis {
            difficulty_bits: 13,
            hashes_per_slice: 64,
            slice_ms: 20,
            max_reorg_depth: 100,
        }),
        committee: (engine == EngineKind::Committee).then(|| CommitteeGenesis {
            identity_difficulty: 4,
            ..CommitteeGenesis::default()
        }),
    }
}

/// A MedRec workflow with fixed keys (so a seed replays exactly): the authority certifies a
/// hospital, which registers, takes a patient who registers and accepts the relationship.
fn workflow(genesis: &Genesis, authority: &Keypair) -> Vec<Transaction> {
    let chain_id = genesis.chain_id().unwrap();
    let hospital = Keypair::from_secret_bytes(&[50; 32]);
    let patient = Keypair::from_secret_bytes(&[52; 32]);
    let owner = patient.account();
    let rel = RelationshipId::of(owner, hospital.account());
    let steps: Vec<(&Keypair, u64, AccessOp)> = vec![
        (
            authority,
            0,
            AccessOp::CertifyProvider {
                provider: hospital.account(),
                emergency: false,
            },
        ),
        (
            &hospital,
            0,
            AccessOp::register_organisation(Role::Provider, "St Mary's").unwrap(),
        ),
        (
            &patient,
            0,
            AccessOp::register_patient(owner, "NHS-485-777", &[7; 32]),
        ),
        (
            &hospital,
            1,
            AccessOp::CreateRelationship { patient: owner },
        ),
        (
            &patient,
            1,
            AccessOp::AcceptRelationship { relationship: rel },
        ),
    ];
    steps
        .into_iter()
        .map(|(key, nonce, op)| {
            Transaction::sign(key, chain_id, nonce, medledger::Payload::Access(op))
        })
        .collect()
}

/// 40 ms ± 10 ms; for proof of work 5 % of messages lost. The committee engine sends each
/// identity once, as over TCP (the node's real transport), so its links lose nothing: a lost
/// identity can leave a three-node epoch without a quorum of seats.
fn link_for(engine: EngineKind) -> Link {
    let delivered = match engine {
        EngineKind::Committee => 1.0,
        _ => 0.95,
    };
    Link {
        latency: Duration::from_millis(40),
        jitter: Duration::from_millis(10),
        success_rate: Probability::from_f64(delivered).unwrap(),
    }
}

async fn link(oracle: &Oracle, engine: EngineKind, a: &Pk, b: &Pk, up: bool) {
    for (x, y) in [(a, b), (b, a)] {
        if up {
            oracle
                .add_link(x.clone(), y.clone(), link_for(engine))
                .await
                .unwrap();
        } else {
            oracle.remove_link(x.clone(), y.clone()).await.unwrap();
        }
    }
}

async fn ask(node: &mpsc::UnboundedSender<RpcCall>, request: RpcRequest) -> serde_json::Value {
    let (tx, rx) = oneshot::channel();
    if node.send((request, tx)).is_err() {
        return serde_json::json!({"ok": false});
    }
    rx.await
        .unwrap_or_else(|_| serde_json::json!({"ok": false}))
}

/// Four nodes of one engine on a simulated network, each on its own `FileStore`.
struct Sim {
    ctx: Ctx,
    oracle: Oracle,
    pks: Vec<Pk>,
    genesis: Genesis,
    stores: tempfile::TempDir,
    rpcs: Vec<mpsc::UnboundedSender<RpcCall>>,
    /// Each node's job channel: the web API's way into the loop.
    jobs: Vec<mpsc::UnboundedSender<NodeJob>>,
    handles: Vec<Option<Handle<()>>>,
    events_tx: mpsc::UnboundedSender<Finalised>,
    events: mpsc::UnboundedReceiver<Finalised>,
    txs: Vec<Transaction>,
}

impl Sim {
    async fn start(ctx: Ctx, engine: EngineKind) -> Self {
        let authority = Keypair::from_secret_bytes(&[100; 32]);
        let genesis = genesis(engine, &authority);
        let txs = workflow(&genesis, &authority);
        let (network, oracle) = Network::new(
            ctx.child("network"),
            simulated::Config {
                max_size: MAX_P2P_MESSAGE,
                max_peers_per_set: NZUsize!(NODES),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(1),
            },
        );
        network.start();
        let pks: Vec<Pk> = (0..NODES)
            .map(|i| transport_key(&node_seed(i)).unwrap().public_key())
            .collect();
        assert!(oracle
            .manager()
            .track(0, Set::try_from(pks.clone()).unwrap())
            .accepted());
        for a in 0..NODES {
            for b in a + 1..NODES {
                link(&oracle, engine, &pks[a], &pks[b], true).await;
            }
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let (placeholder, _) = mpsc::unbounded_channel();
        let (no_jobs, _) = mpsc::unbounded_channel();
        let mut sim = Sim {
            ctx,
            oracle,
            pks,
            genesis,
            stores: tempfile::tempdir().unwrap(),
            rpcs: vec![placeholder; NODES],
            jobs: vec![no_jobs; NODES],
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

    /// Starts node `i`'s loop on the chain in its store (empty the first time), with the engine
    /// the genesis names.
    async fn spawn(&mut self, i: usize) {
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
        let transport = Transport {
            consensus,
            txs,
            sync,
            blocker: control,
            peers: NODES - 1,
        };
        let clock = Arc::new(RuntimeClock(self.ctx.child("clock")));
        let store = FileStore::open(self.stores.path().join(format!("node-{i}.ledger"))).unwrap();
        let key = Keypair::from_secret_bytes(&node_seed(i));
        let (rpc_tx, rpc) = mpsc::unbounded_channel();
        let (jobs_tx, jobs) = mpsc::unbounded_channel();
        let events = Some(self.events_tx.clone());
        let name = format!("hospital-{i}");
        let interval = Duration::from_millis(self.genesis.block_interval_ms);
        let ctx = self.ctx.child("node");
        let handle = match self.genesis.engine {
            EngineKind::Pow => {
                let chain = self.genesis.pow_chain(Some(store), Some(clock)).unwrap();
                let ledger = node_ledger(chain).unwrap();
                let engine = pow_engine(&key, &self.genesis.pow_params());
                ctx.spawn(move |ctx| {
                    node::run_with_jobs(
                        ctx, name, ledger, engine, interval, transport, rpc, jobs, events,
                    )
                })
            }
            EngineKind::Committee => {
                let chain = self
                    .genesis
                    .committee_chain(Some(store), Some(clock))
                    .unwrap();
                let ledger = node_ledger(chain).unwrap();
                let peers = (0..NODES)
                    .filter(|j| *j != i)
                    .map(|j| Keypair::from_secret_bytes(&node_seed(j)).public())
                    .collect();
                let engine = committee_engine(&ledger, &self.genesis, key, peers);
                ctx.spawn(move |ctx| {
                    node::run_with_jobs(
                        ctx, name, ledger, engine, interval, transport, rpc, jobs, events,
                    )
                })
            }
            EngineKind::Tendermint => unreachable!("simulated.rs runs Tendermint nodes"),
        };
        self.rpcs[i] = rpc_tx;
        self.jobs[i] = jobs_tx;
        self.handles[i] = Some(handle);
    }

    /// Runs `work` on node `i`'s loop, as the web API does, and returns what it returned.
    async fn job<T: Send + 'static>(
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

    /// Submits the workflow through node 0 and waits until its pool is empty (every
    /// transaction in a block of its main chain).
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
            assert!(
                self.ctx.current() < deadline,
                "workflow not included: {}",
                ask(&self.rpcs[0], RpcRequest::Status).await
            );
            self.ctx.sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the live nodes hold the same block `depth` below the lowest tip (proof of
    /// work: that many confirmations; 1 for final engines, whose tip's seal may differ) at a
    /// height of at least `at_least`; returns that height and the block's hash.
    async fn agree(&self, at_least: u64, depth: u64, within: Duration) -> (u64, String) {
        let deadline = self.ctx.current() + within;
        loop {
            let heights = self.heights().await;
            let common = heights.values().min().unwrap().saturating_sub(depth);
            let mut blocks = Vec::new();
            for i in self.alive() {
                let b = ask(&self.rpcs[i], RpcRequest::Block { height: common }).await;
                blocks.push((b["hash"].clone(), b["state_root"].clone()));
            }
            if common >= at_least && blocks.windows(2).all(|w| w[0] == w[1]) {
                return (common, blocks[0].0.as_str().unwrap().to_string());
            }
            assert!(
                self.ctx.current() < deadline,
                "no agreement at {common} (at least {at_least}) within {within:?}: {heights:?} {blocks:?}"
            );
            self.ctx.sleep(Duration::from_millis(500)).await;
        }
    }

    /// Per node, the transactions in the blocks it appended up to `height`, counting for each
    /// height the block appended last (after a proof-of-work reorganisation, the winner's).
    fn txs_up_to(&mut self, height: u64) -> BTreeMap<String, usize> {
        let mut seen: BTreeMap<String, BTreeMap<u64, Finalised>> = BTreeMap::new();
        while let Ok(e) = self.events.try_recv() {
            seen.entry(e.node.clone()).or_default().insert(e.height, e);
        }
        seen.into_iter()
            .map(|(node, blocks)| (node, blocks.range(..=height).map(|(_, f)| f.txs).sum()))
            .collect()
    }

    async fn crash(&mut self, i: usize) {
        for j in (0..NODES).filter(|j| *j != i) {
            link(
                &self.oracle,
                self.genesis.engine,
                &self.pks[i],
                &self.pks[j],
                false,
            )
            .await;
        }
        if let Some(handle) = self.handles[i].take() {
            handle.abort();
        }
    }

    async fn restart(&mut self, i: usize) {
        for j in (0..NODES).filter(|j| *j != i) {
            link(
                &self.oracle,
                self.genesis.engine,
                &self.pks[i],
                &self.pks[j],
                true,
            )
            .await;
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

/// Confirmations after which the tests hold a proof-of-work block settled.
const POW_CONFIRMATIONS: u64 = 3;

/// Four nodes of `engine` carry the workflow into blocks they all hold.
fn all_hold_the_workflow(engine: EngineKind, seed: u64, depth: u64) -> (u64, String) {
    runner(seed).start(|ctx| async move {
        let mut sim = Sim::start(ctx.child("sim"), engine).await;
        sim.wait_height(1, Duration::from_secs(120)).await;
        sim.submit_workflow(Duration::from_secs(120)).await;
        let top = *sim.heights().await.values().max().unwrap();
        let (common, hash) = sim.agree(top + 1, depth, Duration::from_secs(120)).await;
        let txs = sim.txs_up_to(common);
        assert_eq!(txs.len(), NODES, "every node appended blocks: {txs:?}");
        for (node, count) in &txs {
            assert_eq!(
                *count,
                sim.txs.len(),
                "{node} holds {count} of the workflow's transactions by height {common}"
            );
        }
        // What the web API reads, through the same view whatever the engine: on every node the
        // patient accepted the hospital's relationship.
        let rel = RelationshipId::of(
            Keypair::from_secret_bytes(&[52; 32]).account(),
            Keypair::from_secret_bytes(&[50; 32]).account(),
        );
        for i in 0..NODES {
            let accepted = sim
                .job(i, move |node| {
                    let access = node.ledger().chain().access();
                    access.relationship(&rel).map(|r| r.accepted.is_some())
                })
                .await;
            assert_eq!(
                accepted,
                Some(true),
                "node {i}'s web view of the relationship"
            );
        }
        (common, hash)
    })
}

/// Node 3 crashes; the others carry the workflow on; node 3 restarts on its store, catches up
/// and holds the same blocks.
fn a_crashed_node_catches_up(engine: EngineKind, seed: u64, depth: u64) {
    runner(seed).start(|ctx| async move {
        let mut sim = Sim::start(ctx.child("sim"), engine).await;
        sim.wait_height(2, Duration::from_secs(120)).await;
        let at_crash = sim.heights().await[&3];
        sim.crash(3).await;
        sim.submit_workflow(Duration::from_secs(120)).await;
        let top = *sim.heights().await.values().max().unwrap();
        sim.wait_height(top + 2, Duration::from_secs(120)).await;
        sim.restart(3).await;
        let resumed = sim.heights().await[&3];
        assert!(
            resumed >= at_crash,
            "restarted at {resumed}, had {at_crash}"
        );
        let now = *sim.heights().await.values().max().unwrap();
        let (common, hash) = sim.agree(now, depth, Duration::from_secs(300)).await;
        let txs = sim.txs_up_to(common);
        assert_eq!(
            txs["hospital-3"],
            sim.txs.len(),
            "the restarted node holds every transaction of the workflow once"
        );
        println!("{engine}: node 3 crashed at {at_crash}, resumed at {resumed}; all agree at {common}: {hash}");
    });
}

#[test]
fn proof_of_work_nodes_converge_on_the_same_blocks_carrying_the_workflow_and_a_seed_replays() {
    let first = all_hold_the_workflow(EngineKind::Pow, 7, POW_CONFIRMATIONS);
    println!("pow, seed 7: {first:?}");
    let again = all_hold_the_workflow(EngineKind::Pow, 7, POW_CONFIRMATIONS);
    assert_eq!(first, again, "same seed, same chain");
}

#[test]
fn a_crashed_proof_of_work_node_restarts_on_its_store_and_catches_up() {
    a_crashed_node_catches_up(EngineKind::Pow, 13, POW_CONFIRMATIONS);
}

#[test]
fn committee_nodes_finalise_the_same_blocks_carrying_the_workflow() {
    let (common, hash) = all_hold_the_workflow(EngineKind::Committee, 7, 1);
    println!("committee, seed 7: all agree at {common}: {hash}");
}

#[test]
fn a_crashed_committee_node_restarts_on_its_store_and_catches_up() {
    a_crashed_node_catches_up(EngineKind::Committee, 13, 1);
}

#[test]
fn a_genesis_without_an_engine_runs_tendermint_and_an_unknown_engine_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let c = medledger_node::config::init(dir.path(), 1, 31_000, 100).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&c.genesis).unwrap()).unwrap();
    assert_eq!(json["engine"], "tendermint");
    json.as_object_mut().unwrap().remove("engine");
    let path = dir.path().join("no-engine.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let genesis: Genesis = medledger_node::config::read_json(&path).unwrap();
    assert_eq!(genesis.engine, EngineKind::Tendermint);
    assert!(genesis.chain(None).is_ok());

    json["engine"] = "raft".into();
    std::fs::write(&path, json.to_string()).unwrap();
    let err = medledger_node::config::read_json::<Genesis>(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `raft`"), "{err}");
    let err = "raft".parse::<EngineKind>().unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown engine \"raft\": expected tendermint, pow or committee"
    );
}

#[test]
fn init_writes_a_genesis_naming_the_engine_with_its_parameters() {
    for engine in [EngineKind::Pow, EngineKind::Committee] {
        let dir = tempfile::tempdir().unwrap();
        let c =
            medledger_node::config::init_with_engine(dir.path(), 4, 31_000, 100, engine).unwrap();
        let genesis: Genesis = medledger_node::config::read_json(&c.genesis).unwrap();
        assert_eq!(genesis.engine, engine);
        assert!(genesis.chain(None).is_err(), "not a Tendermint genesis");
        match engine {
            EngineKind::Pow => {
                assert_eq!(genesis.pow, Some(PowGenesis::default()));
                assert!(genesis.pow_chain(None, None).is_ok());
            }
            _ => {
                assert_eq!(genesis.committee, Some(CommitteeGenesis::default()));
                assert!(genesis.committee_chain(None, None).is_ok());
            }
        }
        assert_eq!(
            genesis.chain_id().unwrap(),
            medledger_node::web::local::chain_id(&genesis).unwrap()
        );
    }
}

#[test]
fn proof_of_work_parameters_out_of_range_are_refused_with_the_reason() {
    let pow = |difficulty_bits, hashes_per_slice, slice_ms| PowGenesis {
        difficulty_bits,
        hashes_per_slice,
        slice_ms,
        max_reorg_depth: 10,
    };
    for (bad, reason) in [
        (pow(0, 64, 10), "difficulty_bits"),
        (pow(49, 64, 10), "difficulty_bits"),
        (pow(12, 0, 10), "hashes_per_slice"),
        (pow(12, 64, 0), "slice_ms"),
    ] {
        let err = bad.params().unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }
    // 12 bits: the top twelve bits of the target are clear, the rest set.
    let limit = pow(12, 64, 10).params().unwrap().pow_limit_target();
    assert_eq!(limit.to_be_bytes()[..3], [0x00, 0x0f, 0xff]);
}
