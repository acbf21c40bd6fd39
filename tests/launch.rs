//! Task submission through the DHT, with real processes: `swarm launch
//! --bootstrap` announces a run and serves its spec; `swarm runs` lists it
//! from the bootstrap node; peers that know only the id (`swarm join --run`)
//! fetch the spec, check its hash and train; the launcher may leave once a
//! peer has joined (the peers serve the spec too).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use swarm::RoundReport;

#[test]
fn a_launched_run_is_listed_and_joined_by_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let mut s = protocol::RunSpec::new(
        "digits-mlp",
        protocol::spec::TrainSpec { inner_steps: 50, inner_lr: 0.002, batch_size: 32, weight_decay: 0.0 },
    );
    s.rounds = 2;
    s.min_peers = 2;
    s.seed = 77;
    s.timing.min_round_ms = 500;
    s.timing.aggregator_timeout_ms = 1_000;
    let run = s.run_id().to_hex();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, s.to_toml()).unwrap();

    // The launcher: prints the id, then serves until killed.
    let mut launcher = Command::new(swarm_bin())
        .args(["launch", spec.to_str().unwrap(), "--bootstrap", &boot, "--listen", LOOPBACK])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(launcher.stdout.take().unwrap());
    let err = BufReader::new(launcher.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || out.lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || err.lines().map_while(Result::ok).for_each(|l| drop(tx2.send(l))));
    procs.0.push(launcher);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("announced")) {
        seen.push(rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("launcher: {seen:?}")));
    }
    assert!(seen.iter().any(|l| l == &format!("run {run}")), "{seen:?}");

    let (ok, listed, e) = run_swarm(&["runs", "--bootstrap", &boot], Duration::from_secs(60));
    assert!(ok, "{listed}{e}");
    assert!(listed.contains(&run) && listed.contains("digits-mlp"), "{listed}");

    let join =
        |name: &str, procs: &mut Procs| start_peer(procs, dir.path(), name, &["--run", &run, "--bootstrap", &boot]);
    let a = join("peer-a", &mut procs);
    // Once the first peer has the spec, the launcher leaves: the second
    // peer gets the spec from the first.
    let log_a = dir.path().join("peer-a.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log_a).unwrap_or_default().contains("joined run") {
        assert!(std::time::Instant::now() < deadline, "peer a did not join");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut launcher = procs.0.remove(1);
    let _ = launcher.kill();
    let _ = launcher.wait();
    let b = join("peer-b", &mut procs);
    let reports: Vec<Vec<RoundReport>> = [&a, &b]
        .iter()
        .map(|p| collect(p, Duration::from_secs(120)).iter().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .collect();
    for (name, r) in ["a", "b"].iter().zip(&reports) {
        let log = std::fs::read_to_string(dir.path().join(format!("peer-{name}.log"))).unwrap_or_default();
        assert!(log.contains("checked its hash"), "peer {name}:\n{log}");
        assert_eq!(r.len(), 2, "peer {name} did not train both rounds:\n{log}");
    }
    assert_eq!(reports[0][1].state_hash, reports[1][1].state_hash);

    // An id nobody provides is a clear error.
    let (ok, _, err) = run_swarm(
        &[
            "join",
            "--run",
            &"ab".repeat(32),
            "--bootstrap",
            &boot,
            "--data-dir",
            dir.path().join("x").to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(!ok && err.contains("no provider"), "{err}");
}
