//! Which plots each experiment gets, as inline SVG: Pony's three (`bench pony`'s own,
//! drawn to files under `plots/` and read back), grouped bars of the interference, policy,
//! CPU-efficiency and idle-state rows ([`super::charts`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use mq_report::experiments::{Status, Summary};
use mq_report::interference::{self, ANTAGONISTS, SETUPS};
use mq_report::pony;
use serde_json::Value;

use super::charts::{self, Bars, Series};
use crate::bench::pony_plot;

/// `(experiment, [svg])` for every experiment with data, and what could not be drawn.
pub fn all(
    s: &Summary,
    reports: &BTreeMap<&str, &Value>,
    dir: &Path,
) -> (Vec<(String, Vec<String>)>, Vec<anyhow::Error>) {
    let mut plots = Vec::new();
    let mut errors = Vec::new();
    let ok = |name: &str| s.experiments.get(name).is_some_and(|e| e.status == Status::Ok);
    let mut push = |name: &str, r: Result<Vec<String>>| match r {
        Ok(svgs) if !svgs.is_empty() => plots.push((name.to_string(), svgs)),
        Ok(_) => {}
        Err(e) => errors.push(e.context(format!("{name}'s plot"))),
    };
    if let Some(v) = reports.get("pony") {
        if let Ok(r) = serde_json::from_value::<pony::Report>((*v).clone()) {
            let runs = [r];
            for (name, f) in [
                (
                    "unloaded_latency",
                    pony_plot::draw_rtt as fn(&[pony::Report], &Path) -> Result<()>,
                ),
                ("throughput", pony_plot::draw_throughput),
                ("scaling", pony_plot::draw_scaling),
            ] {
                if ok(name) {
                    let path = dir.join(format!("{name}.svg"));
                    push(name, f(&runs, &path).and_then(|()| read(&path)).map(|s| vec![s]));
                }
            }
        }
    }
    if let Some(v) = reports.get("interference") {
        if let Ok(r) = serde_json::from_value::<interference::Report>((*v).clone()) {
            if ok("interference") {
                push("interference", interference_bars(&r, false));
            }
            if ok("policy") {
                push("policy", interference_bars(&r, true));
            }
        }
    }
    for (name, series_key) in [("cpu_efficiency", "design"), ("idle_states", "mode")] {
        if ok(name) {
            if let Some(e) = s.experiments.get(name) {
                push(name, design_bars(name, series_key, &e.rows));
            }
        }
    }
    (plots, errors)
}

fn read(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // The file's XML declaration has no place inside HTML.
    Ok(match s.find("<svg") {
        Some(i) => s[i..].to_string(),
        None => s,
    })
}

/// The median over rounds of `f` for (setup, antagonist).
fn median(
    rows: &[&interference::Row],
    setup: &str,
    ant: &str,
    f: fn(&interference::Row) -> Option<f64>,
) -> Option<f64> {
    let mut v: Vec<f64> = rows
        .iter()
        .filter(|r| r.setup == setup && r.antagonist == ant)
        .filter_map(|r| f(r))
        .filter(|x| x.is_finite())
        .collect();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// p99 (log) and the antagonists' loss per antagonist and setup (or policy scheduler).
fn interference_bars(r: &interference::Report, policy: bool) -> Result<Vec<String>> {
    let rows: Vec<&interference::Row> = r
        .rows
        .iter()
        .filter(|x| SETUPS.contains(&x.setup.as_str()) != policy)
        .collect();
    let mut setups: Vec<String> = Vec::new();
    for x in &rows {
        if !setups.contains(&x.setup) {
            setups.push(x.setup.clone());
        }
    }
    let ants: Vec<&str> = ANTAGONISTS
        .iter()
        .copied()
        .filter(|a| rows.iter().any(|x| x.antagonist == *a))
        .collect();
    let series = |f: fn(&interference::Row) -> Option<f64>, ants: &[&str]| -> Vec<Series> {
        setups
            .iter()
            .map(|s| Series {
                name: s.clone(),
                values: ants.iter().map(|a| median(&rows, s, a, f)).collect(),
            })
            .collect()
    };
    let what = if policy { "scheduler" } else { "setup" };
    let mut out = vec![charts::bars(&Bars {
        title: format!("p99 round trip per antagonist and {what} (median over rounds)"),
        y_desc: "µs (log scale)".into(),
        groups: ants.iter().map(|a| a.to_string()).collect(),
        series: series(|x| Some(x.p99_us), &ants),
        log: true,
    })?];
    let hostile: Vec<&str> = ants.iter().copied().filter(|a| *a != "none").collect();
    if !policy && !hostile.is_empty() {
        out.push(charts::bars(&Bars {
            title: "antagonists' bogo-ops lost next to the engines vs alone".into(),
            y_desc: "% lost".into(),
            groups: hostile.iter().map(|a| a.to_string()).collect(),
            series: series(|x| x.antagonist_loss.map(|l| (l * 100.0).max(0.0)), &hostile),
            log: false,
        })?);
    }
    Ok(out)
}

/// Cores and p99 per series (`design`, or the idle rows' `mode`), grouped by the rows'
/// other labels (apps, load, idle).
fn design_bars(name: &str, series_key: &str, rows: &[Value]) -> Result<Vec<String>> {
    let label = |r: &Value| -> String {
        let mut parts = Vec::new();
        if let Some(a) = r.get("apps").and_then(Value::as_u64) {
            parts.push(format!("{a} apps"));
        }
        if let Some(o) = r.as_object() {
            for (k, v) in o {
                if k != series_key {
                    if let Some(s) = v.as_str() {
                        parts.push(s.to_string());
                    }
                }
            }
        }
        parts.join(" ")
    };
    let design = |r: &Value| {
        r.get("design")
            .and_then(Value::as_str)
            .unwrap_or("rows")
            .to_string()
    };
    let mut groups: Vec<String> = Vec::new();
    let mut designs: Vec<String> = Vec::new();
    for r in rows {
        let (g, d) = (label(r), design(r));
        if !groups.contains(&g) {
            groups.push(g);
        }
        if !designs.contains(&d) {
            designs.push(d);
        }
    }
    let mut out = Vec::new();
    for (key, y, log) in [
        ("cores", "CPU cores", false),
        ("p99_us", "p99 µs (log scale)", true),
    ] {
        let series: Vec<Series> = designs
            .iter()
            .map(|d| Series {
                name: d.clone(),
                values: groups
                    .iter()
                    .map(|g| {
                        rows.iter()
                            .find(|r| design(r) == *d && label(r) == *g)
                            .and_then(|r| r.get(key)?.as_f64())
                    })
                    .collect(),
            })
            .collect();
        if series.iter().all(|s| s.values.iter().all(Option::is_none)) {
            continue;
        }
        out.push(charts::bars(&Bars {
            title: format!("{name}: {key} per {series_key}"),
            y_desc: y.into(),
            groups: groups.clone(),
            series,
            log,
        })?);
    }
    Ok(out)
}
