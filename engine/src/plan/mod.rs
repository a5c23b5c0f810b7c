//! plan: turns slot specs into the requests of the standard slot, per socket, in order.
//! Sans-IO: decides what goes to which socket; sending is `ring`'s, settling `reconcile`'s.
//!
//! On a slot's own socket (its namespace): for a microVM slot the veth pair in place and
//! one group change for every device of the namespace (no address, no route: see
//! `crate::microvm`); for every other slot lo up, the veth pair in place, the
//! address (a leased slot's with two routes, see `SlotSpec::leased`; an IPv6 lease's
//! likewise, see `SlotSpec::ipv6`), the default route (IPv4, and IPv6 with an IPv6 lease;
//! unless the slot is asked without one, see `SlotRoute`).
//! RTM_NEWADDR and RTM_NEWROUTE act in the socket's namespace
//! (sock_net), so these must go there. On the host socket: the host addresses (each with
//! its host end's per-device attachment, if the pool uses one; on a tc-block pool's first
//! call the one filter right after the first qdisc), then one group change per sub-batch
//! that brings its host ends up (see `hold` and `groups`).

use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;

use crate::batch::{Batcher, Flight, Limits, Sock};
use crate::op::Op;
use crate::owner::Owner;
use crate::seq::Ledger;
use crate::slot::SlotSpec;
use crate::wire::{addr, link, route, tc};

/// ifindex of `lo` in every network namespace (LOOPBACK_IFINDEX).
const LOOPBACK_IFINDEX: u32 = 1;

/// What every slot of a pool shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolShape {
    pub group: u32,
    pub host_netns_fd: RawFd,
    pub ipv6_off: bool,
    /// The tap redirect program of a microVM pool (`crate::microvm`).
    pub tap_xdp_fd: Option<RawFd>,
}

/// Which route a slot adds inside its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotRoute {
    /// The default route via the host end (every pooled slot; a namespace's first attach).
    Default,
    /// None besides the /31's connected route, which the kernel adds with the address: a
    /// later attach into a namespace that has its default route already. No `Op::Route`
    /// request is planned, so none is counted or awaited.
    None,
}

/// The one send on slot `slot`'s own socket.
pub(crate) fn slot_socket(
    ledger: &mut Ledger,
    limits: Limits,
    slot: usize,
    spec: &SlotSpec,
    shape: PoolShape,
    slot_route: SlotRoute,
) -> Vec<Flight> {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let mut b = Batcher::new(Sock::Slot(slot), limits);
    let slot = Owner::Slot(slot);
    let microvm = spec.tap.as_ref().zip(shape.tap_xdp_fd);
    if microvm.is_none() {
        b.push(ledger, slot, Op::LoUp, link::set_up(LOOPBACK_IFINDEX), 0);
    }
    let pair = link::VethPair {
        ifindex: spec.ifindex,
        slot_ifindex: spec.slot_end_ifindex(),
        slot_name: &spec.slot_ifname,
        slot_mac: spec.slot_mac,
        host_name: &spec.name,
        host_mac: spec.host_mac,
        host_netns_fd: shape.host_netns_fd,
        group: shape.group,
        mtu: spec.mtu,
    };
    b.push(ledger, slot, Op::Veth, link::veth_in_place(&pair), create);
    if let Some((tap, fd)) = microvm {
        microvm_devices(&mut b, ledger, slot, spec, tap, shape.ipv6_off, fd);
        return b.finish(ledger);
    }
    if shape.ipv6_off {
        // Before the host end comes up and gives eth0 a carrier (see wire::link).
        b.push(
            ledger,
            slot,
            Op::Ipv6Off,
            link::ipv6_addr_gen_none(spec.ifindex),
            0,
        );
    }
    if spec.leased {
        if !spec.ipv6_only {
            leased_slot_end(&mut b, ledger, slot, spec);
        }
        if let Some(v6) = spec.ipv6 {
            leased_slot_end_ipv6(&mut b, ledger, slot, spec.ifindex, v6);
        }
    } else {
        b.push(
            ledger,
            slot,
            Op::SlotAddr,
            addr::ipv4(spec.ifindex, spec.slot_ip, spec.prefix_len),
            create,
        );
    }
    if slot_route == SlotRoute::Default {
        if !spec.ipv6_only {
            let default = route::default_via(spec.host_ip, spec.ifindex);
            b.push(ledger, slot, Op::Route, default, create);
        }
        if let Some(v6) = spec.ipv6.filter(|_| spec.leased) {
            let default = route::default_via(v6.gateway, spec.ifindex);
            b.push(ledger, slot, Op::Route, default, create);
        }
    }
    b.finish(ledger)
}

/// A microVM slot after its veth pair: every device of the slot's namespace (`lo`, the tap
/// made by the pool thread, the slot end; all in device group 0, where the kernel puts a
/// new device) up, without IPv6 address generation, with the tap redirect program, in ONE
/// group change (rtnl_group_changelink: one acquisition for the three), plus the tap's MTU
/// when the slot's is not the 1500 a tap starts with. No address and no route: the guest
/// behind the tap holds the slot's address (`crate::microvm`). One request where the
/// standard slot sends four (lo up, IPv6 off, address, route).
///
/// Group 0 is every default device, which is why a pool's host ends never use it; inside
/// the slot's fresh namespace it is exactly these three (and whatever fallback tunnel
/// devices the kernel registers in every namespace, which a standard slot has too). `lo`
/// gets the program in generic mode and passes everything; the tap and the slot end get
/// it natively.
fn microvm_devices(
    b: &mut Batcher,
    ledger: &mut Ledger,
    slot: Owner,
    spec: &SlotSpec,
    tap: &crate::microvm::TapSpec,
    ipv6_off: bool,
    xdp_fd: RawFd,
) {
    if spec.mtu != link::TAP_DEFAULT_MTU {
        b.push(
            ledger,
            slot,
            Op::TapMtu,
            link::set_mtu(tap.ifindex, spec.mtu),
            0,
        );
    }
    let all = link::default_group_ready(ipv6_off, xdp_fd);
    b.push(ledger, slot, Op::SlotRedirect, all, 0);
}

/// A leased slot end's address and routes (`SlotSpec::leased`), as the reference CNI
/// `ptp` plugin makes them: the address without its prefix route, the gateway on the
/// link, the prefix via the gateway. The default route, if any, follows as for every slot.
fn leased_slot_end(b: &mut Batcher, ledger: &mut Ledger, slot: Owner, spec: &SlotSpec) {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let addr = addr::ipv4_without_prefix_route(spec.ifindex, spec.slot_ip, spec.prefix_len);
    b.push(ledger, slot, Op::SlotAddr, addr, create);
    let gateway = route::on_link(spec.host_ip, spec.ifindex);
    b.push(ledger, slot, Op::Route, gateway, create);
    let prefix = route::via(spec.slot_ip, spec.prefix_len, spec.host_ip, spec.ifindex);
    b.push(ledger, slot, Op::Route, prefix, create);
}

/// A dual-stack slot end's IPv6 address and routes ([`crate::slot::Ipv6Lease`]), laid out
/// as the IPv4 lease's in [`leased_slot_end`]; the address without DAD (`addr::ipv6`).
fn leased_slot_end_ipv6(
    b: &mut Batcher,
    ledger: &mut Ledger,
    slot: Owner,
    ifindex: u32,
    v6: crate::slot::Ipv6Lease,
) {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let addr = addr::ipv6(ifindex, v6.address, v6.prefix_len);
    b.push(ledger, slot, Op::SlotAddr, addr, create);
    let gateway = route::on_link(v6.gateway, ifindex);
    b.push(ledger, slot, Op::Route, gateway, create);
    let prefix = route::via(v6.address, v6.prefix_len, v6.gateway, ifindex);
    b.push(ledger, slot, Op::Route, prefix, create);
}

/// The group change that ends a call: every host end of `group` up (attaching `xdp_fd`),
/// preceded, when IPv6 is off, by one that turns off IPv6 address generation (do_setlink
/// applies IFF_UP before IFLA_AF_SPEC, so they cannot share a message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupChange {
    pub group: u32,
    pub xdp_fd: Option<RawFd>,
    pub ipv6_off: bool,
}

/// The one cls_bpf filter of a tc-block pool.
///
/// It goes right after the first qdisc of the call in the host send order, because the
/// block exists only once a qdisc is bound to it, and before any host end comes up, so
/// every host end is counted from its first packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcFilter {
    pub block: u32,
    pub prog_fd: RawFd,
    pub prog_name: &'static str,
}

/// What each host end gets besides its address, in the same host send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PerDevice {
    /// Nothing: the counters (if any) come with the group change.
    Nothing,
    /// IFLA_XDP with this program fd, by its own RTM_SETLINK.
    Xdp(RawFd),
    /// RTM_NEWQDISC clsact whose ingress block is this shared block index.
    Clsact { block: u32 },
}

/// What every host end's requests carry besides its address: one call's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostEnds {
    /// The counters' per-device request, if any.
    pub per_device: PerDevice,
    /// 0, or NLM_F_ACK when fault injection asks for a reply to every request.
    pub ack: u16,
}

impl Default for HostEnds {
    fn default() -> Self {
        Self {
            per_device: PerDevice::Nothing,
            ack: 0,
        }
    }
}

/// The host addresses of `slots` (batch index, spec), each with what `each` adds, packed
/// into as few sends as fit. `filter`, when given, is taken and sent right after the
/// first qdisc.
pub(crate) fn host_addresses<'a>(
    ledger: &mut Ledger,
    limits: Limits,
    slots: impl IntoIterator<Item = (usize, &'a SlotSpec)>,
    each: HostEnds,
    filter: &mut Option<TcFilter>,
) -> Vec<Flight> {
    let HostEnds { per_device, ack } = each;
    let mut b = Batcher::new(Sock::Host, limits);
    for (slot, spec) in slots {
        let slot = Owner::Slot(slot);
        let address = if spec.leased {
            addr::ipv4_peer(spec.ifindex, spec.host_ip, spec.slot_ip)
        } else {
            addr::ipv4(spec.ifindex, spec.host_ip, spec.prefix_len)
        };
        if !spec.ipv6_only {
            b.push(
                ledger,
                slot,
                Op::HostAddr,
                address,
                NLM_F_CREATE | NLM_F_EXCL | ack,
            );
        }
        match per_device {
            PerDevice::Nothing => {}
            PerDevice::Xdp(fd) => {
                b.push(
                    ledger,
                    slot,
                    Op::Xdp,
                    link::attach_xdp(spec.ifindex, fd),
                    ack,
                );
            }
            PerDevice::Clsact { block } => {
                b.push(
                    ledger,
                    slot,
                    Op::Qdisc,
                    tc::clsact_on_block(spec.ifindex, block),
                    NLM_F_CREATE | NLM_F_EXCL | ack,
                );
                if let Some(f) = filter.take() {
                    b.push(
                        ledger,
                        Owner::Pool,
                        Op::TcFilter,
                        tc::bpf_filter_on_block(f.block, f.prog_fd, f.prog_name),
                        NLM_F_CREATE | NLM_F_EXCL | ack,
                    );
                }
            }
        }
        if let Some(v6) = spec.ipv6.filter(|_| spec.leased) {
            // The host end comes up on its own first: the kernel adds an IPv6 address's
            // peer route only while the device is up (__ipv6_ifa_notify), and does not
            // add it again when the device comes up later (fixup_permanent_addr restores
            // the prefix route only), whereas IPv4 adds its routes at NETDEV_UP. One more
            // RTNL acquisition per dual-stack slot; its group change is then a no-op for
            // IFF_UP.
            b.push(ledger, slot, Op::HostUp, link::set_up(spec.ifindex), ack);
            b.push(
                ledger,
                slot,
                Op::HostAddr,
                addr::ipv6_peer(spec.ifindex, v6.gateway, v6.address),
                NLM_F_CREATE | NLM_F_EXCL | ack,
            );
        }
    }
    b.finish(ledger)
}

/// The group changes of `changes`, in order, each filed under its sub-batch (an index
/// into the call's sub-batches): per group, IPv6 address generation off when asked, then
/// every host end of the group up (attaching `xdp_fd`). Each request is its own RTNL
/// acquisition, bounded by its group. Sent after the groups' host addresses, apart from
/// other requests, so the call can time them (see `hold`).
pub(crate) fn group_changes(
    ledger: &mut Ledger,
    limits: Limits,
    changes: &[(usize, GroupChange)],
    ack: u16,
) -> Vec<Flight> {
    let mut b = Batcher::new(Sock::Host, limits);
    for &(k, g) in changes {
        let key = Owner::SubBatch(k);
        if g.ipv6_off {
            b.push(
                ledger,
                key,
                Op::Ipv6Off,
                link::group_ipv6_addr_gen_none(g.group),
                ack,
            );
        }
        b.push(
            ledger,
            key,
            Op::GroupUp,
            link::group_up(g.group, g.xdp_fd),
            ack,
        );
    }
    b.finish(ledger)
}

/// Deletes the host ends of `slots` (veth_dellink takes the slot end too): rollback of
/// failed slots, or giving slots back (`op` names which).
pub(crate) fn delete_host_ends<'a>(
    ledger: &mut Ledger,
    limits: Limits,
    slots: impl IntoIterator<Item = (usize, &'a SlotSpec)>,
    op: Op,
) -> Vec<Flight> {
    let mut b = Batcher::new(Sock::Host, limits);
    for (slot, spec) in slots {
        b.push(
            ledger,
            Owner::Slot(slot),
            op,
            link::delete_index(spec.ifindex),
            0,
        );
    }
    b.finish(ledger)
}

/// Host requests sent again after a receive-buffer overrun dropped their replies, each
/// asking for its own ACK so that its fate is known whatever else is lost.
pub(crate) fn again(
    ledger: &mut Ledger,
    limits: Limits,
    requests: Vec<(Owner, Op, RouteNetlinkMessage)>,
) -> Vec<Flight> {
    let mut b = Batcher::new(Sock::Host, limits);
    for (owner, op, message) in requests {
        b.push(ledger, owner, op, message, NLM_F_ACK);
    }
    b.finish(ledger)
}

#[cfg(test)]
mod tests;
