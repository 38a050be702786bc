//! The gateway's JSON API under the reserved prefix `/_nebula/v1/` (no bucket can have that
//! name). Served as an s3s custom route, so requests are authenticated by s3s's own SigV4
//! check (header or presigned) before they reach it; only `ping` is open to anonymous callers.
//! Every endpoint is classified in [`crate::access::ops::API_ENDPOINTS`] and checked once
//! ([`ApiRoute::gate`], then [`Gate::check`] for the bucket a handler acts on): a scoped key
//! sees only its buckets' files and jobs; health, logs, metrics and keys are the admin's.
//! Requests and answers are the types of `nebula-api-types`, which the CLI reads them with.

mod files;
mod health;
mod jobs;
mod keys;
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

use crate::access::{Access, KeyRefusal, Need, Principal, Verdict, ops};
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
    /// Who may do what (the S3 side and this API share it).
    pub access: Arc<crate::access::Access>,
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
        let result = match self.gate(&req).await {
            Ok((pattern, gate)) => {
                // The one answer that is not JSON: Prometheus's text format.
                if pattern == "metrics" {
                    return Ok(text_response(metrics::text(&self.state).await));
                }
                self.dispatch(req, pattern, gate).await
            }
            Err(e) => Err(e),
        };
        Ok(match result {
            Ok((status, v)) => json_response(status, &v),
            Err(e) => error_response(e),
        })
    }
}

/// The caller of an API request and what its endpoint needs ([`crate::access::ops`]); handlers
/// of bucket endpoints check the bucket they act on with [`Gate::check`].
pub struct Gate {
    who: Principal,
    need: Need,
    pattern: &'static str,
    access: Arc<Access>,
    store: Arc<Store>,
    peer: crate::peer::PeerInfo,
}

impl Gate {
    /// Refuses unless the caller may do what the endpoint needs on `bucket` (and `key`, or the
    /// prefix listed), as the S3 side decides: the key's rights, the bucket's policies (an
    /// endpoint is the S3 action it resembles: listing files is `s3:ListBucket` with
    /// `s3:prefix`, a job's status `s3:GetObject`, starting or cancelling one `s3:PutObject`),
    /// then the ACLs.
    pub async fn check(&self, bucket: &str, key: Option<&str>) -> Result<(), ApiError> {
        let listing = self.pattern == "files";
        let action = match (listing, self.need) {
            (true, _) => "s3:ListBucket",
            (false, Need::Write) => "s3:PutObject",
            (false, _) => "s3:GetObject",
        };
        let resource = match key {
            Some(k) if !listing => format!("arn:aws:s3:::{bucket}/{k}"),
            _ => format!("arn:aws:s3:::{bucket}"),
        };
        let policies = match self.who {
            Principal::Admin => Vec::new(),
            _ => self.access.policies(&self.store, bucket),
        };
        let principal = match &self.who {
            Principal::Key(k) => Some(k.stored.access_key_id.as_str()),
            Principal::Admin => Some(self.access.admin_id()),
            Principal::Anonymous => None,
        };
        let request = crate::access::policy::PolicyRequest {
            principal,
            action,
            resource: &resource,
            secure: self.peer.tls,
            source_ip: self.peer.addr.map(|a| a.ip()),
            prefix: if listing { key } else { None },
            delimiter: None,
            max_keys: None,
            acl: None,
            now: time::OffsetDateTime::now_utc(),
        };
        let allowed = match self.access.decide(
            &self.who,
            self.need,
            Some(bucket),
            key,
            |_| true,
            &policies,
            &request,
        ) {
            Verdict::Allow => true,
            Verdict::Deny => false,
            Verdict::NotGranted => {
                let object = if listing { None } else { key };
                self.access
                    .acl_allows(&self.store, &self.who, Some(bucket), object, None, action)
                    .await
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!(
                    "{} may not use bucket '{bucket}' this way",
                    self.who.describe()
                ),
            ))
        }
    }

    /// True when the caller may see `bucket`'s files and jobs.
    pub fn can_see(&self, bucket: &str) -> bool {
        self.access.can_see(&self.who, bucket)
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

fn denied(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "AccessDenied", message)
}

impl ApiRoute {
    /// Finds the endpoint and checks what it needs of the caller, before anything runs.
    async fn gate(&self, req: &S3Request<Body>) -> Result<(&'static str, Gate), ApiError> {
        let Some(path) = api_path(&req.uri) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchEndpoint",
                "the API lives under /_nebula/v1/",
            ));
        };
        let found = ops::api_need(req.method.as_str(), path);
        if req.credentials.is_none() && !found.is_some_and(|(_, need)| need == Need::Open) {
            return Err(denied(
                "sign API requests with the gateway's keys (SigV4 header or presigned URL)",
            ));
        }
        let Some((pattern, need)) = found else {
            let other_method = ["GET", "POST", "DELETE"]
                .iter()
                .any(|m| ops::api_need(m, path).is_some());
            return Err(if other_method {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("{} is not allowed on /_nebula/v1/{path}", req.method),
                )
            } else {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NoSuchEndpoint",
                    format!("no API endpoint {} /_nebula/v1/{path}", req.method),
                )
            });
        };
        let access = self.state.access.clone();
        let who = match access.principal(req.credentials.as_ref()).await {
            Ok(who) => who,
            Err(KeyRefusal::Unavailable(e)) => return Err(files::unavailable(e)),
            Err(e) => return Err(denied(e.to_string())),
        };
        match (&who, need) {
            (_, Need::Open) | (Principal::Admin, _) => {}
            (Principal::Anonymous, _) => {
                return Err(denied(
                    "sign API requests with the gateway's keys (SigV4 header or presigned URL)",
                ));
            }
            (_, Need::Admin) => {
                return Err(denied(format!(
                    "/_nebula/v1/{pattern} is for the gateway's administrator: {} may not use it",
                    who.describe()
                )));
            }
            _ => {}
        }
        let peer = req
            .extensions
            .get::<crate::peer::PeerInfo>()
            .cloned()
            .unwrap_or_default();
        Ok((
            pattern,
            Gate {
                who,
                need,
                pattern,
                access,
                store: self.state.store.clone(),
                peer,
            },
        ))
    }

    async fn dispatch(&self, mut req: S3Request<Body>, pattern: &str, gate: Gate) -> ApiResult {
        let path = api_path(&req.uri).unwrap_or("").to_owned();
        let query = req.uri.query().map(str::to_owned);
        let query = query.as_deref();
        // The `{id}` of `jobs/{id}…` and `keys/{id}…`.
        let id = path.split('/').nth(1).unwrap_or("").to_owned();
        match pattern {
            "files" => files::list(&self.state, query, &gate).await,
            "transcode" => {
                let body = read_body(&mut req).await?;
                jobs::transcode(&self.state, &body, &gate).await
            }
            "jobs" => jobs::list(&self.state, query, &gate).await,
            "jobs/{id}" => jobs::get(&self.state, &id, &gate).await,
            "jobs/{id}/cancel" => jobs::cancel(&self.state, &id, &gate).await,
            "keys" if req.method == Method::GET => keys::list(&self.state).await,
            "keys" => {
                let body = read_body(&mut req).await?;
                keys::create(&self.state, &body).await
            }
            "keys/{id}" if req.method == Method::GET => keys::show(&self.state, &id).await,
            "keys/{id}" => keys::delete(&self.state, &id).await,
            "keys/{id}/allow" | "keys/{id}/deny" => {
                let body = read_body(&mut req).await?;
                keys::change(&self.state, &id, &body, pattern.ends_with("allow")).await
            }
            "ping" => {
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
            "health" => health::health(&self.state).await,
            "logs" => logs::query(query),
            // Every pattern of the table is answered above.
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchEndpoint",
                format!("no API endpoint {} /_nebula/v1/{path}", req.method),
            )),
        }
    }
}

/// A JSON request body, at most [`jobs::MAX_BODY`] bytes.
async fn read_body(req: &mut S3Request<Body>) -> Result<Bytes, ApiError> {
    req.input
        .store_all_limited(jobs::MAX_BODY)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "MalformedJson",
                format!("cannot read the request body (at most 64 KiB): {e}"),
            )
        })
}
