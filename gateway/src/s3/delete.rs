//! DeleteObject (idempotent) and DeleteObjects (up to 1000 keys, quiet mode), of the current
//! version or of one version by id.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::{Gateway, RequestError, RequestResult, blocking, object_path};
use crate::store::keys::{ObjectPath, parse_key};
use crate::store::versions::Deleted;
use crate::store::{Store, StoreResult};

/// S3's limit on keys per DeleteObjects request.
const MAX_DELETE_KEYS: usize = 1000;

/// Deletes one key (or one version of it) as the bucket's versioning state asks: unversioned
/// buckets remove the file, versioned ones keep it behind a delete marker.
fn delete_one(
    store: &Store,
    bucket: &str,
    path: &ObjectPath,
    version: Option<&str>,
    bypass_governance: bool,
) -> StoreResult<Deleted> {
    if let Some(id) = version {
        return store.delete_version(bucket, path, id, bypass_governance);
    }
    store.delete_current(bucket, path)
}

/// Tells the subscribers what a delete changed about the key's current version.
async fn report(gw: &Gateway, bucket: &str, key: &str, d: &Deleted) {
    if let Some(meta) = &d.promoted {
        gw.written(bucket, key, meta).await;
    } else if d.current_gone {
        gw.deleted(bucket, key).await;
    }
}

/// DeleteObject.
pub(crate) async fn delete_object(
    gw: &Gateway,
    req: S3Request<DeleteObjectInput>,
) -> RequestResult<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let store = gw.store.clone();
    let bucket = input.bucket.clone();
    let version = input.version_id.clone();
    let bypass = input.bypass_governance_retention.unwrap_or(false);
    let d =
        blocking(move || delete_one(&store, &bucket, &path, version.as_deref(), bypass)).await?;
    report(gw, &input.bucket, &input.key, &d).await;
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: d.delete_marker.then_some(true),
        version_id: d.version_id,
        ..Default::default()
    }))
}

/// DeleteObjects.
pub(crate) async fn delete_objects(
    gw: &Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> RequestResult<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    let objects = input.delete.objects;
    let denied = req
        .extensions
        .get::<crate::access::DeniedKeys>()
        .map(|d| d.0.clone())
        .unwrap_or_default();
    if objects.len() + denied.len() > MAX_DELETE_KEYS {
        return Err(RequestError::MalformedXml(
            "a DeleteObjects request may name at most 1000 keys",
        ));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let bypass = input.bypass_governance_retention.unwrap_or(false);
    let store = gw.store.clone();
    let bucket = input.bucket;
    let bucket2 = bucket.clone();
    let results = blocking(move || -> StoreResult<_> {
        let bucket = bucket2;
        store.bucket_fd(&bucket)?;
        Ok(objects
            .into_iter()
            .map(|o| {
                let r = parse_key(&o.key)
                    .and_then(|p| delete_one(&store, &bucket, &p, o.version_id.as_deref(), bypass));
                (o.key, o.version_id, r)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let mut deleted = Vec::new();
    // The keys a bucket policy denies deleting (see `crate::auth`) fail on their own.
    let mut errors: Vec<Error> = denied
        .into_iter()
        .map(|(key, version_id)| Error {
            key: Some(key),
            code: Some("AccessDenied".to_owned()),
            message: Some("Access Denied".to_owned()),
            version_id,
        })
        .collect();
    for (key, asked_version, r) in results {
        match r {
            Ok(d) => {
                report(gw, &bucket, &key, &d).await;
                if !quiet {
                    // A marker made by this delete is reported as DeleteMarkerVersionId; a
                    // version named by the request as VersionId.
                    let made_marker = d.delete_marker && asked_version.is_none();
                    deleted.push(DeletedObject {
                        key: Some(key),
                        delete_marker: d.delete_marker.then_some(true),
                        delete_marker_version_id: if made_marker {
                            d.version_id.clone()
                        } else {
                            None
                        },
                        version_id: asked_version,
                    });
                }
            }
            Err(e) => {
                let s3 = RequestError::from(e).into_s3();
                errors.push(Error {
                    key: Some(key),
                    code: Some(s3.code().as_str().to_owned()),
                    message: s3.message().map(str::to_owned),
                    version_id: asked_version,
                });
            }
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}
