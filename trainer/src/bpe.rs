//! The byte-level BPE tokenizer stored in a GGUF file, run by `tiktoken-rs`.
//!
//! GGUF keeps GPT-2-style tokens as strings over the byte-to-unicode alphabet (`Ġ` for a
//! space). We map them back to bytes and hand `tiktoken-rs` the table with each token's id as
//! its rank: in SmolLM2's vocabulary the ids of merged tokens increase with merge order
//! (checked at load), so lowest-rank-first merging is the file's merge list applied in order.
//! The pre-tokenizer is llama.cpp's `smollm` one: every digit alone, then GPT-2's pattern.

use std::collections::HashMap;

use tiktoken_rs::CoreBPE;

use crate::error::TrainerError;
use crate::gguf::{Gguf, Value};

/// GPT-2's split pattern with digits taken one at a time.
const SMOLLM_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GGUF token type of ordinary tokens and of control (special) tokens.
const NORMAL: u64 = 1;
const CONTROL: u64 = 3;

/// A tokenizer loaded from GGUF metadata.
pub struct Tokenizer {
    bpe: CoreBPE,
    /// Id of `<|im_end|>` / the end-of-sequence token.
    pub eos: u32,
    /// Number of tokens.
    pub vocab: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &self.vocab).field("eos", &self.eos).finish()
    }
}

/// GPT-2's byte-to-unicode table inverted: the char that stands for each byte.
fn unicode_to_byte() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
    let mut map = HashMap::new();
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid char")
        };
        map.insert(c, b);
    }
    map
}

impl Tokenizer {
    /// Builds the tokenizer of a `gpt2`-model GGUF file.
    pub fn from_gguf(g: &Gguf) -> Result<Self, TrainerError> {
        let bad = |m: String| TrainerError::Data(format!("GGUF tokenizer: {m}"));
        let model = g.get("tokenizer.ggml.model")?;
        if *model != Value::Str("gpt2".into()) {
            return Err(bad(format!("model {model:?}, only byte-level BPE (gpt2) is read")));
        }
        let tokens = g.get_strings("tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match g.get("tokenizer.ggml.token_type")? {
            Value::Arr(v) => v.iter().map(|x| x.as_u64().unwrap_or(0)).collect(),
            _ => return Err(bad("token_type is not an array".into())),
        };
        if types.len() != tokens.len() {
            return Err(bad(format!("{} tokens, {} types", tokens.len(), types.len())));
        }
        let to_byte = unicode_to_byte();
        let mut encoder: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut special: HashMap<String, u32> = HashMap::new();
        for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
            let id = id as u32;
            match *ty {
                NORMAL => {
                    let bytes = tok
                        .chars()
                        .map(|c| to_byte.get(&c).copied())
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| bad(format!("token {id} {tok:?} is not byte-level")))?;
                    if encoder.insert(bytes, id).is_some() {
                        return Err(bad(format!("token {id} {tok:?} appears twice")));
                    }
                }
                CONTROL => {
                    special.insert((*tok).to_string(), id);
                }
                other => return Err(bad(format!("token {id} has type {other}"))),
            }
        }
        // Ranks are ids: that is the merge order only if merged tokens' ids increase with it.
        let ids: HashMap<&str, u32> = tokens.iter().enumerate().map(|(i, t)| (*t, i as u32)).collect();
        let mut last = 0u32;
        for m in g.get_strings("tokenizer.ggml.merges")? {
            let merged: String = m.split(' ').collect();
            if let Some(&id) = ids.get(merged.as_str()) {
                if id < last {
                    return Err(bad(format!("merge {m:?} gives token {id}, earlier merges gave {last}")));
                }
                last = id;
            }
        }
        let eos = g.get_u64("tokenizer.ggml.eos_token_id")? as u32;
        let vocab = tokens.len();
        let bpe = CoreBPE::new(encoder.into_iter().collect(), special.into_iter().collect(), SMOLLM_PATTERN)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { bpe, eos, vocab })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are encoded as such.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_with_special_tokens(text)
    }

    /// Token ids of `text` with special tokens written in it encoded as
    /// plain text (for text from others: a completion cannot end a turn).
    pub fn encode_text(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    /// Text of `tokens` (invalid UTF-8 at a cut is replaced).
    pub fn decode(&self, tokens: &[u32]) -> String {
        String::from_utf8_lossy(&self.bpe.decode_bytes(tokens).unwrap_or_default()).into_owned()
    }
}

/// SmolLM2-Instruct's chat template (from the GGUF) applied to one user message, ready for the
/// assistant's answer.
pub fn chat_prompt(user: &str) -> String {
    format!(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}
