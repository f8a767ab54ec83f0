//! Light-client proofs that a grant was active at a block.
//!
//! A grant's record never changes once made, and its revocation is a separate record written
//! once. A [`GrantProof`] carries both (the revocation or its absence) with their
//! [`StateProof`]s; [`GrantProof::verify`] checks them against a header's state root alone, so a
//! hospital can show a third party that it was allowed, without the ledger's state.
//!
//! ```no_run
//! # fn demo(chain: &medledger::Chain<medledger::pow::ProofOfWork>,
//! #         grant: medledger::access::GrantId) -> Result<(), Box<dyn std::error::Error>> {
//! use medledger::access::GrantProof;
//! let height = chain.height();
//! let bytes = chain.prove_grant(&grant, height).expect("grant exists").encode();
//! // … sent to a verifier that trusts the header at `height` …
//! let header = chain.header_at(height).unwrap();
//! let status = GrantProof::decode(&bytes)?.verify(&header.state_root, &grant, header.timestamp)?;
//! assert!(status.is_active());
//! # Ok(()) }
//! ```

use serde::{Deserialize, Serialize};

use super::{Grant, GrantId, Revocation, Stamp, GRANTS_TABLE, REVOCATIONS_TABLE};
use crate::codec::{self, Canonical, DecodeError};
use crate::hash::StateRoot;
use crate::smt::{ProofError, StateProof};
use crate::state::{entry_key, value_digest};

/// A proof of a grant's record and of its revocation (or absence of one) under a state root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantProof {
    /// The grant.
    pub grant: Grant,
    /// Proof of the grant's entry.
    pub grant_proof: StateProof,
    /// Its revocation, if it was revoked by then.
    pub revocation: Option<Revocation>,
    /// Proof of the revocation's entry, or of its absence.
    pub revocation_proof: StateProof,
}

impl Canonical for GrantProof {
    const NAME: &'static str = "grant proof";
    const MAX_ENCODED_LEN: usize = 64 * 1024;
}

/// What a verified [`GrantProof`] shows about the grant at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantStatus {
    /// Active: not revoked, and the time is inside its period.
    Active,
    /// Not revoked, but its period has not started.
    NotYetValid,
    /// Not revoked, but its period is over.
    Expired,
    /// Revoked, at this height and time.
    Revoked(Stamp),
}

impl GrantStatus {
    /// Whether the grant is active.
    pub fn is_active(&self) -> bool {
        matches!(self, GrantStatus::Active)
    }
}

/// Why a [`GrantProof`] does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantProofError {
    /// The proof is about another grant.
    #[error("the proof is about grant {found}, not {expected}")]
    WrongGrant {
        /// The grant asked about.
        expected: GrantId,
        /// The grant in the proof.
        found: GrantId,
    },
    /// The grant's record is not proven.
    #[error("grant record: {0}")]
    Grant(#[source] ProofError),
    /// The revocation (or its absence) is not proven.
    #[error("revocation record: {0}")]
    Revocation(#[source] ProofError),
}

impl GrantProof {
    /// Checks the proof against `state_root` and tells the grant's status at `at_time` (give
    /// the header's timestamp to ask "at that block").
    ///
    /// # Errors
    ///
    /// [`GrantProofError`] if the proof is about another grant or does not lead to the root.
    pub fn verify(
        &self,
        state_root: &StateRoot,
        grant: &GrantId,
        at_time: u64,
    ) -> Result<GrantStatus, GrantProofError> {
        if self.grant.id != *grant {
            return Err(GrantProofError::WrongGrant {
                expected: *grant,
                found: self.grant.id,
            });
        }
        self.grant_proof
            .verify(
                state_root,
                &entry_key(GRANTS_TABLE, grant),
                Some(&value_digest(&self.grant)),
            )
            .map_err(GrantProofError::Grant)?;
        let revocation = self.revocation.as_ref().map(value_digest);
        self.revocation_proof
            .verify(
                state_root,
                &entry_key(REVOCATIONS_TABLE, grant),
                revocation.as_ref(),
            )
            .map_err(GrantProofError::Revocation)?;
        let period = self.grant.terms.period;
        Ok(match &self.revocation {
            Some(r) => GrantStatus::Revoked(r.at),
            None if at_time < period.start => GrantStatus::NotYetValid,
            None if at_time >= period.end => GrantStatus::Expired,
            None => GrantStatus::Active,
        })
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a canonical encoding.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{reason, Cast, DAY};
    use crate::access::AccessOp;
    use crate::State;
    use proptest::prelude::*;

    fn prove(state: &State, grant: &GrantId) -> GrantProof {
        GrantProof {
            grant: state.access().grant(grant).unwrap().clone(),
            grant_proof: state.prove(GRANTS_TABLE, grant),
            revocation: state.access().revocation(grant).cloned(),
            revocation_proof: state.prove(REVOCATIONS_TABLE, grant),
        }
    }

    #[test]
    fn proofs_show_active_expired_and_revoked() {
        let mut c = Cast::new();
        let (rel, _, _) = c.with_records();
        let g = c.h.grant(&c.patient, c.treat_terms(rel, 30), None);
        let (root, now) = (c.h.root(), c.h.time);
        let proof = prove(&c.h.state, &g);
        let bytes = proof.encode();
        let decoded = GrantProof::decode(&bytes).unwrap();
        assert_eq!(decoded, proof);
        assert_eq!(decoded.verify(&root, &g, now), Ok(GrantStatus::Active));
        assert_eq!(
            decoded.verify(&root, &g, now + 31 * DAY),
            Ok(GrantStatus::Expired)
        );
        assert_eq!(
            decoded.verify(&root, &g, now - DAY),
            Ok(GrantStatus::NotYetValid)
        );
        assert!(matches!(
            decoded.verify(&root, &GrantId::default(), now),
            Err(GrantProofError::WrongGrant { .. })
        ));
        // A widened grant does not verify.
        let mut forged = proof.clone();
        forged.grant.terms.period.end += DAY;
        assert!(matches!(
            forged.verify(&root, &g, now),
            Err(GrantProofError::Grant(_))
        ));

        c.h.ok(
            &c.patient,
            AccessOp::RevokeGrant {
                grant: g,
                reason: reason("done"),
            },
        );
        let new_root = c.h.root();
        // The old proof still holds at the old root, not at the new one.
        assert_eq!(proof.verify(&root, &g, now), Ok(GrantStatus::Active));
        assert!(proof.verify(&new_root, &g, now).is_err());
        let revoked = prove(&c.h.state, &g);
        assert!(
            matches!(revoked.verify(&new_root, &g, now), Ok(GrantStatus::Revoked(at)) if at.height == c.h.height)
        );
        // Hiding the revocation does not verify.
        let mut hidden = revoked;
        hidden.revocation = None;
        assert!(matches!(
            hidden.verify(&new_root, &g, now),
            Err(GrantProofError::Revocation(_))
        ));
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(p) = GrantProof::decode(&bytes) {
                prop_assert_eq!(p.encode(), bytes);
            }
        }
    }
}
