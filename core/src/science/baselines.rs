//! Baseline generalization metrics the paper compares P-M accuracy with
//! (its appendix B), side by side in the report:
//!
//! - plain train accuracy: mean `Acc_m(i)` over the train split (from the
//!   evaluator's rows, [`crate::science::pm::CheckpointPm::train_accuracy`]);
//! - gradient variance over 5 minibatches and distance from initialization:
//!   measured by the trainer at each checkpoint and written beside the
//!   weights as [`BASELINES_FILE`] ([`CheckpointBaselines`]);
//! - Average Thresholded Confidence (ATC, Garg et al. 2022): a confidence
//!   threshold `t` is fitted on one reference run, where the fraction of
//!   test samples with confidence ≥ `t` equals its test accuracy; for any
//!   checkpoint, ATC predicts the test accuracy as the fraction of its test
//!   samples with confidence ≥ `t`. A sample's confidence is the mean
//!   log-probability per token the model gave its own sample
//!   ([`crate::data::results::ExampleResult::sample_confidences`]); no test label
//!   is used outside the reference run.

use serde::{Deserialize, Serialize};

/// The file in a checkpoint directory (`checkpoints/step-N/`) that holds the
/// trainer's measurements.
pub const BASELINES_FILE: &str = "premem-baselines.json";

/// What the trainer measures at a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointBaselines {
    pub step: u64,
    /// `(1/(B−1)) Σ_b ‖g_b − ḡ‖²`: the total variance of the gradient of
    /// the mean token loss over `B` fixed minibatches (the same minibatches
    /// at every checkpoint). `None` when not finite (a diverged model).
    pub grad_variance: Option<f64>,
    /// `(1/B) Σ_b ‖g_b‖`, for scale.
    pub grad_norm_mean: Option<f64>,
    /// B.
    pub grad_minibatches: usize,
    /// Examples per minibatch.
    pub grad_minibatch_size: usize,
    /// `Σ (θ − θ₀)²` over all trainable weights, θ₀ the weights at step 0
    /// (the paper's "distance from initialization": a sum of squares).
    /// `None` when θ₀ could not be recovered exactly (a resumed run whose
    /// initial weights no longer match the digest taken at step 0).
    pub distance_from_init: Option<f64>,
}

/// The ATC threshold for `confidences` (pooled samples) whose accuracy is
/// `accuracy`: the fraction of confidences ≥ the threshold is as close to
/// `accuracy` as the samples allow. `None` without samples.
pub fn atc_threshold(confidences: &[f64], accuracy: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = confidences
        .iter()
        .copied()
        .filter(|c| c.is_finite())
        .collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(|a, b| b.total_cmp(a));
    let keep = (accuracy.clamp(0.0, 1.0) * sorted.len() as f64).round() as usize;
    Some(if keep == 0 {
        // Nothing counts as confident: just above the most confident sample.
        sorted[0] + sorted[0].abs().max(1.0) * 1e-9
    } else {
        sorted[keep - 1]
    })
}

/// The fraction of `confidences` at or above `threshold` (ATC's predicted
/// accuracy); `None` without samples.
pub fn atc_predict(confidences: &[f64], threshold: f64) -> Option<f64> {
    let finite: Vec<f64> = confidences
        .iter()
        .copied()
        .filter(|c| c.is_finite())
        .collect();
    (!finite.is_empty())
        .then(|| finite.iter().filter(|&&c| c >= threshold).count() as f64 / finite.len() as f64)
}

/// Pearson correlation of paired values; `None` with fewer than 2 points or
/// no spread.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "paired values");
    let n = x.len() as f64;
    if x.len() < 2 {
        return None;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|x| (x - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|y| (y - my).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atc_threshold_reproduces_the_reference_accuracy() {
        let confidences = [-0.1, -0.5, -0.2, -0.9, -0.3, -0.05, -1.5, -0.7];
        // 3 of 8 correct: the 3 most confident samples are at or above t.
        let t = atc_threshold(&confidences, 3.0 / 8.0).unwrap();
        assert_eq!(t, -0.2);
        assert_eq!(atc_predict(&confidences, t), Some(3.0 / 8.0));
        // All correct / none correct.
        let all = atc_threshold(&confidences, 1.0).unwrap();
        assert_eq!(atc_predict(&confidences, all), Some(1.0));
        let none = atc_threshold(&confidences, 0.0).unwrap();
        assert_eq!(atc_predict(&confidences, none), Some(0.0));
        // Another checkpoint, more confident overall: predicts more.
        let later = [-0.01, -0.02, -0.1, -0.15, -0.3, -0.4, -0.25, -0.19];
        assert_eq!(atc_predict(&later, t), Some(5.0 / 8.0));
        assert_eq!(atc_threshold(&[], 0.5), None);
        assert_eq!(atc_predict(&[f64::NAN], 0.0), None);
    }

    #[test]
    fn pearson_by_hand() {
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]), Some(1.0));
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // x = [1,2,3,4], y = [1,3,2,4]: sxy = 4, sxx = syy = 5 → 0.8.
        let r = pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.8).abs() < 1e-12);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
    }
}
