//! What a finished CompleteMultipartUpload answered, kept for a while by upload id: a client
//! that lost the response retries, and S3 answers the retry with the same result instead of
//! `NoSuchUpload`. Each record is a small JSON file `DATA/.nebula/multipart-completed/<id>`,
//! written before the staging folder goes; records older than [`KEEP_COMPLETED`] are removed
//! when the next one is written.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::is_upload_id;
use super::records::{fsync_path, write_json_atomic};
use crate::store::meta::StoredChecksums;
use crate::store::{Store, StoreResult};

/// How long a completed upload's result is remembered.
pub const KEEP_COMPLETED: Duration = Duration::from_secs(3600);

/// The result of a completed upload, as CompleteMultipartUpload answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedUpload {
    /// Bucket of the object.
    pub bucket: String,
    /// Key of the object.
    pub key: String,
    /// The object's ETag, unquoted.
    pub etag: String,
    /// The `x-amz-version-id` answered: the version id, `null` for the null version of a
    /// bucket with versioning enabled or suspended, none in an unversioned bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Its checksums as answered.
    #[serde(default)]
    pub checksums: StoredChecksums,
}

impl Store {
    fn completed_dir(&self) -> PathBuf {
        self.internal.join("multipart-completed")
    }

    /// Remembers what upload `id` completed into; a failure only costs the retry's answer.
    pub(super) fn remember_completed(&self, id: &str, done: &CompletedUpload) {
        let dir = self.completed_dir();
        let res = std::fs::create_dir_all(&dir)
            .and_then(|()| write_json_atomic(&dir, id, done))
            .and_then(|()| fsync_path(&dir));
        if let Err(e) = res {
            tracing::warn!(error = %e, upload = id, "could not record a completed upload");
        }
        self.forget_old_completed();
    }

    fn forget_old_completed(&self) {
        let Ok(entries) = std::fs::read_dir(self.completed_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > KEEP_COMPLETED);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// What upload `id` of `bucket`/`key` completed into, if that happened within
    /// [`KEEP_COMPLETED`].
    pub fn completed_upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> StoreResult<Option<CompletedUpload>> {
        if !is_upload_id(id) {
            return Ok(None);
        }
        let path = self.completed_dir().join(id);
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                SystemTime::now().duration_since(t).unwrap_or_default() <= KEEP_COMPLETED
            });
        if !fresh {
            return Ok(None);
        }
        let Ok(raw) = std::fs::read(&path) else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<CompletedUpload>(&raw)
            .ok()
            .filter(|c| c.bucket == bucket && c.key == key))
    }
}
