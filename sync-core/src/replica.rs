//! The client replica state machine (placeholder while the engine lands).
