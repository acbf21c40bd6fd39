//! One blob from several providers: its verified size from the first that
//! answers, then [`PART`](super::PART)-sized ranges handed out to whichever
//! provider is free; a failing provider's range goes back to the queue and
//! the next provider fetches only what is still missing of it.

use super::{CONNECT_TIMEOUT, MAX_PROVIDERS, PROGRESS_TIMEOUT, ProviderBook, connect, parts, range_request};
use bao_tree::io::BaoContentItem;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId};
use iroh_blobs::Hash as IrohHash;
use iroh_blobs::api::Store;
use iroh_blobs::api::remote::Remote;
use iroh_blobs::get::fsm::{self, BlobContentNext, ConnectedNext, DecodeError, EndBlobNext};
use iroh_blobs::protocol::{ChunkRanges, ChunkRangesExt, ObserveRequest};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fetched blob and who delivered it.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub book: ProviderBook,
}

/// Why a fetch failed (with what the providers did: liars are named).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "no provider delivered the blob ({} lied, {} did not hold it, {} failed)",
        .0.liars.len(),
        .0.missing.len(),
        .0.failed.len()
    )]
    NoProvider(Box<ProviderBook>),
    #[error("the blob has {size} bytes, more than the {max} it may have")]
    TooBig { size: u64, max: u64, book: Box<ProviderBook> },
}

impl FetchError {
    /// What the providers did.
    pub fn book(&self) -> &ProviderBook {
        match self {
            FetchError::NoProvider(b) | FetchError::TooBig { book: b, .. } => b.as_ref(),
        }
    }
}

/// How one request to one provider ended badly.
#[derive(Debug)]
enum Failure {
    /// Sent bytes that do not verify against the hash.
    Lied,
    /// Gone, silent, or without the blob.
    Failed,
}

pub(super) async fn fetch(
    endpoint: &Endpoint,
    store: &Store,
    hash: IrohHash,
    providers: Vec<EndpointAddr>,
    max_size: u64,
    first_wait: Duration,
    delivered: &AtomicU64,
) -> Result<super::Fetched, FetchError> {
    let remote = store.remote().clone();
    let mut book = ProviderBook::default();
    let first = providers.first().map(|a| a.id);
    let connected = connect_all(endpoint, providers, &mut book).await;
    // Only providers that hold the whole blob are asked for ranges: one
    // that is fetching it itself would answer with what it does not have
    // yet, which does not verify either, and would be taken for a liar.
    // The first may be given a moment (it may be hashing a blob it has just
    // made, for verified streaming: about 1 s per GB).
    let checks = connected.into_iter().map(|(id, conn)| {
        let remote = remote.clone();
        let wait = if Some(id) == first { first_wait } else { Duration::ZERO };
        async move {
            let ok = holds(&remote, &conn, hash, wait).await;
            (id, conn, ok)
        }
    });
    let mut idle = VecDeque::new();
    for (id, conn, ok) in futures::future::join_all(checks).await {
        match ok {
            Some(true) => idle.push_back((id, conn)),
            Some(false) => book.missing.push(id),
            None => book.failed.push(id),
        }
    }
    // The size, verified: the last chunk comes with the hashes that bind it
    // to the root, and the tree's shape depends on the size.
    let size = loop {
        let Some((id, conn)) = idle.pop_front() else {
            return Err(FetchError::NoProvider(Box::new(book)));
        };
        let probe = tokio::time::timeout(PROBE_DEADLINE, get(conn.clone(), hash, ChunkRanges::last_chunk(), None));
        match probe.await.unwrap_or((Vec::new(), None, Err(Failure::Failed))) {
            (_, Some(size), Ok(())) => {
                idle.push_front((id, conn));
                break size;
            }
            (_, _, Err(f)) => note(&mut book, id, f),
            (_, None, Ok(())) => note(&mut book, id, Failure::Failed),
        }
    };
    if size > max_size {
        return Err(FetchError::TooBig { size, max: max_size, book: Box::new(book) });
    }
    let mut bytes = vec![0u8; size as usize];
    let mut queue = parts(size);
    let mut running = FuturesUnordered::new();
    loop {
        while !queue.is_empty() && !idle.is_empty() {
            let (Some((id, conn)), Some(part)) = (idle.pop_front(), queue.pop_front()) else { break };
            running.push(async move {
                // However it trickles, a range is given up after its deadline.
                let deadline = PROGRESS_TIMEOUT + Duration::from_secs((part.end - part.start) / MIN_RATE);
                let r = tokio::time::timeout(deadline, get(conn.clone(), hash, chunks(&part), Some(part.start)))
                    .await
                    .unwrap_or((Vec::new(), None, Err(Failure::Failed)));
                (id, conn, part, r)
            });
        }
        let Some((id, conn, part, (data, said, r))) = running.next().await else { break };
        // A provider that gives another size than the verified one lies (its
        // bytes could not verify against the root either way).
        let (data, r) = if said.is_some_and(|s| s != size) { (Vec::new(), Err(Failure::Lied)) } else { (data, r) };
        // The verified prefix of the range is kept, whatever happened next.
        let got = (data.len() as u64).min(part.end - part.start);
        bytes[part.start as usize..(part.start + got) as usize].copy_from_slice(&data[..got as usize]);
        delivered.fetch_add(got, Ordering::Relaxed);
        if got > 0 {
            *book.served.entry(id).or_default() += got;
        }
        match r {
            Ok(()) if got == part.end - part.start => idle.push_back((id, conn)),
            Ok(()) => {
                queue.push_front(part.start + got..part.end);
                note(&mut book, id, Failure::Failed);
            }
            Err(f) => {
                queue.push_front(part.start + got..part.end);
                note(&mut book, id, f);
            }
        }
    }
    if !queue.is_empty() {
        return Err(FetchError::NoProvider(Box::new(book)));
    }
    Ok(super::Fetched { bytes, book })
}

/// The chunks covering a byte range.
fn chunks(r: &Range<u64>) -> ChunkRanges {
    ChunkRanges::chunks(r.start / 1024..r.end.div_ceil(1024))
}

/// Connections to the providers (distinct, at most [`MAX_PROVIDERS`]), in
/// their order; those that cannot be reached are booked as failed.
async fn connect_all(
    endpoint: &Endpoint,
    providers: Vec<EndpointAddr>,
    book: &mut ProviderBook,
) -> VecDeque<(EndpointId, Connection)> {
    let mut seen = std::collections::HashSet::new();
    let providers: Vec<EndpointAddr> =
        providers.into_iter().filter(|a| a.id != endpoint.id() && seen.insert(a.id)).take(MAX_PROVIDERS).collect();
    let tries = providers.into_iter().map(|a| async move { (a.id, connect(endpoint, a).await) });
    let mut idle = VecDeque::new();
    for (id, conn) in
        tokio::time::timeout(CONNECT_TIMEOUT * 2, futures::future::join_all(tries)).await.unwrap_or_default()
    {
        match conn {
            Some(c) => idle.push_back((id, c)),
            None => book.failed.push(id),
        }
    }
    idle
}

/// Whether the provider holds the whole blob (by its own account; a liar
/// that says so is caught by what it sends), asking again for `wait`; None
/// if it does not answer.
async fn holds(remote: &Remote, conn: &Connection, hash: IrohHash, wait: Duration) -> Option<bool> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let mut seen = std::pin::pin!(remote.observe(conn.clone(), ObserveRequest::new(hash)));
        match tokio::time::timeout(CONNECT_TIMEOUT, seen.next()).await {
            Ok(Some(Ok(bits))) if bits.is_complete() => return Some(true),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
        if tokio::time::Instant::now() >= until {
            return Some(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The size probe (a chunk and its hashes) is given up after this.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);
/// A range must come at least this fast (bytes per second) on average, or
/// it goes to another provider: a provider that trickles one chunk group
/// per progress timeout does not hold a range for hours.
const MIN_RATE: u64 = 256 << 10;

/// Books a failed request.
fn note(book: &mut ProviderBook, id: EndpointId, f: Failure) {
    match f {
        Failure::Lied => book.liars.push(id),
        Failure::Failed => book.failed.push(id),
    }
}

/// Fetches `ranges` of the blob from one provider, verifying as it reads:
/// the verified bytes from `start` (contiguous; the leaves come in order),
/// the size the provider gave, and how it ended. Without `start`, the data
/// is dropped (the size probe).
async fn get(
    conn: Connection,
    hash: IrohHash,
    ranges: ChunkRanges,
    start: Option<u64>,
) -> (Vec<u8>, Option<u64>, Result<(), Failure>) {
    let mut data = Vec::new();
    let initial = fsm::start(conn, range_request(hash, ranges), Default::default());
    let Ok(Ok(connected)) = step(initial.next()).await else { return (data, None, Err(Failure::Failed)) };
    let Ok(Ok(ConnectedNext::StartRoot(root))) = step(connected.next()).await else {
        return (data, None, Err(Failure::Failed));
    };
    let (mut content, size) = match step(root.next().next()).await {
        Ok(Ok(x)) => x,
        _ => return (data, None, Err(Failure::Failed)),
    };
    loop {
        match step(content.next()).await {
            Err(_) => return (data, Some(size), Err(Failure::Failed)),
            Ok(BlobContentNext::More((next, Ok(item)))) => {
                if let (BaoContentItem::Leaf(leaf), Some(start)) = (item, start) {
                    if leaf.offset != start + data.len() as u64 {
                        return (data, Some(size), Err(Failure::Failed));
                    }
                    data.extend_from_slice(&leaf.data);
                }
                content = next;
            }
            Ok(BlobContentNext::More((_, Err(e)))) => return (data, Some(size), Err(classify(&e))),
            Ok(BlobContentNext::Done(end)) => {
                if let EndBlobNext::Closing(c) = end.next() {
                    let _ = step(c.next()).await;
                }
                return (data, Some(size), Ok(()));
            }
        }
    }
}

/// One step of a transfer, given up after [`PROGRESS_TIMEOUT`] without progress.
async fn step<F: std::future::Future>(f: F) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(PROGRESS_TIMEOUT, f).await
}

/// A hash mismatch is a lie; everything else is a failure.
fn classify(e: &DecodeError) -> Failure {
    match e {
        DecodeError::ParentHashMismatch { .. } | DecodeError::LeafHashMismatch { .. } => Failure::Lied,
        _ => Failure::Failed,
    }
}
