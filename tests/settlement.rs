//! Settlement end to end, with the real `swarm` binary and a real anvil:
//! a submitter deploys the contract and launches a run with a bounty for 2
//! epochs; 3 honest peers and 1 liar train it (the liar is caught by peer
//! review); every honest peer settles (the first posts the roots, each
//! claims); the contract paid each honest payee exactly its ledger share,
//! the liar nothing; a peer that settles again changes nothing.

mod common;

use common::*;
use protocol::PeerId;
use serde_json::Value;
use settlement::U256;
use settlement::anvil::{Anvil, DEV_KEYS};
use std::collections::BTreeMap;
use std::time::Duration;

const HONEST: usize = 3;
const PER_EPOCH: u128 = 3_000_000_000_000_000_000; // 3 ETH

fn spec_file(dir: &std::path::Path) -> String {
    let mut s = protocol::RunSpec::new(
        "digits-mlp",
        protocol::spec::TrainSpec { inner_steps: 100, inner_lr: 0.002, batch_size: 32, weight_decay: 0.0 },
    );
    // Epochs of 2 rounds, closed 2 rounds later: epochs 0 and 1 close with
    // rounds 4 and 6, and their roots' signatures ride in rounds 5..8.
    s.rounds = 8;
    s.min_peers = (HONEST + 1) as u32;
    s.timing.min_round_ms = 1_000;
    s.timing.aggregator_timeout_ms = 1_000;
    s.timing.round_timeout_ms = 10_000;
    s.verify.rate = 1.0;
    s.ledger.epoch_rounds = 2;
    s.ledger.settle_rounds = 2;
    let path = dir.join("spec.toml");
    std::fs::write(&path, s.to_toml()).unwrap();
    path.to_str().unwrap().to_string()
}

fn key_file(dir: &std::path::Path, name: &str, i: usize) -> String {
    let p = dir.join(name);
    std::fs::write(&p, DEV_KEYS[i]).unwrap();
    p.to_str().unwrap().to_string()
}

fn swarm_ok(args: &[&str]) -> String {
    let (ok, out, err) = run_swarm(args, Duration::from_secs(120));
    assert!(ok, "swarm {args:?} failed:\n{out}\n{err}");
    out
}

#[test]
fn a_bounty_is_paid_by_the_ledger_and_the_liar_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let anvil = Anvil::start().expect("anvil (run scripts/setup.sh)");
    let rpc = anvil.url.clone();
    // The submitter (anvil account 0) deploys and escrows; account 9 relays
    // the settle transactions so that payees' balances change by their pay alone.
    let submitter = key_file(dir.path(), "submitter.key", 0);
    let relayer = key_file(dir.path(), "relayer.key", 9);
    let contract = swarm_ok(&["deploy-contract", "--rpc", &rpc, "--key", &submitter]).trim().to_string();
    let spec = spec_file(dir.path());
    let per_epoch = PER_EPOCH.to_string();
    let launch = swarm_ok(&[
        "launch",
        &spec,
        "--bounty-per-epoch",
        &per_epoch,
        "--epochs",
        "2",
        "--rpc",
        &rpc,
        "--contract",
        &contract,
        "--key",
        &submitter,
    ]);
    eprintln!("{launch}");
    assert!(launch.contains("bounty escrowed"), "{launch}");

    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    // Peer i is paid to anvil account i + 1 (its settlement key).
    for i in 0..=HONEST {
        let d = dir.path().join(format!("peer-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("settlement.key"), DEV_KEYS[i + 1]).unwrap();
    }
    let peers: Vec<Peer> = (0..=HONEST)
        .map(|i| {
            let mut args = vec!["--spec", spec.as_str(), "--bootstrap", boot.as_str()];
            if i == HONEST {
                args.extend(["--adversary", "scale"]);
            }
            start_peer(&mut procs, dir.path(), &format!("peer-{i}"), &args)
        })
        .collect();
    for (i, p) in peers[..HONEST].iter().enumerate() {
        let lines = collect(p, Duration::from_secs(300));
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        assert!(lines.iter().filter(|l| l.starts_with('{')).count() >= 8, "peer {i} did not finish:\n{log}");
        assert!(!log.contains("our ledgers differ"), "peer {i}:\n{log}");
    }
    drop(procs);

    let chain = settlement::Chain::connect(
        &rpc,
        settlement::parse_address(&contract).unwrap(),
        DEV_KEYS[0],
        Duration::from_secs(20),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let payee = |i: usize| settlement::parse_address(&format!("0x{}", payee_hex(i))).unwrap();
    let before: Vec<U256> = (0..=HONEST).map(|i| rt.block_on(chain.balance(payee(i))).unwrap()).collect();

    // Every honest peer's ledger: the same epochs; the liar has no credits.
    let ledgers: Vec<Vec<Value>> = (0..HONEST)
        .map(|i| {
            let data = dir.path().join(format!("peer-{i}"));
            let out = swarm_ok(&["ledger", "--json", "--data-dir", data.to_str().unwrap()]);
            out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        })
        .collect();
    let roots = |l: &Vec<Value>| l.iter().map(|e| e["root"].clone()).collect::<Vec<_>>();
    for l in &ledgers[1..] {
        assert_eq!(roots(l), roots(&ledgers[0]), "honest peers' roots differ");
    }
    let liar = liar_id(dir.path());
    let mut expected: BTreeMap<String, u128> = BTreeMap::new();
    for e in ledgers[0].iter().filter(|e| e["epoch"].as_u64().unwrap() < 2) {
        assert_eq!(e["known"], true, "{e}");
        let total = e["total"].as_u64().unwrap() as u128;
        for c in e["credits"].as_array().unwrap() {
            let credits = c["credits"].as_u64().unwrap() as u128;
            if c["peer"] == liar {
                assert_eq!(credits, 0, "the liar earned credits: {e}");
                continue;
            }
            *expected.entry(c["payee"].as_str().unwrap().to_string()).or_default() += PER_EPOCH * credits / total;
        }
    }
    let text = swarm_ok(&["ledger", "--data-dir", dir.path().join("peer-0").to_str().unwrap()]);
    eprintln!("{text}");

    // Each honest peer settles. Epoch 0's root is the submitter's to post
    // (it vouches for the first committee): a peer that tries first is told
    // so; the submitter then settles from peer 0's ledger (as an observer of
    // the run would), which posts both roots.
    let first = dir.path().join("peer-1");
    let early = swarm_ok(&[
        "settle",
        "--rpc",
        &rpc,
        "--contract",
        &contract,
        "--gas-key",
        &relayer,
        "--data-dir",
        first.to_str().unwrap(),
    ]);
    assert!(early.contains("posted by the submitter") && !early.contains("claimed ("), "{early}");
    for i in 0..HONEST {
        let data = dir.path().join(format!("peer-{i}"));
        let gas_key = if i == 0 { &submitter } else { &relayer };
        let out = swarm_ok(&[
            "settle",
            "--rpc",
            &rpc,
            "--contract",
            &contract,
            "--gas-key",
            gas_key,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        eprintln!("peer {i} settles:\n{out}");
        assert_eq!(out.matches(": claimed (").count(), 2, "peer {i}: {out}");
    }
    // The liar's own ledger gives it nothing to claim.
    let liar_dir = dir.path().join(format!("peer-{HONEST}"));
    let (_, out, err) = run_swarm(
        &[
            "settle",
            "--rpc",
            &rpc,
            "--contract",
            &contract,
            "--gas-key",
            &relayer,
            "--data-dir",
            liar_dir.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    eprintln!("the liar settles:\n{out}{err}");
    assert!(!out.contains(": claimed ("), "{out}");

    for (i, b) in before.iter().enumerate() {
        let got = rt.block_on(chain.balance(payee(i))).unwrap() - *b;
        let want = expected.get(&format!("0x{}", payee_hex(i))).copied().unwrap_or(0);
        assert_eq!(got, U256::from(want), "payee of peer {i}");
    }
    let run = protocol::RunSpec::from_toml(&std::fs::read_to_string(&spec).unwrap()).unwrap().run_id();
    let task = rt.block_on(chain.task(&run)).unwrap().unwrap();
    assert_eq!(task.paid, U256::from(expected.values().sum::<u128>()));
    assert_eq!(task.next_epoch, 2);

    // A restarted peer settles again: nothing is sent, nothing paid twice.
    let data = dir.path().join("peer-0");
    let again = swarm_ok(&["settle", "--rpc", &rpc, "--contract", &contract, "--data-dir", data.to_str().unwrap()]);
    eprintln!("peer 0 settles again:\n{again}");
    assert_eq!(again.matches("already claimed").count(), 2, "{again}");
    assert_eq!(rt.block_on(chain.task(&run)).unwrap().unwrap().paid, task.paid);
}

fn payee_hex(i: usize) -> String {
    let k = swarm::payee::SettlementKey::from_secret(&hex::decode(DEV_KEYS[i + 1]).unwrap()).unwrap();
    hex::encode(k.address())
}

fn liar_id(dir: &std::path::Path) -> Value {
    let key = std::fs::read(dir.join(format!("peer-{HONEST}")).join("key")).unwrap();
    let kp = protocol::Keypair::from_secret(key.try_into().unwrap());
    let id: PeerId = kp.peer_id();
    Value::String(hex::encode(id.0))
}
