//! The S3 layer's errors and their one mapping to what a client is told: S3 error code, HTTP
//! status and message ([`RequestError::into_s3`]).
//!
//! Handlers return [`RequestResult`]; store errors come in through `?` as
//! [`RequestError::Store`] and are mapped here too, so no other file builds an S3 error.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, StatusCode};
use s3s::S3ErrorCode;

use crate::store::StoreError;

/// Why an S3 request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The store refused or failed: no such bucket, key or upload, a bad key, a full disk...
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An error s3s raised itself (such as a failed check in a signed body stream), passed on.
    #[error("{0}")]
    Protocol(s3s::S3Error),
    /// A signed request names an access key this gateway does not have.
    #[error("The AWS Access Key Id you provided does not exist in our records.")]
    InvalidAccessKeyId,
    /// An unsigned request asked for more than the bucket's public-read rule allows.
    #[error("{0}")]
    AccessDenied(&'static str),
    /// PutBucketPolicy with a document that is not a policy this gateway can apply.
    #[error("{0}")]
    MalformedPolicy(String),
    /// GetPublicAccessBlock on a bucket without one.
    #[error("The public access block configuration was not found")]
    NoSuchPublicAccessBlockConfiguration,
    /// GetBucketPolicy on a bucket without one.
    #[error("The bucket policy does not exist")]
    NoSuchBucketPolicy,
    /// The caller's key (or an anonymous caller) may not do this (`crate::access`).
    #[error("{0}")]
    Forbidden(String),
    /// CreateBucket on a bucket that exists (outside us-east-1).
    #[error("your previous request to create the named bucket succeeded and you already own it")]
    BucketAlreadyOwnedByYou,
    /// CreateBucket named a region other than this gateway's.
    #[error(
        "The {constraint} location constraint is incompatible for the region specific endpoint this request was sent to ({region})."
    )]
    IllegalLocationConstraint {
        /// The constraint sent (`unspecified` if none).
        constraint: String,
        /// This gateway's region.
        region: String,
    },
    /// A request argument is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A supplied Content-MD5 or checksum header is malformed.
    #[error("{0}")]
    InvalidDigest(String),
    /// A supplied Content-MD5 or checksum does not match the data.
    #[error("{0}")]
    BadDigest(String),
    /// A precondition (If-Match, If-None-Match: * on a write, a copy-source condition) failed.
    #[error("at least one of the preconditions you specified did not hold")]
    PreconditionFailed,
    /// A conditional GET or HEAD: the client's copy is current (304, with its validators).
    #[error("not modified")]
    NotModified {
        /// The object's ETag, unquoted.
        etag: String,
        /// The object's Last-Modified, as an HTTP date.
        last_modified: String,
    },
    /// The requested range does not overlap the object.
    #[error("the requested range is not satisfiable")]
    InvalidRange,
    /// `partNumber` other than 1 of a single-part object.
    #[error("this gateway serves partNumber=1 of single-part objects only")]
    InvalidPartNumber,
    /// Complete named a part that was not uploaded or whose ETag or checksum differs.
    #[error(
        "one or more of the specified parts could not be found, or the ETag did not match: {0}"
    )]
    InvalidPart(String),
    /// Complete listed parts out of ascending order.
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    /// A part other than the last is smaller than 5 MiB.
    #[error(
        "your proposed upload is smaller than the minimum allowed size (part {0} is under 5 MiB)"
    )]
    EntityTooSmall(u32),
    /// The request is well-formed but not allowed (e.g. copy onto itself without changes).
    #[error("{0}")]
    InvalidRequest(String),
    /// The XML body is well-formed but says something S3 does not accept.
    #[error("{0}")]
    MalformedXml(&'static str),
    /// A feature this gateway does not offer.
    #[error("{0}")]
    NotImplemented(&'static str),
    /// A request S3 answers with a plain `400 BadRequest` (too many tags).
    #[error("{0}")]
    BadRequest(String),
    /// A tag set breaks S3's rules (lengths, duplicate keys, `aws:` prefix).
    #[error("{0}")]
    InvalidTag(String),
    /// GetBucketTagging on a bucket without tags.
    #[error("The TagSet does not exist")]
    NoSuchTagSet,
    /// A version id other than `null` (this object has no other version).
    #[error("The specified version does not exist.")]
    NoSuchVersion,
    /// GetBucketCors on a bucket without CORS rules.
    #[error("The CORS configuration does not exist")]
    NoSuchCorsConfiguration,
    /// The request body was cut short or the client went away.
    #[error("the request body could not be read: {0}")]
    IncompleteBody(String),
    /// The body does not hash to the `x-amz-content-sha256` the client signed.
    #[error("the provided 'x-amz-content-sha256' header does not match what was computed")]
    ContentSha256Mismatch,
    /// An aws-chunked body's chunk signature is wrong.
    #[error("the chunk signature we calculated does not match the signature you provided")]
    ChunkSignatureMismatch,
    /// The object is not something the media extension can work on.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The media extension is busy: retry after this many seconds.
    #[error("{message}")]
    SlowDown {
        /// What is busy.
        message: String,
        /// The `Retry-After` seconds.
        retry_after: u32,
    },
    /// The bucket's state does not allow the change (e.g. suspending versioning under object
    /// lock).
    #[error("{0}")]
    InvalidBucketState(&'static str),
    /// The bucket has no lifecycle configuration.
    #[error("The lifecycle configuration does not exist")]
    NoLifecycleConfiguration,
    /// The bucket has no object lock configuration.
    #[error("Object Lock configuration does not exist for this bucket")]
    NoLockConfiguration,
    /// The version has no retention to report.
    #[error("The specified object does not have a ObjectLock configuration")]
    NoObjectLockSetting,
    /// The version read is a delete marker: 404 NoSuchKey for the latest version, 405
    /// MethodNotAllowed when asked for by id; both say so in `x-amz-delete-marker`.
    #[error("{}", if *by_id { "the specified method is not allowed against a delete marker" } else { "the specified key does not exist" })]
    DeleteMarker {
        /// The marker's version id.
        version_id: String,
        /// True when the request named the version.
        by_id: bool,
    },
    /// An ACL S3 would refuse (malformed, an unknown grantee, a canned ACL and grants).
    #[error(transparent)]
    Acl(#[from] crate::access::acl::AclError),
    /// The gateway failed, not the client (a worker panicked, a transcode broke).
    #[error("{0}")]
    Internal(String),
}

/// Result alias for the S3 layer.
pub type RequestResult<T> = Result<T, RequestError>;

impl From<s3s::S3Error> for RequestError {
    fn from(e: s3s::S3Error) -> Self {
        RequestError::Protocol(e)
    }
}

impl From<std::io::Error> for RequestError {
    /// I/O the S3 layer does itself (request bodies into temp files) fails as the store's does.
    fn from(e: std::io::Error) -> Self {
        RequestError::Store(StoreError::from(e))
    }
}

impl From<nebula_media::MediaError> for RequestError {
    /// What the media extension's failures mean to a client: busy (or a segment not ready in
    /// time) is a 503 to retry, a source that is not a video is the client's 415, a poster
    /// width or moment out of bounds or a segment past the end is InvalidArgument, a vanished
    /// source is NoSuchKey, the rest is ours.
    fn from(e: nebula_media::MediaError) -> Self {
        use nebula_media::MediaError as M;
        match e {
            M::Busy(_) => RequestError::SlowDown {
                message: e.to_string(),
                retry_after: 5,
            },
            M::StillProducing => RequestError::SlowDown {
                message: e.to_string(),
                retry_after: 10,
            },
            // An HLS segment still encoding on a loaded machine: players retry.
            M::Timeout(_) => RequestError::SlowDown {
                message: e.to_string(),
                retry_after: 2,
            },
            M::NoSuchSegment(n) => RequestError::InvalidArgument(format!(
                "no segment {n}: the media playlist lists every segment of this source"
            )),
            M::NotVideo(m) | M::NotMedia(m) => RequestError::UnsupportedMediaType(format!(
                "the object is not a video this gateway can transcode: {m}"
            )),
            M::InvalidPoster(m) => RequestError::InvalidArgument(m),
            M::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                RequestError::Store(StoreError::NoSuchKey)
            }
            other => RequestError::Internal(format!("transcode failed: {other}")),
        }
    }
}

impl From<RequestError> for s3s::S3Error {
    fn from(e: RequestError) -> Self {
        e.into_s3()
    }
}

/// An S3 code s3s has no name for, with its status.
fn custom(code: &'static str, status: StatusCode) -> (S3ErrorCode, Option<StatusCode>) {
    (S3ErrorCode::Custom(code.into()), Some(status))
}

impl RequestError {
    /// The one mapping to S3 codes, with the status where s3s does not know it from the code.
    fn code(&self) -> (S3ErrorCode, Option<StatusCode>) {
        use S3ErrorCode as C;
        let known = match self {
            RequestError::Store(e) => match e {
                StoreError::NoSuchBucket => C::NoSuchBucket,
                StoreError::InvalidBucketName(_) => C::InvalidBucketName,
                StoreError::BucketNotEmpty => C::BucketNotEmpty,
                StoreError::NoSuchKey => C::NoSuchKey,
                StoreError::NoSuchUpload => C::NoSuchUpload,
                StoreError::NoSuchPart(_) => C::InvalidPart,
                StoreError::InvalidKey(_) => C::InvalidArgument,
                StoreError::KeyTooLong => C::KeyTooLongError,
                StoreError::NoSuchVersion => C::NoSuchVersion,
                StoreError::InvalidVersionId => C::InvalidArgument,
                StoreError::IsDeleteMarker => C::MethodNotAllowed,
                StoreError::ObjectLocked(_) => C::AccessDenied,
                StoreError::Unsupported(_) => C::NotImplemented,
                StoreError::Exists => C::PreconditionFailed,
                StoreError::SlotOverflow => C::InvalidRequest,
                // S3 has no code for a full disk; WebDAV's 507 says what it is. The reserve
                // refusing a write early is the same condition, told before it happens.
                StoreError::NoSpace(_) | StoreError::BelowReserve(_) => {
                    return custom("InsufficientStorage", StatusCode::INSUFFICIENT_STORAGE);
                }
                StoreError::Io(_) => C::InternalError,
            },
            RequestError::Protocol(e) => e.code().clone(),
            RequestError::InvalidAccessKeyId => C::InvalidAccessKeyId,
            RequestError::AccessDenied(_) | RequestError::Forbidden(_) => C::AccessDenied,
            RequestError::MalformedPolicy(_) => C::MalformedPolicy,
            RequestError::NoSuchBucketPolicy => C::NoSuchBucketPolicy,
            RequestError::NoSuchPublicAccessBlockConfiguration => {
                return custom(
                    "NoSuchPublicAccessBlockConfiguration",
                    StatusCode::NOT_FOUND,
                );
            }
            RequestError::BucketAlreadyOwnedByYou => C::BucketAlreadyOwnedByYou,
            RequestError::IllegalLocationConstraint { .. } => {
                return custom(
                    "IllegalLocationConstraintException",
                    StatusCode::BAD_REQUEST,
                );
            }
            RequestError::InvalidArgument(_) => C::InvalidArgument,
            RequestError::InvalidDigest(_) => C::InvalidDigest,
            RequestError::BadDigest(_) => C::BadDigest,
            RequestError::PreconditionFailed => C::PreconditionFailed,
            RequestError::NotModified { .. } => C::NotModified,
            RequestError::InvalidRange => C::InvalidRange,
            RequestError::InvalidPartNumber => {
                return custom("InvalidPartNumber", StatusCode::RANGE_NOT_SATISFIABLE);
            }
            RequestError::InvalidPart(_) => C::InvalidPart,
            RequestError::InvalidPartOrder => C::InvalidPartOrder,
            RequestError::EntityTooSmall(_) => C::EntityTooSmall,
            RequestError::InvalidRequest(_) => C::InvalidRequest,
            RequestError::MalformedXml(_) => C::MalformedXML,
            RequestError::NotImplemented(_) => C::NotImplemented,
            RequestError::NoSuchCorsConfiguration => C::NoSuchCORSConfiguration,
            RequestError::BadRequest(_) => {
                return custom("BadRequest", StatusCode::BAD_REQUEST);
            }
            RequestError::InvalidTag(_) => C::InvalidTag,
            RequestError::NoSuchTagSet => C::NoSuchTagSet,
            RequestError::NoSuchVersion => C::NoSuchVersion,
            RequestError::IncompleteBody(_) => C::IncompleteBody,
            RequestError::ContentSha256Mismatch => {
                return custom("XAmzContentSHA256Mismatch", StatusCode::BAD_REQUEST);
            }
            RequestError::ChunkSignatureMismatch => C::SignatureDoesNotMatch,
            RequestError::UnsupportedMediaType(_) => {
                return custom("UnsupportedMediaType", StatusCode::UNSUPPORTED_MEDIA_TYPE);
            }
            RequestError::SlowDown { .. } => C::SlowDown,
            RequestError::InvalidBucketState(_) => C::InvalidBucketState,
            RequestError::NoLockConfiguration => {
                return custom(
                    "ObjectLockConfigurationNotFoundError",
                    StatusCode::NOT_FOUND,
                );
            }
            RequestError::NoObjectLockSetting => C::NoSuchObjectLockConfiguration,
            RequestError::NoLifecycleConfiguration => C::NoSuchLifecycleConfiguration,
            RequestError::DeleteMarker { by_id: true, .. } => C::MethodNotAllowed,
            RequestError::DeleteMarker { by_id: false, .. } => C::NoSuchKey,
            RequestError::Acl(e) => match e {
                crate::access::acl::AclError::Malformed(_) => C::MalformedACLError,
                crate::access::acl::AclError::InvalidArgument(_) => C::InvalidArgument,
                crate::access::acl::AclError::Email => C::UnresolvableGrantByEmailAddress,
                crate::access::acl::AclError::Both => C::InvalidRequest,
            },
            RequestError::Internal(_) => C::InternalError,
        };
        (known, None)
    }

    /// The message the client reads; failures of the gateway itself are logged here.
    fn message(&self) -> String {
        match self {
            RequestError::Store(StoreError::NoSpace(e)) => {
                tracing::error!(error = %e, "the data folder is full");
                self.to_string()
            }
            RequestError::Store(StoreError::BelowReserve(m)) => {
                tracing::warn!("write refused: {m}");
                m.clone()
            }
            RequestError::Store(StoreError::Io(e)) => {
                tracing::error!(error = %e, "filesystem error");
                "the gateway could not access its data folder".to_owned()
            }
            RequestError::Store(StoreError::NoSuchPart(_)) => {
                RequestError::InvalidPart(self.to_string()).to_string()
            }
            RequestError::Store(StoreError::Exists) => RequestError::PreconditionFailed.to_string(),
            RequestError::Internal(m) => {
                tracing::warn!(error = %m, "request failed inside the gateway");
                self.to_string()
            }
            _ => self.to_string(),
        }
    }

    /// Headers the error response carries: a 304's validators, a 503's `Retry-After`, a delete
    /// marker's `x-amz-delete-marker` and `x-amz-version-id`.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        match self {
            RequestError::NotModified {
                etag,
                last_modified,
            } => {
                if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                    headers.insert(http::header::ETAG, v);
                }
                if let Ok(v) = HeaderValue::from_str(last_modified) {
                    headers.insert(http::header::LAST_MODIFIED, v);
                }
            }
            RequestError::SlowDown { retry_after, .. } => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            RequestError::DeleteMarker { version_id, .. } => {
                headers.insert("x-amz-delete-marker", HeaderValue::from_static("true"));
                if let Ok(v) = HeaderValue::from_str(version_id) {
                    headers.insert("x-amz-version-id", v);
                }
            }
            _ => {}
        }
        headers
    }

    /// The error as s3s sends it: code, status, message and headers.
    pub fn into_s3(self) -> s3s::S3Error {
        if let RequestError::Protocol(e) = self {
            return e;
        }
        let (code, status) = self.code();
        let mut e = s3s::S3Error::with_message(code, self.message());
        if let Some(status) = status {
            e.set_status_code(status);
        }
        let headers = self.headers();
        if !headers.is_empty() {
            e.set_headers(headers);
        }
        e
    }
}

/// An S3 XML error response built outside s3s (the front's refusals, CORS preflights).
pub(crate) fn xml_response(
    status: StatusCode,
    code: &str,
    message: &str,
) -> http::Response<s3s::Body> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
        esc(code),
        esc(message)
    );
    let mut resp = http::Response::new(s3s::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    resp
}

/// The HTTP date of a file time, for `Last-Modified`.
pub(crate) fn http_date(t: SystemTime) -> String {
    super::format_http_date(&s3s::dto::Timestamp::from(t)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(e: impl Into<RequestError>) -> s3s::S3Error {
        e.into().into_s3()
    }

    #[test]
    fn a_full_disk_is_insufficient_storage_not_an_internal_error() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = sent(std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.code().as_str(), "InsufficientStorage");
            assert_eq!(e.status_code(), Some(StatusCode::INSUFFICIENT_STORAGE));
            assert_eq!(
                e.message(),
                Some("there is no space left in the gateway's data folder")
            );
        }
        let e = sent(StoreError::BelowReserve(
            "not enough free space: ...".into(),
        ));
        assert_eq!(e.code().as_str(), "InsufficientStorage");
        assert_eq!(e.status_code(), Some(StatusCode::INSUFFICIENT_STORAGE));
        assert_eq!(e.message(), Some("not enough free space: ..."));
        let e = sent(std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.code(), &S3ErrorCode::InternalError);
        assert_eq!(
            e.message(),
            Some("the gateway could not access its data folder")
        );
    }

    #[test]
    fn codes_s3s_does_not_know_carry_their_status() {
        let cases = [
            (
                sent(RequestError::InvalidPartNumber),
                "InvalidPartNumber",
                StatusCode::RANGE_NOT_SATISFIABLE,
            ),
            (
                sent(RequestError::ContentSha256Mismatch),
                "XAmzContentSHA256Mismatch",
                StatusCode::BAD_REQUEST,
            ),
            (
                sent(RequestError::UnsupportedMediaType("x".into())),
                "UnsupportedMediaType",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code().as_str(), code);
            assert_eq!(e.status_code(), Some(status), "{code}");
        }
    }

    #[test]
    fn store_refusals_keep_their_s3_codes_and_messages() {
        let e = sent(StoreError::Exists);
        assert_eq!(e.code(), &S3ErrorCode::PreconditionFailed);
        assert_eq!(
            e.message(),
            Some("at least one of the preconditions you specified did not hold")
        );
        let e = sent(StoreError::NoSuchPart(3));
        assert_eq!(e.code(), &S3ErrorCode::InvalidPart);
        assert_eq!(
            e.message(),
            Some(
                "one or more of the specified parts could not be found, or the ETag did not match: part 3 was not uploaded"
            )
        );
        assert_eq!(sent(StoreError::NoSuchKey).code(), &S3ErrorCode::NoSuchKey);
        assert_eq!(
            sent(StoreError::InvalidKey("x".into())).code(),
            &S3ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn not_modified_and_slow_down_carry_their_headers() {
        let e = sent(RequestError::NotModified {
            etag: "abc".into(),
            last_modified: "Sun, 06 Dec 2026 17:00:00 GMT".into(),
        });
        let h = e.headers().expect("validators");
        assert_eq!(h[http::header::ETAG], "\"abc\"");
        assert_eq!(
            h[http::header::LAST_MODIFIED],
            "Sun, 06 Dec 2026 17:00:00 GMT"
        );
        let e = sent(RequestError::SlowDown {
            message: "busy".into(),
            retry_after: 5,
        });
        assert_eq!(e.code(), &S3ErrorCode::SlowDown);
        assert_eq!(e.headers().expect("retry")[http::header::RETRY_AFTER], "5");
    }

    #[test]
    fn media_errors_map_through_the_same_mapping() {
        use nebula_media::MediaError;
        let e = sent(MediaError::Busy(2));
        assert_eq!(e.code(), &S3ErrorCode::SlowDown);
        assert_eq!(e.status_code(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(
            e.message(),
            Some("all 2 transcode slots are busy; retry shortly")
        );
        assert_eq!(e.headers().expect("retry")[http::header::RETRY_AFTER], "5");
        let e = sent(MediaError::StillProducing);
        assert_eq!(e.code(), &S3ErrorCode::SlowDown);
        assert_eq!(e.headers().expect("retry")[http::header::RETRY_AFTER], "10");
        let e = sent(MediaError::NotVideo("audio only".into()));
        assert_eq!(e.code().as_str(), "UnsupportedMediaType");
        assert_eq!(e.status_code(), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        assert_eq!(
            e.message(),
            Some("the object is not a video this gateway can transcode: audio only")
        );
        let e = sent(MediaError::InvalidPoster("width 0".into()));
        assert_eq!(e.code(), &S3ErrorCode::InvalidArgument);
        assert_eq!(e.message(), Some("width 0"));
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(sent(MediaError::Io(gone)).code(), &S3ErrorCode::NoSuchKey);
        let e = sent(MediaError::Pipeline("boom".into()));
        assert_eq!(e.code(), &S3ErrorCode::InternalError);
        assert_eq!(
            e.message(),
            Some("transcode failed: GStreamer pipeline error: boom")
        );
    }

    #[test]
    fn auth_refusals_are_mapped_here_too() {
        let e = sent(RequestError::InvalidAccessKeyId);
        assert_eq!(e.code(), &S3ErrorCode::InvalidAccessKeyId);
        assert_eq!(e.status_code(), Some(StatusCode::FORBIDDEN));
        let e = sent(RequestError::AccessDenied("no"));
        assert_eq!(e.code(), &S3ErrorCode::AccessDenied);
        assert_eq!(e.status_code(), Some(StatusCode::FORBIDDEN));
        assert_eq!(e.message(), Some("no"));
    }
}
