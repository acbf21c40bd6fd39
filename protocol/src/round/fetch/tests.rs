use super::*;
use crate::id::Keypair;

fn peer(i: u64) -> PeerId {
    Keypair::from_seed(i).peer_id()
}

fn asked(out: &[OutEvent]) -> Vec<PeerId> {
    out.iter()
        .filter_map(|o| match o {
            OutEvent::Request { from, .. } => Some(*from),
            _ => None,
        })
        .collect()
}

#[test]
fn one_request_at_a_time_then_hedged_then_retried() {
    let mut f = Fetcher::new(peer(0), 300, 2, 1_000);
    let h = Hash::of(b"blob");
    let mut hedged = 0;
    // Connected providers go first.
    f.connected(peer(2), true);
    assert_eq!(asked(&f.fetch(h, BlobKind::State, vec![peer(1), peer(2)], 0)), vec![peer(2)]);
    assert_eq!(f.next_timeout(), Some(1_000));
    assert!(asked(&f.poll(999, &[], &mut hedged).0).is_empty());
    // Unanswered for the hedge delay: the next provider, in parallel.
    assert_eq!(asked(&f.poll(1_000, &[peer(3)], &mut hedged).0), vec![peer(1)]);
    assert_eq!(hedged, 1);
    // Peer 2 fails; peer 1 is still pending, so nothing new.
    assert!(asked(&f.failed(h, peer(2), false, false, 1_100).1).is_empty());
    // Peer 1 served wrong bytes: banned; peer 3 (learned at the hedge) is next.
    let (r, out) = f.failed(h, peer(1), true, false, 1_200);
    assert_eq!((r, asked(&out)), (Failed::Continuing, vec![peer(3)]));
    // Peer 3 fails too: the attempt is over; retry after 300 ms, without peer 1.
    let (r, out) = f.failed(h, peer(3), false, false, 1_300);
    assert_eq!((r, asked(&out).len()), (Failed::Continuing, 0));
    assert_eq!(f.next_timeout(), Some(1_600));
    let out = f.poll(1_600, &[], &mut hedged).0;
    assert_eq!(asked(&out).len(), 1);
    assert_ne!(asked(&out)[0], peer(1), "a provider that lied is never asked again");
    // Second and last attempt: everyone fails, the blob is given up.
    let mut last = (Failed::Continuing, Vec::new());
    for p in [peer(2), peer(3)] {
        last = f.failed(h, p, false, false, 1_700);
    }
    assert!(matches!(last.0, Failed::GaveUp(GivenUp { kind: BlobKind::State, .. })));
    assert!(!f.is_fetching(&h));
    assert_eq!(f.next_timeout(), None);
}

#[test]
fn a_hash_listed_as_a_manifest_that_the_round_needs_as_a_state_is_fetched_as_a_state() {
    // A liar lists a real state's hash as a manifest id; the state fetch
    // used to join that fetch and stay under the manifest's size bound.
    let mut f = Fetcher::new(peer(0), 300, 2, 1_000);
    let h = Hash::of(b"a state");
    let kinds = |out: &[OutEvent]| -> Vec<(PeerId, BlobKind)> {
        out.iter()
            .filter_map(|o| match o {
                OutEvent::Request { from, kind, .. } => Some((*from, *kind)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(kinds(&f.fetch(h, BlobKind::Manifest, vec![peer(1)], 0)), vec![(peer(1), BlobKind::Manifest)]);
    // The round needs it as its state, from peer 2: no second request
    // while peer 1's is out.
    assert!(f.fetch(h, BlobKind::State, vec![peer(2)], 10).is_empty());
    assert_eq!(f.manifests_in_flight(), 0, "no longer a manifest fetch");
    // Peer 1's answer was too big for a manifest: everyone is asked
    // again, as a state (peer 1 too: it may well hold the state).
    let (r, out) = f.failed(h, peer(1), false, false, 20);
    assert_eq!((r, kinds(&out)), (Failed::Continuing, vec![(peer(1), BlobKind::State)]));
    let (r, out) = f.failed(h, peer(1), false, false, 30);
    assert_eq!((r, kinds(&out)), (Failed::Continuing, vec![(peer(2), BlobKind::State)]));
    // A later listing as a manifest does not turn it back.
    assert!(f.fetch(h, BlobKind::Manifest, vec![peer(3)], 40).is_empty());
    let (_, out) = f.failed(h, peer(2), false, false, 50);
    assert_eq!(kinds(&out), vec![(peer(3), BlobKind::State)]);
    assert!(f.ready(h));
    // The same for a contribution listed as a manifest id.
    let c = Hash::of(b"a contribution");
    assert_eq!(kinds(&f.fetch(c, BlobKind::Manifest, vec![peer(1)], 60)), vec![(peer(1), BlobKind::Manifest)]);
    assert!(f.fetch(c, BlobKind::Contribution, vec![peer(4)], 61).is_empty());
    let (_, out) = f.failed(c, peer(1), false, false, 70);
    assert_eq!(kinds(&out), vec![(peer(1), BlobKind::Contribution)]);
}

#[test]
fn the_first_answer_wins_and_ourselves_are_never_asked() {
    let mut f = Fetcher::new(peer(0), 300, 3, 1_000);
    let h = Hash::of(b"blob");
    assert_eq!(asked(&f.fetch(h, BlobKind::Contribution, vec![peer(0), peer(5)], 0)), vec![peer(5)]);
    assert!(f.ready(h));
    assert!(!f.ready(h), "a late duplicate answer changes nothing");
    assert!(f.fetch(h, BlobKind::Contribution, vec![peer(6)], 10).is_empty(), "held: not fetched again");
}

#[test]
fn a_blob_with_nobody_to_ask_is_retried_then_given_up() {
    let mut f = Fetcher::new(peer(0), 300, 2, 1_000);
    let h = Hash::of(b"orphan");
    let mut hedged = 0;
    assert!(f.fetch(h, BlobKind::Manifest, vec![], 0).is_empty());
    assert_eq!(f.next_timeout(), Some(300));
    let (out, gave_up) = f.poll(300, &[], &mut hedged);
    assert!(out.is_empty());
    assert_eq!(gave_up, vec![GivenUp { hash: h, kind: BlobKind::Manifest, providers: vec![], disowned: vec![] }]);
    assert!(f.is_unavailable(&h));
    assert!(!f.is_fetching(&h));
}

#[test]
fn a_private_blob_its_maker_does_not_hold_is_given_up_at_once() {
    let mut f = Fetcher::new(peer(0), 300, 20, 1_000);
    let (chain, shared) = (Hash::of(b"chain"), Hash::of(b"update"));
    assert_eq!(asked(&f.fetch(chain, BlobKind::Chain, vec![peer(1)], 0)), vec![peer(1)]);
    assert_eq!(asked(&f.fetch(shared, BlobKind::Contribution, vec![peer(1)], 0)), vec![peer(1)]);
    // "Not held" from the maker of a chain ends its fetch; a shared blob
    // is asked again later (of others too).
    assert_eq!(
        f.failed(chain, peer(1), false, true, 10).0,
        Failed::GaveUp(GivenUp {
            hash: chain,
            kind: BlobKind::Chain,
            providers: vec![peer(1)],
            disowned: vec![peer(1)]
        })
    );
    assert_eq!(f.failed(shared, peer(1), false, true, 10).0, Failed::Continuing);
    assert!(f.is_fetching(&shared));
    // With two makers named (a copier's check and its victim's), one
    // "not held" asks the other; both end the fetch.
    let shared = Hash::of(b"shared chain");
    f.fetch(shared, BlobKind::Chain, vec![peer(3)], 40);
    f.fetch(shared, BlobKind::Chain, vec![peer(4)], 40);
    let (r, out) = f.failed(shared, peer(3), false, true, 50);
    assert_eq!((r, asked(&out)), (Failed::Continuing, vec![peer(4)]));
    let (r, _) = f.failed(shared, peer(4), false, true, 60);
    assert!(matches!(r, Failed::GaveUp(GivenUp { kind: BlobKind::Chain, .. })));
    // A maker that is unreachable is given a few more tries.
    let other = Hash::of(b"other chain");
    f.fetch(other, BlobKind::InnerState, vec![peer(2)], 20);
    assert_eq!(f.failed(other, peer(2), false, false, 30).0, Failed::Continuing);
}

#[test]
fn an_unvouched_id_is_asked_of_its_listers_once_and_a_lister_that_never_serves_is_ignored() {
    let mut f = Fetcher::new(peer(0), 300, 20, 1_000);
    let mut hedged = 0;
    let lister = peer(7);
    for k in 0..MAX_UNSERVED as u64 {
        let h = Hash::of(format!("made up {k}").as_bytes());
        let (asked_now, out) = f.fetch_unvouched(h, vec![lister], 0);
        assert!(asked_now);
        assert_eq!(asked(&out), vec![lister]);
        // Hedged and retried of nobody else; given up at its lister's "not held".
        assert!(asked(&f.poll(5_000, &[peer(1), peer(2)], &mut hedged).0).is_empty());
        assert!(matches!(f.failed(h, lister, false, true, 5_010).0, Failed::GaveUp(_)));
        assert!(f.is_unavailable(&h) && !f.gave_up_on(&h));
    }
    // Three unserved listings: the lister is not asked for a minute.
    let next = Hash::of(b"made up again");
    assert!(!f.fetch_unvouched(next, vec![lister], 6_000).0);
    assert!(f.fetch_unvouched(next, vec![lister], 5_010 + UNSERVED_FOR).0);
    // A peer with standing listing an unserved id fetches it as any blob.
    let old = Hash::of(b"made up 0");
    assert_eq!(asked(&f.fetch(old, BlobKind::Manifest, vec![peer(3)], 70_000)), vec![peer(3)]);
    assert!(f.ready(old) && !f.is_unavailable(&old));
}

#[test]
fn a_lister_has_at_most_a_few_unvouched_ids_in_flight() {
    let mut f = Fetcher::new(peer(0), 300, 20, 1_000);
    let started =
        (0..20u64).filter(|k| f.fetch_unvouched(Hash::of(format!("id {k}").as_bytes()), vec![peer(9)], 0).0).count();
    assert_eq!(started, UNVOUCHED_PER_LISTER);
}
