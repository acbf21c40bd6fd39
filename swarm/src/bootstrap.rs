//! The discovery node: Kademlia in server mode, identify and ping; no
//! training, no gossip. Peers pass its printed address to `--bootstrap`.

use crate::error::Error;
use crate::net::{self, Behaviour, BehaviourEvent};
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Swarm, identify, kad, request_response};
use std::path::Path;
use std::time::Duration;

/// What the bootstrap node reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootstrapEvent {
    /// Listening on this full address (with `/p2p/<id>`).
    Listening(String),
    /// The number of connected peers changed.
    Peers(usize),
    /// A run was announced to this node for the first time (its id).
    Run(String),
}

/// Starts a bootstrap node and runs it until `stop` resolves.
pub async fn run(
    listen: &str,
    key_file: &Path,
    mut report: impl FnMut(BootstrapEvent),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let key = crate::identity::load_or_create(key_file)?;
    let mut swarm: Swarm<Behaviour> = net::build(&key, 1024)?;
    swarm.listen_on(net::parse_addr(listen)?).map_err(|e| Error::Net(e.to_string()))?;
    let mut peers = 0usize;
    let mut runs = std::collections::BTreeSet::new();
    let mut report_interval = tokio::time::interval(Duration::from_secs(30));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => {
                    let id = *swarm.local_peer_id();
                    report(BootstrapEvent::Listening(format!("{address}/p2p/{id}")));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                    if info.protocols.contains(&net::KAD_PROTOCOL) =>
                {
                    for addr in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest {
                    request: kad::InboundRequest::AddProvider { record: Some(r) },
                })) => {
                    if let Some(run) = crate::runs::take_provider(&mut swarm.behaviour_mut().kad, r)
                        && runs.len() < crate::runs::MAX_RUN_KEYS
                        && runs.insert(run)
                    {
                        report(BootstrapEvent::Run(run.to_hex()));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Blobs(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. }, ..
                })) => {
                    let answer = (request.hash == crate::runs::list_request())
                        .then(|| bytes::Bytes::from(crate::runs::encode_list(&runs)));
                    let _ = swarm.behaviour_mut().blobs.send_response(channel, answer);
                }
                SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. } => {
                    let n = swarm.connected_peers().count();
                    if n != peers {
                        peers = n;
                        report(BootstrapEvent::Peers(n));
                    }
                }
                _ => {}
            },
            _ = report_interval.tick() => report(BootstrapEvent::Peers(swarm.connected_peers().count())),
            _ = &mut stop => return Ok(()),
        }
    }
}

impl std::fmt::Display for BootstrapEvent {
    /// The line `swarm bootstrap` prints (scripts read the address from it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootstrapEvent::Listening(a) => write!(f, "bootstrap: listening on {a}"),
            BootstrapEvent::Peers(n) => write!(f, "bootstrap: {n} peers connected"),
            BootstrapEvent::Run(id) => write!(f, "bootstrap: run {id} announced"),
        }
    }
}
