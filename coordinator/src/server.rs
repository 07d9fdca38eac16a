//! Serving the coordinator: the gRPC service behind the bearer-token check,
//! optional TLS and message-size limits; the background loop that finds
//! checkpoints and expires leases and silent ranks; `/metrics` over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use premem_core::Store;
use premem_proto::RequireToken;
use premem_proto::v1::coordinator_server::CoordinatorServer;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::metrics::Metrics;
use crate::persist::Persist;
use crate::runs::{RunStores, scan_checkpoints};
use crate::service::Service;
use crate::state::{State, Timing};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state store: {0}")]
    Store(#[from] premem_core::StoreError),
    #[error("TLS {path}: {source}")]
    Tls {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// How the coordinator serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// gRPC address (port 0: any free port).
    pub listen: String,
    /// `/metrics` address; `None`: no metrics server.
    pub metrics_listen: Option<String>,
    /// Where the coordinator keeps its state (a directory or an object-store URL).
    pub state: String,
    pub token: String,
    /// PEM certificate chain and private key: serve TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub timing: Timing,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// How often to look for new checkpoints and expired leases.
    pub scan_interval: Duration,
}

impl ServeOptions {
    pub fn new(
        listen: impl Into<String>,
        state: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        ServeOptions {
            listen: listen.into(),
            metrics_listen: None,
            state: state.into(),
            token: token.into(),
            tls: None,
            timing: Timing::default(),
            max_request_bytes: 16 << 20,
            scan_interval: Duration::from_millis(500),
        }
    }
}

/// A coordinator serving in the background.
pub struct Running {
    pub address: SocketAddr,
    pub metrics_address: Option<SocketAddr>,
    pub state: Arc<Mutex<State>>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops serving and waits for the server to end.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.shutdown.send_replace(true);
        self.task.await.expect("server task does not panic")
    }

    /// Waits until the server ends (an error, or `stop` from elsewhere).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await.expect("server task does not panic")
    }
}

async fn bind(address: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Listen {
            address: address.into(),
            source,
        })
}

/// Restores the state from `options.state`, binds, and serves until
/// [`Running::stop`].
pub async fn start(options: ServeOptions) -> Result<Running, ServeError> {
    let persist = Persist::new(Store::open(&options.state)?);
    let state = Arc::new(Mutex::new(State::new(options.timing)));
    let runs = RunStores::default();
    let restored = persist.restore(&state, &runs).await?;
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .hold_ranks_after_restart(Instant::now());
    tracing::info!(
        state = persist.url(),
        jobs = restored,
        "coordinator state loaded"
    );
    let metrics = Arc::new(Metrics::new());
    let scan = Arc::new(Notify::new());
    // Every waiter sees the stop, whenever it starts waiting.
    let (shutdown, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };

    let listener = bind(&options.listen).await?;
    let address = listener.local_addr().map_err(|source| ServeError::Listen {
        address: options.listen.clone(),
        source,
    })?;
    let metrics_address = match &options.metrics_listen {
        Some(addr) => {
            let listener = bind(addr).await?;
            let local = listener.local_addr().ok();
            let state = state.clone();
            let metrics = metrics.clone();
            let app = axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(move || {
                        let text = metrics.render(&state);
                        async move {
                            (
                                [(
                                    axum::http::header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )],
                                text,
                            )
                        }
                    }),
                )
                .route("/healthz", axum::routing::get(|| async { "ok" }));
            let stop = until_stopped();
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics server");
                }
            });
            local
        }
        None => None,
    };

    // Checkpoints, leases, silent ranks.
    {
        let state = state.clone();
        let runs = runs.clone();
        let scan = scan.clone();
        let stop = until_stopped();
        let interval = options.scan_interval;
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = scan.notified() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
                scan_checkpoints(&state, &runs).await;
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                s.expire_leases(now);
                s.expire_ranks(now);
                s.expire_pool(now);
            }
        });
    }

    let service = Service {
        state: state.clone(),
        runs,
        persist,
        metrics,
        scan,
        retry_after: Duration::from_millis(500),
    };
    let grpc = CoordinatorServer::new(service)
        .max_decoding_message_size(options.max_request_bytes)
        .max_encoding_message_size(64 << 20);
    let grpc = tonic::service::interceptor::InterceptedService::new(
        grpc,
        RequireToken::new(&options.token),
    );
    let mut builder = Server::builder();
    if let Some((cert, key)) = &options.tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ServeError::Tls {
                path: path.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let stop = until_stopped();
    // serve_with_incoming ignores the builder's nodelay: without it small
    // replies can wait 40 ms for Nagle.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = builder.timeout(Duration::from_secs(60)).add_service(grpc);
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, stop)
            .await
            .map_err(ServeError::from)
    });
    tracing::info!(%address, tls = options.tls.is_some(), "coordinator listening");
    Ok(Running {
        address,
        metrics_address,
        state,
        shutdown,
        task,
    })
}
