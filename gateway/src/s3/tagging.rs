//! Tagging: Put/Get/DeleteObjectTagging, Put/Get/DeleteBucketTagging, and the `x-amz-tagging`
//! header writes carry (issue 18).
//!
//! An object's tags are part of its metadata ([`ObjectMeta::tags`]), so they are written with
//! the bytes, copied with them, and survive where metadata does; PutObjectTagging rewrites
//! only the metadata, of the current version or of the one named by `versionId` (a kept
//! version's record is in its file in the versions folder, rewritten under the key's version
//! lock). A bucket's tags are its [`Setting::Tagging`] document (JSON pairs).
//! S3's limits give S3's errors: 10 tags per object, 50 per bucket, keys of 1 to 128 and
//! values of up to 256 characters, no key twice, no `aws:` prefix.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::{Gateway, RequestError, RequestResult, blocking, object_path};
use crate::store::keys::ObjectPath;
use crate::store::meta::ObjectMeta;
use crate::store::settings::Setting;
use crate::store::versions::Found;
use crate::store::{Store, StoreError};

/// Tags as stored: key and value pairs in the order sent.
pub(crate) type Tags = Vec<(String, String)>;

const MAX_OBJECT_TAGS: usize = 10;
const MAX_BUCKET_TAGS: usize = 50;
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 256;

/// Checks a tag set against S3's limits (`max` tags).
fn check(tags: &Tags, max: usize, what: &str) -> RequestResult<()> {
    if tags.len() > max {
        return Err(RequestError::BadRequest(format!(
            "{what} tags cannot be greater than {max}"
        )));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        if k.is_empty() || k.chars().count() > MAX_KEY_CHARS {
            return Err(RequestError::InvalidTag(format!(
                "The TagKey you have provided is invalid: it must be 1 to {MAX_KEY_CHARS} characters"
            )));
        }
        if v.chars().count() > MAX_VALUE_CHARS {
            return Err(RequestError::InvalidTag(format!(
                "The TagValue you have provided is too long, max {MAX_VALUE_CHARS}"
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(RequestError::InvalidTag(
                "Your TagKey cannot be prefixed with aws:".into(),
            ));
        }
        if tags[..i].iter().any(|(other, _)| other == k) {
            return Err(RequestError::InvalidTag(
                "Cannot provide multiple Tags with the same key".into(),
            ));
        }
    }
    Ok(())
}

/// The tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded), checked.
pub(crate) fn from_header(header: Option<&str>) -> RequestResult<Tags> {
    let Some(header) = header.filter(|h| !h.is_empty()) else {
        return Ok(Tags::new());
    };
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| RequestError::InvalidTag("the tagging header is not valid UTF-8".into()))
    };
    let tags = header
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect::<RequestResult<Tags>>()?;
    check(&tags, MAX_OBJECT_TAGS, "Object")?;
    Ok(tags)
}

fn from_tag_set(set: TagSet, max: usize, what: &str) -> RequestResult<Tags> {
    let tags = set
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect();
    check(&tags, max, what)?;
    Ok(tags)
}

fn to_tag_set(tags: &Tags) -> TagSet {
    tags.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// The record of the version asked for (the current one without an id), and the
/// `x-amz-version-id` to answer with. Blocking.
fn tagged_version(
    store: &Store,
    bucket: &str,
    path: &ObjectPath,
    version: Option<&str>,
) -> RequestResult<(ObjectMeta, Option<String>)> {
    let meta = match store.open_version(bucket, path, version)? {
        Found::Object(h) => h.meta,
        Found::DeleteMarker { .. } => return Err(StoreError::IsDeleteMarker.into()),
    };
    let id = store.version_header(bucket, &meta)?;
    Ok((meta, id))
}

/// Rewrites the tags of one version, current or kept, under the key's version lock, and
/// returns its `x-amz-version-id`. Blocking.
fn retag(
    store: &Store,
    bucket: &str,
    path: &ObjectPath,
    version: Option<&str>,
    tags: Tags,
) -> RequestResult<Option<String>> {
    let meta = store.update_version_meta(bucket, path, version, |m| {
        m.tags = tags;
        Ok(())
    })?;
    Ok(store.version_header(bucket, &meta)?)
}

/// PutObjectTagging: replaces the tags of the object (or of the version named), its bytes
/// untouched.
pub(crate) async fn put_object_tagging(
    gw: &Gateway,
    req: S3Request<PutObjectTaggingInput>,
) -> RequestResult<S3Response<PutObjectTaggingOutput>> {
    let input = req.input;
    let tags = from_tag_set(input.tagging.tag_set, MAX_OBJECT_TAGS, "Object")?;
    let (store, bucket, path) = (gw.store.clone(), input.bucket, object_path(&input.key)?);
    let version = input.version_id;
    let version_id =
        blocking(move || retag(&store, &bucket, &path, version.as_deref(), tags)).await?;
    Ok(S3Response::new(PutObjectTaggingOutput { version_id }))
}

/// GetObjectTagging.
pub(crate) async fn get_object_tagging(
    gw: &Gateway,
    req: S3Request<GetObjectTaggingInput>,
) -> RequestResult<S3Response<GetObjectTaggingOutput>> {
    let input = req.input;
    let (store, bucket, path) = (gw.store.clone(), input.bucket, object_path(&input.key)?);
    let version = input.version_id;
    let (meta, version_id) =
        blocking(move || tagged_version(&store, &bucket, &path, version.as_deref())).await?;
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set: to_tag_set(&meta.tags),
        version_id,
    }))
}

/// DeleteObjectTagging.
pub(crate) async fn delete_object_tagging(
    gw: &Gateway,
    req: S3Request<DeleteObjectTaggingInput>,
) -> RequestResult<S3Response<DeleteObjectTaggingOutput>> {
    let input = req.input;
    let (store, bucket, path) = (gw.store.clone(), input.bucket, object_path(&input.key)?);
    let version = input.version_id;
    let version_id =
        blocking(move || retag(&store, &bucket, &path, version.as_deref(), Tags::new())).await?;
    Ok(S3Response::new(DeleteObjectTaggingOutput { version_id }))
}

/// PutBucketTagging.
pub(crate) async fn put_bucket_tagging(
    gw: &Gateway,
    req: S3Request<PutBucketTaggingInput>,
) -> RequestResult<S3Response<PutBucketTaggingOutput>> {
    let input = req.input;
    let tags = from_tag_set(input.tagging.tag_set, MAX_BUCKET_TAGS, "Bucket")?;
    let doc = serde_json::to_vec(&tags).map_err(|e| RequestError::Internal(e.to_string()))?;
    let (store, bucket) = (gw.store.clone(), input.bucket);
    blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().put(&bucket, Setting::Tagging, &doc)
    })
    .await?;
    Ok(S3Response::new(PutBucketTaggingOutput::default()))
}

/// GetBucketTagging: `NoSuchTagSet` when the bucket has none.
pub(crate) async fn get_bucket_tagging(
    gw: &Gateway,
    req: S3Request<GetBucketTaggingInput>,
) -> RequestResult<S3Response<GetBucketTaggingOutput>> {
    let (store, bucket) = (gw.store.clone(), req.input.bucket);
    let doc = blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().get(&bucket, Setting::Tagging)
    })
    .await?;
    let tags: Tags = doc
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    if tags.is_empty() {
        return Err(RequestError::NoSuchTagSet);
    }
    Ok(S3Response::new(GetBucketTaggingOutput {
        tag_set: to_tag_set(&tags),
    }))
}

/// DeleteBucketTagging.
pub(crate) async fn delete_bucket_tagging(
    gw: &Gateway,
    req: S3Request<DeleteBucketTaggingInput>,
) -> RequestResult<S3Response<DeleteBucketTaggingOutput>> {
    let (store, bucket) = (gw.store.clone(), req.input.bucket);
    blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().delete(&bucket, Setting::Tagging)
    })
    .await?;
    Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tags_and_limits() {
        assert_eq!(
            from_header(Some("project=nebula&note=a%20b+c&empty=")).unwrap(),
            vec![
                ("project".into(), "nebula".into()),
                ("note".into(), "a b c".into()),
                ("empty".into(), String::new())
            ]
        );
        assert!(from_header(None).unwrap().is_empty());
        let many: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert!(matches!(
            from_header(Some(&many.join("&"))),
            Err(RequestError::BadRequest(_))
        ));
        assert!(matches!(
            from_header(Some("a=1&a=2")),
            Err(RequestError::InvalidTag(_))
        ));
        let long_key = format!("{}=v", "k".repeat(129));
        assert!(matches!(
            from_header(Some(&long_key)),
            Err(RequestError::InvalidTag(_))
        ));
        let long_value = format!("k={}", "v".repeat(257));
        assert!(matches!(
            from_header(Some(&long_value)),
            Err(RequestError::InvalidTag(_))
        ));
        assert!(from_header(Some(&format!("k={}", "v".repeat(256)))).is_ok());
        assert!(matches!(
            from_header(Some("aws:x=1")),
            Err(RequestError::InvalidTag(_))
        ));
    }
}
