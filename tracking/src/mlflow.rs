//! A client of an MLflow tracking server over its REST API (2.0): the
//! experiment by name, the job's run found by its `premem.job` tag, params
//! and metrics in batches within the server's limits, and the run's end.
//! Endpoints and limits as in MLflow's REST API reference and
//! `mlflow/utils/validation.py`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use premem_core::error_text::chain;
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::TrackingError;

/// The run tag that names the premem job a run belongs to.
pub const JOB_TAG: &str = "premem.job";

/// MLflow's log-batch limits (`MAX_METRICS_PER_BATCH`,
/// `MAX_PARAMS_TAGS_PER_BATCH`, `MAX_ENTITIES_PER_BATCH`).
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_PER_BATCH: usize = 100;
const MAX_ITEMS_PER_BATCH: usize = 1000;
/// The longest param value the server stores (`MAX_PARAM_VAL_LENGTH`),
/// in characters.
pub const MAX_PARAM_VALUE_CHARS: usize = 6000;

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an MLflow error's message an error message quotes.
const BODY_EXCERPT_CHARS: usize = 500;

/// A client of one MLflow tracking server.
#[derive(Clone)]
pub struct Mlflow {
    /// The server's base URL without a trailing slash, with any
    /// user:password (reqwest sends them as basic auth).
    base: String,
    /// `base` with the password hidden, for messages.
    shown: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Mlflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mlflow").field("url", &self.shown).finish()
    }
}

/// One metric value: `value` of `key` at `step`, logged at `timestamp_ms`
/// (milliseconds since the Unix epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp_ms: i64,
    pub step: i64,
}

/// How a run ended (or that it is still going).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    /// The name MLflow's `RunStatus` enum gives it.
    fn as_mlflow(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

impl Mlflow {
    /// `url`: the server's base URL ("http://host:5000"); refuses anything
    /// but http/https with a message naming the URL.
    pub fn new(url: &str) -> Result<Mlflow, TrackingError> {
        let (base, shown) = base_url(url)?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A redirect is an answer, not a new address to call: the
            // tracker URL cannot make the coordinator reach another.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TrackingError::Url {
                url: shown.clone(),
                problem: format!("cannot make an HTTP client: {}", chain(&e)),
            })?;
        Ok(Mlflow {
            base,
            shown,
            client,
        })
    }

    /// The id of experiment `name`, created when missing.
    pub async fn experiment(&self, name: &str) -> Result<String, TrackingError> {
        if let Some(found) = self.experiment_by_name(name).await? {
            return self.usable(name, found);
        }
        let action = format!("creating experiment {name:?}");
        let body = json!({ "name": name });
        match self
            .post::<Created>(&action, "experiments/create", &body)
            .await
        {
            Ok(created) => Ok(created.experiment_id),
            // Another client created it since the lookup.
            Err(e) if has_error_code(&e, "RESOURCE_ALREADY_EXISTS") => {
                match self.experiment_by_name(name).await? {
                    Some(found) => self.usable(name, found),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The run tagged `premem.job` = `job` in the experiment, created
    /// (run_name = job, that tag set) when there is none: a coordinator that
    /// restarts logs into the same run.
    pub async fn run(&self, experiment_id: &str, job: &str) -> Result<String, TrackingError> {
        if let Some(run_id) = self.find_run(experiment_id, job).await? {
            return Ok(run_id);
        }
        let action = format!("creating the run of job {job:?} in experiment {experiment_id}");
        let body = json!({
            "experiment_id": experiment_id,
            "run_name": job,
            "start_time": now_ms(),
            "tags": [{ "key": JOB_TAG, "value": job }],
        });
        let created: RunReply = self.post(&action, "runs/create", &body).await?;
        Ok(created.run.info.run_id)
    }

    /// Logs params and metrics in as many log-batch calls as MLflow's
    /// limits need (at most 1000 metrics, 100 params, 1000 items in all per
    /// call; param values cut to the server's limit of 6000 chars). Params
    /// already logged with the same value are skipped; one logged with
    /// another value (or given twice with different values) is an error
    /// naming the key, and nothing is logged.
    pub async fn log(
        &self,
        run_id: &str,
        params: &[(String, String)],
        metrics: &[Metric],
    ) -> Result<(), TrackingError> {
        let params = self.unlogged_params(run_id, params).await?;
        for (params, metrics) in batches(&params, metrics) {
            let action = format!(
                "logging {} params and {} metrics to run {run_id}",
                params.len(),
                metrics.len()
            );
            let body = batch_json(run_id, params, metrics);
            self.post::<Value>(&action, "runs/log-batch", &body).await?;
        }
        Ok(())
    }

    /// Sets the run's status; any status but `Running` also sets its end
    /// time to now.
    pub async fn finish(&self, run_id: &str, status: RunStatus) -> Result<(), TrackingError> {
        let action = format!("setting run {run_id} to {}", status.as_mlflow());
        let mut body = json!({ "run_id": run_id, "status": status.as_mlflow() });
        if status != RunStatus::Running {
            body["end_time"] = json!(now_ms());
        }
        self.post::<Value>(&action, "runs/update", &body).await?;
        Ok(())
    }

    /// The experiment named `name`, deleted ones included; `None` when the
    /// server has none.
    async fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, TrackingError> {
        let action = format!("looking up experiment {name:?}");
        let query = [("experiment_name", name)];
        let endpoint = "experiments/get-by-name";
        match self.get::<ExperimentReply>(&action, endpoint, &query).await {
            Ok(reply) => Ok(Some(reply.experiment)),
            Err(e) if has_error_code(&e, "RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id of a found experiment, unless it is deleted.
    fn usable(&self, name: &str, found: Experiment) -> Result<String, TrackingError> {
        if found.lifecycle_stage == "deleted" {
            return Err(TrackingError::DeletedExperiment {
                name: name.to_string(),
                id: found.experiment_id,
                url: self.shown.clone(),
            });
        }
        Ok(found.experiment_id)
    }

    /// The oldest active run of `job` in the experiment.
    async fn find_run(
        &self,
        experiment_id: &str,
        job: &str,
    ) -> Result<Option<String>, TrackingError> {
        let action = format!("looking for the run of job {job:?} in experiment {experiment_id}");
        let body = json!({
            "experiment_ids": [experiment_id],
            "filter": job_filter(job)?,
            "run_view_type": "ACTIVE_ONLY",
            "max_results": 1,
            "order_by": ["attributes.start_time ASC"],
        });
        let found: SearchReply = self.post(&action, "runs/search", &body).await?;
        Ok(found.runs.into_iter().next().map(|run| run.info.run_id))
    }

    /// Of `params` (values cut to the server's limit), those the run does
    /// not hold yet; an error when one would change a held value.
    async fn unlogged_params(
        &self,
        run_id: &str,
        params: &[(String, String)],
    ) -> Result<Vec<(String, String)>, TrackingError> {
        if params.is_empty() {
            return Ok(vec![]);
        }
        let action = format!("reading the params of run {run_id}");
        let run: RunReply = self.get(&action, "runs/get", &[("run_id", run_id)]).await?;
        let logged = run
            .run
            .data
            .params
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect();
        new_params(logged, params).map_err(|conflict| TrackingError::ParamChanged {
            run_id: run_id.to_string(),
            url: self.shown.clone(),
            key: conflict.key,
            logged: conflict.logged,
            new: conflict.new,
        })
    }

    /// GET `endpoint` with `query`, its JSON answer as `T`.
    async fn get<T: DeserializeOwned>(
        &self,
        action: &str,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T, TrackingError> {
        let request = self.client.get(self.endpoint(endpoint)).query(query);
        self.send(action, "GET", request).await
    }

    /// POST `body` to `endpoint`, its JSON answer as `T`.
    async fn post<T: DeserializeOwned>(
        &self,
        action: &str,
        endpoint: &str,
        body: &Value,
    ) -> Result<T, TrackingError> {
        let request = self.client.post(self.endpoint(endpoint)).json(body);
        self.send(action, "POST", request).await
    }

    fn endpoint(&self, endpoint: &str) -> String {
        format!("{}/api/2.0/mlflow/{endpoint}", self.base)
    }

    /// Sends `request`; a 2xx answer's JSON as `T`, anything else an error
    /// naming `action`, the method and URL, and what the server said.
    async fn send<T: DeserializeOwned>(
        &self,
        action: &str,
        method: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, TrackingError> {
        let transport = |url: String, e: reqwest::Error| TrackingError::Transport {
            action: action.to_string(),
            method,
            url,
            cause: chain(&e),
        };
        let request = request
            .build()
            .map_err(|e| transport(self.shown.clone(), e))?;
        // reqwest has taken any user:password out of the URL by now.
        let url = request.url().to_string();
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| transport(url.clone(), e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| transport(url.clone(), e))?;
        if !status.is_success() {
            return Err(TrackingError::Status {
                action: action.to_string(),
                method,
                url,
                status: status.as_u16(),
                body: excerpt(&body),
            });
        }
        serde_json::from_str(&body).map_err(|e| TrackingError::Response {
            action: action.to_string(),
            method,
            url,
            problem: e.to_string(),
            body: excerpt(&body),
        })
    }
}

/// A JSON object flattened to MLflow params: nested keys joined with '.',
/// arrays as their JSON text, strings unquoted; keys sorted. An empty
/// object inside is `{}`; a value that is not an object has no keys and
/// gives no params.
pub fn flatten_params(value: &Value) -> Vec<(String, String)> {
    let mut params = BTreeMap::new();
    if let Value::Object(fields) = value {
        for (key, value) in fields {
            flatten_into(key.clone(), value, &mut params);
        }
    }
    params.into_iter().collect()
}

fn flatten_into(key: String, value: &Value, params: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (child, value) in fields {
                flatten_into(format!("{key}.{child}"), value, params);
            }
        }
        Value::String(text) => {
            params.insert(key, text.clone());
        }
        other => {
            params.insert(key, other.to_string());
        }
    }
}

/// The checked base URL without a trailing slash, and the same with the
/// password hidden.
fn base_url(url: &str) -> Result<(String, String), TrackingError> {
    let refuse = |shown: &str, problem: String| TrackingError::Url {
        url: shown.to_string(),
        problem,
    };
    let mut parsed = Url::parse(url).map_err(|e| refuse(url, format!("not a URL: {e}")))?;
    if parsed.password().is_some() {
        parsed
            .set_password(Some("***"))
            .expect("a URL with a password has a host");
    }
    let shown = parsed.as_str().trim_end_matches('/').to_string();
    if !matches!(parsed.scheme(), "http" | "https") {
        let problem = format!("scheme {:?} is not http or https", parsed.scheme());
        return Err(refuse(&shown, problem));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(refuse(&shown, "no host".into()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(refuse(
            &shown,
            "a server's base URL has no query or fragment".into(),
        ));
    }
    Ok((url.trim_end_matches('/').to_string(), shown))
}

/// The runs/search filter for the runs of `job`: MLflow's filter strings
/// quote with ' or " and have no escapes.
fn job_filter(job: &str) -> Result<String, TrackingError> {
    let quote = match (job.contains('\''), job.contains('"')) {
        (false, _) => '\'',
        (true, false) => '"',
        (true, true) => {
            return Err(TrackingError::JobName {
                job: job.to_string(),
                problem: "holds both ' and \", which an MLflow filter cannot quote".into(),
            });
        }
    };
    Ok(format!("tags.`{JOB_TAG}` = {quote}{job}{quote}"))
}

/// A param that would change a value already held.
#[derive(Debug, PartialEq)]
struct ParamConflict {
    key: String,
    logged: String,
    new: String,
}

/// Of `params` (values cut to the server's limit), those not in `logged`,
/// each key once; a conflict when a key's value differs from the one logged
/// or given before it.
fn new_params(
    mut logged: BTreeMap<String, String>,
    params: &[(String, String)],
) -> Result<Vec<(String, String)>, ParamConflict> {
    let mut new = Vec::new();
    for (key, value) in params {
        let value = cut_chars(value, MAX_PARAM_VALUE_CHARS);
        match logged.get(key) {
            Some(held) if *held == value => {}
            Some(held) => {
                return Err(ParamConflict {
                    key: key.clone(),
                    logged: held.clone(),
                    new: value,
                });
            }
            None => {
                logged.insert(key.clone(), value.clone());
                new.push((key.clone(), value));
            }
        }
    }
    Ok(new)
}

/// The first `max` characters of `text`.
fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// The params and metrics of one log-batch call.
type Batch<'a> = (&'a [(String, String)], &'a [Metric]);

/// `params` and `metrics` cut into log-batch calls, each within MLflow's
/// limits; none when both are empty.
fn batches<'a>(mut params: &'a [(String, String)], mut metrics: &'a [Metric]) -> Vec<Batch<'a>> {
    let mut calls = Vec::new();
    while !params.is_empty() || !metrics.is_empty() {
        let (these_params, rest) = params.split_at(params.len().min(MAX_PARAMS_PER_BATCH));
        params = rest;
        let room = (MAX_ITEMS_PER_BATCH - these_params.len()).min(MAX_METRICS_PER_BATCH);
        let (these_metrics, rest) = metrics.split_at(metrics.len().min(room));
        metrics = rest;
        calls.push((these_params, these_metrics));
    }
    calls
}

/// The body of one log-batch call.
fn batch_json(run_id: &str, params: &[(String, String)], metrics: &[Metric]) -> Value {
    let params: Vec<Value> = params
        .iter()
        .map(|(key, value)| json!({ "key": key, "value": value }))
        .collect();
    let metrics: Vec<Value> = metrics.iter().map(metric_json).collect();
    json!({ "run_id": run_id, "params": params, "metrics": metrics })
}

/// A metric as log-batch takes it. JSON has no NaN or infinities; MLflow's
/// protobuf JSON reads them as the strings "NaN", "Infinity", "-Infinity".
fn metric_json(metric: &Metric) -> Value {
    let value = match serde_json::Number::from_f64(metric.value) {
        Some(number) => Value::Number(number),
        None if metric.value.is_nan() => json!("NaN"),
        None if metric.value > 0.0 => json!("Infinity"),
        None => json!("-Infinity"),
    };
    json!({
        "key": metric.key,
        "value": value,
        "timestamp": metric.timestamp_ms,
        "step": metric.step,
    })
}

/// Whether `error` is an MLflow error answer with `error_code` = `code`
/// (its body is [`excerpt`]'s: the code, then `: ` and the message).
fn has_error_code(error: &TrackingError, code: &str) -> bool {
    let TrackingError::Status { body, .. } = error else {
        return false;
    };
    body.strip_prefix(code)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(": "))
}

/// What an error message says of a server's answer: MLflow's error code
/// and message when it is an MLflow error object, else only its length.
/// The body itself is never quoted or logged: the tracker URL is a
/// submitter's, and an answer from whatever it points at is not theirs to
/// read (issue 39, item 3).
fn excerpt(body: &str) -> String {
    let reply = serde_json::from_str::<ErrorReply>(body).ok().filter(|r| {
        let code = &r.error_code;
        !code.is_empty()
            && code.len() <= 64
            && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    });
    let Some(reply) = reply else {
        return format!("a body of {} bytes, not shown", body.len());
    };
    let message = reply.message.unwrap_or_default();
    let message = message.trim();
    if message.is_empty() {
        return reply.error_code;
    }
    let cut = cut_chars(message, BODY_EXCERPT_CHARS);
    let more = if cut.len() < message.len() { "…" } else { "" };
    format!("{}: {cut}{more}", reply.error_code)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

#[derive(Deserialize)]
struct ErrorReply {
    error_code: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ExperimentReply {
    experiment: Experiment,
}

#[derive(Deserialize)]
struct Experiment {
    experiment_id: String,
    #[serde(default)]
    lifecycle_stage: String,
}

#[derive(Deserialize)]
struct Created {
    experiment_id: String,
}

#[derive(Deserialize)]
struct SearchReply {
    #[serde(default)]
    runs: Vec<Run>,
}

#[derive(Deserialize)]
struct RunReply {
    run: Run,
}

#[derive(Deserialize)]
struct Run {
    info: RunInfo,
    #[serde(default)]
    data: RunData,
}

#[derive(Deserialize)]
struct RunInfo {
    run_id: String,
}

#[derive(Default, Deserialize)]
struct RunData {
    #[serde(default)]
    params: Vec<Param>,
}

#[derive(Deserialize)]
struct Param {
    key: String,
    value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("p{i}"), i.to_string())).collect()
    }

    fn metrics(n: usize) -> Vec<Metric> {
        (0..n)
            .map(|i| Metric {
                key: "loss".into(),
                value: i as f64,
                timestamp_ms: 0,
                step: i as i64,
            })
            .collect()
    }

    fn sizes(n_params: usize, n_metrics: usize) -> Vec<(usize, usize)> {
        let (p, m) = (params(n_params), metrics(n_metrics));
        batches(&p, &m)
            .iter()
            .map(|(p, m)| (p.len(), m.len()))
            .collect()
    }

    #[test]
    fn batches_stay_within_the_limits() {
        assert_eq!(sizes(0, 0), vec![]);
        assert_eq!(sizes(3, 5), vec![(3, 5)]);
        assert_eq!(sizes(0, 2500), vec![(0, 1000), (0, 1000), (0, 500)]);
        assert_eq!(sizes(250, 0), vec![(100, 0), (100, 0), (50, 0)]);
        assert_eq!(sizes(150, 1000), vec![(100, 900), (50, 100)]);
    }

    #[test]
    fn batches_keep_every_item_in_order() {
        let (p, m) = (params(230), metrics(2100));
        let calls = batches(&p, &m);
        let sent_params: Vec<_> = calls.iter().flat_map(|(p, _)| p.iter()).cloned().collect();
        let sent_metrics: Vec<_> = calls.iter().flat_map(|(_, m)| m.iter()).cloned().collect();
        assert_eq!((sent_params, sent_metrics), (p, m));
    }

    #[test]
    fn flattening_joins_keys_and_sorts() {
        let spec = json!({
            "name": "synth",
            "train": { "lr": 0.001, "epochs": 24, "opt": { "kind": "adamw" }, "none": null },
            "seeds": [0, 1],
            "empty": {},
            "on": true,
        });
        let expected = [
            ("empty", "{}"),
            ("name", "synth"),
            ("on", "true"),
            ("seeds", "[0,1]"),
            ("train.epochs", "24"),
            ("train.lr", "0.001"),
            ("train.none", "null"),
            ("train.opt.kind", "adamw"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(flatten_params(&spec), expected);
        assert_eq!(flatten_params(&json!([1, 2])), vec![]);
    }

    #[test]
    fn params_held_with_the_same_value_are_skipped() {
        let logged = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let given = vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("b".into(), "2".into()),
        ];
        assert_eq!(
            new_params(logged, &given).unwrap(),
            vec![("b".to_string(), "2".to_string())]
        );
    }

    #[test]
    fn a_changed_param_is_a_conflict() {
        let logged = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let conflict = new_params(logged, &[("a".into(), "2".into())]).unwrap_err();
        let expected = ParamConflict {
            key: "a".into(),
            logged: "1".into(),
            new: "2".into(),
        };
        assert_eq!(conflict, expected);
        let twice = [("b".into(), "1".into()), ("b".into(), "2".into())];
        assert_eq!(new_params(BTreeMap::new(), &twice).unwrap_err().key, "b");
    }

    #[test]
    fn long_values_are_cut_by_characters() {
        let long = "é".repeat(MAX_PARAM_VALUE_CHARS + 10);
        let new = new_params(BTreeMap::new(), &[("k".into(), long)]).unwrap();
        assert_eq!(new[0].1.chars().count(), MAX_PARAM_VALUE_CHARS);
    }

    #[test]
    fn only_http_urls_are_taken() {
        for bad in [
            "ftp://host:21",
            "file:///srv/mlruns",
            "localhost:5000",
            "http://host/?q=1",
        ] {
            let message = Mlflow::new(bad).unwrap_err().to_string();
            assert!(message.starts_with("MLflow URL \""), "{message}");
        }
        let message = Mlflow::new("ftp://me:secret@host").unwrap_err().to_string();
        assert!(message.contains("ftp://me:***@host"), "{message}");
        assert_eq!(
            Mlflow::new("https://host:5000/mlflow/").unwrap().base,
            "https://host:5000/mlflow"
        );
        let client = Mlflow::new("http://me:secret@host:5000").unwrap();
        assert_eq!(
            format!("{client:?}"),
            "Mlflow { url: \"http://me:***@host:5000\" }"
        );
    }

    #[test]
    fn job_names_are_quoted() {
        assert_eq!(job_filter("run-1").unwrap(), "tags.`premem.job` = 'run-1'");
        assert_eq!(
            job_filter("bob's").unwrap(),
            "tags.`premem.job` = \"bob's\""
        );
        assert!(job_filter("a'b\"c").is_err());
    }

    #[test]
    fn non_finite_metrics_are_strings() {
        let mut metric = metrics(1).remove(0);
        for (value, expected) in [
            (f64::NAN, json!("NaN")),
            (f64::NEG_INFINITY, json!("-Infinity")),
            (0.5, json!(0.5)),
        ] {
            metric.value = value;
            assert_eq!(metric_json(&metric)["value"], expected);
        }
    }
}
