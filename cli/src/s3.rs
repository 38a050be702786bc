//! The few S3 operations the client needs, over [`Client`], with their XML parsed by roxmltree.

use bytes::Bytes;
use reqwest::Method;

use crate::client::{Body, Client};
use crate::error::{CliError, Result};
use crate::sign::encode_path;

/// `s3://bucket/key`, for messages.
pub fn s3_uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// `s3://bucket`, for messages.
pub fn bucket_uri(bucket: &str) -> String {
    format!("s3://{bucket}")
}

/// One entry of ListObjectsV2.
#[derive(Debug, Clone)]
pub struct ObjectEntry {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Last-Modified as sent (ISO 8601).
    pub modified: String,
}

/// What HeadObject says.
#[derive(Debug, Clone)]
pub struct ObjectHead {
    /// Content-Length.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// The headers a copy keeps: Content-Type and the other content headers, `x-amz-meta-*`.
    pub kept: Vec<(String, String)>,
}

/// Headers of an object that a copy keeps (what CopyObject copies with the metadata).
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
];

/// A key DeleteObjects did not delete, and why.
#[derive(Debug, Clone)]
pub struct DeleteFailure {
    /// Key.
    pub key: String,
    /// The S3 error code.
    pub code: String,
    /// The server's message.
    pub message: String,
}

/// `text` with the five XML special characters escaped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An unfinished multipart upload.
#[derive(Debug, Clone)]
pub struct UploadEntry {
    /// Key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// Initiated timestamp (ISO 8601 sorts as text).
    pub initiated: String,
}

/// An uploaded part.
#[derive(Debug, Clone, PartialEq)]
pub struct PartEntry {
    /// Part number, from 1.
    pub number: u32,
    /// ETag without quotes.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
}

/// Strips the quotes S3 puts around ETags.
pub fn unquote(etag: &str) -> String {
    etag.trim().trim_matches('"').to_owned()
}

fn parse<'t>(text: &'t str, what: &str) -> Result<roxmltree::Document<'t>> {
    roxmltree::Document::parse(text).map_err(|e| {
        CliError::local(format!(
            "the server's answer to {what} is not valid XML: {e}"
        ))
    })
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<&'a str> {
    n.children()
        .find(|c| c.tag_name().name() == tag)
        .and_then(|c| c.text())
}

fn elements<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    tag: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    doc.root_element()
        .children()
        .filter(move |n| n.tag_name().name() == tag)
}

/// The ETag of a CopyObject or CompleteMultipartUpload answer. S3 may report a failure
/// inside a 200 answer (the status is sent before the server-side work ends), so an `Error`
/// document is the remote error it names.
fn etag_of_200(body: &str, what: &str, bucket: &str, key: &str) -> Result<String> {
    let doc = parse(body, what)?;
    if doc.root_element().tag_name().name() == "Error" {
        let (code, message) = crate::client::parse_error_body(body);
        return Err(CliError::Remote {
            status: 200,
            code,
            message,
            resource: s3_uri(bucket, key),
        });
    }
    Ok(unquote(
        child(doc.root_element(), "ETag").unwrap_or_default(),
    ))
}

async fn text(resp: reqwest::Response, what: &str) -> Result<String> {
    resp.text()
        .await
        .map_err(|e| CliError::local(format!("the answer to {what} was cut short: {e}")))
}

impl Client {
    /// ListBuckets: bucket names.
    pub async fn list_buckets(&self) -> Result<Vec<String>> {
        let url = format!("{}/", self.base);
        let resp = self
            .send(Method::GET, &url, &[], Body::Empty, "the bucket list")
            .await?;
        let body = text(resp, "ListBuckets").await?;
        let doc = parse(&body, "ListBuckets")?;
        Ok(doc
            .descendants()
            .filter(|n| n.tag_name().name() == "Bucket")
            .filter_map(|b| child(b, "Name").map(str::to_owned))
            .collect())
    }

    /// CreateBucket in the client's region (S3 wants it named, except for us-east-1).
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let url = self.url(bucket, None, &[]);
        let body = if self.region == "us-east-1" {
            Body::Empty
        } else {
            Body::Bytes(Bytes::from(format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            )))
        };
        self.send(Method::PUT, &url, &[], body, &bucket_uri(bucket))
            .await?;
        Ok(())
    }

    /// DeleteBucket (S3 refuses one that still holds objects: `BucketNotEmpty`).
    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        let url = self.url(bucket, None, &[]);
        self.send(Method::DELETE, &url, &[], Body::Empty, &bucket_uri(bucket))
            .await?;
        Ok(())
    }

    /// HeadBucket: `false` when the bucket does not exist.
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let url = self.url(bucket, None, &[]);
        match self
            .send(Method::HEAD, &url, &[], Body::Empty, &bucket_uri(bucket))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("NoSuchBucket") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// CopyObject on the server, metadata included; returns the new ETag.
    pub async fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        bucket: &str,
        key: &str,
    ) -> Result<String> {
        let url = self.url(bucket, Some(key), &[]);
        let resp = self
            .send(
                Method::PUT,
                &url,
                &[("x-amz-copy-source", copy_source(src_bucket, src_key))],
                Body::Empty,
                &s3_uri(bucket, key),
            )
            .await?;
        let body = text(resp, "CopyObject").await?;
        etag_of_200(&body, "CopyObject", bucket, key)
    }

    /// Signed GET on a bucket with a query (the listing calls); the XML body as text.
    async fn bucket_get(&self, bucket: &str, q: &[(&str, &str)], what: &str) -> Result<String> {
        let url = self.url(bucket, None, q);
        let resp = self
            .send(
                Method::GET,
                &url,
                &[],
                Body::Empty,
                &format!("s3://{bucket}"),
            )
            .await?;
        text(resp, what).await
    }

    /// One page of ListObjectsV2: entries and the continuation token.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        max: u32,
    ) -> Result<(Vec<ObjectEntry>, Option<String>)> {
        let max = max.to_string();
        let mut q = vec![
            ("list-type", "2"),
            ("prefix", prefix),
            ("max-keys", max.as_str()),
        ];
        if let Some(t) = token {
            q.push(("continuation-token", t));
        }
        let body = self.bucket_get(bucket, &q, "ListObjectsV2").await?;
        let doc = parse(&body, "ListObjectsV2")?;
        let items = elements(&doc, "Contents")
            .map(|n| ObjectEntry {
                key: child(n, "Key").unwrap_or_default().to_owned(),
                size: child(n, "Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                etag: unquote(child(n, "ETag").unwrap_or_default()),
                modified: child(n, "LastModified").unwrap_or_default().to_owned(),
            })
            .collect();
        let truncated = child(doc.root_element(), "IsTruncated") == Some("true");
        let next = child(doc.root_element(), "NextContinuationToken")
            .filter(|_| truncated)
            .map(str::to_owned);
        Ok((items, next))
    }

    /// HeadObject.
    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectHead> {
        let url = self.url(bucket, Some(key), &[]);
        let resp = self
            .send(Method::HEAD, &url, &[], Body::Empty, &s3_uri(bucket, key))
            .await?;
        let h = resp.headers();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(ObjectHead {
            size: get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: unquote(&get("etag").unwrap_or_default()),
            kept: h
                .iter()
                .filter(|(n, _)| {
                    KEPT_HEADERS.contains(&n.as_str()) || n.as_str().starts_with("x-amz-meta-")
                })
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
        })
    }

    /// DeleteObjects (quiet) of at most 1000 keys; the keys it could not delete.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<DeleteFailure>> {
        let mut xml = String::from("<Delete><Quiet>true</Quiet>");
        for key in keys {
            xml.push_str(&format!("<Object><Key>{}</Key></Object>", xml_escape(key)));
        }
        xml.push_str("</Delete>");
        // S3 insists on an integrity header for DeleteObjects.
        let md5 = {
            use base64::Engine;
            use md5::Digest;
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml.as_bytes()))
        };
        let url = self.url(bucket, None, &[("delete", "")]);
        let resp = self
            .send(
                Method::POST,
                &url,
                &[
                    ("content-type", "application/xml".into()),
                    ("content-md5", md5),
                ],
                Body::Bytes(Bytes::from(xml)),
                &bucket_uri(bucket),
            )
            .await?;
        let body = text(resp, "DeleteObjects").await?;
        let doc = parse(&body, "DeleteObjects")?;
        Ok(elements(&doc, "Error")
            .map(|n| DeleteFailure {
                key: child(n, "Key").unwrap_or_default().to_owned(),
                code: child(n, "Code").unwrap_or_default().to_owned(),
                message: child(n, "Message").unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// PutObject of a body; returns the ETag.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<String> {
        let url = self.url(bucket, Some(key), &[]);
        let resp = self
            .send(Method::PUT, &url, headers, body, &s3_uri(bucket, key))
            .await?;
        Ok(etag_header(&resp))
    }

    /// DeleteObject.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        let url = self.url(bucket, Some(key), &[]);
        self.send(Method::DELETE, &url, &[], Body::Empty, &s3_uri(bucket, key))
            .await?;
        Ok(())
    }

    /// CreateMultipartUpload; returns the upload id.
    pub async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        headers: &[(&str, String)],
    ) -> Result<String> {
        let url = self.url(bucket, Some(key), &[("uploads", "")]);
        let resp = self
            .send(
                Method::POST,
                &url,
                headers,
                Body::Empty,
                &s3_uri(bucket, key),
            )
            .await?;
        let body = text(resp, "CreateMultipartUpload").await?;
        let doc = parse(&body, "CreateMultipartUpload")?;
        child(doc.root_element(), "UploadId")
            .map(str::to_owned)
            .ok_or_else(|| {
                CliError::local("the server's answer to CreateMultipartUpload has no UploadId")
            })
    }

    /// ListMultipartUploads for exactly `key` (the prefix may match longer keys; those are dropped).
    pub async fn list_uploads(&self, bucket: &str, key: &str) -> Result<Vec<UploadEntry>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut q = vec![("uploads", ""), ("prefix", key)];
            if !key_marker.is_empty() {
                q.push(("key-marker", &key_marker));
                q.push(("upload-id-marker", &id_marker));
            }
            let body = self.bucket_get(bucket, &q, "ListMultipartUploads").await?;
            let doc = parse(&body, "ListMultipartUploads")?;
            for n in elements(&doc, "Upload") {
                let entry = UploadEntry {
                    key: child(n, "Key").unwrap_or_default().to_owned(),
                    upload_id: child(n, "UploadId").unwrap_or_default().to_owned(),
                    initiated: child(n, "Initiated").unwrap_or_default().to_owned(),
                };
                if entry.key == key {
                    out.push(entry);
                }
            }
            let root = doc.root_element();
            if child(root, "IsTruncated") != Some("true") {
                return Ok(out);
            }
            key_marker = child(root, "NextKeyMarker").unwrap_or_default().to_owned();
            id_marker = child(root, "NextUploadIdMarker")
                .unwrap_or_default()
                .to_owned();
            if key_marker.is_empty() {
                return Ok(out);
            }
        }
    }

    /// ListParts, all pages.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartEntry>> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let mut q = vec![("uploadId", upload_id)];
            if !marker.is_empty() {
                q.push(("part-number-marker", &marker));
            }
            let url = self.url(bucket, Some(key), &q);
            let resp = self
                .send(Method::GET, &url, &[], Body::Empty, &s3_uri(bucket, key))
                .await?;
            let body = text(resp, "ListParts").await?;
            let doc = parse(&body, "ListParts")?;
            for n in elements(&doc, "Part") {
                out.push(PartEntry {
                    number: child(n, "PartNumber")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    etag: unquote(child(n, "ETag").unwrap_or_default()),
                    size: child(n, "Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                });
            }
            let root = doc.root_element();
            let next = child(root, "NextPartNumberMarker")
                .unwrap_or_default()
                .to_owned();
            if child(root, "IsTruncated") != Some("true") || next.is_empty() || next == marker {
                return Ok(out);
            }
            marker = next;
        }
    }

    /// UploadPart; returns the ETag.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<String> {
        let url = self.part_url(bucket, key, upload_id, number);
        let resp = self
            .send(Method::PUT, &url, headers, body, &s3_uri(bucket, key))
            .await?;
        Ok(etag_header(&resp))
    }

    /// UploadPartCopy of bytes `first..=last` of `src_bucket/src_key`; returns the part's ETag.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part_copy(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        src_bucket: &str,
        src_key: &str,
        (first, last): (u64, u64),
    ) -> Result<String> {
        let url = self.part_url(bucket, key, upload_id, number);
        let resp = self
            .send(
                Method::PUT,
                &url,
                &[
                    ("x-amz-copy-source", copy_source(src_bucket, src_key)),
                    ("x-amz-copy-source-range", format!("bytes={first}-{last}")),
                ],
                Body::Empty,
                &s3_uri(bucket, key),
            )
            .await?;
        let body = text(resp, "UploadPartCopy").await?;
        etag_of_200(&body, "UploadPartCopy", bucket, key)
    }

    /// The URL of part `number` of an upload.
    fn part_url(&self, bucket: &str, key: &str, upload_id: &str, number: u32) -> String {
        let n = number.to_string();
        self.url(
            bucket,
            Some(key),
            &[("partNumber", &n), ("uploadId", upload_id)],
        )
    }

    /// AbortMultipartUpload.
    pub async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let url = self.url(bucket, Some(key), &[("uploadId", upload_id)]);
        self.send(Method::DELETE, &url, &[], Body::Empty, &s3_uri(bucket, key))
            .await?;
        Ok(())
    }

    /// CompleteMultipartUpload with `(number, etag)` pairs in ascending order; returns the ETag.
    pub async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<String> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>\"{etag}\"</ETag></Part>"
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let url = self.url(bucket, Some(key), &[("uploadId", upload_id)]);
        let resp = self
            .send(
                Method::POST,
                &url,
                &[("content-type", "application/xml".into())],
                Body::Bytes(Bytes::from(xml)),
                &s3_uri(bucket, key),
            )
            .await?;
        let body = text(resp, "CompleteMultipartUpload").await?;
        etag_of_200(&body, "CompleteMultipartUpload", bucket, key)
    }
}

/// The `x-amz-copy-source` header naming an object.
fn copy_source(bucket: &str, key: &str) -> String {
    format!("/{}/{}", encode_path(bucket), encode_path(key))
}

fn etag_header(resp: &reqwest::Response) -> String {
    unquote(
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    )
}
