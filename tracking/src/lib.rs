//! premem-tracking: training and evaluation metrics written where
//! experiment trackers read them, so a premem run shows up beside the
//! runs people already watch. [`tensorboard`] makes TensorBoard event files
//! (the TFRecord framing and the `Event` protobuf, written here without
//! TensorFlow) and reads them back; [`mlflow`] is a client of an MLflow
//! tracking server's REST API that finds or creates the experiment and the
//! job's run, logs parameters and metrics within the server's batch limits,
//! and ends the run. It links nothing of premem and no libtorch.

pub mod mlflow;
pub mod tensorboard;
#[cfg(feature = "testing")]
pub mod testing;

/// What went wrong writing, reading or sending metrics, with what was being
/// done and where.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// An event file that cannot be read: its framing, a checksum or a
    /// record's protobuf.
    #[error("event file record {record} (byte {offset}): {problem}")]
    EventFile {
        record: usize,
        offset: usize,
        problem: String,
    },
    /// A tracking-server URL that cannot be used.
    #[error("MLflow URL {url:?}: {problem}")]
    Url { url: String, problem: String },
    /// A request that got no HTTP answer (connection refused, timeout, TLS).
    #[error("MLflow {action}: {method} {url}: {cause}")]
    Transport {
        action: String,
        method: &'static str,
        url: String,
        cause: String,
    },
    /// The server answered with an error status.
    #[error("MLflow {action}: {method} {url} answered HTTP {status}: {body}")]
    Status {
        action: String,
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    /// The server answered 200 with a body that is not what the API says.
    #[error("MLflow {action}: {method} {url} answered an unexpected body ({problem}): {body}")]
    Response {
        action: String,
        method: &'static str,
        url: String,
        problem: String,
        body: String,
    },
    /// The experiment exists but is deleted, so it can be neither used nor
    /// created again under its name.
    #[error(
        "MLflow experiment {name:?} (id {id}) at {url} is deleted: restore it or use another name"
    )]
    DeletedExperiment {
        name: String,
        id: String,
        url: String,
    },
    /// A job name the runs/search filter cannot quote.
    #[error("MLflow job name {job:?}: {problem}")]
    JobName { job: String, problem: String },
    /// A parameter would change a value MLflow already holds for the run, or
    /// is given twice with different values.
    #[error(
        "MLflow run {run_id} at {url}: param {key:?} is already {logged:?}; MLflow does not allow changing it to {new:?}"
    )]
    ParamChanged {
        run_id: String,
        url: String,
        key: String,
        logged: String,
        new: String,
    },
}
