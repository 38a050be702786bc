//! The catalog: a database mirror of every object, plus what only the catalog knows (media
//! probe results, renditions, transcode jobs). The poster a probed video lists
//! ([`CatalogObject::poster`]) follows from its probe result; the JPEG lives in the renditions
//! store.
//!
//! The filesystem stays the truth. Every write and delete updates the catalog within the
//! request (through [`crate::events::ObjectEvents`]); a reconcile scan ([`Catalog::reconcile`])
//! repairs whatever changed out of band or was missed while the database was down. The catalog
//! reaches the data folder only through the store: the scan walks buckets with the store's
//! walker, the prober opens objects with its checked open.
//!
//! SQLite in the data folder is the default; PostgreSQL is used when a `postgres://` URL is
//! given, with the same features. SQL is written with `$N` placeholders, which both engines
//! accept, so most statements are shared; the few engine-specific ones are spelled out per
//! engine.

mod cluster;
mod events;
mod keys;
mod media_leases;
mod model;
mod notify;
mod probe;
mod scan;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;
use tokio::sync::Notify;

pub use cluster::{GatewayRow, HEARTBEAT, Heartbeat, HeldLease, gateway_id};
pub use media_leases::MediaLeases;
pub use model::{CatalogObject, MediaMeta, ObjectPage, PosterMeta, ProbeStatus, Variant};
pub use scan::{Busy, ScanReport};

use model::{NewObject, OBJECT_COLUMNS, ObjectRow};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../schema/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../schema/postgres");

/// File name of the default SQLite catalog inside `DATA/.nebula`.
pub const SQLITE_FILE: &str = "catalog.sqlite";

/// How long a query waits for a pooled connection (or SQLite for a lock) before giving up:
/// long enough to ride out a busy moment, short enough that a request gets a clear 503.
const WAIT: Duration = Duration::from_secs(5);

/// Everything that can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database is down, locked, or answered with an error.
    #[error("catalog database unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// The database was migrated by a newer gateway.
    #[error(
        "the catalog database has schema version {found}, newer than this nebula-gateway knows (up to {known}); \
         upgrade nebula-gateway, or point --database-url at another database"
    )]
    SchemaTooNew {
        /// Highest version applied to the database.
        found: i64,
        /// Highest version embedded in this binary.
        known: i64,
    },
    /// Running the migrations failed.
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The `--database-url` cannot be used.
    #[error("unsupported database URL `{0}`: use sqlite:PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    /// Reading the data folder failed during a scan.
    #[error("reading the data folder: {0}")]
    Io(#[from] std::io::Error),
}

/// Result of catalog calls.
pub type CatalogResult<T> = Result<T, CatalogError>;

/// The two supported engines.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same body against whichever pool is configured; `$pool` is bound to the pool.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Upserts `$rows` (a `Vec<NewObject>`) inside the transaction `$tx`, in statements of a few
/// hundred rows (under both engines' bind-parameter limits). Media and renditions survive only
/// if the bytes (ETag and size) are unchanged.
macro_rules! upsert_rows {
    ($tx:ident, $rows:expr, $now:expr) => {
        for chunk in $rows.chunks($crate::catalog::writer::UPSERTS_PER_STATEMENT) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO objects (bucket, key, size, etag, content_type, user_metadata, sha256, mtime_ns, \
                 created_at, modified_at, probe_status) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&r.bucket)
                    .push_bind(&r.key)
                    .push_bind(r.size)
                    .push_bind(&r.etag)
                    .push_bind(&r.content_type)
                    .push_bind(&r.user_metadata)
                    .push_bind(&r.sha256)
                    .push_bind(r.mtime_ns)
                    .push_bind($now)
                    .push_bind(r.modified_at)
                    .push_bind(r.probe_status);
            });
            qb.push($crate::catalog::UPSERT_TAIL);
            qb.build().execute(&mut *$tx).await?;
        }
    };
}
pub(crate) use upsert_rows;

/// Result of [`Catalog::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// The database answered a query.
    pub ok: bool,
    /// Why it did not.
    pub error: Option<String>,
}

/// Handle on the catalog database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Db,
    /// Wakes the background prober when a write queued a probe.
    probe_wakeup: Arc<Notify>,
    /// Group commit of the changes requests make.
    writer: writer::Writer,
    /// How often this gateway reports itself (see [`Catalog::start_heartbeat`]).
    heartbeat: Duration,
}

impl Catalog {
    /// Prepares a catalog for `database_url`, or the default SQLite file in `internal_dir`
    /// (`DATA/.nebula`). Does not connect: call [`Catalog::migrate`] next.
    pub fn connect(database_url: Option<&str>, internal_dir: &Path) -> CatalogResult<Self> {
        let db = match database_url {
            None => Db::Sqlite(sqlite_pool(
                SqliteConnectOptions::new().filename(internal_dir.join(SQLITE_FILE)),
            )),
            Some(url) if url.starts_with("sqlite:") => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(|_| CatalogError::BadUrl(url.to_owned()))?;
                Db::Sqlite(sqlite_pool(opts))
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                // The application name tells other gateways which one announced an object
                // change (see the notify trigger in schema/postgres/0004_cluster.sql).
                let opts = PgConnectOptions::from_str(url)
                    .map_err(|_| CatalogError::BadUrl(redact(url)))?
                    .application_name(gateway_id());
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(WAIT)
                    .connect_lazy_with(opts);
                Db::Postgres(pool)
            }
            Some(url) => return Err(CatalogError::BadUrl(redact(url))),
        };
        Ok(Catalog {
            db,
            probe_wakeup: Arc::new(Notify::new()),
            writer: writer::Writer::default(),
            heartbeat: HEARTBEAT,
        })
    }

    /// Opens the catalog for a serving gateway: connects and migrates, then reconciles the data
    /// folder in the background (the listener does not wait for the scan). A database that is
    /// down only degrades the start: writes are logged as not cataloged, and a background task
    /// retries until it can migrate and scan. A schema from a newer gateway or a bad URL stops
    /// the start.
    pub async fn start(
        database_url: Option<&str>,
        store: Arc<crate::store::Store>,
    ) -> CatalogResult<Self> {
        let catalog = Catalog::connect(database_url, store.internal_dir())?;
        let ready = match catalog.migrate().await {
            Ok(()) => true,
            Err(CatalogError::Database(e)) => {
                tracing::error!(engine = catalog.engine(), error = %e, "catalog database unavailable; S3 keeps working, retrying in the background");
                false
            }
            Err(e) => return Err(e),
        };
        tracing::info!(engine = catalog.engine(), ready, "catalog opened");
        let c = catalog.clone();
        tokio::spawn(async move { c.background_reconcile(store, ready).await });
        Ok(catalog)
    }

    async fn background_reconcile(self, store: Arc<crate::store::Store>, mut ready: bool) {
        const RETRY: Duration = Duration::from_secs(10);
        loop {
            if !ready {
                tokio::time::sleep(RETRY).await;
                match self.migrate().await {
                    Ok(()) => {}
                    Err(CatalogError::Database(e)) => {
                        tracing::debug!(error = %e, "catalog still unavailable");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "catalog cannot be used; restart the gateway after fixing it");
                        return;
                    }
                }
            }
            let started = std::time::Instant::now();
            match self.reconcile_with(store.clone(), Busy::Skip).await {
                Ok(report) => {
                    tracing::info!(%report, elapsed_ms = started.elapsed().as_millis() as u64, "catalog reconciled with the data folder");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "catalog reconcile failed; retrying");
                    ready = false;
                }
            }
        }
    }

    /// The pool, for modules keeping their own tables in the catalog database (the job queue).
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self.db {
            Db::Sqlite(_) => &SQLITE_MIGRATOR,
            Db::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    /// Brings the schema up to date. Refuses a database that a newer gateway migrated
    /// ([`CatalogError::SchemaTooNew`]) before touching it.
    pub async fn migrate(&self) -> CatalogResult<()> {
        let migrator = self.migrator();
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Vec<i64> = match &self.db {
            Db::Sqlite(pool) => {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
                        .fetch_optional(pool)
                        .await?;
                if exists.is_some() {
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
                        .fetch_all(pool)
                        .await?
                } else {
                    Vec::new()
                }
            }
            Db::Postgres(pool) => {
                let exists: bool =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                        .fetch_one(pool)
                        .await?;
                if exists {
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
                        .fetch_all(pool)
                        .await?
                } else {
                    Vec::new()
                }
            }
        };
        // An unknown version above ours was written by a newer gateway; an unknown one below
        // is left to the migrator, which names it.
        if let Some(&found) = applied.iter().filter(|v| **v > known).max() {
            return Err(CatalogError::SchemaTooNew { found, known });
        }
        on_pool!(&self.db, pool => migrator.run(pool).await?);
        Ok(())
    }

    /// Whether the database answers, for the health API.
    pub async fn health(&self) -> Health {
        let res: Result<i32, sqlx::Error> =
            on_pool!(&self.db, pool => sqlx::query_scalar("SELECT 1").fetch_one(pool).await);
        Health {
            engine: self.engine(),
            ok: res.is_ok(),
            error: res.err().map(|e| e.to_string()),
        }
    }

    /// The row of one object, if the catalog has it.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> CatalogResult<Option<CatalogObject>> {
        let _timer = crate::metrics::catalog_timer(crate::metrics::CatalogOp::Read);
        let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 AND key = $2");
        let row: Option<ObjectRow> = on_pool!(&self.db, pool => {
            sqlx::query_as(&sql).bind(bucket).bind(key).fetch_optional(pool).await?
        });
        Ok(row.map(CatalogObject::from))
    }

    /// Up to `limit` objects of `bucket` whose keys start with `prefix`, in key order, after
    /// `cursor` (the `next_cursor` of the previous page).
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> CatalogResult<ObjectPage> {
        let _timer = crate::metrics::catalog_timer(crate::metrics::CatalogOp::Read);
        let limit = limit.clamp(1, 10_000);
        // The range condition lets the (bucket, key) index find the start; substr checks the
        // prefix the same way on both engines (LIKE differs in case and escaping).
        let after = cursor
            .filter(|c| c.as_bytes() > prefix.as_bytes())
            .unwrap_or("");
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects \
             WHERE bucket = $1 AND key >= $2 AND key > $3 AND substr(key, 1, $4) = $2 \
             ORDER BY key LIMIT $5"
        );
        let prefix_chars = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let rows: Vec<ObjectRow> = on_pool!(&self.db, pool => {
            sqlx::query_as(&sql)
                .bind(bucket)
                .bind(prefix)
                .bind(after)
                .bind(prefix_chars)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?
        });
        let mut objects: Vec<CatalogObject> = rows.into_iter().map(CatalogObject::from).collect();
        let next_cursor = if objects.len() > limit as usize {
            objects.truncate(limit as usize);
            objects.last().map(|o| o.key.clone())
        } else {
            None
        };
        Ok(ObjectPage {
            objects,
            next_cursor,
        })
    }

    /// Records (or replaces) the rendition of `bucket/key` at `quality`. `Ok(false)` if the
    /// catalog has no such object.
    pub async fn set_variant(
        &self,
        bucket: &str,
        key: &str,
        quality: &str,
        variant: &Variant,
    ) -> CatalogResult<bool> {
        let value = Json(variant);
        let res = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("UPDATE objects SET variants = json_set(variants, '$.' || json_quote($3), json($4)) WHERE bucket = $1 AND key = $2")
                    .bind(bucket)
                    .bind(key)
                    .bind(quality)
                    .bind(value)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
            Db::Postgres(pool) => {
                sqlx::query("UPDATE objects SET variants = variants || jsonb_build_object($3::text, $4::jsonb) WHERE bucket = $1 AND key = $2")
                    .bind(bucket)
                    .bind(key)
                    .bind(quality)
                    .bind(value)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(res > 0)
    }

    /// Creates or updates the row of one object from its filesystem metadata, committed
    /// together with other requests' changes. Media and renditions survive only if the bytes
    /// (ETag and size) are unchanged.
    pub(crate) async fn upsert(&self, row: NewObject) -> Result<(), String> {
        self.apply(writer::Change::Upsert(row)).await
    }

    /// Upserts many rows in one transaction.
    pub(crate) async fn upsert_batch(&self, rows: &[NewObject]) -> CatalogResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            upsert_rows!(tx, rows, now);
            tx.commit().await?;
        });
        if rows
            .iter()
            .any(|r| r.probe_status == ProbeStatus::Pending.as_str())
        {
            self.probe_wakeup.notify_one();
        }
        Ok(())
    }

    /// Removes the row of one object (and, through the foreign key, its jobs), committed
    /// together with other requests' changes.
    pub(crate) async fn delete(&self, bucket: &str, key: &str) -> Result<(), String> {
        self.apply(writer::Change::Delete {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
        .await
    }

    /// Records a probe result, unless the object changed since it was queued (other ETag).
    pub(crate) async fn set_probe_result(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        result: Result<MediaMeta, String>,
    ) -> CatalogResult<()> {
        let now = time::OffsetDateTime::now_utc();
        let (status, media, error) = match result {
            Ok(m) => (ProbeStatus::Ok, Some(Json(m)), None),
            Err(e) => (ProbeStatus::Error, None, Some(e)),
        };
        on_pool!(&self.db, pool => {
            sqlx::query(
                "UPDATE objects SET probe_status = $4, media = $5, probe_error = $6, probed_at = $7 \
                 WHERE bucket = $1 AND key = $2 AND etag = $3",
            )
            .bind(bucket)
            .bind(key)
            .bind(etag)
            .bind(status.as_str())
            .bind(media)
            .bind(error)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The oldest object waiting for a probe: (bucket, key, etag).
    pub(crate) async fn next_pending_probe(
        &self,
    ) -> CatalogResult<Option<(String, String, String)>> {
        let row = on_pool!(&self.db, pool => {
            sqlx::query_as("SELECT bucket, key, etag FROM objects WHERE probe_status = 'pending' ORDER BY id LIMIT 1")
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }
}

/// Shared tail of the upsert: refresh the filesystem's columns, and drop media and renditions
/// when the bytes changed (they described other bytes).
pub(crate) const UPSERT_TAIL: &str = " ON CONFLICT (bucket, key) DO UPDATE SET \
    size = excluded.size, etag = excluded.etag, content_type = excluded.content_type, \
    user_metadata = excluded.user_metadata, sha256 = excluded.sha256, mtime_ns = excluded.mtime_ns, \
    modified_at = excluded.modified_at, \
    media = CASE WHEN objects.etag = excluded.etag AND objects.size = excluded.size THEN objects.media ELSE NULL END, \
    variants = CASE WHEN objects.etag = excluded.etag AND objects.size = excluded.size THEN objects.variants ELSE '{}' END, \
    probe_status = CASE WHEN objects.etag = excluded.etag AND objects.size = excluded.size AND objects.probe_status <> 'none' \
        THEN objects.probe_status ELSE excluded.probe_status END, \
    probe_error = CASE WHEN objects.etag = excluded.etag AND objects.size = excluded.size THEN objects.probe_error ELSE NULL END, \
    probed_at = CASE WHEN objects.etag = excluded.etag AND objects.size = excluded.size THEN objects.probed_at ELSE NULL END";

fn sqlite_pool(opts: SqliteConnectOptions) -> SqlitePool {
    let opts = opts
        .create_if_missing(true)
        // WAL lets readers go on while a writer commits; busy_timeout waits for a lock instead
        // of failing at once when the scan and a request write together.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(WAIT)
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(WAIT)
        .connect_lazy_with(opts)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
