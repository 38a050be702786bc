//! Keeps the catalog in step with S3 writes and deletes, within the request.

use super::Catalog;
use super::model::NewObject;
use crate::events::ObjectEvents;
use crate::store::meta::ObjectMeta;

#[async_trait::async_trait]
impl ObjectEvents for Catalog {
    async fn written(&self, bucket: &str, key: &str, meta: &ObjectMeta) {
        // The bytes are committed already: a database problem must not fail the request.
        // The reconcile scan at the next start (or `reindex`) repairs the row.
        if let Err(e) = self.upsert(NewObject::from_meta(bucket, key, meta)).await {
            tracing::warn!(bucket, key, error = %e, "catalog not updated after write; the next reconcile repairs it");
        }
    }

    async fn deleted(&self, bucket: &str, key: &str) {
        if let Err(e) = self.delete(bucket, key).await {
            tracing::warn!(bucket, key, error = %e, "catalog not updated after delete; the next reconcile repairs it");
        }
    }
}
