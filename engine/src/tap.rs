//! tap: makes a microVM slot's tap, a persistent tap device in the calling thread's
//! namespace, through /dev/net/tun. Called on the namespace pool's thread, right after it
//! made the namespace, so the ioctls overlap the engine's link work.
//!
//! No netlink message makes a tun/tap device (rtnetlink answers "tun/tap creation via
//! rtnetlink is not supported."): only TUNSETIFF on an fd of /dev/net/tun does
//! (tun_set_iff -> register_netdevice). Every TUNSET* ioctl runs under RTNL
//! (__tun_chr_ioctl takes rtnl_lock before its switch), and so does closing the fd
//! (tun_chr_close -> tun_detach takes rtnl_lock; __tun_detach turns the carrier off as the
//! last queue goes), so a tap costs one acquisition per step: TUNSETIFF, TUNSETOWNER and
//! TUNSETGROUP when asked, TUNSETPERSIST, and the close. The device is
//! made in the namespace of the calling thread (tun_chr_open records current's netns), and
//! is destroyed with it, not handed to the initial namespace as devices without
//! rtnl_link_ops are (the kernel test `taps_die_with_their_namespaces_...` checks it).
//! Its ifindex is read with SIOCGIFINDEX on the slot socket (dev_ioctl, under RCU: no RTNL).
//! TUNSETIFINDEX could choose it instead, at the cost of one more acquisition; the engine
//! needs no particular index (see `crate::microvm`), so it reads the one it got.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::microvm::TapConfig;

/// `struct ifreq` as TUNSETIFF and SIOCGIFINDEX read and write it: a 16-byte name, then a
/// union whose first member is a short (flags) or an int (ifindex), padded to 24 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    value: [u8; 24],
}

impl IfReq {
    fn named(name: &str) -> io::Result<Self> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tap name {name:?} is not a usable interface name"),
            ));
        }
        let mut req = Self {
            name: [0; libc::IFNAMSIZ],
            value: [0; 24],
        };
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }
}

/// Makes the tap `cfg` describes in the calling thread's namespace and returns its ifindex.
/// On any failure before TUNSETPERSIST the fd's close destroys the tap again; TUNSETPERSIST
/// is the last ioctl, so a tap that outlives this call is a complete one.
pub(crate) fn create(cfg: &TapConfig, slot_socket: BorrowedFd<'_>) -> io::Result<u32> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| context(e, "opening /dev/net/tun"))?;
    let fd = tun.as_raw_fd();
    let mut req = IfReq::named(&cfg.name)?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if cfg.multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    // ifr_flags is a short: the union's first two bytes.
    req.value[..2].copy_from_slice(&(flags as i16).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is (repr(C),
    // 40 bytes, as include/uapi/linux/if.h lays it out); `fd` is open for the call.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut IfReq) })
        .map_err(|e| context(e, &format!("TUNSETIFF {}", cfg.name)))?;
    if let Some(uid) = cfg.owner {
        // SAFETY: TUNSETOWNER takes its argument by value (an unsigned long), no memory.
        cvt(unsafe { libc::ioctl(fd, libc::TUNSETOWNER, libc::c_ulong::from(uid)) })
            .map_err(|e| context(e, &format!("TUNSETOWNER {uid}")))?;
    }
    if let Some(gid) = cfg.group {
        // SAFETY: as TUNSETOWNER: the gid by value.
        cvt(unsafe { libc::ioctl(fd, libc::TUNSETGROUP, libc::c_ulong::from(gid)) })
            .map_err(|e| context(e, &format!("TUNSETGROUP {gid}")))?;
    }
    let mut index = IfReq::named(&cfg.name)?;
    // SAFETY: SIOCGIFINDEX reads the name from and writes the ifindex (an int) into one
    // `struct ifreq`; the slot socket is open and lives in the tap's namespace.
    cvt(unsafe {
        libc::ioctl(
            slot_socket.as_raw_fd(),
            libc::SIOCGIFINDEX,
            &mut index as *mut IfReq,
        )
    })
    .map_err(|e| context(e, &format!("SIOCGIFINDEX {}", cfg.name)))?;
    let ifindex = u32::from_ne_bytes(index.value[..4].try_into().expect("4 bytes"));
    if ifindex & netslot_bpf::SLOT_END_BIT != 0 {
        let e = io::Error::from_raw_os_error(libc::ERANGE);
        return Err(context(
            e,
            &format!(
                "the tap {} got ifindex {ifindex}, which has bit 30 set (the redirect between \
                 tap and slot end needs one below 2^30)",
                cfg.name
            ),
        ));
    }
    // SAFETY: TUNSETPERSIST takes its argument by value.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) })
        .map_err(|e| context(e, "TUNSETPERSIST"))?;
    Ok(ifindex)
}

fn cvt(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A tap that could not be made: the kernel's errno and the step that met it. Travels
/// inside an `io::Error` through the pool's queue (its `get_ref`), so that the slot's
/// error still carries the errno.
#[derive(Debug)]
pub(crate) struct TapFailure {
    pub errno: i32,
    pub doing: String,
    source: io::Error,
}

impl std::fmt::Display for TapFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "making the microVM tap: {}: {}", self.doing, self.source)
    }
}

impl std::error::Error for TapFailure {}

/// `e` with what was being done, keeping its kind and errno.
fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(
        e.kind(),
        TapFailure {
            errno: e.raw_os_error().unwrap_or(0),
            doing: what.to_owned(),
            source: e,
        },
    )
}
