//! The command line, end to end: bad input gets clear errors and a non-zero
//! exit; `swarm ping`, repeated `--bootstrap`, the `swarm-bootstrap`
//! binary, `swarm local`, and leaving on SIGTERM do what the README says.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use swarm::RoundReport;

#[test]
fn unknown_model_lists_the_models() {
    let (ok, _, err) =
        run_swarm(&["join", "no-such-model", "--data-dir", "/nonexistent-swarm-test"], Duration::from_secs(30));
    assert!(!ok);
    assert!(err.contains("no-such-model") && err.contains("digits-mlp") && err.contains("lipsum-gpt"), "{err}");
}

#[test]
fn a_trusted_peer_that_is_no_peer_id_is_named() {
    let (ok, _, err) = run_swarm(
        &["join", "digits-mlp", "--trust", "12D3KooWnotanid", "--data-dir", "/nonexistent-swarm-test"],
        Duration::from_secs(30),
    );
    assert!(!ok);
    assert!(err.contains("--trust 12D3KooWnotanid: not a peer id"), "{err}");
}

#[test]
fn malformed_spec_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, spec, _) = run_swarm(&["spec", "digits-mlp"], Duration::from_secs(30));
    assert!(ok);
    let bad = spec.replace("inner_steps = 50", "inner_steps = 0");
    assert_ne!(bad, spec);
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let data = dir.path().join("data");
    let (ok, _, err) = run_swarm(
        &["join", "--spec", path.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!ok);
    assert!(err.contains("train.inner_steps"), "{err}");
    std::fs::write(&path, spec.replace("seed = ", "sead = ")).unwrap();
    let (ok, _, err) = run_swarm(
        &["join", "--spec", path.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!ok);
    assert!(err.contains("sead"), "{err}");
}

#[test]
fn unreachable_bootstrap_is_named_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on, and a valid peer id nobody has.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    let addr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/12D3KooWDuig5TJp483ioGE3UG9knwiQErfw6B2a9Bd5RhDf7iPS");
    let data = dir.path().join("data");
    let (ok, _, err) = run_swarm(
        &[
            "join",
            "digits-mlp",
            "--bootstrap",
            &addr,
            "--bootstrap-attempts",
            "2",
            "--listen",
            LOOPBACK,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(!ok);
    assert!(err.contains(&addr) && err.contains("2 attempts"), "{err}");
}

#[test]
fn models_lists_parameter_counts() {
    let (ok, out, _) = run_swarm(&["models"], Duration::from_secs(30));
    assert!(ok);
    let n = trainer::model_info("digits-mlp").unwrap().params.to_string();
    assert!(out.lines().any(|l| l.starts_with("digits-mlp") && l.contains(&n)), "{out}");
    assert!(out.contains("lipsum-gpt"));
}

/// A UDP port on 127.0.0.1 that nobody listens on (bound, then released).
fn dead_addr() -> String {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/12D3KooWDuig5TJp483ioGE3UG9knwiQErfw6B2a9Bd5RhDf7iPS")
}

#[test]
fn ping_reports_a_round_trip_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let (ok, out, err) = run_swarm(&["ping", &boot], Duration::from_secs(30));
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{boot} is reachable, round trip")) && out.contains(" ms"), "{out}");
    let dead = dead_addr();
    let (ok, out, err) = run_swarm(&["ping", &dead, "--timeout", "3"], Duration::from_secs(30));
    assert!(!ok, "{out}");
    assert!(err.contains(&dead), "{err}");
}

#[test]
fn the_first_reachable_of_several_bootstrap_nodes_gets_a_peer_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let data = dir.path().join("data");
    // A dead bootstrap address first, the live one second; one peer alone
    // (min_peers 1) trains one round and leaves.
    let (ok, out, err) = run_swarm(
        &[
            "join",
            "digits-mlp",
            "--min-peers",
            "1",
            "--rounds",
            "1",
            "--bootstrap",
            &dead_addr(),
            "--bootstrap",
            &boot,
            "--listen",
            LOOPBACK,
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(ok, "{err}");
    let report: RoundReport = serde_json::from_str(out.lines().next().unwrap_or_default()).expect(&err);
    assert_eq!(report.round, 1);
}

#[test]
fn swarm_local_merges_the_peers_and_fails_when_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ok");
    let args = ["local", "digits-mlp", "--peers", "2", "--rounds", "2", "--data-dir", d.to_str().unwrap()];
    let (ok, out, err) = run_swarm(&args, Duration::from_secs(120));
    assert!(ok, "{err}");
    let rounds: Vec<&str> = out.lines().filter(|l| l.starts_with("round")).collect();
    assert_eq!(rounds.len(), 2, "{out}");
    assert!(rounds.iter().all(|l| l.contains("2/2 peers agree") && l.contains("2 contributed")), "{out}");
    assert!(err.contains("done: 2 rounds") && err.contains("all peers agreed on every round"), "{err}");
    // Peer 1 cannot start (its key file is a directory): the run fails
    // with a non-zero exit and says which peer, instead of waiting.
    let d = dir.path().join("bad");
    std::fs::create_dir_all(d.join("peer-1").join("key")).unwrap();
    let args = ["local", "digits-mlp", "--peers", "2", "--rounds", "2", "--data-dir", d.to_str().unwrap()];
    let (ok, _, err) = run_swarm(&args, Duration::from_secs(120));
    assert!(!ok);
    assert!(err.contains("peer 1 failed") && err.contains("1 peers failed"), "{err}");
}

#[test]
fn a_peer_stopped_with_sigterm_announces_it_serves_a_moment_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let mut spec = protocol::RunSpec::new(
        "digits-mlp",
        protocol::spec::TrainSpec { inner_steps: 200, inner_lr: 0.002, batch_size: 32, weight_decay: 0.0 },
    );
    spec.rounds = 40;
    spec.timing.min_round_ms = 500;
    let path = dir.path().join("spec.toml");
    std::fs::write(&path, spec.to_toml()).unwrap();
    let spec_arg = path.to_str().unwrap().to_string();
    let peers: Vec<Peer> = (0..3)
        .map(|i| start_peer(&mut procs, dir.path(), &format!("peer-{i}"), &["--spec", &spec_arg, "--bootstrap", &boot]))
        .collect();
    // After round 2, peer 2 gets SIGTERM.
    let seen: Vec<RoundReport> = (0..2).filter_map(|_| next_report(&peers[2])).collect();
    assert_eq!(seen.len(), 2, "peer 2 applied two rounds");
    let pid = procs.0[3].id();
    let sent = Instant::now();
    assert!(Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().unwrap().success());
    let status = procs.0[3].wait().unwrap();
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status:?}");
    // It kept serving for the linger (a fixed 2 s sleep, so a lower bound
    // that does not depend on this machine's speed).
    assert!(took >= Duration::from_secs(2), "left after {took:?}");
    let log = std::fs::read_to_string(&peers[2].log).unwrap();
    assert!(log.contains("leaving the run") && log.contains("left the run"), "{log}");
    // The others heard it leave (a Leave message, not the 5 s silence) and
    // go on without it.
    let later: Vec<RoundReport> = (0..3).filter_map(|_| next_report(&peers[0])).collect();
    assert!(later.iter().any(|r| r.peers_left == 1), "{later:?}");
    assert!(later.last().is_some_and(|r| r.contributors == 2 && r.contributed), "{later:?}");
}

/// The next round report a peer prints (within 60 s).
fn next_report(p: &Peer) -> Option<RoundReport> {
    let end = Instant::now() + Duration::from_secs(60);
    while let Ok(l) = p.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
        if let Ok(r) = serde_json::from_str(&l) {
            return Some(r);
        }
    }
    None
}
