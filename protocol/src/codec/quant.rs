//! The quantisation kernels: straight loops over blocks that the compiler
//! vectorises (no branches in the inner loops).

/// Adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22
/// to the nearest integer (ties to even) in the default rounding mode.
const ROUND: f32 = 12_582_912.0;

#[inline]
fn block_absmax(chunk: &[f32]) -> f32 {
    chunk.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Block-wise absmax int8: `scales[b] = absmax / 127`, `codes[i] = round(v / scale)`.
/// `scales` holds `ceil(n / block)` entries, `codes` holds `n`.
pub fn quantize_int8(v: &[f32], block: usize, scales: &mut [f32], codes: &mut [i8]) {
    for ((chunk, out), s) in v.chunks(block).zip(codes.chunks_mut(block)).zip(scales.iter_mut()) {
        let scale = block_absmax(chunk) / 127.0;
        *s = scale;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (o, x) in out.iter_mut().zip(chunk) {
            *o = ((x * inv + ROUND) - ROUND) as i8;
        }
    }
}

/// The inverse of [`quantize_int8`].
pub fn dequantize_int8(codes: &[i8], block: usize, scales: &[f32], out: &mut [f32]) {
    for ((chunk, o), s) in codes.chunks(block).zip(out.chunks_mut(block)).zip(scales) {
        for (y, c) in o.iter_mut().zip(chunk) {
            *y = f32::from(*c) * s;
        }
    }
}

/// Block-wise absmax int4 in [-7, 7], two codes per byte (low nibble first).
/// `codes` holds `ceil(n / 2)` bytes.
pub fn quantize_int4(v: &[f32], block: usize, scales: &mut [f32], codes: &mut [u8]) {
    let mut q = vec![0i8; v.len()];
    for ((chunk, out), s) in v.chunks(block).zip(q.chunks_mut(block)).zip(scales.iter_mut()) {
        let scale = block_absmax(chunk) / 7.0;
        *s = scale;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (o, x) in out.iter_mut().zip(chunk) {
            *o = ((x * inv + ROUND) - ROUND) as i8;
        }
    }
    for (b, pair) in codes.iter_mut().zip(q.chunks(2)) {
        let lo = (pair[0] as u8) & 0x0f;
        let hi = pair.get(1).map(|h| (*h as u8) << 4).unwrap_or(0);
        *b = lo | hi;
    }
}

/// The inverse of [`quantize_int4`].
pub fn dequantize_int4(codes: &[u8], block: usize, scales: &[f32], out: &mut [f32]) {
    for (i, y) in out.iter_mut().enumerate() {
        let b = codes[i / 2];
        let c = if i % 2 == 0 { ((b << 4) as i8) >> 4 } else { (b as i8) >> 4 };
        *y = f32::from(c) * scales[i / block];
    }
}

/// f32 to bf16, rounded to nearest even (truncated where rounding would
/// overflow to infinity).
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    if from_bf16(rounded as u16).is_finite() { rounded as u16 } else { (bits >> 16) as u16 }
}

/// bf16 to f32 (exact).
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_packs_signs() {
        let v = [1.0, -1.0, 0.5, -0.5, 0.0];
        let mut s = [0.0; 1];
        let mut c = [0u8; 3];
        quantize_int4(&v, 16, &mut s, &mut c);
        let mut out = [0.0; 5];
        dequantize_int4(&c, 16, &s, &mut out);
        for (a, b) in v.iter().zip(out) {
            assert!((a - b).abs() <= 1.0 / 14.0 + 1e-6, "{a} {b}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
        assert_eq!(to_bf16(f32::MAX), (f32::MAX.to_bits() >> 16) as u16);
        let x = 1.0 + 1.0 / 256.0 + 1.0 / 512.0;
        assert!((from_bf16(to_bf16(x)) - x).abs() <= x / 256.0);
    }
}
