//! The node's side of the ledger: it keeps the manifests the ledger
//! applied, writes the readable view when epochs close, and signs each
//! closed epoch's root with the settlement key (the attestation its next
//! contributions carry).

use super::EventLoop;
use crate::ledger_log;
use protocol::message::Attestation;

impl EventLoop {
    pub(super) fn on_record(&mut self, round: u64, id: protocol::Hash, manifest: &protocol::Manifest) {
        if let Err(e) = ledger_log::append(&self.run_dir.join("manifests.log"), round, id, manifest) {
            self.info(format!("cannot keep manifest {round} for the ledger: {e}"));
        }
    }

    pub(super) fn on_epochs_closed(&mut self, epochs: Vec<u64>) {
        let run = self.run;
        let ledger = self.peer.ledger();
        let mut lines = Vec::new();
        for e in epochs.iter().filter_map(|e| ledger.epoch(*e)) {
            let me = self.peer.id();
            let mine = e.credits.iter().find(|c| c.peer == me).map_or(0, |c| c.credits);
            lines.push(format!(
                "epoch {} closed (rounds {}..={}): {} peers, {} credits, yours {mine}, root {}",
                e.epoch,
                e.first_round,
                e.last_round,
                e.credits.iter().filter(|c| c.credits > 0).count(),
                e.total,
                hex::encode(&e.root[..8])
            ));
        }
        if let Err(e) = ledger_log::write_view(&self.run_dir.join("ledger.json"), &run, ledger) {
            lines.push(format!("cannot write ledger.json: {e}"));
        }
        self.attest();
        for l in lines {
            self.info(l);
        }
    }

    /// Signs the newest epoch this peer computed, for its next contributions.
    pub(super) fn attest(&mut self) {
        let Some(e) = self.peer.ledger().epochs().filter(|e| !e.is_unknown()).last() else { return };
        let digest = e.digest(&self.run);
        let signature = self.settlement.sign(&digest);
        self.attestation = Some(Attestation { epoch: e.epoch, root: e.root, signature });
    }

    pub(super) fn on_ledger_differs(&mut self, epoch: u64, ours: [u8; 32], theirs: [u8; 32], signer: protocol::PeerId) {
        self.info(format!(
            "ledger: {} says epoch {epoch}'s root is {}, ours is {}: our ledgers differ",
            signer.short(),
            hex::encode(&theirs[..8]),
            hex::encode(&ours[..8])
        ));
    }
}
