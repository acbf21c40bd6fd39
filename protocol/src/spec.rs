//! The run spec: what is trained, how, and on what timing. Content-addressed:
//! the run id is the BLAKE3 hash of the spec's canonical (bincode) encoding,
//! so two peers with the same spec are in the same run.

use crate::codec::{Codec, CodecError};
use crate::id::Hash;
use crate::ledger::LedgerSpec;
use serde::{Deserialize, Serialize};

/// Errors reading or checking a run spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not valid TOML, a missing or unknown field, or a wrong type. The
    /// message names the field (and line) as the TOML parser reports it.
    #[error("run spec: {0}")]
    Parse(String),
    /// A field with a value out of range.
    #[error("run spec: field `{field}`: {reason}")]
    Invalid {
        /// The dotted field name, e.g. `train.inner_lr`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Inner-loop hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// H: AdamW steps per round.
    pub inner_steps: u32,
    /// AdamW learning rate.
    pub inner_lr: f64,
    /// Samples per step.
    pub batch_size: u32,
    /// AdamW weight decay.
    pub weight_decay: f64,
}

/// The outer optimizer (DiLoCo: Nesterov SGD, lr 0.7, momentum 0.9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OuterSpec {
    /// Outer learning rate.
    pub lr: f64,
    /// Outer momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Default for OuterSpec {
    fn default() -> Self {
        OuterSpec { lr: 0.7, momentum: 0.9, nesterov: true }
    }
}

/// Round timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingSpec {
    /// A round's contributions are closed this long after the peer started
    /// the round, even if not every peer has announced.
    pub round_timeout_ms: u64,
    /// How long each next aggregator candidate waits for a silent one.
    pub aggregator_timeout_ms: u64,
    /// The adaptive deadline (median + k * MAD of recent round times) never
    /// goes below this; `round_timeout_ms` is its ceiling.
    #[serde(default = "default_min_round_ms")]
    pub min_round_ms: u64,
    /// k of the adaptive deadline.
    #[serde(default = "default_deadline_k")]
    pub deadline_k: f64,
}

fn default_min_round_ms() -> u64 {
    2_000
}

fn default_deadline_k() -> f64 {
    4.0
}

impl Default for TimingSpec {
    fn default() -> Self {
        TimingSpec {
            round_timeout_ms: 60_000,
            aggregator_timeout_ms: 5_000,
            min_round_ms: default_min_round_ms(),
            deadline_k: default_deadline_k(),
        }
    }
}

/// How pseudo-gradients are encoded on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecSpec {
    /// `fp32`, `bf16`, `int8` or `int4`.
    pub name: String,
    /// Values per quantisation block (int8/int4).
    pub block_size: u32,
    /// zstd level applied to the encoded bytes (0 = no zstd). Off by
    /// default: on int8 it costs about 3x the encode time for a frame about
    /// 4 % smaller (`cargo bench --bench compression_table -- --only a`),
    /// which pays only on links slower than the encoder's gain.
    pub zstd_level: i32,
    /// Fraction of values sent by top-k sparsification; 0 = dense.
    #[serde(default)]
    pub topk: f64,
}

impl Default for CodecSpec {
    fn default() -> Self {
        CodecSpec { name: "int8".into(), block_size: 128, zstd_level: 0, topk: 0.0 }
    }
}

impl CodecSpec {
    /// The codec this section describes; the error names the field.
    pub fn codec(&self) -> Result<Codec, SpecError> {
        Codec::new(&self.name, self.block_size, self.topk as f32, self.zstd_level).map_err(|e| match e {
            CodecError::Unknown(_) => SpecError::Invalid {
                field: "codec.name",
                reason: format!("unknown codec; known: {}", crate::codec::CODECS.join(", ")),
            },
            CodecError::Setting { field, reason } => SpecError::Invalid {
                field: match field {
                    "block_size" => "codec.block_size",
                    "topk" => "codec.topk",
                    _ => "codec.zstd_level",
                },
                reason: reason.to_string(),
            },
            other => SpecError::Invalid { field: "codec", reason: other.to_string() },
        })
    }
}

/// Peer review of contributions (see the README's threat model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Probability that a contribution gets a verifier in its round (the
    /// manifest's hash draws it, after the contributions are committed).
    pub rate: f64,
    /// k: inner steps between two committed inner states; the chain has
    /// ceil(H / k) segments; a check re-executes the drawn one and the last
    /// one. 0 = about 25 segments (k = ceil(H / 25)): a check replays two
    /// of them, under 10 % of the contributor's steps.
    pub checkpoint_every: u32,
    /// Referees that re-execute the segment of a disputed contribution.
    pub referees: u32,
}

impl Default for VerifySpec {
    fn default() -> Self {
        VerifySpec { rate: 0.8, checkpoint_every: 0, referees: 3 }
    }
}

/// Most segments a commitment chain may have.
pub const MAX_SEGMENTS: u32 = 64;

impl VerifySpec {
    /// k for a round of `inner_steps` steps.
    pub fn every(&self, inner_steps: u32) -> u32 {
        match self.checkpoint_every {
            0 => inner_steps.div_ceil(25).max(1),
            k => k,
        }
    }

    /// Segments of a round of `inner_steps` steps.
    pub fn segments(&self, inner_steps: u32) -> u32 {
        inner_steps.div_ceil(self.every(inner_steps))
    }
}

/// Aggregation rules a spec may name.
pub const AGGREGATES: &[&str] = &["mean", "trimmed-mean", "centered-clip"];

fn default_aggregate() -> String {
    "centered-clip".to_string()
}

/// A run: everything peers must agree on to train together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The model's name in the zoo.
    pub model: String,
    /// Seed of the initial parameters.
    pub seed: u64,
    /// Length of the run in rounds; peers leave after this round.
    pub rounds: u64,
    /// Round 1 starts once this many peers are present.
    pub min_peers: u32,
    /// Inner loop.
    pub train: TrainSpec,
    /// Outer optimizer.
    #[serde(default)]
    pub outer: OuterSpec,
    /// Round timing.
    #[serde(default)]
    pub timing: TimingSpec,
    /// Pseudo-gradient encoding.
    #[serde(default)]
    pub codec: CodecSpec,
    /// How a round's pseudo-gradients are combined: `mean`, `trimmed-mean`
    /// (20 % cut at each end, per coordinate) or `centered-clip` (3
    /// iterations, clipped at twice the median distance to the center).
    #[serde(default = "default_aggregate")]
    pub aggregate: String,
    /// Peer review.
    #[serde(default)]
    pub verify: VerifySpec,
    /// Credits and epochs.
    #[serde(default)]
    pub ledger: LedgerSpec,
}

impl RunSpec {
    /// The default run of a model: the spec everyone who types
    /// `swarm join <model>` gets.
    pub fn new(model: &str, train: TrainSpec) -> RunSpec {
        RunSpec {
            model: model.to_string(),
            seed: 0,
            rounds: 20,
            min_peers: 3,
            train,
            outer: OuterSpec::default(),
            timing: TimingSpec::default(),
            codec: CodecSpec::default(),
            aggregate: default_aggregate(),
            verify: VerifySpec::default(),
            ledger: LedgerSpec::default(),
        }
    }

    /// The run id: BLAKE3 of the canonical encoding.
    pub fn run_id(&self) -> Hash {
        let bytes = bincode::serde::encode_to_vec(self, bincode::config::standard()).expect("a RunSpec always encodes");
        Hash::of(&bytes)
    }

    /// Parses TOML and checks every field.
    pub fn from_toml(s: &str) -> Result<RunSpec, SpecError> {
        let spec: RunSpec = toml::from_str(s).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Writes TOML that [`RunSpec::from_toml`] reads back to the same spec.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunSpec always serialises")
    }

    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        fn bad(field: &'static str, reason: impl Into<String>) -> Result<(), SpecError> {
            Err(SpecError::Invalid { field, reason: reason.into() })
        }
        let pos = |x: f64| x.is_finite() && x > 0.0;
        if self.model.is_empty() {
            return bad("model", "must not be empty");
        }
        if self.rounds == 0 {
            return bad("rounds", "must be at least 1");
        }
        if self.min_peers == 0 || self.min_peers > 10_000 {
            return bad("min_peers", "must be between 1 and 10000");
        }
        if self.train.inner_steps == 0 || self.train.inner_steps > 1_000_000 {
            return bad("train.inner_steps", "must be between 1 and 1000000");
        }
        if !pos(self.train.inner_lr) {
            return bad("train.inner_lr", "must be a positive number");
        }
        if self.train.batch_size == 0 || self.train.batch_size > 65_536 {
            return bad("train.batch_size", "must be between 1 and 65536");
        }
        if !(self.train.weight_decay.is_finite() && self.train.weight_decay >= 0.0) {
            return bad("train.weight_decay", "must be zero or positive");
        }
        if !pos(self.outer.lr) {
            return bad("outer.lr", "must be a positive number");
        }
        if !(self.outer.momentum.is_finite() && (0.0..1.0).contains(&self.outer.momentum)) {
            return bad("outer.momentum", "must be in [0, 1)");
        }
        if self.timing.round_timeout_ms < 100 {
            return bad("timing.round_timeout_ms", "must be at least 100");
        }
        if self.timing.min_round_ms > self.timing.round_timeout_ms {
            return bad("timing.min_round_ms", "must not exceed timing.round_timeout_ms");
        }
        if !(self.timing.deadline_k.is_finite() && self.timing.deadline_k >= 0.0) {
            return bad("timing.deadline_k", "must be zero or positive");
        }
        if self.timing.aggregator_timeout_ms < 50 {
            return bad("timing.aggregator_timeout_ms", "must be at least 50");
        }
        self.codec.codec()?;
        if !AGGREGATES.contains(&self.aggregate.as_str()) {
            return bad("aggregate", format!("unknown rule; known: {}", AGGREGATES.join(", ")));
        }
        if !(self.verify.rate.is_finite() && (0.0..=1.0).contains(&self.verify.rate)) {
            return bad("verify.rate", "must be in [0, 1]");
        }
        if self.verify.segments(self.train.inner_steps) > MAX_SEGMENTS {
            return bad(
                "verify.checkpoint_every",
                format!("must give at most {MAX_SEGMENTS} segments of train.inner_steps (0 = twenty)"),
            );
        }
        if !(1..=16).contains(&self.verify.referees) {
            return bad("verify.referees", "must be between 1 and 16");
        }
        if !(1..=100_000).contains(&self.ledger.epoch_rounds) {
            return bad("ledger.epoch_rounds", "must be between 1 and 100000");
        }
        if self.ledger.settle_rounds > 1_000 {
            return bad("ledger.settle_rounds", "must be at most 1000");
        }
        if self.ledger.sample_credit > 1_000_000 {
            return bad("ledger.sample_credit", "must be at most 1000000");
        }
        if self.ledger.check_permille > 1_000 {
            return bad("ledger.check_permille", "must be at most 1000");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec::new("digits-mlp", TrainSpec { inner_steps: 50, inner_lr: 0.002, batch_size: 32, weight_decay: 0.0 })
    }

    #[test]
    fn toml_round_trip_keeps_the_run_id() {
        let s = spec();
        let back = RunSpec::from_toml(&s.to_toml()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.run_id(), s.run_id());
        let mut other = s.clone();
        other.seed = 1;
        assert_ne!(other.run_id(), s.run_id());
    }

    #[test]
    fn errors_name_the_field() {
        let text = spec().to_toml().replace("inner_lr = 0.002", "inner_lr = -1.0");
        let err = RunSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("train.inner_lr"), "{err}");
        let text = spec().to_toml().replace("seed = 0\n", "");
        let err = RunSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("seed"), "{err}");
        let text = spec().to_toml().replace("seed = 0", "seed = \"x\"");
        let err = RunSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("seed"), "{err}");
        let text = spec().to_toml().replace("block_size = 128", "block_size = 8");
        let err = RunSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("codec.block_size"), "{err}");
        let text = spec().to_toml().replace("name = \"int8\"", "name = \"int3\"");
        let err = RunSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("codec.name") && err.contains("int4"), "{err}");
        let text = format!("{}\nbogus = 1\n", spec().to_toml());
        let err = RunSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
