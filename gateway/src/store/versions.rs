//! Object versions (S3 versioning) on the transparent folder.
//!
//! The current version of a key stays the plain file `DATA/<bucket>/<key>`, so `ls` shows what
//! S3 shows. Every other version of the key, and its delete markers, are files in the key's
//! version folder `DATA/.nebula/versions/<bucket>/<key>@v/`, each named by its version id
//! (`null` for the null version) and carrying its whole [`ObjectMeta`] in the same `user.nebula`
//! attribute as objects; a delete marker is an empty file whose record says so. Versions are
//! ordered newest first by the modification time their record holds (rename and link keep it).
//!
//! Every change of a key's versions holds an exclusive `flock` on its version folder, so two
//! writers (or two gateways on one data folder) take turns. A change is a sequence of single
//! atomic steps, each made durable before the next:
//!
//! - overwrite: `link` the current file into the version folder under its id, fsync that
//!   folder, `rename` the new file over the current one, fsync the bucket folder;
//! - delete (a marker): `link` the current file aside, `unlink` it, then `rename` a new marker
//!   into the version folder;
//! - delete of the current version: `unlink` it, then `rename` the newest older version (if it
//!   is not a marker) back into place.
//!
//! A crash between two steps leaves one of two states, both repaired by [`Store::recover_versions`]
//! at start (and never shown twice meanwhile: listings drop a kept version whose id is the
//! current one's): a version folder entry with the current file's id (a link made before the
//! rename that would have replaced it) is removed; a key with no current file whose newest kept
//! version is not a delete marker gets that version back in place.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::keys::{ObjectPath, parse_key};
use super::meta::{self, MetaStore, ObjectMeta};
use super::settings::Setting;
use super::walk::Walker;
use super::{ObjectHandle, Store, StoreError, StoreResult, TempFile, fsutil};

/// The folder (below the reserved one) that holds every bucket's kept versions.
pub const VERSIONS_DIR: &str = "versions";

/// Suffix of a key's version folder name: `a/b.txt` keeps its versions in `a/b.txt@v/`. Version
/// entries are the regular files there; sub-folders belong to other keys (`a/b.txt@v/c`).
const VERSION_DIR_SUFFIX: &str = "@v";

/// The version id of the null version (unversioned and suspended writes).
pub const NULL_VERSION: &str = "null";

/// A bucket's versioning state, kept as the `versioning` setting (`Enabled` or `Suspended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: writes replace the null version in place, nothing is kept.
    Off,
    /// Every write makes a new version; deletes make delete markers.
    Enabled,
    /// Writes replace the null version; older versions are kept.
    Suspended,
}

impl Versioning {
    /// The state a setting document names.
    pub fn parse(doc: &[u8]) -> Self {
        match doc.trim_ascii() {
            b"Enabled" => Versioning::Enabled,
            b"Suspended" => Versioning::Suspended,
            _ => Versioning::Off,
        }
    }

    /// The document for this state (`None` for Off).
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Versioning::Off => None,
            Versioning::Enabled => Some("Enabled"),
            Versioning::Suspended => Some("Suspended"),
        }
    }
}

/// A fresh version id: 32 hex digits, the time in nanoseconds then random bits, so ids sort by
/// creation and never repeat.
pub fn new_version_id() -> String {
    use rand::Rng;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{nanos:016x}{:016x}", rand::rng().random::<u64>())
}

/// True for ids this gateway hands out (and `null`): anything else names no version, and can
/// never reach the filesystem as a name.
pub fn is_version_id(id: &str) -> bool {
    id == NULL_VERSION
        || (id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The version id of a record (`null` when it has none).
pub fn version_of(meta: &ObjectMeta) -> &str {
    meta.version_id.as_deref().unwrap_or(NULL_VERSION)
}

/// One version or delete marker as ListObjectVersions shows it.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// The key.
    pub key: String,
    /// The version id (`null` for the null version).
    pub version_id: String,
    /// True for the newest version of its key.
    pub is_latest: bool,
    /// The version's record (`delete_marker` set for markers).
    pub meta: ObjectMeta,
    /// Size in bytes.
    pub size: u64,
    /// Last-Modified.
    pub modified: SystemTime,
}

/// What a versioned read found.
// Made once per read and moved once: boxing the handle would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Found {
    /// An object version.
    Object(ObjectHandle),
    /// A delete marker (the latest version, or the one asked for by id).
    DeleteMarker {
        /// Its version id.
        version_id: String,
    },
}

/// What a delete did.
#[derive(Debug, Default)]
pub struct Deleted {
    /// The version removed or the delete marker made.
    pub version_id: Option<String>,
    /// True when that version is a delete marker.
    pub delete_marker: bool,
    /// True when the key's current file is gone (the catalog forgets the object).
    pub current_gone: bool,
    /// An older version that became current (the catalog records it).
    pub promoted: Option<ObjectMeta>,
}

/// A kept (non-current) version in a version folder.
#[derive(Debug)]
struct Kept {
    id: String,
    meta: ObjectMeta,
    size: u64,
    modified: SystemTime,
    nlink: u64,
    ino: u64,
}

/// A key's version folder, locked for the caller.
pub(super) struct VersionDir {
    dir: File,
}

impl VersionDir {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

impl Store {
    /// The bucket's versioning state.
    pub fn versioning(&self, bucket: &str) -> StoreResult<Versioning> {
        Ok(self
            .settings()
            .get(bucket, Setting::Versioning)?
            .map(|d| Versioning::parse(&d))
            .unwrap_or(Versioning::Off))
    }

    /// Sets the bucket's versioning state. Kept versions need hard links beside the bucket and
    /// records that travel with the file: a bucket on another filesystem, or a data folder
    /// without user xattrs, cannot keep versions.
    pub fn set_versioning(&self, bucket: &str, state: Versioning) -> StoreResult<()> {
        self.bucket_fd(bucket)?;
        if !matches!(self.meta_store(), MetaStore::Xattr) {
            return Err(StoreError::Unsupported(
                "versioning needs a data folder with user extended attributes",
            ));
        }
        if !self.bucket_on_root_fs(bucket)? {
            return Err(StoreError::Unsupported(
                "versioning needs the bucket on the data folder's filesystem",
            ));
        }
        match state.as_str() {
            Some(doc) => self
                .settings()
                .put(bucket, Setting::Versioning, doc.as_bytes()),
            None => self.settings().delete(bucket, Setting::Versioning),
        }
    }

    fn versions_root(&self, bucket: &str) -> PathBuf {
        self.internal_dir().join(VERSIONS_DIR).join(bucket)
    }

    /// The key's version folder: `<key>@v`, so the object `a` (`a@v`), the folder marker `a/`
    /// (`a/@v`) and the object `a/b` (`a/b@v`) never share one, whatever form [`super::layout`]
    /// gives their files.
    fn version_dir_path(&self, bucket: &str, path: &ObjectPath) -> PathBuf {
        let mut p = self.versions_root(bucket).into_os_string();
        p.push("/");
        p.push(&path.key);
        p.push(VERSION_DIR_SUFFIX);
        PathBuf::from(p)
    }

    /// Opens (with `create`, makes) the key's version folder and locks it; `None` if it does not
    /// exist and `create` is false.
    pub(super) fn lock_versions(
        &self,
        bucket: &str,
        key: &ObjectPath,
        create: bool,
    ) -> StoreResult<Option<VersionDir>> {
        let path = self.version_dir_path(bucket, key);
        if create {
            std::fs::create_dir_all(&path)?;
        }
        let dir = match File::open(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        fsutil::lock(&dir, true)?;
        Ok(Some(VersionDir { dir }))
    }

    /// The kept versions in a version folder, newest first.
    fn kept_versions(&self, vdir: &File, rel: &Path) -> StoreResult<Vec<Kept>> {
        let mut names = Vec::new();
        fsutil::read_dir(vdir.as_fd(), |name, ty| {
            if ty == fsutil::FileType::RegularFile
                && let Ok(name) = std::str::from_utf8(name)
                && is_version_id(name)
            {
                names.push(name.to_owned());
            }
        })?;
        let mut out = Vec::new();
        for id in names {
            let file = match fsutil::open_file_nofollow(vdir.as_fd(), &id) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let md = file.metadata()?;
            let Some(meta) = self.meta_store().read(&file, "", rel, false) else {
                tracing::warn!(version = %id, key = %rel.display(), "a kept version has no record; skipped");
                continue;
            };
            out.push(Kept {
                id,
                size: md.len(),
                modified: time_of(meta.mtime_ns),
                nlink: md.nlink(),
                ino: md.ino(),
                meta,
            });
        }
        out.sort_by(|a, b| (b.meta.mtime_ns, &b.id).cmp(&(a.meta.mtime_ns, &a.id)));
        Ok(out)
    }

    /// The current version, if the key has a current file.
    fn current(&self, bucket: &str, path: &ObjectPath) -> StoreResult<Option<ObjectHandle>> {
        match self.open_object(bucket, path) {
            Ok(h) => Ok(Some(h)),
            Err(StoreError::NoSuchKey) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts a hard link to the current file into the version folder under `id`.
    fn keep_current(
        &self,
        bucket: &str,
        path: &ObjectPath,
        bfd: &std::os::fd::OwnedFd,
        vdir: &VersionDir,
        id: &str,
    ) -> StoreResult<()> {
        let slot = self.locate(bucket, bfd, path, false)?;
        let (dir, name) = (slot.dir.as_fd(), slot.name.as_path());
        match fsutil::link_at(dir, name, vdir.fd(), Path::new(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A link left by a crash before the rename that would have replaced the current
                // file: make it this file again.
                fsutil::unlink_at(vdir.fd(), Path::new(id))?;
                fsutil::link_at(dir, name, vdir.fd(), Path::new(id))?;
            }
            Err(e) => return Err(e.into()),
        }
        fsutil::fsync_dir(vdir.fd())?;
        Ok(())
    }

    /// Removes the current file (its version is kept or deleted by the caller).
    fn unlink_current(
        &self,
        bucket: &str,
        path: &ObjectPath,
        bfd: &std::os::fd::OwnedFd,
    ) -> StoreResult<()> {
        let slot = self.locate(bucket, bfd, path, false)?;
        fsutil::unlink_at(slot.dir.as_fd(), &slot.name)?;
        fsutil::fsync_dir(slot.dir.as_fd())?;
        self.prune_empty_parents(bucket, bfd, &slot.rel);
        Ok(())
    }

    /// Commits a written temp file, its record already on it, as a new version of a
    /// versioned key (see the module doc for the order of steps).
    pub(super) fn commit_versioned(
        &self,
        bfd: &std::os::fd::OwnedFd,
        mut tmp: TempFile,
        bucket: &str,
        path: &ObjectPath,
        mode: super::Commit,
        state: Versioning,
    ) -> StoreResult<()> {
        let vdir = self.lock_versions(bucket, path, true)?.expect("created");
        if let Some(cur) = self.current(bucket, path)? {
            if mode == super::Commit::CreateOnly {
                return Err(StoreError::Exists);
            }
            let id = version_of(&cur.meta).to_owned();
            let replaced = state == Versioning::Suspended && id == NULL_VERSION;
            if replaced {
                check_unlocked(&cur.meta)?;
            } else {
                self.keep_current(bucket, path, bfd, &vdir, &id)?;
            }
        }
        self.place(bfd, &mut tmp, bucket, path, mode)?;
        if state == Versioning::Suspended {
            // The new null version replaces a kept one.
            match fsutil::unlink_at(vdir.fd(), Path::new(NULL_VERSION)) {
                Ok(()) => fsutil::fsync_dir(vdir.fd())?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// DeleteObject without a version id, as the bucket's versioning state asks: unversioned
    /// buckets (and folder markers, which hold no bytes to keep) lose the file, versioned ones
    /// keep it behind a delete marker.
    pub fn delete_current(&self, bucket: &str, path: &ObjectPath) -> StoreResult<Deleted> {
        match self.versioning(bucket)? {
            state @ (Versioning::Enabled | Versioning::Suspended) if !path.is_folder_marker => {
                self.delete_with_marker(bucket, path, state)
            }
            _ => {
                self.delete_object(bucket, path)?;
                Ok(Deleted {
                    current_gone: true,
                    ..Default::default()
                })
            }
        }
    }

    /// DeleteObject without a version id on a versioned bucket: the current version is kept
    /// (or, when suspended, a current null version removed) and a delete marker becomes the
    /// latest version.
    pub fn delete_with_marker(
        &self,
        bucket: &str,
        path: &ObjectPath,
        state: Versioning,
    ) -> StoreResult<Deleted> {
        let bfd = self.bucket_fd(bucket)?;
        let vdir = self.lock_versions(bucket, path, true)?.expect("created");
        let mut current_gone = false;
        if let Some(cur) = self.current(bucket, path)? {
            let id = version_of(&cur.meta).to_owned();
            if state == Versioning::Suspended && id == NULL_VERSION {
                check_unlocked(&cur.meta)?;
            } else {
                self.keep_current(bucket, path, &bfd, &vdir, &id)?;
            }
            self.unlink_current(bucket, path, &bfd)?;
            current_gone = true;
        }
        let id = match state {
            Versioning::Enabled => new_version_id(),
            _ => NULL_VERSION.to_owned(),
        };
        let mut tmp = self.internal_temp()?;
        let md = tmp.file.metadata()?;
        let marker = ObjectMeta {
            version_id: (id != NULL_VERSION).then(|| id.clone()),
            delete_marker: true,
            mtime_ns: meta::mtime_ns(&md),
            ..Default::default()
        };
        self.meta_store()
            .write(&tmp.file, bucket, &path.rel, false, &marker)?;
        tmp.file.sync_all()?;
        fsutil::rename_at(tmp.dir.as_fd(), &tmp.name, vdir.fd(), Path::new(&id))?;
        tmp.done = true;
        fsutil::fsync_dir(vdir.fd())?;
        Ok(Deleted {
            version_id: Some(id),
            delete_marker: true,
            current_gone,
            promoted: None,
        })
    }

    /// DeleteObject of one version: removed for good; when it was the latest, the next
    /// newest version (unless a delete marker) becomes the current file. A version that does
    /// not exist is not an error (S3 answers 204).
    pub fn delete_version(
        &self,
        bucket: &str,
        path: &ObjectPath,
        id: &str,
        bypass_governance: bool,
    ) -> StoreResult<Deleted> {
        if !is_version_id(id) {
            return Err(StoreError::InvalidVersionId);
        }
        let bfd = self.bucket_fd(bucket)?;
        let versioned = self.versioning(bucket)? != Versioning::Off;
        if path.is_folder_marker {
            // Folder markers are not versioned: their one version is the null version.
            let mut deleted = Deleted {
                version_id: versioned.then(|| id.to_owned()),
                ..Default::default()
            };
            if id == NULL_VERSION
                && let Some(cur) = self.current(bucket, path)?
            {
                check_deletable(&cur.meta, bypass_governance)?;
                self.delete_object(bucket, path)?;
                deleted.current_gone = true;
            }
            return Ok(deleted);
        }
        let vdir = self.lock_versions(bucket, path, versioned)?;
        let current = self.current(bucket, path)?;
        // An unversioned bucket answers no version id, even for `null`.
        let mut deleted = Deleted {
            version_id: versioned.then(|| id.to_owned()),
            ..Default::default()
        };
        if let Some(cur) = &current
            && version_of(&cur.meta) == id
        {
            check_deletable(&cur.meta, bypass_governance)?;
            self.unlink_current(bucket, path, &bfd)?;
            deleted.current_gone = true;
            if let Some(vdir) = &vdir {
                deleted.promoted = self.promote_latest(bucket, &bfd, path, vdir)?;
            }
            return Ok(deleted);
        }
        let Some(vdir) = vdir else {
            return Ok(deleted);
        };
        let file = match fsutil::open_file_nofollow(vdir.fd(), id) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(deleted),
            Err(e) => return Err(e.into()),
        };
        if let Some(meta) = self.meta_store().read(&file, bucket, &path.rel, false) {
            check_deletable(&meta, bypass_governance)?;
            deleted.delete_marker = meta.delete_marker;
        }
        fsutil::unlink_at(vdir.fd(), Path::new(id))?;
        fsutil::fsync_dir(vdir.fd())?;
        if current.is_none() {
            deleted.promoted = self.promote_latest(bucket, &bfd, path, &vdir)?;
        }
        Ok(deleted)
    }

    /// Moves the newest kept version back into place when it is an object (not a marker).
    fn promote_latest(
        &self,
        bucket: &str,
        bfd: &std::os::fd::OwnedFd,
        path: &ObjectPath,
        vdir: &VersionDir,
    ) -> StoreResult<Option<ObjectMeta>> {
        let kept = self.kept_versions(&vdir.dir, &path.rel)?;
        let Some(newest) = kept.into_iter().next() else {
            return Ok(None);
        };
        if newest.meta.delete_marker {
            return Ok(None);
        }
        let slot = self.locate(bucket, bfd, path, true)?;
        fsutil::rename_at(
            vdir.fd(),
            Path::new(&newest.id),
            slot.dir.as_fd(),
            &slot.name,
        )?;
        fsutil::fsync_dir(slot.dir.as_fd())?;
        fsutil::fsync_dir(vdir.fd())?;
        Ok(Some(newest.meta))
    }

    /// Opens a version of a key: the current one (`version` `None`), or the one with that id.
    /// Without an id, a key whose latest version is a delete marker gives [`Found::DeleteMarker`].
    pub fn open_version(
        &self,
        bucket: &str,
        path: &ObjectPath,
        version: Option<&str>,
    ) -> StoreResult<Found> {
        let Some(id) = version else {
            return match self.open_object(bucket, path) {
                Ok(h) => Ok(Found::Object(h)),
                Err(StoreError::NoSuchKey) if !path.is_folder_marker => {
                    match self.latest_marker(bucket, path)? {
                        Some(version_id) => Ok(Found::DeleteMarker { version_id }),
                        None => Err(StoreError::NoSuchKey),
                    }
                }
                Err(e) => Err(e),
            };
        };
        if !is_version_id(id) {
            return Err(StoreError::InvalidVersionId);
        }
        if let Some(cur) = self.current(bucket, path)?
            && version_of(&cur.meta) == id
        {
            return Ok(Found::Object(cur));
        }
        let vpath = self.version_dir_path(bucket, path).join(id);
        let file = match File::open(&vpath) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchVersion);
            }
            Err(e) => return Err(e.into()),
        };
        let md = file.metadata()?;
        let meta = self
            .meta_store()
            .read(&file, bucket, &path.rel, false)
            .ok_or(StoreError::NoSuchVersion)?;
        if meta.delete_marker {
            return Ok(Found::DeleteMarker {
                version_id: id.to_owned(),
            });
        }
        Ok(Found::Object(ObjectHandle {
            file,
            size: md.len(),
            modified: time_of(meta.mtime_ns),
            meta,
        }))
    }

    /// The `x-amz-version-id` S3 answers for a version: its id, or `null` for the null version
    /// of a bucket that has versioning (enabled or suspended); nothing in a bucket that never
    /// had it.
    pub fn version_header(&self, bucket: &str, meta: &ObjectMeta) -> StoreResult<Option<String>> {
        if let Some(id) = &meta.version_id {
            return Ok(Some(id.clone()));
        }
        Ok((self.versioning(bucket)? != Versioning::Off).then(|| NULL_VERSION.to_owned()))
    }

    /// The id of the key's newest kept version when it is a delete marker and there is no
    /// current file.
    fn latest_marker(&self, bucket: &str, path: &ObjectPath) -> StoreResult<Option<String>> {
        let Ok(dir) = File::open(self.version_dir_path(bucket, path)) else {
            return Ok(None);
        };
        Ok(self
            .kept_versions(&dir, &path.rel)?
            .into_iter()
            .next()
            .filter(|k| k.meta.delete_marker)
            .map(|k| k.id))
    }

    /// Rewrites the record of one version in place (object lock settings, tags), its bytes
    /// untouched: the current file's or a kept one's. In a versioned bucket it holds the key's
    /// version lock, so the version cannot be moved aside or back meanwhile; the record itself
    /// is replaced in one `setxattr`.
    pub fn update_version_meta(
        &self,
        bucket: &str,
        path: &ObjectPath,
        version: Option<&str>,
        change: impl FnOnce(&mut ObjectMeta) -> StoreResult<()>,
    ) -> StoreResult<ObjectMeta> {
        let versioned = !path.is_folder_marker && self.versioning(bucket)? != Versioning::Off;
        let _vdir = self.lock_versions(bucket, path, versioned)?;
        let (file, mut meta) = match self.open_version(bucket, path, version)? {
            Found::Object(h) => (h.file, h.meta),
            Found::DeleteMarker { .. } => return Err(StoreError::IsDeleteMarker),
        };
        change(&mut meta)?;
        self.meta_store()
            .write(&file, bucket, &path.rel, path.is_folder_marker, &meta)?;
        file.sync_all()?;
        Ok(meta)
    }

    /// A lazy walk over every version and delete marker of the keys that start with `prefix`
    /// and sort at or after `from`: key order, newest first within a key (see [`VersionWalk`]).
    pub fn walk_versions<'a>(
        &'a self,
        bucket: &str,
        prefix: &str,
        from: Option<&str>,
    ) -> StoreResult<VersionWalk<'a>> {
        let current = Walker::new(self, bucket, prefix, from)?;
        let kept = KeptWalk::new(self.versions_root(bucket), prefix, from);
        let mut walk = VersionWalk {
            store: self,
            bucket: bucket.to_owned(),
            current,
            kept,
            next_current: None,
            next_kept: None,
            pending: VecDeque::new(),
        };
        // The walkers start strictly after `from`; `from` itself is looked up directly.
        if let Some(key) = from.filter(|k| k.starts_with(prefix))
            && let Ok(path) = parse_key(key)
        {
            let vdir = self.version_dir_path(bucket, &path);
            walk.load_key(key, vdir.is_dir().then_some(vdir))?;
        }
        Ok(walk)
    }

    /// True when the bucket keeps any version or delete marker (DeleteBucket refuses then).
    pub fn has_kept_versions(&self, bucket: &str) -> StoreResult<bool> {
        let mut stack = vec![self.versions_root(bucket)];
        while let Some(dir) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for e in rd {
                let e = e?;
                if e.file_type()?.is_dir() {
                    stack.push(e.path());
                } else {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Removes every kept version of a bucket (it is being deleted, or created anew).
    pub(super) fn remove_versions_of_bucket(&self, bucket: &str) -> StoreResult<()> {
        match std::fs::remove_dir_all(self.versions_root(bucket)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Repairs what a crash in the middle of a versioned write or delete left (see the module
    /// doc) and removes empty version folders. Returns how many keys were repaired.
    pub fn recover_versions(&self) -> StoreResult<usize> {
        let root = self.internal_dir().join(VERSIONS_DIR);
        let buckets = match std::fs::read_dir(&root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut repaired = 0;
        for b in buckets {
            let b = b?;
            let Some(bucket) = b.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(bfd) = self.bucket_fd(&bucket) else {
                continue;
            };
            let broot = b.path();
            let mut dirs = Vec::new();
            let mut stack = vec![broot.clone()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir)? {
                    let e = e?;
                    if e.file_type()?.is_dir() {
                        stack.push(e.path());
                        dirs.push(e.path());
                    }
                }
            }
            // Deepest first, so a folder emptied here can be removed before its parent.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                let key = dir
                    .strip_prefix(&broot)
                    .ok()
                    .and_then(Path::to_str)
                    .and_then(|s| s.strip_suffix(VERSION_DIR_SUFFIX))
                    .map(str::to_owned);
                if let Some(key) = key
                    && let Ok(path) = parse_key(&key)
                    && self.recover_key(&bucket, &bfd, &path)?
                {
                    tracing::warn!(bucket, key, "repaired the versions of a key after a crash");
                    repaired += 1;
                }
                // Only empty folders go; a folder that still holds anything stays.
                let _ = std::fs::remove_dir(&dir);
            }
        }
        Ok(repaired)
    }

    fn recover_key(
        &self,
        bucket: &str,
        bfd: &std::os::fd::OwnedFd,
        path: &ObjectPath,
    ) -> StoreResult<bool> {
        let Some(vdir) = self.lock_versions(bucket, path, false)? else {
            return Ok(false);
        };
        let current = self.current(bucket, path)?;
        let mut repaired = false;
        if let Some(cur) = &current {
            let id = version_of(&cur.meta);
            let cur_ino = cur.file.metadata()?.ino();
            for k in self.kept_versions(&vdir.dir, &path.rel)? {
                if k.id == id || (k.nlink > 1 && k.ino == cur_ino) {
                    fsutil::unlink_at(vdir.fd(), Path::new(&k.id))?;
                    repaired = true;
                }
            }
            if repaired {
                fsutil::fsync_dir(vdir.fd())?;
            }
        } else if self.promote_latest(bucket, bfd, path, &vdir)?.is_some() {
            repaired = true;
        }
        Ok(repaired)
    }
}

/// An ordered, lazy walk over the versions of a bucket's keys ([`Store::walk_versions`]): the
/// keys with a current file (the bucket's [`Walker`]) merged with the keys that have a version
/// folder ([`KeptWalk`]), one key's versions read at a time, so listing a bucket with many
/// versions needs memory for one key only.
pub struct VersionWalk<'a> {
    store: &'a Store,
    bucket: String,
    current: Walker<'a>,
    kept: KeptWalk,
    /// The next key with a current file, read ahead.
    next_current: Option<String>,
    /// The next key with a version folder, read ahead.
    next_kept: Option<(String, PathBuf)>,
    /// The versions of the key being returned.
    pending: VecDeque<VersionInfo>,
}

impl VersionWalk<'_> {
    /// The next version or delete marker, or `None` at the end.
    pub fn next_version(&mut self) -> StoreResult<Option<VersionInfo>> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Ok(Some(v));
            }
            if self.next_current.is_none() {
                self.next_current = self.current.next_entry()?.map(|e| e.key);
            }
            if self.next_kept.is_none() {
                self.next_kept = self.kept.next_key()?;
            }
            let key = match (&self.next_current, &self.next_kept) {
                (None, None) => return Ok(None),
                (Some(c), Some((k, _))) => c.min(k).clone(),
                (Some(c), None) => c.clone(),
                (None, Some((k, _))) => k.clone(),
            };
            if self.next_current.as_ref() == Some(&key) {
                self.next_current = None;
            }
            let vdir = if self.next_kept.as_ref().is_some_and(|(k, _)| *k == key) {
                self.next_kept.take().map(|(_, d)| d)
            } else {
                None
            };
            self.load_key(&key, vdir)?;
        }
    }

    /// Passes over every key starting with `cp` (a delimiter rolled them up into one common
    /// prefix) without reading them.
    pub fn skip_prefix(&mut self, cp: &str) {
        self.current.skip_prefix(cp);
        self.kept.skip_prefix(cp);
        self.pending.retain(|v| !v.key.starts_with(cp));
        if self
            .next_current
            .as_ref()
            .is_some_and(|k| k.starts_with(cp))
        {
            self.next_current = None;
        }
        if self
            .next_kept
            .as_ref()
            .is_some_and(|(k, _)| k.starts_with(cp))
        {
            self.next_kept = None;
        }
    }

    /// Reads the versions of `key`: its current file, then what its version folder keeps
    /// (without a kept entry that has the current file's id, which a crash may have left).
    fn load_key(&mut self, key: &str, vdir: Option<PathBuf>) -> StoreResult<()> {
        let Ok(path) = parse_key(key) else {
            return Ok(());
        };
        let current = self.store.current(&self.bucket, &path)?;
        let current_id = current.as_ref().map(|c| version_of(&c.meta).to_owned());
        let has_current = current.is_some();
        if let Some(cur) = current {
            self.pending.push_back(VersionInfo {
                key: key.to_owned(),
                version_id: version_of(&cur.meta).to_owned(),
                is_latest: true,
                size: cur.size,
                modified: cur.modified,
                meta: cur.meta,
            });
        }
        let Some(vdir) = vdir else {
            return Ok(());
        };
        let dir = match File::open(&vdir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let kept = self
            .store
            .kept_versions(&dir, &path.rel)?
            .into_iter()
            .filter(|k| Some(&k.id) != current_id.as_ref());
        for (i, k) in kept.enumerate() {
            self.pending.push_back(VersionInfo {
                key: key.to_owned(),
                version_id: k.id,
                is_latest: !has_current && i == 0,
                size: k.size,
                modified: k.modified,
                meta: k.meta,
            });
        }
        Ok(())
    }
}

/// An ordered, lazy walk over the version folders of one bucket (`<key>@v/` below its versions
/// root): yields each key that has one, in key order, for keys that start with `prefix` and
/// sort strictly after `after`. A folder `x@v` is both the version folder of key `x` and the
/// parent of keys `x@v/…`, so it is visited twice: as `x`, and as the folder `x@v/`.
struct KeptWalk {
    prefix: String,
    after: Option<String>,
    skip: Option<String>,
    /// Per open folder, what is left of its sorted entries: the key (or, for a folder, the key
    /// prefix ending in `/`), the path, and whether it is a version folder.
    stack: Vec<std::vec::IntoIter<(String, PathBuf, bool)>>,
}

impl KeptWalk {
    fn new(root: PathBuf, prefix: &str, after: Option<&str>) -> Self {
        let mut walk = KeptWalk {
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            skip: None,
            stack: Vec::new(),
        };
        // Start in the folder the prefix names up to its last `/`; a prefix with a segment no
        // key can have names no folder (and never leaves the versions root).
        let start = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let segments: Vec<&str> = start.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..")
            || segments.len() != start.matches('/').count()
        {
            return walk;
        }
        let dir = segments.iter().fold(root, |p, s| p.join(s));
        walk.push(&dir, start);
        walk
    }

    /// Reads a folder's sub-folders into a sorted frame (a folder that is gone holds nothing).
    fn push(&mut self, dir: &Path, key: &str) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries = Vec::new();
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = e.path();
            if let Some(k) = name.strip_suffix(VERSION_DIR_SUFFIX) {
                entries.push((format!("{key}{k}"), path.clone(), true));
            }
            entries.push((format!("{key}{name}/"), path, false));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.stack.push(entries.into_iter());
    }

    /// The next key with a version folder, and that folder.
    fn next_key(&mut self) -> StoreResult<Option<(String, PathBuf)>> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some((key, path, is_version_dir)) = top.next() else {
                self.stack.pop();
                continue;
            };
            if self
                .skip
                .as_ref()
                .is_some_and(|s| key.starts_with(s.as_str()))
            {
                continue;
            }
            if is_version_dir {
                if key.starts_with(&self.prefix)
                    && self.after.as_ref().is_none_or(|a| key > *a)
                    && parse_key(&key).is_ok()
                {
                    return Ok(Some((key, path)));
                }
                continue;
            }
            // A folder holds keys for the prefix only if one starts with the other, and keys
            // after the start position unless it sorts before it without containing it.
            let in_prefix = key.starts_with(&self.prefix) || self.prefix.starts_with(&key);
            let in_range = self
                .after
                .as_ref()
                .is_none_or(|a| key > *a || a.starts_with(&key));
            if in_prefix && in_range {
                self.push(&path, &key);
            }
        }
    }

    /// Passes over every key starting with `cp`.
    fn skip_prefix(&mut self, cp: &str) {
        self.skip = Some(cp.to_owned());
    }
}

/// Refuses to replace or remove a version that object lock protects.
fn check_unlocked(meta: &ObjectMeta) -> StoreResult<()> {
    check_deletable(meta, false)
}

/// Refuses to remove a version under legal hold or retention (GOVERNANCE retention yields to
/// `bypass_governance`).
pub fn check_deletable(meta: &ObjectMeta, bypass_governance: bool) -> StoreResult<()> {
    if meta.legal_hold {
        return Err(StoreError::ObjectLocked("the object is under legal hold"));
    }
    if let Some(r) = &meta.retention
        && r.until_ms > now_ms()
        && !(bypass_governance && r.mode == meta::RetentionMode::Governance)
    {
        return Err(StoreError::ObjectLocked(
            "the object is protected by object lock retention",
        ));
    }
    Ok(())
}

/// Now in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn time_of(mtime_ns: i128) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(mtime_ns.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Commit;

    fn put(s: &Store, key: &str, body: &[u8]) -> ObjectMeta {
        let path = parse_key(key).unwrap();
        s.commit_bytes(body, "bkt", &path, ObjectMeta::default(), Commit::Replace)
            .unwrap()
    }

    fn ids(s: &Store) -> Vec<(String, bool)> {
        let mut walk = s.walk_versions("bkt", "", None).unwrap();
        let mut out = Vec::new();
        while let Some(v) = walk.next_version().unwrap() {
            out.push((v.version_id, v.is_latest));
        }
        out
    }

    #[test]
    fn both_crash_states_are_repaired_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        if !matches!(s.meta_store(), MetaStore::Xattr) {
            eprintln!("skipped: no user xattrs on the temp folder");
            return;
        }
        s.create_bucket("bkt").unwrap();
        s.set_versioning("bkt", Versioning::Enabled).unwrap();
        let v1 = put(&s, "a/k", b"one").version_id.unwrap();
        let v2 = put(&s, "a/k", b"two").version_id.unwrap();
        let path = parse_key("a/k").unwrap();
        let vdir = s.version_dir_path("bkt", &path);
        let current = dir.path().join("bkt/a/k");

        // A crash after the link and before the rename: the current file is also kept.
        std::fs::hard_link(&current, vdir.join(&v2)).unwrap();
        assert_eq!(ids(&s), [(v2.clone(), true), (v1.clone(), false)]);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(!vdir.join(&v2).exists());
        assert_eq!(ids(&s), [(v2.clone(), true), (v1.clone(), false)]);

        // A crash after the current file was unlinked and before the marker was made.
        std::fs::hard_link(&current, vdir.join(&v2)).unwrap();
        std::fs::remove_file(&current).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(std::fs::read(&current).unwrap(), b"two");
        assert_eq!(ids(&s), [(v2.clone(), true), (v1.clone(), false)]);

        // Deleting the current version by id promotes the next; a marker on top hides it.
        let d = s.delete_version("bkt", &path, &v2, false).unwrap();
        assert!(d.current_gone && d.promoted.is_some());
        assert_eq!(std::fs::read(&current).unwrap(), b"one");
        let m = s.delete_current("bkt", &path).unwrap();
        assert!(m.delete_marker && !current.exists());
        let marker = m.version_id.unwrap();
        assert!(matches!(
            s.open_version("bkt", &path, None).unwrap(),
            Found::DeleteMarker { .. }
        ));
        assert_eq!(ids(&s), [(marker.clone(), true), (v1.clone(), false)]);
        s.delete_version("bkt", &path, &marker, false).unwrap();
        assert_eq!(std::fs::read(&current).unwrap(), b"one");
        assert!(matches!(
            s.delete_bucket("bkt"),
            Err(StoreError::BucketNotEmpty)
        ));
        s.delete_version("bkt", &path, &v1, false).unwrap();
        assert!(ids(&s).is_empty());
        s.delete_bucket("bkt").unwrap();
    }
}
