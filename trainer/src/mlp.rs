//! `digits-mlp`: a one-hidden-layer perceptron on the 8x8 digits.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::data::{DIGITS_CLASSES, DIGITS_FEATURES, Digits};
use crate::error::TrainerError;
use crate::rng::Rng;
use crate::task::{Eval, Task, cross_entropy, eval_logits, int_tensor};

/// Width of the hidden layer.
pub(crate) const HIDDEN: usize = 64;

/// The network: `64 -> HIDDEN (ReLU) -> 10`.
#[derive(Module, Debug)]
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// The structure with lazy parameters.
    pub fn new(device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(DIGITS_FEATURES, HIDDEN).init(device),
            fc2: LinearConfig::new(HIDDEN, DIGITS_CLASSES).init(device),
        }
    }

    /// `x`: `[batch, 64]` pixels in `0..=1` -> logits `[batch, 10]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = relu(self.fc1.forward(x)); // [batch, HIDDEN]
        self.fc2.forward(h) // [batch, 10]
    }
}

/// The digits classification task.
pub(crate) struct DigitsTask {
    data: Digits,
}

impl DigitsTask {
    /// Loads and splits the data set.
    pub fn new() -> Result<Self, TrainerError> {
        Ok(Self { data: Digits::load()? })
    }
}

impl Task for DigitsTask {
    type Model = Mlp;

    fn build(&self, device: &Device) -> Mlp {
        Mlp::new(device)
    }

    fn sample(&self, rng: &mut Rng, batch_size: usize) -> Vec<usize> {
        (0..batch_size).map(|_| rng.below(self.data.n_train())).collect()
    }

    fn batch_loss(&self, model: &Mlp, batch: &[usize], device: &Device) -> Tensor<1> {
        let f = DIGITS_FEATURES;
        let mut x = Vec::with_capacity(batch.len() * f);
        let mut y = Vec::with_capacity(batch.len());
        for &i in batch {
            x.extend_from_slice(&self.data.train_x[i * f..(i + 1) * f]);
            y.push(self.data.train_y[i]);
        }
        let x = Tensor::<2>::from_data(TensorData::new(x, [batch.len(), f]), device);
        cross_entropy(model.forward(x), int_tensor(y, device))
    }

    fn evaluate(&self, model: &Mlp, device: &Device) -> Result<Eval, TrainerError> {
        let n = self.data.test_y.len();
        let x = Tensor::<2>::from_data(TensorData::new(self.data.test_x.clone(), [n, DIGITS_FEATURES]), device);
        eval_logits(model.forward(x), &self.data.test_y, device)
    }
}
