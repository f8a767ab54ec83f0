//! Four nodes' real event loops (`medledger_node::node::run`, the binary's loop) on commonware's
//! deterministic runtime over `commonware_p2p::simulated` links with latency, jitter and loss.
//! Each node keeps its chain in a `FileStore` in a temporary directory, so a crashed node restarts
//! on what it had written. Simulated time is virtual: minutes of consensus take
//! seconds of wall time, and a seed replays exactly.

mod harness;

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, UNIX_EPOCH};

use commonware_p2p::{Recipients, Sender as _};
use commonware_runtime::{Clock as _, Quota, Runner as _, Supervisor as _};
use commonware_utils::NZU32;
use harness::{ask, lossy_link, runner, Cluster, Ctx, NODES, START};
use medledger::access::{
    AccessOp, Action, ActionSet, GrantTerms, Period, PurposeSet, RelationshipId, Role, Scope,
    Viewer,
};
use medledger::purpose::PurposeOfUse::Treatment;
use medledger::tx::Keypair;
use medledger::Transaction;
use medledger_node::config::Genesis;
use medledger_node::node::RpcRequest;
use medledger_node::wire::*;

const DAY: u64 = 86_400;

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

/// Four Tendermint nodes on a simulated network, each on its own `FileStore`, and one
/// more known peer (the intruder, `pks[NODES]`) that runs no node: a test may speak through it.
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
    async fn start(ctx: Ctx) -> Self {
        Self::start_with(ctx, |_| {}).await
    }

    /// [`start`](Self::start) on the test genesis as `adjust` changes it.
    async fn start_with(ctx: Ctx, adjust: impl FnOnce(&mut Genesis)) -> Self {
        let authority = Keypair::from_secret_bytes(&[100; 32]);
        let mut genesis = harness::genesis("medledger-sim", &authority);
        adjust(&mut genesis);
        let txs = workflow(&genesis, &authority);
        let net = Cluster::start(ctx, genesis, NODES + 1, lossy_link()).await;
        let mut sim = Sim { net, txs };
        sim.spawn_all().await;
        sim
    }

    /// Submits the workflow through node 0 and waits until it is finalised.
    async fn submit_workflow(&mut self, within: Duration) {
        self.net.submit(&self.txs, within).await;
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
fn idle_nodes_make_an_empty_block_only_each_idle_interval_and_a_transaction_starts_the_next() {
    const IDLE: Duration = Duration::from_secs(30);
    runner(9).start(|ctx| async move {
        let mut sim = Sim::start_with(ctx.child("sim"), |g| {
            g.idle_block_interval_ms = Some(IDLE.as_millis() as u64);
        })
        .await;
        let secs = || {
            ctx.current()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        sim.wait_height(1, Duration::from_secs(60)).await;
        // With nothing to do, the nodes hold at their height (200 ms blocks otherwise: 50).
        ctx.sleep(Duration::from_secs(2)).await;
        let idle = sim.heights().await;
        ctx.sleep(Duration::from_secs(10)).await;
        assert_eq!(sim.heights().await, idle, "blocks made while idle");
        // A transaction starts the next height at once, not at the end of the idle interval.
        let submitted = secs();
        sim.submit_workflow(Duration::from_secs(60)).await;
        let took = secs() - submitted;
        assert!(took < 10.0, "the workflow took {took:.1} s to be finalised");
        let top = *sim.heights().await.values().max().unwrap();
        let mut seen = BTreeMap::new();
        sim.drain_events(&mut seen);
        let busy: usize = seen["hospital-0"].len();
        // Idle again: the next (empty) block comes one idle interval after the last.
        let last = secs();
        sim.wait_height(top + 1, IDLE + Duration::from_secs(30))
            .await;
        let waited = secs() - last;
        assert!(
            waited > IDLE.as_secs_f64() - 2.0,
            "an empty block {waited:.1} s after the last"
        );
        let (common, hash) = sim.agree(top).await;
        println!(
            "idle at {idle:?}; the workflow finalised in {took:.1} s over {busy} blocks; \
             the next empty block {waited:.1} s later; all agree at {common}: {hash}"
        );
    });
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
                sim.cut(a, b).await;
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
                sim.connect(a, b).await;
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
            sim.connect(NODES, target).await;
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
