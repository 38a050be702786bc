//! Nebula gateway: S3 over a transparent filesystem, with media extensions.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod credentials;
pub mod error;
pub mod front;
pub mod jobs;
pub mod s3;
pub mod server;
pub mod store;
pub mod transcode;

use s3s::service::S3ServiceBuilder;

/// Builds the request entry point for a gateway.
pub fn build_front(
    gateway: s3::Gateway,
    api: api::ApiState,
    creds: &credentials::Credentials,
    domain: Option<&str>,
) -> front::Front {
    let region = gateway.region.clone();
    let mut verified = S3ServiceBuilder::new(gateway.clone());
    verified.set_validation(api::ApiAwareNames);
    let mut b = S3ServiceBuilder::new(gateway);
    b.set_auth(auth::KeyAuth::new(&creds.access_key, &creds.secret_key));
    b.set_validation(api::ApiAwareNames);
    b.set_route(api::ApiRoute::new(api));
    if let Some(d) = domain {
        b.set_host(auth::DomainHost::new(d));
        verified.set_host(auth::DomainHost::new(d));
    }
    front::Front::new(b.build(), verified.build(), region)
}
