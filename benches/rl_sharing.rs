//! Rollout sharing against training alone (SAPO's comparison), at equal
//! compute: n GRPO peers of `tasks-gpt` in one process, each generating the
//! same number of task groups per round and training on the same number of
//! groups, either all its own (I/J = 8/0) or half its own and half taken
//! from the rollouts the others published this round (4/4), re-scored by the
//! taker. Same tasks, seeds and warm-up in both settings.
//!
//! Prints per setting and seed the cumulative reward (sum of the checker's
//! rewards of every completion a peer generated, averaged over peers) and
//! greedy held-out accuracy per family at the end, then the mean over seeds.
//!
//! `--hetero` makes the peers differ, as SAPO's swarm of different models
//! does (ours are otherwise clones of one warm-up): `seed` warms each peer
//! up from its own random parameters and batches; `families` warms peer i
//! up on every family but the i-th (modulo their number), so each peer
//! starts blind on one family that others know. The RL run itself is the
//! same for all (same families, level and checker).
//!
//! cargo bench --bench rl_sharing [-- --peers 4 --rounds 60 --seeds 3 --settings 8/0,4/4
//!     --level 2 --lr 0.0003 --temperature 1 --sft-steps 150 --epochs 2 --group 8
//!     --families arithmetic,base,fraction,logic,calendar,sort,count --hetero none|seed|families]

use std::time::Instant;

use protocol::rollouts::{Pool, RolloutBatch};
use protocol::{PeerId, RlSpec};
use trainer::rl::{Learner, default_spec};

struct Args {
    peers: usize,
    rounds: u64,
    seeds: u64,
    settings: Vec<(u32, u32)>,
    level: u8,
    lr: Option<f64>,
    temperature: Option<f64>,
    sft: Option<u32>,
    epochs: Option<u32>,
    group: Option<u32>,
    families: Option<Vec<String>>,
    hetero: Hetero,
}

#[derive(Clone, Copy, PartialEq)]
enum Hetero {
    /// Every peer starts from the same warm-up.
    None,
    /// Each peer's warm-up has its own seed.
    Seed,
    /// Peer i's warm-up leaves out the i-th family.
    Families,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        peers: 4,
        rounds: 60,
        seeds: 3,
        settings: vec![(8, 0), (4, 4)],
        level: 2,
        lr: None,
        temperature: None,
        sft: None,
        epochs: None,
        group: None,
        families: None,
        hetero: Hetero::None,
    };
    let argv: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--peers" => a.peers = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--seeds" => a.seeds = value()?.parse()?,
            "--level" => a.level = value()?.parse()?,
            "--lr" => a.lr = Some(value()?.parse()?),
            "--temperature" => a.temperature = Some(value()?.parse()?),
            "--sft-steps" => a.sft = Some(value()?.parse()?),
            "--epochs" => a.epochs = Some(value()?.parse()?),
            "--group" => a.group = Some(value()?.parse()?),
            "--families" => a.families = Some(value()?.split(',').map(str::to_string).collect()),
            "--hetero" => {
                a.hetero = match value()?.as_str() {
                    "none" => Hetero::None,
                    "seed" => Hetero::Seed,
                    "families" => Hetero::Families,
                    other => anyhow::bail!("--hetero is none, seed or families, not {other}"),
                }
            }
            "--settings" => {
                a.settings = value()?
                    .split(',')
                    .map(|s| {
                        let (i, j) = s.split_once('/').ok_or_else(|| anyhow::anyhow!("a setting is I/J"))?;
                        Ok((i.parse()?, j.parse()?))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

struct Outcome {
    cumulative: f64,
    accuracy: Vec<(&'static str, f32)>,
    taken: usize,
    /// Mean reward per completion in the first and the last quarter of the rounds.
    trend: (f64, f64),
    secs: f64,
    tokens: usize,
}

fn run(spec: &RlSpec, bases: &[Learner]) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let peers = bases.len();
    let ids: Vec<PeerId> = (0..peers).map(|i| PeerId([i as u8 + 1; 32])).collect();
    let mut learners: Vec<Learner> = bases.iter().enumerate().map(|(i, b)| b.for_peer(1000 + i as u64)).collect();
    let mut pools: Vec<Pool> = (0..peers).map(|_| Pool::new()).collect();
    let rules = trainer::rl::rules(spec)?;
    let checker = trainer::rl::checker(spec);
    let r = &spec.rl;
    let (mut cumulative, mut taken, mut tokens) = (0f64, 0usize, 0usize);
    let quarter = (spec.rounds / 4).max(1);
    let mut trend = (0f64, 0f64);
    for round in 1..=spec.rounds {
        let generated: Vec<_> = learners.iter().map(|l| l.generate(round)).collect::<Result<_, _>>()?;
        for g in &generated {
            let rewards: Vec<f64> = g.rollouts.iter().flat_map(|r| &r.rewards).map(|&x| f64::from(x)).collect();
            let sum = rewards.iter().sum::<f64>();
            cumulative += sum;
            let per = sum / (rewards.len() * peers * quarter as usize) as f64;
            if round <= quarter {
                trend.0 += per;
            } else if round > spec.rounds - quarter {
                trend.1 += per;
            }
            tokens += g.tokens;
        }
        if r.external > 0 {
            for (i, pool) in pools.iter_mut().enumerate() {
                for (k, g) in generated.iter().enumerate() {
                    if k != i {
                        let batch = RolloutBatch { session: 1, round, rollouts: g.rollouts.clone() };
                        pool.offer(ids[k], batch, round, &rules, &|r| checker.rescore(r.task, &r.completions))?;
                    }
                }
            }
        }
        for (i, learner) in learners.iter_mut().enumerate() {
            let mut batch = Learner::choose_local(&generated[i].rollouts, r.local as usize, r.select == "informative");
            let candidates = pools[i].candidates(round, r.max_age, r.select == "informative", round ^ i as u64);
            for c in candidates.into_iter().take(r.external as usize) {
                pools[i].mark_used(c.peer, c.round, c.rollout.task);
                batch.push(c.rollout);
                taken += 1;
            }
            learner.train(&batch)?;
        }
    }
    let mut accuracy: Vec<(&'static str, f32)> = Vec::new();
    for l in &learners {
        for (k, (f, a)) in l.evaluate()?.into_iter().enumerate() {
            match accuracy.get_mut(k) {
                Some(slot) => slot.1 += a / peers as f32,
                None => accuracy.push((f, a / peers as f32)),
            }
        }
    }
    Ok(Outcome {
        cumulative: cumulative / peers as f64,
        accuracy,
        taken: taken / peers,
        trend,
        secs: t0.elapsed().as_secs_f64(),
        tokens,
    })
}

/// Each peer's starting policy (see `--hetero`), put to `spec`'s run.
fn warm_ups(spec: &RlSpec, peers: usize, hetero: Hetero) -> anyhow::Result<Vec<Learner>> {
    if hetero == Hetero::None {
        return Ok(vec![Learner::new(spec, 0, &mut |_, _, _| {})?; peers]);
    }
    let families = &spec.rl.families;
    (0..peers)
        .map(|i| {
            let mut warm = spec.clone();
            match hetero {
                Hetero::Seed => warm.seed = spec.seed * 1_000 + i as u64 + 1,
                _ if families.len() > 1 => {
                    warm.rl.families = families
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| *k != i % families.len())
                        .map(|(_, f)| f.clone())
                        .collect()
                }
                _ => {}
            }
            Ok(Learner::new(&warm, 0, &mut |_, _, _| {})?.with_spec(spec, 0)?)
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut spec = default_spec(trainer::rl::TASKS_GPT).expect("the zoo's RL policy");
    spec.rounds = a.rounds;
    spec.rl.level = a.level;
    spec.rl.lr = a.lr.unwrap_or(spec.rl.lr);
    spec.rl.temperature = a.temperature.unwrap_or(spec.rl.temperature);
    spec.rl.sft_steps = a.sft.unwrap_or(spec.rl.sft_steps);
    spec.rl.epochs = a.epochs.unwrap_or(spec.rl.epochs);
    spec.rl.group = a.group.unwrap_or(spec.rl.group);
    spec.rl.families = a.families.clone().unwrap_or(spec.rl.families);
    println!(
        "{} peers in one process{}, {} rounds, G = {}, {} groups generated per peer and round, level {}, families: {}",
        a.peers,
        match a.hetero {
            Hetero::None => "",
            Hetero::Seed => " (each warmed up from its own seed)",
            Hetero::Families => " (peer i warmed up without the i-th family)",
        },
        a.rounds,
        spec.rl.group,
        spec.rl.generate,
        spec.rl.level,
        spec.rl.families.join(" ")
    );
    let mut table: Vec<(String, Vec<Outcome>)> =
        a.settings.iter().map(|(i, j)| (format!("{i}/{j}"), Vec::new())).collect();
    for seed in 0..a.seeds {
        spec.seed = seed;
        let t0 = Instant::now();
        let bases = warm_ups(&spec, a.peers, a.hetero)?;
        let mut start = Vec::new();
        for b in &bases {
            start.push(b.evaluate()?.iter().map(|(_, a)| a).sum::<f32>() / spec.rl.families.len() as f32);
        }
        let shown: Vec<String> = start.iter().map(|a| format!("{a:.3}")).collect();
        println!(
            "seed {seed}: warm-up {} steps in {:.1} s, held-out accuracy {}",
            spec.rl.sft_steps,
            t0.elapsed().as_secs_f64(),
            if a.hetero == Hetero::None { shown[0].clone() } else { format!("{} (per peer)", shown.join(" ")) }
        );
        for (k, &(i, j)) in a.settings.iter().enumerate() {
            let mut s = spec.clone();
            (s.rl.local, s.rl.external) = (i, j);
            let o = run(&s, &bases)?;
            let mean_acc = o.accuracy.iter().map(|(_, a)| a).sum::<f32>() / o.accuracy.len() as f32;
            println!(
                "  I/J {i}/{j}: cumulative reward {:.1} per peer (mean reward {:.3} in the first quarter of the rounds, {:.3} in the last), held-out accuracy {:.3}, {} external groups taken per peer, {:.0} s, {:.0} tokens/s",
                o.cumulative,
                o.trend.0,
                o.trend.1,
                mean_acc,
                o.taken,
                o.secs,
                o.tokens as f64 / o.secs
            );
            table[k].1.push(o);
        }
    }
    println!();
    let families = &table[0].1[0].accuracy;
    print!("| I/J | cumulative reward per peer (mean over {} seeds) | held-out accuracy |", a.seeds);
    for (f, _) in families {
        print!(" {f} |");
    }
    println!();
    println!("|---|---:|---:|{}", "---:|".repeat(families.len()));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    for (name, outs) in &table {
        let cum: Vec<f64> = outs.iter().map(|o| o.cumulative).collect();
        let sd = (cum.iter().map(|c| (c - mean(&cum)).powi(2)).sum::<f64>() / cum.len() as f64).sqrt();
        let accs: Vec<f64> = outs
            .iter()
            .map(|o| o.accuracy.iter().map(|(_, a)| f64::from(*a)).sum::<f64>() / o.accuracy.len() as f64)
            .collect();
        print!("| {name} | {:.1} ± {:.1} | {:.3} |", mean(&cum), sd, mean(&accs));
        for k in 0..families.len() {
            let per: Vec<f64> = outs.iter().map(|o| f64::from(o.accuracy[k].1)).collect();
            print!(" {:.2} |", mean(&per));
        }
        println!();
    }
    if table.len() >= 2 {
        let base = mean(&table[0].1.iter().map(|o| o.cumulative).collect::<Vec<_>>());
        for (name, outs) in &table[1..] {
            let c = mean(&outs.iter().map(|o| o.cumulative).collect::<Vec<_>>());
            println!("{name} against {}: {:+.1} % cumulative reward", table[0].0, 100.0 * (c - base) / base);
        }
    }
    Ok(())
}
