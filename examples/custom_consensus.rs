//! A third consensus engine, written outside the crate: proof of authority for a hospital
//! consortium. The member hospitals take turns (round robin by height) signing blocks, and the
//! same `Chain` that runs proof of work and committees runs it unchanged.
//!
//! ```sh
//! cargo run --example custom_consensus
//! ```

use std::sync::Arc;

use medledger::block::Header;
use medledger::chain::ManualClock;
use medledger::consensus::{Ancestors, Consensus, ConsensusError, Work};
use medledger::hash::Digest;
use medledger::tx::{Keypair, PublicKey, Signature};
use medledger::Block;
use medledger::{BlockTemplate, ChainBuilder, ChainError};
use medledger::{Payload, Transaction};
use serde::{Deserialize, Serialize};

/// The seal: which authority signed, and its signature over the header's other fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct AuthoritySeal {
    signer: u16,
    signature: Signature,
}

/// Round-robin proof of authority: block `h` must be signed by authority `h mod n`.
struct ProofOfAuthority {
    authorities: Vec<PublicKey>,
    max_drift: u64,
}

impl ProofOfAuthority {
    /// What an authority signs: every header field but the seal, domain-separated.
    fn signing_digest<S>(header: &Header<S>) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("medledger example proof of authority v1");
        h.update(&header.version.to_le_bytes());
        h.update(&header.height.to_le_bytes());
        h.update(header.parent.as_bytes());
        h.update(header.tx_root.as_bytes());
        h.update(&header.tx_count.to_le_bytes());
        h.update(header.state_root.as_bytes());
        h.update(&header.timestamp.to_le_bytes());
        *h.finalize().as_bytes()
    }

    fn leader(&self, height: u64) -> usize {
        (height % self.authorities.len() as u64) as usize
    }

    /// Seals a template as `key`, the authority at `index`.
    fn seal(
        &self,
        template: BlockTemplate,
        key: &Keypair,
        index: u16,
    ) -> Result<Block<AuthoritySeal>, ChainError> {
        let unsigned = template.header(());
        let signature = key.sign(&Self::signing_digest(&unsigned));
        template.seal(AuthoritySeal {
            signer: index,
            signature,
        })
    }
}

impl Consensus for ProofOfAuthority {
    type Seal = AuthoritySeal;

    fn name(&self) -> &'static str {
        "proof-of-authority"
    }

    fn genesis_seal(&self) -> AuthoritySeal {
        AuthoritySeal {
            signer: 0,
            signature: Signature::from_bytes([0; 64]),
        }
    }

    fn verify_header(
        &self,
        header: &Header<AuthoritySeal>,
        ancestors: &dyn Ancestors<AuthoritySeal>,
        now: u64,
    ) -> Result<Work, ConsensusError> {
        let expected = self.leader(header.height);
        if usize::from(header.seal.signer) != expected {
            return Err(ConsensusError::BadSeal(format!(
                "block {} must be signed by authority {expected}, not {}",
                header.height, header.seal.signer
            )));
        }
        let key = self.authorities[expected]
            .verifying_key()
            .map_err(|e| ConsensusError::BadSeal(e.to_string()))?;
        let sig = ed25519_dalek::Signature::from_bytes(&header.seal.signature.to_bytes());
        key.verify_strict(&Self::signing_digest(header), &sig)
            .map_err(|_| ConsensusError::BadSeal("authority signature does not verify".into()))?;
        let parent_time = ancestors.parent().timestamp;
        if header.timestamp < parent_time {
            return Err(ConsensusError::TimestampTooOld {
                median: parent_time,
                found: header.timestamp,
            });
        }
        if header.timestamp > now + self.max_drift {
            return Err(ConsensusError::TimestampTooNew {
                found: header.timestamp,
                now,
                max_drift: self.max_drift,
            });
        }
        // Every authorised block is final: constant weight.
        Ok(Work::from_u64(1))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hospitals: Vec<(&str, Keypair)> = ["St Mary", "Charité", "Karolinska"]
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, Keypair::from_seed(&[i as u8 + 1; 32])))
        .collect();
    let engine = ProofOfAuthority {
        authorities: hospitals.iter().map(|(_, k)| k.public()).collect(),
        max_drift: 60,
    };
    let t0 = 1_750_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let mut chain = ChainBuilder::new("hospital-consortium", engine)
        .genesis_time(t0)
        .clock(clock.clone())
        .build()?;

    let doctor = Keypair::from_seed(&[42; 32]);
    for height in 1..=6u64 {
        let t = t0 + height * 5;
        clock.set(t);
        let record = Digest::from_bytes([height as u8; 32]);
        let tx = Transaction::sign(
            &doctor,
            chain.chain_id(),
            height - 1,
            Payload::Data { record },
        );
        let template = chain.build_template(vec![tx], t)?;
        let leader = chain.engine().leader(height);
        let (name, key) = &hospitals[leader];
        let block = chain.engine().seal(template, key, leader as u16)?;
        chain.append(block)?;
        println!("block {height} sealed by {name}, tip {}", chain.tip());
    }

    // The wrong hospital's turn is refused, and so is a forged signature; nothing changes.
    let t = t0 + 40;
    clock.set(t);
    let template = chain.build_template(Vec::new(), t)?;
    let wrong = (chain.engine().leader(7) + 1) % hospitals.len();
    let block = chain
        .engine()
        .seal(template.clone(), &hospitals[wrong].1, wrong as u16)?;
    let err = chain.append(block).unwrap_err();
    println!("out of turn: {err}");
    assert!(matches!(
        err,
        ChainError::Consensus(ConsensusError::BadSeal(_))
    ));
    let leader = chain.engine().leader(7);
    let forged = chain.engine().seal(template, &doctor, leader as u16)?;
    println!("forged: {}", chain.append(forged).unwrap_err());
    assert_eq!(chain.height(), 6);
    println!(
        "{} blocks, {} records anchored, engine {:?}",
        chain.height(),
        chain.state().next_nonce(&doctor.account()),
        chain.engine().name()
    );
    Ok(())
}
