//! Unit-test harness for the access module (used by every submodule's tests), and tests of the
//! shared types.

use super::*;
use crate::app::Application as _;
use crate::codec::{BoundedString, BoundedVec, Canonical};
use crate::hash::{AccountId, ChainId, Digest, StateRoot, TxId};
use crate::purpose::PurposeOfUse;
use crate::tx::Keypair;
use crate::{Payload, Transaction};
use crate::{State, StateError};

pub(crate) const T0: u64 = 1_750_000_000;
pub(crate) const DAY: u64 = 86_400;

/// A state driven by real signed transactions, one block per call.
pub(crate) struct Harness {
    pub(crate) state: State,
    pub(crate) height: u64,
    pub(crate) time: u64,
    chain: ChainId,
}

pub(crate) fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

pub(crate) fn reason(s: &str) -> Reason {
    Reason::try_from(s).unwrap()
}

pub(crate) fn name(s: &str) -> Name {
    Name::try_from(s).unwrap()
}

pub(crate) fn record(n: u8, category: Category) -> RecordPointer {
    RecordPointer {
        query: BoundedString::try_from(format!("SELECT * FROM obs WHERE id = {n}")).unwrap(),
        content_hash: Digest::from_bytes([n; 32]),
        category,
        data_period: Period::new(T0 - 365 * DAY, T0).unwrap(),
    }
}

impl Harness {
    /// Genesis with `authority` registered.
    pub(crate) fn new(authority: &Keypair) -> Self {
        Self {
            state: bench_genesis(&[("Health Authority".into(), authority.public())], T0)
                .expect("a valid authority"),
            height: 0,
            time: T0,
            chain: ChainId::from_bytes([42; 32]),
        }
    }

    pub(crate) fn chain_id(&self) -> ChainId {
        self.chain
    }

    pub(crate) fn access(&self) -> &AccessState {
        self.state.access()
    }

    pub(crate) fn root(&self) -> StateRoot {
        self.state.root()
    }

    /// Signs `op` with `key` and the signer account's next nonce.
    pub(crate) fn sign(&self, key: &Keypair, op: AccessOp) -> Transaction {
        let account = self.state.account_of_key(&key.public());
        let nonce = self.state.next_nonce(&account);
        Transaction::sign(key, self.chain, nonce, Payload::Access(op))
    }

    /// Applies `op` signed by `key` as the only transaction of the next block (advanced by
    /// `secs`); on error nothing changes and the height stays.
    pub(crate) fn apply_after(
        &mut self,
        secs: u64,
        key: &Keypair,
        op: AccessOp,
    ) -> Result<Vec<AccessEvent>, StateError> {
        let tx = self.sign(key, op);
        let id = tx.id();
        let verified = tx.verify().expect("harness signs valid transactions");
        let (height, time) = (self.height + 1, self.time + secs);
        match self
            .state
            .execute(self.chain, height, time, &[verified], false, MedRec::apply)
        {
            Ok((executed, _)) => {
                let events = executed.events[0].1.clone();
                assert_eq!(executed.events[0].0, id);
                self.state
                    .commit_block(executed)
                    .expect("a state in memory commits");
                self.height = height;
                self.time = time;
                Ok(events
                    .into_iter()
                    .map(|e| match e {
                        crate::Event::Access(a) => a,
                        other => panic!("unexpected event {other:?}"),
                    })
                    .collect())
            }
            Err(failure) => Err(failure.error),
        }
    }

    /// [`apply_after`](Self::apply_after) ten seconds later.
    pub(crate) fn apply(
        &mut self,
        key: &Keypair,
        op: AccessOp,
    ) -> Result<Vec<AccessEvent>, StateError> {
        self.apply_after(10, key, op)
    }

    /// Applies and expects success.
    pub(crate) fn ok(&mut self, key: &Keypair, op: AccessOp) -> Vec<AccessEvent> {
        self.apply(key, op).expect("operation applies")
    }

    /// Applies, expects the access error `expected`, and checks nothing changed.
    pub(crate) fn refused(&mut self, key: &Keypair, op: AccessOp) -> AccessError {
        let before = (self.root(), self.height);
        match self.apply(key, op) {
            Err(StateError::App(e)) => {
                assert_eq!((self.root(), self.height), before);
                e
            }
            other => panic!("expected an access refusal, got {other:?}"),
        }
    }

    /// The id derived from the transaction `key` would sign next for `op`.
    pub(crate) fn next_tx_id(&self, key: &Keypair, op: &AccessOp) -> TxId {
        self.sign(key, op.clone()).id()
    }

    pub(crate) fn register(&mut self, key: &Keypair, role: Role, label: &str) {
        let op = match role {
            Role::Patient => AccessOp::register_patient(key.account(), label, &[9; 32]),
            _ => AccessOp::Register {
                role,
                identity: Identity::Organisation(name(label)),
                blinded: None,
            },
        };
        self.ok(key, op);
    }

    /// Registers and certifies a provider.
    pub(crate) fn provider(
        &mut self,
        authority: &Keypair,
        key: &Keypair,
        label: &str,
        emergency: bool,
    ) {
        self.register(key, Role::Provider, label);
        self.ok(
            authority,
            AccessOp::CertifyProvider {
                provider: key.account(),
                emergency,
            },
        );
    }

    /// Opens and accepts a relationship; returns its id.
    pub(crate) fn relationship(&mut self, provider: &Keypair, patient: &Keypair) -> RelationshipId {
        self.ok(
            provider,
            AccessOp::CreateRelationship {
                patient: patient.account(),
            },
        );
        let id = RelationshipId::of(patient.account(), provider.account());
        self.ok(patient, AccessOp::AcceptRelationship { relationship: id });
        id
    }

    /// Adds a pointer; returns its id.
    pub(crate) fn pointer(
        &mut self,
        provider: &Keypair,
        relationship: RelationshipId,
        record: RecordPointer,
        replaces: Option<PointerId>,
    ) -> PointerId {
        let op = AccessOp::AddPointer {
            relationship,
            record,
            replaces,
        };
        let id = PointerId::of_tx(self.next_tx_id(provider, &op));
        self.ok(provider, op);
        id
    }

    /// Makes a grant signed by `key`; returns its id.
    pub(crate) fn grant(
        &mut self,
        key: &Keypair,
        terms: GrantTerms,
        under: Option<DelegationId>,
    ) -> GrantId {
        let op = AccessOp::Grant { terms, under };
        let id = GrantId::of_tx(self.next_tx_id(key, &op));
        self.ok(key, op);
        id
    }

    pub(crate) fn decide(
        &self,
        viewer: &Keypair,
        patient: &Keypair,
        pointer: PointerId,
        action: Action,
        purpose: PurposeOfUse,
    ) -> Decision {
        self.access().decide(&AccessRequest::new(
            viewer.account(),
            patient.account(),
            pointer,
            action,
            purpose,
            self.time,
        ))
    }
}

/// A standard cast: authority 1, hospital 2 (emergency), clinic 3, patient 4, specialist 5,
/// researcher 6, guardian 7.
pub(crate) struct Cast {
    pub(crate) h: Harness,
    pub(crate) authority: Keypair,
    pub(crate) hospital: Keypair,
    pub(crate) clinic: Keypair,
    pub(crate) patient: Keypair,
    pub(crate) specialist: Keypair,
    pub(crate) researcher: Keypair,
    pub(crate) guardian: Keypair,
}

impl Cast {
    pub(crate) fn new() -> Self {
        let authority = key(1);
        let mut h = Harness::new(&authority);
        let (hospital, clinic, patient, specialist, researcher, guardian) =
            (key(2), key(3), key(4), key(5), key(6), key(7));
        h.provider(&authority, &hospital, "General Hospital", true);
        h.provider(&authority, &clinic, "Corner Clinic", false);
        h.register(&patient, Role::Patient, "patient-4");
        h.register(&specialist, Role::Provider, "Dr Specialist");
        h.register(&researcher, Role::Researcher, "Research Lab");
        h.register(&guardian, Role::Patient, "guardian-7");
        Self {
            h,
            authority,
            hospital,
            clinic,
            patient,
            specialist,
            researcher,
            guardian,
        }
    }

    /// An accepted hospital relationship with one laboratory and one mental-health record.
    pub(crate) fn with_records(&mut self) -> (RelationshipId, PointerId, PointerId) {
        let rel = self.h.relationship(&self.hospital, &self.patient);
        let lab = self
            .h
            .pointer(&self.hospital, rel, record(1, Category::Laboratory), None);
        let mh = self
            .h
            .pointer(&self.hospital, rel, record(2, Category::MentalHealth), None);
        (rel, lab, mh)
    }

    pub(crate) fn treat_terms(&self, rel: RelationshipId, days: u64) -> GrantTerms {
        GrantTerms::new(
            rel,
            Viewer::Account(self.specialist.account()),
            Scope::All,
            ActionSet::of(&[Action::Read]),
            PurposeSet::of(&[PurposeOfUse::Treatment]),
            Period::lasting(self.h.time, days * DAY),
        )
    }
}

#[test]
fn enum_sets_encode_as_masks_and_refuse_unknown_members() {
    let s = PurposeSet::of(&[PurposeOfUse::Treatment, PurposeOfUse::Research]);
    assert!(s.contains(PurposeOfUse::Research));
    assert!(!s.contains(PurposeOfUse::Payment));
    assert_eq!(s.len(), 2);
    assert!(PurposeSet::of(&[PurposeOfUse::Research]).is_subset(&s));
    assert!(!PurposeSet::all().is_subset(&s));
    assert_eq!(PurposeSet::all().len(), PurposeOfUse::ALL.len());
    let bytes = postcard::to_allocvec(&s).unwrap();
    assert_eq!(postcard::from_bytes::<PurposeSet>(&bytes).unwrap(), s);
    // A bit beyond the known actions fails to decode.
    let bad = postcard::to_allocvec(&0b100u32).unwrap();
    assert!(postcard::from_bytes::<ActionSet>(&bad).is_err());
    assert_eq!(format!("{:?}", ActionSet::all()), "{Read, Disclose}");
    assert_eq!(CategorySet::all().iter().count(), Category::ALL.len());
}

#[test]
fn periods_are_half_open() {
    assert!(Period::new(5, 5).is_err());
    let p = Period::new(10, 20).unwrap();
    assert!(p.contains(10) && p.contains(19) && !p.contains(20) && !p.contains(9));
    assert!(p.covers(&Period::new(12, 20).unwrap()));
    assert!(!p.covers(&Period::new(12, 21).unwrap()));
    assert!(p.overlaps(&Period::new(19, 30).unwrap()));
    assert!(!p.overlaps(&Period::new(20, 30).unwrap()));
    assert_eq!(Period::lasting(u64::MAX - 1, 10).end, u64::MAX);
}

#[test]
fn ids_separate_kinds_and_pairs() {
    let (a, b) = (key(1).account(), key(2).account());
    assert_ne!(RelationshipId::of(a, b), RelationshipId::of(b, a));
    let tx = TxId::from_bytes([3; 32]);
    let ids = [
        PointerId::of_tx(tx).to_bytes(),
        GrantId::of_tx(tx).to_bytes(),
        GroupId::of_tx(tx).to_bytes(),
        DelegationId::of_tx(tx).to_bytes(),
        BreakGlassId::of_tx(tx).to_bytes(),
    ];
    let set: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(set.len(), ids.len());
}

#[test]
fn the_largest_grant_fits_in_a_transaction() {
    let pointers: Vec<PointerId> = (0..MAX_SCOPE_POINTERS)
        .map(|i| PointerId::from_bytes([i as u8; 32]))
        .collect();
    let mut provision = Provision::new(ProvisionKind::Deny)
        .with_categories(CategorySet::all())
        .with_actions(ActionSet::all())
        .with_purposes(PurposeSet::all())
        .with_period(Period::new(0, u64::MAX).unwrap())
        .with_data_period(Period::new(0, u64::MAX).unwrap());
    provision.parent = Some(u16::MAX);
    provision.pointers = BoundedVec::try_from(pointers[..MAX_PROVISION_POINTERS].to_vec()).unwrap();
    let terms = GrantTerms {
        relationship: RelationshipId::from_bytes([1; 32]),
        viewer: Viewer::Group(GroupId::from_bytes([2; 32])),
        scope: Scope::Only {
            pointers: BoundedVec::try_from(pointers).unwrap(),
            categories: CategorySet::all(),
        },
        actions: ActionSet::all(),
        purposes: PurposeSet::all(),
        period: Period::new(0, u64::MAX).unwrap(),
        provisions: BoundedVec::try_from(vec![provision; MAX_PROVISIONS]).unwrap(),
    };
    let tx = Transaction::sign(
        &key(1),
        ChainId::default(),
        u64::MAX,
        Payload::Access(AccessOp::Grant {
            terms,
            under: Some(DelegationId::from_bytes([3; 32])),
        }),
    );
    let bytes = tx.encode();
    assert!(
        bytes.len() <= crate::tx::MAX_TX_LEN,
        "{} bytes",
        bytes.len()
    );
    assert_eq!(Transaction::decode(&bytes).unwrap(), tx);
    // The longest query string fits too.
    let op = AccessOp::AddPointer {
        relationship: RelationshipId::default(),
        record: RecordPointer {
            query: BoundedString::try_from("q".repeat(MAX_QUERY_LEN)).unwrap(),
            ..record(1, Category::General)
        },
        replaces: Some(PointerId::default()),
    };
    let tx = Transaction::sign(&key(1), ChainId::default(), 0, Payload::Access(op));
    assert!(tx.encode().len() <= Transaction::MAX_ENCODED_LEN);
}

#[test]
fn genesis_registers_authorities_and_commits_them() {
    let h = Harness::new(&key(1));
    let r = h.access().account(&key(1).account()).unwrap();
    assert_eq!(r.role, Role::Authority);
    assert_ne!(h.root(), crate::smt::EMPTY_ROOT);
    assert_eq!(
        h.access()
            .account_by_identity(&Identity::Organisation(name("Health Authority"))),
        Some(key(1).account())
    );
    assert_eq!(
        bench_genesis(&[], T0).unwrap().root(),
        crate::smt::EMPTY_ROOT
    );
}

#[test]
fn errors_are_send_sync_static_and_lower_case() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<AccessError>();
    check::<DenyReason>();
    check::<GrantProofError>();
    let msgs = [
        AccessError::NotRegistered(AccountId::default()).to_string(),
        AccessError::Denied(DenyReason::NoGrant).to_string(),
        AccessError::Widens {
            delegation: DelegationId::default(),
            what: "scope",
        }
        .to_string(),
    ];
    for m in msgs {
        assert!(m.chars().next().unwrap().is_lowercase(), "{m}");
    }
}

#[test]
fn every_state_change_emits_an_event_and_audit_entry() {
    let mut c = Cast::new();
    let (rel, lab, _) = c.with_records();
    let n = c.h.access().audit_len(&c.patient.account());
    let terms = c.treat_terms(rel, 30);
    let g = c.h.grant(&c.patient, terms, None);
    let trail = c.h.access().audit_trail(&c.patient.account());
    assert_eq!(trail.len() as u64, n + 1);
    assert!(matches!(
        trail.last().unwrap().event,
        AccessEvent::GrantCreated { grant, .. } if grant == g
    ));
    let events = c.h.ok(
        &c.specialist,
        AccessOp::RecordAccess {
            patient: c.patient.account(),
            pointer: lab,
            action: Action::Read,
            purpose: PurposeOfUse::Treatment,
            basis: Basis::Grant(g),
        },
    );
    assert!(matches!(events[..], [AccessEvent::Accessed { .. }]));
    let receipts = c.h.access().access_receipts(&c.patient.account());
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].actor, c.specialist.account());
    assert_eq!(receipts[0].at.height, c.h.height);
}

mod decoding {
    use super::*;
    use proptest::prelude::*;

    /// An encoded transaction carrying a grant with provisions, pointers and a delegation.
    fn sample() -> Vec<u8> {
        let terms = GrantTerms::new(
            RelationshipId::from_bytes([1; 32]),
            Viewer::Group(GroupId::from_bytes([2; 32])),
            Scope::pointers(&[PointerId::from_bytes([3; 32])]),
            ActionSet::of(&[Action::Read]),
            PurposeSet::of(&[PurposeOfUse::Treatment, PurposeOfUse::Research]),
            Period::new(10, 20).unwrap(),
        )
        .with_provision(
            Provision::new(ProvisionKind::Deny)
                .with_categories(CategorySet::of(&[Category::Genomic]))
                .with_period(Period::new(12, 14).unwrap()),
        )
        .with_provision(Provision::new(ProvisionKind::Permit).under(0));
        let op = AccessOp::Grant {
            terms,
            under: Some(DelegationId::from_bytes([4; 32])),
        };
        Transaction::sign(&key(1), ChainId::default(), 7, Payload::Access(op)).encode()
    }

    proptest! {
        /// Corrupted access transactions never panic the decoder, and whatever decodes is
        /// canonical.
        #[test]
        fn corrupted_access_transactions_decode_canonically_or_not_at_all(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = sample();
            for (at, x) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Ok(tx) = Transaction::decode(&bytes) {
                prop_assert_eq!(tx.encode(), bytes);
            }
        }
    }

    #[test]
    fn every_operation_round_trips() {
        let ops = vec![
            AccessOp::register_patient(key(1).account(), "x", &[0; 32]),
            AccessOp::Register {
                role: Role::Provider,
                identity: Identity::Organisation(name("x")),
                blinded: None,
            },
            AccessOp::rotate_key(ChainId::default(), key(1).account(), &key(2)),
            AccessOp::CertifyProvider {
                provider: key(3).account(),
                emergency: true,
            },
            AccessOp::DecertifyProvider {
                provider: key(3).account(),
                reason: reason("r"),
            },
            AccessOp::CreateRelationship {
                patient: key(4).account(),
            },
            AccessOp::AcceptRelationship {
                relationship: RelationshipId::default(),
            },
            AccessOp::RejectRelationship {
                relationship: RelationshipId::default(),
                reason: reason("r"),
            },
            AccessOp::TerminateRelationship {
                relationship: RelationshipId::default(),
                reason: reason("r"),
            },
            AccessOp::AddPointer {
                relationship: RelationshipId::default(),
                record: record(1, Category::Imaging),
                replaces: Some(PointerId::default()),
            },
            AccessOp::CreateGroup {
                label: "g".try_into().unwrap(),
            },
            AccessOp::AddGroupMember {
                group: GroupId::default(),
                member: key(5).account(),
            },
            AccessOp::RemoveGroupMember {
                group: GroupId::default(),
                member: key(5).account(),
            },
            AccessOp::RevokeGrant {
                grant: GrantId::default(),
                reason: reason("r"),
            },
            AccessOp::Delegate {
                delegate: key(6).account(),
                terms: DelegationTerms {
                    relationship: None,
                    scope: Scope::All,
                    actions: ActionSet::all(),
                    purposes: PurposeSet::all(),
                    period: Period::new(1, 2).unwrap(),
                },
            },
            AccessOp::RevokeDelegation {
                delegation: DelegationId::default(),
                reason: reason("r"),
            },
            AccessOp::OpenBreakGlass {
                patient: key(4).account(),
                reason: reason("r"),
                duration_secs: 60,
            },
            AccessOp::CloseBreakGlass {
                session: BreakGlassId::default(),
            },
            AccessOp::ReviewBreakGlass {
                session: BreakGlassId::default(),
                outcome: ReviewOutcome::Disputed,
                note: Some(reason("n")),
            },
            AccessOp::RecordAccess {
                patient: key(4).account(),
                pointer: PointerId::default(),
                action: Action::Disclose,
                purpose: PurposeOfUse::PublicHealth,
                basis: Basis::BreakGlass(BreakGlassId::default()),
            },
        ];
        for op in ops {
            let tx = Transaction::sign(&key(1), ChainId::default(), 0, Payload::Access(op));
            assert_eq!(Transaction::decode(&tx.encode()).unwrap(), tx);
        }
    }
}
