//! Load check of the gatekeeper: signed access requests decided over HTTP on 127.0.0.1 per
//! second, beside the in-process `decide` rate on the same chain, in the same run.
//!
//! ```sh
//! cargo run --release -p medledger-node --example gate_load -- [REQUESTS] [CLIENTS]
//! ```
//!
//! A one-node consortium with the portal demo's cast runs in this process; the patient grants
//! the specialist read access; the specialist's requests are signed before the clock starts
//! (each with its own nonce), then `CLIENTS` threads (keep-alive HTTP/1.1 connections) post
//! `REQUESTS` of them in all. Every answer must be a permit. Loopback only, bounded.

use std::time::{Duration, Instant};

use medledger::access::{
    AccessOp, AccessRequest, Action, ActionSet, GrantTerms, Period, PurposeSet, Scope, Viewer,
};
use medledger::purpose::PurposeOfUse;
use medledger_node::web::gate::{RequestFields, SignedRequest};
use medledger_node::web::local::LocalNode;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let requests: usize = args.first().map_or(Ok(20_000), |s| s.parse())?;
    let clients: usize = args.get(1).map_or(Ok(4), |s| s.parse())?;
    if !(1..=1_000_000).contains(&requests) || !(1..=64).contains(&clients) {
        return Err("REQUESTS in 1..=1000000, CLIENTS in 1..=64".into());
    }
    let dir = tempfile::tempdir()?;
    let node = LocalNode::start(dir.path(), "127.0.0.1:0".parse()?, 200)?;
    let cast = node.seed_demo()?;
    node.submit(
        &cast.patient,
        AccessOp::AcceptRelationship {
            relationship: cast.relationship,
        },
    )?;
    let now = node.node.ask_blocking(|n| n.now_secs())?;
    node.submit(
        &cast.patient,
        AccessOp::Grant {
            terms: GrantTerms::new(
                cast.relationship,
                Viewer::Account(cast.specialist.account()),
                Scope::All,
                ActionSet::of(&[Action::Read]),
                PurposeSet::of(&[PurposeOfUse::Treatment]),
                Period::lasting(now - 60, 86_400),
            ),
            under: None,
        },
    )?;
    node.settle(Duration::from_secs(30))?;

    // In process: `decide` on the node's chain, on the node's loop.
    let request = AccessRequest::new(
        cast.specialist.account(),
        cast.patient.account(),
        cast.record,
        Action::Read,
        PurposeOfUse::Treatment,
        now,
    );
    let rounds = 200_000u32;
    let (permits, in_process) = node.node.ask_blocking(move |n| {
        let chain = n.ledger().chain();
        let start = Instant::now();
        let permits = (0..rounds)
            .filter(|_| {
                std::hint::black_box(chain.decide(std::hint::black_box(&request))).is_permit()
            })
            .count();
        (permits, start.elapsed())
    })?;
    assert_eq!(
        permits, rounds as usize,
        "every in-process decision is a permit"
    );
    let in_process_rate = f64::from(rounds) / in_process.as_secs_f64();

    // Over HTTP: requests signed beforehand, distinct nonces.
    let issued_at = node.node.ask_blocking(|n| n.now_secs())?;
    let signed: Vec<String> = (0..requests)
        .map(|i| {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let fields = RequestFields {
                viewer: cast.specialist.public(),
                patient: cast.patient.account(),
                pointer: cast.record,
                action: Action::Read,
                purpose: PurposeOfUse::Treatment,
                issued_at,
                nonce,
            };
            serde_json::to_string(&SignedRequest::sign(
                &cast.specialist,
                &node.chain_id,
                &fields,
            ))
        })
        .collect::<Result<_, _>>()?;
    let url = format!("http://{}/gate/access", node.http);
    let chunks: Vec<Vec<String>> = signed
        .chunks(requests.div_ceil(clients))
        .map(<[String]>::to_vec)
        .collect();
    let start = Instant::now();
    let permits: usize = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let url = url.clone();
                s.spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    chunk
                        .into_iter()
                        .filter(|body| {
                            let answer = http
                                .post(&url)
                                .header("content-type", "application/json")
                                .body(body.clone())
                                .send()
                                .and_then(|r| r.text())
                                .unwrap_or_default();
                            answer.contains("\"decision\":\"permit\"")
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let over_http = start.elapsed();
    assert_eq!(permits, requests, "every request over HTTP is a permit");
    let http_rate = requests as f64 / over_http.as_secs_f64();
    println!("in-process decide:        {rounds} decisions in {in_process:?}: {in_process_rate:>12.0} /s");
    println!("gatekeeper over loopback: {requests} signed requests, {clients} clients, in {over_http:?}: {http_rate:>12.0} /s");
    println!(
        "in-process / HTTP:        {:.1}x",
        in_process_rate / http_rate
    );
    Ok(())
}
