//! The `swarm-bootstrap` binary: prints the address peers pass to
//! `--bootstrap`, and its peer count as peers come and go.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn prints_its_address_and_peer_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm-bootstrap"))
        .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--key"])
        .arg(dir.path().join("key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let addr = line.strip_prefix("bootstrap: listening on ").unwrap_or_else(|| panic!("{line}")).to_string();
    // A ping connects: the count goes to 1.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rtt = rt.block_on(swarm::net::ping(&addr, Duration::from_secs(10)));
    assert!(rtt.is_ok(), "{rtt:?}");
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(10)) {
        let done = l == "bootstrap: 1 peers connected";
        lines.push(l);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.iter().any(|l| l == "bootstrap: 1 peers connected"), "{lines:?}");
}
