//! Background transcode jobs: `POST /_nebula/v1/transcode`, `GET /_nebula/v1/jobs`,
//! `GET /_nebula/v1/jobs/{id}`, `POST /_nebula/v1/jobs/{id}/cancel`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// `POST /transcode`: one job per quality for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscodeRequest {
    /// Bucket of the source object.
    pub bucket: String,
    /// Key of the source object.
    pub key: String,
    /// Target heights (`480`, `"720p"`).
    pub qualities: Vec<QualityName>,
}

/// A quality as a client writes it: a height (`480`) or text (`"480"`, `"480p"`). Any other
/// JSON scalar is kept as its text, so the gateway can refuse it as an unknown quality
/// (`InvalidQuality`) rather than as malformed JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum QualityName {
    /// A number.
    Height(u64),
    /// Anything else, as written.
    Text(String),
}

impl fmt::Display for QualityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QualityName::Height(h) => write!(f, "{h}"),
            QualityName::Text(t) => f.write_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for QualityName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl serde::de::Visitor<'_> for Scalar {
            type Value = QualityName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quality such as 480 or \"720p\"")
            }
            fn visit_u64<E>(self, v: u64) -> Result<QualityName, E> {
                Ok(QualityName::Height(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<QualityName, E> {
                Ok(QualityName::Text(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<QualityName, E> {
                // `480.0` stays `480.0` (as JSON wrote it), which is no quality.
                Ok(QualityName::Text(format!("{v:?}")))
            }
            fn visit_bool<E>(self, v: bool) -> Result<QualityName, E> {
                Ok(QualityName::Text(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<QualityName, E> {
                Ok(QualityName::Text("null".to_owned()))
            }
            fn visit_str<E>(self, v: &str) -> Result<QualityName, E> {
                Ok(QualityName::Text(v.to_owned()))
            }
        }
        d.deserialize_any(Scalar)
    }
}

/// The answer of `POST /transcode` (201) and `GET /jobs` (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<Job>,
}

/// A transcode job. `GET /jobs/{id}` and `POST /jobs/{id}/cancel` answer with one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Job id.
    pub id: i64,
    /// Bucket of the source object.
    pub bucket: String,
    /// Key of the source object.
    pub key: String,
    /// Target height (480, 720, ...).
    pub quality: u32,
    /// Where the job is.
    pub status: JobStatus,
    /// Percent done, 0 to 100.
    pub progress: u8,
    /// Size of the rendition, once completed.
    pub output_size: Option<u64>,
    /// Last error (a pipeline message, or a lost worker).
    pub error: Option<String>,
    /// H.264 encoder that produced the rendition.
    pub encoder: Option<String>,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When the current (or last) attempt started.
    pub started_at: Option<String>,
    /// When it completed, failed or was cancelled.
    pub completed_at: Option<String>,
    /// `hostname:pid:n` of the worker that took it last.
    pub worker_id: Option<String>,
    /// How many times a worker took it.
    pub attempts: u32,
}

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker.
    Pending,
    /// A worker is running it.
    Processing,
    /// Finished: the rendition is installed.
    Completed,
    /// Given up; `error` says why.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobStatus {
    /// All states, in the order the health report lists them.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The name in the API (and in the database's `status` column).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// True once nothing changes any more (completed, failed, cancelled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    /// The API name; honours width and alignment (`{:<10}`) for tables.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown job status '{s}': use pending, processing, completed, failed or cancelled"))
    }
}

impl TryFrom<String> for JobStatus {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Job counts by state (the whole queue, all gateways sharing the database).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    /// Waiting for a worker.
    pub pending: u64,
    /// Running.
    pub processing: u64,
    /// Finished with a rendition.
    pub completed: u64,
    /// Given up.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualities_as_clients_write_them() {
        let req: TranscodeRequest = serde_json::from_str(
            r#"{"bucket":"b","key":"k","qualities":[480,"720p",-1,2.5,480.0,true,null]}"#,
        )
        .unwrap();
        let text: Vec<String> = req.qualities.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["480", "720p", "-1", "2.5", "480.0", "true", "null"]);
        assert_eq!(
            serde_json::to_string(&req.qualities[..2]).unwrap(),
            r#"[480,"720p"]"#
        );
        let nested = r#"{"bucket":"b","key":"k","qualities":[[480]]}"#;
        assert!(serde_json::from_str::<TranscodeRequest>(nested).is_err());
    }

    #[test]
    fn status_names() {
        for st in JobStatus::ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(st.as_str().parse::<JobStatus>().unwrap(), st);
        }
        assert!("done".parse::<JobStatus>().is_err());
    }
}
