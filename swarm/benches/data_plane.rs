//! Late-join state sync on loopback, real processes: `swarm serve-blob`
//! providers hold a state of `--params` parameters (parameters and outer
//! momentum, 8 bytes each: 134 515 008 is smollm2-135m, 1.08 GB) and a
//! joiner in this process fetches it.
//!
//! Rows: the old path (libp2p request-response, one provider), then the data
//! plane (iroh-blobs) from 1, 2 and 4 providers, 4 with one lying (asked
//! first), and 4 with one killed halfway through (at half the 4-provider
//! time). Each row is a fresh joiner. For scale: a plain TCP copy over
//! loopback in one stream, and BLAKE3 (which verification runs per byte).
//!
//! `cargo bench -p swarm --bench data_plane -- [--params 134515008] [--runs 1]`

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{Procs, start_blob_provider};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use swarm::dataplane::serve::Serving;
use swarm::dataplane::{DataPlane, ProviderBook};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn args() -> (usize, usize) {
    let (mut params, mut runs) = (134_515_008usize, 1usize);
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--params" => params = next.parse().expect("--params N"),
            "--runs" => runs = next.parse().expect("--runs N"),
            _ => {
                i += 1; // cargo bench passes --bench
                continue;
            }
        }
        i += 2;
    }
    (params, runs)
}

/// MB/s of one TCP stream over loopback, copying `bytes`.
fn loopback_tcp(bytes: usize) -> f64 {
    let l = std::net::TcpListener::bind((LO, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        while n < bytes {
            n += s.read(&mut buf).unwrap();
        }
    });
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let buf = vec![7u8; 1 << 20];
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf).unwrap();
        sent += buf.len();
    }
    reader.join().unwrap();
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

struct Row {
    name: String,
    secs: f64,
    book: Option<ProviderBook>,
}

fn main() {
    let (params, runs) = args();
    let bytes = params * 8;
    let mb = bytes as f64 / 1e6;
    eprintln!("state of {params} parameters: {mb:.0} MB; starting 5 providers (one lies)");
    let mut procs = Procs::default();
    let honest: Vec<Serving> = (0..4).map(|_| start_blob_provider(&mut procs, bytes, 1, false)).collect();
    let liar = start_blob_provider(&mut procs, bytes, 1, true);
    let hash = protocol::Hash::from_hex(&honest[0].hash).unwrap();
    let addr = |s: &Serving| s.addr(LO).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tcp = loopback_tcp(bytes.min(1 << 30));
    let sample = swarm::dataplane::serve::blob(bytes.min(256 << 20), 0);
    let t = Instant::now();
    let _ = blake3::hash(&sample);
    let hash_rate = sample.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop(sample);
    let mut rows: Vec<Row> = Vec::new();
    for run in 0..runs {
        let old = Instant::now();
        rt.block_on(swarm::dataplane::serve::fetch_libp2p(
            &honest[0].libp2p,
            hash,
            bytes + (1 << 20),
            Duration::from_secs(600),
        ))
        .expect("libp2p fetch");
        rows.push(Row {
            name: "libp2p request-response, 1 provider".into(),
            secs: old.elapsed().as_secs_f64(),
            book: None,
        });
        let fetch = |name: &str, providers: Vec<iroh::EndpointAddr>, kill: Option<std::process::Child>| {
            let delivered = Arc::new(AtomicU64::new(0));
            let seen = delivered.clone();
            // The victim dies once half the blob has arrived (or after 10 min).
            let killer = kill.map(|mut child| {
                std::thread::spawn(move || {
                    let t = Instant::now();
                    while seen.load(Ordering::Relaxed) < bytes as u64 / 2 && t.elapsed() < Duration::from_secs(600) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    t.elapsed()
                })
            });
            let secret = *blake3::hash(format!("bench joiner {run} {name}").as_bytes()).as_bytes();
            let (secs, book) = rt.block_on(async {
                let joiner = DataPlane::bind(secret, LO, false).await.unwrap();
                let t = Instant::now();
                let f = joiner
                    .fetch_counted(hash.0, providers, bytes as u64, Duration::ZERO, delivered)
                    .await
                    .expect("data-plane fetch");
                let secs = t.elapsed().as_secs_f64();
                assert_eq!(protocol::Hash::of(&f.bytes), hash);
                joiner.close().await;
                (secs, f.book)
            });
            if let Some(k) = killer {
                let at = k.join().unwrap();
                eprintln!("{name}: provider killed after {:.2} s", at.as_secs_f64());
            }
            Row { name: name.into(), secs, book: Some(book) }
        };
        rows.push(fetch("iroh-blobs, 1 provider", vec![addr(&honest[0])], None));
        rows.push(fetch("iroh-blobs, 2 providers", honest[..2].iter().map(addr).collect(), None));
        rows.push(fetch("iroh-blobs, 4 providers", honest.iter().map(addr).collect(), None));
        let with_liar = std::iter::once(addr(&liar)).chain(honest[..3].iter().map(addr)).collect();
        rows.push(fetch("iroh-blobs, 4 providers, 1 lying", with_liar, None));
        if run + 1 == runs {
            // The last honest provider's process dies halfway.
            let victim = procs.0.remove(3);
            rows.push(fetch(
                "iroh-blobs, 4 providers, 1 killed halfway",
                honest.iter().map(addr).collect(),
                Some(victim),
            ));
        }
    }
    println!("\nLate join of a {mb:.0} MB state ({params} parameters), 127.0.0.1, {runs} run(s)");
    println!("loopback: one TCP stream {tcp:.0} MB/s; BLAKE3 {hash_rate:.0} MB/s on one core\n");
    println!("| path | seconds | MB/s | bytes per provider (MB) | liars caught | providers failed |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let (per, liars, failed) = match &r.book {
            Some(b) => {
                let mut v: Vec<f64> = b.served.values().map(|x| *x as f64 / 1e6).collect();
                v.sort_by(|a, b| b.total_cmp(a));
                let per = v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" / ");
                (per, b.liars.len().to_string(), b.failed.len().to_string())
            }
            None => (format!("{mb:.0}"), "-".into(), "-".into()),
        };
        println!("| {} | {:.2} | {:.0} | {per} | {liars} | {failed} |", r.name, r.secs, mb / r.secs);
    }
}
