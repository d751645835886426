//! Integration tests and test fixtures (synthetic modules, simulated kernel).

pub mod fixtures;
pub mod rng;
pub mod simkernel;
pub mod synth;
pub mod tools;
