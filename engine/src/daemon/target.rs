//! target: whether a network namespace handed to the daemon may receive an attachment.
//! Judges what a peer of `netslot serve` names as an attach target (an fd it passed over
//! the socket, or a path from a uid 0 peer) without trusting it: the file must be an nsfs
//! file of a network namespace, it is never opened blocking or through a symlink, and for
//! a peer other than uid 0 the namespace must be one that peer could enter itself.
//!
//! "Could enter" is the kernel's rule for setns(2) on a network namespace: CAP_SYS_ADMIN
//! in the user namespace that owns it. A peer of the daemon's own user namespace that is
//! not uid 0 holds that capability only in user namespaces it created (directly below
//! the daemon's, or below one of those): so the namespace's owning user namespace, walked
//! up to the child of the daemon's own, must have been created by the peer's uid. Being
//! able to open the file is not enough: namespaces pinned by `ip netns add` under
//! /run/netns are readable by everyone.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::netns;

/// `f_type` of nsfs (include/uapi/linux/magic.h).
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// Why a namespace cannot be an attach target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// A system call on the file failed; the kernel's text.
    #[error("{step}: {source}")]
    Kernel {
        /// The step (`open`, `fstatfs`, `NS_GET_NSTYPE`, ...).
        step: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The path's last component is a symbolic link; it is not followed.
    #[error("it is a symbolic link, and links are not followed")]
    Symlink,
    /// The file is not a namespace (a FIFO, a device, a regular file, a socket...).
    #[error("it is not a namespace file (a {kind} on {fs})")]
    NotNamespace {
        /// What the file is (`fifo`, `character device`, ...).
        kind: &'static str,
        /// Its filesystem, by name where known, else its magic number.
        fs: String,
    },
    /// An O_PATH fd: it proves no right to open the namespace for reading.
    #[error("the fd was opened with O_PATH; pass one opened for reading")]
    PathOnly,
    /// A namespace of another type.
    #[error("it is a {0} namespace, not a network namespace")]
    NotNetwork(&'static str),
}

fn kernel(step: &'static str) -> impl FnOnce(rustix::io::Errno) -> TargetError {
    move |e| TargetError::Kernel {
        step,
        source: e.into(),
    }
}

/// A network namespace checked to be one: an fd of an nsfs file of type network.
#[derive(Debug)]
pub struct NetnsTarget {
    fd: OwnedFd,
    id: u64,
}

impl NetnsTarget {
    /// Takes an fd a peer passed: it must be an nsfs file of a network namespace, opened
    /// for reading (not O_PATH). Nothing but fstat, fstatfs, fcntl and nsfs ioctls is done
    /// to it, so a device or FIFO is never read, written or driven.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TargetError> {
        let st = rfs::fstat(&fd).map_err(kernel("fstat"))?;
        let sfs = rfs::fstatfs(&fd).map_err(kernel("fstatfs"))?;
        if sfs.f_type as u64 != NSFS_MAGIC {
            return Err(TargetError::NotNamespace {
                kind: kind_of(st.st_mode),
                fs: fs_name(sfs.f_type as u64),
            });
        }
        let flags = rfs::fcntl_getfl(&fd).map_err(kernel("fcntl(F_GETFL)"))?;
        if flags.contains(OFlags::PATH) {
            return Err(TargetError::PathOnly);
        }
        let ty = netns::ns_type(fd.as_fd()).map_err(|source| TargetError::Kernel {
            step: "NS_GET_NSTYPE",
            source,
        })?;
        if ty != libc::CLONE_NEWNET {
            return Err(TargetError::NotNetwork(ns_kind(ty)));
        }
        let id = netns::ns_id(fd.as_fd()).map_err(|source| TargetError::Kernel {
            step: "NS_GET_ID",
            source,
        })?;
        Ok(Self { fd, id })
    }

    /// Opens `path` as a network namespace, for a trusted (uid 0) peer: the last
    /// component is never followed if it is a symlink (so /proc/PID/ns/net, a magic
    /// link, is refused too), and the file is first opened with O_PATH, which calls no
    /// driver's open, never blocks on a FIFO and reads nothing. Only a file that is then
    /// seen to be on nsfs is opened for reading, through /proc/self/fd.
    pub fn open_path(path: &Path) -> Result<Self, TargetError> {
        let handle = rfs::open(
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(kernel("open"))?;
        let st = rfs::fstat(&handle).map_err(kernel("fstat"))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(TargetError::Symlink);
        }
        let sfs = rfs::fstatfs(&handle).map_err(kernel("fstatfs"))?;
        if sfs.f_type as u64 != NSFS_MAGIC {
            return Err(TargetError::NotNamespace {
                kind: kind_of(st.st_mode),
                fs: fs_name(sfs.f_type as u64),
            });
        }
        // The same inode, now opened for reading: it is an nsfs file, whose open does
        // nothing but take a reference on the namespace.
        let fd = rfs::open(
            format!("/proc/self/fd/{}", handle.as_raw_fd()),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(kernel("reopen"))?;
        Self::from_fd(fd)
    }

    /// The namespace's id (`NS_GET_ID`, the netns cookie): never reused while the machine
    /// runs.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether a process of the daemon's user namespace with this uid and no
    /// capabilities could setns(2) into the namespace: its owning user namespace, or an
    /// ancestor of it, is a child of the daemon's user namespace created by `uid`.
    pub fn enterable_by(&self, uid: u32) -> Result<bool, TargetError> {
        let own = rfs::open(
            "/proc/self/ns/user",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(kernel("open /proc/self/ns/user"))?;
        let own = identity(own.as_fd())?;
        let mut ns = match netns::owning_userns(self.fd.as_fd()) {
            Ok(ns) => ns,
            // The owner is outside the daemon's view: not the peer's either.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(false),
            Err(source) => {
                return Err(TargetError::Kernel {
                    step: "NS_GET_USERNS",
                    source,
                })
            }
        };
        loop {
            if identity(ns.as_fd())? == own {
                // Owned by the daemon's user namespace: only capabilities there count,
                // and a peer other than uid 0 is judged as having none.
                return Ok(false);
            }
            let parent = match netns::parent_userns(ns.as_fd()) {
                Ok(p) => p,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(false),
                Err(source) => {
                    return Err(TargetError::Kernel {
                        step: "NS_GET_PARENT",
                        source,
                    })
                }
            };
            if identity(parent.as_fd())? == own {
                let owner =
                    netns::userns_owner(ns.as_fd()).map_err(|source| TargetError::Kernel {
                        step: "NS_GET_OWNER_UID",
                        source,
                    })?;
                return Ok(owner == uid);
            }
            ns = parent;
        }
    }

    /// The namespace's fd, for [`crate::AttachTarget`].
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for NetnsTarget {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The id (`NS_GET_ID`) of the network namespace at `path`, a path the caller trusts
/// (e.g. /proc/self/ns/net, /proc/1/ns/net): links are followed.
pub fn netns_id_at(path: &Path) -> io::Result<u64> {
    let fd: OwnedFd = std::fs::File::open(path)?.into();
    netns::ns_id(fd.as_fd())
}

/// The id (`NS_GET_ID`) of the namespace `fd` refers to, e.g. an attach target's.
pub fn netns_id_of(fd: BorrowedFd<'_>) -> io::Result<u64> {
    netns::ns_id(fd)
}

/// A namespace's identity while its fd is open: nsfs device and inode.
fn identity(fd: BorrowedFd<'_>) -> Result<(u64, u64), TargetError> {
    let st = rfs::fstat(fd).map_err(kernel("fstat"))?;
    Ok((st.st_dev, st.st_ino))
}

fn kind_of(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
}

fn fs_name(magic: u64) -> String {
    let name = match magic {
        0x0102_1994 => "tmpfs",
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x1cd1 => "devpts",
        0x5049_5045 => "pipefs",
        0x534f_434b => "sockfs",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x794c_7630 => "overlayfs",
        0x0958_458f => "hugetlbfs",
        0x8584_58f6 => "ramfs",
        0xcafe_4a11 => "bpffs",
        _ => return format!("filesystem 0x{magic:x}"),
    };
    name.to_owned()
}

fn ns_kind(ty: libc::c_int) -> &'static str {
    match ty {
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWCGROUP => "cgroup",
        0x80 => "time",
        _ => "non-network",
    }
}
