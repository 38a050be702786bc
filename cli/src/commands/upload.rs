//! `nebula upload`: single PUT for small files, parallel multipart above a threshold, and
//! resumption of an interrupted multipart upload of the same key.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use md5::{Digest, Md5};

use super::{BucketArg, Ctx};
use crate::client::{Body, Client};
use crate::error::{CliError, Result};
use crate::progress::{RateLimit, body_stream, bytes_bar, parse_rate};
use crate::s3::{PartEntry, bucket_uri, s3_uri};
use crate::sign::PayloadHash;

const MIB: u64 = 1024 * 1024;
/// Files larger than this go multipart.
pub const MULTIPART_THRESHOLD: u64 = 16 * MIB;
/// Part size for files up to 80 GB; larger files get larger parts (S3 allows 10 000 parts).
const PART_SIZE: u64 = 8 * MIB;
const MAX_PARTS: u64 = 10_000;

/// Arguments of `nebula upload`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to upload.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    bucket: BucketArg,
    /// Object key (default: the file name). With several files, a prefix ending in `/`.
    #[arg(long, short = 'k')]
    key: Option<String>,
    /// Description, stored as user metadata `x-amz-meta-description`.
    #[arg(long)]
    description: Option<String>,
    /// Parts uploaded at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    parallel: u16,
    /// Bandwidth limit, e.g. 20M (bytes per second; K, M, G suffixes).
    #[arg(long, value_parser = parse_rate)]
    limit_rate: Option<u64>,
}

/// What to upload where.
#[derive(Debug, Clone)]
pub struct UploadSpec {
    /// Local file.
    pub path: PathBuf,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Description metadata.
    pub description: Option<String>,
    /// Parallel parts.
    pub parallel: usize,
    /// Bandwidth limit.
    pub limit: Option<Arc<RateLimit>>,
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct UploadReport {
    /// Bytes in the object.
    pub size: u64,
    /// Parts found already uploaded (resumed).
    pub reused_parts: usize,
    /// Parts in total (0 for single PUT).
    pub parts: usize,
}

/// Runs `nebula upload`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let (bucket, is_default) = settings.bucket_choice(args.bucket.bucket.as_deref())?;
    if args.files.len() > 1 && args.key.as_deref().is_some_and(|k| !k.ends_with('/')) {
        return Err(CliError::Usage(
            "with several files, --key must be a prefix ending in `/`".into(),
        ));
    }
    ensure_bucket(&client, &bucket, is_default).await?;
    let limit = args.limit_rate.map(RateLimit::new);
    for path in &args.files {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            CliError::local(format!("{} has no usable file name", path.display()))
        })?;
        let key = match &args.key {
            Some(k) if k.ends_with('/') => format!("{k}{name}"),
            Some(k) => k.clone(),
            None => name.to_owned(),
        };
        let spec = UploadSpec {
            path: path.clone(),
            bucket: bucket.clone(),
            key: key.clone(),
            description: args.description.clone(),
            parallel: args.parallel as usize,
            limit: limit.clone(),
        };
        let report = upload(&client, &spec, true).await?;
        let resumed = if report.reused_parts > 0 {
            format!(
                ", resumed: {} of {} parts were already there",
                report.reused_parts, report.parts
            )
        } else {
            String::new()
        };
        eprintln!(
            "uploaded {} ({}{resumed})",
            s3_uri(&bucket, &key),
            indicatif::HumanBytes(report.size)
        );
        println!("{key}");
    }
    Ok(())
}

/// The default bucket is created by the first upload to a server that does not have it; a
/// bucket named with `--bucket` is not (a typo would make a new bucket), the error says how.
async fn ensure_bucket(client: &Client, bucket: &str, is_default: bool) -> Result<()> {
    if client.bucket_exists(bucket).await? {
        return Ok(());
    }
    if !is_default {
        return Err(CliError::Remote {
            status: 404,
            code: "NoSuchBucket".into(),
            message: String::new(),
            resource: bucket_uri(bucket),
        });
    }
    client.create_bucket(bucket).await?;
    eprintln!("created {} (the default bucket)", bucket_uri(bucket));
    Ok(())
}

/// Uploads one file according to `spec`.
pub async fn upload(
    client: &Client,
    spec: &UploadSpec,
    show_progress: bool,
) -> Result<UploadReport> {
    let meta = std::fs::metadata(&spec.path)
        .map_err(|e| CliError::local(format!("cannot read {}: {e}", spec.path.display())))?;
    if !meta.is_file() {
        return Err(CliError::local(format!(
            "{} is not a regular file",
            spec.path.display()
        )));
    }
    let size = meta.len();
    let bar = if show_progress {
        bytes_bar(size, spec.key.clone())
    } else {
        ProgressBar::hidden()
    };
    let headers = object_headers(&spec.path, spec.description.as_deref());
    let result = if size <= MULTIPART_THRESHOLD {
        single_put(client, spec, &headers, size, &bar).await
    } else {
        multipart(client, spec, &headers, size, &bar).await
    };
    bar.finish_and_clear();
    result
}

fn object_headers(path: &Path, description: Option<&str>) -> Vec<(&'static str, String)> {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut h = vec![("content-type", mime.essence_str().to_owned())];
    if let Some(d) = description {
        h.push(("x-amz-meta-description", header_text(d)));
    }
    h
}

/// HTTP headers carry ASCII; like the AWS SDKs, encode other text as an RFC 2047 word.
fn header_text(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        s.to_owned()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

async fn single_put(
    client: &Client,
    spec: &UploadSpec,
    headers: &[(&str, String)],
    size: u64,
    bar: &ProgressBar,
) -> Result<UploadReport> {
    let data = Bytes::from(
        tokio::fs::read(&spec.path)
            .await
            .map_err(|e| CliError::local(format!("cannot read {}: {e}", spec.path.display())))?,
    );
    let md5 = Md5::digest(&data);
    let mut h = headers.to_vec();
    h.push((
        "content-md5",
        base64::engine::general_purpose::STANDARD.encode(md5),
    ));
    let hash = PayloadHash::of(&data);
    let body = Body::Stream(
        body_stream(data, bar.clone(), spec.limit.clone()),
        size,
        hash,
    );
    let etag = client.put_object(&spec.bucket, &spec.key, &h, body).await?;
    check_etag(&etag, &hex::encode(md5), &spec.key, None)?;
    Ok(UploadReport {
        size,
        reused_parts: 0,
        parts: 0,
    })
}

/// Part size: 8 MiB, grown (in whole MiB) only when 10 000 parts would not hold the file.
pub fn part_size(size: u64) -> u64 {
    PART_SIZE.max(size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB)
}

async fn multipart(
    client: &Client,
    spec: &UploadSpec,
    headers: &[(&str, String)],
    size: u64,
    bar: &ProgressBar,
) -> Result<UploadReport> {
    let psize = part_size(size);
    let count = size.div_ceil(psize) as u32;
    let (bucket, key) = (spec.bucket.as_str(), spec.key.as_str());

    let (upload_id, existing) = match find_unfinished(client, bucket, key).await {
        Some((id, parts)) => {
            eprintln!(
                "resuming the unfinished upload of {} ({} parts already on the server)",
                s3_uri(bucket, key),
                parts.len()
            );
            (id, parts)
        }
        None => (
            client.create_multipart(bucket, key, headers).await?,
            HashMap::new(),
        ),
    };

    let file = Arc::new(
        std::fs::File::open(&spec.path)
            .map_err(|e| CliError::local(format!("cannot open {}: {e}", spec.path.display())))?,
    );
    let reused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let existing = Arc::new(existing);
    let jobs = (1..=count).map(|n| {
        let (file, existing, reused, bar) =
            (file.clone(), existing.clone(), reused.clone(), bar.clone());
        let (upload_id, limit) = (upload_id.clone(), spec.limit.clone());
        async move {
            let offset = (n as u64 - 1) * psize;
            let len = psize.min(size - offset);
            let data = read_range(file, offset, len).await?;
            let md5 = Md5::digest(&data);
            let md5_hex = hex::encode(md5);
            // A part already on the server is kept only if it holds exactly these bytes.
            if let Some(p) = existing.get(&n)
                && p.size == len
                && p.etag.eq_ignore_ascii_case(&md5_hex)
            {
                reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                bar.inc(len);
                return Ok::<_, CliError>((n, p.etag.clone()));
            }
            let h = [(
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(md5),
            )];
            // Content-MD5 already protects the part; skipping SHA-256 saves a pass over it.
            let body = Body::Stream(
                body_stream(data, bar.clone(), limit),
                len,
                PayloadHash::Unsigned,
            );
            let etag = client
                .upload_part(bucket, key, &upload_id, n, &h, body)
                .await?;
            check_etag(&etag, &md5_hex, key, Some(n))?;
            Ok((n, etag))
        }
    });
    let mut parts: Vec<(u32, String)> = futures::stream::iter(jobs)
        .buffer_unordered(spec.parallel.max(1))
        .try_collect()
        .await
        .map_err(|e| match e {
            CliError::Connection { url, detail } => CliError::Connection {
                url,
                detail: format!("{detail}; run the same command again to resume the upload"),
            },
            other => other,
        })?;
    parts.sort_by_key(|p| p.0);
    client
        .complete_multipart(bucket, key, &upload_id, &parts)
        .await?;
    Ok(UploadReport {
        size,
        reused_parts: reused.load(std::sync::atomic::Ordering::Relaxed),
        parts: count as usize,
    })
}

/// The newest unfinished upload of exactly this key, with its parts. Servers that cannot list
/// uploads simply get a fresh upload.
async fn find_unfinished(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Option<(String, HashMap<u32, PartEntry>)> {
    let uploads = client.list_uploads(bucket, key).await.ok()?;
    let newest = uploads
        .into_iter()
        .max_by(|a, b| a.initiated.cmp(&b.initiated))?;
    let parts = client
        .list_parts(bucket, key, &newest.upload_id)
        .await
        .ok()?;
    Some((
        newest.upload_id,
        parts.into_iter().map(|p| (p.number, p)).collect(),
    ))
}

async fn read_range(file: Arc<std::fs::File>, offset: u64, len: u64) -> Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map(|_| Bytes::from(buf))
    })
    .await
    .map_err(|e| CliError::local(format!("reading the file failed: {e}")))?
    .map_err(|e| {
        CliError::local(format!(
            "cannot read the file (did it change during the upload?): {e}"
        ))
    })
}

/// A plain 32-hex ETag must be the MD5 we sent; other ETags (e.g. other servers' schemes) are
/// not comparable and are accepted.
fn check_etag(etag: &str, md5_hex: &str, key: &str, part: Option<u32>) -> Result<()> {
    let plain = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    if plain && !etag.eq_ignore_ascii_case(md5_hex) {
        let what = part
            .map(|n| format!("part {n} of {key}"))
            .unwrap_or_else(|| key.to_owned());
        return Err(CliError::local(format!(
            "the server stored different bytes for {what} (ETag {etag}, local MD5 {md5_hex})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes() {
        assert_eq!(part_size(100 * MIB), 8 * MIB);
        assert_eq!(part_size(200_000 * MIB), 20 * MIB);
        assert!(part_size(5_000_000 * MIB) * MAX_PARTS >= 5_000_000 * MIB);
    }

    #[test]
    fn metadata_text() {
        assert_eq!(header_text("holiday 2024"), "holiday 2024");
        assert_eq!(header_text("café"), "=?UTF-8?B?Y2Fmw6k=?=");
    }
}
