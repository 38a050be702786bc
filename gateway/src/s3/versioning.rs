//! Versioning: PutBucketVersioning, GetBucketVersioning and ListObjectVersions. How versions
//! are kept on disk is the store's (`store/versions.rs`); reads, writes and deletes of one
//! version are in `get.rs`, `put.rs` and `delete.rs`.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::list::{encode, parse_encoding, parse_max_keys};
use super::{Gateway, RequestError, RequestResult, blocking, owner, timestamp};
use crate::store::settings::Setting;
use crate::store::versions::{VersionInfo, Versioning};

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

/// One page of ListObjectVersions, before S3 encoding.
#[derive(Debug, Default)]
struct VersionPage {
    versions: Vec<VersionInfo>,
    prefixes: Vec<String>,
    truncated: bool,
    /// Where the next page starts: key (or common prefix) and version id.
    next: Option<(String, Option<String>)>,
}

/// Pages the versions (in key order, newest first per key) after the markers.
fn page_versions(
    all: Vec<VersionInfo>,
    prefix: &str,
    delimiter: &str,
    key_marker: Option<&str>,
    version_marker: Option<&str>,
    max_keys: usize,
) -> VersionPage {
    let common_prefix = |key: &str| -> Option<String> {
        if delimiter.is_empty() {
            return None;
        }
        let rest = key.strip_prefix(prefix)?;
        rest.find(delimiter)
            .map(|i| key[..prefix.len() + i + delimiter.len()].to_owned())
    };
    let mut page = VersionPage::default();
    // With a version marker, the marker's key resumes after that version.
    let mut skipping_key = version_marker.and(key_marker);
    let mut count = 0;
    for v in all {
        if !v.key.starts_with(prefix) {
            continue;
        }
        if let Some(marker) = key_marker {
            if v.key.as_str() < marker {
                continue;
            }
            if v.key == marker {
                match (skipping_key, version_marker) {
                    (Some(_), Some(vm)) => {
                        if v.version_id == vm {
                            skipping_key = None;
                        }
                        continue;
                    }
                    (None, Some(_)) => {}
                    _ => continue,
                }
            }
        }
        if let Some(cp) = common_prefix(&v.key) {
            if key_marker.is_some_and(|m| cp.as_str() <= m) || page.prefixes.last() == Some(&cp) {
                continue;
            }
            if count == max_keys {
                page.truncated = true;
                break;
            }
            page.next = Some((cp.clone(), None));
            page.prefixes.push(cp);
            count += 1;
            continue;
        }
        if count == max_keys {
            page.truncated = true;
            break;
        }
        page.next = Some((v.key.clone(), Some(v.version_id.clone())));
        page.versions.push(v);
        count += 1;
    }
    page
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
    let all = blocking(move || store.list_versions(&bucket, &p)).await?;
    let page = page_versions(
        all,
        &prefix,
        &delimiter,
        key_marker.as_deref(),
        version_marker.as_deref(),
        max_keys,
    );
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    for v in page.versions {
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
    use crate::store::meta::ObjectMeta;

    fn v(key: &str, id: &str) -> VersionInfo {
        VersionInfo {
            key: key.into(),
            version_id: id.into(),
            is_latest: false,
            meta: ObjectMeta::default(),
            size: 0,
            modified: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    fn all() -> Vec<VersionInfo> {
        vec![
            v("a", "3"),
            v("a", "2"),
            v("a", "1"),
            v("b/x", "1"),
            v("b/y", "1"),
            v("c", "2"),
            v("c", "1"),
        ]
    }

    fn ids(p: &VersionPage) -> Vec<String> {
        p.versions
            .iter()
            .map(|v| format!("{}@{}", v.key, v.version_id))
            .collect()
    }

    #[test]
    fn pages_resume_inside_a_key_and_roll_up_prefixes() {
        let mut seen = Vec::new();
        let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
        loop {
            let p = page_versions(all(), "", "/", km.as_deref(), vm.as_deref(), 2);
            seen.extend(ids(&p));
            seen.extend(p.prefixes.iter().cloned());
            if !p.truncated {
                break;
            }
            let (k, v) = p.next.unwrap();
            km = Some(k);
            vm = v;
        }
        assert_eq!(seen, ["a@3", "a@2", "a@1", "b/", "c@2", "c@1"]);
        let p = page_versions(all(), "b/", "", None, None, 1000);
        assert_eq!(ids(&p), ["b/x@1", "b/y@1"]);
        let p = page_versions(all(), "", "", Some("b/x"), None, 1000);
        assert_eq!(ids(&p), ["b/y@1", "c@2", "c@1"]);
        let p = page_versions(all(), "", "", Some("a"), Some("2"), 1);
        assert_eq!(ids(&p), ["a@1"]);
        assert!(p.truncated);
    }
}
