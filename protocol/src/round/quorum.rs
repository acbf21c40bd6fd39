//! Every rule that counts peers, in one place, each with its reason and what
//! it resists. `n` counts the active peers as this peer hears them.

use crate::id::PeerId;

/// Confirmations a joiner needs before it syncs to a manifest: more than
/// `fraction` of the `active` peers it hears (0.5: a strict majority), at
/// least one, never more than there are.
///
/// Why: a signed manifest alone proves only that its signer made it; peers
/// listing it in their hellos say they applied it. Resists one peer (or a
/// minority) handing a joiner a made-up manifest and state.
pub fn sync_confirmations(active: usize, fraction: f64) -> usize {
    ((fraction * active as f64).floor() as usize + 1).min(active)
}

/// A peer leaves its own history when a strict majority of the `n` active
/// peers (itself counted) list another manifest for a round it applied.
///
/// Why: after a partition heals, the side most peers follow is the run;
/// the other side re-syncs. A minority cannot make the majority switch.
pub fn is_majority(votes: usize, n: usize) -> bool {
    votes * 2 > n
}

/// An aggregator holds back its manifest for a round that more than a third
/// of the `active` peers say is over (they applied it or are past it): its
/// manifest exists and we missed it, and publishing another would split
/// the swarm.
///
/// Why a third and not one: one peer claiming a later round (a liar) must
/// not stop every aggregator.
pub fn round_is_over(past: usize, active: usize) -> bool {
    past > 0 && past * 3 > active
}

/// A peer still training, gathering or (too long) collecting a round is
/// behind when most active peers are past it: it missed the manifest and
/// re-syncs rather than wait for a round that has closed without it.
pub fn is_behind(ahead: usize, active: usize) -> bool {
    active > 0 && ahead * 2 > active
}

/// A waiting peer takes the run as under way (and waits for a manifest to
/// sync to rather than start round 1) when at least half of the `present`
/// peers (itself counted) are active past round 1 with manifests to show
/// (half: a swarm of one running peer and one joiner is under way).
///
/// Why: a run that started is joined, not restarted; but one peer (or a
/// minority) claiming a later round must not keep every waiting peer from
/// starting.
pub fn run_is_under_way(past: usize, present: usize) -> bool {
    past > 0 && past * 2 >= present
}

/// After a partition heals, the side with more supporters wins; on a tie,
/// the side with the lowest peer id (a rule every peer evaluates the same
/// way). Returns whether `theirs` wins over `ours`.
pub fn other_side_wins(theirs: &[PeerId], ours: &[PeerId]) -> bool {
    theirs.len() > ours.len()
        || (theirs.len() == ours.len() && !theirs.is_empty() && theirs.iter().min() < ours.iter().min())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(sync_confirmations(0, 0.5), 0);
        assert_eq!(sync_confirmations(1, 0.5), 1);
        assert_eq!(sync_confirmations(4, 0.5), 3);
        assert_eq!(sync_confirmations(5, 0.5), 3);
        assert!(!is_majority(2, 4) && is_majority(3, 4));
        assert!(!round_is_over(1, 3) && round_is_over(2, 5) && !round_is_over(0, 0));
        assert!(!is_behind(0, 0) && !is_behind(1, 2) && is_behind(2, 3));
        assert!(run_is_under_way(1, 2) && !run_is_under_way(1, 3) && !run_is_under_way(0, 1));
    }
}
