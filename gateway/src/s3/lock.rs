//! Object lock: Put/GetObjectLockConfiguration (the bucket's default retention), Put/Get
//! ObjectRetention and Put/GetObjectLegalHold (one version's), and the lock settings a write
//! takes from its headers or the bucket's default.
//!
//! A version's retention and legal hold live in its record ([`ObjectMeta`]); the store refuses
//! to remove or replace a protected version ([`crate::store::versions::check_deletable`]).
//! The bucket's configuration is the `object-lock` setting, a JSON document of [`LockConfig`].
//! `x-amz-bypass-governance-retention` is a permission of its own (checked with the request's
//! access in `crate::auth`: the bucket's owner, or a policy allowing
//! `s3:BypassGovernanceRetention`).

use std::time::{Duration, SystemTime};

use s3s::dto::*;
use s3s::{S3Request, S3Response};
use serde::{Deserialize, Serialize};

use super::{Gateway, RequestError, RequestResult, blocking, object_path};
use crate::store::Store;
use crate::store::StoreError;
use crate::store::meta::{ObjectMeta, Retention, RetentionMode};
use crate::store::settings::Setting;
use crate::store::versions::{Versioning, now_ms};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A bucket's object lock configuration, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LockConfig {
    /// Object lock is on (set at CreateBucket or by PutObjectLockConfiguration).
    pub enabled: bool,
    /// The retention new versions get when the write names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultRule>,
}

/// A default retention rule: a mode and a period in days or years.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DefaultRule {
    pub mode: RetentionMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub years: Option<i32>,
}

/// The bucket's object lock configuration, if it has one.
pub(crate) fn config(store: &Store, bucket: &str) -> RequestResult<Option<LockConfig>> {
    let Some(doc) = store.settings().get(bucket, Setting::ObjectLock)? else {
        return Ok(None);
    };
    serde_json::from_slice(&doc)
        .map(Some)
        .map_err(|e| RequestError::Internal(format!("the object lock setting is unreadable: {e}")))
}

/// Turns object lock on for a bucket created with it (versioning comes with it).
pub(crate) fn enable_at_create(store: &Store, bucket: &str) -> RequestResult<()> {
    store.set_versioning(bucket, Versioning::Enabled)?;
    let doc = serde_json::to_vec(&LockConfig {
        enabled: true,
        default: None,
    })
    .map_err(|e| RequestError::Internal(e.to_string()))?;
    Ok(store.settings().put(bucket, Setting::ObjectLock, &doc)?)
}

fn mode_of(m: &str) -> RequestResult<RetentionMode> {
    match m {
        ObjectLockRetentionMode::GOVERNANCE => Ok(RetentionMode::Governance),
        ObjectLockRetentionMode::COMPLIANCE => Ok(RetentionMode::Compliance),
        _ => Err(RequestError::InvalidArgument(
            "Unknown wormMode directive.".into(),
        )),
    }
}

fn mode_name(m: RetentionMode) -> &'static str {
    match m {
        RetentionMode::Governance => ObjectLockRetentionMode::GOVERNANCE,
        RetentionMode::Compliance => ObjectLockRetentionMode::COMPLIANCE,
    }
}

fn ms_of(t: &Timestamp) -> i64 {
    let t = time::OffsetDateTime::from(t.clone());
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn timestamp_of(ms: i64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// The lock headers of a write (PutObject, CopyObject, CreateMultipartUpload).
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteLock {
    pub mode: Option<String>,
    pub until: Option<Timestamp>,
    pub legal_hold: Option<String>,
}

impl WriteLock {
    /// The lock headers of a write request.
    pub(crate) fn new(
        mode: Option<&ObjectLockMode>,
        until: Option<&Timestamp>,
        legal_hold: Option<&ObjectLockLegalHoldStatus>,
    ) -> Self {
        WriteLock {
            mode: mode.map(|m| m.as_str().to_owned()),
            until: until.cloned(),
            legal_hold: legal_hold.map(|h| h.as_str().to_owned()),
        }
    }

    fn is_empty(&self) -> bool {
        self.mode.is_none() && self.until.is_none() && self.legal_hold.is_none()
    }
}

/// Sets the retention and legal hold a new version gets: from the write's headers, else the
/// bucket's default rule. Lock headers on a bucket without object lock are refused.
pub(crate) fn apply_on_write(
    store: &Store,
    bucket: &str,
    lock: &WriteLock,
    meta: &mut ObjectMeta,
) -> RequestResult<()> {
    meta.retention = None;
    meta.legal_hold = false;
    let cfg = config(store, bucket)?.filter(|c| c.enabled);
    let Some(cfg) = cfg else {
        if lock.is_empty() {
            return Ok(());
        }
        return Err(RequestError::InvalidRequest(
            "Bucket is missing Object Lock Configuration".into(),
        ));
    };
    match (&lock.mode, &lock.until) {
        (Some(mode), Some(until)) => {
            let until_ms = ms_of(until);
            if until_ms <= now_ms() {
                return Err(RequestError::InvalidArgument(
                    "The retain until date must be in the future!".into(),
                ));
            }
            meta.retention = Some(Retention {
                mode: mode_of(mode)?,
                until_ms,
            });
        }
        (None, None) => {
            if let Some(rule) = &cfg.default {
                let days = rule.days.unwrap_or(0) as i64 + rule.years.unwrap_or(0) as i64 * 365;
                meta.retention = Some(Retention {
                    mode: rule.mode,
                    until_ms: now_ms() + days * DAY_MS,
                });
            }
        }
        _ => {
            return Err(RequestError::InvalidArgument(
                "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied".into(),
            ));
        }
    }
    meta.legal_hold = lock.legal_hold.as_deref() == Some(ObjectLockLegalHoldStatus::ON);
    Ok(())
}

/// The lock fields GET and HEAD answer with.
pub(crate) fn read_fields(
    meta: &ObjectMeta,
) -> (
    Option<ObjectLockMode>,
    Option<Timestamp>,
    Option<ObjectLockLegalHoldStatus>,
) {
    let r = meta.retention.as_ref();
    (
        r.map(|r| ObjectLockMode::from(mode_name(r.mode).to_owned())),
        r.map(|r| timestamp_of(r.until_ms)),
        meta.legal_hold
            .then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON)),
    )
}

/// PutObjectLockConfiguration: turns object lock on (the bucket must be versioned) and sets
/// or clears the default retention.
pub(crate) async fn put_object_lock_configuration(
    gw: &Gateway,
    req: S3Request<PutObjectLockConfigurationInput>,
) -> RequestResult<S3Response<PutObjectLockConfigurationOutput>> {
    let input = req.input;
    let cfg = input.object_lock_configuration.unwrap_or_default();
    if cfg
        .object_lock_enabled
        .as_ref()
        .map(ObjectLockEnabled::as_str)
        != Some(ObjectLockEnabled::ENABLED)
    {
        return Err(RequestError::MalformedXml(
            "The XML you provided was not well-formed or did not validate against our published schema: ObjectLockEnabled must be Enabled",
        ));
    }
    let default = match cfg.rule.and_then(|r| r.default_retention) {
        None => None,
        Some(d) => {
            let mode = mode_of(d.mode.as_ref().map(|m| m.as_str()).unwrap_or(""))?;
            match (d.days, d.years) {
                (Some(n), None) | (None, Some(n)) if n > 0 => {}
                _ => {
                    return Err(RequestError::MalformedXml(
                        "The XML you provided was not well-formed or did not validate against our published schema: DefaultRetention needs a positive Days or Years, not both",
                    ));
                }
            }
            Some(DefaultRule {
                mode,
                days: d.days,
                years: d.years,
            })
        }
    };
    let store = gw.store.clone();
    let bucket = input.bucket;
    blocking(move || -> RequestResult<()> {
        store.bucket_fd(&bucket)?;
        if store.versioning(&bucket)? != Versioning::Enabled {
            return Err(RequestError::InvalidBucketState(
                "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration",
            ));
        }
        let doc = serde_json::to_vec(&LockConfig {
            enabled: true,
            default,
        })
        .map_err(|e| RequestError::Internal(e.to_string()))?;
        Ok(store.settings().put(&bucket, Setting::ObjectLock, &doc)?)
    })
    .await?;
    Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
}

/// GetObjectLockConfiguration.
pub(crate) async fn get_object_lock_configuration(
    gw: &Gateway,
    req: S3Request<GetObjectLockConfigurationInput>,
) -> RequestResult<S3Response<GetObjectLockConfigurationOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    let cfg = blocking(move || -> RequestResult<_> {
        store.bucket_fd(&bucket)?;
        config(&store, &bucket)
    })
    .await?
    .ok_or(RequestError::NoLockConfiguration)?;
    let rule = cfg.default.map(|d| ObjectLockRule {
        default_retention: Some(DefaultRetention {
            days: d.days,
            years: d.years,
            mode: Some(ObjectLockRetentionMode::from(mode_name(d.mode).to_owned())),
        }),
    });
    Ok(S3Response::new(GetObjectLockConfigurationOutput {
        object_lock_configuration: Some(ObjectLockConfiguration {
            object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
            rule,
        }),
    }))
}

/// Checks a retention change against the one in force: COMPLIANCE can only be extended;
/// GOVERNANCE can be shortened, removed or changed only with the bypass header.
fn check_retention_change(
    old: Option<&Retention>,
    new: Option<&Retention>,
    bypass: bool,
) -> Result<(), StoreError> {
    let Some(old) = old.filter(|r| r.until_ms > now_ms()) else {
        return Ok(());
    };
    let extends = new.is_some_and(|n| n.mode == old.mode && n.until_ms >= old.until_ms);
    if extends {
        return Ok(());
    }
    match old.mode {
        RetentionMode::Compliance => Err(StoreError::ObjectLocked(
            "a COMPLIANCE retention can only be extended",
        )),
        RetentionMode::Governance if bypass => Ok(()),
        RetentionMode::Governance => Err(StoreError::ObjectLocked(
            "a GOVERNANCE retention can be shortened or removed only with x-amz-bypass-governance-retention",
        )),
    }
}

/// PutObjectRetention.
pub(crate) async fn put_object_retention(
    gw: &Gateway,
    req: S3Request<PutObjectRetentionInput>,
) -> RequestResult<S3Response<PutObjectRetentionOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let bypass = input.bypass_governance_retention.unwrap_or(false);
    let new = match input.retention {
        Some(ObjectLockRetention {
            mode: Some(mode),
            retain_until_date: Some(until),
        }) => {
            let until_ms = ms_of(&until);
            if until_ms <= now_ms() {
                return Err(RequestError::InvalidArgument(
                    "The retain until date must be in the future!".into(),
                ));
            }
            Some(Retention {
                mode: mode_of(mode.as_str())?,
                until_ms,
            })
        }
        Some(ObjectLockRetention {
            mode: None,
            retain_until_date: None,
        })
        | None => None,
        Some(_) => {
            return Err(RequestError::MalformedXml(
                "The XML you provided was not well-formed or did not validate against our published schema: Retention needs both Mode and RetainUntilDate",
            ));
        }
    };
    let store = gw.store.clone();
    let (bucket, version) = (input.bucket, input.version_id);
    blocking(move || -> RequestResult<()> {
        require_lock(&store, &bucket)?;
        store.update_version_meta(&bucket, &path, version.as_deref(), |meta| {
            check_retention_change(meta.retention.as_ref(), new.as_ref(), bypass)?;
            meta.retention = new;
            Ok(())
        })?;
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutObjectRetentionOutput::default()))
}

/// GetObjectRetention.
pub(crate) async fn get_object_retention(
    gw: &Gateway,
    req: S3Request<GetObjectRetentionInput>,
) -> RequestResult<S3Response<GetObjectRetentionOutput>> {
    let input = req.input;
    let meta = read_meta(gw, input.bucket, &input.key, input.version_id).await?;
    let r = meta.retention.ok_or(RequestError::NoObjectLockSetting)?;
    Ok(S3Response::new(GetObjectRetentionOutput {
        retention: Some(ObjectLockRetention {
            mode: Some(ObjectLockRetentionMode::from(mode_name(r.mode).to_owned())),
            retain_until_date: Some(timestamp_of(r.until_ms)),
        }),
    }))
}

/// PutObjectLegalHold.
pub(crate) async fn put_object_legal_hold(
    gw: &Gateway,
    req: S3Request<PutObjectLegalHoldInput>,
) -> RequestResult<S3Response<PutObjectLegalHoldOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let on = match input
        .legal_hold
        .and_then(|h| h.status)
        .as_ref()
        .map(ObjectLockLegalHoldStatus::as_str)
    {
        Some(ObjectLockLegalHoldStatus::ON) => true,
        Some(ObjectLockLegalHoldStatus::OFF) => false,
        _ => {
            return Err(RequestError::MalformedXml(
                "The XML you provided was not well-formed or did not validate against our published schema: Status must be ON or OFF",
            ));
        }
    };
    let store = gw.store.clone();
    let (bucket, version) = (input.bucket, input.version_id);
    blocking(move || -> RequestResult<()> {
        require_lock(&store, &bucket)?;
        store.update_version_meta(&bucket, &path, version.as_deref(), |meta| {
            meta.legal_hold = on;
            Ok(())
        })?;
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
}

/// GetObjectLegalHold.
pub(crate) async fn get_object_legal_hold(
    gw: &Gateway,
    req: S3Request<GetObjectLegalHoldInput>,
) -> RequestResult<S3Response<GetObjectLegalHoldOutput>> {
    let input = req.input;
    let meta = read_meta(gw, input.bucket, &input.key, input.version_id).await?;
    let status = if meta.legal_hold {
        ObjectLockLegalHoldStatus::ON
    } else {
        ObjectLockLegalHoldStatus::OFF
    };
    Ok(S3Response::new(GetObjectLegalHoldOutput {
        legal_hold: Some(ObjectLockLegalHold {
            status: Some(ObjectLockLegalHoldStatus::from_static(status)),
        }),
    }))
}

fn require_lock(store: &Store, bucket: &str) -> RequestResult<()> {
    store.bucket_fd(bucket)?;
    match config(store, bucket)? {
        Some(c) if c.enabled => Ok(()),
        _ => Err(RequestError::InvalidRequest(
            "Bucket is missing Object Lock Configuration".into(),
        )),
    }
}

/// The record of one version, for the lock getters.
async fn read_meta(
    gw: &Gateway,
    bucket: String,
    key: &str,
    version: Option<String>,
) -> RequestResult<ObjectMeta> {
    let path = object_path(key)?;
    let store = gw.store.clone();
    blocking(move || -> RequestResult<ObjectMeta> {
        require_lock(&store, &bucket)?;
        match store.open_version(&bucket, &path, version.as_deref())? {
            crate::store::versions::Found::Object(h) => Ok(h.meta),
            crate::store::versions::Found::DeleteMarker { .. } => {
                Err(StoreError::IsDeleteMarker.into())
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliance_only_extends_and_governance_yields_to_bypass() {
        let later = now_ms() + DAY_MS;
        let c = Retention {
            mode: RetentionMode::Compliance,
            until_ms: later,
        };
        let g = Retention {
            mode: RetentionMode::Governance,
            until_ms: later,
        };
        let longer = |r: Retention| Retention {
            until_ms: r.until_ms + 1,
            ..r
        };
        let shorter = |r: Retention| Retention {
            until_ms: r.until_ms - 1,
            ..r
        };
        assert!(check_retention_change(Some(&c), Some(&longer(c)), false).is_ok());
        for bypass in [false, true] {
            assert!(check_retention_change(Some(&c), Some(&shorter(c)), bypass).is_err());
            assert!(check_retention_change(Some(&c), None, bypass).is_err());
            assert!(check_retention_change(Some(&c), Some(&g), bypass).is_err());
        }
        assert!(check_retention_change(Some(&g), Some(&shorter(g)), false).is_err());
        assert!(check_retention_change(Some(&g), Some(&shorter(g)), true).is_ok());
        assert!(check_retention_change(Some(&g), None, true).is_ok());
        assert!(check_retention_change(Some(&g), Some(&c), false).is_err());
        // An expired retention protects nothing.
        let old = Retention {
            mode: RetentionMode::Compliance,
            until_ms: now_ms() - 1,
        };
        assert!(check_retention_change(Some(&old), None, false).is_ok());
    }
}
