//! The HLS sessions of the media service: one per source bytes and quality, found again by
//! every request for a playlist's segments, dropped when idle or when the object changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{CopyIndex, HlsSession};
use crate::{MediaError, MediaInfo};

/// A session nobody asked anything of for this long is dropped (its pipeline stops, its
/// source file is closed) at the next request of any session. Its segments stay on disk.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(120);

/// Probe results kept at most: a probe is cheap to redo, the map must not grow unbounded.
const MAX_INFOS: usize = 4096;
/// Stream-copy indexes kept at most: one is a few bytes per sample (about 10 MB for a
/// two-hour film) and costs a read of the whole file to redo.
const MAX_COPIES: usize = 32;

/// `(bucket, key, etag)`: the bytes of an object.
type ObjectBytes = (String, String, String);

struct Entry {
    bucket: String,
    key: String,
    session: Arc<HlsSession>,
}

/// Sessions keyed by their segment folder (which names the object, its ETag, the quality,
/// the encoder and the HLS version), and the probe results of the sources.
#[derive(Default)]
pub(crate) struct Sessions {
    sessions: Mutex<HashMap<PathBuf, Entry>>,
    /// `(bucket, key, etag)` → what the probe found.
    infos: Mutex<HashMap<ObjectBytes, MediaInfo>>,
    /// `(bucket, key, etag)` → the stream-copy index (`None`: not copyable).
    copies: Mutex<HashMap<ObjectBytes, Option<Arc<CopyIndex>>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("sessions", &self.sessions.lock().unwrap().len())
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// The session whose segments live in `dir`, made by `make` if there is none. Drops
    /// idle sessions on the way.
    pub(crate) fn get_or_make(
        &self,
        bucket: &str,
        key: &str,
        dir: &Path,
        make: impl FnOnce() -> Result<HlsSession, MediaError>,
    ) -> Result<Arc<HlsSession>, MediaError> {
        let mut map = self.sessions.lock().unwrap();
        // Dropping a session stops its pipeline: done outside the map's lock.
        let mut idle = Vec::new();
        map.retain(|d, e| {
            let keep = d == dir || e.session.idle_for() < SESSION_IDLE;
            if !keep {
                idle.push(e.session.clone());
            }
            keep
        });
        let session = match map.get(dir) {
            Some(e) => e.session.clone(),
            None => {
                let session = Arc::new(make()?);
                map.insert(
                    dir.to_path_buf(),
                    Entry {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        session: session.clone(),
                    },
                );
                session
            }
        };
        drop(map);
        drop(idle);
        Ok(session)
    }

    /// Drops the sessions and probe results of `bucket/key` (replaced or deleted): their
    /// pipelines stop.
    pub(crate) fn remove_object(&self, bucket: &str, key: &str) {
        let mut gone = Vec::new();
        self.sessions.lock().unwrap().retain(|_, e| {
            let keep = e.bucket != bucket || e.key != key;
            if !keep {
                gone.push(e.session.clone());
            }
            keep
        });
        for s in &gone {
            s.stop();
        }
        self.infos
            .lock()
            .unwrap()
            .retain(|(b, k, _), _| b != bucket || k != key);
        self.copies
            .lock()
            .unwrap()
            .retain(|(b, k, _), _| b != bucket || k != key);
    }

    /// Stops the parked run (see [`HlsSession::is_parked`]) of the session idle longest,
    /// other than the one in `except`, so its transcode slot goes to a viewer waiting for a
    /// segment. `false` if no run is parked.
    pub(crate) fn stop_parked(&self, except: &Path) -> bool {
        let victim = {
            let map = self.sessions.lock().unwrap();
            map.iter()
                .filter(|(d, e)| d.as_path() != except && e.session.is_parked())
                .max_by_key(|(_, e)| e.session.idle_for())
                .map(|(_, e)| e.session.clone())
        };
        match victim {
            Some(s) => {
                s.stop();
                true
            }
            None => false,
        }
    }

    /// Number of sessions kept.
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// The probe result of these bytes, if known.
    pub(crate) fn info(&self, bucket: &str, key: &str, etag: &str) -> Option<MediaInfo> {
        self.infos
            .lock()
            .unwrap()
            .get(&(bucket.to_owned(), key.to_owned(), etag.to_owned()))
            .cloned()
    }

    /// Remembers the probe result of these bytes.
    pub(crate) fn set_info(&self, bucket: &str, key: &str, etag: &str, info: MediaInfo) {
        let mut infos = self.infos.lock().unwrap();
        if infos.len() >= MAX_INFOS {
            infos.clear();
        }
        infos.insert((bucket.to_owned(), key.to_owned(), etag.to_owned()), info);
    }

    /// The stream-copy index of these bytes, if scanned (`Some(None)`: not copyable).
    #[allow(clippy::option_option)]
    pub(crate) fn copy(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
    ) -> Option<Option<Arc<CopyIndex>>> {
        self.copies
            .lock()
            .unwrap()
            .get(&(bucket.to_owned(), key.to_owned(), etag.to_owned()))
            .cloned()
    }

    /// Remembers the stream-copy index of these bytes.
    pub(crate) fn set_copy(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        index: Option<Arc<CopyIndex>>,
    ) {
        let mut copies = self.copies.lock().unwrap();
        if copies.len() >= MAX_COPIES {
            copies.clear();
        }
        copies.insert((bucket.to_owned(), key.to_owned(), etag.to_owned()), index);
    }
}
