//! The report a person reads: `index.html` (one self-contained page: inline SVG plots,
//! tables, a paragraph per experiment, no scripts and nothing fetched) and `report.md` (the
//! same text and tables, without the plots), from the summary and the plots.

use std::fmt::Write as _;

use mq_report::experiments::{Experiment, Ratio, Status, Summary, NAMES};
use mq_report::pony::Cmp;
use serde_json::Value;

/// Headings, in report order.
pub fn title(name: &str) -> &'static str {
    match name {
        "unloaded_latency" => "1. Unloaded latency",
        "throughput" => "2. Throughput",
        "scaling" => "3. Scaling",
        "interference" => "4. Interference",
        "idle_states" => "5. Idle states",
        "cpu_efficiency" => "6. CPU efficiency: the library-OS baseline",
        "policy" => "7. Userspace vs BPF policy",
        _ => "?",
    }
}

/// How to read the report, at its top.
const HOW_TO_READ: &str = "Each section is one experiment of the Snap paper (SOSP'19): what the \
    paper showed (its numbers, on Google's hardware, not ours), what we measured, on which \
    machine, kernel and accelerator, the verdict against the issue's target where there is one, \
    the ratios within one run (median over rounds, with the spread), plots and the rows. Only \
    ratios within one run mean much here: the machine is shared, and in a TCG VM absolute times \
    are the emulator's. summary.json has everything, per experiment.";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ratio_cells(r: &Ratio) -> [String; 4] {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let spread = match (r.min, r.max) {
        (Some(a), Some(b)) if r.rounds > 1 => format!("{a:.2}–{b:.2} ({} rounds)", r.rounds),
        _ => format!("{} round(s)", r.rounds),
    };
    let target = match (r.limit, r.cmp) {
        (Some(l), Some(Cmp::AtMost)) => format!("≤ {l} {}", pass_word(r.pass())),
        (Some(l), Some(Cmp::AtLeast)) => format!("≥ {l} {}", pass_word(r.pass())),
        _ => String::new(),
    };
    [r.name.clone(), f(r.value), spread, target]
}

fn pass_word(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "(met)",
        Some(false) => "(missed)",
        None => "(not measured)",
    }
}

fn platform_line(e: &Experiment) -> String {
    match &e.platform {
        Some(p) => format!(
            "{} · {} · kernel {} · accel {} · engines under {} · {:.0} s",
            e.program, p.machine, p.kernel, p.accel, p.scheduler, e.seconds
        ),
        None => format!("{} · {:.0} s", e.program, e.seconds),
    }
}

/// Columns of the rows table: the keys of the first row with a scalar value, in its order.
fn columns(rows: &[Value]) -> Vec<String> {
    rows.first()
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter(|(_, v)| !v.is_object() && !v.is_array())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                if f.abs() >= 100.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.3}")
                }
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The page.
pub fn html(s: &Summary, plots: &[(String, Vec<String>)]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>microquanta-snap: the Snap paper's experiments</title>\n<style>\n\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}\n\
         table{{border-collapse:collapse;margin:0.6em 0;font-size:0.85em}}\n\
         td,th{{border:1px solid #bbb;padding:2px 6px;text-align:right}}\n\
         td:first-child,th:first-child{{text-align:left}}\n\
         .ok{{color:#006e3c}} .failed{{color:#b00020}} .skipped{{color:#777}}\n\
         .verdict{{font-weight:bold}} figure{{margin:0.5em 0}} svg{{max-width:100%;height:auto}}\n\
         details{{margin:0.4em 0}} .meta{{color:#555;font-size:0.9em}}\n</style></head><body>\n\
         <h1>The Snap paper's experiments on microquanta-snap</h1>\n<p class=\"meta\">{} · \
         {} · kernel {} · {} · {:.0} s</p>\n<p>{}</p>\n",
        esc(&s.generated),
        esc(&s.host),
        esc(&s.kernel),
        if s.quick {
            "quick run (--quick)"
        } else {
            "full run"
        },
        s.seconds,
        esc(HOW_TO_READ)
    );
    h.push_str("<table><tr><th>experiment</th><th>status</th><th>verdict</th></tr>\n");
    for name in NAMES {
        if let Some(e) = s.experiments.get(name) {
            let _ = writeln!(
                h,
                "<tr><td><a href=\"#{name}\">{}</a></td><td class=\"{}\">{}</td><td>{}</td></tr>",
                title(name),
                status_class(e.status),
                status_class(e.status),
                esc(&e.verdict)
            );
        }
    }
    h.push_str("</table>\n");
    for name in NAMES {
        let Some(e) = s.experiments.get(name) else {
            continue;
        };
        let _ = writeln!(h, "<section id=\"{name}\"><h2>{}</h2>", title(name));
        let _ = writeln!(
            h,
            "<p class=\"meta\">{} · <span class=\"{}\">{}</span> · verdict <span class=\"verdict\">{}</span></p>",
            esc(&platform_line(e)),
            status_class(e.status),
            status_class(e.status),
            esc(&e.verdict)
        );
        if let Some(err) = &e.error {
            let _ = writeln!(h, "<p class=\"{}\">{}</p>", status_class(e.status), esc(err));
        }
        let _ = writeln!(h, "<p><b>The paper:</b> {}</p>", esc(&e.paper));
        let _ = writeln!(h, "<p><b>We measured:</b> {}</p>", esc(&e.measured));
        for svg in plots.iter().filter(|(n, _)| n == name).flat_map(|(_, s)| s) {
            let _ = writeln!(h, "<figure>{svg}</figure>");
        }
        if !e.ratios.is_empty() {
            h.push_str("<table><tr><th>ratio</th><th>value</th><th>spread</th><th>target</th></tr>\n");
            for r in &e.ratios {
                let c = ratio_cells(r).map(|c| esc(&c));
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    c[0], c[1], c[2], c[3]
                );
            }
            h.push_str("</table>\n");
        }
        if !e.counters.is_empty() {
            let _ = writeln!(h, "<p class=\"meta\">Counters: {}</p>", esc(&e.counters));
        }
        if !e.rows.is_empty() {
            let cols = columns(&e.rows);
            let _ = write!(h, "<details><summary>{} rows</summary><table><tr>", e.rows.len());
            for c in &cols {
                let _ = write!(h, "<th>{}</th>", esc(c));
            }
            h.push_str("</tr>\n");
            for row in &e.rows {
                h.push_str("<tr>");
                for c in &cols {
                    let _ = write!(h, "<td>{}</td>", esc(&cell(row.get(c).unwrap_or(&Value::Null))));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table></details>\n");
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
    }
}

/// `report.md`: the page's text and tables.
pub fn markdown(s: &Summary) -> String {
    let mut md = String::from("# The Snap paper's experiments on microquanta-snap\n\n");
    let _ = writeln!(
        md,
        "{} · {} · kernel {} · {} · {:.0} s\n\n{HOW_TO_READ}\n",
        s.generated,
        s.host,
        s.kernel,
        if s.quick {
            "quick run (--quick)"
        } else {
            "full run"
        },
        s.seconds
    );
    md.push_str("| experiment | status | verdict |\n|---|---|---|\n");
    for name in NAMES {
        if let Some(e) = s.experiments.get(name) {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                title(name),
                status_class(e.status),
                e.verdict
            );
        }
    }
    for name in NAMES {
        let Some(e) = s.experiments.get(name) else {
            continue;
        };
        let _ = writeln!(
            md,
            "\n## {}\n\n{} · **{}** · verdict **{}**\n",
            title(name),
            platform_line(e),
            status_class(e.status),
            e.verdict
        );
        if let Some(err) = &e.error {
            let _ = writeln!(md, "> {}\n", err.replace('\n', "\n> "));
        }
        let _ = writeln!(
            md,
            "**The paper:** {}\n\n**We measured:** {}\n",
            e.paper, e.measured
        );
        if !e.ratios.is_empty() {
            md.push_str("| ratio | value | spread | target |\n|---|---|---|---|\n");
            for r in &e.ratios {
                let c = ratio_cells(r);
                let _ = writeln!(md, "| {} | {} | {} | {} |", c[0], c[1], c[2], c[3]);
            }
            md.push('\n');
        }
        if !e.counters.is_empty() {
            let _ = writeln!(md, "Counters: {}\n", e.counters);
        }
    }
    md
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use mq_report::experiments::Ratio;

    use super::*;

    /// A summary with every experiment: the first failed, the others with a row and a ratio.
    pub fn summary() -> Summary {
        let mut experiments = BTreeMap::new();
        for (i, name) in NAMES.iter().enumerate() {
            let mut e = crate::experiments::analyse::failed(
                name,
                "mq-bench-x (native)",
                "it broke <badly>".into(),
                3.0,
            );
            if i > 0 {
                e.status = Status::Ok;
                e.error = None;
                e.verdict = "measured".into();
                e.measured = format!("{name} measured");
                e.rows = vec![
                    serde_json::json!({"design": "library_os", "apps": 8, "load": "low",
                    "cores": 8.0, "p50_us": 5.5, "p99_us": 9.25, "nested": {"x": 1}}),
                ];
                e.ratios = vec![Ratio {
                    name: "a / b".into(),
                    value: Some(0.2),
                    min: Some(0.1),
                    max: Some(0.3),
                    rounds: 3,
                    limit: Some(0.25),
                    cmp: Some(Cmp::AtMost),
                }];
            }
            experiments.insert(name.to_string(), e);
        }
        Summary {
            generated: "2026-12-04T15:00:00Z".into(),
            quick: true,
            host: "Test CPU (2 CPUs)".into(),
            kernel: "6.18".into(),
            build: "release".into(),
            seconds: 61.0,
            experiments,
        }
    }

    #[test]
    fn the_page_has_every_experiment_escaped_with_its_plots_and_tables() {
        let s = summary();
        let plot = "<svg width=\"10\" height=\"10\"><rect width=\"5\" height=\"5\"/></svg>".to_string();
        let html = html(&s, &[("interference".into(), vec![plot.clone()])]);
        for name in NAMES {
            assert!(html.contains(&format!("<section id=\"{name}\">")), "{name}");
            assert!(html.contains(title(name)), "{name}");
        }
        assert!(html.contains("it broke &lt;badly&gt;"), "errors are escaped");
        assert!(!html.contains("<badly>"));
        assert_eq!(html.matches(&plot).count(), 1);
        assert!(
            html.contains("<td>0.20</td><td>0.10–0.30 (3 rounds)</td><td>≤ 0.25 (met)</td>"),
            "{html}"
        );
        assert!(html.contains("<th>design</th>") && !html.contains("<th>nested</th>"));
        assert!(!html.contains("<script"), "self-contained and static");
        let md = markdown(&s);
        assert!(md.contains("## 6. CPU efficiency: the library-OS baseline"));
        assert!(
            md.contains("| a / b | 0.20 | 0.10–0.30 (3 rounds) | ≤ 0.25 (met) |"),
            "{md}"
        );
        assert!(md.contains("> it broke <badly>"));
    }
}
