//! Report charts: learning-progression heatmap, scatter plots, grouped bars and lines.
//!
//! Every public function writes `<stem>.png` and `<stem>.svg` and returns both paths.
//! Files are written under a `.partial` name and renamed into place.

mod axes;
mod bars;
mod canvas;
mod heatmap;
mod legend;
mod lines;
mod output;
mod scatter;
#[cfg(test)]
mod tests;

pub use bars::{Bars, bars};
pub use heatmap::{HeatCell, Heatmap, heatmap};
pub use lines::{Lines, lines};
pub use scatter::{Scatter, scatter, scatter_grid};

/// Error while drawing or writing a chart; `path` is the file concerned.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, PlotError>;

/// A labelled set of `(x, y)` points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}
