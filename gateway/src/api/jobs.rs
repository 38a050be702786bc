//! Transcode jobs: `POST /transcode`, `GET /jobs`, `GET /jobs/{id}`, `POST /jobs/{id}/cancel`.

use std::str::FromStr;

use http::StatusCode;
use nebula_api_types::jobs::{JobList, QualityName, TranscodeRequest};
use nebula_media::Quality;

use super::files::{parse_limit, query_params, unavailable};
use super::{ApiError, ApiResult, ApiState, Gate, ok};
use crate::jobs::{JobError, JobFilter, JobStatus, Jobs};

/// Largest request body accepted.
pub(super) const MAX_BODY: usize = 64 * 1024;

fn jobs(state: &ApiState) -> Result<&Jobs, ApiError> {
    state.jobs.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "transcode jobs are not available on this gateway (no catalog)",
        )
    })
}

fn job_error(e: JobError) -> ApiError {
    match e {
        e @ JobError::NoSuchKey { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "NoSuchKey", e.to_string())
        }
        e @ JobError::NotVideo { .. } => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "NotVideo",
            e.to_string(),
        ),
        e @ (JobError::Database(_) | JobError::Catalog(_)) => unavailable(e),
    }
}

fn no_such_job(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NoSuchJob",
        format!("no transcode job with id '{id}'"),
    )
}

fn parse_quality(v: &QualityName) -> Result<Quality, ApiError> {
    let text = v.to_string();
    Quality::from_str(&text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidQuality",
            format!("unknown quality {text}: use 240, 360, 480, 720 or 1080"),
        )
    })
}

/// `POST /transcode` with `{"bucket","key","qualities":[480,720]}`: 201 `{"jobs":[…]}`.
pub async fn transcode(state: &ApiState, body: &[u8], gate: &Gate) -> ApiResult {
    let req: TranscodeRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MalformedJson",
            format!("expected a JSON body {{\"bucket\": \"…\", \"key\": \"…\", \"qualities\": [480, 720]}}: {e}"),
        )
    })?;
    if req.bucket.is_empty() || req.key.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "bucket and key must not be empty",
        ));
    }
    gate.check(&req.bucket, Some(&req.key)).await?;
    if req.qualities.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidQuality",
            "qualities must list at least one of 240, 360, 480, 720, 1080",
        ));
    }
    let mut qualities = Vec::new();
    for v in &req.qualities {
        let q = parse_quality(v)?;
        if !qualities.contains(&q) {
            qualities.push(q);
        }
    }
    let created = jobs(state)?
        .enqueue(&req.bucket, &req.key, &qualities)
        .await
        .map_err(job_error)?;
    let (_, v) = ok(&JobList { jobs: created })?;
    Ok((StatusCode::CREATED, v))
}

/// `GET /jobs?status=&limit=&bucket=&key=`: newest first, only the jobs of buckets the
/// caller can read.
pub async fn list(state: &ApiState, query: Option<&str>, gate: &Gate) -> ApiResult {
    let params = query_params(query);
    let status = match params.get("status").filter(|s| !s.is_empty()) {
        Some(s) => Some(
            JobStatus::from_str(s)
                .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "InvalidArgument", m))?,
        ),
        None => None,
    };
    let filter = JobFilter {
        status,
        bucket: params.get("bucket").filter(|s| !s.is_empty()).cloned(),
        key: params.get("key").filter(|s| !s.is_empty()).cloned(),
        limit: parse_limit(&params, 100, 1000)?,
    };
    let mut list = jobs(state)?.list(&filter).await.map_err(job_error)?;
    list.retain(|j| gate.can_see(&j.bucket));
    ok(&JobList { jobs: list })
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| no_such_job(id))
}

/// `GET /jobs/{id}`.
pub async fn get(state: &ApiState, id: &str, gate: &Gate) -> ApiResult {
    let n = parse_id(id)?;
    match jobs(state)?.get(n).await.map_err(job_error)? {
        Some(job) => {
            gate.check(&job.bucket, Some(&job.key)).await?;
            ok(&job)
        }
        None => Err(no_such_job(id)),
    }
}

/// `POST /jobs/{id}/cancel`: the job, cancelled unless it had already finished.
pub async fn cancel(state: &ApiState, id: &str, gate: &Gate) -> ApiResult {
    let n = parse_id(id)?;
    let jobs = jobs(state)?;
    match jobs.get(n).await.map_err(job_error)? {
        Some(job) => gate.check(&job.bucket, Some(&job.key)).await?,
        None => return Err(no_such_job(id)),
    }
    match jobs.cancel(n).await.map_err(job_error)? {
        Some(job) => ok(&job),
        None => Err(no_such_job(id)),
    }
}
