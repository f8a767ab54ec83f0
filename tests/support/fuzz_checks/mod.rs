//! The checks behind every fuzz target, shared by the fuzz crate (`fuzz/fuzz_targets/*.rs`) and
//! the ordinary test suite, which replays the committed corpora through them
//! (`tests/fuzz_corpus.rs`).
//!
//! Each decoder check takes arbitrary bytes and asserts that decoding never panics, that an
//! accepted input re-encodes to exactly the same bytes, and that what can be done with a decoded
//! value (verify it, hash it, prove with it) never panics either. The fuzz harness and the replay
//! also measure the heap the check keeps live, against [`allocation_budget`].
//!
//! [`chain_model`] drives a chain with an arbitrary sequence of operations and compares it after
//! every step with a small reference model.
#![allow(dead_code)] // every fuzz target includes this module and uses one check of it

pub mod access;
pub mod chain_model;
pub mod committee;
pub mod decoders;
pub mod file_store;
#[cfg(feature = "research-queries")]
pub mod research;

use medledger::access::GrantProof;
use medledger::block::Header;
use medledger::codec::Canonical;
use medledger::committee::{CommitteeSeal, MAX_MESSAGE_LEN};
use medledger::merkle::MerkleProof;
use medledger::pow::PowSeal;
use medledger::pseudonym::{Context, LinkStatement};
use medledger::smt::StateProof;
use medledger::state::snapshot::SnapshotChunk;
use medledger::tx::MAX_TX_LEN;
use medledger::Block;

/// One fuzz target: its name (the file under `fuzz/fuzz_targets/` and the folder under
/// `fuzz/corpus/`) and its check.
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// The check: panics if the input reveals a bug.
    pub check: fn(&[u8]),
    /// Whether the check is held to [`allocation_budget`] (the decoders; not the targets that
    /// build whole chains around what they decode).
    pub metered: bool,
    /// The longest input the target's decoder reads: its size limit. Fuzzing runs with
    /// inputs up to one byte more (`fuzz/max_len.txt`), so that both sides of the limit are
    /// reached.
    pub max_len: usize,
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "transaction",
        check: decoders::transaction,
        metered: true,
        max_len: MAX_TX_LEN,
    },
    Target {
        name: "block_header",
        check: decoders::block_header,
        metered: true,
        max_len: <Header<PowSeal> as Canonical>::MAX_ENCODED_LEN,
    },
    Target {
        name: "block",
        check: decoders::block,
        metered: true,
        max_len: <Block<PowSeal> as Canonical>::MAX_ENCODED_LEN,
    },
    Target {
        name: "merkle_proof",
        check: decoders::merkle_proof,
        metered: true,
        max_len: MerkleProof::MAX_ENCODED_LEN,
    },
    Target {
        name: "state_proof",
        check: decoders::state_proof,
        metered: true,
        max_len: StateProof::MAX_ENCODED_LEN,
    },
    Target {
        name: "snapshot_chunk",
        check: decoders::snapshot_chunk,
        metered: true,
        max_len: SnapshotChunk::MAX_ENCODED_LEN,
    },
    Target {
        name: "pseudonym_context",
        check: decoders::pseudonym_context,
        metered: true,
        max_len: Context::MAX_ENCODED_LEN,
    },
    Target {
        name: "link_statement",
        check: decoders::link_statement,
        metered: true,
        max_len: LinkStatement::MAX_ENCODED_LEN,
    },
    Target {
        name: "committee_message",
        check: committee::committee_message,
        metered: true,
        max_len: MAX_MESSAGE_LEN,
    },
    Target {
        name: "committee_block",
        check: committee::committee_block,
        metered: true,
        max_len: <Block<CommitteeSeal> as Canonical>::MAX_ENCODED_LEN,
    },
    Target {
        name: "file_store",
        check: file_store::file_store,
        metered: true,
        max_len: file_store::MAX_FILE_LEN,
    },
    Target {
        name: "access_op",
        check: access::access_op,
        metered: false,
        max_len: MAX_TX_LEN,
    },
    Target {
        name: "grant_proof",
        check: access::grant_proof,
        metered: true,
        max_len: GrantProof::MAX_ENCODED_LEN,
    },
    Target {
        name: "chain_model",
        check: chain_model::run,
        metered: false,
        max_len: chain_model::MAX_SCENARIO_LEN,
    },
    #[cfg(feature = "research-queries")]
    Target {
        name: "research_report",
        check: research::research_report,
        metered: false,
        max_len: research::REPORT_MAX_LEN,
    },
    #[cfg(feature = "research-queries")]
    Target {
        name: "aggregate_share",
        check: research::aggregate_share,
        metered: true,
        max_len: research::SHARE_MAX_LEN,
    },
];

/// The targets of features this build leaves out, which the fuzz crate builds (it enables
/// them all).
#[cfg(not(feature = "research-queries"))]
pub const GATED: &[&str] = &["research_report", "aggregate_share"];
/// The targets of features this build leaves out.
#[cfg(feature = "research-queries")]
pub const GATED: &[&str] = &[];

/// The target called `name`.
///
/// # Panics
///
/// If there is no such target.
pub fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// The most heap bytes a decoder check may keep live for an input of `len` bytes: a fixed
/// allowance (thread-pool start-up, hashing buffers) plus a multiple of the input. A decoder that
/// allocates for a length the input only claims exceeds it.
pub const fn allocation_budget(len: usize) -> usize {
    256 * 1024 + 64 * len
}

/// Asserts that a check of target `name` on `len` bytes kept at most the budget live.
///
/// # Panics
///
/// If `peak` exceeds [`allocation_budget`].
pub fn assert_within_budget(name: &str, len: usize, peak: usize) {
    assert!(
        peak <= allocation_budget(len),
        "{name}: {peak} heap bytes live for an input of {len} bytes (budget {})",
        allocation_budget(len)
    );
}
