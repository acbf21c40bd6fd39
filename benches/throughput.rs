//! Training throughput of the real workloads on this machine: load time, seconds per inner
//! step, examples (or tokens) per second, and held-out evaluation time.
//!
//! cargo bench --bench throughput [-- MODEL...]   (after `swarm pull` of their packages)

use std::time::Instant;

use trainer::{TrainConfig, Trainer, default_train_config};

fn main() -> anyhow::Result<()> {
    let mut models: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if models.is_empty() {
        models = vec!["fashion-cnn".into(), "brown-gpt".into()];
    }
    println!("| model | params | load s | step s | batch | examples/s | tokens/s | eval s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for model in models {
        let t0 = Instant::now();
        let t = Trainer::new(&model)?;
        let load = t0.elapsed().as_secs_f64();
        let params = t.init_params(1);
        let base = default_train_config(&model);
        let steps = 4;
        let cfg = TrainConfig { inner_steps: steps, ..base.clone() };
        // One step first so allocation warm-up is not counted.
        t.inner_loop(&params, &TrainConfig { inner_steps: 1, ..base.clone() }, [1; 32], &mut |_, _| {})?;
        let t0 = Instant::now();
        t.inner_loop(&params, &cfg, [2; 32], &mut |_, _| {})?;
        let step = t0.elapsed().as_secs_f64() / f64::from(steps);
        let t0 = Instant::now();
        t.evaluate(&params)?;
        let eval = t0.elapsed().as_secs_f64();
        let examples = base.batch_size as f64 / step;
        let tokens = trainer::context_len(&model).map_or("-".into(), |c| format!("{:.0}", examples * c as f64));
        println!(
            "| {model} | {} | {load:.1} | {step:.3} | {} | {examples:.1} | {tokens} | {eval:.1} |",
            t.num_params(),
            base.batch_size
        );
    }
    Ok(())
}
