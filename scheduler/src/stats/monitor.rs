// SPDX-License-Identifier: GPL-2.0-only
//! `--monitor SECS`: an `scx_stats` client of the running scheduler (a separate process), which
//! prints what `--stats SECS` prints. It first checks that the server speaks our layout: the
//! socket is shared by every sched_ext scheduler, and another scheduler, or another build of
//! this one, would otherwise be misread.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mq_class::sysfs;
use scx_stats::prelude::*;

use super::serve::metas;
use super::Report;

/// How long one request may take (a loaded TCG guest is slow, a hung server is an error).
const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Connects to the server at `path` and checks its layout.
pub fn connect(path: &Path) -> Result<StatsClient> {
    let mut client = match StatsClient::new()
        .set_path(path)
        .connect(Some(REQUEST_TIMEOUT_MS))
    {
        Ok(c) => c,
        Err(e) => {
            let not_served = matches!(
                e.downcast_ref::<std::io::Error>().map(|e| e.kind()),
                Some(ErrorKind::NotFound | ErrorKind::ConnectionRefused)
            );
            if not_served {
                bail!(
                    "no scx_microquanta is running: nothing serves statistics at {} (sched_ext state: {:?})",
                    path.display(),
                    sysfs::state()
                );
            }
            return Err(e).with_context(|| format!("connecting to {} (root needed?)", path.display()));
        }
    };
    let served: BTreeMap<String, StatsMeta> = client
        .request("stats_meta", vec![])
        .with_context(|| format!("asking {} for its statistics layout", path.display()))?;
    check_layout(&served).with_context(|| {
        format!(
            "the scheduler serving {} is not a compatible scx_microquanta (another scheduler or build)",
            path.display()
        )
    })?;
    Ok(client)
}

/// Errors unless the served layout has every struct and field ours has, of the same kind.
pub fn check_layout(served: &BTreeMap<String, StatsMeta>) -> Result<()> {
    for ours in metas() {
        let theirs = served
            .get(&ours.name)
            .ok_or_else(|| anyhow!("it serves no `{}` statistics", ours.name))?;
        for (field, f) in &ours.fields {
            let same = theirs
                .fields
                .get(field)
                .is_some_and(|t| t.data.to_string() == f.data.to_string());
            if !same {
                bail!("its `{}.{field}` is missing or not a {}", ours.name, f.data);
            }
        }
    }
    Ok(())
}

/// One [`Report`] over the interval since this connection's previous request.
pub fn request(client: &mut StatsClient) -> Result<Report> {
    client
        .request("stats", vec![])
        .context("scx_microquanta is no longer running (its statistics request failed)")
}

/// Prints a report every `secs` seconds until `shutdown`, or until whoever reads our output
/// has gone (`--monitor | head -1`, a benchmark that took its one report): a closed pipe is an
/// end, not an error.
pub fn run(
    path: &Path,
    secs: f64,
    print: impl Fn(&Report) -> std::io::Result<()>,
    shutdown: &AtomicBool,
) -> Result<()> {
    let mut client = connect(path)?;
    // The first answer covers the time since the scheduler started: it only opens the first
    // interval, so that every printed report covers `secs`.
    request(&mut client)?;
    let interval = Duration::from_secs_f64(secs);
    let mut opened = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if opened.elapsed() < interval {
            continue;
        }
        match print(&request(&mut client)?) {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            printed => printed.context("printing a report")?,
        }
        opened = Instant::now();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CpuReport;

    fn ours() -> BTreeMap<String, StatsMeta> {
        metas().into_iter().map(|m| (m.name.clone(), m)).collect()
    }

    #[test]
    fn our_own_layout_is_compatible() {
        check_layout(&ours()).unwrap();
    }

    #[test]
    fn another_schedulers_or_builds_layout_is_refused_with_what_differs() {
        let mut other = ours();
        other.remove("Report");
        let err = check_layout(&other).unwrap_err().to_string();
        assert!(err.contains("no `Report`"), "{err}");

        let mut older = ours();
        older.get_mut("CpuReport").unwrap().fields.remove("yield_p99_us");
        let err = check_layout(&older).unwrap_err().to_string();
        assert!(err.contains("CpuReport.yield_p99_us"), "{err}");

        let mut retyped = ours();
        let counters = retyped.get_mut("Counters").unwrap();
        let float = CpuReport::meta().fields["mq_share"].clone();
        counters.fields.insert("mq_enqueue".into(), float);
        let err = check_layout(&retyped).unwrap_err().to_string();
        assert!(
            err.contains("Counters.mq_enqueue") && err.contains("u64"),
            "{err}"
        );
    }
}
