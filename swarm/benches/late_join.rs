//! Late-join sync on loopback, with real processes: a bootstrap node and two
//! peers train; after round `--after` a third peer starts with an empty data
//! dir. Measured from its process start: when it has loaded the swarm's
//! state (`synced to the state` on its stderr), when it first applies a
//! round it contributed to, and how many state bytes it received.
//!
//! `cargo bench -p swarm --bench late_join -- [--model lipsum-gpt] [--after 3] [--runs 3]`

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{LOOPBACK, Procs, start_bootstrap, start_peer, swarm_bin};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use swarm::RoundReport;

struct Args {
    model: String,
    after: u64,
    runs: usize,
    inner_steps: u32,
}

fn args() -> Args {
    let mut a = Args { model: "lipsum-gpt".into(), after: 3, runs: 3, inner_steps: 20 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--model" => a.model = next,
            "--after" => a.after = next.parse().expect("--after N"),
            "--runs" => a.runs = next.parse().expect("--runs N"),
            "--inner-steps" => a.inner_steps = next.parse().expect("--inner-steps N"),
            _ => {
                i += 1; // cargo bench passes --bench; ignore what is not ours
                continue;
            }
        }
        i += 2;
    }
    a
}

struct Sample {
    synced: Duration,
    contributed: Duration,
    state_bytes: u64,
    received: u64,
    params: usize,
}

fn one_run(a: &Args, dir: &Path) -> Sample {
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir);
    let mut spec = protocol::RunSpec::new(
        &a.model,
        protocol::spec::TrainSpec { inner_steps: a.inner_steps, inner_lr: 0.001, batch_size: 16, weight_decay: 0.0 },
    );
    spec.rounds = a.after + 6;
    spec.min_peers = 2;
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, spec.to_toml()).unwrap();
    let spec_arg = spec_path.to_str().unwrap().to_string();
    let first = start_peer(&mut procs, dir, "peer-0", &["--spec", &spec_arg, "--bootstrap", &boot]);
    let _second = start_peer(&mut procs, dir, "peer-1", &["--spec", &spec_arg, "--bootstrap", &boot]);
    let end = Instant::now() + Duration::from_secs(300);
    loop {
        let line = first.lines.recv_timeout(end.saturating_duration_since(Instant::now())).expect("peer-0 reports");
        if serde_json::from_str::<RoundReport>(&line).is_ok_and(|r| r.round >= a.after) {
            break;
        }
    }
    // The joiner: stdout and stderr read line by line, time-stamped.
    let t0 = Instant::now();
    let mut child = Command::new(swarm_bin())
        .args(["join", "--spec", &spec_arg, "--bootstrap", &boot, "--listen", LOOPBACK, "--json", "--data-dir"])
        .arg(dir.join("joiner"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the joiner");
    let (tx, rx) = mpsc::channel::<(bool, String, Instant)>();
    for (is_out, stream) in [
        (true, Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>),
        (false, Box::new(child.stderr.take().unwrap())),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send((is_out, l, Instant::now()));
            }
        });
    }
    procs.0.push(child);
    let (mut synced, mut contributed, mut state_bytes, mut received, mut params) = (None, None, 0, 0, 0);
    while contributed.is_none() {
        let Ok((is_out, line, at)) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) else {
            panic!("the joiner neither synced nor contributed in time (see {})", dir.display());
        };
        if !is_out && line.contains("synced to the state") && synced.is_none() {
            synced = Some(at - t0);
        }
        if let Ok(r) = serde_json::from_str::<RoundReport>(&line) {
            state_bytes += r.traffic.state.received;
            received += r.bytes_received;
            params = r.params;
            if r.contributed {
                contributed = Some(at - t0);
            }
        }
    }
    Sample {
        synced: synced.expect("synced before contributing"),
        contributed: contributed.unwrap(),
        state_bytes,
        received,
        params,
    }
}

fn main() {
    let a = args();
    println!(
        "late join, {} (H={}), joiner starts after round {}, {} runs, loopback QUIC",
        a.model, a.inner_steps, a.after, a.runs
    );
    println!(
        "| run | params | state bytes received | all bytes received | start -> state loaded | start -> first contributed round applied |"
    );
    println!("|---|---|---|---|---|---|");
    let mut synced = Vec::new();
    for run in 1..=a.runs {
        let dir = tempfile::tempdir().unwrap();
        let s = one_run(&a, dir.path());
        println!(
            "| {run} | {} | {} | {} | {:.2} s | {:.2} s |",
            s.params,
            s.state_bytes,
            s.received,
            s.synced.as_secs_f64(),
            s.contributed.as_secs_f64()
        );
        synced.push(s.synced);
    }
    synced.sort();
    println!("median start -> state loaded: {:.2} s", synced[synced.len() / 2].as_secs_f64());
}
