//! Nebula gateway: S3 over a transparent filesystem, with media extensions.

pub mod auth;
pub mod config;
pub mod credentials;
pub mod error;
pub mod front;
pub mod s3;
pub mod server;
pub mod store;

use std::sync::Arc;

use s3s::service::S3ServiceBuilder;

/// Builds the request entry point for a store.
pub fn build_front(store: Arc<store::Store>, region: &str, creds: &credentials::Credentials, domain: Option<&str>) -> front::Front {
    let gateway = s3::Gateway::new(store, region.to_owned());
    let mut b = S3ServiceBuilder::new(gateway);
    b.set_auth(auth::KeyAuth::new(&creds.access_key, &creds.secret_key));
    if let Some(d) = domain {
        b.set_host(auth::DomainHost::new(d));
    }
    front::Front::new(b.build(), region.to_owned())
}
