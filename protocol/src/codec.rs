//! Pseudo-gradient codecs: pure functions from `&[f32]` to bytes and back.
//!
//! * `fp32` — the reference, bit-exact.
//! * `bf16` — the upper 16 bits of each value, rounded to nearest even:
//!   relative error at most 2^-8.
//! * `int8` / `int4` — block-wise absmax quantisation: each block of
//!   `block_size` values stores one f32 scale (`absmax / 127`, resp. `/ 7`)
//!   and one signed code per value; the error of a value is at most half a
//!   step, `absmax(block) / 254` (int8) or `absmax(block) / 14` (int4).
//! * top-k (any codec, `topk` in (0, 1)): only the `ceil(topk * n)` values of
//!   largest magnitude are sent, as delta-coded indices plus values; the rest
//!   decode to zero.
//!
//! Lossy codecs are meant to be used through [`ErrorFeedback`], which adds
//! the residual of round r to the pseudo-gradient of round r+1, so no signal
//! is lost over time.
//!
//! Frame: a bincode [`Header`] (bounded) followed by the body, zstd-compressed
//! when the header says so. Decoding checks the header against a hard bound
//! and against the element count the caller expects (the run's model), and
//! computes the exact body size from the header, before it allocates or
//! decompresses anything; it decompresses into a buffer of exactly that size.
//! A lying header or a zstd bomb is an error, never an abort.

mod quant;

pub use quant::{dequantize_int4, dequantize_int8, quantize_int4, quantize_int8};

use serde::{Deserialize, Serialize};

/// The codec names a run spec may use.
pub const CODECS: &[&str] = &["fp32", "bf16", "int8", "int4"];
/// Upper bound on elements in one pseudo-gradient (1 Gi parameters).
pub const MAX_ELEMENTS: u64 = 1 << 30;
/// Block sizes a frame may declare.
pub const BLOCK_SIZES: std::ops::RangeInclusive<u32> = 16..=65_536;
const MAGIC: u32 = 0x5357_4732; // "SWG2"
const HEADER_LIMIT: usize = 64;

/// Codec failures.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The name is not one of [`CODECS`].
    #[error("unknown codec `{0}` (known: fp32, bf16, int8, int4)")]
    Unknown(String),
    /// A setting out of range.
    #[error("codec setting `{field}`: {reason}")]
    Setting {
        /// The setting (as named in a run spec's `[codec]` section).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The frame is not ours, or is cut short.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The header declares a different size than this run's model.
    #[error("frame declares {declared} elements, the model has {expected}")]
    WrongSize {
        /// From the header.
        declared: u64,
        /// From the caller.
        expected: u64,
    },
    /// zstd failed or the body decompressed to the wrong length.
    #[error("decompression failed: {0}")]
    Decompress(String),
    /// A decoded value or scale is NaN or infinite, or an input value is.
    #[error("non-finite value")]
    NonFinite,
    /// An input value too large for a lossy codec: its rounding could reach
    /// infinity, which the receiver would reject.
    #[error("value #{0} is beyond the codec's range (|x| <= 2^126)")]
    OutOfRange(usize),
}

/// The largest magnitude the lossy codecs (bf16, int8, int4) accept.
pub const MAX_LOSSY_VALUE: f32 = 8.507_059e37; // 2^126

/// The value encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// 4 bytes per value.
    Fp32,
    /// 2 bytes per value.
    Bf16,
    /// 1 byte per value + a scale per block.
    Int8,
    /// Half a byte per value + a scale per block.
    Int4,
}

impl Kind {
    /// By name.
    pub fn parse(name: &str) -> Result<Kind, CodecError> {
        match name {
            "fp32" => Ok(Kind::Fp32),
            "bf16" => Ok(Kind::Bf16),
            "int8" => Ok(Kind::Int8),
            "int4" => Ok(Kind::Int4),
            _ => Err(CodecError::Unknown(name.to_string())),
        }
    }

    /// The name a run spec uses.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fp32 => "fp32",
            Kind::Bf16 => "bf16",
            Kind::Int8 => "int8",
            Kind::Int4 => "int4",
        }
    }

    /// Body bytes of `n` values in blocks of `block`.
    fn body_len(self, n: usize, block: usize) -> usize {
        let blocks = n.div_ceil(block);
        match self {
            Kind::Fp32 => n * 4,
            Kind::Bf16 => n * 2,
            Kind::Int8 => blocks * 4 + n,
            Kind::Int4 => blocks * 4 + n.div_ceil(2),
        }
    }
}

/// A resolved codec setting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Codec {
    /// Value encoding.
    pub kind: Kind,
    /// Values per quantisation block.
    pub block_size: u32,
    /// Fraction of values kept by top-k; 0 or 1 = dense.
    pub topk: f32,
    /// zstd level; 0 = none.
    pub zstd_level: i32,
}

impl Codec {
    /// Checks and builds a setting.
    pub fn new(name: &str, block_size: u32, topk: f32, zstd_level: i32) -> Result<Codec, CodecError> {
        let kind = Kind::parse(name)?;
        let bad = |field, reason| Err(CodecError::Setting { field, reason });
        if !BLOCK_SIZES.contains(&block_size) {
            return bad("block_size", "must be between 16 and 65536");
        }
        if !(topk.is_finite() && (0.0..=1.0).contains(&topk)) {
            return bad("topk", "must be in [0, 1] (0 = dense)");
        }
        if !(0..=19).contains(&zstd_level) {
            return bad("zstd_level", "must be between 0 and 19");
        }
        Ok(Codec { kind, block_size, topk, zstd_level })
    }

    /// Number of values top-k keeps out of `n` (n when dense): `ceil(topk *
    /// n)`, at least 1. `topk` is an f32 (0.1f32 is 0.10000000149), so the
    /// product is taken a hair low (relative 1e-7, above the f32 rounding
    /// of a decimal): 10 % of 100 keeps 10, not 11.
    pub fn kept(&self, n: usize) -> usize {
        if self.topk <= 0.0 || self.topk >= 1.0 || n == 0 {
            n
        } else {
            ((f64::from(self.topk) * n as f64 * (1.0 - 1e-7)).ceil() as usize).clamp(1, n)
        }
    }

    /// A short name for reports, e.g. `int4+top1%`.
    pub fn label(&self) -> String {
        let base = self.kind.name();
        if self.topk > 0.0 && self.topk < 1.0 {
            format!("{base}+top{}%", (f64::from(self.topk) * 1e5).round() / 1e3)
        } else {
            base.to_string()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Header {
    magic: u32,
    kind: Kind,
    count: u64,
    block_size: u32,
    /// Values present (< count with top-k).
    kept: u64,
    /// Bytes of the delta-coded index list (0 when dense).
    index_bytes: u64,
    compressed: bool,
}

/// Encodes `values` (all finite).
pub fn encode(codec: &Codec, values: &[f32]) -> Result<Vec<u8>, CodecError> {
    // One pass for both checks (infinities are above either limit).
    let limit = if codec.kind == Kind::Fp32 { f32::MAX } else { MAX_LOSSY_VALUE };
    if let Some(i) = values.iter().position(|v| v.is_nan() || v.abs() > limit) {
        return Err(if values[i].is_finite() { CodecError::OutOfRange(i) } else { CodecError::NonFinite });
    }
    let n = values.len();
    let kept = codec.kept(n);
    let mut body = Vec::new();
    let (index_bytes, selected);
    let vals: &[f32] = if kept < n {
        let idx = top_k_indices(values, kept);
        let before = body.len();
        write_deltas(&idx, &mut body);
        index_bytes = (body.len() - before) as u64;
        selected = idx.iter().map(|&i| values[i as usize]).collect::<Vec<f32>>();
        &selected
    } else {
        index_bytes = 0;
        values
    };
    encode_values(codec.kind, codec.block_size as usize, vals, &mut body);
    let compressed = codec.zstd_level > 0;
    if compressed {
        body = zstd::bulk::compress(&body, codec.zstd_level).map_err(|e| CodecError::Decompress(e.to_string()))?;
    }
    let header = Header {
        magic: MAGIC,
        kind: codec.kind,
        count: n as u64,
        block_size: codec.block_size,
        kept: kept as u64,
        index_bytes,
        compressed,
    };
    let mut out = bincode::serde::encode_to_vec(header, bincode::config::standard())
        .map_err(|_| CodecError::Malformed("header"))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame that must hold exactly `expected` elements.
pub fn decode(bytes: &[u8], expected: u64) -> Result<Vec<f32>, CodecError> {
    let cfg = bincode::config::standard().with_limit::<HEADER_LIMIT>();
    let (h, used): (Header, usize) =
        bincode::serde::decode_from_slice(bytes, cfg).map_err(|_| CodecError::Malformed("header"))?;
    if h.magic != MAGIC {
        return Err(CodecError::Malformed("magic"));
    }
    if h.count != expected || h.count > MAX_ELEMENTS {
        return Err(CodecError::WrongSize { declared: h.count, expected });
    }
    if !BLOCK_SIZES.contains(&h.block_size) {
        return Err(CodecError::Malformed("block size"));
    }
    if h.kept > h.count || (h.kept < h.count) != (h.index_bytes > 0) || h.index_bytes > 5 * h.kept {
        return Err(CodecError::Malformed("top-k counts"));
    }
    let (n, kept) = (h.count as usize, h.kept as usize);
    let raw_len = h.index_bytes as usize + h.kind.body_len(kept, h.block_size as usize);
    let body = &bytes[used..];
    let owned;
    let raw: &[u8] = if h.compressed {
        owned = zstd::bulk::decompress(body, raw_len).map_err(|e| CodecError::Decompress(e.to_string()))?;
        if owned.len() != raw_len {
            return Err(CodecError::Decompress(format!("{} bytes, expected {raw_len}", owned.len())));
        }
        &owned
    } else {
        if body.len() != raw_len {
            return Err(CodecError::Malformed("body length"));
        }
        body
    };
    let (index_raw, value_raw) = raw.split_at(h.index_bytes as usize);
    let vals = decode_values(h.kind, h.block_size as usize, kept, value_raw)?;
    if kept == n {
        return Ok(vals);
    }
    let idx = read_deltas(index_raw, kept, n)?;
    let mut out = vec![0.0f32; n];
    for (i, v) in idx.into_iter().zip(vals) {
        out[i as usize] = v;
    }
    Ok(out)
}

/// The worst-case absolute error of one value under `codec` (dense part),
/// given the absmax of its block. bf16 is relative: `|x| * 2^-8` (plus 2^-134
/// for subnormals, which bf16 holds with fewer bits). int8 and
/// int4 add an absolute term of 128 times the smallest subnormal (1.8e-43):
/// a block scale below the normal range is rounded to subnormal precision
/// (or to 0 for an absmax under ~1e-43).
pub fn error_bound(kind: Kind, block_absmax: f32, value: f32) -> f32 {
    let tiny = 128.0 * f32::from_bits(1);
    match kind {
        Kind::Fp32 => 0.0,
        // Half a bf16 subnormal step (2^-134) for values below the normal range.
        Kind::Bf16 => value.abs() * (1.0 / 256.0) + f32::from_bits(1 << 15),
        Kind::Int8 => block_absmax / 254.0 * 1.0001 + tiny,
        Kind::Int4 => block_absmax / 14.0 * 1.0001 + tiny,
    }
}

fn encode_values(kind: Kind, block: usize, v: &[f32], out: &mut Vec<u8>) {
    match kind {
        Kind::Fp32 => {
            out.reserve(v.len() * 4);
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Kind::Bf16 => {
            out.reserve(v.len() * 2);
            for x in v {
                out.extend_from_slice(&quant::to_bf16(*x).to_le_bytes());
            }
        }
        Kind::Int8 | Kind::Int4 => {
            let blocks = v.len().div_ceil(block);
            let mut scales = vec![0.0f32; blocks];
            if kind == Kind::Int8 {
                let mut c = vec![0i8; v.len()];
                quantize_int8(v, block, &mut scales, &mut c);
                write_scales(&scales, out);
                out.extend(c.iter().map(|&x| x as u8));
            } else {
                let mut c = vec![0u8; v.len().div_ceil(2)];
                quantize_int4(v, block, &mut scales, &mut c);
                write_scales(&scales, out);
                out.extend_from_slice(&c);
            }
        }
    }
}

fn write_scales(scales: &[f32], out: &mut Vec<u8>) {
    out.reserve(scales.len() * 4);
    for s in scales {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

fn decode_values(kind: Kind, block: usize, n: usize, raw: &[u8]) -> Result<Vec<f32>, CodecError> {
    let mut out = vec![0.0f32; n];
    match kind {
        Kind::Fp32 => {
            for (o, c) in out.iter_mut().zip(raw.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Kind::Bf16 => {
            for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
                *o = quant::from_bf16(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Kind::Int8 | Kind::Int4 => {
            let blocks = n.div_ceil(block);
            let (s, codes) = raw.split_at(blocks * 4);
            let scales: Vec<f32> = s.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            // With every scale in 0..=MAX / (largest |code|), every decoded
            // value is finite: no need to scan the output.
            let max_code = if kind == Kind::Int8 { 128.0 } else { 8.0 };
            if !scales.iter().all(|x| (0.0..=f32::MAX / max_code).contains(x)) {
                return Err(CodecError::NonFinite);
            }
            if kind == Kind::Int8 {
                quant::dequantize_int8_bytes(codes, block, &scales, &mut out);
            } else {
                dequantize_int4(codes, block, &scales, &mut out);
            }
            return Ok(out);
        }
    }
    if out.iter().any(|x| !x.is_finite()) {
        return Err(CodecError::NonFinite);
    }
    Ok(out)
}

/// Indices of the `k` values of largest magnitude, ascending; ties broken by
/// index, so the choice is deterministic.
fn top_k_indices(v: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    let key = |i: &u32| (std::cmp::Reverse(v[*i as usize].abs().to_bits()), *i);
    if k < idx.len() {
        idx.select_nth_unstable_by_key(k, key);
        idx.truncate(k);
    }
    idx.sort_unstable();
    idx
}

/// LEB128 varints of the gaps between sorted indices.
fn write_deltas(idx: &[u32], out: &mut Vec<u8>) {
    let mut prev = 0u32;
    for (j, &i) in idx.iter().enumerate() {
        let mut d = if j == 0 { i } else { i - prev - 1 };
        prev = i;
        loop {
            let b = (d & 0x7f) as u8;
            d >>= 7;
            if d == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
}

fn read_deltas(raw: &[u8], k: usize, n: usize) -> Result<Vec<u32>, CodecError> {
    let bad = || CodecError::Malformed("top-k indices");
    let mut idx = Vec::with_capacity(k);
    let mut pos = 0usize;
    let mut next: u64 = 0;
    for _ in 0..k {
        let mut d: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *raw.get(pos).ok_or_else(bad)?;
            pos += 1;
            d |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 35 {
                return Err(bad());
            }
        }
        let i = next + d;
        if i >= n as u64 {
            return Err(bad());
        }
        idx.push(i as u32);
        next = i + 1;
    }
    if pos != raw.len() {
        return Err(bad());
    }
    Ok(idx)
}

/// Error feedback: keeps what the codec dropped and adds it to the next
/// pseudo-gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorFeedback {
    residual: Vec<f32>,
}

impl ErrorFeedback {
    /// A zero residual for `n` values.
    pub fn new(n: usize) -> ErrorFeedback {
        ErrorFeedback { residual: vec![0.0; n] }
    }

    /// The residual carried into the next round.
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }

    /// Encodes `grad + residual`; the new residual is exactly
    /// `(grad + residual) - decode(frame)`. Returns the frame and the decoded
    /// values (what every peer will apply).
    pub fn encode(&mut self, codec: &Codec, grad: &[f32]) -> Result<(Vec<u8>, Vec<f32>), CodecError> {
        if grad.len() != self.residual.len() {
            return Err(CodecError::WrongSize { declared: grad.len() as u64, expected: self.residual.len() as u64 });
        }
        let target: Vec<f32> = grad.iter().zip(&self.residual).map(|(g, r)| g + r).collect();
        let frame = encode(codec, &target)?;
        let decoded = decode(&frame, target.len() as u64)?;
        for ((r, t), d) in self.residual.iter_mut().zip(&target).zip(&decoded) {
            *r = t - d;
        }
        Ok((frame, decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(name: &str, topk: f32, level: i32) -> Codec {
        Codec::new(name, 64, topk, level).unwrap()
    }

    #[test]
    fn fp32_round_trips_bit_exactly() {
        let v: Vec<f32> = (0..1000).map(|i| (i as f32).sin() * 1e-3).collect();
        for level in [0, 3] {
            let bytes = encode(&codec("fp32", 0.0, level), &v).unwrap();
            let back = decode(&bytes, 1000).unwrap();
            assert_eq!(
                back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn top_k_keeps_the_largest() {
        let v = vec![0.1, -5.0, 0.2, 3.0, 0.0, -0.3];
        let back = decode(&encode(&codec("fp32", 0.3, 0), &v).unwrap(), 6).unwrap();
        assert_eq!(back, vec![0.0, -5.0, 0.0, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn lying_headers_and_bombs_are_errors() {
        let v = vec![0.0f32; 1000];
        let bytes = encode(&codec("int8", 0.0, 3), &v).unwrap();
        assert!(matches!(decode(&bytes, 999), Err(CodecError::WrongSize { .. })));
        let bomb = zstd::bulk::compress(&vec![0u8; 10 << 20], 3).unwrap();
        let header = Header {
            magic: MAGIC,
            kind: Kind::Fp32,
            count: 1000,
            block_size: 64,
            kept: 1000,
            index_bytes: 0,
            compressed: true,
        };
        let mut frame = bincode::serde::encode_to_vec(header, bincode::config::standard()).unwrap();
        frame.extend_from_slice(&bomb);
        assert!(matches!(decode(&frame, 1000), Err(CodecError::Decompress(_))));
        assert!(decode(&[], 1000).is_err());
        assert!(decode(&bytes[..bytes.len() / 2], 1000).is_err());
        assert_eq!(Codec::new("nope", 64, 0.0, 0), Err(CodecError::Unknown("nope".into())));
        assert_eq!(encode(&codec("fp32", 0.0, 0), &[f32::NAN]), Err(CodecError::NonFinite));
    }

    #[test]
    fn huge_values_are_refused_by_lossy_codecs_and_the_largest_accepted_decode() {
        assert_eq!(MAX_LOSSY_VALUE, 2f32.powi(126));
        for name in ["bf16", "int8", "int4"] {
            let c = codec(name, 0.0, 0);
            assert_eq!(encode(&c, &[1.0, f32::MAX]), Err(CodecError::OutOfRange(1)), "{name}");
            let v = [MAX_LOSSY_VALUE, -MAX_LOSSY_VALUE, 1.0, 0.0];
            let dec = decode(&encode(&c, &v).unwrap(), 4).unwrap();
            assert!(dec.iter().all(|x| x.is_finite()), "{name}: {dec:?}");
        }
        let fp32 = codec("fp32", 0.0, 0);
        assert_eq!(decode(&encode(&fp32, &[f32::MAX]).unwrap(), 1).unwrap(), vec![f32::MAX]);
    }

    #[test]
    fn bf16_subnormals_stay_within_the_bound() {
        let c = codec("bf16", 0.0, 0);
        let v: Vec<f32> =
            (1..2000u32).map(|i| f32::from_bits(i * 4099 % (1 << 23)) * if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let dec = decode(&encode(&c, &v).unwrap(), v.len() as u64).unwrap();
        for (a, b) in v.iter().zip(&dec) {
            assert!((a - b).abs() <= error_bound(Kind::Bf16, 0.0, *a), "{a:e} decoded {b:e}");
        }
    }
}
