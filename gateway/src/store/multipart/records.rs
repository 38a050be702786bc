//! The files of a staging folder: the upload's record, the parts' records and files, and the
//! lock that orders what happens to them.
//!
//! A part file's record is written before the bytes are renamed into place and names the inode
//! it describes: a record that lost a race with another upload of the same part number (or a
//! crash between the two renames) is recognised, and the part's MD5 is then recomputed from the
//! bytes instead of trusted. An in-place part's record is written only after its bytes are on
//! disk.
//!
//! A `flock` on the staging folder orders the steps that must not interleave: part commits (and
//! in-place parts for as long as they write) hold it shared, completion and abort hold it
//! exclusively and then remove the folder, so whoever waited finds the upload gone instead of
//! half-assembled, and no part is still writing into an assembly file being completed.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{ASSEMBLY_FILE, MAX_PART_NUMBER, PartInfo, UPLOAD_FILE, UploadRecord};
use crate::store::fsutil;
use crate::store::meta::{StoredChecksums, md5_of_file};
use crate::store::{StoreError, StoreResult};

/// `part-NNNNN.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PartRecord {
    pub(super) size: u64,
    pub(super) md5: String,
    #[serde(default)]
    pub(super) checksums: StoredChecksums,
    /// Inode of the `part-NNNNN` file (or of the assembly file) this record describes.
    pub(super) ino: u64,
    /// Offset of the bytes in the assembly file, for a part written in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) in_place: Option<u64>,
}

/// Where a part's bytes are.
#[derive(Debug)]
pub(super) enum PartData {
    /// Its own file.
    File(File),
    /// The assembly file, from this offset.
    InPlace(u64),
}

pub(super) fn part_name(number: u32) -> String {
    format!("part-{number:05}")
}

/// The part number of a part file or of its record.
pub(super) fn part_number_of_entry(name: &str) -> Option<u32> {
    parse_part_name(name.strip_suffix(".json").unwrap_or(name))
}

pub(super) fn parse_part_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("part-")?;
    if digits.len() != 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    (1..=MAX_PART_NUMBER).contains(&n).then_some(n)
}

pub(super) fn no_upload_if_missing(e: io::Error) -> StoreError {
    if matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) {
        StoreError::NoSuchUpload
    } else {
        StoreError::from(e)
    }
}

/// Locks a staging folder and checks the upload is still there (it may have been completed or
/// aborted while we waited).
pub(super) fn lock(dir: &Path, exclusive: bool) -> StoreResult<File> {
    let f = File::open(dir).map_err(no_upload_if_missing)?;
    fsutil::lock(&f, exclusive)?;
    if !dir.join(UPLOAD_FILE).exists() {
        return Err(StoreError::NoSuchUpload);
    }
    Ok(f)
}

/// Writes `name` in `dir` so readers see the old or the new content, never a partial one.
pub(super) fn write_json_atomic(dir: &Path, name: &str, value: &impl Serialize) -> io::Result<()> {
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

pub(super) fn read_record(dir: &Path) -> StoreResult<UploadRecord> {
    let raw = std::fs::read(dir.join(UPLOAD_FILE)).map_err(no_upload_if_missing)?;
    serde_json::from_slice(&raw)
        .map_err(|e| StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

pub(super) fn fsync_path(dir: &Path) -> io::Result<()> {
    fsutil::fsync_dir(fsutil::open_dir(dir)?.as_fd())
}

pub(super) fn read_part_record(dir: &Path, number: u32) -> Option<PartRecord> {
    std::fs::read(dir.join(format!("{}.json", part_name(number))))
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
}

/// The in-place offset of a record, if its bytes are still in `assembly` as recorded.
pub(super) fn in_place_offset(
    record: &PartRecord,
    assembly: Option<&std::fs::Metadata>,
) -> Option<u64> {
    let off = record.in_place?;
    let md = assembly?;
    (md.ino() == record.ino && md.len() >= off + record.size).then_some(off)
}

/// Opens a part with what is known about it (see the module docs on stale records).
/// `NotFound` when the part has no bytes on record.
pub(super) fn read_part(
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
pub(super) fn assembly_metadata(dir: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(dir.join(ASSEMBLY_FILE)) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The part numbers that have a file or a record in a staging folder.
pub(super) fn staged_part_numbers(dir: &Path) -> StoreResult<Vec<u32>> {
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

#[cfg(test)]
mod tests {
    use super::super::is_upload_id;
    use super::*;

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
}
