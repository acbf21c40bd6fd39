//! Ways a peer can misbehave, for the attack suite (`tests/attacks.rs`):
//! `swarm join --adversary KIND` (a hidden flag) makes a node lie in one
//! way while it follows the protocol in every other. Nothing here is used
//! unless that flag is given.

/// One way to lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Adversary {
    /// Sends large noise (100x the honest update's RMS) as its
    /// pseudo-gradient, with the largest sample count, committing to it.
    Noise,
    /// Sends its honest update scaled by 100.
    Scale,
    /// Sends its honest update with the sign flipped.
    SignFlip,
    /// Trains half the steps it claims, and pads its chain with copies.
    Lazy,
    /// Announces another peer's contribution of the round as its own.
    Copy,
    /// Announces its previous round's contribution again.
    Replay,
    /// Trains honestly but commits to a chain whose first state is not the
    /// round's start.
    BadChain,
    /// Does not train; races every aggregator with a manifest of its own
    /// (from the first announcement of the round it sees).
    ForgeManifest,
    /// Checks honestly but reports a fault in every contribution it checks.
    Frame,
    /// Serves nobody its chain and inner states (ignores checks and disputes).
    IgnoreDispute,
    /// Serves corrupted bytes for every blob, on libp2p and on the data
    /// plane (where the sizes are right and every chunk is wrong); trains
    /// and contributes, but publishes no manifest of its own. In RL runs:
    /// announces its real rollout batches and serves corrupted payloads.
    WrongBytes,
    /// RL runs: publishes its rollouts with reward 1 claimed for every
    /// completion (it trains on the true rewards itself).
    InflateRewards,
}

impl Adversary {
    /// The factor applied to the honest update, for the update-level lies.
    pub fn update_factor(self) -> Option<f32> {
        match self {
            Adversary::Scale => Some(100.0),
            Adversary::SignFlip => Some(-1.0),
            _ => None,
        }
    }
}
