//! The media service: the engine, the renditions store and the transcode slots, with what
//! the gateway asks of them (a rendition for a request, a rendition made ahead by a job, a
//! poster, HLS playlists' facts and segments).

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;

use crate::claims::{CLAIM_POLL, Claimer, Claims, Produced};
use crate::hls::{self, AcquireRun, CopyIndex, RunPermit, SegmentId, Sessions, Variant};
use crate::live::{Flights, LiveRendition, Step};
use crate::poster::POSTER_ENCODER;
use crate::renditions::{Finished, ObjectRef, RenditionInfo, RenditionStore};
use crate::{
    CancelFlag, Encoder, FileOutcome, MediaEngine, MediaError, MediaInfo, Poster, Quality,
};

/// How long a segment request waits for its segment (pipeline start and encode) before
/// [`MediaError::Timeout`]; a cold 1080p segment takes a few seconds on 2 cores.
pub const SEGMENT_WAIT: Duration = Duration::from_secs(30);

/// An HLS segment (or init segment): a file of its own, or a range of a background job's
/// rendition, opened for reading.
#[derive(Debug)]
pub struct HlsSegment {
    /// The file.
    pub file: File,
    /// Where the segment starts in it.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written.
    pub modified: SystemTime,
    /// `video/mp4` for the init segment, `video/iso.segment` for media segments.
    pub content_type: &'static str,
}

/// A segment file served whole; serving it counts as a use for eviction (its mtime), while
/// its birth time keeps naming its bytes (ETag, Last-Modified).
fn segment_file(file: File, id: SegmentId) -> Result<HlsSegment, MediaError> {
    let _ = file.set_modified(SystemTime::now());
    let md = file.metadata()?;
    Ok(HlsSegment {
        offset: 0,
        size: md.len(),
        modified: written_at(&md)?,
        file,
        content_type: segment_content_type(id),
    })
}

/// When a segment's file was written: its birth time. Its modification time is not it, since
/// serving a file moves that forward (the eviction order), and the segment's ETag and
/// Last-Modified must not change while its bytes do not. Filesystems without a birth time
/// fall back to the modification time.
fn written_at(md: &std::fs::Metadata) -> std::io::Result<SystemTime> {
    md.created().or_else(|_| md.modified())
}

fn segment_content_type(id: SegmentId) -> &'static str {
    match id {
        SegmentId::Init => hls::INIT_CONTENT_TYPE,
        SegmentId::Media(_) => hls::SEGMENT_CONTENT_TYPE,
    }
}

/// How long a request waits for the same rendition being produced by another request.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(300);

/// Posters taken at once. A poster is a short pipeline (a fraction of a second); posters
/// have their own slots so a page full of them never takes a transcode's, and wait for a
/// slot instead of being refused.
const POSTER_SLOTS: usize = 2;

/// How long a poster request waits for another process taking the same poster.
const POSTER_WAIT: Duration = Duration::from_secs(30);

/// A rendition for a request.
#[derive(Debug)]
pub enum Rendition {
    /// Finished and kept in the store: a plain file, served with byte ranges.
    Finished(Finished),
    /// Being produced for this request: a stream of fragmented MP4, copied into the store.
    Live(LiveRendition),
}

impl Rendition {
    /// The size and encoder of the video.
    pub fn info(&self) -> &RenditionInfo {
        match self {
            Rendition::Finished(f) => &f.info,
            Rendition::Live(l) => l.info(),
        }
    }
}

/// A rendition a job produced and installed.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Where it is kept (the file `?quality=` serves).
    pub path: PathBuf,
    /// How the transcode went.
    pub outcome: FileOutcome,
}

/// Live transcodes, their concurrency limit and the renditions store.
#[derive(Debug)]
pub struct MediaService {
    engine: MediaEngine,
    store: RenditionStore,
    slots: Arc<Semaphore>,
    poster_slots: Semaphore,
    max_transcodes: usize,
    flights: Arc<Flights>,
    sessions: Arc<Sessions>,
    claimer: Claimer,
}

impl MediaService {
    /// A media service keeping renditions in `dir` (created; partial ones from a crash are
    /// removed) under `cache_limit` bytes, with at most `max_transcodes` live at once.
    pub fn new(
        engine: MediaEngine,
        dir: PathBuf,
        max_transcodes: usize,
        cache_limit: u64,
    ) -> std::io::Result<Self> {
        let store = RenditionStore::open(dir, cache_limit, engine.encoder())?;
        let max_transcodes = max_transcodes.max(1);
        Ok(MediaService {
            engine,
            store,
            slots: Arc::new(Semaphore::new(max_transcodes)),
            poster_slots: Semaphore::new(POSTER_SLOTS),
            max_transcodes,
            flights: Arc::new(Flights::default()),
            sessions: Arc::new(Sessions::default()),
            claimer: Claimer::default(),
        })
    }

    /// Makes the service claim every rendition, poster and HLS segment through `claims`
    /// before producing it, for processes sharing the renditions folder (see `claims.rs`).
    pub fn with_claims(mut self, claims: Arc<dyn Claims>) -> Self {
        self.claimer = Claimer::new(Some(claims));
        self
    }

    /// What this process produced, and how often it waited for another's work.
    pub fn produced(&self) -> &Produced {
        &self.claimer.produced
    }

    /// The encoder in use.
    pub fn encoder(&self) -> Encoder {
        self.engine.encoder()
    }

    /// The media engine (probing, file transcodes).
    pub fn engine(&self) -> &MediaEngine {
        &self.engine
    }

    /// The renditions store.
    pub fn renditions(&self) -> &RenditionStore {
        &self.store
    }

    /// The most live transcodes at once.
    pub fn max_transcodes(&self) -> usize {
        self.max_transcodes
    }

    /// Drops every rendition of `bucket/key` (it was replaced or deleted), and stops its
    /// HLS sessions.
    pub fn invalidate(&self, bucket: &str, key: &str) {
        self.sessions.remove_object(bucket, key);
        self.store.invalidate(bucket, key);
    }

    /// What HLS playlists need of `object` (whose bytes `source` holds): its probe result,
    /// kept per ETag. The source is handed back for [`MediaService::hls_segment`].
    ///
    /// Errors: [`MediaError::NotVideo`] for a source without video or duration, and the
    /// probe's errors.
    pub async fn hls_info(
        &self,
        object: ObjectRef<'_>,
        source: File,
    ) -> Result<(MediaInfo, File), MediaError> {
        let info = match self.sessions.info(object.bucket, object.key, object.etag) {
            Some(info) => info,
            None => {
                let engine = self.engine.clone();
                let (info, source) = crate::spawn_blocking(move || {
                    let info = engine.probe(&source)?;
                    Ok((info, source))
                })
                .await?;
                self.sessions
                    .set_info(object.bucket, object.key, object.etag, info.clone());
                return Self::checked(info).map(|i| (i, source));
            }
        };
        Self::checked(info).map(|i| (i, source))
    }

    fn checked(info: MediaInfo) -> Result<MediaInfo, MediaError> {
        if !info.has_video {
            return Err(MediaError::NotVideo("no video stream".into()));
        }
        if info.duration.is_none() {
            return Err(MediaError::NotVideo(
                "unknown duration: cannot list segments".into(),
            ));
        }
        Ok(info)
    }

    /// The master playlist's variants for a source; `copy` adds the `original` entry.
    pub fn hls_ladder(&self, info: &MediaInfo, copy: Option<&CopyIndex>) -> Vec<Variant> {
        hls::ladder(
            info,
            self.engine.encoder(),
            self.engine.audio_encoder().is_some(),
            copy,
        )
    }

    /// The stream-copy index of `object` (whose bytes `source` holds, probed as `info`),
    /// kept per ETag: `None` when the source cannot be stream-copied for browsers. The
    /// first call for a copyable source reads the whole file once (a demux pass, no
    /// decoding). The source is handed back.
    pub async fn hls_copy(
        &self,
        object: ObjectRef<'_>,
        source: File,
        info: &MediaInfo,
    ) -> Result<(Option<Arc<CopyIndex>>, File), MediaError> {
        if !hls::may_copy(info) {
            return Ok((None, source));
        }
        if let Some(known) = self.sessions.copy(object.bucket, object.key, object.etag) {
            return Ok((known, source));
        }
        let (engine, info) = (self.engine.clone(), info.clone());
        let (index, source) = crate::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let index = engine.copy_index(&source, &info)?.map(Arc::new);
            tracing::debug!(elapsed = ?started.elapsed(), copyable = index.is_some(), "hls copy index");
            Ok((index, source))
        })
        .await?;
        self.sessions
            .set_copy(object.bucket, object.key, object.etag, index.clone());
        Ok((index, source))
    }

    /// Segment `id` of the stream copy of `object` (whose bytes `source` holds, indexed as
    /// `index`): its file in the renditions store, cut first if needed. Cutting is a demux
    /// run reading one segment's samples, with no encoder, so it takes no transcode slot;
    /// two requests racing for the same segment both cut it and the first file stays.
    ///
    /// Errors: [`MediaError::NoSuchSegment`] past the end, and the demux run's errors.
    pub async fn hls_copy_segment(
        &self,
        object: ObjectRef<'_>,
        source: File,
        index: Arc<CopyIndex>,
        id: SegmentId,
    ) -> Result<HlsSegment, MediaError> {
        let dir = self.store.hls_copy_dir(object);
        let (engine, store) = (self.engine.clone(), self.store.clone());
        crate::spawn_blocking(move || {
            let path = dir.join(id.file_name());
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let started = std::time::Instant::now();
                    let bytes = engine.copy_segment(&source, &index, id)?;
                    tracing::debug!(segment = %id.file_name(), size = bytes.len(), elapsed = ?started.elapsed(), "hls copy segment cut");
                    hls::write_new(&dir, id, &bytes)?;
                    let file = File::open(&path)?;
                    store.evict();
                    file
                }
                Err(e) => return Err(e.into()),
            };
            segment_file(file, id)
        })
        .await
    }

    /// Number of HLS sessions kept (each holds its source open; a pipeline at most).
    pub fn hls_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Segment `id` of `object` (whose bytes `source` holds, probed as `info`) at `quality`:
    /// its range of the background job's rendition of that quality if one finished, else
    /// its file in the renditions store, produced first if needed by the session of that
    /// object and quality (one per ETag and quality, so one pipeline at most). Starting a
    /// pipeline takes a transcode slot.
    ///
    /// Errors: [`MediaError::Busy`] when a pipeline must start and every slot is taken (a
    /// run parked ahead of its viewer is stopped to free one first),
    /// [`MediaError::NoSuchSegment`] past the end, [`MediaError::Timeout`] after
    /// [`SEGMENT_WAIT`], and the pipeline's errors.
    pub async fn hls_segment(
        &self,
        object: ObjectRef<'_>,
        source: File,
        info: &MediaInfo,
        quality: Quality,
        id: SegmentId,
    ) -> Result<HlsSegment, MediaError> {
        let (store, name) = (self.store.clone(), self.store.name(object, quality));
        let from_job = crate::spawn_blocking(move || {
            let Some(f) = store.open_finished(&name)? else {
                return Ok(None);
            };
            let Some((offset, size)) = f.info.segments.as_ref().and_then(|s| s.range(id)) else {
                return Ok(None);
            };
            let modified = written_at(&f.file.metadata()?)?;
            Ok(Some(HlsSegment {
                file: f.file,
                offset,
                size,
                modified,
                content_type: segment_content_type(id),
            }))
        })
        .await?;
        if let Some(seg) = from_job {
            return Ok(seg);
        }
        let dir = self.store.hls_dir(object, quality);
        let session = self
            .sessions
            .get_or_make(object.bucket, object.key, &dir, || {
                let mut session = self.engine.hls_session(
                    source,
                    info,
                    quality,
                    dir.clone(),
                    self.acquire_run(),
                )?;
                let folder = dir.file_name().unwrap_or_default().to_string_lossy();
                session.set_claims(self.claimer.clone(), format!("hls:{folder}"));
                Ok(session)
            })?;
        let (store, sessions) = (self.store.clone(), self.sessions.clone());
        crate::spawn_blocking(move || {
            let fresh = !session.path(id).exists();
            // A segment evicted between `get` and the open is produced again, once.
            let mut tries = 0;
            let file = loop {
                let path = match session.get(id, SEGMENT_WAIT) {
                    // A run parked ahead of a viewer who went away (or switched quality)
                    // gives its slot to this one, who is waiting now.
                    Err(MediaError::Busy(_)) if sessions.stop_parked(&dir) => {
                        session.get(id, SEGMENT_WAIT)?
                    }
                    other => other?,
                };
                match File::open(&path) {
                    Ok(f) => break f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries == 0 => {
                        tries += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let segment = segment_file(file, id)?;
            if fresh {
                store.evict();
            }
            Ok(segment)
        })
        .await
    }

    /// A permit of the transcode slots for each HLS pipeline start.
    fn acquire_run(&self) -> AcquireRun {
        let (slots, max) = (self.slots.clone(), self.max_transcodes);
        Arc::new(move || {
            slots
                .clone()
                .try_acquire_owned()
                .map(|p| Box::new(p) as RunPermit)
                .map_err(|_| MediaError::Busy(max))
        })
    }

    /// The rendition of `object` (whose bytes `source` holds) at `quality`: the finished
    /// file if there is one, else a live transcode. While a rendition is being produced,
    /// other requests for it wait (up to [`FOLLOW_WAIT`]) and get the finished file: one
    /// pipeline per rendition.
    ///
    /// Errors: [`MediaError::Busy`] when every transcode slot is taken (an HLS run parked
    /// ahead of its viewer is stopped to free one first), [`MediaError::StillProducing`] when the wait runs out, and the engine's errors
    /// ([`MediaError::NotVideo`], ...) from starting the pipeline.
    pub async fn rendition(
        self: &Arc<Self>,
        object: ObjectRef<'_>,
        source: File,
        quality: Quality,
    ) -> Result<Rendition, MediaError> {
        let name = self.store.name(object, quality);
        let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
        let mut source = Some(source);
        let mut elsewhere = false;
        loop {
            let (store, n) = (self.store.clone(), name.clone());
            if let Some(f) = crate::spawn_blocking(move || Ok(store.open_finished(&n)?)).await? {
                return Ok(Rendition::Finished(f));
            }
            let mut rx = match self.flights.step(&name, &self.slots) {
                Step::Wait(rx) => rx,
                // An HLS run parked ahead of a viewer who went away gives its slot up.
                Step::Busy if self.sessions.stop_parked(Path::new("")) => continue,
                Step::Busy => return Err(MediaError::Busy(self.max_transcodes)),
                Step::Produce(producer, slot) => {
                    let (claimer, store, n) =
                        (self.claimer.clone(), self.store.clone(), name.clone());
                    let claimed = crate::spawn_blocking(move || {
                        let Some(claim) = claimer.claim(&format!("rendition:{n}")) else {
                            return Ok(Err(()));
                        };
                        // The holder may have installed it just before giving its claim up.
                        Ok(Ok((claim, store.open_finished(&n)?)))
                    })
                    .await?;
                    let claim = match claimed {
                        Ok((_, Some(f))) => return Ok(Rendition::Finished(f)),
                        Ok((claim, None)) => claim,
                        // Another process produces it: wait for its file (the local
                        // requests behind this one do the same), asking again meanwhile.
                        Err(()) => {
                            drop((producer, slot));
                            if !elsewhere {
                                elsewhere = true;
                                self.claimer.waited();
                            }
                            if tokio::time::Instant::now() + CLAIM_POLL > deadline {
                                return Err(MediaError::StillProducing);
                            }
                            tokio::time::sleep(CLAIM_POLL).await;
                            continue;
                        }
                    };
                    let source = source
                        .take()
                        .expect("the source is taken once, by the single producer");
                    // An error drops the producer: the waiting requests try themselves.
                    let stream = self.engine.start_stream_async(source, quality).await?;
                    tracing::info!(rendition = %name, quality = quality.height(), width = stream.width, height = stream.height, encoder = stream.encoder.element_name(), "live transcode started");
                    self.claimer
                        .produced
                        .live_transcodes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let live =
                        LiveRendition::new(stream, self.store.clone(), name, producer, slot, claim);
                    return Ok(Rendition::Live(live));
                }
            };
            if tokio::time::timeout_at(deadline, rx.wait_for(|done| *done))
                .await
                .is_err()
            {
                return Err(MediaError::StillProducing);
            }
        }
    }

    /// Produces the rendition of `object` (whose bytes `source` holds) at `quality` ahead of
    /// the first request, and installs it. Blocking for the whole transcode; `progress` and
    /// `cancel` are [`MediaEngine::transcode_to_file`]'s. `label` names the file in the
    /// making (`<label>.<random>.part`): not after the object, so invalidating the object's
    /// renditions never removes it; a crash leaves it for the next start to remove.
    pub fn produce(
        &self,
        object: ObjectRef<'_>,
        source: &File,
        quality: Quality,
        label: &str,
        progress: impl Fn(u8),
        cancel: &CancelFlag,
    ) -> Result<Installed, MediaError> {
        let name = self.store.name(object, quality);
        let part = self.store.part_path(label);
        let outcome = self
            .engine
            .transcode_to_file(source, quality, &part, progress, cancel)?;
        let info = RenditionInfo {
            width: outcome.width,
            height: outcome.height,
            encoder: outcome.encoder.element_name().to_owned(),
            segments: Some(outcome.segments.clone()),
        };
        match self.store.install(&part, &name, &info) {
            Ok(path) => Ok(Installed { path, outcome }),
            Err(e) => {
                remove_quietly(&part);
                Err(e.into())
            }
        }
    }
}

impl MediaService {
    /// The poster of `object` (whose bytes `source` holds), `width` pixels wide, of the frame
    /// at `at` (default: 10 % in): the stored JPEG if there is one, else taken now and
    /// stored, so the next request is served from the file. Errors are
    /// [`MediaEngine::poster`]'s.
    pub async fn poster(
        &self,
        object: ObjectRef<'_>,
        source: File,
        width: u32,
        at: Option<Duration>,
    ) -> Result<Finished, MediaError> {
        let name = self.store.poster_name(object, width, at);
        let (store, n) = (self.store.clone(), name.clone());
        if let Some(f) = crate::spawn_blocking(move || Ok(store.open_finished(&n)?)).await? {
            return Ok(f);
        }
        let _slot = self
            .poster_slots
            .acquire()
            .await
            .expect("the poster slots are never closed");
        let (engine, store, claimer) = (
            self.engine.clone(),
            self.store.clone(),
            self.claimer.clone(),
        );
        crate::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + POSTER_WAIT;
            let mut elsewhere = false;
            let _claim = loop {
                // Another request, here or in another process, may have stored it meanwhile.
                if let Some(f) = store.open_finished(&name)? {
                    return Ok(f);
                }
                if let Some(claim) = claimer.claim(&format!("poster:{name}")) {
                    if let Some(f) = store.open_finished(&name)? {
                        return Ok(f);
                    }
                    break claim;
                }
                if !elsewhere {
                    elsewhere = true;
                    claimer.waited();
                }
                if std::time::Instant::now() + CLAIM_POLL > deadline {
                    return Err(MediaError::StillProducing);
                }
                std::thread::sleep(CLAIM_POLL);
            };
            claimer
                .produced
                .posters
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let poster = engine.poster(&source, width, at)?;
            let part = store.part_path(&name);
            let written = write_poster(&store, &part, &name, &poster);
            if written.is_err() {
                remove_quietly(&part);
            }
            Ok(written?)
        })
        .await
    }
}

/// Writes `poster` to `part` and installs it as `name`. The open file is what is served, so
/// an eviction right after the install cannot take it away from this request.
fn write_poster(
    store: &RenditionStore,
    part: &Path,
    name: &str,
    poster: &Poster,
) -> std::io::Result<Finished> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(part)?;
    file.write_all(&poster.jpeg)?;
    // Served like a file that was just opened.
    file.rewind()?;
    let info = RenditionInfo {
        width: poster.width,
        height: poster.height,
        encoder: POSTER_ENCODER.to_owned(),
        segments: None,
    };
    store.install(part, name, &info)?;
    Ok(Finished {
        file,
        size: poster.jpeg.len() as u64,
        info,
    })
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}
