//! Diagnostics: modcore never prints; it hands [`Diag`]s to a sink the tool provides.

use std::fmt;

/// Message levels, most severe first (kmod's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Fatal,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Level {
    /// The word kmod prints: `FATAL`, `ERROR`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Fatal => "FATAL",
            Level::Error => "ERROR",
            Level::Warning => "WARNING",
            Level::Notice => "NOTICE",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One diagnostic message, rendered by the tool as `<prog>: <LEVEL>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub level: Level,
    pub message: String,
}

/// Where diagnostics go. Tools print them; tests collect them.
pub trait Sink {
    fn emit(&mut self, level: Level, message: String);
}

/// A sink that keeps every message (for tests and for deferred printing).
#[derive(Debug, Default, Clone)]
pub struct Collect(pub Vec<Diag>);

impl Sink for Collect {
    fn emit(&mut self, level: Level, message: String) {
        self.0.push(Diag { level, message });
    }
}

impl Collect {
    /// Pass every collected message on to `sink`, in order.
    pub fn replay(&self, sink: &mut dyn Sink) {
        for d in &self.0 {
            sink.emit(d.level, d.message.clone());
        }
    }

    /// Messages of one level.
    pub fn at(&self, level: Level) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |d| d.level == level)
            .map(|d| d.message.as_str())
    }
}

/// Render bytes for a message (lossy for non-UTF-8, which real trees never have).
pub fn show(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}
