//! Where an object's bytes are in its bucket folder, and the one change of layout a write may
//! need: a file that must become a folder.
//!
//! S3 keys are names, not paths: `a` and `a/b` can both be objects, and the folder marker `a/`
//! can hold bytes. A name on disk cannot be a file and a folder at once, so the common case
//! keeps the transparent layout (the object `a` is the plain file `DATA/<bucket>/a`) and only
//! the rare object that shares its name with a folder moves out of the way, inside that
//! folder, under a name no key can have ([`keys::is_reserved_segment`]):
//!
//! - the object `a` while `a` is also a folder: `a/.nebula-object` ([`OBJECT_IN_FOLDER`]);
//! - the bytes of the folder marker `a/`: `a/.nebula-folder` ([`MARKER_BYTES`]). An empty
//!   marker stays what it always was: the folder itself, its record in the folder's xattr.
//!
//! Which form an object has is read from the disk (is `a` a folder?), so no index can go stale
//! and `reindex` finds both. A write below `a` while `a` is a file turns the file into a folder
//! holding it ([`Store::file_to_folder`]), without a moment where `a` cannot be read and
//! without a state a crash could leave half made; a write of `a` while `a` is a folder goes to
//! the reserved name. Deleting `a/b` leaves `a/.nebula-object` where it is (the folder stays
//! while it holds it); deleting `a` then removes the folder once it is empty.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::fsutil::{self, FileType};
use super::keys::{self, MARKER_BYTES, OBJECT_IN_FOLDER, ObjectPath};
use super::{Store, StoreError, StoreResult};

/// Where one object's file is, or goes.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The folder holding it.
    pub dir: OwnedFd,
    /// Its name there: the key's last segment, or a reserved name inside the folder of that
    /// name.
    pub name: PathBuf,
    /// Its path below the bucket folder (pruning of emptied folders starts above it).
    pub rel: PathBuf,
}

/// The last segment of a validated key's path.
pub(crate) fn last_segment(path: &ObjectPath) -> &str {
    rel_name(&path.rel)
}

/// The last component of a validated key's relative path.
fn rel_name(rel: &Path) -> &str {
    rel.file_name()
        .and_then(|n| n.to_str())
        .expect("validated keys have a UTF-8 file name")
}

impl Store {
    /// Where the file of object `path` is now, or (with `create`) will go: its folders are
    /// made, and a file standing where one of them must be is turned into a folder holding it.
    /// A key whose own name is a folder lives under [`OBJECT_IN_FOLDER`] inside it; a folder
    /// marker's bytes under [`MARKER_BYTES`] inside its folder (made with `create`), whether
    /// or not it has any. Lookups follow no symlink; without `create`, a missing folder is
    /// [`StoreError::NoSuchKey`].
    pub(crate) fn locate(
        &self,
        bucket: &str,
        bfd: &OwnedFd,
        path: &ObjectPath,
        create: bool,
    ) -> StoreResult<Slot> {
        let name = last_segment(path);
        let parent = if create {
            self.make_parents(bucket, bfd, &path.rel)?
        } else {
            fsutil::open_parent_nofollow(bfd.as_fd(), &path.rel, false)
                .map_err(StoreError::from_lookup)?
        };
        let kind = fsutil::statx_at(parent.as_fd(), name)
            .ok()
            .map(|st| fsutil::statx_type(&st));
        if path.is_folder_marker && kind != Some(FileType::Directory) {
            if !create {
                return Err(StoreError::NoSuchKey);
            }
            self.make_folder(bucket, bfd, &parent, &path.rel)?;
        } else if kind != Some(FileType::Directory) {
            return Ok(Slot {
                dir: parent,
                name: PathBuf::from(name),
                rel: path.rel.clone(),
            });
        }
        let inner = if path.is_folder_marker {
            MARKER_BYTES
        } else {
            OBJECT_IN_FOLDER
        };
        let dir =
            fsutil::open_subdir_nofollow(parent.as_fd(), name).map_err(StoreError::from_lookup)?;
        Ok(Slot {
            dir: dir.into(),
            name: PathBuf::from(inner),
            rel: path.rel.join(inner),
        })
    }

    /// Opens the parent folder of `rel`, making the folders that are missing and turning a
    /// file that stands where one must be into a folder.
    fn make_parents(&self, bucket: &str, bfd: &OwnedFd, rel: &Path) -> StoreResult<OwnedFd> {
        // A file has nothing below it, so one conversion clears the way; further rounds only
        // follow races (a delete pruning a folder just made, a file written meanwhile).
        for _ in 0..64 {
            match fsutil::open_parent_nofollow(bfd.as_fd(), rel, true) {
                Ok(parent) => return Ok(parent),
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                    if let Some((parent, blocker)) = first_non_folder(bfd, rel)? {
                        self.file_to_folder(bucket, bfd, &parent, &blocker)?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Io(io::Error::other(
            "the folders of the key kept changing while it was written",
        )))
    }

    /// Makes `rel` (whose parent is `parent`) a folder: a new one, or the file there turned
    /// into one.
    fn make_folder(
        &self,
        bucket: &str,
        bfd: &OwnedFd,
        parent: &OwnedFd,
        rel: &Path,
    ) -> StoreResult<()> {
        let name = rel_name(rel);
        fsutil::mkdir_at(parent.as_fd(), Path::new(name))?;
        match fsutil::statx_type(&fsutil::statx_at(parent.as_fd(), name)?) {
            FileType::Directory => Ok(()),
            FileType::RegularFile => self.file_to_folder(bucket, bfd, parent, rel),
            _ => Err(not_a_folder()),
        }
    }

    /// Turns the regular file `rel` (in the folder `parent`) into a folder that holds it as
    /// [`OBJECT_IN_FOLDER`], so the key `rel` keeps its bytes and metadata (the xattr is on
    /// the inode) while keys below it can be written. The steps, each durable before the next:
    ///
    /// 1. make an empty folder in this process's temp folder (on the bucket's filesystem);
    /// 2. hard-link the file into it under the reserved name;
    /// 3. `renameat2(RENAME_EXCHANGE)` that folder with the file: `rel` is now the folder,
    ///    and the temp name the file's other link;
    /// 4. unlink the temp name.
    ///
    /// Readers find the key at every moment (the file, then the folder holding it). A crash
    /// leaves the old layout or the new one, plus a temp entry that the next start removes
    /// with the rest of a dead process's temp folder.
    pub(crate) fn file_to_folder(
        &self,
        bucket: &str,
        bfd: &OwnedFd,
        parent: &OwnedFd,
        rel: &Path,
    ) -> StoreResult<()> {
        let name = rel_name(rel);
        // A versioned write of this key moves its current file under the key's version lock:
        // take it, so the file is not moved aside or back meanwhile. Then take turns with other
        // conversions in this folder.
        let key = keys::key_from_components(rel.iter().filter_map(|c| c.to_str()));
        let _versions = match keys::parse_key(&key) {
            Ok(path) if self.versioning(bucket)? != super::versions::Versioning::Off => {
                self.lock_versions(bucket, &path, false)?
            }
            _ => None,
        };
        let _turn = fsutil::lock_dir(parent.as_fd())?;
        let ino = match fsutil::statx_at(parent.as_fd(), name) {
            Ok(st) if fsutil::statx_type(&st) == FileType::RegularFile => st.stx_ino,
            // Converted, or removed, while this waited for its turn.
            Ok(st) if fsutil::statx_type(&st) == FileType::Directory => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Ok(_) => return Err(not_a_folder()),
            Err(e) => return Err(e.into()),
        };
        let stage = self.temp_dir_for(bfd)?;
        let temp = PathBuf::from(format!("{}.dir", uuid::Uuid::new_v4().simple()));
        fsutil::mkdir_at(stage.as_fd(), &temp)?;
        let folder =
            fsutil::open_subdir_nofollow(stage.as_fd(), temp.to_str().unwrap_or_default())?;
        let inner = Path::new(OBJECT_IN_FOLDER);
        // Undoes the staging; the file deleted meanwhile is no error: there is nothing to
        // keep, and the caller makes a plain folder.
        let undo = |e: io::Error| -> StoreResult<()> {
            let _ = fsutil::unlink_at(folder.as_fd(), inner);
            let _ = fsutil::rmdir_at(stage.as_fd(), &temp);
            if e.kind() == io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e.into())
            }
        };
        if let Err(e) = fsutil::link_at(parent.as_fd(), Path::new(name), folder.as_fd(), inner) {
            return undo(e);
        }
        fsutil::fsync_dir(folder.as_fd())?;
        if let Err(e) = fsutil::exchange_at(stage.as_fd(), &temp, parent.as_fd(), Path::new(name)) {
            return undo(e);
        }
        fsutil::fsync_dir(parent.as_fd())?;
        let Some(temp_name) = temp.to_str() else {
            return Ok(());
        };
        match fsutil::statx_at(stage.as_fd(), temp_name) {
            // The usual case: the temp name is the file's other link.
            Ok(st) if fsutil::statx_type(&st) == FileType::RegularFile && st.stx_ino == ino => {
                fsutil::unlink_at(stage.as_fd(), &temp)?;
            }
            // A PUT of the key replaced the file between the link and the exchange: its
            // bytes are newer than the link's, and the key's now.
            Ok(st) if fsutil::statx_type(&st) == FileType::RegularFile => {
                fsutil::rename_at(stage.as_fd(), &temp, folder.as_fd(), inner)?;
                fsutil::fsync_dir(folder.as_fd())?;
            }
            _ => tracing::warn!(
                bucket,
                key,
                "a file became a folder while another gateway did the same; the temp entry is left for the next start"
            ),
        }
        let _ = fsutil::fsync_dir(stage.as_fd());
        Ok(())
    }
}

/// Walks down `rel`'s parent folders to the first that is a regular file: its folder and its
/// path. `None` when a folder is simply missing (the caller makes it).
fn first_non_folder(bfd: &OwnedFd, rel: &Path) -> StoreResult<Option<(OwnedFd, PathBuf)>> {
    let mut cur = bfd.try_clone()?;
    let mut at = PathBuf::new();
    let Some(parents) = rel.parent() else {
        return Ok(None);
    };
    for comp in parents.iter() {
        let name = comp.to_str().unwrap_or_default();
        at.push(name);
        match fsutil::statx_at(cur.as_fd(), name) {
            Ok(st) => match fsutil::statx_type(&st) {
                FileType::Directory => match fsutil::open_subdir_nofollow(cur.as_fd(), name) {
                    Ok(d) => cur = d.into(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e.into()),
                },
                FileType::RegularFile => return Ok(Some((cur, at))),
                _ => return Err(not_a_folder()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// A symlink or special file stands where the key needs a folder: the gateway never writes
/// through one.
fn not_a_folder() -> StoreError {
    StoreError::InvalidKey(
        "a folder of the key is a symbolic link or special file in the bucket folder".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::meta::{MetaStore, ObjectMeta};
    use crate::store::versions::{Found, Versioning};
    use crate::store::walk::Walker;
    use crate::store::{Commit, RESERVED_DIR};
    use std::io::Read;

    fn put(s: &Store, key: &str, body: &[u8]) -> ObjectMeta {
        let meta = ObjectMeta {
            // Any ETag will do: the store keeps what it is given.
            etag: format!(
                "{:032x}",
                body.iter().map(|b| u128::from(*b)).sum::<u128>() + 1
            ),
            content_type: Some("text/x-test".into()),
            ..Default::default()
        };
        s.commit_bytes(
            body,
            "bkt",
            &keys::parse_key(key).unwrap(),
            meta,
            Commit::Replace,
        )
        .unwrap()
    }

    fn get(s: &Store, key: &str) -> Option<(Vec<u8>, ObjectMeta)> {
        match s.open_object("bkt", &keys::parse_key(key).unwrap()) {
            Ok(mut h) => {
                let mut body = Vec::new();
                if h.size > 0 {
                    h.file.read_to_end(&mut body).unwrap();
                }
                assert_eq!(body.len() as u64, h.size);
                Some((body, h.meta))
            }
            Err(StoreError::NoSuchKey) => None,
            Err(e) => panic!("GET {key}: {e}"),
        }
    }

    fn delete(s: &Store, key: &str) {
        s.delete_object("bkt", &keys::parse_key(key).unwrap())
            .unwrap();
    }

    /// Every key a listing shows, with the size it reports.
    fn listed(s: &Store, prefix: &str, after: Option<&str>) -> Vec<(String, u64)> {
        let mut w = Walker::new(s, "bkt", prefix, after).unwrap();
        let mut out = Vec::new();
        while let Some(e) = w.next_entry().unwrap() {
            let info = w.info(&e).unwrap().unwrap();
            out.push((e.key, info.size));
        }
        out
    }

    fn keys_of(v: &[(String, u64)]) -> Vec<&str> {
        v.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn open(dir: &Path) -> Store {
        let s = Store::open(dir).unwrap();
        s.create_bucket("bkt").unwrap();
        s
    }

    /// What is left in the temp folders of the reserved folder (lock files aside).
    fn temp_entries(root: &Path) -> usize {
        std::fs::read_dir(root.join(RESERVED_DIR).join("tmp"))
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .filter(|f| f.file_name() != crate::store::OWNER_LOCK)
            .count()
    }

    #[test]
    fn a_key_and_a_folder_of_its_name_coexist_in_either_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let bkt = dir.path().join("bkt");

        // The file first: a write below it turns it into a folder holding it.
        let a = put(&s, "a", b"file a");
        assert!(bkt.join("a").is_file());
        put(&s, "a!x", b"bang");
        put(&s, "a/b", b"below a");
        assert!(bkt.join("a").is_dir());
        assert_eq!(
            std::fs::read(bkt.join("a/.nebula-object")).unwrap(),
            b"file a"
        );
        assert_eq!(std::fs::read(bkt.join("a/b")).unwrap(), b"below a");
        let (body, meta) = get(&s, "a").unwrap();
        assert_eq!(body, b"file a");
        assert_eq!(
            (meta.etag.as_str(), meta.content_type.as_deref()),
            (a.etag.as_str(), Some("text/x-test")),
            "the record came along with the inode"
        );
        assert_eq!(get(&s, "a/b").unwrap().0, b"below a");
        // S3's byte order: `a` < `a!x` < `a/b`, whatever the prefix or start.
        assert_eq!(
            listed(&s, "", None),
            [("a".into(), 6), ("a!x".into(), 4), ("a/b".into(), 7)]
        );
        assert_eq!(keys_of(&listed(&s, "a", Some("a"))), ["a!x", "a/b"]);
        assert_eq!(keys_of(&listed(&s, "a/", None)), ["a/b"]);
        assert_eq!(keys_of(&listed(&s, "a/.nebula", None)), Vec::<&str>::new());
        assert!(s.object_exists("bkt", &keys::parse_key("a").unwrap()));

        // An overwrite of `a` goes to the reserved name; deeper keys work too.
        put(&s, "a", b"file a, again");
        put(&s, "a/b/c", b"deeper");
        assert_eq!(get(&s, "a").unwrap().0, b"file a, again");
        assert_eq!(get(&s, "a/b").unwrap().0, b"below a");
        assert_eq!(get(&s, "a/b/c").unwrap().0, b"deeper");
        assert_eq!(keys_of(&listed(&s, "", None)), ["a", "a!x", "a/b", "a/b/c"]);

        // Deleting one leaves the other.
        delete(&s, "a/b/c");
        delete(&s, "a/b");
        assert_eq!(get(&s, "a").unwrap().0, b"file a, again");
        assert_eq!(keys_of(&listed(&s, "", None)), ["a", "a!x"]);
        delete(&s, "a");
        assert!(get(&s, "a").is_none());
        assert!(!bkt.join("a").exists(), "the emptied folder is pruned");

        // The folder first: the key goes to the reserved name at once.
        put(&s, "c/d", b"d");
        put(&s, "c", b"c");
        assert_eq!(std::fs::read(bkt.join("c/.nebula-object")).unwrap(), b"c");
        assert_eq!(keys_of(&listed(&s, "", None)), ["a!x", "c", "c/d"]);
        delete(&s, "c");
        assert_eq!(keys_of(&listed(&s, "", None)), ["a!x", "c/d"]);
        assert_eq!(get(&s, "c/d").unwrap().0, b"d");

        // Create-only writes see the key in either form.
        let cpath = keys::parse_key("c").unwrap();
        let tmp = s.create_temp("bkt").unwrap();
        s.commit(
            tmp,
            "bkt",
            &cpath,
            ObjectMeta::default(),
            Commit::CreateOnly,
        )
        .unwrap();
        let tmp = s.create_temp("bkt").unwrap();
        assert!(matches!(
            s.commit(
                tmp,
                "bkt",
                &cpath,
                ObjectMeta::default(),
                Commit::CreateOnly
            ),
            Err(StoreError::Exists)
        ));
        assert_eq!(temp_entries(dir.path()), 0);
    }

    #[test]
    fn a_folder_marker_holds_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let bkt = dir.path().join("bkt");
        put(&s, "m/", b"marker bytes");
        assert_eq!(
            std::fs::read(bkt.join("m/.nebula-folder")).unwrap(),
            b"marker bytes"
        );
        put(&s, "m/in", b"inside");
        assert_eq!(get(&s, "m/").unwrap().0, b"marker bytes");
        assert_eq!(
            listed(&s, "", None),
            [("m/".into(), 12), ("m/in".into(), 6)]
        );
        // Emptied: the folder itself is the marker again, and one record remains.
        put(&s, "m/", b"");
        assert!(!bkt.join("m/.nebula-folder").exists());
        let (body, meta) = get(&s, "m/").unwrap();
        assert!(body.is_empty() && meta.etag == crate::store::EMPTY_MD5);
        put(&s, "m/", b"bytes again");
        assert_eq!(listed(&s, "m/", None)[0], ("m/".into(), 11));
        delete(&s, "m/");
        assert!(get(&s, "m/").is_none());
        assert_eq!(keys_of(&listed(&s, "", None)), ["m/in"]);

        // A marker over a file, and the file's key after it.
        put(&s, "f", b"file f");
        put(&s, "f/", b"marker f");
        assert_eq!(get(&s, "f").unwrap().0, b"file f");
        assert_eq!(get(&s, "f/").unwrap().0, b"marker f");
        assert_eq!(keys_of(&listed(&s, "f", None)), ["f", "f/"]);
        delete(&s, "f/");
        delete(&s, "f");
        assert!(!bkt.join("f").exists());
    }

    #[test]
    fn a_crash_at_any_step_of_the_conversion_loses_nothing() {
        // The steps of `file_to_folder`, done by hand up to each point, then a restart.
        for steps in 0..=4 {
            let dir = tempfile::tempdir().unwrap();
            let s = open(dir.path());
            let a = put(&s, "a", b"precious");
            let bkt = s.bucket_fd("bkt").unwrap();
            let stage = s.temp_dir_for(&bkt).unwrap();
            let temp = Path::new("crash.dir");
            if steps >= 1 {
                fsutil::mkdir_at(stage.as_fd(), temp).unwrap();
            }
            let folder = (steps >= 1)
                .then(|| fsutil::open_subdir_nofollow(stage.as_fd(), "crash.dir").unwrap());
            if let Some(folder) = folder.as_ref().filter(|_| steps >= 2) {
                fsutil::link_at(
                    bkt.as_fd(),
                    Path::new("a"),
                    folder.as_fd(),
                    Path::new(OBJECT_IN_FOLDER),
                )
                .unwrap();
            }
            if steps >= 3 {
                fsutil::exchange_at(stage.as_fd(), temp, bkt.as_fd(), Path::new("a")).unwrap();
            }
            if steps >= 4 {
                fsutil::unlink_at(stage.as_fd(), temp).unwrap();
            }
            // Between steps 1 and 3 the file is still `a`; from step 3 the folder holds it.
            assert_eq!(
                get(&s, "a").unwrap().0,
                b"precious",
                "before the crash, {steps} steps"
            );
            drop((folder, stage, bkt, s));

            let s = Store::open(dir.path()).unwrap();
            assert_eq!(
                temp_entries(dir.path()),
                0,
                "{steps} steps: temp entries removed"
            );
            let (body, meta) = get(&s, "a").unwrap();
            assert_eq!(
                (body.as_slice(), meta.etag),
                (&b"precious"[..], a.etag.clone())
            );
            assert_eq!(keys_of(&listed(&s, "", None)), ["a"], "{steps} steps");
            put(&s, "a/b", b"b");
            assert_eq!(get(&s, "a").unwrap().0, b"precious");
            assert_eq!(
                keys_of(&listed(&s, "", None)),
                ["a", "a/b"],
                "{steps} steps"
            );
        }
    }

    #[test]
    fn versions_follow_a_key_into_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        if !matches!(s.meta_store(), MetaStore::Xattr) {
            eprintln!("skipped: no user xattrs on the temp folder");
            return;
        }
        s.set_versioning("bkt", Versioning::Enabled).unwrap();
        let v1 = put(&s, "a", b"one").version_id.unwrap();
        let v2 = put(&s, "a", b"two").version_id.unwrap();
        put(&s, "a/b", b"b");
        let path = keys::parse_key("a").unwrap();
        let versions = |s: &Store| {
            let mut w = s.walk_versions("bkt", "", None).unwrap();
            let mut out = Vec::new();
            while let Some(v) = w.next_version().unwrap() {
                out.push((v.key, v.version_id, v.is_latest));
            }
            out
        };
        let all = versions(&s);
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[..2],
            [
                ("a".into(), v2.clone(), true),
                ("a".into(), v1.clone(), false)
            ]
        );
        assert_eq!(all[2].0, "a/b");
        // A delete marker moves the current file aside from the reserved name...
        let m = s.delete_current("bkt", &path).unwrap();
        assert!(m.delete_marker);
        assert!(matches!(
            s.open_version("bkt", &path, None).unwrap(),
            Found::DeleteMarker { .. }
        ));
        assert_eq!(get(&s, "a/b").unwrap().0, b"b");
        // ...and removing the marker puts it back there.
        s.delete_version("bkt", &path, &m.version_id.unwrap(), false)
            .unwrap();
        assert_eq!(get(&s, "a").unwrap().0, b"two");
        assert!(dir.path().join("bkt/a/.nebula-object").is_file());
        // A restart repairs nothing: it is all in order.
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.recover_versions().unwrap(), 0);
        assert_eq!(versions(&s).len(), 3);
        match s.open_version("bkt", &path, Some(&v1)).unwrap() {
            Found::Object(mut h) => {
                let mut body = String::new();
                h.file.read_to_string(&mut body).unwrap();
                assert_eq!(body, "one");
            }
            Found::DeleteMarker { .. } => panic!("v1 is an object"),
        }
    }
}
