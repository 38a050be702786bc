//! The queue's SQL. Statements use `$N` placeholders, which both engines accept; only taking a
//! job differs per engine.

use std::str::FromStr;

pub use nebula_api_types::jobs::{Job, JobCounts, JobStatus};
use nebula_media::Quality;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalog::{Db, on_pool};

/// The quality of a job as the media crate knows it (`None` for a value this gateway does
/// not know).
pub fn media_quality(job: &Job) -> Option<Quality> {
    Quality::from_str(&job.quality.to_string()).ok()
}

#[derive(Debug, sqlx::FromRow)]
struct JobRow {
    id: i64,
    bucket: String,
    key: String,
    quality: String,
    // The column's CHECK admits exactly the five states.
    #[sqlx(try_from = "String")]
    status: JobStatus,
    progress: i32,
    output_size: Option<i64>,
    error: Option<String>,
    encoder: Option<String>,
    created_at: OffsetDateTime,
    started_at: Option<OffsetDateTime>,
    completed_at: Option<OffsetDateTime>,
    worker_id: Option<String>,
    attempts: i32,
}

const JOB_COLUMNS: &str = "j.id, o.bucket, o.key, j.quality, j.status, j.progress, j.output_size, j.error, j.encoder, \
     j.created_at, j.started_at, j.completed_at, j.worker_id, j.attempts";

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        Job {
            id: r.id,
            bucket: r.bucket,
            key: r.key,
            quality: r.quality.trim_end_matches('p').parse().unwrap_or(0),
            status: r.status,
            progress: u8::try_from(r.progress.clamp(0, 100)).unwrap_or(0),
            output_size: r.output_size.and_then(|s| u64::try_from(s).ok()),
            error: r.error,
            encoder: r.encoder,
            created_at: rfc3339(r.created_at),
            started_at: r.started_at.map(rfc3339),
            completed_at: r.completed_at.map(rfc3339),
            worker_id: r.worker_id,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
        }
    }
}

/// What `GET /jobs` asks for.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only jobs of objects in this bucket.
    pub bucket: Option<String>,
    /// Only jobs of this key.
    pub key: Option<String>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// Now, to the second: lease times are compared as text on SQLite, where RFC 3339 with and
/// without a fraction would not sort by time.
fn now_secs() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
}

/// One job.
pub(super) async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM transcode_jobs j JOIN objects o ON o.id = j.object_id WHERE j.id = $1"
    );
    let row: Option<JobRow> =
        on_pool!(db, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
    Ok(row.map(Job::from))
}

/// Jobs matching `f`, newest first.
pub(super) async fn list(db: &Db, f: &JobFilter) -> sqlx::Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM transcode_jobs j JOIN objects o ON o.id = j.object_id \
         WHERE ($1 IS NULL OR j.status = $1) AND ($2 IS NULL OR o.bucket = $2) AND ($3 IS NULL OR o.key = $3) \
         ORDER BY j.id DESC LIMIT $4"
    );
    let rows: Vec<JobRow> = on_pool!(db, pool => {
        sqlx::query_as(&sql)
            .bind(f.status.map(JobStatus::as_str))
            .bind(f.bucket.as_deref())
            .bind(f.key.as_deref())
            .bind(i64::from(f.limit.clamp(1, 1000)))
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().map(Job::from).collect())
}

/// Queues a job for the object row `object_id`, or returns the active one for the same
/// quality (the partial unique index makes this safe between gateways).
pub(super) async fn insert(db: &Db, object_id: i64, quality: Quality) -> sqlx::Result<Job> {
    let q = quality.height().to_string();
    // The active job found may finish between the two statements: then insert again.
    for _ in 0..5 {
        let now = OffsetDateTime::now_utc();
        let inserted: Option<i64> = on_pool!(db, pool => {
            sqlx::query_scalar(
                "INSERT INTO transcode_jobs (object_id, quality, status, created_at) VALUES ($1, $2, 'pending', $3) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(object_id)
            .bind(&q)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        let id: Option<i64> = match inserted {
            Some(id) => Some(id),
            None => on_pool!(db, pool => {
                sqlx::query_scalar(
                    "SELECT id FROM transcode_jobs WHERE object_id = $1 AND quality = $2 \
                     AND status IN ('pending', 'processing') ORDER BY id DESC LIMIT 1",
                )
                .bind(object_id)
                .bind(&q)
                .fetch_optional(pool)
                .await?
            }),
        };
        if let Some(id) = id
            && let Some(job) = get(db, id).await?
        {
            return Ok(job);
        }
    }
    Err(sqlx::Error::Protocol(
        "the job queue kept changing while queuing; retry".into(),
    ))
}

/// Takes the oldest pending job for `worker`: status processing, a lease, one more attempt.
pub(super) async fn claim(
    db: &Db,
    worker: &str,
    lease: std::time::Duration,
) -> sqlx::Result<Option<Job>> {
    let now = now_secs();
    let until = now + lease;
    const SET: &str = "SET status = 'processing', worker_id = $1, started_at = $2, lease_expires_at = $3, \
                       attempts = attempts + 1, progress = 0, completed_at = NULL";
    let id: Option<i64> = match db {
        // One statement: SQLite takes the write lock before reading, and the status guard
        // keeps a job from being taken twice anyway.
        Db::Sqlite(pool) => {
            sqlx::query_scalar(&format!(
                "UPDATE transcode_jobs {SET} \
                 WHERE id = (SELECT id FROM transcode_jobs WHERE status = 'pending' ORDER BY id LIMIT 1) \
                 AND status = 'pending' RETURNING id"
            ))
            .bind(worker)
            .bind(now)
            .bind(until)
            .fetch_optional(pool)
            .await?
        }
        // SKIP LOCKED: gateways sharing the database each take a different row, without waiting.
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM transcode_jobs WHERE status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = id {
                sqlx::query(&format!("UPDATE transcode_jobs {SET} WHERE id = $4"))
                    .bind(worker)
                    .bind(now)
                    .bind(until)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            id
        }
    };
    match id {
        Some(id) => get(db, id).await,
        None => Ok(None),
    }
}

/// Returns jobs whose worker stopped renewing to the queue, or fails them after `max_attempts`
/// tries. Returns how many were touched.
pub(super) async fn expire_leases(db: &Db, max_attempts: u32) -> sqlx::Result<u64> {
    let now = now_secs();
    let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    let n = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE transcode_jobs SET \
             status = CASE WHEN attempts >= $2 THEN 'failed' ELSE 'pending' END, \
             completed_at = CASE WHEN attempts >= $2 THEN $1 ELSE NULL END, \
             error = 'worker ' || coalesce(worker_id, '?') || ' stopped before finishing (its lease expired)', \
             lease_expires_at = NULL \
             WHERE status = 'processing' AND lease_expires_at < $1",
        )
        .bind(now)
        .bind(max)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(n)
}

/// Records progress and extends the lease. `false` when the job is no longer this worker's
/// to run (cancelled, or taken over after an expired lease): the pipeline must stop.
pub(super) async fn renew(
    db: &Db,
    id: i64,
    worker: &str,
    progress: u8,
    lease: std::time::Duration,
) -> sqlx::Result<bool> {
    let until = now_secs() + lease;
    let n = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE transcode_jobs SET progress = $3, lease_expires_at = $4 \
             WHERE id = $1 AND worker_id = $2 AND status = 'processing'",
        )
        .bind(id)
        .bind(worker)
        .bind(i32::from(progress.min(100)))
        .bind(until)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// Marks a job completed. `false` if it was no longer this worker's.
pub(super) async fn complete(
    db: &Db,
    id: i64,
    worker: &str,
    output_path: &str,
    size: u64,
    encoder: &str,
) -> sqlx::Result<bool> {
    let n = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE transcode_jobs SET status = 'completed', progress = 100, output_path = $3, output_size = $4, \
             encoder = $5, error = NULL, completed_at = $6, lease_expires_at = NULL \
             WHERE id = $1 AND worker_id = $2 AND status = 'processing'",
        )
        .bind(id)
        .bind(worker)
        .bind(output_path)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(encoder)
        .bind(OffsetDateTime::now_utc())
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// Records a failed attempt: back to pending while `retry` and attempts remain, else failed.
/// Returns the new status, or `None` if the job was no longer this worker's.
pub(super) async fn fail(
    db: &Db,
    id: i64,
    worker: &str,
    error: &str,
    retry: bool,
    max_attempts: u32,
) -> sqlx::Result<Option<String>> {
    let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    let status: Option<String> = on_pool!(db, pool => {
        sqlx::query_scalar(
            "UPDATE transcode_jobs SET \
             status = CASE WHEN $4 AND attempts < $5 THEN 'pending' ELSE 'failed' END, \
             completed_at = CASE WHEN $4 AND attempts < $5 THEN NULL ELSE $6 END, \
             error = $3, lease_expires_at = NULL \
             WHERE id = $1 AND worker_id = $2 AND status = 'processing' RETURNING status",
        )
        .bind(id)
        .bind(worker)
        .bind(error)
        .bind(retry)
        .bind(max)
        .bind(OffsetDateTime::now_utc())
        .fetch_optional(pool)
        .await?
    });
    Ok(status)
}

/// Cancels a pending or processing job. `false` if it was already finished (or unknown).
pub(super) async fn cancel(db: &Db, id: i64) -> sqlx::Result<bool> {
    let n = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE transcode_jobs SET status = 'cancelled', completed_at = $2, lease_expires_at = NULL \
             WHERE id = $1 AND status IN ('pending', 'processing')",
        )
        .bind(id)
        .bind(OffsetDateTime::now_utc())
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// Hands a running job back to the queue when its gateway stops; the interrupted attempt is
/// not counted.
pub(super) async fn release(db: &Db, id: i64, worker: &str) -> sqlx::Result<()> {
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE transcode_jobs SET status = 'pending', progress = 0, lease_expires_at = NULL, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
             WHERE id = $1 AND worker_id = $2 AND status = 'processing'",
        )
        .bind(id)
        .bind(worker)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Job counts by state.
pub(super) async fn counts(db: &Db) -> sqlx::Result<JobCounts> {
    let rows: Vec<(String, i64)> = on_pool!(db, pool => {
        sqlx::query_as("SELECT status, COUNT(*) FROM transcode_jobs GROUP BY status").fetch_all(pool).await?
    });
    let mut c = JobCounts::default();
    for (status, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        match status.as_str() {
            "pending" => c.pending = n,
            "processing" => c.processing = n,
            "completed" => c.completed = n,
            "failed" => c.failed = n,
            "cancelled" => c.cancelled = n,
            _ => {}
        }
    }
    Ok(c)
}
