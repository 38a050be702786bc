//! PutObject, and what writes share: the metadata a write sets and write preconditions.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::acl::{acl_headers, write_acl};
use super::checksum::{Expect, checksum_fields};
use super::lifecycle::expiration_header;
use super::lock::{WriteLock, apply_on_write};
use super::receive::{Dest, Landed, discard_body, receive_body};
use super::{
    Gateway, RequestError, RequestResult, blocking, etag_of, format_http_date, object_path,
};
use crate::store::Commit;
use crate::store::meta::{ObjectMeta, guess_content_type};
use crate::store::space::SpaceClaim;

/// The S3 metadata a PUT (or CreateMultipartUpload, or CopyObject with REPLACE) sets.
pub(crate) struct WriteHeaders<'a> {
    pub key: &'a str,
    pub content_type: Option<&'a str>,
    pub content_disposition: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub content_language: Option<&'a str>,
    pub cache_control: Option<&'a str>,
    pub expires: Option<&'a Timestamp>,
    pub metadata: Option<&'a Metadata>,
}

impl WriteHeaders<'_> {
    /// Builds the metadata record (ETag and size are filled by the caller and the commit).
    pub(crate) fn to_meta(&self) -> ObjectMeta {
        ObjectMeta {
            content_type: Some(
                self.content_type
                    .map(str::to_owned)
                    .unwrap_or_else(|| guess_content_type(self.key)),
            ),
            content_disposition: self.content_disposition.map(str::to_owned),
            content_encoding: self.content_encoding.and_then(strip_aws_chunked),
            content_language: self.content_language.map(str::to_owned),
            cache_control: self.cache_control.map(str::to_owned),
            expires: self.expires.and_then(format_http_date),
            user: self
                .metadata
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// `aws-chunked` describes the upload's framing, not the object: S3 drops it from the stored
/// Content-Encoding and keeps any other coding (`aws-chunked,gzip` is stored as `gzip`); a
/// value without it is kept exactly as sent.
fn strip_aws_chunked(v: &str) -> Option<String> {
    if !v.to_ascii_lowercase().contains("aws-chunked") {
        return (!v.is_empty()).then(|| v.to_owned());
    }
    let rest: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!rest.is_empty()).then(|| rest.join(","))
}

/// Decides how a write treats an existing object from `If-None-Match` / `If-Match`.
pub(crate) async fn write_precondition(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> RequestResult<Commit> {
    if let Some(cond) = if_none_match {
        if cond.is_any() {
            return Ok(Commit::CreateOnly);
        }
        // An ETag: the write fails only when the current object has it.
        let (store, b, path) = (gw.store.clone(), bucket.to_owned(), object_path(key)?);
        match blocking(move || store.open_object(&b, &path)).await {
            Ok(current) if super::conditional::etag_matches(cond, &current.meta.etag) => {
                return Err(RequestError::PreconditionFailed);
            }
            Ok(_) | Err(crate::store::StoreError::NoSuchKey) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(cond) = if_match {
        let (store, b, path) = (gw.store.clone(), bucket.to_owned(), object_path(key)?);
        let current = blocking(move || store.open_object(&b, &path)).await?;
        if !super::conditional::etag_matches(cond, &current.meta.etag) {
            return Err(RequestError::PreconditionFailed);
        }
    }
    Ok(Commit::Replace)
}

/// Refuses a write of `bytes` into `bucket` (`None`: multipart staging in the reserved
/// folder) that would leave less free space than the reserve (`--min-free`), before any of
/// its body is read. The claim holds the bytes against the free space until it is dropped,
/// when the write has ended. Decided without leaving the async worker while the cached
/// figures show room to spare.
pub(crate) async fn admit(
    gw: &Gateway,
    bucket: Option<&str>,
    bytes: u64,
) -> RequestResult<SpaceClaim> {
    if let Some(claim) = gw.store.space().admit_cached(bucket, bytes) {
        return Ok(claim);
    }
    let (store, bucket) = (gw.store.clone(), bucket.map(str::to_owned));
    Ok(blocking(move || store.space().admit(bucket.as_deref(), bytes)).await?)
}

/// The body length a write declares: `Content-Length` (which s3s sets to
/// `x-amz-decoded-content-length` for an aws-chunked body); 0 when unknown, so only a
/// filesystem already below its reserve refuses it.
pub(crate) fn declared_len(content_length: Option<i64>) -> u64 {
    content_length
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// PutObject: stream to a temp file, verify digests, then rename into place.
pub(crate) async fn put_object(
    gw: &Gateway,
    req: S3Request<PutObjectInput>,
) -> RequestResult<S3Response<PutObjectOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let expect = Expect::from_request(
        input.content_md5.as_deref(),
        &req.headers,
        input.checksum_algorithm.as_ref(),
    )?;
    let tags = super::tagging::from_header(input.tagging.as_deref())?;
    let acl_asked = acl_headers!(object input);
    let acl = write_acl(gw, &input.bucket, acl_asked, &req.extensions).await?;
    let mode = write_precondition(
        gw,
        &input.bucket,
        &input.key,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
    )
    .await?;
    let _space = match admit(gw, Some(&input.bucket), declared_len(input.content_length)).await {
        Ok(claim) => claim,
        Err(e) => {
            discard_body(&req.headers, input.body).await;
            return Err(e);
        }
    };
    let dest = Dest::Temp {
        store: gw.store.clone(),
        bucket: input.bucket.clone(),
    };
    let received = receive_body(dest, input.body, &expect, req.trailing_headers).await?;
    let headers = WriteHeaders {
        key: &input.key,
        content_type: input.content_type.as_deref(),
        content_disposition: input.content_disposition.as_deref(),
        content_encoding: input.content_encoding.as_deref(),
        content_language: input.content_language.as_deref(),
        cache_control: input.cache_control.as_deref(),
        expires: input.expires.as_ref(),
        metadata: input.metadata.as_ref(),
    };
    let mut meta = headers.to_meta();
    meta.tags = tags;
    meta.acl = acl;
    meta.etag = hex::encode(received.md5);
    meta.checksums = received.checksums;
    let (store, bucket) = (gw.store.clone(), input.bucket.clone());
    let size = received.size;
    let lock = WriteLock::new(
        input.object_lock_mode.as_ref(),
        input.object_lock_retain_until_date.as_ref(),
        input.object_lock_legal_hold_status.as_ref(),
    );
    let (meta, version_id) = blocking(move || -> RequestResult<_> {
        apply_on_write(&store, &bucket, &lock, &mut meta)?;
        let meta = match received.landed {
            Landed::Memory(bytes) => store.commit_bytes(&bytes, &bucket, &path, meta, mode)?,
            Landed::Temp(tmp) => store.commit(tmp, &bucket, &path, meta, mode)?,
            Landed::Slot(_) => {
                return Err(RequestError::InvalidRequest(
                    "a PUT body cannot land in a multipart slot".into(),
                ));
            }
        };
        let version_id = store.version_header(&bucket, &meta)?;
        Ok((meta, version_id))
    })
    .await?;
    gw.written(&input.bucket, &input.key, &meta).await;
    let c = checksum_fields(&meta.checksums);
    let created =
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(meta.mtime_ns.max(0) as u64);
    let expiration = expiration_header(
        &gw.store,
        &input.bucket,
        &input.key,
        &meta,
        created,
        gw.lifecycle_day,
    );
    let output = PutObjectOutput {
        expiration,
        e_tag: Some(etag_of(&meta)),
        size: Some(size as i64),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        checksum_type: c.checksum_type,
        version_id,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}
