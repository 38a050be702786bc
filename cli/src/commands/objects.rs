//! `nebula rm`, `nebula cp` and `nebula mv`: delete, copy and rename objects on the server
//! (a copy is S3 CopyObject, or UploadPartCopy parts past S3's 5 GiB CopyObject limit: the
//! bytes never travel through the client); `-r` works on every key under a prefix, and
//! deletes go 1000 keys per DeleteObjects request.

use std::io::{BufRead, IsTerminal, Write};

use futures::{StreamExt, TryStreamExt};

use super::{BucketArg, Ctx};
use crate::client::Client;
use crate::config::Settings;
use crate::error::{CliError, Result, shell_word};
use crate::s3::{ObjectHead, bucket_uri, s3_uri};

/// Keys asked for per listing page; also the most keys of one DeleteObjects request.
const PAGE: u32 = 1000;
/// The largest object S3's CopyObject copies; larger ones are copied in parts.
const MAX_COPY_OBJECT: u64 = 5 * 1024 * 1024 * 1024;
/// S3's smallest part (but the last) and most parts of a multipart upload.
const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// Copies (objects, or parts of one) sent at the same time.
const PARALLEL_COPIES: usize = 4;

/// Arguments of `nebula rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Keys to delete; with -r, prefixes: every key that starts with one (none: the whole
    /// bucket, which asks for confirmation).
    keys: Vec<String>,
    #[command(flatten)]
    bucket: BucketArg,
    /// Delete every object whose key starts with the given prefixes.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Do not ask before deleting every object of the bucket.
    #[arg(short = 'y', long)]
    yes: bool,
}

/// Arguments of `nebula cp` and `nebula mv`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The object: a key of the bucket, or `s3://BUCKET/KEY`; with -r a folder (prefix).
    source: String,
    /// Where to: a key, `s3://BUCKET/KEY`, or a folder ending in `/` (the source's name is
    /// appended); with -r a folder. An object already there is replaced.
    dest: String,
    #[command(flatten)]
    bucket: BucketArg,
    /// Every object under the folder SOURCE, to the same names under DEST.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Objects larger than this many bytes are copied in parts of this size (UploadPartCopy;
    /// at least 5 MiB). S3's CopyObject stops at 5 GiB, the default; smaller for tests.
    #[arg(long, hide = true, default_value_t = MAX_COPY_OBJECT)]
    multipart_threshold: u64,
}

/// Runs `nebula rm`.
pub async fn run_rm(ctx: &Ctx, args: RmArgs) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let bucket = settings.bucket(args.bucket.bucket.as_deref())?;
    if !args.recursive {
        if args.keys.is_empty() {
            return Err(CliError::Usage(format!(
                "give the keys to delete, or -r to delete by prefix (`nebula rm -r -b {} PREFIX`)",
                shell_word(&bucket)
            )));
        }
        for key in &args.keys {
            remove_one(&client, &bucket, key).await?;
        }
        return Ok(());
    }
    let prefixes = if args.keys.is_empty() {
        vec![String::new()]
    } else {
        args.keys.clone()
    };
    if prefixes.iter().any(String::is_empty) && !args.yes {
        confirm_whole_bucket(&bucket)?;
    }
    for prefix in &prefixes {
        let n = remove_prefix(&client, &bucket, prefix).await?;
        let what = if prefix.is_empty() {
            bucket_uri(&bucket)
        } else {
            s3_uri(&bucket, prefix)
        };
        let noun = if n == 1 { "object" } else { "objects" };
        println!("deleted {n} {noun} under {what}");
    }
    Ok(())
}

/// Deletes one object, after checking it is there: S3 answers a delete of a missing key with
/// success, which would hide a typo.
async fn remove_one(client: &Client, bucket: &str, key: &str) -> Result<()> {
    if let Err(e) = client.head_object(bucket, key).await {
        if e.code() != Some("NoSuchKey") {
            return Err(e);
        }
        // A "folder": say how to delete what is below it.
        let folder = if key.ends_with('/') {
            key.to_owned()
        } else {
            format!("{key}/")
        };
        let (below, _) = client.list_objects(bucket, &folder, None, 1).await?;
        if below.is_empty() {
            return Err(e);
        }
        return Err(CliError::Usage(format!(
            "{} is a folder, not an object: delete everything in it with `nebula rm -r -b {} {}`",
            s3_uri(bucket, key),
            shell_word(bucket),
            shell_word(&folder)
        )));
    }
    client.delete_object(bucket, key).await?;
    println!("deleted {}", s3_uri(bucket, key));
    Ok(())
}

/// Deletes every object whose key starts with `prefix`; how many. A non-empty prefix that
/// matches nothing is an error (most likely a typo).
async fn remove_prefix(client: &Client, bucket: &str, prefix: &str) -> Result<u64> {
    let mut deleted = 0;
    let mut token: Option<String> = None;
    loop {
        // Deleting while paging is safe: the continuation token is the last key returned,
        // and the next page starts after it whether or not that key still exists.
        let (page, next) = client
            .list_objects(bucket, prefix, token.as_deref(), PAGE)
            .await?;
        let keys: Vec<String> = page.into_iter().map(|o| o.key).collect();
        deleted += delete_batch(client, bucket, &keys).await?;
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if deleted == 0 && !prefix.is_empty() {
        return Err(CliError::Remote {
            status: 404,
            code: String::new(),
            message: String::new(),
            resource: format!("an object whose key starts with {}", s3_uri(bucket, prefix)),
        });
    }
    Ok(deleted)
}

/// Deletes `keys` (at most 1000) with one DeleteObjects request; how many. A key the server
/// could not delete is an error naming it.
async fn delete_batch(client: &Client, bucket: &str, keys: &[String]) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let failed = client.delete_objects(bucket, keys).await?;
    if let Some(f) = failed.first() {
        return Err(CliError::Remote {
            status: 200,
            code: f.code.clone(),
            message: format!(
                "{} ({} of {} keys not deleted)",
                f.message,
                failed.len(),
                keys.len()
            ),
            resource: s3_uri(bucket, &f.key),
        });
    }
    Ok(keys.len() as u64)
}

/// Asks on the terminal before a whole bucket is emptied; refuses when there is no terminal
/// to ask on (scripts pass --yes).
fn confirm_whole_bucket(bucket: &str) -> Result<()> {
    let again = format!("nebula rm -r -b {} --yes", shell_word(bucket));
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "this deletes every object of {}: to do so without being asked, run `{again}`",
            bucket_uri(bucket)
        )));
    }
    eprint!(
        "delete every object of {}? type the bucket's name to confirm: ",
        bucket_uri(bucket)
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() == bucket {
        Ok(())
    } else {
        Err(CliError::local("not confirmed: nothing was deleted"))
    }
}

/// `KEY` (in the command's bucket) or `s3://BUCKET/KEY`.
fn object_ref(settings: &Settings, flag: Option<&str>, arg: &str) -> Result<(String, String)> {
    if let Some(rest) = arg.strip_prefix("s3://") {
        return match rest.split_once('/') {
            Some((b, k)) if !b.is_empty() => Ok((b.to_owned(), k.to_owned())),
            _ => Err(CliError::Usage(format!(
                "{arg} names no object: write s3://BUCKET/KEY"
            ))),
        };
    }
    Ok((settings.bucket(flag)?, arg.to_owned()))
}

/// Runs `nebula cp` (`remove_source: false`) and `nebula mv` (`true`).
pub async fn run_copy(ctx: &Ctx, args: CopyArgs, remove_source: bool) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let flag = args.bucket.bucket.as_deref();
    let (src_bucket, src_key) = object_ref(&settings, flag, &args.source)?;
    let (dst_bucket, mut dst_key) = object_ref(&settings, flag, &args.dest)?;
    let threshold = args.multipart_threshold.max(MIN_PART);
    if args.recursive {
        let from = (src_bucket.as_str(), folder(src_key));
        let to = (dst_bucket.as_str(), folder(dst_key));
        return copy_prefix(&client, from, to, threshold, remove_source).await;
    }
    if src_key.is_empty() || src_key.ends_with('/') {
        return Err(CliError::Usage(format!(
            "{} is not an object key (cp and mv take one object)",
            s3_uri(&src_bucket, &src_key)
        )));
    }
    if dst_key.is_empty() || dst_key.ends_with('/') {
        let name = src_key.rsplit('/').next().unwrap_or(&src_key);
        dst_key.push_str(name);
    }
    if (&src_bucket, &src_key) == (&dst_bucket, &dst_key) {
        return Err(CliError::Usage(format!(
            "{} is both the source and the destination",
            s3_uri(&src_bucket, &src_key)
        )));
    }
    // A missing source is named as the source, not as the copy's destination.
    let head = client.head_object(&src_bucket, &src_key).await?;
    copy_one(
        &client,
        (&src_bucket, &src_key),
        (&dst_bucket, &dst_key),
        &head,
        threshold,
    )
    .await?;
    if remove_source {
        client.delete_object(&src_bucket, &src_key).await?;
    }
    let verb = if remove_source { "moved" } else { "copied" };
    eprintln!(
        "{verb} {} to {}",
        s3_uri(&src_bucket, &src_key),
        s3_uri(&dst_bucket, &dst_key)
    );
    println!("{dst_key}");
    Ok(())
}

/// A prefix as a folder: empty (the whole bucket) or ending in `/`.
fn folder(mut prefix: String) -> String {
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

/// Copies every object under `from` to the same name under `to` (and deletes the sources
/// when moving, 1000 per request, after their page is copied).
async fn copy_prefix(
    client: &Client,
    (src_bucket, src): (&str, String),
    (dst_bucket, dst): (&str, String),
    threshold: u64,
    remove_source: bool,
) -> Result<()> {
    // Copies into the folder being listed would be listed and copied again.
    if src_bucket == dst_bucket && dst.starts_with(&src) {
        return Err(CliError::Usage(format!(
            "{} is inside {}: copy the folder somewhere else",
            s3_uri(dst_bucket, &dst),
            s3_uri(src_bucket, &src)
        )));
    }
    let mut token: Option<String> = None;
    let mut copied = 0u64;
    loop {
        let (page, next) = client
            .list_objects(src_bucket, &src, token.as_deref(), PAGE)
            .await?;
        let (src_ref, dst_ref) = (&src, &dst);
        futures::stream::iter(&page)
            .map(|o| async move {
                let to = format!("{dst_ref}{}", &o.key[src_ref.len()..]);
                let head = client.head_object(src_bucket, &o.key).await?;
                copy_one(
                    client,
                    (src_bucket, &o.key),
                    (dst_bucket, &to),
                    &head,
                    threshold,
                )
                .await
            })
            .buffer_unordered(PARALLEL_COPIES)
            .try_collect::<Vec<()>>()
            .await?;
        copied += page.len() as u64;
        if remove_source {
            let keys: Vec<String> = page.into_iter().map(|o| o.key).collect();
            delete_batch(client, src_bucket, &keys).await?;
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if copied == 0 {
        return Err(CliError::Remote {
            status: 404,
            code: String::new(),
            message: String::new(),
            resource: format!(
                "an object whose key starts with {}",
                s3_uri(src_bucket, &src)
            ),
        });
    }
    let verb = if remove_source { "moved" } else { "copied" };
    let noun = if copied == 1 { "object" } else { "objects" };
    eprintln!(
        "{verb} {copied} {noun} from {} to {}",
        s3_uri(src_bucket, &src),
        s3_uri(dst_bucket, &dst)
    );
    Ok(())
}

/// Copies one object on the server: CopyObject up to `threshold` bytes, else a multipart
/// upload of UploadPartCopy parts (the source's content headers and metadata kept, as
/// CopyObject keeps them).
async fn copy_one(
    client: &Client,
    (src_bucket, src_key): (&str, &str),
    (bucket, key): (&str, &str),
    head: &ObjectHead,
    threshold: u64,
) -> Result<()> {
    if head.size <= threshold {
        client.copy_object(src_bucket, src_key, bucket, key).await?;
        return Ok(());
    }
    let part = threshold
        .clamp(MIN_PART, MAX_COPY_OBJECT)
        .max(head.size.div_ceil(MAX_PARTS));
    let headers: Vec<(&str, String)> = head
        .kept
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    let upload = client.create_multipart(bucket, key, &headers).await?;
    let ranges: Vec<(u32, (u64, u64))> = (0..head.size.div_ceil(part))
        .map(|i| {
            let first = i * part;
            (i as u32 + 1, (first, (first + part).min(head.size) - 1))
        })
        .collect();
    let upload_ref = &upload;
    let copied = futures::stream::iter(ranges)
        .map(|(n, range)| async move {
            let etag = client
                .upload_part_copy(bucket, key, upload_ref, n, src_bucket, src_key, range)
                .await?;
            Ok::<_, CliError>((n, etag))
        })
        .buffered(PARALLEL_COPIES)
        .try_collect::<Vec<(u32, String)>>()
        .await;
    let done = match copied {
        Ok(parts) => {
            client
                .complete_multipart(bucket, key, &upload, &parts)
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = done {
        // Parts already copied would otherwise stay staged on the server.
        let _ = client.abort_multipart(bucket, key, &upload).await;
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Servers;

    fn settings(bucket: Option<&str>) -> Settings {
        Settings {
            servers: Servers::Single("http://127.0.0.1:1".into()),
            keys: None,
            bucket: bucket.map(str::to_owned),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn object_refs() {
        let s = settings(Some("media"));
        assert_eq!(
            object_ref(&s, None, "a/b.mp4").unwrap(),
            ("media".into(), "a/b.mp4".into())
        );
        assert_eq!(
            object_ref(&s, Some("other"), "a").unwrap(),
            ("other".into(), "a".into())
        );
        assert_eq!(
            object_ref(&s, None, "s3://x/y/z").unwrap(),
            ("x".into(), "y/z".into())
        );
        assert!(object_ref(&s, None, "s3://x").is_err());
        assert!(object_ref(&settings(None), None, "a").is_err());
    }
}
