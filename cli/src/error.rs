//! The client's error type and the exit codes it maps to.
//!
//! Errors are written for people: every variant displays as a sentence that says what went
//! wrong and, where there is one, what to do about it.

use std::fmt;

/// Exit status for success.
pub const EXIT_OK: i32 = 0;
/// Exit status for local failures (files, configuration, players, verification).
pub const EXIT_LOCAL: i32 = 1;
/// Exit status for usage errors (clap uses the same code).
pub const EXIT_USAGE: i32 = 2;
/// Exit status when the server answered but refused or failed the request.
pub const EXIT_REMOTE: i32 = 3;
/// Exit status when the server could not be reached at all.
pub const EXIT_CONNECTION: i32 = 4;

/// An error of the client, classified by who is to blame.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error status.
    #[error("{}", remote_sentence(.status, .code, .message, .resource))]
    Remote {
        /// HTTP status.
        status: u16,
        /// S3 or API error code (`NoSuchKey`, `SignatureDoesNotMatch`, ...), or empty.
        code: String,
        /// The server's own message, or empty.
        message: String,
        /// What the request was about (`s3://bucket/key`, an API path), for the sentence.
        resource: String,
    },
    /// No answer: connection refused, DNS failure, timeout, TLS failure.
    #[error("cannot reach the gateway at {url}: {detail}")]
    Connection {
        /// The URL that was tried.
        url: String,
        /// What the network layer said, without the error chain noise.
        detail: String,
    },
    /// A local problem, already phrased as a sentence.
    #[error("{0}")]
    Local(String),
    /// The command line is valid for clap but not for the command.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Remote { .. } => EXIT_REMOTE,
            CliError::Connection { .. } => EXIT_CONNECTION,
            CliError::Local(_) => EXIT_LOCAL,
            CliError::Usage(_) => EXIT_USAGE,
        }
    }

    /// Shorthand for a local error.
    pub fn local(msg: impl fmt::Display) -> Self {
        CliError::Local(msg.to_string())
    }

    /// The S3/API error code when the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            CliError::Remote { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CliError::Remote { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn remote_sentence(status: &u16, code: &str, message: &str, resource: &str) -> String {
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(" (server said: {message})")
    };
    match code {
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "NotSignedUp" | "InvalidSecurity" => {
            format!(
                "the gateway rejected the keys ({code}): check NEBULA_ACCESS_KEY / NEBULA_SECRET_KEY or run `nebula login`{detail}"
            )
        }
        "AuthorizationHeaderMalformed" => {
            format!(
                "the gateway rejected the request's region: set NEBULA_REGION or `nebula config --region`{detail}"
            )
        }
        "RequestTimeTooSkewed" => format!(
            "the gateway says this machine's clock is wrong; fix the clock and retry{detail}"
        ),
        "AccessDenied" if *status == 403 => {
            format!("the gateway denied access to {resource}{detail}")
        }
        "NoSuchKey" => match bucket_of(resource) {
            Some(b) => format!(
                "the object {resource} does not exist (see what is there: `nebula ls -b {}`)",
                shell_word(b)
            ),
            None => format!("the object {resource} does not exist"),
        },
        "NoSuchBucket" => match bucket_of(resource) {
            Some(b) => format!(
                "the bucket s3://{b} does not exist: create it with `nebula mb {}`",
                shell_word(b)
            ),
            None => format!("the bucket of {resource} does not exist{detail}"),
        },
        "BucketNotEmpty" => match bucket_of(resource) {
            Some(b) => {
                let b = shell_word(b);
                format!(
                    "the bucket {resource} is not empty: delete its objects with `nebula rm -r -b {b} --yes`, then run `nebula rb {b}` again"
                )
            }
            None => format!("{resource} is not empty{detail}"),
        },
        "BucketAlreadyOwnedByYou" | "BucketAlreadyExists" => {
            format!("the bucket {resource} already exists")
        }
        "InvalidBucketName" => format!(
            "{} is not a valid bucket name: use 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit{detail}",
            bucket_of(resource).unwrap_or(resource)
        ),
        "NoSuchUpload" => format!("the multipart upload for {resource} no longer exists{detail}"),
        "NoSuchEndpoint" => {
            format!("this gateway does not offer {resource} (it may be an older version){detail}")
        }
        _ if *status == 404 => format!("{resource} was not found{detail}"),
        "" => format!("the gateway answered HTTP {status} for {resource}{detail}"),
        _ => format!("the gateway refused {resource}: {code} (HTTP {status}){detail}"),
    }
}

/// The bucket of an `s3://bucket[/key]` resource.
fn bucket_of(resource: &str) -> Option<&str> {
    let rest = resource.strip_prefix("s3://")?;
    let bucket = rest.split('/').next().unwrap_or(rest);
    (!bucket.is_empty()).then_some(bucket)
}

/// `word` as a POSIX shell reads it back: hints name commands to run, and a key with a space
/// or a quote must survive being pasted.
pub fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Result type of the client.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Local(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_survive_pasting() {
        assert_eq!(shell_word("media"), "media");
        assert_eq!(shell_word("videos/a-b_c.mp4"), "videos/a-b_c.mp4");
        assert_eq!(shell_word("my movie.mkv"), "'my movie.mkv'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn hints_name_the_bucket() {
        let e = CliError::Remote {
            status: 404,
            code: "NoSuchBucket".into(),
            message: String::new(),
            resource: "s3://photos/a b.jpg".into(),
        };
        assert_eq!(
            e.to_string(),
            "the bucket s3://photos does not exist: create it with `nebula mb photos`"
        );
    }
}
