/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * hist.bpf.h - recording into the log-linear histograms of intf.h.
 * BPF has no count-leading-zeros instruction, hence the unrolled search.
 */
#ifndef __MICROQUANTA_HIST_BPF_H
#define __MICROQUANTA_HIST_BPF_H

static __always_inline u32 msb64(u64 v)
{
	u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

static __always_inline u32 hist_bucket(u64 v)
{
	u32 m;

	if (v < (1 << MQ_HIST_SUB_BITS))
		return v;
	m = msb64(v);
	return (m << MQ_HIST_SUB_BITS) |
	       ((v >> (m - MQ_HIST_SUB_BITS)) & ((1 << MQ_HIST_SUB_BITS) - 1));
}

static __always_inline void hist_record(struct mq_hist *h, u64 v)
{
	u32 b = hist_bucket(v);

	if (b < MQ_HIST_BUCKETS)
		h->bucket[b]++;
	if (v > h->max)
		h->max = v;
}

#endif /* __MICROQUANTA_HIST_BPF_H */
