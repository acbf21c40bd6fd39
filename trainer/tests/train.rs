//! Inner loops: reproducibility and learning.

use std::time::Instant;

use trainer::{DIGITS_MLP, LIPSUM_GPT, TrainConfig, Trainer, default_train_config, state_hash};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn hex(h: [u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn seed(round: u8, peer: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[0] = round;
    s[1] = peer;
    s[31] = 0xA5;
    s
}

#[test]
fn inner_loop_is_bit_reproducible_and_seed_dependent() {
    let t = Trainer::new(DIGITS_MLP).unwrap();
    let cfg = TrainConfig { inner_steps: 20, ..default_train_config(DIGITS_MLP) };
    let g = t.init_params(3);
    let mut steps = Vec::new();
    let a = t.inner_loop(&g, &cfg, seed(1, 2), &mut |s, l| steps.push((s, l))).unwrap();
    let b = t.inner_loop(&g, &cfg, seed(1, 2), &mut |_, _| {}).unwrap();
    let c = t.inner_loop(&g, &cfg, seed(1, 3), &mut |_, _| {}).unwrap();
    assert_eq!(bits(&a.params), bits(&b.params));
    assert_eq!(a.mean_loss.to_bits(), b.mean_loss.to_bits());
    assert_ne!(bits(&a.params), bits(&c.params));
    assert_ne!(bits(&a.params), bits(&g));
    assert_eq!(a.samples, 20 * 32);
    assert_eq!(steps.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    let mean = steps.iter().map(|(_, l)| f64::from(*l)).sum::<f64>() / 20.0;
    assert!((mean as f32 - a.mean_loss).abs() < 1e-5);
}

#[test]
fn gpt_inner_loop_is_bit_reproducible_and_seed_dependent() {
    let t = Trainer::new(LIPSUM_GPT).unwrap();
    let cfg = TrainConfig { inner_steps: 3, batch_size: 4, ..default_train_config(LIPSUM_GPT) };
    let run = |s| t.inner_loop(&t.init_params(4), &cfg, s, &mut |_, _| {}).unwrap().params;
    let a = run(seed(2, 7));
    assert_eq!(bits(&a), bits(&run(seed(2, 7))));
    assert_ne!(bits(&a), bits(&run(seed(2, 8))));
}

/// Runs big enough that burn's flex backend takes its parallel paths:
/// matmuls of at least 192^3 multiply-adds (`gemm` with rayon), batched
/// matmuls of 128^3 in all, element-wise ops over 256 Ki values. digits-mlp
/// at batch 4096: 4096 x 64 x 64 matmuls (16.8 M) and 262 144-value
/// activations; lipsum-gpt at batch 16: 1024 x 64 x 256 MLP matmuls, 64
/// attention heads' matmuls (batched), 262 144-value MLP activations.
const PARALLEL_RUNS: [(&str, u64, u32, usize); 2] = [(DIGITS_MLP, 3, 3, 4096), (LIPSUM_GPT, 4, 3, 16)];

#[test]
fn inner_loop_is_reproducible_across_processes_and_thread_counts() {
    let exe = env!("CARGO_BIN_EXE_inner-loop-hash");
    for (model, init, steps, batch) in PARALLEL_RUNS {
        let s = seed(5, 1);
        let t = Trainer::new(model).unwrap();
        let cfg = TrainConfig { inner_steps: steps, batch_size: batch, ..default_train_config(model) };
        let here = hex(state_hash(&t.inner_loop(&t.init_params(init), &cfg, s, &mut |_, _| {}).unwrap().params, &[]));
        for threads in ["1", "2", "3"] {
            let out = std::process::Command::new(exe)
                .args([model, &init.to_string(), &steps.to_string(), &batch.to_string(), &hex(s)])
                .env("RAYON_NUM_THREADS", threads)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(theirs, here, "{model}: {threads} threads in another process");
        }
    }
}

#[test]
fn digits_mlp_reaches_90_percent() {
    let t = Trainer::new(DIGITS_MLP).unwrap();
    let cfg = default_train_config(DIGITS_MLP);
    let mut global = t.init_params(11);
    let before = t.evaluate(&global).unwrap();
    let start = Instant::now();
    for round in 0..20u8 {
        let r = t.inner_loop(&global, &cfg, seed(round, 0), &mut |_, _| {}).unwrap();
        global = r.params;
    }
    let elapsed = start.elapsed();
    let after = t.evaluate(&global).unwrap();
    let acc = after.accuracy.unwrap();
    eprintln!(
        "digits-mlp: 20x50 steps in {elapsed:?} ({:?}/inner loop); test loss {} -> {}, accuracy {:?} -> {acc}",
        elapsed / 20,
        before.loss,
        after.loss,
        before.accuracy
    );
    assert!(after.loss < before.loss);
    assert!(acc >= 0.9, "accuracy {acc}");
}

#[test]
fn lipsum_gpt_short_loop_lowers_loss() {
    let t = Trainer::new(LIPSUM_GPT).unwrap();
    let init = t.init_params(5);
    let e0 = t.evaluate(&init).unwrap();
    assert!(e0.loss.is_finite());
    let cfg = TrainConfig { inner_steps: 5, ..default_train_config(LIPSUM_GPT) };
    let mut losses = Vec::new();
    let start = Instant::now();
    let r = t.inner_loop(&init, &cfg, seed(0, 9), &mut |_, l| losses.push(l)).unwrap();
    let elapsed = start.elapsed();
    let e1 = t.evaluate(&r.params).unwrap();
    eprintln!(
        "lipsum-gpt: 5 steps in {elapsed:?}; train losses {losses:?}; held-out {} -> {} (acc {:?} -> {:?})",
        e0.loss, e1.loss, e0.accuracy, e1.accuracy
    );
    assert!(e1.loss.is_finite() && e1.loss < e0.loss);
    assert!(losses[4] < losses[0]);
    let acc = e1.accuracy.unwrap();
    assert!((0.0..=1.0).contains(&acc));
}
