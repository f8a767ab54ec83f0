//! [`Simulation`]: a committee run on the engine-agnostic network, as one value.

use super::committee::CommitteeDeployment;
use super::network::{EngineReport, Network};
use super::{Report, SimConfig, SimError};
use crate::committee::CommitteeConsensus;
use crate::Chain;

/// A configured committee simulation: a [`CommitteeDeployment`] on a [`Network`] set up by the
/// same [`SimConfig`]. [`run`](Self::run) consumes it.
pub struct Simulation {
    network: Network<CommitteeDeployment>,
}

impl core::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Simulation")
            .field("network", &self.network)
            .finish()
    }
}

impl Simulation {
    /// Sets up nodes, keys, accounts and the chain, and puts them on the configured network.
    ///
    /// # Errors
    ///
    /// [`SimError`] if the committee parameters are invalid.
    pub fn new(cfg: SimConfig) -> Result<Self, SimError> {
        let deployment = CommitteeDeployment::new(&cfg)?;
        Ok(Self {
            network: Network::new(deployment, cfg.net_config()),
        })
    }

    /// Which nodes are Byzantine (by index).
    pub fn byzantine(&self) -> &[bool] {
        self.network.deployment().byzantine()
    }

    /// The committee parameters of the simulated chain (its bootstrap directory included), for
    /// a fresh chain that checks the blocks the run produces.
    pub fn params(&self) -> &crate::committee::CommitteeParams {
        self.network.deployment().params()
    }

    /// The chain the produced blocks were appended to.
    pub fn chain(&self) -> &Chain<CommitteeConsensus> {
        self.network.deployment().chain()
    }

    /// The network the committee nodes run on (to apply faults or run for a while before
    /// reporting).
    pub fn network(&mut self) -> &mut Network<CommitteeDeployment> {
        &mut self.network
    }

    /// Runs until the configured number of blocks is finalised (or the time limit), and
    /// reports.
    pub fn run(self) -> Report {
        self.run_with_decisions().0
    }

    /// Runs and reports the measures every engine on the network reports (for tables that put
    /// committees beside other engines); the same as [`Report::engine`].
    pub fn run_engine_report(self) -> EngineReport {
        self.run().engine
    }

    /// Runs, and also returns, for every agreement `(height, attempt, stage)`, the set of
    /// values honest nodes decided (one each when the protocol is safe).
    pub fn run_with_decisions(mut self) -> (Report, super::Decisions) {
        let report = self.finish();
        (report, self.network.into_deployment().take_decisions())
    }

    /// Runs, and also returns when each agreement began, changed rounds and decided, who led
    /// its rounds, and when each block was final: what each block waited for.
    pub fn run_traced(mut self) -> (Report, super::Trace) {
        let report = self.finish();
        (report, self.network.deployment().trace())
    }

    /// Runs, and hands back the chain every produced block was appended to.
    pub fn run_to_chain(mut self) -> (Report, Chain<CommitteeConsensus>) {
        let report = self.finish();
        (report, self.network.into_deployment().into_chain())
    }

    fn finish(&mut self) -> Report {
        let engine = self.network.run();
        self.network.deployment().report(engine)
    }
}
