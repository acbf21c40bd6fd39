//! What an RL node tells its user: one readable line (or one JSON object) per round.

use serde::Serialize;

/// Events of an RL node.
#[derive(Clone, Debug)]
pub enum RlEvent {
    /// Listening on this full address (with `/p2p/<id>`).
    Listening(String),
    /// A human-readable status line.
    Info(String),
    /// One step of the supervised warm-up.
    Warmup {
        /// Step, from 1.
        step: u32,
        /// Steps in all.
        total: u32,
        /// Its loss.
        loss: f32,
    },
    /// A round is done.
    Round(Box<RlRound>),
    /// The node left.
    Finished,
}

/// One round of an RL peer.
#[derive(Clone, Debug, Serialize)]
pub struct RlRound {
    /// The round (policy updates so far).
    pub round: u64,
    /// Mean reward of this round's own completions (rewards are 0 or 1: the
    /// fraction answered right).
    pub reward: f32,
    /// Mean reward per family (of this round's own completions).
    pub reward_by_family: Vec<(String, f32)>,
    /// Greedy held-out accuracy per family (rounds with an evaluation).
    pub eval: Option<Vec<(String, f32)>>,
    /// Tokens generated and trained on per second (this round's work).
    pub tokens_per_s: f64,
    /// Task groups published.
    pub shared: usize,
    /// External task groups trained on.
    pub taken: usize,
    /// External task groups rejected by re-scoring.
    pub rejected: usize,
    /// Rollout batches fetched on the blob protocol and checked against
    /// their announcements since the last round's line.
    pub fetched: usize,
    /// Their bytes.
    pub fetched_bytes: u64,
    /// Announcements given up on since the last round's line: no provider
    /// served their payload (or only wrong bytes).
    pub unserved: usize,
    /// Answers of bytes that were not the announced payload, since the
    /// last round's line (their providers are never asked again).
    pub wrong_bytes: usize,
    /// Peers dropped for claimed rewards that did not re-score (in all).
    pub dropped_peers: usize,
    /// Peers whose rollouts are in the pool.
    pub pool_peers: usize,
    /// GRPO surrogate loss.
    pub loss: f32,
    /// Completions trained on.
    pub samples: usize,
    /// Seconds the round took (generation, waiting, update).
    pub secs: f64,
}

impl RlRound {
    /// The readable line.
    pub fn line(&self) -> String {
        let fams: Vec<String> = self.reward_by_family.iter().map(|(f, r)| format!("{f} {r:.2}")).collect();
        let mut s = format!(
            "round {:>3}: reward {:.3} ({}) | {:.0} tok/s | rollouts shared {} taken {} rejected {} | fetched {} batches ({:.1} KB){} | loss {:+.4} on {} completions | {:.1} s",
            self.round,
            self.reward,
            fams.join(", "),
            self.tokens_per_s,
            self.shared,
            self.taken,
            self.rejected,
            self.fetched,
            self.fetched_bytes as f64 / 1e3,
            match self.unserved {
                0 => String::new(),
                n => format!(", {n} unserved"),
            },
            self.loss,
            self.samples,
            self.secs
        );
        if let Some(eval) = &self.eval {
            let mean = eval.iter().map(|(_, a)| a).sum::<f32>() / eval.len().max(1) as f32;
            s.push_str(&format!(" | held-out accuracy {mean:.3}"));
        }
        s
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a round report serialises")
    }
}
