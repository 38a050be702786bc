//! The scoped access keys' document in the data folder (`DATA/.nebula/access-keys.json`), as
//! bytes: the access layer (`crate::access::keys`) owns its format.
//!
//! The file holds secrets, so it is created 0600 inside the 0700 reserved folder. Writes are
//! atomic and durable (temp file, fsync, rename, fsync of the folder); changes go through
//! [`KeyFile::update`], which holds an exclusive `flock` on a lock file beside it so a gateway
//! and a `nebula-gateway keys` command (or two gateways on a shared folder) never lose each
//! other's change. Reads are stamp-checked: one `stat` per call, the file is re-read only when
//! it changed, so a change made elsewhere is seen by the next request without a restart.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::fsutil;
use super::meta::FileStamp;

const FILE: &str = "access-keys.json";
const LOCK: &str = "access-keys.lock";

/// A cached document and the stamp of the file it was read from (`None`: no file).
type Cached = (Option<FileStamp>, Option<Arc<[u8]>>);

/// The access keys' file of one data folder.
#[derive(Debug)]
pub struct KeyFile {
    dir: PathBuf,
    cache: Mutex<Cached>,
}

impl KeyFile {
    /// The key file inside `internal_dir` (`DATA/.nebula`).
    pub fn new(internal_dir: &Path) -> Self {
        KeyFile {
            dir: internal_dir.to_owned(),
            cache: Mutex::new((None, None)),
        }
    }

    /// The document, or `None` when no key was ever created.
    pub fn read(&self) -> io::Result<Option<Arc<[u8]>>> {
        let path = self.dir.join(FILE);
        let stamp = match std::fs::metadata(&path) {
            Ok(md) => Some(FileStamp::of(&md)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.0 == stamp {
                return Ok(cache.1.clone());
            }
        }
        let doc: Option<Arc<[u8]>> = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes.into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = (stamp, doc.clone());
        Ok(doc)
    }

    /// Reads the document, lets `change` compute the new one from it, and writes that, all
    /// under the folder's key lock. `change` returning `None` writes nothing.
    pub fn update<T>(
        &self,
        change: impl FnOnce(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> io::Result<T> {
        std::fs::create_dir_all(&self.dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(LOCK))?;
        fsutil::lock(&lock, true)?;
        let path = self.dir.join(FILE);
        let current = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (new, out) = change(current.as_deref());
        if let Some(doc) = new {
            let tmp = self.dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
            let written = (|| -> io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&doc)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                fsutil::fsync_dir(std::os::fd::AsFd::as_fd(&fsutil::open_dir(&self.dir)?))
            })();
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written?;
        }
        // The lock is released when `lock` is closed.
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn updates_are_private_atomic_and_seen_by_other_readers() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeyFile::new(dir.path());
        let b = KeyFile::new(dir.path());
        assert!(a.read().unwrap().is_none());
        a.update(|cur| {
            assert!(cur.is_none());
            (Some(b"one".to_vec()), ())
        })
        .unwrap();
        assert_eq!(&*b.read().unwrap().unwrap(), b"one");
        b.update(|cur| {
            assert_eq!(cur, Some(&b"one"[..]));
            (Some(b"two, longer".to_vec()), ())
        })
        .unwrap();
        assert_eq!(&*a.read().unwrap().unwrap(), b"two, longer");
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [FILE, LOCK]);
    }
}
