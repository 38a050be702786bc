//! Lifecycle rules: the `lifecycle` bucket setting (a JSON document of [`Rules`]) and the
//! sweeper that applies them.
//!
//! The sweeper wakes up a few times per "day" (86400 s, or `--lifecycle-day-seconds` for
//! tests), walks every bucket that has rules and removes what they say: current versions past
//! their Expiration (a delete marker in versioned buckets, the file otherwise), delete markers
//! left with no other version (ExpiredObjectDeleteMarker), non-current versions past
//! NoncurrentDays beyond the NewerNoncurrentVersions kept, and multipart uploads started more
//! than DaysAfterInitiation ago. A version under object lock is left alone. Every removal is
//! logged. Each bucket is swept under the catalog lease `lifecycle:<bucket>`, so gateways
//! sharing a catalog (PostgreSQL, or the SQLite file of one data folder) take turns, and a
//! version is removed, and logged, by one of them only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::events::Subscribers;
use crate::store::keys::parse_key;
use crate::store::meta::ObjectMeta;
use crate::store::read::blocking;
use crate::store::settings::Setting;
use crate::store::versions::{VersionInfo, VersionWalk, check_deletable};
use crate::store::{Store, StoreError, StoreResult};

/// A bucket's lifecycle configuration, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// The rules, in the order they were sent.
    pub rules: Vec<Rule>,
}

/// One lifecycle rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The rule's ID.
    pub id: String,
    /// Status Enabled (a Disabled rule is kept but not applied).
    pub enabled: bool,
    /// Which objects it applies to.
    pub filter: Filter,
    /// Expiration: days after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_days: Option<i32>,
    /// Expiration: from this date on (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date_ms: Option<i64>,
    /// Expiration: remove delete markers that are the only version left.
    #[serde(default)]
    pub expired_object_delete_marker: bool,
    /// NoncurrentVersionExpiration: days after becoming non-current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_days: Option<i32>,
    /// NoncurrentVersionExpiration: how many newer non-current versions to keep anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_noncurrent_versions: Option<i32>,
    /// AbortIncompleteMultipartUpload: days after initiation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_multipart_days: Option<i32>,
}

/// A rule's filter. `form` records how it was sent so it is returned the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// How the filter was written.
    pub form: FilterForm,
    /// Key prefix.
    #[serde(default)]
    pub prefix: String,
    /// Tags every object must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// ObjectSizeGreaterThan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_greater_than: Option<i64>,
    /// ObjectSizeLessThan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_less_than: Option<i64>,
}

/// How a filter was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterForm {
    /// The deprecated `Rule/Prefix`.
    RulePrefix,
    /// `Filter` with one condition (or none).
    #[default]
    Single,
    /// `Filter/And`.
    And,
}

impl Filter {
    /// True when an object version with this key, size and tags matches: it carries every tag
    /// of the filter (same key and value).
    pub fn matches(&self, key: &str, size: u64, tags: &[(String, String)]) -> bool {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.tags.iter().all(|t| tags.contains(t))
            && key.starts_with(&self.prefix)
            && self.size_greater_than.is_none_or(|n| size > n)
            && self.size_less_than.is_none_or(|n| size < n)
    }
}

impl Rules {
    /// The bucket's rules, if it has any.
    pub fn of(store: &Store, bucket: &str) -> StoreResult<Option<Rules>> {
        let Some(doc) = store.settings().get(bucket, Setting::Lifecycle)? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&doc).ok())
    }

    /// When the current version (`key` of `size` with `tags`, created `created`) expires and by which rule:
    /// what `x-amz-expiration` says. S3 rounds a Days expiry up to the next midnight UTC; with a
    /// shortened day for tests it is exact.
    pub fn expiry(
        &self,
        key: &str,
        size: u64,
        tags: &[(String, String)],
        created: SystemTime,
        day: Duration,
    ) -> Option<(SystemTime, String)> {
        self.rules
            .iter()
            .filter(|r| r.enabled && r.filter.matches(key, size, tags))
            .filter_map(|r| {
                let at = match (r.expiration_days, r.expiration_date_ms) {
                    (Some(d), _) => {
                        let at = created + day * d.max(0) as u32;
                        if day == DAY {
                            round_up_to_midnight(at)
                        } else {
                            at
                        }
                    }
                    (None, Some(ms)) => {
                        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
                    }
                    _ => return None,
                };
                Some((at, r.id.clone()))
            })
            .min_by_key(|(at, _)| *at)
    }
}

/// A real day.
pub const DAY: Duration = Duration::from_secs(86_400);

fn round_up_to_midnight(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = DAY.as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.div_ceil(day) * day)
}

/// What the sweeper removed in one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Current versions expired (a delete marker made, or the file removed).
    pub expired: usize,
    /// Non-current versions and lone delete markers removed.
    pub versions_removed: usize,
    /// Multipart uploads aborted.
    pub uploads_aborted: usize,
    /// Versions a rule matched but object lock kept.
    pub kept_by_lock: usize,
}

/// Applies a bucket's rules once, at `now`. Blocking.
pub fn sweep_bucket(
    store: &Store,
    bucket: &str,
    rules: &Rules,
    now: SystemTime,
    day: Duration,
) -> StoreResult<(Swept, Vec<Change>)> {
    let mut swept = Swept::default();
    let mut changes = Vec::new();
    let enabled: Vec<&Rule> = rules.rules.iter().filter(|r| r.enabled).collect();
    if enabled.is_empty() {
        return Ok((swept, changes));
    }
    let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    let days = |n: i32| day * n.max(0) as u32;
    // One key's versions at a time, newest first.
    let mut by_key = ByKey {
        walk: store.walk_versions(bucket, "", None)?,
        next: None,
    };
    while let Some((key, mut versions)) = by_key.next_key()? {
        let Ok(path) = parse_key(&key) else { continue };
        // Current version: Expiration Days / Date.
        if let Some(cur) = versions
            .first()
            .filter(|v| v.is_latest && !v.meta.delete_marker)
        {
            let due = enabled.iter().find(|r| {
                r.filter.matches(&key, cur.size, &cur.meta.tags)
                    && (r
                        .expiration_days
                        .is_some_and(|d| age(cur.modified) >= days(d))
                        || r.expiration_date_ms.is_some_and(|ms| {
                            now >= SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
                        }))
            });
            if let Some(rule) = due {
                let d = match store.delete_current(bucket, &path) {
                    Ok(d) => d,
                    // A locked null version of a suspended bucket cannot be replaced by a marker.
                    Err(StoreError::ObjectLocked(_)) => {
                        swept.kept_by_lock += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                tracing::info!(bucket, key, rule = %rule.id, "lifecycle: expired the current version");
                swept.expired += 1;
                changes.push(Change::from_deleted(&key, &d));
                // The listing is stale now: the key's versions are looked at again next pass.
                continue;
            }
        }
        // Non-current versions: NoncurrentDays beyond NewerNoncurrentVersions.
        let mut removed_ids = Vec::new();
        let mut newer_noncurrent = 0;
        for i in 1..versions.len() {
            let v = &versions[i];
            if v.meta.delete_marker {
                continue;
            }
            // A version becomes non-current when the next newer one is made.
            let since = versions[i - 1].modified;
            let due = enabled.iter().find(|r| {
                r.noncurrent_days.is_some_and(|d| age(since) >= days(d))
                    && r.newer_noncurrent_versions
                        .is_none_or(|n| newer_noncurrent >= n.max(0))
                    && r.filter.matches(&key, v.size, &v.meta.tags)
            });
            newer_noncurrent += 1;
            let Some(rule) = due else { continue };
            if check_deletable(&v.meta, false).is_err() {
                swept.kept_by_lock += 1;
                continue;
            }
            match store.delete_version(bucket, &path, &v.version_id, false) {
                Ok(d) => {
                    tracing::info!(bucket, key, version = %v.version_id, rule = %rule.id, "lifecycle: removed a non-current version");
                    swept.versions_removed += 1;
                    removed_ids.push(v.version_id.clone());
                    changes.push(Change::from_deleted(&key, &d));
                }
                Err(StoreError::ObjectLocked(_)) => swept.kept_by_lock += 1,
                Err(e) => return Err(e),
            }
        }
        versions.retain(|v| !removed_ids.contains(&v.version_id));
        // A delete marker that is the only version left.
        if let [only] = versions.as_slice()
            && only.meta.delete_marker
            && enabled.iter().any(|r| {
                r.expired_object_delete_marker
                    && r.filter.tags.is_empty()
                    && key.starts_with(&r.filter.prefix)
            })
        {
            let d = store.delete_version(bucket, &path, &only.version_id, false)?;
            tracing::info!(bucket, key, version = %only.version_id, "lifecycle: removed an expired delete marker");
            swept.versions_removed += 1;
            changes.push(Change::from_deleted(&key, &d));
        }
    }
    // Incomplete multipart uploads.
    for upload in store.list_uploads(bucket)? {
        let key = &upload.record.key;
        // Rules with tags have no AbortIncompleteMultipartUpload (refused when set).
        let due = enabled.iter().find(|r| {
            r.abort_multipart_days
                .is_some_and(|d| age(upload.record.initiated()) >= days(d))
                && key.starts_with(&r.filter.prefix)
        });
        if let Some(rule) = due {
            match store.abort_upload(bucket, key, &upload.id) {
                Ok(()) | Err(StoreError::NoSuchUpload) => {}
                Err(e) => return Err(e),
            }
            tracing::info!(bucket, key, upload = %upload.id, rule = %rule.id, "lifecycle: aborted an incomplete multipart upload");
            swept.uploads_aborted += 1;
        }
    }
    Ok((swept, changes))
}

/// The versions of a bucket one key at a time (newest first), read as the sweep goes, so a
/// bucket with many versions is swept in the memory of one key.
struct ByKey<'a> {
    walk: VersionWalk<'a>,
    /// The first version of the next key, read ahead.
    next: Option<VersionInfo>,
}

impl ByKey<'_> {
    fn next_key(&mut self) -> StoreResult<Option<(String, Vec<VersionInfo>)>> {
        let first = match self.next.take() {
            Some(v) => v,
            None => match self.walk.next_version()? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        let key = first.key.clone();
        let mut versions = vec![first];
        while let Some(v) = self.walk.next_version()? {
            if v.key != key {
                self.next = Some(v);
                break;
            }
            versions.push(v);
        }
        Ok(Some((key, versions)))
    }
}

/// What a removal changed about a key's current version, for the catalog.
#[derive(Debug)]
pub enum Change {
    /// The current version is gone.
    Deleted(String),
    /// An older version became current.
    Written(String, Box<ObjectMeta>),
    /// Nothing current changed.
    None,
}

impl Change {
    fn from_deleted(key: &str, d: &crate::store::versions::Deleted) -> Self {
        match (&d.promoted, d.current_gone) {
            (Some(meta), _) => Change::Written(key.to_owned(), Box::new(meta.clone())),
            (None, true) => Change::Deleted(key.to_owned()),
            _ => Change::None,
        }
    }
}

/// How long a sweeping gateway's lease on a bucket lasts without renewal (it is renewed every
/// third of that while the pass runs): a killed sweeper's buckets are taken over this long after.
const SWEEP_LEASE: Duration = Duration::from_secs(60);

/// Runs the sweeper until the task is aborted: a pass every quarter "day" (at least every
/// second, at most every hour).
pub async fn run(store: Arc<Store>, catalog: Catalog, events: Subscribers, day: Duration) {
    let interval = (day / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        tokio::time::sleep(interval).await;
        sweep_all(&store, &catalog, &events, day).await;
    }
}

/// One pass over every bucket with rules. Each bucket is swept under the catalog lease
/// `lifecycle:<bucket>`, so gateways sharing the catalog take turns: a bucket whose lease
/// another gateway holds is passed over (that gateway is sweeping it). Failures are logged;
/// the next pass tries again.
pub async fn sweep_all(store: &Arc<Store>, catalog: &Catalog, events: &Subscribers, day: Duration) {
    let s = store.clone();
    let buckets = blocking(move || -> StoreResult<Vec<(String, Rules)>> {
        let mut out = Vec::new();
        for b in s.list_buckets()? {
            if let Some(rules) = Rules::of(&s, &b.name)? {
                out.push((b.name, rules));
            }
        }
        Ok(out)
    })
    .await;
    let buckets = match buckets {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "lifecycle sweep failed: cannot list the buckets");
            return;
        }
    };
    for (bucket, rules) in buckets {
        let lease = match catalog
            .hold_lease(&format!("lifecycle:{bucket}"), SWEEP_LEASE)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::debug!(
                    bucket,
                    "another gateway is sweeping this bucket; passed over"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(bucket, error = %e, "lifecycle sweep skipped: no lease from the catalog");
                continue;
            }
        };
        let (s, b) = (store.clone(), bucket.clone());
        let pass = blocking(move || sweep_bucket(&s, &b, &rules, SystemTime::now(), day)).await;
        lease.release().await;
        let changes = match pass {
            Ok((swept, changes)) => {
                if swept != Swept::default() {
                    tracing::info!(
                        bucket,
                        expired = swept.expired,
                        versions_removed = swept.versions_removed,
                        uploads_aborted = swept.uploads_aborted,
                        kept_by_lock = swept.kept_by_lock,
                        "lifecycle sweep"
                    );
                }
                changes
            }
            Err(e) => {
                tracing::warn!(bucket, error = %e, "lifecycle sweep failed");
                continue;
            }
        };
        for change in changes {
            match change {
                Change::Deleted(key) => events.deleted(&bucket, &key).await,
                Change::Written(key, meta) => events.written(&bucket, &key, &meta).await,
                Change::None => {}
            }
        }
    }
}
