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
use medledger::committee::Timing;
use medledger::consensus::Consensus;
use medledger::file_store::FileStore;
use medledger::pow::{PowNode, PowNodeConfig};
use medledger::tendermint::{Tendermint, TendermintConfig};
use medledger::tx::Keypair;
use medledger::{Chain, MedRec};
use tracing::info;

use crate::config::{
    parse_key, read_json, read_key, EngineKind, Genesis, NodeConfig, Pacing, PowGenesis, Result,
};
use crate::engine::{CommitteeEngine, NodeEngine};
use crate::node::{self, Finalised, NodeJob, NodeLedger, Pk, RpcCall, Transport};
use crate::wire::*;

/// The transport key of a node whose ledger key has this 32-byte seed (the same key).
pub fn transport_key(seed: &[u8; 32]) -> Result<ed25519::PrivateKey> {
    use commonware_codec::DecodeExt as _;
    Ok(ed25519::PrivateKey::decode(commonware_codec::Copying(
        seed,
    ))?)
}

/// Opens the node's store in its data directory (created on first run; resumed after).
pub fn open_store(config: &NodeConfig) -> Result<FileStore> {
    std::fs::create_dir_all(&config.data_dir)?;
    Ok(FileStore::open(config.data_dir.join("chain.ledger"))?)
}

/// Opens the node's Tendermint chain in its data directory (created on first run; resumed
/// after).
pub fn open_ledger(config: &NodeConfig, genesis: &Genesis) -> Result<NodeLedger> {
    node_ledger(genesis.chain(Some(open_store(config)?))?)
}

/// The node's ledger over `chain` (a stored chain, or an in-memory one in tests).
pub fn node_ledger<C: Consensus>(chain: Chain<C>) -> Result<NodeLedger<C>> {
    Ok(medledger::Ledger::builder(chain)
        .max_block_bytes(MAX_PROPOSED_BLOCK)
        .build()?)
}

/// The Tendermint engine of the node with `key` over `ledger`: blocks as large as the
/// transport carries (the ledger's byte bound, [`MAX_PROPOSED_BLOCK`]), not the engine's default
/// count, since a round decides more. Every node of a consortium runs these limits, which bound
/// the proposals it votes for as well as its own.
pub fn tendermint_engine(ledger: &NodeLedger, key: Keypair) -> Tendermint<MedRec> {
    let mut config = TendermintConfig::new(key);
    config.max_block_txs = ledger.max_block_txs();
    Tendermint::new(ledger.chain().engine().clone(), config)
}

/// The proof-of-work engine of the node with `key`: it mines `pow`'s slices, blocks of at most
/// [`MAX_PROPOSED_BLOCK`] bytes.
pub fn pow_engine(key: &Keypair, pow: &PowGenesis) -> PowNode<MedRec> {
    let mut config = PowNodeConfig::new(key.public());
    config.hashes_per_tick = pow.hashes_per_slice;
    config.tick = pow.slice_ms * 1_000;
    config.max_block_bytes = MAX_PROPOSED_BLOCK;
    PowNode::new(config)
}

/// The committee engine of the node with `key` at the tip of `ledger`; `peers` are the other
/// nodes.
pub fn committee_engine(
    ledger: &NodeLedger<medledger::committee::CommitteeConsensus>,
    genesis: &Genesis,
    key: Keypair,
    peers: Vec<medledger::tx::PublicKey>,
) -> CommitteeEngine {
    let max_shard_txs = genesis
        .committee_params()
        .max_shard_txs
        .min(medledger::committee::MAX_SHARD_TXS);
    CommitteeEngine::new(ledger, key, peers, Timing::default(), max_shard_txs)
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

    let peer_keys = config
        .peers
        .iter()
        .map(|p| parse_key(&p.key))
        .collect::<Result<Vec<_>>>()?;
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
    let transport = Transport {
        consensus,
        txs,
        sync,
        blocker: oracle,
        peers: config.peers.len(),
    };
    let node = Node {
        ctx: ctx.child("node"),
        name: config.name.clone(),
        pacing: genesis.pacing(),
        rpc,
        jobs,
        events,
    };
    let store = open_store(&config)?;
    match genesis.engine {
        EngineKind::Tendermint => {
            let ledger = node_ledger(genesis.chain(Some(store))?)?;
            let engine = tendermint_engine(&ledger, key);
            node.run(ledger, engine, transport).await
        }
        EngineKind::Pow => {
            let ledger = node_ledger(genesis.pow_chain(Some(store), None)?)?;
            let engine = pow_engine(&key, &genesis.pow_params());
            node.run(ledger, engine, transport).await
        }
        EngineKind::Committee => {
            let ledger = node_ledger(genesis.committee_chain(Some(store), None)?)?;
            let engine = committee_engine(&ledger, &genesis, key, peer_keys);
            node.run(ledger, engine, transport).await
        }
    }
    Ok(())
}

/// What a node runs with besides its ledger, engine and transport.
struct Node {
    ctx: tokio::Context,
    name: String,
    pacing: Pacing,
    rpc: mpsc::UnboundedReceiver<RpcCall>,
    jobs: mpsc::UnboundedReceiver<NodeJob>,
    events: Option<mpsc::UnboundedSender<Finalised>>,
}

impl Node {
    async fn run<G, S, R, B>(
        self,
        ledger: NodeLedger<G::Consensus>,
        engine: G,
        transport: Transport<S, R, B>,
    ) where
        G: NodeEngine,
        S: commonware_p2p::Sender<PublicKey = Pk>,
        R: commonware_p2p::Receiver<PublicKey = Pk>,
        B: commonware_p2p::Blocker<PublicKey = Pk>,
    {
        info!(node = %self.name, engine = G::NAME, height = ledger.chain().height(), "chain opened");
        node::run_with_jobs(
            self.ctx,
            self.name,
            ledger,
            engine,
            self.pacing,
            transport,
            self.rpc,
            self.jobs,
            self.events,
        )
        .await
    }
}
