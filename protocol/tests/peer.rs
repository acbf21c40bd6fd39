//! Hostile input against one peer: each bad message is dropped and counted,
//! and lies cannot stall a round or crowd out the truth.

use protocol::round::rank_key;
use protocol::{
    AppliedManifest, DropReason, Envelope, FetchFailure, Gossip, Hash, InEvent, Keypair, Manifest, ManifestEntry,
    Message, OutEvent, Peer, Phase, Status, Verdict,
};

mod common;
use common::*;

#[test]
fn bad_messages_are_dropped_and_counted() {
    let (mut p, run) = peer();
    let other = Keypair::from_seed(2);
    let hi = hello(Status::Active, 1, vec![]);
    let mut bad_sig = Envelope::seal(&other, run, 1, &hi).unwrap();
    let n = bad_sig.len();
    bad_sig[n - 1] ^= 0xff;
    let wrong_run = Envelope::seal(&other, Hash::of(b"other"), 1, &hi).unwrap();
    let oversize = vec![1u8; protocol::MAX_ENVELOPE_BYTES + 1];
    let empty_manifest = Message::Manifest(Manifest {
        state: Hash::default(),
        entries: vec![],
        exclusions: vec![],
        excluded: vec![],
        checks: vec![],
        ledger: None,
    });
    let invalid = Envelope::seal(&other, run, 1, &empty_manifest).unwrap();
    for b in [bad_sig, wrong_run, oversize, invalid, vec![0u8; 10]] {
        let out = p.handle(InEvent::Gossip(Gossip { bytes: b, source: Some(other.peer_id()) }), 0);
        assert!(matches!(verdicts(&out)[..], [Verdict::Reject(_)]), "{out:?}");
        assert!(out.iter().all(|o| matches!(o, OutEvent::Broadcast(_) | OutEvent::Verdict(_))));
    }
    // A good envelope relayed as if another peer had published it: one
    // connection cannot speak for other identities.
    let good = Envelope::seal(&other, run, 1, &hi).unwrap();
    let relayed = Gossip { bytes: good.clone(), source: Some(Keypair::from_seed(3).peer_id()) };
    let out = p.handle(InEvent::Gossip(relayed), 1);
    assert_eq!(verdicts(&out), vec![Verdict::Reject(DropReason::SignerMismatch)]);
    let d = &p.stats().dropped;
    for why in [
        DropReason::BadSignature,
        DropReason::WrongRun,
        DropReason::Oversize,
        DropReason::Invalid,
        DropReason::Malformed,
        DropReason::SignerMismatch,
    ] {
        assert_eq!(d.get(&why), Some(&1), "{why:?}: {d:?}");
    }
    assert_eq!(p.members(), 0, "no bad message made anyone a member");
    // The same hello from its author is accepted; as a fetched blob (no
    // publisher), its signature alone vouches for it.
    let out = p.handle(InEvent::Gossip(Gossip { bytes: good.clone(), source: Some(other.peer_id()) }), 2);
    assert_eq!(verdicts(&out), vec![Verdict::Accept]);
    assert_eq!(p.members(), 1);
    let newer = Envelope::seal(&other, run, 1, &hello(Status::Active, 2, vec![])).unwrap();
    let out = p.handle(InEvent::Gossip(Gossip { bytes: newer, source: None }), 3);
    assert_eq!(verdicts(&out), vec![Verdict::Accept]);
    // The first hello again is a replay: ignored (not held against whoever
    // relayed it).
    let out = p.handle(InEvent::Gossip(Gossip { bytes: good, source: Some(other.peer_id()) }), 4);
    assert_eq!(verdicts(&out), vec![Verdict::Ignore(Some(DropReason::Replayed))]);
}

#[test]
fn stale_contributions_are_ignored_not_rejected() {
    let (mut p, run) = peer();
    // Two more peers make min_peers = 3: round 1 starts.
    let mut out = Vec::new();
    for s in [2, 3] {
        out.extend(p.handle(gossip(s, run, 0, &hello(Status::Waiting, 1, vec![])), 0));
    }
    // It starts once what it heard of them settled (a hello interval).
    let started = |out: &[OutEvent]| out.iter().any(|o| matches!(o, OutEvent::StartTraining { round: 1, .. }));
    let mut t = 0;
    for _ in 0..5 {
        if started(&out) {
            break;
        }
        t = p.next_timeout();
        out.extend(p.handle(InEvent::Tick, t));
    }
    assert!(t <= 600, "woken when it could start, at {t} ms");
    assert!(out.iter().any(|o| matches!(o, OutEvent::StartTraining { round: 1, .. })), "{out:?}");
    let c = Message::Contribution(contribution(Hash::of(b"g"), 1, Hash::default()));
    let out = p.handle(gossip(2, run, 0, &c), 700);
    assert_eq!(verdicts(&out), vec![Verdict::Ignore(Some(DropReason::StaleRound))]);
    assert_eq!(p.stats().dropped.get(&DropReason::StaleRound), Some(&1));
}

/// Peer `me` with three honest peers (2, 3, 4) in round 1, everyone's
/// contribution in hand; returns the outputs so far.
fn round_one_gathered(p: &mut Peer, run: Hash) -> Vec<OutEvent> {
    let mut out = Vec::new();
    for s in [2, 3, 4] {
        out.extend(p.handle(gossip(s, run, 0, &hello(Status::Waiting, 1, vec![])), 0));
    }
    out.extend(p.handle(InEvent::Tick, 600));
    assert_eq!(p.phase(), Phase::Training(1));
    let base = p.state();
    out.extend(
        p.handle(InEvent::TrainingDone { round: 1, contribution: contribution(Hash::of(b"mine"), 8, base) }, 700),
    );
    for s in [2, 3, 4] {
        let h = Hash::of(format!("grad-{s}").as_bytes());
        let c = Message::Contribution(contribution(h, 8, base));
        out.extend(p.handle(gossip(s, run, 1, &c), 800));
        out.extend(p.handle(InEvent::BlobReady(h), 810));
    }
    out
}

#[test]
fn one_peer_claiming_a_later_round_does_not_stop_the_aggregator() {
    let run = spec().run_id();
    let rank = |s: u64| rank_key(&run, 1, &Keypair::from_seed(s).peer_id());
    // Peer `me` ranks first among the four honest peers, and the liar after
    // it: the liar is not the round's first candidate here (that is another
    // attack), so `me` must publish the moment every contribution is in.
    let me = [1u64, 2, 3, 4].into_iter().min_by_key(|s| rank(*s)).unwrap();
    let liar = (5..).find(|s| rank(me) < rank(*s)).unwrap();
    let (mut p, _) = peer_with(me, 10);
    let others: Vec<u64> = [1u64, 2, 3, 4].into_iter().filter(|s| *s != me).collect();
    // Once the round runs, the liar says it is active in round 2 and applied
    // a round-1 manifest nobody else has heard of.
    let lie = |seq| hello(Status::Active, seq, vec![AppliedManifest { round: 1, id: Hash::of(b"made up") }]);
    let mut out = Vec::new();
    for s in &others {
        out.extend(p.handle(gossip(*s, run, 0, &hello(Status::Waiting, 1, vec![])), 0));
    }
    out.extend(p.handle(InEvent::Tick, 600));
    assert_eq!(p.phase(), Phase::Training(1));
    let base = p.state();
    // The honest peers started round 1 too (a status change is said at once).
    for s in &others {
        out.extend(p.handle(gossip(*s, run, 1, &hello(Status::Active, 2, vec![])), 640));
    }
    out.extend(p.handle(gossip(liar, run, 2, &lie(1)), 650));
    out.extend(p.handle(InEvent::Tick, 690));
    out.extend(
        p.handle(InEvent::TrainingDone { round: 1, contribution: contribution(Hash::of(b"mine"), 8, base) }, 700),
    );
    assert!(published_manifest(&out).is_none(), "not before the others' contributions");
    let mut published_at = None;
    for (t, s) in (800..).step_by(10).zip(&others) {
        let h = Hash::of(format!("grad-{s}").as_bytes());
        let c = Message::Contribution(contribution(h, 8, base));
        out.extend(p.handle(gossip(liar, run, 2, &lie(t)), t));
        out.extend(p.handle(gossip(*s, run, 1, &c), t));
        out.extend(p.handle(InEvent::BlobReady(h), t + 5));
        if published_at.is_none() && published_manifest(&out).is_some() {
            published_at = Some(t + 5);
        }
    }
    let m = published_manifest(&out).expect("the round's manifest, despite the liar");
    // At once (the deadline is 60 s away), with exactly the four honest peers.
    assert_eq!(published_at, Some(825), "published when the last contribution arrived");
    let mut want: Vec<_> = [me].iter().chain(&others).map(|s| Keypair::from_seed(*s).peer_id()).collect();
    want.sort();
    assert_eq!(m.entries.iter().map(|e| e.peer).collect::<Vec<_>>(), want);
}

#[test]
fn blobs_nobody_serves_and_nothing_needs_are_given_up_without_leaving_the_round() {
    let (mut p, run) = peer();
    let base = p.state();
    let mut out = round_one_gathered(&mut p, run);
    // Peer 7 announces a contribution and dies: it is in no manifest.
    let dead = Hash::of(b"grad-7");
    let c = Message::Contribution(contribution(dead, 8, base));
    out.extend(p.handle(gossip(7, run, 1, &c), 820));
    // Peer 2 publishes round 1's manifest; one of its blobs (peer 5's) is
    // still to come, so peer 1 is collecting.
    let mut entries: Vec<ManifestEntry> = [1u64, 2, 3, 4, 5]
        .iter()
        .map(|&s| {
            let hash = if s == 1 { Hash::of(b"mine") } else { Hash::of(format!("grad-{s}").as_bytes()) };
            entry(s, run, 1, hash, base)
        })
        .collect();
    entries.sort_by_key(|e| e.peer);
    out.extend(p.handle(
        gossip(
            2,
            run,
            1,
            &Message::Manifest(Manifest {
                state: base,
                entries,
                exclusions: vec![],
                excluded: vec![],
                checks: vec![],
                ledger: None,
            }),
        ),
        850,
    ));
    assert_eq!(p.phase(), Phase::Collecting(1));
    // A sixth peer lists a round-1 manifest id that nobody can serve.
    let bogus = Hash::of(b"made up");
    let lie = hello(Status::Active, 1, vec![AppliedManifest { round: 1, id: bogus }]);
    out.extend(p.handle(gossip(6, run, 1, &lie), 900));
    out.extend(p.handle(InEvent::Tick, 921));
    assert_eq!(requests_for(&out, bogus).len(), 1, "the unknown manifest is asked for");
    assert_eq!(requests_for(&out, dead).len(), 1, "the announced contribution was asked for");
    // Every request for either blob fails; everything else stays quiet.
    // Run 60 s of virtual time, ticking when the machine asks to.
    let mut t = 1_000;
    let (mut asked_bogus, mut asked_dead) = (requests_for(&out, bogus).len(), requests_for(&out, dead).len());
    let mut pending: Vec<(Hash, protocol::PeerId)> = [(bogus, Keypair::from_seed(6).peer_id())]
        .into_iter()
        .chain([(dead, Keypair::from_seed(7).peer_id())])
        .collect();
    let mut last_ask = (0, 0);
    while t < 60_000 {
        let mut step = Vec::new();
        for (h, from) in pending.drain(..) {
            step.extend(p.handle(InEvent::RequestFailed { hash: h, from, why: FetchFailure::NotFound }, t));
        }
        for s in [2, 3, 4] {
            let h = hello(Status::Active, t, vec![]);
            step.extend(p.handle(gossip(s, run, 1, &h), t));
        }
        step.extend(
            p.handle(gossip(6, run, 1, &hello(Status::Active, t, vec![AppliedManifest { round: 1, id: bogus }])), t),
        );
        t = p.next_timeout().max(t + 1).min(t + 500);
        step.extend(p.handle(InEvent::Tick, t));
        for (h, n) in [(bogus, &mut asked_bogus), (dead, &mut asked_dead)] {
            let r = requests_for(&step, h);
            if !r.is_empty() {
                *n += r.len();
                last_ask = if h == bogus { (t, last_ask.1) } else { (last_ask.0, t) };
            }
            pending.extend(r.into_iter().map(|from| (h, from)));
        }
    }
    eprintln!(
        "asked {asked_bogus} times for the bogus manifest (last at {} ms), {asked_dead} for the dead blob (last at {} ms)",
        last_ask.0, last_ask.1
    );
    assert!(asked_bogus > 1 && asked_dead > 1, "both were retried");
    assert!(last_ask.0 < 40_000 && last_ask.1 < 40_000, "then given up, never asked again: {last_ask:?}");
    assert_eq!(p.phase(), Phase::Collecting(1), "still collecting round 1 (peer 5's blob)");
    assert_eq!(p.stats().resyncs, 0);
}

#[test]
fn announcements_for_made_up_rounds_do_not_crowd_out_the_manifest_to_sync_to() {
    let (mut p, run) = peer();
    // A liar announces contributions for twenty future rounds.
    for r in 10u64..30 {
        let c = Message::Contribution(contribution(Hash::of(&r.to_le_bytes()), 1, Hash::default()));
        p.handle(gossip(9, run, r, &c), 10);
    }
    // Three peers applied round 4's manifest, signed by peer 2.
    let state = Hash::of(b"state at the start of round 4");
    let m = Message::Manifest(Manifest {
        state,
        entries: vec![entry(2, run, 4, Hash::of(b"g"), state)],
        exclusions: vec![],
        excluded: vec![],
        checks: vec![],
        ledger: None,
    });
    let envelope = Envelope::seal(&Keypair::from_seed(2), run, 4, &m).unwrap();
    let id = Hash::of(&envelope);
    for s in [2, 3, 4] {
        p.handle(gossip(s, run, 5, &hello(Status::Active, 1, vec![AppliedManifest { round: 4, id }])), 20);
    }
    let src = Some(Keypair::from_seed(2).peer_id());
    let out = p.handle(InEvent::Gossip(Gossip { bytes: envelope, source: src }), 30);
    assert_eq!(p.phase(), Phase::Syncing(4), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, OutEvent::Request { hash, .. } if *hash == state)));
}

#[test]
fn a_peer_resumed_after_the_last_round_says_the_run_is_over_and_leaves() {
    let (mut p, _) = peer_with(1, 10);
    let state = Hash::of(b"state after round 10");
    p.resume(10, state);
    let out = p.handle(InEvent::Tick, 0);
    assert!(out.contains(&OutEvent::RunOver { round: 10, state }), "{out:?}");
    assert!(out.contains(&OutEvent::Finished));
    assert_eq!(p.phase(), Phase::Done);
    // Resumed earlier in the run: it waits to sync as usual.
    let (mut p, _) = peer_with(1, 10);
    p.resume(9, state);
    let out = p.handle(InEvent::Tick, 0);
    assert!(!out.iter().any(|o| matches!(o, OutEvent::RunOver { .. } | OutEvent::Finished)), "{out:?}");
    assert_eq!(p.phase(), Phase::Waiting);
}

#[test]
fn a_joiner_syncs_only_to_a_manifest_a_majority_confirms() {
    let (mut p, run) = peer();
    // Round 4's manifest, signed by peer 2; five peers are active.
    let state = Hash::of(b"state at the start of round 4");
    let m = Message::Manifest(Manifest {
        state,
        entries: vec![entry(2, run, 4, Hash::of(b"g"), state)],
        exclusions: vec![],
        excluded: vec![],
        checks: vec![],
        ledger: None,
    });
    let envelope = Envelope::seal(&Keypair::from_seed(2), run, 4, &m).unwrap();
    let confirm = vec![AppliedManifest { round: 4, id: Hash::of(&envelope) }];
    let src = Some(Keypair::from_seed(2).peer_id());
    p.handle(InEvent::Gossip(Gossip { bytes: envelope, source: src }), 10);
    // Two of five confirm it (a minority, the signer among them): no sync.
    let mut t = 20;
    for s in 2..=6 {
        let recent = if s <= 3 { confirm.clone() } else { vec![] };
        p.handle(gossip(s, run, 5, &hello(Status::Active, 1, recent)), t);
    }
    for _ in 0..10 {
        t += 100;
        p.handle(InEvent::Tick, t);
    }
    assert_eq!(p.phase(), Phase::Waiting, "two of five is not enough");
    // A third confirms: a majority, and the joiner syncs to it.
    let out = p.handle(gossip(4, run, 5, &hello(Status::Active, 2, confirm)), t + 10);
    let out = [out, p.handle(InEvent::Tick, t + 100)].concat();
    assert_eq!(p.phase(), Phase::Syncing(4));
    assert!(out.iter().any(|o| matches!(o, OutEvent::Request { hash, .. } if *hash == state)), "{out:?}");
}

#[test]
fn a_restarted_peer_syncs_to_the_manifest_it_signed_in_its_last_life() {
    // Peer 1 signed round 4's manifest, then crashed before applying it.
    let (mut p, run) = peer();
    let state = Hash::of(b"state at the start of round 4");
    let m = Message::Manifest(Manifest {
        state,
        entries: vec![entry(1, run, 4, Hash::of(b"g"), state)],
        exclusions: vec![],
        excluded: vec![],
        checks: vec![],
        ledger: None,
    });
    let envelope = Envelope::seal(&Keypair::from_seed(1), run, 4, &m).unwrap();
    let confirm = vec![AppliedManifest { round: 4, id: Hash::of(&envelope) }];
    // Back, it fetches the manifest as a blob (no publisher) ...
    let out = p.handle(InEvent::Gossip(Gossip { bytes: envelope, source: None }), 10);
    assert_eq!(verdicts(&out), vec![Verdict::Accept], "its own manifest is news to it");
    // ... and syncs to it once the others confirm it.
    for s in 2..=4 {
        p.handle(gossip(s, run, 5, &hello(Status::Active, 1, confirm.clone())), 20);
    }
    let out = p.handle(InEvent::Tick, 200);
    assert_eq!(p.phase(), Phase::Syncing(4), "{out:?}");
    assert_eq!(p.members(), 3, "it does not count itself as another member");
}

#[test]
fn a_manifest_without_its_signers_contribution_is_forged_and_bans_the_signer() {
    // Round 1: anyone may aggregate, but only with its own contribution in
    // (an aggregator gathers after its own training).
    let (mut p, run) = peer();
    let genesis = Hash::of(b"genesis");
    let others = Manifest {
        state: genesis,
        entries: vec![entry(2, run, 1, Hash::of(b"u2"), genesis)],
        exclusions: vec![],
        excluded: vec![],
        checks: vec![],
        ledger: None,
    };
    let out = p.handle(gossip(3, run, 1, &Message::Manifest(others.clone())), 0);
    assert_eq!(verdicts(&out), vec![Verdict::Reject(DropReason::NotCandidate)]);
    assert_eq!(p.stats().forgeries, 1);
    // Its signer is banned: even a well-formed manifest of its own is dropped.
    let own = Manifest {
        state: genesis,
        entries: vec![entry(3, run, 1, Hash::of(b"u3"), genesis)],
        exclusions: vec![],
        excluded: vec![],
        checks: vec![],
        ledger: None,
    };
    let out = p.handle(gossip(3, run, 1, &Message::Manifest(own)), 1);
    assert!(matches!(verdicts(&out)[..], [Verdict::Reject(_)]), "{:?}", verdicts(&out));
    // Signed by the contributor itself, the same entries are accepted.
    let out = p.handle(gossip(2, run, 1, &Message::Manifest(others)), 2);
    assert_eq!(verdicts(&out), vec![Verdict::Accept]);
}
