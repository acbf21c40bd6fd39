//! What a peer keeps on disk besides its key: checkpoints in two alternating
//! slots (a torn or corrupt one is skipped for the other), and the peer store
//! (addresses of peers it knew, to rejoin with every bootstrap node down).

use crate::work::ModelState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trainer::checkpoint;

/// The two checkpoint slots of a run dir; round r goes to slot r % 2.
pub fn slot_dir(run_dir: &Path, round: u64) -> PathBuf {
    run_dir.join(format!("ckpt-{}", round % 2))
}

/// The newest checkpoint that loads and verifies, from either slot, and a
/// note for each slot that was skipped.
pub fn load_latest(run_dir: &Path, model: &str, n: usize) -> (Option<(u64, ModelState)>, Vec<String>) {
    let mut best: Option<(u64, ModelState)> = None;
    let mut notes = Vec::new();
    for slot in 0..2u64 {
        let dir = slot_dir(run_dir, slot);
        match checkpoint::load(&dir) {
            Ok(None) => {}
            Ok(Some(ck)) if ck.model == model && ck.params.len() == n && ck.velocity.len() == n => {
                if best.as_ref().is_none_or(|(r, _)| ck.round > *r) {
                    let outer = trainer::OuterOptimizer::new(0.0, 0.0, true, 0);
                    let mut st = ModelState { params: ck.params, outer };
                    st.outer.velocity = ck.velocity;
                    best = Some((ck.round, st));
                }
            }
            Ok(Some(_)) => notes.push(format!("checkpoint in {} is for another model; skipped", dir.display())),
            Err(e) => notes.push(format!("checkpoint in {} is damaged ({e}); skipped", dir.display())),
        }
    }
    (best, notes)
}

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
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
        std::fs::rename(tmp, path)
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
