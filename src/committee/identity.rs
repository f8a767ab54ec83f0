//! Identities: a proof of work binding a public key to one epoch, and the committee it selects.

use serde::{Deserialize, Serialize};

use crate::hash::{domain, hash_newtype};
use crate::tx::PublicKey;

hash_newtype! {
    /// An epoch's randomness: identities of an epoch are mined against it, so none can be
    /// precomputed before the previous block is final.
    Randomness
}

hash_newtype! {
    /// The hash of an identity proof: BLAKE3 in the [`domain::COMMITTEE_IDENTITY`] domain over
    /// `randomness ‖ public key ‖ nonce (little-endian)`. Its leading zero bits are the proof of
    /// work; its last bits pick the committee.
    IdentityHash
}

impl IdentityHash {
    /// Leading zero bits, reading the hash as a big-endian number.
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.as_bytes() {
            if *b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }

    /// Whether the hash has at least `difficulty` leading zero bits.
    pub fn meets(&self, difficulty: u8) -> bool {
        self.leading_zeros() >= u32::from(difficulty)
    }

    /// The committee this identity belongs to: the last `shard_bits` bits of the hash.
    pub fn committee(&self, shard_bits: u8) -> u16 {
        let b = self.as_bytes();
        let last = u16::from_be_bytes([b[30], b[31]]);
        if shard_bits >= 16 {
            last
        } else {
            last & ((1u16 << shard_bits) - 1)
        }
    }
}

/// An identity for one epoch: a public key and the nonce that makes its hash meet the identity
/// difficulty (Elastico's step 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdentityProof {
    /// The member's signing key.
    pub key: PublicKey,
    /// The nonce found by the member.
    pub nonce: u64,
}

impl IdentityProof {
    /// The identity hash against an epoch's randomness.
    pub fn hash(&self, randomness: &Randomness) -> IdentityHash {
        IdentityHash::from_bytes(domain::COMMITTEE_IDENTITY.hash_parts(&[
            randomness.as_bytes(),
            self.key.as_bytes(),
            &self.nonce.to_le_bytes(),
        ]))
    }

    /// Searches nonces from `start` until the hash meets `difficulty`; returns the proof and the
    /// number of hashes tried.
    pub fn mine(
        key: PublicKey,
        randomness: &Randomness,
        difficulty: u8,
        start: u64,
    ) -> (IdentityProof, u64) {
        let mut proof = IdentityProof { key, nonce: start };
        let mut tries = 1;
        while !proof.hash(randomness).meets(difficulty) {
            proof.nonce = proof.nonce.wrapping_add(1);
            tries += 1;
        }
        (proof, tries)
    }

    /// Mines an identity that lands in `committee` (tests and tools that need a given
    /// assignment; honest nodes take whatever committee their first solution gives).
    pub fn mine_for_committee(
        key: PublicKey,
        randomness: &Randomness,
        difficulty: u8,
        shard_bits: u8,
        committee: u16,
    ) -> IdentityProof {
        let mut start = 0;
        loop {
            let (p, _) = Self::mine(key, randomness, difficulty, start);
            if p.hash(randomness).committee(shard_bits) == committee {
                return p;
            }
            start = p.nonce.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mined_identities_meet_difficulty_and_pick_committees() {
        let key = crate::tx::Keypair::from_seed(&[4; 32]).public();
        let r = Randomness::from_bytes([1; 32]);
        let (p, tries) = IdentityProof::mine(key, &r, 8, 0);
        assert!(p.hash(&r).meets(8));
        assert!(tries >= 1);
        // Another epoch's randomness gives another hash.
        assert_ne!(p.hash(&r), p.hash(&Randomness::from_bytes([2; 32])));
        let q = IdentityProof::mine_for_committee(key, &r, 4, 3, 5);
        assert_eq!(q.hash(&r).committee(3), 5);
        assert!(q.hash(&r).meets(4));
        let h = IdentityHash::from_bytes([0; 32]);
        assert_eq!(h.leading_zeros(), 256);
        let mut b = [0u8; 32];
        b[1] = 0x10;
        assert_eq!(IdentityHash::from_bytes(b).leading_zeros(), 11);
    }
}
