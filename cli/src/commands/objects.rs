//! `nebula rm`, `nebula cp` and `nebula mv`: delete, copy and rename objects on the server
//! (a copy is S3 CopyObject: the bytes never travel through the client).

use std::io::{BufRead, IsTerminal, Write};

use futures::{StreamExt, TryStreamExt};

use super::{BucketArg, Ctx};
use crate::client::Client;
use crate::config::Settings;
use crate::error::{CliError, Result, shell_word};
use crate::s3::{bucket_uri, s3_uri};

/// Deletes sent at the same time by `rm -r`.
const PARALLEL_DELETES: usize = 8;
/// Keys asked for per listing page.
const PAGE: u32 = 1000;

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
    /// The object: a key of the bucket, or `s3://BUCKET/KEY`.
    source: String,
    /// Where to: a key, `s3://BUCKET/KEY`, or a folder ending in `/` (the source's name is
    /// appended). An object already there is replaced.
    dest: String,
    #[command(flatten)]
    bucket: BucketArg,
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
        let n = keys.len() as u64;
        futures::stream::iter(keys)
            .map(|key| async move { client.delete_object(bucket, &key).await })
            .buffer_unordered(PARALLEL_DELETES)
            .try_collect::<Vec<()>>()
            .await?;
        deleted += n;
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
    client.head_object(&src_bucket, &src_key).await?;
    client
        .copy_object(&src_bucket, &src_key, &dst_bucket, &dst_key)
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
