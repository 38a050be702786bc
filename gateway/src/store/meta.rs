//! Object metadata: what S3 returns besides the bytes, kept with the object.
//!
//! Stored as JSON in the `user.nebula` extended attribute of the object's file (set on the temp
//! file before the rename, so bytes and metadata appear together), or in a sidecar file under
//! the reserved folder where the filesystem has no user xattrs.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::fsutil;

/// Name of the extended attribute that holds [`ObjectMeta`].
pub const XATTR_NAME: &CStr = c"user.nebula";

/// Files that arrived out of band and are larger than this get a derived ETag instead of a full
/// MD5, so the first listing of a large media folder does not read every byte.
pub const OUT_OF_BAND_MD5_LIMIT: u64 = 64 * 1024 * 1024;

/// Read size for hashing and streaming files: large blocks keep syscalls and wakeups rare.
pub const IO_BLOCK: usize = 1024 * 1024;

/// Checksums supplied by the client at upload, returned on full-object GET/HEAD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredChecksums {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// S3 metadata of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// ETag without quotes: hex MD5, or `hex-N` for multipart objects.
    pub etag: String,
    /// Size the metadata was recorded for; a mismatch means the file changed out of band.
    pub size: u64,
    /// Modification time (ns since epoch) the metadata was recorded for.
    pub mtime_ns: i128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// The `Expires` header as an HTTP date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// `x-amz-meta-*` pairs (names lower-case, without the prefix).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    #[serde(default)]
    pub checksums: StoredChecksums,
    /// Number of parts for multipart objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    /// A multipart object's part sizes as runs of `[count, size]` (usually two: the equal
    /// parts and the last), for GetObject `partNumber` and GetObjectAttributes. Empty for other
    /// objects, for those completed before sizes were kept, and when the sizes vary too much
    /// to fit the metadata record (see [`PartSizes::of`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub part_sizes: Vec<[u64; 2]>,
    /// Object tags (key, value) in the order set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// The version id, for versions written while versioning was enabled (`None` is the
    /// null version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// True for a delete marker (an empty file kept among a key's versions).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_marker: bool,
    /// Object lock retention of this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Object lock legal hold of this version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legal_hold: bool,
    /// The version's ACL (`None`: private, the owner's full control only). Set by the write
    /// that made the version and by PutObjectAcl; never copied with the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<AclGrant>>,
}

/// One ACL grant, as kept with an object version ([`ObjectMeta::acl`]) and in a bucket's
/// `acl` setting. What a grant allows is decided in `crate::access::acl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclGrant {
    /// Who is granted.
    pub grantee: AclGrantee,
    /// What is granted.
    pub permission: AclPermission,
}

/// An ACL grantee: one canonical user (an access key id of this gateway, or the owner's id),
/// or one of S3's two groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclGrantee {
    /// A canonical user id.
    User(String),
    /// Everyone, signed or not.
    AllUsers,
    /// Every valid key of this gateway.
    AuthenticatedUsers,
}

/// An ACL permission, as S3 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AclPermission {
    /// All of the others.
    FullControl,
    /// List a bucket, read an object.
    Read,
    /// Put and delete a bucket's objects.
    Write,
    /// Read the ACL.
    ReadAcp,
    /// Change the ACL.
    WriteAcp,
}

/// Part sizes kept as runs, so a 10 000-part upload of equal parts stays a few bytes of the
/// `user.nebula` record (an extended attribute, a few KiB at most).
pub struct PartSizes;

impl PartSizes {
    /// Most runs kept; beyond it the sizes are not recorded.
    pub const MAX_RUNS: usize = 64;

    /// The runs of `sizes`, or none when there would be more than [`Self::MAX_RUNS`].
    pub fn of(sizes: impl IntoIterator<Item = u64>) -> Vec<[u64; 2]> {
        let mut runs: Vec<[u64; 2]> = Vec::new();
        for size in sizes {
            match runs.last_mut() {
                Some(run) if run[1] == size => run[0] += 1,
                _ => runs.push([1, size]),
            }
            if runs.len() > Self::MAX_RUNS {
                return Vec::new();
            }
        }
        runs
    }

    /// Offset and size of part `n` (1-based), if the runs hold it.
    pub fn part(runs: &[[u64; 2]], n: u64) -> Option<(u64, u64)> {
        let (mut offset, mut first) = (0u64, 1u64);
        for &[count, size] in runs {
            if n < first + count {
                return Some((offset + (n - first) * size, size));
            }
            offset += count * size;
            first += count;
        }
        None
    }

    /// Every part's size, in order.
    pub fn sizes(runs: &[[u64; 2]]) -> impl Iterator<Item = u64> + '_ {
        runs.iter()
            .flat_map(|&[count, size]| std::iter::repeat_n(size, count as usize))
    }
}

/// Object lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionMode {
    /// Removable early by a request that bypasses governance retention.
    Governance,
    /// Removable by nobody until it expires.
    Compliance,
}

/// Object lock retention of one version: nobody deletes or overwrites it before `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The mode.
    pub mode: RetentionMode,
    /// Retain until (milliseconds since the Unix epoch).
    pub until_ms: i64,
}

/// Modification time of a file in nanoseconds since the epoch.
pub fn mtime_ns(md: &std::fs::Metadata) -> i128 {
    i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec())
}

impl ObjectMeta {
    /// True when the metadata was recorded for the file as it is now.
    pub fn matches(&self, md: &std::fs::Metadata) -> bool {
        self.size == md.len() && self.mtime_ns == mtime_ns(md)
    }

    /// Metadata for a file that arrived out of band: guessed type, computed or derived ETag.
    pub fn for_out_of_band(
        file: &mut File,
        md: &std::fs::Metadata,
        name: &str,
    ) -> std::io::Result<Self> {
        let etag = if md.len() <= OUT_OF_BAND_MD5_LIMIT {
            md5_of_file(file)?
        } else {
            derived_etag(md)
        };
        Ok(ObjectMeta {
            etag,
            size: md.len(),
            mtime_ns: mtime_ns(md),
            content_type: Some(guess_content_type(name)),
            ..Default::default()
        })
    }
}

/// Content type guessed from the key's extension.
pub fn guess_content_type(name: impl AsRef<Path>) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

/// A stable multipart-style ETag for large out-of-band files (not an MD5, which clients know
/// from the `-1` suffix), derived from identity, size and modification time.
fn derived_etag(md: &std::fs::Metadata) -> String {
    let mut h = Md5::new();
    h.update(format!(
        "{}:{}:{}:{}",
        md.dev(),
        md.ino(),
        md.len(),
        mtime_ns(md)
    ));
    format!("{}-1", hex::encode(h.finalize()))
}

/// Hex MD5 of a whole file, read in large blocks.
pub fn md5_of_file(file: &mut File) -> std::io::Result<String> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; IO_BLOCK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Largest record ext4 keeps inside a 256-byte inode under our attribute name (measured: 64
/// bytes fit, 68 take a block of their own).
const IN_INODE_RECORD: usize = 64;

/// The compact form of a record holding nothing but what every object has, with the content
/// type the key's extension implies: `1 <etag> <size hex> <mtime ns hex>`. It fits inside the
/// inode, so a PUT allocates (and a DELETE or overwrite frees) no extra block for it, and a GET
/// reads none. Anything richer is stored as JSON.
fn encode_compact(meta: &ObjectMeta, rel: &Path) -> Option<String> {
    let plain = meta.content_disposition.is_none()
        && meta.content_encoding.is_none()
        && meta.content_language.is_none()
        && meta.cache_control.is_none()
        && meta.expires.is_none()
        && meta.user.is_empty()
        && meta.checksums == StoredChecksums::default()
        && meta.parts.is_none()
        && meta.version_id.is_none()
        && !meta.delete_marker
        && meta.retention.is_none()
        && !meta.legal_hold
        && meta.acl.is_none()
        && meta.tags.is_empty()
        && meta.mtime_ns >= 0
        && !meta.etag.is_empty()
        && !meta.etag.contains(' ')
        && meta.content_type.as_deref() == Some(guess_content_type(rel).as_str());
    if !plain {
        return None;
    }
    let s = format!("1 {} {:x} {:x}", meta.etag, meta.size, meta.mtime_ns);
    (s.len() <= IN_INODE_RECORD).then_some(s)
}

fn decode_compact(raw: &[u8], rel: &Path) -> Option<ObjectMeta> {
    let s = std::str::from_utf8(raw.strip_prefix(b"1 ")?).ok()?;
    let mut fields = s.split(' ');
    let etag = fields.next()?.to_owned();
    let size = u64::from_str_radix(fields.next()?, 16).ok()?;
    let mtime_ns = i128::from_str_radix(fields.next()?, 16).ok()?;
    if fields.next().is_some() || etag.is_empty() {
        return None;
    }
    Some(ObjectMeta {
        etag,
        size,
        mtime_ns,
        content_type: Some(guess_content_type(rel)),
        ..Default::default()
    })
}

/// Parses a record in either form.
fn decode_record(raw: &[u8], rel: &Path) -> Option<ObjectMeta> {
    if raw.first() == Some(&b'{') {
        serde_json::from_slice(raw).ok()
    } else {
        decode_compact(raw, rel)
    }
}

/// Reads and parses the `user.nebula` xattr of an open file (usually one `fgetxattr` into a
/// stack buffer: see [`fsutil::with_xattr`]).
fn read_xattr_record(file: &File, rel: &Path) -> Option<ObjectMeta> {
    fsutil::with_xattr(file, XATTR_NAME, |raw| decode_record(raw, rel))
        .ok()
        .flatten()
        .flatten()
}

/// Where metadata is kept on this data folder.
#[derive(Debug, Clone)]
pub enum MetaStore {
    /// In the object's own `user.nebula` xattr.
    Xattr,
    /// In sidecar files below this folder (`<bucket>/<key>.json`).
    Sidecar(PathBuf),
}

impl MetaStore {
    /// Uses xattrs when the data folder supports them, sidecars otherwise.
    pub fn probe(data_dir: &Path, sidecar_dir: PathBuf) -> Self {
        let probe = data_dir.join(".nebula").join("xattr-probe");
        let name = c"user.nebula.probe";
        let ok = File::create(&probe)
            .and_then(|f| {
                fsutil::set_xattr(&f, name, b"1")?;
                fsutil::with_xattr(&f, name, |v| v == b"1")
            })
            .is_ok_and(|v| v == Some(true));
        let _ = std::fs::remove_file(&probe);
        if ok {
            MetaStore::Xattr
        } else {
            MetaStore::Sidecar(sidecar_dir)
        }
    }

    fn sidecar_path(dir: &Path, bucket: &str, rel: &Path, folder: bool) -> PathBuf {
        let mut p = dir.join(bucket).join(rel).into_os_string();
        p.push(if folder { ".dir.json" } else { ".json" });
        PathBuf::from(p)
    }

    /// Reads the metadata of an open object file (or folder, for markers).
    pub fn read(&self, file: &File, bucket: &str, rel: &Path, folder: bool) -> Option<ObjectMeta> {
        let raw = match self {
            MetaStore::Xattr => return read_xattr_record(file, rel),
            MetaStore::Sidecar(dir) => {
                std::fs::read(Self::sidecar_path(dir, bucket, rel, folder)).ok()?
            }
        };
        serde_json::from_slice(&raw).ok()
    }

    /// Writes metadata for a file that is about to be renamed to `rel` (or already is there).
    pub fn write(
        &self,
        file: &File,
        bucket: &str,
        rel: &Path,
        folder: bool,
        meta: &ObjectMeta,
    ) -> std::io::Result<()> {
        match self {
            MetaStore::Xattr => {
                let raw = match encode_compact(meta, rel).filter(|_| !folder) {
                    Some(compact) => compact.into_bytes(),
                    None => serde_json::to_vec(meta).map_err(std::io::Error::other)?,
                };
                fsutil::set_xattr(file, XATTR_NAME, &raw)
            }
            MetaStore::Sidecar(dir) => {
                let raw = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
                let path = Self::sidecar_path(dir, bucket, rel, folder);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
                std::fs::write(&tmp, &raw)?;
                std::fs::rename(&tmp, &path)
            }
        }
    }

    /// Forgets the metadata of a deleted object.
    pub fn remove(&self, file: Option<&File>, bucket: &str, rel: &Path, folder: bool) {
        match self {
            MetaStore::Xattr => {
                if let Some(f) = file {
                    let _ = fsutil::remove_xattr(f, XATTR_NAME);
                }
            }
            MetaStore::Sidecar(dir) => {
                let _ = std::fs::remove_file(Self::sidecar_path(dir, bucket, rel, folder));
            }
        }
    }
}

/// What `stat` says about a version of a file. Any change to the bytes, the xattrs or the name
/// of a file moves its ctime, so metadata recorded for one stamp holds as long as the file
/// still shows that stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of a file from its metadata.
    pub fn of(md: &std::fs::Metadata) -> Self {
        FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime_ns: mtime_ns(md),
            ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
        }
    }

    /// The file's identity: device and inode.
    pub fn id(&self) -> FileId {
        (self.dev, self.ino)
    }

    /// The stamp from a raw `statx` result (listing, which stats without opening).
    pub fn of_statx(st: &fsutil::Statx) -> Self {
        let ns = |t: &rustix::fs::StatxTimestamp| {
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        FileStamp {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            size: st.stx_size,
            mtime_ns: ns(&st.stx_mtime),
            ctime_ns: ns(&st.stx_ctime),
        }
    }
}

/// Device and inode number.
pub type FileId = (u64, u64);

/// Entries kept before the cache starts over: bounds its memory to a few MiB.
const META_CACHE_ENTRIES: usize = 16 * 1024;

/// Recently read object metadata by file, so a hot GET or a repeated listing does not read and
/// parse the xattr again (on ext4 a record this size lives in an extra block: the `getxattr`
/// costs more than the rest of the lookup). Entries are checked against the file's current
/// [`FileStamp`], so a changed file is never answered from here.
#[derive(Debug, Default)]
pub struct MetaCache {
    map: std::sync::Mutex<
        std::collections::HashMap<FileId, (FileStamp, std::sync::Arc<ObjectMeta>)>,
    >,
}

impl MetaCache {
    /// The metadata recorded for this version of the file, if cached.
    pub fn get(&self, stamp: &FileStamp) -> Option<std::sync::Arc<ObjectMeta>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let found = match map.get(&(stamp.dev, stamp.ino)) {
            Some((s, meta)) if s == stamp => Some(meta.clone()),
            _ => None,
        };
        crate::metrics::cache(crate::metrics::Cache::Metadata, found.is_some());
        found
    }

    /// Drops what is kept for the file `id` (another gateway changed the object there).
    pub fn forget(&self, id: FileId) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Drops everything (changes made elsewhere may have been missed).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Remembers the metadata of a file version (replacing what was kept for that file).
    pub fn put(&self, stamp: FileStamp, meta: &ObjectMeta) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= META_CACHE_ENTRIES {
            // Starting over is simpler than LRU and costs only re-reads of xattrs.
            map.clear();
        }
        map.insert(
            (stamp.dev, stamp.ino),
            (stamp, std::sync::Arc::new(meta.clone())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            etag: "0123456789abcdef0123456789abcdef".into(),
            size,
            mtime_ns: 1_796_197_935_866_208_404,
            content_type: Some(guess_content_type(key)),
            ..Default::default()
        }
    }

    #[test]
    fn plain_records_are_compact_enough_to_live_in_the_inode() {
        for size in [0, 4096, 16 << 20, 1 << 40] {
            let meta = plain("photos/cat.jpg", size);
            let raw = encode_compact(&meta, Path::new("photos/cat.jpg")).unwrap();
            assert!(raw.len() <= IN_INODE_RECORD, "{raw}");
            assert_eq!(
                decode_record(raw.as_bytes(), Path::new("photos/cat.jpg")),
                Some(meta)
            );
        }
    }

    #[test]
    fn anything_more_is_json_and_old_json_records_still_read() {
        let rel = Path::new("a.txt");
        let mut typed = plain("a.txt", 3);
        typed.content_type = Some("application/x-custom".into());
        let mut user = plain("a.txt", 3);
        user.user.insert("origin".into(), "camera".into());
        let mut multipart = plain("a.txt", 3);
        multipart.etag = "0123456789abcdef0123456789abcdef-3".into();
        multipart.parts = Some(3);
        let mut tagged = plain("a.txt", 3);
        tagged.tags.push(("project".into(), "nebula".into()));
        for meta in [typed, user, multipart, tagged] {
            assert_eq!(encode_compact(&meta, rel), None);
            let json = serde_json::to_vec(&meta).unwrap();
            assert_eq!(decode_record(&json, rel), Some(meta));
        }
        assert_eq!(decode_record(b"1 abc zz 1", rel), None);
        assert_eq!(decode_record(b"garbage", rel), None);
    }

    #[test]
    fn xattr_round_trip_on_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".nebula")).unwrap();
        let store = MetaStore::probe(dir.path(), dir.path().join("sidecars"));
        let store = match store {
            MetaStore::Xattr => store,
            // No user xattrs here (tmpfs on old kernels): the sidecar path is tested elsewhere.
            MetaStore::Sidecar(_) => {
                eprintln!("no user xattrs in {}: skipped", dir.path().display());
                return;
            }
        };
        let path = dir.path().join("v.mp4");
        let file = File::create(&path).unwrap();
        let meta = plain("v.mp4", 1 << 30);
        store
            .write(&file, "b", Path::new("v.mp4"), false, &meta)
            .unwrap();
        let raw = fsutil::with_xattr(&file, XATTR_NAME, <[u8]>::to_vec)
            .unwrap()
            .unwrap();
        assert!(raw.starts_with(b"1 ") && raw.len() <= IN_INODE_RECORD);
        assert_eq!(
            store.read(&file, "b", Path::new("v.mp4"), false),
            Some(meta)
        );
    }

    #[test]
    fn part_sizes_are_runs() {
        let runs = PartSizes::of([5, 5, 5, 2]);
        assert_eq!(runs, vec![[3, 5], [1, 2]]);
        assert_eq!(PartSizes::part(&runs, 1), Some((0, 5)));
        assert_eq!(PartSizes::part(&runs, 3), Some((10, 5)));
        assert_eq!(PartSizes::part(&runs, 4), Some((15, 2)));
        assert_eq!(PartSizes::part(&runs, 5), None);
        assert_eq!(
            PartSizes::sizes(&runs).collect::<Vec<_>>(),
            vec![5, 5, 5, 2]
        );
        assert!(PartSizes::of(1..=100).is_empty(), "too varied to keep");
    }
}
