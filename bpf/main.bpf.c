/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * scx_microquanta: the MicroQuanta scheduling class as a sched_ext scheduler.
 *
 * Google's Snap runs its "spreading" engines as ordinary threads that sleep
 * until a NIC or an application interrupt wakes them. That only gives low
 * latency if such a thread runs *at once* when woken, yet a busy-looping
 * engine must never starve the rest of the machine. Google's MicroQuanta
 * kernel class does both: a MicroQuanta thread preempts normal work
 * immediately, but per CPU it may only use `runtime` out of every `period`
 * while normal tasks want that CPU.
 *
 * sched_ext sits *below* the fair class, so we run in full-switch mode and
 * schedule every normal task and kernel thread ourselves:
 *
 *   wakeup of a MicroQuanta thread           wakeup of a normal task
 *        |                                        |
 *   select_cpu: idle core > idle CPU >      select_cpu: idle CPU -> its local DSQ
 *     CPU without MicroQuanta work where      |
 *     its group has budget > CPU with       enqueue: shared vtime DSQ (NORMAL_DSQ)
 *     fewest MicroQuanta tasks                |
 *        |                                        |
 *   enqueue: budget left and no class work   enqueue: + preempt the normal task
 *     there -> head of its local DSQ,           on its CPU if it is half a
 *     preempting; else that CPU's FIFO          slice of vtime ahead
 *     (MQ_DSQ+cpu) + SCX_KICK_PREEMPT           |
 *        \____________________  __________________/
 *                             \/
 *   dispatch(cpu): own MicroQuanta FIFO, then other CPUs' FIFOs (steal),
 *                  then NORMAL_DSQ -- unless this CPU's MicroQuanta budget is
 *                  spent and normal work is waiting (throttled).
 *
 * The normal task a class wakeup preempts keeps the rest of its slice and
 * waits at the head of the local DSQ (cpu_state.bpf.h: displaced_kept), so
 * it runs again when the class task leaves without enqueue or dispatch.
 *
 * Bandwidth is fair-queued as in the kernel patch: per CPU, a credit grows at
 * runtime/period of wall time and shrinks by the MicroQuanta time consumed,
 * clamped to +-2 periods. The scheduler tick (HZ=250: 4 ms) is far too
 * coarse for budgets of tens of µs, so per-CPU BPF timers throttle and
 * unthrottle at the right instant; the tick only backs them up. That part
 * lives in budget.bpf.h; what each CPU runs, whether its budget lets class
 * work in and what its timer stands for are the states of cpu_state.bpf.h.
 *
 * Normal tasks get weighted virtual-time fairness charged with the runtime
 * actually measured between running() and stopping(). Class membership is
 * a pinned map of thread ids, inherited across fork (init_task).
 */
#include <scx/common.bpf.h>
#include "intf.h"
#include "hist.bpf.h"

char _license[] SEC("license") = "GPL";

/* Set by the loader before the program is loaded. */
const volatile u64 normal_slice_ns = 3000ULL * NSEC_PER_USEC;
const volatile u64 class_slice_ns = 1000ULL * NSEC_PER_USEC;
const volatile u64 mq_period_ns = 40ULL * NSEC_PER_USEC;
const volatile u64 mq_runtime_ns = 20ULL * NSEC_PER_USEC;
const volatile u32 nr_cpus = 1;

/* CPUs of queued_cpus a dispatch looks at before giving up a steal. */
#define MQ_STEAL_TRIES 4

UEI_DEFINE(uei);

/*
 * Written once, by exit(), after the exit reason: the loader sleeps on this
 * ring buffer's descriptor, so it learns of an ejection at once without
 * polling (the kernel keeps the struct_ops link attached when it disables
 * the scheduler, so the link does not tell).
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} exit_notify SEC(".maps");

/* Virtual time of the most recently started normal task. */
static u64 vtime_now;

/*
 * The MicroQuanta class: thread ids (the kernel's pid) and the class group
 * each belongs to. Pinned by the loader under /sys/fs/bpf so that root can
 * add and remove threads while the scheduler runs, and so that membership
 * survives a scheduler restart.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MQ_MAX_TASKS);
	__type(key, u32);
	__type(value, struct mq_member);
} mq_tasks SEC(".maps");

/*
 * The class groups (struct mq_group), indexed by group id; pinned like the
 * class map and written by userspace only (mq_class::Groups), which checks
 * names, budgets and the per-CPU cap. Slot MQ_DEFAULT_GROUP mirrors the
 * loader's budget for listings; BPF reads that budget from rodata.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MQ_MAX_GROUPS);
	__type(key, u32);
	__type(value, struct mq_group);
} mq_groups SEC(".maps");

static struct mq_group *lookup_group(u32 g)
{
	u32 key = g;

	return bpf_map_lookup_elem(&mq_groups, &key);
}

#include "cpu_state.bpf.h"

/*
 * A plain array rather than a per-CPU one: placement reads other CPUs'
 * entries. Those reads race with the owner's writes, which only costs a
 * slightly stale placement decision; who writes what is in cpu_state.bpf.h.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MQ_MAX_CPUS);
	__type(key, u32);
	__type(value, struct cpu_ctx);
} cpu_ctxs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MQ_NR_STATS);
	__type(key, u32);
	__type(value, u64);
} stats SEC(".maps");

/* Per-CPU histograms (enum mq_hist_idx), read by `--stats`/`--monitor`. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MQ_NR_HISTS);
	__type(key, u32);
	__type(value, struct mq_hist);
} hists SEC(".maps");

/*
 * A class thread's wakeup as it was inserted, by enqueue() or by select_cpu():
 * when (0: no wakeup waits), and the group task_group() gave for the CPU it
 * was placed on. running() measures the wakeup from here and, on that CPU,
 * takes the group from here instead of looking the thread up again: the
 * lookup is a hash walk, and this lookup of the task's storage is needed
 * anyway. (A change of membership in between counts from the next run.)
 */
struct task_ctx {
	u64 wake_enq_ns;
	s32 wake_cpu;
	s32 wake_group;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

/* A class wakeup of group @g is inserted for @cpu at @now (see struct task_ctx). */
static void class_wakeup_inserted(struct task_struct *p, s32 cpu, u32 g, u64 now)
{
	struct task_ctx *t = bpf_task_storage_get(&task_ctxs, p, NULL,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (t) {
		t->wake_enq_ns = now;
		t->wake_cpu = cpu;
		t->wake_group = g;
	}
}

static void stat_add(u32 idx, u64 val)
{
	u64 *cnt = bpf_map_lookup_elem(&stats, &idx);

	if (cnt)
		*cnt += val;
}

static void stat_inc(u32 idx)
{
	stat_add(idx, 1);
}

static void hist_add(u32 idx, u64 val)
{
	struct mq_hist *h = bpf_map_lookup_elem(&hists, &idx);

	if (h)
		hist_record(h, val);
}

static struct cpu_ctx *lookup_cpu_ctx(s32 cpu)
{
	u32 key = cpu;

	return bpf_map_lookup_elem(&cpu_ctxs, &key);
}

static u64 mq_dsq(s32 cpu)
{
	return MQ_DSQ_BASE + (u64)cpu;
}

/* Whether @cpu is in @grp's CPU set (a group without one has every CPU). */
static bool group_has_cpu(struct mq_group *grp, s32 cpu)
{
	u32 word = (u32)cpu / 64;
	u64 *bits;

	if (!grp->has_cpus)
		return true;
	if (cpu < 0 || cpu >= MQ_MAX_CPUS)
		return false;
	/* Bounds-checked in a way the verifier follows (clang folds a mask). */
	bits = MEMBER_VPTR(*grp, .cpus[word]);
	return bits && (*bits >> ((u32)cpu % 64)) & 1;
}

/*
 * The class group of @p if it is a class thread on @cpu (-1: any CPU), else
 * -1. One hash lookup for any task, one array lookup more for a member of a
 * group other than the default. A member of a group whose slot is not in use
 * (or an id out of range) belongs to the default group; a member of a group
 * with a CPU set is a normal thread on the CPUs outside it.
 */
static s32 task_group(const struct task_struct *p, s32 cpu)
{
	u32 tid = p->pid;
	struct mq_member *m = bpf_map_lookup_elem(&mq_tasks, &tid);
	struct mq_group *grp;
	u32 g;

	if (!m)
		return -1;
	g = m->group;
	if (g == MQ_DEFAULT_GROUP || g >= MQ_MAX_GROUPS)
		return MQ_DEFAULT_GROUP;
	grp = lookup_group(g);
	if (!grp || !grp->in_use)
		return MQ_DEFAULT_GROUP;
	if (cpu >= 0 && !group_has_cpu(grp, cpu))
		return -1;
	return g;
}

/* Normal work this CPU could run instead of MicroQuanta work. */
static bool normal_work_waiting(s32 cpu)
{
	return scx_bpf_dsq_nr_queued(MQ_NORMAL_DSQ) > 0 ||
	       scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL_ON | cpu) > 0;
}

/*
 * Whether @cpu's FIFO is empty: a clear queued_cpus bit says so without the
 * queue's lookup, a hash walk in the kernel (fifo_filled() sets the bit
 * with every insert); a set one may be stale, and the queue decides. A
 * steal racing an insert from enqueue() can leave the bit clear over one
 * task (cpu_state.bpf.h), so only decisions that tolerate a miss use this:
 * the wakeup's fast path (the wakeup goes ahead of that task) and
 * placement (a stale placement). dispatch() counts the queue itself.
 */
static bool fifo_empty(s32 cpu)
{
	struct bpf_cpumask *m = queued_cpus;

	if (m && !bpf_cpumask_test_cpu(cpu, cast_mask(m)))
		return true;
	return scx_bpf_dsq_nr_queued(mq_dsq(cpu)) == 0;
}

static bool cpu_has_mq_work(s32 cpu, const struct cpu_ctx *c)
{
	return runs_class(c) || !fifo_empty(cpu);
}

/*
 * @cpu may have become free of class work (a task stopped, RT left, its
 * FIFO drained): set its bit in free_cpus, then check, so that a racing
 * transition to busy (which clears after changing the state) always wins.
 */
static void cpu_may_be_free(s32 cpu)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	if (!c || held_by_rt(c) || cpu_has_mq_work(cpu, c))
		return;
	mask_set(free_cpus, cpu);
	if (held_by_rt(c) || cpu_has_mq_work(cpu, c))
		mask_clear(free_cpus, cpu);
}

/*
 * @cpu's FIFO was found empty: drop its queued_cpus hint, unless refilled
 * meanwhile. Without the hint there is nothing to do: whoever dropped it
 * (a dispatch that found the FIFO empty, a steal that emptied it) has
 * already set the CPU's free_cpus bit right, so a dispatch of an idle FIFO,
 * the common case, costs one bit test here instead of a round of mask upkeep.
 */
static void fifo_found_empty(s32 cpu)
{
	struct bpf_cpumask *m = queued_cpus;

	/* Tested first: an atomic on every dispatch of an idle FIFO would
	 * bounce the mask's cache line. The clear is fully ordered before the
	 * second look at the queue (see fifo_filled()). */
	if (!m || !bpf_cpumask_test_cpu(cpu, cast_mask(m)) ||
	    !bpf_cpumask_test_and_clear_cpu(cpu, m))
		return;
	if (scx_bpf_dsq_nr_queued(mq_dsq(cpu)) > 0)
		mask_set(queued_cpus, cpu);
	else
		cpu_may_be_free(cpu);
}

#include "budget.bpf.h"

/*
 * Class work waits in a FIFO, this CPU's or one it may steal from: only
 * dispatch() takes it from there. queued_cpus is a hint that may name an
 * empty FIFO; a false yes costs one dispatch() that clears it.
 */
static bool class_work_queued(s32 cpu)
{
	if (scx_bpf_dsq_nr_queued(mq_dsq(cpu)) > 0)
		return true;
	return queued_cpus && !bpf_cpumask_empty(cast_mask(queued_cpus));
}

/* Class tasks running or queued on @cpu; an RT-held CPU counts as full. */
static u32 mq_load(s32 cpu)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	if (!c)
		return (u32)-1;
	/* A CPU held by an RT/deadline task comes last: we never preempt
	 * those, so a class task placed there just waits. */
	return (runs_class(c) ? 1 : 0) + scx_bpf_dsq_nr_queued(mq_dsq(cpu)) +
	       (held_by_rt(c) ? MQ_MAX_TASKS : 0);
}

/*
 * mq_load() for a wakeup of group @g: a CPU where @g's budget is spent
 * counts one more, as if a class task ran there, since the wakeup would
 * wait there for the refill while normal work runs.
 */
static u32 mq_load_for(s32 cpu, u32 g, u64 now)
{
	u32 load = mq_load(cpu);

	if (load < MQ_MAX_TASKS && !group_has_budget_on(cpu, g, now))
		load++;
	return load;
}

/*
 * A class wakeup placed by select_cpu() on @cpu, which runs no class work
 * (or is idle) and where @g has budget: inserted from here at the head of @cpu's local
 * queue (preempting the normal task there), the kernel skips enqueue(),
 * whose fast path would only repeat the checks just made, and the wakeup
 * runs one callback sooner. A group that dispatch() throttled there goes
 * through enqueue() as before. The checks are made without @cpu's rq lock:
 * a class task or an RT task that takes @cpu before the insert lands makes
 * this wakeup wait behind it, as a stale placement would.
 */
static s32 class_direct(struct task_struct *p, s32 cpu, u32 g, bool idle, u64 now)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	struct mq_group *grp;

	if (!c || group_throttled(c, g))
		return cpu;
	/* Outside its group's CPU set the thread is a normal one (task_group()). */
	if (g != MQ_DEFAULT_GROUP) {
		grp = lookup_group(g);
		if (grp && grp->in_use && !group_has_cpu(grp, cpu))
			return cpu;
	}
	class_wakeup_inserted(p, cpu, g, now);
	if (!idle)
		class_wakeup_displaces(c);
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, class_slice_ns,
			   idle ? 0 : SCX_ENQ_HEAD | SCX_ENQ_PREEMPT);
	stat_inc(MQ_STAT_MQ_ENQUEUE);
	stat_inc(MQ_STAT_DIRECT_PREEMPT);
	return cpu;
}

/*
 * Wakeup placement of a MicroQuanta thread, in the kernel patch's order:
 * a fully idle core, an idle CPU, a CPU running only normal work where the
 * thread's group has budget (the previous one first, for its warm cache;
 * else any from free_cpus, spread round-robin), else the less loaded of
 * the previous CPU and one other allowed CPU (two random choices: no scan
 * of every CPU's load), a spent budget counting as load; CPUs held by
 * RT/deadline tasks last.
 *
 * The budget test matters after an overrun: the CPU's credit is below
 * zero, it has no class work and so is in free_cpus, and a wakeup queued
 * there waits for the refill (up to 2 periods of debt at runtime/period)
 * while another CPU could run it at once.
 */
static s32 pick_mq_cpu(struct task_struct *p, s32 prev_cpu, u64 wake_flags, u32 g)
{
	u64 now = scx_bpf_now();
	struct cpu_ctx *c;
	bool is_idle = false, prev_spent = false;
	s32 cpu, other;
	u32 prev_load, other_load;

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle) {
		stat_inc(MQ_STAT_MQ_IDLE_PICK);
		return class_direct(p, cpu, g, true, now);
	}

	c = lookup_cpu_ctx(prev_cpu);
	if (c && !held_by_rt(c) && bpf_cpumask_test_cpu(prev_cpu, p->cpus_ptr) &&
	    !cpu_has_mq_work(prev_cpu, c)) {
		if (group_has_budget_on(prev_cpu, g, now)) {
			stat_inc(MQ_STAT_MQ_BUSY_PICK);
			return class_direct(p, prev_cpu, g, false, now);
		}
		prev_spent = true;
	}

	cpu = free_cpus ? bpf_cpumask_any_and_distribute(cast_mask(free_cpus), p->cpus_ptr)
			: nr_cpus;
	/* The rotor moves on each call: a second call gives a CPU other than
	 * prev_cpu whenever the task may run on two. */
	other = bpf_cpumask_any_distribute(p->cpus_ptr);
	if (other == prev_cpu)
		other = bpf_cpumask_any_distribute(p->cpus_ptr);
	/* The bit is read without the CPU's lock, as the loop over cpu_ctxs
	 * read their states; the load confirms it. */
	if (cpu < nr_cpus && mq_load_for(cpu, g, now) == 0) {
		stat_inc(MQ_STAT_MQ_BUSY_PICK);
		if (prev_spent)
			stat_inc(MQ_STAT_MQ_SPENT_SKIP);
		return class_direct(p, cpu, g, false, now);
	}

	stat_inc(MQ_STAT_MQ_CROWDED_PICK);
	prev_load = bpf_cpumask_test_cpu(prev_cpu, p->cpus_ptr) ?
		    mq_load_for(prev_cpu, g, now) : (u32)-1;
	other_load = other < nr_cpus ? mq_load_for(other, g, now) : (u32)-1;
	if (other_load < prev_load) {
		if (prev_spent)
			stat_inc(MQ_STAT_MQ_SPENT_SKIP);
		return other;
	}
	return prev_cpu;
}

s32 BPF_STRUCT_OPS(mq_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu, g = task_group(p, -1);

	if (g >= 0)
		return pick_mq_cpu(p, prev_cpu, wake_flags, (u32)g & (MQ_MAX_GROUPS - 1));

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle) {
		stat_inc(MQ_STAT_NORMAL_DIRECT);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, normal_slice_ns, 0);
	}
	return cpu;
}

/*
 * Wakeup preemption among normal tasks, as EEVDF does for a woken task with
 * positive lag: if the woken task is more than half a slice of virtual time
 * behind the normal task running on its CPU, that task yields now instead
 * of at the end of its slice. Without this a sleeper next to CPU hogs waits
 * for a whole slice on every wakeup.
 */
static void preempt_for_waker(const struct task_struct *p, u64 vtime)
{
	s32 cpu = scx_bpf_task_cpu(p);
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	if (c && runs_normal(c) && vtime + normal_slice_ns / 2 < c->curr_vtime) {
		stat_inc(MQ_STAT_NORMAL_WAKE_PREEMPT);
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
	}
}

/*
 * Whether class work displaced by an RT task may wait out a grace on its CPU:
 * only where the grace timer can re-enqueue it (mq_cpu_release()). Which
 * kfunc does is found once, by mq_init(): tested in a condition, the two
 * kfunc checks become an or of their ksym addresses, which the verifier
 * refuses (and two branches setting the same value are merged into one).
 */
enum rt_grace_kfunc {
	RT_GRACE_NONE,			/* before 6.19: re-enqueue only in cpu_release() */
	RT_GRACE_REENQUEUE_LOCAL,	/* 6.19: scx_bpf_reenqueue_local() from anywhere */
	RT_GRACE_DSQ_REENQ,		/* 7.1: scx_bpf_dsq_reenq() */
};

static u32 rt_grace_kfunc;

static bool rt_grace_timed(void)
{
	return rt_grace_kfunc != RT_GRACE_NONE;
}

/*
 * Whether @p may be inserted into another CPU's local queue: a remote
 * insert of a migration-disabled task ejects the scheduler. Not scx's
 * is_migration_disabled(): that reads CONFIG_PREEMPT_RCU through a
 * __kconfig extern, and libbpf then refuses to load without the kernel's
 * config file, which a minimal system (our VM's initramfs) lacks. We
 * decide conservatively instead: the BPF prolog may count itself in the
 * current task's migration_disabled, so any nonzero count keeps @p here.
 */
static bool may_push(const struct task_struct *p)
{
	return p->migration_disabled == 0;
}

/*
 * A class task that waited in @from's local queue while an RT or deadline
 * task held @from past the grace (mq_cpu_release()), or that wakes on @from
 * while RT holds it and no grace runs: the CPU, other than
 * @from, where it can run at once, i.e. one that runs only normal work, is
 * not held by RT, and where its group has budget; -1 if there is none. The
 * RT class does the same for a preempted RT task (push_rt_task()). Queued
 * in @from's FIFO instead, it would wait for the RT task to leave or for
 * another CPU's next dispatch() to steal it.
 */
static s32 rt_push_target(struct task_struct *p, s32 from, u32 g)
{
	s32 cpu;

	if (!may_push(p))
		return -1;
	cpu = free_cpus ? bpf_cpumask_any_and_distribute(cast_mask(free_cpus), p->cpus_ptr)
			: nr_cpus;
	if (cpu >= nr_cpus || cpu == from || mq_load_for(cpu, g, scx_bpf_now()) != 0)
		return -1;
	return cpu;
}

void BPF_STRUCT_OPS(mq_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 task_cpu = scx_bpf_task_cpu(p);
	s32 g = task_group(p, task_cpu);
	u64 vtime, floor;

	/*
	 * The last runnable task of its CPU, handed back because dispatch()
	 * kept nothing (SCX_OPS_ENQ_LAST; dispatch() refills a lone prev, so
	 * this is rare): it runs on, there. Queued anywhere else, the CPU
	 * would idle beside it. The kick wakes the CPU on a kernel whose
	 * put_prev_task_scx() does not reschedule the idle task for it.
	 */
	if (enq_flags & SCX_ENQ_LAST) {
		stat_inc(MQ_STAT_ENQ_LAST);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, g >= 0 ? class_slice_ns : normal_slice_ns,
				   enq_flags);
		scx_bpf_kick_cpu(task_cpu, SCX_KICK_IDLE);
		return;
	}

	if (g >= 0) {
		s32 cpu = task_cpu;
		struct cpu_ctx *c = lookup_cpu_ctx(cpu);
		bool wakeup = enq_flags & SCX_ENQ_WAKEUP;
		u64 now = scx_bpf_now();

		stat_inc(MQ_STAT_MQ_ENQUEUE);
		if (wakeup)
			class_wakeup_inserted(p, cpu, g, now);
		/*
		 * The CPU is held by an RT or deadline task (placement avoids
		 * that), or its local queue is re-enqueued (the RT task outlasted
		 * the grace: mq_cpu_release()). Within the grace, class work
		 * waits at the head of the local queue with what the RT task
		 * displaced; otherwise it goes to a CPU where it can run at once,
		 * else to the FIFO, which other CPUs' dispatch() may steal from.
		 */
		if (c && (held_by_rt(c) || (enq_flags & SCX_ENQ_REENQ))) {
			s32 to;

			if (held_by_rt(c) && c->rt_grace) {
				scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, class_slice_ns,
						   enq_flags | SCX_ENQ_HEAD);
				return;
			}
			to = rt_push_target(p, cpu, g);
			if (to >= 0) {
				scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | to, class_slice_ns,
						   enq_flags | SCX_ENQ_HEAD | SCX_ENQ_PREEMPT);
				stat_inc(MQ_STAT_RT_PUSH);
				return;
			}
			/* Else the FIFO, below. */
		} else if (c && wakeup && !runs_class(c) && !group_throttled(c, g) &&
			   fifo_empty(cpu) && group_has_budget_on(cpu, g, now)) {
			/*
			 * Fast path: a wakeup onto a CPU that runs no class work and
			 * where the task's group has budget goes straight to the head
			 * of that CPU's local queue and preempts whatever normal task
			 * runs there, without a kick and a dispatch() round trip. (We
			 * run on that CPU's rq: it is the task's CPU.)
			 */
			class_wakeup_displaces(c);
			scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, class_slice_ns,
					   enq_flags | SCX_ENQ_HEAD | SCX_ENQ_PREEMPT);
			stat_inc(MQ_STAT_DIRECT_PREEMPT);
			return;
		}

		scx_bpf_dsq_insert(p, mq_dsq(cpu), class_slice_ns, enq_flags);
		fifo_filled(cpu);
		/*
		 * Otherwise a wakeup still preempts normal work at once (a class
		 * task put back after a preemption must not: that is how a
		 * throttled task would kick out the normal task it yielded to).
		 * If the group's budget there is spent, its dispatch() keeps running
		 * normal work and arms the timer that lets us in when the credit
		 * is back; a CPU already running class work round-robins at the
		 * slice end. A kick cannot move an RT task.
		 */
		if (c && !runs_class(c) && !held_by_rt(c) && wakeup) {
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
			stat_inc(MQ_STAT_KICK_PREEMPT);
		}
		return;
	}

	/* A task that slept long gets at most one slice of credit. */
	vtime = p->scx.dsq_vtime;
	floor = vtime_now > normal_slice_ns ? vtime_now - normal_slice_ns : 0;
	if (vtime < floor)
		vtime = floor;
	scx_bpf_dsq_insert_vtime(p, MQ_NORMAL_DSQ, normal_slice_ns, vtime, enq_flags);
	/* After the insert: a budget timer that marks its CPU over budget
	 * after this looks sees this task waiting and throttles by itself. */
	kick_overbudget_cpu(p);

	if (enq_flags & SCX_ENQ_WAKEUP)
		preempt_for_waker(p, vtime);
}

/* What a dispatch may take from a class FIFO. */
enum take_mode {
	TAKE_WITH_BUDGET,	/* normal work waits: only groups with budget here */
	TAKE_ANY,		/* no normal work waits: any group, its budget is OK again */
};

/*
 * Moves to this CPU's local queue the first class task of @from's FIFO that
 * @mode lets run on @self (@c). Looks at MQ_FIFO_SCAN tasks at most, so a
 * long queue of a throttled group costs a bounded decision. A group found
 * without budget in this CPU's own FIFO is marked throttled here
 * (throttled_groups); a steal marks nothing: the other CPU's own dispatch
 * times its refill. Nothing but the task pointer and a counter lives across
 * iterations, which keeps the verifier's states few.
 */
__noinline int take_class_task(s32 self, s32 from, u32 mode)
{
	/* Within a callback scx_bpf_now() is the rq clock, as dispatch's. */
	u64 now = scx_bpf_now();
	struct cpu_ctx *c = lookup_cpu_ctx(self);
	struct bpf_iter_scx_dsq it;
	struct task_struct *p;
	bool taken = false;
	u32 i;

	if (!c)
		return false;

	/* bpf_for bounds the scan without a counter of our own: a counter the
	 * loop compares would keep the verifier's states apart per iteration. */
	if (bpf_iter_scx_dsq_new(&it, mq_dsq(from), 0) == 0) {
		bpf_for(i, 0, MQ_FIFO_SCAN) {
			bool allowed;
			s32 g;

			p = bpf_iter_scx_dsq_next(&it);
			if (!p)
				break;
			/* scx_bpf_dsq_move() ejects the scheduler for a task
			 * that may not run here (move_to_local skipped those). */
			if (!bpf_cpumask_test_cpu(self, p->cpus_ptr))
				continue;
			/* A task that left the class (or its group's CPU set)
			 * while queued counts as the default group's until its
			 * next enqueue. */
			g = task_group(p, self);
			if (g < 0)
				g = MQ_DEFAULT_GROUP;
			allowed = mode == TAKE_ANY || group_may_run(self, g, now);
			if (from == self)
				budget_decided(c, g, allowed);
			if (allowed && scx_bpf_dsq_move(&it, p, SCX_DSQ_LOCAL, 0)) {
				taken = true;
				break;
			}
		}
	}
	bpf_iter_scx_dsq_destroy(&it);
	return taken;
}

/*
 * Take a MicroQuanta task waiting on another CPU that may run here: look at
 * up to MQ_STEAL_TRIES CPUs of queued_cpus, round-robin, rather than at
 * every CPU's queue.
 */
static bool steal_mq(struct cpu_ctx *c, s32 self, u32 mode)
{
	bool taken = false;
	s32 cpu;
	u32 i;

	/* One exit after the loop: clang's code for a return from inside
	 * bpf_for here reads a register the verifier sees unset. */
	bpf_for(i, 0, MQ_STEAL_TRIES) {
		cpu = queued_cpus ? bpf_cpumask_any_distribute(cast_mask(queued_cpus)) : nr_cpus;
		if (cpu >= nr_cpus)
			break;
		if (cpu == self)
			continue;
		taken = take_class_task(self, cpu, mode);
		if (scx_bpf_dsq_nr_queued(mq_dsq(cpu)) == 0)
			fifo_found_empty(cpu);
		if (taken) {
			stat_inc(MQ_STAT_MQ_STEAL);
			break;
		}
	}
	return taken;
}

/*
 * Class work waits here for budget: arm the timer for the throttled group
 * whose credit is worth a runtime first. A group whose credit is back
 * already is not throttled any more (its next task passes the hysteresis),
 * so the timer never waits for a group with nothing to wait for. At most
 * MQ_MAX_GROUPS steps.
 */
__noinline int arm_refill(s32 cpu)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	u64 best = (u64)-1, wait;
	u32 g, best_g = MQ_DEFAULT_GROUP;
	bool refilled = false;

	if (!c)
		return 0;

	bpf_for(g, 0, MQ_MAX_GROUPS) {
		if (!(c->throttled_groups & (1U << g)))
			continue;
		wait = refill_wait_ns(c, g);
		if (wait == 0) {
			budget_decided(c, g, true);
			refilled = true;
			continue;
		}
		if (wait < best) {
			best = wait;
			best_g = g;
		}
	}
	if (best != (u64)-1) {
		c->refill_group = best_g;
		timer_arm(c, MQ_TIMER_REFILL, best);
	} else if (refilled) {
		/* Credit came back between the look and now: dispatch again.
		 * (That look sees those groups OK, so this kick is not repeated.)
		 * A preempting one: the kick lands after the switch, and the
		 * normal task this dispatch() picks would otherwise run on with
		 * its slice (sched_ext keeps a prev with slice left without
		 * asking dispatch()), the class waiting up to a normal slice.
		 * At 20/40 us under TCG that cost the class 1.2 points. */
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
	}
	return 0;
}

/*
 * Each class group has its own budget on this CPU: a class task runs if no
 * normal work waits or its group has credit here, so a group that spent its
 * budget is throttled while another group with credit still runs. Among
 * class tasks whose groups may run, the FIFO order (round-robin) holds.
 */
void BPF_STRUCT_OPS(mq_dispatch, s32 cpu, struct task_struct *prev)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	bool normal_waiting, prev_normal, own_queued, waits = false;
	u64 now = scx_bpf_now();
	u32 mode;

	if (!c)
		return;
	/* prev has not been charged or put back yet: charge a class prev, and
	 * count a runnable normal prev as normal work that wants this CPU. */
	if (runs_class(c))
		cpu_charge(cpu, now);
	prev_normal = prev && runs_normal(c) && (prev->scx.flags & SCX_TASK_QUEUED);
	normal_waiting = normal_work_waiting(cpu) || prev_normal;

	/* A class prev about to be put back whose group's budget is spent
	 * waits like the queued ones. One told to yield has spent it as the
	 * timer, the tick or a normal wakeup saw it: the rq clock may still
	 * show a sliver of credit, and letting that sliver through would
	 * leave it queued, unthrottled, with no refill timer armed. */
	if (normal_waiting && runs_class(c) &&
	    (c->run == MQ_RUN_CLASS_YIELDING || !group_may_run(cpu, c->run_group, now))) {
		budget_decided(c, c->run_group, false);
		waits = true;
	}

	mode = normal_waiting ? TAKE_WITH_BUDGET : TAKE_ANY;
	/* This CPU's FIFO is filled only under its rq lock, which we hold
	 * (other CPUs' steals only empty it): an empty one stays empty and
	 * needs no scan, whose iterator costs several kfunc calls. */
	own_queued = scx_bpf_dsq_nr_queued(mq_dsq(cpu)) > 0;
	if (own_queued && take_class_task(cpu, cpu, mode)) {
		stat_inc(MQ_STAT_MQ_DISPATCH);
		return;
	}
	/*
	 * No other class task of this CPU may run: a class prev whose slice
	 * ran out, and whose group still has budget here, goes on. Put back
	 * instead, it would wait in the FIFO behind the normal task taken
	 * next, with credit and so with no refill timer to call it back:
	 * until that task's slice ends at a tick, while its credit piles up
	 * past the clamp and is lost (a group whose budget outlasts the class
	 * slice then got less than its runtime/period).
	 */
	if (!waits && prev && c->run == MQ_RUN_CLASS && (prev->scx.flags & SCX_TASK_QUEUED) &&
	    task_group(prev, cpu) == (s32)c->run_group) {
		scx_bpf_task_set_slice(prev, class_slice_ns);
		stat_inc(MQ_STAT_MQ_KEEP);
		return;
	}
	if (!own_queued || scx_bpf_dsq_nr_queued(mq_dsq(cpu)) == 0)
		fifo_found_empty(cpu);
	else if (normal_waiting)
		waits = true;	/* queued here, and no group of them has budget */
	if (steal_mq(c, cpu, mode))
		return;
	if (waits) {
		/* Class work (queued, or prev about to be put back) waits for
		 * budget: wake this CPU when a group's credit is worth a
		 * runtime again. */
		stat_inc(MQ_STAT_MQ_THROTTLE);
		arm_refill(cpu);
	}

	if (scx_bpf_dsq_move_to_local(MQ_NORMAL_DSQ, 0)) {
		stat_inc(MQ_STAT_NORMAL_DISPATCH);
		return;
	}

	if (waits) {
		/* Throttled, and the normal task we would give the CPU to is
		 * prev itself: keep it running. */
		if (prev_normal) {
			scx_bpf_task_set_slice(prev, normal_slice_ns);
			return;
		}
		/* Work-conserving: the waiting normal work cannot run here. */
		if (scx_bpf_dsq_move_to_local(mq_dsq(cpu), 0)) {
			stat_inc(MQ_STAT_MQ_DISPATCH);
			return;
		}
	}

	/*
	 * Nothing else may run here: a prev that still wants the CPU goes on
	 * with a fresh slice of its kind (the kernel keeps a prev with slice
	 * left). We ask for SCX_OPS_ENQ_LAST, so without this it would be
	 * handed to enqueue() while the CPU idles for a moment.
	 */
	if (prev && (prev->scx.flags & SCX_TASK_QUEUED)) {
		scx_bpf_task_set_slice(prev, task_group(prev, cpu) >= 0 ? class_slice_ns :
								  normal_slice_ns);
		stat_inc(MQ_STAT_LAST_KEPT);
	}
}

void BPF_STRUCT_OPS(mq_tick, struct task_struct *p)
{
	s32 cpu = scx_bpf_task_cpu(p);
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	u64 now = scx_bpf_now();

	if (!c)
		return;

	if (runs_class(c)) {
		s64 credit;

		cpu_charge(cpu, now);
		credit = grp_of(c, c->run_group)->credit_ns;
		if (credit <= 0)
			class_past_budget(cpu);
		if (credit <= 0 && normal_work_waiting(cpu)) {
			scx_bpf_task_set_slice(p, 0);
			class_told_to_yield(c);
			stat_inc(MQ_STAT_MQ_TICK_THROTTLE);
		}
		return;
	}

	/* A throttled group's MicroQuanta task has earned its budget back. */
	if (throttled(c) && scx_bpf_dsq_nr_queued(mq_dsq(cpu)) > 0 &&
	    group_refilled(cpu, now))
		scx_bpf_task_set_slice(p, 0);
}

void BPF_STRUCT_OPS(mq_running, struct task_struct *p)
{
	s32 cpu = scx_bpf_task_cpu(p);
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	u64 now = scx_bpf_now();
	/* No storage for a task that was never in the class: then a quick NULL. */
	struct task_ctx *t = bpf_task_storage_get(&task_ctxs, p, NULL, 0);
	bool woken = t && t->wake_enq_ns;
	s32 g;

	if (!c)
		return;
	if (woken && t->wake_cpu == cpu)
		g = t->wake_group & (MQ_MAX_GROUPS - 1);
	else
		g = task_group(p, cpu);
	c->run_start_ns = now;
	c->keep_displaced = 0;
	c->kept_ahead = 0;
	cpu_starts(c, cpu, g >= 0);
	c->curr_vtime = p->scx.dsq_vtime;
	if (woken) {
		if (runs_class(c) && now > t->wake_enq_ns)
			hist_add(MQ_HIST_WAKEUP, now - t->wake_enq_ns);
		t->wake_enq_ns = 0;
	}
	if (runs_class(c)) {
		struct grp_budget *gb;
		struct mq_bw bw;
		s64 credit;

		c->run_group = g;
		gb = grp_of(c, g);
		bw = group_bw(g);
		credit = credit_update(gb, bw, now, 0, false);
		gb->let_in = 0;
		c->mq_charged_ns = now;
		c->run_exec_ns = p->se.sum_exec_runtime;
		/* While class work runs the group's credit falls at 1 -
		 * runtime/period per ns: the budget runs out after credit *
		 * period / (period - runtime). A full-CPU budget never runs out. */
		c->budget_out_ns = now;
		c->budget_left_ns = 0;
		if (bw.runtime_ns >= bw.period_ns) {
			c->budget_left_ns = (u64)-1;
		} else if (credit > 0) {
			c->budget_left_ns = (u64)credit * bw.period_ns /
					    (bw.period_ns - bw.runtime_ns);
			c->budget_out_ns = now + c->budget_left_ns;
		} else {
			/* No credit: running only because nothing else wants the CPU. */
			class_past_budget(cpu);
		}
		timer_arm_class_step(c);
		return;
	}
	if (p->scx.dsq_vtime > vtime_now)
		vtime_now = p->scx.dsq_vtime;
	c->run_slice_ns = p->scx.slice;
	/*
	 * A displaced task kept at the head of the local queue comes back
	 * without dispatch(): if class work was queued meanwhile (the class
	 * task was put back, throttled or at its slice end, or another one
	 * woke behind it), dispatch() must decide instead. This task goes
	 * through enqueue() after all, at the cost of one switch.
	 */
	if (c->kept_pid == p->pid) {	/* 0, none, is no task of ours */
		c->kept_pid = 0;
		/*
		 * Whatever is still in the local queue was inserted there while
		 * this task was kept, and now waits behind it. displaced_kept()
		 * keeps a task only when the class wakeup is all that is queued
		 * there, so this needs an insert into the local queue after the
		 * keep and before this switch. Counted, not acted on, so that
		 * such a path shows up in the stats.
		 */
		if (scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL_ON | cpu) > 0)
			stat_inc(MQ_STAT_KEPT_RAN_AHEAD);
		if (class_work_queued(cpu)) {
			stat_inc(MQ_STAT_KEPT_RETURNED);
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
		} else if (c->kept_spent) {
			/* Its slice ran out before the class wakeup: it goes
			 * through enqueue() now, as it would have then. */
			stat_inc(MQ_STAT_KEPT_SPENT);
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
		}
	}
}

void BPF_STRUCT_OPS(mq_stopping, struct task_struct *p, bool runnable)
{
	s32 cpu = scx_bpf_task_cpu(p);
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);
	u64 now = scx_bpf_now();
	u64 ran_ns;
	u32 ran;

	if (!c)
		return;
	ran = cpu_stops(c, cpu);
	if (ran == MQ_RUN_CLASS || ran == MQ_RUN_CLASS_YIELDING) {
		cpu_may_be_free(cpu);
		cpu_charge_stop(cpu, now, p->se.sum_exec_runtime);
		/* Overrun: class time past the instant its budget ran out
		 * while normal work waited. */
		if (ran == MQ_RUN_CLASS_YIELDING && now > c->budget_out_ns)
			hist_add(MQ_HIST_OVERRUN, now - c->budget_out_ns);
		/* Throttle-to-preempt: how long the kick (or the tick's zero
		 * slice) took to get the class task off the CPU. */
		if (ran == MQ_RUN_CLASS_YIELDING) {
			u64 left = bpf_ktime_get_ns();

			if (left > c->yield_told_ns)
				hist_add(MQ_HIST_YIELD, left - c->yield_told_ns);
		}
		return;
	}
	/* Charge what was measured, not the slice handed out: a task that ran
	 * past its slice (ticks are coarse) must pay for all of it. */
	ran_ns = now > c->run_start_ns ? now - c->run_start_ns : 0;
	scx_bpf_task_set_dsq_vtime(p, p->scx.dsq_vtime + ran_ns * 100 / p->scx.weight);
	if (displaced_kept(c, cpu, p, ran_ns, runnable))
		stat_inc(MQ_STAT_NORMAL_KEPT);
}

void BPF_STRUCT_OPS(mq_enable, struct task_struct *p)
{
	scx_bpf_task_set_dsq_vtime(p, vtime_now);
}

/*
 * An RT or deadline task took the CPU: no class wakeup is placed here while
 * it holds the CPU. What waits in the local queue (the task the RT task
 * displaced, which the kernel puts back at its head, and class work that
 * had not run yet) stays there for a grace of one class period and runs as
 * soon as a short RT task leaves, as a SCHED_FIFO task waits behind a
 * higher priority one. Only an RT task that outlasts the grace has the
 * CPU's timer re-enqueue that queue (budget_timer_fn()): normal work to the
 * shared queue, class work to a CPU that runs only normal work
 * (rt_push_target()) or the FIFO.
 *
 * Most RT tasks leave sooner (interrupt threads, watchdogs, a probe). Each
 * of them used to cost a re-enqueue of the whole local queue here, and the
 * CPU then came back through dispatch(): in the demo under TCG, the stall
 * probe's SCHED_FIFO wakeups (~650 per second and CPU) ran cpu_release,
 * enqueue and dispatch for the hog they displaced, the costliest callback
 * included, and a class wakeup that met one waited for all of it. Now the
 * kernel finds the displaced task at the head of the local queue when the
 * RT task leaves and runs it without asking us. Moved to another CPU at
 * once instead (the RT class's push), the class task took as long: under
 * TCG a migration costs as much as the wait.
 *
 * A timer can only re-enqueue on kernels where that kfunc may be called
 * outside cpu_release() (6.19+); on older ones the queue is re-enqueued
 * here, at once, and there is no grace. The timer is armed whatever the
 * local queue holds now: the task the RT task displaces is not in it yet
 * when 7.3 calls cpu_release() (armed only for a non-empty queue, the
 * grace never started and class work stayed behind a 20 ms RT hold; the
 * VM test class_work_waits_out_a_short_rt_task_and_leaves_a_long_one).
 *
 * The grace is 1¼ class periods, not one (off_the_next_wakeup()): a one-
 * period grace of a periodic RT thread with the class period ended at its
 * next release.
 */
void BPF_STRUCT_OPS(mq_cpu_release, s32 cpu, struct scx_cpu_release_args *args)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	stat_inc(MQ_STAT_CPU_RELEASE);
	if (c)
		cpu_released(c, cpu);
	if (!rt_grace_timed()) {
		scx_bpf_reenqueue_local();
		return;
	}
	if (!c)
		return;
	rt_grace_start(c, off_the_next_wakeup(mq_period_ns));
	/* A normal task kept for a class wakeup just now is ahead of it in
	 * the local queue (see class_wakeup_displaces()): through enqueue()
	 * again, the class task waits at the head and the normal task in
	 * the shared queue. After the grace started, which enqueue() reads. */
	if (c->kept_ahead) {
		c->kept_ahead = 0;
		c->kept_pid = 0;
		stat_inc(MQ_STAT_KEPT_REENQ);
		scx_bpf_reenqueue_local();
	}
}

void BPF_STRUCT_OPS(mq_cpu_acquire, s32 cpu, struct scx_cpu_acquire_args *args)
{
	struct cpu_ctx *c = lookup_cpu_ctx(cpu);

	if (c) {
		cpu_acquired(c);
		/* The grace timer took the place of a refill timer the RT task
		 * interrupted: class work that waits for budget needs it back. */
		if (throttled(c))
			arm_refill(cpu);
	}
	cpu_may_be_free(cpu);
}

/*
 * Class membership is inherited across fork and thread creation, like a
 * scheduling policy: `mqctl run CMD` puts itself in the class and execs, so
 * CMD and every thread it ever creates are in the class.
 */
s32 BPF_STRUCT_OPS(mq_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	u32 parent = (u32)bpf_get_current_pid_tgid();
	u32 child = p->pid;
	u64 *added;

	if (!args->fork)
		return 0;
	added = bpf_map_lookup_elem(&mq_tasks, &parent);
	if (added && bpf_map_update_elem(&mq_tasks, &child, added, BPF_NOEXIST) == 0)
		stat_inc(MQ_STAT_CLASS_INHERIT);
	return 0;
}

void BPF_STRUCT_OPS(mq_exit_task, struct task_struct *p, struct scx_exit_task_args *args)
{
	u32 tid = p->pid;

	/* The kernel calls exit_task for every task when the scheduler is
	 * unloaded too: only a thread that exits (or whose fork failed) leaves
	 * the class, so that membership survives a restart. A reused thread id
	 * must not inherit the class. */
	if (!args->cancelled && !(p->flags & PF_EXITING))
		return;
	if (bpf_map_delete_elem(&mq_tasks, &tid) == 0)
		stat_inc(MQ_STAT_CLASS_EXIT);
}

/* A new empty cpumask in @slot; with every CPU set if @full. */
static int mask_init(struct bpf_cpumask **slot, bool full)
{
	struct bpf_cpumask *m = bpf_cpumask_create();
	s32 cpu;

	if (!m)
		return -ENOMEM;
	if (full) {
		bpf_for(cpu, 0, nr_cpus)
			bpf_cpumask_set_cpu(cpu, m);
	}
	m = bpf_kptr_xchg(slot, m);
	if (m)
		bpf_cpumask_release(m);
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(mq_init)
{
	s32 cpu, ret;

	ret = scx_bpf_create_dsq(MQ_NORMAL_DSQ, -1);
	if (ret)
		return ret;
	if (__COMPAT_has_generic_reenq())
		rt_grace_kfunc = RT_GRACE_DSQ_REENQ;
	else if (__COMPAT_scx_bpf_reenqueue_local_from_anywhere())
		rt_grace_kfunc = RT_GRACE_REENQUEUE_LOCAL;
	/* Nothing of ours runs or is queued yet: every CPU is free. */
	ret = mask_init(&free_cpus, true) ?: mask_init(&overbudget_cpus, false) ?:
	      mask_init(&queued_cpus, false);
	if (ret)
		return ret;
	/* Init only: one DSQ and one timer per CPU. */
	bpf_for(cpu, 0, nr_cpus) {
		struct cpu_ctx *c = lookup_cpu_ctx(cpu);

		if (!c)
			return -ENOENT;
		ret = scx_bpf_create_dsq(mq_dsq(cpu), -1);
		if (ret)
			return ret;
		ret = bpf_timer_init(&c->timer, &cpu_ctxs, CLOCK_MONOTONIC);
		if (ret)
			return ret;
		ret = bpf_timer_set_callback(&c->timer, budget_timer_fn);
		if (ret)
			return ret;
	}
	return 0;
}

void BPF_STRUCT_OPS(mq_exit, struct scx_exit_info *ei)
{
	u32 exited = 1;

	UEI_RECORD(uei, ei);
	bpf_ringbuf_output(&exit_notify, &exited, sizeof(exited), BPF_RB_FORCE_WAKEUP);
}

/*
 * SCX_OPS_ENQ_LAST: a CPU's last runnable task comes back to enqueue()
 * instead of being kept by the kernel. The kernel expects the flag whenever
 * a runnable task of ours is put for the idle task: 7.3's
 * put_prev_task_scx() WARNs without it, and CI's kernel log showed that
 * WARNING once while the scheduler was being enabled. dispatch() refills a
 * lone prev, which keeps it on its CPU as the kernel did.
 */
SCX_OPS_DEFINE(microquanta_ops,
	       .flags = SCX_OPS_ENQ_LAST,
	       .select_cpu = (void *)mq_select_cpu,
	       .enqueue = (void *)mq_enqueue,
	       .dispatch = (void *)mq_dispatch,
	       .tick = (void *)mq_tick,
	       .running = (void *)mq_running,
	       .stopping = (void *)mq_stopping,
	       .enable = (void *)mq_enable,
	       .cpu_release = (void *)mq_cpu_release,
	       .cpu_acquire = (void *)mq_cpu_acquire,
	       .init_task = (void *)mq_init_task,
	       .exit_task = (void *)mq_exit_task,
	       .init = (void *)mq_init,
	       .exit = (void *)mq_exit,
	       .name = "microquanta");
