//! What a pipeline reads: a path, or a file the caller opened.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::MediaError;

/// A source for [`crate::MediaEngine`]: a [`Path`], or an open [`File`].
///
/// An open file is read through `/proc/self/fd/N`. `filesrc` opens that link anew, which
/// gives GStreamer its own descriptor and offset on exactly the file the caller opened (the
/// gateway opens objects beneath their bucket and checks them), even if the name has been
/// replaced since. `fdsrc` could read the descriptor itself, but it is a push-only source
/// sharing the caller's offset: decodebin could not pull from it, so an MP4 with its `moov`
/// at the end could not be indexed without a seek dance, and pulling is what makes duration
/// queries and seeks cheap. This is the only place that knows the trick.
pub trait MediaSource {
    /// The location `filesrc` opens, once the source is checked to be a regular file (a
    /// missing one gives [`MediaError::Io`] here instead of a GStreamer "resource not
    /// found" after a pipeline was built).
    fn location(&self) -> Result<PathBuf, MediaError>;
}

impl MediaSource for Path {
    fn location(&self) -> Result<PathBuf, MediaError> {
        regular_file(&std::fs::metadata(self)?, || self.display().to_string())?;
        Ok(self.to_path_buf())
    }
}

impl MediaSource for PathBuf {
    fn location(&self) -> Result<PathBuf, MediaError> {
        self.as_path().location()
    }
}

impl MediaSource for File {
    fn location(&self) -> Result<PathBuf, MediaError> {
        regular_file(&self.metadata()?, || "the opened source".to_owned())?;
        Ok(PathBuf::from(format!("/proc/self/fd/{}", self.as_raw_fd())))
    }
}

fn regular_file(meta: &std::fs::Metadata, name: impl Fn() -> String) -> Result<(), MediaError> {
    if meta.is_file() {
        return Ok(());
    }
    Err(MediaError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{} is not a regular file", name()),
    )))
}
