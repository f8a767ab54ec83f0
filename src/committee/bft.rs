//! One committee's agreement on one value: a two-phase, locking BFT protocol.
//!
//! Rounds have a leader each (rotating over the members). The leader proposes; members prevote
//! the proposal if it is valid and compatible with their lock; more than two thirds of prevotes
//! for a value in a round lock it and trigger a precommit; more than two thirds of precommits for
//! a value in one round decide it. A member whose round times out, who sees the leader sign
//! two proposals for the round, or whose prevotes show that no value can reach a quorum any
//! more (the leader showed members different values), moves to the next round and tells the
//! others, with the highest prevote quorum it knows; the next leader re-proposes the value of
//! the highest such quorum. A member that holds that value sends it to the new round's leader
//! with its round change, because a leader may have seen only the value's digest (in prevotes
//! and round changes) and cannot re-propose what it does not hold.
//! A locked member prevotes another value only with a prevote quorum for it from a round at or
//! after its lock, which is what keeps two values from both being decided.
//!
//! A prevote carries the leader's signature of the proposal it is for. A member that holds the
//! leader's signatures of two values for one round (the proposal it received and a prevote's,
//! or two prevotes') holds proof that the leader equivocated: it leaves the round on the first
//! prevote that proves it, without waiting for the prevotes to show a split, and the next
//! round's leader, holding the same proof, proposes at once instead of waiting for a quorum of
//! round changes. Neither touches agreement: leaving a round is always safe, and what a leader
//! proposes never overrides a lock (a leader that missed a lock only wastes its round, and the
//! next leader collects the round changes as usual).
//!
//! A leader that re-proposes a value sends only its digest and signature
//! ([`DigestProposal`]) to the members whose prevote for it shows that they hold it (an honest
//! member prevotes only a value it holds), and the value itself to the others. A member checks
//! a value once per height: a value proposed again in a later round is not validated again.

use std::collections::{BTreeMap, BTreeSet};

use super::messages::{
    DigestProposal, Message, Pol, Precommits, Proposal, RoundChange, Value, Vote,
};
use super::seal::{MemberSignature, Phase, SigItem, Stage, VoteBody};
use crate::codec::BoundedVec;
use crate::hash::{BlockHash, Digest};
use crate::tx::{PublicKey, Signature};

/// What the agreement needs from the node around it.
pub(crate) trait BftCtx {
    /// Signs a vote body with the node's key.
    fn sign(&mut self, body: &VoteBody) -> Signature;
    /// Checks signatures (index of a bad one on failure).
    fn check(&mut self, items: &[SigItem]) -> Result<(), usize>;
    /// Whether a proposed value is valid, or cannot be checked yet.
    fn validate(&mut self, value: &Value, now: u64) -> Validity;
    /// A fresh value to propose, if one is ready.
    fn propose(&mut self, now: u64) -> Option<Value>;
}

/// What a member found of a proposed value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Validity {
    /// Valid: the member prevotes it.
    Valid,
    /// Invalid: the member never prevotes it.
    Invalid,
    /// Not checkable yet: the member lacks something the value builds on (a final value's
    /// shard result). The member keeps the proposal and checks it again when the node
    /// drives the agreement without a message ([`Bft::tick`]), as it does when what was
    /// missing arrives.
    Unknown,
}

/// What the agreement asks the node to do.
pub(crate) enum BftOut {
    /// Send to every other member.
    Broadcast(Box<Message>),
    /// Send to the members with these indices.
    Send(Vec<usize>, Box<Message>),
    /// The value with this digest is decided in `round`.
    Decided { round: u32, value: Digest },
}

fn bcast(m: Message) -> BftOut {
    BftOut::Broadcast(Box::new(m))
}

type Votes = BTreeMap<(u32, Digest), BTreeMap<u16, Signature>>;

pub(crate) struct Bft {
    pub height: u64,
    pub parent: BlockHash,
    pub stage: Stage,
    /// The epoch's attempt at this height (signed in every vote; 0 until a restart).
    pub attempt: u32,
    pub members: Vec<PublicKey>,
    pub me: usize,
    quorum: usize,
    base_timeout: u64,
    pub round: u32,
    deadline: u64,
    proposals: BTreeMap<u32, Digest>,
    /// The leader's signature of the proposal accepted in each round, sent with our prevote.
    proposal_sigs: BTreeMap<u32, Signature>,
    /// For rounds whose proposal has not arrived: a value a prevote says the round's leader
    /// proposed, with the leader's signature it carried. The signature is checked only when
    /// another value turns up, so that honest rounds cost no extra check.
    attested: BTreeMap<u32, (Digest, Signature)>,
    /// Rounds whose leader is proven to have signed two proposals.
    equivocated: BTreeSet<u32>,
    pub values: BTreeMap<Digest, Value>,
    /// Values this member found valid (or built) at this height: a value proposed again in a
    /// later round is not checked again.
    validated: BTreeSet<Digest>,
    pending: BTreeMap<u32, Proposal>,
    prevotes: Votes,
    precommits: Votes,
    prevoted_by: BTreeSet<(u32, u16, Digest)>,
    precommitted_by: BTreeSet<(u32, u16, Digest)>,
    /// Whether to echo the decided round's precommits, so that every honest member ends with
    /// the same set and seals the same certificate.
    pub echo: bool,
    sent_prevote: BTreeSet<u32>,
    sent_precommit: BTreeSet<u32>,
    locked: Option<(u32, Digest)>,
    pol: Option<(u32, Digest, Vec<MemberSignature>)>,
    round_changes: BTreeMap<u32, BTreeMap<u16, Option<(Digest, Pol)>>>,
    proposed: BTreeSet<u32>,
    /// The current round's proposal that could not be checked yet ([`Validity::Unknown`]):
    /// its round, its value's digest and the round of the prevote quorum it came with, if
    /// valid.
    unchecked: Option<(u32, Digest, Option<u32>)>,
    pub decided: Option<(u32, Digest)>,
}

/// Rounds beyond the current one whose messages are kept.
const ROUND_WINDOW: u32 = 64;

impl Bft {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        height: u64,
        parent: BlockHash,
        stage: Stage,
        members: Vec<PublicKey>,
        me: usize,
        quorum: usize,
        base_timeout: u64,
        now: u64,
    ) -> Self {
        Self {
            height,
            parent,
            stage,
            attempt: 0,
            members,
            me,
            quorum,
            base_timeout,
            round: 0,
            deadline: now.saturating_add(base_timeout),
            proposals: BTreeMap::new(),
            proposal_sigs: BTreeMap::new(),
            attested: BTreeMap::new(),
            equivocated: BTreeSet::new(),
            values: BTreeMap::new(),
            validated: BTreeSet::new(),
            pending: BTreeMap::new(),
            prevotes: BTreeMap::new(),
            precommits: BTreeMap::new(),
            prevoted_by: BTreeSet::new(),
            precommitted_by: BTreeSet::new(),
            echo: false,
            sent_prevote: BTreeSet::new(),
            sent_precommit: BTreeSet::new(),
            locked: None,
            pol: None,
            round_changes: BTreeMap::new(),
            proposed: BTreeSet::new(),
            unchecked: None,
            decided: None,
        }
    }

    pub fn leader(&self, round: u32) -> usize {
        ((self.height + u64::from(round)) % self.members.len() as u64) as usize
    }

    pub fn deadline(&self) -> Option<u64> {
        self.decided.is_none().then_some(self.deadline)
    }

    /// Moves the current round's deadline (the final committee's first round waits for shards).
    pub fn set_deadline(&mut self, at: u64) {
        self.deadline = at;
    }

    fn timeout(&self, round: u32) -> u64 {
        self.base_timeout.saturating_mul(1 << round.min(6))
    }

    fn body(&self, round: u32, phase: Phase, value: Digest) -> VoteBody {
        VoteBody {
            height: self.height,
            parent: self.parent,
            stage: self.stage,
            attempt: self.attempt,
            round,
            phase,
            value,
        }
    }

    /// The precommit signatures of the decided round, lowest member indices first, `quorum` of
    /// them (so that members that saw the same precommits build the same certificate).
    pub fn certificate(&self) -> Option<(u32, Vec<MemberSignature>)> {
        let (round, value) = self.decided?;
        let sigs = self.precommits.get(&(round, value))?;
        Some((
            round,
            sigs.iter()
                .take(self.quorum)
                .map(|(m, s)| MemberSignature {
                    member: *m,
                    signature: *s,
                })
                .collect(),
        ))
    }

    pub fn tick(&mut self, now: u64, ctx: &mut dyn BftCtx) -> Vec<BftOut> {
        let mut out = Vec::new();
        if self.decided.is_none() && now >= self.deadline {
            self.enter_round(self.round + 1, now, ctx, &mut out);
        }
        self.check_again(now, ctx, &mut out);
        self.progress(now, ctx, &mut out);
        out
    }

    /// Whether the current round's proposal is waiting to be checked (for the node: then it
    /// asks for what the check lacks).
    pub fn unchecked(&self) -> Option<(u32, Digest)> {
        self.unchecked.map(|(round, digest, _)| (round, digest))
    }

    /// Whether this member's lock lets it prevote `digest`, proposed with a prevote quorum of
    /// round `pol_round` (if it came with a valid one): unlocked, locked on it, or the quorum
    /// is as recent as the lock.
    fn lock_allows(&self, digest: Digest, pol_round: Option<u32>) -> bool {
        match self.locked {
            None => true,
            Some((lr, ld)) => ld == digest || pol_round.is_some_and(|r| r >= lr),
        }
    }

    /// Checks again a proposal of the current round that could not be checked when it came,
    /// and prevotes it if it is valid now.
    fn check_again(&mut self, now: u64, ctx: &mut dyn BftCtx, out: &mut Vec<BftOut>) {
        let Some((round, digest, pol_round)) = self.unchecked else {
            return;
        };
        if round != self.round || self.decided.is_some() || self.sent_prevote.contains(&round) {
            self.unchecked = None;
            return;
        }
        let Some(value) = self.values.get(&digest) else {
            self.unchecked = None;
            return;
        };
        let validity = match self.lock_allows(digest, pol_round) {
            true => ctx.validate(value, now),
            false => Validity::Invalid,
        };
        if validity != Validity::Unknown {
            self.unchecked = None;
        }
        if validity == Validity::Valid {
            self.validated.insert(digest);
            self.send_vote(Phase::Prevote, round, digest, ctx, out);
        }
    }

    fn enter_round(&mut self, round: u32, now: u64, ctx: &mut dyn BftCtx, out: &mut Vec<BftOut>) {
        if round <= self.round {
            return;
        }
        self.round = round;
        self.deadline = now.saturating_add(self.timeout(round));
        let pol = self.pol.as_ref().map(|(r, d, sigs)| {
            (
                *d,
                Pol {
                    round: *r,
                    signatures: BoundedVec::try_from(sigs.clone())
                        .expect("a prevote quorum fits in a committee"),
                },
            )
        });
        // The leader gets the quorum's value too, if we hold it: it may know only its digest.
        let leader = self.leader(round);
        let value = match &pol {
            Some((d, _)) if leader != self.me => self.values.get(d).cloned(),
            _ => None,
        };
        self.round_changes
            .entry(round)
            .or_default()
            .insert(self.me as u16, pol.clone());
        let rc = RoundChange {
            height: self.height,
            parent: self.parent,
            stage: self.stage,
            round,
            pol,
            value: None,
        };
        match value {
            None => out.push(bcast(Message::RoundChange(rc))),
            Some(v) => {
                let others = (0..self.members.len())
                    .filter(|i| *i != self.me && *i != leader)
                    .collect();
                out.push(BftOut::Send(
                    others,
                    Box::new(Message::RoundChange(rc.clone())),
                ));
                let to_leader = RoundChange {
                    value: Some(v),
                    ..rc
                };
                out.push(BftOut::Send(
                    vec![leader],
                    Box::new(Message::RoundChange(to_leader)),
                ));
            }
        }
        if let Some(p) = self.pending.remove(&round) {
            let from = self.leader(round);
            self.accept_proposal(p, from, now, ctx, out);
        }
    }

    /// Verifies a prevote quorum for `value` at `pol.round`.
    fn pol_valid(&self, value: Digest, pol: &Pol, ctx: &mut dyn BftCtx) -> bool {
        if pol.signatures.len() < self.quorum {
            return false;
        }
        let digest = self.body(pol.round, Phase::Prevote, value).digest();
        let mut items = Vec::with_capacity(pol.signatures.len());
        for (i, s) in pol.signatures.iter().enumerate() {
            if usize::from(s.member) >= self.members.len()
                || (i > 0 && pol.signatures[i - 1].member >= s.member)
            {
                return false;
            }
            items.push((self.members[usize::from(s.member)], digest, s.signature));
        }
        ctx.check(&items).is_ok()
    }

    fn set_pol(&mut self, round: u32, value: Digest, sigs: Vec<MemberSignature>) {
        if !matches!(&self.pol, Some((r, _, _)) if *r >= round) {
            self.pol = Some((round, value, sigs));
        }
    }

    pub fn on_proposal(
        &mut self,
        p: Proposal,
        from: usize,
        now: u64,
        ctx: &mut dyn BftCtx,
    ) -> Vec<BftOut> {
        let mut out = Vec::new();
        if p.round > self.round {
            if p.round <= self.round + ROUND_WINDOW && from == self.leader(p.round) {
                self.pending.entry(p.round).or_insert(p);
            }
        } else {
            self.accept_proposal(p, from, now, ctx, &mut out);
        }
        self.progress(now, ctx, &mut out);
        out
    }

    /// Handles a proposal by digest: for a value this member holds it is that value's
    /// proposal. A member that does not hold the value ignores it, as if the proposal had not
    /// reached it (the leader sends the digest only to members whose prevote for the value it
    /// has seen, and an honest member prevotes only a value it holds).
    pub fn on_digest_proposal(
        &mut self,
        p: DigestProposal,
        from: usize,
        now: u64,
        ctx: &mut dyn BftCtx,
    ) -> Vec<BftOut> {
        let Some(value) = self.values.get(&p.value).cloned() else {
            return Vec::new();
        };
        let proposal = Proposal {
            height: p.height,
            parent: p.parent,
            stage: p.stage,
            round: p.round,
            value,
            pol: p.pol,
            signature: p.signature,
        };
        self.on_proposal(proposal, from, now, ctx)
    }

    fn accept_proposal(
        &mut self,
        p: Proposal,
        from: usize,
        now: u64,
        ctx: &mut dyn BftCtx,
        out: &mut Vec<BftOut>,
    ) {
        if from != self.leader(p.round) {
            return;
        }
        let digest = p.value.digest(self.stage);
        let body = self.body(p.round, Phase::Propose, digest);
        if from != self.me
            && ctx
                .check(&[(self.members[from], body.digest(), p.signature)])
                .is_err()
        {
            return;
        }
        match self.proposals.get(&p.round) {
            Some(d) if *d != digest => {
                // The leader signed two proposals for one round: move on at once.
                self.equivocation(p.round, now, ctx, out);
                return;
            }
            Some(_) => return,
            None => {}
        }
        self.proposals.insert(p.round, digest);
        self.proposal_sigs.insert(p.round, p.signature);
        if let Some((d, s)) = self.attested.remove(&p.round) {
            if d != digest && self.leader_signed(p.round, d, s, ctx) {
                // A prevote showed the leader's signature of another value for this round.
                self.values.entry(digest).or_insert(p.value);
                self.equivocation(p.round, now, ctx, out);
                return;
            }
        }
        if p.round != self.round || self.decided.is_some() || self.sent_prevote.contains(&p.round) {
            self.values.entry(digest).or_insert(p.value);
            return;
        }
        let pol_ok = match &p.pol {
            Some(pol) if pol.round < p.round => {
                let ok = self.pol_valid(digest, pol, ctx);
                if ok {
                    self.set_pol(pol.round, digest, pol.signatures.to_vec());
                }
                ok.then_some(pol.round)
            }
            _ => None,
        };
        let lock_ok = self.lock_allows(digest, pol_ok);
        // A leader does not re-check the value it just built, nor a member a value it found
        // valid in an earlier round of this height (the height's parent and state are the
        // same).
        let validity = if !lock_ok {
            Validity::Invalid
        } else if from == self.me || self.validated.contains(&digest) {
            Validity::Valid
        } else {
            ctx.validate(&p.value, now)
        };
        self.values.entry(digest).or_insert(p.value);
        match validity {
            Validity::Valid => {
                self.validated.insert(digest);
                self.send_vote(Phase::Prevote, p.round, digest, ctx, out);
            }
            Validity::Unknown => self.unchecked = Some((p.round, digest, pol_ok)),
            Validity::Invalid => {}
        }
    }

    /// The leader of `round` is proven to have signed two proposals for it: a member still in
    /// the round leaves it at once, without waiting for the prevotes to show a split, and the
    /// next round's leader proposes without waiting for round changes (see
    /// [`progress`](Self::progress)).
    fn equivocation(&mut self, round: u32, now: u64, ctx: &mut dyn BftCtx, out: &mut Vec<BftOut>) {
        self.equivocated.insert(round);
        if round == self.round && self.decided.is_none() {
            self.enter_round(round + 1, now, ctx, out);
        }
    }

    /// Whether `signature` is the leader of `round`'s signature of a proposal of `value`.
    fn leader_signed(
        &self,
        round: u32,
        value: Digest,
        signature: Signature,
        ctx: &mut dyn BftCtx,
    ) -> bool {
        let body = self.body(round, Phase::Propose, value);
        ctx.check(&[(self.members[self.leader(round)], body.digest(), signature)])
            .is_ok()
    }

    /// Looks at the leader's signature a prevote carries: with the leader's signature of
    /// another value for the round (the proposal received, or one another prevote carried), it
    /// proves that the leader equivocated. Only the current and the previous round are looked
    /// at (later ones cannot be acted on yet, earlier ones no longer matter), and signatures
    /// are checked only once two values turn up.
    fn check_attestation(
        &mut self,
        v: &Vote,
        now: u64,
        ctx: &mut dyn BftCtx,
        out: &mut Vec<BftOut>,
    ) {
        let Some(signature) = v.proposal else {
            return;
        };
        if v.phase != Phase::Prevote
            || !(v.round == self.round || v.round + 1 == self.round)
            || self.equivocated.contains(&v.round)
        {
            return;
        }
        if let Some(d) = self.proposals.get(&v.round) {
            if *d != v.value && self.leader_signed(v.round, v.value, signature, ctx) {
                self.equivocation(v.round, now, ctx, out);
            }
            return;
        }
        match self.attested.get(&v.round).copied() {
            None => {
                self.attested.insert(v.round, (v.value, signature));
            }
            Some((d, _)) if d == v.value => {}
            Some((d, s)) => {
                if !self.leader_signed(v.round, v.value, signature, ctx) {
                    return;
                }
                if self.leader_signed(v.round, d, s, ctx) {
                    self.equivocation(v.round, now, ctx, out);
                } else {
                    // The first was made up: keep the one the leader did sign.
                    self.attested.insert(v.round, (v.value, signature));
                }
            }
        }
    }

    fn send_vote(
        &mut self,
        phase: Phase,
        round: u32,
        value: Digest,
        ctx: &mut dyn BftCtx,
        out: &mut Vec<BftOut>,
    ) {
        let sent = match phase {
            Phase::Prevote => &mut self.sent_prevote,
            Phase::Precommit => &mut self.sent_precommit,
            Phase::Propose => return,
        };
        if !sent.insert(round) {
            return;
        }
        let signature = ctx.sign(&self.body(round, phase, value));
        let proposal = match phase {
            Phase::Prevote => self.proposal_sigs.get(&round).copied(),
            _ => None,
        };
        let vote = Vote {
            height: self.height,
            parent: self.parent,
            stage: self.stage,
            round,
            phase,
            value,
            member: self.me as u16,
            signature,
            proposal,
        };
        self.record_vote(&vote);
        out.push(bcast(Message::Vote(vote)));
    }

    /// Records a vote; a member's votes for different values are all kept (an equivocating
    /// member counts towards each, as quorum intersection allows).
    fn record_vote(&mut self, v: &Vote) -> bool {
        let (by, votes) = match v.phase {
            Phase::Prevote => (&mut self.prevoted_by, &mut self.prevotes),
            Phase::Precommit => (&mut self.precommitted_by, &mut self.precommits),
            Phase::Propose => return false,
        };
        if !by.insert((v.round, v.member, v.value)) {
            return false;
        }
        votes
            .entry((v.round, v.value))
            .or_default()
            .insert(v.member, v.signature);
        true
    }

    /// Handles a vote. Votes are checked against the key of the member they name, so that they
    /// can be relayed by others.
    pub fn on_vote(&mut self, v: Vote, now: u64, ctx: &mut dyn BftCtx) -> Vec<BftOut> {
        let mut out = Vec::new();
        let member = usize::from(v.member);
        if member >= self.members.len() || v.round > self.round + ROUND_WINDOW {
            return out;
        }
        let seen = match v.phase {
            Phase::Prevote => &self.prevoted_by,
            Phase::Precommit => &self.precommitted_by,
            Phase::Propose => return out,
        };
        if seen.contains(&(v.round, v.member, v.value)) {
            return out;
        }
        let digest = self.body(v.round, v.phase, v.value).digest();
        if ctx
            .check(&[(self.members[member], digest, v.signature)])
            .is_err()
        {
            return out;
        }
        self.record_vote(&v);
        self.check_attestation(&v, now, ctx, &mut out);
        if self.echo && v.phase == Phase::Precommit && self.decided == Some((v.round, v.value)) {
            out.push(self.bundle(
                v.round,
                v.value,
                vec![MemberSignature {
                    member: v.member,
                    signature: v.signature,
                }],
            ));
        }
        self.progress(now, ctx, &mut out);
        out
    }

    fn bundle(&self, round: u32, value: Digest, signatures: Vec<MemberSignature>) -> BftOut {
        bcast(Message::Precommits(Precommits {
            height: self.height,
            parent: self.parent,
            stage: self.stage,
            round,
            value,
            signatures: BoundedVec::try_from(signatures).expect("at most one per member"),
        }))
    }

    /// Handles relayed precommits: each is checked against the member it names.
    pub fn on_precommits(&mut self, p: Precommits, now: u64, ctx: &mut dyn BftCtx) -> Vec<BftOut> {
        let mut out = Vec::new();
        if p.round > self.round + ROUND_WINDOW {
            return out;
        }
        let digest = self.body(p.round, Phase::Precommit, p.value).digest();
        let mut fresh = Vec::new();
        for s in &p.signatures {
            let m = usize::from(s.member);
            if m >= self.members.len()
                || self.precommitted_by.contains(&(p.round, s.member, p.value))
                || ctx
                    .check(&[(self.members[m], digest, s.signature)])
                    .is_err()
            {
                continue;
            }
            self.record_vote(&Vote {
                height: self.height,
                parent: self.parent,
                stage: self.stage,
                round: p.round,
                phase: Phase::Precommit,
                value: p.value,
                member: s.member,
                signature: s.signature,
                proposal: None,
            });
            fresh.push(*s);
        }
        if self.echo && !fresh.is_empty() && self.decided == Some((p.round, p.value)) {
            out.push(self.bundle(p.round, p.value, fresh));
        }
        self.progress(now, ctx, &mut out);
        out
    }

    pub fn on_round_change(
        &mut self,
        rc: RoundChange,
        from: usize,
        now: u64,
        ctx: &mut dyn BftCtx,
    ) -> Vec<BftOut> {
        let mut out = Vec::new();
        if rc.round == 0 || rc.round > self.round + ROUND_WINDOW {
            return out;
        }
        let pol = match rc.pol {
            Some((d, pol)) if pol.round < rc.round && self.pol_valid(d, &pol, ctx) => {
                self.set_pol(pol.round, d, pol.signatures.to_vec());
                // The quorum's value, kept only if it is the value the quorum prevoted. It
                // needs no validation here: a quorum of prevotes holds one from an honest
                // member, which validated it.
                if let Some(v) = rc.value {
                    if v.digest(self.stage) == d {
                        self.values.entry(d).or_insert(v);
                    }
                }
                Some((d, pol))
            }
            _ => None,
        };
        self.round_changes
            .entry(rc.round)
            .or_default()
            .entry(from as u16)
            .or_insert(pol);
        // Enough members have moved past our round: follow them to the lowest such round.
        if self.decided.is_none() {
            let f1 = self.members.len().saturating_sub(self.quorum) + 1;
            let target = self
                .round_changes
                .range(self.round + 1..)
                .rev()
                .scan(BTreeSet::new(), |acc, (r, m)| {
                    acc.extend(m.keys().copied());
                    Some((*r, acc.len()))
                })
                .filter(|(_, n)| *n >= f1)
                .map(|(r, _)| r)
                .max();
            if let Some(r) = target {
                self.enter_round(r, now, ctx, &mut out);
            }
        }
        self.progress(now, ctx, &mut out);
        out
    }

    fn progress(&mut self, now: u64, ctx: &mut dyn BftCtx, out: &mut Vec<BftOut>) {
        if self.decided.is_some() {
            return;
        }
        if self.round_is_split(self.round) {
            self.enter_round(self.round + 1, now, ctx, out);
        }
        let round = self.round;
        // Propose if leader.
        if self.leader(round) == self.me && !self.proposed.contains(&round) {
            // After proof that the previous round's leader equivocated, the next leader
            // proposes at once (its own highest prevote quorum, if any) rather than wait for
            // a quorum of round changes: a leader's choice never endangers agreement (the
            // locks do), and if members locked a value it did not know of, the round fails
            // and the next leader collects the round changes as usual.
            let ready = round == 0
                || self.equivocated.contains(&(round - 1))
                || self
                    .round_changes
                    .get(&round)
                    .is_some_and(|m| m.len() >= self.quorum);
            if ready {
                if let Some(p) = self.make_proposal(round, now, ctx) {
                    self.proposed.insert(round);
                    self.send_proposal(&p, out);
                    self.accept_proposal(p, self.me, now, ctx, out);
                }
            }
        }
        // Prevote quorum in this round: lock and precommit.
        if !self.sent_precommit.contains(&round) {
            let q = self
                .prevotes
                .range((round, Digest::from_bytes([0; 32]))..)
                .take_while(|((r, _), _)| *r == round)
                .find(|(_, s)| s.len() >= self.quorum)
                .map(|((_, d), s)| (*d, s.clone()));
            if let Some((d, sigs)) = q {
                let sigs: Vec<MemberSignature> = sigs
                    .into_iter()
                    .take(self.quorum)
                    .map(|(member, signature)| MemberSignature { member, signature })
                    .collect();
                self.set_pol(round, d, sigs);
                if self.values.contains_key(&d) {
                    self.locked = Some((round, d));
                    self.send_vote(Phase::Precommit, round, d, ctx, out);
                }
            }
        }
        // Precommit quorum in any round: decide.
        if let Some(((r, d), sigs)) = self.precommits.iter().find(|(_, s)| s.len() >= self.quorum) {
            let (r, d) = (*r, *d);
            if self.echo {
                let all = sigs
                    .iter()
                    .map(|(m, s)| MemberSignature {
                        member: *m,
                        signature: *s,
                    })
                    .collect();
                out.push(self.bundle(r, d, all));
            }
            self.decided = Some((r, d));
            out.push(BftOut::Decided { round: r, value: d });
        }
    }

    /// Whether no value can reach a prevote quorum in `round` any more: for every value, its
    /// prevotes and the members yet to prevote fall short of a quorum. A member prevotes once
    /// in a round, so waiting for the round's timeout cannot help: an equivocating leader
    /// showed members different values (or members judged its proposal differently). Leaving
    /// a round early is always safe (locks, not rounds, keep two values from both being
    /// decided) and spares the committee the timeout; while enough members have not prevoted
    /// (silent, or their votes still on the way) the round stays open until its timeout.
    fn round_is_split(&self, round: u32) -> bool {
        if self.sent_precommit.contains(&round) {
            return false;
        }
        let lo = (round, 0u16, Digest::from_bytes([0; 32]));
        let hi = (round, u16::MAX, Digest::from_bytes([0xff; 32]));
        let voters: BTreeSet<u16> = self
            .prevoted_by
            .range(lo..=hi)
            .map(|(_, m, _)| *m)
            .collect();
        let missing = self.members.len().saturating_sub(voters.len());
        let best = self
            .prevotes
            .range((round, Digest::from_bytes([0; 32]))..)
            .take_while(|((r, _), _)| *r == round)
            .map(|(_, s)| s.len())
            .max()
            .unwrap_or(0);
        !voters.is_empty() && best + missing < self.quorum
    }

    /// Whether this member holds proof that the leader of `round` signed two proposals.
    pub fn proven_equivocated(&self, round: u32) -> bool {
        self.equivocated.contains(&round)
    }

    /// The members whose prevote this member has seen in some round of this height, each with
    /// the value it prevoted (an honest member prevotes only a value it holds and found valid).
    pub fn prevoters(&self) -> impl Iterator<Item = (usize, Digest)> + '_ {
        self.prevoted_by
            .iter()
            .map(|(_, m, d)| (usize::from(*m), *d))
    }

    /// Sends the leader's proposal `p`: by digest to the members whose prevote for its value
    /// (in any round of this height) shows that they hold it, in full to the others. The
    /// digests go first: they are small, and the members that hold the value can prevote
    /// while the value itself is still on its way to the rest.
    fn send_proposal(&self, p: &Proposal, out: &mut Vec<BftOut>) {
        let digest = p.value.digest(self.stage);
        let holders: BTreeSet<usize> = self
            .prevoted_by
            .iter()
            .filter(|(_, m, d)| *d == digest && usize::from(*m) != self.me)
            .map(|(_, m, _)| usize::from(*m))
            .collect();
        if holders.is_empty() {
            out.push(bcast(Message::Proposal(p.clone())));
            return;
        }
        out.push(BftOut::Send(
            holders.iter().copied().collect(),
            Box::new(Message::DigestProposal(DigestProposal {
                height: p.height,
                parent: p.parent,
                stage: p.stage,
                round: p.round,
                value: digest,
                pol: p.pol.clone(),
                signature: p.signature,
            })),
        ));
        let others: Vec<usize> = (0..self.members.len())
            .filter(|i| *i != self.me && !holders.contains(i))
            .collect();
        if !others.is_empty() {
            out.push(BftOut::Send(others, Box::new(Message::Proposal(p.clone()))));
        }
    }

    fn make_proposal(&mut self, round: u32, now: u64, ctx: &mut dyn BftCtx) -> Option<Proposal> {
        // The highest prevote quorum among our own and the round changes received.
        let mut best = self.pol.clone();
        if let Some(m) = self.round_changes.get(&round) {
            for (d, pol) in m.values().flatten() {
                if !matches!(&best, Some((r, _, _)) if *r >= pol.round) {
                    best = Some((pol.round, *d, pol.signatures.to_vec()));
                }
            }
        }
        let (value, pol) = match best {
            Some((r, d, sigs)) => {
                let v = self.values.get(&d)?.clone();
                let pol = Pol {
                    round: r,
                    signatures: BoundedVec::try_from(sigs).ok()?,
                };
                (v, Some(pol))
            }
            None => (ctx.propose(now)?, None),
        };
        let digest = value.digest(self.stage);
        let signature = ctx.sign(&self.body(round, Phase::Propose, digest));
        Some(Proposal {
            height: self.height,
            parent: self.parent,
            stage: self.stage,
            round,
            value,
            pol,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee::messages::{Roster, ShardValue};
    use crate::tx::Keypair;

    /// Signs with the member's key, checks signatures, takes every value, and proposes an
    /// empty shard.
    struct Member(Keypair);

    impl BftCtx for Member {
        fn sign(&mut self, body: &VoteBody) -> Signature {
            self.0.sign(&body.digest())
        }
        fn check(&mut self, items: &[SigItem]) -> Result<(), usize> {
            for (i, (key, message, signature)) in items.iter().enumerate() {
                let ok = key.verifying_key().is_ok_and(|k| {
                    k.verify_strict(
                        message,
                        &ed25519_dalek::Signature::from_bytes(&signature.to_bytes()),
                    )
                    .is_ok()
                });
                if !ok {
                    return Err(i);
                }
            }
            Ok(())
        }
        fn validate(&mut self, _: &Value, _: u64) -> Validity {
            Validity::Valid
        }
        fn propose(&mut self, _: u64) -> Option<Value> {
            Some(value(2).0)
        }
    }

    fn keypair(i: u8) -> Keypair {
        Keypair::from_seed(&[i + 1; 32])
    }

    /// A value no other value equals: an empty shard value's digest depends on the stage, so
    /// the two values differ by the shard their summary names.
    fn value(shard: u16) -> (Value, Digest) {
        let v = Value::Shard(ShardValue {
            txs: BoundedVec::new(),
        });
        let d = v.digest(Stage::Shard(shard));
        (v, d)
    }

    /// Member `me` of four (quorum 3) at height 1, where round `r`'s leader is member
    /// `(1 + r) % 4`.
    fn member(me: u8) -> (Bft, Member) {
        let members = (0..4).map(|i| keypair(i).public()).collect();
        let bft = Bft::new(
            1,
            BlockHash::from_bytes([7; 32]),
            Stage::Shard(0),
            members,
            usize::from(me),
            3,
            2_000_000,
            0,
        );
        (bft, Member(keypair(me)))
    }

    fn member_zero() -> (Bft, Member) {
        member(0)
    }

    fn prevote(bft: &Bft, member: u8, value: Digest) -> Vote {
        Vote {
            height: bft.height,
            parent: bft.parent,
            stage: bft.stage,
            round: 0,
            phase: Phase::Prevote,
            value,
            member: u16::from(member),
            signature: keypair(member).sign(&bft.body(0, Phase::Prevote, value).digest()),
            proposal: None,
        }
    }

    /// Round 0's leader's (member 1's) signature of a proposal of `value`.
    fn leader_signature(bft: &Bft, value: Digest) -> Signature {
        keypair(1).sign(&bft.body(0, Phase::Propose, value).digest())
    }

    /// The leader's (member 1's) round-0 proposal of `value`, whose digest is `digest`.
    fn round_zero_proposal(bft: &Bft, value: Value, digest: Digest) -> Proposal {
        Proposal {
            height: 1,
            parent: bft.parent,
            stage: bft.stage,
            round: 0,
            value,
            pol: None,
            signature: leader_signature(bft, digest),
        }
    }

    /// `member`'s prevote for `value` in round 0, with the leader's signature of its proposal.
    fn prevote_with_proposal(bft: &Bft, member: u8, value: Digest) -> Vote {
        Vote {
            proposal: Some(leader_signature(bft, value)),
            ..prevote(bft, member, value)
        }
    }

    /// Member 0 gets the leader's proposal of `a` and prevotes it; then the prevotes of the
    /// members in `votes`.
    fn split_round(votes: &[(u8, Digest)]) -> (Bft, Member, Vec<BftOut>) {
        let (mut bft, mut ctx) = member_zero();
        let (a, da) = value(0);
        let proposal = round_zero_proposal(&bft, a, da);
        let mut out = bft.on_proposal(proposal, 1, 10, &mut ctx);
        for (m, d) in votes {
            let v = prevote(&bft, *m, *d);
            out.extend(bft.on_vote(v, 20, &mut ctx));
        }
        (bft, ctx, out)
    }

    #[test]
    fn a_round_split_by_an_equivocating_leader_ends_once_no_value_can_reach_a_quorum() {
        let (_, da) = value(0);
        let (_, db) = value(1);
        // The leader (1) showed member 2 another value; member 3 prevotes `a`: `a` has 0, 1
        // and 3, a quorum.
        let (bft, _, _) = split_round(&[(1, da), (2, db), (3, da)]);
        assert_eq!(bft.round, 0, "a quorum for one value keeps the round");
        // Member 3 was shown `b` too: 2 votes each and nobody left to vote; the round ends at
        // once, long before its 2 s timeout, with a round change to the others.
        let (bft, _, out) = split_round(&[(1, da), (2, db), (3, db)]);
        assert_eq!(bft.round, 1);
        assert!(out.iter().any(|o| matches!(
            o,
            BftOut::Broadcast(m) if matches!(**m, Message::RoundChange(RoundChange { round: 1, .. }))
        )));
    }

    #[test]
    fn a_round_waits_for_its_timeout_while_missing_prevotes_could_still_make_a_quorum() {
        let (_, da) = value(0);
        let (_, db) = value(1);
        // 0 and 1 for `a`, 2 for `b`, 3 not heard: 3's vote would make a quorum for `a`.
        let (mut bft, mut ctx, _) = split_round(&[(1, da), (2, db)]);
        assert_eq!(bft.round, 0);
        bft.tick(1_000_000, &mut ctx);
        assert_eq!(bft.round, 0);
        bft.tick(2_000_000, &mut ctx);
        assert_eq!(bft.round, 1, "the timeout still ends the round");
    }

    /// The round-0 prevote quorum of members 0, 1 and 3 for `value`.
    fn quorum_for(bft: &Bft, value: Digest) -> Pol {
        let signatures: Vec<MemberSignature> = [0u8, 1, 3]
            .iter()
            .map(|m| MemberSignature {
                member: u16::from(*m),
                signature: prevote(bft, *m, value).signature,
            })
            .collect();
        Pol {
            round: 0,
            signatures: BoundedVec::try_from(signatures).unwrap(),
        }
    }

    fn round_change(bft: &Bft, pol: &Pol, digest: Digest, value: Option<Value>) -> RoundChange {
        RoundChange {
            height: bft.height,
            parent: bft.parent,
            stage: bft.stage,
            round: 1,
            pol: Some((digest, pol.clone())),
            value,
        }
    }

    /// The full proposals among `out`, to everyone or to some.
    fn proposals(out: &[BftOut]) -> Vec<&Proposal> {
        out.iter()
            .filter_map(|o| match o {
                BftOut::Broadcast(m) | BftOut::Send(_, m) => match &**m {
                    Message::Proposal(p) => Some(p),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Member 2, round 1's leader, missed round 0's proposal of `a` but saw the prevotes of
    /// 0, 1 and 3 for it (a quorum, so `a` is locked by them), and moved to round 1 at its
    /// timeout; 0 and 1 follow with round changes that name the quorum but carry no value.
    fn leader_without_the_locked_value() -> (Bft, Member, Pol, Vec<BftOut>) {
        let (mut bft, mut ctx) = member(2);
        let (_, da) = value(0);
        for m in [0, 1, 3] {
            let v = prevote(&bft, m, da);
            bft.on_vote(v, 20, &mut ctx);
        }
        bft.tick(2_000_000, &mut ctx);
        assert_eq!(bft.round, 1);
        let pol = quorum_for(&bft, da);
        let mut out = Vec::new();
        for from in [0, 1] {
            let rc = round_change(&bft, &pol, da, None);
            out.extend(bft.on_round_change(rc, from, 2_000_010, &mut ctx));
        }
        (bft, ctx, pol, out)
    }

    #[test]
    fn a_leader_that_saw_only_the_digest_of_a_locked_value_re_proposes_it_once_it_receives_it() {
        let (a, da) = value(0);
        let (mut bft, mut ctx, pol, out) = leader_without_the_locked_value();
        assert_eq!(
            proposal_recipients(&out, bft.stage),
            (vec![], vec![]),
            "a leader cannot re-propose a value it does not hold, and must not propose another"
        );
        // Member 3 holds `a` and sends it with its round change.
        let rc = round_change(&bft, &pol, da, Some(a.clone()));
        let out = bft.on_round_change(rc, 3, 2_000_020, &mut ctx);
        assert_eq!(bft.values.get(&da), Some(&a));
        // 0, 1 and 3 prevoted `a`, so hold it: it goes to them by digest.
        assert_eq!(
            proposal_recipients(&out, bft.stage),
            (vec![], vec![(Some(vec![0, 1, 3]), da)]),
            "the locked value, not a fresh one"
        );
        let sent = out
            .iter()
            .find_map(|o| match o {
                BftOut::Send(_, m) => match &**m {
                    Message::DigestProposal(p) => Some(p),
                    _ => None,
                },
                _ => None,
            })
            .expect("a proposal by digest");
        assert_eq!(sent.round, 1);
        assert_eq!(
            sent.pol.as_ref().map(|p| p.round),
            Some(0),
            "with the prevote quorum that lets the locked members prevote it"
        );
    }

    #[test]
    fn a_value_that_does_not_hash_to_the_quorums_digest_is_not_re_proposed() {
        let (_, da) = value(0);
        let b = Value::Roster(Roster {
            committees: BoundedVec::new(),
        });
        assert_ne!(b.digest(Stage::Shard(0)), da);
        let (mut bft, mut ctx, pol, _) = leader_without_the_locked_value();
        let rc = round_change(&bft, &pol, da, Some(b));
        let out = bft.on_round_change(rc, 3, 2_000_020, &mut ctx);
        assert!(proposals(&out).is_empty());
        assert!(!bft.values.contains_key(&da));
    }

    #[test]
    fn a_locked_member_sends_its_value_to_the_next_leader_with_its_round_change() {
        // Member 0 prevotes `a`, sees 1 and 3 prevote it too, locks it; the round times out
        // without a precommit quorum.
        let (_, da) = value(0);
        let (a, _) = value(0);
        let (mut bft, mut ctx, _) = split_round(&[(1, da), (3, da)]);
        let out = bft.tick(2_000_000, &mut ctx);
        assert_eq!(bft.round, 1);
        let mut to_leader = None;
        let mut to_others = None;
        for o in &out {
            if let BftOut::Send(to, m) = o {
                if let Message::RoundChange(rc) = &**m {
                    assert_eq!(rc.pol.as_ref().map(|(d, p)| (*d, p.round)), Some((da, 0)));
                    if to == &vec![2] {
                        to_leader = Some(rc.value.clone());
                    } else {
                        assert_eq!(to, &vec![1, 3]);
                        to_others = Some(rc.value.clone());
                    }
                }
            }
        }
        assert_eq!(
            to_leader,
            Some(Some(a)),
            "round 1's leader (2) gets the value"
        );
        assert_eq!(to_others, Some(None), "the others get the quorum alone");
    }

    fn sent_prevote(out: &[BftOut]) -> Option<&Vote> {
        out.iter().find_map(|o| match o {
            BftOut::Broadcast(m) => match &**m {
                Message::Vote(v) if v.phase == Phase::Prevote => Some(v),
                _ => None,
            },
            _ => None,
        })
    }

    #[test]
    fn a_prevote_carries_the_leaders_signature_of_the_proposal_it_is_for() {
        let (_, da) = value(0);
        let (bft, _, out) = split_round(&[]);
        let v = sent_prevote(&out).expect("member 0 prevotes the proposal");
        assert_eq!(v.value, da);
        assert_eq!(v.proposal, Some(leader_signature(&bft, da)));
    }

    #[test]
    fn a_round_whose_leader_is_proven_to_have_equivocated_ends_on_the_first_prevote_that_proves_it()
    {
        let (_, da) = value(0);
        let (_, db) = value(1);
        // Member 0 holds the leader's proposal of `a`; member 2's prevote for `b` carries the
        // leader's signature of `b`: one message, and nothing else heard. Without the
        // signature the round would wait (3 prevotes missing could still make a quorum).
        let (bft, _, _) = split_round(&[(2, db)]);
        assert_eq!(
            bft.round, 0,
            "a prevote for another value alone proves nothing"
        );
        let (mut bft, mut ctx, _) = split_round(&[]);
        let v = prevote_with_proposal(&bft, 2, db);
        let out = bft.on_vote(v, 20, &mut ctx);
        assert_eq!(bft.round, 1, "left at once, long before the 2 s timeout");
        assert!(out.iter().any(|o| matches!(
            o,
            BftOut::Broadcast(m) if matches!(**m, Message::RoundChange(RoundChange { round: 1, .. }))
        )));
        // The same holds when the prevote comes first and the proposal second.
        let (mut bft, mut ctx) = member_zero();
        bft.on_vote(prevote_with_proposal(&bft, 2, db), 5, &mut ctx);
        assert_eq!(bft.round, 0);
        let (a, _) = value(0);
        let proposal = round_zero_proposal(&bft, a, da);
        let out = bft.on_proposal(proposal, 1, 10, &mut ctx);
        assert_eq!(bft.round, 1);
        assert!(
            sent_prevote(&out).is_none(),
            "a proposal from a leader proven to equivocate is not prevoted"
        );
    }

    #[test]
    fn a_prevote_with_a_signature_the_leader_did_not_make_leaves_the_round_open() {
        let (_, db) = value(1);
        let (mut bft, mut ctx, _) = split_round(&[]);
        // Member 2 signs the "proposal" of `b` itself.
        let v = Vote {
            proposal: Some(keypair(2).sign(&bft.body(0, Phase::Propose, db).digest())),
            ..prevote(&bft, 2, db)
        };
        bft.on_vote(v, 20, &mut ctx);
        assert_eq!(bft.round, 0);
        // Nor does the leader's signature of `b` for another round prove anything.
        let v = Vote {
            proposal: Some(keypair(1).sign(&bft.body(1, Phase::Propose, db).digest())),
            ..prevote(&bft, 3, db)
        };
        bft.on_vote(v, 20, &mut ctx);
        assert_eq!(bft.round, 0);
    }

    #[test]
    fn two_values_the_leader_signed_prove_that_it_equivocated_before_its_proposal_arrives() {
        let (_, db) = value(1);
        let (_, dc) = value(3);
        let (mut bft, mut ctx) = member_zero();
        // Member 3's prevote for `c` carries a signature it made itself; member 2's for `b`
        // carries the leader's: two values, but only one of them signed by the leader.
        let forged = Vote {
            proposal: Some(keypair(3).sign(&bft.body(0, Phase::Propose, dc).digest())),
            ..prevote(&bft, 3, dc)
        };
        bft.on_vote(forged, 5, &mut ctx);
        bft.on_vote(prevote_with_proposal(&bft, 2, db), 6, &mut ctx);
        assert_eq!(bft.round, 0);
        // The leader's own prevote for `c` carries its real signature of `c`: proof.
        let v = Vote {
            proposal: Some(leader_signature(&bft, dc)),
            ..prevote(&bft, 1, dc)
        };
        bft.on_vote(v, 7, &mut ctx);
        assert_eq!(bft.round, 1);
    }

    /// Member 2, round 1's leader, holds round 0's proposal of `a`, and hears member 3's
    /// prevote for `b`, with or without the leader's signature of `b`; then the leader's
    /// (1's) prevote for `a` and 0's for `b`: two each, a split either way.
    fn next_leader_after_a_split(proof: bool) -> (Bft, Vec<BftOut>) {
        let (mut bft, mut ctx) = member(2);
        let (a, da) = value(0);
        let (_, db) = value(1);
        let proposal = round_zero_proposal(&bft, a, da);
        let mut out = bft.on_proposal(proposal, 1, 10, &mut ctx);
        let v = if proof {
            prevote_with_proposal(&bft, 3, db)
        } else {
            prevote(&bft, 3, db)
        };
        out.extend(bft.on_vote(v, 20, &mut ctx));
        for (m, d) in [(1, da), (0, db)] {
            let v = prevote(&bft, m, d);
            out.extend(bft.on_vote(v, 30, &mut ctx));
        }
        assert_eq!(bft.round, 1);
        (bft, out)
    }

    #[test]
    fn after_proof_that_a_leader_equivocated_the_next_leader_proposes_without_waiting_for_round_changes(
    ) {
        let (_, out) = next_leader_after_a_split(true);
        let sent = proposals(&out);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].round, 1);
        assert!(sent[0].pol.is_none(), "no value was locked");
    }

    #[test]
    fn after_a_split_without_proof_the_next_leader_waits_for_a_quorum_of_round_changes() {
        let (mut bft, out) = next_leader_after_a_split(false);
        assert!(proposals(&out).is_empty());
        let mut ctx = Member(keypair(2));
        let mut out = Vec::new();
        for from in [0, 3] {
            let rc = RoundChange {
                height: bft.height,
                parent: bft.parent,
                stage: bft.stage,
                round: 1,
                pol: None,
                value: None,
            };
            out.extend(bft.on_round_change(rc, from, 40, &mut ctx));
        }
        let sent = proposals(&out);
        assert_eq!(
            sent.len(),
            1,
            "its own round change and two more: a quorum of 3"
        );
        assert_eq!(sent[0].round, 1);
    }

    /// Member `me`'s context, counting the values it checks.
    struct Counting {
        member: Member,
        validations: usize,
    }

    impl BftCtx for Counting {
        fn sign(&mut self, body: &VoteBody) -> Signature {
            self.member.sign(body)
        }
        fn check(&mut self, items: &[SigItem]) -> Result<(), usize> {
            self.member.check(items)
        }
        fn validate(&mut self, value: &Value, now: u64) -> Validity {
            self.validations += 1;
            self.member.validate(value, now)
        }
        fn propose(&mut self, now: u64) -> Option<Value> {
            self.member.propose(now)
        }
    }

    /// Where `out` sends each kind of proposal: full proposals and proposals by digest, each
    /// with its recipients (`None`: everyone) and the value's digest.
    #[allow(clippy::type_complexity)]
    fn proposal_recipients(
        out: &[BftOut],
        stage: Stage,
    ) -> (
        Vec<(Option<Vec<usize>>, Digest)>,
        Vec<(Option<Vec<usize>>, Digest)>,
    ) {
        let mut full = Vec::new();
        let mut by_digest = Vec::new();
        for o in out {
            let (to, m) = match o {
                BftOut::Broadcast(m) => (None, m),
                BftOut::Send(to, m) => (Some(to.clone()), m),
                BftOut::Decided { .. } => continue,
            };
            match &**m {
                Message::Proposal(p) => full.push((to, p.value.digest(stage))),
                Message::DigestProposal(p) => by_digest.push((to, p.value)),
                _ => {}
            }
        }
        (full, by_digest)
    }

    /// Two values that differ (a roster of `n` empty committees; the test members take any
    /// value).
    fn distinct(n: usize) -> (Value, Digest) {
        let v = Value::Roster(Roster {
            committees: BoundedVec::try_from(vec![BoundedVec::new(); n]).unwrap(),
        });
        let d = v.digest(Stage::Shard(0));
        (v, d)
    }

    #[test]
    fn a_leader_with_no_member_known_to_hold_its_value_sends_it_to_everyone() {
        // Round 0's leader (1) proposes a fresh value nobody has prevoted.
        let (mut leader, mut ctx) = member(1);
        let out = leader.tick(0, &mut ctx);
        let fresh = value(2).0.digest(leader.stage);
        assert_eq!(
            proposal_recipients(&out, leader.stage),
            (vec![(None, fresh)], vec![])
        );
    }

    /// Member 0, which prevoted round 0's `a` and then saw member 2's prevote prove that the
    /// leader also signed `b`, in round 1, whose leader is member 2.
    fn member_zero_in_round_one() -> (Bft, Counting) {
        let (mut bft, member) = member_zero();
        let mut ctx = Counting {
            member,
            validations: 0,
        };
        let (a, da) = distinct(1);
        let (_, db) = distinct(2);
        let proposal = round_zero_proposal(&bft, a, da);
        bft.on_proposal(proposal, 1, 10, &mut ctx);
        let v = prevote_with_proposal(&bft, 2, db);
        bft.on_vote(v, 20, &mut ctx);
        assert_eq!(bft.round, 1);
        assert_eq!(ctx.validations, 1);
        (bft, ctx)
    }

    /// Round 1's leader's (member 2's) proposal of `digest` by digest.
    fn digest_proposal(bft: &Bft, digest: Digest) -> DigestProposal {
        DigestProposal {
            height: bft.height,
            parent: bft.parent,
            stage: bft.stage,
            round: 1,
            value: digest,
            pol: None,
            signature: keypair(2).sign(&bft.body(1, Phase::Propose, digest).digest()),
        }
    }

    fn prevotes_in(out: &[BftOut], round: u32) -> Vec<Digest> {
        out.iter()
            .filter_map(|o| match o {
                BftOut::Broadcast(m) => match &**m {
                    Message::Vote(v) if v.phase == Phase::Prevote && v.round == round => {
                        Some(v.value)
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_member_holding_the_value_prevotes_its_proposal_by_digest_without_checking_it_again() {
        let (mut bft, mut ctx) = member_zero_in_round_one();
        let (_, da) = distinct(1);
        let p = digest_proposal(&bft, da);
        let out = bft.on_digest_proposal(p, 2, 30, &mut ctx);
        assert_eq!(prevotes_in(&out, 1), vec![da]);
        assert_eq!(ctx.validations, 1, "`a` was checked in round 0 only");
    }

    #[test]
    fn a_proposal_by_digest_of_a_value_the_member_does_not_hold_gets_no_prevote() {
        let (mut bft, mut ctx) = member_zero_in_round_one();
        let (b, db) = distinct(2);
        let p = digest_proposal(&bft, db);
        let out = bft.on_digest_proposal(p, 2, 30, &mut ctx);
        assert!(prevotes_in(&out, 1).is_empty());
        // The full proposal of `b` (same signature) is checked and prevoted.
        let p = digest_proposal(&bft, db);
        let full = Proposal {
            height: p.height,
            parent: p.parent,
            stage: p.stage,
            round: 1,
            value: b,
            pol: None,
            signature: p.signature,
        };
        let out = bft.on_proposal(full, 2, 40, &mut ctx);
        assert_eq!(prevotes_in(&out, 1), vec![db]);
        assert_eq!(ctx.validations, 2);
    }

    #[test]
    fn a_proposal_by_digest_with_a_signature_the_leader_did_not_make_gets_no_prevote() {
        let (mut bft, mut ctx) = member_zero_in_round_one();
        let (_, da) = distinct(1);
        let p = DigestProposal {
            signature: keypair(3).sign(&bft.body(1, Phase::Propose, da).digest()),
            ..digest_proposal(&bft, da)
        };
        let out = bft.on_digest_proposal(p, 2, 30, &mut ctx);
        assert!(prevotes_in(&out, 1).is_empty());
        // Nor from a member that is not round 1's leader, with a signature of its own.
        let p = DigestProposal {
            signature: keypair(3).sign(&bft.body(1, Phase::Propose, da).digest()),
            ..digest_proposal(&bft, da)
        };
        let out = bft.on_digest_proposal(p, 3, 30, &mut ctx);
        assert!(prevotes_in(&out, 1).is_empty());
    }

    #[test]
    fn a_locked_value_is_re_proposed_by_digest_and_decided_without_being_sent_again() {
        // Four members at height 1. Round 0's leader (1) proposes `a`; everyone prevotes and
        // locks it, but every round-0 precommit is lost; the round times out, and round 1's
        // leader (2) re-proposes `a` with its prevote quorum.
        let mut nodes: Vec<(Bft, Counting)> = (0..4)
            .map(|i| {
                let (bft, member) = member(i);
                (
                    bft,
                    Counting {
                        member,
                        validations: 0,
                    },
                )
            })
            .collect();
        let mut queue = std::collections::VecDeque::new();
        // What member 2 sent in round 1: (kind, recipients).
        let mut leader_round_one = Vec::new();
        let deliver = |nodes: &mut Vec<(Bft, Counting)>,
                       queue: &mut std::collections::VecDeque<(usize, usize, Message)>,
                       leader_round_one: &mut Vec<(&'static str, Vec<usize>)>,
                       now: u64| {
            while let Some((to, from, m)) = queue.pop_front() {
                if matches!(&m, Message::Vote(v) if v.phase == Phase::Precommit && v.round == 0) {
                    continue;
                }
                let (bft, ctx) = &mut nodes[to];
                let out = match m {
                    Message::Proposal(p) => bft.on_proposal(p, from, now, ctx),
                    Message::DigestProposal(p) => bft.on_digest_proposal(p, from, now, ctx),
                    Message::Vote(v) => bft.on_vote(v, now, ctx),
                    Message::RoundChange(r) => bft.on_round_change(r, from, now, ctx),
                    Message::Precommits(p) => bft.on_precommits(p, now, ctx),
                    _ => Vec::new(),
                };
                route(to, out, queue, leader_round_one);
            }
        };
        fn route(
            from: usize,
            out: Vec<BftOut>,
            queue: &mut std::collections::VecDeque<(usize, usize, Message)>,
            leader_round_one: &mut Vec<(&'static str, Vec<usize>)>,
        ) {
            for o in out {
                let (targets, m): (Vec<usize>, Box<Message>) = match o {
                    BftOut::Broadcast(m) => ((0..4).filter(|i| *i != from).collect(), m),
                    BftOut::Send(t, m) => (t, m),
                    BftOut::Decided { .. } => continue,
                };
                if from == 2 {
                    match &*m {
                        Message::Proposal(p) if p.round == 1 => {
                            leader_round_one.push(("full", targets.clone()))
                        }
                        Message::DigestProposal(p) if p.round == 1 => {
                            leader_round_one.push(("digest", targets.clone()))
                        }
                        _ => {}
                    }
                }
                for t in targets {
                    queue.push_back((t, from, (*m).clone()));
                }
            }
        }
        let out = {
            let (bft, ctx) = &mut nodes[1];
            bft.tick(10, ctx)
        };
        let (full, _) = proposal_recipients(&out, Stage::Shard(0));
        let [(None, da)] = full[..] else {
            panic!("round 0's leader proposes to everyone: {full:?}")
        };
        route(1, out, &mut queue, &mut leader_round_one);
        deliver(&mut nodes, &mut queue, &mut leader_round_one, 20);
        for (i, (bft, _)) in nodes.iter().enumerate() {
            assert_eq!(bft.locked, Some((0, da)), "member {i} locked `a`");
            assert_eq!(bft.decided, None);
        }
        for (i, (bft, ctx)) in nodes.iter_mut().enumerate() {
            let out = bft.tick(2_000_000, ctx);
            route(i, out, &mut queue, &mut leader_round_one);
        }
        deliver(&mut nodes, &mut queue, &mut leader_round_one, 2_000_010);
        for (i, (bft, _)) in nodes.iter().enumerate() {
            assert_eq!(bft.decided, Some((1, da)), "member {i}");
        }
        assert_eq!(
            leader_round_one,
            vec![("digest", vec![0, 1, 3])],
            "every other member prevoted `a`, so none gets it again"
        );
        for i in [0, 2, 3] {
            assert_eq!(nodes[i].1.validations, 1, "member {i} checked `a` once");
        }
    }
}
