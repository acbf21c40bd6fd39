//! Checkpoint round trips and damage detection.

use std::fs;

use trainer::checkpoint::{self, Checkpoint};
use trainer::{DIGITS_MLP, Trainer, TrainerError};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn small() -> (Vec<(String, Vec<usize>)>, Checkpoint) {
    let layout = vec![("a.weight".to_string(), vec![2, 3]), ("a.bias".to_string(), vec![3])];
    let params = vec![
        1.5,
        -0.0,
        f32::from_bits(0x7fc0_1234), // a NaN with a payload
        f32::INFINITY,
        f32::MIN_POSITIVE / 8.0, // subnormal
        -3.25,
        0.0,
        1e-7,
        42.0,
    ];
    let velocity = (0..9).map(|i| i as f32 * 0.125 - 0.5).collect();
    let ck = Checkpoint { round: 1234, params, velocity, model: "tiny".to_string() };
    (layout, ck)
}

#[test]
fn missing_checkpoint_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(checkpoint::load(dir.path()).unwrap().is_none());
    assert!(checkpoint::load(&dir.path().join("not-there")).unwrap().is_none());
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, ck) = small();
    checkpoint::save(dir.path(), &layout, &ck).unwrap();
    let back = checkpoint::load(dir.path()).unwrap().unwrap();
    assert_eq!(back.round, ck.round);
    assert_eq!(back.model, ck.model);
    assert_eq!(bits(&back.params), bits(&ck.params));
    assert_eq!(bits(&back.velocity), bits(&ck.velocity));
    // Only the checkpoint is left in the directory (no temp files).
    let names: Vec<_> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec![checkpoint::FILE_NAME.to_string()]);
}

#[test]
fn real_model_round_trip_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("ck");
    let t = Trainer::new(DIGITS_MLP).unwrap();
    let layout = t.param_layout();
    for round in 0..3u64 {
        let ck = Checkpoint {
            round,
            params: t.init_params(round),
            velocity: vec![round as f32; t.num_params()],
            model: DIGITS_MLP.to_string(),
        };
        checkpoint::save(&sub, &layout, &ck).unwrap();
        let back = checkpoint::load(&sub).unwrap().unwrap();
        assert_eq!(back.round, round);
        assert_eq!(bits(&back.params), bits(&ck.params));
        assert_eq!(bits(&back.velocity), bits(&ck.velocity));
    }
    // The file's tensors are named per layout.
    let bytes = fs::read(checkpoint::path_in(&sub)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight", "outer.velocity"]);
}

#[test]
fn save_rejects_bad_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut layout, ck) = small();
    layout[1].1 = vec![4];
    assert!(matches!(checkpoint::save(dir.path(), &layout, &ck), Err(TrainerError::ParamLength { .. })));
    let (mut layout, ck) = small();
    layout[1].0 = "outer.velocity".to_string();
    assert!(checkpoint::save(dir.path(), &layout, &ck).is_err());
    assert!(checkpoint::load(dir.path()).unwrap().is_none());
}

fn expect_corrupt(dir: &std::path::Path, what: &str) {
    match checkpoint::load(dir) {
        Err(TrainerError::CorruptCheckpoint { .. }) => {}
        Ok(Some(ck)) => panic!("{what}: loaded a damaged file as {ck:?}"),
        other => panic!("{what}: expected CorruptCheckpoint, got {other:?}"),
    }
}

#[test]
fn every_truncation_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, ck) = small();
    checkpoint::save(dir.path(), &layout, &ck).unwrap();
    let path = checkpoint::path_in(dir.path());
    let good = fs::read(&path).unwrap();
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).unwrap();
        expect_corrupt(dir.path(), &format!("truncated to {len}"));
    }
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    expect_corrupt(dir.path(), "one byte appended");
}

#[test]
fn every_single_bit_flip_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, ck) = small();
    checkpoint::save(dir.path(), &layout, &ck).unwrap();
    let path = checkpoint::path_in(dir.path());
    let good = fs::read(&path).unwrap();
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            fs::write(&path, &bad).unwrap();
            expect_corrupt(dir.path(), &format!("byte {i} bit {bit}"));
        }
    }
}
