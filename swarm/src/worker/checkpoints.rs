//! Checkpoints of a run in two alternating slots: round r goes to slot
//! r % 2, so a torn or corrupt newest checkpoint leaves the other one.

use super::error::WorkerError;
use super::model::{Model, ModelState};
use std::path::{Path, PathBuf};
use trainer::checkpoint::{self, Checkpoint};

/// Where a run's checkpoints live, and how to write them.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    run_dir: PathBuf,
    model: String,
    layout: Vec<(String, Vec<usize>)>,
}

impl Checkpoints {
    pub(super) fn new(run_dir: PathBuf, model: &Model) -> Checkpoints {
        Checkpoints { run_dir, model: model.spec().model.clone(), layout: model.trainer().param_layout() }
    }

    /// The directory of the slot of `round`.
    pub fn slot_dir(run_dir: &Path, round: u64) -> PathBuf {
        run_dir.join(format!("ckpt-{}", round % 2))
    }

    /// Writes the state after `round` to its slot, atomically.
    pub(super) fn save(&self, round: u64, state: &ModelState) -> Result<(), WorkerError> {
        let ck = Checkpoint {
            round,
            params: state.params.clone(),
            velocity: state.outer.velocity.clone(),
            model: self.model.clone(),
        };
        checkpoint::save(&Self::slot_dir(&self.run_dir, round), &self.layout, &ck)?;
        Ok(())
    }

    /// The newest checkpoint that loads and verifies, from either slot, and
    /// a note for each slot that was skipped.
    pub(super) fn load_latest(&self, model: &Model) -> (Option<(u64, ModelState)>, Vec<String>) {
        let n = model.params();
        let mut best: Option<(u64, ModelState)> = None;
        let mut notes = Vec::new();
        for slot in 0..2u64 {
            let dir = Self::slot_dir(&self.run_dir, slot);
            match checkpoint::load(&dir) {
                Ok(None) => {}
                Ok(Some(ck)) if ck.model == self.model && ck.params.len() == n && ck.velocity.len() == n => {
                    if best.as_ref().is_none_or(|(r, _)| ck.round > *r) {
                        best = Some((ck.round, model.state_from(ck.params, ck.velocity)));
                    }
                }
                Ok(Some(_)) => notes.push(format!("checkpoint in {} is for another model; skipped", dir.display())),
                Err(e) => notes.push(format!("checkpoint in {} is damaged ({e}); skipped", dir.display())),
            }
        }
        (best, notes)
    }
}
