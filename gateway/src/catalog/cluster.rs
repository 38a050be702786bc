//! Several gateways on one database: each reports itself in the `gateways` table and refreshes
//! its row with a heartbeat, and named leases let one gateway at a time do a piece of work that
//! must not run twice at once (a bucket's reconcile scan, a sweep).
//!
//! Times are taken from the database's clock ([`Catalog::now_sql`]), never the gateway's, so
//! gateways whose clocks disagree still agree on which lease expired and who is stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Catalog, CatalogResult, Db, on_pool};

/// How often a gateway refreshes its row, unless told otherwise (`--heartbeat-secs`).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// A gateway that missed this many heartbeats is shown as stale (it was killed, or cannot
/// reach the database).
const STALE_BEATS: u32 = 3;

/// Rows of gateways silent for this long are removed: a stale gateway stays visible for a
/// day, long enough to be noticed.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// This process's name among the gateways and lease holders: `host:pid` (unique per
/// container too, whose hostname is its id). Job workers are named from the same parts.
pub fn gateway_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{}", std::process::id())
    })
}

/// One gateway's row, as read back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GatewayRow {
    /// `host:pid`.
    pub id: String,
    /// Its version.
    pub version: String,
    /// JSON array of the URLs it serves on.
    pub addresses: String,
    /// When it started (ms since the epoch, database clock).
    pub started_ms: i64,
    /// Its last heartbeat (ms since the epoch, database clock).
    pub heartbeat_ms: i64,
}

impl GatewayRow {
    /// The URLs it serves on.
    pub fn address_list(&self) -> Vec<String> {
        serde_json::from_str(&self.addresses).unwrap_or_default()
    }
}

impl Catalog {
    /// The engine's expression for "now" in ms since the epoch, by the database's clock.
    fn now_sql(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Db::Postgres(_) => "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// A gateway whose heartbeat is older than this is stale: three of this gateway's
    /// heartbeat periods (the gateways of one cluster are meant to share the setting).
    pub fn stale_after(&self) -> Duration {
        self.heartbeat * STALE_BEATS
    }

    /// Records this gateway (replacing an earlier row of the same id) and starts its
    /// heartbeat, every `period`. A database that is down is retried by the heartbeat.
    pub fn start_heartbeat(&mut self, addresses: Vec<String>, period: Duration) -> Heartbeat {
        self.heartbeat = period;
        let stop = Arc::new(AtomicBool::new(false));
        let catalog = self.clone();
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let addresses = serde_json::to_string(&addresses).unwrap_or_else(|_| "[]".into());
            let mut registered = false;
            while !stopping.load(Ordering::SeqCst) {
                let res = if registered {
                    catalog.beat(&addresses).await
                } else {
                    catalog.register(&addresses).await
                };
                match res {
                    Ok(()) => registered = true,
                    Err(e) => tracing::debug!(error = %e, "gateway heartbeat not recorded"),
                }
                tokio::time::sleep(period).await;
            }
        });
        Heartbeat {
            catalog: self.clone(),
            stop,
            task,
        }
    }

    async fn register(&self, addresses: &str) -> CatalogResult<()> {
        let now = self.now_sql();
        let sql = format!(
            "INSERT INTO gateways (id, version, addresses, started_ms, heartbeat_ms) \
             VALUES ($1, $2, $3, {now}, {now}) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, addresses = excluded.addresses, \
             started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms"
        );
        on_pool!(&self.db, pool => {
            sqlx::query(&sql)
                .bind(gateway_id())
                .bind(env!("CARGO_PKG_VERSION"))
                .bind(addresses)
                .execute(pool)
                .await?;
        });
        tracing::info!(gateway = gateway_id(), "gateway registered in the catalog");
        Ok(())
    }

    /// Refreshes this gateway's row (re-creating it if it was removed), and forgets gateways
    /// silent for a day.
    async fn beat(&self, addresses: &str) -> CatalogResult<()> {
        let now = self.now_sql();
        let updated = on_pool!(&self.db, pool => {
            sqlx::query(&format!("UPDATE gateways SET heartbeat_ms = {now} WHERE id = $1"))
                .bind(gateway_id())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            self.register(addresses).await?;
        }
        let forget = i64::try_from(FORGET_AFTER.as_millis()).unwrap_or(i64::MAX);
        on_pool!(&self.db, pool => {
            sqlx::query(&format!("DELETE FROM gateways WHERE heartbeat_ms < {now} - $1"))
                .bind(forget)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every gateway of the cluster, by id, and the database's "now" (ms) to age them against.
    pub async fn gateways(&self) -> CatalogResult<(i64, Vec<GatewayRow>)> {
        let now = self.now_sql();
        let (now_ms, rows) = on_pool!(&self.db, pool => {
            let now_ms: i64 = sqlx::query_scalar(&format!("SELECT {now}")).fetch_one(pool).await?;
            let rows: Vec<GatewayRow> = sqlx::query_as(
                "SELECT id, version, addresses, started_ms, heartbeat_ms FROM gateways ORDER BY started_ms, id",
            )
            .fetch_all(pool)
            .await?;
            (now_ms, rows)
        });
        Ok((now_ms, rows))
    }

    /// Takes (or extends) the lease `name` for `holder` until `ttl` from now, if nobody else
    /// holds it or the other holder's lease expired. `true` when `holder` holds it now.
    ///
    /// The lease is a row, so it survives its holder: a holder that dies simply stops
    /// renewing, and once `ttl` has passed anyone may take the work over. Holders renew with
    /// the same call well before `ttl` runs out, and end with [`Catalog::release_lease`].
    pub async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> CatalogResult<bool> {
        let now = self.now_sql();
        let sql = format!(
            "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_ms < {now} \
             RETURNING holder"
        );
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let got: Option<String> = on_pool!(&self.db, pool => {
            sqlx::query_scalar(&sql)
                .bind(name)
                .bind(holder)
                .bind(ttl)
                .fetch_optional(pool)
                .await?
        });
        Ok(got.is_some())
    }

    /// Gives the lease `name` up, if `holder` holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> CatalogResult<()> {
        on_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The holder of lease `name` and the ms left on it, if it is held and not expired.
    pub async fn lease_holder(&self, name: &str) -> CatalogResult<Option<(String, i64)>> {
        let now = self.now_sql();
        let sql = format!(
            "SELECT holder, expires_ms - {now} FROM leases WHERE name = $1 AND expires_ms >= {now}"
        );
        let row: Option<(String, i64)> = on_pool!(&self.db, pool => {
            sqlx::query_as(&sql).bind(name).fetch_optional(pool).await?
        });
        Ok(row)
    }

    /// Takes the lease `name` for this process and keeps renewing it (every third of `ttl`)
    /// until the returned guard is dropped, which gives it up. `None` if another holder has
    /// it. If renewing fails (database down, or the lease was taken over after a renewal came
    /// too late) [`HeldLease::lost`] turns true: the work should stop.
    pub async fn hold_lease(&self, name: &str, ttl: Duration) -> CatalogResult<Option<HeldLease>> {
        let holder = gateway_id();
        if !self.try_lease(name, holder, ttl).await? {
            return Ok(None);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (catalog, lease, flag) = (self.clone(), name.to_owned(), lost.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match catalog.try_lease(&lease, holder, ttl).await {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        tracing::warn!(lease, "lease lost: it could not be renewed in time");
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
        Ok(Some(HeldLease {
            catalog: self.clone(),
            name: name.to_owned(),
            lost,
            renew,
        }))
    }
}

/// A lease this process holds and renews; dropping it gives the lease up.
#[derive(Debug)]
pub struct HeldLease {
    catalog: Catalog,
    name: String,
    lost: Arc<AtomicBool>,
    renew: tokio::task::JoinHandle<()>,
}

impl HeldLease {
    /// True once a renewal failed: another holder may have the work now.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Gives the lease up and waits until the database has it (dropping the guard does the
    /// same in the background, which a process about to exit may not wait for).
    pub async fn release(mut self) {
        self.renew.abort();
        let name = std::mem::take(&mut self.name);
        if let Err(e) = self.catalog.release_lease(&name, gateway_id()).await {
            tracing::debug!(lease = name, error = %e, "lease not released; it expires");
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renew.abort();
        if self.name.is_empty() {
            return;
        }
        let (catalog, name) = (self.catalog.clone(), std::mem::take(&mut self.name));
        // Best effort: if the release does not happen, the lease expires.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = catalog.release_lease(&name, gateway_id()).await;
            });
        }
    }
}

/// This gateway's heartbeat; [`Heartbeat::stop`] removes its row at a clean shutdown.
#[derive(Debug)]
pub struct Heartbeat {
    catalog: Catalog,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Stops the heartbeat and removes this gateway's row: a gateway that stopped cleanly is
    /// gone, not stale (a killed one stays listed as stale).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
        let res = on_pool!(&self.catalog.db, pool => {
            sqlx::query("DELETE FROM gateways WHERE id = $1")
                .bind(gateway_id())
                .execute(pool)
                .await
                .map(|_| ())
        });
        if let Err(e) = res {
            tracing::debug!(error = %e, "gateway row not removed at shutdown");
        }
    }
}
