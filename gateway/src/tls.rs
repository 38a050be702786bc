//! Optional TLS on the TCP listener (`--tls-cert` / `--tls-key`): rustls with the ring
//! provider, ALPN h2 and http/1.1, and a bounded handshake so a client that opens a connection
//! and never finishes the handshake does not hold it forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{0}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    /// The key file holds no usable PEM private key.
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1): {source}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (key does not match the certificate, unsupported algorithm...).
    #[error("certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Server-side TLS for the listener.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads a PEM certificate chain and private key. The chain is the server certificate
    /// first, then any intermediates, as web servers expect.
    pub fn load(cert: &Path, key: &Path, handshake_timeout: Duration) -> Result<Self, TlsError> {
        let cert_pem = read(cert)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_owned()));
        }
        let key_pem = read(key)?;
        let key_der =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::NoKey {
                path: key.to_owned(),
                source,
            })?;
        // The provider is named explicitly: another crate in the build may enable rustls's
        // aws-lc-rs feature too, and then rustls cannot pick a process default on its own.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout,
        })
    }

    /// Runs the server handshake on `stream`, giving up after the handshake timeout.
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "TLS handshake not finished within {:?}",
                    self.handshake_timeout
                ),
            )),
        }
    }
}
