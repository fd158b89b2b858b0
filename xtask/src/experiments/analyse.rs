//! From the benchmark programs' reports to the experiments of `summary.json`: which rows
//! each experiment keeps, its ratios within one run (the median over rounds with their
//! spread where the program ran rounds), what the paper showed, what we measured, and the
//! verdict against the issue's targets where it sets one.

use std::collections::BTreeMap;

use mq_report::experiments::{Experiment, Ratio, Status, CPU_EFFICIENCY_KEYS};
use mq_report::interference::{self, SETUPS};
use mq_report::pony::{self, Cmp};
use mq_report::Platform;
use mq_report::{efficiency, idle};
use serde_json::Value;

/// What the Snap paper (SOSP'19) and its talk show, per experiment: context, not our numbers.
pub fn paper(name: &str) -> &'static str {
    match name {
        "unloaded_latency" => {
            "Two-node ping-pong: Pony Express 18 µs RTT interrupt-driven (under 10 µs spin-polling) \
             against 23 µs for Linux TCP, on Google's hardware with 100 Gbps NICs."
        }
        "throughput" => {
            "One Pony engine on a dedicated core: 38 Gbps on 1.05 cores for a single stream, against \
             22 Gbps on 1.2 cores for Linux TCP."
        }
        "scaling" => {
            "Ten concurrent Pony Express engines: aggregate throughput grows with the engines while \
             their tail latency stays low; the cores used grow with the load, not with the engines."
        }
        "interference" => {
            "Spreading engines depend on the scheduler: with MicroQuanta they wake within \
             microseconds and keep a low tail next to antagonists, where a fair scheduler makes \
             them wait; non-preemptible kernel activity (softirqs, syscalls) still delays them, \
             and dedicated cores avoid both at the price of the cores."
        }
        "idle_states" => {
            "C-states and non-preemptible kernel activity hurt spreading engines: a halted CPU \
             takes time to wake up, which a dedicated (polling) core never pays."
        }
        "cpu_efficiency" => {
            "The approach Snap replaced: a library-OS stack in every application, each spin-polling \
             on its own core, costs a core per application whatever its load; Snap's engines share \
             cores (spreading and compacting), so CPU follows load."
        }
        "policy" => {
            "MicroQuanta is a kernel scheduling class; here the same policy as a BPF scheduler \
             (scx_microquanta) against its userspace twin (scx_mqland, on scx_rustland_core) on the \
             interference workload."
        }
        _ => "",
    }
}

/// An experiment that produced no rows.
pub fn failed(name: &str, program: &str, error: String, seconds: f64) -> Experiment {
    Experiment {
        status: Status::Failed,
        error: Some(error),
        program: program.to_string(),
        platform: None,
        seconds,
        paper: paper(name).to_string(),
        measured: "nothing: the experiment failed".into(),
        verdict: "failed".into(),
        counters: String::new(),
        ratios: Vec::new(),
        rows: Vec::new(),
    }
}

/// An experiment `--only` left out.
pub fn skipped(name: &str, only: &str) -> Experiment {
    Experiment {
        status: Status::Skipped,
        error: Some(format!("not run: --only {only}")),
        verdict: "skipped".into(),
        measured: "not run".into(),
        ..failed(name, "", String::new(), 0.0)
    }
}

fn platform(report: &Value) -> Option<Platform> {
    serde_json::from_value(report.clone()).ok()
}

/// `met` when every ratio with a limit passes, `missed` when one does not, `measured`
/// without limits.
fn verdict(ratios: &[Ratio]) -> String {
    let judged: Vec<Option<bool>> = ratios
        .iter()
        .filter(|r| r.limit.is_some())
        .map(Ratio::pass)
        .collect();
    if judged.is_empty() {
        "measured".into()
    } else if judged.iter().all(|p| *p == Some(true)) {
        "met".into()
    } else {
        "missed".into()
    }
}

fn ok(name: &str, program: &str, report: &Value, seconds: f64, counters: String) -> Experiment {
    Experiment {
        status: Status::Ok,
        error: None,
        program: program.to_string(),
        platform: platform(report),
        seconds,
        paper: paper(name).to_string(),
        measured: String::new(),
        verdict: "measured".into(),
        counters,
        ratios: Vec::new(),
        rows: Vec::new(),
    }
}

/// A ratio of one run (no rounds).
fn single(name: String, value: Option<f64>, limit: Option<(f64, Cmp)>) -> Ratio {
    Ratio {
        name,
        value,
        min: value,
        max: value,
        rounds: usize::from(value.is_some()),
        limit: limit.map(|l| l.0),
        cmp: limit.map(|l| l.1),
    }
}

/// The median of per-round values and their spread.
fn over_rounds(name: String, values: Vec<f64>, limit: Option<(f64, Cmp)>) -> Ratio {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let median = (!v.is_empty()).then(|| {
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    });
    Ratio {
        name,
        value: median,
        min: v.first().copied(),
        max: v.last().copied(),
        rounds: v.len(),
        limit: limit.map(|l| l.0),
        cmp: limit.map(|l| l.1),
    }
}

fn div(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn target_ratio(t: &pony::Target) -> Ratio {
    single(t.name.clone(), t.value, Some((t.limit, t.cmp)))
}

fn rows_json<T: serde::Serialize>(rows: &[&T]) -> Vec<Value> {
    rows.iter().filter_map(|r| serde_json::to_value(r).ok()).collect()
}

/// The path Pony and TCP share in this run (`veth`, else `loopback`).
fn between(r: &pony::Report) -> &str {
    if r.rows.iter().any(|x| x.path == "veth") {
        "veth"
    } else {
        "loopback"
    }
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

/// Ping-pong RTT per mode vs TCP by size, from `mq-bench-pony`'s report.
pub fn unloaded_latency(report: &Value, r: &pony::Report, program: &str, seconds: f64) -> Experiment {
    let mut e = ok("unloaded_latency", program, report, seconds, r.counters.clone());
    let rows: Vec<&pony::Row> = r
        .rows
        .iter()
        .filter(|x| x.test == "ping_pong" && x.engines == 1)
        .collect();
    let path = between(r);
    let tcp = |bytes: usize| {
        rows.iter()
            .find(|x| x.transport == "tcp" && x.msg_bytes == bytes && x.path == path)
    };
    let mut sizes: Vec<usize> = rows.iter().map(|x| x.msg_bytes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for mode in mq_report::modes::MODES {
        for &bytes in &sizes {
            let best = rows
                .iter()
                .filter(|x| x.transport == "pony" && x.mode == mode && x.msg_bytes == bytes && x.path == path)
                .min_by(|a, b| a.p50_us.total_cmp(&b.p50_us));
            if let Some(p) = best {
                let v = tcp(bytes).and_then(|t| div(p.p50_us, t.p50_us));
                e.ratios.push(single(
                    format!("{} p50 RTT: Pony {mode} ({}) / TCP", pony_size(bytes), p.nic),
                    v,
                    None,
                ));
            }
        }
    }
    e.ratios.extend(
        r.targets
            .iter()
            .filter(|t| t.name.contains("RTT"))
            .map(target_ratio),
    );
    let p50 = |mode: &str| {
        rows.iter()
            .filter(|x| x.transport == "pony" && x.mode == mode && x.msg_bytes == 64 && x.path == path)
            .map(|x| x.p50_us)
            .min_by(f64::total_cmp)
    };
    let counter = |mode: &str, f: fn(&pony::Row) -> Option<f64>| {
        rows.iter()
            .filter(|x| x.mode == mode && x.msg_bytes == 64 && x.path == path)
            .min_by(|a, b| a.p50_us.total_cmp(&b.p50_us))
            .and_then(|x| f(x))
    };
    let per_rtt: Vec<String> = ["dedicated", "spreading", "compacting", "kernel"]
        .iter()
        .map(|m| {
            format!(
                "{} {} switches, {} migrations, {} µs task-clock",
                if *m == "kernel" { "TCP" } else { m },
                fmt_opt(counter(m, |x| x.ctx_switches_per_rtt), 1),
                fmt_opt(counter(m, |x| x.migrations_per_rtt), 2),
                fmt_opt(counter(m, |x| x.task_clock_us_per_rtt), 1)
            )
        })
        .collect();
    e.measured = format!(
        "64 B p50 RTT over {path}: Pony dedicated {} µs, spreading {} µs, compacting {} µs; \
         Linux TCP {} µs (best NIC per mode; {} sizes, {} to {}). Per round trip at 64 B: {}.",
        fmt_opt(p50("dedicated"), 1),
        fmt_opt(p50("spreading"), 1),
        fmt_opt(p50("compacting"), 1),
        fmt_opt(tcp(64).map(|t| t.p50_us), 1),
        sizes.len(),
        sizes.first().map_or("-".into(), |b| pony_size(*b)),
        sizes.last().map_or("-".into(), |b| pony_size(*b)),
        per_rtt.join("; "),
    );
    e.verdict = verdict(&e.ratios);
    e.rows = rows_json(&rows);
    e
}

fn pony_size(bytes: usize) -> String {
    crate::bench::pony::size_label(bytes)
}

/// One engine on a dedicated core vs TCP: Gbps and Gbps per core by size.
pub fn throughput(report: &Value, r: &pony::Report, program: &str, seconds: f64) -> Experiment {
    let mut e = ok("throughput", program, report, seconds, r.counters.clone());
    let path = between(r);
    let rows: Vec<&pony::Row> = r
        .rows
        .iter()
        .filter(|x| x.test == "throughput" && x.engines == 1)
        .collect();
    let mut sizes: Vec<usize> = rows.iter().map(|x| x.msg_bytes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut parts = Vec::new();
    for &bytes in &sizes {
        let find = |t: &str, mode: &str| {
            rows.iter()
                .filter(|x| x.transport == t && x.mode == mode && x.msg_bytes == bytes && x.path == path)
                .max_by(|a, b| a.gbps.total_cmp(&b.gbps))
        };
        let (p, t) = (find("pony", "dedicated"), find("tcp", "kernel"));
        let gpc = |x: Option<&&pony::Row>| x.and_then(|x| x.gbps_per_core);
        e.ratios.push(single(
            format!("{} Gbps per core: Pony dedicated / TCP", pony_size(bytes)),
            gpc(p).zip(gpc(t)).and_then(|(a, b)| div(a, b)),
            None,
        ));
        if let (Some(p), Some(t)) = (p, t) {
            parts.push(format!(
                "{}: {:.2} Gbps on {:.2} cores vs TCP {:.2} Gbps on {:.2}",
                pony_size(bytes),
                p.gbps,
                p.cores,
                t.gbps,
                t.cores
            ));
        }
    }
    e.ratios.extend(
        r.targets
            .iter()
            .filter(|t| t.name.contains("Gbps"))
            .map(target_ratio),
    );
    e.measured = if parts.is_empty() {
        "no Pony dedicated and TCP throughput rows at a common size".into()
    } else {
        format!("Pony, one dedicated engine, over {path}: {}.", parts.join("; "))
    };
    e.verdict = verdict(&e.ratios);
    e.rows = rows_json(&rows);
    e
}

/// 1 to N engines per host per mode: aggregate throughput, p99, cores.
pub fn scaling(report: &Value, r: &pony::Report, program: &str, seconds: f64) -> Experiment {
    let mut e = ok("scaling", program, report, seconds, r.counters.clone());
    let Some(bytes) = r
        .rows
        .iter()
        .find(|x| x.engines > 1 && x.test == "throughput")
        .map(|x| x.msg_bytes)
    else {
        return failed(
            "scaling",
            program,
            "mq-bench-pony measured no scaling rows (engines > 1)".into(),
            seconds,
        );
    };
    let rows: Vec<&pony::Row> = r
        .rows
        .iter()
        .filter(|x| x.transport == "pony" && x.test == "throughput" && x.msg_bytes == bytes)
        .collect();
    let mut parts = Vec::new();
    for mode in mq_report::modes::MODES {
        // The NIC with the most engine counts in this mode.
        let mut by_nic: BTreeMap<&str, Vec<&&pony::Row>> = BTreeMap::new();
        for x in rows.iter().filter(|x| x.mode == mode) {
            by_nic.entry(x.nic.as_str()).or_default().push(x);
        }
        for (nic, mut xs) in by_nic {
            xs.sort_by_key(|x| x.engines);
            let (Some(first), Some(last)) = (xs.first(), xs.last()) else {
                continue;
            };
            if first.engines == last.engines {
                continue;
            }
            e.ratios.push(single(
                format!("{mode} ({nic}) msgs/s, {} engines / 1", last.engines),
                div(last.msgs_per_s, first.msgs_per_s),
                None,
            ));
            e.ratios.push(single(
                format!("{mode} ({nic}) cores, {} engines / 1", last.engines),
                div(last.cores, first.cores),
                None,
            ));
            parts.push(format!(
                "{mode} ({nic}) {}→{} engines: {:.0}→{:.0} msgs/s, p99 {:.0}→{:.0} µs, {:.2}→{:.2} cores",
                first.engines,
                last.engines,
                first.msgs_per_s,
                last.msgs_per_s,
                first.p99_us,
                last.p99_us,
                first.cores,
                last.cores
            ));
        }
    }
    e.measured = format!("{} messages, per host: {}.", pony_size(bytes), parts.join("; "));
    e.rows = rows_json(&rows);
    e
}

/// Rows of the main interference experiment or of the policy experiment.
fn interference_rows(r: &interference::Report, policy: bool) -> Vec<&interference::Row> {
    r.rows
        .iter()
        .filter(|x| SETUPS.contains(&x.setup.as_str()) != policy)
        .collect()
}

/// Per round, `f(row under a) / f(row under b)` for setups/antagonists picked by `pick`.
fn per_round(
    rows: &[&interference::Row],
    a: (&str, &str),
    b: (&str, &str),
    f: fn(&interference::Row) -> f64,
) -> Vec<f64> {
    let rounds: std::collections::BTreeSet<usize> = rows.iter().map(|x| x.round).collect();
    rounds
        .into_iter()
        .filter_map(|round| {
            let find = |(setup, ant): (&str, &str)| {
                rows.iter()
                    .find(|x| x.round == round && x.setup == setup && x.antagonist == ant)
            };
            div(f(find(a)?), f(find(b)?))
        })
        .collect()
}

fn median_of(
    rows: &[&interference::Row],
    setup: &str,
    ant: &str,
    f: fn(&interference::Row) -> Option<f64>,
) -> Option<f64> {
    let v: Vec<f64> = rows
        .iter()
        .filter(|x| x.setup == setup && x.antagonist == ant)
        .filter_map(|x| f(x))
        .collect();
    over_rounds(String::new(), v, None).value
}

/// p50/p99/p99.9 of spreading engines under antagonists per scheduling setup.
pub fn interference(report: &Value, r: &interference::Report, program: &str, seconds: f64) -> Experiment {
    let mut e = ok("interference", program, report, seconds, r.counters.clone());
    let rows = interference_rows(r, false);
    if rows.is_empty() {
        return failed(
            "interference",
            program,
            "mq-bench-interference reported no rows".into(),
            seconds,
        );
    }
    let setups: Vec<&str> = SETUPS
        .iter()
        .copied()
        .filter(|s| rows.iter().any(|x| x.setup == *s))
        .collect();
    let ants: Vec<&str> = interference::ANTAGONISTS
        .iter()
        .copied()
        .filter(|a| *a != "none" && rows.iter().any(|x| x.antagonist == *a))
        .collect();
    for ant in &ants {
        for s in &setups {
            e.ratios.push(over_rounds(
                format!("p99 under {ant} / alone, {s}"),
                per_round(&rows, (s, ant), (s, "none"), |x| x.p99_us),
                None,
            ));
        }
        if setups.contains(&"microquanta") && setups.contains(&"eevdf") {
            e.ratios.push(over_rounds(
                format!("p99 under {ant}: microquanta / eevdf"),
                per_round(&rows, ("microquanta", ant), ("eevdf", ant), |x| x.p99_us),
                None,
            ));
        }
    }
    let mut parts = Vec::new();
    for ant in ants.iter().take(1) {
        let p99: Vec<String> = setups
            .iter()
            .map(|s| {
                format!(
                    "{s} {} µs",
                    fmt_opt(median_of(&rows, s, ant, |x| Some(x.p99_us)), 0)
                )
            })
            .collect();
        parts.push(format!("p99 under {ant}: {}", p99.join(", ")));
    }
    for ant in &ants {
        let loss: Vec<String> = setups
            .iter()
            .map(|s| {
                format!(
                    "{s} {}",
                    median_of(&rows, s, ant, |x| x.antagonist_loss)
                        .map_or("-".into(), |l| format!("{:.0}%", l * 100.0))
                )
            })
            .collect();
        parts.push(format!(
            "{ant} antagonist's loss of bogo-ops vs alone: {}",
            loss.join(", ")
        ));
    }
    e.measured = format!(
        "{} engine(s) at {}% of a core, {} round(s), {} stress-ng workers per antagonist. {}.",
        r.engines,
        r.offered_load,
        r.rounds,
        r.workers,
        parts.join(". ")
    );
    e.rows = rows_json(&rows);
    e
}

/// scx_microquanta vs scx_mqland (when built) on the interference workload.
pub fn policy(report: &Value, r: &interference::Report, program: &str, seconds: f64) -> Experiment {
    let mut e = ok("policy", program, report, seconds, r.counters.clone());
    let rows = interference_rows(r, true);
    let statuses: Vec<String> = r
        .schedulers
        .iter()
        .map(|s| format!("{}: {}", s.name, s.status))
        .collect();
    if rows.is_empty() {
        return failed(
            "policy",
            program,
            format!(
                "no scheduler of the policy experiment ran ({})",
                statuses.join("; ")
            ),
            seconds,
        );
    }
    // Rows come round by round, so a setup recurs: keep each once, in first-seen order.
    let names: Vec<&str> = {
        let mut n: Vec<&str> = Vec::new();
        for x in &rows {
            if !n.contains(&x.setup.as_str()) {
                n.push(x.setup.as_str());
            }
        }
        n
    };
    let ants: Vec<&str> = {
        let mut a: Vec<&str> = rows.iter().map(|x| x.antagonist.as_str()).collect();
        a.sort_unstable();
        a.dedup();
        a
    };
    if names.contains(&"scx_mqland") && names.contains(&"scx_microquanta") {
        for ant in &ants {
            e.ratios.push(over_rounds(
                format!("p99 under {ant}: scx_mqland / scx_microquanta"),
                per_round(&rows, ("scx_mqland", ant), ("scx_microquanta", ant), |x| x.p99_us),
                None,
            ));
        }
    }
    let mut p99 = Vec::new();
    for n in &names {
        for a in &ants {
            p99.push(format!(
                "{n} under {a}: p99 {} µs",
                fmt_opt(median_of(&rows, n, a, |x| Some(x.p99_us)), 0)
            ));
        }
    }
    e.measured = format!("{}. Schedulers: {}.", p99.join("; "), statuses.join("; "));
    e.rows = rows_json(&rows);
    e
}

/// The rows of a report whose schema this xtask reads as JSON (the libos helper's
/// `mq-bench-efficiency` and `mq-bench-idle`).
fn json_rows(report: &Value) -> Result<Vec<Value>, String> {
    let rows = report
        .get("rows")
        .and_then(Value::as_array)
        .ok_or("its report has no `rows` list")?;
    if rows.is_empty() {
        return Err("its report has no rows".into());
    }
    Ok(rows.clone())
}

/// N apps at low/medium/high load: library OS vs dedicated, spreading, compacting. The
/// issue's target is `mq-bench-efficiency`'s own ([`efficiency::targets`]); the rows stay
/// JSON so that the summary keeps every field the program wrote.
pub fn cpu_efficiency(report: &Value, program: &str, seconds: f64) -> Experiment {
    let rows = match json_rows(report) {
        Ok(r) => r,
        Err(why) => return failed("cpu_efficiency", program, why, seconds),
    };
    for (i, row) in rows.iter().enumerate() {
        if let Some(k) = CPU_EFFICIENCY_KEYS.iter().find(|k| row.get(**k).is_none()) {
            return failed(
                "cpu_efficiency",
                program,
                format!("row {i} has no `{k}`"),
                seconds,
            );
        }
    }
    let r: efficiency::Report = match serde_json::from_value(report.clone()) {
        Ok(r) => r,
        Err(e) => {
            return failed(
                "cpu_efficiency",
                program,
                format!("its report does not match its schema: {e}"),
                seconds,
            )
        }
    };
    let mut e = ok("cpu_efficiency", program, report, seconds, r.counters.clone());
    e.ratios
        .extend(efficiency::targets(&r.rows).iter().map(target_ratio));
    let apps = r.rows.iter().map(|x| x.apps).max().unwrap_or(0);
    let lib = efficiency::find(&r.rows, "library_os", apps, "low");
    for design in ["dedicated", "spreading", "compacting"] {
        let d = efficiency::find(&r.rows, design, apps, "low");
        let v = d.zip(lib).and_then(|(d, l)| div(d.cores, l.cores));
        // The spread: the extremes of the per-round CPU of both rows.
        let (min, max) = match (d, lib) {
            (Some(d), Some(l)) => (div(d.cores_min, l.cores_max), div(d.cores_max, l.cores_min)),
            _ => (None, None),
        };
        e.ratios.push(Ratio {
            name: format!("cores at low load, {apps} apps: {design} / library_os"),
            value: v,
            min,
            max,
            rounds: r.rounds,
            limit: None,
            cmp: None,
        });
    }
    let comp = efficiency::find(&r.rows, "compacting", apps, "low");
    let cores = comp.zip(lib).and_then(|(c, l)| div(c.cores, l.cores));
    let p99 = comp.zip(lib).and_then(|(c, l)| div(c.p99_us, l.p99_us));
    e.measured = format!(
        "{apps} apps at low load: library OS {} cores (p99 {} µs), compacting Snap {} cores (p99 {} µs): \
         {}x the cores at {}x the p99 ({} rows, {} round(s); {}).",
        fmt_opt(lib.map(|x| x.cores), 2),
        fmt_opt(lib.map(|x| x.p99_us), 0),
        fmt_opt(comp.map(|x| x.cores), 2),
        fmt_opt(comp.map(|x| x.p99_us), 0),
        fmt_opt(cores, 2),
        fmt_opt(p99, 2),
        rows.len(),
        r.rounds,
        r.oversubscribed
    );
    e.verdict = verdict(&e.ratios);
    e.rows = rows;
    e
}

/// Spreading vs dedicated with idle CPUs halting vs polling.
pub fn idle_states(report: &Value, program: &str, seconds: f64) -> Experiment {
    let rows = match json_rows(report) {
        Ok(r) => r,
        Err(why) => return failed("idle_states", program, why, seconds),
    };
    let r: idle::Report = match serde_json::from_value(report.clone()) {
        Ok(r) => r,
        Err(e) => {
            return failed(
                "idle_states",
                program,
                format!("its report does not match its schema: {e}"),
                seconds,
            )
        }
    };
    let mut e = ok("idle_states", program, report, seconds, r.counters.clone());
    for eff in &r.effects {
        e.ratios.push(single(
            format!("p50, {}: idle states allowed / polling", eff.mode),
            eff.p50_ratio,
            None,
        ));
        e.ratios.push(single(
            format!("p99, {}: idle states allowed / polling", eff.mode),
            eff.p99_ratio,
            None,
        ));
    }
    let p99 = |mode: &str, idle_: &str| idle::find(&r.rows, mode, idle_).map(|x| x.p99_us);
    e.measured = format!(
        "p99 RTT, idle states allowed vs polling: spreading {} vs {} µs, dedicated {} vs {} µs \
         ({}; idle states: {}). What it models: {} What it does not: {}",
        fmt_opt(p99("spreading", "allowed"), 0),
        fmt_opt(p99("spreading", "polling"), 0),
        fmt_opt(p99("dedicated", "allowed"), 0),
        fmt_opt(p99("dedicated", "polling"), 0),
        r.mechanism,
        if r.idle_states.is_empty() {
            "none listed".to_string()
        } else {
            r.idle_states
                .iter()
                .map(|s| format!("{} ({} µs exit)", s.name, s.exit_latency_us))
                .collect::<Vec<_>>()
                .join(", ")
        },
        r.models,
        r.does_not_model
    );
    e.rows = rows;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_give_a_median_and_a_spread_and_limits_a_verdict() {
        let r = over_rounds(
            "x".into(),
            vec![3.0, 1.0, 2.0, f64::NAN],
            Some((2.5, Cmp::AtMost)),
        );
        assert_eq!(
            (r.value, r.min, r.max, r.rounds),
            (Some(2.0), Some(1.0), Some(3.0), 3)
        );
        assert_eq!(verdict(std::slice::from_ref(&r)), "met");
        let even = over_rounds("x".into(), vec![1.0, 4.0], None);
        assert_eq!(even.value, Some(2.5));
        assert_eq!(verdict(&[r.clone(), even.clone()]), "met");
        let missed = single("y".into(), Some(3.0), Some((2.5, Cmp::AtMost)));
        assert_eq!(verdict(&[r, missed]), "missed");
        assert_eq!(verdict(&[even]), "measured");
        let unmeasured = single("z".into(), None, Some((1.0, Cmp::AtLeast)));
        assert_eq!(verdict(&[unmeasured]), "missed");
    }

    fn efficiency_row(design: &str, cores: f64, p99: f64) -> efficiency::Row {
        efficiency::Row {
            design: design.into(),
            apps: 8,
            load: "low".into(),
            offered_msgs_per_s: 1000.0,
            msgs_per_s: 1000.0,
            sent: 1000,
            received: 1000,
            p50_us: p99 / 3.0,
            p99_us: p99,
            p99_9_us: p99 * 2.0,
            max_us: p99 * 3.0,
            cores,
            cores_min: cores * 0.5,
            cores_max: cores * 2.0,
            p99_min_us: p99,
            p99_max_us: p99,
            app_cores: 0.1,
            peer_cores: 0.1,
            ctx_switches_per_op: None,
            migrations_per_op: None,
            task_clock_us_per_op: None,
            rounds: 3,
        }
    }

    fn efficiency_report(rows: Vec<efficiency::Row>) -> Value {
        let targets = efficiency::targets(&rows);
        serde_json::to_value(efficiency::Report {
            platform: Platform {
                machine: "m".into(),
                kernel: "k".into(),
                accel: "native".into(),
                scheduler: "eevdf".into(),
                cpus: 2,
            },
            path: "veth".into(),
            nic: "udp".into(),
            msg_bytes: 64,
            rounds: 3,
            seconds: 1.0,
            warmup_ms: 100,
            layout: "l".into(),
            peer: "p".into(),
            counters: "c".into(),
            oversubscribed: "8 spinning apps on 2 CPUs".into(),
            rows,
            targets,
        })
        .unwrap()
    }

    #[test]
    fn cpu_efficiency_takes_the_issue_target_and_the_spread_from_the_rows() {
        let report = efficiency_report(vec![
            efficiency_row("library_os", 8.0, 20.0),
            efficiency_row("compacting", 1.6, 30.0),
            efficiency_row("dedicated", 2.0, 15.0),
            efficiency_row("spreading", 1.2, 60.0),
        ]);
        let e = cpu_efficiency(&report, "mq-bench-efficiency (native)", 1.0);
        assert_eq!(e.status, Status::Ok, "{:?}", e.error);
        assert_eq!(e.ratios[0].value, Some(0.2));
        assert_eq!(e.ratios[1].value, Some(1.5));
        assert_eq!(e.verdict, "met");
        assert!(e.measured.contains("0.20x the cores"), "{}", e.measured);
        let comp = e
            .ratios
            .iter()
            .find(|r| r.name == "cores at low load, 8 apps: compacting / library_os" && r.limit.is_none())
            .unwrap();
        // Per-round extremes: 0.8 / 16 and 3.2 / 4.
        assert_eq!((comp.min, comp.max), (Some(0.05), Some(0.8)));
        assert_eq!(e.rows[0]["design"], "library_os");
        let worse = efficiency_report(vec![
            efficiency_row("library_os", 8.0, 20.0),
            efficiency_row("compacting", 1.6, 50.0),
        ]);
        assert_eq!(cpu_efficiency(&worse, "p", 1.0).verdict, "missed");
        let broken = serde_json::json!({"rows": [{"design": "library_os"}]});
        let e = cpu_efficiency(&broken, "p", 1.0);
        assert_eq!(e.status, Status::Failed);
        assert!(e.error.unwrap().contains("no `apps`"));
        assert_eq!(
            cpu_efficiency(&serde_json::json!({}), "p", 1.0).status,
            Status::Failed
        );
    }

    fn row(setup: &str, antagonist: &str, round: usize, p99: f64) -> interference::Row {
        interference::Row {
            setup: setup.into(),
            mode: "spreading".into(),
            antagonist: antagonist.into(),
            round,
            p50_us: p99 / 4.0,
            p99_us: p99,
            p999_us: p99 * 2.0,
            max_us: p99 * 3.0,
            ops_per_s: 1000.0,
            cores: 0.2,
            antagonist_ops_per_s: (antagonist != "none").then_some(10.0),
            antagonist_loss: (antagonist != "none").then_some(0.1),
            ctx_switches_per_op: 1.0,
            migrations_per_op: 0.0,
            task_clock_us_per_op: 20.0,
            cycles_per_op: None,
        }
    }

    fn interference_report(
        rows: Vec<interference::Row>,
        schedulers: &[(&str, &str)],
    ) -> interference::Report {
        interference::Report {
            platform: Platform {
                machine: "m".into(),
                kernel: "k".into(),
                accel: "tcg".into(),
                scheduler: "eevdf".into(),
                cpus: 2,
            },
            work_ns: 1,
            engines: 2,
            offered_load: 50,
            seconds: 1.0,
            warmup_ms: 1,
            rounds: 2,
            stress_ng: "stress-ng".into(),
            workers: 4,
            counters: "c".into(),
            rows,
            alone: Vec::new(),
            schedulers: schedulers
                .iter()
                .map(|(n, s)| interference::SchedulerRun {
                    name: n.to_string(),
                    status: s.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn interference_ratios_pair_rows_of_the_same_round() {
        let rows = vec![
            row("eevdf", "none", 0, 10.0),
            row("eevdf", "cpu", 0, 100.0),
            row("microquanta", "none", 0, 10.0),
            row("microquanta", "cpu", 0, 20.0),
            row("eevdf", "none", 1, 20.0),
            row("eevdf", "cpu", 1, 100.0),
            row("microquanta", "none", 1, 10.0),
            row("microquanta", "cpu", 1, 40.0),
            row("scx_microquanta", "cpu", 0, 30.0),
        ];
        let r = interference_report(rows, &[("scx_microquanta", "ran"), ("scx_mqland", "not built")]);
        let v = serde_json::to_value(&r).unwrap();
        let e = interference(&v, &r, "mq-bench-interference (vm)", 5.0);
        assert_eq!(e.status, Status::Ok);
        assert_eq!(
            e.rows.len(),
            8,
            "the policy rows are not the interference experiment's"
        );
        let get = |name: &str| e.ratios.iter().find(|x| x.name == name).unwrap().clone();
        let eevdf = get("p99 under cpu / alone, eevdf");
        assert_eq!(
            (eevdf.value, eevdf.min, eevdf.max, eevdf.rounds),
            (Some(7.5), Some(5.0), Some(10.0), 2)
        );
        let mq = get("p99 under cpu: microquanta / eevdf");
        assert_eq!((mq.min, mq.max), (Some(0.2), Some(0.4)));
        assert_eq!(e.platform.unwrap().accel, "tcg");
        let p = policy(&v, &r, "mq-bench-interference (vm)", 5.0);
        assert_eq!(p.status, Status::Ok);
        assert_eq!(p.rows.len(), 1);
        assert!(p.measured.contains("scx_mqland: not built"), "{}", p.measured);
        assert!(p.ratios.is_empty(), "no mqland rows, so no ratio");
        let none = interference_report(vec![row("eevdf", "none", 0, 1.0)], &[("scx_mqland", "not built")]);
        let p = policy(&serde_json::to_value(&none).unwrap(), &none, "p", 1.0);
        assert_eq!(p.status, Status::Failed);
        assert!(p.error.unwrap().contains("scx_mqland: not built"));
    }

    /// Rows come round by round: each scheduler and antagonist is described once.
    #[test]
    fn policy_names_each_scheduler_once_across_rounds() {
        let r = interference_report(
            vec![
                row("scx_microquanta", "cpu", 0, 1.0),
                row("scx_mqland", "cpu", 0, 2.0),
                row("scx_microquanta", "cpu", 1, 1.0),
                row("scx_mqland", "cpu", 1, 4.0),
            ],
            &[("scx_microquanta", "ran"), ("scx_mqland", "ran")],
        );
        let p = policy(&serde_json::to_value(&r).unwrap(), &r, "p", 1.0);
        assert_eq!(p.status, Status::Ok);
        assert_eq!(
            p.measured.matches("scx_mqland under cpu").count(),
            1,
            "{}",
            p.measured
        );
        assert_eq!(p.ratios.len(), 1);
    }
}
