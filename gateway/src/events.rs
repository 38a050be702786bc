//! Object events: every committed write and delete, told to each subscriber in turn (the
//! renditions store drops stale renditions, the catalog updates its row, the auto-transcode
//! rules queue jobs); and changes another gateway made ([`ChangedElsewhere`]), told to
//! whatever keeps a memory cache of objects.

use std::sync::Arc;

use crate::store::meta::ObjectMeta;

/// Told about every committed write and delete, within the request that made it.
/// Implementations must not fail the request: the bytes are already safe on disk, and a later
/// reconcile scan repairs anything missed.
#[async_trait::async_trait]
pub trait ObjectEvents: Send + Sync + std::fmt::Debug {
    /// An object was created or replaced.
    async fn written(&self, bucket: &str, key: &str, meta: &ObjectMeta);
    /// An object was deleted (or did not exist).
    async fn deleted(&self, bucket: &str, key: &str);
}

/// The subscribers to object events, told in the order they were added (a later one may rely
/// on an earlier one: the auto-transcode rules need the catalog's row).
#[derive(Debug, Clone, Default)]
pub struct Subscribers(Vec<Arc<dyn ObjectEvents>>);

impl Subscribers {
    /// Adds a subscriber after the others.
    pub fn push(&mut self, subscriber: Arc<dyn ObjectEvents>) {
        self.0.push(subscriber);
    }

    /// Tells every subscriber about a committed write.
    pub async fn written(&self, bucket: &str, key: &str, meta: &ObjectMeta) {
        for s in &self.0 {
            s.written(bucket, key, meta).await;
        }
    }

    /// Tells every subscriber about a delete.
    pub async fn deleted(&self, bucket: &str, key: &str) {
        for s in &self.0 {
            s.deleted(bucket, key).await;
        }
    }
}

/// Told about objects another gateway sharing the data folder changed (announced through the
/// catalog database), so memory caches drop what they hold of them. Called on tokio's
/// blocking pool: an implementation may touch the filesystem.
pub trait ChangedElsewhere: Send + Sync + std::fmt::Debug {
    /// `bucket/key` was written or deleted by another gateway.
    fn changed_elsewhere(&self, bucket: &str, key: &str);
    /// Announcements may have been missed (the database connection was lost): drop everything.
    fn forget_all(&self);
}

impl ChangedElsewhere for crate::store::Store {
    fn changed_elsewhere(&self, bucket: &str, key: &str) {
        self.forget_object(bucket, key);
    }

    fn forget_all(&self) {
        crate::store::Store::forget_all(self);
    }
}
