//! A research query over HTTP on 127.0.0.1: three hospitals commit their reports on chain
//! through their nodes and post them to two aggregators' nodes; the leader aggregates with the
//! helper after the deadline, both commit their noised shares on chain; the researcher fetches
//! both shares, checks them against the chain, unshards them and publishes the result's hash.
//! A replayed batch, a malformed body and reports not committed on chain are refused over HTTP
//! with nothing changed.
//!
//! The consortium's chain is a one-validator node running in this process; each member (three
//! hospitals, two aggregators) has a web API of its own on that ledger, signing with its own
//! key, as its own node would.

use std::net::SocketAddr;
use std::time::Duration;

use medledger::access::{
    AccessOp, AggregatorRef, Epsilon, HpkePublicKey, Identity, QueryId, QueryKind, ReportNonce,
    Role, StudyId,
};
use medledger::hash::{content_hash, TxId};
use medledger::research::{shard, unshard, AggregateShare, Measurement, QueryParams, Report};
use medledger::tx::Keypair;
use medledger_node::config::hex_decode;
use medledger_node::web::local::LocalNode;
use medledger_node::web::research::{ReportBatch, ResearchKeys, ShareRequest, VerifyRequest};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Reports each hospital sends.
const PATIENTS: usize = 40;
/// The query's ε (each aggregator's noise alone gives ε-DP).
const EPSILON_MICROS: u64 = 1_000_000;
/// The answer is the truth plus two discrete Laplace draws of scale 1/ε = 1:
/// P(|L₁ + L₂| > 50) ≤ 2·P(|L| > 25) < 4·e⁻²⁵ ≈ 6·10⁻¹¹.
const NOISE_BOUND: i128 = 50;

struct Consortium {
    node: LocalNode,
    http: Client,
    hospitals: Vec<(Keypair, String)>,
    aggregators: Vec<(Keypair, String)>,
    researcher: Keypair,
    _dir: tempfile::TempDir,
}

fn answer(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
    (status, json)
}

fn base(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// What an aggregator's refusal must leave alone: the chain's state, the pool and what the
/// aggregator holds.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    state_root: String,
    pending: usize,
    held: Vec<Value>,
}

impl Consortium {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = LocalNode::start(dir.path(), "127.0.0.1:0".parse().unwrap(), 50).unwrap();
        let verify_key = [7u8; 32];
        let hospitals: Vec<(Keypair, String)> = (0..3)
            .map(|_| {
                let key = Keypair::generate();
                let addr = node.serve_member(&key, None).unwrap();
                (key, base(addr))
            })
            .collect();
        let aggregators: Vec<(Keypair, String)> = (0..2u8)
            .map(|i| {
                let key = Keypair::generate();
                let keys =
                    ResearchKeys::new(Zeroizing::new([40 + i; 32]), Zeroizing::new(verify_key));
                let addr = node.serve_member(&key, Some(keys)).unwrap();
                (key, base(addr))
            })
            .collect();
        let researcher = Keypair::generate();
        for (i, (h, _)) in hospitals.iter().enumerate() {
            node.submit(
                &node.authority,
                AccessOp::CertifyProvider {
                    provider: h.account(),
                    emergency: false,
                },
            )
            .unwrap();
            node.submit(
                h,
                AccessOp::register_organisation(Role::Provider, &format!("Hospital {i}")).unwrap(),
            )
            .unwrap();
        }
        for (i, (a, _)) in aggregators.iter().enumerate() {
            node.submit(
                a,
                AccessOp::register_organisation(Role::Provider, &format!("Aggregator {i}"))
                    .unwrap(),
            )
            .unwrap();
        }
        node.submit(
            &researcher,
            AccessOp::Register {
                role: Role::Researcher,
                identity: Identity::Organisation("Diabetes Research Lab".try_into().unwrap()),
                blinded: None,
            },
        )
        .unwrap();
        node.settle(Duration::from_secs(30)).unwrap();
        Consortium {
            node,
            http: Client::new(),
            hospitals,
            aggregators,
            researcher,
            _dir: dir,
        }
    }

    fn settle(&self) {
        self.node.settle(Duration::from_secs(30)).unwrap();
    }

    fn get(&self, url: String) -> (u16, Value) {
        answer(self.http.get(url).send().unwrap())
    }

    fn post(&self, url: String, body: &impl serde::Serialize) -> (u16, Value) {
        answer(self.http.post(url).json(body).send().unwrap())
    }

    fn emr(&self, url: String, body: &impl serde::Serialize) -> (u16, Value) {
        answer(
            self.http
                .post(url)
                .bearer_auth(&self.node.token)
                .json(body)
                .send()
                .unwrap(),
        )
    }

    fn now(&self) -> u64 {
        self.node.node.ask_blocking(|n| n.now_secs()).unwrap()
    }

    /// The authority approves a study with ε = 1; the researcher announces a count query with
    /// both aggregators' keys (as their nodes publish them), a minimum batch of 100 and a
    /// deadline `secs` from now.
    fn announce(&self, secs: u64) -> QueryId {
        let approve = self
            .node
            .submit(
                &self.node.authority,
                AccessOp::ApproveStudy {
                    researcher: self.researcher.account(),
                    protocol: content_hash(b"protocol DRL-2027-04, ethics approval EC-1187"),
                    budget: Epsilon::from_micros(EPSILON_MICROS),
                    min_class_size: 10,
                },
            )
            .unwrap();
        self.settle();
        let study = StudyId::of_tx(approve.parse::<TxId>().unwrap());
        let refs = [0, 1].map(|i| {
            let (status, k) = self.get(format!("{}/research/key", self.aggregators[i].1));
            assert_eq!(status, 200, "{k}");
            assert_eq!(k["account"], self.aggregators[i].0.account().to_string());
            AggregatorRef {
                account: self.aggregators[i].0.account(),
                key: k["hpke_key"]
                    .as_str()
                    .unwrap()
                    .parse::<HpkePublicKey>()
                    .unwrap(),
            }
        });
        let announce = self
            .node
            .submit(
                &self.researcher,
                AccessOp::AnnounceQuery {
                    study,
                    kind: QueryKind::Count,
                    cohort: content_hash(b"diagnosis E10-E14 (diabetes mellitus) on record"),
                    epsilon: Epsilon::from_micros(EPSILON_MICROS),
                    min_batch: 100,
                    aggregators: refs,
                    deadline: self.now() + secs,
                },
            )
            .unwrap();
        self.settle();
        QueryId::of_tx(announce.parse::<TxId>().unwrap())
    }

    fn params(&self, query: QueryId) -> QueryParams {
        self.node
            .node
            .ask_blocking(move |n| {
                QueryParams::of(n.ledger().chain().access().query(&query).unwrap())
            })
            .unwrap()
    }

    fn held(&self, query: QueryId) -> Vec<Value> {
        self.aggregators
            .iter()
            .map(|(_, url)| self.get(format!("{url}/research/queries/{query}")).1)
            .collect()
    }

    fn snapshot(&self, query: QueryId) -> Snapshot {
        let (state_root, pending) = self
            .node
            .node
            .ask_blocking(|n| {
                (
                    n.ledger().chain().tip_state_root().to_string(),
                    n.ledger().pending(),
                )
            })
            .unwrap();
        Snapshot {
            state_root,
            pending,
            held: self.held(query),
        }
    }

    /// Runs `refused`, which must answer `status` and `code`, and checks nothing changed.
    fn refused(
        &self,
        query: QueryId,
        status: u16,
        code: &str,
        refused: impl FnOnce() -> (u16, Value),
    ) {
        self.settle();
        let before = self.snapshot(query);
        let (got, body) = refused();
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{body}"
        );
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(self.snapshot(query), before, "a refusal changed nothing");
    }
}

/// Hospital `h`'s reports: patient `i` has the condition when 3 divides `h + i`.
fn hospital_reports(params: &QueryParams, h: usize) -> (Vec<Report>, i128) {
    let mut truth = 0;
    let reports = (0..PATIENTS)
        .map(|i| {
            let has = (h + i).is_multiple_of(3);
            truth += i128::from(has);
            let mut nonce = [0; 16];
            nonce[0] = h as u8;
            nonce[1] = i as u8;
            nonce[15] = 0x5a;
            shard(
                params,
                &Measurement::Count(has),
                ReportNonce::from_bytes(nonce),
            )
            .unwrap()
        })
        .collect();
    (reports, truth)
}

#[test]
fn three_hospitals_two_aggregators_and_a_researcher_answer_a_count_query_over_http() {
    let c = Consortium::start();
    let query = c.announce(8);
    let params = c.params(query);
    let leader = c.aggregators[0].1.clone();
    let helper = json!({"helper": c.aggregators[1].1});
    // Before the deadline (8 s away) the leader refuses to aggregate.
    c.refused(query, 409, "too_early", || {
        c.emr(
            format!("{leader}/research/queries/{query}/aggregate"),
            &helper,
        )
    });

    // Each hospital commits its reports through its own node, then posts them to both
    // aggregators once they are in a block.
    let mut truth = 0;
    let mut batches = Vec::new();
    for (h, (_, url)) in c.hospitals.iter().enumerate() {
        let (reports, t) = hospital_reports(&params, h);
        truth += t;
        let batch = ReportBatch::new(query, &reports);
        let (status, body) = c.emr(format!("{url}/emr/research/commit"), &batch);
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["reports"], PATIENTS);
        batches.push(batch);
    }
    c.settle();
    let committed = c
        .node
        .node
        .ask_blocking(move |n| n.ledger().chain().access().query(&query).unwrap().reports)
        .unwrap();
    assert_eq!(committed, 3 * PATIENTS as u64);
    for batch in &batches {
        for (_, url) in &c.aggregators {
            let (status, body) = c.post(format!("{url}/research/reports"), batch);
            assert_eq!(status, 202, "{body}");
            assert_eq!(body["taken"], PATIENTS);
        }
    }

    // A replayed batch, a malformed body, a report the chain never saw: refused, nothing
    // changed. Committing the same reports again is refused by the chain.
    let hospital = c.hospitals[0].1.clone();
    c.refused(query, 409, "conflict", || {
        c.emr(format!("{hospital}/emr/research/commit"), &batches[0])
    });
    c.refused(query, 409, "report_replayed", || {
        c.post(format!("{leader}/research/reports"), &batches[1])
    });
    c.refused(query, 400, "malformed_report", || {
        c.post(
            format!("{leader}/research/reports"),
            &json!({"query": query.to_string(), "reports": ["00ff"]}),
        )
    });
    c.refused(query, 400, "malformed_request", || {
        c.post(
            format!("{leader}/research/reports"),
            &json!({"query": query.to_string(), "reports": "not a list"}),
        )
    });
    let stranger = shard(
        &params,
        &Measurement::Count(true),
        ReportNonce::from_bytes([0xee; 16]),
    )
    .unwrap();
    c.refused(query, 403, "not_committed", || {
        c.post(
            format!("{leader}/research/reports"),
            &ReportBatch::new(query, &[stranger]),
        )
    });
    // The helper takes verification only from the query's leader, the shares go out only
    // after aggregation, and a node without research keys is no aggregator.
    let helper_url = c.aggregators[1].1.clone();
    let forged = VerifyRequest {
        leader: c.aggregators[0].0.public(),
        session: "00".repeat(16),
        seq: 0,
        messages: vec![],
        signature: c.aggregators[1]
            .0
            .sign(b"not the verify message")
            .to_string(),
    };
    c.refused(query, 401, "bad_signature", || {
        c.post(
            format!("{helper_url}/research/queries/{query}/verify"),
            &forged,
        )
    });
    c.refused(query, 409, "not_aggregated", || {
        c.post(
            format!("{helper_url}/research/queries/{query}/share"),
            &ShareRequest::sign(&c.researcher, &c.node.chain_id, &query, c.now()),
        )
    });
    c.refused(query, 503, "research_off", || {
        c.get(format!("{}/research/key", c.hospitals[0].1))
    });
    for held in c.held(query) {
        assert_eq!(held["reports"], 3 * PATIENTS, "{held}");
        assert_eq!(held["aggregated"], false, "{held}");
    }

    // After the deadline the leader aggregates with the helper and both commit their shares
    // on chain.
    let deadline = c
        .node
        .node
        .ask_blocking(move |n| n.ledger().chain().access().query(&query).unwrap().deadline)
        .unwrap();
    while c.now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, agg) = c.emr(
        format!("{leader}/research/queries/{query}/aggregate"),
        &helper,
    );
    assert_eq!(status, 200, "{agg}");
    assert_eq!(agg["reports"], 3 * PATIENTS, "{agg}");
    assert_eq!(agg["excluded"], 0, "{agg}");
    c.settle();
    let on_chain = c
        .node
        .node
        .ask_blocking(move |n| n.ledger().chain().access().query(&query).unwrap().clone())
        .unwrap();
    assert_eq!(
        on_chain.shares[0].map(|(d, r)| (d.to_string(), r)),
        Some((
            agg["share"].as_str().unwrap().to_string(),
            3 * PATIENTS as u64
        ))
    );
    assert_eq!(
        on_chain.shares[1].map(|(d, r)| (d.to_string(), r)),
        Some((
            agg["helper_share"].as_str().unwrap().to_string(),
            3 * PATIENTS as u64
        ))
    );
    // Once released, never again.
    c.refused(query, 409, "already_aggregated", || {
        c.emr(
            format!("{leader}/research/queries/{query}/aggregate"),
            &helper,
        )
    });

    // The collector fetches both shares (signed by the researcher), checks each against the
    // chain, unshards and publishes the result's hash.
    let mut shares = Vec::new();
    for (i, (_, url)) in c.aggregators.iter().enumerate() {
        let stranger = Keypair::generate();
        let (status, body) = c.post(
            format!("{url}/research/queries/{query}/share"),
            &ShareRequest::sign(&stranger, &c.node.chain_id, &query, c.now()),
        );
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("not_the_researcher"))
        );
        let (status, body) = c.post(
            format!("{url}/research/queries/{query}/share"),
            &ShareRequest::sign(&c.researcher, &c.node.chain_id, &query, c.now()),
        );
        assert_eq!(status, 200, "{body}");
        let share =
            AggregateShare::decode(&hex_decode(body["share"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(Some(share.digest()), on_chain.shares[i].map(|(d, _)| d));
        shares.push(share);
    }
    let result = unshard(&params, &shares[0], &shares[1]).unwrap();
    assert_eq!(result.reports, 3 * PATIENTS as u64);
    let error = result.values[0] - truth;
    assert!(
        error.abs() <= NOISE_BOUND,
        "answer {} is {error} from the truth {truth}",
        result.values[0]
    );
    c.node.submit(&c.researcher, result.publish_op()).unwrap();
    c.settle();
    let published = c
        .node
        .node
        .ask_blocking(move |n| n.ledger().chain().access().query(&query).unwrap().result)
        .unwrap();
    assert_eq!(published, Some(result.digest()));
}
