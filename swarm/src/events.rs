//! What a node tells its owner.

use crate::report::RoundReport;

/// An event of a running node, in the order they happen.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// Listening on this full address (with `/p2p/<id>`).
    Listening(String),
    /// A human-readable status line (joins, syncs, drops).
    Info(String),
    /// One inner step done.
    TrainStep {
        /// The round.
        round: u64,
        /// Step, from 1.
        step: u32,
        /// Steps in the round.
        total: u32,
        /// The step's loss.
        loss: f32,
    },
    /// A round was applied.
    Round(Box<RoundReport>),
    /// The run was already over when the node started: it resumed from the
    /// checkpoint of the run's last round.
    RunOver {
        /// The last round.
        round: u64,
        /// The state hash after it (hex).
        state_hash: String,
    },
    /// The node left the run.
    Finished,
}
