//! Sweep specs: one TOML file that describes many runs of one base job, for
//! `premem sweep`. The runs are the cartesian product of `[grid]` axes,
//! times the explicit points of `[[list]]` entries; every axis is a dotted
//! path into the job spec (`"train.lr"`, `"train.schedule"`, `"data.fraction"`).
//!
//! ```toml
//! [sweep]
//! name = "synth-sweep"          # run names are "<name>-<id>"
//! output = "runs/synth-sweep"   # each run writes to "<output>/<run name>"
//! trainers = 2                  # trainer processes of the sweep's cluster
//! evaluators = 2                # evaluator processes of the sweep's cluster
//! job = "examples/synth.toml"   # the base job, or an inline [job] table
//!
//! [grid]
//! "train.lr" = [1e-3, 3e-3]
//! "run.seed" = [0, 1]
//!
//! [[list]]
//! "data.fraction" = 0.5
//! "train.keep_steps_of_epochs" = 3
//! ```
//!
//! Each run's spec is the base job with the run's overrides applied to its
//! JSON form (every field present, defaults filled in, unset options `null`):
//! the last segment of a path may replace a value of any type, so a whole
//! table (`"train.schedule" = { type = "cosine", warmup_fraction = 0.1 }`) or
//! an unset option (`"train.max_grad_norm" = 1.0`) can be swept. The result is
//! read back as a [`JobSpec`] and validated. TOML has no `null`: to unset an
//! option, or to switch from `model.config` to `model.base`, replace the
//! table around it (`"model" = { base = "models/llama-3-8b" }`). No path may
//! equal or lie inside another path of the same run (`"train.schedule"` and
//! `"train.schedule.warmup_steps"`), and `run.name`/`run.output` belong to
//! the sweep. In an inline `[job]` table, `run.name` and `run.output` may be
//! left out.
//!
//! A run's id is the first 12 hex digits of the SHA-256 of its resolved spec
//! as canonical JSON (keys sorted, no whitespace between tokens), without
//! `run.name` and `run.output`: the same on every machine and whatever the
//! order or spelling of the file (`1e-3` or `0.001`, a default written out or
//! left out), and **any** change to a run's configuration — the base job, an
//! axis value, a data path, even the checkpoint or eval settings — changes
//! its id (and so its name and output directory). So does a premem version
//! whose `JobSpec` has a new field, even one with a default. Runs are named
//! `"<sweep.name>-<id>"` and write to `"<sweep.output>/<run name>"`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::data::template::PromptTemplate;
use crate::science::advice::AdviceSpec;
use crate::spec::check::Unchecked;
use crate::spec::{
    CheckpointSpec, ClusterSpec, DataSpec, EvalSpec, JobSpec, ModelSpec, RunSpec, SpecError,
    TrackingSpec, TrainSpec, parse_toml, read_spec_file,
};

/// A parsed and checked sweep file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    pub sweep: SweepSection,
    /// The base job, resolved (defaults filled in). Its `run.name` and
    /// `run.output` are never used: every run gets its own.
    pub job: JobSpec,
    /// Axis path → values; the runs are their cartesian product.
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Explicit points (path → value), each combined with every grid point.
    pub list: Vec<BTreeMap<String, Value>>,
    /// The sweep file, for messages.
    pub origin: PathBuf,
    /// The base job's file when given as `sweep.job = "..."`; `None` for an
    /// inline `[job]` table.
    pub job_file: Option<PathBuf>,
}

/// The `[sweep]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSection {
    /// Run names are `"<name>-<id>"`.
    pub name: String,
    /// Each run writes to `"<output>/<run name>"` (trailing `/` trimmed): a
    /// local directory or an object-store URL.
    pub output: String,
    /// Trainer processes the sweep's cluster has; a run takes
    /// `cluster.trainers` of them while it trains.
    pub trainers: usize,
    /// Evaluator processes the sweep's cluster has, shared by all runs.
    pub evaluators: usize,
}

/// One run of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRun {
    /// 12 hex digits of the resolved spec's hash (see the module docs).
    pub id: String,
    /// `"<sweep.name>-<id>"`, also `spec.run.name`.
    pub name: String,
    /// This run's grid point and list entry, path → value.
    pub overrides: BTreeMap<String, Value>,
    /// The resolved, validated job spec, with `run.name` = `name` and
    /// `run.output` = `"<sweep.output>/<name>"`.
    pub spec: JobSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    sweep: RawSection,
    #[serde(default)]
    job: Option<InlineJob>,
    #[serde(default)]
    grid: toml::Table,
    #[serde(default)]
    list: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    name: String,
    output: String,
    #[serde(default = "one")]
    trainers: usize,
    #[serde(default = "one")]
    evaluators: usize,
    /// A job spec file, relative to the working directory.
    #[serde(default)]
    job: Option<String>,
}

fn one() -> usize {
    1
}

/// An inline `[job]`: a [`JobSpec`] whose `run.name` and `run.output` may be
/// left out (the sweep sets them for every run). The fields and their
/// defaults mirror `JobSpec`'s; a field added to `JobSpec` fails to compile
/// in [`InlineJob::into_job`] until it is added here too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineJob {
    #[serde(default)]
    run: InlineRun,
    model: ModelSpec,
    data: DataSpec,
    #[serde(default)]
    prompt: PromptTemplate,
    train: TrainSpec,
    #[serde(default)]
    checkpoint: CheckpointSpec,
    #[serde(default)]
    eval: EvalSpec,
    #[serde(default)]
    cluster: ClusterSpec,
    #[serde(default)]
    advice: AdviceSpec,
    #[serde(default)]
    tracking: TrackingSpec,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InlineRun {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    seed: u64,
}

impl InlineJob {
    fn into_job(self, sweep: &SweepSection) -> JobSpec {
        JobSpec {
            run: RunSpec {
                name: self.run.name.unwrap_or_else(|| sweep.name.clone()),
                output: self.run.output.unwrap_or_else(|| sweep.output.clone()),
                seed: self.run.seed,
                group: None,
            },
            model: self.model,
            data: self.data,
            prompt: self.prompt,
            train: self.train,
            checkpoint: self.checkpoint,
            eval: self.eval,
            cluster: self.cluster,
            advice: self.advice,
            tracking: self.tracking,
        }
    }
}

impl SweepSpec {
    pub fn from_file(path: &Path) -> Result<SweepSpec, SpecError> {
        Self::from_toml(&read_spec_file(path)?, path)
    }

    /// Parses a sweep file and checks it, including that every run resolves
    /// to a valid job spec ([`SweepSpec::expand`] succeeds). A base job given
    /// by path is read from that path (relative to the working directory);
    /// nothing else is read.
    pub fn from_toml(text: &str, origin: &Path) -> Result<SweepSpec, SpecError> {
        let raw: RawSweep = parse_toml(text, origin)?;
        let invalid = |message: String| SpecError::invalid(origin, message);
        let sweep = SweepSection {
            name: raw.sweep.name,
            output: raw.sweep.output,
            trainers: raw.sweep.trainers,
            evaluators: raw.sweep.evaluators,
        };
        // Before the base job, which takes the sweep's name as its own.
        check_section(&sweep).map_err(invalid)?;
        let (job, job_file) = base_job(raw.sweep.job, raw.job, &sweep, origin)?;
        let spec = SweepSpec {
            sweep,
            job,
            grid: grid_of(raw.grid).map_err(invalid)?,
            list: list_of(raw.list).map_err(invalid)?,
            origin: origin.into(),
            job_file,
        };
        spec.expand()?;
        Ok(spec)
    }

    /// Every run of the sweep, in a deterministic order: the grid points in
    /// key order of the axes (the last key varying fastest), each combined
    /// with every `[[list]]` entry in file order (the list varying fastest).
    /// With only a grid, the grid points; with only a list, its entries.
    pub fn expand(&self) -> Result<Vec<SweepRun>, SpecError> {
        let invalid = |message: String| SpecError::Invalid {
            path: self.origin.clone(),
            message,
        };
        self.check().map_err(invalid)?;
        let base = serde_json::to_value(&self.job)
            .map_err(|e| invalid(format!("the base job does not serialize: {e}")))?;
        let entries: Vec<BTreeMap<String, Value>> = if self.list.is_empty() {
            vec![BTreeMap::new()]
        } else {
            self.list.clone()
        };
        let mut runs = Vec::new();
        // id → (canonical spec, index into runs)
        let mut seen: HashMap<String, (String, usize)> = HashMap::new();
        for point in &self.grid_points() {
            for entry in &entries {
                let mut overrides = point.clone();
                overrides.extend(entry.iter().map(|(k, v)| (k.clone(), v.clone())));
                let (id, spec, canonical) = self
                    .resolve(&base, &overrides)
                    .map_err(|m| invalid(format!("run {}: {m}", describe_overrides(&overrides))))?;
                if let Some((other_canonical, index)) = seen.get(&id) {
                    let other: &SweepRun = &runs[*index];
                    let what = if *other_canonical == canonical {
                        "resolve to the same job spec"
                    } else {
                        "have the same id (a hash collision)"
                    };
                    return Err(invalid(format!(
                        "runs {} and {} {what} (id {id}): remove one",
                        describe_overrides(&other.overrides),
                        describe_overrides(&overrides)
                    )));
                }
                seen.insert(id.clone(), (canonical, runs.len()));
                runs.push(SweepRun {
                    id,
                    name: spec.run.name.clone(),
                    overrides,
                    spec,
                });
            }
        }
        Ok(runs)
    }

    /// The cartesian product of the grid axes, in key order of the axes
    /// (the last key varying fastest); one empty point without axes.
    fn grid_points(&self) -> Vec<BTreeMap<String, Value>> {
        let mut points: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
        for (path, values) in &self.grid {
            points = points
                .into_iter()
                .flat_map(|point| {
                    values.iter().map(move |v| {
                        let mut p = point.clone();
                        p.insert(path.clone(), v.clone());
                        p
                    })
                })
                .collect();
        }
        points
    }

    /// The spec of the run with `overrides`: the base job (`base`, as JSON)
    /// with them applied, named by its id and validated; with the id and the
    /// canonical spec the id hashes.
    fn resolve(
        &self,
        base: &Value,
        overrides: &BTreeMap<String, Value>,
    ) -> Result<(String, JobSpec, String), String> {
        let mut value = base.clone();
        for (path, v) in overrides {
            *slot(&mut value, path, &format!("axis \"{path}\""))? = v.clone();
        }
        // Checked once, below, after it is named.
        let Unchecked(mut spec) =
            serde_json::from_value(value).map_err(|e| format!("not a valid job spec: {e}"))?;
        let canonical = canonical_without_name(&spec)?;
        let id = hex::encode(&Sha256::digest(canonical.as_bytes())[..6]);
        let name = format!("{}-{id}", self.sweep.name);
        let output = self.sweep.output.trim_end_matches('/');
        spec.run.output = format!("{output}/{name}");
        spec.run.name = name;
        spec.run.group = Some(format!("sweep/{}", self.sweep.name));
        spec.check().map_err(|e| e.to_string())?;
        if spec.cluster.trainers > self.sweep.trainers {
            return Err(format!(
                "cluster.trainers = {} exceeds sweep.trainers = {}: the run could never be scheduled",
                spec.cluster.trainers, self.sweep.trainers
            ));
        }
        Ok((id, spec, canonical))
    }

    /// The checks that do not need the runs resolved.
    fn check(&self) -> Result<(), String> {
        check_section(&self.sweep)?;
        if self.grid.is_empty() && self.list.is_empty() {
            return Err("no runs: give [grid] axes or [[list]] entries".into());
        }
        let base = serde_json::to_value(&self.job)
            .map_err(|e| format!("the base job does not serialize: {e}"))?;
        for (path, values) in &self.grid {
            let what = format!("grid axis \"{path}\"");
            if values.is_empty() {
                return Err(format!("{what} is an empty list: it would make no runs"));
            }
            check_path(&base, path, &what)?;
        }
        let axes = || {
            self.grid
                .keys()
                .map(|k| (k.as_str(), "grid axis".to_string()))
        };
        check_disjoint(axes())?;
        for (i, entry) in self.list.iter().enumerate() {
            let label = format!("[[list]] entry {}", i + 1);
            if entry.is_empty() {
                return Err(format!(
                    "{label} is empty: give at least one \"path\" = value"
                ));
            }
            for path in entry.keys() {
                check_path(&base, path, &format!("{label} key \"{path}\""))?;
            }
            check_disjoint(
                axes().chain(
                    entry
                        .keys()
                        .map(|k| (k.as_str(), format!("key of {label}"))),
                ),
            )?;
        }
        Ok(())
    }
}

/// The `[sweep]` values.
fn check_section(s: &SweepSection) -> Result<(), String> {
    crate::spec::check_name("sweep.name", &s.name).map_err(|e| e.to_string())?;
    // A run is named "<sweep.name>-<12 hex digits>".
    let longest = crate::spec::MAX_NAME_LEN - 13;
    if s.name.len() > longest {
        return Err(format!(
            "sweep.name: at most {longest} characters (its runs add \"-\" and a 12-digit id), got {}",
            s.name.len()
        ));
    }
    if s.output.trim().is_empty() {
        return Err("sweep.output must not be empty".into());
    }
    if s.trainers == 0 || s.evaluators == 0 {
        return Err(format!(
            "sweep.trainers ({}) and sweep.evaluators ({}) must be at least 1",
            s.trainers, s.evaluators
        ));
    }
    Ok(())
}

/// The base job: the file `sweep.job` (read and validated) or the inline
/// `[job]` (completed and validated), exactly one of them; with the file.
fn base_job(
    path: Option<String>,
    inline: Option<InlineJob>,
    sweep: &SweepSection,
    origin: &Path,
) -> Result<(JobSpec, Option<PathBuf>), SpecError> {
    let invalid = |message: String| SpecError::invalid(origin, message);
    match (path, inline) {
        (Some(_), Some(_)) => Err(invalid(
            "give the base job either as `job = \"path\"` in [sweep] or as an inline [job] table, not both"
                .into(),
        )),
        (None, None) => Err(invalid(
            "no base job: give `job = \"path/to/job.toml\"` in [sweep] or an inline [job] table"
                .into(),
        )),
        (Some(path), None) => {
            let file = PathBuf::from(&path);
            let job = JobSpec::from_file(&file).map_err(|e| match e {
                SpecError::Parse { message, .. } => SpecError::Parse {
                    path: origin.into(),
                    message: format!("base job {}: {message}", file.display()),
                },
                other => invalid(format!("base job {other}")),
            })?;
            Ok((job, Some(file)))
        }
        (None, Some(inline)) => {
            let job = inline.into_job(sweep);
            job.check().map_err(|m| invalid(format!("[job]: {m}")))?;
            Ok((job, None))
        }
    }
}

/// The `[grid]` axes: each a list of values.
fn grid_of(raw: toml::Table) -> Result<BTreeMap<String, Vec<Value>>, String> {
    let mut grid = BTreeMap::new();
    for (path, values) in raw {
        let what = format!("grid axis \"{path}\"");
        let toml::Value::Array(values) = values else {
            return Err(format!(
                "{what} must be a list of values (write dotted paths in quotes: \"train.lr\" = [1e-4, 2e-4])"
            ));
        };
        let values = values
            .iter()
            .map(|v| toml_to_json(v, &what))
            .collect::<Result<Vec<_>, _>>()?;
        grid.insert(path, values);
    }
    Ok(grid)
}

/// The `[[list]]` entries, path → value each.
fn list_of(raw: Vec<toml::Table>) -> Result<Vec<BTreeMap<String, Value>>, String> {
    let mut list = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let mut point = BTreeMap::new();
        for (path, value) in entry {
            let what = format!("[[list]] entry {} key \"{path}\"", i + 1);
            point.insert(path, toml_to_json(&value, &what)?);
        }
        list.push(point);
    }
    Ok(list)
}

/// `"train.lr" = 0.001, "run.seed" = 0` for messages.
fn describe_overrides(overrides: &BTreeMap<String, Value>) -> String {
    let parts: Vec<String> = overrides
        .iter()
        .map(|(k, v)| format!("\"{k}\" = {v}"))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Paths the sweep sets for every run.
const RESERVED: [&str; 3] = ["run", "run.name", "run.output"];

/// Checks that `path` names an existing field of the base job.
fn check_path(base: &Value, path: &str, what: &str) -> Result<(), String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!(
            "{what}: not a dotted path into the job spec (like \"train.lr\")"
        ));
    }
    if RESERVED.contains(&path) {
        return Err(format!(
            "{what}: run.name and run.output are set by the sweep for every run (\"<sweep.name>-<id>\" and \"<sweep.output>/<run name>\"); sweep other keys, like \"run.seed\""
        ));
    }
    let mut scratch = base.clone();
    slot(&mut scratch, path, what).map(|_| ())
}

/// The value at `path` (which must exist, though it may be `null`).
fn slot<'a>(root: &'a mut Value, path: &str, what: &str) -> Result<&'a mut Value, String> {
    let segments: Vec<&str> = path.split('.').collect();
    let mut node = root;
    for (i, segment) in segments.iter().enumerate() {
        let parent = segments[..i].join(".");
        let under = if i == 0 {
            "at the top level".to_string()
        } else {
            format!("under \"{parent}\"")
        };
        node = match node {
            Value::Object(map) => {
                if !map.contains_key(*segment) {
                    let fields: Vec<&str> = map.keys().map(String::as_str).collect();
                    return Err(format!(
                        "{what}: the job spec has no field \"{segment}\" {under} (it has: {})",
                        fields.join(", ")
                    ));
                }
                map.get_mut(*segment).expect("checked above")
            }
            Value::Null => {
                return Err(format!(
                    "{what}: \"{parent}\" is not set in the base job, so it has no \"{segment}\"; set the whole \"{parent}\" instead"
                ));
            }
            other => {
                return Err(format!(
                    "{what}: \"{parent}\" is {}, not a table, so it has no \"{segment}\"; set the whole \"{parent}\" instead",
                    kind(other)
                ));
            }
        };
    }
    Ok(node)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// No path may equal or lie inside another one that applies to the same run.
fn check_disjoint<'a>(paths: impl Iterator<Item = (&'a str, String)>) -> Result<(), String> {
    let paths: Vec<(&str, String)> = paths.collect();
    for (i, (a, a_from)) in paths.iter().enumerate() {
        for (b, b_from) in &paths[i + 1..] {
            if a == b {
                return Err(format!(
                    "\"{a}\" is both a {a_from} and a {b_from}: give each path in one place"
                ));
            }
            let inside = |outer: &str, inner: &str| {
                inner.len() > outer.len()
                    && inner.starts_with(outer)
                    && inner.as_bytes()[outer.len()] == b'.'
            };
            if inside(a, b) || inside(b, a) {
                return Err(format!(
                    "{a_from} \"{a}\" and {b_from} \"{b}\" overlap (one lies inside the other): set either the whole table or its fields"
                ));
            }
        }
    }
    Ok(())
}

fn toml_to_json(v: &toml::Value, what: &str) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{what}: {f} is not a finite number"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => {
            return Err(format!(
                "{what}: {d} is a date/time, and the job spec has no date/time values"
            ));
        }
        toml::Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|x| toml_to_json(x, what))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, x)| Ok((k.clone(), toml_to_json(x, what)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// The spec as canonical JSON (keys sorted at every level, no whitespace),
/// without `run.name` and `run.output`: what a run's id hashes.
fn canonical_without_name(spec: &JobSpec) -> Result<String, String> {
    let mut value =
        serde_json::to_value(spec).map_err(|e| format!("the spec does not serialize: {e}"))?;
    if let Some(run) = value.get_mut("run").and_then(Value::as_object_mut) {
        run.remove("name");
        run.remove("output");
        // The sweep's own name, like the two above: not part of a run's id.
        run.remove("group");
    }
    let mut out = String::new();
    write_canonical(&value, &mut out);
    Ok(out)
}

/// Sorts keys itself, so the result does not depend on whether serde_json's
/// `preserve_order` feature is on somewhere in the build.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(x, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ScheduleSpec;
    use crate::testing::JobToml;
    use serde_json::json;

    /// A sweep header and a minimal inline base job; tests append axes.
    const BASE: &str = r#"
[sweep]
name = "s"
output = "runs/s/"
trainers = 2
evaluators = 3

[job.model]
config = "tiny.json"
tokenizer = "tokenizer.json"

[job.data.train]
path = "train.jsonl"
format = "gsm8k"

[job.train]
lr = 1e-4
schedule = { type = "linear", warmup_steps = 20 }
batch_size = 8
micro_batch_size = 4
"#;

    fn parse(text: &str) -> Result<SweepSpec, SpecError> {
        SweepSpec::from_toml(text, Path::new("sweep.toml"))
    }

    fn with(axes: &str) -> SweepSpec {
        parse(&format!("{BASE}\n{axes}")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn error_with(axes: &str) -> String {
        error(&format!("{BASE}\n{axes}"))
    }

    const GRID_AND_LIST: &str = r#"
[grid]
"train.lr" = [1e-3, 3e-3]
"run.seed" = [0, 1]

[[list]]
"data.fraction" = 0.5
"train.keep_steps_of_epochs" = 3

[[list]]
"train.epochs" = 2
"#;

    #[test]
    fn grid_times_list_in_key_order_last_varying_fastest() {
        let spec = with(GRID_AND_LIST);
        assert_eq!(spec.sweep.trainers, 2);
        assert_eq!(spec.sweep.evaluators, 3);
        let runs = spec.expand().unwrap();
        assert_eq!(runs.len(), 2 * 2 * 2);
        // Axes in key order: "run.seed" slowest, then "train.lr", then the list.
        let got: Vec<(u64, f64, f64, u64)> = runs
            .iter()
            .map(|r| {
                (
                    r.spec.run.seed,
                    r.spec.train.lr,
                    r.spec.data.fraction,
                    r.spec.train.epochs,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1e-3, 0.5, 1),
                (0, 1e-3, 1.0, 2),
                (0, 3e-3, 0.5, 1),
                (0, 3e-3, 1.0, 2),
                (1, 1e-3, 0.5, 1),
                (1, 1e-3, 1.0, 2),
                (1, 3e-3, 0.5, 1),
                (1, 3e-3, 1.0, 2),
            ]
        );
        assert_eq!(runs[0].spec.train.keep_steps_of_epochs, Some(3));
        assert_eq!(runs[1].spec.train.keep_steps_of_epochs, None);
        assert_eq!(
            runs[0].overrides,
            BTreeMap::from([
                ("data.fraction".to_string(), json!(0.5)),
                ("run.seed".to_string(), json!(0)),
                ("train.keep_steps_of_epochs".to_string(), json!(3)),
                ("train.lr".to_string(), json!(1e-3)),
            ])
        );
        // Untouched fields keep the base job's values.
        assert!(
            runs.iter().all(|r| r.spec.train.batch_size == 8
                && r.spec.model.config.as_deref() == Some("tiny.json"))
        );
        // Expanding twice gives the same runs.
        assert_eq!(spec.expand().unwrap(), runs);
    }

    #[test]
    fn grid_only_and_list_only() {
        let runs = with("[grid]\n\"train.lr\" = [1e-3, 2e-3, 3e-3]\n")
            .expand()
            .unwrap();
        assert_eq!(
            runs.iter().map(|r| r.spec.train.lr).collect::<Vec<_>>(),
            vec![1e-3, 2e-3, 3e-3]
        );
        let runs = with("[[list]]\n\"train.epochs\" = 5\n\n[[list]]\n\"run.seed\" = 7\n")
            .expand()
            .unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].spec.train.epochs, runs[0].spec.run.seed), (5, 0));
        assert_eq!((runs[1].spec.train.epochs, runs[1].spec.run.seed), (1, 7));
    }

    #[test]
    fn ids_are_stable_distinct_and_name_the_runs() {
        let runs = with(GRID_AND_LIST).expand().unwrap();
        let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        for r in &runs {
            assert_eq!(r.id.len(), 12);
            assert!(
                r.id.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            assert_eq!(r.name, format!("s-{}", r.id));
            assert_eq!(r.spec.run.name, r.name);
            // The trailing '/' of sweep.output is trimmed.
            assert_eq!(r.spec.run.output, format!("runs/s/{}", r.name));
            // The id is the hash of the canonical spec without name and output.
            let canonical = canonical_without_name(&r.spec).unwrap();
            assert!(canonical.starts_with("{\"checkpoint\":{"), "{canonical}");
            assert!(!canonical.contains("\"name\":") && !canonical.contains("\"output\":"));
            assert_eq!(
                r.id,
                hex::encode(&Sha256::digest(canonical.as_bytes())[..6])
            );
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), runs.len(), "ids must be distinct");
        // Parsing again gives the same ids.
        let again: Vec<String> = with(GRID_AND_LIST)
            .expand()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(again, runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
        // A different sweep name or output changes names, not ids.
        let renamed = parse(
            &format!("{BASE}\n{GRID_AND_LIST}")
                .replace("name = \"s\"", "name = \"other\"")
                .replace("output = \"runs/s/\"", "output = \"s3://bucket/x\""),
        )
        .unwrap()
        .expand()
        .unwrap();
        assert_eq!(renamed[3].id, runs[3].id);
        assert_eq!(renamed[3].name, format!("other-{}", runs[3].id));
        assert_eq!(
            renamed[3].spec.run.output,
            format!("s3://bucket/x/other-{}", runs[3].id)
        );
        // Anything else in the config changes every id.
        let changed = with(&GRID_AND_LIST.replace("\"train.epochs\" = 2", "\"train.epochs\" = 4"))
            .expand()
            .unwrap();
        assert_eq!(changed[0].id, runs[0].id, "the first entry is unchanged");
        assert_ne!(changed[1].id, runs[1].id);
        let base_changed =
            parse(&format!("{BASE}\n{GRID_AND_LIST}").replace("batch_size = 8", "batch_size = 16"))
                .unwrap()
                .expand()
                .unwrap();
        assert!(base_changed.iter().zip(&runs).all(|(a, b)| a.id != b.id));
    }

    #[test]
    fn ids_do_not_depend_on_key_order_or_spelling() {
        let a = with(GRID_AND_LIST).expand().unwrap();
        // The same sweep, tables and keys reordered, floats spelled
        // differently, defaults written out.
        let reordered = r#"
[[list]]
"train.keep_steps_of_epochs" = 3
"data.fraction" = 5e-1

[[list]]
"train.epochs" = 2

[job.train]
micro_batch_size = 4
batch_size = 8
schedule = { warmup_steps = 20, type = "linear" }
lr = 0.0001
optimizer = "adamw"
betas = [0.9, 0.999]

[grid]
"run.seed" = [0, 1]
"train.lr" = [0.001, 0.003]

[job.data]
fraction = 1.0
train = { format = "gsm8k", path = "train.jsonl" }

[job.model]
tokenizer = "tokenizer.json"
config = "tiny.json"
init_seed = 0

[job.run]
seed = 0

[sweep]
evaluators = 3
trainers = 2
output = "runs/s"
name = "s"
"#;
        let b = parse(reordered).unwrap().expand().unwrap();
        assert_eq!(b.len(), a.len());
        let mut ids_a: Vec<(&str, &BTreeMap<String, Value>)> =
            a.iter().map(|r| (r.id.as_str(), &r.overrides)).collect();
        let mut ids_b: Vec<(&str, &BTreeMap<String, Value>)> =
            b.iter().map(|r| (r.id.as_str(), &r.overrides)).collect();
        ids_a.sort_by_key(|x| x.0);
        ids_b.sort_by_key(|x| x.0);
        assert_eq!(ids_a, ids_b);
        // The grid order does not depend on the axes' order in the file.
        assert_eq!(
            a.iter().map(|r| &r.id).collect::<Vec<_>>(),
            b.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.spec, y.spec);
        }
    }

    #[test]
    fn the_same_run_written_two_ways_has_the_same_id() {
        // A grid axis and a list entry that give the same runs.
        let grid = with("[grid]\n\"train.lr\" = [2e-4]\n\"run.seed\" = [3]\n")
            .expand()
            .unwrap();
        let list = with("[[list]]\n\"run.seed\" = 3\n\"train.lr\" = 0.0002\n")
            .expand()
            .unwrap();
        assert_eq!(grid.len(), 1);
        assert_eq!(grid[0].id, list[0].id);
        assert_eq!(grid[0].spec, list[0].spec);
        // A whole table vs. its field: the same schedule.
        let table =
            with("[grid]\n\"train.schedule\" = [{ type = \"linear\", warmup_steps = 50 }]\n")
                .expand()
                .unwrap();
        let field = with("[grid]\n\"train.schedule.warmup_steps\" = [50]\n")
            .expand()
            .unwrap();
        assert_eq!(table[0].id, field[0].id);
    }

    #[test]
    fn base_job_from_a_file_equals_the_inline_one() {
        let dir = tempfile::tempdir().unwrap();
        let job_path = dir.path().join("job.toml");
        let job = JobToml::default().with("[run]\nname = \"ignored\"\noutput = \"ignored/too\"");
        std::fs::write(&job_path, job.text()).unwrap();
        let sweep_text = format!(
            "[sweep]\nname = \"s\"\noutput = \"runs/s\"\ntrainers = 2\nevaluators = 3\njob = {:?}\n{GRID_AND_LIST}",
            job_path.to_str().unwrap()
        );
        let sweep_path = dir.path().join("sweep.toml");
        std::fs::write(&sweep_path, &sweep_text).unwrap();
        let by_path = SweepSpec::from_file(&sweep_path).unwrap();
        assert_eq!(by_path.job_file.as_deref(), Some(job_path.as_path()));
        assert_eq!(by_path.origin, sweep_path);
        let inline = with(GRID_AND_LIST);
        assert_eq!(inline.job_file, None);
        let a = by_path.expand().unwrap();
        let b = inline.expand().unwrap();
        assert_eq!(
            a.iter().map(|r| &r.id).collect::<Vec<_>>(),
            b.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
        assert_eq!(a[5].spec.run.name, b[5].spec.run.name);

        // A missing or broken job file names both files.
        let missing = sweep_text.replace(
            job_path.to_str().unwrap(),
            dir.path().join("nope.toml").to_str().unwrap(),
        );
        let err = error(&missing);
        assert!(
            err.starts_with("sweep.toml: base job ") && err.contains("nope.toml"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("bad.toml"),
            "[run]\nname = \"x\"\noutput = \"y\"\nbogus = 1\n",
        )
        .unwrap();
        let bad = sweep_text.replace(
            job_path.to_str().unwrap(),
            dir.path().join("bad.toml").to_str().unwrap(),
        );
        let err = error(&bad);
        assert!(
            err.starts_with("sweep.toml: base job ")
                && err.contains("bad.toml")
                && err.contains("bogus"),
            "{err}"
        );
    }

    #[test]
    fn an_invalid_combination_names_the_run_and_the_validation() {
        // model.base while the base job has model.config: both are set.
        let err = spec_err(&with_result(
            "[grid]\n\"train.lr\" = [1e-3]\n\n[[list]]\n\"model.base\" = \"models/llama\"\n",
        ));
        assert_eq!(
            err,
            "sweep.toml: run [\"model.base\" = \"models/llama\", \"train.lr\" = 0.001]: model: give either `base` or `config`, not both"
        );
    }

    fn with_result(axes: &str) -> Result<SweepSpec, SpecError> {
        parse(&format!("{BASE}\n{axes}"))
    }

    fn spec_err(r: &Result<SweepSpec, SpecError>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tables_options_and_model_base() {
        let spec = with(
            r#"
[grid]
"train.schedule" = [{ type = "cosine", warmup_fraction = 0.1 }, { type = "linear", warmup_steps = 20 }]
"train.max_grad_norm" = [1.0]
"data.test" = [{ path = "test.jsonl", format = "gsm8k" }]
"eval.threshold" = [{ loglog = -2.4 }, { perplexity = 1.2 }]
"#,
        );
        assert_eq!(spec.job.train.max_grad_norm, None);
        assert_eq!(spec.job.data.test, None);
        let runs = spec.expand().unwrap();
        assert_eq!(runs.len(), 4);
        assert_eq!(
            runs[0].spec.train.schedule,
            ScheduleSpec::Cosine {
                warmup_fraction: 0.1
            }
        );
        // "train.schedule" is the last axis: it varies fastest.
        assert_eq!(
            runs[1].spec.train.schedule,
            ScheduleSpec::Linear { warmup_steps: 20 }
        );
        assert!(runs.iter().all(|r| r.spec.train.max_grad_norm == Some(1.0)));
        assert!(
            runs.iter()
                .all(|r| r.spec.data.test.as_ref().map(|t| t.path.as_str()) == Some("test.jsonl"))
        );
        assert_eq!(
            runs[1].spec.eval.threshold,
            crate::science::pm::Threshold::LogLog(-2.4)
        );
        assert_eq!(
            runs[2].spec.eval.threshold,
            crate::science::pm::Threshold::Perplexity(1.2)
        );

        // TOML has no null, so going from `config` to `base` replaces the
        // whole model table (model.base alone leaves config set: an error,
        // see an_invalid_combination_names_the_run_and_the_validation).
        let runs = with(
            "[[list]]\n\"model\" = { base = \"models/llama-3-8b\" }\n\n[[list]]\n\"model.init_seed\" = 4\n",
        )
        .expand()
        .unwrap();
        assert_eq!(
            runs[0].spec.model.base.as_deref(),
            Some("models/llama-3-8b")
        );
        assert_eq!(runs[0].spec.model.config, None);
        assert_eq!(runs[0].spec.model.tokenizer, None);
        assert_eq!(runs[1].spec.model.init_seed, 4);
        assert_eq!(runs[1].spec.model.base, None);
    }

    #[test]
    fn model_base_can_be_swept() {
        let base_model = BASE.replace(
            "config = \"tiny.json\"\ntokenizer = \"tokenizer.json\"\n",
            "base = \"models/llama-3-8b\"\n",
        );
        let spec = parse(&format!(
            "{base_model}\n[grid]\n\"model.base\" = [\"models/llama-3-8b\", \"models/gemma-2-9b\"]\n"
        ))
        .unwrap();
        let runs = spec.expand().unwrap();
        assert_eq!(
            runs.iter()
                .map(|r| r.spec.model.base.as_deref().unwrap())
                .collect::<Vec<_>>(),
            vec!["models/llama-3-8b", "models/gemma-2-9b"]
        );
        assert_ne!(runs[0].id, runs[1].id);
        assert!(runs.iter().all(|r| r.spec.model.config.is_none()));
    }

    #[test]
    fn unknown_paths_name_the_axis_the_segment_and_the_fields() {
        let err = error_with("[grid]\n\"train.learning_rate\" = [1e-3]\n");
        assert!(
            err.starts_with("sweep.toml: grid axis \"train.learning_rate\": the job spec has no field \"learning_rate\" under \"train\" (it has: "),
            "{err}"
        );
        assert!(err.contains("lr, ") && err.contains("optimizer"), "{err}");
        let err = error_with("[[list]]\n\"trian.lr\" = 1e-3\n");
        assert!(
            err.contains("[[list]] entry 1 key \"trian.lr\": the job spec has no field \"trian\" at the top level (it has: checkpoint, cluster, data, eval, model, prompt, run, train)"),
            "{err}"
        );
        let err = error_with("[grid]\n\"train.lr.value\" = [1e-3]\n");
        assert!(
            err.contains("\"train.lr\" is a number, not a table, so it has no \"value\""),
            "{err}"
        );
        let err = error_with("[grid]\n\"data.test.path\" = [\"t.jsonl\"]\n");
        assert!(
            err.contains("\"data.test\" is not set in the base job")
                && err.contains("set the whole \"data.test\""),
            "{err}"
        );
        let err = error_with("[grid]\n\"train..lr\" = [1e-3]\n");
        assert!(err.contains("not a dotted path"), "{err}");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        // An empty axis.
        let err = error_with("[grid]\n\"train.lr\" = []\n");
        assert!(
            err.contains("grid axis \"train.lr\" is an empty list"),
            "{err}"
        );
        // No axis at all, with and without an empty [grid].
        for axes in ["", "[grid]\n"] {
            let err = error_with(axes);
            assert_eq!(
                err,
                "sweep.toml: no runs: give [grid] axes or [[list]] entries"
            );
        }
        // An empty list entry.
        let err = error_with("[[list]]\n\"train.lr\" = 1e-3\n\n[[list]]\n");
        assert!(err.contains("[[list]] entry 2 is empty"), "{err}");
        // The same path in the grid and a list entry.
        let err = error_with("[grid]\n\"train.lr\" = [1e-3]\n\n[[list]]\n\"train.lr\" = 2e-3\n");
        assert!(
            err.contains("\"train.lr\" is both a grid axis and a key of [[list]] entry 1"),
            "{err}"
        );
        // Overlapping paths.
        let err = error_with(
            "[grid]\n\"train.schedule\" = [{ type = \"linear\" }]\n\"train.schedule.warmup_steps\" = [1]\n",
        );
        assert!(err.contains("overlap"), "{err}");
        // Two runs with the same resolved spec.
        let err = error_with("[grid]\n\"train.lr\" = [1e-3, 0.001]\n");
        assert!(
            err.contains("runs [\"train.lr\" = 0.001] and [\"train.lr\" = 0.001] resolve to the same job spec"),
            "{err}"
        );
        let err = error_with("[[list]]\n\"train.epochs\" = 1\n\n[[list]]\n\"run.seed\" = 0\n");
        assert!(
            err.contains(
                "runs [\"train.epochs\" = 1] and [\"run.seed\" = 0] resolve to the same job spec"
            ),
            "{err}"
        );
        // run.name and run.output are the sweep's.
        for path in ["run.name", "run.output", "run"] {
            let err = error_with(&format!("[grid]\n\"{path}\" = [\"x\"]\n"));
            assert!(
                err.contains(&format!(
                    "grid axis \"{path}\": run.name and run.output are set by the sweep"
                )),
                "{err}"
            );
        }
        // Both or neither of job and [job].
        let err = error(&BASE.replace(
            "evaluators = 3\n",
            "evaluators = 3\njob = \"examples/synth.toml\"\n",
        ));
        assert!(err.contains("not both"), "{err}");
        let err = error("[sweep]\nname = \"s\"\noutput = \"o\"\n\n[grid]\n\"train.lr\" = [1e-3]\n");
        assert!(err.contains("no base job"), "{err}");
        // A pool of zero.
        let err = error(&format!(
            "{}\n[grid]\n\"train.lr\" = [1e-3]\n",
            BASE.replace("trainers = 2", "trainers = 0")
        ));
        assert!(
            err.contains("sweep.trainers (0) and sweep.evaluators (3) must be at least 1"),
            "{err}"
        );
        let err = error(&format!(
            "{}\n[grid]\n\"train.lr\" = [1e-3]\n",
            BASE.replace("evaluators = 3", "evaluators = 0")
        ));
        assert!(err.contains("must be at least 1"), "{err}");
        // A run that needs more trainers than the sweep has.
        let err = error_with("[grid]\n\"cluster.trainers\" = [1, 4]\n");
        assert!(
            err.contains(
                "run [\"cluster.trainers\" = 4]: cluster.trainers = 4 exceeds sweep.trainers = 2"
            ),
            "{err}"
        );
        // An invalid combination names the overrides and the validation.
        let err = error_with("[grid]\n\"train.lr\" = [1e-3, -1.0]\n\"run.seed\" = [5]\n");
        assert!(
            err.contains("sweep.toml: run [\"run.seed\" = 5, \"train.lr\" = -1.0]: train.lr must be positive, got -1"),
            "{err}"
        );
        // A wrong type names the run.
        let err = error_with("[grid]\n\"train.epochs\" = [\"many\"]\n");
        assert!(
            err.contains("run [\"train.epochs\" = \"many\"]: not a valid job spec: invalid type"),
            "{err}"
        );
        // Dates are not job spec values.
        let err = error_with("[grid]\n\"train.lr\" = [1979-05-27]\n");
        assert!(
            err.contains("grid axis \"train.lr\": 1979-05-27 is a date/time"),
            "{err}"
        );
        // A grid axis that is not a list (an unquoted dotted key).
        let err = error_with("[grid]\ntrain.lr = [1e-3]\n");
        assert!(
            err.contains("grid axis \"train\" must be a list of values"),
            "{err}"
        );
        // Unknown keys at every level name the key and the file.
        for (text, key) in [
            (
                BASE.replace("evaluators = 3", "evaluators = 3\ntrainer = 1"),
                "trainer",
            ),
            (
                BASE.replace("lr = 1e-4", "lr = 1e-4\nlearning_rate = 2"),
                "learning_rate",
            ),
            (format!("{BASE}\n[grids]\n\"train.lr\" = [1e-3]\n"), "grids"),
            (
                BASE.replace(
                    "[job.model]",
                    "[job.run]\nname = \"n\"\ncolor = 1\n\n[job.model]",
                ),
                "color",
            ),
        ] {
            let err = error(&format!("{text}\n[grid]\n\"train.epochs\" = [2]\n"));
            assert!(
                err.starts_with("sweep.toml: ") && err.contains(&format!("unknown field `{key}`")),
                "{err}"
            );
        }
        // An invalid base job.
        let err = error(&format!(
            "{}\n[grid]\n\"train.lr\" = [1e-3]\n",
            BASE.replace("micro_batch_size = 4", "micro_batch_size = 3")
        ));
        assert!(
            err.contains("sweep.toml: [job]: train.batch_size (8) must be a multiple"),
            "{err}"
        );
        // A bad sweep name.
        let err = error(&format!(
            "{}\n[grid]\n\"train.lr\" = [1e-3]\n",
            BASE.replace("name = \"s\"", "name = \"a/b\"")
        ));
        assert!(err.contains("sweep.name \"a/b\""), "{err}");
    }

    #[test]
    fn example_sweeps_parse_and_expand() {
        let examples: [(&str, &str, usize); 5] = [
            (
                "synth-sweep.toml",
                include_str!("../../../examples/synth-sweep.toml"),
                4,
            ),
            (
                "sweeps/gsm8k-llama3-8b.toml",
                include_str!("../../../examples/sweeps/gsm8k-llama3-8b.toml"),
                25,
            ),
            (
                "sweeps/gsm8k-gemma2-9b.toml",
                include_str!("../../../examples/sweeps/gsm8k-gemma2-9b.toml"),
                25,
            ),
            (
                "sweeps/math-llama3-8b.toml",
                include_str!("../../../examples/sweeps/math-llama3-8b.toml"),
                25,
            ),
            (
                "sweeps/math-gemma2-9b.toml",
                include_str!("../../../examples/sweeps/math-gemma2-9b.toml"),
                25,
            ),
        ];
        for (name, text, count) in examples {
            let spec =
                SweepSpec::from_toml(text, Path::new(name)).unwrap_or_else(|e| panic!("{e}"));
            let runs = spec.expand().unwrap();
            assert_eq!(runs.len(), count, "{name}");
            for run in &runs {
                assert!(run.spec.cluster.trainers <= spec.sweep.trainers, "{name}");
                assert!(
                    run.spec.run.output.starts_with(&spec.sweep.output),
                    "{name}"
                );
            }
        }
        // Every file in examples/sweeps is covered above.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sweeps");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| format!("sweeps/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        files.sort();
        let mut covered: Vec<String> = examples[1..].iter().map(|e| e.0.to_string()).collect();
        covered.sort();
        assert_eq!(files, covered);

        // The synthetic sweep: 2 seeds x 2 learning rates, 8 epochs of 32
        // steps, a checkpoint every 64 steps, small evaluations.
        let synth = SweepSpec::from_toml(
            include_str!("../../../examples/synth-sweep.toml"),
            Path::new("synth-sweep.toml"),
        )
        .unwrap();
        assert_eq!((synth.sweep.trainers, synth.sweep.evaluators), (2, 2));
        assert_eq!(synth.sweep.output, "runs/synth-sweep");
        let runs = synth.expand().unwrap();
        let points: Vec<(u64, f64)> = runs
            .iter()
            .map(|r| (r.spec.run.seed, r.spec.train.lr))
            .collect();
        assert_eq!(points, vec![(0, 1e-3), (0, 3e-3), (1, 1e-3), (1, 3e-3)]);
        for r in &runs {
            let s = &r.spec;
            assert_eq!(s.cluster.trainers, 1);
            assert_eq!(s.train.epochs, 8);
            assert_eq!((s.train.batch_size, s.train.micro_batch_size), (16, 16));
            assert!(!s.checkpoint.every_epoch);
            assert_eq!(s.checkpoint.every_steps, Some(64));
            assert_eq!(s.eval.limit, Some(32));
            assert_eq!(s.eval.sampling.samples, 3);
            assert_eq!(s.eval.sampling.max_new_tokens, 96);
            assert_eq!(s.eval.task_examples, 16);
            assert_eq!(r.spec.run.output, format!("runs/synth-sweep/{}", r.name));
        }

        // The paper's grids: a half and a quarter data run per learning rate,
        // keeping the step count of 3 full epochs.
        let gsm8k = SweepSpec::from_toml(
            include_str!("../../../examples/sweeps/gsm8k-llama3-8b.toml"),
            Path::new("gsm8k-llama3-8b.toml"),
        )
        .unwrap()
        .expand()
        .unwrap();
        let fractions: Vec<(f64, Option<u64>)> = gsm8k
            .iter()
            .map(|r| (r.spec.data.fraction, r.spec.train.keep_steps_of_epochs))
            .collect();
        assert_eq!(
            fractions.iter().filter(|f| **f == (0.5, Some(3))).count(),
            5
        );
        assert_eq!(
            fractions.iter().filter(|f| **f == (0.25, Some(3))).count(),
            5
        );
        assert!(gsm8k.iter().all(|r| r.spec.cluster.trainers == 8
            && r.spec.cluster.backend == crate::spec::Backend::Nccl
            && r.spec.eval.sampling.samples == 5
            && r.spec.eval.sampling.max_new_tokens == 512));
    }

    /// `make reproduce`'s sweep is the protocol's (examples/reproduce/
    /// PROTOCOL.md): 9 runs from the base, learning rates spanning 30x,
    /// all / half / a quarter of the data for the same 512 steps, 8
    /// log-spaced checkpoints, K = 8, p = 1.095; the first measurement's
    /// sweeps still parse.
    #[test]
    fn the_reproduce_sweeps_are_the_protocol() {
        let spec = SweepSpec::from_toml(
            include_str!("../../../examples/reproduce/sweep.toml"),
            Path::new("sweep.toml"),
        )
        .unwrap();
        let runs = spec.expand().unwrap();
        assert_eq!(runs.len(), 9);
        let lrs: Vec<f64> = runs.iter().map(|r| r.spec.train.lr).collect();
        let (lo, hi) = (
            lrs.iter().copied().fold(1.0, f64::min),
            lrs.iter().copied().fold(0.0, f64::max),
        );
        assert!(hi / lo >= 30.0 - 1e-9, "{lrs:?}");
        let settings: std::collections::BTreeSet<(u64, u64, Option<u64>)> = runs
            .iter()
            .map(|r| {
                let s = &r.spec;
                (
                    (s.data.fraction * 4.0) as u64,
                    s.train.epochs,
                    s.train.keep_steps_of_epochs,
                )
            })
            .collect();
        assert_eq!(
            settings,
            [(4, 32, None), (2, 32, Some(32)), (1, 32, Some(32))].into()
        );
        for r in &runs {
            let s = &r.spec;
            assert_eq!(
                s.model.base.as_deref(),
                Some("runs/reproduce-base/checkpoints/step-00004000")
            );
            let steps = &s.checkpoint.steps;
            assert!(steps.len() >= 7 && steps.last() == Some(&512), "{steps:?}");
            assert!(
                steps.windows(2).all(|w| w[1] <= 2 * w[0]),
                "log-spaced: {steps:?}"
            );
            assert_eq!(s.eval.sampling.samples, 8);
            assert!((s.eval.threshold.perplexity() - 1.0953).abs() < 1e-3);
            assert_eq!(s.eval.limit, None);
        }
        for (name, text) in [
            (
                "templated/sweep.toml",
                include_str!("../../../examples/reproduce/templated/sweep.toml"),
            ),
            (
                "templated/sweep-dense.toml",
                include_str!("../../../examples/reproduce/templated/sweep-dense.toml"),
            ),
        ] {
            let spec = SweepSpec::from_toml(text, Path::new(name)).unwrap();
            assert_eq!(spec.expand().unwrap().len(), 9, "{name}");
        }
    }
}
