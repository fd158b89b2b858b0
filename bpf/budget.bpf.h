/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * budget.bpf.h - the MicroQuanta bandwidth: per-CPU credit and the timer
 * callback that enforces it below the tick. Included once, by main.bpf.c,
 * after the maps and the small helpers it uses; the states it moves through
 * are in cpu_state.bpf.h. Kept apart because it is the part of the
 * scheduler with its own invariants:
 *
 * - credit grows at runtime/period of wall time, falls by class run time,
 *   and stays within +-2 periods (credit_limit);
 * - only the owning CPU writes its credit; a wakeup enqueued on that CPU's
 *   rq reads it (a stale read costs a kick, never a wrong budget), and a
 *   normal wakeup elsewhere learns that class work runs past its budget
 *   from overbudget_cpus (cpu_state.bpf.h), not from the credit;
 * - timers only kick: dispatch() and running() decide on the rq clock.
 */
#ifndef __MICROQUANTA_BUDGET_BPF_H
#define __MICROQUANTA_BUDGET_BPF_H

static s64 credit_limit(void)
{
	return 2 * (s64)mq_period_ns;
}

/*
 * The credit @c would have at @now, without writing it: other CPUs use this
 * to decide whether a wakeup may preempt.
 */
static s64 credit_at(const struct cpu_ctx *c, u64 now)
{
	s64 credit = c->credit_ns;
	u64 delta, full_ns;

	if (now <= c->credit_at_ns)
		return credit;
	/*
	 * Going from the lowest credit (-2 periods) to the highest (+2) takes
	 * 4 * period * period / runtime of wall time; beyond that the clamp
	 * decides. Bounding delta there keeps delta * runtime <= 5 * period^2,
	 * far from overflow for periods up to the 1 s the loader allows. (A
	 * bound of 4 periods would starve a CPU that has been idle of credit
	 * whenever runtime < period.)
	 */
	delta = now - c->credit_at_ns;
	full_ns = (4 * mq_period_ns / mq_runtime_ns + 1) * mq_period_ns;
	if (delta > full_ns)
		delta = full_ns;
	credit += delta * mq_runtime_ns / mq_period_ns;
	return credit > credit_limit() ? credit_limit() : credit;
}

/* Owner CPU only: bring the credit up to @now. */
static void credit_refill(struct cpu_ctx *c, u64 now)
{
	c->credit_ns = credit_at(c, now);
	if (now > c->credit_at_ns)
		c->credit_at_ns = now;
}

/* Owner CPU only: charge MicroQuanta time consumed up to @now. */
static void credit_charge(struct cpu_ctx *c, u64 now)
{
	s64 credit;

	credit_refill(c, now);
	if (now <= c->mq_charged_ns)
		return;
	stat_add(MQ_STAT_MQ_RUN_NS, now - c->mq_charged_ns);
	credit = c->credit_ns - (s64)(now - c->mq_charged_ns);
	c->credit_ns = credit < -credit_limit() ? -credit_limit() : credit;
	c->mq_charged_ns = now;
}

/*
 * Hysteresis: a throttled CPU lets class work back in once the credit is
 * worth a whole runtime again, not the moment it turns positive. Otherwise
 * the class would run in slivers of a few ns between two context switches,
 * all overhead; this way it gets `runtime` worth of credit per period, as
 * the kernel patch's class does.
 */
static bool budget_allows_class(const struct cpu_ctx *c)
{
	/* The timer measures time on CLOCK_MONOTONIC, the credit on the rq
	 * clock; once the timer says the refill is done (UNTHROTTLE_DUE), any
	 * positive credit will do rather than a second round trip over a clock
	 * skew. */
	if (c->budget == MQ_BUDGET_THROTTLED)
		return c->credit_ns >= (s64)mq_runtime_ns;
	return c->credit_ns > 0;
}

/* Time until @credit is worth a whole runtime again, growing at runtime/period. */
static u64 refill_wait_ns(s64 credit)
{
	s64 missing = (s64)mq_runtime_ns - credit;

	return missing > 0 ? (u64)missing * mq_period_ns / mq_runtime_ns : 0;
}

/*
 * The budget timer (armed in cpu_state.bpf.h) only kicks its CPU with
 * SCX_KICK_PREEMPT; dispatch() and running() decide with the rq clock.
 * Outside the scheduler's callbacks the clock scx_bpf_now() returns can lag,
 * and a decision taken on it here would re-arm the timer on stale credit.
 */
static int budget_timer_fn(void *map, int *key, struct bpf_timer *timer)
{
	s32 cpu = *key;
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	if (!c)
		return 0;
	if (cpu != bpf_get_smp_processor_id())
		stat_inc(MQ_STAT_TIMER_MIGRATED);
	if (runs_class(c)) {
		/* A refill step still armed while class work runs means dispatch
		 * throttled and then found nothing else to run here: the budget
		 * is spent just as at BUDGET_END. */
		bool budget_end = c->timer_for != MQ_TIMER_SLICE_END;

		/* Marked before looking for normal work: a normal task enqueued
		 * after this look finds the mark (kick_overbudget_cpu). */
		if (budget_end)
			class_past_budget(cpu);
		/* Budget spent and normal work waits: throttle. */
		if (budget_end && normal_work_waiting(cpu)) {
			stat_inc(MQ_STAT_TIMER_THROTTLE);
			class_told_to_yield(c);
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
			return 0;
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
			return 0;
		}
		timer_arm_class_step(c);
		return 0;
	}
	/* Whatever the timer stands for: a class task that stopped before its
	 * step ended leaves the timer armed, and a throttled CPU checks its
	 * refill then too. */
	if (throttled(c) && scx_bpf_dsq_nr_queued(mq_dsq(cpu)) > 0) {
		stat_inc(MQ_STAT_TIMER_UNTHROTTLE);
		budget_unthrottle_due(c);
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
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

	bpf_rcu_read_lock();
	cpu = overbudget_cpus ?
		bpf_cpumask_any_and_distribute(cast_mask(overbudget_cpus), p->cpus_ptr) :
		nr_cpus;
	bpf_rcu_read_unlock();
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
