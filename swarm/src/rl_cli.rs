//! `swarm join --rl`: collaborative RL with shared rollouts.

use crate::JoinArgs;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::RlSpec;
use swarm::adversary::Adversary;
use swarm::rl::{RlConfig, RlEvent};

fn resolve(args: &JoinArgs) -> Result<RlSpec> {
    if args.run.is_some() {
        bail!("--run is for DiLoCo runs; an RL run is joined with its spec (--spec FILE) or its policy's name");
    }
    let mut spec = match (&args.spec, &args.model) {
        (Some(path), model) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let spec = RlSpec::from_toml(&text).with_context(|| format!("in {} (an RL spec)", path.display()))?;
            if let Some(m) = model
                && *m != spec.model
            {
                bail!("the model `{m}` differs from the spec's model `{}`", spec.model);
            }
            spec
        }
        (None, Some(model)) => match trainer::rl::default_spec(model) {
            Some(s) => s,
            None => bail!(
                "no RL run for `{model}`: the RL policies are `{}` and `{}`",
                trainer::rl::TASKS_GPT,
                trainer::rl::SMOLLM2_135M
            ),
        },
        (None, None) => bail!(
            "name an RL policy (`{}` or `{}`), or pass --spec FILE",
            trainer::rl::TASKS_GPT,
            trainer::rl::SMOLLM2_135M
        ),
    };
    if let Some(n) = args.min_peers {
        spec.min_peers = n;
    }
    if let Some(n) = args.rounds {
        spec.rounds = n;
    }
    trainer::rl::check_spec(&spec)?;
    // The pretrained policy's weights are pulled first (the error says which pull).
    if spec.model == trainer::rl::SMOLLM2_135M {
        trainer::packages::pulled(&trainer::packages::default_root(), trainer::packages::SMOLLM2)?;
    }
    Ok(spec)
}

/// Joins an RL run and prints one line (or JSON object) per round.
pub(crate) async fn join(args: JoinArgs) -> Result<()> {
    let spec = resolve(&args)?;
    if let Some(other) = args.adversary.filter(|a| !matches!(a, Adversary::InflateRewards | Adversary::WrongBytes)) {
        bail!("--adversary {other:?} is a DiLoCo attack; RL runs know inflate-rewards and wrong-bytes");
    }
    if args.device != swarm::worker::Backend::Cpu {
        bail!("the RL policy runs on the CPU (--device cpu)");
    }
    let cfg = RlConfig {
        spec: spec.clone(),
        data_dir: crate::data_dir(&args.data_dir),
        bootstrap: args.bootstrap.clone(),
        listen: args.listen.clone(),
        bootstrap_attempts: args.bootstrap_attempts,
        adversary: args.adversary,
    };
    let (stop, stop_rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut events, task) = swarm::rl::start(cfg, stop_rx).await?;
    tokio::spawn(async move {
        swarm::shutdown_signal().await;
        let _ = stop.send(());
    });
    let bar = ProgressBar::new(u64::from(spec.rl.sft_steps));
    bar.set_style(
        ProgressStyle::with_template("warm-up [{bar:30}] {pos}/{len} steps  loss {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    while let Some(ev) = events.recv().await {
        match ev {
            RlEvent::Listening(a) => bar.suspend(|| eprintln!("listening on {a}")),
            RlEvent::Info(s) => bar.suspend(|| eprintln!("{s}")),
            RlEvent::Warmup { step, total, loss } => {
                bar.set_length(u64::from(total));
                bar.set_position(u64::from(step));
                bar.set_message(format!("{loss:.4}"));
                if step == total {
                    bar.finish_and_clear();
                }
            }
            RlEvent::Round(r) => {
                if args.json {
                    println!("{}", r.json());
                } else {
                    println!("{}", r.line());
                }
            }
            RlEvent::Finished => bar.suspend(|| eprintln!("left the run")),
        }
    }
    task.await.context("RL node task")??;
    Ok(())
}
