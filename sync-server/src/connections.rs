//! The accept loop: one HTTP/1 connection per socket, each with the timeouts that cut off a
//! slow or dead client, and a graceful shutdown that lets every in-flight request finish.
//!
//! `axum::serve` would do the rest of this, but it sets no timeout at all: a client that sends
//! its headers one byte a minute (slowloris), or asks for a big answer and never reads it,
//! holds a connection (and a task, and the answer's memory) for ever. The three timeouts, each
//! a flag:
//!
//! - `--header-read-timeout`: hyper's own; the whole request head must arrive within it, and
//!   an idle keep-alive connection is closed after it.
//! - `--body-timeout`: tower-http's `RequestBodyTimeoutLayer` (in `routes`); the longest wait
//!   for the next piece of a request body. The answer is `408`.
//! - `--write-timeout`: `tokio-io-timeout` around the socket; the longest a write may wait for
//!   the client to make room (a reader that never reads). The connection is then dropped.
//!
//! All three bound how long one client can hold a connection without making progress; the
//! total time of a request is bounded by `--request-timeout` as before.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;
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
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(service) = make_service.call(peer).await;
        let io = TokioIo::new(with_write_timeout(socket, timeouts.write));
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

/// The socket, with writes that fail once they have waited `timeout` for the client to read.
fn with_write_timeout(socket: TcpStream, timeout: Duration) -> Pin<Box<TimeoutStream<TcpStream>>> {
    // The clock only runs while a write is blocked on a full socket buffer, and restarts with
    // any progress: a client that reads slowly is never cut off, one that stopped reading is.
    let mut stream = TimeoutStream::new(socket);
    stream.set_write_timeout(Some(timeout));
    Box::pin(stream)
}
