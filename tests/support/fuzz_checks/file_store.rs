//! File-store records: any file contents, opened as a store. Recovery never panics and allocates
//! for what the file holds; a store that opens keeps the file's valid prefix, lists only blocks it
//! can read back, reopens to the same index, and a chain resumes on it (or refuses it) cleanly.

use std::io;
use std::sync::{Arc, Mutex};

use medledger::file_store::{Disk, FileStore, MAX_RECORD_LEN};
use medledger::pow::ProofOfWork;
use medledger::store::Store;
use medledger::ChainBuilder;

/// The chain the seed stores hold.
pub const CHAIN_NAME: &str = "file store seeds";
/// Its genesis time.
pub const GENESIS_TIME: u64 = 1_750_000_000;

/// A [`Disk`] in memory, shared so that the bytes can be inspected and reopened.
#[derive(Clone, Default)]
pub struct MemDisk(pub Arc<Mutex<Vec<u8>>>);

impl MemDisk {
    /// A disk holding `bytes`.
    pub fn with(bytes: &[u8]) -> Self {
        Self(Arc::new(Mutex::new(bytes.to_vec())))
    }
    /// The bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("not poisoned").clone()
    }
}

impl Disk for MemDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().expect("not poisoned").len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = self.0.lock().expect("not poisoned");
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| data.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut data = self.0.lock().expect("not poisoned");
        let dst = usize::try_from(offset)
            .ok()
            .and_then(|start| data.get_mut(start..start.checked_add(bytes.len())?))
            .ok_or(io::ErrorKind::InvalidInput)?;
        dst.copy_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.0.lock().expect("not poisoned").truncate(len);
        Ok(())
    }
}

/// The file header's length, and where the two anchors after it (the only bytes a store
/// rewrites) end: see the format grammar in `src/file_store/format.rs`.
const HEADER_LEN: usize = 32;
const ANCHORS_END: usize = 96;
/// A record's frame header.
const RECORD_HEADER_LEN: usize = 32;
/// The longest file the target reads: a store holding one record of the largest length, the
/// most recovery reads at once.
pub const MAX_FILE_LEN: usize = ANCHORS_END + RECORD_HEADER_LEN + MAX_RECORD_LEN;

/// The engine of the seed stores' chain.
pub fn engine() -> ProofOfWork {
    ProofOfWork::regtest()
}

/// Opens `data` as a store file.
pub fn file_store(data: &[u8]) {
    let disk = MemDisk::with(data);
    let store = match FileStore::builder().open_disk(disk.clone()) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(
                disk.bytes(),
                data,
                "a store that fails to open writes nothing"
            );
            return;
        }
    };
    let recovery = store.recovery().clone();
    assert!(!recovery.created, "opening never creates a store");
    // Opening only cuts a torn tail, past the acknowledged length, and rewrites an anchor: the
    // rest of the file is untouched.
    let kept = data.len() - usize::try_from(recovery.truncated_bytes).expect("small");
    assert!(
        kept as u64 >= recovery.acknowledged_len,
        "acknowledged bytes cut"
    );
    let now = disk.bytes();
    assert_eq!(
        now.len(),
        kept,
        "recovery appended or cut more than the torn tail"
    );
    assert_eq!(
        (&now[..HEADER_LEN], &now[ANCHORS_END..]),
        (&data[..HEADER_LEN], &data[ANCHORS_END..kept]),
        "recovery rewrote kept bytes"
    );
    let hashes = store.block_hashes().expect("in-memory index");
    for h in &hashes {
        match store.get_block(h) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("listed block {h} is missing"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    let tip = store.tip_height().expect("in-memory index");
    let main: Vec<_> = (0..=tip.unwrap_or(0).min(1 << 12))
        .map(|h| store.main_hash(h).expect("in-memory index"))
        .collect();
    drop(store);
    // Reopening finds the same index.
    let again = FileStore::builder()
        .open_disk(disk.clone())
        .expect("a store that opened once reopens");
    assert_eq!(again.recovery().acknowledged_len, kept as u64);
    assert_eq!(again.block_hashes().expect("index"), hashes);
    assert_eq!(again.tip_height().expect("index"), tip);
    for (h, want) in main.iter().enumerate() {
        assert_eq!(&again.main_hash(h as u64).expect("index"), want);
    }
    // A chain resumes on it, or refuses it, without panicking.
    let _ = ChainBuilder::new(CHAIN_NAME, engine())
        .genesis_time(GENESIS_TIME)
        .store(again)
        .build();
}
