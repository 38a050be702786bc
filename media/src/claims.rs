//! One producer of a rendition, poster or HLS segment across every process that shares the
//! renditions folder (several gateways on one shared filesystem).
//!
//! Inside one process the service already runs one pipeline per rendition and per HLS
//! session; across processes it asks a [`Claims`] given by its owner (the gateway, with leases
//! in its shared database) before starting one. A process refused a claim waits for the file
//! the holder writes into the shared folder, asking again as it waits, so it takes the work
//! over once a holder that died lost its claim.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Held while this process produces what it claimed; dropping it gives the claim up.
pub type Claim = Box<dyn Send + Sync>;

/// How often a process refused a claim looks for the holder's file and asks again.
pub(crate) const CLAIM_POLL: Duration = Duration::from_millis(200);

/// Who produces what, across processes sharing the renditions folder.
pub trait Claims: Send + Sync + std::fmt::Debug {
    /// Claims `name` for this process: `Some` while this process produces it (until the
    /// claim is dropped), `None` when another process holds it. Blocking (called on blocking
    /// threads). A claim that cannot be decided (the database is down) should be granted:
    /// producing twice gives the same bytes, installed by rename, while a stall fails requests.
    fn try_claim(&self, name: &str) -> Option<Claim>;
}

/// Pipelines this process started, and requests that waited for another process's work,
/// since the start. Counted for the metrics.
#[derive(Debug, Default)]
pub struct Produced {
    /// Live transcodes started (`?quality=`).
    pub live_transcodes: AtomicU64,
    /// Posters taken.
    pub posters: AtomicU64,
    /// HLS segment runs started.
    pub hls_runs: AtomicU64,
    /// Requests that found their rendition, poster or segment claimed by another process
    /// and waited for its file.
    pub waited_elsewhere: AtomicU64,
}

/// The service's claims and counters, shared with its HLS sessions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claimer {
    claims: Option<Arc<dyn Claims>>,
    pub(crate) produced: Arc<Produced>,
}

impl Claimer {
    pub(crate) fn new(claims: Option<Arc<dyn Claims>>) -> Self {
        Claimer {
            claims,
            produced: Arc::default(),
        }
    }

    /// Claims `name`; always granted without [`Claims`] (one process). A refusal is counted.
    pub(crate) fn claim(&self, name: &str) -> Option<Claim> {
        let Some(claims) = &self.claims else {
            return Some(Box::new(()));
        };
        let claim = claims.try_claim(name);
        if claim.is_none() {
            tracing::debug!(
                claim = name,
                "produced by another process; waiting for its file"
            );
        }
        claim
    }

    /// Counts a request that waited for another process's work (once per request).
    pub(crate) fn waited(&self) {
        self.produced
            .waited_elsewhere
            .fetch_add(1, Ordering::Relaxed);
    }
}
