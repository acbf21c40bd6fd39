//! A reader for GGUF v2/v3 files (llama.cpp's model format): metadata, tensor directory, and
//! dequantisation of the tensor types SmolLM2's file uses (F32, F16, Q8_0, Q4_0, Q4_1).
//!
//! Written here rather than taken from a crate: the GGUF crates on the registry are young
//! single-author parsers or parts of whole inference engines, and the format is small. Every
//! count and length in the file is bounded before anything is allocated, and every tensor
//! must lie inside the file.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::TrainerError;

/// Most metadata entries or tensors accepted.
const MAX_ENTRIES: u64 = 1 << 16;
/// Longest string accepted (the chat template is a few hundred bytes).
const MAX_STRING: u64 = 1 << 20;
/// Longest array accepted (the vocabulary has 49 152 entries).
const MAX_ARRAY: u64 = 1 << 22;
/// Most tensor dimensions.
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U(u64),
    /// Any signed integer type.
    I(i64),
    /// f32 or f64.
    F(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array.
    Arr(Vec<Value>),
}

impl Value {
    /// As an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U(v) => Some(v),
            Value::I(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// Tensor element types (ggml's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// Blocks of 32: f16 scale, 32 x 4-bit.
    Q4_0,
    /// Blocks of 32: f16 scale, f16 minimum, 32 x 4-bit.
    Q4_1,
    /// Blocks of 32: f16 scale, 32 x i8.
    Q8_0,
}

impl Dtype {
    fn from_ggml(t: u32) -> Option<Self> {
        Some(match t {
            0 => Dtype::F32,
            1 => Dtype::F16,
            2 => Dtype::Q4_0,
            3 => Dtype::Q4_1,
            8 => Dtype::Q8_0,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block)
    fn block(self) -> (u64, u64) {
        match self {
            Dtype::F32 => (1, 4),
            Dtype::F16 => (1, 2),
            Dtype::Q4_0 => (32, 18),
            Dtype::Q4_1 => (32, 20),
            Dtype::Q8_0 => (32, 34),
        }
    }
}

/// One tensor of the directory.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Dimensions, innermost first (ggml order: `dims[0]` is contiguous).
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: Dtype,
    /// Absolute byte range in the file.
    start: usize,
    end: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed GGUF file held in memory.
#[derive(Debug)]
pub struct Gguf {
    /// Metadata by key.
    pub meta: BTreeMap<String, Value>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    bytes: Vec<u8>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length overflows".to_string())?;
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("truncated file")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn count(&mut self, max: u64, what: &str) -> Result<u64, String> {
        let n = self.u64()?;
        if n > max { Err(format!("{what} count {n} exceeds {max}")) } else { Ok(n) }
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.count(MAX_STRING, "string length")?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }
    fn value(&mut self, t: u32, depth: u32) -> Result<Value, String> {
        let le = |b: &[u8]| {
            let mut a = [0u8; 8];
            a[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(a)
        };
        Ok(match t {
            0 | 2 | 4 | 10 => Value::U(le(self.take(1 << (t / 2).min(3))?)),
            1 => Value::I(i64::from(self.take(1)?[0] as i8)),
            3 => Value::I(i64::from(i16::from_le_bytes(self.take(2)?.try_into().expect("2")))),
            5 => Value::I(i64::from(i32::from_le_bytes(self.take(4)?.try_into().expect("4")))),
            11 => Value::I(i64::from_le_bytes(self.take(8)?.try_into().expect("8"))),
            6 => Value::F(f64::from(f32::from_le_bytes(self.take(4)?.try_into().expect("4")))),
            12 => Value::F(f64::from_le_bytes(self.take(8)?.try_into().expect("8"))),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::Str(self.string()?),
            9 if depth == 0 => {
                let et = self.u32()?;
                let n = self.count(MAX_ARRAY, "array")?;
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(et, depth + 1)?);
                }
                Value::Arr(v)
            }
            _ => return Err(format!("unsupported metadata type {t}")),
        })
    }
}

impl Gguf {
    /// Reads and parses `path`.
    pub fn open(path: &Path) -> Result<Self, TrainerError> {
        let bytes = std::fs::read(path).map_err(|source| TrainerError::Io { path: path.to_path_buf(), source })?;
        Self::parse(bytes).map_err(|reason| TrainerError::Data(format!("{}: {reason}", path.display())))
    }

    /// Parses a whole file.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        let mut c = Cursor { bytes: &bytes, at: 0 };
        if c.take(4)? != b"GGUF" {
            return Err("not a GGUF file".into());
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} (2 and 3 are read)"));
        }
        let n_tensors = c.count(MAX_ENTRIES, "tensor")?;
        let n_meta = c.count(MAX_ENTRIES, "metadata")?;
        let mut meta = BTreeMap::new();
        for _ in 0..n_meta {
            let key = c.string()?;
            let t = c.u32()?;
            meta.insert(key, c.value(t, 0)?);
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let nd = c.u32()?;
            if nd == 0 || nd > MAX_DIMS {
                return Err(format!("tensor {name}: {nd} dimensions"));
            }
            let dims = (0..nd).map(|_| c.u64()).collect::<Result<Vec<_>, _>>()?;
            let t = c.u32()?;
            let dtype = Dtype::from_ggml(t).ok_or_else(|| format!("tensor {name}: unsupported type {t}"))?;
            let offset = c.u64()?;
            infos.push((name, dims, dtype, offset));
        }
        let align = meta.get("general.alignment").and_then(Value::as_u64).unwrap_or(32).max(1) as usize;
        let data = c.at.div_ceil(align) * align;
        let mut tensors = BTreeMap::new();
        for (name, dims, dtype, offset) in infos {
            let elems =
                dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or(format!("tensor {name}: too big"))?;
            let (per, size) = dtype.block();
            if elems % per != 0 {
                return Err(format!("tensor {name}: {elems} elements is not whole blocks of {per}"));
            }
            let len = elems / per * size;
            let start = (data as u64).checked_add(offset);
            let end = start.and_then(|s| s.checked_add(len)).filter(|&e| e <= bytes.len() as u64);
            let (Some(start), Some(end)) = (start, end) else {
                return Err(format!("tensor {name} lies outside the file"));
            };
            tensors.insert(name, TensorInfo { dims, dtype, start: start as usize, end: end as usize });
        }
        Ok(Self { meta, tensors, bytes })
    }

    /// A metadata value that must be there.
    pub fn get(&self, key: &str) -> Result<&Value, TrainerError> {
        self.meta.get(key).ok_or_else(|| TrainerError::Data(format!("GGUF: no `{key}`")))
    }

    /// An unsigned integer metadata value.
    pub fn get_u64(&self, key: &str) -> Result<u64, TrainerError> {
        self.get(key)?.as_u64().ok_or_else(|| TrainerError::Data(format!("GGUF: `{key}` is not an integer")))
    }

    /// A float metadata value.
    pub fn get_f64(&self, key: &str) -> Result<f64, TrainerError> {
        match self.get(key)? {
            Value::F(v) => Ok(*v),
            _ => Err(TrainerError::Data(format!("GGUF: `{key}` is not a float"))),
        }
    }

    /// A string-array metadata value.
    pub fn get_strings(&self, key: &str) -> Result<Vec<&str>, TrainerError> {
        match self.get(key)? {
            Value::Arr(v) => v
                .iter()
                .map(|x| match x {
                    Value::Str(s) => Ok(s.as_str()),
                    _ => Err(TrainerError::Data(format!("GGUF: `{key}` holds a non-string"))),
                })
                .collect(),
            _ => Err(TrainerError::Data(format!("GGUF: `{key}` is not an array"))),
        }
    }

    /// The tensor `name` dequantised to f32, with its dims (innermost first); checks the dims.
    pub fn tensor(&self, name: &str, dims: &[u64]) -> Result<Vec<f32>, TrainerError> {
        let info = self.tensors.get(name).ok_or_else(|| TrainerError::Data(format!("GGUF: no tensor `{name}`")))?;
        if info.dims != dims {
            return Err(TrainerError::Data(format!("GGUF: tensor `{name}` is {:?}, expected {dims:?}", info.dims)));
        }
        Ok(dequantize(info.dtype, &self.bytes[info.start..info.end]))
    }
}

fn f16(b: &[u8]) -> f32 {
    let h = u16::from_le_bytes([b[0], b[1]]);
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// Dequantises whole blocks (the length was checked when the file was parsed).
fn dequantize(dtype: Dtype, b: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(f16).collect(),
        Dtype::Q8_0 => b
            .chunks_exact(34)
            .flat_map(|blk| {
                let d = f16(&blk[..2]);
                blk[2..].iter().map(move |&q| d * f32::from(q as i8))
            })
            .collect(),
        Dtype::Q4_0 | Dtype::Q4_1 => {
            let (head, min) = if dtype == Dtype::Q4_1 { (4, true) } else { (2, false) };
            let size = head + 16;
            let mut out = Vec::with_capacity(b.len() / size * 32);
            for blk in b.chunks_exact(size) {
                let d = f16(&blk[..2]);
                let (m, off) = if min { (f16(&blk[2..4]), 0.0) } else { (0.0, -8.0) };
                let qs = &blk[head..];
                // Element j is the low nibble of byte j, element j + 16 the high nibble.
                out.extend(qs.iter().map(|&q| d * (f32::from(q & 0x0f) + off) + m));
                out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) + off) + m));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tensors: u64, meta: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(tensors.to_le_bytes());
        b.extend(meta.to_le_bytes());
        b
    }

    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    #[test]
    fn q4_1_and_q8_0_blocks_dequantise_like_ggml() {
        // Q4_1: d = 0.5, m = 1.0; byte j = (j+1) << 4 | j: low nibbles 0..16, high 1..17.
        let mut blk = vec![0x00, 0x38, 0x00, 0x3c];
        blk.extend((0u8..16).map(|j| ((j + 1) & 0xf) << 4 | j));
        let v = dequantize(Dtype::Q4_1, &blk);
        assert_eq!(v.len(), 32);
        assert_eq!(v[3], 0.5 * 3.0 + 1.0);
        assert_eq!(v[16 + 3], 0.5 * 4.0 + 1.0);
        // Q8_0: d = 2.0, q = -3.
        let mut blk = vec![0x00, 0x40];
        blk.extend([(-3i8) as u8; 32]);
        assert!(dequantize(Dtype::Q8_0, &blk).iter().all(|&x| x == -6.0));
        assert_eq!(f16(&[0x00, 0xbc]), -1.0);
    }

    #[test]
    fn a_file_whose_tensor_lies_outside_it_is_refused() {
        let mut b = header(1, 1);
        string(&mut b, "general.alignment");
        b.extend(4u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        string(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
        while !b.len().is_multiple_of(8) {
            b.push(0);
        }
        let mut ok = b.clone();
        ok.extend([0u8; 16]);
        let g = Gguf::parse(ok).unwrap();
        assert_eq!(g.tensor("w", &[4]).unwrap(), vec![0.0; 4]);
        assert!(g.tensor("w", &[2, 2]).is_err());
        b.extend([0u8; 15]);
        assert!(Gguf::parse(b).unwrap_err().contains("outside"));
        let mut huge = header(u64::MAX, 0);
        huge.extend([0u8; 8]);
        assert!(Gguf::parse(huge).unwrap_err().contains("exceeds"));
    }
}
