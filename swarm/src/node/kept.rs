//! This peer's review blobs on disk (`runs/<id>/review/<round>/<hash>.chain`
//! and `.state`): a contribution stays open to checks for a few rounds, and a
//! peer that crashed and restarted must still serve the chain and inner
//! states it committed to, or its verifier finds them unavailable and it is
//! excluded like a liar. Written off the event loop; rounds older than
//! [`KEEP_ROUNDS`] before the newest are deleted.

use crate::blobs::{BlobStore, KEEP_ROUNDS};
use protocol::{BlobKind, Hash};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes the review blobs of `round` under `dir`, and deletes rounds that
/// can no longer be checked. Runs on a blocking thread; errors only cost the
/// blobs a restart (reported by the caller's log line).
pub fn save(dir: PathBuf, round: u64, blobs: Vec<(Hash, BlobKind, Arc<Vec<u8>>)>) {
    tokio::task::spawn_blocking(move || {
        let d = dir.join(round.to_string());
        let _ = std::fs::create_dir_all(&d);
        for (hash, kind, bytes) in blobs {
            let ext = if kind == BlobKind::Chain { "chain" } else { "state" };
            let tmp = d.join(format!("{}.tmp", hash.to_hex()));
            if std::fs::write(&tmp, bytes.as_slice()).is_ok() {
                let _ = std::fs::rename(&tmp, d.join(format!("{}.{ext}", hash.to_hex())));
            }
        }
        for r in rounds(&dir) {
            if r + KEEP_ROUNDS < round {
                let _ = std::fs::remove_dir_all(dir.join(r.to_string()));
            }
        }
    });
}

/// Loads what [`save`] kept into `store` (each file checked against its
/// hash); returns how many blobs came back.
pub fn load(dir: &Path, store: &mut BlobStore) -> usize {
    let mut n = 0;
    for round in rounds(dir) {
        let Ok(entries) = std::fs::read_dir(dir.join(round.to_string())) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let kind = match path.extension().and_then(|x| x.to_str()) {
                Some("chain") => BlobKind::Chain,
                Some("state") => BlobKind::InnerState,
                _ => continue,
            };
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let hash = Hash::of(&bytes);
            if path.file_stem().and_then(|s| s.to_str()) == Some(hash.to_hex().as_str()) {
                store.insert_verified(round, hash, kind, Arc::new(bytes));
                n += 1;
            }
        }
    }
    n
}

fn rounds(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_blobs_come_back_checked_and_old_rounds_go() {
        let dir = tempfile::tempdir().unwrap();
        let review = dir.path().join("review");
        let blob = |b: &[u8]| (Hash::of(b), Arc::new(b.to_vec()));
        let (c, cb) = blob(b"chain");
        let (s, sb) = blob(b"state");
        save(review.clone(), 1, vec![(c, BlobKind::Chain, cb), (s, BlobKind::InnerState, sb)]);
        // Saving is asynchronous: wait for round 1's files.
        for _ in 0..100 {
            if std::fs::read_dir(review.join("1")).map(|d| d.count()).unwrap_or(0) == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // A damaged file is not loaded.
        let (d, db) = blob(b"damaged");
        std::fs::write(review.join("1").join(format!("{}.state", d.to_hex())), b"not it").unwrap();
        let mut store = BlobStore::default();
        assert_eq!(load(&review, &mut store), 2);
        assert!(store.get(&c).is_some() && store.get(&s).is_some() && store.get(&d).is_none());
        assert_eq!(store.kind(&c), Some(BlobKind::Chain));
        let _ = db;
        // A much later round deletes round 1.
        save(review.clone(), 1 + KEEP_ROUNDS + 1, Vec::new());
        for _ in 0..100 {
            if !review.join("1").exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!review.join("1").exists());
    }
}
