//! What a flood of hellos from fresh keys costs one peer's protocol (issue
//! 13 item 4): hellos absorbed per second of this machine's CPU (envelope
//! check, one ed25519 verification, then the poll each accepted hello runs).
//!
//! cargo bench -p protocol --bench hello_flood -- [KEYS] [HELLOS_PER_KEY] [RATE] [--poll-each]
//!
//! The peer is driven as the node drives it: a tick whenever its
//! `next_timeout` is due (hellos are acted on in batches, within 20 ms).
//! `--poll-each` ticks after every hello instead (a poll per hello: the
//! worst case, and how the first version of this bench measured).
//!
//! Defaults: 1 000 fresh keys, 4 hellos each, arriving at 2 000 hellos per
//! second of simulated time; each hello lists 4 made-up manifests (the most
//! a hello lists). The peer is a waiting peer beside 3 honest ones (the
//! state in which it counts every head). It prints the wall time per hello
//! in the first and last 1 000 (the cost grows with the members known: a
//! fresh key stays a member for the peer TTL, 5 s) and the hellos per
//! second absorbed. A node whose event loop spends longer than the hello
//! interval on a flood falls behind on its own hellos in real time (the
//! simulated clock here does not see CPU time).

use std::time::Instant;

use protocol::{AppliedManifest, Config, Envelope, Gossip, Hash, InEvent, Keypair, Message, Peer, RunSpec, Status};

fn hello(key: &Keypair, run: Hash, seq: u64, recent: Vec<AppliedManifest>) -> InEvent {
    let msg = Message::Hello { status: Status::Active, seq, recent };
    InEvent::Gossip(Gossip { bytes: Envelope::seal(key, run, 2, &msg).expect("seal"), source: Some(key.peer_id()) })
}

fn main() {
    let poll_each = std::env::args().any(|a| a == "--poll-each");
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, d: u64| args.get(i).copied().unwrap_or(d);
    let (keys, per_key, rate) = (arg(0, 1_000), arg(1, 4), arg(2, 2_000).max(1));
    let spec = RunSpec::new(
        "digits-mlp",
        protocol::spec::TrainSpec { inner_steps: 5, inner_lr: 0.01, batch_size: 8, weight_decay: 0.0 },
    );
    let run = spec.run_id();
    let mut peer = Peer::new(Config::new(run, Hash::of(b"genesis"), &spec, 10), Keypair::from_seed(1));
    // Sealing is the attacker's cost: done before the clock starts.
    let fresh: Vec<Keypair> = (0..keys).map(|k| Keypair::from_seed(1_000 + k)).collect();
    let mut flood = Vec::new();
    for seq in 1..=per_key {
        for (k, key) in fresh.iter().enumerate() {
            let recent = (0..4u64)
                .map(|m| AppliedManifest { round: 1 + m, id: Hash::of(format!("made up {k} {seq} {m}").as_bytes()) })
                .collect();
            flood.push(hello(key, run, seq, recent));
        }
    }
    let honest: Vec<Keypair> = (2..5).map(Keypair::from_seed).collect();
    let n = flood.len();
    println!(
        "{keys} fresh keys x {per_key} hellos ({n}), {rate} hellos/s of simulated time, 4 listed manifests each, {}\n",
        if poll_each { "a poll after every hello" } else { "polls when due (as the node)" }
    );
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    for (i, ev) in flood.into_iter().enumerate() {
        let now = i as u64 * 1_000 / rate;
        if (i as u64).is_multiple_of((rate / 2).max(1)) {
            // Honest peers say hello every 500 ms of simulated time.
            for (s, k) in honest.iter().enumerate() {
                peer.handle(hello(k, run, 1 + i as u64, vec![]), now + s as u64);
            }
        }
        let t = Instant::now();
        if !poll_each {
            // The node's timer: due ticks first (at most one poll per 20 ms
            // of hellos, and the peer's retries and hedges).
            let mut due = 0;
            while peer.next_timeout() <= now && due < 100 {
                peer.handle(InEvent::Tick, peer.next_timeout());
                due += 1;
            }
        }
        peer.handle(ev, now);
        if poll_each {
            peer.handle(InEvent::Tick, now);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let total = started.elapsed().as_secs_f64();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let k = times.len().min(1_000);
    println!(
        "| hellos | wall s | hellos/s absorbed | us/hello, first 1 000 | us/hello, last 1 000 | members at the end |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {total:.2} | {:.0} | {:.1} | {:.1} | {} |",
        n as f64 / total,
        mean(&times[..k]) * 1e6,
        mean(&times[times.len() - k..]) * 1e6,
        peer.members(),
    );
}
