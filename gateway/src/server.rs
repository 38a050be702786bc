//! Listeners and connections: HTTP/1.1 and h2c over any async stream (and h2 over TLS),
//! TCP_NODELAY, timeouts and size limits, graceful shutdown that lets in-flight requests finish.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::front::Front;
use crate::limits::{Limits, MAX_HEADER_BYTES, PrefaceDeadline};
use crate::peer::PeerInfo;
use crate::tls::Tls;

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // The header read timeout is a deadline for the whole head, not per byte: a slow-loris
    // client trickling headers is cut off. A head larger than the read buffer, or with more
    // than hyper's default of 100 fields, gets 431. The buffer also caps body reads at 64 KiB,
    // which measured no slower for large PUTs than hyper's ~400 KiB default.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    b
}

/// Serves one connection on any stream (TCP, a tailnet stream, an in-memory duplex).
pub fn serve_stream<S>(stream: S, peer: PeerInfo, front: Front, graceful: &GracefulShutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(serve_watched(stream, peer, front, graceful.watcher()));
}

/// Serves one connection to its end. A [`Watcher`] (unlike the [`GracefulShutdown`] it comes
/// from) can be moved into a task, so a listener can finish per-connection work, such as
/// looking up who the peer is, off its accept loop and still be drained at shutdown.
pub async fn serve_watched<S>(stream: S, peer: PeerInfo, front: Front, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _counted = crate::metrics::connection();
    let limits = front.limits();
    let stream = PrefaceDeadline::new(stream, limits.header_read_timeout);
    let svc = hyper::service::service_fn(move |req| {
        let front = front.clone();
        let peer = peer.clone();
        async move { front.handle(req, peer).await }
    });
    let conn = builder(limits)
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accepts on `listener` (with TLS when `tls` is given) until `shutdown` resolves, then waits
/// for in-flight requests.
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Option<Tls>,
    front: Front,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    accept_tcp(listener, tls, front, &graceful, shutdown).await;
    drain(graceful).await;
}

/// Accepts on `listener` until `stop` resolves. Connections are watched by `graceful`, which
/// several listeners (TCP addresses, the tailnet) share so one signal drains them all. With
/// `tls`, each connection first completes a TLS handshake (bounded by the header timeout).
pub async fn accept_tcp(
    listener: TcpListener,
    tls: Option<Tls>,
    front: Front,
    graceful: &GracefulShutdown,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of fds and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small responses must not wait for delayed ACKs.
                let _ = stream.set_nodelay(true);
                let peer = PeerInfo {
                    tls: tls.is_some(),
                    ..PeerInfo::from_addr(addr)
                };
                match &tls {
                    None => serve_stream(stream, peer, front.clone(), graceful),
                    Some(tls) => {
                        // The handshake runs in the connection's task, not the accept loop,
                        // so one slow client cannot delay the others.
                        let (tls, front, watcher) = (tls.clone(), front.clone(), graceful.watcher());
                        tokio::spawn(async move {
                            match tls.accept(stream).await {
                                Ok(stream) => serve_watched(stream, peer, front, watcher).await,
                                Err(e) => tracing::debug!(peer = %addr, error = %e, "TLS handshake failed"),
                            }
                        });
                    }
                }
            }
            () = &mut stop => break,
        }
    }
}

/// Waits (at most the grace period) for the connections `graceful` watches to finish.
pub async fn drain(graceful: GracefulShutdown) {
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {SHUTDOWN_GRACE:?}");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
