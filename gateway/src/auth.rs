//! The access rules ([`crate::access`]) wired into s3s: the key lookup behind its SigV4 check,
//! the per-operation check it runs before reading a body; and the virtual-host parsing that
//! must never mistake a plain host name for a bucket.

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{DeleteObjectsInput, PostObjectInput};
use s3s::host::{S3Host, VirtualHost};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result};

use crate::access::{
    Access, Caller, DeleteKeyByKey, DeniedKeys, KeyRefusal, Need, Principal, Verdict, ops, policy,
};
use crate::peer::PeerInfo;
use crate::s3::RequestError;
use crate::store::Store;

/// s3s's key lookup: the admin pair and the scoped keys ([`Access::secret`]).
#[derive(Debug, Clone)]
pub struct KeyAuth {
    access: Arc<Access>,
}

impl KeyAuth {
    /// Looks keys up in `access`.
    pub fn new(access: Arc<Access>) -> Self {
        KeyAuth { access }
    }
}

fn refusal(e: KeyRefusal) -> s3s::S3Error {
    match e {
        KeyRefusal::Unknown => RequestError::InvalidAccessKeyId.into(),
        e @ KeyRefusal::Expired(..) => RequestError::Forbidden(e.to_string()).into(),
        KeyRefusal::Unavailable(e) => RequestError::SlowDown {
            message: format!("{e}; retry shortly"),
            retry_after: 1,
        }
        .into(),
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.access.secret(access_key).await.map_err(refusal)
    }
}

/// s3s's access check: every operation classified once ([`ops::s3_need`]) and checked once
/// ([`Access::decide`]: the key's rights and the bucket's policies), before s3s reads the
/// request body. Copies also need read on their source; listings are checked against the
/// prefix they list.
#[derive(Debug, Clone)]
pub struct AccessCheck {
    access: Arc<Access>,
    store: Arc<Store>,
}

impl AccessCheck {
    /// Checks requests against `access`; `store` answers whether a bucket exists.
    pub fn new(access: Arc<Access>, store: Arc<Store>) -> Self {
        AccessCheck { access, store }
    }

    fn refuse(who: &Principal, op: &str, need: Need, bucket: Option<&str>) -> s3s::S3Error {
        let message = match who {
            Principal::Anonymous => match bucket {
                Some(b) if need == Need::Read => format!(
                    "Anonymous access to bucket '{b}' is not allowed: sign the request with the gateway's keys"
                ),
                Some(b) => format!(
                    "Anonymous requests may not run {op} on '{b}': only reading public-read buckets is open"
                ),
                None => "Anonymous access is not allowed: sign the request with the gateway's keys"
                    .to_owned(),
            },
            _ => {
                let what = match need {
                    Need::Read => "read",
                    Need::Write => "write to",
                    Need::Owner => "own",
                    Need::CreateBucket => "create",
                    _ => "administer",
                };
                match bucket {
                    Some(b) => format!("{} may not {what} bucket '{b}' ({op})", who.describe()),
                    None => format!("{} may not run {op}", who.describe()),
                }
            }
        };
        RequestError::Forbidden(message).into()
    }
}

/// The listings whose `prefix` parameter a prefix-narrowed grant must cover.
const PREFIX_LISTINGS: &[&str] = &[
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "ListMultipartUploads",
];

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// True when `who` is a scoped key whose grant on `bucket` is narrowed to a prefix `key` is
/// not under: the operations naming their keys in the body (DeleteObjects, PostObject) passed
/// the bucket-level check without them.
fn outside_prefix(who: &Principal, bucket: &str, key: &str) -> bool {
    who.key()
        .and_then(|k| k.grant(bucket))
        .and_then(|g| g.prefix.as_deref())
        .is_some_and(|p| !key.starts_with(p))
}

/// What bucket policy conditions may ask about a request.
struct RequestFacts {
    principal: Option<String>,
    secure: bool,
    source_ip: Option<std::net::IpAddr>,
    prefix: Option<String>,
    delimiter: Option<String>,
    max_keys: Option<String>,
    acl: Option<String>,
}

impl RequestFacts {
    fn of(cx: &mut S3AccessContext<'_>) -> Self {
        let query = cx.uri().query().unwrap_or("").to_owned();
        let principal = cx.credentials().map(|c| c.access_key.clone());
        let headers = cx.headers().clone();
        let peer = cx
            .extensions_mut()
            .get::<PeerInfo>()
            .cloned()
            .unwrap_or_default();
        Self::new(&query, &headers, principal, peer)
    }

    /// The facts of a request s3s has parsed (the hooks that see the keys a body names).
    fn of_request<T>(req: &S3Request<T>) -> Self {
        let peer = req
            .extensions
            .get::<PeerInfo>()
            .cloned()
            .unwrap_or_default();
        Self::new(
            req.uri.query().unwrap_or(""),
            &req.headers,
            req.credentials.as_ref().map(|c| c.access_key.clone()),
            peer,
        )
    }

    fn new(
        query: &str,
        headers: &http::HeaderMap,
        principal: Option<String>,
        peer: PeerInfo,
    ) -> Self {
        let acl = headers
            .get("x-amz-acl")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        RequestFacts {
            principal,
            secure: peer.tls,
            source_ip: peer.addr.map(|a| a.ip()),
            prefix: query_param(query, "prefix"),
            delimiter: query_param(query, "delimiter"),
            max_keys: query_param(query, "max-keys"),
            acl,
        }
    }

    fn request<'a>(&'a self, action: &'a str, resource: &'a str) -> policy::PolicyRequest<'a> {
        policy::PolicyRequest {
            principal: self.principal.as_deref(),
            action,
            resource,
            secure: self.secure,
            source_ip: self.source_ip,
            prefix: self.prefix.as_deref(),
            delimiter: self.delimiter.as_deref(),
            max_keys: self.max_keys.as_deref(),
            acl: self.acl.as_deref(),
            now: time::OffsetDateTime::now_utc(),
        }
    }
}

/// `x-amz-copy-source` as bucket and key (`[/]bucket/key[?versionId=...]`, percent-encoded).
fn copy_source(value: &str) -> Option<(String, String)> {
    let path = value.split_once('?').map_or(value, |(p, _)| p);
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let (bucket, key) = decoded.trim_start_matches('/').split_once('/')?;
    Some((bucket.to_owned(), key.to_owned()))
}

#[async_trait::async_trait]
impl S3Access for AccessCheck {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // The first point where s3s knows the operation: name it for the metrics.
        let op = crate::metrics::op_name(cx.s3_op().name());
        crate::metrics::note_op(cx.extensions_mut(), op);
        let who = self
            .access
            .principal(cx.credentials())
            .await
            .map_err(refusal)?;
        let need = ops::s3_need(op);
        let (bucket, key): (Option<String>, Option<String>) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => {
                let listed = PREFIX_LISTINGS.contains(&op).then(|| {
                    query_param(cx.uri().query().unwrap_or(""), "prefix").unwrap_or_default()
                });
                (Some(bucket.to_string()), listed)
            }
            S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        let source = matches!(op, "CopyObject" | "UploadPartCopy")
            .then(|| {
                cx.headers()
                    .get("x-amz-copy-source")
                    .and_then(|v| v.to_str().ok())
                    .and_then(copy_source)
            })
            .flatten();
        let facts = RequestFacts::of(cx);
        let store = &self.store;
        let allowed = |bucket: Option<&str>, key: Option<&str>, need: Need, action: &str| {
            let policies = match bucket {
                Some(b) if !matches!(who, Principal::Admin) => self.access.policies(store, b),
                _ => Vec::new(),
            };
            let resource = match (bucket, key) {
                (Some(b), Some(k)) if !PREFIX_LISTINGS.contains(&op) => {
                    format!("arn:aws:s3:::{b}/{k}")
                }
                (Some(b), _) => format!("arn:aws:s3:::{b}"),
                (None, _) => "*".to_owned(),
            };
            let request = facts.request(action, &resource);
            let exists = |b: &str| store.bucket_fd(b).is_ok();
            self.access
                .decide(&who, need, bucket, key, exists, &policies, &request)
        };
        let bucket = bucket.as_deref();
        let action = policy::iam_action(op);
        let version = query_param(cx.uri().query().unwrap_or(""), "versionId");
        let verdict = allowed(bucket, key.as_deref(), need, &action);
        let ok = match verdict {
            Verdict::Allow => true,
            Verdict::Deny => false,
            Verdict::NotGranted => {
                self.access
                    .acl_allows(store, &who, bucket, key.as_deref(), version, &action)
                    .await
            }
        };
        // DeleteObjects is `s3:DeleteObject` on each key it names, which this check (seeing
        // only the bucket) cannot decide when a policy may allow it on some keys: those go,
        // the others are answered AccessDenied one by one (`delete_objects` below).
        let key_by_key = !ok
            && op == "DeleteObjects"
            && verdict == Verdict::NotGranted
            && bucket.is_some_and(|b| {
                let request = facts.request(&action, "");
                self.access
                    .policies(store, b)
                    .iter()
                    .any(|p| p.may_allow(&request))
            });
        if !ok && !key_by_key {
            return Err(Self::refuse(&who, op, need, bucket));
        }
        if key_by_key {
            cx.extensions_mut().insert(DeleteKeyByKey);
        }
        if let Some((b, k)) = &source {
            let ok = match allowed(Some(b), Some(k), Need::Read, "s3:GetObject") {
                Verdict::Allow => true,
                Verdict::Deny => false,
                Verdict::NotGranted => {
                    self.access
                        .acl_allows(store, &who, Some(b), Some(k), None, "s3:GetObject")
                        .await
                }
            };
            if !ok {
                return Err(Self::refuse(&who, op, Need::Read, Some(b)));
            }
        }
        // Bypassing a GOVERNANCE retention is a permission of its own, as in S3.
        let bypass = ops::BYPASS_GOVERNANCE_OPS.contains(&op)
            && cx
                .headers()
                .get("x-amz-bypass-governance-retention")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        // ACLs grant no such permission: only the key's rights or a policy may.
        if bypass
            && !allowed(
                bucket,
                key.as_deref(),
                ops::BYPASS_GOVERNANCE,
                "s3:BypassGovernanceRetention",
            )
            .allowed()
        {
            let what = format!("{op} with x-amz-bypass-governance-retention");
            return Err(Self::refuse(&who, &what, ops::BYPASS_GOVERNANCE, bucket));
        }
        let caller = Caller {
            who,
            access: self.access.clone(),
        };
        cx.extensions_mut().insert(caller);
        Ok(())
    }

    /// PostObject names its key in the form: it must be within a prefix-narrowed grant, and
    /// no bucket policy may deny `s3:PutObject` on it (with the form's `acl` as
    /// `s3:x-amz-acl`).
    async fn post_object(&self, req: &mut S3Request<PostObjectInput>) -> S3Result<()> {
        let Some(caller) = req.extensions.get::<Caller>() else {
            return Ok(());
        };
        let bucket = req.input.bucket.as_str();
        let refuse = || Self::refuse(&caller.who, "PostObject", Need::Write, Some(bucket));
        if outside_prefix(&caller.who, bucket, &req.input.key) {
            return Err(refuse());
        }
        let mut facts = RequestFacts::of_request(req);
        facts.acl = req
            .input
            .acl
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.extensions
                    .get::<crate::s3::post::FormFileName>()
                    .and_then(|f| f.acl())
            });
        if self.denied_key(&caller.who, &facts, bucket, &req.input.key, "s3:PutObject") {
            return Err(refuse());
        }
        Ok(())
    }

    /// DeleteObjects names its keys in the body: each must be within a prefix-narrowed grant
    /// (or the request is refused), and a key a bucket policy denies `s3:DeleteObject` on (or,
    /// for a caller the bucket-level check let through only for a policy that may allow some
    /// keys, [`DeleteKeyByKey`], a key nothing allows) is left out of the batch and answered
    /// with its own AccessDenied ([`DeniedKeys`]).
    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let Some(caller) = req.extensions.get::<Caller>().cloned() else {
            return Ok(());
        };
        let bucket = req.input.bucket.clone();
        for o in &req.input.delete.objects {
            if outside_prefix(&caller.who, &bucket, &o.key) {
                return Err(Self::refuse(
                    &caller.who,
                    "DeleteObjects",
                    Need::Write,
                    Some(&bucket),
                ));
            }
        }
        let facts = RequestFacts::of_request(req);
        let key_by_key = req.extensions.get::<DeleteKeyByKey>().is_some();
        let policies = if key_by_key {
            self.access.policies(&self.store, &bucket)
        } else {
            Vec::new()
        };
        let mut denied = Vec::new();
        req.input.delete.objects.retain(|o| {
            let deny = if key_by_key {
                let resource = format!("arn:aws:s3:::{bucket}/{}", o.key);
                let request = facts.request("s3:DeleteObject", &resource);
                let exists = |b: &str| self.store.bucket_fd(b).is_ok();
                !self
                    .access
                    .decide(
                        &caller.who,
                        Need::Write,
                        Some(&bucket),
                        Some(&o.key),
                        exists,
                        &policies,
                        &request,
                    )
                    .allowed()
            } else {
                self.denied_key(&caller.who, &facts, &bucket, &o.key, "s3:DeleteObject")
            };
            if deny {
                denied.push((o.key.clone(), o.version_id.clone()));
            }
            !deny
        });
        if !denied.is_empty() {
            req.extensions.insert(DeniedKeys(denied));
        }
        Ok(())
    }
}

impl AccessCheck {
    /// True when a bucket policy explicitly denies `who` the `action` on `key`: the per-key
    /// part of the check for the operations naming their keys in the body (the bucket-level
    /// check saw only the bucket).
    fn denied_key(
        &self,
        who: &Principal,
        facts: &RequestFacts,
        bucket: &str,
        key: &str,
        action: &str,
    ) -> bool {
        if matches!(who, Principal::Admin) {
            return false;
        }
        let resource = format!("arn:aws:s3:::{bucket}/{key}");
        let request = facts.request(action, &resource);
        self.access
            .policies(&self.store, bucket)
            .iter()
            .any(|p| p.evaluate(&request) == policy::Decision::Deny)
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
    fn copy_sources() {
        assert_eq!(
            copy_source("/src/a%20b/c.mp4?versionId=1"),
            Some(("src".into(), "a b/c.mp4".into()))
        );
        assert_eq!(copy_source("src/k"), Some(("src".into(), "k".into())));
        assert_eq!(copy_source("nokey"), None);
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
