//! floor: the kernel floor: per slot only unshare, socket and one sendmsg of prebuilt
//! messages (lo up, veth in place, address, route, end marker) plus its recv; host
//! addresses in sendmsgs of 1024, one group change. No bookkeeping, no error recovery.
//! Messages are built in `setup` (untimed). IPv6 left on, as in kernel-notes.md.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use super::nl::{self, Nl, CREATE};
use super::ns;
use super::{Provision, RunSpec, SlotPlan, System, SystemError};

/// First explicit ifindex: both ends of slot `id` get `IFINDEX_BASE + id`, so host
/// addresses need no lookup (the child's host namespace holds only `lo`).
const IFINDEX_BASE: u32 = 1000;
/// Host addresses per sendmsg.
const HOST_CHUNK: usize = 1024;

/// The bare syscalls, one thread.
#[derive(Default)]
pub struct Floor {
    host_ns: Option<OwnedFd>,
    slot_bufs: Vec<Vec<u8>>,
    host_bufs: Vec<Vec<u8>>,
    made: Vec<netlink_sys::Socket>,
}

fn slot_buf(spec: &RunSpec, id: usize, host_fd: i32) -> Vec<u8> {
    let p = SlotPlan::new(spec, id);
    let idx = IFINDEX_BASE + id as u32;
    let mut b = Vec::with_capacity(512);
    nl::push(&mut b, nl::set_up(1), 0, 1);
    nl::push(
        &mut b,
        nl::veth_indexed(idx, "eth0", &p.name, host_fd, spec.group),
        CREATE,
        2,
    );
    nl::push(&mut b, nl::addr(idx, p.slot_ip, 31), CREATE, 3);
    nl::push(&mut b, nl::default_route(p.host_ip, idx), CREATE, 4);
    nl::push_end_marker(&mut b, 5);
    b
}

impl System for Floor {
    fn setup(&mut self, spec: &RunSpec) -> Result<(), SystemError> {
        let host = ns::current().map_err(SystemError::ctx("open host netns"))?;
        let fd = host.as_raw_fd();
        self.slot_bufs = (0..spec.n).map(|i| slot_buf(spec, i, fd)).collect();
        self.host_bufs = (0..spec.n)
            .collect::<Vec<_>>()
            .chunks(HOST_CHUNK)
            .map(|ids| {
                let mut b = Vec::new();
                for &i in ids {
                    let p = SlotPlan::new(spec, i);
                    nl::push(
                        &mut b,
                        nl::addr(IFINDEX_BASE + i as u32, p.host_ip, 31),
                        CREATE,
                        1,
                    );
                }
                nl::push_end_marker(&mut b, 2);
                b
            })
            .collect();
        self.host_ns = Some(host);
        Ok(())
    }

    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError> {
        let bufs = std::mem::take(&mut self.slot_bufs);
        let mut latencies = Vec::with_capacity(spec.n);
        // A dedicated thread: it leaves the host namespace for good.
        let made = std::thread::scope(|s| {
            s.spawn(|| -> Result<Vec<netlink_sys::Socket>, SystemError> {
                let mut made = Vec::with_capacity(bufs.len());
                for b in &bufs {
                    let t = Instant::now();
                    ns::unshare_net().map_err(SystemError::ctx("unshare"))?;
                    let mut sock = Nl::open_unconnected().map_err(|e| SystemError(e.0))?;
                    sock.send_all(b).map_err(|e| SystemError(e.0))?;
                    sock.wait_ack(5).map_err(|e| SystemError(e.0))?;
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                    made.push(sock.into_socket());
                }
                Ok(made)
            })
            .join()
            .map_err(|_| SystemError("floor thread panicked".into()))?
        })?;
        let mut host = Nl::open_unconnected().map_err(|e| SystemError(e.0))?;
        host.force_buffers(8 << 20).map_err(|e| SystemError(e.0))?;
        for b in &self.host_bufs {
            host.send_all(b).map_err(|e| SystemError(e.0))?;
            host.wait_ack(2).map_err(|e| SystemError(e.0))?;
        }
        host.request(nl::group_up(spec.group), 0)
            .map_err(|e| SystemError(e.0))?;
        let ok = made.len();
        self.made = made;
        Ok(Provision {
            ok,
            failed: spec.n - ok,
            latencies_us: latencies,
            latency_kind: "slot side: unshare to the end marker's ACK (host addresses and \
                           group up follow for all slots)"
                .into(),
            extra: None,
            first_error: None,
        })
    }

    fn teardown(&mut self, spec: &RunSpec) -> Result<(), SystemError> {
        let mut host = Nl::open().map_err(|e| SystemError(e.0))?;
        host.request(nl::group_delete(spec.group), 0)
            .map_err(|e| SystemError(e.0))?;
        self.made.clear();
        Ok(())
    }
}
