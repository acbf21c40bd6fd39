//! Hostile input against one peer: each bad message is dropped and counted.

use protocol::envelope::Status;
use protocol::{Config, DropReason, Envelope, Hash, InEvent, Keypair, Message, Peer, RunSpec};

fn peer() -> (Peer, Hash) {
    let spec = RunSpec::new(
        "digits-mlp",
        protocol::spec::TrainSpec { inner_steps: 5, inner_lr: 0.01, batch_size: 8, weight_decay: 0.0 },
    );
    let run = spec.run_id();
    let cfg = Config::new(run, Hash::of(b"genesis"), &spec, 10);
    (Peer::new(cfg, Keypair::from_seed(1)), run)
}

#[test]
fn bad_messages_are_dropped_and_counted() {
    let (mut p, run) = peer();
    let other = Keypair::from_seed(2);
    let hello = Message::Hello { status: Status::Active, seq: 1, recent: vec![] };
    let mut bad_sig = Envelope::seal(&other, run, 1, &hello).unwrap();
    let n = bad_sig.len();
    bad_sig[n - 1] ^= 0xff;
    let wrong_run = Envelope::seal(&other, Hash::of(b"other"), 1, &hello).unwrap();
    let oversize = vec![1u8; protocol::MAX_ENVELOPE_BYTES + 1];
    let empty_manifest = Message::Manifest(protocol::Manifest { state: Hash::default(), entries: vec![] });
    let invalid = Envelope::seal(&other, run, 1, &empty_manifest).unwrap();
    for b in [bad_sig, wrong_run, oversize, invalid, vec![0u8; 10]] {
        assert!(p.handle(InEvent::Gossip(b), 0).iter().all(|o| matches!(o, protocol::OutEvent::Broadcast(_))));
    }
    let d = &p.stats().dropped;
    assert_eq!(d.get(&DropReason::BadSignature), Some(&1));
    assert_eq!(d.get(&DropReason::WrongRun), Some(&1));
    assert_eq!(d.get(&DropReason::Oversize), Some(&1));
    assert_eq!(d.get(&DropReason::Invalid), Some(&1));
    assert_eq!(d.get(&DropReason::Malformed), Some(&1));
    assert_eq!(p.members(), 0, "no bad message made anyone a member");
    // A good hello is accepted.
    let good = Envelope::seal(&other, run, 1, &hello).unwrap();
    p.handle(InEvent::Gossip(good), 1);
    assert_eq!(p.members(), 1);
}

#[test]
fn stale_contributions_are_dropped() {
    let (mut p, run) = peer();
    // Two more peers make min_peers = 3: round 1 starts.
    let mut out = Vec::new();
    for s in [2, 3] {
        let k = Keypair::from_seed(s);
        let hello =
            Envelope::seal(&k, run, 0, &Message::Hello { status: Status::Waiting, seq: 1, recent: vec![] }).unwrap();
        out.extend(p.handle(InEvent::Gossip(hello), 0));
    }
    out.extend(p.handle(InEvent::Tick, 600));
    assert!(out.iter().any(|o| matches!(o, protocol::OutEvent::StartTraining { round: 1, .. })), "{out:?}");
    let k = Keypair::from_seed(2);
    let c = Message::Contribution { hash: Hash::of(b"g"), samples: 1, base_state: Hash::default() };
    let stale = Envelope::seal(&k, run, 0, &c).unwrap();
    p.handle(InEvent::Gossip(stale), 700);
    assert_eq!(p.stats().dropped.get(&DropReason::StaleRound), Some(&1));
}

/// Peer 1 with three honest peers (2, 3, 4) in round 1, everyone's
/// contribution in hand; returns the outputs so far.
fn round_one_gathered(p: &mut Peer, run: Hash) -> Vec<protocol::OutEvent> {
    let mut out = Vec::new();
    for s in [2, 3, 4] {
        let k = Keypair::from_seed(s);
        let hello =
            Envelope::seal(&k, run, 0, &Message::Hello { status: Status::Waiting, seq: 1, recent: vec![] }).unwrap();
        out.extend(p.handle(InEvent::Gossip(hello), 0));
    }
    out.extend(p.handle(InEvent::Tick, 600));
    let base = p.state();
    out.extend(p.handle(InEvent::TrainingDone { round: 1, hash: Hash::of(b"mine"), samples: 8 }, 700));
    for s in [2, 3, 4] {
        let h = Hash::of(format!("grad-{s}").as_bytes());
        let c = Message::Contribution { hash: h, samples: 8, base_state: base };
        out.extend(p.handle(InEvent::Gossip(Envelope::seal(&Keypair::from_seed(s), run, 1, &c).unwrap()), 800));
        out.extend(p.handle(InEvent::BlobReady(h), 810));
    }
    out
}

fn published_manifest(out: &[protocol::OutEvent]) -> bool {
    out.iter().any(|o| match o {
        protocol::OutEvent::Broadcast(b) => {
            Envelope::open(b).ok().and_then(|e| e.message().ok()).is_some_and(|m| matches!(m, Message::Manifest(_)))
        }
        _ => false,
    })
}

#[test]
fn one_peer_claiming_a_later_round_does_not_stop_the_aggregator() {
    let (mut p, run) = peer();
    let mut out = round_one_gathered(&mut p, run);
    // A fifth peer says it is active in round 2 and applied a round-1
    // manifest nobody else has heard of.
    let liar = Keypair::from_seed(5);
    let lie = Message::Hello { status: Status::Active, seq: 1, recent: vec![(1, Hash::of(b"made up"))] };
    out.extend(p.handle(InEvent::Gossip(Envelope::seal(&liar, run, 2, &lie).unwrap()), 900));
    // Past the deadline and every takeover step, whatever our rank.
    for t in (1_000..120_000).step_by(500) {
        let lie = Message::Hello { status: Status::Active, seq: t, recent: vec![(1, Hash::of(b"made up"))] };
        out.extend(p.handle(InEvent::Gossip(Envelope::seal(&liar, run, 2, &lie).unwrap()), t));
        out.extend(p.handle(InEvent::Tick, t));
        if published_manifest(&out) {
            break;
        }
        // The honest peers keep saying hello from round 1.
        for s in [2, 3, 4] {
            let h = Message::Hello { status: Status::Active, seq: t, recent: vec![] };
            out.extend(p.handle(InEvent::Gossip(Envelope::seal(&Keypair::from_seed(s), run, 1, &h).unwrap()), t));
        }
    }
    assert!(published_manifest(&out), "peer 1 published round 1's manifest despite the liar");
}

#[test]
fn blobs_nobody_serves_and_nothing_needs_are_given_up_without_leaving_the_round() {
    let (mut p, run) = peer();
    let base = p.state();
    let mut out = round_one_gathered(&mut p, run);
    // Peer 7 announces a contribution and dies: it is in no manifest.
    let dead = Hash::of(b"grad-7");
    let c = Message::Contribution { hash: dead, samples: 8, base_state: base };
    out.extend(p.handle(InEvent::Gossip(Envelope::seal(&Keypair::from_seed(7), run, 1, &c).unwrap()), 820));
    // Peer 2 publishes round 1's manifest; one of its blobs (peer 5's) is
    // still to come, so peer 1 is collecting.
    let mut entries: Vec<protocol::ManifestEntry> = [1u64, 2, 3, 4, 5]
        .iter()
        .map(|&s| {
            let hash = if s == 1 { Hash::of(b"mine") } else { Hash::of(format!("grad-{s}").as_bytes()) };
            protocol::ManifestEntry { peer: Keypair::from_seed(s).peer_id(), hash, samples: 8 }
        })
        .collect();
    entries.sort_by_key(|e| e.peer);
    let m = Message::Manifest(protocol::Manifest { state: base, entries });
    out.extend(p.handle(InEvent::Gossip(Envelope::seal(&Keypair::from_seed(2), run, 1, &m).unwrap()), 850));
    assert_eq!(p.phase(), protocol::Phase::Collecting(1));
    // A sixth peer lists a round-1 manifest id that nobody can serve.
    let bogus = Hash::of(b"made up");
    let liar = Keypair::from_seed(6);
    let lie = Message::Hello { status: Status::Active, seq: 1, recent: vec![(1, bogus)] };
    out.extend(p.handle(InEvent::Gossip(Envelope::seal(&liar, run, 1, &lie).unwrap()), 900));
    out.extend(p.handle(InEvent::Tick, 901));
    let fetches = |out: &[protocol::OutEvent]| {
        out.iter().filter(|o| matches!(o, protocol::OutEvent::Fetch { hash, .. } if *hash == bogus)).count()
    };
    assert_eq!(fetches(&out), 1, "the unknown manifest is fetched");
    let mut t = 1_000;
    let mut later = Vec::new();
    for _ in 0..40 {
        later.extend(p.handle(InEvent::BlobFailed(bogus), t));
        later.extend(p.handle(InEvent::BlobFailed(dead), t));
        t += 400;
        later.extend(p.handle(InEvent::Tick, t));
        // The honest peers are still there, in round 1.
        for s in [2, 3, 4] {
            let h = Message::Hello { status: Status::Active, seq: t, recent: vec![] };
            later.extend(p.handle(InEvent::Gossip(Envelope::seal(&Keypair::from_seed(s), run, 1, &h).unwrap()), t));
        }
    }
    let after: Vec<protocol::OutEvent> = p.handle(InEvent::Tick, t + 1_000);
    assert!(fetches(&later) >= 1, "it was retried");
    assert_eq!(fetches(&after), 0, "then not asked for again");
    assert_eq!(p.phase(), protocol::Phase::Collecting(1), "still collecting round 1");
    assert_eq!(p.stats().resyncs, 0);
}

#[test]
fn announcements_for_made_up_rounds_do_not_crowd_out_the_manifest_to_sync_to() {
    let (mut p, run) = peer();
    // A liar announces contributions for twenty future rounds.
    let liar = Keypair::from_seed(9);
    for r in 10u64..30 {
        let c = Message::Contribution { hash: Hash::of(&r.to_le_bytes()), samples: 1, base_state: Hash::default() };
        p.handle(InEvent::Gossip(Envelope::seal(&liar, run, r, &c).unwrap()), 10);
    }
    // Three peers applied round 4's manifest, signed by peer 2.
    let state = Hash::of(b"state at the start of round 4");
    let entry = protocol::ManifestEntry { peer: Keypair::from_seed(2).peer_id(), hash: Hash::of(b"g"), samples: 8 };
    let m = Message::Manifest(protocol::Manifest { state, entries: vec![entry] });
    let envelope = Envelope::seal(&Keypair::from_seed(2), run, 4, &m).unwrap();
    let id = Hash::of(&envelope);
    for s in [2, 3, 4] {
        let h = Message::Hello { status: Status::Active, seq: 1, recent: vec![(4, id)] };
        p.handle(InEvent::Gossip(Envelope::seal(&Keypair::from_seed(s), run, 5, &h).unwrap()), 20);
    }
    let out = p.handle(InEvent::Gossip(envelope), 30);
    assert_eq!(p.phase(), protocol::Phase::Syncing(4), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, protocol::OutEvent::Fetch { hash, .. } if *hash == state)));
}
