//! The accept loop: one HTTP/1 connection per socket, each with the timeouts that cut off a
//! slow or dead client, and a graceful shutdown that lets every in-flight request finish.
//!
//! `axum::serve` would do the rest of this, but it sets no timeout at all: a client that sends
//! its headers one byte a minute (slowloris), or asks for a big answer and never reads it,
//! holds a connection (and a task, and the answer's memory) for ever. The three timeouts, each
//! a flag:
//!
//! - `--header-read-timeout`: hyper's own; the whole request head must arrive within it, and
//!   an idle keep-alive connection is closed after it. (Observed: its timer also runs while
//!   an answer is stuck on a client that does not read, so that too is cut off after it.)
//! - `--body-timeout`: tower-http's `RequestBodyTimeoutLayer` (in `routes`); the longest wait
//!   for the next piece of a request body. The answer is `408`.
//! - `--write-timeout`: [`StalledWrite`] around the socket; the longest a write may wait for
//!   the client to make room (a reader that never reads). The connection is then dropped.
//!
//! All three bound how long one client can hold a connection without making progress; the
//! total time of a request is bounded by `--request-timeout` as before.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tower::Service;

/// How long to wait before accepting again after an accept error (out of file descriptors,
/// typically), so that the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The per-connection timeouts (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole request head must arrive within this.
    pub header_read: Duration,
    /// A write to the client may wait this long for room in the socket.
    pub write: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the open connections to finish their requests. Handlers can read the peer's address with
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut make_service: IntoMakeServiceWithConnectInfo<Router, SocketAddr> =
        app.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    // The shutdown future runs on its own task from the start (as in `axum::serve`): a
    // signal handler it installs must be in place before the first connection is taken.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    loop {
        let (socket, peer) = tokio::select! {
            biased;
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(service) = make_service.call(peer).await;
        let io = TokioIo::new(StalledWrite::new(socket, timeouts.write));
        let connection = builder.serve_connection(io, TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that went away, or was cut off by a timeout, ends here; the request it
            // was in (if any) has already been logged by the trace layer.
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A socket whose writes fail with `TimedOut` once one has waited `timeout` for room.
///
/// The clock starts when a write finds the socket's buffer full and stops at the next write
/// that goes through: a client that reads slowly is never cut off, one that stopped reading
/// is. Hand-written because `tokio-io-timeout` restarts its clock on every flush, and hyper
/// flushes between writes (a flush of a TCP socket always succeeds at once), so a reader that
/// never read was never cut off.
struct StalledWrite<S> {
    inner: S,
    timeout: Duration,
    /// Set while a write is waiting for room.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StalledWrite<S> {
    fn new(inner: S, timeout: Duration) -> StalledWrite<S> {
        StalledWrite {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After a write returned `outcome`: stop the clock on progress, start it (or check it)
    /// on a full buffer.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read for longer than --write-timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StalledWrite<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StalledWrite<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, outcome)
    }
}
