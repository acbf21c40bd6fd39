//! Simulator scenarios: agreement, aggregator loss, late joins.

use protocol::Phase;
use protocol::Time;
use protocol::round::rank_key;
use protocol::sim::{Sim, SimConfig};

fn assert_agreement(sim: &Sim) {
    assert_eq!(sim.first_disagreement(), None, "peers disagree");
    assert!(sim.divergent.is_empty(), "applied from a wrong state: {:?}", sim.divergent);
    for n in &sim.nodes {
        assert_eq!(n.peer.stats().conflicting_manifests, 0);
    }
}

#[test]
fn three_peers_agree_on_every_manifest() {
    let mut sim = Sim::new(SimConfig::new(3, 1));
    sim.run_until(120_000);
    assert!(sim.all_finished(), "not finished at t={}", sim.now);
    assert_agreement(&sim);
    for r in 1..=10 {
        assert_eq!(sim.applied[&r].len(), 3, "round {r}");
        assert_eq!(sim.contributors(r).len(), 3, "round {r} should include everyone");
    }
    // The nodes sleep until the machine's next timeout: a few wake-ups per
    // second (hellos out, hellos in, deadlines), never a busy loop.
    let secs = sim.now as f64 / 1000.0;
    for (i, n) in sim.nodes.iter().enumerate() {
        let rate = n.ticks as f64 / secs;
        eprintln!("node {i}: {} timer wake-ups in {secs:.1} s ({rate:.1}/s)", n.ticks);
        assert!(rate < 10.0, "node {i} woke {rate:.1} times a second");
    }
}

#[test]
fn thirty_peers_agree_with_message_loss() {
    for seed in [2, 3] {
        let mut cfg = SimConfig::new(30, seed);
        cfg.loss = 0.01;
        cfg.rounds = 8;
        cfg.min_peers = 30;
        let mut sim = Sim::new(cfg);
        sim.run_until(200_000);
        assert!(sim.all_finished(), "seed {seed}: not finished at t={}", sim.now);
        assert_agreement(&sim);
        // A peer that lost a manifest syncs from the next one instead of
        // applying the round; everyone applies the last round.
        assert_eq!(sim.applied[&8].len(), 30, "seed {seed}: last round");
        for r in 1..=8 {
            assert!(sim.applied[&r].len() >= 28, "seed {seed} round {r}");
            assert!(sim.contributors(r).len() >= 27, "seed {seed} round {r}: {:?}", sim.contributors(r));
        }
    }
}

#[test]
fn a_lost_aggregator_is_replaced() {
    let mut sim = Sim::new(SimConfig::new(5, 4));
    // Run until every node trains round 3, then kill round 3's first candidate.
    sim.run_while(60_000, |s| (0..5).any(|i| s.phase(i) != Phase::Training(3)));
    let run = sim.run_id();
    let first = (0..5).min_by_key(|&i| rank_key(&run, 3, &sim.peer_id(i))).unwrap();
    sim.crash(first);
    sim.run_until(200_000);
    assert!(sim.all_finished());
    assert_agreement(&sim);
    let (agg, _) = sim.manifests[&3].values().next().unwrap();
    assert_ne!(sim.node_of(agg), Some(first), "the dead peer cannot have signed round 3");
    for r in 3..=10 {
        assert_eq!(sim.applied[&r].len(), 4, "round {r}");
        assert!(!sim.contributors(r).contains(&first));
    }
}

#[test]
fn a_late_joiner_syncs_then_contributes_from_the_next_round() {
    let mut sim = Sim::new(SimConfig::new(3, 5));
    sim.run_while(60_000, |s| s.nodes[0].peer.round() < 4);
    let join_round = sim.nodes[0].peer.round();
    let joiner = sim.add_node();
    sim.run_until(200_000);
    assert!(sim.all_finished());
    assert_agreement(&sim);
    let first_applied = *sim.applied.iter().find(|(_, m)| m.contains_key(&joiner)).unwrap().0;
    let first_contrib = (1..=10).find(|&r| sim.contributors(r).contains(&joiner)).unwrap();
    // It syncs from the newest manifest a quorum confirms, applies it, and
    // contributes from the round after the one it joined in.
    assert!(first_applied >= join_round - 1, "joined in round {join_round}, first applied {first_applied}");
    assert!(first_contrib > first_applied);
    assert!(first_contrib <= join_round + 1, "joined in round {join_round}, first contributed in {first_contrib}");
    for r in first_contrib..=10 {
        assert!(sim.contributors(r).contains(&joiner), "round {r}");
        assert_eq!(sim.applied[&r][&joiner], sim.applied[&r][&0]);
    }
}

#[test]
fn a_joiner_whose_sync_round_was_evicted_syncs_to_a_later_one() {
    let mut cfg = SimConfig::new(3, 11);
    // A fetch nobody serves fails only after a long timeout.
    cfg.fetch_timeout = 5_000;
    let mut sim = Sim::new(cfg);
    sim.run_while(60_000, |s| s.nodes[0].peer.round() < 4);
    let join_round = sim.nodes[0].peer.round();
    let joiner = sim.add_node();
    // The joiner's first fetches run while every peer forgets the
    // contributions of the rounds it could sync to.
    let until = sim.now + 3_000;
    let mut first_sync = None;
    while sim.now < until {
        let r = sim.nodes[0].peer.round();
        sim.forget_contributions_up_to(r);
        let next = sim.now + 50;
        sim.run_until(next);
        if let Phase::Syncing(s) = sim.phase(joiner) {
            first_sync.get_or_insert(s);
        }
    }
    sim.run_until(200_000);
    assert!(sim.all_finished(), "every peer, the joiner included, left after the last round");
    assert_agreement(&sim);
    let contributed: Vec<u64> = (1..=10).filter(|&r| sim.contributors(r).contains(&joiner)).collect();
    eprintln!("joined in round {join_round}, contributed in {contributed:?}");
    assert!(!contributed.is_empty(), "the joiner contributed");
    assert!(sim.nodes[joiner].peer.stats().resyncs > 0, "its first sync failed and it synced again");
    let first_sync = first_sync.expect("the joiner started a sync while the blobs were being forgotten");
    let first_applied = *sim.applied.iter().find(|(_, m)| m.contains_key(&joiner)).unwrap().0;
    eprintln!("first sync to round {first_sync}, first applied round {first_applied}");
    assert!(first_applied > first_sync, "it synced to a later round than the evicted one");
}

#[test]
fn a_peer_left_waiting_when_the_run_ends_leaves_too() {
    let mut sim = Sim::new(SimConfig::new(3, 12));
    sim.run_while(60_000, |s| s.nodes[0].peer.round() < 9);
    let joiner = sim.add_node();
    // Nothing it needs can be fetched: it waits until the others are gone.
    loop {
        let r = sim.nodes[0].peer.round();
        sim.forget_contributions_up_to(r);
        let next = sim.now + 50;
        sim.run_until(next);
        if (0..3).all(|i| sim.nodes[i].finished) || sim.now > 100_000 {
            break;
        }
    }
    sim.run_until(sim.now + 60_000);
    assert!((0..3).all(|i| sim.nodes[i].finished));
    assert!(sim.nodes[joiner].finished, "the joiner saw the run end and left: {:?}", sim.phase(joiner));
}

#[test]
fn a_slow_provider_does_not_hold_a_peer_back() {
    // Peer 3's requests to peer 1 hang for 8 s, then fail (a stale
    // address); everyone else gets peer 1's contributions at once.
    let run = |hedge: Time| {
        let mut cfg = SimConfig::new(4, 21);
        cfg.fetch_timeout = 8_000;
        cfg.fetch_hedge = hedge;
        let mut sim = Sim::new(cfg);
        sim.slow_link(3, 1);
        sim.run_until(300_000);
        let contributed = (1..=10).filter(|&r| sim.contributors(r).contains(&3)).count();
        (sim, contributed)
    };
    let (sim, with_hedge) = run(1_000);
    assert!(sim.all_finished(), "{:?}", (0..4).map(|i| sim.phase(i)).collect::<Vec<_>>());
    assert_agreement(&sim);
    let hedged = sim.nodes[3].peer.stats().hedged_requests;
    // The same run where a fetch waits for its provider's answer.
    let (_, without) = run(Time::MAX / 4);
    eprintln!("peer 3 contributed to {with_hedge}/10 rounds with hedged requests ({hedged}), {without}/10 without");
    assert!(hedged > 0);
    assert!(with_hedge >= 9, "with hedged fetches peer 3 keeps up: {with_hedge}/10");
    assert!(without < with_hedge, "the slow link costs rounds without them: {without}/10");
}

#[test]
fn simulation_is_deterministic() {
    let run = |seed| {
        let mut cfg = SimConfig::new(8, seed);
        cfg.loss = 0.02;
        let mut sim = Sim::new(cfg);
        sim.run_until(100_000);
        (sim.now, sim.applied.clone())
    };
    assert_eq!(run(9), run(9));
}

#[test]
fn a_healed_even_split_keeps_the_side_with_the_lowest_peer_id() {
    // Which rule heals an even split depends on the schedule. Over seeds
    // 1-100 of this scenario: the tie rule decides in 39; in 42 the side
    // that is behind resyncs to the side ahead before any history is
    // compared (nobody "switches"); in 16 the side with the lowest id
    // switches (the first peer to compare counts its own side short: its
    // partner has not applied the contested round yet); 3 mix. All end in
    // agreement (`healed_even_splits_end_the_run_in_agreement`). Seed 21 is
    // decided by the tie rule (seed 31 was until the settling of new peers'
    // hellos shifted its schedule); this checks that rule.
    let mut cfg = SimConfig::new(4, 21);
    cfg.min_peers = 4;
    cfg.rounds = 12;
    let mut sim = Sim::new(cfg);
    sim.run_while(60_000, |s| s.first_applied.keys().next_back().copied().unwrap_or(0) < 2);
    // Two against two: the side holding the lowest peer id wins the tie.
    let lowest = (0..4).min_by_key(|&i| sim.peer_id(i)).unwrap();
    let side: std::collections::BTreeSet<usize> = [lowest, (lowest + 1) % 4].into_iter().collect();
    sim.partition(side.clone());
    let heal = sim.now + 8_000;
    sim.run_until(heal);
    sim.heal();
    let healed = sim.first_applied.keys().next_back().copied().unwrap();
    assert!(sim.first_disagreement_from(3).is_some(), "the split made two histories");
    sim.run_until(sim.now + 120_000);
    assert!(sim.all_finished());
    assert_eq!(sim.first_disagreement_from(healed + 1), None, "everyone agrees after the heal");
    for i in 0..4 {
        let switched = sim.nodes[i].peer.stats().switched_history > 0;
        assert_eq!(switched, !side.contains(&i), "node {i}: only the side without the lowest id switches");
    }
}

#[test]
fn a_healed_split_whose_smaller_side_took_in_newcomers_heals_onto_the_side_with_more_old_peers() {
    // Issue 13 item 2: the rules that choose between histories count only
    // peers that contributed before the histories parted, on both sides.
    // Side A (2 peers) takes in 3 newcomers while apart from side B (4
    // peers). A peer cannot tell the other side's newcomers from fresh
    // keys, so each side counting its own would make both the larger
    // (A: 5 against B's 4; B: 4 against A's 2) and the split would stay.
    // Both count the peers from before the parting: A's 2 switch to B, and
    // A's newcomers, who knew only A's peers, follow them.
    let mut cfg = SimConfig::new(6, 37);
    cfg.min_peers = 6;
    cfg.rounds = 16;
    let mut sim = Sim::new(cfg);
    sim.run_while(60_000, |s| s.first_applied.keys().next_back().copied().unwrap_or(0) < 2);
    let mut a: std::collections::BTreeSet<usize> = [0, 1].into_iter().collect();
    sim.partition(a.clone());
    // Side A applies rounds alone first: the newcomers sync to a manifest
    // of A's alone, and never see B's peers contribute (they follow their
    // seniors, A's old peers, when those switch).
    let apart = sim.now + 3_000;
    sim.run_until(apart);
    for _ in 0..3 {
        a.insert(sim.add_node());
        sim.partition(a.clone());
    }
    let heal = sim.now + 10_000;
    sim.run_until(heal);
    let newcomers_contributed = (6..9).all(|i| (1..=16).any(|r| sim.contributors(r).contains(&i)));
    assert!(newcomers_contributed, "the newcomers joined side A and contributed");
    sim.heal();
    let healed = sim.first_applied.keys().next_back().copied().unwrap();
    assert!(sim.first_disagreement_from(3).is_some(), "the split made two histories");
    sim.run_until(sim.now + 120_000);
    assert!(sim.all_finished(), "every peer finished");
    assert_eq!(sim.first_disagreement_from(healed + 2), None, "everyone agrees after the heal");
    for i in 0..9 {
        let switched = sim.nodes[i].peer.stats().switched_history > 0;
        assert_eq!(switched, a.contains(&i), "node {i}: only side A (the fewer old peers) switches");
    }
}

/// Rounds (after `from`) until every node that is still running applied an
/// exclusion of `j`; None if some never did.
fn excluded_by_all(sim: &Sim, j: usize) -> bool {
    sim.nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| n.alive && *i != j)
        .all(|(i, _)| sim.excluded.get(&i).is_some_and(|e| e.contains(&j)))
}

#[test]
fn liars_are_checked_disputed_and_excluded_and_nobody_honest_is() {
    let mut cfg = SimConfig::new(10, 41);
    cfg.min_peers = 10;
    cfg.rounds = 12;
    cfg.verify_rate = 0.8;
    let mut sim = Sim::new(cfg);
    sim.liars.extend([3, 7]);
    sim.run_until(300_000);
    assert!(sim.all_finished(), "{:?}", (0..10).map(|i| sim.phase(i)).collect::<Vec<_>>());
    assert_agreement(&sim);
    for liar in [3, 7] {
        assert!(excluded_by_all(&sim, liar), "liar {liar} excluded by every peer: {:?}", sim.excluded);
        // Its last contribution is at most three rounds after its first check
        // could have caught it.
        let last = (1..=12).filter(|&r| sim.contributors(r).contains(&liar)).max().unwrap_or(0);
        eprintln!("liar {liar}: last in a manifest in round {last}");
        assert!(last <= 6, "liar {liar} still contributing in round {last}");
    }
    for (by, ex) in &sim.excluded {
        assert!(ex.iter().all(|j| [3, 7].contains(j)), "node {by} excluded an honest peer: {ex:?}");
    }
    let checks: u64 = sim.checks.values().sum();
    eprintln!("checks run: {checks} (verifiers and referees)");
}

#[test]
fn a_verifier_that_frames_honest_peers_is_excluded_itself() {
    let mut cfg = SimConfig::new(8, 43);
    cfg.min_peers = 8;
    cfg.rounds = 12;
    cfg.verify_rate = 0.8;
    let mut sim = Sim::new(cfg);
    sim.framers.insert(2);
    sim.run_until(300_000);
    assert!(sim.all_finished());
    assert_agreement(&sim);
    assert!(excluded_by_all(&sim, 2), "the framer is excluded: {:?}", sim.excluded);
    for (by, ex) in &sim.excluded {
        assert!(ex.iter().all(|j| *j == 2), "node {by} excluded an honest peer: {ex:?}");
    }
}

#[test]
fn a_joiner_learns_the_exclusions_of_the_rounds_it_skipped() {
    let mut cfg = SimConfig::new(6, 47);
    cfg.min_peers = 6;
    cfg.rounds = 16;
    cfg.verify_rate = 1.0;
    let mut sim = Sim::new(cfg);
    sim.liars.insert(2);
    sim.run_while(300_000, |s| !excluded_by_all(s, 2));
    assert!(excluded_by_all(&sim, 2), "the liar is excluded: {:?}", sim.excluded);
    // A few rounds later (the manifest with the exclusion is behind), a
    // new peer joins: it syncs to a later manifest, which lists the liar.
    let excluded_in = sim.nodes[0].peer.round();
    // The newest round applied anywhere: its manifest, or an earlier one,
    // carried the exclusion.
    let carried_by = *sim.applied.keys().next_back().unwrap();
    sim.run_while(300_000, |s| s.nodes[0].peer.round() < excluded_in + 3);
    let joiner = sim.add_node();
    sim.run_until(600_000);
    assert!(sim.all_finished());
    assert_agreement(&sim);
    let first_applied = *sim.applied.iter().find(|(_, m)| m.contains_key(&joiner)).unwrap().0;
    assert!(first_applied > carried_by, "joined after round {carried_by}: first applied {first_applied}");
    assert!(sim.excluded.get(&joiner).is_some_and(|e| e.contains(&2)), "the joiner knows: {:?}", sim.excluded);
    assert!((first_applied + 1..=16).any(|r| sim.contributors(r).contains(&joiner)), "and contributes");
}

/// Whether node 0 is the first aggregator candidate of round 1.
fn first_in_round_one(sim: &Sim) -> bool {
    let key = |j| rank_key(&sim.run_id(), 1, &sim.peer_id(j));
    (1..sim.nodes.len()).all(|j| key(0) < key(j))
}

#[test]
fn a_peer_that_never_serves_its_contribution_is_left_out_and_the_others_go_on() {
    // Issue 13: node 0 announces contributions it never serves. Nobody
    // can fetch them, so no aggregator includes them (an aggregator waits
    // for a fetch until the deadline, not for ever), and since candidates
    // are the last round's contributors, node 0 never aggregates after
    // round 1.
    for seed in [1, 2, 3] {
        let mut sim = Sim::new(SimConfig::new(4, seed));
        sim.withholders.insert(0);
        assert!(!first_in_round_one(&sim), "seed {seed}: pick a seed where node 0 does not aggregate round 1");
        sim.run_until(240_000);
        assert!(sim.all_finished(), "seed {seed}: not finished at t={}", sim.now);
        assert_agreement(&sim);
        for r in 1..=10 {
            assert_eq!(sim.contributors(r).len(), 3, "seed {seed} round {r}: {:?}", sim.contributors(r));
            assert!(!sim.contributors(r).contains(&0), "seed {seed} round {r}");
        }
    }
}

/// Issue 13: the same peer as round 1's first aggregator candidate puts its
/// own unserved contribution in its manifest. Before, the others gave up on
/// it, went back to waiting and resynced to its next manifest, which named
/// the next unserved contribution: only node 0 reached round 10 (seeds 8
/// and 14 of 1-20, where node 0 aggregates round 1). Now a manifest
/// with an entry nobody serves is given up, its aggregator is no candidate
/// of that round and does not count for its history, and the next candidate
/// publishes the round without it.
#[test]
fn an_aggregator_that_never_serves_its_contribution_does_not_stall_the_others() {
    withholding_aggregator(4, &[8, 14, 23, 24, 26, 27, 30]);
    // With two honest peers, the withholder is a third of the peers with
    // standing: it must not count as "past the round" either.
    let seeds: Vec<u64> = (1..=30).filter(|s| first_in_round_one(&Sim::new(SimConfig::new(3, *s)))).collect();
    eprintln!("3 peers, node 0 first in round 1: seeds {seeds:?}");
    withholding_aggregator(3, &seeds);
}

fn withholding_aggregator(peers: usize, seeds: &[u64]) {
    for &seed in seeds {
        let mut sim = Sim::new(SimConfig::new(peers, seed));
        sim.withholders.insert(0);
        assert!(first_in_round_one(&sim), "seed {seed}");
        sim.run_until(240_000);
        for r in 1..=10 {
            let by = sim.applied.get(&r).cloned().unwrap_or_default();
            let honest: Vec<_> = (1..peers).filter_map(|i| by.get(&i)).collect();
            assert_eq!(honest.len(), peers - 1, "{peers} peers, seed {seed}: round {r} applied by {:?}", by.keys());
            assert!(honest.windows(2).all(|w| w[0] == w[1]), "seed {seed}: honest peers disagree on round {r}");
            let (_, m) = &sim.manifests[&r][&1];
            let withholder = sim.peer_id(0);
            assert!(m.entries.iter().all(|e| e.peer != withholder), "{peers} peers, seed {seed} round {r}");
        }
        for i in 1..peers {
            let stats = sim.nodes[i].peer.stats();
            assert_eq!(stats.switched_history, 0, "seed {seed}: node {i} switched to the withholder's history");
            assert!(stats.unservable_manifests >= 1, "seed {seed}: node {i}");
        }
    }
}

#[test]
fn healed_even_splits_end_the_run_in_agreement() {
    // The schedule of `a_healed_even_split_keeps_the_side_with_the_lowest_peer_id`
    // over 20 seeds. Seed 51 ended the run on two histories: after the
    // heal, one peer of the side that was ahead had standing on the other
    // side (a third of its peers past its round: the round is closed, not
    // ours to publish) but was not a majority (not behind, no resync), so
    // that side gathered its round for ever while the side ahead, two
    // against two (no majority), ran on alone to the run's end. A round
    // closed for longer than its candidates' turns now sends a peer back to
    // sync.
    for seed in 41..=60u64 {
        let mut cfg = SimConfig::new(4, seed);
        cfg.min_peers = 4;
        cfg.rounds = 12;
        let mut sim = Sim::new(cfg);
        sim.run_while(60_000, |s| s.first_applied.keys().next_back().copied().unwrap_or(0) < 2);
        let lowest = (0..4).min_by_key(|&i| sim.peer_id(i)).unwrap();
        sim.partition([lowest, (lowest + 1) % 4].into_iter().collect());
        let heal = sim.now + 8_000;
        sim.run_until(heal);
        sim.heal();
        assert!(sim.first_disagreement_from(3).is_some(), "seed {seed}: the split made two histories");
        sim.run_until(sim.now + 120_000);
        assert!(sim.all_finished(), "seed {seed}: every peer finished");
        let last = sim.applied.get(&12).map_or(0, |a| a.len());
        assert_eq!(last, 4, "seed {seed}: every peer applied the last round");
        assert_eq!(sim.first_disagreement_from(12), None, "seed {seed}: the run ends on one history");
        assert!(sim.divergent.is_empty(), "seed {seed}: a manifest was applied to the wrong state");
    }
}
