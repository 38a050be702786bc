//! Who may do what: the admin key, scoped keys ([`keys`]), anonymous callers; one
//! classification of every S3 operation and API endpoint ([`ops`]) and one check
//! ([`Access::permits`]).
//!
//! The admin key (the gateway's configured or generated pair) may do everything. A scoped key
//! may do what its grants say: per bucket read, write and owner (Garage's model), optionally
//! narrowed to keys under a prefix, plus creating buckets (it then owns the buckets it creates).
//! On top, for S3 requests, bucket policies ([`policy`]): an explicit Deny there refuses
//! anyone but the admin, an Allow grants what the key's own rights do not (to anonymous
//! callers too, with `Principal: "*"`). A `--public-bucket` is a public-read policy held in
//! memory. Last, ACLs ([`acl`]): a grant to everyone, to every key or to one key allows what
//! S3 says it does when neither the key's rights nor a policy did. The S3 side is wired in `crate::auth` (s3s's `S3Auth` and `S3Access`), the JSON
//! API's in `crate::api`.

pub mod acl;
pub mod command;
pub mod keys;
pub mod ops;
pub mod policy;

use std::collections::HashSet;
use std::sync::Arc;

use s3s::auth::SecretKey;
use time::OffsetDateTime;

pub use keys::{Key, KeyError, KeyStore};
pub use ops::Need;

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The gateway's own key pair.
    Admin,
    /// A scoped key.
    Key(Arc<Key>),
    /// An unsigned request.
    Anonymous,
}

impl Principal {
    /// The scoped key, if it is one.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Principal::Key(k) => Some(k),
            _ => None,
        }
    }

    /// How refusals name the caller.
    pub fn describe(&self) -> String {
        match self {
            Principal::Admin => "the admin key".to_owned(),
            Principal::Key(k) => format!(
                "access key {} ('{}')",
                k.stored.access_key_id, k.stored.name
            ),
            Principal::Anonymous => "an anonymous request".to_owned(),
        }
    }
}

/// The caller of an S3 request, left in its extensions by the access check for the
/// operations whose answer depends on it (ListBuckets lists only readable buckets; a bucket
/// a scoped key creates becomes its own).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who is asking.
    pub who: Principal,
    /// The access rules, to narrow an answer or record a new grant.
    pub access: Arc<Access>,
}

/// Left in a DeleteObjects request's extensions when the caller may not delete from the bucket
/// as a whole but a bucket policy may allow `s3:DeleteObject` on some keys: each key is then
/// decided on its own, as S3 does (the others are answered AccessDenied one by one).
#[derive(Debug, Clone, Copy)]
pub struct DeleteKeyByKey;

/// The keys of a DeleteObjects batch a bucket policy denies deleting, left in its extensions by
/// the access check (key, version id): each is answered with its own AccessDenied.
#[derive(Debug, Clone)]
pub struct DeniedKeys(pub Vec<(String, Option<String>)>);

/// Why a signing key is refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefusal {
    /// No such access key id.
    #[error("the access key id does not exist")]
    Unknown,
    /// The key's expiry has passed.
    #[error("the access key {0} expired at {1}")]
    Expired(String, String),
    /// The keys could not be read.
    #[error(transparent)]
    Unavailable(#[from] KeyError),
}

/// The access rules of a gateway.
#[derive(Debug)]
pub struct Access {
    admin_id: String,
    admin_secret: String,
    keys: KeyStore,
    public: HashSet<String>,
}

impl Access {
    /// Rules for the admin pair, the scoped keys in `keys`, and the public-read buckets.
    pub fn new(
        admin_id: &str,
        admin_secret: &str,
        keys: KeyStore,
        public_buckets: impl IntoIterator<Item = String>,
    ) -> Self {
        Access {
            admin_id: admin_id.to_owned(),
            admin_secret: admin_secret.to_owned(),
            keys,
            public: public_buckets.into_iter().collect(),
        }
    }

    /// The scoped keys.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// The admin's access key id.
    pub fn admin_id(&self) -> &str {
        &self.admin_id
    }

    /// True when `bucket` is public-read.
    pub fn is_public(&self, bucket: &str) -> bool {
        self.public.contains(bucket)
    }

    /// The secret a request signed with `id` must have been signed with; unknown and expired
    /// keys are refused (so are their presigned URLs).
    pub async fn secret(&self, id: &str) -> Result<SecretKey, KeyRefusal> {
        if id == self.admin_id {
            return Ok(SecretKey::from(self.admin_secret.clone()));
        }
        let ring = self.keys.ring().await?;
        let key = ring.get(id).ok_or(KeyRefusal::Unknown)?;
        if key.expired(OffsetDateTime::now_utc()) {
            return Err(KeyRefusal::Expired(
                id.to_owned(),
                key.stored.expires.clone().unwrap_or_default(),
            ));
        }
        Ok(SecretKey::from(key.stored.secret_access_key.clone()))
    }

    /// The principal behind credentials s3s has verified (`None`: anonymous).
    pub async fn principal(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
    ) -> Result<Principal, KeyRefusal> {
        let Some(c) = credentials else {
            return Ok(Principal::Anonymous);
        };
        if c.access_key == self.admin_id {
            return Ok(Principal::Admin);
        }
        let ring = self.keys.ring().await?;
        match ring.get(&c.access_key) {
            Some(k) if !k.expired(OffsetDateTime::now_utc()) => Ok(Principal::Key(k.clone())),
            Some(k) => Err(KeyRefusal::Expired(
                c.access_key.clone(),
                k.stored.expires.clone().unwrap_or_default(),
            )),
            None => Err(KeyRefusal::Unknown),
        }
    }

    /// The one check: may `who` do what `need` describes on `bucket`, for the object `key`
    /// (or, for a listing, the prefix listed)? `None` for `key` means the bucket itself.
    /// `bucket_exists` is only asked for CreateBucket by a key that may not create buckets.
    pub fn permits(
        &self,
        who: &Principal,
        need: Need,
        bucket: Option<&str>,
        key: Option<&str>,
        bucket_exists: impl FnOnce(&str) -> bool,
    ) -> bool {
        match (who, need) {
            (_, Need::Open) => true,
            (Principal::Admin, _) => true,
            // Anonymous callers get only what bucket policies allow (see `decide`).
            (Principal::Anonymous, _) => false,
            (Principal::Key(_), Need::Listing) => true,
            (Principal::Key(_), Need::Admin) => false,
            (Principal::Key(k), Need::CreateBucket) => {
                // A client that "creates" a bucket it may already write to (rclone does before
                // every copy) gets the already-owned answer, as on S3.
                k.stored.can_create_buckets
                    || bucket.is_some_and(|b| {
                        k.grant(b).is_some_and(|g| g.write || g.owner) && bucket_exists(b)
                    })
            }
            (Principal::Key(k), Need::Read | Need::Write | Need::Owner) => {
                let Some(g) = bucket.and_then(|b| k.grant(b)) else {
                    return false;
                };
                let right = match need {
                    Need::Read => g.read,
                    Need::Write => g.write,
                    _ => g.owner,
                };
                let within = match (g.prefix.as_deref(), key) {
                    (Some(p), Some(k)) => k.starts_with(p),
                    _ => true,
                };
                right && within
            }
        }
    }

    /// The bucket policies that apply to `bucket`: its own, and public read for a
    /// `--public-bucket`. A stored document that no longer parses applies nothing (and is
    /// logged): it was checked when it was put.
    pub fn policies(&self, store: &crate::store::Store, bucket: &str) -> Vec<policy::Policy> {
        let restrict = public_access_block(store, bucket).restrict_public_buckets;
        let mut out = Vec::new();
        match store
            .settings()
            .get(bucket, crate::store::settings::Setting::Policy)
        {
            Ok(Some(doc)) => match policy::Policy::parse(&doc, bucket) {
                Ok(p) if restrict => out.push(p.without_public_allows()),
                Ok(p) => out.push(p),
                Err(e) => tracing::warn!(bucket, error = %e, "ignoring the bucket's stored policy"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(bucket, error = %e, "cannot read the bucket's policy"),
        }
        if self.is_public(bucket) && !restrict {
            out.push(policy::Policy::public_read(bucket));
        }
        out
    }

    /// [`Access::permits`] with bucket policies on top: the admin may do everything; an
    /// explicit Deny in any policy refuses; an Allow grants; otherwise the key's rights decide,
    /// and what they do not grant is left to the ACLs ([`Verdict::NotGranted`]).
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        who: &Principal,
        need: Need,
        bucket: Option<&str>,
        key: Option<&str>,
        bucket_exists: impl FnOnce(&str) -> bool,
        policies: &[policy::Policy],
        request: &policy::PolicyRequest<'_>,
    ) -> Verdict {
        if matches!(who, Principal::Admin) {
            return Verdict::Allow;
        }
        let mut allowed = false;
        for p in policies {
            match p.evaluate(request) {
                policy::Decision::Deny => return Verdict::Deny,
                policy::Decision::Allow => allowed = true,
                policy::Decision::NotApplicable => {}
            }
        }
        if allowed || self.permits(who, need, bucket, key, bucket_exists) {
            Verdict::Allow
        } else {
            Verdict::NotGranted
        }
    }

    /// True when an ACL grant allows `who` the policy action `action` on `bucket` (and `key`,
    /// `version` for the object's own ACL): asked for what the key's rights and the policies
    /// left open ([`Verdict::NotGranted`]).
    pub async fn acl_allows(
        &self,
        store: &Arc<crate::store::Store>,
        who: &Principal,
        bucket: Option<&str>,
        key: Option<&str>,
        version: Option<String>,
        action: &str,
    ) -> bool {
        let (Some(bucket), Some((target, wanted))) = (bucket, acl::needed(action)) else {
            return false;
        };
        let ignore_public = public_access_block(store, bucket).ignore_public_acls;
        let grants = match (target, key) {
            (acl::Target::Bucket, _) => bucket_acl(store, bucket),
            (acl::Target::Object, Some(key)) => {
                let Ok(path) = crate::store::keys::parse_key(key) else {
                    return false;
                };
                let (store, bucket) = (store.clone(), bucket.to_owned());
                let found = crate::store::read::blocking(move || {
                    store.open_version(&bucket, &path, version.as_deref())
                })
                .await;
                match found {
                    Ok(crate::store::versions::Found::Object(h)) => h.meta.acl,
                    _ => return false,
                }
            }
            (acl::Target::Object, None) => return false,
        };
        acl::allows(&acl::or_private(grants), who, wanted, ignore_public)
    }

    /// True when `who` may see `bucket` in ListBuckets and its jobs in the job list.
    pub fn can_see(&self, who: &Principal, bucket: &str) -> bool {
        match who {
            Principal::Admin => true,
            Principal::Key(k) => k.grant(bucket).is_some_and(|g| g.read),
            Principal::Anonymous => false,
        }
    }

    /// Makes `who` the owner of the bucket it has just created (a scoped key; the admin
    /// owns everything already).
    pub async fn created_bucket(&self, who: &Principal, bucket: &str) -> Result<(), KeyError> {
        let Principal::Key(k) = who else {
            return Ok(());
        };
        self.keys
            .allow(
                &k.stored.access_key_id,
                nebula_api_types::keys::GrantChange {
                    owner: vec![bucket.to_owned()],
                    ..Default::default()
                },
            )
            .await
            .map(drop)
    }
}

/// The outcome of [`Access::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key's rights or a policy allow it.
    Allow,
    /// A policy denies it explicitly: nothing else can allow it.
    Deny,
    /// Nothing allowed it yet: an ACL grant still may.
    NotGranted,
}

impl Verdict {
    /// True for [`Verdict::Allow`].
    pub fn allowed(self) -> bool {
        self == Verdict::Allow
    }
}

/// The bucket's ACL grants (`None`: private, the owner's full control). A damaged document is
/// logged and grants nothing beyond the owner's.
pub fn bucket_acl(
    store: &crate::store::Store,
    bucket: &str,
) -> Option<Vec<crate::store::meta::AclGrant>> {
    match store
        .settings()
        .get(bucket, crate::store::settings::Setting::Acl)
    {
        Ok(None) => None,
        Ok(Some(doc)) => serde_json::from_slice(&doc)
            .inspect_err(
                |e| tracing::warn!(bucket, error = %e, "ignoring the bucket's damaged ACL"),
            )
            .ok(),
        Err(e) => {
            tracing::warn!(bucket, error = %e, "cannot read the bucket's ACL");
            None
        }
    }
}

/// The bucket's public access block (all off when it has none; a damaged document is logged
/// and read as all on, the safe side).
pub fn public_access_block(store: &crate::store::Store, bucket: &str) -> policy::PublicAccessBlock {
    let all_on = policy::PublicAccessBlock {
        block_public_acls: true,
        ignore_public_acls: true,
        block_public_policy: true,
        restrict_public_buckets: true,
    };
    match store
        .settings()
        .get(bucket, crate::store::settings::Setting::PublicAccessBlock)
    {
        Ok(None) => policy::PublicAccessBlock::default(),
        Ok(Some(doc)) => serde_json::from_slice(&doc).unwrap_or_else(|e| {
            tracing::warn!(bucket, error = %e, "damaged public access block: treating it as all on");
            all_on
        }),
        Err(e) => {
            tracing::warn!(bucket, error = %e, "cannot read the public access block: treating it as all on");
            all_on
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nebula_api_types::keys::BucketGrant;

    use super::*;

    fn key(grants: &[(&str, bool, bool, bool, Option<&str>)], create: bool) -> Principal {
        let buckets: BTreeMap<String, BucketGrant> = grants
            .iter()
            .map(|(b, read, write, owner, prefix)| {
                (
                    b.to_string(),
                    BucketGrant {
                        read: *read,
                        write: *write,
                        owner: *owner,
                        prefix: prefix.map(str::to_owned),
                    },
                )
            })
            .collect();
        Principal::Key(Arc::new(Key {
            stored: keys::StoredKey {
                access_key_id: "NEBK".into(),
                secret_access_key: "s".into(),
                name: "k".into(),
                created: "2026-01-01T00:00:00Z".into(),
                expires: None,
                can_create_buckets: create,
                buckets,
            },
            expires_at: None,
        }))
    }

    #[test]
    fn grants_decide_and_prefixes_narrow() {
        let dir = tempfile::tempdir().unwrap();
        let a = Access::new(
            "ADMIN",
            "secret",
            KeyStore::in_folder(dir.path()),
            ["pub".to_owned()],
        );
        let yes = |_: &str| true;
        let tv = key(
            &[
                ("media", true, false, false, None),
                ("cam", false, true, false, Some("phone/")),
            ],
            false,
        );
        assert!(a.permits(&tv, Need::Read, Some("media"), Some("a.mp4"), yes));
        assert!(!a.permits(&tv, Need::Write, Some("media"), Some("a.mp4"), yes));
        assert!(!a.permits(&tv, Need::Owner, Some("media"), None, yes));
        assert!(!a.permits(&tv, Need::Read, Some("other"), Some("x"), yes));
        assert!(a.permits(&tv, Need::Write, Some("cam"), Some("phone/1.jpg"), yes));
        assert!(!a.permits(&tv, Need::Write, Some("cam"), Some("other/1.jpg"), yes));
        assert!(!a.permits(&tv, Need::Read, Some("cam"), Some("phone/1.jpg"), yes));
        assert!(!a.permits(&tv, Need::Admin, None, None, yes));
        assert!(a.permits(&tv, Need::Listing, None, None, yes));
        // CreateBucket: only on a bucket it may write that exists already.
        assert!(!a.permits(&tv, Need::CreateBucket, Some("new"), None, yes));
        assert!(a.permits(&tv, Need::CreateBucket, Some("cam"), None, yes));
        assert!(!a.permits(&tv, Need::CreateBucket, Some("cam"), None, |_| false));
        let creator = key(&[], true);
        assert!(a.permits(&creator, Need::CreateBucket, Some("new"), None, yes));
        assert!(a.can_see(&tv, "media") && !a.can_see(&tv, "cam"));
        // Anonymous: only what a policy allows; a public bucket's is public read.
        let anon = Principal::Anonymous;
        assert!(!a.permits(&anon, Need::Read, Some("pub"), Some("a"), yes));
        assert!(!a.permits(&anon, Need::Listing, None, None, yes));
        let public = [policy::Policy::public_read("pub")];
        let req = |action, resource| policy::PolicyRequest {
            principal: None,
            action,
            resource,
            secure: false,
            source_ip: None,
            prefix: None,
            delimiter: None,
            max_keys: None,
            acl: None,
            now: OffsetDateTime::now_utc(),
        };
        let get = req("s3:GetObject", "arn:aws:s3:::pub/a");
        assert!(
            a.decide(
                &anon,
                Need::Read,
                Some("pub"),
                Some("a"),
                yes,
                &public,
                &get
            )
            .allowed()
        );
        let put = req("s3:PutObject", "arn:aws:s3:::pub/a");
        assert!(
            !a.decide(
                &anon,
                Need::Write,
                Some("pub"),
                Some("a"),
                yes,
                &public,
                &put
            )
            .allowed()
        );
        // An explicit Deny beats a key's grant, but not the admin.
        let deny = policy::Policy::parse(
            br#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::media/*"}}"#,
            "media",
        )
        .unwrap();
        let get = req("s3:GetObject", "arn:aws:s3:::media/a.mp4");
        let denied = [deny];
        assert!(
            !a.decide(
                &tv,
                Need::Read,
                Some("media"),
                Some("a.mp4"),
                yes,
                &denied,
                &get
            )
            .allowed()
        );
        assert!(
            a.decide(
                &Principal::Admin,
                Need::Read,
                Some("media"),
                None,
                yes,
                &denied,
                &get
            )
            .allowed()
        );
        assert!(a.permits(&Principal::Admin, Need::Admin, None, None, yes));
    }
}
