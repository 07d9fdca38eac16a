//! Science: the P-M accuracy formulas, out-of-sample R² by leave-one-run-out
//! folds, the baselines P-M is compared with, and the advice drawn from
//! them. Pure functions of their inputs: imports nothing from the other
//! folders.

pub mod advice;
pub mod baselines;
pub mod crossval;
pub mod pm;
