//! `swarm-bootstrap`: the discovery node as its own small binary for
//! operators (the same as `swarm bootstrap`).

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use swarm::bootstrap;

/// A swarm discovery node (Kademlia server, no training).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "/ip4/0.0.0.0/udp/4001/quic-v1")]
    listen: String,
    /// Key file (created on first start), so the address stays the same.
    #[arg(long, default_value = "bootstrap.key")]
    key: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    bootstrap::run(&args.listen, &args.key, |ev| println!("{ev}"), swarm::shutdown_signal()).await?;
    Ok(())
}
