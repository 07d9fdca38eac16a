//! The state of a curation: one JSON file, `<output>/curation-state.json`,
//! rewritten atomically after every iteration. A resumed curation continues
//! each strategy after its last recorded iteration and refuses a spec (or a
//! base job) that differs from the one it started with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CurationError;
use super::select::Chosen;
use super::spec::{CurationSpec, Strategy};
use premem_core::spec::JobSpec;

/// The state file's name under `curation.output`.
pub const STATE_FILE: &str = "curation-state.json";
/// The version of the state file's layout.
pub const STATE_FORMAT: u32 = 1;

impl CurationSpec {
    /// `<output>/curation-state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.output_dir().join(STATE_FILE)
    }
}

/// One iteration of one strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterationRecord {
    /// 1-based.
    pub iteration: u32,
    /// The run that trained on `D + D'` (its output or id, as the driver names it).
    pub run: String,
    /// |D + D'| of that run.
    pub train_examples: usize,
    pub test_accuracy: Option<f64>,
    /// The mean P-M accuracy over `D`.
    pub pm_accuracy: Option<f64>,
    /// The parents chosen after the run (empty for the last iteration).
    pub chosen: Vec<Chosen>,
    /// Ids of the examples added after the run (they are in the next
    /// iteration's data).
    pub added: Vec<String>,
    /// Shortfalls, pool notes and anything else worth knowing.
    pub notes: Vec<String>,
    /// Failed generator tries (the iteration still succeeded).
    pub failures: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurationState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// The curation spec as started.
    pub spec: CurationSpec,
    /// The base job as resolved then (the file's contents for `curation.job`).
    pub job: JobSpec,
    /// Per strategy, the iterations done, in order (iteration k at index k-1).
    pub strategies: BTreeMap<Strategy, Vec<IterationRecord>>,
}

impl CurationState {
    /// A fresh state: no iteration done for any strategy of the spec.
    pub fn new(spec: &CurationSpec, job: &JobSpec) -> CurationState {
        CurationState {
            format: STATE_FORMAT,
            spec: spec.clone(),
            job: job.clone(),
            strategies: spec
                .curation
                .strategies
                .iter()
                .map(|s| (*s, vec![]))
                .collect(),
        }
    }

    /// Reads a state file.
    pub fn load(path: &Path) -> Result<CurationState, CurationError> {
        let state_err = |message: String| CurationError::State {
            path: path.into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| CurationError::Io {
            path: path.into(),
            source,
        })?;
        let raw: Value =
            serde_json::from_str(&text).map_err(|e| state_err(format!("not valid JSON: {e}")))?;
        match raw.get("format").and_then(Value::as_u64) {
            Some(f) if f == STATE_FORMAT as u64 => {}
            other => {
                return Err(state_err(format!(
                    "state format {other:?}; this premem reads format {STATE_FORMAT}"
                )));
            }
        }
        serde_json::from_value(raw).map_err(|e| state_err(format!("not a curation state: {e}")))
    }

    /// The state at `path` if it exists (checked against `spec` and `job`:
    /// any difference is an error listing the keys that differ), else a new
    /// one (not written until [`save`](Self::save)).
    pub fn load_or_new(
        path: &Path,
        spec: &CurationSpec,
        job: &JobSpec,
    ) -> Result<CurationState, CurationError> {
        if !path.exists() {
            return Ok(CurationState::new(spec, job));
        }
        let state = CurationState::load(path)?;
        let mut diffs = vec![];
        diff(&as_stored(&state.spec), &as_stored(spec), "", &mut diffs);
        // An inline job is part of the spec; a job file is compared as read.
        if spec.job.is_none() {
            diff(
                &as_stored(&state.job),
                &as_stored(job),
                "base job: ",
                &mut diffs,
            );
        }
        if !diffs.is_empty() {
            let shown = diffs.len().min(20);
            let more = if diffs.len() > shown {
                format!("\n  ... and {} more", diffs.len() - shown)
            } else {
                String::new()
            };
            return Err(CurationError::State {
                path: path.into(),
                message: format!(
                    "this curation was started with another spec; a resume needs the same one. \
                     Differences (state → now):\n  {}{more}\n\
                     Restore the spec, or give the curation another `output`.",
                    diffs[..shown].join("\n  ")
                ),
            });
        }
        Ok(state)
    }

    /// Writes the state to `path` atomically (creating its directory).
    pub fn save(&self, path: &Path) -> Result<(), CurationError> {
        let io = |source| CurationError::Io {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut bytes = serde_json::to_vec_pretty(self).expect("the state serializes");
        bytes.push(b'\n');
        premem_core::storage::files::write_atomic(path, &bytes).map_err(io)
    }

    /// The iterations done for `strategy`.
    pub fn records(&self, strategy: Strategy) -> &[IterationRecord] {
        self.strategies.get(&strategy).map_or(&[], Vec::as_slice)
    }

    /// The next iteration of `strategy` (1-based), or `None` when it has
    /// done all of them.
    pub fn next_iteration(&self, strategy: Strategy) -> Option<u32> {
        let next = self.records(strategy).len() as u32 + 1;
        (next <= self.spec.curation.iterations).then_some(next)
    }

    /// Whether every strategy has done every iteration.
    pub fn is_done(&self) -> bool {
        self.spec
            .curation
            .strategies
            .iter()
            .all(|s| self.next_iteration(*s).is_none())
    }

    /// The ids added so far for `strategy` (`D'`): never drawn again.
    pub fn used(&self, strategy: Strategy) -> BTreeSet<String> {
        self.records(strategy)
            .iter()
            .flat_map(|r| r.added.iter().cloned())
            .collect()
    }

    /// Appends an iteration; it must be the strategy's next one.
    pub fn push(
        &mut self,
        strategy: Strategy,
        record: IterationRecord,
    ) -> Result<(), CurationError> {
        let expected = self.next_iteration(strategy);
        if !self.spec.curation.strategies.contains(&strategy) || expected != Some(record.iteration)
        {
            return Err(CurationError::Selection(format!(
                "strategy {strategy}: cannot record iteration {}; the next one is {}",
                record.iteration,
                expected.map_or(
                    "none (all done or not a strategy of the spec)".into(),
                    |i| i.to_string()
                )
            )));
        }
        self.strategies.entry(strategy).or_default().push(record);
        Ok(())
    }
}

/// A value as it reads back from the state file (JSON text and back), so
/// that a float compares equal to its stored self.
fn as_stored<T: Serialize>(value: &T) -> Value {
    let text = serde_json::to_string(value).expect("serializes");
    serde_json::from_str(&text).expect("parses")
}

/// The keys (dotted paths) where `old` and `new` differ, with both values.
fn diff(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let sub = if path.is_empty() || path.ends_with(' ') {
                    format!("{path}{key}")
                } else {
                    format!("{path}.{key}")
                };
                let missing = Value::String("(absent)".into());
                diff(
                    a.get(key).unwrap_or(&missing),
                    b.get(key).unwrap_or(&missing),
                    &sub,
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!(
            "{path}: {} → {}",
            super::excerpt(&a.to_string(), 80),
            super::excerpt(&b.to_string(), 80)
        )),
        _ => {}
    }
}

#[cfg(test)]
pub(super) mod tests {
    use premem_core::testing::JobToml;

    use super::*;

    pub(crate) fn sample_state() -> CurationState {
        let spec = crate::select::tests::spec();
        let job = job();
        let mut state = CurationState::new(&spec, &job);
        let record =
            |iteration: u32, n: usize, test: f64, chosen: &[(&str, f64)], added: &[&str]| {
                IterationRecord {
                    iteration,
                    run: format!("runs/synth-curation/x-{iteration}"),
                    train_examples: n,
                    test_accuracy: Some(test),
                    pm_accuracy: Some(test + 0.1),
                    chosen: chosen
                        .iter()
                        .map(|(id, score)| Chosen {
                            id: id.to_string(),
                            score: *score,
                        })
                        .collect(),
                    added: added.iter().map(|s| s.to_string()).collect(),
                    notes: vec![],
                    failures: vec![],
                }
            };
        state
            .push(
                Strategy::Pm,
                record(1, 6, 0.25, &[("a", 0.0), ("e", 0.2)], &["a-1", "e-0"]),
            )
            .unwrap();
        state
            .push(Strategy::Pm, record(2, 8, 0.5, &[("e", 0.4)], &["e-1"]))
            .unwrap();
        let mut last = record(3, 9, 0.625, &[], &[]);
        last.notes.push("iteration 2: asked for 2 new examples, but only 1 unused candidates derive from the 1 chosen parents; took all 1".into());
        state.push(Strategy::Pm, last).unwrap();
        let mut iid = record(1, 6, 0.25, &[("a", 0.0), ("b", f64::NAN)], &["b-0", "c-1"]);
        iid.failures
            .push("attempt 1 of 3: exited with exit status: 1".into());
        state.push(Strategy::Iid, iid).unwrap();
        state
            .push(Strategy::Iid, record(2, 8, 0.375, &[], &[]))
            .unwrap();
        state
    }

    /// The curation tests' base job (`crate::spec`'s) with the training
    /// settings of the demo's.
    pub(crate) fn job() -> JobSpec {
        JobToml::parse(crate::spec::tests::JOB)
            .with(
                r#"
[train]
lr = 3e-3
schedule = { type = "cosine", warmup_fraction = 0.05 }
batch_size = 16
micro_batch_size = 8
[eval]
threshold = { loglog = -1.8 }
"#,
            )
            .without("cluster")
            .spec()
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out").join(STATE_FILE);
        let state = sample_state();
        state.save(&path).unwrap();
        assert!(!path.with_extension("json.partial").exists());
        let back = CurationState::load(&path).unwrap();
        assert_eq!(back, state);
        assert!(back.records(Strategy::Iid)[0].chosen[1].score.is_nan());
        let resumed = CurationState::load_or_new(&path, &state.spec, &state.job).unwrap();
        assert_eq!(resumed, state);

        let text = std::fs::read_to_string(&path).unwrap();
        let raw: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(raw["format"], 1);
        assert_eq!(raw["strategies"]["pm"][1]["added"][0], "e-1");
        assert_eq!(
            raw["strategies"]["iid"][0]["chosen"][1]["score"],
            Value::Null
        );
        assert_eq!(raw["spec"]["curation"]["threshold"], 0.75);
        assert_eq!(raw["job"]["run"]["name"], "base");
    }

    #[test]
    fn progress_queries() {
        let state = sample_state();
        assert_eq!(state.next_iteration(Strategy::Pm), None);
        assert_eq!(state.next_iteration(Strategy::Iid), Some(3));
        assert_eq!(state.next_iteration(Strategy::Ifd), Some(1));
        assert!(!state.is_done());
        assert_eq!(
            state.used(Strategy::Pm),
            ["a-1", "e-0", "e-1"].map(String::from).into()
        );
        let mut s = state.clone();
        let rec = s.records(Strategy::Iid)[1].clone();
        let e = s.push(Strategy::Iid, rec).unwrap_err().to_string();
        assert!(
            e.contains("cannot record iteration 2; the next one is 3"),
            "{e}"
        );
        let fresh = CurationState::new(&state.spec, &state.job);
        assert_eq!(fresh.strategies.len(), 4);
        assert!(fresh.strategies.values().all(Vec::is_empty));
    }

    #[test]
    fn a_resume_refuses_a_changed_spec_or_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let fresh =
            CurationState::load_or_new(&path, &sample_state().spec, &sample_state().job).unwrap();
        assert!(fresh.strategies.values().all(Vec::is_empty));
        let state = sample_state();
        state.save(&path).unwrap();

        let mut spec = state.spec.clone();
        spec.curation.threshold = 0.5;
        spec.curation.seed = 8;
        let e = CurationState::load_or_new(&path, &spec, &state.job)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("curation.seed: 7 → 8"), "{e}");
        assert!(e.contains("curation.threshold: 0.75 → 0.5"), "{e}");

        let mut job = state.job.clone();
        job.train.lr = 1e-3;
        let e = CurationState::load_or_new(&path, &state.spec, &job)
            .unwrap_err()
            .to_string();
        assert!(e.contains("base job: train.lr: 0.003 → 0.001"), "{e}");

        std::fs::write(&path, r#"{"format": 9}"#).unwrap();
        let e = CurationState::load(&path).unwrap_err().to_string();
        assert!(e.contains("state format Some(9)"), "{e}");
    }
}
