//! `shaping.svg` of `cargo xtask bench pipeline`: the shaper stage's rate over time, one
//! panel per run, one line per configured rate and tenant, as a share of the configured
//! rate (so that 10 Mbit/s and 10 Gbit/s share one axis; 100 % is the target).

use std::path::Path;

use anyhow::{anyhow, Result};
use mq_report::pipeline::Report;
use plotters::prelude::*;

use super::plot::COLOURS;

const PANEL: (u32, u32) = (900, 360);

/// Draws `path` if any run has shaping rows; returns whether it did.
pub fn draw_shaping(runs: &[Report], path: &Path) -> Result<bool> {
    let runs: Vec<&Report> = runs.iter().filter(|r| !r.shaping.is_empty()).collect();
    if runs.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (PANEL.0, PANEL.1 * runs.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    for (area, run) in root.split_evenly((runs.len(), 1)).iter().zip(&runs) {
        let longest = run
            .shaping
            .iter()
            .map(|s| s.rate_over_time_mbps.len() as f64 * s.bin_ms / 1e3)
            .fold(0.1, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "shaper stage: rate over time, {} ({})",
                    run.platform.scheduler, run.platform.accel
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..longest, 0.0..130.0)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("s since the run's start")
            .y_desc("% of the configured rate")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let mut colour = 0;
        for s in &run.shaping {
            let tenants = s.rate_over_time_mbps.first().map_or(0, Vec::len);
            for t in 0..tenants {
                let style = COLOURS[colour % COLOURS.len()];
                colour += 1;
                let points: Vec<(f64, f64)> = s
                    .rate_over_time_mbps
                    .iter()
                    .enumerate()
                    .map(|(i, bin)| {
                        (
                            (i as f64 + 0.5) * s.bin_ms / 1e3,
                            100.0 * bin[t] / s.configured_mbps,
                        )
                    })
                    .collect();
                // A path element: LineSeries needs plotters' line_series feature (see plot.rs).
                chart
                    .draw_series(std::iter::once(PathElement::new(points, style.stroke_width(1))))
                    .map_err(|e| anyhow!("{e}"))?
                    .label(format!("{} Mbit/s, tenant {}", s.configured_mbps, t + 1))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(true)
}
