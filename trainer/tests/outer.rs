//! Outer optimizer, pseudo-gradients, averaging and the state hash.

use trainer::{OuterOptimizer, TrainerError, pseudo_gradient, state_hash, try_pseudo_gradient, weighted_average};

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn nesterov_two_steps_by_hand() {
    let mut opt = OuterOptimizer::new(0.5, 0.9, true, 2);
    let mut p = vec![1.0, -2.0];
    // v = [0.5, 1]; update = g + 0.9 v = [0.95, 1.9]; p -= 0.5 update
    opt.step(&mut p, &[0.5, 1.0]);
    close(&opt.velocity, &[0.5, 1.0]);
    close(&p, &[0.525, -2.95]);
    // v = 0.9 [0.5, 1] + [-0.25, 0.5] = [0.2, 1.4]; update = g + 0.9 v = [-0.07, 1.76]
    opt.step(&mut p, &[-0.25, 0.5]);
    close(&opt.velocity, &[0.2, 1.4]);
    close(&p, &[0.56, -3.83]);
}

#[test]
fn plain_momentum_two_steps_by_hand() {
    let mut opt = OuterOptimizer::new(0.5, 0.9, false, 2);
    let mut p = vec![1.0, -2.0];
    opt.step(&mut p, &[0.5, 1.0]);
    close(&p, &[0.75, -2.5]);
    opt.step(&mut p, &[-0.25, 0.5]);
    close(&p, &[0.65, -3.2]);
}

#[test]
fn lr_one_no_momentum_lands_on_local() {
    let global = vec![0.3, -1.25, 8.0];
    let local = vec![0.5, -1.0, 7.5];
    let g = pseudo_gradient(&global, &local);
    close(&g, &[-0.2, -0.25, 0.5]);
    let mut p = global.clone();
    OuterOptimizer::new(1.0, 0.0, true, 3).step(&mut p, &g);
    close(&p, &local);
}

#[test]
fn step_length_mismatch() {
    let mut opt = OuterOptimizer::new(0.7, 0.9, true, 3);
    let mut p = vec![0.0; 3];
    let before = opt.clone();
    assert!(matches!(opt.try_step(&mut p, &[1.0, 2.0]), Err(TrainerError::LengthMismatch { .. })));
    assert!(matches!(opt.try_step(&mut [0.0; 2], &[1.0, 2.0, 3.0]), Err(TrainerError::LengthMismatch { .. })));
    assert_eq!(opt, before);
    assert_eq!(p, vec![0.0; 3]);
    assert!(matches!(try_pseudo_gradient(&[1.0], &[1.0, 2.0]), Err(TrainerError::LengthMismatch { .. })));
}

#[test]
fn weighted_average_numerics() {
    let a = [1.0f32, 2.0, -4.0];
    let b = [3.0f32, 4.0, 0.0];
    let avg = weighted_average(&[(&a, 1), (&b, 3)]).unwrap();
    close(&avg, &[2.5, 3.5, -1.0]);
    // A zero weight contributes nothing.
    let avg = weighted_average(&[(&a, 0), (&b, 5)]).unwrap();
    assert_eq!(avg, b.to_vec());
    // Single input: itself, exactly.
    let odd = [0.1f32, 1e-30, -7.777];
    assert_eq!(weighted_average(&[(&odd, 17)]).unwrap(), odd.to_vec());
    // Huge weights do not overflow.
    let avg = weighted_average(&[(&a, u64::MAX), (&b, u64::MAX)]).unwrap();
    close(&avg, &[2.0, 3.0, -2.0]);
}

#[test]
fn weighted_average_is_order_deterministic() {
    // Per element one +1e30, one -1e30 and small values, so that the f64
    // sums depend on the order (1e30 + x - 1e30 + y is y; y - 1e30 + x +
    // 1e30 is 0).
    let xs: Vec<Vec<f32>> = (0..5usize)
        .map(|i| {
            (0..100usize)
                .map(|j| {
                    if i == j % 5 {
                        1e30
                    } else if i == (j + 2) % 5 {
                        -1e30
                    } else {
                        ((i * 100 + j) as f32).sin() * 1e3
                    }
                })
                .collect()
        })
        .collect();
    let input: Vec<(&[f32], u64)> = xs.iter().map(|x| (x.as_slice(), 1)).collect();
    let a = weighted_average(&input).unwrap();
    // The documented rule, written out: per element, sum w_i * g_i in f64 in
    // the given order, divide by the total weight, round to f32 once.
    let total: f64 = input.iter().map(|(_, w)| *w as f64).sum();
    let by_hand: Vec<f32> = (0..100)
        .map(|j| {
            let mut acc = 0f64;
            for (g, w) in &input {
                acc += f64::from(g[j]) * *w as f64;
            }
            (acc / total) as f32
        })
        .collect();
    assert_eq!(bits(&a), bits(&by_hand));
    // Another order is another result: the order is part of the rule,
    // which is why manifests fix it.
    let reversed: Vec<(&[f32], u64)> = input.iter().rev().copied().collect();
    assert_ne!(bits(&weighted_average(&reversed).unwrap()), bits(&a));
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn weighted_average_errors() {
    let a = [1.0f32, 2.0];
    let b = [1.0f32];
    assert!(matches!(weighted_average(&[]), Err(TrainerError::NoGradients)));
    assert!(matches!(
        weighted_average(&[(&a, 1), (&b, 1)]),
        Err(TrainerError::LengthMismatch { index: 1, expected: 2, got: 1 })
    ));
    assert!(matches!(weighted_average(&[(&a, 0), (&a, 0)]), Err(TrainerError::ZeroWeight)));
}

#[test]
fn state_hash_covers_params_and_velocity() {
    let p = [1.0f32, 2.0];
    let v = [0.0f32, 0.5];
    let h = state_hash(&p, &v);
    // Definition: BLAKE3 of the little-endian bytes, params then velocity.
    let mut bytes = Vec::new();
    for x in p.iter().chain(&v) {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    assert_eq!(h, *blake3::hash(&bytes).as_bytes());
    assert_ne!(h, state_hash(&p, &[0.0, 0.25]));
    assert_ne!(h, state_hash(&[1.0, -2.0], &v));
    assert_ne!(state_hash(&[0.0], &[]), state_hash(&[-0.0], &[]));
}
