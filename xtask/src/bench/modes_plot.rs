//! `modes.svg` of `cargo xtask bench modes`: per run (EEVDF native, MicroQuanta in the VM), one
//! row of two panels, p99 round trip (log scale) and engine cores against offered load, one
//! line per mode. Runs get their own panels rather than shared axes: a TCG run's absolute
//! times are the emulator's and would squash the native ones.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;

use super::modes::{Row, Run};

/// Per mode, in [`super::modes::MODES`] order (Okabe-Ito, as in the sched plots).
const COLOURS: [RGBColor; 3] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
];
const PANEL: (u32, u32) = (560, 420);

/// Draws every run into `path`.
pub fn draw(runs: &[Run], path: &Path) -> Result<()> {
    if runs.is_empty() {
        bail!("nothing to plot");
    }
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let size = (PANEL.0 * 2, PANEL.1 * runs.len() as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let rows = root.split_evenly((runs.len(), 2));
    for (i, run) in runs.iter().enumerate() {
        let title = format!("{} ({})", run.scheduler, run.accel);
        panel(
            &rows[2 * i],
            run,
            &format!("p99 round trip, {title}"),
            "µs (log scale)",
            true,
            |r| r.p99_us,
        )
        .map_err(|e| err(&e))?;
        panel(
            &rows[2 * i + 1],
            run,
            &format!("engine cores, {title}"),
            "cores",
            false,
            |r| r.cores,
        )
        .map_err(|e| err(&e))?;
    }
    root.present()
        .map_err(|e| err(&e))
        .with_context(|| format!("writing {}", path.display()))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel(
    area: &Area,
    run: &Run,
    title: &str,
    y_desc: &str,
    log: bool,
    value: fn(&Row) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let loads = run.loads();
    let x_max = f64::from(loads.last().copied().unwrap_or(100)) * 1.1;
    let values: Vec<f64> = run.rows.iter().map(value).filter(|v| v.is_finite()).collect();
    let hi = values.iter().copied().fold(0.0, f64::max);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let series = |mode: &str| -> Vec<(f64, f64)> {
        loads
            .iter()
            .filter_map(|&l| run.row(mode, l).map(|r| (f64::from(l), value(r))))
            .filter(|(_, v)| v.is_finite() && (!log || *v > 0.0))
            .collect()
    };
    macro_rules! plot {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("offered load, % of one core")
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| {
                    if *v >= 10.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.2}")
                    }
                })
                .y_desc(y_desc)
                .axis_desc_style(("sans-serif", 14))
                .draw()?;
            for (k, mode) in run.modes().into_iter().enumerate() {
                let colour = COLOURS[k % COLOURS.len()];
                let points = series(mode);
                // A path element rather than LineSeries: that needs plotters' line_series
                // feature, and xtask builds plotters with the SVG backend only.
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        points.clone(),
                        colour.stroke_width(2),
                    )))?
                    .label(mode)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, colour.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()?;
        }};
    }
    if log {
        let lo = values
            .iter()
            .copied()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let lo = if lo.is_finite() { lo / 2.0 } else { 1.0 };
        // Headroom above for the legend.
        plot!(builder.build_cartesian_2d(0.0..x_max, (lo..(hi.max(lo) * 8.0)).log_scale())?);
    } else {
        plot!(builder.build_cartesian_2d(0.0..x_max, 0.0..(hi.max(1.0) * 1.3))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::modes::tests::sample_runs;
    use super::*;

    #[test]
    fn svg_has_a_panel_pair_per_run_and_a_line_per_mode() {
        let runs: Vec<Run> = sample_runs()
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        let dir = std::env::temp_dir().join(format!("xtask-modes-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("modes.svg");
        draw(&runs, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        for label in [
            "p99 round trip, eevdf (native)",
            "engine cores, microquanta (tcg)",
            "dedicated",
            "spreading",
            "compacting",
        ] {
            assert!(svg.contains(label), "no {label:?}");
        }
        // One polyline per mode and panel.
        assert!(
            svg.matches("<polyline").count() >= 12,
            "{}",
            svg.matches("<polyline").count()
        );
    }
}
