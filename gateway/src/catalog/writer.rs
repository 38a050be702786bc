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
use super::{Catalog, CatalogResult, Db, on_pool, upsert_rows};

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
            let outcome = self
                .commit_changes(changes)
                .await
                .map_err(|e| e.to_string());
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }

    /// Applies `changes` in order in one transaction: runs of upserts go in multi-row
    /// statements, deletes one by one. A batch of upserts that fits one statement is sent
    /// without BEGIN and COMMIT (a statement is a transaction of its own): one round trip to
    /// the database instead of three.
    async fn commit_changes(&self, changes: Vec<Change>) -> CatalogResult<()> {
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
            on_pool!(&self.db, pool => {
                let mut conn = pool.acquire().await?;
                upsert_rows!(conn, rows, now);
            });
            if probes {
                self.probe_wakeup.notify_one();
            }
            return Ok(());
        }
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
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
