//! What a misbehaving node (`--adversary`, the attack suite) does beyond
//! its worker's lies: copy others' announcements, forge manifests.

use super::EventLoop;
use crate::adversary::Adversary;
use protocol::{Contribution, Envelope, Manifest, Message};

impl EventLoop {
    /// Looks at gossip the way a liar would: remembers others'
    /// contributions (to copy), and answers every manifest with a forged one.
    pub(super) fn misbehave_on(&mut self, bytes: &[u8]) {
        let Some(lies) = self.adversary.as_mut() else { return };
        let Ok(opened) = Envelope::open(bytes) else { return };
        let Ok(msg) = opened.message() else { return };
        let me = lies.key.peer_id();
        match msg {
            Message::Contribution(c) if opened.sender != me => {
                lies.seen.entry(opened.round).or_insert(c);
            }
            Message::Manifest(m) if lies.kind == Adversary::ForgeManifest && opened.sender != me => {
                // Its own version: the same round and state, one entry fewer.
                let mut entries = m.entries;
                if entries.len() > 1 {
                    entries.pop();
                }
                let forged = Manifest { state: m.state, entries, exclusions: Vec::new() };
                if let Ok(b) = Envelope::seal(&lies.key, opened.run, opened.round, &Message::Manifest(forged)) {
                    self.publish(b);
                }
            }
            _ => {}
        }
    }

    /// The contribution a copying liar announces for `round` instead of its own.
    pub(super) fn copied(&self, round: u64) -> Option<Contribution> {
        let lies = self.adversary.as_ref().filter(|l| l.kind == Adversary::Copy)?;
        lies.seen.get(&round).copied()
    }
}
