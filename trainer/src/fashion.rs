//! `fashion-cnn`: a small convolutional network on Fashion-MNIST (pulled from its Debian
//! package, see [`crate::packages`]).

use std::io::Read;
use std::path::Path;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::TrainerError;
use crate::rng::Rng;
use crate::task::{Eval, Task, cross_entropy, eval_logits, int_tensor, mean_eval};

/// Image side in pixels.
pub(crate) const SIDE: usize = 28;
/// Pixels per image.
const PIXELS: usize = SIDE * SIDE;
/// Number of classes (T-shirt/top ... ankle boot).
const CLASSES: usize = 10;
/// Channels of the two convolutions.
const C1: usize = 16;
const C2: usize = 32;
/// Width of the hidden dense layer.
const HIDDEN: usize = 128;
/// Test images evaluated per forward pass (bounds the activations' memory).
const EVAL_CHUNK: usize = 1000;

/// The network: two 3x3 conv (padding 1) + ReLU + 2x2 max-pool stages, then
/// `32*7*7 -> 128 (ReLU) -> 10`.
#[derive(Module, Debug)]
pub(crate) struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
}

impl Cnn {
    /// The structure with lazy parameters.
    pub fn new(device: &Device) -> Self {
        let conv = |c_in, c_out| {
            Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
        };
        Self {
            conv1: conv(1, C1),
            conv2: conv(C1, C2),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(C2 * (SIDE / 4) * (SIDE / 4), HIDDEN).init(device),
            fc2: LinearConfig::new(HIDDEN, CLASSES).init(device),
        }
    }

    /// `x`: `[batch, 1, 28, 28]` pixels in `0..=1` -> logits `[batch, 10]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.pool.forward(relu(self.conv1.forward(x))); // [b, 16, 14, 14]
        let h = self.pool.forward(relu(self.conv2.forward(h))); // [b, 32, 7, 7]
        let h: Tensor<2> = h.flatten(1, 3); // [b, 1568]
        self.fc2.forward(relu(self.fc1.forward(h)))
    }
}

/// One split of the data set: pixels as bytes (a quarter of the f32 memory).
#[derive(Clone, Debug)]
pub(crate) struct Split {
    /// `[n, 784]` row-major grey levels.
    pub pixels: Vec<u8>,
    /// `n` labels in `0..10`.
    pub labels: Vec<i64>,
}

impl Split {
    /// Reads `<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz` from `dir`.
    pub fn load(dir: &Path, prefix: &str) -> Result<Self, TrainerError> {
        let images = read_idx(&dir.join(format!("{prefix}-images-idx3-ubyte.gz")), 3)?;
        let labels = read_idx(&dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), 1)?;
        let n = labels.dims[0];
        if images.dims != [n, SIDE, SIDE] {
            return Err(TrainerError::Data(format!("fashion-mnist {prefix}: images {:?} for {n} labels", images.dims)));
        }
        if let Some(bad) = labels.data.iter().find(|&&l| usize::from(l) >= CLASSES) {
            return Err(TrainerError::Data(format!("fashion-mnist {prefix}: label {bad}")));
        }
        Ok(Self { pixels: images.data, labels: labels.data.iter().map(|&l| i64::from(l)).collect() })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    /// Images `idx` as a `[len, 1, 28, 28]` tensor scaled to `0..=1`.
    fn images(&self, idx: impl Iterator<Item = usize>, device: &Device) -> Tensor<4> {
        let mut x = Vec::new();
        for i in idx {
            x.extend(self.pixels[i * PIXELS..(i + 1) * PIXELS].iter().map(|&p| f32::from(p) / 255.0));
        }
        let n = x.len() / PIXELS;
        Tensor::from_data(TensorData::new(x, [n, 1, SIDE, SIDE]), device)
    }
}

/// An IDX array of unsigned bytes.
#[derive(Debug)]
struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Largest IDX array read (the training images are 47 MB).
const MAX_IDX_BYTES: usize = 64 << 20;

/// Reads a gzipped IDX file of `u8` with `rank` dimensions, checking the header against the
/// data's length (and refusing more than [`MAX_IDX_BYTES`]).
fn read_idx(path: &Path, rank: usize) -> Result<Idx, TrainerError> {
    let io = |source| TrainerError::Io { path: path.to_path_buf(), source };
    let bad = |m: String| TrainerError::Data(format!("{}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(file)
        .take(MAX_IDX_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| bad(format!("not a gzip stream: {e}")))?;
    let header = 4 + 4 * rank;
    if raw.len() < header || raw[..2] != [0, 0] || raw[2] != 0x08 || usize::from(raw[3]) != rank {
        return Err(bad(format!("not an IDX file of unsigned bytes with {rank} dimensions")));
    }
    let dims: Vec<usize> =
        raw[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let len = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&l| l <= MAX_IDX_BYTES);
    if len != Some(raw.len() - header) {
        return Err(bad(format!("header says {dims:?}, file has {} bytes of data", raw.len() - header)));
    }
    raw.drain(..header);
    Ok(Idx { dims, data: raw })
}

/// Fashion-MNIST classification.
pub(crate) struct FashionTask {
    train: Split,
    test: Split,
}

impl FashionTask {
    /// Loads both splits from the pulled package directory.
    pub fn new(dir: &Path) -> Result<Self, TrainerError> {
        Ok(Self { train: Split::load(dir, "train")?, test: Split::load(dir, "t10k")? })
    }
}

impl Task for FashionTask {
    type Model = Cnn;

    fn build(&self, device: &Device) -> Cnn {
        Cnn::new(device)
    }

    fn sample(&self, rng: &mut Rng, batch_size: usize) -> Vec<usize> {
        (0..batch_size).map(|_| rng.below(self.train.len())).collect()
    }

    fn batch_loss(&self, model: &Cnn, batch: &[usize], device: &Device) -> Tensor<1> {
        let x = self.train.images(batch.iter().copied(), device);
        let y = batch.iter().map(|&i| self.train.labels[i]).collect();
        cross_entropy(model.forward(x), int_tensor(y, device))
    }

    /// Loss and accuracy over all 10 000 test images.
    fn evaluate(&self, model: &Cnn, device: &Device) -> Result<Eval, TrainerError> {
        let n = self.test.len();
        let mut parts = Vec::new();
        for start in (0..n).step_by(EVAL_CHUNK) {
            let end = (start + EVAL_CHUNK).min(n);
            let logits = model.forward(self.test.images(start..end, device));
            parts.push((eval_logits(logits, &self.test.labels[start..end], device)?, end - start));
        }
        Ok(mean_eval(&parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn idx_headers_must_match_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        std::fs::write(&p, gz(&[0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])).unwrap();
        assert_eq!(read_idx(&p, 1).unwrap().data, vec![7, 8, 9]);
        assert!(read_idx(&p, 3).is_err(), "rank differs");
        std::fs::write(&p, gz(&[0, 0, 8, 1, 0, 0, 0, 4, 7, 8, 9])).unwrap();
        assert!(read_idx(&p, 1).unwrap_err().to_string().contains("header says [4]"));
        std::fs::write(&p, gz(&[0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2])).unwrap();
        assert!(read_idx(&p, 3).is_err(), "overflowing dims");
        std::fs::write(&p, b"not gzip").unwrap();
        assert!(read_idx(&p, 1).unwrap_err().to_string().contains("gzip"));
    }
}
