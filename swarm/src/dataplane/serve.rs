//! One blob served by one process, on the data plane and on libp2p's blob
//! protocol: the provider side of the data-plane test and bench
//! (`swarm serve-blob`, a hidden command), and the libp2p fetch they
//! compare against.

use super::DataPlane;
use crate::error::Error;
use crate::net::{self, BehaviourEvent};
use libp2p::futures::StreamExt;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// `bytes` pseudo-random bytes from `seed` (BLAKE3's output stream): every
/// provider of a seed makes the same blob.
pub fn blob(bytes: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; bytes];
    let mut h = blake3::Hasher::new();
    h.update(b"swarm serve-blob");
    h.update(&seed.to_le_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// What a serving process prints (one JSON line on stdout) once it serves.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Serving {
    /// The blob's BLAKE3 hash, hex.
    pub hash: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The data plane's endpoint: the process's key (hex) and port.
    pub endpoint: String,
    pub port: u16,
    /// The libp2p address (`.../p2p/<id>`).
    pub libp2p: String,
}

impl Serving {
    /// The data-plane address of this provider.
    pub fn addr(&self, ip: IpAddr) -> Option<iroh::EndpointAddr> {
        let h = protocol::Hash::from_hex(&self.endpoint)?;
        super::addr_of(&protocol::PeerId(h.0), ip, self.port)
    }
}

/// Serves a generated blob until stopped (Ctrl+C, SIGTERM); `lie` serves
/// it corrupted (every chunk on the data plane, every byte on libp2p).
pub async fn serve(bytes: usize, seed: u64, ip: IpAddr, lie: bool) -> Result<(), Error> {
    let data = Arc::new(blob(bytes, seed));
    let hash = protocol::Hash::of(&data);
    let secret = *blake3::hash(
        format!("serve-blob {seed} {} {:?}", std::process::id(), std::time::SystemTime::now()).as_bytes(),
    )
    .as_bytes();
    let key = protocol::Keypair::from_secret(secret);
    let dp = DataPlane::bind(secret, ip, lie).await?;
    dp.serve_now(hash.0, data.clone()).await.map_err(Error::Net)?;
    let mut swarm = net::build(&key, bytes + (1 << 20))?;
    swarm
        .listen_on(net::parse_addr(&format!("/{}/{ip}/udp/0/quic-v1", if ip.is_ipv4() { "ip4" } else { "ip6" }))?)
        .map_err(|e| Error::Net(e.to_string()))?;
    let served = if lie {
        bytes::Bytes::from(data.iter().map(|b| !b).collect::<Vec<u8>>())
    } else {
        bytes::Bytes::from_owner(crate::blobs::Shared(data.clone()))
    };
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => {
                    let s = Serving {
                        hash: hash.to_hex(),
                        bytes: bytes as u64,
                        endpoint: hex::encode(dp.id().as_bytes()),
                        port: dp.port(),
                        libp2p: format!("{address}/p2p/{}", swarm.local_peer_id()),
                    };
                    let line = serde_json::to_string(&s).map_err(|e| Error::Net(e.to_string()))?;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                SwarmEvent::Behaviour(BehaviourEvent::Blobs(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                })) => {
                    let answer = (request.hash == hash.0).then(|| served.clone());
                    let _ = swarm.behaviour_mut().blobs.send_response(channel, answer);
                }
                _ => {}
            },
        }
    }
}

/// Fetches a blob from one provider over libp2p's blob protocol (the path
/// states took before the data plane): the bytes, checked against `hash`.
pub async fn fetch_libp2p(addr: &str, hash: protocol::Hash, max: usize, timeout: Duration) -> Result<Vec<u8>, Error> {
    let (ma, id) = net::split_p2p(addr)?;
    let key = protocol::Keypair::from_secret(
        *blake3::hash(format!("fetch {:?}", std::time::SystemTime::now()).as_bytes()).as_bytes(),
    );
    let mut swarm = net::build(&key, max)?;
    swarm
        .dial(libp2p::swarm::dial_opts::DialOpts::peer_id(id).addresses(vec![ma]).build())
        .map_err(|e| Error::Net(e.to_string()))?;
    let unreachable = |reason: String| Error::Unreachable { addr: addr.to_string(), reason };
    let wait = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == id => {
                    swarm.behaviour_mut().blobs.send_request(&id, net::BlobRequest::bounded(hash.0, max));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Blobs(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                })) => {
                    let bytes = response.ok_or_else(|| unreachable("does not hold the blob".into()))?;
                    if protocol::Hash::of(&bytes) != hash {
                        return Err(unreachable("served bytes that do not hash to the blob".into()));
                    }
                    return Ok(Vec::from(bytes));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Blobs(request_response::Event::OutboundFailure {
                    error,
                    ..
                })) => return Err(unreachable(error.to_string())),
                SwarmEvent::OutgoingConnectionError { error, .. } => return Err(unreachable(error.to_string())),
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.map_err(|_| unreachable(format!("no blob within {timeout:?}")))?
}
