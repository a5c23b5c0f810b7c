//! Counters map: per-CPU sums per ifindex, key deletion, and the layout check against the skeleton.
//! Leaves loading, attaching and pinning to `program` and `pin`.

use std::mem::{offset_of, size_of};
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::error::{BpfError, BpfOp, Result};
use crate::skel::{CounterValue, MAX_DEVICES};

/// Packets and bytes seen on one host-end device, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceCounters {
    /// Ingress ifindex (`xdp_md.ingress_ifindex`), in the device's own namespace.
    pub ifindex: u32,
    /// Packets received.
    pub packets: u64,
    /// Bytes received (linear XDP length: L2 header and payload, no FCS).
    pub bytes: u64,
}

/// The `counters` per-CPU hash: key `u32` ifindex, value `struct counter_value`.
#[derive(Debug)]
pub(crate) struct CountersMap {
    map: MapHandle,
}

impl CountersMap {
    /// Wraps a map after checking it is shaped like `counters` in `counters.h`.
    pub(crate) fn new(map: MapHandle, op: BpfOp, path: &Path) -> Result<Self> {
        let mismatch = |what| BpfError::Mismatch {
            op,
            path: path.to_path_buf(),
            what,
        };
        if map.map_type() != MapType::PercpuHash {
            return Err(mismatch("map type is not BPF_MAP_TYPE_PERCPU_HASH"));
        }
        if map.key_size() as usize != size_of::<u32>() {
            return Err(mismatch("key size is not 4 (u32 ifindex)"));
        }
        if map.value_size() as usize != size_of::<CounterValue>() {
            return Err(mismatch("value size differs from struct counter_value"));
        }
        if map.max_entries() as usize != MAX_DEVICES {
            return Err(mismatch(
                "max_entries differs from NETSLOT_COUNTERS_MAX_ENTRIES",
            ));
        }
        Ok(Self { map })
    }

    pub(crate) fn handle(&self) -> &MapHandle {
        &self.map
    }

    /// Every key's per-CPU values summed; keys deleted meanwhile are skipped.
    pub(crate) fn read_all(&self) -> Result<Vec<DeviceCounters>> {
        let mut out = Vec::new();
        for key in self.map.keys() {
            let Some(ifindex) = key_to_ifindex(&key) else {
                continue;
            };
            let per_cpu = self
                .map
                .lookup_percpu(&key, MapFlags::ANY)
                .map_err(BpfError::libbpf(BpfOp::Read))?;
            // None: forgotten between get_next_key and lookup.
            let Some(per_cpu) = per_cpu else { continue };
            let mut sum = DeviceCounters {
                ifindex,
                ..DeviceCounters::default()
            };
            for cpu in &per_cpu {
                let v = decode(cpu);
                sum.packets = sum.packets.wrapping_add(v.packets);
                sum.bytes = sum.bytes.wrapping_add(v.bytes);
            }
            out.push(sum);
        }
        out.sort_unstable_by_key(|c| c.ifindex);
        Ok(out)
    }

    /// Deletes one device's counters. A missing key is not an error.
    pub(crate) fn forget(&self, ifindex: u32) -> Result<()> {
        match self.map.delete(&ifindex.to_ne_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BpfError::libbpf(BpfOp::Forget { ifindex })(e)),
        }
    }
}

fn key_to_ifindex(key: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(key.try_into().ok()?))
}

/// One CPU's value, decoded with the skeleton's field offsets (no hand-copied layout).
fn decode(bytes: &[u8]) -> CounterValue {
    let field = |offset: usize| {
        bytes
            .get(offset..offset + size_of::<u64>())
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    };
    CounterValue {
        packets: field(offset_of!(CounterValue, packets)),
        bytes: field(offset_of!(CounterValue, bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_uses_skeleton_layout() {
        let mut raw = vec![0u8; size_of::<CounterValue>()];
        let p = offset_of!(CounterValue, packets);
        let b = offset_of!(CounterValue, bytes);
        raw[p..p + 8].copy_from_slice(&7u64.to_ne_bytes());
        raw[b..b + 8].copy_from_slice(&1500u64.to_ne_bytes());
        let v = decode(&raw);
        assert_eq!((v.packets, v.bytes), (7, 1500));
    }

    #[test]
    fn short_value_decodes_as_zero() {
        let v = decode(&[1, 2, 3]);
        assert_eq!((v.packets, v.bytes), (0, 0));
    }
}
