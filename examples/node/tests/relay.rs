//! Transaction relay between nodes: batches of transactions on the transaction channel. A
//! peer's well-formed batch is taken into the pool (but for transactions that fail their own
//! checks); a malformed, overfull or oversized batch is refused whole, its sender blocked, and
//! none of its transactions taken. Four nodes' real event loops on commonware's deterministic
//! runtime and simulated links (see `simulated.rs`).

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use commonware_p2p::simulated::Link;
use commonware_p2p::{Recipients, Sender as _};
use commonware_runtime::{Clock as _, Quota, Runner as _, Supervisor as _};
use commonware_utils::{Probability, NZU32};
use harness::{ask, genesis, runner, Cluster, NODES};
use medledger::access::AccessOp;
use medledger::codec;
use medledger::hash::ChainId;
use medledger::tx::Keypair;
use medledger::Transaction;
use medledger_node::config::{hex_encode, Genesis};
use medledger_node::node::{self, RpcRequest};
use medledger_node::wire::*;

/// 20 ms ± 5 ms, nothing lost: what a test of refusals needs, every message arriving.
fn steady_link() -> Link {
    Link {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        success_rate: Probability::from_f64(1.0).unwrap(),
    }
}

/// A patient registration from the account with key seed `seed`, for `genesis`'s chain.
fn registration(genesis: &Genesis, seed: u8) -> Transaction {
    let chain_id = genesis.chain(None).unwrap().chain_id();
    let key = Keypair::from_secret_bytes(&[seed; 32]);
    let op = AccessOp::register_patient(key.account(), &format!("P-{seed}"), &[7; 32]);
    Transaction::sign(&key, chain_id, 0, op.into())
}

/// Transactions node `node` finalised so far (from the finalisation events).
fn finalised_txs(
    net: &mut Cluster,
    seen: &mut BTreeMap<String, BTreeMap<u64, node::Finalised>>,
    node: usize,
) -> usize {
    net.drain_events(seen);
    seen.get(&format!("hospital-{node}"))
        .map_or(0, |blocks| blocks.values().map(|f| f.txs).sum())
}

#[test]
fn a_malformed_overfull_or_oversized_relay_batch_is_refused_whole_and_changes_nothing() {
    runner(23).start(|ctx| async move {
        let genesis = genesis("medledger-relay", &Keypair::from_secret_bytes(&[100; 32]));
        let mut net =
            Cluster::start(ctx.child("net"), genesis.clone(), NODES + 1, steady_link()).await;
        net.spawn_all().await;
        net.wait_height(2, Duration::from_secs(60)).await;

        // A known peer that runs no node relays batches to the nodes.
        let intruder = net.pks[NODES].clone();
        for target in 0..NODES {
            net.connect(NODES, target).await;
        }
        let control = net.oracle.control(intruder.clone());
        let (mut txs, _) = control
            .register(CH_TXS, Quota::per_second(NZU32!(1000)))
            .await
            .unwrap();
        ctx.sleep(Duration::from_secs(1)).await;
        let to = |i: usize| Recipients::One(net.pks[i].clone());

        // A well-formed batch to node 0: its valid transaction is taken (and, as a peer's, not
        // relayed again). A forged signature beside it, in the same batch check, is refused
        // alone and holds nothing else back; the peer is not blocked for it.
        let taken = registration(&genesis, 60);
        let mut forged = registration(&genesis, 63).encode();
        let last = forged.len() - 1;
        forged[last] ^= 1; // the signature's last byte
        let good = TxBatch::split(vec![taken.encode(), forged]).remove(0);
        txs.send(to(0), codec::encode(&good), false);
        // A valid transaction inside each refused batch: none of them may take it.
        let valid = registration(&genesis, 61);
        let mut cut = registration(&genesis, 62).encode();
        cut.truncate(cut.len() / 2);
        let malformed = TxBatch {
            txs: vec![valid.encode(), cut],
        };
        let overfull = TxBatch {
            txs: vec![valid.encode(); MAX_RELAY_BATCH + 1],
        };
        txs.send(to(1), codec::encode(&malformed), false);
        txs.send(to(2), codec::encode(&overfull), false);
        txs.send(to(3), vec![1; LIMIT_TXS + 1], false);
        ctx.sleep(Duration::from_secs(2)).await;

        let blocked = net.oracle.blocked().await.unwrap();
        for target in 1..NODES {
            assert!(
                blocked.contains(&(net.pks[target].clone(), intruder.clone())),
                "node {target} did not block the intruder: {blocked:?}"
            );
        }
        assert!(
            !blocked.contains(&(net.pks[0].clone(), intruder.clone())),
            "node 0 blocked a peer that relayed a well-formed batch: {blocked:?}"
        );
        assert!(
            blocked.iter().all(|(_, who)| *who == intruder),
            "an honest peer was blocked: {blocked:?}"
        );

        // Node 0 finalises the well-formed batch's transaction (when it proposes).
        let mut seen = BTreeMap::new();
        let deadline = ctx.current() + Duration::from_secs(60);
        while finalised_txs(&mut net, &mut seen, 0) < 1 {
            assert!(
                ctx.current() < deadline,
                "the relayed transaction was not finalised"
            );
            ctx.sleep(Duration::from_millis(200)).await;
        }
        // Nothing of the refused batches was taken: every pool is empty, and the valid
        // transaction they carried is new to node 0, which takes it and finalises it.
        for i in 0..NODES {
            let status = ask(&net.rpcs[i], RpcRequest::Status).await;
            assert_eq!(status["mempool"], 0, "node {i}: {status}");
        }
        let answer = ask(
            &net.rpcs[0],
            RpcRequest::Submit {
                tx: hex_encode(&valid.encode()),
            },
        )
        .await;
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(answer["id"], valid.id().to_string());
        net.submit(&[], Duration::from_secs(60)).await;
        let top = *net.heights().await.values().max().unwrap();
        net.wait_height(top + 1, Duration::from_secs(60)).await;
        assert_eq!(finalised_txs(&mut net, &mut seen, 0), 2);
    });
}

#[test]
fn a_clients_batch_submission_is_answered_per_transaction_and_its_taken_ones_reach_every_node() {
    runner(29).start(|ctx| async move {
        let genesis = genesis(
            "medledger-rpc-batch",
            &Keypair::from_secret_bytes(&[100; 32]),
        );
        let mut net = Cluster::start(ctx.child("net"), genesis.clone(), NODES, steady_link()).await;
        net.spawn_all().await;
        net.wait_height(2, Duration::from_secs(60)).await;

        let (a, b) = (registration(&genesis, 70), registration(&genesis, 71));
        let mut forged = registration(&genesis, 72).encode();
        let last = forged.len() - 1;
        forged[last] ^= 1; // the signature's last byte
        let other_chain = {
            let key = Keypair::from_secret_bytes(&[73; 32]);
            let op = AccessOp::register_patient(key.account(), "P-73", &[7; 32]);
            Transaction::sign(&key, ChainId::from_bytes([9; 32]), 0, op.into())
        };
        let hex = |tx: &Transaction| hex_encode(&tx.encode());
        let batch = vec![
            hex(&a),
            hex(&b),
            hex(&a),
            "zz".to_string(),
            hex_encode(&forged),
            hex(&other_chain),
        ];
        let answer = ask(&net.rpcs[0], RpcRequest::SubmitBatch { txs: batch }).await;
        assert_eq!(answer["ok"], true, "{answer}");
        let answers = answer["answers"]
            .as_array()
            .expect("one answer per transaction");
        assert_eq!(answers.len(), 6, "{answer}");
        assert_eq!(answers[0]["id"], a.id().to_string(), "{answer}");
        assert_eq!(answers[1]["id"], b.id().to_string(), "{answer}");
        for (i, why) in [
            (2, "already pending"),
            (3, "hex"),
            (4, "signature"),
            (5, "chain"),
        ] {
            assert_eq!(answers[i]["ok"], false, "answer {i}: {answer}");
            let error = answers[i]["error"].as_str().unwrap_or_default();
            assert!(
                error.to_lowercase().contains(why),
                "answer {i} should say {why:?}: {error}"
            );
            assert!(
                !error.contains("of the batch"),
                "a position in the node's own batch means nothing to the client: {error}"
            );
        }

        // An empty batch and one over the limit are refused whole, and change nothing.
        for txs in [
            vec![],
            vec![hex(&registration(&genesis, 74)); node::MAX_RPC_BATCH + 1],
        ] {
            let n = txs.len();
            let answer = ask(&net.rpcs[1], RpcRequest::SubmitBatch { txs }).await;
            assert_eq!(answer["ok"], false, "a batch of {n}: {answer}");
            assert!(answer.get("answers").is_none(), "{answer}");
        }

        // The two taken transactions are relayed: every node finalises them, and no other.
        net.submit(&[], Duration::from_secs(60)).await;
        let top = *net.heights().await.values().max().unwrap();
        net.wait_height(top + 1, Duration::from_secs(60)).await;
        let mut seen = BTreeMap::new();
        for i in 0..NODES {
            assert_eq!(finalised_txs(&mut net, &mut seen, i), 2, "node {i}");
            let status = ask(&net.rpcs[i], RpcRequest::Status).await;
            assert_eq!(status["mempool"], 0, "node {i}: {status}");
        }
    });
}
