//! PutObject, and the streaming of request bodies into temp files shared with UploadPart.

use std::io::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, TrailingHeaders};

use super::checksum::Expect;
use super::{Gateway, blocking, etag_of, format_http_date, object_path};
use crate::error::StoreError;
use crate::store::meta::{ObjectMeta, StoredChecksums, guess_content_type};
use crate::store::{Commit, Store, TempFile};

/// Bytes gathered before one write to disk: large writes keep syscalls and thread hops rare.
const WRITE_BATCH: usize = 1024 * 1024;

/// A request body written to a temp file, with its digests verified.
pub(crate) struct Received {
    /// The temp file holding the body.
    pub tmp: TempFile,
    /// Body length.
    pub size: u64,
    /// MD5 of the body (the ETag of a single PUT, the part ETag of UploadPart).
    pub md5: [u8; 16],
    /// Checksums computed (and verified where the client sent values).
    pub checksums: StoredChecksums,
}

struct Sink {
    tmp: TempFile,
    md5: Md5,
    hasher: s3s::checksum::ChecksumHasher,
    size: u64,
}

impl Sink {
    fn write(mut self, buf: Bytes) -> Result<Self, StoreError> {
        self.tmp.file.write_all(&buf)?;
        self.md5.update(&buf);
        self.hasher.update(&buf);
        self.size += buf.len() as u64;
        Ok(self)
    }
}

/// Maps a failure of the request body stream to the S3 error the client should see: s3s
/// reports signature and length problems as errors in the stream itself.
fn body_error(e: s3s::StdError) -> S3Error {
    let other = match e.downcast::<S3Error>() {
        Ok(s3) => return *s3,
        Err(other) => other,
    };
    // s3s's stream error types are private; their messages name the failed check.
    let text = other.to_string();
    if text.contains("Sha256Mismatch") {
        crate::error::custom_error(
            "XAmzContentSHA256Mismatch",
            http::StatusCode::BAD_REQUEST,
            "the provided 'x-amz-content-sha256' header does not match what was computed",
        )
    } else if text.contains("SignatureMismatch") {
        S3Error::with_message(
            S3ErrorCode::SignatureDoesNotMatch,
            "the chunk signature we calculated does not match the signature you provided",
        )
    } else {
        S3Error::with_message(
            S3ErrorCode::IncompleteBody,
            format!("the request body could not be read: {text}"),
        )
    }
}

/// Streams a request body into a new temp file for `bucket`, hashing as it goes, then checks
/// Content-MD5 and checksums (from headers or aws-chunked trailers). Nothing is committed here.
pub(crate) async fn receive_body(
    store: &Arc<Store>,
    bucket: &str,
    body: Option<StreamingBlob>,
    expect: &Expect,
    trailers: Option<TrailingHeaders>,
) -> S3Result<Received> {
    let (store2, bucket2) = (store.clone(), bucket.to_owned());
    let tmp = blocking(move || store2.create_temp(&bucket2)).await?;
    let mut sink = Sink {
        tmp,
        md5: Md5::new(),
        hasher: expect.hasher(),
        size: 0,
    };
    let mut batch = BytesMut::new();
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_error)?;
            if batch.is_empty() && chunk.len() >= WRITE_BATCH {
                sink = blocking(move || sink.write(chunk)).await?;
                continue;
            }
            batch.extend_from_slice(&chunk);
            if batch.len() >= WRITE_BATCH {
                let buf = batch.split().freeze();
                sink = blocking(move || sink.write(buf)).await?;
            }
        }
    }
    if !batch.is_empty() {
        let buf = batch.freeze();
        sink = blocking(move || sink.write(buf)).await?;
    }
    let md5: [u8; 16] = sink.md5.finalize().into();
    let computed = sink.hasher.finalize();
    let trailer_map = trailers.and_then(|t| t.take());
    let checksums = expect
        .verify(&md5, &computed, trailer_map.as_ref())
        .map_err(S3Error::from)?;
    Ok(Received {
        tmp: sink.tmp,
        size: sink.size,
        md5,
        checksums,
    })
}

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
/// Content-Encoding and keeps any other coding (`aws-chunked,gzip` is stored as `gzip`).
fn strip_aws_chunked(v: &str) -> Option<String> {
    let rest: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!rest.is_empty()).then(|| rest.join(","))
}

/// Output checksums as S3 echoes them.
pub(crate) fn checksum_fields(c: &StoredChecksums) -> Checksum {
    Checksum {
        checksum_crc32: c.crc32.clone(),
        checksum_crc32c: c.crc32c.clone(),
        checksum_crc64nvme: c.crc64nvme.clone(),
        checksum_sha1: c.sha1.clone(),
        checksum_sha256: c.sha256.clone(),
        checksum_type: None,
    }
}

/// Decides how a write treats an existing object from `If-None-Match` / `If-Match`.
pub(crate) async fn write_precondition(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Commit> {
    if let Some(cond) = if_none_match {
        if !cond.is_any() {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "If-None-Match on writes supports only '*'",
            ));
        }
        return Ok(Commit::CreateOnly);
    }
    if let Some(cond) = if_match {
        let (store, b, path) = (gw.store.clone(), bucket.to_owned(), object_path(key)?);
        let current = blocking(move || store.open_object(&b, &path)).await;
        match current {
            Ok(obj) => {
                if !super::conditional::etag_matches(cond, &obj.meta.etag) {
                    return Err(StoreError::PreconditionFailed.into());
                }
            }
            Err(e) if e.code() == &S3ErrorCode::NoSuchKey => return Err(e),
            Err(e) => return Err(e),
        }
    }
    Ok(Commit::Replace)
}

/// PutObject: stream to a temp file, verify digests, then rename into place.
pub(crate) async fn put_object(
    gw: &Gateway,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let expect = Expect::from_request(
        input.content_md5.as_deref(),
        &req.headers,
        input.checksum_algorithm.as_ref(),
    )?;
    let mode = write_precondition(
        gw,
        &input.bucket,
        &input.key,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
    )
    .await?;
    let received = receive_body(
        &gw.store,
        &input.bucket,
        input.body,
        &expect,
        req.trailing_headers,
    )
    .await?;
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
    meta.etag = hex::encode(received.md5);
    meta.checksums = received.checksums;
    let (store, bucket) = (gw.store.clone(), input.bucket.clone());
    let size = received.size;
    let tmp = received.tmp;
    let meta = blocking(move || store.commit(tmp, &bucket, &path, meta, mode)).await?;
    gw.written(&input.bucket, &input.key, &meta).await;
    let c = checksum_fields(&meta.checksums);
    let output = PutObjectOutput {
        e_tag: Some(etag_of(&meta)),
        size: Some(size as i64),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}
