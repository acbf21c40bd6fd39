//! Aggregation rules for a round's pseudo-gradients: the sample-weighted
//! mean, and two robust rules that bound what one contribution can do
//! before peer review catches it. All are deterministic for a given order
//! (f64 accumulation, fixed iteration counts), so every peer that applies
//! the same manifest gets the same bits.

use crate::error::TrainerError;
use crate::outer::{check_gradients, weighted_average};

/// How a round's pseudo-gradients are combined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// Sample-weighted mean: one contribution can move the result anywhere.
    Mean,
    /// Per coordinate, the `trim` largest and smallest values are dropped
    /// and the rest averaged by weight (`trim` = floor(fraction x n)).
    TrimmedMean {
        /// Fraction dropped at each end, in [0, 0.5).
        fraction: f64,
    },
    /// Centered clipping (Karimireddy, He and Jaggi, 2021), started from the
    /// coordinate-wise median: `iterations` times, `v += sum_i w_i
    /// clip(g_i - v, tau) / sum_i w_i` with `tau` = `factor` x the median of
    /// `|g_i - v|` (L2). One contribution moves the result by at most
    /// `tau / n` per iteration, however large it is.
    CenteredClip {
        /// tau in multiples of the median distance to the center.
        factor: f64,
        /// Clipping iterations.
        iterations: u32,
    },
}

/// Combines `grads` (with their sample weights) by `rule`. Errors as
/// [`weighted_average`]: no inputs, differing lengths, zero total weight.
pub fn aggregate(rule: Rule, grads: &[(&[f32], u64)]) -> Result<Vec<f32>, TrainerError> {
    // The robust rules check the inputs without computing a mean they do
    // not use (for smollm2-135m that was 1.6 GB at the apply's peak).
    check_gradients(grads)?;
    match rule {
        Rule::Mean => weighted_average(grads),
        Rule::TrimmedMean { fraction } => Ok(trimmed_mean(grads, fraction)),
        Rule::CenteredClip { factor, iterations } => Ok(centered_clip(grads, factor, iterations)),
    }
}

fn trimmed_mean(grads: &[(&[f32], u64)], fraction: f64) -> Vec<f32> {
    let n = grads.len();
    let trim = ((fraction.clamp(0.0, 0.49) * n as f64).floor() as usize).min((n - 1) / 2);
    let d = grads[0].0.len();
    let mut column: Vec<(f32, u64, usize)> = Vec::with_capacity(n);
    (0..d)
        .map(|j| {
            column.clear();
            column.extend(grads.iter().enumerate().map(|(i, (g, w))| (g[j], *w, i)));
            // Ties by input index: a total order, so every peer trims the same.
            column.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
            let kept = &column[trim..n - trim];
            let total: f64 = kept.iter().map(|(_, w, _)| *w as f64).sum();
            let sum: f64 = kept.iter().map(|(x, w, _)| f64::from(*x) * *w as f64).sum();
            if total > 0.0 { (sum / total) as f32 } else { 0.0 }
        })
        .collect()
}

fn coordinate_median(grads: &[(&[f32], u64)]) -> Vec<f64> {
    let d = grads[0].0.len();
    let mut column: Vec<f32> = Vec::with_capacity(grads.len());
    (0..d)
        .map(|j| {
            column.clear();
            column.extend(grads.iter().map(|(g, _)| g[j]));
            column.sort_by(f32::total_cmp);
            let n = column.len();
            if n % 2 == 1 {
                f64::from(column[n / 2])
            } else {
                (f64::from(column[n / 2 - 1]) + f64::from(column[n / 2])) / 2.0
            }
        })
        .collect()
}

fn distance(g: &[f32], v: &[f64]) -> f64 {
    g.iter().zip(v).map(|(x, c)| (f64::from(*x) - c).powi(2)).sum::<f64>().sqrt()
}

fn centered_clip(grads: &[(&[f32], u64)], factor: f64, iterations: u32) -> Vec<f32> {
    let mut v = coordinate_median(grads);
    let total: f64 = grads.iter().map(|(_, w)| *w as f64).sum();
    for _ in 0..iterations {
        let dist: Vec<f64> = grads.iter().map(|(g, _)| distance(g, &v)).collect();
        let mut sorted = dist.clone();
        sorted.sort_by(f64::total_cmp);
        let tau = factor * sorted[sorted.len() / 2];
        let ks: Vec<f64> = grads
            .iter()
            .zip(&dist)
            .map(|((_, w), d)| {
                let scale = if *d > tau && *d > 0.0 { tau / d } else { 1.0 };
                scale * *w as f64 / total
            })
            .collect();
        // Per coordinate, the contributions' terms summed in input order
        // from 0, then added to the center: the same operations in the same
        // order as a separate step vector, without its 8 bytes per parameter.
        for (j, c) in v.iter_mut().enumerate() {
            let mut s = 0f64;
            for ((g, _), k) in grads.iter().zip(&ks) {
                s += (f64::from(g[j]) - *c) * k;
            }
            *c += s;
        }
    }
    v.into_iter().map(|x| x as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn honest(i: usize) -> Vec<f32> {
        (0..64).map(|j| 1e-3 * (((i * 64 + j) as f32) * 0.37).sin() + 1e-3).collect()
    }

    fn norm(v: &[f32]) -> f64 {
        v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
    }

    #[test]
    fn centered_clip_gives_the_bits_of_the_step_vector_formulation() {
        // The clip once summed each iteration into a step vector, then added
        // it; per coordinate now, without the vector. Peers of one run may
        // run either version: the bits must not change.
        fn with_step_vector(grads: &[(&[f32], u64)], factor: f64, iterations: u32) -> Vec<f32> {
            let mut v = coordinate_median(grads);
            let total: f64 = grads.iter().map(|(_, w)| *w as f64).sum();
            for _ in 0..iterations {
                let dist: Vec<f64> = grads.iter().map(|(g, _)| distance(g, &v)).collect();
                let mut sorted = dist.clone();
                sorted.sort_by(f64::total_cmp);
                let tau = factor * sorted[sorted.len() / 2];
                let mut step = vec![0f64; v.len()];
                for ((g, w), d) in grads.iter().zip(&dist) {
                    let scale = if *d > tau && *d > 0.0 { tau / d } else { 1.0 };
                    let k = scale * *w as f64 / total;
                    for ((s, x), c) in step.iter_mut().zip(g.iter()).zip(&v) {
                        *s += (f64::from(*x) - c) * k;
                    }
                }
                for (c, s) in v.iter_mut().zip(&step) {
                    *c += s;
                }
            }
            v.into_iter().map(|x| x as f32).collect()
        }
        let mut hs: Vec<Vec<f32>> = (0..6).map(honest).collect();
        hs.push((0..64).map(|j| if j % 3 == 0 { 50.0 } else { -7.0 }).collect());
        let grads: Vec<(&[f32], u64)> = hs.iter().enumerate().map(|(i, h)| (h.as_slice(), 10 + i as u64)).collect();
        for (factor, iterations) in [(2.0, 3), (1.0, 5), (0.5, 1)] {
            let new: Vec<u32> = centered_clip(&grads, factor, iterations).iter().map(|x| x.to_bits()).collect();
            let old: Vec<u32> = with_step_vector(&grads, factor, iterations).iter().map(|x| x.to_bits()).collect();
            assert_eq!(new, old);
        }
    }

    #[test]
    fn one_poisoned_contribution_moves_robust_rules_by_little() {
        let hs: Vec<Vec<f32>> = (0..7).map(honest).collect();
        let poison: Vec<f32> = (0..64).map(|j| if j % 2 == 0 { 1e3 } else { -1e3 }).collect();
        let clean: Vec<(&[f32], u64)> = hs.iter().map(|h| (h.as_slice(), 100)).collect();
        let mut dirty = clean.clone();
        dirty.push((&poison, 100));
        let rules =
            [Rule::Mean, Rule::TrimmedMean { fraction: 0.2 }, Rule::CenteredClip { factor: 2.0, iterations: 3 }];
        let honest_mean = aggregate(Rule::Mean, &clean).unwrap();
        let scale = norm(&honest_mean);
        for rule in rules {
            let a = aggregate(rule, &dirty).unwrap();
            let off: Vec<f32> = a.iter().zip(&honest_mean).map(|(x, y)| x - y).collect();
            let rel = norm(&off) / scale;
            eprintln!("{rule:?}: off by {rel:.3} of the honest mean's norm");
            match rule {
                Rule::Mean => assert!(rel > 100.0, "the mean is wrecked: {rel}"),
                _ => assert!(rel < 1.0, "{rule:?} bounded the poison: {rel}"),
            }
        }
    }

    #[test]
    fn robust_rules_on_small_cases_worked_by_hand() {
        let g = honest(3);
        let same: Vec<(&[f32], u64)> = (0..5).map(|_| (g.as_slice(), 10)).collect();
        for rule in [Rule::TrimmedMean { fraction: 0.2 }, Rule::CenteredClip { factor: 2.0, iterations: 3 }] {
            let a = aggregate(rule, &same).unwrap();
            assert_eq!(a, g, "{rule:?}");
        }
        // Worked by hand, one coordinate, weights 1: median of {0, 1, 10} is
        // 1; distances 1, 0, 9, tau = 2 x 1: v = 1 + (-1 + 0 + 2) / 3 = 4/3;
        // then tau = 2 x 4/3, v = 4/3 + (-4/3 - 1/3 + 8/3) / 3 = 5/3; then
        // tau = 10/3, v = 5/3 + (-5/3 - 2/3 + 10/3) / 3 = 2.
        let (a, b, c) = ([0f32], [1f32], [10f32]);
        let rule = Rule::CenteredClip { factor: 2.0, iterations: 3 };
        assert_eq!(aggregate(rule, &[(&a, 1), (&b, 1), (&c, 1)]).unwrap(), vec![2.0]);
        // Trimmed mean of {-5, 0, 1, 3, 10} dropping one at each end: 4/3.
        let xs = [[0f32], [1.0], [10.0], [3.0], [-5.0]];
        let input: Vec<(&[f32], u64)> = xs.iter().map(|x| (x.as_slice(), 1)).collect();
        assert_eq!(aggregate(Rule::TrimmedMean { fraction: 0.2 }, &input).unwrap(), vec![(4.0f64 / 3.0) as f32]);
        assert!(aggregate(rule, &[]).is_err());
    }
}
