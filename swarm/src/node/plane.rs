//! The node's side of the data plane: which peers can be reached on it
//! (identify tells a peer's iroh port; the address is the connection's),
//! fetching big blobs from several holders at once, and what a fetch
//! teaches about the providers (a liar is banned as on libp2p).

use super::EventLoop;
use crate::dataplane::{DataPlane, FetchError, Fetched, ProviderBook};
use iroh::EndpointAddr;
use protocol::{BlobKind, FetchFailure, Hash, InEvent, PeerId};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The data plane as the event loop holds it.
pub(super) struct Plane {
    pub dp: DataPlane,
    /// Reachable peers' endpoint addresses.
    pub addrs: HashMap<PeerId, EndpointAddr>,
    /// The remote IP of each connected libp2p peer.
    pub ips: HashMap<libp2p::PeerId, IpAddr>,
    /// Fetches under way: who asked for each blob (the protocol may ask
    /// several providers for one blob; one fetch serves them all).
    pub fetching: HashMap<Hash, Vec<(BlobKind, PeerId)>>,
    pub done_tx: mpsc::UnboundedSender<Done>,
    /// The largest blob a fetch accepts.
    pub max_blob: u64,
}

/// How long the maker of an inner state may take to hash it for serving.
const INNER_STATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A finished fetch.
pub(super) struct Done {
    hash: Hash,
    result: Result<Fetched, FetchError>,
    secs: f64,
}

impl Plane {
    pub fn new(dp: DataPlane, max_blob: usize) -> (Plane, mpsc::UnboundedReceiver<Done>) {
        let (done_tx, rx) = mpsc::unbounded_channel();
        let plane = Plane {
            dp,
            addrs: HashMap::new(),
            ips: HashMap::new(),
            fetching: HashMap::new(),
            done_tx,
            max_blob: max_blob as u64,
        };
        (plane, rx)
    }
}

/// Receives the next finished fetch (never, without a data plane).
pub(super) async fn next_done(rx: &mut Option<mpsc::UnboundedReceiver<Done>>) -> Done {
    match rx {
        Some(r) => match r.recv().await {
            Some(d) => d,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl EventLoop {
    /// Learns a peer's data-plane address from its identify info.
    pub(super) fn on_plane_port(&mut self, peer: libp2p::PeerId, agent: &str) {
        let Some(plane) = self.plane.as_mut() else { return };
        let (Some(port), Some(ip), Some(p)) =
            (crate::net::plane_port(agent), plane.ips.get(&peer), crate::identity::protocol_peer(&peer))
        else {
            return;
        };
        if let Some(addr) = crate::dataplane::addr_of(&p, *ip, port) {
            plane.addrs.insert(p, addr);
        }
    }

    /// Fetches a blob through the data plane if it goes there and `from`
    /// can be reached on it; false if the caller should use libp2p.
    pub(super) fn plane_request(&mut self, hash: Hash, kind: BlobKind, from: PeerId) -> bool {
        if !crate::blobs::plane_kind(kind) {
            return false;
        }
        let banned = &self.banned;
        let Some(plane) = self.plane.as_mut() else { return false };
        let Some(first) = plane.addrs.get(&from).cloned() else { return false };
        if let Some(waiting) = plane.fetching.get_mut(&hash) {
            waiting.push((kind, from));
            return true;
        }
        plane.fetching.insert(hash, vec![(kind, from)]);
        // `from` first (the protocol's choice), then every other peer we
        // can reach: the holders among them share the ranges.
        let mut providers = vec![first];
        providers.extend(
            plane
                .addrs
                .iter()
                .filter(|(p, _)| **p != from)
                .filter(|(p, _)| crate::identity::libp2p_peer(p).is_none_or(|lp| !banned.contains(&lp)))
                .map(|(_, a)| a.clone()),
        );
        let (dp, tx, max) = (plane.dp.clone(), plane.done_tx.clone(), plane.max_blob);
        // An inner state is held by its maker alone, and one it does not
        // serve counts against it: give it time to hash a state it has just
        // made. Other blobs are asked again by the protocol anyway.
        let wait = if kind == BlobKind::InnerState { INNER_STATE_WAIT } else { std::time::Duration::ZERO };
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            // The protocol hears back even if the fetch task dies.
            let job = tokio::spawn(async move { dp.fetch_counted(hash.0, providers, max, wait, Arc::default()).await });
            let result = job.await.unwrap_or_else(|_| Err(FetchError::NoProvider(Box::default())));
            let _ = tx.send(Done { hash, result, secs: started.elapsed().as_secs_f64() });
        });
        true
    }

    /// A fetch finished: liars are banned; the blob goes to the store and
    /// the protocol hears about it, for every request it answers.
    pub(super) fn on_plane_done(&mut self, done: Done) {
        let Some(plane) = self.plane.as_mut() else { return };
        let waiting = plane.fetching.remove(&done.hash).unwrap_or_default();
        let book = done.result.as_ref().map_or_else(|e| e.book(), |f| &f.book).clone();
        self.book_providers(done.hash, book);
        match done.result {
            Ok(f) => {
                let providers = f.book.served.len();
                let bytes = Arc::new(f.bytes);
                let len = bytes.len() as u64;
                let round = self.peer.round();
                if let Some((kind, _)) = waiting.first() {
                    if *kind == BlobKind::State {
                        self.info(format!(
                            "state {} fetched over the data plane: {} from {} provider(s) in {:.1} s",
                            done.hash.short(),
                            crate::report::human_bytes(len),
                            providers,
                            done.secs
                        ));
                    }
                    let kind = *kind;
                    self.flow(kind).received += len;
                    self.read_if_manifest(&bytes);
                    self.blobs.insert_verified(round, done.hash, kind, bytes);
                    self.drive(InEvent::BlobReady(done.hash));
                }
            }
            Err(e) => {
                tracing::debug!("data plane: blob {} not fetched: {e}", done.hash.short());
                let missing: Vec<PeerId> = e.book().missing.iter().map(crate::dataplane::peer_of).collect();
                for (_, from) in waiting {
                    let lied = crate::identity::libp2p_peer(&from).is_some_and(|lp| self.banned.contains(&lp));
                    let why = if lied {
                        FetchFailure::WrongBytes
                    } else if missing.contains(&from) {
                        FetchFailure::NotFound
                    } else {
                        FetchFailure::Unreachable
                    };
                    self.drive(InEvent::RequestFailed { hash: done.hash, from, why });
                }
            }
        }
    }

    /// Bans the providers that sent bytes that do not verify.
    fn book_providers(&mut self, hash: Hash, book: ProviderBook) {
        for id in book.liars {
            let p = crate::dataplane::peer_of(&id);
            let Some(lp) = crate::identity::libp2p_peer(&p) else { continue };
            if self.banned.insert(lp) {
                let _ = self.swarm.disconnect_peer_id(lp);
                if let Some(plane) = self.plane.as_mut() {
                    plane.addrs.remove(&p);
                }
                self.info(format!(
                    "peer {lp} served bytes of {} that do not verify (data plane); dropped ({} so far)",
                    hash.short(),
                    self.banned.len()
                ));
            }
        }
    }
}
