//! Nebula gateway: S3 over a transparent filesystem, with media extensions.
//!
//! Layout: `s3/` answers S3 (one operation family per file; `s3/media.rs` adapts the media
//! extension of GetObject), `access/` decides who may do what (keys, the classification of
//! every operation, the one check; wired into s3s by `auth.rs`), `store/` maps keys to paths
//! and does all raw I/O, `events.rs` fans
//! committed writes and deletes out to their subscribers (renditions store, catalog,
//! auto-transcode rules), `catalog/` mirrors objects in a database, `jobs/` queues and runs
//! background transcodes, `api/` is the JSON API. Every media step itself is in the
//! `nebula-media` crate; nothing there depends on the gateway.
//!
//! Errors are typed per layer: the store raises [`store::StoreError`] (what the data folder
//! refused or failed at: no such bucket, key or upload, a bad or conflicting key, a full disk,
//! other I/O), the S3 layer raises [`s3::RequestError`] for the protocol's own checks, and
//! `s3/error.rs` maps both, and the media extension's errors, once to the S3 code, status and
//! message a client gets.

pub mod access;
pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod credentials;
pub mod events;
pub mod front;
pub mod jobs;
pub mod lifecycle;
pub mod limits;
pub mod listen;
pub mod logs;
pub mod metrics;
pub mod peer;
pub mod s3;
pub mod server;
pub mod store;
pub mod tailnet;
pub mod tls;
pub mod ui;

use std::sync::Arc;

use s3s::config::{S3Config, StaticConfigProvider};
use s3s::service::S3ServiceBuilder;

/// s3s settings: the XML body limit is ours (s3s's default is 20 MiB), and so is the form
/// upload limit (s3s holds a form's file in memory; its default is 5 GiB).
fn s3s_config() -> Arc<StaticConfigProvider> {
    let mut config = S3Config::default();
    config.xml_max_body_size = limits::MAX_XML_BODY;
    config.post_object_max_file_size = s3::post::MAX_FORM_FILE;
    Arc::new(StaticConfigProvider::new(Arc::new(config)))
}

/// Builds the request entry point for a gateway; who may do what is `api.access`.
pub fn build_front(gateway: s3::Gateway, api: api::ApiState, domain: Option<&str>) -> front::Front {
    let region = gateway.region.clone();
    let cors = s3::Cors::new(gateway.store.clone(), domain);
    let mut verified = S3ServiceBuilder::new(gateway.clone());
    verified.set_validation(api::ApiAwareNames);
    verified.set_config(s3s_config());
    let store = gateway.store.clone();
    let mut b = S3ServiceBuilder::new(gateway);
    b.set_auth(auth::KeyAuth::new(api.access.clone()));
    b.set_access(auth::AccessCheck::new(api.access.clone(), store));
    b.set_config(s3s_config());
    b.set_validation(api::ApiAwareNames);
    b.set_route(api::ApiRoute::new(api));
    if let Some(d) = domain {
        b.set_host(auth::DomainHost::new(d));
        verified.set_host(auth::DomainHost::new(d));
    }
    front::Front::new(b.build(), verified.build(), region).with_cors(cors)
}
