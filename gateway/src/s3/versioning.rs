//! Versioning: PutBucketVersioning, GetBucketVersioning and ListObjectVersions. How versions
//! are kept on disk is the store's (`store/versions.rs`); reads, writes and deletes of one
//! version are in `get.rs`, `put.rs` and `delete.rs`.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::list::{Entries, encode, page, parse_encoding, parse_max_keys};
use super::{Gateway, RequestError, RequestResult, blocking, owner, timestamp};
use crate::store::StoreResult;
use crate::store::settings::Setting;
use crate::store::versions::{VersionInfo, VersionWalk, Versioning};

/// PutBucketVersioning: Enabled or Suspended (a bucket never goes back to unversioned).
pub(crate) async fn put_bucket_versioning(
    gw: &Gateway,
    req: S3Request<PutBucketVersioningInput>,
) -> RequestResult<S3Response<PutBucketVersioningOutput>> {
    let input = req.input;
    let state = match input
        .versioning_configuration
        .status
        .as_ref()
        .map(BucketVersioningStatus::as_str)
    {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        _ => {
            return Err(RequestError::MalformedXml(
                "The XML you provided was not well-formed or did not validate against our published schema: Status must be Enabled or Suspended",
            ));
        }
    };
    let store = gw.store.clone();
    let bucket = input.bucket;
    blocking(move || -> RequestResult<()> {
        store.bucket_fd(&bucket)?;
        if state == Versioning::Suspended && store.settings().get(&bucket, Setting::ObjectLock)?.is_some() {
            return Err(RequestError::InvalidBucketState(
                "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed.",
            ));
        }
        Ok(store.set_versioning(&bucket, state)?)
    })
    .await?;
    Ok(S3Response::new(PutBucketVersioningOutput::default()))
}

/// GetBucketVersioning: no Status until versioning was first enabled, as S3 answers.
pub(crate) async fn get_bucket_versioning(
    gw: &Gateway,
    req: S3Request<GetBucketVersioningInput>,
) -> RequestResult<S3Response<GetBucketVersioningOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    let state = blocking(move || {
        store.bucket_fd(&bucket)?;
        store.versioning(&bucket)
    })
    .await?;
    Ok(S3Response::new(GetBucketVersioningOutput {
        status: state
            .as_str()
            .map(|s| BucketVersioningStatus::from(s.to_owned())),
        mfa_delete: None,
    }))
}

/// The versions after the markers: the walk starts at the key marker, whose versions are
/// passed over up to and including the version-id marker (all of them without one).
struct Versions<'a> {
    walk: VersionWalk<'a>,
    key_marker: Option<String>,
    version_marker: Option<String>,
    /// True once the version marker was passed.
    seen: bool,
}

impl Entries for Versions<'_> {
    type Item = VersionInfo;

    fn next_item(&mut self) -> StoreResult<Option<VersionInfo>> {
        while let Some(v) = self.walk.next_version()? {
            if self.key_marker.as_ref() != Some(&v.key) {
                return Ok(Some(v));
            }
            match &self.version_marker {
                Some(_) if self.seen => return Ok(Some(v)),
                Some(vm) => self.seen = *vm == v.version_id,
                None => {}
            }
        }
        Ok(None)
    }

    fn key(item: &VersionInfo) -> &str {
        &item.key
    }

    fn id(item: &VersionInfo) -> Option<&str> {
        Some(&item.version_id)
    }

    fn skip_prefix(&mut self, cp: &str) {
        self.walk.skip_prefix(cp);
    }
}
/// ListObjectVersions: every version and delete marker, newest first within a key.
pub(crate) async fn list_object_versions(
    gw: &Gateway,
    req: S3Request<ListObjectVersionsInput>,
) -> RequestResult<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let url = parse_encoding(input.encoding_type.as_ref())?;
    let max_keys = parse_max_keys(input.max_keys)?;
    let key_marker = input.key_marker.clone().filter(|m| !m.is_empty());
    let version_marker = input.version_id_marker.clone().filter(|m| !m.is_empty());
    if version_marker.is_some() && key_marker.is_none() {
        return Err(RequestError::InvalidArgument(
            "A version-id marker cannot be specified without a key marker.".into(),
        ));
    }
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().unwrap_or_default();
    let store = gw.store.clone();
    let (bucket, p) = (input.bucket.clone(), prefix.clone());
    let page = blocking(move || {
        let walk = store.walk_versions(&bucket, &p, key_marker.as_deref())?;
        let marker = key_marker.clone();
        let mut src = Versions {
            walk,
            key_marker,
            version_marker,
            seen: false,
        };
        page(&mut src, &p, &delimiter, marker.as_deref(), max_keys)
    })
    .await?;
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    for v in page.items {
        if v.meta.delete_marker {
            markers.push(DeleteMarkerEntry {
                is_latest: Some(v.is_latest),
                key: Some(encode(&v.key, url)),
                last_modified: Some(timestamp(v.modified)),
                owner: Some(owner()),
                version_id: Some(v.version_id),
            });
        } else {
            versions.push(ObjectVersion {
                e_tag: Some(ETag::Strong(v.meta.etag.clone())),
                is_latest: Some(v.is_latest),
                key: Some(encode(&v.key, url)),
                last_modified: Some(timestamp(v.modified)),
                owner: Some(owner()),
                size: Some(i64::try_from(v.size).unwrap_or(i64::MAX)),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                version_id: Some(v.version_id),
                ..Default::default()
            });
        }
    }
    let common_prefixes: Vec<CommonPrefix> = page
        .prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(encode(p, url)),
        })
        .collect();
    let (next_key, next_version) = match (page.truncated, page.next) {
        (true, Some((k, v))) => (Some(encode(&k, url)), v),
        _ => (None, None),
    };
    Ok(S3Response::new(ListObjectVersionsOutput {
        common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
        delete_markers: (!markers.is_empty()).then_some(markers),
        versions: (!versions.is_empty()).then_some(versions),
        delimiter: input
            .delimiter
            .filter(|d| !d.is_empty())
            .map(|d| encode(&d, url)),
        encoding_type: input.encoding_type,
        is_truncated: Some(page.truncated),
        key_marker: Some(
            input
                .key_marker
                .map(|k| encode(&k, url))
                .unwrap_or_default(),
        ),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
        max_keys: Some(max_keys as i32),
        name: Some(input.bucket),
        next_key_marker: next_key,
        next_version_id_marker: next_version,
        prefix: Some(encode(&prefix, url)),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::keys::parse_key;
    use crate::store::meta::ObjectMeta;

    /// Pages through every version of the test bucket, `max` at a time.
    fn pages(s: &Store, prefix: &str, delimiter: &str, max: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
        loop {
            let mut src = Versions {
                walk: s.walk_versions("bkt", prefix, km.as_deref()).unwrap(),
                key_marker: km.clone(),
                version_marker: vm.clone(),
                seen: false,
            };
            let p = page(&mut src, prefix, delimiter, km.as_deref(), max).unwrap();
            seen.extend(
                p.items
                    .iter()
                    .map(|v| format!("{}@{}", v.key, v.version_id)),
            );
            seen.extend(p.prefixes.iter().cloned());
            if !p.truncated {
                return seen;
            }
            (km, vm) = p.next.map(|(k, v)| (Some(k), v)).unwrap();
        }
    }

    #[test]
    fn pages_resume_inside_a_key_and_roll_up_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        if !matches!(s.meta_store(), crate::store::meta::MetaStore::Xattr) {
            eprintln!("skipped: no user xattrs on the temp folder");
            return;
        }
        s.create_bucket("bkt").unwrap();
        s.set_versioning("bkt", Versioning::Enabled).unwrap();
        let mut ids = std::collections::BTreeMap::<&str, Vec<String>>::new();
        // `a@v/x` shares its folder with the versions of `a`; `c` is deleted (a marker on top).
        for key in ["a", "a", "a", "a@v/x", "b/x", "b/y", "c", "c"] {
            let path = parse_key(key).unwrap();
            let meta = s
                .commit_bytes(
                    key.as_bytes(),
                    "bkt",
                    &path,
                    ObjectMeta::default(),
                    crate::store::Commit::Replace,
                )
                .unwrap();
            ids.entry(key)
                .or_default()
                .insert(0, meta.version_id.unwrap());
        }
        let marker = s.delete_current("bkt", &parse_key("c").unwrap()).unwrap();
        ids.get_mut("c")
            .unwrap()
            .insert(0, marker.version_id.unwrap());
        let all: Vec<String> = ids
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}@{v}")))
            .collect();
        for max in [1, 2, 3, 1000] {
            assert_eq!(pages(&s, "", "", max), all, "max {max}");
        }
        let rolled: Vec<String> = all
            .iter()
            .filter(|v| !v.starts_with("b/") && !v.starts_with("a@v/"))
            .cloned()
            .chain(["a@v/".to_owned(), "b/".to_owned()])
            .collect();
        for max in [1, 2, 1000] {
            let mut got = pages(&s, "", "/", max);
            got.sort();
            let mut want = rolled.clone();
            want.sort();
            assert_eq!(got, want, "max {max}");
        }
        assert_eq!(
            pages(&s, "b/", "", 1000),
            [
                format!("b/x@{}", ids["b/x"][0]),
                format!("b/y@{}", ids["b/y"][0])
            ]
        );
        assert_eq!(
            pages(&s, "a@", "", 1),
            [format!("a@v/x@{}", ids["a@v/x"][0])]
        );
    }
}
