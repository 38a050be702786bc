//! The gateway's JSON API under the reserved prefix `/_nebula/v1/` (no bucket can have that
//! name). Served as an s3s custom route, so requests are authenticated by s3s's own SigV4
//! check (header or presigned) before they reach it; only `ping` is open to anonymous callers.
//! Requests and answers are the types of `nebula-api-types`, which the CLI reads them with.

mod files;
mod health;
mod jobs;
mod logs;
pub mod metrics;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use nebula_api_types::{ErrorBody, ErrorDetail, Ping, TailnetNode};
use s3s::route::S3Route;
use s3s::validation::{AwsNameValidation, NameValidation};
use s3s::{Body, S3Request, S3Response, S3Result};
use serde::Serialize;

use nebula_media::MediaService;

use crate::store::Store;

/// The reserved first path segment of the API.
pub const API_BUCKET: &str = "_nebula";

/// Bucket names as AWS allows them, plus the API's reserved segment so s3s routes
/// `/_nebula/...` to the API instead of rejecting it as a bucket name.
#[derive(Debug, Clone, Default)]
pub struct ApiAwareNames;

impl NameValidation for ApiAwareNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        name == API_BUCKET || AwsNameValidation::new().validate_bucket_name(name)
    }
}

/// What the API handlers can see.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// When the gateway started.
    pub started: Instant,
    /// The data folder.
    pub store: Arc<Store>,
    /// Media extension, when available.
    pub media: Option<Arc<MediaService>>,
    /// The catalog, when connected.
    pub catalog: Option<crate::catalog::Catalog>,
    /// Transcode jobs (queue in the catalog), when the catalog is configured.
    pub jobs: Option<crate::jobs::Jobs>,
}

/// An API error: an HTTP status and a JSON body `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with a status, a stable code and a sentence for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

/// Result of an API handler.
pub type ApiResult = Result<(StatusCode, serde_json::Value), ApiError>;

/// Serialises a value as a 200 answer.
pub fn ok<T: Serialize>(v: &T) -> ApiResult {
    Ok((
        StatusCode::OK,
        serde_json::to_value(v).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })?,
    ))
}

/// The custom route serving the API.
#[derive(Debug, Clone)]
pub struct ApiRoute {
    state: ApiState,
}

impl ApiRoute {
    /// The API over this state.
    pub fn new(state: ApiState) -> Self {
        ApiRoute { state }
    }
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> S3Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    let body = Body::from(Bytes::from(serde_json::to_vec(v).unwrap_or_default()));
    let mut resp = S3Response::with_headers(body, headers);
    resp.status = Some(status);
    resp
}

/// The path below `/_nebula/v1/`, without a trailing slash.
fn api_path(uri: &Uri) -> Option<&str> {
    uri.path()
        .strip_prefix("/_nebula/v1/")
        .map(|p| p.trim_end_matches('/'))
}

#[async_trait::async_trait]
impl S3Route for ApiRoute {
    fn is_match(
        &self,
        _method: &Method,
        uri: &Uri,
        _headers: &HeaderMap,
        _ext: &mut http::Extensions,
    ) -> bool {
        uri.path() == "/_nebula" || uri.path().starts_with("/_nebula/")
    }

    /// Signatures were already verified by s3s; the anonymous case is answered in `call` so
    /// that API clients always get JSON errors.
    async fn check_access(&self, _req: &mut S3Request<Body>) -> S3Result<()> {
        Ok(())
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        // The one answer that is not JSON: Prometheus's text format.
        if req.method == Method::GET && api_path(&req.uri) == Some("metrics") {
            return Ok(match require_admin(&req) {
                Ok(()) => text_response(metrics::text(&self.state).await),
                Err(e) => error_response(e),
            });
        }
        let open = req.method == Method::GET && api_path(&req.uri) == Some("ping");
        let result = if open || req.credentials.is_some() {
            self.dispatch(req).await
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "sign API requests with the gateway's keys (SigV4 header or presigned URL)",
            ))
        };
        Ok(match result {
            Ok((status, v)) => json_response(status, &v),
            Err(e) => error_response(e),
        })
    }
}

fn error_response(e: ApiError) -> S3Response<Body> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: e.code.to_owned(),
            message: e.message,
        },
    };
    json_response(e.status, &serde_json::to_value(&body).unwrap_or_default())
}

fn text_response(text: String) -> S3Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    S3Response::with_headers(Body::from(Bytes::from(text)), headers)
}

/// The gate of the operator's endpoints (logs, metrics). Today the gateway has one key pair,
/// so whoever signs is the admin; per-key permissions narrow this one place.
fn require_admin(req: &S3Request<Body>) -> Result<(), ApiError> {
    if req.credentials.is_some() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "the gateway's logs and metrics are for its administrator: sign the request with the gateway's keys",
        ))
    }
}

impl ApiRoute {
    async fn dispatch(&self, mut req: S3Request<Body>) -> ApiResult {
        let Some(path) = api_path(&req.uri) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchEndpoint",
                "the API lives under /_nebula/v1/",
            ));
        };
        let path = path.to_owned();
        let query = req.uri.query().map(str::to_owned);
        let query = query.as_deref();
        // `jobs/{id}` and `jobs/{id}/cancel`.
        let job_path: Option<(&str, Option<&str>)> =
            path.strip_prefix("jobs/")
                .map(|rest| match rest.split_once('/') {
                    Some((id, action)) => (id, Some(action)),
                    None => (rest, None),
                });
        match (req.method.clone(), path.as_str()) {
            (Method::GET, "files") => files::list(&self.state, query).await,
            (Method::POST, "transcode") => {
                let body = req
                    .input
                    .store_all_limited(jobs::MAX_BODY)
                    .await
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "MalformedJson",
                            format!("cannot read the request body (at most 64 KiB): {e}"),
                        )
                    })?;
                jobs::transcode(&self.state, &body).await
            }
            (Method::GET, "jobs") => jobs::list(&self.state, query).await,
            (Method::GET, _) if matches!(job_path, Some((_, None))) => {
                jobs::get(&self.state, job_path.map(|p| p.0).unwrap_or("")).await
            }
            (Method::POST, _) if matches!(job_path, Some((_, Some("cancel")))) => {
                jobs::cancel(&self.state, job_path.map(|p| p.0).unwrap_or("")).await
            }
            (_, "files" | "transcode" | "jobs") => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{} is not allowed on /_nebula/v1/{path}", req.method),
            )),
            (Method::GET, "ping") => {
                // Over the tailnet, the caller's node as the gateway sees it (what
                // --tailscale-allow matches), to check an allow-list from a client.
                let tailnet_node = req
                    .extensions
                    .get::<crate::peer::PeerInfo>()
                    .and_then(|p| p.tailnet.as_ref())
                    .map(|node| TailnetNode {
                        hostname: node.hostname.clone(),
                        tags: node.tags.clone(),
                    });
                ok(&Ping {
                    service: Ping::SERVICE.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    uptime_secs: self.state.started.elapsed().as_secs(),
                    tailnet_node,
                })
            }
            (Method::GET, "health") => health::health(&self.state).await,
            (Method::GET, "logs") => {
                require_admin(&req)?;
                logs::query(query)
            }
            (_, "ping" | "health" | "logs" | "metrics") => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{} is not allowed on /_nebula/v1/{path}", req.method),
            )),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchEndpoint",
                format!("no API endpoint {} /_nebula/v1/{path}", req.method),
            )),
        }
    }
}
