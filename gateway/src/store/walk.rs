//! Walks a bucket folder in S3 key order (UTF-8 byte order), lazily.
//!
//! The walker keeps a stack of sorted folder listings and reads a folder only when the walk
//! reaches it, so a listing bounded by a prefix or a start position reads only the folders that
//! can hold keys in range. Within a folder a subfolder sorts as `name/` (all its keys start with
//! that), which makes the depth-first order the byte order of the keys: `a-c` < `a.txt` < `a/`
//! < `a/b`.
//!
//! A folder `a` may also hold the object `a` (see `store::layout`): its key sorts as `a`, before
//! `a!x` and `a/`, so each subfolder is also entered in its folder's names as `a` followed by a
//! NUL ([`IN_FOLDER`]; no key has one), which sorts right there, and is looked up when the walk
//! reaches it. A folder marker's bytes are returned where its marker is (`a/`).
//!
//! Folders are read through descriptors opened without following symlinks, so a symlink inside a
//! bucket never leads a listing outside it; symlinks and other special files are not listed.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::fsutil::{self, FileType};
use super::keys::{
    BUCKET_TMP_PREFIX, MARKER_BYTES, MAX_KEY_LEN, OBJECT_IN_FOLDER, is_reserved_segment, parse_key,
};
use super::meta::{FileId, FileStamp};
use super::{EMPTY_MD5, Store};
use crate::store::{StoreError, StoreResult};

/// What a listing shows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key.
    pub key: String,
    /// Size in bytes (0 for folder markers).
    pub size: u64,
    /// Last-Modified.
    pub modified: SystemTime,
    /// ETag without quotes.
    pub etag: String,
}

/// An object found by the walk. Only its key is known until [`Walker::info`] is asked, so
/// entries a listing rolls up into a common prefix cost no `stat` or xattr read.
#[derive(Debug)]
pub struct Entry {
    /// The key.
    pub key: String,
    kind: EntryKind,
}

impl Entry {
    /// True for an empty folder marker (a key ending in `/`, kept as the folder itself: no
    /// file, no bytes). A marker with bytes is a file entry.
    pub fn is_folder_marker(&self) -> bool {
        matches!(self.kind, EntryKind::Marker { .. })
    }

    /// The name of a file entry's file in its folder.
    fn file_name(&self) -> &str {
        match &self.kind {
            EntryKind::File {
                stored: Some(name), ..
            } => name,
            _ => self.key.rsplit('/').next().unwrap_or(&self.key),
        }
    }
}

/// Size and modification time of a listed file, as one `statx` of its folder entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

#[derive(Debug)]
enum EntryKind {
    /// A regular file in the folder `parent`: named as the key's last segment, or a reserved
    /// name (`stored`) inside the folder of the key's name.
    File {
        parent: Rc<File>,
        stored: Option<&'static str>,
    },
    /// A folder with folder-marker metadata; its details were read when the walk entered it.
    Marker { modified: SystemTime, etag: String },
}

/// One folder on the walk's stack.
struct Frame {
    /// The folder (the bucket folder itself is an `O_PATH` descriptor).
    dir: Rc<File>,
    /// Key prefix of everything inside: `""` for the bucket folder, else like `a/b/`.
    key: String,
    /// The folder's names still to visit.
    names: Names,
}

/// The names of one folder, subfolders with a trailing `/`.
enum Names {
    /// Read for this walk: only names that can hold keys in range. Sorted lazily: see
    /// [`Names::sort_more`].
    Own {
        names: Vec<String>,
        /// `names[..sorted]` are in final order and sort before all the others.
        sorted: usize,
        /// Next name to visit.
        pos: usize,
    },
    /// A big folder's complete, sorted listing from the [`DirCache`]; names out of range are
    /// passed over here.
    Shared {
        names: Arc<Vec<String>>,
        pos: usize,
        /// Names must start with this (the part of the listing prefix below the folder).
        prefix: Option<String>,
        /// Names must sort after this, or be a folder holding it.
        after: Option<String>,
    },
}

/// Appended to a subfolder's name for the key of the same name, which the folder may hold
/// (see the module doc).
const IN_FOLDER: char = '\0';

/// A name as its key segment: without [`IN_FOLDER`].
fn bare(name: &str) -> &str {
    name.strip_suffix(IN_FOLDER).unwrap_or(name)
}

/// Names put in order at a time at first; later rounds double.
const FIRST_SORT: usize = 1024;

impl Names {
    /// Puts the next batch of names in order. A page needs at most 1,001 names, so sorting all
    /// of a 100,000-entry folder up front would be mostly wasted: select the smallest batch in
    /// linear time, sort only that, and double the batch each round so a full walk stays
    /// O(n log n).
    fn sort_more(names: &mut [String], sorted: &mut usize) {
        let rest = &mut names[*sorted..];
        let batch = (*sorted).max(FIRST_SORT);
        if rest.len() > batch {
            rest.select_nth_unstable(batch);
            rest[..batch].sort_unstable();
            *sorted += batch;
        } else {
            rest.sort_unstable();
            *sorted = names.len();
        }
    }

    /// The next name in order, or `None` when the folder is done.
    fn next(&mut self) -> Option<String> {
        match self {
            Names::Own { names, sorted, pos } => {
                if *pos == *sorted && *pos < names.len() {
                    Self::sort_more(names, sorted);
                }
                let name = names.get(*pos)?.clone();
                *pos += 1;
                Some(name)
            }
            Names::Shared {
                names,
                pos,
                prefix,
                after,
            } => loop {
                let name = names.get(*pos)?;
                *pos += 1;
                let is_dir = name.ends_with('/');
                if let Some(p) = prefix.as_deref()
                    && !(bare(name).starts_with(p) || (is_dir && p.starts_with(name.as_str())))
                {
                    if name.as_str() > p {
                        // Sorted: nothing later starts with the prefix either.
                        *pos = names.len();
                        return None;
                    }
                    continue;
                }
                if let Some(a) = after.as_deref()
                    && !(bare(name) > a || (is_dir && a.starts_with(name.as_str())))
                {
                    continue;
                }
                return Some(name.clone());
            },
        }
    }
}

/// The smallest name in a folder that can match `s` (a prefix or start position below the
/// folder): `s` itself, or the subfolder `s` points into.
fn lower_bound(s: &str) -> &str {
    match s.find('/') {
        Some(i) => &s[..=i],
        None => s,
    }
}

/// Folders with at least this many entries have their sorted listing cached.
const DIR_CACHE_MIN_NAMES: usize = 1000;
/// Names kept in the cache at most (a few MiB); past that it starts over.
const DIR_CACHE_MAX_NAMES: usize = 256 * 1024;
/// A folder changed more recently than this is not cached: its timestamps might not move on
/// the next change (coarse filesystem clocks), so the cache could not notice it.
const DIR_CACHE_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// A cached folder listing: the folder's stamp, its key prefix and its sorted names.
type CachedDir = (FileStamp, String, Arc<Vec<String>>);

/// Complete sorted listings of big folders, by folder, valid while the folder shows the same
/// [`FileStamp`] (adding, removing or renaming an entry moves a folder's mtime and ctime).
/// Reading a 100,000-entry folder costs tens of milliseconds of kernel time, paid again for
/// every page of a listing without this; with it, a page of an unchanged folder is a lookup.
#[derive(Debug, Default)]
pub struct DirCache {
    map: Mutex<HashMap<FileId, CachedDir>>,
}

impl DirCache {
    fn get(&self, stamp: &FileStamp, key: &str) -> Option<Arc<Vec<String>>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&stamp.id()) {
            Some((s, k, names)) if s == stamp && k == key => Some(names.clone()),
            _ => None,
        }
    }

    /// Drops the listing kept for the folder `id` (another gateway changed an entry).
    pub(super) fn forget(&self, id: FileId) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Drops every listing (changes made elsewhere may have been missed).
    pub(super) fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn put(&self, stamp: FileStamp, key: &str, names: Arc<Vec<String>>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = map.values().map(|(_, _, n)| n.len()).sum();
        if held + names.len() > DIR_CACHE_MAX_NAMES {
            map.clear();
        }
        map.insert(stamp.id(), (stamp, key.to_owned(), names));
    }
}

/// An ordered, lazy walk over the objects of one bucket.
pub struct Walker<'a> {
    store: &'a Store,
    bucket: String,
    prefix: String,
    after: Option<String>,
    /// Keys starting with this are passed over (see [`Walker::skip_prefix`]).
    skip: Option<String>,
    /// The folder marker of the starting folder, returned before anything else.
    pending: Option<Entry>,
    stack: Vec<Frame>,
}

impl<'a> Walker<'a> {
    /// Starts a walk over the keys of `bucket` that start with `prefix` and sort strictly after
    /// `after`. Fails with `NoSuchBucket` if the bucket folder does not exist.
    pub fn new(
        store: &'a Store,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> StoreResult<Self> {
        let mut dir = Rc::new(File::from(store.bucket_fd(bucket)?));
        let mut walker = Walker {
            store,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            skip: None,
            pending: None,
            stack: Vec::new(),
        };
        // Every key with the prefix lives below the folder the prefix names up to its last `/`:
        // start there instead of reading the folders above it.
        let start = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        if start.len() > MAX_KEY_LEN || after.is_some_and(|a| !may_hold_keys_after(start, a)) {
            return Ok(walker);
        }
        // Keys never have empty, `.` or `..` segments: a prefix folder with one holds nothing.
        for comp in start
            .strip_suffix('/')
            .into_iter()
            .flat_map(|s| s.split('/'))
        {
            if !is_key_segment(comp) {
                return Ok(walker);
            }
            match fsutil::open_subdir_nofollow(dir.as_fd(), comp) {
                Ok(d) => dir = Rc::new(d),
                Err(e) if is_skippable(&e) => return Ok(walker),
                Err(e) => return Err(e.into()),
            }
        }
        if !start.is_empty() {
            walker.pending = walker.marker_entry(&dir, start)?;
        }
        walker.push_frame(dir, start.to_owned())?;
        Ok(walker)
    }

    /// The next object in key order, or `None` at the end of the range.
    pub fn next_entry(&mut self) -> StoreResult<Option<Entry>> {
        if let Some(e) = self.pending.take() {
            return Ok(Some(e));
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(name) = top.names.next() else {
                self.stack.pop();
                continue;
            };
            let key = format!("{}{}", top.key, bare(&name));
            let parent = Rc::clone(&top.dir);
            if self.skip.as_deref().is_some_and(|s| key.starts_with(s)) {
                continue;
            }
            if name.ends_with(IN_FOLDER) {
                match object_in_folder(&parent, bare(&name))? {
                    Some(folder) => {
                        return Ok(Some(Entry {
                            key,
                            kind: EntryKind::File {
                                parent: Rc::new(folder),
                                stored: Some(OBJECT_IN_FOLDER),
                            },
                        }));
                    }
                    None => continue,
                }
            }
            let Some(dir_name) = name.strip_suffix('/') else {
                return Ok(Some(Entry {
                    key,
                    kind: EntryKind::File {
                        parent,
                        stored: None,
                    },
                }));
            };
            let sub = match fsutil::open_subdir_nofollow(parent.as_fd(), dir_name) {
                Ok(d) => Rc::new(d),
                // Removed or replaced since the folder was read: nothing to list there.
                Err(e) if is_skippable(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let marker = self.marker_entry(&sub, &key)?;
            match self.push_frame(sub, key) {
                Ok(()) => {}
                Err(e) if is_skippable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            if marker.is_some() {
                return Ok(marker);
            }
        }
    }

    /// Passes over every key starting with `cp` without reading the folders that hold them
    /// (a delimiter roll-up has already reported them as one common prefix).
    pub fn skip_prefix(&mut self, cp: &str) {
        while self.stack.last().is_some_and(|f| f.key.starts_with(cp)) {
            self.stack.pop();
        }
        if self.pending.as_ref().is_some_and(|e| e.key.starts_with(cp)) {
            self.pending = None;
        }
        self.skip = Some(cp.to_owned());
    }

    /// Size and mtime of a file entry from one `statx`, reading no metadata (the catalog scan
    /// compares them with its rows); `None` for folder markers and for files that vanished or
    /// are no longer regular files.
    pub fn stat(&self, entry: &Entry) -> StoreResult<Option<FileStat>> {
        let EntryKind::File { parent, .. } = &entry.kind else {
            return Ok(None);
        };
        let name = entry.file_name();
        match fsutil::statx_at(parent.as_fd(), name) {
            Ok(st) if fsutil::statx_type(&st) == FileType::RegularFile => Ok(Some(FileStat {
                size: st.stx_size,
                mtime_ns: i128::from(st.stx_mtime.tv_sec) * 1_000_000_000
                    + i128::from(st.stx_mtime.tv_nsec),
            })),
            Ok(_) => Ok(None),
            Err(e) if is_skippable(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Size, Last-Modified and ETag of an entry; `None` if it vanished meanwhile. Recorded
    /// metadata is used while it matches the file; otherwise the ETag is derived (and recorded)
    /// exactly as GET would.
    pub fn info(&self, entry: &Entry) -> StoreResult<Option<ObjectInfo>> {
        let key = entry.key.clone();
        let parent = match &entry.kind {
            EntryKind::Marker { modified, etag } => {
                return Ok(Some(ObjectInfo {
                    key,
                    size: 0,
                    modified: *modified,
                    etag: etag.clone(),
                }));
            }
            EntryKind::File { parent, .. } => parent,
        };
        let name = entry.file_name();
        // Usually one `statx` per key: a file whose version was seen before (a repeated
        // listing, a GET) has its ETag in the store's cache, with no open and no xattr read.
        if let Ok(st) = fsutil::statx_at(parent.as_fd(), name)
            && fsutil::statx_type(&st) == FileType::RegularFile
            && let Some(etag) = self.store.cached_etag(&FileStamp::of_statx(&st))
        {
            let modified = SystemTime::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(st.stx_mtime.tv_sec).unwrap_or(0),
                    st.stx_mtime.tv_nsec,
                );
            return Ok(Some(ObjectInfo {
                key,
                size: st.stx_size,
                modified,
                etag,
            }));
        }
        let file = match fsutil::open_file_nofollow(parent.as_fd(), name) {
            Ok(f) => f,
            Err(e) if is_skippable(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let md = file.metadata()?;
        if !md.is_file() {
            return Ok(None);
        }
        let rel = Path::new(entry.key.trim_end_matches('/'));
        let folder = entry.key.ends_with('/');
        if let Some(meta) = self
            .store
            .recorded_meta(&file, &md, &self.bucket, rel, folder)
        {
            let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            return Ok(Some(ObjectInfo {
                key,
                size: md.len(),
                modified,
                etag: meta.etag,
            }));
        }
        let Ok(path) = parse_key(&entry.key) else {
            return Ok(None);
        };
        match self.store.open_object(&self.bucket, &path) {
            Ok(h) => Ok(Some(ObjectInfo {
                key,
                size: h.size,
                modified: h.modified,
                etag: h.meta.etag,
            })),
            Err(StoreError::NoSuchKey) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The folder-marker entry for the folder `dir` with key `key` (`a/b/`), if it is one and in
    /// range: its bytes file, or (for an empty marker) the folder itself.
    fn marker_entry(&self, dir: &Rc<File>, key: &str) -> StoreResult<Option<Entry>> {
        if !key.starts_with(&self.prefix)
            || key.len() > MAX_KEY_LEN
            || self.after.as_deref().is_some_and(|a| key <= a)
            || self.skip.as_deref().is_some_and(|s| key.starts_with(s))
        {
            return Ok(None);
        }
        match fsutil::statx_at(dir.as_fd(), MARKER_BYTES) {
            Ok(st) if fsutil::statx_type(&st) == FileType::RegularFile => {
                return Ok(Some(Entry {
                    key: key.to_owned(),
                    kind: EntryKind::File {
                        parent: Rc::clone(dir),
                        stored: Some(MARKER_BYTES),
                    },
                }));
            }
            Ok(_) => {}
            Err(e) if is_skippable(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let rel = Path::new(key.trim_end_matches('/'));
        let Some(meta) = self.store.meta_store().read(dir, &self.bucket, rel, true) else {
            return Ok(None);
        };
        let Ok(md) = dir.metadata() else {
            return Ok(None);
        };
        let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let etag = if meta.etag.is_empty() {
            EMPTY_MD5.to_owned()
        } else {
            meta.etag
        };
        Ok(Some(Entry {
            key: key.to_owned(),
            kind: EntryKind::Marker { modified, etag },
        }))
    }

    /// Reads the folder `dir` (key prefix `key`), keeping only names that can hold keys in range.
    fn push_frame(&mut self, dir: Rc<File>, key: String) -> io::Result<()> {
        // The parts of the prefix and start position below this folder; `None` when every key
        // here matches (the folder lies entirely inside the prefix, or after the start).
        let prefix_rest = self
            .prefix
            .strip_prefix(key.as_str())
            .filter(|r| !r.is_empty());
        let after_rest = self
            .after
            .as_deref()
            .and_then(|a| a.strip_prefix(key.as_str()));
        let in_range = |name: &str| {
            let is_dir = name.ends_with('/');
            let in_prefix = prefix_rest
                .is_none_or(|p| bare(name).starts_with(p) || (is_dir && p.starts_with(name)));
            // A folder before the start position may still hold keys after it (`a/` < `a/b`).
            let in_range =
                after_rest.is_none_or(|a| bare(name) > a || (is_dir && a.starts_with(name)));
            in_prefix && in_range
        };
        let before = dir.metadata()?;
        let stamp = FileStamp::of(&before);
        let cache = &self.store.dir_cache;
        let shared = match cache.get(&stamp, &key) {
            Some(names) => {
                crate::metrics::cache(crate::metrics::Cache::Listing, true);
                Some(names)
            }
            None => {
                let read_at = SystemTime::now();
                let mut names = Vec::new();
                fsutil::read_dir(dir.as_fd(), |raw, kind| {
                    if let Some(name) = entry_name(&key, raw, kind) {
                        if kind == FileType::Directory {
                            names.push(format!("{}{IN_FOLDER}", bare_dir(&name)));
                        }
                        names.push(name);
                    }
                })?;
                // Only folders big enough to be cached count as misses: small ones are
                // never kept, by design.
                if names.len() >= DIR_CACHE_MIN_NAMES {
                    crate::metrics::cache(crate::metrics::Cache::Listing, false);
                }
                if names.len() >= DIR_CACHE_MIN_NAMES && settled(&before, read_at) {
                    names.sort_unstable();
                    let names = Arc::new(names);
                    // Only a listing of the folder as stamped may be kept.
                    if dir
                        .metadata()
                        .is_ok_and(|after| FileStamp::of(&after) == stamp)
                    {
                        cache.put(stamp, &key, names.clone());
                    }
                    Some(names)
                } else {
                    names.retain(|n| in_range(n));
                    self.stack.push(Frame {
                        dir,
                        key,
                        names: Names::Own {
                            names,
                            sorted: 0,
                            pos: 0,
                        },
                    });
                    return Ok(());
                }
            }
        };
        let names = shared.expect("set above");
        let lower = [prefix_rest, after_rest]
            .into_iter()
            .flatten()
            .map(lower_bound)
            .max()
            .unwrap_or("");
        let pos = names.partition_point(|n| n.as_str() < lower);
        let (prefix, after) = (
            prefix_rest.map(str::to_owned),
            after_rest.map(str::to_owned),
        );
        self.stack.push(Frame {
            dir,
            key,
            names: Names::Shared {
                names,
                pos,
                prefix,
                after,
            },
        });
        Ok(())
    }
}

/// The walk's name for a folder entry (subfolders get a trailing `/`), or `None` for entries
/// that cannot be (part of) a key below `key`.
fn entry_name(key: &str, raw: &[u8], kind: FileType) -> Option<String> {
    let name = std::str::from_utf8(raw)
        .ok()
        .filter(|n| is_key_segment(n))?;
    let name = match kind {
        FileType::RegularFile => name.to_owned(),
        FileType::Directory => format!("{name}/"),
        _ => return None,
    };
    (key.len() + name.len() <= MAX_KEY_LEN).then_some(name)
}

/// A folder's walk name without its trailing `/`.
fn bare_dir(name: &str) -> &str {
    name.strip_suffix('/').unwrap_or(name)
}

/// The folder `name` in `parent` when it holds the object of its own name (see
/// `store::layout`), opened for reading that file; one `statx` when it does not.
fn object_in_folder(parent: &File, name: &str) -> StoreResult<Option<File>> {
    match fsutil::statx_at(parent.as_fd(), &format!("{name}/{OBJECT_IN_FOLDER}")) {
        Ok(st) if fsutil::statx_type(&st) == FileType::RegularFile => {}
        Ok(_) => return Ok(None),
        Err(e) if is_skippable(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    // Opened without following a symlink: what is listed is what a GET reads.
    match fsutil::open_subdir_nofollow(parent.as_fd(), name) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if is_skippable(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True when a folder last changed well before `read_at` (see [`DIR_CACHE_SETTLE`]).
fn settled(md: &std::fs::Metadata, read_at: SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ctime = SystemTime::UNIX_EPOCH
        + std::time::Duration::new(
            u64::try_from(md.ctime()).unwrap_or(0),
            u32::try_from(md.ctime_nsec()).unwrap_or(0),
        );
    ctime + DIR_CACHE_SETTLE < read_at
}

/// True when the bucket folder holds at least one object (file or folder marker). Anything else
/// that is not a folder (symlinks, names that are not UTF-8) also counts, so DeleteBucket never
/// removes data a listing does not show. The gateway's `.nebula-tmp*` folders are ignored.
///
/// It reads folders as the [`Walker`] does, but not through it: the walk passes over exactly
/// the entries that must count here, and order does not matter.
pub fn has_any_object(store: &Store, bucket: &str) -> StoreResult<bool> {
    let root = File::from(store.bucket_fd(bucket)?);
    // (folder, its relative path) pairs still to read; an explicit stack bounds nothing by depth.
    let mut todo = vec![(root, String::new())];
    while let Some((dir, rel)) = todo.pop() {
        if !rel.is_empty()
            && store
                .meta_store()
                .read(&dir, bucket, Path::new(&rel), true)
                .is_some()
        {
            return Ok(true);
        }
        let mut subdirs = Vec::new();
        let mut found = false;
        fsutil::read_dir(dir.as_fd(), |raw, kind| {
            if raw.starts_with(BUCKET_TMP_PREFIX.as_bytes()) {
                return;
            }
            match (kind, std::str::from_utf8(raw)) {
                (FileType::Directory, Ok(name)) => subdirs.push(name.to_owned()),
                _ => found = true,
            }
        })?;
        if found {
            return Ok(true);
        }
        for name in subdirs {
            match fsutil::open_subdir_nofollow(dir.as_fd(), &name) {
                Ok(d) => todo.push((
                    d,
                    if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    },
                )),
                Err(e) if is_skippable(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(false)
}

/// Whether a folder with key prefix `dir_key` can hold keys sorting after `after`.
fn may_hold_keys_after(dir_key: &str, after: &str) -> bool {
    // Keys below the folder all start with `dir_key`: either the folder sorts after `after`
    // as a whole, or `after` points inside it.
    dir_key > after || after.starts_with(dir_key)
}

/// A name that can be one segment of a key (see `keys::parse_key`).
fn is_key_segment(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !is_reserved_segment(name)
}

/// Errors that mean "nothing to list here" rather than a failing listing: the entry vanished, was
/// replaced by a symlink or a file, or is not readable by the gateway.
fn is_skippable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES | libc::EPERM | libc::ENXIO)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::meta::ObjectMeta;
    use crate::store::{Commit, keys::parse_key};
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    /// A data folder in the system temp folder, removed on drop, with one bucket `b`.
    pub(crate) struct TempData {
        pub store: Store,
        pub root: PathBuf,
    }

    impl TempData {
        pub(crate) fn new() -> Self {
            let root =
                std::env::temp_dir().join(format!("nebula-walk-{}", uuid::Uuid::new_v4().simple()));
            let store = Store::open(&root).unwrap();
            store.create_bucket("bkt").unwrap();
            TempData { store, root }
        }

        /// Writes an object the way a user would, out of band.
        pub(crate) fn put(&self, key: &str, body: &[u8]) {
            let path = self.root.join("bkt").join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }

        /// Creates a folder marker through the store, as PutObject of `key/` does.
        pub(crate) fn marker(&self, key: &str) {
            let tmp = self.store.create_temp("bkt").unwrap();
            self.store
                .commit(
                    tmp,
                    "bkt",
                    &parse_key(key).unwrap(),
                    ObjectMeta::default(),
                    Commit::Replace,
                )
                .unwrap();
        }

        pub(crate) fn walk(&self, prefix: &str, after: Option<&str>) -> Vec<String> {
            let mut w = Walker::new(&self.store, "bkt", prefix, after).unwrap();
            let mut out = Vec::new();
            while let Some(e) = w.next_entry().unwrap() {
                out.push(e.key);
            }
            out
        }
    }

    impl Drop for TempData {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    const KEYS: &[&str] = &[
        "a-c",
        "a.txt",
        "a/b-",
        "a/b/c",
        "a/b/c.d",
        "a/b0",
        "a0",
        "z",
        "é/x",
        "日本.txt",
        "😀",
        "Z",
        "a/b/c-/d",
    ];

    /// Every prefix and start-after among `probes` walks exactly the keys of `all` (sorted)
    /// that a plain filter picks.
    fn assert_walks_like_a_filter(t: &TempData, all: &[String], probes: &[&str]) {
        for &prefix in probes {
            for after in probes.iter().map(|a| Some(*a)).chain([None]) {
                assert_walk_like_a_filter(t, all, prefix, after);
            }
        }
    }

    /// A walk from `prefix` and `after` gives exactly the keys of `all` (sorted) a plain
    /// filter picks.
    fn assert_walk_like_a_filter(t: &TempData, all: &[String], prefix: &str, after: Option<&str>) {
        let want: Vec<String> = all
            .iter()
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .cloned()
            .collect();
        assert_eq!(
            t.walk(prefix, after),
            want,
            "prefix {prefix:?} after {after:?}"
        );
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn walks_in_byte_order_of_keys() {
        let t = TempData::new();
        for k in KEYS {
            t.put(k, k.as_bytes());
        }
        let got = t.walk("", None);
        assert_eq!(got, sorted(KEYS));
        // The cases the folder-as-`name/` rule exists for.
        let pos = |k: &str| got.iter().position(|g| g == k).unwrap();
        assert!(
            pos("a-c") < pos("a.txt") && pos("a.txt") < pos("a/b-") && pos("a/b/c") < pos("a/b0")
        );
    }

    #[test]
    fn prefix_and_start_after_match_a_brute_force_filter() {
        let t = TempData::new();
        for k in KEYS {
            t.put(k, b"x");
        }
        t.marker("a/b/");
        let mut all: Vec<&str> = KEYS.to_vec();
        all.push("a/b/");
        let all = sorted(&all);
        let probes = [
            "",
            "a",
            "a/",
            "a/b",
            "a/b/",
            "a/b/c",
            "a/b/c-/",
            "a/b/c-/d",
            "a/b/b",
            "a/b/zzz",
            "a-",
            "a.",
            "b",
            "é",
            "é/",
            "zz",
            "😀",
            "a//",
            "../",
            ".nebula-tmp/",
        ];
        assert_walks_like_a_filter(&t, &all, &probes);
    }

    #[test]
    fn keys_that_are_also_folders_sort_as_keys() {
        let t = TempData::new();
        let put = |key: &str, body: &[u8]| {
            t.store
                .commit_bytes(
                    body,
                    "bkt",
                    &parse_key(key).unwrap(),
                    ObjectMeta::default(),
                    Commit::Replace,
                )
                .unwrap();
        };
        // Written so that each of `a`, `a/b` and `m/` ends up inside a folder of its name.
        let keys = [
            "a", "a/b", "a/b/c", "a!x", "a0", "a.txt", "m/", "m/x", "m!", "n/o", "n",
        ];
        for k in keys {
            put(k, k.as_bytes());
        }
        assert!(t.root.join("bkt/a/.nebula-object").is_file());
        assert!(t.root.join("bkt/a/b/.nebula-object").is_file());
        assert!(t.root.join("bkt/m/.nebula-folder").is_file());
        assert!(t.root.join("bkt/n/.nebula-object").is_file());
        let all = sorted(&keys);
        assert_eq!(t.walk("", None), all);
        let probes = [
            "", "a", "a!", "a/", "a/b", "a/b/", "a0", "m", "m/", "m/x", "n", "n/", "z", "a\0",
        ];
        assert_walks_like_a_filter(&t, &all, &probes);
        // Sizes come from the reserved files.
        let mut w = Walker::new(&t.store, "bkt", "m/", None).unwrap();
        let e = w.next_entry().unwrap().unwrap();
        assert_eq!(
            (e.key.as_str(), w.info(&e).unwrap().unwrap().size),
            ("m/", 2)
        );
        assert_eq!(w.stat(&e).unwrap().unwrap().size, 2);
    }

    #[test]
    fn folder_markers_come_before_their_contents() {
        let t = TempData::new();
        t.marker("photos/");
        t.marker("photos/2024/");
        t.put("photos/2024/cat.jpg", b"meow");
        t.marker("empty-marker/");
        assert_eq!(
            t.walk("", None),
            [
                "empty-marker/",
                "photos/",
                "photos/2024/",
                "photos/2024/cat.jpg"
            ]
        );
        let mut w = Walker::new(&t.store, "bkt", "photos/", None).unwrap();
        let e = w.next_entry().unwrap().unwrap();
        let info = w.info(&e).unwrap().unwrap();
        assert_eq!(
            (info.key.as_str(), info.size, info.etag.as_str()),
            ("photos/", 0, EMPTY_MD5)
        );
    }

    #[test]
    fn skips_temp_folders_symlinks_empty_folders_and_bad_names() {
        let t = TempData::new();
        t.put("ok", b"1");
        t.put("d/real", b"2");
        t.put(".nebula-tmp/x.tmp", b"3");
        t.put("d/.nebula-tmp-7", b"4");
        std::fs::create_dir_all(t.root.join("bkt/empty/deeper")).unwrap();
        std::os::unix::fs::symlink(t.root.join("bkt/ok"), t.root.join("bkt/link-file")).unwrap();
        std::os::unix::fs::symlink(t.root.join("bkt/d"), t.root.join("bkt/link-dir")).unwrap();
        std::os::unix::fs::symlink("/etc", t.root.join("bkt/etc")).unwrap();
        let bad = t
            .root
            .join("bkt")
            .join(std::ffi::OsStr::from_bytes(b"bad-\xff"));
        std::fs::write(bad, b"5").unwrap();
        assert_eq!(t.walk("", None), ["d/real", "ok"]);
        assert!(
            t.walk("etc/", None).is_empty(),
            "a symlinked folder is not walked into"
        );
        assert!(t.walk("link-dir/", None).is_empty());
    }

    #[test]
    fn out_of_band_files_get_etags() {
        let t = TempData::new();
        t.put("hello.txt", b"hello");
        let mut w = Walker::new(&t.store, "bkt", "", None).unwrap();
        let e = w.next_entry().unwrap().unwrap();
        let info = w.info(&e).unwrap().unwrap();
        assert_eq!(info.etag, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(info.size, 5);
        // Second time from the recorded metadata, same answer.
        assert_eq!(w.info(&e).unwrap().unwrap(), info);
        // Changed out of band: derived again.
        std::thread::sleep(std::time::Duration::from_millis(10));
        t.put("hello.txt", b"hello!");
        let info2 = w.info(&e).unwrap().unwrap();
        assert_eq!(
            (info2.etag.as_str(), info2.size),
            ("5a8dd3ad0756a93ded72b823b19dd877", 6)
        );
    }

    #[test]
    fn big_folders_are_listed_from_the_cache_until_they_change() {
        let t = TempData::new();
        let mut all: Vec<String> = (0..1200).map(|i| format!("k{i:05}")).collect();
        for k in &all {
            t.put(k, b"x");
        }
        t.put("k00100x/in", b"x");
        all.push("k00100x/in".into());
        all.sort();
        // Only folders that have settled are cached.
        std::thread::sleep(DIR_CACHE_SETTLE + std::time::Duration::from_millis(200));
        assert_eq!(t.walk("", None), all, "first walk reads the folder");
        assert_eq!(
            t.store.dir_cache.map.lock().unwrap().len(),
            1,
            "the bucket folder is cached"
        );
        assert_eq!(t.walk("", None), all, "second walk uses the cache");
        for (prefix, after) in [
            ("k0010", None),
            ("k0010", Some("k00100")),
            ("k0010", Some("k00100x/")),
            ("k0011", Some("k00100x/in")),
            ("", Some("k01199")),
            ("", Some("k00599")),
            ("zz", None),
        ] {
            assert_walk_like_a_filter(&t, &all, prefix, after);
        }
        // A new entry changes the folder's stamp: the cache is not used for it.
        t.put("k00000a", b"x");
        all.push("k00000a".into());
        all.sort();
        assert_eq!(t.walk("", None), all);
        std::fs::remove_file(t.root.join("bkt/k00001")).unwrap();
        all.retain(|k| k != "k00001");
        assert_eq!(t.walk("", None), all);
    }

    #[test]
    fn vanished_files_are_not_listed() {
        let t = TempData::new();
        t.put("gone", b"x");
        let mut w = Walker::new(&t.store, "bkt", "", None).unwrap();
        let e = w.next_entry().unwrap().unwrap();
        std::fs::remove_file(t.root.join("bkt/gone")).unwrap();
        assert_eq!(w.info(&e).unwrap(), None);
    }

    #[test]
    fn skip_prefix_passes_over_a_subtree() {
        let t = TempData::new();
        for k in ["a/1", "a/2/x", "a/3", "b/1", "c"] {
            t.put(k, b"x");
        }
        let mut w = Walker::new(&t.store, "bkt", "", None).unwrap();
        assert_eq!(w.next_entry().unwrap().unwrap().key, "a/1");
        w.skip_prefix("a/");
        assert_eq!(w.next_entry().unwrap().unwrap().key, "b/1");
        w.skip_prefix("b");
        assert_eq!(w.next_entry().unwrap().unwrap().key, "c");
        assert!(w.next_entry().unwrap().is_none());
    }

    #[test]
    fn missing_bucket_is_no_such_bucket() {
        let t = TempData::new();
        assert!(matches!(
            Walker::new(&t.store, "nope", "", None),
            Err(StoreError::NoSuchBucket)
        ));
    }

    #[test]
    fn has_any_object_ignores_empty_folders_and_temp_files() {
        let t = TempData::new();
        let path = t.root.join("bkt");
        assert!(!has_any_object(&t.store, "bkt").unwrap());
        std::fs::create_dir_all(path.join("x/y/z")).unwrap();
        t.put(".nebula-tmp/part.tmp", b"x");
        assert!(!has_any_object(&t.store, "bkt").unwrap());
        t.marker("x/y/");
        assert!(has_any_object(&t.store, "bkt").unwrap());
        t.store
            .delete_object("bkt", &parse_key("x/y/").unwrap())
            .unwrap();
        t.put("x/y/z/file", b"1");
        assert!(has_any_object(&t.store, "bkt").unwrap());
    }
}
