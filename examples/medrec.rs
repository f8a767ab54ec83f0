//! The MedRec workflow, end to end, through the embedder's `Ledger` (in-memory store,
//! Proof-of-Work at a trivial target): a health authority certifies providers; a hospital adds
//! records and opens a relationship; the patient is notified, accepts and grants a specialist
//! access; reads are checked and leave receipts on chain; a researcher is denied; grants expire
//! and are revoked; an emergency room breaks the glass; the patient reviews the audit trail; a
//! third party checks a grant against a block header alone.
//!
//! Run with `cargo run --release --example medrec`.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::sync::Arc;

use medledger::access::AccessRequest;
use medledger::access::{
    AccessOp, Action, ActionSet, Basis, Category, CategorySet, Created, GrantProof, GrantTerms,
    Identity, IdentityCommitment, Period, PointerId, Provision, ProvisionKind, PurposeSet,
    RecordPointer, RelationshipId, ReviewOutcome, Role, Scope, Viewer,
};
use medledger::chain::ManualClock;
use medledger::hash::content_hash;
use medledger::pow::ProofOfWork;
use medledger::purpose::PurposeOfUse;
use medledger::tx::Keypair;
use medledger::ChainBuilder;
use medledger::{Ledger, Refusal, TxStatus};

const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
/// 1 January 2026, 00:00 UTC.
const GENESIS_TIME: u64 = 1_767_225_600;

/// An ISO 8601 UTC date and time to the minute, from Unix seconds.
fn iso(t: u64) -> String {
    // Days since 1970-01-01 to a civil date, counting 400-year eras from 0000-03-01.
    let z = t / DAY + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m) = (t % DAY / HOUR, t % HOUR / 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}Z")
}

/// The story's ledger, and how its output names things.
struct Demo {
    ledger: Ledger<ProofOfWork>,
    clock: Arc<ManualClock>,
    now: u64,
    /// Short ids (first 8 hex digits) of the actors and records, with what they are.
    names: HashMap<String, String>,
    /// HL7 purpose codes already explained once.
    explained: HashSet<PurposeOfUse>,
}

impl Demo {
    fn name(&mut self, id: impl std::fmt::Display, what: &str) {
        self.names.insert(id.to_string()[..8].into(), what.into());
    }

    /// A readable line: known accounts by role and short id, records with their name, HL7
    /// codes explained the first time.
    fn say(&mut self, text: impl std::fmt::Display) -> String {
        let text = text.to_string();
        let words: Vec<&str> = text.split(' ').collect();
        let mut out: Vec<String> = Vec::with_capacity(words.len());
        for word in words {
            let mut bare = word.trim_end_matches([',', ':', ';', '?', ')', '.', '"']);
            let rest = &word[bare.len()..];
            // Full ids (64 hex digits) are shown by their first 8.
            if bare.len() == 64 && bare.bytes().all(|b| b.is_ascii_hexdigit()) {
                bare = &bare[..8];
            }
            if let Some(name) = self.names.get(bare) {
                match out.last().map(String::as_str) {
                    Some("account" | "patient" | "provider" | "researcher") => {
                        out.pop();
                        out.push(format!("{name} {bare}{rest}"));
                    }
                    _ => out.push(format!("{bare} ({name}){rest}")),
                }
                continue;
            }
            match bare.parse::<PurposeOfUse>() {
                Ok(p) if self.explained.insert(p) => {
                    out.push(format!("{bare} ({}){rest}", p.description()));
                }
                _ => out.push(format!("{bare}{rest}")),
            }
        }
        out.join(" ")
    }

    /// Submits the operations and produces a block `advance` seconds later; prints what each
    /// refused operation was refused for. Returns what the operations created.
    fn block(
        &mut self,
        advance: u64,
        ops: Vec<(&Keypair, AccessOp)>,
    ) -> Result<Vec<Created>, Box<dyn Error>> {
        let mut created = Vec::new();
        for (key, op) in ops {
            match self.ledger.sign_and_submit(key, op) {
                Ok(accepted) => created.extend(accepted.created),
                Err(why) => println!("      refused: {}", self.say(format!("{why:#}"))),
            }
        }
        self.now += advance;
        self.clock.set(self.now);
        let produced = self.ledger.produce_block()?;
        for left in &produced.report.left_out {
            println!("      left out: {}", self.say(&left.reason));
        }
        println!(
            "      block {} at {} ({} transaction(s))",
            produced.report.height,
            iso(produced.report.timestamp),
            produced.report.txs.len()
        );
        Ok(created)
    }

    /// Why `op` would be refused now, if it would (nothing is submitted).
    fn would_refuse(&mut self, key: &Keypair, op: AccessOp) -> Option<Refusal> {
        let tx = self.ledger.sign(key, op);
        self.ledger.dry_run(&tx).err()
    }

    fn decide(&mut self, viewer: &Keypair, patient: &Keypair, record: PointerId, p: PurposeOfUse) {
        let d = self.ledger.chain().decide(&AccessRequest::new(
            viewer.account(),
            patient.account(),
            record,
            Action::Read,
            p,
            self.now + 60,
        ));
        let line = self.say(format!(
            "decide: may account {:#} read record {:#} of patient {:#} for {p}? {d:#}",
            viewer.account(),
            record,
            patient.account()
        ));
        println!("      {line}");
    }
}

fn org(name: &str) -> Identity {
    Identity::Organisation(name.try_into().expect("short name"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let started = std::time::Instant::now();
    let [authority, hospital, clinic, er, patient, specialist, researcher] =
        std::array::from_fn(|_| Keypair::generate());

    println!("== MedRec on medledger ==");
    println!("0. A health authority is set in the genesis configuration.");
    let clock = Arc::new(ManualClock::new(GENESIS_TIME));
    let chain = ChainBuilder::new("medrec-demo", ProofOfWork::regtest())
        .genesis_time(GENESIS_TIME)
        .clock(clock.clone())
        .authority("Regional Health Authority", authority.public())
        .build()?;
    println!(
        "      genesis {} at {} commits to the authority (state root {})",
        &chain.genesis_hash().to_string()[..8],
        iso(GENESIS_TIME),
        &chain.tip_header().state_root.to_string()[..8]
    );
    let mut d = Demo {
        ledger: Ledger::new(chain)?,
        clock,
        now: GENESIS_TIME,
        names: HashMap::new(),
        explained: HashSet::new(),
    };
    for (key, role) in [
        (&authority, "authority"),
        (&hospital, "hospital"),
        (&clinic, "clinic"),
        (&er, "emergency-room"),
        (&patient, "patient"),
        (&specialist, "specialist"),
        (&researcher, "researcher"),
    ] {
        d.name(key.account(), role);
    }

    println!("1. The authority certifies a hospital, a clinic and an emergency room; everyone registers.");
    let salt = [0x5a; 32]; // the patient's secret salt, kept on the patient's device
    let commitment = IdentityCommitment::new("NHS-943-476-5919", &salt, patient.account());
    let certify = |p: &Keypair, emergency| AccessOp::CertifyProvider {
        provider: p.account(),
        emergency,
    };
    let register = |role, identity| AccessOp::Register {
        role,
        identity,
        blinded: None,
    };
    d.block(
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
                AccessOp::register_patient(patient.account(), "NHS-943-476-5919", &salt),
            ),
        ],
    )?;
    let account = d
        .ledger
        .chain()
        .access()
        .account_by_identity(&Identity::Commitment(commitment))
        .expect("registered");
    let line = d.say(format!(
        "the patient is on chain only as a salted commitment {commitment}; it maps to account {account}"
    ));
    println!("      {line}");

    println!(
        "2. The hospital adds two records to its database and opens a relationship (pending)."
    );
    let rel = RelationshipId::of(patient.account(), hospital.account());
    let pointer = |query: &str, record: &[u8], category| RecordPointer {
        query: query.try_into().expect("short query"),
        content_hash: content_hash(record),
        category,
        data_period: Period::lasting(GENESIS_TIME, DAY),
    };
    let ecg = pointer(
        "SELECT * FROM ecg WHERE mrn = 'H-1187' AND study = 42",
        b"ECG 2026-01-01: sinus rhythm, 72 bpm",
        Category::Imaging,
    );
    let notes = pointer(
        "SELECT * FROM notes WHERE mrn = 'H-1187' AND kind = 'psych'",
        b"psychiatry consult notes",
        Category::MentalHealth,
    );
    let add = |record| AccessOp::AddPointer {
        relationship: rel,
        record,
        replaces: None,
    };
    let patient_id = patient.account();
    println!("3. Miners validate: the block is mined; the ledger reports the ids it created.");
    let created = d.block(
        DAY,
        vec![
            (
                &hospital,
                AccessOp::CreateRelationship {
                    patient: patient_id,
                },
            ),
            (&hospital, add(ecg)),
            (&hospital, add(notes)),
        ],
    )?;
    let records: Vec<PointerId> = created.iter().filter_map(Created::pointer).collect();
    let (ecg_ptr, notes_ptr) = (records[0], records[1]);
    d.name(ecg_ptr, "the ECG");
    d.name(notes_ptr, "the psychiatry notes");
    d.name(rel, "patient and hospital");
    for c in &created {
        let line = d.say(format!("{c:#}"));
        println!("      created {line}");
    }

    println!("4. The patient is notified: what is pending for me?");
    for item in d.ledger.chain().access().pending_for(&patient_id) {
        let line = d.say(format!(
            "relationship {:#} with account {:#} is {} ({} record pointers)",
            item.relationship, item.counterparty, item.status, item.pointers
        ));
        println!("      {line}");
    }

    println!("5. The patient accepts and grants the specialist 30 days of reading for treatment,");
    println!("   except the mental-health notes (a deny provision).");
    let treat = GrantTerms::new(
        rel,
        Viewer::Account(specialist.account()),
        Scope::All,
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[PurposeOfUse::Treatment]),
        Period::lasting(d.now + HOUR, 30 * DAY),
    )
    .with_provision(
        Provision::new(ProvisionKind::Deny)
            .with_categories(CategorySet::of(&[Category::MentalHealth])),
    );
    let created = d.block(
        HOUR,
        vec![
            (&patient, AccessOp::AcceptRelationship { relationship: rel }),
            (
                &patient,
                AccessOp::Grant {
                    terms: treat,
                    under: None,
                },
            ),
        ],
    )?;
    let specialist_grant = created.iter().find_map(Created::grant).expect("granted");
    d.name(specialist_grant, "the specialist's grant");
    let granted_at = d.ledger.chain().height();
    let status = d
        .ledger
        .chain()
        .access()
        .relationship(&rel)
        .expect("exists")
        .status();
    let line = d.say(format!(
        "relationship is now {status}; grant {specialist_grant:#} recorded"
    ));
    println!("      {line}");

    println!("6. The specialist asks the hospital's gatekeeper for the ECG and the notes.");
    d.decide(&specialist, &patient, ecg_ptr, PurposeOfUse::Treatment);
    d.decide(&specialist, &patient, notes_ptr, PurposeOfUse::Treatment);
    let receipt = |pointer, purpose, basis| AccessOp::RecordAccess {
        patient: patient_id,
        pointer,
        action: Action::Read,
        purpose,
        basis,
    };
    let read = receipt(
        ecg_ptr,
        PurposeOfUse::Treatment,
        Basis::Grant(specialist_grant),
    );
    let tx = d.ledger.sign(&specialist, read);
    d.ledger.submit(tx.clone())?;
    d.block(120, vec![])?;
    if let Some(TxStatus::Included { height, index, .. }) = d.ledger.status(&tx.id()) {
        println!("      the read's receipt is on chain: block {height}, transaction {index}");
    }

    println!("7. A researcher asks for the same record.");
    d.decide(&researcher, &patient, ecg_ptr, PurposeOfUse::Research);
    let claim = receipt(
        ecg_ptr,
        PurposeOfUse::Research,
        Basis::Grant(specialist_grant),
    );
    if let Some(why) = d.would_refuse(&researcher, claim) {
        let line = d.say(format!("{why:#}"));
        println!("      a receipt claiming the specialist's grant would be refused: {line}");
    }

    println!("8. The patient grants the researcher imaging for research, then thinks again.");
    let research = GrantTerms::new(
        rel,
        Viewer::Account(researcher.account()),
        Scope::categories(CategorySet::of(&[Category::Imaging])),
        ActionSet::of(&[Action::Read]),
        PurposeSet::of(&[PurposeOfUse::Research]),
        Period::lasting(d.now, 90 * DAY),
    );
    let op = AccessOp::Grant {
        terms: research,
        under: None,
    };
    let created = d.block(DAY, vec![(&patient, op)])?;
    let research_grant = created.iter().find_map(Created::grant).expect("granted");
    d.name(research_grant, "the research grant");
    let loss = d
        .ledger
        .chain()
        .access()
        .revocation_impact(&research_grant, d.now);
    let line = d.say(format!(
        "dry run: revoking grant {research_grant:#} would take away {} permission(s): read of record {:#} for {}",
        loss.len(),
        loss[0].pointer,
        loss[0].purpose
    ));
    println!("      {line}");
    let revoke = AccessOp::RevokeGrant {
        grant: research_grant,
        reason: "I withdraw from the study".try_into()?,
    };
    d.block(600, vec![(&patient, revoke)])?;
    let r = d
        .ledger
        .chain()
        .access()
        .revocation(&research_grant)
        .expect("revoked")
        .clone();
    let line = d.say(format!(
        "revoked by account {:#} at height {} ({}) because \"{}\"; the grant stays on record",
        r.by,
        r.at.height,
        iso(r.at.time),
        r.reason
    ));
    println!("      {line}");
    d.decide(&researcher, &patient, ecg_ptr, PurposeOfUse::Research);

    println!("9. Thirty days on, the specialist's grant has expired by itself.");
    d.block(30 * DAY, vec![])?;
    d.decide(&specialist, &patient, ecg_ptr, PurposeOfUse::Treatment);
    let late = receipt(
        ecg_ptr,
        PurposeOfUse::Treatment,
        Basis::Grant(specialist_grant),
    );
    if let Some(why) = d.would_refuse(&specialist, late) {
        let line = d.say(format!("{why:#}"));
        println!("      its receipt would be refused: {line}");
    }

    println!("10. The patient collapses; the emergency room breaks the glass for 4 hours.");
    let op = AccessOp::OpenBreakGlass {
        patient: patient_id,
        reason: "unconscious on arrival, suspected arrhythmia".try_into()?,
        duration_secs: 4 * HOUR,
    };
    let created = d.block(3 * DAY, vec![(&er, op)])?;
    let session = created
        .iter()
        .find_map(Created::break_glass)
        .expect("opened");
    d.name(session, "the emergency session");
    d.decide(&er, &patient, ecg_ptr, PurposeOfUse::EmergencyTreatment);
    let read = receipt(
        ecg_ptr,
        PurposeOfUse::EmergencyTreatment,
        Basis::BreakGlass(session),
    );
    d.block(600, vec![(&er, read)])?;
    d.block(5 * HOUR, vec![])?;
    println!("      five hours later:");
    d.decide(&er, &patient, ecg_ptr, PurposeOfUse::EmergencyTreatment);

    println!("11. The patient reviews: the review queue and the audit trail.");
    let queue: Vec<_> = d
        .ledger
        .chain()
        .access()
        .review_queue(&patient_id)
        .into_iter()
        .cloned()
        .collect();
    for s in queue {
        let line = d.say(format!(
            "to review: break-glass session {:#} by account {:#} at {}: \"{}\"",
            s.id,
            s.provider,
            iso(s.opened.time),
            s.reason
        ));
        println!("      {line}");
    }
    let review = AccessOp::ReviewBreakGlass {
        session,
        outcome: ReviewOutcome::Acknowledged,
        note: Some("thank you".try_into()?),
    };
    d.block(DAY, vec![(&patient, review)])?;
    let trail: Vec<String> = d
        .ledger
        .chain()
        .access()
        .audit_trail(&patient_id)
        .iter()
        .map(|e| format!("{e:#}"))
        .collect();
    for entry in trail {
        let line = d.say(entry);
        println!("      {line}");
    }

    println!("12. A third party checks, from a header alone, that the specialist was allowed.");
    let chain = d.ledger.chain();
    let header = chain.header_at(granted_at).expect("main chain");
    let proof_bytes = chain
        .prove_grant(&specialist_grant, granted_at)
        .expect("grant exists")
        .encode();
    let status = GrantProof::decode(&proof_bytes)?.verify(
        &header.state_root,
        &specialist_grant,
        header.timestamp + HOUR,
    )?;
    println!(
        "      proof of {} bytes against block {granted_at}: the grant was {status}",
        proof_bytes.len()
    );
    let tip = chain.tip_header();
    let status = chain
        .prove_grant(&research_grant, chain.height())
        .expect("grant exists")
        .verify(&tip.state_root, &research_grant, tip.timestamp)?;
    println!("      the research grant at the tip: {status}");
    let list = chain
        .who_could_read_as_of(&ecg_ptr, granted_at + 1)
        .expect("height")
        .iter()
        .map(|r| format!("account {} (as {})", r.viewer, r.basis))
        .collect::<Vec<_>>()
        .join(", ");
    let line = d.say(format!(
        "who could read the ECG as of block {}: {list}",
        granted_at + 1
    ));
    println!("      {line}");

    let chain = d.ledger.chain();
    let replayed = chain.replay_state()?;
    assert_eq!(replayed.root(), chain.state().root());
    println!(
        "13. Replaying {} blocks from genesis gives the same state root {}.",
        chain.height(),
        &replayed.root().to_string()[..8]
    );
    println!("Done in {:.2?}.", started.elapsed());
    Ok(())
}
