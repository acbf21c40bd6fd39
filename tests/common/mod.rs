//! Helpers for tests that run the real `swarm` binary as separate processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const LOOPBACK: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

/// The `swarm` binary under test: the one cargo built, or `$SWARM_BIN`
/// (to run these tests against another build, or on another machine).
pub fn swarm_bin() -> String {
    std::env::var("SWARM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_swarm").to_string())
}

/// Kills every child when dropped, so a failing test leaves no process.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `swarm bootstrap` on an ephemeral loopback port; returns its address.
pub fn start_bootstrap(procs: &mut Procs, dir: &Path) -> String {
    let mut child = Command::new(swarm_bin())
        .args(["bootstrap", "--listen", LOOPBACK, "--key"])
        .arg(dir.join("bootstrap.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bootstrap");
    let out = child.stdout.take().unwrap();
    procs.0.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("bootstrap: listening on ") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("bootstrap printed its address")
}

/// A running `swarm join` whose stdout lines are collected.
pub struct Peer {
    pub lines: mpsc::Receiver<String>,
    pub log: std::path::PathBuf,
}

pub fn start_peer(procs: &mut Procs, dir: &Path, name: &str, args: &[&str]) -> Peer {
    start_peer_env(procs, dir, name, args, &[])
}

/// [`start_peer`] with environment variables set for the process.
pub fn start_peer_env(procs: &mut Procs, dir: &Path, name: &str, args: &[&str], env: &[(&str, &Path)]) -> Peer {
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new(swarm_bin())
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .arg("join")
        .args(args)
        .args(["--listen", LOOPBACK, "--json", "--data-dir"])
        .arg(dir.join(name))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start peer");
    let out = child.stdout.take().unwrap();
    procs.0.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Peer { lines: rx, log }
}

/// Collects lines until the peer's stdout closes or `timeout` passes.
pub fn collect(peer: &Peer, timeout: Duration) -> Vec<String> {
    let end = Instant::now() + timeout;
    let mut v = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match peer.lines.recv_timeout(left) {
            Ok(l) => v.push(l),
            Err(_) => return v,
        }
    }
}

/// Runs the `swarm` binary to completion and returns (success, stdout, stderr).
/// Both pipes are drained while it runs (a child that fills a pipe nobody
/// reads blocks for ever), and a run past `timeout` is killed and its output
/// shown.
pub fn run_swarm(args: &[&str], timeout: Duration) -> (bool, String, String) {
    let mut child =
        Command::new(swarm_bin()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run swarm");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let end = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), out.join().unwrap(), err.join().unwrap());
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            // Its own children may still hold the pipes: wait a little, no more.
            let give_up = Instant::now() + Duration::from_secs(5);
            while !(out.is_finished() && err.is_finished()) && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(50));
            }
            let text = |h: std::thread::JoinHandle<String>| {
                if h.is_finished() { h.join().unwrap() } else { "(still held open by a child process)".into() }
            };
            let (out, err) = (text(out), text(err));
            panic!("swarm {args:?} did not finish within {timeout:?}\nstdout:\n{out}\nstderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `swarm serve-blob` (a generated blob of `bytes`, the same for
/// every provider of `seed`, corrupted if `lie`) on 127.0.0.1; returns where
/// it serves. The process is the last of `procs`.
pub fn start_blob_provider(procs: &mut Procs, bytes: usize, seed: u64, lie: bool) -> swarm::dataplane::serve::Serving {
    let mut cmd = Command::new(swarm_bin());
    cmd.args(["serve-blob", "--bytes", &bytes.to_string(), "--seed", &seed.to_string()]);
    if lie {
        cmd.arg("--lie");
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start serve-blob");
    let out = child.stdout.take().unwrap();
    procs.0.push(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("serve-blob printed where it serves");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve-blob's line {line:?}: {e}"))
}
