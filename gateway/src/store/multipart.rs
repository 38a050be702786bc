//! Multipart upload staging under the reserved folder.
//!
//! Each upload is a folder `DATA/.nebula/multipart/<upload id>/` holding `upload.json` (what
//! CreateMultipartUpload was told) and, per part, `part-NNNNN.json` (size, MD5, checksums and
//! where the bytes are).
//!
//! **Parts in place.** Clients cut an upload into parts of one size (all but the last), so part
//! N usually starts at `(N - 1) × part size` in the finished object. The first part to arrive
//! fixes that stride (`stride`), and each later part that fits is written straight into the
//! upload's assembly file (`object`) at its offset, claiming its slot once (`part-NNNNN.slot`).
//! Completion then has nothing to copy when the listed parts are exactly those slots: the
//! assembly file is renamed into the bucket as the object. Without this, a 1 GiB upload is
//! written to disk twice and copied once in memory. Parts that do not fit (another size, a
//! second upload of a slot, UploadPartCopy, a bucket on another filesystem) are kept as
//! `part-NNNNN` files and copied into place at completion, as is everything when the listed
//! parts do not line up with the slots. In-place parts are written with `O_DIRECT` through an
//! aligned buffer (`fsutil::DirectAppender`): a large upload then costs no page-cache copy and
//! no writeback, and each part's `fdatasync` has little left to do.
//!
//! A part file's record is written before the bytes are renamed into place and names the inode
//! it describes: a record that lost a race with another upload of the same part number (or a
//! crash between the two renames) is recognised, and the part's MD5 is then recomputed from the
//! bytes instead of trusted. An in-place part's record is written only after its bytes are on
//! disk. Temp files live in `DATA/.nebula/tmp`, which is emptied at start, so a crash mid-part
//! leaves nothing that matters in a staging folder.
//!
//! A `flock` on the staging folder orders the steps that must not interleave: part commits (and
//! in-place parts for as long as they write) hold it shared, completion and abort hold it
//! exclusively and then remove the folder, so whoever waited finds the upload gone instead of
//! half-assembled, and no part is still writing into an assembly file being completed.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::keys::ObjectPath;
use super::meta::{ObjectMeta, StoredChecksums, md5_of_file};
use super::{Commit, Store, TempFile, fsutil};
use crate::error::{StoreError, StoreResult};

/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// S3's largest object: parts are never placed beyond it.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

const UPLOAD_FILE: &str = "upload.json";

/// The file in-place parts are written into at their offsets in the finished object.
const ASSEMBLY_FILE: &str = "object";

/// The part size the first part fixed: part N's slot starts at `(N - 1) × stride`.
const STRIDE_FILE: &str = "stride";

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

/// `part-NNNNN.json`.
#[derive(Debug, Serialize, Deserialize)]
struct PartRecord {
    size: u64,
    md5: String,
    #[serde(default)]
    checksums: StoredChecksums,
    /// Inode of the `part-NNNNN` file (or of the assembly file) this record describes.
    ino: u64,
    /// Offset of the bytes in the assembly file, for a part written in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_place: Option<u64>,
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

/// A part as CompleteMultipartUpload lists it.
#[derive(Debug, Clone)]
pub struct RequestedPart {
    /// Part number as sent.
    pub number: i32,
    /// ETag as sent, without quotes.
    pub etag: String,
    /// Checksums as sent (only those present are compared).
    pub checksums: StoredChecksums,
}

/// A validated completion: the upload stays locked until this is finished or dropped.
#[derive(Debug)]
pub struct Assembly {
    /// What creation recorded.
    pub record: UploadRecord,
    /// The listed parts, in order.
    pub parts: Vec<PartInfo>,
    /// Sum of the part sizes.
    pub size: u64,
    /// Where each listed part's bytes are.
    sources: Vec<PartData>,
    /// The assembly file, if any part was written in place.
    assembly: Option<File>,
    /// Every in-place part the staging folder records (listed or not): (number, offset).
    in_place: Vec<(u32, u64)>,
    dir: PathBuf,
    _lock: File,
}

/// Where a part's bytes are.
#[derive(Debug)]
enum PartData {
    /// Its own file.
    File(File),
    /// The assembly file, from this offset.
    InPlace(u64),
}

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

impl Assembly {
    /// S3's multipart ETag: hex MD5 of the concatenated binary part MD5s, then `-N`.
    pub fn etag(&self) -> String {
        multipart_etag(self.parts.iter().map(|p| p.etag.as_str()))
    }
}

/// S3's multipart ETag from the parts' hex MD5s.
pub fn multipart_etag<'a>(part_md5s: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Md5::new();
    let mut n = 0;
    for etag in part_md5s {
        // Part ETags are always hex MD5s we computed; a bad one cannot reach here.
        h.update(hex::decode(etag).unwrap_or_default());
        n += 1;
    }
    format!("{}-{n}", hex::encode(h.finalize()))
}

/// True for ids this gateway hands out (32 lower-case hex digits); anything else could name a
/// path outside the staging area and is simply an unknown upload.
pub fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn part_name(number: u32) -> String {
    format!("part-{number:05}")
}

/// The part number of a part file or of its record.
fn part_number_of_entry(name: &str) -> Option<u32> {
    parse_part_name(name.strip_suffix(".json").unwrap_or(name))
}

fn parse_part_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("part-")?;
    if digits.len() != 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    (1..=MAX_PART_NUMBER).contains(&n).then_some(n)
}

fn no_upload_if_missing(e: io::Error) -> StoreError {
    if matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) {
        StoreError::NoSuchUpload
    } else {
        StoreError::Io(e)
    }
}

/// Locks a staging folder and checks the upload is still there (it may have been completed or
/// aborted while we waited).
fn lock(dir: &Path, exclusive: bool) -> StoreResult<File> {
    let f = File::open(dir).map_err(no_upload_if_missing)?;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: valid descriptor owned by `f`.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e.into());
        }
    }
    if !dir.join(UPLOAD_FILE).exists() {
        return Err(StoreError::NoSuchUpload);
    }
    Ok(f)
}

/// Writes `name` in `dir` so readers see the old or the new content, never a partial one.
fn write_json_atomic(dir: &Path, name: &str, value: &impl Serialize) -> io::Result<()> {
    let raw = serde_json::to_vec(value).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let res = (|| {
        let mut f = File::create_new(&tmp)?;
        f.write_all(&raw)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn read_record(dir: &Path) -> StoreResult<UploadRecord> {
    let raw = std::fs::read(dir.join(UPLOAD_FILE)).map_err(no_upload_if_missing)?;
    serde_json::from_slice(&raw)
        .map_err(|e| StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

fn fsync_path(dir: &Path) -> io::Result<()> {
    fsutil::fsync_dir(fsutil::open_dir(dir)?.as_fd())
}

fn read_part_record(dir: &Path, number: u32) -> Option<PartRecord> {
    std::fs::read(dir.join(format!("{}.json", part_name(number))))
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
}

/// The in-place offset of a record, if its bytes are still in `assembly` as recorded.
fn in_place_offset(record: &PartRecord, assembly: Option<&std::fs::Metadata>) -> Option<u64> {
    let off = record.in_place?;
    let md = assembly?;
    (md.ino() == record.ino && md.len() >= off + record.size).then_some(off)
}

/// Opens a part with what is known about it (see the module docs on stale records).
/// `NotFound` when the part has no bytes on record.
fn read_part(
    dir: &Path,
    number: u32,
    assembly: Option<&std::fs::Metadata>,
) -> io::Result<(PartInfo, PartData)> {
    let name = part_name(number);
    let record = read_part_record(dir, number);
    if let Some(r) = &record
        && r.in_place.is_some()
    {
        let off = in_place_offset(r, assembly).ok_or(io::ErrorKind::NotFound)?;
        let modified = std::fs::metadata(dir.join(format!("{name}.json")))?
            .modified()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let info = PartInfo {
            number,
            etag: r.md5.clone(),
            size: r.size,
            checksums: r.checksums.clone(),
            modified,
        };
        return Ok((info, PartData::InPlace(off)));
    }
    let mut file = File::open(dir.join(&name))?;
    let md = file.metadata()?;
    let (etag, checksums) = match record {
        Some(r) if r.ino == md.ino() && r.size == md.len() => (r.md5, r.checksums),
        _ => (md5_of_file(&mut file)?, StoredChecksums::default()),
    };
    let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Ok((
        PartInfo {
            number,
            etag,
            size: md.len(),
            checksums,
            modified,
        },
        PartData::File(file),
    ))
}

/// The assembly file's metadata, if the upload has one.
fn assembly_metadata(dir: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(dir.join(ASSEMBLY_FILE)) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The part numbers that have a file or a record in a staging folder.
fn staged_part_numbers(dir: &Path) -> StoreResult<Vec<u32>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(no_upload_if_missing)? {
        if let Some(n) = entry?.file_name().to_str().and_then(part_number_of_entry) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    numbers.dedup();
    Ok(numbers)
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

/// True when every checksum the client listed for a part matches one computed at upload.
/// Checksums not computed at upload cannot be checked and are not held against the part.
fn checksums_agree(sent: &StoredChecksums, have: &StoredChecksums) -> bool {
    let pairs = [
        (&sent.crc32, &have.crc32),
        (&sent.crc32c, &have.crc32c),
        (&sent.crc64nvme, &have.crc64nvme),
        (&sent.sha1, &have.sha1),
        (&sent.sha256, &have.sha256),
    ];
    pairs.iter().all(|(s, h)| match (s, h) {
        (Some(s), Some(h)) => s == h,
        _ => true,
    })
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
            return Err(StoreError::InvalidRequest(
                "the part is larger than its declared length".into(),
            ));
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

    /// Checks a CompleteMultipartUpload part list against the staged parts without changing
    /// anything. On success the upload stays locked (others wait) until the assembly is
    /// finished with [`Store::finish_upload`] or dropped.
    pub fn prepare_complete(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        requested: &[RequestedPart],
    ) -> StoreResult<Assembly> {
        if requested.is_empty() {
            return Err(StoreError::InvalidRequest(
                "you must specify at least one part".into(),
            ));
        }
        let dir = self.upload_dir(id)?;
        let lock = lock(&dir, true)?;
        let record = self.open_upload(bucket, key, id)?;
        if requested.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(StoreError::InvalidPartOrder);
        }
        let assembly_md = assembly_metadata(&dir)?;
        let assembly = match &assembly_md {
            Some(_) => Some(File::open(dir.join(ASSEMBLY_FILE))?),
            None => None,
        };
        let mut in_place = Vec::new();
        for number in staged_part_numbers(&dir)? {
            if let Some(off) = read_part_record(&dir, number)
                .and_then(|r| in_place_offset(&r, assembly_md.as_ref()))
            {
                in_place.push((number, off));
            }
        }
        let mut parts = Vec::with_capacity(requested.len());
        let mut sources = Vec::with_capacity(requested.len());
        for want in requested {
            let number = u32::try_from(want.number)
                .ok()
                .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
                .ok_or_else(|| {
                    StoreError::InvalidPart(format!("part number {} is out of range", want.number))
                })?;
            let (info, data) = match read_part(&dir, number, assembly_md.as_ref()) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::InvalidPart(format!(
                        "part {number} was not uploaded"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if !info.etag.eq_ignore_ascii_case(&want.etag) {
                return Err(StoreError::InvalidPart(format!(
                    "the ETag of part {number} does not match"
                )));
            }
            if !checksums_agree(&want.checksums, &info.checksums) {
                return Err(StoreError::InvalidPart(format!(
                    "the checksum of part {number} does not match"
                )));
            }
            parts.push(info);
            sources.push(data);
        }
        if let Some(small) = parts[..parts.len() - 1]
            .iter()
            .find(|p| p.size < MIN_PART_SIZE)
        {
            return Err(StoreError::EntityTooSmall(small.number as i32));
        }
        let size = parts.iter().map(|p| p.size).sum();
        Ok(Assembly {
            record,
            parts,
            size,
            sources,
            assembly,
            in_place,
            dir,
            _lock: lock,
        })
    }

    /// Concatenates the validated parts into the object (kernel copies, never through memory),
    /// commits it and removes the upload. Parts not listed are discarded with it.
    pub fn finish_upload(
        &self,
        assembly: Assembly,
        path: &ObjectPath,
        meta: ObjectMeta,
        mode: Commit,
    ) -> StoreResult<ObjectMeta> {
        let bucket = assembly.record.bucket.as_str();
        // Fail `If-None-Match: *` before the copy rather than after it; the commit still
        // decides atomically should the key appear meanwhile.
        if mode == Commit::CreateOnly && !path.is_folder_marker {
            let bfd = self.bucket_fd(bucket)?;
            if fsutil::open_beneath(bfd.as_fd(), &path.rel)
                .and_then(|f| f.metadata())
                .is_ok_and(|m| m.is_file())
            {
                return Err(StoreError::PreconditionFailed);
            }
        }
        let meta = if let Some(file) = self.assembly_in_place(&assembly)? {
            let dir = Arc::new(fsutil::open_dir(&assembly.dir)?);
            let tmp = TempFile::kept(file, dir, PathBuf::from(ASSEMBLY_FILE));
            self.commit(tmp, bucket, path, meta, mode)?
        } else {
            let tmp = self.create_temp(bucket)?;
            concatenate(&assembly, &tmp.file)?;
            self.commit(tmp, bucket, path, meta, mode)?
        };
        // The object is in place. A staging folder that cannot be removed is only clutter: the
        // upload can still be aborted.
        if let Err(e) = std::fs::remove_dir_all(&assembly.dir) {
            tracing::warn!(error = %e, dir = %assembly.dir.display(), "could not remove a completed upload's staging folder");
        }
        let _ = fsync_path(&self.uploads_dir());
        Ok(meta)
    }
}

impl Store {
    /// The assembly file, completed, when the listed parts allow it: every in-place part the
    /// upload holds is listed and already sits at its final offset. The other listed parts are
    /// then copied into the gaps between them, where only bytes no record describes can be.
    /// `None` leaves everything untouched, and the parts are concatenated into a new file.
    fn assembly_in_place(&self, assembly: &Assembly) -> StoreResult<Option<File>> {
        let Some(file) = &assembly.assembly else {
            return Ok(None);
        };
        if !self.bucket_on_root_fs(&assembly.record.bucket)? {
            return Ok(None);
        }
        let starts = final_offsets(&assembly.parts);
        let lined_up = assembly.in_place.iter().all(|&(number, off)| {
            assembly
                .parts
                .iter()
                .zip(&assembly.sources)
                .zip(&starts)
                .any(|((p, data), &start)| {
                    p.number == number
                        && start == off
                        && matches!(data, PartData::InPlace(o) if *o == off)
                })
        });
        if !lined_up {
            return Ok(None);
        }
        // The in-place parts were opened read-only for checking; writing needs a new handle.
        let out = File::options()
            .read(true)
            .write(true)
            .open(assembly.dir.join(ASSEMBLY_FILE))?;
        if out.metadata()?.ino() != file.metadata()?.ino() {
            return Ok(None);
        }
        for ((part, data), &start) in assembly.parts.iter().zip(&assembly.sources).zip(&starts) {
            if let PartData::File(src) = data {
                fsutil::copy_range_at(src, 0, &out, start, part.size)?;
            }
        }
        // Drops what lies past the object: bytes of parts no record describes any more.
        out.set_len(assembly.size)?;
        Ok(Some(out))
    }
}

/// Where each part starts in the finished object.
fn final_offsets(parts: &[PartInfo]) -> Vec<u64> {
    parts
        .iter()
        .scan(0u64, |off, p| {
            let start = *off;
            *off += p.size;
            Some(start)
        })
        .collect()
}

/// Copies the bytes of one part to `dst` at `start`.
fn copy_part(assembly: &Assembly, i: usize, dst: &File, start: u64) -> io::Result<()> {
    let size = assembly.parts[i].size;
    match &assembly.sources[i] {
        PartData::File(src) => fsutil::copy_range_at(src, 0, dst, start, size),
        PartData::InPlace(off) => {
            let src = assembly
                .assembly
                .as_ref()
                .ok_or_else(|| io::Error::other("in-place part without an assembly file"))?;
            fsutil::copy_range_at(src, *off, dst, start, size)
        }
    }
}

/// Copies the parts into `dst` at their final offsets. On a filesystem without reflinks the
/// kernel copies every byte (a 1 GiB upload is 1 GiB of memory copies, CPU bound): the parts
/// are split across a few threads, each copying whole parts to their own offsets.
fn concatenate(assembly: &Assembly, dst: &File) -> io::Result<()> {
    let starts = final_offsets(&assembly.parts);
    dst.set_len(assembly.size)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, COPY_THREADS);
    // Small uploads are not worth a thread.
    if threads == 1 || assembly.parts.len() < 2 || assembly.size < PARALLEL_COPY_MIN {
        for (i, start) in starts.iter().enumerate() {
            copy_part(assembly, i, dst, *start)?;
        }
        return Ok(());
    }
    // Part i goes to thread i % threads: parts are mostly the same size, so the work is even.
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let starts = &starts;
                scope.spawn(move || -> io::Result<()> {
                    for (i, start) in starts.iter().enumerate() {
                        if i % threads == t {
                            copy_part(assembly, i, dst, *start)?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("part copy thread panicked")))?;
        }
        Ok(())
    })
}

/// Most threads a completion copies with.
const COPY_THREADS: usize = 4;

/// Uploads smaller than this are concatenated on one thread.
const PARALLEL_COPY_MIN: u64 = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
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
    fn ids_and_part_names_are_strict() {
        assert!(is_upload_id(&uuid::Uuid::new_v4().simple().to_string()));
        for bad in [
            "",
            "../../etc",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde/",
        ] {
            assert!(!is_upload_id(bad), "{bad:?}");
        }
        assert_eq!(parse_part_name(&part_name(42)), Some(42));
        assert_eq!(parse_part_name("part-00000"), None);
        assert_eq!(parse_part_name("part-00001.json"), None);
        assert_eq!(parse_part_name("part-00001.json.abc.tmp"), None);
    }

    #[test]
    fn multipart_etag_matches_s3s_definition() {
        let a = hex::encode(Md5::digest(b"a"));
        let b = hex::encode(Md5::digest(b"b"));
        let mut cat = Md5::digest(b"a").to_vec();
        cat.extend_from_slice(&Md5::digest(b"b"));
        assert_eq!(
            multipart_etag([a.as_str(), b.as_str()]),
            format!("{}-2", hex::encode(Md5::digest(&cat)))
        );
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
