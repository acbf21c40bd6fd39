//! The state machine's inputs, outputs and settings.

use crate::envelope::DropReason;
use crate::id::{Hash, PeerId};
pub use crate::message::Fault;
use crate::message::{Contribution, Manifest};

/// A contribution to check, and where its blobs are.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckJob {
    /// The contribution's round.
    pub round: u64,
    /// The manifest that included it.
    pub manifest: Hash,
    /// The contributor.
    pub contributor: PeerId,
    /// What it announced.
    pub contribution: Contribution,
    /// The state blob at the start of the round.
    pub start: Hash,
    /// The segment the manifest drew for this contribution.
    pub segment: u32,
    /// The segments to re-execute, in order: a verifier re-executes the
    /// drawn one and the last; a referee only the one the accusation names
    /// (none when the accusation is about the final link or the blob).
    pub replay: Vec<u32>,
    /// The chain: inner-state hashes at steps 0, k, ..., H.
    pub leaves: Vec<Hash>,
}
use crate::time::Time;
use std::collections::BTreeMap;

/// Settings of the state machine (from the run spec and the node's flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// The run id.
    pub run: Hash,
    /// Round 1 starts once this many peers (counting ourselves) are present.
    pub min_peers: u32,
    /// Contributions close this long after the peer started the round.
    pub round_timeout: Time,
    /// Each next aggregator candidate waits this much longer.
    pub aggregator_timeout: Time,
    /// Period of hello messages.
    pub hello_interval: Time,
    /// A peer not heard from for this long is no longer a member.
    pub peer_ttl: Time,
    /// Leave after this round is applied.
    pub last_round: u64,
    /// The run's rounds (the spec's): a message about a later round is a
    /// lie, and is rejected before any arithmetic on its round.
    pub run_rounds: u64,
    /// Hash of the initial state (the same for every peer of the run).
    pub genesis: Hash,
    /// Delay before a blob that no provider served is asked for again.
    pub fetch_retry: Time,
    /// Rounds of asking every provider before giving up on a blob.
    pub max_fetch_attempts: u32,
    /// A request still unanswered after this long gets a parallel one to the
    /// next provider (a hedged request: a dead or slow provider does not
    /// hold up a round); the first good answer wins.
    pub fetch_hedge: Time,
    /// Most samples one contribution may claim (its averaging weight);
    /// 0 = no limit. From the spec: inner steps x batch size.
    pub max_samples: u64,
    /// A joiner syncs to a manifest only once more than this fraction of the
    /// active peers it knows confirm it (0.5 = a majority).
    pub sync_quorum: f64,
    /// Floor of the adaptive round deadline.
    pub min_round: Time,
    /// k of the adaptive round deadline (median + k * MAD).
    pub deadline_k: f64,
    /// Probability that a contribution gets a verifier.
    pub verify_rate: f64,
    /// Segments of a commitment chain.
    pub segments: u32,
    /// Referees of a dispute.
    pub referees: u32,
    /// Epochs and credits.
    pub ledger: crate::ledger::LedgerSpec,
}

impl Config {
    /// Defaults for the timers, given the spec's values.
    pub fn new(run: Hash, genesis: Hash, spec: &crate::spec::RunSpec, last_round: u64) -> Config {
        Config {
            run,
            min_peers: spec.min_peers,
            round_timeout: spec.timing.round_timeout_ms,
            aggregator_timeout: spec.timing.aggregator_timeout_ms,
            hello_interval: 500,
            peer_ttl: 5_000,
            last_round,
            run_rounds: spec.rounds,
            genesis,
            fetch_retry: 300,
            max_fetch_attempts: 20,
            fetch_hedge: 1_000,
            max_samples: u64::from(spec.train.inner_steps) * u64::from(spec.train.batch_size),
            sync_quorum: 0.5,
            min_round: spec.timing.min_round_ms,
            deadline_k: spec.timing.deadline_k,
            verify_rate: spec.verify.rate,
            segments: spec.verify.segments(spec.train.inner_steps),
            referees: spec.verify.referees,
            ledger: spec.ledger.clone(),
        }
    }
}

/// A control message from the network.
#[derive(Clone, Debug)]
pub struct Gossip {
    /// The raw envelope.
    pub bytes: Vec<u8>,
    /// The peer that published it (gossipsub's signed author), if the
    /// transport knows one. The envelope must be signed by this peer. `None`
    /// for envelopes that arrive as blobs (a missed manifest fetched from any
    /// provider), whose signature alone vouches for them.
    pub source: Option<PeerId>,
}

/// Why one request for a blob failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchFailure {
    /// The provider answered that it does not hold the blob.
    NotFound,
    /// The provider could not be reached or did not answer in time.
    Unreachable,
    /// The provider sent bytes that do not hash to what was asked: it is
    /// never asked again.
    WrongBytes,
}

/// Inputs to the state machine.
// A contribution (with its attestation) is about 300 bytes; events are
// moved once from the node into the machine, so boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum InEvent {
    /// The time [`Peer::next_timeout`](super::Peer::next_timeout) asked for
    /// has come (or any time: a tick never hurts).
    Tick,
    /// A control message; the machine answers with one [`OutEvent::Verdict`].
    Gossip(Gossip),
    /// The node finished the inner loop of `round` and stored its encoded
    /// pseudo-gradient (and the blobs its commitments name).
    TrainingDone {
        /// The round trained.
        round: u64,
        /// What to announce (its `base_state` is set by the machine).
        contribution: Contribution,
    },
    /// A blob is now in the local store (fetched and verified).
    BlobReady(Hash),
    /// One [`OutEvent::Request`] failed.
    RequestFailed {
        /// The blob.
        hash: Hash,
        /// The provider that was asked.
        from: PeerId,
        /// What went wrong.
        why: FetchFailure,
    },
    /// A blob the machine believed local is gone (evicted): fetch it again.
    BlobLost(Hash),
    /// The transport holds a connection to this peer (it is asked first).
    Connected(PeerId),
    /// The transport's last connection to this peer closed.
    Disconnected(PeerId),
    /// The node applied the manifest of `round`; `state` is the hash of the
    /// resulting state blob (now in the local store).
    Applied {
        /// The round applied.
        round: u64,
        /// The new state hash.
        state: Hash,
    },
    /// The node read a commitment chain blob (after its `BlobReady`): the
    /// state hashes it lists.
    Chain {
        /// The chain blob.
        hash: Hash,
        /// Its 32-byte entries.
        leaves: Vec<Hash>,
    },
    /// The node finished an [`OutEvent::Check`].
    Checked {
        /// The manifest that included the contribution.
        manifest: Hash,
        /// The contributor.
        contributor: PeerId,
        /// What it found, if anything.
        fault: Option<Fault>,
    },
    /// The node loaded the state blob of the manifest of `round`.
    StateLoaded {
        /// The round whose start state was loaded.
        round: u64,
    },
    /// Leave now (Ctrl+C).
    Shutdown,
}

/// The machine's judgement of one [`InEvent::Gossip`]: what the transport
/// tells its gossip layer (forward, or not, and whether to hold it against
/// the peer that sent it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and new: forward it.
    Accept,
    /// Harmless but not worth forwarding (stale, our own).
    Ignore(Option<DropReason>),
    /// Invalid: do not forward, and count it against the sender.
    Reject(DropReason),
}

/// What the node must do.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum OutEvent {
    /// Publish these envelope bytes to the run's topic.
    Broadcast(Vec<u8>),
    /// The judgement of the gossip message just handled.
    Verdict(Verdict),
    /// Ask one provider for a blob. The node answers with
    /// [`InEvent::BlobReady`] (bytes checked against `hash`) or
    /// [`InEvent::RequestFailed`], exactly once. Parallel requests for one
    /// blob are the machine's hedging: the first good answer wins.
    Request {
        /// The blob.
        hash: Hash,
        /// What it is (for accounting and size limits).
        kind: BlobKind,
        /// The provider to ask.
        from: PeerId,
    },
    /// Keep these bytes in the blob store under `hash` (= BLAKE3 of the
    /// bytes) and serve them: a signed manifest envelope, for peers that
    /// missed its broadcast.
    KeepBlob {
        /// BLAKE3 of `bytes`.
        hash: Hash,
        /// The envelope.
        bytes: Vec<u8>,
    },
    /// Run the inner loop of `round` from the current state.
    StartTraining {
        /// The round.
        round: u64,
        /// The state it starts from.
        base_state: Hash,
    },
    /// Load the state blob `state` (the start state of `round`).
    LoadState {
        /// The round.
        round: u64,
        /// The state blob.
        state: Hash,
    },
    /// Apply the manifest of `round`: average the entries' pseudo-gradients
    /// in order, take the outer step, store the new state blob, then answer
    /// [`InEvent::Applied`].
    Apply {
        /// The round.
        round: u64,
        /// Who signed the manifest.
        aggregator: PeerId,
        /// The manifest.
        manifest: Manifest,
    },
    /// Check a contribution (the blobs it names are in the store): the chain
    /// starts at the round's state, the drawn segment and the last one
    /// re-execute to their committed ends, the last state gives the raw
    /// pseudo-gradient, and the blob decodes to it within bounds. Answer
    /// [`InEvent::Checked`].
    Check(CheckJob),
    /// This peer is about to sign a contribution or manifest for `round`:
    /// persist it before sending, so that a restarted peer never signs a
    /// second, different one for the same round (see [`Peer::sit_out`]).
    ///
    /// [`Peer::sit_out`]: super::Peer::sit_out
    Signing {
        /// The round.
        round: u64,
    },
    /// A manifest excluded `peer` (for its misbehaviour in `round`):
    /// persist the ban.
    Excluded {
        /// Who.
        peer: PeerId,
        /// The round of the misbehaviour (or, learned while syncing, of the
        /// manifest that listed it).
        round: u64,
    },
    /// The run is already over for this peer: it resumed from the state
    /// after the run's last round. Followed by [`OutEvent::Finished`].
    /// The ledger applied this manifest: a node keeps it, to rebuild the
    /// ledger after a restart.
    Record {
        /// Its round.
        round: u64,
        /// Its id.
        id: Hash,
        /// The manifest.
        manifest: Box<Manifest>,
    },
    /// The ledger closed these epochs (read them with [`crate::Peer::ledger`]).
    EpochsClosed(Vec<u64>),
    /// The signer of an applied manifest computed another root for an
    /// epoch than this peer did.
    LedgerDiffers {
        /// The epoch.
        epoch: u64,
        /// This peer's root.
        ours: [u8; 32],
        /// The manifest's.
        theirs: [u8; 32],
        /// The manifest's signer.
        signer: PeerId,
    },
    RunOver {
        /// The last round, applied.
        round: u64,
        /// The state after it.
        state: Hash,
    },
    /// The peer has left the run (its last round is applied, or Shutdown).
    Finished,
}

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlobKind {
    /// An encoded pseudo-gradient.
    Contribution,
    /// Parameters + outer-optimizer state.
    State,
    /// A signed manifest envelope (fetched by a peer that missed it).
    Manifest,
    /// A commitment chain: the hashes of a contribution's inner states.
    Chain,
    /// An inner state (parameters, optimizer moments, step) of a chain.
    InnerState,
}

/// Where this peer is in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No state yet: waiting for `min_peers` or for a manifest to sync from.
    Waiting,
    /// Fetching and loading the start state of `round`.
    Syncing(u64),
    /// Inner loop of the round running.
    Training(u64),
    /// Own contribution announced; waiting for the manifest (or making it).
    Gathering(u64),
    /// Manifest known; fetching the blobs it names.
    Collecting(u64),
    /// The node is applying the manifest.
    Applying(u64),
    /// The last round is applied; the peer stays a moment so that a
    /// conflicting manifest of that round can still be settled, then leaves.
    Finishing(u64),
    /// Left the run.
    Done,
}

/// Counters a node shows and tests assert on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Dropped messages by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Manifests this peer published.
    pub manifests_published: u64,
    /// Valid manifests that differed from the one already accepted.
    pub conflicting_manifests: u64,
    /// Manifests given up because an entry's blob was served by nobody.
    pub unservable_manifests: u64,
    /// Times this peer fell back to a state sync.
    pub resyncs: u64,
    /// Rounds applied.
    pub rounds_applied: u64,
    /// Manifests from another history (a partition, a liar) not applied.
    pub foreign_manifests: u64,
    /// Times this peer left its history for a better-supported one.
    pub switched_history: u64,
    /// Requests sent in parallel to another provider because the first
    /// were slow to answer.
    pub hedged_requests: u64,
    /// Blob requests sent.
    pub requests: u64,
    /// Providers that served wrong bytes (never asked again).
    pub bad_providers: u64,
    /// Active peers that announced they left.
    pub departures: u64,
    /// Peers caught announcing two different contributions for one round.
    pub equivocations: u64,
    /// Checks this peer started (as verifier or referee).
    pub checks_started: u64,
    /// Checks this peer finished.
    pub checks_done: u64,
    /// Of those, the ones that found a fault.
    pub faults_found: u64,
    /// Verifiers' findings received and accepted.
    pub verdicts_seen: u64,
    /// Disputes opened.
    pub disputes: u64,
    /// Peers excluded by applied manifests.
    pub excluded: u64,
    /// Peers caught signing a manifest without their own contribution in
    /// it (banned here).
    pub forgeries: u64,
    /// Checks dropped because their contributor could not be reached.
    pub checks_unreachable: u64,
    /// Manifests dropped because their signer may not sign them in this
    /// peer's view (not a contributor of the round before).
    pub unauthorized_manifests: u64,
    /// Applied manifests whose epoch root differed from ours.
    pub ledger_mismatches: u64,
}
