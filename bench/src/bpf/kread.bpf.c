// SPDX-License-Identifier: GPL-2.0
/* kread: copy KREAD_LEN bytes of kernel memory at `target_addr` into .bss, once,
 * on the first syscall made by process `target_tgid`. No kernel types needed, so
 * no vmlinux.h: raw_tp/sys_enter gets an untyped context. */
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include "kread.h"

const volatile __u64 target_addr = 0;
const volatile __u32 target_tgid = 0;

__u8 out_bytes[KREAD_LEN] = {};
__s64 out_ret = 0;
__u32 out_done = 0;

SEC("raw_tp/sys_enter")
int kread_sys_enter(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (tgid != target_tgid || out_done)
		return 0;
	out_ret = bpf_probe_read_kernel(out_bytes, sizeof(out_bytes), (const void *)target_addr);
	out_done = 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
