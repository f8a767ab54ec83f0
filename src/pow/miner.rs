//! Nonce search over 80-byte headers with a precomputed SHA-256 midstate.

use core::fmt;
use core::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use sha2::compress256;
use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;

use super::{Target, HEADER_LEN, NONCE_OFFSET};

/// One 64-byte SHA-256 message block, as `compress256` takes it.
type Block = GenericArray<u8, U64>;

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The nonce's offset within the header's second 64-byte block.
const NONCE_IN_TAIL: usize = NONCE_OFFSET - 64;

/// The padded second block of the first hash: header bytes 64..80, the `0x80` terminator,
/// zeros, and the message length (640 bits) big-endian in the last eight bytes.
const fn tail_template(header: &[u8; HEADER_LEN]) -> [u8; 64] {
    let mut b = [0u8; 64];
    let mut i = 0;
    while i < HEADER_LEN - 64 {
        b[i] = header[64 + i];
        i += 1;
    }
    b[HEADER_LEN - 64] = 0x80;
    let bits = ((HEADER_LEN * 8) as u64).to_be_bytes();
    let mut j = 0;
    while j < 8 {
        b[56 + j] = bits[j];
        j += 1;
    }
    b
}

/// The single padded block of the second hash: 32 digest bytes (filled per nonce), the `0x80`
/// terminator, zeros, and the length (256 bits).
const DIGEST_BLOCK: [u8; 64] = {
    let mut b = [0u8; 64];
    b[32] = 0x80;
    let bits = 256u64.to_be_bytes();
    let mut j = 0;
    while j < 8 {
        b[56 + j] = bits[j];
        j += 1;
    }
    b
};

/// How many nonces are tried between looks at the cancel flag.
const CHECK_EVERY: u64 = 4096;

/// How many nonces a parallel worker claims at a time.
#[cfg(feature = "parallel")]
const CHUNK: u64 = 16 * CHECK_EVERY;

/// A nonce search over one 80-byte header (Bitcoin layout: the nonce is the last four bytes,
/// little-endian) against one target.
///
/// [`Miner::new`] hashes the header's first 64 bytes once; each nonce then costs exactly two
/// SHA-256 compressions (the padded tail of the header, then the padded 32-byte first digest)
/// with no allocation. A found nonce's hash meets the target exactly as
/// [`Target::is_met_by`] decides, compared most significant word first.
///
/// Searches stop when the given `cancel` flag is set (it is read every few thousand nonces)
/// and return `None` then, unless a nonce was already found.
///
/// ```
/// use std::sync::atomic::AtomicBool;
/// use medledger::pow::{self, Miner, Target};
///
/// let mut header = [0u8; 80];
/// header[..4].copy_from_slice(b"demo");
/// // An easy target: about one hash in 256 meets it.
/// let target = Target::from_be_bytes([0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
///     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
///     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
/// let miner = Miner::new(&header, target);
/// let cancel = AtomicBool::new(false);
/// let nonce = miner.search(.., &cancel).expect("an easy target is met");
/// let mined = miner.header_with_nonce(nonce);
/// assert!(target.is_met_by(&pow::header_hash(&mined)));
/// // The parallel search returns the same, smallest, nonce.
/// assert_eq!(miner.search_parallel(&cancel), Some(nonce));
/// ```
pub struct Miner {
    header: [u8; HEADER_LEN],
    target: Target,
    /// SHA-256 state after the header's first 64 bytes.
    midstate: [u32; 8],
    /// The padded second block, nonce bytes to be overwritten.
    tail: [u8; 64],
    /// The target as eight 32-bit words of the little-endian number, least significant first:
    /// word `k` is compared with digest word `k` byte-swapped.
    target_words: [u32; 8],
    hashes: AtomicU64,
}

impl Miner {
    /// Prepares a search over `header`'s nonce field (its current value is ignored) for
    /// `target`.
    pub fn new(header: &[u8; HEADER_LEN], target: Target) -> Self {
        let mut midstate = IV;
        compress256(&mut midstate, &[*Block::from_slice(&header[..64])]);
        let le = target.to_le_bytes();
        let mut target_words = [0u32; 8];
        for (w, chunk) in target_words.iter_mut().zip(le.chunks_exact(4)) {
            *w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Self {
            header: *header,
            target,
            midstate,
            tail: tail_template(header),
            target_words,
            hashes: AtomicU64::new(0),
        }
    }

    /// The header as given to [`Miner::new`].
    pub const fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// The target.
    pub const fn target(&self) -> Target {
        self.target
    }

    /// The header with `nonce` written into its last four bytes.
    pub fn header_with_nonce(&self, nonce: u32) -> [u8; HEADER_LEN] {
        let mut h = self.header;
        h[NONCE_OFFSET..].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// The header hash for `nonce`, computed from the midstate; equal to
    /// [`header_hash`](super::header_hash)`(&self.header_with_nonce(nonce))`.
    pub fn hash_with_nonce(&self, nonce: u32) -> [u8; 32] {
        let mut tail = Block::from(self.tail);
        let mut digest = Block::from(DIGEST_BLOCK);
        let words = self.hash_words(&mut tail, &mut digest, nonce);
        let mut out = [0u8; 32];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Whether `nonce` makes the header meet the target.
    pub fn is_valid_nonce(&self, nonce: u32) -> bool {
        self.target.is_met_by(&self.hash_with_nonce(nonce))
    }

    /// Hashes tried by all searches on this miner so far (for throughput measurements).
    pub fn hashes_tried(&self) -> u64 {
        self.hashes.load(Relaxed)
    }

    /// Searches `nonces` in increasing order on the calling thread and returns the first
    /// (smallest) nonce that meets the target.
    ///
    /// Returns `None` if no nonce in the range does, or if `cancel` is set first.
    pub fn search(&self, nonces: impl RangeBounds<u32>, cancel: &AtomicBool) -> Option<u32> {
        let (start, end) = span(&nonces);
        self.scan(start, end, |_| cancel.load(Relaxed))
    }

    /// Searches the whole nonce space on all of rayon's threads; see
    /// [`search_parallel_in`](Self::search_parallel_in).
    pub fn search_parallel(&self, cancel: &AtomicBool) -> Option<u32> {
        self.search_parallel_in(.., cancel)
    }

    /// Searches `nonces` on all of rayon's threads and returns the smallest nonce that meets the
    /// target, the same nonce as [`search`](Self::search).
    ///
    /// Workers claim consecutive chunks of the range in increasing order; once a nonce is
    /// found, chunks above it are abandoned at once and only the chunks below it (at most one
    /// per thread) are finished. Returns `None` if no nonce in the range meets the target, or
    /// if `cancel` is set first (a nonce found before cancellation is still returned, and is
    /// then not necessarily the smallest).
    ///
    /// Without the `parallel` feature this is [`search`](Self::search).
    pub fn search_parallel_in(
        &self,
        nonces: impl RangeBounds<u32>,
        cancel: &AtomicBool,
    ) -> Option<u32> {
        let (start, end) = span(&nonces);
        #[cfg(feature = "parallel")]
        {
            self.scan_parallel(start, end, CHUNK, cancel)
        }
        #[cfg(not(feature = "parallel"))]
        {
            self.scan(start, end, |_| cancel.load(Relaxed))
        }
    }

    #[cfg(feature = "parallel")]
    fn scan_parallel(&self, start: u64, end: u64, chunk: u64, cancel: &AtomicBool) -> Option<u32> {
        let next_chunk = AtomicU64::new(0);
        let best = AtomicU64::new(u64::MAX);
        let worker = || loop {
            let index = next_chunk.fetch_add(1, Relaxed);
            let lo = start.saturating_add(index.saturating_mul(chunk));
            // Chunks are claimed in increasing order, so once one starts above the best nonce
            // found, so do all later ones.
            if lo >= end || lo > best.load(Relaxed) || cancel.load(Relaxed) {
                break;
            }
            let hi = end.min(lo.saturating_add(chunk));
            let stop = |next: u64| cancel.load(Relaxed) || best.load(Relaxed) < next;
            if let Some(nonce) = self.scan(lo, hi, stop) {
                best.fetch_min(u64::from(nonce), Relaxed);
                break;
            }
        };
        let threads = rayon::current_num_threads().max(1);
        rayon::scope(|s| {
            for _ in 0..threads {
                s.spawn(|_| worker());
            }
        });
        u32::try_from(best.into_inner()).ok()
    }

    /// Tries nonces `start..end` (`end <= 2^32`) in order and returns the first that meets the
    /// target. Before every batch of [`CHECK_EVERY`] nonces, `stop(next nonce)` is asked
    /// whether to give up.
    fn scan(&self, start: u64, end: u64, stop: impl Fn(u64) -> bool) -> Option<u32> {
        let end = end.min(1 << 32);
        let mut tail = Block::from(self.tail);
        let mut digest = Block::from(DIGEST_BLOCK);
        let mut next = start;
        let found = 'search: loop {
            if next >= end || stop(next) {
                break None;
            }
            let batch_end = end.min(next + CHECK_EVERY);
            while next < batch_end {
                // `next < end <= 2^32`, so the conversion is exact.
                let nonce = next as u32;
                next += 1;
                let words = self.hash_words(&mut tail, &mut digest, nonce);
                if self.meets(&words) {
                    break 'search Some(nonce);
                }
            }
        };
        self.hashes.fetch_add(next.saturating_sub(start), Relaxed);
        found
    }

    /// The final SHA-256d state words for `nonce`: two compressions from the midstate.
    #[inline(always)]
    fn hash_words(&self, tail: &mut Block, digest: &mut Block, nonce: u32) -> [u32; 8] {
        tail[NONCE_IN_TAIL..NONCE_IN_TAIL + 4].copy_from_slice(&nonce.to_le_bytes());
        let mut first = self.midstate;
        compress256(&mut first, core::slice::from_ref(tail));
        for (chunk, w) in digest[..32].chunks_exact_mut(4).zip(first) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        let mut second = IV;
        compress256(&mut second, core::slice::from_ref(digest));
        second
    }

    /// Whether the digest (as state words) meets the target. The digest's bytes are the words
    /// big-endian, and the hash is read as a little-endian number, so digest word `k`
    /// byte-swapped is the number's `k`-th 32-bit word; word 7 is the most significant.
    #[inline(always)]
    fn meets(&self, words: &[u32; 8]) -> bool {
        let top = words[7].swap_bytes();
        if top != self.target_words[7] {
            return top < self.target_words[7];
        }
        self.meets_below_top(words)
    }

    #[cold]
    #[inline(never)]
    fn meets_below_top(&self, words: &[u32; 8]) -> bool {
        for k in (0..7).rev() {
            let w = words[k].swap_bytes();
            if w != self.target_words[k] {
                return w < self.target_words[k];
            }
        }
        true
    }
}

impl fmt::Debug for Miner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Miner")
            .field("header", &crate::hash::to_hex(&self.header))
            .field("target", &self.target)
            .field("hashes_tried", &self.hashes_tried())
            .finish()
    }
}

/// A nonce range as `start..end` over `u64`, so that the full range can include `u32::MAX`.
fn span(nonces: &impl RangeBounds<u32>) -> (u64, u64) {
    let start = match nonces.start_bound() {
        Bound::Included(&s) => u64::from(s),
        Bound::Excluded(&s) => u64::from(s) + 1,
        Bound::Unbounded => 0,
    };
    let end = match nonces.end_bound() {
        Bound::Included(&e) => u64::from(e) + 1,
        Bound::Excluded(&e) => u64::from(e),
        Bound::Unbounded => 1 << 32,
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;
    use crate::pow::{header_hash, CompactTarget, BITCOIN_GENESIS_HEADER};

    /// A target that roughly one hash in `2^bits` meets.
    fn easy_target(bits: u32) -> Target {
        let mut be = [0xff; 32];
        for i in 0..bits as usize {
            be[i / 8] &= !(0x80 >> (i % 8));
        }
        Target::from_be_bytes(be)
    }

    const ALL_ONES: Target = Target::from_be_bytes([0xff; 32]);

    #[test]
    fn padding_templates() {
        let t = tail_template(&BITCOIN_GENESIS_HEADER);
        assert_eq!(t[..16], BITCOIN_GENESIS_HEADER[64..]);
        assert_eq!(t[16], 0x80);
        assert!(t[17..62].iter().all(|&b| b == 0));
        assert_eq!(t[62..], [0x02, 0x80]); // 640 bits
        assert_eq!(DIGEST_BLOCK[32], 0x80);
        assert_eq!(DIGEST_BLOCK[62..], [0x01, 0x00]); // 256 bits
    }

    #[test]
    fn finds_the_real_genesis_nonce() {
        let target = Target::from_compact(CompactTarget::BITCOIN_MAINNET_LIMIT).unwrap();
        let miner = Miner::new(&BITCOIN_GENESIS_HEADER, target);
        let real = 2_083_236_893;
        assert!(miner.is_valid_nonce(real));
        assert!(!miner.is_valid_nonce(real + 1));
        assert_eq!(miner.header_with_nonce(real), BITCOIN_GENESIS_HEADER);
        let cancel = AtomicBool::new(false);
        assert_eq!(miner.search(real - 1500..real + 500, &cancel), Some(real));
        assert_eq!(miner.search(real - 1500..real, &cancel), None);
        assert_eq!(miner.search(real + 1..=real + 500, &cancel), None);
        assert_eq!(miner.hashes_tried(), 1501 + 1500 + 500);
        assert_eq!(
            miner.search_parallel_in(real - 700..=real, &cancel),
            Some(real)
        );
    }

    #[test]
    fn range_edges() {
        let miner = Miner::new(&[7; 80], ALL_ONES);
        let cancel = AtomicBool::new(false);
        assert_eq!(miner.search(.., &cancel), Some(0));
        assert_eq!(miner.search(5.., &cancel), Some(5));
        assert_eq!(miner.search(u32::MAX.., &cancel), Some(u32::MAX));
        assert_eq!(
            miner.search_parallel_in(u32::MAX.., &cancel),
            Some(u32::MAX)
        );
        assert_eq!(miner.search(3..3, &cancel), None);
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 9..3;
        assert_eq!(miner.search(reversed, &cancel), None);
        assert_eq!(miner.search_parallel_in(3..3, &cancel), None);
        // An already-set cancel flag stops before the first hash.
        let before = miner.hashes_tried();
        assert_eq!(miner.search(.., &AtomicBool::new(true)), None);
        assert_eq!(miner.search_parallel(&AtomicBool::new(true)), None);
        assert_eq!(miner.hashes_tried(), before);
    }

    #[test]
    fn counts_every_hash() {
        let miner = Miner::new(&[1; 80], Target::ZERO);
        let cancel = AtomicBool::new(false);
        assert_eq!(miner.search(10..10_010, &cancel), None);
        assert_eq!(miner.hashes_tried(), 10_000);
        assert_eq!(
            miner.search_parallel_in(0..3 * CHECK_EVERY as u32 + 5, &cancel),
            None
        );
        assert_eq!(miner.hashes_tried(), 10_000 + 3 * CHECK_EVERY + 5);
    }

    #[test]
    fn cancel_stops_an_impossible_search() {
        let miner = Miner::new(&BITCOIN_GENESIS_HEADER, Target::ZERO);
        let cancel = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                cancel.store(true, Relaxed);
            });
            let start = Instant::now();
            assert_eq!(miner.search(.., &cancel), None);
            assert!(start.elapsed() < Duration::from_secs(10));
        });
        let tried = miner.hashes_tried();
        assert!(tried > 0 && tried < 1 << 32);

        cancel.store(false, Relaxed);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                cancel.store(true, Relaxed);
            });
            let start = Instant::now();
            assert_eq!(miner.search_parallel(&cancel), None);
            assert!(start.elapsed() < Duration::from_secs(10));
        });
        assert!(miner.hashes_tried() > tried);
    }

    #[test]
    fn miner_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Miner>();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn midstate_hash_equals_sha256d(header in any::<[u8; 80]>(), nonce in any::<u32>()) {
            let miner = Miner::new(&header, Target::ZERO);
            let full = miner.header_with_nonce(nonce);
            prop_assert_eq!(&full[..76], &header[..76]);
            prop_assert_eq!(miner.hash_with_nonce(nonce), header_hash(&full));
        }

        #[test]
        fn fast_check_agrees_with_is_met_by(header in any::<[u8; 80]>(), nonce in any::<u32>(),
                                           flip in 0usize..256, up in any::<bool>()) {
            // Targets right at the hash: equal, one bit below, one bit above.
            let miner = Miner::new(&header, Target::ZERO);
            let hash = miner.hash_with_nonce(nonce);
            let mut near = hash;
            let (byte, bit) = (flip / 8, flip % 8);
            if up { near[byte] |= 1 << bit } else { near[byte] &= !(1 << bit) }
            for t in [Target::from_le_bytes(hash), Target::from_le_bytes(near)] {
                let m = Miner::new(&header, t);
                prop_assert_eq!(m.is_valid_nonce(nonce), t.is_met_by(&hash));
                let mut tail = Block::from(m.tail);
                let mut digest = Block::from(DIGEST_BLOCK);
                let words = m.hash_words(&mut tail, &mut digest, nonce);
                prop_assert_eq!(m.meets(&words), t.is_met_by(&hash));
            }
        }

        #[test]
        fn serial_finds_the_smallest_valid_nonce(header in any::<[u8; 80]>(), start in 0u32..1000) {
            let target = easy_target(8);
            let miner = Miner::new(&header, target);
            let cancel = AtomicBool::new(false);
            let found = miner.search(start..start + 20_000, &cancel);
            let expected = (start..start + 20_000)
                .find(|&n| target.is_met_by(&header_hash(&miner.header_with_nonce(n))));
            prop_assert_eq!(found, expected);
            let nonce = found.expect("one hash in 256 meets the target");
            prop_assert!(target.is_met_by(&header_hash(&miner.header_with_nonce(nonce))));
        }
    }

    #[cfg(feature = "parallel")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn parallel_equals_serial(header in any::<[u8; 80]>(), bits in 6u32..12,
                                  chunk in 1u64..300) {
            let miner = Miner::new(&header, easy_target(bits));
            let cancel = AtomicBool::new(false);
            let serial = miner.search(..1 << 16, &cancel);
            // Small chunks, so that many workers race over many chunks.
            prop_assert_eq!(miner.scan_parallel(0, 1 << 16, chunk, &cancel), serial);
            prop_assert_eq!(miner.search_parallel_in(..1 << 16, &cancel), serial);
            if let Some(n) = serial {
                prop_assert!(miner.is_valid_nonce(n));
            }
        }
    }

    #[test]
    fn parallel_full_space_equals_serial() {
        for seed in 0u8..4 {
            let miner = Miner::new(&[seed; 80], easy_target(14));
            let cancel = AtomicBool::new(false);
            let serial = miner.search(.., &cancel);
            assert!(serial.is_some());
            assert_eq!(miner.search_parallel(&cancel), serial);
        }
    }
}
