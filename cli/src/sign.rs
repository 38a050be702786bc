//! SigV4 signing of S3 and API requests (headers) and presigned URLs (query), with `aws-sigv4`.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::{CliError, Result};

/// Characters S3 wants percent-encoded in query values: all but `A-Za-z0-9-_.~`.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same for key paths, where `/` separates segments and stays literal.
const PATH: &AsciiSet = &QUERY.remove(b'/');

/// Percent-encodes a query name or value the way SigV4 canonicalises it.
pub fn encode_query(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// Percent-encodes an object key for the URL path.
pub fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// How the request body is covered by the signature.
#[derive(Debug, Clone)]
pub enum PayloadHash {
    /// `UNSIGNED-PAYLOAD`: for streamed bodies whose hash is not known up front.
    Unsigned,
    /// Lower-case hex SHA-256 of the body.
    Sha256(String),
}

impl PayloadHash {
    /// The hash of a body held in memory.
    pub fn of(body: &[u8]) -> Self {
        use sha2::Digest;
        PayloadHash::Sha256(hex::encode(sha2::Sha256::digest(body)))
    }
}

/// Keys and region; signs with service `s3`, which the gateway also expects for its JSON API.
#[derive(Debug, Clone)]
pub struct Signer {
    identity: Identity,
    region: String,
}

impl Signer {
    /// A signer for these keys.
    pub fn new(access_key: &str, secret_key: &str, region: &str) -> Self {
        let creds = Credentials::new(access_key, secret_key, None, None, "nebula-cli");
        Signer {
            identity: creds.into(),
            region: region.to_owned(),
        }
    }

    fn settings(location: SignatureLocation) -> SigningSettings {
        let mut s = SigningSettings::default();
        // S3 signs the path exactly as sent (no double encoding, no `..` normalisation).
        s.percent_encoding_mode = PercentEncodingMode::Single;
        s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        s.signature_location = location;
        s
    }

    /// Signing headers (`authorization`, `x-amz-date`, `x-amz-content-sha256`) for a request
    /// with these headers; `url` must already be percent-encoded.
    pub fn sign_headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        payload: &PayloadHash,
    ) -> Result<Vec<(String, String)>> {
        let mut settings = Self::settings(SignatureLocation::Headers);
        // S3 (and s3s) require x-amz-content-sha256 on header-signed requests.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let body = match payload {
            PayloadHash::Unsigned => SignableBody::UnsignedPayload,
            PayloadHash::Sha256(h) => SignableBody::Precomputed(h.clone()),
        };
        let params = self.params(settings)?;
        let req = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            body,
        )
        .map_err(sign_err)?;
        let (instructions, _) = sign(req, &params).map_err(sign_err)?.into_parts();
        let (hdrs, _) = instructions.into_parts();
        Ok(hdrs
            .into_iter()
            .map(|h| (h.name().to_owned(), h.value().to_owned()))
            .collect())
    }

    /// A presigned URL: `url` (percent-encoded, its own query included in the signature)
    /// plus the `X-Amz-*` query parameters.
    pub fn presign(&self, method: &str, url: &str, expires: Duration) -> Result<String> {
        let mut settings = Self::settings(SignatureLocation::QueryParams);
        settings.expires_in = Some(expires);
        let params = self.params(settings)?;
        let req = SignableRequest::new(
            method,
            url,
            std::iter::empty(),
            SignableBody::UnsignedPayload,
        )
        .map_err(sign_err)?;
        let (instructions, _) = sign(req, &params).map_err(sign_err)?.into_parts();
        let mut out = url.to_owned();
        for (name, value) in instructions.params() {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(name);
            out.push('=');
            out.push_str(&encode_query(value));
        }
        Ok(out)
    }

    fn params(
        &self,
        settings: SigningSettings,
    ) -> Result<aws_sigv4::http_request::SigningParams<'_>> {
        let p = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| CliError::local(format!("cannot sign the request: {e}")))?;
        Ok(p.into())
    }
}

fn sign_err(e: impl std::fmt::Display) -> CliError {
    CliError::local(format!("cannot sign the request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_s3() {
        assert_eq!(encode_path("a b/c+d~é"), "a%20b/c%2Bd~%C3%A9");
        assert_eq!(encode_query("a/b=c"), "a%2Fb%3Dc");
    }

    #[test]
    fn presign_keeps_own_query_and_adds_signature() {
        let s = Signer::new("AK", "SK", "us-east-1");
        let url = s
            .presign(
                "GET",
                "http://127.0.0.1:1/b/k?quality=480&transcode=h264",
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:1/b/k?quality=480&transcode=h264&"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(url.contains("X-Amz-Expires=60"), "{url}");
        assert!(url.contains("X-Amz-Credential=AK%2F"), "{url}");
    }
}
