//! Conditional request headers, evaluated as S3 does (s3s parses them but leaves them to us).

use std::time::SystemTime;

use s3s::dto::{ETagCondition, Timestamp};

use super::error::http_date;
use super::{RequestError, RequestResult};

use crate::store::meta::ObjectMeta;

/// True when an `If-Match`-style condition holds for an object with this ETag.
pub(crate) fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value().trim_matches('"') == etag,
    }
}

fn secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => 0,
    }
}

fn ts_secs(t: &Timestamp) -> i64 {
    let odt: time::OffsetDateTime = t.clone().into();
    odt.unix_timestamp()
}

/// The four conditional headers of a read (or a copy source).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

/// What a failed condition means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// All conditions hold.
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a precondition failed.
    PreconditionFailed,
}

impl Conditions<'_> {
    /// Evaluates in S3's order: If-Match beats If-Unmodified-Since, If-None-Match beats
    /// If-Modified-Since (RFC 7232 §6), all at one-second resolution like HTTP dates.
    pub(crate) fn evaluate(&self, etag: &str, modified: SystemTime) -> Outcome {
        let m = secs(modified);
        if let Some(c) = self.if_match {
            if !etag_matches(c, etag) {
                return Outcome::PreconditionFailed;
            }
        } else if let Some(t) = self.if_unmodified_since
            && m > ts_secs(t)
        {
            return Outcome::PreconditionFailed;
        }
        if let Some(c) = self.if_none_match {
            if etag_matches(c, etag) {
                return Outcome::NotModified;
            }
        } else if let Some(t) = self.if_modified_since
            && m <= ts_secs(t)
        {
            return Outcome::NotModified;
        }
        Outcome::Proceed
    }

    /// For GET/HEAD: 304 with the validators, or 412.
    pub(crate) fn check_read(&self, meta: &ObjectMeta, modified: SystemTime) -> RequestResult<()> {
        match self.evaluate(&meta.etag, modified) {
            Outcome::Proceed => Ok(()),
            Outcome::PreconditionFailed => Err(RequestError::PreconditionFailed),
            Outcome::NotModified => Err(RequestError::NotModified {
                etag: meta.etag.clone(),
                last_modified: http_date(modified),
            }),
        }
    }

    /// For copy sources (`x-amz-copy-source-if-*`): every failure is 412.
    pub(crate) fn check_copy_source(
        &self,
        meta: &ObjectMeta,
        modified: SystemTime,
    ) -> RequestResult<()> {
        match self.evaluate(&meta.etag, modified) {
            Outcome::Proceed => Ok(()),
            _ => Err(RequestError::PreconditionFailed),
        }
    }
}

/// The owned conditional headers of a request, so they can move to the blocking pool.
#[derive(Debug, Default, Clone)]
pub(crate) struct OwnedConditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

/// The four conditional headers of an s3s input, taken once for every operation that has them:
/// `conditions!(input)` for a read (`if_match`, ...), `conditions!(copy_source input)` for a
/// copy source (`copy_source_if_match`, ...).
macro_rules! conditions {
    ($input:ident) => {
        $crate::s3::conditional::OwnedConditions {
            if_match: $input.if_match,
            if_none_match: $input.if_none_match,
            if_modified_since: $input.if_modified_since,
            if_unmodified_since: $input.if_unmodified_since,
        }
    };
    (copy_source $input:ident) => {
        $crate::s3::conditional::OwnedConditions {
            if_match: $input.copy_source_if_match,
            if_none_match: $input.copy_source_if_none_match,
            if_modified_since: $input.copy_source_if_modified_since,
            if_unmodified_since: $input.copy_source_if_unmodified_since,
        }
    };
}
pub(crate) use conditions;

impl OwnedConditions {
    /// The conditions, borrowed for evaluation.
    pub(crate) fn borrow(&self) -> Conditions<'_> {
        Conditions {
            if_match: self.if_match.as_ref(),
            if_none_match: self.if_none_match.as_ref(),
            if_modified_since: self.if_modified_since.as_ref(),
            if_unmodified_since: self.if_unmodified_since.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::ETag;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn s3_precedence() {
        let good = ETagCondition::ETag(ETag::Strong("abc".into()));
        let bad = ETagCondition::ETag(ETag::Strong("zzz".into()));
        let early = Timestamp::from(at(100));
        let late = Timestamp::from(at(10_000));
        let m = at(5_000);
        // If-Match true wins over a failing If-Unmodified-Since.
        let c = Conditions {
            if_match: Some(&good),
            if_unmodified_since: Some(&early),
            ..Default::default()
        };
        assert_eq!(c.evaluate("abc", m), Outcome::Proceed);
        let c = Conditions {
            if_match: Some(&bad),
            ..Default::default()
        };
        assert_eq!(c.evaluate("abc", m), Outcome::PreconditionFailed);
        // If-None-Match false wins over a "not modified" If-Modified-Since.
        let c = Conditions {
            if_none_match: Some(&bad),
            if_modified_since: Some(&late),
            ..Default::default()
        };
        assert_eq!(c.evaluate("abc", m), Outcome::Proceed);
        let c = Conditions {
            if_none_match: Some(&good),
            ..Default::default()
        };
        assert_eq!(c.evaluate("abc", m), Outcome::NotModified);
        let c = Conditions {
            if_modified_since: Some(&late),
            ..Default::default()
        };
        assert_eq!(c.evaluate("abc", m), Outcome::NotModified);
        let c = Conditions {
            if_modified_since: Some(&early),
            ..Default::default()
        };
        assert_eq!(c.evaluate("abc", m), Outcome::Proceed);
        let c = Conditions {
            if_none_match: Some(&ETagCondition::Any),
            ..Default::default()
        };
        assert_eq!(c.evaluate("abc", m), Outcome::NotModified);
    }
}
