//! This peer's review blobs on disk (`runs/<id>/review/<round>/<hash>.chain`
//! and `.state`): a contribution stays open to checks for a few rounds, and a
//! peer that crashed and restarted must still serve the chain and inner
//! states it committed to, or its verifier finds them unavailable and it is
//! excluded like a liar. The worker writes them before the contribution is
//! announced (a peer killed right after announcing still has them); rounds
//! older than [`KEEP_ROUNDS`] before the newest are deleted.

use crate::blobs::{BlobStore, KEEP_ROUNDS};
use protocol::{BlobKind, Hash};
use std::path::Path;
use std::sync::Arc;

/// Writes the review blobs of `round` under `dir` (each to a temporary file,
/// then renamed: a kill leaves whole files or none), and deletes rounds that
/// can no longer be checked. Blocking.
pub fn save(dir: &Path, round: u64, blobs: &[(BlobKind, &[u8])]) -> std::io::Result<()> {
    // Old rounds go first, whatever happens next (a full disk frees up).
    for r in rounds(dir) {
        if r + KEEP_ROUNDS < round {
            let _ = std::fs::remove_dir_all(dir.join(r.to_string()));
        }
    }
    let d = dir.join(round.to_string());
    std::fs::create_dir_all(&d)?;
    for (kind, bytes) in blobs {
        let hash = Hash::of(bytes);
        let ext = if *kind == BlobKind::Chain { "chain" } else { "state" };
        let tmp = d.join(format!("{}.tmp", hash.to_hex()));
        if let Err(e) =
            std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, d.join(format!("{}.{ext}", hash.to_hex()))))
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    Ok(())
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

    #[test]
    fn kept_blobs_come_back_checked_and_old_rounds_go() {
        let dir = tempfile::tempdir().unwrap();
        let review = dir.path().join("review");
        let (c, s) = (b"chain".as_slice(), b"state".as_slice());
        save(&review, 1, &[(BlobKind::Chain, c), (BlobKind::InnerState, s)]).unwrap();
        // A damaged file is not loaded.
        let d = Hash::of(b"damaged");
        std::fs::write(review.join("1").join(format!("{}.state", d.to_hex())), b"not it").unwrap();
        let mut store = BlobStore::default();
        assert_eq!(load(&review, &mut store), 2);
        let (c, s) = (Hash::of(c), Hash::of(s));
        assert!(store.get(&c).is_some() && store.get(&s).is_some() && store.get(&d).is_none());
        assert_eq!(store.kind(&c), Some(BlobKind::Chain));
        assert_eq!(store.kind(&s), Some(BlobKind::InnerState));
        // A much later round deletes round 1.
        save(&review, 1 + KEEP_ROUNDS + 1, &[]).unwrap();
        assert!(!review.join("1").exists());
    }
}
