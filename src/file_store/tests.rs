use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;

/// An in-memory disk whose bytes the test can inspect and damage, and which can fail on demand.
#[derive(Clone, Default)]
struct MemDisk {
    data: Arc<Mutex<Vec<u8>>>,
    syncs: Arc<AtomicUsize>,
    fail_sync: Arc<AtomicBool>,
    /// Appends write this many bytes, then fail (`usize::MAX`: never fail).
    fail_append_after: Arc<AtomicUsize>,
}

impl MemDisk {
    fn new() -> Self {
        let d = Self::default();
        d.fail_append_after.store(usize::MAX, Ordering::SeqCst);
        d
    }
    fn with_bytes(bytes: Vec<u8>) -> Self {
        let d = Self::new();
        *d.data.lock().unwrap() = bytes;
        d
    }
    fn bytes(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }
    fn set_bytes(&self, bytes: Vec<u8>) {
        *self.data.lock().unwrap() = bytes;
    }
}

impl Disk for MemDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().unwrap().len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = self.data.lock().unwrap();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = data
            .get(start..start + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.fail_append_after.load(Ordering::SeqCst);
        let mut data = self.data.lock().unwrap();
        if bytes.len() > limit {
            data.extend_from_slice(&bytes[..limit]);
            return Err(io::Error::other("injected write failure"));
        }
        data.extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected sync failure"));
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.data.lock().unwrap().truncate(len as usize);
        Ok(())
    }
}

fn h(n: u8) -> BlockHash {
    BlockHash::from_bytes([n; 32])
}

fn open(disk: &MemDisk) -> Result<FileStore, FileStoreError> {
    FileStore::builder().open_disk(disk.clone())
}

/// Writes blocks 1..=n, each followed by a main-chain update making it the tip. Returns the
/// record offsets (block, main, block, main, …).
fn fill(store: &mut FileStore, n: u8) -> Vec<u64> {
    let mut offsets = Vec::new();
    for i in 1..=n {
        offsets.push(store.log_len());
        store.put_block(&h(i), &vec![i; 100 + i as usize]).unwrap();
        offsets.push(store.log_len());
        store.set_main_chain(u64::from(i) - 1, &[h(i)]).unwrap();
    }
    offsets
}

#[test]
fn new_store_round_trips_and_reopens() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    assert!(s.recovery().created);
    assert_eq!(disk.bytes()[..8], format::MAGIC);
    fill(&mut s, 3);
    s.put_block(&h(2), b"ignored: already stored").unwrap();
    s.set_main_chain(1, &[h(3)]).unwrap();
    let len = s.log_len();
    assert_eq!(s.durable_len(), len);
    drop(s);

    let s = open(&disk).unwrap();
    let r = s.recovery();
    assert!(!r.created);
    // Seven records and the checkpoint of the clean close.
    assert_eq!((r.records, r.blocks, r.truncated_bytes), (8, 3, 0));
    assert_eq!(s.log_len(), len + RECORD_HEADER_LEN + 1);
    assert_eq!(s.block_hashes().unwrap(), vec![h(1), h(2), h(3)]);
    assert_eq!(s.get_block(&h(2)).unwrap().unwrap(), vec![2; 102]);
    assert_eq!(s.get_block(&h(9)).unwrap(), None);
    assert_eq!(s.tip_height().unwrap(), Some(1));
    assert_eq!(s.main_hash(1).unwrap(), Some(h(3)));
    assert_eq!(s.main_hash(2).unwrap(), None);
}

#[test]
fn every_append_syncs_and_group_commit_waits_for_sync() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    let base = disk.syncs.load(Ordering::SeqCst);
    fill(&mut s, 2);
    assert_eq!(disk.syncs.load(Ordering::SeqCst) - base, 4);
    drop(s);

    let disk = MemDisk::new();
    let mut s = FileStore::builder()
        .sync_policy(SyncPolicy::Group {
            max_records: 3,
            max_delay: Duration::from_secs(3600),
        })
        .open_disk(disk.clone())
        .unwrap();
    let base = disk.syncs.load(Ordering::SeqCst);
    s.put_block(&h(1), b"one").unwrap();
    s.put_block(&h(2), b"two").unwrap();
    assert_eq!(disk.syncs.load(Ordering::SeqCst), base);
    assert!(s.durable_len() < s.log_len());
    s.put_block(&h(3), b"three").unwrap();
    assert_eq!(disk.syncs.load(Ordering::SeqCst), base + 1);
    assert_eq!(s.durable_len(), s.log_len());
    s.put_block(&h(4), b"four").unwrap();
    s.sync().unwrap();
    s.sync().unwrap();
    assert_eq!(disk.syncs.load(Ordering::SeqCst), base + 2);

    // A zero delay syncs on every append.
    let mut s = FileStore::builder()
        .sync_policy(SyncPolicy::Group {
            max_records: 100,
            max_delay: Duration::ZERO,
        })
        .open_disk(MemDisk::new())
        .unwrap();
    s.put_block(&h(1), b"one").unwrap();
    assert_eq!(s.durable_len(), s.log_len());

    assert!(matches!(
        FileStore::builder()
            .sync_policy(SyncPolicy::Group {
                max_records: 0,
                max_delay: Duration::ZERO
            })
            .open_disk(MemDisk::new()),
        Err(FileStoreError::Config(_))
    ));
}

#[test]
fn torn_tail_at_every_length_is_truncated_to_a_prefix() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    // Eight data records, then the checkpoint of the clean close.
    let mut starts = fill(&mut s, 4);
    starts.push(s.log_len());
    drop(s);
    let full = disk.bytes();
    let ends: Vec<u64> = starts[1..]
        .iter()
        .copied()
        .chain([full.len() as u64])
        .collect();
    for cut in 0..full.len() {
        let d = MemDisk::with_bytes(full[..cut].to_vec());
        let mut s = open(&d).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        // Records wholly before the cut survive; nothing else does.
        let kept = ends.iter().filter(|&&end| end <= cut as u64).count();
        let data = kept.min(8);
        assert_eq!(
            s.block_hashes().unwrap().len(),
            data.div_ceil(2),
            "cut at {cut}"
        );
        assert_eq!(
            s.tip_height().unwrap(),
            (data as u64 / 2).checked_sub(1),
            "cut at {cut}"
        );
        if cut as u64 >= FILE_HEADER_LEN {
            assert_eq!(s.recovery().records as usize, kept, "cut at {cut}");
            let end = starts.get(kept).copied().unwrap_or(full.len() as u64);
            assert_eq!(s.recovery().truncated_bytes, cut as u64 - end);
        } else {
            assert!(s.recovery().created);
        }
        // The store goes on from there.
        s.put_block(&h(200), b"after recovery").unwrap();
        drop(s);
        let s = open(&d).unwrap();
        assert_eq!(s.recovery().truncated_bytes, 0);
        assert_eq!(
            s.get_block(&h(200)).unwrap().as_deref(),
            Some(&b"after recovery"[..])
        );
    }
}

#[test]
fn damage_to_a_synced_record_is_refused_with_its_offset() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    let offsets = fill(&mut s, 3);
    drop(s);
    let full = disk.bytes();
    // Damage each record but the last, in its frame header and in its body.
    for &at in &offsets[..offsets.len() - 1] {
        for delta in [0, 5, 9, 20, RECORD_HEADER_LEN + 3] {
            let mut bytes = full.clone();
            bytes[(at + delta) as usize] ^= 0x40;
            let d = MemDisk::with_bytes(bytes.clone());
            match open(&d) {
                Err(FileStoreError::CorruptRecord { offset, .. }) => assert_eq!(offset, at),
                other => panic!("damage at {at}+{delta}: {other:?}"),
            }
            // The file is left for the operator.
            assert_eq!(d.bytes(), bytes);
            let msg = open(&d).unwrap_err().to_string();
            assert!(msg.contains(&format!("offset {at}")), "{msg}");
        }
    }
    // The last data record is vouched for by the checkpoint of the clean close.
    let last = *offsets.last().unwrap();
    let mut bytes = full.clone();
    bytes[last as usize + 40] ^= 1;
    assert!(matches!(
        open(&MemDisk::with_bytes(bytes)),
        Err(FileStoreError::CorruptRecord { offset, .. }) if offset == last
    ));
    // Damage to the checkpoint itself loses nothing.
    let mut bytes = full.clone();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let s = open(&MemDisk::with_bytes(bytes)).unwrap();
    assert_eq!(s.recovery().truncated_bytes, RECORD_HEADER_LEN + 1);
    assert_eq!(s.tip_height().unwrap(), Some(2));
    assert_eq!(s.block_hashes().unwrap().len(), 3);
}

#[test]
fn open_vouches_for_records_a_crash_left_unvouched() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    let offsets = fill(&mut s, 2);
    // A crash: no clean close, so no checkpoint.
    core::mem::forget(s);
    let crashed = disk.bytes();
    // Damage to the last record now looks like a torn write, and is truncated...
    let mut bytes = crashed.clone();
    let last = *offsets.last().unwrap() as usize;
    bytes[last + 40] ^= 1;
    let s = open(&MemDisk::with_bytes(bytes)).unwrap();
    assert_eq!(s.recovery().truncated_bytes, (crashed.len() - last) as u64);
    // ...but once the store has been opened, a checkpoint vouches for it.
    let d = MemDisk::with_bytes(crashed);
    drop(open(&d).unwrap());
    let mut bytes = d.bytes();
    bytes[last + 40] ^= 1;
    assert!(matches!(
        open(&MemDisk::with_bytes(bytes)),
        Err(FileStoreError::CorruptRecord { offset, .. }) if offset == last as u64
    ));
}

#[test]
fn unsynced_group_tail_damaged_out_of_order_is_truncated() {
    let disk = MemDisk::new();
    let mut s = FileStore::builder()
        .sync_policy(SyncPolicy::Group {
            max_records: 1000,
            max_delay: Duration::from_secs(3600),
        })
        .open_disk(disk.clone())
        .unwrap();
    s.put_block(&h(1), &[1; 300]).unwrap();
    s.sync().unwrap();
    let synced = s.log_len();
    for i in 2..6 {
        s.put_block(&h(i), &[i; 300]).unwrap();
    }
    // A crash persisted the later pending records but not the first one.
    let mut bytes = disk.bytes();
    core::mem::forget(s);
    for b in &mut bytes[synced as usize..synced as usize + 200] {
        *b = 0;
    }
    let s = open(&MemDisk::with_bytes(bytes)).unwrap();
    assert_eq!(s.block_hashes().unwrap(), vec![h(1)]);
    // Truncated to what was synced, plus a checkpoint vouching for it.
    assert_eq!(s.log_len(), synced + RECORD_HEADER_LEN + 1);
}

#[test]
fn headers_are_checked() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    fill(&mut s, 1);
    drop(s);
    let good = disk.bytes();

    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        open(&MemDisk::with_bytes(b))
    };
    assert!(matches!(
        with(&|b| b[0] = b'x'),
        Err(FileStoreError::NotAStore)
    ));
    assert!(matches!(
        with(&|b| b[8] = 2),
        Err(FileStoreError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    ));
    let msg = with(&|b| b[8] = 7).unwrap_err().to_string();
    assert!(msg.contains("version 7"), "{msg}");
    assert!(matches!(
        with(&|b| b[12] = 1),
        Err(FileStoreError::CorruptHeader("unknown feature flags"))
    ));
    assert!(matches!(
        with(&|b| b[20] ^= 1),
        Err(FileStoreError::CorruptHeader(_))
    ));
    assert!(matches!(
        with(&|b| b[8] = 0),
        Err(FileStoreError::CorruptHeader(_))
    ));
    // Someone else's short file is not overwritten.
    assert!(matches!(
        open(&MemDisk::with_bytes(b"hello".to_vec())),
        Err(FileStoreError::NotAStore)
    ));
    // A header cut short (or never written) by a crash during creation is rewritten.
    for n in [0, 5, 31] {
        let d = MemDisk::with_bytes(good[..n].to_vec());
        assert!(open(&d).unwrap().recovery().created, "{n}");
        assert_eq!(d.bytes(), good[..32]);
    }
    // A lone header is an empty store.
    let s = open(&MemDisk::with_bytes(good[..32].to_vec())).unwrap();
    assert!(!s.recovery().created);
    assert_eq!(s.recovery().records, 0);
    let d = MemDisk::with_bytes(vec![0; 32]);
    assert!(open(&d).unwrap().recovery().created);
}

#[test]
fn lengths_are_limited_before_allocation() {
    let mut s = open(&MemDisk::new()).unwrap();
    let big = vec![0u8; MAX_BLOCK_LEN + 1];
    assert!(matches!(
        s.put(&h(1), &big),
        Err(FileStoreError::RecordTooLarge { .. })
    ));
    // Nothing was written.
    assert_eq!(s.log_len(), FILE_HEADER_LEN);
    assert!(s.put_block(&h(1), b"ok").is_ok());

    // A length field claiming 4 GiB in the middle of the file is refused, not allocated.
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    let offsets = fill(&mut s, 2);
    drop(s);
    let mut bytes = disk.bytes();
    let at = offsets[1] as usize;
    bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        open(&MemDisk::with_bytes(bytes)),
        Err(FileStoreError::CorruptRecord { offset, reason: "record length exceeds the maximum" }) if offset == at as u64
    ));
}

#[test]
fn long_main_chain_updates_are_split_and_reopen() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    let hashes: Vec<BlockHash> = (0..(MAX_MAIN_HASHES_PER_RECORD as u32 + 10))
        .map(|i| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            BlockHash::from_bytes(b)
        })
        .collect();
    s.set_main_chain(0, &hashes).unwrap();
    assert!(matches!(
        s.set_main(hashes.len() as u64 + 1, &hashes[..1]),
        Err(FileStoreError::MainChainGap { .. })
    ));
    s.set_main_chain(3, &[]).unwrap();
    drop(s);
    let s = open(&disk).unwrap();
    assert_eq!(s.recovery().records, 4);
    assert_eq!(s.tip_height().unwrap(), Some(2));
    assert_eq!(s.main_hash(2).unwrap(), Some(hashes[2]));
}

#[test]
fn failed_write_is_cut_off_and_failed_sync_poisons() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    fill(&mut s, 1);
    let len = s.log_len();
    disk.fail_append_after.store(10, Ordering::SeqCst);
    assert!(s.put_block(&h(2), b"two").is_err());
    assert_eq!(disk.bytes().len() as u64, len);
    assert_eq!(s.get_block(&h(2)).unwrap(), None);
    disk.fail_append_after.store(usize::MAX, Ordering::SeqCst);
    s.put_block(&h(2), b"two").unwrap();

    disk.fail_sync.store(true, Ordering::SeqCst);
    assert!(matches!(s.put(&h(3), b"three"), Err(FileStoreError::Io(_))));
    assert!(matches!(
        s.put(&h(4), b"four"),
        Err(FileStoreError::Poisoned)
    ));
    assert!(matches!(s.sync_now(), Err(FileStoreError::Poisoned)));
    drop(s);
    disk.fail_sync.store(false, Ordering::SeqCst);
    let s = open(&disk).unwrap();
    assert_eq!(s.block_hashes().unwrap(), vec![h(1), h(2), h(3)]);
}

#[test]
fn block_damaged_after_open_is_reported_on_read() {
    let disk = MemDisk::new();
    let mut s = open(&disk).unwrap();
    let offsets = fill(&mut s, 2);
    let mut bytes = disk.bytes();
    bytes[offsets[0] as usize + 50] ^= 1;
    disk.set_bytes(bytes);
    assert!(matches!(
        s.get_block(&h(1)),
        Err(StoreError::Corrupt(msg)) if msg.contains(&format!("offset {}", offsets[0]))
    ));
    assert!(s.get_block(&h(2)).unwrap().is_some());
}

#[test]
fn errors_are_send_sync_static_and_map_into_store_errors() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<FileStoreError>();
    assert!(matches!(
        StoreError::from(FileStoreError::CorruptRecord {
            offset: 1,
            reason: "x"
        }),
        StoreError::Corrupt(_)
    ));
    assert!(matches!(
        StoreError::from(FileStoreError::Io(io::Error::other("x"))),
        StoreError::Io(_)
    ));
    assert!(matches!(
        StoreError::from(FileStoreError::Locked),
        StoreError::Backend(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any damage to a store file either opens (to a prefix of what was written) or is refused
    /// with an error; it never panics.
    #[test]
    fn damaged_files_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let disk = MemDisk::new();
        let mut s = open(&disk).unwrap();
        fill(&mut s, 3);
        drop(s);
        let mut bytes = disk.bytes();
        for (i, v) in edits {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(s) = open(&MemDisk::with_bytes(bytes)) {
            let hashes = s.block_hashes().unwrap();
            prop_assert!(hashes.len() <= 3);
            for (i, hash) in hashes.iter().enumerate() {
                prop_assert_eq!(*hash, h(i as u8 + 1));
                let _ = s.get_block(hash);
            }
        }
    }

    /// Arbitrary bytes after a valid header never panic the recovery.
    #[test]
    fn arbitrary_logs_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = file_header().to_vec();
        bytes.extend_from_slice(&tail);
        let _ = open(&MemDisk::with_bytes(bytes));
    }
}
