//! Curation over several seeds (`premem curation-summary`): each strategy's
//! test accuracy against the number of training examples, mean and 95 %
//! confidence interval over the seeds (paper Fig. 6 with error bars), and
//! the sample efficiency of each strategy over `iid` — how many examples iid
//! needs to reach the strategy's accuracy, as a multiple of the examples the
//! strategy added.
//!
//! The efficiency is computed per seed, on that seed's own iid curve (its
//! test accuracy at |D|, |D| + N'_1, ...), interpolated linearly; the
//! interval is Student's t over the seeds. Where a strategy beat iid's
//! largest run, iid's curve does not reach its accuracy: the ratio is then
//! only a lower bound ([`Ratio::AtLeast`]), and so is any mean it enters.

use statrs::distribution::{ContinuousCDF, StudentsT};

use super::CurationError;
use super::spec::Strategy;
use super::state::CurationState;
use super::summary_families::{FamilySummary, family_summary};

/// A mean over seeds and the half-width of its 95 % confidence interval
/// (Student's t, n − 1 degrees of freedom; `None` for one value).
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub half_width: Option<f64>,
    pub n: usize,
}

/// The mean of `values` and its 95 % t interval. `values` is not empty.
pub fn estimate(values: &[f64]) -> Estimate {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let half_width = (n >= 2).then(|| {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
            .expect("positive degrees of freedom")
            .inverse_cdf(0.975);
        t * (var / n as f64).sqrt()
    });
    Estimate {
        mean,
        half_width,
        n,
    }
}

/// One iteration of one strategy over the seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub iteration: u32,
    /// |D + D'|, the mean over seeds (equal unless a pool ran short).
    pub train_examples: f64,
    /// |D + D'| per seed, in the order of [`Summary::seeds`].
    pub examples: Vec<f64>,
    /// Test accuracy per seed, in the order of [`Summary::seeds`].
    pub accuracies: Vec<f64>,
    pub accuracy: Estimate,
}

/// A strategy's test accuracy at each iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub strategy: Strategy,
    pub points: Vec<Point>,
}

/// A strategy's sample efficiency over iid on one seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ratio {
    /// iid reaches the accuracy within its curve.
    Exact(f64),
    /// iid's largest run stays below the accuracy: at least this much.
    AtLeast(f64),
}

impl Ratio {
    pub fn value(self) -> f64 {
        match self {
            Ratio::Exact(v) | Ratio::AtLeast(v) => v,
        }
    }
}

/// The efficiency of a strategy over iid after one of its iterations.
#[derive(Clone, Debug, PartialEq)]
pub struct Efficiency {
    pub strategy: Strategy,
    /// The strategy's iteration (≥ 2: it has added examples).
    pub iteration: u32,
    pub per_seed: Vec<Ratio>,
    /// Over the per-seed values; a lower bound when any is [`Ratio::AtLeast`].
    pub estimate: Estimate,
}

impl Efficiency {
    /// Seeds on which iid's curve did not reach the strategy's accuracy.
    pub fn censored(&self) -> usize {
        self.per_seed
            .iter()
            .filter(|r| matches!(r, Ratio::AtLeast(_)))
            .count()
    }
}

/// The curations of several seeds, summarized.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The curations' names, one per seed.
    pub seeds: Vec<String>,
    pub curves: Vec<Curve>,
    /// Empty without an `iid` strategy.
    pub efficiency: Vec<Efficiency>,
    /// P-M per family after the first run and the parents' families, when
    /// D has families and the runs can be read here.
    pub families: Option<FamilySummary>,
}

/// How many training examples iid's `curve` — `(examples, accuracy)` in
/// increasing examples — needs to reach `accuracy`: the first crossing,
/// linearly interpolated; its first point when it starts at or above;
/// `None` when no point reaches it.
pub fn examples_needed(curve: &[(f64, f64)], accuracy: f64) -> Option<f64> {
    let (&(n0, a0), rest) = curve.split_first()?;
    if accuracy <= a0 {
        return Some(n0);
    }
    let mut prev = (n0, a0);
    for &(n, a) in rest {
        if a >= accuracy {
            let f = (accuracy - prev.1) / (a - prev.1);
            return Some(prev.0 + f * (n - prev.0));
        }
        prev = (n, a);
    }
    None
}

/// The efficiency of a strategy that reached `accuracy` with `examples`
/// training examples, against iid's `curve` starting from the same D.
pub fn ratio(curve: &[(f64, f64)], examples: f64, accuracy: f64) -> Ratio {
    let base = curve[0].0;
    let added = examples - base;
    match examples_needed(curve, accuracy) {
        Some(n) => Ratio::Exact((n - base) / added),
        None => Ratio::AtLeast((curve[curve.len() - 1].0 - base) / added),
    }
}

/// Summarizes `seeds` (name, finished curation), at least two, with the
/// same strategies and iterations and different seeds.
pub fn summarize(seeds: &[(String, CurationState)]) -> Result<Summary, CurationError> {
    let strategies = check_comparable(seeds)?;
    let curves: Vec<Curve> = strategies
        .iter()
        .map(|&s| curve(seeds, s))
        .collect::<Result<_, _>>()?;
    let names = seeds.iter().map(|(name, _)| name.clone()).collect();
    let mut summary = Summary::of_curves(names, curves);
    summary.families = family_summary(seeds);
    Ok(summary)
}

impl Summary {
    /// The summary of `curves` (each point with one value per seed of
    /// `seeds`): their efficiency over the `iid` curve, if there is one.
    pub fn of_curves(seeds: Vec<String>, curves: Vec<Curve>) -> Summary {
        let efficiency = match curves.iter().find(|c| c.strategy == Strategy::Iid) {
            Some(iid) => curves
                .iter()
                .filter(|c| c.strategy != Strategy::Iid)
                .flat_map(|c| efficiencies(iid, c))
                .collect(),
            None => vec![],
        };
        Summary {
            seeds,
            curves,
            efficiency,
            families: None,
        }
    }
}

/// The strategies every seed ran (the first's order), after checking the
/// seeds can be compared.
fn check_comparable(seeds: &[(String, CurationState)]) -> Result<Vec<Strategy>, CurationError> {
    let err = |m: String| Err(CurationError::Iteration(m));
    if seeds.len() < 2 {
        return err(format!(
            "a summary over seeds needs at least 2 curations, got {}",
            seeds.len()
        ));
    }
    let (first_name, first) = &seeds[0];
    let strategies = first.spec.curation.strategies.clone();
    let iterations = first.spec.curation.iterations;
    let mut seen = vec![];
    for (name, state) in seeds {
        let c = &state.spec.curation;
        if c.strategies != strategies || c.iterations != iterations {
            return err(format!(
                "{name}: strategies {:?} × {} iterations, but {first_name} has {strategies:?} × {iterations}",
                c.strategies, c.iterations
            ));
        }
        let key = (c.seed, state.job.run.seed, state.job.model.init_seed);
        if let Some((other, _)) = seen.iter().find(|(_, k)| *k == key) {
            return err(format!(
                "{name} and {other} have the same seeds (curation {}, run {}, init {}): the summary is over different seeds",
                key.0, key.1, key.2
            ));
        }
        seen.push((name.clone(), key));
    }
    Ok(strategies)
}

/// A strategy's points over the seeds; every seed must have finished it.
fn curve(seeds: &[(String, CurationState)], s: Strategy) -> Result<Curve, CurationError> {
    let iterations = seeds[0].1.spec.curation.iterations;
    let mut points = vec![];
    for i in 1..=iterations {
        let mut examples = vec![];
        let mut accuracies = vec![];
        for (name, state) in seeds {
            let record = state.records(s).get(i as usize - 1);
            let Some((n, a)) = record.and_then(|r| Some((r.train_examples, r.test_accuracy?)))
            else {
                return Err(CurationError::Iteration(format!(
                    "{name}: iteration {i} of {} has no test accuracy yet (finish that curation first)",
                    s.name()
                )));
            };
            examples.push(n as f64);
            accuracies.push(a);
        }
        points.push(Point {
            iteration: i,
            train_examples: examples.iter().sum::<f64>() / examples.len() as f64,
            accuracy: estimate(&accuracies),
            accuracies,
            examples,
        });
    }
    Ok(Curve {
        strategy: s,
        points,
    })
}

/// The efficiency of `c` over `iid` after each of `c`'s iterations that
/// added examples, per seed on that seed's examples and accuracies.
fn efficiencies(iid: &Curve, c: &Curve) -> Vec<Efficiency> {
    let seeds = iid.points[0].accuracies.len();
    c.points
        .iter()
        .skip(1)
        // A pool that ran dry may have added nothing: no ratio to take.
        .filter(|p| (0..seeds).all(|k| p.examples[k] > iid.points[0].examples[k]))
        .map(|p| {
            let per_seed: Vec<Ratio> = (0..seeds)
                .map(|k| {
                    let curve: Vec<(f64, f64)> = iid
                        .points
                        .iter()
                        .map(|q| (q.examples[k], q.accuracies[k]))
                        .collect();
                    ratio(&curve, p.examples[k], p.accuracies[k])
                })
                .collect();
            let values: Vec<f64> = per_seed.iter().map(|r| r.value()).collect();
            Efficiency {
                strategy: c.strategy,
                iteration: p.iteration,
                estimate: estimate(&values),
                per_seed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values: scipy.stats.t.ppf(0.975, 2) = 4.302653 and
    /// t.ppf(0.975, 4) = 2.776445; the sample sd of (1, 2, 3) is 1.
    #[test]
    fn estimate_is_the_mean_and_the_t_interval() {
        let e = estimate(&[1.0, 2.0, 3.0]);
        assert_eq!((e.mean, e.n), (2.0, 3));
        assert!((e.half_width.unwrap() - 4.302653 / 3f64.sqrt()).abs() < 1e-5);
        // Mean 1, squared deviations 1 + 1 + 0 + 0 + 4 = 6, variance 6 / 4.
        let e = estimate(&[0.0, 0.0, 1.0, 1.0, 3.0]);
        assert!((e.mean - 1.0).abs() < 1e-12);
        let sd = 1.5f64.sqrt();
        assert!((e.half_width.unwrap() - 2.776445 * sd / 5f64.sqrt()).abs() < 1e-5);
        assert_eq!(estimate(&[0.4]).half_width, None);
    }

    /// iid: 10 % at 100 examples, 20 % at 150, 30 % at 200.
    const IID: [(f64, f64); 3] = [(100.0, 0.10), (150.0, 0.20), (200.0, 0.30)];

    #[test]
    fn examples_needed_interpolates_the_first_crossing() {
        assert_eq!(examples_needed(&IID, 0.05), Some(100.0));
        assert_eq!(examples_needed(&IID, 0.10), Some(100.0));
        assert!((examples_needed(&IID, 0.15).unwrap() - 125.0).abs() < 1e-9);
        assert!((examples_needed(&IID, 0.27).unwrap() - 185.0).abs() < 1e-9);
        assert_eq!(examples_needed(&IID, 0.31), None);
        // Not monotone: the first time the curve reaches the accuracy.
        let dip = [(100.0, 0.10), (150.0, 0.30), (200.0, 0.20)];
        assert!((examples_needed(&dip, 0.25).unwrap() - 137.5).abs() < 1e-9);
    }

    #[test]
    fn ratio_counts_added_examples() {
        // pm reaches 25 % with 50 added examples; iid needs 175 − 100 = 75.
        assert_eq!(ratio(&IID, 150.0, 0.25), Ratio::Exact(1.5));
        // pm at iid's own point: 1.
        assert_eq!(ratio(&IID, 150.0, 0.20), Ratio::Exact(1.0));
        // Worse than the base run: iid needs nothing.
        assert_eq!(ratio(&IID, 150.0, 0.08), Ratio::Exact(0.0));
        // Beyond iid's largest run (100 added): at least 100 / 50.
        assert_eq!(ratio(&IID, 150.0, 0.35), Ratio::AtLeast(2.0));
    }

    fn state(seed: u64, accuracies: &[(Strategy, [f64; 3])]) -> (String, CurationState) {
        let mut state = crate::state::tests::sample_state();
        state.spec.curation.seed = seed;
        state.spec.curation.iterations = 3;
        state.spec.curation.strategies = accuracies.iter().map(|(s, _)| *s).collect();
        state.strategies.clear();
        for (s, acc) in accuracies {
            let records = (0..3)
                .map(|i| crate::IterationRecord {
                    iteration: i as u32 + 1,
                    run: format!("run-{i}"),
                    train_examples: 100 + 50 * i,
                    test_accuracy: Some(acc[i]),
                    pm_accuracy: None,
                    chosen: vec![],
                    added: vec![],
                    notes: vec![],
                    failures: vec![],
                })
                .collect();
            state.strategies.insert(*s, records);
        }
        (format!("seed-{seed}"), state)
    }

    /// Two seeds with hand-computed ratios: pm after iteration 2 reaches
    /// 25 % (seed 0: iid 10/20/30 → 1.5) and 40 % (seed 1: iid 20/30/40 →
    /// 2.0); after iteration 3, 35 % beats seed 0's iid (≥ 1.0) and 38 %
    /// is within seed 1's (iid needs 190 − 100 = 90 of 100: 0.9).
    #[test]
    fn summary_over_seeds_with_hand_computed_ratios() {
        use Strategy::{Iid, Pm};
        let seeds = [
            state(0, &[(Pm, [0.10, 0.25, 0.35]), (Iid, [0.10, 0.20, 0.30])]),
            state(1, &[(Pm, [0.20, 0.40, 0.38]), (Iid, [0.20, 0.30, 0.40])]),
        ];
        let s = summarize(&seeds).unwrap();
        assert_eq!(s.seeds, ["seed-0", "seed-1"]);
        let pm = &s.curves[0];
        assert_eq!(pm.points[1].accuracies, [0.25, 0.40]);
        assert!((pm.points[1].accuracy.mean - 0.325).abs() < 1e-12);
        assert_eq!(pm.points[2].train_examples, 200.0);
        assert_eq!(s.efficiency.len(), 2);
        let after2 = &s.efficiency[0];
        assert_eq!(after2.iteration, 2);
        assert_eq!(after2.per_seed, [Ratio::Exact(1.5), Ratio::Exact(2.0)]);
        assert!((after2.estimate.mean - 1.75).abs() < 1e-12);
        // sd of (1.5, 2.0) = 0.3536; t(0.975, 1) = 12.7062.
        let hw = 12.706205 * (0.125f64).sqrt() / 2f64.sqrt();
        assert!((after2.estimate.half_width.unwrap() - hw).abs() < 1e-4);
        let after3 = &s.efficiency[1];
        assert_eq!(after3.per_seed[0], Ratio::AtLeast(1.0));
        let Ratio::Exact(r) = after3.per_seed[1] else {
            panic!("{:?}", after3.per_seed)
        };
        assert!((r - 0.9).abs() < 1e-9);
        assert_eq!(after3.censored(), 1);
    }

    /// A pool that ran dry on one seed (pm's iteration 2 added nothing
    /// there) leaves no ratio after iteration 2, and the others stand.
    #[test]
    fn no_ratio_where_nothing_was_added() {
        use Strategy::{Iid, Pm};
        let mut dry = state(1, &[(Pm, [0.1, 0.2, 0.3]), (Iid, [0.1, 0.2, 0.3])]);
        dry.1.strategies.get_mut(&Pm).unwrap()[1].train_examples = 100;
        let seeds = [
            state(0, &[(Pm, [0.1, 0.2, 0.3]), (Iid, [0.1, 0.2, 0.3])]),
            dry,
        ];
        let s = summarize(&seeds).unwrap();
        let iterations: Vec<u32> = s.efficiency.iter().map(|e| e.iteration).collect();
        assert_eq!(iterations, [3]);
        assert_eq!(s.efficiency[0].per_seed, [Ratio::Exact(1.0); 2]);
    }

    #[test]
    fn summary_refuses_one_seed_twice_unfinished_or_other_strategies() {
        use Strategy::{Iid, Pm};
        let a = state(0, &[(Pm, [0.1, 0.2, 0.3]), (Iid, [0.1, 0.2, 0.3])]);
        let e = summarize(std::slice::from_ref(&a)).unwrap_err().to_string();
        assert!(e.contains("at least 2 curations, got 1"), "{e}");
        let e = summarize(&[a.clone(), (String::from("again"), a.1.clone())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("again and seed-0 have the same seeds"), "{e}");
        let mut b = state(1, &[(Pm, [0.1, 0.2, 0.3]), (Iid, [0.1, 0.2, 0.3])]);
        b.1.strategies.get_mut(&Iid).unwrap().pop();
        let e = summarize(&[a.clone(), b]).unwrap_err().to_string();
        assert!(
            e.contains("seed-1: iteration 3 of iid has no test accuracy"),
            "{e}"
        );
        let c = state(2, &[(Pm, [0.1, 0.2, 0.3])]);
        let e = summarize(&[a, c]).unwrap_err().to_string();
        assert!(e.contains("seed-2: strategies [Pm]"), "{e}");
    }
}
