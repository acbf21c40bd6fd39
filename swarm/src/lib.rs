//! The swarm node: libp2p networking around the sans-IO [`protocol`] core and
//! the burn [`trainer`], plus what the `swarm` command needs.
//!
//! One event-loop task ([`node`]) owns the libp2p `Swarm`, the protocol state
//! machine and the blob store; callers hold a cloneable [`node::Node`] handle.
//! The model side (trainer, codec, residuals, state, checkpoints) belongs to
//! the [`worker`], which the event loop talks to by messages.

pub mod blobs;
pub mod bootstrap;
mod dial;
pub mod events;
pub mod identity;
pub mod net;
pub mod node;
pub mod peer_store;
pub mod report;
pub mod worker;

pub use events::NodeEvent;
pub use node::{Node, NodeConfig};
pub use report::RoundReport;

/// Resolves on Ctrl+C or SIGTERM (what `swarm join` and `swarm bootstrap`
/// stop on).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
    }
}

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
    /// libp2p refused to start.
    #[error("network: {0}")]
    Net(String),
    /// The model side: the model, its data, a checkpoint.
    #[error(transparent)]
    Worker(#[from] worker::WorkerError),
    /// The run spec is not valid.
    #[error(transparent)]
    Spec(#[from] protocol::SpecError),
    /// The node's event loop is gone.
    #[error("the node has stopped")]
    Stopped,
}
