//! The on-disk format, version 2.
//!
//! ```text
//! file    = header anchor anchor record*
//! header  = magic[8] version:u32 flags:u32 check[16]             (32 bytes)
//! anchor  = seq:u64 acked:u64 check[16]                          (32 bytes, rewritten in place)
//! record  = marker[4] len:u32 synced:u64 check[16] body[len]      (32 + len bytes)
//! body    = 0x01 hash[32] block-bytes                             a block
//!         | 0x02 from_height:u64 hash[32]*                        a main-chain update
//!         | 0x03 height:u64 hash[32] index:u32 count:u32 chunk-bytes
//!                                                   part `index` of `count` of a state checkpoint
//!         | 0x04 count:u64 zero[32] index:u32 count:u32 (len:u32 header-bytes)*
//!                                          part `index` of the headers kept without their blocks
//! ```
//!
//! A state checkpoint (the state after block `hash` at `height`, as snapshot chunks) is written
//! as `count` consecutive part records, index 0 first; it replaces the previous checkpoint only
//! once its last part is read, so a crash while one is written leaves the previous one. The
//! headers a store keeps without their blocks (a chain opened from a snapshot) are written the
//! same way, `count` headers in all, each after its length; a build before kind 4 refuses a
//! file holding one as an unknown record kind.
//!
//! Integers are little-endian. `header.check` is the first 16 bytes of BLAKE3 in the
//! [`STORE_RECORD`](crate::hash::domain::STORE_RECORD) domain over the header's first 16 bytes;
//! `record.check` is the same over the record's offset (`u64`), `len`, `synced` and body, so a
//! record is valid only where it was written. `synced` is how much of the file was durable
//! (synced) when the record was appended: recovery uses it to tell damage in the unsynced tail of
//! a crash (truncated away) from damage to data that was once durable (refused).
//!
//! The two anchors are the only bytes ever rewritten. Each holds `acked`, a length of the file
//! that the store had synced, and so acknowledged as durable, before it wrote the anchor, and a
//! sequence number; `anchor.check` is the first 16 bytes of BLAKE3 in the
//! [`STORE_ANCHOR`](crate::hash::domain::STORE_ANCHOR) domain over the anchor's offset, `seq`
//! and `acked`. The valid anchor with the higher `seq` counts: a file shorter than its `acked` was
//! cut short and is refused, as is damage below it; only bytes past it can be a torn tail.
//! The store writes a new anchor, into the slot of the older one, only once the newer one has
//! been synced, so a crash while an anchor is written (which may tear it) leaves the other one
//! valid; and since an anchor only ever claims bytes synced before it was written, no crash can
//! leave an anchor claiming more than the file holds.

use std::io;

use crate::block::MAX_BLOCK_LEN;
use crate::hash::{domain, BlockHash};

use super::disk::Disk;

/// The magic bytes opening every file store (a high byte and a line feed catch text-mode
/// transfers, as in PNG).
pub(crate) const MAGIC: [u8; 8] = *b"\x89MLEDGR\n";
/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Length of the file header.
pub(crate) const FILE_HEADER_LEN: u64 = 32;
/// Length of an anchor.
pub(crate) const ANCHOR_LEN: u64 = 32;
/// Where the first record starts: after the header and the two anchors.
pub(crate) const DATA_START: u64 = FILE_HEADER_LEN + 2 * ANCHOR_LEN;
/// Marks the start of every record (lets recovery find records after a damaged one).
pub(crate) const RECORD_MARKER: [u8; 4] = *b"\xa5rec";
/// Length of a record's frame header.
pub(crate) const RECORD_HEADER_LEN: u64 = 32;

/// The largest record body accepted, in bytes (checked before anything is allocated on read).
pub const MAX_RECORD_LEN: usize = MAX_BLOCK_LEN + 1024;
/// The most hashes one main-chain record holds; longer updates are split over several records.
pub(crate) const MAX_MAIN_HASHES_PER_RECORD: usize = 1 << 16;

const KIND_BLOCK: u8 = 1;
const KIND_MAIN: u8 = 2;
const KIND_CHECKPOINT: u8 = 3;
const KIND_HEADERS: u8 = 4;
/// Bytes of a part's body (a checkpoint's or the kept headers') before the part's own bytes.
pub(crate) const CHECKPOINT_PREFIX_LEN: usize = 1 + 8 + 32 + 4 + 4;
/// Bytes of a block body before the block's own bytes.
pub(crate) const BLOCK_PREFIX_LEN: usize = 1 + 32;
const MAIN_PREFIX_LEN: usize = 1 + 8;

const _: () = assert!(MAX_RECORD_LEN >= BLOCK_PREFIX_LEN + MAX_BLOCK_LEN);
const _: () = assert!(MAX_RECORD_LEN >= MAIN_PREFIX_LEN + 32 * MAX_MAIN_HASHES_PER_RECORD);
const _: () = assert!(MAX_RECORD_LEN <= u32::MAX as usize);

/// The version 1 file header.
pub(crate) fn file_header() -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // Bytes 12..16: feature flags, none in version 1.
    let check = domain::STORE_RECORD.hash(&h[..16]);
    h[16..].copy_from_slice(&check[..16]);
    h
}

/// Where anchor `slot` (0 or 1) lies.
pub(crate) fn anchor_offset(slot: usize) -> u64 {
    FILE_HEADER_LEN + ANCHOR_LEN * slot as u64
}

/// An anchor: the file length the store acknowledged, and which anchor is newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Anchor {
    /// Sequence number: the valid anchor with the higher one counts.
    pub seq: u64,
    /// Bytes of the file synced before the anchor was written.
    pub acked: u64,
}

fn anchor_check(slot: usize, seq: u64, acked: u64) -> [u8; 16] {
    let full = domain::STORE_ANCHOR.hash_parts(&[
        &anchor_offset(slot).to_le_bytes(),
        &seq.to_le_bytes(),
        &acked.to_le_bytes(),
    ]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The bytes of `anchor` in `slot`.
pub(crate) fn encode_anchor(slot: usize, anchor: Anchor) -> [u8; ANCHOR_LEN as usize] {
    let mut a = [0u8; ANCHOR_LEN as usize];
    a[..8].copy_from_slice(&anchor.seq.to_le_bytes());
    a[8..16].copy_from_slice(&anchor.acked.to_le_bytes());
    a[16..].copy_from_slice(&anchor_check(slot, anchor.seq, anchor.acked));
    a
}

/// The anchor in `slot`, if its bytes are a valid one (a torn or never-written slot is not).
pub(crate) fn decode_anchor(slot: usize, a: &[u8; ANCHOR_LEN as usize]) -> Option<Anchor> {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&a[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let (seq, acked) = (word(0), word(8));
    (a[16..] == anchor_check(slot, seq, acked) && seq > 0 && acked >= DATA_START)
        .then_some(Anchor { seq, acked })
}

/// The first bytes of a new store: the header, a first anchor (acknowledging exactly these
/// bytes) and an empty slot for the second.
pub(crate) fn new_file_prefix() -> [u8; DATA_START as usize] {
    let mut p = [0u8; DATA_START as usize];
    p[..FILE_HEADER_LEN as usize].copy_from_slice(&file_header());
    let first = Anchor {
        seq: 1,
        acked: DATA_START,
    };
    let at = anchor_offset(0) as usize;
    p[at..at + ANCHOR_LEN as usize].copy_from_slice(&encode_anchor(0, first));
    p
}

/// What a file header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// A valid version 1 header.
    Valid,
    /// The magic bytes are wrong.
    NotAStore,
    /// A version this build does not read.
    Version(u32),
    /// The magic and version are right but the rest is damaged or uses unknown flags.
    Corrupt(&'static str),
}

/// Checks a file header: magic first, then the version (so that a newer file is named as such
/// even if it changed the rest of the header), then flags and checksum.
pub(crate) fn check_file_header(h: &[u8; FILE_HEADER_LEN as usize]) -> HeaderCheck {
    if h[..8] != MAGIC {
        return HeaderCheck::NotAStore;
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION {
        return HeaderCheck::Version(version);
    }
    if *h != file_header() {
        if h[12..16] != [0; 4] {
            return HeaderCheck::Corrupt("unknown feature flags");
        }
        return HeaderCheck::Corrupt("header checksum mismatch");
    }
    HeaderCheck::Valid
}

fn record_check(offset: u64, len: u32, synced: u64, body: &[u8]) -> [u8; 16] {
    let full = domain::STORE_RECORD.hash_parts(&[
        &offset.to_le_bytes(),
        &len.to_le_bytes(),
        &synced.to_le_bytes(),
        body,
    ]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Appends a complete record (frame header and body) for `offset` to `out`. The body is given
/// in parts that are concatenated.
pub(crate) fn encode_record(out: &mut Vec<u8>, offset: u64, synced: u64, body: &[&[u8]]) {
    let len: usize = body.iter().map(|p| p.len()).sum();
    debug_assert!(len <= MAX_RECORD_LEN);
    let len32 = len as u32;
    let start = out.len();
    out.extend_from_slice(&RECORD_MARKER);
    out.extend_from_slice(&len32.to_le_bytes());
    out.extend_from_slice(&synced.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    for p in body {
        out.extend_from_slice(p);
    }
    let check = record_check(
        offset,
        len32,
        synced,
        &out[start + RECORD_HEADER_LEN as usize..],
    );
    out[start + 16..start + 32].copy_from_slice(&check);
}

/// The kind byte of block records.
pub(crate) const BLOCK_KIND: [u8; 1] = [KIND_BLOCK];

/// The body of a main-chain record.
pub(crate) fn main_body(from_height: u64, hashes: &[BlockHash]) -> Vec<u8> {
    let mut body = Vec::with_capacity(MAIN_PREFIX_LEN + 32 * hashes.len());
    body.push(KIND_MAIN);
    body.extend_from_slice(&from_height.to_le_bytes());
    for h in hashes {
        body.extend_from_slice(h.as_bytes());
    }
    body
}

/// What a part record is a part of: both are written in parts of one record each, and replace
/// what the store kept once their last part is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PartOf {
    /// A state checkpoint; a part holds one encoded chunk.
    Checkpoint,
    /// The headers kept without their blocks; a part holds headers, each after its length
    /// (`u32`, little-endian). `height` is the number of headers, `block` all zeros.
    Headers,
}

/// The body of a part record, before the part's bytes.
pub(crate) fn checkpoint_prefix(
    of: PartOf,
    height: u64,
    block: &BlockHash,
    index: u32,
    count: u32,
) -> [u8; CHECKPOINT_PREFIX_LEN] {
    let mut p = [0u8; CHECKPOINT_PREFIX_LEN];
    p[0] = match of {
        PartOf::Checkpoint => KIND_CHECKPOINT,
        PartOf::Headers => KIND_HEADERS,
    };
    p[1..9].copy_from_slice(&height.to_le_bytes());
    p[9..41].copy_from_slice(block.as_bytes());
    p[41..45].copy_from_slice(&index.to_le_bytes());
    p[45..49].copy_from_slice(&count.to_le_bytes());
    p
}

/// Whether `buf` is exactly one valid record frame (header and body) written at `offset`.
pub(crate) fn verify_record(offset: u64, buf: &[u8]) -> bool {
    let Some((h, body)) = buf.split_at_checked(RECORD_HEADER_LEN as usize) else {
        return false;
    };
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let mut synced = [0u8; 8];
    synced.copy_from_slice(&h[8..16]);
    h[..4] == RECORD_MARKER
        && len as usize == body.len()
        && record_check(offset, len, u64::from_le_bytes(synced), body)[..] == h[16..32]
}

/// A decoded record body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A block: its hash, and where its bytes are in the file.
    Block {
        /// The block hash.
        hash: BlockHash,
        /// File offset of the block's bytes.
        bytes_at: u64,
        /// Their length.
        len: u32,
    },
    /// A part of a state checkpoint or of the kept headers.
    Part {
        /// What it is a part of.
        of: PartOf,
        /// The checkpoint's height (the number of headers).
        height: u64,
        /// Its block.
        block: BlockHash,
        /// The part's position.
        index: u32,
        /// The number of parts.
        count: u32,
        /// Length of the chunk's bytes (they follow the prefix in the body).
        len: u32,
    },
    /// A main-chain update.
    Main {
        /// First height replaced.
        from_height: u64,
        /// The new hashes from that height.
        hashes: Vec<BlockHash>,
    },
}

/// Decodes a checksummed body found at file offset `body_at`.
pub(crate) fn decode_body(body: &[u8], body_at: u64) -> Result<Record, &'static str> {
    match body.first() {
        Some(&KIND_BLOCK) => {
            let hash: [u8; 32] = body
                .get(1..BLOCK_PREFIX_LEN)
                .and_then(|h| h.try_into().ok())
                .ok_or("block record too short")?;
            let len = body.len() - BLOCK_PREFIX_LEN;
            if len > MAX_BLOCK_LEN {
                return Err("block record longer than the largest block");
            }
            Ok(Record::Block {
                hash: BlockHash::from_bytes(hash),
                bytes_at: body_at + BLOCK_PREFIX_LEN as u64,
                len: len as u32,
            })
        }
        Some(&KIND_MAIN) => {
            let from: [u8; 8] = body
                .get(1..MAIN_PREFIX_LEN)
                .and_then(|h| h.try_into().ok())
                .ok_or("main-chain record too short")?;
            let rest = &body[MAIN_PREFIX_LEN..];
            if !rest.len().is_multiple_of(32) {
                return Err("main-chain record holds a partial hash");
            }
            let hashes = rest
                .chunks_exact(32)
                .map(|c| {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(c);
                    BlockHash::from_bytes(h)
                })
                .collect();
            Ok(Record::Main {
                from_height: u64::from_le_bytes(from),
                hashes,
            })
        }
        Some(&kind @ (KIND_CHECKPOINT | KIND_HEADERS)) => {
            let p = body
                .get(..CHECKPOINT_PREFIX_LEN)
                .ok_or("part record too short")?;
            let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
            let mut height = [0u8; 8];
            height.copy_from_slice(&p[1..9]);
            let mut block = [0u8; 32];
            block.copy_from_slice(&p[9..41]);
            let (index, count) = (u32_at(41), u32_at(45));
            if index >= count {
                return Err("part beyond its count");
            }
            Ok(Record::Part {
                of: if kind == KIND_CHECKPOINT {
                    PartOf::Checkpoint
                } else {
                    PartOf::Headers
                },
                height: u64::from_le_bytes(height),
                block: BlockHash::from_bytes(block),
                index,
                count,
                len: (body.len() - CHECKPOINT_PREFIX_LEN) as u32,
            })
        }
        Some(_) => Err("unknown record kind"),
        None => Err("empty record"),
    }
}

/// A record frame that passed its checksum.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Durable length when it was written.
    pub synced: u64,
    /// Offset just past it.
    pub end: u64,
    /// Its decoded body, or why the (checksummed) body is invalid.
    pub record: Result<Record, &'static str>,
}

/// Why the bytes at an offset are not a valid record frame.
pub(crate) type Damage = &'static str;

/// Reads a file in large chunks for recovery, never allocating more than the file holds.
pub(crate) struct Scanner<'a> {
    disk: &'a dyn Disk,
    file_len: u64,
    buf: Vec<u8>,
    start: u64,
}

const CHUNK: usize = 1 << 20;

impl<'a> Scanner<'a> {
    pub(crate) fn new(disk: &'a dyn Disk, file_len: u64) -> Self {
        Self {
            disk,
            file_len,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The `n` bytes at `pos`; the caller has checked that they lie within the file.
    fn get(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        let end = pos + n as u64;
        debug_assert!(end <= self.file_len);
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let want = (n.max(CHUNK) as u64).min(self.file_len - pos) as usize;
            self.buf.clear();
            self.buf.resize(want, 0);
            self.disk.read_at(pos, &mut self.buf)?;
            self.start = pos;
        }
        let at = (pos - self.start) as usize;
        Ok(&self.buf[at..at + n])
    }

    /// Parses the record frame at `pos`: `Ok(Err(damage))` if it is not a valid frame.
    pub(crate) fn frame_at(&mut self, pos: u64) -> io::Result<Result<Frame, Damage>> {
        if self.file_len - pos < RECORD_HEADER_LEN {
            return Ok(Err("incomplete record header"));
        }
        let h = self.get(pos, RECORD_HEADER_LEN as usize)?;
        if h[..4] != RECORD_MARKER {
            return Ok(Err("bad record marker"));
        }
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let mut synced = [0u8; 8];
        synced.copy_from_slice(&h[8..16]);
        let synced = u64::from_le_bytes(synced);
        let mut check = [0u8; 16];
        check.copy_from_slice(&h[16..32]);
        // Limits before allocation: the length must be possible and lie within the file.
        if len as usize > MAX_RECORD_LEN {
            return Ok(Err("record length exceeds the maximum"));
        }
        let end = pos + RECORD_HEADER_LEN + u64::from(len);
        if end > self.file_len {
            return Ok(Err("record runs past the end of the file"));
        }
        let body_at = pos + RECORD_HEADER_LEN;
        let body = self.get(body_at, len as usize)?;
        if record_check(pos, len, synced, body) != check {
            return Ok(Err("checksum mismatch"));
        }
        if synced > pos || synced < DATA_START {
            // Checksummed, so written by a store: never a torn write.
            return Ok(Ok(Frame {
                synced,
                end,
                record: Err("record claims an impossible durable length"),
            }));
        }
        Ok(Ok(Frame {
            synced,
            end,
            record: decode_body(body, body_at),
        }))
    }

    /// Looks past damage at `damaged` for a valid record written after `damaged` had been
    /// synced: proof that the damaged bytes were once durable. Returns its offset.
    pub(crate) fn durable_after(&mut self, damaged: u64) -> io::Result<Option<u64>> {
        let mut pos = damaged + 1;
        while self.file_len.saturating_sub(pos) >= RECORD_HEADER_LEN {
            let n = (self.file_len - pos).min(CHUNK as u64) as usize;
            let found = self
                .get(pos, n)?
                .windows(RECORD_MARKER.len())
                .position(|w| w == RECORD_MARKER);
            let Some(i) = found else {
                // Keep the last bytes: a marker may straddle the chunk boundary.
                pos += (n - (RECORD_MARKER.len() - 1)) as u64;
                continue;
            };
            let candidate = pos + i as u64;
            match self.frame_at(candidate)? {
                Ok(frame) if frame.synced > damaged => return Ok(Some(candidate)),
                Ok(frame) => pos = frame.end,
                Err(_) => pos = candidate + 1,
            }
        }
        Ok(None)
    }
}
