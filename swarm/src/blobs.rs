//! The in-memory, content-addressed blob store: encoded pseudo-gradients and
//! state snapshots, kept for a few rounds so late peers can fetch them.

use protocol::{BlobKind, Envelope, Hash, PeerId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds a blob is kept after the round it was added in.
pub const KEEP_ROUNDS: u64 = 4;
/// And at least this long: a peer that restarts and syncs to a manifest a few
/// rounds old must still find its contributions, however fast rounds are.
pub const KEEP_AT_LEAST: Duration = Duration::from_secs(30);

/// Bytes of small, gossiped kinds (manifests, chains) kept in all, per
/// kind. 256 manifests of the largest size (an envelope is at most 120
/// KiB); a swarm keeps a handful per round.
pub const SMALL_KIND_CAP: usize = 256 * protocol::MAX_ENVELOPE_BYTES;
/// Blobs of a small kind kept at most, however small they are.
pub const SMALL_KIND_COUNT: usize = 4096;
/// Beyond a cap, blobs go until the kind is down to this share of it
/// (in tenths), so that a flood pays one trim per tenth of the cap.
const TRIM_TO_TENTHS: usize = 9;

/// A stored blob as the bytes of a network response, without a copy.
pub struct Shared(pub Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug)]
struct Entry {
    /// The newest round it was added in or named by a manifest of.
    round: u64,
    /// When it was last added.
    added: Instant,
    kind: BlobKind,
    bytes: Arc<Vec<u8>>,
    /// Whose it is, for the small kinds' shares: a manifest's signer
    /// (ours too); `None` for the other kinds and for bytes that do not
    /// verify.
    owner: Option<PeerId>,
}

/// An owner's share of a capped kind: the bytes it holds, and its blobs
/// that may go (when added, hash, length).
type Share = (usize, Vec<(Instant, Hash, usize)>);

/// Blobs by BLAKE3 hash.
#[derive(Debug, Default)]
pub struct BlobStore {
    blobs: BTreeMap<Hash, Entry>,
    /// Where states, inner states and contributions are served too (the
    /// data plane, for models whose state is big): the same bytes, shared.
    plane: Option<crate::dataplane::DataPlane>,
    /// Bytes and blobs held of the capped kinds: manifests, chains.
    small: [usize; 2],
    small_count: [usize; 2],
}

/// Whether blobs of this kind go through the data plane (of a model that
/// uses it): the big ones. Manifests and chains stay on libp2p.
pub fn plane_kind(kind: BlobKind) -> bool {
    matches!(kind, BlobKind::State | BlobKind::InnerState | BlobKind::Contribution)
}

impl BlobStore {
    /// A store that also serves its big blobs through `plane`.
    pub fn with_plane(plane: Option<crate::dataplane::DataPlane>) -> BlobStore {
        BlobStore { blobs: BTreeMap::new(), plane, small: [0; 2], small_count: [0; 2] }
    }

    /// Adds bytes (tagged with the round, for eviction); returns their hash.
    pub fn add(&mut self, round: u64, kind: BlobKind, bytes: Vec<u8>) -> Hash {
        let h = Hash::of(&bytes);
        self.insert_verified(round, h, kind, Arc::new(bytes));
        h
    }

    /// Adds bytes whose hash the caller has checked.
    pub fn insert_verified(&mut self, round: u64, hash: Hash, kind: BlobKind, bytes: Arc<Vec<u8>>) {
        let added = Instant::now();
        if let Some(p) = &self.plane
            && plane_kind(kind)
            && !p.holds(&hash.0)
        {
            p.serve(hash.0, bytes.clone());
        }
        let len = bytes.len();
        let mut new = false;
        // The signer of a manifest whose envelope verifies (a fetched one is
        // stored whatever the protocol made of it, and must not name
        // someone else to have that peer's manifests evicted first).
        let owner = if kind == BlobKind::Manifest { Envelope::open(&bytes).ok().map(|o| o.sender) } else { None };
        let e = self.blobs.entry(hash).or_insert_with(|| {
            new = true;
            Entry { round, added, kind, bytes, owner }
        });
        e.round = e.round.max(round);
        e.added = added;
        if new && let Some(i) = small_index(kind) {
            self.small[i] += len;
            self.small_count[i] += 1;
            if self.small[i] > SMALL_KIND_CAP || self.small_count[i] > SMALL_KIND_COUNT {
                self.trim(kind, hash);
            }
        }
    }

    /// Brings a capped kind back under [`SMALL_KIND_CAP`] and
    /// [`SMALL_KIND_COUNT`] (to nine tenths of them), never dropping `keep`
    /// (just added). Each blob dropped is the oldest of the owner holding
    /// the most bytes of the kind (the most blobs, when the count is what
    /// is over): one signer's flood (or a Sybil group's large manifests)
    /// pushes out its own, not the others' (issue 13 item 3: oldest first
    /// let one key's flood evict every real manifest).
    fn trim(&mut self, kind: BlobKind, keep: Hash) {
        let Some(i) = small_index(kind) else { return };
        let (cap, count) = (SMALL_KIND_CAP / 10 * TRIM_TO_TENTHS, SMALL_KIND_COUNT / 10 * TRIM_TO_TENTHS);
        let mut by_owner: BTreeMap<Option<PeerId>, Share> = BTreeMap::new();
        for (h, e) in self.blobs.iter().filter(|(_, e)| e.kind == kind) {
            let o = by_owner.entry(e.owner).or_default();
            o.0 += e.bytes.len();
            if *h != keep {
                o.1.push((e.added, *h, e.bytes.len()));
            }
        }
        for (_, blobs) in by_owner.values_mut() {
            blobs.sort_unstable_by(|a, b| b.cmp(a)); // oldest last, popped first
        }
        while self.small[i] > cap || self.small_count[i] > count {
            let by_bytes = self.small[i] > cap;
            let share = |(held, blobs): &Share| if by_bytes { *held } else { blobs.len() };
            let most = by_owner.iter().filter(|(_, (_, b))| !b.is_empty()).max_by_key(|(_, o)| share(o));
            let Some(o) = most.map(|(o, _)| *o) else { break };
            let (held, blobs) = by_owner.get_mut(&o).expect("an owner just found");
            let Some((_, h, len)) = blobs.pop() else { break };
            *held -= len;
            self.blobs.remove(&h);
            // A manifest also asked for as a contribution is served on the
            // data plane too (the first kind stays the store's).
            if let Some(p) = &self.plane {
                p.forget(&h.0);
            }
            self.small[i] -= len;
            self.small_count[i] -= 1;
        }
    }

    /// Bytes held of a capped kind (manifests, chains).
    pub fn small_bytes(&self, kind: BlobKind) -> usize {
        small_index(kind).map_or(0, |i| self.small[i])
    }

    /// Marks a held blob as used in `round` (a manifest names it): it is
    /// then kept as long as blobs added in that round. Identical blobs recur
    /// (an all-zero pseudo-gradient has the same hash in every round).
    pub fn retag(&mut self, hash: &Hash, round: u64) {
        if let Some(e) = self.blobs.get_mut(hash) {
            e.round = e.round.max(round);
        }
    }

    /// The blob, if held.
    pub fn get(&self, h: &Hash) -> Option<Arc<Vec<u8>>> {
        self.blobs.get(h).map(|e| e.bytes.clone())
    }

    /// What the blob holds, if held.
    pub fn kind(&self, h: &Hash) -> Option<BlobKind> {
        self.blobs.get(h).map(|e| e.kind)
    }

    /// Drops blobs tagged more than [`KEEP_ROUNDS`] before `round` that were
    /// added more than [`KEEP_AT_LEAST`] ago.
    pub fn evict_before(&mut self, round: u64) {
        self.evict(round, Instant::now());
    }

    fn evict(&mut self, round: u64, now: Instant) {
        let min = round.saturating_sub(KEEP_ROUNDS);
        let (plane, small, small_count) = (&self.plane, &mut self.small, &mut self.small_count);
        self.blobs.retain(|h, e| {
            let keep = e.round >= min || now.duration_since(e.added) < KEEP_AT_LEAST;
            if !keep {
                if let Some(p) = plane {
                    p.forget(&h.0);
                }
                if let Some(i) = small_index(e.kind) {
                    small[i] -= e.bytes.len();
                    small_count[i] -= 1;
                }
            }
            keep
        });
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

/// The kinds capped by [`SMALL_KIND_CAP`], small and gossiped: the big ones
/// (states, contributions) are only ever fetched when the protocol needs
/// them, and evicted by round.
fn small_index(kind: BlobKind) -> Option<usize> {
    match kind {
        BlobKind::Manifest => Some(0),
        BlobKind::Chain => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{AppliedManifest, Keypair, Message, Status};

    /// A signed envelope of `signer` of about `len` bytes, distinct for
    /// each `n` (the store reads only its signer; any message will do).
    fn manifest(signer: u32, n: u32, len: usize) -> Vec<u8> {
        let entries = len.saturating_sub(200) / 35;
        let recent = (0..entries as u64).map(|r| AppliedManifest { round: r, id: Hash::of(&n.to_le_bytes()) });
        let msg = Message::Hello { status: Status::Active, seq: u64::from(n), recent: recent.collect() };
        Envelope::seal(&Keypair::from_seed(u64::from(signer)), Hash::default(), 1, &msg).unwrap()
    }

    #[test]
    fn thousands_of_large_manifests_leave_the_store_bounded() {
        // Issue 13 item 3: every well-formed manifest was kept until a round
        // was applied; a waiting or stalled node freed nothing.
        let mut s = BlobStore::default();
        let mine = s.add(3, BlobKind::State, vec![7; 1 << 20]);
        let mut last = Hash::default();
        for i in 0..5_000u32 {
            last = s.add(3, BlobKind::Manifest, manifest(1, i, protocol::MAX_ENVELOPE_BYTES));
        }
        let held = s.small_bytes(BlobKind::Manifest);
        eprintln!("5 000 manifests of up to 120 KiB: {held} bytes held (cap {SMALL_KIND_CAP})");
        assert!(held <= SMALL_KIND_CAP, "{held} bytes of manifests");
        let size = manifest(1, 0, protocol::MAX_ENVELOPE_BYTES).len();
        assert!(s.len() <= SMALL_KIND_CAP / size + 2, "{} blobs of {size} bytes", s.len());
        assert!(s.get(&last).is_some(), "the newest manifest is kept");
        assert!(s.get(&mine).is_some(), "other kinds are not touched");
        // Tiny ones are capped by count.
        for i in 0..10_000u32 {
            s.add(3, BlobKind::Manifest, manifest(2, i, 300));
        }
        assert!(s.small_count[0] <= SMALL_KIND_COUNT, "{} manifests", s.small_count[0]);
        s.evict(100, Instant::now() + KEEP_AT_LEAST + Duration::from_secs(1));
        assert_eq!((s.len(), s.small_bytes(BlobKind::Manifest)), (0, 0));
    }

    #[test]
    fn a_flood_of_manifests_pushes_out_the_flooders_own_not_the_real_ones() {
        // Issue 13 item 3: beyond the cap the oldest manifests went first,
        // so one key (or a Sybil group) sending large manifests evicted the
        // real ones that a late joiner or a repair needs.
        for flooders in [1u32, 1_000] {
            let mut s = BlobStore::default();
            let real: Vec<Hash> = (0..4u32).map(|p| s.add(3, BlobKind::Manifest, manifest(p, p, 2_048))).collect();
            for i in 0..5_000u32 {
                s.add(3, BlobKind::Manifest, manifest(100 + i % flooders, i, protocol::MAX_ENVELOPE_BYTES));
            }
            let held = s.small_bytes(BlobKind::Manifest);
            eprintln!("{flooders} flooding keys: {held} bytes held, the 4 real manifests kept");
            assert!(held <= SMALL_KIND_CAP);
            assert!(real.iter().all(|h| s.get(h).is_some()), "{flooders} flooding keys evicted a real manifest");
        }
    }

    #[tokio::test]
    async fn a_manifest_also_fetched_as_a_contribution_leaves_the_data_plane_when_trimmed() {
        // A liar can list a manifest's hash as a contribution: the bytes come
        // back under that kind too, and the data plane serves them (the store
        // keeps the first kind, Manifest). The trim of manifests dropped the
        // bytes from the store but not from the data plane, where each such
        // id stayed (up to an envelope, 120 KiB).
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let plane = crate::dataplane::DataPlane::bind([9; 32], ip, false).await.unwrap();
        let mut s = BlobStore::with_plane(Some(plane.clone()));
        let first = manifest(100, 0, protocol::MAX_ENVELOPE_BYTES);
        let h = s.add(3, BlobKind::Manifest, first.clone());
        s.insert_verified(3, h, BlobKind::Contribution, Arc::new(first));
        assert!(plane.holds(&h.0), "served on the data plane as a contribution");
        for i in 1..1_000u32 {
            s.add(3, BlobKind::Manifest, manifest(100, i, protocol::MAX_ENVELOPE_BYTES));
        }
        assert!(s.get(&h).is_none(), "the flooder's oldest manifest was trimmed");
        assert!(!plane.holds(&h.0), "and is no longer served on the data plane");
    }

    #[test]
    fn blobs_stay_for_rounds_and_for_a_minimum_time() {
        let mut s = BlobStore::default();
        let old = s.add(1, BlobKind::Contribution, vec![1]);
        let new = s.add(9, BlobKind::Contribution, vec![2]);
        let t0 = Instant::now();
        // Round 10: round 1 is more than KEEP_ROUNDS back, but recent.
        s.evict(10, t0);
        assert!(s.get(&old).is_some());
        // Later than the floor: gone; the round-9 blob stays.
        s.evict(10, t0 + KEEP_AT_LEAST + Duration::from_secs(1));
        assert!(s.get(&old).is_none());
        assert!(s.get(&new).is_some());
        assert_eq!(s.len(), 1);
    }
}
