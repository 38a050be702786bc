//! A thin layer in front of the s3s service: closes the gaps s3s 0.14.1 leaves open (presigned
//! expiry cap, region check, S3's lenient Range handling, request ids in error bodies) in one
//! place, and logs and counts each request (see [`crate::metrics`]).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use s3s::service::S3Service;
use s3s::{Body, HttpError};

use crate::limits::{IdleTimeoutBody, Limits, MAX_XML_BODY};
use crate::metrics::RequestTag;
use crate::peer::{AllowList, PeerInfo};
use crate::s3::Cors;
use crate::s3::post::{FormFileName, WatchFileName, is_form_upload};

/// SigV4's longest presigned URL lifetime (7 days).
const MAX_PRESIGNED_EXPIRES: u64 = 604_800;

/// The per-request entry point shared by all listeners.
#[derive(Clone)]
pub struct Front {
    s3: S3Service,
    /// The same gateway without authentication, for replaying a request whose signature s3s
    /// has already verified (see [`Front::replay_without_range`]). Never reached otherwise.
    verified: S3Service,
    region: String,
    /// `--tailscale-allow`: which tailnet nodes may send requests (all when `None`).
    tailnet_allow: Option<Arc<AllowList>>,
    /// Time limits for connections and request bodies.
    limits: Limits,
    /// The buckets' CORS rules: preflights and `Access-Control-*` headers.
    cors: Option<Cors>,
}

/// An S3 XML error response produced before s3s sees the request.
fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    crate::s3::xml_response(status, code, message)
}

/// Error bodies are small XML documents; anything larger is passed through untouched.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// A new request id: 16 upper-case hex digits, as S3's `x-amz-request-id`.
fn new_request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// This gateway's `HostId` / `x-amz-id-2`: the same for every answer of one process, so a
/// reported error can be traced to the gateway that gave it (the logs print it at start)
/// without revealing the host's name.
pub fn host_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use md5::Digest;
        let digest = md5::Md5::digest(crate::catalog::gateway_id().as_bytes());
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest)
    })
}

/// Puts `x-amz-request-id` and `x-amz-id-2` on every answer and, as S3 does, the same
/// `RequestId` and `HostId` into an XML error body (s3s writes neither; the gateway's own
/// early refusals neither).
async fn stamp_request_id(resp: Response<Body>, request_id: &str) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let header = |v: &str| http::HeaderValue::from_str(v).expect("hex and base64 are header-safe");
    parts.headers.insert("x-amz-request-id", header(request_id));
    parts.headers.insert("x-amz-id-2", header(host_id()));
    let is_xml = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("xml"));
    let small = http_body::Body::size_hint(&body)
        .upper()
        .is_some_and(|n| n > 0 && n <= MAX_ERROR_BODY);
    if !(parts.status.is_client_error() || parts.status.is_server_error()) || !is_xml || !small {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
    else {
        return Response::from_parts(parts, Body::empty());
    };
    let text = String::from_utf8_lossy(&bytes);
    let stamped = match text.rfind("</Error>") {
        Some(end) if !text.contains("<RequestId>") => format!(
            "{}<RequestId>{request_id}</RequestId><HostId>{}</HostId>{}",
            &text[..end],
            host_id(),
            &text[end..]
        ),
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(stamped))
}

/// True for a single well-formed byte range that s3s will accept (`a-b` with a ≤ b, `a-`, `-n`).
fn is_single_valid_range(v: &str) -> bool {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return false;
    };
    let Some((a, b)) = spec.split_once('-') else {
        return false;
    };
    let num = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit());
    match (a.is_empty(), b.is_empty()) {
        (false, false) => num(a) && num(b) && a.parse::<u64>().ok() <= b.parse::<u64>().ok(),
        (false, true) => num(a),
        (true, false) => num(b),
        (true, true) => false,
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
    })
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// True for an HTTP/1.1 request that asks for `100 Continue` but has no body to send.
///
/// hyper answers such a request with its final status straight away (RFC 9110 allows it), and
/// botocore before 1.43.77 (boto3, aws CLI v1 and Debian 12's aws CLI v2) then keeps that
/// status line on the pooled connection and misreads the next `Expect` response on it: its
/// headers are lost (no ETag) and the client stalls until its read timeout
/// (boto/botocore#3755). Closing the connection after the response resets the client's
/// connection object, at the price of one reconnect per empty upload.
fn empty_body_expecting_continue<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    req.version() == http::Version::HTTP_11
        && headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
        && content_length(req).unwrap_or(0) == 0
}

/// True when the client's SigV4 signature covers the `Range` header.
fn range_is_signed<B>(req: &Request<B>) -> bool {
    let signed_in_header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("SignedHeaders=").nth(1))
        .is_some_and(|s| {
            s.split([',', ' '])
                .next()
                .unwrap_or("")
                .split(';')
                .any(|h| h == "range")
        });
    let signed_in_query = query_param(req.uri().query().unwrap_or(""), "X-Amz-SignedHeaders")
        .is_some_and(|s| s.split(';').any(|h| h == "range"));
    signed_in_header || signed_in_query
}

/// The region of a SigV4 credential scope `AK/date/region/service/aws4_request`.
fn scope_region(credential: &str) -> Option<&str> {
    credential.split('/').nth(2)
}

impl Front {
    /// Wraps the s3s service for a gateway answering in `region`; `verified` is the same
    /// gateway built without authentication.
    pub fn new(s3: S3Service, verified: S3Service, region: String) -> Self {
        Front {
            s3,
            verified,
            region,
            tailnet_allow: None,
            limits: Limits::default(),
            cors: None,
        }
    }

    /// Answers CORS preflights and adds CORS headers from the buckets' rules.
    pub fn with_cors(mut self, cors: Cors) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Sets the time limits (header read, body idle) for every listener serving this front.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The time limits connections and request bodies are held to.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Restricts requests from tailnet peers to the nodes `allow` names (`--tailscale-allow`),
    /// on top of SigV4. Connections that are not from the tailnet are not affected.
    pub fn with_tailnet_allow(mut self, allow: Option<AllowList>) -> Self {
        self.tailnet_allow = allow.map(Arc::new);
        self
    }

    /// The 403 for a tailnet node that `--tailscale-allow` does not list.
    fn tailnet_refusal(&self, peer: &PeerInfo) -> Option<Response<Body>> {
        let allow = self.tailnet_allow.as_deref()?;
        let node = peer.tailnet.as_ref()?;
        if allow.permits(node) {
            return None;
        }
        Some(xml_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &format!("tailnet node {node} is not allowed to use this gateway (--tailscale-allow)"),
        ))
    }

    /// s3s parses `Range` only after the signature check and answers 400 for a range S3 would
    /// ignore. When the client signed that header we cannot drop it before the check, so the
    /// 400 (which proves the signature held) is answered by replaying the request, without the
    /// range and the now-spent credentials, on the unauthenticated twin of the service.
    async fn replay_without_range(
        &self,
        parts: &http::request::Parts,
        peer: PeerInfo,
    ) -> Result<Response<Body>, HttpError> {
        let query: Vec<&str> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("X-Amz-") && !p.starts_with("x-amz-"))
            .collect();
        let pq = if query.is_empty() {
            parts.uri.path().to_owned()
        } else {
            format!("{}?{}", parts.uri.path(), query.join("&"))
        };
        let mut builder = Request::builder()
            .method(parts.method.clone())
            .uri(pq)
            .version(parts.version);
        for (name, value) in &parts.headers {
            let n = name.as_str();
            if n == "authorization" || n == "range" || n.starts_with("x-amz-") {
                continue;
            }
            builder = builder.header(name, value);
        }
        let mut req = builder
            .body(Body::empty())
            .map_err(|e| HttpError::new(Box::new(e)))?;
        req.extensions_mut().insert(peer);
        self.verified.call(req).await
    }

    /// Checks S3 enforces that s3s 0.14.1 does not; `Some` is the error to answer with.
    fn precheck(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let query = req.uri().query().unwrap_or("");
        // POST bodies are XML (DeleteObjects, CompleteMultipartUpload) except browser form
        // uploads. s3s would read up to its XML limit before refusing; a declared length over
        // it is refused now, before a client waiting on `Expect: 100-continue` sends anything.
        if req.method() == http::Method::POST
            && content_length(req).is_some_and(|n| n > MAX_XML_BODY as u64)
            && !req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("multipart/form-data"))
        {
            return Some(xml_error(
                StatusCode::BAD_REQUEST,
                "MaxMessageLengthExceeded",
                &format!(
                    "Your request was too big: XML request bodies are limited to {MAX_XML_BODY} bytes"
                ),
            ));
        }
        if let Some(exp) = query_param(query, "X-Amz-Expires") {
            match exp.parse::<u64>() {
                Ok(n) if n <= MAX_PRESIGNED_EXPIRES => {}
                _ => {
                    return Some(xml_error(
                        StatusCode::BAD_REQUEST,
                        "AuthorizationQueryParametersError",
                        "X-Amz-Expires must be less than a week (in seconds) that is 604800",
                    ));
                }
            }
        }
        if let Some(cred) = query_param(query, "X-Amz-Credential")
            && let Some(r) = scope_region(&cred)
            && r != self.region
        {
            return Some(xml_error(
                StatusCode::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                &format!(
                    "Error parsing the X-Amz-Credential parameter; the region '{r}' is wrong; expecting '{}'",
                    self.region
                ),
            ));
        }
        if let Some(auth) = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            && auth.starts_with("AWS4-HMAC-SHA256")
            && let Some(cred) = auth
                .split("Credential=")
                .nth(1)
                .and_then(|s| s.split(',').next())
            && let Some(r) = scope_region(cred.trim())
            && r != self.region
        {
            return Some(xml_error(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                &format!(
                    "The authorization header is malformed; the region '{r}' is wrong; expecting '{}'",
                    self.region
                ),
            ));
        }
        None
    }

    /// Serves one request.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: PeerInfo,
    ) -> Result<Response<Body>, HttpError> {
        let tag = RequestTag::start(req.uri().path(), req.uri().query());
        let request_id = new_request_id();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let range = req
            .headers()
            .get(http::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // S3 ignores a Range it cannot serve as one range (malformed, multi-range, last < first)
        // and sends the whole object; s3s would answer 400.
        let bad_range = range.as_deref().is_some_and(|r| !is_single_valid_range(r));
        let close_after = empty_body_expecting_continue(&req);
        let mut replay = None;
        if bad_range {
            if range_is_signed(&req) {
                if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
                    let (parts, body) = req.into_parts();
                    replay = Some(parts.clone());
                    req = Request::from_parts(parts, body);
                }
            } else {
                req.headers_mut().remove(http::header::RANGE);
            }
        }
        // Answered before s3s: refusals, and the web app's static files (and the redirect of
        // a browser opening `/`), which need no signature.
        let early = self
            .tailnet_refusal(&peer)
            .or_else(|| crate::ui::respond(&req, &self.region))
            .or_else(|| self.cors.as_ref().and_then(|c| c.preflight(&req)))
            .or_else(|| self.precheck(&req));
        // A browser form upload: the file part's name is picked up on the way to s3s.
        let form = is_form_upload(&req).then(FormFileName::default);
        if let Some(name) = &form {
            req.extensions_mut().insert(name.clone());
        }
        let cors_headers = self
            .cors
            .as_ref()
            .map(|c| c.response_headers(&req))
            .unwrap_or_default();
        let mut resp = match early {
            Some(resp) => resp,
            None => {
                req.extensions_mut().insert(peer.clone());
                req.extensions_mut().insert(tag.clone());
                // A client that stops sending mid-body fails its request (and its temp file
                // goes) instead of holding them until the connection dies.
                let idle = self.limits.body_idle_timeout;
                let req = req.map(|b| {
                    let b = tag.count_received(IdleTimeoutBody::new(b, idle));
                    match &form {
                        Some(name) => Body::http_body(WatchFileName::new(b, name.clone())),
                        None => Body::http_body(b),
                    }
                });
                let resp = self.s3.call(req).await?;
                match &form {
                    Some(name) => crate::s3::post::finish(resp, name).await,
                    None if matches!(tag.op(), "PutBucketAcl" | "PutObjectAcl") => {
                        crate::s3::acl::finish(resp).await
                    }
                    None => resp,
                }
            }
        };
        if let Some(parts) = replay
            && resp.status() == StatusCode::BAD_REQUEST
        {
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            resp = if String::from_utf8_lossy(&body).contains("invalid header: range") {
                self.replay_without_range(&parts, peer.clone()).await?
            } else {
                let mut r = Response::new(Body::from(body));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            };
        }
        // A HEAD of part of an object (`partNumber`, `Range`) is 206 as its GET; s3s 0.14.1
        // builds HeadObject's answer with 200 and drops the status the handler set.
        if method == http::Method::HEAD
            && resp.status() == StatusCode::OK
            && resp.headers().contains_key(http::header::CONTENT_RANGE)
        {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        // Server-side failures stand out in `nebula logs --level warn`.
        macro_rules! request_line {
            ($level:expr) => {
                tracing::event!(
                    target: "nebula::request",
                    $level,
                    method = %method,
                    path = %path,
                    range = %range.as_deref().unwrap_or("-"),
                    status = resp.status().as_u16(),
                    op = tag.op(),
                    ms = tag.elapsed().as_millis() as u64,
                    peer = ?peer.addr,
                    node = %peer.tailnet.as_ref().map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    request_id = %request_id,
                    "request"
                )
            };
        }
        if resp.status().is_server_error() {
            request_line!(tracing::Level::WARN);
        } else {
            request_line!(tracing::Level::INFO);
        }
        let resp = stamp_request_id(resp, &request_id).await;
        let (mut parts, body) = resp.into_parts();
        parts.headers.extend(cors_headers);
        if close_after {
            parts.headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        let body = Body::http_body(tag.finish(parts.status, body));
        Ok(Response::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_s3_would_ignore() {
        for ok in ["bytes=0-0", "bytes=5-", "bytes=-3", "bytes=10-20"] {
            assert!(is_single_valid_range(ok), "{ok}");
        }
        for bad in [
            "bytes=0-1,4-5",
            "bytes=5-2",
            "bytes=-",
            "items=0-1",
            "bytes=a-b",
            "bytes=1",
        ] {
            assert!(!is_single_valid_range(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn error_bodies_get_the_request_id_of_their_header() {
        let resp = xml_error(StatusCode::NOT_FOUND, "NoSuchKey", "gone");
        let resp = stamp_request_id(resp, "0123456789ABCDEF").await;
        assert_eq!(resp.headers()["x-amz-request-id"], "0123456789ABCDEF");
        assert_eq!(resp.headers()["x-amz-id-2"], host_id());
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.ends_with(&format!(
                "<Message>gone</Message><RequestId>0123456789ABCDEF</RequestId><HostId>{}</HostId></Error>",
                host_id()
            )),
            "{body}"
        );
        let ok = stamp_request_id(Response::new(Body::from("<x/>".to_owned())), "1").await;
        assert_eq!(ok.headers()["x-amz-request-id"], "1");
    }

    #[test]
    fn empty_uploads_expecting_continue_close_the_connection() {
        let closes = |expect: Option<&str>, len: Option<&str>, te: bool| {
            let mut b = Request::builder().method("PUT").uri("/b/k");
            if let Some(e) = expect {
                b = b.header("expect", e);
            }
            if let Some(l) = len {
                b = b.header("content-length", l);
            }
            if te {
                b = b.header("transfer-encoding", "chunked");
            }
            empty_body_expecting_continue(&b.body(()).unwrap())
        };
        assert!(closes(Some("100-continue"), Some("0"), false));
        assert!(closes(Some("100-Continue"), None, false));
        assert!(!closes(Some("100-continue"), Some("5"), false));
        assert!(!closes(Some("100-continue"), None, true));
        assert!(!closes(None, Some("0"), false));
    }

    #[test]
    fn region_from_scope() {
        assert_eq!(
            scope_region("AKID/20260101/eu-west-1/s3/aws4_request"),
            Some("eu-west-1")
        );
    }
}
