//! guest: what a microVM guest does on its network, done by a test: opens a slot's tap as
//! the VMM would (TUNSETIFF by name, as an unprivileged uid), writes and reads Ethernet
//! frames through it, builds TCP SYNs and RSTs and answers ARP for its address.
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Bytes of `struct virtio_net_hdr` before every frame on an IFF_VNET_HDR tap (the
/// default TUNSETVNETHDRSZ).
pub const VNET_HDR_LEN: usize = 10;

/// One open queue of a tap, as a VMM holds it.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
}

impl Tap {
    /// Opens tap `name` inside namespace `ns` as `uid`/`gid` (with no capabilities: a raw
    /// setresuid to a non-zero uid clears them), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
    /// non-blocking, as Firecracker opens its tap. The device node is opened first, as
    /// root: who may open /dev/net/tun is the jail's business (Firecracker's jailer makes
    /// its own node, owned by the VMM's uid); the kernel's own check of the tap is at
    /// TUNSETIFF (tun_not_capable: owner, group or CAP_NET_ADMIN), made as `uid`.
    pub fn open(ns: BorrowedFd<'_>, name: &str, uid: u32, gid: u32) -> io::Result<Self> {
        let name = name.to_owned();
        netslot_test_support::in_netns(ns, move || {
            // In the slot's namespace: tun_chr_open records the opener's namespace, and
            // TUNSETIFF finds the tap there.
            let path = c"/dev/net/tun";
            // SAFETY: opening a NUL-terminated path; the fd is owned below.
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just opened and is owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            crate::as_ids(uid, gid, move || -> io::Result<Tap> {
                let mut req = [0u8; 40];
                req[..name.len()].copy_from_slice(name.as_bytes());
                let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
                req[16..18].copy_from_slice(&flags.to_ne_bytes());
                // SAFETY: TUNSETIFF reads and writes one 40-byte struct ifreq.
                let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Tap { fd })
            })
        })
    }

    /// TUNSETOWNER through this queue, as any process holding the tap may (no capability
    /// is checked): what a tenant's VMM could leave behind.
    pub fn set_owner(&self, uid: u32) -> io::Result<()> {
        // SAFETY: TUNSETOWNER takes its argument by value.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOWNER,
                libc::c_ulong::from(uid),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes one Ethernet frame (a zeroed virtio_net_hdr in front: no offloads).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<()> {
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf.extend_from_slice(frame);
        // SAFETY: writing `buf.len()` bytes from a live buffer to an open fd.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame the tap delivers within `timeout` (its virtio_net_hdr removed).
    pub fn read_frame(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one pollfd, alive for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; 65536];
        // SAFETY: reading at most `buf.len()` bytes into a live buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        let n = n as usize;
        if n < VNET_HDR_LEN {
            return Ok(Some(Vec::new()));
        }
        buf.truncate(n);
        Ok(Some(buf.split_off(VNET_HDR_LEN)))
    }

    /// Every frame delivered within `window`.
    pub fn drain(&self, window: Duration) -> io::Result<Vec<Vec<u8>>> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(got);
            }
            match self.read_frame(left)? {
                Some(f) => got.push(f),
                None => return Ok(got),
            }
        }
    }
}

/// A guest: its MAC and address on the tap's link.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// The guest interface's MAC.
    pub mac: [u8; 6],
    /// The guest's address.
    pub ip: Ipv4Addr,
}

/// TCP flag SYN.
pub const SYN: u8 = 0x02;
/// TCP flag RST.
pub const RST: u8 = 0x04;
/// TCP flag ACK.
pub const ACK: u8 = 0x10;

/// A TCP segment as read from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// TCP flags ([`SYN`], [`RST`], [`ACK`], ...).
    pub flags: u8,
}

/// What a frame is, as far as the tests care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An ARP request from `sender` (`mac`, `ip`) for `target`.
    ArpRequest {
        /// The asker's MAC.
        mac: [u8; 6],
        /// The asker's address.
        ip: Ipv4Addr,
        /// The address asked for.
        target: Ipv4Addr,
    },
    /// A TCP segment in IPv4 from `mac`.
    Tcp {
        /// The sender's MAC.
        mac: [u8; 6],
        /// The segment.
        seg: Segment,
    },
    /// Anything else (its EtherType).
    Other(u16),
}

/// Reads a frame.
pub fn parse(f: &[u8]) -> Frame {
    if f.len() < 14 {
        return Frame::Other(0);
    }
    let src_mac: [u8; 6] = f[6..12].try_into().unwrap();
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let p = &f[14..];
    match ethertype {
        0x0806 if p.len() >= 28 && p[6..8] == [0, 1] => Frame::ArpRequest {
            mac: p[8..14].try_into().unwrap(),
            ip: Ipv4Addr::new(p[14], p[15], p[16], p[17]),
            target: Ipv4Addr::new(p[24], p[25], p[26], p[27]),
        },
        0x0800 if p.len() >= 20 && p[9] == 6 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let t = &p[ihl.min(p.len())..];
            if t.len() < 20 {
                return Frame::Other(ethertype);
            }
            Frame::Tcp {
                mac: src_mac,
                seg: Segment {
                    src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                    dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
                    sport: u16::from_be_bytes([t[0], t[1]]),
                    dport: u16::from_be_bytes([t[2], t[3]]),
                    seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
                    ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
                    flags: t[13],
                },
            }
        }
        other => Frame::Other(other),
    }
}

/// The guest's ARP reply to `to` (`mac`, `ip`): "guest.ip is at guest.mac".
pub fn arp_reply(guest: Guest, mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&guest.mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&guest.mac);
    f.extend_from_slice(&guest.ip.octets());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f
}

/// An Ethernet frame from the guest to `dst_mac` carrying TCP segment `seg` (no options,
/// no payload), with correct IPv4 and TCP checksums.
pub fn tcp_frame(guest: Guest, dst_mac: [u8; 6], seg: Segment) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&seg.sport.to_be_bytes());
    tcp.extend_from_slice(&seg.dport.to_be_bytes());
    tcp.extend_from_slice(&seg.seq.to_be_bytes());
    tcp.extend_from_slice(&seg.ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, seg.flags]);
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&seg.src.octets());
    pseudo.extend_from_slice(&seg.dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&seg.src.octets());
    ip.extend_from_slice(&seg.dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&guest.mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Reads frames from `tap` for up to `timeout`, answering every ARP request for the
/// guest's address, until `want` accepts a TCP segment (returned), or time runs out.
/// `each` is called before every wait (to retransmit, say).
pub fn serve_until(
    tap: &Tap,
    guest: Guest,
    timeout: Duration,
    mut each: impl FnMut(),
    mut want: impl FnMut(&Segment) -> bool,
) -> io::Result<Option<([u8; 6], Segment)>> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        each();
        let Some(frame) = tap.read_frame(Duration::from_millis(500))? else {
            continue;
        };
        match parse(&frame) {
            Frame::ArpRequest { mac, ip, target } if target == guest.ip => {
                tap.write_frame(&arp_reply(guest, mac, ip))?;
            }
            Frame::Tcp { mac, seg } if want(&seg) => return Ok(Some((mac, seg))),
            _ => {}
        }
    }
    Ok(None)
}
