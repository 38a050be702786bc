//! Multipart upload staging under the reserved folder.
//!
//! Each upload is a folder `DATA/.nebula/multipart/<upload id>/` holding `upload.json` (what
//! CreateMultipartUpload was told) and, per part, `part-NNNNN.json` (size, MD5, checksums and
//! where the bytes are). This module creates, lists and aborts uploads and stores parts that
//! arrive as whole files; [`records`] reads and writes the staging folder's files (and its
//! lock), [`slots`] writes parts straight into their place in the finished object, and
//! [`complete`] checks a part list and assembles the object; [`completed`] remembers the
//! result for a retried completion.
//!
//! Temp files live in this process's folder of `DATA/.nebula/tmp`, removed by the next start
//! after the process is gone, so a crash mid-part leaves nothing that matters in a staging
//! folder.

mod complete;
mod completed;
mod records;
mod slots;

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, StoredChecksums};
use super::{Store, TempFile, fsutil};
use crate::store::{StoreError, StoreResult};
use records::{
    PartRecord, assembly_metadata, fsync_path, lock, no_upload_if_missing, part_name, read_part,
    read_record, staged_part_numbers, write_json_atomic,
};

pub use complete::{Assembly, Staged, multipart_etag};
pub use completed::{CompletedUpload, KEEP_COMPLETED};
pub use slots::{AssemblyWrites, PartSlot};

/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// S3's largest object: parts are never placed beyond it.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

const UPLOAD_FILE: &str = "upload.json";

/// The file in-place parts are written into at their offsets in the finished object.
const ASSEMBLY_FILE: &str = "object";

/// What CreateMultipartUpload was told, kept as `upload.json` until completion or abort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Bucket the object will be created in.
    pub bucket: String,
    /// Key the object will be created at.
    pub key: String,
    /// Content headers and user metadata for the object (ETag and size are set at completion).
    pub meta: ObjectMeta,
    /// `x-amz-checksum-algorithm` given at creation (upper case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
    /// `x-amz-checksum-type` given at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
    /// Initiation time, nanoseconds since the epoch.
    pub initiated_ns: u64,
    /// Access key of the creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
}

impl UploadRecord {
    /// Initiation time.
    pub fn initiated(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.initiated_ns)
    }
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Part number (1..=10000).
    pub number: u32,
    /// Hex MD5 of the part's bytes, unquoted.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// Checksums computed at upload.
    pub checksums: StoredChecksums,
    /// When the part was uploaded.
    pub modified: SystemTime,
}

/// An upload in progress, as ListMultipartUploads shows it.
#[derive(Debug, Clone)]
pub struct UploadInfo {
    /// Upload id.
    pub id: String,
    /// What creation recorded.
    pub record: UploadRecord,
}

/// True for ids this gateway hands out (32 lower-case hex digits); anything else could name a
/// path outside the staging area and is simply an unknown upload.
pub fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Store {
    fn uploads_dir(&self) -> PathBuf {
        self.internal.join("multipart")
    }

    fn upload_dir(&self, id: &str) -> StoreResult<PathBuf> {
        if !is_upload_id(id) {
            return Err(StoreError::NoSuchUpload);
        }
        Ok(self.uploads_dir().join(id))
    }

    /// Starts an upload for `record.bucket`/`record.key` and returns its id.
    pub fn create_upload(&self, record: &UploadRecord) -> StoreResult<String> {
        self.bucket_fd(&record.bucket)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Built in the temp folder and renamed into place, so no one sees an upload without
        // its record, and a crash leaves only temp-folder debris.
        let building = self.tmp.join(format!("{id}.upload"));
        std::fs::create_dir(&building)?;
        let res = (|| {
            write_json_atomic(&building, UPLOAD_FILE, record)?;
            std::fs::rename(&building, self.uploads_dir().join(&id))?;
            fsync_path(&self.uploads_dir())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&building);
            return Err(e.into());
        }
        Ok(id)
    }

    /// Reads an upload's record; `NoSuchUpload` if it does not exist or belongs to another
    /// bucket or key.
    pub fn open_upload(&self, bucket: &str, key: &str, id: &str) -> StoreResult<UploadRecord> {
        let record = read_record(&self.upload_dir(id)?)?;
        if record.bucket != bucket || record.key != key {
            return Err(StoreError::NoSuchUpload);
        }
        Ok(record)
    }

    /// Makes a fully written temp file part `number` of an upload, replacing any earlier upload
    /// of that part number.
    #[allow(clippy::too_many_arguments)]
    pub fn put_part(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        number: u32,
        mut tmp: TempFile,
        md5: [u8; 16],
        checksums: StoredChecksums,
    ) -> StoreResult<PartInfo> {
        let dir = self.upload_dir(id)?;
        self.open_upload(bucket, key, id)?;
        if tmp.file.metadata()?.dev()
            != std::fs::metadata(&dir).map_err(no_upload_if_missing)?.dev()
        {
            // Bodies for buckets on another filesystem are received there; rename cannot cross.
            let local = self.internal_temp()?;
            let len = tmp.file.metadata()?.len();
            fsutil::copy_range(&tmp.file, 0, &local.file, len)?;
            tmp = local;
        }
        tmp.file.sync_all()?;
        let md = tmp.file.metadata()?;
        let record = PartRecord {
            size: md.len(),
            md5: hex::encode(md5),
            checksums,
            ino: md.ino(),
            in_place: None,
        };
        let _lock = lock(&dir, false)?;
        let name = part_name(number);
        write_json_atomic(&dir, &format!("{name}.json"), &record)?;
        let dir_fd = fsutil::open_dir(&dir).map_err(no_upload_if_missing)?;
        fsutil::rename_at(tmp.dir.as_fd(), &tmp.name, dir_fd.as_fd(), Path::new(&name))?;
        tmp.done = true;
        fsutil::fsync_dir(dir_fd.as_fd())?;
        Ok(PartInfo {
            number,
            etag: record.md5,
            size: record.size,
            checksums: record.checksums,
            modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// The parts uploaded so far, by part number.
    pub fn list_parts(&self, id: &str) -> StoreResult<Vec<PartInfo>> {
        let dir = self.upload_dir(id)?;
        let numbers = staged_part_numbers(&dir)?;
        let assembly = assembly_metadata(&dir)?;
        let mut parts = Vec::with_capacity(numbers.len());
        for number in numbers {
            match read_part(&dir, number, assembly.as_ref()) {
                Ok((info, _)) => parts.push(info),
                // No bytes on record, or removed by a concurrent completion or abort.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(parts)
    }

    /// Removes an upload and its parts.
    pub fn abort_upload(&self, bucket: &str, key: &str, id: &str) -> StoreResult<()> {
        let dir = self.upload_dir(id)?;
        let _lock = lock(&dir, true)?;
        self.open_upload(bucket, key, id)?;
        std::fs::remove_dir_all(&dir).map_err(no_upload_if_missing)?;
        fsync_path(&self.uploads_dir())?;
        Ok(())
    }

    /// Aborts every upload of a bucket (for DeleteBucket: uploads must not outlive their
    /// bucket and reappear should a bucket of that name be created again).
    pub fn abort_uploads_of_bucket(&self, bucket: &str) -> StoreResult<()> {
        for u in self.list_uploads(bucket)? {
            match self.abort_upload(bucket, &u.record.key, &u.id) {
                Ok(()) | Err(StoreError::NoSuchUpload) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The uploads in progress for a bucket, ordered by key, then initiation time.
    pub fn list_uploads(&self, bucket: &str) -> StoreResult<Vec<UploadInfo>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.uploads_dir())? {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .filter(|n| is_upload_id(n))
                .map(str::to_owned)
            else {
                continue;
            };
            // A record that vanished or cannot be read is an upload being removed.
            let Ok(record) = read_record(&entry.path()) else {
                continue;
            };
            if record.bucket == bucket {
                out.push(UploadInfo { id, record });
            }
        }
        out.sort_by(|a, b| {
            (a.record.key.as_str(), a.record.initiated_ns, a.id.as_str()).cmp(&(
                b.record.key.as_str(),
                b.record.initiated_ns,
                b.id.as_str(),
            ))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use md5::{Digest, Md5};

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_bucket("bkt").unwrap();
        (d, s)
    }

    fn record(key: &str) -> UploadRecord {
        UploadRecord {
            bucket: "bkt".into(),
            key: key.into(),
            meta: ObjectMeta::default(),
            checksum_algorithm: None,
            checksum_type: None,
            initiated_ns: 1,
            initiator: None,
        }
    }

    fn put(s: &Store, id: &str, n: u32, bytes: &[u8]) -> PartInfo {
        let mut tmp = s.internal_temp().unwrap();
        tmp.file.write_all(bytes).unwrap();
        let md5: [u8; 16] = Md5::digest(bytes).into();
        s.put_part("bkt", "k", id, n, tmp, md5, StoredChecksums::default())
            .unwrap()
    }

    #[test]
    fn stale_part_record_is_not_trusted() {
        let (_d, s) = store();
        let id = s.create_upload(&record("k")).unwrap();
        put(&s, &id, 1, b"first");
        // Simulate a crash between the record's rename and the data's rename of a re-upload.
        let dir = s.upload_dir(&id).unwrap();
        let fake = PartRecord {
            size: 5,
            md5: hex::encode(Md5::digest(b"other")),
            checksums: Default::default(),
            ino: 1,
            in_place: None,
        };
        write_json_atomic(&dir, "part-00001.json", &fake).unwrap();
        let parts = s.list_parts(&id).unwrap();
        assert_eq!(parts[0].etag, hex::encode(Md5::digest(b"first")));
    }

    #[test]
    fn stray_files_in_staging_are_ignored() {
        let (_d, s) = store();
        let id = s.create_upload(&record("k")).unwrap();
        put(&s, &id, 2, b"two");
        let dir = s.upload_dir(&id).unwrap();
        std::fs::write(dir.join("part-00003.json.0123.tmp"), b"{").unwrap();
        std::fs::write(dir.join("junk.tmp"), b"x").unwrap();
        let parts = s.list_parts(&id).unwrap();
        assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), vec![2]);
        s.abort_upload("bkt", "k", &id).unwrap();
        assert!(matches!(s.list_parts(&id), Err(StoreError::NoSuchUpload)));
    }

    #[test]
    fn uploads_persist_across_reopen_and_are_listed_per_bucket() {
        let (d, s) = store();
        s.create_bucket("other").unwrap();
        let id = s.create_upload(&record("k")).unwrap();
        put(&s, &id, 1, b"x");
        let mut r = record("k");
        r.bucket = "other".into();
        s.create_upload(&r).unwrap();
        drop(s);
        let s = Store::open(d.path()).unwrap();
        let listed = s.list_uploads("bkt").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert_eq!(s.list_parts(&id).unwrap().len(), 1);
        assert!(matches!(
            s.open_upload("other", "k", &id),
            Err(StoreError::NoSuchUpload)
        ));
    }
}
