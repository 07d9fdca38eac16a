//! The task and the base model, from outside the results: each example's
//! family (the datasets' `family` field), the perfect solver's perplexity
//! per family (`synth.json`, written by `premem data synth` beside the
//! data), and the base the runs start from (`model.base`: when it is a
//! checkpoint of a premem run, that run's results on it). Per run, P-M and
//! test accuracy per family.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use premem_core::data::dataset::{DatasetSpec, FAMILY};
use premem_core::data::results::ExampleResult;
use premem_core::data::synth::FamilyPerplexity;
use premem_core::storage::checkpoint::parse_step_name;

use super::run::{RunAnalysis, base_rows};
use crate::load::{RunData, load};

/// Example id → family, for the examples of a dataset file.
pub type Families = BTreeMap<String, String>;

/// The families of a dataset's examples; empty when it cannot be read
/// here or has none.
pub fn families_of(data: &DatasetSpec) -> Families {
    premem_core::Dataset::load(data)
        .map(|d| {
            d.examples
                .into_iter()
                .filter_map(|e| Some((e.id, e.meta.get(FAMILY)?.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// The perfect solver's perplexity per split and family, from the
/// `synth.json` beside `data`.
pub fn perfect_solver(data: &DatasetSpec) -> Option<BTreeMap<String, Vec<FamilyPerplexity>>> {
    premem_core::data::synth::perfect_solver_beside(Path::new(&data.path))
}

/// The base model the runs start from.
#[derive(Clone, Debug)]
pub struct Base {
    /// `model.base` as the runs give it.
    pub path: String,
    /// SHA-256 of its weights (`model.safetensors`), from the runs'
    /// provenance.
    pub sha256: Option<String>,
    /// The premem run it is a checkpoint of, and the step, when it is one.
    pub run: Option<(RunData, u64)>,
}

/// The runs' common `model.base`, with the run it came from when it is a
/// premem checkpoint (`<run>/checkpoints/step-N`). `None` when the runs
/// have no base or not the same one.
pub fn base_of(runs: &[RunData]) -> Option<Base> {
    let path = runs.first()?.record.spec.model.base.clone()?;
    if runs
        .iter()
        .any(|r| r.record.spec.model.base.as_deref() != Some(path.as_str()))
    {
        return None;
    }
    let weights = format!("{}/model.safetensors", path.trim_end_matches('/'));
    let sha256 = runs[0].record.checksums.get(&weights).cloned();
    let dir = Path::new(&path);
    let step = dir
        .file_name()
        .and_then(|n| parse_step_name(&n.to_string_lossy()));
    let run_dir = dir.parent().and_then(Path::parent);
    let run = match (step, run_dir) {
        (Some(step), Some(run_dir))
            if run_dir
                .join(premem_core::storage::checkpoint::RUN_FILE)
                .is_file() =>
        {
            load(&run_dir.to_string_lossy())
                .ok()
                .and_then(|mut r| (r.len() == 1).then(|| (r.remove(0), step)))
        }
        _ => None,
    };
    Some(Base { path, sha256, run })
}

/// One family at one checkpoint of a run.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyValues {
    pub family: String,
    pub train_examples: usize,
    /// Mean P-M accuracy of its train examples.
    pub pm: f64,
    /// Mean accuracy of its test examples (`None`: none).
    pub test_accuracy: Option<f64>,
}

/// P-M and test accuracy per family at a run's last checkpoint with P-M.
#[derive(Clone, Debug, Serialize)]
pub struct RunFamilies {
    pub run: String,
    pub step: u64,
    pub families: Vec<FamilyValues>,
}

/// Per run, its families at its last checkpoint with P-M; empty when the
/// data has no families.
pub fn run_families(runs: &[RunData], analyses: &[RunAnalysis]) -> Vec<RunFamilies> {
    runs.iter()
        .zip(analyses)
        .filter_map(|(run, analysis)| {
            let spec = &run.record.spec;
            let train = families_of(&spec.data.train);
            let test = spec.data.test.as_ref().map(families_of).unwrap_or_default();
            let step = analysis
                .checkpoints
                .iter()
                .rev()
                .find(|c| c.pm.is_some())?
                .step;
            let pm: Vec<(&str, f64)> = analysis
                .examples
                .iter()
                .filter(|e| e.step == step)
                .filter_map(|e| Some((train.get(&e.id)?.as_str(), e.pm)))
                .collect();
            let rows = run.rows.get(&step).map_or(&[][..], |r| &r[..]);
            let families = per_family(&pm, rows, &test);
            (!families.is_empty()).then(|| RunFamilies {
                run: run.name.clone(),
                step,
                families,
            })
        })
        .collect()
}

fn per_family(pm: &[(&str, f64)], rows: &[ExampleResult], test: &Families) -> Vec<FamilyValues> {
    let mut train: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (family, value) in pm {
        train.entry(family).or_default().push(*value);
    }
    let mut tested: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in base_rows(rows, "test") {
        if let Some(family) = test.get(&r.id) {
            tested.entry(family.as_str()).or_default().push(r.accuracy);
        }
    }
    train
        .into_iter()
        .map(|(family, values)| FamilyValues {
            family: family.to_string(),
            train_examples: values.len(),
            pm: mean(&values),
            test_accuracy: tested.get(family).map(|v| mean(v)),
        })
        .collect()
}

pub(super) fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}
