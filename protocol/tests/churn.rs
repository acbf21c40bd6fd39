//! Churn at 100+ peers in the simulator: a fifth of the peers leave and come
//! back, the aggregator crashes every few rounds, and a partition splits the
//! swarm for a while and heals.

use protocol::sim::{Sim, SimConfig, rng};
use std::collections::BTreeSet;

fn config(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(100, seed);
    cfg.rounds = 18;
    cfg.min_peers = 90;
    cfg.hello_interval = 1_000;
    cfg.peer_ttl = 4_000;
    cfg.round_timeout = 6_000;
    cfg.aggregator_timeout = 1_500;
    cfg.loss = 0.002;
    cfg
}

/// Rounds after the heal within which the minority has re-synced: the
/// first round that closes after the heal is agreed by everyone.
const SETTLE: u64 = 1;

/// Runs until some node has applied `round`.
fn until_round(sim: &mut Sim, round: u64) {
    let end = sim.now + 120_000;
    sim.run_while(end, |s| s.first_applied.keys().next_back().copied().unwrap_or(0) < round);
}

#[test]
fn churn_crashes_and_a_healed_partition_end_in_agreement() {
    let cfg = config(11);
    let ceiling = cfg.round_timeout + 2 * cfg.aggregator_timeout + cfg.train_time.1;
    let mut sim = Sim::new(cfg);
    let mut rng = rng(99);
    let n = 100usize;
    let mut down: Vec<(usize, u64)> = Vec::new(); // (node, restart at)

    // Rounds 2..=6: four peers a round (20 distinct peers, a fifth of the
    // swarm) crash and come back 1-5 s later; in rounds 3 and 6 the
    // aggregator of the round is killed too (and back 2 s later).
    let mut crashed: BTreeSet<usize> = BTreeSet::new();
    let mut aggregator_kills = 0;
    for round in 2..=6u64 {
        until_round(&mut sim, round);
        for _ in 0..4 {
            let pick = loop {
                let i = rng.range(0, n as u64 - 1) as usize;
                if sim.nodes[i].alive && !crashed.contains(&i) {
                    break i;
                }
            };
            sim.crash(pick);
            crashed.insert(pick);
            down.push((pick, sim.now + rng.range(1_000, 5_000)));
        }
        if round % 3 == 0 {
            let (agg, _) = sim.manifests[&round].values().next().cloned().unwrap();
            let a = sim.node_of(&agg).unwrap();
            if sim.nodes[a].alive {
                sim.crash(a);
                aggregator_kills += 1;
                down.push((a, sim.now + 2_000));
            }
        }
        let now = sim.now;
        for (i, _) in down.iter().filter(|(_, t)| *t <= now) {
            sim.restart(*i);
        }
        down.retain(|(_, t)| *t > now);
    }
    let end = sim.now + 6_000;
    sim.run_until(end);
    for (i, _) in down.drain(..) {
        sim.restart(i);
    }
    assert_eq!(crashed.len(), 20, "a fifth of the peers crashed");
    assert_eq!(aggregator_kills, 2, "the aggregator was killed in rounds 3 and 6");

    // Round 9: a 60/40 partition for 8 s, then it heals.
    until_round(&mut sim, 9);
    let minority: BTreeSet<usize> = (0..40).collect();
    sim.partition(minority.clone());
    let heal_at = sim.now + 8_000;
    sim.run_until(heal_at);
    sim.heal();
    let healed_round = sim.first_applied.keys().next_back().copied().unwrap();
    let split = sim.first_disagreement_from(9);
    sim.run_until(sim.now + 200_000);

    for (i, nd) in sim.nodes.iter().enumerate() {
        if nd.alive && !nd.finished {
            eprintln!("node {i}: {:?} round {} {:?}", nd.peer.phase(), nd.peer.round(), nd.peer.stats());
        }
    }
    assert!(sim.all_finished(), "not every live peer finished");
    let live = sim.nodes.iter().filter(|n| n.alive).count();
    assert_eq!(live, n, "everyone was restarted");
    // Every live peer agrees on every round before the partition, and from
    // SETTLE rounds after it heals (the minority notices the majority's
    // history in hellos and re-syncs) to the end.
    let settle = healed_round + SETTLE;
    if let Some(r) = sim.first_disagreement_from(settle) {
        let mut seen = std::collections::BTreeMap::new();
        for (i, (agg, m)) in &sim.manifests[&r] {
            seen.entry((sim.node_of(agg), m.state, m.entries.len())).or_insert_with(Vec::new).push(*i);
        }
        for (k, v) in seen {
            eprintln!("round {r}: aggregator {:?} state {:?} entries {} applied by {} nodes", k.0, k.1, k.2, v.len());
        }
    }
    let agreed_again = (healed_round..=18).find(|r| sim.first_disagreement_from(*r).is_none());
    eprintln!("healed after round {healed_round}; all agree again from round {agreed_again:?}");
    assert_eq!(sim.first_disagreement_from(settle), None, "disagreement after heal");
    assert!(
        (1..9).all(|r| sim.applied[&r].values().collect::<BTreeSet<_>>().len() == 1),
        "disagreement before the partition"
    );
    assert!(sim.divergent.is_empty(), "a manifest was applied to the wrong state: {:?}", sim.divergent);
    let last = 18;
    assert_eq!(sim.applied[&last].len(), n, "every peer applied the last round");
    let switched: u64 = sim.nodes.iter().map(|n| n.peer.stats().switched_history).sum();
    let stall = sim.longest_stall();
    let resyncs: u64 = sim.nodes.iter().map(|n| n.peer.stats().resyncs).sum();
    eprintln!(
        "split at round {split:?}, healed at round {healed_round}; {switched} history switches, {resyncs} resyncs; longest stall {stall} ms"
    );
    assert!(split.is_some(), "the partition did split the swarm's history");
    // The minority (40 peers) left its history for the majority's; no peer
    // of the majority did.
    for (i, nd) in sim.nodes.iter().enumerate() {
        let switched = nd.peer.stats().switched_history > 0;
        assert_eq!(switched, minority.contains(&i), "node {i}: switched history {switched}");
    }
    assert!(stall <= ceiling, "a round stalled {stall} ms > {ceiling} ms");
}
