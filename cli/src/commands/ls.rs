//! `nebula ls`: the gateway's catalog listing (with media info) when it has one, else plain
//! ListObjectsV2. With `--json`, videos the catalog lists a poster for carry a presigned
//! `?thumbnail=` URL.

use std::time::Duration;

use nebula_api_types::files::{FileItem, FilePage, Media};
use reqwest::Method;
use serde::Serialize;

use super::{BucketArg, Ctx, print_json};
use crate::client::Client;
use crate::error::{CliError, Result};

/// Arguments of `nebula ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only keys starting with this prefix.
    #[arg(default_value = "")]
    prefix: String,
    #[command(flatten)]
    bucket: BucketArg,
    /// Show at most N objects.
    #[arg(long)]
    limit: Option<usize>,
    /// Skip the first N objects.
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Print JSON (the catalog's item shape; `media` is null without a catalog), with a
    /// presigned `poster_url` for each video that has a poster.
    #[arg(long)]
    json: bool,
    /// Width of the posters `--json` links to, in pixels (1 to 1280).
    #[arg(long, default_value_t = 320, value_parser = clap::value_parser!(u32).range(1..=1280))]
    poster_width: u32,
    /// Lifetime of the poster URLs, like 30m, 1h, 2d (at most 7 days).
    #[arg(long, default_value = "1h", value_parser = super::presign::parse_expiry)]
    poster_expires: Duration,
}

/// One line of `nebula ls --json`: the API's item, and for a video with a poster a presigned
/// `?thumbnail=W` URL of it.
#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    item: FileItem,
    #[serde(skip_serializing_if = "Option::is_none")]
    poster_url: Option<String>,
}

/// Runs `nebula ls`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    let Ok(bucket) = settings.bucket(args.bucket.bucket.as_deref()) else {
        // No bucket anywhere: list the buckets, the only useful answer.
        let buckets = client.list_buckets().await?;
        if args.json {
            print_json(&buckets);
        } else {
            buckets.iter().for_each(|b| println!("{b}/"));
        }
        return Ok(());
    };
    let want = args.limit.map(|l| l + args.skip);
    let items = match list_catalog(&client, &bucket, &args.prefix, want).await {
        Ok(items) => items,
        Err(e) if catalog_missing(&e) => list_s3(&client, &bucket, &args.prefix, want).await?,
        Err(e) => return Err(e),
    };
    let items: Vec<FileItem> = items
        .into_iter()
        .skip(args.skip)
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();
    if args.json {
        let width = args.poster_width.to_string();
        let listed = items
            .into_iter()
            .map(|item| {
                let poster_url = match item.poster {
                    Some(_) => {
                        let url =
                            client.url(&item.bucket, Some(&item.key), &[("thumbnail", &width)]);
                        Some(client.presign(&Method::GET, &url, args.poster_expires)?)
                    }
                    None => None,
                };
                Ok(Listed { item, poster_url })
            })
            .collect::<Result<Vec<_>>>()?;
        print_json(&listed);
        return Ok(());
    }
    if items.is_empty() {
        eprintln!("no objects in s3://{bucket}/{}", args.prefix);
        return Ok(());
    }
    println!(
        "{:>10}  {:<24}  {:<19}  {:<22}  KEY",
        "SIZE", "TYPE", "MODIFIED", "MEDIA"
    );
    for i in &items {
        println!(
            "{:>10}  {:<24}  {:<19}  {:<22}  {}",
            indicatif::HumanBytes(i.size).to_string(),
            i.content_type.as_deref().unwrap_or("-"),
            short_time(&i.modified),
            media_summary(i.media.as_ref()),
            i.key
        );
    }
    Ok(())
}

/// Older gateways and other S3 servers have no catalog: they answer 404/405/501 (or 400 for
/// the `_nebula` "bucket" name).
fn catalog_missing(e: &CliError) -> bool {
    matches!(e.status(), Some(400 | 404 | 405 | 501))
}

async fn list_catalog(
    client: &Client,
    bucket: &str,
    prefix: &str,
    want: Option<usize>,
) -> Result<Vec<FileItem>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let limit = want
            .map_or(1000, |w| (w - out.len()).clamp(1, 1000))
            .to_string();
        let mut q = vec![
            ("bucket", bucket),
            ("prefix", prefix),
            ("limit", limit.as_str()),
        ];
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let page: FilePage = client.api_get("files", &q).await?;
        out.extend(page.items);
        if want.is_some_and(|w| out.len() >= w) || page.next_cursor.is_none() {
            return Ok(out);
        }
        cursor = page.next_cursor;
    }
}

async fn list_s3(
    client: &Client,
    bucket: &str,
    prefix: &str,
    want: Option<usize>,
) -> Result<Vec<FileItem>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let max = want.map_or(1000, |w| (w - out.len()).clamp(1, 1000)) as u32;
        let (entries, next) = client
            .list_objects(bucket, prefix, token.as_deref(), max)
            .await?;
        out.extend(entries.into_iter().map(|e| {
            FileItem {
                bucket: bucket.to_owned(),
                content_type: mime_guess::from_path(&e.key)
                    .first()
                    .map(|m| m.essence_str().to_owned()),
                key: e.key,
                size: e.size,
                etag: e.etag,
                modified: e.modified,
                description: None,
                media: None,
                variants: Default::default(),
                poster: None,
            }
        }));
        if want.is_some_and(|w| out.len() >= w) || next.is_none() {
            return Ok(out);
        }
        token = next;
    }
}

fn short_time(t: &str) -> String {
    t.replace('T', " ").chars().take(19).collect()
}

/// `1:23:45 1920x1080 h264` from the catalog's media facts.
fn media_summary(media: Option<&Media>) -> String {
    let Some(m) = media else {
        return "-".into();
    };
    let mut parts = Vec::new();
    if let Some(d) = m.duration_secs {
        let s = d.round() as u64;
        parts.push(if s >= 3600 {
            format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
        } else {
            format!("{}:{:02}", s / 60, s % 60)
        });
    }
    if m.width > 0 && m.height > 0 {
        parts.push(format!("{}x{}", m.width, m.height));
    }
    if let Some(c) = m.video_codec.as_deref().or(m.audio_codec.as_deref()) {
        parts.push(c.to_owned());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_text() {
        let mut m = Media {
            duration_secs: Some(3725.4),
            width: 1920,
            height: 1080,
            fps: None,
            video_codec: Some("h264".into()),
            audio_codec: None,
            bitrate: None,
            container: None,
        };
        assert_eq!(media_summary(Some(&m)), "1:02:05 1920x1080 h264");
        (m.width, m.height, m.video_codec) = (0, 0, None);
        m.audio_codec = Some("aac".into());
        assert_eq!(media_summary(Some(&m)), "1:02:05 aac");
        assert_eq!(media_summary(None), "-");
        assert_eq!(
            short_time("2026-01-02T03:04:05.000Z"),
            "2026-01-02 03:04:05"
        );
    }
}
