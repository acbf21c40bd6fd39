//! Issue 13: what a joiner hears and whom it believes: a restarted
//! peer's record of who contributed, the trust anchor (`swarm join
//! --trust`), and old hellos that gossip's cache hands a peer that just
//! subscribed.

mod common;
use common::*;
use protocol::round::{Span, rank_key};
use protocol::{
    AppliedManifest, Config, DropReason, FetchFailure, Hash, InEvent, Keypair, Message, Peer, Phase, Status, Verdict,
};

/// What a joiner of the run hears in the tests below: three peers of the
/// run (`others`, me being the fourth) confirm round 2's manifest, signed
/// by the one ranked first; five fresh keys confirm a round-3 manifest of
/// their making.
struct Rivals {
    run: Hash,
    me: u64,
    others: Vec<u64>,
    signer: u64,
    ours: (Vec<u8>, Hash),
    theirs: (Vec<u8>, Hash),
}

fn rivals() -> Rivals {
    let run = spec().run_id();
    let (me, others) = four_peers_me_not_first(run);
    let signer = *others.iter().min_by_key(|s| rank_key(&run, 2, &Keypair::from_seed(**s).peer_id())).unwrap();
    let ours = sealed_manifest(signer, &others, run, 2, Hash::of(b"state after round 1"));
    let theirs = sealed_manifest(100, &SYBILS, run, 3, Hash::of(b"made-up state"));
    Rivals { run, me, others, signer, ours, theirs }
}

const SYBILS: [u64; 5] = [100, 101, 102, 103, 104];

impl Rivals {
    /// Hellos at `t` from the run's peers (listing round 2) and from the
    /// fresh keys (listing round 3), each side only if asked.
    fn hellos(&self, p: &mut Peer, run_peers: bool, sybils: bool, t: u64) {
        let (run, theirs) = (if run_peers { &self.others[..] } else { &[] }, if sybils { &SYBILS[..] } else { &[] });
        for (s, round, id) in
            run.iter().map(|s| (s, 2, self.ours.1)).chain(theirs.iter().map(|s| (s, 3, self.theirs.1)))
        {
            let listed = vec![AppliedManifest { round, id }];
            p.handle(gossip(*s, self.run, round + 1, &hello(Status::Active, 1, listed)), t);
        }
    }

    /// Round 2's manifest (from its signer) or the fresh keys' round 3, at `t`.
    fn manifest(&self, p: &mut Peer, ours: bool, t: u64) {
        let (signer, bytes) = if ours { (self.signer, &self.ours.0) } else { (SYBILS[0], &self.theirs.0) };
        p.handle(raw(signer, bytes.clone()), t);
    }
}

#[test]
fn a_restarted_peer_remembers_who_vouches_and_a_joiner_cannot_tell() {
    // Issue 13 item 2: a peer that restarts knows no standing, like a
    // joiner, and counts every head for its sync quorum. With the
    // contributors its earlier life recorded (the node keeps them in the
    // run dir), five fresh keys confirming their own round-3 manifest no
    // longer outvote three peers it knows confirming round 2's. A joiner,
    // which knows nobody, still follows the majority (the open finding).
    let r = rivals();
    for restarted in [true, false] {
        let (mut p, _) = peer_with(r.me, 10);
        if restarted {
            let round_1 = Span { first: 1, last: 1 };
            let known = std::iter::once(&r.me).chain(&r.others).map(|s| (Keypair::from_seed(*s).peer_id(), round_1));
            p.remember_contributors(known);
        }
        r.hellos(&mut p, true, true, 0);
        r.manifest(&mut p, true, 10);
        r.manifest(&mut p, false, 20);
        p.handle(InEvent::Tick, 100);
        let expected = if restarted { Phase::Syncing(2) } else { Phase::Syncing(3) };
        assert_eq!(p.phase(), expected, "restarted with its record: {restarted}");
    }
}

#[test]
fn a_joiner_that_trusts_a_named_peer_syncs_to_what_it_confirms_and_waits_for_it() {
    // Issue 13 item 2, the joiner's trust anchor (`swarm join --trust`): a
    // joiner knows nobody's standing and follows the head count, so five
    // fresh keys confirming their own round-3 manifest hand it their state
    // (the test above). Told to trust one peer of the run, it waits while
    // only the fresh keys are around, then syncs to the round 2 that the
    // trusted peer confirms, outvoted five to three as it is.
    let r = rivals();
    for trusting in [true, false] {
        let (mut p, _) = peer_with(r.me, 10);
        if trusting {
            p.trust([Keypair::from_seed(r.signer).peer_id()]);
        }
        r.hellos(&mut p, false, true, 0);
        r.manifest(&mut p, false, 20);
        p.handle(InEvent::Tick, 100);
        let alone = if trusting { Phase::Waiting } else { Phase::Syncing(3) };
        assert_eq!(p.phase(), alone, "only fresh keys around; trusting a peer: {trusting}");
        if trusting {
            r.hellos(&mut p, true, false, 200);
            r.manifest(&mut p, true, 210);
            p.handle(InEvent::Tick, 300);
            assert_eq!(p.phase(), Phase::Syncing(2), "synced to what the trusted peer confirms");
        }
    }
}

#[test]
fn a_joiner_that_trusts_a_named_peer_hears_it_past_the_member_cap_and_asks_fresh_keys_ids_of_them_alone() {
    // Before anyone's standing is known, every lister counts: an id a fresh
    // key lists is asked again of every active peer, and 2 048 fresh keys
    // fill the member table (the two open findings of a joiner). A peer the
    // user named is heard past the cap, and only its listings are vouched.
    const MAX_MEMBERS: u64 = 2048;
    let trusted = Keypair::from_seed(2).peer_id();
    for trusting in [true, false] {
        let (mut p, run) = peer();
        if trusting {
            p.trust([trusted]);
        }
        let fake = Hash::of(b"made up, round 9");
        let real = Hash::of(b"listed by the trusted peer");
        let mut out = p.handle(gossip(1_000, run, 9, &hello(Status::Active, 1, vec![applied(9, fake)])), 0);
        out.extend(p.handle(gossip(2, run, 4, &hello(Status::Active, 1, vec![applied(3, real)])), 0));
        out.extend(p.handle(gossip(3, run, 4, &hello(Status::Active, 1, vec![])), 0));
        out.extend(p.handle(InEvent::Tick, 1));
        assert_eq!(requests_for(&out, fake), vec![Keypair::from_seed(1_000).peer_id()]);
        assert_eq!(requests_for(&out, real), vec![trusted]);
        let from = Keypair::from_seed(1_000).peer_id();
        let mut out = p.handle(InEvent::RequestFailed { hash: fake, from, why: FetchFailure::NotFound }, 10);
        out.extend(p.handle(InEvent::Tick, 400));
        let again = requests_for(&out, fake);
        assert_eq!(
            again.is_empty(),
            trusting,
            "a fresh key's id asked again of others ({again:?}), trusting {trusting}"
        );
        // The member table fills with fresh keys; the trusted peer, quiet
        // past the TTL (5 s), is heard again, a new fresh key is not.
        p.handle(InEvent::Tick, 5_990);
        for s in 2_000..2_000 + MAX_MEMBERS {
            p.handle(gossip(s, run, 2, &hello(Status::Active, 1, vec![])), 6_000);
        }
        let crowded = vec![Verdict::Ignore(Some(DropReason::Crowded))];
        let out = p.handle(gossip(99_999, run, 2, &hello(Status::Active, 1, vec![])), 6_010);
        assert_eq!(verdicts(&out), crowded);
        let out = p.handle(gossip(2, run, 4, &hello(Status::Active, 2, vec![])), 6_020);
        let heard = if trusting { vec![Verdict::Accept] } else { crowded };
        assert_eq!(verdicts(&out), heard, "trusting {trusting}");
    }
}

#[test]
fn fresh_keys_saying_the_run_is_over_do_not_end_the_wait_of_a_peer_that_trusts_named_peers() {
    // Issue 13 item 1: a waiting peer leaves when at least as many peers
    // left after the run's last round as wait with it, so three fresh keys
    // end the wait of three peers. A peer that trusts named peers takes the
    // run's end only from peers that vouch, and waits on (for 10 peers: the
    // run's `min_peers`, so that it does not start round 1 meanwhile).
    let mut spec = spec();
    spec.min_peers = 10;
    let run = spec.run_id();
    for trusting in [false, true] {
        let mut p = Peer::new(Config::new(run, Hash::of(b"genesis"), &spec, 10), Keypair::from_seed(1));
        if trusting {
            p.trust([Keypair::from_seed(2).peer_id()]);
        }
        for s in [2, 3] {
            p.handle(gossip(s, run, 0, &hello(Status::Waiting, 1, vec![])), 0);
        }
        let last = vec![applied(10, Hash::of(b"the end?"))];
        let mut out = Vec::new();
        for s in [7, 8, 9] {
            out.extend(p.handle(gossip(s, run, 10, &hello(Status::Active, 1, last.clone())), 10));
            out.extend(p.handle(gossip(s, run, 10, &Message::Leave { seq: 2, recent: last.clone() }), 20));
        }
        // Nobody serves the made-up final manifest: every request fails.
        let (left, t) = fail_every_request(&mut p, out, |p| p.phase() == Phase::Waiting);
        assert_eq!(left, !trusting, "left at {t} ms, trusting {trusting}: {:?}", p.phase());
        if trusting {
            assert_eq!(p.phase(), Phase::Waiting);
        }
    }
}

#[test]
fn a_joiner_that_trusts_an_absent_peer_does_not_start_the_run_from_genesis_beside_peers_past_round_1() {
    // Found in review: with no trusted peer around, the head-count rules
    // still started round 1 from genesis beside another waiting joiner (one
    // peer past round 1 is not half of those present), and nothing brought
    // the joiner back: the run's peers never vouch for it. It waits for a
    // trusted peer now, and starts the run with one that waits too.
    let (mut p, run) = peer();
    p.trust([Keypair::from_seed(2).peer_id()]);
    p.handle(gossip(5, run, 9, &hello(Status::Active, 1, vec![applied(8, Hash::of(b"round 8 of the run"))])), 0);
    p.handle(gossip(6, run, 0, &hello(Status::Waiting, 1, vec![])), 0);
    for t in (100..3_000).step_by(300) {
        p.handle(InEvent::Tick, t);
    }
    assert_eq!(p.phase(), Phase::Waiting, "no trusted peer around: it waits");
    p.handle(gossip(2, run, 0, &hello(Status::Waiting, 1, vec![])), 3_000);
    // Once what it heard of it settled (a hello interval: see the test
    // below).
    p.handle(InEvent::Tick, 3_100);
    assert_eq!(p.phase(), Phase::Waiting);
    p.handle(InEvent::Tick, 3_500);
    assert_eq!(p.phase(), Phase::Training(1), "and starts round 1 with the trusted peer");
    // Founders that trust each other: the trusted peer may already have
    // gone into round 1 (Active, nothing applied) when this one hears it.
    let (mut p, run) = peer();
    p.trust([Keypair::from_seed(2).peer_id()]);
    p.handle(gossip(6, run, 0, &hello(Status::Waiting, 1, vec![])), 0);
    p.handle(gossip(2, run, 1, &hello(Status::Active, 1, vec![])), 0);
    p.handle(InEvent::Tick, 500);
    assert_eq!(p.phase(), Phase::Training(1), "starts round 1 beside a trusted peer that just did");
}

#[test]
fn old_hellos_from_gossips_cache_do_not_start_a_joiner_from_genesis() {
    // Found by CI (`tests/dataplane.rs`): gossip hands a peer that just
    // subscribed its neighbours' cached messages of the last few
    // heartbeats, so a joiner's first hellos from the run's peers may be
    // from round 1 ("active in round 1, nothing applied"), seconds old.
    // Taken at their word, the run had not started: the joiner started
    // round 1 from genesis and replayed the run's manifests instead of
    // syncing (and a trusting joiner took its trusted peer for a founder).
    // What it heard of a peer counts for that once it has heard from it for
    // a hello interval: by then the current hello replaced the old one.
    let r = rivals();
    for trusting in [false, true] {
        let (mut p, _) = peer_with(r.me, 10);
        if trusting {
            p.trust([Keypair::from_seed(r.signer).peer_id()]);
        }
        for s in &r.others {
            p.handle(gossip(*s, r.run, 1, &hello(Status::Active, 1, vec![])), 0);
        }
        p.handle(InEvent::Tick, 100);
        p.handle(InEvent::Tick, 300);
        assert_eq!(p.phase(), Phase::Waiting, "old hellos alone start nothing (trusting: {trusting})");
        // Their current hellos: round 2 applied.
        for s in &r.others {
            p.handle(gossip(*s, r.run, 3, &hello(Status::Active, 2, vec![applied(2, r.ours.1)])), 400);
        }
        r.manifest(&mut p, true, 410);
        p.handle(InEvent::Tick, 600);
        assert_eq!(p.phase(), Phase::Syncing(2), "it syncs to the run (trusting: {trusting})");
    }
    // Peers it has heard from for a hello interval are taken at their word:
    // founders start round 1 together.
    let (mut p, run) = peer();
    for s in [2, 3] {
        p.handle(gossip(s, run, 0, &hello(Status::Waiting, 1, vec![])), 0);
    }
    p.handle(InEvent::Tick, 499);
    assert_eq!(p.phase(), Phase::Waiting);
    p.handle(InEvent::Tick, 500);
    assert_eq!(p.phase(), Phase::Training(1));
}
