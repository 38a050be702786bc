//! POST object: browser form uploads with a signed POST policy (issue 17).
//!
//! s3s 0.14.1 does most of it before the upload reaches [`post_object`]: it checks the policy's
//! SigV4 (or V2) signature and that the signed `x-amz-*` fields match the policy, refuses an
//! expired policy, checks every `eq`, `starts-with` and `content-length-range` condition
//! (`bucket` against the URL's bucket), refuses any form field no condition names (except
//! `file`, `policy`, `x-amz-signature`, `x-ignore-*`), maps the fields to PutObject's
//! (`Content-Type`, `x-amz-meta-*`, ...), and answers `success_action_status` (200, 201 with
//! XML, 204) and `success_action_redirect` (303). What is left is done here and in the front:
//! - the `${filename}` variable in `key`: the file part's name is not passed on by s3s, so the
//!   front watches the form go by ([`FormFileName`]) and [`post_object`] substitutes it (and
//!   fixes the key s3s puts in the 201 body and the redirect, see [`fix_created_body`]);
//! - the `acl` field (a canned ACL, as AWS's forms name it; s3s reads only `x-amz-acl`): the
//!   front picks it up with the file name, from the fields before the file part;
//! - AWS's errors: a failed condition is `403 AccessDenied` "Invalid according to Policy:
//!   Policy Condition failed: ..." and an expired policy "Invalid according to Policy: Policy
//!   expired." ([`aws_policy_error`]); s3s says `400 InvalidPolicyDocument` and "Request has
//!   expired".
//!
//! s3s holds the file in memory before it checks the length range, so the front caps a form
//! upload at [`MAX_FORM_FILE`]; larger files belong in a (presigned) multipart upload.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as HttpBody, Frame, SizeHint};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::{Gateway, RequestResult};

/// The largest file a form upload may carry (s3s buffers it whole before our checks).
pub const MAX_FORM_FILE: u64 = 64 * 1024 * 1024;

/// How much of a form is searched for the file part's header: the fields before it are small
/// (s3s limits them), the file's bytes are never searched.
const HEADER_SEARCH_LIMIT: usize = 256 * 1024;

/// The name of the file part of a form upload and its `acl` field, once the front has seen
/// them go by.
#[derive(Debug, Clone, Default)]
pub struct FormFileName(Arc<Mutex<Option<String>>>, Arc<Mutex<Option<String>>>);

impl FormFileName {
    /// The file name sent, without any folder a browser may have added.
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The form's `acl` field.
    pub fn acl(&self) -> Option<String> {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// True for a browser form upload (`multipart/form-data` POST).
pub fn is_form_upload<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// A request body that passes through unchanged and records the file part's `filename`.
pub struct WatchFileName<B> {
    inner: B,
    seen: Vec<u8>,
    done: bool,
    name: FormFileName,
}

impl<B> WatchFileName<B> {
    /// Watches `inner` for the file name, into `name`.
    pub fn new(inner: B, name: FormFileName) -> Self {
        WatchFileName {
            inner,
            seen: Vec::new(),
            done: false,
            name,
        }
    }

    fn look(&mut self, data: &[u8]) {
        self.seen.extend_from_slice(data);
        if let Some(found) = file_name_in(&self.seen) {
            *self.name.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
            *self.name.1.lock().unwrap_or_else(|e| e.into_inner()) = field_in(&self.seen, "acl");
            self.done = true;
        } else if self.seen.len() > HEADER_SEARCH_LIMIT {
            self.done = true;
        }
        if self.done {
            self.seen = Vec::new();
        }
    }
}

/// The `filename` of the first part header of a form that has one (`Content-Disposition:
/// form-data; name="file"; filename="a.jpg"`), once the header line is complete; only the
/// last path segment, as browsers on some systems send a whole path.
fn file_name_in(form: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"filename=\"";
    let at = form.windows(NEEDLE.len()).position(|w| w == NEEDLE)?;
    let rest = &form[at + NEEDLE.len()..];
    let end = rest.iter().position(|&b| b == b'"' || b == b'\r')?;
    let name = String::from_utf8_lossy(&rest[..end]);
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    Some(base.to_owned())
}

/// The value of the form field `name` among the parts in `form` (`Content-Disposition:
/// form-data; name="acl"`, a blank line, the value).
fn field_in(form: &[u8], name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"\r\n\r\n");
    let at = form
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))?;
    let rest = &form[at + needle.len()..];
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

impl<B> HttpBody for WatchFileName<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if !this.done
            && let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.look(data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The key a form names, with `${filename}` replaced by the uploaded file's name.
fn form_key(key: &str, file_name: Option<&str>) -> String {
    key.replace("${filename}", file_name.unwrap_or(""))
}

/// PostObject: the form's upload, as PutObject, under the key with `${filename}` filled in.
pub(crate) async fn post_object(
    gw: &Gateway,
    req: S3Request<PostObjectInput>,
) -> RequestResult<S3Response<PostObjectOutput>> {
    let form = req.extensions.get::<FormFileName>();
    let file_name = form.and_then(FormFileName::get);
    let form_acl = form.and_then(FormFileName::acl).map(ObjectCannedACL::from);
    let (mut bucket, mut key, mut redirect) = (String::new(), String::new(), None);
    let put_req = req.map_input(|i| {
        bucket.clone_from(&i.bucket);
        key = form_key(&i.key, file_name.as_deref());
        redirect = i.success_action_redirect;
        PutObjectInput {
            bucket: i.bucket,
            key: key.clone(),
            body: i.body,
            cache_control: i.cache_control,
            checksum_algorithm: i.checksum_algorithm,
            checksum_crc32: i.checksum_crc32,
            checksum_crc32c: i.checksum_crc32c,
            checksum_crc64nvme: i.checksum_crc64nvme,
            checksum_sha1: i.checksum_sha1,
            checksum_sha256: i.checksum_sha256,
            content_disposition: i.content_disposition,
            content_encoding: i.content_encoding,
            content_language: i.content_language,
            content_length: i.content_length,
            content_md5: i.content_md5,
            content_type: i.content_type,
            expires: i.expires,
            if_match: i.if_match,
            if_none_match: i.if_none_match,
            metadata: i.metadata,
            tagging: i.tagging,
            acl: i.acl.or(form_acl),
            ..Default::default()
        }
    });
    let out = super::put::put_object(gw, put_req).await?.output;
    let mut resp = S3Response::new(PostObjectOutput {
        e_tag: out.e_tag.clone(),
        checksum_crc32: out.checksum_crc32,
        checksum_crc32c: out.checksum_crc32c,
        checksum_crc64nvme: out.checksum_crc64nvme,
        checksum_sha1: out.checksum_sha1,
        checksum_sha256: out.checksum_sha256,
        ..Default::default()
    });
    // s3s builds the redirect from the key as the form sent it; this header replaces its
    // Location (s3s extends its headers with ours).
    if let Some(r) = redirect {
        let etag = out.e_tag.as_ref().map(ETag::value).unwrap_or_default();
        let sep = if r.contains('?') { '&' } else { '?' };
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let location = format!(
            "{r}{sep}bucket={}&key={}&etag={}",
            enc(&bucket),
            enc(&key),
            enc(&format!("\"{etag}\""))
        );
        if let Ok(v) = http::HeaderValue::from_str(&location) {
            resp.headers.insert(http::header::LOCATION, v);
        }
    }
    Ok(resp)
}

/// The 201 body s3s writes names the key as the form sent it and leaves the ETag unquoted:
/// fills in `${filename}` and quotes the ETag, as AWS's PostResponse has them.
fn fix_created_body(body: &[u8], name: &FormFileName) -> Option<Vec<u8>> {
    let mut text = std::str::from_utf8(body).ok()?.to_owned();
    if text.contains("${filename}") {
        let file = name.get().unwrap_or_default();
        let esc = file
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        text = text.replace("${filename}", &esc);
    }
    if let Some(start) = text.find("<ETag>").map(|i| i + "<ETag>".len())
        && !text[start..].starts_with("&quot;")
        && !text[start..].starts_with('"')
        && let Some(len) = text[start..].find("</ETag>")
    {
        let etag = text[start..start + len].to_owned();
        text.replace_range(start..start + len, &format!("&quot;{etag}&quot;"));
    }
    Some(text.into_bytes())
}

/// Rewrites s3s's answer to a form upload where AWS's differs: the policy errors
/// ([`aws_policy_error`]) and the key of a 201 body ([`fix_created_body`]).
pub async fn finish(
    resp: http::Response<s3s::Body>,
    name: &FormFileName,
) -> http::Response<s3s::Body> {
    let status = resp.status();
    if !(status.is_client_error() || status == StatusCode::CREATED) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
    else {
        return http::Response::from_parts(parts, s3s::Body::empty());
    };
    if status == StatusCode::CREATED {
        let fixed = fix_created_body(&bytes, name).unwrap_or_else(|| bytes.to_vec());
        parts.headers.remove(http::header::CONTENT_LENGTH);
        return http::Response::from_parts(parts, s3s::Body::from(fixed));
    }
    let text = String::from_utf8_lossy(&bytes);
    let element = |tag: &str| {
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{tag}>"))? + start;
        Some(text[start..end].to_owned())
    };
    if let (Some(code), Some(message)) = (element("Code"), element("Message"))
        && let Some((status, code, message)) = aws_policy_error(&code, &message)
    {
        return super::xml_response(status, code, &message);
    }
    http::Response::from_parts(parts, s3s::Body::from(bytes))
}

/// What AWS answers where s3s's policy checks word it otherwise: `None` to keep s3s's answer.
pub fn aws_policy_error(code: &str, message: &str) -> Option<(StatusCode, &'static str, String)> {
    if code == "InvalidPolicyDocument" && message.starts_with("Policy condition") {
        return Some((
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!("Invalid according to Policy: Policy Condition failed: {message}"),
        ));
    }
    if code == "AccessDenied" && message == "Request has expired" {
        return Some((
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Invalid according to Policy: Policy expired.".to_owned(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_is_found_in_the_form() {
        let form = b"--b\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nup/${filename}\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"C:\\\\Users\\\\me\\\\cat pic.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n";
        assert_eq!(file_name_in(form).as_deref(), Some("cat pic.jpg"));
        assert_eq!(
            file_name_in(b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a"),
            None
        );
        let with_acl =
            b"--b\r\nContent-Disposition: form-data; name=\"acl\"\r\n\r\npublic-read\r\n--b\r\n";
        assert_eq!(field_in(with_acl, "acl").as_deref(), Some("public-read"));
        assert_eq!(field_in(form, "acl"), None);
        assert_eq!(form_key("up/${filename}", Some("a.jpg")), "up/a.jpg");
        assert_eq!(form_key("fixed", Some("a.jpg")), "fixed");
    }

    #[test]
    fn policy_failures_are_worded_as_aws() {
        let (s, c, m) = aws_policy_error(
            "InvalidPolicyDocument",
            "Policy condition 'eq' for field 'key' failed: expected 'a', got 'b'",
        )
        .unwrap();
        assert_eq!((s, c), (StatusCode::FORBIDDEN, "AccessDenied"));
        assert!(m.starts_with("Invalid according to Policy: Policy Condition failed"));
        assert!(aws_policy_error("InvalidPolicyDocument", "failed to parse POST policy").is_none());
        assert_eq!(
            aws_policy_error("AccessDenied", "Request has expired")
                .unwrap()
                .2,
            "Invalid according to Policy: Policy expired."
        );
    }
}
