//! What nodes send each other besides consensus messages, and the channels' limits.

use medledger::codec::Canonical;
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
/// Size limit of the transaction channel (one canonical transaction).
pub const LIMIT_TXS: usize = medledger::tx::MAX_TX_LEN;
/// Size limit of the sync channel.
pub const LIMIT_SYNC: usize = MAX_P2P_MESSAGE as usize;

/// Messages per second a peer may send on the consensus channel.
pub const RATE_CONSENSUS: u32 = 500;
/// Transactions per second a peer may relay.
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
