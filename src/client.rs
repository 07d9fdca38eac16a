//! Talking to a coordinator from the command line: where it is
//! ([`ConnectArgs`]) and [`Jobs`], the one client that submits, asks about and
//! cancels jobs (every `SubmitJob` request of the CLI is built here).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use backon::BlockingRetryable;
use premem_core::JobSpec;
use premem_core::retry::{Retry, RetryParams};
use premem_proto::{Client, ClientConfig, v1};
use tonic::Code;

/// How to reach the coordinator (trainers, evaluators, submit/status/cancel).
#[derive(clap::Args, Clone)]
pub struct ConnectArgs {
    /// The coordinator's gRPC address (https:// for TLS).
    #[arg(
        long,
        env = "PREMEM_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    /// A file whose first line is the cluster token (default: $PREMEM_TOKEN).
    #[arg(long, env = "PREMEM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM of the CA that signed the coordinator's TLS certificate.
    #[arg(long, env = "PREMEM_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

impl ConnectArgs {
    pub fn config(&self) -> Result<ClientConfig> {
        let token = premem_proto::load_token(self.token_file.as_deref())?;
        let mut config = ClientConfig::new(self.coordinator.clone(), token);
        config.ca_certificate = self.tls_ca.clone();
        Ok(config)
    }
}

/// The async runtime of a command that calls the coordinator.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// How long to wait for an unreachable coordinator (it may be restarting).
pub const UNREACHABLE_LIMIT: Duration = Duration::from_secs(600);

/// A connection to a coordinator for submitting and watching jobs.
pub struct Jobs {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) client: Client,
    pub(crate) address: String,
    /// How long a submission waits for an unreachable coordinator.
    patience: Duration,
}

impl Jobs {
    pub fn connect(config: &ClientConfig) -> Result<Jobs> {
        let rt = runtime()?;
        let client = {
            // The channel's background task needs the runtime's context.
            let _context = rt.enter();
            premem_proto::client(config)?
        };
        Ok(Jobs {
            rt,
            client,
            address: config.address.clone(),
            patience: UNREACHABLE_LIMIT,
        })
    }

    /// Fails at once when the coordinator is unreachable (a command a
    /// person typed), instead of waiting for it to come back.
    pub fn impatient(mut self) -> Jobs {
        self.patience = Duration::ZERO;
        self
    }

    /// An error of a call `what`, naming the coordinator.
    pub fn refused(&self, what: &str, status: &tonic::Status) -> anyhow::Error {
        anyhow::anyhow!(
            "{what} at {}: {} ({:?})",
            self.address,
            status.message(),
            status.code()
        )
    }

    /// Submits a job (a no-op when the same spec was submitted before),
    /// waiting for an unreachable coordinator (up to [`UNREACHABLE_LIMIT`]
    /// unless [`Jobs::impatient`]). Returns whether the job is new.
    pub fn submit(&mut self, spec: &JobSpec) -> Result<bool> {
        let request = v1::SubmitJobRequest {
            spec_json: serde_json::to_string(spec)?,
        };
        let what = format!("submitting job '{}'", spec.run.name);
        let retry = Retry::new(&what, RetryParams::COORDINATOR).for_at_most(self.patience);
        let (rt, client) = (&self.rt, &mut self.client);
        let reply = (|| rt.block_on(client.submit_job(request.clone())))
            .retry(retry.backoff())
            .sleep(std::thread::sleep)
            .when(|s| s.code() == Code::Unavailable)
            .notify(|s, wait| retry.note(&s.message(), wait))
            .call();
        match reply {
            Ok(reply) => Ok(reply.into_inner().created),
            Err(s) => Err(self.refused(&what, &s)),
        }
    }

    /// The job's status.
    pub fn status(&mut self, job: &str) -> Result<v1::JobStatus, tonic::Status> {
        let request = v1::GetStatusRequest {
            job: job.to_string(),
        };
        self.rt
            .block_on(self.client.get_status(request))
            .map(tonic::Response::into_inner)
    }

    /// Cancels the job: training stops, no more tasks go out.
    pub fn cancel(&mut self, job: &str) -> Result<(), tonic::Status> {
        let request = v1::CancelJobRequest {
            job: job.to_string(),
        };
        self.rt
            .block_on(self.client.cancel_job(request))
            .map(|_| ())
    }
}

/// A job's state (unspecified when the coordinator sent an unknown value).
pub fn state_of(status: &v1::JobStatus) -> v1::JobState {
    v1::JobState::try_from(status.state).unwrap_or(v1::JobState::Unspecified)
}

/// Whether a job in `state` has ended.
pub fn terminal(state: v1::JobState) -> bool {
    matches!(
        state,
        v1::JobState::Done | v1::JobState::Failed | v1::JobState::Cancelled
    )
}

/// `done`, `failed`, … as the CLI prints a job's state.
pub fn state_name(status: &v1::JobStatus) -> String {
    state_of(status)
        .as_str_name()
        .trim_start_matches("JOB_STATE_")
        .to_lowercase()
}

/// The newest checkpoint's P-M and test accuracy of a status.
pub fn final_accuracies(status: &v1::JobStatus) -> (Option<f64>, Option<f64>) {
    let last = status.checkpoints.last();
    (
        last.and_then(|c| c.pm_accuracy),
        last.and_then(|c| c.test_accuracy),
    )
}
