//! The committee consensus engine: checks committee seals for the chain.

use std::collections::HashSet;

use super::identity::Randomness;
use super::seal::{
    attempt_of, commitment_of, verify_certificate, verify_directory, verify_signatures, Commitment,
    SigChecker, SigItem,
};
use super::{CommitteeParams, CommitteeSeal, FinalValue, SealError, Stage};
use crate::block::Header;
use crate::consensus::{Ancestors, Consensus, ConsensusError, Finality, Work};
use crate::hash::TxId;
use crate::merkle::merkle_root;
use crate::tx::{AppPayload, PublicKey, VerifiedTx};

/// Partitioned committee consensus: blocks certified by shard committees and a final committee
/// whose members proved their identities with proof of work (see the [module](super) docs).
///
/// Every certified block is final ([`Finality::Instant`]): once the chain appends it, no other
/// branch replaces it, however long, so an outsider's branch of forged blocks from below the tip
/// is refused whatever its weight. Each block adds the same work ([`Work`] of 1); the protocol's
/// safety is what keeps a height from having two certified blocks.
#[derive(Clone, Debug)]
pub struct CommitteeConsensus {
    params: CommitteeParams,
}

impl CommitteeConsensus {
    /// An engine with `params`.
    pub fn new(params: CommitteeParams) -> Self {
        Self { params }
    }

    /// The parameters.
    pub fn params(&self) -> &CommitteeParams {
        &self.params
    }

    /// Checks `header`'s seal against its `parent` with signatures checked by `check`
    /// (batch verification for the chain; a memoising checker in the simulator).
    pub(crate) fn verify_seal_with(
        &self,
        header: &Header<CommitteeSeal>,
        parent: &Header<CommitteeSeal>,
        now: u64,
        check: &mut SigChecker<'_>,
    ) -> Result<(), ConsensusError> {
        let keys: Vec<PublicKey> = parent.seal.cert.members.iter().map(|m| m.key).collect();
        let directory = if parent.height == 0 {
            self.params.bootstrap()
        } else {
            &keys
        };
        let parent = ParentView {
            timestamp: parent.timestamp,
            next_randomness: parent.seal.next_randomness(),
            final_keys: &keys,
            directory,
            commitments: &parent.seal.commitments,
        };
        verify_seal(&self.params, header, &parent, now, check)
    }

    /// Checks that `txs` are the concatenation of the certified shard slices: each transaction
    /// in its shard's slice, each slice with its certified root.
    pub(crate) fn check_body(
        &self,
        seal: &CommitteeSeal,
        ids_and_signers: &[(TxId, crate::tx::PublicKey)],
    ) -> Result<(), SealError> {
        let mut at = 0usize;
        for sc in &seal.shards {
            let n = sc.summary.tx_count as usize;
            let slice = ids_and_signers
                .get(at..at + n)
                .ok_or(SealError::ShardRootMismatch {
                    shard: sc.summary.shard,
                })?;
            for (j, (_, signer)) in slice.iter().enumerate() {
                let found = self.params.shard_of_key(signer);
                if found != sc.summary.shard {
                    return Err(SealError::TxInWrongShard {
                        index: at + j,
                        expected: sc.summary.shard,
                        found,
                    });
                }
            }
            let ids: Vec<TxId> = slice.iter().map(|(id, _)| *id).collect();
            if merkle_root(&ids) != sc.summary.tx_root {
                return Err(SealError::ShardRootMismatch {
                    shard: sc.summary.shard,
                });
            }
            at += n;
        }
        Ok(())
    }
}

impl Consensus for CommitteeConsensus {
    type Seal = CommitteeSeal;

    fn name(&self) -> &'static str {
        "committee"
    }

    fn genesis_seal(&self) -> CommitteeSeal {
        CommitteeSeal {
            randomness: self.params.genesis_randomness(),
            shards: Default::default(),
            commitments: Default::default(),
            reveals: Default::default(),
            directory: super::DirectoryCert::empty(),
            cert: super::Certificate::empty(),
        }
    }

    fn verify_header(
        &self,
        header: &Header<CommitteeSeal>,
        ancestors: &dyn Ancestors<CommitteeSeal>,
        now: u64,
    ) -> Result<Work, ConsensusError> {
        let mut check = |items: &[SigItem]| verify_signatures(items);
        self.verify_seal_with(header, ancestors.parent(), now, &mut check)?;
        Ok(Work::from_u64(1))
    }

    /// A block certified by the final committee is final.
    fn finality(&self) -> Finality {
        Finality::Instant
    }

    fn verify_body<P: AppPayload>(
        &self,
        header: &Header<CommitteeSeal>,
        txs: &[VerifiedTx<P>],
    ) -> Result<(), ConsensusError> {
        let pairs: Vec<_> = txs.iter().map(|t| (t.id(), t.signer())).collect();
        self.check_body(&header.seal, &pairs)?;
        Ok(())
    }
}

/// What checking a seal needs to know of its parent: its time, the randomness of the epoch
/// after it, its final committee's keys in certificate order (whose commitments the seal's
/// reveals open) and those commitments. A node that follows the protocol knows these from the
/// last final block ([`TipInfo`](super::TipInfo)) without holding its header.
pub(crate) struct ParentView<'a> {
    /// The parent's time.
    pub timestamp: u64,
    /// The randomness of the epoch after the parent.
    pub next_randomness: Randomness,
    /// The parent's final committee (its certificate's members' keys, in order).
    pub final_keys: &'a [PublicKey],
    /// The epoch's directory: the parent's final committee, or the chain's bootstrap keys
    /// after genesis.
    pub directory: &'a [PublicKey],
    /// The parent's randomness commitments.
    pub commitments: &'a [Commitment],
}

/// Checks `header`'s seal against what is known of its parent, statelessly: the timestamp
/// (not before the parent's, not beyond `now` plus the drift), the epoch randomness, the reveals
/// of the parent's commitments, the new commitments, the directory's certificate of the epoch's
/// committees, and every shard certificate and the final certificate (each by exactly the
/// committee the directory certified), with signatures checked by `check`. It does not check `header.parent` or
/// `header.height`: the caller knows which parent it means.
pub(crate) fn verify_seal(
    p: &CommitteeParams,
    header: &Header<CommitteeSeal>,
    parent: &ParentView<'_>,
    now: u64,
    check: &mut SigChecker<'_>,
) -> Result<(), ConsensusError> {
    let seal = &header.seal;
    if header.timestamp < parent.timestamp {
        return Err(ConsensusError::TimestampTooOld {
            median: parent.timestamp,
            found: header.timestamp,
        });
    }
    if header.timestamp > now.saturating_add(p.max_future_drift()) {
        return Err(ConsensusError::TimestampTooNew {
            found: header.timestamp,
            now,
            max_drift: p.max_future_drift(),
        });
    }
    // The epoch's randomness, or that of one of its restarts.
    let expected = parent.next_randomness;
    let Some(attempt) = attempt_of(&expected, &seal.randomness) else {
        return Err(SealError::StaleRandomness {
            expected,
            found: seal.randomness,
        }
        .into());
    };
    // Reveals open the parent's commitments.
    for (i, r) in seal.reveals.iter().enumerate() {
        let bad = SealError::BadReveal {
            index: i,
            member: r.member,
        };
        if i > 0 && seal.reveals[i - 1].member >= r.member {
            return Err(bad.into());
        }
        let key = parent.final_keys.get(usize::from(r.member));
        let commitment = parent.commitments.iter().find(|c| c.member == r.member);
        match (key, commitment) {
            (Some(k), Some(c)) if commitment_of(k, &r.value) == c.value => {}
            _ => return Err(bad.into()),
        }
    }
    let required = if parent.commitments.is_empty() {
        0
    } else {
        parent.commitments.len() / 2 + 1
    };
    if seal.reveals.len() < required {
        return Err(SealError::RevealsTooFew {
            found: seal.reveals.len(),
            required,
        }
        .into());
    }
    // Commitments name final members.
    for (i, c) in seal.commitments.iter().enumerate() {
        if usize::from(c.member) >= seal.cert.members.len()
            || (i > 0 && seal.commitments[i - 1].member >= c.member)
        {
            return Err(SealError::CommitmentIndex {
                index: i,
                member: c.member,
            }
            .into());
        }
    }
    if seal.commitments.len() < p.quorum() {
        return Err(SealError::CommitmentsTooFew {
            found: seal.commitments.len(),
            required: p.quorum(),
        }
        .into());
    }
    // The directory decided who sits on which committee; every certificate below must be by
    // exactly those members (checked with each certificate).
    verify_directory(
        p,
        header.height,
        header.parent,
        attempt,
        parent.directory,
        &seal.directory,
        check,
    )?;
    // Shard certificates.
    let mut total: u64 = 0;
    let mut keys = HashSet::new();
    for (i, sc) in seal.shards.iter().enumerate() {
        let shard = sc.summary.shard;
        if usize::from(shard) >= p.committees()
            || (i > 0 && seal.shards[i - 1].summary.shard >= shard)
        {
            return Err(SealError::ShardOrder { index: i, shard }.into());
        }
        for m in &sc.cert.members {
            if !keys.insert(m.key) {
                return Err(SealError::DuplicateIdentity { key: m.key }.into());
            }
        }
        total += u64::from(sc.summary.tx_count);
    }
    if total != u64::from(header.tx_count) {
        return Err(SealError::TxCountMismatch {
            header: header.tx_count,
            shards: total,
        }
        .into());
    }
    for sc in &seal.shards {
        verify_certificate(
            p,
            &seal.randomness,
            attempt,
            &seal.directory,
            header.height,
            header.parent,
            Stage::Shard(sc.summary.shard),
            sc.summary.digest(),
            &sc.cert,
            check,
        )?;
    }
    verify_certificate(
        p,
        &seal.randomness,
        attempt,
        &seal.directory,
        header.height,
        header.parent,
        Stage::Final,
        FinalValue::of_header(header).digest(),
        &seal.cert,
        check,
    )?;
    Ok(())
}
