//! The report's own plots, drawn with plotters' SVG backend into strings that the HTML
//! report inlines: grouped bars (one cluster per group, one bar per series, linear or log
//! y). Pony's plots are `bench pony`'s ([`crate::bench::pony_plot`]), drawn to files and
//! inlined the same way.

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::bench::plot::COLOURS;

const SIZE: (u32, u32) = (900, 460);

/// One set of bars: a value per group, `None` where it was not measured.
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// A grouped bar chart.
pub struct Bars {
    pub title: String,
    pub y_desc: String,
    pub groups: Vec<String>,
    pub series: Vec<Series>,
    /// Log y axis (latencies that differ 100x between setups).
    pub log: bool,
}

/// `v` with 3 significant digits at most, no trailing zeros.
fn short(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The chart as one `<svg>` element.
pub fn bars(b: &Bars) -> Result<String> {
    let values: Vec<f64> = b
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .filter(|v| v.is_finite() && (!b.log || *v > 0.0))
        .collect();
    if b.groups.is_empty() || values.is_empty() {
        bail!("nothing to plot for {:?}", b.title);
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let mut svg = String::new();
    {
        let err = |e: &dyn std::fmt::Display| anyhow!("plotting {:?}: {e}", b.title);
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let n = b.groups.len();
        let groups = b.groups.clone();
        let x_fmt = move |x: &f64| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 1e-6 && i >= 0.0 && (i as usize) < groups.len() {
                groups[i as usize].clone()
            } else {
                String::new()
            }
        };
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&b.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        let width = 0.8 / b.series.len().max(1) as f64;
        let style = ("sans-serif", 11)
            .into_font()
            .into_text_style(&root)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        // The two axis kinds are different types: draw through one closure per kind.
        macro_rules! draw {
            ($chart:expr, $base:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_labels(n * 2 + 1)
                    .x_label_formatter(&x_fmt)
                    .y_label_formatter(&|v| short(*v))
                    .y_desc(&b.y_desc)
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(|e| err(&e))?;
                for (k, s) in b.series.iter().enumerate() {
                    let colour = COLOURS[k % COLOURS.len()];
                    let left = |i: usize| i as f64 + 0.1 + k as f64 * width;
                    let ok = |v: &Option<f64>| v.filter(|v| v.is_finite() && (!b.log || *v > 0.0));
                    let rects = s.values.iter().enumerate().filter_map(|(i, v)| {
                        let v = ok(v)?;
                        Some(Rectangle::new(
                            [(left(i), $base), (left(i) + width, v)],
                            colour.filled(),
                        ))
                    });
                    chart
                        .draw_series(rects)
                        .map_err(|e| err(&e))?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
                    let labels = s.values.iter().enumerate().filter_map(|(i, v)| {
                        let v = ok(v)?;
                        Some(Text::new(
                            short(v),
                            (left(i) + width / 2.0, v),
                            style.clone(),
                        ))
                    });
                    chart.draw_series(labels).map_err(|e| err(&e))?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.9))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 13))
                    .draw()
                    .map_err(|e| err(&e))?;
            }};
        }
        if b.log {
            let lo = (min / 2.0).max(1e-9);
            let chart = builder
                .build_cartesian_2d(0.0..n as f64, (lo..max * 3.0).log_scale())
                .map_err(|e| err(&e))?;
            draw!(chart, lo);
        } else {
            let chart = builder
                .build_cartesian_2d(0.0..n as f64, 0.0..max * 1.15)
                .map_err(|e| err(&e))?;
            draw!(chart, 0.0);
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(log: bool) -> Bars {
        Bars {
            title: "p99 under antagonists".into(),
            y_desc: "µs".into(),
            groups: vec!["none".into(), "cpu".into()],
            series: vec![
                Series {
                    name: "eevdf".into(),
                    values: vec![Some(40.0), Some(4000.0)],
                },
                Series {
                    name: "microquanta".into(),
                    values: vec![Some(35.0), None],
                },
            ],
            log,
        }
    }

    #[test]
    fn bars_are_one_svg_with_every_group_series_and_value() {
        for log in [false, true] {
            let svg = bars(&chart(log)).unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
            assert_eq!(svg.matches("<svg").count(), 1);
            for text in [
                "none",
                "cpu",
                "eevdf",
                "microquanta",
                "4000",
                "35",
                "p99 under antagonists",
            ] {
                assert!(
                    svg.contains(&format!(">{text}<")) || svg.contains(text),
                    "{text} missing"
                );
            }
            // 3 measured bars + 2 legend swatches + the background and legend box.
            assert!(svg.matches("<rect").count() >= 5, "{svg}");
        }
    }

    #[test]
    fn a_chart_without_values_is_an_error() {
        let mut c = chart(true);
        for s in &mut c.series {
            s.values = vec![None, Some(0.0)];
        }
        assert!(bars(&c).is_err());
        assert_eq!(short(1234.4), "1234");
        assert_eq!(short(12.34), "12.3");
        assert_eq!(short(0.5), "0.5");
    }
}
