//! The vocabulary of consent: names, actions, categories of data, and small sets of them.

use core::fmt;
use core::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::codec::BoundedString;
use crate::purpose::PurposeOfUse;
/// The longest organisation name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The longest reason (for a rejection, revocation, termination or break-glass), in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// The longest group label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// A public organisation name (providers, researchers, auditors, authorities).
pub type Name = BoundedString<MAX_NAME_LEN>;
/// A free-text reason, recorded with the operation that states it.
pub type Reason = BoundedString<MAX_REASON_LEN>;
/// A group's label, chosen by the patient.
pub type Label = BoundedString<MAX_LABEL_LEN>;

/// An enum whose values can be members of an [`EnumSet`].
pub trait SetMember: Copy + fmt::Debug + 'static {
    /// Every value, in encoding order (at most 32).
    const ALL: &'static [Self];
    /// The value's position in [`ALL`](Self::ALL).
    fn index(self) -> u32;
}

/// A set of values of a small enum (actions, purposes, categories), as a bit set.
///
/// Encoded as a `u32` bit mask; a mask with a bit for no known value fails to decode.
pub struct EnumSet<T> {
    bits: u32,
    _member: PhantomData<fn() -> T>,
}

impl<T: SetMember> EnumSet<T> {
    const MASK: u32 = if T::ALL.len() >= 32 {
        u32::MAX
    } else {
        (1u32 << T::ALL.len()) - 1
    };

    /// The empty set.
    pub const fn new() -> Self {
        Self {
            bits: 0,
            _member: PhantomData,
        }
    }

    /// The set of every value.
    pub const fn all() -> Self {
        Self {
            bits: Self::MASK,
            _member: PhantomData,
        }
    }

    /// The set of `items`.
    pub fn of(items: &[T]) -> Self {
        items.iter().fold(Self::new(), |s, &t| s.with(t))
    }

    /// The set with `item` added.
    #[must_use]
    pub fn with(mut self, item: T) -> Self {
        self.bits |= 1 << item.index();
        self
    }

    /// Whether `item` is a member.
    #[inline]
    pub fn contains(&self, item: T) -> bool {
        self.bits & (1 << item.index()) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// The number of members.
    pub const fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether every member of `self` is a member of `other`.
    pub const fn is_subset(&self, other: &Self) -> bool {
        self.bits & !other.bits == 0
    }

    /// The members, in encoding order.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        T::ALL.iter().copied().filter(|t| self.contains(*t))
    }
}

impl<T: SetMember> FromIterator<T> for EnumSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        iter.into_iter().fold(Self::new(), |s, t| s.with(t))
    }
}

impl<T> Clone for EnumSet<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for EnumSet<T> {}
impl<T> PartialEq for EnumSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}
impl<T> Eq for EnumSet<T> {}
impl<T> core::hash::Hash for EnumSet<T> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.bits.hash(state);
    }
}
impl<T: SetMember> Default for EnumSet<T> {
    fn default() -> Self {
        Self::new()
    }
}
impl<T: SetMember> fmt::Debug for EnumSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<T> Serialize for EnumSet<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.bits)
    }
}

impl<'de, T: SetMember> Deserialize<'de> for EnumSet<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bits = u32::deserialize(d)?;
        if bits & !Self::MASK != 0 {
            return Err(serde::de::Error::custom(
                "set has a member this build does not know",
            ));
        }
        Ok(Self {
            bits,
            _member: PhantomData,
        })
    }
}

/// What a viewer does with a record (FHIR Consent's `provision.action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Action {
    /// Read the record (FHIR `access`).
    Read,
    /// Pass the record on to someone else (FHIR `disclose`).
    Disclose,
}

impl Action {
    /// Every action, in encoding order.
    pub const ALL: [Action; 2] = [Action::Read, Action::Disclose];
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Disclose => "disclose",
        })
    }
}

impl SetMember for Action {
    const ALL: &'static [Self] = &Action::ALL;
    fn index(self) -> u32 {
        self as u32
    }
}

impl SetMember for PurposeOfUse {
    const ALL: &'static [Self] = &PurposeOfUse::ALL;
    fn index(self) -> u32 {
        self as u32
    }
}

/// The kind of data a record holds (FHIR Consent's `provision.class`).
///
/// The variant order is part of the encoding; new categories are only ever appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Category {
    /// Anything not covered by another category.
    General,
    /// Laboratory results.
    Laboratory,
    /// Imaging studies and reports.
    Imaging,
    /// Medications and prescriptions.
    Medication,
    /// Diagnoses and problem lists.
    Diagnosis,
    /// Procedures and surgery.
    Procedure,
    /// Immunisations.
    Immunization,
    /// Clinical notes and letters.
    ClinicalNote,
    /// Mental health (often given extra protection).
    MentalHealth,
    /// Sexual and reproductive health.
    SexualHealth,
    /// Genomic data.
    Genomic,
    /// Substance use treatment.
    SubstanceUse,
}

impl Category {
    /// Every category, in encoding order.
    pub const ALL: [Category; 12] = [
        Category::General,
        Category::Laboratory,
        Category::Imaging,
        Category::Medication,
        Category::Diagnosis,
        Category::Procedure,
        Category::Immunization,
        Category::ClinicalNote,
        Category::MentalHealth,
        Category::SexualHealth,
        Category::Genomic,
        Category::SubstanceUse,
    ];
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::General => "general",
            Category::Laboratory => "laboratory",
            Category::Imaging => "imaging",
            Category::Medication => "medication",
            Category::Diagnosis => "diagnosis",
            Category::Procedure => "procedure",
            Category::Immunization => "immunization",
            Category::ClinicalNote => "clinical note",
            Category::MentalHealth => "mental health",
            Category::SexualHealth => "sexual health",
            Category::Genomic => "genomic",
            Category::SubstanceUse => "substance use",
        })
    }
}

impl SetMember for Category {
    const ALL: &'static [Self] = &Category::ALL;
    fn index(self) -> u32 {
        self as u32
    }
}

/// A set of [`Action`]s.
pub type ActionSet = EnumSet<Action>;
/// A set of [`PurposeOfUse`]s.
pub type PurposeSet = EnumSet<PurposeOfUse>;
/// A set of [`Category`]s.
pub type CategorySet = EnumSet<Category>;
