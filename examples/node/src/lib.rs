//! `medledger-node`: the reference consortium node for medledger.
//!
//! Each hospital runs one node. Nodes reach each other over commonware's authenticated
//! peer-to-peer transport (`authenticated::lookup`: a fixed set of known keys and addresses,
//! encrypted, unknown peers refused) and run the consensus engine their genesis names
//! (Tendermint, proof of work or the committee engine; see [`engine`]) through the library's
//! sans-I/O protocol interface; each keeps its chain in a `FileStore`. See the README.
#![deny(missing_docs)]

pub mod config;
pub mod demo;
pub mod engine;
pub mod net;
pub mod node;
pub mod rpc;
pub mod web;
pub mod wire;

/// Starts structured logs (`tracing`) at the level in `MEDLEDGER_LOG`, or `default`.
pub fn init_logs(ctx: &commonware_runtime::tokio::Context, default: &str) {
    use commonware_runtime::Supervisor as _;
    let level = std::env::var("MEDLEDGER_LOG").unwrap_or_else(|_| default.to_string());
    commonware_runtime::tokio::telemetry::init(
        ctx.child("telemetry"),
        commonware_runtime::tokio::telemetry::Logs {
            level: level.parse().unwrap_or(tracing::Level::INFO),
            json: false,
        },
        None,
        None,
    );
}
