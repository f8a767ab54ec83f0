//! The MedRec world shared by the state tests (snapshots, the state on disk): a memory-backed
//! chain with a fast Proof-of-Work taken through the workflow for some patients, builders of
//! other chains of the same network, and the specialist's reads.
//!
//! Included by test crates that also declare `mod common;` (its network and signing helpers).
#![allow(dead_code)]

use std::ops::RangeInclusive;
use std::sync::Arc;

use medledger::access::{
    AccessOp, AccessRequest, Action, ActionSet, Decision, GrantId, GrantTerms, Period, PurposeSet,
    Role, Scope, Viewer,
};
use medledger::chain::ManualClock;
use medledger::pow::{PowSeal, ProofOfWork};
use medledger::purpose::PurposeOfUse::Treatment;
use medledger::tx::Keypair;
use medledger::{Block, Chain, ChainBuilder};

use crate::common::*;

pub struct World {
    pub net: Net,
    pub authority: Keypair,
    pub hospital: Keypair,
    pub specialist: Keypair,
    pub patients: Vec<Keypair>,
}

/// A memory-backed chain through the MedRec workflow for `n` patients: certification,
/// registrations, a relationship with a record each, acceptance and a grant each.
pub fn world(n: u8) -> World {
    let authority = Keypair::from_seed(&[1; 32]);
    let hospital = Keypair::from_seed(&[2; 32]);
    let specialist = Keypair::from_seed(&[3; 32]);
    let patients: Vec<Keypair> = (0..n).map(|i| Keypair::from_seed(&[10 + i; 32])).collect();
    let mut net = Net::new(&[("Regional Health Authority", &authority)]);
    let mut ops = vec![
        (
            &authority,
            AccessOp::CertifyProvider {
                provider: hospital.account(),
                emergency: false,
            },
        ),
        (
            &hospital,
            register_op(&hospital, Role::Provider, "St Mary's Hospital"),
        ),
        (
            &specialist,
            register_op(&specialist, Role::Provider, "Dr Okafor"),
        ),
    ];
    for (i, p) in patients.iter().enumerate() {
        ops.push((p, register_op(p, Role::Patient, &format!("NHS-{i}"))));
    }
    net.run(ops);
    let mut ops = Vec::new();
    for (i, p) in patients.iter().enumerate() {
        ops.push((
            &hospital,
            AccessOp::CreateRelationship {
                patient: p.account(),
            },
        ));
        ops.push((
            &hospital,
            AccessOp::AddPointer {
                relationship: relationship(p, &hospital),
                record: record(i as u8, medledger::access::Category::Imaging),
                replaces: None,
            },
        ));
    }
    net.run_after(DAY, ops);
    let mut world = World {
        net,
        authority,
        hospital,
        specialist,
        patients,
    };
    for i in 0..world.patients.len() {
        world.accept_and_grant(i);
    }
    world
}

impl World {
    /// Patient `i` accepts the hospital's relationship and grants the specialist treatment reads.
    pub fn accept_and_grant(&mut self, i: usize) -> GrantId {
        let p = &self.patients[i];
        let rel = relationship(p, &self.hospital);
        let terms = GrantTerms::new(
            rel,
            Viewer::Account(self.specialist.account()),
            Scope::All,
            ActionSet::of(&[Action::Read]),
            PurposeSet::of(&[Treatment]),
            Period::lasting(self.net.now, 30 * DAY),
        );
        let txs = self.net.sign_all(vec![
            (p, AccessOp::AcceptRelationship { relationship: rel }),
            (p, AccessOp::Grant { terms, under: None }),
        ]);
        let grant = GrantId::of_tx(txs[1].id());
        self.net.mine(3600, txs);
        grant
    }

    /// A builder of another chain of the world's network, on `clock`.
    pub fn builder(&self, clock: Arc<ManualClock>) -> ChainBuilder<ProofOfWork> {
        ChainBuilder::new("access-tests", engine())
            .genesis_time(T0)
            .clock(clock)
            .authority("Regional Health Authority", self.authority.public())
    }

    /// Appends the world's blocks at `heights` to `chain`.
    pub fn append_blocks(&self, chain: &mut Chain<ProofOfWork>, heights: RangeInclusive<u64>) {
        for h in heights {
            chain.append(block_at(&self.net.chain, h)).unwrap();
        }
    }

    /// The specialist's read of patient `i`'s first record, on `chain`.
    pub fn read(&self, chain: &Chain<ProofOfWork>, i: usize) -> Decision {
        let p = &self.patients[i];
        let pointer = chain.access().pointers_of(&relationship(p, &self.hospital))[0].id;
        chain.decide(&AccessRequest::new(
            self.specialist.account(),
            p.account(),
            pointer,
            Action::Read,
            Treatment,
            self.net.now + 1,
        ))
    }
}

/// The block of `chain`'s main chain at height `h`.
pub fn block_at(chain: &Chain<ProofOfWork>, h: u64) -> Block<PowSeal> {
    chain.block(&chain.hash_at(h).unwrap()).unwrap().unwrap()
}
