//! `efficiency.svg` of `cargo xtask bench efficiency`: one row per load (low, medium, high),
//! two panels each: the stack's cores and the p99 round trip (log scale) against the number
//! of apps, one line per design (the library-OS baseline and Snap's three modes).

use std::path::Path;

use anyhow::Result;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use mq_report::efficiency::{find, Report, Row, DESIGNS, LOADS};

use super::efficiency::app_counts;
use super::plot::{self, Area, PanelResult, COLOURS};

/// Draws every load of `r` into `path`.
pub fn draw(r: &Report, path: &Path) -> Result<()> {
    let loads: Vec<&str> = LOADS
        .into_iter()
        .filter(|l| r.rows.iter().any(|x| x.load == *l))
        .collect();
    plot::panel_grid(path, loads.len(), |area, i, column| {
        let load = loads[i];
        match column {
            0 => panel(
                area,
                r,
                load,
                &format!("stack cores, {load} load"),
                "cores",
                false,
                |x| x.cores,
            ),
            _ => panel(
                area,
                r,
                load,
                &format!("p99 round trip, {load} load"),
                "µs (log scale)",
                true,
                |x| x.p99_us,
            ),
        }
    })
}

fn panel(
    area: &Area,
    r: &Report,
    load: &str,
    title: &str,
    y_desc: &str,
    log: bool,
    value: fn(&Row) -> f64,
) -> PanelResult {
    let apps = app_counts(r);
    let x_max = apps.last().copied().unwrap_or(8) as f64 * 1.1;
    let values: Vec<f64> = r
        .rows
        .iter()
        .filter(|x| x.load == load)
        .map(value)
        .filter(|v| v.is_finite())
        .collect();
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
        let chart = builder.build_cartesian_2d(0.0..x_max, (lo..(hi.max(lo) * 8.0)).log_scale())?;
        lines(chart, r, load, &apps, y_desc, log, value)
    } else {
        let chart = builder.build_cartesian_2d(0.0..x_max, 0.0..(hi.max(0.1) * 1.4))?;
        lines(chart, r, load, &apps, y_desc, log, value)
    }
}

/// The axes and one line per design.
fn lines<'a, 'b: 'a, Y>(
    mut chart: ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    r: &Report,
    load: &str,
    apps: &[usize],
    y_desc: &str,
    log: bool,
    value: fn(&Row) -> f64,
) -> PanelResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("apps")
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
    for (k, design) in DESIGNS.into_iter().enumerate() {
        let points: Vec<(f64, f64)> = apps
            .iter()
            .filter_map(|&n| find(&r.rows, design, n, load).map(|x| (n as f64, value(x))))
            .filter(|(_, v)| v.is_finite() && (!log || *v > 0.0))
            .collect();
        if !points.is_empty() {
            plot::line(&mut chart, design, COLOURS[k % COLOURS.len()], points)?;
        }
    }
    plot::line_legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_a_panel_pair_per_load_and_a_line_per_design() {
        let path = std::env::temp_dir().join(format!("xtask-efficiency-plot-{}.svg", std::process::id()));
        draw(&super::super::efficiency::tests::sample(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        for label in [
            "stack cores, low load",
            "p99 round trip, high load",
            "library_os",
            "compacting",
        ] {
            assert!(svg.contains(label), "no {label:?}");
        }
        // 4 designs x 2 panels x 3 loads.
        assert!(
            svg.matches("<polyline").count() >= 24,
            "{}",
            svg.matches("<polyline").count()
        );
    }
}
