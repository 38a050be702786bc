//! Recent log lines kept in memory for `GET /_nebula/v1/logs` and `nebula logs`.
//!
//! A `tracing` layer beside the stderr one copies every event that passes the log filter
//! (`RUST_LOG`) into a bounded ring: the newest [`MAX_LINES`] lines, at most [`MAX_BYTES`] of
//! text. Each line gets a sequence number, so a client follows the log by asking for the lines
//! after the last one it saw, and learns how many it missed when the ring moved on meanwhile.
//!
//! Secrets never reach the ring: fields whose names say they hold one are replaced, and the
//! values registered with [`LogRing::add_secret`] (the secret key, the database password) are
//! cut out of every message and field.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex, RwLock};

use nebula_api_types::logs::{LogLevel, LogLine, LogPage};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept at most.
pub const MAX_LINES: usize = 10_000;
/// Text kept at most (messages, targets and fields), in bytes.
pub const MAX_BYTES: usize = 8 << 20;
/// What replaces a secret.
const REDACTED: &str = "[redacted]";

/// The ring of recent lines.
#[derive(Debug, Default)]
pub struct LogRing {
    inner: Mutex<Ring>,
    secrets: RwLock<Vec<String>>,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    /// The sequence number of the last line pushed.
    last: u64,
}

static RING: LazyLock<LogRing> = LazyLock::new(LogRing::default);

/// The process's ring (the log is process-wide, like the `tracing` subscriber).
pub fn ring() -> &'static LogRing {
    &RING
}

/// The layer that feeds [`ring`]; add it to the subscriber beside the stderr layer.
pub fn layer() -> RingLayer {
    RingLayer { ring: ring() }
}

/// The API's name of a `tracing` level.
fn level_of(level: Level) -> LogLevel {
    if level == Level::ERROR {
        LogLevel::Error
    } else if level == Level::WARN {
        LogLevel::Warn
    } else if level == Level::INFO {
        LogLevel::Info
    } else if level == Level::DEBUG {
        LogLevel::Debug
    } else {
        LogLevel::Trace
    }
}

/// The password of a URL such as `postgres://user:password@host/db`, to keep it out of logs.
pub fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let userinfo = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (userinfo, _) = userinfo.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password).filter(|p| !p.is_empty())
}

fn approx_size(line: &LogLine) -> usize {
    let fields: usize = line
        .fields
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(16, str::len))
        .sum();
    64 + line.target.len() + line.message.len() + fields
}

/// Field names whose values are never kept.
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "authorization",
        "authkey",
        "auth_key",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
}

impl LogRing {
    /// Keeps `secret` out of every line logged from now on (an empty one is ignored).
    pub fn add_secret(&self, secret: &str) {
        if secret.len() >= 4 {
            self.secrets
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(secret.to_owned());
        }
    }

    fn scrub(&self, text: &mut String) {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        for s in secrets.iter() {
            if text.contains(s.as_str()) {
                *text = text.replace(s.as_str(), REDACTED);
            }
        }
    }

    fn push(&self, mut line: LogLine) {
        self.scrub(&mut line.message);
        for v in line.fields.values_mut() {
            if let serde_json::Value::String(s) = v {
                self.scrub(s);
            }
        }
        let size = approx_size(&line);
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.last += 1;
        line.seq = ring.last;
        ring.bytes += size;
        ring.lines.push_back(line);
        while ring.lines.len() > MAX_LINES || (ring.bytes > MAX_BYTES && ring.lines.len() > 1) {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes = ring.bytes.saturating_sub(approx_size(&old));
            }
        }
    }

    /// Lines at `level` or more severe. With `since`, the first `limit` of those logged after
    /// line `since` (to page forward or follow); without, the newest `limit`.
    pub fn query(&self, since: Option<u64>, level: LogLevel, limit: usize) -> LogPage {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = |l: &&LogLine| l.level <= level;
        let Some(since) = since else {
            let mut lines: Vec<LogLine> = ring
                .lines
                .iter()
                .rev()
                .filter(wanted)
                .take(limit)
                .cloned()
                .collect();
            lines.reverse();
            return LogPage {
                lines,
                next: ring.last,
                missed: 0,
            };
        };
        // A cursor beyond the last line comes from before a restart: start from the beginning.
        let since = if since > ring.last { 0 } else { since };
        let oldest = ring.lines.front().map_or(ring.last + 1, |l| l.seq);
        let missed = oldest.saturating_sub(since.saturating_add(1));
        // Lines are in sequence order: skip to the first one after `since`.
        let start = ring.lines.partition_point(|l| l.seq <= since);
        let mut lines = Vec::new();
        let mut next = since;
        for l in ring.lines.iter().skip(start) {
            if lines.len() == limit {
                break;
            }
            next = l.seq;
            if l.level <= level {
                lines.push(l.clone());
            }
        }
        if lines.len() < limit {
            // Everything after `since` was read (the filter may have passed over lines).
            next = next.max(ring.last);
        }
        LogPage {
            lines,
            next,
            missed,
        }
    }
}

/// Copies events into a [`LogRing`].
#[derive(Debug)]
pub struct RingLayer {
    ring: &'static LogRing,
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
    /// The `log` crate's target, for events bridged from `log` records.
    log_target: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name();
        if name == "message" {
            match value {
                serde_json::Value::String(s) => self.message = s,
                other => self.message = other.to_string(),
            }
        } else if name == "log.target" {
            self.log_target = value.as_str().map(str::to_owned);
        } else if name.starts_with("log.") {
            // The bridge's module path, file and line: noise here.
        } else if is_secret_name(name) {
            self.fields.insert(name.to_owned(), REDACTED.into());
        } else {
            self.fields.insert(name.to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, s.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&fmt).unwrap_or_default()
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut f = Fields::default();
        event.record(&mut f);
        self.ring.push(LogLine {
            seq: 0,
            time: now_rfc3339(),
            level: level_of(*meta.level()),
            target: f.log_target.unwrap_or_else(|| meta.target().to_owned()),
            message: f.message,
            fields: f.fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn logged(ring: &'static LogRing, f: impl FnOnce()) {
        let sub = tracing_subscriber::registry().with(RingLayer { ring });
        tracing::subscriber::with_default(sub, f);
    }

    fn leak() -> &'static LogRing {
        Box::leak(Box::default())
    }

    #[test]
    fn lines_carry_level_target_message_and_fields() {
        let ring = leak();
        logged(ring, || {
            tracing::info!(target: "nebula::request", method = "GET", status = 200u64, "request");
            tracing::warn!(error = %"disk full", "cannot write");
        });
        let page = ring.query(None, LogLevel::Trace, 10);
        assert_eq!(page.lines.len(), 2);
        let l = &page.lines[0];
        assert_eq!(
            (l.seq, l.level, l.target.as_str()),
            (1, LogLevel::Info, "nebula::request")
        );
        assert_eq!(l.message, "request");
        assert_eq!(l.fields["method"], "GET");
        assert_eq!(l.fields["status"], 200);
        assert_eq!(page.lines[1].fields["error"], "disk full");
        assert_eq!(page.next, 2);
        let warn = ring.query(None, LogLevel::Warn, 10);
        assert_eq!(warn.lines.len(), 1);
        assert_eq!(warn.lines[0].message, "cannot write");
    }

    #[test]
    fn since_pages_forward_and_reports_missed_lines() {
        let ring = leak();
        logged(ring, || {
            for i in 0..(MAX_LINES + 5) {
                tracing::info!(i, "line");
            }
        });
        // The 5 oldest lines were dropped.
        let page = ring.query(Some(0), LogLevel::Info, 3);
        assert_eq!(page.missed, 5);
        let seqs: Vec<u64> = page.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [6, 7, 8]);
        assert_eq!(page.next, 8);
        let page = ring.query(Some(page.next), LogLevel::Info, 2);
        assert_eq!(page.lines[0].seq, 9);
        assert_eq!(page.missed, 0);
        let tail = ring.query(None, LogLevel::Info, 2);
        let seqs: Vec<u64> = tail.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [MAX_LINES as u64 + 4, MAX_LINES as u64 + 5]);
        let end = ring.query(Some(tail.next), LogLevel::Info, 10);
        assert!(end.lines.is_empty());
        assert_eq!(end.next, tail.next);
    }

    #[test]
    fn a_filtered_follow_moves_past_lines_it_does_not_want() {
        let ring = leak();
        logged(ring, || {
            tracing::info!("a");
            tracing::info!("b");
        });
        let page = ring.query(Some(0), LogLevel::Warn, 10);
        assert!(page.lines.is_empty());
        assert_eq!(page.next, 2);
    }

    #[test]
    fn database_passwords() {
        assert_eq!(url_password("postgres://nebula:pw@db:5432/n"), Some("pw"));
        assert_eq!(url_password("postgres://nebula:p@ss@db/n"), Some("p@ss"));
        assert_eq!(url_password("postgres://nebula@db/n"), None);
        assert_eq!(url_password("sqlite:/data/catalog.sqlite"), None);
    }

    #[test]
    fn secrets_are_kept_out() {
        let ring = leak();
        ring.add_secret("s3cr3t-VALUE-123");
        logged(ring, || {
            tracing::info!(secret_key = "plain", key = "photos/a.jpg", "x");
            tracing::warn!(
                url = "postgres://u:s3cr3t-VALUE-123@db/n",
                "cannot connect with s3cr3t-VALUE-123"
            );
        });
        let page = ring.query(None, LogLevel::Trace, 10);
        let text = serde_json::to_string(&page).unwrap();
        assert!(!text.contains("s3cr3t-VALUE-123"), "{text}");
        assert!(!text.contains("plain"), "{text}");
        assert_eq!(page.lines[0].fields["key"], "photos/a.jpg");
        assert_eq!(page.lines[1].message, "cannot connect with [redacted]");
    }
}
