/* Shared between kread.bpf.c and the Rust loader (src/rtnl/kread.rs). */
#ifndef NETSLOT_KREAD_H
#define NETSLOT_KREAD_H

/* Bytes copied from the kernel text address; each limit is defined here once. */
#define KREAD_LEN 64

#endif
