//! Limits that keep one slow or hostile client from holding connections, memory or temp
//! files: how long a client may take to say what it wants, how long a request body may stall,
//! and how large request headers and XML bodies may be.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Largest request head (request line and headers) over HTTP/1.1, and the header list over h2.
/// AWS allows 8 KiB; presigned query strings and `x-amz-meta-*` fit well within this.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Largest XML request body (DeleteObjects, CompleteMultipartUpload, bucket settings). The
/// largest legitimate ones are about 1.1 MB (DeleteObjects with 1000 keys of 1024 bytes) and
/// 1.7 MB (CompleteMultipartUpload with 10 000 parts, each with an ETag and a SHA-256 checksum).
pub const MAX_XML_BODY: usize = 4 * 1024 * 1024;

/// Time limits applied to every connection and request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send a request's headers (and to finish the TLS
    /// handshake, and to send its first bytes on a new connection).
    pub header_read_timeout: Duration,
    /// How long a request body may go without delivering a byte before the request fails.
    pub body_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled: no data for {0:?}")]
pub struct BodyStalled(pub Duration);

/// A request body that fails when no data arrives for `idle`. The clock runs only while the
/// handler waits for the next piece, so a handler that is slow to read is never penalised.
pub struct IdleTimeoutBody<B> {
    inner: B,
    idle: Duration,
    /// Reused for every wait, so a long upload does not allocate a timer per chunk.
    timer: Pin<Box<Sleep>>,
    armed: bool,
    failed: bool,
}

impl<B> IdleTimeoutBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeoutBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
            failed: false,
        }
    }
}

impl<B> Body for IdleTimeoutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.armed {
                    this.armed = true;
                    let deadline = Instant::now() + this.idle;
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed = true;
                        Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection preface of HTTP/2 with prior knowledge (h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A new connection that must show within `timeout` which HTTP version it speaks.
///
/// hyper's header read timeout starts only once the HTTP/1 parser runs; before that, the
/// version detection of hyper-util's auto connection waits for bytes without any limit, so a
/// client that connects and sends nothing (or a slow start of the h2 preface) would hold the
/// connection forever. Once the first bytes rule out the h2 preface, or the preface is
/// complete, this wrapper steps aside and costs nothing more.
pub struct PrefaceDeadline<S> {
    inner: S,
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    /// Bytes received so far, all matching the h2 preface.
    matched: usize,
}

impl<S> PrefaceDeadline<S> {
    /// Wraps a just-accepted stream; the clock starts now.
    pub fn new(inner: S, timeout: Duration) -> Self {
        PrefaceDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            timeout,
            matched: 0,
        }
    }

    fn observe(&mut self, new: &[u8]) {
        if new.is_empty() {
            // End of stream: nothing left to wait for.
            self.deadline = None;
            return;
        }
        for &b in new {
            if self.matched < H2_PREFACE.len() && H2_PREFACE[self.matched] == b {
                self.matched += 1;
            } else {
                // Not h2c: HTTP/1, whose header read timeout takes over from here.
                self.deadline = None;
                return;
            }
        }
        if self.matched == H2_PREFACE.len() {
            self.deadline = None;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefaceDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.deadline.is_some() {
                    this.observe(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no request within {:?} of connecting", this.timeout),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefaceDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SHORT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn stalled_body_fails_after_idle() {
        let (mut tx, rx) =
            futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let mut body = IdleTimeoutBody::new(http_body_util::StreamBody::new(rx), SHORT);
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"abc"));
        // Nothing more arrives (the sender is still open): the body fails after `idle`.
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyStalled>(), "{err}");
        assert!(started.elapsed() >= SHORT);
        assert!(started.elapsed() < SHORT * 10);
        assert!(body.frame().await.is_none());
        drop(tx);
    }

    // On a paused clock: on a loaded machine a real sleep of half the limit can overrun it.
    #[tokio::test(start_paused = true)]
    async fn steady_body_is_not_cut_off() {
        let (mut tx, rx) =
            futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let mut body = IdleTimeoutBody::new(http_body_util::StreamBody::new(rx), SHORT);
        let sender = tokio::spawn(async move {
            // Five pieces, each well within the idle limit, together well beyond it.
            for _ in 0..5 {
                tokio::time::sleep(SHORT / 2).await;
                futures::SinkExt::send(&mut tx, Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
        });
        let mut got = 0;
        while let Some(frame) = body.frame().await {
            got += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(got, 5);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn silent_connection_times_out_but_http1_passes() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = PrefaceDeadline::new(server, SHORT);
        let mut buf = [0u8; 8];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut server = PrefaceDeadline::new(server, SHORT);
        client.write_all(b"GET").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 3);
        // HTTP/1 recognised: waiting past the deadline is for hyper's header timeout to judge.
        tokio::time::sleep(SHORT * 2).await;
        client.write_all(b" /").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn partial_h2_preface_still_times_out() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = PrefaceDeadline::new(server, SHORT);
        client.write_all(b"PRI * ").await.unwrap();
        let mut buf = [0u8; 32];
        assert_eq!(server.read(&mut buf).await.unwrap(), 6);
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
