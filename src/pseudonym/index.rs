//! The relink index: the "additional information kept separately".

use core::fmt;
use core::ops::RangeInclusive;
use std::collections::BTreeMap;

use super::{Context, Epoch, PatientHandle, Pseudonym, PseudonymError, Recipient};
use crate::purpose::PurposeOfUse;

/// One epoch's entries, in both directions.
#[derive(Default)]
struct EpochEntries {
    reverse: BTreeMap<(PurposeOfUse, Recipient, Pseudonym), PatientHandle>,
    forward: BTreeMap<(PatientHandle, PurposeOfUse, Recipient), Pseudonym>,
}

/// Which patient each issued pseudonym stands for, per context.
///
/// This is the information that turns pseudonyms back into patients, which GDPR Art. 4(5)
/// requires to be "kept separately" under technical and organisational safeguards: it belongs
/// to the key holder's vault (a [`PseudonymBackend`](super::PseudonymBackend) owns one) and is
/// never published with the data. Its `Debug` shows only counts.
///
/// Entries are grouped by epoch so that shredding an epoch drops them in one step.
#[derive(Default)]
pub struct LinkIndex {
    epochs: BTreeMap<Epoch, EpochEntries>,
    len: usize,
}

impl LinkIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of (context, pseudonym) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The patient behind `pseudonym` in `context`.
    pub fn lookup(&self, pseudonym: &Pseudonym, context: &Context) -> Option<PatientHandle> {
        self.epochs
            .get(&context.epoch)?
            .reverse
            .get(&(context.purpose, context.recipient, *pseudonym))
            .copied()
    }

    /// The pseudonym issued to `patient` in `context`, if any.
    pub fn issued(&self, patient: &PatientHandle, context: &Context) -> Option<Pseudonym> {
        self.epochs
            .get(&context.epoch)?
            .forward
            .get(&(*patient, context.purpose, context.recipient))
            .copied()
    }

    /// Records that `pseudonym` stands for `patient` in `context`. Recording the same entry
    /// twice is a no-op.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::Collision`] if, in `context`, the pseudonym already stands for another
    /// patient or the patient already has another pseudonym; the index is left unchanged.
    pub fn insert(
        &mut self,
        context: &Context,
        pseudonym: Pseudonym,
        patient: PatientHandle,
    ) -> Result<(), PseudonymError> {
        let existing_patient = self.lookup(&pseudonym, context);
        let existing_pseudonym = self.issued(&patient, context);
        match (existing_patient, existing_pseudonym) {
            (Some(p), Some(q)) if p == patient && q == pseudonym => return Ok(()),
            (None, None) => {}
            _ => return Err(PseudonymError::Collision),
        }
        let entries = self.epochs.entry(context.epoch).or_default();
        entries
            .reverse
            .insert((context.purpose, context.recipient, pseudonym), patient);
        entries
            .forward
            .insert((patient, context.purpose, context.recipient), pseudonym);
        self.len += 1;
        Ok(())
    }

    /// Drops every entry of the epochs in `epochs`; returns how many were dropped.
    pub fn remove_epochs(&mut self, epochs: RangeInclusive<Epoch>) -> usize {
        if epochs.start() > epochs.end() {
            return 0;
        }
        let keys: Vec<Epoch> = self.epochs.range(epochs).map(|(&e, _)| e).collect();
        let mut removed = 0;
        for e in keys {
            if let Some(entries) = self.epochs.remove(&e) {
                removed += entries.reverse.len();
            }
        }
        self.len -= removed;
        removed
    }

    /// Drops every entry of `patient`; returns how many were dropped.
    pub fn remove_patient(&mut self, patient: &PatientHandle) -> usize {
        let mut removed = 0;
        for entries in self.epochs.values_mut() {
            // The patient's entries are contiguous, starting at the smallest purpose and
            // recipient (`PurposeOfUse::ALL` is in `Ord` order).
            let first = (
                *patient,
                PurposeOfUse::ALL[0],
                Recipient::from_bytes([0; 32]),
            );
            let mine: Vec<_> = entries
                .forward
                .range(first..)
                .take_while(|((p, _, _), _)| p == patient)
                .map(|(&k, &v)| (k, v))
                .collect();
            for ((p, purpose, recipient), pseudonym) in mine {
                entries.forward.remove(&(p, purpose, recipient));
                entries.reverse.remove(&(purpose, recipient, pseudonym));
                removed += 1;
            }
        }
        self.epochs.retain(|_, entries| !entries.reverse.is_empty());
        self.len -= removed;
        removed
    }

    /// The epochs that have entries, in order.
    pub fn epochs(&self) -> impl Iterator<Item = Epoch> + '_ {
        self.epochs.keys().copied()
    }
}

impl fmt::Debug for LinkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkIndex")
            .field("epochs", &self.epochs.len())
            .field("entries", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(e: u64) -> Context {
        Context::new(
            Epoch::new(e),
            PurposeOfUse::Treatment,
            Recipient::from_bytes([9; 32]),
        )
    }

    #[test]
    fn insert_lookup_remove() {
        let mut ix = LinkIndex::new();
        let (p1, p2) = (
            PatientHandle::from_bytes([1; 32]),
            PatientHandle::from_bytes([2; 32]),
        );
        let (a, b) = (
            Pseudonym::from_bytes([0xa; 32]),
            Pseudonym::from_bytes([0xb; 32]),
        );
        ix.insert(&ctx(1), a, p1).unwrap();
        ix.insert(&ctx(1), a, p1).unwrap(); // idempotent
        assert_eq!(ix.insert(&ctx(1), a, p2), Err(PseudonymError::Collision));
        assert_eq!(ix.insert(&ctx(1), b, p1), Err(PseudonymError::Collision));
        ix.insert(&ctx(1), b, p2).unwrap();
        ix.insert(&ctx(2), a, p2).unwrap();
        ix.insert(&ctx(3), b, p1).unwrap();
        assert_eq!(ix.len(), 4);
        assert_eq!(ix.lookup(&a, &ctx(1)), Some(p1));
        assert_eq!(ix.lookup(&a, &ctx(2)), Some(p2));
        assert_eq!(ix.lookup(&a, &ctx(3)), None);
        assert_eq!(ix.issued(&p1, &ctx(3)), Some(b));
        assert_eq!(ix.remove_patient(&p1), 2);
        assert_eq!(ix.len(), 2);
        assert_eq!(
            ix.epochs().collect::<Vec<_>>(),
            vec![Epoch::new(1), Epoch::new(2)]
        );
        assert_eq!(ix.remove_epochs(Epoch::new(0)..=Epoch::new(1)), 1);
        assert_eq!(ix.lookup(&b, &ctx(1)), None);
        assert_eq!(ix.len(), 1);
        #[allow(clippy::reversed_empty_ranges)]
        let none = ix.remove_epochs(Epoch::new(5)..=Epoch::new(1));
        assert_eq!(none, 0);
        assert_eq!(format!("{ix:?}"), "LinkIndex { epochs: 1, entries: 1 }");
    }
}
