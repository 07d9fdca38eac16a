//! The synthetic reasoning task of the demo, the tests and `make reproduce`.
//!
//! Multi-step arithmetic word problems: a person has several groups of items
//! (`g` containers of `n` items each), then gains or loses some. The solution
//! multiplies each group, adds the products, then applies the change:
//!
//! ```text
//! Mia has 3 bags with 4 apples each and 5 boxes with 2 apples each. She gives away 6 apples.
//! How many apples does Mia have now?
//! 5 boxes of 2 apples is 5*2=10 apples.
//! 3 bags of 4 apples is 3*4=12 apples.
//! Together that is 10+12=22 apples.
//! Giving away 6 leaves 22-6=16 apples.
//! #### 16
//! ```
//!
//! How a trace is worded is its style (`style.rs`): `templated` (above, the
//! default) leaves only the order of the steps free, `varied` words each
//! line as one of several authors would, `terse` writes equations only. The
//! target trace is one of several valid solutions (chosen by the seed), so a
//! sample can be right without copying the trace — what pre-memorization
//! accuracy is about; `solver.rs` computes how surprising a trace is to a
//! perfect solver that knows the style. The candidate pool holds new
//! problems derived from each training problem (same shape, new names and
//! numbers), keyed by `parent_id`, for curation. A pretraining corpus
//! (`pretrain`) holds problems whose queries no split has, worded in the
//! same styles: the base model it trains knows the language of the targets
//! but has not seen them.

mod solver;
mod style;
mod tokenizer;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::dataset::{Example, FAMILY};

pub use solver::{
    FamilyPerplexity, SYNTH_FILE, completion_tokens, perfect_solver_beside, perplexity,
    summarize_families,
};
pub use style::TraceStyle;
pub use tokenizer::{EOS_TOKEN, PAD_TOKEN, train_task_tokenizer, train_tokenizer};

const NAMES: &[(&str, &str)] = &[
    ("Mia", "She"),
    ("Leo", "He"),
    ("Ana", "She"),
    ("Omar", "He"),
    ("Zoe", "She"),
    ("Ravi", "He"),
    ("Ines", "She"),
    ("Tom", "He"),
    ("Yara", "She"),
    ("Ben", "He"),
    ("Lina", "She"),
    ("Kai", "He"),
];
const ITEMS: &[&str] = &[
    "apples", "pens", "stickers", "marbles", "cookies", "books", "shells", "coins", "cards",
    "plums", "beads", "eggs",
];
const CONTAINERS: &[&str] = &[
    "bags", "boxes", "jars", "baskets", "trays", "packs", "crates", "tins",
];

/// The family name of problems with `groups` groups.
pub fn family_name(groups: usize) -> String {
    format!("{groups}-step")
}

/// How many examples of each split to make, and how.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub train: usize,
    pub test: usize,
    /// New problems per training example in the curation pool.
    pub pool_per_example: usize,
    pub seed: u64,
    /// How many item groups a problem has, drawn uniformly from this range
    /// (each group is one multiplication step; more groups, harder problem).
    pub groups: std::ops::RangeInclusive<usize>,
    /// How often each number of groups occurs, one weight per value of
    /// `groups` in order (e.g. `[6, 3, 1]` for 1..=3: easy problems common,
    /// hard ones rare, as in real reasoning data); `None`: uniform. Train,
    /// test and pool share the mix (a pool child has its parent's shape).
    pub group_weights: Option<Vec<f64>>,
    /// How the train, test and pool targets are worded.
    pub style: TraceStyle,
    /// Problems in the pretraining corpus (0: no corpus).
    pub pretrain: usize,
    /// The corpus's styles, each with its weight (each problem draws one).
    pub pretrain_styles: Vec<(TraceStyle, f64)>,
    /// The corpus's mix of group counts, as `group_weights`; `None`: the
    /// splits' mix.
    pub pretrain_group_weights: Option<Vec<f64>>,
    /// Queries no generated problem may have (another corpus's: data to
    /// finetune a base pretrained on it).
    pub disjoint_from: HashSet<String>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            train: 500,
            test: 200,
            pool_per_example: 2,
            seed: 0,
            groups: 2..=3,
            group_weights: None,
            style: TraceStyle::Templated,
            pretrain: 0,
            pretrain_styles: vec![(TraceStyle::Varied, 1.0)],
            pretrain_group_weights: None,
            disjoint_from: HashSet::new(),
        }
    }
}

/// The largest number of groups a problem can have (one container kind each).
pub const MAX_GROUPS: usize = CONTAINERS.len();

/// Redraws of a problem whose query is taken before giving up.
const MAX_REDRAWS: usize = 10_000;

/// One problem's structure, from which the text and every valid ordering of
/// its solution follow.
#[derive(Clone, Debug)]
struct Problem {
    name: &'static str,
    pronoun: &'static str,
    item: &'static str,
    /// (containers, count, per container)
    groups: Vec<(&'static str, u32, u32)>,
    /// Items gained (positive) or given away (negative).
    change: i32,
}

impl Problem {
    fn random(rng: &mut ChaCha8Rng, num_groups: usize) -> Problem {
        let (name, pronoun) = *NAMES.choose(rng).expect("names");
        let item = *ITEMS.choose(rng).expect("items");
        let mut containers: Vec<&str> = CONTAINERS.to_vec();
        containers.shuffle(rng);
        let groups: Vec<(&str, u32, u32)> = containers[..num_groups]
            .iter()
            .map(|c| (*c, rng.random_range(2..=6), rng.random_range(2..=6)))
            .collect();
        let total: u32 = groups.iter().map(|(_, g, n)| g * n).sum();
        let change = if rng.random_bool(0.5) {
            rng.random_range(1..=6)
        } else {
            -(rng.random_range(1..=6.min(total as i32 - 1)))
        };
        Problem {
            name,
            pronoun,
            item,
            groups,
            change,
        }
    }

    /// A random problem whose query is not in `taken` (drawing nothing more
    /// when `taken` is empty, so data without a corpus is unchanged).
    fn random_avoiding(
        rng: &mut ChaCha8Rng,
        num_groups: usize,
        taken: &HashSet<String>,
    ) -> Result<Problem, String> {
        Problem::random_within(rng, num_groups, taken, MAX_REDRAWS)
    }

    fn random_within(
        rng: &mut ChaCha8Rng,
        num_groups: usize,
        taken: &HashSet<String>,
        max_draws: usize,
    ) -> Result<Problem, String> {
        for _ in 0..max_draws {
            let problem = Problem::random(rng, num_groups);
            if taken.is_empty() || !taken.contains(&problem.query()) {
                return Ok(problem);
            }
        }
        Err(format!(
            "no new {}-group problem in {max_draws} draws: the queries to avoid ({}) cover \
             nearly every such problem; ask for fewer",
            num_groups,
            taken.len()
        ))
    }

    fn query(&self) -> String {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(c, g, n)| format!("{g} {c} with {n} {} each", self.item))
            .collect();
        let change = if self.change >= 0 {
            format!("{} buys {} more {}.", self.pronoun, self.change, self.item)
        } else {
            format!(
                "{} gives away {} {}.",
                self.pronoun, -self.change, self.item
            )
        };
        format!(
            "{} has {}. {change} How many {} does {} have now?",
            self.name,
            join_and(&groups),
            self.item,
            self.name
        )
    }

    /// Each group's product, in the groups' order.
    fn products(&self) -> Vec<u32> {
        self.groups.iter().map(|(_, g, n)| g * n).collect()
    }

    fn total(&self) -> u32 {
        self.products().iter().sum()
    }

    fn answer(&self) -> i64 {
        self.total() as i64 + self.change as i64
    }
}

fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// An example of `problem` with a target drawn in `style`.
fn example(
    id: String,
    problem: &Problem,
    style: TraceStyle,
    rng: &mut ChaCha8Rng,
    parent_id: Option<String>,
) -> Example {
    Example {
        id,
        query: problem.query(),
        target: style.sample(problem, rng),
        answer: problem.answer().to_string(),
        parent_id,
        meta: [(FAMILY.to_string(), family_name(problem.groups.len()))].into(),
    }
}

/// The train and test splits, the curation pool and the pretraining corpus.
pub struct SynthData {
    pub train: Vec<Example>,
    pub test: Vec<Example>,
    pub pool: Vec<Example>,
    /// The pretraining corpus (empty without `pretrain`).
    pub pretrain: Vec<Example>,
    /// The splits' problems in every other style (with a corpus only): the
    /// tokenizer of a base learns every style a finetuning may use.
    pub restyled: Vec<Example>,
    /// The natural log of the probability a perfect solver that knows the
    /// style assigns to each train, test and pool target, by example id.
    pub log_probs: BTreeMap<String, f64>,
}

impl SynthData {
    /// What the task's tokenizer is trained on: the splits, and with a
    /// corpus the corpus and the splits in every style.
    pub fn tokenizer_examples(&self) -> impl Iterator<Item = &Example> {
        self.train
            .iter()
            .chain(&self.test)
            .chain(&self.pool)
            .chain(&self.pretrain)
            .chain(&self.restyled)
    }

    /// Queries that both the corpus (or `others`) and a split hold: empty
    /// when the data is as it should be.
    pub fn shared_queries(&self, others: &HashSet<String>) -> BTreeSet<String> {
        let corpus: HashSet<&str> = self.pretrain.iter().map(|e| e.query.as_str()).collect();
        self.train
            .iter()
            .chain(&self.test)
            .chain(&self.pool)
            .filter(|e| corpus.contains(e.query.as_str()) || others.contains(&e.query))
            .map(|e| e.query.clone())
            .collect()
    }
}

/// Checks `weights` against `groups`: one finite, non-negative weight per
/// number of groups, not all zero.
pub fn check_weights(
    weights: Option<&[f64]>,
    groups: &std::ops::RangeInclusive<usize>,
) -> Result<(), String> {
    let Some(weights) = weights else {
        return Ok(());
    };
    let shapes = groups.clone().count();
    if weights.len() != shapes {
        return Err(format!(
            "{} group weight(s) for {shapes} number(s) of groups ({}-{}): give one per number",
            weights.len(),
            groups.start(),
            groups.end()
        ));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
        return Err(format!(
            "group weights {weights:?}: each must be a number >= 0, and not all 0"
        ));
    }
    Ok(())
}

/// Checks `config.group_weights` against `config.groups`.
pub fn check_group_weights(config: &SynthConfig) -> Result<(), String> {
    check_weights(config.group_weights.as_deref(), &config.groups)
}

/// Draws a problem's number of groups from `groups` and `weights`.
fn shape_sampler(
    groups: &std::ops::RangeInclusive<usize>,
    weights: Option<&[f64]>,
) -> Result<impl Fn(&mut ChaCha8Rng) -> usize + use<>, String> {
    let (lo, hi) = (*groups.start(), *groups.end());
    if !(1 <= lo && lo <= hi && hi <= MAX_GROUPS) {
        return Err(format!(
            "synthetic problems have 1..={MAX_GROUPS} groups, not {lo}..={hi}"
        ));
    }
    check_weights(weights, groups)?;
    let weighted = weights
        .map(|w| rand::distr::weighted::WeightedIndex::new(w).expect("checked group weights"));
    // Two shapes take one fair coin, so the default 2..=3 makes the same data
    // as before the range existed.
    Ok(move |rng: &mut ChaCha8Rng| match (&weighted, hi - lo) {
        (Some(w), _) => lo + rng.sample(w),
        (None, 0) => lo,
        (None, 1) if rng.random_bool(0.5) => lo,
        (None, 1) => hi,
        (None, _) => rng.random_range(lo..=hi),
    })
}

/// The splits, the pool, and (with `config.pretrain`) the corpus; each
/// query is new to `config.disjoint_from`, and the corpus's to the splits.
pub fn generate(config: &SynthConfig) -> Result<SynthData, String> {
    let (train, test, pool, problems) = splits(config)?;
    let log_probs = train
        .iter()
        .chain(&test)
        .chain(&pool)
        .map(|e| {
            let lp = solver::log_probability(config.style, &problems[&e.id], &e.target);
            (e.id.clone(), lp)
        })
        .collect();
    let mut data = SynthData {
        train,
        test,
        pool,
        pretrain: vec![],
        restyled: vec![],
        log_probs,
    };
    if config.pretrain > 0 {
        data.pretrain = corpus(config, &data)?;
        data.restyled = restyle(config, &problems);
    }
    Ok(data)
}

/// Train, test and pool examples and their problems by example id, drawn
/// in the order the generator always drew them (so templated data without
/// a corpus is unchanged).
type Splits = (
    Vec<Example>,
    Vec<Example>,
    Vec<Example>,
    BTreeMap<String, Problem>,
);

fn splits(config: &SynthConfig) -> Result<Splits, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let shape = shape_sampler(&config.groups, config.group_weights.as_deref())?;
    let (avoid, style) = (&config.disjoint_from, config.style);
    let mut problems = BTreeMap::new();
    let mut train = Vec::with_capacity(config.train);
    let mut pool = Vec::with_capacity(config.train * config.pool_per_example);
    for i in 0..config.train {
        let groups = shape(&mut rng);
        let problem = Problem::random_avoiding(&mut rng, groups, avoid)?;
        let parent = example(format!("train-{i:05}"), &problem, style, &mut rng, None);
        problems.insert(parent.id.clone(), problem);
        for j in 0..config.pool_per_example {
            let child = Problem::random_avoiding(&mut rng, groups, avoid)?;
            let parent_id = Some(parent.id.clone());
            let e = example(
                format!("pool-{i:05}-{j}"),
                &child,
                style,
                &mut rng,
                parent_id,
            );
            problems.insert(e.id.clone(), child);
            pool.push(e);
        }
        train.push(parent);
    }
    let mut test = Vec::with_capacity(config.test);
    for i in 0..config.test {
        let groups = shape(&mut rng);
        let problem = Problem::random_avoiding(&mut rng, groups, avoid)?;
        test.push(example(
            format!("test-{i:05}"),
            &problem,
            style,
            &mut rng,
            None,
        ));
        problems.insert(format!("test-{i:05}"), problem);
    }
    Ok((train, test, pool, problems))
}

/// The pretraining corpus: `config.pretrain` problems (its own random
/// stream, its own mix of shapes and styles) whose queries no split and
/// nothing in `config.disjoint_from` has.
fn corpus(config: &SynthConfig, splits: &SynthData) -> Result<Vec<Example>, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(1);
    let weights = config
        .pretrain_group_weights
        .as_deref()
        .or(config.group_weights.as_deref());
    let shape =
        shape_sampler(&config.groups, weights).map_err(|e| format!("pretraining corpus: {e}"))?;
    let styles = style_sampler(&config.pretrain_styles)?;
    let mut avoid = config.disjoint_from.clone();
    avoid.extend(
        splits
            .train
            .iter()
            .chain(&splits.test)
            .chain(&splits.pool)
            .map(|e| e.query.clone()),
    );
    (0..config.pretrain)
        .map(|i| {
            let groups = shape(&mut rng);
            let problem = Problem::random_avoiding(&mut rng, groups, &avoid)?;
            let style = styles(&mut rng);
            Ok(example(
                format!("pretrain-{i:06}"),
                &problem,
                style,
                &mut rng,
                None,
            ))
        })
        .collect()
}

/// Draws a style by the weights of `styles`.
fn style_sampler(
    styles: &[(TraceStyle, f64)],
) -> Result<impl Fn(&mut ChaCha8Rng) -> TraceStyle + use<>, String> {
    let weights: Vec<f64> = styles.iter().map(|(_, w)| *w).collect();
    if styles.is_empty()
        || weights.iter().any(|w| !w.is_finite() || *w < 0.0)
        || weights.iter().sum::<f64>() <= 0.0
    {
        return Err(format!(
            "pretraining styles {styles:?}: give at least one, each weight >= 0, not all 0"
        ));
    }
    let index = rand::distr::weighted::WeightedIndex::new(weights).expect("checked weights");
    let styles: Vec<TraceStyle> = styles.iter().map(|(s, _)| *s).collect();
    Ok(move |rng: &mut ChaCha8Rng| styles[rng.sample(&index)])
}

/// Each split problem in every style but its own (its own random stream).
fn restyle(config: &SynthConfig, problems: &BTreeMap<String, Problem>) -> Vec<Example> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(2);
    let mut out = vec![];
    for (id, problem) in problems {
        for style in TraceStyle::ALL.into_iter().filter(|s| *s != config.style) {
            out.push(example(
                format!("{id}-{style}"),
                problem,
                style,
                &mut rng,
                None,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::answer::{AnswerStyle, gold_answer, is_correct};

    fn generate_ok(config: &SynthConfig) -> SynthData {
        generate(config).unwrap()
    }

    /// The number of groups of an example, from its family.
    fn groups(e: &Example) -> usize {
        e.meta[FAMILY].trim_end_matches("-step").parse().unwrap()
    }

    fn small() -> SynthData {
        generate_ok(&SynthConfig {
            train: 50,
            test: 20,
            pool_per_example: 2,
            seed: 7,
            ..Default::default()
        })
    }

    #[test]
    fn generation_is_seeded_and_splits_are_sized() {
        let a = small();
        let b = small();
        assert_eq!(a.train, b.train);
        assert_eq!((a.train.len(), a.test.len(), a.pool.len()), (50, 20, 100));
        assert!(a.pool.iter().all(|p| {
            p.parent_id
                .as_deref()
                .is_some_and(|id| id.starts_with("train-"))
        }));
    }

    /// Every equation `a op b = c` in the trace holds, the trace ends with
    /// the answer, and it has one multiplication per group.
    fn check_trace(e: &Example) {
        assert_eq!(
            gold_answer(&e.target, AnswerStyle::Gsm8k).as_deref(),
            Some(e.answer.as_str())
        );
        assert!(is_correct(&e.target, &e.answer, AnswerStyle::Gsm8k));
        let mut products = 0;
        for eq in e.target.split_whitespace().filter(|w| w.contains('=')) {
            let eq = eq.trim_end_matches('.');
            let (lhs, rhs) = eq.split_once('=').unwrap();
            let value: i64 = rhs.parse().unwrap();
            let computed = if let Some((a, b)) = lhs.split_once('*') {
                products += 1;
                a.parse::<i64>().unwrap() * b.parse::<i64>().unwrap()
            } else if lhs.contains('-') {
                let (a, b) = lhs.split_once('-').unwrap();
                a.parse::<i64>().unwrap() - b.parse::<i64>().unwrap()
            } else {
                lhs.split('+').map(|t| t.parse::<i64>().unwrap()).sum()
            };
            assert_eq!(computed, value, "{eq} in {}", e.target);
        }
        assert_eq!(products, groups(e), "{}", e.target);
        assert!(e.answer.parse::<i64>().unwrap() > 0);
    }

    #[test]
    fn traces_are_arithmetically_right_and_end_with_the_answer() {
        for e in small().train.iter().chain(&small().test) {
            check_trace(e);
        }
    }

    #[test]
    fn group_range_sets_the_problem_shapes() {
        let data = generate_ok(&SynthConfig {
            train: 200,
            test: 0,
            pool_per_example: 1,
            groups: 1..=4,
            ..Default::default()
        });
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in data.train.iter().enumerate() {
            check_trace(e);
            check_trace(&data.pool[i]);
            // A pool child has its parent's shape.
            assert_eq!(groups(&data.pool[i]), groups(e));
            seen.insert(groups(e));
        }
        assert_eq!(seen, [1, 2, 3, 4].into());
        // One group: no sum line.
        let one = data.train.iter().find(|e| groups(e) == 1).unwrap();
        assert!(!one.target.contains("Together"), "{}", one.target);
        let fixed = generate_ok(&SynthConfig {
            train: 20,
            groups: 3..=3,
            ..Default::default()
        });
        assert!(fixed.train.iter().all(|e| groups(e) == 3));
    }

    /// Weights 6:3:1 over 1..=3 groups: the counts of 2000 problems are
    /// within 4 standard deviations of 1200/600/200, a zero weight never
    /// occurs, and pool children keep their parent's shape.
    #[test]
    fn group_weights_set_how_often_each_shape_occurs() {
        let count = |weights: Vec<f64>| {
            let data = generate_ok(&SynthConfig {
                train: 2000,
                test: 0,
                pool_per_example: 1,
                groups: 1..=3,
                group_weights: Some(weights),
                ..Default::default()
            });
            for (e, child) in data.train.iter().zip(&data.pool) {
                assert_eq!(groups(e), groups(child));
            }
            let mut n = [0usize; 3];
            for e in &data.train {
                n[groups(e) - 1] += 1;
            }
            n
        };
        let n = count(vec![6.0, 3.0, 1.0]);
        for (got, p) in n.iter().zip([0.6f64, 0.3, 0.1]) {
            let (mean, sd) = (2000.0 * p, (2000.0 * p * (1.0 - p)).sqrt());
            assert!((*got as f64 - mean).abs() < 4.0 * sd, "{n:?}");
        }
        assert_eq!(count(vec![1.0, 0.0, 1.0])[1], 0);
    }

    #[test]
    fn group_weights_must_fit_the_range() {
        let config = |groups, weights: Vec<f64>| SynthConfig {
            groups,
            group_weights: Some(weights),
            ..Default::default()
        };
        let err = check_group_weights(&config(1..=3, vec![1.0, 2.0])).unwrap_err();
        assert!(err.contains("2 group weight(s) for 3"), "{err}");
        let err = check_group_weights(&config(1..=2, vec![1.0, -1.0])).unwrap_err();
        assert!(err.contains(">= 0"), "{err}");
        assert!(check_group_weights(&config(1..=2, vec![0.0, 0.0])).is_err());
        assert!(check_group_weights(&config(2..=3, vec![0.0, 1.0])).is_ok());
    }

    /// Every gold trace of the synthetic set is judged correct against its
    /// own answer and wrong against the answer of another example (one with a
    /// different value).
    #[test]
    fn gold_traces_are_right_against_themselves_and_wrong_against_others() {
        let data = generate_ok(&SynthConfig {
            train: 300,
            test: 100,
            pool_per_example: 1,
            seed: 11,
            ..Default::default()
        });
        let all: Vec<&Example> = data
            .train
            .iter()
            .chain(&data.test)
            .chain(&data.pool)
            .collect();
        for (i, e) in all.iter().enumerate() {
            assert!(
                is_correct(&e.target, &e.answer, AnswerStyle::Gsm8k),
                "{}",
                e.id
            );
            let other = (1..all.len())
                .map(|d| all[(i + d) % all.len()])
                .find(|o| o.answer != e.answer)
                .expect("another answer exists");
            assert!(
                !is_correct(&e.target, &other.answer, AnswerStyle::Gsm8k),
                "{} vs {}",
                e.id,
                other.id
            );
        }
    }

    #[test]
    fn a_problem_has_several_valid_traces() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let problem = Problem::random(&mut rng, 3);
        let traces: std::collections::BTreeSet<String> = (0..20)
            .map(|_| TraceStyle::Templated.sample(&problem, &mut rng))
            .collect();
        assert!(traces.len() > 3, "only {} distinct traces", traces.len());
        assert!(
            traces
                .iter()
                .all(|t| t.ends_with(&format!("#### {}", problem.answer())))
        );
    }

    #[test]
    fn tokenizer_splits_digits_and_round_trips() {
        let data = small();
        let texts: Vec<String> = data
            .train
            .iter()
            .map(|e| format!("{}\n{}", e.query, e.target))
            .collect();
        let tok = train_tokenizer(&texts, 300).unwrap();
        assert!(tok.get_vocab_size(true) <= 300);
        assert_eq!(tok.token_to_id(PAD_TOKEN), Some(0));
        assert_eq!(tok.token_to_id(EOS_TOKEN), Some(1));
        let enc = tok.encode("3*4=12 apples", false).unwrap();
        let pieces: Vec<&str> = enc.get_tokens().iter().map(String::as_str).collect();
        assert!(pieces.contains(&"1") && pieces.contains(&"2"), "{pieces:?}");
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "3*4=12 apples");
    }

    /// Every style's traces are arithmetically right, end with the answer,
    /// and are in the style's support (finite perfect-solver probability).
    #[test]
    fn every_style_writes_right_traces_it_can_score() {
        for style in TraceStyle::ALL {
            let data = generate_ok(&SynthConfig {
                train: 60,
                test: 30,
                pool_per_example: 1,
                groups: 1..=4,
                style,
                ..Default::default()
            });
            for e in data.train.iter().chain(&data.test).chain(&data.pool) {
                check_trace(e);
                let lp = data.log_probs[&e.id];
                assert!(
                    lp.is_finite() && lp <= 1e-12,
                    "{style}: {lp} for {}",
                    e.target
                );
            }
        }
    }

    /// The templated style has one wording: a 1-step trace is certain
    /// (probability 1, perplexity 1), a 2-step one is 1/2 for the step order
    /// times 1/2 for the sum's order (1/2 alone when both products are
    /// equal, the two sums reading the same), 3 steps 1/6 × 1/6.
    #[test]
    fn templated_probabilities_are_the_orders_by_hand() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            for k in 1..=3 {
                let problem = Problem::random(&mut rng, k);
                let trace = TraceStyle::Templated.sample(&problem, &mut rng);
                let lp = solver::log_probability(TraceStyle::Templated, &problem, &trace);
                let products = problem.products();
                let distinct: BTreeSet<u32> = products.iter().copied().collect();
                let expected: f64 = match (k, distinct.len()) {
                    (1, _) => 1.0,
                    (2, 1) => 0.5,
                    (2, _) => 0.25,
                    (3, 3) => 1.0 / 36.0,
                    (3, 2) => 1.0 / 6.0 / 3.0,
                    _ => 1.0 / 6.0,
                };
                assert!((lp - expected.ln()).abs() < 1e-9, "{k} {products:?}: {lp}");
                assert_eq!(perplexity(lp, 40), (-expected.ln() / 40.0).exp());
            }
        }
    }

    /// A varied 1-step gain with different factors: 4 opening connectives ×
    /// 6 paraphrases × 2 factor orders for the step, 4 connectives × 5
    /// paraphrases × 2 term orders for the change: 1/1920. Equal factors
    /// read the same both ways: 1/960.
    #[test]
    fn varied_one_step_probability_by_hand() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut seen = [false, false];
        for _ in 0..400 {
            let problem = Problem::random(&mut rng, 1);
            if problem.change < 0 {
                continue;
            }
            let (_, g, n) = problem.groups[0];
            let trace = TraceStyle::Varied.sample(&problem, &mut rng);
            let lp = solver::log_probability(TraceStyle::Varied, &problem, &trace);
            let expected: f64 = if g == n { 1.0 / 960.0 } else { 1.0 / 1920.0 };
            assert!((lp - expected.ln()).abs() < 1e-9, "{trace}");
            seen[usize::from(g == n)] = true;
        }
        assert_eq!(seen, [true, true]);
    }

    /// Summed over every distinct trace a style can write for a problem,
    /// the solver's probabilities add up to 1 (each draw counted once, equal
    /// texts merged); a trace the style cannot write scores zero.
    #[test]
    fn solver_probabilities_sum_to_one_over_the_support() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let cases = [
            (TraceStyle::Varied, 1),
            (TraceStyle::Templated, 3),
            (TraceStyle::Terse, 3),
        ];
        for (style, k) in cases {
            for _ in 0..5 {
                let mut problem = Problem::random(&mut rng, k);
                if style == TraceStyle::Varied {
                    problem.change = problem.change.abs();
                }
                // Varied 1-step: 1920 draws, 960 texts when the factors are
                // equal; the others at most 36 texts.
                let (_, g, n) = problem.groups[0];
                let support = match style {
                    TraceStyle::Varied if g == n => 960,
                    TraceStyle::Varied => 1920,
                    _ => usize::MAX,
                };
                let mut traces = BTreeSet::new();
                for _ in 0..(if support == usize::MAX { 5000 } else { 100_000 }) {
                    traces.insert(style.sample(&problem, &mut rng));
                    if traces.len() == support {
                        break;
                    }
                }
                let total: f64 = traces
                    .iter()
                    .map(|t| solver::log_probability(style, &problem, t).exp())
                    .sum();
                assert!((total - 1.0).abs() < 1e-6, "{style} {k}: {total}");
                let wrong = traces.first().unwrap().replace("####", "Answer:");
                assert_eq!(
                    solver::log_probability(style, &problem, &wrong),
                    f64::NEG_INFINITY
                );
            }
        }
    }

    /// A terse 2-step problem whose groups are the same product written
    /// alike: either order gives the same two lines, so the trace is certain.
    #[test]
    fn solver_adds_draws_that_write_the_same_text() {
        let problem = Problem {
            name: "Mia",
            pronoun: "She",
            item: "pens",
            groups: vec![("bags", 3, 4), ("jars", 3, 4)],
            change: 2,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let trace = TraceStyle::Terse.sample(&problem, &mut rng);
        assert_eq!(trace, "3*4=12\n3*4=12\n12+12=24\n24+2=26\n#### 26");
        assert_eq!(
            solver::log_probability(TraceStyle::Terse, &problem, &trace),
            0.0
        );
    }

    /// Varied targets really vary: 50 draws of one 2-step problem give
    /// (nearly) 50 different traces, each with every phrase family used.
    #[test]
    fn varied_traces_have_many_wordings() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let problem = Problem::random(&mut rng, 2);
        let traces: BTreeSet<String> = (0..50)
            .map(|_| TraceStyle::Varied.sample(&problem, &mut rng))
            .collect();
        assert!(traces.len() >= 48, "{}", traces.len());
    }

    /// The corpus shares no query with the splits of its own data, nor does
    /// data made `disjoint_from` a corpus share one with it; its families
    /// follow its own weights and its styles are the ones asked for.
    #[test]
    fn corpus_queries_are_disjoint_from_every_split() {
        let config = SynthConfig {
            train: 300,
            test: 300,
            pool_per_example: 2,
            groups: 1..=2,
            group_weights: Some(vec![1.0, 1.0]),
            style: TraceStyle::Varied,
            pretrain: 20_000,
            pretrain_styles: vec![(TraceStyle::Varied, 3.0), (TraceStyle::Terse, 1.0)],
            pretrain_group_weights: Some(vec![1.0, 0.0]),
            ..Default::default()
        };
        // One group leaves few problems (~170k queries): many split
        // problems would be drawn by a 20k corpus without the check.
        let data = generate_ok(&config);
        assert_eq!(data.pretrain.len(), 20_000);
        assert!(data.shared_queries(&HashSet::new()).is_empty());
        assert!(data.pretrain.iter().all(|e| groups(e) == 1));
        let terse = data
            .pretrain
            .iter()
            .filter(|e| !e.target.chars().any(|c| c.is_ascii_alphabetic()))
            .count();
        assert!((4000..6000).contains(&terse), "{terse} terse of 20000");
        let corpus: HashSet<String> = data.pretrain.iter().map(|e| e.query.clone()).collect();
        let undisturbed = generate_ok(&SynthConfig {
            pretrain: 0,
            seed: 1,
            ..config.clone()
        });
        let overlap = undisturbed.shared_queries(&corpus).len();
        assert!(
            overlap > 0,
            "the test needs a seed whose data meets the corpus"
        );
        let fresh = generate_ok(&SynthConfig {
            pretrain: 0,
            seed: 1,
            disjoint_from: corpus.clone(),
            ..config
        });
        assert!(fresh.shared_queries(&corpus).is_empty());
        assert_eq!(fresh.train.len(), 300);
    }

    /// Without a corpus, `disjoint_from` that meets nothing changes nothing.
    #[test]
    fn avoiding_nothing_draws_the_same_data() {
        let plain = small();
        let avoided = generate_ok(&SynthConfig {
            train: 50,
            test: 20,
            pool_per_example: 2,
            seed: 7,
            disjoint_from: ["a query no problem has".to_string()].into(),
            ..Default::default()
        });
        assert_eq!(plain.train, avoided.train);
        assert_eq!(plain.test, avoided.test);
    }

    /// A draw that keeps meeting taken queries gives up with an error.
    #[test]
    fn an_exhausted_problem_space_is_an_error() {
        let rng = ChaCha8Rng::seed_from_u64(0);
        let first = Problem::random(&mut rng.clone(), 1).query();
        let taken: HashSet<String> = [first.clone()].into();
        let err = Problem::random_within(&mut rng.clone(), 1, &taken, 1).unwrap_err();
        assert!(err.contains("ask for fewer"), "{err}");
        let second = Problem::random_within(&mut rng.clone(), 1, &taken, 2).unwrap();
        assert_ne!(second.query(), first);
    }
}
