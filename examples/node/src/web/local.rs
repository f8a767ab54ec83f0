//! Starting the web API for a node, and a one-node consortium in this process with the web API
//! on 127.0.0.1 (for `portal-demo`, the tests and the load check).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use commonware_runtime::{tokio as cw_tokio, Runner as _};
use commonware_utils::channel::mpsc;
use medledger::access::{
    AccessOp, Category, Period, PointerId, RecordPointer, RelationshipId, Role,
};
use medledger::hash::{content_hash, ChainId};
use medledger::tx::Keypair;
use medledger::Payload;

use super::research::ResearchKeys;
use super::{AppState, NodeHandle, WebConfig};
use crate::config::{
    self, read_json, read_key, read_secret, read_token, Genesis, NodeConfig, Result,
};
use crate::node::{NodeJob, RpcCall};

/// The chain id of `genesis`.
///
/// # Errors
///
/// If the genesis does not build a chain.
pub fn chain_id(genesis: &Genesis) -> Result<ChainId> {
    genesis.chain_id()
}

/// Starts the web API of the node of `config` at `addr`, sending its work on `jobs`; returns
/// the bound address.
///
/// # Errors
///
/// If the key, genesis or token file cannot be read, or the address cannot be bound.
pub fn serve_node(
    config: &NodeConfig,
    addr: SocketAddr,
    jobs: mpsc::UnboundedSender<NodeJob>,
) -> Result<SocketAddr> {
    let genesis: Genesis = read_json(&config.genesis)?;
    let emr_token = match &config.api_token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let state = AppState::new(
        NodeHandle::new(jobs),
        WebConfig {
            provider: read_key(&config.key_file)?,
            chain_id: chain_id(&genesis)?,
            emr_token,
            gate_window_secs: config.gate_window_secs,
            research: match (&config.research_key_file, &config.research_verify_key_file) {
                (Some(key), Some(verify)) => {
                    Some(ResearchKeys::new(read_secret(key)?, read_secret(verify)?))
                }
                (None, None) => None,
                _ => {
                    return Err("research_key_file and research_verify_key_file go together".into())
                }
            },
        },
    );
    super::serve(addr, state)
}

/// A one-validator consortium running in this process (the node's loop on a thread of its
/// own), with its web API on 127.0.0.1.
pub struct LocalNode {
    /// Where the web API listens.
    pub http: SocketAddr,
    /// The health authority's key (certifies providers).
    pub authority: Keypair,
    /// The node's key: the hospital's provider account.
    pub provider: Keypair,
    /// The EMR bearer token.
    pub token: String,
    /// The chain id.
    pub chain_id: ChainId,
    /// The way into the node's loop.
    pub node: NodeHandle,
}

/// A free port on 127.0.0.1 (the kernel's choice; released at once).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl LocalNode {
    /// Writes a one-node consortium to `dir` (which must not hold one) and starts it, the web
    /// API at `http` (port 0: a free one) and p2p on a free port of 127.0.0.1. The node runs
    /// until the process ends.
    ///
    /// # Errors
    ///
    /// If the consortium cannot be written or the node cannot start.
    pub fn start(dir: &Path, http: SocketAddr, block_interval_ms: u64) -> Result<Self> {
        let c = config::init(dir, 1, 30_000, block_interval_ms)?;
        let mut config = NodeConfig::load(&c.configs[0])?;
        config.listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        config.rpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        config.http = Some(http);
        let authority = read_key(&c.authority_key)?;
        let provider = read_key(&config.key_file)?;
        let token = read_token(config.api_token_file.as_deref().ok_or("no token file")?)?;
        let genesis: Genesis = read_json(&config.genesis)?;
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<NodeJob>();
        let bound = serve_node(&config, http, jobs_tx.clone())?;
        let (rpc_tx, rpc_rx) = mpsc::unbounded_channel::<RpcCall>();
        std::thread::Builder::new()
            .name("medledger-node".into())
            .spawn(move || {
                // The local RPC stays open (a closed channel would wake the loop forever).
                let _rpc = rpc_tx;
                let runner =
                    cw_tokio::Runner::new(cw_tokio::Config::default().with_worker_threads(1));
                runner.start(|ctx| async move {
                    if let Err(e) = crate::net::run(ctx, config, rpc_rx, Some(jobs_rx), None).await
                    {
                        tracing::error!("local node: {e}");
                    }
                });
            })?;
        Ok(Self {
            http: bound,
            authority,
            provider,
            token,
            chain_id: chain_id(&genesis)?,
            node: NodeHandle::new(jobs_tx),
        })
    }

    /// Starts one more web API on this node's ledger, on a free port of 127.0.0.1, signing as
    /// `member` (another consortium member's provider key) and, with `research`, serving the
    /// research aggregator routes; the EMR token is this node's. Returns where it listens.
    ///
    /// # Errors
    ///
    /// If no port can be bound.
    pub fn serve_member(
        &self,
        member: &Keypair,
        research: Option<ResearchKeys>,
    ) -> Result<SocketAddr> {
        let state = AppState::new(
            self.node.clone(),
            WebConfig {
                provider: Keypair::from_secret_bytes(member.to_secret_bytes().as_bytes()),
                chain_id: self.chain_id,
                emr_token: Some(self.token.clone()),
                gate_window_secs: crate::web::DEFAULT_GATE_WINDOW_SECS,
                research,
            },
        );
        super::serve(SocketAddr::from(([127, 0, 0, 1], 0)), state)
    }

    /// Signs `op` as `key` with its next nonce and submits it on the node.
    ///
    /// # Errors
    ///
    /// The ledger's refusal.
    pub fn submit(&self, key: &Keypair, op: AccessOp) -> Result<String> {
        let key = Keypair::from_secret_bytes(key.to_secret_bytes().as_bytes());
        self.node
            .ask_blocking(move |node| {
                let tx = node.ledger().sign(&key, Payload::Access(op));
                if let Err(r) = node.ledger().dry_run(&tx) {
                    return Err(r.to_string());
                }
                node.submit(tx)
            })?
            .map_err(Into::into)
    }

    /// Waits until the node's pool is empty (everything submitted is in a block).
    ///
    /// # Errors
    ///
    /// If it is not within `limit`.
    pub fn settle(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.node.ask_blocking(|node| node.ledger().pending())? > 0 {
            if Instant::now() > deadline {
                return Err("transactions still pending".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Sets the demo's cast on chain: the authority certifies the hospital (this node), which
    /// registers as "St Mary's Hospital"; "Dr Okafor" (a specialist) and a patient register;
    /// the hospital opens a relationship with the patient (pending) and anchors a lab record.
    ///
    /// # Errors
    ///
    /// If a step is refused or not finalised within 30 s.
    pub fn seed_demo(&self) -> Result<DemoCast> {
        let patient = Keypair::generate();
        let specialist = Keypair::generate();
        let hospital = self.provider.account();
        self.submit(
            &self.authority,
            AccessOp::CertifyProvider {
                provider: hospital,
                emergency: true,
            },
        )?;
        self.submit(
            &self.provider,
            AccessOp::register_organisation(Role::Provider, "St Mary's Hospital")?,
        )?;
        self.submit(
            &specialist,
            AccessOp::register_organisation(Role::Provider, "Dr Okafor")?,
        )?;
        let salt: [u8; 32] = *Keypair::generate().to_secret_bytes().as_bytes();
        self.submit(
            &patient,
            AccessOp::register_patient(patient.account(), "NHS-485-777-3456", &salt),
        )?;
        self.submit(
            &self.provider,
            AccessOp::CreateRelationship {
                patient: patient.account(),
            },
        )?;
        let relationship = RelationshipId::of(patient.account(), hospital);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let add = self.submit(
            &self.provider,
            AccessOp::AddPointer {
                relationship,
                record: RecordPointer {
                    query: "SELECT * FROM labs WHERE id = 4711".try_into()?,
                    content_hash: content_hash(b"HbA1c 6.1 %"),
                    category: Category::Laboratory,
                    data_period: Period::new(now - 86_400, now)?,
                },
                replaces: None,
            },
        )?;
        self.settle(Duration::from_secs(30))?;
        Ok(DemoCast {
            patient,
            specialist,
            relationship,
            record: PointerId::of_tx(crate::web::tx::parse_id("tx", &add)?),
        })
    }
}

/// Who [`LocalNode::seed_demo`] put on chain.
pub struct DemoCast {
    /// The patient (its key is what the portal loads).
    pub patient: Keypair,
    /// The specialist the patient may grant access to.
    pub specialist: Keypair,
    /// The patient's relationship with the hospital (pending).
    pub relationship: RelationshipId,
    /// The lab record the hospital anchored on it.
    pub record: PointerId,
}
