//! The plots of `cargo xtask bench pony`: `rtt.svg` (per run, p50 and p99 ping-pong round
//! trip against message size, log-log, one line per series: Pony per mode and NIC, TCP,
//! sockperf, the shared-memory floor), `throughput.svg` (per run, Gbps and Gbps per core
//! against message size) and `scaling.svg` (per run, aggregate msgs/s and msgs/s per core
//! against engines per host). A series' colour is its mode (or transport); the shm wire is
//! a lighter shade of it and AF_XDP a wider line. Runs get their own panels: a TCG run's
//! absolute numbers are the emulator's.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::plot::{self, Area, PanelResult, COLOURS};
use mq_report::pony::{Report, Row};

use super::pony::{series_style, Lookup as _};

/// Name, points.
type Series = (String, Vec<(f64, f64)>);

/// The line style of `series` ([`series_style`]).
fn style(series: &str) -> ShapeStyle {
    let (colour, variant) = series_style(series);
    let c = COLOURS[colour % COLOURS.len()];
    match variant {
        1 => c.mix(0.45).stroke_width(2),
        2 => c.stroke_width(4),
        _ => c.stroke_width(2),
    }
}

/// Log-axis ticks fall on powers of ten: `100 B`, `10 kB`, `1 MB`.
fn decimal_size(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{} MB", v / 1e6),
        v if v >= 1e3 => format!("{} kB", v / 1e3),
        v => format!("{v:.0} B"),
    }
}

/// One panel's job.
struct Panel<'r> {
    run: &'r Report,
    test: &'static str,
    title: String,
    y_desc: &'static str,
    value: fn(&Row) -> Option<f64>,
}

pub fn draw_rtt(runs: &[Report], path: &Path) -> Result<()> {
    draw(runs, path, |run| {
        let t = format!("{} ({})", run.platform.scheduler, run.platform.accel);
        [
            Panel {
                run,
                test: "ping_pong",
                title: format!("p50 round trip, {t}"),
                y_desc: "µs (log scale)",
                value: |r| Some(r.p50_us),
            },
            Panel {
                run,
                test: "ping_pong",
                title: format!("p99 round trip, {t}"),
                y_desc: "µs (log scale)",
                value: |r| Some(r.p99_us),
            },
        ]
    })
}

pub fn draw_throughput(runs: &[Report], path: &Path) -> Result<()> {
    draw(runs, path, |run| {
        let t = format!("{} ({})", run.platform.scheduler, run.platform.accel);
        [
            Panel {
                run,
                test: "throughput",
                title: format!("throughput, {t}"),
                y_desc: "Gbps, one direction (log scale)",
                value: |r| Some(r.gbps),
            },
            Panel {
                run,
                test: "throughput",
                title: format!("Gbps per core, {t}"),
                y_desc: "Gbps / core (log scale)",
                value: |r| r.gbps_per_core,
            },
        ]
    })
}

fn draw<'r>(runs: &'r [Report], path: &Path, panels: impl Fn(&'r Report) -> [Panel<'r>; 2]) -> Result<()> {
    plot::panel_grid(path, runs.len(), |area, i, column| {
        let [left, right] = panels(&runs[i]);
        panel(area, if column == 0 { &left } else { &right })
    })
}

fn panel(area: &Area, p: &Panel) -> PanelResult {
    let sizes = p.run.sizes(p.test);
    // Loopback rows of a veth run are single continuity points: tables only.
    let series: Vec<Series> = p
        .run
        .series(p.test)
        .into_iter()
        .filter(|s| !s.ends_with(" loopback"))
        .map(|s| {
            let points = sizes
                .iter()
                .filter_map(|&b| {
                    let v = (p.value)(p.run.row(&s, p.test, b)?)?;
                    (v.is_finite() && v > 0.0).then_some((b as f64, v))
                })
                .collect();
            (s, points)
        })
        .collect();
    let values: Vec<f64> = series.iter().flat_map(|s| s.1.iter().map(|p| p.1)).collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() {
        (lo / 2.0, hi.max(lo) * 8.0)
    } else {
        (0.1, 10.0)
    };
    let x_lo = sizes.first().map_or(32.0, |&b| b as f64 / 2.0);
    let x_hi = sizes.last().map_or(2e6, |&b| b as f64 * 2.0);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("message size")
        .x_label_formatter(&|v| decimal_size(*v))
        .y_label_formatter(&|v| match *v {
            v if v >= 10.0 => format!("{v:.0}"),
            v if v >= 0.01 => format!("{v:.2}"),
            v => format!("{v:.0e}"),
        })
        .y_desc(p.y_desc)
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    // Styles follow the series' names, so a series keeps its colour when others are missing.
    for (name, points) in series {
        plot::line_styled(&mut chart, &name, style(&name), points)?;
    }
    plot::line_legend(&mut chart)
}

/// `scaling.svg`: per run, aggregate msgs/s (left) and msgs/s per core (right) against
/// engines per host, one line per mode and NIC.
pub fn draw_scaling(runs: &[Report], path: &Path) -> Result<()> {
    plot::panel_grid(path, runs.len(), |area, i, column| {
        let run = &runs[i];
        let per_core = column == 1;
        let series: Vec<Series> = run
            .scaling()
            .into_iter()
            .map(|(s, rows)| {
                let points = rows
                    .iter()
                    .filter_map(|r| {
                        let v = if per_core {
                            (r.cores > 0.0).then(|| r.msgs_per_s / r.cores)?
                        } else {
                            r.msgs_per_s
                        };
                        v.is_finite().then_some((r.engines as f64, v))
                    })
                    .collect();
                (s, points)
            })
            .collect();
        let x_hi = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0))
            .fold(2.0, f64::max)
            + 0.5;
        let y_hi = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.4;
        let t = format!("{} ({})", run.platform.scheduler, run.platform.accel);
        let title = if per_core {
            format!("msgs/s per core, {t}")
        } else {
            format!("aggregate msgs/s, {t}")
        };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5..x_hi, 0.0..y_hi)?;
        chart
            .configure_mesh()
            .x_desc("Pony engines per host")
            .y_desc(if per_core { "msgs/s / core" } else { "msgs/s" })
            .y_label_formatter(&|v| format!("{:.0}k", v / 1e3))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        for (name, points) in series {
            plot::line_styled(&mut chart, &name, style(&name), points)?;
        }
        plot::line_legend(&mut chart)
    })
}

#[cfg(test)]
mod tests {
    use super::super::pony::tests::sample_runs;
    use super::*;

    #[test]
    fn plots_have_a_panel_pair_per_run_and_a_line_per_series() {
        let runs: Vec<Report> = sample_runs()
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        let dir = std::env::temp_dir().join(format!("xtask-pony-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (rtt, tput) = (dir.join("rtt.svg"), dir.join("throughput.svg"));
        draw_rtt(&runs, &rtt).unwrap();
        draw_throughput(&runs, &tput).unwrap();
        let rtt = std::fs::read_to_string(&rtt).unwrap();
        let tput = std::fs::read_to_string(&tput).unwrap();
        for label in [
            "p50 round trip, eevdf (native)",
            "p99 round trip, microquanta (tcg)",
            "pony spreading udp",
            "pony dedicated shm",
            "sockperf",
            "shm_floor",
        ] {
            assert!(rtt.contains(label), "no {label:?}");
        }
        assert!(tput.contains("Gbps per core, eevdf (native)"));
        // 6 series × 2 panels × 2 runs (sockperf's single point still gets its path).
        assert!(
            rtt.matches("<polyline").count() >= 24,
            "{}",
            rtt.matches("<polyline").count()
        );
        let scaling = dir.join("scaling.svg");
        draw_scaling(&runs, &scaling).unwrap();
        let scaling = std::fs::read_to_string(&scaling).unwrap();
        assert!(scaling.contains("aggregate msgs/s, eevdf (native)"));
        assert!(scaling.contains("msgs/s per core, microquanta (tcg)"));
        assert!(scaling.contains("pony spreading udp"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
