//! Errors of the model worker.

use protocol::SpecError;
use protocol::codec::CodecError;
use trainer::TrainerError;

/// What went wrong in the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The model, its data or a checkpoint.
    #[error(transparent)]
    Trainer(#[from] TrainerError),
    /// The run spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Encoding a pseudo-gradient.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A state blob of the wrong size.
    #[error("state blob has {got} bytes, expected {expected}")]
    StateSize {
        /// Bytes received.
        got: usize,
        /// Bytes a state of this model has.
        expected: usize,
    },
    /// A state blob with NaN or infinite values.
    #[error("state blob holds non-finite values")]
    NonFiniteState,
    /// A blocking job panicked or was cancelled.
    #[error("worker job failed: {0}")]
    Job(String),
}
