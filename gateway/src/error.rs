//! The gateway's typed errors, and their one mapping to S3 error codes.

use s3s::{S3Error, S3ErrorCode};

/// Errors of the filesystem backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket folder does not exist.
    #[error("the specified bucket does not exist")]
    NoSuchBucket,
    /// The bucket name is not a valid S3 bucket name.
    #[error("the specified bucket name is not valid: {0}")]
    InvalidBucketName(String),
    /// CreateBucket on a bucket that exists (outside us-east-1).
    #[error("your previous request to create the named bucket succeeded and you already own it")]
    BucketAlreadyOwnedByYou,
    /// DeleteBucket on a bucket that still holds objects.
    #[error("the bucket you tried to delete is not empty")]
    BucketNotEmpty,
    /// The object does not exist.
    #[error("the specified key does not exist")]
    NoSuchKey,
    /// The multipart upload does not exist (or was completed or aborted).
    #[error("the specified multipart upload does not exist")]
    NoSuchUpload,
    /// The key breaks the rules that keep it inside its bucket.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The key is longer than S3 allows.
    #[error("your key is too long (the maximum is 1024 bytes)")]
    KeyTooLong,
    /// The key names a file where a folder is needed, or the reverse (`a` against `a/b`).
    #[error(
        "the key conflicts with an existing {0}: on this gateway a key cannot be both an object and a folder prefix"
    )]
    KeyConflict(&'static str),
    /// A request argument is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A supplied Content-MD5 or checksum does not match the data.
    #[error("{0}")]
    BadDigest(String),
    /// A supplied Content-MD5 or checksum header is malformed.
    #[error("{0}")]
    InvalidDigest(String),
    /// A precondition (If-Match, If-None-Match, ...) failed.
    #[error("at least one of the preconditions you specified did not hold")]
    PreconditionFailed,
    /// GET/HEAD conditional says the client's copy is current.
    #[error("not modified")]
    NotModified,
    /// The requested range does not overlap the object.
    #[error("the requested range is not satisfiable")]
    InvalidRange,
    /// Complete named a part that was not uploaded or whose ETag differs.
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
    EntityTooSmall(i32),
    /// The request is well-formed but not allowed (e.g. copy onto itself without changes).
    #[error("{0}")]
    InvalidRequest(String),
    /// The request body was cut short or the client went away.
    #[error("the request body could not be read: {0}")]
    Body(String),
    /// Any other I/O failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Classifies an I/O error from a lookup of an object path.
    pub fn from_lookup(err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
                StoreError::NoSuchKey
            }
            _ if err.raw_os_error() == Some(libc::ELOOP)
                || err.raw_os_error() == Some(libc::EXDEV) =>
            {
                StoreError::NoSuchKey
            }
            _ => StoreError::Io(err),
        }
    }
}

impl From<StoreError> for S3Error {
    fn from(err: StoreError) -> Self {
        let msg = err.to_string();
        let code = match &err {
            StoreError::NoSuchBucket => S3ErrorCode::NoSuchBucket,
            StoreError::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
            StoreError::BucketAlreadyOwnedByYou => S3ErrorCode::BucketAlreadyOwnedByYou,
            StoreError::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
            StoreError::NoSuchKey => S3ErrorCode::NoSuchKey,
            StoreError::NoSuchUpload => S3ErrorCode::NoSuchUpload,
            StoreError::InvalidKey(_) => S3ErrorCode::InvalidArgument,
            StoreError::KeyTooLong => S3ErrorCode::KeyTooLongError,
            StoreError::KeyConflict(_) => {
                return custom_error("KeyConflict", http::StatusCode::CONFLICT, msg);
            }
            StoreError::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
            StoreError::BadDigest(_) => S3ErrorCode::BadDigest,
            StoreError::InvalidDigest(_) => S3ErrorCode::InvalidDigest,
            StoreError::PreconditionFailed => S3ErrorCode::PreconditionFailed,
            StoreError::NotModified => S3ErrorCode::NotModified,
            StoreError::InvalidRange => S3ErrorCode::InvalidRange,
            StoreError::InvalidPart(_) => S3ErrorCode::InvalidPart,
            StoreError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
            StoreError::EntityTooSmall(_) => S3ErrorCode::EntityTooSmall,
            StoreError::InvalidRequest(_) => S3ErrorCode::InvalidRequest,
            StoreError::Body(_) => S3ErrorCode::IncompleteBody,
            StoreError::Io(e) => {
                tracing::error!(error = %e, "filesystem error");
                return S3Error::with_message(
                    S3ErrorCode::InternalError,
                    "the gateway could not access its data folder",
                );
            }
        };
        S3Error::with_message(code, msg)
    }
}

/// Result alias for the filesystem backend.
pub type StoreResult<T> = Result<T, StoreError>;

/// An S3 error with a code s3s does not know, and its status.
pub fn custom_error(
    code: &'static str,
    status: http::StatusCode,
    message: impl Into<String>,
) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message.into());
    e.set_status_code(status);
    e
}
