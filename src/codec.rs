//! Canonical encoding: one version byte followed by the [postcard] body.
//!
//! Every type that crosses a trust boundary (transactions, blocks, consensus messages, store
//! records, proofs) implements [`Canonical`]. [`decode`] is the only way such bytes become values,
//! and it is strict:
//!
//! * input longer than the type's [`Canonical::MAX_ENCODED_LEN`] is refused before parsing;
//! * every variable-length field is a [`BoundedVec`], [`BoundedString`] or [`BoundedBytes`], whose
//!   length prefix is checked against its `MAX` before anything is allocated;
//! * trailing bytes are refused (postcard's `from_bytes` would ignore them);
//! * non-canonical encodings (postcard accepts over-long varints) are refused, so
//!   `encode(decode(b)?) == b` for every accepted `b`, and ids that hash encodings are unique.
//!
//! Decoding untrusted bytes never panics.
//!
//! ```
//! use medledger::codec::{self, Canonical, BoundedVec};
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Note { tags: BoundedVec<u32, 4> }
//! impl Canonical for Note {
//!     const NAME: &'static str = "note";
//!     const MAX_ENCODED_LEN: usize = 64;
//! }
//! let note = Note { tags: BoundedVec::try_from(vec![1, 2, 3]).unwrap() };
//! let bytes = codec::encode(&note);
//! assert_eq!(codec::decode::<Note>(&bytes).unwrap(), note);
//! assert!(codec::decode::<Note>(&[bytes.as_slice(), &[0]].concat()).is_err()); // trailing byte
//! ```

use core::cell::RefCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version byte that prefixes every canonical encoding.
pub const FORMAT_VERSION: u8 = 1;

/// A type with a canonical, bounded encoding.
pub trait Canonical: Serialize + DeserializeOwned {
    /// What the type is called in error messages ("transaction", "block header", …).
    const NAME: &'static str;
    /// The longest encoding (version byte included) that [`decode`] accepts for this type.
    const MAX_ENCODED_LEN: usize;
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is empty.
    #[error("{what}: empty input")]
    Empty {
        /// The type being decoded.
        what: &'static str,
    },
    /// The input is longer than the type can ever be.
    #[error("{what}: input of {len} bytes exceeds the limit of {max}")]
    InputTooLarge {
        /// The type being decoded.
        what: &'static str,
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The version byte is not one this build understands.
    #[error("{what}: unsupported format version {found} (this build reads version {expected})")]
    UnsupportedVersion {
        /// The type being decoded.
        what: &'static str,
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        expected: u8,
    },
    /// A length prefix inside the input exceeds its field's limit.
    #[error("{what}: {field} has {len} items, more than the limit of {max}")]
    CountTooLarge {
        /// The type being decoded.
        what: &'static str,
        /// The bounded field's description.
        field: &'static str,
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes remain after a complete value.
    #[error("{what}: {count} trailing bytes after the value")]
    TrailingBytes {
        /// The type being decoded.
        what: &'static str,
        /// Bytes left over.
        count: usize,
    },
    /// The bytes decode, but not in canonical form (for example an over-long varint).
    #[error(
        "{what}: non-canonical encoding ({len} bytes where the canonical form has {canonical})"
    )]
    NonCanonical {
        /// The type being decoded.
        what: &'static str,
        /// Input length.
        len: usize,
        /// Length of the canonical encoding of the decoded value.
        canonical: usize,
    },
    /// The bytes are not a valid encoding (truncated, bad tag, bad UTF-8, …).
    #[error("{what}: malformed encoding: {reason}")]
    Malformed {
        /// The type being decoded.
        what: &'static str,
        /// What the decoder reported.
        reason: String,
    },
}

thread_local! {
    /// Details of the last bounded-field overflow, so that [`decode`] can report which field and
    /// how large (serde's custom errors lose their message inside postcard).
    static LAST_OVERFLOW: RefCell<Option<(&'static str, usize, usize)>> = const { RefCell::new(None) };
}

fn overflow<E: serde::de::Error>(field: &'static str, len: usize, max: usize) -> E {
    LAST_OVERFLOW.with(|c| *c.borrow_mut() = Some((field, len, max)));
    E::custom(format_args!("{field}: {len} items exceeds limit {max}"))
}

/// Encodes `value` canonically: [`FORMAT_VERSION`] followed by the postcard body.
pub fn encode<T: Canonical>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out);
    out
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    encode_body_into(value, out);
}

/// Appends the postcard body of `value` (no version byte) to `out`.
pub(crate) fn encode_body_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    let buf = core::mem::take(out);
    // Serialising into a Vec only fails if a Serialize impl reports an error, and every type
    // in this crate serialises infallibly.
    *out =
        postcard::to_extend(value, buf).expect("postcard serialisation into a Vec is infallible");
}

/// The length of `value`'s postcard body (without the version byte).
pub(crate) fn body_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::experimental::serialized_size(value)
        .expect("postcard size computation is infallible for this crate's types")
}

/// Decodes a canonical encoding of `T`.
///
/// # Errors
///
/// [`DecodeError`] saying what was wrong: input too large, empty, wrong version, a bounded field
/// over its limit, trailing bytes, a non-canonical form or malformed bytes.
pub fn decode<T: Canonical>(bytes: &[u8]) -> Result<T, DecodeError> {
    let what = T::NAME;
    if bytes.len() > T::MAX_ENCODED_LEN {
        return Err(DecodeError::InputTooLarge {
            what,
            len: bytes.len(),
            max: T::MAX_ENCODED_LEN,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty { what })?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            what,
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    decode_body(what, body)
}

/// Decodes a postcard body (no version byte) strictly: bounded, no trailing bytes, canonical.
pub(crate) fn decode_body<T: DeserializeOwned + Serialize>(
    what: &'static str,
    body: &[u8],
) -> Result<T, DecodeError> {
    let (value, rest) = take_body::<T>(what, body)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what,
            count: rest.len(),
        });
    }
    Ok(value)
}

/// Decodes one canonical value from the front of `body`, returning it and the rest.
pub(crate) fn take_body<'a, T: DeserializeOwned + Serialize>(
    what: &'static str,
    body: &'a [u8],
) -> Result<(T, &'a [u8]), DecodeError> {
    LAST_OVERFLOW.with(|c| *c.borrow_mut() = None);
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|e| {
        match LAST_OVERFLOW.with(|c| c.borrow_mut().take()) {
            Some((field, len, max)) => DecodeError::CountTooLarge {
                what,
                field,
                len,
                max,
            },
            None => DecodeError::Malformed {
                what,
                reason: e.to_string(),
            },
        }
    })?;
    let used = body.len() - rest.len();
    // postcard's only non-canonical freedom is over-long varints, which always make the
    // encoding longer than the canonical one; equal length therefore means canonical.
    let canonical = body_len(&value);
    if canonical != used {
        return Err(DecodeError::NonCanonical {
            what,
            len: used,
            canonical,
        });
    }
    Ok((value, rest))
}

/// Returned when building a bounded container from too many items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len} items exceed the limit of {max}")]
pub struct TooLong {
    /// Items offered.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

/// A `Vec<T>` of at most `MAX` items, checked on construction and before allocation when decoded.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    /// The limit.
    pub const MAX: usize = MAX;
    /// An empty vector.
    pub const fn new() -> Self {
        Self(Vec::new())
    }
    /// The items.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
    /// Appends an item.
    ///
    /// # Errors
    ///
    /// [`TooLong`] if the vector is full; it is left unchanged.
    pub fn push(&mut self, item: T) -> Result<(), TooLong> {
        if self.0.len() >= MAX {
            return Err(TooLong {
                len: self.0.len() + 1,
                max: MAX,
            });
        }
        self.0.push(item);
        Ok(())
    }
}

impl<T, const MAX: usize> Default for BoundedVec<T, MAX> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug, const MAX: usize> fmt::Debug for BoundedVec<T, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T, const MAX: usize> Deref for BoundedVec<T, MAX> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const MAX: usize> TryFrom<Vec<T>> for BoundedVec<T, MAX> {
    type Error = TooLong;
    fn try_from(v: Vec<T>) -> Result<Self, TooLong> {
        if v.len() > MAX {
            return Err(TooLong {
                len: v.len(),
                max: MAX,
            });
        }
        Ok(Self(v))
    }
}

impl<'a, T, const MAX: usize> IntoIterator for &'a BoundedVec<T, MAX> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize, const MAX: usize> Serialize for BoundedVec<T, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const MAX: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
            type Value = BoundedVec<T, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a sequence of at most {MAX} items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let len = seq.size_hint().unwrap_or(0);
                if len > MAX {
                    return Err(overflow(core::any::type_name::<T>(), len, MAX));
                }
                // `len` is only claimed: reserve at most PREALLOC_BYTES for it and let the vector
                // grow with the items that really arrive (each consumes input), so memory stays
                // proportional to the input, not to MAX.
                let mut v = Vec::with_capacity(len.min(prealloc_items::<T>()));
                while let Some(item) = seq.next_element()? {
                    if v.len() == MAX {
                        return Err(overflow(core::any::type_name::<T>(), MAX + 1, MAX));
                    }
                    v.push(item);
                }
                Ok(BoundedVec(v))
            }
        }
        d.deserialize_seq(V::<T, MAX>(PhantomData))
    }
}

/// The most memory a bounded vector reserves up front for a decoded length claim.
const PREALLOC_BYTES: usize = 4096;

/// How many `T` fit in [`PREALLOC_BYTES`] (at least one).
const fn prealloc_items<T>() -> usize {
    let size = core::mem::size_of::<T>();
    if size == 0 {
        usize::MAX
    } else if size >= PREALLOC_BYTES {
        1
    } else {
        PREALLOC_BYTES / size
    }
}

/// A UTF-8 string of at most `MAX` bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BoundedString<const MAX: usize>(String);

impl<const MAX: usize> BoundedString<MAX> {
    /// The limit in bytes.
    pub const MAX: usize = MAX;
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const MAX: usize> fmt::Display for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> Deref for BoundedString<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<String> for BoundedString<MAX> {
    type Error = TooLong;
    fn try_from(s: String) -> Result<Self, TooLong> {
        if s.len() > MAX {
            return Err(TooLong {
                len: s.len(),
                max: MAX,
            });
        }
        Ok(Self(s))
    }
}

impl<const MAX: usize> TryFrom<&str> for BoundedString<MAX> {
    type Error = TooLong;
    fn try_from(s: &str) -> Result<Self, TooLong> {
        Self::try_from(s.to_owned())
    }
}

impl<const MAX: usize> Serialize for BoundedString<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedString<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const MAX: usize>;
        impl<'de, const MAX: usize> Visitor<'de> for V<MAX> {
            type Value = BoundedString<MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {MAX} bytes")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                // postcard hands out a borrowed slice of the input: nothing was allocated yet.
                if s.len() > MAX {
                    return Err(overflow("string bytes", s.len(), MAX));
                }
                Ok(BoundedString(s.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Self::Value, E> {
                self.visit_str(&s)
            }
        }
        d.deserialize_str(V::<MAX>)
    }
}

/// A byte string of at most `MAX` bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BoundedBytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedBytes<MAX> {
    /// The limit in bytes.
    pub const MAX: usize = MAX;
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedBytes<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        crate::hash::write_hex(f, &self.0)
    }
}

impl<const MAX: usize> Deref for BoundedBytes<MAX> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<Vec<u8>> for BoundedBytes<MAX> {
    type Error = TooLong;
    fn try_from(v: Vec<u8>) -> Result<Self, TooLong> {
        if v.len() > MAX {
            return Err(TooLong {
                len: v.len(),
                max: MAX,
            });
        }
        Ok(Self(v))
    }
}

impl<const MAX: usize> Serialize for BoundedBytes<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedBytes<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const MAX: usize>;
        impl<'de, const MAX: usize> Visitor<'de> for V<MAX> {
            type Value = BoundedBytes<MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a byte string of at most {MAX} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Self::Value, E> {
                if b.len() > MAX {
                    return Err(overflow("bytes", b.len(), MAX));
                }
                Ok(BoundedBytes(b.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, b: Vec<u8>) -> Result<Self::Value, E> {
                self.visit_bytes(&b)
            }
        }
        d.deserialize_bytes(V::<MAX>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Sample {
        n: u64,
        tags: BoundedVec<u16, 3>,
        name: BoundedString<8>,
        blob: BoundedBytes<5>,
        opt: Option<u32>,
    }
    impl Canonical for Sample {
        const NAME: &'static str = "sample";
        const MAX_ENCODED_LEN: usize = 64;
    }

    fn sample() -> Sample {
        Sample {
            n: 300,
            tags: vec![1, 2].try_into().unwrap(),
            name: "ab".try_into().unwrap(),
            blob: vec![9, 9].try_into().unwrap(),
            opt: Some(7),
        }
    }

    #[test]
    fn round_trip_and_version() {
        let b = encode(&sample());
        assert_eq!(b[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&b).unwrap(), sample());
        let mut v2 = b.clone();
        v2[0] = 2;
        assert!(matches!(
            decode::<Sample>(&v2),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
        assert!(matches!(
            decode::<Sample>(&[]),
            Err(DecodeError::Empty { .. })
        ));
    }

    #[test]
    fn rejects_trailing_and_oversize() {
        let mut b = encode(&sample());
        b.push(0);
        assert!(matches!(
            decode::<Sample>(&b),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
        let big = vec![1u8; 65];
        assert!(matches!(
            decode::<Sample>(&big),
            Err(DecodeError::InputTooLarge {
                len: 65,
                max: 64,
                ..
            })
        ));
    }

    #[test]
    fn rejects_counts_over_limit_before_allocating() {
        // n = 0, tags with a claimed length of 4 (limit 3).
        let b = [FORMAT_VERSION, 0, 4, 1, 1, 1, 1];
        match decode::<Sample>(&b) {
            Err(DecodeError::CountTooLarge { len: 4, max: 3, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        // A huge claimed length that the input cannot hold is refused as truncated, without
        // allocating for the claim.
        let b = [FORMAT_VERSION, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            decode::<Sample>(&b),
            Err(DecodeError::Malformed { .. })
        ));
        // Strings and byte strings too.
        let mut s = sample();
        s.name = BoundedString("abcdefgh".into());
        let mut b = encode(&s);
        // Bump the string length prefix from 8 to 9 and add a byte: over the limit.
        let pos = b.iter().position(|&x| x == 8).unwrap();
        b[pos] = 9;
        b.insert(pos + 1, b'z');
        assert!(matches!(
            decode::<Sample>(&b),
            Err(DecodeError::CountTooLarge { len: 9, max: 8, .. })
        ));
    }

    #[test]
    fn rejects_overlong_varint() {
        // n = 0 written as the two-byte varint 0x80 0x00.
        let mut b = encode(&sample());
        let canonical = b.clone();
        b.splice(1..3, [0x80 | (300 & 0x7f) as u8, 0x82, 0x00]);
        assert_ne!(b, canonical);
        assert!(matches!(
            decode::<Sample>(&b),
            Err(DecodeError::NonCanonical { .. })
        ));
    }

    #[test]
    fn bounded_constructors() {
        assert!(BoundedVec::<u8, 2>::try_from(vec![1, 2, 3]).is_err());
        let mut v = BoundedVec::<u8, 1>::new();
        v.push(1).unwrap();
        assert_eq!(v.push(2), Err(TooLong { len: 2, max: 1 }));
        assert!(BoundedString::<2>::try_from("abc").is_err());
        assert!(BoundedBytes::<2>::try_from(vec![0; 3]).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(v) = decode::<Sample>(&bytes) {
                prop_assert_eq!(encode(&v), bytes);
            }
        }

        #[test]
        fn round_trip(n in any::<u64>(), tags in proptest::collection::vec(any::<u16>(), 0..=3),
                      name in "[a-z]{0,8}", blob in proptest::collection::vec(any::<u8>(), 0..=5),
                      opt in any::<Option<u32>>()) {
            let s = Sample { n, tags: tags.try_into().unwrap(), name: name.try_into().unwrap(),
                             blob: blob.try_into().unwrap(), opt };
            let b = encode(&s);
            prop_assert_eq!(decode::<Sample>(&b).unwrap(), s);
        }
    }
}
