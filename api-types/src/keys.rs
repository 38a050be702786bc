//! Scoped access keys (admin only): `GET /_nebula/v1/keys`, `POST /_nebula/v1/keys`,
//! `GET|DELETE /_nebula/v1/keys/{id}`, `POST /_nebula/v1/keys/{id}/allow|deny`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a key may do in one bucket (Garage's model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketGrant {
    /// List, get and head objects (and the media extensions, HLS).
    #[serde(default)]
    pub read: bool,
    /// Put, delete, multipart uploads, copies into the bucket.
    #[serde(default)]
    pub write: bool,
    /// The bucket's settings (policy, ACL, CORS, ...) and deleting it.
    #[serde(default)]
    pub owner: bool,
    /// Only keys starting with this prefix (listings must ask for a prefix under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A key as the API shows it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The access key id clients sign with.
    pub access_key_id: String,
    /// A name for people ("tv", "phone backup").
    pub name: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// True once `expires` has passed: the gateway refuses the key.
    #[serde(default)]
    pub expired: bool,
    /// May create buckets (and owns those it creates).
    #[serde(default)]
    pub can_create_buckets: bool,
    /// Rights per bucket.
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketGrant>,
}

/// A key just created: the only answer that carries its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    /// The key (its `access_key_id` among the rest).
    #[serde(flatten)]
    pub key: KeyInfo,
    /// The secret, shown this once.
    pub secret_access_key: String,
}

impl NewKey {
    /// The new key as both CLIs print it after creating one (the secret included: it is
    /// shown only then).
    pub fn summary(&self) -> String {
        let mut out = format!(
            "created access key '{}'\n  access key  {}\n  secret key  {}\n  rights      {}",
            self.key.name,
            self.key.access_key_id,
            self.secret_access_key,
            self.key.rights()
        );
        if let Some(e) = &self.key.expires {
            out.push_str(&format!("\n  expires     {e}"));
        }
        out
    }
}

/// `GET /keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// Every scoped key, oldest first (the admin key is not listed).
    pub keys: Vec<KeyInfo>,
}

/// Rights to add (`allow`) or take away (`deny`); also the rights of a new key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantChange {
    /// Buckets to read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Buckets to write (on `allow` and create, read too unless `write_only`).
    #[serde(default)]
    pub write: Vec<String>,
    /// Buckets to own (on `allow` and create, read and write too).
    #[serde(default)]
    pub owner: Vec<String>,
    /// `write` without read: an upload-only key.
    #[serde(default)]
    pub write_only: bool,
    /// Allow (or, on `deny`, stop) creating buckets.
    #[serde(default)]
    pub create_buckets: bool,
    /// On `allow` and create: narrow the named buckets to keys under this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `POST /keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKey {
    /// A name for people.
    pub name: String,
    /// When the key stops working: RFC 3339, a date (`2027-01-31`, midnight UTC) or a
    /// duration from now (`30d`, `12h`, `90m`, `45s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Its rights.
    #[serde(flatten)]
    pub rights: GrantChange,
}

impl BucketGrant {
    /// `r`, `w`, `o` for read, write, owner (`rw`, `w`, `rwo`, ...), and `:PREFIX` when narrowed.
    pub fn letters(&self) -> String {
        let mut s = String::new();
        for (on, c) in [(self.read, 'r'), (self.write, 'w'), (self.owner, 'o')] {
            if on {
                s.push(c);
            }
        }
        if let Some(p) = &self.prefix {
            s.push(':');
            s.push_str(p);
        }
        s
    }
}

impl KeyInfo {
    /// The key on one line: id, name, expiry and rights (how both CLIs list keys).
    pub fn line(&self) -> String {
        let expiry = match (&self.expires, self.expired) {
            (Some(e), true) => format!("expired {e}"),
            (Some(e), false) => format!("expires {e}"),
            (None, _) => "no expiry".to_owned(),
        };
        format!(
            "{}  {:<16}  {:<32}  {}",
            self.access_key_id,
            self.name,
            expiry,
            self.rights()
        )
    }

    /// The rights on one line: `media=r photos=rw:phone/ +create-buckets`.
    pub fn rights(&self) -> String {
        let mut parts: Vec<String> = self
            .buckets
            .iter()
            .map(|(b, g)| format!("{b}={}", g.letters()))
            .collect();
        if self.can_create_buckets {
            parts.push("+create-buckets".to_owned());
        }
        if parts.is_empty() {
            "(no rights)".to_owned()
        } else {
            parts.join(" ")
        }
    }
}
