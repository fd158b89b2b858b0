// SPDX-License-Identifier: GPL-2.0-only
//! How each engine mode is set up, in one place: which CPUs the apps and each host's engines
//! get ([`Layout`]) and the two hosts' runtimes with `n` Pony engines each ([`Hosts::start`]).
//! How apps wait for completions is here too ([`attach`], [`next`]). A new way to place
//! engines (several hosts' engines on one dedicated core) or to wait (apps' spin-then-block)
//! is a change here and nowhere else.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mq_report::modes::MODES;
use pony_engine::{PonyConfig, PonyEngine};
use pony_express::app::{AppSession, Completion, Completions};
use snap_runtime::{CompactingParams, Engine, EngineHandle, GroupSpec, Mode, Runtime, RuntimeOptions};

use super::path::NicPair;
use super::{AppWait, BenchConfig};

/// Which CPUs the apps and engines get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub cpus: usize,
    /// Dedicated mode runs both hosts' engines on one thread ([`BenchConfig::shared_engine_core`]).
    pub shared_engine_core: bool,
}

impl Layout {
    /// App A's and app B's CPUs: pinned apart from the engines on 4 CPUs or more.
    pub fn app_cores(&self) -> (Option<usize>, Option<usize>) {
        if self.cpus >= 4 {
            (Some(0), Some(1))
        } else {
            (None, None)
        }
    }

    /// Engine cores of host A and host B for `mode` (empty: any).
    pub fn engine_cores(&self, mode: &str) -> Result<(Vec<usize>, Vec<usize>)> {
        let last = self.cpus - 1;
        let other = self.cpus.saturating_sub(2);
        let not_apps: Vec<usize> = if self.cpus >= 4 {
            (2..self.cpus).collect()
        } else {
            (0..self.cpus).collect()
        };
        Ok(match mode {
            "dedicated" if self.shared_engine_core => (vec![last], vec![last]),
            "dedicated" => (vec![last], vec![other]),
            "spreading" => (Vec::new(), Vec::new()),
            "compacting" => (not_apps.clone(), not_apps),
            other => bail!("unknown mode {other:?} (expected one of {MODES:?})"),
        })
    }

    pub fn describe(&self) -> String {
        let (a, b) = self.engine_cores("dedicated").unwrap_or_default();
        let apps = match self.app_cores() {
            (Some(a), Some(b)) => format!("app A on CPU {a}, echo app B on CPU {b}"),
            _ => "apps unpinned".into(),
        };
        let dedicated = if self.shared_engine_core {
            format!("both hosts' dedicated engines on one thread on CPU {a:?}")
        } else {
            format!(
                "dedicated engines on CPU {a:?} (A) and {b:?} (B), all of a host's engines on its one core"
            )
        };
        let mut s = format!(
            "{} CPUs; {apps}; {dedicated}; compacting on {}; spreading anywhere (a thread per \
             engine); floor threads on CPUs 0 and {}",
            self.cpus,
            if self.cpus >= 4 { "CPUs 2.." } else { "every CPU" },
            self.cpus.min(2) - 1
        );
        if self.cpus < 4 {
            s.push_str("; fewer than 4 CPUs: apps share CPUs with the engines");
        }
        s
    }
}

fn mode_of(name: &str) -> Result<Mode> {
    Ok(match name {
        "dedicated" => Mode::Dedicated,
        "spreading" => Mode::Spreading,
        "compacting" => Mode::Compacting,
        other => bail!("unknown mode {other:?}"),
    })
}

/// The two hosts' runtimes and their engines, pair by pair: one runtime per host, or one
/// for both when their dedicated engines share a thread ([`BenchConfig::shared_engine_core`]).
pub struct Hosts {
    runtimes: Vec<Runtime>,
    /// Engine `i` of host A and engine `i` of host B, joined by pair `i`'s NICs.
    pub pairs: Vec<(EngineHandle, EngineHandle)>,
}

impl Hosts {
    /// Starts host A and host B in `mode`, one Pony engine per NIC pair on each, all of a
    /// host's engines in one group (in dedicated mode with a shared engine core, both hosts'
    /// engines in one group: one thread polls them all, the other CPUs are the apps').
    pub fn start(cfg: &BenchConfig, layout: &Layout, mode: &str, nics: Vec<NicPair>) -> Result<Self> {
        let m = mode_of(mode)?;
        let (cores_a, cores_b) = layout.engine_cores(mode)?;
        let n = nics.len();
        let mut ea: Vec<Box<dyn Engine>> = Vec::new();
        let mut eb: Vec<Box<dyn Engine>> = Vec::new();
        for (i, pair) in nics.into_iter().enumerate() {
            ea.push(Box::new(PonyEngine::new(
                format!("pony-a{i}"),
                pair.a,
                PonyConfig::default(),
            )));
            eb.push(Box::new(PonyEngine::new(
                format!("pony-b{i}"),
                pair.b,
                PonyConfig::default(),
            )));
        }
        let start = |name: &str, engines, cores| -> Result<Runtime> {
            let spec = GroupSpec {
                name: name.into(),
                mode: m,
                cores,
                engines,
                compacting: CompactingParams::default(),
                idle_poll: match m {
                    Mode::Dedicated => Duration::ZERO,
                    _ => cfg.idle_poll.unwrap_or(m.default_idle_poll()),
                },
                microquanta_group: None,
            };
            let options = RuntimeOptions {
                microquanta: cfg.microquanta,
                ..Default::default()
            };
            Runtime::start(vec![spec], options).with_context(|| format!("starting {name}"))
        };
        let runtimes = if m == Mode::Dedicated && layout.shared_engine_core {
            ea.append(&mut eb);
            vec![start("hosts-ab", ea, cores_a)?]
        } else {
            vec![start("host-a", ea, cores_a)?, start("host-b", eb, cores_b)?]
        };
        let find = |name: String| {
            runtimes
                .iter()
                .find_map(|rt| rt.engine(&name))
                .with_context(|| format!("{name} missing"))
        };
        let pairs = (0..n)
            .map(|i| Ok((find(format!("pony-a{i}"))?, find(format!("pony-b{i}"))?)))
            .collect::<Result<_>>()?;
        Ok(Self { runtimes, pairs })
    }

    /// The tids of both hosts' engine threads.
    pub fn engine_tids(&self) -> Vec<i32> {
        self.runtimes
            .iter()
            .flat_map(|rt| rt.status().groups)
            .flat_map(|g| g.threads)
            .map(|t| t.tid)
            .collect()
    }

    pub fn shutdown(self) {
        drop(self.pairs);
        for rt in self.runtimes {
            drop(rt.shutdown());
        }
    }
}

/// Attaches an app to engine `h`: its completions are polled ([`AppWait::Spin`]) or come
/// with a doorbell it blocks on after its spin.
pub fn attach(h: &EngineHandle, wait: AppWait) -> Result<(u64, AppSession)> {
    let completions = match wait {
        AppWait::Spin => Completions::Poll,
        AppWait::SpinThenBlock(_) => Completions::Block,
    };
    let (id, mut session) = h
        .control::<PonyEngine, _>(move |e| e.attach_local(completions))
        .map_err(|e| anyhow!("attach: {e}"))?
        .map_err(|e| anyhow!("attach: {e}"))?;
    if let AppWait::SpinThenBlock(spin) = wait {
        session.set_completion_spin(spin);
    }
    Ok((id, session))
}

/// The next completion within `timeout`: spinning, or the session's spin-then-block wait.
pub fn next(app: &mut AppSession, wait: AppWait, timeout: Duration) -> Result<Option<Completion>> {
    if let AppWait::SpinThenBlock(_) = wait {
        return Ok(app.wait_completion(timeout)?);
    }
    let start = Instant::now();
    loop {
        if let Some(c) = app.poll_completion()? {
            return Ok(Some(c));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let l = Layout {
            cpus: 4,
            shared_engine_core: false,
        };
        assert_eq!(l.app_cores(), (Some(0), Some(1)));
        assert_eq!(l.engine_cores("dedicated").unwrap(), (vec![3], vec![2]));
        assert_eq!(l.engine_cores("compacting").unwrap().0, vec![2, 3]);
        assert!(l.engine_cores("lazy").is_err());
        let two = Layout {
            cpus: 2,
            shared_engine_core: false,
        };
        assert_eq!(two.engine_cores("dedicated").unwrap(), (vec![1], vec![0]));
        let shared = Layout {
            shared_engine_core: true,
            ..two
        };
        assert_eq!(shared.engine_cores("dedicated").unwrap(), (vec![1], vec![1]));
        assert!(shared
            .describe()
            .contains("both hosts' dedicated engines on one thread on CPU [1]"));
        assert!(two.describe().contains("fewer than 4 CPUs"));
        let one = Layout {
            cpus: 1,
            shared_engine_core: false,
        };
        assert_eq!(one.engine_cores("dedicated").unwrap(), (vec![0], vec![0]));
    }
}
