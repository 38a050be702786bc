//! The HTTP client: signs requests, sends them, and turns failures into [`CliError`]s.

use std::time::Duration;

use bytes::Bytes;
use nebula_api_types::ErrorBody;
use reqwest::{Method, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Settings, choose_server};
use crate::error::{CliError, Result};
use crate::sign::{PayloadHash, Signer, encode_path, encode_query};

/// A request body.
pub enum Body {
    /// No body.
    Empty,
    /// A body in memory, signed with its SHA-256.
    Bytes(Bytes),
    /// A streamed body of known length, signed with the given hash (often `UNSIGNED-PAYLOAD`).
    Stream(reqwest::Body, u64, PayloadHash),
}

/// A signed connection to one gateway (or any S3 server).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL without trailing slash, e.g. `http://127.0.0.1:9000`.
    pub base: String,
    /// The SigV4 region, which is the region new buckets are made in.
    pub region: String,
    signer: Option<Signer>,
}

impl Client {
    /// Picks the server (probing local/remote) and builds the client.
    pub async fn connect(settings: &Settings) -> Result<Self> {
        let base = choose_server(&settings.servers).await;
        Self::new(base, settings)
    }

    /// A client for a known base URL.
    pub fn new(base: String, settings: &Settings) -> Result<Self> {
        let http = reqwest::Client::builder()
            // No overall timeout: transfers of large files take as long as they take.
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("nebula-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::local(format!("cannot set up HTTP: {e}")))?;
        let signer = settings
            .keys
            .as_ref()
            .map(|(a, s)| Signer::new(a, s, &settings.region));
        Ok(Client {
            http,
            base,
            region: settings.region.clone(),
            signer,
        })
    }

    /// Path-style URL of a bucket or object with an optional query (names and values raw).
    pub fn url(&self, bucket: &str, key: Option<&str>, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}/{}", self.base, encode_path(bucket));
        if let Some(k) = key {
            url.push('/');
            url.push_str(&encode_path(k));
        }
        push_query(&mut url, query);
        url
    }

    /// URL of an API endpoint below `/_nebula/v1/`.
    pub fn api_url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}/_nebula/v1/{path}", self.base);
        push_query(&mut url, query);
        url
    }

    fn signer(&self) -> Result<&Signer> {
        self.signer.as_ref().ok_or_else(|| {
            CliError::local("no keys are configured: set NEBULA_ACCESS_KEY and NEBULA_SECRET_KEY, or run `nebula login`")
        })
    }

    /// A presigned URL for `url` valid for `expires`.
    pub fn presign(&self, method: &Method, url: &str, expires: Duration) -> Result<String> {
        self.signer()?.presign(method.as_str(), url, expires)
    }

    /// Sends a signed request and returns the response whatever its status.
    pub async fn send_raw(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Response> {
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let (payload, body, len) = match body {
            Body::Empty => (PayloadHash::of(b""), None, None),
            Body::Bytes(b) => (
                PayloadHash::of(&b),
                Some(reqwest::Body::from(b.clone())),
                Some(b.len() as u64),
            ),
            Body::Stream(b, len, hash) => (hash, Some(b), Some(len)),
        };
        if let Some(len) = len {
            // Streams have no length reqwest could see, and UNSIGNED-PAYLOAD needs one.
            all.push(("content-length".into(), len.to_string()));
        }
        let signed = self
            .signer()?
            .sign_headers(method.as_str(), url, &all, &payload)?;
        let mut req = self.http.request(method, url);
        for (k, v) in all.iter().chain(signed.iter()) {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.map_err(|e| self.connection_error(url, &e))
    }

    /// Sends a signed request; a non-2xx answer becomes [`CliError::Remote`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Body,
        resource: &str,
    ) -> Result<Response> {
        let is_head = method == Method::HEAD;
        let resp = self.send_raw(method, url, headers, body).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let err = remote_error(resp, resource).await;
        // HEAD answers carry no error document, so "403" alone cannot tell wrong keys from a
        // denied object; one tiny GET fetches the server's reason.
        if is_head && err.code() == Some("") {
            let probe = self
                .send_raw(
                    Method::GET,
                    url,
                    &[("range", "bytes=0-0".into())],
                    Body::Empty,
                )
                .await?;
            if !probe.status().is_success() {
                return Err(remote_error(probe, resource).await);
            }
        }
        Err(err)
    }

    /// Sends an unsigned GET (used by `ping`, which works without keys).
    pub async fn get_unsigned(&self, url: &str, timeout: Duration) -> Result<Response> {
        self.http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.connection_error(url, &e))
    }

    /// Signed GET of an API endpoint, decoded from JSON.
    pub async fn api_get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T> {
        let url = self.api_url(path, query);
        let resp = self
            .send(
                Method::GET,
                &url,
                &[],
                Body::Empty,
                &format!("GET /_nebula/v1/{path}"),
            )
            .await?;
        decode_json(resp, path).await
    }

    /// Signed POST of a JSON body to an API endpoint, decoded from JSON.
    pub async fn api_post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let url = self.api_url(path, &[]);
        let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON values serialise"));
        let resp = self
            .send(
                Method::POST,
                &url,
                &[("content-type", "application/json".into())],
                Body::Bytes(bytes),
                &format!("POST /_nebula/v1/{path}"),
            )
            .await?;
        decode_json(resp, path).await
    }

    /// Signed DELETE of an API endpoint, decoded from JSON.
    pub async fn api_delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.api_url(path, &[]);
        let resp = self
            .send(
                Method::DELETE,
                &url,
                &[],
                Body::Empty,
                &format!("DELETE /_nebula/v1/{path}"),
            )
            .await?;
        decode_json(resp, path).await
    }

    /// Classifies a transport failure; only failures to get any answer are "connection" errors.
    pub fn connection_error(&self, url: &str, e: &reqwest::Error) -> CliError {
        let detail = if e.is_timeout() {
            "the connection timed out".to_owned()
        } else {
            // The innermost cause ("Connection refused (os error 111)") is the readable part.
            let mut src: &dyn std::error::Error = e;
            while let Some(next) = src.source() {
                src = next;
            }
            src.to_string()
        };
        let base = url
            .find("/_nebula/")
            .map(|i| &url[..i])
            .unwrap_or(&self.base);
        CliError::Connection {
            url: base.to_owned(),
            detail,
        }
    }
}

fn push_query(url: &mut String, query: &[(&str, &str)]) {
    for (i, (k, v)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&encode_query(k));
        if !v.is_empty() || *k != "uploads" {
            url.push('=');
            url.push_str(&encode_query(v));
        }
    }
}

/// Reads a JSON body.
pub async fn decode_json<T: DeserializeOwned>(resp: Response, what: &str) -> Result<T> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| CliError::local(format!("the answer to {what} was cut short: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CliError::local(format!(
            "the answer to {what} is not the expected JSON: {e}"
        ))
    })
}

/// Turns an error response (S3 XML or API JSON) into a [`CliError::Remote`].
pub async fn remote_error(resp: Response, resource: &str) -> CliError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = parse_error_body(&text);
    // Fallbacks for bodiless answers (HEAD) that still say enough through the status.
    let code = match (code.is_empty(), status) {
        (true, StatusCode::NOT_FOUND) if resource.matches('/').count() > 2 => {
            "NoSuchKey".to_owned()
        }
        _ => code,
    };
    CliError::Remote {
        status: status.as_u16(),
        code,
        message,
        resource: resource.to_owned(),
    }
}

/// `(code, message)` from `<Error><Code/><Message/></Error>` or `{"error":{"code","message"}}`.
pub fn parse_error_body(text: &str) -> (String, String) {
    if let Ok(ErrorBody { error }) = serde_json::from_str(text) {
        return (error.code, error.message);
    }
    if let Ok(doc) = roxmltree::Document::parse(text) {
        let s = |tag: &str| {
            doc.descendants()
                .find(|n| n.tag_name().name() == tag)
                .and_then(|n| n.text())
                .unwrap_or_default()
                .to_owned()
        };
        return (s("Code"), s("Message"));
    }
    (String::new(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let xml =
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>gone</Message></Error>";
        assert_eq!(parse_error_body(xml), ("NoSuchKey".into(), "gone".into()));
        let json = r#"{"error":{"code":"NoSuchEndpoint","message":"no"}}"#;
        assert_eq!(
            parse_error_body(json),
            ("NoSuchEndpoint".into(), "no".into())
        );
        assert_eq!(parse_error_body(""), (String::new(), String::new()));
    }
}
