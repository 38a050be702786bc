//! The store's errors: what went wrong with the data folder, in the store's own terms. The S3
//! layer maps each to what a client is told, once, in `s3/error.rs`.

/// Errors of the filesystem store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket folder does not exist.
    #[error("the specified bucket does not exist")]
    NoSuchBucket,
    /// The bucket name is not a valid S3 bucket name.
    #[error("the specified bucket name is not valid: {0}")]
    InvalidBucketName(String),
    /// DeleteBucket on a bucket that still holds objects.
    #[error("the bucket you tried to delete is not empty")]
    BucketNotEmpty,
    /// The object does not exist.
    #[error("the specified key does not exist")]
    NoSuchKey,
    /// The version id names no version of the key.
    #[error("the specified version does not exist")]
    NoSuchVersion,
    /// The version id is not one this gateway hands out.
    #[error("invalid version id specified")]
    InvalidVersionId,
    /// The version asked for is a delete marker, which has no bytes or settings.
    #[error("the specified version is a delete marker")]
    IsDeleteMarker,
    /// Object lock protects the version from being deleted or overwritten.
    #[error("access denied: {0}")]
    ObjectLocked(&'static str),
    /// The data folder cannot offer this (e.g. versioning without user xattrs).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The multipart upload does not exist (or was completed or aborted).
    #[error("the specified multipart upload does not exist")]
    NoSuchUpload,
    /// A completion named a part the upload does not hold.
    #[error("part {0} was not uploaded")]
    NoSuchPart(u32),
    /// The key breaks the rules that keep it inside its bucket.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The key is longer than S3 allows.
    #[error("your key is too long (the maximum is 1024 bytes)")]
    KeyTooLong,
    /// A create-only commit found the key already taken.
    #[error("the key already exists")]
    Exists,
    /// A part written in place ran past its slot.
    #[error("the part is larger than its declared length")]
    SlotOverflow,
    /// The data folder's filesystem is full (or the gateway's quota on it is used up).
    #[error("there is no space left in the gateway's data folder")]
    NoSpace(#[source] std::io::Error),
    /// A write would leave less free space than the reserve (`--min-free`) on a filesystem
    /// the gateway writes to; the message says which, and how much is free.
    #[error("{0}")]
    BelowReserve(String),
    /// Any other I/O failure.
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
}

impl From<std::io::Error> for StoreError {
    /// A full disk is told apart from other I/O failures: it is not the gateway's fault and the
    /// operator can act on it.
    fn from(err: std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::NoSpace(err),
            _ => StoreError::Io(err),
        }
    }
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
            _ => StoreError::from(err),
        }
    }
}

/// Result alias for the filesystem store.
pub type StoreResult<T> = Result<T, StoreError>;
