// SPDX-License-Identifier: GPL-2.0-only
//! The running scheduler's `scx_stats` server: answers a `stats` request with a [`Report`]
//! over the interval since that connection's previous request (since the scheduler started,
//! for a connection's first), and `stats_meta` with the layout of [`Report`], so that
//! `--monitor` and generic `scx_stats` clients read it as they read any sched_ext scheduler.
//!
//! Each request reads the BPF maps itself, on the server's connection thread: reading a
//! per-CPU array needs nothing from the scheduler's loop, so a slow client never delays it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use scx_stats::prelude::*;

use super::{CallbackReport, Counters, CpuReport, Report, Snapshot, StatsReader};

/// A launched server; it stops (and frees its socket) when dropped.
pub struct Server {
    server: Option<StatsServer<(), ()>>,
    path: std::path::PathBuf,
}

/// The metadata of every statistics struct, top first, as the server announces it.
pub fn metas() -> Vec<StatsMeta> {
    vec![
        Report::meta(),
        CpuReport::meta(),
        Counters::meta(),
        CallbackReport::meta(),
    ]
}

impl Server {
    /// Serves the statistics of `reader` at `path`; `started` is the baseline of each
    /// connection's first report, `class_members` counts the class at each request.
    pub fn launch(
        path: &Path,
        reader: Arc<StatsReader>,
        class_members: impl Fn() -> usize + Send + Sync + 'static,
        started: Snapshot,
    ) -> Result<Self> {
        let class_members = Arc::new(class_members);
        let mut data = StatsServerData::<(), ()>::new();
        for meta in metas() {
            data = data.add_meta(meta);
        }
        let data = data.add_ops(
            "top",
            StatsOps {
                open: Box::new(move |_| {
                    let (reader, class_members) = (reader.clone(), class_members.clone());
                    let mut last = started.clone();
                    Ok(Box::new(move |_args, _chan| {
                        let now = reader.snapshot()?;
                        let report = Report::between(&last, &now, class_members());
                        last = now;
                        report.to_json()
                    }))
                }),
                close: None,
            },
        );
        let server = StatsServer::new(data)
            .set_path(path)
            .launch()
            .with_context(|| format!("serving statistics at {}", path.display()))?;
        Ok(Self {
            server: Some(server),
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server's own drop wakes its listener through the socket: unlink only after.
        self.server.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf_intf;
    use crate::stats::{hist, monitor, NR_HISTS, NR_STATS};
    use libbpf_rs::libbpf_sys::bpf_map_create_opts;
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Real per-CPU arrays of the BPF program's `stats` and `hists` shapes.
    fn maps() -> (MapHandle, MapHandle) {
        let opts = bpf_map_create_opts {
            sz: std::mem::size_of::<bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let create = |value_size: usize, entries: usize| {
            MapHandle::create(
                MapType::PercpuArray,
                None::<&str>,
                4,
                value_size as u32,
                entries as u32,
                &opts,
            )
            .expect("creating a per-CPU array (root with BPF needed)")
        };
        (create(8, NR_STATS), create((hist::BUCKETS + 1) * 8, NR_HISTS))
    }

    fn set_stat(map: &MapHandle, idx: u32, per_cpu: u64) {
        let cpus = libbpf_rs::num_possible_cpus().unwrap();
        let values = vec![per_cpu.to_ne_bytes().to_vec(); cpus];
        map.update_percpu(&idx.to_ne_bytes(), &values, MapFlags::ANY)
            .unwrap();
    }

    #[test]
    fn a_client_gets_per_connection_intervals_from_the_maps() {
        let (stats, hists) = maps();
        let (stats_w, _hists_w) = (
            MapHandle::try_from(&stats).unwrap(),
            MapHandle::try_from(&hists).unwrap(),
        );
        let reader = Arc::new(StatsReader::new(stats, hists));
        let members = Arc::new(AtomicUsize::new(3));
        let m = members.clone();
        let dir = std::env::temp_dir().join(format!("mq-stats-serve-{}", std::process::id()));
        let path = dir.join("stats");
        let server = Server::launch(
            &path,
            reader.clone(),
            move || m.load(Ordering::Relaxed),
            reader.snapshot().unwrap(),
        )
        .unwrap();

        set_stat(&stats_w, bpf_intf::mq_stat_idx_MQ_STAT_MQ_ENQUEUE, 5);
        let mut client = monitor::connect(&path).expect("our own layout is compatible");
        let first = monitor::request(&mut client).unwrap();
        let cpus = first.cpus.len();
        assert!(cpus >= 1);
        assert_eq!(
            first.totals.mq_enqueue,
            5 * cpus as u64,
            "since the server started"
        );
        assert_eq!(first.class_members, 3);

        set_stat(&stats_w, bpf_intf::mq_stat_idx_MQ_STAT_MQ_ENQUEUE, 7);
        members.store(4, Ordering::Relaxed);
        let second = monitor::request(&mut client).unwrap();
        assert_eq!(
            second.totals.mq_enqueue,
            2 * cpus as u64,
            "since this connection's last request"
        );
        assert_eq!(second.class_members, 4);

        // Another connection has its own interval: since the server started.
        let mut other = monitor::connect(&path).unwrap();
        assert_eq!(
            monitor::request(&mut other).unwrap().totals.mq_enqueue,
            7 * cpus as u64
        );

        drop((client, other));
        drop(server);
        assert!(!path.exists(), "the socket is removed with the server");
        let err = monitor::connect(&path).err().expect("nothing serves").to_string();
        assert!(err.contains("no scx_microquanta is running"), "{err}");
        let _ = std::fs::remove_dir(&dir);
    }
}
