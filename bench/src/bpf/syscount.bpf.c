// SPDX-License-Identifier: GPL-2.0
/* syscount: counts the syscalls (and io_uring submissions) of the processes in
 * `tracked` and of every process or thread they fork, keyed by (thread name, syscall
 * number). Tracepoints only: kprobes and fentry are refused on our kernels. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "syscount.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SYSCOUNT_MAX_TRACKED);
	__type(key, __u32);
	__type(value, __u8);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SYSCOUNT_MAX_KEYS);
	__type(key, struct syscount_key);
	__type(value, __u64);
} counts SEC(".maps");

/* Events whose key did not fit in `counts`. */
__u64 dropped = 0;

/* Layout of tracepoint raw_syscalls/sys_enter (see its format file). */
struct sys_enter_ctx {
	__u64 common;
	long id;
	unsigned long args[6];
};

/* Layout of tracepoint sched/sched_process_fork on 6.x (__data_loc comms). */
struct fork_ctx {
	__u64 common;
	__u32 parent_comm_loc;
	__s32 parent_pid;
	__u32 child_comm_loc;
	__s32 child_pid;
};

static __always_inline int is_tracked(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	return bpf_map_lookup_elem(&tracked, &tgid) != 0;
}

static __always_inline void count(__u32 nr)
{
	struct syscount_key key = {};
	__u64 one = 1, *v;

	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.nr = nr;
	v = bpf_map_lookup_elem(&counts, &key);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return;
	}
	if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(&counts, &key);
		if (v)
			__sync_fetch_and_add(v, 1);
		else
			__sync_fetch_and_add(&dropped, 1);
	}
}

SEC("tp/raw_syscalls/sys_enter")
int syscount_sys_enter(struct sys_enter_ctx *ctx)
{
	if (is_tracked())
		count((__u32)ctx->id);
	return 0;
}

SEC("tp/io_uring/io_uring_submit_req")
int syscount_uring_submit(void *ctx)
{
	if (is_tracked())
		count(SYSCOUNT_NR_URING_SUBMIT);
	return 0;
}

SEC("tp/sched/sched_process_fork")
int syscount_fork(struct fork_ctx *ctx)
{
	__u32 child = ctx->child_pid;
	__u8 yes = 1;

	/* Threads get a tid key too: harmless, a tid never names another process. */
	if (is_tracked())
		bpf_map_update_elem(&tracked, &child, &yes, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
