//! Training throughput of the workloads on this machine: load time, seconds per inner step,
//! examples (tokens) per second, held-out evaluation time, and whether two runs of the same
//! steps give bit-identical parameters, on the CPU (flex) and on wgpu, and the first bytes of
//! the parameters' hash after those steps (compare it between machines: the same hash on two
//! machines means bit-identical training there).
//!
//! cargo bench --bench throughput [-- [--device cpu|wgpu|both] [--steps N] [--batch N] [MODEL...]]
//! (after `swarm pull` of the models' packages)

use std::time::Instant;

use trainer::{Backend, TrainConfig, Trainer, default_train_config};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut devices = vec![Backend::Cpu, Backend::Wgpu];
    let mut models = Vec::new();
    let mut steps = 4u32;
    let mut batch = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--device" {
            devices = match it.next().map(String::as_str) {
                Some("both") => vec![Backend::Cpu, Backend::Wgpu],
                Some(d) => vec![d.parse()?],
                None => anyhow::bail!("--device needs cpu, wgpu or both"),
            };
        } else if a == "--steps" {
            steps = it.next().ok_or_else(|| anyhow::anyhow!("--steps needs a number"))?.parse()?;
        } else if a == "--batch" {
            batch = Some(it.next().ok_or_else(|| anyhow::anyhow!("--batch needs a number"))?.parse()?);
        } else if !a.starts_with('-') {
            models.push(a.clone());
        }
    }
    if models.is_empty() {
        models = vec!["fashion-cnn".into(), "brown-gpt".into()];
    }
    println!(
        "| model | device | params | load s | step s | batch | examples/s | tokens/s | eval s | 2 runs bit-identical | params hash | max diff vs cpu |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|");
    for model in &models {
        let mut cpu_params: Option<Vec<f32>> = None;
        for &device in &devices {
            let t0 = Instant::now();
            let t = Trainer::new(model)?.with_backend(device)?;
            let load = t0.elapsed().as_secs_f64();
            let params = t.init_params(1);
            let mut base = default_train_config(model);
            base.batch_size = batch.unwrap_or(base.batch_size);
            let cfg = TrainConfig { inner_steps: steps, ..base.clone() };
            // One step first, so that start-up (kernel compilation on wgpu) is not counted.
            t.inner_loop(&params, &TrainConfig { inner_steps: 1, ..base.clone() }, [1; 32], &mut |_, _| {})?;
            let t0 = Instant::now();
            let first = t.inner_loop(&params, &cfg, [2; 32], &mut |_, _| {})?;
            let step = t0.elapsed().as_secs_f64() / f64::from(steps);
            let again = t.inner_loop(&params, &cfg, [2; 32], &mut |_, _| {})?;
            let identical = first.params.iter().zip(&again.params).all(|(a, b)| a.to_bits() == b.to_bits());
            let t0 = Instant::now();
            t.evaluate(&params)?;
            let eval = t0.elapsed().as_secs_f64();
            let hash: String =
                trainer::state_hash(&first.params, &[])[..6].iter().map(|b| format!("{b:02x}")).collect();
            let diff = match (&cpu_params, device) {
                (Some(cpu), Backend::Wgpu) => {
                    let d = cpu.iter().zip(&first.params).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    format!("{d:.1e}")
                }
                _ => "-".into(),
            };
            if device == Backend::Cpu {
                cpu_params = Some(first.params.clone());
            }
            let examples = base.batch_size as f64 / step;
            let tokens = trainer::context_len(model).map_or("-".into(), |c| format!("{:.0}", examples * c as f64));
            println!(
                "| {model} | {device} | {} | {load:.1} | {step:.3} | {} | {examples:.1} | {tokens} | {eval:.1} | {} | {hash} | {diff} |",
                t.num_params(),
                base.batch_size,
                if identical { "yes" } else { "no" }
            );
        }
    }
    Ok(())
}
