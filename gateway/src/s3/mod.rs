//! The S3 API over the filesystem store, one operation family per file (as Garage's
//! `src/api/s3/`):
//!
//! - `bucket.rs`: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation;
//! - `acl.rs`: Put/GetBucketAcl, Put/GetObjectAcl and the ACL writes set (what grants allow
//!   is `crate::access::acl`);
//! - `versioning.rs`: Put/GetBucketVersioning and ListObjectVersions;
//! - `lifecycle.rs`: Put/Get/DeleteBucketLifecycleConfiguration and `x-amz-expiration`
//!   (the sweeper is [`crate::lifecycle`]);
//! - `lock.rs`: object lock (the bucket's configuration, a version's retention and legal hold);
//! - `get.rs`: GetObject and HeadObject, which share one conditional set and one set of
//!   output headers;
//! - `put.rs`: PutObject and what writes share (metadata, write preconditions), with
//!   `receive.rs` streaming and hashing request bodies;
//! - `copy.rs`: CopyObject and UploadPartCopy;
//! - `cors.rs`: Put/Get/DeleteBucketCors, and the preflights and CORS headers the front adds;
//! - `delete.rs`: DeleteObject and DeleteObjects;
//! - `list.rs`: ListObjects, ListObjectsV2, ListParts and ListMultipartUploads;
//! - `post.rs`: PostObject (browser form uploads), with what the front adds for it;
//! - `multipart.rs`: CreateMultipartUpload, UploadPart, CompleteMultipartUpload and
//!   AbortMultipartUpload;
//! - `policy.rs`: Put/Get/DeleteBucketPolicy, GetBucketPolicyStatus and
//!   Put/Get/DeletePublicAccessBlock (the policies themselves are applied by `crate::access`);
//! - `media.rs` and `hls.rs`: the media extension of GetObject (renditions, posters, HLS),
//!   called from `get.rs` only, with `presign.rs` writing the presigned URLs inside playlists;
//! - `tagging.rs`: object and bucket tags (object tags live in the object's metadata);
//! - `checksum.rs` (Content-MD5, `x-amz-checksum-*`) and `conditional.rs` (`If-*` headers)
//!   serve all of them.
//!
//! Every failure is a [`RequestError`] (`error.rs`), mapped once to the S3 code, status and
//! message the client sees; the store's own errors come in through it. Keys become paths, and
//! every byte is read and written, in [`crate::store`].

pub mod acl;
mod bucket;
mod checksum;
mod conditional;
mod copy;
mod cors;
mod delete;
mod error;
mod get;
mod hls;
mod lifecycle;
mod list;
mod lock;
mod media;
mod multipart;
mod policy;
pub mod post;
mod presign;
mod put;
mod receive;
mod tagging;
mod versioning;

use std::sync::Arc;
use std::time::SystemTime;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

use nebula_media::MediaService;

use crate::events::Subscribers;
use crate::store::Store;
use crate::store::keys::{ObjectPath, parse_key};
use crate::store::meta::ObjectMeta;

pub(crate) use crate::store::read::blocking;

/// The S3 service: the filesystem store plus the gateway's settings.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The filesystem backend.
    pub store: Arc<Store>,
    /// The region this gateway answers for.
    pub region: String,
    /// Told about every write and delete (renditions store, catalog, auto-transcode rules).
    pub events: Subscribers,
    /// The media extension (live transcodes, renditions), when GStreamer is available.
    pub media: Option<Arc<MediaService>>,
    /// The length of a lifecycle "day" (a real day unless shortened for tests).
    pub lifecycle_day: std::time::Duration,
}

impl Gateway {
    /// A gateway over `store` answering for `region`.
    pub fn new(store: Arc<Store>, region: String) -> Self {
        Gateway {
            store,
            region,
            events: Subscribers::default(),
            media: None,
            lifecycle_day: crate::lifecycle::DAY,
        }
    }

    /// Reports a committed write to the subscribers.
    pub(crate) async fn written(&self, bucket: &str, key: &str, meta: &ObjectMeta) {
        self.events.written(bucket, key, meta).await;
    }

    /// Reports a delete to the subscribers.
    pub(crate) async fn deleted(&self, bucket: &str, key: &str) {
        self.events.deleted(bucket, key).await;
    }
}

pub use cors::Cors;
pub(crate) use error::xml_response;
pub use error::{RequestError, RequestResult};

/// Validates a key.
pub(crate) fn object_path(key: &str) -> RequestResult<ObjectPath> {
    Ok(parse_key(key)?)
}

/// The single owner every bucket, object and upload has on this gateway (the id ACLs name).
pub(crate) fn owner() -> Owner {
    Owner {
        display_name: Some(crate::access::acl::OWNER_ID.into()),
        id: Some(crate::access::acl::OWNER_ID.into()),
    }
}

/// What `encoding-type=url` escapes: everything but RFC 3986's unreserved characters and `/`,
/// as S3 does. CompleteMultipartUpload's Location is escaped the same way.
const URL_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// A key (or prefix, delimiter, marker) escaped as `encoding-type=url` asks.
pub(crate) fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, URL_ESCAPE).to_string()
}

/// Converts a filesystem time to an S3 timestamp.
pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from(t)
}

/// Quoted ETag as S3 returns it.
pub(crate) fn etag_of(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.clone())
}

/// Parses an HTTP date as stored for `Expires`.
pub(crate) fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

/// Formats a timestamp as an HTTP date for storage.
pub(crate) fn format_http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        bucket::list_buckets(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        bucket::create_bucket(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        bucket::head_bucket(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        bucket::delete_bucket(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        versioning::get_bucket_versioning(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        versioning::put_bucket_versioning(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        versioning::list_object_versions(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        acl::get_bucket_acl(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        acl::get_object_acl(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        acl::put_bucket_acl(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        acl::put_object_acl(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        tagging::put_object_tagging(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        tagging::get_object_tagging(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        tagging::delete_object_tagging(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        tagging::put_bucket_tagging(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        tagging::get_bucket_tagging(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        tagging::delete_bucket_tagging(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        cors::put_bucket_cors(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        cors::get_bucket_cors(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        cors::delete_bucket_cors(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        put::put_object(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn post_object(
        &self,
        req: S3Request<PostObjectInput>,
    ) -> S3Result<S3Response<PostObjectOutput>> {
        post::post_object(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        get::get_object(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        get::get_object_attributes(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        get::head_object(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        delete::delete_object(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        delete::delete_objects(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        copy::copy_object(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        list::list_objects(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        list::list_objects_v2(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        copy::upload_part_copy(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        list::list_parts(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        list::list_multipart_uploads(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        policy::put_bucket_policy(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        policy::get_bucket_policy(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        policy::delete_bucket_policy(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        policy::get_bucket_policy_status(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        lock::put_object_lock_configuration(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        lock::get_object_lock_configuration(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        lock::put_object_retention(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        lock::get_object_retention(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        lock::put_object_legal_hold(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        lock::get_object_legal_hold(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        lifecycle::put_bucket_lifecycle_configuration(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        lifecycle::get_bucket_lifecycle_configuration(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        lifecycle::delete_bucket_lifecycle(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        policy::put_public_access_block(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        policy::get_public_access_block(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        policy::delete_public_access_block(self, req)
            .await
            .map_err(RequestError::into_s3)
    }
}
