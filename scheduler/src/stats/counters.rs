// SPDX-License-Identifier: GPL-2.0-only
//! Event counters the BPF program keeps per CPU (`enum mq_stat_idx`), summed
//! over CPUs.

use scx_stats_derive::Stats;
use serde::{Deserialize, Serialize};

use super::bpf_intf;

/// One snapshot of every counter, summed over CPUs (named after `enum mq_stat_idx` in
/// `bpf/intf.h`, where each is described).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Stats)]
#[stat(desc = "BPF event counters (enum mq_stat_idx in bpf/intf.h), summed over CPUs")]
pub struct Counters {
    #[stat(desc = "MicroQuanta task made runnable")]
    pub mq_enqueue: u64,
    #[stat(desc = "MicroQuanta task placed on an idle CPU at wakeup")]
    pub mq_idle_pick: u64,
    #[stat(desc = "MicroQuanta task placed on a CPU running normal work")]
    pub mq_busy_pick: u64,
    #[stat(desc = "MicroQuanta task placed with no free CPU with budget found: the less loaded of two")]
    pub mq_crowded_pick: u64,
    #[stat(desc = "MicroQuanta task placed away from a free CPU where its group's budget is spent")]
    pub mq_spent_skip: u64,
    #[stat(desc = "preempting kick sent for a MicroQuanta wakeup")]
    pub kick_preempt: u64,
    #[stat(desc = "MicroQuanta wakeup inserted at the head of the CPU's local queue")]
    pub direct_preempt: u64,
    #[stat(desc = "MicroQuanta task dispatched on its own CPU")]
    pub mq_dispatch: u64,
    #[stat(desc = "MicroQuanta task dispatched from another CPU's queue")]
    pub mq_steal: u64,
    #[stat(desc = "MicroQuanta queue skipped: budget spent, normal work waiting")]
    pub mq_throttle: u64,
    #[stat(desc = "running MicroQuanta task cut at the tick: budget spent")]
    pub mq_tick_throttle: u64,
    #[stat(desc = "normal task dispatched from the normal queue")]
    pub normal_dispatch: u64,
    #[stat(desc = "normal task placed straight on an idle CPU")]
    pub normal_direct: u64,
    #[stat(desc = "woken normal task far behind in vtime preempted its CPU")]
    pub normal_wake_preempt: u64,
    #[stat(desc = "CPU taken by an RT/DL task")]
    pub cpu_release: u64,
    #[stat(desc = "exiting thread removed from the class")]
    pub class_exit: u64,
    #[stat(desc = "new thread/process joined its creator's class")]
    pub class_inherit: u64,
    #[stat(desc = "budget timer preempted a class task out of budget")]
    pub timer_throttle: u64,
    #[stat(desc = "budget timer let a throttled class task back in")]
    pub timer_unthrottle: u64,
    #[stat(desc = "normal wakeup kicked class work running past its budget")]
    pub overbudget_kick: u64,
    #[stat(desc = "a budget timer fired away from its CPU")]
    pub timer_migrated: u64,
    #[stat(desc = "class slice over, another class task waited")]
    pub timer_round_robin: u64,
    #[stat(desc = "class slice over, no other class task here: it goes on")]
    pub mq_keep: u64,
    #[stat(desc = "nothing else to run: the CPU's prev goes on, slice refilled")]
    pub last_kept: u64,
    #[stat(desc = "CPU's last runnable task handed back (ENQ_LAST): runs on")]
    pub enq_last: u64,
    #[stat(desc = "RT/DL held a CPU past the grace: its local queue re-enqueued")]
    pub rt_reenq: u64,
    #[stat(desc = "class task from such a queue run at once on another CPU")]
    pub rt_push: u64,
    #[stat(desc = "timer not started: the armed one fires no later")]
    pub timer_kept: u64,
    #[stat(desc = "...and fired before it was due: armed again for the rest")]
    pub timer_early: u64,
    #[stat(desc = "timer armed a slice on, class work having been here lately")]
    pub timer_heartbeat: u64,
    #[stat(desc = "normal task displaced by a class wakeup kept at its CPU's local head")]
    pub normal_kept: u64,
    #[stat(desc = "...sent through enqueue() when it ran again: class work was queued")]
    pub kept_returned: u64,
    #[stat(desc = "...re-enqueued: a class above ours took the CPU from the wakeup")]
    pub kept_reenq: u64,
    #[stat(desc = "...ran again while other tasks waited behind it in the local queue")]
    pub kept_ran_ahead: u64,
    #[stat(desc = "...kept with its slice spent: sent through enqueue() when it ran again")]
    pub kept_spent: u64,
}

impl Counters {
    /// Builds a snapshot from per-stat totals indexed by `enum mq_stat_idx`.
    pub fn from_totals(totals: &[u64]) -> Self {
        let get = |idx: u32| totals.get(idx as usize).copied().unwrap_or(0);
        Self {
            mq_enqueue: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_ENQUEUE),
            mq_idle_pick: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_IDLE_PICK),
            mq_busy_pick: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_BUSY_PICK),
            mq_crowded_pick: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_CROWDED_PICK),
            mq_spent_skip: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_SPENT_SKIP),
            kick_preempt: get(bpf_intf::mq_stat_idx_MQ_STAT_KICK_PREEMPT),
            direct_preempt: get(bpf_intf::mq_stat_idx_MQ_STAT_DIRECT_PREEMPT),
            mq_dispatch: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_DISPATCH),
            mq_steal: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_STEAL),
            mq_throttle: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_THROTTLE),
            mq_tick_throttle: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_TICK_THROTTLE),
            normal_dispatch: get(bpf_intf::mq_stat_idx_MQ_STAT_NORMAL_DISPATCH),
            normal_direct: get(bpf_intf::mq_stat_idx_MQ_STAT_NORMAL_DIRECT),
            normal_wake_preempt: get(bpf_intf::mq_stat_idx_MQ_STAT_NORMAL_WAKE_PREEMPT),
            cpu_release: get(bpf_intf::mq_stat_idx_MQ_STAT_CPU_RELEASE),
            class_exit: get(bpf_intf::mq_stat_idx_MQ_STAT_CLASS_EXIT),
            class_inherit: get(bpf_intf::mq_stat_idx_MQ_STAT_CLASS_INHERIT),
            timer_throttle: get(bpf_intf::mq_stat_idx_MQ_STAT_TIMER_THROTTLE),
            timer_unthrottle: get(bpf_intf::mq_stat_idx_MQ_STAT_TIMER_UNTHROTTLE),
            overbudget_kick: get(bpf_intf::mq_stat_idx_MQ_STAT_OVERBUDGET_KICK),
            timer_migrated: get(bpf_intf::mq_stat_idx_MQ_STAT_TIMER_MIGRATED),
            timer_round_robin: get(bpf_intf::mq_stat_idx_MQ_STAT_TIMER_ROUND_ROBIN),
            mq_keep: get(bpf_intf::mq_stat_idx_MQ_STAT_MQ_KEEP),
            last_kept: get(bpf_intf::mq_stat_idx_MQ_STAT_LAST_KEPT),
            enq_last: get(bpf_intf::mq_stat_idx_MQ_STAT_ENQ_LAST),
            rt_reenq: get(bpf_intf::mq_stat_idx_MQ_STAT_RT_REENQ),
            rt_push: get(bpf_intf::mq_stat_idx_MQ_STAT_RT_PUSH),
            timer_kept: get(bpf_intf::mq_stat_idx_MQ_STAT_TIMER_KEPT),
            timer_early: get(bpf_intf::mq_stat_idx_MQ_STAT_TIMER_EARLY),
            timer_heartbeat: get(bpf_intf::mq_stat_idx_MQ_STAT_TIMER_HEARTBEAT),
            normal_kept: get(bpf_intf::mq_stat_idx_MQ_STAT_NORMAL_KEPT),
            kept_returned: get(bpf_intf::mq_stat_idx_MQ_STAT_KEPT_RETURNED),
            kept_reenq: get(bpf_intf::mq_stat_idx_MQ_STAT_KEPT_REENQ),
            kept_ran_ahead: get(bpf_intf::mq_stat_idx_MQ_STAT_KEPT_RAN_AHEAD),
            kept_spent: get(bpf_intf::mq_stat_idx_MQ_STAT_KEPT_SPENT),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            mq_enqueue: self.mq_enqueue.wrapping_sub(earlier.mq_enqueue),
            mq_idle_pick: self.mq_idle_pick.wrapping_sub(earlier.mq_idle_pick),
            mq_busy_pick: self.mq_busy_pick.wrapping_sub(earlier.mq_busy_pick),
            mq_crowded_pick: self.mq_crowded_pick.wrapping_sub(earlier.mq_crowded_pick),
            mq_spent_skip: self.mq_spent_skip.wrapping_sub(earlier.mq_spent_skip),
            kick_preempt: self.kick_preempt.wrapping_sub(earlier.kick_preempt),
            direct_preempt: self.direct_preempt.wrapping_sub(earlier.direct_preempt),
            mq_dispatch: self.mq_dispatch.wrapping_sub(earlier.mq_dispatch),
            mq_steal: self.mq_steal.wrapping_sub(earlier.mq_steal),
            mq_throttle: self.mq_throttle.wrapping_sub(earlier.mq_throttle),
            mq_tick_throttle: self.mq_tick_throttle.wrapping_sub(earlier.mq_tick_throttle),
            normal_dispatch: self.normal_dispatch.wrapping_sub(earlier.normal_dispatch),
            normal_direct: self.normal_direct.wrapping_sub(earlier.normal_direct),
            normal_wake_preempt: self.normal_wake_preempt.wrapping_sub(earlier.normal_wake_preempt),
            cpu_release: self.cpu_release.wrapping_sub(earlier.cpu_release),
            class_exit: self.class_exit.wrapping_sub(earlier.class_exit),
            class_inherit: self.class_inherit.wrapping_sub(earlier.class_inherit),
            timer_throttle: self.timer_throttle.wrapping_sub(earlier.timer_throttle),
            timer_unthrottle: self.timer_unthrottle.wrapping_sub(earlier.timer_unthrottle),
            overbudget_kick: self.overbudget_kick.wrapping_sub(earlier.overbudget_kick),
            timer_migrated: self.timer_migrated.wrapping_sub(earlier.timer_migrated),
            timer_round_robin: self.timer_round_robin.wrapping_sub(earlier.timer_round_robin),
            mq_keep: self.mq_keep.wrapping_sub(earlier.mq_keep),
            last_kept: self.last_kept.wrapping_sub(earlier.last_kept),
            enq_last: self.enq_last.wrapping_sub(earlier.enq_last),
            rt_reenq: self.rt_reenq.wrapping_sub(earlier.rt_reenq),
            rt_push: self.rt_push.wrapping_sub(earlier.rt_push),
            timer_kept: self.timer_kept.wrapping_sub(earlier.timer_kept),
            timer_early: self.timer_early.wrapping_sub(earlier.timer_early),
            timer_heartbeat: self.timer_heartbeat.wrapping_sub(earlier.timer_heartbeat),
            normal_kept: self.normal_kept.wrapping_sub(earlier.normal_kept),
            kept_returned: self.kept_returned.wrapping_sub(earlier.kept_returned),
            kept_reenq: self.kept_reenq.wrapping_sub(earlier.kept_reenq),
            kept_ran_ahead: self.kept_ran_ahead.wrapping_sub(earlier.kept_ran_ahead),
            kept_spent: self.kept_spent.wrapping_sub(earlier.kept_spent),
        }
    }

    /// One line for people.
    pub fn format_line(&self, class_size: usize) -> String {
        format!(
            "mq[threads={class_size} enq={} idle={} busy={} crowded={} spent_skip={} kick={} direct={} disp={} steal={} \
             throttle={} tick_throttle={} timer_throttle={} timer_unthrottle={} overbudget_kick={} timer_migrated={} rr={} keep={} timer_kept={} timer_early={} heartbeat={}] normal[disp={} direct={} wake_preempt={} kept={} kept_returned={} kept_reenq={} kept_ran_ahead={} kept_spent={}] last_kept={} enq_last={} rt_release={} rt_reenq={} rt_push={} exited={} inherited={}",
            self.mq_enqueue,
            self.mq_idle_pick,
            self.mq_busy_pick,
            self.mq_crowded_pick,
            self.mq_spent_skip,
            self.kick_preempt,
            self.direct_preempt,
            self.mq_dispatch,
            self.mq_steal,
            self.mq_throttle,
            self.mq_tick_throttle,
            self.timer_throttle,
            self.timer_unthrottle,
            self.overbudget_kick,
            self.timer_migrated,
            self.timer_round_robin,
            self.mq_keep,
            self.timer_kept,
            self.timer_early,
            self.timer_heartbeat,
            self.normal_dispatch,
            self.normal_direct,
            self.normal_wake_preempt,
            self.normal_kept,
            self.kept_returned,
            self.kept_reenq,
            self.kept_ran_ahead,
            self.kept_spent,
            self.last_kept,
            self.enq_last,
            self.cpu_release,
            self.rt_reenq,
            self.rt_push,
            self.class_exit,
            self.class_inherit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_map_to_named_counters_by_the_shared_indices() {
        let mut totals = vec![0u64; bpf_intf::mq_stat_idx_MQ_NR_STATS as usize];
        totals[bpf_intf::mq_stat_idx_MQ_STAT_KICK_PREEMPT as usize] = 7;
        totals[bpf_intf::mq_stat_idx_MQ_STAT_CLASS_EXIT as usize] = 3;
        let c = Counters::from_totals(&totals);
        assert_eq!(c.kick_preempt, 7);
        assert_eq!(c.class_exit, 3);
        assert_eq!(c.mq_enqueue, 0);
    }

    #[test]
    fn since_gives_the_interval_delta() {
        let before = Counters {
            mq_enqueue: 10,
            normal_dispatch: 100,
            ..Default::default()
        };
        let after = Counters {
            mq_enqueue: 15,
            normal_dispatch: 180,
            ..Default::default()
        };
        let d = after.since(&before);
        assert_eq!((d.mq_enqueue, d.normal_dispatch), (5, 80));
        assert!(d.format_line(2).contains("threads=2 enq=5"));
    }
}
