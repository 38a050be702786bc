//! Group commit of the catalog changes that S3 writes and deletes make.
//!
//! Every request still waits for its own change to be committed, but the changes that arrive
//! while one transaction runs are committed together in the next one, in arrival order. With
//! eight clients writing small objects, one transaction carries about eight rows instead of
//! eight transactions carrying one each: each costs a round trip to the database (and to
//! SQLite's worker thread) several times over.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::model::NewObject;
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Sqlite};

use super::{Catalog, CatalogResult, Db, upsert_rows};

/// Most changes one transaction carries.
const MAX_BATCH: usize = 256;

/// Rows one upsert statement carries (under both engines' bind-parameter limits).
pub(crate) const UPSERTS_PER_STATEMENT: usize = 200;

/// A change to the objects table.
#[derive(Debug)]
pub(crate) enum Change {
    /// Create or update the row of an object.
    Upsert(NewObject),
    /// Remove the row of an object.
    Delete {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
    },
}

/// The writer's own connection, kept from batch to batch: one taken from the pool for every
/// batch costs a liveness check (a round trip to the database) on top of the batch.
enum Held {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// Runs the same body on whichever connection is held; `$c` is bound to it.
macro_rules! on_held {
    ($held:expr, $c:ident => $body:expr) => {
        match $held {
            Held::Sqlite($c) => $body,
            Held::Postgres($c) => $body,
        }
    };
}

struct Queued {
    change: Change,
    /// Told the outcome of the transaction that carried the change.
    done: oneshot::Sender<Result<(), String>>,
}

/// The queue into the writer task, started on first use (it needs a runtime).
#[derive(Debug, Clone, Default)]
pub(crate) struct Writer {
    tx: Arc<OnceLock<mpsc::UnboundedSender<Queued>>>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.change.fmt(f)
    }
}

impl Catalog {
    /// Commits `change` together with whatever other changes are waiting, and returns once
    /// it is committed (or the transaction failed).
    pub(crate) async fn apply(&self, change: Change) -> Result<(), String> {
        let _timer = crate::metrics::catalog_timer(crate::metrics::CatalogOp::Write);
        let tx = self.writer.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().write_loop(rx));
            tx
        });
        let (done, outcome) = oneshot::channel();
        tx.send(Queued { change, done })
            .map_err(|_| "the catalog writer has stopped".to_owned())?;
        outcome
            .await
            .unwrap_or_else(|_| Err("the catalog writer has stopped".to_owned()))
    }

    async fn write_loop(self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let mut held: Option<Held> = None;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let (changes, waiters): (Vec<Change>, Vec<_>) =
                batch.into_iter().map(|q| (q.change, q.done)).unzip();
            let outcome = match held.take() {
                Some(c) => Ok(c),
                None => self.hold().await,
            };
            let outcome = match outcome {
                Ok(mut conn) => {
                    let res = self.commit_changes(&mut conn, changes).await;
                    // A connection that failed a batch is not trusted with the next one.
                    if res.is_ok() {
                        held = Some(conn);
                    }
                    res
                }
                Err(e) => Err(e),
            }
            .map_err(|e| e.to_string());
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }

    async fn hold(&self) -> CatalogResult<Held> {
        Ok(match &self.db {
            Db::Sqlite(pool) => Held::Sqlite(pool.acquire().await?),
            Db::Postgres(pool) => Held::Postgres(pool.acquire().await?),
        })
    }

    /// Applies `changes` in order in one transaction: runs of upserts go in multi-row
    /// statements, deletes one by one. A batch of upserts that fits one statement is sent
    /// without BEGIN and COMMIT (a statement is a transaction of its own): one round trip to
    /// the database instead of three.
    async fn commit_changes(&self, conn: &mut Held, changes: Vec<Change>) -> CatalogResult<()> {
        let mut probes = false;
        let now = time::OffsetDateTime::now_utc();
        if changes.len() <= UPSERTS_PER_STATEMENT
            && changes.iter().all(|c| matches!(c, Change::Upsert(_)))
        {
            let mut rows: Vec<NewObject> = Vec::with_capacity(changes.len());
            for change in changes {
                if let Change::Upsert(row) = change {
                    rows.retain(|r| r.bucket != row.bucket || r.key != row.key);
                    probes |= row.probe_status == super::ProbeStatus::Pending.as_str();
                    rows.push(row);
                }
            }
            on_held!(conn, c => {
                let c = &mut **c;
                upsert_rows!(c, rows, now);
            });
            if probes {
                self.probe_wakeup.notify_one();
            }
            return Ok(());
        }
        on_held!(conn, c => {
            let mut tx = sqlx::Connection::begin(&mut **c).await?;
            let mut run: Vec<NewObject> = Vec::new();
            for change in changes {
                match change {
                    Change::Upsert(row) => {
                        // One statement may not touch a row twice (PostgreSQL refuses): a
                        // later write of the same key replaces the earlier one in the run.
                        run.retain(|r| r.bucket != row.bucket || r.key != row.key);
                        probes |= row.probe_status == super::ProbeStatus::Pending.as_str();
                        run.push(row);
                    }
                    Change::Delete { bucket, key } => {
                        upsert_rows!(tx, std::mem::take(&mut run), now);
                        sqlx::query("DELETE FROM objects WHERE bucket = $1 AND key = $2")
                            .bind(bucket)
                            .bind(key)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            upsert_rows!(tx, run, now);
            tx.commit().await?;
        });
        if probes {
            self.probe_wakeup.notify_one();
        }
        Ok(())
    }
}
