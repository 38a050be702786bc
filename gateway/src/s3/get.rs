//! GetObject and HeadObject (conditionals, byte ranges and part numbers, streaming bodies) and
//! GetObjectAttributes.

use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::checksum::checksum_fields;
use super::conditional::{OwnedConditions, conditions};
use super::lifecycle::expiration_header;
use super::lock;
use super::media;
use super::{
    Gateway, RequestError, RequestResult, blocking, etag_of, object_path, parse_http_date,
    timestamp,
};
use crate::store::StoreError;
use crate::store::fsutil;
use crate::store::keys::ObjectPath;
use crate::store::meta::{ObjectMeta, PartSizes};
use crate::store::read::file_stream;
use crate::store::versions::Found;
use crate::store::{ObjectHandle, Store};

/// Objects up to this size are read in the same blocking call that opens them: one thread hop
/// per small GET.
const SMALL_OBJECT: u64 = 256 * 1024;

/// What GetObject and HeadObject both ask, taken from either input once by [`read_request!`].
struct ReadRequest {
    bucket: String,
    key: String,
    conds: OwnedConditions,
    range: Option<Range>,
    part_number: Option<i32>,
    /// `x-amz-checksum-mode: ENABLED`: the stored checksums are echoed on whole-object reads.
    checksum_mode: bool,
    /// The `response-*` query parameters: headers the answer carries instead of the stored ones.
    overrides: Overrides,
    /// `versionId`: a version other than the current one.
    version_id: Option<String>,
}

/// `response-content-type` and its siblings: a signed GET or HEAD may set these headers of the
/// answer (a share link downloading under the right file name), as S3 allows.
#[derive(Default)]
struct Overrides {
    content_type: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
}

impl Overrides {
    fn is_empty(&self) -> bool {
        self.content_type.is_none()
            && self.content_disposition.is_none()
            && self.content_encoding.is_none()
            && self.content_language.is_none()
            && self.cache_control.is_none()
            && self.expires.is_none()
    }

    /// S3 refuses the overrides on anonymous requests.
    fn check(&self, signed: bool) -> RequestResult<()> {
        if signed || self.is_empty() {
            Ok(())
        } else {
            Err(RequestError::InvalidRequest(
                "Request specific response headers cannot be used for anonymous GET requests."
                    .into(),
            ))
        }
    }

    /// Applies the overrides to the stored metadata sent with the answer.
    fn apply(self, meta: &mut ObjectMeta) {
        let Overrides {
            content_type,
            content_disposition,
            content_encoding,
            content_language,
            cache_control,
            expires,
        } = self;
        meta.content_type = content_type.or(meta.content_type.take());
        meta.content_disposition = content_disposition.or(meta.content_disposition.take());
        meta.content_encoding = content_encoding.or(meta.content_encoding.take());
        meta.content_language = content_language.or(meta.content_language.take());
        meta.cache_control = cache_control.or(meta.cache_control.take());
        if let Some(t) = expires.as_ref().and_then(super::format_http_date) {
            meta.expires = Some(t);
        }
    }
}

macro_rules! read_request {
    ($input:ident) => {
        ReadRequest {
            bucket: $input.bucket,
            key: $input.key,
            conds: conditions!($input),
            range: $input.range,
            part_number: $input.part_number,
            checksum_mode: $input
                .checksum_mode
                .as_ref()
                .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED),
            overrides: Overrides {
                content_type: $input.response_content_type,
                content_disposition: $input.response_content_disposition,
                content_encoding: $input.response_content_encoding,
                content_language: $input.response_content_language,
                cache_control: $input.response_cache_control,
                expires: $input.response_expires,
            },
            version_id: $input.version_id,
        }
    };
}

/// An object ready to be sent: metadata, the byte range and (for small ones) the bytes.
struct Prepared {
    meta: ObjectMeta,
    size: u64,
    modified: SystemTime,
    range: Option<std::ops::Range<u64>>,
    checksum_mode: bool,
    /// The version id sent back (`x-amz-version-id`).
    version_id: Option<String>,
    /// `x-amz-expiration`, when a lifecycle rule expires the current version.
    expiration: Option<String>,
    /// `x-amz-mp-parts-count`: a multipart object's part count, when a part was asked for.
    parts_count: Option<i32>,
    file: File,
    small: Option<Bytes>,
}

impl Prepared {
    /// Where the bytes sent start, and how many there are.
    fn span(&self) -> (u64, u64) {
        match &self.range {
            Some(r) => (r.start, r.end - r.start),
            None => (0, self.size),
        }
    }

    /// The checksums to echo: stored ones only for a whole object, and only when asked for.
    fn checksums(&self) -> Checksum {
        if self.range.is_none() && self.checksum_mode {
            checksum_fields(&self.meta.checksums)
        } else {
            Checksum::default()
        }
    }
}

/// Builds the output of GetObject or HeadObject (`$out`) from a [`Prepared`] object: the
/// headers both answer with are set here, once for both (as Garage's `object_headers`); the
/// trailing `field: value` pairs add what only one of them has (GET's body).
macro_rules! object_output {
    ($out:ident, $p:ident $(, $field:ident: $value:expr)* $(,)?) => {{
        let (_, len) = $p.span();
        let c = $p.checksums();
        let (lock_mode, lock_until, legal_hold) = lock::read_fields(&$p.meta);
        $out {
            content_length: Some(len as i64),
            content_range: $p
                .range
                .as_ref()
                .map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, $p.size)),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag_of(&$p.meta)),
            last_modified: Some(timestamp($p.modified)),
            content_type: $p.meta.content_type.clone(),
            content_disposition: $p.meta.content_disposition.clone(),
            content_encoding: $p.meta.content_encoding.clone(),
            content_language: $p.meta.content_language.clone(),
            cache_control: $p.meta.cache_control.clone(),
            expires: $p.meta.expires.as_deref().and_then(parse_http_date),
            metadata: (!$p.meta.user.is_empty()).then(|| $p.meta.user.clone().into_iter().collect()),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            checksum_type: c.checksum_type,
            version_id: $p.version_id.clone(),
            expiration: $p.expiration.clone(),
            parts_count: $p.parts_count,
            object_lock_mode: lock_mode,
            object_lock_retain_until_date: lock_until,
            object_lock_legal_hold_status: legal_hold,
            $($field: $value,)*
            ..Default::default()
        }
    }};
}

/// How [`settle`] may read a small object's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SmallRead {
    /// Not at all (HEAD).
    No,
    /// Only from the page cache; otherwise the body is streamed from the blocking pool.
    Cached,
    /// With a blocking read (already on the blocking pool).
    Blocking,
}

/// Conditionals, part number and range of an opened object; reads small ones whole.
fn settle(obj: ObjectHandle, req: &ReadRequest, read: SmallRead) -> RequestResult<Prepared> {
    req.conds.borrow().check_read(&obj.meta, obj.modified)?;
    let range = match (req.part_number, &req.range) {
        (Some(_), Some(_)) => {
            return Err(RequestError::InvalidRequest(
                "Cannot specify both Range header and partNumber query parameter".into(),
            ));
        }
        (Some(n), None) => part_range(&obj.meta, obj.size, n)?,
        (None, None) => None,
        (None, Some(_)) if obj.size == 0 => return Err(RequestError::InvalidRange),
        (None, Some(r)) => Some(r.check(obj.size).map_err(|_| RequestError::InvalidRange)?),
    };
    let parts_count = obj
        .meta
        .parts
        .filter(|_| req.part_number.is_some())
        .map(|n| n as i32);
    let (start, end) = range
        .clone()
        .map(|r| (r.start, r.end))
        .unwrap_or((0, obj.size));
    let len = (end - start) as usize;
    let small = match read {
        _ if end - start > SMALL_OBJECT => None,
        SmallRead::No => None,
        SmallRead::Blocking => Some(Bytes::from(
            fsutil::read_block_at(&obj.file, len, start).map_err(StoreError::from)?,
        )),
        SmallRead::Cached => fsutil::read_block_cached(&obj.file, len, start).map(Bytes::from),
    };
    // The null version's `null` is added by `prepare`, which knows the bucket's state.
    let version_id = obj.meta.version_id.clone();
    Ok(Prepared {
        meta: obj.meta,
        size: obj.size,
        modified: obj.modified,
        range,
        checksum_mode: req.checksum_mode,
        version_id,
        expiration: None,
        parts_count,
        file: obj.file,
        small,
    })
}

/// The bytes part `n` asks for: a multipart object's part as completed; any other object is
/// its own part 1, sent whole.
fn part_range(meta: &ObjectMeta, size: u64, n: i32) -> RequestResult<Option<std::ops::Range<u64>>> {
    let Some(count) = meta.parts else {
        return if n == 1 {
            Ok(None)
        } else {
            Err(RequestError::InvalidPartNumber)
        };
    };
    let n = u64::try_from(n)
        .ok()
        .filter(|n| (1..=u64::from(count)).contains(n))
        .ok_or(RequestError::InvalidPartNumber)?;
    let known = PartSizes::sizes(&meta.part_sizes).count() == count as usize
        && PartSizes::sizes(&meta.part_sizes).sum::<u64>() == size;
    let (offset, len) = PartSizes::part(&meta.part_sizes, n)
        .filter(|_| known)
        .ok_or(RequestError::NotImplemented(
            "the part sizes of this object were not recorded when it was completed",
        ))?;
    Ok(Some(offset..offset + len))
}

fn prepare(
    gw: &Gateway,
    req: ReadRequest,
    read_small: bool,
) -> impl std::future::Future<Output = RequestResult<Prepared>> + use<> {
    let store = gw.store.clone();
    let path = object_path(&req.key);
    let day = gw.lifecycle_day;
    async move {
        let path = path?;
        let current = req.version_id.is_none();
        let (bucket, key) = (req.bucket.clone(), req.key.clone());
        let mut p = prepare_version(store.clone(), req, path, read_small).await?;
        if p.version_id.is_none() {
            p.version_id = store.version_header(&bucket, &p.meta)?;
        }
        if current {
            p.expiration = expiration_header(&store, &bucket, &key, &p.meta, p.modified, day);
        }
        Ok(p)
    }
}

/// Opens and settles the version a read asks for: from the hot path when it can, else on the
/// blocking pool.
async fn prepare_version(
    store: Arc<Store>,
    req: ReadRequest,
    path: ObjectPath,
    read_small: bool,
) -> RequestResult<Prepared> {
    // The hot path: a recently served object is opened, checked and (if small and in the
    // page cache) read right here. A hop to the blocking pool costs two thread wake-ups,
    // more than the whole request otherwise; it is taken only when the disk may be needed.
    let cached = match req.version_id {
        None => store.try_open_object_cached(&req.bucket, &path)?,
        Some(_) => None,
    };
    if let Some(obj) = cached {
        let read = if read_small {
            SmallRead::Cached
        } else {
            SmallRead::No
        };
        return settle(obj, &req, read);
    }
    blocking(move || {
        let obj = match store.open_version(&req.bucket, &path, req.version_id.as_deref())? {
            Found::Object(obj) => obj,
            Found::DeleteMarker { version_id } => {
                return Err(RequestError::DeleteMarker {
                    version_id,
                    by_id: req.version_id.is_some(),
                });
            }
        };
        let read = if read_small {
            SmallRead::Blocking
        } else {
            SmallRead::No
        };
        settle(obj, &req, read)
    })
    .await
}

/// GetObject.
pub(crate) async fn get_object(
    gw: &Gateway,
    req: S3Request<GetObjectInput>,
) -> RequestResult<S3Response<GetObjectOutput>> {
    if let Some(request) = media::parse_query(req.uri.query())? {
        return media::get_object(gw, request, req).await;
    }
    let input = req.input;
    let mut request = read_request!(input);
    request.overrides.check(req.credentials.is_some())?;
    let overrides = std::mem::take(&mut request.overrides);
    let mut p = prepare(gw, request, true).await?;
    overrides.apply(&mut p.meta);
    let (start, len) = p.span();
    let tag_count = (!p.meta.tags.is_empty()).then_some(p.meta.tags.len() as i32);
    let output = object_output!(GetObjectOutput, p, tag_count: tag_count, body: Some(match p.small {
        Some(bytes) => StreamingBlob::from(s3s::Body::from(bytes)),
        None => StreamingBlob::wrap(file_stream(p.file, start, len)),
    }));
    Ok(S3Response::new(output))
}

/// HeadObject.
pub(crate) async fn head_object(
    gw: &Gateway,
    req: S3Request<HeadObjectInput>,
) -> RequestResult<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let mut request = read_request!(input);
    request.overrides.check(req.credentials.is_some())?;
    let overrides = std::mem::take(&mut request.overrides);
    let mut p = prepare(gw, request, false).await?;
    overrides.apply(&mut p.meta);
    let tags = p.meta.tags.len();
    let mut resp = S3Response::new(object_output!(HeadObjectOutput, p));
    // HeadObjectOutput has no field for it; GetObject's header, as clients read it there too.
    if tags > 0 {
        resp.headers
            .insert("x-amz-tagging-count", http::HeaderValue::from(tags));
    }
    Ok(resp)
}

/// GetObjectAttributes: what S3 keeps about an object (ETag, checksum, parts, storage class,
/// size), without its bytes; only the attributes asked for are answered.
pub(crate) async fn get_object_attributes(
    gw: &Gateway,
    req: S3Request<GetObjectAttributesInput>,
) -> RequestResult<S3Response<GetObjectAttributesOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let store = gw.store.clone();
    let (bucket, version) = (input.bucket.clone(), input.version_id.clone());
    let obj = blocking(
        move || match store.open_version(&bucket, &path, version.as_deref())? {
            Found::Object(obj) => Ok(obj),
            Found::DeleteMarker { version_id } => Err(RequestError::DeleteMarker {
                version_id,
                by_id: version.is_some(),
            }),
        },
    )
    .await?;
    // s3s keeps the header's comma-separated list as one item.
    let wants = |name: &str| {
        input
            .object_attributes
            .iter()
            .flat_map(|a| a.as_str().split(','))
            .any(|a| a.trim() == name)
    };
    let meta = &obj.meta;
    let checksum = {
        let c = checksum_fields(&meta.checksums);
        (c.checksum_type.is_some() && wants(ObjectAttributes::CHECKSUM)).then_some(c)
    };
    let object_parts = match meta.parts {
        Some(count) if wants(ObjectAttributes::OBJECT_PARTS) => Some(attribute_parts(
            count,
            &meta.part_sizes,
            input.part_number_marker.unwrap_or(0),
            input.max_parts.unwrap_or(1000),
        )),
        _ => None,
    };
    Ok(S3Response::new(GetObjectAttributesOutput {
        e_tag: wants(ObjectAttributes::ETAG).then(|| ETag::Strong(meta.etag.clone())),
        checksum,
        object_parts,
        object_size: wants(ObjectAttributes::OBJECT_SIZE).then_some(obj.size as i64),
        storage_class: wants(ObjectAttributes::STORAGE_CLASS)
            .then(|| StorageClass::from_static(StorageClass::STANDARD)),
        last_modified: Some(timestamp(obj.modified)),
        version_id: meta.version_id.clone().or(input.version_id),
        ..Default::default()
    }))
}

/// The `ObjectParts` of GetObjectAttributes: the part count, and the parts after `marker` (at
/// most `max`) with their sizes when those were recorded at completion.
fn attribute_parts(
    count: u32,
    runs: &[[u64; 2]],
    marker: i32,
    max: i32,
) -> GetObjectAttributesParts {
    let sizes: Vec<u64> = PartSizes::sizes(runs).collect();
    let known = sizes.len() == count as usize;
    let first = usize::try_from(marker).unwrap_or(0);
    let max = usize::try_from(max).unwrap_or(0);
    let page: Vec<ObjectPart> = sizes
        .iter()
        .enumerate()
        .skip(first)
        .take(max)
        .filter(|_| known)
        .map(|(i, &size)| ObjectPart {
            part_number: Some(i as i32 + 1),
            size: Some(size as i64),
            ..Default::default()
        })
        .collect();
    let truncated = known && first + page.len() < sizes.len();
    GetObjectAttributesParts {
        total_parts_count: Some(count as i32),
        part_number_marker: Some(marker),
        next_part_number_marker: page.last().and_then(|p| p.part_number),
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        parts: known.then_some(page),
    }
}
