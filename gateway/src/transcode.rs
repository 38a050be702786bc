//! The media extension of GetObject: `?transcode=h264&quality=480` (or `quality` alone) streams
//! an on-the-fly GStreamer transcode, and keeps the finished rendition so the next request is
//! served from a file with byte ranges (seeking works).
//!
//! The parameters are part of the request's query, so SigV4 (header or presigned) covers them:
//! s3s verifies the signature before GetObject runs, and editing `quality` in a presigned URL
//! gives 403. While a rendition is being produced, other requests for the same one wait for it
//! (up to [`FOLLOW_WAIT`]) and are then served from the finished file: one pipeline per
//! rendition.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderValue, StatusCode};
use md5::{Digest, Md5};
use nebula_media::{Encoder, MediaEngine, MediaError, Quality, TranscodeStream};
use s3s::dto::{GetObjectOutput, Range, StreamingBlob};
use s3s::{S3Error, S3ErrorCode, S3Result};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::error::{StoreError, custom_error};
use crate::store::Store;
use crate::store::keys::ObjectPath;

/// Changes whenever the pipeline's output changes, so old renditions are never served.
const PIPELINE_VERSION: &str = "fmp4-v1";

/// How long a request waits for the same rendition being produced by another request.
const FOLLOW_WAIT: Duration = Duration::from_secs(300);

/// What a request asked of the media extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaRequest {
    /// `quality=original` or no media parameters: the stored bytes.
    Original,
    /// An H.264 rendition at this quality.
    Transcode(Quality),
}

/// Reads `transcode` and `quality` from a query string. `transcode` alone means 720p.
pub fn parse_query(query: Option<&str>) -> S3Result<MediaRequest> {
    let mut transcode = None;
    let mut quality = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "transcode" => transcode = Some(v),
            "quality" => quality = Some(v),
            _ => {}
        }
    }
    if let Some(t) = &transcode
        && !t.eq_ignore_ascii_case("h264")
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("unknown transcode target '{t}': this gateway produces h264"),
        ));
    }
    match (transcode, quality) {
        (None, None) => Ok(MediaRequest::Original),
        (_, Some(q)) if q.eq_ignore_ascii_case("original") => Ok(MediaRequest::Original),
        (_, Some(q)) => q
            .parse::<Quality>()
            .map(MediaRequest::Transcode)
            .map_err(|_| {
                S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("unknown quality '{q}': use 240, 360, 480, 720, 1080 or original"),
                )
            }),
        (Some(_), None) => Ok(MediaRequest::Transcode(Quality::P720)),
    }
}

/// True when an object looks like video by content type or extension.
pub fn looks_like_video(content_type: Option<&str>, key: &str) -> bool {
    if content_type.is_some_and(|c| c.starts_with("video/")) {
        return true;
    }
    let ext = key
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        ext.as_str(),
        "mp4"
            | "m4v"
            | "mkv"
            | "webm"
            | "mov"
            | "avi"
            | "ts"
            | "m2ts"
            | "mts"
            | "mpg"
            | "mpeg"
            | "wmv"
            | "flv"
            | "3gp"
            | "ogv"
    )
}

/// Parses sizes like `500M`, `20G`, `1T` or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mult = match s[i..]
                .to_ascii_uppercase()
                .trim_end_matches("IB")
                .trim_end_matches('B')
            {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1u64 << 40,
                _ => return None,
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// What is kept beside a rendition file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RenditionInfo {
    width: u32,
    height: u32,
    encoder: String,
}

/// Live transcodes, their concurrency limit and the renditions store.
#[derive(Debug)]
pub struct MediaService {
    engine: MediaEngine,
    permits: Arc<Semaphore>,
    max_transcodes: usize,
    dir: PathBuf,
    cache_limit: u64,
    inflight: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// Objects (by [`MediaService::object_prefix`]) that may have renditions on disk: a write
    /// to any other object does not look at the renditions folder at all.
    with_renditions: Mutex<HashSet<String>>,
}

impl MediaService {
    /// A media service keeping renditions in `dir` (created), at most `max_transcodes` live.
    pub fn new(
        engine: MediaEngine,
        dir: PathBuf,
        max_transcodes: usize,
        cache_limit: u64,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut with_renditions = HashSet::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                // Partial renditions from a crash are useless.
                if name.ends_with(".part") || name.ends_with(".part.faststart") {
                    let _ = std::fs::remove_file(e.path());
                } else if let Some(prefix) = prefix_of_rendition(&name) {
                    with_renditions.insert(prefix.to_owned());
                }
            }
        }
        Ok(MediaService {
            engine,
            permits: Arc::new(Semaphore::new(max_transcodes.max(1))),
            max_transcodes: max_transcodes.max(1),
            dir,
            cache_limit,
            inflight: Mutex::new(HashMap::new()),
            with_renditions: Mutex::new(with_renditions),
        })
    }

    /// Notes that the rendition at `path` exists, for [`MediaService::invalidate`].
    fn note_rendition(&self, path: &Path) {
        if let Some(prefix) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(prefix_of_rendition)
        {
            self.with_renditions
                .lock()
                .expect("renditions index lock")
                .insert(prefix.to_owned());
        }
    }

    /// The encoder in use.
    pub fn encoder(&self) -> Encoder {
        self.engine.encoder()
    }

    /// The media engine (probing, file transcodes).
    pub fn engine(&self) -> &MediaEngine {
        &self.engine
    }

    /// The most live transcodes at once.
    pub fn max_transcodes(&self) -> usize {
        self.max_transcodes
    }

    fn object_prefix(bucket: &str, key: &str) -> String {
        let mut h = Md5::new();
        h.update(bucket.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        hex::encode(h.finalize())
    }

    /// File name of a rendition: the object's identity, then its ETag and the parameters.
    fn rendition_name(&self, bucket: &str, key: &str, etag: &str, quality: Quality) -> String {
        let mut h = Md5::new();
        h.update(format!(
            "{etag}\0{}\0{}\0{PIPELINE_VERSION}",
            quality.height(),
            self.engine.encoder().element_name()
        ));
        format!(
            "{}-{}.mp4",
            Self::object_prefix(bucket, key),
            &hex::encode(h.finalize())[..16]
        )
    }

    /// Where the finished rendition of `bucket/key` (these bytes, this quality) is kept: the
    /// file `?quality=` serves. Background jobs produce it ahead of the first request.
    pub(crate) fn rendition_path(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        quality: Quality,
    ) -> PathBuf {
        self.dir
            .join(self.rendition_name(bucket, key, etag, quality))
    }

    /// The renditions store (`DATA/.nebula/renditions`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Installs a finished MP4 at `part` as the rendition `dest` (from
    /// [`MediaService::rendition_path`]): sidecar first, then an atomic rename, so a request
    /// never sees the file without its description.
    pub(crate) fn install_rendition(
        &self,
        part: &Path,
        dest: &Path,
        width: u32,
        height: u32,
        encoder: &str,
    ) -> std::io::Result<()> {
        let info = RenditionInfo {
            width,
            height,
            encoder: encoder.to_owned(),
        };
        std::fs::write(dest.with_extension("json"), serde_json::to_vec(&info)?)?;
        std::fs::rename(part, dest)?;
        self.note_rendition(dest);
        self.evict();
        Ok(())
    }

    /// Removes every rendition of an object (it was replaced or deleted). Free for an object
    /// that has none, which is nearly every write; otherwise the folder is cleaned on the
    /// blocking pool.
    pub fn invalidate(self: &Arc<Self>, bucket: &str, key: &str) {
        let prefix = Self::object_prefix(bucket, key);
        let had = self
            .with_renditions
            .lock()
            .expect("renditions index lock")
            .remove(&prefix);
        if had {
            let svc = self.clone();
            tokio::task::spawn_blocking(move || svc.remove_renditions(&prefix));
        }
    }

    fn remove_renditions(&self, prefix: &str) {
        let prefix = format!("{prefix}-");
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && !name.ends_with(".part") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Keeps the renditions store under its size limit, dropping least recently used first.
    fn evict(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".mp4"))
            .filter_map(|e| {
                let md = e.metadata().ok()?;
                Some((md.modified().ok()?, md.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.cache_limit {
                break;
            }
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("json"));
            total = total.saturating_sub(len);
        }
    }
}

/// The object prefix of a rendition's file name (`<object prefix>-<variant>.mp4`).
fn prefix_of_rendition(name: &str) -> Option<&str> {
    name.strip_suffix(".mp4")?.split_once('-').map(|(p, _)| p)
}

fn media_error(e: MediaError) -> S3Error {
    match e {
        MediaError::NotVideo(m) | MediaError::NotMedia(m) => custom_error(
            "UnsupportedMediaType",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the object is not a video this gateway can transcode: {m}"),
        ),
        MediaError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            StoreError::NoSuchKey.into()
        }
        other => {
            tracing::warn!(error = %other, "transcode failed");
            S3Error::with_message(
                S3ErrorCode::InternalError,
                format!("transcode failed: {other}"),
            )
        }
    }
}

fn rendition_headers(info: &RenditionInfo) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&info.encoder) {
        h.insert("x-nebula-encoder", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}x{}", info.width, info.height)) {
        h.insert("x-nebula-resolution", v);
    }
    h
}

/// What a request does about a rendition that is not finished.
enum Step {
    /// Another request is producing it.
    Wait(watch::Receiver<bool>),
    /// This request produces it.
    Produce(OwnedSemaphorePermit, watch::Sender<bool>),
    /// No transcode slot is free.
    Busy,
}

/// A response body and its extra headers.
pub type Served = (GetObjectOutput, HeaderMap);

/// Serves a rendition: from the store with ranges if finished, else by a live transcode.
pub async fn serve(
    svc: Arc<MediaService>,
    store: Arc<Store>,
    bucket: String,
    path: ObjectPath,
    quality: Quality,
    range: Option<Range>,
) -> S3Result<Served> {
    let (b, p, st) = (bucket.clone(), path.clone(), store.clone());
    let obj = crate::s3::blocking(move || st.open_object(&b, &p)).await?;
    if path.is_folder_marker || !looks_like_video(obj.meta.content_type.as_deref(), &path.key) {
        return Err(custom_error(
            "UnsupportedMediaType",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "'{}' is not a video (content type {}): transcode and quality apply to video objects only",
                path.key,
                obj.meta.content_type.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    let name = svc.rendition_name(&bucket, &path.key, &obj.meta.etag, quality);
    let final_path = svc.dir.join(&name);
    let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
    let mut source = Some(obj.file);
    loop {
        if let Some(served) = serve_finished(&final_path, range).await? {
            crate::metrics::cache(crate::metrics::Cache::Rendition, true);
            return Ok(served);
        }
        // One producer per rendition: others wait for it to finish.
        let step = {
            let mut inflight = svc.inflight.lock().expect("inflight lock");
            match inflight.get(&name) {
                Some(rx) if !*rx.borrow() => Step::Wait(rx.clone()),
                _ => match svc.permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (tx, rx) = watch::channel(false);
                        inflight.insert(name.clone(), rx);
                        Step::Produce(permit, tx)
                    }
                    Err(_) => Step::Busy,
                },
            }
        };
        let waiter = match step {
            Step::Wait(rx) => Some(rx),
            Step::Busy => {
                let mut e = S3Error::with_message(
                    S3ErrorCode::SlowDown,
                    format!(
                        "all {} transcode slots are busy; retry shortly",
                        svc.max_transcodes
                    ),
                );
                let mut h = HeaderMap::new();
                h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
                e.set_headers(h);
                return Err(e);
            }
            Step::Produce(permit, tx) => {
                crate::metrics::cache(crate::metrics::Cache::Rendition, false);
                let source = source
                    .take()
                    .expect("the source is taken once, by the single producer");
                return start_live(svc.clone(), source, name, final_path, quality, permit, tx)
                    .await;
            }
        };
        if let Some(mut rx) = waiter {
            let wait = rx.wait_for(|done| *done);
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                let mut e = S3Error::with_message(
                    S3ErrorCode::SlowDown,
                    "the rendition is still being produced; retry shortly",
                );
                let mut h = HeaderMap::new();
                h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("10"));
                e.set_headers(h);
                return Err(e);
            }
        }
    }
}

async fn serve_finished(path: &Path, range: Option<Range>) -> S3Result<Option<Served>> {
    let path = path.to_owned();
    let opened = crate::s3::blocking(move || {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let info: RenditionInfo = match std::fs::read(path.with_extension("json"))
            .ok()
            .and_then(|r| serde_json::from_slice(&r).ok())
        {
            Some(i) => i,
            None => return Ok(None),
        };
        // Recently used renditions survive eviction.
        let _ = file.set_modified(SystemTime::now());
        let size = file.metadata()?.len();
        let range = match range {
            None => None,
            Some(r) => Some(r.check(size).map_err(|_| StoreError::InvalidRange)?),
        };
        Ok(Some((file, info, size, range)))
    })
    .await?;
    let Some((file, info, size, range)) = opened else {
        return Ok(None);
    };
    let (start, len) = range
        .as_ref()
        .map(|r| (r.start, r.end - r.start))
        .unwrap_or((0, size));
    let output = GetObjectOutput {
        body: Some(crate::s3::file_body(file, start, len)),
        content_length: Some(len as i64),
        content_range: range
            .as_ref()
            .map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, size)),
        content_type: Some(nebula_media::STREAM_CONTENT_TYPE.to_owned()),
        accept_ranges: Some("bytes".into()),
        ..Default::default()
    };
    Ok(Some((output, rendition_headers(&info))))
}

async fn start_live(
    svc: Arc<MediaService>,
    source: File,
    name: String,
    final_path: PathBuf,
    quality: Quality,
    permit: OwnedSemaphorePermit,
    done: watch::Sender<bool>,
) -> S3Result<Served> {
    let part = svc
        .dir
        .join(format!("{name}.{}.part", uuid::Uuid::new_v4().simple()));
    // GStreamer reopens the object through our descriptor, so it reads exactly the file the
    // request resolved inside its bucket.
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
    let engine = svc.engine.clone();
    let started = tokio::task::spawn_blocking(move || engine.start_stream(&fd_path, quality)).await;
    let stream = match started {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            finish_inflight(&svc, &name, &done);
            return Err(media_error(e));
        }
        Err(e) => {
            finish_inflight(&svc, &name, &done);
            return Err(S3Error::with_message(
                S3ErrorCode::InternalError,
                format!("transcode worker failed: {e}"),
            ));
        }
    };
    let info = RenditionInfo {
        width: stream.width,
        height: stream.height,
        encoder: stream.encoder.element_name().to_owned(),
    };
    tracing::info!(rendition = %name, quality = quality.height(), width = info.width, height = info.height, encoder = %info.encoder, "live transcode started");
    let file = File::create(&part).ok();
    let headers = rendition_headers(&info);
    let tee = TeeStream {
        inner: stream,
        file,
        part,
        final_path,
        info,
        svc,
        name,
        done: Some(done),
        _source: source,
        _permit: permit,
        finished: false,
    };
    let output = GetObjectOutput {
        body: Some(StreamingBlob::wrap(tee)),
        content_type: Some(nebula_media::STREAM_CONTENT_TYPE.to_owned()),
        ..Default::default()
    };
    Ok((output, headers))
}

fn finish_inflight(svc: &MediaService, name: &str, done: &watch::Sender<bool>) {
    svc.inflight.lock().expect("inflight lock").remove(name);
    let _ = done.send(true);
}

/// Passes a live transcode to the client and copies it into the renditions store; the copy
/// becomes a rendition only if the whole stream was produced. Dropping it (client gone) drops
/// the pipeline, which stops within about 100 ms, and frees the transcode slot.
struct TeeStream {
    inner: TranscodeStream,
    file: Option<File>,
    part: PathBuf,
    final_path: PathBuf,
    info: RenditionInfo,
    svc: Arc<MediaService>,
    name: String,
    done: Option<watch::Sender<bool>>,
    _source: File,
    _permit: OwnedSemaphorePermit,
    finished: bool,
}

impl TeeStream {
    fn complete(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file);
            let info = serde_json::to_vec(&self.info).unwrap_or_default();
            let ok = std::fs::write(self.final_path.with_extension("json"), info).is_ok()
                && std::fs::rename(&self.part, &self.final_path).is_ok();
            if ok {
                self.finished = true;
                self.svc.note_rendition(&self.final_path);
                let svc = self.svc.clone();
                tokio::task::spawn_blocking(move || svc.evict());
            }
        }
        if let Some(done) = self.done.take() {
            finish_inflight(&self.svc, &self.name, &done);
        }
    }
}

impl Stream for TeeStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(bytes))) => {
                if let Some(f) = self.file.as_mut()
                    && f.write_all(&bytes).is_err()
                {
                    // The store is full or gone: keep streaming, just do not keep a copy.
                    self.file = None;
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, rendition = %self.name, "live transcode failed");
                self.file = None;
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
            Poll::Ready(None) => {
                self.complete();
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for TeeStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.part);
        }
        if let Some(done) = self.done.take() {
            finish_inflight(&self.svc, &self.name, &done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(parse_query(None).unwrap(), MediaRequest::Original);
        assert_eq!(
            parse_query(Some("quality=480")).unwrap(),
            MediaRequest::Transcode(Quality::P480)
        );
        assert_eq!(
            parse_query(Some("transcode=h264&quality=720&X-Amz-Signature=ab")).unwrap(),
            MediaRequest::Transcode(Quality::P720)
        );
        assert_eq!(
            parse_query(Some("quality=original")).unwrap(),
            MediaRequest::Original
        );
        assert!(parse_query(Some("quality=999")).is_err());
        assert!(parse_query(Some("transcode=vp9&quality=480")).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("500MiB"), Some(500 << 20));
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("12X"), None);
    }

    #[test]
    fn video_detection() {
        assert!(looks_like_video(Some("video/mp4"), "x"));
        assert!(looks_like_video(
            Some("application/octet-stream"),
            "a/b.MKV"
        ));
        assert!(!looks_like_video(Some("text/plain"), "notes.txt"));
    }
}
