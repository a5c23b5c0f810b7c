//! nl: the netlink requests of the baselines that speak netlink themselves (thread pool,
//! kernel floor), and a one-request-one-ACK exchange. Built with netlink-packet-route.
//! No batching policy here: callers decide how many messages go in one send.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Room for one reply datagram (ACKs, an error with extended-ACK text, one link).
const REPLY_BUF: usize = 8192;

/// Flags of a creating request.
pub const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

/// RTM_SETLINK: IFF_UP on device `index`.
pub fn set_up(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

/// RTM_SETLINK: IFF_UP set or cleared on device `index` (the change mask names IFF_UP
/// either way, so "down" is a real change, not an empty request).
pub fn set_link(index: u32, up: bool) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

/// RTM_SETLINK by name: move the device to the namespace `ns_fd`
/// (__dev_change_net_namespace: the expensive path kernel-notes.md warns about).
pub fn move_by_name(name: &str, ns_fd: RawFd) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m.attributes.push(LinkAttribute::NetNsFd(ns_fd));
    RouteNetlinkMessage::SetLink(m)
}

/// RTM_SETLINK on device `index`: optional IFF_UP and rename.
pub fn set_index(index: u32, up: bool, rename: Option<&str>) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if up {
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
    }
    if let Some(new) = rename {
        m.attributes.push(LinkAttribute::IfName(new.into()));
    }
    RouteNetlinkMessage::SetLink(m)
}

/// RTM_NEWLINK veth pair: primary `name` here (up if `up`), peer `peer` in `peer_ns`
/// (or here when `None`), both in `group` (0: leave the default).
pub fn veth(
    name: &str,
    up: bool,
    group: u32,
    peer: &str,
    peer_ns: Option<RawFd>,
    peer_group: u32,
) -> RouteNetlinkMessage {
    let mut p = LinkMessage::default();
    p.attributes.push(LinkAttribute::IfName(peer.into()));
    if peer_group != 0 {
        p.attributes.push(LinkAttribute::Group(peer_group));
    }
    if let Some(fd) = peer_ns {
        p.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    let mut m = LinkMessage::default();
    if up {
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
    }
    m.attributes.push(LinkAttribute::IfName(name.into()));
    if group != 0 {
        m.attributes.push(LinkAttribute::Group(group));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
    ]));
    RouteNetlinkMessage::NewLink(m)
}

/// RTM_NEWLINK veth pair in place with explicit ifindexes: primary `name` (up) in the
/// socket's namespace, peer `peer` in `peer_ns` and `group`, both ends `index`.
pub fn veth_indexed(
    index: u32,
    name: &str,
    peer: &str,
    peer_ns: RawFd,
    group: u32,
) -> RouteNetlinkMessage {
    let mut p = LinkMessage::default();
    p.header.index = index;
    p.attributes = vec![
        LinkAttribute::IfName(peer.into()),
        LinkAttribute::Group(group),
        LinkAttribute::NetNsFd(peer_ns),
    ];
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes = vec![
        LinkAttribute::IfName(name.into()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]),
    ];
    RouteNetlinkMessage::NewLink(m)
}

/// RTM_NEWLINK group change (rtnl_group_changelink): every device of `group` up.
pub fn group_up(group: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::Group(group));
    RouteNetlinkMessage::NewLink(m)
}

/// RTM_DELLINK by group (rtnl_group_dellink).
pub fn group_delete(group: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::Group(group));
    RouteNetlinkMessage::DelLink(m)
}

/// RTM_GETLINK for one device by name (to learn its ifindex).
pub fn get_by_name(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    RouteNetlinkMessage::GetLink(m)
}

/// RTM_NEWADDR: `ip/len` on device `index`.
pub fn addr(index: u32, ip: Ipv4Addr, len: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = len;
    m.header.index = index;
    m.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(ip)),
        AddressAttribute::Address(IpAddr::V4(ip)),
    ];
    RouteNetlinkMessage::NewAddress(m)
}

/// RTM_NEWROUTE: default via `gw` out of `oif`.
pub fn default_route(gw: Ipv4Addr, oif: u32) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes = vec![
        RouteAttribute::Gateway(RouteAddress::Inet(gw)),
        RouteAttribute::Oif(oif),
    ];
    RouteNetlinkMessage::NewRoute(m)
}

/// Appends `msg` (NLMSG_ALIGNed) to `out` with NLM_F_REQUEST | `flags` and `seq`.
pub fn push(out: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16, seq: u32) {
    let mut h = NetlinkHeader::default();
    h.flags = NLM_F_REQUEST | flags;
    h.sequence_number = seq;
    push_msg(
        out,
        NetlinkMessage::new(h, NetlinkPayload::InnerMessage(msg)),
    );
}

/// Appends an NLMSG_NOOP with NLM_F_ACK: its ACK proves every earlier message of the
/// same send was processed (errors are acked even without NLM_F_ACK).
pub fn push_end_marker(out: &mut Vec<u8>, seq: u32) {
    let mut h = NetlinkHeader::default();
    h.flags = NLM_F_REQUEST | NLM_F_ACK;
    h.sequence_number = seq;
    push_msg(
        out,
        NetlinkMessage::<RouteNetlinkMessage>::new(h, NetlinkPayload::Noop),
    );
}

fn push_msg(out: &mut Vec<u8>, mut msg: NetlinkMessage<RouteNetlinkMessage>) {
    msg.finalize();
    let len = msg.buffer_len();
    let start = out.len();
    out.resize(start + ((len + 3) & !3), 0);
    msg.serialize(&mut out[start..start + len]);
}

/// A NETLINK_ROUTE socket of the calling thread's namespace, with a sequence counter.
pub struct Nl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A kernel refusal (positive errno) or a socket error.
#[derive(Debug)]
pub struct NlError(pub String);

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Nl {
    /// Opens and connects a socket in the calling thread's current namespace.
    pub fn open() -> Result<Self, NlError> {
        let sock = Socket::new(NETLINK_ROUTE).map_err(|e| NlError(format!("socket: {e}")))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| NlError(format!("connect: {e}")))?;
        Ok(Self {
            sock,
            seq: 1,
            buf: vec![0; REPLY_BUF],
        })
    }

    /// Opens a socket without connect (sends go to the kernel anyway): one syscall.
    pub fn open_unconnected() -> Result<Self, NlError> {
        let sock = Socket::new(NETLINK_ROUTE).map_err(|e| NlError(format!("socket: {e}")))?;
        Ok(Self {
            sock,
            seq: 1,
            buf: vec![0; REPLY_BUF],
        })
    }

    /// The socket alone (drops the reply buffer), to keep a namespace alive.
    pub fn into_socket(self) -> Socket {
        self.sock
    }

    /// The socket's fd.
    pub fn fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.sock)
    }

    /// Sends one request with NLM_F_ACK and waits for its ACK: one sendmsg, one recv.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut out = Vec::with_capacity(256);
        push(&mut out, msg, flags | NLM_F_ACK, self.seq);
        self.send_all(&out)?;
        self.wait_ack(self.seq)
    }

    /// Sends a request and returns the ifindex from the RTM_NEWLINK reply.
    pub fn link_index(&mut self, name: &str) -> Result<u32, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut out = Vec::with_capacity(64);
        push(&mut out, get_by_name(name), 0, self.seq);
        self.send_all(&out)?;
        loop {
            let n = self.recv()?;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[..n])
                .map_err(|e| NlError(format!("parse reply: {e}")))?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    return Ok(l.header.index)
                }
                NetlinkPayload::Error(e) => {
                    return Err(NlError(format!("get link {name}: {:?}", e.code)))
                }
                _ => {}
            }
        }
    }

    /// Sends `bytes` (one sendmsg; may hold many messages).
    pub fn send_all(&mut self, bytes: &[u8]) -> Result<(), NlError> {
        self.sock
            .send(bytes, 0)
            .map(drop)
            .map_err(|e| NlError(format!("sendmsg: {e}")))
    }

    fn recv(&mut self) -> Result<usize, NlError> {
        self.sock
            .recv(&mut &mut self.buf[..], 0)
            .map_err(|e| NlError(format!("recv: {e}")))
    }

    /// Reads replies until the ACK of `seq`; any error reply before it fails the call.
    pub fn wait_ack(&mut self, seq: u32) -> Result<(), NlError> {
        loop {
            let n = self.recv()?;
            let mut off = 0;
            while off + 16 <= n {
                let len =
                    u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4")) as usize;
                if len < 16 || off + len > n {
                    return Err(NlError("malformed reply".into()));
                }
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len])
                        .map_err(|e| NlError(format!("parse reply: {e}")))?;
                if let NetlinkPayload::Error(e) = &msg.payload {
                    if let Some(code) = e.code {
                        return Err(NlError(format!(
                            "kernel refused request seq {}: {}",
                            msg.header.sequence_number,
                            std::io::Error::from_raw_os_error(-code.get())
                        )));
                    }
                    if msg.header.sequence_number == seq {
                        return Ok(());
                    }
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Sets the send and receive buffers (SO_SNDBUFFORCE / SO_RCVBUFFORCE; root).
    pub fn force_buffers(&self, bytes: usize) -> Result<(), NlError> {
        super::ns::force_buffers(self.fd(), bytes).map_err(|e| NlError(format!("setsockopt: {e}")))
    }
}
