//! The scoped access keys' document in the catalog database (table `access_keys`), used when
//! several gateways share a PostgreSQL catalog. The access layer owns the document's format.

use super::{Catalog, CatalogResult, Db, on_pool};

impl Catalog {
    /// The generation of the access keys' document: every change bumps it.
    pub async fn access_keys_generation(&self) -> CatalogResult<i64> {
        Ok(on_pool!(self.db(), pool => {
            sqlx::query_scalar("SELECT generation FROM access_keys WHERE id = 1")
                .fetch_one(pool)
                .await?
        }))
    }

    /// The access keys' document and its generation.
    pub async fn access_keys_read(&self) -> CatalogResult<(String, i64)> {
        Ok(on_pool!(self.db(), pool => {
            sqlx::query_as("SELECT document, generation FROM access_keys WHERE id = 1")
                .fetch_one(pool)
                .await?
        }))
    }

    /// Reads the document, lets `change` compute the new one, and writes it with the next
    /// generation, in one transaction (the row locked on PostgreSQL, so two gateways' changes
    /// never overwrite each other). `change` returning `None` writes nothing.
    pub async fn update_access_keys<T>(
        &self,
        change: impl FnOnce(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> CatalogResult<T> {
        macro_rules! update {
            ($pool:expr, $select:expr) => {{
                let mut tx = $pool.begin().await?;
                let (doc, generation): (String, i64) =
                    sqlx::query_as($select).fetch_one(&mut *tx).await?;
                let (new, out) = change(Some(doc.as_bytes()));
                if let Some(new) = new {
                    let text = String::from_utf8_lossy(&new).into_owned();
                    sqlx::query(
                        "UPDATE access_keys SET document = $1, generation = $2 WHERE id = 1",
                    )
                    .bind(text)
                    .bind(generation + 1)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                out
            }};
        }
        Ok(match self.db() {
            Db::Sqlite(pool) => update!(
                pool,
                "SELECT document, generation FROM access_keys WHERE id = 1"
            ),
            Db::Postgres(pool) => update!(
                pool,
                "SELECT document, generation FROM access_keys WHERE id = 1 FOR UPDATE"
            ),
        })
    }
}
