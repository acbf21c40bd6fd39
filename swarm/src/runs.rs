//! Runs in the DHT. A run's spec is a content-addressed blob: its bytes are
//! the canonical (bincode) encoding whose BLAKE3 hash is the run id. The
//! launcher and every node of the run serve it over the blob protocol and
//! announce themselves as its providers (a Kademlia provider record under
//! [`run_key`]); a joiner that knows only the id asks the DHT for providers,
//! fetches the bytes from any of them and checks the hash before it trusts
//! a single field. Bootstrap nodes remember the run keys they are given
//! provider records for, so `swarm runs` can list them.

use crate::error::Error;
use crate::net::{self, Behaviour, BehaviourEvent};
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Swarm, kad, request_response};
use protocol::{Hash, RunSpec};
use std::collections::BTreeSet;
use std::time::Duration;

/// A spec's encoding is far below this; anything larger is refused unread.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// Run keys a node keeps from other peers' provider records.
pub const MAX_RUN_KEYS: usize = 1024;
const KEY_PREFIX: &[u8] = b"swarm/run/";

/// The Kademlia key under which a run's providers are announced.
pub fn run_key(run: &Hash) -> kad::RecordKey {
    kad::RecordKey::new(&[KEY_PREFIX, &run.0].concat())
}

/// The run id of a Kademlia key, if it is a run key.
pub fn run_of_key(key: &kad::RecordKey) -> Option<Hash> {
    let rest = key.as_ref().strip_prefix(KEY_PREFIX)?;
    Some(Hash(rest.try_into().ok()?))
}

/// The blob request that asks a bootstrap node for the runs it knows.
pub fn list_request() -> [u8; 32] {
    *blake3::hash(b"swarm/list-runs/1").as_bytes()
}

/// The bytes a spec is served as (their hash is the run id).
pub fn spec_bytes(spec: &RunSpec) -> Vec<u8> {
    bincode::serde::encode_to_vec(spec, bincode::config::standard()).expect("a RunSpec always encodes")
}

/// Checks served bytes: size, hash, then content.
pub fn decode_spec(run: &Hash, bytes: &[u8]) -> Result<RunSpec, Error> {
    let bad = |why: String| Error::Net(format!("the spec served for run {}: {why}", run.short()));
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(bad(format!("{} bytes, more than {MAX_SPEC_BYTES}", bytes.len())));
    }
    if Hash::of(bytes) != *run {
        return Err(bad("its hash is not the run id".into()));
    }
    let cfg = bincode::config::standard().with_limit::<MAX_SPEC_BYTES>();
    let (spec, _): (RunSpec, usize) =
        bincode::serde::decode_from_slice(bytes, cfg).map_err(|e| bad(format!("not a run spec: {e}")))?;
    spec.validate().map_err(|e| bad(e.to_string()))?;
    Ok(spec)
}

/// The answer to [`list_request`]: run ids, 32 bytes each.
pub fn encode_list(runs: &BTreeSet<Hash>) -> Vec<u8> {
    runs.iter().flat_map(|h| h.0).collect()
}

fn decode_list(bytes: &[u8]) -> Vec<Hash> {
    bytes.chunks_exact(32).map(|c| Hash(c.try_into().expect("32 bytes"))).collect()
}

/// A short-lived client node: a fresh key, dialled into `bootstrap`.
async fn client(bootstrap: &str, timeout: Duration) -> Result<(Swarm<Behaviour>, libp2p::PeerId), Error> {
    let (addr, id) = net::split_p2p(bootstrap)?;
    let key = protocol::Keypair::from_secret(
        *blake3::hash(format!("client-{:?}-{}", std::time::SystemTime::now(), std::process::id()).as_bytes())
            .as_bytes(),
    );
    let mut sw = net::build(&key, MAX_SPEC_BYTES.max(MAX_RUN_KEYS * 32))?;
    sw.behaviour_mut().kad.add_address(&id, addr.clone());
    sw.dial(DialOpts::peer_id(id).addresses(vec![addr]).build()).map_err(|e| Error::Net(e.to_string()))?;
    let unreachable = |reason: String| Error::Unreachable { addr: bootstrap.to_string(), reason };
    let connected = async {
        loop {
            match sw.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == id => return Ok(()),
                SwarmEvent::OutgoingConnectionError { error, .. } => return Err(unreachable(error.to_string())),
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, connected).await.map_err(|_| unreachable("no answer".into()))??;
    Ok((sw, id))
}

/// The runs a bootstrap node knows (it was given provider records for).
pub async fn list(bootstrap: &str, timeout: Duration) -> Result<Vec<Hash>, Error> {
    let (mut sw, id) = client(bootstrap, timeout).await?;
    sw.behaviour_mut().blobs.send_request(&id, net::BlobRequest::new(list_request()));
    let wait = async {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Blobs(ev)) = sw.select_next_some().await {
                match ev {
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    } => return Ok(response.map(|b| decode_list(&b)).unwrap_or_default()),
                    request_response::Event::OutboundFailure { error, .. } => {
                        return Err(Error::Net(format!("{bootstrap} did not answer the list: {error}")));
                    }
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| Error::Net(format!("{bootstrap}: no list within {timeout:?}")))?
}

/// Finds providers of `run` through `bootstrap` and fetches its spec from
/// the first that serves bytes with the right hash.
pub async fn fetch_spec(bootstrap: &str, run: &Hash, timeout: Duration) -> Result<RunSpec, Error> {
    let (mut sw, _) = client(bootstrap, timeout).await?;
    sw.behaviour_mut().kad.get_providers(run_key(run));
    let mut asked: BTreeSet<libp2p::PeerId> = BTreeSet::new();
    let (mut pending, mut search_done, mut last_error) = (0usize, false, None);
    let wait = async {
        loop {
            match sw.select_next_some().await {
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                    result,
                    step,
                    ..
                })) => {
                    if let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                        providers, ..
                    })) = result
                    {
                        for p in providers {
                            if asked.insert(p) {
                                sw.behaviour_mut().blobs.send_request(&p, net::BlobRequest::new(run.0));
                                pending += 1;
                            }
                        }
                    }
                    search_done |= step.last;
                }
                SwarmEvent::Behaviour(BehaviourEvent::Blobs(ev)) => match ev {
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    } => {
                        pending = pending.saturating_sub(1);
                        match response.map(|b| decode_spec(run, &b)) {
                            Some(Ok(spec)) => return Ok(spec),
                            Some(Err(e)) => last_error = Some(e),
                            None => {}
                        }
                    }
                    request_response::Event::OutboundFailure { .. } => pending = pending.saturating_sub(1),
                    _ => {}
                },
                _ => {}
            }
            if search_done && pending == 0 {
                return Err(last_error.take().unwrap_or_else(|| {
                    Error::Net(format!(
                        "no provider of run {} answered ({} found through {bootstrap}); is its launcher or any of its peers up?",
                        run.short(),
                        asked.len()
                    ))
                }));
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| Error::Net(format!("run {}: no spec within {timeout:?}", run.short())))?
}

/// Stores a provider record someone sent us if it is for a run (records
/// are filtered: swarm uses no value records and no other keys); returns
/// the run.
pub fn take_provider(kad: &mut kad::Behaviour<kad::store::MemoryStore>, record: kad::ProviderRecord) -> Option<Hash> {
    use kad::store::RecordStore;
    let run = run_of_key(&record.key)?;
    kad.store_mut().add_provider(record).ok()?;
    Some(run)
}

/// Serves a run's spec and announces it until `stop` resolves (what
/// `swarm launch --bootstrap` runs; the launcher does not train).
pub async fn publish(
    spec: &RunSpec,
    bootstrap: &[String],
    listen: &str,
    key: &protocol::Keypair,
    mut report: impl FnMut(String),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let run = spec.run_id();
    let bytes = bytes::Bytes::from(spec_bytes(spec));
    let mut sw = net::build(key, 1024)?;
    sw.listen_on(net::parse_addr(listen)?).map_err(|e| Error::Net(e.to_string()))?;
    for b in bootstrap {
        let (addr, id) = net::split_p2p(b)?;
        sw.behaviour_mut().kad.add_address(&id, addr.clone());
        sw.dial(DialOpts::peer_id(id).addresses(vec![addr]).build()).map_err(|e| Error::Net(e.to_string()))?;
    }
    let mut announce = tokio::time::interval(Duration::from_secs(30));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = announce.tick() => {
                if sw.connected_peers().next().is_some() {
                    let _ = sw.behaviour_mut().kad.start_providing(run_key(&run));
                }
            }
            ev = sw.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if bootstrap.iter().any(|b| b.ends_with(&peer_id.to_string())) => {
                    let _ = sw.behaviour_mut().kad.start_providing(run_key(&run));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::StartProviding(r), ..
                })) => match r {
                    Ok(_) => report(format!("run {} announced", run.short())),
                    Err(e) => report(format!("announcing run {} failed: {e:?}; retrying", run.short())),
                },
                SwarmEvent::Behaviour(BehaviourEvent::Blobs(request_response::Event::Message {
                    peer, message: request_response::Message::Request { request, channel, .. }, ..
                })) => {
                    let answer = (request.hash == run.0).then(|| bytes.clone());
                    if answer.is_some() {
                        report(format!("served the spec to {peer}"));
                    }
                    let _ = sw.behaviour_mut().blobs.send_response(channel, answer);
                }
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_spec_bytes_are_checked_by_size_hash_and_content() {
        let spec = RunSpec::new(
            "digits-mlp",
            protocol::spec::TrainSpec { inner_steps: 5, inner_lr: 0.01, batch_size: 8, weight_decay: 0.0 },
        );
        let run = spec.run_id();
        let bytes = spec_bytes(&spec);
        assert_eq!(Hash::of(&bytes), run, "the served bytes hash to the run id");
        assert_eq!(decode_spec(&run, &bytes).unwrap(), spec);
        let mut wrong = bytes.clone();
        wrong[3] ^= 1;
        assert!(decode_spec(&run, &wrong).unwrap_err().to_string().contains("hash"));
        let junk = vec![0xff; 100];
        assert!(decode_spec(&Hash::of(&junk), &junk).unwrap_err().to_string().contains("not a run spec"));
        let big = vec![0; MAX_SPEC_BYTES + 1];
        assert!(decode_spec(&Hash::of(&big), &big).unwrap_err().to_string().contains("more than"));
        assert_eq!(run_of_key(&run_key(&run)), Some(run));
        assert_eq!(run_of_key(&kad::RecordKey::new(b"other")), None);
    }
}
