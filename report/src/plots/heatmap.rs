//! The learning-progression heatmap: examples (rows) by checkpoints
//! (columns), coloured by accuracy, memorized cells on their own scale.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, VPos};

use super::Result;
use super::canvas::{BIG, DResult, Figure, Msg, SINGLE_SIZE, anchored, no_data};
use super::output::render;

/// One cell of the learning-progression heatmap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeatCell {
    pub accuracy: f64,
    pub memorized: bool,
}

/// Examples (rows, top to bottom) x checkpoints (columns, left to right).
pub struct Heatmap {
    pub title: String,
    /// Example ids; shown as tick labels only when there are at most 40 rows.
    pub rows: Vec<String>,
    /// Checkpoint steps, used as column labels.
    pub steps: Vec<u64>,
    /// `rows x steps`; `None` means the result is missing.
    pub cells: Vec<Vec<Option<HeatCell>>>,
}

/// Writes the heatmap to `<stem>.png` and `<stem>.svg`; returns `[png, svg]`.
pub fn heatmap(stem: &Path, h: &Heatmap) -> Result<[PathBuf; 2]> {
    render(stem, &HeatFig(h))
}

struct HeatFig<'a>(&'a Heatmap);

pub(super) const MISSING: RGBColor = RGBColor(150, 150, 150);
const BLUES: [(f64, f64, f64); 3] = [
    (247.0, 251.0, 255.0),
    (107.0, 174.0, 214.0),
    (8.0, 48.0, 107.0),
];
const ORANGES: [(f64, f64, f64); 3] = [
    (254.0, 232.0, 200.0),
    (252.0, 141.0, 89.0),
    (153.0, 0.0, 0.0),
];
const MAX_ID_CHARS: usize = 30;

fn ramp(stops: &[(f64, f64, f64); 3], t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (a, b, u) = if t < 0.5 {
        (stops[0], stops[1], t * 2.0)
    } else {
        (stops[1], stops[2], t * 2.0 - 1.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

pub(super) fn heat_color(c: Option<HeatCell>) -> RGBColor {
    match c {
        Some(c) if c.accuracy.is_finite() => {
            ramp(if c.memorized { &ORANGES } else { &BLUES }, c.accuracy)
        }
        _ => MISSING,
    }
}

fn short_id(id: &str) -> String {
    if id.chars().count() > MAX_ID_CHARS {
        let mut s: String = id.chars().take(MAX_ID_CHARS - 1).collect();
        s.push('…');
        s
    } else {
        id.to_string()
    }
}

/// Pixel geometry of the heatmap; cell `(i, j)` spans
/// `x0 + j*cw .. x0 + (j+1)*cw`, `y0 + i*rh .. y0 + (i+1)*rh`.
pub(super) struct HeatLayout {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) x0: i32,
    pub(super) y0: i32,
    pub(super) cw: i32,
    pub(super) rh: i32,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) row_labels: bool,
    pub(super) stride: usize,
}

impl HeatLayout {
    pub(super) fn new(h: &Heatmap) -> Self {
        let rows = h.rows.len().max(h.cells.len());
        let widest_row = h.cells.iter().map(Vec::len).max().unwrap_or(0);
        let cols = h.steps.len().max(widest_row);
        let y0 = 60;
        if rows == 0 || cols == 0 {
            let (w, hh) = SINGLE_SIZE;
            return Self {
                width: w,
                height: hh,
                x0: 90,
                y0,
                cw: 600,
                rh: 440,
                rows: 1,
                cols: 1,
                row_labels: false,
                stride: 1,
            };
        }
        let row_labels = rows <= 40;
        let label_w = if row_labels {
            let chars = h.rows.iter().map(|r| short_id(r).chars().count()).max();
            chars.unwrap_or(1) as i32 * 7 + 12
        } else {
            28
        };
        let x0 = 12 + 24 + label_w;
        let cw = (720 / cols as i32).clamp(6, 80);
        let rh = if row_labels {
            (560 / rows as i32).clamp(14, 40)
        } else {
            (900 / rows as i32).clamp(2, 8)
        };
        let step_chars = h.steps.iter().map(|s| s.to_string().len()).max();
        let step_w = step_chars.unwrap_or(1) as i32 * 8 + 10;
        let stride = (step_w as usize)
            .div_ceil(cw as usize)
            .max(cols.div_ceil(20))
            .max(1);
        let key_x = x0 + cw * cols as i32 + 30;
        let width = (key_x + 215).max(700) as u32;
        let height = (y0 + rh * rows as i32 + 70).max(y0 + 220) as u32;
        Self {
            width,
            height,
            x0,
            y0,
            cw,
            rh,
            rows,
            cols,
            row_labels,
            stride,
        }
    }

    fn x1(&self) -> i32 {
        self.x0 + self.cw * self.cols as i32
    }

    fn y1(&self) -> i32 {
        self.y0 + self.rh * self.rows as i32
    }
}

impl Figure for HeatFig<'_> {
    fn size(&self) -> (u32, u32) {
        let l = HeatLayout::new(self.0);
        (l.width, l.height)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult {
        draw_heatmap(root, self.0)
    }
}

fn draw_heatmap<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, h: &Heatmap) -> DResult {
    let lay = HeatLayout::new(h);
    let (x0, y0, x1, y1) = (lay.x0, lay.y0, lay.x1(), lay.y1());
    let title = anchored(BIG.title, HPos::Center, VPos::Top);
    root.draw_text(&h.title, &title, (lay.width as i32 / 2, 14))
        .msg()?;
    let frame = [(x0 - 1, y0 - 1), (x1, y1)];
    let n_rows = h.rows.len().max(h.cells.len());
    let n_cols = h
        .steps
        .len()
        .max(h.cells.iter().map(Vec::len).max().unwrap_or(0));
    if n_rows == 0 || n_cols == 0 {
        root.draw(&Rectangle::new(frame, BLACK.stroke_width(1)))
            .msg()?;
        return no_data(root, ((x0 + x1) / 2, (y0 + y1) / 2));
    }
    draw_cells(root, h, &lay)?;
    root.draw(&Rectangle::new(frame, BLACK.stroke_width(1)))
        .msg()?;
    draw_example_axis(root, h, &lay)?;
    draw_step_axis(root, h, &lay)?;
    draw_heat_key(root, x1 + 30, y0)
}

/// The cells, merging equal neighbours in a row to keep the SVG small;
/// large cells get a 1 px white gap.
fn draw_cells<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &Heatmap,
    lay: &HeatLayout,
) -> DResult {
    let (x0, y0) = (lay.x0, lay.y0);
    let gap_x = i32::from(lay.cw >= 12 && lay.rh >= 12);
    let gap_y = i32::from(lay.rh >= 12);
    for i in 0..lay.rows {
        let row = h.cells.get(i);
        let at = |j: usize| heat_color(row.and_then(|r| r.get(j)).copied().flatten());
        let mut j = 0;
        while j < lay.cols {
            let c = at(j);
            let mut k = j + 1;
            while gap_x == 0 && k < lay.cols && at(k) == c {
                k += 1;
            }
            let top = y0 + lay.rh * i as i32;
            let r = [
                (x0 + lay.cw * j as i32, top),
                (x0 + lay.cw * k as i32 - gap_x, top + lay.rh - gap_y),
            ];
            root.draw(&Rectangle::new(r, c.filled())).msg()?;
            j = k;
        }
    }
    Ok(())
}

/// The y axis: example ids when they fit, else their count.
fn draw_example_axis<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &Heatmap,
    lay: &HeatLayout,
) -> DResult {
    let (x0, y0) = (lay.x0, lay.y0);
    let mid_y = (y0 + lay.y1()) / 2;
    let rotated =
        |px: f64| anchored(px, HPos::Center, VPos::Center).transform(FontTransform::Rotate270);
    if lay.row_labels {
        let px = (lay.rh as f64 - 2.0).min(BIG.tick);
        let style = anchored(px, HPos::Right, VPos::Center);
        for (i, id) in h.rows.iter().enumerate() {
            let cy = y0 + lay.rh * i as i32 + lay.rh / 2;
            root.draw_text(&short_id(id), &style, (x0 - 6, cy)).msg()?;
        }
    } else {
        let count = format!("{} examples", lay.rows);
        root.draw_text(&count, &rotated(BIG.tick), (x0 - 14, mid_y))
            .msg()?;
    }
    root.draw_text("example", &rotated(BIG.label), (22, mid_y))
        .msg()
}

/// The x axis: every `stride`-th checkpoint step.
fn draw_step_axis<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &Heatmap,
    lay: &HeatLayout,
) -> DResult {
    let (x0, x1, y1) = (lay.x0, lay.x1(), lay.y1());
    let tick_style = anchored(BIG.tick, HPos::Center, VPos::Top);
    for j in (0..lay.cols).step_by(lay.stride) {
        let cx = x0 + lay.cw * j as i32 + lay.cw / 2;
        root.draw(&PathElement::new(vec![(cx, y1), (cx, y1 + 4)], BLACK))
            .msg()?;
        if let Some(step) = h.steps.get(j) {
            root.draw_text(&step.to_string(), &tick_style, (cx, y1 + 7))
                .msg()?;
        }
    }
    let desc = anchored(BIG.label, HPos::Center, VPos::Top);
    root.draw_text("checkpoint step", &desc, ((x0 + x1) / 2, y1 + 32))
        .msg()
}

/// The two colour scales and the swatch for missing results.
fn draw_heat_key<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, kx: i32, ky: i32) -> DResult {
    const BAR_W: i32 = 160;
    const BAR_H: i32 = 14;
    let caption = anchored(BIG.small, HPos::Left, VPos::Top);
    let tick = anchored(BIG.tick - 1.0, HPos::Center, VPos::Top);
    let scales = [
        ("not memorized: accuracy", &BLUES),
        ("memorized: accuracy", &ORANGES),
    ];
    let mut y = ky;
    for (label, stops) in scales {
        root.draw_text(label, &caption, (kx, y)).msg()?;
        let by = y + 20;
        for dx in 0..BAR_W {
            let c = ramp(stops, dx as f64 / (BAR_W - 1) as f64);
            let r = [(kx + dx, by), (kx + dx + 1, by + BAR_H)];
            root.draw(&Rectangle::new(r, c.filled())).msg()?;
        }
        let outline = [(kx - 1, by - 1), (kx + BAR_W, by + BAR_H)];
        root.draw(&Rectangle::new(outline, BLACK.mix(0.5).stroke_width(1)))
            .msg()?;
        for (t, text) in [(0, "0"), (BAR_W / 2, "0.5"), (BAR_W - 1, "1")] {
            root.draw_text(text, &tick, (kx + t, by + BAR_H + 4))
                .msg()?;
        }
        y = by + BAR_H + 30;
    }
    let sw = [(kx, y), (kx + BAR_H, y + BAR_H)];
    root.draw(&Rectangle::new(sw, MISSING.filled())).msg()?;
    let left = anchored(BIG.small, HPos::Left, VPos::Center);
    root.draw_text("missing", &left, (kx + BAR_H + 8, y + BAR_H / 2))
        .msg()
}
