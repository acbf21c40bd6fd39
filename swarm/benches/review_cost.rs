//! What a verifier's check costs next to the training it checks, in one
//! process and nothing else running: trains one round of each model from
//! its genesis (default spec), then runs the check a verifier runs (the
//! drawn segment and the last one) for several drawn segments, and a
//! referee's (one segment). A peer runs `verify.rate` verifier checks per
//! round on average (one contribution each, of as many as there are
//! peers), so its verifier/solver compute is about rate x check / train.
//!
//! `cargo bench -p swarm --bench review_cost -- [--model lipsum-gpt] [--runs 5]`

use protocol::round::CheckJob;
use protocol::spec::TrainSpec;
use protocol::{Contribution, Hash, Keypair, RunSpec};
use std::sync::Arc;
use std::time::Instant;
use swarm::worker::{CheckBlobs, Model, batch_seed};

fn spec(model: &str) -> RunSpec {
    let t = trainer::default_train_config(model);
    let train = TrainSpec {
        inner_steps: t.inner_steps,
        inner_lr: t.lr,
        batch_size: t.batch_size as u32,
        weight_decay: t.weight_decay,
    };
    RunSpec::new(model, train)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut models = vec!["digits-mlp".to_string(), "lipsum-gpt".to_string()];
    let mut runs = 5usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.windows(2) {
        match w[0].as_str() {
            "--model" => models = vec![w[1].clone()],
            "--runs" => runs = w[1].parse::<usize>().expect("--runs N").max(1),
            _ => {}
        }
    }
    for model in &models {
        let spec = spec(model);
        let m = Model::new(&spec).expect("model");
        let state = m.genesis();
        let run = spec.run_id();
        let me = Keypair::from_seed(7).peer_id();
        let seed = batch_seed(&run, 1, &me);
        let (mut train, mut verifier, mut referee) = (Vec::new(), Vec::new(), Vec::new());
        let h = spec.train.inner_steps;
        let segments = spec.verify.segments(h);
        for r in 0..runs {
            let started = Instant::now();
            let t = m.train(&mut m.feedback(), &state.params, 1, seed, &mut |_, _| {}).expect("train");
            train.push(started.elapsed().as_secs_f64() * 1e3);
            // The chain's leaves: the step-0 state is only hashed there (`states` starts at step k).
            let leaves: Vec<Hash> =
                t.chain.chunks(32).map(|c| Hash(c.try_into().expect("32-byte chain entries"))).collect();
            let contribution = Contribution {
                hash: Hash::of(&t.blob),
                samples: t.samples,
                base_state: state.hash(),
                raw: t.raw,
                residual: t.residual,
                chain: Hash::of(&t.chain),
                payee: None,
                attest: None,
            };
            let last = segments - 1;
            // Spread the drawn segment over the chain, never the last (that
            // would be one segment, not two).
            let drawn = (r as u32 * 7 + 1) % last.max(1);
            let blob = |i: u32| (i > 0).then(|| Arc::new(t.states[i as usize - 1].clone()));
            let start = Arc::new(state.encode());
            let check = |replay: Vec<u32>| {
                let starts = replay.iter().map(|&s| blob(s)).collect();
                let job = CheckJob {
                    round: 1,
                    manifest: Hash::of(b"manifest"),
                    contributor: me,
                    contribution,
                    start: state.hash(),
                    segment: drawn,
                    replay,
                    leaves: leaves.clone(),
                };
                let blobs = CheckBlobs {
                    start: start.clone(),
                    blob: Arc::new(t.blob.clone()),
                    starts,
                    last: Arc::new(t.states.last().expect("states").clone()),
                };
                let started = Instant::now();
                let fault = m.check(&run, &job, &blobs);
                assert_eq!(fault, None, "an honest contribution passes");
                started.elapsed().as_secs_f64() * 1e3
            };
            verifier.push(check(vec![drawn, last]));
            referee.push(check(vec![drawn]));
        }
        let (t, v, f) = (median(train), median(verifier), median(referee));
        let rate = spec.verify.rate;
        println!(
            "{model}: {} parameters, H = {h}, {segments} segments; training {t:.1} ms, verifier check {v:.1} ms \
             ({:.1} % of training; x rate {rate} = {:.1} % per peer and round), referee check {f:.1} ms ({:.1} %); \
             medians of {runs}",
            m.params(),
            100.0 * v / t,
            100.0 * rate * v / t,
            100.0 * f / t,
        );
    }
}
