//! Restarting HLS runs (seek far ahead, then back) leaves no pipeline, thread or temporary
//! file behind. A separate test binary, so no other test's pipelines run meanwhile.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nebula_media::hls::{AcquireRun, SegmentId};
use nebula_media::{EncoderChoice, MediaEngine, MediaError, Quality};

const WAIT: Duration = Duration::from_secs(60);

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ok()
}

#[test]
fn restarts_leave_nothing_behind_and_the_limit_is_kept() {
    let engine = MediaEngine::new(EncoderChoice::Auto).unwrap();
    let src = common::source("av360_long.mp4");
    let info = engine.probe(&src).unwrap();
    // One permit in all: a second session must be refused while the first one runs.
    let permits = Arc::new(std::sync::Mutex::new(1usize));
    let acquire: AcquireRun = {
        let permits = permits.clone();
        Arc::new(move || {
            let mut p = permits.lock().unwrap();
            if *p == 0 {
                return Err(MediaError::Busy(1));
            }
            *p -= 1;
            struct Permit(Arc<std::sync::Mutex<usize>>);
            impl Drop for Permit {
                fn drop(&mut self) {
                    *self.0.lock().unwrap() += 1;
                }
            }
            Ok(Box::new(Permit(permits.clone())) as Box<dyn Send>)
        })
    };

    // Warm-up so GStreamer's process-wide threads belong to the baseline.
    let warm = tempfile::tempdir().unwrap();
    let s = engine
        .hls_session(
            src.clone(),
            &info,
            Quality::P240,
            warm.path().into(),
            acquire.clone(),
        )
        .unwrap();
    s.get(SegmentId::Media(0), WAIT).unwrap();
    drop(s);
    assert!(wait_until(Duration::from_secs(2), || engine
        .active_pipelines()
        == 0));
    std::thread::sleep(Duration::from_millis(300));
    let baseline = thread_count();

    let dir = tempfile::tempdir().unwrap();
    let s = engine
        .hls_session(
            src.clone(),
            &info,
            Quality::P240,
            dir.path().into(),
            acquire.clone(),
        )
        .unwrap();
    let last = s.segment_count() - 1;
    for n in [last, 0, last - 1, 1] {
        s.get(SegmentId::Media(n), WAIT).unwrap();
        assert!(
            engine.active_pipelines() <= 2,
            "{}",
            engine.active_pipelines()
        );
    }
    // A refused permit starts nothing and says Busy (the gateway answers 503 SlowDown).
    let other = tempfile::tempdir().unwrap();
    let refuse: AcquireRun = Arc::new(|| Err(MediaError::Busy(0)));
    let s2 = engine
        .hls_session(
            src.clone(),
            &info,
            Quality::P360,
            other.path().into(),
            refuse,
        )
        .unwrap();
    assert!(matches!(
        s2.get(SegmentId::Media(0), WAIT),
        Err(MediaError::Busy(0))
    ));
    assert!(!s2.is_running());
    drop(s);
    drop(s2);
    assert!(
        wait_until(Duration::from_secs(2), || engine.active_pipelines() == 0),
        "{} pipelines still running",
        engine.active_pipelines()
    );
    assert!(wait_until(Duration::from_secs(2), || *permits
        .lock()
        .unwrap()
        == 1));
    let after = thread_count();
    assert!(
        wait_until(Duration::from_secs(2), || thread_count() <= baseline),
        "threads: baseline {baseline}, after {after}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
