//! Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation.

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::access::Caller;

use super::{Gateway, RequestError, RequestResult, blocking, owner, timestamp};

/// S3's largest (and default) ListBuckets page.
const MAX_BUCKETS: i32 = 10_000;

/// ListBuckets: the buckets the caller can read, in name order, `max-buckets` at a time from
/// the `continuation-token` on, narrowed by `prefix` and `bucket-region` (every bucket is in
/// the gateway's region).
pub(crate) async fn list_buckets(
    gw: &Gateway,
    req: S3Request<ListBucketsInput>,
) -> RequestResult<S3Response<ListBucketsOutput>> {
    let input = req.input;
    let max = match input.max_buckets {
        None => MAX_BUCKETS,
        Some(n) if (1..=MAX_BUCKETS).contains(&n) => n,
        Some(_) => {
            return Err(RequestError::InvalidArgument(format!(
                "max-buckets must be an integer between 1 and {MAX_BUCKETS}"
            )));
        }
    } as usize;
    let after = input
        .continuation_token
        .as_deref()
        .map(super::list::decode_token)
        .transpose()?;
    let store = gw.store.clone();
    let prefix = input.prefix.clone();
    let caller = req.extensions.get::<Caller>();
    let other_region = input
        .bucket_region
        .as_deref()
        .is_some_and(|r| r != gw.region);
    let buckets = blocking(move || store.list_buckets()).await?;
    let mut buckets: Vec<Bucket> = buckets
        .into_iter()
        .filter(|_| !other_region)
        .filter(|b| prefix.as_deref().is_none_or(|p| b.name.starts_with(p)))
        .filter(|b| after.as_deref().is_none_or(|a| b.name.as_str() > a))
        .filter(|b| caller.is_none_or(|c| c.access.can_see(&c.who, &b.name)))
        .take(max + 1)
        .map(|b| Bucket {
            name: Some(b.name),
            creation_date: Some(timestamp(b.created)),
            bucket_region: Some(gw.region.clone()),
        })
        .collect();
    let truncated = buckets.len() > max;
    buckets.truncate(max);
    let continuation_token = truncated
        .then(|| buckets.last().and_then(|b| b.name.as_deref()))
        .flatten()
        .map(super::list::encode_token);
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner()),
        prefix: input.prefix,
        continuation_token,
    }))
}

/// CreateBucket: a folder (with object lock, which turns versioning on, when asked), owned by
/// the scoped key that created it. An owned bucket answers 200 in us-east-1 (AWS's legacy
/// behaviour) and BucketAlreadyOwnedByYou elsewhere.
pub(crate) async fn create_bucket(
    gw: &Gateway,
    req: S3Request<CreateBucketInput>,
) -> RequestResult<S3Response<CreateBucketOutput>> {
    let input = req.input;
    let constraint = input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        .map(|c| c.as_str().to_owned())
        .filter(|c| !c.is_empty());
    let expected = if gw.region == "us-east-1" {
        None
    } else {
        Some(gw.region.clone())
    };
    if constraint != expected && !(constraint.as_deref() == Some("us-east-1") && expected.is_none())
    {
        return Err(RequestError::IllegalLocationConstraint {
            constraint: constraint.unwrap_or_else(|| "unspecified".to_owned()),
            region: gw.region.clone(),
        });
    }
    let headers = super::acl::acl_headers!(input);
    let grants = super::acl::write_acl(gw, &input.bucket, headers, &req.extensions).await?;
    let store = gw.store.clone();
    let bucket = input.bucket.clone();
    let with_lock = input.object_lock_enabled_for_bucket == Some(true);
    let created = blocking(move || -> RequestResult<bool> {
        let created = store.create_bucket(&bucket)?;
        if created && with_lock {
            super::lock::enable_at_create(&store, &bucket)?;
        }
        Ok(created)
    })
    .await?;
    if created && let Some(c) = req.extensions.get::<Caller>() {
        // A scoped key owns the buckets it creates.
        c.access
            .created_bucket(&c.who, &input.bucket)
            .await
            .map_err(|e| {
                RequestError::Internal(format!("recording the new bucket's owner: {e}"))
            })?;
    }
    if created && let Some(grants) = grants {
        super::acl::set_new_bucket_acl(gw, &input.bucket, grants).await?;
    }
    if !created && gw.region != "us-east-1" {
        return Err(RequestError::BucketAlreadyOwnedByYou);
    }
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{}", input.bucket)),
    }))
}

/// HeadBucket.
pub(crate) async fn head_bucket(
    gw: &Gateway,
    req: S3Request<HeadBucketInput>,
) -> RequestResult<S3Response<HeadBucketOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    blocking(move || store.bucket_fd(&bucket).map(drop)).await?;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(gw.region.clone()),
        ..Default::default()
    }))
}

/// DeleteBucket: only when no object is left.
pub(crate) async fn delete_bucket(
    gw: &Gateway,
    req: S3Request<DeleteBucketInput>,
) -> RequestResult<S3Response<DeleteBucketOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    blocking(move || store.delete_bucket(&bucket)).await?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

/// GetBucketLocation: empty for us-east-1, as AWS answers.
pub(crate) async fn get_bucket_location(
    gw: &Gateway,
    req: S3Request<GetBucketLocationInput>,
) -> RequestResult<S3Response<GetBucketLocationOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    blocking(move || store.bucket_fd(&bucket).map(drop)).await?;
    let location_constraint =
        (gw.region != "us-east-1").then(|| BucketLocationConstraint::from(gw.region.clone()));
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint,
    }))
}
