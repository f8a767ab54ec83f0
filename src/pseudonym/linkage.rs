//! A linkage experiment an auditor can run: can an adversary holding two windows' published
//! data link the pseudonyms of one window to those of the other?
//!
//! Each round makes a synthetic population of `n` patients (birth date, five-digit ZIP code,
//! gender), enrols them in a fresh backend with fresh secrets from the operating system, and
//! publishes two releases, one per epoch (same purpose and recipient): every patient's
//! pseudonym with their quasi-identifiers generalised as configured ([`QuasiRelease`]), rows
//! shuffled. The adversary sees both releases and, for each row of the first, guesses which row
//! of the second is the same patient. Two adversaries are run:
//!
//! * **pseudonym bits only** ([`nearest_hamming_attack`] without quasi-identifiers): the
//!   second-window pseudonym nearest in Hamming distance. This exploits any bit-level relation
//!   between one patient's pseudonyms (a static pseudonym, a shared prefix, a few flipped bits);
//!   against pseudorandom pseudonyms no strategy does better than chance, `1/n`.
//! * **quasi-identifiers and pseudonym bits**: the nearest pseudonym among the rows whose
//!   published quasi-identifiers equal the row's. Generalised quasi-identifiers are stable
//!   across windows, so this adversary beats `1/n` whatever the pseudonyms are; its baseline is
//!   what the quasi-identifiers alone give, `Σ 1/|class|` over the rows (a uniform guess inside
//!   the class). Pseudonyms leak nothing when its accuracy is indistinguishable from that
//!   baseline; how far the baseline is above `1/n` is the mosaic risk of the release itself.
//!
//! Each result has the number of correct guesses, the accuracy with a 95 % Wilson interval,
//! the baseline, and a two-sided z-test of the correct count against the baseline (the count
//! of correct guesses under the null hypothesis has mean `Σ p_i` and variance
//! `Σ p_i (1 - p_i)` with `p_i = 1/|candidates_i|`).
//!
//! ```
//! use medledger::pseudonym::linkage::{LinkageExperiment, QuasiRelease};
//!
//! let report = LinkageExperiment::new(100, 10)
//!     .release(QuasiRelease::SafeHarbor)
//!     .run()?;
//! assert!((report.pseudonyms_only.baseline() - 1.0 / 100.0).abs() < 1e-12);
//! assert!(report.pseudonyms_only.p_value() > 1e-6); // indistinguishable from chance
//! println!("{report}");
//! # Ok::<(), medledger::pseudonym::PseudonymError>(())
//! ```
//!
//! The population is synthetic (uniform birth dates over a century, ZIP areas of skewed
//! sizes), so the quasi-identifier figures illustrate the method rather than measure any real
//! data set; the pseudonym figures do not depend on the population.

use core::fmt;
use std::collections::BTreeMap;

use super::generalize::{
    self, AdministrativeGender, CivilDate, QuasiIdentifiers, ZipGeneralizer,
    SAFE_HARBOR_RESTRICTED_ZIP3,
};
use super::{
    Context, DerivedBackend, Epoch, PatientHandle, Pseudonym, PseudonymBackend, PseudonymError,
    RandomTokenBackend, Recipient, Scheme,
};
use crate::purpose::PurposeOfUse;

/// Which backend issues the pseudonyms under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkageBackend {
    /// [`DerivedBackend`] with [`Scheme::KeyedHash`].
    KeyedHash,
    /// [`DerivedBackend`] with [`Scheme::Ed25519`].
    Ed25519,
    /// [`RandomTokenBackend`].
    RandomToken,
}

impl fmt::Display for LinkageBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KeyedHash => "keyed-hash",
            Self::Ed25519 => "ed25519",
            Self::RandomToken => "random-token",
        })
    }
}

/// What is published next to each pseudonym.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuasiRelease {
    /// Nothing: pseudonyms only.
    None,
    /// Birth year (90+ grouped), three-digit ZIP (restricted areas as `000`) and gender.
    SafeHarbor,
    /// [`SafeHarbor`](Self::SafeHarbor), with the quasi-identifiers of rows in classes smaller
    /// than `k` withheld.
    SafeHarborSuppressedBelow(usize),
}

impl fmt::Display for QuasiRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("pseudonyms only"),
            Self::SafeHarbor => f.write_str("Safe Harbor quasi-identifiers"),
            Self::SafeHarborSuppressedBelow(k) => {
                write!(
                    f,
                    "Safe Harbor quasi-identifiers, classes under {k} suppressed"
                )
            }
        }
    }
}

/// One published row: a pseudonym and the quasi-identifiers published with it (`None` when
/// nothing, or a suppressed value, is published).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishedRow {
    /// The pseudonym.
    pub pseudonym: Pseudonym,
    /// The published quasi-identifiers.
    pub quasi: Option<QuasiIdentifiers>,
}

fn words(p: &Pseudonym) -> [u64; 4] {
    let b = p.as_bytes();
    let mut w = [0u64; 4];
    for (i, c) in b.chunks_exact(8).enumerate() {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        w[i] = u64::from_le_bytes(a);
    }
    w
}

fn hamming(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// For each row of `first`, the index of the row of `second` guessed to be the same patient:
/// the candidate whose pseudonym is nearest in Hamming distance (the first such in `second`'s
/// order). Candidates are every row of `second`, or with `use_quasi` those whose published
/// quasi-identifiers equal the row's. `None` when there is no candidate.
pub fn nearest_hamming_attack(
    first: &[PublishedRow],
    second: &[PublishedRow],
    use_quasi: bool,
) -> Vec<Option<usize>> {
    let second_words: Vec<[u64; 4]> = second.iter().map(|r| words(&r.pseudonym)).collect();
    let all: Vec<usize> = (0..second.len()).collect();
    let mut by_quasi: BTreeMap<Option<QuasiIdentifiers>, Vec<usize>> = BTreeMap::new();
    if use_quasi {
        for (j, r) in second.iter().enumerate() {
            by_quasi.entry(r.quasi).or_default().push(j);
        }
    }
    first
        .iter()
        .map(|row| {
            let candidates: &[usize] = if use_quasi {
                by_quasi.get(&row.quasi).map_or(&[], Vec::as_slice)
            } else {
                &all
            };
            let w = words(&row.pseudonym);
            candidates
                .iter()
                .min_by_key(|&&j| hamming(&w, &second_words[j]))
                .copied()
        })
        .collect()
}

/// An adversary's score over all rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttackResult {
    /// Guesses made (one per first-window row that had a candidate).
    pub guesses: u64,
    /// Correct guesses.
    pub correct: u64,
    /// Expected correct guesses if pseudonyms carried no information (`Σ p_i`).
    pub expected: f64,
    /// Variance of the correct count under that hypothesis (`Σ p_i (1 - p_i)`).
    pub variance: f64,
}

/// The two-sided 95 % normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

impl AttackResult {
    fn new() -> Self {
        Self {
            guesses: 0,
            correct: 0,
            expected: 0.0,
            variance: 0.0,
        }
    }

    /// Share of correct guesses.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.guesses)
    }

    /// The accuracy expected if pseudonyms carried no information.
    pub fn baseline(&self) -> f64 {
        if self.guesses == 0 {
            0.0
        } else {
            self.expected / self.guesses as f64
        }
    }

    /// The 95 % Wilson score interval of the accuracy.
    pub fn ci95(&self) -> (f64, f64) {
        if self.guesses == 0 {
            return (0.0, 1.0);
        }
        let n = self.guesses as f64;
        let p = self.accuracy();
        let z2 = Z95 * Z95;
        let denom = 1.0 + z2 / n;
        let centre = (p + z2 / (2.0 * n)) / denom;
        let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
        ((centre - half).max(0.0), (centre + half).min(1.0))
    }

    /// The z statistic of the correct count against the baseline.
    pub fn z(&self) -> f64 {
        let diff = self.correct as f64 - self.expected;
        if self.variance > 0.0 {
            diff / self.variance.sqrt()
        } else if diff.abs() < 1e-9 {
            0.0
        } else {
            f64::INFINITY.copysign(diff)
        }
    }

    /// The two-sided p-value of [`z`](Self::z) (normal approximation): small values mean the
    /// adversary does better (or worse) than the baseline.
    pub fn p_value(&self) -> f64 {
        erfc(self.z().abs() / core::f64::consts::SQRT_2)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The complementary error function (Chebyshev fit, relative error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// What [`LinkageExperiment::run`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkageReport {
    /// Patients per round (`n`).
    pub patients: usize,
    /// Rounds run.
    pub rounds: usize,
    /// The backend tested.
    pub backend: LinkageBackend,
    /// What was published with the pseudonyms.
    pub release: QuasiRelease,
    /// The adversary using pseudonym bits only; its baseline is `1/n`.
    pub pseudonyms_only: AttackResult,
    /// The adversary using the published quasi-identifiers and pseudonym bits; its baseline is
    /// what the quasi-identifiers alone give.
    pub with_quasi_identifiers: AttackResult,
    /// The smallest equivalence class of published quasi-identifiers over all rounds (the
    /// release's k-anonymity).
    pub smallest_class: usize,
    /// Share of rows whose published quasi-identifiers are unique in their release.
    pub unique_share: f64,
    /// The accuracy a quasi-identifier-only adversary would reach if the raw values (birth
    /// date, five-digit ZIP, gender) were published instead: the mosaic effect generalisation
    /// prevents.
    pub raw_quasi_baseline: f64,
}

impl fmt::Display for LinkageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "linkage experiment: n = {} patients, {} rounds, {} pseudonyms, release: {}",
            self.patients, self.rounds, self.backend, self.release
        )?;
        writeln!(
            f,
            "  {:<34} {:>9} {:>8} {:>10} {:>23} {:>10} {:>7} {:>7}",
            "adversary", "guesses", "correct", "accuracy", "95% CI", "baseline", "z", "p"
        )?;
        for (name, r) in [
            ("pseudonym bits only", &self.pseudonyms_only),
            (
                "quasi-identifiers + pseudonym bits",
                &self.with_quasi_identifiers,
            ),
        ] {
            let (lo, hi) = r.ci95();
            writeln!(
                f,
                "  {:<34} {:>9} {:>8} {:>10.3e} {:>23} {:>10.3e} {:>7.2} {:>7.3}",
                name,
                r.guesses,
                r.correct,
                r.accuracy(),
                format!("[{lo:.3e}, {hi:.3e}]"),
                r.baseline(),
                r.z(),
                r.p_value()
            )?;
        }
        writeln!(
            f,
            "  chance 1/n = {:.3e}; published quasi-identifiers: smallest class {}, {:.1}% of rows unique",
            1.0 / self.patients.max(1) as f64,
            self.smallest_class,
            100.0 * self.unique_share
        )?;
        write!(
            f,
            "  raw quasi-identifiers (birth date, 5-digit ZIP, gender) would give a quasi-identifier-only adversary {:.3} accuracy",
            self.raw_quasi_baseline
        )
    }
}

/// A configured experiment; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkageExperiment {
    patients: usize,
    rounds: usize,
    seed: u64,
    backend: LinkageBackend,
    release: QuasiRelease,
}

/// SplitMix64: a small seeded generator for the synthetic population and the shuffles (never
/// for keys, which come from the operating system).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next();
            if x < zone {
                return x % n;
            }
        }
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// One synthetic patient's raw quasi-identifiers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RawQuasi {
    birth: CivilDate,
    zip5: [u8; 5],
    gender: AdministrativeGender,
}

/// The release date both windows generalise against.
const REFERENCE: CivilDate = CivilDate::from_parts_unchecked(2027, 1, 1);

/// Synthetic ZIP areas: 40 three-digit prefixes, three of them restricted, sizes skewed
/// (weight 1/rank).
fn zip_areas(rng: &mut SplitMix) -> Vec<([u8; 3], u64)> {
    let mut areas: Vec<[u8; 3]> = SAFE_HARBOR_RESTRICTED_ZIP3[..3]
        .iter()
        .map(|z| {
            let b = z.as_bytes();
            [b[0], b[1], b[2]]
        })
        .collect();
    while areas.len() < 40 {
        let n = 100 + rng.below(900);
        let d = [
            b'0' + (n / 100) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
        ];
        if !areas.contains(&d) {
            areas.push(d);
        }
    }
    rng.shuffle(&mut areas);
    areas
        .into_iter()
        .enumerate()
        .map(|(rank, a)| (a, 100_000 / (rank as u64 + 1)))
        .collect()
}

fn population(n: usize, rng: &mut SplitMix) -> Vec<RawQuasi> {
    let areas = zip_areas(rng);
    let total: u64 = areas.iter().map(|(_, w)| w).sum();
    (0..n)
        .map(|_| {
            // Birth dates over the century before the reference date (days 1 to 28, so that
            // every date exists).
            let birth = loop {
                let year = REFERENCE.year() - 1 - rng.below(100) as u16;
                let (month, day) = (1 + rng.below(12) as u8, 1 + rng.below(28) as u8);
                if let Ok(d) = CivilDate::new(year, month, day) {
                    break d;
                }
            };
            let mut pick = rng.below(total);
            let mut prefix = areas[0].0;
            for (a, w) in &areas {
                if pick < *w {
                    prefix = *a;
                    break;
                }
                pick -= w;
            }
            let tail = rng.below(100);
            let zip5 = [
                prefix[0],
                prefix[1],
                prefix[2],
                b'0' + (tail / 10) as u8,
                b'0' + (tail % 10) as u8,
            ];
            let gender = match rng.below(200) {
                0 => AdministrativeGender::Other,
                1 => AdministrativeGender::Unknown,
                x if x % 2 == 0 => AdministrativeGender::Female,
                _ => AdministrativeGender::Male,
            };
            RawQuasi {
                birth,
                zip5,
                gender,
            }
        })
        .collect()
}

/// The published quasi-identifiers of each row; a value that cannot be generalised is withheld.
fn generalise(raw: &[RawQuasi], release: QuasiRelease) -> Vec<Option<QuasiIdentifiers>> {
    let zips = ZipGeneralizer::default();
    let safe_harbor = raw.iter().map(|r| {
        let zip = core::str::from_utf8(&r.zip5).ok()?;
        Some(QuasiIdentifiers {
            birth: generalize::generalize_birth(r.birth, REFERENCE).ok()?,
            zip3: zips.generalize(zip).ok()?,
            gender: r.gender,
        })
    });
    match release {
        QuasiRelease::None => vec![None; raw.len()],
        QuasiRelease::SafeHarbor => safe_harbor.collect(),
        QuasiRelease::SafeHarborSuppressedBelow(k) => {
            let mut out: Vec<Option<QuasiIdentifiers>> = safe_harbor.collect();
            let mut suppress = generalize::below_k(&out, k);
            // The withheld rows form a class of their own: if it is non-empty but under k,
            // withhold the next smallest classes too.
            let mut classes: Vec<(usize, Option<QuasiIdentifiers>)> =
                generalize::equivalence_classes(&out)
                    .into_iter()
                    .filter(|(q, c)| q.is_some() && *c >= k)
                    .map(|(q, c)| (c, *q))
                    .collect();
            classes.sort();
            let mut next = classes.into_iter();
            while !suppress.is_empty() && suppress.len() < k {
                let Some((_, q)) = next.next() else { break };
                suppress.extend(
                    out.iter()
                        .enumerate()
                        .filter(|(_, r)| **r == q)
                        .map(|(i, _)| i),
                );
            }
            for i in suppress {
                out[i] = None;
            }
            out
        }
    }
}

impl LinkageExperiment {
    /// `patients` patients per round, `rounds` rounds; keyed-hash pseudonyms, a Safe Harbor
    /// release and seed 1 by default.
    pub fn new(patients: usize, rounds: usize) -> Self {
        Self {
            patients,
            rounds,
            seed: 1,
            backend: LinkageBackend::KeyedHash,
            release: QuasiRelease::SafeHarbor,
        }
    }

    /// The seed of the synthetic population and the shuffles (keys always come from the
    /// operating system).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The backend under test.
    pub fn backend(mut self, backend: LinkageBackend) -> Self {
        self.backend = backend;
        self
    }

    /// What is published with the pseudonyms.
    pub fn release(mut self, release: QuasiRelease) -> Self {
        self.release = release;
        self
    }

    fn fresh_backend(&self) -> Box<dyn PseudonymBackend> {
        match self.backend {
            LinkageBackend::KeyedHash => Box::new(DerivedBackend::new(Scheme::KeyedHash)),
            LinkageBackend::Ed25519 => Box::new(DerivedBackend::new(Scheme::Ed25519)),
            LinkageBackend::RandomToken => Box::new(RandomTokenBackend::new()),
        }
    }

    /// Runs the experiment. Cost: `rounds · n²` Hamming distances, plus `2 · rounds · n`
    /// pseudonyms.
    ///
    /// # Errors
    ///
    /// [`PseudonymError::Randomness`] if the operating system's generator fails.
    pub fn run(&self) -> Result<LinkageReport, PseudonymError> {
        let n = self.patients;
        let mut rng = SplitMix(self.seed);
        let study = Recipient::group("linkage experiment");
        let windows = [
            Context::new(Epoch::new(1), PurposeOfUse::Research, study),
            Context::new(Epoch::new(2), PurposeOfUse::Research, study),
        ];
        let mut only = AttackResult::new();
        let mut with_quasi = AttackResult::new();
        let mut smallest_class = usize::MAX;
        let (mut unique_rows, mut raw_classes) = (0usize, 0usize);

        for _ in 0..self.rounds {
            let raw = population(n, &mut rng);
            let quasi = generalise(&raw, self.release);
            raw_classes += generalize::equivalence_classes(&raw).len();
            let classes = generalize::equivalence_classes(&quasi);
            smallest_class = smallest_class.min(classes.values().copied().min().unwrap_or(0));
            unique_rows += classes.values().filter(|&&c| c == 1).count();

            let mut backend = self.fresh_backend();
            let mut releases: [Vec<(usize, PublishedRow)>; 2] = [Vec::new(), Vec::new()];
            for (i, q) in quasi.iter().enumerate() {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let patient = PatientHandle::from_bytes(h);
                backend.enroll(patient)?;
                for (w, ctx) in windows.iter().enumerate() {
                    releases[w].push((
                        i,
                        PublishedRow {
                            pseudonym: backend.pseudonym(&patient, ctx)?,
                            quasi: *q,
                        },
                    ));
                }
            }
            for r in &mut releases {
                rng.shuffle(r);
            }
            let [first, second] = releases;
            let truth: Vec<usize> = {
                // Position in the second release of each patient.
                let mut pos = vec![0usize; n];
                for (j, (patient, _)) in second.iter().enumerate() {
                    pos[*patient] = j;
                }
                first.iter().map(|(patient, _)| pos[*patient]).collect()
            };
            let first_rows: Vec<PublishedRow> = first.iter().map(|(_, r)| *r).collect();
            let second_rows: Vec<PublishedRow> = second.iter().map(|(_, r)| *r).collect();
            let mut class_size: BTreeMap<Option<QuasiIdentifiers>, usize> = BTreeMap::new();
            for r in &second_rows {
                *class_size.entry(r.quasi).or_insert(0) += 1;
            }
            for (use_quasi, result) in [(false, &mut only), (true, &mut with_quasi)] {
                let guesses = nearest_hamming_attack(&first_rows, &second_rows, use_quasi);
                for (i, guess) in guesses.into_iter().enumerate() {
                    let Some(j) = guess else { continue };
                    result.guesses += 1;
                    result.correct += u64::from(j == truth[i]);
                    let true_row = &second_rows[truth[i]];
                    let m = if use_quasi {
                        // The true partner is a candidate only if its published value matches.
                        (true_row.quasi == first_rows[i].quasi)
                            .then(|| class_size.get(&first_rows[i].quasi).copied())
                            .flatten()
                    } else {
                        Some(n)
                    };
                    if let Some(m) = m {
                        let p = 1.0 / m as f64;
                        result.expected += p;
                        result.variance += p * (1.0 - p);
                    }
                }
            }
        }
        let rows = (n * self.rounds).max(1) as f64;
        Ok(LinkageReport {
            patients: n,
            rounds: self.rounds,
            backend: self.backend,
            release: self.release,
            pseudonyms_only: only,
            with_quasi_identifiers: with_quasi,
            smallest_class: if smallest_class == usize::MAX {
                0
            } else {
                smallest_class
            },
            unique_share: unique_rows as f64 / rows,
            raw_quasi_baseline: raw_classes as f64 / rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (1.0, 0.157_299_207_050_285),
            (3.0, 2.209_049_699_858_544e-5),
            (-1.0, 1.842_700_792_949_715),
        ] {
            let got = erfc(x);
            assert!((got - want).abs() <= 2e-7 * want, "{x}: {got} vs {want}");
        }
        // The two-sided p-value at the 95 % quantile.
        let at_z95 = AttackResult {
            guesses: 1,
            correct: 0,
            expected: Z95,
            variance: 1.0,
        };
        assert!((at_z95.p_value() - 0.05).abs() < 1e-7);
    }

    #[test]
    fn wilson_interval_and_z() {
        let r = AttackResult {
            guesses: 1000,
            correct: 100,
            expected: 100.0,
            variance: 90.0,
        };
        let (lo, hi) = r.ci95();
        assert!(
            (lo - 0.0829).abs() < 1e-3 && (hi - 0.1202).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(r.z(), 0.0);
        assert!((r.p_value() - 1.0).abs() < 1e-6);
        let certain = AttackResult {
            guesses: 10,
            correct: 10,
            expected: 10.0,
            variance: 0.0,
        };
        assert_eq!(certain.z(), 0.0);
        let empty = AttackResult::new();
        assert_eq!(empty.accuracy(), 0.0);
        assert_eq!(empty.ci95(), (0.0, 1.0));
    }

    /// The adversary has power: it links broken pseudonym schemes perfectly.
    #[test]
    fn adversary_breaks_static_and_leaky_pseudonyms() {
        let mut rng = SplitMix(9);
        let n = 200;
        let rows: Vec<PublishedRow> = (0..n)
            .map(|_| {
                let mut b = [0u8; 32];
                for c in b.chunks_exact_mut(8) {
                    c.copy_from_slice(&rng.next().to_le_bytes());
                }
                PublishedRow {
                    pseudonym: Pseudonym::from_bytes(b),
                    quasi: None,
                }
            })
            .collect();
        // Static pseudonyms, reordered.
        let mut second = rows.clone();
        second.reverse();
        let g = nearest_hamming_attack(&rows, &second, false);
        assert!(g.iter().enumerate().all(|(i, &j)| j == Some(n - 1 - i)));
        // Pseudonyms with 20 of 256 bits flipped between windows.
        let leaky: Vec<PublishedRow> = rows
            .iter()
            .map(|r| {
                let mut b = r.pseudonym.to_bytes();
                for byte in b.iter_mut().take(20) {
                    *byte ^= 1;
                }
                PublishedRow {
                    pseudonym: Pseudonym::from_bytes(b),
                    quasi: None,
                }
            })
            .collect();
        let g = nearest_hamming_attack(&rows, &leaky, false);
        let hits = g
            .iter()
            .enumerate()
            .filter(|(i, j)| **j == Some(*i))
            .count();
        assert_eq!(hits, n);
    }

    #[test]
    fn experiment_small_n_is_at_chance() {
        for backend in [
            LinkageBackend::KeyedHash,
            LinkageBackend::Ed25519,
            LinkageBackend::RandomToken,
        ] {
            let r = LinkageExperiment::new(60, 20)
                .backend(backend)
                .seed(7)
                .run()
                .unwrap();
            assert_eq!(r.pseudonyms_only.guesses, 60 * 20);
            assert!((r.pseudonyms_only.baseline() - 1.0 / 60.0).abs() < 1e-12);
            assert!(r.pseudonyms_only.p_value() > 1e-6, "{r}");
            assert!(r.with_quasi_identifiers.p_value() > 1e-6, "{r}");
            assert!(r.with_quasi_identifiers.baseline() >= r.pseudonyms_only.baseline());
        }
    }

    #[test]
    fn suppression_raises_k() {
        let plain = LinkageExperiment::new(300, 2).run().unwrap();
        let k5 = LinkageExperiment::new(300, 2)
            .release(QuasiRelease::SafeHarborSuppressedBelow(5))
            .run()
            .unwrap();
        assert!(plain.smallest_class < 5);
        assert!(k5.smallest_class >= 5, "{k5}");
        assert!(k5.with_quasi_identifiers.baseline() < plain.with_quasi_identifiers.baseline());
        let none = LinkageExperiment::new(50, 2)
            .release(QuasiRelease::None)
            .run()
            .unwrap();
        assert_eq!(none.smallest_class, 50);
        assert!((none.with_quasi_identifiers.baseline() - 1.0 / 50.0).abs() < 1e-12);
        assert!(plain.raw_quasi_baseline > 0.9, "{plain}");
    }
}
