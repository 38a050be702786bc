//! The filesystem backend: bucket = top-level folder of the data folder, key = relative path.
//!
//! Everything the gateway keeps for itself lives in the reserved folder `DATA/.nebula/`, which no
//! bucket name can reach (bucket names cannot start with a dot). All calls here are blocking;
//! the S3 layer runs them on tokio's blocking pool.
//!
//! The rest of the gateway reaches files only through this module: [`keys`] maps keys to
//! paths, [`layout`] finds an object's file when its name is also a folder's, [`walk`] is the one folder walker (listings, the catalog scan, DeleteBucket),
//! [`read`] runs store calls off the async runtime and streams file bodies, [`error`] says
//! what the store refused or failed at, [`settings`] keeps each bucket's settings documents
//! (CORS, policy, versioning, ...), [`versions`] keeps the versions of versioned buckets
//! beside the plain current files, [`space`] keeps the free-space reserve (`--min-free`)
//! that refuses writes before a disk is full, [`fsutil`] makes every filesystem call below std
//! through `rustix` (or std, for `flock`), and [`sys`] holds the workspace's only `unsafe`
//! code (the calls nothing safe wraps).

pub mod error;
pub mod fsutil;
pub mod keyfile;
pub mod keys;
pub mod layout;
pub mod meta;
pub mod multipart;
pub mod read;
pub mod settings;
pub mod space;
pub mod sys;
pub mod versions;
pub mod walk;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use error::{StoreError, StoreResult};
use keys::{BUCKET_TMP_PREFIX, ObjectPath};
use meta::{FileStamp, MetaCache, MetaStore, ObjectMeta};

/// Name of the reserved folder inside the data folder.
pub const RESERVED_DIR: &str = ".nebula";

/// ETag of the empty body.
pub const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// A bucket as ListBuckets shows it.
#[derive(Debug, Clone)]
pub struct BucketInfo {
    /// Folder name.
    pub name: String,
    /// Creation (or, where the filesystem has no birth time, modification) time.
    pub created: SystemTime,
}

/// An object opened for reading: the file, its metadata and its current size.
#[derive(Debug)]
pub struct ObjectHandle {
    /// The open file (a folder for folder markers).
    pub file: File,
    /// S3 metadata, recorded or derived.
    pub meta: ObjectMeta,
    /// Size in bytes.
    pub size: u64,
    /// Last-Modified.
    pub modified: SystemTime,
}

/// A temp file on the same filesystem as its destination; removed on drop unless committed.
#[derive(Debug)]
pub struct TempFile {
    /// The open temp file.
    pub file: File,
    dir: Arc<OwnedFd>,
    name: PathBuf,
    done: bool,
}

impl TempFile {
    /// A file that is committed like a temp file but is never removed by the drop: a
    /// multipart upload's assembly file, which must survive a failed completion because its
    /// parts are still the upload's.
    pub(crate) fn kept(file: File, dir: Arc<OwnedFd>, name: PathBuf) -> Self {
        TempFile {
            file,
            dir,
            name,
            done: true,
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fsutil::unlink_at(self.dir.as_fd(), &self.name);
        }
    }
}

/// How a commit treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Replace whatever is there.
    Replace,
    /// Fail with PreconditionFailed if the key exists (`If-None-Match: *`).
    CreateOnly,
}

/// The filesystem backend.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// The data folder, for `*at` lookups of bucket folders.
    root_fd: OwnedFd,
    internal: PathBuf,
    /// This process's temp folder, `DATA/.nebula/tmp/<owner>` (see [`OWNER_LOCK`]).
    tmp: PathBuf,
    /// The temp folder, opened once: every upload creates a file in it. Replaced if the
    /// folder is (by hand, say).
    tmp_fd: std::sync::RwLock<Arc<OwnedFd>>,
    /// The lock that marks the temp folder as in use while this process lives.
    _tmp_owner: File,
    root_dev: u64,
    meta: MetaStore,
    /// Metadata of recently opened or listed objects, by file version.
    meta_cache: MetaCache,
    /// Sorted listings of big folders, by folder version.
    dir_cache: walk::DirCache,
    /// Write turns in multipart assembly files.
    assembly_writes: multipart::AssemblyWrites,
    /// Per-bucket settings documents.
    settings: settings::BucketSettings,
    /// The free-space reserve writes are admitted against (off unless set).
    space: space::Space,
}

impl Store {
    /// Opens (creating if needed) a data folder for serving: probes xattr support and removes
    /// temp files left by a crash.
    pub fn open(root: &Path) -> io::Result<Self> {
        let store = Self::open_shared(root)?;
        // A versioned write or delete cut short by a crash is finished or undone.
        store.recover_versions().map_err(io::Error::other)?;
        Ok(store)
    }

    /// Opens a data folder that other gateways (or a `reindex`) may be using at the same
    /// time. Each process stages its temp files in a folder of its own, locked while it
    /// lives; only the folders of processes that are gone (a crash) are removed, so the
    /// uploads in progress of the others are untouched.
    pub fn open_shared(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let internal = root.join(RESERVED_DIR);
        std::fs::create_dir_all(&internal)?;
        std::fs::set_permissions(
            &internal,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let tmp_root = internal.join("tmp");
        std::fs::create_dir_all(&tmp_root)?;
        let (tmp, tmp_owner) = own_temp_dir(&tmp_root)?;
        std::fs::create_dir_all(internal.join("multipart"))?;
        let meta = MetaStore::probe(&root, internal.join("meta"));
        let root_dev = std::fs::metadata(&root)?.dev();
        let root_fd = fsutil::open_dir(&root)?;
        let tmp_fd = std::sync::RwLock::new(Arc::new(fsutil::open_dir(&tmp)?));
        let settings = settings::BucketSettings::new(&internal);
        let space = space::Space::new(space::MinFree::Off, &root, root_dev);
        let store = Store {
            root,
            root_fd,
            internal,
            tmp,
            tmp_fd,
            _tmp_owner: tmp_owner,
            root_dev,
            meta,
            meta_cache: MetaCache::default(),
            dir_cache: walk::DirCache::default(),
            assembly_writes: multipart::AssemblyWrites::default(),
            settings,
            space,
        };
        // Buckets first: whether a bucket's temp folder is dead is told by the lock of the
        // owner's folder in the reserved temp folder.
        store.clean_bucket_temp_dirs(&tmp_root);
        clean_dead_temp_dirs(&tmp_root, &store.tmp);
        Ok(store)
    }

    /// The name of this process's temp folders (in the reserved folder and in buckets on
    /// other filesystems).
    fn tmp_owner(&self) -> &std::ffi::OsStr {
        self.tmp.file_name().unwrap_or_default()
    }

    /// Removes what dead processes left in the temp folders of buckets on other filesystems.
    fn clean_bucket_temp_dirs(&self, tmp_root: &Path) {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path().join(BUCKET_TMP_PREFIX);
            let Ok(entries) = std::fs::read_dir(&p) else {
                continue;
            };
            for t in entries.flatten() {
                let name = t.file_name();
                let live = name == self.tmp_owner()
                    || (t.file_type().is_ok_and(|ft| ft.is_dir())
                        && tmp_root.join(&name).is_dir()
                        && !owner_gone(&tmp_root.join(&name)));
                if !live {
                    let _ = std::fs::remove_dir_all(t.path())
                        .or_else(|_| std::fs::remove_file(t.path()));
                }
            }
        }
    }

    /// Keeps `min_free` free on every filesystem written to: writes that would leave less are
    /// refused (see [`space`]). Off until set.
    pub fn with_min_free(mut self, min_free: space::MinFree) -> Self {
        self.space = space::Space::new(min_free, &self.root, self.root_dev);
        self
    }

    /// The free-space reserve.
    pub fn space(&self) -> &space::Space {
        &self.space
    }

    /// The data folder's filesystem and those of buckets on other disks, with their free
    /// space and reserve. Blocking.
    pub fn space_report(&self) -> Vec<space::FsReport> {
        let buckets: Vec<String> = self
            .list_buckets()
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.name)
            .collect();
        self.space.report(&buckets)
    }

    /// The data folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The reserved folder (`DATA/.nebula`).
    pub fn internal_dir(&self) -> &Path {
        &self.internal
    }

    /// Where object metadata is kept.
    pub fn meta_store(&self) -> &MetaStore {
        &self.meta
    }

    /// Recorded metadata of a regular file as it is now (`md` from the open file), from the
    /// cache or the metadata store; `None` if none is recorded or it no longer matches.
    /// `rel` and `folder` are the key's ([`ObjectPath`]), wherever its file is.
    pub fn recorded_meta(
        &self,
        file: &File,
        md: &std::fs::Metadata,
        bucket: &str,
        rel: &Path,
        folder: bool,
    ) -> Option<ObjectMeta> {
        let stamp = FileStamp::of(md);
        if let Some(m) = self.meta_cache.get(&stamp) {
            return Some((*m).clone());
        }
        let meta = self.meta.read(file, bucket, rel, folder)?;
        if !meta.matches(md) {
            return None;
        }
        self.meta_cache.put(stamp, &meta);
        Some(meta)
    }

    /// The cached ETag of a listed file version (see [`MetaCache`]).
    pub(crate) fn cached_etag(&self, stamp: &FileStamp) -> Option<String> {
        self.meta_cache.get(stamp).map(|m| m.etag.clone())
    }

    fn bucket_path(&self, bucket: &str) -> StoreResult<PathBuf> {
        if bucket.starts_with('.')
            || bucket.contains('/')
            || bucket.is_empty()
            || !s3s::path::check_bucket_name(bucket)
        {
            return Err(StoreError::InvalidBucketName(bucket.to_owned()));
        }
        Ok(self.root.join(bucket))
    }

    /// Opens a bucket folder as a descriptor for `*at` calls.
    pub fn bucket_fd(&self, bucket: &str) -> StoreResult<OwnedFd> {
        let path = self.bucket_path(bucket)?;
        fsutil::open_dir(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => StoreError::NoSuchBucket,
            _ => StoreError::from(e),
        })
    }

    /// Lists bucket folders in name order.
    pub fn list_buckets(&self) -> StoreResult<Vec<BucketInfo>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root)? {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') || !s3s::path::check_bucket_name(&name) {
                continue;
            }
            let Ok(md) = std::fs::metadata(e.path()) else {
                continue;
            };
            if !md.is_dir() {
                continue;
            }
            let created = md
                .created()
                .or_else(|_| md.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(BucketInfo { name, created });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates a bucket folder; `Ok(false)` if it existed already.
    pub fn create_bucket(&self, bucket: &str) -> StoreResult<bool> {
        let path = self.bucket_path(bucket)?;
        match std::fs::create_dir(&path) {
            Ok(()) => {
                if let Ok(d) = fsutil::open_dir(&self.root) {
                    let _ = fsutil::fsync_dir(d.as_fd());
                }
                // Settings and versions left by a bucket of this name removed out of band must
                // not apply.
                self.settings.remove_bucket(bucket)?;
                self.remove_versions_of_bucket(bucket)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if path.is_dir() {
                    Ok(false)
                } else {
                    Err(StoreError::InvalidBucketName(format!(
                        "{bucket} (a file of that name is in the data folder)"
                    )))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an empty bucket (folders without objects count as empty).
    pub fn delete_bucket(&self, bucket: &str) -> StoreResult<()> {
        let path = self.bucket_path(bucket)?;
        self.bucket_fd(bucket)?;
        if walk::has_any_object(self, bucket)? || self.has_kept_versions(bucket)? {
            return Err(StoreError::BucketNotEmpty);
        }
        // Unfinished uploads must not come back if a bucket of the same name is created again.
        self.abort_uploads_of_bucket(bucket)?;
        std::fs::remove_dir_all(&path)?;
        self.remove_versions_of_bucket(bucket)?;
        if let MetaStore::Sidecar(dir) = &self.meta {
            let _ = std::fs::remove_dir_all(dir.join(bucket));
        }
        self.settings.remove_bucket(bucket)
    }

    /// The per-bucket settings (CORS, policy, versioning, ...).
    pub fn settings(&self) -> &settings::BucketSettings {
        &self.settings
    }

    /// Opens an object and returns it with its metadata (recorded, or derived for files that
    /// arrived out of band or changed since). Where the object lives is [`layout`]'s rule:
    /// the plain file, or a reserved file inside the folder of the key's name.
    pub fn open_object(&self, bucket: &str, path: &ObjectPath) -> StoreResult<ObjectHandle> {
        let bfd = self.bucket_fd(bucket)?;
        let named =
            fsutil::open_beneath(bfd.as_fd(), &path.rel).map_err(StoreError::from_lookup)?;
        let md = named.metadata()?;
        if path.is_folder_marker && !md.is_dir() {
            return Err(StoreError::NoSuchKey);
        }
        let (mut file, md) = if md.is_dir() {
            let inner = if path.is_folder_marker {
                keys::MARKER_BYTES
            } else {
                keys::OBJECT_IN_FOLDER
            };
            match fsutil::open_file_nofollow(named.as_fd(), inner) {
                Ok(f) => {
                    let md = f.metadata()?;
                    (f, md)
                }
                Err(e) if path.is_folder_marker && e.kind() == io::ErrorKind::NotFound => {
                    return self.open_empty_marker(named, &md, bucket, path);
                }
                Err(e) => return Err(StoreError::from_lookup(e)),
            }
        } else {
            (named, md)
        };
        if !md.is_file() {
            return Err(StoreError::NoSuchKey);
        }
        let folder = path.is_folder_marker;
        let meta = match self.recorded_meta(&file, &md, bucket, &path.rel, folder) {
            Some(m) => m,
            None => {
                let stale = self.meta.read(&file, bucket, &path.rel, folder);
                let mut fresh = ObjectMeta::for_out_of_band(&mut file, &md, &path.key)?;
                if let Some(old) = stale {
                    // The bytes changed out of band: keep what the uploader said about them,
                    // but not digests that no longer hold.
                    fresh = ObjectMeta {
                        checksums: Default::default(),
                        parts: None,
                        ..ObjectMeta {
                            etag: fresh.etag,
                            size: fresh.size,
                            mtime_ns: fresh.mtime_ns,
                            ..old
                        }
                    };
                }
                // Best effort: on a read-only media folder the cache keeps the derived ETag
                // for as long as the file stays as it is (a written xattr moves the ctime, so
                // the next read caches the record instead).
                if self
                    .meta
                    .write(&file, bucket, &path.rel, folder, &fresh)
                    .is_err()
                {
                    self.meta_cache.put(FileStamp::of(&md), &fresh);
                }
                fresh
            }
        };
        let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(ObjectHandle {
            file,
            meta,
            size: md.len(),
            modified,
        })
    }

    /// An empty folder marker: the folder itself, its record in the folder's metadata.
    fn open_empty_marker(
        &self,
        dir: File,
        md: &std::fs::Metadata,
        bucket: &str,
        path: &ObjectPath,
    ) -> StoreResult<ObjectHandle> {
        let meta = self
            .meta
            .read(&dir, bucket, &path.rel, true)
            .ok_or(StoreError::NoSuchKey)?;
        Ok(ObjectHandle {
            file: dir,
            meta,
            size: 0,
            modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Opens the file of object `path` for reading, through the same checked lookup as
    /// [`Store::open_object`] (nothing outside the bucket folder can be reached), without
    /// reading or deriving its metadata: for readers that need only the bytes (the prober).
    /// Folder markers have none worth probing.
    pub fn open_file(&self, bucket: &str, path: &ObjectPath) -> StoreResult<File> {
        if path.is_folder_marker {
            return Err(StoreError::NoSuchKey);
        }
        let bfd = self.bucket_fd(bucket)?;
        let mut file =
            fsutil::open_beneath(bfd.as_fd(), &path.rel).map_err(StoreError::from_lookup)?;
        if file.metadata()?.is_dir() {
            file = fsutil::open_file_nofollow(file.as_fd(), keys::OBJECT_IN_FOLDER)
                .map_err(StoreError::from_lookup)?;
        }
        if !file.metadata()?.is_file() {
            return Err(StoreError::NoSuchKey);
        }
        Ok(file)
    }

    /// True when object `path` is on disk: its file (see [`layout`]), or its folder for a
    /// folder marker. Looked up as a listing walks, following no symlink, so it agrees with
    /// what a [`walk::Walker`] finds; anything that keeps the lookup from finding it counts as
    /// absent.
    pub fn object_exists(&self, bucket: &str, path: &ObjectPath) -> bool {
        let Ok(bfd) = self.bucket_fd(bucket) else {
            return false;
        };
        let Ok(slot) = self.locate(bucket, &bfd, path, false) else {
            return false;
        };
        // A marker's folder was opened by the lookup.
        path.is_folder_marker
            || slot.name.to_str().is_some_and(|name| {
                fsutil::statx_at(slot.dir.as_fd(), name)
                    .is_ok_and(|st| fsutil::statx_type(&st) == fsutil::FileType::RegularFile)
            })
    }

    /// Drops what the memory caches hold of `bucket/key` and of its folder's listing: another
    /// gateway sharing the data folder changed it. The caches check every entry against the
    /// file's stamp anyway; this covers what a stamp cannot show (an inode number reused within
    /// one tick of a coarse filesystem clock, attributes a network filesystem client cached).
    /// Blocking (a lookup and two `statx`).
    pub fn forget_object(&self, bucket: &str, key: &str) {
        let Ok(path) = keys::parse_key(key) else {
            return;
        };
        let Ok(bfd) = self.bucket_fd(bucket) else {
            return;
        };
        let Ok(slot) = self.locate(bucket, &bfd, &path, false) else {
            return;
        };
        if let Some(name) = slot.name.to_str()
            && let Ok(st) = fsutil::statx_at(slot.dir.as_fd(), name)
        {
            self.meta_cache.forget(FileStamp::of_statx(&st).id());
        }
        if let Ok(st) = fsutil::statx_at(slot.dir.as_fd(), ".") {
            self.dir_cache.forget(FileStamp::of_statx(&st).id());
        }
    }

    /// Drops everything the memory caches hold: changes made by other gateways may have been
    /// missed (the signal that announces them was interrupted).
    pub fn forget_all(&self) {
        self.meta_cache.clear();
        self.dir_cache.clear();
    }

    /// [`Store::open_object`] for the hot path, on an async worker thread: succeeds only when
    /// nothing can wait for the disk or take long (every name in the kernel's lookup cache,
    /// recorded metadata that still matches the file). `Ok(None)` means "ask
    /// [`Store::open_object`] on the blocking pool", which also produces every error answer.
    ///
    /// What remains are an `fstat` and an `fgetxattr` on the open file: the inode is in memory
    /// once the open succeeded, and the xattr (in the inode or its one extra block) is read
    /// from the buffer cache where a recently served object has it.
    pub fn try_open_object_cached(
        &self,
        bucket: &str,
        path: &ObjectPath,
    ) -> StoreResult<Option<ObjectHandle>> {
        // Sidecar metadata is a path lookup and a file read of its own; folder markers are rare.
        if path.is_folder_marker || !matches!(self.meta, MetaStore::Xattr) {
            return Ok(None);
        }
        // One lookup from the data folder for `bucket/key`, following no symlink at all: with
        // validated names (no `..`, no empty segment, bucket names without `/` or a leading
        // dot) it can then only reach the file `open_object` would open. A bucket folder that
        // is a symlink, or a symlink inside the bucket, takes the blocking path, which follows
        // them the way `open_object` allows.
        self.bucket_path(bucket)?;
        let Some(mut file) =
            fsutil::open_cached_nofollow(self.root_fd.as_fd(), &Path::new(bucket).join(&path.rel))
        else {
            return Ok(None);
        };
        let mut md = file.metadata()?;
        if md.is_dir() {
            // The key's name is also a folder's: its file is the reserved one inside.
            let Some(inner) = fsutil::open_cached_nofollow(
                self.root_fd.as_fd(),
                &Path::new(bucket)
                    .join(&path.rel)
                    .join(keys::OBJECT_IN_FOLDER),
            ) else {
                return Ok(None);
            };
            file = inner;
            md = file.metadata()?;
        }
        if !md.is_file() {
            return Ok(None);
        }
        let Some(meta) = self.recorded_meta(&file, &md, bucket, &path.rel, false) else {
            // Out of band or changed: the ETag must be derived, which reads the file.
            return Ok(None);
        };
        Ok(Some(ObjectHandle {
            file,
            meta,
            size: md.len(),
            modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }))
    }

    /// Creates a temp file on the same filesystem as the bucket's folder.
    pub fn create_temp(&self, bucket: &str) -> StoreResult<TempFile> {
        let bfd = self.bucket_fd(bucket)?;
        self.create_temp_for(&bfd)
    }

    /// [`Store::create_temp`] for a bucket folder already open.
    fn create_temp_for(&self, bfd: &OwnedFd) -> StoreResult<TempFile> {
        if file_dev(bfd)? == self.root_dev {
            return self.internal_temp();
        }
        temp_in(self.temp_dir_for(bfd)?)
    }

    /// This process's temp folder on the filesystem of a bucket folder already open: what is
    /// staged there can be renamed into the bucket, and is removed at the next start if this
    /// process dies first.
    fn temp_dir_for(&self, bfd: &OwnedFd) -> StoreResult<Arc<OwnedFd>> {
        if file_dev(bfd)? == self.root_dev {
            return Ok(self
                .tmp_fd
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone());
        }
        // The bucket is another filesystem (a mounted media disk): a rename from the data
        // folder would not be atomic there, so stage beside the objects, in a folder of this
        // process's own (named like its folder in the reserved temp folder).
        let own = Path::new(BUCKET_TMP_PREFIX).join(self.tmp_owner());
        fsutil::mkdir_at(bfd.as_fd(), Path::new(BUCKET_TMP_PREFIX))?;
        fsutil::mkdir_at(bfd.as_fd(), &own)?;
        Ok(Arc::new(fsutil::open_parent_nofollow(
            bfd.as_fd(),
            &own.join("x"),
            false,
        )?))
    }

    /// A temp file in the reserved temp folder (same filesystem as the staging area).
    pub fn internal_temp(&self) -> StoreResult<TempFile> {
        let dir = self
            .tmp_fd
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match temp_in(dir) {
            Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                // The folder was removed under us: make it again and retry once.
                std::fs::create_dir_all(&self.tmp)?;
                let fresh = Arc::new(fsutil::open_dir(&self.tmp)?);
                *self.tmp_fd.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
                temp_in(fresh)
            }
            other => other,
        }
    }

    /// True when `bucket`'s folder is on the data folder's filesystem, so a file staged in the
    /// reserved folder can be renamed into it.
    pub fn bucket_on_root_fs(&self, bucket: &str) -> StoreResult<bool> {
        Ok(file_dev(&self.bucket_fd(bucket)?)? == self.root_dev)
    }

    /// Writes a small body that arrived whole and commits it as the object at `path`: one
    /// call, so a small PUT costs one trip to the blocking pool.
    pub fn commit_bytes(
        &self,
        bytes: &[u8],
        bucket: &str,
        path: &ObjectPath,
        meta: ObjectMeta,
        mode: Commit,
    ) -> StoreResult<ObjectMeta> {
        let bfd = self.bucket_fd(bucket)?;
        let tmp = self.create_temp_for(&bfd)?;
        std::os::unix::fs::FileExt::write_all_at(&tmp.file, bytes, 0)?;
        self.commit_in(&bfd, tmp, bucket, path, meta, mode)
    }

    /// Makes a fully written temp file the object at `path`: fsync, metadata, atomic rename (or
    /// link for create-only), folder fsync. Returns the metadata as recorded.
    pub fn commit(
        &self,
        tmp: TempFile,
        bucket: &str,
        path: &ObjectPath,
        meta: ObjectMeta,
        mode: Commit,
    ) -> StoreResult<ObjectMeta> {
        let bfd = self.bucket_fd(bucket)?;
        self.commit_in(&bfd, tmp, bucket, path, meta, mode)
    }

    /// [`Store::commit`] into a bucket folder already open.
    fn commit_in(
        &self,
        bfd: &OwnedFd,
        mut tmp: TempFile,
        bucket: &str,
        path: &ObjectPath,
        mut meta: ObjectMeta,
        mode: Commit,
    ) -> StoreResult<ObjectMeta> {
        if path.is_folder_marker {
            return self.commit_folder_marker(bfd, tmp, bucket, path, meta, mode);
        }
        let state = self.versioning(bucket)?;
        meta.version_id = (state == versions::Versioning::Enabled).then(versions::new_version_id);
        tmp.file.sync_all()?;
        let md = tmp.file.metadata()?;
        meta.size = md.len();
        meta.mtime_ns = meta::mtime_ns(&md);
        self.meta
            .write(&tmp.file, bucket, &path.rel, false, &meta)?;
        if state != versions::Versioning::Off {
            self.commit_versioned(bfd, tmp, bucket, path, mode, state)?;
            return Ok(meta);
        }
        self.place(bfd, &mut tmp, bucket, path, mode)?;
        Ok(meta)
    }

    /// Renames (or, for create-only, links) a written temp file into place as the file of
    /// `path` (see [`layout`] for where that is), and makes that durable.
    fn place(
        &self,
        bfd: &OwnedFd,
        tmp: &mut TempFile,
        bucket: &str,
        path: &ObjectPath,
        mode: Commit,
    ) -> StoreResult<()> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let slot = self.locate(bucket, bfd, path, true)?;
            let res = match mode {
                Commit::Replace => {
                    fsutil::rename_at(tmp.dir.as_fd(), &tmp.name, slot.dir.as_fd(), &slot.name)
                }
                Commit::CreateOnly => {
                    fsutil::link_at(tmp.dir.as_fd(), &tmp.name, slot.dir.as_fd(), &slot.name)
                }
            };
            match res {
                Ok(()) => {
                    if mode == Commit::CreateOnly {
                        let _ = fsutil::unlink_at(tmp.dir.as_fd(), &tmp.name);
                    }
                    tmp.done = true;
                    fsutil::fsync_dir(slot.dir.as_fd())?;
                    return Ok(());
                }
                // Between the lookup and the rename, a concurrent delete pruned the folder, or
                // a write below the key made its name a folder: look again.
                Err(e)
                    if attempts < 5
                        && (e.kind() == io::ErrorKind::NotFound
                            || e.raw_os_error() == Some(libc::EISDIR)
                            || is_dir_at(&slot.dir, &slot.name)) =>
                {
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::Exists);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Commits a folder marker (a key ending in `/`): an empty one is its folder, with the
    /// record on the folder; one with bytes is the reserved file inside it (see [`layout`]).
    /// Either way the other form goes once the new one is in place, so a crash in between
    /// leaves the old value (the bytes file wins while both are there).
    fn commit_folder_marker(
        &self,
        bfd: &OwnedFd,
        mut tmp: TempFile,
        bucket: &str,
        path: &ObjectPath,
        mut meta: ObjectMeta,
        mode: Commit,
    ) -> StoreResult<ObjectMeta> {
        let slot = self.locate(bucket, bfd, path, true)?;
        let dir = File::from(slot.dir);
        let has_bytes = is_file_at(&dir, keys::MARKER_BYTES);
        if mode == Commit::CreateOnly
            && (has_bytes || self.meta.read(&dir, bucket, &path.rel, true).is_some())
        {
            return Err(StoreError::Exists);
        }
        let md = tmp.file.metadata()?;
        if md.len() == 0 {
            let md = dir.metadata()?;
            meta.size = 0;
            meta.etag = EMPTY_MD5.to_owned();
            meta.mtime_ns = meta::mtime_ns(&md);
            self.meta.write(&dir, bucket, &path.rel, true, &meta)?;
            if has_bytes {
                match fsutil::unlink_at(dir.as_fd(), Path::new(keys::MARKER_BYTES)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            fsutil::fsync_dir(dir.as_fd())?;
        } else {
            tmp.file.sync_all()?;
            let md = tmp.file.metadata()?;
            meta.size = md.len();
            meta.mtime_ns = meta::mtime_ns(&md);
            self.meta.write(&tmp.file, bucket, &path.rel, true, &meta)?;
            let name = Path::new(keys::MARKER_BYTES);
            let placed = match mode {
                Commit::Replace => fsutil::rename_at(tmp.dir.as_fd(), &tmp.name, dir.as_fd(), name),
                Commit::CreateOnly => {
                    fsutil::link_at(tmp.dir.as_fd(), &tmp.name, dir.as_fd(), name)
                }
            };
            match placed {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::Exists);
                }
                Err(e) => return Err(e.into()),
            }
            if mode == Commit::CreateOnly {
                let _ = fsutil::unlink_at(tmp.dir.as_fd(), &tmp.name);
            }
            tmp.done = true;
            fsutil::fsync_dir(dir.as_fd())?;
            // One record per marker: the bytes file's. (Sidecar records are per key, shared
            // by both forms, and were just written.)
            if matches!(self.meta, MetaStore::Xattr) {
                self.meta.remove(Some(&dir), bucket, &path.rel, true);
            }
        }
        let parent = fsutil::open_parent_nofollow(bfd.as_fd(), &path.rel, false)?;
        fsutil::fsync_dir(parent.as_fd())?;
        Ok(meta)
    }

    /// Deletes an object; a missing one is not an error (S3's DeleteObject is idempotent).
    /// Folders left empty by the delete are removed, as S3 has no empty folders.
    pub fn delete_object(&self, bucket: &str, path: &ObjectPath) -> StoreResult<()> {
        let bfd = self.bucket_fd(bucket)?;
        let slot = match self.locate(bucket, &bfd, path, false) {
            Ok(slot) => slot,
            Err(StoreError::NoSuchKey) => return Ok(()),
            Err(e) => return Err(e),
        };
        if path.is_folder_marker {
            // The record first: while the bytes file is there it still answers, so a crash
            // between the two leaves the marker as it was, not an older one.
            let dir = File::from(slot.dir);
            self.meta.remove(Some(&dir), bucket, &path.rel, true);
            match fsutil::unlink_at(dir.as_fd(), &slot.name) {
                Ok(()) => fsutil::fsync_dir(dir.as_fd())?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            let parent = fsutil::open_parent_nofollow(bfd.as_fd(), &path.rel, false)?;
            let _ = fsutil::rmdir_at(parent.as_fd(), Path::new(layout::last_segment(path)));
            fsutil::fsync_dir(parent.as_fd())?;
            self.prune_empty_parents(bucket, &bfd, &path.rel);
            return Ok(());
        }
        match fsutil::unlink_at(slot.dir.as_fd(), &slot.name) {
            Ok(()) => self.meta.remove(None, bucket, &path.rel, false),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::IsADirectory
                ) =>
            {
                return Ok(());
            }
            Err(e)
                if e.raw_os_error() == Some(libc::EISDIR)
                    || e.raw_os_error() == Some(libc::EPERM) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        fsutil::fsync_dir(slot.dir.as_fd())?;
        self.prune_empty_parents(bucket, &bfd, &slot.rel);
        Ok(())
    }

    fn prune_empty_parents(&self, bucket: &str, bfd: &OwnedFd, rel: &Path) {
        let mut cur = rel.parent();
        while let Some(dir) = cur {
            if dir.as_os_str().is_empty() {
                break;
            }
            // A folder that is itself an object (a folder marker) stays.
            if let Ok(f) = fsutil::open_beneath(bfd.as_fd(), dir)
                && self.meta.read(&f, bucket, dir, true).is_some()
            {
                break;
            }
            let Ok(parent) = fsutil::open_parent_nofollow(bfd.as_fd(), dir, false) else {
                break;
            };
            let Some(name) = dir.file_name() else { break };
            if fsutil::rmdir_at(parent.as_fd(), Path::new(name)).is_err() {
                break;
            }
            cur = dir.parent();
        }
    }
}

/// The lock file in each process's temp folder: held (`flock`, exclusive) for the life of the
/// process, so a starting gateway can tell the folders of gateways that are running (locked)
/// from those of gateways that crashed (free), and remove only the latter.
pub const OWNER_LOCK: &str = "owner.lock";

/// A temp folder without a lock file that is younger than this is never taken for dead: it
/// may be one being set up right now, its lock not created yet.
const TEMP_DIR_SETUP: std::time::Duration = std::time::Duration::from_secs(60);

/// Creates this process's temp folder in `tmp_root` and locks it.
fn own_temp_dir(tmp_root: &Path) -> io::Result<(PathBuf, File)> {
    let name = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let dir = tmp_root.join(name);
    std::fs::create_dir(&dir)?;
    let lock = File::create(dir.join(OWNER_LOCK))?;
    fsutil::lock(&lock, true)?;
    Ok((dir, lock))
}

/// True when the temp folder `dir` belongs to a process that is gone: its lock can be taken
/// (and is given back at once), or it never got one and is not new.
fn owner_gone(dir: &Path) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(OWNER_LOCK))
    {
        Ok(f) => f.try_lock().is_ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > TEMP_DIR_SETUP)),
        Err(_) => false,
    }
}

/// Removes the temp folders in `tmp_root` of processes that are gone, and loose files (from
/// gateways before temp folders were per process).
fn clean_dead_temp_dirs(tmp_root: &Path, mine: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp_root) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p == mine {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if owner_gone(&p) {
                let _ = std::fs::remove_dir_all(&p);
            }
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Creates a fresh, uniquely named temp file in `dir`.
pub(crate) fn temp_in(dir: Arc<OwnedFd>) -> StoreResult<TempFile> {
    let name = PathBuf::from(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
    let file = fsutil::create_new_at(dir.as_fd(), &name)?;
    Ok(TempFile {
        file,
        dir,
        name,
        done: false,
    })
}

fn file_dev(fd: &OwnedFd) -> io::Result<u64> {
    fsutil::device(fd.as_fd())
}

fn is_dir_at(dir: &OwnedFd, name: &Path) -> bool {
    name.to_str().is_some_and(|name| {
        fsutil::statx_at(dir.as_fd(), name)
            .is_ok_and(|st| fsutil::statx_type(&st) == fsutil::FileType::Directory)
    })
}

fn is_file_at(dir: &File, name: &str) -> bool {
    fsutil::statx_at(dir.as_fd(), name)
        .is_ok_and(|st| fsutil::statx_type(&st) == fsutil::FileType::RegularFile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_files(root: &Path) -> usize {
        std::fs::read_dir(root.join(RESERVED_DIR).join("tmp"))
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .filter(|f| f.file_name() != OWNER_LOCK)
            .count()
    }

    #[test]
    fn a_starting_gateway_leaves_the_temp_files_of_running_ones_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let mut t = a.internal_temp().unwrap();
        std::io::Write::write_all(&mut t.file, b"in flight").unwrap();
        // Another gateway starts on the same data folder while A is writing.
        let b = Store::open(dir.path()).unwrap();
        assert_eq!(temp_files(dir.path()), 1, "A's upload in progress is kept");
        drop(t);
        let _t = a.internal_temp().unwrap();
        // A dies: the next start removes what it left.
        drop(a);
        let c = Store::open(dir.path()).unwrap();
        assert_eq!(temp_files(dir.path()), 0);
        let folders = std::fs::read_dir(dir.path().join(RESERVED_DIR).join("tmp"))
            .unwrap()
            .count();
        assert_eq!(folders, 2, "B's and C's own folders");
        drop((b, c));
    }
}
