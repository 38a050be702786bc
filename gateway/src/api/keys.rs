//! Scoped access keys (admin only): `GET /keys`, `POST /keys`, `GET|DELETE /keys/{id}`,
//! `POST /keys/{id}/allow|deny`. The same changes as `nebula-gateway keys`.

use http::StatusCode;
use nebula_api_types::keys::{CreateKey, GrantChange, KeyList};

use super::{ApiError, ApiResult, ApiState, ok};
use crate::access::KeyError;

fn key_error(e: KeyError) -> ApiError {
    match e {
        e @ KeyError::NoSuchKey(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "NoSuchAccessKey", e.to_string())
        }
        e @ KeyError::Invalid(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "InvalidArgument", e.to_string())
        }
        e => super::files::unavailable(e),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MalformedJson",
            format!("expected a JSON body like {example}: {e}"),
        )
    })
}

/// `GET /keys`.
pub async fn list(state: &ApiState) -> ApiResult {
    let keys = state.access.keys().list().await.map_err(key_error)?;
    ok(&KeyList { keys })
}

/// `POST /keys` with a [`CreateKey`]: 201 and the new key, with its secret (shown this once).
pub async fn create(state: &ApiState, body: &[u8]) -> ApiResult {
    let req: CreateKey = parse(body, r#"{"name": "tv", "read": ["media"]}"#)?;
    let admin = Some(state.access.admin_id().to_owned());
    let new = state
        .access
        .keys()
        .create(req, admin)
        .await
        .map_err(key_error)?;
    let (_, v) = ok(&new)?;
    Ok((StatusCode::CREATED, v))
}

/// `GET /keys/{id}`.
pub async fn show(state: &ApiState, id: &str) -> ApiResult {
    ok(&state.access.keys().show(id).await.map_err(key_error)?)
}

/// `DELETE /keys/{id}`: the key as it was.
pub async fn delete(state: &ApiState, id: &str) -> ApiResult {
    ok(&state.access.keys().delete(id).await.map_err(key_error)?)
}

/// `POST /keys/{id}/allow` or `/deny` with a [`GrantChange`]: the key as it is now.
pub async fn change(state: &ApiState, id: &str, body: &[u8], allow: bool) -> ApiResult {
    let change: GrantChange = parse(body, r#"{"read": ["media"], "write": ["photos"]}"#)?;
    let keys = state.access.keys();
    let key = if allow {
        keys.allow(id, change).await
    } else {
        keys.deny(id, change).await
    };
    ok(&key.map_err(key_error)?)
}
