//! A lying peer on the real network: it joins a run of two honest `swarm`
//! processes, announces a contribution every round, and answers every blob
//! request with bytes that do not hash to what was asked. The honest peers
//! must drop it, count it, and finish the run without it.

mod common;

use common::*;
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, request_response};
use protocol::{Contribution, Envelope, Hash, Message, RunSpec, Status};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use swarm::RoundReport;
use swarm::net::BehaviourEvent;

const ROUNDS: u64 = 4;

fn spec() -> RunSpec {
    let mut s = RunSpec::new(
        "digits-mlp",
        protocol::spec::TrainSpec { inner_steps: 100, inner_lr: 0.002, batch_size: 32, weight_decay: 0.0 },
    );
    s.rounds = ROUNDS;
    s.min_peers = 3;
    s.timing.round_timeout_ms = 5_000;
    s.timing.min_round_ms = 1_000;
    s.timing.aggregator_timeout_ms = 1_000;
    s
}

/// The liar: a libp2p node with the real behaviour and a protocol identity,
/// but no training. Runs until `stop` resolves; returns how many blob
/// requests it answered with wrong bytes, by requesting peer.
async fn liar(boot: String, spec: RunSpec, stop: tokio::sync::oneshot::Receiver<()>) -> BTreeMap<libp2p::PeerId, u64> {
    let key = protocol::Keypair::from_seed(4242);
    let run = spec.run_id();
    let mut sw = swarm::net::build(&key, 1 << 20).unwrap();
    sw.listen_on(swarm::net::parse_addr(LOOPBACK).unwrap()).unwrap();
    let topic = gossipsub::IdentTopic::new(format!("swarm/run/{}", run.to_hex()));
    sw.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    let (addr, boot_id) = swarm::net::split_p2p(&boot).unwrap();
    sw.behaviour_mut().kad.add_address(&boot_id, addr.clone());
    sw.dial(addr).unwrap();
    let mut hello = tokio::time::interval(Duration::from_millis(500));
    let mut stop = std::pin::pin!(stop);
    let (mut seq, mut round, mut contributed, mut lies) = (0u64, 0u64, BTreeSet::new(), BTreeMap::new());
    loop {
        tokio::select! {
            _ = &mut stop => return lies,
            _ = hello.tick() => {
                seq += 1;
                let status = if round == 0 { Status::Waiting } else { Status::Active };
                let msg = Message::Hello { status, seq, recent: vec![] };
                let bytes = Envelope::seal(&key, run, round, &msg).unwrap();
                let _ = sw.behaviour_mut().gossipsub.publish(topic.clone(), bytes);
                let me = *sw.local_peer_id();
                sw.behaviour_mut().kad.get_closest_peers(me);
            }
            ev = sw.select_next_some() => match ev {
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { propagation_source, message_id, message })) => {
                    let gs = &mut sw.behaviour_mut().gossipsub;
                    let _ = gs.report_message_validation_result(&message_id, &propagation_source, gossipsub::MessageAcceptance::Accept);
                    let Ok(opened) = Envelope::open(&message.data) else { continue };
                    let r = opened.round;
                    if let Ok(Message::Contribution(Contribution { base_state, .. })) = opened.message()
                        && contributed.insert(r)
                    {
                        // Announce a contribution from the same state, under
                        // a hash that no bytes we will serve match.
                        round = round.max(r);
                        let hash = Hash::of(format!("forged {r}").as_bytes());
                        let c = Message::Contribution(Contribution { hash, samples: 100, base_state, raw: hash, residual: 0.0, chain: hash, payee: None, attest: None });
                        let bytes = Envelope::seal(&key, run, r, &c).unwrap();
                        let _ = gs.publish(topic.clone(), bytes);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Blobs(request_response::Event::Message {
                    peer, message: request_response::Message::Request { channel, .. }, ..
                })) => {
                    *lies.entry(peer).or_insert(0) += 1;
                    let _ = sw.behaviour_mut().blobs.send_response(channel, Some(bytes::Bytes::from(vec![7u8; 4096])));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(libp2p::kad::Event::RoutingUpdated { peer, .. }))
                    if !sw.is_connected(&peer) =>
                {
                    let _ = sw.dial(peer);
                }
                _ => {}
            },
        }
    }
}

#[test]
fn a_peer_serving_wrong_bytes_is_dropped_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::default();
    let boot = start_bootstrap(&mut procs, dir.path());
    let spec = spec();
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, spec.to_toml()).unwrap();
    let spec_arg = spec_path.to_str().unwrap().to_string();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let liar = rt.spawn(liar(boot.clone(), spec.clone(), stop_rx));

    let peers: Vec<Peer> = (0..2)
        .map(|i| start_peer(&mut procs, dir.path(), &format!("peer-{i}"), &["--spec", &spec_arg, "--bootstrap", &boot]))
        .collect();
    let outputs: Vec<Vec<String>> = peers.iter().map(|p| collect(p, Duration::from_secs(120))).collect();
    let _ = stop_tx.send(());
    let lies = rt.block_on(liar).unwrap();

    let reports: Vec<Vec<RoundReport>> = outputs
        .iter()
        .map(|o| o.iter().filter_map(|l| serde_json::from_str::<RoundReport>(l).ok()).collect())
        .collect();
    let logs: Vec<String> = peers.iter().map(|p| std::fs::read_to_string(&p.log).unwrap()).collect();
    // Each honest peer asks the liar once: after the first wrong bytes it
    // never asks it again (without the ban it is asked over a hundred
    // times in this run).
    let total: u64 = lies.values().sum();
    assert!(total >= 1, "the liar was asked at all");
    assert!(lies.values().all(|n| *n == 1), "asked once by each honest peer: {lies:?}");
    // And each one counted it: the bad providers in the peers' last reports
    // add up to the wrong answers given.
    let counted: u64 = reports.iter().map(|r| r.last().map_or(0, |x| x.bad_providers)).sum();
    assert_eq!(counted, total, "every wrong answer was counted");
    for (i, (r, log)) in reports.iter().zip(&logs).enumerate() {
        let rounds: Vec<u64> = r.iter().map(|x| x.round).collect();
        assert_eq!(rounds, (1..=ROUNDS).collect::<Vec<_>>(), "peer {i} applied every round:\n{log}");
        assert!(r.iter().all(|x| x.contributors == 2), "peer {i}: only the honest contributions: {r:?}");
    }
    // The peers that fetched from the liar said so; at least one did.
    let dropped = logs.iter().filter(|l| l.contains("served bytes that do not hash")).count();
    assert!(dropped >= 1, "a peer noticed the wrong bytes and dropped the liar:\n{logs:?}");
    for (a, b) in reports[0].iter().zip(&reports[1]) {
        assert_eq!(a.state_hash, b.state_hash, "round {}", a.round);
    }
}
