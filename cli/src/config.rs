//! Where the client finds the gateway, its keys and the default bucket.
//!
//! Precedence, highest first: command-line flags, `NEBULA_*` environment variables, the config
//! file (`$XDG_CONFIG_HOME/nebula/config.toml`, else `~/.config/nebula/config.toml`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

/// Region used when none is configured (also the gateway's default).
pub const DEFAULT_REGION: &str = "us-east-1";

/// How long the local URL gets to answer before the remote one is used.
const LOCAL_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The config file's contents. Every field is optional so partial files are fine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FileConfig {
    /// The one gateway URL (wins over `local_url`/`remote_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// A gateway URL on the LAN, tried first with a short timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_url: Option<String>,
    /// The gateway URL used when the local one does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_url: Option<String>,
    /// S3 access key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    /// S3 secret key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Bucket used when a command gets no `--bucket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// SigV4 region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// The config file's path (the file may not exist).
pub fn config_path() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("nebula").join("config.toml"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            CliError::local(
                "neither XDG_CONFIG_HOME nor HOME is set, so there is no place for the config file",
            )
        })?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("nebula")
        .join("config.toml"))
}

impl FileConfig {
    /// Reads the config file; a missing file is an empty config.
    pub fn load() -> Result<Self> {
        let path = config_path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                CliError::local(format!(
                    "the config file {} is not valid TOML: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(e) => Err(CliError::local(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes the config file with mode 0600, because it holds the secret key.
    pub fn save(&self) -> Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = config_path()?;
        let dir = path.parent().expect("config path has a parent");
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::local(format!("cannot create {}: {e}", dir.display())))?;
        let text = toml::to_string_pretty(self)
            .map_err(|e| CliError::local(format!("cannot serialise the config: {e}")))?;
        // Write a sibling and rename it so a crash never leaves a half-written file; the mode is
        // set at creation so the secret is never readable by others, even briefly.
        let tmp = path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            CliError::local(format!(
                "cannot write the config file {}: {e}",
                path.display()
            ))
        })?;
        Ok(path)
    }
}

/// Settings given on the command line that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--server`.
    pub server: Option<String>,
    /// `--region`.
    pub region: Option<String>,
}

/// Where the gateway may be.
#[derive(Debug, Clone, PartialEq)]
pub enum Servers {
    /// One URL.
    Single(String),
    /// Try `local` briefly, else use `remote`.
    LocalRemote {
        /// LAN URL.
        local: String,
        /// Fallback URL.
        remote: String,
    },
}

/// The bucket name the CLI suggests when none is configured.
pub const DEFAULT_BUCKET_HINT: &str = "media";

/// Everything a command needs to talk to the gateway.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The candidate server URLs.
    pub servers: Servers,
    /// Keys, when configured (ping works without).
    pub keys: Option<(String, String)>,
    /// Default bucket.
    pub bucket: Option<String>,
    /// SigV4 region.
    pub region: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl Settings {
    /// Resolves flags, environment and config file.
    pub fn resolve(over: &Overrides) -> Result<Self> {
        let file = FileConfig::load()?;
        let servers = pick_servers(
            over.server.clone(),
            env("NEBULA_SERVER_URL"),
            env("NEBULA_LOCAL_URL"),
            env("NEBULA_REMOTE_URL"),
            &file,
        )
        .ok_or_else(|| {
            CliError::local("no gateway is configured: set NEBULA_SERVER_URL (or NEBULA_LOCAL_URL and NEBULA_REMOTE_URL), pass --server, or run `nebula login`")
        })?;
        // Keys come as a pair: mixing an env access key with a file secret would only produce
        // confusing signature errors.
        let keys = match (env("NEBULA_ACCESS_KEY"), env("NEBULA_SECRET_KEY")) {
            (Some(a), Some(s)) => Some((a, s)),
            _ => match (file.access_key.clone(), file.secret_key.clone()) {
                (Some(a), Some(s)) => Some((a, s)),
                _ => None,
            },
        };
        let region = over
            .region
            .clone()
            .or_else(|| env("NEBULA_REGION"))
            .or(file.region.clone())
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        Ok(Settings {
            servers,
            keys,
            bucket: env("NEBULA_BUCKET").or(file.bucket),
            region,
        })
    }

    /// The bucket to use: `--bucket`, else the default, else a usage error.
    pub fn bucket(&self, flag: Option<&str>) -> Result<String> {
        self.bucket_choice(flag).map(|(b, _)| b)
    }

    /// The bucket to use, and whether it is the default bucket (`NEBULA_BUCKET` or the config
    /// file) rather than `--bucket`.
    pub fn bucket_choice(&self, flag: Option<&str>) -> Result<(String, bool)> {
        match (flag, &self.bucket) {
            (Some(b), _) => Ok((b.to_owned(), false)),
            (None, Some(b)) => Ok((b.clone(), true)),
            (None, None) => Err(CliError::Usage(format!(
                "no bucket given: pass -b BUCKET, or set a default bucket (the first upload creates it): `nebula config --bucket {DEFAULT_BUCKET_HINT}`"
            ))),
        }
    }
}

fn pick_servers(
    flag: Option<String>,
    env_server: Option<String>,
    env_local: Option<String>,
    env_remote: Option<String>,
    file: &FileConfig,
) -> Option<Servers> {
    let pair = |l: Option<String>, r: Option<String>| match (l, r) {
        (Some(local), Some(remote)) => Some(Servers::LocalRemote { local, remote }),
        (Some(one), None) | (None, Some(one)) => Some(Servers::Single(one)),
        (None, None) => None,
    };
    flag.map(Servers::Single)
        .or(env_server.map(Servers::Single))
        .or_else(|| pair(env_local, env_remote))
        .or(file.server_url.clone().map(Servers::Single))
        .or_else(|| pair(file.local_url.clone(), file.remote_url.clone()))
}

/// Picks the URL to use, probing the local one first when there are two. Says on stderr which
/// one was chosen, because a silent switch to the remote URL would surprise people.
pub async fn choose_server(servers: &Servers) -> String {
    match servers {
        Servers::Single(url) => normalise_url(url),
        Servers::LocalRemote { local, remote } => {
            let (local, remote) = (normalise_url(local), normalise_url(remote));
            if probe(&local).await {
                eprintln!("using the local gateway {local}");
                local
            } else {
                eprintln!(
                    "the local gateway {local} did not answer within {}s; using the remote gateway {remote}",
                    LOCAL_PROBE_TIMEOUT.as_secs()
                );
                remote
            }
        }
    }
}

/// Any HTTP answer counts: a non-Nebula S3 server on the LAN is still "the local server".
async fn probe(base: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(LOCAL_PROBE_TIMEOUT)
        .connect_timeout(LOCAL_PROBE_TIMEOUT)
        .build()
    else {
        return false;
    };
    client
        .get(format!("{base}/_nebula/v1/ping"))
        .send()
        .await
        .is_ok()
}

/// Trims trailing slashes and adds `http://` when no scheme is given.
pub fn normalise_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let file = FileConfig {
            server_url: Some("http://file".into()),
            ..Default::default()
        };
        assert_eq!(
            pick_servers(Some("f".into()), Some("e".into()), None, None, &file),
            Some(Servers::Single("f".into()))
        );
        assert_eq!(
            pick_servers(None, None, Some("l".into()), Some("r".into()), &file),
            Some(Servers::LocalRemote {
                local: "l".into(),
                remote: "r".into()
            })
        );
        assert_eq!(
            pick_servers(None, None, None, None, &file),
            Some(Servers::Single("http://file".into()))
        );
        assert_eq!(
            pick_servers(None, None, None, None, &FileConfig::default()),
            None
        );
    }

    #[test]
    fn urls() {
        assert_eq!(normalise_url("127.0.0.1:9000/"), "http://127.0.0.1:9000");
        assert_eq!(normalise_url("https://x.example"), "https://x.example");
    }
}
