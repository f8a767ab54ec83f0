//! The node's loop (`medledger_node::node::run`) driving the other engines a genesis can name,
//! proof of work and the committee engine, on commonware's deterministic runtime over
//! `commonware_p2p::simulated` links with latency, jitter and loss: the same transport,
//! mempool, relay and block sync as Tendermint's nodes (see `simulated.rs`). Each node keeps its
//! chain in a `FileStore`, so a crashed node restarts on what it had written.

mod harness;

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use commonware_p2p::simulated::Link;
use commonware_runtime::{Clock as _, Runner as _, Supervisor as _};
use commonware_utils::Probability;
use harness::{ask, lossy_link, runner, Cluster, Ctx, NODES};
use medledger::access::{AccessOp, RelationshipId, Role};
use medledger::tx::Keypair;
use medledger::Transaction;
use medledger_node::config::{CommitteeGenesis, EngineKind, Genesis, PowGenesis};
use medledger_node::node::{Finalised, RpcRequest};

/// The genesis of a consortium running `engine`: proof of work mining about a block every
/// 0.6 s, or the committee engine with easy identities.
fn genesis(engine: EngineKind, authority: &Keypair) -> Genesis {
    Genesis {
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
        ..harness::genesis(&format!("medledger-sim-{engine}"), authority)
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
    match engine {
        EngineKind::Committee => Link {
            success_rate: Probability::from_f64(1.0).unwrap(),
            ..lossy_link()
        },
        _ => lossy_link(),
    }
}

/// Four nodes of one engine on a simulated network, each on its own `FileStore`.
struct Sim {
    net: Cluster,
    txs: Vec<Transaction>,
}

impl Deref for Sim {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.net
    }
}

impl DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.net
    }
}

impl Sim {
    async fn start(ctx: Ctx, engine: EngineKind) -> Self {
        let authority = Keypair::from_secret_bytes(&[100; 32]);
        let genesis = genesis(engine, &authority);
        let txs = workflow(&genesis, &authority);
        let net = Cluster::start(ctx, genesis, NODES, link_for(engine)).await;
        let mut sim = Sim { net, txs };
        sim.spawn_all().await;
        sim
    }

    /// Submits the workflow through node 0 and waits until its pool is empty (every
    /// transaction in a block of its main chain).
    async fn submit_workflow(&mut self, within: Duration) {
        self.net.submit(&self.txs, within).await;
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
        self.net.drain_events(&mut seen);
        seen.into_iter()
            .map(|(node, blocks)| (node, blocks.range(..=height).map(|(_, f)| f.txs).sum()))
            .collect()
    }
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
        let c = medledger_node::config::init_with_engine(dir.path(), 4, 31_000, 100, None, engine)
            .unwrap();
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
