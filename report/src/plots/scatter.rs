//! Scatter charts: one panel, or a grid of panels under one title; series
//! as markers, with the `y = x` line, a least-squares line, a notes box and a
//! legend in the emptiest corner.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::axes::{finite, pad, span, valid_range, y_label_width};
use super::canvas::{
    BIG, Chart, DResult, Figure, Fonts, GRID_TITLE_H, GUIDE, Msg, PANEL_SIZE, SINGLE_SIZE, SMALL,
    anchored, color, font, marker_el, no_data,
};
use super::legend::{Glyph, LegendItem, draw_legend, legend_dims};
use super::output::render;
use super::{Result, Series};

/// One scatter panel.
pub struct Scatter {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// One colour and marker per series, listed in the legend.
    pub series: Vec<Series>,
    /// Draw the `y = x` line.
    pub identity: bool,
    /// `(slope, intercept)` of a least-squares line, drawn dashed.
    pub fit: Option<(f64, f64)>,
    /// Text lines in a box in the top-left corner.
    pub notes: Vec<String>,
    /// `None`: data range plus 5% padding (`[0, 1]` with `identity` and data in `[0, 1]`).
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
}

/// Several scatter panels in a grid of `columns` columns under one overall title.
pub fn scatter_grid(
    stem: &Path,
    title: &str,
    panels: &[Scatter],
    columns: usize,
) -> Result<[PathBuf; 2]> {
    render(
        stem,
        &GridFig {
            title,
            panels,
            columns,
        },
    )
}

/// One scatter panel; the panel title is the figure title.
pub fn scatter(stem: &Path, s: &Scatter) -> Result<[PathBuf; 2]> {
    render(stem, &ScatterFig(s))
}

struct ScatterFig<'a>(&'a Scatter);

impl Figure for ScatterFig<'_> {
    fn size(&self) -> (u32, u32) {
        SINGLE_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult {
        draw_scatter_panel(&root.margin(6, 0, 0, 0), self.0, &self.0.title, BIG)
    }
}

struct GridFig<'a> {
    title: &'a str,
    panels: &'a [Scatter],
    columns: usize,
}

impl GridFig<'_> {
    fn shape(&self) -> (usize, usize) {
        let n = self.panels.len().max(1);
        let cols = self.columns.clamp(1, n);
        (n.div_ceil(cols), cols)
    }
}

impl Figure for GridFig<'_> {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.shape();
        (
            PANEL_SIZE.0 * cols as u32,
            PANEL_SIZE.1 * rows as u32 + GRID_TITLE_H,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult {
        let (_, h) = root.dim_in_pixel();
        let (head, body) = root.split_vertically(GRID_TITLE_H);
        let (w, _) = head.dim_in_pixel();
        let style = anchored(BIG.title, HPos::Center, VPos::Center);
        head.draw_text(self.title, &style, (w as i32 / 2, GRID_TITLE_H as i32 / 2))
            .msg()?;
        if self.panels.is_empty() {
            return no_data(&body, (w as i32 / 2, (h - GRID_TITLE_H) as i32 / 2));
        }
        let cells = body.split_evenly(self.shape());
        for (panel, area) in self.panels.iter().zip(&cells) {
            draw_scatter_panel(area, panel, &panel.title, SMALL)?;
        }
        Ok(())
    }
}

fn scatter_ranges(s: &Scatter) -> ((f64, f64), (f64, f64)) {
    let pts: Vec<(f64, f64)> = s.series.iter().flat_map(|se| finite(&se.points)).collect();
    let in_unit = |v: f64| (0.0..=1.0).contains(&v);
    let unit = s.identity && pts.iter().all(|&(x, y)| in_unit(x) && in_unit(y));
    let auto = |vals: Vec<f64>| {
        if unit {
            (0.0, 1.0)
        } else {
            span(vals).map(pad).unwrap_or((0.0, 1.0))
        }
    };
    let x = valid_range(s.x_range).unwrap_or_else(|| auto(pts.iter().map(|p| p.0).collect()));
    let y = valid_range(s.y_range).unwrap_or_else(|| auto(pts.iter().map(|p| p.1).collect()));
    (x, y)
}

/// The part of `y = a x + b` inside the box, if any.
fn clip_line(
    (a, b): (f64, f64),
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Option<[(f64, f64); 2]> {
    if !a.is_finite() || !b.is_finite() {
        return None;
    }
    let (mut lo, mut hi) = (x0, x1);
    if a == 0.0 {
        if b < y0 || b > y1 {
            return None;
        }
    } else {
        let (p, q) = ((y0 - b) / a, (y1 - b) / a);
        lo = lo.max(p.min(q));
        hi = hi.min(p.max(q));
    }
    (lo < hi).then_some([(lo, a * lo + b), (hi, a * hi + b)])
}

fn draw_scatter_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &Scatter,
    title: &str,
    f: Fonts,
) -> DResult {
    let (xr, yr) = scatter_ranges(s);
    let inside = |&(x, y): &(f64, f64)| x >= xr.0 && x <= xr.1 && y >= yr.0 && y <= yr.1;
    let series: Vec<Vec<(f64, f64)>> = s
        .series
        .iter()
        .map(|se| finite(&se.points).into_iter().filter(inside).collect())
        .collect();
    let mut chart = scatter_chart(area, s, title, f, (xr, yr))?;
    let guides = draw_guides(&mut chart, s, (xr, yr))?;
    let mut items = series_legend(s);
    items.extend(guides.items);
    for (k, pts) in series.iter().enumerate() {
        let style = color(k).mix(0.75).filled();
        for &p in pts {
            let m = marker_el::<DB, _>(k, p, style, 4);
            chart.plotting_area().draw(&m).msg()?;
        }
    }

    let plot = chart.plotting_area().strip_coord_spec();
    let (bx, by) = plot.get_base_pixel();
    let (pw, ph) = plot.dim_in_pixel();
    let (pw, ph) = (pw as i32, ph as i32);
    if series.iter().all(Vec::is_empty) {
        no_data(&plot, (pw / 2, ph / 2))?;
    }
    let notes_h = draw_notes(&plot, &s.notes, f)?;
    if items.is_empty() {
        return Ok(());
    }
    let to_px = |p: &(f64, f64)| {
        let (x, y) = chart.backend_coord(p);
        (x - bx, y - by)
    };
    let data_px: Vec<(i32, i32)> = series.iter().flatten().map(to_px).collect();
    let guide_px: Vec<(i32, i32)> = guides.points.iter().map(to_px).collect();
    let size = legend_dims(&plot, &items, f.small)?;
    let at = emptiest_corner(size, (pw, ph), notes_h, &data_px, &guide_px);
    draw_legend(&plot, &items, f.small, at)
}

/// The axes, with the panel title as caption.
fn scatter_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    s: &Scatter,
    title: &str,
    f: Fonts,
    (xr, yr): ((f64, f64), (f64, f64)),
) -> DResult<Chart<'a, DB>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(8)
        .margin_right(18)
        .x_label_area_size(f.label + f.tick + 22.0)
        .y_label_area_size(y_label_width(yr, f));
    if !title.is_empty() {
        builder.caption(title, font(f.title));
    }
    let mut chart = builder.build_cartesian_2d(xr.0..xr.1, yr.0..yr.1).msg()?;
    chart
        .configure_mesh()
        .x_desc(s.x_label.as_str())
        .y_desc(s.y_label.as_str())
        .axis_desc_style(font(f.label))
        .label_style(font(f.tick))
        .bold_line_style(BLACK.mix(0.12))
        .max_light_lines(0)
        .draw()
        .msg()?;
    Ok(chart)
}

/// The guide lines drawn on a panel.
struct Guides {
    /// Their legend entries.
    items: Vec<LegendItem>,
    /// Points along them, which the legend should not cover.
    points: Vec<(f64, f64)>,
}

/// The `y = x` and least-squares lines, as far as they cross the box.
fn draw_guides<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    s: &Scatter,
    (xr, yr): ((f64, f64), (f64, f64)),
) -> DResult<Guides> {
    let line = |label: &str, color: RGBColor, dashed: bool| LegendItem {
        label: label.into(),
        glyph: Glyph::Line {
            color,
            dashed,
            marker: None,
        },
    };
    let (mut items, mut points) = (vec![], vec![]);
    if s.identity
        && let Some(seg) = clip_line((1.0, 0.0), xr, yr)
    {
        chart
            .draw_series(LineSeries::new(seg, GUIDE.stroke_width(2)))
            .msg()?;
        points.extend(along(seg));
        items.push(line("y = x", GUIDE, false));
    }
    if let Some(seg) = s.fit.and_then(|fit| clip_line(fit, xr, yr)) {
        chart
            .draw_series(DashedLineSeries::new(seg, 9, 6, BLACK.stroke_width(2)))
            .msg()?;
        points.extend(along(seg));
        items.push(line("least squares", BLACK, true));
    }
    Ok(Guides { items, points })
}

/// 41 evenly spaced points of a segment, its ends included.
fn along(p: [(f64, f64); 2]) -> impl Iterator<Item = (f64, f64)> {
    (0..=40).map(move |t| {
        let u = f64::from(t) / 40.0;
        (
            p[0].0 + (p[1].0 - p[0].0) * u,
            p[0].1 + (p[1].1 - p[0].1) * u,
        )
    })
}

/// One legend entry per labelled series.
fn series_legend(s: &Scatter) -> Vec<LegendItem> {
    s.series
        .iter()
        .enumerate()
        .filter(|(_, se)| !se.label.is_empty())
        .map(|(k, se)| LegendItem {
            label: se.label.clone(),
            glyph: Glyph::Marker(k, color(k)),
        })
        .collect()
}

/// The notes box in the top-left corner; returns its height (0: no notes).
fn draw_notes<DB: DrawingBackend>(
    plot: &DrawingArea<DB, Shift>,
    notes: &[String],
    f: Fonts,
) -> DResult<i32> {
    if notes.is_empty() {
        return Ok(0);
    }
    let line = f.small as i32 + 5;
    let mut tw = 0;
    for n in notes {
        tw = tw.max(plot.estimate_text_size(n, &font(f.small)).msg()?.0 as i32);
    }
    let notes_h = line * notes.len() as i32 + 10;
    let rect = [(8, 8), (8 + tw + 14, 8 + notes_h)];
    plot.draw(&Rectangle::new(rect, WHITE.mix(0.9).filled()))
        .msg()?;
    plot.draw(&Rectangle::new(rect, BLACK.mix(0.35).stroke_width(1)))
        .msg()?;
    let style = anchored(f.small, HPos::Left, VPos::Top);
    for (i, n) in notes.iter().enumerate() {
        plot.draw_text(n, &style, (15, 13 + line * i as i32))
            .msg()?;
    }
    Ok(notes_h)
}

/// The corner (top-left pixel) for a legend of `(lw, lh)` in a plot of
/// `(pw, ph)` that covers the fewest data points, then guide points; the
/// top-left corner is below the notes box.
fn emptiest_corner(
    (lw, lh): (i32, i32),
    (pw, ph): (i32, i32),
    notes_h: i32,
    data_px: &[(i32, i32)],
    guide_px: &[(i32, i32)],
) -> (i32, i32) {
    let (right, bottom) = (pw - lw - 8, ph - lh - 8);
    let mut corners = vec![(right, bottom), (right, 8), (8, bottom)];
    corners.push((8, if notes_h > 0 { notes_h + 16 } else { 8 }));
    let score = |&(x, y): &(i32, i32)| {
        let hit = |&&(px, py): &&(i32, i32)| {
            px >= x - 4 && px <= x + lw + 4 && py >= y - 4 && py <= y + lh + 4
        };
        let overflow = i32::from(y + lh > ph - 2 || y < 0) * 1_000_000;
        data_px.iter().filter(hit).count() as i32 * 3
            + guide_px.iter().filter(hit).count() as i32
            + overflow
    };
    let mut best = corners[0];
    for c in &corners {
        if score(c) < score(&best) {
            best = *c;
        }
    }
    best
}
