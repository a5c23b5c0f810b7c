// SPDX-License-Identifier: GPL-2.0
/* syscount: counts the syscalls (and io_uring submissions) of the processes in
 * `tracked` and of every process or thread they fork, keyed by (thread name, syscall
 * number). BTF-typed tracepoints (tp_btf) only: kprobes and fentry are refused on our
 * kernels, and a classic `tp/` program would need tracefs mounted, because libbpf looks
 * its perf event id up in <tracefs>/events/<category>/<name>/id. A tp_btf program names
 * its tracepoint through kernel BTF (/sys/kernel/btf/vmlinux) and is attached with
 * bpf(BPF_RAW_TRACEPOINT_OPEN), so it works on a machine where tracefs is not mounted.
 * Its context is the tracepoint's argument list (TP_PROTO), one u64 per argument,
 * checked by the verifier against the kernel's prototype. */
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

/* The one field of the kernel's task_struct read here. preserve_access_index makes its
 * offset a CO-RE relocation: libbpf rewrites it from the running kernel's BTF at load. */
struct task_struct {
	int pid;
} __attribute__((preserve_access_index));

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

/* raw_syscalls:sys_enter, TP_PROTO(struct pt_regs *regs, long id). */
SEC("tp_btf/sys_enter")
int syscount_sys_enter(unsigned long long *ctx)
{
	if (is_tracked())
		count((__u32)ctx[1]);
	return 0;
}

/* io_uring:io_uring_submit_req, TP_PROTO(struct io_kiocb *req): one per SQE taken. */
SEC("tp_btf/io_uring_submit_req")
int syscount_uring_submit(unsigned long long *ctx)
{
	if (is_tracked())
		count(SYSCOUNT_NR_URING_SUBMIT);
	return 0;
}

/* sched:sched_process_fork, TP_PROTO(struct task_struct *parent, struct task_struct
 * *child), fired in the parent (current) for every new process and thread. */
SEC("tp_btf/sched_process_fork")
int syscount_fork(unsigned long long *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx[1];
	__u32 pid;
	__u8 yes = 1;

	if (!is_tracked())
		return 0;
	/* A BTF pointer of tp_btf: the verifier allows the direct, fault-safe load. */
	pid = child->pid;
	/* Threads get a tid key too: harmless, a tid never names another process. */
	bpf_map_update_elem(&tracked, &pid, &yes, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
