//! Parts written in place.
//!
//! Clients cut an upload into parts of one size (all but the last), so part N usually starts at
//! `(N - 1) × part size` in the finished object. The first part to arrive fixes that stride
//! (`stride`), and each later part that fits is written straight into the upload's assembly file
//! (`object`) at its offset, claiming its slot once (`part-NNNNN.slot`). Completion then has
//! nothing to copy when the listed parts are exactly those slots: the assembly file is renamed
//! into the bucket as the object. Without this, a 1 GiB upload is written to disk twice and
//! copied once in memory. Parts that do not fit (another size, a second upload of a slot,
//! UploadPartCopy, a bucket on another filesystem) are kept as `part-NNNNN` files and copied
//! into place at completion, as is everything when the listed parts do not line up with the
//! slots. In-place parts are written with `O_DIRECT` through an aligned buffer
//! (`fsutil::DirectAppender`): a large upload then costs no page-cache copy and no writeback,
//! and each part's `fdatasync` has little left to do.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::records::{PartRecord, fsync_path, lock, part_name, write_json_atomic};
use super::{ASSEMBLY_FILE, MAX_OBJECT_SIZE, MIN_PART_SIZE, PartInfo, UploadRecord};
use crate::store::meta::StoredChecksums;
use crate::store::{Store, fsutil};
use crate::store::{StoreError, StoreResult};

/// The part size the first part fixed: part N's slot starts at `(N - 1) × stride`.
const STRIDE_FILE: &str = "stride";

/// A part being written straight into its upload's assembly file, at its slot. Holds the
/// upload's lock shared, so no completion or abort runs until the part is finished or dropped.
#[derive(Debug)]
pub struct PartSlot {
    /// The assembly file.
    pub file: File,
    /// Where the part starts in it.
    pub offset: u64,
    /// The most bytes the slot holds (the stride): more would run into the next part.
    pub capacity: u64,
    /// Taken around each write into the assembly file, shared by the upload's parts: the
    /// kernel serialises writes to one file anyway, and waiters spinning on its inode lock
    /// burned as much CPU as the writes themselves; this one puts them to sleep.
    writes: Arc<std::sync::Mutex<()>>,
    /// The part's bytes on their way to the assembly file, past the page cache.
    direct: Option<fsutil::DirectAppender>,
    number: u32,
    dir: PathBuf,
    _lock: File,
}

impl PartSlot {
    /// Writes `pieces` at `at` in the assembly file (just after the part's earlier pieces),
    /// one part at a time. A `full` batch that went through the page cache is passed on to
    /// writeback at once (more of the part is still arriving); direct writes are on disk.
    pub fn write_at(&mut self, pieces: &[bytes::Bytes], at: u64, full: bool) -> io::Result<()> {
        let _turn = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        match &mut self.direct {
            Some(d) => {
                debug_assert_eq!(d.end(), at);
                d.write(pieces, &self.file)
            }
            None => {
                fsutil::pwritev_all(&self.file, pieces, at)?;
                if full {
                    let len = pieces.iter().map(|p| p.len() as u64).sum();
                    fsutil::start_writeback(&self.file, at, len);
                }
                Ok(())
            }
        }
    }

    /// Writes what the part still holds in memory.
    fn flush(&mut self) -> io::Result<()> {
        let _turn = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        match &mut self.direct {
            Some(d) => d.finish(&self.file),
            None => Ok(()),
        }
    }
}

/// The write locks of the assembly files being written, by upload id.
#[derive(Debug, Default)]
pub struct AssemblyWrites {
    map: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<std::sync::Mutex<()>>>>,
}

impl AssemblyWrites {
    fn for_upload(&self, id: &str) -> Arc<std::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = map.get(id).and_then(std::sync::Weak::upgrade) {
            return lock;
        }
        // Uploads no part is writing any more drop out here.
        map.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(std::sync::Mutex::new(()));
        map.insert(id.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

/// The stride an upload's first part fixed, if one did.
fn read_stride(dir: &Path) -> io::Result<Option<u64>> {
    match std::fs::read_to_string(dir.join(STRIDE_FILE)) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Fixes the stride at `len` unless a concurrent part fixed it first; returns the stride.
/// Written whole under a temp name and linked, so no one reads a half-written value.
fn claim_stride(dir: &Path, len: u64) -> io::Result<u64> {
    let tmp = dir.join(format!(
        "{STRIDE_FILE}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&tmp, len.to_string())?;
    let linked = std::fs::hard_link(&tmp, dir.join(STRIDE_FILE));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(len),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_stride(dir)?.ok_or_else(|| io::Error::other("unreadable stride record"))
        }
        Err(e) => Err(e),
    }
}

impl Store {
    /// Checks that an upload exists before a part's body is read, and claims the part's slot
    /// in the assembly file when the part can be written in place (see the module docs):
    /// `declared` is the body length the request announced.
    pub fn begin_part(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        number: u32,
        declared: Option<u64>,
    ) -> StoreResult<(UploadRecord, Option<PartSlot>)> {
        let record = self.open_upload(bucket, key, id)?;
        let Some(len) = declared.filter(|&n| n > 0) else {
            return Ok((record, None));
        };
        // The assembly file is renamed into the bucket at the end: same filesystem only.
        if !self.bucket_on_root_fs(bucket)? {
            return Ok((record, None));
        }
        let dir = self.upload_dir(id)?;
        let lock = lock(&dir, false)?;
        let stride = match read_stride(&dir)? {
            Some(s) => s,
            // A short first arrival (other than part 1) is likely the last part: it must not
            // fix a stride every other part is too big for.
            None if number == 1 || len >= MIN_PART_SIZE => claim_stride(&dir, len)?,
            None => return Ok((record, None)),
        };
        let offset = u64::from(number - 1).checked_mul(stride);
        let Some(offset) = offset.filter(|o| len <= stride && o + len <= MAX_OBJECT_SIZE) else {
            return Ok((record, None));
        };
        // A slot is written once: a second upload of the part goes to its own file, so a
        // failed re-upload can never damage the bytes the first one left.
        let claim = dir.join(format!("{}.slot", part_name(number)));
        match File::options().write(true).create_new(true).open(claim) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok((record, None)),
            Err(e) => return Err(e.into()),
        }
        let path = dir.join(ASSEMBLY_FILE);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let direct = fsutil::DirectAppender::new(&path, offset);
        Ok((
            record,
            Some(PartSlot {
                file,
                offset,
                capacity: stride,
                writes: self.assembly_writes.for_upload(id),
                direct,
                number,
                dir,
                _lock: lock,
            }),
        ))
    }

    /// Records a part whose `size` bytes were written into its slot: they are made durable
    /// first, so a record never describes bytes a crash could lose.
    pub fn finish_slot(
        &self,
        mut slot: PartSlot,
        size: u64,
        md5: [u8; 16],
        checksums: StoredChecksums,
    ) -> StoreResult<PartInfo> {
        if size > slot.capacity {
            return Err(StoreError::SlotOverflow);
        }
        slot.flush()?;
        slot.file.sync_data()?;
        let record = PartRecord {
            size,
            md5: hex::encode(md5),
            checksums,
            ino: slot.file.metadata()?.ino(),
            in_place: Some(slot.offset),
        };
        let name = format!("{}.json", part_name(slot.number));
        write_json_atomic(&slot.dir, &name, &record)?;
        fsync_path(&slot.dir)?;
        Ok(PartInfo {
            number: slot.number,
            etag: record.md5,
            size,
            checksums: record.checksums,
            modified: SystemTime::now(),
        })
    }
}
