//! The candidate pool and the seeded draw of new examples from it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::select::Chosen;
use super::{CurationError, derive_seed, quoted_list};
use premem_core::data::dataset::{Dataset, DatasetSpec, Example};

/// The curation candidates: new examples keyed by the train example they
/// derive from (`parent_id`).
#[derive(Clone, Debug)]
pub struct CandidatePool {
    pub path: PathBuf,
    /// The candidates whose parent is a train example, in file order.
    pub candidates: Vec<Example>,
    /// Candidates whose parent is not in the train set (never drawn).
    pub orphans: usize,
    /// What the driver should record (orphans), empty when all is well.
    pub notes: Vec<String>,
}

impl CandidatePool {
    /// Loads the pool and checks it against the train ids: every row needs a
    /// `parent_id`, no candidate may reuse a train id, and at least one
    /// parent id must be a train example. Candidates of other parents are
    /// counted in `orphans` and described in `notes`.
    pub fn load<I, S>(spec: &DatasetSpec, train_ids: I) -> Result<CandidatePool, CurationError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let data = Dataset::load(spec)?;
        Self::from_examples(data.path, data.examples, train_ids)
    }

    /// The same checks on examples already loaded (`path` names them in
    /// messages).
    pub fn from_examples<I, S>(
        path: PathBuf,
        examples: Vec<Example>,
        train_ids: I,
    ) -> Result<CandidatePool, CurationError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let train: Vec<String> = train_ids
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        let train_set: BTreeSet<&str> = train.iter().map(String::as_str).collect();
        let pool_err = |message: String| CurationError::Pool {
            path: path.clone(),
            message,
        };
        let total = examples.len();
        let mut candidates = Vec::with_capacity(total);
        let mut orphan_parents: Vec<String> = vec![];
        let mut orphans = 0;
        for (row, e) in examples.into_iter().enumerate() {
            let parent = candidate_parent(&e, row, &train_set).map_err(pool_err)?;
            if train_set.contains(parent) {
                candidates.push(e);
            } else {
                orphans += 1;
                if !orphan_parents.iter().any(|p| p == parent) {
                    orphan_parents.push(parent.to_string());
                }
            }
        }
        if candidates.is_empty() {
            return Err(pool_err(format!(
                "none of the {total} candidates' parent ids is an example of the train set (e.g. {}; \
                 train ids look like {})",
                quoted_list(&orphan_parents[..orphan_parents.len().min(2)], 2),
                quoted_list(&train[..train.len().min(2)], 2),
            )));
        }
        let mut notes = vec![];
        if orphans > 0 {
            notes.push(format!(
                "{}: {orphans} of the {total} candidates derive from {} ids that are not train \
                 examples (e.g. {}); they are never drawn",
                path.display(),
                orphan_parents.len(),
                quoted_list(&orphan_parents[..orphan_parents.len().min(3)], 3),
            ));
        }
        Ok(CandidatePool {
            path,
            candidates,
            orphans,
            notes,
        })
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }
}

/// The parent id of pool row `row` (0-based), which must have one and must
/// not reuse a train id.
fn candidate_parent<'e>(
    e: &'e Example,
    row: usize,
    train: &BTreeSet<&str>,
) -> Result<&'e str, String> {
    let Some(parent) = &e.parent_id else {
        return Err(format!(
            "candidate {} (row {}) has no parent_id; every curation candidate needs the id \
             of the train example it derives from",
            e.id,
            row + 1
        ));
    };
    if train.contains(e.id.as_str()) {
        return Err(format!(
            "candidate '{}' (row {}) has the id of a train example; candidate ids must be new",
            e.id,
            row + 1
        ));
    }
    Ok(parent)
}

/// The outcome of a draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Drawn {
    /// The new examples, in draw order.
    pub examples: Vec<Example>,
    /// Unused candidates of the chosen parents there were to draw from.
    pub available: usize,
    /// Set when fewer than asked were available (all of them were taken).
    pub shortfall: Option<String>,
}

/// Draws `n` new examples: the candidates whose parent is among `parents`
/// and whose id is not in `used` (the examples added so far), in pool
/// order, shuffled with a ChaCha8 stream seeded by (`seed`, `iteration`),
/// the first `n`. Uniform over the eligible candidates (for `iid`, pass
/// every train example as a parent). Fewer than `n` available: all of them,
/// and `shortfall` says so.
pub fn draw(
    pool: &CandidatePool,
    parents: &[Chosen],
    used: &BTreeSet<String>,
    n: usize,
    seed: u64,
    iteration: u32,
) -> Drawn {
    let parent_ids: BTreeSet<&str> = parents.iter().map(|c| c.id.as_str()).collect();
    let mut eligible: Vec<&Example> = pool
        .candidates
        .iter()
        .filter(|e| {
            e.parent_id
                .as_deref()
                .is_some_and(|p| parent_ids.contains(p))
                && !used.contains(&e.id)
        })
        .collect();
    let available = eligible.len();
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed("premem-curation-draw", seed, iteration));
    eligible.shuffle(&mut rng);
    let examples: Vec<Example> = eligible.into_iter().take(n).cloned().collect();
    let shortfall = (available < n).then(|| {
        if parents.is_empty() {
            format!("iteration {iteration}: no parents were chosen, so none of the {n} new examples asked for were added")
        } else {
            format!(
                "iteration {iteration}: asked for {n} new examples, but only {available} unused \
                 candidates derive from the {} chosen parents; took all {available}",
                parents.len()
            )
        }
    });
    Drawn {
        examples,
        available,
        shortfall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::choose_parents;
    use crate::select::tests::{ids, scores, spec, train};
    use crate::spec::Strategy;
    use std::path::Path;

    fn child(id: &str, parent: &str) -> Example {
        Example {
            id: id.into(),
            query: format!("q {id}"),
            target: "x\n#### 2".into(),
            answer: "2".into(),
            parent_id: Some(parent.into()),
            meta: Default::default(),
        }
    }

    /// a: 4 children, b: 2, c: 3, e: 2.
    fn pool() -> CandidatePool {
        let mut v = vec![];
        for (parent, k) in [("a", 4), ("b", 2), ("c", 3), ("e", 2)] {
            for j in 0..k {
                v.push(child(&format!("{parent}-{j}"), parent));
            }
        }
        CandidatePool::from_examples("pool.jsonl".into(), v, ["a", "b", "c", "d", "e", "f"])
            .unwrap()
    }

    fn write_pool(dir: &Path, rows: &[&str]) -> DatasetSpec {
        let path = dir.join("pool.jsonl");
        std::fs::write(&path, rows.join("\n")).unwrap();
        DatasetSpec {
            path: path.to_str().unwrap().into(),
            format: premem_core::data::dataset::DatasetFormat::Gsm8k,
            fields: None,
            answer_style: None,
            drop_empty_answers: false,
        }
    }

    #[test]
    fn pool_loading_checks_parent_ids() {
        let dir = tempfile::tempdir().unwrap();
        let train_ids = ["train-0", "train-1", "train-2"];
        let row = |id: &str, parent: Option<&str>| {
            let mut v = serde_json::json!({"id": id, "question": "q", "answer": "x\n#### 3"});
            if let Some(p) = parent {
                v["parent_id"] = p.into();
            }
            v.to_string()
        };

        let spec = write_pool(
            dir.path(),
            &[
                &row("p0", Some("train-0")),
                &row("p1", Some("train-0")),
                &row("p2", Some("elsewhere")),
                &row("p3", Some("train-2")),
            ],
        );
        let pool = CandidatePool::load(&spec, train_ids).unwrap();
        assert_eq!(
            pool.candidates
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>(),
            ["p0", "p1", "p3"]
        );
        assert_eq!(pool.orphans, 1);
        assert_eq!(pool.notes.len(), 1);
        assert!(
            pool.notes[0].contains("1 of the 4 candidates derive from 1 ids that are not train examples (e.g. 'elsewhere')"),
            "{:?}",
            pool.notes
        );

        let spec = write_pool(
            dir.path(),
            &[
                &row("p0", Some("x")),
                &row("p1", Some("y")),
                &row("p2", Some("z")),
            ],
        );
        let e = CandidatePool::load(&spec, train_ids)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: none of the 3 candidates' parent ids is an example of the train set (e.g. 'x', 'y'; \
                 train ids look like 'train-0', 'train-1')",
                spec.path
            )
        );

        let spec = write_pool(dir.path(), &[&row("p0", Some("train-0")), &row("p1", None)]);
        let e = CandidatePool::load(&spec, train_ids)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&spec.path) && e.contains("candidate p1 (row 2) has no parent_id"),
            "{e}"
        );

        let spec = write_pool(dir.path(), &[&row("train-1", Some("train-0"))]);
        let e = CandidatePool::load(&spec, train_ids)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("candidate 'train-1' (row 1) has the id of a train example"),
            "{e}"
        );
    }

    #[test]
    fn draw_is_seeded_skips_used_and_other_parents() {
        let pool = pool();
        let parents = choose_parents(Strategy::Pm, &train(), &scores(), &spec()).unwrap();
        assert_eq!(ids(&parents), ["a", "e", "c"]);
        let used: BTreeSet<String> = ["a-0".to_string()].into();
        let first = draw(&pool, &parents, &used, 5, 0, 1);
        // Eligible: a-1..a-3, c-0..c-2, e-0, e-1 = 8.
        assert_eq!(first.available, 8);
        assert_eq!(first.examples.len(), 5);
        assert!(first.shortfall.is_none());
        for e in &first.examples {
            assert_ne!(e.id, "a-0");
            assert!(!e.id.starts_with("b-"), "{}", e.id);
        }
        let picks = |d: &Drawn| d.examples.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(picks(&draw(&pool, &parents, &used, 5, 0, 1)), picks(&first));
        assert_ne!(picks(&draw(&pool, &parents, &used, 5, 1, 1)), picks(&first));
        assert_ne!(picks(&draw(&pool, &parents, &used, 5, 0, 2)), picks(&first));
        // A smaller draw is a prefix of the larger one (same shuffle).
        assert_eq!(
            picks(&draw(&pool, &parents, &used, 3, 0, 1)),
            picks(&first)[..3]
        );
        // Every candidate comes out across enough draws of one.
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            seen.extend(picks(&draw(&pool, &parents, &used, 1, seed, 1)));
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn draw_reports_a_shortfall() {
        let pool = pool();
        let parents = vec![Chosen {
            id: "e".into(),
            score: 0.2,
        }];
        let used: BTreeSet<String> = ["e-1".to_string()].into();
        let d = draw(&pool, &parents, &used, 4, 0, 2);
        assert_eq!(
            d.examples.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["e-0"]
        );
        assert_eq!(
            d.shortfall.as_deref(),
            Some(
                "iteration 2: asked for 4 new examples, but only 1 unused candidates derive from \
                 the 1 chosen parents; took all 1"
            )
        );
        let d = draw(&pool, &[], &used, 4, 0, 3);
        assert!(d.examples.is_empty());
        assert!(d.shortfall.unwrap().contains("no parents were chosen"));
        // iid: every train example is a parent; all 11 candidates are eligible.
        let all = choose_parents(Strategy::Iid, &train(), &scores(), &spec()).unwrap();
        let d = draw(&pool, &all, &BTreeSet::new(), 11, 0, 1);
        assert_eq!((d.available, d.examples.len(), d.shortfall), (11, 11, None));
    }
}
