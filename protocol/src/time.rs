//! Time as the state machine sees it.

/// Milliseconds on whatever clock drives the state machine (virtual in the
/// simulator, monotonic in the node).
pub type Time = u64;
