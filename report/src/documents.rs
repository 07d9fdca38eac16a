//! The report's documents: `report.md` and `report.html` (the same content,
//! charts inlined as SVG, no external files).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::analysis::Analysis;
use super::markdown::markdown;
use super::{ReportError, Result};

/// Writes `report.md` and `report.html` (after the charts, whose SVG files
/// the page inlines); returns both paths.
pub fn write(location: &str, analysis: &Analysis, out: &Path) -> Result<Vec<PathBuf>> {
    let md = markdown(location, analysis);
    let md_path = out.join("report.md");
    write_file(&md_path, md.as_bytes())?;
    let html = html(&md, out)?;
    let html_path = out.join("report.html");
    write_file(&html_path, html.as_bytes())?;
    Ok(vec![md_path, html_path])
}

/// The page of the markdown `md`, its images replaced by the SVG files in `out`.
fn html(md: &str, out: &Path) -> Result<String> {
    let parser = pulldown_cmark::Parser::new_ext(md, pulldown_cmark::Options::ENABLE_TABLES);
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, parser);
    let inlined = inline_charts(&body, out)?;
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>premem report</title>\n<style>\nbody {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}\ntable {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}\nth, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; }}\nth {{ background: #f3f3f3; }}\n.chart svg {{ max-width: 100%; height: auto; }}\ncode {{ background: #f3f3f3; padding: 0 0.2em; }}\n</style></head><body>\n{inlined}</body></html>\n"
    ))
}

/// Every `<img src="x.png" … />` of `body` as the contents of `out/x.svg`:
/// the page needs no other file.
fn inline_charts(body: &str, out: &Path) -> Result<String> {
    let mut inlined = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find("<img src=\"") {
        inlined.push_str(&rest[..start]);
        let after = &rest[start + 10..];
        let end = after.find('"').unwrap_or(0);
        let src = &after[..end];
        let close = after.find("/>").map(|i| i + 2).unwrap_or(after.len());
        let svg_path = out.join(Path::new(src).with_extension("svg"));
        let svg = std::fs::read_to_string(&svg_path).map_err(|source| ReportError::Io {
            path: svg_path,
            source,
        })?;
        let svg = svg.trim_start_matches(|c| c != '<');
        let svg = match svg.strip_prefix("<?xml") {
            Some(s) => &s[s.find("?>").map(|i| i + 2).unwrap_or(0)..],
            None => svg,
        };
        let _ = write!(inlined, "<div class=\"chart\">{svg}</div>");
        rest = &after[close..];
    }
    inlined.push_str(rest);
    Ok(inlined)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    premem_core::storage::files::write_atomic(path, bytes).map_err(io)
}
