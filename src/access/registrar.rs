//! The registrar (MedRec's Registrar Contract): accounts, roles, identities, keys and
//! provider certification.
//!
//! An account is the Ed25519 key it was first seen with ([`AccountId`]); registering gives it a
//! [`Role`] and an [`Identity`]. A patient's real identity never goes on chain: the patient
//! hides it under a secret salt it keeps ([`BlindedIdentity`]) and registers the
//! [`IdentityCommitment`] binding that blinded identity to its own account, with the blinded
//! identity beside it so the chain can check the binding
//! ([`AccessOp::register_patient`] builds the operation). Other roles register a public
//! organisation name. Both directions can be looked up ([`AccessState::account_by_identity`],
//! [`AccessState::identity_of`]).
//!
//! Because the commitment names the account, nobody can take a patient's identity by copying
//! its registration from the network and getting it on chain first: signed by another key the
//! copy is refused ([`AccessError::CommitmentNotBound`]), and the patient's own registration
//! still goes through. Binding the copied blinded identity to another account gives a
//! commitment of its own, which only the salt's holder could ever open.
//!
//! Keys rotate ([`AccessOp::RotateKey`]): the old key signs, the new key proves possession; the
//! history is kept so that [`State::key_at`](crate::state::State::key_at) tells which key an
//! account had at any height.
//! Nonces stay per account across rotations.
//!
//! Health authorities are set in the genesis configuration
//! ([`ChainBuilder::authority`](crate::chain::ChainBuilder::authority)); they certify providers.
//! Only certified providers may open relationships, and only emergency-certified ones may break
//! glass.
//!
//! ```
//! use medledger::access::{BlindedIdentity, IdentityCommitment};
//! use medledger::tx::Keypair;
//!
//! let (patient, other) = (Keypair::generate(), Keypair::generate());
//! let salt = [7u8; 32]; // kept by the patient, never published
//! let c = IdentityCommitment::new("NHS 943 476 5919", &salt, patient.account());
//! let blinded = BlindedIdentity::new("NHS 943 476 5919", &salt);
//! assert_eq!(c, IdentityCommitment::bind(blinded, patient.account()));
//! // Another salt, or another account, gives another commitment.
//! assert_ne!(c, IdentityCommitment::new("NHS 943 476 5919", &[8; 32], patient.account()));
//! assert_ne!(c, IdentityCommitment::bind(blinded, other.account()));
//! ```

use core::fmt;

use serde::{Deserialize, Serialize};

use super::{AccessError, AccessEvent, AccessOp, AccessState, Exec, Name, Reason, Stamp};
use crate::codec;
use crate::hash::{domain, hash_newtype, AccountId, ChainId};
use crate::state::{AccountState, KeyState, Table};
use crate::tx::{Keypair, PublicKey, Signature};

hash_newtype! {
    /// A person's real identity hidden under a 32-byte secret salt (BLAKE3 in the
    /// [`domain::IDENTITY_BLIND`] domain over the salt and the identity).
    ///
    /// Without the salt it reveals nothing about the identity, not even to someone who guesses
    /// it. It names no account: a patient registers the [`IdentityCommitment`] binding it to its
    /// own.
    BlindedIdentity
}

impl BlindedIdentity {
    /// `identity` (as the client normalises it, e.g. a national health number without spaces)
    /// blinded with the secret `salt` (32 random bytes the patient keeps).
    pub fn new(identity: &str, salt: &[u8; 32]) -> Self {
        let mut buf = Vec::with_capacity(40 + identity.len());
        codec::encode_body_into(&(salt, identity), &mut buf);
        Self(domain::IDENTITY_BLIND.hash(&buf))
    }
}

hash_newtype! {
    /// A commitment to a person's real identity, bound to the account that registers it: BLAKE3
    /// in the [`domain::IDENTITY_COMMIT`] domain over a [`BlindedIdentity`] and the
    /// [`AccountId`].
    ///
    /// Without the salt, the commitment reveals nothing about the identity; with the salt, its
    /// owner can show which identity it commits to, and for which account. No other account
    /// can register it.
    IdentityCommitment
}

impl IdentityCommitment {
    /// The commitment binding `blinded` to `account`.
    pub fn bind(blinded: BlindedIdentity, account: AccountId) -> Self {
        Self(domain::IDENTITY_COMMIT.hash_parts(&[blinded.as_bytes(), account.as_bytes()]))
    }

    /// The commitment of `account` to `identity` blinded with the secret `salt`:
    /// [`bind`](Self::bind)`(`[`BlindedIdentity::new`]`(identity, salt), account)`.
    pub fn new(identity: &str, salt: &[u8; 32], account: AccountId) -> Self {
        Self::bind(BlindedIdentity::new(identity, salt), account)
    }
}

/// An account's role.
///
/// The variant order is part of the encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Role {
    /// A patient: owns relationships and decides who reads its records.
    Patient,
    /// A provider (hospital, clinic, practitioner): keeps records, opens relationships once
    /// certified.
    Provider,
    /// A researcher: reads records patients grant it.
    Researcher,
    /// An auditor: reads audit trails and records it is granted.
    Auditor,
    /// A health authority, set in the genesis configuration: certifies providers.
    Authority,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Patient => "patient",
            Role::Provider => "provider",
            Role::Researcher => "researcher",
            Role::Auditor => "auditor",
            Role::Authority => "authority",
        })
    }
}

/// The identity an account registers with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Identity {
    /// A patient's salted identity commitment.
    Commitment(IdentityCommitment),
    /// An organisation's public name.
    Organisation(Name),
}

/// An account's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Its role.
    pub role: Role,
    /// Its identity.
    pub identity: Identity,
    /// When it registered.
    pub registered: Stamp,
    /// How many keys it has had (the first included).
    pub keys: u32,
}

/// A provider's certification by an authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certification {
    /// The authority.
    pub by: AccountId,
    /// Whether the provider may break glass.
    pub emergency: bool,
    /// When it was (last) certified.
    pub since: Stamp,
    /// When, by whom and why it was withdrawn.
    pub withdrawn: Option<(Stamp, AccountId, Reason)>,
}

impl Certification {
    /// Whether the certification holds.
    pub fn is_valid(&self) -> bool {
        self.withdrawn.is_none()
    }
}

/// Prefix of the message a new key signs to prove possession.
const POSSESSION_CONTEXT: &[u8] = b"medledger/access/rotate-key/v1:";

/// The message the new key signs in [`AccessOp::RotateKey`]: it names the chain, the account
/// and the key, so it cannot be replayed for another.
pub fn possession_message(chain_id: ChainId, account: AccountId, new_key: PublicKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(POSSESSION_CONTEXT.len() + 96);
    m.extend_from_slice(POSSESSION_CONTEXT);
    m.extend_from_slice(chain_id.as_bytes());
    m.extend_from_slice(account.as_bytes());
    m.extend_from_slice(new_key.as_bytes());
    m
}

impl AccessOp {
    /// The operation that registers `account` (sign it with the account's key) as a patient
    /// with `identity` blinded by the secret `salt`: its [`IdentityCommitment`] and the
    /// [`BlindedIdentity`] the chain checks it against.
    pub fn register_patient(account: AccountId, identity: &str, salt: &[u8; 32]) -> Self {
        let blinded = BlindedIdentity::new(identity, salt);
        AccessOp::Register {
            role: Role::Patient,
            identity: Identity::Commitment(IdentityCommitment::bind(blinded, account)),
            blinded: Some(blinded),
        }
    }

    /// The operation that registers the signer as an organisation (provider, researcher,
    /// auditor) with its public `name`.
    ///
    /// # Errors
    ///
    /// [`AccessError::Empty`] for an empty name, [`AccessError::LimitReached`] for one longer
    /// than [`MAX_NAME_LEN`](super::MAX_NAME_LEN) bytes.
    pub fn register_organisation(role: Role, name: &str) -> Result<Self, AccessError> {
        if name.is_empty() {
            return Err(AccessError::Empty("organisation name"));
        }
        let name = Name::try_from(name).map_err(|_| AccessError::LimitReached {
            what: "organisation name bytes",
            max: super::MAX_NAME_LEN as u64,
        })?;
        Ok(AccessOp::Register {
            role,
            identity: Identity::Organisation(name),
            blinded: None,
        })
    }

    /// The operation that rotates `account`'s key to `new_key` on `chain_id` (sign it with the
    /// current key).
    pub fn rotate_key(chain_id: ChainId, account: AccountId, new_key: &Keypair) -> Self {
        let possession = new_key.sign(&possession_message(chain_id, account, new_key.public()));
        AccessOp::RotateKey {
            new_key: new_key.public(),
            possession,
        }
    }
}

impl Exec<'_> {
    pub(super) fn register(
        &mut self,
        role: Role,
        identity: &Identity,
        blinded: Option<BlindedIdentity>,
        keys: &mut Table<PublicKey, KeyState>,
    ) -> Result<(), AccessError> {
        let account = self.actor();
        if self.s.accounts.get(&account).is_some() {
            return Err(AccessError::AlreadyRegistered(account));
        }
        if role == Role::Authority {
            return Err(AccessError::RoleNotSelfAssignable(role));
        }
        match (role, identity, blinded) {
            (Role::Patient, Identity::Commitment(c), Some(b)) => {
                if *c != IdentityCommitment::bind(b, account) {
                    return Err(AccessError::CommitmentNotBound(account));
                }
            }
            (Role::Patient, _, _) => {
                return Err(AccessError::IdentityKindMismatch {
                    role,
                    expected: "an identity commitment and the blinded identity it binds",
                })
            }
            (_, Identity::Organisation(name), None) if !name.is_empty() => {}
            _ => {
                return Err(AccessError::IdentityKindMismatch {
                    role,
                    expected: "a non-empty organisation name and no blinded identity",
                })
            }
        }
        if let Some(other) = self.s.identities.get(identity) {
            return Err(AccessError::IdentityTaken(*other));
        }
        let at = self.stamp();
        self.s.accounts.insert(
            account,
            AccountRecord {
                role,
                identity: identity.clone(),
                registered: at,
                keys: 1,
            },
        );
        self.s.identities.insert(identity.clone(), account);
        self.s.key_history.insert((account, 0), self.cx.signer);
        if keys.get(&self.cx.signer).is_none() {
            keys.insert(
                self.cx.signer,
                KeyState {
                    account,
                    since: at.height,
                    retired_at: None,
                },
            );
        }
        let patient = (role == Role::Patient).then_some(account);
        self.emit(patient, AccessEvent::Registered { account, role });
        Ok(())
    }

    pub(super) fn rotate_key(
        &mut self,
        new_key: PublicKey,
        possession: &Signature,
        keys: &mut Table<PublicKey, KeyState>,
        accounts: &mut Table<AccountId, AccountState>,
    ) -> Result<(), AccessError> {
        let account = self.actor();
        let record = self.registered(account)?.clone();
        let verifying = new_key
            .verifying_key()
            .map_err(|_| AccessError::BadKey(new_key))?;
        if keys.get(&new_key).is_some()
            || accounts.get(&new_key.account()).is_some()
            || self.s.accounts.get(&new_key.account()).is_some()
        {
            return Err(AccessError::KeyInUse(new_key));
        }
        let message = possession_message(self.cx.chain_id, account, new_key);
        let sig = ed25519_dalek::Signature::from_bytes(&possession.to_bytes());
        verifying
            .verify_strict(&message, &sig)
            .map_err(|_| AccessError::BadPossession)?;
        let old = self.cx.signer;
        let height = self.cx.height;
        keys.update(
            old,
            || KeyState {
                account,
                since: record.registered.height,
                retired_at: None,
            },
            |k| k.retired_at = Some(height),
        );
        keys.insert(
            new_key,
            KeyState {
                account,
                since: height,
                retired_at: None,
            },
        );
        accounts.update(
            account,
            || AccountState {
                next_nonce: 0,
                key: new_key,
            },
            |a| a.key = new_key,
        );
        self.s.key_history.insert((account, record.keys), new_key);
        self.s
            .accounts
            .update(account, || record.clone(), |r| r.keys += 1);
        let patient = (record.role == Role::Patient).then_some(account);
        self.emit(
            patient,
            AccessEvent::KeyRotated {
                account,
                old,
                new: new_key,
            },
        );
        Ok(())
    }

    pub(super) fn certify(
        &mut self,
        provider: AccountId,
        emergency: bool,
    ) -> Result<(), AccessError> {
        let by = self.actor();
        self.require_role(by, Role::Authority)?;
        if let Some(r) = self.s.accounts.get(&provider) {
            if r.role != Role::Provider {
                return Err(AccessError::WrongRole {
                    account: provider,
                    expected: Role::Provider,
                    found: r.role,
                });
            }
        }
        let since = self.stamp();
        self.s.certifications.insert(
            provider,
            Certification {
                by,
                emergency,
                since,
                withdrawn: None,
            },
        );
        self.emit(
            None,
            AccessEvent::ProviderCertified {
                provider,
                by,
                emergency,
            },
        );
        if !emergency {
            self.close_sessions_of(provider)?;
        }
        Ok(())
    }

    pub(super) fn decertify(
        &mut self,
        provider: AccountId,
        reason: &Reason,
    ) -> Result<(), AccessError> {
        let by = self.actor();
        self.require_role(by, Role::Authority)?;
        let mut cert = match self.s.certifications.get(&provider) {
            Some(c) if c.is_valid() => c.clone(),
            _ => return Err(AccessError::NotCertified(provider)),
        };
        cert.withdrawn = Some((self.stamp(), by, reason.clone()));
        self.s.certifications.insert(provider, cert);
        self.emit(
            None,
            AccessEvent::ProviderDecertified {
                provider,
                by,
                reason: reason.clone(),
            },
        );
        self.close_sessions_of(provider)
    }

    /// Checks `provider` is a registered provider with a valid certification; returns it.
    pub(super) fn certified_provider(
        &self,
        provider: AccountId,
    ) -> Result<Certification, AccessError> {
        self.require_role(provider, Role::Provider)?;
        match self.s.certifications.get(&provider) {
            Some(c) if c.is_valid() => Ok(c.clone()),
            _ => Err(AccessError::NotCertified(provider)),
        }
    }
}

impl AccessState {
    /// The registration of `account`.
    pub fn account(&self, account: &AccountId) -> Option<&AccountRecord> {
        self.accounts.get(account)
    }

    /// The account registered with `identity`.
    pub fn account_by_identity(&self, identity: &Identity) -> Option<AccountId> {
        self.identities.get(identity).copied()
    }

    /// The identity `account` registered with.
    pub fn identity_of(&self, account: &AccountId) -> Option<&Identity> {
        self.accounts.get(account).map(|r| &r.identity)
    }

    /// The certification of `provider`, valid or withdrawn.
    pub fn certification(&self, provider: &AccountId) -> Option<&Certification> {
        self.certifications.get(provider)
    }

    /// Every key `account` has had, oldest first.
    pub fn key_history(&self, account: &AccountId) -> Vec<PublicKey> {
        let n = self.accounts.get(account).map_or(0, |r| r.keys);
        (0..n)
            .filter_map(|i| self.key_history.get(&(*account, i)).copied())
            .collect()
    }

    /// The key that signed for `account` in the state after block `height`, given the keys
    /// table of the same state (see [`State::key_at`](crate::state::State::key_at)).
    pub(crate) fn key_at(
        &self,
        keys: &Table<PublicKey, KeyState>,
        account: &AccountId,
        height: u64,
    ) -> Option<PublicKey> {
        let record = self.accounts.get(account)?;
        if record.registered.height > height {
            return None;
        }
        // Keys are stored in rotation order, so their `since` heights never decrease: find how
        // many had started by `height` (several rotations in one block share a height; the last
        // one is in force).
        let since = |i: u32| -> Option<u64> {
            let key = self.key_history.get(&(*account, i))?;
            Some(keys.get(key)?.since)
        };
        let (mut lo, mut hi) = (0u32, record.keys);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if since(mid)? <= height {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        self.key_history.get(&(*account, i)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::{key, name, Cast, Harness};
    use crate::StateError;

    #[test]
    fn register_and_look_up_both_ways() {
        let mut h = Harness::new(&key(1));
        let commitment = IdentityCommitment::new("patient-4", &[9; 32], key(4).account());
        h.register(&key(4), Role::Patient, "patient-4");
        let a = h.access();
        assert_eq!(
            a.account_by_identity(&Identity::Commitment(commitment)),
            Some(key(4).account())
        );
        assert_eq!(
            a.identity_of(&key(4).account()),
            Some(&Identity::Commitment(commitment))
        );
        assert_eq!(a.account(&key(4).account()).unwrap().role, Role::Patient);
        assert_eq!(a.key_history(&key(4).account()), vec![key(4).public()]);
    }

    #[test]
    fn registration_refusals() {
        let mut h = Harness::new(&key(1));
        h.register(&key(4), Role::Patient, "patient-4");
        let org = |role, n: &str| AccessOp::Register {
            role,
            identity: Identity::Organisation(name(n)),
            blinded: None,
        };
        let again = org(Role::Researcher, "Lab");
        assert_eq!(
            h.refused(&key(4), again),
            AccessError::AlreadyRegistered(key(4).account())
        );
        // Someone else claiming the patient's identity commitment: bound to the patient's
        // account, it is refused for any other.
        let steal = AccessOp::register_patient(key(4).account(), "patient-4", &[9; 32]);
        assert_eq!(
            h.refused(&key(5), steal),
            AccessError::CommitmentNotBound(key(5).account())
        );
        let authority = org(Role::Authority, "Rogue Authority");
        assert_eq!(
            h.refused(&key(5), authority),
            AccessError::RoleNotSelfAssignable(Role::Authority)
        );
        let blinded = BlindedIdentity::new("Jane Doe", &[9; 32]);
        let kind_mismatches = [
            // A patient in clear, or without the blinded identity that shows the binding.
            org(Role::Patient, "Jane Doe"),
            AccessOp::Register {
                role: Role::Patient,
                identity: Identity::Commitment(IdentityCommitment::bind(blinded, key(5).account())),
                blinded: None,
            },
            // An organisation with an empty name, or with a blinded identity.
            org(Role::Provider, ""),
            AccessOp::Register {
                role: Role::Provider,
                identity: Identity::Organisation(name("Lab")),
                blinded: Some(blinded),
            },
        ];
        for op in kind_mismatches {
            assert!(matches!(
                h.refused(&key(5), op),
                AccessError::IdentityKindMismatch { .. }
            ));
        }
        let taken_name = org(Role::Provider, "Health Authority");
        assert_eq!(
            h.refused(&key(5), taken_name),
            AccessError::IdentityTaken(key(1).account())
        );
    }

    #[test]
    fn key_rotation_keeps_history_and_retires_the_old_key() {
        let mut h = Harness::new(&key(1));
        let (old, new, newer) = (key(4), key(40), key(41));
        h.register(&old, Role::Patient, "patient-4");
        let registered_at = h.height;
        let account = old.account();
        h.ok(&old, AccessOp::rotate_key(h.chain_id(), account, &new));
        let rotated_at = h.height;
        // The new key signs for the same account, with the account's nonces.
        h.ok(&new, AccessOp::rotate_key(h.chain_id(), account, &newer));
        let second = h.height;
        assert_eq!(h.state.account_of_key(&newer.public()), account);
        assert_eq!(
            h.access().key_history(&account),
            vec![old.public(), new.public(), newer.public()]
        );
        assert_eq!(h.state.key_at(&account, registered_at - 1), None);
        assert_eq!(h.state.key_at(&account, registered_at), Some(old.public()));
        assert_eq!(h.state.key_at(&account, rotated_at - 1), Some(old.public()));
        assert_eq!(h.state.key_at(&account, rotated_at), Some(new.public()));
        assert_eq!(h.state.key_at(&account, second), Some(newer.public()));
        assert_eq!(h.state.key_at(&account, u64::MAX), Some(newer.public()));
        assert_eq!(h.state.account(&account).unwrap().key, newer.public());
        // The retired key can no longer sign.
        let before = h.root();
        let tx = h.sign(
            &old,
            AccessOp::CreateGroup {
                label: "x".try_into().unwrap(),
            },
        );
        let err = h
            .state
            .execute(
                h.chain_id(),
                h.height + 1,
                h.time + 1,
                &[tx.verify().unwrap()],
                false,
                <crate::MedRec as crate::app::Application>::apply,
            )
            .err()
            .unwrap();
        assert!(matches!(err.error, StateError::KeyRetired { .. }));
        assert_eq!(h.root(), before);
    }

    #[test]
    fn key_rotation_refusals() {
        let mut c = Cast::new();
        let account = c.patient.account();
        let chain = c.h.chain_id();
        // A key already opening another account.
        let op = AccessOp::rotate_key(chain, account, &c.specialist);
        assert_eq!(
            c.h.refused(&c.patient, op),
            AccessError::KeyInUse(c.specialist.public())
        );
        // A possession proof made for another account.
        let fresh = key(99);
        let op = AccessOp::rotate_key(chain, c.guardian.account(), &fresh);
        assert_eq!(c.h.refused(&c.patient, op), AccessError::BadPossession);
        // A weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = PublicKey::from_bytes(identity);
        let op = AccessOp::RotateKey {
            new_key: weak,
            possession: Signature::from_bytes([0; 64]),
        };
        assert_eq!(c.h.refused(&c.patient, op), AccessError::BadKey(weak));
        // An unregistered account.
        let op = AccessOp::rotate_key(chain, key(98).account(), &fresh);
        assert_eq!(
            c.h.refused(&key(98), op),
            AccessError::NotRegistered(key(98).account())
        );
    }

    #[test]
    fn only_authorities_certify_and_only_providers_are_certified() {
        let mut c = Cast::new();
        let op = AccessOp::CertifyProvider {
            provider: c.specialist.account(),
            emergency: true,
        };
        assert!(matches!(
            c.h.refused(&c.hospital, op.clone()),
            AccessError::WrongRole {
                expected: Role::Authority,
                ..
            }
        ));
        let op2 = AccessOp::CertifyProvider {
            provider: c.patient.account(),
            emergency: false,
        };
        assert!(matches!(
            c.h.refused(&c.authority, op2),
            AccessError::WrongRole {
                expected: Role::Provider,
                ..
            }
        ));
        c.h.ok(&c.authority, op);
        assert!(
            c.h.access()
                .certification(&c.specialist.account())
                .unwrap()
                .emergency
        );
        // Decertified: no new relationships.
        c.h.ok(
            &c.authority,
            AccessOp::DecertifyProvider {
                provider: c.clinic.account(),
                reason: "licence lapsed".try_into().unwrap(),
            },
        );
        let cert = c.h.access().certification(&c.clinic.account()).unwrap();
        assert!(!cert.is_valid());
        let op = AccessOp::CreateRelationship {
            patient: c.patient.account(),
        };
        assert_eq!(
            c.h.refused(&c.clinic, op),
            AccessError::NotCertified(c.clinic.account())
        );
    }
}
