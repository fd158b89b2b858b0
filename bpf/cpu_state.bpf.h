/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * cpu_state.bpf.h - the per-CPU state machine: struct cpu_ctx, the three
 * states it holds and the only functions that change them. Included once,
 * by main.bpf.c, after the loader's constants and before the cpu_ctxs map.
 *
 * Each CPU is in one state of each of three machines:
 *
 *   what runs (run)
 *     IDLE --running()--> CLASS or NORMAL --stopping()--> IDLE
 *     CLASS --told to yield (timer, tick, normal wakeup)--> CLASS_YIELDING
 *     CLASS_YIELDING --stopping()--> IDLE
 *     IDLE --cpu_release()--> RT --cpu_acquire()--> IDLE
 *
 *   the budget of each class group on this CPU (grp[g].state)
 *     any --dispatch()--> OK or THROTTLED
 *     THROTTLED or UNTHROTTLE_DUE --timer for g, class work queued--> UNTHROTTLE_DUE
 *
 *   what the armed timer stands for (timer_for)
 *     class task starts running, or its step ends --> SLICE_END or BUDGET_END
 *     dispatch() throttles with class work waiting --> REFILL (for the
 *       throttled group whose credit comes back first: refill_group)
 *     cpu_release() --> RT_GRACE (rt_grace set until the timer fires or
 *       the CPU comes back)
 *     the timer fires with nothing to arm for, class work was here within
 *       two slices --> HEARTBEAT
 *
 * Being told to yield is a state of what runs, not of the budget: it
 * belongs to the running class task and ends when that task stops, while
 * the budget may be THROTTLED at the same time (a throttled CPU runs class
 * work when nothing normal can run there).
 *
 * The kernel calls stopping() before cpu_release() for the task that an
 * RT/deadline task displaces, and cpu_acquire() before the next running(),
 * so RT never overlaps with one of our tasks running.
 *
 * Only the owning CPU changes its states, with two exceptions: a normal
 * wakeup on another CPU tells a class task running past its budget to
 * yield (class_told_to_yield, a compare-and-swap, so that a CPU which has
 * stopped running class work meanwhile stays as it is) and moves that
 * CPU's budget_out_ns forward; and a class wakeup placed from another CPU
 * marks the normal task it will displace for keeping (class_wakeup_displaces).
 *
 * The decisions that look for a CPU in some state (a CPU free of class
 * work, one whose class work runs past its budget, one with class work
 * queued) read three cpumasks instead of visiting every CPU's cpu_ctx, so
 * they cost the same on 2 CPUs as on 256:
 *
 *   free_cpus       no class work runs or is queued here, no RT task holds it
 *   overbudget_cpus class work runs here past its budget (cleared at stopping)
 *   queued_cpus     this CPU's class FIFO may hold a task (a hint, see below)
 *
 * The transitions below keep them. Whoever makes a CPU busy changes the
 * state first and then clears the bit; whoever may make it free sets the
 * bit first and then checks the state again (cpu_may_be_free), clearing it
 * if the CPU is busy after all. Either order of two racing updates then
 * ends with the bit matching the state. A task can leave a FIFO without
 * this scheduler being told (affinity change, exit), so queued_cpus may
 * name a CPU whose FIFO is empty; readers of it check the queue itself and
 * clear the stale bit. The other way round it is nearly exact: every insert
 * sets the bit (fifo_filled), so a clear bit is an empty FIFO (fifo_empty)
 * except in one race: an insert from enqueue() lands in the queue after the
 * callback returns, and a steal that clears the bit in between sees no
 * task. Hence only the wakeup's fast path and placement read the bit alone
 * (a miss costs a wakeup going ahead of a queued one, or a stale
 * placement); dispatch() and the steal look at the queue itself.
 */
#ifndef __MICROQUANTA_CPU_STATE_BPF_H
#define __MICROQUANTA_CPU_STATE_BPF_H

/* What the CPU runs, as far as this scheduler knows. */
enum mq_cpu_run {
	MQ_RUN_IDLE,		/* none of our tasks: idle, or between two tasks */
	MQ_RUN_NORMAL,		/* a normal task */
	MQ_RUN_CLASS,		/* a MicroQuanta task */
	MQ_RUN_CLASS_YIELDING,	/* a MicroQuanta task told to yield: budget spent */
	MQ_RUN_RT,		/* an RT/deadline task holds the CPU */
};

/* Whether class work may run here; decided by dispatch() on the rq clock. */
enum mq_cpu_budget {
	MQ_BUDGET_OK,		/* class work runs while the credit is positive */
	MQ_BUDGET_THROTTLED,	/* class work waits until the credit is worth a runtime */
	MQ_BUDGET_UNTHROTTLE_DUE,/* throttled, and the timer says the refill is done */
};

/* The instant the armed budget timer stands for. */
enum mq_cpu_timer {
	MQ_TIMER_SLICE_END,	/* the running class task's round-robin slice ends */
	MQ_TIMER_BUDGET_END,	/* the running class task's budget runs out */
	MQ_TIMER_REFILL,	/* a throttled CPU's credit is worth a runtime again */
	MQ_TIMER_RT_GRACE,	/* our queued work has waited long enough behind RT */
	MQ_TIMER_HEARTBEAT,	/* nothing due: class work was here lately (see timer_arm) */
};

/* One class group's budget on one CPU. */
struct grp_budget {
	s64 credit_ns;		/* the group's budget here: target minus consumed */
	u64 credit_at_ns;	/* credit brought up to date at this time */
	u32 state;		/* enum mq_cpu_budget */
	u32 let_in;		/* let in from a throttle, not run here since: still waiting */
};

struct cpu_ctx {
	struct bpf_timer timer;	/* budget enforcement, pinned to this CPU */
	u64 run_start_ns;	/* when the current task started running */
	u64 mq_charged_ns;	/* MicroQuanta time charged up to here */
	u64 run_exec_ns;	/* the running class task's sum_exec_runtime when it started */
	u64 curr_vtime;		/* vtime of the current normal task */
	u64 budget_out_ns;	/* when the running class task's budget runs out */
	u64 budget_left_ns;	/* class budget left after the armed timer step */
	u64 yield_told_ns;	/* CLOCK_MONOTONIC when the running class task was told to yield */
	u64 timer_want_ns;	/* CLOCK_MONOTONIC: when what the timer stands for is due */
	u64 timer_due_ns;	/* CLOCK_MONOTONIC: when the armed timer fires; 0: not armed */
	u64 class_seen_ns;	/* CLOCK_MONOTONIC: class work last started or went on here */
	u64 run_slice_ns;	/* the current normal task's slice when it started */
	u32 run;		/* enum mq_cpu_run; u32 for the compare-and-swap */
	u32 run_group;		/* the running class task's group */
	u32 timer_for;		/* enum mq_cpu_timer */
	u32 refill_group;	/* the group a REFILL timer waits for */
	u32 throttled_groups;	/* bit per group whose state is not OK here */
	u32 rt_grace;		/* the RT grace runs: the local queue waits for RT to leave */
	u32 keep_displaced;	/* a class wakeup preempts: keep the normal task it displaces */
	u32 kept_pid;		/* that task, kept at the head of the local queue (0: none) */
	u32 kept_ahead;		/* ...kept since the last running(): maybe ahead of the wakeup */
	u32 kept_spent;		/* ...kept with its slice spent (MQ_SPENT_KEPT_SLICE_NS) */
	struct grp_budget grp[MQ_MAX_GROUPS];
};

/* @g's budget on the CPU of @c; the mask keeps the verifier (and a bad id) in bounds. */
static struct grp_budget *grp_of(struct cpu_ctx *c, u32 g)
{
	return &c->grp[g & (MQ_MAX_GROUPS - 1)];
}

/* --- the cpumasks ----------------------------------------------------- */

private(MQ_MASKS) struct bpf_cpumask __kptr *free_cpus;
private(MQ_MASKS) struct bpf_cpumask __kptr *overbudget_cpus;
private(MQ_MASKS) struct bpf_cpumask __kptr *queued_cpus;

/*
 * The masks are created by init() and never freed while the scheduler
 * runs. Every program that reads them is non-sleepable (all callbacks but
 * init(), and the budget timer's callback), and the verifier takes such a
 * program to be inside an RCU read-side section, which is what makes a
 * kptr loaded from a map value a trusted argument for the cpumask kfuncs:
 * no bpf_rcu_read_lock() of our own, which costs two kfunc calls per use.
 * A bit is written only when it changes: the masks are shared by every
 * CPU, and an atomic write on each decision would bounce their cache lines.
 * (Skipping a write that would not change the bit keeps the protocol above.)
 * The exception is queued_cpus' set and clear around a FIFO's insert and
 * its emptiness, which must be ordered (fifo_filled, fifo_found_empty); an
 * insert into a FIFO is the slow path of a class wakeup.
 */
static void mask_set(struct bpf_cpumask *m, s32 cpu)
{
	if (m && !bpf_cpumask_test_cpu(cpu, cast_mask(m)))
		bpf_cpumask_set_cpu(cpu, m);
}

static void mask_clear(struct bpf_cpumask *m, s32 cpu)
{
	if (m && bpf_cpumask_test_cpu(cpu, cast_mask(m)))
		bpf_cpumask_clear_cpu(cpu, m);
}

/* --- what runs --------------------------------------------------------- */

static bool runs_class(const struct cpu_ctx *c)
{
	return c->run == MQ_RUN_CLASS || c->run == MQ_RUN_CLASS_YIELDING;
}

static bool runs_normal(const struct cpu_ctx *c)
{
	return c->run == MQ_RUN_NORMAL;
}

static bool held_by_rt(const struct cpu_ctx *c)
{
	return c->run == MQ_RUN_RT;
}

/* running(): one of our tasks starts on this CPU. */
static void cpu_starts(struct cpu_ctx *c, s32 cpu, bool class)
{
	c->run = class ? MQ_RUN_CLASS : MQ_RUN_NORMAL;
	if (class)
		mask_clear(free_cpus, cpu);
}

/*
 * stopping(): our task leaves the CPU. Returns what ran, so the caller
 * charges a class task's time and counts a yielding one's overrun.
 */
static u32 cpu_stops(struct cpu_ctx *c, s32 cpu)
{
	u32 ran = c->run;

	if (ran != MQ_RUN_RT)
		c->run = MQ_RUN_IDLE;
	if (ran == MQ_RUN_CLASS || ran == MQ_RUN_CLASS_YIELDING)
		mask_clear(overbudget_cpus, cpu);
	return ran;
}

/*
 * The running class task's budget is out (its timer says so, or it started
 * without credit because nothing else wanted the CPU): a normal wakeup
 * anywhere must find this CPU and make it yield (kick_overbudget_cpu).
 */
static void class_past_budget(s32 cpu)
{
	mask_set(overbudget_cpus, cpu);
}

/*
 * The running class task is told to yield: its overrun, and the delay from
 * this decision to its leaving the CPU, are counted at stopping. Only the
 * first decision starts the delay (a repeated one finds CLASS_YIELDING).
 * bpf_ktime_get_ns(), not the rq clock: the budget timer decides outside
 * the scheduler's callbacks, where scx_bpf_now() can lag.
 */
static void class_told_to_yield(struct cpu_ctx *c)
{
	if (__sync_val_compare_and_swap(&c->run, MQ_RUN_CLASS, MQ_RUN_CLASS_YIELDING) ==
	    MQ_RUN_CLASS)
		c->yield_told_ns = bpf_ktime_get_ns();
}

/* cpu_release(): an RT or deadline task took the CPU. */
static void cpu_released(struct cpu_ctx *c, s32 cpu)
{
	c->run = MQ_RUN_RT;
	c->rt_grace = 0;
	mask_clear(free_cpus, cpu);
}

/* cpu_acquire(): the CPU is back with this scheduler. */
static void cpu_acquired(struct cpu_ctx *c)
{
	if (c->run == MQ_RUN_RT)
		c->run = MQ_RUN_IDLE;
	c->rt_grace = 0;
}

/* --- the normal task a class wakeup displaces -------------------------- */

/*
 * A class wakeup is inserted at the head of this CPU's local queue with
 * SCX_ENQ_PREEMPT, which zeroes the slice of the normal task running here:
 * without more, that task goes through enqueue() to the shared queue and
 * comes back through dispatch() when the class task sleeps, two callbacks
 * for a task that only stepped aside. A task preempted by a higher class
 * keeps its slice and waits at the head of the local queue instead; the
 * displaced task is treated the same (displaced_kept()), so the wakeup's
 * path has one callback less and the return to the normal task none.
 *
 * Set before the insert, consumed by the next normal task to stop here and
 * cleared by the next task to start: a stale mark (a remote placement that
 * raced with a switch) keeps at most one task that stopped anyway.
 *
 * The kernel puts a kept task at the head of the local queue, so it would
 * go ahead of the class wakeup if that wakeup was not what took the CPU: an
 * RT task that woke between the insert and the switch. Such a task is not
 * kept (rt_takes_cpu()); for any other class above ours (deadline, stop),
 * or a kernel that cannot tell, kept_ahead says so until the next
 * running(), and cpu_release() sends the local queue back through
 * enqueue() (mq_cpu_release()).
 */
static void class_wakeup_displaces(struct cpu_ctx *c)
{
	if (runs_normal(c))
		c->keep_displaced = 1;
}

/* 6.18+; weak, so that older kernels load the scheduler without it. */
struct rq *scx_bpf_locked_rq___compat(void) __ksym __weak;

/*
 * An RT task is queued on the rq being switched, so it, not the class
 * wakeup, is about to take the CPU (RT comes before us). Under TCG a late
 * timer interrupt often wakes the class thread and the stall probe
 * together. Unknown (an older kernel): no, and cpu_release() sorts it out.
 */
static bool rt_takes_cpu(void)
{
	struct rq *rq;

	if (!bpf_ksym_exists(scx_bpf_locked_rq___compat))
		return false;
	rq = scx_bpf_locked_rq___compat();
	return rq && rq->rt.rt_nr_running > 0;
}

/*
 * The slice a displaced task whose slice ran out is kept with: any slice
 * keeps it at the head of the local queue, and running() sends it through
 * enqueue() as soon as it runs again (mq_running()).
 */
#define MQ_SPENT_KEPT_SLICE_NS 1

/*
 * stopping() of normal task @p on @cpu after @ran_ns: displaced by a class
 * wakeup and still runnable, it gets back what was left of its slice and so
 * stays at the head of the local queue (the kernel keeps a task put back
 * with slice left there). A task whose slice ran out is kept too, and only
 * goes through enqueue() when the class task has left: put back with no
 * slice, it would go through enqueue() between the class task's pick and
 * its switch, and the class wakeup would wait for that callback (0.6 µs of
 * 7.1 under the instruction clock, docs/MICROQUANTA.md). Not kept
 * when it would go ahead of other work: when an RT task takes the CPU
 * instead of the class wakeup, or when the local queue holds more than the
 * task picked to run next (still in it while the previous one is put away),
 * such as a second class wakeup that select_cpu() inserted at the head too.
 * Returns whether it was kept.
 */
static bool displaced_kept(struct cpu_ctx *c, s32 cpu, struct task_struct *p, u64 ran_ns,
			   bool runnable)
{
	bool keep = c->keep_displaced && runnable &&
		    scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL_ON | cpu) <= 1 && !rt_takes_cpu();

	c->keep_displaced = 0;
	if (!keep)
		return false;
	c->kept_spent = c->run_slice_ns <= ran_ns;
	scx_bpf_task_set_slice(p, c->kept_spent ? MQ_SPENT_KEPT_SLICE_NS :
						  c->run_slice_ns - ran_ns);
	c->kept_pid = p->pid;
	c->kept_ahead = 1;
	return true;
}

/* --- the class FIFO ---------------------------------------------------- */

/*
 * A class task was put in @cpu's FIFO (after the insert: see above). Its
 * queued_cpus bit is set even when set already, by a fully ordered atomic
 * (a value-returning one): a clear racing with this insert
 * (fifo_found_empty()) then either comes first and is undone here, or
 * comes after and sees the insert when it checks the queue again, if the
 * insert has landed by then: from enqueue() it lands only after the
 * callback returns, so a clear in between can miss it (see the masks'
 * comment above). Filling a FIFO is the class wakeup's slow path; the fast
 * path only reads the bit.
 */
static void fifo_filled(s32 cpu)
{
	struct bpf_cpumask *m = queued_cpus;

	if (m)
		bpf_cpumask_test_and_set_cpu(cpu, m);
	mask_clear(free_cpus, cpu);
}

/* --- the budget -------------------------------------------------------- */

/* Some group's class work waits for credit here. */
static bool throttled(const struct cpu_ctx *c)
{
	return c->throttled_groups != 0;
}

static bool group_throttled(struct cpu_ctx *c, u32 g)
{
	return grp_of(c, g)->state != MQ_BUDGET_OK;
}

/* dispatch(): @g's class work may run here now, or waits for credit. */
static void budget_decided(struct cpu_ctx *c, u32 g, bool class_may_run)
{
	u32 bit = 1U << (g & (MQ_MAX_GROUPS - 1));
	struct grp_budget *gb = grp_of(c, g);

	/* Let in, the group's work still waits for the switch to it: the
	 * credit it earns until running() is owed, as while it was throttled
	 * (cut at 2 periods there, a group at 20/40 µs under TCG, where a
	 * switch takes about a period, got 47.4% of its CPU). A group whose
	 * work then ran on another CPU keeps the mark until its next run
	 * here: it banks no more than a throttled group may. */
	if (class_may_run && gb->state != MQ_BUDGET_OK)
		gb->let_in = 1;
	gb->state = class_may_run ? MQ_BUDGET_OK : MQ_BUDGET_THROTTLED;
	if (class_may_run)
		c->throttled_groups &= ~bit;
	else
		c->throttled_groups |= bit;
}

/*
 * The timer fired on a throttled CPU with class work queued: @g's refill is
 * done, and dispatch() lets its class work in on any positive credit.
 */
static void budget_unthrottle_due(struct cpu_ctx *c, u32 g)
{
	struct grp_budget *gb = grp_of(c, g);

	if (gb->state != MQ_BUDGET_OK)
		gb->state = MQ_BUDGET_UNTHROTTLE_DUE;
}

/* --- the timer --------------------------------------------------------- */

/* Defined in main.bpf.c, after the maps it writes. */
static void stat_inc(u32 idx);

/* A timer that has not fired this long past its expiry was lost: arm anew. */
#define MQ_TIMER_LOST_NS (4ULL * 1000 * 1000)

/* Starts the timer @after_ns from @now (CLOCK_MONOTONIC). */
static void timer_start(struct cpu_ctx *c, u64 now, u64 after_ns)
{
	c->timer_due_ns = now + after_ns;
	if (bpf_timer_start(&c->timer, after_ns, BPF_F_TIMER_CPU_PIN))
		c->timer_due_ns = 0;
}

/*
 * Sub-tick enforcement. The tick comes every 4 ms, a budget lasts tens of
 * µs, so each CPU has one BPF timer, pinned to it, armed for the next
 * instant its state must change (enum mq_cpu_timer). Owner CPU only:
 * BPF_F_TIMER_CPU_PIN pins to the calling CPU.
 *
 * An armed timer that fires no later than the new instant is kept: it
 * fires first, and budget_timer_fn() arms it again for the rest. Starting
 * a timer from a scheduler callback is costly since 7.x: interrupts are
 * off there, so bpf_timer_start() queues the start to an irq_work, and the
 * self-interrupt and the hrtimer programming run the moment interrupts
 * come back on, which at running() is just before the woken task gets to
 * user space. Started from the timer's own callback (a softirq) it is a
 * plain hrtimer_start(). So the timer keeps ticking every class slice
 * while class work comes and goes (HEARTBEAT), and running() finds it
 * armed early enough instead of starting it: in the demo under TCG that
 * took 13-29 µs off MicroQuanta's median wakeup latency (docs/MICROQUANTA.md).
 * Returns the CLOCK_MONOTONIC time it armed at.
 */
static u64 timer_arm(struct cpu_ctx *c, u32 timer_for, u64 after_ns)
{
	u64 now = bpf_ktime_get_ns();

	if (after_ns < MQ_MIN_TIMER_NS)
		after_ns = MQ_MIN_TIMER_NS;
	c->timer_for = timer_for;
	c->timer_want_ns = now + after_ns;
	if (c->timer_due_ns && c->timer_due_ns <= c->timer_want_ns &&
	    c->timer_due_ns + MQ_TIMER_LOST_NS > now) {
		stat_inc(MQ_STAT_TIMER_KEPT);
		return now;
	}
	timer_start(c, now, after_ns);
	return now;
}

/*
 * The timer fired at @now: whether it fired before what it stands for is
 * due, which is still pending (a kept timer, see timer_arm). Then it is
 * armed again for the rest, and nothing else happens.
 */
static bool timer_fired_early(struct cpu_ctx *c, u64 now)
{
	bool live;

	switch (c->timer_for) {
	case MQ_TIMER_SLICE_END:
	case MQ_TIMER_BUDGET_END:
		live = runs_class(c);
		break;
	case MQ_TIMER_REFILL:
		live = throttled(c);
		break;
	case MQ_TIMER_RT_GRACE:
		live = held_by_rt(c) && c->rt_grace;
		break;
	default:
		live = false;
	}
	if (!live || c->timer_want_ns <= now + MQ_MIN_TIMER_NS)
		return false;
	stat_inc(MQ_STAT_TIMER_EARLY);
	timer_start(c, now, c->timer_want_ns - now);
	return true;
}

/*
 * cpu_release(): the local queue waits for the RT task to leave, for one
 * grace at most (budget_timer_fn() ends it).
 */
static void rt_grace_start(struct cpu_ctx *c, u64 grace_ns)
{
	c->rt_grace = 1;
	timer_arm(c, MQ_TIMER_RT_GRACE, grace_ns);
}

/*
 * How long the timer waits for a bound that may end late: a round-robin
 * turn, or the RT grace. Each starts when a thread takes the CPU (a class
 * task at running(), an RT task at cpu_release()), and the timer is left
 * armed when the thread sleeps first. Periodic threads wake at round
 * periods, often a whole number of slices or class periods apart (the
 * demo's thread: every 1000 µs, the default slice and the class period
 * under TCG), so a timer of exactly @ns fires at the thread's next wakeup,
 * about half the time between its timer interrupt and its return to user
 * space, whose switch then waits for our callback. A quarter later, it
 * fires past that return, while the thread runs or sleeps again. Periods
 * dividing 1¼ times @ns meet it instead (docs/MICROQUANTA.md, "The budget
 * timer's phase"). Deadlines that must be exact (the budget end, the
 * refill) are not timed with this.
 */
static u64 off_the_next_wakeup(u64 ns)
{
	return ns + ns / 4;
}

/*
 * While class work runs the timer fires at the end of each round-robin
 * slice (off_the_next_wakeup()) and at the end of the budget, whichever
 * comes first.
 */
static void timer_arm_class_step(struct cpu_ctx *c)
{
	u64 step = off_the_next_wakeup(class_slice_ns);
	u32 timer_for = MQ_TIMER_SLICE_END;

	if (c->budget_left_ns <= step) {
		step = c->budget_left_ns;
		timer_for = MQ_TIMER_BUDGET_END;
	}
	c->budget_left_ns -= step;
	c->class_seen_ns = timer_arm(c, timer_for, step);
}

#endif /* __MICROQUANTA_CPU_STATE_BPF_H */
