//! A llama-architecture decoder in burn (RMSNorm, rotary embeddings, grouped-query attention,
//! SwiGLU, tied input/output embedding) and SmolLM2-135M-Instruct loaded into it from its GGUF.
//!
//! Rotary embeddings rotate adjacent pairs `(x[2i], x[2i+1])`, as llama.cpp does: GGUF
//! converters permute the Q and K weights of Hugging Face checkpoints for exactly that.
//! Parameters move through the same flat vector as every model of the zoo, so the loaded
//! model can be trained by the DiLoCo inner loop like any other.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::bpe::{Tokenizer, chat_prompt};
use crate::error::TrainerError;
use crate::flat;
use crate::gguf::Gguf;

/// Shape of a llama model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub dim: usize,
    /// SwiGLU hidden width.
    pub ffn: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention: `heads` is a multiple).
    pub kv_heads: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Rotary base.
    pub rope_base: f64,
}

impl LlamaConfig {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// Reads the `llama.*` metadata of a GGUF file.
    pub fn from_gguf(g: &Gguf) -> Result<Self, TrainerError> {
        let arch = g.get("general.architecture")?;
        if *arch != crate::gguf::Value::Str("llama".into()) {
            return Err(TrainerError::Data(format!("GGUF architecture {arch:?}, not llama")));
        }
        let u = |k: &str| g.get_u64(k).map(|v| v as usize);
        let cfg = Self {
            vocab: g.get_strings("tokenizer.ggml.tokens")?.len(),
            dim: u("llama.embedding_length")?,
            ffn: u("llama.feed_forward_length")?,
            layers: u("llama.block_count")?,
            heads: u("llama.attention.head_count")?,
            kv_heads: u("llama.attention.head_count_kv")?,
            eps: g.get_f64("llama.attention.layer_norm_rms_epsilon")?,
            rope_base: g.get_f64("llama.rope.freq_base").unwrap_or(10_000.0),
        };
        let ok = cfg.heads > 0
            && cfg.kv_heads > 0
            && cfg.heads.is_multiple_of(cfg.kv_heads)
            && cfg.dim.is_multiple_of(cfg.heads)
            && cfg.head_dim().is_multiple_of(2)
            && cfg.layers <= 1024
            && cfg.dim <= 1 << 16
            && cfg.ffn <= 1 << 18;
        if !ok {
            return Err(TrainerError::Data(format!("GGUF: unusable llama shape {cfg:?}")));
        }
        Ok(cfg)
    }
}

/// One decoder block.
#[derive(Module, Debug)]
pub(crate) struct LlamaBlock {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The decoder; the output projection is the transposed token embedding.
#[derive(Module, Debug)]
pub(crate) struct Llama {
    emb: Embedding,
    blocks: Vec<LlamaBlock>,
    norm: RmsNorm,
}

/// Keys and values of the positions seen so far, per block: `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Default)]
pub(crate) struct KvCache {
    layers: Vec<(Tensor<4>, Tensor<4>)>,
    len: usize,
}

impl KvCache {
    /// Each cached row repeated `n` times (one prompt's cache for `n` samples of it).
    pub(crate) fn repeat(&mut self, n: usize) {
        for (k, v) in &mut self.layers {
            *k = k.clone().repeat_dim(0, n);
            *v = v.clone().repeat_dim(0, n);
        }
    }
}

impl Llama {
    /// The structure with lazy parameters.
    pub fn new(c: &LlamaConfig, device: &Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let norm = || RmsNormConfig::new(c.dim).with_epsilon(c.eps).init(device);
        let kv = c.kv_heads * c.head_dim();
        Self {
            emb: EmbeddingConfig::new(c.vocab, c.dim).init(device),
            blocks: (0..c.layers)
                .map(|_| LlamaBlock {
                    attn_norm: norm(),
                    q: lin(c.dim, c.dim),
                    k: lin(c.dim, kv),
                    v: lin(c.dim, kv),
                    o: lin(c.dim, c.dim),
                    ffn_norm: norm(),
                    gate: lin(c.dim, c.ffn),
                    up: lin(c.dim, c.ffn),
                    down: lin(c.ffn, c.dim),
                })
                .collect(),
            norm: norm(),
        }
    }

    /// `tokens` `[b, t]` following `cache.len` cached positions -> logits `[b, t, vocab]`;
    /// appends the new keys and values to `cache`.
    pub fn forward(&self, c: &LlamaConfig, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let past = cache.len;
        let (cos, sin) = rope_tables(c, past, t, &device);
        let total = past + t;
        let mask: Vec<f32> =
            (0..t).flat_map(|i| (0..total).map(move |j| if j <= past + i { 0.0 } else { -1e9 })).collect();
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [t, total]), &device).reshape([1, 1, t, total]);
        let mut x = self.emb.forward(tokens); // [b, t, d]
        let (h, kvh, dh) = (c.heads, c.kv_heads, c.head_dim());
        for (i, blk) in self.blocks.iter().enumerate() {
            let a = blk.attn_norm.forward(x.clone());
            let split = |y: Tensor<3>, n| y.reshape([b, t, n, dh]).swap_dims(1, 2); // [b, n, t, dh]
            let q = rope(split(blk.q.forward(a.clone()), h), &cos, &sin);
            let mut k = rope(split(blk.k.forward(a.clone()), kvh), &cos, &sin);
            let mut v = split(blk.v.forward(a), kvh);
            if let Some((pk, pv)) = cache.layers.get(i) {
                k = Tensor::cat(vec![pk.clone(), k], 2);
                v = Tensor::cat(vec![pv.clone(), v], 2);
            }
            if i < cache.layers.len() {
                cache.layers[i] = (k.clone(), v.clone());
            } else {
                cache.layers.push((k.clone(), v.clone()));
            }
            let group =
                |y: Tensor<4>| y.reshape([b, kvh, 1, total, dh]).repeat_dim(2, h / kvh).reshape([b, h, total, dh]);
            let scores = q.matmul(group(k).swap_dims(2, 3)).mul_scalar(1.0 / (dh as f32).sqrt()) + mask.clone();
            let y = softmax(scores, 3).matmul(group(v)); // [b, h, t, dh]
            x = x + blk.o.forward(y.swap_dims(1, 2).reshape([b, t, c.dim]));
            let f = blk.ffn_norm.forward(x.clone());
            x = x.clone() + blk.down.forward(silu(blk.gate.forward(f.clone())) * blk.up.forward(f));
        }
        cache.len = total;
        let x = self.norm.forward(x); // [b, t, d]
        let w = self.emb.weight.val().transpose().unsqueeze::<3>(); // [1, d, vocab]
        x.matmul(w)
    }
}

/// Cosines and sines `[1, 1, t, head_dim / 2, 1]` of positions `past..past + t`.
fn rope_tables(c: &LlamaConfig, past: usize, t: usize, device: &Device) -> (Tensor<5>, Tensor<5>) {
    let half = c.head_dim() / 2;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in past..past + t {
        for i in 0..half {
            let freq = c.rope_base.powf(-2.0 * i as f64 / c.head_dim() as f64);
            let angle = p as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let make = |v| Tensor::<2>::from_data(TensorData::new(v, [t, half]), device).reshape([1, 1, t, half, 1]);
    (make(cos), make(sin))
}

/// Rotates the adjacent pairs of `x` `[b, n, t, head_dim]`.
fn rope(x: Tensor<4>, cos: &Tensor<5>, sin: &Tensor<5>) -> Tensor<4> {
    let [b, n, t, dh] = x.dims();
    let pairs = x.reshape([b, n, t, dh / 2, 2]);
    let x0 = pairs.clone().narrow(4, 0, 1);
    let x1 = pairs.narrow(4, 1, 1);
    let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
    let r1 = x0 * sin.clone() + x1 * cos.clone();
    Tensor::cat(vec![r0, r1], 4).reshape([b, n, t, dh])
}

/// The GGUF tensor behind a flat-layout entry, and whether it is a linear weight (stored
/// `[out][in]` in the file, `[in, out]` in burn).
fn gguf_name(name: &str) -> Option<(String, bool)> {
    if name == "emb.weight" {
        return Some(("token_embd.weight".into(), false));
    }
    if name == "norm.gamma" {
        return Some(("output_norm.weight".into(), false));
    }
    let rest = name.strip_prefix("blocks.")?;
    let (i, field) = rest.split_once('.')?;
    let (g, linear) = match field {
        "attn_norm.gamma" => ("attn_norm", false),
        "ffn_norm.gamma" => ("ffn_norm", false),
        "q.weight" => ("attn_q", true),
        "k.weight" => ("attn_k", true),
        "v.weight" => ("attn_v", true),
        "o.weight" => ("attn_output", true),
        "gate.weight" => ("ffn_gate", true),
        "up.weight" => ("ffn_up", true),
        "down.weight" => ("ffn_down", true),
        _ => return None,
    };
    Some((format!("blk.{i}.{g}.weight"), linear))
}

/// The parameters of a GGUF llama in the flat order of [`Llama`]'s layout, dequantised.
pub(crate) fn flat_from_gguf(g: &Gguf, layout: &[(String, Vec<usize>)]) -> Result<Vec<f32>, TrainerError> {
    let mut flat = Vec::with_capacity(flat::layout_len(layout));
    for (name, shape) in layout {
        let (gname, linear) =
            gguf_name(name).ok_or_else(|| TrainerError::InvalidLayout(format!("no GGUF tensor for `{name}`")))?;
        match (shape.as_slice(), linear) {
            (&[d_in, d_out], true) => {
                let w = g.tensor(&gname, &[d_in as u64, d_out as u64])?; // [out][in]
                for i in 0..d_in {
                    flat.extend((0..d_out).map(|o| w[o * d_in + i]));
                }
            }
            (&[rows, cols], false) => flat.extend(g.tensor(&gname, &[cols as u64, rows as u64])?),
            (&[n], false) => flat.extend(g.tensor(&gname, &[n as u64])?),
            _ => return Err(TrainerError::InvalidLayout(format!("`{name}` has shape {shape:?}"))),
        }
    }
    Ok(flat)
}

/// A pretrained language model ready to generate: SmolLM2-135M-Instruct from its GGUF.
pub struct Llm {
    /// The model's shape.
    pub config: LlamaConfig,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    model: Llama,
    device: Device,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm").field("config", &self.config).finish()
    }
}

impl Llm {
    /// Loads a llama GGUF file (dequantising every tensor to f32) on the CPU backend.
    pub fn load(path: &Path) -> Result<Self, TrainerError> {
        let g = Gguf::open(path)?;
        let config = LlamaConfig::from_gguf(&g)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let device = Device::flex();
        let model = Llama::new(&config, &device);
        let layout = flat::layout(&model);
        let params = flat_from_gguf(&g, &layout)?;
        drop(g);
        let model = flat::load(model, &params)?;
        Ok(Self { config, tokenizer, model, device })
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        flat::layout_len(&flat::layout(&self.model))
    }

    /// Greedy decoding of up to `max_tokens` after `prompt` (wrapped in the chat template when
    /// `chat`), stopping at the end-of-sequence token; `on_token` sees each new piece of text.
    pub fn generate(&self, prompt: &str, chat: bool, max_tokens: usize, on_token: &mut dyn FnMut(&str)) -> Vec<u32> {
        let text = if chat { chat_prompt(prompt) } else { prompt.to_string() };
        let ids = self.tokenizer.encode(&text);
        let mut cache = KvCache::default();
        let mut out = Vec::new();
        let mut input = ids;
        for _ in 0..max_tokens {
            let n = input.len();
            let tokens = Tensor::<1, Int>::from_data(
                TensorData::new(input.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [n]),
                &self.device,
            )
            .reshape([1, n]);
            let logits = self.model.forward(&self.config, tokens, &mut cache); // [1, n, vocab]
            let last = logits.narrow(1, n - 1, 1).reshape([self.config.vocab]);
            let next = last.argmax(0).into_scalar::<i64>() as u32;
            if next == self.tokenizer.eos {
                break;
            }
            out.push(next);
            on_token(&self.tokenizer.decode(&[next]));
            input = vec![next];
        }
        out
    }
}
