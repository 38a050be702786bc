//! Who may call the gateway: the configured key pair (SigV4, verified by s3s), and the
//! virtual-host parsing that must never mistake a plain host name for a bucket.

use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::{S3Result, s3_error};

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
            Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ))
        }
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
