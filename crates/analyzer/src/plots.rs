//! The report's charts, drawn with plotters to PNG and SVG from the same code.
//!
//! Text goes through ab_glyph with DejaVu Sans compiled in, so charts render the same on a
//! machine without fontconfig or any system font.

use std::{
    path::{Path, PathBuf},
    sync::Once,
};

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::{
    error::{AnalyzerError, Result},
    replay::PageRow,
    series::{Binned, Heatmap, Rates, SUB_BINS, bin_high, bin_low},
    text::fmt_ns,
};

pub const SIZE: (u32, u32) = (960, 480);

/// Ten distinguishable colours (Tableau 10).
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
            (FontStyle::Italic, dejavu::sans::oblique()),
            (FontStyle::Oblique, dejavu::sans::oblique()),
        ] {
            // The bytes are a known-good TTF compiled in; failing here would be a build defect.
            plotters::style::register_font("sans-serif", style, bytes)
                .unwrap_or_else(|_| panic!("embedded DejaVu Sans is not a valid font"));
        }
    });
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// One chart, drawable on any backend.
pub trait Chart {
    /// File name stem (`latency_hist` -> `latency_hist.png`, `latency_hist.svg`).
    fn name(&self) -> &str;
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Writes `DIR/NAME.png` and `DIR/NAME.svg`; returns the PNG's path.
pub fn render<C: Chart>(chart: &C, dir: &Path) -> Result<PathBuf> {
    register_fonts();
    let png = dir.join(format!("{}.png", chart.name()));
    let svg = dir.join(format!("{}.svg", chart.name()));
    let err = |path: &Path| {
        let path = path.to_owned();
        move |why: String| AnalyzerError::Plot { path, why }
    };
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        chart
            .draw(&root)
            .and_then(|_| root.present())
            .map_err(|e| err(&png)(e.to_string()))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        chart
            .draw(&root)
            .and_then(|_| root.present())
            .map_err(|e| err(&svg)(e.to_string()))?;
    }
    Ok(png)
}

fn title_font() -> TextStyle<'static> {
    ("sans-serif", 20).into_font().color(&BLACK)
}

fn label_font() -> TextStyle<'static> {
    ("sans-serif", 14).into_font().color(&BLACK)
}

fn ns_label(v: &f64) -> String {
    fmt_ns(*v)
}

/// Latency histograms (log-scaled latency axis, log-scaled counts), one line per group.
pub struct LatencyHistogram<'a> {
    pub name: &'a str,
    pub title: &'a str,
    pub groups: &'a [Binned],
}

/// Latency range covering every group's non-empty bins.
fn latency_range(groups: &[Binned]) -> Option<(usize, usize)> {
    groups
        .iter()
        .filter_map(Binned::span)
        .fold(None, |acc, (lo, hi)| match acc {
            None => Some((lo, hi)),
            Some((a, b)) => Some((a.min(lo), b.max(hi))),
        })
}

impl Chart for LatencyHistogram<'_> {
    fn name(&self) -> &str {
        self.name
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (lo, hi) = latency_range(self.groups).unwrap_or((40, 60));
        let ymax = self
            .groups
            .iter()
            .flat_map(|g| g.bins.iter())
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, title_font())
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (bin_low(lo)..bin_high(hi)).log_scale(),
                // Headroom above the tallest bin keeps the legend off the data.
                (0.8f64..ymax * 40.0).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("latency (log scale)")
            .y_desc("faults per bin (log scale)")
            .x_label_formatter(&ns_label)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(label_font())
            .draw()?;
        let lines = self.groups.iter().map(|g| {
            // A step outline: flat across each bin, so wide and narrow bins read honestly.
            let mut pts = Vec::new();
            for k in lo..=hi {
                let y = (g.bins[k] as f64).max(0.8);
                pts.push((bin_low(k), y));
                pts.push((bin_high(k), y));
            }
            (format!("{} ({})", g.name, g.total), pts)
        });
        line_per_group(&mut chart, lines, SeriesLabelPosition::UpperRight)
    }
}

/// One line per group in the group's colour, and the legend that names them.
fn line_per_group<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: impl Iterator<Item = (String, Vec<(f64, f64)>)>,
    legend: SeriesLabelPosition,
) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (label, pts)) in lines.enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(label_font())
        .draw()?;
    Ok(())
}

/// Cumulative distribution of latency, one line per group.
pub struct LatencyCdf<'a> {
    pub name: &'a str,
    pub title: &'a str,
    pub groups: &'a [Binned],
}

impl Chart for LatencyCdf<'_> {
    fn name(&self) -> &str {
        self.name
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (lo, hi) = latency_range(self.groups).unwrap_or((40, 60));
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, title_font())
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((bin_low(lo)..bin_high(hi)).log_scale(), 0f64..1.0)?;
        chart
            .configure_mesh()
            .x_desc("latency (log scale)")
            .y_desc("fraction of faults at or below")
            .x_label_formatter(&ns_label)
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style(label_font())
            .draw()?;
        let lines = self.groups.iter().map(|g| {
            let cdf = g.cdf();
            let mut pts = vec![(bin_low(lo), 0.0)];
            pts.extend((lo..=hi).map(|k| (bin_high(k), cdf[k])));
            (format!("{} ({})", g.name, g.total), pts)
        });
        line_per_group(&mut chart, lines, SeriesLabelPosition::LowerRight)
    }
}

/// White for empty, then light yellow through orange to dark red on a log scale of the count,
/// as in Brendan Gregg's latency heatmaps.
pub fn heat_colour(count: u64, max: u64) -> RGBColor {
    if count == 0 {
        return WHITE;
    }
    let t = if max <= 1 {
        1.0
    } else {
        (count as f64).ln() / (max as f64).ln()
    };
    let stops = [
        (255.0, 237.0, 160.0),
        (253.0, 141.0, 60.0),
        (189.0, 0.0, 38.0),
    ];
    let (a, b, u) = if t < 0.5 {
        (stops[0], stops[1], t * 2.0)
    } else {
        (stops[1], stops[2], (t - 0.5) * 2.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Latency heatmap: time across, log latency up, colour = faults in the cell.
pub struct LatencyHeatmap<'a> {
    pub map: &'a Heatmap,
}

impl Chart for LatencyHeatmap<'_> {
    fn name(&self) -> &str {
        "latency_heatmap"
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let m = self.map;
        let w = m.width_ns as f64 / 1e9;
        let cols = m.cells.len() as f64;
        let rows = m.cells.first().map(Vec::len).unwrap_or(1);
        // y in bin units; labels convert back to latency.
        let y0 = m.bin0 as f64;
        let y1 = (m.bin0 + rows) as f64;
        let title = format!(
            "Fault latency heatmap ({} columns of {}, max {} faults per cell)",
            m.cells.len(),
            fmt_ns(m.width_ns as f64),
            m.max
        );
        let mut chart = ChartBuilder::on(root)
            .caption(title, title_font())
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(95)
            .build_cartesian_2d(0f64..cols * w, y0..y1)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("time since first event (s)")
            .y_desc("latency (log scale)")
            .x_label_formatter(&|v| format!("{v:.3}"))
            .y_label_formatter(&|v| fmt_ns(bin_low(v.max(0.0) as usize)))
            .y_labels(((y1 - y0) as usize / SUB_BINS as usize + 1).clamp(2, 12))
            .label_style(label_font())
            .draw()?;
        chart.draw_series(m.cells.iter().enumerate().flat_map(|(i, col)| {
            col.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(move |(j, c)| {
                    let x = i as f64 * w;
                    let y = y0 + j as f64;
                    Rectangle::new([(x, y), (x + w, y + 1.0)], heat_colour(*c, m.max).filled())
                })
        }))?;
        Ok(())
    }
}

/// Events per second over time, one line per hook.
pub struct RateChart<'a> {
    pub rates: &'a Rates,
}

impl Chart for RateChart<'_> {
    fn name(&self) -> &str {
        "rate_per_hook"
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let r = self.rates;
        let w = r.width_ns as f64 / 1e9;
        let n = r.hooks.first().map(|h| h.1.len()).unwrap_or(1);
        let per_s = |c: u64| c as f64 / w;
        let ymax = r
            .hooks
            .iter()
            .flat_map(|h| h.1.iter())
            .copied()
            .max()
            .map(per_s)
            .unwrap_or(1.0)
            .max(1.0);
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Events per second by hook ({} buckets)",
                    fmt_ns(r.width_ns as f64)
                ),
                title_font(),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..(n as f64 * w).max(w), 0f64..ymax * 1.4)?;
        chart
            .configure_mesh()
            .x_desc("time since first event (s)")
            .y_desc("events / s")
            .x_label_formatter(&|v| format!("{v:.3}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(label_font())
            .draw()?;
        for (i, (hook, counts)) in r.hooks.iter().enumerate() {
            let c = colour(i);
            let pts: Vec<(f64, f64)> = counts
                .iter()
                .enumerate()
                .map(|(k, v)| ((k as f64 + 0.5) * w, per_s(*v)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
                .label(hook.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(label_font())
            .draw()?;
        Ok(())
    }
}

/// Requested (rows) against obtained (columns) cache modes, colour and number = count.
pub struct PatMatrix<'a> {
    pub requested: &'a [String],
    pub obtained: &'a [String],
    /// `counts[row][column]`.
    pub counts: &'a [Vec<u64>],
}

impl Chart for PatMatrix<'_> {
    fn name(&self) -> &str {
        "pat_matrix"
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (nr, nc) = (self.requested.len(), self.obtained.len());
        let max = self.counts.iter().flatten().copied().max().unwrap_or(1);
        let mut chart = ChartBuilder::on(root)
            .caption(
                "PAT cache mode: requested (rows) vs obtained (columns)",
                title_font(),
            )
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)?;
        let obtained = self.obtained;
        let requested = self.requested;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("obtained")
            .y_desc("requested")
            .x_labels(nc * 2 + 1)
            .y_labels(nr * 2 + 1)
            .x_label_formatter(&|v| cell_label(obtained, *v))
            .y_label_formatter(&|v| cell_label(requested, nr as f64 - v))
            .label_style(label_font())
            .draw()?;
        for (r, row) in self.counts.iter().enumerate() {
            for (c, n) in row.iter().enumerate() {
                let y = (nr - 1 - r) as f64;
                let x = c as f64;
                let fill = matrix_colour(*n, max);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.02, y + 0.02), (x + 0.98, y + 0.98)],
                    fill.filled(),
                )))?;
                let changed = requested.get(r) != obtained.get(c);
                let text = format!("{n}{}", if changed && *n > 0 { " (changed)" } else { "" });
                let centred = ("sans-serif", 18)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series(std::iter::once(Text::new(
                    text,
                    (x + 0.5, y + 0.5),
                    centred,
                )))?;
            }
        }
        Ok(())
    }
}

/// Light grey for empty, then pale to mid blue by share of the largest cell: black text on it
/// stays readable.
fn matrix_colour(n: u64, max: u64) -> RGBColor {
    if n == 0 {
        return RGBColor(245, 245, 245);
    }
    let t = n as f64 / max.max(1) as f64;
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(mix(222.0, 107.0), mix(235.0, 174.0), mix(247.0, 214.0))
}

/// Only half-integer positions are cell centres: other label positions stay blank.
fn cell_label(names: &[String], v: f64) -> String {
    let i = v - 0.5;
    if (i - i.round()).abs() < 1e-6 && i >= 0.0 {
        names.get(i.round() as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// Per-page fault time from the replay's overhead report: total split into the insert, PAT and
/// the rest, the costliest pages on top.
pub struct OverheadTop<'a> {
    pub rows: &'a [PageRow],
}

pub fn page_label(p: &PageRow) -> String {
    let page = if p.kind == "pfn" {
        format!("pfn {:#x}", p.page)
    } else {
        format!("{} {:#x}", p.kind, p.page)
    };
    match &p.driver {
        Some(d) => format!("{page} {}", d.split_whitespace().next().unwrap_or(d)),
        None => page,
    }
}

impl Chart for OverheadTop<'_> {
    fn name(&self) -> &str {
        "overhead_top"
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let n = self.rows.len().max(1);
        let xmax = self
            .rows
            .iter()
            .map(|r| r.total_ns)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let labels: Vec<String> = self.rows.iter().map(page_label).collect();
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Fault time per page, top {}", self.rows.len()),
                title_font(),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(230)
            .build_cartesian_2d(0f64..xmax * 1.05, 0f64..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("total fault time (insert | PAT | rest)")
            .x_label_formatter(&ns_label)
            .y_labels(n * 2 + 1)
            .y_label_formatter(&|v| {
                let i = n as f64 - v - 0.5;
                if (i - i.round()).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i.round() as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 12).into_font().color(&BLACK))
            .draw()?;
        let parts = [
            ("insert", colour(0)),
            ("PAT", colour(1)),
            ("rest", colour(7)),
        ];
        for (pi, (name, c)) in parts.iter().enumerate() {
            let c = *c;
            chart
                .draw_series(self.rows.iter().enumerate().map(|(i, r)| {
                    let insert = r.insert_ns.min(r.total_ns) as f64;
                    let pat = (r.pat_ns as f64).min(r.total_ns as f64 - insert);
                    let spans = [
                        (0.0, insert),
                        (insert, insert + pat),
                        (insert + pat, r.total_ns as f64),
                    ];
                    let (a, b) = spans[pi];
                    let y = (n - 1 - i) as f64;
                    Rectangle::new([(a, y + 0.15), (b, y + 0.85)], c.filled())
                }))?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(label_font())
            .draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_colours_run_from_pale_to_dark() {
        assert_eq!(heat_colour(0, 10), WHITE);
        let (a, b) = (heat_colour(1, 1000), heat_colour(1000, 1000));
        assert!(a.1 > b.1, "low counts are lighter: {a:?} vs {b:?}");
        assert_eq!(b, RGBColor(189, 0, 38));
    }

    #[test]
    fn cell_labels_only_at_centres() {
        let n = vec!["WB".to_string(), "WC".to_string()];
        assert_eq!(cell_label(&n, 0.5), "WB");
        assert_eq!(cell_label(&n, 1.5), "WC");
        assert_eq!(cell_label(&n, 1.0), "");
    }
}
