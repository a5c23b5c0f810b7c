//! host: the namespace that receives the host ends, and what the kernel says is in it.
//! Owns the host socket and namespace fd; reads links and addresses back from the kernel
//! (so `status` and `down` never trust a state file) and deletes a pool's devices by group.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use netlink_packet_core::NetlinkMessage;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkXdp};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::Serialize;

use crate::netns;
use crate::seq::{Ledger, Tag};
use crate::sock;
use crate::wire::{link, route};

/// A device as the kernel reports it in a link dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkRecord {
    /// ifindex.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Device group (IFLA_GROUP).
    pub group: u32,
    /// IFF_UP is set.
    pub up: bool,
    /// Hardware address, as text.
    pub mac: Option<String>,
    /// Link kind (IFLA_INFO_KIND), e.g. "veth".
    pub kind: Option<String>,
    /// Id of the attached XDP program, if any.
    pub xdp_prog_id: Option<u32>,
}

/// An address as the kernel reports it in an address dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AddrRecord {
    /// ifindex of the device holding it.
    pub index: u32,
    /// The address (IFA_LOCAL, else IFA_ADDRESS).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// An IPv4 route as the kernel reports it in a route dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRecord {
    /// Destination network (0.0.0.0 or :: for a default route).
    pub dst: IpAddr,
    /// Destination prefix length.
    pub dst_len: u8,
    /// Output device, when the route names one.
    pub oif: Option<u32>,
    /// Routing table (RTA_TABLE, else the header's).
    pub table: u32,
    /// Next hop (RTA_GATEWAY), when the route has one.
    pub gateway: Option<IpAddr>,
}

/// The host namespace: an fd of it and a NETLINK_ROUTE socket opened inside it.
#[derive(Debug)]
pub struct HostNs {
    ns: OwnedFd,
    sock: netlink_sys::Socket,
    /// The host socket's one sequence ledger: its own dumps and requests, and every
    /// call's host sends (lent through [`HostNs::seqs`]).
    seqs: Mutex<Ledger>,
}

impl HostNs {
    /// The calling thread's network namespace.
    pub fn current() -> io::Result<Self> {
        let ns = netns::open_current()?;
        let sock = sock::host_socket()?;
        Ok(Self::from_parts(ns, sock))
    }

    /// The namespace at `path` (e.g. /run/netns/NAME, /proc/PID/ns/net). The socket is
    /// opened by a helper thread inside it; the calling thread does not move.
    pub fn open(path: &Path) -> io::Result<Self> {
        let ns = netns::open_path(path)?;
        let sock = netns::run_in(&ns, sock::host_socket)?;
        Ok(Self::from_parts(ns, sock))
    }

    /// The calling thread's network namespace, for reading only ([`Self::links`],
    /// [`Self::addresses`], [`Self::routes`]): its socket keeps the default buffers, so
    /// no privilege is needed. Changes go through [`Self::current`].
    pub fn current_for_reading() -> io::Result<Self> {
        let ns = netns::open_current()?;
        let sock = sock::reader_socket()?;
        Ok(Self::from_parts(ns, sock))
    }

    /// [`Self::open`] for reading only (see [`Self::current_for_reading`]). Entering
    /// another namespace still needs CAP_SYS_ADMIN.
    pub fn open_for_reading(path: &Path) -> io::Result<Self> {
        let ns = netns::open_path(path)?;
        let sock = netns::run_in(&ns, sock::reader_socket)?;
        Ok(Self::from_parts(ns, sock))
    }

    fn from_parts(ns: OwnedFd, sock: netlink_sys::Socket) -> Self {
        Self {
            ns,
            sock,
            seqs: Mutex::new(Ledger::new(1)),
        }
    }

    /// The namespace's fd (what each veth peer's IFLA_NET_NS_FD names).
    pub fn netns_fd(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }

    pub(crate) fn socket(&self) -> &netlink_sys::Socket {
        &self.sock
    }

    pub(crate) fn socket_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The host socket's sequence ledger, lent to a call for one step (hold it only
    /// across sans-IO work: the host's own requests lock it too).
    pub(crate) fn seqs(&self) -> MutexGuard<'_, Ledger> {
        self.seqs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with sequence numbers from the host socket's ledger, each held in flight
    /// until `f` returns.
    fn with_seqs<R>(&self, f: impl FnOnce(&mut dyn FnMut() -> u32) -> R) -> R {
        let mut held = Vec::new();
        let out = f(&mut || {
            let seq = self.seqs().register(Tag::Direct);
            held.push(seq);
            seq
        });
        let mut seqs = self.seqs();
        for seq in held {
            seqs.settle(seq);
        }
        out
    }

    /// Every device of the namespace (RTM_GETLINK dump).
    pub fn links(&self) -> io::Result<Vec<LinkRecord>> {
        let replies = self.with_seqs(|seq| sock::dump(&self.sock, link::dump(), seq))?;
        Ok(replies.iter().filter_map(|b| parse_link(b)).collect())
    }

    /// Every address of the namespace (RTM_GETADDR dump).
    pub fn addresses(&self) -> io::Result<Vec<AddrRecord>> {
        let req = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        let replies = self.with_seqs(|seq| sock::dump(&self.sock, req, seq))?;
        Ok(replies.iter().filter_map(|b| parse_addr(b)).collect())
    }

    /// Every IPv4 route of the namespace, all tables (RTM_GETROUTE dump).
    pub fn routes(&self) -> io::Result<Vec<RouteRecord>> {
        let replies = self.with_seqs(|seq| sock::dump(&self.sock, route::dump_ipv4(), seq))?;
        Ok(replies.iter().filter_map(|b| parse_route(b)).collect())
    }

    /// Every IPv6 route of the namespace, all tables (RTM_GETROUTE dump).
    pub fn routes_ipv6(&self) -> io::Result<Vec<RouteRecord>> {
        let replies = self.with_seqs(|seq| sock::dump(&self.sock, route::dump_ipv6(), seq))?;
        Ok(replies.iter().filter_map(|b| parse_route(b)).collect())
    }

    /// Deletes exactly the devices `doomed` (ifindexes), never another: by group where
    /// every device `links` shows in a group is doomed (rtnl_group_dellink, one RTNL
    /// acquisition per group; each veth takes its peer with it), one RTM_DELLINK per
    /// device elsewhere (about 16 ms each, under RTNL: the price of a stranger in the
    /// group). A device or group already gone (ENODEV) counts as deleted. Returns the
    /// groups deleted whole and, per failure, the device or group and the error.
    pub fn delete_devices(&self, doomed: &[u32], links: &[LinkRecord]) -> DeleteOutcome {
        let (groups, singles) = split_by_group(doomed, links);
        let mut out = DeleteOutcome {
            whole_groups: groups.clone(),
            one_by_one: singles.len(),
            errors: Vec::new(),
        };
        if let Err((g, e)) = self.delete_groups(&groups, &[libc::ENODEV]) {
            out.errors
                .push(format!("group {g}: delete by group (RTM_DELLINK): {e}"));
        }
        let messages = singles.iter().map(|&i| link::delete_index(i)).collect();
        match self.with_seqs(|seq| sock::requests(&self.sock, messages, seq)) {
            Ok(results) => {
                for (i, r) in singles.iter().zip(results) {
                    if let Err(e) = r {
                        if sock::errno_of(&e) != Some(libc::ENODEV) {
                            out.errors
                                .push(format!("ifindex {i}: delete (RTM_DELLINK): {e}"));
                        }
                    }
                }
            }
            Err(e) => out.errors.push(format!(
                "{} device(s): delete (RTM_DELLINK): {e}",
                singles.len()
            )),
        }
        out
    }

    /// Deletes every device of each of `groups` (a pool's sub-batch groups), one request
    /// per group, many requests per send: one RTNL acquisition per group, so each hold is
    /// bounded by its group. Refusals with an errno in `ignore` (e.g. ENODEV: the group is
    /// already empty) count as done; the first other one is returned with its group.
    ///
    /// Several groups are deleted by up to [`DELETERS`] threads side by side, each on a
    /// socket of its own: RTNL still takes the requests one at a time, but after each one
    /// the kernel waits outside RTNL for RCU (netdev_run_todo → rcu_barrier, about 20 ms
    /// on test machines), and waits that overlap end together. With no fd to spare for
    /// more sockets (e.g. at RLIMIT_NOFILE) the host socket does it all.
    pub fn delete_groups(&self, groups: &[u32], ignore: &[i32]) -> Result<(), (u32, io::Error)> {
        let mut extra = Vec::new();
        while extra.len() + 1 < DELETERS.min(groups.len()) {
            match netns::run_in(&self.ns, sock::host_socket) {
                Ok(sock) => extra.push(sock),
                Err(_) => break,
            }
        }
        let per_thread = groups.len().div_ceil(extra.len() + 1).max(1);
        let mut parts = groups.chunks(per_thread);
        let own = parts.next().unwrap_or(&[]);
        std::thread::scope(|s| {
            // Each extra socket numbers its own requests; the host socket's come from its
            // ledger.
            let threads: Vec<_> = parts
                .zip(&extra)
                .map(|(part, sock)| {
                    s.spawn(move || {
                        let mut seqs = Ledger::new(1);
                        delete_each(sock, part, ignore, &mut || seqs.register(Tag::Direct))
                    })
                })
                .collect();
            let mine = self.with_seqs(|seq| delete_each(&self.sock, own, ignore, seq));
            threads
                .into_iter()
                .map(|t| t.join().expect("a group delete thread panicked"))
                .chain(std::iter::once(mine))
                .collect::<Result<Vec<()>, _>>()
                .map(|_| ())
        })
    }

    /// Deletes one device by ifindex (gc of a single orphaned host end; its veth peer goes
    /// with it).
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        self.with_seqs(|seq| sock::request(&self.sock, link::delete_index(index), seq()))
    }
}

/// What [`HostNs::delete_devices`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Groups deleted whole (every device in them was doomed).
    pub whole_groups: Vec<u32>,
    /// Devices deleted one by one (their group also held a device that was not).
    pub one_by_one: usize,
    /// What failed: the device or group, the operation and the kernel's error.
    pub errors: Vec<String>,
}

/// Splits `doomed` (ifindexes) into the groups that hold nothing else in `links` (safe to
/// delete whole) and the devices that share a group with something that is not doomed.
/// Group 0 (every default device) is never deleted whole.
fn split_by_group(doomed: &[u32], links: &[LinkRecord]) -> (Vec<u32>, Vec<u32>) {
    use std::collections::{BTreeMap, BTreeSet};
    let doomed: BTreeSet<u32> = doomed.iter().copied().collect();
    // group -> (doomed devices in it, whether it holds any other device)
    let mut groups: BTreeMap<u32, (Vec<u32>, bool)> = BTreeMap::new();
    for l in links {
        let entry = groups.entry(l.group).or_default();
        if doomed.contains(&l.index) {
            entry.0.push(l.index);
        } else {
            entry.1 = true;
        }
    }
    let mut whole = Vec::new();
    let mut singles = Vec::new();
    for (g, (mine, shared)) in groups {
        if mine.is_empty() {
            continue;
        }
        if shared || g == 0 {
            singles.extend(mine);
        } else {
            whole.push(g);
        }
    }
    (whole, singles)
}

/// Threads that delete a pool's groups side by side (see [`HostNs::delete_groups`]).
pub const DELETERS: usize = 8;

/// Deletes each of `groups` on `sock`, many requests per send; errnos in `ignore` count
/// as done.
fn delete_each(
    sock: &netlink_sys::Socket,
    groups: &[u32],
    ignore: &[i32],
    next_seq: &mut dyn FnMut() -> u32,
) -> Result<(), (u32, io::Error)> {
    let messages = groups.iter().map(|&g| link::group_delete(g)).collect();
    let results = sock::requests(sock, messages, next_seq)
        .map_err(|e| (groups.first().copied().unwrap_or(0), e))?;
    for (&g, r) in groups.iter().zip(results) {
        if let Err(e) = r {
            if !sock::errno_of(&e).is_some_and(|n| ignore.contains(&n)) {
                return Err((g, e));
            }
        }
    }
    Ok(())
}

fn parse_link(bytes: &[u8]) -> Option<LinkRecord> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).ok()?;
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = msg.payload else {
        return None;
    };
    let mut rec = LinkRecord {
        index: l.header.index,
        name: String::new(),
        group: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        mac: None,
        kind: None,
        xdp_prog_id: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => rec.name.clone_from(n),
            LinkAttribute::Group(g) => rec.group = *g,
            LinkAttribute::Address(m) if m.len() == 6 => {
                rec.mac = Some(crate::slot::mac_to_string(&m[..6].try_into().ok()?));
            }
            LinkAttribute::LinkInfo(infos) => rec.kind = link_kind(infos),
            LinkAttribute::Xdp(x) => rec.xdp_prog_id = xdp_prog_id(x),
            _ => {}
        }
    }
    Some(rec)
}

/// The link kind in IFLA_LINKINFO (IFLA_INFO_KIND), e.g. "veth".
pub(crate) fn link_kind(infos: &[LinkInfo]) -> Option<String> {
    infos.iter().rev().find_map(|i| match i {
        LinkInfo::Kind(InfoKind::Veth) => Some("veth".to_owned()),
        LinkInfo::Kind(other) => Some(format!("{other:?}").to_lowercase()),
        _ => None,
    })
}

/// The id of the XDP program IFLA_XDP reports attached, if any (0 means none).
pub(crate) fn xdp_prog_id(x: &[LinkXdp]) -> Option<u32> {
    x.iter().rev().find_map(|e| match e {
        LinkXdp::ProgId(id) => Some(*id).filter(|&id| id != 0),
        _ => None,
    })
}

fn parse_route(bytes: &[u8]) -> Option<RouteRecord> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).ok()?;
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = msg.payload else {
        return None;
    };
    let RouteMessage {
        header, attributes, ..
    } = r;
    let mut rec = RouteRecord {
        dst: match header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        },
        dst_len: header.destination_prefix_length,
        oif: None,
        table: u32::from(header.table),
        gateway: None,
    };
    for a in attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => rec.dst = IpAddr::V4(ip),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => rec.dst = IpAddr::V6(ip),
            RouteAttribute::Destination(_) => return None,
            RouteAttribute::Oif(i) => rec.oif = Some(i),
            RouteAttribute::Table(t) => rec.table = t,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => rec.gateway = Some(IpAddr::V4(ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => rec.gateway = Some(IpAddr::V6(ip)),
            _ => {}
        }
    }
    Some(rec)
}

pub(crate) fn parse_addr(bytes: &[u8]) -> Option<AddrRecord> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).ok()?;
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) = msg.payload else {
        return None;
    };
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    Some(AddrRecord {
        index: a.header.index,
        addr: local.or(address)?,
        prefix_len: a.header.prefix_len,
    })
}

/// Namespaces pinned under `dir` whose names are `<prefix><digits>`, sorted by number.
pub fn pinned(dir: &Path, prefix: &str) -> io::Result<Vec<(u32, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = slot_number(name, prefix) {
            out.push((id, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The slot number in `name` if it is `<prefix><digits>`.
pub fn slot_number(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The kernel's errno behind an error of this module (e.g. ENODEV from
/// a group delete when the group is already empty).
pub fn errno(e: &io::Error) -> Option<i32> {
    sock::errno_of(e)
}

/// Unmounts and removes a pinned namespace.
pub fn unpin(path: &Path) -> io::Result<()> {
    netns::unpin(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, group: u32) -> LinkRecord {
        LinkRecord {
            index,
            name: format!("d{index}"),
            group,
            up: true,
            mac: None,
            kind: Some("veth".into()),
            xdp_prog_id: None,
        }
    }

    #[test]
    fn a_group_is_deleted_whole_only_when_everything_in_it_is_doomed() {
        let links = [
            link(1, 0),
            link(10, 7),
            link(11, 7),
            link(20, 8),
            link(21, 8),
            link(30, 9),
        ];
        // Group 7 all doomed: whole. Group 8 holds a stranger (21): one by one. Group 0 never.
        let (whole, singles) = split_by_group(&[10, 11, 20, 1], &links);
        assert_eq!(whole, [7]);
        assert_eq!(singles, [1, 20]);
        assert_eq!(split_by_group(&[], &links), (vec![], vec![]));
    }

    #[test]
    fn slot_numbers_need_the_exact_prefix_and_digits() {
        assert_eq!(slot_number("ns12", "ns"), Some(12));
        assert_eq!(slot_number("ns", "ns"), None);
        assert_eq!(slot_number("nsx1", "ns"), None);
        assert_eq!(slot_number("ns1a", "ns"), None);
        assert_eq!(slot_number("xns1", "ns"), None);
    }
}
