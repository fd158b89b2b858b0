// SPDX-License-Identifier: GPL-2.0-only
//! One line of the kernel's ftrace text output (`/sys/kernel/tracing/trace`), read into
//! the few events a wakeup's trace needs.
//!
//! A line is `<comm>-<pid> [<cpu>] <flags> <secs>.<usecs>: <event>: <fields>`. The text
//! format is stable across the kernels we run and needs no event-format files, so it is
//! parsed here rather than through libtraceevent (C, and no maintained Rust binding in the
//! registries). Only the fields the attribution reads are kept; a line that is not an
//! event (the header, a lost-events marker) is `None`, never a guess.

/// An interrupt-like interval's kind: what the CPU did instead of running a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IrqKind {
    /// A hard interrupt: an x86 system vector (`local_timer`, `irq_work`, ...) or a device
    /// handler (by its `name`).
    Hardirq,
    /// A softirq, by its action (`TIMER`, `HRTIMER`, `RCU`, ...).
    Softirq,
    /// An hrtimer's callback, by its function (`hrtimer_wakeup`, `bpf_timer_cb`, ...);
    /// nested in a hard interrupt or the HRTIMER softirq.
    Hrtimer,
    /// A timer-wheel callback, by its function (`process_timeout`, ...); nested in the
    /// TIMER softirq.
    Timer,
}

impl IrqKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hardirq => "hardirq",
            Self::Softirq => "softirq",
            Self::Hrtimer => "hrtimer",
            Self::Timer => "timer",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `sched_waking`: `pid` is being woken, to run on `target_cpu`.
    Waking { pid: u32, target_cpu: u32 },
    /// `sched_switch`: the CPU switches from `prev_pid` to `next_pid` (`next_comm`).
    Switch {
        prev_pid: u32,
        next_pid: u32,
        next_comm: String,
    },
    /// The start of an interval of `kind` named `name`.
    Enter { kind: IrqKind, name: String },
    /// Its end.
    Exit { kind: IrqKind },
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub cpu: u32,
    /// CLOCK_MONOTONIC with `trace_clock` set to `mono`, in ns (µs resolution).
    pub ts_ns: u64,
    pub event: Event,
}

/// The events to enable, as `<system>/<event>`. The x86 vectors are optional: another
/// architecture lacks them, and the trace then attributes less.
pub const EVENTS: &[&str] = &[
    "sched/sched_waking",
    "sched/sched_switch",
    "irq/irq_handler_entry",
    "irq/irq_handler_exit",
    "irq/softirq_entry",
    "irq/softirq_exit",
    "timer/hrtimer_expire_entry",
    "timer/hrtimer_expire_exit",
    "timer/timer_expire_entry",
    "timer/timer_expire_exit",
    "irq_vectors/local_timer_entry",
    "irq_vectors/local_timer_exit",
    "irq_vectors/irq_work_entry",
    "irq_vectors/irq_work_exit",
    "irq_vectors/reschedule_entry",
    "irq_vectors/reschedule_exit",
    "irq_vectors/call_function_single_entry",
    "irq_vectors/call_function_single_exit",
    "irq_vectors/call_function_entry",
    "irq_vectors/call_function_exit",
];

/// Parses one line; `None` for anything that is not one of our events.
pub fn parse_line(line: &str) -> Option<Record> {
    let (cpu, rest) = cpu_field(line)?;
    // After the CPU: the flags, then `<secs>.<usecs>: <event>: <fields>`.
    let rest = rest.trim_start();
    let (_flags, rest) = rest.split_once(' ')?;
    let (ts, rest) = rest.trim_start().split_once(": ")?;
    let ts_ns = timestamp_ns(ts)?;
    let (name, fields) = rest.split_once(": ").unwrap_or((rest.trim_end_matches(':'), ""));
    let event = event(name, fields)?;
    Some(Record { cpu, ts_ns, event })
}

/// The first `[<digits>]` of the line (a comm may hold brackets, but not that pattern
/// before the real one in practice, and a wrong match fails the timestamp).
fn cpu_field(line: &str) -> Option<(u32, &str)> {
    let mut from = 0;
    while let Some(open) = line[from..].find('[') {
        let open = from + open;
        let close = open + line[open..].find(']')?;
        let digits = &line[open + 1..close];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Some((digits.parse().ok()?, &line[close + 1..]));
        }
        from = open + 1;
    }
    None
}

fn timestamp_ns(ts: &str) -> Option<u64> {
    let (secs, frac) = ts.split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns: u64 = frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32);
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// `key=value`'s value in `fields`: up to the next space, or for the last key to the end.
fn field<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    loop {
        let at = from + fields[from..].find(key)?;
        let starts_word = at == 0 || fields.as_bytes()[at - 1] == b' ';
        let value_at = at + key.len();
        if starts_word && fields[value_at..].starts_with('=') {
            let value = &fields[value_at + 1..];
            return Some(value.split(' ').next().unwrap_or(value));
        }
        from = at + 1;
    }
}

fn number(fields: &str, key: &str) -> Option<u32> {
    field(fields, key)?.parse().ok()
}

fn event(name: &str, fields: &str) -> Option<Event> {
    use IrqKind::*;
    let enter = |kind, name: &str| {
        Some(Event::Enter {
            kind,
            name: name.to_string(),
        })
    };
    match name {
        "sched_waking" => Some(Event::Waking {
            pid: number(fields, "pid")?,
            target_cpu: number(fields, "target_cpu")?,
        }),
        "sched_switch" => {
            let (_, next) = fields.split_once(" ==> ")?;
            Some(Event::Switch {
                prev_pid: number(fields, "prev_pid")?,
                next_pid: number(next, "next_pid")?,
                // A comm may hold spaces: everything between `next_comm=` and ` next_pid=`.
                next_comm: next
                    .strip_prefix("next_comm=")?
                    .rsplit_once(" next_pid=")?
                    .0
                    .to_string(),
            })
        }
        "irq_handler_entry" => enter(Hardirq, field(fields, "name")?),
        "softirq_entry" => {
            // `vec=7 [action=HRTIMER]`
            let action = field(fields, "[action")?.trim_end_matches(']');
            enter(Softirq, action)
        }
        "hrtimer_expire_entry" => enter(Hrtimer, field(fields, "function")?),
        "irq_handler_exit" => Some(Event::Exit { kind: Hardirq }),
        "softirq_exit" => Some(Event::Exit { kind: Softirq }),
        "hrtimer_expire_exit" => Some(Event::Exit { kind: Hrtimer }),
        "timer_expire_entry" => enter(Timer, field(fields, "function")?),
        "timer_expire_exit" => Some(Event::Exit { kind: Timer }),
        _ => {
            // The x86 vectors: `<vector>_entry` / `<vector>_exit`.
            if let Some(vector) = name.strip_suffix("_entry") {
                enter(Hardirq, vector)
            } else if name.ends_with("_exit") {
                Some(Event::Exit { kind: Hardirq })
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(line: &str) -> Record {
        parse_line(line).unwrap_or_else(|| panic!("not parsed: {line}"))
    }

    #[test]
    fn reads_the_scheduler_events() {
        let r = rec("     stress-ng-cpu-312     [000] dNh2.   104.123456: sched_waking: comm=mq-wakeup pid=401 prio=120 target_cpu=000");
        assert_eq!(r.cpu, 0);
        assert_eq!(r.ts_ns, 104_123_456_000);
        assert_eq!(
            r.event,
            Event::Waking {
                pid: 401,
                target_cpu: 0
            }
        );
        let r = rec("  stress-ng-cpu-312 [001] d..2. 104.123500: sched_switch: prev_comm=stress-ng-cpu prev_pid=312 prev_prio=120 prev_state=R+ ==> next_comm=mq wakeup x next_pid=401 next_prio=120");
        assert_eq!(r.cpu, 1);
        assert_eq!(
            r.event,
            Event::Switch {
                prev_pid: 312,
                next_pid: 401,
                next_comm: "mq wakeup x".into()
            }
        );
    }

    #[test]
    fn reads_interrupts_softirqs_and_hrtimers_with_their_names() {
        let cases = [
            ("<idle>-0 [000] d.h1. 5.000001: local_timer_entry: vector=236", Some((IrqKind::Hardirq, "local_timer"))),
            ("<idle>-0 [000] d.h1. 5.000002: irq_work_entry: vector=246", Some((IrqKind::Hardirq, "irq_work"))),
            ("<idle>-0 [000] d.h1. 5.000003: irq_handler_entry: irq=24 name=virtio0-input.0", Some((IrqKind::Hardirq, "virtio0-input.0"))),
            ("<idle>-0 [000] ..s1. 5.000004: softirq_entry: vec=8 [action=HRTIMER]", Some((IrqKind::Softirq, "HRTIMER"))),
            ("<idle>-0 [000] ..s1. 5.000005: hrtimer_expire_entry: hrtimer=00000000f00d function=bpf_timer_cb now=5000005000", Some((IrqKind::Hrtimer, "bpf_timer_cb"))),
            ("<idle>-0 [000] ..s1. 5.000006: timer_expire_entry: timer=00000000beef function=process_timeout now=4294892345 baseclk=4294892345", Some((IrqKind::Timer, "process_timeout"))),
        ];
        for (line, want) in cases {
            let Event::Enter { kind, name } = rec(line).event else {
                panic!("{line}")
            };
            assert_eq!(Some((kind, name.as_str())), want, "{line}");
        }
        assert_eq!(
            rec("x-1 [000] d.h1. 5.1: local_timer_exit: vector=236").event,
            Event::Exit {
                kind: IrqKind::Hardirq
            }
        );
        assert_eq!(
            rec("x-1 [000] ..s1. 5.1: softirq_exit: vec=8 [action=HRTIMER]").event,
            Event::Exit {
                kind: IrqKind::Softirq
            }
        );
        assert_eq!(
            rec("x-1 [000] d.h1. 5.1: hrtimer_expire_exit: hrtimer=00000000f00d").event,
            Event::Exit {
                kind: IrqKind::Hrtimer
            }
        );
        assert_eq!(
            rec("x-1 [000] ..s1. 5.1: timer_expire_exit: timer=00000000beef").event,
            Event::Exit { kind: IrqKind::Timer }
        );
    }

    #[test]
    fn refuses_what_is_not_an_event() {
        for line in [
            "# tracer: nop",
            "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
            "CPU:0 [LOST 12 EVENTS]",
            "x-1 [000] d.h1. 5.1: sched_wakeup: comm=a pid=1 prio=120 target_cpu=000",
            "x-1 [000] d.h1. not-a-time: sched_waking: comm=a pid=1 prio=120 target_cpu=000",
            "x-1 [000] d.h1. 5.1: sched_waking: comm=a prio=120",
            "",
        ] {
            assert_eq!(parse_line(line), None, "{line}");
        }
    }

    #[test]
    fn a_key_is_matched_as_a_whole_word() {
        assert_eq!(field("prev_pid=3 pid=4", "pid"), Some("4"));
        assert_eq!(field("comm=x pid=9", "pid"), Some("9"));
        assert_eq!(field("comm=pid pid=9", "pid"), Some("9"));
        assert_eq!(field("comm=x", "pid"), None);
    }
}
