//! Axis ranges from the data: finite points, spans with padding, and the room
//! the y tick labels need.

use super::canvas::Fonts;

pub(super) fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Min and max of the finite values, if any.
pub(super) fn span(vals: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    vals.into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Adds 5% padding; a zero span gets a non-zero one.
pub(super) fn pad((lo, hi): (f64, f64)) -> (f64, f64) {
    let width = hi - lo;
    if !width.is_finite() {
        return (lo, hi);
    }
    if width > 1e-12 * lo.abs().max(hi.abs()).max(1e-300) {
        (lo - 0.05 * width, hi + 0.05 * width)
    } else {
        let d = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 0.5 };
        (lo - d, hi + d)
    }
}

/// Padding in log space for positive ranges.
pub(super) fn pad_log((lo, hi): (f64, f64)) -> (f64, f64) {
    let (l0, l1) = (lo.log10(), hi.log10());
    if l1 - l0 > 1e-9 {
        let p = 0.05 * (l1 - l0);
        (10f64.powf(l0 - p), 10f64.powf(l1 + p))
    } else {
        (lo / 2.0, hi * 2.0)
    }
}

pub(super) fn valid_range(r: Option<(f64, f64)>) -> Option<(f64, f64)> {
    r.filter(|&(a, b)| a.is_finite() && b.is_finite() && a < b)
}

/// Room for y tick labels (estimated from the range) plus the axis description.
pub(super) fn y_label_width((lo, hi): (f64, f64), f: Fonts) -> f64 {
    let digits = lo.abs().max(hi.abs()).max(1.0).log10().floor().min(12.0) + 1.0;
    let chars = digits + 3.0 + f64::from(u8::from(lo < 0.0));
    f.label + 12.0 + chars * f.tick * 0.55
}
