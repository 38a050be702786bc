//! Bucket policies: PutBucketPolicy, GetBucketPolicy, DeleteBucketPolicy and
//! GetBucketPolicyStatus, and the public access block that can override them:
//! Put/Get/DeletePublicAccessBlock. The document is kept as sent in the bucket's settings
//! ([`Setting::Policy`]); `crate::access::policy` parses it (here, to refuse a malformed one
//! with MalformedPolicy) and applies it to every request.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::{Gateway, RequestError, RequestResult, blocking};
use crate::access::policy::{Policy, PublicAccessBlock};
use crate::store::settings::Setting;

/// The bucket's policy document, or NoSuchBucketPolicy (NoSuchBucket for a missing bucket).
async fn stored(gw: &Gateway, bucket: &str) -> RequestResult<Option<std::sync::Arc<[u8]>>> {
    let store = gw.store.clone();
    let bucket = bucket.to_owned();
    Ok(blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().get(&bucket, Setting::Policy)
    })
    .await?)
}

/// PutBucketPolicy: the document must parse and name only this bucket's resources.
pub(crate) async fn put_bucket_policy(
    gw: &Gateway,
    req: S3Request<PutBucketPolicyInput>,
) -> RequestResult<S3Response<PutBucketPolicyOutput>> {
    let input = req.input;
    let policy = Policy::parse(input.policy.as_bytes(), &input.bucket)
        .map_err(|e| RequestError::MalformedPolicy(e.0))?;
    if policy.is_public()
        && crate::access::public_access_block(&gw.store, &input.bucket).block_public_policy
    {
        return Err(RequestError::Forbidden(
            "the bucket's public access block (BlockPublicPolicy) refuses public policies".into(),
        ));
    }
    let store = gw.store.clone();
    blocking(move || {
        store.bucket_fd(&input.bucket)?;
        store
            .settings()
            .put(&input.bucket, Setting::Policy, input.policy.as_bytes())
    })
    .await?;
    Ok(S3Response::new(PutBucketPolicyOutput::default()))
}

/// GetBucketPolicy: the document as it was put.
pub(crate) async fn get_bucket_policy(
    gw: &Gateway,
    req: S3Request<GetBucketPolicyInput>,
) -> RequestResult<S3Response<GetBucketPolicyOutput>> {
    let doc = stored(gw, &req.input.bucket)
        .await?
        .ok_or(RequestError::NoSuchBucketPolicy)?;
    Ok(S3Response::new(GetBucketPolicyOutput {
        policy: Some(String::from_utf8_lossy(&doc).into_owned()),
    }))
}

/// DeleteBucketPolicy (no error when there was none).
pub(crate) async fn delete_bucket_policy(
    gw: &Gateway,
    req: S3Request<DeleteBucketPolicyInput>,
) -> RequestResult<S3Response<DeleteBucketPolicyOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().delete(&bucket, Setting::Policy)
    })
    .await?;
    Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
}

/// GetBucketPolicyStatus: public when a statement allows something to everyone without a
/// condition.
pub(crate) async fn get_bucket_policy_status(
    gw: &Gateway,
    req: S3Request<GetBucketPolicyStatusInput>,
) -> RequestResult<S3Response<GetBucketPolicyStatusOutput>> {
    let bucket = req.input.bucket;
    let doc = stored(gw, &bucket)
        .await?
        .ok_or(RequestError::NoSuchBucketPolicy)?;
    let public = Policy::parse(&doc, &bucket).is_ok_and(|p| p.is_public());
    Ok(S3Response::new(GetBucketPolicyStatusOutput {
        policy_status: Some(PolicyStatus {
            is_public: Some(public),
        }),
    }))
}

fn setting_of(v: Option<bool>) -> bool {
    v.unwrap_or(false)
}

/// PutPublicAccessBlock: the four switches, kept as the bucket's Setting::PublicAccessBlock.
pub(crate) async fn put_public_access_block(
    gw: &Gateway,
    req: S3Request<PutPublicAccessBlockInput>,
) -> RequestResult<S3Response<PutPublicAccessBlockOutput>> {
    let input = req.input;
    let c = &input.public_access_block_configuration;
    let block = PublicAccessBlock {
        block_public_acls: setting_of(c.block_public_acls),
        ignore_public_acls: setting_of(c.ignore_public_acls),
        block_public_policy: setting_of(c.block_public_policy),
        restrict_public_buckets: setting_of(c.restrict_public_buckets),
    };
    let doc = serde_json::to_vec(&block).map_err(|e| RequestError::Internal(e.to_string()))?;
    let store = gw.store.clone();
    blocking(move || {
        store.bucket_fd(&input.bucket)?;
        store
            .settings()
            .put(&input.bucket, Setting::PublicAccessBlock, &doc)
    })
    .await?;
    Ok(S3Response::new(PutPublicAccessBlockOutput::default()))
}

/// GetPublicAccessBlock: NoSuchPublicAccessBlockConfiguration when the bucket has none.
pub(crate) async fn get_public_access_block(
    gw: &Gateway,
    req: S3Request<GetPublicAccessBlockInput>,
) -> RequestResult<S3Response<GetPublicAccessBlockOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    let doc = blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().get(&bucket, Setting::PublicAccessBlock)
    })
    .await?
    .ok_or(RequestError::NoSuchPublicAccessBlockConfiguration)?;
    let b: PublicAccessBlock =
        serde_json::from_slice(&doc).map_err(|e| RequestError::Internal(e.to_string()))?;
    Ok(S3Response::new(GetPublicAccessBlockOutput {
        public_access_block_configuration: Some(PublicAccessBlockConfiguration {
            block_public_acls: Some(b.block_public_acls),
            ignore_public_acls: Some(b.ignore_public_acls),
            block_public_policy: Some(b.block_public_policy),
            restrict_public_buckets: Some(b.restrict_public_buckets),
        }),
    }))
}

/// DeletePublicAccessBlock (no error when there was none).
pub(crate) async fn delete_public_access_block(
    gw: &Gateway,
    req: S3Request<DeletePublicAccessBlockInput>,
) -> RequestResult<S3Response<DeletePublicAccessBlockOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().delete(&bucket, Setting::PublicAccessBlock)
    })
    .await?;
    Ok(S3Response::new(DeletePublicAccessBlockOutput::default()))
}
