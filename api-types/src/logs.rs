//! `GET /_nebula/v1/logs?since=&level=&limit=`: the gateway's recent log lines.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A log level. Ordered from the most severe: `Error < Warn < Info < Debug < Trace`, so
/// "this level or more severe" is `line.level <= wanted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something is wrong but was handled.
    Warn,
    /// What the gateway does (requests, start-up).
    Info,
    /// Detail for debugging.
    Debug,
    /// Even more detail.
    Trace,
}

impl LogLevel {
    /// Every level, the most severe first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`, as lines carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A level name that is none of `error`, `warn`, `info`, `debug`, `trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevel(pub String);

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "level must be error, warn, info, debug or trace, not '{}'",
            self.0
        )
    }
}

impl std::error::Error for UnknownLevel {}

impl FromStr for LogLevel {
    type Err = UnknownLevel;

    /// A level name in any case (`warn`, `WARN`); `warning` is `warn`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(UnknownLevel(s.to_owned())),
        }
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Position in the gateway's log since it started (1, 2, ...).
    pub seq: u64,
    /// When it was logged (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// Its level.
    pub level: LogLevel,
    /// The module that logged it, e.g. `nebula::request`.
    pub target: String,
    /// The message.
    pub message: String,
    /// The structured fields, by name.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One answer of the logs endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    /// Matching lines, oldest first.
    pub lines: Vec<LogLine>,
    /// Pass as `since` to get the lines after these.
    pub next: u64,
    /// Lines after `since` that were dropped from the ring before this read (0 without `since`).
    pub missed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_from_the_most_severe_and_read_in_any_case() {
        assert!(LogLevel::Error < LogLevel::Warn && LogLevel::Debug < LogLevel::Trace);
        assert_eq!("WARN".parse(), Ok(LogLevel::Warn));
        assert_eq!(" info".parse(), Ok(LogLevel::Info));
        assert!("loud".parse::<LogLevel>().is_err());
        for l in LogLevel::ALL {
            assert_eq!(l.as_str().parse(), Ok(l));
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, format!("\"{}\"", l.as_str()));
        }
    }
}
