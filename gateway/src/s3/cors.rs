//! CORS: Put/Get/DeleteBucketCors, the preflight `OPTIONS` answer and the `Access-Control-*`
//! headers of real responses (as Garage's `src/api/common/cors.rs`).
//!
//! s3s 0.14.1 has no CORS handling: a preflight carries no signature and is not an S3
//! operation, so [`Cors`] answers it in the front (`crate::front`) before s3s, from the
//! bucket's rules, and adds the headers to whatever s3s answers a cross-origin request with
//! (errors included, so a browser can read them). A bucket without rules gets no CORS headers,
//! and a request without `Origin` costs nothing. The rules are the bucket's
//! [`Setting::Cors`] document, JSON of [`CorsRule`]s.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use s3s::dto::*;
use s3s::{Body, S3Request, S3Response};
use serde::{Deserialize, Serialize};

use super::{Gateway, RequestError, RequestResult, blocking};
use crate::store::Store;
use crate::store::settings::Setting;

/// At most this many rules per bucket (S3's limit).
const MAX_RULES: usize = 100;

/// The methods a CORS rule may allow (S3 refuses others).
const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

/// One CORS rule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    origins: Vec<String>,
    methods: Vec<String>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    expose: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_age: Option<i32>,
}

impl CorsRule {
    fn from_s3(r: CORSRule) -> RequestResult<Self> {
        for m in &r.allowed_methods {
            if !METHODS.contains(&m.as_str()) {
                return Err(RequestError::InvalidRequest(format!(
                    "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                )));
            }
        }
        for o in &r.allowed_origins {
            if o.matches('*').count() > 1 {
                return Err(RequestError::InvalidRequest(format!(
                    "AllowedOrigin \"{o}\" can not have more than one wildcard."
                )));
            }
        }
        let headers = r.allowed_headers.unwrap_or_default();
        for h in &headers {
            if h.matches('*').count() > 1 {
                return Err(RequestError::InvalidRequest(format!(
                    "AllowedHeader \"{h}\" can not have more than one wildcard."
                )));
            }
        }
        if r.allowed_methods.is_empty() || r.allowed_origins.is_empty() {
            return Err(RequestError::MalformedXml(
                "a CORSRule needs at least one AllowedMethod and one AllowedOrigin",
            ));
        }
        Ok(CorsRule {
            id: r.id,
            origins: r.allowed_origins,
            methods: r.allowed_methods,
            headers,
            expose: r.expose_headers.unwrap_or_default(),
            max_age: r.max_age_seconds,
        })
    }

    fn to_s3(&self) -> CORSRule {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        CORSRule {
            id: self.id.clone(),
            allowed_origins: self.origins.clone(),
            allowed_methods: self.methods.clone(),
            allowed_headers: some(&self.headers),
            expose_headers: some(&self.expose),
            max_age_seconds: self.max_age,
        }
    }

    /// True when this rule allows `origin` to send `method` with `headers` (lower-case).
    fn allows(&self, origin: &str, method: &str, headers: &[String]) -> bool {
        self.origins.iter().any(|o| wildcard_match(o, origin))
            && self.methods.iter().any(|m| m == method)
            && headers
                .iter()
                .all(|h| self.headers.iter().any(|a| wildcard_match(a, h)))
    }

    /// The `Access-Control-Allow-Origin` value: `*` for a rule open to any origin.
    fn allow_origin(&self, origin: &str) -> String {
        if self.origins.iter().any(|o| o == "*") {
            "*".to_owned()
        } else {
            origin.to_owned()
        }
    }
}

/// `pattern` with at most one `*` (any run of characters) against `s`, ignoring ASCII case as
/// S3 does for origins and header names.
fn wildcard_match(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.to_ascii_lowercase(), s.to_ascii_lowercase());
    match p.split_once('*') {
        None => p == s,
        Some((head, tail)) => {
            s.len() >= head.len() + tail.len() && s.starts_with(head) && s.ends_with(tail)
        }
    }
}

fn parse_rules(doc: &[u8]) -> Vec<CorsRule> {
    serde_json::from_slice(doc).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "unreadable CORS document: treated as no rules");
        Vec::new()
    })
}

/// PutBucketCors.
pub(crate) async fn put_bucket_cors(
    gw: &Gateway,
    req: S3Request<PutBucketCorsInput>,
) -> RequestResult<S3Response<PutBucketCorsOutput>> {
    let input = req.input;
    let rules = input.cors_configuration.cors_rules;
    if rules.is_empty() || rules.len() > MAX_RULES {
        return Err(RequestError::MalformedXml(
            "a CORS configuration holds 1 to 100 CORSRule elements",
        ));
    }
    let rules = rules
        .into_iter()
        .map(CorsRule::from_s3)
        .collect::<RequestResult<Vec<_>>>()?;
    let doc = serde_json::to_vec(&rules).map_err(|e| RequestError::Internal(e.to_string()))?;
    let (store, bucket) = (gw.store.clone(), input.bucket);
    blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().put(&bucket, Setting::Cors, &doc)
    })
    .await?;
    Ok(S3Response::new(PutBucketCorsOutput::default()))
}

/// GetBucketCors.
pub(crate) async fn get_bucket_cors(
    gw: &Gateway,
    req: S3Request<GetBucketCorsInput>,
) -> RequestResult<S3Response<GetBucketCorsOutput>> {
    let (store, bucket) = (gw.store.clone(), req.input.bucket);
    let doc = blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().get(&bucket, Setting::Cors)
    })
    .await?;
    let rules = doc.map(|d| parse_rules(&d)).unwrap_or_default();
    if rules.is_empty() {
        return Err(RequestError::NoSuchCorsConfiguration);
    }
    Ok(S3Response::new(GetBucketCorsOutput {
        cors_rules: Some(rules.iter().map(CorsRule::to_s3).collect()),
    }))
}

/// DeleteBucketCors.
pub(crate) async fn delete_bucket_cors(
    gw: &Gateway,
    req: S3Request<DeleteBucketCorsInput>,
) -> RequestResult<S3Response<DeleteBucketCorsOutput>> {
    let (store, bucket) = (gw.store.clone(), req.input.bucket);
    blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().delete(&bucket, Setting::Cors)
    })
    .await?;
    Ok(S3Response::new(DeleteBucketCorsOutput::default()))
}

/// The front's side of CORS: reads the rules of the bucket a request is for.
#[derive(Debug, Clone)]
pub struct Cors {
    store: Arc<Store>,
    /// `--domain`: buckets may be named in the Host header (`<bucket>.<domain>`).
    domain: Option<String>,
}

/// What the preflight refusals are, as S3 words them.
const NOT_ENABLED: &str = "CORSResponse: CORS is not enabled for this bucket.";
const NOT_ALLOWED: &str = "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.";

fn header<B>(req: &Request<B>, name: impl http::header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn set(headers: &mut HeaderMap, name: http::header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

impl Cors {
    /// CORS for the buckets of `store`; `domain` is the gateway's `--domain`, if any.
    pub fn new(store: Arc<Store>, domain: Option<&str>) -> Self {
        Cors {
            store,
            domain: domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        }
    }

    /// The bucket a request is for: from the Host (virtual-host style) or the first path
    /// segment.
    fn bucket_of<B>(&self, req: &Request<B>) -> Option<String> {
        if let Some(domain) = &self.domain
            && let Some(host) = header(req, http::header::HOST)
        {
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            if let Some(sub) = name
                .to_ascii_lowercase()
                .strip_suffix(domain.as_str())
                .and_then(|s| s.strip_suffix('.'))
                .filter(|s| !s.is_empty())
            {
                return Some(sub.to_owned());
            }
        }
        let first = req.uri().path().trim_start_matches('/').split('/').next()?;
        let bucket = percent_encoding::percent_decode_str(first)
            .decode_utf8()
            .ok()?
            .into_owned();
        (!bucket.is_empty() && !bucket.starts_with('_')).then_some(bucket)
    }

    /// The bucket's rules; `None` when it has none (or no such bucket).
    fn rules(&self, bucket: &str) -> Option<Vec<CorsRule>> {
        match self.store.settings().get(bucket, Setting::Cors) {
            Ok(Some(doc)) => Some(parse_rules(&doc)).filter(|r| !r.is_empty()),
            Ok(None) | Err(_) => None,
        }
    }

    /// The answer to a preflight `OPTIONS` on a bucket or object, which needs no signature;
    /// `None` for any other request.
    pub fn preflight<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        if req.method() != Method::OPTIONS {
            return None;
        }
        let bucket = self.bucket_of(req)?;
        let (Some(origin), Some(method)) = (
            header(req, http::header::ORIGIN),
            header(req, http::header::ACCESS_CONTROL_REQUEST_METHOD),
        ) else {
            return Some(super::error::xml_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Insufficient information. Origin request header needed.",
            ));
        };
        let requested: Vec<String> = header(req, http::header::ACCESS_CONTROL_REQUEST_HEADERS)
            .unwrap_or("")
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let Some(rules) = self.rules(&bucket) else {
            return Some(super::error::xml_response(
                StatusCode::FORBIDDEN,
                "AccessForbidden",
                NOT_ENABLED,
            ));
        };
        let Some(rule) = rules.iter().find(|r| r.allows(origin, method, &requested)) else {
            return Some(super::error::xml_response(
                StatusCode::FORBIDDEN,
                "AccessForbidden",
                NOT_ALLOWED,
            ));
        };
        let mut resp = Response::new(Body::empty());
        let h = resp.headers_mut();
        add_rule_headers(h, rule, origin);
        if !requested.is_empty() {
            set(
                h,
                http::header::ACCESS_CONTROL_ALLOW_HEADERS,
                &requested.join(", "),
            );
        }
        if let Some(age) = rule.max_age {
            set(h, http::header::ACCESS_CONTROL_MAX_AGE, &age.to_string());
        }
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        Some(resp)
    }

    /// The CORS headers for the response to a real (non-preflight) request: empty without an
    /// `Origin` or without rules, only `Vary` when no rule matches.
    pub fn response_headers<B>(&self, req: &Request<B>) -> HeaderMap {
        let mut h = HeaderMap::new();
        let Some(origin) = header(req, http::header::ORIGIN) else {
            return h;
        };
        let Some(rules) = self.bucket_of(req).and_then(|b| self.rules(&b)) else {
            return h;
        };
        match rules
            .iter()
            .find(|r| r.allows(origin, req.method().as_str(), &[]))
        {
            Some(rule) => add_rule_headers(&mut h, rule, origin),
            None => set(&mut h, http::header::VARY, VARY),
        }
        h
    }
}

const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// The headers a matching rule grants, on preflights and real responses alike.
fn add_rule_headers(h: &mut HeaderMap, rule: &CorsRule, origin: &str) {
    let allow_origin = rule.allow_origin(origin);
    set(h, http::header::ACCESS_CONTROL_ALLOW_ORIGIN, &allow_origin);
    if allow_origin != "*" {
        set(h, http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    set(
        h,
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        &rule.methods.join(", "),
    );
    if !rule.expose.is_empty() {
        set(
            h,
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &rule.expose.join(", "),
        );
    }
    set(h, http::header::VARY, VARY);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        CorsRule {
            id: None,
            origins: v(origins),
            methods: v(methods),
            headers: v(headers),
            expose: vec!["ETag".into()],
            max_age: Some(600),
        }
    }

    #[test]
    fn wildcards_in_origins_and_headers() {
        assert!(wildcard_match("*", "https://a.example"));
        assert!(wildcard_match(
            "https://*.example.com",
            "https://app.example.com"
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "https://example.org"
        ));
        assert!(wildcard_match("x-amz-*", "X-Amz-Date"));
        assert!(!wildcard_match("https://a*a", "https://a"));
        let r = rule(&["https://*.example.com"], &["PUT", "GET"], &["content-*"]);
        assert!(r.allows("https://app.example.com", "PUT", &["content-type".into()]));
        assert!(!r.allows("https://app.example.com", "DELETE", &[]));
        assert!(!r.allows("https://app.example.com", "PUT", &["authorization".into()]));
        assert!(!r.allows("https://evil.test", "GET", &[]));
        assert_eq!(
            r.allow_origin("https://app.example.com"),
            "https://app.example.com"
        );
        assert_eq!(rule(&["*"], &["GET"], &[]).allow_origin("https://x"), "*");
    }

    #[test]
    fn bad_rules_are_refused() {
        let r = |methods: Vec<String>, origins: Vec<String>| CORSRule {
            allowed_methods: methods,
            allowed_origins: origins,
            ..Default::default()
        };
        assert!(CorsRule::from_s3(r(vec!["PATCH".into()], vec!["*".into()])).is_err());
        assert!(CorsRule::from_s3(r(vec!["GET".into()], vec!["https://*.*.x".into()])).is_err());
        assert!(CorsRule::from_s3(r(vec![], vec!["*".into()])).is_err());
        assert!(CorsRule::from_s3(r(vec!["GET".into()], vec!["*".into()])).is_ok());
    }
}
