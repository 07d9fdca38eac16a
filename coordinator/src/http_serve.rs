//! Serves the coordinator's HTTP router (metrics, dashboard, health) over
//! HTTP/1 and HTTP/2 with a bound on how long a client may take to send a
//! request's header, so a half-sent header does not hold a connection
//! open (issue 39, item 11; `axum::serve` sets no such bound), and a
//! graceful stop.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a client has to send a request's header, from its first byte
/// (HTTP/1; HTTP/2 has its own flow control and keep-alive).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stopped` resolves.
pub async fn serve(listener: TcpListener, app: axum::Router, stopped: impl Future<Output = ()>) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stopped);
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
