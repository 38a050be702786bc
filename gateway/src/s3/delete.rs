//! DeleteObject (idempotent) and DeleteObjects (up to 1000 keys, quiet mode).

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::{Gateway, RequestError, RequestResult, blocking, object_path};
use crate::store::keys::parse_key;
use crate::store::{StoreError, StoreResult};

/// S3's limit on keys per DeleteObjects request.
const MAX_DELETE_KEYS: usize = 1000;

/// DeleteObject.
pub(crate) async fn delete_object(
    gw: &Gateway,
    req: S3Request<DeleteObjectInput>,
) -> RequestResult<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let store = gw.store.clone();
    let bucket = input.bucket.clone();
    blocking(move || store.delete_object(&bucket, &path)).await?;
    gw.deleted(&input.bucket, &input.key).await;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

/// DeleteObjects.
pub(crate) async fn delete_objects(
    gw: &Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> RequestResult<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    let objects = input.delete.objects;
    if objects.len() > MAX_DELETE_KEYS {
        return Err(RequestError::MalformedXml(
            "a DeleteObjects request may name at most 1000 keys",
        ));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let store = gw.store.clone();
    let bucket = input.bucket;
    let bucket2 = bucket.clone();
    let results = blocking(move || -> StoreResult<_> {
        let bucket = bucket2;
        store.bucket_fd(&bucket)?;
        Ok(objects
            .into_iter()
            .map(|o| {
                let r = parse_key(&o.key).and_then(|p| store.delete_object(&bucket, &p));
                (o.key, r)
            })
            .collect::<Vec<(String, Result<(), StoreError>)>>())
    })
    .await?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (key, r) in results {
        match r {
            Ok(()) => {
                gw.deleted(&bucket, &key).await;
                if !quiet {
                    deleted.push(DeletedObject {
                        key: Some(key),
                        ..Default::default()
                    });
                }
            }
            Err(e) => {
                let s3 = RequestError::from(e).into_s3();
                errors.push(Error {
                    key: Some(key),
                    code: Some(s3.code().as_str().to_owned()),
                    message: s3.message().map(str::to_owned),
                    version_id: None,
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
