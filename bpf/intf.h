/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * intf.h - what the MicroQuanta BPF scheduler and its Rust loader share.
 *
 * bindgen turns this header into `bpf_intf.rs`, so every constant, index and
 * struct that crosses the BPF/userspace boundary is defined exactly once here.
 * Keep it free of BPF-only constructs.
 */
#ifndef __MICROQUANTA_INTF_H
#define __MICROQUANTA_INTF_H

#ifndef __VMLINUX_H__
typedef unsigned char u8;
typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
typedef long long s64;
#endif

enum mq_consts {
	/* Upper bound on CPU ids the per-CPU arrays cover. */
	MQ_MAX_CPUS = 512,
	/* Upper bound on threads in the MicroQuanta class at once. */
	MQ_MAX_TASKS = 65536,

	/* Dispatch queues: one shared vtime queue for normal tasks and one
	 * FIFO per CPU for MicroQuanta tasks (id MQ_DSQ_BASE + cpu). */
	MQ_NORMAL_DSQ = 0,
	MQ_DSQ_BASE = 1,

	NSEC_PER_USEC = 1000,
	/* Shortest budget timer: below this, timer overhead beats precision. */
	MQ_MIN_TIMER_NS = 1000,

	/* Class groups: each has its own runtime/period per CPU (and may be
	 * limited to a CPU set). Group 0 is the default group, whose budget is
	 * the loader's --runtime-us/--period-us. A power of two: BPF indexes
	 * per-group state with a mask. */
	MQ_MAX_GROUPS = 16,
	MQ_DEFAULT_GROUP = 0,
	MQ_GROUP_NAME_LEN = 32,
	MQ_CPU_WORDS = MQ_MAX_CPUS / 64,
	/* Class tasks of one CPU's FIFO a dispatch looks at for one whose
	 * group has budget there, before it gives up. */
	MQ_FIFO_SCAN = 16,
};

/* Value of the class map (key: thread id). */
struct mq_member {
	u64 added_ns;		/* CLOCK_MONOTONIC when userspace added it */
	u32 group;		/* index into the group map */
	u32 _pad;
};

/*
 * Value of the group map (an array of MQ_MAX_GROUPS, pinned, written by
 * userspace only). A member whose group slot is not in use counts as a
 * member of the default group.
 */
struct mq_group {
	u64 period_ns;
	u64 runtime_ns;
	u64 cpus[MQ_CPU_WORDS];	/* bit per CPU: where its threads are class threads */
	u32 in_use;
	u32 has_cpus;		/* 0: every CPU (cpus is ignored) */
	char name[MQ_GROUP_NAME_LEN];	/* NUL-padded */
};

/*
 * Log-linear latency histograms, per CPU: values below 4 ns land in buckets
 * 0-3; a larger value v with highest set bit m lands in bucket
 * 4 * m + (next two bits of v), so every power of two is split in four
 * (relative error < 25%, reported as the bucket's midpoint: < 12.5%).
 */
enum mq_hist_consts {
	MQ_HIST_SUB_BITS = 2,
	MQ_HIST_BUCKETS = 256,
};

enum mq_hist_idx {
	MQ_HIST_WAKEUP,		/* class thread: enqueue at wakeup -> running, ns */
	MQ_HIST_OVERRUN,	/* class time past an exhausted budget, ns */
	MQ_HIST_YIELD,		/* class task told to yield -> it leaves the CPU, ns */
	MQ_NR_HISTS,
};

struct mq_hist {
	u64 bucket[MQ_HIST_BUCKETS];
	u64 max;
};

/* Counters, summed over CPUs by the loader (`--stats`). */
enum mq_stat_idx {
	MQ_STAT_MQ_ENQUEUE,	/* MicroQuanta task made runnable */
	MQ_STAT_MQ_IDLE_PICK,	/* ...placed on an idle CPU at wakeup */
	MQ_STAT_MQ_BUSY_PICK,	/* ...placed on a CPU running normal work */
	MQ_STAT_MQ_CROWDED_PICK,/* ...no free CPU with budget found: the less loaded of two */
	MQ_STAT_MQ_SPENT_SKIP,	/* ...placed away from a free CPU where its group's budget is spent */
	MQ_STAT_KICK_PREEMPT,	/* preempting kick sent for a MicroQuanta wakeup */
	MQ_STAT_DIRECT_PREEMPT,	/* ...or inserted straight into the CPU's local queue */
	MQ_STAT_MQ_DISPATCH,	/* MicroQuanta task dispatched on its own CPU */
	MQ_STAT_MQ_STEAL,	/* ...dispatched from another CPU's queue */
	MQ_STAT_MQ_THROTTLE,	/* MicroQuanta queue skipped: budget spent, normal work waiting */
	MQ_STAT_MQ_TICK_THROTTLE,/* running MicroQuanta task cut at the tick: budget spent */
	MQ_STAT_NORMAL_DISPATCH,/* normal task dispatched from the normal queue */
	MQ_STAT_NORMAL_DIRECT,	/* normal task placed straight on an idle CPU */
	MQ_STAT_NORMAL_WAKE_PREEMPT,/* woken normal task far behind in vtime preempted its CPU */
	MQ_STAT_CPU_RELEASE,	/* CPU taken by an RT/DL task */
	MQ_STAT_CLASS_EXIT,	/* exiting thread removed from the class */
	MQ_STAT_CLASS_INHERIT,	/* new thread/process joined its creator's class */
	MQ_STAT_TIMER_THROTTLE,	/* budget timer preempted a class task out of budget */
	MQ_STAT_TIMER_UNTHROTTLE,/* budget timer let a throttled class task back in */
	MQ_STAT_OVERBUDGET_KICK,/* normal wakeup kicked class work running past its budget */
	MQ_STAT_TIMER_MIGRATED,	/* a budget timer fired away from its CPU */
	MQ_STAT_TIMER_ROUND_ROBIN,/* class slice over, another class task waited */
	MQ_STAT_MQ_KEEP,	/* class slice over, no other class task here: it goes on */
	MQ_STAT_LAST_KEPT,	/* nothing else to run: the CPU's prev goes on, slice refilled */
	MQ_STAT_ENQ_LAST,	/* CPU's last runnable task handed back (ENQ_LAST): runs on */
	MQ_STAT_RT_REENQ,	/* RT/DL held a CPU past the grace: its local queue re-enqueued */
	MQ_STAT_RT_PUSH,	/* a class task waiting behind RT run at once on another CPU */
	MQ_STAT_TIMER_KEPT,	/* timer not started: the armed one fires no later */
	MQ_STAT_TIMER_EARLY,	/* ...and fired before it was due: armed again for the rest */
	MQ_STAT_TIMER_HEARTBEAT,/* timer armed a slice on, class work having been here lately */
	MQ_STAT_NORMAL_KEPT,	/* normal task displaced by a class wakeup kept at its CPU's local head */
	MQ_STAT_KEPT_RETURNED,	/* ...sent through enqueue() when it ran again: class work was queued */
	MQ_STAT_KEPT_REENQ,	/* ...re-enqueued: a class above ours took the CPU from the wakeup */
	MQ_STAT_KEPT_RAN_AHEAD,	/* ...ran again while other tasks waited behind it in the local queue */
	MQ_STAT_KEPT_SPENT,	/* ...kept with its slice spent: sent through enqueue() when it ran again */
	MQ_STAT_MQ_RUN_NS,	/* ns of class time on this CPU (not a count) */
	MQ_NR_STATS,
};

#endif /* __MICROQUANTA_INTF_H */
