//! `idle.svg` of `cargo xtask bench idle`: two panels, p50 and p99 round trip (log scale)
//! with idle states allowed and with idle CPUs kept polling, one line per engine mode.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use mq_report::idle::{find, Report, Row, IDLE, MODES};

use super::plot::{self, Area, PanelResult, COLOURS};

pub fn draw(r: &Report, path: &Path) -> Result<()> {
    plot::panel_grid(path, 1, |area, _, column| match column {
        0 => panel(area, r, "p50 round trip", |x| x.p50_us),
        _ => panel(area, r, "p99 round trip", |x| x.p99_us),
    })
}

fn panel(area: &Area, r: &Report, title: &str, value: fn(&Row) -> f64) -> PanelResult {
    let values: Vec<f64> = r
        .rows
        .iter()
        .map(value)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let lo = if lo.is_finite() { lo / 2.0 } else { 1.0 };
    let hi = values.iter().copied().fold(lo, f64::max) * 8.0;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title}, {}", r.platform.scheduler), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..1.5, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(2)
        .x_desc("idle CPUs")
        .x_label_formatter(&|v: &f64| IDLE.get(v.round() as usize).copied().unwrap_or("").to_string())
        .y_label_formatter(&|v| {
            if *v >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .y_desc("µs (log scale)")
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for (k, mode) in MODES.into_iter().enumerate() {
        let points: Vec<(f64, f64)> = IDLE
            .iter()
            .enumerate()
            .filter_map(|(i, idle)| find(&r.rows, mode, idle).map(|x| (i as f64, value(x))))
            .filter(|(_, v)| v.is_finite() && *v > 0.0)
            .collect();
        if !points.is_empty() {
            plot::line(&mut chart, mode, COLOURS[k % COLOURS.len()], points)?;
        }
    }
    plot::line_legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_both_panels_and_a_line_per_mode() {
        let path = std::env::temp_dir().join(format!("xtask-idle-plot-{}.svg", std::process::id()));
        draw(&super::super::idle::tests::sample(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        for label in [
            "p50 round trip, eevdf",
            "p99 round trip",
            "dedicated",
            "spreading",
        ] {
            assert!(svg.contains(label), "no {label:?}");
        }
        assert!(svg.matches("<polyline").count() >= 4);
    }
}
