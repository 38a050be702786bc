//! A thin layer in front of the s3s service: closes the gaps s3s 0.14.1 leaves open (presigned
//! expiry cap, region check, S3's lenient Range handling) in one place, and logs each request.

use std::net::SocketAddr;
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use s3s::service::S3Service;
use s3s::{Body, HttpError};

/// SigV4's longest presigned URL lifetime (7 days).
const MAX_PRESIGNED_EXPIRES: u64 = 604_800;

/// Facts about the connection a request came on, passed to handlers as a request extension.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Remote address as seen by the listener.
    pub addr: Option<SocketAddr>,
}

/// The per-request entry point shared by all listeners.
#[derive(Clone)]
pub struct Front {
    s3: S3Service,
    region: String,
}

/// An S3 XML error response produced before s3s sees the request.
fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
        esc(code),
        esc(message)
    );
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    resp
}

/// True for a single well-formed byte range that s3s will accept (`a-b` with a ≤ b, `a-`, `-n`).
fn is_single_valid_range(v: &str) -> bool {
    let Some(spec) = v.trim().strip_prefix("bytes=") else { return false };
    let Some((a, b)) = spec.split_once('-') else { return false };
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

/// The region of a SigV4 credential scope `AK/date/region/service/aws4_request`.
fn scope_region(credential: &str) -> Option<&str> {
    credential.split('/').nth(2)
}

impl Front {
    /// Wraps the s3s service for a gateway answering in `region`.
    pub fn new(s3: S3Service, region: String) -> Self {
        Front { s3, region }
    }

    /// Checks S3 enforces that s3s 0.14.1 does not; `Some` is the error to answer with.
    fn precheck(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let query = req.uri().query().unwrap_or("");
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
                &format!("Error parsing the X-Amz-Credential parameter; the region '{r}' is wrong; expecting '{}'", self.region),
            ));
        }
        if let Some(auth) = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
            && auth.starts_with("AWS4-HMAC-SHA256")
            && let Some(cred) = auth.split("Credential=").nth(1).and_then(|s| s.split(',').next())
            && let Some(r) = scope_region(cred.trim())
            && r != self.region
        {
            return Some(xml_error(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                &format!("The authorization header is malformed; the region '{r}' is wrong; expecting '{}'", self.region),
            ));
        }
        None
    }

    /// Serves one request.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: PeerInfo) -> Result<Response<Body>, HttpError> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let range = req.headers().get(http::header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // S3 ignores a Range it cannot serve as one range (malformed, multi-range, last < first)
        // and sends the whole object; s3s would answer 400.
        if let Some(r) = &range
            && !is_single_valid_range(r)
        {
            req.headers_mut().remove(http::header::RANGE);
        }
        let resp = match self.precheck(&req) {
            Some(resp) => resp,
            None => {
                req.extensions_mut().insert(peer.clone());
                hyper::service::Service::call(&self.s3, req).await?
            }
        };
        tracing::info!(
            target: "nebula::request",
            method = %method,
            path = %path,
            range = %range.as_deref().unwrap_or("-"),
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            peer = ?peer.addr,
            "request"
        );
        Ok(resp)
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
        for bad in ["bytes=0-1,4-5", "bytes=5-2", "bytes=-", "items=0-1", "bytes=a-b", "bytes=1"] {
            assert!(!is_single_valid_range(bad), "{bad}");
        }
    }

    #[test]
    fn region_from_scope() {
        assert_eq!(scope_region("AKID/20260101/eu-west-1/s3/aws4_request"), Some("eu-west-1"));
    }
}
