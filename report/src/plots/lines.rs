//! Line charts: one line with markers per series, an optional dashed
//! vertical marker, a linear or logarithmic x axis.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::axes::{pad, pad_log, span, y_label_width};
use super::canvas::{
    BIG, DResult, Figure, Msg, SINGLE_SIZE, color, font, marker_el, no_data, titled,
};
use super::legend::{Glyph, LegendItem, draw_legend, leave_legend_room};
use super::output::render;
use super::{Result, Series};

/// Line chart data.
pub struct Lines {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic x axis; points with `x <= 0` are skipped.
    pub log_x: bool,
    /// Drawn as lines with small markers.
    pub series: Vec<Series>,
    /// Vertical dashed line at `x` with this legend label.
    pub marker: Option<(f64, String)>,
    /// Error bars, per series (in the order of `series`, its color; may be
    /// shorter): `(x, low, high)`, a vertical bar from `low` to `high`.
    pub bars: Vec<Vec<(f64, f64, f64)>>,
}

/// Line chart with one line per series and an optional vertical marker.
pub fn lines(stem: &Path, l: &Lines) -> Result<[PathBuf; 2]> {
    render(stem, &LinesFig(l))
}

struct LinesFig<'a>(&'a Lines);

impl Figure for LinesFig<'_> {
    fn size(&self) -> (u32, u32) {
        SINGLE_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult {
        draw_lines(root, self.0)
    }
}

struct LinesData<'a> {
    l: &'a Lines,
    series: Vec<Vec<(f64, f64)>>,
    marker: Option<(f64, &'a str)>,
    y: (f64, f64),
    items: Vec<LegendItem>,
}

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, l: &Lines) -> DResult {
    let ok_x = |x: f64| x.is_finite() && (!l.log_x || x > 0.0);
    let series: Vec<Vec<(f64, f64)>> = l
        .series
        .iter()
        .map(|s| {
            let pts = s.points.iter().copied();
            pts.filter(|&(x, y)| ok_x(x) && y.is_finite()).collect()
        })
        .collect();
    let marker = l
        .marker
        .as_ref()
        .filter(|(x, _)| ok_x(*x))
        .map(|(x, s)| (*x, s.as_str()));
    let xs = series
        .iter()
        .flatten()
        .map(|p| p.0)
        .chain(marker.map(|m| m.0));
    let x_span = span(xs);
    let bar_ends = l.bars.iter().flatten().flat_map(|b| [b.1, b.2]);
    let y = span(series.iter().flatten().map(|p| p.1).chain(bar_ends))
        .map(pad)
        .unwrap_or((0.0, 1.0));
    let data = LinesData {
        l,
        series,
        marker,
        y,
        items: lines_legend(l, marker),
    };
    if l.log_x {
        let (a, b) = x_span.map(pad_log).unwrap_or((1.0, 10.0));
        lines_chart(root, &data, (a..b).log_scale())
    } else {
        let (a, b) = x_span.map(pad).unwrap_or((0.0, 1.0));
        lines_chart(root, &data, a..b)
    }
}

/// One legend entry per labelled series, then the marker's.
fn lines_legend(l: &Lines, marker: Option<(f64, &str)>) -> Vec<LegendItem> {
    let mut items: Vec<LegendItem> = l
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.label.is_empty())
        .map(|(k, s)| LegendItem {
            label: s.label.clone(),
            glyph: Glyph::Line {
                color: color(k),
                dashed: false,
                marker: Some(k),
            },
        })
        .collect();
    if let Some((_, label)) = marker {
        items.push(LegendItem {
            label: label.to_string(),
            glyph: Glyph::Line {
                color: BLACK,
                dashed: true,
                marker: None,
            },
        });
    }
    items
}

fn lines_chart<DB, X>(root: &DrawingArea<DB, Shift>, d: &LinesData, x_spec: X) -> DResult
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let body = titled(root, &d.l.title, BIG.title)?;
    let left = leave_legend_room(&body, &d.items, BIG.small)?;
    let mut chart = ChartBuilder::on(&left)
        .margin(10)
        .margin_right(16)
        .x_label_area_size(BIG.label + BIG.tick + 24.0)
        .y_label_area_size(y_label_width(d.y, BIG))
        .build_cartesian_2d(x_spec, d.y.0..d.y.1)
        .msg()?;
    chart
        .configure_mesh()
        .x_desc(d.l.x_label.as_str())
        .y_desc(d.l.y_label.as_str())
        // Whole numbers (steps, example counts) without a trailing ".0".
        .x_label_formatter(&|v: &f64| {
            if v.fract() == 0.0 && v.abs() < 1e12 {
                format!("{v:.0}")
            } else {
                <X::CoordDescType as ValueFormatter<f64>>::format(v)
            }
        })
        .axis_desc_style(font(BIG.label))
        .label_style(font(BIG.tick))
        .bold_line_style(BLACK.mix(0.12))
        .max_light_lines(0)
        .draw()
        .msg()?;

    for (k, pts) in d.series.iter().enumerate() {
        let c = color(k);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .msg()?;
        for &p in pts {
            let m = marker_el::<DB, _>(k, p, c.filled(), 3);
            chart.plotting_area().draw(&m).msg()?;
        }
        for &(x, low, high) in d.l.bars.get(k).into_iter().flatten() {
            let bar =
                ErrorBar::new_vertical(x, low, (low + high) / 2.0, high, c.stroke_width(2), 8);
            chart.plotting_area().draw(&bar).msg()?;
        }
    }
    if let Some((x, _)) = d.marker {
        let seg = [(x, d.y.0), (x, d.y.1)];
        chart
            .draw_series(DashedLineSeries::new(seg, 8, 6, BLACK.stroke_width(2)))
            .msg()?;
    }
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    if d.series.iter().all(Vec::is_empty) {
        no_data(root, ((xs.start + xs.end) / 2, (ys.start + ys.end) / 2))?;
    }
    draw_legend(root, &d.items, BIG.small, (xs.end + 14, ys.start))
}
