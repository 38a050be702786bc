//! `GET /_nebula/v1/logs?since=&level=&limit=`: the gateway's recent log lines (see
//! [`crate::logs`]).

use http::StatusCode;
use nebula_api_types::logs::LogLevel;

use super::files::{parse_limit, query_params};
use super::{ApiError, ApiResult, ok};
use crate::logs;

/// Lines answered when the caller gives no `limit`.
const DEFAULT_LIMIT: u32 = 100;

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
}

/// Answers one query: `since` (a line's `seq`: the lines after it, oldest first; without it,
/// the newest lines), `level` (that level and more severe; default `info`), `limit` (at most
/// the ring's size).
pub fn query(query: Option<&str>) -> ApiResult {
    let params = query_params(query);
    let since = match params.get("since").map(|s| s.trim()) {
        None | Some("") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            invalid(format!(
                "since must be the seq of the last line you have (a whole number), not '{v}'"
            ))
        })?),
    };
    let level = match params.get("level").map(|s| s.trim()) {
        None | Some("") => LogLevel::Info,
        Some(v) => v.parse::<LogLevel>().map_err(|e| invalid(e.to_string()))?,
    };
    let limit = parse_limit(&params, DEFAULT_LIMIT, logs::MAX_LINES as u32)?;
    ok(&logs::ring().query(since, level, limit as usize))
}
