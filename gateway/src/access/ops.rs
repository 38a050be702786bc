//! The one classification of everything a caller can ask: every S3 operation s3s knows (by its
//! s3s name, implemented here or not, so an operation added later is already classified) and
//! every JSON API endpoint. [`super::Access::permits`] is the one check applied to it.

/// What a request needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: open to anyone (the API's ping).
    Open,
    /// Any known key; the answer shows only what the key can read (ListBuckets, the job list).
    Listing,
    /// The right to create buckets (or write access to the bucket if it exists already).
    CreateBucket,
    /// Read access to the bucket (and the key, under a prefix-narrowed grant).
    Read,
    /// Write access to the bucket (and the key).
    Write,
    /// Ownership of the bucket: its settings, policy, ACL, CORS, deleting it.
    Owner,
    /// The admin key only.
    Admin,
}

use Need::*;

/// Every S3 operation by its s3s name. Reads: listing, getting, heading (the media extension
/// and HLS are GetObject). Writes: what adds, changes or removes objects (copies also need read
/// on the source). Owner: the bucket's settings and its deletion. The operations the gateway
/// does not implement are here too, so a future one is never open by accident.
pub const S3_OPS: &[(&str, Need)] = &[
    ("ListBuckets", Listing),
    ("ListDirectoryBuckets", Listing),
    ("CreateBucket", CreateBucket),
    // Reads
    ("GetObject", Read),
    ("HeadObject", Read),
    ("GetObjectAttributes", Read),
    ("GetObjectAcl", Read),
    ("GetObjectTagging", Read),
    ("GetObjectLegalHold", Read),
    ("GetObjectRetention", Read),
    ("GetObjectTorrent", Read),
    ("SelectObjectContent", Read),
    ("ListObjects", Read),
    ("ListObjectsV2", Read),
    ("ListObjectVersions", Read),
    ("ListParts", Read),
    ("ListMultipartUploads", Read),
    ("HeadBucket", Read),
    // Clients probe these before reading (where the bucket is, whether it keeps versions).
    ("GetBucketLocation", Read),
    ("GetBucketVersioning", Read),
    ("GetObjectLockConfiguration", Read),
    // Writes
    ("PutObject", Write),
    ("PostObject", Write),
    ("CopyObject", Write),
    ("UploadPartCopy", Write),
    ("DeleteObject", Write),
    ("DeleteObjects", Write),
    ("CreateMultipartUpload", Write),
    ("UploadPart", Write),
    ("CompleteMultipartUpload", Write),
    ("AbortMultipartUpload", Write),
    ("PutObjectAcl", Write),
    ("PutObjectTagging", Write),
    ("DeleteObjectTagging", Write),
    ("PutObjectLegalHold", Write),
    ("PutObjectRetention", Write),
    ("RestoreObject", Write),
    // The bucket itself
    ("DeleteBucket", Owner),
    ("GetBucketPolicy", Owner),
    ("PutBucketPolicy", Owner),
    ("DeleteBucketPolicy", Owner),
    ("GetBucketPolicyStatus", Owner),
    ("GetBucketAcl", Owner),
    ("PutBucketAcl", Owner),
    ("GetBucketCors", Owner),
    ("PutBucketCors", Owner),
    ("DeleteBucketCors", Owner),
    ("GetPublicAccessBlock", Owner),
    ("PutPublicAccessBlock", Owner),
    ("DeletePublicAccessBlock", Owner),
    ("PutBucketVersioning", Owner),
    ("PutObjectLockConfiguration", Owner),
    ("GetBucketLifecycleConfiguration", Owner),
    ("PutBucketLifecycleConfiguration", Owner),
    ("DeleteBucketLifecycle", Owner),
    ("GetBucketTagging", Owner),
    ("PutBucketTagging", Owner),
    ("DeleteBucketTagging", Owner),
    ("GetBucketWebsite", Owner),
    ("PutBucketWebsite", Owner),
    ("DeleteBucketWebsite", Owner),
    ("GetBucketEncryption", Owner),
    ("PutBucketEncryption", Owner),
    ("DeleteBucketEncryption", Owner),
    ("GetBucketLogging", Owner),
    ("PutBucketLogging", Owner),
    ("GetBucketNotificationConfiguration", Owner),
    ("PutBucketNotificationConfiguration", Owner),
    ("GetBucketReplication", Owner),
    ("PutBucketReplication", Owner),
    ("DeleteBucketReplication", Owner),
    ("GetBucketOwnershipControls", Owner),
    ("PutBucketOwnershipControls", Owner),
    ("DeleteBucketOwnershipControls", Owner),
    ("GetBucketAccelerateConfiguration", Owner),
    ("PutBucketAccelerateConfiguration", Owner),
    ("GetBucketRequestPayment", Owner),
    ("PutBucketRequestPayment", Owner),
    ("GetBucketAnalyticsConfiguration", Owner),
    ("PutBucketAnalyticsConfiguration", Owner),
    ("DeleteBucketAnalyticsConfiguration", Owner),
    ("ListBucketAnalyticsConfigurations", Owner),
    ("GetBucketInventoryConfiguration", Owner),
    ("PutBucketInventoryConfiguration", Owner),
    ("DeleteBucketInventoryConfiguration", Owner),
    ("ListBucketInventoryConfigurations", Owner),
    ("GetBucketMetricsConfiguration", Owner),
    ("PutBucketMetricsConfiguration", Owner),
    ("DeleteBucketMetricsConfiguration", Owner),
    ("ListBucketMetricsConfigurations", Owner),
    ("GetBucketIntelligentTieringConfiguration", Owner),
    ("PutBucketIntelligentTieringConfiguration", Owner),
    ("DeleteBucketIntelligentTieringConfiguration", Owner),
    ("ListBucketIntelligentTieringConfigurations", Owner),
    ("GetBucketMetadataTableConfiguration", Owner),
    ("CreateBucketMetadataTableConfiguration", Owner),
    ("DeleteBucketMetadataTableConfiguration", Owner),
    // Not bucket operations: session tokens for directory buckets, Object Lambda answers.
    ("CreateSession", Admin),
    ("WriteGetObjectResponse", Admin),
];

/// What the S3 operation `op` (s3s's name) needs. A name missing from the table is the admin's
/// only: access is never granted by omission.
pub fn s3_need(op: &str) -> Need {
    S3_OPS
        .iter()
        .find(|(name, _)| *name == op)
        .map_or(Admin, |(_, need)| *need)
}

/// What `x-amz-bypass-governance-retention: true` needs on top of the operation's own need
/// (DeleteObject, DeleteObjects, PutObjectRetention): S3's separate permission
/// `s3:BypassGovernanceRetention`, which here the bucket's owner has (or a policy grants).
pub const BYPASS_GOVERNANCE: Need = Owner;

/// The operations that honour `x-amz-bypass-governance-retention`.
pub const BYPASS_GOVERNANCE_OPS: &[&str] = &["DeleteObject", "DeleteObjects", "PutObjectRetention"];

/// Every JSON API endpoint under `/_nebula/v1/`: method and path pattern (`{id}` is one path
/// segment). Files and jobs are their bucket's (the job list is narrowed to readable buckets);
/// the gateway's own state and the keys are the admin's.
pub const API_ENDPOINTS: &[(&str, &str, Need)] = &[
    ("GET", "ping", Open),
    ("GET", "files", Read),
    ("POST", "transcode", Write),
    ("GET", "jobs", Listing),
    ("GET", "jobs/{id}", Read),
    ("POST", "jobs/{id}/cancel", Write),
    ("GET", "health", Admin),
    ("GET", "logs", Admin),
    ("GET", "metrics", Admin),
    ("GET", "keys", Admin),
    ("POST", "keys", Admin),
    ("GET", "keys/{id}", Admin),
    ("DELETE", "keys/{id}", Admin),
    ("POST", "keys/{id}/allow", Admin),
    ("POST", "keys/{id}/deny", Admin),
];

/// The endpoint pattern `path` (below `/_nebula/v1/`) matches, and what `method` on it needs;
/// `None` when there is no such endpoint.
pub fn api_need(method: &str, path: &str) -> Option<(&'static str, Need)> {
    let segments: Vec<&str> = path.split('/').collect();
    API_ENDPOINTS
        .iter()
        .find(|(m, pattern, _)| {
            *m == method && {
                let p: Vec<&str> = pattern.split('/').collect();
                p.len() == segments.len()
                    && p.iter()
                        .zip(&segments)
                        .all(|(p, s)| *p == *s || (*p == "{id}" && !s.is_empty()))
            }
        })
        .map(|(_, pattern, need)| (*pattern, *need))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation name s3s 0.14.1 routes (its `ops/generated.rs`).
    const S3S_OPS: &str = "AbortMultipartUpload CompleteMultipartUpload CopyObject CreateBucket \
        CreateBucketMetadataTableConfiguration CreateMultipartUpload CreateSession DeleteBucket \
        DeleteBucketAnalyticsConfiguration DeleteBucketCors DeleteBucketEncryption \
        DeleteBucketIntelligentTieringConfiguration DeleteBucketInventoryConfiguration \
        DeleteBucketLifecycle DeleteBucketMetadataTableConfiguration DeleteBucketMetricsConfiguration \
        DeleteBucketOwnershipControls DeleteBucketPolicy DeleteBucketReplication DeleteBucketTagging \
        DeleteBucketWebsite DeleteObject DeleteObjectTagging DeleteObjects DeletePublicAccessBlock \
        GetBucketAccelerateConfiguration GetBucketAcl GetBucketAnalyticsConfiguration GetBucketCors \
        GetBucketEncryption GetBucketIntelligentTieringConfiguration GetBucketInventoryConfiguration \
        GetBucketLifecycleConfiguration GetBucketLocation GetBucketLogging \
        GetBucketMetadataTableConfiguration GetBucketMetricsConfiguration \
        GetBucketNotificationConfiguration GetBucketOwnershipControls GetBucketPolicy \
        GetBucketPolicyStatus GetBucketReplication GetBucketRequestPayment GetBucketTagging \
        GetBucketVersioning GetBucketWebsite GetObject GetObjectAcl GetObjectAttributes \
        GetObjectLegalHold GetObjectLockConfiguration GetObjectRetention GetObjectTagging \
        GetObjectTorrent GetPublicAccessBlock HeadBucket HeadObject ListBucketAnalyticsConfigurations \
        ListBucketIntelligentTieringConfigurations ListBucketInventoryConfigurations \
        ListBucketMetricsConfigurations ListBuckets ListDirectoryBuckets ListMultipartUploads \
        ListObjectVersions ListObjects ListObjectsV2 ListParts PostObject \
        PutBucketAccelerateConfiguration PutBucketAcl PutBucketAnalyticsConfiguration PutBucketCors \
        PutBucketEncryption PutBucketIntelligentTieringConfiguration PutBucketInventoryConfiguration \
        PutBucketLifecycleConfiguration PutBucketLogging PutBucketMetricsConfiguration \
        PutBucketNotificationConfiguration PutBucketOwnershipControls PutBucketPolicy \
        PutBucketReplication PutBucketRequestPayment PutBucketTagging PutBucketVersioning \
        PutBucketWebsite PutObject PutObjectAcl PutObjectLegalHold PutObjectLockConfiguration \
        PutObjectRetention PutObjectTagging PutPublicAccessBlock RestoreObject SelectObjectContent \
        UploadPart UploadPartCopy WriteGetObjectResponse";

    #[test]
    fn every_s3s_operation_is_classified_once() {
        for op in S3S_OPS.split_whitespace() {
            let n = S3_OPS.iter().filter(|(name, _)| *name == op).count();
            assert_eq!(n, 1, "{op} is classified {n} times");
        }
        assert_eq!(S3_OPS.len(), S3S_OPS.split_whitespace().count());
        assert_eq!(s3_need("SomethingNew"), Admin);
    }

    #[test]
    fn the_classes_clients_rely_on() {
        for op in ["GetObject", "HeadObject", "ListObjectsV2", "HeadBucket"] {
            assert_eq!(s3_need(op), Read, "{op}");
        }
        for op in ["PutObject", "DeleteObject", "CopyObject", "UploadPart"] {
            assert_eq!(s3_need(op), Write, "{op}");
        }
        for op in [
            "DeleteBucket",
            "PutBucketPolicy",
            "PutBucketCors",
            "PutBucketAcl",
        ] {
            assert_eq!(s3_need(op), Owner, "{op}");
        }
    }

    #[test]
    fn api_paths_match_their_patterns() {
        assert_eq!(api_need("GET", "files"), Some(("files", Read)));
        assert_eq!(api_need("GET", "jobs/12"), Some(("jobs/{id}", Read)));
        assert_eq!(
            api_need("POST", "jobs/12/cancel"),
            Some(("jobs/{id}/cancel", Write))
        );
        assert_eq!(
            api_need("POST", "keys/NEBX/deny"),
            Some(("keys/{id}/deny", Admin))
        );
        assert_eq!(api_need("DELETE", "keys/NEBX"), Some(("keys/{id}", Admin)));
        assert_eq!(api_need("GET", "keys/"), None);
        assert_eq!(api_need("PUT", "files"), None);
        assert_eq!(api_need("GET", "nothing"), None);
    }
}
