//! features: the start-up check that the running kernel has what the engine relies on.
//!
//! netslot needs Linux [`MIN_KERNEL`] (6.18) or later. [`check`] makes cheap probes, each
//! a few system calls and no RTNL: the kernel release, the nsfs `NS_GET_ID` ioctl on the
//! caller's own network namespace (namespace ids, new in 6.18), and an io_uring set up
//! with the flags, operations and registered file slots the engine uses. On failure it
//! names the minimum kernel and the missing feature. The in-place veth peers and the XDP
//! counters have no cheap probe (one would need a device or a BPF program); the release
//! check stands for them.
//!
//! [`Engine::new`](crate::Engine::new) runs the check once per process; the result is
//! kept, so later engines pay nothing.

use std::fmt;
use std::sync::OnceLock;

use io_uring::{opcode, register::Probe, IoUring};

/// The oldest kernel netslot runs on, as (major, minor).
pub const MIN_KERNEL: (u32, u32) = (6, 18);

/// A feature of the kernel netslot relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// The kernel release itself (stands for in-place veth peers and the XDP counters).
    KernelRelease,
    /// nsfs `NS_GET_ID`, `_IOR(0xb7, 13, u64)`: the ids of pinned namespaces.
    NsGetId,
    /// An io_uring set up with IORING_SETUP_SUBMIT_ALL and IORING_SETUP_COOP_TASKRUN.
    IoUringSetup,
    /// io_uring OPENAT, WRITE and CLOSE (sysctl writes) and SENDMSG/RECVMSG (netlink).
    IoUringOps,
    /// io_uring registered file slots (a sparse file table), used by the sysctl writes.
    IoUringFileSlots,
}

impl Feature {
    /// A short description of the feature, as error messages name it.
    pub fn describe(self) -> &'static str {
        match self {
            Feature::KernelRelease => "kernel release",
            Feature::NsGetId => "nsfs NS_GET_ID ioctl (namespace ids)",
            Feature::IoUringSetup => "io_uring with IORING_SETUP_SUBMIT_ALL | COOP_TASKRUN",
            Feature::IoUringOps => "io_uring OPENAT/WRITE/CLOSE/SENDMSG/RECVMSG operations",
            Feature::IoUringFileSlots => "io_uring registered file slots",
        }
    }
}

/// The kernel lacks something netslot needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFeature {
    /// What is missing.
    pub feature: Feature,
    /// What the probe saw (an OS error, or the release found).
    pub detail: String,
    /// The running kernel's release (`uname -r`), when it could be read.
    pub release: Option<String>,
}

impl fmt::Display for MissingFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = MIN_KERNEL;
        write!(
            f,
            "netslot needs Linux {major}.{minor} or later: {} missing ({})",
            self.feature.describe(),
            self.detail
        )?;
        if let Some(r) = &self.release {
            write!(f, "; this kernel is {r}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MissingFeature {}

/// Probes the running kernel for every feature netslot needs. The first call probes; later
/// calls return the first call's answer.
pub fn check() -> Result<(), MissingFeature> {
    static RESULT: OnceLock<Result<(), MissingFeature>> = OnceLock::new();
    RESULT.get_or_init(probe).clone()
}

/// The probes themselves, uncached.
fn probe() -> Result<(), MissingFeature> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned());
    let missing = |feature, detail: String| MissingFeature {
        feature,
        detail,
        release: release.clone(),
    };
    // The specific probes first: their message says what exactly is absent.
    let ns = std::fs::File::open("/proc/self/ns/net")
        .map_err(|e| missing(Feature::NsGetId, format!("open /proc/self/ns/net: {e}")))?;
    crate::netns::ns_id(std::os::fd::AsFd::as_fd(&ns))
        .map_err(|e| missing(Feature::NsGetId, format!("ioctl: {e}")))?;

    let ring: IoUring = IoUring::builder()
        .setup_submit_all()
        .setup_coop_taskrun()
        .build(8)
        .map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (or io_uring is turned off by the sysctl kernel.io_uring_disabled)"
            } else {
                ""
            };
            missing(Feature::IoUringSetup, format!("io_uring_setup: {e}{hint}"))
        })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| missing(Feature::IoUringOps, format!("IORING_REGISTER_PROBE: {e}")))?;
    let ops = [
        (opcode::OpenAt::CODE, "OPENAT"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::Close::CODE, "CLOSE"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::RecvMsg::CODE, "RECVMSG"),
    ];
    let absent: Vec<&str> = ops
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !absent.is_empty() {
        return Err(missing(
            Feature::IoUringOps,
            format!("not supported: {}", absent.join(", ")),
        ));
    }
    ring.submitter().register_files_sparse(4).map_err(|e| {
        missing(
            Feature::IoUringFileSlots,
            format!("IORING_REGISTER_FILES2 (sparse): {e}"),
        )
    })?;

    // Last, the release, for what has no cheap probe.
    let Some(r) = &release else {
        return Err(missing(
            Feature::KernelRelease,
            "cannot read /proc/sys/kernel/osrelease".into(),
        ));
    };
    match parse_release(r) {
        Some(v) if v >= MIN_KERNEL => Ok(()),
        Some((major, minor)) => Err(missing(
            Feature::KernelRelease,
            format!("release {major}.{minor} is older"),
        )),
        None => Err(missing(
            Feature::KernelRelease,
            format!("cannot parse the release {r:?}"),
        )),
    }
}

/// (major, minor) of a release string such as `6.18.0-1-amd64` or `6.18-rc3`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor_part = parts.next()?;
    let digits = minor_part
        .find(|c: char| !c.is_ascii_digit())
        .map_or(minor_part, |end| &minor_part[..end]);
    Some((major, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_release("6.18.2"), Some((6, 18)));
        assert_eq!(parse_release("6.18-rc3"), Some((6, 18)));
        assert_eq!(parse_release("6.9.12-arch1\n"), Some((6, 9)));
        assert_eq!(parse_release("7.0.0"), Some((7, 0)));
        assert_eq!(parse_release("6"), None);
        assert_eq!(parse_release("six.18"), None);
        assert_eq!(parse_release(".18"), None);
    }

    #[test]
    fn versions_order_numerically() {
        assert!(parse_release("6.9.0").unwrap() < MIN_KERNEL);
        assert!(parse_release("6.17.9").unwrap() < MIN_KERNEL);
        assert!(parse_release("6.18.0").unwrap() >= MIN_KERNEL);
        assert!(parse_release("6.100.0").unwrap() >= MIN_KERNEL);
        assert!(parse_release("7.0.0").unwrap() >= MIN_KERNEL);
    }

    #[test]
    fn the_error_names_the_minimum_kernel_and_the_feature() {
        let e = MissingFeature {
            feature: Feature::NsGetId,
            detail: "ioctl: Inappropriate ioctl for device (os error 25)".into(),
            release: Some("6.12.0".into()),
        };
        let text = e.to_string();
        assert!(text.contains("Linux 6.18 or later"), "{text}");
        assert!(text.contains("NS_GET_ID"), "{text}");
        assert!(text.contains("this kernel is 6.12.0"), "{text}");
    }

    /// The machine the tests run on is one netslot supports (the kernel tests need it).
    #[test]
    fn this_kernel_passes() {
        check().unwrap();
        // Cached: the second call answers the same.
        check().unwrap();
    }
}
