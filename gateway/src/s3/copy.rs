//! CopyObject and UploadPartCopy: kernel-side copies (reflinks where the filesystem has them)
//! into a temp file, committed with an atomic rename; CopyObject takes the metadata as COPY or
//! REPLACE, UploadPartCopy makes (a range of) the source a part of an upload.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::acl::{acl_headers, write_acl};
use super::checksum::{checksum_fields, hash_file};
use super::conditional::conditions;
use super::lock::{WriteLock, apply_on_write};
use super::multipart::{algorithm_of, part_etag, part_number};
use super::put::WriteHeaders;
use super::{Gateway, RequestError, RequestResult, blocking, etag_of, object_path, timestamp};
use crate::store::keys::ObjectPath;
use crate::store::versions::Found;
use crate::store::{Commit, ObjectHandle, Store, StoreError, fsutil};

/// Bucket, key and version id from `x-amz-copy-source`; access points are not served.
pub(crate) fn copy_source(src: &CopySource) -> RequestResult<(String, String, Option<String>)> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            version_id.as_deref().map(str::to_owned),
        )),
        _ => Err(RequestError::NotImplemented(
            "only bucket/key copy sources are supported",
        )),
    }
}

/// Opens the copy source: its current version, or the one named. A delete marker has nothing
/// to copy.
fn open_source(
    store: &Store,
    bucket: &str,
    path: &ObjectPath,
    version: Option<&str>,
) -> RequestResult<ObjectHandle> {
    match store.open_version(bucket, path, version)? {
        Found::Object(h) => Ok(h),
        Found::DeleteMarker { .. } if version.is_some() => Err(RequestError::InvalidRequest(
            "The source of a copy request may not specifically refer to a delete marker by version id.".into(),
        )),
        Found::DeleteMarker { .. } => Err(StoreError::NoSuchKey.into()),
    }
}

/// CopyObject.
pub(crate) async fn copy_object(
    gw: &Gateway,
    req: S3Request<CopyObjectInput>,
) -> RequestResult<S3Response<CopyObjectOutput>> {
    let input = req.input;
    let (src_bucket, src_key, src_version) = copy_source(&input.copy_source)?;
    let src_path = object_path(&src_key)?;
    let dst_path = object_path(&input.key)?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if !replace && src_bucket == input.bucket && src_key == input.key && src_version.is_none() {
        return Err(RequestError::InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
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
    // Tags come with the source unless the copy names its own (x-amz-tagging-directive).
    let new_tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
        Some(TaggingDirective::REPLACE) => {
            Some(super::tagging::from_header(input.tagging.as_deref())?)
        }
        _ => None,
    };
    // The copy gets the ACL its request names (private by default), never the source's.
    let acl_asked = acl_headers!(object input);
    let acl = write_acl(gw, &input.bucket, acl_asked, &req.extensions).await?;
    let conds = conditions!(copy_source input);
    let lock = WriteLock::new(
        input.object_lock_mode.as_ref(),
        input.object_lock_retain_until_date.as_ref(),
        input.object_lock_legal_hold_status.as_ref(),
    );
    let store = gw.store.clone();
    let dst_bucket = input.bucket.clone();
    let (bucket, key) = (input.bucket.clone(), input.key.clone());
    let (meta, modified, src_version, version_id) = blocking(move || -> RequestResult<_> {
        let src = open_source(&store, &src_bucket, &src_path, src_version.as_deref())?;
        let src_version = store.version_header(&src_bucket, &src.meta)?;
        conds.borrow().check_copy_source(&src.meta, src.modified)?;
        let _space = store.space().admit(Some(&dst_bucket), src.size)?;
        let tmp = store.create_temp(&dst_bucket)?;
        // An empty folder marker's handle is its folder, which has no bytes to copy.
        if src.size > 0 {
            fsutil::copy_range(&src.file, 0, &tmp.file, src.size)?;
        }
        let meta = match new_meta {
            Some(mut m) => {
                m.etag = src.meta.etag.clone();
                m.checksums = src.meta.checksums.clone();
                m.parts = src.meta.parts;
                m.tags = src.meta.tags.clone();
                m
            }
            None => src.meta.clone(),
        };
        // Object lock settings belong to the source version: the copy gets its own.
        let mut meta = meta;
        apply_on_write(&store, &dst_bucket, &lock, &mut meta)?;
        if let Some(tags) = new_tags {
            meta.tags = tags;
        }
        meta.acl = acl;
        let meta = store.commit(tmp, &dst_bucket, &dst_path, meta, Commit::Replace)?;
        let modified =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(meta.mtime_ns.max(0) as u64);
        let version = store.version_header(&dst_bucket, &meta)?;
        Ok((meta, modified, src_version, version))
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
        checksum_type: c.checksum_type,
    };
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(result),
        version_id,
        copy_source_version_id: src_version,
        ..Default::default()
    }))
}

/// Parses `x-amz-copy-source-range: bytes=first-last` (both required, inclusive).
fn parse_copy_range(s: &str) -> RequestResult<(u64, u64)> {
    let bad = || {
        RequestError::InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy".into(),
        )
    };
    let (a, b) = s
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse::<u64>().map_err(|_| bad())?,
        b.trim().parse::<u64>().map_err(|_| bad())?,
    );
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// UploadPartCopy: a kernel copy of (a range of) an existing object becomes a part.
pub(crate) async fn upload_part_copy(
    gw: &Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> RequestResult<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    let number = part_number(input.part_number)?;
    let (src_bucket, src_key, src_version) = copy_source(&input.copy_source)?;
    let src_path = object_path(&src_key)?;
    let range = input
        .copy_source_range
        .as_deref()
        .map(parse_copy_range)
        .transpose()?;
    let conds = conditions!(copy_source input);
    let store = gw.store.clone();
    let (bucket, key, id) = (input.bucket, input.key, input.upload_id);
    let (part, src_version) = blocking(move || -> RequestResult<_> {
        let record = store.open_upload(&bucket, &key, &id)?;
        let src = open_source(&store, &src_bucket, &src_path, src_version.as_deref())?;
        let src_version = store.version_header(&src_bucket, &src.meta)?;
        conds.borrow().check_copy_source(&src.meta, src.modified)?;
        let (start, len) = match range {
            None => (0, src.size),
            Some((first, last)) if last < src.size => (first, last - first + 1),
            Some(_) => {
                return Err(RequestError::InvalidArgument(format!(
                    "Range specified is not valid for source object of size: {}",
                    src.size
                )));
            }
        };
        // The part is staged in the reserved folder.
        let _space = store.space().admit(None, len)?;
        let tmp = store.internal_temp()?;
        if len > 0 {
            fsutil::copy_range(&src.file, start, &tmp.file, len)?;
        }
        // Hash what landed in the part, not the source, which may change under us.
        let (md5, checksums) = hash_file(&tmp.file, len, algorithm_of(&record).as_ref())?;
        let part = store.put_part(&bucket, &key, &id, number, tmp, md5, checksums)?;
        Ok((part, src_version))
    })
    .await?;
    let c = checksum_fields(&part.checksums);
    let result = CopyPartResult {
        e_tag: Some(part_etag(&part)),
        last_modified: Some(timestamp(part.modified)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
    };
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(result),
        copy_source_version_id: src_version,
        ..Default::default()
    }))
}
