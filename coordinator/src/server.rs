//! Serving the coordinator: the gRPC service behind the bearer-token check,
//! optional TLS and message-size limits; the background loop that finds
//! checkpoints and expires leases and silent ranks; `/metrics` over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use premem_core::Store;
use premem_proto::v1::coordinator_server::CoordinatorServer;
use premem_proto::{RequireToken, Role, Roles};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::membership::{KeyError, MembershipKey};
use crate::metrics::Metrics;
use crate::persist::Persist;
use crate::runs::{RunStores, scan_checkpoints};
use crate::service::Service;
use crate::service::prefixes::AllowedPrefixes;
use crate::service::urls::AllowedUrls;
use crate::state::{State, Timing};
use crate::state_lock;

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
    #[error("state store: {0}")]
    Lease(#[from] premem_core::storage::lease::LeaseError),
    #[error("state store: {0}")]
    MembershipKey(#[from] KeyError),
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
    /// The cluster token: every role. Empty: none (role tokens only).
    pub token: String,
    /// Tokens of one role each ([`premem_proto::auth`]).
    pub role_tokens: Vec<(String, Role)>,
    /// Where submitted jobs may read and write (`--allow-prefix`).
    pub allow_prefixes: AllowedPrefixes,
    /// Where a submitted job's tracker URL may point (`--allow-url`).
    pub allow_urls: AllowedUrls,
    /// PEM certificate chain and private key: serve TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub timing: Timing,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// How often to look for new checkpoints and expired leases.
    pub scan_interval: Duration,
    /// The name this coordinator holds its state store's lease under
    /// ([`crate::state_lock`]): host and pid by default; one that restarts
    /// under the same name takes its lease back at once.
    pub lease_owner: String,
    /// How long that lease outlives its last renewal.
    pub state_lease_ttl: Duration,
}

impl ServeOptions {
    /// Every token and its roles: the cluster token's all of them.
    fn tokens(&self) -> RequireToken {
        let cluster = Some((self.token.clone(), Roles::ALL)).filter(|(t, _)| !t.is_empty());
        let roles = self
            .role_tokens
            .iter()
            .map(|(token, role)| (token.clone(), Roles::only(*role)));
        RequireToken::with_roles(cluster.into_iter().chain(roles))
    }

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
            role_tokens: vec![],
            allow_prefixes: AllowedPrefixes::default(),
            allow_urls: AllowedUrls::default(),
            tls: None,
            timing: Timing::default(),
            max_request_bytes: 16 << 20,
            scan_interval: Duration::from_millis(500),
            lease_owner: premem_core::storage::lease::this_process(),
            state_lease_ttl: state_lock::STATE_LEASE_TTL,
        }
    }
}

/// A coordinator serving in the background.
pub struct Running {
    pub address: SocketAddr,
    pub metrics_address: Option<SocketAddr>,
    pub state: Arc<Mutex<State>>,
    pub metrics: Arc<Metrics>,
    shutdown: Arc<watch::Sender<bool>>,
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

fn local_address(listener: &TcpListener, address: &str) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Listen {
        address: address.into(),
        source,
    })
}

/// The stop signal: every waiter sees it, whenever it starts waiting.
#[derive(Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    fn new() -> (watch::Sender<bool>, Stop) {
        let (sender, receiver) = watch::channel(false);
        (sender, Stop(receiver))
    }

    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.0.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }
}

/// Restores the state from `options.state`, binds, and serves until
/// [`Running::stop`].
pub async fn start(options: ServeOptions) -> Result<Running, ServeError> {
    let state_store = Store::open(&options.state)?;
    let lease =
        state_lock::take(&state_store, &options.lease_owner, options.state_lease_ttl).await?;
    let membership = MembershipKey::load_or_create(&state_store).await?;
    let (persist, state, runs) = restore(&options).await?;
    let metrics = Arc::new(Metrics::new());
    let scan = Arc::new(Notify::new());
    let (shutdown, stop) = Stop::new();
    let shutdown = Arc::new(shutdown);
    let keeper = state_lock::keep(lease, shutdown.clone(), stop.stopped());

    let listener = bind(&options.listen).await?;
    let address = local_address(&listener, &options.listen)?;
    let tokens = options.tokens();
    let metrics_address = match &options.metrics_listen {
        Some(listen) => serve_http(listen, &state, &metrics, tokens.clone(), &stop).await?,
        None => None,
    };
    spawn_scanner(&state, &runs, &scan, options.scan_interval, &stop);
    let publisher = crate::publish::spawn(
        state.clone(),
        runs.clone(),
        crate::publish::INTERVAL,
        stop.stopped(),
    );
    let service = Service {
        state: state.clone(),
        runs,
        persist,
        metrics: metrics.clone(),
        scan,
        retry_after: Duration::from_millis(500),
        membership,
        prefixes: options.allow_prefixes.clone(),
        urls: options.allow_urls.clone(),
    };
    let grpc = serve_grpc(listener, service, tokens, &options, &stop)?;
    // The server's end, then the lease's: a lost lease is the error.
    let ended = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = grpc.await.expect("server task does not panic");
        // A server that failed ends the rest too.
        ended.send_replace(true);
        publisher.await.expect("publisher does not panic");
        keeper.await.expect("lease task does not panic")?;
        served
    });
    tracing::info!(%address, tls = options.tls.is_some(), "coordinator listening");
    Ok(Running {
        address,
        metrics_address,
        state,
        metrics,
        shutdown,
        task,
    })
}

/// The state of an earlier coordinator at `options.state`, and the run
/// stores it opened on the way.
async fn restore(
    options: &ServeOptions,
) -> Result<(Persist, Arc<Mutex<State>>, RunStores), ServeError> {
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
    Ok((persist, state, runs))
}

/// Serves `/metrics` and the dashboard ([`crate::dashboard`]) to a bearer
/// token with the read role, and `/healthz` to anyone, on `listen` until
/// the stop; returns the address bound.
async fn serve_http(
    listen: &str,
    state: &Arc<Mutex<State>>,
    metrics: &Arc<Metrics>,
    tokens: RequireToken,
    stop: &Stop,
) -> Result<Option<SocketAddr>, ServeError> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let listener = bind(listen).await?;
    let local = listener.local_addr().ok();
    let (state_for_dashboard, dashboard_tokens) = (state.clone(), tokens.clone());
    let (state, metrics) = (state.clone(), metrics.clone());
    let exposition = move |headers: axum::http::HeaderMap| {
        let roles = headers
            .get(header::AUTHORIZATION)
            .and_then(|given| tokens.roles_of(given.as_bytes()));
        let response = match roles {
            Some(roles) if roles.holds(Role::Read) => (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                metrics.render(&state),
            )
                .into_response(),
            Some(_) => (
                StatusCode::FORBIDDEN,
                "/metrics needs a token with the read role\n",
            )
                .into_response(),
            None => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics needs 'Authorization: Bearer <token>' (a token with the read role)\n",
            )
                .into_response(),
        };
        async move { response }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(exposition))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .merge(crate::dashboard::router(
            state_for_dashboard,
            dashboard_tokens,
        ));
    let stopped = stop.stopped();
    tokio::spawn(crate::http_serve::serve(listener, app, stopped));
    Ok(local)
}

/// Looks for checkpoints and expires leases, silent ranks and silent pool
/// trainers every `interval`, or sooner when `scan` is notified.
fn spawn_scanner(
    state: &Arc<Mutex<State>>,
    runs: &RunStores,
    scan: &Arc<Notify>,
    interval: Duration,
    stop: &Stop,
) {
    let (state, runs, scan) = (state.clone(), runs.clone(), scan.clone());
    let stopped = stop.stopped();
    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = scan.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            scan_checkpoints(&state, &runs).await;
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            s.expire_leases(now);
            s.forget_evaluators(now);
            s.expire_ranks(now);
            s.expire_pool(now);
        }
    });
}

/// Serves the gRPC service on `listener` behind the token check (and TLS
/// when configured) until the stop.
fn serve_grpc(
    listener: TcpListener,
    service: Service,
    tokens: RequireToken,
    options: &ServeOptions,
    stop: &Stop,
) -> Result<tokio::task::JoinHandle<Result<(), ServeError>>, ServeError> {
    let grpc = CoordinatorServer::new(service)
        .max_decoding_message_size(options.max_request_bytes)
        .max_encoding_message_size(64 << 20);
    let grpc = tonic::service::interceptor::InterceptedService::new(grpc, tokens);
    let mut builder = Server::builder();
    if let Some((cert, key)) = &options.tls {
        builder = builder.tls_config(ServerTlsConfig::new().identity(tls_identity(cert, key)?))?;
    }
    // serve_with_incoming ignores the builder's nodelay: without it small
    // replies can wait 40 ms for Nagle.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = builder.timeout(Duration::from_secs(60)).add_service(grpc);
    let stopped = stop.stopped();
    Ok(tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, stopped)
            .await
            .map_err(ServeError::from)
    }))
}

fn tls_identity(cert: &Path, key: &Path) -> Result<Identity, ServeError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ServeError::Tls {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok(Identity::from_pem(read(cert)?, read(key)?))
}
