//! Fuzz target bodies (see `targets`), shared with the regression test that replays
//! saved inputs.

pub mod targets;
