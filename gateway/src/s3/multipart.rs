//! Multipart uploads: CreateMultipartUpload, UploadPart, CompleteMultipartUpload and
//! AbortMultipartUpload. UploadPartCopy lives with the other copies (`copy.rs`), ListParts and
//! ListMultipartUploads with the other listings (`list.rs`); the staging itself is the store's
//! (`store/multipart/`).
//!
//! Completion checks the whole part list here, against what the store has staged, before
//! anything is touched, so a rejected CompleteMultipartUpload leaves the upload as it was and
//! the client can fix and retry.

use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use http::HeaderMap;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::acl::{acl_headers, write_acl};
use super::checksum::{
    Expect, check_complete, checksum_fields, checksums_agree, multipart_checksums,
    stored_from_request, upload_checksum_type,
};
use super::lock::{WriteLock, apply_on_write};
use super::put::{WriteHeaders, admit, declared_len, write_precondition};
use super::receive::{Dest, Landed, discard_body, receive_body};
use super::{Gateway, RequestError, RequestResult, blocking, object_path, url_encode};
use crate::store::StoreError;
use crate::store::meta::{PartSizes, StoredChecksums};
use crate::store::multipart::{MAX_PART_NUMBER, MIN_PART_SIZE, PartInfo, Staged, UploadRecord};

/// Assemblies larger than this answer at once and keep the connection alive with whitespace
/// until done (s3s's `future` field), so clients with a read timeout do not give up on them.
const KEEPALIVE_ABOVE: u64 = 1 << 30;

/// A part number as UploadPart and UploadPartCopy accept it (1..=10000).
pub(crate) fn part_number(n: i32) -> RequestResult<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            RequestError::InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive".into(),
            )
        })
}

/// A part's ETag as S3 returns it.
pub(crate) fn part_etag(part: &PartInfo) -> ETag {
    ETag::Strong(part.etag.clone())
}

/// The checksum algorithm an upload was created with.
pub(crate) fn algorithm_of(record: &UploadRecord) -> Option<ChecksumAlgorithm> {
    record
        .checksum_algorithm
        .clone()
        .map(ChecksumAlgorithm::from)
}

/// A part as CompleteMultipartUpload lists it.
struct RequestedPart {
    /// Part number as sent.
    number: i32,
    /// ETag as sent, without quotes.
    etag: String,
    /// Checksums as sent (only those present are compared).
    checksums: StoredChecksums,
}

/// Checks a CompleteMultipartUpload part list against the staged parts, in S3's order:
/// ascending part numbers, then each part in range, uploaded, with the ETag and checksums it
/// was uploaded with, then every part but the last at least 5 MiB. Returns the part numbers.
fn check_parts(requested: &[RequestedPart], staged: &Staged) -> RequestResult<Vec<u32>> {
    if requested.windows(2).any(|w| w[0].number >= w[1].number) {
        return Err(RequestError::InvalidPartOrder);
    }
    let mut parts: Vec<&PartInfo> = Vec::with_capacity(requested.len());
    for want in requested {
        let number = u32::try_from(want.number)
            .ok()
            .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
            .ok_or_else(|| {
                RequestError::InvalidPart(format!("part number {} is out of range", want.number))
            })?;
        let info = staged
            .part(number)
            .ok_or_else(|| RequestError::InvalidPart(format!("part {number} was not uploaded")))?;
        if !info.etag.eq_ignore_ascii_case(&want.etag) {
            return Err(RequestError::InvalidPart(format!(
                "the ETag of part {number} does not match"
            )));
        }
        if !checksums_agree(&want.checksums, &info.checksums) {
            return Err(RequestError::InvalidPart(format!(
                "the checksum of part {number} does not match"
            )));
        }
        parts.push(info);
    }
    if let Some((_, init)) = parts.split_last()
        && let Some(small) = init.iter().find(|p| p.size < MIN_PART_SIZE)
    {
        return Err(RequestError::EntityTooSmall(small.number));
    }
    Ok(parts.iter().map(|p| p.number).collect())
}

fn location(bucket: &str, key: &str) -> String {
    format!("/{bucket}/{}", url_encode(key))
}

/// CreateMultipartUpload.
pub(crate) async fn create_multipart_upload(
    gw: &Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> RequestResult<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    object_path(&input.key)?;
    if let Some(alg) = &input.checksum_algorithm {
        // Rejects algorithms the parts could not be checked with.
        Expect::from_request(None, &HeaderMap::new(), Some(alg))?;
    }
    let checksum_type = upload_checksum_type(
        input.checksum_algorithm.as_ref(),
        input.checksum_type.as_ref(),
    )?;
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
    let mut meta = headers.to_meta();
    meta.tags = super::tagging::from_header(input.tagging.as_deref())?;
    // Kept in the upload's record, so CompleteMultipartUpload gives the object this ACL.
    let acl_asked = acl_headers!(object input);
    meta.acl = write_acl(gw, &input.bucket, acl_asked, &req.extensions).await?;
    let lock = WriteLock::new(
        input.object_lock_mode.as_ref(),
        input.object_lock_retain_until_date.as_ref(),
        input.object_lock_legal_hold_status.as_ref(),
    );
    let mut record = UploadRecord {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        meta,
        checksum_algorithm: input
            .checksum_algorithm
            .as_ref()
            .map(|a| a.as_str().to_ascii_uppercase()),
        checksum_type: checksum_type.as_ref().map(|t| t.as_str().to_owned()),
        initiated_ns,
        initiator: req.credentials.map(|c| c.access_key),
    };
    // An upload started on a full disk could not take a part anyway.
    let _space = admit(gw, Some(&input.bucket), 0).await?;
    let store = gw.store.clone();
    let id = blocking(move || -> RequestResult<_> {
        apply_on_write(&store, &record.bucket, &lock, &mut record.meta)?;
        Ok(store.create_upload(&record)?)
    })
    .await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id),
        checksum_algorithm: input.checksum_algorithm,
        checksum_type,
        ..Default::default()
    }))
}

/// UploadPart: the body is streamed and verified like a PUT, then renamed into the staging folder.
pub(crate) async fn upload_part(
    gw: &Gateway,
    req: S3Request<UploadPartInput>,
) -> RequestResult<S3Response<UploadPartOutput>> {
    let input = req.input;
    let number = part_number(input.part_number)?;
    let (store, bucket, key, id) = (
        gw.store.clone(),
        input.bucket.clone(),
        input.key.clone(),
        input.upload_id.clone(),
    );
    let declared = input.content_length.and_then(|n| u64::try_from(n).ok());
    // Refuse before reading the body: the part must fit above the free-space reserve, the
    // upload must exist. The part goes straight into its place in the object when it can.
    let _space = match admit(gw, Some(&input.bucket), declared_len(input.content_length)).await {
        Ok(claim) => claim,
        Err(e) => {
            discard_body(&req.headers, input.body).await;
            return Err(e);
        }
    };
    let (record, slot) =
        blocking(move || store.begin_part(&bucket, &key, &id, number, declared)).await?;
    // The upload's algorithm is computed whatever the part was sent with: the object's
    // checksum is made of it.
    let expect = Expect::from_request(
        input.content_md5.as_deref(),
        &req.headers,
        input.checksum_algorithm.as_ref(),
    )?
    .also(algorithm_of(&record).as_ref())?;
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

/// CompleteMultipartUpload: validate everything, then concatenate, commit and clean up.
pub(crate) async fn complete_multipart_upload(
    gw: &Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> RequestResult<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let listed = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default();
    if listed.is_empty() {
        return Err(RequestError::MalformedXml(
            "The XML you provided was not well-formed or did not validate against our published schema: it lists no parts",
        ));
    }
    let mut requested = Vec::with_capacity(listed.len());
    for p in &listed {
        let (Some(number), Some(etag)) = (p.part_number, p.e_tag.as_ref()) else {
            return Err(RequestError::MalformedXml(
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
    // The upload stays locked from here until it is finished or `staged` is dropped. One
    // that is gone may have completed moments ago, its answer lost: a retry gets it again.
    let staged = match blocking(move || {
        let staged = store.lock_upload(&bucket, &key, &id);
        match staged {
            Err(StoreError::NoSuchUpload) => match store.completed_upload(&bucket, &key, &id)? {
                Some(done) => Ok(Err(done)),
                None => Err(StoreError::NoSuchUpload),
            },
            other => other.map(Ok),
        }
    })
    .await?
    {
        Ok(staged) => staged,
        Err(done) => {
            let output = complete_output(
                input.bucket,
                input.key,
                done.etag,
                &done.checksums,
                done.version_id,
            );
            return Ok(S3Response::new(output));
        }
    };
    // The object's bytes are in place or copied by the store (which admits the copy); the
    // catalog and the metadata still need room. A retry of a completion that succeeded was
    // answered above: it writes nothing.
    let _space = admit(gw, Some(&input.bucket), 0).await?;
    let numbers = check_parts(&requested, &staged)?;
    let assembly = staged.assemble(&numbers)?;
    let checksums = multipart_checksums(&assembly.record, &assembly.parts);
    let sent = StoredChecksums {
        crc32: input.checksum_crc32,
        crc32c: input.checksum_crc32c,
        crc64nvme: input.checksum_crc64nvme,
        sha1: input.checksum_sha1,
        sha256: input.checksum_sha256,
    };
    check_complete(
        &assembly.record,
        input.checksum_type.as_ref(),
        &sent,
        &checksums,
    )?;
    if let Some(want) = input.mpu_object_size
        && u64::try_from(want).ok() != Some(assembly.size)
    {
        return Err(RequestError::InvalidRequest(format!(
            "x-amz-mp-object-size ({want}) does not match the size of the listed parts ({})",
            assembly.size
        )));
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
    meta.part_sizes = PartSizes::of(assembly.parts.iter().map(|p| p.size));
    meta.checksums = checksums;
    let large = assembly.size > KEEPALIVE_ABOVE;
    let (gw, bucket, key) = (gw.clone(), input.bucket, input.key);
    let finish = async move {
        let store = gw.store.clone();
        let bucket_of_upload = bucket.clone();
        let (meta, version_id) = blocking(move || -> RequestResult<_> {
            let meta = store.finish_upload(assembly, &path, meta, mode)?;
            let version_id = store.version_header(&bucket_of_upload, &meta)?;
            Ok((meta, version_id))
        })
        .await?;
        gw.written(&bucket, &key, &meta).await;
        Ok::<_, RequestError>(complete_output(
            bucket,
            key,
            meta.etag,
            &meta.checksums,
            version_id,
        ))
    };
    if large {
        // The blocking task finishes even if the client goes away meanwhile.
        return Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(async move {
                finish.await.map_err(RequestError::into_s3)
            })),
            ..Default::default()
        }));
    }
    Ok(S3Response::new(finish.await?))
}

/// What CompleteMultipartUpload answers for the object it made (or made before, on a retry).
fn complete_output(
    bucket: String,
    key: String,
    etag: String,
    checksums: &StoredChecksums,
    version_id: Option<String>,
) -> CompleteMultipartUploadOutput {
    let c = checksum_fields(checksums);
    CompleteMultipartUploadOutput {
        location: Some(location(&bucket, &key)),
        e_tag: Some(ETag::Strong(etag)),
        bucket: Some(bucket),
        key: Some(key),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        checksum_type: c.checksum_type,
        version_id,
        ..Default::default()
    }
}

/// AbortMultipartUpload.
pub(crate) async fn abort_multipart_upload(
    gw: &Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> RequestResult<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    let store = gw.store.clone();
    let initiated = input
        .if_match_initiated_time
        .map(|t| time::OffsetDateTime::from(t).unix_timestamp());
    blocking(move || -> RequestResult<()> {
        if let Some(want) = initiated {
            let record = store.open_upload(&input.bucket, &input.key, &input.upload_id)?;
            let have = time::OffsetDateTime::from(record.initiated()).unix_timestamp();
            if have != want {
                return Err(RequestError::PreconditionFailed);
            }
        }
        Ok(store.abort_upload(&input.bucket, &input.key, &input.upload_id)?)
    })
    .await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

#[cfg(test)]
mod tests;
