//! The settlement contract against a real anvil: what it pays, and every
//! bad input it refuses (forged root signatures, a root without quorum or
//! continuity, someone else's proof, a replayed claim, an unknown run or
//! epoch, a payout beyond the escrow), plus RPC endpoints that time out or
//! answer garbage. Gas figures are printed (`-- --nocapture`).

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use protocol::ledger::{Credit, Epoch, leaf, merkle_root};
use protocol::{Hash, PeerId};
use settlement::anvil::{Anvil, DEV_KEYS};
use settlement::{Chain, Error, Outcome};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn key(i: usize) -> PrivateKeySigner {
    DEV_KEYS[i].parse().unwrap()
}

/// An epoch whose peer `i` (id [i; 32]) is paid to anvil account `i`.
fn epoch(n: u64, lines: &[(usize, u64)], total: Option<u64>) -> Epoch {
    let credits: Vec<Credit> = lines
        .iter()
        .map(|&(i, c)| Credit {
            peer: PeerId([i as u8; 32]),
            payee: Some(key(i).address().0.0),
            samples: c,
            checks: 0,
            credits: c,
            penalty: 0,
        })
        .collect();
    let leaves: Vec<[u8; 32]> = credits.iter().map(|c| leaf(&c.peer, &c.payee.unwrap(), c.credits)).collect();
    let mut committee: Vec<[u8; 20]> = credits.iter().map(|c| c.payee.unwrap()).collect();
    committee.sort();
    Epoch {
        epoch: n,
        first_round: 1,
        last_round: 1,
        receipts: vec![],
        work: vec![],
        total: total.unwrap_or(credits.iter().map(|c| c.credits).sum()),
        root: merkle_root(&leaves),
        credits,
        committee,
        attestations: Vec::new(),
    }
}

/// Signatures of `e`'s digest by anvil accounts `who`, by ascending signer.
fn sign(run: &Hash, e: &Epoch, who: &[usize]) -> Vec<Bytes> {
    let digest = B256::from(e.digest(run));
    let mut s: Vec<(Address, Bytes)> = who
        .iter()
        .map(|&i| (key(i).address(), Bytes::from(key(i).sign_hash_sync(&digest).unwrap().as_bytes().to_vec())))
        .collect();
    s.sort_by_key(|(a, _)| *a);
    s.into_iter().map(|(_, b)| b).collect()
}

fn refused(r: Result<Outcome, Error>, what: &str) {
    match r {
        Err(Error::Refused(why)) => assert!(why.starts_with(what), "expected {what}, got {why}"),
        other => panic!("expected the contract to refuse with {what}, got {other:?}"),
    }
}

fn gas(o: Outcome) -> u64 {
    match o {
        Outcome::Done { gas, .. } => gas,
        Outcome::AlreadyDone => panic!("expected a transaction"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_pays_by_the_ledger_and_refuses_bad_input() {
    let anvil = Anvil::start().expect("anvil (run scripts/setup.sh)");
    let address = settlement::deploy(&anvil.url, DEV_KEYS[0], T).await.unwrap();
    let submitter = Chain::connect(&anvil.url, address, DEV_KEYS[0], T).unwrap();
    let run = Hash::of(b"a run");
    let e0 = epoch(0, &[(1, 100), (2, 200), (3, 300)], None);

    // Our digest is the contract's.
    assert_eq!(submitter.digest(&run, &e0).await.unwrap(), B256::from(e0.digest(&run)));

    // A root for a run nobody registered.
    refused(submitter.post_raw(&run, &e0, committee(&e0), sign(&run, &e0, &[1, 2, 3])).await, "UnknownTask");

    let per_epoch = U256::from(6_000_000_000_000_000_000u128); // 6 ETH
    let g = gas(submitter.register(&run, per_epoch, 2).await.unwrap());
    eprintln!("gas: register a task {g}");
    assert_eq!(submitter.register(&run, per_epoch, 2).await.unwrap(), Outcome::AlreadyDone);
    // Someone else's task for the run (run ids are public) is not "done" for us.
    let other = Chain::connect(&anvil.url, address, DEV_KEYS[8], T).unwrap();
    refused(other.register(&run, per_epoch, 2).await, "TaskExists");

    // Forged signatures: a key outside the committee, and a signature of another root.
    refused(submitter.post_raw(&run, &e0, committee(&e0), sign(&run, &e0, &[1, 2, 4])).await, "NotInCommittee");
    let other = epoch(0, &[(1, 100), (2, 200), (3, 301)], None);
    let mut forged = sign(&run, &e0, &[1, 2]);
    forged.extend(sign(&run, &other, &[3]));
    refused(submitter.post_raw(&run, &e0, committee(&e0), forged).await, "NotInCommittee");
    // Two of three is not more than two thirds.
    refused(submitter.post_raw(&run, &e0, committee(&e0), sign(&run, &e0, &[1, 2])).await, "NoQuorum");

    // Epoch 0's root comes from the submitter alone (anyone else could
    // front-run it with a committee of its own keys).
    let stranger = Chain::connect(&anvil.url, address, DEV_KEYS[7], T).unwrap();
    refused(stranger.post_raw(&run, &e0, committee(&e0), sign(&run, &e0, &[1, 2, 3])).await, "NotSubmitter");
    let g = gas(submitter.post_raw(&run, &e0, committee(&e0), sign(&run, &e0, &[1, 2, 3])).await.unwrap());
    eprintln!("gas: post a root (3 signatures, committee of 3) {g}");
    assert_eq!(submitter.post_root(&run, &e0, vec![]).await.unwrap(), Outcome::AlreadyDone);
    refused(submitter.post_raw(&run, &e0, committee(&e0), sign(&run, &e0, &[1, 2, 3])).await, "WrongEpoch");

    // Claims. Peer 1 with peer 2's proof, inflated credits, an unknown epoch.
    let p1 = PeerId([1; 32]);
    let b1 = submitter.balance(key(1).address()).await.unwrap();
    let proof2 = e0.proof(&PeerId([2; 32])).unwrap();
    refused(submitter.claim_raw(&run, 0, &p1, key(1).address(), 100, proof2).await, "BadProof");
    refused(submitter.claim_raw(&run, 0, &p1, key(1).address(), 101, e0.proof(&p1).unwrap()).await, "BadProof");
    refused(submitter.claim_raw(&run, 1, &p1, key(1).address(), 100, e0.proof(&p1).unwrap()).await, "UnknownEpoch");
    refused(submitter.claim_raw(&Hash::of(b"x"), 0, &p1, key(1).address(), 100, vec![]).await, "UnknownTask");
    refused(submitter.claim_raw(&run, 0, &p1, Address::ZERO, 100, e0.proof(&p1).unwrap()).await, "NoPayee");
    // Someone else may send the claim: the money goes to the leaf's payee.
    let g = gas(submitter.claim(&run, &e0, &p1).await.unwrap());
    eprintln!("gas: claim (proof of 2 hashes) {g}");
    let paid = submitter.balance(key(1).address()).await.unwrap() - b1;
    assert_eq!(paid, per_epoch * U256::from(100) / U256::from(600));
    // Replayed: refused by the contract, and a no-op for our idempotent path.
    assert_eq!(submitter.claim(&run, &e0, &p1).await.unwrap(), Outcome::AlreadyDone);
    refused(submitter.claim_raw(&run, 0, &p1, key(1).address(), 100, e0.proof(&p1).unwrap()).await, "AlreadyClaimed");
    assert_eq!(submitter.balance(key(1).address()).await.unwrap() - b1, paid, "paid once");

    // Epoch 1: a committee of fresh keys that signs only for itself lacks
    // continuity with epoch 0's committee.
    let sybil = epoch(1, &[(4, 500), (5, 500), (6, 500)], None);
    refused(submitter.post_raw(&run, &sybil, committee(&sybil), sign(&run, &sybil, &[4, 5, 6])).await, "NoContinuity");
    // A root whose leaves add up to more than its total would pay beyond the
    // epoch's payout: the claim that crosses it is refused.
    let greedy = epoch(1, &[(1, 500), (2, 500), (3, 500)], Some(500));
    gas(submitter.post_raw(&run, &greedy, committee(&greedy), sign(&run, &greedy, &[1, 2, 3])).await.unwrap());
    gas(submitter.claim(&run, &greedy, &p1).await.unwrap());
    refused(submitter.claim(&run, &greedy, &PeerId([2; 32])).await, "BeyondEscrow");
    let task = submitter.task(&run).await.unwrap().unwrap();
    assert_eq!(task.next_epoch, 2);
    assert!(task.paid <= task.escrow);
    // Beyond the epochs paid for.
    let e2 = epoch(2, &[(1, 1), (2, 1), (3, 1)], None);
    refused(submitter.post_raw(&run, &e2, committee(&e2), sign(&run, &e2, &[1, 2, 3])).await, "WrongEpoch");
}

fn committee(e: &Epoch) -> Vec<Address> {
    e.committee.iter().map(|a| Address::from(*a)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_endpoint_that_hangs_or_answers_garbage_is_a_clear_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // One that accepts and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}", hang.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..8 {
            if let Ok((s, _)) = hang.accept().await {
                held.push(s);
            }
        }
    });
    // One that answers every request with something that is not JSON-RPC.
    let junk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let junk_url = format!("http://{}", junk.local_addr().unwrap());
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((mut s, _)) = junk.accept().await else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\ncontent-type: application/json\r\n\r\n{garbage}")
                .await;
        }
    });
    let run = Hash::of(b"r");
    let c = Chain::connect(&hang_url, Address::ZERO, DEV_KEYS[0], Duration::from_millis(500)).unwrap();
    assert!(matches!(c.task(&run).await, Err(Error::Timeout(_))));
    let c = Chain::connect(&junk_url, Address::ZERO, DEV_KEYS[0], T).unwrap();
    match c.task(&run).await {
        Err(Error::Rpc(why)) => eprintln!("garbage: {why}"),
        other => panic!("expected an RPC error, got {other:?}"),
    }
    assert!(matches!(settlement::deploy(&junk_url, DEV_KEYS[0], T).await, Err(Error::Rpc(_))));
    assert!(matches!(Chain::connect("not a url", Address::ZERO, DEV_KEYS[0], T), Err(Error::Bad { .. })));
    assert!(matches!(Chain::connect(&junk_url, Address::ZERO, "0x1234", T), Err(Error::BadKey(_))));
}

#[test]
fn the_checked_in_bytecode_is_what_solc_makes_of_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contract/build.sh");
    let status = std::process::Command::new("bash").arg(script).arg(dir.path()).status().expect("bash");
    assert!(status.success(), "contract/build.sh failed (run scripts/setup.sh)");
    let fresh = std::fs::read_to_string(dir.path().join("SwarmSettlement.bin")).unwrap();
    assert_eq!(
        fresh.trim(),
        settlement::BYTECODE_HEX.trim(),
        "run settlement/contract/build.sh and commit contract/out"
    );
    let abi = std::fs::read_to_string(dir.path().join("SwarmSettlement.abi.json")).unwrap();
    let kept = include_str!("../contract/out/SwarmSettlement.abi.json");
    assert_eq!(abi.trim(), kept.trim());
}
