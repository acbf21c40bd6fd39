//! The state machine's inputs, outputs and settings.

use crate::Time;
use crate::envelope::DropReason;
use crate::id::{Hash, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One included contribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The contributor.
    pub peer: PeerId,
    /// BLAKE3 of its encoded pseudo-gradient.
    pub hash: Hash,
    /// Its sample count (averaging weight).
    pub samples: u64,
}

/// The aggregator's signed decision for a round (the round and aggregator are
/// the envelope's round and sender).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Hash of the state blob (parameters + outer optimizer) at the start of
    /// the round; late joiners fetch it.
    pub state: Hash,
    /// The contributions to apply, ordered by peer id.
    pub entries: Vec<ManifestEntry>,
}

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
    /// Hash of the initial state (the same for every peer of the run).
    pub genesis: Hash,
    /// Delay before a failed fetch is retried.
    pub fetch_retry: Time,
    /// Fetch attempts before giving up on a blob.
    pub max_fetch_attempts: u32,
    /// A fetch still unanswered after this long is also asked of the
    /// providers learned since (a hedged request: a dead or slow provider
    /// does not hold up a round).
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
}

impl Config {
    /// Defaults for the timers, given the spec's values.
    pub fn new(run: Hash, genesis: Hash, spec: &crate::RunSpec, last_round: u64) -> Config {
        Config {
            run,
            min_peers: spec.min_peers,
            round_timeout: spec.timing.round_timeout_ms,
            aggregator_timeout: spec.timing.aggregator_timeout_ms,
            hello_interval: 500,
            peer_ttl: 5_000,
            last_round,
            genesis,
            fetch_retry: 300,
            max_fetch_attempts: 20,
            fetch_hedge: 1_000,
            max_samples: u64::from(spec.train.inner_steps) * u64::from(spec.train.batch_size),
            sync_quorum: 0.5,
            min_round: spec.timing.min_round_ms,
            deadline_k: spec.timing.deadline_k,
        }
    }
}

/// Inputs to the state machine.
#[derive(Clone, Debug)]
pub enum InEvent {
    /// Time passed; nothing else happened.
    Tick,
    /// A control message from the network (raw envelope bytes).
    Gossip(Vec<u8>),
    /// The node finished the inner loop of `round` and stored its encoded
    /// pseudo-gradient under `hash`.
    TrainingDone {
        /// The round trained.
        round: u64,
        /// Blob hash of the encoded pseudo-gradient.
        hash: Hash,
        /// Samples behind it.
        samples: u64,
    },
    /// A blob is now in the local store (fetched and verified).
    BlobReady(Hash),
    /// A fetch failed at every provider.
    BlobFailed(Hash),
    /// A blob the machine believed local is gone (evicted): fetch it again.
    BlobLost(Hash),
    /// The node applied the manifest of `round`; `state` is the hash of the
    /// resulting state blob (now in the local store).
    Applied {
        /// The round applied.
        round: u64,
        /// The new state hash.
        state: Hash,
    },
    /// The node loaded the state blob of the manifest of `round`.
    StateLoaded {
        /// The round whose start state was loaded.
        round: u64,
    },
    /// Leave now (Ctrl+C).
    Shutdown,
}

/// What the node must do.
#[derive(Clone, Debug, PartialEq)]
pub enum OutEvent {
    /// Publish these envelope bytes to the run's topic.
    Broadcast(Vec<u8>),
    /// Fetch a blob from any of these peers (in order of preference).
    Fetch {
        /// The blob.
        hash: Hash,
        /// What it is (for accounting).
        kind: BlobKind,
        /// Who should have it.
        providers: Vec<PeerId>,
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
    /// Times this peer fell back to a state sync.
    pub resyncs: u64,
    /// Rounds applied.
    pub rounds_applied: u64,
    /// Manifests from another history (a partition, a liar) not applied.
    pub foreign_manifests: u64,
    /// Times this peer left its history for a better-supported one.
    pub switched_history: u64,
    /// Fetches also asked of more providers because the first were slow.
    pub hedged_fetches: u64,
}
