/* Shared between syscount.bpf.c and the Rust loader (src/syscount/mod.rs). */
#ifndef NETSLOT_SYSCOUNT_H
#define NETSLOT_SYSCOUNT_H

/* Thread-name length (TASK_COMM_LEN); each limit is defined here once. */
#define SYSCOUNT_COMM_LEN 16
/* Processes followed at once (the target, its threads' tids and its descendants). */
#define SYSCOUNT_MAX_TRACKED 262144
/* Distinct (thread name, syscall number) pairs counted. */
#define SYSCOUNT_MAX_KEYS 8192

/* What is counted, per (thread name, syscall number). */
struct syscount_key {
	char comm[SYSCOUNT_COMM_LEN];
	__u32 nr;
};

/* Syscall number used in the count map for io_uring submissions (io_uring_submit_req),
 * which are not syscalls: far above any real syscall number. */
#define SYSCOUNT_NR_URING_SUBMIT 0x7fff0001u

#endif
