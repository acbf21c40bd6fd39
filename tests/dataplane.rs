//! The data plane (iroh-blobs) with real processes on 127.0.0.1.
//!
//! 1. A joiner fetches a 128 MiB blob (a state of 16 M parameters with its
//!    outer momentum) from three `swarm serve-blob` providers, one of which
//!    lies: the bytes are right, the liar is named, the honest providers
//!    share the ranges, and the joiner serves the blob on to the next.
//! 2. A brown-gpt swarm (21 M parameters: a state of 169 MB, inner states
//!    of 254 MB) where a peer serves corrupted bytes: a late joiner syncs
//!    the state through the data plane and ends on the swarm's state.
//! 3. A swarm run with the data plane on for a small model
//!    (`--data-plane-min-bytes 0`): a peer serving corrupted bytes is caught
//!    on the data plane by the honest peers, a late joiner (that trusts
//!    one honest peer by name, `--trust`) syncs the state through it, and
//!    everyone ends on the same state.

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use swarm::RoundReport;
use swarm::dataplane::serve::{Serving, blob};
use swarm::dataplane::{DataPlane, FetchError};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn secret(name: &str) -> [u8; 32] {
    *blake3::hash(name.as_bytes()).as_bytes()
}

#[test]
fn a_joiner_fetches_a_128_mib_state_from_three_providers_and_catches_the_liar() {
    let bytes = 128 << 20;
    let mut procs = Procs::default();
    let liar = start_blob_provider(&mut procs, bytes, 7, true);
    let a = start_blob_provider(&mut procs, bytes, 7, false);
    let b = start_blob_provider(&mut procs, bytes, 7, false);
    assert!(liar.hash == a.hash && a.hash == b.hash, "one seed, one blob");
    let hash = protocol::Hash::from_hex(&a.hash).unwrap();
    let id = |s: &Serving| s.addr(LO).unwrap().id;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let joiner = DataPlane::bind(secret("joiner"), LO, false).await.unwrap();
        // An honest provider first (it gives the size), then the liar, who
        // gets a range like the others, is caught in it, and whose range
        // the honest two fetch instead.
        let providers = vec![a.addr(LO).unwrap(), liar.addr(LO).unwrap(), b.addr(LO).unwrap()];
        let f = joiner.fetch(hash.0, providers.clone(), bytes as u64).await.expect("fetched from the honest two");
        assert_eq!(f.bytes.len(), bytes);
        assert!(f.bytes == blob(bytes, 7), "the fetched bytes are the blob");
        assert_eq!(f.book.liars, vec![id(&liar)], "the liar is named: {:?}", f.book);
        assert_eq!(f.book.served.get(&id(&liar)).copied().unwrap_or(0), 0, "nothing of the liar's was kept");
        let (sa, sb) = (f.book.served[&id(&a)], f.book.served[&id(&b)]);
        assert!(sa > 0 && sb > 0, "both honest providers delivered ranges: {sa} + {sb}");
        eprintln!("128 MiB: {sa} bytes from a, {sb} from b; liar caught");

        // The joiner serves what it fetched (as a node does once the blob
        // is in its store): a second joiner gets it from the first alone.
        let fetched = std::sync::Arc::new(f.bytes);
        joiner.serve_now(hash.0, fetched.clone()).await.unwrap();
        let second = DataPlane::bind(secret("second"), LO, false).await.unwrap();
        let me = iroh::EndpointAddr::new(joiner.id()).with_ip_addr(std::net::SocketAddr::new(LO, joiner.port()));
        let g = second.fetch(hash.0, vec![me], bytes as u64).await.expect("fetched from the first joiner");
        assert!(g.bytes == *fetched);

        // Only the liar: nothing is accepted, and it is named.
        let third = DataPlane::bind(secret("third"), LO, false).await.unwrap();
        match third.fetch(hash.0, vec![liar.addr(LO).unwrap()], bytes as u64).await {
            Err(FetchError::NoProvider(book)) => assert_eq!(book.liars, vec![id(&liar)]),
            other => panic!("a lone liar delivers nothing: {:?}", other.map(|f| f.book)),
        }
        // A blob bigger than allowed is refused once its size is verified.
        match third.fetch(hash.0, vec![a.addr(LO).unwrap()], (bytes / 2) as u64).await {
            Err(FetchError::TooBig { size, .. }) => assert_eq!(size, bytes as u64),
            other => panic!("too big: {:?}", other.map(|f| f.book)),
        }
    });
}

const ROUNDS: u64 = 6;

fn spec_file(dir: &std::path::Path) -> String {
    let mut s = protocol::RunSpec::new(
        "digits-mlp",
        protocol::spec::TrainSpec { inner_steps: 100, inner_lr: 0.002, batch_size: 32, weight_decay: 0.0 },
    );
    s.rounds = ROUNDS;
    s.min_peers = 3;
    s.timing.min_round_ms = 1_000;
    s.timing.aggregator_timeout_ms = 1_000;
    s.timing.round_timeout_ms = 10_000;
    let path = dir.join("spec.toml");
    std::fs::write(&path, s.to_toml()).unwrap();
    path.to_str().unwrap().to_string()
}

fn reports(lines: &[String]) -> Vec<RoundReport> {
    lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn a_swarm_on_the_data_plane_catches_a_peer_serving_wrong_bytes_and_a_late_joiner_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let spec = spec_file(dir.path());
    let base = ["--spec", spec.as_str(), "--bootstrap", boot.as_str(), "--data-plane-min-bytes", "0"];
    // Peer 0's key is fixed too: the joiner names it with --trust.
    std::fs::create_dir_all(dir.path().join("peer-0")).unwrap();
    std::fs::write(dir.path().join("peer-0/key"), secret("data-plane-peer-0")).unwrap();
    let trusted =
        swarm::identity::to_libp2p(&protocol::Keypair::from_secret(secret("data-plane-peer-0"))).public().to_peer_id();
    let honest: Vec<Peer> = (0..2).map(|i| start_peer(&mut procs, dir.path(), &format!("peer-{i}"), &base)).collect();
    // The liar's key is fixed, so its libp2p id is known.
    std::fs::create_dir_all(dir.path().join("liar")).unwrap();
    std::fs::write(dir.path().join("liar/key"), secret("data-plane-liar")).unwrap();
    let liar_id =
        swarm::identity::to_libp2p(&protocol::Keypair::from_secret(secret("data-plane-liar"))).public().to_peer_id();
    let mut lying = base.to_vec();
    lying.extend(["--adversary", "wrong-bytes"]);
    let _liar = start_peer(&mut procs, dir.path(), "liar", &lying);
    // The joiner starts once both honest peers have applied round 2 (so the
    // manifest it syncs to has a state it must fetch; see the brown test).
    let (mut first, mut second): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for (i, lines) in [(0, &mut first), (1, &mut second)] {
        while !reports(lines).iter().any(|r| r.round >= 2) {
            let line = honest[i].lines.recv_timeout(Duration::from_secs(120)).expect("honest peers apply round 2");
            lines.push(line);
        }
    }
    // The joiner trusts peer 0 alone: it syncs to what peer 0 confirms,
    // whatever the others say.
    let trusted = trusted.to_string();
    let mut joining = base.to_vec();
    joining.extend(["--trust", trusted.as_str()]);
    let joiner = start_peer(&mut procs, dir.path(), "joiner", &joining);
    first.extend(collect(&honest[0], Duration::from_secs(180)));
    second.extend(collect(&honest[1], Duration::from_secs(180)));
    let outs = [reports(&first), reports(&second)];
    let late = reports(&collect(&joiner, Duration::from_secs(120)));
    let logs: Vec<String> = ["peer-0", "peer-1", "joiner"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap())
        .collect();
    for (i, rs) in outs.iter().enumerate() {
        assert_eq!(rs.last().map(|r| r.round), Some(ROUNDS), "honest peer {i} finished:\n{}", logs[i]);
        // On the data plane, or on libp2p if it was asked there before
        // identify told its data-plane port.
        assert!(
            logs[i].lines().any(|l| l.contains(&liar_id.to_string()) && l.contains("dropped")),
            "honest peer {i} caught the liar:\n{}",
            logs[i]
        );
        for line in logs[i].lines().filter(|l| l.contains("do not verify") || l.contains("do not hash")) {
            assert!(line.contains(&liar_id.to_string()), "honest peer {i} dropped only the liar: {line}");
        }
    }
    for round in 1..=ROUNDS {
        let hashes: Vec<&String> =
            outs.iter().flat_map(|rs| rs.iter().filter(|r| r.round == round).map(|r| &r.state_hash)).collect();
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "honest peers agree in round {round}");
    }
    for line in logs[2].lines().filter(|l| l.contains("do not verify")) {
        assert!(line.contains(&liar_id.to_string()), "the joiner dropped only the liar: {line}");
    }
    assert!(logs[2].contains("trusting 1 named peer for the run's history"), "{}", logs[2]);
    assert!(logs[0].contains(&format!("peer id {trusted}")), "peer 0 prints the id to trust:\n{}", logs[0]);
    assert!(logs[2].contains("synced to the state of round"), "the joiner synced:\n{}", logs[2]);
    assert!(
        logs[2].contains("fetched over the data plane"),
        "the joiner's state came over the data plane:\n{}",
        logs[2]
    );
    let last = late.last().unwrap_or_else(|| panic!("the joiner applied rounds:\n{}", logs[2]));
    assert_eq!(last.round, ROUNDS, "the joiner reached the end:\n{}", logs[2]);
    let end = outs[0].last().unwrap();
    assert_eq!(last.state_hash, end.state_hash, "the joiner ends on the swarm's state");
}

/// The packages root of the test binaries (shared with tests/workloads.rs),
/// with `brown` pulled.
fn brown_packages() -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("packages");
    let out = std::process::Command::new(swarm_bin())
        .args(["pull", "brown"])
        .env("SWARM_PACKAGES", &root)
        .output()
        .expect("run swarm pull");
    assert!(out.status.success(), "swarm pull brown: {}", String::from_utf8_lossy(&out.stderr));
    root
}

#[test]
fn a_brown_gpt_joiner_syncs_a_169_mb_state_through_the_data_plane_among_lying_peers() {
    let packages = brown_packages();
    let env = [("SWARM_PACKAGES", packages.as_path())];
    let dir = tempfile::tempdir().unwrap();
    let mut s = protocol::RunSpec::new(
        "brown-gpt",
        protocol::spec::TrainSpec { inner_steps: 2, inner_lr: 0.0005, batch_size: 4, weight_decay: 0.0 },
    );
    // The joiner starts after round 2 and must sync before the run ends (one
    // CI run of 4 rounds saw it not sync in the two rounds left: the others
    // left first); three rounds leave it room.
    s.rounds = 5;
    s.min_peers = 3;
    // The liar's contribution is never fetched (it is caught and given up):
    // the round waits for it until this deadline.
    s.timing.round_timeout_ms = 60_000;
    s.verify.checkpoint_every = 2;
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, s.to_toml()).unwrap();
    let spec = spec.to_str().unwrap().to_string();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let base = ["--spec", spec.as_str(), "--bootstrap", boot.as_str()];
    std::fs::create_dir_all(dir.path().join("liar")).unwrap();
    std::fs::write(dir.path().join("liar/key"), secret("brown-liar")).unwrap();
    let liar_id =
        swarm::identity::to_libp2p(&protocol::Keypair::from_secret(secret("brown-liar"))).public().to_peer_id();
    let honest: Vec<Peer> =
        (0..2).map(|i| start_peer_env(&mut procs, dir.path(), &format!("peer-{i}"), &base, &env)).collect();
    let mut lying = base.to_vec();
    lying.extend(["--adversary", "wrong-bytes"]);
    let _liar = start_peer_env(&mut procs, dir.path(), "liar", &lying, &env);
    let mut first: Vec<String> = Vec::new();
    let mut second: Vec<String> = Vec::new();
    // Once round 2 is applied, the manifest a joiner syncs to is round 2's,
    // whose state is round 1's result, not the genesis state a joiner makes
    // itself: it must be fetched. Both honest peers must have applied it: a
    // joiner syncs to a manifest most peers confirm, and one CI run started
    // the joiner when only peer-0 had, so it synced to round 1 (genesis,
    // nothing to fetch) and the data-plane assertion failed.
    let log = |n: &str| std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default();
    for (i, lines) in [(0, &mut first), (1, &mut second)] {
        while !reports(lines).iter().any(|r| r.round >= 2) {
            let line = honest[i].lines.recv_timeout(Duration::from_secs(600)).unwrap_or_else(|e| {
                let logs: Vec<String> =
                    ["peer-0", "peer-1", "liar"].iter().map(|n| format!("--- {n}:\n{}", log(n))).collect();
                panic!("peer-{i} applies round 2: {e:?}\n{}", logs.join("\n"))
            });
            lines.push(line);
        }
    }
    let joiner = start_peer_env(&mut procs, dir.path(), "joiner", &base, &env);
    first.extend(collect(&honest[0], Duration::from_secs(900)));
    let end = reports(&first);
    let late = reports(&collect(&joiner, Duration::from_secs(300)));
    let (l0, lj) = (log("peer-0"), log("joiner"));
    assert_eq!(end.last().map(|r| r.round), Some(s.rounds), "peer-0 finished:\n{l0}");
    for (name, l) in [("peer-0", &l0), ("joiner", &lj)] {
        for line in l.lines().filter(|x| x.contains("do not verify")) {
            assert!(line.contains(&liar_id.to_string()), "{name} dropped only the liar: {line}");
        }
    }
    assert!(lj.contains("synced to the state of round"), "the joiner synced:\n{lj}");
    assert!(lj.contains("fetched over the data plane"), "the joiner fetched the state over the data plane:\n{lj}");
    let last = late.last().unwrap_or_else(|| panic!("the joiner applied rounds:\n{lj}"));
    assert_eq!(
        (last.round, &last.state_hash),
        (s.rounds, &end.last().unwrap().state_hash),
        "the joiner ends on the swarm's state"
    );
    let state_in: u64 = late.iter().map(|r| r.traffic.state.received).sum::<u64>();
    let state_bytes = 21_177_937u64 * 8;
    assert!(state_in >= state_bytes, "the joiner fetched the state ({state_in} bytes):\n{lj}");
    eprintln!("the joiner received {state_in} bytes of state; its log:\n{lj}");
}
