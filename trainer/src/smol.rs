//! `smollm2-135m` in the zoo: SmolLM2-135M-Instruct (from its pulled GGUF) fine-tuned in full
//! on English text (the Brown Corpus, tokenised with SmolLM2's own tokenizer). Its initial
//! parameters are the pretrained ones, whatever the run's seed.
//!
//! Full fine-tuning rather than LoRA: the DiLoCo inner loop, its checkpoints and peer review
//! all work on one flat parameter vector, and a full vector needs no second code path; the
//! price is states of 538 MB (plus AdamW moments while training), which is what the
//! data-plane work for big states is for.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::bpe::Tokenizer;
use crate::brown::untag;
use crate::error::TrainerError;
use crate::flat;
use crate::gguf::Gguf;
use crate::llama::{KvCache, Llama, LlamaConfig, flat_from_gguf};
use crate::rng::Rng;
use crate::task::{Eval, Task, cross_entropy, eval_logits, int_tensor, mean_eval};

/// SmolLM2-135M's shape (checked against the GGUF at load).
pub(crate) fn config() -> LlamaConfig {
    LlamaConfig {
        vocab: 49_152,
        dim: 576,
        ffn: 1536,
        layers: 30,
        heads: 9,
        kv_heads: 3,
        eps: 1e-5,
        rope_base: 100_000.0,
    }
}

/// Tokens per training window.
pub(crate) const CONTEXT: usize = 128;
/// Held-out windows evaluated.
const EVAL: usize = 8;

/// Continued training of SmolLM2 on the Brown Corpus.
pub(crate) struct SmolTask {
    config: LlamaConfig,
    pretrained: Arc<Vec<f32>>,
    train: Vec<u32>,
    heldout: Vec<u32>,
}

impl SmolTask {
    /// Loads the GGUF (`model_dir`) and tokenises the corpus (`brown_dir`).
    pub fn new(model_dir: &Path, brown_dir: &Path) -> Result<Self, TrainerError> {
        let g = Gguf::open(&model_dir.join(crate::packages::SMOLLM2_GGUF))?;
        let found = LlamaConfig::from_gguf(&g)?;
        let want = config();
        if (found.vocab, found.dim, found.ffn, found.layers, found.heads, found.kv_heads)
            != (want.vocab, want.dim, want.ffn, want.layers, want.heads, want.kv_heads)
        {
            return Err(TrainerError::Data(format!("smollm2-135m: the GGUF's shape is {found:?}")));
        }
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let layout = flat::layout(&Llama::new(&found, &Device::flex()));
        let pretrained = Arc::new(flat_from_gguf(&g, &layout)?);
        drop(g);
        let (mut train, mut heldout) = (Vec::new(), Vec::new());
        for (i, text) in crate::brown::samples(brown_dir)?.iter().enumerate() {
            let into = if i % 10 == 9 { &mut heldout } else { &mut train };
            into.extend(tokenizer.encode(&untag(text)));
            into.push(0); // <|endoftext|>
        }
        if train.len() <= CONTEXT || heldout.len() <= CONTEXT * EVAL {
            return Err(TrainerError::Data("smollm2-135m: corpus too short".into()));
        }
        Ok(Self { config: found, pretrained, train, heldout })
    }

    /// The pretrained parameters, flat.
    pub fn pretrained(&self) -> &[f32] {
        &self.pretrained
    }

    fn loss_and_logits(
        &self,
        model: &Llama,
        tokens: &[u32],
        starts: &[usize],
        device: &Device,
    ) -> (Tensor<2>, Vec<i64>) {
        let mut x = Vec::with_capacity(starts.len() * CONTEXT);
        let mut y = Vec::with_capacity(starts.len() * CONTEXT);
        for &s in starts {
            x.extend(tokens[s..s + CONTEXT].iter().map(|&t| i64::from(t)));
            y.extend(tokens[s + 1..s + CONTEXT + 1].iter().map(|&t| i64::from(t)));
        }
        let x = Tensor::<2, Int>::from_data(TensorData::new(x, [starts.len(), CONTEXT]), device);
        let logits = model.forward(&self.config, x, &mut KvCache::default());
        let [n, t, v] = logits.dims();
        (logits.reshape([n * t, v]), y)
    }
}

impl Task for SmolTask {
    type Model = Llama;

    fn build(&self, device: &Device) -> Llama {
        Llama::new(&self.config, device)
    }

    fn sample(&self, rng: &mut Rng, batch_size: usize) -> Vec<usize> {
        let span = self.train.len() - CONTEXT;
        (0..batch_size).map(|_| rng.below(span)).collect()
    }

    fn batch_loss(&self, model: &Llama, batch: &[usize], device: &Device) -> Tensor<1> {
        let (logits, y) = self.loss_and_logits(model, &self.train, batch, device);
        cross_entropy(logits, int_tensor(y, device))
    }

    /// Loss (exp: perplexity) and next-token accuracy over the first 8 held-out windows of 128
    /// tokens, one window at a time.
    fn evaluate(&self, model: &Llama, device: &Device) -> Result<Eval, TrainerError> {
        let mut parts = Vec::new();
        for i in 0..EVAL {
            let (logits, y) = self.loss_and_logits(model, &self.heldout, &[i * CONTEXT], device);
            parts.push((eval_logits(logits, &y, device)?, 1));
        }
        Ok(mean_eval(&parts))
    }
}
