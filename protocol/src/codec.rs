//! Pseudo-gradient codecs: pure functions from `&[f32]` to bytes and back.
//!
//! Frame: a bincode [`Header`] (bounded) followed by the body, which is
//! zstd-compressed when the header says so. Decoding checks the header against
//! a hard bound and against the element count the caller expects (the run's
//! model) before it allocates or decompresses anything, and decompresses into
//! a buffer of exactly the declared size, so a lying header or a zstd bomb is
//! an error, never an abort.

use serde::{Deserialize, Serialize};

/// The codec names a run spec may use.
pub const CODECS: &[&str] = &["fp32"];
/// Upper bound on elements in one pseudo-gradient (1 Gi parameters).
pub const MAX_ELEMENTS: u64 = 1 << 30;
const MAGIC: u32 = 0x5357_4731; // "SWG1"
const HEADER_LIMIT: usize = 64;

/// Codec failures.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The name is not one of [`CODECS`].
    #[error("unknown codec `{0}`")]
    Unknown(String),
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
    /// A decoded value is NaN or infinite.
    #[error("non-finite value in frame")]
    NonFinite,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Header {
    magic: u32,
    codec: u8,
    count: u64,
    block_size: u32,
    compressed: bool,
}

/// Encodes with the named codec (`zstd_level` 0 = none).
pub fn encode(name: &str, values: &[f32], zstd_level: i32) -> Result<Vec<u8>, CodecError> {
    let codec = CODECS.iter().position(|c| *c == name).ok_or_else(|| CodecError::Unknown(name.into()))?;
    let mut body = Vec::with_capacity(values.len() * 4);
    for v in values {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let compressed = zstd_level > 0;
    if compressed {
        body = zstd::bulk::compress(&body, zstd_level).map_err(|e| CodecError::Decompress(e.to_string()))?;
    }
    let header = Header { magic: MAGIC, codec: codec as u8, count: values.len() as u64, block_size: 0, compressed };
    let mut out = bincode::serde::encode_to_vec(header, bincode::config::standard())
        .map_err(|_| CodecError::Malformed("header"))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame that must hold exactly `expected` elements.
pub fn decode(bytes: &[u8], expected: u64) -> Result<Vec<f32>, CodecError> {
    let cfg = bincode::config::standard().with_limit::<HEADER_LIMIT>();
    let (header, used): (Header, usize) =
        bincode::serde::decode_from_slice(bytes, cfg).map_err(|_| CodecError::Malformed("header"))?;
    if header.magic != MAGIC {
        return Err(CodecError::Malformed("magic"));
    }
    if header.count != expected || header.count > MAX_ELEMENTS {
        return Err(CodecError::WrongSize { declared: header.count, expected });
    }
    if usize::from(header.codec) >= CODECS.len() {
        return Err(CodecError::Malformed("codec id"));
    }
    let raw_len = (header.count as usize) * 4;
    let body = &bytes[used..];
    let raw = if header.compressed {
        let out = zstd::bulk::decompress(body, raw_len).map_err(|e| CodecError::Decompress(e.to_string()))?;
        if out.len() != raw_len {
            return Err(CodecError::Decompress(format!("{} bytes, expected {raw_len}", out.len())));
        }
        out
    } else {
        if body.len() != raw_len {
            return Err(CodecError::Malformed("body length"));
        }
        body.to_vec()
    };
    let mut values = Vec::with_capacity(header.count as usize);
    for c in raw.chunks_exact(4) {
        let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if !v.is_finite() {
            return Err(CodecError::NonFinite);
        }
        values.push(v);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp32_round_trips_bit_exactly() {
        let v: Vec<f32> = (0..1000).map(|i| (i as f32).sin() * 1e-3).collect();
        for level in [0, 3] {
            let bytes = encode("fp32", &v, level).unwrap();
            let back = decode(&bytes, 1000).unwrap();
            assert_eq!(
                back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn lying_headers_and_bombs_are_errors() {
        let v = vec![0.0f32; 1000];
        let bytes = encode("fp32", &v, 3).unwrap();
        assert!(matches!(decode(&bytes, 999), Err(CodecError::WrongSize { .. })));
        // A frame that claims 1000 elements but decompresses to far more.
        let bomb = zstd::bulk::compress(&vec![0u8; 10 << 20], 3).unwrap();
        let header = Header { magic: MAGIC, codec: 0, count: 1000, block_size: 0, compressed: true };
        let mut frame = bincode::serde::encode_to_vec(header, bincode::config::standard()).unwrap();
        frame.extend_from_slice(&bomb);
        assert!(matches!(decode(&frame, 1000), Err(CodecError::Decompress(_))));
        assert!(decode(&[], 1000).is_err());
        assert!(decode(&bytes[..bytes.len() / 2], 1000).is_err());
        assert_eq!(encode("nope", &v, 0), Err(CodecError::Unknown("nope".into())));
    }
}
