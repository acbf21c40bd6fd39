//! `swarm launch` and `swarm runs`.

use anyhow::{Context, Result};
use protocol::RunSpec;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Bounty {
    /// Escrow this many wei per epoch on the settlement contract (needs
    /// --rpc, --contract, --key).
    #[arg(long)]
    pub bounty_per_epoch: Option<u128>,
    /// Epochs the bounty pays for.
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// The settlement contract's address.
    #[arg(long)]
    pub contract: Option<String>,
    /// The submitter's key file (hex secp256k1 secret), which pays the bounty.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The chain's JSON-RPC endpoint.
    #[arg(long)]
    pub rpc: Option<String>,
    /// Seconds to wait for any one RPC answer.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(clap::Args, Debug)]
pub struct LaunchArgs {
    /// The run spec (TOML; `swarm spec <model>` prints one).
    pub spec: PathBuf,
    /// Bootstrap node to announce the run to (repeatable); without one the
    /// command only prints the run id (and escrows a bounty).
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// Address to serve the spec on while the launcher runs.
    #[arg(long, default_value = "/ip4/0.0.0.0/udp/0/quic-v1")]
    pub listen: String,
    /// Key file of the launcher's network identity [default: a fresh one].
    #[arg(long)]
    pub identity: Option<PathBuf>,
    #[command(flatten)]
    pub bounty: Bounty,
    /// The spec is an RL run's (`swarm spec tasks-gpt` prints one): prints
    /// its id and how peers join it.
    #[arg(long)]
    pub rl: bool,
}

pub async fn launch(args: LaunchArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.spec).with_context(|| format!("reading {}", args.spec.display()))?;
    if args.rl {
        let spec =
            protocol::RlSpec::from_toml(&text).with_context(|| format!("in {} (an RL spec)", args.spec.display()))?;
        trainer::rl::check_spec(&spec)?;
        if args.bounty.bounty_per_epoch.is_some() {
            anyhow::bail!("RL runs keep no ledger yet: no bounty can be escrowed for them");
        }
        println!("RL run {}", spec.run_id());
        let boot = args.bootstrap.iter().map(|b| format!(" --bootstrap {b}")).collect::<String>();
        println!("peers join it with: swarm join --spec {}{boot}", args.spec.display());
        return Ok(());
    }
    let spec = RunSpec::from_toml(&text).with_context(|| format!("in {}", args.spec.display()))?;
    trainer::model_info(&spec.model)?;
    let run = spec.run_id();
    println!("run {run}");
    if let Some(per_epoch) = args.bounty.bounty_per_epoch {
        #[cfg(feature = "settlement")]
        crate::ledger_cli::chain::bounty(&run, &args.bounty, per_epoch).await?;
        #[cfg(not(feature = "settlement"))]
        {
            let _ = per_epoch;
            anyhow::bail!("this swarm was built without the settlement feature");
        }
    }
    if args.bootstrap.is_empty() {
        println!("peers join it with: swarm join --spec {}", args.spec.display());
        return Ok(());
    }
    println!("peers join it with: swarm join --run {} --bootstrap {}", run.to_hex(), args.bootstrap[0]);
    println!("serving its spec until stopped (Ctrl+C); its peers serve it too once they join");
    let key = match &args.identity {
        Some(p) => swarm::identity::load_or_create(p)?,
        None => protocol::Keypair::from_secret(
            *blake3::hash(format!("launcher-{:?}-{}", std::time::SystemTime::now(), std::process::id()).as_bytes())
                .as_bytes(),
        ),
    };
    swarm::runs::publish(&spec, &args.bootstrap, &args.listen, &key, |l| eprintln!("{l}"), swarm::shutdown_signal())
        .await?;
    Ok(())
}

/// `swarm runs`: the runs a bootstrap node was told about, with their specs.
pub async fn list(bootstrap: &str, timeout: u64) -> Result<()> {
    let t = Duration::from_secs(timeout);
    let runs = swarm::runs::list(bootstrap, t).await?;
    if runs.is_empty() {
        println!("{bootstrap} knows no run yet");
        return Ok(());
    }
    println!("{:<66} {:<14} {:>6} {:>9}", "run", "model", "rounds", "min_peers");
    for run in runs.iter().take(64) {
        match swarm::runs::fetch_spec(bootstrap, run, t).await {
            Ok(s) => println!("{:<66} {:<14} {:>6} {:>9}", run.to_hex(), s.model, s.rounds, s.min_peers),
            Err(e) => println!("{:<66} (spec not fetched: {e})", run.to_hex()),
        }
    }
    if runs.len() > 64 {
        println!("... and {} more", runs.len() - 64);
    }
    Ok(())
}
