//! `nebula download`: streamed to disk with progress; a partial file is continued with a Range
//! request guarded by If-Match, and the result is checked against size and MD5 ETag.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use indicatif::ProgressBar;
use md5::{Digest, Md5};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{BucketArg, Ctx};
use crate::client::{Body, Client, remote_error};
use crate::error::{CliError, Result};
use crate::progress::bytes_bar;
use crate::s3::{ObjectHead, s3_uri};

/// Arguments of `nebula download`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Object key.
    key: String,
    #[command(flatten)]
    bucket: BucketArg,
    /// Output file or folder (default: the key's file name in the current folder).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

/// What a download did.
#[derive(Debug, Clone)]
pub struct DownloadReport {
    /// Where the file is.
    pub path: PathBuf,
    /// Object size.
    pub size: u64,
    /// Bytes that were already on disk and kept.
    pub resumed_from: u64,
}

/// Runs `nebula download`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    let name = args
        .key
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("download")
        .to_owned();
    let path = match args.output {
        Some(p) if p.is_dir() => p.join(&name),
        Some(p) => p,
        None => PathBuf::from(&name),
    };
    let r = download(&client, &bucket, &args.key, &path, true).await?;
    if r.resumed_from > 0 {
        eprintln!("resumed at byte {} of {}", r.resumed_from, r.size);
    }
    eprintln!(
        "downloaded {} ({})",
        s3_uri(&bucket, &args.key),
        indicatif::HumanBytes(r.size)
    );
    println!("{}", r.path.display());
    Ok(())
}

/// Downloads `bucket/key` to `path`, continuing a shorter file already there.
pub async fn download(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    show_progress: bool,
) -> Result<DownloadReport> {
    let head = client.head_object(bucket, key).await?;
    let have = tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let md5 = plain_md5(&head.etag);
    if have == head.size
        && have > 0
        && md5.is_some()
        && file_md5(path).await? == md5.clone().unwrap_or_default()
    {
        return Ok(DownloadReport {
            path: path.to_owned(),
            size: head.size,
            resumed_from: have,
        });
    }
    let start = if have < head.size { have } else { 0 };
    match fetch(client, bucket, key, path, &head, start, show_progress).await {
        // A resumed file that fails verification may have had a stale beginning: start over once.
        Err(e) if start > 0 && matches!(e, CliError::Local(_)) => {
            eprintln!("the resumed file did not verify ({e}); downloading it again from the start");
            fetch(client, bucket, key, path, &head, 0, show_progress).await
        }
        other => other,
    }
}

async fn fetch(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    head: &ObjectHead,
    mut start: u64,
    show_progress: bool,
) -> Result<DownloadReport> {
    let url = client.url(bucket, Some(key), &[]);
    let uri = s3_uri(bucket, key);
    let mut resp = if start > 0 {
        // If-Match makes a changed object answer 412 instead of splicing two versions.
        let h = [
            ("range", format!("bytes={start}-")),
            ("if-match", format!("\"{}\"", head.etag)),
        ];
        let r = client.send_raw(Method::GET, &url, &h, Body::Empty).await?;
        match r.status() {
            StatusCode::PARTIAL_CONTENT | StatusCode::OK => Some(r),
            StatusCode::PRECONDITION_FAILED | StatusCode::RANGE_NOT_SATISFIABLE => {
                eprintln!("the object changed since the partial download; starting over");
                None
            }
            _ => return Err(remote_error(r, &uri).await),
        }
    } else {
        None
    };
    if resp.as_ref().is_some_and(|r| r.status() == StatusCode::OK) || resp.is_none() {
        // A server that ignores Range sends everything: write from the beginning.
        start = 0;
    }
    let resp = match resp.take() {
        Some(r) => r,
        None => {
            client
                .send(Method::GET, &url, &[], Body::Empty, &uri)
                .await?
        }
    };

    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .read(true)
        .truncate(false)
        .open(path)
        .await
        .map_err(|e| CliError::local(format!("cannot write {}: {e}", path.display())))?;
    let mut hasher = Md5::new();
    if start > 0 {
        hash_prefix(&mut file, start, &mut hasher).await?;
    }
    file.set_len(start).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;

    let bar = if show_progress {
        bytes_bar(head.size, key.to_owned())
    } else {
        ProgressBar::hidden()
    };
    bar.set_position(start);
    let mut written = start;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| client.connection_error(&url, &e))
            .map_err(|e| match e {
                CliError::Connection { url, detail } => CliError::Connection {
                    url,
                    detail: format!("{detail}; run the same command again to resume"),
                },
                other => other,
            })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| CliError::local(format!("cannot write {}: {e}", path.display())))?;
        hasher.update(&chunk);
        written += chunk.len() as u64;
        bar.set_position(written);
    }
    file.flush().await?;
    file.sync_all().await?;
    bar.finish_and_clear();

    if written != head.size {
        return Err(CliError::local(format!(
            "{} has {written} bytes but the object has {}",
            path.display(),
            head.size
        )));
    }
    if let Some(want) = plain_md5(&head.etag) {
        let got = hex::encode(hasher.finalize());
        if got != want {
            return Err(CliError::local(format!(
                "{} does not match the object's MD5 ETag (got {got}, expected {want})",
                path.display()
            )));
        }
    }
    Ok(DownloadReport {
        path: path.to_owned(),
        size: head.size,
        resumed_from: start,
    })
}

/// The MD5 an ETag stands for, when it is a plain one (not multipart `-N`, not another scheme).
fn plain_md5(etag: &str) -> Option<String> {
    (etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| etag.to_ascii_lowercase())
}

async fn hash_prefix(file: &mut tokio::fs::File, len: u64, hasher: &mut Md5) -> Result<()> {
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

async fn file_md5(path: &Path) -> Result<String> {
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    let mut h = Md5::new();
    hash_prefix(&mut f, len, &mut h).await?;
    Ok(hex::encode(h.finalize()))
}
