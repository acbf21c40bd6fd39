//! The ledger in the simulator: every peer computes the same epoch roots
//! from the manifests it applied; liars earn nothing; checks earn credit.

use protocol::ledger::{WorkKind, leaf, verify_proof};
use protocol::sim::{Sim, SimConfig};

#[test]
fn every_peer_computes_the_same_roots_and_liars_earn_nothing() {
    let mut cfg = SimConfig::new(10, 41);
    cfg.min_peers = 10;
    cfg.rounds = 12;
    cfg.verify_rate = 0.8;
    let mut sim = Sim::new(cfg);
    sim.liars.extend([3, 7]);
    sim.run_until(300_000);
    assert!(sim.all_finished());
    assert_eq!(sim.ledger_mismatches, 0, "a manifest carried a root some peer disagreed with");
    // Epochs of 3 rounds close 2 rounds after their last: 0, 1 and 2 by round 12.
    let reference = &sim.roots[&0];
    assert_eq!(reference.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    for (i, roots) in &sim.roots {
        assert_eq!(roots, reference, "node {i} computed other roots");
    }
    let ledger = sim.nodes[0].peer.ledger();
    let (liars, mut checks) = ([sim.peer_id(3), sim.peer_id(7)], 0);
    for e in ledger.epochs() {
        assert!(!e.is_unknown());
        assert_eq!(e.total, e.credits.iter().map(|c| c.credits).sum::<u64>());
        for c in &e.credits {
            if liars.contains(&c.peer) {
                assert_eq!(c.credits, 0, "epoch {}: a liar earned {}", e.epoch, c.credits);
            } else {
                assert!(c.penalty == 0, "epoch {}: an honest peer penalised", e.epoch);
            }
        }
        // A liar that contributed in the epoch has its would-be credits recorded as penalty.
        for l in &liars {
            if e.receipts.iter().any(|r| r.peer == *l) {
                assert!(e.credits.iter().any(|c| c.peer == *l && c.penalty > 0), "epoch {}", e.epoch);
            }
        }
        checks += e.work.iter().filter(|w| w.kind == WorkKind::Verifier).count();
        // Every leaf proves against the root, as the contract checks it.
        for (peer, payee, credits) in e.leaves() {
            let proof = e.proof(&peer).unwrap();
            assert!(verify_proof(leaf(&peer, &payee, credits), &proof, &e.root));
            assert!(!verify_proof(leaf(&peer, &payee, credits + 1), &proof, &e.root));
        }
        eprintln!(
            "epoch {}: rounds {}..={}, {} receipts, {} checks credited, total {}, root {}",
            e.epoch,
            e.first_round,
            e.last_round,
            e.receipts.len(),
            e.work.len(),
            e.total,
            hex::encode(&e.root[..8])
        );
    }
    assert!(checks > 0, "no verifier's passing check was credited");
    let disputes = ledger
        .epochs()
        .flat_map(|e| &e.work)
        .filter(|w| matches!(w.kind, WorkKind::Referee | WorkKind::Accuser))
        .count();
    assert!(disputes > 0, "no referee or accuser credited");
}

#[test]
fn a_peer_whose_ledger_differs_finds_out_from_the_manifests() {
    let mut cfg = SimConfig::new(4, 7);
    cfg.min_peers = 4;
    cfg.rounds = 10;
    cfg.verify_rate = 0.8;
    let mut sim = Sim::new(cfg);
    // Node 3 counts credits by another rule: its roots differ from everyone's.
    let mut other = sim.nodes[3].peer.ledger().spec().clone();
    other.sample_credit += 1;
    sim.nodes[3].peer.set_ledger(protocol::ledger::Ledger::new(other).with_review(0.8, 3));
    sim.run_until(200_000);
    assert!(sim.all_finished());
    assert_ne!(sim.roots[&3], sim.roots[&0]);
    assert_eq!(sim.roots[&1], sim.roots[&0]);
    assert!(sim.ledger_mismatches > 0, "nobody noticed a differing root");
    // Who noticed: node 3 about the others' roots, the others about node 3's.
    let noticed: Vec<u64> = sim.nodes.iter().map(|n| n.peer.stats().ledger_mismatches).collect();
    eprintln!("ledger mismatches noticed per node: {noticed:?}");
    assert!(noticed[3] > 0 || noticed[..3].iter().any(|&n| n > 0));
}
