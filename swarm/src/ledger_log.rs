//! The ledger on disk. The manifests the ledger applied are appended to
//! `runs/<id>/manifests.log` (length-prefixed bincode records, fsync'd): the
//! ledger is a function of them, so it is rebuilt from this log on every
//! start (a torn last record, from a crash in the middle of a write, is cut
//! off). `ledger.json` beside it is a readable view, rewritten atomically
//! whenever an epoch closes; `swarm ledger` rebuilds the same view from the
//! log, with or without a running node.

use protocol::Hash;
use protocol::ledger::{Epoch, Ledger};
use protocol::message::Manifest;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;

/// A record is one manifest (64 KiB at most on the wire) and its round and id.
const MAX_RECORD: usize = 1 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD>()
}

/// Appends one applied manifest and syncs it to disk.
pub fn append(path: &Path, round: u64, id: Hash, manifest: &Manifest) -> std::io::Result<()> {
    let body = bincode::serde::encode_to_vec((round, id, manifest), config()).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut rec = Vec::with_capacity(body.len() + 4);
    rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
    rec.extend_from_slice(&body);
    f.write_all(&rec)?;
    f.sync_data()
}

/// Rebuilds the ledger from the log (an empty ledger if there is none);
/// returns it and the number of manifests read. A torn or unreadable tail
/// is cut off so that later appends stay readable.
pub fn rebuild(path: &Path, spec: &protocol::RunSpec) -> (Ledger, usize) {
    let mut ledger = Ledger::new(spec.ledger.clone()).with_review(spec.verify.rate, spec.verify.referees);
    let Ok(mut f) = std::fs::File::open(path) else { return (ledger, 0) };
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_err() {
        return (ledger, 0);
    }
    let (mut at, mut n) = (0usize, 0usize);
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(body) = bytes.get(at + 4..at + 4 + len).filter(|_| len <= MAX_RECORD) else { break };
        let Ok(((round, id, m), _)) = bincode::serde::decode_from_slice::<(u64, Hash, Manifest), _>(body, config())
        else {
            break;
        };
        ledger.apply(round, id, &m);
        at += 4 + len;
        n += 1;
    }
    ledger.refresh_attestations();
    if at < bytes.len()
        && let Ok(f) = std::fs::OpenOptions::new().write(true).open(path)
    {
        let _ = f.set_len(at as u64);
    }
    (ledger, n)
}

fn peer_hex(p: &protocol::PeerId) -> String {
    hex::encode(p.0)
}

/// One epoch as JSON (what `swarm ledger --json` prints per line).
pub fn epoch_json(run: &Hash, e: &Epoch) -> Value {
    if e.is_unknown() {
        return json!({ "epoch": e.epoch, "rounds": [e.first_round, e.last_round], "known": false });
    }
    let credits: Vec<Value> = e
        .credits
        .iter()
        .map(|c| {
            json!({
                "peer": peer_hex(&c.peer),
                "payee": c.payee.map(|a| format!("0x{}", hex::encode(a))),
                "samples": c.samples,
                "checks": c.checks,
                "credits": c.credits,
                "penalty": c.penalty,
            })
        })
        .collect();
    let receipts: Vec<Value> = e
        .receipts
        .iter()
        .map(|r| {
            json!({
                "round": r.round,
                "peer": peer_hex(&r.peer),
                "samples": r.samples,
                "verified_by": r.verified_by.map(|p| peer_hex(&p)),
                "excluded": r.excluded,
            })
        })
        .collect();
    let work: Vec<Value> = e
        .work
        .iter()
        .map(|w| {
            json!({
                "round": w.round,
                "peer": peer_hex(&w.peer),
                "kind": format!("{:?}", w.kind).to_lowercase(),
                "contributor": peer_hex(&w.about.0),
                "contribution_round": w.about.1,
                "samples": w.samples,
            })
        })
        .collect();
    json!({
        "epoch": e.epoch,
        "rounds": [e.first_round, e.last_round],
        "known": true,
        "root": format!("0x{}", hex::encode(e.root)),
        "total": e.total,
        "digest": format!("0x{}", hex::encode(e.digest(run))),
        "committee": e.committee.iter().map(|a| format!("0x{}", hex::encode(a))).collect::<Vec<_>>(),
        "attestations": e.attestations.len(),
        "signers": e.attestations.iter().map(|(a, _)| *a).collect::<std::collections::BTreeSet<_>>().len(),
        "credits": credits,
        "receipts": receipts,
        "work": work,
    })
}

/// Writes `ledger.json` (every closed epoch) atomically.
pub fn write_view(path: &Path, run: &Hash, ledger: &Ledger) -> std::io::Result<()> {
    let epochs: Vec<Value> = ledger.epochs().map(|e| epoch_json(run, e)).collect();
    let view = json!({ "run": run.to_hex(), "last_round": ledger.last_round(), "epochs": epochs });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&view).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::{Contribution, ManifestEntry, Signature};

    fn manifest(peer: u8) -> Manifest {
        let h = Hash::of(&[peer]);
        let contribution = Contribution {
            hash: h,
            samples: 10,
            base_state: h,
            raw: h,
            residual: 0.0,
            chain: h,
            payee: None,
            attest: None,
        };
        let entry = ManifestEntry { peer: protocol::PeerId([peer; 32]), contribution, signature: Signature([0; 64]) };
        Manifest { state: h, entries: vec![entry], exclusions: vec![], excluded: vec![], checks: vec![], ledger: None }
    }

    #[test]
    fn the_ledger_is_rebuilt_from_the_log_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifests.log");
        let mut run = protocol::RunSpec::new(
            "digits-mlp",
            protocol::spec::TrainSpec { inner_steps: 5, inner_lr: 0.01, batch_size: 8, weight_decay: 0.0 },
        );
        run.ledger = protocol::ledger::LedgerSpec { epoch_rounds: 2, settle_rounds: 0, ..Default::default() };
        let spec = run.clone();
        let mut live = Ledger::new(run.ledger.clone()).with_review(run.verify.rate, run.verify.referees);
        for r in 1..=4u64 {
            let m = manifest(r as u8);
            append(&path, r, Hash::of(&r.to_le_bytes()), &m).unwrap();
            live.apply(r, Hash::of(&r.to_le_bytes()), &m);
        }
        let (rebuilt, n) = rebuild(&path, &spec);
        assert_eq!(n, 4);
        assert_eq!(
            rebuilt.epochs().map(|e| e.root).collect::<Vec<_>>(),
            live.epochs().map(|e| e.root).collect::<Vec<_>>()
        );
        assert_eq!(rebuilt.epochs().count(), 2);
        // A crash in the middle of the fifth record.
        let good = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        let (again, n) = rebuild(&path, &spec);
        assert_eq!((n, again.epochs().count()), (4, 2));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good, "the torn record is cut off");
        append(&path, 5, Hash::of(b"5"), &manifest(5)).unwrap();
        assert_eq!(rebuild(&path, &spec).1, 5);
    }
}
