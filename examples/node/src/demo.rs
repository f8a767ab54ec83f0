//! `demo`: a four-hospital consortium on 127.0.0.1 in one process, a MedRec workflow submitted
//! through one node, and every node's agreement checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use commonware_runtime::{tokio, Clock as _, Runner as _, Spawner as _, Supervisor as _};
use commonware_utils::channel::{mpsc, oneshot};
use medledger::access::{
    AccessOp, Action, ActionSet, GrantTerms, Period, PurposeSet, RelationshipId, Role, Scope,
    Viewer,
};
use medledger::purpose::PurposeOfUse::Treatment;
use medledger::tx::Keypair;
use medledger::Transaction;

use crate::config::{self, hex_encode, read_json, read_key, Genesis, NodeConfig, Result};
use crate::node::{Finalised, RpcCall, RpcRequest};

const DAY: u64 = 86_400;

/// The demo's MedRec workflow, signed: the authority certifies a hospital, the hospital, a
/// specialist and a patient register, the hospital opens a relationship the patient accepts,
/// and the patient grants the specialist 30 days of reading for treatment.
pub fn workflow(genesis: &Genesis, authority: &Keypair) -> Result<Vec<(String, Transaction)>> {
    let mut client = medledger::Ledger::new(genesis.chain(None)?)?;
    let (hospital, patient, specialist) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    let owner = patient.account();
    let rel = RelationshipId::of(owner, hospital.account());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let terms = GrantTerms::new(
        rel,
        Viewer::Account(specialist.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[Treatment]),
        Period::lasting(now, 30 * DAY),
    );
    let steps: Vec<(&str, &Keypair, AccessOp)> = vec![
        (
            "authority certifies St Mary's",
            authority,
            AccessOp::CertifyProvider {
                provider: hospital.account(),
                emergency: false,
            },
        ),
        (
            "St Mary's registers",
            &hospital,
            AccessOp::register_organisation(Role::Provider, "St Mary's")?,
        ),
        (
            "Dr Okafor registers",
            &specialist,
            AccessOp::register_organisation(Role::Provider, "Dr Okafor")?,
        ),
        (
            "patient registers",
            &patient,
            AccessOp::register_patient(owner, "NHS-485-777", &[7; 32]),
        ),
        (
            "St Mary's opens a relationship",
            &hospital,
            AccessOp::CreateRelationship { patient: owner },
        ),
        (
            "patient accepts it",
            &patient,
            AccessOp::AcceptRelationship { relationship: rel },
        ),
        (
            "patient grants Dr Okafor 30 days",
            &patient,
            AccessOp::Grant { terms, under: None },
        ),
    ];
    let mut out = Vec::new();
    for (what, key, op) in steps {
        let tx = client.sign(key, op);
        client
            .submit(tx.clone())
            .map_err(|e| format!("{what}: {e}"))?;
        out.push((what.to_string(), tx));
    }
    Ok(out)
}

async fn ask(node: &mpsc::UnboundedSender<RpcCall>, request: RpcRequest) -> serde_json::Value {
    let (tx, rx) = oneshot::channel();
    if node.send((request, tx)).is_err() {
        return serde_json::json!({"ok": false, "error": "node stopped"});
    }
    rx.await
        .unwrap_or_else(|_| serde_json::json!({"ok": false, "error": "node stopped"}))
}

/// Runs the demo in `dir` (which must not hold a consortium yet) with p2p ports from
/// `base_port`. Returns whether every node agreed.
pub fn run(dir: &Path, base_port: u16) -> Result<bool> {
    let consortium = config::init(dir, 4, base_port, 500)?;
    println!("consortium of 4 hospitals written to {}", dir.display());
    let genesis: Genesis = read_json(&consortium.genesis)?;
    let authority = read_key(&consortium.authority_key)?;
    let configs: Vec<NodeConfig> = consortium
        .configs
        .iter()
        .map(|p| NodeConfig::load(p))
        .collect::<Result<_>>()?;
    let txs = workflow(&genesis, &authority)?;
    let runner = tokio::Runner::new(tokio::Config::default().with_worker_threads(2));
    runner.start(|ctx| async move {
        crate::init_logs(&ctx, "warn");
        let t0 = Instant::now();
        let (events_tx, mut events) = mpsc::unbounded_channel::<Finalised>();
        let mut rpcs = Vec::new();
        for config in configs.iter().cloned() {
            let (rpc_tx, rpc_rx) = mpsc::unbounded_channel();
            rpcs.push(rpc_tx);
            let events_tx = events_tx.clone();
            println!("{} listening on {}", config.name, config.listen);
            ctx.child("node").spawn(move |ctx| async move {
                if let Err(e) =
                    crate::net::run(ctx, config.clone(), rpc_rx, None, Some(events_tx)).await
                {
                    eprintln!("{}: {e}", config.name);
                }
            });
        }
        // height -> (node -> finalised)
        let mut seen: BTreeMap<u64, BTreeMap<String, Finalised>> = BTreeMap::new();
        let mut printed = 0u64;
        let mut submitted_at: Option<u64> = None;
        let mut ok = false;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            commonware_macros::select! {
                e = events.recv() => if let Some(e) = e {
                    seen.entry(e.height).or_default().insert(e.node.clone(), e);
                },
                _ = ctx.sleep(Duration::from_millis(100)) => {},
            }
            // One line per block, once every node has it.
            while let Some(nodes) = seen.get(&(printed + 1)) {
                if nodes.len() < 4 {
                    break;
                }
                printed += 1;
                let first = nodes.values().next().expect("4 nodes");
                let same = nodes
                    .values()
                    .all(|f| f.id == first.id && f.state_root == first.state_root);
                println!(
                    "[{:>5.1}s] block {:>3} id {} state {} txs {:>2}  final on 4/4 nodes{}",
                    t0.elapsed().as_secs_f64(),
                    printed,
                    &first.id[..12],
                    &first.state_root[..12],
                    first.txs,
                    if same { "" } else { "  DISAGREEMENT" },
                );
            }
            if submitted_at.is_none() && printed >= 1 {
                for (what, tx) in &txs {
                    let answer = ask(
                        &rpcs[0],
                        RpcRequest::Submit {
                            tx: hex_encode(&tx.encode()),
                        },
                    )
                    .await;
                    println!("  submit to hospital-0: {what}: {answer}");
                }
                // A duplicate and an invalid transaction are refused and not relayed.
                let dup = ask(
                    &rpcs[0],
                    RpcRequest::Submit {
                        tx: hex_encode(&txs[0].1.encode()),
                    },
                )
                .await;
                println!("  resubmit the first: {dup}");
                let forged = ask(&rpcs[0], RpcRequest::Submit { tx: "00ff".into() }).await;
                println!("  submit garbage: {forged}");
                submitted_at = Some(printed);
            }
            if let Some(at) = submitted_at {
                let mempool = ask(&rpcs[0], RpcRequest::Status).await["mempool"].as_u64();
                if printed >= at + 3 && mempool == Some(0) {
                    ok = true;
                    break;
                }
            }
        }
        if !ok {
            println!("the workflow was not finalised in time");
        }
        // Agreement: every node holds the same block (id, hash, state root) at a common height
        // below its tip (a tip's seal may still differ; see the Tendermint engine's docs).
        let mut heights = Vec::new();
        for rpc in &rpcs {
            heights.push(
                ask(rpc, RpcRequest::Status).await["height"]
                    .as_u64()
                    .unwrap_or(0),
            );
        }
        let common = heights.iter().min().copied().unwrap_or(0).saturating_sub(1);
        let mut answers = Vec::new();
        for (i, rpc) in rpcs.iter().enumerate() {
            let b = ask(rpc, RpcRequest::Block { height: common }).await;
            println!(
                "hospital-{i}: height {} | block {common}: hash {} state root {}",
                heights[i],
                b["hash"].as_str().unwrap_or("?"),
                b["state_root"].as_str().unwrap_or("?"),
            );
            answers.push((b["hash"].clone(), b["state_root"].clone()));
        }
        let agree = common > 0 && answers.windows(2).all(|w| w[0] == w[1]);
        let included = seen
            .values()
            .flat_map(|n| n.values().next())
            .map(|f| f.txs)
            .sum::<usize>();
        println!(
            "{} transactions finalised; all 4 nodes agree: {}",
            included,
            if agree && ok { "YES" } else { "NO" }
        );
        ctx.stop(0, Some(Duration::from_secs(2))).await.ok();
        Ok(agree && ok)
    })
}
