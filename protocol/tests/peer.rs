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
