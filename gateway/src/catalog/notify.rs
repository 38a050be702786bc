//! Cross-gateway invalidation: a trigger on the objects table (PostgreSQL only, see
//! `schema/postgres/0004_cluster.sql`) sends `NOTIFY nebula_objects` with the bucket and key of
//! every change when it commits; each gateway listens and tells its memory caches to drop what
//! they hold of the object. The changing gateway's own announcements are skipped (its caches
//! were updated by the write itself).
//!
//! The trigger sits in the write's own statement, so announcing costs no extra round trip; the
//! object events path reaches it through the catalog's group commit. A change the database
//! never saw (it was down) is not announced: the caches' filesystem stamps remain the first
//! line, this is the second. When the listening connection drops, announcements sent
//! meanwhile are lost, so the caches are emptied whole.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;

use super::{Catalog, Db, gateway_id};
use crate::events::ChangedElsewhere;

/// The channel the trigger notifies.
const CHANNEL: &str = "nebula_objects";

/// Announcements handled in one trip to the blocking pool at most.
const BATCH: usize = 256;

#[derive(serde::Deserialize)]
struct Announcement {
    /// The announcing gateway's id (its connections' application name).
    g: String,
    b: String,
    k: String,
}

impl Catalog {
    /// Listens for other gateways' object changes and tells `targets` (PostgreSQL only: with
    /// SQLite this gateway is the only one).
    pub fn start_change_listener(&self, targets: Vec<Arc<dyn ChangedElsewhere>>) {
        let Db::Postgres(pool) = &self.db else {
            return;
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                match listen(&pool, &targets).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "not listening for other gateways' changes; retrying (until then caches rely on file stamps)");
                        forget_all(&targets).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        });
    }
}

async fn listen(pool: &sqlx::PgPool, targets: &[Arc<dyn ChangedElsewhere>]) -> sqlx::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    tracing::info!("listening for other gateways' object changes");
    loop {
        // `None`: the connection was lost; the next call reconnects and listens again.
        let Some(first) = listener.try_recv().await? else {
            tracing::warn!(
                "lost the database connection that announces other gateways' changes; memory caches emptied"
            );
            forget_all(targets).await;
            continue;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH
            && let Some(n) = listener.next_buffered()
        {
            batch.push(n);
        }
        let changes: Vec<(String, String)> = batch
            .iter()
            .filter_map(|n| serde_json::from_str::<Announcement>(n.payload()).ok())
            .filter(|a| a.g != gateway_id())
            .map(|a| (a.b, a.k))
            .collect();
        if changes.is_empty() {
            continue;
        }
        crate::metrics::remote_changes(changes.len());
        let targets = targets.to_vec();
        let _ = tokio::task::spawn_blocking(move || {
            for (bucket, key) in &changes {
                for t in &targets {
                    t.changed_elsewhere(bucket, key);
                }
            }
        })
        .await;
    }
}

async fn forget_all(targets: &[Arc<dyn ChangedElsewhere>]) {
    let targets = targets.to_vec();
    let _ = tokio::task::spawn_blocking(move || {
        for t in &targets {
            t.forget_all();
        }
    })
    .await;
}
