//! How a solution trace is worded. A style is a small grammar: each line of
//! a trace (one per group, then the sum, the change and the answer line) is
//! drawn from a few alternatives — connectives, paraphrases, the order of a
//! product's or a sum's operands, the order of the independent steps. The
//! same grammar draws traces ([`TraceStyle::sample`]) and lists every line a
//! step could have been written as, with its probability ([`LineOptions`]),
//! from which `solver.rs` computes exactly what a perfect solver that knows
//! the style assigns to a trace.
//!
//! - `templated` (the default, the demo's and the tests'): one wording per
//!   line; only the order of the steps and of the sum's terms varies.
//! - `terse`: equations only (`4*5=20`), as a pretraining corpus may hold.
//! - `varied`: finetuning targets as another author would write them —
//!   connectives ("First, ", "Then ", …), 6 paraphrases per step, 5 per sum
//!   and per change, both operand orders.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Problem;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceStyle {
    Templated,
    Terse,
    Varied,
}

impl TraceStyle {
    pub const ALL: [TraceStyle; 3] = [TraceStyle::Templated, TraceStyle::Terse, TraceStyle::Varied];

    pub fn name(self) -> &'static str {
        match self {
            TraceStyle::Templated => "templated",
            TraceStyle::Terse => "terse",
            TraceStyle::Varied => "varied",
        }
    }

    fn grammar(self) -> &'static Grammar {
        match self {
            TraceStyle::Templated => &TEMPLATED,
            TraceStyle::Terse => &TERSE,
            TraceStyle::Varied => &VARIED,
        }
    }

    /// A trace of `problem` in this style. The templated style draws
    /// exactly as the generator always did (two shuffles), so its data is
    /// unchanged.
    pub(super) fn sample(self, problem: &Problem, rng: &mut ChaCha8Rng) -> String {
        let g = self.grammar();
        let mut order: Vec<usize> = (0..problem.groups.len()).collect();
        order.shuffle(rng);
        let mut lines: Vec<String> = order
            .iter()
            .enumerate()
            .map(|(position, &group)| {
                let choice = Choice {
                    connective: pick(rng, g.connectives(position).len()),
                    phrase: pick(rng, g.step_phrases.len()),
                    swapped: g.swap_factors && rng.random_bool(0.5),
                };
                g.step_line(problem, group, position, choice)
            })
            .collect();
        let mut terms = problem.products();
        terms.shuffle(rng);
        if terms.len() > 1 {
            let phrase = pick(rng, g.sum_phrases.len());
            lines.push(g.sum_line(problem, &terms, phrase));
        }
        let choice = Choice {
            connective: pick(rng, g.change_connectives.len()),
            phrase: pick(rng, g.change_phrases(problem).len()),
            swapped: problem.change >= 0 && g.swap_gain_terms && rng.random_bool(0.5),
        };
        lines.push(g.change_line(problem, choice));
        lines.push(answer_line(problem));
        lines.join("\n")
    }

    /// Every way this style could write each line of `problem`'s trace.
    pub(super) fn options(self, problem: &Problem) -> LineOptions<'_> {
        LineOptions {
            grammar: self.grammar(),
            problem,
        }
    }
}

impl std::fmt::Display for TraceStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TraceStyle {
    type Err = String;

    fn from_str(s: &str) -> Result<TraceStyle, String> {
        TraceStyle::ALL
            .into_iter()
            .find(|style| style.name() == s)
            .ok_or_else(|| format!("unknown trace style `{s}`: templated, terse or varied"))
    }
}

/// An index below `n`, drawing nothing when there is one choice (so a
/// grammar without alternatives consumes no randomness).
fn pick(rng: &mut ChaCha8Rng, n: usize) -> usize {
    if n <= 1 { 0 } else { rng.random_range(0..n) }
}

/// The draws that make one step or change line.
#[derive(Clone, Copy, Debug)]
struct Choice {
    connective: usize,
    phrase: usize,
    /// The operands of the line's equation in the other order.
    swapped: bool,
}

/// A style's alternatives. Phrases start in lower case and are capitalised
/// when no connective precedes them. Placeholders: `{g}` containers,
/// `{c}` their kind, `{n}` items in each, `{item}`, `{name}`, `{pronoun}`
/// (lower case), `{d}` the change, `{eq}` the line's equation.
struct Grammar {
    first_connectives: &'static [&'static str],
    next_connectives: &'static [&'static str],
    step_phrases: &'static [&'static str],
    /// A product may be written `n*g` as well as `g*n`.
    swap_factors: bool,
    sum_phrases: &'static [&'static str],
    change_connectives: &'static [&'static str],
    gain_phrases: &'static [&'static str],
    loss_phrases: &'static [&'static str],
    /// A gain may be written `d+t` as well as `t+d`.
    swap_gain_terms: bool,
}

const TEMPLATED: Grammar = Grammar {
    first_connectives: &[""],
    next_connectives: &[""],
    step_phrases: &["{g} {c} of {n} {item} is {eq} {item}."],
    swap_factors: false,
    sum_phrases: &["together that is {eq} {item}."],
    change_connectives: &[""],
    gain_phrases: &["buying {d} more makes {eq} {item}."],
    loss_phrases: &["giving away {d} leaves {eq} {item}."],
    swap_gain_terms: false,
};

const TERSE: Grammar = Grammar {
    first_connectives: &[""],
    next_connectives: &[""],
    step_phrases: &["{eq}"],
    swap_factors: false,
    sum_phrases: &["{eq}"],
    change_connectives: &[""],
    gain_phrases: &["{eq}"],
    loss_phrases: &["{eq}"],
    swap_gain_terms: false,
};

const VARIED: Grammar = Grammar {
    first_connectives: &["", "First, ", "We know that ", "To start, "],
    next_connectives: &["", "Then ", "Next, ", "Also, ", "And "],
    step_phrases: &[
        "{g} {c} of {n} {item} is {eq} {item}.",
        "{g} {c} with {n} {item} each hold {eq} {item}.",
        "the {c} hold {eq} {item}.",
        "in the {c} there are {eq} {item}.",
        "{name} has {eq} {item} in the {c}.",
        "each of the {g} {c} has {n} {item}, so that is {eq} {item}.",
    ],
    swap_factors: true,
    sum_phrases: &[
        "together that is {eq} {item}.",
        "in total {name} has {eq} {item}.",
        "adding them up gives {eq} {item}.",
        "that makes {eq} {item} in all.",
        "so there are {eq} {item} altogether.",
    ],
    change_connectives: &["", "Finally, ", "Then ", "So "],
    gain_phrases: &[
        "buying {d} more makes {eq} {item}.",
        "{pronoun} buys {d} more, so that is {eq} {item}.",
        "after buying {d} more there are {eq} {item}.",
        "with {d} more {item} that is {eq} {item}.",
        "{name} gets {d} more, which makes {eq} {item}.",
    ],
    loss_phrases: &[
        "giving away {d} leaves {eq} {item}.",
        "{pronoun} gives away {d}, so {eq} {item} remain.",
        "after giving away {d} there are {eq} {item} left.",
        "without the {d} given away, {name} has {eq} {item}.",
        "taking away {d} leaves {eq} {item}.",
    ],
    swap_gain_terms: true,
};

impl Grammar {
    fn connectives(&self, position: usize) -> &'static [&'static str] {
        if position == 0 {
            self.first_connectives
        } else {
            self.next_connectives
        }
    }

    fn change_phrases(&self, problem: &Problem) -> &'static [&'static str] {
        if problem.change >= 0 {
            self.gain_phrases
        } else {
            self.loss_phrases
        }
    }

    fn step_line(&self, p: &Problem, group: usize, position: usize, choice: Choice) -> String {
        let (c, g, n) = p.groups[group];
        let (a, b) = if choice.swapped { (n, g) } else { (g, n) };
        let eq = format!("{a}*{b}={}", g * n);
        let body = fill(
            self.step_phrases[choice.phrase],
            p,
            &[
                ("{g}", &g.to_string()),
                ("{c}", c),
                ("{n}", &n.to_string()),
                ("{eq}", &eq),
            ],
        );
        sentence(self.connectives(position)[choice.connective], &body)
    }

    fn sum_line(&self, p: &Problem, terms: &[u32], phrase: usize) -> String {
        let sum: Vec<String> = terms.iter().map(u32::to_string).collect();
        let eq = format!("{}={}", sum.join("+"), p.total());
        sentence("", &fill(self.sum_phrases[phrase], p, &[("{eq}", &eq)]))
    }

    fn change_line(&self, p: &Problem, choice: Choice) -> String {
        let (t, d, answer) = (p.total(), p.change.unsigned_abs(), p.answer());
        let eq = match (p.change >= 0, choice.swapped) {
            (true, false) => format!("{t}+{d}={answer}"),
            (true, true) => format!("{d}+{t}={answer}"),
            (false, _) => format!("{t}-{d}={answer}"),
        };
        let body = fill(
            self.change_phrases(p)[choice.phrase],
            p,
            &[("{d}", &d.to_string()), ("{eq}", &eq)],
        );
        sentence(self.change_connectives[choice.connective], &body)
    }
}

fn answer_line(p: &Problem) -> String {
    format!("#### {}", p.answer())
}

/// `template` with the problem's names and `values` filled in.
fn fill(template: &str, p: &Problem, values: &[(&str, &str)]) -> String {
    let mut text = template
        .replace("{item}", p.item)
        .replace("{name}", p.name)
        .replace("{pronoun}", &p.pronoun.to_lowercase());
    for (key, value) in values {
        text = text.replace(key, value);
    }
    text
}

/// A connective and a phrase; without a connective the phrase starts the
/// sentence, capitalised.
fn sentence(connective: &str, body: &str) -> String {
    if !connective.is_empty() {
        return format!("{connective}{body}");
    }
    let mut chars = body.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every text each line of one problem's trace can have, with the
/// probability that the style draws it (equal texts from different draws
/// are listed apart; the solver adds them).
pub(super) struct LineOptions<'a> {
    grammar: &'static Grammar,
    problem: &'a Problem,
}

impl LineOptions<'_> {
    /// The step lines of `group` at `position`: connective × phrase ×
    /// operand order, uniform.
    pub fn step(&self, group: usize, position: usize) -> Vec<(String, f64)> {
        let g = self.grammar;
        let swaps: &[bool] = if g.swap_factors {
            &[false, true]
        } else {
            &[false]
        };
        let connectives = g.connectives(position).len();
        let p = 1.0 / (connectives * g.step_phrases.len() * swaps.len()) as f64;
        let mut options = vec![];
        for connective in 0..connectives {
            for phrase in 0..g.step_phrases.len() {
                for &swapped in swaps {
                    let choice = Choice {
                        connective,
                        phrase,
                        swapped,
                    };
                    options.push((g.step_line(self.problem, group, position, choice), p));
                }
            }
        }
        options
    }

    /// The sum lines (none for one group): every order of the terms × phrase.
    pub fn sum(&self) -> Vec<(String, f64)> {
        let products = self.problem.products();
        if products.len() < 2 {
            return vec![];
        }
        let orders = permutations(&products);
        let p = 1.0 / (orders.len() * self.grammar.sum_phrases.len()) as f64;
        orders
            .iter()
            .flat_map(|terms| {
                (0..self.grammar.sum_phrases.len())
                    .map(move |phrase| (self.grammar.sum_line(self.problem, terms, phrase), p))
            })
            .collect()
    }

    /// The change lines: connective × phrase × (for a gain) term order.
    pub fn change(&self) -> Vec<(String, f64)> {
        let g = self.grammar;
        let gain_swaps = self.problem.change >= 0 && g.swap_gain_terms;
        let swaps: &[bool] = if gain_swaps { &[false, true] } else { &[false] };
        let phrases = g.change_phrases(self.problem).len();
        let p = 1.0 / (g.change_connectives.len() * phrases * swaps.len()) as f64;
        let mut options = vec![];
        for connective in 0..g.change_connectives.len() {
            for phrase in 0..phrases {
                for &swapped in swaps {
                    let choice = Choice {
                        connective,
                        phrase,
                        swapped,
                    };
                    options.push((g.change_line(self.problem, choice), p));
                }
            }
        }
        options
    }

    pub fn answer(&self) -> String {
        answer_line(self.problem)
    }
}

/// Every ordering of `items` (equal items give equal orderings, each listed).
fn permutations(items: &[u32]) -> Vec<Vec<u32>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = vec![];
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}
