//! Report charts: learning-progression heatmap, scatter plots, grouped bars and lines.
//!
//! Every public function writes `<stem>.png` and `<stem>.svg` and returns both paths.
//! Files are written under a `.partial` name and renamed into place.

use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::element::DynElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform, register_font};

/// Error while drawing or writing a chart; `path` is the file concerned.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, PlotError>;

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

/// A labelled set of `(x, y)` points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

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
}

/// Line chart with one line per series and an optional vertical marker.
pub fn lines(stem: &Path, l: &Lines) -> Result<[PathBuf; 2]> {
    render(stem, &LinesFig(l))
}

// ---------------------------------------------------------------------------
// Shared machinery

const FONT: &str = "sans-serif";
const SINGLE_SIZE: (u32, u32) = (900, 600);
const PANEL_SIZE: (u32, u32) = (500, 420);
const GRID_TITLE_H: u32 = 50;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
const GUIDE: RGBColor = RGBColor(110, 110, 110);
const NO_DATA: RGBColor = RGBColor(120, 120, 120);

#[derive(Clone, Copy)]
struct Fonts {
    title: f64,
    label: f64,
    tick: f64,
    small: f64,
}

const BIG: Fonts = Fonts {
    title: 24.0,
    label: 16.0,
    tick: 13.0,
    small: 14.0,
};
const SMALL: Fonts = Fonts {
    title: 18.0,
    label: 15.0,
    tick: 12.0,
    small: 13.0,
};

type DResult<T = ()> = std::result::Result<T, String>;

/// Turns any displayable error into a message.
trait Msg<T> {
    fn msg(self) -> DResult<T>;
}

impl<T, E: Display> Msg<T> for std::result::Result<T, E> {
    fn msg(self) -> DResult<T> {
        self.map_err(|e| e.to_string())
    }
}

/// A figure that can be drawn on any backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult;
}

fn ensure_font() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // A failure shows up later as a text-drawing error naming the file.
        let _ = register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
    });
}

fn font(px: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, px).into_font())
}

fn anchored(px: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    font(px).pos(Pos::new(h, v))
}

fn color(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

fn perr(path: &Path, message: impl Display) -> PlotError {
    PlotError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// `<stem>.<ext>`; a trailing `.png`/`.svg` on the stem is dropped.
fn output_paths(stem: &Path) -> [PathBuf; 2] {
    let base = match stem.extension().and_then(|e| e.to_str()) {
        Some("png" | "svg") => stem.with_extension(""),
        _ => stem.to_path_buf(),
    };
    ["png", "svg"].map(|ext| {
        let mut s = base.clone().into_os_string();
        s.push(".");
        s.push(ext);
        PathBuf::from(s)
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    premem_core::files::write_atomic(path, bytes).map_err(|e| perr(path, e))
}

fn render<F: Figure>(stem: &Path, fig: &F) -> Result<[PathBuf; 2]> {
    ensure_font();
    let [png, svg] = output_paths(stem);
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .map_err(|e| perr(&png, format!("creating {}: {e}", dir.display())))?;
    }
    let (w, h) = fig.size();

    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .msg()
            .and_then(|()| fig.draw(&root))
            .and_then(|()| root.present().msg())
            .map_err(|m| perr(&png, m))?;
    }
    let bytes = encode_png(w, h, &buf).map_err(|m| perr(&png, m))?;
    write_atomic(&png, &bytes)?;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .msg()
            .and_then(|()| fig.draw(&root))
            .and_then(|()| root.present().msg())
            .map_err(|m| perr(&svg, m))?;
    }
    write_atomic(&svg, text.as_bytes())?;
    Ok([png, svg])
}

/// Draws a title at the top; returns the area below it.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    px: f64,
) -> DResult<DrawingArea<DB, Shift>> {
    let area = root.margin(8, 0, 0, 0);
    if title.is_empty() {
        return Ok(area);
    }
    area.titled(title, font(px)).msg()
}

fn no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, (x, y): (i32, i32)) -> DResult {
    let style = anchored(20.0, HPos::Center, VPos::Center).color(&NO_DATA);
    area.draw_text("no data", &style, (x, y)).msg()
}

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Min and max of the finite values, if any.
fn span(vals: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    vals.into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Adds 5% padding; a zero span gets a non-zero one.
fn pad((lo, hi): (f64, f64)) -> (f64, f64) {
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
fn pad_log((lo, hi): (f64, f64)) -> (f64, f64) {
    let (l0, l1) = (lo.log10(), hi.log10());
    if l1 - l0 > 1e-9 {
        let p = 0.05 * (l1 - l0);
        (10f64.powf(l0 - p), 10f64.powf(l1 + p))
    } else {
        (lo / 2.0, hi * 2.0)
    }
}

fn valid_range(r: Option<(f64, f64)>) -> Option<(f64, f64)> {
    r.filter(|&(a, b)| a.is_finite() && b.is_finite() && a < b)
}

/// A filled marker; the shape depends on `shape`.
fn marker_el<'a, DB: DrawingBackend + 'a, C: Clone + 'a>(
    shape: usize,
    at: C,
    style: ShapeStyle,
    size: i32,
) -> DynElement<'a, DB, C> {
    let base = EmptyElement::at(at);
    match shape % 4 {
        0 => (base + Circle::new((0, 0), size, style)).into_dyn(),
        1 => (base + TriangleMarker::new((0, 0), size + 1, style)).into_dyn(),
        2 => (base + Rectangle::new([(-size + 1, -size + 1), (size - 1, size - 1)], style))
            .into_dyn(),
        _ => {
            let s = size + 1;
            (base + Polygon::new(vec![(0, -s), (s, 0), (0, s), (-s, 0)], style)).into_dyn()
        }
    }
}

enum Glyph {
    Marker(usize, RGBColor),
    Line {
        color: RGBColor,
        dashed: bool,
        marker: Option<usize>,
    },
    Bar(RGBColor),
}

struct LegendItem {
    label: String,
    glyph: Glyph,
}

const LEGEND_PAD: i32 = 6;
const GLYPH_W: i32 = 30;

fn legend_dims<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[LegendItem],
    px: f64,
) -> DResult<(i32, i32)> {
    let mut w = 0;
    for it in items {
        let (tw, _) = area.estimate_text_size(&it.label, &font(px)).msg()?;
        w = w.max(tw as i32);
    }
    let row = px as i32 + 6;
    Ok((
        w + GLYPH_W + 3 * LEGEND_PAD,
        row * items.len() as i32 + 2 * LEGEND_PAD,
    ))
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[LegendItem],
    px: f64,
    (x, y): (i32, i32),
) -> DResult {
    if items.is_empty() {
        return Ok(());
    }
    let (w, h) = legend_dims(area, items, px)?;
    let rect = [(x, y), (x + w, y + h)];
    area.draw(&Rectangle::new(rect, WHITE.mix(0.9).filled()))
        .msg()?;
    area.draw(&Rectangle::new(rect, BLACK.mix(0.35).stroke_width(1)))
        .msg()?;
    let row = px as i32 + 6;
    for (i, it) in items.iter().enumerate() {
        let cy = y + LEGEND_PAD + row * i as i32 + row / 2;
        let gx = x + LEGEND_PAD;
        let mid = (gx + GLYPH_W / 2, cy);
        match it.glyph {
            Glyph::Marker(shape, c) => {
                area.draw(&marker_el::<DB, _>(shape, mid, c.filled(), 5))
                    .msg()?;
            }
            Glyph::Line {
                color: c,
                dashed,
                marker,
            } => {
                let style = c.stroke_width(2);
                if dashed {
                    for (a, b) in [(0, 9), (12, 18), (21, 30)] {
                        area.draw(&PathElement::new(vec![(gx + a, cy), (gx + b, cy)], style))
                            .msg()?;
                    }
                } else {
                    area.draw(&PathElement::new(vec![(gx, cy), (gx + GLYPH_W, cy)], style))
                        .msg()?;
                }
                if let Some(shape) = marker {
                    area.draw(&marker_el::<DB, _>(shape, mid, c.filled(), 4))
                        .msg()?;
                }
            }
            Glyph::Bar(c) => {
                let r = [(gx + 6, cy - 6), (gx + GLYPH_W - 6, cy + 6)];
                area.draw(&Rectangle::new(r, c.filled())).msg()?;
            }
        }
        let style = anchored(px, HPos::Left, VPos::Center);
        area.draw_text(&it.label, &style, (gx + GLYPH_W + LEGEND_PAD, cy))
            .msg()?;
    }
    Ok(())
}

/// Splits off room on the right for a legend; returns the chart area.
fn leave_legend_room<DB: DrawingBackend>(
    body: &DrawingArea<DB, Shift>,
    items: &[LegendItem],
    px: f64,
) -> DResult<DrawingArea<DB, Shift>> {
    if items.is_empty() {
        return Ok(body.clone());
    }
    let (lw, _) = legend_dims(body, items, px)?;
    let (w, _) = body.dim_in_pixel();
    let keep = (w as i32 - lw - 24).max(w as i32 / 2);
    Ok(body.split_horizontally(keep).0)
}

/// PNG bytes of an RGB buffer (plotters' own encoder picks the format from
/// the file extension, which rules out writing to a `.partial` name).
fn encode_png(w: u32, h: u32, rgb: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use image::ImageEncoder;
    let mut out = vec![];
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, w, h, image::ColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Heatmap

struct HeatFig<'a>(&'a Heatmap);

const MISSING: RGBColor = RGBColor(150, 150, 150);
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

fn heat_color(c: Option<HeatCell>) -> RGBColor {
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
struct HeatLayout {
    width: u32,
    height: u32,
    x0: i32,
    y0: i32,
    cw: i32,
    rh: i32,
    rows: usize,
    cols: usize,
    row_labels: bool,
    stride: usize,
}

impl HeatLayout {
    fn new(h: &Heatmap) -> Self {
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

    // Cells, merging equal neighbours in a row to keep the SVG small;
    // large cells get a 1 px white gap.
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
    root.draw(&Rectangle::new(frame, BLACK.stroke_width(1)))
        .msg()?;

    // Y axis.
    let mid_y = (y0 + y1) / 2;
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
        .msg()?;

    // X axis.
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
        .msg()?;

    draw_heat_key(root, x1 + 30, y0)
}

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

// ---------------------------------------------------------------------------
// Scatter

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

/// Room for y tick labels (estimated from the range) plus the axis description.
fn y_label_width((lo, hi): (f64, f64), f: Fonts) -> f64 {
    let digits = lo.abs().max(hi.abs()).max(1.0).log10().floor().min(12.0) + 1.0;
    let chars = digits + 3.0 + f64::from(u8::from(lo < 0.0));
    f.label + 12.0 + chars * f.tick * 0.55
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

    let mut items = Vec::new();
    let mut guides: Vec<(f64, f64)> = Vec::new();
    let mut add_guide = |p: [(f64, f64); 2]| {
        for t in 0..=40 {
            let u = f64::from(t) / 40.0;
            guides.push((
                p[0].0 + (p[1].0 - p[0].0) * u,
                p[0].1 + (p[1].1 - p[0].1) * u,
            ));
        }
    };
    if s.identity
        && let Some(seg) = clip_line((1.0, 0.0), xr, yr)
    {
        chart
            .draw_series(LineSeries::new(seg, GUIDE.stroke_width(2)))
            .msg()?;
        add_guide(seg);
        items.push(LegendItem {
            label: "y = x".into(),
            glyph: Glyph::Line {
                color: GUIDE,
                dashed: false,
                marker: None,
            },
        });
    }
    if let Some(seg) = s.fit.and_then(|fit| clip_line(fit, xr, yr)) {
        chart
            .draw_series(DashedLineSeries::new(seg, 9, 6, BLACK.stroke_width(2)))
            .msg()?;
        add_guide(seg);
        items.push(LegendItem {
            label: "least squares".into(),
            glyph: Glyph::Line {
                color: BLACK,
                dashed: true,
                marker: None,
            },
        });
    }
    let series_items: Vec<LegendItem> = s
        .series
        .iter()
        .enumerate()
        .filter(|(_, se)| !se.label.is_empty())
        .map(|(k, se)| LegendItem {
            label: se.label.clone(),
            glyph: Glyph::Marker(k, color(k)),
        })
        .collect();
    items.splice(0..0, series_items);

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

    // Notes box, top left.
    let mut notes_h = 0;
    if !s.notes.is_empty() {
        let line = f.small as i32 + 5;
        let mut tw = 0;
        for n in &s.notes {
            tw = tw.max(plot.estimate_text_size(n, &font(f.small)).msg()?.0 as i32);
        }
        notes_h = line * s.notes.len() as i32 + 10;
        let rect = [(8, 8), (8 + tw + 14, 8 + notes_h)];
        plot.draw(&Rectangle::new(rect, WHITE.mix(0.9).filled()))
            .msg()?;
        plot.draw(&Rectangle::new(rect, BLACK.mix(0.35).stroke_width(1)))
            .msg()?;
        let style = anchored(f.small, HPos::Left, VPos::Top);
        for (i, n) in s.notes.iter().enumerate() {
            plot.draw_text(n, &style, (15, 13 + line * i as i32))
                .msg()?;
        }
    }

    // Legend in the emptiest corner.
    if !items.is_empty() {
        let (lw, lh) = legend_dims(&plot, &items, f.small)?;
        let (right, bottom) = (pw - lw - 8, ph - lh - 8);
        let mut corners = vec![(right, bottom), (right, 8), (8, bottom)];
        corners.push((8, if notes_h > 0 { notes_h + 16 } else { 8 }));
        let to_px = |p: &(f64, f64)| {
            let (x, y) = chart.backend_coord(p);
            (x - bx, y - by)
        };
        let data_px: Vec<(i32, i32)> = series.iter().flatten().map(to_px).collect();
        let guide_px: Vec<(i32, i32)> = guides.iter().map(to_px).collect();
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
        draw_legend(&plot, &items, f.small, best)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Bars

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

    let (xs, ys) = chart.plotting_area().get_pixel_range();
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
    if n == 0 {
        no_data(root, ((xs.start + xs.end) / 2, (ys.start + ys.end) / 2))?;
    }
    draw_legend(root, &items, BIG.small, (xs.end + 14, ys.start))
}

// ---------------------------------------------------------------------------
// Lines

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
    let y = span(series.iter().flatten().map(|p| p.1))
        .map(pad)
        .unwrap_or((0.0, 1.0));

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
    let data = LinesData {
        l,
        series,
        marker,
        y,
        items,
    };
    if l.log_x {
        let (a, b) = x_span.map(pad_log).unwrap_or((1.0, 10.0));
        lines_chart(root, &data, (a..b).log_scale())
    } else {
        let (a, b) = x_span.map(pad).unwrap_or((0.0, 1.0));
        lines_chart(root, &data, a..b)
    }
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

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn load(path: &Path, size: (u32, u32)) -> RgbImage {
        let img = image::open(path).expect("png decodes").to_rgb8();
        assert_eq!(img.dimensions(), size, "{}", path.display());
        let first = img.get_pixel(0, 0);
        assert!(img.pixels().any(|p| p != first), "single colour");
        img
    }

    fn svg_has(path: &Path, texts: &[&str]) {
        let s = fs::read_to_string(path).expect("svg readable");
        assert!(s.starts_with("<svg"), "not an svg");
        for t in texts {
            assert!(s.contains(t), "{} lacks {t:?}", path.display());
        }
    }

    fn no_partials(dir: &Path) {
        for e in fs::read_dir(dir).expect("dir") {
            let name = e.expect("entry").file_name();
            assert!(!name.to_string_lossy().ends_with(".partial"), "{name:?}");
        }
    }

    fn cell(acc: f64, memorized: bool) -> Option<HeatCell> {
        Some(HeatCell {
            accuracy: acc,
            memorized,
        })
    }

    fn demo_scatter(title: &str) -> Scatter {
        let a: Vec<(f64, f64)> = (0..30)
            .map(|i| (f64::from(i) / 30.0, f64::from(i) / 32.0 + 0.02))
            .collect();
        Scatter {
            title: title.into(),
            x_label: "predicted".into(),
            y_label: "observed".into(),
            series: vec![
                Series {
                    label: "train".into(),
                    points: a,
                },
                Series {
                    label: "test".into(),
                    points: vec![(0.2, 0.3), (0.5, 0.45), (f64::NAN, 0.1)],
                },
            ],
            identity: true,
            fit: Some((0.95, 0.02)),
            notes: vec!["R² vs y = x: 0.94".into()],
            x_range: None,
            y_range: None,
        }
    }

    #[test]
    fn paths_and_partial_names() {
        let [p, s] = output_paths(Path::new("a/b.c"));
        assert_eq!(p, PathBuf::from("a/b.c.png"));
        assert_eq!(s, PathBuf::from("a/b.c.svg"));
        let [p, _] = output_paths(Path::new("a/b.png"));
        assert_eq!(p, PathBuf::from("a/b.png"));
    }

    #[test]
    fn heatmap_writes_and_colours_classes_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = Heatmap {
            title: "Learning progression".into(),
            rows: vec!["ex-1".into(), "ex-2".into(), "ex-3".into()],
            steps: vec![100, 200, 300],
            cells: vec![
                vec![cell(0.5, false), cell(0.5, true), None],
                vec![cell(0.0, false), cell(0.0, true), cell(1.0, true)],
                vec![cell(f64::NAN, false)],
            ],
        };
        let stem = dir.path().join("nested/heat");
        let [png, svg] = heatmap(&stem, &h).expect("heatmap");
        let lay = HeatLayout::new(&h);
        let img = load(&png, (lay.width, lay.height));
        svg_has(
            &svg,
            &["Learning progression", "checkpoint step", "example", "ex-2"],
        );
        no_partials(png.parent().expect("parent"));

        let at = |i: i32, j: i32| {
            let x = lay.x0 + lay.cw * j + lay.cw / 2;
            let y = lay.y0 + lay.rh * i + lay.rh / 2;
            *img.get_pixel(x as u32, y as u32)
        };
        assert_ne!(at(0, 0), at(0, 1), "memorized vs not at 0.5");
        assert_ne!(at(1, 0), at(1, 1), "memorized vs not at 0.0");
        let grey = image::Rgb([MISSING.0, MISSING.1, MISSING.2]);
        assert_eq!(at(0, 2), grey);
        assert_eq!(at(2, 0), grey, "NaN is missing");
        assert_eq!(at(2, 2), grey, "short row is missing");
        let RGBColor(r, g, b) = heat_color(cell(0.5, false));
        assert_eq!(at(0, 0), image::Rgb([r, g, b]));
    }

    #[test]
    fn heatmap_large_and_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = 300;
        let cols = 100;
        let h = Heatmap {
            title: "big".into(),
            rows: (0..rows).map(|i| format!("id{i}")).collect(),
            steps: (0..cols).map(|j| j * 1000).collect(),
            cells: (0..rows)
                .map(|i| {
                    (0..cols)
                        .map(|j| cell((i + j) as f64 / 400.0, i % 3 == 0))
                        .collect()
                })
                .collect(),
        };
        let [png, svg] = heatmap(&dir.path().join("big"), &h).expect("big");
        let lay = HeatLayout::new(&h);
        load(&png, (lay.width, lay.height));
        svg_has(&svg, &["300 examples", "checkpoint step"]);

        let empty = Heatmap {
            title: "empty".into(),
            rows: vec![],
            steps: vec![],
            cells: vec![],
        };
        let [png, svg] = heatmap(&dir.path().join("empty"), &empty).expect("empty");
        load(&png, SINGLE_SIZE);
        svg_has(&svg, &["empty", "no data"]);
    }

    #[test]
    fn scatter_single_and_grid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = demo_scatter("Calibration");
        let [png, svg] = scatter(&dir.path().join("sc"), &s).expect("scatter");
        load(&png, SINGLE_SIZE);
        svg_has(
            &svg,
            &[
                "Calibration",
                "predicted",
                "observed",
                "least squares",
                "y = x",
            ],
        );

        let panels: Vec<Scatter> = (0..3)
            .map(|i| demo_scatter(&format!("panel {i}")))
            .collect();
        let [png, svg] = scatter_grid(&dir.path().join("grid"), "All", &panels, 2).expect("grid");
        load(&png, (1000, 2 * 420 + 50));
        svg_has(&svg, &["All", "panel 2", "predicted"]);
        no_partials(dir.path());
    }

    #[test]
    fn scatter_degenerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = demo_scatter("degenerate");
        s.series = vec![];
        s.fit = Some((f64::NAN, 0.0));
        let [png, svg] = scatter(&dir.path().join("empty"), &s).expect("empty");
        load(&png, SINGLE_SIZE);
        svg_has(&svg, &["no data"]);

        for pts in [
            vec![(3.0, 3.0)],
            vec![(2.0, 5.0), (2.0, 5.0)],
            vec![(f64::NAN, 1.0), (f64::INFINITY, 2.0)],
            vec![(0.0, 0.0)],
        ] {
            s.series = vec![Series {
                label: "one".into(),
                points: pts,
            }];
            scatter(&dir.path().join("one"), &s).expect("one point");
        }
        s.x_range = Some((1.0, 1.0));
        s.y_range = Some((f64::NAN, 2.0));
        scatter(&dir.path().join("bad-range"), &s).expect("bad range");

        let [png, _] = scatter_grid(&dir.path().join("g0"), "none", &[], 0).expect("no panels");
        load(&png, (500, 420 + 50));
    }

    #[test]
    fn bars_normal_and_degenerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Bars {
            title: "Memorization by difficulty".into(),
            x_label: "difficulty".into(),
            y_label: "fraction".into(),
            categories: vec!["0-0.5".into(), "0.5-1".into()],
            counts: vec![12, 7],
            series: vec![
                ("a".into(), vec![Some(0.3), None]),
                ("b".into(), vec![Some(f64::NAN), Some(1.5)]),
            ],
        };
        let [png, svg] = bars(&dir.path().join("bars"), &b).expect("bars");
        load(&png, SINGLE_SIZE);
        svg_has(
            &svg,
            &[
                "Memorization by difficulty",
                "difficulty",
                "fraction",
                "n=12",
            ],
        );

        let empty = Bars {
            categories: vec![],
            counts: vec![],
            series: vec![],
            ..b
        };
        let [png, svg] = bars(&dir.path().join("empty"), &empty).expect("empty");
        load(&png, SINGLE_SIZE);
        svg_has(&svg, &["no data"]);
    }

    #[test]
    fn lines_normal_and_degenerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = Lines {
            title: "Threshold sweep".into(),
            x_label: "p".into(),
            y_label: "score".into(),
            log_x: true,
            series: vec![Series {
                label: "F1".into(),
                points: vec![(0.0, 0.1), (-1.0, 0.2), (0.5, 0.4), (1.0, 0.6), (2.0, 0.5)],
            }],
            marker: Some((1.095, "chosen p = 1.095".into())),
        };
        let [png, svg] = lines(&dir.path().join("lines"), &l).expect("lines");
        load(&png, SINGLE_SIZE);
        svg_has(&svg, &["Threshold sweep", "score", "chosen p = 1.095"]);

        l.series[0].points = vec![(0.0, 1.0), (-2.0, 1.0)];
        l.marker = Some((0.0, "zero".into()));
        let [png, svg] = lines(&dir.path().join("zeros"), &l).expect("zeros");
        load(&png, SINGLE_SIZE);
        svg_has(&svg, &["no data"]);

        l.log_x = false;
        l.series[0].points = vec![(1.0, 1.0)];
        lines(&dir.path().join("one"), &l).expect("one point");
        l.series = vec![];
        l.marker = None;
        lines(&dir.path().join("empty"), &l).expect("empty");
    }
}
