//! Tendermint validators on the simulated network.

use super::replicas::{medrec_load, medrec_nodes, Replicas};
use super::{CpuModel, SimError};
use crate::consensus::protocol::Input;
use crate::hash::Digest;
use crate::ledger::Ledger;
use crate::tendermint::{
    block_id, Message, Tendermint, TendermintConfig, TendermintConsensus, Timeouts, ValidatorSet,
};
use crate::tx::Keypair;
use crate::MedRec;

/// Tendermint validators, each on its own ledger (chain and mempool).
pub type TendermintReplicas = Replicas<Tendermint<MedRec>, Ledger<TendermintConsensus, MedRec>>;

/// The name of simulated Tendermint chains.
const CHAIN: &str = "medledger-sim-tendermint";

/// A Tendermint deployment.
#[derive(Clone, Debug)]
pub struct TendermintSetup {
    /// Validators (equal voting power).
    pub validators: usize,
    /// Transactions per proposed block, and per batch of client load.
    pub block_size: usize,
    /// Step timeouts.
    pub timeouts: Timeouts,
    /// CPU costs.
    pub cpu: CpuModel,
}

impl Default for TendermintSetup {
    fn default() -> Self {
        Self {
            validators: 4,
            block_size: 256,
            timeouts: Timeouts::default(),
            cpu: CpuModel::default(),
        }
    }
}

/// The key of simulated validator `i`.
pub fn validator_key(i: usize) -> Keypair {
    let mut seed = [0x7eu8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Keypair::from_seed(&seed)
}

impl TendermintSetup {
    /// Builds the deployment: genesis, one chain and one engine per validator, MedRec client
    /// load, CPU costs and equivocation.
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] for an invalid validator count.
    pub fn build(self) -> Result<TendermintReplicas, SimError> {
        let keys: Vec<Keypair> = (0..self.validators).map(validator_key).collect();
        let set = ValidatorSet::equal(keys.iter().map(Keypair::public))
            .map_err(|e| SimError::Config(e.to_string()))?;
        let engine = TendermintConsensus::new(CHAIN, set);
        let config = |e: &dyn std::fmt::Display| SimError::Config(e.to_string());
        let mut nodes = Vec::with_capacity(keys.len());
        for (key, chain, clock) in medrec_nodes(CHAIN, &engine, keys.iter().map(Keypair::public))
            .map_err(|e| config(&e))?
        {
            let ledger = Ledger::builder(chain)
                .clock(clock.clone())
                .build()
                .map_err(|e| config(&e))?;
            nodes.push((key, ledger, clock));
        }
        let chain_id = nodes[0].1.chain_id();
        let (timeouts, block_size) = (self.timeouts, self.block_size);
        let make = Box::new(move |i: usize| {
            let mut config = TendermintConfig::new(validator_key(i));
            config.timeouts = timeouts;
            config.max_block_txs = block_size;
            Tendermint::new(engine.clone(), config)
        });
        let twin_keys = keys;
        Ok(Replicas::new(
            "tendermint",
            nodes,
            make,
            medrec_load::<Tendermint<MedRec>>(chain_id, 64, block_size),
        )
        .block_id(|h| Digest::from_bytes(*block_id(h).as_bytes()))
        .cost(
            self.cpu,
            Box::new(|cpu, input| {
                cpu.message_ns
                    + match input {
                        Input::Message { message, .. } => match message {
                            Message::Vote(_) => cpu.sig_verify_ns,
                            Message::Proposal { proposal, .. } => {
                                let txs = proposal.proposal.block.block().txs.len() as u64;
                                cpu.sig_verify_ns + txs * (cpu.tx_verify_ns + cpu.tx_execute_ns)
                            }
                            Message::Polka(p) => p.signatures.len() as u64 * cpu.sig_verify_ns,
                            Message::Decided { block, .. } => {
                                block.header.seal.signatures.len() as u64 * cpu.sig_verify_ns
                            }
                        },
                        Input::Transactions(txs) => txs.len() as u64 * cpu.tx_verify_ns,
                        _ => 0,
                    }
            }),
        )
        .equivocate(Box::new(move |i, message| {
            message.conflicting(&twin_keys[i], chain_id)
        })))
    }
}
