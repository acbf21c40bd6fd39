//! The rollout pool and the RL spec: bounds, the run's rules, re-scoring,
//! replays, ageing, eviction, spec checks.

use protocol::rollouts::*;
use protocol::{PeerId, SpecError};

fn group(family: u8, seed: u64, rewards: &[f32]) -> Rollout {
    Rollout {
        task: TaskRef { family, seed, level: 1 },
        completions: rewards.iter().map(|r| format!("{r}")).collect(),
        rewards: rewards.to_vec(),
    }
}

fn batch(round: u64, groups: Vec<Rollout>) -> RolloutBatch {
    RolloutBatch { session: 1, round, rollouts: groups }
}

fn rules() -> Rules {
    Rules { generate: 8, group: 2, max_chars: 8, level: 1, families: vec![0, 1], max_age: 2 }
}

/// The checker of `group`'s completions: the reward is the number written.
fn check(r: &Rollout) -> Vec<f32> {
    r.completions.iter().map(|c| c.parse().unwrap_or(-1.0)).collect()
}

#[test]
fn bounds_and_the_run_s_rules_are_checked_before_anything_is_kept() {
    let mut pool = Pool::new();
    let p = PeerId([1; 32]);
    let r = rules();
    let too_many = batch(1, (0..=MAX_ROLLOUTS as u64).map(|s| group(0, s, &[1.0, 0.0])).collect());
    assert!(matches!(pool.offer(p, too_many, 1, &r, &check), Err(RolloutError::TooLarge(_))));
    let mut short = group(0, 1, &[1.0, 0.0]);
    short.rewards.pop();
    assert!(matches!(pool.offer(p, batch(1, vec![short]), 1, &r, &check), Err(RolloutError::Invalid(_))));
    let unknown = group(FAMILIES, 1, &[1.0, 0.0]);
    assert!(matches!(pool.offer(p, batch(1, vec![unknown]), 1, &r, &check), Err(RolloutError::Invalid(_))));
    let mut long = group(0, 1, &[1.0, 0.0]);
    long.completions[0] = "x".repeat(MAX_COMPLETION_BYTES + 1);
    assert!(matches!(pool.offer(p, batch(1, vec![long]), 1, &r, &check), Err(RolloutError::TooLarge(_))));
    let nan = group(0, 1, &[f32::NAN, 0.0]);
    assert!(matches!(pool.offer(p, batch(1, vec![nan]), 1, &r, &check), Err(RolloutError::Invalid(_))));
    // Off the run's spec: another family, level, group size, or a
    // completion the policy would not read back as scored.
    let mut off: Vec<Rollout> = vec![group(2, 1, &[1.0, 0.0]), group(0, 1, &[1.0, 0.0, 0.0])];
    let mut level = group(0, 1, &[1.0, 0.0]);
    level.task.level = 2;
    off.push(level);
    for text in ["\n\n1", "1\u{e9}", "123456789"] {
        let mut g = group(0, 1, &[1.0, 0.0]);
        g.completions[0] = text.to_string();
        off.push(g);
    }
    for g in off {
        let got = pool.offer(p, batch(1, vec![g.clone()]), 1, &r, &check);
        assert!(matches!(got, Err(RolloutError::OffSpec(_))), "{g:?}: {got:?}");
    }
    // More groups than a round generates.
    let nine = batch(1, (0..9).map(|s| group(0, s, &[1.0, 0.0])).collect());
    assert!(matches!(pool.offer(p, nine, 1, &r, &check), Err(RolloutError::OffSpec(_))));
    assert_eq!(pool.peers(), 0);
    assert_eq!(pool.dropped(), 0, "off-spec is refused, not a lie");
    assert!(pool.candidates(1, 2, true, 0).is_empty());
}

#[test]
fn groups_age_in_our_rounds_and_replays_are_refused_but_a_restart_is_not() {
    let mut pool = Pool::new();
    let (p, late) = (PeerId([1; 32]), PeerId([2; 32]));
    let r = rules();
    assert_eq!(pool.offer(p, batch(5, vec![group(0, 1, &[1.0, 0.0])]), 5, &r, &check), Ok(1));
    let replay = pool.offer(p, batch(5, vec![group(0, 2, &[1.0, 0.0])]), 5, &r, &check);
    assert_eq!(replay, Err(RolloutError::Replayed { session: 1, round: 5 }));
    assert!(matches!(pool.offer(p, batch(2, vec![]), 5, &r, &check), Err(RolloutError::Replayed { .. })));
    // A restart: a new session counts from round 1 again.
    let restarted = RolloutBatch { session: 2, round: 1, rollouts: vec![group(1, 3, &[0.0, 1.0])] };
    assert_eq!(pool.offer(p, restarted, 6, &r, &check), Ok(1));
    // Groups age from their arrival: ours at 5 and 6, so at 8 only round 6's is fresh, at 9 none.
    assert_eq!(pool.fresh_count(7, 2), 2);
    assert_eq!(pool.fresh_count(8, 2), 1);
    assert_eq!(pool.fresh_count(9, 2), 0);
    // A late joiner's round 1 arrives in our round 30 and is fresh.
    assert_eq!(pool.offer(late, batch(1, vec![group(0, 4, &[1.0, 0.0])]), 30, &r, &check), Ok(1));
    assert_eq!(pool.fresh_count(30, 2), 1);
    assert_eq!(pool.candidates(30, 2, true, 0)[0].peer, late);
    // A round number at the end of u64 does not overflow anything.
    let far = RolloutBatch { session: u64::MAX, round: u64::MAX, rollouts: vec![group(0, 5, &[1.0, 0.0])] };
    assert_eq!(pool.offer(late, far, u64::MAX, &r, &check), Ok(1));
    assert_eq!(pool.fresh_count(u64::MAX, 2), 1);
}

#[test]
fn a_claim_that_does_not_rescore_drops_the_sender() {
    let mut pool = Pool::new();
    let (p, q) = (PeerId([1; 32]), PeerId([2; 32]));
    let r = rules();
    assert_eq!(pool.offer(q, batch(9, vec![group(0, 1, &[0.0, 0.0])]), 9, &r, &check), Ok(1));
    assert_eq!(pool.offer(p, batch(1, vec![group(0, 7, &[1.0, 0.0])]), 9, &r, &check), Ok(1));
    let mut inflated = group(0, 2, &[1.0, 0.0]);
    inflated.rewards = vec![1.0, 1.0];
    let got = pool.offer(p, batch(2, vec![group(0, 1, &[0.0, 0.0]), inflated]), 9, &r, &check);
    assert!(matches!(got, Err(RolloutError::Lied { task: TaskRef { seed: 2, .. }, .. })), "{got:?}");
    assert!(pool.is_dropped(&p));
    let again = pool.offer(p, batch(10, vec![group(0, 3, &[0.0, 0.0])]), 9, &r, &check);
    assert_eq!(again, Err(RolloutError::Dropped));
    let c = pool.candidates(9, 2, false, 0);
    assert_eq!(c.len(), 1, "the liar's earlier groups went with it");
    assert_eq!(c[0].peer, q);
}

#[test]
fn informative_groups_come_first_and_used_groups_never_return() {
    let mut pool = Pool::new();
    let (a, b) = (PeerId([1; 32]), PeerId([2; 32]));
    let r = rules();
    let flat = (0..6).map(|s| group(0, s, &[0.0, 0.0])).collect();
    pool.offer(a, batch(1, flat), 1, &r, &check).unwrap();
    pool.offer(b, batch(1, vec![group(1, 9, &[1.0, 0.0]), group(1, 10, &[1.0, 1.0])]), 1, &r, &check).unwrap();
    for seed in 0..20 {
        let c = pool.candidates(1, 2, true, seed);
        assert_eq!(c.len(), 8);
        assert_eq!((c[0].peer, c[0].rollout.task.seed), (b, 9), "seed {seed}");
    }
    // Random selection: the varied group is not always first.
    let firsts: std::collections::BTreeSet<_> =
        (0..20).map(|s| pool.candidates(1, 2, false, s)[0].rollout.task).collect();
    assert!(firsts.len() > 1);
    pool.mark_used(b, 1, TaskRef { family: 1, seed: 9, level: 1 });
    let c = pool.candidates(1, 2, true, 3);
    assert_eq!(c.len(), 7);
    assert!(c.iter().all(|c| c.rollout.task.seed != 9));
    assert_eq!(pool.fresh_count(1, 2), 7);
}

#[test]
fn fresh_keys_cannot_grow_the_pool_without_bound() {
    let mut pool = Pool::new();
    let r = Rules { max_age: 1000, ..rules() };
    for i in 0..(MAX_POOL_PEERS as u64 + 10) {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&i.to_le_bytes());
        pool.offer(PeerId(id), batch(1, vec![group(0, i, &[1.0, 0.0])]), i, &r, &check).unwrap();
    }
    assert_eq!(pool.peers(), MAX_POOL_PEERS);
    // The quietest went first: the first key is gone, the last is there.
    let c = pool.candidates(MAX_POOL_PEERS as u64 + 9, 1000, false, 0);
    assert!(c.iter().all(|c| c.peer.0[..8] != 0u64.to_le_bytes()));
    for i in 0..(MAX_DROPPED as u64 + 5) {
        let mut id = [1u8; 32];
        id[..8].copy_from_slice(&i.to_le_bytes());
        pool.drop_peer(PeerId(id), "x".repeat(1000));
    }
    assert_eq!(pool.dropped(), MAX_DROPPED);
}

fn spec() -> RlSpec {
    RlSpec {
        model: "tasks-gpt".into(),
        seed: 0,
        rounds: 10,
        min_peers: 1,
        rl: RlParams {
            generate: 8,
            local: 4,
            external: 4,
            select: "informative".into(),
            group: 8,
            temperature: 1.0,
            max_tokens: 8,
            families: vec!["count".into()],
            level: 2,
            lr: 3e-4,
            clip_low: 0.2,
            clip_high: 0.28,
            epochs: 2,
            kl: 0.0,
            sft_steps: 10,
            max_age: 2,
            wait_ms: 1000,
            start_wait_ms: 1000,
            eval_every: 5,
        },
    }
}

#[test]
fn specs_are_checked_and_round_trip() {
    let s = spec();
    assert_eq!(RlSpec::from_toml(&s.to_toml()).unwrap(), s);
    let field = |f: &dyn Fn(&mut RlSpec)| {
        let mut t = spec();
        f(&mut t);
        match t.validate() {
            Err(SpecError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(field(&|t| t.rl.external = u32::MAX), "rl.external", "local + external overflows");
    assert_eq!(field(&|t| t.rl.max_age = 0), "rl.max_age");
    assert_eq!(field(&|t| t.rl.group = 1), "rl.group");
    // The largest batch a spec allows is a blob well within the payload bound.
    let mut big = spec();
    (big.rl.generate, big.rl.group, big.rl.max_tokens) = (64, 32, 256);
    big.validate().unwrap();
    assert!(batch_bound(64, 32, 256) < MAX_BATCH_BYTES / 3);
    assert_eq!(field(&|t| t.rl.generate = 65), "rl.generate");
    assert_eq!(field(&|t| t.rl.kl = 0.1), "rl.kl");
    let mut other = spec();
    other.seed = 1;
    assert_ne!(other.run_id(), s.run_id());
}

#[test]
fn a_payload_is_checked_against_its_signed_announcement_before_it_is_decoded() {
    let b = batch(3, vec![group(0, 1, &[1.0, 0.0]), group(1, 2, &[0.0, 0.0])]);
    let (a, bytes) = Announce::of(&b).unwrap();
    assert_eq!((a.session, a.round, a.groups, a.bytes as usize), (1, 3, 2, bytes.len()));
    a.check(3).unwrap();
    assert_eq!(a.open(&bytes).unwrap(), b);
    // What gossip carries is small, whatever the batch's size.
    let key = protocol::Keypair::from_seed(1);
    let env = protocol::Envelope::seal(&key, protocol::Hash([7; 32]), 3, &protocol::Message::Rollouts(a)).unwrap();
    let opened = protocol::Envelope::open(&env).unwrap();
    assert_eq!(opened.message().unwrap(), protocol::Message::Rollouts(a));
    assert!(env.len() <= 200, "an announcement of {} bytes", env.len());
    // The envelope's round, the size and the group count are bounded
    // before anything is fetched.
    assert!(matches!(a.check(4), Err(RolloutError::Invalid(_))));
    for bad in [
        Announce { bytes: 0, ..a },
        Announce { bytes: MAX_BATCH_BYTES as u32 + 1, ..a },
        Announce { groups: 0, ..a },
        Announce { groups: MAX_ROLLOUTS as u32 + 1, ..a },
    ] {
        assert!(matches!(bad.check(3), Err(RolloutError::TooLarge(_))), "{bad:?}");
    }
    // Bytes that are not the announced ones are the provider's fault:
    // one flipped, one short, one more.
    let mut flipped = bytes.clone();
    flipped[5] ^= 1;
    let mut longer = bytes.clone();
    longer.push(0);
    for other in [flipped, bytes[..bytes.len() - 1].to_vec(), longer] {
        assert_eq!(a.open(&other), Err(PayloadError::WrongBytes(other.len())));
    }
    // The announced bytes, but not the batch announced: the author's fault.
    let (other, _) = Announce::of(&batch(4, b.rollouts.clone())).unwrap();
    let lied = Announce { hash: a.hash, bytes: a.bytes, ..other };
    assert!(matches!(lied.open(&bytes), Err(PayloadError::Bad(RolloutError::Invalid(_)))));
    let garbage = vec![0xffu8; 40];
    let g = Announce { hash: protocol::Hash::of(&garbage), bytes: 40, ..a };
    assert!(matches!(g.open(&garbage), Err(PayloadError::Bad(RolloutError::Invalid(_)))));
    // Vectors are bounded by their length prefix while decoding, before
    // anything is allocated for them: a group of a million empty
    // completions (1 MB of payload) fails in the decoder, not in a check
    // after it.
    let mut huge = group(0, 1, &[]);
    huge.completions = vec![String::new(); 1_000_000];
    let bytes = bincode::serde::encode_to_vec(batch(3, vec![huge]), bincode::config::standard()).unwrap();
    let h = Announce { hash: protocol::Hash::of(&bytes), bytes: bytes.len() as u32, groups: 1, ..a };
    match h.open(&bytes) {
        Err(PayloadError::Bad(RolloutError::Invalid(why))) => assert!(why.contains("at most 32"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(Announce::of(&batch(1, vec![])), Err(RolloutError::Invalid(_))));
    // A batch over the wire bounds is neither announced nor opened.
    let mut long = group(0, 1, &[1.0, 0.0]);
    long.completions[0] = "x".repeat(MAX_COMPLETION_BYTES + 1);
    assert!(matches!(Announce::of(&batch(1, vec![long])), Err(RolloutError::TooLarge(_))));
}

#[test]
fn the_largest_batch_the_wire_bounds_allow_fits_the_payload_bound() {
    let full = Rollout {
        task: TaskRef { family: FAMILIES - 1, seed: u64::MAX, level: MAX_LEVEL },
        completions: vec!["~".repeat(MAX_COMPLETION_BYTES); MAX_GROUP],
        rewards: vec![f32::MAX; MAX_GROUP],
    };
    let b = RolloutBatch { session: u64::MAX, round: u64::MAX, rollouts: vec![full; MAX_ROLLOUTS] };
    let (a, bytes) = Announce::of(&b).unwrap();
    assert!(bytes.len() <= MAX_BATCH_BYTES && bytes.len() > MAX_BATCH_BYTES - 64 * 1024, "{}", bytes.len());
    assert_eq!(a.open(&bytes).unwrap(), b);
}
