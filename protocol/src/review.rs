//! Peer review, the pure parts: who checks which contribution of an applied
//! manifest (drawn from the manifest's id, which nobody knew before the
//! contributions were committed), which segment, who referees a dispute,
//! what a finding says, and what makes an exclusion valid.

use crate::envelope::Envelope;
use crate::id::{Hash, PeerId};
use crate::message::{Fault, Message, SignedFinding};

/// Whether a quoted finding's signature holds for `run` and `round`.
pub fn finding_is_signed(f: &SignedFinding, run: Hash, round: u64) -> bool {
    Envelope::verify_detached(run, round, f.by, &Message::Verdict(f.finding), &f.signature)
}

fn draw(tag: &[u8], manifest: &Hash, contributor: &PeerId, other: Option<&PeerId>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"swarm/review/");
    h.update(tag);
    h.update(&manifest.0);
    h.update(&contributor.0);
    if let Some(o) = other {
        h.update(&o.0);
    }
    *h.finalize().as_bytes()
}

fn unit(bytes: [u8; 32]) -> f64 {
    (u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()) >> 11) as f64 / (1u64 << 53) as f64
}

/// The randomness of a manifest's review draws: BLAKE3 of its round and its
/// entries (each contributor and its signature), not of the whole manifest.
/// What else a manifest carries (exclusions, credited checks, the ledger
/// root) is the aggregator's to choose, and must not let it grind the draws
/// (e.g. to give its own contribution a friendly verifier) at no cost; the
/// entries it can only leave out, at the cost of the work it drops.
pub fn draw_seed(round: u64, entries: &[crate::message::ManifestEntry]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"swarm/review/seed/");
    h.update(&round.to_le_bytes());
    for e in entries {
        h.update(&e.peer.0);
        h.update(&e.signature.0);
    }
    Hash(*h.finalize().as_bytes())
}

/// The verifier of `contributor`'s entry in manifest `manifest` (whose
/// contributors are `peers`): drawn with probability `rate`, then the
/// other contributor ranked first by the manifest's id.
pub fn verifier(manifest: &Hash, contributor: &PeerId, peers: &[PeerId], rate: f64) -> Option<PeerId> {
    if unit(draw(b"verify", manifest, contributor, None)) >= rate {
        return None;
    }
    peers
        .iter()
        .filter(|q| *q != contributor)
        .min_by_key(|q| draw(b"verifier", manifest, contributor, Some(q)))
        .copied()
}

/// The segment a check of `contributor`'s entry re-executes.
pub fn segment(manifest: &Hash, contributor: &PeerId, segments: u32) -> u32 {
    (u64::from_le_bytes(draw(b"segment", manifest, contributor, None)[..8].try_into().unwrap_or_default())
        % u64::from(segments.max(1))) as u32
}

/// The referees of a dispute about `contributor`'s entry: `n` contributors
/// of the manifest, neither the contributor nor its verifier, ranked by the
/// manifest's id.
pub fn referees(manifest: &Hash, contributor: &PeerId, verifier: &PeerId, peers: &[PeerId], n: usize) -> Vec<PeerId> {
    let mut r: Vec<PeerId> = peers.iter().filter(|q| *q != contributor && *q != verifier).copied().collect();
    r.sort_by_key(|q| draw(b"referee", manifest, contributor, Some(q)));
    r.truncate(n);
    r
}

/// Findings needed to decide a dispute: a strict majority of the committee.
pub fn majority(committee: usize) -> usize {
    committee / 2 + 1
}

/// Who is at fault in a dispute, if its findings decide it: the referees'
/// majority finding a fault convicts the contributor, finding none the
/// accuser. An accusation of not serving that the referees find served is
/// dismissed instead (a blob can be unreachable for a moment: neither side
/// is shown to have lied).
pub fn verdict(accusation: &SignedFinding, findings: &[SignedFinding], committee: usize) -> Option<PeerId> {
    let faults = findings.iter().filter(|f| f.finding.fault.is_some()).count();
    let clean = findings.len() - faults;
    let need = majority(committee);
    if faults >= need {
        Some(accusation.finding.contributor)
    } else if clean >= need && accusation.finding.fault != Some(Fault::Unavailable) {
        Some(accusation.by)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Keypair;
    use crate::message::Finding;

    #[test]
    fn committees_are_drawn_from_the_manifest_and_exclude_the_parties() {
        let peers: Vec<PeerId> = (0..8).map(|i| Keypair::from_seed(i).peer_id()).collect();
        let m = Hash::of(b"manifest");
        let mut drawn = 0;
        for p in &peers {
            if let Some(v) = verifier(&m, p, &peers, 0.8) {
                drawn += 1;
                assert_ne!(v, *p);
                let r = referees(&m, p, &v, &peers, 3);
                assert_eq!(r.len(), 3);
                assert!(!r.contains(p) && !r.contains(&v));
            }
            assert!(segment(&m, p, 10) < 10);
        }
        assert!(drawn > 0);
        // Rate 0: nobody is checked; rate 1: everyone.
        assert!(peers.iter().all(|p| verifier(&m, p, &peers, 0.0).is_none()));
        assert!(peers.iter().all(|p| verifier(&m, p, &peers, 1.0).is_some()));
        // Another manifest draws other committees.
        let other = Hash::of(b"another");
        assert!(peers.iter().any(|p| verifier(&m, p, &peers, 1.0) != verifier(&other, p, &peers, 1.0)));
    }

    #[test]
    fn the_referees_majority_decides_and_an_unproven_unavailability_is_dismissed() {
        let (contributor, verifier) = (Keypair::from_seed(1).peer_id(), Keypair::from_seed(2).peer_id());
        let finding = |by: u64, fault: Option<Fault>| SignedFinding {
            by: Keypair::from_seed(by).peer_id(),
            finding: Finding { manifest: Hash::of(b"m"), contributor, segment: 3, fault },
            signature: crate::message::Signature([0; 64]),
        };
        for fault in [Fault::Segment, Fault::Unavailable] {
            let accusation = finding(2, Some(fault));
            let guilty = [finding(3, Some(fault)), finding(4, Some(fault)), finding(5, None)];
            assert_eq!(verdict(&accusation, &guilty[..1], 3), None, "one finding of three decides nothing");
            assert_eq!(verdict(&accusation, &guilty, 3), Some(contributor));
            let clean = [finding(3, None), finding(4, None)];
            let expected = if fault == Fault::Unavailable { None } else { Some(verifier) };
            assert_eq!(verdict(&accusation, &clean, 3), expected, "{fault:?} found clean");
        }
    }
}
