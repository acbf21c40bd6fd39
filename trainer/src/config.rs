//! Inner-loop settings and results.

use crate::error::TrainerError;

/// Hyper-parameters of one inner loop.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Number of AdamW steps (H).
    pub inner_steps: u32,
    /// AdamW learning rate.
    pub lr: f64,
    /// Examples per step (images for digits, 64-char windows for lipsum).
    pub batch_size: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
}

/// Outcome of [`Trainer::inner_loop`](crate::Trainer::inner_loop).
#[derive(Clone, Debug)]
pub struct InnerResult {
    /// Local parameters after the inner steps (flat, layout order).
    pub params: Vec<f32>,
    /// Training examples consumed: `inner_steps * batch_size`.
    pub samples: u64,
    /// Mean of the per-step training losses.
    pub mean_loss: f32,
}

pub(crate) fn check_config(cfg: &TrainConfig) -> Result<(), TrainerError> {
    let bad = |m: &str| Err(TrainerError::InvalidConfig(m.to_string()));
    if cfg.inner_steps == 0 {
        return bad("inner_steps must be at least 1");
    }
    if cfg.batch_size == 0 {
        return bad("batch_size must be at least 1");
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return bad("lr must be finite and positive");
    }
    if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
        return bad("weight_decay must be finite and non-negative");
    }
    Ok(())
}
