//! Property tests of the pseudo-gradient codecs: documented error bounds,
//! bit-exact fp32, exact error feedback, robust decoding, and the quantisation
//! kernels against a plain scalar reference.
//!
//! `cargo test --release -p protocol --test codec_props` (a few seconds).
//!
//! Blocks with a subnormal scale (absmax below ~1.5e-36) are covered by
//! `tiny_blocks_stay_within_the_bound` and the reference comparisons.

use proptest::prelude::*;
use protocol::codec::{
    Codec, CodecError, ErrorFeedback, Kind, decode, dequantize_int4, dequantize_int8, encode, error_bound,
    quantize_int4, quantize_int8,
};

/// Gradient-like vectors: uniform in (-1, 1) times 2^e (e in -60..=40), with
/// some exact zeros and the occasional spike.
fn values(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    let elem = prop_oneof![
        12 => -1.0f32..1.0,
        2 => Just(0.0f32),
        1 => -100.0f32..100.0,
    ];
    (-60i32..=40, prop::collection::vec(elem, 1..=max_len))
        .prop_map(|(e, v)| v.into_iter().map(|x| x * 2f32.powi(e)).collect())
}

/// Values whose blocks have a subnormal scale or a tiny absmax (e in
/// -150..=-100), where the kernels take their saturating path.
fn tiny_values() -> impl Strategy<Value = Vec<f32>> {
    (-150i32..=-100, prop::collection::vec(-1.0f32..1.0, 1..=1000))
        .prop_map(|(e, v)| v.into_iter().map(|x| x * 2f32.powi(e)).collect())
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Fp32), Just(Kind::Bf16), Just(Kind::Int8), Just(Kind::Int4)]
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Fp32 => "fp32",
        Kind::Bf16 => "bf16",
        Kind::Int8 => "int8",
        Kind::Int4 => "int4",
    }
}

/// Any codec: block 16..=512, zstd off / on, dense or top-k (a fraction in
/// thousandths, as a person would write it: 0.001 to 0.999).
fn codecs() -> impl Strategy<Value = Codec> {
    let topk = prop_oneof![2 => Just(0.0f32), 1 => Just(1.0f32), 3 => (1u32..=999).prop_map(|p| p as f32 / 1000.0)];
    (kinds(), 16u32..=512, prop_oneof![Just(0), Just(1), Just(3)], topk)
        .prop_map(|(k, b, z, t)| Codec::new(name(k), b, t, z).expect("valid codec"))
}

/// The indices top-k keeps, by the documented rule: largest magnitude first,
/// ties by lower index; returned ascending.
fn kept_indices(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].abs().total_cmp(&v[a].abs()).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// How many values top-k keeps, by the documented rule `ceil(topk * n)`
/// (at least one), computed here in integers from the thousandths the
/// strategy drew, not by the code under test.
fn expected_kept(codec: &Codec, n: usize) -> usize {
    if codec.topk <= 0.0 || codec.topk >= 1.0 || n == 0 {
        return n;
    }
    let permille = (codec.topk * 1000.0).round() as usize;
    assert_eq!(codec.topk, permille as f32 / 1000.0, "the strategy draws thousandths");
    (permille * n).div_ceil(1000).max(1)
}

/// Whatever a decode of untrusted bytes returns: an error, or exactly
/// `expected` finite values (what the receiver relies on).
fn check_decoded(r: Result<Vec<f32>, CodecError>, expected: u64) -> Result<(), TestCaseError> {
    if let Ok(v) = r {
        prop_assert_eq!(v.len() as u64, expected, "decoded the wrong number of values");
        prop_assert!(v.iter().all(|x| x.is_finite()), "decoded a non-finite value");
    }
    Ok(())
}

/// Checks `dec` against `v` under `codec`'s documented guarantees.
fn check_bounds(codec: &Codec, v: &[f32], dec: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(dec.len(), v.len());
    let kept = kept_indices(v, expected_kept(codec, v.len()));
    let mut is_kept = vec![false; v.len()];
    for &i in &kept {
        is_kept[i] = true;
    }
    // Kept values are quantised in blocks of the kept sequence.
    let block = codec.block_size as usize;
    for chunk in kept.chunks(block) {
        let absmax = chunk.iter().fold(0.0f32, |m, &i| m.max(v[i].abs()));
        for &i in chunk {
            let err = (dec[i] - v[i]).abs();
            let bound = error_bound(codec.kind, absmax, v[i]);
            prop_assert!(
                err <= bound,
                "{}: value {} (index {}) decoded {}, error {} > bound {} (block absmax {})",
                codec.label(),
                v[i],
                i,
                dec[i],
                err,
                bound,
                absmax
            );
        }
    }
    if kept.len() < v.len() {
        let smallest_kept = kept.iter().map(|&i| v[i].abs()).fold(f32::INFINITY, f32::min);
        for (i, (&x, &d)) in v.iter().zip(dec).enumerate() {
            if !is_kept[i] {
                prop_assert_eq!(d.to_bits(), 0.0f32.to_bits(), "dropped index {} decoded {}", i, d);
                prop_assert!(x.abs() <= smallest_kept, "dropped {} larger than kept {}", x, smallest_kept);
            }
        }
    }
    if codec.kind == Kind::Fp32 {
        for &i in &kept {
            prop_assert_eq!(dec[i].to_bits(), v[i].to_bits());
        }
    }
    Ok(())
}

/// The quantisation kernels as first written: one scalar loop per block.
mod reference {
    const ROUND: f32 = 12_582_912.0;

    fn absmax(chunk: &[f32]) -> f32 {
        let mut m = 0.0f32;
        for x in chunk {
            m = m.max(x.abs());
        }
        m
    }

    pub fn quantize(v: &[f32], block: usize, levels: f32) -> (Vec<f32>, Vec<i8>) {
        let mut scales = Vec::new();
        let mut codes = Vec::new();
        for chunk in v.chunks(block) {
            let scale = absmax(chunk) / levels;
            scales.push(scale);
            if scale == 0.0 || scale >= f32::MIN_POSITIVE {
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                for x in chunk {
                    codes.push(((x * inv + ROUND) - ROUND) as i8);
                }
            } else {
                // A subnormal scale: divide exactly, clamp to the levels.
                let l = f64::from(levels);
                for x in chunk {
                    codes.push((f64::from(*x) / f64::from(scale)).round_ties_even().clamp(-l, l) as i8);
                }
            }
        }
        (scales, codes)
    }

    pub fn pack_int4(q: &[i8]) -> Vec<u8> {
        q.chunks(2).map(|p| ((p[0] as u8) & 0x0f) | p.get(1).map(|h| (*h as u8) << 4).unwrap_or(0)).collect()
    }

    pub fn dequantize(q: &[i8], block: usize, scales: &[f32]) -> Vec<f32> {
        q.iter().enumerate().map(|(i, &c)| f32::from(c) * scales[i / block]).collect()
    }

    pub fn unpack_int4(codes: &[u8], n: usize) -> Vec<i8> {
        (0..n)
            .map(|i| {
                let b = codes[i / 2];
                if i % 2 == 0 { ((b << 4) as i8) >> 4 } else { (b as i8) >> 4 }
            })
            .collect()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every codec decodes within its documented bound; top-k drops only
    /// values no larger than the smallest kept one, and they decode to 0.
    #[test]
    fn round_trips_within_bound(codec in codecs(), v in values(1500)) {
        let frame = encode(&codec, &v).unwrap();
        let dec = decode(&frame, v.len() as u64).unwrap();
        check_bounds(&codec, &v, &dec)?;
    }

    /// fp32 is bit-exact on every finite value (subnormals, -0.0 included).
    #[test]
    fn fp32_is_bit_exact(
        raw in prop::collection::vec(any::<u32>(), 0..=1000),
        block in 16u32..=512,
        zstd in prop_oneof![Just(0), Just(3)],
    ) {
        let v: Vec<f32> = raw.into_iter().map(f32::from_bits).filter(|x| x.is_finite()).collect();
        let codec = Codec::new("fp32", block, 0.0, zstd).unwrap();
        let dec = decode(&encode(&codec, &v).unwrap(), v.len() as u64).unwrap();
        prop_assert_eq!(bits(&dec), bits(&v));
    }

    /// Over several rounds, the residual is exactly `(g + old) - decoded` and
    /// the decoded values are exactly what the frame decodes to.
    #[test]
    fn error_feedback_carries_exactly_the_residual(
        codec in codecs(),
        grads in (1usize..=800).prop_flat_map(|n| {
            prop::collection::vec(prop::collection::vec(-1.0f32..1.0, n), 1..=4)
        }),
    ) {
        let n = grads[0].len();
        let mut ef = ErrorFeedback::new(n);
        for g in &grads {
            let old = ef.residual().to_vec();
            let (frame, decoded) = ef.encode(&codec, g).unwrap();
            prop_assert_eq!(bits(&decoded), bits(&decode(&frame, n as u64).unwrap()));
            let expected: Vec<f32> = g.iter().zip(&old).zip(&decoded).map(|((g, r), d)| (g + r) - d).collect();
            prop_assert_eq!(bits(ef.residual()), bits(&expected));
            let target: Vec<f32> = g.iter().zip(&old).map(|(g, r)| g + r).collect();
            check_bounds(&codec, &target, &decoded)?;
        }
    }

    /// Random bytes never panic the decoder.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), expected in 0u64..3000) {
        check_decoded(decode(&bytes, expected), expected)?;
    }

    /// Neither do mutations, truncations and extensions of valid frames; and a
    /// valid frame checked against another element count is an error.
    #[test]
    fn damaged_frames_never_panic(
        codec in codecs(),
        v in values(600),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 1..16),
        off in 1u64..100,
    ) {
        let frame = encode(&codec, &v).unwrap();
        let n = v.len() as u64;
        prop_assert!(
            matches!(decode(&frame, n + off), Err(CodecError::WrongSize { .. })),
            "wrong count accepted"
        );
        prop_assert!(matches!(decode(&frame, n - 1), Err(CodecError::WrongSize { .. })), "short count accepted");
        let mut bad = frame.clone();
        for (i, x) in &flips {
            let i = i.index(bad.len());
            bad[i] ^= x | 1;
        }
        check_decoded(decode(&bad, n), n)?;
        let cut = cut.index(frame.len());
        prop_assert!(decode(&frame[..cut], n).is_err(), "truncated frame accepted");
        let mut long = frame.clone();
        long.extend_from_slice(&tail);
        check_decoded(decode(&long, n), n)?;
        if codec.zstd_level == 0 {
            prop_assert!(decode(&long, n).is_err(), "frame with trailing bytes accepted");
        }
    }

    /// The int8 kernels give bit-identical results to the scalar reference.
    #[test]
    fn int8_kernels_match_reference(v in prop_oneof![3 => values(3000), 1 => tiny_values()], block in 16usize..=600) {
        let (scales_ref, codes_ref) = reference::quantize(&v, block, 127.0);
        let mut scales = vec![0.0f32; v.len().div_ceil(block)];
        let mut codes = vec![0i8; v.len()];
        quantize_int8(&v, block, &mut scales, &mut codes);
        prop_assert_eq!(bits(&scales), bits(&scales_ref));
        prop_assert_eq!(&codes, &codes_ref);
        let mut out = vec![0.0f32; v.len()];
        dequantize_int8(&codes, block, &scales, &mut out);
        prop_assert_eq!(bits(&out), bits(&reference::dequantize(&codes_ref, block, &scales_ref)));
    }

    /// The int4 kernels give bit-identical results to the scalar reference.
    #[test]
    fn int4_kernels_match_reference(v in prop_oneof![3 => values(3000), 1 => tiny_values()], block in 16usize..=600) {
        let (scales_ref, q_ref) = reference::quantize(&v, block, 7.0);
        let packed_ref = reference::pack_int4(&q_ref);
        let mut scales = vec![0.0f32; v.len().div_ceil(block)];
        let mut codes = vec![0u8; v.len().div_ceil(2)];
        quantize_int4(&v, block, &mut scales, &mut codes);
        prop_assert_eq!(bits(&scales), bits(&scales_ref));
        prop_assert_eq!(&codes, &packed_ref);
        let mut out = vec![0.0f32; v.len()];
        dequantize_int4(&codes, block, &scales, &mut out);
        let unpacked = reference::unpack_int4(&packed_ref, v.len());
        prop_assert_eq!(bits(&out), bits(&reference::dequantize(&unpacked, block, &scales_ref)));
    }
}

/// The kernels agree with the reference on the awkward finite inputs too
/// (subnormal blocks, f32::MAX, a block of one value).
#[test]
fn kernels_match_reference_on_edge_cases() {
    let cases: Vec<Vec<f32>> = vec![
        vec![1e-40, -5e-41, 2e-41, 0.0],
        vec![3e-45, 0.0, -3e-45],
        vec![1e-36, -3e-37, 5e-37, 1e-37],
        vec![1.5e-36, -1.49e-36, 7e-37],
        vec![f32::MAX, -1.0, f32::MIN, 0.5],
        vec![0.0; 37],
        vec![-0.0; 5],
        vec![1.0],
        (0..1000).map(|i| ((i * 7919) % 1013) as f32 - 506.0).collect(),
    ];
    for v in cases {
        for block in [16usize, 17, 64, 128] {
            for (levels, int4) in [(127.0, false), (7.0, true)] {
                let (s_ref, q_ref) = reference::quantize(&v, block, levels);
                let mut s = vec![0.0f32; v.len().div_ceil(block)];
                let mut out = vec![0.0f32; v.len()];
                if int4 {
                    let mut c = vec![0u8; v.len().div_ceil(2)];
                    quantize_int4(&v, block, &mut s, &mut c);
                    assert_eq!(c, reference::pack_int4(&q_ref), "{v:?}");
                    dequantize_int4(&c, block, &s, &mut out);
                    let u = reference::unpack_int4(&c, v.len());
                    assert_eq!(bits(&out), bits(&reference::dequantize(&u, block, &s_ref)));
                } else {
                    let mut c = vec![0i8; v.len()];
                    quantize_int8(&v, block, &mut s, &mut c);
                    assert_eq!(c, q_ref, "{v:?}");
                    dequantize_int8(&c, block, &s, &mut out);
                    assert_eq!(bits(&out), bits(&reference::dequantize(&q_ref, block, &s_ref)));
                }
                assert_eq!(bits(&s), bits(&s_ref));
            }
        }
    }
}

/// Blocks so small that `1 / scale` overflows f32 (absmax below ~3.7e-37)
/// or whose scale rounds to 0 still decode within the bound.
#[test]
fn tiny_blocks_stay_within_the_bound() {
    let cases: [&[f32]; 4] = [
        &[1e-40, -5e-41, 2e-41, 0.0],
        &[3e-45, 0.0, -3e-45],
        &[1e-36, -3e-37, 5e-37, 1e-37],
        &[1.4e-36, -1.3e-36, 1e-38, -2e-39],
    ];
    for v in cases {
        let absmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for name in ["int8", "int4"] {
            let codec = Codec::new(name, 16, 0.0, 0).unwrap();
            let dec = decode(&encode(&codec, v).unwrap(), v.len() as u64).unwrap();
            for (a, b) in v.iter().zip(&dec) {
                assert!((a - b).abs() <= error_bound(codec.kind, absmax, *a), "{name}: {a:e} decoded {b:e}");
            }
        }
    }
}

proptest! {
    /// Random blocks with subnormal scales round-trip within the bound.
    #[test]
    fn tiny_values_round_trip_within_bound(v in tiny_values(), int4 in any::<bool>(), block in 16u32..=256) {
        let codec = Codec::new(if int4 { "int4" } else { "int8" }, block, 0.0, 0).unwrap();
        let dec = decode(&encode(&codec, &v).unwrap(), v.len() as u64).unwrap();
        check_bounds(&codec, &v, &dec)?;
    }
}
