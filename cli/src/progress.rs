//! Progress bars (on stderr; indicatif hides them when stderr is not a terminal) and the
//! chunked body streams that drive them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Mutex;

/// Chunk size of streamed bodies: small enough for smooth bars and rate limiting.
const CHUNK: usize = 256 * 1024;

/// A transfer bar with bytes, speed and ETA.
pub fn bytes_bar(total: u64, msg: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:20!} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(msg.into());
    bar
}

/// A percentage bar for transcode jobs.
pub fn percent_bar(msg: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{msg:40!} [{bar:30.green/blue}] {pos:>3}%")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(msg.into());
    bar
}

/// A shared upload bandwidth limit (bytes per second) across parallel parts.
#[derive(Debug)]
pub struct RateLimit {
    rate: u64,
    state: Mutex<(Instant, u64)>,
}

impl RateLimit {
    /// A limit of `rate` bytes per second.
    pub fn new(rate: u64) -> Arc<Self> {
        Arc::new(RateLimit {
            rate: rate.max(1),
            state: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Waits until `n` more bytes fit under the limit.
    pub async fn take(&self, n: u64) {
        let due = {
            let mut s = self.state.lock().await;
            s.1 += n;
            s.0 + Duration::from_secs_f64(s.1 as f64 / self.rate as f64)
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

/// A request body streaming `data` in chunks, advancing `bar` (and honouring `limit`) as
/// the HTTP client pulls them.
pub fn body_stream(data: Bytes, bar: ProgressBar, limit: Option<Arc<RateLimit>>) -> reqwest::Body {
    let chunks: Vec<Bytes> = (0..data.len())
        .step_by(CHUNK)
        .map(|i| data.slice(i..(i + CHUNK).min(data.len())))
        .collect();
    let stream = futures::stream::unfold(
        (chunks.into_iter(), bar, limit),
        |(mut it, bar, limit)| async move {
            let chunk = it.next()?;
            if let Some(l) = &limit {
                l.take(chunk.len() as u64).await;
            }
            bar.inc(chunk.len() as u64);
            Some((Ok::<_, std::io::Error>(chunk), (it, bar, limit)))
        },
    );
    reqwest::Body::wrap_stream(stream)
}

/// Parses a rate like `20M`, `512k`, `1G` or a plain number of bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1024,
                'M' => 1024 * 1024,
                'G' => 1024 * 1024 * 1024,
                _ => return Err(format!("unknown unit in {s:?} (use K, M or G)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 20M"))?;
    if n <= 0.0 {
        return Err("the rate must be positive".into());
    }
    Ok((n * mult as f64) as u64)
}

/// `1h 2m`, `3m 4s`, `5.2s` for people.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h {}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("20M"), Ok(20 * 1024 * 1024));
        assert_eq!(parse_rate("512k"), Ok(512 * 1024));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert!(parse_rate("x").is_err());
    }
}
