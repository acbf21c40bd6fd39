//! The model worker: the one owner of the model side of a peer. It holds the
//! model and its data, the codec, the error-feedback residual, the model
//! state and the checkpoints; the event loop sends it jobs (train, apply,
//! load) through a [`Worker`] handle and gets typed [`WorkerEvent`]s back.
//!
//! The worker is a task of its own. Heavy work runs on blocking threads, in
//! two lanes: training (which holds the residual) and the state (apply and
//! load, which hold the state). An apply never waits for a stale inner loop
//! still running; a job that needs what another job holds waits in a queue
//! until it comes back.

mod check;
mod checkpoints;
mod error;
mod model;

pub use check::CheckBlobs;
pub use checkpoints::Checkpoints;
pub use error::WorkerError;
pub use model::{Evaluation, Model, ModelState, Stepped, Trained, batch_seed, hash_f32};
pub use trainer::Backend;

use protocol::codec::ErrorFeedback;
use protocol::round::{CheckJob, Fault};
use protocol::{Hash, Manifest, PeerId, RunSpec};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The kind of a job, for error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// The inner loop.
    Train,
    /// The outer step.
    Apply,
    /// Loading a synced state.
    Load,
    /// Checking another peer's contribution.
    Check,
}

/// What the worker tells the event loop.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Something a person may want to read.
    Note(String),
    /// One inner step done.
    Step {
        /// The round.
        round: u64,
        /// Step, from 1.
        step: u32,
        /// Steps in the round.
        total: u32,
        /// The step's loss.
        loss: f32,
    },
    /// The inner loop of a round finished.
    Trained(Trained),
    /// A round was applied.
    Applied(AppliedRound),
    /// A check of another peer's contribution finished.
    Checked {
        /// The manifest that included it.
        manifest: Hash,
        /// The contributor.
        contributor: PeerId,
        /// The first fault found, if any.
        fault: Option<Fault>,
        /// How long the check took.
        took: std::time::Duration,
    },
    /// A synced state was loaded.
    Loaded {
        /// The round whose start state it is.
        round: u64,
        /// Its hash.
        state: Hash,
    },
    /// A job failed.
    Failed {
        /// Which.
        job: JobKind,
        /// Its round.
        round: u64,
        /// Why.
        error: WorkerError,
    },
}

/// A round applied by the worker.
#[derive(Debug)]
pub struct AppliedRound {
    /// The round.
    pub round: u64,
    /// The new state blob.
    pub blob: Arc<Vec<u8>>,
    /// Its hash.
    pub hash: Hash,
    /// The outer step's outcome.
    pub stepped: Stepped,
}

/// What the worker found at start.
#[derive(Debug)]
pub struct WorkerInit {
    /// Parameters of the model.
    pub params: usize,
    /// The codec's short name.
    pub codec: String,
    /// A language model: rounds report the held-out perplexity too.
    pub language: bool,
    /// The genesis state blob.
    pub genesis: Vec<u8>,
    /// The newest good checkpoint's round and state blob.
    pub restored: Option<(u64, Vec<u8>)>,
    /// Checkpoints skipped, and why.
    pub notes: Vec<String>,
}

enum Job {
    Check { job: Box<CheckJob>, blobs: CheckBlobs },
    Train { round: u64, base_state: Hash },
    Apply { round: u64, manifest: Manifest, blobs: Vec<Arc<Vec<u8>>> },
    Load { round: u64, state: Hash, blob: Arc<Vec<u8>> },
}

/// A handle to the worker: jobs in, [`WorkerEvent`]s out (on the receiver
/// [`start`] returns). Dropping every handle stops the worker.
#[derive(Clone, Debug)]
pub struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Worker {
    /// Runs the inner loop of `round` from the current state.
    pub fn train(&self, round: u64, base_state: Hash) {
        let _ = self.jobs.send(Job::Train { round, base_state });
    }

    /// Applies `manifest` (its blobs in entry order) to the current state,
    /// then checkpoints it.
    pub fn apply(&self, round: u64, manifest: Manifest, blobs: Vec<Arc<Vec<u8>>>) {
        let _ = self.jobs.send(Job::Apply { round, manifest, blobs });
    }

    /// Replaces the current state with a state blob (`state` is its hash).
    pub fn load(&self, round: u64, state: Hash, blob: Arc<Vec<u8>>) {
        let _ = self.jobs.send(Job::Load { round, state, blob });
    }

    /// Checks another peer's contribution (runs beside training).
    pub fn check(&self, job: CheckJob, blobs: CheckBlobs) {
        let _ = self.jobs.send(Job::Check { job: Box::new(job), blobs });
    }
}

/// Loads the spec's model, the newest checkpoint in `run_dir` (if any), and
/// starts the worker task for peer `me`.
pub fn start(
    spec: &RunSpec,
    me: PeerId,
    run_dir: Option<PathBuf>,
    adversary: Option<crate::adversary::Adversary>,
    backend: Backend,
) -> Result<(Worker, mpsc::UnboundedReceiver<WorkerEvent>, WorkerInit), WorkerError> {
    let model = Arc::new(Model::new(spec)?.with_backend(backend)?.with_adversary(adversary));
    let review_dir = run_dir.as_ref().map(|d| d.join("review"));
    let checkpoints = run_dir.map(|d| Checkpoints::new(d, &model));
    let (restored, notes) = match &checkpoints {
        Some(c) => c.load_latest(&model),
        None => (None, Vec::new()),
    };
    let state = model.genesis();
    let init = WorkerInit {
        params: model.params(),
        codec: model.codec().label(),
        language: trainer::is_language_model(&spec.model),
        genesis: state.encode(),
        restored: restored.map(|(r, s)| (r, s.encode())),
        notes,
    };
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    let (events, events_rx) = mpsc::unbounded_channel();
    let (done, done_rx) = mpsc::unbounded_channel();
    let actor = Actor {
        run: spec.run_id(),
        me,
        feedback: Some(model.feedback()),
        model,
        state: Some(state),
        checkpoints,
        review_dir,
        waiting: VecDeque::new(),
        events,
        done,
        replay: adversary == Some(crate::adversary::Adversary::Replay),
        previous: None,
    };
    tokio::spawn(actor.run(jobs_rx, done_rx));
    Ok((Worker { jobs }, events_rx, init))
}

/// A finished blocking job, handing back what it held.
enum Done {
    Trained(Result<Trained, WorkerError>, ErrorFeedback, u64),
    Applied(Result<(Stepped, Vec<u8>, Hash), WorkerError>, ModelState, u64),
    Loaded(Result<(), WorkerError>, ModelState, u64, Hash),
}

struct Actor {
    model: Arc<Model>,
    run: Hash,
    me: PeerId,
    /// None while an apply or load holds it.
    state: Option<ModelState>,
    /// None while an inner loop holds it.
    feedback: Option<ErrorFeedback>,
    checkpoints: Option<Checkpoints>,
    /// Where our review blobs are kept on disk (`runs/<id>/review`).
    review_dir: Option<PathBuf>,
    /// Jobs waiting for the state or the residual to come back.
    waiting: VecDeque<Job>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    done: mpsc::UnboundedSender<Done>,
    /// Announce the previous round's contribution again (an adversary).
    replay: bool,
    previous: Option<Trained>,
}

impl Actor {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>, mut done: mpsc::UnboundedReceiver<Done>) {
        loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(j) => self.waiting.push_back(j),
                    None => return,
                },
                Some(d) = done.recv() => self.finished(d),
            }
            self.start_ready();
        }
    }

    /// Starts, in order, every waiting job whose lane is free.
    fn start_ready(&mut self) {
        let mut still = VecDeque::new();
        while let Some(job) = self.waiting.pop_front() {
            let free = match job {
                Job::Check { .. } => true,
                Job::Train { .. } => self.feedback.is_some() && self.state.is_some(),
                Job::Apply { .. } | Job::Load { .. } => self.state.is_some(),
            };
            // Keep the order within a lane: nothing overtakes a waiting job.
            let blocked = still.iter().any(|w: &Job| same_lane(w, &job));
            if free && !blocked {
                self.begin(job);
            } else {
                still.push_back(job);
            }
        }
        self.waiting = still;
    }

    fn begin(&mut self, job: Job) {
        match job {
            Job::Check { job, blobs } => {
                let (model, events, run) = (self.model.clone(), self.events.clone(), self.run);
                tokio::task::spawn_blocking(move || {
                    let started = std::time::Instant::now();
                    let fault = model.check(&run, &job, &blobs);
                    let took = started.elapsed();
                    let (manifest, contributor) = (job.manifest, job.contributor);
                    let _ = events.send(WorkerEvent::Checked { manifest, contributor, fault, took });
                });
            }
            Job::Train { round, base_state } => self.begin_train(round, base_state),
            Job::Apply { round, manifest, blobs } => {
                let (Some(mut state), model) = (self.state.take(), self.model.clone()) else { return };
                let (done, ck) = (self.done.clone(), self.checkpoints.clone());
                tokio::task::spawn_blocking(move || {
                    let r = model.apply(&mut state, &manifest, &blobs).and_then(|stepped| {
                        if let Some(ck) = &ck {
                            ck.save(round, &state)?;
                        }
                        let blob = state.encode();
                        let hash = Hash::of(&blob);
                        Ok((stepped, blob, hash))
                    });
                    let _ = done.send(Done::Applied(r, state, round));
                });
            }
            Job::Load { round, state: hash, blob } => {
                let Some(mut state) = self.state.take() else { return };
                let (n, done) = (self.model.params(), self.done.clone());
                tokio::task::spawn_blocking(move || {
                    let r = state.load(&blob, n);
                    let _ = done.send(Done::Loaded(r, state, round, hash));
                });
            }
        }
    }

    fn begin_train(&mut self, round: u64, base_state: Hash) {
        let (Some(state), Some(mut feedback)) = (self.state.as_ref(), self.feedback.take()) else { return };
        if state.hash() != base_state {
            self.note(format!("round {round}: local state differs from the protocol's; training anyway"));
        }
        let global = state.params.clone();
        let seed = batch_seed(&self.run, round, &self.me);
        let (model, done, events) = (self.model.clone(), self.done.clone(), self.events.clone());
        let total = model.spec().train.inner_steps;
        let review_dir = self.review_dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut progress = |step: u32, loss: f32| {
                let _ = events.send(WorkerEvent::Step { round, step, total, loss });
            };
            let r = model.train(&mut feedback, &global, round, seed, &mut progress);
            // On disk before the contribution is announced: a peer killed
            // right after announcing still serves them once restarted.
            if let (Ok(t), Some(dir)) = (&r, &review_dir)
                && let Err(e) = crate::kept::save(dir, round, &t.review_blobs())
            {
                let note = format!("round {round}: could not keep the review blobs in {}: {e}", dir.display());
                let _ = events.send(WorkerEvent::Note(note));
            }
            let _ = done.send(Done::Trained(r, feedback, round));
        });
    }

    fn finished(&mut self, d: Done) {
        let (job, round, result) = match d {
            Done::Trained(r, feedback, round) => {
                self.feedback = Some(feedback);
                // Only the replay adversary keeps last round's result: for a
                // big model it is several parameter-sized vectors (6 for
                // smollm2-135m, 3.4 GB) held for a whole round.
                let r = r.map(|t| {
                    if !self.replay {
                        return t;
                    }
                    match self.previous.replace(t.clone()) {
                        Some(old) => Trained { round: t.round, ..old },
                        None => t,
                    }
                });
                (JobKind::Train, round, r.map(WorkerEvent::Trained))
            }
            Done::Applied(r, state, round) => {
                self.state = Some(state);
                let r = r.map(|(stepped, blob, hash)| {
                    WorkerEvent::Applied(AppliedRound { round, blob: Arc::new(blob), hash, stepped })
                });
                (JobKind::Apply, round, r)
            }
            Done::Loaded(r, state, round, hash) => {
                self.state = Some(state);
                (JobKind::Load, round, r.map(|()| WorkerEvent::Loaded { round, state: hash }))
            }
        };
        let ev = result.unwrap_or_else(|error| WorkerEvent::Failed { job, round, error });
        let _ = self.events.send(ev);
    }

    fn note(&self, s: String) {
        let _ = self.events.send(WorkerEvent::Note(s));
    }
}

fn same_lane(a: &Job, b: &Job) -> bool {
    matches!((a, b), (Job::Train { .. }, Job::Train { .. }))
        || matches!((a, b), (Job::Apply { .. } | Job::Load { .. }, Job::Apply { .. } | Job::Load { .. }))
}
