//! Bucket policies: PutBucketPolicy, GetBucketPolicy, DeleteBucketPolicy and
//! GetBucketPolicyStatus. The document is kept as sent in the bucket's settings
//! ([`Setting::Policy`]); `crate::access::policy` parses it (here, to refuse a malformed one
//! with MalformedPolicy) and applies it to every request.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::{Gateway, RequestError, RequestResult, blocking};
use crate::access::policy::Policy;
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
    Policy::parse(input.policy.as_bytes(), &input.bucket)
        .map_err(|e| RequestError::MalformedPolicy(e.0))?;
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
