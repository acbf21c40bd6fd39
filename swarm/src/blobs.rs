//! The in-memory, content-addressed blob store: encoded pseudo-gradients and
//! state snapshots, kept for a few rounds so late peers can fetch them.

use protocol::{BlobKind, Hash};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Rounds a blob is kept after the round it was added in.
pub const KEEP_ROUNDS: u64 = 4;

/// Blobs by BLAKE3 hash.
#[derive(Debug, Default)]
pub struct BlobStore {
    blobs: BTreeMap<Hash, (u64, BlobKind, Arc<Vec<u8>>)>,
}

impl BlobStore {
    /// Adds bytes (tagged with the round, for eviction); returns their hash.
    pub fn add(&mut self, round: u64, kind: BlobKind, bytes: Vec<u8>) -> Hash {
        let h = Hash::of(&bytes);
        self.insert_verified(round, h, kind, Arc::new(bytes));
        h
    }

    /// Adds bytes whose hash the caller has checked.
    pub fn insert_verified(&mut self, round: u64, hash: Hash, kind: BlobKind, bytes: Arc<Vec<u8>>) {
        let e = self.blobs.entry(hash).or_insert((round, kind, bytes));
        e.0 = e.0.max(round);
    }

    /// The blob, if held.
    pub fn get(&self, h: &Hash) -> Option<Arc<Vec<u8>>> {
        self.blobs.get(h).map(|(_, _, b)| b.clone())
    }

    /// What the blob holds, if held.
    pub fn kind(&self, h: &Hash) -> Option<BlobKind> {
        self.blobs.get(h).map(|(_, k, _)| *k)
    }

    /// Drops blobs older than `KEEP_ROUNDS` before `round`.
    pub fn evict_before(&mut self, round: u64) {
        let min = round.saturating_sub(KEEP_ROUNDS);
        self.blobs.retain(|_, (r, _, _)| *r >= min);
    }

    /// Number of blobs held.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}
