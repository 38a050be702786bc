//! Scoped access keys: their document (`{"keys": [...]}`, JSON), where it is kept, and the
//! changes `nebula-gateway keys`, the JSON API and `nebula keys` make to it.
//!
//! The document lives in the data folder ([`crate::store::keyfile`], 0600, atomic writes), or
//! in the catalog database when it is PostgreSQL (several gateways share the keys there).
//! Either way every request sees the current keys: the file is stamp-checked on each lookup,
//! the database row's generation at most every [`DB_RECHECK`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebula_api_types::keys::{BucketGrant, CreateKey, GrantChange, KeyInfo, NewKey};
use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::keyfile::KeyFile;

/// How long a gateway keeps the keys read from the database before asking whether they changed.
pub const DB_RECHECK: Duration = Duration::from_secs(1);

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key has this access key id.
    #[error("no access key '{0}'")]
    NoSuchKey(String),
    /// The request is not valid (an empty name, a bad bucket name or date).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing the keys' file failed.
    #[error("the access keys file: {0}")]
    Io(#[from] std::io::Error),
    /// The keys' document does not parse.
    #[error("the access keys document is damaged: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The catalog database failed.
    #[error("the access keys in the catalog: {0}")]
    Database(#[from] crate::catalog::CatalogError),
}

/// One key as kept (the secret included).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A name for people.
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339, if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// May create buckets.
    #[serde(default)]
    pub can_create_buckets: bool,
    /// Rights per bucket.
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketGrant>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    keys: Vec<StoredKey>,
}

/// A key ready for checks: its expiry parsed.
#[derive(Debug, Clone)]
pub struct Key {
    /// As kept.
    pub stored: StoredKey,
    /// When it stops working.
    pub expires_at: Option<OffsetDateTime>,
}

impl Key {
    /// True once the key has expired.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Its grant on `bucket`, if any.
    pub fn grant(&self, bucket: &str) -> Option<&BucketGrant> {
        self.stored.buckets.get(bucket)
    }
}

/// Every scoped key, by access key id.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: HashMap<String, Arc<Key>>,
}

impl KeyRing {
    fn parse(doc: Option<&[u8]>) -> Result<Self, KeyError> {
        let doc: Document = match doc {
            Some(bytes) if !bytes.is_empty() => serde_json::from_slice(bytes)?,
            _ => Document::default(),
        };
        let keys = doc
            .keys
            .into_iter()
            .map(|k| {
                let expires_at = k
                    .expires
                    .as_deref()
                    .and_then(|e| OffsetDateTime::parse(e, &Rfc3339).ok());
                (
                    k.access_key_id.clone(),
                    Arc::new(Key {
                        stored: k,
                        expires_at,
                    }),
                )
            })
            .collect();
        Ok(KeyRing { keys })
    }

    /// The key with this access key id.
    pub fn get(&self, id: &str) -> Option<&Arc<Key>> {
        self.keys.get(id)
    }
}

/// A document and the keys it parsed to.
type Parsed = (Option<Arc<[u8]>>, Arc<KeyRing>);

/// Where the keys are kept.
#[derive(Debug)]
pub struct KeyStore {
    place: Place,
    /// The last document read and what it parsed to (compared by identity).
    parsed: Mutex<Parsed>,
}

#[derive(Debug)]
enum Place {
    File(KeyFile),
    Database(crate::catalog::Catalog, Mutex<DbCache>),
}

/// The document last read from the database, its generation, and when that was last checked.
#[derive(Debug)]
struct DbCache {
    checked: Option<std::time::Instant>,
    generation: i64,
    doc: Option<Arc<[u8]>>,
}

impl KeyStore {
    /// Keys kept in the data folder's reserved folder (`DATA/.nebula`).
    pub fn in_folder(internal_dir: &std::path::Path) -> Self {
        Self::at(Place::File(KeyFile::new(internal_dir)))
    }

    /// Keys kept in the catalog database (PostgreSQL, shared by several gateways).
    pub fn in_catalog(catalog: crate::catalog::Catalog) -> Self {
        Self::at(Place::Database(
            catalog,
            Mutex::new(DbCache {
                checked: None,
                generation: -1,
                doc: None,
            }),
        ))
    }

    fn at(place: Place) -> Self {
        KeyStore {
            place,
            parsed: Mutex::new((None, Arc::default())),
        }
    }

    /// Where the keys are, for people.
    pub fn describe(&self) -> String {
        match &self.place {
            Place::File(_) => format!("the data folder ({})", crate::store::RESERVED_DIR),
            Place::Database(c, _) => format!("the {} catalog", c.engine()),
        }
    }

    async fn document(&self) -> Result<Option<Arc<[u8]>>, KeyError> {
        match &self.place {
            Place::File(f) => Ok(f.read()?),
            Place::Database(c, cache) => {
                let (checked, generation, doc) = {
                    let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                    (cache.checked, cache.generation, cache.doc.clone())
                };
                if checked.is_some_and(|t| t.elapsed() < DB_RECHECK) {
                    return Ok(doc);
                }
                let now = c.access_keys_generation().await?;
                let doc = if now == generation {
                    doc
                } else {
                    let (text, now) = c.access_keys_read().await?;
                    let doc: Arc<[u8]> = text.into_bytes().into();
                    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                    cache.generation = now;
                    cache.doc = Some(doc.clone());
                    Some(doc)
                };
                cache.lock().unwrap_or_else(|e| e.into_inner()).checked =
                    Some(std::time::Instant::now());
                Ok(doc)
            }
        }
    }

    /// The current keys.
    pub async fn ring(&self) -> Result<Arc<KeyRing>, KeyError> {
        let doc = self.document().await?;
        {
            let parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
            let same = match (&parsed.0, &doc) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if same {
                return Ok(parsed.1.clone());
            }
        }
        let ring = Arc::new(KeyRing::parse(doc.as_deref())?);
        *self.parsed.lock().unwrap_or_else(|e| e.into_inner()) = (doc, ring.clone());
        Ok(ring)
    }

    /// Applies `change` to the kept keys (under the store's lock or transaction) and writes
    /// them back when it succeeds.
    pub async fn update<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Vec<StoredKey>) -> Result<T, KeyError> + Send + 'static,
    ) -> Result<T, KeyError> {
        let apply = move |current: Option<&[u8]>| -> (Option<Vec<u8>>, Result<T, KeyError>) {
            let mut doc: Document = match current {
                Some(b) if !b.is_empty() => match serde_json::from_slice(b) {
                    Ok(d) => d,
                    Err(e) => return (None, Err(e.into())),
                },
                _ => Document::default(),
            };
            match change(&mut doc.keys) {
                Ok(out) => match serde_json::to_vec_pretty(&doc) {
                    Ok(bytes) => (Some(bytes), Ok(out)),
                    Err(e) => (None, Err(e.into())),
                },
                Err(e) => (None, Err(e)),
            }
        };
        match &self.place {
            Place::File(f) => f.update(apply)?,
            Place::Database(c, cache) => {
                let out = c.update_access_keys(apply).await?;
                // This gateway sees its own change at once.
                cache.lock().unwrap_or_else(|e| e.into_inner()).checked = None;
                out
            }
        }
    }
}

/// A new access key id: `NEB` and 17 characters of base32's alphabet, as the admin's.
fn new_key_id() -> String {
    format!("NEB{}", random(17, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"))
}

/// A new secret: 40 letters and digits (nothing a shell, URL or rclone remote string needs
/// quoted).
fn new_secret() -> String {
    random(
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    )
}

fn random(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Parses an expiry: RFC 3339, a date (`2027-01-31`: midnight UTC starting it), or a duration
/// from `now` (`30d`, `12h`, `90m`, `45s`). It must be in the future.
pub fn parse_expiry(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, KeyError> {
    let t = text.trim();
    let bad = || {
        KeyError::Invalid(format!(
            "expiry '{t}': use a date (2027-01-31), an RFC 3339 time or a duration (30d, 12h, 90m, 45s)"
        ))
    };
    let at = if let Ok(at) = OffsetDateTime::parse(t, &Rfc3339) {
        at
    } else if let Ok(d) =
        time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]"))
    {
        d.midnight().assume_utc()
    } else {
        let unit = t.chars().last().ok_or_else(bad)?;
        let n: i64 = t[..t.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
        let secs = match unit {
            'd' => n.checked_mul(86_400),
            'h' => n.checked_mul(3600),
            'm' => n.checked_mul(60),
            's' => Some(n),
            _ => None,
        }
        .filter(|s| *s > 0)
        .ok_or_else(bad)?;
        now.checked_add(time::Duration::seconds(secs))
            .ok_or_else(bad)?
    };
    if at <= now {
        return Err(KeyError::Invalid(format!(
            "expiry '{t}' is not in the future"
        )));
    }
    Ok(at)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn check_bucket(name: &str) -> Result<(), KeyError> {
    use s3s::validation::NameValidation;
    if s3s::validation::AwsNameValidation::new().validate_bucket_name(name) {
        Ok(())
    } else {
        Err(KeyError::Invalid(format!(
            "'{name}' is not a valid bucket name"
        )))
    }
}

/// Adds the rights `change` names to `key`. Write includes read unless `write_only`; owner
/// includes read and write.
fn allow(key: &mut StoredKey, change: &GrantChange) -> Result<(), KeyError> {
    for b in change.read.iter().chain(&change.write).chain(&change.owner) {
        check_bucket(b)?;
    }
    let mut touched = Vec::new();
    for b in &change.read {
        key.buckets.entry(b.clone()).or_default().read = true;
        touched.push(b);
    }
    for b in &change.write {
        let g = key.buckets.entry(b.clone()).or_default();
        g.write = true;
        g.read |= !change.write_only;
        touched.push(b);
    }
    for b in &change.owner {
        let g = key.buckets.entry(b.clone()).or_default();
        g.owner = true;
        g.write = true;
        g.read = true;
        touched.push(b);
    }
    if let Some(p) = change.prefix.as_deref().filter(|p| !p.is_empty()) {
        if touched.is_empty() {
            return Err(KeyError::Invalid(
                "a prefix narrows the buckets it is given with (--read/--write/--owner)".into(),
            ));
        }
        for b in touched {
            if let Some(g) = key.buckets.get_mut(b) {
                g.prefix = Some(p.to_owned());
            }
        }
    }
    key.can_create_buckets |= change.create_buckets;
    Ok(())
}

/// Takes the rights `change` names away from `key`; a bucket left with none is dropped.
fn deny(key: &mut StoredKey, change: &GrantChange) {
    for b in &change.read {
        if let Some(g) = key.buckets.get_mut(b) {
            g.read = false;
        }
    }
    for b in &change.write {
        if let Some(g) = key.buckets.get_mut(b) {
            g.write = false;
            g.owner = false;
        }
    }
    for b in &change.owner {
        if let Some(g) = key.buckets.get_mut(b) {
            g.owner = false;
        }
    }
    key.buckets.retain(|_, g| g.read || g.write || g.owner);
    if change.create_buckets {
        key.can_create_buckets = false;
    }
}

/// A kept key as the API shows it.
pub fn info(key: &StoredKey, now: OffsetDateTime) -> KeyInfo {
    let expired = key
        .expires
        .as_deref()
        .and_then(|e| OffsetDateTime::parse(e, &Rfc3339).ok())
        .is_some_and(|t| t <= now);
    KeyInfo {
        access_key_id: key.access_key_id.clone(),
        name: key.name.clone(),
        created: key.created.clone(),
        expires: key.expires.clone(),
        expired,
        can_create_buckets: key.can_create_buckets,
        buckets: key.buckets.clone(),
    }
}

fn find<'a>(keys: &'a mut [StoredKey], id: &str) -> Result<&'a mut StoredKey, KeyError> {
    keys.iter_mut()
        .find(|k| k.access_key_id == id)
        .ok_or_else(|| KeyError::NoSuchKey(id.to_owned()))
}

impl KeyStore {
    /// Creates a key; the answer carries its secret. `admin_id` is never handed out again.
    pub async fn create(
        &self,
        req: CreateKey,
        admin_id: Option<String>,
    ) -> Result<NewKey, KeyError> {
        let now = OffsetDateTime::now_utc();
        let name = req.name.trim().to_owned();
        if name.is_empty() {
            return Err(KeyError::Invalid("a key needs a name (--name)".into()));
        }
        let expires = req
            .expires
            .as_deref()
            .map(|e| parse_expiry(e, now))
            .transpose()?
            .map(rfc3339);
        let mut key = StoredKey {
            access_key_id: String::new(),
            secret_access_key: new_secret(),
            name,
            created: rfc3339(now),
            expires,
            can_create_buckets: false,
            buckets: BTreeMap::new(),
        };
        allow(&mut key, &req.rights)?;
        self.update(move |keys| {
            key.access_key_id = loop {
                let id = new_key_id();
                if Some(&id) != admin_id.as_ref() && keys.iter().all(|k| k.access_key_id != id) {
                    break id;
                }
            };
            keys.push(key.clone());
            Ok(NewKey {
                secret_access_key: key.secret_access_key.clone(),
                key: info(&key, now),
            })
        })
        .await
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let now = OffsetDateTime::now_utc();
        let doc = self.document().await?;
        let doc: Document = match doc.as_deref() {
            Some(b) if !b.is_empty() => serde_json::from_slice(b)?,
            _ => Document::default(),
        };
        Ok(doc.keys.iter().map(|k| info(k, now)).collect())
    }

    /// One key.
    pub async fn show(&self, id: &str) -> Result<KeyInfo, KeyError> {
        self.list()
            .await?
            .into_iter()
            .find(|k| k.access_key_id == id)
            .ok_or_else(|| KeyError::NoSuchKey(id.to_owned()))
    }

    /// Removes a key; the answer is what it was.
    pub async fn delete(&self, id: &str) -> Result<KeyInfo, KeyError> {
        let id = id.to_owned();
        self.update(move |keys| {
            let pos = keys
                .iter()
                .position(|k| k.access_key_id == id)
                .ok_or_else(|| KeyError::NoSuchKey(id.clone()))?;
            Ok(info(&keys.remove(pos), OffsetDateTime::now_utc()))
        })
        .await
    }

    /// Adds rights to a key.
    pub async fn allow(&self, id: &str, change: GrantChange) -> Result<KeyInfo, KeyError> {
        let id = id.to_owned();
        self.update(move |keys| {
            let key = find(keys, &id)?;
            allow(key, &change)?;
            Ok(info(key, OffsetDateTime::now_utc()))
        })
        .await
    }

    /// Takes rights away from a key.
    pub async fn deny(&self, id: &str, change: GrantChange) -> Result<KeyInfo, KeyError> {
        let id = id.to_owned();
        self.update(move |keys| {
            let key = find(keys, &id)?;
            deny(key, &change);
            Ok(info(key, OffsetDateTime::now_utc()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(read: &[&str], write: &[&str], owner: &[&str]) -> GrantChange {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        GrantChange {
            read: v(read),
            write: v(write),
            owner: v(owner),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn keys_are_created_changed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::in_folder(dir.path());
        let new = store
            .create(
                CreateKey {
                    name: "tv".into(),
                    expires: Some("30d".into()),
                    rights: change(&["media"], &[], &[]),
                },
                Some("ADMIN".into()),
            )
            .await
            .unwrap();
        assert!(new.key.access_key_id.starts_with("NEB") && new.key.access_key_id.len() == 20);
        assert_eq!(new.secret_access_key.len(), 40);
        let ring = store.ring().await.unwrap();
        let key = ring.get(&new.key.access_key_id).unwrap();
        assert!(!key.expired(OffsetDateTime::now_utc()));
        assert!(key.grant("media").unwrap().read);
        assert!(!key.grant("media").unwrap().write);
        // Another store on the same folder (a `keys` command) changes it: seen at once.
        let other = KeyStore::in_folder(dir.path());
        let mut c = change(&[], &["phone"], &[]);
        c.write_only = true;
        other.allow(&new.key.access_key_id, c).await.unwrap();
        let ring = store.ring().await.unwrap();
        let phone = ring
            .get(&new.key.access_key_id)
            .unwrap()
            .grant("phone")
            .unwrap()
            .clone();
        assert_eq!((phone.read, phone.write, phone.owner), (false, true, false));
        other
            .deny(&new.key.access_key_id, change(&["media"], &[], &[]))
            .await
            .unwrap();
        let shown = store.show(&new.key.access_key_id).await.unwrap();
        assert_eq!(shown.buckets.keys().collect::<Vec<_>>(), ["phone"]);
        store.delete(&new.key.access_key_id).await.unwrap();
        assert!(
            store
                .ring()
                .await
                .unwrap()
                .get(&new.key.access_key_id)
                .is_none()
        );
        assert!(matches!(
            store.delete(&new.key.access_key_id).await,
            Err(KeyError::NoSuchKey(_))
        ));
    }

    #[test]
    fn expiries() {
        let now = OffsetDateTime::parse("2026-12-01T10:00:00Z", &Rfc3339).unwrap();
        let at = |s| rfc3339(parse_expiry(s, now).unwrap());
        assert_eq!(at("2027-01-31"), "2027-01-31T00:00:00Z");
        assert_eq!(at("30d"), "2026-12-31T10:00:00Z");
        assert_eq!(at("90m"), "2026-12-01T11:30:00Z");
        assert_eq!(at("2026-12-01T10:00:05Z"), "2026-12-01T10:00:05Z");
        for bad in ["2020-01-01", "0d", "-3h", "soon", "", "10y"] {
            assert!(parse_expiry(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_implies_read_unless_write_only_and_owner_implies_all() {
        let mut k = StoredKey {
            access_key_id: "K".into(),
            secret_access_key: "S".into(),
            name: "n".into(),
            created: "2026-01-01T00:00:00Z".into(),
            expires: None,
            can_create_buckets: false,
            buckets: BTreeMap::new(),
        };
        let mut c = change(&[], &["aaa"], &["bbb"]);
        c.prefix = Some("photos/".into());
        allow(&mut k, &c).unwrap();
        let a = &k.buckets["aaa"];
        assert!(a.read && a.write && !a.owner);
        assert_eq!(a.prefix.as_deref(), Some("photos/"));
        let b = &k.buckets["bbb"];
        assert!(b.read && b.write && b.owner);
        assert!(allow(&mut k, &change(&["Bad_Name"], &[], &[])).is_err());
        deny(&mut k, &change(&[], &["bbb"], &[]));
        let b = &k.buckets["bbb"];
        assert!(b.read && !b.write && !b.owner);
    }
}
