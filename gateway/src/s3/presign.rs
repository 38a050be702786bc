//! Presigned URLs the gateway writes into its own answers (the URLs inside HLS playlists):
//! SigV4 query signatures, made with `aws-sigv4`, for the access key of the request they
//! answer, so a presigned master URL works unchanged in any player.
//!
//! Rules:
//! - a URL expires no later than the request it is written for: a presigned request's own
//!   `X-Amz-Date` + `X-Amz-Expires`; a header-signed request (no expiry of its own) gets
//!   [`HEADER_SIGNED_EXPIRES`]; never more than [`MAX_EXPIRES`] from now;
//! - every query parameter is signed (SigV4 signs the whole query), so editing `quality` or
//!   `segment` breaks the signature and s3s answers 403;
//! - an anonymous request (only possible on a public-read bucket) gets plain URLs.
//!
//! URLs are absolute paths (`/bucket/key?...`, or `/key?...` for virtual-host requests): the
//! player resolves them against the playlist's own URL, so scheme, host and port stay what
//! the client used, and the signed `host` is the request's own `Host` header.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::{HeaderMap, Uri};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::{RequestError, RequestResult};

/// Lifetime of URLs written for a header-signed request, which has no expiry of its own:
/// 12 hours covers a long film watched with pauses from one playlist fetch (VOD playlists
/// are read once), while a playlist copied out of a player's log stops working the same day,
/// not after the 7-day cap.
pub(crate) const HEADER_SIGNED_EXPIRES: Duration = Duration::from_secs(12 * 3600);

/// SigV4's longest presigned lifetime (7 days), which the front layer also enforces.
pub(crate) const MAX_EXPIRES: Duration = Duration::from_secs(7 * 24 * 3600);

/// Query characters SigV4 leaves as they are: `A-Za-z0-9-_.~`.
const QUERY: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Writes URLs to the object of one request.
pub(crate) struct Presigner {
    /// `None`: anonymous request, plain URLs.
    signing: Option<Signing>,
    /// The request's path, percent-encoded the canonical SigV4 way.
    path: String,
}

struct Signing {
    identity: Identity,
    region: String,
    host: String,
    expires_at: SystemTime,
}

impl Presigner {
    /// A presigner for a request to `uri` with `headers`, made with `credentials` (`None`:
    /// anonymous), in `region`.
    pub(crate) fn for_request(
        credentials: Option<&s3s::auth::Credentials>,
        region: &str,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> RequestResult<Self> {
        let decoded = percent_decode_str(uri.path()).decode_utf8_lossy();
        let path = super::url_encode(&decoded);
        let Some(creds) = credentials else {
            return Ok(Presigner {
                signing: None,
                path,
            });
        };
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
            .ok_or_else(|| RequestError::InvalidRequest("the request has no Host".into()))?;
        let now = SystemTime::now();
        let expires_at = request_expiry(uri.query().unwrap_or(""))
            .unwrap_or(now + HEADER_SIGNED_EXPIRES)
            .min(now + MAX_EXPIRES);
        let identity = Credentials::new(
            &creds.access_key,
            creds.secret_key.expose(),
            None,
            None,
            "nebula-gateway",
        )
        .into();
        Ok(Presigner {
            signing: Some(Signing {
                identity,
                region: region.to_owned(),
                host,
                expires_at,
            }),
            path,
        })
    }

    /// The URL of the same object with the query `params` (names and values unencoded),
    /// presigned for a GET.
    pub(crate) fn url(&self, params: &[(&str, &str)]) -> RequestResult<String> {
        let query = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, QUERY),
                    utf8_percent_encode(v, QUERY)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut url = format!("{}?{query}", self.path);
        let Some(s) = &self.signing else {
            return Ok(url);
        };
        let now = SystemTime::now();
        // At least a second: a URL written in the request's last second still gets fetched
        // and refused as expired by s3s, never signed with a zero lifetime.
        let left = s
            .expires_at
            .duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        let mut settings = SigningSettings::default();
        // S3 signs the path exactly as sent (no double encoding, no `..` normalisation).
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(left.as_secs()));
        let params = v4::SigningParams::builder()
            .identity(&s.identity)
            .region(&s.region)
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .map_err(sign_error)?
            .into();
        let full = format!("http://{}{url}", s.host);
        let req = SignableRequest::new(
            "GET",
            &full,
            std::iter::once(("host", s.host.as_str())),
            SignableBody::UnsignedPayload,
        )
        .map_err(sign_error)?;
        let (instructions, _) = sign(req, &params).map_err(sign_error)?.into_parts();
        for (name, value) in instructions.params() {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.push_str(&utf8_percent_encode(value, QUERY).to_string());
        }
        Ok(url)
    }
}

/// When a presigned request stops being valid: `X-Amz-Date` + `X-Amz-Expires`, if both are
/// in the query.
fn request_expiry(query: &str) -> Option<SystemTime> {
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
    };
    let date = param("X-Amz-Date")?;
    let expires: u64 = param("X-Amz-Expires")?.parse().ok()?;
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let signed = time::PrimitiveDateTime::parse(&date, format)
        .ok()?
        .assume_utc();
    let signed =
        SystemTime::UNIX_EPOCH + Duration::from_secs(signed.unix_timestamp().try_into().ok()?);
    Some(signed + Duration::from_secs(expires))
}

fn sign_error(e: impl std::fmt::Display) -> RequestError {
    RequestError::Internal(format!("cannot presign a playlist URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_of_a_presigned_request() {
        let at = request_expiry("a=1&X-Amz-Date=20261206T200000Z&X-Amz-Expires=600").unwrap();
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_587_200 + 600);
        assert_eq!(at, want);
        assert_eq!(request_expiry("X-Amz-Date=20261206T200000Z"), None);
        assert_eq!(request_expiry("quality=480"), None);
    }

    #[test]
    fn urls_are_signed_or_plain() {
        let uri: Uri = "/b/dir/a%20film.mp4?stream=hls".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "127.0.0.1:9000".parse().unwrap());
        let plain = Presigner::for_request(None, "us-east-1", &uri, &headers).unwrap();
        assert_eq!(
            plain.url(&[("stream", "hls"), ("quality", "480")]).unwrap(),
            "/b/dir/a%20film.mp4?stream=hls&quality=480"
        );
        let creds = s3s::auth::Credentials {
            access_key: "AK".into(),
            secret_key: "SK".into(),
        };
        let signed = Presigner::for_request(Some(&creds), "us-east-1", &uri, &headers).unwrap();
        let url = signed
            .url(&[("stream", "hls"), ("segment", "init")])
            .unwrap();
        assert!(
            url.starts_with("/b/dir/a%20film.mp4?stream=hls&segment=init&X-Amz-Algorithm="),
            "{url}"
        );
        assert!(url.contains("X-Amz-Credential=AK%2F"), "{url}");
        assert!(
            url.contains("X-Amz-Expires=4319") || url.contains("X-Amz-Expires=43200"),
            "{url}"
        );
        assert!(url.contains("X-Amz-SignedHeaders=host"), "{url}");
    }
}
