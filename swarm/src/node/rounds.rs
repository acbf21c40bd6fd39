//! The worker's results in the event loop: trained contributions and applied
//! rounds become protocol events, blobs and round reports.

use super::{Applying, EventLoop};
use crate::events::NodeEvent;
use crate::report::RoundReport;
use crate::worker::{AppliedRound, CheckBlobs, JobKind, WorkerEvent};
use protocol::round::CheckJob;
use protocol::{BlobKind, Contribution, InEvent, Manifest, PeerId};

impl EventLoop {
    /// Our training of a round is done: keep its blobs, announce it.
    pub(super) fn on_trained(&mut self, mut t: crate::worker::Trained) {
        if let Some(c) = self.copied(t.round) {
            (t.samples, t.raw, t.residual) = (c.samples, c.raw, c.residual);
        }
        let payload = t.blob.len() as u64;
        let hash = self.blobs.add(t.round, BlobKind::Contribution, t.blob);
        // The chain and its states are kept for verifiers and referees (the
        // worker already wrote them to disk, for a restart).
        let chain = self.blobs.add(t.round, BlobKind::Chain, t.chain);
        for s in t.states {
            self.blobs.add(t.round, BlobKind::InnerState, s);
        }
        self.rounds.entry(t.round).or_default().own = Some((t.train_loss, payload, t.train_ms));
        let mut contribution = Contribution {
            hash,
            samples: t.samples,
            base_state: protocol::Hash::default(), // the protocol's state
            raw: t.raw,
            residual: t.residual,
            chain,
            payee: self.payee,
            attest: self.attestation,
        };
        if let Some(c) = self.copied(t.round) {
            (contribution.hash, contribution.chain) = (c.hash, c.chain);
        }
        self.drive(InEvent::TrainingDone { round: t.round, contribution });
    }

    pub(super) fn on_worker(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::Note(s) => self.info(s),
            WorkerEvent::Step { round, step, total, loss } => {
                self.events.send(NodeEvent::TrainStep { round, step, total, loss }).ok();
            }
            WorkerEvent::Trained(t) => {
                if let Some(t) = self.hold_to_copy(t) {
                    self.on_trained(t);
                }
            }
            WorkerEvent::Applied(a) => self.on_applied(a),
            WorkerEvent::Loaded { round, state } => {
                self.info(format!("synced to the state of round {round} ({})", state.short()));
                self.drive(InEvent::StateLoaded { round });
            }
            WorkerEvent::Checked { manifest, contributor, mut fault, took } => {
                if self.lies(crate::adversary::Adversary::Frame) {
                    fault = Some(protocol::round::Fault::Segment);
                }
                let what = fault.map_or("ok".to_string(), |f| format!("FAULT {f:?}"));
                self.info(format!("checked {}'s contribution: {what} ({} ms)", contributor.short(), took.as_millis()));
                self.drive(InEvent::Checked { manifest, contributor, fault });
            }
            WorkerEvent::Failed { job: JobKind::Check, round, error } => {
                self.info(format!("round {round}: a check failed to run: {error}"));
            }
            WorkerEvent::Failed { job: JobKind::Train, round, error } => {
                self.info(format!("round {round}: training failed: {error}"));
            }
            WorkerEvent::Failed { job: JobKind::Load, round, error } => {
                self.info(format!("cannot load the state of round {round}: {error}"));
            }
            WorkerEvent::Failed { job: JobKind::Apply, round, error } => {
                self.info(format!("applying round {round} failed: {error}"));
                self.drive(InEvent::Shutdown);
            }
        }
    }

    pub(super) fn start_apply(&mut self, round: u64, aggregator: PeerId, manifest: Manifest) {
        let mut bytes = Vec::new();
        for e in &manifest.entries {
            self.blobs.retag(&e.hash(), round);
            match self.blobs.get(&e.hash()) {
                Some(b) => bytes.push(b),
                None => {
                    // The protocol only asks to apply once every blob is here.
                    self.info(format!("round {round}: blob {} was evicted; fetching it again", e.hash().short()));
                    return self.queue.push_back(InEvent::BlobLost(e.hash()));
                }
            }
        }
        if let Err(e) = self.contributors.record(round, manifest.entries.iter().map(|e| e.peer)) {
            self.info(format!("cannot save round {round}'s contributors: {e}"));
        }
        let me = self.peer.id();
        if aggregator == me {
            self.info(format!("round {round}: I aggregated {} contributions", manifest.entries.len()));
        }
        self.rounds.entry(round).or_default().applying = Some(Applying {
            contributed: manifest.entries.iter().any(|e| e.peer == me),
            contributors: manifest.entries.len(),
            aggregator: aggregator.short(),
        });
        self.worker.apply(round, manifest, bytes);
    }

    /// The blobs a check reads, from the store.
    pub(super) fn start_check(&mut self, job: CheckJob) {
        let get = |h: &protocol::Hash| self.blobs.get(h);
        // The start state of each segment to re-execute (the first is the
        // round's state, computed by the worker).
        let starts: Vec<Option<std::sync::Arc<Vec<u8>>>> =
            job.replay.iter().map(|&s| if s == 0 { None } else { job.leaves.get(s as usize).and_then(get) }).collect();
        let all_here = job.replay.iter().zip(&starts).all(|(s, b)| *s == 0 || b.is_some());
        let blobs = (get(&job.start), get(&job.contribution.hash), job.leaves.last().and_then(get));
        match (blobs, all_here) {
            ((Some(start), Some(blob), Some(last)), true) => {
                self.worker.check(job, CheckBlobs { start, blob, starts, last });
            }
            _ => self.info(format!(
                "round {}: a blob to check {}'s contribution is gone",
                job.round,
                job.contributor.short()
            )),
        }
    }

    pub(super) fn on_excluded(&mut self, peer: PeerId, round: u64) {
        self.info(format!("peer {} is excluded from the run (for round {round})", peer.short()));
        if let Err(e) = self.bans.add(peer) {
            self.info(format!("cannot save the exclusion: {e}"));
        }
        if let Some(lp) = crate::identity::libp2p_peer(&peer) {
            let _ = self.swarm.disconnect_peer_id(lp);
        }
    }

    fn on_applied(&mut self, a: AppliedRound) {
        let round = a.round;
        self.blobs.insert_verified(round, a.hash, BlobKind::State, a.blob);
        self.blobs.evict_before(round);
        if !a.stepped.rejected.is_empty() {
            let n = a.stepped.rejected.len();
            self.info(format!("round {round}: {n} contributions did not decode and were skipped"));
        }
        let notes = self.rounds.remove(&round).unwrap_or_default();
        self.rounds.retain(|r, _| *r > round);
        let applying =
            notes.applying.unwrap_or(Applying { contributed: false, contributors: 0, aggregator: String::new() });
        let traffic = self.traffic.total.since(&self.traffic.mark);
        self.traffic.mark = self.traffic.total;
        let report = RoundReport {
            round,
            state_hash: a.hash.to_hex(),
            eval_loss: a.stepped.eval.map_or(f32::NAN, |e| e.loss),
            eval_accuracy: a.stepped.eval.and_then(|e| e.accuracy),
            eval_perplexity: a.stepped.eval.filter(|_| self.model.language).map(|e| e.loss.exp()),
            bytes_sent: traffic.total().sent,
            bytes_received: traffic.total().received,
            traffic,
            peers: notes.peers.max(self.peer.members() + 1),
            contributors: applying.contributors,
            aggregator: applying.aggregator,
            contributed: applying.contributed,
            train_loss: notes.own.map(|o| o.0),
            payload_bytes: notes.own.map_or(0, |o| o.1),
            train_ms: notes.own.map(|o| o.2),
            params: self.model.params,
            codec: self.model.codec.clone(),
            peer: self.peer.id().short(),
            elapsed_ms: self.now(),
            bad_providers: self.peer.stats().bad_providers,
            peers_left: self.peer.stats().departures,
            verified: self.peer.stats().checks_done,
            disputes: self.peer.stats().disputes,
            excluded: self.peer.stats().excluded,
            banned: self.peer.stats().forgeries,
        };
        self.events.send(NodeEvent::Round(Box::new(report))).ok();
        self.drive(InEvent::Applied { round, state: a.hash });
    }
}
