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

/// The digits run shared by the in-process and cross-process checks.
fn digits_run() -> Vec<f32> {
    let t = Trainer::new(DIGITS_MLP).unwrap();
    let cfg = TrainConfig { inner_steps: 20, ..default_train_config(DIGITS_MLP) };
    t.inner_loop(&t.init_params(3), &cfg, seed(1, 2), &mut |_, _| {}).unwrap().params
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
    assert_eq!(bits(&a.params), bits(&digits_run()));
}

/// A short lipsum-gpt run shared by the in-process and cross-process checks.
fn gpt_run() -> Vec<f32> {
    let t = Trainer::new(LIPSUM_GPT).unwrap();
    let cfg = TrainConfig { inner_steps: 3, batch_size: 4, ..default_train_config(LIPSUM_GPT) };
    t.inner_loop(&t.init_params(4), &cfg, seed(2, 7), &mut |_, _| {}).unwrap().params
}

/// Hash of both reference runs.
fn runs_hash() -> String {
    hex(state_hash(&digits_run(), &gpt_run()))
}

/// Child half of the cross-process check: prints the hash of the reference runs.
#[test]
fn child_print_runs_hash() {
    if std::env::var_os("TRAINER_CHILD").is_some() {
        println!("HASH={}", runs_hash());
    }
}

#[test]
fn gpt_inner_loop_is_bit_reproducible_and_seed_dependent() {
    let a = gpt_run();
    assert_eq!(bits(&a), bits(&gpt_run()));
    let t = Trainer::new(LIPSUM_GPT).unwrap();
    let cfg = TrainConfig { inner_steps: 3, batch_size: 4, ..default_train_config(LIPSUM_GPT) };
    let c = t.inner_loop(&t.init_params(4), &cfg, seed(2, 8), &mut |_, _| {}).unwrap();
    assert_ne!(bits(&a), bits(&c.params));
}

#[test]
fn inner_loop_is_reproducible_across_processes() {
    let exe = std::env::current_exe().unwrap();
    let mut hashes = Vec::new();
    for threads in ["1", "2"] {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "child_print_runs_hash", "--nocapture", "--test-threads=1"])
            .env("TRAINER_CHILD", "1")
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("HASH=").map(|(_, h)| h.trim()))
            .unwrap_or_else(|| panic!("child printed no hash: {stdout}"));
        hashes.push(line.to_string());
    }
    let here = runs_hash();
    assert_eq!(hashes, vec![here.clone(), here]);
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
