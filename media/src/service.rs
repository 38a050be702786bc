//! The media service: the engine, the renditions store and the transcode slots, with what
//! the gateway asks of them (a rendition for a request, a rendition made ahead by a job, a
//! poster).

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::live::{Flights, LiveRendition, Step};
use crate::poster::POSTER_ENCODER;
use crate::renditions::{Finished, ObjectRef, RenditionInfo, RenditionStore};
use crate::{CancelFlag, Encoder, FileOutcome, MediaEngine, MediaError, Poster, Quality};

/// How long a request waits for the same rendition being produced by another request.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(300);

/// Posters taken at once. A poster is a short pipeline (a fraction of a second); posters
/// have their own slots so a page full of them never takes a transcode's, and wait for a
/// slot instead of being refused.
const POSTER_SLOTS: usize = 2;

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
        })
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

    /// Drops every rendition of `bucket/key` (it was replaced or deleted).
    pub fn invalidate(&self, bucket: &str, key: &str) {
        self.store.invalidate(bucket, key);
    }

    /// The rendition of `object` (whose bytes `source` holds) at `quality`: the finished
    /// file if there is one, else a live transcode. While a rendition is being produced,
    /// other requests for it wait (up to [`FOLLOW_WAIT`]) and get the finished file: one
    /// pipeline per rendition.
    ///
    /// Errors: [`MediaError::Busy`] when every transcode slot is taken,
    /// [`MediaError::StillProducing`] when the wait runs out, and the engine's errors
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
        loop {
            let (store, n) = (self.store.clone(), name.clone());
            if let Some(f) = crate::spawn_blocking(move || Ok(store.open_finished(&n)?)).await? {
                return Ok(Rendition::Finished(f));
            }
            let mut rx = match self.flights.step(&name, &self.slots) {
                Step::Wait(rx) => rx,
                Step::Busy => return Err(MediaError::Busy(self.max_transcodes)),
                Step::Produce(producer, slot) => {
                    let source = source
                        .take()
                        .expect("the source is taken once, by the single producer");
                    // An error drops the producer: the waiting requests try themselves.
                    let stream = self.engine.start_stream_async(source, quality).await?;
                    tracing::info!(rendition = %name, quality = quality.height(), width = stream.width, height = stream.height, encoder = stream.encoder.element_name(), "live transcode started");
                    let live = LiveRendition::new(stream, self.store.clone(), name, producer, slot);
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
        let (engine, store) = (self.engine.clone(), self.store.clone());
        crate::spawn_blocking(move || {
            // Another request may have stored it while this one waited for a slot.
            if let Some(f) = store.open_finished(&name)? {
                return Ok(f);
            }
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
