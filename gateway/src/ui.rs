//! The web app: the page-app in the repository's `web/app/` folder, embedded in the binary and
//! served under `/_nebula/ui/`, and the redirect that sends a browser opening `/` there.
//!
//! The files are static: the page signs its own S3 and API requests with the keys the person
//! types in (SigV4 in the browser), so serving them needs no authentication and the gateway
//! keeps no session. Every answer carries strict security headers: a CSP that allows only the
//! gateway's own scripts and styles (no inline code), no sniffing, no framing, no referrer.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use include_dir::{Dir, include_dir};
use md5::{Digest, Md5};
use s3s::Body;

/// Where the web app is served.
pub const UI_PATH: &str = "/_nebula/ui/";

/// The page-app's files, compiled in.
static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../web/app");

/// Scripts, styles, fetches and media only from the gateway itself (presigned media URLs are
/// same-origin); `blob:` for hls.js's MediaSource URLs and posters; nothing inline, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; \
    worker-src 'self' blob:; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Answers a request for the web app, or `None` when the request is not one (S3 and the JSON
/// API go on to s3s). `region` is the gateway's, which the page needs to sign requests.
pub fn respond<B>(req: &Request<B>, region: &str) -> Option<Response<Body>> {
    let path = req.uri().path();
    if path == "/" {
        return is_browser_visit(req).then(|| redirect(UI_PATH));
    }
    if path == "/_nebula/ui" {
        return Some(redirect(UI_PATH));
    }
    let name = path.strip_prefix(UI_PATH)?;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(resp);
    }
    let name = if name.is_empty() { "index.html" } else { name };
    let (bytes, etag) = if name == "config.json" {
        let body = serde_json::json!({
            "region": region,
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string();
        (Bytes::from(body), None)
    } else {
        let Some(file) = ASSETS.get_file(name) else {
            return Some(plain(StatusCode::NOT_FOUND, "no such file in the web app"));
        };
        (
            Bytes::from_static(file.contents()),
            etags().get(name).cloned(),
        )
    };
    let not_modified = etag.as_deref().is_some_and(|e| {
        req.headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == e))
    });
    let mut resp = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let len = bytes.len();
        let body = if req.method() == Method::HEAD {
            Body::empty()
        } else {
            Body::from(bytes)
        };
        let mut r = Response::new(body);
        r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
        r
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type(name));
    // Revalidate every time (a 304 is cheap): file names carry no version, and a new binary
    // must never run with an old page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(e) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, e);
    }
    security_headers(&mut resp);
    Some(resp)
}

/// A person's browser opening the gateway's address: `GET /` asking for HTML, with no
/// signature and no query. Every S3 request to `/` (ListBuckets) is signed, and anonymous
/// S3 clients do not ask for HTML.
fn is_browser_visit<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req.uri().query().is_none_or(str::is_empty)
        && !req.headers().contains_key(header::AUTHORIZATION)
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(&mut resp);
    resp
}

fn plain(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(Bytes::from_static(msg.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    security_headers(&mut resp);
    resp
}

fn security_headers(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn content_type(name: &str) -> HeaderValue {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    HeaderValue::from_static(match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    })
}

/// Strong ETags (MD5 of each file), computed once at the first request for the app.
fn etags() -> &'static HashMap<&'static str, String> {
    static ETAGS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        let mut map = HashMap::new();
        let mut stack = vec![&ASSETS];
        while let Some(dir) = stack.pop() {
            for f in dir.files() {
                if let Some(p) = f.path().to_str() {
                    map.insert(p, format!("\"{}\"", hex::encode(Md5::digest(f.contents()))));
                }
            }
            stack.extend(dir.dirs());
        }
        map
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, accept: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(path);
        if let Some(a) = accept {
            b = b.header(header::ACCEPT, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn browsers_at_root_are_sent_to_the_app() {
        let r = respond(&get("/", Some("text/html,application/xhtml+xml")), "r").unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()[header::LOCATION], UI_PATH);
    }

    #[test]
    fn s3_requests_at_root_are_left_alone() {
        assert!(respond(&get("/", None), "r").is_none());
        assert!(respond(&get("/", Some("*/*")), "r").is_none());
        assert!(respond(&get("/?x-id=ListBuckets", Some("text/html")), "r").is_none());
        let signed = Request::builder()
            .uri("/")
            .header(header::ACCEPT, "text/html")
            .header(header::AUTHORIZATION, "AWS4-HMAC-SHA256 Credential=...")
            .body(())
            .unwrap();
        assert!(respond(&signed, "r").is_none());
        assert!(respond(&get("/bucket", Some("text/html")), "r").is_none());
        assert!(respond(&get("/_nebula/v1/ping", Some("text/html")), "r").is_none());
    }

    #[test]
    fn index_is_served_with_security_headers() {
        let r = respond(&get(UI_PATH, None), "r").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"));
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = Request::builder()
            .uri(UI_PATH)
            .header(header::IF_NONE_MATCH, etag)
            .body(())
            .unwrap();
        assert_eq!(
            respond(&again, "r").unwrap().status(),
            StatusCode::NOT_MODIFIED
        );
    }

    #[test]
    fn unknown_files_and_methods() {
        let r = respond(&get("/_nebula/ui/../../etc/passwd", None), "r").unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let post = Request::builder()
            .method(Method::POST)
            .uri(UI_PATH)
            .body(())
            .unwrap();
        assert_eq!(
            respond(&post, "r").unwrap().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
