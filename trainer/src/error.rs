//! The error type of the trainer crate.

use std::path::PathBuf;

/// Everything that can go wrong in the trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A model name that is not in the zoo.
    #[error("unknown model `{name}`; known models: {}", known.join(", "))]
    UnknownModel {
        /// The name that was asked for.
        name: String,
        /// The names of the models in the zoo.
        known: Vec<String>,
    },

    /// A flat parameter (or velocity) vector of the wrong length.
    #[error("parameter vector has {got} values, but {what} needs {expected}")]
    ParamLength {
        /// What the vector was meant for (a model name, "velocity", ...).
        what: String,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },

    /// Two vectors that must have equal length do not.
    #[error("length mismatch at input {index}: expected {expected} values, got {got}")]
    LengthMismatch {
        /// Position of the offending input.
        index: usize,
        /// Length of the first input.
        expected: usize,
        /// Length of the offending input.
        got: usize,
    },

    /// A weighted average with no inputs.
    #[error("no pseudo-gradients to average")]
    NoGradients,

    /// A weighted average whose weights sum to zero.
    #[error("weighted average over a total weight of zero")]
    ZeroWeight,

    /// A training configuration that cannot be run.
    #[error("invalid training config: {0}")]
    InvalidConfig(String),

    /// Training produced a NaN or infinite loss.
    #[error("non-finite training loss {loss} at inner step {step}")]
    NonFiniteLoss {
        /// The inner step (starting at 1).
        step: u32,
        /// The loss value.
        loss: f32,
    },

    /// A package name `swarm pull` does not know.
    #[error("unknown package `{name}`; known packages: {}", known.join(", "))]
    UnknownPackage {
        /// The name that was asked for.
        name: String,
        /// The packages that can be pulled.
        known: Vec<String>,
    },

    /// A model's data or weights have not been pulled yet.
    #[error("`{package}` is not pulled (looked in {}); run `swarm pull {package}` first", root.display())]
    NotPulled {
        /// The package to pull.
        package: String,
        /// The packages root that was searched.
        root: PathBuf,
    },

    /// The built-in data set could not be prepared.
    #[error("dataset error: {0}")]
    Data(String),

    /// The tensor backend reported an error (e.g. while reading a tensor back).
    #[error("tensor backend error: {0}")]
    Backend(String),

    /// A parameter layout that does not fit the data it is meant to describe.
    #[error("invalid parameter layout: {0}")]
    InvalidLayout(String),

    /// File-system error while saving or loading a checkpoint.
    #[error("checkpoint I/O error at {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A checkpoint file that is torn, tampered with or otherwise unreadable.
    #[error("corrupt checkpoint {}: {reason}", path.display())]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}
