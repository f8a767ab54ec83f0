//! The committee seal and what its signatures cover.
//!
//! A block's [`CommitteeSeal`] carries everything a node that saw none of the protocol's
//! messages needs to check it: the epoch randomness, each shard's certificate (its summary, the
//! committee's identity proofs and more than two thirds of their precommit signatures), the final
//! committee's randomness commitments and the previous final committee's reveals, and the final
//! certificate over all of it together with the header fields.

use serde::{Deserialize, Serialize};

use super::identity::{IdentityProof, Randomness};
use super::{quorum_of, CommitteeParams, SealError, MAX_COMMITTEE_SIZE, MAX_SHARDS};
use crate::block::{Header, MAX_HEADER_LEN};
use crate::codec::{self, BoundedVec, Canonical};
use crate::hash::{domain, BlockHash, Digest, MerkleRoot, StateRoot};
use crate::tx::{PublicKey, Signature};

/// The largest encoded seal accepted, in bytes (it must fit in a header).
pub const MAX_SEAL_LEN: usize = MAX_HEADER_LEN - 1024;

/// Which agreement a vote or certificate belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// A shard committee agreeing on its shard's transactions.
    Shard(u16),
    /// The final committee agreeing on the block.
    Final,
    /// The directory agreeing on the epoch's roster (who sits on which committee).
    Directory,
}

impl core::fmt::Display for Stage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Stage::Shard(s) => write!(f, "shard {s}"),
            Stage::Final => f.write_str("final committee"),
            Stage::Directory => f.write_str("directory"),
        }
    }
}

/// The step of the agreement a signature is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// A leader's proposal.
    Propose,
    /// A first-round vote (enough of them lock the value).
    Prevote,
    /// A second-round vote (more than two thirds of them certify the value).
    Precommit,
}

/// What a committee member signs: BLAKE3 in the [`domain::COMMITTEE_VOTE`] domain over this
/// structure's canonical encoding ([`VoteBody::digest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteBody {
    /// Height of the block being agreed.
    pub height: u64,
    /// Its parent.
    pub parent: BlockHash,
    /// Shard or final agreement.
    pub stage: Stage,
    /// The epoch's attempt at this height: 0, or how many times the epoch restarted (see
    /// [`attempt_randomness`]). Votes of one attempt never count in another.
    pub attempt: u32,
    /// The round (view) of the agreement.
    pub round: u32,
    /// Proposal, prevote or precommit.
    pub phase: Phase,
    /// Digest of the value ([`ShardSummary::digest`] or [`FinalValue::digest`]).
    pub value: Digest,
}

impl VoteBody {
    /// The 32 bytes that are signed.
    pub fn digest(&self) -> [u8; 32] {
        tagged_hash(&domain::COMMITTEE_VOTE, 0, self)
    }
}

fn tagged_hash<T: Serialize>(d: &crate::hash::Domain, tag: u8, value: &T) -> [u8; 32] {
    let mut buf = Vec::with_capacity(128);
    codec::encode_body_into(&(tag, value), &mut buf);
    d.hash(&buf)
}

/// A member's signature, naming the member by its index in the certificate's member list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSignature {
    /// Index into the committee's members.
    pub member: u16,
    /// Signature over the [`VoteBody`] digest.
    pub signature: Signature,
}

/// A committee's certificate: its members (identity proofs, sorted by key) and more than two
/// thirds of them signing the precommit of one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The round whose precommits are collected.
    pub round: u32,
    /// The committee as the directory published it, sorted by public key.
    pub members: BoundedVec<IdentityProof, MAX_COMMITTEE_SIZE>,
    /// Precommit signatures, by strictly increasing member index.
    pub signatures: BoundedVec<MemberSignature, MAX_COMMITTEE_SIZE>,
}

impl Certificate {
    /// A certificate with no members (the genesis seal's).
    pub fn empty() -> Self {
        Self {
            round: 0,
            members: BoundedVec::new(),
            signatures: BoundedVec::new(),
        }
    }
}

/// What a shard committee certifies: its shard's slice of the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSummary {
    /// The shard.
    pub shard: u16,
    /// Merkle root of the shard's transaction ids, in block order.
    pub tx_root: MerkleRoot,
    /// How many transactions the shard contributes.
    pub tx_count: u32,
}

impl ShardSummary {
    /// The value digest shard members vote on.
    pub fn digest(&self) -> Digest {
        Digest::from_bytes(tagged_hash(&domain::COMMITTEE_VOTE, 1, self))
    }
}

/// A shard's summary with its committee's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCertificate {
    /// What the shard committee agreed.
    pub summary: ShardSummary,
    /// The shard committee's certificate.
    pub cert: Certificate,
}

/// The digest of committee `committee`'s member list as the directory certified it.
pub fn committee_digest(committee: u16, members: &[IdentityProof]) -> Digest {
    Digest::from_bytes(tagged_hash(
        &domain::COMMITTEE_VOTE,
        3,
        &(committee, members),
    ))
}

/// The value the directory votes on: the digests of every committee's member list, committee
/// 0 (the final committee) first.
pub fn roster_digest(committees: &[Digest]) -> Digest {
    Digest::from_bytes(tagged_hash(&domain::COMMITTEE_VOTE, 4, &committees))
}

/// The directory's certificate of an epoch's committees: more than two thirds of the directory
/// (the parent block's final committee; the chain's bootstrap identities for the first block)
/// precommitted to the member lists whose digests it holds. A seal's certificates count only
/// if their members are exactly these lists, so no one outside the directory's decision can
/// make up a committee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryCert {
    /// The round of the directory's agreement whose precommits are collected.
    pub round: u32,
    /// Each committee's [`committee_digest`], by committee index.
    pub committees: BoundedVec<Digest, MAX_SHARDS>,
    /// Precommit signatures, by strictly increasing index into the directory's keys.
    pub signatures: BoundedVec<MemberSignature, MAX_COMMITTEE_SIZE>,
}

impl DirectoryCert {
    /// No certificate (the genesis seal's).
    pub fn empty() -> Self {
        Self {
            round: 0,
            committees: BoundedVec::new(),
            signatures: BoundedVec::new(),
        }
    }

    /// The value its signatures are over ([`roster_digest`]).
    pub fn value(&self) -> Digest {
        roster_digest(&self.committees)
    }
}

/// A final-committee member's commitment to its randomness share (revealed in the next block).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// Index of the member in the final certificate's member list.
    pub member: u16,
    /// [`commitment_of`] its key and share.
    pub value: Digest,
}

/// The reveal of a share committed in the parent block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    /// Index of the member in the parent's final certificate's member list.
    pub member: u16,
    /// The share.
    pub value: Digest,
}

/// The commitment of `key` to randomness share `share`.
pub fn commitment_of(key: &PublicKey, share: &Digest) -> Digest {
    Digest::from_bytes(tagged_hash(&domain::COMMITTEE_RANDOMNESS, 0, &(key, share)))
}

/// The randomness of the epoch after a block whose own epoch randomness is `current` and which
/// carries `reveals`: BLAKE3 over `current` and the XOR of the revealed shares.
pub fn next_randomness(current: &Randomness, reveals: &[Reveal]) -> Randomness {
    let mut xor = [0u8; 32];
    for r in reveals {
        for (x, b) in xor.iter_mut().zip(r.value.as_bytes()) {
            *x ^= b;
        }
    }
    Randomness::from_bytes(tagged_hash(
        &domain::COMMITTEE_RANDOMNESS,
        1,
        &(current, Digest::from_bytes(xor)),
    ))
}

/// The randomness of attempt `attempt` at a height whose first attempt has randomness `base`:
/// `base` itself for attempt 0, then BLAKE3 over `base` and the attempt. An epoch restarts
/// (moves to the next attempt, with fresh identities and committees) when the directory
/// certified a final committee too small to ever certify a block; at most
/// [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS) attempts per height.
pub fn attempt_randomness(base: &Randomness, attempt: u32) -> Randomness {
    if attempt == 0 {
        *base
    } else {
        Randomness::from_bytes(tagged_hash(
            &domain::COMMITTEE_RANDOMNESS,
            3,
            &(base, attempt),
        ))
    }
}

/// The attempt whose randomness is `randomness` at a height whose first attempt has `base`.
pub fn attempt_of(base: &Randomness, randomness: &Randomness) -> Option<u32> {
    (0..super::MAX_ATTEMPTS).find(|a| attempt_randomness(base, *a) == *randomness)
}

/// The randomness of the first epoch, derived from a chain's genesis seed.
pub fn genesis_randomness(seed: &[u8]) -> Randomness {
    Randomness::from_bytes(tagged_hash(&domain::COMMITTEE_RANDOMNESS, 2, &seed))
}

/// The seal of a committee block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeSeal {
    /// The randomness this block's identities were mined against.
    pub randomness: Randomness,
    /// Certificates of the shards included, by strictly increasing shard.
    pub shards: BoundedVec<ShardCertificate, MAX_SHARDS>,
    /// The final committee's commitments to the next randomness shares.
    pub commitments: BoundedVec<Commitment, MAX_COMMITTEE_SIZE>,
    /// Reveals of the parent block's commitments.
    pub reveals: BoundedVec<Reveal, MAX_COMMITTEE_SIZE>,
    /// The directory's certificate of this epoch's committees.
    pub directory: DirectoryCert,
    /// The final committee's certificate over the [`FinalValue`].
    pub cert: Certificate,
}

impl Canonical for CommitteeSeal {
    const NAME: &'static str = "committee seal";
    const MAX_ENCODED_LEN: usize = MAX_SEAL_LEN;
}

/// A committee block's hash leaves out who signed its final certificate, and in which round:
/// final members that decided one [`FinalValue`] but collected different quorums of precommits
/// seal one block with one hash. Everything the final committee voted on (the value, with the
/// shard and directory certificates) and the committee itself (`cert.members`, whose identities decide the
/// next epoch's directory) stay covered.
impl crate::block::Seal for CommitteeSeal {
    fn encode_committed(&self, out: &mut Vec<u8>) {
        let CommitteeSeal {
            randomness,
            shards,
            commitments,
            reveals,
            directory,
            cert,
        } = self;
        codec::encode_into(
            &(
                randomness,
                shards,
                commitments,
                reveals,
                directory,
                &cert.members,
            ),
            out,
        );
    }
}

impl CommitteeSeal {
    /// The randomness of the next epoch (see [`next_randomness`]).
    pub fn next_randomness(&self) -> Randomness {
        next_randomness(&self.randomness, &self.reveals)
    }
}

/// What the final committee agrees on: the header fields and the seal without its final
/// certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalValue {
    /// Block time.
    pub timestamp: u64,
    /// Merkle root of all transaction ids (shards concatenated in shard order).
    pub tx_root: MerkleRoot,
    /// Number of transactions.
    pub tx_count: u32,
    /// State root after the block.
    pub state_root: StateRoot,
    /// The epoch randomness.
    pub randomness: Randomness,
    /// The shard certificates.
    pub shards: BoundedVec<ShardCertificate, MAX_SHARDS>,
    /// Commitments to the next randomness shares.
    pub commitments: BoundedVec<Commitment, MAX_COMMITTEE_SIZE>,
    /// Reveals of the parent's commitments.
    pub reveals: BoundedVec<Reveal, MAX_COMMITTEE_SIZE>,
    /// The directory's certificate of the epoch's committees.
    pub directory: DirectoryCert,
}

impl FinalValue {
    /// The value digest final members vote on.
    pub fn digest(&self) -> Digest {
        Digest::from_bytes(tagged_hash(&domain::COMMITTEE_VOTE, 2, self))
    }

    /// The value a sealed header certifies.
    pub fn of_header(header: &Header<CommitteeSeal>) -> Self {
        Self {
            timestamp: header.timestamp,
            tx_root: header.tx_root,
            tx_count: header.tx_count,
            state_root: header.state_root,
            randomness: header.seal.randomness,
            shards: header.seal.shards.clone(),
            commitments: header.seal.commitments.clone(),
            reveals: header.seal.reveals.clone(),
            directory: header.seal.directory.clone(),
        }
    }

    /// The seal with final certificate `cert`.
    pub fn into_seal(self, cert: Certificate) -> CommitteeSeal {
        CommitteeSeal {
            randomness: self.randomness,
            shards: self.shards,
            commitments: self.commitments,
            reveals: self.reveals,
            directory: self.directory,
            cert,
        }
    }
}

/// One signature to check: key, signed digest, signature.
pub(crate) type SigItem = (PublicKey, [u8; 32], Signature);

/// Checks signatures; on failure returns the index of a bad one.
pub(crate) type SigChecker<'a> = dyn FnMut(&[SigItem]) -> Result<(), usize> + 'a;

/// Batch-verifies signatures; a failed batch is re-checked one by one with strict verification
/// so that the error names a bad signature.
pub(crate) fn verify_signatures(items: &[SigItem]) -> Result<(), usize> {
    let mut keys = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    for (i, (k, _, s)) in items.iter().enumerate() {
        keys.push(k.verifying_key().map_err(|_| i)?);
        // Batch verification accepts a small-order `R` that strict verification refuses: such a
        // second signature would give one certificate two encodings (and blocks two hashes).
        if crate::tx::has_small_order_r(s) {
            return Err(i);
        }
        sigs.push(ed25519_dalek::Signature::from_bytes(&s.to_bytes()));
    }
    let msgs: Vec<&[u8]> = items.iter().map(|(_, m, _)| m.as_slice()).collect();
    if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok() {
        return Ok(());
    }
    for (i, ((key, msg), sig)) in keys.iter().zip(&msgs).zip(&sigs).enumerate() {
        if key.verify_strict(msg, sig).is_err() {
            return Err(i);
        }
    }
    Ok(())
}

/// Checks a committee's member list (identity proofs, committee bits, order, size) without
/// signatures.
pub(crate) fn verify_members(
    params: &CommitteeParams,
    randomness: &Randomness,
    stage: Stage,
    members: &[IdentityProof],
) -> Result<(), SealError> {
    let committee = match stage {
        Stage::Shard(s) => s,
        Stage::Final | Stage::Directory => 0,
    };
    if members.len() > usize::from(params.committee_size()) {
        return Err(SealError::CommitteeTooLarge {
            stage,
            size: members.len(),
            max: usize::from(params.committee_size()),
        });
    }
    for (i, m) in members.iter().enumerate() {
        if i > 0 && members[i - 1].key >= m.key {
            return Err(SealError::MembersNotSorted { stage, member: i });
        }
        if m.key.verifying_key().is_err() {
            return Err(SealError::InvalidMemberKey { stage, member: i });
        }
        let h = m.hash(randomness);
        if !h.meets(params.identity_difficulty()) {
            return Err(SealError::IdentityPowNotMet {
                stage,
                member: i,
                key: m.key,
            });
        }
        let found = h.committee(params.shard_bits());
        if found != committee {
            return Err(SealError::WrongCommittee {
                stage,
                member: i,
                expected: committee,
                found,
            });
        }
    }
    Ok(())
}

/// Checks a certificate: members as [`verify_members`] and exactly the committee `directory`
/// certified, a quorum of signatures by increasing member index, and every signature over the
/// precommit of `value` at `height` on `parent`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn verify_certificate(
    params: &CommitteeParams,
    randomness: &Randomness,
    attempt: u32,
    directory: &DirectoryCert,
    height: u64,
    parent: BlockHash,
    stage: Stage,
    value: Digest,
    cert: &Certificate,
    check: &mut SigChecker<'_>,
) -> Result<(), SealError> {
    verify_members(params, randomness, stage, &cert.members)?;
    check_roster_member_list(directory, stage, &cert.members)?;
    let keys: Vec<PublicKey> = cert.members.iter().map(|m| m.key).collect();
    let body = VoteBody {
        height,
        parent,
        stage,
        attempt,
        round: cert.round,
        phase: Phase::Precommit,
        value,
    };
    verify_precommits(&body, &keys, params.quorum(), &cert.signatures, check)
}

/// Checks that `signatures` are at least `quorum` precommits `body` by distinct `keys`, named
/// by strictly increasing index.
fn verify_precommits(
    body: &VoteBody,
    keys: &[PublicKey],
    quorum: usize,
    signatures: &[MemberSignature],
    check: &mut SigChecker<'_>,
) -> Result<(), SealError> {
    let stage = body.stage;
    if signatures.len() < quorum {
        return Err(SealError::QuorumNotMet {
            stage,
            signatures: signatures.len(),
            quorum,
        });
    }
    let digest = body.digest();
    let mut items = Vec::with_capacity(signatures.len());
    for (i, s) in signatures.iter().enumerate() {
        match keys.get(usize::from(s.member)) {
            Some(key) if i == 0 || signatures[i - 1].member < s.member => {
                items.push((*key, digest, s.signature));
            }
            _ => {
                return Err(SealError::SignatureIndex {
                    stage,
                    index: i,
                    member: s.member,
                })
            }
        }
    }
    check(&items).map_err(|i| SealError::BadSignature {
        stage,
        member: signatures[i].member,
    })
}

/// Checks the directory's certificate: one digest per committee, and more than two thirds of
/// `directory` precommitting to them at `height` on `parent`.
pub(crate) fn verify_directory(
    params: &CommitteeParams,
    height: u64,
    parent: BlockHash,
    attempt: u32,
    directory: &[PublicKey],
    cert: &DirectoryCert,
    check: &mut SigChecker<'_>,
) -> Result<(), SealError> {
    if cert.committees.len() != params.committees() {
        return Err(SealError::RosterShape {
            found: cert.committees.len(),
            expected: params.committees(),
        });
    }
    let body = VoteBody {
        height,
        parent,
        stage: Stage::Directory,
        attempt,
        round: cert.round,
        phase: Phase::Precommit,
        value: cert.value(),
    };
    let quorum = quorum_of(u16::try_from(directory.len()).unwrap_or(u16::MAX));
    verify_precommits(&body, directory, quorum, &cert.signatures, check)
}

/// Checks that `members` are committee `committee`'s list as `cert` certifies it.
pub(crate) fn check_roster_member_list(
    cert: &DirectoryCert,
    stage: Stage,
    members: &[IdentityProof],
) -> Result<(), SealError> {
    let committee = match stage {
        Stage::Shard(s) => s,
        Stage::Final | Stage::Directory => 0,
    };
    match cert.committees.get(usize::from(committee)) {
        Some(d) if *d == committee_digest(committee, members) => Ok(()),
        _ => Err(SealError::NotTheDirectorysCommittee { stage }),
    }
}
