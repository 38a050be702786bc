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
