//! ListObjects (V1) and ListObjectsV2 over the ordered bucket walk.
//!
//! Both versions share one paging function: walk keys strictly after a position, roll keys up
//! into common prefixes at the delimiter, stop after `max-keys` results and look one result
//! ahead so `IsTruncated` is exact. The next page starts after the last key or common prefix
//! returned (V1 `NextMarker`, V2 an opaque continuation token).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::{Gateway, blocking, timestamp};
use crate::error::StoreResult;
use crate::store::Store;
use crate::store::walk::{ObjectInfo, Walker};

/// S3's default and largest page size.
const MAX_KEYS: usize = 1000;

/// Owner shown in listings (the gateway has one account).
const OWNER: &str = "nebula";

/// Continuation tokens are this tag plus the position, base64url-encoded: the tag lets a token
/// the gateway did not issue be rejected instead of being read as some position.
const TOKEN_TAG: &str = "nebula1:";

/// What `encoding-type=url` escapes: everything but unreserved characters and `/`, as S3 does.
const KEY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

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
    let mut walker = Walker::new(store, bucket, prefix, after)?;
    let mut page = Page::default();
    if max_keys == 0 {
        return Ok(page);
    }
    let common_prefix = |key: &str| -> Option<String> {
        if delimiter.is_empty() {
            return None;
        }
        let rest = key.strip_prefix(prefix)?;
        rest.find(delimiter).map(|i| key[..prefix.len() + i + delimiter.len()].to_owned())
    };
    // A start position inside a common prefix (the previous page ended on that prefix): all its
    // keys roll up into a prefix at or before the position, so pass over them unread.
    if let Some(cp) = after.and_then(common_prefix) {
        walker.skip_prefix(&cp);
    }
    let mut count = 0;
    while let Some(entry) = walker.next_entry()? {
        if let Some(cp) = common_prefix(&entry.key) {
            walker.skip_prefix(&cp);
            if after.is_some_and(|a| cp.as_str() <= a) {
                continue;
            }
            if count == max_keys {
                page.truncated = true;
                break;
            }
            page.last = Some(cp.clone());
            page.prefixes.push(cp);
            count += 1;
            continue;
        }
        // A file that vanished since its folder was read is simply not listed.
        let Some(info) = walker.info(&entry)? else { continue };
        if count == max_keys {
            page.truncated = true;
            break;
        }
        page.last = Some(info.key.clone());
        page.objects.push(info);
        count += 1;
    }
    Ok(page)
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
    async fn run(self, gw: &Gateway) -> S3Result<Page> {
        let store = gw.store.clone();
        let Params { bucket, prefix, delimiter, after, max_keys } = self;
        blocking(move || list_page(&store, &bucket, &prefix, &delimiter, after.as_deref(), max_keys)).await
    }
}

fn invalid_argument(msg: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, msg.to_owned())
}

/// Page size: default 1000, capped at 1000, negative rejected.
fn parse_max_keys(max_keys: Option<MaxKeys>) -> S3Result<usize> {
    match max_keys {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(invalid_argument("max-keys must not be negative")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_KEYS).min(MAX_KEYS)),
    }
}

/// `true` for `encoding-type=url`; any other value is rejected as S3 does.
fn parse_encoding(encoding: Option<&EncodingType>) -> S3Result<bool> {
    match encoding.map(EncodingType::as_str) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(_) => Err(invalid_argument("invalid encoding method specified (only 'url' is supported)")),
    }
}

/// The continuation token for a page that ended at `last`.
fn encode_token(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_TAG}{last}"))
}

/// The position a continuation token stands for.
fn decode_token(token: &str) -> S3Result<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.strip_prefix(TOKEN_TAG).map(str::to_owned))
        .ok_or_else(|| invalid_argument("the continuation token provided is incorrect"))
}

/// Applies `encoding-type=url` to a key-like value.
fn encode(s: &str, url: bool) -> String {
    if url { utf8_percent_encode(s, KEY_ESCAPE).to_string() } else { s.to_owned() }
}

fn owner() -> Owner {
    Owner { display_name: Some(OWNER.to_owned()), id: Some(OWNER.to_owned()) }
}

fn object_dto(o: &ObjectInfo, url: bool, with_owner: bool) -> Object {
    Object {
        key: Some(encode(&o.key, url)),
        size: Some(i64::try_from(o.size).unwrap_or(i64::MAX)),
        last_modified: Some(timestamp(o.modified)),
        e_tag: Some(ETag::Strong(o.etag.clone())),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        owner: with_owner.then(owner),
        ..Default::default()
    }
}

/// Contents and CommonPrefixes of a page; empty lists are left out of the XML.
fn page_lists(page: &Page, url: bool, with_owner: bool) -> (Option<ObjectList>, Option<CommonPrefixList>) {
    let objects: ObjectList = page.objects.iter().map(|o| object_dto(o, url, with_owner)).collect();
    let prefixes: CommonPrefixList =
        page.prefixes.iter().map(|p| CommonPrefix { prefix: Some(encode(p, url)) }).collect();
    ((!objects.is_empty()).then_some(objects), (!prefixes.is_empty()).then_some(prefixes))
}

fn key_count(page: &Page) -> i32 {
    i32::try_from(page.objects.len() + page.prefixes.len()).unwrap_or(i32::MAX)
}

/// ListObjects (V1): `marker` is the position; `NextMarker` is set whenever the page is truncated.
pub(crate) async fn list_objects(gw: &Gateway, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
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
        next_marker: if page.truncated { page.last.as_deref().map(|l| encode(l, url)) } else { None },
        contents,
        common_prefixes,
        delimiter: input.delimiter.map(|d| encode(&d, url)),
        encoding_type: input.encoding_type,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// ListObjectsV2: the position is the continuation token if given, else `start-after`.
pub(crate) async fn list_objects_v2(gw: &Gateway, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let url = parse_encoding(input.encoding_type.as_ref())?;
    let token_pos = input.continuation_token.as_deref().filter(|t| !t.is_empty()).map(decode_token).transpose()?;
    let params = Params {
        bucket: input.bucket.clone(),
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone().unwrap_or_default(),
        after: token_pos.or_else(|| input.start_after.clone()).filter(|a| !a.is_empty()),
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
        next_continuation_token: if page.truncated { page.last.as_deref().map(encode_token) } else { None },
        contents,
        common_prefixes,
        delimiter: input.delimiter.map(|d| encode(&d, url)),
        encoding_type: input.encoding_type,
        start_after: input.start_after.map(|s| encode(&s, url)),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}
