//! The RL node's model side: a thread that owns the policy ([`Learner`]),
//! generates rollouts, re-scores external ones and takes GRPO updates. The
//! event loop sends it jobs and gets typed results back; it never touches
//! the trainer itself.

use protocol::rollouts::{Candidate, Rollout, TaskRef};
use protocol::{PeerId, RlSpec};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;
use tokio::sync::mpsc;
use trainer::rl::{Learner, Update};

/// A job for the learner thread.
pub(crate) enum Job {
    /// Generate the rollouts of the round it names.
    Generate(u64),
    /// Train round `round` on `local` and the first `external` of
    /// `candidates` (in the pool's order, re-scored on arrival).
    Train { round: u64, local: Vec<Rollout>, candidates: Vec<Candidate>, external: usize, evaluate: bool },
}

/// What the learner thread reports.
pub(crate) enum Done {
    /// The warm-up went this far.
    Warmup { step: u32, total: u32, loss: f32 },
    /// The warm-up is over: the initial policy's held-out accuracy.
    Ready { accuracy: Vec<(&'static str, f32)>, secs: f64 },
    /// A round's rollouts, scored.
    Generated { round: u64, rollouts: Vec<Rollout>, tokens: usize, secs: f64 },
    /// A round's update.
    Trained(Trained),
    /// The model side failed.
    Failed(String),
}

/// A round's update.
pub(crate) struct Trained {
    pub round: u64,
    pub update: Update,
    /// External groups used: (publisher, its round, task).
    pub taken: Vec<(PeerId, u64, TaskRef)>,
    pub accuracy: Option<Vec<(&'static str, f32)>>,
    pub tokens: usize,
    pub secs: f64,
}

/// Starts the learner thread for the peer whose task and sampling seeds come from `me`.
pub(crate) fn start(spec: RlSpec, me: u64) -> (std_mpsc::Sender<Job>, mpsc::UnboundedReceiver<Done>) {
    let (jobs, jobs_rx) = std_mpsc::channel::<Job>();
    let (done, done_rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("rl-learner".into())
        .spawn(move || {
            if let Err(e) = run(&spec, me, &jobs_rx, &done) {
                done.send(Done::Failed(e.to_string())).ok();
            }
        })
        .expect("spawning a thread");
    (jobs, done_rx)
}

fn run(
    spec: &RlSpec,
    me: u64,
    jobs: &std_mpsc::Receiver<Job>,
    done: &mpsc::UnboundedSender<Done>,
) -> Result<(), trainer::TrainerError> {
    let started = Instant::now();
    let mut learner = Learner::new(spec, me, &mut |step, total, loss| {
        done.send(Done::Warmup { step, total, loss }).ok();
    })?;
    let accuracy = learner.evaluate()?;
    done.send(Done::Ready { accuracy, secs: started.elapsed().as_secs_f64() }).ok();
    // Ends when the event loop drops its sender.
    while let Ok(job) = jobs.recv() {
        let started = Instant::now();
        match job {
            Job::Generate(round) => {
                let g = learner.generate(round)?;
                let secs = started.elapsed().as_secs_f64();
                done.send(Done::Generated { round, rollouts: g.rollouts, tokens: g.tokens, secs }).ok();
            }
            Job::Train { round, mut local, candidates, external, evaluate } => {
                // Candidates were re-scored when they arrived (Pool::offer).
                let mut taken = Vec::new();
                for c in candidates.into_iter().take(external) {
                    taken.push((c.peer, c.round, c.rollout.task));
                    local.push(c.rollout);
                }
                let tokens: usize = local.iter().flat_map(|g| &g.completions).map(|c| c.len() + 1).sum();
                let update = learner.train(&local)?;
                let accuracy = if evaluate { Some(learner.evaluate()?) } else { None };
                let secs = started.elapsed().as_secs_f64();
                done.send(Done::Trained(Trained { round, update, taken, accuracy, tokens, secs })).ok();
            }
        }
    }
    Ok(())
}
