//! Bucket policies: the IAM policy grammar S3 clients send (`Version`, `Statement`, `Sid`,
//! `Effect`, `Principal`/`NotPrincipal`, `Action`/`NotAction`, `Resource`/`NotResource` with
//! `*` and `?` wildcards, `Condition` with the string, date, IP-address, Bool and Null
//! operators and the keys `aws:SecureTransport`, `aws:SourceIp`, `aws:CurrentTime`,
//! `aws:username`, `s3:prefix`, `s3:x-amz-acl`), parsed strictly (anything else is
//! MalformedPolicy) and evaluated as IAM does: an explicit Deny wins over any Allow.
//!
//! A principal is `*` (anyone, anonymous requests included) or access key ids, bare or as the
//! last part of an ARN (`arn:aws:iam::123:user/NEB…`).

use std::net::IpAddr;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A bucket's public access block: S3's four switches. `block_public_acls` refuses a write or
/// ACL change carrying a public grant and `ignore_public_acls` makes such grants count for
/// nothing (both in `crate::s3::acl` and `super::acl`); `block_public_policy` refuses a
/// public PutBucketPolicy, `restrict_public_buckets` ignores what policies allow to everyone
/// (`--public-bucket` included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublicAccessBlock {
    /// Refuse public ACLs.
    #[serde(default)]
    pub block_public_acls: bool,
    /// Ignore public ACLs.
    #[serde(default)]
    pub ignore_public_acls: bool,
    /// Refuse public bucket policies.
    #[serde(default)]
    pub block_public_policy: bool,
    /// Ignore what bucket policies allow to everyone.
    #[serde(default)]
    pub restrict_public_buckets: bool,
}

/// A parsed bucket policy.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    /// `None`: `*`; otherwise key ids (or ARNs ending in one).
    principals: Option<Vec<String>>,
    not_principal: bool,
    actions: Vec<String>,
    not_action: bool,
    resources: Vec<String>,
    not_resource: bool,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct Condition {
    op: Op,
    if_exists: bool,
    /// Lower case.
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    IpAddress,
    NotIpAddress,
    Bool,
    Null,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "StringEquals" => Op::StringEquals,
            "StringNotEquals" => Op::StringNotEquals,
            "StringEqualsIgnoreCase" => Op::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Op::StringNotEqualsIgnoreCase,
            "StringLike" => Op::StringLike,
            "StringNotLike" => Op::StringNotLike,
            "DateEquals" => Op::DateEquals,
            "DateNotEquals" => Op::DateNotEquals,
            "DateLessThan" => Op::DateLessThan,
            "DateLessThanEquals" => Op::DateLessThanEquals,
            "DateGreaterThan" => Op::DateGreaterThan,
            "DateGreaterThanEquals" => Op::DateGreaterThanEquals,
            "IpAddress" => Op::IpAddress,
            "NotIpAddress" => Op::NotIpAddress,
            "Bool" => Op::Bool,
            "Null" => Op::Null,
            _ => return None,
        })
    }
}

/// The condition keys this gateway knows (lower case); a policy naming another is refused
/// rather than silently never matching.
const KNOWN_KEYS: &[&str] = &[
    "aws:securetransport",
    "aws:sourceip",
    "aws:currenttime",
    "aws:epochtime",
    "aws:username",
    "aws:userid",
    "s3:prefix",
    "s3:x-amz-acl",
    "s3:delimiter",
    "s3:max-keys",
];

/// What a request looks like to a policy.
#[derive(Debug, Clone)]
pub struct PolicyRequest<'a> {
    /// The signing key id; `None` for an anonymous request.
    pub principal: Option<&'a str>,
    /// The IAM action, `s3:GetObject`.
    pub action: &'a str,
    /// `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`.
    pub resource: &'a str,
    /// Came over TLS.
    pub secure: bool,
    /// The client's address.
    pub source_ip: Option<IpAddr>,
    /// The request's `prefix`, `delimiter`, `max-keys` query parameters, `x-amz-acl` header.
    pub prefix: Option<&'a str>,
    /// See `prefix`.
    pub delimiter: Option<&'a str>,
    /// See `prefix`.
    pub max_keys: Option<&'a str>,
    /// See `prefix`.
    pub acl: Option<&'a str>,
    /// The time of the request.
    pub now: OffsetDateTime,
}

/// The verdict of a policy on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An Allow statement matched and no Deny did.
    Allow,
    /// A Deny statement matched.
    Deny,
    /// No statement matched: the key's own rights decide.
    NotApplicable,
}

/// Why a policy document was refused (MalformedPolicy's message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MalformedPolicy(pub String);

fn bad(msg: impl Into<String>) -> MalformedPolicy {
    MalformedPolicy(msg.into())
}

/// A string or a list of strings.
fn strings(v: &Value, what: &str) -> Result<Vec<String>, MalformedPolicy> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("{what} must be strings")))
            })
            .collect(),
        // Bool condition values are often written unquoted.
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        _ => Err(bad(format!("{what} must be a string or a list of strings"))),
    }
}

/// The statement's `X` or `NotX` (exactly one of them): values and whether it was `NotX`.
fn one_of(
    st: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<(Option<Value>, bool), MalformedPolicy> {
    let not = format!("Not{name}");
    match (st.get(name), st.get(&not)) {
        (Some(v), None) => Ok((Some(v.clone()), false)),
        (None, Some(v)) => Ok((Some(v.clone()), true)),
        (None, None) => Ok((None, false)),
        (Some(_), Some(_)) => Err(bad(format!("a statement has both {name} and {not}"))),
    }
}

impl Policy {
    /// Parses a policy document for `bucket`; every resource must be in that bucket.
    pub fn parse(doc: &[u8], bucket: &str) -> Result<Policy, MalformedPolicy> {
        let v: Value = serde_json::from_slice(doc)
            .map_err(|e| bad(format!("the policy is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the policy must be a JSON object"))?;
        for k in obj.keys() {
            if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
                return Err(bad(format!("unknown policy element {k}")));
            }
        }
        if let Some(version) = obj.get("Version")
            && !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17"))
        {
            return Err(bad("Version must be 2012-10-17 (or 2008-10-17)"));
        }
        let list = match obj.get("Statement") {
            Some(Value::Array(a)) if !a.is_empty() => a.clone(),
            Some(s @ Value::Object(_)) => vec![s.clone()],
            _ => return Err(bad("the policy needs at least one Statement")),
        };
        let statements = list
            .iter()
            .map(|s| Statement::parse(s, bucket))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    /// Evaluates the policy: Deny if any Deny statement matches, else Allow if any Allow does.
    pub fn evaluate(&self, req: &PolicyRequest<'_>) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if s.matches(req) {
                if !s.allow {
                    return Decision::Deny;
                }
                allowed = true;
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::NotApplicable
        }
    }

    /// True when an Allow statement names the request's principal and action: on some
    /// resource, under some conditions, it may allow them. A request naming its keys in the
    /// body (DeleteObjects) is then decided key by key rather than refused for the bucket.
    pub fn may_allow(&self, req: &PolicyRequest<'_>) -> bool {
        self.statements.iter().any(|s| s.allow && s.names(req))
    }

    /// True when the policy grants something to everyone without a condition (what
    /// GetBucketPolicyStatus reports as public).
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(|s| {
            s.allow && s.principals.is_none() && !s.not_principal && s.conditions.is_empty()
        })
    }

    /// The policy without its statements that allow something to everyone (what
    /// `restrict_public_buckets` ignores); its Deny statements stay.
    pub fn without_public_allows(&self) -> Policy {
        Policy {
            statements: self
                .statements
                .iter()
                .filter(|s| !(s.allow && s.principals.is_none() && !s.not_principal))
                .cloned()
                .collect(),
        }
    }

    /// The public-read policy of a `--public-bucket`: anyone may get objects and list them.
    pub fn public_read(bucket: &str) -> Policy {
        let st = |action: &str, resource: String| Statement {
            allow: true,
            principals: None,
            not_principal: false,
            actions: vec![action.to_owned()],
            not_action: false,
            resources: vec![resource],
            not_resource: false,
            conditions: Vec::new(),
        };
        Policy {
            statements: vec![
                st("s3:GetObject", format!("arn:aws:s3:::{bucket}/*")),
                st("s3:ListBucket", format!("arn:aws:s3:::{bucket}")),
            ],
        }
    }
}

impl Statement {
    fn parse(v: &Value, bucket: &str) -> Result<Statement, MalformedPolicy> {
        let st = v
            .as_object()
            .ok_or_else(|| bad("each Statement must be a JSON object"))?;
        for k in st.keys() {
            if !matches!(
                k.as_str(),
                "Sid"
                    | "Effect"
                    | "Principal"
                    | "NotPrincipal"
                    | "Action"
                    | "NotAction"
                    | "Resource"
                    | "NotResource"
                    | "Condition"
            ) {
                return Err(bad(format!("unknown statement element {k}")));
            }
        }
        let allow = match st.get("Effect").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return Err(bad("Effect must be Allow or Deny")),
        };
        let (principal, not_principal) = one_of(st, "Principal")?;
        let principal =
            principal.ok_or_else(|| bad("a bucket policy statement needs a Principal"))?;
        let principals = match &principal {
            Value::String(s) if s == "*" => None,
            Value::Object(m) => {
                let mut ids = Vec::new();
                for (kind, v) in m {
                    if kind != "AWS" {
                        return Err(bad(format!("unsupported principal type {kind}")));
                    }
                    ids.extend(strings(v, "Principal")?);
                }
                if ids.iter().any(|i| i == "*") {
                    None
                } else {
                    Some(ids)
                }
            }
            _ => return Err(bad("Principal must be \"*\" or {\"AWS\": …}")),
        };
        let (actions, not_action) = one_of(st, "Action")?;
        let actions = strings(
            &actions.ok_or_else(|| bad("a statement needs an Action"))?,
            "Action",
        )?;
        for a in &actions {
            if a != "*" && !a.to_ascii_lowercase().starts_with("s3:") {
                return Err(bad(format!("action {a} is not an s3: action")));
            }
        }
        let (resources, not_resource) = one_of(st, "Resource")?;
        let resources = strings(
            &resources.ok_or_else(|| bad("a statement needs a Resource"))?,
            "Resource",
        )?;
        for r in &resources {
            let in_bucket = r == "*"
                || r.strip_prefix("arn:aws:s3:::").is_some_and(|rest| {
                    let b = rest.split('/').next().unwrap_or("");
                    glob(b, bucket)
                });
            if !in_bucket {
                return Err(bad(format!(
                    "Policy has invalid resource {r}: resources must be in bucket {bucket}"
                )));
            }
        }
        let mut conditions = Vec::new();
        if let Some(c) = st.get("Condition") {
            let ops = c
                .as_object()
                .ok_or_else(|| bad("Condition must be a JSON object"))?;
            for (op_name, block) in ops {
                let (base, if_exists) = match op_name.strip_suffix("IfExists") {
                    Some(b) => (b, true),
                    None => (op_name.as_str(), false),
                };
                let op = Op::parse(base)
                    .ok_or_else(|| bad(format!("unsupported condition operator {op_name}")))?;
                let block = block
                    .as_object()
                    .ok_or_else(|| bad(format!("{op_name} must map condition keys to values")))?;
                for (key, values) in block {
                    let key = key.to_ascii_lowercase();
                    if !KNOWN_KEYS.contains(&key.as_str()) {
                        return Err(bad(format!("unsupported condition key {key}")));
                    }
                    let values = strings(values, "condition values")?;
                    if matches!(op, Op::IpAddress | Op::NotIpAddress) {
                        for v in &values {
                            parse_cidr(v).ok_or_else(|| bad(format!("{v} is not an IP range")))?;
                        }
                    }
                    conditions.push(Condition {
                        op,
                        if_exists,
                        key,
                        values,
                    });
                }
            }
        }
        Ok(Statement {
            allow,
            principals,
            not_principal,
            actions,
            not_action,
            resources,
            not_resource,
            conditions,
        })
    }

    fn matches(&self, req: &PolicyRequest<'_>) -> bool {
        let resource = self.resources.iter().any(|r| glob(r, req.resource));
        self.names(req)
            && resource != self.not_resource
            && self.conditions.iter().all(|c| c.holds(req))
    }

    /// True when the statement is about the request's principal and action (whatever its
    /// resources and conditions say).
    fn names(&self, req: &PolicyRequest<'_>) -> bool {
        let principal = match &self.principals {
            None => true,
            Some(ids) => req.principal.is_some_and(|p| {
                ids.iter().any(|i| {
                    i == p || i.ends_with(&format!(":{p}")) || i.ends_with(&format!("/{p}"))
                })
            }),
        };
        let action = self
            .actions
            .iter()
            .any(|a| glob(&a.to_ascii_lowercase(), &req.action.to_ascii_lowercase()));
        principal != self.not_principal && action != self.not_action
    }
}

impl Condition {
    fn holds(&self, req: &PolicyRequest<'_>) -> bool {
        let value: Option<String> = match self.key.as_str() {
            "aws:securetransport" => Some(req.secure.to_string()),
            "aws:sourceip" => req.source_ip.map(|ip| ip.to_string()),
            "aws:currenttime" => req.now.format(&Rfc3339).ok(),
            "aws:epochtime" => Some(req.now.unix_timestamp().to_string()),
            "aws:username" | "aws:userid" => req.principal.map(str::to_owned),
            "s3:prefix" => req.prefix.map(str::to_owned),
            "s3:delimiter" => req.delimiter.map(str::to_owned),
            "s3:max-keys" => req.max_keys.map(str::to_owned),
            "s3:x-amz-acl" => req.acl.map(str::to_owned),
            _ => None,
        };
        if self.op == Op::Null {
            // "Null": "true" holds when the key is absent.
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return value.is_none() == want_absent;
        }
        let Some(v) = value else {
            // A missing key satisfies ...IfExists, and the negated operators.
            return self.if_exists
                || matches!(
                    self.op,
                    Op::StringNotEquals
                        | Op::StringNotEqualsIgnoreCase
                        | Op::StringNotLike
                        | Op::NotIpAddress
                        | Op::DateNotEquals
                );
        };
        let any = |f: &dyn Fn(&str) -> bool| self.values.iter().any(|c| f(c));
        match self.op {
            Op::StringEquals => any(&|c| c == v),
            Op::StringNotEquals => !any(&|c| c == v),
            Op::StringEqualsIgnoreCase => any(&|c| c.eq_ignore_ascii_case(&v)),
            Op::StringNotEqualsIgnoreCase => !any(&|c| c.eq_ignore_ascii_case(&v)),
            Op::StringLike => any(&|c| glob(c, &v)),
            Op::StringNotLike => !any(&|c| glob(c, &v)),
            Op::Bool => any(&|c| c.eq_ignore_ascii_case(&v)),
            Op::IpAddress | Op::NotIpAddress => {
                let inside = v
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| any(&|c| parse_cidr(c).is_some_and(|r| r.contains(ip))));
                inside == (self.op == Op::IpAddress)
            }
            Op::DateEquals
            | Op::DateNotEquals
            | Op::DateLessThan
            | Op::DateLessThanEquals
            | Op::DateGreaterThan
            | Op::DateGreaterThanEquals => {
                let Some(at) = parse_date(&v) else {
                    return false;
                };
                let cmp = |c: &str| {
                    parse_date(c).is_some_and(|c| match self.op {
                        Op::DateEquals => at == c,
                        Op::DateNotEquals => at != c,
                        Op::DateLessThan => at < c,
                        Op::DateLessThanEquals => at <= c,
                        Op::DateGreaterThan => at > c,
                        _ => at >= c,
                    })
                };
                if self.op == Op::DateNotEquals {
                    self.values.iter().all(|c| cmp(c))
                } else {
                    any(&cmp)
                }
            }
            // Answered above.
            Op::Null => false,
        }
    }
}

/// RFC 3339 or epoch seconds.
fn parse_date(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok().or_else(|| {
        s.parse::<i64>()
            .ok()
            .and_then(|n| OffsetDateTime::from_unix_timestamp(n).ok())
    })
}

/// An address range (`203.0.113.0/24`, `2001:db8::/32`, or one address).
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            (IpAddr::V4(n), IpAddr::V6(i)) => i.to_ipv4_mapped().is_some_and(|i| {
                Cidr {
                    net: IpAddr::V4(n),
                    bits: self.bits,
                }
                .contains(IpAddr::V4(i))
            }),
            _ => false,
        }
    }
}

fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let net: IpAddr = addr.parse().ok()?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some(Cidr { net, bits })
}

/// IAM's wildcard match: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The IAM action of an S3 operation (s3s's name): mostly `s3:` and the name, with S3's own
/// exceptions (listing a bucket is `s3:ListBucket`, heads are gets, multipart parts are puts).
pub fn iam_action(op: &str) -> String {
    let a = match op {
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "ListBucket",
        "ListObjectVersions" => "ListBucketVersions",
        "ListMultipartUploads" => "ListBucketMultipartUploads",
        "ListParts" => "ListMultipartUploadParts",
        "ListBuckets" => "ListAllMyBuckets",
        "HeadObject" | "GetObjectAttributes" => "GetObject",
        "CopyObject"
        | "UploadPart"
        | "UploadPartCopy"
        | "CreateMultipartUpload"
        | "CompleteMultipartUpload"
        | "PostObject" => "PutObject",
        "DeleteObjects" => "DeleteObject",
        "GetBucketCors" => "GetBucketCORS",
        "PutBucketCors" | "DeleteBucketCors" => "PutBucketCORS",
        "GetBucketLifecycleConfiguration" => "GetLifecycleConfiguration",
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => "PutLifecycleConfiguration",
        "GetPublicAccessBlock" => "GetBucketPublicAccessBlock",
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => "PutBucketPublicAccessBlock",
        "DeleteBucketTagging" => "PutBucketTagging",
        "DeleteBucketWebsite" => "DeleteBucketWebsite",
        "GetObjectLockConfiguration" => "GetBucketObjectLockConfiguration",
        "PutObjectLockConfiguration" => "PutBucketObjectLockConfiguration",
        other => return format!("s3:{other}"),
    };
    format!("s3:{a}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(
        principal: Option<&'a str>,
        action: &'a str,
        resource: &'a str,
    ) -> PolicyRequest<'a> {
        PolicyRequest {
            principal,
            action,
            resource,
            secure: false,
            source_ip: Some("127.0.0.1".parse().unwrap()),
            prefix: None,
            delimiter: None,
            max_keys: None,
            acl: None,
            now: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn public_prefix_and_a_denied_key() {
        let p = Policy::parse(
            br#"{"Version":"2012-10-17","Statement":[
                {"Sid":"pub","Effect":"Allow","Principal":"*","Action":["s3:GetObject"],
                 "Resource":"arn:aws:s3:::pics/public/*"},
                {"Effect":"Deny","Principal":{"AWS":["NEBBAD"]},"Action":"s3:*",
                 "Resource":["arn:aws:s3:::pics","arn:aws:s3:::pics/*"]}]}"#,
            "pics",
        )
        .unwrap();
        let get = |who, key: &str| {
            let r = format!("arn:aws:s3:::pics/{key}");
            p.evaluate(&req(who, "s3:GetObject", &r))
        };
        assert_eq!(get(None, "public/a.jpg"), Decision::Allow);
        assert_eq!(get(None, "private/a.jpg"), Decision::NotApplicable);
        assert_eq!(get(Some("NEBOK"), "public/a.jpg"), Decision::Allow);
        assert_eq!(get(Some("NEBBAD"), "public/a.jpg"), Decision::Deny);
        assert_eq!(
            p.evaluate(&req(
                Some("arn:x"),
                "s3:PutObject",
                "arn:aws:s3:::pics/public/a"
            )),
            Decision::NotApplicable
        );
        assert!(p.is_public());
    }

    #[test]
    fn may_allow_looks_at_principal_and_action_only() {
        let p = Policy::parse(
            br#"{"Statement":[
                {"Effect":"Allow","Principal":{"AWS":["NEBTMP"]},"Action":"s3:DeleteObject",
                 "Resource":"arn:aws:s3:::b/tmp/*"},
                {"Effect":"Deny","Principal":"*","Action":"s3:DeleteObject",
                 "Resource":"arn:aws:s3:::b/keep/*"}]}"#,
            "b",
        )
        .unwrap();
        // The bucket itself is no resource the Allow names, yet some key may be.
        let bucket = req(Some("NEBTMP"), "s3:DeleteObject", "arn:aws:s3:::b");
        assert_eq!(p.evaluate(&bucket), Decision::NotApplicable);
        assert!(p.may_allow(&bucket));
        assert!(!p.may_allow(&req(Some("NEBOTHER"), "s3:DeleteObject", "")));
        assert!(!p.may_allow(&req(Some("NEBTMP"), "s3:PutObject", "")));
    }

    #[test]
    fn conditions() {
        let p = Policy::parse(
            br#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:ListBucket",
                "Resource":"arn:aws:s3:::b","Condition":{
                  "StringLike":{"s3:prefix":["shared/*"]},
                  "IpAddress":{"aws:SourceIp":"127.0.0.0/8"},
                  "Bool":{"aws:SecureTransport":false},
                  "DateLessThan":{"aws:CurrentTime":"2999-01-01T00:00:00Z"}}}]}"#,
            "b",
        )
        .unwrap();
        let mut r = req(None, "s3:ListBucket", "arn:aws:s3:::b");
        r.prefix = Some("shared/x");
        assert_eq!(p.evaluate(&r), Decision::Allow);
        r.prefix = Some("other/");
        assert_eq!(p.evaluate(&r), Decision::NotApplicable);
        r.prefix = Some("shared/");
        r.source_ip = Some("10.1.2.3".parse().unwrap());
        assert_eq!(p.evaluate(&r), Decision::NotApplicable);
        r.source_ip = Some("::ffff:127.0.0.1".parse().unwrap());
        assert_eq!(p.evaluate(&r), Decision::Allow);
        r.secure = true;
        assert_eq!(p.evaluate(&r), Decision::NotApplicable);
        assert!(!p.is_public());
    }

    #[test]
    fn malformed_policies_are_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"Statement":[]}"#,
            br#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}}"#,
            br#"{"Statement":{"Effect":"Maybe","Principal":"*","Action":"s3:*","Resource":"*"}}"#,
            br#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#,
            br#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"ec2:*","Resource":"*"}}"#,
            br#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::other/*"}}"#,
            br#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*","Condition":{"Frobnicate":{"s3:prefix":"x"}}}}"#,
            br#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*","Condition":{"StringLike":{"aws:Referer":"x"}}}}"#,
            br#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"nope"}}}}"#,
            br#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","NotAction":"s3:x","Resource":"*"}}"#,
        ] {
            assert!(Policy::parse(bad, "b").is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn not_elements_and_wildcards() {
        let p = Policy::parse(
            br#"{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"NEBADMINISH"},
                "NotAction":["s3:Get*","s3:List*"],"Resource":"arn:aws:s3:::b*"}}"#,
            "b",
        )
        .unwrap();
        let r = |who, action| req(who, action, "arn:aws:s3:::b/k");
        assert_eq!(p.evaluate(&r(Some("NEBX"), "s3:PutObject")), Decision::Deny);
        assert_eq!(
            p.evaluate(&r(Some("NEBX"), "s3:GetObject")),
            Decision::NotApplicable
        );
        assert_eq!(
            p.evaluate(&r(Some("NEBADMINISH"), "s3:PutObject")),
            Decision::NotApplicable
        );
        assert!(glob("a*b?d", "aXXbcd") && !glob("a*b?d", "aXXbd") && glob("*", ""));
        assert_eq!(iam_action("ListObjectsV2"), "s3:ListBucket");
        assert_eq!(iam_action("GetObject"), "s3:GetObject");
    }
}
