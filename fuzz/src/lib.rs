//! Helpers shared by the fuzz targets.

use modcore::diag::{Level, Sink};

/// A diagnostics sink that renders and drops every message (rendering is part of the
/// code under test: a message must never panic either).
#[derive(Default)]
pub struct Discard {
    pub count: usize,
}

impl Sink for Discard {
    fn emit(&mut self, level: Level, message: String) {
        let _ = (level.as_str(), message.len());
        self.count += 1;
    }
}

/// Splits a fuzz input into a short selector part and the rest: the first byte gives the
/// length of the head (capped at the input length).
pub fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let n = usize::from(n).min(rest.len());
    rest.split_at(n)
}
