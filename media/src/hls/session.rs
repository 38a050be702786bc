//! One quality of one source: segment files produced on demand by a restartable pipeline.
//!
//! Rules (Jellyfin's, tightened; see the wave-2 notes):
//! - a segment whose file exists is served from it;
//! - a request at most [`WAIT_AHEAD`] segments past the running pipeline's newest segment
//!   waits for it (the pipeline gets there sooner than a restart would);
//! - anything else (nothing running, far ahead, behind the newest segment written but
//!   missing) restarts the pipeline at that segment: the old run stops within about 100 ms
//!   (`run.rs`), the new one seeks;
//! - a run keeps going at most [`MAX_AHEAD`] segments past the newest request and stops
//!   after [`IDLE_STOP`] without requests, or at the end of the source.
//!
//! Exactly one run per session at a time, so one quality's segments are never produced by
//! two pipelines at once; the caller's [`AcquireRun`] limits runs across sessions. Across
//! processes sharing the folder, a run claims each segment before producing it (`claims.rs`):
//! a request for a segment another process claimed waits for its file, and a run whose next
//! segment another process claimed stops there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::run::{self, Cut, RunSink, RunSpec};
use crate::MediaError;
use crate::claims::{CLAIM_POLL, Claim, Claimer};
use crate::pipeline::Settings;

/// A request this close past the newest produced segment waits instead of restarting.
/// At 3-5x realtime one segment takes 0.6-1 s to encode; a restart costs a pipeline start
/// plus a decode from the previous source keyframe, about the same.
const WAIT_AHEAD: u64 = 2;
/// A run produces at most this many segments past the newest request (about 16 s).
const MAX_AHEAD: u64 = 5;
/// A run blocked ahead of its viewer stops after this long without requests.
const IDLE_STOP: Duration = Duration::from_secs(30);

/// Which segment of a media playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentId {
    /// The init segment (`EXT-X-MAP`): `ftyp` and `moov`.
    Init,
    /// Media segment N (`moof`/`mdat` pairs), covering `[N, N+1) × SEGMENT_DURATION`.
    Media(u64),
}

impl SegmentId {
    /// File name inside the session folder.
    pub fn file_name(self) -> String {
        match self {
            SegmentId::Init => "init.mp4".to_string(),
            SegmentId::Media(n) => format!("{n}.m4s"),
        }
    }
}

/// Held by a running pipeline, dropped when it stops (e.g. a semaphore permit).
pub type RunPermit = Box<dyn Send>;
/// Asked before a session starts a pipeline; an error (normally [`MediaError::Busy`]) is
/// returned to the request instead of starting it.
pub type AcquireRun = Arc<dyn Fn() -> Result<RunPermit, MediaError> + Send + Sync>;

/// Segments of one source at one quality, produced on demand into a folder.
///
/// [`HlsSession::get`] blocks (pipeline start, waiting for a segment): call it from a
/// blocking thread. Dropping the session stops its pipeline.
pub struct HlsSession {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsSession")
            .field("src", &self.shared.src)
            .field("dir", &self.shared.dir)
            .field("segments", &self.shared.count)
            .finish_non_exhaustive()
    }
}

struct Shared {
    settings: Settings,
    /// Where pipelines read the source (for an open file, its `/proc/self/fd` link).
    src: PathBuf,
    /// Keeps an open source file (and so `src`) valid while the session lives.
    _source: Box<dyn Send + Sync>,
    dir: PathBuf,
    count: u64,
    audio: bool,
    active: Arc<AtomicUsize>,
    acquire: AcquireRun,
    claimer: Claimer,
    /// Names this session's segments among the claims of every process.
    claim_prefix: String,
    state: Mutex<State>,
    cv: Condvar,
}

struct State {
    run: Option<Run>,
    next_id: u64,
    /// Newest media segment asked for.
    wanted: u64,
    last_request: Instant,
    /// The init segment, once a run produced it: every run's is the same, so one evicted
    /// from the folder is written again from here instead of restarting a pipeline.
    init: Option<Arc<Vec<u8>>>,
}

struct Run {
    id: u64,
    /// First segment this run has not finished yet.
    next: u64,
    ended: bool,
    error: Option<String>,
    permit: Option<RunPermit>,
    /// The claim of the segment being produced.
    claim: Option<Claim>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl HlsSession {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: Settings,
        src: PathBuf,
        source: Box<dyn Send + Sync>,
        duration: Duration,
        has_audio: bool,
        dir: PathBuf,
        active: Arc<AtomicUsize>,
        acquire: AcquireRun,
    ) -> Result<Self, MediaError> {
        std::fs::create_dir_all(&dir)?;
        Ok(HlsSession {
            shared: Arc::new(Shared {
                audio: has_audio && settings.aac.is_some(),
                settings,
                src,
                _source: source,
                dir,
                count: super::segment_count(duration),
                active,
                acquire,
                claimer: Claimer::default(),
                claim_prefix: String::new(),
                state: Mutex::new(State {
                    run: None,
                    next_id: 1,
                    wanted: 0,
                    init: None,
                    last_request: Instant::now(),
                }),
                cv: Condvar::new(),
            }),
        })
    }

    /// Makes this (new) session claim its segments through `claimer`, named `prefix/N`.
    pub(crate) fn set_claims(&mut self, claimer: Claimer, prefix: String) {
        let shared = Arc::get_mut(&mut self.shared).expect("set on a new session");
        shared.claimer = claimer;
        shared.claim_prefix = prefix;
    }

    /// Number of media segments.
    pub fn segment_count(&self) -> u64 {
        self.shared.count
    }

    /// Where the file of `id` is (or will be).
    pub fn path(&self, id: SegmentId) -> PathBuf {
        self.shared.dir.join(id.file_name())
    }

    /// Whether a pipeline is running for this session.
    pub fn is_running(&self) -> bool {
        let st = self.shared.lock();
        st.run.as_ref().is_some_and(|r| !r.ended)
    }

    /// Whether the running pipeline is parked [`MAX_AHEAD`] segments ahead of its viewer,
    /// waiting for requests: the cheapest run to stop when another session needs its slot.
    pub fn is_parked(&self) -> bool {
        let st = self.shared.lock();
        st.run
            .as_ref()
            .is_some_and(|r| !r.ended && r.next > st.wanted + MAX_AHEAD)
    }

    /// How long since the last [`HlsSession::get`], for dropping idle sessions.
    pub fn idle_for(&self) -> Duration {
        self.shared.lock().last_request.elapsed()
    }

    /// The file of segment `id`, produced first if needed. Blocks up to `timeout`.
    ///
    /// Errors: [`MediaError::NoSuchSegment`] past the end, `AcquireRun`'s error when a
    /// pipeline must start and it refuses, [`MediaError::Timeout`], or the
    /// pipeline's own error.
    pub fn get(&self, id: SegmentId, timeout: Duration) -> Result<PathBuf, MediaError> {
        let sh = &self.shared;
        if let SegmentId::Media(n) = id
            && n >= sh.count
        {
            return Err(MediaError::NoSuchSegment(n));
        }
        let path = self.path(id);
        let deadline = Instant::now() + timeout;
        let mut st = sh.lock();
        st.last_request = Instant::now();
        if let SegmentId::Media(n) = id {
            st.wanted = n;
            // A run waiting for its viewer may go on now.
            sh.cv.notify_all();
        }
        let mut started: Option<u64> = None;
        // Set once another process was found producing the segment.
        let mut elsewhere = false;
        loop {
            if path.exists() {
                return Ok(path);
            }
            if let (SegmentId::Init, Some(init)) = (id, &st.init) {
                write_new(&sh.dir, id, init)?;
                return Ok(path);
            }
            let restart_at = match (&st.run, id) {
                (Some(run), _) if run.ended => {
                    if started == Some(run.id) {
                        return Err(run_failure(run, id));
                    }
                    Some(start_of(id))
                }
                // Any run produces the init segment first.
                (Some(_), SegmentId::Init) => None,
                // Behind the newest segment written (before the run's start, or written
                // and since evicted), or too far ahead: restart there.
                (Some(run), SegmentId::Media(n)) => {
                    (n < run.next || n > run.next + WAIT_AHEAD).then_some(n)
                }
                (None, _) => Some(start_of(id)),
            };
            if let Some(start) = restart_at {
                if started.is_some() {
                    // Our own run moved on without this segment (a newer request took
                    // the pipeline elsewhere): try again only once.
                    return Err(MediaError::Pipeline(format!(
                        "segment {} was not produced",
                        id.file_name()
                    )));
                }
                match sh.claim(start) {
                    Some(claim) => started = Some(self.start_run(&mut st, start, claim)?),
                    // Asked again at every turn: a holder that died loses its claim.
                    None if !elsewhere => {
                        elsewhere = true;
                        sh.claimer.waited();
                    }
                    None => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(MediaError::Timeout(format!(
                    "segment {} not ready within {timeout:?}",
                    id.file_name()
                )));
            }
            let tick = if elsewhere {
                CLAIM_POLL
            } else {
                Duration::from_secs(1)
            };
            st = sh.cv.wait_timeout(st, left.min(tick)).unwrap().0;
        }
    }

    /// Stops the running pipeline, if any (it exits within about 100 ms).
    pub fn stop(&self) {
        let mut st = self.shared.lock();
        st.run = None;
        self.shared.cv.notify_all();
    }

    /// Replaces the current run by a new one starting at segment `start`.
    fn start_run(
        &self,
        st: &mut MutexGuard<'_, State>,
        start: u64,
        claim: Claim,
    ) -> Result<u64, MediaError> {
        let sh = &self.shared;
        // A restart takes over the old run's permit: the old pipeline is gone within
        // ~100 ms, and a seek must not be refused for the viewer's own previous run.
        let inherited = st.run.as_mut().and_then(|r| r.permit.take());
        let permit = match inherited {
            Some(p) => p,
            None => (sh.acquire)()?,
        };
        let id = st.next_id;
        st.next_id += 1;
        st.run = Some(Run {
            id,
            next: start,
            ended: false,
            error: None,
            permit: Some(permit),
            claim: Some(claim),
        });
        let shared = sh.clone();
        let spawned = std::thread::Builder::new()
            .name("nebula-hls".into())
            .spawn(move || run_thread(shared, id, start));
        if let Err(err) = spawned {
            st.run = None;
            return Err(err.into());
        }
        sh.claimer
            .produced
            .hls_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(src = %sh.src.display(), start, id, "hls run started");
        Ok(id)
    }
}

impl Drop for HlsSession {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_of(id: SegmentId) -> u64 {
    match id {
        SegmentId::Init => 0,
        SegmentId::Media(n) => n,
    }
}

fn run_failure(run: &Run, id: SegmentId) -> MediaError {
    match &run.error {
        Some(msg) => MediaError::Pipeline(msg.clone()),
        None => MediaError::Pipeline(format!(
            "pipeline ended without producing {}",
            id.file_name()
        )),
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn is_current(&self, st: &State, id: u64) -> bool {
        st.run.as_ref().is_some_and(|r| r.id == id)
    }

    /// Claims media segment `n` (the init segment goes with segment 0) for this process.
    fn claim(&self, n: u64) -> Option<Claim> {
        self.claimer.claim(&format!("{}/{n}", self.claim_prefix))
    }
}

fn run_thread(sh: Arc<Shared>, id: u64, start: u64) {
    let result = produce(&sh, id, start);
    if let Err(err) = &result {
        tracing::warn!(src = %sh.src.display(), start, %err, "hls run failed");
    }
    let mut st = sh.lock();
    if let Some(run) = st.run.as_mut().filter(|r| r.id == id) {
        run.ended = true;
        run.permit = None;
        run.claim = None;
        run.error = result.err().map(|e| e.to_string());
    }
    sh.cv.notify_all();
}

/// Runs one pipeline from segment `start` until the end, a restart, an idle stop or an error.
fn produce(sh: &Shared, id: u64, start: u64) -> Result<(), MediaError> {
    let spec = RunSpec {
        settings: sh.settings,
        src: &sh.src,
        count: sh.count,
        audio: sh.audio,
        start,
        active: sh.active.clone(),
    };
    run::run(spec, &mut SegmentFiles { sh, id })?;
    Ok(())
}

/// A session's run: every segment in its own file, then a wait for the viewer.
struct SegmentFiles<'a> {
    sh: &'a Shared,
    id: u64,
}

impl RunSink for SegmentFiles<'_> {
    fn keep_going(&mut self, _encoded_ns: u64) -> bool {
        self.sh.is_current(&self.sh.lock(), self.id)
    }

    fn cut(&mut self, cut: Cut) -> Result<bool, MediaError> {
        let sh = self.sh;
        match cut {
            Cut::Init(bytes) => {
                write_new(&sh.dir, SegmentId::Init, &bytes)?;
                sh.lock().init = Some(Arc::new(bytes));
                sh.cv.notify_all();
                Ok(true)
            }
            Cut::Segment(n, bytes) => {
                write_new(&sh.dir, SegmentId::Media(n), &bytes)?;
                if let Some(run) = sh.lock().run.as_mut().filter(|r| r.id == self.id) {
                    run.claim = None;
                }
                if !wait_for_viewer(sh, self.id, n)? {
                    return Ok(false);
                }
                if n + 1 >= sh.count {
                    return Ok(true);
                }
                // Another process producing the next segment goes on from there.
                let Some(claim) = sh.claim(n + 1) else {
                    return Ok(false);
                };
                let mut st = sh.lock();
                match st.run.as_mut().filter(|r| r.id == self.id) {
                    Some(run) => {
                        run.claim = Some(claim);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
        }
    }
}

/// Records that segment `n` is done, then blocks while the run is [`MAX_AHEAD`] past the
/// viewer. `false`: stop the run (replaced, dropped, or idle).
fn wait_for_viewer(sh: &Shared, id: u64, n: u64) -> Result<bool, MediaError> {
    let mut st = sh.lock();
    if let Some(run) = st.run.as_mut().filter(|r| r.id == id) {
        run.next = run.next.max(n + 1);
    }
    sh.cv.notify_all();
    loop {
        if !sh.is_current(&st, id) {
            return Ok(false);
        }
        if n < st.wanted + MAX_AHEAD {
            return Ok(true);
        }
        if st.last_request.elapsed() > IDLE_STOP {
            tracing::debug!(src = %sh.src.display(), n, "hls run idle; stopping");
            return Ok(false);
        }
        st = sh.cv.wait_timeout(st, Duration::from_secs(1)).unwrap().0;
    }
}

/// Writes a segment file unless it exists: temporary file, fsync, rename, so a reader
/// never sees a partial segment and a crash leaves no torn one.
pub(crate) fn write_new(dir: &Path, id: SegmentId, bytes: &[u8]) -> Result<(), MediaError> {
    let dest = dir.join(id.file_name());
    if dest.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        id.file_name(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        // The folder may have been removed under a running session (object replaced).
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}
