//! Every size a peer controls has a public limit, checked before anything is allocated for it:
//! one test per limit, at the limit (accepted, or refused for another reason than size) and one
//! past it (refused with the limit's own error).

#[path = "support/pow.rs"]
mod pow_setup;
use pow_setup::engine;

use std::sync::Arc;

use medledger::block::{
    Header, StructureError, HEADER_VERSION, MAX_BLOCK_LEN, MAX_BLOCK_TXS, MAX_HEADER_LEN,
};
use medledger::chain::ManualClock;
use medledger::codec::{self, BoundedBytes, BoundedVec, Canonical, DecodeError, FORMAT_VERSION};
use medledger::consensus::ConsensusError;
use medledger::hash::{BlockHash, ChainId, Digest, StateRoot, TxId};
use medledger::merkle::{
    self, merkle_root, MerkleError, MerkleProof, IDS_PER_CHUNK, MAX_PROOF_LEAVES,
};
use medledger::pow::{CompactTarget, PowSeal, ProofOfWork, MAX_FUTURE_BLOCK_TIME};
use medledger::pseudonym::{Context, Epoch, LinkStatement, PatientSecret, Recipient};
use medledger::purpose::PurposeOfUse;
use medledger::smt::{self, StateProof};
use medledger::tx::{Keypair, MAX_TX_LEN};
use medledger::Block;
use medledger::{Chain, ChainBuilder, ChainError};
use medledger::{Payload, Transaction};

const T0: u64 = 1_750_000_000;

fn chain_id() -> ChainId {
    ChainId::from_bytes([0x42; 32])
}

fn tx(nonce: u64) -> Transaction {
    Transaction::sign(
        &Keypair::from_seed(&[1; 32]),
        chain_id(),
        nonce,
        Payload::Data {
            record: Digest::from_bytes([1; 32]),
        },
    )
}

/// `bytes` padded with zeros to `len`.
fn padded(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(bytes.len() <= len);
    bytes.resize(len, 0);
    bytes
}

/// A canonical varint.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// At `max` bytes the input is parsed (and refused only for its trailing zeros); one byte more
/// is refused for its size before parsing.
fn input_limit<T: Canonical + std::fmt::Debug>(valid: Vec<u8>, max: usize) {
    assert_eq!(T::MAX_ENCODED_LEN, max);
    match codec::decode::<T>(&padded(valid.clone(), max)) {
        Err(DecodeError::TrailingBytes { .. }) => {}
        Ok(_) if valid.len() == max => {}
        other => panic!("{} at the limit: {other:?}", T::NAME),
    }
    match codec::decode::<T>(&padded(valid, max + 1)) {
        Err(DecodeError::InputTooLarge { len, max: m, .. }) => {
            assert_eq!((len, m), (max + 1, max))
        }
        other => panic!("{} past the limit: {other:?}", T::NAME),
    }
}

fn header(tx_count: u32) -> Header<PowSeal> {
    Header {
        version: HEADER_VERSION,
        height: 1,
        parent: BlockHash::from_bytes([1; 32]),
        tx_root: merkle_root(&[]),
        tx_count,
        state_root: StateRoot::default(),
        timestamp: T0,
        seal: PowSeal {
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
            extra_nonce: 0,
        },
    }
}

#[test]
fn transaction_length() {
    input_limit::<Transaction>(tx(0).encode(), MAX_TX_LEN);
}

#[test]
fn block_length() {
    let block = Block {
        header: header(1),
        txs: vec![tx(0)].try_into().unwrap(),
    };
    input_limit::<Block<PowSeal>>(block.encode(), MAX_BLOCK_LEN);
}

#[test]
fn header_length() {
    input_limit::<Header<PowSeal>>(codec::encode(&header(0)), MAX_HEADER_LEN);
}

#[test]
fn transactions_per_block() {
    // The encoding of a block holding `n` copies of one transaction.
    let body = tx(0).encode();
    let block_bytes = |n: usize| {
        let mut v = codec::encode(&header(n as u32));
        varint(n, &mut v);
        v.reserve(n * (body.len() - 1));
        for _ in 0..n {
            v.extend_from_slice(&body[1..]);
        }
        v
    };
    let at = block_bytes(MAX_BLOCK_TXS);
    assert!(at.len() <= MAX_BLOCK_LEN);
    let block = Block::<PowSeal>::decode(&at).expect("a block of MAX_BLOCK_TXS decodes");
    assert_eq!(block.txs.len(), MAX_BLOCK_TXS);
    // One more: refused on its count, before the items are read.
    match Block::<PowSeal>::decode(&block_bytes(MAX_BLOCK_TXS + 1)) {
        Err(DecodeError::CountTooLarge { len, max, .. }) => {
            assert_eq!((len, max), (MAX_BLOCK_TXS + 1, MAX_BLOCK_TXS))
        }
        other => panic!("{other:?}"),
    }
    // Nor can such a block be built in memory.
    let too_many = vec![tx(0); MAX_BLOCK_TXS + 1];
    assert!(BoundedVec::<Transaction, MAX_BLOCK_TXS>::try_from(too_many).is_err());
}

fn ids(n: usize) -> Vec<TxId> {
    (0..n as u64)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&i.to_le_bytes());
            TxId::from_bytes(b)
        })
        .collect()
}

#[test]
fn merkle_proof_leaves() {
    let mut v = ids(MAX_PROOF_LEAVES);
    let root = merkle_root(&v);
    let last = MAX_PROOF_LEAVES - 1;
    let p = MerkleProof::new(&v, last).unwrap();
    p.verify(&root, MAX_PROOF_LEAVES as u32, &v[last]).unwrap();
    assert!(p.siblings.len() <= merkle::MAX_PROOF_DEPTH);
    v.push(TxId::default());
    assert_eq!(
        MerkleProof::new(&v, 0),
        Err(MerkleError::TooManyLeaves {
            count: MAX_PROOF_LEAVES as u64 + 1,
            max: MAX_PROOF_LEAVES
        })
    );
    // A decoded proof claiming more leaves is refused as such.
    let mut q = p.clone();
    q.count += 1;
    assert!(matches!(
        q.verify(&root, q.count, &v[last]),
        Err(MerkleError::TooManyLeaves { .. })
    ));
}

/// A Merkle proof encoding with `chunk` ids and `siblings` sibling hashes.
fn merkle_proof_bytes(index: u32, count: u32, chunk: usize, siblings: usize) -> Vec<u8> {
    let mut v = vec![FORMAT_VERSION];
    varint(index as usize, &mut v);
    varint(count as usize, &mut v);
    varint(chunk, &mut v);
    v.extend(vec![7u8; chunk * 32]);
    varint(siblings, &mut v);
    v.extend(vec![9u8; siblings * 32]);
    v
}

#[test]
fn merkle_proof_depth() {
    let at = merkle_proof_bytes(0, 1, 1, merkle::MAX_PROOF_DEPTH);
    let p: MerkleProof = codec::decode(&at).unwrap();
    assert_eq!(p.siblings.len(), merkle::MAX_PROOF_DEPTH);
    match codec::decode::<MerkleProof>(&merkle_proof_bytes(0, 1, 1, merkle::MAX_PROOF_DEPTH + 1)) {
        Err(DecodeError::CountTooLarge { len, max, .. }) => {
            assert_eq!(
                (len, max),
                (merkle::MAX_PROOF_DEPTH + 1, merkle::MAX_PROOF_DEPTH)
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn merkle_proof_chunk() {
    let p: MerkleProof = codec::decode(&merkle_proof_bytes(0, 32, IDS_PER_CHUNK, 0)).unwrap();
    assert_eq!(p.chunk.len(), IDS_PER_CHUNK);
    match codec::decode::<MerkleProof>(&merkle_proof_bytes(0, 33, IDS_PER_CHUNK + 1, 0)) {
        Err(DecodeError::CountTooLarge { len, max, .. }) => {
            assert_eq!((len, max), (IDS_PER_CHUNK + 1, IDS_PER_CHUNK))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn merkle_proof_length() {
    // The longest proof: five-byte varints, a full chunk, every sibling.
    let longest = merkle_proof_bytes(u32::MAX, u32::MAX, IDS_PER_CHUNK, merkle::MAX_PROOF_DEPTH);
    assert_eq!(longest.len(), MerkleProof::MAX_ENCODED_LEN);
    input_limit::<MerkleProof>(longest, MerkleProof::MAX_ENCODED_LEN);
}

/// A state proof encoding with a leaf (or not) and `siblings` sibling hashes.
fn state_proof_bytes(leaf: bool, siblings: usize) -> Vec<u8> {
    let mut v = vec![FORMAT_VERSION, u8::from(leaf)];
    if leaf {
        v.extend([5u8; 64]);
    }
    varint(siblings, &mut v);
    v.extend(vec![6u8; siblings * 32]);
    v
}

#[test]
fn state_proof_depth() {
    let p: StateProof = codec::decode(&state_proof_bytes(false, smt::MAX_PROOF_DEPTH)).unwrap();
    assert_eq!(p.siblings().len(), smt::MAX_PROOF_DEPTH);
    match codec::decode::<StateProof>(&state_proof_bytes(false, smt::MAX_PROOF_DEPTH + 1)) {
        Err(DecodeError::CountTooLarge { len, max, .. }) => {
            assert_eq!((len, max), (smt::MAX_PROOF_DEPTH + 1, smt::MAX_PROOF_DEPTH))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn state_proof_length() {
    let longest = state_proof_bytes(true, smt::MAX_PROOF_DEPTH);
    assert_eq!(longest.len(), StateProof::MAX_ENCODED_LEN);
    input_limit::<StateProof>(longest, StateProof::MAX_ENCODED_LEN);
}

fn longest_context() -> Context {
    Context::new(
        Epoch::MAX,
        *PurposeOfUse::ALL.last().unwrap(),
        Recipient::group("any"),
    )
}

#[test]
fn pseudonym_context_length() {
    let bytes = longest_context().encode();
    assert!(bytes.len() <= Context::MAX_ENCODED_LEN);
    input_limit::<Context>(bytes, Context::MAX_ENCODED_LEN);
}

#[test]
fn link_statement_length() {
    let tree = PatientSecret::from_bytes([2; 32]).key_tree();
    let c = longest_context();
    let mut c2 = c;
    c2.recipient = Recipient::group("other");
    let k = tree.epoch_key(c.epoch).unwrap();
    let st =
        LinkStatement::sign(&k.signing_key(&c).unwrap(), &k.signing_key(&c2).unwrap(), c).unwrap();
    let bytes = codec::encode(&st);
    assert!(bytes.len() <= LinkStatement::MAX_ENCODED_LEN);
    input_limit::<LinkStatement>(bytes, LinkStatement::MAX_ENCODED_LEN);
}

fn chain(max_reorg_depth: u64, clock: Arc<ManualClock>) -> Chain<ProofOfWork> {
    ChainBuilder::new("limits", engine())
        .genesis_time(T0)
        .clock(clock)
        .max_reorg_depth(max_reorg_depth)
        .build()
        .unwrap()
}

/// Mines `n` empty blocks on `chain`'s tip, appending them; `tag` makes the branch its own.
fn grow(chain: &mut Chain<ProofOfWork>, n: u64, tag: u64) -> Vec<Block<PowSeal>> {
    (0..n)
        .map(|_| {
            let b = chain
                .mine(vec![], chain.tip_header().timestamp + 600 + tag)
                .unwrap();
            chain.append(b.clone()).unwrap();
            b
        })
        .collect()
}

#[test]
fn reorganisation_depth() {
    const LIMIT: u64 = 2;
    let clock = Arc::new(ManualClock::new(T0 + 1_000_000));
    // A rival branch from genesis, LIMIT + 2 blocks long.
    let mut rival = chain(100, clock.clone());
    let branch = grow(&mut rival, LIMIT + 2, 1);

    // At the limit: a main chain of LIMIT blocks gives way to a heavier rival.
    let mut at = chain(LIMIT, clock.clone());
    grow(&mut at, LIMIT, 0);
    for b in &branch[..LIMIT as usize] {
        assert!(at.append(b.clone()).unwrap().is_side_branch());
    }
    let out = at.append(branch[LIMIT as usize].clone()).unwrap();
    assert_eq!(out.reverted.len() as u64, LIMIT);
    assert_eq!(at.tip(), branch[LIMIT as usize].hash());

    // One past: a main chain of LIMIT + 1 blocks refuses to roll them all back.
    let mut past = chain(LIMIT, clock);
    grow(&mut past, LIMIT + 1, 0);
    let before = (past.tip(), past.height(), past.state().root());
    for b in &branch[..=LIMIT as usize] {
        assert!(past.append(b.clone()).unwrap().is_side_branch());
    }
    match past.append(branch[LIMIT as usize + 1].clone()) {
        Err(ChainError::ReorgTooDeep { depth, max }) => {
            assert_eq!((depth, max), (LIMIT + 1, LIMIT))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((past.tip(), past.height(), past.state().root()), before);
}

#[test]
fn future_block_time() {
    let now = T0 + 1_000_000;
    let clock = Arc::new(ManualClock::new(now));
    let mut c = chain(100, clock);
    let at = c.mine(vec![], now + MAX_FUTURE_BLOCK_TIME).unwrap();
    let past = c.mine(vec![], now + MAX_FUTURE_BLOCK_TIME + 1).unwrap();
    let before = (c.tip(), c.height(), c.state().root());
    match c.append(past) {
        Err(ChainError::Consensus(ConsensusError::TimestampTooNew {
            found, max_drift, ..
        })) => assert_eq!(
            (found, max_drift),
            (now + MAX_FUTURE_BLOCK_TIME + 1, MAX_FUTURE_BLOCK_TIME)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!((c.tip(), c.height(), c.state().root()), before);
    c.append(at).unwrap();
}

#[test]
fn in_memory_block_size() {
    // A block built in memory is held to the limits a decoded one meets: here a header whose
    // seal is a byte string of up to twice the header limit.
    type Seal = BoundedBytes<{ 2 * MAX_HEADER_LEN }>;
    let oversize: Block<Seal> = Block {
        header: Header {
            version: HEADER_VERSION,
            height: 1,
            parent: BlockHash::default(),
            tx_root: merkle_root(&[]),
            tx_count: 0,
            state_root: StateRoot::default(),
            timestamp: T0,
            seal: Seal::try_from(vec![0; MAX_HEADER_LEN]).unwrap(),
        },
        txs: BoundedVec::new(),
    };
    match oversize.clone().check_structure(chain_id()) {
        Err(StructureError::TooLarge { what, len, max }) => {
            assert_eq!(what, "block header");
            assert!(len > max && max == MAX_HEADER_LEN);
        }
        other => panic!("{other:?}"),
    }
    // Trim the seal to the largest that fits: accepted.
    let mut fits = oversize;
    let over = codec::encode(&fits.header).len() - MAX_HEADER_LEN;
    let new_len = fits.header.seal.len() - over;
    fits.header.seal = Seal::try_from(vec![0; new_len]).unwrap();
    assert_eq!(codec::encode(&fits.header).len(), MAX_HEADER_LEN);
    fits.check_structure(chain_id()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Committee consensus

mod committee_limits {
    use super::*;
    use medledger::committee::{
        Certificate, CommitteeAssignment, CommitteeParams, CommitteeSeal, DirectoryCert, Message,
        Randomness, ShardCertificate, ShardSummary, Value, MAX_COMMITTEE_SIZE, MAX_MESSAGE_LEN,
        MAX_SEAL_LEN, MAX_SHARDS, MAX_SHARD_TXS,
    };
    use medledger::hash::MerkleRoot;

    fn membership(members: usize) -> Vec<u8> {
        let m = Message::Assignment(CommitteeAssignment {
            height: 1,
            parent: Default::default(),
            cert: DirectoryCert::empty(),
            committee: Some(0),
            members: BoundedVec::new(),
            final_members: BoundedVec::new(),
            reveal: None,
        });
        // Re-encode with `members` identity proofs in place of the empty list.
        let mut v = codec::encode(&m);
        // members len, final_members len, the empty certificate (round, digests, signatures),
        // reveal tag
        let empty_lists_at = v.len() - 6;
        v.truncate(empty_lists_at);
        varint(members, &mut v);
        for i in 0..members {
            v.extend([i as u8; 32]);
            v.push(0);
        }
        v.extend([0, 0, 0, 0, 0]);
        v
    }

    #[test]
    fn members_per_committee() {
        match codec::decode::<Message>(&membership(MAX_COMMITTEE_SIZE)).unwrap() {
            Message::Assignment(m) => assert_eq!(m.members.len(), MAX_COMMITTEE_SIZE),
            other => panic!("{other:?}"),
        }
        match codec::decode::<Message>(&membership(MAX_COMMITTEE_SIZE + 1)) {
            Err(DecodeError::CountTooLarge { len, max, .. }) => {
                assert_eq!((len, max), (MAX_COMMITTEE_SIZE + 1, MAX_COMMITTEE_SIZE))
            }
            other => panic!("{other:?}"),
        }
        // Parameters refuse a larger committee too.
        let bootstrap = [medledger::tx::Keypair::from_seed(&[1; 32]).public()];
        assert!(CommitteeParams::builder()
            .committee_size(MAX_COMMITTEE_SIZE as u16)
            .bootstrap(bootstrap)
            .build()
            .is_ok());
        assert!(CommitteeParams::builder()
            .committee_size(MAX_COMMITTEE_SIZE as u16 + 1)
            .bootstrap(bootstrap)
            .build()
            .is_err());
    }

    #[test]
    fn transactions_per_shard() {
        let body = tx(0).encode();
        let value = |n: usize| {
            let mut v = vec![FORMAT_VERSION, 0]; // Value::Shard
            varint(n, &mut v);
            for _ in 0..n {
                v.extend_from_slice(&body[1..]);
            }
            v
        };
        let at = value(MAX_SHARD_TXS);
        assert!(at.len() <= MAX_MESSAGE_LEN);
        match codec::decode::<Value>(&at).unwrap() {
            Value::Shard(s) => assert_eq!(s.txs.len(), MAX_SHARD_TXS),
            other => panic!("{other:?}"),
        }
        match codec::decode::<Value>(&value(MAX_SHARD_TXS + 1)) {
            Err(DecodeError::CountTooLarge { len, max, .. }) => {
                assert_eq!((len, max), (MAX_SHARD_TXS + 1, MAX_SHARD_TXS))
            }
            other => panic!("{other:?}"),
        }
    }

    /// The encoding of an otherwise empty seal with `shards` shard certificates.
    fn seal(shards: usize) -> Vec<u8> {
        let mut v = vec![FORMAT_VERSION];
        v.extend(Randomness::default().as_bytes());
        varint(shards, &mut v);
        for shard in 0..shards {
            let cert = ShardCertificate {
                summary: ShardSummary {
                    shard: shard as u16,
                    tx_root: MerkleRoot::default(),
                    tx_count: 0,
                },
                cert: Certificate::empty(),
            };
            let mut one = Vec::new();
            codec::encode_into(&cert, &mut one);
            v.extend(&one[1..]);
        }
        // No commitments, no reveals, an empty directory certificate, an empty final
        // certificate.
        v.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    #[test]
    fn shards_per_block() {
        let at: CommitteeSeal = codec::decode(&seal(MAX_SHARDS)).unwrap();
        assert_eq!(at.shards.len(), MAX_SHARDS);
        match codec::decode::<CommitteeSeal>(&seal(MAX_SHARDS + 1)) {
            Err(DecodeError::CountTooLarge { len, max, .. }) => {
                assert_eq!((len, max), (MAX_SHARDS + 1, MAX_SHARDS))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seal_length() {
        input_limit::<CommitteeSeal>(seal(1), MAX_SEAL_LEN);
    }

    #[test]
    fn message_length() {
        input_limit::<Message>(membership(3), MAX_MESSAGE_LEN);
    }
}

// ---------------------------------------------------------------------------------------------
// File store

#[allow(dead_code)]
#[path = "support/fuzz_checks/file_store.rs"]
mod file_store_support;

#[test]
fn file_store_record_length() {
    use medledger::file_store::{FileStore, FileStoreError, MAX_RECORD_LEN};
    use medledger::store::{Store, StoreError};

    let disk = file_store_support::MemDisk::default();
    let mut store = FileStore::builder().create_disk(disk.clone()).unwrap();
    // The largest block a store takes is the largest block a peer may send.
    let at = vec![0xab; MAX_BLOCK_LEN];
    store
        .put_block(&BlockHash::from_bytes([1; 32]), &at)
        .unwrap();
    match store.put_block(&BlockHash::from_bytes([2; 32]), &vec![0; MAX_BLOCK_LEN + 1]) {
        Err(StoreError::Backend(e)) => match e.downcast_ref::<FileStoreError>() {
            Some(FileStoreError::RecordTooLarge { len, max }) => {
                assert!(*len > MAX_BLOCK_LEN + 1 && *max == MAX_RECORD_LEN)
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    drop(store);
    // It reads back after a reopen; the refused one left nothing behind.
    let store = FileStore::builder().open_disk(disk).unwrap();
    assert_eq!(
        store.block_hashes().unwrap(),
        vec![BlockHash::from_bytes([1; 32])]
    );
    assert_eq!(
        store.get_block(&BlockHash::from_bytes([1; 32])).unwrap(),
        Some(at)
    );
}

// ---------------------------------------------------------------------------------------------
// Access control: every string a peer writes into the ledger

mod access_limits {
    use super::*;
    use medledger::access::{
        AccessOp, Category, Identity, Period, RecordPointer, RelationshipId, MAX_LABEL_LEN,
        MAX_NAME_LEN, MAX_QUERY_LEN, MAX_REASON_LEN,
    };
    use medledger::hash::AccountId;

    /// A transaction carrying `op(s)` with `s` a string of `max` bytes decodes; the same encoding
    /// with one more byte in the string is refused on that string's length.
    fn string_limit(max: usize, op: impl Fn(String) -> AccessOp) {
        let s = "q".repeat(max);
        let tx = Transaction::sign(
            &Keypair::from_seed(&[1; 32]),
            chain_id(),
            0,
            Payload::Access(op(s.clone())),
        );
        let bytes = tx.encode();
        assert_eq!(Transaction::decode(&bytes).unwrap(), tx);
        // Rewrite the length prefix (max → max + 1) and add a byte to the string.
        let at = bytes
            .windows(max)
            .position(|w| w == s.as_bytes())
            .expect("the string is in the encoding");
        let mut prefix = Vec::new();
        varint(max, &mut prefix);
        assert_eq!(&bytes[at - prefix.len()..at], &prefix[..]);
        let mut longer = Vec::new();
        varint(max + 1, &mut longer);
        assert_eq!(longer.len(), prefix.len());
        let mut past = bytes[..at - prefix.len()].to_vec();
        past.extend(&longer);
        past.extend(s.as_bytes());
        past.push(b'q');
        past.extend(&bytes[at + max..]);
        match Transaction::decode(&past) {
            Err(DecodeError::CountTooLarge { len, max: m, .. }) => {
                assert_eq!((len, m), (max + 1, max))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn record_pointer_query() {
        string_limit(MAX_QUERY_LEN, |q| AccessOp::AddPointer {
            relationship: RelationshipId::of(AccountId::default(), AccountId::default()),
            record: RecordPointer {
                query: q.try_into().unwrap(),
                content_hash: medledger::hash::content_hash(b"r"),
                category: Category::Laboratory,
                data_period: Period::new(0, 1).unwrap(),
            },
            replaces: None,
        });
    }

    #[test]
    fn organisation_name() {
        string_limit(MAX_NAME_LEN, |n| AccessOp::Register {
            role: medledger::access::Role::Provider,
            identity: Identity::Organisation(n.try_into().unwrap()),
            blinded: None,
        });
    }

    #[test]
    fn reason() {
        string_limit(MAX_REASON_LEN, |r| AccessOp::DecertifyProvider {
            provider: AccountId::default(),
            reason: r.try_into().unwrap(),
        });
    }

    #[test]
    fn group_label() {
        string_limit(MAX_LABEL_LEN, |l| AccessOp::CreateGroup {
            label: l.try_into().unwrap(),
        });
    }
}
