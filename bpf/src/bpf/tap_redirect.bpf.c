// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tap_redirect: joins a microVM slot's tap and its veth end, inside the slot's
 * namespace, so that the guest behind the tap sits on the veth's wire.
 *
 * Attached (XDP) to exactly those two devices. Inside a microVM slot's
 * namespace the engine gives the veth end the tap's ifindex with `slot_end_bit`
 * set, so the program needs no per-slot state: a frame that arrived on the veth
 * end goes out of the tap, and a frame the guest wrote into the tap goes out of
 * the veth end. bpf_redirect resolves the ifindex in the namespace of the device
 * the frame arrived on, so a frame can never leave its own slot's namespace.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* Set by the loader before loading (one definition, in Rust: SLOT_END_BIT). */
const volatile __u32 slot_end_bit = 0;

SEC("xdp")
int tap_redirect(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;

	if (!slot_end_bit)
		return XDP_ABORTED;
	if (ifindex & slot_end_bit)
		return bpf_redirect(ifindex & ~slot_end_bit, 0);
	return bpf_redirect(ifindex | slot_end_bit, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
