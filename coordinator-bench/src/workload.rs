//! The benchmark's sweep: `jobs` runs with the same shape, each with
//! `checkpoints` published checkpoints of `tasks_per_checkpoint` train tasks
//! of `examples_per_task` examples; their datasets, specs and published
//! checkpoints on disk; the rows a simulated evaluator reports; and the P-M
//! accuracy those rows must give, computed independently of
//! `premem_core::science::pm`.

use std::path::Path;

use premem_core::JobSpec;
use premem_proto::v1;

use super::BenchError;

/// The memorization threshold (perplexity scale) of the benchmark jobs.
const THRESHOLD: f64 = 1.5;
/// At most this many checkpoints per job share its tasks.
const MAX_CHECKPOINTS: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub jobs: usize,
    pub checkpoints: usize,
    pub tasks_per_checkpoint: usize,
    pub examples_per_task: usize,
}

impl Workload {
    /// About `tasks` tasks over `jobs` jobs (rounded up to whole
    /// checkpoints).
    pub fn new(tasks: usize, jobs: usize, examples_per_task: usize) -> Workload {
        let per_job = tasks.div_ceil(jobs);
        let checkpoints = per_job.clamp(1, MAX_CHECKPOINTS);
        Workload {
            jobs,
            checkpoints,
            tasks_per_checkpoint: per_job.div_ceil(checkpoints),
            examples_per_task,
        }
    }

    pub fn tasks(&self) -> usize {
        self.jobs * self.checkpoints * self.tasks_per_checkpoint
    }

    pub fn job_name(job: usize) -> String {
        format!("bench-{job:03}")
    }

    pub fn job_names(&self) -> Vec<String> {
        (0..self.jobs).map(Self::job_name).collect()
    }

    fn train_examples(&self) -> usize {
        self.tasks_per_checkpoint * self.examples_per_task
    }

    /// One optimizer step per 2 examples and one epoch per checkpoint: the
    /// checkpoints are the ends of the epochs, the last one the final step.
    fn steps_per_epoch(&self) -> u64 {
        self.train_examples().div_ceil(2) as u64
    }

    pub fn checkpoint_steps(&self) -> Vec<u64> {
        (1..=self.checkpoints as u64)
            .map(|k| k * self.steps_per_epoch())
            .collect()
    }

    /// Writes job `job`'s dataset and published checkpoints under `dir`;
    /// returns its spec as JSON.
    pub fn prepare_job(&self, dir: &Path, job: usize) -> Result<String, BenchError> {
        let name = Self::job_name(job);
        let run = dir.join(&name).join("run");
        for step in self.checkpoint_steps() {
            let published = run.join(format!("checkpoints/step-{step:08}"));
            std::fs::create_dir_all(&published)?;
            std::fs::write(published.join("MANIFEST.json"), b"{}")?;
        }
        let data = dir.join(&name).join("train.jsonl");
        let mut text = String::new();
        for i in 0..self.train_examples() {
            let line = serde_json::json!({
                "id": example_id(i),
                "question": format!("What is {i} + 1?"),
                "answer": format!("{i} + 1 = {}\n#### {}", i + 1, i + 1),
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        std::fs::write(&data, text)?;
        self.spec_json(&name, &data, &run)
    }

    fn spec_json(&self, name: &str, data: &Path, run: &Path) -> Result<String, BenchError> {
        let spec = serde_json::json!({
            "run": { "name": name, "output": run.display().to_string() },
            "model": { "config": "tiny.json", "tokenizer": "tokenizer.json" },
            "data": { "train": { "path": data.display().to_string(), "format": "gsm8k" } },
            "train": {
                "lr": 1e-4,
                "schedule": { "type": "constant" },
                "batch_size": 2,
                "micro_batch_size": 1,
                "epochs": self.checkpoints,
            },
            "eval": {
                "task_examples": self.examples_per_task,
                "threshold": { "perplexity": THRESHOLD },
            },
            "cluster": { "trainers": 2 },
        });
        // Deserializing checks the spec.
        let spec: JobSpec = serde_json::from_value(spec)
            .map_err(|e| BenchError::Check(format!("the benchmark's job spec: {e}")))?;
        Ok(serde_json::to_string(&spec).expect("a spec serialises"))
    }

    /// The expected final P-M accuracy of every job, computed independently
    /// of `premem_core::science::pm`: `PM_m(i) = min(max_{m' ≤ m} masked_{m'}(i),
    /// acc_m(i))` with `masked = acc · [ppl ≥ p]`, averaged over the
    /// examples.
    pub fn expected_pm(&self) -> f64 {
        let steps = self.checkpoint_steps();
        let n = self.train_examples();
        let mut sum = 0.0;
        for i in 0..n {
            let mut best: f64 = 0.0;
            let mut pm = 0.0;
            for &step in &steps {
                let (accuracy, perplexity) = observation(i, step);
                let masked = if perplexity >= THRESHOLD {
                    accuracy
                } else {
                    0.0
                };
                best = best.max(masked);
                pm = best.min(accuracy);
            }
            sum += pm;
        }
        sum / n as f64
    }
}

fn example_id(i: usize) -> String {
    format!("ex{i:07}")
}

fn example_index(id: &str) -> Option<usize> {
    id.strip_prefix("ex")?.parse().ok()
}

/// The simulated evaluation of example `i` at checkpoint `step`: accuracy in
/// {0, ¼, ½, ¾, 1}, perplexity in [1, 2.5], about a third memorized.
pub fn observation(i: usize, step: u64) -> (f64, f64) {
    let step = step as usize;
    let accuracy = ((i * 7 + step * 3) % 5) as f64 / 4.0;
    let perplexity = 1.0 + ((i * 11 + step * 5) % 7) as f64 / 4.0;
    (accuracy, perplexity)
}

/// The rows a simulated evaluator reports for `task`.
pub fn rows(task: &v1::Task) -> Result<Vec<v1::ExampleRow>, BenchError> {
    task.example_ids
        .iter()
        .map(|id| {
            let i = example_index(id).ok_or_else(|| {
                BenchError::Check(format!("task {} has unknown example '{id}'", task.task_id))
            })?;
            let (accuracy, perplexity) = observation(i, task.step);
            Ok(v1::ExampleRow {
                example_id: id.clone(),
                accuracy,
                perplexity,
            })
        })
        .collect()
}

/// The result file of `task` holding `rows` (accuracies in quarters: four
/// samples), as an evaluator writes it.
pub fn result_file(task: &v1::Task, rows: &[v1::ExampleRow]) -> Vec<u8> {
    let results: Vec<premem_core::data::results::ExampleResult> = rows
        .iter()
        .map(|r| premem_core::data::results::ExampleResult {
            id: r.example_id.clone(),
            split: task.split.clone(),
            checkpoint_step: task.step,
            preamble: String::new(),
            n_correct: (r.accuracy * 4.0).round() as u32,
            samples: 4,
            accuracy: r.accuracy,
            target_nll: r.perplexity.ln(),
            target_tokens: 1,
            target_perplexity: r.perplexity,
            mean_sample_tokens: 1.0,
            frac_equal_target: 0.0,
            sample_confidences: vec![],
            sample_texts: vec![],
            distinct_samples: None,
        })
        .collect();
    premem_core::data::results::to_parquet(&results).expect("rows serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_splits_tasks_over_jobs_and_checkpoints() {
        let w = Workload::new(10, 1, 3);
        assert_eq!(
            (w.checkpoints, w.tasks_per_checkpoint, w.tasks()),
            (4, 3, 12)
        );
        assert_eq!(w.train_examples(), 9);
        assert_eq!(w.checkpoint_steps(), vec![5, 10, 15, 20]);
        let w = Workload::new(2, 1, 1);
        assert_eq!(w.checkpoint_steps(), vec![1, 2]);
        let w = Workload::new(100, 3, 4);
        assert_eq!(
            (w.checkpoints, w.tasks_per_checkpoint, w.tasks()),
            (4, 9, 108)
        );
        assert_eq!(w.job_names(), vec!["bench-000", "bench-001", "bench-002"]);
    }

    #[test]
    fn observations_are_valid_rows() {
        for i in 0..50 {
            for step in [1, 7, 12] {
                let (a, p) = observation(i, step);
                assert!((0.0..=1.0).contains(&a) && (1.0..=2.5).contains(&p));
            }
        }
    }
}
