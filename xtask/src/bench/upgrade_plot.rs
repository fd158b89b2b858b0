//! The plot of `cargo xtask bench upgrade`: `rtt_over_time.svg`, one panel per flow count,
//! the ping-pong's round trips against time (each bin's median and maximum, log y) with
//! each upgrade marked where `snapctl upgrade` ran (a failed one in grey). The bins'
//! maximum is what shows a blackout: the round trip that waited through it.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use mq_report::upgrade::{Report, Run};
use plotters::prelude::*;

use super::plot::{line_legend, Area, PanelResult, COLOURS};

/// One panel: wide, since time runs over tens of seconds.
const PANEL: (u32, u32) = (1200, 380);
const UPGRADE: RGBColor = RGBColor(213, 94, 0);

pub fn draw_rtt_over_time(r: &Report, path: &Path) -> Result<()> {
    if r.runs.is_empty() {
        bail!("nothing to plot");
    }
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (PANEL.0, PANEL.1 * r.runs.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    for (area, run) in root.split_evenly((r.runs.len(), 1)).iter().zip(&r.runs) {
        panel(area, run, r).map_err(|e| err(&e))?;
    }
    root.present()
        .map_err(|e| err(&e))
        .with_context(|| format!("writing {}", path.display()))
}

fn panel(area: &Area, run: &Run, r: &Report) -> PanelResult {
    let ms = |us: f64| us / 1e3;
    let values: Vec<f64> = run
        .rtt
        .iter()
        .flat_map(|b| [ms(b.p50_us), ms(b.max_us)])
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() {
        (lo / 2.0, hi * 4.0)
    } else {
        (0.01, 100.0)
    };
    let end_s = run
        .rtt
        .last()
        .map(|b| b.t_ms)
        .into_iter()
        .chain(run.upgrades.iter().map(|u| u.at_ms + u.snapctl_ms))
        .fold(0.0, f64::max)
        / 1e3
        + 0.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "ping-pong round trip over time, {} flows, host A upgraded {} times ({}, {})",
                run.flows,
                run.upgrades.len(),
                r.path,
                r.platform.scheduler
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end_s, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time since the apps started, s")
        .y_desc("round trip, ms (log scale)")
        .y_label_formatter(&|v| match *v {
            v if v >= 10.0 => format!("{v:.0}"),
            v if v >= 0.01 => format!("{v:.2}"),
            v => format!("{v:.0e}"),
        })
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for (i, u) in run.upgrades.iter().enumerate() {
        let x = u.at_ms / 1e3;
        let colour = if u.error.is_some() {
            RGBColor(150, 150, 150)
        } else {
            UPGRADE
        };
        let style = colour.mix(0.6).stroke_width(1);
        let s = chart.draw_series(std::iter::once(PathElement::new([(x, lo), (x, hi)], style)))?;
        if i == 0 {
            s.label("upgrade (snapctl starts)")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
        }
    }
    for (name, colour, pick) in [
        (
            "bin max",
            COLOURS[0],
            (|b| b.max_us) as fn(&mq_report::upgrade::RttBin) -> f64,
        ),
        ("bin median", COLOURS[2], |b| b.p50_us),
    ] {
        let style = colour.stroke_width(1);
        let points: Vec<(f64, f64)> = run.rtt.iter().map(|b| (b.t_ms / 1e3, ms(pick(b)))).collect();
        chart
            .draw_series(std::iter::once(PathElement::new(points, style)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
    }
    line_legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_panel_per_flow_count_with_the_upgrades_marked() {
        let report = super::super::upgrade::tests::sample();
        let path = std::env::temp_dir().join(format!("xtask-upgrade-plot-{}.svg", std::process::id()));
        draw_rtt_over_time(&report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        for flows in [1, 1000] {
            assert!(
                svg.contains(&format!("{flows} flows, host A upgraded")),
                "panel for {flows}"
            );
        }
        assert!(svg.contains("upgrade (snapctl starts)"));
        // Upgrade markers: 3 + 4 vertical lines, in the upgrade colour or grey (the failed one).
        let marks = svg.matches("stroke=\"#D55E00\"").count() + svg.matches("stroke=\"#969696\"").count();
        assert!(marks >= 7, "{marks} markers");
        let empty = Report {
            runs: vec![],
            ..report
        };
        assert!(draw_rtt_over_time(&empty, &path).is_err());
    }
}
