//! `GET /_nebula/v1/files`: objects as the catalog knows them (media probe, renditions).

use std::collections::BTreeMap;

use http::StatusCode;
use nebula_api_types::files::{FileItem, FilePage, Media, Poster, Variant};
use time::format_description::well_known::Rfc3339;

use super::{ApiError, ApiResult, ApiState, ok};
use crate::catalog::{Catalog, CatalogObject, MediaMeta};

/// Default and largest page sizes.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

fn media(m: MediaMeta) -> Media {
    Media {
        duration_secs: m.duration,
        width: m.width,
        height: m.height,
        fps: m.frame_rate,
        video_codec: m.video_codec,
        audio_codec: m.audio_codec,
        bitrate: m.bitrate,
        container: m.container,
    }
}

fn file_item(o: CatalogObject) -> FileItem {
    let poster = o.poster().map(|p| Poster { at_secs: p.at_secs });
    FileItem {
        bucket: o.bucket,
        key: o.key,
        size: o.size,
        etag: o.etag,
        content_type: o.content_type,
        modified: o.modified_at.format(&Rfc3339).unwrap_or_default(),
        description: o.description,
        poster,
        media: o.media.map(media),
        variants: o
            .variants
            .into_iter()
            .map(|(q, v)| {
                (
                    q,
                    Variant {
                        size: v.size,
                        encoder: v.encoder,
                    },
                )
            })
            .collect(),
    }
}

/// The query parameters of a request, percent-decoded (`+` is a space, as forms send it).
pub(super) fn query_params(query: Option<&str>) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Reads `limit`: 1..=`max`, `default` when absent.
pub(super) fn parse_limit(
    params: &BTreeMap<String, String>,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
    match params
        .get("limit")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("limit must be a number from 1 to {max}, not '{v}'"),
            )),
        },
    }
}

/// The catalog, or a 503 saying there is none.
pub(super) fn catalog(state: &ApiState) -> Result<&Catalog, ApiError> {
    state.catalog.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "no catalog is configured on this gateway",
        )
    })
}

/// A database problem as the API reports it: 503, the client may retry.
pub(super) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("{e}; retry shortly"),
    )
}

/// `GET /files?bucket=&prefix=&limit=&cursor=`.
pub async fn list(state: &ApiState, query: Option<&str>, gate: &super::Gate) -> ApiResult {
    let params = query_params(query);
    let bucket = params.get("bucket").map(String::as_str).unwrap_or("");
    if bucket.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "the bucket parameter is required (files?bucket=NAME)",
        ));
    }
    let prefix = params.get("prefix").map(String::as_str).unwrap_or("");
    gate.check(bucket, Some(prefix)).await?;
    // The folder is the truth: a bucket the catalog has not seen yet still lists (empty), a
    // missing one is a 404 as in S3, not an empty page.
    match state.store.bucket_fd(bucket) {
        Ok(_) => {}
        Err(crate::store::StoreError::NoSuchBucket) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                format!("bucket '{bucket}' does not exist"),
            ));
        }
        Err(crate::store::StoreError::InvalidBucketName(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidBucketName",
                format!("'{bucket}' is not a valid bucket name"),
            ));
        }
        Err(e) => return Err(unavailable(e)),
    }
    let limit = parse_limit(&params, DEFAULT_LIMIT, MAX_LIMIT)?;
    let cursor = params
        .get("cursor")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let page = catalog(state)?
        .list_objects(bucket, prefix, limit, cursor)
        .await
        .map_err(unavailable)?;
    ok(&FilePage {
        items: page.objects.into_iter().map(file_item).collect(),
        next_cursor: page.next_cursor,
    })
}
