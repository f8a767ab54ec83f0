//! A node on the real network: `authenticated::lookup` on the tokio runtime.

use std::num::NonZeroUsize;
use std::time::Duration;

use commonware_cryptography::{ed25519, ChaCha20Poly1305, Signer as _};
use commonware_p2p::{authenticated::lookup, Address, AddressableManager as _};
use commonware_runtime::{tokio, Quota, Supervisor as _};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::channel::mpsc;
use commonware_utils::ordered::Map;
use commonware_utils::{NZUsize, NZU32};
use medledger::file_store::FileStore;
use medledger::tendermint::{Tendermint, TendermintConfig};
use tracing::info;

use crate::config::{parse_key, read_json, read_key, Genesis, NodeChain, NodeConfig, Result};
use crate::node::{self, Finalised, NodeJob, NodeLedger, Pk, RpcCall, Transport};
use crate::wire::*;

/// The transport key of a node whose ledger key has this 32-byte seed (the same key).
pub fn transport_key(seed: &[u8; 32]) -> Result<ed25519::PrivateKey> {
    use commonware_codec::DecodeExt as _;
    Ok(ed25519::PrivateKey::decode(commonware_codec::Copying(
        seed,
    ))?)
}

/// Opens the node's chain in its data directory (created on first run; resumed after).
pub fn open_ledger(config: &NodeConfig, genesis: &Genesis) -> Result<NodeLedger> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = FileStore::open(config.data_dir.join("chain.ledger"))?;
    node_ledger(genesis.chain(Some(store))?)
}

/// The node's ledger over `chain` (a stored chain, or an in-memory one in tests).
pub fn node_ledger(chain: NodeChain) -> Result<NodeLedger> {
    Ok(medledger::Ledger::builder(chain)
        .max_block_bytes(MAX_PROPOSED_BLOCK)
        .build()?)
}

/// Runs the node of `config` on the tokio context `ctx` until the transport closes. Local RPC
/// requests arrive on `rpc`, the web API's jobs on `jobs`; finalised blocks are reported on
/// `events`.
pub async fn run(
    ctx: tokio::Context,
    config: NodeConfig,
    rpc: mpsc::UnboundedReceiver<RpcCall>,
    jobs: Option<mpsc::UnboundedReceiver<NodeJob>>,
    events: Option<mpsc::UnboundedSender<Finalised>>,
) -> Result<()> {
    // Without a web API, a job channel that never delivers (its sender lives until we return).
    let (_keep, idle) = mpsc::unbounded_channel();
    let jobs = jobs.unwrap_or(idle);
    let genesis: Genesis = read_json(&config.genesis)?;
    let key = read_key(&config.key_file)?;
    let signer = transport_key(key.to_secret_bytes().as_bytes())?;
    let me = signer.public_key();
    let mut peers: Vec<(Pk, Address)> = vec![(me.clone(), config.listen.into())];
    for peer in &config.peers {
        let pk = node::to_cw(&parse_key(&peer.key)?).ok_or("invalid peer key")?;
        peers.push((pk, peer.address.into()));
    }
    let peers = Map::try_from(peers).map_err(|_| "duplicate peer keys")?;

    let ledger = open_ledger(&config, &genesis)?;
    info!(node = %config.name, height = ledger.chain().height(), "chain opened");
    let engine = Tendermint::new(ledger.chain().engine().clone(), TendermintConfig::new(key));

    let handshake = Cups::<_, ChaCha20Poly1305>::new(
        Sake {
            signer,
            synchrony_bound: Duration::from_secs(5),
            max_handshake_age: Duration::from_secs(10),
            version: sake::Version::V1,
        },
        cups::Version::V1,
    );
    // Size the transport for this consortium, not for the largest one imaginable: lookup
    // preallocates every channel's inbound queue and the router's outbound queue (crossbeam
    // `ArrayQueue`s) at `max_peers_per_set * tracked_peer_sets * quota burst` slots. With
    // 1024 peers per set, four tracked sets and our quotas that was ~11 million slots per
    // queue: gigabytes per node, faulted in on start-up (mostly system CPU time), which delayed
    // "p2p started" by seconds per node and the first block by up to a minute.
    let set_size = NonZeroUsize::new(peers.len()).ok_or("empty peer set")?;
    let mut cfg = lookup::Config::local(
        handshake,
        NAMESPACE,
        config.listen,
        set_size,
        MAX_P2P_MESSAGE,
        NZUsize!(MAILBOX_SIZE),
    );
    // Only peer set 0 is ever tracked.
    cfg.tracked_peer_sets = NZUsize!(1);
    cfg.allow_private_ips = config.allow_private_ips;
    cfg.block_duration = Duration::from_secs(3600);
    let (mut network, mut oracle) = lookup::Network::new(ctx.child("p2p"), cfg);
    let _ = oracle.track(0, peers);
    let consensus = network.register(CH_CONSENSUS, Quota::per_second(NZU32!(RATE_CONSENSUS)));
    let txs = network.register(CH_TXS, Quota::per_second(NZU32!(RATE_TXS)));
    let sync = network.register(CH_SYNC, Quota::per_second(NZU32!(RATE_SYNC)));
    network.start();
    info!(node = %config.name, listen = %config.listen, peers = config.peers.len(), "p2p started");
    node::run_with_jobs(
        ctx.child("node"),
        config.name.clone(),
        ledger,
        engine,
        Duration::from_millis(genesis.block_interval_ms),
        Transport {
            consensus,
            txs,
            sync,
            blocker: oracle,
            peers: config.peers.len(),
        },
        rpc,
        jobs,
        events,
    )
    .await;
    Ok(())
}
