//! The sans-IO core of swarm.
//!
//! Nothing here touches a socket, a clock, a thread pool or a tensor library:
//! time comes in as an argument, bytes come in as events, and everything the
//! node must do (send, fetch, train, apply) goes out as [`round::OutEvent`]s.
//! The same code runs inside the real node and inside the seeded simulator
//! ([`sim`], behind the `test-utils` feature).

pub mod codec;
pub mod envelope;
pub mod id;
pub mod ledger;
pub mod message;
pub mod review;
pub mod rng;
pub mod rollouts;
pub mod round;
pub mod spec;
pub mod time;

#[cfg(any(test, feature = "test-utils"))]
pub mod sim;

pub use envelope::{DropReason, Envelope, MAX_ENVELOPE_BYTES};
pub use id::{Hash, Keypair, PeerId};
pub use message::{AppliedManifest, Contribution, Manifest, ManifestEntry, Message, Status};
pub use rollouts::{Pool, RlSpec, RolloutBatch};
pub use round::{BlobKind, Config, FetchFailure, Gossip, InEvent, OutEvent, Peer, Phase, Verdict};
pub use spec::{RunSpec, SpecError};
pub use time::Time;
