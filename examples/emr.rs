//! An EMR vendor's program: the ledger in a file beside the hospital's data, keys in files of mode
//! 0600. Each run anchors a lab result, grants a specialist 30 days, checks a read (decision,
//! receipt, content hash), revokes, and prints the audit trail; the next run resumes from the
//! file. Run `cargo run --example emr [data-dir]` (default: a directory under the temp dir).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use medledger::access::AccessRequest;
use medledger::access::{
    AccessOp, Action, ActionSet, Category, GrantTerms, Period, PurposeSet, RecordPointer,
    RelationshipId, Role, Scope, Viewer,
};
use medledger::file_store::FileStore;
use medledger::hash::content_hash;
use medledger::pow::ProofOfWork;
use medledger::purpose::PurposeOfUse::Treatment;
use medledger::tx::Keypair;
use medledger::{ChainBuilder, Ledger};

const DAY: u64 = 86_400;
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The key kept in `dir/name.key`, made on first use (mode 0600, never overwritten).
fn key(dir: &Path, name: &str) -> Result<Keypair> {
    let path = dir.join(format!("{name}.key"));
    if let Ok(mut file) = std::fs::File::open(&path) {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        file.read_exact(&mut secret[..])?;
        return Ok(Keypair::from_secret_bytes(&secret));
    }
    let key = Keypair::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(key.to_secret_bytes().as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

fn main() -> Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("medledger-emr"), PathBuf::from);
    std::fs::create_dir_all(&dir)?;
    let (authority, hospital) = (key(&dir, "authority")?, key(&dir, "hospital")?);
    let (patient, specialist) = (key(&dir, "patient")?, key(&dir, "specialist")?);

    let store = FileStore::open(dir.join("chain.ledger"))?;
    let chain = ChainBuilder::new("emr-example", ProofOfWork::regtest())
        .genesis_time(1_704_067_200) // 2024-01-01
        .authority("Regional Health Authority", authority.public())
        .store(store)
        .build()?;
    println!("{}: resumed at height {}", dir.display(), chain.height());
    let mut ledger = Ledger::new(chain)?;

    let rel = RelationshipId::of(patient.account(), hospital.account());
    let (viewer, owner) = (specialist.account(), patient.account());
    if ledger.chain().access().relationship(&rel).is_none() {
        println!("first run: the authority certifies the hospital; everyone registers");
        let salt = key(&dir, "patient-salt")?.to_secret_bytes(); // a secret kept like a key
        let me = AccessOp::register_patient(owner, "NHS-485-777", salt.as_bytes());
        let certify = AccessOp::CertifyProvider {
            provider: hospital.account(),
            emergency: false,
        };
        for (k, op) in [
            (&authority, certify),
            (
                &hospital,
                AccessOp::register_organisation(Role::Provider, "St Mary's")?,
            ),
            (
                &specialist,
                AccessOp::register_organisation(Role::Provider, "Dr Okafor")?,
            ),
            (&patient, me),
            (&hospital, AccessOp::CreateRelationship { patient: owner }),
            (&patient, AccessOp::AcceptRelationship { relationship: rel }),
        ] {
            ledger.sign_and_submit(k, op)?;
        }
        ledger.produce_block()?;
    }

    // The hospital keeps the lab result in its own storage and anchors its content hash; the
    // patient grants the specialist 30 days of reading it for treatment.
    let (now, n) = (ledger.next_block_time(), ledger.chain().height());
    let file = format!("lab-{n}.txt");
    let content = format!("lab result #{n}: potassium 4.1 mmol/L, taken at {now}");
    std::fs::write(dir.join(&file), &content)?;
    let record = RecordPointer {
        query: file.as_str().try_into()?,
        content_hash: content_hash(content.as_bytes()),
        category: Category::Laboratory,
        data_period: Period::lasting(now - DAY, DAY),
    };
    let add = AccessOp::AddPointer {
        relationship: rel,
        record,
        replaces: None,
    };
    let added = ledger.sign_and_submit(&hospital, add)?.created;
    let pointer = added[0].pointer().expect("a pointer");
    let (who, read) = (Viewer::Account(viewer), ActionSet::of(&[Action::Read]));
    let (treat, month) = (PurposeSet::of(&[Treatment]), Period::lasting(now, 30 * DAY));
    let terms = GrantTerms::new(rel, who, Scope::All, read, treat, month);
    let granted = ledger.sign_and_submit(&patient, AccessOp::Grant { terms, under: None })?;
    let grant = granted.created[0].grant().expect("a grant");
    let height = ledger.produce_block()?.report.height;
    println!("block {height}: {file} anchored, grant {grant:.8} for 30 days");

    // The specialist asks; the hospital's gatekeeper decides, serves the file, checks its hash.
    let ask = AccessRequest::new(viewer, owner, pointer, Action::Read, Treatment, 0);
    let decide = |l: &Ledger<_>| {
        l.chain().decide(&AccessRequest {
            time: l.next_block_time(),
            ..ask
        })
    };
    let decision = decide(&ledger);
    println!("decide(specialist, {file}, read, TREAT) = {decision:#}");
    let served = content_hash(&std::fs::read(dir.join(&file))?);
    let access = ledger.chain().access();
    let anchored = access.pointer(&pointer).map(|p| p.record.content_hash);
    let check = ["MISMATCH", "matches the chain"][usize::from(anchored == Some(served))];
    println!("hash check of the served file: {check}");
    let basis = decision.basis().ok_or("the read was denied")?;
    ledger.sign_and_submit(&specialist, AccessOp::record_access(&ask, basis))?;

    // The patient revokes; the next request is denied.
    let reason = "second opinion done".try_into()?;
    ledger.sign_and_submit(&patient, AccessOp::RevokeGrant { grant, reason })?;
    let height = ledger.produce_block()?.report.height;
    println!("block {height}: read receipt and revocation recorded");
    let decision = decide(&ledger);
    println!("decide(specialist, {file}, read, TREAT) = {decision:#}");

    println!("the patient's audit trail:");
    for entry in ledger.chain().access().audit_trail(&owner) {
        println!("  {entry:#}");
    }
    Ok(())
}
