//! MedRec as the chain's application: the payload its transactions carry, the events it reports,
//! the genesis it starts from, and the one place where the core hands a transaction to access
//! control.

use serde::{Deserialize, Serialize};

use super::{AccessError, AccessEvent, AccessOp, AccessState, Name};
use crate::app::Application;
use crate::hash::{AccountId, Digest};
use crate::state::{AppState, CoreTables, State, TableOps, TxContext};
use crate::tx::{AppPayload, EvidenceClaim, PublicKey};

/// What a MedRec transaction does.
///
/// Its canonical encoding (an enum tag, then the fields) is part of every transaction and block;
/// new variants go at the end, and unknown tags fail to decode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Payload {
    /// Anchors the hash of an off-chain record: proves the record existed, unchanged, at this
    /// block's time. Hash the record with
    /// [`content_hash`](crate::hash::content_hash).
    Data {
        /// Content hash of the record.
        record: Digest,
    },
    /// An access-control operation.
    Access(AccessOp),
}

impl AppPayload for Payload {
    fn validator_change(&self) -> Option<(PublicKey, u64)> {
        match self {
            Payload::Access(AccessOp::SetValidator { key, power }) => Some((*key, *power)),
            _ => None,
        }
    }

    fn evidence(&self) -> Option<EvidenceClaim<'_>> {
        match self {
            Payload::Access(AccessOp::RecordEvidence {
                offender,
                offence,
                evidence,
            }) => Some(EvidenceClaim {
                offender: *offender,
                offence: *offence,
                evidence: evidence.as_slice(),
            }),
            _ => None,
        }
    }

    fn record_evidence(claim: EvidenceClaim<'_>) -> Option<Self> {
        Some(Payload::Access(AccessOp::RecordEvidence {
            offender: claim.offender,
            offence: claim.offence,
            evidence: claim.evidence.to_vec().try_into().ok()?,
        }))
    }
}

/// Something that happened when a MedRec transaction was applied, for embedders to notify users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// A record hash was anchored.
    Anchored {
        /// The account that anchored it.
        account: AccountId,
        /// The record's content hash.
        record: Digest,
    },
    /// An access-control state change.
    Access(AccessEvent),
}

/// The genesis of a MedRec chain: the health authorities that certify providers, registered at
/// height 0 with their public names. The genesis header's state root commits to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Genesis {
    /// Each authority's public name (1 to [`MAX_NAME_LEN`](super::MAX_NAME_LEN) bytes) and key.
    pub authorities: Vec<(String, PublicKey)>,
}

/// The MedRec application: registrar, relationships, summaries, consent, delegation,
/// break-glass, receipts and the audit trail (see the [module documentation](super)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MedRec;

impl Application for MedRec {
    const NAME: &'static str = "medrec";
    type Payload = Payload;
    type State = AccessState;
    type Event = Event;
    type Error = AccessError;
    type Created = super::Created;
    type Genesis = Genesis;

    fn genesis(
        config: &Genesis,
        state: &mut AccessState,
        core: &mut CoreTables,
        time: u64,
    ) -> Result<(), String> {
        let mut authorities: Vec<(Name, PublicKey)> = Vec::new();
        for (name, key) in &config.authorities {
            let bad = |why: &str| format!("authority {key}: {why}");
            let name = Name::try_from(name.as_str())
                .ok()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad("name must be 1 to 128 bytes"))?;
            key.verifying_key().map_err(|e| bad(&e.to_string()))?;
            if authorities.iter().any(|(n, k)| *n == name || k == key) {
                return Err(bad("duplicate name or key"));
            }
            authorities.push((name, *key));
        }
        super::genesis(state, core, &authorities, time);
        Ok(())
    }

    fn apply(
        state: &mut AccessState,
        core: &mut CoreTables,
        payload: &Payload,
        cx: &TxContext,
    ) -> Result<Vec<Event>, AccessError> {
        Ok(match payload {
            Payload::Data { record } => vec![Event::Anchored {
                account: cx.account,
                record: *record,
            }],
            Payload::Access(op) => state
                .apply(op, cx, core)?
                .into_iter()
                .map(Event::Access)
                .collect(),
        })
    }

    fn created(event: &Event) -> Option<super::Created> {
        match event {
            Event::Access(a) => a.created(),
            Event::Anchored { .. } => None,
        }
    }
}

impl AppState for AccessState {
    fn tables<'a>(&'a self, out: &mut Vec<&'a dyn TableOps>) {
        self.list_tables(out);
    }
    fn tables_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn TableOps>) {
        self.list_tables_mut(out);
    }
}

/// Access-control views of a MedRec [`State`] (defined here, beside the application).
impl State<AccessState> {
    /// The access-control state.
    pub fn access(&self) -> &AccessState {
        self.app()
    }

    /// The key that signed for `account` in the state after block `height`, for accounts
    /// registered with the registrar (which keeps the key history).
    pub fn key_at(&self, account: &AccountId, height: u64) -> Option<PublicKey> {
        self.app.key_at(&self.core.keys, account, height)
    }

    /// Applies an access-control operation as if `signer` had signed it in block `height` at
    /// `time`, with `tx_id` for the ids it derives, skipping signatures and nonces; keeps it
    /// pending (or rolls it back on error). For benchmarks that build large states without
    /// mining.
    ///
    /// # Errors
    ///
    /// The operation's [`AccessError`].
    #[doc(hidden)]
    pub fn bench_apply_access(
        &mut self,
        signer: PublicKey,
        op: &AccessOp,
        height: u64,
        time: u64,
        tx_id: crate::hash::TxId,
    ) -> Result<Vec<AccessEvent>, AccessError> {
        self.bench_apply(signer, height, time, tx_id, |access, core, cx| {
            access.apply(op, cx, core)
        })
    }
}
/// The genesis state of a MedRec chain with `authorities` at `time` (benchmarks that build
/// states without a chain). Keys are taken as given, not checked: benchmarks use made-up ones.
///
/// # Errors
///
/// An authority name that is empty or longer than [`MAX_NAME_LEN`](super::MAX_NAME_LEN).
#[doc(hidden)]
pub fn bench_genesis(
    authorities: &[(String, PublicKey)],
    time: u64,
) -> Result<State<AccessState>, String> {
    let mut named = Vec::with_capacity(authorities.len());
    for (name, key) in authorities {
        let name = Name::try_from(name.as_str())
            .ok()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("authority {key}: name must be 1 to 128 bytes"))?;
        named.push((name, *key));
    }
    Ok(State::genesis(|access, core| {
        super::genesis(access, core, &named, time)
    }))
}

impl<C: crate::consensus::Consensus> crate::chain::ChainBuilder<C, MedRec> {
    /// Adds a health authority, registered in the genesis state with its public name: it
    /// certifies providers (see [`registrar`](super::registrar)). The genesis header's state
    /// root commits to the authorities.
    pub fn authority(mut self, name: impl Into<String>, key: PublicKey) -> Self {
        self.genesis_config_mut()
            .authorities
            .push((name.into(), key));
        self
    }
}
