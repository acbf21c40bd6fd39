//! What a misbehaving node (`--adversary`, the attack suite) does beyond
//! its worker's lies: copy others' announcements, forge manifests.

use super::{EventLoop, Lies};
use crate::adversary::Adversary;
use crate::worker::Trained;
use protocol::{Contribution, Envelope, Manifest, ManifestEntry, Message};

impl Lies {
    pub(super) fn new(kind: Adversary, key: protocol::Keypair) -> Lies {
        Lies { kind, key, seen: Default::default(), held: None, forged: Default::default() }
    }
}

impl EventLoop {
    /// Looks at gossip the way a liar would: remembers others'
    /// contributions (to copy), and races every aggregator with a forged
    /// manifest.
    pub(super) fn misbehave_on(&mut self, bytes: &[u8]) {
        let Some(lies) = self.adversary.as_mut() else { return };
        let Ok(opened) = Envelope::open(bytes) else { return };
        let Ok(msg) = opened.message() else { return };
        let me = lies.key.peer_id();
        let Message::Contribution(c) = msg else { return };
        if opened.sender == me {
            return;
        }
        lies.seen.entry(opened.round).or_insert(c);
        let mut forged = None;
        if lies.kind == Adversary::ForgeManifest && lies.forged.insert(opened.round) {
            // Races the aggregator: a manifest of the round from the first
            // announcement seen, signed by a peer that may not sign it (it
            // trained nothing last round).
            let entry = ManifestEntry { peer: opened.sender, contribution: c, signature: opened.signature };
            let m = Manifest {
                state: c.base_state,
                entries: vec![entry],
                exclusions: Vec::new(),
                excluded: Vec::new(),
                checks: Vec::new(),
                ledger: None,
            };
            forged = Envelope::seal(&lies.key, opened.run, opened.round, &Message::Manifest(m)).ok();
        }
        // A held result of this round can now go out as a copy.
        let release = if lies.held.as_ref().is_some_and(|t| t.round == opened.round) { lies.held.take() } else { None };
        if let Some(b) = forged {
            self.publish(b);
        }
        if let Some(t) = release {
            self.on_trained(t);
        }
    }

    /// A copying liar holds its own result until it has seen someone's
    /// contribution of the round (the result is returned when it need not).
    pub(super) fn hold_to_copy(&mut self, t: Trained) -> Option<Trained> {
        match self.adversary.as_mut() {
            Some(l) if l.kind == Adversary::Copy && !l.seen.contains_key(&t.round) => {
                l.held = Some(t);
                None
            }
            _ => Some(t),
        }
    }

    /// The contribution a copying liar announces for `round` instead of its own.
    pub(super) fn copied(&self, round: u64) -> Option<Contribution> {
        let lies = self.adversary.as_ref().filter(|l| l.kind == Adversary::Copy)?;
        lies.seen.get(&round).copied()
    }
}
