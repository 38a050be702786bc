//! Who may call the gateway: the configured key pair (SigV4, verified by s3s), and the
//! virtual-host parsing that must never mistake a plain host name for a bucket.

use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::path::S3Path;

use crate::s3::RequestError;

/// The gateway's single access key / secret key pair.
#[derive(Debug, Clone)]
pub struct KeyAuth {
    access_key: String,
    secret_key: SecretKey,
}

impl KeyAuth {
    /// Auth for one key pair.
    pub fn new(access_key: &str, secret_key: &str) -> Self {
        KeyAuth {
            access_key: access_key.to_owned(),
            secret_key: SecretKey::from(secret_key.to_owned()),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key {
            Ok(self.secret_key.clone())
        } else {
            Err(RequestError::InvalidAccessKeyId.into())
        }
    }
}

/// Who may do what: signed requests (verified by s3s against [`KeyAuth`]) may do anything;
/// unsigned ones may only read objects and list them in the buckets marked public-read
/// (`--public-bucket`). s3s runs this before it reads the request body.
#[derive(Debug, Clone, Default)]
pub struct PublicRead {
    buckets: std::collections::HashSet<String>,
}

/// Operations an anonymous client may run on a public-read bucket. GetObject covers the media
/// extension (`?quality=`), which is GetObject with parameters.
const ANONYMOUS_READ_OPS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "ListObjects",
    "ListObjectsV2",
    "HeadBucket",
];

impl PublicRead {
    /// Access rules with these buckets public-read.
    pub fn new<I: IntoIterator<Item = String>>(buckets: I) -> Self {
        PublicRead {
            buckets: buckets.into_iter().collect(),
        }
    }

    /// True when an unsigned `op` on `path` is allowed.
    pub fn allows_anonymous(&self, op: &str, path: &S3Path) -> bool {
        let bucket = match path {
            S3Path::Root => return false,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket,
        };
        self.buckets.contains(&**bucket) && ANONYMOUS_READ_OPS.contains(&op)
    }
}

#[async_trait::async_trait]
impl S3Access for PublicRead {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // The first point where s3s knows the operation: name it for the metrics.
        let op = crate::metrics::op_name(cx.s3_op().name());
        crate::metrics::note_op(cx.extensions_mut(), op);
        if cx.credentials().is_some() || self.allows_anonymous(cx.s3_op().name(), cx.s3_path()) {
            return Ok(());
        }
        let message = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. }
                if self.buckets.contains(&**bucket) =>
            {
                "this bucket is public-read: anonymous requests may only read and list objects"
            }
            _ => "Anonymous access is not allowed: sign the request with the gateway's keys",
        };
        Err(RequestError::AccessDenied(message).into())
    }
}

/// Virtual-host style for `<bucket>.<domain>`; every other Host (an IP, `localhost`, a tailnet
/// name) is path-style. s3s's own SingleDomain would take such hosts for bucket names.
#[derive(Debug, Clone)]
pub struct DomainHost {
    domain: String,
}

impl DomainHost {
    /// Serves `<bucket>.<domain>` as virtual-host style.
    pub fn new(domain: &str) -> Self {
        DomainHost {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p))
            if !h.ends_with(']') && p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') =>
        {
            h
        }
        Some((h, p)) if h.ends_with(']') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

impl S3Host for DomainHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = strip_port(host);
        if name.len() > self.domain.len() + 1 {
            let (sub, base) = name.split_at(name.len() - self.domain.len());
            if base.eq_ignore_ascii_case(&self.domain) && sub.ends_with('.') {
                return Ok(
                    VirtualHost::new(self.domain.as_str()).with_bucket(&sub[..sub.len() - 1])
                );
            }
        }
        Ok(VirtualHost::new(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_reads_only_on_public_buckets() {
        let p = PublicRead::new(["pics".to_owned()]);
        let obj = |b: &str| S3Path::Object {
            bucket: b.into(),
            key: "a.jpg".into(),
        };
        let bucket = |b: &str| S3Path::Bucket { bucket: b.into() };
        assert!(p.allows_anonymous("GetObject", &obj("pics")));
        assert!(p.allows_anonymous("HeadObject", &obj("pics")));
        assert!(p.allows_anonymous("ListObjectsV2", &bucket("pics")));
        assert!(!p.allows_anonymous("PutObject", &obj("pics")));
        assert!(!p.allows_anonymous("DeleteObject", &obj("pics")));
        assert!(!p.allows_anonymous("DeleteBucket", &bucket("pics")));
        assert!(!p.allows_anonymous("GetObject", &obj("private")));
        assert!(!p.allows_anonymous("ListBuckets", &S3Path::Root));
    }

    #[test]
    fn only_subdomains_of_the_domain_are_buckets() {
        let h = DomainHost::new("s3.home.lan");
        assert_eq!(
            h.parse_host_header("media.s3.home.lan:9000")
                .unwrap()
                .bucket(),
            Some("media")
        );
        assert_eq!(h.parse_host_header("s3.home.lan").unwrap().bucket(), None);
        assert_eq!(
            h.parse_host_header("localhost:9000").unwrap().bucket(),
            None
        );
        assert_eq!(
            h.parse_host_header("laptop.tailnet.ts.net")
                .unwrap()
                .bucket(),
            None
        );
        assert_eq!(h.parse_host_header("[::1]:9000").unwrap().bucket(), None);
    }
}
