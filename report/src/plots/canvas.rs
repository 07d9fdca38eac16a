//! What every chart draws with: the embedded font, sizes and colours, the
//! figure trait the output step renders, and small drawing helpers.

use std::fmt::Display;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DynElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

const FONT: &str = "sans-serif";
pub(super) const SINGLE_SIZE: (u32, u32) = (900, 600);
pub(super) const PANEL_SIZE: (u32, u32) = (500, 420);
pub(super) const GRID_TITLE_H: u32 = 50;

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
pub(super) const GUIDE: RGBColor = RGBColor(110, 110, 110);
pub(super) const NO_DATA: RGBColor = RGBColor(120, 120, 120);

#[derive(Clone, Copy)]
pub(super) struct Fonts {
    pub(super) title: f64,
    pub(super) label: f64,
    pub(super) tick: f64,
    pub(super) small: f64,
}

pub(super) const BIG: Fonts = Fonts {
    title: 24.0,
    label: 16.0,
    tick: 13.0,
    small: 14.0,
};
pub(super) const SMALL: Fonts = Fonts {
    title: 18.0,
    label: 15.0,
    tick: 12.0,
    small: 13.0,
};

pub(super) type DResult<T = ()> = std::result::Result<T, String>;

/// A chart with linear axes.
pub(super) type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Turns any displayable error into a message.
pub(super) trait Msg<T> {
    fn msg(self) -> DResult<T>;
}

impl<T, E: Display> Msg<T> for std::result::Result<T, E> {
    fn msg(self) -> DResult<T> {
        self.map_err(|e| e.to_string())
    }
}

/// A figure that can be drawn on any backend.
pub(super) trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult;
}

pub(super) fn ensure_font() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // A failure shows up later as a text-drawing error naming the file.
        let _ = register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
    });
}

pub(super) fn font(px: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, px).into_font())
}

pub(super) fn anchored(px: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    font(px).pos(Pos::new(h, v))
}

pub(super) fn color(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

/// Draws a title at the top; returns the area below it.
pub(super) fn titled<DB: DrawingBackend>(
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

pub(super) fn no_data<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
) -> DResult {
    let style = anchored(20.0, HPos::Center, VPos::Center).color(&NO_DATA);
    area.draw_text("no data", &style, (x, y)).msg()
}

/// A filled marker; the shape depends on `shape`.
pub(super) fn marker_el<'a, DB: DrawingBackend + 'a, C: Clone + 'a>(
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
