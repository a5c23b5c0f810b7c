// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * xdp_counters: count packets and bytes per ingress ifindex; always XDP_PASS.
 *
 * Attached to the host ends of slot veth pairs (by the engine through one
 * RTM_NEWLINK group change carrying IFLA_XDP, or per device for tests).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "counters.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NETSLOT_COUNTERS_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct counter_value);
} counters SEC(".maps");

SEC("xdp")
int xdp_counters(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	/* Linear length; veth host ends at MTU 1500 carry no frags. */
	__u64 len = ctx->data_end - ctx->data;
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
			return XDP_PASS;
		v = bpf_map_lookup_elem(&counters, &ifindex);
		if (!v)
			return XDP_PASS;
	}
	/* Per-CPU slot, XDP runs with migration disabled: no atomics needed. */
	v->packets += 1;
	v->bytes += len;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
