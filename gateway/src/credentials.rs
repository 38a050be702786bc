//! The gateway's key pair: given by the operator, or generated once and kept in the data folder.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// An access key / secret key pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
}

const FILE: &str = "credentials";

fn random(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Returns the configured keys, or the pair kept in `internal_dir`, generating it (mode 0600)
/// on first start (JSON in `credentials`). The bool is true when the pair was generated now.
pub fn resolve(
    access: Option<String>,
    secret: Option<String>,
    internal_dir: &Path,
) -> anyhow::Result<(Credentials, bool)> {
    match (access, secret) {
        (Some(a), Some(s)) => {
            if a.is_empty() || s.is_empty() {
                bail!("--access-key and --secret-key must not be empty");
            }
            return Ok((
                Credentials {
                    access_key: a,
                    secret_key: s,
                },
                false,
            ));
        }
        (None, None) => {}
        _ => {
            bail!("give both --access-key and --secret-key (or neither, to use the generated pair)")
        }
    }
    let path = internal_dir.join(FILE);
    if path.exists() {
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let creds: Credentials =
            serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))?;
        return Ok((creds, false));
    }
    let creds = Credentials {
        access_key: format!("NEB{}", random(17, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
        secret_key: random(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        ),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&serde_json::to_vec_pretty(&creds)?)?;
    f.sync_all()?;
    Ok((creds, true))
}

/// The access key id of the pair generated and kept in `internal_dir`, if there is one.
pub fn stored_access_key(internal_dir: &Path) -> Option<String> {
    let raw = std::fs::read(internal_dir.join(FILE)).ok()?;
    serde_json::from_slice::<Credentials>(&raw)
        .ok()
        .map(|c| c.access_key)
}

/// Secrets copied from documentation and sample files, refused on an exposed listener.
/// Compared without regard to case.
const SAMPLE_SECRETS: &[&str] = &[
    "minioadmin",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "secret",
    "password",
    "changeme",
    "change-me",
    "admin",
    "nebula",
    "secretkey",
    "secret-key",
    "minio123",
    "minio1234",
    "miniosecret",
    "12345678",
    "123456789",
    "1234567890",
    // compose/.env.example
    "change-me-to-a-long-random-secret",
];

/// Shortest secret accepted on a listener other hosts can reach.
pub const MIN_EXPOSED_SECRET_LEN: usize = 16;

/// Why `secret` must not guard a gateway other hosts can reach, or `None` when it may.
pub fn weak_secret(secret: &str) -> Option<String> {
    if secret.is_empty() {
        return Some("the secret key is empty".to_owned());
    }
    let lower = secret.to_ascii_lowercase();
    if SAMPLE_SECRETS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(secret))
        || lower.contains("example")
    {
        return Some("the secret key is a well-known sample value".to_owned());
    }
    if secret.chars().count() < MIN_EXPOSED_SECRET_LEN {
        return Some(format!(
            "the secret key is shorter than {MIN_EXPOSED_SECRET_LEN} characters"
        ));
    }
    let first = secret.chars().next().unwrap_or_default();
    if secret.chars().all(|c| c == first) {
        return Some("the secret key repeats one character".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_are_named() {
        for weak in [
            "",
            "minioadmin",
            "MinioAdmin",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "change-me-to-a-long-random-secret",
            "short-secret",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "my-example-secret-for-the-docs",
        ] {
            assert!(weak_secret(weak).is_some(), "{weak:?} passed");
        }
        assert_eq!(
            weak_secret("nebula/test+Secret0123456789abcdefghijkl"),
            None
        );
    }

    #[test]
    fn generated_secrets_pass() {
        let dir = tempfile::tempdir().unwrap();
        let (creds, generated) = resolve(None, None, dir.path()).unwrap();
        assert!(generated);
        assert_eq!(weak_secret(&creds.secret_key), None);
    }
}
