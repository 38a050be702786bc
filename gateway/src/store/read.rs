//! Reading from the async side: running store calls on tokio's blocking pool, and streaming a
//! file's bytes as a response body.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::StoreError;
use super::fsutil;
use super::meta::IO_BLOCK;

/// Runs blocking filesystem work off the async runtime. The work may fail with the store's
/// error or with a caller's error that a store error converts into (the S3 layer's checks run
/// in the same hop); a panicked task is an I/O error.
pub async fn blocking<T, E, F>(f: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Io(io::Error::other(format!("worker failed: {e}"))).into()),
    }
}

/// Streams `len` bytes of `file` from `start` in large blocks. A block in the page cache (the
/// usual case for anything recently served) is read right on the async worker, as hyper asks
/// for it: a trip to the blocking pool and back costs two thread wake-ups per block. A block
/// that must come from the disk is read on the blocking pool. Dropping the stream stops it.
pub fn file_stream(file: File, start: u64, len: u64) -> FileStream {
    FileStream {
        file: Arc::new(file),
        off: start,
        end: start + len,
        reading: None,
    }
}

/// The stream of [`file_stream`].
#[derive(Debug)]
pub struct FileStream {
    file: Arc<File>,
    off: u64,
    end: u64,
    reading: Option<tokio::task::JoinHandle<io::Result<Vec<u8>>>>,
}

impl futures::Stream for FileStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(h) = self.reading.as_mut() {
            let res = std::task::ready!(Pin::new(h).poll(cx));
            self.reading = None;
            return Poll::Ready(Some(match res {
                Ok(Ok(buf)) => {
                    self.off += buf.len() as u64;
                    Ok(Bytes::from(buf))
                }
                Ok(Err(e)) => {
                    self.off = self.end;
                    Err(e)
                }
                Err(e) => {
                    self.off = self.end;
                    Err(io::Error::other(e))
                }
            }));
        }
        if self.off >= self.end {
            return Poll::Ready(None);
        }
        let want = ((self.end - self.off) as usize).min(IO_BLOCK);
        if let Some(buf) = fsutil::read_block_cached(&self.file, want, self.off) {
            self.off += want as u64;
            return Poll::Ready(Some(Ok(Bytes::from(buf))));
        }
        let (file, off) = (self.file.clone(), self.off);
        self.reading = Some(tokio::task::spawn_blocking(move || {
            fsutil::read_block_at(&file, want, off)
        }));
        self.poll_next(cx)
    }
}
