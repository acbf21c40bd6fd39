//! In-process comparison of DiLoCo with N peers against one peer training
//! alone for the same number of inner steps (same code path as the node:
//! inner loop, pseudo-gradient, weighted average, Nesterov outer step).
//!
//! `cargo run --release --example diloco_vs_alone -- --help` lists the
//! options; `-- digits-mlp --peers 3 --rounds 5` is the README's run.

use anyhow::Result;
use clap::Parser;
use trainer::{OuterOptimizer, Trainer};

/// DiLoCo with in-process peers against one peer alone, at equal inner steps.
#[derive(Parser, Debug)]
struct Args {
    /// Model (see `swarm models`).
    #[arg(default_value = "digits-mlp")]
    model: String,
    /// Peers in the DiLoCo run.
    #[arg(long, default_value_t = 3)]
    peers: usize,
    /// Outer rounds.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Inner learning rate [default: the model's].
    #[arg(long)]
    inner_lr: Option<f64>,
    /// Inner steps per round, H [default: the model's].
    #[arg(long)]
    inner_steps: Option<u32>,
    /// Outer learning rate.
    #[arg(long, default_value_t = 0.7)]
    outer_lr: f32,
    /// Outer (Nesterov) momentum.
    #[arg(long, default_value_t = 0.9)]
    outer_momentum: f32,
    /// Draws other batches (same model, same settings).
    #[arg(long, default_value_t = 0)]
    salt: u8,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t = Trainer::new(&args.model)?;
    let mut cfg = trainer::default_train_config(&args.model);
    if let Some(lr) = args.inner_lr {
        cfg.lr = lr;
    }
    if let Some(h) = args.inner_steps {
        cfg.inner_steps = h;
    }
    let mut params = t.init_params(0);
    let mut outer = OuterOptimizer::new(args.outer_lr, args.outer_momentum, true, params.len());
    for r in 1..=args.rounds {
        let mut grads = Vec::new();
        for p in 0..args.peers {
            let mut seed = [0u8; 32];
            seed[0] = p as u8;
            seed[5] = args.salt;
            seed[1..5].copy_from_slice(&r.to_le_bytes());
            let out = t.inner_loop(&params, &cfg, seed, &mut |_, _| {})?;
            grads.push((trainer::pseudo_gradient(&params, &out.params), out.samples));
        }
        let refs: Vec<(&[f32], u64)> = grads.iter().map(|(g, s)| (g.as_slice(), *s)).collect();
        let avg = trainer::weighted_average(&refs)?;
        outer.step(&mut params, &avg);
        let e = t.evaluate(&params)?;
        println!("diloco round {r}: loss {:.4} acc {:?}", e.loss, e.accuracy);
    }
    let mut alone_cfg = cfg.clone();
    alone_cfg.inner_steps *= args.rounds;
    let alone = t.inner_loop(&t.init_params(0), &alone_cfg, [7u8.wrapping_add(args.salt); 32], &mut |_, _| {})?;
    let e = t.evaluate(&alone.params)?;
    println!("alone {} steps: loss {:.4} acc {:?}", alone_cfg.inner_steps, e.loss, e.accuracy);
    Ok(())
}
