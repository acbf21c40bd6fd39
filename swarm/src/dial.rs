//! Getting into the swarm: dial the bootstrap nodes and the peers we knew
//! (the peer store), with bounded retries and backoff.

use crate::error::Error;
use crate::events::NodeEvent;
use crate::net::{self, Behaviour};
use crate::peer_store::PeerStore;
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, Swarm};
use std::time::Duration;
use tokio::sync::mpsc;

type Target = (Multiaddr, libp2p::PeerId);

/// Dials every bootstrap address until one connects, with bounded retries and
/// backoff. No bootstrap addresses: nothing to do (the first peer of a swarm).
pub(crate) async fn reach_bootstrap(
    swarm: &mut Swarm<Behaviour>,
    bootstrap: &[String],
    attempts: u32,
    store: &PeerStore,
    events: &mpsc::UnboundedSender<NodeEvent>,
) -> Result<(), Error> {
    let targets = targets(swarm, bootstrap, store)?;
    if targets.is_empty() {
        return Ok(());
    }
    let attempts = attempts.max(1);
    let mut backoff = Duration::from_millis(250);
    for attempt in 1..=attempts {
        if let Some(peer_id) = dial_once(swarm, &targets, events).await {
            for (addr, id) in &targets {
                swarm.behaviour_mut().kad.add_address(id, addr.clone());
            }
            let _ = swarm.behaviour_mut().kad.bootstrap();
            if !bootstrap.iter().any(|b| b.ends_with(&peer_id.to_string())) {
                events.send(NodeEvent::Info(format!("reached the swarm through known peer {peer_id}"))).ok();
            }
            return Ok(());
        }
        if attempt < attempts {
            events
                .send(NodeEvent::Info(format!(
                    "bootstrap unreachable (attempt {attempt}/{attempts}), retrying in {} ms",
                    backoff.as_millis()
                )))
                .ok();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }
    if bootstrap.is_empty() {
        events.send(NodeEvent::Info("no known peer answered; starting alone".into())).ok();
        return Ok(());
    }
    let mut addrs = bootstrap.join(", ");
    if targets.len() > bootstrap.len() {
        addrs.push_str(&format!(" (and {} known peer addresses)", targets.len() - bootstrap.len()));
    }
    Err(Error::BootstrapUnreachable { addrs, attempts })
}

/// The bootstrap addresses, then the peers we knew before: with every
/// bootstrap node down, they get us in.
fn targets(swarm: &Swarm<Behaviour>, bootstrap: &[String], store: &PeerStore) -> Result<Vec<Target>, Error> {
    let mut targets: Vec<Target> = bootstrap.iter().map(|a| net::split_p2p(a)).collect::<Result<_, _>>()?;
    let me = *swarm.local_peer_id();
    for (id, addrs) in &store.peers {
        let Ok(id) = id.parse::<libp2p::PeerId>() else { continue };
        for a in addrs {
            if let Ok(a) = a.parse::<Multiaddr>()
                && id != me
            {
                targets.push((a, id));
            }
        }
    }
    Ok(targets)
}

/// Dials every target once; the first that connects, or none within 5 s
/// (or once every one of them failed).
async fn dial_once(
    swarm: &mut Swarm<Behaviour>,
    targets: &[Target],
    events: &mpsc::UnboundedSender<NodeEvent>,
) -> Option<libp2p::PeerId> {
    for (addr, id) in targets {
        let _ = swarm.dial(DialOpts::peer_id(*id).addresses(vec![addr.clone()]).build());
    }
    let distinct = targets.iter().map(|(_, id)| id).collect::<std::collections::HashSet<_>>().len();
    let mut failed = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if targets.iter().any(|(_, id)| *id == peer_id) => {
                    return Some(peer_id);
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(p), .. } if targets.iter().any(|(_, id)| *id == p) => {
                    failed += 1;
                    if failed >= distinct {
                        return None;
                    }
                }
                SwarmEvent::NewListenAddr { address, .. } => {
                    let id = *swarm.local_peer_id();
                    events.send(NodeEvent::Listening(format!("{address}/p2p/{id}"))).ok();
                }
                _ => {}
            },
            _ = &mut deadline => return None,
        }
    }
}
