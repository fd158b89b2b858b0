//! What a host reports about its engine runtime: the control plane's `status` answer and
//! the runtime's final report at shutdown. Plain serde types, defined here so that clients
//! parse the same structs the runtime fills without depending on the runtime.

use serde::{Deserialize, Serialize};

/// The whole host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Seconds since the runtime started.
    pub uptime_s: f64,
    /// Whether the MicroQuanta scheduler was loaded when the runtime started.
    pub microquanta_loaded: bool,
    /// One entry per engine group.
    pub groups: Vec<GroupStatus>,
}

impl Status {
    /// The engine called `name`, in any group.
    pub fn engine(&self, name: &str) -> Option<&EngineStatus> {
        self.groups
            .iter()
            .flat_map(|g| &g.engines)
            .find(|e| e.name == name)
    }

    /// Engines that failed or are stuck, with what happened.
    pub fn unhealthy(&self) -> Vec<&EngineStatus> {
        self.groups
            .iter()
            .flat_map(|g| &g.engines)
            .filter(|e| e.health != EngineHealth::Ok)
            .collect()
    }
}

/// One engine group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Group name from the configuration.
    pub name: String,
    /// `dedicated`, `spreading` or `compacting`.
    pub mode: String,
    /// The cores it was given (dedicated: one thread each; spreading: its threads' CPUs;
    /// compacting: where it may grow); empty: any.
    #[serde(default)]
    pub cores: Vec<usize>,
    /// Threads hosting at least one engine in this snapshot (an engine moving between
    /// threads is on none).
    pub active_threads: usize,
    /// Every thread of the group, active or parked.
    pub threads: Vec<ThreadStatus>,
    /// Every engine of the group.
    pub engines: Vec<EngineStatus>,
}

/// One engine thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadStatus {
    /// Kernel thread id.
    pub tid: i32,
    /// CPUs it may run on (empty: any).
    pub cores: Vec<usize>,
    /// CPU time the kernel charged to the thread (`/proc/self/task/TID/schedstat`).
    pub cpu_time_ns: u64,
    /// The CPU it last ran on (`/proc/self/task/TID/stat`); `None` once it exited.
    #[serde(default)]
    pub last_cpu: Option<usize>,
    /// Time its engines spent in `run()` steps that made progress.
    pub busy_ns: u64,
    /// Engines it hosts now.
    pub engines: Vec<String>,
    /// Whether it is in the MicroQuanta class.
    pub in_microquanta: bool,
    /// The MicroQuanta class group it joined (`default` for the default group); `None`
    /// while it is not in the class.
    #[serde(default)]
    pub microquanta_group: Option<String>,
}

/// One engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Engine name.
    pub name: String,
    /// Thread hosting it (0 while it moves between threads or after it failed).
    pub tid: i32,
    /// `run()` steps.
    pub runs: u64,
    /// Units of work done.
    pub items: u64,
    /// Time in `run()` steps that made progress.
    pub busy_ns: u64,
    /// Wakeups of its blocked thread caused by its interrupts.
    pub wakeups: u64,
    /// Control operations run from its mailbox.
    pub control_ops: u64,
    /// Moves between threads (compacting).
    pub migrations: u64,
    /// How long its input has been waiting, at the last sample (µs).
    pub queueing_delay_us: f64,
    /// The largest sample since start (µs).
    pub max_queueing_delay_us: f64,
    /// Whether it works.
    pub health: EngineHealth,
    /// App channels it quarantined (found broken) and detached, since start.
    #[serde(default)]
    pub quarantined: u64,
    /// Times it stopped serving an app that did not drain its responses, until the app
    /// made room (backpressure), since start.
    #[serde(default)]
    pub backpressured: u64,
}

/// Whether an engine works, as far as the runtime can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum EngineHealth {
    /// Running normally.
    Ok,
    /// Inside one `run()` step for `in_run_ms` (spinning or blocked); its thread's other
    /// engines are starved until it returns.
    Stuck {
        /// Time in the current step.
        in_run_ms: u64,
    },
    /// Panicked and was removed; its mailbox refuses operations.
    Failed {
        /// The panic message.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_serialises_with_a_state_tag() {
        let json = serde_json::to_string(&EngineHealth::Stuck { in_run_ms: 5 }).unwrap();
        assert_eq!(json, r#"{"state":"stuck","in_run_ms":5}"#);
    }
}
