//! Workspace-level benches and examples.
