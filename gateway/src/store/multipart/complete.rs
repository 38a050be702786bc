//! CompleteMultipartUpload in the store: the upload is locked and its staged parts read (the S3
//! layer checks the client's part list against them), then the listed parts are assembled into
//! the object (renamed whole when they were written in place, else concatenated with kernel
//! copies) and the upload removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use md5::{Digest, Md5};

use super::records::{
    PartData, assembly_metadata, fsync_path, in_place_offset, lock, read_part, read_part_record,
    staged_part_numbers,
};
use super::{ASSEMBLY_FILE, CompletedUpload, PartInfo, UploadRecord};
use crate::store::keys::ObjectPath;
use crate::store::meta::ObjectMeta;
use crate::store::{Commit, Store, TempFile, fsutil};
use crate::store::{StoreError, StoreResult};

/// The parts of a completion, in order: the upload stays locked until this is finished or
/// dropped.
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

/// An upload locked for completion: its record and the parts its staging folder holds.
#[derive(Debug)]
pub struct Staged {
    /// What creation recorded.
    pub record: UploadRecord,
    /// Every part with bytes on record, by number.
    parts: BTreeMap<u32, (PartInfo, PartData)>,
    assembly: Option<File>,
    in_place: Vec<(u32, u64)>,
    dir: PathBuf,
    lock: File,
}

impl Staged {
    /// Part `number`, if it was uploaded.
    pub fn part(&self, number: u32) -> Option<&PartInfo> {
        self.parts.get(&number).map(|(info, _)| info)
    }

    /// The object made of the parts `numbers` names, in that order; the others are dropped
    /// with the upload when it is finished.
    pub fn assemble(mut self, numbers: &[u32]) -> StoreResult<Assembly> {
        let mut parts = Vec::with_capacity(numbers.len());
        let mut sources = Vec::with_capacity(numbers.len());
        for n in numbers {
            let (info, data) = self.parts.remove(n).ok_or(StoreError::NoSuchPart(*n))?;
            parts.push(info);
            sources.push(data);
        }
        Ok(Assembly {
            record: self.record,
            size: parts.iter().map(|p| p.size).sum(),
            parts,
            sources,
            assembly: self.assembly,
            in_place: self.in_place,
            dir: self.dir,
            _lock: self.lock,
        })
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

impl Store {
    /// Locks an upload for completion and reads what its staging folder holds, changing
    /// nothing. The upload stays locked (others wait) until the result is assembled and
    /// finished with [`Store::finish_upload`], or dropped.
    pub fn lock_upload(&self, bucket: &str, key: &str, id: &str) -> StoreResult<Staged> {
        let dir = self.upload_dir(id)?;
        let lock = lock(&dir, true)?;
        let record = self.open_upload(bucket, key, id)?;
        let assembly_md = assembly_metadata(&dir)?;
        let assembly = match &assembly_md {
            Some(_) => Some(File::open(dir.join(ASSEMBLY_FILE))?),
            None => None,
        };
        let mut in_place = Vec::new();
        let mut parts = BTreeMap::new();
        for number in staged_part_numbers(&dir)? {
            if let Some(off) = read_part_record(&dir, number)
                .and_then(|r| in_place_offset(&r, assembly_md.as_ref()))
            {
                in_place.push((number, off));
            }
            match read_part(&dir, number, assembly_md.as_ref()) {
                Ok(part) => {
                    parts.insert(number, part);
                }
                // No bytes on record: the part was never (fully) uploaded.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Staged {
            record,
            parts,
            assembly,
            in_place,
            dir,
            lock,
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
        if mode == Commit::CreateOnly && !path.is_folder_marker && self.object_exists(bucket, path)
        {
            return Err(StoreError::Exists);
        }
        let meta = if let Some(file) = self.assembly_in_place(&assembly)? {
            let dir = Arc::new(fsutil::open_dir(&assembly.dir)?);
            let tmp = TempFile::kept(file, dir, PathBuf::from(ASSEMBLY_FILE));
            self.commit(tmp, bucket, path, meta, mode)?
        } else {
            // A second copy of every byte, until the parts go with the upload.
            let _space = self.space().admit(Some(bucket), assembly.size)?;
            let tmp = self.create_temp(bucket)?;
            concatenate(&assembly, &tmp.file)?;
            self.commit(tmp, bucket, path, meta, mode)?
        };
        if let Some(id) = assembly.dir.file_name().and_then(|n| n.to_str()) {
            let done = CompletedUpload {
                bucket: bucket.to_owned(),
                key: path.key.clone(),
                etag: meta.etag.clone(),
                // As the first answer's `x-amz-version-id`: `null` in a suspended bucket too.
                version_id: self
                    .version_header(bucket, &meta)
                    .unwrap_or_else(|_| meta.version_id.clone()),
                checksums: meta.checksums.clone(),
            };
            self.remember_completed(id, &done);
        }
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
