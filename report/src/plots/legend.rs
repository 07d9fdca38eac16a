//! Legends: a boxed list of glyphs and labels, and the room one needs.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::canvas::{DResult, Msg, anchored, font, marker_el};

pub(super) enum Glyph {
    Marker(usize, RGBColor),
    Line {
        color: RGBColor,
        dashed: bool,
        marker: Option<usize>,
    },
    Bar(RGBColor),
}

pub(super) struct LegendItem {
    pub(super) label: String,
    pub(super) glyph: Glyph,
}

const LEGEND_PAD: i32 = 6;
const GLYPH_W: i32 = 30;

pub(super) fn legend_dims<DB: DrawingBackend>(
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

pub(super) fn draw_legend<DB: DrawingBackend>(
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
        draw_glyph(area, &it.glyph, gx, cy)?;
        let style = anchored(px, HPos::Left, VPos::Center);
        area.draw_text(&it.label, &style, (gx + GLYPH_W + LEGEND_PAD, cy))
            .msg()?;
    }
    Ok(())
}

/// One glyph, `GLYPH_W` wide from `gx`, centred on the row at `cy`.
fn draw_glyph<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    glyph: &Glyph,
    gx: i32,
    cy: i32,
) -> DResult {
    let mid = (gx + GLYPH_W / 2, cy);
    match *glyph {
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
    Ok(())
}

/// Splits off room on the right for a legend; returns the chart area.
pub(super) fn leave_legend_room<DB: DrawingBackend>(
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
