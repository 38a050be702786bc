//! Object keys to relative filesystem paths, and the rules that keep a key inside its bucket.

use std::path::PathBuf;

use crate::store::StoreError;

/// S3's limit on key length, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Names of temp folders the gateway creates inside bucket folders that live on another
/// filesystem than the data folder. Keys may never name them and listings never show them.
pub const BUCKET_TMP_PREFIX: &str = ".nebula-tmp";

/// The name, inside the folder `a/`, of the object `a` while `a` is also a folder (keys `a`
/// and `a/b` both exist). See `store::layout`.
pub const OBJECT_IN_FOLDER: &str = ".nebula-object";

/// The name, inside the folder `a/`, of the bytes of the folder marker `a/` when it has any.
/// See `store::layout`.
pub const MARKER_BYTES: &str = ".nebula-folder";

/// True for a name no key segment may have: the gateway's temp folders and the reserved names
/// of objects that share their name with a folder. Listings never show them as keys.
pub fn is_reserved_segment(name: &str) -> bool {
    name.starts_with(BUCKET_TMP_PREFIX) || name == OBJECT_IN_FOLDER || name == MARKER_BYTES
}

/// A validated object key and where it lives below its bucket folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    /// The key as the client sent it.
    pub key: String,
    /// Path relative to the bucket folder (no trailing slash, never empty).
    pub rel: PathBuf,
    /// True for keys ending in `/` (folder markers): they map to a folder, not a file.
    pub is_folder_marker: bool,
}

/// Checks a key against the rules that keep it inside its bucket and maps it to a path.
///
/// Rejected: empty keys, keys over 1024 bytes, NUL, a leading `/`, `.` or `..` segments, empty
/// segments (`a//b`) and the gateway's reserved names ([`is_reserved_segment`]). A single
/// trailing `/` is a folder marker.
pub fn parse_key(key: &str) -> Result<ObjectPath, StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("the key is empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyTooLong);
    }
    if key.contains('\0') {
        return Err(StoreError::InvalidKey(
            "the key contains a NUL character".into(),
        ));
    }
    if key.starts_with('/') {
        return Err(StoreError::InvalidKey("the key starts with '/'".into()));
    }
    let (body, is_folder_marker) = match key.strip_suffix('/') {
        Some(body) => (body, true),
        None => (key, false),
    };
    if body.is_empty() {
        return Err(StoreError::InvalidKey(
            "the key has no name before '/'".into(),
        ));
    }
    let mut rel = PathBuf::new();
    for segment in body.split('/') {
        match segment {
            "" => {
                return Err(StoreError::InvalidKey(
                    "the key has an empty path segment ('//')".into(),
                ));
            }
            "." | ".." => {
                return Err(StoreError::InvalidKey(format!(
                    "the key has a '{segment}' path segment, which could leave the bucket"
                )));
            }
            s if is_reserved_segment(s) => {
                return Err(StoreError::InvalidKey(format!(
                    "the path segment '{s}' is reserved by the gateway"
                )));
            }
            s if s.len() > 255 => {
                return Err(StoreError::InvalidKey(
                    "a path segment of the key is longer than the filesystem's 255-byte name limit"
                        .into(),
                ));
            }
            s => rel.push(s),
        }
    }
    Ok(ObjectPath {
        key: key.to_owned(),
        rel,
        is_folder_marker,
    })
}

/// Joins a relative path (as walked on disk) back into an S3 key.
pub fn key_from_components<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut key = String::new();
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        key.push_str(p);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_map_to_relative_paths() {
        let p = parse_key("videos/2024/cat.mp4").unwrap();
        assert_eq!(p.rel, PathBuf::from("videos/2024/cat.mp4"));
        assert!(!p.is_folder_marker);
    }

    #[test]
    fn trailing_slash_is_a_folder_marker() {
        let p = parse_key("photos/").unwrap();
        assert_eq!(p.rel, PathBuf::from("photos"));
        assert!(p.is_folder_marker);
    }

    #[test]
    fn traversal_and_odd_keys_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a/./b",
            "a//b",
            "..",
            ".",
            "a\0b",
            "/",
            "//",
            "a/..",
            ".nebula-tmp/x",
            "a/.nebula-tmp-1",
            ".nebula-object",
            "a/.nebula-object",
            "a/.nebula-object/b",
            ".nebula-folder",
            "a/.nebula-folder/",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(matches!(
            parse_key(&"k".repeat(1025)),
            Err(StoreError::KeyTooLong)
        ));
        assert!(
            parse_key(&"k".repeat(1024)).is_err(),
            "a 1024-byte single segment exceeds NAME_MAX"
        );
        let long_ok = [
            "k".repeat(200),
            "k".repeat(200),
            "k".repeat(200),
            "k".repeat(200),
            "k".repeat(200),
        ]
        .join("/");
        assert!(parse_key(&long_ok).is_ok());
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert!(parse_key("a..b/.hidden/..c").is_ok());
        // Only the exact reserved names are refused.
        assert!(parse_key("a/.nebula-objects").is_ok());
        assert!(parse_key("x.nebula-folder").is_ok());
    }
}
