//! `nebula mb` and `nebula rb`: create and remove a bucket.

use super::Ctx;
use crate::error::{CliError, Result, shell_word};
use crate::s3::bucket_uri;

/// Arguments of `nebula mb`.
#[derive(Debug, clap::Args)]
pub struct MbArgs {
    /// Name of the new bucket (3-63 lowercase letters, digits, dots and hyphens).
    bucket: String,
}

/// Arguments of `nebula rb`.
#[derive(Debug, clap::Args)]
pub struct RbArgs {
    /// The bucket to remove; it must be empty (`nebula rm -r -b BUCKET --yes` empties it).
    bucket: String,
}

/// Runs `nebula mb`.
pub async fn run_mb(ctx: &Ctx, args: MbArgs) -> Result<()> {
    let (settings, client) = ctx.client().await?;
    // In us-east-1 S3 answers a CreateBucket of one's own bucket with success.
    if client.bucket_exists(&args.bucket).await? {
        return Err(CliError::Remote {
            status: 409,
            code: "BucketAlreadyOwnedByYou".into(),
            message: String::new(),
            resource: bucket_uri(&args.bucket),
        });
    }
    client.create_bucket(&args.bucket).await?;
    println!("created {}", bucket_uri(&args.bucket));
    if settings.bucket.is_none() {
        eprintln!(
            "make it the bucket of commands run without -b: `nebula config --bucket {}`",
            shell_word(&args.bucket)
        );
    }
    Ok(())
}

/// Runs `nebula rb`.
pub async fn run_rb(ctx: &Ctx, args: RbArgs) -> Result<()> {
    let (_, client) = ctx.client().await?;
    client.delete_bucket(&args.bucket).await?;
    println!("removed {}", bucket_uri(&args.bucket));
    Ok(())
}
