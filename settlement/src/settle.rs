//! `swarm settle`: post the roots this peer can post, claim what it is owed.

use crate::{Chain, Error, Outcome, epochs_to_settle, is_quorum, quorum_signatures};
use alloy::primitives::B256;
use protocol::ledger::Ledger;
use protocol::{Hash, PeerId};

/// What a settle pass did, one line per step.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Readable lines.
    pub lines: Vec<String>,
    /// Roots posted by this pass: (epoch, gas).
    pub posted: Vec<(u64, u64)>,
    /// Claims sent by this pass: (epoch, gas).
    pub claimed: Vec<(u64, u64)>,
}

/// Posts every root this peer's ledger holds that the contract still
/// waits for (in epoch order, while the signatures make a quorum), then
/// claims `me`'s share of every posted epoch whose root equals ours.
/// Safe to run again at any time: done steps are skipped.
pub async fn settle(chain: &Chain, run: &Hash, ledger: &Ledger, me: &PeerId) -> Result<Report, Error> {
    let mut report = Report::default();
    let Some(task) = chain.task(run).await? else { return Err(Error::UnknownTask(run.to_hex())) };
    let mut next = task.next_epoch;
    for e in epochs_to_settle(ledger) {
        if e.epoch >= task.epochs {
            report.lines.push(format!("epoch {}: beyond the {} epochs the task pays for", e.epoch, task.epochs));
            break;
        }
        if e.epoch == next {
            if e.epoch == 0 && chain.sender() != task.submitter {
                report.lines.push(format!(
                    "epoch 0: its root is posted by the submitter {} (who vouches for the first committee); not posted yet",
                    task.submitter
                ));
                break;
            }
            let sigs = quorum_signatures(run, e);
            if !is_quorum(sigs.len(), e.committee.len()) {
                report.lines.push(format!(
                    "epoch {}: {} of {} committee signatures seen so far, more than two thirds needed; not posted yet",
                    e.epoch,
                    sigs.len(),
                    e.committee.len()
                ));
                break;
            }
            match chain.post_root(run, e, sigs.clone()).await? {
                Outcome::Done { gas, tx } => {
                    report.lines.push(format!(
                        "epoch {}: root posted with {} signatures ({gas} gas, {tx})",
                        e.epoch,
                        sigs.len()
                    ));
                    report.posted.push((e.epoch, gas));
                }
                Outcome::AlreadyDone => report.lines.push(format!("epoch {}: root already posted", e.epoch)),
            }
            next += 1;
        }
        if e.epoch >= next {
            break;
        }
        match chain.root(run, e.epoch).await? {
            Some((root, _)) if root != B256::from(e.root) => {
                report.lines.push(format!(
                    "epoch {}: the posted root {root} differs from ours 0x{}; not claiming",
                    e.epoch,
                    hex::encode(e.root)
                ));
                continue;
            }
            Some(_) => {}
            None => continue,
        }
        if !e.credits.iter().any(|c| c.peer == *me && c.credits > 0) {
            report.lines.push(format!("epoch {}: no credits of ours", e.epoch));
            continue;
        }
        match chain.claim(run, e, me).await? {
            Outcome::Done { gas, tx } => {
                report.lines.push(format!("epoch {}: claimed ({gas} gas, {tx})", e.epoch));
                report.claimed.push((e.epoch, gas));
            }
            Outcome::AlreadyDone => report.lines.push(format!("epoch {}: already claimed", e.epoch)),
        }
    }
    Ok(report)
}
