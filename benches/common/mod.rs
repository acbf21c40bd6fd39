//! Shared by the benches: the pseudo-gradient-like input and the codecs.

use protocol::codec::Codec;
use trainer::rng::Rng;

/// Parameters in the throughput benches (40 MB of f32).
pub const N: usize = 10_000_000;

/// `n` pseudo-gradient-like values from a seeded RNG: roughly normal (sum of
/// four uniforms), standard deviation ~1e-3, with the scale varying by
/// "tensor" (runs of 4096 values) between 0.1x and 10x.
pub fn pseudo_gradient(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let mut scale = 1e-3f32;
    for i in 0..n {
        if i % 4096 == 0 {
            scale = 1e-3 * 10f32.powf(rng.uniform_sym(1.0));
        }
        let s: f32 = (0..4).map(|_| rng.uniform_sym(1.0)).sum();
        out.push(s * scale);
    }
    out
}

/// The codecs compared: the spec's default block size (128) and zstd level (3).
pub fn codecs() -> Vec<Codec> {
    let c = |name: &str, topk: f32| Codec::new(name, 128, topk, 3).expect("valid codec");
    vec![c("fp32", 0.0), c("bf16", 0.0), c("int8", 0.0), c("int4", 0.0), c("int4", 0.01)]
}
