//! Choosing parents: which train examples a strategy derives new examples
//! from, and in what order a generator gets them.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::spec::{CurationSpec, HeuristicKey, Strategy};
use super::{CurationError, derive_seed, quoted_list};
use premem_core::data::dataset::Example;

/// A parent chosen by a strategy, with the score it was chosen by:
/// its P-M accuracy (`pm`, and `iid` where known), IFD score (`ifd`),
/// or heuristic difficulty (`heuristic`). NaN means unknown (an `iid` parent
/// without P-M accuracy, a MATH example with level "Level ?"); it is stored
/// as `null` in JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chosen {
    pub id: String,
    #[serde(with = "nan_as_null")]
    pub score: f64,
}

impl PartialEq for Chosen {
    /// NaN scores compare equal (both unknown).
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && (self.score == other.score || (self.score.is_nan() && other.score.is_nan()))
    }
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// What the driver measured about the examples of the train set `D`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParentScores {
    /// P-M accuracy per train example id, in [0, 1] (from the iteration's
    /// run; ids of added examples may be present and are ignored).
    pub pm: BTreeMap<String, f64>,
    /// IFD score per train example id (`ppl(answer | query) / ppl(answer)`
    /// from a briefly trained model); needed by `ifd` only.
    pub ifd: Option<BTreeMap<String, f64>>,
}

/// The heuristic difficulty of a train example: the number of non-blank
/// lines of its target trace (`lines`), or the number in its
/// `meta["level"]` (`level`: "Level 3" → 3; "Level ?" → NaN, ranked last).
/// An example without a `level` at all is an error (not a MATH dataset).
pub fn heuristic_score(example: &Example, key: HeuristicKey) -> Result<f64, CurationError> {
    match key {
        HeuristicKey::Lines => Ok(example
            .target
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as f64),
        HeuristicKey::Level => {
            let level = example.meta.get("level").ok_or_else(|| {
                CurationError::Selection(format!(
                    "heuristic key \"level\": train example '{}' has no `level` (MATH datasets \
                     carry one; use key = \"lines\" for others)",
                    example.id
                ))
            })?;
            let number = level.trim();
            let number = number
                .strip_prefix("Level")
                .or_else(|| number.strip_prefix("level"))
                .unwrap_or(number)
                .trim();
            Ok(number.parse::<f64>().unwrap_or(f64::NAN))
        }
    }
}

/// `ceil(fraction · n)`, without floating-point noise (0.7 · 10 is 7).
fn top_count(fraction: f64, n: usize) -> usize {
    let x = fraction * n as f64;
    let k = if (x - x.round()).abs() < 1e-9 {
        x.round()
    } else {
        x.ceil()
    };
    (k as usize).min(n)
}

/// Highest score first, NaN last, ties by id.
fn by_score_desc(a: &Chosen, b: &Chosen) -> Ordering {
    match (a.score.is_nan(), b.score.is_nan()) {
        (false, true) => Ordering::Less,
        (true, false) => Ordering::Greater,
        (true, true) => Ordering::Equal,
        (false, false) => b.score.total_cmp(&a.score),
    }
    .then_with(|| a.id.cmp(&b.id))
}

/// The parents a strategy chooses from the train set `train` (`D`, not
/// the added examples), in a deterministic order:
///
/// - `pm`: every example with P-M accuracy `< threshold`, lowest P-M
///   first, ties by id. A train example without a P-M value (or one outside
///   [0, 1]) is an error naming it.
/// - `iid`: every example, in the order of `train`; score = its P-M accuracy
///   when known, else NaN.
/// - `ifd`: the top `ceil(ifd.fraction · |D|)` by IFD score, highest first,
///   ties by id; a missing or non-finite score is an error naming it.
/// - `heuristic`: the top `ceil(heuristic.fraction · |D|)` by
///   [`heuristic_score`], highest first, unknown (NaN) last, ties by id.
///
/// Nothing here is random; the draw is.
pub fn choose_parents(
    strategy: Strategy,
    train: &[Example],
    scores: &ParentScores,
    spec: &CurationSpec,
) -> Result<Vec<Chosen>, CurationError> {
    match strategy {
        Strategy::Pm => pm_parents(train, &scores.pm, spec.curation.threshold),
        Strategy::Iid => Ok(train
            .iter()
            .map(|e| chosen(&e.id, scores.pm.get(&e.id).copied().unwrap_or(f64::NAN)))
            .collect()),
        Strategy::Ifd => {
            let ifd = scores.ifd.as_ref().ok_or_else(|| {
                CurationError::Selection("strategy ifd: no IFD scores were given".into())
            })?;
            let mut out = ifd_scored(train, ifd)?;
            out.sort_by(by_score_desc);
            out.truncate(top_count(spec.ifd_fraction(), train.len()));
            Ok(out)
        }
        Strategy::Heuristic => {
            let h = spec.heuristic.as_ref().ok_or_else(|| {
                CurationError::Selection("strategy heuristic: the spec has no [heuristic]".into())
            })?;
            let mut out = train
                .iter()
                .map(|e| Ok(chosen(&e.id, heuristic_score(e, h.key)?)))
                .collect::<Result<Vec<_>, CurationError>>()?;
            out.sort_by(by_score_desc);
            out.truncate(top_count(h.fraction, train.len()));
            Ok(out)
        }
    }
}

fn chosen(id: &str, score: f64) -> Chosen {
    Chosen {
        id: id.to_string(),
        score,
    }
}

/// `pm`: the train examples with P-M accuracy below `threshold`, lowest
/// first, ties by id; every train example needs a value in [0, 1].
fn pm_parents(
    train: &[Example],
    pm: &BTreeMap<String, f64>,
    threshold: f64,
) -> Result<Vec<Chosen>, CurationError> {
    let mut missing = vec![];
    let mut bad = vec![];
    let mut out = vec![];
    for e in train {
        match pm.get(&e.id) {
            None => missing.push(e.id.as_str()),
            Some(&v) if !(0.0..=1.0).contains(&v) => bad.push(format!("'{}' = {v}", e.id)),
            Some(&v) if v < threshold => out.push(chosen(&e.id, v)),
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(CurationError::Selection(format!(
            "strategy pm: P-M accuracy is missing for {} of the {} train examples: {}",
            missing.len(),
            train.len(),
            quoted_list(&missing, 5)
        )));
    }
    if !bad.is_empty() {
        return Err(CurationError::Selection(format!(
            "strategy pm: P-M accuracy must be in [0, 1]: {}",
            bad.join(", ")
        )));
    }
    out.sort_by(|a, b| a.score.total_cmp(&b.score).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Every train example with its IFD score, in train order; every one needs
/// a finite score.
fn ifd_scored(
    train: &[Example],
    ifd: &BTreeMap<String, f64>,
) -> Result<Vec<Chosen>, CurationError> {
    let mut missing = vec![];
    let mut out = Vec::with_capacity(train.len());
    for e in train {
        match ifd.get(&e.id) {
            Some(&v) if v.is_finite() => out.push(chosen(&e.id, v)),
            Some(&v) => {
                return Err(CurationError::Selection(format!(
                    "strategy ifd: train example '{}' has IFD score {v}; scores must be finite",
                    e.id
                )));
            }
            None => missing.push(e.id.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(CurationError::Selection(format!(
            "strategy ifd: the IFD score is missing for {} of the {} train examples: {}",
            missing.len(),
            train.len(),
            quoted_list(&missing, 5)
        )));
    }
    Ok(out)
}

/// The chosen parents as train examples, in a seeded random order (per
/// `seed` and `iteration`): what [`super::generate`] takes, round-robin. The
/// shuffle makes "the first `n` parents" (when `n` is fewer than the
/// parents) a uniform sample rather than, say, the lowest P-M ones. An id
/// that is not a train example is an error.
pub fn generator_parents(
    chosen: &[Chosen],
    train: &[Example],
    seed: u64,
    iteration: u32,
) -> Result<Vec<Example>, CurationError> {
    let by_id: BTreeMap<&str, &Example> = train.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut out = chosen
        .iter()
        .map(|c| {
            by_id
                .get(c.id.as_str())
                .map(|e| (*e).clone())
                .ok_or_else(|| {
                    CurationError::Selection(format!(
                        "parent '{}' is not an example of the train set",
                        c.id
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rng =
        ChaCha8Rng::seed_from_u64(derive_seed("premem-curation-generate", seed, iteration));
    out.shuffle(&mut rng);
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::spec::{CurationSpec, HeuristicSpec, IfdSpec};
    use std::collections::BTreeSet;
    use std::path::Path;

    fn ex(id: &str, lines: usize, level: Option<&str>) -> Example {
        let mut target: Vec<String> = (1..lines).map(|i| format!("step {i}")).collect();
        target.push("#### 1".into());
        Example {
            id: id.into(),
            query: format!("question {id}"),
            target: target.join("\n\n"),
            answer: "1".into(),
            parent_id: None,
            meta: level
                .map(|l| [("level".to_string(), l.to_string())].into())
                .unwrap_or_default(),
        }
    }

    /// D: six examples, hand-picked trace lengths and MATH levels.
    pub(crate) fn train() -> Vec<Example> {
        vec![
            ex("a", 2, Some("Level 1")),
            ex("b", 5, Some("Level 5")),
            ex("c", 3, Some("Level 3")),
            ex("d", 5, Some("Level ?")),
            ex("e", 1, Some("Level 2")),
            ex("f", 4, Some("Level 5")),
        ]
    }

    pub(crate) fn scores() -> ParentScores {
        let map = |v: &[(&str, f64)]| v.iter().map(|(k, x)| (k.to_string(), *x)).collect();
        ParentScores {
            pm: map(&[
                ("a", 0.0),
                ("b", 0.9),
                ("c", 0.5),
                ("d", 0.75),
                ("e", 0.2),
                ("f", 1.0),
                ("added-1", 0.1),
            ]),
            ifd: Some(map(&[
                ("a", 1.2),
                ("b", 0.8),
                ("c", 1.5),
                ("d", 1.2),
                ("e", 0.3),
                ("f", 0.9),
            ])),
        }
    }

    pub(crate) fn spec() -> CurationSpec {
        CurationSpec::from_toml(crate::spec::tests::POOL_SPEC, Path::new("cur.toml")).unwrap()
    }

    pub(crate) fn ids(chosen: &[Chosen]) -> Vec<&str> {
        chosen.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn pm_chooses_below_the_threshold_lowest_first() {
        let chosen = choose_parents(Strategy::Pm, &train(), &scores(), &spec()).unwrap();
        // t = 0.75: a 0.0, e 0.2, c 0.5; d = 0.75 is not below t.
        assert_eq!(ids(&chosen), ["a", "e", "c"]);
        assert_eq!(
            chosen.iter().map(|c| c.score).collect::<Vec<_>>(),
            [0.0, 0.2, 0.5]
        );
        let mut s = spec();
        s.curation.threshold = 1.0;
        let chosen = choose_parents(Strategy::Pm, &train(), &scores(), &s).unwrap();
        assert_eq!(ids(&chosen), ["a", "e", "c", "d", "b"]);
    }

    #[test]
    fn pm_without_a_value_for_a_train_example_is_an_error_naming_it() {
        let mut sc = scores();
        sc.pm.remove("e");
        let e = choose_parents(Strategy::Pm, &train(), &sc, &spec())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "strategy pm: P-M accuracy is missing for 1 of the 6 train examples: 'e'"
        );
        let mut sc = scores();
        sc.pm.insert("b".into(), 1.5);
        let e = choose_parents(Strategy::Pm, &train(), &sc, &spec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'b' = 1.5"), "{e}");
    }

    #[test]
    fn iid_takes_every_train_example_with_its_pm_accuracy_if_known() {
        let mut sc = scores();
        sc.pm.remove("d");
        let chosen = choose_parents(Strategy::Iid, &train(), &sc, &spec()).unwrap();
        assert_eq!(ids(&chosen), ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(chosen[1].score, 0.9);
        assert!(chosen[3].score.is_nan());
    }

    #[test]
    fn ifd_keeps_the_top_fraction_highest_first_ties_by_id() {
        let chosen = choose_parents(Strategy::Ifd, &train(), &scores(), &spec()).unwrap();
        // ceil(0.5 * 6) = 3: c 1.5, then a and d tie at 1.2 (a < d).
        assert_eq!(ids(&chosen), ["c", "a", "d"]);
        assert_eq!(
            chosen.iter().map(|c| c.score).collect::<Vec<_>>(),
            [1.5, 1.2, 1.2]
        );
        let mut s = spec();
        s.ifd = Some(IfdSpec { fraction: 0.34 });
        // ceil(2.04) = 3.
        assert_eq!(
            ids(&choose_parents(Strategy::Ifd, &train(), &scores(), &s).unwrap()),
            ["c", "a", "d"]
        );
        s.ifd = Some(IfdSpec {
            fraction: 1.0 / 6.0,
        });
        assert_eq!(
            ids(&choose_parents(Strategy::Ifd, &train(), &scores(), &s).unwrap()),
            ["c"]
        );
        let mut sc = scores();
        sc.ifd.as_mut().unwrap().remove("f");
        let e = choose_parents(Strategy::Ifd, &train(), &sc, &spec())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("IFD score is missing for 1 of the 6") && e.contains("'f'"),
            "{e}"
        );
        sc.ifd = None;
        assert!(
            choose_parents(Strategy::Ifd, &train(), &sc, &spec())
                .unwrap_err()
                .to_string()
                .contains("no IFD scores")
        );
    }

    #[test]
    fn heuristic_lines_and_level() {
        let mut s = spec();
        s.heuristic = Some(HeuristicSpec {
            key: HeuristicKey::Lines,
            fraction: 0.5,
        });
        // Lines: a 2, b 5, c 3, d 5, e 1, f 4 → b, d (5, by id), f.
        let chosen = choose_parents(Strategy::Heuristic, &train(), &scores(), &s).unwrap();
        assert_eq!(ids(&chosen), ["b", "d", "f"]);
        assert_eq!(
            chosen.iter().map(|c| c.score).collect::<Vec<_>>(),
            [5.0, 5.0, 4.0]
        );

        s.heuristic = Some(HeuristicSpec {
            key: HeuristicKey::Level,
            fraction: 0.5,
        });
        // Levels: a 1, b 5, c 3, d ?, e 2, f 5 → b, f (5, by id), c.
        let chosen = choose_parents(Strategy::Heuristic, &train(), &scores(), &s).unwrap();
        assert_eq!(ids(&chosen), ["b", "f", "c"]);
        s.heuristic = Some(HeuristicSpec {
            key: HeuristicKey::Level,
            fraction: 1.0,
        });
        let chosen = choose_parents(Strategy::Heuristic, &train(), &scores(), &s).unwrap();
        // "Level ?" is unknown: last.
        assert_eq!(ids(&chosen), ["b", "f", "c", "e", "a", "d"]);
        assert!(chosen[5].score.is_nan());

        let mut t = train();
        t[2].meta.clear();
        let e = choose_parents(Strategy::Heuristic, &t, &scores(), &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train example 'c' has no `level`"), "{e}");
    }

    #[test]
    fn top_count_is_an_exact_ceiling() {
        assert_eq!(top_count(0.7, 10), 7);
        assert_eq!(top_count(0.75, 7473), 5605);
        assert_eq!(top_count(0.5, 7), 4);
        assert_eq!(top_count(1.0, 3), 3);
        assert_eq!(top_count(0.5, 0), 0);
    }

    #[test]
    fn generator_parents_are_a_seeded_shuffle_of_the_chosen() {
        let chosen = choose_parents(Strategy::Iid, &train(), &scores(), &spec()).unwrap();
        let a = generator_parents(&chosen, &train(), 0, 1).unwrap();
        let b = generator_parents(&chosen, &train(), 0, 1).unwrap();
        assert_eq!(a, b);
        let mut sorted: Vec<&str> = a.iter().map(|e| e.id.as_str()).collect();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c", "d", "e", "f"]);
        let orders: BTreeSet<Vec<String>> = (0..10)
            .map(|s| {
                generator_parents(&chosen, &train(), s, 1)
                    .unwrap()
                    .into_iter()
                    .map(|e| e.id)
                    .collect()
            })
            .collect();
        assert!(orders.len() > 1);
        let e = generator_parents(
            &[Chosen {
                id: "zz".into(),
                score: 0.0,
            }],
            &train(),
            0,
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("'zz'"));
    }

    #[test]
    fn chosen_round_trips_nan_through_json() {
        let c = vec![
            Chosen {
                id: "a".into(),
                score: f64::NAN,
            },
            Chosen {
                id: "b".into(),
                score: 0.25,
            },
        ];
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"[{"id":"a","score":null},{"id":"b","score":0.25}]"#);
        let back: Vec<Chosen> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
