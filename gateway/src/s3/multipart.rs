//! Multipart uploads. (Being written.)

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::Gateway;

pub(crate) async fn create_multipart_upload(_gw: &Gateway, _req: S3Request<CreateMultipartUploadInput>) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    Err(s3_error!(NotImplemented))
}
pub(crate) async fn upload_part(_gw: &Gateway, _req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
    Err(s3_error!(NotImplemented))
}
pub(crate) async fn upload_part_copy(_gw: &Gateway, _req: S3Request<UploadPartCopyInput>) -> S3Result<S3Response<UploadPartCopyOutput>> {
    Err(s3_error!(NotImplemented))
}
pub(crate) async fn complete_multipart_upload(_gw: &Gateway, _req: S3Request<CompleteMultipartUploadInput>) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    Err(s3_error!(NotImplemented))
}
pub(crate) async fn abort_multipart_upload(_gw: &Gateway, _req: S3Request<AbortMultipartUploadInput>) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    Err(s3_error!(NotImplemented))
}
pub(crate) async fn list_parts(_gw: &Gateway, _req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
    Err(s3_error!(NotImplemented))
}
pub(crate) async fn list_multipart_uploads(_gw: &Gateway, _req: S3Request<ListMultipartUploadsInput>) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    Err(s3_error!(NotImplemented))
}
