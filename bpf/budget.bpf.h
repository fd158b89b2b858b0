/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * budget.bpf.h - the MicroQuanta bandwidth: per-CPU credit and the timer
 * callback that enforces it below the tick. Included once, by main.bpf.c,
 * after the maps and the small helpers it uses; the states it moves through
 * are in cpu_state.bpf.h. Kept apart because it is the part of the
 * scheduler with its own invariants:
 *
 * - each class group has its own credit on each CPU (struct grp_budget),
 *   with its own runtime/period (group_bw: the loader's for the default
 *   group, the pinned group map's for the others);
 * - credit grows at runtime/period of wall time, falls by the class run
 *   time of that group's tasks, netted, and stays within +-2 periods
 *   (credit_limit) except for credit owed to or by a group that waited or
 *   overran while others waited (credit_at);
 * - only the owning CPU writes its credit; a wakeup enqueued on that CPU's
 *   rq reads it (a stale read costs a kick, never a wrong budget), and a
 *   normal wakeup elsewhere learns that class work runs past its budget
 *   from overbudget_cpus (cpu_state.bpf.h), not from the credit;
 * - timers only kick: dispatch() and running() decide on the rq clock.
 */
#ifndef __MICROQUANTA_BUDGET_BPF_H
#define __MICROQUANTA_BUDGET_BPF_H

/*
 * A group's bandwidth: runtime out of every period, per CPU. It is passed
 * and returned by value, which BPF calls cannot do (no aggregate returns,
 * at most 5 register arguments), so every function taking or returning one
 * is __always_inline rather than left to the compiler's inlining choice.
 */
struct mq_bw {
	u64 period_ns;
	u64 runtime_ns;
};

/*
 * The bandwidth of group @g: the loader's for the default group, else the
 * group map's (read once into locals: userspace may rewrite the slot). A
 * slot that is not in use or holds nonsense counts as the default group,
 * as its members do.
 */
static __always_inline struct mq_bw group_bw(u32 g)
{
	struct mq_bw bw = { .period_ns = mq_period_ns, .runtime_ns = mq_runtime_ns };
	struct mq_group *grp;
	u64 period, runtime;

	if (g == MQ_DEFAULT_GROUP)
		return bw;
	grp = lookup_group(g);
	if (!grp || !grp->in_use)
		return bw;
	period = grp->period_ns;
	runtime = grp->runtime_ns;
	if (period && runtime && runtime <= period) {
		bw.period_ns = period;
		bw.runtime_ns = runtime;
	}
	return bw;
}

static __always_inline s64 credit_limit(struct mq_bw bw)
{
	return 2 * (s64)bw.period_ns;
}

/* Credit owed to a group that waited for it: see credit_at. */
#define MQ_OWED_PERIODS 6

static __always_inline s64 credit_owed_limit(struct mq_bw bw)
{
	return MQ_OWED_PERIODS * (s64)bw.period_ns;
}

/* Wall time in which a group repays the most debt it may owe (see credit_debt_limit). */
#define MQ_DEBT_REPAY_NS (100ULL * 1000 * 1000)

/*
 * Debt owed by a group that overran while normal work waited: what it
 * repays in MQ_DEBT_REPAY_NS of wall time, and never less than the credit
 * a waiting group is owed (so a group below 6 periods * period / 100 ms of
 * runtime, e.g. 10/1000 us, may repay for longer). Bounded in repayment
 * time rather than in periods because what it bounds is an emulator's
 * stall or a timer that fired milliseconds late, whatever the period.
 */
static __always_inline s64 credit_debt_limit(struct mq_bw bw)
{
	s64 repay = MQ_DEBT_REPAY_NS * bw.runtime_ns / bw.period_ns;

	return repay > credit_owed_limit(bw) ? repay : credit_owed_limit(bw);
}

/*
 * The credit @gb would have at @now after @used_ns of its group's class time
 * since it was last brought up to date, without writing it: other CPUs use
 * this (with nothing used) to decide whether a wakeup may preempt.
 *
 * What the group earned and what it used are netted before the clamps:
 * clamping the earnings first took from a running group, between two
 * charges, all it earned past the limit while it was spending it.
 *
 * The clamps keep +-2 periods (credit_limit) where they mean something: an
 * idle group banks no more (a burst after a sleep is bounded), and class
 * work that ran while no normal work waited owes no more (the CPU was free).
 * Credit a group earns while its work waits here for budget (THROTTLED,
 * UNTHROTTLE_DUE) and then for the switch to it (let_in, from dispatch()'s
 * decision to running()) is kept up to MQ_OWED_PERIODS, and debt it runs up while
 * normal work waits (@normal_waits) up to credit_debt_limit: a late refill
 * or a late throttle (a budget timer that fires late, a vCPU the emulator
 * stalls, a tick doing the timer's work) then shifts when the group runs,
 * not how much. Clamped at 2 periods, a group at 600/1000 µs lost what it
 * earned past 3.3 ms of waiting and one at 200/1000 µs was forgiven what
 * it ran past 2.5 ms of overrun; clamped at 6, a group at 25/100 µs on a
 * host that stalled the guest for up to 8.5 ms was forgiven 1.2-1.6% of
 * the CPU. Owed credit stays bounded in periods: it is a burst normal work
 * waits through, while debt only keeps the group that ran it up waiting.
 */
static __always_inline s64 credit_at(const struct grp_budget *gb, struct mq_bw bw, u64 now,
				     u64 used_ns, bool normal_waits)
{
	s64 owed = credit_owed_limit(bw), debt = credit_debt_limit(bw);
	s64 before = gb->credit_ns, credit, hi, lo;
	u64 delta, full_ns;

	/* A slot reused by a group with another bandwidth starts within its limits. */
	if (before < -debt)
		before = -debt;
	if (before > owed)
		before = owed;
	credit = before;
	if (now > gb->credit_at_ns) {
		/*
		 * Going from the lowest credit to the highest takes (debt +
		 * owed) * period / runtime of wall time; beyond that the clamps
		 * decide. Bounding delta there keeps delta * runtime below
		 * (debt + owed + runtime) * period, with debt at most 6 periods
		 * or 100 ms: under 1.3e19, clear of u64 overflow, for periods
		 * up to the 1 s the loader allows. (A bound in periods
		 * would starve a CPU that has been idle of credit whenever
		 * runtime < period.)
		 */
		delta = now - gb->credit_at_ns;
		full_ns = (u64)(debt + owed) * bw.period_ns / bw.runtime_ns + bw.period_ns;
		if (delta > full_ns)
			delta = full_ns;
		credit += delta * bw.runtime_ns / bw.period_ns;
	}
	/* Class time between two charges is bounded by a tick (the tick
	 * charges) unless the guest stalls; past debt + owed the clamp
	 * decides alone, and this bound keeps a wild value out of the sum. */
	if (used_ns > (u64)(debt + owed))
		used_ns = debt + owed;
	credit -= (s64)used_ns;

	/* Owed credit is not cut when the group gets in (it drains as it runs). */
	hi = gb->state != MQ_BUDGET_OK || gb->let_in ? owed :
	     before > credit_limit(bw) ? before : credit_limit(bw);
	lo = normal_waits ? -debt :
	     before < -credit_limit(bw) ? before : -credit_limit(bw);
	if (credit > hi)
		return hi;
	return credit < lo ? lo : credit;
}

/* Owner CPU only: bring @gb's credit up to @now, charging @used_ns; returns it. */
static __always_inline s64 credit_update(struct grp_budget *gb, struct mq_bw bw, u64 now,
					 u64 used_ns, bool normal_waits)
{
	gb->credit_ns = credit_at(gb, bw, now, used_ns, normal_waits);
	if (now > gb->credit_at_ns)
		gb->credit_at_ns = now;
	return gb->credit_ns;
}

/* Owner CPU only: charge the running class task's group @used_ns of class time at @now. */
static void credit_charge_ns(struct cpu_ctx *c, u64 now, u64 used)
{
	stat_add(MQ_STAT_MQ_RUN_NS, used);
	credit_update(grp_of(c, c->run_group), group_bw(c->run_group), now, used,
		      used && normal_work_waiting(bpf_get_smp_processor_id()));
}

/* Owner CPU only: charge the running class task's group for its time up to @now. */
static void credit_charge(struct cpu_ctx *c, u64 now)
{
	credit_charge_ns(c, now, now > c->mq_charged_ns ? now - c->mq_charged_ns : 0);
	if (now > c->mq_charged_ns)
		c->mq_charged_ns = now;
}

/*
 * Owner CPU only: @g's credit here at @now. The running class task's group
 * is charged on the way (netted, see credit_at), any other is refilled.
 */
static s64 credit_refill(struct cpu_ctx *c, u32 g, u64 now)
{
	if (runs_class(c) && g == c->run_group) {
		credit_charge(c, now);
		return grp_of(c, g)->credit_ns;
	}
	return credit_update(grp_of(c, g), group_bw(g), now, 0, false);
}

/*
 * Owner CPU only. Hysteresis: a throttled group gets back in once its
 * credit is worth a whole runtime again, not the moment it turns positive.
 * Otherwise the class would run in slivers of a few ns between two context
 * switches, all overhead; this way it gets `runtime` worth of credit per
 * period, as the kernel patch's class does.
 */
static bool budget_allows_group(struct cpu_ctx *c, u32 g, u64 now)
{
	struct grp_budget *gb = grp_of(c, g);
	struct mq_bw bw = group_bw(g);
	s64 credit = credit_refill(c, g, now);

	/* The timer measures time on CLOCK_MONOTONIC, the credit on the rq
	 * clock; once the timer says the refill is done (UNTHROTTLE_DUE), any
	 * positive credit will do rather than a second round trip over a clock
	 * skew. */
	if (gb->state == MQ_BUDGET_THROTTLED)
		return credit >= (s64)bw.runtime_ns;
	return credit > 0;
}

/* Time until @g's credit here is worth a whole runtime again, growing at runtime/period. */
static u64 refill_wait_ns(struct cpu_ctx *c, u32 g)
{
	struct mq_bw bw = group_bw(g);
	s64 missing = (s64)bw.runtime_ns - grp_of(c, g)->credit_ns;

	return missing > 0 ? (u64)missing * bw.period_ns / bw.runtime_ns : 0;
}

/*
 * Owner CPU only, from the tick: whether a throttled group with class work
 * queued here has earned its budget back. At most MQ_MAX_GROUPS steps, and
 * only for the groups throttled here.
 */
static bool throttled_group_refilled(struct cpu_ctx *c, u64 now)
{
	u32 g;

	bpf_for(g, 0, MQ_MAX_GROUPS) {
		if (!(c->throttled_groups & (1U << g)))
			continue;
		if (budget_allows_group(c, g, now))
			return true;
	}
	return false;
}

/*
 * Global functions of the budget: the verifier checks each once, with its
 * arguments unknown, instead of at every call site and in every iteration
 * of dispatch's loops, where the inlined credit arithmetic multiplied the
 * instructions it verified. Scalar arguments only (a global function
 * cannot take a map value holding a timer): each looks its CPU up itself.
 */

/* Owner CPU only: credit_charge() for @cpu. */
__noinline int cpu_charge(s32 cpu, u64 now)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	if (c)
		credit_charge(c, now);
	return 0;
}

/*
 * Owner CPU only, as its class task stops with @sum_exec_ns of CPU time by
 * the kernel's count (its sum_exec_runtime): charge the rest of the run by
 * the rq clock, then whatever the kernel counted for the run (since
 * running()) beyond what the clock charged (from running()'s stamp to the
 * last charge's). The kernel counts a run from the clock update of the schedule()
 * that picked it, so the pick (dispatch() and the switch) is the new task's
 * time, while running() reads the clock afresh after a pick that ran
 * dispatch() (balancing unpins the rq lock, which invalidates the clock
 * scx_bpf_now() returns). Under TCG that was 37 us a run: a thread at
 * 200/1000 us got 21.3% of the CPU by its own CPU time, its budget 20.0%.
 */
__noinline int cpu_charge_stop(s32 cpu, u64 now, u64 sum_exec_ns)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	u64 counted, charged;

	if (!c)
		return 0;
	credit_charge(c, now);
	counted = sum_exec_ns > c->run_exec_ns ? sum_exec_ns - c->run_exec_ns : 0;
	charged = c->mq_charged_ns - c->run_start_ns;
	if (counted > charged)
		credit_charge_ns(c, now, counted - charged);
	return 0;
}

/* Owner CPU only: budget_allows_group() for @cpu. */
__noinline int group_may_run(s32 cpu, u32 g, u64 now)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	return c && budget_allows_group(c, g & (MQ_MAX_GROUPS - 1), now);
}

/*
 * Any CPU, without its lock: whether a class wakeup of group @g placed on
 * @cpu would run there now as far as the budget goes, by the rules of
 * budget_allows_group() but without bringing the credit up to date. A
 * stale read costs one worse placement, nothing more.
 */
__noinline int group_has_budget_on(s32 cpu, u32 g, u64 now)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	struct grp_budget *gb;
	struct mq_bw bw;
	s64 credit;

	if (!c)
		return 0;
	g &= MQ_MAX_GROUPS - 1;
	gb = grp_of(c, g);
	bw = group_bw(g);
	credit = credit_at(gb, bw, now, 0, false);
	if (gb->state == MQ_BUDGET_THROTTLED)
		return credit >= (s64)bw.runtime_ns;
	return credit > 0;
}

/* Owner CPU only: throttled_group_refilled() for @cpu. */
__noinline int group_refilled(s32 cpu, u64 now)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	return c && throttled_group_refilled(c, now);
}

/*
 * The budget timer (armed in cpu_state.bpf.h) only kicks its CPU with
 * SCX_KICK_PREEMPT; dispatch() and running() decide with the rq clock.
 * Outside the scheduler's callbacks the clock scx_bpf_now() returns can lag,
 * and a decision taken on it here would re-arm the timer on stale credit.
 */
static void budget_timer_act(struct cpu_ctx *c, s32 cpu)
{
	/* An RT or deadline task has held the CPU for the grace: the work
	 * waiting in its local queue goes through enqueue() again, normal
	 * work to the shared queue, class work to other CPUs (see
	 * mq_cpu_release()). Pinned, the timer runs on that CPU, whose local
	 * queue this is; one that ran elsewhere leaves it. */
	if (c->timer_for == MQ_TIMER_RT_GRACE && held_by_rt(c) && c->rt_grace) {
		c->rt_grace = 0;
		if (cpu == bpf_get_smp_processor_id() &&
		    scx_bpf_reenqueue_local_from_anywhere() == 0)
			stat_inc(MQ_STAT_RT_REENQ);
		return;
	}
	if (runs_class(c)) {
		/* A refill step still armed while class work runs means dispatch
		 * throttled and then found nothing else to run here: the budget
		 * is spent just as at BUDGET_END. A heartbeat counts as a slice
		 * end (running() arms a step for every class task it starts). */
		bool budget_end = c->timer_for == MQ_TIMER_BUDGET_END ||
				  c->timer_for == MQ_TIMER_REFILL;

		/* The running task's group's budget is spent. Marked before
		 * looking for normal work: a normal task enqueued after this
		 * look finds the mark (kick_overbudget_cpu). */
		if (budget_end)
			class_past_budget(cpu);
		/* Budget spent and normal work waits: throttle. */
		if (budget_end && normal_work_waiting(cpu)) {
			stat_inc(MQ_STAT_TIMER_THROTTLE);
			class_told_to_yield(c);
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
			return;
		}
		/* Budget spent with nothing normal waiting: the class may use the
		 * whole CPU (a normal task that arrives kicks us, see
		 * kick_overbudget_cpu); from now on only slices are timed. */
		if (budget_end) {
			c->budget_left_ns = (u64)-1;
		} else if (scx_bpf_dsq_nr_queued(mq_dsq(cpu)) > 0) {
			/* Slice over and another class task waits: round-robin. */
			stat_inc(MQ_STAT_TIMER_ROUND_ROBIN);
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
			return;
		}
		timer_arm_class_step(c);
		return;
	}
	/* Whatever the timer stands for: a class task that stopped before its
	 * step ended leaves the timer armed, and a throttled CPU checks its
	 * refill then too. */
	if (throttled(c) && scx_bpf_dsq_nr_queued(mq_dsq(cpu)) > 0) {
		stat_inc(MQ_STAT_TIMER_UNTHROTTLE);
		if (c->timer_for == MQ_TIMER_REFILL)
			budget_unthrottle_due(c, c->refill_group);
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
	}
}

/*
 * The CPU's timer: what it stands for (enum mq_cpu_timer) is acted on, or
 * it fired early and is armed again for the rest (timer_fired_early). Left
 * unarmed after class work was here within two slices, it is armed a slice
 * on (HEARTBEAT), so that the next class task to start here finds it armed
 * (see timer_arm); the heartbeat stops two slices after the class work.
 */
static int budget_timer_fn(void *map, int *key, struct bpf_timer *timer)
{
	s32 cpu = *key;
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	u64 now = bpf_ktime_get_ns();

	if (!c)
		return 0;
	if (cpu != bpf_get_smp_processor_id())
		stat_inc(MQ_STAT_TIMER_MIGRATED);
	c->timer_due_ns = 0;
	if (timer_fired_early(c, now))
		return 0;
	budget_timer_act(c, cpu);
	if (!c->timer_due_ns && now < c->class_seen_ns + 2 * class_slice_ns) {
		stat_inc(MQ_STAT_TIMER_HEARTBEAT);
		timer_arm(c, MQ_TIMER_HEARTBEAT, class_slice_ns);
	}
	return 0;
}

/*
 * A normal task just became runnable: a CPU where class work runs past its
 * budget must give way now, not when its own timer next looks. Such CPUs
 * are in overbudget_cpus (marked by the budget timer, the tick, or running()
 * without credit; cleared when the class task stops), so this is one pick,
 * not a scan: any one allowed for @p, spread round-robin.
 */
static void kick_overbudget_cpu(const struct task_struct *p)
{
	u64 now = scx_bpf_now();
	struct cpu_ctx *c;
	s32 cpu;

	cpu = overbudget_cpus ?
		bpf_cpumask_any_and_distribute(cast_mask(overbudget_cpus), p->cpus_ptr) :
		nr_cpus;
	if (cpu >= nr_cpus)
		return;
	c = lookup_cpu_ctx(cpu);
	/* The mark is cleared at stopping; a racing stop leaves nothing to kick. */
	if (!c || !runs_class(c))
		return;
	stat_inc(MQ_STAT_OVERBUDGET_KICK);
	/* Class work past its budget was allowed while nothing else wanted
	 * the CPU: its overrun starts now. */
	if (now > c->budget_out_ns)
		c->budget_out_ns = now;
	class_told_to_yield(c);
	scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
}

#endif /* __MICROQUANTA_BUDGET_BPF_H */
