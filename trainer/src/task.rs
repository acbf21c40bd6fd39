//! What a model in the zoo has to provide, plus the loss helpers they share.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::TrainerError;
use crate::rng::Rng;

/// Held-out evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eval {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction of correct (next-char / class) predictions.
    pub accuracy: Option<f32>,
}

/// A model together with its data: enough to train and evaluate it.
pub(crate) trait Task {
    /// The burn module.
    type Model: Module;

    /// Builds the module structure on `device`. Parameters stay lazy (uninitialised) and are
    /// always overwritten from a flat vector before use.
    fn build(&self, device: &Device) -> Self::Model;

    /// Draws one training batch of `batch_size` examples with `rng`: the
    /// indices of its examples (cheap: replaying a round's batches up to a
    /// step needs no training).
    fn sample(&self, rng: &mut Rng, batch_size: usize) -> Vec<usize>;

    /// Mean cross-entropy of the training examples `batch`. Returns a `[1]` tensor.
    fn batch_loss(&self, model: &Self::Model, batch: &[usize], device: &Device) -> Tensor<1>;

    /// Loss and accuracy on the held-out split.
    fn evaluate(&self, model: &Self::Model, device: &Device) -> Result<Eval, TrainerError>;
}

/// Mean cross-entropy of `logits` `[n, classes]` against `targets` `[n]`; returns `[1]`.
pub(crate) fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let log_probs = log_softmax(logits, 1);
    log_probs.gather(1, targets.reshape([n, 1])).mean().neg()
}

/// An `[n]` int tensor of class indices.
pub(crate) fn int_tensor(values: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// Loss and accuracy of `logits` `[n, classes]` against host-side `targets` (length n).
pub(crate) fn eval_logits(logits: Tensor<2>, targets: &[i64], device: &Device) -> Result<Eval, TrainerError> {
    let loss = cross_entropy(logits.clone(), int_tensor(targets.to_vec(), device))
        .try_into_scalar::<f32>()
        .map_err(|e| TrainerError::Backend(format!("reading the loss: {e:?}")))?;
    let predicted = logits
        .argmax(1)
        .try_into_vec_as::<i64>()
        .map_err(|e| TrainerError::Backend(format!("reading predictions: {e:?}")))?;
    let correct = predicted.iter().zip(targets).filter(|(p, t)| p == t).count();
    let accuracy = if targets.is_empty() { None } else { Some(correct as f32 / targets.len() as f32) };
    Ok(Eval { loss, accuracy })
}

/// The example-weighted mean of evaluations of chunks of a held-out split (`(eval, examples)`).
pub(crate) fn mean_eval(parts: &[(Eval, usize)]) -> Eval {
    let n = parts.iter().map(|(_, k)| *k).sum::<usize>().max(1) as f64;
    let mean = |f: &dyn Fn(&Eval) -> f32| parts.iter().map(|(e, k)| f64::from(f(e)) * *k as f64).sum::<f64>() / n;
    Eval { loss: mean(&|e| e.loss) as f32, accuracy: Some(mean(&|e| e.accuracy.unwrap_or(0.0)) as f32) }
}
