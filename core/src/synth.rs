//! The synthetic reasoning task of the demo and the tests.
//!
//! Multi-step arithmetic word problems: a person has several groups of items
//! (`g` containers of `n` items each), then gains or loses some. The solution
//! multiplies each group, adds the products, then applies the change:
//!
//! ```text
//! Mia has 3 bags with 4 apples each and 5 boxes with 2 apples each. She gives away 6 apples.
//! How many apples does Mia have now?
//! 5 boxes of 2 apples is 5*2=10 apples. 3 bags of 4 apples is 3*4=12 apples.
//! Together that is 10+12=22 apples. Giving away 6 leaves 22-6=16 apples.
//! #### 16
//! ```
//!
//! The group products may come in any order and the sum may list them in any
//! order: the target trace is one of several valid solutions (chosen by the
//! seed), so a sample can be right without copying the trace — what
//! pre-memorization accuracy is about. The candidate pool holds new problems
//! derived from each training problem (same shape, new names and numbers),
//! keyed by `parent_id`, for curation.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::Example;

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

/// How many examples of each split to make.
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
        }
    }
}

/// The largest number of groups a problem can have (one container kind each).
pub const MAX_GROUPS: usize = CONTAINERS.len();

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

    fn answer(&self) -> i64 {
        self.groups
            .iter()
            .map(|(_, g, n)| (g * n) as i64)
            .sum::<i64>()
            + self.change as i64
    }

    /// A solution trace with the group steps and the sum's terms in a random
    /// (valid) order.
    fn solution(&self, rng: &mut ChaCha8Rng) -> String {
        let mut order: Vec<usize> = (0..self.groups.len()).collect();
        order.shuffle(rng);
        let mut lines: Vec<String> = order
            .iter()
            .map(|&i| {
                let (c, g, n) = self.groups[i];
                format!(
                    "{g} {c} of {n} {} is {g}*{n}={} {}.",
                    self.item,
                    g * n,
                    self.item
                )
            })
            .collect();
        let mut terms: Vec<u32> = self.groups.iter().map(|(_, g, n)| g * n).collect();
        terms.shuffle(rng);
        let total: u32 = terms.iter().sum();
        if terms.len() > 1 {
            let sum = terms
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join("+");
            lines.push(format!("Together that is {sum}={total} {}.", self.item));
        }
        let answer = self.answer();
        lines.push(if self.change >= 0 {
            format!(
                "Buying {} more makes {total}+{}={answer} {}.",
                self.change, self.change, self.item
            )
        } else {
            format!(
                "Giving away {} leaves {total}-{}={answer} {}.",
                -self.change, -self.change, self.item
            )
        });
        lines.push(format!("#### {answer}"));
        lines.join("\n")
    }
}

fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn example(
    id: String,
    problem: &Problem,
    rng: &mut ChaCha8Rng,
    parent_id: Option<String>,
) -> Example {
    Example {
        id,
        query: problem.query(),
        target: problem.solution(rng),
        answer: problem.answer().to_string(),
        parent_id,
        meta: [("groups".to_string(), problem.groups.len().to_string())].into(),
    }
}

/// The train and test splits and the curation pool.
pub struct SynthData {
    pub train: Vec<Example>,
    pub test: Vec<Example>,
    pub pool: Vec<Example>,
}

/// Checks `config.group_weights` against `config.groups`: one finite,
/// non-negative weight per number of groups, not all zero.
pub fn check_group_weights(config: &SynthConfig) -> Result<(), String> {
    let Some(weights) = &config.group_weights else {
        return Ok(());
    };
    let shapes = config.groups.clone().count();
    if weights.len() != shapes {
        return Err(format!(
            "{} group weight(s) for {shapes} number(s) of groups ({}-{}): give one per number",
            weights.len(),
            config.groups.start(),
            config.groups.end()
        ));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
        return Err(format!(
            "group weights {weights:?}: each must be a number >= 0, and not all 0"
        ));
    }
    Ok(())
}

/// Draws a problem's number of groups from `config`.
fn shape_sampler(config: &SynthConfig) -> impl Fn(&mut ChaCha8Rng) -> usize {
    let (lo, hi) = (*config.groups.start(), *config.groups.end());
    assert!(
        1 <= lo && lo <= hi && hi <= MAX_GROUPS,
        "synthetic problems have 1..={MAX_GROUPS} groups, not {lo}..={hi}"
    );
    if let Err(e) = check_group_weights(config) {
        panic!("{e}");
    }
    let weighted = config
        .group_weights
        .as_ref()
        .map(|w| rand::distr::weighted::WeightedIndex::new(w).expect("checked group weights"));
    // Two shapes take one fair coin, so the default 2..=3 makes the same data
    // as before the range existed.
    move |rng: &mut ChaCha8Rng| match (&weighted, hi - lo) {
        (Some(w), _) => lo + rng.sample(w),
        (None, 0) => lo,
        (None, 1) if rng.random_bool(0.5) => lo,
        (None, 1) => hi,
        (None, _) => rng.random_range(lo..=hi),
    }
}

pub fn generate(config: &SynthConfig) -> SynthData {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let shape = shape_sampler(config);
    let mut train = Vec::with_capacity(config.train);
    let mut pool = Vec::with_capacity(config.train * config.pool_per_example);
    for i in 0..config.train {
        let groups = shape(&mut rng);
        let problem = Problem::random(&mut rng, groups);
        let parent = example(format!("train-{i:05}"), &problem, &mut rng, None);
        for j in 0..config.pool_per_example {
            let child = Problem::random(&mut rng, groups);
            pool.push(example(
                format!("pool-{i:05}-{j}"),
                &child,
                &mut rng,
                Some(parent.id.clone()),
            ));
        }
        train.push(parent);
    }
    let test = (0..config.test)
        .map(|i| {
            let groups = shape(&mut rng);
            let problem = Problem::random(&mut rng, groups);
            example(format!("test-{i:05}"), &problem, &mut rng, None)
        })
        .collect();
    SynthData { train, test, pool }
}

pub const PAD_TOKEN: &str = "<|pad|>";
pub const EOS_TOKEN: &str = "<|eos|>";

/// The tokenizer of the synthetic task: trained on every example as the
/// model sees it (prompt + completion rendered with `template`).
pub fn train_task_tokenizer<'a>(
    examples: impl IntoIterator<Item = &'a Example>,
    template: &crate::PromptTemplate,
    vocab_size: usize,
) -> Result<tokenizers::Tokenizer, String> {
    let texts: Vec<String> = examples
        .into_iter()
        .map(|e| {
            format!(
                "{}{}",
                template.render_prompt(e),
                template.render_completion(e)
            )
        })
        .collect();
    train_tokenizer(&texts, vocab_size)
}

/// A byte-level BPE tokenizer trained on `texts`, with digits split one by
/// one (arithmetic stays learnable for a tiny model) and `<|pad|>`,
/// `<|eos|>` as special tokens 0 and 1.
pub fn train_tokenizer(
    texts: &[String],
    vocab_size: usize,
) -> Result<tokenizers::Tokenizer, String> {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::{AddedToken, PreTokenizerWrapper};

    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![
            AddedToken::from(PAD_TOKEN, true),
            AddedToken::from(EOS_TOKEN, true),
        ])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]))));
    tokenizer.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| format!("tokenizer training failed: {e}"))?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{AnswerStyle, gold_answer, is_correct};

    fn small() -> SynthData {
        generate(&SynthConfig {
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
        assert_eq!(products.to_string(), e.meta["groups"], "{}", e.target);
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
        let data = generate(&SynthConfig {
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
            assert_eq!(data.pool[i].meta["groups"], e.meta["groups"]);
            seen.insert(e.meta["groups"].clone());
        }
        assert_eq!(seen, ["1", "2", "3", "4"].map(String::from).into());
        // One group: no sum line.
        let one = data.train.iter().find(|e| e.meta["groups"] == "1").unwrap();
        assert!(!one.target.contains("Together"), "{}", one.target);
        let fixed = generate(&SynthConfig {
            train: 20,
            groups: 3..=3,
            ..Default::default()
        });
        assert!(fixed.train.iter().all(|e| e.meta["groups"] == "3"));
    }

    /// Weights 6:3:1 over 1..=3 groups: the counts of 2000 problems are
    /// within 4 standard deviations of 1200/600/200, a zero weight never
    /// occurs, and pool children keep their parent's shape.
    #[test]
    fn group_weights_set_how_often_each_shape_occurs() {
        let count = |weights: Vec<f64>| {
            let data = generate(&SynthConfig {
                train: 2000,
                test: 0,
                pool_per_example: 1,
                groups: 1..=3,
                group_weights: Some(weights),
                ..Default::default()
            });
            for (e, child) in data.train.iter().zip(&data.pool) {
                assert_eq!(e.meta["groups"], child.meta["groups"]);
            }
            let mut n = [0usize; 3];
            for e in &data.train {
                n[e.meta["groups"].parse::<usize>().unwrap() - 1] += 1;
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
        let data = generate(&SynthConfig {
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
        let traces: std::collections::BTreeSet<String> =
            (0..20).map(|_| problem.solution(&mut rng)).collect();
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
}
