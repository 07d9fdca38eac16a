//! Grouped bar charts: one group per category, one bar per series, values in
//! `[0, 1]`, with the count of each category under it.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::Result;
use super::axes::y_label_width;
use super::canvas::{
    BIG, Chart, DResult, Figure, Msg, NO_DATA, SINGLE_SIZE, anchored, color, font, no_data, titled,
};
use super::legend::{Glyph, LegendItem, draw_legend, leave_legend_room};
use super::output::render;

/// Grouped bar chart data; values lie in `[0, 1]`.
pub struct Bars {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// X groups, e.g. "0-0.2".
    pub categories: Vec<String>,
    /// Examples per category, printed under each group as "n=12".
    pub counts: Vec<usize>,
    /// Per series one value per category (`None` = no bar).
    pub series: Vec<(String, Vec<Option<f64>>)>,
}

/// Grouped bar chart (y axis 0..1) with a legend of series.
pub fn bars(stem: &Path, b: &Bars) -> Result<[PathBuf; 2]> {
    render(stem, &BarsFig(b))
}

struct BarsFig<'a>(&'a Bars);

impl Figure for BarsFig<'_> {
    fn size(&self) -> (u32, u32) {
        SINGLE_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult {
        draw_bars(root, self.0)
    }
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, b: &Bars) -> DResult {
    let body = titled(root, &b.title, BIG.title)?;
    let items: Vec<LegendItem> = b
        .series
        .iter()
        .enumerate()
        .map(|(k, (name, _))| LegendItem {
            label: name.clone(),
            glyph: Glyph::Bar(color(k)),
        })
        .collect();
    let left = leave_legend_room(&body, &items, BIG.small)?;
    let n = b.categories.len();
    let mut chart = ChartBuilder::on(&left)
        .margin(10)
        .x_label_area_size(68)
        .y_label_area_size(y_label_width((0.0, 1.0), BIG))
        .build_cartesian_2d(0f64..n.max(1) as f64, 0f64..1f64)
        .msg()?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(6)
        .x_desc(b.x_label.as_str())
        .y_desc(b.y_label.as_str())
        .axis_desc_style(font(BIG.label))
        .label_style(font(BIG.tick))
        .bold_line_style(BLACK.mix(0.12))
        .max_light_lines(0)
        .draw()
        .msg()?;

    let ns = b.series.len().max(1) as f64;
    let bw = 0.8 / ns;
    for (k, (_, vals)) in b.series.iter().enumerate() {
        let c = color(k);
        let rects = vals.iter().take(n).enumerate().filter_map(|(i, v)| {
            let v = v.filter(|v| v.is_finite())?.clamp(0.0, 1.0);
            let x = i as f64 + 0.1 + bw * k as f64;
            Some(Rectangle::new([(x, 0.0), (x + bw, v)], c.filled()))
        });
        chart.draw_series(rects).msg()?;
    }

    draw_categories(root, &chart, b)?;
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    if n == 0 {
        no_data(root, ((xs.start + xs.end) / 2, (ys.start + ys.end) / 2))?;
    }
    draw_legend(root, &items, BIG.small, (xs.end + 14, ys.start))
}

/// Each category's name and count under its group.
fn draw_categories<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    b: &Bars,
) -> DResult {
    let cat = anchored(BIG.tick, HPos::Center, VPos::Top);
    let cnt = anchored(BIG.tick - 1.0, HPos::Center, VPos::Top).color(&NO_DATA);
    for (i, name) in b.categories.iter().enumerate() {
        let (cx, ay) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&PathElement::new(vec![(cx, ay), (cx, ay + 4)], BLACK))
            .msg()?;
        root.draw_text(name, &cat, (cx, ay + 7)).msg()?;
        if let Some(c) = b.counts.get(i) {
            root.draw_text(&format!("n={c}"), &cnt, (cx, ay + 25))
                .msg()?;
        }
    }
    Ok(())
}
