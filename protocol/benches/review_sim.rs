//! Peer review in the seeded simulator: how fast liars are excluded and
//! what checking costs, against the verification rate.
//!
//! cargo bench -p protocol --bench review_sim -- [PEERS] [LIARS] [ROUNDS] [SEEDS]
//!
//! Defaults: 100 peers, 10 of them liars (their every contribution fails a
//! check), 12 rounds, 3 seeds per rate. For each rate it prints the round of
//! the last manifest that still held a liar (the worst of the seeds), how
//! many liars every honest peer excluded, honest peers excluded (must be 0),
//! and checks run per peer per round (verifier and referee work together).
//! A liar that lies in one segment of S only is caught with the
//! probability rate x 2/S per round instead (the drawn and the last segment
//! are replayed); the simulator's liars lie in every segment.

use protocol::sim::{Sim, SimConfig};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (peers, liars, rounds, seeds) = (arg(0, 100), arg(1, 10), arg(2, 12) as u64, arg(3, 3) as u64);
    println!("{peers} peers, {liars} liars, {rounds} rounds, {seeds} seeds per rate\n");
    println!(
        "| rate | last round with a liar (worst seed) | liars excluded by all | honest excluded | checks / peer / round |"
    );
    println!("|---|---|---|---|---|");
    for rate in [0.1, 0.2, 0.5, 0.8, 1.0] {
        let (mut worst, mut caught, mut wrongly, mut checks) = (0, 0, 0, 0.0);
        for seed in 0..seeds {
            let mut cfg = SimConfig::new(peers, 1_000 + seed);
            cfg.min_peers = peers as u32;
            cfg.rounds = rounds;
            cfg.verify_rate = rate;
            let mut sim = Sim::new(cfg);
            // Spread the liars over the index range.
            let liar_set: Vec<usize> = (0..liars).map(|k| k * peers / liars.max(1)).collect();
            sim.liars.extend(liar_set.iter().copied());
            sim.run_until(rounds * 20_000);
            let last =
                (1..=rounds).filter(|&r| liar_set.iter().any(|l| sim.contributors(r).contains(l))).max().unwrap_or(0);
            worst = worst.max(last);
            let honest: Vec<usize> = (0..peers).filter(|i| !liar_set.contains(i)).collect();
            caught += liar_set
                .iter()
                .filter(|l| honest.iter().all(|h| sim.excluded.get(h).is_some_and(|e| e.contains(l))))
                .count();
            wrongly += sim.excluded.values().flatten().filter(|j| !liar_set.contains(j)).count();
            checks += sim.checks.values().sum::<u64>() as f64 / peers as f64 / rounds as f64;
        }
        let caught = caught as f64 / seeds as f64;
        let checks = checks / seeds as f64;
        println!("| {rate} | {worst} | {caught:.1} of {liars} | {wrongly} | {checks:.2} |");
    }
}
