//! threads: a thread pool doing what providers did before: per slot, create the veth pair
//! in the root namespace, move one end into the slot, rename and configure it, one
//! request and one ACK at a time. IPv6 left on.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::nl::{self, Nl, NlError, CREATE};
use super::ns;
use super::{Provision, RunSpec, SlotPlan, System, SystemError};

/// A slot made by a worker: its namespace fd and the socket opened inside it.
struct Made {
    _ns: OwnedFd,
    _sock: netlink_sys::Socket,
}

/// `threads` workers sharing one queue of slot ids.
pub struct ThreadPool {
    threads: usize,
    host: Option<OwnedFd>,
    made: Vec<Made>,
}

impl ThreadPool {
    /// A pool of `threads` workers.
    pub fn new(threads: usize) -> Self {
        Self {
            threads,
            host: None,
            made: Vec::new(),
        }
    }
}

/// One slot, step by step; every request waits for its ACK.
fn one_slot(spec: &RunSpec, id: usize, host_ns: &OwnedFd, host: &mut Nl) -> Result<Made, NlError> {
    let p = SlotPlan::new(spec, id);
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| NlError(format!("{what}: {e}"))
    };
    // Namespace: unshare in this thread, keep an fd and a socket inside, come back.
    ns::unshare_net().map_err(io("unshare"))?;
    let slot_ns = ns::current().map_err(io("open netns"))?;
    let slot = Nl::open();
    ns::enter(host_ns.as_fd()).map_err(io("setns back"))?;
    let mut slot = slot?;
    let tmp = format!("{}p", p.name);
    // veth pair in the root namespace, then move the peer.
    host.request(nl::veth(&p.name, false, spec.group, &tmp, None, 0), CREATE)?;
    host.request(nl::move_by_name(&tmp, slot_ns.as_raw_fd()), 0)?;
    // Inside: find it, rename to eth0, up; lo up; address; route.
    let idx = slot.link_index(&tmp)?;
    slot.request(nl::set_index(idx, false, Some("eth0")), 0)?;
    slot.request(nl::set_index(idx, true, None), 0)?;
    slot.request(nl::set_up(1), 0)?;
    slot.request(nl::addr(idx, p.slot_ip, 31), CREATE)?;
    // Host end up and addressed, then the route (needs the gateway reachable).
    let host_idx = host.link_index(&p.name)?;
    host.request(nl::set_index(host_idx, true, None), 0)?;
    host.request(nl::addr(host_idx, p.host_ip, 31), CREATE)?;
    slot.request(nl::default_route(p.host_ip, idx), CREATE)?;
    Ok(Made {
        _ns: slot_ns,
        _sock: slot.into_socket(),
    })
}

impl System for ThreadPool {
    fn setup(&mut self, _spec: &RunSpec) -> Result<(), SystemError> {
        self.host = Some(ns::current().map_err(SystemError::ctx("open host netns"))?);
        Ok(())
    }

    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError> {
        let host_ns = self.host.as_ref().expect("setup ran");
        let next = AtomicUsize::new(0);
        let out: Mutex<(Vec<Made>, Vec<f64>, Vec<String>)> = Mutex::default();
        std::thread::scope(|s| {
            for _ in 0..self.threads {
                s.spawn(|| {
                    let mut host = match Nl::open() {
                        Ok(h) => h,
                        Err(e) => {
                            out.lock().expect("lock").2.push(e.0);
                            return;
                        }
                    };
                    loop {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        if id >= spec.n {
                            return;
                        }
                        let t = Instant::now();
                        let r = one_slot(spec, id, host_ns, &mut host);
                        let us = t.elapsed().as_secs_f64() * 1e6;
                        let mut o = out.lock().expect("lock");
                        match r {
                            Ok(m) => {
                                o.0.push(m);
                                o.1.push(us);
                            }
                            Err(e) => o.2.push(format!("slot {id}: {}", e.0)),
                        }
                    }
                });
            }
        });
        let (made, latencies, errors) = out.into_inner().expect("lock");
        let ok = made.len();
        self.made = made;
        Ok(Provision {
            ok,
            failed: spec.n - ok,
            latencies_us: latencies,
            latency_kind: "per slot: first request (unshare) to last ACK, in its worker".into(),
            extra: None,
            first_error: errors.into_iter().next(),
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
