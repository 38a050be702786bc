//! Multipart uploads: parts staged in the reserved folder, assembled with kernel copies.
//!
//! Completion validates the whole part list before touching anything, so a rejected
//! CompleteMultipartUpload leaves the upload as it was and the client can fix and retry.

use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use md5::{Digest, Md5};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::checksum::Expect;
use super::copy::copy_source;
use super::get::OwnedConditions;
use super::put::{WriteHeaders, checksum_fields, write_precondition};
use super::receive::{Dest, Landed, receive_body};
use super::{Gateway, blocking, object_path, timestamp};
use crate::error::StoreError;
use crate::store::meta::{IO_BLOCK, StoredChecksums};
use crate::store::multipart::{MAX_PART_NUMBER, PartInfo, RequestedPart, UploadInfo, UploadRecord};

/// Listings return at most this many entries per page, as S3 does.
const MAX_PAGE: i32 = 1000;

/// Assemblies larger than this answer at once and keep the connection alive with whitespace
/// until done (s3s's `future` field), so clients with a read timeout do not give up on them.
const KEEPALIVE_ABOVE: u64 = 1 << 30;

/// What `EncodingType=url` leaves unescaped (RFC 3986 unreserved characters and `/`).
const URL_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })
}

fn part_etag(part: &PartInfo) -> ETag {
    ETag::Strong(part.etag.clone())
}

fn algorithm_of(record: &UploadRecord) -> Option<ChecksumAlgorithm> {
    record
        .checksum_algorithm
        .clone()
        .map(ChecksumAlgorithm::from)
}

fn owner_of(record: &UploadRecord) -> (Initiator, Owner) {
    let id = record.initiator.clone();
    (
        Initiator {
            id: id.clone(),
            display_name: id.clone(),
        },
        Owner {
            id: id.clone(),
            display_name: id,
        },
    )
}

fn stored_from_request(c: &CompletedPart) -> StoredChecksums {
    StoredChecksums {
        crc32: c.checksum_crc32.clone(),
        crc32c: c.checksum_crc32c.clone(),
        crc64nvme: c.checksum_crc64nvme.clone(),
        sha1: c.checksum_sha1.clone(),
        sha256: c.checksum_sha256.clone(),
    }
}

/// Parses `x-amz-copy-source-range: bytes=first-last` (both required, inclusive).
fn parse_copy_range(s: &str) -> Result<(u64, u64), StoreError> {
    let bad = || {
        StoreError::InvalidArgument(
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

/// MD5 and the upload's checksum of the first `len` bytes of a file, read in large blocks.
fn hash_file(
    file: &std::fs::File,
    len: u64,
    algorithm: Option<&ChecksumAlgorithm>,
) -> Result<([u8; 16], StoredChecksums), StoreError> {
    let expect = Expect::from_request(None, &HeaderMap::new(), algorithm)?;
    let mut hasher = expect.hasher();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; IO_BLOCK];
    let mut off = 0;
    while off < len {
        let want = (len - off).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "copied part is short",
            )));
        }
        md5.update(&buf[..n]);
        hasher.update(&buf[..n]);
        off += n as u64;
    }
    let md5: [u8; 16] = md5.finalize().into();
    let checksums = expect.verify(&md5, &hasher.finalize(), None)?;
    Ok((md5, checksums))
}

fn checksum_value(c: &StoredChecksums, algorithm: &str) -> Option<String> {
    match algorithm {
        "CRC32" => c.crc32.clone(),
        "CRC32C" => c.crc32c.clone(),
        "SHA1" => c.sha1.clone(),
        "SHA256" => c.sha256.clone(),
        _ => None,
    }
}

/// S3's composite ("checksum of checksums", `-N` suffix) checksum for uploads created with a
/// checksum algorithm, when every part has that checksum. Full-object CRCs would need CRC
/// combination and are not offered; without a value nothing is claimed.
fn composite_checksums(record: &UploadRecord, parts: &[PartInfo]) -> StoredChecksums {
    let mut out = StoredChecksums::default();
    let Some(alg) = record.checksum_algorithm.as_deref() else {
        return out;
    };
    if record
        .checksum_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(ChecksumType::FULL_OBJECT))
    {
        return out;
    }
    let Ok(expect) = Expect::from_request(
        None,
        &HeaderMap::new(),
        Some(&ChecksumAlgorithm::from(alg.to_owned())),
    ) else {
        return out;
    };
    let mut hasher = expect.hasher();
    for p in parts {
        let Some(raw) = checksum_value(&p.checksums, alg).and_then(|v| B64.decode(v).ok()) else {
            return out;
        };
        hasher.update(&raw);
    }
    let sum = hasher.finalize();
    let n = parts.len();
    let composite = |v: Option<String>| v.map(|v| format!("{v}-{n}"));
    match alg {
        "CRC32" => out.crc32 = composite(sum.checksum_crc32),
        "CRC32C" => out.crc32c = composite(sum.checksum_crc32c),
        "SHA1" => out.sha1 = composite(sum.checksum_sha1),
        "SHA256" => out.sha256 = composite(sum.checksum_sha256),
        _ => {}
    }
    out
}

fn location(bucket: &str, key: &str) -> String {
    format!("/{bucket}/{}", utf8_percent_encode(key, URL_SAFE))
}

/// CreateMultipartUpload.
pub(crate) async fn create_multipart_upload(
    gw: &Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    object_path(&input.key)?;
    if let Some(alg) = &input.checksum_algorithm {
        // Rejects algorithms the parts could not be checked with.
        Expect::from_request(None, &HeaderMap::new(), Some(alg))?;
    }
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
    let initiated_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let record = UploadRecord {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        meta: headers.to_meta(),
        checksum_algorithm: input
            .checksum_algorithm
            .as_ref()
            .map(|a| a.as_str().to_ascii_uppercase()),
        checksum_type: input
            .checksum_type
            .as_ref()
            .map(|t| t.as_str().to_ascii_uppercase()),
        initiated_ns,
        initiator: req.credentials.map(|c| c.access_key),
    };
    let store = gw.store.clone();
    let id = blocking(move || store.create_upload(&record)).await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id),
        checksum_algorithm: input.checksum_algorithm,
        checksum_type: input.checksum_type,
        ..Default::default()
    }))
}

/// UploadPart: the body is streamed and verified like a PUT, then renamed into the staging folder.
pub(crate) async fn upload_part(
    gw: &Gateway,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let input = req.input;
    let number = part_number(input.part_number)?;
    let (store, bucket, key, id) = (
        gw.store.clone(),
        input.bucket.clone(),
        input.key.clone(),
        input.upload_id.clone(),
    );
    let declared = input.content_length.and_then(|n| u64::try_from(n).ok());
    // Refuse before reading the body: the upload must exist. The part goes straight into its
    // place in the object when it can.
    let (record, slot) =
        blocking(move || store.begin_part(&bucket, &key, &id, number, declared)).await?;
    let algorithm = input
        .checksum_algorithm
        .clone()
        .or_else(|| algorithm_of(&record));
    let expect = Expect::from_request(
        input.content_md5.as_deref(),
        &req.headers,
        algorithm.as_ref(),
    )?;
    let dest = match slot {
        Some(slot) => Dest::Slot(slot),
        None => Dest::Temp {
            store: gw.store.clone(),
            bucket: input.bucket.clone(),
        },
    };
    let received = receive_body(dest, input.body, &expect, req.trailing_headers).await?;
    let store = gw.store.clone();
    let (bucket, key, id) = (input.bucket, input.key, input.upload_id);
    let (md5, checksums) = (received.md5, received.checksums);
    let part = blocking(move || match received.landed {
        Landed::Slot(slot) => store.finish_slot(slot, received.size, md5, checksums),
        Landed::Temp(tmp) => store.put_part(&bucket, &key, &id, number, tmp, md5, checksums),
        Landed::Memory(bytes) => {
            let tmp = store.internal_temp()?;
            tmp.file.write_all_at(&bytes, 0)?;
            store.put_part(&bucket, &key, &id, number, tmp, md5, checksums)
        }
    })
    .await?;
    let c = checksum_fields(&part.checksums);
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(part_etag(&part)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    }))
}

/// UploadPartCopy: a kernel copy of (a range of) an existing object becomes a part.
pub(crate) async fn upload_part_copy(
    gw: &Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    let number = part_number(input.part_number)?;
    let (src_bucket, src_key) = copy_source(&input.copy_source)?;
    let src_path = object_path(&src_key)?;
    let range = input
        .copy_source_range
        .as_deref()
        .map(parse_copy_range)
        .transpose()?;
    let conds = OwnedConditions {
        if_match: input.copy_source_if_match,
        if_none_match: input.copy_source_if_none_match,
        if_modified_since: input.copy_source_if_modified_since,
        if_unmodified_since: input.copy_source_if_unmodified_since,
    };
    let store = gw.store.clone();
    let (bucket, key, id) = (input.bucket, input.key, input.upload_id);
    let part = blocking(move || {
        let record = store.open_upload(&bucket, &key, &id)?;
        let src = store.open_object(&src_bucket, &src_path)?;
        if conds
            .borrow()
            .check_copy_source(&src.meta, src.modified)
            .is_err()
        {
            return Err(StoreError::PreconditionFailed);
        }
        let (start, len) = match range {
            None => (0, src.size),
            Some((first, last)) if last < src.size => (first, last - first + 1),
            Some(_) => {
                return Err(StoreError::InvalidArgument(format!(
                    "Range specified is not valid for source object of size: {}",
                    src.size
                )));
            }
        };
        let tmp = store.internal_temp()?;
        if len > 0 {
            crate::store::fsutil::copy_range(&src.file, start, &tmp.file, len)?;
        }
        // Hash what landed in the part, not the source, which may change under us.
        let (md5, checksums) = hash_file(&tmp.file, len, algorithm_of(&record).as_ref())?;
        store.put_part(&bucket, &key, &id, number, tmp, md5, checksums)
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
        ..Default::default()
    }))
}

/// CompleteMultipartUpload: validate everything, then concatenate, commit and clean up.
pub(crate) async fn complete_multipart_upload(
    gw: &Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let listed = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default();
    if listed.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema: it lists no parts",
        ));
    }
    let mut requested = Vec::with_capacity(listed.len());
    for p in &listed {
        let (Some(number), Some(etag)) = (p.part_number, p.e_tag.as_ref()) else {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "every Part needs a PartNumber and an ETag",
            ));
        };
        requested.push(RequestedPart {
            number,
            etag: etag.value().trim_matches('"').to_owned(),
            checksums: stored_from_request(p),
        });
    }
    let (store, bucket, key, id) = (
        gw.store.clone(),
        input.bucket.clone(),
        input.key.clone(),
        input.upload_id.clone(),
    );
    let assembly = blocking(move || store.prepare_complete(&bucket, &key, &id, &requested)).await?;
    if let Some(want) = input.mpu_object_size
        && u64::try_from(want).ok() != Some(assembly.size)
    {
        return Err(StoreError::InvalidRequest(format!(
            "x-amz-mp-object-size ({want}) does not match the size of the listed parts ({})",
            assembly.size
        ))
        .into());
    }
    let mode = write_precondition(
        gw,
        &input.bucket,
        &input.key,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
    )
    .await?;

    let mut meta = assembly.record.meta.clone();
    meta.etag = assembly.etag();
    meta.parts = Some(assembly.parts.len() as u32);
    meta.checksums = composite_checksums(&assembly.record, &assembly.parts);
    let large = assembly.size > KEEPALIVE_ABOVE;
    let (gw, bucket, key) = (gw.clone(), input.bucket, input.key);
    let finish = async move {
        let store = gw.store.clone();
        let meta = blocking(move || store.finish_upload(assembly, &path, meta, mode)).await?;
        gw.written(&bucket, &key, &meta).await;
        let c = checksum_fields(&meta.checksums);
        let composite = c.checksum_crc32.is_some()
            || c.checksum_crc32c.is_some()
            || c.checksum_sha1.is_some()
            || c.checksum_sha256.is_some();
        Ok(CompleteMultipartUploadOutput {
            location: Some(location(&bucket, &key)),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            bucket: Some(bucket),
            key: Some(key),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            checksum_type: composite.then(|| ChecksumType::from_static(ChecksumType::COMPOSITE)),
            ..Default::default()
        })
    };
    if large {
        // The blocking task finishes even if the client goes away meanwhile.
        return Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(finish)),
            ..Default::default()
        }));
    }
    Ok(S3Response::new(finish.await?))
}

/// AbortMultipartUpload.
pub(crate) async fn abort_multipart_upload(
    gw: &Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    let store = gw.store.clone();
    let initiated = input
        .if_match_initiated_time
        .map(|t| time::OffsetDateTime::from(t).unix_timestamp());
    blocking(move || {
        if let Some(want) = initiated {
            let record = store.open_upload(&input.bucket, &input.key, &input.upload_id)?;
            let have = time::OffsetDateTime::from(record.initiated()).unix_timestamp();
            if have != want {
                return Err(StoreError::PreconditionFailed);
            }
        }
        store.abort_upload(&input.bucket, &input.key, &input.upload_id)
    })
    .await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

/// ListParts.
pub(crate) async fn list_parts(
    gw: &Gateway,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let max = input.max_parts.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE) as usize;
    let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
    let (store, bucket, key, id) = (
        gw.store.clone(),
        input.bucket.clone(),
        input.key.clone(),
        input.upload_id.clone(),
    );
    let (record, parts) = blocking(move || {
        let record = store.open_upload(&bucket, &key, &id)?;
        Ok((record, store.list_parts(&id)?))
    })
    .await?;
    let mut after = parts.into_iter().filter(|p| p.number > marker).peekable();
    let page: Vec<PartInfo> = after.by_ref().take(max).collect();
    let truncated = after.peek().is_some();
    let next = if truncated {
        page.last().map(|p| p.number as i32)
    } else {
        None
    };
    let (initiator, owner) = owner_of(&record);
    let parts = page
        .iter()
        .map(|p| {
            let c = checksum_fields(&p.checksums);
            Part {
                part_number: Some(p.number as i32),
                e_tag: Some(part_etag(p)),
                size: Some(p.size as i64),
                last_modified: Some(timestamp(p.modified)),
                checksum_crc32: c.checksum_crc32,
                checksum_crc32c: c.checksum_crc32c,
                checksum_crc64nvme: c.checksum_crc64nvme,
                checksum_sha1: c.checksum_sha1,
                checksum_sha256: c.checksum_sha256,
            }
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next,
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        parts: Some(parts),
        initiator: Some(initiator),
        owner: Some(owner),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        checksum_algorithm: algorithm_of(&record),
        checksum_type: record.checksum_type.clone().map(ChecksumType::from),
        ..Default::default()
    }))
}

/// One page of ListMultipartUploads before encoding.
#[derive(Debug, Default)]
struct UploadsPage {
    uploads: Vec<UploadInfo>,
    prefixes: Vec<String>,
    truncated: bool,
    next_key: Option<String>,
    next_id: Option<String>,
}

/// Pages through uploads sorted by key then initiation, as S3 does: after `key_marker` (and,
/// for that key, after `id_marker`), grouping keys by `delimiter` into common prefixes, each
/// prefix counting once toward `max`.
fn page_uploads(
    all: Vec<UploadInfo>,
    prefix: &str,
    delimiter: Option<&str>,
    key_marker: Option<&str>,
    id_marker: Option<&str>,
    max: usize,
) -> UploadsPage {
    let mut page = UploadsPage::default();
    // Where the id marker sits among the marker key's uploads, if it still exists.
    let marker_pos = match (key_marker, id_marker) {
        (Some(k), Some(i)) => all.iter().position(|u| u.record.key == k && u.id == i),
        _ => None,
    };
    let mut last: Option<(String, Option<String>)> = None;
    for (pos, u) in all.into_iter().enumerate() {
        let key = u.record.key.as_str();
        if !key.starts_with(prefix) {
            continue;
        }
        if let Some(km) = key_marker {
            let after = match (key.cmp(km), id_marker) {
                (std::cmp::Ordering::Greater, _) => true,
                (std::cmp::Ordering::Equal, Some(im)) => match marker_pos {
                    Some(mp) => pos > mp,
                    // The marker upload is gone: fall back to S3's documented id order.
                    None => u.id.as_str() > im,
                },
                _ => false,
            };
            if !after {
                continue;
            }
        }
        let common = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|i| key[..prefix.len() + i + d.len()].to_owned())
        });
        if let Some(cp) = &common {
            // A prefix already returned on this page or the previous one (the marker) is not repeated.
            if page.prefixes.last() == Some(cp) || key_marker == Some(cp.as_str()) {
                continue;
            }
        }
        if page.uploads.len() + page.prefixes.len() >= max {
            page.truncated = true;
            break;
        }
        match common {
            Some(cp) => {
                last = Some((cp.clone(), None));
                page.prefixes.push(cp);
            }
            None => {
                last = Some((u.record.key.clone(), Some(u.id.clone())));
                page.uploads.push(u);
            }
        }
    }
    if page.truncated {
        (page.next_key, page.next_id) = last.map_or((None, None), |(k, i)| (Some(k), i));
    }
    page
}

/// ListMultipartUploads.
pub(crate) async fn list_multipart_uploads(
    gw: &Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let max = input.max_uploads.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE) as usize;
    let (store, bucket) = (gw.store.clone(), input.bucket.clone());
    let all = blocking(move || {
        store.bucket_fd(&bucket)?;
        store.list_uploads(&bucket)
    })
    .await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let key_marker = input.key_marker.as_deref().filter(|k| !k.is_empty());
    // S3 ignores the upload id marker without a key marker.
    let id_marker = input
        .upload_id_marker
        .as_deref()
        .filter(|_| key_marker.is_some());
    let page = page_uploads(
        all,
        &prefix,
        input.delimiter.as_deref(),
        key_marker,
        id_marker,
        max,
    );

    let url = input
        .encoding_type
        .as_ref()
        .is_some_and(|e| e.as_str() == EncodingType::URL);
    let enc = |s: String| {
        if url {
            utf8_percent_encode(&s, URL_SAFE).to_string()
        } else {
            s
        }
    };
    let uploads = page
        .uploads
        .into_iter()
        .map(|u| {
            let (initiator, owner) = owner_of(&u.record);
            MultipartUpload {
                checksum_algorithm: algorithm_of(&u.record),
                checksum_type: u.record.checksum_type.clone().map(ChecksumType::from),
                initiated: Some(timestamp(u.record.initiated())),
                initiator: Some(initiator),
                owner: Some(owner),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                key: Some(enc(u.record.key)),
                upload_id: Some(u.id),
            }
        })
        .collect();
    let common_prefixes = page
        .prefixes
        .into_iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc(p)),
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: Some(enc(prefix)),
        delimiter: input.delimiter.map(enc),
        key_marker: Some(enc(input.key_marker.unwrap_or_default())),
        upload_id_marker: Some(input.upload_id_marker.unwrap_or_default()),
        next_key_marker: page.next_key.map(enc),
        next_upload_id_marker: page.next_id,
        max_uploads: Some(max as i32),
        is_truncated: Some(page.truncated),
        uploads: Some(uploads),
        common_prefixes: Some(common_prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use bytes::Bytes;
    use md5::{Digest, Md5};
    use s3s::dto::*;
    use s3s::{S3ErrorCode, S3Request, S3Result};

    use super::*;
    use crate::store::keys::parse_key;
    use crate::store::meta::ObjectMeta;
    use crate::store::{Commit, Store};

    const MIB: usize = 1024 * 1024;

    fn gateway() -> (tempfile::TempDir, Gateway) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_bucket("bkt").unwrap();
        (dir, Gateway::new(Arc::new(store), "us-east-1".into()))
    }

    fn req<T>(input: T) -> S3Request<T> {
        S3Request {
            input,
            method: http::Method::POST,
            uri: http::Uri::from_static("/"),
            headers: HeaderMap::new(),
            extensions: http::Extensions::new(),
            credentials: None,
            region: None,
            service: None,
            trailing_headers: None,
        }
    }

    /// Distinct, position-dependent bytes, so misordered or misplaced copies show.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8 ^ seed)
            .collect()
    }

    fn md5_hex(b: &[u8]) -> String {
        hex::encode(Md5::digest(b))
    }

    /// The multipart ETag computed independently of the gateway's helper.
    fn expected_etag(parts: &[&[u8]]) -> String {
        let mut cat = Vec::new();
        for p in parts {
            cat.extend_from_slice(&Md5::digest(p));
        }
        format!("{}-{}", hex::encode(Md5::digest(&cat)), parts.len())
    }

    fn body(bytes: Vec<u8>) -> Option<StreamingBlob> {
        // Several chunks, as a network body would arrive.
        let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(300_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Some(StreamingBlob::wrap(futures::stream::iter(chunks)))
    }

    async fn create(gw: &Gateway, key: &str) -> String {
        let input = CreateMultipartUploadInput {
            bucket: "bkt".into(),
            key: key.into(),
            content_type: Some("video/mp4".into()),
            metadata: Some(
                [("Origin".to_owned(), "camera".to_owned())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        };
        create_multipart_upload(gw, req(input))
            .await
            .unwrap()
            .output
            .upload_id
            .unwrap()
    }

    async fn upload(gw: &Gateway, key: &str, id: &str, n: i32, bytes: Vec<u8>) -> S3Result<String> {
        let input = UploadPartInput {
            bucket: "bkt".into(),
            key: key.into(),
            upload_id: id.into(),
            part_number: n,
            content_length: Some(bytes.len() as i64),
            body: body(bytes),
            ..Default::default()
        };
        let out = upload_part(gw, req(input)).await?;
        Ok(out.output.e_tag.unwrap().value().to_owned())
    }

    async fn complete(
        gw: &Gateway,
        key: &str,
        id: &str,
        parts: &[(i32, &str)],
    ) -> S3Result<CompleteMultipartUploadOutput> {
        let parts = parts
            .iter()
            .map(|(n, e)| CompletedPart {
                part_number: Some(*n),
                e_tag: Some(ETag::Strong((*e).to_owned())),
                ..Default::default()
            })
            .collect();
        let input = CompleteMultipartUploadInput {
            bucket: "bkt".into(),
            key: key.into(),
            upload_id: id.into(),
            multipart_upload: Some(CompletedMultipartUpload { parts: Some(parts) }),
            ..Default::default()
        };
        Ok(complete_multipart_upload(gw, req(input)).await?.output)
    }

    async fn parts_of(
        gw: &Gateway,
        key: &str,
        id: &str,
        max: Option<i32>,
        marker: Option<i32>,
    ) -> S3Result<ListPartsOutput> {
        let input = ListPartsInput {
            bucket: "bkt".into(),
            key: key.into(),
            upload_id: id.into(),
            max_parts: max,
            part_number_marker: marker,
            ..Default::default()
        };
        Ok(list_parts(gw, req(input)).await?.output)
    }

    fn read_object(gw: &Gateway, key: &str) -> (Vec<u8>, ObjectMeta) {
        let mut obj = gw
            .store
            .open_object("bkt", &parse_key(key).unwrap())
            .unwrap();
        let mut buf = Vec::new();
        obj.file.read_to_end(&mut buf).unwrap();
        (buf, obj.meta)
    }

    fn put_object(gw: &Gateway, key: &str, bytes: &[u8]) {
        use std::io::Write;
        let mut tmp = gw.store.create_temp("bkt").unwrap();
        tmp.file.write_all(bytes).unwrap();
        let meta = ObjectMeta {
            etag: md5_hex(bytes),
            ..Default::default()
        };
        gw.store
            .commit(tmp, "bkt", &parse_key(key).unwrap(), meta, Commit::Replace)
            .unwrap();
    }

    fn code<T>(r: S3Result<T>) -> S3ErrorCode {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.code().clone(),
        }
    }

    #[tokio::test]
    async fn three_parts_complete_into_their_concatenation() {
        let (_d, gw) = gateway();
        let id = create(&gw, "videos/cat.mp4").await;
        let (p1, p2, p3) = (pattern(5 * MIB, 1), pattern(5 * MIB, 2), pattern(1024, 3));
        // Upload out of order: the part numbers, not arrival, decide the layout.
        let e3 = upload(&gw, "videos/cat.mp4", &id, 3, p3.clone())
            .await
            .unwrap();
        let e1 = upload(&gw, "videos/cat.mp4", &id, 1, p1.clone())
            .await
            .unwrap();
        let e2 = upload(&gw, "videos/cat.mp4", &id, 2, p2.clone())
            .await
            .unwrap();
        assert_eq!(e1, md5_hex(&p1));
        let out = complete(
            &gw,
            "videos/cat.mp4",
            &id,
            &[(1, &e1), (2, &format!("\"{e2}\"")), (3, &e3)],
        )
        .await
        .unwrap();
        let want = expected_etag(&[&p1, &p2, &p3]);
        assert_eq!(out.e_tag.unwrap().value(), want);
        assert_eq!(out.location.as_deref(), Some("/bkt/videos/cat.mp4"));
        assert_eq!(out.key.as_deref(), Some("videos/cat.mp4"));
        let (bytes, meta) = read_object(&gw, "videos/cat.mp4");
        assert_eq!(bytes.len(), p1.len() + p2.len() + p3.len());
        assert!(bytes == [p1, p2, p3].concat());
        assert_eq!(meta.etag, want);
        assert_eq!(meta.parts, Some(3));
        assert_eq!(meta.content_type.as_deref(), Some("video/mp4"));
        assert_eq!(meta.user.get("origin").map(String::as_str), Some("camera"));
        // The upload is gone once completed.
        assert_eq!(
            code(parts_of(&gw, "videos/cat.mp4", &id, None, None).await),
            S3ErrorCode::NoSuchUpload
        );
        assert!(gw.store.list_uploads("bkt").unwrap().is_empty());
    }

    fn assembly_ino(gw: &Gateway, id: &str) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = gw
            .store
            .internal_dir()
            .join("multipart")
            .join(id)
            .join("object");
        std::fs::metadata(path).ok().map(|m| m.ino())
    }

    fn object_ino(gw: &Gateway, key: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(gw.store.root().join("bkt").join(key))
            .unwrap()
            .ino()
    }

    #[tokio::test]
    async fn equal_parts_are_written_in_place_and_the_assembly_becomes_the_object() {
        let (_d, gw) = gateway();
        let id = create(&gw, "in-place").await;
        let parts: Vec<Vec<u8>> = (1..=4u8)
            .map(|i| pattern(if i == 4 { 3 * MIB + 7 } else { 5 * MIB }, i))
            .collect();
        // Arrival order is not part order: part 2 fixes the stride here.
        let mut etags = vec![String::new(); 4];
        for n in [2usize, 1, 4, 3] {
            etags[n - 1] = upload(&gw, "in-place", &id, n as i32, parts[n - 1].clone())
                .await
                .unwrap();
        }
        let staged = gw.store.list_parts(&id).unwrap();
        assert_eq!(
            staged.iter().map(|p| p.number).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(staged[3].size, 3 * MIB as u64 + 7);
        let ino = assembly_ino(&gw, &id).expect("parts were written into the assembly file");
        let listed: Vec<(i32, &str)> = etags
            .iter()
            .enumerate()
            .map(|(i, e)| (i as i32 + 1, e.as_str()))
            .collect();
        let out = complete(&gw, "in-place", &id, &listed).await.unwrap();
        let want: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(out.e_tag.unwrap().value(), expected_etag(&want));
        // Nothing was copied: the assembly file itself was renamed into the bucket.
        assert_eq!(object_ino(&gw, "in-place"), ino);
        assert!(read_object(&gw, "in-place").0 == parts.concat());
    }

    #[tokio::test]
    async fn parts_that_do_not_line_up_with_their_slots_are_copied() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        let (p1, p2, p3) = (
            pattern(5 * MIB, 1),
            pattern(5 * MIB, 2),
            pattern(5 * MIB, 3),
        );
        let e1 = upload(&gw, "k", &id, 1, p1.clone()).await.unwrap();
        let e2 = upload(&gw, "k", &id, 2, p2.clone()).await.unwrap();
        let e3 = upload(&gw, "k", &id, 3, p3.clone()).await.unwrap();
        // A rejected completion changes nothing...
        assert_eq!(
            code(complete(&gw, "k", &id, &[(1, &e1), (3, &e2)]).await),
            S3ErrorCode::InvalidPart
        );
        // ...and leaving out part 2 moves part 3 to where part 2's slot is.
        complete(&gw, "k", &id, &[(1, &e1), (3, &e3)])
            .await
            .unwrap();
        assert!(read_object(&gw, "k").0 == [p1, p3].concat());
    }

    #[tokio::test]
    async fn reuploaded_and_oversized_parts_go_to_their_own_files() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        let (p1, p2) = (pattern(5 * MIB, 1), pattern(5 * MIB, 2));
        let e1 = upload(&gw, "k", &id, 1, p1.clone()).await.unwrap();
        let _ = upload(&gw, "k", &id, 2, p2.clone()).await.unwrap();
        // A second upload of part 2 must not touch the first one's bytes until it has
        // succeeded; one larger than the stride cannot fit in a slot at all.
        let p2b = pattern(6 * MIB, 9);
        let e2b = upload(&gw, "k", &id, 2, p2b.clone()).await.unwrap();
        let p3 = pattern(5 * MIB + 1, 3);
        let e3 = upload(&gw, "k", &id, 3, p3.clone()).await.unwrap();
        complete(&gw, "k", &id, &[(1, &e1), (2, &e2b), (3, &e3)])
            .await
            .unwrap();
        assert!(read_object(&gw, "k").0 == [p1, p2b, p3].concat());
    }

    #[tokio::test]
    async fn a_failed_in_place_part_leaves_no_record_and_its_retry_succeeds() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        let p1 = pattern(5 * MIB, 1);
        let e1 = upload(&gw, "k", &id, 1, p1.clone()).await.unwrap();
        // The body stops short of its Content-Length.
        let p2 = pattern(5 * MIB, 2);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::copy_from_slice(&p2[..MIB])),
            Err(std::io::Error::other("connection reset")),
        ];
        let input = UploadPartInput {
            bucket: "bkt".into(),
            key: "k".into(),
            upload_id: id.clone(),
            part_number: 2,
            content_length: Some(p2.len() as i64),
            body: Some(StreamingBlob::wrap(futures::stream::iter(chunks))),
            ..Default::default()
        };
        assert!(upload_part(&gw, req(input)).await.is_err());
        let staged = gw.store.list_parts(&id).unwrap();
        assert_eq!(staged.iter().map(|p| p.number).collect::<Vec<_>>(), [1]);
        let e2 = upload(&gw, "k", &id, 2, p2.clone()).await.unwrap();
        complete(&gw, "k", &id, &[(1, &e1), (2, &e2)])
            .await
            .unwrap();
        assert!(read_object(&gw, "k").0 == [p1, p2].concat());
    }

    #[tokio::test]
    async fn small_middle_part_is_rejected_and_the_upload_survives() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        let (p1, small, p3) = (pattern(5 * MIB, 1), pattern(1024, 2), pattern(10, 3));
        let e1 = upload(&gw, "k", &id, 1, p1.clone()).await.unwrap();
        let e2 = upload(&gw, "k", &id, 2, small).await.unwrap();
        let e3 = upload(&gw, "k", &id, 3, p3.clone()).await.unwrap();
        let err = complete(&gw, "k", &id, &[(1, &e1), (2, &e2), (3, &e3)]).await;
        assert_eq!(code(err), S3ErrorCode::EntityTooSmall);
        assert!(
            gw.store
                .open_object("bkt", &parse_key("k").unwrap())
                .is_err(),
            "nothing may be written"
        );
        assert_eq!(
            parts_of(&gw, "k", &id, None, None)
                .await
                .unwrap()
                .parts
                .unwrap()
                .len(),
            3
        );
        // Fix the part (re-upload replaces it) and complete.
        let p2 = pattern(5 * MIB, 4);
        let e2 = upload(&gw, "k", &id, 2, p2.clone()).await.unwrap();
        let out = complete(&gw, "k", &id, &[(1, &e1), (2, &e2), (3, &e3)])
            .await
            .unwrap();
        assert_eq!(out.e_tag.unwrap().value(), expected_etag(&[&p1, &p2, &p3]));
        assert!(read_object(&gw, "k").0 == [p1, p2, p3].concat());
    }

    #[tokio::test]
    async fn wrong_or_missing_parts_are_invalid_part() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        let e1 = upload(&gw, "k", &id, 1, b"one".to_vec()).await.unwrap();
        assert_eq!(
            code(complete(&gw, "k", &id, &[(1, &md5_hex(b"other"))]).await),
            S3ErrorCode::InvalidPart
        );
        assert_eq!(
            code(complete(&gw, "k", &id, &[(1, &e1), (2, &e1)]).await),
            S3ErrorCode::InvalidPart
        );
        assert_eq!(
            code(complete(&gw, "k", &id, &[(0, &e1)]).await),
            S3ErrorCode::InvalidPart
        );
        assert_eq!(
            code(complete(&gw, "k", &id, &[]).await),
            S3ErrorCode::MalformedXML
        );
        // Still intact and completable; unlisted parts would simply be dropped.
        let out = complete(&gw, "k", &id, &[(1, &e1)]).await.unwrap();
        assert_eq!(out.e_tag.unwrap().value(), expected_etag(&[b"one"]));
        assert_eq!(read_object(&gw, "k").0, b"one");
    }

    #[tokio::test]
    async fn parts_out_of_order_are_invalid_part_order() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        let e1 = upload(&gw, "k", &id, 1, pattern(5 * MIB, 1)).await.unwrap();
        let e2 = upload(&gw, "k", &id, 2, b"two".to_vec()).await.unwrap();
        assert_eq!(
            code(complete(&gw, "k", &id, &[(2, &e2), (1, &e1)]).await),
            S3ErrorCode::InvalidPartOrder
        );
        assert_eq!(
            code(complete(&gw, "k", &id, &[(1, &e1), (1, &e1)]).await),
            S3ErrorCode::InvalidPartOrder
        );
        assert_eq!(
            parts_of(&gw, "k", &id, None, None)
                .await
                .unwrap()
                .parts
                .unwrap()
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn reuploading_a_part_replaces_it() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        let old = upload(&gw, "k", &id, 1, b"aaa".to_vec()).await.unwrap();
        let new = upload(&gw, "k", &id, 1, b"bbbb".to_vec()).await.unwrap();
        let parts = parts_of(&gw, "k", &id, None, None)
            .await
            .unwrap()
            .parts
            .unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].size, Some(4));
        assert_eq!(parts[0].e_tag.as_ref().unwrap().value(), md5_hex(b"bbbb"));
        assert_eq!(
            code(complete(&gw, "k", &id, &[(1, &old)]).await),
            S3ErrorCode::InvalidPart
        );
        complete(&gw, "k", &id, &[(1, &new)]).await.unwrap();
        assert_eq!(read_object(&gw, "k").0, b"bbbb");
    }

    #[tokio::test]
    async fn aborted_and_unknown_uploads_are_no_such_upload() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        upload(&gw, "k", &id, 1, b"x".to_vec()).await.unwrap();
        // An upload belongs to its bucket and key.
        assert_eq!(
            code(upload(&gw, "other", &id, 1, b"x".to_vec()).await),
            S3ErrorCode::NoSuchUpload
        );
        assert_eq!(
            code(upload(&gw, "k", "../../../etc", 1, b"x".to_vec()).await),
            S3ErrorCode::NoSuchUpload
        );
        let abort = |id: String| {
            let gw = gw.clone();
            async move {
                let input = AbortMultipartUploadInput {
                    bucket: "bkt".into(),
                    key: "k".into(),
                    upload_id: id,
                    ..Default::default()
                };
                abort_multipart_upload(&gw, req(input)).await
            }
        };
        abort(id.clone()).await.unwrap();
        assert_eq!(code(abort(id.clone()).await), S3ErrorCode::NoSuchUpload);
        assert_eq!(
            code(upload(&gw, "k", &id, 2, b"y".to_vec()).await),
            S3ErrorCode::NoSuchUpload
        );
        assert_eq!(
            code(parts_of(&gw, "k", &id, None, None).await),
            S3ErrorCode::NoSuchUpload
        );
        assert_eq!(
            code(complete(&gw, "k", &id, &[(1, &md5_hex(b"x"))]).await),
            S3ErrorCode::NoSuchUpload
        );
        assert!(gw.store.list_uploads("bkt").unwrap().is_empty());
        let input = CreateMultipartUploadInput {
            bucket: "missing".into(),
            key: "k".into(),
            ..Default::default()
        };
        assert_eq!(
            code(create_multipart_upload(&gw, req(input)).await),
            S3ErrorCode::NoSuchBucket
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_completions_commit_once() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        let e1 = upload(&gw, "k", &id, 1, pattern(5 * MIB, 1)).await.unwrap();
        let e2 = upload(&gw, "k", &id, 2, b"tail".to_vec()).await.unwrap();
        let parts = [(1, e1.as_str()), (2, e2.as_str())];
        let (a, b) = tokio::join!(
            complete(&gw, "k", &id, &parts),
            complete(&gw, "k", &id, &parts)
        );
        let codes: Vec<_> = [a, b]
            .into_iter()
            .map(|r| r.err().map(|e| e.code().clone()))
            .collect();
        assert!(codes.contains(&None), "one completion succeeds: {codes:?}");
        assert!(
            codes.contains(&Some(S3ErrorCode::NoSuchUpload)),
            "the other finds the upload gone: {codes:?}"
        );
        assert_eq!(read_object(&gw, "k").0.len(), 5 * MIB + 4);
    }

    #[tokio::test]
    async fn part_numbers_outside_1_to_10000_are_invalid_argument() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        for n in [0, -1, 10_001] {
            assert_eq!(
                code(upload(&gw, "k", &id, n, b"x".to_vec()).await),
                S3ErrorCode::InvalidArgument
            );
        }
        upload(&gw, "k", &id, 10_000, b"x".to_vec()).await.unwrap();
    }

    #[tokio::test]
    async fn list_parts_pages_with_markers() {
        let (_d, gw) = gateway();
        let id = create(&gw, "k").await;
        for n in [5, 1, 3, 2, 4] {
            upload(&gw, "k", &id, n, vec![n as u8; n as usize])
                .await
                .unwrap();
        }
        let numbers = |o: &ListPartsOutput| {
            o.parts
                .as_ref()
                .unwrap()
                .iter()
                .map(|p| p.part_number.unwrap())
                .collect::<Vec<_>>()
        };
        let p = parts_of(&gw, "k", &id, Some(2), None).await.unwrap();
        assert_eq!(numbers(&p), vec![1, 2]);
        assert_eq!(
            (p.is_truncated, p.next_part_number_marker),
            (Some(true), Some(2))
        );
        assert_eq!(p.parts.as_ref().unwrap()[1].size, Some(2));
        let p = parts_of(&gw, "k", &id, Some(2), Some(2)).await.unwrap();
        assert_eq!(numbers(&p), vec![3, 4]);
        assert_eq!(
            (p.is_truncated, p.next_part_number_marker),
            (Some(true), Some(4))
        );
        let p = parts_of(&gw, "k", &id, Some(2), Some(4)).await.unwrap();
        assert_eq!(numbers(&p), vec![5]);
        assert_eq!(
            (p.is_truncated, p.next_part_number_marker),
            (Some(false), None)
        );
        let p = parts_of(&gw, "k", &id, None, None).await.unwrap();
        assert_eq!(numbers(&p), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            p.storage_class.as_ref().map(|s| s.as_str()),
            Some("STANDARD")
        );
    }

    #[tokio::test]
    async fn upload_part_copy_takes_ranges_of_an_object() {
        let (_d, gw) = gateway();
        let src = pattern(6 * MIB + 123, 9);
        put_object(&gw, "src.bin", &src);
        let id = create(&gw, "dst.bin").await;
        let copy = |n: i32, range: Option<&str>, if_match: Option<&str>| {
            let input = UploadPartCopyInput {
                bucket: "bkt".into(),
                key: "dst.bin".into(),
                upload_id: id.clone(),
                part_number: n,
                copy_source: CopySource::Bucket {
                    bucket: "bkt".into(),
                    key: "src.bin".into(),
                    version_id: None,
                },
                copy_source_range: range.map(str::to_owned),
                copy_source_if_match: if_match
                    .map(|e| ETagCondition::ETag(ETag::Strong(e.to_owned()))),
                copy_source_if_modified_since: None,
                copy_source_if_none_match: None,
                copy_source_if_unmodified_since: None,
                copy_source_sse_customer_algorithm: None,
                copy_source_sse_customer_key: None,
                copy_source_sse_customer_key_md5: None,
                expected_bucket_owner: None,
                expected_source_bucket_owner: None,
                request_payer: None,
                sse_customer_algorithm: None,
                sse_customer_key: None,
                sse_customer_key_md5: None,
            };
            let gw = gw.clone();
            async move {
                upload_part_copy(&gw, req(input))
                    .await
                    .map(|r| r.output.copy_part_result.unwrap())
            }
        };
        let split = 5 * MIB;
        let r1 = copy(
            1,
            Some(&format!("bytes=0-{}", split - 1)),
            Some(&md5_hex(&src)),
        )
        .await
        .unwrap();
        let r2 = copy(2, Some(&format!("bytes={}-{}", split, src.len() - 1)), None)
            .await
            .unwrap();
        let (e1, e2) = (
            r1.e_tag.unwrap().value().to_owned(),
            r2.e_tag.unwrap().value().to_owned(),
        );
        assert_eq!(e1, md5_hex(&src[..split]));
        assert_eq!(e2, md5_hex(&src[split..]));
        assert!(r1.last_modified.is_some());
        // Ranges past the end, malformed ranges and failed conditions change nothing.
        let past = format!("bytes=0-{}", src.len());
        assert_eq!(
            code(copy(3, Some(&past), None).await),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(copy(3, Some("bytes=10-"), None).await),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(copy(3, Some("bytes=9-1"), None).await),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(copy(3, None, Some(&md5_hex(b"nope"))).await),
            S3ErrorCode::PreconditionFailed
        );
        assert_eq!(
            parts_of(&gw, "dst.bin", &id, None, None)
                .await
                .unwrap()
                .parts
                .unwrap()
                .len(),
            2
        );
        let out = complete(&gw, "dst.bin", &id, &[(1, &e1), (2, &e2)])
            .await
            .unwrap();
        assert_eq!(
            out.e_tag.unwrap().value(),
            expected_etag(&[&src[..split], &src[split..]])
        );
        assert!(read_object(&gw, "dst.bin").0 == src);
    }

    #[tokio::test]
    async fn if_none_match_star_refuses_an_existing_key_and_keeps_the_upload() {
        let (_d, gw) = gateway();
        put_object(&gw, "k", b"existing");
        let id = create(&gw, "k").await;
        let e1 = upload(&gw, "k", &id, 1, b"new".to_vec()).await.unwrap();
        let parts = vec![CompletedPart {
            part_number: Some(1),
            e_tag: Some(ETag::Strong(e1)),
            ..Default::default()
        }];
        let input = CompleteMultipartUploadInput {
            bucket: "bkt".into(),
            key: "k".into(),
            upload_id: id.clone(),
            multipart_upload: Some(CompletedMultipartUpload { parts: Some(parts) }),
            if_none_match: Some(ETagCondition::Any),
            ..Default::default()
        };
        assert_eq!(
            code(complete_multipart_upload(&gw, req(input)).await),
            S3ErrorCode::PreconditionFailed
        );
        assert_eq!(read_object(&gw, "k").0, b"existing");
        assert_eq!(
            parts_of(&gw, "k", &id, None, None)
                .await
                .unwrap()
                .parts
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn checksum_algorithm_gives_part_and_composite_checksums() {
        let (_d, gw) = gateway();
        let input = CreateMultipartUploadInput {
            bucket: "bkt".into(),
            key: "k".into(),
            checksum_algorithm: Some(ChecksumAlgorithm::from_static(ChecksumAlgorithm::CRC32)),
            ..Default::default()
        };
        let out = create_multipart_upload(&gw, req(input))
            .await
            .unwrap()
            .output;
        assert_eq!(
            out.checksum_algorithm.as_ref().map(|a| a.as_str()),
            Some("CRC32")
        );
        let id = out.upload_id.unwrap();
        let e1 = upload(&gw, "k", &id, 1, b"hello".to_vec()).await.unwrap();
        let parts = parts_of(&gw, "k", &id, None, None)
            .await
            .unwrap()
            .parts
            .unwrap();
        // CRC32 of "hello" is 0x3610a686.
        let crc = B64.encode(0x3610a686u32.to_be_bytes());
        assert_eq!(parts[0].checksum_crc32.as_deref(), Some(crc.as_str()));
        // A checksum in the part list that contradicts the stored one is an invalid part.
        let listed = |sum: &str| CompletedPart {
            part_number: Some(1),
            e_tag: Some(ETag::Strong(e1.clone())),
            checksum_crc32: Some(sum.to_owned()),
            ..Default::default()
        };
        let input = |sum: &str| CompleteMultipartUploadInput {
            bucket: "bkt".into(),
            key: "k".into(),
            upload_id: id.clone(),
            multipart_upload: Some(CompletedMultipartUpload {
                parts: Some(vec![listed(sum)]),
            }),
            ..Default::default()
        };
        let wrong = B64.encode(1u32.to_be_bytes());
        assert_eq!(
            code(complete_multipart_upload(&gw, req(input(&wrong))).await),
            S3ErrorCode::InvalidPart
        );
        let out = complete_multipart_upload(&gw, req(input(&crc)))
            .await
            .unwrap()
            .output;
        assert!(
            out.checksum_crc32
                .as_deref()
                .is_some_and(|c| c.ends_with("-1")),
            "{:?}",
            out.checksum_crc32
        );
        assert_eq!(read_object(&gw, "k").1.checksums.crc32, out.checksum_crc32);
    }

    #[tokio::test]
    async fn list_multipart_uploads_groups_and_pages() {
        let (_d, gw) = gateway();
        for key in ["a/1", "a/2", "c"] {
            create(&gw, key).await;
        }
        let b_first = create(&gw, "b").await;
        let b_second = create(&gw, "b").await;
        let list = |key_marker: Option<&str>, id_marker: Option<&str>, max: Option<i32>| {
            let input = ListMultipartUploadsInput {
                bucket: "bkt".into(),
                delimiter: Some("/".into()),
                key_marker: key_marker.map(str::to_owned),
                upload_id_marker: id_marker.map(str::to_owned),
                max_uploads: max,
                ..Default::default()
            };
            let gw = gw.clone();
            async move {
                list_multipart_uploads(&gw, req(input))
                    .await
                    .unwrap()
                    .output
            }
        };
        let ids = |o: &ListMultipartUploadsOutput| {
            o.uploads
                .as_ref()
                .unwrap()
                .iter()
                .map(|u| (u.key.clone().unwrap(), u.upload_id.clone().unwrap()))
                .collect::<Vec<_>>()
        };
        let prefixes = |o: &ListMultipartUploadsOutput| {
            o.common_prefixes
                .as_ref()
                .unwrap()
                .iter()
                .map(|p| p.prefix.clone().unwrap())
                .collect::<Vec<_>>()
        };

        let all = list(None, None, None).await;
        assert_eq!(prefixes(&all), vec!["a/"]);
        assert_eq!(
            ids(&all)
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            vec!["b", "b", "c"]
        );
        assert_eq!(ids(&all)[0].1, b_first, "same key: oldest first");
        assert_eq!(all.is_truncated, Some(false));

        let p1 = list(None, None, Some(2)).await;
        assert_eq!(prefixes(&p1), vec!["a/"]);
        assert_eq!(ids(&p1), vec![("b".to_owned(), b_first.clone())]);
        assert_eq!(p1.is_truncated, Some(true));
        assert_eq!(
            (
                p1.next_key_marker.as_deref(),
                p1.next_upload_id_marker.as_deref()
            ),
            (Some("b"), Some(b_first.as_str()))
        );
        let p2 = list(Some("b"), Some(&b_first), Some(2)).await;
        assert!(prefixes(&p2).is_empty());
        assert_eq!(
            ids(&p2).iter().map(|(_, i)| i.as_str()).collect::<Vec<_>>(),
            vec![b_second.as_str(), &ids(&all)[2].1]
        );
        assert_eq!(p2.is_truncated, Some(false));
        // A page ending on a prefix continues after it.
        let p = list(None, None, Some(1)).await;
        assert_eq!(
            (prefixes(&p), p.next_key_marker.as_deref()),
            (vec!["a/".to_owned()], Some("a/"))
        );
        let p = list(Some("a/"), None, Some(1)).await;
        assert_eq!(ids(&p), vec![("b".to_owned(), b_first)]);
    }
}
