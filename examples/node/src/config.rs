//! Genesis, node configuration and key files: what `init` writes and `run` reads.
//!
//! Every file is untrusted input: it is parsed to a `Result` with a size limit before parsing,
//! and key files must hold exactly 32 bytes.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use medledger::committee::{CommitteeConsensus, CommitteeParams};
use medledger::consensus::Consensus;
use medledger::file_store::FileStore;
use medledger::hash::ChainId;
use medledger::pow::{ProofOfWork, RetargetParams, Target};
use medledger::tendermint::{TendermintConsensus, ValidatorSet};
use medledger::tx::{Keypair, PublicKey};
use medledger::{Chain, ChainBuilder};
use serde::{Deserialize, Serialize};

/// Errors of this crate, as readable text.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// A result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The largest configuration or genesis file read, in bytes.
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// The consortium's chain: the Tendermint chain of MedRec records.
pub type NodeChain = Chain<TendermintConsensus>;

/// A named key in the genesis.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedKey {
    /// Who it is ("hospital-0", "Regional Health Authority").
    pub name: String,
    /// The Ed25519 public key, 64 hex digits.
    pub key: String,
    /// Voting power (validators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<u64>,
}

/// The genesis: the same file on every node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Genesis {
    /// The chain's name (its id derives from it).
    pub chain: String,
    /// Genesis time, Unix seconds.
    pub genesis_time: u64,
    /// The hospitals' node keys: the validators of height 1 (Tendermint), the bootstrap
    /// directory (committee engine); proof of work admits any miner.
    pub validators: Vec<NamedKey>,
    /// MedRec health authorities, registered in the genesis state.
    pub authorities: Vec<NamedKey>,
    /// Milliseconds between blocks (the node waits this long after a block before starting the
    /// next height; 0 for back-to-back blocks).
    #[serde(default = "default_interval")]
    pub block_interval_ms: u64,
    /// While no transaction waits, the longest a node goes without a block, in milliseconds:
    /// after a block and its `block_interval_ms`, a node whose pool is empty starts the next
    /// height once a transaction arrives, a peer starts that height, or this much time has
    /// passed since the block. Absent: a block every `block_interval_ms`, empty or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_block_interval_ms: Option<u64>,
    /// The consensus engine every node runs (absent: Tendermint).
    #[serde(default)]
    pub engine: EngineKind,
    /// The proof-of-work parameters, for `"engine": "pow"` (absent: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pow: Option<PowGenesis>,
    /// The committee parameters, for `"engine": "committee"` (absent: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committee: Option<CommitteeGenesis>,
}

fn default_interval() -> u64 {
    1000
}

/// When a node starts the next height after a block (from the genesis: every node paces its
/// blocks alike).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pacing {
    /// The pause after each block before the next height starts (zero: back to back).
    pub interval: Duration,
    /// While the node's pool is empty, the longest it waits after a block for a transaction or
    /// a peer's start of the next height; `None` starts each height after `interval`, empty or
    /// not.
    pub idle: Option<Duration>,
}

/// The consensus engine a consortium runs, named in its genesis.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Tendermint among the genesis validators: every block final once more than two thirds
    /// of the voting power committed to it.
    #[default]
    Tendermint,
    /// Proof of work: every node mines; blocks are final once enough are built on them.
    Pow,
    /// The committee engine: committees drawn by identity proofs of work agree on shards of
    /// transactions, a final committee certifies each block.
    Committee,
}

impl EngineKind {
    /// The engine's name, as in the genesis.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tendermint => "tendermint",
            EngineKind::Pow => "pow",
            EngineKind::Committee => "committee",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tendermint" => Ok(EngineKind::Tendermint),
            "pow" => Ok(EngineKind::Pow),
            "committee" => Ok(EngineKind::Committee),
            _ => Err(format!("unknown engine {s:?}: expected tendermint, pow or committee").into()),
        }
    }
}

/// Proof-of-work parameters of a genesis.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PowGenesis {
    /// Leading zero bits a block hash needs (fixed: no retargeting): a block takes
    /// `2^difficulty_bits` hashes on average, over all nodes. 1 to 48.
    pub difficulty_bits: u8,
    /// Hashes a node tries per mining slice (its loop serves peers and clients between
    /// slices). 1 to 1,000,000.
    pub hashes_per_slice: u64,
    /// Milliseconds between a node's mining slices (1 to 10,000): the node's hash rate is
    /// `hashes_per_slice` per `slice_ms`.
    pub slice_ms: u64,
    /// The most blocks a node's chain rolls back when a heavier branch arrives.
    pub max_reorg_depth: u64,
}

impl Default for PowGenesis {
    /// A low difficulty for demonstrations and tests: 2^16 hashes per block; each node tries
    /// 256 hashes every 10 ms (25,600 a second, a few per cent of one core), so four nodes
    /// find a block about every 0.6 s.
    fn default() -> Self {
        Self {
            difficulty_bits: 16,
            hashes_per_slice: 256,
            slice_ms: 10,
            max_reorg_depth: 100,
        }
    }
}

impl PowGenesis {
    /// The chain's retarget parameters: the target of [`difficulty_bits`](Self::difficulty_bits),
    /// never retargeted.
    ///
    /// # Errors
    ///
    /// If a parameter is out of its range.
    pub fn params(&self) -> Result<RetargetParams> {
        if !(1..=48).contains(&self.difficulty_bits) {
            return Err("pow.difficulty_bits must be between 1 and 48".into());
        }
        if !(1..=1_000_000).contains(&self.hashes_per_slice) {
            return Err("pow.hashes_per_slice must be between 1 and 1000000".into());
        }
        if !(1..=10_000).contains(&self.slice_ms) {
            return Err("pow.slice_ms must be between 1 and 10000".into());
        }
        // All ones below the leading `difficulty_bits` zero bits.
        let mut bytes = [0xffu8; 32];
        let bits = usize::from(self.difficulty_bits);
        bytes[..bits / 8].fill(0);
        bytes[bits / 8] = 0xff >> (bits % 8);
        let limit = Target::from_be_bytes(bytes).to_compact();
        Ok(RetargetParams::builder()
            .pow_limit(limit)
            .no_retargeting(true)
            .build()?)
    }
}

/// Committee-engine parameters of a genesis. The genesis validators are the bootstrap
/// directory (who admits the identities of block 1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CommitteeGenesis {
    /// Shard bits: `2^shard_bits` committees, committee 0 also the final one.
    pub shard_bits: u8,
    /// Seats per committee (0: as many as there are validators).
    pub committee_size: u16,
    /// Leading zero bits of an identity proof (a node's work per epoch to take part).
    pub identity_difficulty: u8,
    /// The most transactions a shard leader proposes.
    pub max_shard_txs: usize,
}

impl Default for CommitteeGenesis {
    /// One committee of every validator, identity proofs of 8 bits, 1024 transactions per
    /// shard.
    fn default() -> Self {
        Self {
            shard_bits: 0,
            committee_size: 0,
            identity_difficulty: 8,
            max_shard_txs: 1024,
        }
    }
}

/// A peer in a node's configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its name (for logs).
    pub name: String,
    /// Its node key, 64 hex digits.
    pub key: String,
    /// Where it listens for peers.
    pub address: SocketAddr,
}

/// One node's configuration (paths relative to the file's directory).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's name (for logs).
    pub name: String,
    /// The genesis file.
    pub genesis: PathBuf,
    /// The node's key file (32 bytes, mode 0600).
    pub key_file: PathBuf,
    /// Where it listens for peers (p2p).
    pub listen: SocketAddr,
    /// Where it listens for local clients (`submit`, `status`); keep it on 127.0.0.1.
    pub rpc: SocketAddr,
    /// Where its chain is kept.
    pub data_dir: PathBuf,
    /// The other nodes.
    pub peers: Vec<PeerConfig>,
    /// Accept peers on private addresses (127.0.0.1, LAN): true for local runs.
    #[serde(default)]
    pub allow_private_ips: bool,
    /// Where the web API and the patient portal listen (HTTP); none if absent. `init` puts it
    /// on 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// The file holding the bearer token EMRs present to the web API (mode 0600); without it
    /// the EMR routes are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
    /// How far a signed access request's `issued_at` may lie from the node's clock, seconds
    /// (default 60).
    #[serde(default = "default_gate_window")]
    pub gate_window_secs: u64,
    /// The node's research aggregator key file (32 secret bytes, mode 0600): the seed of the
    /// HPKE key hospitals encrypt input shares to. With `research_verify_key_file`, it turns
    /// the node's aggregator routes on (`/research/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub research_key_file: Option<PathBuf>,
    /// The verification key this node shares with the other aggregator of its queries, and
    /// nobody else (32 secret bytes, mode 0600; the same file on both aggregators' nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub research_verify_key_file: Option<PathBuf>,
}

fn default_gate_window() -> u64 {
    crate::web::DEFAULT_GATE_WINDOW_SECS
}

/// The largest API token file, bytes.
pub const MAX_TOKEN_LEN: u64 = 256;

/// Reads an API token file (mode 0600, at most [`MAX_TOKEN_LEN`] bytes, surrounding blanks
/// dropped).
pub fn read_token(path: &Path) -> Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(
                format!("{}: mode {:o}, expected 0600", path.display(), mode & 0o777).into(),
            );
        }
    }
    let bytes = zeroize::Zeroizing::new(read_limited(path, MAX_TOKEN_LEN)?);
    let token = std::str::from_utf8(&bytes)
        .map_err(|_| format!("{}: the token is not UTF-8", path.display()))?
        .trim()
        .to_string();
    if token.len() < 16 {
        return Err(format!("{}: a token has at least 16 characters", path.display()).into());
    }
    Ok(token)
}

/// Parses 64 hex digits.
pub fn parse_hex32(s: &str) -> Result<[u8; 32]> {
    let bytes = hex_decode(s)?;
    bytes
        .try_into()
        .map_err(|_| "expected 32 bytes (64 hex digits)".into())
}

/// Hex-decodes `s`.
pub fn hex_decode(s: &str) -> Result<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    let digit = |c: u8| -> Result<u8> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("not a hex digit: {:?}", c as char).into())
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Hex-encodes `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a public key from 64 hex digits.
pub fn parse_key(s: &str) -> Result<PublicKey> {
    let key = PublicKey::from_bytes(parse_hex32(s)?);
    key.verifying_key()?;
    Ok(key)
}

/// Reads a whole file of at most [`MAX_FILE_LEN`] bytes.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(format!("{}: larger than {max} bytes", path.display()).into());
    }
    Ok(buf)
}

/// Reads a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_limited(path, MAX_FILE_LEN)?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Writes `bytes` to a new file of mode 0600 (never overwrites).
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Reads a key file: exactly 32 bytes of Ed25519 seed. Refuses files others may read.
pub fn read_key(path: &Path) -> Result<Keypair> {
    let seed = read_secret(path)?;
    Ok(Keypair::from_secret_bytes(&seed))
}

/// Reads a 32-byte secret file (mode 0600): a key's seed.
pub fn read_secret(path: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(
                format!("{}: mode {:o}, expected 0600", path.display(), mode & 0o777).into(),
            );
        }
    }
    let bytes = zeroize::Zeroizing::new(read_limited(path, 32)?);
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{}: a key file holds 32 bytes", path.display()))?;
    Ok(zeroize::Zeroizing::new(seed))
}

/// A fresh key from a random 32-byte seed.
pub fn fresh_key() -> Keypair {
    Keypair::generate()
}

impl Genesis {
    /// When a node starts each height: the block interval, and the idle one if set.
    pub fn pacing(&self) -> Pacing {
        Pacing {
            interval: Duration::from_millis(self.block_interval_ms),
            idle: self.idle_block_interval_ms.map(Duration::from_millis),
        }
    }

    /// The validator set of height 1.
    pub fn validator_set(&self) -> Result<ValidatorSet> {
        let list = self
            .validators
            .iter()
            .map(|v| Ok((parse_key(&v.key)?, v.power.unwrap_or(1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(ValidatorSet::new(list)?)
    }

    /// Builds (or, from a store holding it, reopens) the chain of a Tendermint genesis.
    pub fn chain(&self, store: Option<FileStore>) -> Result<NodeChain> {
        self.chain_with_clock(store, None)
    }

    /// As [`chain`](Self::chain), refusing blocks from the future by `clock` (the system
    /// clock if `None`).
    pub fn chain_with_clock(
        &self,
        store: Option<FileStore>,
        clock: Option<std::sync::Arc<dyn medledger::chain::Clock>>,
    ) -> Result<NodeChain> {
        self.expect(EngineKind::Tendermint)?;
        let engine = TendermintConsensus::new(&self.chain, self.validator_set()?);
        self.build(engine, 0, store, clock)
    }

    /// The proof-of-work parameters (the defaults if the genesis gives none).
    pub fn pow_params(&self) -> PowGenesis {
        self.pow.clone().unwrap_or_default()
    }

    /// The committee parameters (the defaults if the genesis gives none).
    pub fn committee_params(&self) -> CommitteeGenesis {
        self.committee.clone().unwrap_or_default()
    }

    /// Builds (or reopens) the chain of a proof-of-work genesis, refusing blocks from the
    /// future by `clock` (the system clock if `None`).
    pub fn pow_chain(
        &self,
        store: Option<FileStore>,
        clock: Option<std::sync::Arc<dyn medledger::chain::Clock>>,
    ) -> Result<Chain<ProofOfWork>> {
        self.expect(EngineKind::Pow)?;
        let pow = self.pow_params();
        let engine = ProofOfWork::new(pow.params()?);
        self.build(engine, pow.max_reorg_depth, store, clock)
    }

    /// Builds (or reopens) the chain of a committee genesis, refusing blocks from the future
    /// by `clock` (the system clock if `None`).
    pub fn committee_chain(
        &self,
        store: Option<FileStore>,
        clock: Option<std::sync::Arc<dyn medledger::chain::Clock>>,
    ) -> Result<Chain<CommitteeConsensus>> {
        self.expect(EngineKind::Committee)?;
        let c = self.committee_params();
        let bootstrap = self
            .validators
            .iter()
            .map(|v| parse_key(&v.key))
            .collect::<Result<Vec<_>>>()?;
        let size = match c.committee_size {
            0 => u16::try_from(bootstrap.len()).map_err(|_| "too many validators")?,
            n => n,
        };
        let params: CommitteeParams = CommitteeParams::builder()
            .shard_bits(c.shard_bits)
            .committee_size(size)
            .identity_difficulty(c.identity_difficulty)
            .genesis_seed(self.chain.as_bytes())
            .bootstrap(bootstrap)
            .build()?;
        self.build(CommitteeConsensus::new(params), 0, store, clock)
    }

    /// The chain id (every transaction signs it), whatever the engine.
    pub fn chain_id(&self) -> Result<ChainId> {
        Ok(match self.engine {
            EngineKind::Tendermint => self.chain(None)?.chain_id(),
            EngineKind::Pow => self.pow_chain(None, None)?.chain_id(),
            EngineKind::Committee => self.committee_chain(None, None)?.chain_id(),
        })
    }

    fn expect(&self, engine: EngineKind) -> Result<()> {
        if self.engine == engine {
            Ok(())
        } else {
            Err(format!("the genesis names the {} engine, not {engine}", self.engine).into())
        }
    }

    fn build<C: Consensus>(
        &self,
        engine: C,
        max_reorg_depth: u64,
        store: Option<FileStore>,
        clock: Option<std::sync::Arc<dyn medledger::chain::Clock>>,
    ) -> Result<Chain<C>> {
        let mut builder = ChainBuilder::new(self.chain.clone(), engine)
            .genesis_time(self.genesis_time)
            .max_reorg_depth(max_reorg_depth);
        for a in &self.authorities {
            builder = builder.authority(a.name.clone(), parse_key(&a.key)?);
        }
        if let Some(store) = store {
            builder = builder.store(store);
        }
        if let Some(clock) = clock {
            builder = builder.clock(clock);
        }
        Ok(builder.build()?)
    }
}

impl NodeConfig {
    /// Reads a configuration file; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let mut config: NodeConfig = read_json(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.genesis,
            &mut config.key_file,
            &mut config.data_dir,
        ]
        .into_iter()
        .chain(config.api_token_file.as_mut())
        .chain(config.research_key_file.as_mut())
        .chain(config.research_verify_key_file.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }
}

/// What `init` made.
#[derive(Debug)]
pub struct Consortium {
    /// The genesis file.
    pub genesis: PathBuf,
    /// The authority's key file.
    pub authority_key: PathBuf,
    /// Each node's configuration file.
    pub configs: Vec<PathBuf>,
}

/// `init`: writes a genesis, an authority key, and per node a key, an API token and a
/// configuration, for `nodes` nodes on 127.0.0.1 from `base_port` (p2p), `base_port + 100`
/// (local RPC) and `base_port + 200` (web API).
pub fn init(
    dir: &Path,
    nodes: usize,
    base_port: u16,
    block_interval_ms: u64,
) -> Result<Consortium> {
    init_with_engine(
        dir,
        nodes,
        base_port,
        block_interval_ms,
        None,
        EngineKind::Tendermint,
    )
}

/// [`init`] for a consortium that runs `engine` (with its default parameters: for proof of
/// work a low difficulty, for demonstrations and tests), and that makes empty blocks only every
/// `idle_block_interval_ms` if given (see [`Genesis::idle_block_interval_ms`]).
pub fn init_with_engine(
    dir: &Path,
    nodes: usize,
    base_port: u16,
    block_interval_ms: u64,
    idle_block_interval_ms: Option<u64>,
    engine: EngineKind,
) -> Result<Consortium> {
    if !(1..=64).contains(&nodes) {
        return Err("--nodes must be between 1 and 64".into());
    }
    if base_port.checked_add(200 + nodes as u16).is_none() {
        return Err("--base-port too high".into());
    }
    if idle_block_interval_ms.is_some_and(|idle| idle < block_interval_ms) {
        return Err("--idle-block-interval-ms must be at least --block-interval-ms".into());
    }
    std::fs::create_dir_all(dir)?;
    let genesis_path = dir.join("genesis.json");
    if genesis_path.exists() {
        return Err(format!("{} exists: refusing to overwrite", genesis_path.display()).into());
    }
    let authority = fresh_key();
    let authority_key = dir.join("authority.key");
    write_secret(&authority_key, authority.to_secret_bytes().as_bytes())?;
    let keys: Vec<Keypair> = (0..nodes).map(|_| fresh_key()).collect();
    let name = |i: usize| format!("hospital-{i}");
    let listen = |i: usize| SocketAddr::from(([127, 0, 0, 1], base_port + i as u16));
    let genesis = Genesis {
        chain: "medledger-consortium".into(),
        genesis_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        validators: keys
            .iter()
            .enumerate()
            .map(|(i, k)| NamedKey {
                name: name(i),
                key: k.public().to_string(),
                power: Some(1),
            })
            .collect(),
        authorities: vec![NamedKey {
            name: "Regional Health Authority".into(),
            key: authority.public().to_string(),
            power: None,
        }],
        block_interval_ms,
        idle_block_interval_ms,
        engine,
        pow: (engine == EngineKind::Pow).then(PowGenesis::default),
        committee: (engine == EngineKind::Committee).then(CommitteeGenesis::default),
    };
    genesis.validator_set()?;
    genesis.chain_id()?;
    std::fs::write(&genesis_path, serde_json::to_vec_pretty(&genesis)?)?;
    let mut configs = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let node_dir = dir.join(name(i));
        std::fs::create_dir_all(&node_dir)?;
        write_secret(&node_dir.join("node.key"), key.to_secret_bytes().as_bytes())?;
        // 32 bytes from the operating system's generator (a fresh key's seed), as hex.
        let token = zeroize::Zeroizing::new(hex_encode(fresh_key().to_secret_bytes().as_bytes()));
        write_secret(&node_dir.join("api.token"), token.as_bytes())?;
        let config = NodeConfig {
            name: name(i),
            genesis: PathBuf::from("../genesis.json"),
            key_file: PathBuf::from("node.key"),
            listen: listen(i),
            rpc: SocketAddr::from(([127, 0, 0, 1], base_port + 100 + i as u16)),
            data_dir: PathBuf::from("data"),
            peers: keys
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, k)| PeerConfig {
                    name: name(j),
                    key: k.public().to_string(),
                    address: listen(j),
                })
                .collect(),
            allow_private_ips: true,
            http: Some(SocketAddr::from((
                [127, 0, 0, 1],
                base_port + 200 + i as u16,
            ))),
            api_token_file: Some(PathBuf::from("api.token")),
            gate_window_secs: default_gate_window(),
            research_key_file: None,
            research_verify_key_file: None,
        };
        let path = node_dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        configs.push(path);
    }
    Ok(Consortium {
        genesis: genesis_path,
        authority_key,
        configs,
    })
}
