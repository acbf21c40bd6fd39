//! Bad input at the command line: clear errors, non-zero exit.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn unknown_model_lists_the_models() {
    let (ok, _, err) =
        run_swarm(&["join", "no-such-model", "--data-dir", "/nonexistent-swarm-test"], Duration::from_secs(30));
    assert!(!ok);
    assert!(err.contains("no-such-model") && err.contains("digits-mlp") && err.contains("lipsum-gpt"), "{err}");
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
