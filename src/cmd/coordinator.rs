//! `premem coordinator`: the one stateful service, until SIGTERM/Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use premem_proto::Role;

use crate::client::runtime;

#[derive(clap::Args)]
pub struct CoordinatorArgs {
    /// gRPC address to listen on (port 0: any free port, see --address-file).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// Serve HTTP here: Prometheus metrics at /metrics and the live
    /// dashboard at /dashboard (open http://<this>/dashboard?token=<token>
    /// once; every route needs a token with the read role). Not served
    /// unless given.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Where the coordinator keeps its state (a directory or object-store
    /// URL); a restarted coordinator resumes its jobs from there.
    #[arg(long, default_value = "premem-state")]
    state: String,
    /// A file whose first line is the cluster token, which may make every
    /// call (default: $PREMEM_TOKEN). Optional once a role token is given.
    #[arg(long, env = "PREMEM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A file whose first line is a token that may submit, cancel and
    /// watch jobs (SubmitJob, CancelJob, GetStatus, /metrics).
    #[arg(long, env = "PREMEM_SUBMIT_TOKEN_FILE")]
    submit_token_file: Option<PathBuf>,
    /// A file whose first line is a read-only token (GetStatus, /metrics).
    #[arg(long, env = "PREMEM_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    /// A file whose first line is the trainers' token (registration,
    /// rendezvous, heartbeats, checkpoint reports, pool assignment).
    #[arg(long, env = "PREMEM_TRAINER_TOKEN_FILE")]
    trainer_token_file: Option<PathBuf>,
    /// A file whose first line is the evaluators' token (task leases and
    /// results).
    #[arg(long, env = "PREMEM_EVALUATOR_TOKEN_FILE")]
    evaluator_token_file: Option<PathBuf>,
    /// Submitted jobs may only name locations under these prefixes (an
    /// absolute directory or an object-store URL prefix; repeat the flag
    /// for more): run outputs, datasets, model files. A job naming another
    /// location is refused before anything is opened. Default: anywhere.
    #[arg(long = "allow-prefix", value_name = "PREFIX")]
    allow_prefix: Vec<String>,
    /// A submitted job's tracker URL (`tracking.mlflow`), which this
    /// coordinator calls, must lie under one of these http(s) URL prefixes
    /// (repeat the flag for more); redirects are never followed. Default:
    /// any URL, or none at all once --allow-prefix is given.
    #[arg(long = "allow-url", value_name = "URL")]
    allow_url: Vec<String>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds an evaluator holds a task without renewing its lease.
    #[arg(long, default_value_t = 30.0)]
    lease_ttl: f64,
    /// Seconds a trainer rank may go without a heartbeat before its group
    /// regroups.
    #[arg(long, default_value_t = 60.0)]
    rank_ttl: f64,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_request_bytes: usize,
    /// The name this coordinator holds the state store's lease under
    /// (default: host:pid). Another coordinator on the same --state is
    /// refused while the lease lives (30 s past the holder's last renewal);
    /// one restarted under the same name takes it back at once.
    #[arg(long, env = "PREMEM_LEASE_OWNER")]
    lease_owner: Option<String>,
    /// Write the address actually bound (http://host:port) to this file,
    /// and on a second line the HTTP address of --metrics-listen.
    #[arg(long)]
    address_file: Option<PathBuf>,
}

/// The shortest cluster token the coordinator accepts: a guessable token
/// is the whole cluster (`openssl rand -hex 32` makes a good one).
const MIN_TOKEN_LEN: usize = 16;

/// A token long enough not to be guessed; `what` names it in the error.
fn checked_token(token: String, what: &str) -> Result<String> {
    if token.len() < MIN_TOKEN_LEN {
        bail!(
            "the {what} has {} characters; the coordinator needs at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
            token.len()
        );
    }
    Ok(token)
}

/// The role tokens given, each read from its file.
fn role_tokens(args: &CoordinatorArgs) -> Result<Vec<(String, Role)>> {
    let files = [
        (&args.submit_token_file, Role::Submit, "--submit-token-file"),
        (&args.read_token_file, Role::Read, "--read-token-file"),
        (
            &args.trainer_token_file,
            Role::Trainer,
            "--trainer-token-file",
        ),
        (
            &args.evaluator_token_file,
            Role::Evaluator,
            "--evaluator-token-file",
        ),
    ];
    let mut tokens = vec![];
    for (file, role, flag) in files {
        if let Some(file) = file {
            let token = premem_proto::load_token(Some(file)).with_context(|| flag.to_string())?;
            tokens.push((checked_token(token, &format!("token of {flag}"))?, role));
        }
    }
    Ok(tokens)
}

/// The cluster token and the role tokens: at least one token in all.
fn tokens(args: &CoordinatorArgs) -> Result<(String, Vec<(String, Role)>)> {
    let roles = role_tokens(args)?;
    let cluster = match premem_proto::load_token(args.token_file.as_deref()) {
        Ok(token) => checked_token(token, "cluster token")?,
        Err(premem_proto::ConnectError::NoToken) if !roles.is_empty() => String::new(),
        Err(e) => return Err(e.into()),
    };
    Ok((cluster, roles))
}

pub fn run(args: CoordinatorArgs) -> Result<()> {
    let (token, role_tokens) = tokens(&args)?;
    let mut options = premem_coordinator::ServeOptions::new(&args.listen, &args.state, token);
    options.role_tokens = role_tokens;
    options.allow_prefixes = premem_coordinator::AllowedPrefixes::new(args.allow_prefix.clone())
        .map_err(anyhow::Error::msg)?;
    options.allow_urls =
        premem_coordinator::AllowedUrls::new(args.allow_url.clone(), !args.allow_prefix.is_empty())
            .map_err(anyhow::Error::msg)?;
    options.metrics_listen = args.metrics_listen.clone();
    options.tls = args.tls_cert.clone().zip(args.tls_key.clone());
    options.timing = premem_coordinator::Timing {
        lease_ttl: Duration::from_secs_f64(args.lease_ttl),
        rank_ttl: Duration::from_secs_f64(args.rank_ttl),
    };
    options.max_request_bytes = args.max_request_bytes;
    if let Some(owner) = &args.lease_owner {
        options.lease_owner = owner.clone();
    }
    let tls = options.tls.is_some();
    runtime()?.block_on(async move {
        let running = premem_coordinator::start(options).await?;
        let scheme = if tls { "https" } else { "http" };
        let address = format!("{scheme}://{}", running.address);
        if let Some(file) = &args.address_file {
            let mut text = address.clone();
            if let Some(http) = running.metrics_address {
                text.push_str(&format!("\nhttp://{http}"));
            }
            premem_core::storage::files::write_atomic(file, text.as_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
        }
        if let Some(http) = running.metrics_address {
            tracing::info!("metrics at http://{http}/metrics, dashboard at http://{http}/dashboard");
        }
        if !tls && !running.address.ip().is_loopback() {
            tracing::warn!(
                "listening on {} without TLS: the token and every request cross the network in clear text; pass --tls-cert and --tls-key, or serve behind a TLS proxy",
                running.address
            );
        }
        eprintln!("coordinator at {address}, state in {}", args.state);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        running.stop().await?;
        Ok(())
    })
}
