//! The media service's claims as catalog leases: with gateways sharing a PostgreSQL catalog
//! (and the data folder), one gateway at a time produces a rendition, a poster or an HLS
//! segment, and the others wait for its file (`nebula_media`'s `claims.rs`).

use std::time::Duration;

use nebula_media::{Claim, Claims};
use tokio::runtime::Handle;

use super::{Catalog, HeldLease};

/// A media lease's time to live; the holder renews it every third of this. A gateway that
/// died holding one is taken over by the gateways waiting for its file this long after its
/// last renewal, within the 30 s they wait for a segment.
const MEDIA_LEASE: Duration = Duration::from_secs(15);

/// Claims of the media service, each a lease `media:<name>` in the catalog.
#[derive(Debug, Clone)]
pub struct MediaLeases {
    catalog: Catalog,
    rt: Handle,
}

impl MediaLeases {
    /// Leases in `catalog`, renewed on the runtime `rt` (claims are asked for on blocking
    /// threads, outside it).
    pub fn new(catalog: Catalog, rt: Handle) -> Self {
        MediaLeases { catalog, rt }
    }
}

/// A held media lease. Dropped on any thread: the release is sent from inside the runtime.
struct MediaClaim {
    lease: Option<HeldLease>,
    rt: Handle,
}

impl Drop for MediaClaim {
    fn drop(&mut self) {
        let _inside = self.rt.enter();
        drop(self.lease.take());
    }
}

impl Claims for MediaLeases {
    fn try_claim(&self, name: &str) -> Option<Claim> {
        let lease = format!("media:{name}");
        match self
            .rt
            .block_on(self.catalog.hold_lease(&lease, MEDIA_LEASE))
        {
            Ok(Some(held)) => Some(Box::new(MediaClaim {
                lease: Some(held),
                rt: self.rt.clone(),
            })),
            Ok(None) => None,
            Err(e) => {
                // Producing twice gives the same bytes; refusing would fail the request.
                tracing::warn!(lease, error = %e, "media lease not taken; producing without it");
                Some(Box::new(()))
            }
        }
    }
}
