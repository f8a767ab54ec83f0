//! A chain on a crash-safe file: each run mines a few blocks and stops; the next run resumes
//! exactly where the last one stopped (kill it, pull the plug: acknowledged blocks stay).
//!
//! ```text
//! cargo run --example file_chain               # ledger in the system temp directory
//! cargo run --example file_chain -- my.ledger  # or in a file of your choice
//! ```

use std::time::Duration;

use medledger::file_store::{FileStore, SyncPolicy};
use medledger::hash::content_hash;
use medledger::pow::ProofOfWork;
use medledger::tx::Keypair;
use medledger::ChainBuilder;
use medledger::Ledger;
use medledger::Payload;

const BLOCKS_PER_RUN: u64 = 3;
const GENESIS_TIME: u64 = 1_700_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("medledger-file-chain.ledger"));

    // Group commit: the chain syncs once per accepted block, the acknowledgement point.
    let store = FileStore::builder()
        .sync_policy(SyncPolicy::Group {
            max_records: 64,
            max_delay: Duration::from_millis(20),
        })
        .open(&path)?;
    let recovery = store.recovery().clone();
    let chain = ChainBuilder::new("file-chain-example", ProofOfWork::regtest())
        .genesis_time(GENESIS_TIME)
        .store(store)
        .build()?;
    if recovery.created {
        println!("created {}", path.display());
    } else {
        println!(
            "opened {}: {} blocks in {} records, {} torn bytes truncated",
            path.display(),
            recovery.blocks,
            recovery.records,
            recovery.truncated_bytes
        );
    }
    println!("resumed at height {} (tip {})", chain.height(), chain.tip());

    // The ledger signs with the next nonce and stamps each block with a valid time (several
    // blocks within one second included).
    let mut ledger = Ledger::new(chain)?;
    let clinic = Keypair::from_seed(&[7; 32]);
    for _ in 0..BLOCKS_PER_RUN {
        let nonce = ledger.next_nonce(&clinic.account());
        let record = content_hash(&nonce.to_le_bytes());
        ledger.sign_and_submit(&clinic, Payload::Data { record })?;
        let produced = ledger.produce_block()?;
        println!(
            "mined height {} ({})",
            produced.report.height, produced.report.hash
        );
    }
    let chain = ledger.chain();
    println!(
        "stopped at height {}, state root {}",
        chain.height(),
        chain.state().root()
    );
    Ok(())
}
