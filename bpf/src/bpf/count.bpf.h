/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * count.bpf.h: the counters map and the one function that updates it, shared by
 * every counters program (xdp_counters, tc_counters).
 *
 * Why shared: the XDP and the tc program must count the same way (same key,
 * same per-CPU insert race handling) so that `netslot stats` and
 * Engine::counters() read the same map layout whichever hook the engine uses.
 * Each program object includes this once and gets its own map.
 */
#ifndef NETSLOT_COUNT_BPF_H
#define NETSLOT_COUNT_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "counters.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NETSLOT_COUNTERS_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct counter_value);
} counters SEC(".maps");

/* Adds one packet of `len` bytes to the counters of `ifindex`. */
static __always_inline void count_packet(__u32 ifindex, __u64 len)
{
	struct counter_value *v;

	v = bpf_map_lookup_elem(&counters, &ifindex);
	if (!v) {
		struct counter_value first = { .packets = 1, .bytes = len };

		/*
		 * A new per-CPU element starts with this CPU's slot set and every
		 * other CPU's slot zeroed (pcpu_init_value in kernel/bpf/hashtab.c).
		 * EEXIST: another CPU inserted it first; fall through and add.
		 * E2BIG (map full): the packet passes uncounted.
		 */
		if (bpf_map_update_elem(&counters, &ifindex, &first, BPF_NOEXIST) == 0)
			return;
		v = bpf_map_lookup_elem(&counters, &ifindex);
		if (!v)
			return;
	}
	/*
	 * Per-CPU slot; XDP and tc both run with migration disabled (softirq or
	 * bpf_prog_run under rcu_read_lock with preemption off): no atomics needed.
	 */
	v->packets += 1;
	v->bytes += len;
}

#endif /* NETSLOT_COUNT_BPF_H */
