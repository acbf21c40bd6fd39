//! The RL swarm on the real network: three honest `swarm join --rl`
//! processes, one that inflates the rewards it claims and one that serves
//! corrupted rollout payloads train `tasks-gpt` with GRPO and share
//! rollouts (announced on gossip, fetched as blobs) through a bootstrap
//! node on 127.0.0.1.
//! Every honest peer must take external rollouts (fetched, then re-scored),
//! reject the liar's batches and drop it, never ask the corrupt server
//! again after its first wrong bytes (without dropping it: bytes that are
//! not the announced ones prove nothing against their author), and finish
//! every round; the
//! honest peers' mean reward in the last quarter of the rounds must be above
//! the first quarter's.

mod common;

use common::*;
use std::time::Duration;

const ROUNDS: u64 = 40;

fn spec(dir: &std::path::Path) -> std::path::PathBuf {
    let mut s = trainer::rl::default_spec(trainer::rl::TASKS_GPT).unwrap();
    s.rounds = ROUNDS;
    s.min_peers = 5;
    s.rl.wait_ms = 2_000;
    s.rl.start_wait_ms = 120_000;
    s.rl.eval_every = 0;
    let path = dir.join("rl.toml");
    std::fs::write(&path, s.to_toml()).unwrap();
    path
}

#[test]
fn rl_peers_share_rollouts_drop_a_liar_and_improve() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let spec = spec.to_str().unwrap();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let common = ["--spec", spec, "--bootstrap", boot.as_str()];
    // Fixed identities: a peer's tasks and samples are drawn from its key.
    for (i, name) in ["p0", "p1", "p2", "liar", "corrupt"].iter().enumerate() {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("key"), [i as u8 + 11; 32]).unwrap();
    }
    let honest: Vec<Peer> = (0..3).map(|i| start_peer(&mut procs, dir.path(), &format!("p{i}"), &common)).collect();
    let mut liar_args = common.to_vec();
    liar_args.extend(["--adversary", "inflate-rewards"]);
    let liar = start_peer(&mut procs, dir.path(), "liar", &liar_args);
    let mut corrupt_args = common.to_vec();
    corrupt_args.extend(["--adversary", "wrong-bytes"]);
    let corrupt = start_peer(&mut procs, dir.path(), "corrupt", &corrupt_args);

    let mut first = 0f64;
    let mut last = 0f64;
    let quarter = ROUNDS / 4;
    for (i, p) in honest.iter().enumerate() {
        let lines = collect(p, Duration::from_secs(900));
        let log = std::fs::read_to_string(&p.log).unwrap();
        let rounds: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert_eq!(rounds.len() as u64, ROUNDS, "peer {i} finished every round\n{log}");
        let sum = |k: &str| rounds.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
        let log = format!(
            "{log}\nround, peers in the pool, taken, rejected, dropped: {:?}",
            rounds
                .iter()
                .map(|r| (&r["round"], &r["pool_peers"], &r["taken"], &r["rejected"], &r["dropped_peers"]))
                .collect::<Vec<_>>()
        );
        assert!(sum("taken") >= ROUNDS, "peer {i} trained on external rollouts: {}\n{log}", sum("taken"));
        // Rollouts are blobs: every batch a peer took or rejected was fetched.
        assert!(sum("fetched") >= ROUNDS && sum("fetched_bytes") > 0, "peer {i} fetched rollout batches\n{log}");
        // The corrupt peer is asked once: its wrong bytes ban it as a
        // provider, and nobody relays what they could not check (it is
        // connected to every peer here, through the bootstrap's Kademlia).
        assert_eq!(sum("wrong_bytes"), 1, "peer {i} asked the corrupt peer once\n{log}");
        assert!(sum("unserved") >= ROUNDS / 2, "peer {i} gave up on the corrupt peer's batches\n{log}");
        assert!(sum("rejected") > 0, "peer {i} rejected the liar's rollouts\n{log}");
        assert_eq!(rounds.last().unwrap()["dropped_peers"], 1, "peer {i} dropped exactly one peer\n{log}");
        for r in &rounds {
            let n = r["round"].as_u64().unwrap();
            let reward = r["reward"].as_f64().unwrap();
            if n <= quarter {
                first += reward;
            } else if n > ROUNDS - quarter {
                last += reward;
            }
        }
    }
    // The liar is the one dropped: its id is in its own join line.
    let liar_lines = collect(&liar, Duration::from_secs(60));
    let liar_log = std::fs::read_to_string(&liar.log).unwrap();
    let liar_id = liar_log
        .lines()
        .find_map(|l| l.strip_prefix("peer ").and_then(|r| r.split_whitespace().next()))
        .expect("the liar's join line")
        .to_string();
    for p in &honest {
        let log = std::fs::read_to_string(&p.log).unwrap();
        assert!(log.contains(&format!("dropped peer {liar_id}:")), "the liar {liar_id} was dropped\n{log}");
    }
    assert_eq!(liar_lines.len() as u64, ROUNDS, "the liar ran its rounds too\n{liar_log}");
    // The corrupt server is named once by each honest peer (by its libp2p
    // id, in its listening line), and never dropped.
    let corrupt_lines = collect(&corrupt, Duration::from_secs(60));
    let corrupt_log = std::fs::read_to_string(&corrupt.log).unwrap();
    let corrupt_id = corrupt_log
        .lines()
        .find_map(|l| l.strip_prefix("listening on ").and_then(|a| a.rsplit("/p2p/").next()))
        .expect("the corrupt peer's listening line")
        .to_string();
    assert_eq!(corrupt_lines.len() as u64, ROUNDS, "the corrupt peer ran its rounds too\n{corrupt_log}");
    for p in &honest {
        let log = std::fs::read_to_string(&p.log).unwrap();
        let named = log.matches(&format!("peer {corrupt_id} served ")).count();
        assert_eq!(named, 1, "the corrupt peer {corrupt_id} was found out once\n{log}");
    }
    let (first, last) = (first / (3 * quarter) as f64, last / (3 * quarter) as f64);
    eprintln!("mean reward of the honest peers: first {quarter} rounds {first:.3}, last {quarter} rounds {last:.3}");
    assert!(last > first, "reward rose: {first:.3} -> {last:.3}");
}

#[test]
fn rl_specs_are_checked_and_launch_prints_the_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (ok, text, err) = run_swarm(&["spec", "tasks-gpt"], Duration::from_secs(30));
    assert!(ok && text.contains("[rl]"), "{text}{err}");
    let spec = protocol::RlSpec::from_toml(&text).unwrap();
    let path = dir.path().join("rl.toml");
    std::fs::write(&path, &text).unwrap();
    let file = path.to_str().unwrap();
    let (ok, out, err) = run_swarm(&["launch", "--rl", file], Duration::from_secs(30));
    assert!(ok, "{err}");
    assert!(out.contains(&format!("RL run {}", spec.run_id())), "{out}");
    assert!(out.contains(&format!("swarm join --spec {file}")), "{out}");
    // Bad specs are refused with the field named, before any network or training.
    for (from, to, field) in [
        ("\"count\"", "\"chess\"", "chess"),
        ("group = 8", "group = 1", "rl.group"),
        ("clip_high = 0.28", "clip_high = 2.0", "rl.clip_low"),
        ("kl = 0.0", "kl = 0.1", "rl.kl"),
    ] {
        let bad = text.replace(from, to);
        assert_ne!(bad, text, "{from}");
        std::fs::write(&path, bad).unwrap();
        let (ok, _, err) = run_swarm(&["join", "--spec", file, "--data-dir", data], Duration::from_secs(30));
        assert!(!ok && err.contains(field), "{field}: {err}");
        let (ok, _, err) = run_swarm(&["launch", "--rl", file], Duration::from_secs(30));
        assert!(!ok && err.contains(field), "{field}: {err}");
    }
    // A model without an RL policy says what exists.
    let (ok, _, err) = run_swarm(&["join", "digits-mlp", "--rl", "--data-dir", data], Duration::from_secs(30));
    assert!(!ok && err.contains("tasks-gpt") && err.contains("smollm2-135m"), "{err}");
    // smollm2-135m is an RL policy with --rl (its spec says so), and says which pull it needs.
    let (ok, text, err) = run_swarm(&["spec", "smollm2-135m", "--rl"], Duration::from_secs(30));
    assert!(ok && text.contains("[rl]") && text.contains("model = \"smollm2-135m\""), "{text}{err}");
    let empty = dir.path().join("no-packages");
    let out = std::process::Command::new(common::swarm_bin())
        .args(["join", "smollm2-135m", "--rl", "--data-dir", data])
        .env("SWARM_PACKAGES", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("swarm pull smollm2-135m"), "{err}");
    // Without --rl it is the DiLoCo fine-tuning run.
    let (ok, text, err) = run_swarm(&["spec", "smollm2-135m"], Duration::from_secs(30));
    assert!(ok && !text.contains("[rl]") && text.contains("smollm2-135m"), "{text}{err}");
}
