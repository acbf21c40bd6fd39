//! Runs one inner loop and prints the hash of the resulting parameters: the
//! subprocess half of the cross-process reproducibility test (run it with
//! different `RAYON_NUM_THREADS` and compare).
//!
//! `inner-loop-hash MODEL INIT_SEED STEPS BATCH BATCH_SEED_HEX`

use trainer::{TrainConfig, Trainer, default_train_config, state_hash};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("inner-loop-hash: {e}\nusage: inner-loop-hash MODEL INIT_SEED STEPS BATCH BATCH_SEED_HEX");
        std::process::exit(2);
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [model, init, steps, batch, seed] = args else { return Err("five arguments expected".into()) };
    let num = |s: &str| s.parse::<u64>().map_err(|e| format!("`{s}`: {e}"));
    let seed = decode_seed(seed)?;
    let t = Trainer::new(model).map_err(|e| e.to_string())?;
    let cfg = TrainConfig {
        inner_steps: num(steps)? as u32,
        batch_size: num(batch)? as usize,
        ..default_train_config(model)
    };
    let out = t.inner_loop(&t.init_params(num(init)?), &cfg, seed, &mut |_, _| {}).map_err(|e| e.to_string())?;
    let h = state_hash(&out.params, &[]);
    println!("{}", h.iter().map(|b| format!("{b:02x}")).collect::<String>());
    Ok(())
}

fn decode_seed(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 {
        return Err("the batch seed is 64 hex characters".into());
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| format!("batch seed: {e}"))?;
    }
    Ok(seed)
}
