//! The foundation test: a bootstrap node and 3 peers, each its own process
//! talking QUIC on 127.0.0.1, train digits-mlp together for 5 rounds and
//! agree on the state bit for bit after every round.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use swarm::RoundReport;

const ROUNDS: u64 = 5;

#[test]
fn three_processes_train_one_model_and_agree_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let rounds = ROUNDS.to_string();
    // Fixed identities make every peer's batches (seeded by run, round and
    // peer id) the same from one test run to the next, so the comparison
    // with the lone peer below is reproducible rather than a coin toss.
    for i in 0..3 {
        let d = dir.path().join(format!("peer-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("key"), blake3::hash(format!("three-peers-{i}").as_bytes()).as_bytes()).unwrap();
    }
    let peers: Vec<Peer> = (0..3)
        .map(|i| {
            start_peer(
                &mut procs,
                dir.path(),
                &format!("peer-{i}"),
                &["digits-mlp", "--bootstrap", &boot, "--rounds", &rounds],
            )
        })
        .collect();
    let outputs: Vec<Vec<String>> = peers.iter().map(|p| collect(p, Duration::from_secs(120))).collect();

    // Every line is a JSON object with the documented fields.
    let mut by_round: BTreeMap<u64, Vec<RoundReport>> = BTreeMap::new();
    for (i, lines) in outputs.iter().enumerate() {
        let log = std::fs::read_to_string(&peers[i].log).unwrap_or_default();
        assert_eq!(lines.len() as u64, ROUNDS, "peer {i} printed {lines:?}\nlog:\n{log}");
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            for field in ["round", "state_hash", "eval_loss", "eval_accuracy", "bytes_sent", "bytes_received", "peers"]
            {
                assert!(v.get(field).is_some(), "field {field} missing in {l}");
            }
            let r: RoundReport = serde_json::from_str(l).unwrap();
            by_round.entry(r.round).or_default().push(r);
        }
    }
    assert_eq!(by_round.keys().copied().collect::<Vec<_>>(), (1..=ROUNDS).collect::<Vec<_>>());
    for (round, reports) in &by_round {
        assert_eq!(reports.len(), 3, "round {round}");
        let h = &reports[0].state_hash;
        assert!(reports.iter().all(|r| &r.state_hash == h), "round {round}: state hashes differ: {reports:?}");
        assert!(reports.iter().all(|r| r.peers == 3), "round {round}: {reports:?}");
        assert!(reports.iter().all(|r| r.bytes_sent > 0 && r.bytes_received > 0));
    }
    assert!(by_round.values().flatten().all(|r| r.contributors >= 2));
    assert_eq!(by_round[&ROUNDS][0].contributors, 3, "everyone contributed to the last round");

    // The swarm does at least as well as one peer alone for the same inner
    // steps. One lone run is a coin toss of its batch seed (accuracy moves
    // by 2 points between seeds on 360 test images), so the lone peer's
    // figure is the median of three seeds.
    let t = trainer::Trainer::new("digits-mlp").unwrap();
    let mut cfg = trainer::default_train_config("digits-mlp");
    cfg.inner_steps *= ROUNDS as u32;
    let mut alone: Vec<trainer::Eval> = (1..=3u8)
        .map(|s| {
            let out = t.inner_loop(&t.init_params(0), &cfg, [s; 32], &mut |_, _| {}).unwrap();
            t.evaluate(&out.params).unwrap()
        })
        .collect();
    alone.sort_by(|a, b| a.accuracy.partial_cmp(&b.accuracy).unwrap());
    let alone = alone[1];
    let last = &by_round[&ROUNDS][0];
    let swarm_acc = last.eval_accuracy.unwrap();
    let alone_acc = alone.accuracy.unwrap();
    eprintln!(
        "3-peer swarm: loss {:.4} acc {:.4}; one peer alone (median of 3 seeds): loss {:.4} acc {:.4}",
        last.eval_loss, swarm_acc, alone.loss, alone_acc
    );
    assert!(swarm_acc >= alone_acc, "swarm {swarm_acc} < alone {alone_acc}");
}
