//! CompleteMultipartUpload in the store: the listed parts are checked against the staged ones
//! without changing anything, then assembled into the object (renamed whole when the parts were
//! written in place, else concatenated with kernel copies) and the upload removed.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use md5::{Digest, Md5};

use super::records::{
    PartData, assembly_metadata, fsync_path, in_place_offset, lock, read_part, read_part_record,
    staged_part_numbers,
};
use super::{ASSEMBLY_FILE, MAX_PART_NUMBER, MIN_PART_SIZE, PartInfo, UploadRecord};
use crate::error::{StoreError, StoreResult};
use crate::store::keys::ObjectPath;
use crate::store::meta::{ObjectMeta, StoredChecksums};
use crate::store::{Commit, Store, TempFile, fsutil};

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
}
