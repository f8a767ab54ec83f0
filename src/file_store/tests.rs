use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;

/// What a [`MemDisk`] was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DiskOp {
    Append,
    WriteAt(u64),
    Sync,
    Truncate,
}

/// An in-memory disk whose bytes the test can inspect and damage, and which can fail on demand.
#[derive(Clone, Default)]
struct MemDisk {
    data: Arc<Mutex<Vec<u8>>>,
    syncs: Arc<AtomicUsize>,
    fail_sync: Arc<AtomicBool>,
    /// Appends write this many bytes, then fail (`usize::MAX`: never fail).
    fail_append_after: Arc<AtomicUsize>,
    /// In-place writes write half their bytes, then fail.
    fail_write_at: Arc<AtomicBool>,
    trace: Arc<Mutex<Vec<DiskOp>>>,
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
    fn log(&self, op: DiskOp) {
        self.trace.lock().unwrap().push(op);
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
        self.log(DiskOp::Append);
        let limit = self.fail_append_after.load(Ordering::SeqCst);
        let mut data = self.data.lock().unwrap();
        if bytes.len() > limit {
            data.extend_from_slice(&bytes[..limit]);
            return Err(io::Error::other("injected write failure"));
        }
        data.extend_from_slice(bytes);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.log(DiskOp::WriteAt(offset));
        let mut data = self.data.lock().unwrap();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let dst = data
            .get_mut(start..start + bytes.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        if self.fail_write_at.load(Ordering::SeqCst) {
            let half = bytes.len() / 2;
            dst[..half].copy_from_slice(&bytes[..half]);
            return Err(io::Error::other("injected write failure"));
        }
        dst.copy_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.log(DiskOp::Sync);
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected sync failure"));
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.log(DiskOp::Truncate);
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

fn create(disk: &MemDisk) -> FileStore {
    FileStore::builder().create_disk(disk.clone()).unwrap()
}

/// The anchor that counts in `bytes`, and the other slot's (if valid).
fn anchors(bytes: &[u8]) -> [Option<Anchor>; 2] {
    [0, 1].map(|slot| {
        let at = anchor_offset(slot) as usize;
        decode_anchor(
            slot,
            bytes[at..at + ANCHOR_LEN as usize].try_into().unwrap(),
        )
    })
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
    let mut s = create(&disk);
    assert!(s.recovery().created);
    assert_eq!(disk.bytes(), format::new_file_prefix());
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
    assert_eq!((r.records, r.blocks, r.truncated_bytes), (7, 3, 0));
    // The clean close acknowledged everything, in an anchor, and appended nothing.
    assert_eq!((r.acknowledged_len, s.log_len()), (len, len));
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
    let mut s = create(&disk);
    let base = disk.syncs.load(Ordering::SeqCst);
    fill(&mut s, 2);
    // One sync per record: the anchors ride on the next sync.
    assert_eq!(disk.syncs.load(Ordering::SeqCst) - base, 4);
    drop(s);

    let disk = MemDisk::new();
    let mut s = FileStore::builder()
        .sync_policy(SyncPolicy::Group {
            max_records: 3,
            max_delay: Duration::from_secs(3600),
        })
        .create_disk(disk.clone())
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
        .create_disk(MemDisk::new())
        .unwrap();
    s.put_block(&h(1), b"one").unwrap();
    assert_eq!(s.durable_len(), s.log_len());

    assert!(matches!(
        FileStore::builder()
            .sync_policy(SyncPolicy::Group {
                max_records: 0,
                max_delay: Duration::ZERO
            })
            .create_disk(MemDisk::new()),
        Err(FileStoreError::Config(_))
    ));
}

#[test]
fn a_store_cut_short_of_what_it_acknowledged_is_refused_at_every_length() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
    fill(&mut s, 4);
    drop(s);
    let full = disk.bytes();
    let acked = full.len() as u64;
    assert_eq!(open(&disk).unwrap().recovery().acknowledged_len, acked);
    for cut in 0..full.len() {
        let d = MemDisk::with_bytes(full[..cut].to_vec());
        let err = match open(&d) {
            Ok(_) => panic!("cut at {cut} opened"),
            Err(e) => e,
        };
        match err {
            FileStoreError::Truncated { len, acknowledged } => {
                assert!(cut as u64 >= DATA_START, "cut at {cut}");
                assert_eq!((len, acknowledged), (cut as u64, acked));
                let msg = err.to_string();
                assert!(
                    msg.contains(&format!("{cut} bytes"))
                        && msg.contains(&format!("{acked} bytes")),
                    "{msg}"
                );
            }
            // A cut inside the header or the anchors: damaged, never a new store.
            FileStoreError::CorruptHeader(_) => assert!((cut as u64) < DATA_START, "cut at {cut}"),
            other => panic!("cut at {cut}: {other}"),
        }
        // The file is left as it is, for the operator.
        assert_eq!(d.bytes(), full[..cut], "cut at {cut}");
    }
    // The error reaches the chain as corruption.
    let err = StoreError::from(open(&MemDisk::with_bytes(full[..200].to_vec())).unwrap_err());
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("cut short")),
        "{err}"
    );
}

#[test]
fn a_torn_tail_past_the_acknowledged_length_is_truncated_to_a_prefix() {
    let disk = MemDisk::new();
    let mut s = FileStore::builder()
        .sync_policy(SyncPolicy::Group {
            max_records: 1000,
            max_delay: Duration::from_secs(3600),
        })
        .create_disk(disk.clone())
        .unwrap();
    fill(&mut s, 2);
    s.sync().unwrap();
    let acked = s.log_len();
    // Four more records, never synced: a crash may leave any prefix of them.
    let mut starts = Vec::new();
    for i in 3..5u8 {
        starts.push(s.log_len());
        s.put_block(&h(i), &vec![i; 100 + i as usize]).unwrap();
        starts.push(s.log_len());
        s.set_main_chain(u64::from(i) - 1, &[h(i)]).unwrap();
    }
    assert_eq!(s.durable_len(), acked);
    core::mem::forget(s);
    let full = disk.bytes();
    let ends: Vec<u64> = starts[1..]
        .iter()
        .copied()
        .chain([full.len() as u64])
        .collect();
    starts.push(full.len() as u64);
    for cut in 0..=full.len() {
        let d = MemDisk::with_bytes(full[..cut].to_vec());
        let opened = open(&d);
        if (cut as u64) < acked {
            assert!(
                matches!(
                    opened,
                    Err(FileStoreError::Truncated { .. } | FileStoreError::CorruptHeader(_))
                ),
                "cut at {cut}"
            );
            continue;
        }
        let mut s = opened.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        // The acknowledged records, and the unacknowledged ones wholly before the cut, survive.
        let kept = ends.iter().filter(|&&end| end <= cut as u64).count();
        assert_eq!(s.recovery().records as usize, 4 + kept, "cut at {cut}");
        assert_eq!(
            s.block_hashes().unwrap().len(),
            2 + kept.div_ceil(2),
            "cut at {cut}"
        );
        assert_eq!(
            s.tip_height().unwrap(),
            Some(1 + kept as u64 / 2),
            "cut at {cut}"
        );
        assert_eq!(
            s.recovery().truncated_bytes,
            cut as u64 - starts[kept],
            "cut at {cut}"
        );
        assert_eq!(s.recovery().acknowledged_len, acked);
        // The store goes on from there, and what it recovered is now acknowledged.
        s.put_block(&h(200), b"after recovery").unwrap();
        drop(s);
        let s = open(&d).unwrap();
        assert_eq!(s.recovery().truncated_bytes, 0);
        assert_eq!(s.recovery().acknowledged_len, d.bytes().len() as u64);
        assert_eq!(
            s.get_block(&h(200)).unwrap().as_deref(),
            Some(&b"after recovery"[..])
        );
    }
}

#[test]
fn damage_to_a_synced_record_is_refused_with_its_offset() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
    let offsets = fill(&mut s, 3);
    drop(s);
    let full = disk.bytes();
    // Damage each record, in its frame header and in its body.
    for &at in &offsets {
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
}

#[test]
fn a_lost_anchor_leaves_only_the_last_sync_unvouched() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
    fill(&mut s, 2);
    let last = s.log_len() as usize;
    let earlier_anchors = disk.bytes()[FILE_HEADER_LEN as usize..DATA_START as usize].to_vec();
    s.put_block(&h(3), &[3; 300]).unwrap();
    // A power cut: the anchor written after the last sync never reached the disk.
    core::mem::forget(s);
    let mut crashed = disk.bytes();
    crashed[FILE_HEADER_LEN as usize..DATA_START as usize].copy_from_slice(&earlier_anchors);
    let s = open(&MemDisk::with_bytes(crashed.clone())).unwrap();
    assert_eq!(s.block_hashes().unwrap().len(), 3);
    assert_eq!(s.recovery().acknowledged_len, last as u64);
    // Damage to that last record now looks like a torn write, and is truncated...
    let mut bytes = crashed.clone();
    bytes[last + 40] ^= 1;
    let s = open(&MemDisk::with_bytes(bytes)).unwrap();
    assert_eq!(s.recovery().truncated_bytes, (crashed.len() - last) as u64);
    // ...but not damage to the record before it, which the older anchor acknowledged...
    let mut bytes = crashed.clone();
    bytes[last - 10] ^= 1;
    assert!(matches!(
        open(&MemDisk::with_bytes(bytes)),
        Err(FileStoreError::CorruptRecord { .. })
    ));
    // ...and once the store has been opened, an anchor vouches for the last record too.
    let d = MemDisk::with_bytes(crashed.clone());
    drop(open(&d).unwrap());
    let mut bytes = d.bytes();
    bytes[last + 40] ^= 1;
    assert!(matches!(
        open(&MemDisk::with_bytes(bytes)),
        Err(FileStoreError::CorruptRecord { offset, .. }) if offset == last as u64
    ));
    assert!(matches!(
        open(&MemDisk::with_bytes(d.bytes()[..last + 40].to_vec())),
        Err(FileStoreError::Truncated { .. })
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
        .create_disk(disk.clone())
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
    // Truncated to what was synced, and acknowledged as such.
    assert_eq!(s.log_len(), synced);
    assert_eq!(s.recovery().acknowledged_len, synced);
}

#[test]
fn anchors_alternate_after_a_sync_and_a_torn_one_falls_back_to_the_other() {
    for policy in [
        SyncPolicy::EveryAppend,
        SyncPolicy::Group {
            max_records: 3,
            max_delay: Duration::from_secs(3600),
        },
    ] {
        let disk = MemDisk::new();
        let mut s = FileStore::builder()
            .sync_policy(policy)
            .create_disk(disk.clone())
            .unwrap();
        fill(&mut s, 5);
        s.sync().unwrap();
        drop(s);
        drop(open(&disk).unwrap());
        // Each anchor goes to the other slot, and only once the one before it was synced: a
        // crash can never tear both.
        let trace = disk.trace.lock().unwrap().clone();
        let writes: Vec<(usize, u64)> = trace
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                DiskOp::WriteAt(at) => Some((i, *at)),
                _ => None,
            })
            .collect();
        assert!(writes.len() >= 4, "{policy:?}: {trace:?}");
        for pair in writes.windows(2) {
            let ((i, a), (j, b)) = (pair[0], pair[1]);
            assert_ne!(a, b, "{policy:?}: {trace:?}");
            assert!(
                trace[i..j].contains(&DiskOp::Sync),
                "{policy:?}: no sync between anchor writes: {trace:?}"
            );
        }
        assert_eq!(trace.last(), Some(&DiskOp::Sync), "{policy:?}");
    }

    let disk = MemDisk::new();
    let mut s = create(&disk);
    fill(&mut s, 3);
    drop(s);
    let full = disk.bytes();
    let [Some(a), Some(b)] = anchors(&full) else {
        panic!("both anchors valid after a clean close")
    };
    let (newer, older) = if a.seq > b.seq { (0, b) } else { (1, a) };
    assert_eq!(a.seq.abs_diff(b.seq), 1);
    assert_eq!(a.acked.max(b.acked), full.len() as u64);
    // The newer anchor torn (half written over the older one's bytes, garbled or zeroed): the
    // older one counts, and the whole file still opens.
    let at = anchor_offset(newer) as usize;
    for tear in 0..3 {
        let mut bytes = full.clone();
        match tear {
            0 => {
                let other = anchor_offset(1 - newer) as usize;
                bytes.copy_within(other + 16..other + 32, at + 16);
            }
            1 => bytes[at + 3] ^= 0x10,
            _ => bytes[at..at + ANCHOR_LEN as usize].fill(0),
        }
        let s = open(&MemDisk::with_bytes(bytes)).unwrap();
        assert_eq!(s.recovery().acknowledged_len, older.acked, "tear {tear}");
        assert_eq!(s.block_hashes().unwrap().len(), 3);
    }
    // Both damaged: refused, not taken for anything.
    let mut bytes = full.clone();
    bytes[anchor_offset(0) as usize] ^= 1;
    bytes[anchor_offset(1) as usize + 9] ^= 1;
    assert!(matches!(
        open(&MemDisk::with_bytes(bytes)),
        Err(FileStoreError::CorruptHeader("both anchors are damaged"))
    ));
}

#[test]
fn headers_are_checked() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
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
        with(&|b| b[8] = 3),
        Err(FileStoreError::UnsupportedVersion {
            found: 3,
            supported: 2
        })
    ));
    // Version 1 had no anchors: refused by name, not misread.
    assert!(matches!(
        with(&|b| b[8] = 1),
        Err(FileStoreError::UnsupportedVersion {
            found: 1,
            supported: 2
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
    assert!(matches!(
        open(&MemDisk::with_bytes(vec![0; 96])),
        Err(FileStoreError::NotAStore)
    ));
    // A file cut short inside its header or anchors, or empty, is refused and left as it is:
    // never taken for a new store.
    for n in [0, 5, 8, 31, 32, 40, 95] {
        let d = MemDisk::with_bytes(good[..n].to_vec());
        assert!(
            matches!(open(&d), Err(FileStoreError::CorruptHeader(_))),
            "{n}"
        );
        assert_eq!(d.bytes(), good[..n], "{n}");
    }
    // The first bytes of a new store are an empty store.
    let s = open(&MemDisk::with_bytes(format::new_file_prefix().to_vec())).unwrap();
    assert!(!s.recovery().created);
    assert_eq!(s.recovery().records, 0);
    // A new store only on an empty disk.
    let d = MemDisk::with_bytes(good[..5].to_vec());
    assert!(matches!(
        FileStore::builder().create_disk(d.clone()),
        Err(FileStoreError::NotEmpty { len: 5 })
    ));
    assert_eq!(d.bytes(), good[..5]);
}

#[test]
fn lengths_are_limited_before_allocation() {
    let mut s = create(&MemDisk::new());
    let big = vec![0u8; MAX_BLOCK_LEN + 1];
    assert!(matches!(
        s.put(&h(1), &big),
        Err(FileStoreError::RecordTooLarge { .. })
    ));
    // Nothing was written.
    assert_eq!(s.log_len(), DATA_START);
    assert!(s.put_block(&h(1), b"ok").is_ok());

    // A length field claiming 4 GiB in the middle of the file is refused, not allocated.
    let disk = MemDisk::new();
    let mut s = create(&disk);
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
    let mut s = create(&disk);
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
    assert_eq!(s.recovery().records, 3);
    assert_eq!(s.tip_height().unwrap(), Some(2));
    assert_eq!(s.main_hash(2).unwrap(), Some(hashes[2]));
}

#[test]
fn failed_write_is_cut_off_and_failed_sync_poisons() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
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
    drop(s);

    // A failed anchor write poisons the store too; the torn anchor is passed over on reopen,
    // for the other one, synced before it was written.
    let disk = MemDisk::new();
    let mut s = create(&disk);
    fill(&mut s, 2);
    disk.fail_write_at.store(true, Ordering::SeqCst);
    assert!(matches!(s.put(&h(3), b"three"), Err(FileStoreError::Io(_))));
    assert!(matches!(s.sync_now(), Err(FileStoreError::Poisoned)));
    drop(s);
    disk.fail_write_at.store(false, Ordering::SeqCst);
    assert!(anchors(&disk.bytes()).iter().any(Option::is_none));
    let s = open(&disk).unwrap();
    assert_eq!(s.block_hashes().unwrap(), vec![h(1), h(2), h(3)]);
}

#[test]
fn block_damaged_after_open_is_reported_on_read() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
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
    assert!(matches!(
        StoreError::from(FileStoreError::Truncated {
            len: 100,
            acknowledged: 200
        }),
        StoreError::Corrupt(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any damage to a store file either opens (to a prefix of what was written) or is refused
    /// with an error; it never panics.
    #[test]
    fn damaged_files_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let disk = MemDisk::new();
        let mut s = create(&disk);
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

    /// Arbitrary bytes after a valid header and anchors never panic the recovery.
    #[test]
    fn arbitrary_logs_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = new_file_prefix().to_vec();
        bytes.extend_from_slice(&tail);
        let _ = open(&MemDisk::with_bytes(bytes));
    }
}

#[test]
fn a_checkpoint_replaces_the_last_only_once_written_whole() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
    fill(&mut s, 3);
    assert_eq!(s.checkpoint().unwrap(), None);
    let first = StoredCheckpoint {
        height: 2,
        block: h(2),
        chunks: vec![vec![1; 10], vec![2; 20], vec![3; 30]],
    };
    s.put_checkpoint(&first).unwrap();
    assert_eq!(s.checkpoint().unwrap().as_ref(), Some(&first));
    assert!(matches!(
        s.put_checkpoint(&StoredCheckpoint::default()),
        Err(StoreError::Backend(_))
    ));
    // The first part of another checkpoint, and no more (a crash while it was written): the
    // kept one stays, before and after reopening.
    s.append_record(&[
        &format::checkpoint_prefix(format::PartOf::Checkpoint, 3, &h(3), 0, 2),
        &[4; 40],
    ])
    .unwrap();
    assert_eq!(s.checkpoint().unwrap().as_ref(), Some(&first));
    drop(s);
    let mut s = open(&disk).unwrap();
    assert_eq!(s.checkpoint().unwrap().as_ref(), Some(&first));
    let second = StoredCheckpoint {
        height: 3,
        block: h(3),
        chunks: vec![vec![4; 40], vec![5; 50]],
    };
    s.put_checkpoint(&second).unwrap();
    assert_eq!(s.checkpoint().unwrap().as_ref(), Some(&second));
    drop(s);
    assert_eq!(open(&disk).unwrap().checkpoint().unwrap(), Some(second));
}

/// Appends part `index` of `parts` of a kept-headers set of `count` headers, holding `bytes`
/// (as a crash, or damage, would leave it).
fn append_headers_part(s: &mut FileStore, count: u64, index: u32, parts: u32, bytes: &[u8]) {
    let zero = BlockHash::from_bytes([0; 32]);
    let prefix = format::checkpoint_prefix(format::PartOf::Headers, count, &zero, index, parts);
    s.append_record(&[&prefix, bytes]).unwrap();
}

#[test]
fn kept_headers_replace_the_last_only_once_written_whole_and_survive_reopening() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
    fill(&mut s, 2);
    assert!(s.headers().unwrap().is_empty());
    let first: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
    s.put_headers(&first).unwrap();
    assert_eq!(s.headers().unwrap(), first);
    // The first part of another set, and no more (a crash while it was written): the kept
    // headers stay, before and after reopening.
    let mut part = 1u32.to_le_bytes().to_vec();
    part.push(9);
    append_headers_part(&mut s, 2, 0, 2, &part);
    assert_eq!(s.headers().unwrap(), first);
    drop(s);
    let mut s = open(&disk).unwrap();
    assert_eq!(s.headers().unwrap(), first);
    // Headers are not blocks, nor a checkpoint.
    assert_eq!(s.block_hashes().unwrap().len(), 2);
    assert_eq!(s.checkpoint().unwrap(), None);
    // More headers than one record holds are written in parts, and read back in order.
    let big: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 << 20]).collect();
    s.put_headers(&big).unwrap();
    assert_eq!(s.headers().unwrap(), big);
    drop(s);
    let s = open(&disk).unwrap();
    assert_eq!(s.headers().unwrap(), big);
}

#[test]
fn a_headers_part_that_does_not_split_into_its_headers_is_reported_as_damage() {
    let disk = MemDisk::new();
    let mut s = create(&disk);
    // One header of 10 bytes announced, 3 given: checksummed as written, but not headers.
    let mut part = 10u32.to_le_bytes().to_vec();
    part.extend_from_slice(&[1, 2, 3]);
    append_headers_part(&mut s, 1, 0, 1, &part);
    drop(s);
    let mut s = open(&disk).unwrap();
    assert!(matches!(s.headers(), Err(StoreError::Corrupt(_))));
    // A part naming two headers but holding one.
    let mut part = 1u32.to_le_bytes().to_vec();
    part.push(7);
    append_headers_part(&mut s, 2, 0, 1, &part);
    drop(s);
    let err = open(&disk).unwrap().headers().unwrap_err();
    assert!(
        err.to_string().contains("another number of headers"),
        "{err}"
    );
}
