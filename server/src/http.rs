//! The HTTP listener: hyper with the timers and caps `axum::serve` leaves
//! out. A connection must send a whole request head within the header
//! timeout (idle keep-alive connections included), at most
//! `max_connections` are served at once (the rest wait in the kernel's
//! backlog), and on shutdown open connections get a bounded time to finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Longest wait for a request head, from the connection's start or its
    /// last response.
    pub header_timeout: Duration,
    /// Longest wait for open connections (event streams end by themselves)
    /// once shutdown begins.
    pub shutdown_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// open connections finish for up to `limits.shutdown_timeout`.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: CancellationToken) {
    // HTTP/1.1 only: without TLS browsers speak nothing else, and sniffing
    // for HTTP/2 would wait, untimed, for a silent client's first bytes.
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most often: wait for some to close.
                    warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            async move {
                let Ok(response) = router.oneshot(request.map(axum::body::Body::new)).await;
                Ok::<_, Infallible>(response)
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(socket), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await.is_err() {
        warn!("connections still open after the shutdown timeout; closing them");
    }
}

/// Reads and discards what a refused request's client is still sending (at
/// most `limit` bytes, for at most two seconds), so that it gets the answer
/// rather than a broken pipe, and no more of the server's time than that.
pub async fn drain(request: Request, limit: usize) {
    use futures::StreamExt;
    let mut body = request.into_body().into_data_stream();
    let read = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
}
