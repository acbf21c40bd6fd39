//! The data plane for big blobs (states, inner states, big pseudo-gradients):
//! iroh-blobs over iroh's QUIC, next to libp2p, which keeps the control
//! messages and the small blobs.
//!
//! A blob's address in the swarm is its BLAKE3 hash, which is also its iroh
//! hash, so a download is verified against the very hash that a signed
//! manifest names: every 16 KiB chunk group is checked as it arrives (BLAKE3
//! verified streaming), and a provider that sends one wrong byte is caught
//! within its first chunk group, not after the whole transfer. One blob is
//! fetched as [`PART`]-sized ranges from several providers at once; a
//! provider that fails (gone, silent for [`PROGRESS_TIMEOUT`], or lying)
//! gives its range back to the others, who fetch only what is still missing
//! of it (the verified prefix stays). The endpoint's key is the peer's
//! ed25519 key: the peer id is its iroh endpoint id, and a connection to a
//! peer authenticates that key.
//!
//! Offline settings: no relays, no address lookup services; the addresses
//! come from libp2p (identify tells a peer's iroh port). The crate calls
//! itself not production quality yet: everything of it the node uses is
//! behind this module.

use bytes::Bytes;
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey};
use iroh_blobs::api::Store;
use iroh_blobs::protocol::{ChunkRanges, GetRequest};
use iroh_blobs::store::mem::{MemStore, Options};
use iroh_blobs::{BlobsProtocol, Hash as IrohHash};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod fetch;
pub mod liar;
pub mod serve;

pub use fetch::{FetchError, Fetched};

/// Blobs of at least this many bytes go through the data plane (smaller
/// ones stay on libp2p's request-response, one round trip).
pub const DEFAULT_MIN_BYTES: usize = 1 << 20;
/// The range of a blob asked of one provider at a time.
pub const PART: u64 = 8 << 20;
/// A transfer that delivers nothing for this long is given up.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(20);
/// Connecting to a provider may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Providers asked for one blob, at most.
pub const MAX_PROVIDERS: usize = 8;
/// How often blobs nobody holds any more are dropped.
const GC_INTERVAL: Duration = Duration::from_secs(5);

/// Errors of the data plane's endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the data plane's endpoint on {addr}: {why}")]
    Bind { addr: SocketAddr, why: String },
}

/// The iroh endpoint, its blob store and what it serves.
#[derive(Clone, Debug)]
pub struct DataPlane {
    endpoint: Endpoint,
    store: Store,
    /// Kept alive: it accepts connections until dropped.
    _router: Arc<iroh::protocol::Router>,
    /// Hashes served: the store's GC keeps these only.
    live: Arc<Mutex<HashSet<IrohHash>>>,
}

impl DataPlane {
    /// Binds an endpoint with the peer's key on `ip` (any port), no relays.
    /// `lie` makes it serve corrupted bytes (the attack suite and the bench).
    pub async fn bind(secret: [u8; 32], ip: IpAddr, lie: bool) -> Result<DataPlane, Error> {
        let addr = SocketAddr::new(ip, 0);
        let bind_err = |why: String| Error::Bind { addr, why };
        // A killed provider's connection is noticed within seconds (its
        // range goes to the others), not after the default idle timeout.
        let idle = Duration::from_secs(5)
            .try_into()
            .map_err(|e: iroh::endpoint::VarIntBoundsExceeded| bind_err(e.to_string()))?;
        let transport = iroh::endpoint::QuicTransportConfig::builder()
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Duration::from_secs(1))
            .build();
        let endpoint = Endpoint::builder(iroh::endpoint::presets::Minimal)
            .secret_key(SecretKey::from_bytes(&secret))
            .relay_mode(iroh::RelayMode::Disabled)
            .transport_config(transport)
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|e| bind_err(e.to_string()))?
            .bind()
            .await
            .map_err(|e| bind_err(e.to_string()))?;
        let live: Arc<Mutex<HashSet<IrohHash>>> = Arc::default();
        let keep = live.clone();
        let gc = iroh_blobs::store::GcConfig {
            interval: GC_INTERVAL,
            add_protected: Some(Arc::new(move |set: &mut HashSet<IrohHash>| {
                set.extend(keep.lock().map(|l| l.clone()).unwrap_or_default());
                Box::pin(async { iroh_blobs::store::ProtectOutcome::Continue })
            })),
        };
        let mem = MemStore::new_with_opts(Options { gc_config: Some(gc) });
        let store: Store = mem.into();
        let router = if lie {
            iroh::protocol::Router::builder(endpoint.clone())
                .accept(iroh_blobs::ALPN, liar::Liar(store.clone()))
                .spawn()
        } else {
            iroh::protocol::Router::builder(endpoint.clone())
                .accept(iroh_blobs::ALPN, BlobsProtocol::new(&store, None))
                .spawn()
        };
        Ok(DataPlane { endpoint, store, _router: Arc::new(router), live })
    }

    /// The port others reach this endpoint on.
    pub fn port(&self) -> u16 {
        self.endpoint.bound_sockets().first().map_or(0, |s| s.port())
    }

    /// This endpoint's id (the peer's public key).
    pub fn id(&self) -> EndpointId {
        self.endpoint.id()
    }

    /// Serves `bytes` (shared, not copied) under their BLAKE3 hash `hash`
    /// (the caller's; a wrong one serves nothing, as the store files bytes
    /// under their own hash) until [`DataPlane::forget`]. Hashing them for
    /// verified streaming (the outboard) runs in the background.
    pub fn serve(&self, hash: Hash32, bytes: Arc<Vec<u8>>) {
        let h = IrohHash::from(hash);
        if !self.live.lock().map(|mut l| l.insert(h)).unwrap_or(false) {
            return;
        }
        let (store, live) = (self.store.clone(), self.live.clone());
        tokio::spawn(async move {
            if let Err(e) = add(&store, bytes).await {
                tracing::warn!("data plane: cannot add a blob: {e}");
                if let Ok(mut l) = live.lock() {
                    l.remove(&h);
                }
            }
        });
    }

    /// [`DataPlane::serve`], ready when this returns.
    pub async fn serve_now(&self, hash: Hash32, bytes: Arc<Vec<u8>>) -> Result<(), String> {
        if let Ok(mut l) = self.live.lock() {
            l.insert(IrohHash::from(hash));
        }
        add(&self.store, bytes).await
    }

    /// Whether the blob is served.
    pub fn holds(&self, hash: &Hash32) -> bool {
        self.live.lock().map(|l| l.contains(&IrohHash::from(*hash))).unwrap_or(false)
    }

    /// Stops serving the blob (the store drops it at its next GC).
    pub fn forget(&self, hash: &Hash32) {
        if let Ok(mut l) = self.live.lock() {
            l.remove(&IrohHash::from(*hash));
        }
    }

    /// Fetches a blob from `providers` (in order of preference), at most
    /// `max_size` bytes, ranges from several of them at once, straight into
    /// one buffer (not through the store: serve it with
    /// [`DataPlane::serve`], which shares that buffer).
    pub async fn fetch(
        &self,
        hash: Hash32,
        providers: Vec<EndpointAddr>,
        max_size: u64,
    ) -> Result<Fetched, FetchError> {
        self.fetch_counted(hash, providers, max_size, Duration::ZERO, Arc::default()).await
    }

    /// [`DataPlane::fetch`], giving the first provider `first_wait` to hold
    /// the whole blob (one that has just made it may still be hashing it),
    /// and adding the verified bytes of each range to `delivered` as it
    /// completes (progress, for a bar or a bench).
    pub async fn fetch_counted(
        &self,
        hash: Hash32,
        providers: Vec<EndpointAddr>,
        max_size: u64,
        first_wait: Duration,
        delivered: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Fetched, FetchError> {
        let h = IrohHash::from(hash);
        fetch::fetch(&self.endpoint, &self.store, h, providers, max_size, first_wait, &delivered).await
    }

    /// Closes the endpoint.
    pub async fn close(&self) {
        self.endpoint.close().await;
    }
}

/// Adds shared bytes to the store (hashing them for verified streaming).
async fn add(store: &Store, bytes: Arc<Vec<u8>>) -> Result<(), String> {
    let data = Bytes::from_owner(crate::blobs::Shared(bytes));
    store.add_bytes(data).temp_tag().await.map(drop).map_err(|e| e.to_string())
}

/// A blob's 32-byte BLAKE3 hash.
pub type Hash32 = [u8; 32];

/// The endpoint address of a peer (its key) at `ip:port`.
pub fn addr_of(peer: &protocol::PeerId, ip: IpAddr, port: u16) -> Option<EndpointAddr> {
    let id = EndpointId::from_bytes(&peer.0).ok()?;
    Some(EndpointAddr::new(id).with_ip_addr(SocketAddr::new(ip, port)))
}

/// The protocol peer id of an endpoint id.
pub fn peer_of(id: &EndpointId) -> protocol::PeerId {
    protocol::PeerId(*id.as_bytes())
}

/// What a provider did in one fetch, for the caller's books.
#[derive(Debug, Default, Clone)]
pub struct ProviderBook {
    /// Payload bytes each provider delivered (verified).
    pub served: HashMap<EndpointId, u64>,
    /// Providers caught sending bytes that do not verify.
    pub liars: Vec<EndpointId>,
    /// Providers that said they do not hold the whole blob.
    pub missing: Vec<EndpointId>,
    /// Providers that failed otherwise (unreachable, gone, silent).
    pub failed: Vec<EndpointId>,
}

/// The byte ranges of a blob of `size` bytes, [`PART`] bytes each.
fn parts(size: u64) -> VecDeque<std::ops::Range<u64>> {
    (0..size.max(1)).step_by(PART as usize).map(|s| s..(s + PART).min(size)).collect()
}

/// A request for `ranges` of `hash`.
fn range_request(hash: IrohHash, ranges: ChunkRanges) -> GetRequest {
    GetRequest::blob_ranges(hash, ranges)
}

/// Connects to a provider for blobs.
async fn connect(endpoint: &Endpoint, addr: EndpointAddr) -> Option<Connection> {
    tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(addr, iroh_blobs::ALPN)).await.ok()?.ok()
}
