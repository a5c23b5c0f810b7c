/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * counters.h: the shared layout of the per-device XDP counters; no program logic.
 *
 * Every limit is defined ONCE, here. Rust never repeats a number: it reads the
 * map's max_entries from the loaded skeleton map and the value layout from the
 * skeleton's generated `types::counter_value`.
 */
#ifndef NETSLOT_COUNTERS_H
#define NETSLOT_COUNTERS_H

/*
 * Most host-end devices one counters map can track. A hash (not an array)
 * because ifindexes are sparse and grow without bound over a host's life.
 * When full, packets of new devices pass uncounted: call forget() for
 * devices that are gone.
 */
#define NETSLOT_COUNTERS_MAX_ENTRIES 65536

/* Value of the per-CPU hash, keyed by __u32 ingress ifindex. */
struct counter_value {
	__u64 packets;
	__u64 bytes;
};

#endif /* NETSLOT_COUNTERS_H */
