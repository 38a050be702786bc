//! The reconcile scan: brings the catalog in line with the data folder after out-of-band
//! changes, missed events (database down) or a lost database.
//!
//! Per bucket: load the catalog's (key, size, mtime) into memory, walk the folder with the
//! store's walker (so the catalog holds exactly what a listing shows), read the metadata only of
//! files that are new or whose size or mtime changed, upsert those in batches, and delete rows
//! whose files are gone. Unchanged files cost one `statx` each, so a rescan of 100k files is
//! quick; batches run inside transactions. All file access goes through the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::model::NewObject;
use super::{Catalog, CatalogError, CatalogResult, Db, on_pool};
use crate::store::Store;
use crate::store::StoreError;
use crate::store::keys::parse_key;
use crate::store::walk::Walker;

/// Rows read and written per transaction.
const BATCH: usize = 500;

/// How long a bucket's scan lease lasts without renewal (renewed every third of it): a
/// gateway killed mid-scan holds its buckets this long at most.
const SCAN_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// What to do about a bucket another gateway (or a `reindex`) is scanning right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Wait until it is done, then scan it too (`reindex`: its report covers every bucket).
    Wait,
    /// Pass it over: the other scan covers the same folder (a gateway's start scan).
    Skip,
}

/// What a scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Buckets walked.
    pub buckets: u64,
    /// Rows created for objects the catalog did not have.
    pub added: u64,
    /// Rows refreshed because the file's size or mtime changed.
    pub updated: u64,
    /// Rows deleted because the file (or its bucket) is gone.
    pub removed: u64,
    /// Objects already in step.
    pub unchanged: u64,
    /// Buckets passed over because another gateway was scanning them (start scans only).
    pub busy: u64,
}

impl std::fmt::Display for ScanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} buckets: {} added, {} updated, {} removed, {} unchanged",
            self.buckets, self.added, self.updated, self.removed, self.unchanged
        )?;
        if self.busy > 0 {
            write!(
                f,
                ", {} passed over (another gateway was scanning them)",
                self.busy
            )?;
        }
        Ok(())
    }
}

/// An object found on disk.
#[derive(Debug)]
struct Found {
    key: String,
    size: i64,
    /// `None` for empty folder markers: a folder's mtime moves with its children, not with the
    /// marker.
    mtime_ns: Option<i64>,
}

impl Catalog {
    /// Walks every bucket and brings the catalog in step with the data folder, waiting for
    /// buckets that another gateway is scanning.
    pub async fn reconcile(&self, store: Arc<Store>) -> CatalogResult<ScanReport> {
        self.reconcile_with(store, Busy::Wait).await
    }

    /// [`Catalog::reconcile`], deciding what to do about buckets another gateway is scanning.
    /// A bucket is scanned under the lease `reconcile:<bucket>`, so no two scans (of
    /// gateways sharing the database, or a `reindex`) walk it at the same moment.
    pub async fn reconcile_with(&self, store: Arc<Store>, busy: Busy) -> CatalogResult<ScanReport> {
        let mut report = ScanReport::default();
        let s = store.clone();
        let buckets = run_blocking(move || s.list_buckets().map_err(store_io)).await?;
        for b in &buckets {
            self.reconcile_leased(&store, &b.name, busy, &mut report)
                .await?;
            report.buckets += 1;
        }
        let listed: HashSet<&str> = buckets.iter().map(|b| b.name.as_str()).collect();
        self.reconcile_unlisted(&store, &listed, busy, &mut report)
            .await?;
        Ok(report)
    }

    /// Scans `bucket` under its lease.
    async fn reconcile_leased(
        &self,
        store: &Arc<Store>,
        bucket: &str,
        busy: Busy,
        report: &mut ScanReport,
    ) -> CatalogResult<()> {
        let name = format!("reconcile:{bucket}");
        let mut waited = false;
        let lease = loop {
            if let Some(lease) = self.hold_lease(&name, SCAN_LEASE).await? {
                break lease;
            }
            if busy == Busy::Skip {
                tracing::info!(
                    bucket,
                    "another gateway is scanning this bucket; passed over"
                );
                report.busy += 1;
                return Ok(());
            }
            if !waited {
                tracing::info!(
                    bucket,
                    "another gateway is scanning this bucket; waiting for it"
                );
                waited = true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        let res = self.reconcile_bucket(store, bucket, report).await;
        lease.release().await;
        res
    }

    /// Rows of buckets the listing at the start of the scan did not show. Such a bucket may
    /// have been created since (a client's first upload to a new gateway), so its rows go
    /// through the per-key check of [`Catalog::reconcile_bucket`] rather than being dropped
    /// as a whole: only rows whose object is not on disk are deleted.
    pub(super) async fn reconcile_unlisted(
        &self,
        store: &Arc<Store>,
        listed: &HashSet<&str>,
        busy: Busy,
        report: &mut ScanReport,
    ) -> CatalogResult<()> {
        let known: Vec<String> = on_pool!(&self.db, pool => sqlx::query_scalar("SELECT DISTINCT bucket FROM objects").fetch_all(pool).await?);
        for bucket in known.iter().filter(|b| !listed.contains(b.as_str())) {
            self.reconcile_leased(store, bucket, busy, report).await?;
        }
        Ok(())
    }

    async fn reconcile_bucket(
        &self,
        store: &Arc<Store>,
        bucket: &str,
        report: &mut ScanReport,
    ) -> CatalogResult<()> {
        let rows: Vec<(String, i64, i64)> = on_pool!(&self.db, pool => {
            sqlx::query_as("SELECT key, size, mtime_ns FROM objects WHERE bucket = $1").bind(bucket).fetch_all(pool).await?
        });
        let mut known: HashMap<String, (i64, i64)> =
            rows.into_iter().map(|(k, s, m)| (k, (s, m))).collect();

        let (s, b) = (store.clone(), bucket.to_owned());
        let found = run_blocking(move || walk_bucket(&s, &b)).await?;

        let mut changed: Vec<(String, bool)> = Vec::new();
        for f in found {
            match known.remove(&f.key) {
                Some((size, mtime)) if size == f.size && f.mtime_ns.is_none_or(|m| m == mtime) => {
                    report.unchanged += 1
                }
                Some(_) => changed.push((f.key, false)),
                None => changed.push((f.key, true)),
            }
        }

        for chunk in changed.chunks(BATCH) {
            let (s, b, keys) = (store.clone(), bucket.to_owned(), chunk.to_vec());
            let rows = run_blocking(move || Ok(read_rows(&s, &b, &keys))).await?;
            self.upsert_batch(&rows.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>())
                .await?;
            for (_, added) in &rows {
                if *added {
                    report.added += 1;
                } else {
                    report.updated += 1;
                }
            }
        }

        // What the walk did not see is gone, unless a request wrote it since the walk began.
        let (s, b) = (store.clone(), bucket.to_owned());
        let candidates: Vec<String> = known.into_keys().collect();
        let gone = run_blocking(move || {
            Ok(candidates
                .into_iter()
                .filter(|k| !exists(&s, &b, k))
                .collect::<Vec<_>>())
        })
        .await?;
        for chunk in gone.chunks(BATCH) {
            on_pool!(&self.db, pool => {
                let mut tx = pool.begin().await?;
                for key in chunk {
                    report.removed += sqlx::query("DELETE FROM objects WHERE bucket = $1 AND key = $2")
                        .bind(bucket)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
            });
        }
        Ok(())
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> CatalogResult<T> + Send + 'static,
) -> CatalogResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CatalogError::Io(std::io::Error::other(e)))?
}

fn store_io(e: StoreError) -> CatalogError {
    match e {
        StoreError::Io(e) | StoreError::NoSpace(e) => CatalogError::Io(e),
        other => CatalogError::Io(std::io::Error::other(other.to_string())),
    }
}

/// Reads the S3 metadata of changed objects (computing it for files that arrived out of band).
/// Objects that vanished or cannot be read are left out; the next scan sees them again.
fn read_rows(store: &Store, bucket: &str, keys: &[(String, bool)]) -> Vec<(NewObject, bool)> {
    let mut out = Vec::with_capacity(keys.len());
    for (key, added) in keys {
        let Ok(path) = parse_key(key) else { continue };
        match store.open_object(bucket, &path) {
            Ok(h) => {
                let mut meta = h.meta;
                meta.size = h.size;
                out.push((NewObject::from_meta(bucket, key, &meta), *added));
            }
            Err(StoreError::NoSuchKey) => {}
            Err(e) => tracing::warn!(bucket, key, error = %e, "reconcile: cannot read object"),
        }
    }
    out
}

/// True when the object `key` is on disk (file, or folder for markers).
fn exists(store: &Store, bucket: &str, key: &str) -> bool {
    parse_key(key).is_ok_and(|path| store.object_exists(bucket, &path))
}

/// Every object below a bucket folder, as a listing finds them (the store's [`Walker`]): regular
/// files, plus folders that carry folder-marker metadata. Symlinks, the gateway's temp folders
/// and names that are not valid keys are passed over. A bucket removed meanwhile has none.
fn walk_bucket(store: &Store, bucket: &str) -> CatalogResult<Vec<Found>> {
    let mut walker = match Walker::new(store, bucket, "", None) {
        Ok(w) => w,
        Err(StoreError::NoSuchBucket) => return Ok(Vec::new()),
        Err(e) => return Err(store_io(e)),
    };
    let mut out = Vec::new();
    while let Some(entry) = walker.next_entry().map_err(store_io)? {
        if entry.is_folder_marker() {
            out.push(Found {
                key: entry.key,
                size: 0,
                mtime_ns: None,
            });
            continue;
        }
        // Vanished since its folder was read: the next scan agrees.
        let Some(st) = walker.stat(&entry).map_err(store_io)? else {
            continue;
        };
        out.push(Found {
            key: entry.key,
            size: i64::try_from(st.size).unwrap_or(i64::MAX),
            mtime_ns: Some(i64::try_from(st.mtime_ns).unwrap_or(0)),
        });
    }
    Ok(out)
}
