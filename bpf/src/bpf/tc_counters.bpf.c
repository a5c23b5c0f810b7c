// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tc_counters: the sched_cls twin of xdp_counters: count packets and bytes per
 * ingress ifindex; always TC_ACT_OK.
 *
 * Attached once, as a direct-action cls_bpf filter on the shared ingress block
 * of a pool's clsact qdiscs (netslot CountersAttach::TcBlock), so one filter
 * serves every host end that joined the block.
 */
#include "count.bpf.h"

/*
 * From include/uapi/linux/pkt_cls.h: a macro, so not in vmlinux.h (BTF has
 * no macros). With direct action, TC_ACT_OK lets the packet through.
 */
#define TC_ACT_OK 0

SEC("tc")
int tc_counters(struct __sk_buff *skb)
{
	/*
	 * ingress_ifindex is the device the packet arrived on, the key the XDP
	 * program uses (xdp_md.ingress_ifindex). skb->len includes the Ethernet
	 * header here: cls_bpf_classify pushes mac_len back before running the
	 * program at ingress, so bytes match the XDP program's linear length.
	 */
	count_packet(skb->ingress_ifindex, skb->len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
