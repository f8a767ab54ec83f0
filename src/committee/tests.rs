use proptest::prelude::*;

use super::*;
use crate::block::{Header, HEADER_VERSION};
use crate::codec::{self, BoundedVec};
use crate::consensus::protocol::{Input, Output, Protocol, ProtocolInput, Recipients};
use crate::hash::{BlockHash, ChainId, Digest, MerkleRoot, StateRoot};
use crate::tx::{Keypair, Signature};
use crate::{Payload, Transaction};

fn key(i: u8) -> crate::tx::PublicKey {
    Keypair::from_seed(&[i; 32]).public()
}

fn proof(i: u8, nonce: u64) -> IdentityProof {
    IdentityProof { key: key(i), nonce }
}

fn cert(n: u8, round: u32) -> Certificate {
    Certificate {
        round,
        members: (0..n)
            .map(|i| proof(i, u64::from(i) * 7))
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        signatures: (0..n)
            .map(|i| MemberSignature {
                member: u16::from(i),
                signature: Signature::from_bytes([i; 64]),
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    }
}

fn tx(seed: u8, nonce: u64) -> Transaction {
    Transaction::sign(
        &Keypair::from_seed(&[seed; 32]),
        ChainId::from_bytes([1; 32]),
        nonce,
        Payload::Data {
            record: Digest::from_bytes([seed; 32]),
        },
    )
}

fn seal(b: [u8; 32], n: u8) -> CommitteeSeal {
    CommitteeSeal {
        randomness: Randomness::from_bytes(b),
        shards: (0..n % 4)
            .map(|s| ShardCertificate {
                summary: ShardSummary {
                    shard: u16::from(s),
                    tx_root: MerkleRoot::from_bytes(b),
                    tx_count: u32::from(n),
                },
                cert: cert(n % 5, u32::from(s)),
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        commitments: (0..n % 3)
            .map(|m| Commitment {
                member: u16::from(m),
                value: Digest::from_bytes(b),
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        reveals: (0..n % 2)
            .map(|m| Reveal {
                member: u16::from(m),
                value: Digest::from_bytes(b),
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        directory: DirectoryCert {
            round: u32::from(n),
            committees: (0..n % 4)
                .map(|j| Digest::from_bytes([j; 32]))
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
            signatures: cert(n % 3, 0).signatures,
        },
        cert: cert(n % 6, u32::from(n)),
    }
}

fn final_value(b: [u8; 32], n: u8) -> FinalValue {
    let s = seal(b, n);
    FinalValue {
        timestamp: u64::from(n) * 1000,
        tx_root: MerkleRoot::from_bytes(b),
        tx_count: u32::from(n),
        state_root: StateRoot::from_bytes(b),
        randomness: s.randomness,
        shards: s.shards,
        commitments: s.commitments,
        reveals: s.reveals,
        directory: s.directory,
    }
}

fn message(kind: u8, b: [u8; 32], n: u8, h: u64) -> Message {
    let parent = BlockHash::from_bytes(b);
    let stage = if n.is_multiple_of(2) {
        Stage::Final
    } else {
        Stage::Shard(u16::from(n))
    };
    let pol = n.is_multiple_of(3).then(|| Pol {
        round: u32::from(n),
        signatures: cert(n % 4, 0).signatures,
    });
    match kind % 10 {
        0 => Message::Identity {
            height: h,
            proof: proof(n, h),
        },
        1 => Message::Assignment(CommitteeAssignment {
            height: h,
            parent,
            cert: seal(b, n).directory,
            committee: n.is_multiple_of(2).then_some(u16::from(n)),
            members: cert(n % 5, 0).members,
            final_members: cert(n % 3, 0).members,
            reveal: (n % 3 == 1).then_some(Reveal {
                member: 2,
                value: Digest::from_bytes(b),
            }),
        }),
        2 => Message::Proposal(Proposal {
            height: h,
            parent,
            stage,
            round: u32::from(n),
            value: if n.is_multiple_of(2) {
                Value::Final(Box::new(final_value(b, n)))
            } else {
                Value::Shard(ShardValue {
                    txs: (0..n % 4)
                        .map(|i| tx(n, u64::from(i)))
                        .collect::<Vec<_>>()
                        .try_into()
                        .unwrap(),
                })
            },
            pol,
            signature: Signature::from_bytes([n; 64]),
        }),
        3 => Message::Vote(Vote {
            height: h,
            parent,
            stage,
            round: u32::from(n),
            phase: if n.is_multiple_of(2) {
                Phase::Prevote
            } else {
                Phase::Precommit
            },
            value: Digest::from_bytes(b),
            member: u16::from(n),
            signature: Signature::from_bytes([n; 64]),
            proposal: (n % 4 == 2).then(|| Signature::from_bytes([n ^ 0x5a; 64])),
        }),
        4 => Message::RoundChange(RoundChange {
            height: h,
            parent,
            stage,
            round: u32::from(n) + 1,
            pol: pol.map(|p| (Digest::from_bytes(b), p)),
            value: (n % 4 == 1).then(|| {
                Value::Shard(ShardValue {
                    txs: (0..n % 3)
                        .map(|i| tx(n, u64::from(i)))
                        .collect::<Vec<_>>()
                        .try_into()
                        .unwrap(),
                })
            }),
        }),
        5 => Message::ShardResult(ShardResult {
            height: h,
            parent,
            cert: seal(b, n | 1)
                .shards
                .first()
                .cloned()
                .unwrap_or(ShardCertificate {
                    summary: ShardSummary {
                        shard: 0,
                        tx_root: MerkleRoot::from_bytes(b),
                        tx_count: 0,
                    },
                    cert: Certificate::empty(),
                }),
            txs: (0..n % 3)
                .map(|i| tx(n, u64::from(i)))
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        }),
        8 => Message::Precommits(Precommits {
            height: h,
            parent,
            stage,
            round: u32::from(n),
            value: Digest::from_bytes(b),
            signatures: cert(n % 5, 0).signatures,
        }),
        6 => Message::Commitment {
            height: h,
            value: Digest::from_bytes(b),
        },
        9 => Message::DigestProposal(DigestProposal {
            height: h,
            parent,
            stage,
            round: u32::from(n),
            value: Digest::from_bytes(b),
            pol,
            signature: Signature::from_bytes([n; 64]),
        }),
        _ => Message::Next(NextEpoch {
            header: Header {
                version: HEADER_VERSION,
                height: h,
                parent,
                tx_root: MerkleRoot::from_bytes(b),
                tx_count: u32::from(n),
                state_root: StateRoot::from_bytes(b),
                timestamp: h.wrapping_mul(3),
                seal: seal(b, n),
            },
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn messages_round_trip(kind in 0u8..10, b in any::<[u8; 32]>(), n in 0u8..12, h in any::<u64>()) {
        let m = message(kind, b, n, h);
        let bytes = codec::encode(&m);
        prop_assert_eq!(codec::decode::<Message>(&bytes).unwrap(), m.clone());
        prop_assert_eq!(m.height(), h);
        if let Message::Proposal(p) = &m {
            let pb = codec::encode(p);
            prop_assert_eq!(&codec::decode::<Proposal>(&pb).unwrap(), p);
            let vb = codec::encode(&p.value);
            prop_assert_eq!(&codec::decode::<Value>(&vb).unwrap(), &p.value);
        }
    }

    #[test]
    fn seals_round_trip(b in any::<[u8; 32]>(), n in 0u8..20) {
        let s = seal(b, n);
        let bytes = codec::encode(&s);
        prop_assert_eq!(codec::decode::<CommitteeSeal>(&bytes).unwrap(), s);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = codec::decode::<Message>(&bytes);
        let _ = codec::decode::<CommitteeSeal>(&bytes);
        let _ = codec::decode::<Proposal>(&bytes);
        let _ = codec::decode::<Vote>(&bytes);
        let _ = codec::decode::<RoundChange>(&bytes);
        let _ = codec::decode::<CommitteeAssignment>(&bytes);
        let _ = codec::decode::<ShardResult>(&bytes);
        let _ = codec::decode::<NextEpoch>(&bytes);
        let _ = codec::decode::<Value>(&bytes);
        let _ = codec::decode::<Pol>(&bytes);
        let _ = codec::decode::<Precommits>(&bytes);
    }

    #[test]
    fn corrupted_messages_never_panic(kind in 0u8..10, n in 0u8..12, pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = codec::encode(&message(kind, [7; 32], n, 9));
        let i = pos.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(m) = codec::decode::<Message>(&bytes) {
            prop_assert_eq!(codec::encode(&m), bytes);
        }
    }
}

#[test]
fn oversized_counts_are_refused_before_allocation() {
    // A membership claiming more members than a committee may hold.
    let mut bytes = vec![codec::FORMAT_VERSION, 1, 5];
    bytes.extend_from_slice(&[0; 32]);
    bytes.push(0); // committee: None
    bytes.extend_from_slice(&[0xff, 0xff, 0x03]); // 65535 members
    bytes.resize(bytes.len() + 65_535 * 40, 0); // and the bytes they would take
    let err = codec::decode::<Message>(&bytes).unwrap_err();
    assert!(
        matches!(err, codec::DecodeError::CountTooLarge { .. }),
        "{err:?}"
    );
}

#[test]
fn params_are_validated() {
    assert!(matches!(
        CommitteeParams::builder().shard_bits(9).build(),
        Err(ParamsError::TooManyShards { bits: 9, .. })
    ));
    assert!(matches!(
        CommitteeParams::builder().committee_size(0).build(),
        Err(ParamsError::CommitteeSize { .. })
    ));
    assert!(matches!(
        CommitteeParams::builder().identity_difficulty(65).build(),
        Err(ParamsError::Difficulty { .. })
    ));
    // The first block's directory is required: distinct, valid keys.
    assert!(matches!(
        CommitteeParams::builder().build(),
        Err(ParamsError::BootstrapSize { size: 0, .. })
    ));
    assert!(matches!(
        CommitteeParams::builder()
            .bootstrap([key(1), key(2), key(1)])
            .build(),
        Err(ParamsError::BootstrapKey { index: 2, .. })
    ));
    let p = CommitteeParams::builder()
        .committee_size(100)
        .bootstrap([key(1)])
        .build()
        .unwrap();
    assert_eq!(p.bootstrap(), [key(1)]);
    assert_eq!(p.quorum(), 67);
    assert_eq!(p.tolerated(), 33);
    assert_eq!(quorum_of(4), 3);
    assert_eq!(quorum_of(3), 3);
    assert_eq!(quorum_of(1), 1);
}

#[test]
fn body_must_follow_the_certified_shards() {
    let p = CommitteeParams::builder()
        .shard_bits(1)
        .bootstrap([key(1)])
        .build()
        .unwrap();
    let engine = CommitteeConsensus::new(p.clone());
    // Transactions from accounts of each shard.
    let mut by_shard: [Vec<Transaction>; 2] = [Vec::new(), Vec::new()];
    for seed in 1..40u8 {
        let t = tx(seed, 0);
        let s = usize::from(p.shard_of_key(&t.signer()));
        if by_shard[s].len() < 2 {
            by_shard[s].push(t);
        }
    }
    let summary = |s: u16, txs: &[Transaction]| ShardSummary {
        shard: s,
        tx_root: crate::merkle::merkle_root(&txs.iter().map(Transaction::id).collect::<Vec<_>>()),
        tx_count: txs.len() as u32,
    };
    let seal_of = |sums: Vec<ShardSummary>| CommitteeSeal {
        randomness: Randomness::default(),
        shards: sums
            .into_iter()
            .map(|summary| ShardCertificate {
                summary,
                cert: Certificate::empty(),
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        commitments: BoundedVec::new(),
        reveals: BoundedVec::new(),
        directory: DirectoryCert::empty(),
        cert: Certificate::empty(),
    };
    let pairs = |txs: &[Transaction]| txs.iter().map(|t| (t.id(), t.signer())).collect::<Vec<_>>();
    let all: Vec<Transaction> = by_shard.concat();
    let good = seal_of(vec![summary(0, &by_shard[0]), summary(1, &by_shard[1])]);
    assert_eq!(engine.check_body(&good, &pairs(&all)), Ok(()));
    // Shard 1's transactions claimed by shard 0.
    let wrong = seal_of(vec![summary(0, &by_shard[1])]);
    assert!(matches!(
        engine.check_body(&wrong, &pairs(&by_shard[1])),
        Err(SealError::TxInWrongShard {
            index: 0,
            expected: 0,
            found: 1
        })
    ));
    // A slice that does not match its certified root.
    let mut swapped = by_shard[0].clone();
    swapped.reverse();
    let mut txs = swapped;
    txs.extend(by_shard[1].clone());
    assert_eq!(
        engine.check_body(&good, &pairs(&txs)),
        Err(SealError::ShardRootMismatch { shard: 0 })
    );
}

#[test]
fn errors_are_send_sync_static() {
    fn check<T: Send + Sync + 'static + std::error::Error>() {}
    check::<SealError>();
    check::<ParamsError>();
    #[cfg(feature = "lab")]
    check::<crate::sim::SimError>();
}

#[test]
fn batch_signature_check_refuses_small_order_r() {
    // A member re-signs its precommit with R the identity point: the batch equation holds, strict
    // verification fails; the certificate check must refuse it, naming it.
    let k = Keypair::from_seed(&[21; 32]);
    let digest = [0x5a; 32];
    let honest = k.sign(&digest);
    let forged = crate::tx::identity_r_signature(&[21; 32], &digest);
    assert_ne!(honest, forged);
    let items = vec![(k.public(), digest, honest), (k.public(), digest, forged)];
    assert_eq!(seal::verify_signatures(&items[..1]), Ok(()));
    assert_eq!(seal::verify_signatures(&items), Err(1));
}

/// A test host: accepts every transaction, and checks signatures for real or not at all.
struct TestHost {
    check_signatures: bool,
}

/// A host that accepts everything (the buffers are filled before any check).
fn accept_all() -> TestHost {
    TestHost {
        check_signatures: false,
    }
}

/// A host that checks signatures for real (and accepts every transaction).
fn verifying() -> TestHost {
    TestHost {
        check_signatures: true,
    }
}

impl Host for TestHost {
    fn verify_signatures(
        &mut self,
        items: &[(PublicKey, [u8; 32], Signature)],
    ) -> Result<(), usize> {
        match self.check_signatures {
            true => super::seal::verify_signatures(items),
            false => Ok(()),
        }
    }
    fn verify_txs(&mut self, _: &[Transaction]) -> bool {
        true
    }
    fn next_nonce(&mut self, _: &BlockHash, _: &AccountId) -> Option<u64> {
        Some(0)
    }
    fn state_root(
        &mut self,
        _: &BlockHash,
        _: u64,
        _: u64,
        _: &[Transaction],
    ) -> Option<StateRoot> {
        Some(StateRoot::default())
    }
    fn take_txs(&mut self, _: &BlockHash, _: u16, _: usize) -> Vec<Transaction> {
        Vec::new()
    }
}

/// A node at genesis of a two-node network, not started yet, and the other node's key.
fn genesis_node() -> (Node, PublicKey) {
    genesis_node_as(1)
}

/// [`genesis_node`] with the key of `seed` (the directory is keys 1 and 2 whatever it is).
fn genesis_node_as(seed: u8) -> (Node, PublicKey) {
    genesis_node_with(seed, node_params())
}

/// [`genesis_node_as`] on `params`.
fn genesis_node_with(seed: u8, params: CommitteeParams) -> (Node, PublicKey) {
    let me = Keypair::from_seed(&[seed; 32]);
    let peer = Keypair::from_seed(&[2; 32]).public();
    let tip = TipInfo {
        height: 0,
        hash: BlockHash::from_bytes([7; 32]),
        timestamp: 0,
        next_randomness: Randomness::from_bytes([1; 32]),
        directory: vec![key(1), peer],
        commitments: vec![],
    };
    let node = Node::new(NodeConfig {
        params,
        keypair: me,
        peers: vec![peer],
        tip,
        timing: Timing::default(),
        max_shard_txs: 8,
    });
    (node, peer)
}

/// [`genesis_node`], started.
fn started_node() -> (Node, PublicKey) {
    let (mut node, peer) = genesis_node();
    node.handle(&mut accept_all(), 0, Input::Start).unwrap();
    (node, peer)
}

#[test]
fn a_node_keeps_a_bounded_number_of_bytes_for_later_epochs() {
    let (mut node, peer) = started_node();
    let members: BoundedVec<IdentityProof, MAX_COMMITTEE_SIZE> = (0..MAX_COMMITTEE_SIZE)
        .map(|i| IdentityProof {
            key: PublicKey::from_bytes([i as u8; 32]),
            nonce: i as u64,
        })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    // Large messages for a far epoch, more bytes of them than the buffer takes.
    let big = Message::Assignment(CommitteeAssignment {
        height: 1_000,
        parent: BlockHash::default(),
        cert: DirectoryCert::empty(),
        committee: None,
        members: members.clone(),
        final_members: members,
        reveal: None,
    });
    let size = codec::encode(&big).len() - 1;
    for _ in 0..MAX_BUFFERED_BYTES / size + 5 {
        let message = big.clone();
        node.handle(
            &mut accept_all(),
            1,
            Input::Message {
                from: peer,
                message,
            },
        )
        .unwrap();
    }
    let (bytes, _) = node.held();
    assert!(bytes <= MAX_BUFFERED_BYTES, "{bytes}");
    assert!(bytes + size > MAX_BUFFERED_BYTES, "{bytes}");
}

/// The parameters of [`genesis_node`].
fn node_params() -> CommitteeParams {
    params_with(1)
}

/// [`node_params`] with `2^shard_bits` committees.
fn params_with(shard_bits: u8) -> CommitteeParams {
    CommitteeParams::builder()
        .shard_bits(shard_bits)
        .committee_size(4)
        .identity_difficulty(1)
        .bootstrap([key(1), key(2)])
        .build()
        .unwrap()
}

/// A block at height 1 on [`genesis_node`]'s tip, certified by a final committee of four
/// mined identities (a quorum of them signing), and the committee's keypairs.
fn certified_block() -> (Header<CommitteeSeal>, Vec<Keypair>) {
    let params = node_params();
    let randomness = Randomness::from_bytes([1; 32]);
    let parent = BlockHash::from_bytes([7; 32]);
    let mut members: Vec<(IdentityProof, Keypair)> = (40u8..44)
        .map(|i| {
            let kp = Keypair::from_seed(&[i; 32]);
            let p = IdentityProof::mine_for_committee(
                kp.public(),
                &randomness,
                params.identity_difficulty(),
                params.shard_bits(),
                0,
            );
            (p, kp)
        })
        .collect();
    members.sort_by_key(|(p, _)| p.key);
    let quorum = params.quorum();
    let mut header = Header {
        version: HEADER_VERSION,
        height: 1,
        parent,
        tx_root: crate::merkle::merkle_root(&[]),
        tx_count: 0,
        state_root: StateRoot::default(),
        timestamp: 0,
        seal: CommitteeSeal {
            randomness,
            shards: BoundedVec::new(),
            commitments: (0..quorum)
                .map(|m| Commitment {
                    member: m as u16,
                    value: Digest::from_bytes([m as u8; 32]),
                })
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
            reveals: BoundedVec::new(),
            directory: directory_cert(
                1,
                parent,
                &[members.iter().map(|(p, _)| *p).collect(), Vec::new()],
            ),
            cert: Certificate::empty(),
        },
    };
    let digest = VoteBody {
        height: 1,
        parent,
        stage: Stage::Final,
        attempt: 0,
        round: 0,
        phase: Phase::Precommit,
        value: FinalValue::of_header(&header).digest(),
    }
    .digest();
    header.seal.cert = Certificate {
        round: 0,
        members: members
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        signatures: members
            .iter()
            .take(quorum)
            .enumerate()
            .map(|(i, (_, kp))| MemberSignature {
                member: i as u16,
                signature: kp.sign(&digest),
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    };
    (header, members.into_iter().map(|(_, kp)| kp).collect())
}

/// The certificate of [`genesis_node`]'s directory (both bootstrap keys) for `roster`, a member
/// list per committee, at `height` on `parent`.
fn directory_cert(height: u64, parent: BlockHash, roster: &[Vec<IdentityProof>]) -> DirectoryCert {
    let committees: Vec<Digest> = roster
        .iter()
        .enumerate()
        .map(|(j, m)| committee_digest(j as u16, m))
        .collect();
    let digest = VoteBody {
        height,
        parent,
        stage: Stage::Directory,
        attempt: 0,
        round: 0,
        phase: Phase::Precommit,
        value: roster_digest(&committees),
    }
    .digest();
    DirectoryCert {
        round: 0,
        committees: committees.try_into().unwrap(),
        signatures: [1u8, 2]
            .iter()
            .enumerate()
            .map(|(i, seed)| MemberSignature {
                member: i as u16,
                signature: Keypair::from_seed(&[*seed; 32]).sign(&digest),
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    }
}

/// Hands `message` to `node` from each of `from`.
fn from_all(node: &mut Node, from: &[PublicKey], message: &Message, now: u64) {
    for peer in from {
        node.handle(
            &mut verifying(),
            now,
            Input::Message {
                from: *peer,
                message: message.clone(),
            },
        )
        .unwrap();
    }
}

#[test]
fn made_up_epoch_announcements_from_any_number_of_peers_change_nothing() {
    let (mut node, peer) = started_node();
    let params = node_params();
    // More than a committee tolerates: every peer there is and then some.
    let peers: Vec<PublicKey> = std::iter::once(peer).chain((100u8..110).map(key)).collect();
    assert!(peers.len() > params.tolerated() + 1);
    let (genuine, _) = certified_block();

    // A made-up block for a future height, on a parent that does not exist: the node cannot
    // check it, so it keeps it for later (bounded) and stays where it is.
    let mut far = genuine.clone();
    far.height = 5;
    far.parent = BlockHash::from_bytes([9; 32]);
    from_all(
        &mut node,
        &peers,
        &Message::Next(NextEpoch { header: far }),
        1,
    );
    assert_eq!(
        node.status().height,
        1,
        "a future announcement moves no node"
    );

    // Made-up blocks for the current height: a forged certificate, a certified block altered
    // after signing, the certified block on another parent, and one with too few signatures.
    let mut forged = genuine.clone();
    forged.seal.cert = cert(4, 0);
    let mut altered = genuine.clone();
    altered.state_root = StateRoot::from_bytes([5; 32]);
    let mut elsewhere = genuine.clone();
    elsewhere.parent = BlockHash::from_bytes([8; 32]);
    let mut short = genuine.clone();
    short.seal.cert.signatures = short.seal.cert.signatures[..params.quorum() - 1]
        .to_vec()
        .try_into()
        .unwrap();
    let fakes = [forged, altered, elsewhere, short];
    let senders = |i: usize| -> Vec<PublicKey> {
        (0..peers.len() as u8)
            .map(|j| key(120 + 20 * i as u8 + j))
            .collect()
    };
    for (i, fake) in fakes.iter().enumerate() {
        // Fresh senders each time (a sender gets one check per epoch).
        let m = Message::Next(NextEpoch {
            header: fake.clone(),
        });
        from_all(&mut node, &senders(i), &m, 2);
        assert_eq!(
            node.status().height,
            1,
            "fake announcement {i} moved the node"
        );
    }
    // Each refused sender is checked once, however often it repeats itself.
    let (_, tried) = node.held();
    assert_eq!(tried, fakes.len() * peers.len());
    for (i, fake) in fakes.iter().enumerate() {
        let m = Message::Next(NextEpoch {
            header: fake.clone(),
        });
        from_all(&mut node, &senders(i), &m, 3);
    }
    assert_eq!(node.held().1, tried);
    assert_eq!(node.status().height, 1);

    // The genuine announcement, from a single sender, moves the node.
    node.handle(
        &mut verifying(),
        4,
        Input::Message {
            from: peer,
            message: Message::Next(NextEpoch {
                header: genuine.clone(),
            }),
        },
    )
    .unwrap();
    assert_eq!(node.status().height, 2, "a certified block moves the node");
}

#[test]
fn a_kept_announcement_is_replayed_when_its_epoch_begins() {
    // A made-up block for height 2 arrives first and is kept; the certified block for height 1
    // moves the node on, and the kept one is then checked for height 2 and refused.
    let (mut node, peer) = started_node();
    let (genuine, _) = certified_block();
    let mut fake_next = genuine.clone();
    fake_next.height = 2;
    fake_next.parent = genuine.hash();
    from_all(
        &mut node,
        &[peer],
        &Message::Next(NextEpoch { header: fake_next }),
        1,
    );
    from_all(
        &mut node,
        &[peer],
        &Message::Next(NextEpoch { header: genuine }),
        2,
    );
    // Height 2 began; the kept fake for height 2 was checked on replay and refused.
    assert_eq!(node.status().height, 2);
    assert_eq!(node.held().1, 1);
}

#[test]
fn a_node_speaks_the_protocol_interface() {
    use crate::consensus::protocol::{Output, Recipients};
    let (mut node, peer) = genesis_node();
    let out = node.handle(&mut accept_all(), 5, Input::Start).unwrap();
    // The epoch begins, the identity goes to the other directory member, and the directory
    // asks to be called back when its window closes: the deadline is the timer.
    let window = 5 + Timing::default().identity_window;
    assert!(out.contains(&Output::Progress {
        height: 1,
        round: 0
    }));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Send { to: Recipients::Some(to), message: Message::Identity { height: 1, .. } }
            if to == &vec![peer]
    )));
    assert!(out.contains(&Output::SetTimer {
        timer: Tick(window),
        at: window
    }));
    // Offered transactions and appended blocks are the host's business.
    assert!(node
        .handle(&mut accept_all(), 6, Input::Transactions(Vec::new()))
        .unwrap()
        .is_empty());
    assert!(node
        .handle(&mut accept_all(), 6, Input::Appended)
        .unwrap()
        .is_empty());
    // A tick before any deadline is due does nothing.
    assert!(node
        .handle(&mut accept_all(), 7, Input::Timer(Tick(window)))
        .unwrap()
        .is_empty());
    assert!(node.take_decisions().is_empty());
}

#[test]
fn one_decided_value_seals_one_block_hash_whichever_quorum_signed() {
    let (genuine, keypairs) = certified_block();
    let quorum = node_params().quorum();
    // Another final member collected a different quorum, in a later round.
    let mut other = genuine.clone();
    let round = 1;
    let digest = VoteBody {
        height: other.height,
        parent: other.parent,
        stage: Stage::Final,
        attempt: 0,
        round,
        phase: Phase::Precommit,
        value: FinalValue::of_header(&other).digest(),
    }
    .digest();
    let skip = keypairs.len() - quorum;
    other.seal.cert.round = round;
    other.seal.cert.signatures = keypairs
        .iter()
        .enumerate()
        .skip(skip)
        .map(|(i, kp)| MemberSignature {
            member: i as u16,
            signature: kp.sign(&digest),
        })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    assert_ne!(other.seal.cert, genuine.seal.cert);
    assert_eq!(other.hash(), genuine.hash(), "one decided value, one block");
    // Both certificates convince a node that saw none of the votes.
    for header in [genuine.clone(), other] {
        let (mut node, peer) = started_node();
        from_all(&mut node, &[peer], &Message::Next(NextEpoch { header }), 1);
        assert_eq!(node.status().height, 2);
    }
    // What the committee voted on, and who the committee is, stay covered by the hash.
    let mut value = genuine.clone();
    value.seal.commitments = BoundedVec::new();
    let mut members = genuine.clone();
    members.seal.cert.members = members.seal.cert.members[1..].to_vec().try_into().unwrap();
    for changed in [value, members] {
        assert_ne!(changed.hash(), genuine.hash());
    }
}

#[test]
fn a_node_takes_its_committee_only_from_the_directorys_certificate() {
    // The roster: the node (key 1) and two others in the final committee, nobody in shard 1.
    let mut final_members = vec![identity(1, 0), identity(50, 0), identity(51, 0)];
    final_members.sort_by_key(|p| p.key);
    let roster = [final_members.clone(), Vec::new()];
    let parent = BlockHash::from_bytes([7; 32]);
    let genuine = directory_cert(1, parent, &roster);
    let assignment = |cert: DirectoryCert, members: &[IdentityProof]| {
        Message::Assignment(CommitteeAssignment {
            height: 1,
            parent,
            committee: Some(0),
            members: members.to_vec().try_into().unwrap(),
            final_members: members.to_vec().try_into().unwrap(),
            cert,
            reveal: None,
        })
    };
    let (mut node, peer) = started_node();
    // The directory is both bootstrap keys: one signature is not a quorum.
    let mut short = genuine.clone();
    short.signatures = short.signatures[..1].to_vec().try_into().unwrap();
    // Lists other than the certified ones, with the genuine certificate.
    let mut other = final_members.clone();
    other.retain(|p| p.key != key(51));
    // A certificate signed by an outsider (key 60) in a directory member's place.
    let mut forged = genuine.clone();
    forged.signatures = forged
        .signatures
        .iter()
        .map(|s| MemberSignature {
            member: s.member,
            signature: Keypair::from_seed(&[60; 32]).sign(&[0; 32]),
        })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    for fake in [
        assignment(short, &final_members),
        assignment(genuine.clone(), &other),
        assignment(forged, &final_members),
    ] {
        from_all(&mut node, &[peer], &fake, 1);
        assert_eq!(node.status().committee, None, "a fake assignment was taken");
    }
    // One directory member's genuine assignment is enough.
    from_all(&mut node, &[peer], &assignment(genuine, &final_members), 2);
    let status = node.status();
    assert_eq!((status.committee, status.is_final), (Some(0), true));
}

/// A directory member (key `me`, leading the first round at height 1, with key 250) that
/// received `identities` in this order: the roster it proposes when its window closes.
fn roster_proposed_after(params: &CommitteeParams, me: u8, identities: &[IdentityProof]) -> Roster {
    use crate::consensus::protocol::Output;
    let me = Keypair::from_seed(&[me; 32]);
    let other = key(250);
    let tip = TipInfo {
        height: 0,
        hash: BlockHash::from_bytes([7; 32]),
        timestamp: 0,
        next_randomness: Randomness::from_bytes([1; 32]),
        // The leader of round 0 at height 1 is the directory's member 1.
        directory: vec![other, me.public()],
        commitments: vec![],
    };
    let mut node = Node::new(NodeConfig {
        params: params.clone(),
        keypair: me,
        peers: vec![other],
        tip,
        timing: Timing::default(),
        max_shard_txs: 8,
    });
    node.handle(&mut accept_all(), 0, Input::Start).unwrap();
    for proof in identities {
        node.handle(
            &mut accept_all(),
            1,
            Input::Message {
                from: proof.key,
                message: Message::Identity {
                    height: 1,
                    proof: *proof,
                },
            },
        )
        .unwrap();
    }
    let window = Timing::default().identity_window;
    let out = node
        .handle(&mut accept_all(), window, Input::Timer(Tick(window)))
        .unwrap();
    out.into_iter()
        .find_map(|o| match o {
            Output::Send {
                message:
                    Message::Proposal(Proposal {
                        value: Value::Roster(r),
                        ..
                    }),
                ..
            } => Some(r),
            _ => None,
        })
        .expect("the directory's leader proposes a roster when its window closes")
}

#[test]
fn mining_longer_for_smaller_identity_hashes_buys_no_committee_seats() {
    let params = CommitteeParams::builder()
        .shard_bits(1)
        .committee_size(4)
        .identity_difficulty(4);
    let randomness = Randomness::from_bytes([1; 32]);
    // Honest nodes stop at their first solution; the adversary mines k = 64 times longer
    // (6 more zero bits), so each of its identities has a far smaller hash than any honest
    // one: under a smallest-hashes rule it would take every seat it has identities for.
    let honest: Vec<IdentityProof> = (10..16)
        .map(|i| IdentityProof::mine_for_committee(key(i), &randomness, 4, 1, 0))
        .collect();
    let adversary: Vec<IdentityProof> = (100..108)
        .map(|i| IdentityProof::mine_for_committee(key(i), &randomness, 4 + 6, 1, 0))
        .collect();
    // The directory member's own identity sits in the other committee, out of the count.
    let me = (1..)
        .find(|s| {
            IdentityProof::mine(key(*s), &randomness, 4, 0)
                .0
                .hash(&randomness)
                .committee(1)
                == 1
        })
        .unwrap();
    let params = params.bootstrap([key(250), key(me)]).build().unwrap();
    let worst_honest = honest.iter().map(|p| p.hash(&randomness)).max().unwrap();
    assert!(adversary.iter().all(|p| p.hash(&randomness) < worst_honest));
    let seats = |roster: &Roster| {
        roster.committees[0]
            .iter()
            .filter(|p| adversary.contains(p))
            .count()
    };

    // The honest identities arrived first: the committee is full, the adversary sits nowhere.
    let roster = roster_proposed_after(&params, me, &[honest.clone(), adversary.clone()].concat());
    assert_eq!(roster.committees[0].len(), 4);
    assert_eq!(seats(&roster), 0);

    // Two adversarial identities among the first four: it gets exactly those two seats, the
    // same as identities that just meet the difficulty would get in their place.
    let order = [
        &adversary[..1],
        &honest[..2],
        &adversary[1..2],
        &honest[2..],
        &adversary[2..],
    ]
    .concat();
    let roster = roster_proposed_after(&params, me, &order);
    assert_eq!(seats(&roster), 2);
    let just_meeting: Vec<IdentityProof> = (200..202)
        .map(|i| IdentityProof::mine_for_committee(key(i), &randomness, 4, 1, 0))
        .collect();
    let order = [
        &just_meeting[..1],
        &honest[..2],
        &just_meeting[1..2],
        &honest[2..],
        &adversary[..],
    ]
    .concat();
    let roster = roster_proposed_after(&params, me, &order);
    assert_eq!(seats(&roster), 0);
    assert!(just_meeting
        .iter()
        .all(|p| roster.committees[0].contains(p)));

    // However many identities arrive, a committee has at most c seats, each key at most one
    // (a key that sends a second identity is not heard again).
    let mut again = adversary[0];
    again.nonce = IdentityProof::mine(again.key, &randomness, 4, again.nonce + 1)
        .0
        .nonce;
    let roster = roster_proposed_after(&params, me, &[adversary.clone(), vec![again]].concat());
    assert_eq!(roster.committees[0].len(), 4);
    assert_eq!(
        roster.committees[0]
            .iter()
            .filter(|p| p.key == again.key)
            .count(),
        1
    );
}

/// A shard result for `shard` at height 1 on `parent`, with no transactions, certified by the
/// precommits of `signers` (seeds) among `members`.
fn shard_result(
    shard: u16,
    parent: BlockHash,
    members: &[IdentityProof],
    signers: &[u8],
) -> Message {
    let r = certified_result(shard, parent, members, signers, Vec::new());
    Message::ShardResult(r)
}

/// The result of `shard` deciding `txs` at height 1 on `parent`, certified by the precommits
/// of `signers` (seeds) among `members`.
fn certified_result(
    shard: u16,
    parent: BlockHash,
    members: &[IdentityProof],
    signers: &[u8],
    txs: Vec<Transaction>,
) -> ShardResult {
    let value = ShardValue {
        txs: txs.try_into().unwrap(),
    };
    let summary = value.summary(shard);
    let digest = VoteBody {
        height: 1,
        parent,
        stage: Stage::Shard(shard),
        attempt: 0,
        round: 0,
        phase: Phase::Precommit,
        value: summary.digest(),
    }
    .digest();
    let signatures: Vec<MemberSignature> = members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let seed = signers.iter().find(|s| key(**s) == m.key)?;
            Some(MemberSignature {
                member: i as u16,
                signature: Keypair::from_seed(&[*seed; 32]).sign(&digest),
            })
        })
        .collect();
    ShardResult {
        height: 1,
        parent,
        cert: ShardCertificate {
            summary,
            cert: Certificate {
                round: 0,
                members: members.to_vec().try_into().unwrap(),
                signatures: signatures.try_into().unwrap(),
            },
        },
        txs: value.txs,
    }
}

/// `r` split as its members send it to a final member they gave the value to ahead: the
/// batch, then the certificate.
fn sent_ahead(r: &ShardResult) -> (Message, Message) {
    let batch = Message::ShardBatch(ShardBatch {
        height: r.height,
        parent: r.parent,
        shard: r.cert.summary.shard,
        txs: r.txs.clone(),
    });
    let cert = Message::ShardCertified(ShardCertified {
        height: r.height,
        parent: r.parent,
        cert: r.cert.clone(),
    });
    (batch, cert)
}

#[test]
fn a_shard_batch_sent_ahead_becomes_the_result_its_certificate_certifies() {
    let (_, parent, shard_one) = final_member_beside_shard_one();
    let txs = vec![tx(60, 0), tx(62, 0)];
    let genuine = |signers: &[u8]| certified_result(1, parent, &shard_one, signers, txs.clone());
    let r = genuine(&[60, 61, 62]);
    let (batch, cert) = sent_ahead(&r);

    // The batch, then its certificate; the certificate first, then the batch.
    for order in [[&batch, &cert], [&cert, &batch]] {
        let (mut node, _, _) = final_member_beside_shard_one();
        from_all(&mut node, &[key(60)], order[0], 2);
        assert!(
            node.shard_results_held().is_empty(),
            "half a result was taken"
        );
        from_all(&mut node, &[key(61)], order[1], 3);
        assert_eq!(node.shard_results_held(), vec![1]);
    }

    // Keys 60 and 61 send the first two messages, which make no result; key 62 the third,
    // which completes shard 1's.
    let no_result_until_the_third = |messages: [&Message; 3], why: &str| {
        let (mut node, _, _) = final_member_beside_shard_one();
        from_all(&mut node, &[key(60)], messages[0], 2);
        from_all(&mut node, &[key(61)], messages[1], 3);
        assert!(node.shard_results_held().is_empty(), "{why}");
        from_all(&mut node, &[key(62)], messages[2], 4);
        assert_eq!(node.shard_results_held(), vec![1], "{why}");
    };
    // A batch other than the certified one is no result: the certificate waits for its own.
    let mut other = r.clone();
    other.txs = vec![tx(60, 0)].try_into().unwrap();
    let (other_batch, _) = sent_ahead(&other);
    no_result_until_the_third(
        [&other_batch, &cert, &batch],
        "a batch taken under another's certificate",
    );
    // A certificate that does not check (short of a quorum) leaves the batch kept for the
    // valid one.
    let (_, short) = sent_ahead(&genuine(&[60, 61]));
    no_result_until_the_third([&batch, &short, &cert], "a short certificate was taken");
}

/// An identity for key `seed` in `committee`, mined on [`node_params`] and randomness `[1; 32]`.
fn identity(seed: u8, committee: u16) -> IdentityProof {
    identity_on(&node_params(), seed, committee)
}

/// [`identity`] on `params`.
fn identity_on(params: &CommitteeParams, seed: u8, committee: u16) -> IdentityProof {
    IdentityProof::mine_for_committee(
        key(seed),
        &Randomness::from_bytes([1; 32]),
        params.identity_difficulty(),
        params.shard_bits(),
        committee,
    )
}

/// A started node (key 1) assigned to the final committee at height 1 by a directory whose
/// roster is keys 1, 50, 51 in committee 0 (the final committee) and 60, 61, 62 in committee 1;
/// with the assignment's parent and committee 1's identities, sorted by key.
fn final_member_beside_shard_one() -> (Node, BlockHash, Vec<IdentityProof>) {
    final_member_beside_shard_one_as(1)
}

/// [`final_member_beside_shard_one`] with the key of `seed` (1 or 50, a final member), for
/// its first output too.
fn final_member_beside_shard_one_as(seed: u8) -> (Node, BlockHash, Vec<IdentityProof>) {
    let (node, parent, mut shards) = final_member_beside_shards(seed, 1);
    (node, parent, shards.remove(0))
}

/// [`final_member_beside_shard_one_as`] with `2^shard_bits` committees: committee `j > 0` is
/// keys `50 + 10j` to `52 + 10j`; with each such committee's identities, sorted by key.
fn final_member_beside_shards(
    seed: u8,
    shard_bits: u8,
) -> (Node, BlockHash, Vec<Vec<IdentityProof>>) {
    let params = params_with(shard_bits);
    let committee = |j: u16, seeds: [u8; 3]| {
        let mut members: Vec<IdentityProof> =
            seeds.iter().map(|s| identity_on(&params, *s, j)).collect();
        members.sort_by_key(|p| p.key);
        members
    };
    let final_members = committee(0, [1, 50, 51]);
    let shards: Vec<Vec<IdentityProof>> = (1..1u16 << shard_bits)
        .map(|j| {
            let first = 50 + 10 * j as u8;
            committee(j, [first, first + 1, first + 2])
        })
        .collect();
    let mut roster = vec![final_members.clone()];
    roster.extend(shards.iter().cloned());
    let parent = BlockHash::from_bytes([7; 32]);
    let (mut node, peer) = genesis_node_with(seed, params);
    node.handle(&mut accept_all(), 0, Input::Start).unwrap();
    let assignment = Message::Assignment(CommitteeAssignment {
        height: 1,
        parent,
        committee: Some(0),
        members: final_members.clone().try_into().unwrap(),
        final_members: final_members.try_into().unwrap(),
        cert: directory_cert(1, parent, &roster),
        reveal: None,
    });
    from_all(&mut node, &[peer], &assignment, 1);
    (node, parent, shards)
}

#[test]
fn a_shard_result_counts_only_if_certified_by_the_directorys_committee() {
    let (mut node, parent, shard_one) = final_member_beside_shard_one();
    assert!(node.status().is_final);

    // An outsider's committee for shard 1: identities it mined, every member signing. The
    // proofs of work and the quorum hold; the directory never listed these members.
    let outsiders: u8 = 100;
    let mut forged_members: Vec<IdentityProof> =
        (outsiders..outsiders + 3).map(|s| identity(s, 1)).collect();
    forged_members.sort_by_key(|p| p.key);
    let forged = shard_result(1, parent, &forged_members, &[100, 101, 102]);
    // Nor can the outsider pass off the directory's committee with signatures of its own, or
    // with fewer than a quorum of the real members.
    let mut impostor = shard_result(1, parent, &shard_one, &[60, 61, 62]);
    if let Message::ShardResult(r) = &mut impostor {
        let mut signatures = r.cert.cert.signatures.to_vec();
        let digest = VoteBody {
            height: 1,
            parent,
            stage: Stage::Shard(1),
            attempt: 0,
            round: 0,
            phase: Phase::Precommit,
            value: r.cert.summary.digest(),
        }
        .digest();
        signatures[2].signature = Keypair::from_seed(&[outsiders; 32]).sign(&digest);
        r.cert.cert.signatures = signatures.try_into().unwrap();
    }
    let short = shard_result(1, parent, &shard_one, &[60, 61]);
    for fake in [forged, impostor, short] {
        from_all(&mut node, &[key(outsiders)], &fake, 2);
        assert!(
            node.shard_results_held().is_empty(),
            "a forged shard result was taken"
        );
    }
    // The directory's committee for shard 1, a quorum of it signing: taken, from any sender.
    let genuine = shard_result(1, parent, &shard_one, &[60, 61, 62]);
    from_all(&mut node, &[key(outsiders)], &genuine, 3);
    assert_eq!(node.shard_results_held(), vec![1]);
}

#[test]
fn a_directory_member_with_enough_identities_refuses_a_final_committee_too_small() {
    use crate::consensus::protocol::Output;
    let params = CommitteeParams::builder()
        .shard_bits(1)
        .committee_size(4)
        .identity_difficulty(1)
        .bootstrap([key(1), key(250)])
        .build()
        .unwrap();
    let randomness = Randomness::from_bytes([1; 32]);
    let leader = Keypair::from_seed(&[250; 32]);
    let parent = BlockHash::from_bytes([7; 32]);
    let mine = |seed: u8, committee: u16| {
        IdentityProof::mine_for_committee(key(seed), &randomness, 1, 1, committee)
    };
    let honest: Vec<IdentityProof> = (10..14).map(|s| mine(s, 0)).collect();
    // Directory member key 1 (the leader at height 1, round 0, is key 250) received four
    // identities for committee 0, a full final committee.
    let prevotes_for = |received: &[IdentityProof], final_members: &[IdentityProof]| {
        let mut node = Node::new(NodeConfig {
            params: params.clone(),
            keypair: Keypair::from_seed(&[1; 32]),
            peers: vec![leader.public()],
            tip: TipInfo {
                height: 0,
                hash: parent,
                timestamp: 0,
                next_randomness: randomness,
                directory: vec![key(1), leader.public()],
                commitments: vec![],
            },
            timing: Timing::default(),
            max_shard_txs: 8,
        });
        node.handle(&mut accept_all(), 0, Input::Start).unwrap();
        for proof in received {
            let message = Message::Identity {
                height: 1,
                proof: *proof,
            };
            let input = Input::Message {
                from: proof.key,
                message,
            };
            node.handle(&mut accept_all(), 1, input).unwrap();
        }
        let window = Timing::default().identity_window;
        node.handle(&mut accept_all(), window, Input::Timer(Tick(window)))
            .unwrap();
        let mut committee_0 = final_members.to_vec();
        committee_0.sort_by_key(|p| p.key);
        let value = Value::Roster(Roster {
            committees: vec![committee_0.try_into().unwrap(), BoundedVec::new()]
                .try_into()
                .unwrap(),
        });
        let digest = value.digest(Stage::Directory);
        let body = VoteBody {
            height: 1,
            parent,
            stage: Stage::Directory,
            attempt: 0,
            round: 0,
            phase: Phase::Propose,
            value: digest,
        };
        let proposal = Message::Proposal(Proposal {
            height: 1,
            parent,
            stage: Stage::Directory,
            round: 0,
            value,
            pol: None,
            signature: leader.sign(&body.digest()),
        });
        let input = Input::Message {
            from: leader.public(),
            message: proposal,
        };
        let out = node.handle(&mut accept_all(), window + 1, input).unwrap();
        out.iter().any(|o| {
            matches!(o, Output::Send { message: Message::Vote(v), .. }
                if v.phase == Phase::Prevote && v.value == digest)
        })
    };
    // A full final committee is accepted; one of two members (short of the quorum of 3,
    // which would restart the epoch) is refused by a member that had enough identities...
    assert!(prevotes_for(&honest, &honest));
    assert!(!prevotes_for(&honest, &honest[..2]));
    // ...and accepted from a leader by a member that did not have more either.
    assert!(prevotes_for(&honest[..2], &honest[..2]));
}

#[test]
fn a_peer_that_missed_a_block_announcement_gets_it_when_it_asks_again() {
    use crate::consensus::protocol::{Output, Recipients};
    let (header, _) = certified_block();
    let (mut node, peer) = started_node();
    from_all(
        &mut node,
        &[peer],
        &Message::Next(NextEpoch {
            header: header.clone(),
        }),
        1,
    );
    assert_eq!(node.status().height, 2);
    // A peer still at height 1 re-sends its identity for that height (mined against its
    // randomness; the block is of the first attempt): the node answers with the block that
    // ended the epoch.
    let behind = Keypair::from_seed(&[77; 32]).public();
    let height_one = Randomness::from_bytes([1; 32]);
    let mined = IdentityProof::mine(behind, &height_one, node_params().identity_difficulty(), 0).0;
    let unmined = (0..)
        .map(|nonce| IdentityProof { key: behind, nonce })
        .find(|p| {
            !p.hash(&height_one)
                .meets(node_params().identity_difficulty())
        })
        .unwrap();
    let ask = |node: &mut Node, proof: IdentityProof| {
        let input = Input::Message {
            from: behind,
            message: Message::Identity { height: 1, proof },
        };
        node.handle(&mut verifying(), 2, input)
            .unwrap()
            .into_iter()
            .filter(|o| {
                matches!(o, Output::Send { to: Recipients::Some(to), message: Message::Next(n) }
                    if to == &vec![behind] && n.header == header)
            })
            .count()
    };
    // Asking costs an identity's proof of work: without one, no answer.
    assert_eq!(ask(&mut node, unmined), 0);
    assert_eq!(ask(&mut node, mined), 1);
    // A few answers per peer and epoch, then no more (the node is no amplifier).
    let answers: usize = (0..10).map(|_| ask(&mut node, mined)).sum();
    assert_eq!(answers, 3);
}

/// What `node` sends in reply to `input` at `now`: each message with its recipients.
fn sent(node: &mut Node, now: u64, input: ProtocolInput<Node>) -> Vec<(Vec<PublicKey>, Message)> {
    sent_with(&mut verifying(), node, now, input)
}

/// [`sent`] with `host` in the node's world.
fn sent_with(
    host: &mut TestHost,
    node: &mut Node,
    now: u64,
    input: ProtocolInput<Node>,
) -> Vec<(Vec<PublicKey>, Message)> {
    node.handle(host, now, input)
        .unwrap()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send {
                to: Recipients::Some(to),
                message,
            } => Some((to, message)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_final_leader_after_a_failed_round_sends_the_shard_results_its_value_needs_to_members_not_known_to_hold_them(
) {
    let (mut node, parent, shard_one) = final_member_beside_shard_one();
    // Shard 1's result reached the node alone (its members send it to two final members
    // each, and only those that decided send it).
    from_all(
        &mut node,
        &[key(60)],
        &shard_result(1, parent, &shard_one, &[60, 61, 62]),
        2,
    );
    assert_eq!(node.shard_results_held(), vec![1]);
    let others = [key(50), key(51)];
    for k in others {
        let commitment = Message::Commitment {
            height: 1,
            value: Digest::from_bytes([k.as_bytes()[0]; 32]),
        };
        from_all(&mut node, &[k], &commitment, 3);
    }
    // Rounds time out (the others never prevote) until the node leads one after the first;
    // the others enter each round with it.
    let mut proposal_round = None;
    let mut now = 4;
    while proposal_round.is_none() && now < 300_000_000 {
        now += 100_000;
        let mut out = sent(&mut node, now, Input::Timer(Tick(now)));
        let entered: Vec<u32> = out
            .iter()
            .filter_map(|(_, m)| match m {
                Message::RoundChange(r) if r.stage == Stage::Final => Some(r.round),
                _ => None,
            })
            .collect();
        for round in entered {
            let rc = Message::RoundChange(RoundChange {
                height: 1,
                parent,
                stage: Stage::Final,
                round,
                pol: None,
                value: None,
            });
            for k in others {
                out.extend(sent(
                    &mut node,
                    now,
                    Input::Message {
                        from: k,
                        message: rc.clone(),
                    },
                ));
            }
        }
        let proposal = out.iter().position(
            |(_, m)| matches!(m, Message::Proposal(p) if p.stage == Stage::Final && p.round > 0),
        );
        let Some(at) = proposal else {
            continue;
        };
        let Message::Proposal(p) = &out[at].1 else {
            unreachable!()
        };
        proposal_round = Some(p.round);
        let Value::Final(v) = &p.value else {
            panic!("a final proposal holds a final value")
        };
        assert!(v.shards.iter().any(|s| s.summary.shard == 1));
        let shipped: Vec<&Vec<PublicKey>> = out[..at]
            .iter()
            .filter_map(|(to, m)| match m {
                Message::ShardResult(r) if r.cert.summary.shard == 1 => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(
            shipped.len(),
            1,
            "shard 1's result goes ahead of the proposal"
        );
        let mut to = shipped[0].clone();
        to.sort();
        let mut expected = others.to_vec();
        expected.sort();
        assert_eq!(to, expected, "to the members whose prevote showed nothing");
    }
    assert!(
        proposal_round.is_some(),
        "the node led a round after the first"
    );
}

#[test]
fn a_final_member_keeps_both_results_of_a_shard_split_beyond_its_bound() {
    // Shard 1's equivocating leader split it and, beyond the bound, both halves decided:
    // two certified results for two values. Final members hold one or the other; a member
    // holding both can check the value whichever the final leader proposes.
    let (mut node, parent, shard_one) = final_member_beside_shard_one();
    let result = |txs: Vec<Transaction>| {
        Message::ShardResult(certified_result(1, parent, &shard_one, &[60, 61, 62], txs))
    };
    let summary = |m: &Message| match m {
        Message::ShardResult(r) => r.cert.summary,
        _ => unreachable!(),
    };
    let (a, b, c) = (
        result(vec![tx(60, 0)]),
        result(vec![tx(61, 0)]),
        result(vec![tx(62, 0)]),
    );
    from_all(&mut node, &[key(60)], &a, 2);
    from_all(&mut node, &[key(61)], &a, 3);
    from_all(&mut node, &[key(62)], &b, 4);
    assert_eq!(node.shard_summaries_held(), vec![summary(&a), summary(&b)]);
    assert_eq!(
        node.shard_results_held(),
        vec![1],
        "the first stays the one proposed"
    );
    // Two per shard at most.
    from_all(&mut node, &[key(60)], &c, 5);
    assert_eq!(node.shard_summaries_held(), vec![summary(&a), summary(&b)]);
}

#[test]
fn a_shard_member_sends_its_batch_when_it_precommits_and_then_only_the_certificate() {
    // Key 1 in shard 1 with keys 60 and 61; the final committee is keys 50, 51 and 52.
    let mut finals = vec![identity(50, 0), identity(51, 0), identity(52, 0)];
    finals.sort_by_key(|p| p.key);
    let mut members = vec![identity(1, 1), identity(60, 1), identity(61, 1)];
    members.sort_by_key(|p| p.key);
    let parent = BlockHash::from_bytes([7; 32]);
    let (mut node, peer) = started_node();
    let deliver = |node: &mut Node, from: PublicKey, message: Message| {
        sent_with(&mut accept_all(), node, 2, Input::Message { from, message })
    };
    let assignment = Message::Assignment(CommitteeAssignment {
        height: 1,
        parent,
        committee: Some(1),
        members: members.clone().try_into().unwrap(),
        final_members: finals.clone().try_into().unwrap(),
        cert: directory_cert(1, parent, &[finals.clone(), members.clone()]),
        reveal: None,
    });
    let mut out = deliver(&mut node, peer, assignment);
    assert_eq!(node.status().committee, Some(1));

    // Round 0 at height 1 is led by the second member; unless that is this node, it proposes.
    let value = Value::Shard(ShardValue {
        txs: BoundedVec::new(),
    });
    let digest = value.digest(Stage::Shard(1));
    let leader = members[1].key;
    if leader != key(1) {
        let proposal = Message::Proposal(Proposal {
            height: 1,
            parent,
            stage: Stage::Shard(1),
            round: 0,
            value,
            pol: None,
            signature: Signature::from_bytes([0; 64]),
        });
        out.extend(deliver(&mut node, leader, proposal));
    }
    let vote = |member: usize, phase: Phase| {
        Message::Vote(Vote {
            height: 1,
            parent,
            stage: Stage::Shard(1),
            round: 0,
            phase,
            value: digest,
            member: member as u16,
            signature: Signature::from_bytes([0; 64]),
            proposal: None,
        })
    };
    let others: Vec<(usize, PublicKey)> = members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.key != key(1))
        .map(|(i, m)| (i, m.key))
        .collect();
    for (i, k) in &others {
        out.extend(deliver(&mut node, *k, vote(*i, Phase::Prevote)));
    }
    let precommitted = out
        .iter()
        .any(|(_, m)| matches!(m, Message::Vote(v) if v.phase == Phase::Precommit));
    assert!(precommitted, "a prevote quorum: the node precommits");
    let batches: Vec<&Vec<PublicKey>> = out
        .iter()
        .filter_map(|(to, m)| matches!(m, Message::ShardBatch(b) if b.shard == 1).then_some(to))
        .collect();
    assert_eq!(batches.len(), 1, "the batch goes ahead once: {out:?}");
    assert!(
        batches[0].len() == 2
            && batches[0]
                .iter()
                .all(|k| finals.iter().any(|f| f.key == *k)),
        "to two final members"
    );

    let mut decided = Vec::new();
    for (i, k) in &others {
        decided.extend(deliver(&mut node, *k, vote(*i, Phase::Precommit)));
    }
    let certified: Vec<&Vec<PublicKey>> = decided
        .iter()
        .filter_map(|(to, m)| {
            matches!(m, Message::ShardCertified(c) if c.cert.summary.digest() == digest)
                .then_some(to)
        })
        .collect();
    assert_eq!(
        certified,
        vec![batches[0]],
        "the certificate follows to the same members"
    );
    assert!(
        !decided
            .iter()
            .any(|(_, m)| matches!(m, Message::ShardResult(_) | Message::ShardBatch(_))),
        "the transactions are not sent again"
    );
}

#[test]
fn a_final_member_lacking_a_shard_result_asks_the_leader_and_prevotes_when_it_arrives() {
    // Keys 50 and 1 are final members (51 is silent, its commitment given); key 50 leads the
    // first round, and only key 50 received shard 1's result.
    let (mut leader, parent, shard_one) = final_member_beside_shard_one_as(50);
    let (mut member, _, _) = final_member_beside_shard_one_as(1);
    from_all(
        &mut leader,
        &[key(60)],
        &shard_result(1, parent, &shard_one, &[60, 61, 62]),
        2,
    );
    let commitment = Message::Commitment {
        height: 1,
        value: Digest::from_bytes([51; 32]),
    };
    from_all(&mut leader, &[key(51)], &commitment, 2);
    from_all(&mut member, &[key(51)], &commitment, 2);
    let keys = [key(50), key(1)];
    // Every message between the two, delivered at once; what the member sent, in order.
    let mut member_sent: Vec<(Vec<PublicKey>, Message)> = Vec::new();
    let mut proposal: Option<(u32, Digest)> = None;
    let prevoted = |sent: &[(Vec<PublicKey>, Message)], proposal: Option<(u32, Digest)>| {
        sent.iter().position(|(_, m)| {
            matches!(m, Message::Vote(v) if v.phase == Phase::Prevote
                && Some((v.round, v.value)) == proposal)
        })
    };
    let mut now = 3;
    while now < 20_000_000 && prevoted(&member_sent, proposal).is_none() {
        now += 50_000;
        let mut queue = std::collections::VecDeque::new();
        for (i, node) in [&mut leader, &mut member].into_iter().enumerate() {
            for (to, m) in sent(node, now, Input::Timer(Tick(now))) {
                queue.push_back((i, to, m));
            }
        }
        while let Some((i, to, m)) = queue.pop_front() {
            match &m {
                Message::Proposal(p) if i == 0 && p.stage == Stage::Final && proposal.is_none() => {
                    proposal = Some((p.round, p.value.digest(Stage::Final)));
                }
                _ => {}
            }
            if i == 1 {
                member_sent.push((to.clone(), m.clone()));
            }
            let other = 1 - i;
            if !to.contains(&keys[other]) {
                continue;
            }
            let node = if other == 0 { &mut leader } else { &mut member };
            let input = Input::Message {
                from: keys[i],
                message: m,
            };
            for (to, m) in sent(node, now, input) {
                queue.push_back((other, to, m));
            }
        }
    }
    let (round, _) = proposal.expect("key 50 proposed a final value");
    let prevoted = prevoted(&member_sent, proposal).expect("key 1 prevoted key 50's value");
    let requested = member_sent
        .iter()
        .position(|(to, m)| {
            matches!(m, Message::ShardRequest(r) if r.shards.contains(&1)) && *to == vec![key(50)]
        })
        .expect("key 1 asked the leader for shard 1's result");
    assert!(requested < prevoted, "the prevote waited for the result");
    assert_eq!(member.shard_results_held(), vec![1], "the leader answered");
    let left_the_round = member_sent[requested..prevoted].iter().any(
        |(_, m)| matches!(m, Message::RoundChange(r) if r.stage == Stage::Final && r.round > round),
    );
    assert!(!left_the_round, "the value was prevoted in its own round");
}

#[test]
fn a_final_leader_missing_a_shard_asks_two_members_then_proposes_without_it_in_good_time() {
    // Key 50 leads the final committee's first round; of four shards, shard 1's result
    // arrives 0.1 s after the assignment (at 1 µs), shards 2 and 3's at 0.2 s (more than half
    // are in), and shard 0's never.
    let (mut leader, parent, shards) = final_member_beside_shards(50, 2);
    let result = |j: u16| {
        let first = 50 + 10 * j as u8;
        shard_result(
            j,
            parent,
            &shards[usize::from(j) - 1],
            &[first, first + 1, first + 2],
        )
    };
    from_all(&mut leader, &[key(60)], &result(1), 100_001);
    let half = 200_001;
    let mut arrivals = vec![(key(70), result(2)), (key(80), result(3))];
    for k in [key(1), key(51)] {
        let value = Digest::from_bytes([k.as_bytes()[0]; 32]);
        arrivals.push((k, Message::Commitment { height: 1, value }));
    }
    // What the leader sends and the timers it sets in reply to `input` at `now`.
    let mut step = |now: u64, input: ProtocolInput<Node>| {
        let (mut sent, mut timers) = (Vec::new(), Vec::new());
        for o in leader.handle(&mut verifying(), now, input).unwrap() {
            match o {
                Output::Send {
                    to: Recipients::Some(to),
                    message,
                } => sent.push((to, message)),
                Output::SetTimer { at, .. } => timers.push(at),
                _ => {}
            }
        }
        (sent, timers)
    };
    let mut timers = Vec::new();
    for (from, message) in arrivals {
        timers.extend(step(half, Input::Message { from, message }).1);
    }
    let final_proposal = |out: &[(Vec<PublicKey>, Message)]| {
        out.iter().find_map(|(_, m)| match m {
            Message::Proposal(p) if p.stage == Stage::Final => match &p.value {
                Value::Final(v) => Some(v.shards.iter().map(|s| s.summary.shard).collect()),
                _ => None,
            },
            _ => None,
        })
    };
    // Halfway to leaving shard 0 out, the leader asks the two other final members for it.
    let pull = half + (half - 1) / 2;
    assert!(
        timers.contains(&pull),
        "a timer for {pull} µs among {timers:?}"
    );
    assert!(step(pull - 1, Input::Timer(Tick(pull - 1))).0.is_empty());
    let (out, timers) = step(pull, Input::Timer(Tick(pull)));
    let mut asked: Vec<PublicKey> = out
        .iter()
        .filter(|(_, m)| matches!(m, Message::ShardRequest(r) if r.shards.to_vec() == vec![0]))
        .flat_map(|(to, _)| to.clone())
        .collect();
    asked.sort();
    let mut others = vec![key(1), key(51)];
    others.sort();
    assert_eq!(asked, others, "shard 0 asked of the other final members");
    assert_eq!(final_proposal(&out), None::<Vec<u16>>);
    // Nobody held it: once the missing shard had as long again as the others took, the
    // leader proposes the shards it holds, long before Timing::final_wait (3 s).
    let open = half + (half - 1);
    assert!(
        timers.contains(&open),
        "a timer for {open} µs among {timers:?}"
    );
    let early = step(open - 1, Input::Timer(Tick(open - 1))).0;
    assert_eq!(final_proposal(&early), None, "the straggler had its time");
    let out = step(open, Input::Timer(Tick(open))).0;
    assert_eq!(final_proposal(&out), Some(vec![1, 2, 3]));
    assert!(
        !out.iter()
            .any(|(_, m)| matches!(m, Message::ShardRequest(_))),
        "asked once"
    );
}

proptest! {
    #[test]
    fn every_final_member_hears_from_two_members_of_every_shard(
        size in 1usize..60,
        n in 1usize..60,
    ) {
        let mut senders = vec![0usize; n];
        for me in 0..size {
            let to: Vec<usize> = super::node::result_recipients(me, size, n).collect();
            // Two each from a shard at least as large; a smaller shard's members share the
            // final committee out, none sending to more than its share.
            let most = if size >= n { 2 } else { 2 * n.div_ceil(size) };
            prop_assert!(!to.is_empty() && to.len() <= most, "{me} sends to {to:?}");
            for j in to {
                senders[j] += 1;
            }
        }
        let least = size.min(n).min(2);
        prop_assert!(senders.iter().all(|s| *s >= least), "senders per final member: {senders:?}");
    }
}

#[test]
fn a_final_member_answers_requests_for_shard_results_from_final_members_only_and_boundedly() {
    let (mut node, parent, shard_one) = final_member_beside_shard_one();
    let result = shard_result(1, parent, &shard_one, &[60, 61, 62]);
    from_all(&mut node, &[key(60)], &result, 2);
    let Message::ShardResult(held) = &result else {
        unreachable!()
    };
    let request = Message::ShardRequest(ShardRequest {
        height: 1,
        parent,
        shards: vec![1].try_into().unwrap(),
    });
    let answers = |node: &mut Node, from: PublicKey| {
        let input = Input::Message {
            from,
            message: request.clone(),
        };
        sent(node, 3, input)
            .into_iter()
            .filter(|(to, m)| {
                matches!(m, Message::ShardResult(r) if r == held) && *to == vec![from]
            })
            .count()
    };
    // A shard member, an outsider: nothing (the answer is 100 KB a shard).
    assert_eq!(answers(&mut node, key(60)), 0);
    assert_eq!(answers(&mut node, key(100)), 0);
    // A final member: the result, a few times per epoch at most.
    let answered: usize = (0..10).map(|_| answers(&mut node, key(50))).sum();
    assert_eq!(answered, usize::from(super::node::MAX_ANSWERS));
    // A shard whose result it does not hold: nothing.
    let unknown = Message::ShardRequest(ShardRequest {
        height: 1,
        parent,
        shards: vec![0].try_into().unwrap(),
    });
    let input = Input::Message {
        from: key(51),
        message: unknown,
    };
    assert!(sent(&mut node, 4, input).is_empty());
}
