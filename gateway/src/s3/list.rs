//! ListObjects (V1) and ListObjectsV2. (Being written.)

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::Gateway;

pub(crate) async fn list_objects(_gw: &Gateway, _req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
    Err(s3_error!(NotImplemented))
}

pub(crate) async fn list_objects_v2(_gw: &Gateway, _req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
    Err(s3_error!(NotImplemented))
}
