//! `modes.svg` of `cargo xtask bench modes`: per run (EEVDF native, MicroQuanta in the VM), one
//! row of two panels, p99 round trip (log scale) and engine cores against offered load, one
//! line per mode. Runs get their own panels rather than shared axes: a TCG run's absolute
//! times are the emulator's and would squash the native ones.

use std::path::Path;

use anyhow::Result;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use mq_report::modes::{Report, Row};

use super::modes::Lookup as _;
use super::plot::{self, Area, PanelResult, COLOURS};

/// Draws every run into `path`.
pub fn draw(runs: &[Report], path: &Path) -> Result<()> {
    plot::panel_grid(path, runs.len(), |area, i, column| {
        let run = &runs[i];
        let title = format!("{} ({})", run.platform.scheduler, run.platform.accel);
        match column {
            0 => panel(
                area,
                run,
                &format!("p99 round trip, {title}"),
                "µs (log scale)",
                true,
                |r| r.p99_us,
            ),
            _ => panel(
                area,
                run,
                &format!("engine cores, {title}"),
                "cores",
                false,
                |r| r.cores,
            ),
        }
    })
}

fn panel(
    area: &Area,
    run: &Report,
    title: &str,
    y_desc: &str,
    log: bool,
    value: fn(&Row) -> f64,
) -> PanelResult {
    let x_max = f64::from(run.loads().last().copied().unwrap_or(100)) * 1.1;
    let values: Vec<f64> = run.rows.iter().map(value).filter(|v| v.is_finite()).collect();
    let hi = values.iter().copied().fold(0.0, f64::max);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if log {
        let lo = values
            .iter()
            .copied()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let lo = if lo.is_finite() { lo / 2.0 } else { 1.0 };
        // Headroom above for the legend.
        let chart = builder.build_cartesian_2d(0.0..x_max, (lo..(hi.max(lo) * 8.0)).log_scale())?;
        lines(chart, run, y_desc, log, value)
    } else {
        let chart = builder.build_cartesian_2d(0.0..x_max, 0.0..(hi.max(1.0) * 1.3))?;
        lines(chart, run, y_desc, log, value)
    }
}

/// The axes and one line per mode, on a linear or a log y axis.
fn lines<'a, 'b: 'a, Y>(
    mut chart: ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    run: &Report,
    y_desc: &str,
    log: bool,
    value: fn(&Row) -> f64,
) -> PanelResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
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
    let loads = run.loads();
    // Per mode, in [`mq_report::modes::MODES`] order.
    for (k, mode) in run.modes().into_iter().enumerate() {
        let points = loads
            .iter()
            .filter_map(|&l| run.row(mode, l).map(|r| (f64::from(l), value(r))))
            .filter(|(_, v)| v.is_finite() && (!log || *v > 0.0))
            .collect();
        plot::line(&mut chart, mode, COLOURS[k % COLOURS.len()], points)?;
    }
    plot::line_legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::super::modes::tests::sample_runs;
    use super::*;

    #[test]
    fn svg_has_a_panel_pair_per_run_and_a_line_per_mode() {
        let runs: Vec<Report> = sample_runs()
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
