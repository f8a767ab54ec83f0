//! The MedRec workflow, end to end, on the embedded default (in-memory store, Proof-of-Work at a
//! trivial target): a health authority certifies providers; a hospital adds a record and opens
//! a relationship; the patient is notified, accepts and grants a specialist access; reads are
//! checked and leave receipts on chain; a researcher is denied; grants expire and are revoked;
//! an emergency doctor breaks the glass; the patient reviews the audit trail; a third party
//! checks a grant against a block header alone.
//!
//! Run with `cargo run --release --example medrec`.

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;

use medledger::access::{
    AccessEvent, AccessOp, Action, ActionSet, Basis, BreakGlassId, Category, CategorySet, GrantId,
    GrantProof, GrantTerms, Identity, IdentityCommitment, Period, PointerId, Provision,
    ProvisionKind, PurposeSet, RecordPointer, RelationshipId, ReviewOutcome, Role, Scope, Viewer,
};
use medledger::chain::{Chain, ChainBuilder, ManualClock};
use medledger::hash::AccountId;
use medledger::pow::ProofOfWork;
use medledger::purpose::PurposeOfUse;
use medledger::state::{Event, StateError};
use medledger::tx::{Keypair, Payload, Transaction};

const DAY: u64 = 86_400;
/// 1 January 2026, 00:00 UTC.
const GENESIS_TIME: u64 = 1_767_225_600;

/// The chain, its clock, and the time of the next block.
struct Ledger {
    chain: Chain<ProofOfWork>,
    clock: Arc<ManualClock>,
    now: u64,
}

impl Ledger {
    /// Signs each operation with its actor's next nonce (counting earlier ones in the batch).
    fn sign(&self, ops: Vec<(&Keypair, AccessOp)>) -> Vec<Transaction> {
        let mut nonces: HashMap<AccountId, u64> = HashMap::new();
        ops.into_iter()
            .map(|(key, op)| {
                let state = self.chain.state();
                let account = state.account_of_key(&key.public());
                let nonce = nonces
                    .entry(account)
                    .or_insert_with(|| state.next_nonce(&account));
                let tx = Transaction::sign(key, self.chain.chain_id(), *nonce, Payload::Access(op));
                *nonce += 1;
                tx
            })
            .collect()
    }

    /// Mines the operations into the next block, `advance` seconds later; prints refusals.
    fn block(
        &mut self,
        advance: u64,
        ops: Vec<(&Keypair, AccessOp)>,
    ) -> Result<Vec<AccessEvent>, Box<dyn Error>> {
        let txs = self.sign(ops);
        self.now += advance;
        self.clock.set(self.now);
        let template = self.chain.build_template(txs, self.now)?;
        for (_, err) in &template.rejected {
            println!("      refused by the chain: {}", shorten(err));
        }
        let block = self.chain.mine(template.txs, self.now)?;
        let appended = self.chain.append(block)?;
        let events = appended.applied[0]
            .events
            .iter()
            .flat_map(|(_, ev)| ev.iter())
            .filter_map(|e| match e {
                Event::Access(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        println!(
            "      block {} mined at day {} ({} transactions)",
            self.chain.height(),
            (self.now - GENESIS_TIME) / DAY,
            self.chain.tip_header().tx_count
        );
        Ok(events)
    }

    /// The error a single operation would be refused with (it is left out of the block).
    fn try_op(
        &mut self,
        key: &Keypair,
        op: AccessOp,
    ) -> Result<Option<StateError>, Box<dyn Error>> {
        let txs = self.sign(vec![(key, op)]);
        let template = self.chain.build_template(txs, self.now + 60)?;
        Ok(template.rejected.into_iter().next().map(|(_, e)| e))
    }

    fn day(&self) -> u64 {
        (self.now - GENESIS_TIME) / DAY
    }
}

fn short(id: impl std::fmt::Display) -> String {
    id.to_string()[..8].to_string()
}

/// Shortens every 64-digit hex id in `s` to its first 8 digits.
fn shorten(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        if run.len() == 64 {
            out.push_str(&run[..8]);
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

fn org(name: &str) -> Identity {
    Identity::Organisation(name.try_into().expect("short name"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let started = std::time::Instant::now();
    let authority = Keypair::generate();
    let hospital = Keypair::generate();
    let clinic = Keypair::generate();
    let er = Keypair::generate();
    let patient = Keypair::generate();
    let specialist = Keypair::generate();
    let researcher = Keypair::generate();

    println!("== MedRec on medledger ==");
    println!("0. A health authority is set in the genesis configuration.");
    let clock = Arc::new(ManualClock::new(GENESIS_TIME));
    let chain = ChainBuilder::new("medrec-demo", ProofOfWork::regtest())
        .genesis_time(GENESIS_TIME)
        .clock(clock.clone())
        .authority("Regional Health Authority", authority.public())
        .build()?;
    println!(
        "      genesis {} commits to the authority (state root {})",
        short(chain.genesis_hash()),
        short(chain.tip_header().state_root)
    );
    let mut l = Ledger {
        chain,
        clock,
        now: GENESIS_TIME,
    };

    println!("1. The authority certifies a hospital, a clinic and an emergency room; everyone registers.");
    let salt = [0x5a; 32]; // the patient's secret salt, kept on the patient's device
    let commitment = IdentityCommitment::new("NHS-943-476-5919", &salt);
    let certify = |p: &Keypair, emergency| AccessOp::CertifyProvider {
        provider: p.account(),
        emergency,
    };
    let register = |role, identity| AccessOp::Register { role, identity };
    l.block(
        600,
        vec![
            (&authority, certify(&hospital, false)),
            (&authority, certify(&clinic, false)),
            (&authority, certify(&er, true)),
            (
                &hospital,
                register(Role::Provider, org("St Mary's Hospital")),
            ),
            (&clinic, register(Role::Provider, org("Riverside Clinic"))),
            (&er, register(Role::Provider, org("City Emergency Room"))),
            (
                &specialist,
                register(Role::Provider, org("Dr Okafor, cardiology")),
            ),
            (
                &researcher,
                register(Role::Researcher, org("Heart Study Lab")),
            ),
            (
                &patient,
                register(Role::Patient, Identity::Commitment(commitment)),
            ),
        ],
    )?;
    let a = l.chain.access();
    println!(
        "      the patient's identity is on chain only as a salted commitment {}; it maps to account {}",
        short(commitment),
        short(a.account_by_identity(&Identity::Commitment(commitment)).expect("registered"))
    );

    println!("2. The hospital adds a record to its database and opens a relationship (pending).");
    let rel = RelationshipId::of(patient.account(), hospital.account());
    let ecg = RecordPointer {
        query: "SELECT * FROM ecg WHERE mrn = 'H-1187' AND study = 42"
            .try_into()
            .expect("short query"),
        content_hash: medledger::hash::content_hash(b"ECG 2026-01-02: sinus rhythm, 72 bpm"),
        category: Category::Imaging,
        data_period: Period::new(GENESIS_TIME, GENESIS_TIME + DAY)?,
    };
    let notes = RecordPointer {
        query: "SELECT * FROM notes WHERE mrn = 'H-1187' AND kind = 'psych'"
            .try_into()
            .expect("short query"),
        content_hash: medledger::hash::content_hash(b"psychiatry consult notes"),
        category: Category::MentalHealth,
        data_period: Period::new(GENESIS_TIME, GENESIS_TIME + DAY)?,
    };
    let add = |record| AccessOp::AddPointer {
        relationship: rel,
        record,
        replaces: None,
    };
    let ops = vec![
        (
            &hospital,
            AccessOp::CreateRelationship {
                patient: patient.account(),
            },
        ),
        (&hospital, add(ecg)),
        (&hospital, add(notes)),
    ];
    // Ids derive from the transactions (signatures are deterministic).
    let txs = l.sign(ops.clone());
    let ecg_ptr = PointerId::of_tx(txs[1].id());
    let notes_ptr = PointerId::of_tx(txs[2].id());
    println!("3. Miners validate: the block is mined.");
    l.block(DAY, ops)?;

    println!("4. The patient is notified: what is pending for me?");
    for item in l.chain.access().pending_for(&patient.account()) {
        println!(
            "      relationship {} with {} is {} ({} record pointers)",
            short(item.relationship),
            short(item.counterparty),
            item.status,
            item.pointers
        );
    }

    println!("5. The patient accepts and grants the specialist 30 days of reading for treatment,");
    println!("   except the mental-health notes (a deny provision).");
    let treat = GrantTerms::new(
        rel,
        Viewer::Account(specialist.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[PurposeOfUse::Treatment]),
        Period::lasting(l.now + 3600, 30 * DAY),
    )
    .with_provision(
        Provision::new(ProvisionKind::Deny)
            .with_categories(CategorySet::of(&[Category::MentalHealth])),
    );
    let ops = vec![
        (&patient, AccessOp::AcceptRelationship { relationship: rel }),
        (
            &patient,
            AccessOp::Grant {
                terms: treat,
                under: None,
            },
        ),
    ];
    let grant_tx = l.sign(ops.clone())[1].id();
    let specialist_grant = GrantId::of_tx(grant_tx);
    l.block(3600, ops)?;
    let granted_at = l.chain.height();
    println!(
        "      relationship is now {}; grant {} recorded",
        l.chain
            .access()
            .relationship(&rel)
            .expect("exists")
            .status(),
        short(specialist_grant)
    );

    println!("6. The specialist asks the hospital's gatekeeper for the ECG.");
    let d = l.chain.decide(
        specialist.account(),
        patient.account(),
        ecg_ptr,
        Action::Read,
        PurposeOfUse::Treatment,
        l.now + 60,
    );
    println!(
        "      decide(specialist, ECG, read, TREAT) = {}",
        shorten(d)
    );
    let d = l.chain.decide(
        specialist.account(),
        patient.account(),
        notes_ptr,
        Action::Read,
        PurposeOfUse::Treatment,
        l.now + 60,
    );
    println!(
        "      decide(specialist, notes, read, TREAT) = {}",
        shorten(d)
    );
    let receipt = |pointer, purpose, basis| AccessOp::RecordAccess {
        patient: patient.account(),
        pointer,
        action: Action::Read,
        purpose,
        basis,
    };
    let events = l.block(
        120,
        vec![(
            &specialist,
            receipt(
                ecg_ptr,
                PurposeOfUse::Treatment,
                Basis::Grant(specialist_grant),
            ),
        )],
    )?;
    println!("      access receipt on chain: {}", describe(&events[0]));

    println!("7. A researcher asks for the same record.");
    let d = l.chain.decide(
        researcher.account(),
        patient.account(),
        ecg_ptr,
        Action::Read,
        PurposeOfUse::Research,
        l.now + 60,
    );
    println!(
        "      decide(researcher, ECG, read, HRESCH) = {}",
        shorten(d)
    );
    if let Some(err) = l.try_op(
        &researcher,
        receipt(
            ecg_ptr,
            PurposeOfUse::Research,
            Basis::Grant(specialist_grant),
        ),
    )? {
        println!(
            "      a receipt claiming the specialist's grant is refused: {}",
            shorten(err)
        );
    }

    println!("8. The patient grants the researcher imaging for research, then thinks again.");
    let research = GrantTerms::new(
        rel,
        Viewer::Account(researcher.account()),
        Scope::categories(CategorySet::of(&[Category::Imaging])),
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[PurposeOfUse::Research]),
        Period::lasting(l.now, 90 * DAY),
    );
    let op = AccessOp::Grant {
        terms: research,
        under: None,
    };
    let research_grant = GrantId::of_tx(l.sign(vec![(&patient, op.clone())])[0].id());
    l.block(DAY, vec![(&patient, op)])?;
    let loss = l.chain.access().revocation_impact(&research_grant, l.now);
    println!(
        "      dry run: revoking {} would take away {} permission(s), e.g. {:?} on {}",
        short(research_grant),
        loss.len(),
        loss[0].purpose,
        short(loss[0].pointer)
    );
    l.block(
        600,
        vec![(
            &patient,
            AccessOp::RevokeGrant {
                grant: research_grant,
                reason: "I withdraw from the study".try_into()?,
            },
        )],
    )?;
    let r = l
        .chain
        .access()
        .revocation(&research_grant)
        .expect("revoked");
    println!(
        "      revoked by {} at height {} because \"{}\"; the grant stays on record",
        short(r.by),
        r.at.height,
        r.reason
    );
    let d = l.chain.decide(
        researcher.account(),
        patient.account(),
        ecg_ptr,
        Action::Read,
        PurposeOfUse::Research,
        l.now + 60,
    );
    println!("      next read: {}", shorten(d));

    println!("9. Thirty days on, the specialist's grant has expired by itself.");
    l.block(30 * DAY, vec![])?;
    let d = l.chain.decide(
        specialist.account(),
        patient.account(),
        ecg_ptr,
        Action::Read,
        PurposeOfUse::Treatment,
        l.now + 60,
    );
    println!(
        "      day {}: decide(specialist, ECG) = {}",
        l.day(),
        shorten(d)
    );
    if let Some(err) = l.try_op(
        &specialist,
        receipt(
            ecg_ptr,
            PurposeOfUse::Treatment,
            Basis::Grant(specialist_grant),
        ),
    )? {
        println!("      its receipt is refused: {}", shorten(err));
    }

    println!("10. The patient collapses; the emergency room breaks the glass for 4 hours.");
    let op = AccessOp::OpenBreakGlass {
        patient: patient.account(),
        reason: "unconscious on arrival, suspected arrhythmia".try_into()?,
        duration_secs: 4 * 3600,
    };
    let session = BreakGlassId::of_tx(l.sign(vec![(&er, op.clone())])[0].id());
    l.block(3 * DAY, vec![(&er, op)])?;
    let d = l.chain.decide(
        er.account(),
        patient.account(),
        ecg_ptr,
        Action::Read,
        PurposeOfUse::EmergencyTreatment,
        l.now + 60,
    );
    println!("      decide(ER, ECG, read, ETREAT) = {}", shorten(d));
    l.block(
        600,
        vec![(
            &er,
            receipt(
                ecg_ptr,
                PurposeOfUse::EmergencyTreatment,
                Basis::BreakGlass(session),
            ),
        )],
    )?;
    l.block(5 * 3600, vec![])?;
    let d = l.chain.decide(
        er.account(),
        patient.account(),
        ecg_ptr,
        Action::Read,
        PurposeOfUse::EmergencyTreatment,
        l.now + 60,
    );
    println!("      five hours later: {}", shorten(d));

    println!("11. The patient reviews: the review queue and the audit trail.");
    for s in l.chain.access().review_queue(&patient.account()) {
        println!(
            "      to review: break-glass {} by {} at day {}: \"{}\"",
            short(s.id),
            short(s.provider),
            (s.opened.time - GENESIS_TIME) / DAY,
            s.reason
        );
    }
    l.block(
        DAY,
        vec![(
            &patient,
            AccessOp::ReviewBreakGlass {
                session,
                outcome: ReviewOutcome::Acknowledged,
                note: Some("thank you".try_into()?),
            },
        )],
    )?;
    for e in l.chain.access().audit_trail(&patient.account()) {
        println!(
            "      #{:<2} day {:>2} height {:>2} by {}: {}",
            e.seq,
            (e.at.time - GENESIS_TIME) / DAY,
            e.at.height,
            short(e.actor),
            describe(&e.event)
        );
    }

    println!("12. A third party checks, from a header alone, that the specialist was allowed.");
    let header = l.chain.header_at(granted_at).expect("main chain");
    let proof_bytes = l
        .chain
        .prove_grant(&specialist_grant, granted_at)
        .expect("grant exists")
        .encode();
    let status = GrantProof::decode(&proof_bytes)?.verify(
        &header.state_root,
        &specialist_grant,
        header.timestamp + 3600,
    )?;
    println!(
        "      proof of {} bytes against block {}: {:?}",
        proof_bytes.len(),
        granted_at,
        status
    );
    let tip = l.chain.tip_header();
    let status = l
        .chain
        .prove_grant(&research_grant, l.chain.height())
        .expect("grant exists")
        .verify(&tip.state_root, &research_grant, tip.timestamp)?;
    println!("      the research grant at the tip: {status:?}");
    let as_of = l
        .chain
        .who_could_read_as_of(&ecg_ptr, granted_at + 1)
        .expect("height");
    println!(
        "      who could read the ECG as of block {}: {}",
        granted_at + 1,
        as_of
            .iter()
            .map(|r| format!("{} ({})", short(r.viewer), shorten(r.basis)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let replayed = l.chain.replay_state()?;
    assert_eq!(replayed.root(), l.chain.state().root());
    println!(
        "13. Replaying {} blocks from genesis gives the same state root {}.",
        l.chain.height(),
        short(replayed.root())
    );
    println!("Done in {:.2?}.", started.elapsed());
    Ok(())
}

fn describe(e: &AccessEvent) -> String {
    match e {
        AccessEvent::Registered { role, .. } => format!("registered as {role}"),
        AccessEvent::RelationshipProposed { provider, .. } => {
            format!("relationship proposed by {}", short(provider))
        }
        AccessEvent::RelationshipAccepted { .. } => "relationship accepted".into(),
        AccessEvent::PointerAdded { pointer, .. } => format!("record {} added", short(pointer)),
        AccessEvent::GrantCreated { grant, viewer, .. } => {
            let v = match viewer {
                Viewer::Account(a) => short(a),
                Viewer::Group(g) => short(g),
            };
            format!("grant {} to {v}", short(grant))
        }
        AccessEvent::GrantRevoked { grant, .. } => format!("grant {} revoked", short(grant)),
        AccessEvent::BreakGlassOpened { provider, .. } => {
            format!("BREAK-GLASS opened by {}", short(provider))
        }
        AccessEvent::BreakGlassReviewed { outcome, .. } => {
            format!("break-glass reviewed: {outcome:?}")
        }
        AccessEvent::Accessed {
            viewer,
            pointer,
            purpose,
            basis,
            ..
        } => format!(
            "READ of {} by {} for {purpose} ({})",
            short(pointer),
            short(viewer),
            shorten(basis)
        ),
        other => format!("{other:?}"),
    }
}
