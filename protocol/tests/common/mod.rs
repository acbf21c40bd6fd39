//! Helpers of the protocol's integration tests: one peer driven by hand,
//! with signed messages from peers made from seeds.
#![allow(dead_code)]

use protocol::round::rank_key;
use protocol::{
    AppliedManifest, Config, Contribution, Envelope, Gossip, Hash, InEvent, Keypair, Manifest, ManifestEntry, Message,
    OutEvent, Peer, RunSpec, Status, Verdict,
};

pub fn spec() -> RunSpec {
    RunSpec::new(
        "digits-mlp",
        protocol::spec::TrainSpec { inner_steps: 5, inner_lr: 0.01, batch_size: 8, weight_decay: 0.0 },
    )
}

pub fn peer_with(key: u64, last_round: u64) -> (Peer, Hash) {
    let spec = spec();
    let run = spec.run_id();
    let cfg = Config::new(run, Hash::of(b"genesis"), &spec, last_round);
    (Peer::new(cfg, Keypair::from_seed(key)), run)
}

pub fn peer() -> (Peer, Hash) {
    peer_with(1, 10)
}

/// A signed message from `key`, published by `key`.
pub fn gossip(key: u64, run: Hash, round: u64, msg: &Message) -> InEvent {
    let k = Keypair::from_seed(key);
    InEvent::Gossip(Gossip { bytes: Envelope::seal(&k, run, round, msg).unwrap(), source: Some(k.peer_id()) })
}

/// A contribution of `samples` to blob `hash`, trained from `base`.
pub fn contribution(hash: Hash, samples: u64, base: Hash) -> Contribution {
    Contribution {
        hash,
        samples,
        base_state: base,
        raw: Hash::of(&hash.0),
        residual: 0.0,
        chain: Hash::of(&base.0),
        payee: None,
        attest: None,
    }
}

/// A manifest entry: peer `key`'s signed announcement for `round`.
pub fn entry(key: u64, run: Hash, round: u64, hash: Hash, base: Hash) -> ManifestEntry {
    let k = Keypair::from_seed(key);
    let c = contribution(hash, 8, base);
    let sealed = Envelope::seal(&k, run, round, &Message::Contribution(c)).unwrap();
    let signature = Envelope::open(&sealed).unwrap().signature;
    ManifestEntry { peer: k.peer_id(), contribution: c, signature }
}

pub fn hello(status: Status, seq: u64, recent: Vec<AppliedManifest>) -> Message {
    Message::Hello { status, seq, recent }
}

pub fn verdicts(out: &[OutEvent]) -> Vec<Verdict> {
    out.iter()
        .filter_map(|o| match o {
            OutEvent::Verdict(v) => Some(*v),
            _ => None,
        })
        .collect()
}

pub fn published_manifest(out: &[OutEvent]) -> Option<Manifest> {
    out.iter().find_map(|o| match o {
        OutEvent::Broadcast(b) => match Envelope::open(b).ok()?.message().ok()? {
            Message::Manifest(m) => Some(m),
            _ => None,
        },
        _ => None,
    })
}

pub fn requests_for(out: &[OutEvent], blob: Hash) -> Vec<protocol::PeerId> {
    out.iter()
        .filter_map(|o| match o {
            OutEvent::Request { hash, from, .. } if *hash == blob => Some(*from),
            _ => None,
        })
        .collect()
}

/// Seeds 1-4 with `me` the one ranked last as round 1's aggregator (so
/// another signs round 1's manifest), and the others.
pub fn four_peers_me_not_first(run: Hash) -> (u64, Vec<u64>) {
    let me = [1u64, 2, 3, 4].into_iter().max_by_key(|s| rank_key(&run, 1, &Keypair::from_seed(*s).peer_id())).unwrap();
    (me, [1u64, 2, 3, 4].into_iter().filter(|s| *s != me).collect())
}

/// A manifest of `round` signed by `signer` with entries of `keys` (each
/// a contribution from `base`), as sealed bytes and its id.
pub fn sealed_manifest(signer: u64, keys: &[u64], run: Hash, round: u64, base: Hash) -> (Vec<u8>, Hash) {
    let mut entries: Vec<ManifestEntry> =
        keys.iter().map(|s| entry(*s, run, round, Hash::of(format!("g{round}-{s}").as_bytes()), base)).collect();
    entries.sort_by_key(|e| e.peer);
    let m = Manifest { state: base, entries, exclusions: vec![], excluded: vec![], checks: vec![], ledger: None };
    let bytes = Envelope::seal(&Keypair::from_seed(signer), run, round, &Message::Manifest(m)).unwrap();
    let id = Hash::of(&bytes);
    (bytes, id)
}

pub fn raw(key: u64, bytes: Vec<u8>) -> InEvent {
    InEvent::Gossip(Gossip { bytes, source: Some(Keypair::from_seed(key).peer_id()) })
}

pub fn applied(round: u64, id: Hash) -> AppliedManifest {
    AppliedManifest { round, id }
}

/// Drives a peer in 300 ms ticks from 700 ms (until 60 s, and while
/// `go` holds), failing every blob request it makes, `out` included (as
/// when nobody serves the run's last manifest). Returns whether it left
/// (`Finished`) and when the loop stopped.
pub fn fail_every_request(p: &mut Peer, mut out: Vec<OutEvent>, go: impl Fn(&Peer) -> bool) -> (bool, u64) {
    let (mut t, mut left) = (700, out.iter().any(|o| matches!(o, OutEvent::Finished)));
    while !left && go(p) && t < 60_000 {
        let mut queue = std::mem::take(&mut out);
        queue.extend(p.handle(InEvent::Tick, t));
        while let Some(o) = queue.pop() {
            match o {
                OutEvent::Request { hash, from, .. } => queue.extend(
                    p.handle(InEvent::RequestFailed { hash, from, why: protocol::FetchFailure::Unreachable }, t),
                ),
                OutEvent::Finished => left = true,
                _ => {}
            }
        }
        t += 300;
    }
    (left, t)
}
