//! Criterion benches of the pseudo-gradient codecs on 10M parameters (40 MB
//! of f32), next to a memcpy of the same buffer.
//!
//! cargo bench --bench codecs

#[path = "common/mod.rs"]
mod common;

use common::{N, codecs, pseudo_gradient};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use protocol::codec::{self, dequantize_int4, dequantize_int8, quantize_int4, quantize_int8};
use std::hint::black_box;
use std::time::Duration;

const BLOCK: usize = 128;

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes((N * 4) as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn memcpy(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, v: &[f32]) {
    let mut dst = vec![0.0f32; v.len()];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(v));
            black_box(&mut dst);
        })
    });
}

fn bench_codecs(c: &mut Criterion) {
    let v = pseudo_gradient(N, 1);
    let mut g = group(c, "encode");
    memcpy(&mut g, &v);
    for codec in codecs() {
        g.bench_function(codec.label(), |b| b.iter(|| codec::encode(&codec, black_box(&v)).expect("encode")));
    }
    g.finish();

    let mut g = group(c, "decode");
    memcpy(&mut g, &v);
    for codec in codecs() {
        let frame = codec::encode(&codec, &v).expect("encode");
        g.bench_function(codec.label(), |b| b.iter(|| codec::decode(black_box(&frame), N as u64).expect("decode")));
    }
    g.finish();
}

/// The raw kernels, no zstd, no framing, preallocated buffers.
fn bench_kernels(c: &mut Criterion) {
    let v = pseudo_gradient(N, 1);
    let blocks = N.div_ceil(BLOCK);
    let mut scales = vec![0.0f32; blocks];
    let mut codes = vec![0i8; N];
    let mut nibbles = vec![0u8; N.div_ceil(2)];
    let mut out = vec![0.0f32; N];
    let mut g = group(c, "kernels");
    memcpy(&mut g, &v);
    g.bench_function("int8 quantise+dequantise", |b| {
        b.iter(|| {
            quantize_int8(black_box(&v), BLOCK, &mut scales, &mut codes);
            dequantize_int8(&codes, BLOCK, &scales, &mut out);
            black_box(&mut out);
        })
    });
    g.bench_function("int8 quantise", |b| {
        b.iter(|| {
            quantize_int8(black_box(&v), BLOCK, &mut scales, &mut codes);
            black_box(&mut codes);
        })
    });
    g.bench_function("int8 dequantise", |b| {
        b.iter(|| {
            dequantize_int8(black_box(&codes), BLOCK, &scales, &mut out);
            black_box(&mut out);
        })
    });
    g.bench_function("int4 quantise+dequantise", |b| {
        b.iter(|| {
            quantize_int4(black_box(&v), BLOCK, &mut scales, &mut nibbles);
            dequantize_int4(&nibbles, BLOCK, &scales, &mut out);
            black_box(&mut out);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench_kernels, bench_codecs
}
criterion_main!(benches);
