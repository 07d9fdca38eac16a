//! Curation per problem family (the datasets' `family` field): the mean P-M
//! accuracy of each family of D after the first (shared) run, per seed, and
//! which families each strategy chose its parents from. What says whether
//! P-M tells the families apart, and whether pm collects other data than
//! iid.

use std::collections::BTreeMap;

use premem_core::Dataset;
use premem_core::data::dataset::FAMILY;

use super::iteration::{iteration_job, outcome_of};
use super::spec::Strategy;
use super::state::CurationState;

/// The families of the curations of several seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilySummary {
    /// The families of D, in order.
    pub families: Vec<String>,
    /// Per family (in `families`' order), the mean P-M accuracy of its
    /// examples of D after the first run, one value per seed (`None` where
    /// a seed has no such example).
    pub first_run_pm: Vec<Vec<Option<f64>>>,
    /// Per strategy: how many of its chosen parents (all seeds and
    /// iterations) are of each family.
    pub parents: Vec<(Strategy, BTreeMap<String, usize>)>,
}

/// The family summary of `seeds`; `None` when D has no families or a
/// seed's first run cannot be read here.
pub fn family_summary(seeds: &[(String, CurationState)]) -> Option<FamilySummary> {
    let mut families = std::collections::BTreeSet::new();
    let mut per_seed = vec![];
    for (_, state) in seeds {
        let of: BTreeMap<String, String> = Dataset::load(&state.job.data.train)
            .ok()?
            .examples
            .into_iter()
            .filter_map(|e| Some((e.id, e.meta.get(FAMILY)?.clone())))
            .collect();
        if of.is_empty() {
            return None;
        }
        families.extend(of.values().cloned());
        let first = iteration_job(&state.spec, &state.job, Strategy::Iid, 1).ok()?;
        let pm = outcome_of(&first).ok()?.pm;
        per_seed.push((of, pm));
    }
    let families: Vec<String> = families.into_iter().collect();
    let first_run_pm = families
        .iter()
        .map(|family| {
            per_seed
                .iter()
                .map(|(of, pm)| {
                    let values: Vec<f64> = pm
                        .iter()
                        .filter(|(id, _)| of.get(*id) == Some(family))
                        .map(|(_, v)| *v)
                        .collect();
                    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
                })
                .collect()
        })
        .collect();
    let strategies = seeds[0].1.spec.curation.strategies.clone();
    let parents = strategies
        .into_iter()
        .map(|s| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for ((_, state), (of, _)) in seeds.iter().zip(&per_seed) {
                for chosen in state.records(s).iter().flat_map(|r| &r.chosen) {
                    if let Some(family) = of.get(&chosen.id) {
                        *counts.entry(family.clone()).or_default() += 1;
                    }
                }
            }
            (s, counts)
        })
        .collect();
    Some(FamilySummary {
        families,
        first_run_pm,
        parents,
    })
}
