//! The application a chain runs: what its transactions carry and what they do to the state.
//!
//! The chain validates blocks, orders transactions and keeps the core's accounts, nonces and
//! keys; everything else is the application's. An [`Application`] names its payload type (the
//! part of a transaction the core never reads), its tables ([`AppState`]), the events and
//! refusals its operations produce, and what the genesis state holds. The core then drives it:
//! genesis once, [`apply`](Application::apply) per transaction under a savepoint, commit or undo
//! per block, and the state root over the core's tables and the application's together.
//!
//! MedRec access control ([`access::MedRec`](crate::access::MedRec)) is the crate's application.
//! A minimal one, which anchors record hashes and nothing else:
//!
//! ```
//! use medledger::app::Application;
//! use medledger::hash::{AccountId, Digest};
//! use medledger::state::{CoreTables, TxContext};
//!
//! #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
//! struct Notary;
//!
//! impl Application for Notary {
//!     const NAME: &'static str = "notary";
//!     type Payload = Digest;
//!     type State = ();
//!     type Event = (AccountId, Digest);
//!     type Error = std::convert::Infallible;
//!     type Created = Digest;
//!     type Genesis = ();
//!
//!     fn genesis(_: &(), _: &mut (), _: &mut CoreTables, _: u64) -> Result<(), String> {
//!         Ok(())
//!     }
//!     fn apply(
//!         _: &mut (),
//!         _: &mut CoreTables,
//!         record: &Digest,
//!         cx: &TxContext,
//!     ) -> Result<Vec<Self::Event>, Self::Error> {
//!         Ok(vec![(cx.account, *record)])
//!     }
//!     fn created(event: &Self::Event) -> Option<Digest> {
//!         Some(event.1)
//!     }
//! }
//!
//! use medledger::chain::ChainBuilder;
//! use medledger::pow::ProofOfWork;
//! use medledger::tx::{Keypair, Transaction};
//!
//! let mut chain = ChainBuilder::<_, Notary>::with_app("notary", ProofOfWork::regtest(), ())
//!     .genesis_time(1_700_000_000)
//!     .build()?;
//! let key = Keypair::from_seed(&[1; 32]);
//! let tx = Transaction::sign(&key, chain.chain_id(), 0, Digest::from_bytes([7; 32]));
//! let block = chain.mine(vec![tx], 1_700_000_600)?;
//! let appended = chain.append(block)?;
//! assert_eq!(appended.applied[0].events[0].1, vec![(key.account(), Digest::from_bytes([7; 32]))]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt::Debug;

use crate::state::{AppState, CoreTables, TxContext};
use crate::tx::AppPayload;

/// An application run by a [`Chain`](crate::chain::Chain): its payload, state, events and rules.
///
/// The type itself is a marker (usually a unit struct); all state lives in
/// [`State`](Self::State), so the chain can snapshot, commit and undo it.
pub trait Application: Clone + Debug + Default + PartialEq + Eq + Send + Sync + 'static {
    /// A short name for logs and errors.
    const NAME: &'static str;
    /// What the application's transactions carry. Its canonical encoding is part of every
    /// transaction's and so of every block's.
    type Payload: AppPayload;
    /// The application's tables.
    type State: AppState;
    /// What an applied operation reports, for embedders to notify users.
    type Event: Clone + Debug + PartialEq + Eq + Send + Sync + 'static;
    /// Why an operation is refused.
    type Error: std::error::Error + Clone + PartialEq + Eq + Send + Sync + 'static;
    /// An object an operation created, named by its identifier, as the
    /// [`Ledger`](crate::ledger::Ledger) reports it to the submitter.
    type Created: Clone + Debug + PartialEq + Eq + Send + Sync + 'static;
    /// What the genesis state is built from (configuration, not transactions).
    type Genesis: Clone + Debug + Send + Sync + 'static;

    /// Writes the genesis state from `config` at genesis `time`.
    ///
    /// # Errors
    ///
    /// A description of what is wrong with `config`; the chain is then not built.
    fn genesis(
        config: &Self::Genesis,
        state: &mut Self::State,
        core: &mut CoreTables,
        time: u64,
    ) -> Result<(), String>;

    /// Applies one transaction's payload. The core has checked the signature, the signer's key
    /// and its nonce, and advances the nonce if this succeeds; on error every write made here is
    /// rolled back.
    ///
    /// # Errors
    ///
    /// The refusal, which the chain reports as
    /// [`StateError::App`](crate::state::StateError::App).
    fn apply(
        state: &mut Self::State,
        core: &mut CoreTables,
        payload: &Self::Payload,
        cx: &TxContext,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// The object `event` reports created, if any.
    fn created(event: &Self::Event) -> Option<Self::Created>;
}
