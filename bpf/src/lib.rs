//! netslot-bpf: the counters programs (XDP, and its tc twin) that count packets and bytes per slot host-end device.
//! Leaves attaching (one RTM_NEWLINK with IFLA_GROUP + IFLA_XDP, or one cls_bpf filter on a shared tc block) to the engine.
//!
//! # Pipeline, file by file
//! - `src/bpf/counters.h`: the map value `struct counter_value` and the single
//!   definition of every limit (`NETSLOT_COUNTERS_MAX_ENTRIES`).
//! - `src/bpf/count.bpf.h`: the map (a `BPF_MAP_TYPE_PERCPU_HASH` keyed by
//!   ingress ifindex) and `count_packet`, shared by both programs so they
//!   count the same way.
//! - `src/bpf/xdp_counters.bpf.c`: the XDP program, keyed by
//!   `ctx->ingress_ifindex`, always `XDP_PASS`.
//! - `src/bpf/tc_counters.bpf.c`: the sched_cls program, keyed by
//!   `skb->ingress_ifindex`, always `TC_ACT_OK` (direct action).
//! - `build.rs`: `vmlinux.h` and one libbpf-cargo skeleton per program, into `OUT_DIR`.
//! - `skel.rs`: includes the skeletons; [`MAX_DEVICES`] is read from their BTF types.
//! - `program.rs`: [`Counters`] (load for a [`Hook`], fd and id for the
//!   engine, per-device XDP attach).
//! - `pin.rs`: [`Counters::pin`], [`PinnedCounters`], [`unpin`].
//! - `bpffs.rs`: bpffs check and mount at `/sys/fs/bpf` (the only unsafe code).
//! - `counters.rs`: reading and summing the per-CPU values, [`DeviceCounters`].
//! - `src/bpf/tap_redirect.bpf.c` and `tap_redirect.rs`: [`TapRedirect`], the XDP
//!   program that joins a microVM slot's tap and its veth end (no map, no state).
//! - `error.rs`: [`BpfError`] naming the [`BpfOp`] and carrying the OS error.
//!
//! # Why a per-CPU hash
//! Ifindexes are sparse and keep growing over a host's life (a host that has
//! created a million slots has ifindexes past a million), so an array indexed by
//! ifindex would be huge or wrap; the hash holds only live devices. Per-CPU
//! values need no atomics in the program; [`Counters::read_all`] sums them.
//! When the map is full new devices pass uncounted: call
//! [`Counters::forget`] when a slot is torn down.
//!
//! # How the build finds `vmlinux.h`
//! `build.rs` runs `bpftool btf dump file /sys/kernel/btf/vmlinux format c`
//! into `OUT_DIR/vmlinux/vmlinux.h` (set `NETSLOT_BPFTOOL` to use another
//! bpftool). If bpftool or the kernel BTF is missing the build fails and names
//! the Debian package `bpftool`. It is generated rather than vendored: the
//! program only uses `struct xdp_md` and a few UAPI enums, so any BTF kernel
//! gives the same object, and a vendored 3 MB header would be an unreviewable
//! blob without a provenance we could check; every machine that can run the
//! tests (root, BTF kernel, XDP) can also dump its BTF. CO-RE relocates the
//! object against the target kernel's BTF at load time either way.
//!
//! # Attaching
//! The engine attaches with netlink: after the host ends of a batch are
//! created in one device group, one RTM_NEWLINK (ifi_index 0, IFLA_GROUP,
//! IFLA_XDP { IFLA_XDP_FD = [`Counters::prog_fd`] }) attaches all of them
//! under one RTNL acquisition. [`Counters::attach_per_device`] is the
//! libbpf `bpf_xdp_attach` alternative, one RTNL acquisition per device.
//! For [`Hook::Tc`] the engine gives every host end a clsact qdisc on one
//! shared ingress block and adds the program once, as a cls_bpf filter on
//! that block (docs/ebpf.md has the RTNL cost of each).

#![deny(unsafe_code)]

mod bpffs;
mod counters;
mod error;
mod pin;
mod program;
mod skel;
mod tap_redirect;

pub use bpffs::BPFFS_ROOT;
pub use counters::DeviceCounters;
pub use error::{BpfError, BpfOp, Result};
pub use pin::{unpin, PinnedCounters, MAP_PIN, PROG_PIN};
pub use program::{Counters, Hook};
pub use skel::MAX_DEVICES;
pub use tap_redirect::{TapRedirect, SLOT_END_BIT};
