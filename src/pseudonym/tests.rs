//! The backend test suite, run against every backend, and derived-scheme specifics.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::codec;
use crate::hash::to_hex;

fn handle(i: u32) -> PatientHandle {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    PatientHandle::from_bytes(b)
}

fn contexts() -> Vec<Context> {
    let mut v = Vec::new();
    for e in [0u64, 1, 2, 1_000_000, u64::MAX] {
        for purpose in [
            PurposeOfUse::Treatment,
            PurposeOfUse::Research,
            PurposeOfUse::Payment,
        ] {
            for r in ["hospital a", "study b"] {
                v.push(Context::new(Epoch::new(e), purpose, Recipient::group(r)));
            }
        }
    }
    v
}

fn backends() -> Vec<(&'static str, Box<dyn PseudonymBackend>)> {
    vec![
        (
            "keyed hash",
            Box::new(DerivedBackend::new(Scheme::KeyedHash)),
        ),
        ("ed25519", Box::new(DerivedBackend::new(Scheme::Ed25519))),
        ("random token", Box::new(RandomTokenBackend::new())),
    ]
}

/// The suite every backend must pass.
fn suite(name: &str, b: &mut dyn PseudonymBackend) {
    const N: u32 = 20;
    for i in 0..N {
        b.enroll(handle(i)).unwrap();
    }
    assert_eq!(
        b.enroll(handle(0)),
        Err(PseudonymError::AlreadyEnrolled),
        "{name}"
    );
    let ctxs = contexts();

    // Determinism per context, distinctness across contexts and patients.
    let mut issued = Vec::new();
    let mut all = BTreeSet::new();
    for i in 0..N {
        for c in &ctxs {
            let p = b.pseudonym(&handle(i), c).unwrap();
            assert_eq!(
                b.pseudonym(&handle(i), c).unwrap(),
                p,
                "{name}: determinism"
            );
            assert!(all.insert(p), "{name}: distinct pseudonyms");
            issued.push((i, *c, p));
        }
    }
    assert_eq!(b.link_index().len(), issued.len(), "{name}");

    // Relinking: 100% of issued pseudonyms, and only in their own context.
    for (i, c, p) in &issued {
        assert_eq!(b.relink(p, c), Some(handle(*i)), "{name}: relink");
    }
    let (_, c0, p0) = issued[0];
    let mut other = c0;
    other.purpose = PurposeOfUse::Marketing;
    assert_eq!(b.relink(&p0, &other), None, "{name}: wrong context");
    assert_eq!(b.relink(&Pseudonym::from_bytes([0x5a; 32]), &c0), None);
    assert_eq!(
        b.pseudonym(&handle(N + 1), &c0),
        Err(PseudonymError::UnknownPatient),
        "{name}"
    );

    // Shredding epoch 1 (and the last epoch): relinking and issuing fail there, nowhere else.
    let per_epoch = N as usize * 6;
    assert_eq!(b.shred_epoch(Epoch::new(1)), per_epoch, "{name}");
    assert_eq!(b.shred_epochs(Epoch::MAX..=Epoch::MAX), per_epoch, "{name}");
    assert!(b.is_shredded(Epoch::new(1)) && !b.is_shredded(Epoch::new(2)));
    for (i, c, p) in &issued {
        let gone = c.epoch == Epoch::new(1) || c.epoch == Epoch::MAX;
        if gone {
            assert_eq!(b.relink(p, c), None, "{name}: relink after shredding");
            assert_eq!(
                b.pseudonym(&handle(*i), c),
                Err(PseudonymError::EpochShredded { epoch: c.epoch }),
                "{name}"
            );
        } else {
            assert_eq!(b.relink(p, c), Some(handle(*i)), "{name}");
            assert_eq!(b.pseudonym(&handle(*i), c).unwrap(), *p, "{name}");
        }
    }
    // Shredded epochs stay shredded for patients enrolled later.
    b.enroll(handle(100)).unwrap();
    let late = Context::new(Epoch::new(1), PurposeOfUse::Research, Recipient::group("x"));
    assert!(b.pseudonym(&handle(100), &late).is_err(), "{name}");

    // Forgetting a patient: no more relinking or issuing for them.
    assert!(b.forget(&handle(3)));
    assert!(!b.forget(&handle(3)));
    for (i, c, p) in issued.iter().filter(|(i, _, _)| *i == 3) {
        assert_eq!(b.relink(p, c), None, "{name}");
        if !b.is_shredded(c.epoch) {
            assert_eq!(
                b.pseudonym(&handle(*i), c),
                Err(PseudonymError::UnknownPatient)
            );
        }
    }
    assert_eq!(b.link_index().len(), (N as usize - 1) * (ctxs.len() - 12));
    let dbg = format!("{b:?}", b = b.link_index());
    assert!(dbg.starts_with("LinkIndex { epochs:"), "{dbg}");
}

#[test]
fn every_backend_passes_the_suite() {
    for (name, mut b) in backends() {
        suite(name, b.as_mut());
    }
}

#[test]
fn backends_are_send_sync_and_errors_are_static() {
    fn is<T: Send + Sync + 'static>() {}
    is::<PseudonymError>();
    is::<LinkError>();
    is::<ScheduleError>();
    is::<generalize::GeneralizeError>();
    is::<DerivedBackend>();
    is::<RandomTokenBackend>();
    is::<Box<dyn PseudonymBackend>>();
}

#[test]
fn derived_pseudonyms_are_reproducible_from_the_secret() {
    let secret = PatientSecret::generate().unwrap();
    let c = Context::new(Epoch::new(7), PurposeOfUse::Research, Recipient::group("s"));
    for scheme in [Scheme::KeyedHash, Scheme::Ed25519] {
        let mut v1 = DerivedBackend::new(scheme);
        let mut v2 = DerivedBackend::new(scheme);
        v1.enroll_with_secret(handle(1), &secret).unwrap();
        v2.enroll_with_secret(handle(2), &secret).unwrap();
        let p = v1.pseudonym(&handle(1), &c).unwrap();
        assert_eq!(v2.pseudonym(&handle(2), &c).unwrap(), p);
        // The patient computes it on their own, from the secret.
        let key = secret.key_tree().epoch_key(c.epoch).unwrap();
        let own = match scheme {
            Scheme::KeyedHash => key.pseudonym(&c).unwrap(),
            Scheme::Ed25519 => key.signing_key(&c).unwrap().pseudonym(),
        };
        assert_eq!(own, p);
    }
    // Keys of another epoch refuse the context.
    let key = secret.key_tree().epoch_key(Epoch::new(8)).unwrap();
    assert_eq!(
        key.pseudonym(&c),
        Err(PseudonymError::EpochMismatch {
            key: Epoch::new(8),
            context: Epoch::new(7)
        })
    );
    assert!(key.signing_key(&c).is_err());
}

#[test]
fn shredding_leaves_nothing_in_the_vault_that_reaches_the_epoch() {
    let secret = PatientSecret::from_bytes([0x42; 32]);
    let mut vault = DerivedBackend::new(Scheme::KeyedHash);
    vault.enroll_with_secret(handle(1), &secret).unwrap();
    let shred = [Epoch::new(10), Epoch::new(11), Epoch::new(12)];
    let kept = Epoch::new(13);
    let mut issued = Vec::new();
    for e in shred.iter().chain([&kept]) {
        let c = Context::new(*e, PurposeOfUse::Research, Recipient::group("s"));
        issued.push((c, vault.pseudonym(&handle(1), &c).unwrap()));
    }
    // The epoch keys were cached while issuing: shredding must drop them too.
    vault.shred_epochs(Epoch::new(10)..=Epoch::new(12));
    let held = vault.held_keys(&handle(1));
    assert!(!held.is_empty());
    for e in shred {
        // Nothing held is the epoch key or any of its ancestors, back to the root.
        for k in EpochKeyTree::path_keys(&secret, e) {
            assert!(!held.contains(&k), "{e} still reachable");
        }
    }
    for (c, p) in &issued[..3] {
        assert_eq!(vault.relink(p, c), None);
    }
    assert_eq!(vault.relink(&issued[3].1, &issued[3].0), Some(handle(1)));
    // Re-enrolling the same tree is refused; a vault can only be given the secret again by its
    // holder, which is outside the vault.
    assert_eq!(
        vault.enroll_with_secret(handle(1), &secret),
        Err(PseudonymError::AlreadyEnrolled)
    );
}

#[test]
fn link_statements_from_the_vault() {
    let mut vault = DerivedBackend::new(Scheme::Ed25519);
    vault.enroll(handle(1)).unwrap();
    let a = Context::new(Epoch::new(1), PurposeOfUse::Research, Recipient::group("a"));
    let b = Context::new(
        Epoch::new(2),
        PurposeOfUse::Treatment,
        Recipient::group("b"),
    );
    let about = Context::new(Epoch::new(2), PurposeOfUse::Research, Recipient::group("v"));
    let st = vault.link_statement(&handle(1), &a, &b, about).unwrap();
    assert_eq!(st.verify(), Ok(()));
    let (pa, pb) = (
        vault.pseudonym(&handle(1), &a).unwrap(),
        vault.pseudonym(&handle(1), &b).unwrap(),
    );
    assert!(st.links(&pa, &pb));
    assert_eq!(
        vault.link_statement(&handle(1), &a, &a, about),
        Err(PseudonymError::SamePseudonym)
    );
    vault.shred_epoch(Epoch::new(1));
    assert_eq!(
        vault.link_statement(&handle(1), &a, &b, about),
        Err(PseudonymError::EpochShredded {
            epoch: Epoch::new(1)
        })
    );
    let mut keyed = DerivedBackend::new(Scheme::KeyedHash);
    keyed.enroll(handle(1)).unwrap();
    assert_eq!(
        keyed.link_statement(&handle(1), &a, &b, about),
        Err(PseudonymError::WrongScheme)
    );
}

/// Pinned outputs, computed independently of this crate from the derivation as documented
/// (BLAKE3 `derive_key` with the domain context strings, and RFC 8032 key generation from the
/// seed). Changing any of them changes every pseudonym ever issued, which needs a new domain
/// version.
#[test]
fn golden_vectors() {
    let secret = PatientSecret::from_bytes([7; 32]);
    let c = Context::new(
        Epoch::new(2027),
        PurposeOfUse::Research,
        Recipient::group("golden"),
    );
    assert_eq!(
        to_hex(&c.encode()),
        format!("01eb0f05{}", to_hex(Recipient::group("golden").as_bytes()))
    );
    assert_eq!(
        Recipient::group("golden").to_string(),
        "ee8b9d3147411164072f2d1e416f6df9da931dbe0182561c9a0fd71e8405de59"
    );
    let key = secret.key_tree().epoch_key(c.epoch).unwrap();
    assert_eq!(
        to_hex(&key.raw()),
        "932729033949de187b2e2125c159a9b141c6a8626cc9bfb21df0ee52b97b194b"
    );
    assert_eq!(
        key.pseudonym(&c).unwrap().to_string(),
        "d5816496a2e9c35888c96ea1fd57986752f51687587f56d3d9bfe1bca79e0d53"
    );
    assert_eq!(
        key.signing_key(&c).unwrap().pseudonym().to_string(),
        "19312b0793cdf1a569cac71d4f7af4ec148984e836e277ae1f8727e3bd360991"
    );
}

#[test]
fn context_decoding_is_strict() {
    let c = Context::new(
        Epoch::new(300),
        PurposeOfUse::Training,
        Recipient::group("r"),
    );
    let b = c.encode();
    assert_eq!(codec::decode::<Context>(&b).unwrap(), c);
    let mut bad = b.clone();
    bad[3] = 200; // purpose index out of range
    assert!(codec::decode::<Context>(&bad).is_err());
}

#[test]
fn secrets_and_indexes_never_print() {
    let mut vault = DerivedBackend::new(Scheme::KeyedHash);
    vault.enroll(handle(1)).unwrap();
    let c = Context::new(Epoch::new(1), PurposeOfUse::Research, Recipient::group("s"));
    let p = vault.pseudonym(&handle(1), &c).unwrap();
    let dbg = format!("{vault:?}");
    assert!(!dbg.contains(&p.to_string()[..16]), "{dbg}");
    assert!(!dbg.contains(&handle(1).to_string()[..16]), "{dbg}");
    let mut tokens = RandomTokenBackend::new();
    tokens.enroll(handle(1)).unwrap();
    let p = tokens.pseudonym(&handle(1), &c).unwrap();
    let dbg = format!("{tokens:?}");
    assert!(!dbg.contains(&p.to_string()[..16]), "{dbg}");
    for e in [
        PseudonymError::UnknownPatient,
        PseudonymError::Collision,
        PseudonymError::Randomness,
    ] {
        let msg = e.to_string();
        assert_eq!(msg, msg.to_lowercase());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn context_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
        if let Ok(c) = codec::decode::<Context>(&bytes) {
            prop_assert_eq!(c.encode(), bytes);
        }
    }

    #[test]
    fn any_context_field_changes_the_pseudonym(e in any::<u64>(), r in any::<[u8; 32]>(),
                                               i in 0usize..16, j in 0usize..16) {
        let secret = PatientSecret::from_bytes([9; 32]);
        let tree = secret.key_tree();
        let key = tree.epoch_key(Epoch::new(e)).unwrap();
        let c = Context::new(Epoch::new(e), PurposeOfUse::ALL[i], Recipient::from_bytes(r));
        let mut d = c;
        d.purpose = PurposeOfUse::ALL[j];
        let (pc, pd) = (key.pseudonym(&c).unwrap(), key.pseudonym(&d).unwrap());
        prop_assert_eq!(pc == pd, i == j);
        let mut r2 = r;
        r2[0] ^= 1;
        let f = Context::new(c.epoch, c.purpose, Recipient::from_bytes(r2));
        prop_assert_ne!(key.pseudonym(&f).unwrap(), pc);
        if let Some(next) = c.epoch.next() {
            let g = Context::new(next, c.purpose, c.recipient);
            let other = tree.epoch_key(next).unwrap().pseudonym(&g).unwrap();
            prop_assert_ne!(other, pc);
        }
    }
}
