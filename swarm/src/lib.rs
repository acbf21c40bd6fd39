//! The swarm node: libp2p networking around the sans-IO [`protocol`] core and
//! the burn [`trainer`], plus what the `swarm` command needs.
//!
//! One event-loop task ([`node`]) owns the libp2p `Swarm`, the protocol state
//! machine and the blob store; callers hold a cloneable [`node::Node`] handle.
//! The model side (trainer, codec, residuals, state, checkpoints) belongs to
//! the [`worker`], which the event loop talks to by messages.

pub mod adversary;
pub mod blobs;
pub mod bootstrap;
pub mod dataplane;
mod dial;
mod error;
pub mod events;
pub mod identity;
mod kept;
pub mod ledger_log;
pub mod net;
pub mod node;
pub mod payee;
pub mod peer_store;
pub mod pull;
pub mod report;
pub mod rl;
pub mod runs;
pub mod worker;

pub use error::Error;
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
