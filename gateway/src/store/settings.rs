//! Per-bucket settings: one small document per bucket and setting (CORS rules, policy, ACL,
//! versioning, lifecycle, ...) at `DATA/.nebula/buckets/<bucket>/<setting>`.
//!
//! The store keeps bytes only; each feature owns the format of its own document (and parses
//! it). Writes are atomic and durable (temp file, fsync, rename, fsync of the folder), so a
//! crash leaves the old or the new document, never a mix. Reads go through a cache checked
//! against the file's stamp on every call: a change made by another gateway on a shared data
//! folder, or by an admin command on the same folder, is seen by the next request without a
//! restart (one `stat` per read).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::error::{StoreError, StoreResult};
use super::fsutil;
use super::meta::FileStamp;

/// A setting a bucket may carry. The file name of each is part of the data folder's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// CORS rules.
    Cors,
    /// The bucket policy.
    Policy,
    /// The bucket ACL.
    Acl,
    /// The public access block.
    PublicAccessBlock,
    /// Versioning state.
    Versioning,
    /// Object lock configuration.
    ObjectLock,
    /// Lifecycle rules.
    Lifecycle,
    /// Bucket tags.
    Tagging,
}

impl Setting {
    /// Every setting, for removing a bucket's.
    pub const ALL: [Setting; 8] = [
        Setting::Cors,
        Setting::Policy,
        Setting::Acl,
        Setting::PublicAccessBlock,
        Setting::Versioning,
        Setting::ObjectLock,
        Setting::Lifecycle,
        Setting::Tagging,
    ];

    /// The document's file name inside the bucket's settings folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Setting::Cors => "cors",
            Setting::Policy => "policy",
            Setting::Acl => "acl",
            Setting::PublicAccessBlock => "public-access-block",
            Setting::Versioning => "versioning",
            Setting::ObjectLock => "object-lock",
            Setting::Lifecycle => "lifecycle",
            Setting::Tagging => "tagging",
        }
    }
}

/// A cached document and the stamp of the file it was read from (`None`: the file was absent).
type Cached = (Option<FileStamp>, Option<Arc<[u8]>>);

/// The settings of every bucket of a data folder.
#[derive(Debug)]
pub struct BucketSettings {
    dir: PathBuf,
    cache: Mutex<HashMap<(String, Setting), Cached>>,
}

impl BucketSettings {
    /// Settings kept under `internal_dir/buckets`.
    pub fn new(internal_dir: &Path) -> Self {
        BucketSettings {
            dir: internal_dir.join("buckets"),
            cache: Mutex::default(),
        }
    }

    fn path(&self, bucket: &str, setting: Setting) -> StoreResult<PathBuf> {
        // Bucket names are checked by the S3 layer; this keeps a bad one out of the path anyway.
        if bucket.is_empty() || bucket.starts_with('.') || bucket.contains('/') {
            return Err(StoreError::NoSuchBucket);
        }
        Ok(self.dir.join(bucket).join(setting.file_name()))
    }

    /// The bucket's document for `setting`, or `None` if it has none.
    pub fn get(&self, bucket: &str, setting: Setting) -> StoreResult<Option<Arc<[u8]>>> {
        let path = self.path(bucket, setting)?;
        let stamp = match std::fs::metadata(&path) {
            Ok(md) => Some(FileStamp::of(&md)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let key = (bucket.to_owned(), setting);
        if let Some((s, doc)) = self.cache.lock().unwrap().get(&key)
            && *s == stamp
        {
            return Ok(doc.clone());
        }
        let doc: Option<Arc<[u8]>> = match stamp {
            None => None,
            Some(_) => match std::fs::read(&path) {
                Ok(bytes) => Some(bytes.into()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
        };
        self.cache.lock().unwrap().insert(key, (stamp, doc.clone()));
        Ok(doc)
    }

    /// Replaces the bucket's document for `setting`, atomically and durably.
    pub fn put(&self, bucket: &str, setting: Setting, doc: &[u8]) -> StoreResult<()> {
        let path = self.path(bucket, setting)?;
        let dir = path.parent().expect("a setting's path has a folder");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{}.tmp-{}", setting.file_name(), rand_suffix()));
        let written = (|| -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(doc)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            fsutil::fsync_dir(std::os::fd::AsFd::as_fd(&fsutil::open_dir(dir)?))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        Ok(())
    }

    /// Removes the bucket's document for `setting` (no error if it had none).
    pub fn delete(&self, bucket: &str, setting: Setting) -> StoreResult<()> {
        let path = self.path(bucket, setting)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if let Some(dir) = path.parent() {
            fsutil::fsync_dir(std::os::fd::AsFd::as_fd(&fsutil::open_dir(dir)?))?;
        }
        Ok(())
    }

    /// Removes every setting of a bucket that is being deleted, so a new bucket of the same
    /// name starts with none.
    pub fn remove_bucket(&self, bucket: &str) -> StoreResult<()> {
        let path = self.path(bucket, Setting::Cors)?;
        if let Some(dir) = path.parent() {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.cache.lock().unwrap().retain(|(b, _), _| b != bucket);
        Ok(())
    }
}

fn rand_suffix() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_changes_from_elsewhere_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let s = BucketSettings::new(dir.path());
        assert!(s.get("b", Setting::Cors).unwrap().is_none());
        s.put("b", Setting::Cors, b"one").unwrap();
        assert_eq!(&*s.get("b", Setting::Cors).unwrap().unwrap(), b"one");
        // Another gateway (another BucketSettings on the same folder) replaces it.
        let other = BucketSettings::new(dir.path());
        other.put("b", Setting::Cors, b"two, longer").unwrap();
        assert_eq!(
            &*s.get("b", Setting::Cors).unwrap().unwrap(),
            b"two, longer"
        );
        other.delete("b", Setting::Cors).unwrap();
        assert!(s.get("b", Setting::Cors).unwrap().is_none());
        s.delete("b", Setting::Cors).unwrap();
        assert!(s.get("b", Setting::Policy).unwrap().is_none());
        // No temp file is left beside the documents.
        s.put("b", Setting::Policy, b"p").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("buckets/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("policy")]);
    }

    #[test]
    fn a_deleted_bucket_keeps_no_settings_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = BucketSettings::new(dir.path());
        s.put("b", Setting::Versioning, b"Enabled").unwrap();
        s.put("c", Setting::Versioning, b"Suspended").unwrap();
        s.remove_bucket("b").unwrap();
        assert!(s.get("b", Setting::Versioning).unwrap().is_none());
        assert!(s.get("c", Setting::Versioning).unwrap().is_some());
        for bad in ["", ".nebula", "a/b"] {
            assert!(matches!(
                s.get(bad, Setting::Cors),
                Err(StoreError::NoSuchBucket)
            ));
        }
    }
}
