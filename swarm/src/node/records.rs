//! What a peer's run dir keeps across its lives: the peers it excluded,
//! the last round it signed for, its hello counter's start, and the
//! contributors of the rounds it applied.

use protocol::PeerId;
use protocol::round::Span;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Peers excluded from the run, kept in the run dir (`excluded.json`) so a
/// restarted node refuses them from the start.
pub(super) struct Bans {
    path: PathBuf,
    pub(super) peers: Vec<protocol::PeerId>,
}

impl Bans {
    pub(super) fn load(path: PathBuf) -> Bans {
        let hex: Vec<String> =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let peers = hex.iter().filter_map(|h| protocol::Hash::from_hex(h).map(|x| protocol::PeerId(x.0))).collect();
        Bans { path, peers }
    }

    /// Adds a peer and writes the file (temp file, rename).
    pub(super) fn add(&mut self, p: protocol::PeerId) -> std::io::Result<()> {
        if self.peers.contains(&p) {
            return Ok(());
        }
        self.peers.push(p);
        let hex: Vec<String> = self.peers.iter().map(|p| p.to_string()).collect();
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&hex).unwrap_or_default())?;
        std::fs::rename(tmp, &self.path)
    }
}

/// The last round this peer signed a contribution or manifest for, kept in
/// the run dir (`signed`) and written before the signature goes out: a
/// restarted peer never signs a second, different one for that round.
pub(super) struct Signed {
    path: PathBuf,
    pub(super) round: u64,
}

impl Signed {
    pub(super) fn load(path: PathBuf) -> Signed {
        let round = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        Signed { path, round }
    }

    /// Records `round` (temp file, fsync, rename).
    pub(super) fn record(&mut self, round: u64) -> std::io::Result<()> {
        if round <= self.round {
            return Ok(());
        }
        use std::io::Write;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(round.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.round = round;
        Ok(())
    }
}

/// Where this life's hello counter starts: the clock in µs, and past the
/// last life's start by more than one life can count (2^32 hellos), kept in
/// the run dir (`seq`) — a restarted peer's hellos must be newer than its
/// last life's, or the others drop them as replays, even if the clock went
/// back. Saved before any hello goes out (a rising number on disk, as
/// `signed` is).
pub(super) fn hello_counter_base(path: &Path) -> u64 {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let clock = u64::try_from(micros).unwrap_or(u64::MAX / 4);
    let mut last = Signed::load(path.to_path_buf());
    let base = match last.round {
        0 => clock,
        l => clock.max(l.saturating_add(1 << 32)),
    };
    let base = base.min(u64::MAX / 2);
    let _ = last.record(base);
    base
}

/// Rounds of contributors kept: the protocol's window for peers that
/// vouch for a history.
const CONTRIBUTORS_ROUNDS: u64 = 64;

/// Contributors of the rounds this peer applied, with the first and last
/// round of each, kept in the run dir (`contributors.json`, `{"<peer id
/// hex>": [first, last]}`): a restarted peer hands them to the protocol,
/// which then knows whose word counts when it resyncs or compares
/// histories (issue 13 item 2), instead of counting every head as a joiner
/// does.
pub(super) struct Contributors {
    path: PathBuf,
    pub(super) spans: BTreeMap<PeerId, Span>,
}

impl Contributors {
    pub(super) fn load(path: PathBuf) -> Contributors {
        let hex: BTreeMap<String, (u64, u64)> =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let spans = hex
            .iter()
            .filter(|(_, (first, last))| first <= last)
            .filter_map(|(h, (first, last))| {
                protocol::Hash::from_hex(h).map(|x| (PeerId(x.0), Span { first: *first, last: *last }))
            })
            .collect();
        Contributors { path, spans }
    }

    /// Records the contributors of `round` and writes the file (temp
    /// file, rename), keeping the last [`CONTRIBUTORS_ROUNDS`] rounds.
    pub(super) fn record(&mut self, round: u64, peers: impl IntoIterator<Item = PeerId>) -> std::io::Result<()> {
        for p in peers {
            let s = self.spans.entry(p).or_insert(Span { first: round, last: round });
            (s.first, s.last) = (s.first.min(round), s.last.max(round));
        }
        let newest = self.spans.values().map(|s| s.last).max().unwrap_or(0);
        self.spans.retain(|_, s| s.last.saturating_add(CONTRIBUTORS_ROUNDS) > newest);
        let hex: BTreeMap<String, (u64, u64)> =
            self.spans.iter().map(|(p, s)| (p.to_string(), (s.first, s.last))).collect();
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&hex).unwrap_or_default())?;
        std::fs::rename(tmp, &self.path)
    }
}
