// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * xdp_counters: count packets and bytes per ingress ifindex; always XDP_PASS.
 *
 * Attached to the host ends of slot veth pairs (by the engine through one
 * RTM_NEWLINK group change carrying IFLA_XDP, or per device for tests).
 */
#include "count.bpf.h"

SEC("xdp")
int xdp_counters(struct xdp_md *ctx)
{
	/* Linear length; veth host ends at MTU 1500 carry no frags. */
	count_packet(ctx->ingress_ifindex, ctx->data_end - ctx->data);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
