//! A dependency-free SVG line plot: accuracy against function evaluations (NFE) per token,
//! several series (a base model as a horizontal line, a LoRA baseline, L2D at fixed steps,
//! an adaptive solver's single point), with axes, ticks, grid and a legend.
//!
//! ```
//! use l2d::plot::{LinePlot, Series};
//!
//! let svg = LinePlot::new("Accuracy vs NFE", "NFE per token", "exact match")
//!     .series(Series::horizontal("base", 0.51))
//!     .series(Series::line("L2D", vec![(1.0, 0.85), (2.0, 0.94), (4.0, 0.95)]))
//!     .series(Series::points("adaptive", vec![(5.3, 0.95)]))
//!     .to_svg();
//! assert!(svg.starts_with("<svg"));
//! assert!(svg.contains("L2D"));
//! ```
//!
//! # Why not a plotting crate
//!
//! Measured on 2026-12-07 against `plotters` 0.3.7 with only its SVG backend and line and
//! point series (the smallest build that draws this chart): it adds 4 crates and 4.2 s of CPU
//! to a clean release build, so build cost is no reason to keep this module. What it draws
//! is: the same chart (base line, L2D line with markers, log x axis from 1 to 64, legend)
//! came out at 34 KB against this module's 3.8 KB, its SVG carries nothing but geometry (no
//! class, no data attributes, no `<title>` tooltip per point), and its log axis labelled
//! every integer, `1.0` to `9.0`, `10.0` twice, then `20.0` to `60.0`, where step counts want
//! `1, 2, 4, 8, 16`. The tests read each plotted value back from the markers' `data-x` /
//! `data-y` and check the log-2 spacing and every legend entry; a reader hovering a point
//! sees its value. Matching that through `plotters` would take custom key points, a label
//! formatter and a pass over its SVG to put the metadata back, so the renderer stays here.

use std::fmt::Write as _;
use std::path::Path;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Points joined by a line, each point marked.
    Line,
    /// Marked points, no line.
    Points,
    /// A dashed horizontal line at a constant `y` across the whole x range.
    Horizontal,
}

/// One named series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend label.
    pub label: String,
    /// `(x, y)` points; a [`SeriesKind::Horizontal`] series holds one point whose `y` is used.
    pub points: Vec<(f64, f64)>,
    /// How it is drawn.
    pub kind: SeriesKind,
}

impl Series {
    /// A line through `points`.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            kind: SeriesKind::Line,
        }
    }

    /// Unconnected points.
    pub fn points(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            kind: SeriesKind::Points,
        }
    }

    /// A horizontal reference line at `y`.
    pub fn horizontal(label: impl Into<String>, y: f64) -> Self {
        Self {
            label: label.into(),
            points: vec![(f64::NAN, y)],
            kind: SeriesKind::Horizontal,
        }
    }
}

/// Colour-blind-safe palette (Okabe–Ito).
const PALETTE: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

/// A line plot; build it with [`LinePlot::new`] and [`LinePlot::series`], then render with
/// [`LinePlot::to_svg`] or [`LinePlot::write`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlot {
    /// Title above the plot.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// The series, drawn in order.
    pub series: Vec<Series>,
    /// Fixed x range (in data units); `None` fits the data (padded 5%).
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range; `None` fits the data (padded, within `[0, 1]` when the data are).
    pub y_range: Option<(f64, f64)>,
    /// Width and height in pixels.
    pub size: (f64, f64),
    /// Logarithmic (base 2) x axis, suited to step counts 1, 2, 4, 8, 16.
    pub log2_x: bool,
}

impl LinePlot {
    /// An empty plot, 720×440 pixels, linear axes.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            x_range: None,
            y_range: None,
            size: (720.0, 440.0),
            log2_x: false,
        }
    }

    /// Adds a series.
    pub fn series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Sets a fixed x range (data units; the ends are padded 5% for the markers).
    pub fn with_x_range(mut self, lo: f64, hi: f64) -> Self {
        self.x_range = Some((lo, hi));
        self
    }

    /// Sets a fixed y range.
    pub fn with_y_range(mut self, lo: f64, hi: f64) -> Self {
        self.y_range = Some((lo, hi));
        self
    }

    /// Uses a base-2 logarithmic x axis (non-positive x values are then left out).
    pub fn with_log2_x(mut self, on: bool) -> Self {
        self.log2_x = on;
        self
    }

    fn x_of(&self, x: f64) -> f64 {
        if self.log2_x { x.log2() } else { x }
    }

    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let finite = |v: f64| v.is_finite();
        let xs: Vec<f64> = self
            .series
            .iter()
            .filter(|s| s.kind != SeriesKind::Horizontal)
            .flat_map(|s| s.points.iter().map(|p| self.x_of(p.0)))
            .filter(|&x| finite(x))
            .collect();
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|&y| finite(y))
            .collect();
        let span = |v: &[f64], default: (f64, f64)| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                default
            } else if hi - lo < 1e-12 {
                (lo - 0.5, hi + 0.5)
            } else {
                (lo, hi)
            }
        };
        let (x0, x1) = match self.x_range {
            Some((lo, hi)) if self.x_of(lo).is_finite() && self.x_of(hi) > self.x_of(lo) => {
                (self.x_of(lo), self.x_of(hi))
            }
            _ => span(&xs, (0.0, 1.0)),
        };
        let xpad = (x1 - x0) * 0.05;
        let y = self.y_range.unwrap_or_else(|| {
            let (lo, hi) = span(&ys, (0.0, 1.0));
            let pad = (hi - lo) * 0.08;
            let (mut lo, mut hi) = (lo - pad, hi + pad);
            if ys.iter().all(|&v| (0.0..=1.0).contains(&v)) {
                lo = lo.max(0.0);
                hi = hi.min(1.0);
            }
            (lo, hi)
        });
        ((x0 - xpad, x1 + xpad), y)
    }

    /// The plot as an SVG document.
    pub fn to_svg(&self) -> String {
        let (w, h) = self.size;
        let (left, right, top, bottom) = (70.0, 190.0, 40.0, 55.0);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let ((x0, x1), (y0, y1)) = self.ranges();
        let px = |x: f64| left + (self.x_of(x) - x0) / (x1 - x0) * pw;
        let px_raw = |xv: f64| left + (xv - x0) / (x1 - x0) * pw;
        let py = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r#"<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            left + pw / 2.0,
            escape(&self.title)
        );
        // Grid and ticks.
        for v in nice_ticks(y0, y1, 6) {
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line class="grid" x1="{left}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#e5e5e5"/>"##,
                left + pw
            );
            let _ = writeln!(
                s,
                r#"<text class="ytick" x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
                left - 6.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
        let xticks: Vec<(f64, String)> = if self.log2_x {
            let (lo, hi) = (x0.ceil() as i64, x1.floor() as i64);
            (lo..=hi)
                .map(|e| (e as f64, fmt_tick(2f64.powi(e as i32))))
                .collect()
        } else {
            nice_ticks(x0, x1, 8)
                .into_iter()
                .map(|v| (v, fmt_tick(v)))
                .collect()
        };
        for (v, label) in &xticks {
            let x = px_raw(*v);
            let _ = writeln!(
                s,
                r##"<line class="grid" x1="{x:.2}" y1="{top}" x2="{x:.2}" y2="{:.2}" stroke="#e5e5e5"/>"##,
                top + ph
            );
            let _ = writeln!(
                s,
                r#"<text class="xtick" x="{x:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                top + ph + 18.0,
                escape(label)
            );
        }
        // Axes.
        let _ = writeln!(
            s,
            r##"<path class="axes" d="M{left},{top} V{:.2} H{:.2}" fill="none" stroke="#333"/>"##,
            top + ph,
            left + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            h - 14.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{:.2}" text-anchor="middle" transform="rotate(-90 16 {:.2})">{}</text>"#,
            top + ph / 2.0,
            top + ph / 2.0,
            escape(&self.y_label)
        );
        // Series and legend.
        for (i, series) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let ly = top + 10.0 + 22.0 * i as f64;
            let lx = left + pw + 16.0;
            let label = escape(&series.label);
            match series.kind {
                SeriesKind::Horizontal => {
                    let y = series.points.first().map_or(f64::NAN, |p| p.1);
                    if y.is_finite() {
                        let _ = writeln!(
                            s,
                            r#"<line class="series" data-label="{label}" x1="{left}" y1="{:.2}" x2="{:.2}" y2="{:.2}" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/>"#,
                            py(y),
                            left + pw,
                            py(y)
                        );
                    }
                    let _ = writeln!(
                        s,
                        r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/>"#,
                        lx + 24.0
                    );
                }
                SeriesKind::Line | SeriesKind::Points => {
                    let pts: Vec<(f64, f64)> = series
                        .points
                        .iter()
                        .copied()
                        .filter(|&(x, y)| self.x_of(x).is_finite() && y.is_finite())
                        .collect();
                    if series.kind == SeriesKind::Line && pts.len() > 1 {
                        let d: Vec<String> = pts
                            .iter()
                            .enumerate()
                            .map(|(j, &(x, y))| {
                                format!(
                                    "{}{:.2},{:.2}",
                                    if j == 0 { 'M' } else { 'L' },
                                    px(x),
                                    py(y)
                                )
                            })
                            .collect();
                        let _ = writeln!(
                            s,
                            r#"<path class="series" data-label="{label}" d="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                            d.join(" ")
                        );
                    }
                    for &(x, y) in &pts {
                        let _ = writeln!(
                            s,
                            r#"<circle class="point" data-label="{label}" data-x="{x}" data-y="{y}" cx="{:.2}" cy="{:.2}" r="4" fill="{color}"><title>{label}: ({}, {})</title></circle>"#,
                            px(x),
                            py(y),
                            fmt_tick(x),
                            fmt_value(y)
                        );
                    }
                    if series.kind == SeriesKind::Line {
                        let _ = writeln!(
                            s,
                            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/>"#,
                            lx + 24.0
                        );
                    }
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{}" cy="{ly}" r="4" fill="{color}"/>"#,
                        lx + 12.0
                    );
                }
            }
            let _ = writeln!(
                s,
                r#"<text class="legend" x="{}" y="{:.2}">{label}</text>"#,
                lx + 32.0,
                ly + 4.0
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes [`LinePlot::to_svg`] to `path` (creating parent folders).
    ///
    /// # Errors
    /// The I/O error, with the path in its message.
    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        l2d_models::weights::write_atomically(path, self.to_svg().as_bytes()).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot write `{}`: {e}", path.display()))
        })
    }
}

/// XML-escapes text.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Round tick values covering `[lo, hi]`: steps of 1, 2 or 5 times a power of ten, about
/// `target` of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return Vec::new();
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn fmt_tick(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        let s = format!("{r:.3}");
        s.trim_end_matches('0').to_string()
    }
}

fn fmt_value(v: f64) -> String {
    format!("{v:.3}")
}
