//! The per-round report: one readable line, or one JSON object per line.

use serde::{Deserialize, Serialize};

/// Bytes one way and the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Bytes sent.
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
}

/// A round's traffic by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Signed control messages (gossip: hellos, contributions, manifests).
    pub control: Flow,
    /// Encoded pseudo-gradients (blob requests and responses).
    pub grads: Flow,
    /// State sync (parameters + optimizer state blobs).
    pub state: Flow,
    /// Peer review: commitment chains and inner states.
    #[serde(default)]
    pub verify: Flow,
}

impl Traffic {
    /// All kinds together.
    pub fn total(&self) -> Flow {
        let all = [self.control, self.grads, self.state, self.verify];
        Flow { sent: all.iter().map(|f| f.sent).sum(), received: all.iter().map(|f| f.received).sum() }
    }

    /// `self - earlier`, kind by kind.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        let d = |a: Flow, b: Flow| Flow { sent: a.sent - b.sent, received: a.received - b.received };
        Traffic {
            control: d(self.control, earlier.control),
            grads: d(self.grads, earlier.grads),
            state: d(self.state, earlier.state),
            verify: d(self.verify, earlier.verify),
        }
    }
}

/// What a peer prints after applying a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// The round applied.
    pub round: u64,
    /// BLAKE3 of the state (parameters + outer optimizer) after the round.
    pub state_hash: String,
    /// Held-out loss.
    pub eval_loss: f32,
    /// Held-out accuracy, where the model has one.
    pub eval_accuracy: Option<f32>,
    /// Held-out perplexity (exp of the loss), for language models.
    #[serde(default)]
    pub eval_perplexity: Option<f32>,
    /// Bytes this peer sent during the round (control + blobs).
    pub bytes_sent: u64,
    /// Bytes this peer received during the round.
    pub bytes_received: u64,
    /// The same, by kind.
    pub traffic: Traffic,
    /// Peers in the swarm as this peer sees it, itself included.
    pub peers: usize,
    /// Contributions applied this round.
    pub contributors: usize,
    /// Who signed the round's manifest (short id).
    #[serde(default)]
    pub aggregator: String,
    /// Whether this peer's own contribution was among them.
    pub contributed: bool,
    /// Mean inner-loop training loss of this peer (if it trained).
    pub train_loss: Option<f32>,
    /// How long this peer's training of the round took, ms (none if it
    /// did not train).
    #[serde(default)]
    pub train_ms: Option<u64>,
    /// This peer's encoded pseudo-gradient, bytes.
    pub payload_bytes: u64,
    /// Parameters of the model.
    pub params: usize,
    /// The pseudo-gradient codec.
    pub codec: String,
    /// This peer's id (hex, short).
    pub peer: String,
    /// Milliseconds since the node started.
    pub elapsed_ms: u64,
    /// Providers this peer caught serving bytes that do not match their
    /// hash, so far (each is disconnected and never asked again).
    #[serde(default)]
    pub bad_providers: u64,
    /// Peers that announced leaving the run, so far.
    #[serde(default)]
    pub peers_left: u64,
    /// Contributions of others this peer checked (as verifier or referee), so far.
    #[serde(default)]
    pub verified: u64,
    /// Disputes opened (a verifier found a fault), so far.
    #[serde(default)]
    pub disputes: u64,
    /// Peers excluded from the run, so far.
    #[serde(default)]
    pub excluded: u64,
    /// Peers this peer caught signing a manifest they may not sign, so far
    /// (their messages are dropped here).
    #[serde(default)]
    pub banned: u64,
}

/// `12.3 KiB` style sizes.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", U[i]) }
}

impl RoundReport {
    /// One line for a person.
    pub fn line(&self) -> String {
        let mut acc = self.eval_accuracy.map(|a| format!(" acc {:.3}", a)).unwrap_or_default();
        if let Some(p) = self.eval_perplexity {
            acc += &format!(" ppl {p:.1}");
        }
        let mut review = if self.verified + self.disputes + self.excluded > 0 {
            format!(" | checked {} disputes {} excluded {}", self.verified, self.disputes, self.excluded)
        } else {
            String::new()
        };
        if self.banned > 0 {
            review += &format!(" banned {}", self.banned);
        }
        format!(
            "round {:>3} | loss {:.4}{} | peers {} ({} contributed{}) | sent {} recv {} | state {}{review}",
            self.round,
            self.eval_loss,
            acc,
            self.peers,
            self.contributors,
            if self.contributed { ", incl. me" } else { "" },
            human_bytes(self.bytes_sent),
            human_bytes(self.bytes_received),
            &self.state_hash[..16.min(self.state_hash.len())],
        )
    }

    /// One JSON object (no newline).
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_json() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        let r = RoundReport {
            round: 3,
            state_hash: "ab".repeat(32),
            eval_loss: 0.5,
            eval_accuracy: Some(0.9),
            eval_perplexity: None,
            bytes_sent: 1,
            bytes_received: 2,
            traffic: Traffic::default(),
            peers: 3,
            contributors: 3,
            aggregator: "y".into(),
            contributed: true,
            train_loss: None,
            train_ms: None,
            payload_bytes: 4,
            params: 5,
            codec: "fp32".into(),
            peer: "x".into(),
            elapsed_ms: 6,
            bad_providers: 0,
            peers_left: 0,
            verified: 0,
            disputes: 0,
            excluded: 0,
            banned: 0,
        };
        let back: RoundReport = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(back, r);
        assert!(r.line().contains("round   3"));
    }
}
