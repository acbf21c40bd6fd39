//! Errors of the node library.

use crate::worker::WorkerError;

/// Errors of the node library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file in the data dir could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file exists but is not a key.
    #[error("key file {0} is not a 32-byte ed25519 secret")]
    BadKey(String),
    /// A multiaddr that cannot be used.
    #[error("bad address `{addr}`: {reason}")]
    BadAddr {
        /// As given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// None of the bootstrap nodes answered.
    #[error("could not reach bootstrap node {addrs} after {attempts} attempts")]
    BootstrapUnreachable {
        /// The addresses tried.
        addrs: String,
        /// Attempts per address.
        attempts: u32,
    },
    /// A node did not answer.
    #[error("{addr}: {reason}")]
    Unreachable {
        /// The address dialled.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The RL learner (policy, warm-up, generation, update) failed.
    #[error("RL learner: {0}")]
    Rl(String),
    /// libp2p refused to start.
    #[error("network: {0}")]
    Net(String),
    /// The model side: the model, its data, a checkpoint.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The run spec is not valid.
    #[error(transparent)]
    Spec(#[from] protocol::SpecError),

    #[error(transparent)]
    DataPlane(#[from] crate::dataplane::Error),
    /// `swarm pull` could not fetch, check or extract a package.
    #[error("pull {package}: {reason}")]
    Pull {
        /// Our name of the package.
        package: String,
        /// What went wrong.
        reason: String,
    },
    /// The node's event loop is gone.
    #[error("the node has stopped")]
    Stopped,
}
