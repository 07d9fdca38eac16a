//! From a figure to its two files: `<stem>.png` and `<stem>.svg`, each
//! written under a `.partial` name and renamed into place.

use std::fs;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::canvas::{Figure, Msg, ensure_font};
use super::{PlotError, Result};

pub(super) fn perr(path: &Path, message: impl std::fmt::Display) -> PlotError {
    PlotError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// `<stem>.<ext>`; a trailing `.png`/`.svg` on the stem is dropped.
pub(super) fn output_paths(stem: &Path) -> [PathBuf; 2] {
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
    premem_core::storage::files::write_atomic(path, bytes).map_err(|e| perr(path, e))
}

pub(super) fn render<F: Figure>(stem: &Path, fig: &F) -> Result<[PathBuf; 2]> {
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
