//! Put/Get/DeleteBucketLifecycleConfiguration, and the `x-amz-expiration` header writes and
//! reads answer with. The rules' stored form and the sweeper that applies them are in
//! [`crate::lifecycle`].

use std::time::{Duration, SystemTime};

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::{Gateway, RequestError, RequestResult, blocking, format_http_date, timestamp};
use crate::lifecycle::{Filter, FilterForm, Rule, Rules};
use crate::store::Store;
use crate::store::meta::ObjectMeta;
use crate::store::settings::Setting;

/// S3's limit on rules per configuration.
const MAX_RULES: usize = 1000;

fn malformed(what: &'static str) -> RequestError {
    RequestError::MalformedXml(what)
}

fn ms_of(t: &Timestamp) -> i64 {
    let t = time::OffsetDateTime::from(t.clone());
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn positive(n: Option<i32>, what: &'static str) -> RequestResult<Option<i32>> {
    match n {
        Some(n) if n <= 0 => Err(RequestError::InvalidArgument(format!(
            "'{what}' for a lifecycle rule must be a positive integer"
        ))),
        other => Ok(other),
    }
}

fn tag_pair(t: &Tag) -> RequestResult<(String, String)> {
    match (&t.key, &t.value) {
        (Some(k), Some(v)) => Ok((k.clone(), v.clone())),
        _ => Err(malformed(
            "The XML you provided was not well-formed or did not validate against our published schema: a Tag needs a Key and a Value",
        )),
    }
}

/// A rule as sent, checked as S3 checks it.
fn parse_rule(r: LifecycleRule) -> RequestResult<Rule> {
    let id = r.id.unwrap_or_default();
    if id.len() > 255 {
        return Err(RequestError::InvalidArgument(
            "ID length should not exceed allowed limit of 255".into(),
        ));
    }
    let enabled = match r.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        _ => {
            return Err(malformed(
                "The XML you provided was not well-formed or did not validate against our published schema: Status must be Enabled or Disabled",
            ));
        }
    };
    if r.transitions.is_some() || r.noncurrent_version_transitions.is_some() {
        return Err(RequestError::NotImplemented(
            "this gateway has one storage class: lifecycle transitions are not supported",
        ));
    }
    let filter = match (r.prefix, r.filter) {
        (Some(_), Some(_)) => {
            return Err(malformed(
                "The XML you provided was not well-formed or did not validate against our published schema: a rule has either Prefix or Filter",
            ));
        }
        (Some(prefix), None) => Filter {
            form: FilterForm::RulePrefix,
            prefix,
            ..Default::default()
        },
        (None, None) => Filter::default(),
        (None, Some(f)) => {
            if let Some(and) = f.and {
                Filter {
                    form: FilterForm::And,
                    prefix: and.prefix.unwrap_or_default(),
                    tags: and
                        .tags
                        .unwrap_or_default()
                        .iter()
                        .map(tag_pair)
                        .collect::<RequestResult<_>>()?,
                    size_greater_than: and.object_size_greater_than,
                    size_less_than: and.object_size_less_than,
                }
            } else {
                let set = [
                    f.prefix.is_some(),
                    f.tag.is_some(),
                    f.object_size_greater_than.is_some(),
                    f.object_size_less_than.is_some(),
                ];
                if set.iter().filter(|s| **s).count() > 1 {
                    return Err(malformed(
                        "The XML you provided was not well-formed or did not validate against our published schema: a Filter with several conditions needs And",
                    ));
                }
                Filter {
                    form: FilterForm::Single,
                    prefix: f.prefix.unwrap_or_default(),
                    tags: f
                        .tag
                        .as_ref()
                        .map(tag_pair)
                        .transpose()?
                        .into_iter()
                        .collect(),
                    size_greater_than: f.object_size_greater_than,
                    size_less_than: f.object_size_less_than,
                }
            }
        }
    };
    for (i, (k, _)) in filter.tags.iter().enumerate() {
        if filter.tags[..i].iter().any(|(other, _)| other == k) {
            return Err(RequestError::InvalidArgument(
                "Duplicate Tag Keys are not allowed.".into(),
            ));
        }
    }
    let mut rule = Rule {
        id,
        enabled,
        filter,
        ..Default::default()
    };
    if let Some(e) = r.expiration {
        let marker = e.expired_object_delete_marker.unwrap_or(false);
        let set = [e.days.is_some(), e.date.is_some(), marker];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(malformed(
                "The XML you provided was not well-formed or did not validate against our published schema: Expiration takes one of Days, Date or ExpiredObjectDeleteMarker",
            ));
        }
        rule.expiration_days = positive(e.days, "Days")?;
        rule.expiration_date_ms = e.date.as_ref().map(ms_of);
        rule.expired_object_delete_marker = marker;
    }
    if let Some(n) = r.noncurrent_version_expiration {
        rule.noncurrent_days = positive(n.noncurrent_days, "NoncurrentDays")?;
        if rule.noncurrent_days.is_none() {
            return Err(malformed(
                "The XML you provided was not well-formed or did not validate against our published schema: NoncurrentVersionExpiration needs NoncurrentDays",
            ));
        }
        rule.newer_noncurrent_versions =
            positive(n.newer_noncurrent_versions, "NewerNoncurrentVersions")?;
    }
    if let Some(a) = r.abort_incomplete_multipart_upload {
        rule.abort_multipart_days = positive(a.days_after_initiation, "DaysAfterInitiation")?;
    }
    // Uploads and delete markers carry no tags, so S3 refuses these pairs outright.
    if !rule.filter.tags.is_empty() && rule.abort_multipart_days.is_some() {
        return Err(RequestError::InvalidRequest(
            "AbortIncompleteMultipartUpload cannot be specified with Tags.".into(),
        ));
    }
    if !rule.filter.tags.is_empty() && rule.expired_object_delete_marker {
        return Err(RequestError::InvalidRequest(
            "ExpiredObjectDeleteMarker cannot be specified with Tags.".into(),
        ));
    }
    if rule.expiration_days.is_none()
        && rule.expiration_date_ms.is_none()
        && !rule.expired_object_delete_marker
        && rule.noncurrent_days.is_none()
        && rule.abort_multipart_days.is_none()
    {
        return Err(malformed(
            "The XML you provided was not well-formed or did not validate against our published schema: a rule needs at least one action",
        ));
    }
    Ok(rule)
}

/// A stored rule as S3 returns it.
fn rule_dto(r: &Rule) -> LifecycleRule {
    let f = &r.filter;
    let (prefix, filter) = match f.form {
        FilterForm::RulePrefix => (Some(f.prefix.clone()), None),
        FilterForm::And => (
            None,
            Some(LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    prefix: Some(f.prefix.clone()),
                    tags: (!f.tags.is_empty()).then(|| {
                        f.tags
                            .iter()
                            .map(|(k, v)| Tag {
                                key: Some(k.clone()),
                                value: Some(v.clone()),
                            })
                            .collect()
                    }),
                    object_size_greater_than: f.size_greater_than,
                    object_size_less_than: f.size_less_than,
                }),
                ..Default::default()
            }),
        ),
        FilterForm::Single => (
            None,
            Some(LifecycleRuleFilter {
                prefix: (f.size_greater_than.is_none()
                    && f.size_less_than.is_none()
                    && f.tags.is_empty())
                .then(|| f.prefix.clone()),
                tag: f.tags.first().map(|(k, v)| Tag {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                }),
                object_size_greater_than: f.size_greater_than,
                object_size_less_than: f.size_less_than,
                ..Default::default()
            }),
        ),
    };
    let expiration = (r.expiration_days.is_some()
        || r.expiration_date_ms.is_some()
        || r.expired_object_delete_marker)
        .then(|| LifecycleExpiration {
            days: r.expiration_days,
            date: r.expiration_date_ms.map(|ms| {
                timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
            }),
            expired_object_delete_marker: r.expired_object_delete_marker.then_some(true),
        });
    LifecycleRule {
        id: (!r.id.is_empty()).then(|| r.id.clone()),
        status: ExpirationStatus::from_static(if r.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        prefix,
        filter,
        expiration,
        noncurrent_version_expiration: r.noncurrent_days.map(|d| NoncurrentVersionExpiration {
            noncurrent_days: Some(d),
            newer_noncurrent_versions: r.newer_noncurrent_versions,
        }),
        abort_incomplete_multipart_upload: r.abort_multipart_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: Some(d),
            }
        }),
        noncurrent_version_transitions: None,
        transitions: None,
    }
}

/// PutBucketLifecycleConfiguration.
pub(crate) async fn put_bucket_lifecycle_configuration(
    gw: &Gateway,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> RequestResult<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let input = req.input;
    let sent = input
        .lifecycle_configuration
        .map(|c| c.rules)
        .unwrap_or_default();
    if sent.is_empty() || sent.len() > MAX_RULES {
        return Err(malformed(
            "The XML you provided was not well-formed or did not validate against our published schema: 1 to 1000 rules",
        ));
    }
    let rules = Rules {
        rules: sent
            .into_iter()
            .map(parse_rule)
            .collect::<RequestResult<_>>()?,
    };
    let mut ids: Vec<&str> = rules
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .filter(|i| !i.is_empty())
        .collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(RequestError::InvalidArgument(
            "Rule ID must be unique. Found same ID for more than one rule".into(),
        ));
    }
    let doc = serde_json::to_vec(&rules).map_err(|e| RequestError::Internal(e.to_string()))?;
    let store = gw.store.clone();
    let bucket = input.bucket;
    blocking(move || -> RequestResult<()> {
        store.bucket_fd(&bucket)?;
        Ok(store.settings().put(&bucket, Setting::Lifecycle, &doc)?)
    })
    .await?;
    Ok(S3Response::new(
        PutBucketLifecycleConfigurationOutput::default(),
    ))
}

/// GetBucketLifecycleConfiguration.
pub(crate) async fn get_bucket_lifecycle_configuration(
    gw: &Gateway,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> RequestResult<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    let rules = blocking(move || -> RequestResult<_> {
        store.bucket_fd(&bucket)?;
        Ok(Rules::of(&store, &bucket)?)
    })
    .await?
    .ok_or(RequestError::NoLifecycleConfiguration)?;
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(rules.rules.iter().map(rule_dto).collect()),
        ..Default::default()
    }))
}

/// DeleteBucketLifecycle.
pub(crate) async fn delete_bucket_lifecycle(
    gw: &Gateway,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> RequestResult<S3Response<DeleteBucketLifecycleOutput>> {
    let store = gw.store.clone();
    let bucket = req.input.bucket;
    blocking(move || -> RequestResult<()> {
        store.bucket_fd(&bucket)?;
        Ok(store.settings().delete(&bucket, Setting::Lifecycle)?)
    })
    .await?;
    Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
}

/// The `x-amz-expiration` value for a current version (`meta`, created at `created`), if a
/// rule of the bucket expires it: `expiry-date="<HTTP date>", rule-id="<id>"`. Blocking (one
/// `stat` of the setting).
pub(crate) fn expiration_header(
    store: &Store,
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
    created: SystemTime,
    day: Duration,
) -> Option<String> {
    let rules = Rules::of(store, bucket).ok()??;
    let (at, id) = rules.expiry(key, meta.size, &meta.tags, created, day)?;
    let date = format_http_date(&timestamp(at))?;
    Some(format!("expiry-date=\"{date}\", rule-id=\"{id}\""))
}
