//! The DiLoCo outer step: pseudo-gradients, their sample-weighted average, Nesterov SGD, and
//! the state hash peers compare. Plain `f32` loops in a fixed order: deterministic everywhere.

use crate::error::TrainerError;

/// DiLoCo outer optimizer: SGD with (Nesterov) momentum on the averaged pseudo-gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct OuterOptimizer {
    /// Outer learning rate.
    pub lr: f32,
    /// Momentum coefficient (mu).
    pub momentum: f32,
    /// Use the Nesterov form of the update.
    pub nesterov: bool,
    /// Momentum buffer, one value per parameter.
    pub velocity: Vec<f32>,
}

impl OuterOptimizer {
    /// An optimizer for `n` parameters with zero velocity.
    pub fn new(lr: f32, momentum: f32, nesterov: bool, n: usize) -> Self {
        Self { lr, momentum, nesterov, velocity: vec![0.0; n] }
    }

    /// `v = mu*v + g`; `update = nesterov ? g + mu*v : v`; `params -= lr*update`.
    ///
    /// # Panics
    ///
    /// If `params`, `pseudo_grad` and the velocity do not all have the same length; use
    /// [`try_step`](Self::try_step) to get an error instead.
    pub fn step(&mut self, params: &mut [f32], pseudo_grad: &[f32]) {
        if let Err(e) = self.try_step(params, pseudo_grad) {
            panic!("OuterOptimizer::step: {e}");
        }
    }

    /// [`step`](Self::step), with a length mismatch reported as an error (and nothing changed).
    pub fn try_step(&mut self, params: &mut [f32], pseudo_grad: &[f32]) -> Result<(), TrainerError> {
        let n = self.velocity.len();
        for (index, got) in [params.len(), pseudo_grad.len()].into_iter().enumerate() {
            if got != n {
                return Err(TrainerError::LengthMismatch { index, expected: n, got });
            }
        }
        let (lr, mu) = (self.lr, self.momentum);
        for ((p, v), &g) in params.iter_mut().zip(&mut self.velocity).zip(pseudo_grad) {
            *v = mu * *v + g;
            let update = if self.nesterov { g + mu * *v } else { *v };
            *p -= lr * update;
        }
        Ok(())
    }
}

/// The pseudo-gradient `global - local`, elementwise.
///
/// # Panics
///
/// If the lengths differ; use [`try_pseudo_gradient`] where `local` comes from outside.
pub fn pseudo_gradient(global: &[f32], local: &[f32]) -> Vec<f32> {
    match try_pseudo_gradient(global, local) {
        Ok(g) => g,
        Err(e) => panic!("pseudo_gradient: {e}"),
    }
}

/// [`pseudo_gradient`], with a length mismatch reported as [`TrainerError::LengthMismatch`].
pub fn try_pseudo_gradient(global: &[f32], local: &[f32]) -> Result<Vec<f32>, TrainerError> {
    if global.len() != local.len() {
        return Err(TrainerError::LengthMismatch { index: 1, expected: global.len(), got: local.len() });
    }
    Ok(global.iter().zip(local).map(|(g, l)| g - l).collect())
}

/// The checks of [`weighted_average`] alone: returns the length and the total weight.
pub(crate) fn check_gradients(grads: &[(&[f32], u64)]) -> Result<(usize, u128), TrainerError> {
    let Some((first, _)) = grads.first() else {
        return Err(TrainerError::NoGradients);
    };
    let n = first.len();
    if let Some((index, (g, _))) = grads.iter().enumerate().find(|(_, (g, _))| g.len() != n) {
        return Err(TrainerError::LengthMismatch { index, expected: n, got: g.len() });
    }
    let total: u128 = grads.iter().map(|(_, w)| u128::from(*w)).sum();
    if total == 0 {
        return Err(TrainerError::ZeroWeight);
    }
    Ok((n, total))
}

/// Sample-weighted mean of pseudo-gradients: `sum_i w_i g_i / sum_i w_i`, accumulated per
/// element in `f64` in the order given, then rounded to `f32` (deterministic for an order).
///
/// Errors: no inputs ([`TrainerError::NoGradients`]), differing lengths
/// ([`TrainerError::LengthMismatch`]), weights summing to zero ([`TrainerError::ZeroWeight`]).
pub fn weighted_average(grads: &[(&[f32], u64)]) -> Result<Vec<f32>, TrainerError> {
    let (n, total) = check_gradients(grads)?;
    let mut acc = vec![0f64; n];
    for (g, w) in grads {
        let w = *w as f64;
        for (a, &x) in acc.iter_mut().zip(g.iter()) {
            *a += f64::from(x) * w;
        }
    }
    let total = total as f64;
    Ok(acc.into_iter().map(|a| (a / total) as f32).collect())
}

/// BLAKE3 of the parameters' little-endian `f32` bytes followed by the velocity's.
pub fn state_hash(params: &[f32], velocity: &[f32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut buf = Vec::with_capacity(4 * 4096);
    for chunk in params.chunks(4096).chain(velocity.chunks(4096)) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        hasher.update(&buf);
    }
    *hasher.finalize().as_bytes()
}
