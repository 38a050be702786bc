//! Dropping a stream mid-way stops its pipeline and frees its threads.
//!
//! A separate test binary, so no other test's pipelines run in this process while the
//! thread count is measured.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use nebula_media::{EncoderChoice, MediaEngine, Quality};

fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line in /proc/self/status")
}

/// Starts a stream, reads a few chunks (so it is mid-way), drops it, and returns how long
/// the pipeline took to reach NULL.
fn start_read_drop(engine: &MediaEngine, src: &std::path::Path) -> Duration {
    let mut stream = engine.start_stream(src, Quality::P240).unwrap();
    futures::executor::block_on(async {
        for _ in 0..3 {
            let chunk = stream.next().await.expect("stream ended early").unwrap();
            assert!(!chunk.is_empty());
        }
    });
    assert_eq!(engine.active_pipelines(), 1);
    let dropped = Instant::now();
    drop(stream);
    while engine.active_pipelines() > 0 {
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "pipeline still running 1 s after drop"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    dropped.elapsed()
}

/// Waits up to `limit` for the thread count to fall to `target`; returns the last count.
fn wait_threads(target: usize, limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        let now = thread_count();
        if now <= target || start.elapsed() > limit {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dropping_streams_stops_pipelines_and_frees_threads() {
    let src = common::source("av360_long.mp4");
    let engine = MediaEngine::new(EncoderChoice::Auto).unwrap();

    // Warm-up: the first run loads plugins and lets GStreamer/GLib create their
    // process-wide helper threads, which then belong to the baseline.
    start_read_drop(&engine, &src);
    std::thread::sleep(Duration::from_millis(300));
    let baseline = thread_count();

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        slowest = slowest.max(start_read_drop(&engine, &src));
    }
    let after = wait_threads(baseline, Duration::from_secs(1));
    assert!(
        after <= baseline,
        "threads: baseline {baseline}, after 20 dropped streams {after}"
    );
    eprintln!("baseline {baseline} threads, after {after}; slowest stop {slowest:?}");
}
