//! The web API over HTTP on 127.0.0.1, against a one-validator consortium running in this
//! process: each route's success, and each refusal (bad signature, stale or replayed request,
//! someone else's patient, malformed or oversized body) with a clear JSON error and nothing
//! changed on chain or in the pool.

use std::time::Duration;

use medledger::access::{AccessOp, Action, RelationshipId, RelationshipStatus, Role};
use medledger::purpose::PurposeOfUse;
use medledger::tx::Keypair;
use medledger::Payload;
use medledger_node::config::{hex_decode, hex_encode};
use medledger_node::web::gate::{RequestFields, SignedRequest};
use medledger_node::web::local::{DemoCast, LocalNode};
use reqwest::blocking::Client;
use serde_json::{json, Value};

struct Api {
    node: LocalNode,
    cast: DemoCast,
    http: Client,
    base: String,
    _dir: tempfile::TempDir,
}

/// What must not change when a request is refused: the state root and the empty pool.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    state_root: String,
    pending: usize,
}

impl Api {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = LocalNode::start(dir.path(), "127.0.0.1:0".parse().unwrap(), 50).unwrap();
        let cast = node.seed_demo().unwrap();
        let base = format!("http://{}", node.http);
        Api {
            node,
            cast,
            http: Client::new(),
            base,
            _dir: dir,
        }
    }

    fn answer(response: reqwest::blocking::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
        (status, json)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        Self::answer(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .unwrap(),
        )
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        Self::answer(
            self.http
                .post(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .unwrap(),
        )
    }

    /// An EMR call with the node's token.
    fn emr(&self, path: &str, body: Value) -> (u16, Value) {
        Self::answer(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.node.token)
                .json(&body)
                .send()
                .unwrap(),
        )
    }

    fn snapshot(&self) -> Snapshot {
        self.node
            .node
            .ask_blocking(|n| Snapshot {
                state_root: n.ledger().chain().tip_state_root().to_string(),
                pending: n.ledger().pending(),
            })
            .unwrap()
    }

    /// Runs `refused`, which must be refused with `status` and `code`, and checks nothing
    /// changed.
    fn refused(&self, status: u16, code: &str, refused: impl FnOnce() -> (u16, Value)) -> Value {
        self.settle();
        let before = self.snapshot();
        let (got, body) = refused();
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{body}"
        );
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(self.snapshot(), before, "a refusal changed nothing");
        body
    }

    fn settle(&self) {
        self.node.settle(Duration::from_secs(30)).unwrap();
    }

    fn template(&self, signer: &Keypair, op: Value) -> (u16, Value) {
        self.post(
            "/tx/template",
            json!({"signer": signer.public().to_string(), "op": op}),
        )
    }

    /// The template of `op`, signed by `key` (which may not be the template's signer).
    fn signed(&self, signer: &Keypair, key: &Keypair, op: Value) -> Value {
        let (status, t) = self.template(signer, op);
        assert_eq!(status, 200, "{t}");
        let message = hex_decode(t["signing_message"].as_str().unwrap()).unwrap();
        json!({"unsigned_tx": t["unsigned_tx"], "signature": key.sign(&message).to_string()})
    }

    /// Signs `op` as `key` from a template, submits it and waits for its block.
    fn act(&self, key: &Keypair, op: Value) -> Value {
        let (status, body) = self.post("/tx", self.signed(key, key, op));
        assert_eq!(status, 202, "{body}");
        self.settle();
        body
    }

    fn accept(&self) {
        self.act(
            &self.cast.patient,
            json!({"op": "accept_relationship", "relationship": self.cast.relationship.to_string()}),
        );
    }

    /// The patient grants the specialist 30 days of reading for treatment; returns the grant.
    fn grant(&self) -> String {
        let body = self.act(
            &self.cast.patient,
            json!({
                "op": "grant",
                "relationship": self.cast.relationship.to_string(),
                "viewer": self.cast.specialist.account().to_string(),
                "actions": ["read"],
                "purposes": ["TREAT"],
                "period": {"days": 30},
            }),
        );
        let created = body["created"][0].as_str().unwrap();
        created.strip_prefix("grant ").unwrap().to_string()
    }

    fn patient(&self) -> String {
        self.cast.patient.account().to_string()
    }

    fn now(&self) -> u64 {
        self.get("/status").1["now"].as_u64().unwrap()
    }

    fn request(
        &self,
        viewer: &Keypair,
        purpose: PurposeOfUse,
        nonce: u8,
        at: u64,
    ) -> SignedRequest {
        let fields = RequestFields {
            viewer: viewer.public(),
            patient: self.cast.patient.account(),
            pointer: self.cast.record,
            action: Action::Read,
            purpose,
            issued_at: at,
            nonce: [nonce; 16],
        };
        SignedRequest::sign(viewer, &self.node.chain_id, &fields)
    }

    fn ask_gate(&self, request: &SignedRequest) -> (u16, Value) {
        self.post("/gate/access", serde_json::to_value(request).unwrap())
    }

    fn receipts(&self) -> usize {
        let patient = self.cast.patient.account();
        self.node
            .node
            .ask_blocking(move |n| n.ledger().chain().access().access_receipts(&patient).len())
            .unwrap()
    }
}

#[test]
fn status_and_the_openapi_document_describe_every_route() {
    let api = Api::start();
    let (status, body) = api.get("/status");
    assert_eq!(status, 200);
    assert_eq!(body["provider"], api.node.provider.account().to_string());
    assert_eq!(body["chain_id"], api.node.chain_id.to_string());
    let (status, doc) = api.get("/openapi.json");
    assert_eq!(status, 200);
    for path in [
        "/status",
        "/tx/template",
        "/tx",
        "/tx/{id}",
        "/emr/register",
        "/emr/patients",
        "/emr/relationships",
        "/emr/records",
        "/emr/records/{id}/versions",
        "/emr/relationships/{id}/terminate",
        "/gate/access",
        "/gate/receipt",
        "/patients/{account}/relationships",
        "/patients/{account}/records",
        "/patients/{account}/grants",
        "/patients/{account}/delegations",
        "/patients/{account}/audit",
        "/patients/{account}/break-glass",
        "/records/{pointer}/readers",
        "/grants/{grant}/revocation-impact",
        "/delegations/{delegation}/revocation-impact",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let (status, body) = api.get("/no/such/route");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let portal = api
        .http
        .get(format!("{}/portal", api.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(portal.contains("Patient portal"));
}

#[test]
fn emr_routes_need_the_nodes_token() {
    let api = Api::start();
    let body = json!({"patient": api.patient()});
    let url = format!("{}/emr/relationships", api.base);
    api.refused(401, "missing_token", || {
        Api::answer(api.http.post(&url).json(&body).send().unwrap())
    });
    api.refused(401, "bad_token", || {
        Api::answer(
            api.http
                .post(&url)
                .bearer_auth("0123456789abcdef0123456789abcdef")
                .json(&body)
                .send()
                .unwrap(),
        )
    });
}

#[test]
fn the_emr_anchors_records_and_new_versions_and_terminates() {
    let api = Api::start();
    api.accept();
    let record = |query: &str| {
        json!({
            "relationship": api.cast.relationship.to_string(),
            "query": query,
            "content_hash": medledger::hash::content_hash(query.as_bytes()).to_string(),
            "category": "imaging",
            "data_start": 1_700_000_000u64,
            "data_end": 1_700_086_400u64,
        })
    };
    let (status, body) = api.emr("/emr/records", record("SELECT * FROM imaging WHERE id = 1"));
    assert_eq!(status, 202, "{body}");
    let pointer = body["created"][0]
        .as_str()
        .unwrap()
        .strip_prefix("record pointer ")
        .unwrap()
        .to_string();
    api.settle();
    let (status, body) = api.emr(
        &format!("/emr/records/{pointer}/versions"),
        record("SELECT * FROM imaging WHERE id = 1 AND version = 2"),
    );
    assert_eq!(status, 202, "{body}");
    api.settle();
    let (_, records) = api.get(&format!("/patients/{}/records", api.patient()));
    let records = records.as_array().unwrap();
    assert_eq!(
        records.len(),
        3,
        "the seeded lab record, the image and its new version"
    );
    assert!(records
        .iter()
        .any(|r| r["origin"] == pointer.as_str() && r["pointer"] != pointer.as_str()));
    // A new version of an unknown record: 404, nothing changed.
    api.refused(404, "not_found", || {
        api.emr(
            &format!("/emr/records/{}/versions", "ab".repeat(32)),
            record("x"),
        )
    });
    // An unknown category: 400.
    let mut bad = record("y");
    bad["category"] = "astrology".into();
    api.refused(400, "malformed_request", || {
        api.emr("/emr/records", bad.clone())
    });
    let (status, body) = api.emr(
        &format!("/emr/relationships/{}/terminate", api.cast.relationship),
        json!({"reason": "patient moved away"}),
    );
    assert_eq!(status, 202, "{body}");
    api.settle();
    let (_, rels) = api.get(&format!("/patients/{}/relationships", api.patient()));
    assert_eq!(rels[0]["status"], "terminated");
}

#[test]
fn the_emr_relays_a_patients_own_registration_and_opens_a_relationship() {
    let api = Api::start();
    let newcomer = Keypair::generate();
    let registration = medledger::Transaction::sign(
        &newcomer,
        api.node.chain_id,
        0,
        Payload::Access(AccessOp::register_patient(
            newcomer.account(),
            "NHS-111-222-3333",
            &[9; 32],
        )),
    );
    let (status, body) = api.emr(
        "/emr/patients",
        json!({"tx": hex_encode(&registration.encode())}),
    );
    assert_eq!(status, 202, "{body}");
    api.settle();
    let (status, body) = api.emr(
        "/emr/relationships",
        json!({"patient": newcomer.account().to_string()}),
    );
    assert_eq!(status, 202, "{body}");
    api.settle();
    let (_, pending) = api.get(&format!(
        "/patients/{}/relationships?status=pending",
        newcomer.account()
    ));
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["counterparty_name"], "St Mary's Hospital");
    // Anything but a patient's registration is refused.
    let other = medledger::Transaction::sign(
        &newcomer,
        api.node.chain_id,
        1,
        Payload::Access(AccessOp::register_organisation(Role::Provider, "Not a patient").unwrap()),
    );
    api.refused(400, "malformed_request", || {
        api.emr("/emr/patients", json!({"tx": hex_encode(&other.encode())}))
    });
    // A bad status filter: 400.
    api.refused(400, "malformed_request", || {
        api.get(&format!(
            "/patients/{}/relationships?status=happy",
            newcomer.account()
        ))
    });
}

#[test]
fn the_emr_cannot_touch_another_hospitals_patient() {
    let api = Api::start();
    // Another hospital, certified, opens its own relationship with the patient.
    let other = Keypair::generate();
    api.node
        .submit(
            &api.node.authority,
            AccessOp::CertifyProvider {
                provider: other.account(),
                emergency: false,
            },
        )
        .unwrap();
    api.node
        .submit(
            &other,
            AccessOp::register_organisation(Role::Provider, "Other Hospital").unwrap(),
        )
        .unwrap();
    api.node
        .submit(
            &other,
            AccessOp::CreateRelationship {
                patient: api.cast.patient.account(),
            },
        )
        .unwrap();
    api.settle();
    let theirs = RelationshipId::of(api.cast.patient.account(), other.account());
    let body = api.refused(403, "not_authorised", || {
        api.emr(
            "/emr/records",
            json!({
                "relationship": theirs.to_string(),
                "query": "SELECT 1",
                "content_hash": "00".repeat(32),
                "category": "laboratory",
                "data_start": 1, "data_end": 2,
            }),
        )
    });
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not the relationship's provider"));
    api.refused(403, "not_authorised", || {
        api.emr(
            &format!("/emr/relationships/{theirs}/terminate"),
            json!({"reason": "not ours"}),
        )
    });
}

#[test]
fn malformed_and_oversized_bodies_are_refused_with_json_errors() {
    let api = Api::start();
    let url = format!("{}/tx", api.base);
    api.refused(400, "malformed_request", || {
        Api::answer(
            api.http
                .post(&url)
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .unwrap(),
        )
    });
    api.refused(415, "not_json", || {
        Api::answer(api.http.post(&url).body("{}").send().unwrap())
    });
    api.refused(413, "body_too_large", || {
        let big = json!({"tx": "00".repeat(40 * 1024)});
        Api::answer(api.http.post(&url).json(&big).send().unwrap())
    });
    api.refused(400, "malformed_request", || {
        api.post("/tx", json!({"tx": "00", "surprise": 1}))
    });
    api.refused(400, "malformed_request", || {
        api.post("/tx", json!({"tx": "0g"}))
    });
    api.refused(400, "malformed_request", || api.post("/tx", json!({})));
    api.refused(400, "malformed_request", || {
        api.post(
            "/tx/template",
            json!({"signer": "abc", "op": {"op": "accept_relationship"}}),
        )
    });
    api.refused(400, "malformed_request", || {
        api.template(&api.cast.patient, json!({"op": "fly_to_the_moon"}))
    });
    api.refused(400, "malformed_request", || {
        api.get("/patients/not-an-account/audit")
    });
    api.refused(400, "malformed_request", || {
        api.get(&format!("/patients/{}/audit?from=minus-one", api.patient()))
    });
    api.refused(400, "malformed_request", || {
        api.post("/gate/access", json!({"viewer": "x"}))
    });
    let (status, body) = api.get(&format!("/tx/{}", "00".repeat(32)));
    assert_eq!((status, body["status"].as_str()), (200, Some("unknown")));
}

#[test]
fn patient_changes_are_transactions_the_patient_signs() {
    let api = Api::start();
    // Accept: template, signed by the patient in the client, submitted.
    let (_, pending) = api.get(&format!(
        "/patients/{}/relationships?status=pending",
        api.patient()
    ));
    assert_eq!(pending.as_array().unwrap().len(), 1);
    api.accept();
    let (_, pending) = api.get(&format!(
        "/patients/{}/relationships?status=pending",
        api.patient()
    ));
    assert!(pending.as_array().unwrap().is_empty());
    let grant = api.grant();
    let (_, grants) = api.get(&format!("/patients/{}/grants", api.patient()));
    assert_eq!(grants[0]["grant"], grant.as_str());
    assert_eq!(grants[0]["purposes"], json!(["TREAT"]));
    assert_eq!(grants[0]["actions"], json!(["read"]));
    assert_eq!(
        grants[0]["end"].as_u64().unwrap() - grants[0]["start"].as_u64().unwrap(),
        30 * 86_400
    );
    let specialist = api.cast.specialist.account().to_string();
    let (_, readers) = api.get(&format!("/records/{}/readers", api.cast.record));
    assert!(readers
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["viewer"] == specialist.as_str() && r["purposes"] == json!(["TREAT"])));
    // The dry run of revoking it names what the specialist would lose, and changes nothing.
    let before = api.snapshot();
    let (status, losses) = api.get(&format!("/grants/{grant}/revocation-impact"));
    assert_eq!(status, 200);
    assert_eq!(
        losses,
        json!([{"viewer": specialist, "pointer": api.cast.record.to_string(), "action": "read", "purpose": "TREAT"}])
    );
    assert_eq!(api.snapshot(), before);
    api.act(
        &api.cast.patient,
        json!({"op": "revoke_grant", "grant": grant, "reason": "second opinion done"}),
    );
    let (_, readers) = api.get(&format!("/records/{}/readers", api.cast.record));
    assert!(!readers
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["viewer"] == specialist.as_str()));
    let (_, audit) = api.get(&format!("/patients/{}/audit", api.patient()));
    let texts: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(texts.iter().any(|t| t.contains("revoked")), "{texts:?}");
    // Paging: from the last entry on, one entry.
    let (_, last) = api.get(&format!(
        "/patients/{}/audit?from={}",
        api.patient(),
        texts.len() - 1
    ));
    assert_eq!(last.as_array().unwrap().len(), 1);
    // The library's own JSON form of an operation works too.
    let (status, t) = api.template(
        &api.cast.patient,
        json!({"op": "access", "access": {"CreateGroup": {"label": "care team"}}}),
    );
    assert_eq!(status, 200, "{t}");
}

#[test]
fn a_bad_signature_or_a_replay_changes_nothing() {
    let api = Api::start();
    let op =
        json!({"op": "accept_relationship", "relationship": api.cast.relationship.to_string()});
    // Signed by the specialist for the patient's template.
    let forged = api.signed(&api.cast.patient, &api.cast.specialist, op.clone());
    api.refused(401, "bad_signature", || api.post("/tx", forged.clone()));
    // A garbage signature.
    let mut garbage = forged.clone();
    garbage["signature"] = "00".repeat(64).into();
    api.refused(401, "bad_signature", || api.post("/tx", garbage.clone()));
    // The real one, twice: the second is a replay.
    let real = api.signed(&api.cast.patient, &api.cast.patient, op);
    let (status, body) = api.post("/tx", real.clone());
    assert_eq!(status, 202, "{body}");
    api.settle();
    api.refused(409, "duplicate", || api.post("/tx", real.clone()));
}

#[test]
fn nobody_changes_someone_elses_patient() {
    let api = Api::start();
    let op =
        json!({"op": "accept_relationship", "relationship": api.cast.relationship.to_string()});
    // The specialist asks for a template accepting the patient's relationship: refused.
    let body = api.refused(403, "not_authorised", || {
        api.template(&api.cast.specialist, op.clone())
    });
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not the patient"));
    // Signed and submitted anyway (built with the library): refused the same way.
    let tx = medledger::Transaction::sign(
        &api.cast.specialist,
        api.node.chain_id,
        1,
        Payload::Access(AccessOp::AcceptRelationship {
            relationship: api.cast.relationship,
        }),
    );
    api.refused(403, "not_authorised", || {
        api.post("/tx", json!({"tx": hex_encode(&tx.encode())}))
    });
    let status = api
        .node
        .node
        .ask_blocking({
            let rel = api.cast.relationship;
            move |n| {
                n.ledger()
                    .chain()
                    .access()
                    .relationship(&rel)
                    .map(|r| r.status())
            }
        })
        .unwrap();
    assert_eq!(status, Some(RelationshipStatus::Pending));
}

#[test]
fn the_gate_permits_a_granted_read_and_records_its_receipt() {
    let api = Api::start();
    api.accept();
    let grant = api.grant();
    let request = api.request(&api.cast.specialist, PurposeOfUse::Treatment, 1, api.now());
    let (status, decision) = api.ask_gate(&request);
    assert_eq!(status, 200, "{decision}");
    assert_eq!(decision["decision"], "permit");
    assert_eq!(decision["basis"], format!("grant {grant}"));
    let receipt = &decision["receipt"];
    let message = hex_decode(receipt["signing_message"].as_str().unwrap()).unwrap();
    // A receipt for another nonce, or for another read, is refused.
    let signature = api.cast.specialist.sign(&message).to_string();
    api.refused(404, "not_found", || {
        api.post(
            "/gate/receipt",
            json!({"nonce": hex_encode(&[7; 16]), "unsigned_tx": receipt["unsigned_tx"], "signature": signature}),
        )
    });
    assert_eq!(api.receipts(), 0);
    let (status, body) = api.post(
        "/gate/receipt",
        json!({"nonce": hex_encode(&[1; 16]), "unsigned_tx": receipt["unsigned_tx"], "signature": signature}),
    );
    assert_eq!(status, 202, "{body}");
    api.settle();
    assert_eq!(api.receipts(), 1, "the read is on chain");
    let (_, audit) = api.get(&format!("/patients/{}/audit", api.patient()));
    let last = audit.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["access"], true, "{last}");
    assert_eq!(last["actor"], api.cast.specialist.account().to_string());
    // The same receipt again: its permit was used.
    api.refused(404, "not_found", || {
        api.post(
            "/gate/receipt",
            json!({"nonce": hex_encode(&[1; 16]), "unsigned_tx": receipt["unsigned_tx"], "signature": signature}),
        )
    });
}

#[test]
fn the_gate_refuses_bad_signatures_stale_and_replayed_requests() {
    let api = Api::start();
    api.accept();
    api.grant();
    let now = api.now();
    // Signed by another key than the viewer's.
    let mut forged = api.request(&api.cast.specialist, PurposeOfUse::Treatment, 1, now);
    forged.signature = api
        .request(&api.cast.patient, PurposeOfUse::Treatment, 1, now)
        .signature;
    api.refused(401, "bad_signature", || api.ask_gate(&forged));
    // A field changed after signing.
    let mut changed = api.request(&api.cast.specialist, PurposeOfUse::Treatment, 2, now);
    changed.purpose = "HRESCH".into();
    api.refused(401, "bad_signature", || api.ask_gate(&changed));
    // An hour old, and an hour ahead.
    let stale = api.request(&api.cast.specialist, PurposeOfUse::Treatment, 3, now - 3600);
    api.refused(401, "stale_request", || api.ask_gate(&stale));
    let ahead = api.request(&api.cast.specialist, PurposeOfUse::Treatment, 4, now + 3600);
    api.refused(401, "stale_request", || api.ask_gate(&ahead));
    // Fresh: answered once; replayed: refused.
    let fresh = api.request(&api.cast.specialist, PurposeOfUse::Treatment, 5, now);
    let (status, decision) = api.ask_gate(&fresh);
    assert_eq!(
        (status, decision["decision"].as_str()),
        (200, Some("permit"))
    );
    api.refused(409, "replayed_request", || api.ask_gate(&fresh));
    assert_eq!(
        api.receipts(),
        0,
        "no receipt without the viewer's signature"
    );
}

#[test]
fn the_gate_denies_with_the_reason() {
    let api = Api::start();
    api.accept();
    api.grant();
    // Research is not granted.
    let research = api.request(&api.cast.specialist, PurposeOfUse::Research, 1, api.now());
    let (status, decision) = api.ask_gate(&research);
    assert_eq!(status, 200);
    assert_eq!(decision["decision"], "deny");
    assert!(decision["reason"]
        .as_str()
        .unwrap()
        .contains("does not allow purpose HRESCH"));
    assert!(decision["receipt"].is_null());
    // A stranger with no grant.
    let stranger = Keypair::generate();
    let (_, decision) =
        api.ask_gate(&api.request(&stranger, PurposeOfUse::Treatment, 1, api.now()));
    assert_eq!(decision["decision"], "deny");
    assert_eq!(decision["reason"], "no grant");
}

#[test]
fn delegations_and_break_glass_reviews_are_the_patients() {
    let api = Api::start();
    api.accept();
    let guardian = &api.cast.specialist;
    let body = api.act(
        &api.cast.patient,
        json!({
            "op": "delegate",
            "delegate": guardian.account().to_string(),
            "actions": ["read"],
            "purposes": ["TREAT", "HPAYMT"],
            "period": {"days": 365},
        }),
    );
    let delegation = body["created"][0]
        .as_str()
        .unwrap()
        .strip_prefix("delegation ")
        .unwrap()
        .to_string();
    let (_, list) = api.get(&format!("/patients/{}/delegations", api.patient()));
    assert_eq!(list[0]["delegation"], delegation.as_str());
    assert_eq!(list[0]["purposes"], json!(["TREAT", "HPAYMT"]));
    let (status, losses) = api.get(&format!("/delegations/{delegation}/revocation-impact"));
    assert_eq!((status, losses), (200, json!([])));
    api.refused(404, "not_found", || {
        api.get(&format!(
            "/delegations/{}/revocation-impact",
            "cd".repeat(32)
        ))
    });
    // The hospital (emergency-certified) breaks the glass; the patient reviews it.
    api.node
        .submit(
            &api.node.provider,
            AccessOp::OpenBreakGlass {
                patient: api.cast.patient.account(),
                reason: "unconscious in the emergency room".try_into().unwrap(),
                duration_secs: 3600,
            },
        )
        .unwrap();
    api.settle();
    let (_, sessions) = api.get(&format!("/patients/{}/break-glass", api.patient()));
    assert_eq!(sessions[0]["awaiting_review"], true, "{sessions}");
    let session = sessions[0]["session"].as_str().unwrap().to_string();
    // The guardian may not review it for the patient.
    api.refused(403, "not_authorised", || {
        api.template(
            guardian,
            json!({"op": "review_break_glass", "session": session, "outcome": "disputed"}),
        )
    });
    api.act(
        &api.cast.patient,
        json!({"op": "review_break_glass", "session": session, "outcome": "acknowledged", "note": "thank you"}),
    );
    let (_, sessions) = api.get(&format!("/patients/{}/break-glass", api.patient()));
    assert_eq!(sessions[0]["awaiting_review"], false);
    assert_eq!(sessions[0]["review"], "acknowledged");
    api.act(
        &api.cast.patient,
        json!({"op": "revoke_delegation", "delegation": delegation, "reason": "no longer needed"}),
    );
    let (_, list) = api.get(&format!("/patients/{}/delegations", api.patient()));
    assert!(list[0]["revoked"].is_object());
}

#[test]
fn a_patient_refuses_a_relationship() {
    let api = Api::start();
    api.act(
        &api.cast.patient,
        json!({"op": "reject_relationship", "relationship": api.cast.relationship.to_string(), "reason": "I never went there"}),
    );
    let (_, rels) = api.get(&format!("/patients/{}/relationships", api.patient()));
    assert_eq!(rels[0]["status"], "rejected");
    // Refused once, it cannot be accepted any more: 409, nothing changed.
    api.refused(409, "conflict", || {
        api.template(
            &api.cast.patient,
            json!({"op": "accept_relationship", "relationship": api.cast.relationship.to_string()}),
        )
    });
}

#[test]
fn a_grant_s_deny_provision_is_enforced_at_the_gate() {
    let api = Api::start();
    api.accept();
    let body = api.act(
        &api.cast.patient,
        json!({
            "op": "grant",
            "relationship": api.cast.relationship.to_string(),
            "viewer": api.cast.specialist.account().to_string(),
            "actions": ["read"],
            "purposes": ["TREAT"],
            "period": {"days": 30},
            "provisions": [{"kind": "deny", "categories": ["laboratory"]}],
        }),
    );
    let grant = body["created"][0].as_str().unwrap().to_string();
    let (_, grants) = api.get(&format!("/patients/{}/grants", api.patient()));
    assert_eq!(grants[0]["provisions"], 1);
    let request = api.request(&api.cast.specialist, PurposeOfUse::Treatment, 1, api.now());
    let (status, decision) = api.ask_gate(&request);
    assert_eq!(status, 200);
    assert_eq!(decision["decision"], "deny", "{decision}");
    assert_eq!(
        decision["reason"],
        format!("denied by provision 0 of {grant}"),
        "{decision}"
    );
    // A provision of an unknown kind is malformed: 400, nothing changed.
    api.refused(400, "malformed_request", || {
        api.template(
            &api.cast.patient,
            json!({
                "op": "grant",
                "relationship": api.cast.relationship.to_string(),
                "viewer": api.cast.specialist.account().to_string(),
                "actions": ["read"], "purposes": ["TREAT"], "period": {"days": 1},
                "provisions": [{"kind": "maybe"}],
            }),
        )
    });
}

#[test]
fn fhir_search_gives_the_patients_consents_and_audit_events() {
    let api = Api::start();
    api.accept();
    let patient = api.patient();
    let (status, empty) = api.get(&format!("/fhir/Consent?patient={patient}"));
    assert_eq!(status, 200, "{empty}");
    assert_eq!(
        (empty["resourceType"].as_str(), empty["total"].as_u64()),
        (Some("Bundle"), Some(0))
    );
    let grant = api.grant();
    // The grant as an active R5 Consent, naming the grant and the specialist.
    let (status, bundle) = api.get(&format!("/fhir/Consent?patient={patient}"));
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(
        (bundle["type"].as_str(), bundle["total"].as_u64()),
        (Some("searchset"), Some(1))
    );
    let consent = &bundle["entry"][0]["resource"];
    assert_eq!(consent["resourceType"], "Consent", "{consent}");
    assert_eq!(consent["status"], "active", "{consent}");
    let text = consent.to_string();
    assert!(
        text.contains(&grant),
        "the Consent names grant {grant}: {text}"
    );
    assert!(
        text.contains(&api.cast.specialist.account().to_string()),
        "{text}"
    );
    assert!(text.contains("TREAT"), "{text}");
    // A permitted read, recorded, is an AuditEvent.
    let request = api.request(&api.cast.specialist, PurposeOfUse::Treatment, 3, api.now());
    let (_, decision) = api.ask_gate(&request);
    let receipt = &decision["receipt"];
    let message = hex_decode(receipt["signing_message"].as_str().unwrap()).unwrap();
    let (status, body) = api.post(
        "/gate/receipt",
        json!({"nonce": hex_encode(&[3; 16]), "unsigned_tx": receipt["unsigned_tx"],
               "signature": api.cast.specialist.sign(&message).to_string()}),
    );
    assert_eq!(status, 202, "{body}");
    api.settle();
    let (status, events) = api.get(&format!("/fhir/AuditEvent?patient={patient}"));
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["total"].as_u64(), Some(1), "{events}");
    let event = &events["entry"][0]["resource"];
    assert_eq!(event["resourceType"], "AuditEvent", "{event}");
    assert!(
        event
            .to_string()
            .contains(&api.cast.specialist.account().to_string()),
        "{event}"
    );
    // Refusals: a patient that is not an account id, no patient at all, an unknown parameter.
    for query in ["patient=nobody", "", &format!("patient={patient}&_count=5")] {
        let (status, body) = api.get(&format!("/fhir/Consent?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{body}"
        );
    }
}
