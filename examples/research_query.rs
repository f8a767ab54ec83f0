//! A researcher asks three hospitals statistical questions and gets differentially private
//! answers, while no single party sees a patient's row and the chain governs every step.
//!
//! ```text
//! cargo run --release --features research-queries --example research_query
//! ```
//!
//! Three hospitals with 10,000 synthetic patients each, most of whom consented on chain to the
//! researcher reading their records for research (some never did, some withdrew). An authority
//! approves a study with a budget of ε = 1. The researcher asks how many patients have
//! diabetes (ε = 0.5) and the histogram of their age bands (ε = 0.5): each hospital shards one
//! report per consenting patient between two aggregators, commits the reports on chain, the
//! aggregators verify and sum them and add noise, and the researcher unshards the answer. A
//! third query, over the budget, is refused on chain.

use std::collections::HashMap;
use std::error::Error;
use std::time::Instant;

use medledger::access::{
    AccessOp, Action, ActionSet, AggregatorRef, Epsilon, GrantId, GrantTerms, Identity, Period,
    PurposeSet, QueryId, QueryKind, RelationshipId, Role, Scope, StudyId, Viewer,
};
use medledger::hash::{content_hash, AccountId};
use medledger::pow::ProofOfWork;
use medledger::pseudonym::{DerivedBackend, Epoch, PseudonymBackend, Scheme};
use medledger::purpose::PurposeOfUse;
use medledger::research::{
    commit_ops, shard_cohort, unshard, Aggregator, AggregatorKeypair, Measurement, QueryParams,
    QueryResult, VerifyKey,
};
use medledger::tx::Keypair;
use medledger::{Chain, ChainBuilder, Payload, Transaction};

const PATIENTS_PER_HOSPITAL: usize = 10_000;
const AGE_BANDS: [&str; 6] = ["0-17", "18-34", "35-49", "50-64", "65-79", "80+"];
const GENESIS_TIME: u64 = 1_767_225_600;
const DAY: u64 = 86_400;

type MedChain = Chain<ProofOfWork>;

/// Signs with each account's next nonce and mines blocks ten minutes apart.
struct Driver {
    chain: MedChain,
    nonces: HashMap<AccountId, u64>,
    time: u64,
}

impl Driver {
    fn tx(&mut self, key: &Keypair, op: AccessOp) -> Transaction {
        let n = self.nonces.entry(key.account()).or_insert(0);
        let tx = Transaction::sign(key, self.chain.chain_id(), *n, Payload::Access(op));
        *n += 1;
        tx
    }

    /// Mines `txs` into one block; every transaction must apply.
    fn block(&mut self, txs: Vec<Transaction>) -> Result<(), Box<dyn Error>> {
        self.time += 600;
        let block = self.chain.mine(txs, self.time)?;
        self.chain.append(block)?;
        Ok(())
    }

    fn one(&mut self, key: &Keypair, op: AccessOp) -> Result<(), Box<dyn Error>> {
        let tx = self.tx(key, op);
        self.block(vec![tx])
    }
}

/// A synthetic patient: whether they have diabetes, their age band, whether they consented.
struct Patient {
    key: Keypair,
    diabetes: bool,
    age_band: u32,
    consents: bool,
    withdraws: bool,
    grant: GrantId,
}

/// A deterministic generator (SplitMix64), so every run has the same population.
struct Synth(u64);

impl Synth {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn organisation(name: &str) -> Result<AccessOp, Box<dyn Error>> {
    Ok(AccessOp::Register {
        role: Role::Provider,
        identity: Identity::Organisation(name.try_into()?),
        blinded: None,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let authority = Keypair::from_seed(&[1; 32]);
    let researcher = Keypair::from_seed(&[2; 32]);
    let aggregator_accounts = [Keypair::from_seed(&[3; 32]), Keypair::from_seed(&[4; 32])];
    let hospitals: Vec<Keypair> = (0..3u8)
        .map(|i| Keypair::from_seed(&[10 + i; 32]))
        .collect();
    let chain = ChainBuilder::new("research-query-demo", ProofOfWork::regtest())
        .genesis_time(GENESIS_TIME)
        .authority("Health Authority", authority.public())
        .build()?;
    let mut d = Driver {
        chain,
        nonces: HashMap::new(),
        time: GENESIS_TIME,
    };

    // The consortium: a researcher, two aggregators, three certified hospitals.
    let mut txs = vec![d.tx(
        &researcher,
        AccessOp::Register {
            role: Role::Researcher,
            identity: Identity::Organisation("Diabetes Research Lab".try_into()?),
            blinded: None,
        },
    )];
    for (i, a) in aggregator_accounts.iter().enumerate() {
        txs.push(d.tx(a, organisation(&format!("Aggregator {}", i + 1))?));
    }
    for (i, h) in hospitals.iter().enumerate() {
        txs.push(d.tx(h, organisation(&format!("Hospital {}", i + 1))?));
        txs.push(d.tx(
            &authority,
            AccessOp::CertifyProvider {
                provider: h.account(),
                emergency: false,
            },
        ));
    }
    d.block(txs)?;

    // 30,000 synthetic patients: registered, in a relationship with their hospital, 90 %
    // consenting to research by the researcher; 3 % of those withdraw before the queries.
    let mut synth = Synth(2027);
    let mut cohorts: Vec<Vec<Patient>> = Vec::new();
    for (h, hospital) in hospitals.iter().enumerate() {
        let mut patients = Vec::with_capacity(PATIENTS_PER_HOSPITAL);
        for i in 0..PATIENTS_PER_HOSPITAL {
            let mut seed = [0; 32];
            seed[..8].copy_from_slice(&((h * PATIENTS_PER_HOSPITAL + i) as u64).to_le_bytes());
            seed[31] = 0xaa;
            let age_band = (synth.next() % 100) as u32 * AGE_BANDS.len() as u32 / 100;
            let diabetes = synth.chance(4 + 3 * u64::from(age_band));
            let consents = synth.chance(90);
            let withdraws = consents && synth.chance(3);
            patients.push(Patient {
                key: Keypair::from_seed(&seed),
                diabetes,
                age_band,
                consents,
                withdraws,
                grant: GrantId::default(),
            });
        }
        let (mut register, mut propose, mut accept) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in patients.iter().enumerate() {
            let label = format!("H{h}-MRN-{i:05}");
            register.push(d.tx(
                &p.key,
                AccessOp::register_patient(
                    p.key.account(),
                    &label,
                    &content_hash(label.as_bytes()).to_bytes(),
                ),
            ));
            propose.push(d.tx(
                hospital,
                AccessOp::CreateRelationship {
                    patient: p.key.account(),
                },
            ));
            accept.push(d.tx(
                &p.key,
                AccessOp::AcceptRelationship {
                    relationship: RelationshipId::of(p.key.account(), hospital.account()),
                },
            ));
        }
        d.block(register)?;
        d.block(propose)?;
        d.block(accept)?;
        let mut grants = Vec::new();
        for p in patients.iter_mut().filter(|p| p.consents) {
            let terms = GrantTerms::new(
                RelationshipId::of(p.key.account(), hospital.account()),
                Viewer::Account(researcher.account()),
                Scope::All,
                ActionSet::of(&[Action::Read]),
                PurposeSet::of(&[PurposeOfUse::Research]),
                Period::lasting(d.time, 365 * DAY),
            );
            let tx = d.tx(&p.key, AccessOp::Grant { terms, under: None });
            p.grant = GrantId::of_tx(tx.id());
            grants.push(tx);
        }
        d.block(grants)?;
        cohorts.push(patients);
    }
    let mut withdrawals = Vec::new();
    for p in cohorts.iter().flatten().filter(|p| p.withdraws) {
        let reason = "I no longer take part".try_into()?;
        withdrawals.push(d.tx(
            &p.key,
            AccessOp::RevokeGrant {
                grant: p.grant,
                reason,
            },
        ));
    }
    d.block(withdrawals)?;
    println!(
        "chain: 3 hospitals x {PATIENTS_PER_HOSPITAL} patients registered, consents on chain, at height {} ({:.1} s)",
        d.chain.height(),
        started.elapsed().as_secs_f64()
    );

    // The study: approved by the authority with a budget of ε = 1.
    let approve = AccessOp::ApproveStudy {
        researcher: researcher.account(),
        protocol: content_hash(b"protocol DRL-2027-04, ethics approval EC-1187"),
        budget: Epsilon::from_micros(1_000_000),
        min_class_size: 10,
    };
    let tx = d.tx(&authority, approve);
    let study = StudyId::of_tx(tx.id());
    d.block(vec![tx])?;

    let mut vaults: Vec<DerivedBackend> = cohorts
        .iter()
        .map(|patients| {
            let mut v = DerivedBackend::new(Scheme::KeyedHash);
            for p in patients {
                v.enroll(p.key.account().into()).expect("fresh vault");
            }
            v
        })
        .collect();

    let mut ask = |d: &mut Driver,
                   kind: QueryKind,
                   epsilon: u64,
                   cohort: &str,
                   measure: &(dyn Fn(&Patient) -> Measurement + Sync)|
     -> Result<Result<QueryResult, String>, Box<dyn Error>> {
        // Fresh HPKE keys of the aggregators for each query, and the verification key they
        // share.
        let keys = [AggregatorKeypair::generate(), AggregatorKeypair::generate()];
        let refs = [0, 1].map(|i| AggregatorRef {
            account: aggregator_accounts[i].account(),
            key: keys[i].public(),
        });
        let announce = AccessOp::AnnounceQuery {
            study,
            kind,
            cohort: content_hash(cohort.as_bytes()),
            epsilon: Epsilon::from_micros(epsilon),
            min_batch: 1_000,
            aggregators: refs,
            deadline: d.time + 7 * DAY,
        };
        let tx = d.tx(&researcher, announce);
        let query = QueryId::of_tx(tx.id());
        if let Err(e) = d.block(vec![tx]) {
            // Refused: take the nonce back, the transaction never applied.
            *d.nonces
                .get_mut(&researcher.account())
                .expect("signed before") -= 1;
            return Ok(Err(e.to_string()));
        }
        let q = d.chain.access().query(&query).expect("announced").clone();
        let params = QueryParams::of(&q);
        let verify_key = VerifyKey::generate();
        let [k0, k1] = keys;
        let aggs = [
            Aggregator::new(&params, 0, k0, verify_key.clone())?,
            Aggregator::new(&params, 1, k1, verify_key)?,
        ];
        // The hospitals shard their patients' reports, each on its own thread.
        let t = Instant::now();
        let access = d.chain.access();
        let outs = std::thread::scope(|s| {
            let handles: Vec<_> = hospitals
                .iter()
                .zip(&cohorts)
                .zip(vaults.iter_mut())
                .map(|((hospital, patients), vault)| {
                    s.spawn(move || {
                        let list: Vec<_> = patients
                            .iter()
                            .filter(|p| p.consents)
                            .map(|p| (p.key.account(), p.grant, measure(p)))
                            .collect();
                        shard_cohort(
                            access,
                            &query,
                            hospital.account(),
                            vault as &mut dyn PseudonymBackend,
                            Epoch::new(1),
                            &list,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a hospital's thread"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let sharded = t.elapsed();
        let mut commits = Vec::new();
        let mut all_reports = Vec::new();
        for (hospital, out) in hospitals.iter().zip(outs) {
            for op in commit_ops(&query, &out.reports)? {
                commits.push(d.tx(hospital, op));
            }
            all_reports.extend(out.reports);
        }
        d.block(commits)?;
        // The aggregators, each on its own thread: decrypt and start verifying every report,
        // exchange their verifier messages, finish.
        let t = Instant::now();
        let reports = &all_reports;
        let [mut a, mut b] = aggs;
        let (to_b, to_a) = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                reports
                    .iter()
                    .map(|r| a.prepare(r))
                    .collect::<Result<Vec<_>, _>>()
            });
            let hb = s.spawn(|| {
                reports
                    .iter()
                    .map(|r| b.prepare(r))
                    .collect::<Result<Vec<_>, _>>()
            });
            (
                ha.join().expect("aggregator 1"),
                hb.join().expect("aggregator 2"),
            )
        });
        let (to_b, to_a) = (to_b?, to_a?);
        std::thread::scope(|s| {
            let ha = s.spawn(|| to_a.iter().try_for_each(|m| a.finish(m)));
            let hb = s.spawn(|| to_b.iter().try_for_each(|m| b.finish(m)));
            ha.join()
                .expect("aggregator 1")
                .and(hb.join().expect("aggregator 2"))
        })?;
        let verified = t.elapsed();
        let aggs = [a, b];
        let [a, b] = aggs;
        let (sa, sb) = (a.finalize()?, b.finalize()?);
        let share_txs = vec![
            d.tx(&aggregator_accounts[0], sa.commit_op()),
            d.tx(&aggregator_accounts[1], sb.commit_op()),
        ];
        d.block(share_txs)?;
        let result = unshard(&params, &sa, &sb)?;
        d.one(&researcher, result.publish_op())?;
        println!(
            "  {} reports sharded by the hospitals in {:.2} s, verified and aggregated by both aggregators in {:.2} s",
            all_reports.len(),
            sharded.as_secs_f64(),
            verified.as_secs_f64()
        );
        Ok(Ok(result))
    };

    let truth = |f: &dyn Fn(&Patient) -> bool| {
        cohorts
            .iter()
            .flatten()
            .filter(|p| p.consents && !p.withdraws && f(p))
            .count()
    };

    println!("\nquery 1: how many consenting patients have diabetes? (count, ε = 0.5)");
    let r = ask(
        &mut d,
        QueryKind::Count,
        500_000,
        "diagnosis E10-E14 (diabetes mellitus) on record",
        &|p| Measurement::Count(p.diabetes),
    )?
    .map_err(|e| format!("query 1 refused: {e}"))?;
    println!(
        "  noisy answer {:>6}   true answer {:>6}   ({} reports)",
        r.values[0],
        truth(&|p| p.diabetes),
        r.reports
    );

    println!("\nquery 2: age bands of consenting patients (histogram of 6, ε = 0.5)");
    let r = ask(
        &mut d,
        QueryKind::Histogram {
            buckets: AGE_BANDS.len() as u32,
        },
        500_000,
        "all consenting patients, by age band",
        &|p| Measurement::Bucket(p.age_band),
    )?
    .map_err(|e| format!("query 2 refused: {e}"))?;
    for (b, band) in AGE_BANDS.iter().enumerate() {
        println!(
            "  {band:>6}: noisy {:>6}   true {:>6}",
            r.values[b],
            truth(&|p| p.age_band == b as u32)
        );
    }

    let s = d.chain.access().study(&study).expect("approved");
    println!(
        "\nprivacy budget: {} spent of {}, {} left",
        s.spent,
        s.budget,
        s.remaining()
    );

    println!("\nquery 3: a sum over the budget (ε = 0.1)");
    match ask(
        &mut d,
        QueryKind::Sum { max: 300 },
        100_000,
        "HbA1c in mmol/mol",
        &|_| Measurement::Value(0),
    )? {
        Ok(_) => return Err("query 3 should have been refused".into()),
        Err(e) => println!("  refused on chain: {e}"),
    }
    let trail = d.chain.access().study_trail(&study);
    println!(
        "\nthe study's audit trail holds {} entries; done in {:.1} s",
        trail.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
