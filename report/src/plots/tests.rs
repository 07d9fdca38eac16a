use std::fs;
use std::path::{Path, PathBuf};

use image::RgbImage;
use plotters::prelude::*;

use super::canvas::SINGLE_SIZE;
use super::heatmap::{HeatLayout, MISSING, heat_color};
use super::output::output_paths;
use super::*;

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
        bars: vec![],
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

/// Error bars widen the y axis to their ends and draw in their series.
#[test]
fn lines_with_error_bars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut l = Lines {
        title: "Curation".into(),
        x_label: "examples".into(),
        y_label: "accuracy".into(),
        log_x: false,
        series: vec![Series {
            label: "pm".into(),
            points: vec![(10.0, 0.2), (20.0, 0.3)],
        }],
        marker: None,
        bars: vec![],
    };
    let [_, plain] = lines(&dir.path().join("plain"), &l).expect("plain");
    l.bars = vec![vec![(10.0, 0.1, 0.3), (20.0, 0.25, 0.9)]];
    let [png, svg] = lines(&dir.path().join("bars"), &l).expect("bars");
    load(&png, SINGLE_SIZE);
    let read = |p: &PathBuf| fs::read_to_string(p).expect("svg readable");
    let (plain, svg) = (read(&plain), read(&svg));
    let tick = "\n0.8\n";
    assert!(!plain.contains(tick), "the plain axis stops near 0.3");
    assert!(svg.contains(tick), "the axis reaches the bar top 0.9");
}
