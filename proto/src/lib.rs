//! The gRPC protocol `premem.v1` (see `premem.proto`), shared by the
//! coordinator, the trainer ranks and the evaluators, and what every
//! connection needs: the bearer token and, optionally, TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

pub mod v1 {
    tonic::include_proto!("premem.v1");
}

pub mod auth;

pub use auth::{RequireToken, Role, Roles, require};

/// The metadata key of the bearer token.
pub const AUTHORIZATION: &str = "authorization";
/// The environment variable that holds the token when no file is given.
pub const TOKEN_ENV: &str = "PREMEM_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no token: set {TOKEN_ENV} or pass --token-file (every RPC needs the cluster's bearer token)"
    )]
    NoToken,
    #[error("token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token must be printable ASCII without spaces")]
    BadToken,
    #[error("coordinator address '{address}': {message}")]
    Address { address: String, message: String },
    #[error("TLS certificate {path}: {source}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The cluster token: the first line of `file` when given, else `$PREMEM_TOKEN`.
pub fn load_token(file: Option<&Path>) -> Result<String, ConnectError> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| ConnectError::TokenFile {
                path: path.into(),
                source,
            })?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        None => std::env::var(TOKEN_ENV).unwrap_or_default(),
    };
    if token.is_empty() {
        return Err(ConnectError::NoToken);
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ConnectError::BadToken);
    }
    Ok(token)
}

/// Adds `authorization: Bearer <token>` to every request of a client.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    pub fn new(token: &str) -> Result<BearerToken, ConnectError> {
        format!("Bearer {token}")
            .parse()
            .map(BearerToken)
            .map_err(|_| ConnectError::BadToken)
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(AUTHORIZATION, self.0.clone());
        Ok(request)
    }
}

pub type Client =
    v1::coordinator_client::CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// Where and how to reach the coordinator.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port`, or `https://host:port` for TLS.
    pub address: String,
    pub token: String,
    /// PEM of the CA that signed the coordinator's certificate (TLS).
    pub ca_certificate: Option<PathBuf>,
    /// Largest message accepted from the coordinator.
    pub max_message_bytes: usize,
}

impl ClientConfig {
    pub fn new(address: impl Into<String>, token: impl Into<String>) -> ClientConfig {
        ClientConfig {
            address: address.into(),
            token: token.into(),
            ca_certificate: None,
            max_message_bytes: 64 << 20,
        }
    }
}

/// A client of the coordinator. The connection is made on first use and
/// remade after the coordinator restarts, so a long-lived worker keeps one.
pub fn client(config: &ClientConfig) -> Result<Client, ConnectError> {
    let bad = |message: String| ConnectError::Address {
        address: config.address.clone(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(config.address.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if config.address.starts_with("https://") || config.ca_certificate.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(path) = &config.ca_certificate {
            let pem = std::fs::read(path).map_err(|source| ConnectError::Certificate {
                path: path.clone(),
                source,
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
    }
    let channel = endpoint.connect_lazy();
    Ok(v1::coordinator_client::CoordinatorClient::with_interceptor(
        channel,
        BearerToken::new(&config.token)?,
    )
    .max_decoding_message_size(config.max_message_bytes))
}
