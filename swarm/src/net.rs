//! libp2p plumbing: the behaviour (gossipsub, Kademlia, identify, ping and a
//! request-response protocol for blobs), its codec, and swarm construction.

use crate::error::Error;
use bytes::Bytes;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, gossipsub, identify, kad, ping, request_response,
};
use std::io;
use std::time::Duration;

/// Kademlia protocol name of swarm's DHT (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/swarm/kad/1.0.0");
/// Blob request-response protocol.
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/swarm/blob/1.0.0");
/// Identify's protocol version string.
pub const IDENTIFY_VERSION: &str = "/swarm/1.0.0";
/// Blob requests served (and made) at once on one connection.
pub const MAX_BLOB_STREAMS: usize = 16;
/// Gossipsub's limit on one message (our envelopes are bounded at 120 KiB).
pub const MAX_GOSSIP_BYTES: usize = 128 * 1024;

/// The node's libp2p behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Small signed control messages.
    pub gossipsub: gossipsub::Behaviour,
    /// Discovery.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Listen addresses and protocols of peers.
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// Blob transfer.
    pub blobs: request_response::Behaviour<BlobCodec>,
    /// Connections per peer and in all (issue 13 item 9).
    pub limits: connection_limits::Behaviour,
}

/// Connections one peer id may hold with a node: a restarted peer's new
/// connection beside its old one, and a simultaneous dial both ways.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Connections a node holds in all, and incoming ones being set up.
pub const MAX_CONNECTIONS: u32 = 512;
/// Incoming connections in their handshake at once.
pub const MAX_PENDING_INCOMING: u32 = 64;

/// The connection limits of every node.
pub fn limits() -> connection_limits::Behaviour {
    connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
            .with_max_established(Some(MAX_CONNECTIONS))
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
    )
}

/// A blob response that brings no byte for this long fails (issue 13 item
/// 9): a provider that stalls mid-transfer is failed over in seconds, not
/// after the whole transfer's time limit ([`blob_timeout`], which grows with
/// the largest blob and stays only as a bound on a provider that trickles).
pub const BLOB_PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames blob requests (a 32-byte hash) and responses (a status byte, then
/// the blob) on a stream that the handler closes after each message. Reads
/// are bounded: a response larger than `max_response` is an error, and so is
/// one that brings no byte for `progress`.
#[derive(Clone, Debug)]
pub struct BlobCodec {
    /// Largest response accepted, in bytes.
    pub max_response: usize,
    /// Longest wait for the next bytes of a response.
    pub progress: Duration,
    /// The bound of the request this codec (cloned per stream) last wrote:
    /// its response is read against it.
    expect: usize,
}

impl BlobCodec {
    /// A codec reading responses of at most `max_response` bytes, failing
    /// one that brings no byte for `progress`.
    pub fn new(max_response: usize, progress: Duration) -> BlobCodec {
        BlobCodec { max_response, progress, expect: usize::MAX }
    }
}

/// A blob request. Only the hash goes on the wire; `max` bounds the answer
/// on the asking side before it is read (issue 13 item 3: a manifest asked
/// for may not be answered with hundreds of megabytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRequest {
    /// The blob's hash (or a run id, or the list request).
    pub hash: [u8; 32],
    /// The most bytes the answer may have (within the codec's bound).
    pub max: usize,
}

impl BlobRequest {
    /// A request bounded by the codec's limit alone.
    pub fn new(hash: [u8; 32]) -> BlobRequest {
        BlobRequest { hash, max: usize::MAX }
    }

    /// A request whose answer may have at most `max` bytes.
    pub fn bounded(hash: [u8; 32], max: usize) -> BlobRequest {
        BlobRequest { hash, max }
    }
}

/// Reads to the end of the stream, at most `max` bytes, failing when no byte
/// comes for `progress`.
async fn read_progressing<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    progress: Duration,
) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(progress, io.read(&mut buf)).await.map_err(|_| stalled(progress, v.len()))??;
        if n == 0 {
            return Ok(v);
        }
        if v.len() + n > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("message over {max} bytes")));
        }
        v.extend_from_slice(&buf[..n]);
    }
}

fn stalled(progress: Duration, got: usize) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("no bytes for {progress:?} (after {got} bytes)"))
}

async fn read_bounded<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut v).await?;
    if v.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("message over {max} bytes")));
    }
    Ok(v)
}

impl request_response::Codec for BlobCodec {
    type Protocol = StreamProtocol;
    type Request = BlobRequest;
    /// The blob, shared with the store (answering does not copy it).
    type Response = Option<Bytes>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let v = read_bounded(io, 32).await?;
        let hash =
            v.try_into().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request is not a 32-byte hash"))?;
        Ok(BlobRequest::new(hash))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Option<Bytes>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut status = [0u8; 1];
        tokio::time::timeout(self.progress, io.read_exact(&mut status))
            .await
            .map_err(|_| stalled(self.progress, 0))??;
        let body = read_progressing(io, self.max_response.min(self.expect), self.progress).await?;
        match status[0] {
            1 => Ok(Some(Bytes::from(body))),
            0 if body.is_empty() => Ok(None),
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "bad blob response")),
        }
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: BlobRequest) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        // The same codec clone reads this request's response next.
        self.expect = req.max;
        io.write_all(&req.hash).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Option<Bytes>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match res {
            Some(b) => {
                io.write_all(&[1]).await?;
                io.write_all(&b).await
            }
            None => io.write_all(&[0]).await,
        }
    }
}

/// How long a provider may take to deliver the largest blob: 10 s, plus one
/// second per MB (a provider slower than 1 MB/s is failed over). A provider
/// that stops sending fails sooner, after [`BLOB_PROGRESS_TIMEOUT`].
pub fn blob_timeout(max_blob: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_micros(max_blob as u64)
}

/// A gossip message's id: BLAKE3 of its author (the signed `source`, if
/// any) and its data. With signed gossip and the data alone, a peer that
/// republished X's envelope as its own got its copy rejected (signer is not
/// author) and the id cached, so X's real copy was then dropped as a
/// duplicate: X silenced (issue 13 item 7). Gossip is now anonymous (no
/// author: any copy of X's envelope is X's message, and valid), and the
/// author stays in the id should that change. Relays keep the author, so
/// duplicates are still recognised.
pub fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = blake3::Hasher::new();
    match &m.source {
        Some(p) => {
            h.update(&[1]);
            h.update(&p.to_bytes());
        }
        None => {
            h.update(&[0]);
        }
    }
    h.update(&m.data);
    gossipsub::MessageId::from(h.finalize().as_bytes().to_vec())
}

/// Builds the swarm. `max_blob` bounds a blob response.
pub fn build(key: &protocol::Keypair, max_blob: usize) -> Result<Swarm<Behaviour>, Error> {
    build_with(key, max_blob, None)
}

/// The identify agent version of a node whose data plane listens on `port`.
pub fn agent_version(plane_port: Option<u16>) -> String {
    let base = format!("swarm/{}", env!("CARGO_PKG_VERSION"));
    match plane_port {
        Some(p) => format!("{base} {PLANE_TAG}{p}"),
        None => base,
    }
}

const PLANE_TAG: &str = "iroh-blobs/";

/// The data-plane port a peer's agent version announces.
pub fn plane_port(agent: &str) -> Option<u16> {
    agent.split(' ').find_map(|w| w.strip_prefix(PLANE_TAG)).and_then(|p| p.parse().ok()).filter(|p| *p != 0)
}

/// The IP address of a multiaddr (`/ip4/..` or `/ip6/..`).
pub fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(a.into()),
        Protocol::Ip6(a) => Some(a.into()),
        _ => None,
    })
}

/// The IP address of a listen address (the data plane binds there too).
pub fn listen_ip(listen: &str) -> Result<std::net::IpAddr, Error> {
    ip_of(&parse_addr(listen)?)
        .ok_or_else(|| Error::BadAddr { addr: listen.to_string(), reason: "has no /ip4/ or /ip6/ part".to_string() })
}

/// Builds the swarm; identify announces the data plane's port, if any.
pub fn build_with(
    key: &protocol::Keypair,
    max_blob: usize,
    plane_port: Option<u16>,
) -> Result<Swarm<Behaviour>, Error> {
    build_inner(key, max_blob, plane_port, GOSSIP_HISTORY)
}

/// Gossipsub's heartbeat.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Heartbeats a message stays in gossipsub's cache (its default): the
/// cache also holds a message whose verdict is pending, and a verdict
/// given after it left is not relayed.
const GOSSIP_HISTORY: usize = 5;

/// Builds an RL node's swarm. Its rollout announcements wait for their
/// payload before gossip hears a verdict (up to one blob timeout for each
/// of two providers, after the author's previous fetch for a queued one),
/// so gossipsub keeps messages that long.
pub fn build_rl(key: &protocol::Keypair, max_blob: usize) -> Result<Swarm<Behaviour>, Error> {
    let held = 4 * blob_timeout(max_blob).as_millis() / HEARTBEAT.as_millis() + 2;
    build_inner(key, max_blob, None, GOSSIP_HISTORY.max(held as usize))
}

fn build_inner(
    key: &protocol::Keypair,
    max_blob: usize,
    plane_port: Option<u16>,
    history: usize,
) -> Result<Swarm<Behaviour>, Error> {
    let keypair = crate::identity::to_libp2p(key);
    let peer_id = keypair.public().to_peer_id();
    // Anonymous gossip (issue 13 item 4): every message is a signed
    // envelope that the protocol verifies; gossipsub's own signature over
    // it (with the same key) was a second ed25519 verification per message
    // and a second signature per publish, and its author field proved
    // nothing more (a connection can relay envelopes of any key). So
    // messages carry no author, sequence number or signature, and one that
    // does is invalid.
    let gs_cfg = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .message_id_fn(message_id)
        .heartbeat_interval(HEARTBEAT)
        .history_length(history)
        .flood_publish(true)
        .build()
        .map_err(|e| Error::Net(e.to_string()))?;
    let gossipsub = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gs_cfg)
        .map_err(|e| Error::Net(e.to_string()))?;
    let mut kcfg = kad::Config::new(KAD_PROTOCOL);
    kcfg.set_query_timeout(Duration::from_secs(10));
    // Inbound records reach the application, which keeps only provider
    // records of runs (`runs::take_provider`) and no value records.
    kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
    let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kcfg);
    kad.set_mode(Some(kad::Mode::Server));
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_VERSION.to_string(), keypair.public())
            .with_agent_version(agent_version(plane_port)),
    );
    let blobs = request_response::Behaviour::with_codec(
        BlobCodec::new(max_blob, BLOB_PROGRESS_TIMEOUT),
        [(BLOB_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(blob_timeout(max_blob))
            .with_max_concurrent_streams(MAX_BLOB_STREAMS),
    );
    let behaviour = Behaviour { gossipsub, kad, identify, ping: ping::Behaviour::default(), blobs, limits: limits() };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic_config(|mut c| {
            c.handshake_timeout = Duration::from_secs(3);
            // A killed peer's connection is noticed within seconds, not tens.
            c.max_idle_timeout = 4_000;
            c.keep_alive_interval = Duration::from_secs(1);
            c
        })
        .with_behaviour(move |_| behaviour)
        .map_err(|e| Error::Net(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// Splits `/ip4/.../udp/N/quic-v1/p2p/ID` into the transport address and the
/// peer id.
pub fn split_p2p(addr: &str) -> Result<(Multiaddr, PeerId), Error> {
    let bad = |reason: &str| Error::BadAddr { addr: addr.to_string(), reason: reason.to_string() };
    let mut ma: Multiaddr = addr.parse().map_err(|e: libp2p::multiaddr::Error| bad(&e.to_string()))?;
    match ma.pop() {
        Some(Protocol::P2p(id)) => Ok((ma, id)),
        _ => Err(bad("must end with /p2p/<peer id>, as printed by `swarm bootstrap`")),
    }
}

/// Dials a node and waits for a ping answer; returns the round-trip time.
pub async fn ping(addr: &str, timeout: Duration) -> Result<Duration, Error> {
    use libp2p::futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let (ma, id) = split_p2p(addr)?;
    let key = protocol::Keypair::from_secret(
        *blake3::hash(format!("ping-{:?}", std::time::SystemTime::now()).as_bytes()).as_bytes(),
    );
    let mut swarm = build(&key, 1024)?;
    swarm
        .dial(libp2p::swarm::dial_opts::DialOpts::peer_id(id).addresses(vec![ma]).build())
        .map_err(|e| Error::Net(e.to_string()))?;
    let unreachable = |reason: String| Error::Unreachable { addr: addr.to_string(), reason };
    let wait = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. }))
                    if peer == id =>
                {
                    return Ok(rtt);
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Err(unreachable(format!("not reachable: {error}")));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs())))?
}

/// Parses a listen address.
pub fn parse_addr(addr: &str) -> Result<Multiaddr, Error> {
    addr.parse().map_err(|e: libp2p::multiaddr::Error| Error::BadAddr { addr: addr.to_string(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_id_gets_at_most_four_connections() {
        use libp2p::futures::StreamExt;
        use libp2p::swarm::SwarmEvent;
        use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
        let node_key = protocol::Keypair::from_secret([1; 32]);
        let mut node = build(&node_key, 1024).unwrap();
        node.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = node.select_next_some().await {
                break address;
            }
        };
        let node_id = *node.local_peer_id();
        // A hostile client connects ten times under one peer id (ten
        // processes with one key: each dials once).
        let mut clients = Vec::new();
        for _ in 0..10 {
            let mut c = build(&protocol::Keypair::from_secret([2; 32]), 1024).unwrap();
            c.dial(DialOpts::peer_id(node_id).addresses(vec![addr.clone()]).condition(PeerCondition::Always).build())
                .unwrap();
            clients.push(tokio::spawn(async move {
                loop {
                    c.select_next_some().await;
                }
            }));
        }
        let (mut up, mut refused) = (0u32, 0u32);
        let count = async {
            while up + refused < 10 {
                match node.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => up += 1,
                    SwarmEvent::IncomingConnectionError { .. } => refused += 1,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), count).await.expect("every connection settled");
        for c in clients {
            c.abort();
        }
        assert!(up <= MAX_CONNECTIONS_PER_PEER, "{up} connections established from one peer id");
        assert!(refused >= 10 - MAX_CONNECTIONS_PER_PEER, "{refused} refused");
    }

    #[tokio::test]
    async fn gossip_carries_no_author_or_signature_of_its_own() {
        // Issue 13 item 4: the envelope's signature is verified once, by the
        // protocol; gossipsub's own signature was a second verification.
        use libp2p::futures::StreamExt;
        use libp2p::swarm::SwarmEvent;
        let topic = gossipsub::IdentTopic::new("swarm/test");
        let mut a = build(&protocol::Keypair::from_secret([3; 32]), 1024).unwrap();
        let mut b = build(&protocol::Keypair::from_secret([4; 32]), 1024).unwrap();
        a.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        b.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                break address;
            }
        };
        a.dial(addr).unwrap();
        let got = async {
            let mut sent = false;
            loop {
                tokio::select! {
                    ev = a.select_next_some() => {
                        if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { .. })) = ev
                            && !sent
                        {
                            a.behaviour_mut().gossipsub.publish(topic.clone(), b"an envelope".to_vec()).unwrap();
                            sent = true;
                        }
                    }
                    ev = b.select_next_some() => {
                        if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) = ev {
                            return message;
                        }
                    }
                }
            }
        };
        let m = tokio::time::timeout(Duration::from_secs(20), got).await.expect("the message arrived");
        assert_eq!(m.data, b"an envelope");
        assert_eq!((m.source, m.sequence_number), (None, None), "no author, no sequence number");
    }

    #[test]
    fn the_same_envelope_from_another_author_has_another_message_id() {
        let msg = |source: Option<PeerId>| gossipsub::Message {
            source,
            data: b"an envelope".to_vec(),
            sequence_number: Some(1),
            topic: gossipsub::TopicHash::from_raw("t"),
        };
        let (x, attacker) = (PeerId::random(), PeerId::random());
        assert_ne!(message_id(&msg(Some(x))), message_id(&msg(Some(attacker))));
        assert_ne!(message_id(&msg(Some(x))), message_id(&msg(None)));
        // A relayed copy keeps its author: still a duplicate.
        assert_eq!(message_id(&msg(Some(x))), message_id(&msg(Some(x))));
    }
    /// A provider's response as a stream that brings `chunks` chunks (the
    /// status byte first), one every `every`, then ends or stalls.
    fn dripping(chunks: usize, every: Duration, stall: bool) -> impl AsyncRead + Unpin + Send {
        use libp2p::futures::{StreamExt, TryStreamExt, stream};
        let body = stream::iter(0..chunks).then(move |i| async move {
            tokio::time::sleep(every).await;
            let mut chunk = vec![7u8; 1024];
            if i == 0 {
                chunk.insert(0, 1);
            }
            Ok::<_, io::Error>(chunk)
        });
        let end = if stall { stream::pending().boxed() } else { stream::empty().boxed() };
        body.chain(end).boxed().into_async_read()
    }

    #[tokio::test]
    async fn a_provider_that_stops_sending_fails_after_the_progress_timeout_and_a_slow_steady_one_does_not() {
        use request_response::Codec;
        let progress = Duration::from_millis(200);
        let mut codec = BlobCodec::new(1 << 20, progress);
        let proto = BLOB_PROTOCOL;
        // Steady: 20 chunks 50 ms apart, a second in all (5 progress timeouts).
        let mut steady = dripping(20, Duration::from_millis(50), false);
        let body = codec.read_response(&BLOB_PROTOCOL, &mut steady).await.unwrap().unwrap();
        assert_eq!(body.len(), 20 * 1024);
        // Stalls after 3 chunks: fails (without a progress timeout this read
        // waits for ever; the outer limit makes that a failure, not a hang).
        let mut stalling = dripping(3, Duration::from_millis(50), true);
        let read = codec.read_response(&proto, &mut stalling);
        let err = tokio::time::timeout(Duration::from_secs(10), read).await.expect("no progress timeout").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        // A provider that never sends even the status byte fails too.
        let mut silent = dripping(0, Duration::ZERO, true);
        let read = codec.read_response(&proto, &mut silent);
        let err = tokio::time::timeout(Duration::from_secs(10), read).await.expect("no progress timeout").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        // And the size bound still holds.
        let mut big = dripping(20, Duration::ZERO, false);
        let mut small = BlobCodec::new(4096, progress);
        let err = small.read_response(&BLOB_PROTOCOL, &mut big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // As does a request's own bound, below the codec's (a manifest asked
        // for is read up to an envelope's size, not the largest state's).
        let mut big = dripping(20, Duration::ZERO, false);
        let mut out = libp2p::futures::io::Cursor::new(Vec::new());
        codec.write_request(&BLOB_PROTOCOL, &mut out, BlobRequest::bounded([9; 32], 4096)).await.unwrap();
        assert_eq!(out.into_inner(), vec![9; 32], "only the hash goes on the wire");
        let err = codec.read_response(&BLOB_PROTOCOL, &mut big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
