//! In-process comparison of DiLoCo with N peers against one peer training
//! alone for the same number of inner steps (same code path as the node:
//! inner loop, pseudo-gradient, weighted average, Nesterov outer step).
//!
//! cargo run --release --example diloco_vs_alone -- [model] [peers] [rounds] [inner_lr]

use anyhow::Result;
use trainer::{OuterOptimizer, Trainer};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map(String::as_str).unwrap_or("digits-mlp");
    let peers: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let rounds: u32 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let t = Trainer::new(model)?;
    let mut cfg = trainer::default_train_config(model);
    if let Some(lr) = args.get(4) {
        cfg.lr = lr.parse()?;
    }
    let salt: u8 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut params = t.init_params(0);
    let env = |k: &str, d: f32| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    if let Ok(h) = std::env::var("H") {
        cfg.inner_steps = h.parse()?;
    }
    let mut outer = OuterOptimizer::new(env("OUTER_LR", 0.7), env("OUTER_MOMENTUM", 0.9), true, params.len());
    for r in 1..=rounds {
        let mut grads = Vec::new();
        for p in 0..peers {
            let mut seed = [0u8; 32];
            seed[0] = p as u8;
            seed[5] = salt;
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
    alone_cfg.inner_steps *= rounds;
    let alone = t.inner_loop(&t.init_params(0), &alone_cfg, [7u8.wrapping_add(salt); 32], &mut |_, _| {})?;
    let e = t.evaluate(&alone.params)?;
    println!("alone {} steps: loss {:.4} acc {:?}", alone_cfg.inner_steps, e.loss, e.accuracy);
    Ok(())
}
