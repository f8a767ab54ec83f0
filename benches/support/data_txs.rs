//! Signed `Data` transactions for the validation bench and the performance report.

use medledger::hash::{content_hash, ChainId};
use medledger::tx::Keypair;
use medledger::{Payload, Transaction};

/// `n` signed record anchors from `signers` accounts taking turns, each with its next nonce.
pub fn signed_data_txs(chain_id: ChainId, n: usize, signers: usize) -> Vec<Transaction> {
    let keys: Vec<Keypair> = (0..signers)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Keypair::from_seed(&seed)
        })
        .collect();
    (0..n)
        .map(|i| {
            Transaction::sign(
                &keys[i % signers],
                chain_id,
                (i / signers) as u64,
                Payload::Data {
                    record: content_hash(&i.to_le_bytes()),
                },
            )
        })
        .collect()
}
