//! Prints the compression tables of the README (and writes them to
//! `target/compression_table.md`):
//!
//! * Part A: codec throughput on one core (10M parameters, 40 MB of f32),
//!   best of a few repetitions, next to a memcpy measured in the same run.
//! * Part B: DiLoCo with 4 in-process peers on `lipsum-gpt` through the node's
//!   own code path (`swarm::worker::Model::train` / `apply`) for several
//!   codecs, against the peers training alone, with the bytes each peer sends
//!   and what data-parallel training would send for the same steps.
//!
//! cargo bench --bench compression_table -- [--rounds R] [--inner-steps H]
//!     [--peers N] [--jobs J] [--configs fp32,int8,...] [--only a|b]
//!     [--salt S] [--reps K] [--aggregate mean|trimmed-mean|centered-clip]
//!
//! `ROUNDS`, `H`, `PEERS`, `JOBS`, `CONFIGS` and `SALT` in the environment
//! work too. `--salt` changes the batches every peer draws (a fixed run id
//! per salt), to see how much of a difference between rows is noise.
//! Config names: `alone` (each peer trains alone for R x H steps),
//! `alone-diloco` (one peer through the same DiLoCo rounds), `fp32`, `bf16`,
//! `int8`, `int4`, `int4-noef` (int4 with the residual dropped every round),
//! `int4+topP` / `int8+topP` (keep P percent), `-nozstd` suffixes...

#[path = "common/mod.rs"]
mod common;

use anyhow::{Context, Result, bail};
use protocol::codec::{self, Codec, ErrorFeedback, dequantize_int4, dequantize_int8, quantize_int4, quantize_int8};
use protocol::message::Signature;
use protocol::spec::{CodecSpec, RunSpec, TrainSpec};
use protocol::{Contribution, Hash, Keypair, Manifest, ManifestEntry, PeerId};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use swarm::worker::{Model, batch_seed};
use trainer::{TrainConfig, Trainer};

const MODEL: &str = "lipsum-gpt";
const DEFAULT_CONFIGS: &str = "alone,alone-diloco,fp32,int8,int4,int4-noef,int4+top10";

struct Args {
    rounds: u64,
    inner_steps: Option<u32>,
    peers: usize,
    jobs: usize,
    configs: String,
    only: Option<String>,
    reps: usize,
    salt: u64,
    /// Aggregation rule of the DiLoCo rows.
    aggregate: String,
}

fn parse_args() -> Result<Args> {
    let env = |k: &str| std::env::var(k).ok();
    let mut a = Args {
        rounds: env("ROUNDS").map(|s| s.parse()).transpose()?.unwrap_or(10),
        inner_steps: env("H").map(|s| s.parse()).transpose()?,
        peers: env("PEERS").map(|s| s.parse()).transpose()?.unwrap_or(4),
        jobs: env("JOBS").map(|s| s.parse()).transpose()?.unwrap_or(1),
        configs: env("CONFIGS").unwrap_or_else(|| DEFAULT_CONFIGS.to_string()),
        only: None,
        reps: 5,
        salt: env("SALT").map(|s| s.parse()).transpose()?.unwrap_or(0),
        aggregate: env("AGGREGATE").unwrap_or_else(|| "mean".to_string()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {} // cargo bench passes this
            "--rounds" => a.rounds = value()?.parse()?,
            "--inner-steps" | "-H" => a.inner_steps = Some(value()?.parse()?),
            "--peers" => a.peers = value()?.parse()?,
            "--jobs" => a.jobs = value()?.parse()?,
            "--configs" => a.configs = value()?,
            "--only" => a.only = Some(value()?),
            "--reps" => a.reps = value()?.parse()?,
            "--salt" => a.salt = value()?.parse()?,
            "--aggregate" => a.aggregate = value()?,
            other => bail!("unknown argument `{other}`"),
        }
    }
    if a.rounds == 0 || a.peers < 2 || a.jobs == 0 || a.reps == 0 {
        bail!("need --rounds >= 1, --peers >= 2, --jobs >= 1, --reps >= 1");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut md = String::new();
    if args.only.as_deref() != Some("b") {
        md += &part_a(args.reps);
        eprintln!();
    }
    if args.only.as_deref() != Some("a") {
        md += &part_b(&args)?;
    }
    println!("{md}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("compression_table.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("written to {}", path.display());
    Ok(())
}

// ---------------------------------------------------------------- Part A --

/// The shortest of `reps` runs of `f`.
fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn gbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e9
}

fn part_a(reps: usize) -> String {
    let n = common::N;
    let bytes = n * 4;
    let v = common::pseudo_gradient(n, 1);
    let mut dst = vec![0.0f32; n];
    let mut memcpy = || {
        best(reps + 2, || {
            dst.copy_from_slice(black_box(&v));
            black_box(&mut dst);
        })
    };
    let copy_before = memcpy();
    eprintln!("part A: memcpy {:.2} GB/s", gbps(bytes, copy_before));

    let mut codecs = common::codecs();
    codecs.push(Codec::new("int8", 128, 0.0, 0).expect("codec"));
    codecs.push(Codec::new("int4", 128, 0.0, 0).expect("codec"));
    let mut rows = Vec::new();
    for c in &codecs {
        let frame = codec::encode(c, &v).expect("encode");
        let enc = best(reps, || codec::encode(c, &v).expect("encode"));
        let dec = best(reps, || codec::decode(&frame, n as u64).expect("decode"));
        let name = if c.zstd_level > 0 { format!("{} + zstd {}", c.label(), c.zstd_level) } else { c.label() };
        eprintln!("part A: {name}: {} bytes, encode {:?}, decode {:?}", frame.len(), enc, dec);
        rows.push((name, frame.len(), enc, dec));
    }

    let block = 128;
    let mut scales = vec![0.0f32; n.div_ceil(block)];
    let mut codes = vec![0i8; n];
    let mut nibbles = vec![0u8; n.div_ceil(2)];
    let mut out = vec![0.0f32; n];
    let q8 = best(reps, || quantize_int8(&v, block, &mut scales, &mut codes));
    let d8 = best(reps, || dequantize_int8(&codes, block, &scales, &mut out));
    let qd8 = best(reps, || {
        quantize_int8(&v, block, &mut scales, &mut codes);
        dequantize_int8(&codes, block, &scales, &mut out);
    });
    let q4 = best(reps, || quantize_int4(&v, block, &mut scales, &mut nibbles));
    let d4 = best(reps, || dequantize_int4(&nibbles, block, &scales, &mut out));
    let qd4 = best(reps, || {
        quantize_int4(&v, block, &mut scales, &mut nibbles);
        dequantize_int4(&nibbles, block, &scales, &mut out);
    });
    let copy_after = memcpy();
    // The faster of the two memcpy runs (before and after): the ratios are
    // then conservative.
    let copy = copy_before.min(copy_after);
    let mc = gbps(bytes, copy);
    eprintln!("part A: memcpy again {:.2} GB/s", gbps(bytes, copy_after));

    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Codec throughput (one core, {} M parameters = {} MB of f32)\n",
        n / 1_000_000,
        bytes / 1_000_000
    );
    let _ = writeln!(
        s,
        "memcpy (`copy_from_slice` into a preallocated buffer): **{mc:.2} GB/s**. Block size 128. Best of {reps} runs.\n"
    );
    let _ = writeln!(
        s,
        "| codec | encoded bytes | vs fp32 | encode GB/s | encode / memcpy | decode GB/s | decode / memcpy |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, size, enc, dec) in &rows {
        let (e, d) = (gbps(bytes, *enc), gbps(bytes, *dec));
        let _ = writeln!(
            s,
            "| {name} | {size} | {:.1}x | {e:.2} | {:.3} | {d:.2} | {:.3} |",
            bytes as f64 / *size as f64,
            e / mc,
            d / mc
        );
    }
    let _ = writeln!(s, "\nRaw kernels (no framing, no zstd, preallocated buffers; GB/s of the f32 side):\n");
    let _ = writeln!(s, "| kernel | GB/s | / memcpy |");
    let _ = writeln!(s, "|---|---:|---:|");
    for (name, t) in [
        ("memcpy", copy),
        ("int8 quantise", q8),
        ("int8 dequantise", d8),
        ("**int8 quantise + dequantise**", qd8),
        ("int4 quantise", q4),
        ("int4 dequantise", d4),
        ("int4 quantise + dequantise", qd4),
    ] {
        let g = gbps(bytes, t);
        let _ = writeln!(s, "| {name} | {g:.2} | {:.3} |", g / mc);
    }
    s.push('\n');
    s
}

// ---------------------------------------------------------------- Part B --

/// One row of Part B.
#[derive(Clone, Debug)]
struct Setting {
    name: String,
    /// None: the peers train alone.
    codec: Option<Codec>,
    /// Keep the error-feedback residual across rounds.
    feedback: bool,
    /// One peer alone, through the same DiLoCo rounds (fp32, nothing sent).
    solo: bool,
}

fn setting(name: &str) -> Result<Setting> {
    if name == "alone" {
        return Ok(Setting { name: name.into(), codec: None, feedback: false, solo: false });
    }
    if name == "alone-diloco" {
        let codec = Codec::new("fp32", 128, 0.0, 3)?;
        return Ok(Setting { name: name.into(), codec: Some(codec), feedback: true, solo: true });
    }
    let (base, feedback) = match name.strip_suffix("-noef") {
        Some(b) => (b, false),
        None => (name, true),
    };
    let (base, zstd) = match base.strip_suffix("-nozstd") {
        Some(b) => (b, 0),
        None => (base, 3),
    };
    let (kind, topk) = match base.split_once("+top") {
        Some((k, p)) => (k, p.parse::<f32>().with_context(|| format!("top-k percent in `{name}`"))? / 100.0),
        None => (base, 0.0),
    };
    let codec = Codec::new(kind, 128, topk, zstd).with_context(|| format!("config `{name}`"))?;
    Ok(Setting { name: name.into(), codec: Some(codec), feedback, solo: false })
}

/// What a row measured.
#[derive(Clone, Debug)]
struct Outcome {
    loss: f32,
    accuracy: Option<f32>,
    /// Mean encoded payload per peer per round.
    payload: f64,
    secs: f64,
}

struct Peer {
    id: PeerId,
    feedback: Mutex<ErrorFeedback>,
}

/// Runs `f` on every peer, `jobs` at a time; results in peer order.
fn each_peer<T: Send>(peers: &[Peer], jobs: usize, f: impl Fn(&Peer) -> Result<T> + Sync) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(peers.len());
    for group in peers.chunks(jobs) {
        let results: Vec<Result<T>> = std::thread::scope(|s| {
            let handles: Vec<_> = group.iter().map(|p| s.spawn(|| f(p))).collect();
            handles.into_iter().map(|h| h.join().expect("peer thread panicked")).collect()
        });
        for r in results {
            out.push(r?);
        }
    }
    Ok(out)
}

fn part_b(args: &Args) -> Result<String> {
    let settings: Vec<Setting> = args.configs.split(',').map(|s| setting(s.trim())).collect::<Result<_>>()?;
    let mut cfg: TrainConfig = trainer::default_train_config(MODEL);
    if let Some(h) = args.inner_steps {
        cfg.inner_steps = h;
    }
    let train = TrainSpec {
        inner_steps: cfg.inner_steps,
        inner_lr: cfg.lr,
        batch_size: cfg.batch_size as u32,
        weight_decay: cfg.weight_decay,
    };
    let mut spec = RunSpec::new(MODEL, train);
    spec.min_peers = args.peers as u32;
    spec.rounds = args.rounds;
    // One run id (so the same batches) for every row: only the codec differs.
    // Fixed here rather than the spec's hash, so that the figures do not move
    // when an unrelated spec field is added; `--salt` draws other batches.
    let run = Hash::of(format!("swarm compression_table {MODEL} {}", args.salt).as_bytes());
    let mut ids: Vec<PeerId> = (0..args.peers as u64).map(|i| Keypair::from_seed(i).peer_id()).collect();
    ids.sort();
    let params = Trainer::new(MODEL)?.num_params();
    eprintln!(
        "part B: {MODEL} ({params} parameters), {} peers, {} rounds of H = {} (lr {}, batch {}), outer lr {} momentum {} nesterov {}, salt {}",
        args.peers,
        args.rounds,
        cfg.inner_steps,
        cfg.lr,
        cfg.batch_size,
        spec.outer.lr,
        spec.outer.momentum,
        spec.outer.nesterov,
        args.salt
    );

    let mut results: Vec<(Setting, Outcome)> = Vec::new();
    for s in &settings {
        let started = Instant::now();
        let peers: Vec<Peer> =
            ids.iter().map(|&id| Peer { id, feedback: Mutex::new(ErrorFeedback::new(params)) }).collect();
        let outcome = match &s.codec {
            None => alone(&peers, &spec, &cfg, run, args)?,
            Some(codec) if s.solo => diloco(&peers[..1], &spec, codec, s, run, args)?,
            Some(codec) => diloco(&peers, &spec, codec, s, run, args)?,
        };
        let outcome = Outcome { secs: started.elapsed().as_secs_f64(), ..outcome };
        eprintln!("part B: {}: final loss {:.4} ({:.0} s)", s.name, outcome.loss, outcome.secs);
        results.push((s.clone(), outcome));
    }
    Ok(table_b(args, &cfg, params, &results))
}

/// Each peer trains alone for R x H steps (one AdamW run), from the same
/// initial parameters; the mean of their held-out losses.
fn alone(peers: &[Peer], spec: &RunSpec, cfg: &TrainConfig, run: Hash, args: &Args) -> Result<Outcome> {
    let t = Trainer::new(MODEL)?;
    let init = t.init_params(spec.seed);
    let mut long = cfg.clone();
    long.inner_steps = cfg.inner_steps * args.rounds as u32;
    let h = cfg.inner_steps;
    let evals = each_peer(peers, args.jobs, |p| {
        let short = p.id.short();
        let out = t.inner_loop(&init, &long, batch_seed(&run, 0, &p.id), &mut |step, loss| {
            if step % h == 0 {
                eprintln!("  alone  peer {short} round {:>3}: train loss {loss:.4}", step / h);
            }
        })?;
        Ok(t.evaluate(&out.params)?)
    })?;
    let k = evals.len() as f32;
    let accuracy = evals.iter().map(|e| e.accuracy).sum::<Option<f32>>().map(|a| a / k);
    Ok(Outcome { loss: evals.iter().map(|e| e.loss).sum::<f32>() / k, accuracy, payload: 0.0, secs: 0.0 })
}

/// DiLoCo rounds through the node's code path.
fn diloco(peers: &[Peer], spec: &RunSpec, codec: &Codec, setting: &Setting, run: Hash, args: &Args) -> Result<Outcome> {
    let mut spec = spec.clone();
    spec.aggregate = args.aggregate.clone();
    spec.codec = CodecSpec {
        name: codec.kind.name().to_string(),
        block_size: codec.block_size,
        zstd_level: codec.zstd_level,
        topk: f64::from(codec.topk),
    };
    let model = Model::new(&spec)?;
    let mut state = model.genesis();
    let n = state.params.len();
    let mut sent = 0usize;
    let mut last = None;
    for round in 1..=args.rounds {
        let global = state.params.clone();
        let trained = each_peer(peers, args.jobs, |p| {
            if !setting.feedback {
                *p.feedback.lock().expect("feedback") = ErrorFeedback::new(n);
            }
            let seed = batch_seed(&run, round, &p.id);
            let mut feedback = p.feedback.lock().expect("feedback");
            Ok(model.train(&mut feedback, &global, round, seed, &mut |_, _| {})?)
        })?;
        // Peers are sorted by id, so this is manifest order.
        let entries: Vec<ManifestEntry> = peers
            .iter()
            .zip(&trained)
            .map(|(p, t)| {
                // Model::apply reads only the peer and the sample count.
                let h = Hash::of(&t.blob);
                let contribution = Contribution {
                    hash: h,
                    samples: t.samples,
                    base_state: h,
                    raw: t.raw,
                    residual: 0.0,
                    chain: h,
                    payee: None,
                    attest: None,
                };
                ManifestEntry { peer: p.id, contribution, signature: Signature([0; 64]) }
            })
            .collect();
        let manifest = Manifest {
            state: state.hash(),
            entries,
            exclusions: vec![],
            excluded: vec![],
            checks: vec![],
            ledger: None,
        };
        let blobs: Vec<Arc<Vec<u8>>> = trained.iter().map(|t| Arc::new(t.blob.clone())).collect();
        let bytes: usize = blobs.iter().map(|b| b.len()).sum();
        sent += bytes;
        let stepped = model.apply(&mut state, &manifest, &blobs)?;
        if !stepped.rejected.is_empty() {
            bail!("round {round}: {} blobs rejected", stepped.rejected.len());
        }
        let eval = stepped.eval.context("evaluation failed")?;
        let train_loss = trained.iter().map(|t| t.train_loss).sum::<f32>() / trained.len() as f32;
        eprintln!(
            "  {:<12} round {round:>3}: held-out loss {:.4}, train loss {train_loss:.4}, payload {:.1} KB/peer",
            setting.name,
            eval.loss,
            bytes as f64 / peers.len() as f64 / 1e3
        );
        last = Some(eval);
    }
    let eval = last.context("no rounds")?;
    Ok(Outcome {
        loss: eval.loss,
        accuracy: eval.accuracy,
        payload: sent as f64 / (args.rounds as f64 * peers.len() as f64),
        secs: 0.0,
    })
}

fn table_b(args: &Args, cfg: &TrainConfig, params: usize, results: &[(Setting, Outcome)]) -> String {
    let n = args.peers as f64;
    let h = f64::from(cfg.inner_steps);
    let dp = h * 2.0 * (n - 1.0) / n * 4.0 * params as f64;
    let fp32 = results.iter().find(|(s, _)| s.name == "fp32").map(|(_, o)| o.loss);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### DiLoCo on `{MODEL}` ({params} parameters), {} peers, R = {} rounds of H = {} inner steps{}\n",
        args.peers,
        args.rounds,
        cfg.inner_steps,
        if args.salt == 0 { String::new() } else { format!(", batch draw {}", args.salt) }
    );
    let _ = writeln!(
        s,
        "| setting | final held-out loss | accuracy | vs fp32 DiLoCo | payload / peer / round | sent / peer / round | data-parallel / peer / round | DP / DiLoCo | time |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (st, o) in results {
        let vs = fp32.map(|f| format!("{:+.2}%", (o.loss - f) / f * 100.0)).unwrap_or_else(|| "-".into());
        let acc = o.accuracy.map(|a| format!("{a:.3}")).unwrap_or_else(|| "-".into());
        let sent = (n - 1.0) * o.payload;
        let (payload, sent_s, ratio) = if st.codec.is_none() || st.solo {
            ("0".to_string(), "0".to_string(), "-".to_string())
        } else {
            (human(o.payload), human(sent), format!("{:.0}x", dp / sent))
        };
        let name = match &st.codec {
            None => "alone (no communication)".to_string(),
            Some(_) if st.solo => "one peer alone, in DiLoCo rounds (fp32)".to_string(),
            Some(c) => {
                let zstd = if c.zstd_level > 0 { " + zstd" } else { "" };
                let ef = if st.feedback || c.kind == codec::Kind::Fp32 { "" } else { ", no error feedback" };
                format!("DiLoCo {}{zstd}{ef}", c.label())
            }
        };
        let _ = writeln!(
            s,
            "| {name} | {:.4} | {acc} | {vs} | {payload} | {sent_s} | {} | {ratio} | {:.0} s |",
            o.loss,
            human(dp),
            o.secs
        );
    }
    let _ = writeln!(
        s,
        "\nSent / peer / round assumes full-mesh distribution: each peer sends its payload to the {} others, \
         (n-1) x payload (mean over rounds and peers). Data-parallel: a ring all-reduce of fp32 gradients every \
         inner step, H x 2(n-1)/n x 4 x params bytes per peer. Alone: each peer runs R x H AdamW steps (one \
         optimizer, no outer step) from the same initial parameters; the loss is the mean of the {} peers. \
         One peer alone in DiLoCo rounds: the first peer's rounds (fresh AdamW every H steps, Nesterov outer \
         step on its own pseudo-gradient). All rows draw the same batches (one run id), so rows from separate \
         invocations with the same R and H are comparable. Block size 128, zstd level 3, error feedback on \
         unless said otherwise.",
        args.peers - 1,
        args.peers
    );
    s
}

fn human(bytes: f64) -> String {
    if bytes >= 1e6 { format!("{:.2} MB", bytes / 1e6) } else { format!("{:.1} KB", bytes / 1e3) }
}
