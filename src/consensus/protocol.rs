//! The protocol interface: how a consensus engine that exchanges messages is driven.
//!
//! [`Consensus`](super::Consensus) checks a block that someone produced; a [`Protocol`] is the
//! state machine that produces it, together with its peers. It never touches a socket, a clock
//! or a thread: whoever drives it (a deterministic simulator, a node on a real network, a test)
//! hands it one [`Input`] at a time with the current time and carries out the [`Output`]s it
//! returns. The same engine code therefore runs unchanged in a seeded simulation and in
//! production, and a run is reproducible from its inputs alone.
//!
//! # Driving an engine
//!
//! ```text
//!              Input::Start / Message / Timer / Transactions / Appended
//!   driver ───────────────────────────────────────────────────────────────▶ engine.handle()
//!     ▲                                                                        │
//!     │  Output::Send      → encode, deliver to the recipients' engines        │
//!     │  Output::SetTimer  → call back with Input::Timer(timer) at `at`        │
//!     │  Output::Append    → append the sealed block to the ledger, then       │
//!     │                      call back with Input::Appended                    │
//!     └──── Output::Evidence, Output::Progress → record, report ◀──────────────┘
//! ```
//!
//! 1. Send [`Input::Start`] once, after the ledger is open.
//! 2. Deliver every message from a peer as [`Input::Message`], decoded with
//!    [`Protocol::decode_message`] (bounded, canonical, never panics); the transport must
//!    authenticate the sender, whose key goes in `from`.
//! 3. Keep one deadline per timer value: a [`Output::SetTimer`] with a timer already pending
//!    replaces its deadline, [`Output::CancelTimer`] drops it. When `now` reaches a deadline,
//!    send [`Input::Timer`]. Engines ignore timers that no longer apply, so a late or spurious
//!    one is harmless.
//! 4. Append every [`Output::Append`] block to the ledger (the chain checks it again with the
//!    engine's [`Consensus`](super::Consensus) implementation) and then send
//!    [`Input::Appended`]. Send `Appended` also when a block reached the ledger some other way
//!    (block sync from a peer, a restart from the store): the engine then resumes after the
//!    ledger's tip.
//! 5. Offer client transactions with [`Input::Transactions`]; engines that propose blocks take
//!    them from what was offered.
//!
//! Time is the driver's: microseconds on any monotone clock that all inputs share (Unix time in
//! a node; virtual time in a simulator). An engine is deterministic: the same sequence of
//! `(now, input)` pairs against the same ledger gives the same outputs.
//!
//! An input the engine refuses (a message with a bad signature, from a non-validator, for a
//! round too far ahead; an invalid transaction) returns an error and changes nothing; the
//! driver may log it or score the peer down, and carries on.
//!
//! # Writing an engine
//!
//! Implement [`Protocol`] for the engine's state. Its [`Message`](Protocol::Message) type is
//! [`Canonical`]: one strict, size-bounded decoder is all that faces the network. Its
//! [`Ledger`](Protocol::Ledger) is whatever it reads to build and check blocks (the crate's
//! engines read a [`Chain`](crate::chain::Chain), or a [`Ledger`](crate::ledger::Ledger) whose
//! pool the engine proposes from and submits to); it must not append blocks to it, since appending is
//! the driver's, through [`Output::Append`].

use core::fmt::Debug;

use crate::codec::{self, Canonical, DecodeError};
use crate::tx::PublicKey;

/// The driver's clock: microseconds.
pub type Time = u64;

/// Who a message goes to. Peers are named by the public key their transport authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipients {
    /// One peer.
    One(PublicKey),
    /// Each of these peers.
    Some(Vec<PublicKey>),
    /// Every peer the driver knows (never back to the sender itself).
    All,
}

impl Recipients {
    /// Whether `peer` is among the recipients (for [`All`](Self::All): always).
    pub fn includes(&self, peer: &PublicKey) -> bool {
        match self {
            Recipients::One(p) => p == peer,
            Recipients::Some(ps) => ps.contains(peer),
            Recipients::All => true,
        }
    }
}

/// Something that happened to an engine. `M` is its message type, `T` its timer and `X` a
/// transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<M, T, X> {
    /// Begin: read the ledger's tip and start agreeing on the next block.
    Start,
    /// A message from a peer, decoded with [`Protocol::decode_message`].
    Message {
        /// The sender, as the transport authenticated it.
        from: PublicKey,
        /// The message.
        message: M,
    },
    /// A timer the engine set ([`Output::SetTimer`]) is due.
    Timer(T),
    /// Transactions offered for inclusion in a block.
    Transactions(Vec<X>),
    /// The ledger's main chain grew, through an [`Output::Append`] of this engine or from
    /// elsewhere (block sync, a restart): the engine moves on past the new tip.
    Appended,
}

/// What the driver must do after an input. `M` is the engine's message type, `T` its timer,
/// `B` its sealed block and `E` its evidence of misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<M, T, B, E> {
    /// Send `message` to `to`.
    Send {
        /// The recipients.
        to: Recipients,
        /// The message.
        message: M,
    },
    /// Send [`Input::Timer`]`(timer)` when the clock reaches `at`, replacing any pending
    /// deadline of the same timer.
    SetTimer {
        /// Which timer.
        timer: T,
        /// When it is due.
        at: Time,
    },
    /// Forget the pending deadline of this timer, if any.
    CancelTimer(T),
    /// A block the engine holds final, with its seal: append it to the ledger, then send
    /// [`Input::Appended`].
    Append(B),
    /// Verifiable proof that a peer broke the protocol (for example by signing two conflicting
    /// votes), to keep, report or put on chain.
    Evidence(E),
    /// The engine began a new height or round (for monitoring and simulations: rounds above 0
    /// mean the first proposer of the height failed).
    Progress {
        /// The height being agreed.
        height: u64,
        /// Its round.
        round: u32,
    },
}

/// The outputs of one [`Protocol::handle`] call.
pub type Outputs<P> = Vec<
    Output<
        <P as Protocol>::Message,
        <P as Protocol>::Timer,
        <P as Protocol>::Block,
        <P as Protocol>::Evidence,
    >,
>;

/// The input type of engine `P`.
pub type ProtocolInput<P> =
    Input<<P as Protocol>::Message, <P as Protocol>::Timer, <P as Protocol>::Tx>;

/// A consensus engine as a deterministic, sans-I/O state machine (see the [module](self)
/// documentation for how to drive one).
pub trait Protocol {
    /// What peers exchange. Decoded from untrusted bytes with
    /// [`decode_message`](Self::decode_message), which bounds its size before anything is
    /// allocated.
    type Message: Canonical + Clone + Debug;
    /// The engine's timers (a timer names what it is for, such as a round's step).
    type Timer: Clone + Debug + Eq + Ord;
    /// The transactions the engine orders.
    type Tx;
    /// A sealed block, ready to append.
    type Block;
    /// Proof of a peer's misbehaviour.
    type Evidence;
    /// Why an input was refused.
    type Error: std::error::Error + Send + Sync + 'static;
    /// What the engine reads to build and check blocks (the chain it runs on).
    type Ledger: ?Sized;

    /// Handles one input at time `now` and returns what the driver must do.
    ///
    /// # Errors
    ///
    /// [`Self::Error`] saying why the input was refused; the engine is then unchanged.
    fn handle(
        &mut self,
        ledger: &mut Self::Ledger,
        now: Time,
        input: ProtocolInput<Self>,
    ) -> Result<Outputs<Self>, Self::Error>;

    /// Decodes a message received from a peer: its canonical encoding, at most
    /// [`Canonical::MAX_ENCODED_LEN`] bytes, with no trailing bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] saying what is wrong with the bytes; never panics.
    fn decode_message(bytes: &[u8]) -> Result<Self::Message, DecodeError> {
        codec::decode(bytes)
    }

    /// Encodes a message for sending (the canonical encoding).
    fn encode_message(message: &Self::Message) -> Vec<u8> {
        codec::encode(message)
    }
}
