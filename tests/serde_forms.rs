//! Values a service returns, in human-readable formats: identifiers, keys and signatures as
//! lower-case hex strings; decisions, requests, readers, summaries and audit entries round-trip
//! through JSON. The canonical (binary) encoding is untouched: 32 raw bytes per identifier.

mod common;

use common::{record, register_op, Net, DAY, T0};
use medledger::access::{
    AccessOp, AccessRequest, Action, ActionSet, AuditEntry, Basis, Category, Decision, DenyReason,
    GrantId, GrantTerms, Period, PointerId, PurposeSet, Reader, RelationshipId, Role, Scope,
    SummaryItem, Viewer,
};
use medledger::hash::{content_hash, AccountId, BlockHash, Digest, StateRoot, TxId};
use medledger::purpose::PurposeOfUse;
use medledger::tx::{Keypair, PublicKey, Signature};
use medledger::{Payload, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug>(
    v: &T,
) -> String {
    let json = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, v, "{json}");
    json
}

#[test]
fn identifiers_are_hex_strings_in_json() {
    let id = BlockHash::from_bytes([0xab; 32]);
    assert_eq!(json_round_trip(&id), format!("\"{}\"", "ab".repeat(32)));
    json_round_trip(&TxId::from_bytes([1; 32]));
    json_round_trip(&StateRoot::from_bytes([2; 32]));
    json_round_trip(&GrantId::from_bytes([3; 32]));
    let key = Keypair::from_seed(&[4; 32]).public();
    assert_eq!(json_round_trip(&key), format!("\"{key}\""));
    let sig = Keypair::from_seed(&[4; 32]).sign(b"m");
    let json = json_round_trip(&sig);
    assert_eq!(json.len(), 2 + 128);
    assert_eq!(json, format!("\"{sig}\""));
    // Upper case is read too; anything else is refused with a reason.
    let upper = format!("\"{}\"", "AB".repeat(32));
    assert_eq!(serde_json::from_str::<BlockHash>(&upper).unwrap(), id);
    let err = serde_json::from_str::<BlockHash>("\"abc\"").unwrap_err();
    assert!(err.to_string().contains("expected 64 hex digits"), "{err}");
    assert!(serde_json::from_str::<Digest>(&format!("\"{}\"", "zz".repeat(32))).is_err());
    assert!(serde_json::from_str::<AccountId>(&format!("{:?}", [0u8; 32])).is_err());
    assert!(serde_json::from_str::<Signature>(&format!("\"{}\"", "ab".repeat(32))).is_err());
}

#[test]
fn the_binary_encoding_is_unchanged() {
    let id = TxId::from_bytes([7; 32]);
    assert_eq!(postcard::to_allocvec(&id).unwrap(), vec![7; 32]);
    let sig = Signature::from_bytes([9; 64]);
    assert_eq!(postcard::to_allocvec(&sig).unwrap(), vec![9; 64]);
    assert_eq!(postcard::from_bytes::<Signature>(&[9; 64]).unwrap(), sig);
    let key = PublicKey::from_bytes([5; 32]);
    assert_eq!(postcard::from_bytes::<PublicKey>(&[5; 32]).unwrap(), key);
    // A transaction: the same bytes decode, and JSON carries the same transaction.
    let k = Keypair::from_seed(&[1; 32]);
    let tx = Transaction::sign(
        &k,
        medledger::hash::ChainId::from_bytes([2; 32]),
        3,
        Payload::Data {
            record: content_hash(b"lab"),
        },
    );
    assert_eq!(Transaction::decode(&tx.encode()).unwrap(), tx);
    let json = json_round_trip(&tx);
    assert!(
        json.contains(&format!("\"signer\":\"{}\"", k.public())),
        "{json}"
    );
    assert!(json.contains(&format!("\"{}\"", tx.signature)), "{json}");
    let back: Transaction = serde_json::from_str(&json).unwrap();
    assert_eq!(back.id(), tx.id());
}

#[test]
fn decisions_requests_readers_summaries_and_audit_entries_round_trip() {
    let authority = Keypair::from_seed(&[10; 32]);
    let hospital = Keypair::from_seed(&[11; 32]);
    let patient = Keypair::from_seed(&[12; 32]);
    let doctor = Keypair::from_seed(&[13; 32]);
    let mut net = Net::new(&[("Authority", &authority)]);
    net.run(vec![
        (
            &authority,
            AccessOp::CertifyProvider {
                provider: hospital.account(),
                emergency: false,
            },
        ),
        (
            &hospital,
            register_op(&hospital, Role::Provider, "St Mary's"),
        ),
        (&doctor, register_op(&doctor, Role::Provider, "Dr Lee")),
        (&patient, register_op(&patient, Role::Patient, "NHS-9")),
        (
            &hospital,
            AccessOp::CreateRelationship {
                patient: patient.account(),
            },
        ),
    ]);
    let rel = RelationshipId::of(patient.account(), hospital.account());
    let add = net.sign(
        &hospital,
        AccessOp::AddPointer {
            relationship: rel,
            record: record(1, Category::Laboratory),
            replaces: None,
        },
    );
    let pointer = PointerId::of_tx(add.id());
    net.mine(60, vec![add]);
    let terms = GrantTerms::new(
        rel,
        Viewer::Account(doctor.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[PurposeOfUse::Treatment]),
        Period::lasting(T0, 30 * DAY),
    );
    net.run(vec![
        (&patient, AccessOp::AcceptRelationship { relationship: rel }),
        (&patient, AccessOp::Grant { terms, under: None }),
    ]);
    let access = net.chain.access();
    let request = AccessRequest {
        viewer: doctor.account(),
        patient: patient.account(),
        pointer,
        action: Action::Read,
        purpose: PurposeOfUse::Treatment,
        time: net.now,
    };
    let json = json_round_trip(&request);
    assert!(
        json.contains(&format!("\"viewer\":\"{}\"", doctor.account())),
        "{json}"
    );
    let permit = access.decide(&request);
    assert!(matches!(permit, Decision::Permit(Basis::Grant(_))));
    json_round_trip(&permit);
    json_round_trip(&Decision::Deny(DenyReason::NoGrant));
    let readers: Vec<Reader> = access.who_can_read(&pointer, net.now);
    assert_eq!(readers.len(), 3);
    json_round_trip(&readers);
    let summary: Vec<SummaryItem> = access.summary(&patient.account());
    assert_eq!(summary.len(), 1);
    let json = json_round_trip(&summary);
    assert!(json.contains(&format!("\"{rel}\"")), "{json}");
    let trail: Vec<AuditEntry> = access
        .audit_trail(&patient.account())
        .into_iter()
        .cloned()
        .collect();
    assert!(trail.len() >= 4);
    json_round_trip(&trail);
}
