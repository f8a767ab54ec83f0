//! Selective linking: per-context Ed25519 keys and common-control statements.

use core::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use super::{Context, Pseudonym, PseudonymError, Recipient};
use crate::codec::{self, Canonical};
use crate::hash::{domain, write_hex};

/// A patient's Ed25519 signing key for one [`Context`]; its public key is the patient's
/// pseudonym in that context ([`Scheme::Ed25519`](super::Scheme::Ed25519)).
///
/// Made by [`EpochKey::signing_key`](super::EpochKey::signing_key). Erased on drop, never
/// printed.
pub struct ContextSigningKey {
    context: Context,
    key: Box<SigningKey>,
}

impl ContextSigningKey {
    pub(crate) fn from_seed(seed: &[u8; 32], context: Context) -> Self {
        Self {
            context,
            key: Box::new(SigningKey::from_bytes(seed)),
        }
    }

    /// The context this key is for.
    pub const fn context(&self) -> &Context {
        &self.context
    }

    /// The pseudonym: the compressed Ed25519 public key.
    pub fn pseudonym(&self) -> Pseudonym {
        Pseudonym::from_bytes(self.key.verifying_key().to_bytes())
    }
}

impl fmt::Debug for ContextSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextSigningKey")
            .field("pseudonym", &self.pseudonym())
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

/// Which pseudonym of a [`LinkStatement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkSide {
    /// The first pseudonym.
    A,
    /// The second pseudonym.
    B,
}

impl fmt::Display for LinkSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkSide::A => "first",
            LinkSide::B => "second",
        })
    }
}

/// Why a [`LinkStatement`] does not verify (the statement is untrusted input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Both pseudonyms are the same.
    #[error("link statement links a pseudonym to itself")]
    SamePseudonym,
    /// A pseudonym is not a valid Ed25519 public key.
    #[error("{0} pseudonym is not an ed25519 public key")]
    InvalidKey(LinkSide),
    /// A pseudonym is a small-order Ed25519 point, for which signatures prove nothing.
    #[error("{0} pseudonym is a weak (small-order) key")]
    WeakKey(LinkSide),
    /// A signature does not verify under strict Ed25519 rules.
    #[error("{0} signature does not verify")]
    BadSignature(LinkSide),
    /// The statement is addressed to another recipient.
    #[error("link statement is addressed to another recipient")]
    WrongRecipient,
}

/// A statement, signed by the keys of two pseudonyms, that both are under one person's control.
///
/// The patient discloses it to link two of their pseudonyms for one verifier (to combine two
/// studies' records, say) without revealing who they are or linking any other pseudonym.
/// Anyone can [`verify`](Self::verify) it: both pseudonyms' keys signed, with Ed25519 in strict
/// mode, the BLAKE3 hash in the [`PSEUDONYM_LINK`](domain::PSEUDONYM_LINK) domain of the
/// canonical encoding of `(a, b, context)`. The statement's own [`Context`] says when, why and
/// for whom it was made, so that it cannot be replayed to another recipient unnoticed.
///
/// ```
/// use medledger::codec;
/// use medledger::pseudonym::{Context, Epoch, LinkStatement, PatientSecret, Recipient};
/// use medledger::purpose::PurposeOfUse;
///
/// let secret = PatientSecret::generate()?;
/// let tree = secret.key_tree();
/// let study_a = Context::new(Epoch::new(1), PurposeOfUse::Research, Recipient::group("a"));
/// let study_b = Context::new(Epoch::new(9), PurposeOfUse::Research, Recipient::group("b"));
/// let key_a = tree.epoch_key(study_a.epoch)?.signing_key(&study_a)?;
/// let key_b = tree.epoch_key(study_b.epoch)?.signing_key(&study_b)?;
///
/// let verifier = Recipient::group("meta-analysis");
/// let about = Context::new(Epoch::new(9), PurposeOfUse::Research, verifier);
/// let statement = LinkStatement::sign(&key_a, &key_b, about)?;
///
/// let bytes = codec::encode(&statement);
/// let received: LinkStatement = codec::decode(&bytes).unwrap();
/// assert!(received.verify_for(&verifier).is_ok());
/// assert!(received.links(&key_b.pseudonym(), &key_a.pseudonym()));
/// # Ok::<(), medledger::pseudonym::PseudonymError>(())
/// ```
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStatement {
    a: Pseudonym,
    b: Pseudonym,
    context: Context,
    #[serde(with = "crate::hash::byte_array")]
    sig_a: [u8; 64],
    #[serde(with = "crate::hash::byte_array")]
    sig_b: [u8; 64],
}

impl Canonical for LinkStatement {
    const NAME: &'static str = "pseudonym link statement";
    const MAX_ENCODED_LEN: usize = 32 + 32 + Context::MAX_ENCODED_LEN + 64 + 64;
}

/// The message both keys sign.
fn message(a: &Pseudonym, b: &Pseudonym, context: &Context) -> [u8; 32] {
    let mut buf = Vec::with_capacity(Context::MAX_ENCODED_LEN + 64);
    codec::encode_into(&(a, b, context), &mut buf);
    domain::PSEUDONYM_LINK.hash(&buf)
}

impl LinkStatement {
    /// Signs that the pseudonyms of `a` and `b` are under common control, for the statement
    /// context `context` (typically the verifier as recipient and the current epoch).
    ///
    /// # Errors
    ///
    /// [`PseudonymError::SamePseudonym`] if both keys are the same.
    pub fn sign(
        a: &ContextSigningKey,
        b: &ContextSigningKey,
        context: Context,
    ) -> Result<Self, PseudonymError> {
        let (pa, pb) = (a.pseudonym(), b.pseudonym());
        if pa == pb {
            return Err(PseudonymError::SamePseudonym);
        }
        let msg = message(&pa, &pb, &context);
        Ok(Self {
            a: pa,
            b: pb,
            context,
            sig_a: a.key.sign(&msg).to_bytes(),
            sig_b: b.key.sign(&msg).to_bytes(),
        })
    }

    /// The first pseudonym.
    pub const fn a(&self) -> &Pseudonym {
        &self.a
    }

    /// The second pseudonym.
    pub const fn b(&self) -> &Pseudonym {
        &self.b
    }

    /// When, why and for whom the statement was made.
    pub const fn context(&self) -> &Context {
        &self.context
    }

    /// Whether the statement is about `x` and `y`, in either order (it says nothing about
    /// validity: [`verify`](Self::verify) it).
    pub fn links(&self, x: &Pseudonym, y: &Pseudonym) -> bool {
        (self.a == *x && self.b == *y) || (self.a == *y && self.b == *x)
    }

    /// Checks that both pseudonyms are valid, non-weak Ed25519 keys and that both signatures
    /// verify under strict rules (canonical encodings, no small-order components).
    ///
    /// # Errors
    ///
    /// [`LinkError`] saying which check failed.
    pub fn verify(&self) -> Result<(), LinkError> {
        if self.a == self.b {
            return Err(LinkError::SamePseudonym);
        }
        let key = |side, p: &Pseudonym| {
            let vk =
                VerifyingKey::from_bytes(p.as_bytes()).map_err(|_| LinkError::InvalidKey(side))?;
            if vk.is_weak() {
                return Err(LinkError::WeakKey(side));
            }
            Ok(vk)
        };
        let (ka, kb) = (key(LinkSide::A, &self.a)?, key(LinkSide::B, &self.b)?);
        let msg = message(&self.a, &self.b, &self.context);
        ka.verify_strict(&msg, &Signature::from_bytes(&self.sig_a))
            .map_err(|_| LinkError::BadSignature(LinkSide::A))?;
        kb.verify_strict(&msg, &Signature::from_bytes(&self.sig_b))
            .map_err(|_| LinkError::BadSignature(LinkSide::B))?;
        Ok(())
    }

    /// [`verify`](Self::verify), and check that the statement is addressed to `recipient`.
    ///
    /// # Errors
    ///
    /// [`LinkError::WrongRecipient`], or what [`verify`](Self::verify) returns.
    pub fn verify_for(&self, recipient: &Recipient) -> Result<(), LinkError> {
        if self.context.recipient != *recipient {
            return Err(LinkError::WrongRecipient);
        }
        self.verify()
    }
}

impl fmt::Debug for LinkStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Hex<'a>(&'a [u8]);
        impl fmt::Debug for Hex<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, self.0)
            }
        }
        f.debug_struct("LinkStatement")
            .field("a", &self.a)
            .field("b", &self.b)
            .field("context", &self.context)
            .field("sig_a", &Hex(&self.sig_a))
            .field("sig_b", &Hex(&self.sig_b))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DecodeError;
    use crate::pseudonym::{Epoch, PatientSecret};
    use crate::purpose::PurposeOfUse;
    use proptest::prelude::*;

    fn ctx(e: u64, label: &str) -> Context {
        Context::new(
            Epoch::new(e),
            PurposeOfUse::Research,
            Recipient::group(label),
        )
    }

    fn keys() -> (ContextSigningKey, ContextSigningKey) {
        let s = PatientSecret::from_bytes([3; 32]);
        let t = s.key_tree();
        let (ca, cb) = (ctx(1, "a"), ctx(2, "b"));
        (
            t.epoch_key(ca.epoch).unwrap().signing_key(&ca).unwrap(),
            t.epoch_key(cb.epoch).unwrap().signing_key(&cb).unwrap(),
        )
    }

    fn statement() -> LinkStatement {
        let (a, b) = keys();
        LinkStatement::sign(&a, &b, ctx(2, "verifier")).unwrap()
    }

    #[test]
    fn sign_verify_round_trip() {
        let st = statement();
        assert_eq!(st.verify(), Ok(()));
        assert_eq!(st.verify_for(&Recipient::group("verifier")), Ok(()));
        assert_eq!(
            st.verify_for(&Recipient::group("other")),
            Err(LinkError::WrongRecipient)
        );
        let bytes = codec::encode(&st);
        assert!(bytes.len() <= LinkStatement::MAX_ENCODED_LEN);
        let back: LinkStatement = codec::decode(&bytes).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.verify(), Ok(()));
        let dbg = format!("{:?}", keys().0);
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn self_link_refused() {
        let (a, _) = keys();
        assert_eq!(
            LinkStatement::sign(&a, &a, ctx(2, "v")).unwrap_err(),
            PseudonymError::SamePseudonym
        );
        let mut st = statement();
        st.b = st.a;
        assert_eq!(st.verify(), Err(LinkError::SamePseudonym));
    }

    #[test]
    fn tampering_is_detected() {
        let st = statement();
        let mut t = st.clone();
        t.context.epoch = Epoch::new(3);
        assert_eq!(t.verify(), Err(LinkError::BadSignature(LinkSide::A)));
        let mut t = st.clone();
        t.sig_b[0] ^= 1;
        assert_eq!(t.verify(), Err(LinkError::BadSignature(LinkSide::B)));
        // Swapping a and b changes the message.
        let mut t = st.clone();
        core::mem::swap(&mut t.a, &mut t.b);
        core::mem::swap(&mut t.sig_a, &mut t.sig_b);
        assert!(t.verify().is_err());
        // Another valid pseudonym in place of b: the message changes, so a's signature fails.
        let mut t = st.clone();
        let other = PatientSecret::from_bytes([4; 32]).key_tree();
        let c = ctx(2, "b");
        t.b = other
            .epoch_key(c.epoch)
            .unwrap()
            .signing_key(&c)
            .unwrap()
            .pseudonym();
        assert_eq!(t.verify(), Err(LinkError::BadSignature(LinkSide::A)));
        // Even with a's signature remade over the new message, b's does not verify.
        let (ka, _) = keys();
        let msg = message(&t.a, &t.b, &t.context);
        t.sig_a = ka.key.sign(&msg).to_bytes();
        assert_eq!(t.verify(), Err(LinkError::BadSignature(LinkSide::B)));
    }

    #[test]
    fn small_order_and_invalid_keys_rejected() {
        // The identity point (small order): decompresses, but is refused as weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut t = statement();
        t.b = Pseudonym::from_bytes(identity);
        assert_eq!(t.verify(), Err(LinkError::WeakKey(LinkSide::B)));
        // Not a point at all: y = 2 has no x on the curve.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        let mut t = statement();
        t.a = Pseudonym::from_bytes(bad);
        assert_eq!(t.verify(), Err(LinkError::InvalidKey(LinkSide::A)));
    }

    #[test]
    fn decoder_is_strict() {
        let mut bytes = codec::encode(&statement());
        bytes.push(0);
        assert!(matches!(
            codec::decode::<LinkStatement>(&bytes),
            Err(DecodeError::TrailingBytes { .. }) | Err(DecodeError::InputTooLarge { .. })
        ));
        bytes.truncate(bytes.len() - 2);
        assert!(codec::decode::<LinkStatement>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..260)) {
            if let Ok(st) = codec::decode::<LinkStatement>(&bytes) {
                prop_assert_eq!(codec::encode(&st), bytes);
                let _ = st.verify();
            }
        }

        #[test]
        fn mutations_never_verify(pos in 1usize..237, bit in 0u8..8) {
            let st = statement();
            let mut bytes = codec::encode(&st);
            prop_assume!(pos < bytes.len());
            bytes[pos] ^= 1 << bit;
            if let Ok(m) = codec::decode::<LinkStatement>(&bytes) {
                prop_assert!(m.verify().is_err());
            }
        }
    }
}
