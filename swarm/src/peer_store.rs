//! The peer store: addresses of peers this node met, kept in the data dir
//! (`peers.json`) so that a restarted peer gets back in with every
//! bootstrap node down.

use std::collections::BTreeMap;
use std::path::Path;

/// Known peers: libp2p peer id -> multiaddrs (strings), as JSON.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PeerStore {
    /// Addresses by peer id.
    pub peers: BTreeMap<String, Vec<String>>,
}

impl PeerStore {
    /// Most peers remembered.
    pub const MAX: usize = 64;

    /// Reads `path`; a missing or unreadable file is an empty store.
    pub fn load(path: &Path) -> PeerStore {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Writes atomically (temp file, rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }

    /// Writes atomically on a blocking thread, off the event loop (the
    /// store is serialised here; it is small). Identify pushes change it
    /// often: callers save on a timer, when it changed (issue 13 item 9).
    /// Two saves must not run at once (they share the temp file): wait
    /// for the handle before the next.
    pub fn save_in_background(&self, path: &Path) -> tokio::task::JoinHandle<()> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = write_atomically(&path, &bytes) {
                tracing::debug!("peer store not saved to {}: {e}", path.display());
            }
        })
    }

    /// Remembers a peer's addresses (keeps the store bounded).
    pub fn remember(&mut self, peer: String, addrs: Vec<String>) {
        if addrs.is_empty() {
            return;
        }
        if !self.peers.contains_key(&peer)
            && self.peers.len() >= Self::MAX
            && let Some(k) = self.peers.keys().next().cloned()
        {
            self.peers.remove(&k);
        }
        self.peers.insert(peer, addrs);
    }
}

/// Writes `bytes` to a temp file beside `path`, then renames it there.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_store_round_trips_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let mut s = PeerStore::default();
        for i in 0..100 {
            s.remember(format!("p{i:03}"), vec![format!("/ip4/127.0.0.1/udp/{i}/quic-v1")]);
        }
        assert_eq!(s.peers.len(), PeerStore::MAX);
        s.save(&path).unwrap();
        assert_eq!(PeerStore::load(&path).peers, s.peers);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(PeerStore::load(&path).peers.is_empty());
    }
}
