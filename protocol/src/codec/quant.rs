//! The quantisation kernels: straight loops over blocks that the compiler
//! vectorises (no branches in the inner loops).

/// Adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22
/// to the nearest integer (ties to even) in the default rounding mode.
const ROUND: f32 = 12_582_912.0;

/// Independent accumulators in [`block_absmax`], so that the reduction
/// vectorises (max is exact, so the order does not change the result).
const LANES: usize = 16;

/// Values of a block quantised at a time by the int4 kernel (stack buffer).
const INT4_STRIP: usize = 256;

/// The largest `|x|` of `chunk` (0 for an empty chunk). The same bits as
/// `chunk.iter().fold(0.0, |m, x| m.max(x.abs()))`: `x > m ? x : m` equals
/// `m.max(x)` for every `m >= 0` that is not NaN, NaN inputs included.
#[inline]
fn block_absmax(chunk: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut it = chunk.chunks_exact(LANES);
    for c in &mut it {
        for (m, x) in lanes.iter_mut().zip(c) {
            let a = x.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let mut m = it.remainder().iter().fold(0.0f32, |m, x| {
        let a = x.abs();
        if a > m { a } else { m }
    });
    for l in lanes {
        m = if l > m { l } else { m };
    }
    m
}

/// `1 / scale`, or 0 for an all-zero block.
#[inline]
fn inverse(scale: f32) -> f32 {
    if scale > 0.0 { 1.0 / scale } else { 0.0 }
}

/// The code of `x`, `round(x * inv)`, for a block whose scale is zero or a
/// finite normal float: then
/// `|x * inv| <= absmax * inv` rounds to at most `levels` (127 or 7), so
/// `y = x * inv + ROUND` is an integer in `ROUND - 128..=ROUND + 128`, whose
/// bits are those of `ROUND` plus the code. Integer arithmetic on the bits
/// vectorises (the saturating float-to-i8 conversion does not) and gives the
/// same code for every non-NaN `x` (NaN never reaches the kernels: the codec
/// rejects non-finite input).
#[inline(always)]
fn code_in_range(x: f32, inv: f32) -> i8 {
    (x * inv + ROUND).to_bits().wrapping_sub(ROUND.to_bits()) as i8
}

/// Whether [`code_in_range`] is exact for every value of a block of `scale`
/// (blocks of absmax below ~1.5e-36 take the f64 path).
#[inline]
fn in_range(scale: f32) -> bool {
    scale == 0.0 || (scale >= f32::MIN_POSITIVE && scale.is_finite())
}

/// Quantises `chunk` into `out` with the block's `scale`; codes lie in
/// `-levels..=levels`. A block whose scale is subnormal (absmax below
/// ~1.5e-36) divides in f64 instead: `1 / scale` would overflow f32.
#[inline]
fn codes_of(chunk: &[f32], scale: f32, levels: f64, out: &mut [i8]) {
    if in_range(scale) {
        let inv = inverse(scale);
        for (o, x) in out.iter_mut().zip(chunk) {
            *o = code_in_range(*x, inv);
        }
    } else {
        let s = f64::from(scale);
        for (o, x) in out.iter_mut().zip(chunk) {
            *o = (f64::from(*x) / s).round_ties_even().clamp(-levels, levels) as i8;
        }
    }
}

/// Block-wise absmax int8: `scales[b] = absmax / 127`, `codes[i] = round(v / scale)`.
/// `scales` holds `ceil(n / block)` entries, `codes` holds `n`.
pub fn quantize_int8(v: &[f32], block: usize, scales: &mut [f32], codes: &mut [i8]) {
    for ((chunk, out), s) in v.chunks(block).zip(codes.chunks_mut(block)).zip(scales.iter_mut()) {
        let scale = block_absmax(chunk) / 127.0;
        *s = scale;
        codes_of(chunk, scale, 127.0, out);
    }
}

/// The inverse of [`quantize_int8`].
pub fn dequantize_int8(codes: &[i8], block: usize, scales: &[f32], out: &mut [f32]) {
    dequantize_blocks(codes, block, scales, out, f32::from);
}

/// [`dequantize_int8`] straight from the frame's bytes (no i8 copy).
pub(crate) fn dequantize_int8_bytes(codes: &[u8], block: usize, scales: &[f32], out: &mut [f32]) {
    dequantize_blocks(codes, block, scales, out, |b| f32::from(b as i8));
}

#[inline(always)]
fn dequantize_blocks<C: Copy>(codes: &[C], block: usize, scales: &[f32], out: &mut [f32], value: impl Fn(C) -> f32) {
    for ((chunk, o), s) in codes.chunks(block).zip(out.chunks_mut(block)).zip(scales) {
        for (y, c) in o.iter_mut().zip(chunk) {
            *y = value(*c) * s;
        }
    }
}

#[inline(always)]
fn low(c: i8) -> u8 {
    (c as u8) & 0x0f
}

#[inline(always)]
fn high(c: i8) -> u8 {
    (c as u8) << 4
}

/// Writes the codes `q` of elements `start..start + q.len()` into the packed
/// `codes` (low nibble first). A byte whose high nibble belongs to a later
/// call is written with a zero high nibble, which that call then ORs in.
#[inline]
fn pack_int4(q: &[i8], start: usize, codes: &mut [u8]) {
    let mut q = q;
    let mut byte = start / 2;
    if start % 2 == 1 {
        let Some((first, rest)) = q.split_first() else { return };
        codes[byte] |= high(*first);
        q = rest;
        byte += 1;
    }
    let pairs = q.chunks_exact(2);
    let tail = pairs.remainder();
    let n = pairs.len();
    for (b, p) in codes[byte..byte + n].iter_mut().zip(pairs) {
        *b = low(p[0]) | high(p[1]);
    }
    if let [last] = tail {
        codes[byte + n] = low(*last);
    }
}

/// Block-wise absmax int4 in [-7, 7], two codes per byte (low nibble first).
/// `codes` holds `ceil(n / 2)` bytes.
pub fn quantize_int4(v: &[f32], block: usize, scales: &mut [f32], codes: &mut [u8]) {
    let mut q = [0i8; INT4_STRIP];
    let mut start = 0;
    for (chunk, s) in v.chunks(block).zip(scales.iter_mut()) {
        let scale = block_absmax(chunk) / 7.0;
        *s = scale;
        for strip in chunk.chunks(INT4_STRIP) {
            let q = &mut q[..strip.len()];
            codes_of(strip, scale, 7.0, q);
            pack_int4(q, start, codes);
            start += strip.len();
        }
    }
}

#[inline(always)]
fn from_low(b: u8) -> f32 {
    f32::from(((b << 4) as i8) >> 4)
}

#[inline(always)]
fn from_high(b: u8) -> f32 {
    f32::from((b as i8) >> 4)
}

/// The inverse of [`quantize_int4`].
pub fn dequantize_int4(codes: &[u8], block: usize, scales: &[f32], out: &mut [f32]) {
    let mut start = 0;
    for (o, &s) in out.chunks_mut(block).zip(scales) {
        let len = o.len();
        let mut byte = start / 2;
        let o = if start % 2 == 1 && !o.is_empty() {
            let (first, rest) = o.split_at_mut(1);
            first[0] = from_high(codes[byte]) * s;
            byte += 1;
            rest
        } else {
            o
        };
        let mut pairs = o.chunks_exact_mut(2);
        let n = pairs.len();
        for (p, &b) in (&mut pairs).zip(&codes[byte..byte + n]) {
            p[0] = from_low(b) * s;
            p[1] = from_high(b) * s;
        }
        if let [last] = pairs.into_remainder() {
            *last = from_low(codes[byte + n]) * s;
        }
        start += len;
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
        // Exact ties (the dropped 16 bits are 0x8000) go to the even
        // neighbour: down when the kept part is even, up when it is odd.
        let even = f32::from_bits(0x3F80_8000); // 1 + 2^-8: kept 0x3F80 (even)
        assert_eq!(to_bf16(even), 0x3F80);
        let odd = f32::from_bits(0x3F81_8000); // kept 0x3F81 (odd)
        assert_eq!(to_bf16(odd), 0x3F82);
        assert_eq!(to_bf16(-even), 0xBF80);
        assert_eq!(to_bf16(-odd), 0xBF82);
        // Just above and below a tie round to the nearer side.
        assert_eq!(to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(to_bf16(f32::from_bits(0x3F81_7FFF)), 0x3F81);
    }
}
