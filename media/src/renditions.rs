//! The renditions store: finished transcodes kept as plain MP4 files, so the next request for
//! the same object, bytes and quality is served with byte ranges; posters kept the same way
//! as JPEG files.
//!
//! A rendition is `<object>-<variant>.mp4` (a poster `<object>-<variant>.jpg`) beside its
//! description `<object>-<variant>.json` ([`RenditionInfo`]); the HLS segments of one quality
//! are files in a folder `<object>-<variant>.hls/` ([`RenditionStore::hls_dir`]), evicted one
//! segment at a time with the renditions and dropped with them. `<object>` is the MD5 of
//! bucket and key, so every rendition of an
//! object is found by prefix when it is replaced or deleted; `<variant>` hashes the ETag,
//! the quality, the encoder and [`PIPELINE_VERSION`], so a rendition of other bytes or an
//! older pipeline is never served. Files in the making end in `.part` and carry their
//! process's name; a later start removes those whose process is gone (its lock in `.owners/`
//! is free), never those of another gateway sharing the folder. The store keeps itself under a size limit, dropping the
//! least recently served first.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::hls::SegmentIndex;
use crate::{Encoder, Quality};

/// Changes whenever the pipeline's output changes, so old renditions are never served.
pub const PIPELINE_VERSION: &str = "fmp4-v1";
/// The same for HLS segments (`crate::hls`).
pub const HLS_VERSION: &str = "hls-v2";
/// The same for stream-copied HLS segments (`crate::hls`, `copy.rs`).
pub const HLS_COPY_VERSION: &str = "hls-copy-v1";

/// Changes whenever the poster pipeline's output changes, so old posters are never served.
pub const POSTER_VERSION: &str = "jpeg-v1";

/// File name endings of finished files (renditions, posters).
const FINISHED_EXTENSIONS: [&str; 2] = [".mp4", ".jpg"];

/// The bytes a rendition is made from: an object as it was read (its ETag).
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    /// Bucket name.
    pub bucket: &'a str,
    /// Object key.
    pub key: &'a str,
    /// ETag of the bytes read.
    pub etag: &'a str,
}

/// What is kept beside a rendition file (its JSON sidecar), and told in response headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenditionInfo {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Encoder element that produced the video (`x264enc`, ...).
    pub encoder: String,
    /// For a background job's rendition: where each HLS segment is in it, so the segments
    /// of this quality are served from it without a pipeline. `None` for live transcodes
    /// and posters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<SegmentIndex>,
}

/// A finished rendition, opened for reading.
#[derive(Debug)]
pub struct Finished {
    /// The MP4 file.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// Its description.
    pub info: RenditionInfo,
}

/// The renditions folder. Cheap to clone (shared state behind an `Arc`).
#[derive(Debug, Clone)]
pub struct RenditionStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    limit: u64,
    encoder: Encoder,
    /// Object prefixes that may have renditions on disk: a write to any other object does
    /// not look at the folder at all.
    with_renditions: Mutex<HashSet<String>>,
    /// This process's name in the names of its files in the making (see [`OWNERS_DIR`]).
    owner: String,
    /// The lock that marks those files as being made while this process lives.
    _owner_lock: File,
}

/// Folder of the renditions folder holding one `<owner>.lock` per process using the folder,
/// `flock`ed while it lives. Files in the making carry their owner's name, so a starting
/// gateway removes only those whose owner is gone (its lock is free), never those another
/// gateway sharing the folder is writing.
const OWNERS_DIR: &str = ".owners";

impl RenditionStore {
    /// Opens (creates) the store in `dir`, for renditions made with `encoder`, kept under
    /// `limit` bytes. Partial renditions left by a crashed process are removed.
    pub fn open(dir: PathBuf, limit: u64, encoder: Encoder) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join(OWNERS_DIR))?;
        let owner = format!(
            "{}x{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let owner_lock = File::create(dir.join(OWNERS_DIR).join(format!("{owner}.lock")))?;
        owner_lock.lock()?;
        let mut with_renditions = HashSet::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".part") || name.ends_with(".part.faststart") {
                if part_abandoned(&dir, &name) {
                    let _ = std::fs::remove_file(e.path());
                }
            } else if let Some(prefix) = prefix_of_rendition(&name) {
                if name.ends_with(".hls") {
                    remove_temporaries(&e.path());
                }
                with_renditions.insert(prefix.to_owned());
            }
        }
        // Locks of processes that are gone, whether or not they left files in the making.
        for e in std::fs::read_dir(dir.join(OWNERS_DIR))?.flatten() {
            if e.file_name().to_string_lossy() != format!("{owner}.lock")
                && File::options()
                    .read(true)
                    .write(true)
                    .open(e.path())
                    .is_ok_and(|f| f.try_lock().is_ok())
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(RenditionStore {
            inner: Arc::new(Inner {
                dir,
                limit,
                encoder,
                with_renditions: Mutex::new(with_renditions),
                owner,
                _owner_lock: owner_lock,
            }),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// File name of the rendition of `object` at `quality`.
    pub fn name(&self, object: ObjectRef<'_>, quality: Quality) -> String {
        let mut h = Md5::new();
        h.update(format!(
            "{}\0{}\0{}\0{PIPELINE_VERSION}",
            object.etag,
            quality.height(),
            self.inner.encoder.element_name()
        ));
        format!(
            "{}-{}.mp4",
            object_prefix(object.bucket, object.key),
            &hex::encode(h.finalize())[..16]
        )
    }

    /// File name of the poster of `object`, `width` pixels wide, taken at `at` (`None`: the
    /// default moment). `at` counts in whole milliseconds.
    pub fn poster_name(&self, object: ObjectRef<'_>, width: u32, at: Option<Duration>) -> String {
        let at = at.map_or_else(|| "default".to_owned(), |d| d.as_millis().to_string());
        let mut h = Md5::new();
        h.update(format!(
            "{}\0poster\0{width}\0{at}\0{POSTER_VERSION}",
            object.etag
        ));
        format!(
            "{}-{}.jpg",
            object_prefix(object.bucket, object.key),
            &hex::encode(h.finalize())[..16]
        )
    }

    /// The folder of the HLS segments of `object` at `quality` (not created). Noted as
    /// holding renditions of the object, so invalidation removes it.
    pub fn hls_dir(&self, object: ObjectRef<'_>, quality: Quality) -> PathBuf {
        self.hls_dir_of(
            object,
            &format!(
                "{}\0{}\0{HLS_VERSION}",
                quality.height(),
                self.inner.encoder.element_name()
            ),
        )
    }

    /// The folder of the stream-copied (`original`) HLS segments of `object` (not created),
    /// noted like [`RenditionStore::hls_dir`].
    pub fn hls_copy_dir(&self, object: ObjectRef<'_>) -> PathBuf {
        self.hls_dir_of(object, &format!("original\0{HLS_COPY_VERSION}"))
    }

    fn hls_dir_of(&self, object: ObjectRef<'_>, variant: &str) -> PathBuf {
        let mut h = Md5::new();
        h.update(format!("{}\0{variant}", object.etag));
        let prefix = object_prefix(object.bucket, object.key);
        let dir = self
            .inner
            .dir
            .join(format!("{prefix}-{}.hls", &hex::encode(h.finalize())[..16]));
        self.inner
            .with_renditions
            .lock()
            .expect("renditions index lock")
            .insert(prefix);
        dir
    }

    /// A fresh path for a rendition in the making, `<stem>.<owner>_<random>.part`. A stem
    /// that does not start with an object prefix keeps the file safe from
    /// [`RenditionStore::invalidate`].
    pub fn part_path(&self, stem: &str) -> PathBuf {
        self.inner.dir.join(format!(
            "{stem}.{}_{}.part",
            self.inner.owner,
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Opens the finished rendition `name`, or `None` if there is none (yet). Blocking.
    /// Serving it counts as a use for eviction.
    pub fn open_finished(&self, name: &str) -> std::io::Result<Option<Finished>> {
        let path = self.inner.dir.join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(info) = std::fs::read(path.with_extension("json"))
            .ok()
            .and_then(|r| serde_json::from_slice::<RenditionInfo>(&r).ok())
        else {
            return Ok(None);
        };
        let _ = file.set_modified(SystemTime::now());
        let size = file.metadata()?.len();
        Ok(Some(Finished { file, size, info }))
    }

    /// Installs the finished MP4 at `part` as the rendition `name` and returns its path.
    /// Blocking. The data is flushed, the sidecar written, then the file renamed into
    /// place, so a reader never sees a rendition without its description or a torn one
    /// after a crash; then the store is brought back under its limit.
    pub fn install(
        &self,
        part: &Path,
        name: &str,
        info: &RenditionInfo,
    ) -> std::io::Result<PathBuf> {
        let dest = self.inner.dir.join(name);
        File::open(part)?.sync_all()?;
        std::fs::write(dest.with_extension("json"), serde_json::to_vec(info)?)?;
        std::fs::rename(part, &dest)?;
        if let Some(prefix) = prefix_of_rendition(name) {
            self.inner
                .with_renditions
                .lock()
                .expect("renditions index lock")
                .insert(prefix.to_owned());
        }
        self.evict();
        Ok(dest)
    }

    /// Drops every rendition of `bucket/key` (it was replaced or deleted). Free for an object
    /// that has none, which is nearly every write; otherwise the folder is cleaned on tokio's
    /// blocking pool.
    pub fn invalidate(&self, bucket: &str, key: &str) {
        let prefix = object_prefix(bucket, key);
        let had = self
            .inner
            .with_renditions
            .lock()
            .expect("renditions index lock")
            .remove(&prefix);
        if had {
            let dir = self.inner.dir.clone();
            tokio::task::spawn_blocking(move || remove_renditions(&dir, &prefix));
        }
    }

    /// Keeps the store under its size limit, dropping least recently used first: whole
    /// renditions, and HLS segments one by one (a dropped segment is produced again when
    /// asked for). Blocking.
    pub fn evict(&self) {
        let Ok(rd) = std::fs::read_dir(&self.inner.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let mut add = |path: PathBuf| {
            if let Ok(md) = std::fs::symlink_metadata(&path)
                && let Ok(modified) = md.modified()
            {
                files.push((modified, md.len(), path));
            }
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if FINISHED_EXTENSIONS.iter().any(|ext| name.ends_with(ext)) {
                add(e.path());
            } else if name.ends_with(".hls")
                && let Ok(segments) = std::fs::read_dir(e.path())
            {
                segments
                    .flatten()
                    .filter(|s| !s.file_name().to_string_lossy().starts_with('.'))
                    .for_each(|s| add(s.path()));
            }
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.inner.limit {
                break;
            }
            let _ = std::fs::remove_file(&path);
            if path.parent() == Some(self.inner.dir.as_path()) {
                let _ = std::fs::remove_file(path.with_extension("json"));
            }
            total = total.saturating_sub(len);
        }
    }
}

/// The part of a rendition's name that identifies its object.
fn object_prefix(bucket: &str, key: &str) -> String {
    let mut h = Md5::new();
    h.update(bucket.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    hex::encode(h.finalize())
}

/// The object prefix of a finished file's name (`<object prefix>-<variant>.mp4` or `.jpg`)
/// or HLS folder (`<object prefix>-<variant>.hls`).
fn prefix_of_rendition(name: &str) -> Option<&str> {
    FINISHED_EXTENSIONS
        .iter()
        .chain(&[".hls"])
        .find_map(|ext| name.strip_suffix(ext))?
        .split_once('-')
        .map(|(p, _)| p)
}

/// Removes the temporary files (`.<segment>.<pid>.<n>.tmp`) a crash left in an HLS folder.
fn remove_temporaries(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().ends_with(".tmp") && abandoned(&e.path()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A file in the making that names no owner (an HLS segment's temporary) and that nobody
/// wrote to for this long was left by a process that died: a producer writes all the time.
/// Younger ones may belong to another gateway sharing the folder, producing them right now.
const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// True when the rendition in the making `name` in `dir` was left by a process that is gone:
/// the owner its name carries no longer holds its lock (which is then removed too). Names
/// without an owner follow [`ABANDONED_AFTER`].
fn part_abandoned(dir: &Path, name: &str) -> bool {
    let stem = name
        .strip_suffix(".part.faststart")
        .or_else(|| name.strip_suffix(".part"))
        .unwrap_or(name);
    let owner = stem
        .rsplit_once('.')
        .and_then(|(_, tail)| tail.split_once('_'))
        .map(|(owner, _)| owner);
    let Some(owner) = owner else {
        return abandoned(&dir.join(name));
    };
    let lock = dir.join(OWNERS_DIR).join(format!("{owner}.lock"));
    match File::options().read(true).write(true).open(&lock) {
        Ok(f) if f.try_lock().is_ok() => {
            let _ = std::fs::remove_file(&lock);
            true
        }
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// True when the file in the making at `path` was abandoned (see [`ABANDONED_AFTER`]).
fn abandoned(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > ABANDONED_AFTER))
}

/// Removes the renditions (and sidecars) named after `prefix`, leaving files in the making.
fn remove_renditions(dir: &Path, prefix: &str) {
    let prefix = format!("{prefix}-");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(&prefix) || name.ends_with(".part") {
            continue;
        }
        if name.ends_with(".hls") {
            let _ = std::fs::remove_dir_all(e.path());
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, limit: u64) -> RenditionStore {
        RenditionStore::open(dir.join("renditions"), limit, Encoder::X264).unwrap()
    }

    fn object(key: &str) -> ObjectRef<'_> {
        ObjectRef {
            bucket: "b",
            key,
            etag: "e1",
        }
    }

    fn info() -> RenditionInfo {
        RenditionInfo {
            width: 854,
            height: 480,
            encoder: "x264enc".into(),
            segments: None,
        }
    }

    fn install(s: &RenditionStore, key: &str, q: Quality, bytes: usize) -> String {
        let name = s.name(object(key), q);
        let part = s.part_path(&name);
        std::fs::write(&part, vec![7u8; bytes]).unwrap();
        s.install(&part, &name, &info()).unwrap();
        name
    }

    #[test]
    fn names_are_stable() {
        // Existing stores keep working only while this name does not change.
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), u64::MAX);
        assert_eq!(
            s.name(object("k.mp4"), Quality::P480),
            "8fcde6f4aaadf320a9b901f4a2a2925e-df5c547771f5cfe3.mp4"
        );
    }

    #[test]
    fn install_then_open_and_invalidate() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), u64::MAX);
        let name = install(&s, "a.mp4", Quality::P480, 10);
        let f = s.open_finished(&name).unwrap().expect("installed");
        assert_eq!((f.size, f.info), (10, info()));
        assert!(
            s.open_finished(&s.name(object("a.mp4"), Quality::P720))
                .unwrap()
                .is_none()
        );
        // A file in the making of the same object survives invalidation.
        let part = s.part_path(&name);
        std::fs::write(&part, b"x").unwrap();
        rt.block_on(async { s.invalidate("b", "a.mp4") });
        drop(rt); // waits for the blocking cleanup
        assert!(s.open_finished(&name).unwrap().is_none());
        assert!(part.exists());
        // Another process opening the folder (a gateway sharing it) leaves it: its owner
        // lives. Once the owner is gone, a start removes it.
        let other = store(dir.path(), u64::MAX);
        assert!(part.exists());
        drop((s, other));
        let s = store(dir.path(), u64::MAX);
        assert!(!part.exists());
        let left: Vec<_> = std::fs::read_dir(s.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(OWNERS_DIR)]);
        assert_eq!(
            std::fs::read_dir(s.dir().join(OWNERS_DIR)).unwrap().count(),
            1,
            "only the live owner's lock"
        );
    }

    #[test]
    fn posters_are_named_per_size_and_moment_and_invalidated_with_the_object() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), u64::MAX);
        let a = s.poster_name(object("a.mp4"), 320, None);
        assert!(a.starts_with(&format!("{}-", object_prefix("b", "a.mp4"))));
        assert!(a.ends_with(".jpg"));
        let at = Some(Duration::from_millis(1500));
        assert_ne!(a, s.poster_name(object("a.mp4"), 640, None));
        assert_ne!(a, s.poster_name(object("a.mp4"), 320, at));
        assert_eq!(
            s.poster_name(object("a.mp4"), 320, at),
            s.poster_name(object("a.mp4"), 320, Some(Duration::from_micros(1_500_400)))
        );
        let part = s.part_path(&a);
        std::fs::write(&part, b"jpeg").unwrap();
        s.install(&part, &a, &info()).unwrap();
        assert_eq!(s.open_finished(&a).unwrap().expect("installed").size, 4);
        // A restart finds it again, so a later write still invalidates it.
        drop(s);
        let s = store(dir.path(), u64::MAX);
        rt.block_on(async { s.invalidate("b", "a.mp4") });
        drop(rt);
        assert!(s.open_finished(&a).unwrap().is_none());
    }

    #[test]
    fn eviction_drops_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 25);
        let old = install(&s, "old.mp4", Quality::P480, 10);
        let used = install(&s, "used.mp4", Quality::P480, 10);
        let past = SystemTime::now() - std::time::Duration::from_secs(60);
        for n in [&old, &used] {
            let f = File::options().write(true).open(s.dir().join(n)).unwrap();
            f.set_modified(past).unwrap();
        }
        assert!(s.open_finished(&used).unwrap().is_some());
        let new = install(&s, "new.mp4", Quality::P480, 10);
        assert!(s.open_finished(&old).unwrap().is_none());
        assert!(!s.dir().join(&old).with_extension("json").exists());
        assert!(s.open_finished(&used).unwrap().is_some());
        assert!(s.open_finished(&new).unwrap().is_some());
    }
}
