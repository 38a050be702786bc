//! The listings: ListObjects (V1) and ListObjectsV2 over the ordered bucket walk, ListParts and
//! ListMultipartUploads over the store's multipart staging. All show the one owner
//! ([`super::owner`]) and escape `encoding-type=url` values with one set ([`super::url_encode`]).
//!
//! Every listing (these, and ListObjectVersions in `versioning.rs`) shares one paging function,
//! [`page`]: read entries in key order from the start position, roll keys up into common
//! prefixes at the delimiter, stop after `max-keys` results and look one result ahead so
//! `IsTruncated` is exact. The next page starts after the last key or common prefix returned
//! (V1 `NextMarker`, V2 an opaque continuation token, the key and id markers of versions and
//! uploads).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::checksum::{checksum_fields, record_checksum_type};
use super::multipart::{algorithm_of, part_etag};
use super::{Gateway, RequestError, RequestResult, blocking, owner, timestamp, url_encode};
use crate::store::Store;
use crate::store::StoreResult;
use crate::store::multipart::{PartInfo, UploadInfo, UploadRecord};
use crate::store::walk::{ObjectInfo, Walker};

/// S3's default and largest page size.
const MAX_KEYS: usize = 1000;

/// Continuation tokens are this tag plus the position, base64url-encoded: the tag lets a token
/// the gateway did not issue be rejected instead of being read as some position.
const TOKEN_TAG: &str = "nebula1:";

/// One page of a listing, before S3 encoding.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Objects in key order.
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes in order.
    pub prefixes: Vec<String>,
    /// True when more keys or prefixes follow.
    pub truncated: bool,
    /// The last key or common prefix returned: where the next page starts.
    pub last: Option<String>,
}

/// Where a page's entries come from: in key order (the entries of one key in the order the
/// listing shows them), from the listing's start position on.
pub(crate) trait Entries {
    /// One entry.
    type Item;
    /// The next entry, `None` at the end.
    fn next_item(&mut self) -> StoreResult<Option<Self::Item>>;
    /// The entry's key.
    fn key(item: &Self::Item) -> &str;
    /// What places the entry within its key for the next page's marker (a version or upload
    /// id); `None` where keys are unique.
    fn id(item: &Self::Item) -> Option<&str>;
    /// Passes over the keys starting with `cp`: they are rolled up into one common prefix.
    fn skip_prefix(&mut self, cp: &str);
}

/// One page of a listing, before S3 encoding.
#[derive(Debug)]
pub(crate) struct Paged<T> {
    /// The entries in order.
    pub items: Vec<T>,
    /// Common prefixes in order.
    pub prefixes: Vec<String>,
    /// True when more entries or prefixes follow.
    pub truncated: bool,
    /// The last key or common prefix returned, with the entry's id: where the next page starts.
    pub next: Option<(String, Option<String>)>,
}

/// The one paging of every listing: takes the entries whose key starts with `prefix`, rolls
/// keys up at the first `delimiter` after the prefix into common prefixes (each counting once,
/// and none at or before `marker`, which an earlier page returned), and stops once `max`
/// results are taken and another exists, so `truncated` is exact. The source reads no further
/// than that: a page costs what it shows, whatever the bucket holds.
pub(crate) fn page<E: Entries>(
    src: &mut E,
    prefix: &str,
    delimiter: &str,
    marker: Option<&str>,
    max: usize,
) -> StoreResult<Paged<E::Item>> {
    let mut page = Paged {
        items: Vec::new(),
        prefixes: Vec::new(),
        truncated: false,
        next: None,
    };
    let common_prefix = |key: &str| -> Option<String> {
        if delimiter.is_empty() {
            return None;
        }
        let rest = key.strip_prefix(prefix)?;
        rest.find(delimiter)
            .map(|i| key[..prefix.len() + i + delimiter.len()].to_owned())
    };
    // A start position inside a common prefix (the previous page ended on that prefix): all its
    // keys roll up into a prefix at or before the position, so pass over them unread.
    if let Some(cp) = marker.and_then(common_prefix) {
        src.skip_prefix(&cp);
    }
    while let Some(item) = src.next_item()? {
        let key = E::key(&item);
        if !key.starts_with(prefix) {
            continue;
        }
        let taken = page.items.len() + page.prefixes.len();
        if let Some(cp) = common_prefix(key) {
            src.skip_prefix(&cp);
            if marker.is_some_and(|m| cp.as_str() <= m) || page.prefixes.last() == Some(&cp) {
                continue;
            }
            if taken == max {
                page.truncated = true;
                break;
            }
            page.next = Some((cp.clone(), None));
            page.prefixes.push(cp);
            continue;
        }
        if taken == max {
            page.truncated = true;
            break;
        }
        page.next = Some((key.to_owned(), E::id(&item).map(str::to_owned)));
        page.items.push(item);
    }
    Ok(page)
}

/// The objects of a bucket walk, as listed (a file that vanished since its folder was read is
/// simply not listed).
struct Objects<'a>(Walker<'a>);

impl Entries for Objects<'_> {
    type Item = ObjectInfo;

    fn next_item(&mut self) -> StoreResult<Option<ObjectInfo>> {
        while let Some(entry) = self.0.next_entry()? {
            if let Some(info) = self.0.info(&entry)? {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    fn key(item: &ObjectInfo) -> &str {
        &item.key
    }

    fn id(_: &ObjectInfo) -> Option<&str> {
        None
    }

    fn skip_prefix(&mut self, cp: &str) {
        self.0.skip_prefix(cp);
    }
}

/// Lists up to `max_keys` keys and common prefixes of `bucket` that start with `prefix` and sort
/// strictly after `after`, rolling keys up at the first `delimiter` after the prefix (an empty
/// delimiter rolls nothing up).
pub(crate) fn list_page(
    store: &Store,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    after: Option<&str>,
    max_keys: usize,
) -> StoreResult<Page> {
    // Opening the walk also checks that the bucket exists, even for `max-keys=0`.
    let walker = Walker::new(store, bucket, prefix, after)?;
    if max_keys == 0 {
        return Ok(Page::default());
    }
    let p = page(&mut Objects(walker), prefix, delimiter, after, max_keys)?;
    Ok(Page {
        objects: p.items,
        prefixes: p.prefixes,
        truncated: p.truncated,
        last: p.next.map(|(key, _)| key),
    })
}

/// The request parameters both versions share, validated.
struct Params {
    bucket: String,
    prefix: String,
    delimiter: String,
    after: Option<String>,
    max_keys: usize,
}

impl Params {
    async fn run(self, gw: &Gateway) -> RequestResult<Page> {
        let store = gw.store.clone();
        let Params {
            bucket,
            prefix,
            delimiter,
            after,
            max_keys,
        } = self;
        blocking(move || {
            list_page(
                &store,
                &bucket,
                &prefix,
                &delimiter,
                after.as_deref(),
                max_keys,
            )
        })
        .await
        .map_err(RequestError::from)
    }
}

fn invalid_argument(msg: &str) -> RequestError {
    RequestError::InvalidArgument(msg.to_owned())
}

/// Page size: default 1000, capped at 1000, negative rejected.
pub(super) fn parse_max_keys(max_keys: Option<MaxKeys>) -> RequestResult<usize> {
    match max_keys {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(invalid_argument("max-keys must not be negative")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_KEYS).min(MAX_KEYS)),
    }
}

/// `true` for `encoding-type=url`; any other value is rejected as S3 does.
pub(super) fn parse_encoding(encoding: Option<&EncodingType>) -> RequestResult<bool> {
    match encoding.map(EncodingType::as_str) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(_) => Err(invalid_argument(
            "invalid encoding method specified (only 'url' is supported)",
        )),
    }
}

/// The continuation token for a page that ended at `last` (ListObjectsV2, ListBuckets).
pub(super) fn encode_token(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_TAG}{last}"))
}

/// The position a continuation token stands for.
pub(super) fn decode_token(token: &str) -> RequestResult<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.strip_prefix(TOKEN_TAG).map(str::to_owned))
        .ok_or_else(|| invalid_argument("the continuation token provided is incorrect"))
}

/// Applies `encoding-type=url` to a key-like value.
pub(super) fn encode(s: &str, url: bool) -> String {
    if url { url_encode(s) } else { s.to_owned() }
}

fn object_dto(o: &ObjectInfo, url: bool, with_owner: bool) -> Object {
    Object {
        key: Some(encode(&o.key, url)),
        size: Some(i64::try_from(o.size).unwrap_or(i64::MAX)),
        last_modified: Some(timestamp(o.modified)),
        e_tag: Some(ETag::Strong(o.etag.clone())),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        owner: with_owner.then(owner),
        ..Default::default()
    }
}

/// Contents and CommonPrefixes of a page; empty lists are left out of the XML.
fn page_lists(
    page: &Page,
    url: bool,
    with_owner: bool,
) -> (Option<ObjectList>, Option<CommonPrefixList>) {
    let objects: ObjectList = page
        .objects
        .iter()
        .map(|o| object_dto(o, url, with_owner))
        .collect();
    let prefixes: CommonPrefixList = page
        .prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(encode(p, url)),
        })
        .collect();
    (
        (!objects.is_empty()).then_some(objects),
        (!prefixes.is_empty()).then_some(prefixes),
    )
}

fn key_count(page: &Page) -> i32 {
    i32::try_from(page.objects.len() + page.prefixes.len()).unwrap_or(i32::MAX)
}

/// ListObjects (V1): `marker` is the position; `NextMarker` is set whenever the page is truncated.
pub(crate) async fn list_objects(
    gw: &Gateway,
    req: S3Request<ListObjectsInput>,
) -> RequestResult<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let url = parse_encoding(input.encoding_type.as_ref())?;
    let params = Params {
        bucket: input.bucket.clone(),
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone().unwrap_or_default(),
        after: input.marker.clone().filter(|m| !m.is_empty()),
        max_keys: parse_max_keys(input.max_keys)?,
    };
    let (prefix, max_keys) = (params.prefix.clone(), params.max_keys);
    let page = params.run(gw).await?;
    let (contents, common_prefixes) = page_lists(&page, url, true);
    let output = ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(encode(&prefix, url)),
        marker: Some(encode(input.marker.as_deref().unwrap_or_default(), url)),
        max_keys: Some(i32::try_from(max_keys).unwrap_or(i32::MAX)),
        is_truncated: Some(page.truncated),
        next_marker: if page.truncated {
            page.last.as_deref().map(|l| encode(l, url))
        } else {
            None
        },
        contents,
        common_prefixes,
        delimiter: input
            .delimiter
            .filter(|d| !d.is_empty())
            .map(|d| encode(&d, url)),
        encoding_type: input.encoding_type,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// ListObjectsV2: the position is the continuation token if given, else `start-after`.
pub(crate) async fn list_objects_v2(
    gw: &Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> RequestResult<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let url = parse_encoding(input.encoding_type.as_ref())?;
    let token_pos = input
        .continuation_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(decode_token)
        .transpose()?;
    let params = Params {
        bucket: input.bucket.clone(),
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone().unwrap_or_default(),
        after: token_pos
            .or_else(|| input.start_after.clone())
            .filter(|a| !a.is_empty()),
        max_keys: parse_max_keys(input.max_keys)?,
    };
    let (prefix, max_keys) = (params.prefix.clone(), params.max_keys);
    let page = params.run(gw).await?;
    let (contents, common_prefixes) = page_lists(&page, url, input.fetch_owner == Some(true));
    let output = ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(encode(&prefix, url)),
        max_keys: Some(i32::try_from(max_keys).unwrap_or(i32::MAX)),
        key_count: Some(key_count(&page)),
        continuation_token: input.continuation_token,
        is_truncated: Some(page.truncated),
        next_continuation_token: if page.truncated {
            page.last.as_deref().map(encode_token)
        } else {
            None
        },
        contents,
        common_prefixes,
        delimiter: input
            .delimiter
            .filter(|d| !d.is_empty())
            .map(|d| encode(&d, url)),
        encoding_type: input.encoding_type,
        start_after: input.start_after.map(|s| encode(&s, url)),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// Who created an upload: the access key that signed CreateMultipartUpload.
fn initiator(record: &UploadRecord) -> Initiator {
    Initiator {
        id: record.initiator.clone(),
        display_name: record.initiator.clone(),
    }
}

/// A page size as ListParts and ListMultipartUploads take it: default and cap 1000, a negative
/// one is an empty page.
fn clamp_page(max: Option<i32>) -> usize {
    usize::try_from(max.unwrap_or(MAX_KEYS as i32).max(0))
        .unwrap_or(0)
        .min(MAX_KEYS)
}

/// ListParts.
pub(crate) async fn list_parts(
    gw: &Gateway,
    req: S3Request<ListPartsInput>,
) -> RequestResult<S3Response<ListPartsOutput>> {
    let input = req.input;
    let max = clamp_page(input.max_parts);
    let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
    let (store, bucket, key, id) = (
        gw.store.clone(),
        input.bucket.clone(),
        input.key.clone(),
        input.upload_id.clone(),
    );
    let (record, parts) = blocking(move || -> StoreResult<_> {
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
        initiator: Some(initiator(&record)),
        owner: Some(owner()),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        checksum_algorithm: algorithm_of(&record),
        checksum_type: record_checksum_type(&record),
        ..Default::default()
    }))
}

/// Uploads in key then initiation order, as S3 lists them.
struct Uploads(std::vec::IntoIter<UploadInfo>);

impl Entries for Uploads {
    type Item = UploadInfo;

    fn next_item(&mut self) -> StoreResult<Option<UploadInfo>> {
        Ok(self.0.next())
    }

    fn key(item: &UploadInfo) -> &str {
        &item.record.key
    }

    fn id(item: &UploadInfo) -> Option<&str> {
        Some(&item.id)
    }

    fn skip_prefix(&mut self, _cp: &str) {}
}

/// The uploads after `key_marker` (and, for that key, after `id_marker`).
fn after_markers(
    all: Vec<UploadInfo>,
    key_marker: Option<&str>,
    id_marker: Option<&str>,
) -> Vec<UploadInfo> {
    let Some(km) = key_marker else {
        return all;
    };
    // Where the id marker sits among the marker key's uploads, if it still exists.
    let marker_pos =
        id_marker.and_then(|i| all.iter().position(|u| u.record.key == km && u.id == i));
    all.into_iter()
        .enumerate()
        .filter(
            |(pos, u)| match (u.record.key.as_str().cmp(km), id_marker) {
                (std::cmp::Ordering::Greater, _) => true,
                (std::cmp::Ordering::Equal, Some(im)) => match marker_pos {
                    Some(mp) => *pos > mp,
                    // The marker upload is gone: fall back to S3's documented id order.
                    None => u.id.as_str() > im,
                },
                _ => false,
            },
        )
        .map(|(_, u)| u)
        .collect()
}

/// ListMultipartUploads.
pub(crate) async fn list_multipart_uploads(
    gw: &Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> RequestResult<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let max = clamp_page(input.max_uploads);
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
    let mut uploads = Uploads(after_markers(all, key_marker, id_marker).into_iter());
    let delimiter = input.delimiter.as_deref().unwrap_or("");
    let page = page(&mut uploads, &prefix, delimiter, key_marker, max)?;
    let (next_key, next_id) = match (page.truncated, page.next) {
        (true, Some((k, i))) => (Some(k), i),
        _ => (None, None),
    };

    let url = input
        .encoding_type
        .as_ref()
        .is_some_and(|e| e.as_str() == EncodingType::URL);
    let enc = |s: String| encode(&s, url);
    let uploads = page
        .items
        .into_iter()
        .map(|u| MultipartUpload {
            checksum_algorithm: algorithm_of(&u.record),
            checksum_type: record_checksum_type(&u.record),
            initiated: Some(timestamp(u.record.initiated())),
            initiator: Some(initiator(&u.record)),
            owner: Some(owner()),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            key: Some(enc(u.record.key)),
            upload_id: Some(u.id),
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
        delimiter: input.delimiter.filter(|d| !d.is_empty()).map(enc),
        key_marker: Some(enc(input.key_marker.unwrap_or_default())),
        upload_id_marker: Some(input.upload_id_marker.unwrap_or_default()),
        next_key_marker: next_key.map(enc),
        next_upload_id_marker: next_id,
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
    use super::*;
    use crate::store::walk::tests::TempData;
    use s3s::S3ErrorCode;
    use std::sync::Arc;

    fn request<T>(input: T) -> S3Request<T> {
        S3Request {
            input,
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            headers: Default::default(),
            extensions: Default::default(),
            credentials: None,
            region: None,
            service: None,
            trailing_headers: None,
        }
    }

    /// Moves the test data folder into a gateway (the folder is removed when `t` drops).
    fn gateway(t: &TempData) -> Gateway {
        Gateway::new(Arc::new(Store::open(&t.root).unwrap()), "us-east-1".into())
    }

    fn v2(bucket: &str) -> ListObjectsV2Input {
        ListObjectsV2Input {
            bucket: bucket.into(),
            ..Default::default()
        }
    }

    /// Pages through a whole V2 listing; returns keys and prefixes in order, and the page count.
    async fn all_v2(gw: &Gateway, base: ListObjectsV2Input) -> (Vec<String>, usize) {
        let mut out = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let input = ListObjectsV2Input {
                continuation_token: token.clone(),
                ..base.clone()
            };
            let o = list_objects_v2(gw, request(input)).await.unwrap().output;
            pages += 1;
            let keys: Vec<String> = o
                .contents
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.key.unwrap())
                .collect();
            let prefixes: Vec<String> = o
                .common_prefixes
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.prefix.unwrap())
                .collect();
            assert_eq!(o.key_count, Some((keys.len() + prefixes.len()) as i32));
            // Keys and prefixes interleave in S3 order; merge them to compare with the walk.
            let mut items: Vec<String> = keys.into_iter().chain(prefixes).collect();
            items.sort();
            out.extend(items);
            if o.is_truncated != Some(true) {
                assert!(o.next_continuation_token.is_none());
                return (out, pages);
            }
            token = o.next_continuation_token;
            assert!(token.is_some());
        }
    }

    async fn all_v1(gw: &Gateway, base: ListObjectsInput) -> (Vec<String>, usize) {
        let mut out = Vec::new();
        let mut marker = None;
        let mut pages = 0;
        loop {
            let input = ListObjectsInput {
                marker: marker.clone(),
                ..base.clone()
            };
            let o = list_objects(gw, request(input)).await.unwrap().output;
            pages += 1;
            let contents = o.contents.unwrap_or_default();
            assert!(
                contents.iter().all(|c| c.owner.is_some()),
                "V1 always shows the owner"
            );
            let keys = contents.into_iter().map(|c| c.key.unwrap());
            let prefixes = o
                .common_prefixes
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.prefix.unwrap());
            let mut items: Vec<String> = keys.chain(prefixes).collect();
            items.sort();
            out.extend(items);
            if o.is_truncated != Some(true) {
                return (out, pages);
            }
            marker = o.next_marker;
            assert!(marker.is_some());
        }
    }

    /// 1,500 top-level files and 1,000 folders holding two files each.
    fn big_bucket() -> (TempData, Vec<String>, Vec<String>) {
        let t = TempData::new();
        let mut flat = Vec::new();
        let mut rolled = Vec::new();
        for i in 0..1500 {
            let k = format!("f{i:04}");
            t.put(&k, b"x");
            flat.push(k.clone());
            rolled.push(k);
        }
        for i in 0..1000 {
            for f in ["x", "y"] {
                let k = format!("d{i:03}/{f}");
                t.put(&k, b"y");
                flat.push(k);
            }
            rolled.push(format!("d{i:03}/"));
        }
        flat.sort();
        rolled.sort();
        (t, flat, rolled)
    }

    #[tokio::test]
    async fn pagination_returns_every_key_once_in_order() {
        let (t, flat, rolled) = big_bucket();
        let gw = gateway(&t);
        let (got, pages) = all_v2(&gw, v2("bkt")).await;
        assert_eq!(pages, 4);
        assert_eq!(got, flat);
        let delim = ListObjectsV2Input {
            delimiter: Some("/".into()),
            ..v2("bkt")
        };
        let (got, pages) = all_v2(&gw, delim).await;
        assert_eq!(pages, 3);
        assert_eq!(got, rolled);
        let small = ListObjectsV2Input {
            delimiter: Some("/".into()),
            max_keys: Some(7),
            ..v2("bkt")
        };
        assert_eq!(all_v2(&gw, small).await.0, rolled);

        let v1 = ListObjectsInput {
            bucket: "bkt".into(),
            ..Default::default()
        };
        assert_eq!(all_v1(&gw, v1.clone()).await, (flat, 4));
        let v1_delim = ListObjectsInput {
            delimiter: Some("/".into()),
            max_keys: Some(333),
            ..v1
        };
        assert_eq!(all_v1(&gw, v1_delim).await.0, rolled);
    }

    #[tokio::test]
    async fn exact_fit_is_not_truncated() {
        let t = TempData::new();
        for k in ["a", "b", "c"] {
            t.put(k, b"1");
        }
        let gw = gateway(&t);
        let o = list_objects_v2(
            &gw,
            request(ListObjectsV2Input {
                max_keys: Some(3),
                ..v2("bkt")
            }),
        )
        .await
        .unwrap()
        .output;
        assert_eq!((o.key_count, o.is_truncated), (Some(3), Some(false)));
        let o = list_objects_v2(
            &gw,
            request(ListObjectsV2Input {
                max_keys: Some(2),
                ..v2("bkt")
            }),
        )
        .await
        .unwrap()
        .output;
        assert_eq!((o.key_count, o.is_truncated), (Some(2), Some(true)));
        let o = list_objects_v2(
            &gw,
            request(ListObjectsV2Input {
                max_keys: Some(0),
                ..v2("bkt")
            }),
        )
        .await
        .unwrap()
        .output;
        assert_eq!(
            (o.key_count, o.is_truncated, o.contents),
            (Some(0), Some(false), None)
        );
        let o = list_objects_v2(
            &gw,
            request(ListObjectsV2Input {
                max_keys: Some(5000),
                ..v2("bkt")
            }),
        )
        .await
        .unwrap()
        .output;
        assert_eq!(o.max_keys, Some(1000));
    }

    #[tokio::test]
    async fn delimiter_rolls_up_and_start_after_inside_a_prefix_does_not_repeat_it() {
        let t = TempData::new();
        for k in ["a/1", "a/2", "b/x/1", "b/y", "c", "d-1", "d-2/e"] {
            t.put(k, b"1");
        }
        t.marker("m/");
        let gw = gateway(&t);
        let list = |input: ListObjectsV2Input| {
            let gw = gw.clone();
            async move {
                let o = list_objects_v2(&gw, request(input)).await.unwrap().output;
                let keys: Vec<String> = o
                    .contents
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.key.unwrap())
                    .collect();
                let cps: Vec<String> = o
                    .common_prefixes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.prefix.unwrap())
                    .collect();
                (keys, cps)
            }
        };
        let slash = || ListObjectsV2Input {
            delimiter: Some("/".into()),
            ..v2("bkt")
        };
        assert_eq!(
            list(slash()).await,
            (
                vec!["c".into(), "d-1".into()],
                vec!["a/".into(), "b/".into(), "d-2/".into(), "m/".into()]
            )
        );
        let after = ListObjectsV2Input {
            start_after: Some("a/1".into()),
            ..slash()
        };
        assert_eq!(
            list(after).await,
            (
                vec!["c".into(), "d-1".into()],
                vec!["b/".into(), "d-2/".into(), "m/".into()]
            )
        );
        let after_prefix = ListObjectsV2Input {
            start_after: Some("b/".into()),
            ..slash()
        };
        assert_eq!(
            list(after_prefix).await.1,
            vec!["d-2/".to_string(), "m/".into()]
        );
        let inner = ListObjectsV2Input {
            prefix: Some("b/".into()),
            ..slash()
        };
        assert_eq!(list(inner).await, (vec!["b/y".into()], vec!["b/x/".into()]));
        let dash = ListObjectsV2Input {
            delimiter: Some("-".into()),
            ..v2("bkt")
        };
        assert_eq!(list(dash).await.1, vec!["d-".to_string()]);
        let marker = ListObjectsV2Input {
            prefix: Some("m/".into()),
            ..slash()
        };
        assert_eq!(list(marker).await, (vec!["m/".into()], vec![]));
    }

    #[tokio::test]
    async fn url_encoding_type_escapes_keys_and_echoed_values() {
        let t = TempData::new();
        t.put("dir é/a b+c&.txt", b"1");
        t.put("dir é/sub/x", b"1");
        let gw = gateway(&t);
        let input = ListObjectsV2Input {
            prefix: Some("dir é/".into()),
            delimiter: Some("/".into()),
            start_after: Some("dir é/a".into()),
            encoding_type: Some(EncodingType::from_static(EncodingType::URL)),
            ..v2("bkt")
        };
        let o = list_objects_v2(&gw, request(input)).await.unwrap().output;
        assert_eq!(
            o.contents.unwrap()[0].key.as_deref(),
            Some("dir%20%C3%A9/a%20b%2Bc%26.txt")
        );
        assert_eq!(
            o.common_prefixes.unwrap()[0].prefix.as_deref(),
            Some("dir%20%C3%A9/sub/")
        );
        assert_eq!(o.prefix.as_deref(), Some("dir%20%C3%A9/"));
        assert_eq!(o.start_after.as_deref(), Some("dir%20%C3%A9/a"));
        assert_eq!(o.delimiter.as_deref(), Some("/"));
        assert_eq!(
            o.encoding_type.as_ref().map(EncodingType::as_str),
            Some("url")
        );

        let bad = ListObjectsV2Input {
            encoding_type: Some(EncodingType::from("base64".to_owned())),
            ..v2("bkt")
        };
        let err = list_objects_v2(&gw, request(bad)).await.unwrap_err();
        assert_eq!(*err.into_s3().code(), S3ErrorCode::InvalidArgument);
    }

    #[tokio::test]
    async fn errors_and_owner() {
        let t = TempData::new();
        t.put("k", b"hello");
        let gw = gateway(&t);
        let err = list_objects_v2(&gw, request(v2("missing")))
            .await
            .unwrap_err();
        assert_eq!(*err.into_s3().code(), S3ErrorCode::NoSuchBucket);
        let err = list_objects(
            &gw,
            request(ListObjectsInput {
                bucket: "missing".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(*err.into_s3().code(), S3ErrorCode::NoSuchBucket);
        for bad in ["not a token", "Zm9vYmFy", "%%%"] {
            let input = ListObjectsV2Input {
                continuation_token: Some(bad.into()),
                ..v2("bkt")
            };
            let err = list_objects_v2(&gw, request(input)).await.unwrap_err();
            assert_eq!(*err.into_s3().code(), S3ErrorCode::InvalidArgument, "{bad}");
        }
        let err = list_objects_v2(
            &gw,
            request(ListObjectsV2Input {
                max_keys: Some(-1),
                ..v2("bkt")
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(*err.into_s3().code(), S3ErrorCode::InvalidArgument);

        let o = list_objects_v2(&gw, request(v2("bkt")))
            .await
            .unwrap()
            .output;
        let obj = &o.contents.unwrap()[0];
        assert!(obj.owner.is_none());
        assert_eq!(
            obj.e_tag,
            Some(ETag::Strong("5d41402abc4b2a76b9719d911017c592".into()))
        );
        assert_eq!(
            (
                obj.size,
                obj.storage_class.as_ref().map(ObjectStorageClass::as_str)
            ),
            (Some(5), Some("STANDARD"))
        );
        let o = list_objects_v2(
            &gw,
            request(ListObjectsV2Input {
                fetch_owner: Some(true),
                ..v2("bkt")
            }),
        )
        .await
        .unwrap()
        .output;
        assert_eq!(
            o.contents.unwrap()[0]
                .owner
                .as_ref()
                .and_then(|o| o.id.as_deref()),
            Some("nebula")
        );
    }

    /// Timing of the first page of a 100,000-key flat bucket (run with `--ignored --nocapture`,
    /// ideally in release).
    #[test]
    #[ignore]
    fn first_page_of_a_large_flat_bucket_is_fast() {
        let t = TempData::new();
        let dir = t.root.join("bkt");
        for i in 0..100_000 {
            std::fs::write(dir.join(format!("{i:06}.jpg")), b"x").unwrap();
        }
        // Record metadata of the pages timed below, as any earlier listing or GET would.
        list_page(&t.store, "bkt", "", "", None, 1000).unwrap();
        list_page(&t.store, "bkt", "", "", Some("050000.jpg"), 1000).unwrap();
        // CPU time of this thread as well as wall time: on a busy machine the wall time mostly
        // measures waiting for a core.
        let cpu = || {
            let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let time = |label: &str, after: Option<&str>, delimiter: &str, max: usize| {
            let (wall, cpu0) = (std::time::Instant::now(), cpu());
            let page = list_page(&t.store, "bkt", "", delimiter, after, max).unwrap();
            eprintln!("{label}: {:?} wall, {:?} cpu", wall.elapsed(), cpu() - cpu0);
            page
        };
        assert_eq!(
            time("100k keys, first 1000", None, "", 1000).objects.len(),
            1000
        );
        assert_eq!(time("100k keys, first 10", None, "", 10).objects.len(), 10);
        let page = time(
            "100k keys, 1000 from the middle",
            Some("050000.jpg"),
            "/",
            1000,
        );
        assert_eq!(page.objects[0].key, "050001.jpg");
        for i in 0..1000 {
            std::fs::write(t.root.join("bkt/small").join(format!("{i:04}")), b"x").unwrap_or_else(
                |_| {
                    std::fs::create_dir_all(t.root.join("bkt/small")).unwrap();
                    std::fs::write(t.root.join("bkt/small").join(format!("{i:04}")), b"x").unwrap();
                },
            );
        }
        list_page(&t.store, "bkt", "small/", "", None, 1000).unwrap();
        let (wall, cpu0) = (std::time::Instant::now(), cpu());
        let page = list_page(&t.store, "bkt", "small/", "", None, 1000).unwrap();
        eprintln!(
            "1000 keys: {:?} wall, {:?} cpu",
            wall.elapsed(),
            cpu() - cpu0
        );
        assert_eq!((page.objects.len(), page.truncated), (1000, false));
    }
}
