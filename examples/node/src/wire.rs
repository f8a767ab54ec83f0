//! What nodes send each other besides consensus messages, and the channels' limits.

use medledger::codec::{self, Canonical};
use medledger::Transaction;
use serde::{Deserialize, Serialize};

/// The p2p namespace: handshakes of other applications (or other consortia using another
/// namespace) are refused.
pub const NAMESPACE: &[u8] = b"_MEDLEDGER_CONSORTIUM_V1";

/// The largest message on any channel, bytes (the transport's frame limit).
pub const MAX_P2P_MESSAGE: u32 = 4 * 1024 * 1024;
/// The largest block a node proposes, bytes: a proposal (block, parent seal) fits a message.
pub const MAX_PROPOSED_BLOCK: usize = 2 * 1024 * 1024;

/// Channel of the consensus engine's messages.
pub const CH_CONSENSUS: u64 = 0;
/// Channel of relayed transactions.
pub const CH_TXS: u64 = 1;
/// Channel of block sync.
pub const CH_SYNC: u64 = 2;

/// Size limit of the consensus channel.
pub const LIMIT_CONSENSUS: usize = MAX_P2P_MESSAGE as usize;
/// Size limit of the transaction channel (one [`TxBatch`]).
pub const LIMIT_TXS: usize = 1024 * 1024;
/// The most transactions in one relayed [`TxBatch`].
pub const MAX_RELAY_BATCH: usize = 1024;
/// Size limit of the sync channel.
pub const LIMIT_SYNC: usize = MAX_P2P_MESSAGE as usize;

/// Messages per second a peer may send on the consensus channel.
pub const RATE_CONSENSUS: u32 = 500;
/// Transaction batches per second a peer may relay.
pub const RATE_TXS: u32 = 2000;
/// Sync messages per second per peer (a served batch is one message per block).
pub const RATE_SYNC: u32 = 256;

/// Capacity of the transport's internal actor mailboxes (preallocated).
pub const MAILBOX_SIZE: usize = 1024;
/// Blocks served per sync request at most.
pub const MAX_SYNC_BATCH: u32 = 64;

/// A block-sync message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMsg {
    /// The sender's chain height (sent every second and on start).
    Status {
        /// Its main chain's height.
        height: u64,
    },
    /// Please send the main-chain blocks of heights `from .. from + count`.
    Request {
        /// The first height.
        from: u64,
        /// How many (at most [`MAX_SYNC_BATCH`] are served).
        count: u32,
    },
    /// One block, in its canonical encoding.
    Block {
        /// The encoded block.
        bytes: Vec<u8>,
    },
}

impl Canonical for SyncMsg {
    const NAME: &'static str = "sync message";
    const MAX_ENCODED_LEN: usize = LIMIT_SYNC;
}

/// Transactions relayed in one message on the transaction channel: the canonical encodings of
/// 1 to [`MAX_RELAY_BATCH`] transactions, [`LIMIT_TXS`] bytes at most in all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBatch {
    /// Each transaction's canonical encoding.
    pub txs: Vec<Vec<u8>>,
}

impl Canonical for TxBatch {
    const NAME: &'static str = "transaction batch";
    const MAX_ENCODED_LEN: usize = LIMIT_TXS;
}

/// Why a relayed [`TxBatch`] was refused (the whole batch: none of its transactions is taken).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// The batch does not decode (or is over [`LIMIT_TXS`] bytes).
    Malformed(codec::DecodeError),
    /// It holds no transaction, or more than [`MAX_RELAY_BATCH`].
    Count(usize),
    /// The transaction at `index` does not decode.
    Transaction {
        /// Its position in the batch.
        index: usize,
        /// Why.
        error: String,
    },
}

impl core::fmt::Display for RelayError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed transaction batch: {e}"),
            Self::Count(n) => write!(
                f,
                "transaction batch of {n} transactions (1 to {MAX_RELAY_BATCH} allowed)"
            ),
            Self::Transaction { index, error } => {
                write!(
                    f,
                    "transaction {index} of the batch does not decode: {error}"
                )
            }
        }
    }
}

impl std::error::Error for RelayError {}

impl TxBatch {
    /// Encodings of transactions to relay, split into batches that each fit the channel.
    pub fn split(encoded: Vec<Vec<u8>>) -> Vec<TxBatch> {
        // Room for the version byte and the count's varint, and each length's varint.
        const HEAD: usize = 1 + 5;
        const PER_TX: usize = 5;
        let mut out = Vec::new();
        let mut batch = TxBatch::default();
        let mut len = HEAD;
        for tx in encoded {
            if !batch.txs.is_empty()
                && (batch.txs.len() == MAX_RELAY_BATCH || len + PER_TX + tx.len() > LIMIT_TXS)
            {
                out.push(std::mem::take(&mut batch));
                len = HEAD;
            }
            len += PER_TX + tx.len();
            batch.txs.push(tx);
        }
        if !batch.txs.is_empty() {
            out.push(batch);
        }
        out
    }

    /// Decodes a relayed batch and each transaction in it, all or none. The length is checked
    /// before anything is decoded; the count before any transaction is.
    ///
    /// # Errors
    ///
    /// [`RelayError`] saying what is wrong.
    pub fn decode_txs(bytes: &[u8]) -> Result<Vec<Transaction>, RelayError> {
        let batch: TxBatch = codec::decode(bytes).map_err(RelayError::Malformed)?;
        if batch.txs.is_empty() || batch.txs.len() > MAX_RELAY_BATCH {
            return Err(RelayError::Count(batch.txs.len()));
        }
        batch
            .txs
            .iter()
            .enumerate()
            .map(|(index, tx)| {
                Transaction::decode(tx).map_err(|e| RelayError::Transaction {
                    index,
                    error: e.to_string(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger::access::AccessOp;
    use medledger::hash::ChainId;
    use medledger::tx::Keypair;

    fn tx(i: usize) -> Transaction {
        let key = Keypair::generate();
        let op = AccessOp::register_patient(key.account(), &format!("P-{i}"), &[7; 32]);
        Transaction::sign(&key, ChainId::from_bytes([1; 32]), 0, op.into())
    }

    #[test]
    fn a_relayed_batch_decodes_to_its_transactions_in_order() {
        let txs: Vec<Transaction> = (0..3).map(tx).collect();
        let batches = TxBatch::split(txs.iter().map(Transaction::encode).collect());
        assert_eq!(batches.len(), 1);
        let bytes = codec::encode(&batches[0]);
        assert_eq!(TxBatch::decode_txs(&bytes).unwrap(), txs);
    }

    #[test]
    fn split_batches_each_fit_the_channel_and_keep_every_transaction() {
        let one = tx(0).encode();
        let n = 3 * MAX_RELAY_BATCH + 5;
        let batches = TxBatch::split(vec![one.clone(); n]);
        assert!(batches.len() >= 4);
        let mut total = 0;
        for b in &batches {
            let bytes = codec::encode(b);
            assert!(bytes.len() <= LIMIT_TXS, "{} bytes", bytes.len());
            assert!(TxBatch::decode_txs(&bytes).is_ok());
            total += b.txs.len();
        }
        assert_eq!(total, n);
        // Large transactions: split by bytes before the count is reached.
        let big = vec![0u8; medledger::tx::MAX_TX_LEN];
        for b in TxBatch::split(vec![big; 200]) {
            assert!(codec::encode(&b).len() <= LIMIT_TXS);
        }
    }

    #[test]
    fn an_oversized_batch_is_refused_before_it_is_decoded() {
        let bytes = vec![0u8; LIMIT_TXS + 1];
        let err = TxBatch::decode_txs(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                RelayError::Malformed(codec::DecodeError::InputTooLarge { .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn a_batch_with_too_many_or_no_transactions_is_refused() {
        let over = TxBatch {
            txs: vec![vec![0]; MAX_RELAY_BATCH + 1],
        };
        let err = TxBatch::decode_txs(&codec::encode(&over)).unwrap_err();
        assert_eq!(err, RelayError::Count(MAX_RELAY_BATCH + 1));
        assert!(err.to_string().contains("1025 transactions"), "{err}");
        let empty = TxBatch::default();
        assert_eq!(
            TxBatch::decode_txs(&codec::encode(&empty)).unwrap_err(),
            RelayError::Count(0)
        );
    }

    #[test]
    fn one_undecodable_transaction_refuses_the_whole_batch() {
        let mut batch = TxBatch::split(vec![tx(0).encode(), tx(1).encode()]).remove(0);
        batch.txs[1].truncate(10);
        let err = TxBatch::decode_txs(&codec::encode(&batch)).unwrap_err();
        assert!(
            matches!(err, RelayError::Transaction { index: 1, .. }),
            "{err}"
        );
        // Bytes that are no batch at all, and a batch with trailing bytes.
        assert!(matches!(
            TxBatch::decode_txs(&[0xff, 1, 2]),
            Err(RelayError::Malformed(_))
        ));
        let mut trailing = codec::encode(&TxBatch::split(vec![tx(2).encode()]).remove(0));
        trailing.push(0);
        assert!(matches!(
            TxBatch::decode_txs(&trailing),
            Err(RelayError::Malformed(_))
        ));
    }
}
