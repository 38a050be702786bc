//! CopyObject: kernel-side copy into a temp file, metadata COPY or REPLACE, atomic rename.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::conditional::Conditions;
use super::put::{WriteHeaders, checksum_fields};
use super::{Gateway, blocking, etag_of, object_path, timestamp};
use crate::error::StoreError;
use crate::store::{Commit, fsutil};

/// Extracts bucket and key from `x-amz-copy-source`; access points and versions are not served.
pub(crate) fn copy_source(src: &CopySource) -> S3Result<(String, String)> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            if version_id.as_deref().is_some_and(|v| v != "null") {
                return Err(S3Error::with_message(
                    S3ErrorCode::NotImplemented,
                    "this gateway does not keep object versions",
                ));
            }
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "only bucket/key copy sources are supported",
        )),
    }
}

/// CopyObject.
pub(crate) async fn copy_object(
    gw: &Gateway,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    let (src_bucket, src_key) = copy_source(&input.copy_source)?;
    let src_path = object_path(&src_key)?;
    let dst_path = object_path(&input.key)?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if !replace && src_bucket == input.bucket && src_key == input.key {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let new_meta = replace.then(|| {
        WriteHeaders {
            key: &input.key,
            content_type: input.content_type.as_deref(),
            content_disposition: input.content_disposition.as_deref(),
            content_encoding: input.content_encoding.as_deref(),
            content_language: input.content_language.as_deref(),
            cache_control: input.cache_control.as_deref(),
            expires: input.expires.as_ref(),
            metadata: input.metadata.as_ref(),
        }
        .to_meta()
    });
    let conds = super::get::OwnedConditions {
        if_match: input.copy_source_if_match,
        if_none_match: input.copy_source_if_none_match,
        if_modified_since: input.copy_source_if_modified_since,
        if_unmodified_since: input.copy_source_if_unmodified_since,
    };
    let store = gw.store.clone();
    let dst_bucket = input.bucket.clone();
    let (bucket, key) = (input.bucket.clone(), input.key.clone());
    let (meta, modified) = blocking(move || {
        let src = store.open_object(&src_bucket, &src_path)?;
        let cond: Conditions<'_> = conds.borrow();
        if cond.check_copy_source(&src.meta, src.modified).is_err() {
            return Err(StoreError::PreconditionFailed);
        }
        if src_path.is_folder_marker != dst_path.is_folder_marker {
            return Err(StoreError::InvalidRequest(
                "a folder marker (key ending in '/') can only be copied to another folder marker"
                    .into(),
            ));
        }
        let tmp = store.create_temp(&dst_bucket)?;
        if !src_path.is_folder_marker {
            fsutil::copy_range(&src.file, 0, &tmp.file, src.size)?;
        }
        let meta = match new_meta {
            Some(mut m) => {
                m.etag = src.meta.etag.clone();
                m.checksums = src.meta.checksums.clone();
                m.parts = src.meta.parts;
                m
            }
            None => src.meta.clone(),
        };
        let meta = store.commit(tmp, &dst_bucket, &dst_path, meta, Commit::Replace)?;
        let modified =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(meta.mtime_ns.max(0) as u64);
        Ok((meta, modified))
    })
    .await?;
    gw.written(&bucket, &key, &meta).await;
    let c = checksum_fields(&meta.checksums);
    let result = CopyObjectResult {
        e_tag: Some(etag_of(&meta)),
        last_modified: Some(timestamp(modified)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        checksum_type: None,
    };
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(result),
        ..Default::default()
    }))
}
