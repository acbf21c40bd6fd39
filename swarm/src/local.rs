//! `swarm local`: a bootstrap node and N peers as child processes on
//! 127.0.0.1, with their progress merged into one view.

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use swarm::RoundReport;
use swarm::bootstrap::{self, BootstrapEvent};
use tokio::sync::{mpsc, oneshot};

#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// Model name (see `swarm models`).
    model: String,
    /// Number of peers.
    #[arg(long, default_value_t = 3)]
    peers: u32,
    /// Rounds to run [default: the run spec's].
    #[arg(long)]
    rounds: Option<u64>,
    /// Folder for the peers' keys, checkpoints and logs [default: a new temp dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print every peer's JSON line instead of the merged view.
    #[arg(long)]
    json: bool,
}

enum Msg {
    Report(usize, Box<RoundReport>),
    /// Peer `i`'s output ended (it is exiting).
    Exit(usize),
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub async fn run(args: LocalArgs) -> Result<()> {
    trainer::model_info(&args.model)?;
    if args.peers == 0 {
        bail!("--peers must be at least 1");
    }
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("swarm-local-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (addr, stop_boot) = start_bootstrap(&dir).await?;
    eprintln!("bootstrap node at {addr}");
    eprintln!("peer logs in {}", dir.display());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut children = start_peers(&args, &dir, &addr, tx)?;

    let n = args.peers as usize;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("waiting for {n} peers to meet"));
    let mut merged = Merged { n, json: args.json, rounds: BTreeMap::new(), disagreements: 0, last: None };
    let started = Instant::now();
    let mut exited = 0;
    let mut failed = Vec::new();
    while exited < n {
        match rx.recv().await {
            Some(Msg::Exit(i)) => {
                exited += 1;
                // A peer that fails stops the run: the others would wait
                // for it forever (min_peers).
                if !children.0[i].wait().is_ok_and(|s| s.success()) {
                    failed.push(i);
                    bar.suspend(|| eprintln!("peer {i} failed; see {}", dir.join(format!("peer-{i}.log")).display()));
                    break;
                }
            }
            Some(Msg::Report(i, r)) => merged.add(i, *r, &bar),
            None => break,
        }
    }
    bar.finish_and_clear();
    let _ = stop_boot.send(());
    if failed.is_empty() {
        for (i, c) in children.0.iter_mut().enumerate() {
            if !c.wait().is_ok_and(|s| s.success()) {
                failed.push(i);
            }
        }
    }
    drop(children); // kills whoever is left
    merged.finish(started.elapsed().as_secs_f32(), failed.len(), &dir)
}

/// Runs the bootstrap node in this process; its address comes as an event.
/// Returns the address and the sender that stops it.
async fn start_bootstrap(dir: &Path) -> Result<(String, oneshot::Sender<()>)> {
    let (boot_tx, mut boot_rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let key = dir.join("bootstrap.key");
    let boot = tokio::spawn(async move {
        let report = move |ev| {
            let _ = boot_tx.send(ev);
        };
        bootstrap::run("/ip4/127.0.0.1/udp/0/quic-v1", &key, report, async {
            let _ = stopped.await;
        })
        .await
    });
    loop {
        match boot_rx.recv().await {
            Some(BootstrapEvent::Listening(a)) => return Ok((a, stop)),
            Some(BootstrapEvent::Peers(_) | BootstrapEvent::Run(_)) => {}
            None => {
                boot.await.context("bootstrap node")??;
                bail!("the bootstrap node stopped before listening");
            }
        }
    }
}

/// Starts the peers as child processes; their round lines come on `tx`.
fn start_peers(args: &LocalArgs, dir: &Path, addr: &str, tx: mpsc::UnboundedSender<Msg>) -> Result<Children> {
    let exe = std::env::current_exe().context("locating the swarm binary")?;
    let mut children = Children(Vec::new());
    for i in 0..args.peers as usize {
        let log = std::fs::File::create(dir.join(format!("peer-{i}.log")))?;
        let mut cmd = Command::new(&exe);
        cmd.args(["join", &args.model, "--json", "--bootstrap", addr])
            .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
            .args(["--min-peers", &args.peers.to_string()])
            .arg("--data-dir")
            .arg(dir.join(format!("peer-{i}")));
        if let Some(r) = args.rounds {
            cmd.args(["--rounds", &r.to_string()]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn().context("starting a peer")?;
        let out = child.stdout.take().context("peer stdout")?;
        children.0.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(r) = serde_json::from_str::<RoundReport>(&line) {
                    let _ = tx.send(Msg::Report(i, Box::new(r)));
                }
            }
            let _ = tx.send(Msg::Exit(i));
        });
    }
    Ok(children)
}

/// The peers' reports, merged round by round.
struct Merged {
    n: usize,
    json: bool,
    /// Reports of rounds not every peer has reported yet.
    rounds: BTreeMap<u64, BTreeMap<usize, RoundReport>>,
    disagreements: usize,
    last: Option<RoundReport>,
}

impl Merged {
    fn add(&mut self, i: usize, r: RoundReport, bar: &ProgressBar) {
        if self.json {
            bar.suspend(|| println!("{{\"peer_index\":{i},\"report\":{}}}", r.json()));
        }
        let round = r.round;
        let entry = self.rounds.entry(round).or_default();
        entry.insert(i, r);
        if entry.len() < self.n {
            return;
        }
        let reports = self.rounds.remove(&round).unwrap_or_default();
        let Some(first) = reports.values().next().cloned() else { return };
        let agree = reports.values().all(|x| x.state_hash == first.state_hash);
        if !agree {
            self.disagreements += 1;
        }
        let n = self.n;
        let sent: u64 = reports.values().map(|x| x.bytes_sent).sum::<u64>() / n as u64;
        if !self.json {
            let acc = first.eval_accuracy.map(|a| format!(" acc {a:.3}")).unwrap_or_default();
            let agreement = if agree { format!("{n}/{n} peers agree") } else { "PEERS DISAGREE".to_string() };
            bar.suspend(|| {
                println!(
                    "round {round:>3} | loss {:.4}{acc} | {agreement} | {} contributed | sent/peer {} | state {}",
                    first.eval_loss,
                    first.contributors,
                    swarm::report::human_bytes(sent),
                    &first.state_hash[..16],
                )
            });
        }
        bar.set_message(format!("round {round} applied, training round {}", round + 1));
        self.last = Some(first);
    }

    /// The summary line; an error if a peer failed, peers disagreed, or no
    /// round completed.
    fn finish(&self, secs: f32, failed: usize, dir: &Path) -> Result<()> {
        let disagreements = self.disagreements;
        match &self.last {
            Some(r) => eprintln!(
                "done: {} rounds in {secs:.1} s, final loss {:.4}{}, {}",
                r.round,
                r.eval_loss,
                r.eval_accuracy.map(|a| format!(", accuracy {a:.3}")).unwrap_or_default(),
                if disagreements == 0 {
                    "all peers agreed on every round".to_string()
                } else {
                    format!("{disagreements} rounds disagreed")
                }
            ),
            None => eprintln!("done: no round completed (see the peer logs in {})", dir.display()),
        }
        if failed > 0 || disagreements > 0 || self.last.is_none() {
            bail!("{failed} peers failed, {disagreements} rounds disagreed (logs in {})", dir.display());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(round: u64, hash: &str) -> RoundReport {
        RoundReport {
            round,
            state_hash: hash.repeat(64),
            eval_loss: 0.5,
            eval_accuracy: Some(0.9),
            eval_perplexity: None,
            bytes_sent: 1,
            bytes_received: 1,
            traffic: Default::default(),
            peers: 2,
            contributors: 2,
            aggregator: String::new(),
            contributed: true,
            train_loss: None,
            train_ms: None,
            payload_bytes: 1,
            params: 1,
            codec: "int8".into(),
            peer: String::new(),
            elapsed_ms: 1,
            bad_providers: 0,
            peers_left: 0,
            verified: 0,
            disputes: 0,
            excluded: 0,
            banned: 0,
        }
    }

    #[test]
    fn rounds_are_merged_and_a_disagreement_fails_the_run() {
        let bar = ProgressBar::hidden();
        let dir = Path::new("/nonexistent");
        let mut m = Merged { n: 2, json: false, rounds: BTreeMap::new(), disagreements: 0, last: None };
        m.add(0, report(1, "a"), &bar);
        assert!(m.last.is_none(), "a round is shown once every peer reported it");
        m.add(1, report(1, "a"), &bar);
        assert_eq!(m.last.as_ref().map(|r| r.round), Some(1));
        assert!(m.finish(1.0, 0, dir).is_ok());
        assert!(m.finish(1.0, 1, dir).is_err(), "a failed peer fails the run");
        m.add(0, report(2, "a"), &bar);
        m.add(1, report(2, "b"), &bar);
        assert_eq!(m.disagreements, 1);
        assert!(m.finish(1.0, 0, dir).is_err(), "peers that disagree fail the run");
    }
}
