//! Plugging the ledger into a database the application already has: the `SqliteStore` of the
//! `sqlite` feature, whose tables sit beside the EMR's own in one database file. Each run
//! appends a block recording a new visit and reopens where the last run stopped.
//!
//! ```text
//! cargo run --features sqlite --example sqlite_store               # database in the temp dir
//! cargo run --features sqlite --example sqlite_store -- emr.sqlite
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use medledger::hash::{domain, Digest};
use medledger::pow::ProofOfWork;
use medledger::sqlite_store::SqliteStore;
use medledger::tx::Keypair;
use medledger::{ChainBuilder, Payload, Transaction};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("medledger-emr.sqlite"));

    let store = SqliteStore::open(&path)?;
    // The EMR's own table, in the same database.
    store.connection().execute_batch(
        "CREATE TABLE IF NOT EXISTS visits (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
         INSERT INTO visits (note) VALUES ('routine check-up');",
    )?;
    let (visit, note): (i64, String) = store.connection().query_row(
        "SELECT id, note FROM visits ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;

    let mut chain = ChainBuilder::new("emr-ledger", ProofOfWork::regtest())
        .genesis_time(1_700_000_000)
        .store(store)
        .build()?;
    println!("{}: resumed at height {}", path.display(), chain.height());

    // The ledger records a hash of the visit, never the record itself.
    let clinic = Keypair::from_seed(&[3; 32]);
    let record = Digest::from_bytes(domain::RECORD.hash(format!("{visit}:{note}").as_bytes()));
    let nonce = chain.state().next_nonce(&clinic.account());
    let tx = Transaction::sign(&clinic, chain.chain_id(), nonce, Payload::Data { record });
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let block = chain.mine(vec![tx], now.max(chain.tip_header().timestamp + 1))?;
    chain.append(block)?;
    println!(
        "visit {visit} committed at height {} (state root {})",
        chain.height(),
        chain.state().root()
    );
    Ok(())
}
