//! `swarm ledger`, and with the `settlement` feature `swarm launch`,
//! `swarm settle` and `swarm deploy-contract`.

use anyhow::{Context, Result, bail};
use protocol::RunSpec;
use protocol::ledger::Ledger;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    /// The run (its id, or the first 16 hex characters); default: the run
    /// whose ledger changed last.
    #[arg(long)]
    pub run: Option<String>,
    /// The data dir [default: $SWARM_HOME or ~/.swarm].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// One JSON object per epoch.
    #[arg(long)]
    pub json: bool,
}

/// A run dir and what is in it.
pub struct RunLedger {
    pub spec: RunSpec,
    pub ledger: Ledger,
    pub records: usize,
}

/// Finds the run dir (by id prefix, or the newest ledger) and rebuilds its ledger.
pub fn open(data_dir: &Path, run: Option<&str>) -> Result<RunLedger> {
    let runs = data_dir.join("runs");
    let dir = match run {
        Some(id) => {
            let prefix: String = id.trim().trim_start_matches("0x").chars().take(16).collect();
            runs.join(prefix)
        }
        None => {
            let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&runs)
                .with_context(|| format!("no runs in {}", runs.display()))?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let log = e.path().join("manifests.log");
                    Some((std::fs::metadata(&log).ok()?.modified().ok()?, e.path()))
                })
                .collect();
            found.sort();
            match found.pop() {
                Some((_, d)) => d,
                None => bail!("no run in {} has a ledger yet (it starts with the first applied round)", runs.display()),
            }
        }
    };
    let spec_path = dir.join("spec.toml");
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("{}: not a run this data dir took part in", spec_path.display()))?;
    let spec = RunSpec::from_toml(&text).with_context(|| format!("in {}", spec_path.display()))?;
    let (ledger, records) = swarm::ledger_log::rebuild(&dir.join("manifests.log"), &spec);
    Ok(RunLedger { spec, ledger, records })
}

pub fn show(args: LedgerArgs, data_dir: &Path) -> Result<()> {
    let r = open(data_dir, args.run.as_deref())?;
    let run = r.spec.run_id();
    if args.json {
        for e in r.ledger.epochs() {
            println!("{}", swarm::ledger_log::epoch_json(&run, e));
        }
        return Ok(());
    }
    println!(
        "run {} ({}): {} applied manifests kept, last round {}, epochs of {} rounds closing {} rounds later",
        &run.to_hex()[..16],
        r.spec.model,
        r.records,
        r.ledger.last_round(),
        r.spec.ledger.epoch_rounds,
        r.spec.ledger.settle_rounds
    );
    if r.ledger.epochs().next().is_none() {
        println!("no epoch closed yet");
    }
    for e in r.ledger.epochs() {
        if e.is_unknown() {
            println!(
                "epoch {} (rounds {}..={}): not computed here (this peer synced past some of its rounds)",
                e.epoch, e.first_round, e.last_round
            );
            continue;
        }
        println!(
            "epoch {} (rounds {}..={}): total {} credits, root 0x{}, {} of {} committee signatures seen",
            e.epoch,
            e.first_round,
            e.last_round,
            e.total,
            hex::encode(e.root),
            e.attestations.iter().map(|(a, _)| *a).collect::<std::collections::BTreeSet<_>>().len(),
            e.committee.len()
        );
        println!(
            "  {:<10} {:<44} {:>8} {:>6} {:>10} {:>8}",
            "peer", "payee", "samples", "checks", "credits", "penalty"
        );
        for c in &e.credits {
            let payee = c.payee.map_or("-".to_string(), |a| format!("0x{}", hex::encode(a)));
            println!(
                "  {:<10} {:<44} {:>8} {:>6} {:>10} {:>8}",
                c.peer.short(),
                payee,
                c.samples,
                c.checks,
                c.credits,
                c.penalty
            );
        }
    }
    Ok(())
}

#[cfg(feature = "settlement")]
pub mod chain {
    use super::*;
    use std::time::Duration;

    #[derive(clap::Args, Debug)]
    pub struct ChainArgs {
        /// The chain's JSON-RPC endpoint, e.g. http://127.0.0.1:8545.
        #[arg(long)]
        pub rpc: String,
        /// Seconds to wait for any one RPC answer.
        #[arg(long, default_value_t = 30)]
        pub timeout: u64,
    }

    #[derive(clap::Args, Debug)]
    pub struct SettleArgs {
        #[command(flatten)]
        pub chain: ChainArgs,
        /// The settlement contract's address.
        #[arg(long)]
        pub contract: String,
        #[command(flatten)]
        pub ledger: LedgerArgs,
        /// A key file (hex) that pays for gas instead of the data dir's settlement key.
        #[arg(long)]
        pub gas_key: Option<PathBuf>,
    }

    fn read_key(path: &Path) -> Result<String> {
        Ok(std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?.trim().to_string())
    }

    pub async fn deploy(chain: ChainArgs, key: PathBuf) -> Result<()> {
        let k = read_key(&key)?;
        let a = settlement::deploy(&chain.rpc, &k, Duration::from_secs(chain.timeout)).await?;
        println!("{a}");
        Ok(())
    }

    /// Escrows `per_epoch x epochs` wei for `run` (what `swarm launch --bounty-per-epoch` does).
    pub async fn bounty(run: &protocol::Hash, b: &crate::runs_cli::Bounty, per_epoch: u128) -> Result<()> {
        let (Some(rpc), Some(contract), Some(key)) = (&b.rpc, &b.contract, &b.key) else {
            bail!("a bounty needs --rpc, --contract and --key");
        };
        let c = settlement::Chain::connect(
            rpc,
            settlement::parse_address(contract)?,
            &read_key(key)?,
            Duration::from_secs(b.timeout),
        )?;
        match c.register(run, alloy_u256(per_epoch), b.epochs).await? {
            settlement::Outcome::Done { gas, tx } => {
                println!("bounty escrowed: {per_epoch} wei per epoch for {} epochs ({gas} gas, {tx})", b.epochs)
            }
            settlement::Outcome::AlreadyDone => println!("a bounty for this run is already escrowed"),
        }
        Ok(())
    }

    fn alloy_u256(x: u128) -> settlement::U256 {
        settlement::U256::from(x)
    }

    pub async fn settle(args: SettleArgs, data_dir: &Path) -> Result<()> {
        let r = open(data_dir, args.ledger.run.as_deref())?;
        let run = r.spec.run_id();
        let me = swarm::identity::load_or_create(&data_dir.join("key"))?.peer_id();
        let key = match &args.gas_key {
            Some(p) => read_key(p)?,
            None => swarm::payee::SettlementKey::load_or_create(&data_dir.join("settlement.key"))?.secret_hex(),
        };
        let c = settlement::Chain::connect(
            &args.chain.rpc,
            settlement::parse_address(&args.contract)?,
            &key,
            Duration::from_secs(args.chain.timeout),
        )?;
        let report = settlement::settle(&c, &run, &r.ledger, &me).await?;
        for l in &report.lines {
            println!("{l}");
        }
        if report.lines.is_empty() {
            println!("nothing to settle yet: no closed epoch in this ledger");
        }
        Ok(())
    }
}
