//! SVG plots of `cargo xtask bench sched`, and what the line plots of `bench modes` and
//! `bench pony` share: colours, the grid of panels, a line with its legend entry. All are
//! drawn with plotters' SVG backend only: no font or bitmap backends, so xtask stays quick
//! to build. Without the `ttf` feature plotters still writes every label as an SVG `<text>`
//! element (the viewer picks the font); it only estimates text widths for layout, which is
//! why the label areas are sized generously.

use std::ops::Range;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use mq_report::demo;
use mq_report::rounds::{p99_all, p99_clean, RoundRow, RoundsReport};
use mq_report::sched::{Conformance, EEVDF_REPEAT};
use mq_report::LatencySummary;
use plotters::coord::ranged1d::{AsRangedCoord, KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::sched::Summary;

const SIZE: (u32, u32) = (900, 500);
/// Series colours of every bench plot, in order: colour-blind safe (Okabe-Ito) and distinct
/// in greyscale too.
pub(crate) const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(0, 0, 0),
];
/// One panel of the line plots of `bench modes` and `bench pony`.
const PANEL: (u32, u32) = (560, 420);

/// What a panel is drawn on.
pub(super) type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
/// What drawing a panel can fail with (plotters' errors are generic over the backend).
pub(super) type PanelResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// One set of bars: one value per group, `None` where it was not measured.
struct Series {
    name: String,
    values: Vec<Option<f64>>,
}

/// Grouped bars: one cluster per group, one bar per series within it.
struct Bars {
    title: String,
    y_desc: String,
    groups: Vec<String>,
    series: Vec<Series>,
    /// How a bar's value label is written.
    label: fn(f64) -> String,
}

/// `latency.svg`: p50 and p99 wakeup latency per class, log y (EEVDF is often 100x slower).
pub fn latency(s: &Summary, path: &Path) -> Result<()> {
    let rows = s.latency_rows();
    let pick = |f: fn(&LatencySummary) -> f64| rows.iter().map(|(_, l)| l.map(f)).collect();
    let bars = Bars {
        title: format!(
            "Wakeup latency under CPU hogs ({}, {} CPUs)",
            s.accel, s.report.cpus
        ),
        y_desc: "µs (log scale)".into(),
        groups: rows
            .iter()
            .map(|(c, _)| match *c {
                EEVDF_REPEAT => "eevdf (again)".to_string(),
                c => c.to_string(),
            })
            .collect(),
        series: vec![
            Series {
                name: "p50".into(),
                values: pick(|l| l.p50),
            },
            Series {
                name: "p99".into(),
                values: pick(|l| l.p99),
            },
        ],
        label: |v| format!("{v:.0}"),
    };
    let values = bars.values();
    // Whole decades around the data; bars start at the bottom decade, not at zero.
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min).max(0.1);
    let hi = values.iter().copied().fold(0.0, f64::max).max(lo);
    let (lo, hi) = (lo.log10().floor(), hi.log10().max(lo.log10().floor() + 1.0));
    // A quarter of the height above the tallest bar keeps the legend off the bars.
    let y = 10f64.powf(lo)..10f64.powf(hi + (hi - lo) * 0.25);
    let base = y.start;
    draw(path, &bars, y.log_scale(), base)
}

/// `conformance.svg`: expected vs measured class share per (period, runtime), linear y in %.
pub fn conformance(s: &Summary, path: &Path) -> Result<()> {
    let conformance = &s.report.conformance;
    let pct =
        |f: fn(&Conformance) -> Option<f64>| conformance.iter().map(|c| f(c).map(|v| v * 100.0)).collect();
    let bars = Bars {
        title: format!("MicroQuanta CPU share next to a normal spinner ({})", s.accel),
        y_desc: "CPU share, %".into(),
        groups: conformance
            .iter()
            .map(|c| format!("{} µs every {} µs", c.runtime_us, c.period_us))
            .collect(),
        series: vec![
            Series {
                name: "expected (runtime/period)".into(),
                values: pct(|c| Some(c.expected_mq_share)),
            },
            Series {
                name: "measured class share".into(),
                values: pct(|c| Some(c.mq_share)),
            },
            Series {
                name: "normal spinner".into(),
                values: pct(|c| Some(c.other_share)),
            },
        ],
        label: |v| format!("{v:.1}"),
    };
    // Room above 100 % for the legend.
    let top = bars.values().into_iter().fold(100.0, f64::max) * 1.25;
    draw(path, &bars, 0.0..top, 0.0)
}

/// `rounds.svg`: per round, the EEVDF / MicroQuanta, SCHED_FIFO / MicroQuanta and SCHED_FIFO
/// with the scheduler loaded / MicroQuanta p99 ratios, and EEVDF's without the stalled
/// wakeups; log y, a ratio of 1 at the bottom edge or inside the plot.
pub fn rounds(r: &RoundsReport, accel: &str, path: &Path) -> Result<()> {
    let n = r.rows.iter().map(|row| row.round).max().map_or(0, |m| m + 1);
    let ratio = |round: usize, policy: &str, p99: fn(&RoundRow) -> Option<f64>| {
        let get = |p: &str| {
            r.rows
                .iter()
                .find(|x| x.round == round && x.policy == p)
                .and_then(p99)
        };
        match (get(policy), get(demo::MICROQUANTA)) {
            (Some(b), Some(m)) if m > 0.0 => Some(b / m),
            _ => None,
        }
    };
    let series = |name: &str, policy: &'static str, p99: fn(&RoundRow) -> Option<f64>| Series {
        name: name.into(),
        values: (0..n).map(|i| ratio(i, policy, p99)).collect(),
    };
    let bars = Bars {
        title: format!("p99 ratio to MicroQuanta per interleaved round ({accel})"),
        y_desc: "baseline p99 / MicroQuanta p99 (log scale)".into(),
        groups: (1..=n).map(|i| format!("round {i}")).collect(),
        series: vec![
            series("EEVDF / MicroQuanta", demo::EEVDF, p99_all),
            series(
                "EEVDF / MicroQuanta, stalled wakeups left out",
                demo::EEVDF,
                p99_clean,
            ),
            series("SCHED_FIFO / MicroQuanta", demo::FIFO, p99_all),
            series(
                "SCHED_FIFO, scheduler loaded / MicroQuanta",
                demo::FIFO_SCX,
                p99_all,
            ),
        ],
        label: |v| format!("{v:.1}"),
    };
    let values = bars.values();
    let lo = values.iter().copied().fold(1.0, f64::min).max(0.01);
    let hi = values.iter().copied().fold(1.0, f64::max);
    let (lo, hi) = (lo.log10().floor(), hi.log10().max(lo.log10().floor() + 1.0));
    let y = 10f64.powf(lo)..10f64.powf(hi + (hi - lo) * 0.25);
    let base = y.start;
    draw(path, &bars, y.log_scale(), base)
}

impl Bars {
    fn values(&self) -> Vec<f64> {
        self.series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .filter(|v| v.is_finite())
            .collect()
    }
}

/// Draws `bars` into `path` with y coordinates `y`; bars rise from `base`.
fn draw<Y>(path: &Path, bars: &Bars, y: Y, base: f64) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let n = bars.groups.len();
    if n == 0 {
        return Err(anyhow!("nothing to plot for {:?}", bars.title));
    }
    let plotting_error = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plotting_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&bars.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(Groups(bars.groups.clone()), y)
        .map_err(|e| plotting_error(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_style(("sans-serif", 15))
        .y_label_formatter(&|v| trim_number(*v))
        .y_desc(&bars.y_desc)
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(|e| plotting_error(&e))?;

    // Bars fill 80 % of a group, leaving a gap between groups.
    let width = 0.8 / bars.series.len() as f64;
    for (k, series) in bars.series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let left = |i: usize| i as f64 + 0.1 + k as f64 * width;
        let rects = series.values.iter().enumerate().filter_map(|(i, v)| {
            let v = v.filter(|v| v.is_finite())?;
            Some(Rectangle::new(
                [(left(i), base), (left(i) + width, v.max(base))],
                colour.filled(),
            ))
        });
        chart
            .draw_series(rects)
            .map_err(|e| plotting_error(&e))?
            .label(series.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
        let style = ("sans-serif", 12)
            .into_font()
            .into_text_style(&root)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        let labels = series.values.iter().enumerate().filter_map(|(i, v)| {
            let v = v.filter(|v| v.is_finite())?;
            Some(Text::new(
                (bars.label)(v),
                (left(i) + width / 2.0, v.max(base)),
                style.clone(),
            ))
        });
        chart.draw_series(labels).map_err(|e| plotting_error(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| plotting_error(&e))?;
    root.present()
        .map_err(|e| plotting_error(&e))
        .with_context(|| format!("writing {}", path.display()))
}

/// Draws `path` as a grid of `rows` x 2 panels, one row per run; `draw(area, row, column)`
/// fills each. Runs get their own panels rather than shared axes: a TCG run's absolute
/// numbers are the emulator's and would squash the native ones.
pub(super) fn panel_grid(
    path: &Path,
    rows: usize,
    mut draw: impl FnMut(&Area, usize, usize) -> PanelResult,
) -> Result<()> {
    if rows == 0 {
        bail!("nothing to plot");
    }
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (PANEL.0 * 2, PANEL.1 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = root.split_evenly((rows, 2));
    for (i, area) in areas.iter().enumerate() {
        draw(area, i / 2, i % 2).map_err(|e| err(&e))?;
    }
    root.present()
        .map_err(|e| err(&e))
        .with_context(|| format!("writing {}", path.display()))
}

/// Draws one series as a line with a dot at each point, named in the legend.
pub(super) fn line<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    name: &str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
) -> PanelResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    line_styled(chart, name, colour.stroke_width(2), points)
}

/// [`line`] in any style (a lighter or wider variant of a colour).
pub(super) fn line_styled<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    name: &str,
    style: ShapeStyle,
    points: Vec<(f64, f64)>,
) -> PanelResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    // A path element rather than LineSeries: that needs plotters' line_series feature, and
    // xtask builds plotters with the SVG backend only.
    chart
        .draw_series(std::iter::once(PathElement::new(points.clone(), style)))?
        .label(name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
    let dot = ShapeStyle {
        filled: true,
        ..style
    };
    chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, dot)))?;
    Ok(())
}

/// The legend of the [`line`]s, upper left: the line plots leave headroom above for it.
pub(super) fn line_legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
) -> PanelResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// The x axis of grouped bars: group `i` spans `[i, i + 1)` and is labelled with its name
/// at its centre, the only tick. (plotters' segmented axes place elements only at segment
/// boundaries, but bars within a group need fractional positions.)
struct Groups(Vec<String>);

impl Ranged for Groups {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = value / self.0.len().max(1) as f64;
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        // Every name, whatever the hint: a group without its label would be unreadable.
        (0..self.0.len()).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0.len() as f64
    }
}

impl ValueFormatter<f64> for Groups {
    fn format_ext(&self, value: &f64) -> String {
        self.0.get(value.floor() as usize).cloned().unwrap_or_default()
    }
}

/// Axis numbers without float noise: 1000 not 1000.0000000002, 0.5 not 0.50.
fn trim_number(v: f64) -> String {
    if v.abs() >= 1.0 || v == 0.0 {
        format!("{}", (v * 1e6).round() / 1e6)
    } else {
        format!("{v:.3}").trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::sched::tests::sample;
    use super::*;

    /// The text content of every `<text>` element of an SVG.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string()))
            .collect()
    }

    fn render(f: fn(&Summary, &Path) -> Result<()>, s: &Summary, name: &str) -> String {
        // Tests run in parallel: one folder per plot.
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        f(s, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        svg
    }

    #[test]
    fn latency_svg_labels_classes_series_and_values() {
        let svg = render(latency, &sample(), "latency.svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        let texts = texts(&svg);
        for label in [
            "eevdf",
            "fifo",
            "deadline",
            "microquanta",
            "eevdf (again)",
            "p50",
            "p99",
        ] {
            assert!(texts.iter().any(|t| t == label), "no {label:?} in {texts:?}");
        }
        // Value labels on the bars, and log decades on the y axis.
        for label in ["8000", "200", "40", "100", "1000", "10000"] {
            assert!(texts.iter().any(|t| t == label), "no {label:?} in {texts:?}");
        }
        assert!(texts.iter().any(|t| t.contains("log scale")));
        // 5 classes x 2 series, plus background, plot area and legend boxes.
        assert!(svg.matches("<rect").count() >= 10);
    }

    #[test]
    fn conformance_svg_shows_each_pair_and_the_shares() {
        let svg = render(conformance, &sample(), "conformance.svg");
        let texts = texts(&svg);
        for label in [
            "20 µs every 40 µs",
            "200 µs every 1000 µs",
            "expected (runtime/period)",
            "measured class share",
            "50.0",
            "52.0",
            "19.0",
        ] {
            assert!(texts.iter().any(|t| t == label), "no {label:?} in {texts:?}");
        }
    }

    #[test]
    fn missing_classes_leave_gaps_not_errors() {
        let mut s = sample();
        s.report.wakeup_latency_us.remove("deadline");
        let svg = render(latency, &s, "latency-gap.svg");
        assert!(texts(&svg).iter().any(|t| t == "deadline"));
        assert!(!texts(&svg).iter().any(|t| t == "150"));
    }

    #[test]
    fn axis_numbers_are_trimmed() {
        assert_eq!(trim_number(1000.0000000002), "1000");
        assert_eq!(trim_number(0.5), "0.5");
        assert_eq!(trim_number(0.0), "0");
        assert_eq!(trim_number(12.5), "12.5");
    }
}
