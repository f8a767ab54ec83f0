//! The two backends: derived pseudonyms and random tokens.

use core::fmt;
use core::ops::RangeInclusive;
use std::collections::BTreeMap;

use rand_core::{OsRng, RngCore as _};

use super::{
    Context, Epoch, EpochKey, EpochKeyTree, LinkIndex, LinkStatement, PatientHandle, PatientSecret,
    Pseudonym, PseudonymBackend, PseudonymError,
};

/// Epoch keys a [`DerivedBackend`] keeps per patient to avoid re-walking the tree (the most
/// recent epochs are kept).
pub const MAX_CACHED_EPOCH_KEYS: usize = 4;

/// A set of epochs as disjoint, non-adjacent inclusive ranges: start → end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct EpochSet(BTreeMap<u64, u64>);

impl EpochSet {
    fn contains(&self, e: Epoch) -> bool {
        self.0
            .range(..=e.get())
            .next_back()
            .is_some_and(|(_, &end)| end >= e.get())
    }

    fn insert(&mut self, range: &RangeInclusive<Epoch>) {
        let (mut lo, mut hi) = (range.start().get(), range.end().get());
        if lo > hi {
            return;
        }
        // Merge with a range that starts before `lo` and reaches it (or touches it).
        if let Some((&s, &e)) = self.0.range(..lo).next_back() {
            if e.saturating_add(1) >= lo {
                lo = s;
                hi = hi.max(e);
            }
        }
        // Merge with every range starting inside [lo, hi + 1].
        let absorbed: Vec<(u64, u64)> = self
            .0
            .range(lo..=hi.saturating_add(1))
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in absorbed {
            self.0.remove(&s);
            hi = hi.max(e);
        }
        self.0.insert(lo, hi);
    }

    fn iter(&self) -> impl Iterator<Item = RangeInclusive<Epoch>> + '_ {
        self.0.iter().map(|(&s, &e)| Epoch::new(s)..=Epoch::new(e))
    }
}

/// How a [`DerivedBackend`] turns an epoch key and a context into a pseudonym.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// BLAKE3 keyed by the epoch key ([`EpochKey::pseudonym`]): fastest.
    KeyedHash,
    /// The public key of the per-context Ed25519 key ([`EpochKey::signing_key`]): slower, but
    /// the patient (or the vault) can prove that two pseudonyms are under common control with a
    /// [`LinkStatement`].
    Ed25519,
}

struct PatientKeys {
    tree: EpochKeyTree,
    cache: BTreeMap<Epoch, EpochKey>,
}

impl PatientKeys {
    fn epoch_key(&mut self, epoch: Epoch) -> Result<&EpochKey, PseudonymError> {
        if !self.cache.contains_key(&epoch) {
            let key = self.tree.epoch_key(epoch)?;
            if self.cache.len() >= MAX_CACHED_EPOCH_KEYS {
                self.cache.pop_first();
            }
            self.cache.insert(epoch, key);
        }
        self.cache
            .get(&epoch)
            .ok_or(PseudonymError::EpochShredded { epoch })
    }

    fn shred(&mut self, epochs: &RangeInclusive<Epoch>) {
        self.tree.shred(epochs.clone());
        if epochs.start() <= epochs.end() {
            let gone: Vec<Epoch> = self.cache.range(epochs.clone()).map(|(&e, _)| e).collect();
            for e in gone {
                self.cache.remove(&e);
            }
        }
    }
}

/// A key holder's vault issuing *derived* pseudonyms: each patient's pseudonyms are computed
/// from their [`EpochKeyTree`], so the same patient and context always give the same pseudonym,
/// and the patient, holding their [`PatientSecret`], can compute them too.
///
/// The vault never keeps a patient secret, only the tree derived from it, so that
/// [shredding](PseudonymBackend::shred_epochs) is final (see the [module docs](super)).
/// Shredded epochs stay shredded for patients enrolled later.
pub struct DerivedBackend {
    scheme: Scheme,
    patients: BTreeMap<PatientHandle, Box<PatientKeys>>,
    shredded: EpochSet,
    index: LinkIndex,
}

impl DerivedBackend {
    /// An empty vault issuing pseudonyms of `scheme`.
    pub fn new(scheme: Scheme) -> Self {
        Self {
            scheme,
            patients: BTreeMap::new(),
            shredded: EpochSet::default(),
            index: LinkIndex::new(),
        }
    }

    /// The scheme.
    pub const fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Enrols a patient whose secret the caller holds (the patient's own device, say): the
    /// vault derives the patient's [`EpochKeyTree`] from it and keeps only that.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::AlreadyEnrolled`] if the handle is taken.
    pub fn enroll_with_secret(
        &mut self,
        patient: PatientHandle,
        secret: &PatientSecret,
    ) -> Result<(), PseudonymError> {
        self.enroll_tree(patient, secret.key_tree())
    }

    /// Enrols a patient by their key tree (possibly already shredded in places).
    ///
    /// # Errors
    ///
    /// [`PseudonymError::AlreadyEnrolled`] if the handle is taken.
    pub fn enroll_tree(
        &mut self,
        patient: PatientHandle,
        mut tree: EpochKeyTree,
    ) -> Result<(), PseudonymError> {
        if self.patients.contains_key(&patient) {
            return Err(PseudonymError::AlreadyEnrolled);
        }
        for range in self.shredded.iter() {
            tree.shred(range);
        }
        self.patients.insert(
            patient,
            Box::new(PatientKeys {
                tree,
                cache: BTreeMap::new(),
            }),
        );
        Ok(())
    }

    /// The number of enrolled patients.
    pub fn len(&self) -> usize {
        self.patients.len()
    }

    /// Whether no patient is enrolled.
    pub fn is_empty(&self) -> bool {
        self.patients.is_empty()
    }

    fn keys(&mut self, patient: &PatientHandle) -> Result<&mut PatientKeys, PseudonymError> {
        self.patients
            .get_mut(patient)
            .map(|b| &mut **b)
            .ok_or(PseudonymError::UnknownPatient)
    }

    /// A statement, signed by the patient's keys for contexts `a` and `b`, that the two
    /// pseudonyms are under common control; `statement` says when, why and for whom it is made.
    /// Both pseudonyms are recorded in the index, like any issued pseudonym.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::WrongScheme`] unless the scheme is [`Scheme::Ed25519`];
    /// [`PseudonymError::SamePseudonym`] if `a == b`; otherwise as
    /// [`pseudonym`](PseudonymBackend::pseudonym).
    pub fn link_statement(
        &mut self,
        patient: &PatientHandle,
        a: &Context,
        b: &Context,
        statement: Context,
    ) -> Result<LinkStatement, PseudonymError> {
        if self.scheme != Scheme::Ed25519 {
            return Err(PseudonymError::WrongScheme);
        }
        if a == b {
            return Err(PseudonymError::SamePseudonym);
        }
        self.pseudonym(patient, a)?;
        self.pseudonym(patient, b)?;
        let keys = self.keys(patient)?;
        let key_a = keys.epoch_key(a.epoch)?.signing_key(a)?;
        let key_b = keys.epoch_key(b.epoch)?.signing_key(b)?;
        LinkStatement::sign(&key_a, &key_b, statement)
    }

    /// Every key held for `patient` (tree nodes and cached epoch keys), for tests.
    #[cfg(test)]
    pub(crate) fn held_keys(&self, patient: &PatientHandle) -> Vec<[u8; 32]> {
        self.patients
            .get(patient)
            .map(|k| {
                let mut v: Vec<[u8; 32]> =
                    k.tree.held().into_iter().map(|(_, _, key)| key).collect();
                v.extend(k.cache.values().map(EpochKey::raw));
                v
            })
            .unwrap_or_default()
    }
}

impl PseudonymBackend for DerivedBackend {
    fn enroll(&mut self, patient: PatientHandle) -> Result<(), PseudonymError> {
        if self.patients.contains_key(&patient) {
            return Err(PseudonymError::AlreadyEnrolled);
        }
        let secret = PatientSecret::generate()?;
        self.enroll_with_secret(patient, &secret)
        // `secret` is erased here: nobody can recompute a shredded epoch for this patient.
    }

    fn pseudonym(
        &mut self,
        patient: &PatientHandle,
        context: &Context,
    ) -> Result<Pseudonym, PseudonymError> {
        if self.shredded.contains(context.epoch) {
            return Err(PseudonymError::EpochShredded {
                epoch: context.epoch,
            });
        }
        if let Some(p) = self.index.issued(patient, context) {
            return Ok(p);
        }
        let scheme = self.scheme;
        let key = self.keys(patient)?.epoch_key(context.epoch)?;
        let pseudonym = match scheme {
            Scheme::KeyedHash => key.pseudonym(context)?,
            Scheme::Ed25519 => key.signing_key(context)?.pseudonym(),
        };
        self.index.insert(context, pseudonym, *patient)?;
        Ok(pseudonym)
    }

    fn relink(&self, pseudonym: &Pseudonym, context: &Context) -> Option<PatientHandle> {
        self.index.lookup(pseudonym, context)
    }

    fn shred_epochs(&mut self, epochs: RangeInclusive<Epoch>) -> usize {
        self.shredded.insert(&epochs);
        for keys in self.patients.values_mut() {
            keys.shred(&epochs);
        }
        self.index.remove_epochs(epochs)
    }

    fn is_shredded(&self, epoch: Epoch) -> bool {
        self.shredded.contains(epoch)
    }

    fn forget(&mut self, patient: &PatientHandle) -> bool {
        self.index.remove_patient(patient);
        self.patients.remove(patient).is_some()
    }

    fn link_index(&self) -> &LinkIndex {
        &self.index
    }
}

impl fmt::Debug for DerivedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedBackend")
            .field("scheme", &self.scheme)
            .field("patients", &self.patients.len())
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// How many times [`RandomTokenBackend`] draws again after a (astronomically unlikely) token
/// collision before giving up.
const TOKEN_RETRIES: usize = 4;

/// A vault issuing *random* pseudonyms: 32 bytes from the operating system's CSPRNG per patient
/// and context, recorded in the [`LinkIndex`], with nothing derived from anything.
///
/// The index is then the only link between a patient and their pseudonyms: losing it loses the
/// link, and shredding an epoch deletes its entries, after which they are gone for good.
/// Shredded epochs are remembered so that no new token is issued for them.
#[derive(Default)]
pub struct RandomTokenBackend {
    patients: std::collections::BTreeSet<PatientHandle>,
    shredded: EpochSet,
    index: LinkIndex,
}

impl RandomTokenBackend {
    /// An empty vault.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PseudonymBackend for RandomTokenBackend {
    fn enroll(&mut self, patient: PatientHandle) -> Result<(), PseudonymError> {
        if self.patients.insert(patient) {
            Ok(())
        } else {
            Err(PseudonymError::AlreadyEnrolled)
        }
    }

    fn pseudonym(
        &mut self,
        patient: &PatientHandle,
        context: &Context,
    ) -> Result<Pseudonym, PseudonymError> {
        if !self.patients.contains(patient) {
            return Err(PseudonymError::UnknownPatient);
        }
        if self.shredded.contains(context.epoch) {
            return Err(PseudonymError::EpochShredded {
                epoch: context.epoch,
            });
        }
        if let Some(p) = self.index.issued(patient, context) {
            return Ok(p);
        }
        for _ in 0..TOKEN_RETRIES {
            let mut token = [0u8; 32];
            OsRng
                .try_fill_bytes(&mut token)
                .map_err(|_| PseudonymError::Randomness)?;
            let token = Pseudonym::from_bytes(token);
            if self.index.lookup(&token, context).is_none() {
                self.index.insert(context, token, *patient)?;
                return Ok(token);
            }
        }
        Err(PseudonymError::Collision)
    }

    fn relink(&self, pseudonym: &Pseudonym, context: &Context) -> Option<PatientHandle> {
        self.index.lookup(pseudonym, context)
    }

    fn shred_epochs(&mut self, epochs: RangeInclusive<Epoch>) -> usize {
        self.shredded.insert(&epochs);
        self.index.remove_epochs(epochs)
    }

    fn is_shredded(&self, epoch: Epoch) -> bool {
        self.shredded.contains(epoch)
    }

    fn forget(&mut self, patient: &PatientHandle) -> bool {
        self.index.remove_patient(patient);
        self.patients.remove(patient)
    }

    fn link_index(&self) -> &LinkIndex {
        &self.index
    }
}

impl fmt::Debug for RandomTokenBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RandomTokenBackend")
            .field("patients", &self.patients.len())
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u64, u64)]) -> EpochSet {
        let mut s = EpochSet::default();
        for &(a, b) in ranges {
            s.insert(&(Epoch::new(a)..=Epoch::new(b)));
        }
        s
    }

    #[test]
    fn epoch_set_merges() {
        let s = set(&[(5, 7), (1, 2), (3, 3), (10, 12), (8, 8), (4, 4)]);
        assert_eq!(
            s.0.clone().into_iter().collect::<Vec<_>>(),
            vec![(1, 8), (10, 12)]
        );
        let s = set(&[(5, 7), (1, 2), (3, 3), (10, 12), (8, 8), (4, 4), (9, 9)]);
        assert_eq!(s.0.into_iter().collect::<Vec<_>>(), vec![(1, 12)]);
        let s = set(&[(5, 7), (20, 30), (6, 25)]);
        assert_eq!(s.0.into_iter().collect::<Vec<_>>(), vec![(5, 30)]);
        let s = set(&[(5, 7), (9, 9), (u64::MAX, u64::MAX), (0, 0)]);
        assert_eq!(s.0.len(), 4);
        assert!(s.contains(Epoch::new(6)) && !s.contains(Epoch::new(8)));
        assert!(s.contains(Epoch::MAX) && s.contains(Epoch::ZERO));
        let s = set(&[(3, 1)]);
        assert!(s.0.is_empty());
        let s = set(&[(0, u64::MAX), (4, 4)]);
        assert_eq!(s.0.into_iter().collect::<Vec<_>>(), vec![(0, u64::MAX)]);
    }
}
