//! The built-in data sets: smartcore's `digits` and lipsum's `LIBER_PRIMUS`.

use crate::error::TrainerError;
use crate::rng::Rng;

/// Seed of the fixed train/test shuffle of the digits data set.
const DIGITS_SPLIT_SEED: u64 = 0x0D16_175E_ED00_0001;

/// Number of digits samples held out for evaluation.
pub(crate) const DIGITS_TEST: usize = 360;

/// Pixels per digits image (8x8).
pub(crate) const DIGITS_FEATURES: usize = 64;

/// Number of digit classes.
pub(crate) const DIGITS_CLASSES: usize = 10;

/// The digits data set, split once with a fixed seed.
#[derive(Clone, Debug)]
pub(crate) struct Digits {
    /// Row-major `[n_train, 64]` pixels scaled to `0..=1`.
    pub train_x: Vec<f32>,
    /// `n_train` labels in `0..10`.
    pub train_y: Vec<i64>,
    /// Row-major `[360, 64]` pixels scaled to `0..=1`.
    pub test_x: Vec<f32>,
    /// 360 labels in `0..10`.
    pub test_y: Vec<i64>,
}

impl Digits {
    /// Loads smartcore's copy of the UCI digits and splits it: the samples are shuffled with a
    /// fixed seed of our RNG and the last [`DIGITS_TEST`] become the test split.
    pub fn load() -> Result<Self, TrainerError> {
        let ds = smartcore::dataset::digits::load_dataset();
        let (n, f) = (ds.num_samples, ds.num_features);
        if f != DIGITS_FEATURES || ds.data.len() != n * f || ds.target.len() != n {
            return Err(TrainerError::Data(format!(
                "digits: unexpected shape ({n} samples x {f} features, {} values, {} labels)",
                ds.data.len(),
                ds.target.len()
            )));
        }
        if n <= DIGITS_TEST {
            return Err(TrainerError::Data(format!("digits: only {n} samples")));
        }
        let mut labels = Vec::with_capacity(n);
        for &t in &ds.target {
            if !(t >= 0.0 && t < DIGITS_CLASSES as f32 && t.fract() == 0.0) {
                return Err(TrainerError::Data(format!("digits: bad label {t}")));
            }
            labels.push(t as i64);
        }
        let mut order: Vec<usize> = (0..n).collect();
        Rng::from_u64(DIGITS_SPLIT_SEED).shuffle(&mut order);
        let (train_idx, test_idx) = order.split_at(n - DIGITS_TEST);
        let gather = |idx: &[usize]| {
            let mut x = Vec::with_capacity(idx.len() * f);
            let mut y = Vec::with_capacity(idx.len());
            for &i in idx {
                x.extend(ds.data[i * f..(i + 1) * f].iter().map(|p| p / 16.0));
                y.push(labels[i]);
            }
            (x, y)
        };
        let (train_x, train_y) = gather(train_idx);
        let (test_x, test_y) = gather(test_idx);
        Ok(Self { train_x, train_y, test_x, test_y })
    }

    /// Number of training samples.
    pub fn n_train(&self) -> usize {
        self.train_y.len()
    }
}

/// Character-level tokenisation of `LIBER_PRIMUS`.
#[derive(Clone, Debug)]
pub(crate) struct Corpus {
    /// The sorted distinct characters of the text; a token is an index into this.
    pub vocab: Vec<char>,
    /// Tokens of the first 90 % of the text (training windows come from here).
    pub train: Vec<i64>,
    /// Tokens of the last 10 % of the text (held-out evaluation).
    pub heldout: Vec<i64>,
}

impl Corpus {
    /// The sorted distinct characters of the corpus.
    pub fn vocab() -> Vec<char> {
        let mut vocab: Vec<char> = lipsum::LIBER_PRIMUS.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        vocab
    }

    /// Tokenises the text and splits it 90/10; windows of `window` tokens (context + 1) must
    /// fit in both parts.
    pub fn load(window: usize) -> Result<Self, TrainerError> {
        let vocab = Self::vocab();
        let mut tokens = Vec::with_capacity(lipsum::LIBER_PRIMUS.len());
        for c in lipsum::LIBER_PRIMUS.chars() {
            let t =
                vocab.binary_search(&c).map_err(|_| TrainerError::Data(format!("lipsum: char {c:?} not in vocab")))?;
            tokens.push(t as i64);
        }
        let cut = tokens.len() * 9 / 10;
        let heldout = tokens.split_off(cut);
        if tokens.len() <= window || heldout.len() <= window {
            return Err(TrainerError::Data(format!(
                "lipsum: text too short ({} + {} tokens) for windows of {window}",
                tokens.len(),
                heldout.len()
            )));
        }
        Ok(Self { vocab, train: tokens, heldout })
    }
}
